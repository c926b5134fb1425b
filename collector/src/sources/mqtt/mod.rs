//! The MQTT source: one task per broker connection (rumqttc).
//!
//! The event loop is polled continuously in the source's task; PUBACKs are sent from a second
//! task, fed by the journal once a message's readings are durable (acking from the polling
//! task can deadlock on rumqttc's bounded request channel). The connection reconnects with
//! capped, jittered backoff (rumqttc has none of its own), and subscribes again on every
//! ConnAck (a session that was not kept has lost its subscriptions).

mod tls;
mod topic;

pub use topic::{TopicMatch, TopicTemplate};

use std::time::Duration;

use anyhow::Context as _;

use rumqttc::{
    AsyncClient, ConnectionError, Event, MqttOptions, Packet, Publish, QoS, SubscribeFilter,
    SubscribeReasonCode,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::{now_ns, timestamp_bounds, Ack, Envelope, Rejections, SourceCounters};
use crate::backoff::Backoff;
use crate::config::{MqttSettings, TimestampConfig};
use crate::metrics::{Counter, Gauge, Metrics};
use crate::payload::{self, Context, Reject};
use crate::reading::Reading;

/// Room for every packet id that can be unacknowledged at once: sending an ack never waits.
const ACK_CHANNEL_CAPACITY: usize = 65_535;

/// How long a stopping source keeps its connection up to send the acks of messages that are
/// still on their way into the journal.
const ACK_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// One broker connection and its subscriptions.
pub struct MqttSource {
    settings: MqttSettings,
    options: MqttOptions,
    timestamps: TimestampConfig,
    metrics: Metrics,
}

/// Not derived: rumqttc's `MqttOptions` prints the password in its `Debug`.
impl std::fmt::Debug for MqttSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttSource")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Per-source counters, looked up once.
struct SourceMetrics {
    counters: SourceCounters,
    subscribed: Gauge,
    ack_failed: Counter,
    metrics: Metrics,
    name: String,
}

impl MqttSource {
    /// A source for one configured connection.
    ///
    /// # Errors
    /// TLS files that cannot be read or hold no usable certificate or key.
    pub fn new(
        settings: MqttSettings,
        timestamps: TimestampConfig,
        metrics: Metrics,
    ) -> anyhow::Result<MqttSource> {
        let s = &settings;
        let mut options = MqttOptions::new(&s.client_id, &s.host, s.port);
        options
            .set_keep_alive(s.keep_alive)
            .set_clean_session(s.clean_session)
            .set_manual_acks(true)
            // A publish packet is the payload plus at most a 64 KiB topic and a few header
            // bytes: anything larger cannot be a payload we would accept.
            .set_max_packet_size(s.max_payload_size.saturating_add(70 * 1024), 64 * 1024);
        if let (Some(user), password) = (&s.username, &s.password) {
            options.set_credentials(user, password.as_ref().map(|p| p.expose()).unwrap_or(""));
        }
        if let Some(tls) = &s.tls {
            let transport =
                tls::transport(tls).with_context(|| format!("source {}: TLS", s.name))?;
            options.set_transport(transport);
        }
        Ok(MqttSource {
            settings,
            options,
            timestamps,
            metrics,
        })
    }

    /// For `doctor`: connects once and disconnects, within `timeout`. It connects as
    /// `<client_id>-doctor` with a clean session, so that the collector's own persistent
    /// session is neither taken over nor wiped.
    ///
    /// # Errors
    /// The broker cannot be reached, refuses the connection, or does not answer in time.
    pub async fn check(&self, timeout: Duration) -> anyhow::Result<()> {
        let mut options = self.options.clone();
        options
            .set_client_id(format!("{}-doctor", self.settings.client_id))
            .set_clean_session(true);
        let (client, mut eventloop) = AsyncClient::new(options, 8);
        let connect = async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                        return if ack.code == rumqttc::ConnectReturnCode::Success {
                            Ok(())
                        } else {
                            Err(anyhow::anyhow!(
                                "the broker refused the connection: {:?}",
                                ack.code
                            ))
                        };
                    }
                    Ok(_) => {}
                    Err(e) => return Err(anyhow::anyhow!(e)),
                }
            }
        };
        let result = tokio::time::timeout(timeout, connect)
            .await
            .unwrap_or_else(|_| Err(anyhow::anyhow!("no answer within {timeout:?}")));
        if result.is_ok() {
            let _ = client.disconnect().await;
            let _ = tokio::time::timeout(Duration::from_secs(1), eventloop.poll()).await;
        }
        result.with_context(|| format!("{}:{}", self.settings.host, self.settings.port))
    }

    /// The source's name in logs and metrics (`mqtt:<name>`).
    pub fn label(&self) -> String {
        format!("mqtt:{}", self.settings.name)
    }

    /// Runs until `stop` is cancelled: connects, subscribes, and sends what arrives to `out`.
    /// A full `out` pushes back: the event loop is not polled until there is room, so the
    /// broker holds the rest.
    ///
    /// # Errors
    /// Only for a configuration that cannot be used at all (unreadable TLS files); network
    /// failures are retried forever.
    pub async fn run(
        self,
        out: mpsc::Sender<Envelope>,
        stop: CancellationToken,
    ) -> anyhow::Result<()> {
        let label = self.label();
        let s = &self.settings;
        let (client, mut eventloop) = AsyncClient::new(self.options.clone(), 256);
        let m = SourceMetrics {
            counters: SourceCounters::new(&self.metrics, &label),
            subscribed: self
                .metrics
                .gauge("source_subscribed", &[("source", &label)]),
            ack_failed: self
                .metrics
                .counter("acks_failed_total", &[("source", &label)]),
            metrics: self.metrics.clone(),
            name: label.clone(),
        };

        let (ack_tx, mut ack_rx) = mpsc::channel::<u16>(ACK_CHANNEL_CAPACITY);
        let ack_client = client.clone();
        let mut acker = tokio::spawn(async move {
            while let Some(pkid) = ack_rx.recv().await {
                let mut p = Publish::new("", QoS::AtLeastOnce, Vec::<u8>::new());
                p.pkid = pkid;
                if ack_client.ack(&p).await.is_err() {
                    break; // the event loop is gone: the broker redelivers
                }
            }
        });

        let filters: Vec<SubscribeFilter> = s
            .subscriptions
            .iter()
            .map(|sub| SubscribeFilter::new(sub.template.filter(), sub.qos))
            .collect();
        let mut backoff = Backoff::new(s.reconnect);
        let mut connected = false;
        let mut reader = Reader::new(&self, &m);
        info!(source = %label, host = %s.host, port = s.port, client_id = %s.client_id, "connecting");

        // While running, `out` and `ack_tx` are Some. Stopping takes both: no new message is
        // read (the broker keeps what we did not ack), and once the journal has taken every
        // message already read, the acker ends; a disconnect queued behind its acks then
        // closes the connection after they went out.
        let mut out = Some(out);
        let mut ack_tx = Some(ack_tx);
        let mut acks_done = false;
        let drain_deadline = tokio::time::sleep(Duration::MAX);
        tokio::pin!(drain_deadline);
        loop {
            let event = tokio::select! {
                biased;
                () = stop.cancelled(), if out.is_some() => {
                    out = None;
                    ack_tx = None;
                    drain_deadline.as_mut().reset(tokio::time::Instant::now() + ACK_DRAIN_TIMEOUT);
                    continue;
                }
                () = &mut drain_deadline => {
                    warn!(source = %label, "stopping without sending every ack; the broker will redeliver those messages");
                    break;
                }
                _ = &mut acker, if out.is_none() && !acks_done => {
                    acks_done = true;
                    let _ = client.try_disconnect();
                    continue;
                }
                e = eventloop.poll() => e,
            };
            match event {
                Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => break,
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    connected = true;
                    m.counters.connected.set(1);
                    backoff.reset();
                    info!(source = %label, session_present = ack.session_present, "connected");
                    // Subscribing from this task could wait on rumqttc's request channel,
                    // which only this task drains: hand it to another task.
                    let c = client.clone();
                    let f = filters.clone();
                    tokio::spawn(async move { c.subscribe_many(f).await });
                }
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    if ack
                        .return_codes
                        .iter()
                        .any(|c| matches!(c, SubscribeReasonCode::Failure))
                    {
                        error!(source = %label, "the broker refused a subscription (check its ACL)");
                    } else {
                        m.subscribed.set(1);
                        info!(source = %label, filters = filters.len(), "subscribed");
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    // While stopping, a new message is not acked: the broker redelivers it.
                    let (Some(tx), Some(acks)) = (&out, &ack_tx) else {
                        continue;
                    };
                    if let Some(envelope) = reader.read(p, acks) {
                        if tx.send(envelope).await.is_err() {
                            break; // the pipeline is gone
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    m.counters.connected.set(0);
                    m.subscribed.set(0);
                    if out.is_none() {
                        break;
                    }
                    m.counters.reconnects.inc();
                    let delay = backoff.next_delay();
                    if let ConnectionError::MqttState(rumqttc::StateError::Deserialization(
                        rumqttc::mqttbytes::Error::PayloadSizeLimitExceeded(size),
                    )) = &e
                    {
                        reader.rejections.counter(Reject::Oversized.reason()).inc();
                        error!(source = %label, size, "a message larger than the packet limit closed the connection; raise max_payload_size, or limit message sizes on the broker");
                    } else if connected {
                        warn!(source = %label, error = %e, "connection lost; reconnecting");
                    } else if backoff.worth_logging() {
                        warn!(source = %label, error = %e, attempts = backoff.attempts(), "cannot connect; retrying");
                    } else {
                        debug!(source = %label, error = %e, ?delay, "cannot connect");
                    }
                    connected = false;
                    tokio::select! {
                        () = stop.cancelled() => {}
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
        m.counters.connected.set(0);
        acker.abort();
        info!(source = %label, "stopped");
        Ok(())
    }
}

/// Turns publishes into envelopes: subscription lookup, parsing, counting.
struct Reader<'a> {
    source: &'a MqttSource,
    m: &'a SourceMetrics,
    rejections: Rejections,
}

impl<'a> Reader<'a> {
    fn new(source: &'a MqttSource, m: &'a SourceMetrics) -> Reader<'a> {
        Reader {
            source,
            m,
            rejections: Rejections::new(m.metrics.clone(), &m.name),
        }
    }

    /// Parses one publish. Returns the envelope to send, or `None` when nothing in it was
    /// usable (then it is counted, and acked at once).
    fn read(&mut self, p: Publish, ack_tx: &mpsc::Sender<u16>) -> Option<Envelope> {
        self.m.counters.messages.inc();
        let ack = (p.qos != QoS::AtMostOnce)
            .then(|| Ack::new(p.pkid, ack_tx.clone(), self.m.ack_failed.clone()));
        let readings = self.parse(&p);
        if readings.is_empty() {
            if let Some(a) = ack {
                a.send();
            }
            return None;
        }
        self.m.counters.received(&readings);
        Some(Envelope { readings, ack })
    }

    fn parse(&mut self, p: &Publish) -> Vec<Reading> {
        let s = &self.source.settings;
        let mut readings = Vec::new();
        let Some((sub, m)) = s
            .subscriptions
            .iter()
            .find_map(|sub| sub.template.matches(&p.topic).map(|m| (sub, m)))
        else {
            self.reject(&p.topic, "unmatched_topic");
            return readings;
        };
        if p.payload.len() > s.max_payload_size {
            self.reject(&p.topic, Reject::Oversized.reason());
            return readings;
        }
        let mut tags = sub.tags.clone();
        for (k, v) in m.tags {
            match tags.binary_search_by(|(tk, _)| tk.cmp(&k)) {
                Ok(i) => tags[i].1 = v,
                Err(i) => tags.insert(i, (k, v)),
            }
        }
        let now = now_ns();
        let ts = &self.source.timestamps;
        let ctx = Context {
            measurement: m.measurement.as_deref().unwrap_or(&sub.measurement),
            tags: &tags,
            field: m.field.as_deref().unwrap_or(&sub.field),
            default_device: &p.topic,
            received_ns: now,
            bounds: timestamp_bounds(ts, now),
        };
        for reject in payload::parse(&sub.format, &p.payload, &ctx, &mut readings) {
            self.reject(&p.topic, reject.reason());
        }
        readings
    }

    fn reject(&mut self, topic: &str, reason: &str) {
        self.rejections.reject(topic, reason);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn the_password_is_never_in_debug_output() {
        let settings = Config::from_toml(
            r#"
            [[sources.mqtt]]
            host = "localhost"
            username = "collector"
            password = "hunter2-secret"
            [[sources.mqtt.subscriptions]]
            topic = "a/{device}/{measurement}"
            "#,
        )
        .and_then(Config::validate)
        .unwrap();
        let source = MqttSource::new(
            settings.mqtt[0].clone(),
            settings.timestamps.clone(),
            Metrics::new(),
        )
        .unwrap();
        let shown = format!("{source:?} {settings:?} {:#?}", settings.mqtt);
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("***"));
    }
}
