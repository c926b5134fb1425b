//! The MQTT source: one task per broker connection (rumqttc; MQTT 3.1.1 or 5, through the
//! [`crate::mqtt`] seam, so that everything here is written once for both).
//!
//! The event loop is polled continuously in the source's task; PUBACKs are sent from a second
//! task, fed by the journal once a message's readings are durable (acking from the polling
//! task can deadlock on rumqttc's bounded request channel). The connection reconnects with
//! capped, jittered backoff (rumqttc has none of its own), and subscribes again on every
//! ConnAck (a session that was not kept has lost its subscriptions).
//!
//! Shared subscriptions (`$share/<group>/<filter>`) need nothing more here: the broker hands
//! each message of the group to one of its members, and the message's topic is the real one,
//! which the template's filter part matches (the prefix never becomes a tag).

use std::time::Duration;

use anyhow::Context as _;

use rumqttc::QoS;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::{now_ns, timestamp_bounds, Rejections, SourceCounters};
use crate::backoff::{Backoff, LogLimit};
use crate::channel::{Ack, Envelope, Inlet};
use crate::config::{MqttSettings, Protocol, TimestampConfig};
use crate::metrics::{Counter, Gauge, Metrics};
use crate::mqtt::{ConnError, Event, Message, Options, Tuning, MAX_REMAINING_LENGTH};
use crate::payload::{self, Context, Reject};
use crate::reading::{CompactString, Reading};

/// Room for every packet id that can be unacknowledged at once: sending an ack never waits.
const ACK_CHANNEL_CAPACITY: usize = 65_535;

/// How long a stopping source keeps its connection up to send the acks of messages that are
/// still on their way into the journal.
const ACK_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Nothing is published on a source's connection: a small limit on what it sends.
const MAX_OUTGOING_PACKET: usize = 64 * 1024;

/// The most readings one envelope collects from messages that arrive together, before it is
/// sent into the pipeline even though more are waiting.
const MAX_ENVELOPE_READINGS: usize = 1024;

/// One broker connection and its subscriptions.
pub struct MqttSource {
    settings: MqttSettings,
    options: Options,
    timestamps: TimestampConfig,
    metrics: Metrics,
}

