//! The MQTT source: one task per broker connection (rumqttc; MQTT 3.1.1 or 5, through the
//! [`crate::mqtt`] seam, so that everything here is written once for both).
//!
//! The event loop is polled continuously in the source's task; PUBACKs are sent from a second
//! task, fed by the journal once a message's readings are durable (acking from the polling
//! task can deadlock on rumqttc's bounded request channel). The connection reconnects with
//! capped, jittered backoff (rumqttc has none of its own), and subscribes again on every
//! ConnAck (a session that was not kept has lost its subscriptions).
//!
//! The connection's state machine (`state.rs`: what each event means, backoff, the packet
//! limit) has no I/O and is tested without a broker; [`MqttSource::run`] and its `Io` do the
//! polling, the envelopes, the acks and the stop.
//!
//! Shared subscriptions (`$share/<group>/<filter>`) need nothing more here: the broker hands
//! each message of the group to one of its members, and the message's topic is the real one,
//! which the template's filter part matches (the prefix never becomes a tag).

mod state;

use std::convert::Infallible;
use std::pin::Pin;
use std::time::Duration;

use rumqttc::QoS;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Sleep;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::{timestamp_bounds, Rejections, SourceCounters};
use crate::channel::{Ack, Envelope, Inlet};
use crate::config::{MqttSettings, Protocol, TimestampConfig};
use crate::events::{
    OversizedMessageClosedConnection, SourceConnected, SourceDisconnected, SourceUnreachable,
};
use crate::metrics::{Counter, Gauge, Metrics};
use crate::mqtt::{Client, ConnError, Connection, Event, Message, MqttFailed, Options, Tuning};
use crate::payload::{self, Context, Reject};
use crate::reading::{CompactString, Reading};
use crate::time::now_ns;
use state::{ConnState, Disconnect, Step};

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
    ) -> Result<MqttSource, MqttFailed> {
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
        .map_err(|e| MqttFailed::new(format!("source {}", s.name), e))?;
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
    pub async fn check(&self, timeout: Duration) -> Result<(), MqttFailed> {
        let b = &self.settings.broker;
        self.options
            .check(&b.client_id, timeout)
            .await
            .map_err(|e| MqttFailed::new(format!("{}:{}", b.host, b.port), e))
    }

    /// The source's name in logs and metrics (`mqtt:<name>`).
    pub fn label(&self) -> String {
        format!("mqtt:{}", self.settings.name)
    }

    /// Runs until `stop` is cancelled: connects, subscribes, and sends what arrives to `out`.
    /// A full `out` pushes back: the event loop is not polled until there is room, so the
    /// broker holds the rest.
    ///
    /// Its log lines carry the span `source{source=mqtt:<name>}`.
    ///
    /// # Errors
    /// None (the type says so): every failure is retried. The signature is the one every
    /// source has.
    #[tracing::instrument(name = "source", skip_all, fields(source = %self.label()))]
    pub async fn run(self, out: Inlet, stop: CancellationToken) -> Result<(), Infallible> {
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
        let acker = tokio::spawn(async move {
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
        let mut state = ConnState::new(s.reconnect, packet_limit(s), s.max_payload_size);
        let mut reader = Reader::new(&self, &m);
        info!(host = %b.host, port = b.port, protocol = %b.protocol, client_id = %b.client_id, "connecting");

        let mut io = Io {
            max_messages: out.capacity(),
            out: Some(out),
            ack_tx: Some(ack_tx),
            acker,
            acks_done: false,
            drain_deadline: Box::pin(tokio::time::sleep(Duration::MAX)),
            collected: None,
            read_pause: s.read_pause,
        };
        loop {
            if let Some(limit) = state.take_raised_limit() {
                conn.set_max_incoming_packet(limit, MAX_OUTGOING_PACKET);
            }
            let Some(event) = io.next_event(&mut conn, &client, &m, &stop).await else {
                break;
            };
            let stopping = io.out.is_none();
            if event.is_err() {
                m.counters.connected.set(0);
                m.subscribed.set(0);
            }
            match state.on_event(event, stopping, std::time::Instant::now()) {
                Step::Stop => break,
                Step::Subscribe { session_present } => {
                    SourceConnected {
                        connected: &m.counters.connected,
                        at: None,
                        session_present: Some(session_present),
                    }
                    .emit();
                    // Subscribing from this task could wait on rumqttc's request channel,
                    // which only this task drains: hand it to another task.
                    let c = client.clone();
                    let f = filters.clone();
                    tokio::spawn(async move { c.subscribe(&f).await });
                }
                Step::Subscribed => {
                    m.subscribed.set(1);
                    info!(filters = filters.len(), "subscribed");
                }
                Step::Refused(refused) => {
                    error!(?refused, "the broker refused a subscription (check its ACL, and that it supports shared subscriptions if one is `$share/...`)");
                }
                Step::Read { msg, counted } => {
                    if let Some(acks) = &io.ack_tx {
                        reader.read(msg, counted, acks, &mut io.collected);
                    }
                }
                Step::Skip | Step::Nothing => {}
                Step::Reconnect { delay, cause } => {
                    m.counters.reconnects.inc();
                    reader.disconnected(&cause);
                    tokio::select! {
                        () = stop.cancelled() => {}
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
        m.counters.connected.set(0);
        io.acker.abort();
        info!("stopped");
        Ok(())
    }
}

/// The largest packet a source reads: a publish packet is the payload plus at most a 64 KiB
/// topic and a few header bytes, so anything larger cannot be a payload it would accept.
/// A larger one closes the connection (MQTT 3.1.1 cannot tell the broker a limit); see the
/// handling of [`crate::mqtt::ConnError::Oversized`] in [`state::ConnState`].
fn packet_limit(s: &MqttSettings) -> usize {
    s.max_payload_size.saturating_add(70 * 1024)
}

/// The I/O side of a running source: its way into the pipeline, its acks, and the envelope
/// it is collecting.
///
/// While running, `out` and `ack_tx` are Some. Stopping takes both: no new message is read
/// (the broker keeps what we did not ack), and once the journal has taken every message
/// already read, the acker ends; a disconnect queued behind its acks then closes the
/// connection after they went out.
struct Io {
    out: Option<Inlet>,
    ack_tx: Option<mpsc::Sender<u16>>,
    acker: JoinHandle<()>,
    acks_done: bool,
    drain_deadline: Pin<Box<Sleep>>,
    /// The messages that arrived together (rumqttc reads several packets at a time) go into
    /// one envelope: it is sent when no further event is ready, when it is full, or before
    /// any other event is handled.
    collected: Option<Envelope>,
    max_messages: usize,
    read_pause: Duration,
}

impl Io {
    /// The next event of `conn`, once what was collected is sent if it must be; `None` when
    /// the source is done (the pipeline is gone, or it stopped and its acks went out or
    /// timed out).
    async fn next_event(
        &mut self,
        conn: &mut Connection,
        client: &Client,
        m: &SourceMetrics,
        stop: &CancellationToken,
    ) -> Option<Result<Event, ConnError>> {
        let event = loop {
            let mut next = std::pin::pin!(conn.poll());
            // Whether the connection was polled: `Pending` then means every message
            // waiting has been read.
            let mut polled = false;
            let ready = match (&self.out, self.collected.as_ref()) {
                (Some(_), Some(c))
                    if c.readings.len() < MAX_ENVELOPE_READINGS
                        && c.messages < self.max_messages =>
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
            if let std::task::Poll::Ready(e) = ready {
                break e;
            }
            // Nothing more right now (or the envelope is full): hand over what was collected,
            // then wait. The poll future is not dropped in between. Once every message
            // waiting is read, and none needs an ack, pause before reading again (see
            // `MqttSettings::read_pause`).
            let mut pause = false;
            if let Some(envelope) = self.collected.take() {
                pause = polled && envelope.ack.is_none() && !self.read_pause.is_zero();
                if send(&self.out, &m.counters, envelope).await.is_err() {
                    return None; // the pipeline is gone
                }
            }
            if pause {
                tokio::select! {
                    biased;
                    () = stop.cancelled() => {}
                    () = tokio::time::sleep(self.read_pause) => {}
                }
            }
            tokio::select! {
                biased;
                () = stop.cancelled(), if self.out.is_some() => {
                    self.out = None;
                    self.ack_tx = None;
                    self.drain_deadline.as_mut().reset(tokio::time::Instant::now() + ACK_DRAIN_TIMEOUT);
                }
                () = &mut self.drain_deadline => {
                    warn!("stopping without sending every ack; the broker will redeliver those messages");
                    return None;
                }
                _ = &mut self.acker, if self.out.is_none() && !self.acks_done => {
                    self.acks_done = true;
                    client.try_disconnect();
                }
                e = next => break e,
            }
        };
        if !matches!(event, Ok(Event::Message(_))) {
            if let Some(envelope) = self.collected.take() {
                send(&self.out, &m.counters, envelope).await.ok()?;
            }
        }
        Some(event)
    }
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
}

impl<'a> Reader<'a> {
    fn new(source: &'a MqttSource, m: &'a SourceMetrics) -> Reader<'a> {
        Reader {
            source,
            m,
            rejections: Rejections::new(m.metrics.clone(), &m.name),
            tags: Vec::new(),
        }
    }

    /// Parses one message into `collected` (started when `None`), with its ack. A message
    /// with nothing usable in it is counted, and acked at once; one `counted` already (an
    /// oversized message resent) only acked.
    fn read(
        &mut self,
        msg: Message,
        counted: bool,
        ack_tx: &mpsc::Sender<u16>,
        collected: &mut Option<Envelope>,
    ) {
        self.m.counters.messages.inc();
        let envelope = collected.get_or_insert_with(|| Envelope::new(Vec::new(), None, 0));
        let before = envelope.readings.len();
        match &msg.topic {
            // Counted when it closed the connection.
            Some(_) if counted => {}
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

    /// Counts and logs why the connection ended.
    fn disconnected(&mut self, cause: &Disconnect) {
        let s = &self.source.settings;
        match cause {
            Disconnect::Oversized { size, unsaid } => OversizedMessageClosedConnection {
                rejected: self.rejections.counter(Reject::Oversized.reason()),
                size: *size,
                max_payload_size: s.max_payload_size,
                unsaid: *unsaid,
            }
            .emit(),
            Disconnect::TakenOver => {
                error!(client_id = %s.broker.client_id, "another client connected with this client id and took the session over: every collector needs its own client_id (for example \"collector-{{hostname}}\")");
            }
            Disconnect::Lost(e) => SourceDisconnected {
                connected: &self.m.counters.connected,
                at: None,
                reason: e,
            }
            .emit(),
            Disconnect::CannotConnect {
                error,
                attempts,
                log,
            } => SourceUnreachable {
                at: None,
                error,
                attempts: Some(*attempts),
                loud: *log,
            }
            .emit(),
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