/// Not derived: rumqttc's options print the password in their `Debug`.
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
        let options = Options::new(
            &s.broker,
            Tuning {
                manual_acks: true,
                max_incoming_packet: packet_limit(s),
                max_outgoing_packet: MAX_OUTGOING_PACKET,
                receive_maximum: (s.broker.protocol == Protocol::V5).then_some(s.receive_maximum),
                // Nothing is published on this connection.
                max_inflight: 1,
            },
        )
        .with_context(|| format!("source {}", s.name))?;
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
        let b = &self.settings.broker;
        self.options
            .check(&b.client_id, timeout)
            .await
            .with_context(|| format!("{}:{}", b.host, b.port))
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
    pub async fn run(self, out: Inlet, stop: CancellationToken) -> anyhow::Result<()> {
        let label = self.label();
        let s = &self.settings;
        let b = &s.broker;
        let (client, mut conn) = self.options.connect(256);
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
                if ack_client.ack(pkid).await.is_err() {
                    break; // the event loop is gone: the broker redelivers
                }
            }
        });

        let filters: Vec<(String, QoS)> = s
            .subscriptions
            .iter()
            .map(|sub| (sub.template.filter(), sub.qos))
            .collect();
        let mut backoff = Backoff::new(s.reconnect);
        let mut connected = false;
        let mut packet_limit = packet_limit(s);
        let mut oversized_logs = LogLimit::new(Duration::from_secs(60));
        let mut reader = Reader::new(&self, &m);
        info!(source = %label, host = %b.host, port = b.port, protocol = %b.protocol, client_id = %b.client_id, "connecting");

        // While running, `out` and `ack_tx` are Some. Stopping takes both: no new message is
        // read (the broker keeps what we did not ack), and once the journal has taken every
        // message already read, the acker ends; a disconnect queued behind its acks then
        // closes the connection after they went out.
        let max_messages = out.capacity();
        let mut out = Some(out);
        let mut ack_tx = Some(ack_tx);
        let mut acks_done = false;
        let drain_deadline = tokio::time::sleep(Duration::MAX);
        tokio::pin!(drain_deadline);
        // The messages that arrived together (rumqttc reads several packets at a time) go
        // into one envelope: it is sent when no further event is ready, when it is full, or
        // before any other event is handled.
        let mut collected: Option<Envelope> = None;
        // Set when an oversized message closed the connection: the next one reads packets up
        // to `packet_limit`.
        let mut raise_limit = false;
        loop {
            if std::mem::take(&mut raise_limit) {
                conn.set_max_incoming_packet(packet_limit, MAX_OUTGOING_PACKET);
            }
            let mut next = std::pin::pin!(conn.poll());
            // Whether the connection was polled: `Pending` then means every message
            // waiting has been read.
            let mut polled = false;
            let ready = match (&out, collected.as_ref()) {
                (Some(_), Some(c))
                    if c.readings.len() < MAX_ENVELOPE_READINGS && c.messages < max_messages =>
                {
                    polled = true;
                    // One poll, with this task's waker: `Pending` leaves the future as it is.
                    std::future::poll_fn(|cx| {
                        std::task::Poll::Ready(std::future::Future::poll(next.as_mut(), cx))
                    })
                    .await
                }
                _ => std::task::Poll::Pending,
            };
            let event = match ready {
                std::task::Poll::Ready(e) => e,
                std::task::Poll::Pending => {
                    // Nothing more right now (or the envelope is full): hand over what was
                    // collected, then wait. The poll future is not dropped in between.
                    // Once every message waiting is read, and none needs an ack, pause
                    // before reading again (see `MqttSettings::read_pause`).
                    let mut pause = false;
                    if let Some(envelope) = collected.take() {
                        pause = polled && envelope.ack.is_none() && !s.read_pause.is_zero();
                        if send(&out, &m.counters, envelope).await.is_err() {
                            break; // the pipeline is gone
                        }
                    }
                    if pause {
                        tokio::select! {
                            biased;
                            () = stop.cancelled() => {}
                            () = tokio::time::sleep(s.read_pause) => {}
                        }
                    }
                    tokio::select! {
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
                            client.try_disconnect();
                            continue;
                        }
                        e = next => e,
                    }
                }
            };
            if !matches!(event, Ok(Event::Message(_))) {
                if let Some(envelope) = collected.take() {
                    if send(&out, &m.counters, envelope).await.is_err() {
                        break;
                    }
                }
            }
            match event {
                Ok(Event::Disconnecting) => break,
                Ok(Event::Connected {
                    session_present, ..
                }) => {
                    connected = true;
                    m.counters.connected.set(1);
                    backoff.connected();
                    info!(source = %label, session_present, "connected");
                    // Subscribing from this task could wait on rumqttc's request channel,
                    // which only this task drains: hand it to another task.
                    let c = client.clone();
                    let f = filters.clone();
                    tokio::spawn(async move { c.subscribe(&f).await });
                }
                Ok(Event::Subscribed { refused }) => {
                    if refused.is_empty() {
                        m.subscribed.set(1);
                        info!(source = %label, filters = filters.len(), "subscribed");
                    } else {
                        error!(source = %label, ?refused, "the broker refused a subscription (check its ACL, and that it supports shared subscriptions if one is `$share/...`)");
                    }
                }
                Ok(Event::Message(msg)) => {
                    // While stopping, a new message is not acked: the broker redelivers it.
                    let Some(acks) = &ack_tx else {
                        continue;
                    };
                    reader.read(msg, acks, &mut collected);
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
                    match &e {
                        ConnError::Oversized { size } => {
                            // The message is lost (QoS 0) or comes again (QoS 1, and with
                            // MQTT 3.1.1 after every reconnect, for as long as it is not
                            // acked). Take it on the next connection, once, so that it is
                            // rejected and acked like any oversized payload: its memory
                            // is paid once, and nothing behind it waits.
                            reader.rejections.counter(Reject::Oversized.reason()).inc();
                            reader.oversized_counted += 1;
                            let limit = (*size).max(packet_limit).min(MAX_REMAINING_LENGTH);
                            if limit > packet_limit {
                                packet_limit = limit;
                                raise_limit = true;
                            }
                            if let Some(unsaid) = oversized_logs.event(std::time::Instant::now()) {
                                error!(source = %label, size, max_payload_size = s.max_payload_size, unsaid,
                                    "a message larger than the packet limit closed the connection: it is rejected as oversized, and the next connection reads packets up to its size so that the broker does not send it again (raise max_payload_size to accept such messages, or limit message sizes on the broker)");
                            }
                        }
                        ConnError::TakenOver => {
                            error!(source = %label, client_id = %b.client_id, "another client connected with this client id and took the session over: every collector needs its own client_id (for example \"collector-{{hostname}}\")");
                        }
                        _ if connected => {
                            warn!(source = %label, error = %e, "connection lost; reconnecting");
                        }
                        _ if backoff.worth_logging() => {
                            warn!(source = %label, error = %e, attempts = backoff.attempts(), "cannot connect; retrying");
                        }
                        _ => debug!(source = %label, error = %e, ?delay, "cannot connect"),
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

/// The largest packet a source reads: a publish packet is the payload plus at most a 64 KiB
/// topic and a few header bytes, so anything larger cannot be a payload it would accept.
/// A larger one closes the connection (MQTT 3.1.1 cannot tell the broker a limit); see the
/// handling of [`ConnError::Oversized`] in [`MqttSource::run`].
fn packet_limit(s: &MqttSettings) -> usize {
    s.max_payload_size.saturating_add(70 * 1024)
}

/// Counts the readings of `envelope` (per device, once per envelope rather than per message)
/// and sends it into the pipeline. Messages are only collected while the source runs (`out`
/// is `Some`); once it stops, what it had collected was sent already.
async fn send(
    out: &Option<Inlet>,
    counters: &SourceCounters,
    envelope: Envelope,
) -> Result<(), Envelope> {
    counters.received(&envelope.readings);
    match out {
        Some(inlet) => inlet.send(envelope).await,
        None => Err(envelope),
    }
}

/// Turns publishes into envelopes: subscription lookup, parsing, counting.
struct Reader<'a> {
    source: &'a MqttSource,
    m: &'a SourceMetrics,
    rejections: Rejections,
    /// The tags of the message being parsed (the subscription's and the topic's), kept
    /// from one message to the next for its capacity.
    tags: Vec<(CompactString, CompactString)>,
    /// Oversized messages already counted when they closed the connection: when one comes
    /// again (resent, with its DUP flag), it is rejected and acked but not counted twice.
    oversized_counted: u32,
}

impl<'a> Reader<'a> {
    fn new(source: &'a MqttSource, m: &'a SourceMetrics) -> Reader<'a> {
        Reader {
            source,
            m,
            rejections: Rejections::new(m.metrics.clone(), &m.name),
            tags: Vec::new(),
            oversized_counted: 0,
        }
    }

    /// Parses one message into `collected` (started when `None`), with its ack. A message
    /// with nothing usable in it is counted, and acked at once.
    fn read(&mut self, msg: Message, ack_tx: &mpsc::Sender<u16>, collected: &mut Option<Envelope>) {
        self.m.counters.messages.inc();
        let envelope = collected.get_or_insert_with(|| Envelope::new(Vec::new(), None, 0));
        let before = envelope.readings.len();
        match &msg.topic {
            Some(_)
                if msg.dup
                    && self.oversized_counted > 0
                    && msg.payload.len() > self.source.settings.max_payload_size =>
            {
                // Counted when it closed the connection.
                self.oversized_counted -= 1;
            }
            Some(topic) => self.parse(topic, &msg.payload, &mut envelope.readings),
            None => self.reject("(a topic that is not UTF-8)", Reject::InvalidUtf8.reason()),
        }
        let added = &envelope.readings[before..];
        let acked_now = added.is_empty();
        if !acked_now {
            envelope.messages += 1;
        }
        if msg.qos != QoS::AtMostOnce {
            match &mut envelope.ack {
                Some(ack) if !acked_now => ack.add(msg.pkid),
                _ => {
                    let ack = Ack::new(msg.pkid, ack_tx.clone(), self.m.ack_failed.clone());
                    if acked_now {
                        ack.send();
                    } else {
                        envelope.ack = Some(ack);
                    }
                }
            }
        }
        if envelope.readings.is_empty() {
            *collected = None;
        }
    }

    /// Parses one message's payload, appending its readings to `readings`.
    fn parse(&mut self, topic: &str, payload: &[u8], readings: &mut Vec<Reading>) {
        let s = &self.source.settings;
        let Some((sub, m)) = s
            .subscriptions
            .iter()
            .find_map(|sub| sub.template.matches(topic).map(|m| (sub, m)))
        else {
            self.reject(topic, "unmatched_topic");
            return;
        };
        if payload.len() > s.max_payload_size {
            self.reject(topic, Reject::Oversized.reason());
            return;
        }
        let tags = &mut self.tags;
        tags.clear();
        tags.extend_from_slice(&sub.tags);
        for (k, v) in m.tags() {
            match tags.binary_search_by(|(tk, _)| tk.as_str().cmp(k)) {
                Ok(i) => tags[i].1 = v.into(),
                Err(i) => tags.insert(i, (k.into(), v.into())),
            }
        }
        let now = now_ns();
        let ts = &self.source.timestamps;
        let ctx = Context {
            measurement: m.measurement.unwrap_or(&sub.measurement),
            tags,
            field: m.field.unwrap_or(&sub.field),
            default_device: topic,
            received_ns: now,
            bounds: timestamp_bounds(ts, now),
        };
        for reject in payload::parse(&sub.format, payload, &ctx, readings) {
            self.rejections.reject(topic, reject.reason());
        }
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
