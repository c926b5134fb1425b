//! One MQTT connection: a feeder task that hands publishes to rumqttc, and a poller (the
//! connection task itself) that drives the event loop and tracks what the broker acknowledged.
//!
//! Tracking relies on rumqttc's event order. The event loop takes requests one at a time, in
//! FIFO order, and reports each written publish as `Outgoing::Publish(pkid)`; so the k-th
//! publish event with a packet id not already in flight belongs to the k-th message handed to
//! the client. An event whose packet id is already in flight is a retransmission. QoS 1
//! messages are acknowledged by `Incoming::PubAck(pkid)`; QoS 0 ones count as sent once
//! written.
//!
//! Reconnects: rumqttc keeps unacknowledged publishes across a reconnect and sends them again
//! first, but only when the broker says it still has our session (`session_present`): when it
//! does not (a restarted broker without persistence, or a clean session), rumqttc silently
//! drops them. The poller therefore keeps a copy of them when the connection fails and puts
//! them back when the new session turns out to be empty. Duplicates are possible (QoS 1 is
//! at least once); losses are not.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, Outgoing, Packet, QoS, Request,
};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

use super::{PublishConfig, PublishError};
use crate::model::SplitMix64;

/// Interval of MQTT pings; a dead broker is noticed within about two of them.
const KEEP_ALIVE: Duration = Duration::from_secs(10);
/// We only receive acknowledgements.
const MAX_INCOMING_PACKET: usize = 64 * 1024;
/// The largest packet MQTT allows: payload limits are the broker's business (and a fault
/// injection tool must be able to exceed them).
const MAX_OUTGOING_PACKET: usize = 268_435_455;
/// Reconnect backoff bounds.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// How long a connection must stay up before the backoff starts again from its minimum: a
/// broker that accepts the connection and closes it at once (a refused session, a packet
/// over its limit) must not be reconnected to at the minimum delay forever.
const HEALTHY_AFTER: Duration = BACKOFF_MAX;
/// How long a clean disconnect may take before the connection is just dropped.
const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long to wait for the broker to close the connection after our DISCONNECT.
const DISCONNECT_LINGER: Duration = Duration::from_millis(500);
/// Message indices between the feeder and the poller: at most two are ever waiting.
const ORDER_CAPACITY: usize = 16;

/// A message on its way to one connection.
#[derive(Debug)]
pub(super) struct Outbound {
    /// Position in the publisher's input.
    pub(super) index: usize,
    pub(super) topic: String,
    pub(super) payload: Vec<u8>,
}

/// The validated settings of one connection.
#[derive(Debug, Clone)]
pub(super) struct ConnectionSettings {
    pub(super) client_id: String,
    index: usize,
    host: String,
    port: u16,
    qos: QoS,
    clean_session: bool,
    max_inflight: u16,
}

impl ConnectionSettings {
    /// Validates `cfg`; the result is the template of every connection.
    pub(super) fn new(cfg: &PublishConfig) -> Result<Self, PublishError> {
        let qos = match cfg.qos {
            0 => QoS::AtMostOnce,
            1 => QoS::AtLeastOnce,
            _ => return Err(PublishError::InvalidConfig("qos must be 0 or 1")),
        };
        if cfg.connections == 0 {
            return Err(PublishError::InvalidConfig(
                "connections must be at least 1",
            ));
        }
        if cfg.max_inflight == 0 {
            return Err(PublishError::InvalidConfig(
                "max_inflight must be at least 1",
            ));
        }
        if cfg.client_id_prefix.is_empty() {
            return Err(PublishError::InvalidConfig(
                "client_id_prefix must not be empty",
            ));
        }
        Ok(Self {
            client_id: cfg.client_id_prefix.clone(),
            index: 0,
            host: cfg.host.clone(),
            port: cfg.port,
            qos,
            clean_session: cfg.clean_session,
            max_inflight: cfg.max_inflight,
        })
    }

    pub(super) fn for_connection(&self, index: usize) -> Self {
        Self {
            client_id: format!("{}-{index}", self.client_id),
            index,
            ..self.clone()
        }
    }

    fn options(&self) -> MqttOptions {
        let mut options = MqttOptions::new(&self.client_id, &self.host, self.port);
        options
            .set_clean_session(self.clean_session)
            .set_inflight(self.max_inflight)
            .set_keep_alive(KEEP_ALIVE)
            .set_max_packet_size(MAX_INCOMING_PACKET, MAX_OUTGOING_PACKET);
        options
    }
}

/// What one connection did.
#[derive(Debug, Default)]
pub(super) struct ConnectionOutcome {
    pub(super) sent: usize,
    /// Indices of the acknowledged messages.
    pub(super) acked: Vec<usize>,
    pub(super) reconnects: u64,
    pub(super) retransmissions: u64,
}

/// Publishes what arrives on `input` until it closes and everything is acknowledged (or
/// written, at QoS 0), or until `stop`; then disconnects.
pub(super) async fn run(
    settings: ConnectionSettings,
    input: mpsc::Receiver<Outbound>,
    stop: CancellationToken,
) -> ConnectionOutcome {
    // Capacity 0: a publish stays with the feeder until the event loop takes it. With a
    // buffer, a disconnect moves buffered requests into rumqttc's `pending` queue, where they
    // bypass the in-flight limit (packet id collisions) and vanish if the session is lost.
    let (client, eventloop) = AsyncClient::new(settings.options(), 0);
    let (order_tx, order_rx) = mpsc::channel(ORDER_CAPACITY);
    let (resolved_tx, resolved_rx) = watch::channel(0);
    let feeder = Feeder {
        client,
        qos: settings.qos,
        order: order_tx,
        resolved: resolved_rx,
    };
    let feeder = tokio::spawn(feeder.run(input, stop.clone()).in_current_span());
    let poller = Poller {
        tracker: Tracker::new(settings.qos),
        order: order_rx,
        resolved: resolved_tx,
        backoff: Backoff::new(settings.index as u64),
        reconnects: 0,
    };
    let outcome = poller.run(eventloop, stop).await;
    // The feeder ends by itself once the event loop is gone.
    if let Err(err) = feeder.await {
        warn!(%err, "feeder task failed");
    }
    outcome
}

/// Hands messages to the client in order, then asks for the disconnect.
struct Feeder {
    client: AsyncClient,
    qos: QoS,
    /// Index of each message, sent just before its publish.
    order: mpsc::Sender<usize>,
    /// Messages acknowledged (QoS 1) or written (QoS 0) so far, from the poller.
    resolved: watch::Receiver<usize>,
}

impl Feeder {
    async fn run(mut self, mut input: mpsc::Receiver<Outbound>, stop: CancellationToken) {
        let mut handed = 0usize;
        loop {
            let next = tokio::select! {
                biased;
                () = stop.cancelled() => break,
                next = input.recv() => next,
            };
            let Some(Outbound {
                index,
                topic,
                payload,
            }) = next
            else {
                // Everything is handed over: disconnect once everything is resolved. The
                // request also wakes the event loop, which may be idle by then.
                tokio::select! {
                    biased;
                    () = stop.cancelled() => {}
                    _ = self.resolved.wait_for(|resolved| *resolved >= handed) => {}
                }
                break;
            };
            if topic.is_empty() || !rumqttc::valid_topic(&topic) {
                // The broker would drop the connection at every retry: never send it.
                warn!(index, topic, "skipping a message with an invalid topic");
                continue;
            }
            if self.order.send(index).await.is_err() {
                return;
            }
            let published = tokio::select! {
                biased;
                () = stop.cancelled() => break,
                published = self.client.publish(topic, self.qos, false, payload) => published,
            };
            if published.is_err() {
                return; // the event loop is gone
            }
            handed += 1;
        }
        // Fails only when the event loop is already gone, which is the goal anyway.
        let _ = self.client.disconnect().await;
    }
}

struct Poller {
    tracker: Tracker,
    order: mpsc::Receiver<usize>,
    resolved: watch::Sender<usize>,
    backoff: Backoff,
    reconnects: u64,
}

impl Poller {
    /// Polls until the disconnect requested by the feeder is written and the broker closed the
    /// connection, or until a short grace period after `stop`. The poll future is never
    /// cancelled before `stop`: dropping it in the middle of a write would lose the packet
    /// while rumqttc believes it sent it.
    async fn run(mut self, mut eventloop: EventLoop, stop: CancellationToken) -> ConnectionOutcome {
        // Unacknowledged publishes at the last connection failure, in case the broker comes
        // back without our session.
        let mut unacked: VecDeque<Request> = VecDeque::new();
        let mut connected_before = false;
        let mut failures = 0u32;
        let mut closing: Option<Instant> = None;

        loop {
            let deadline = closing.unwrap_or_else(|| Instant::now() + DISCONNECT_TIMEOUT);
            let event = tokio::select! {
                biased;
                () = stop.cancelled(), if closing.is_none() => {
                    closing = Some(Instant::now() + DISCONNECT_TIMEOUT);
                    continue;
                }
                () = tokio::time::sleep_until(deadline), if closing.is_some() => {
                    debug!("no clean disconnect in time; dropping the connection");
                    break;
                }
                event = eventloop.poll() => event,
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    if connected_before {
                        self.reconnects += 1;
                        info!(
                            failures,
                            session_present = ack.session_present,
                            "reconnected"
                        );
                    } else {
                        debug!(session_present = ack.session_present, "connected");
                    }
                    connected_before = true;
                    failures = 0;
                    self.backoff.connected(Instant::now());
                    // rumqttc cleared its pending publishes if the session is gone.
                    if !ack.session_present && eventloop.pending.is_empty() && !unacked.is_empty() {
                        info!(
                            count = unacked.len(),
                            "broker lost the session; publishing unacknowledged messages again"
                        );
                        eventloop.pending = std::mem::take(&mut unacked);
                    }
                    unacked.clear();
                }
                Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                    while let Ok(index) = self.order.try_recv() {
                        self.tracker.queue(index);
                    }
                    self.tracker.on_publish(pkid);
                    self.resolved.send_replace(self.tracker.resolved());
                }
                Ok(Event::Incoming(Packet::PubAck(ack))) => {
                    self.tracker.on_puback(ack.pkid);
                    self.resolved.send_replace(self.tracker.resolved());
                }
                Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                    // Wait for the broker to close the connection rather than close it first:
                    // rumqttd 0.20 handles a DISCONNECT followed at once by EOF as two
                    // disconnections, and the second one drops whichever new client has
                    // been given the freed connection id in between.
                    let linger = Instant::now() + DISCONNECT_LINGER;
                    closing = Some(closing.map_or(linger, |deadline| deadline.min(linger)));
                }
                Ok(_) => {}
                Err(_) if closing.is_some() => break,
                Err(err) => {
                    unacked.clone_from(&eventloop.pending);
                    self.on_connection_error(&err, failures);
                    failures += 1;
                    let delay = self.backoff.next_delay(Instant::now());
                    tokio::select! {
                        () = stop.cancelled() => {}
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
        let Tracker {
            sent,
            acked,
            retransmissions,
            ..
        } = self.tracker;
        ConnectionOutcome {
            sent,
            acked,
            reconnects: self.reconnects,
            retransmissions,
        }
    }

    /// Logs the first failure of an outage loudly, then one retry in 30 (about a minute).
    fn on_connection_error(&self, err: &ConnectionError, failures: u32) {
        let in_flight = self.tracker.in_flight();
        if failures == 0 {
            warn!(error = %err, in_flight, "connection failed; reconnecting");
        } else if failures.is_multiple_of(30) {
            warn!(error = %err, failures, "still cannot reconnect");
        } else {
            debug!(error = %err, failures, "reconnect failed");
        }
    }
}

/// Maps rumqttc's publish events to message indices (see the module docs).
#[derive(Debug)]
struct Tracker {
    qos: QoS,
    /// Messages handed to the client whose publish event has not been seen yet.
    queued: VecDeque<usize>,
    /// QoS 1: packet id -> message, written but not acknowledged.
    in_flight: HashMap<u16, usize>,
    acked: Vec<usize>,
    sent: usize,
    retransmissions: u64,
}

impl Tracker {
    fn new(qos: QoS) -> Self {
        Self {
            qos,
            queued: VecDeque::new(),
            in_flight: HashMap::new(),
            acked: Vec::new(),
            sent: 0,
            retransmissions: 0,
        }
    }

    fn queue(&mut self, index: usize) {
        self.queued.push_back(index);
    }

    fn on_publish(&mut self, pkid: u16) {
        let qos1 = self.qos == QoS::AtLeastOnce;
        if qos1 && self.in_flight.contains_key(&pkid) {
            self.retransmissions += 1;
            return;
        }
        let Some(index) = self.queued.pop_front() else {
            warn!(pkid, "publish event without a queued message");
            return;
        };
        self.sent += 1;
        if qos1 {
            self.in_flight.insert(pkid, index);
        }
    }

    fn on_puback(&mut self, pkid: u16) {
        if let Some(index) = self.in_flight.remove(&pkid) {
            self.acked.push(index);
        }
    }

    fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Messages whose fate is settled: acknowledged at QoS 1, written at QoS 0.
    fn resolved(&self) -> usize {
        match self.qos {
            QoS::AtMostOnce => self.sent,
            _ => self.acked.len(),
        }
    }
}

/// Capped exponential backoff with jitter, so that many connections do not reconnect in step.
#[derive(Debug)]
struct Backoff {
    attempt: u32,
    /// When the current connection was accepted, until it fails.
    connected_at: Option<Instant>,
    rng: SplitMix64,
}

impl Backoff {
    fn new(seed: u64) -> Self {
        Self {
            attempt: 0,
            connected_at: None,
            rng: SplitMix64::new(seed),
        }
    }

    /// The broker accepted a connection (CONNACK). The backoff starts again from its
    /// minimum only if this connection was up for [`HEALTHY_AFTER`] when it fails.
    fn connected(&mut self, now: Instant) {
        self.connected_at = Some(now);
    }

    /// Between half and all of `min(BACKOFF_MIN * 2^attempt, BACKOFF_MAX)`, after a failure
    /// at `now`.
    fn next_delay(&mut self, now: Instant) -> Duration {
        if let Some(at) = self.connected_at.take() {
            if now.saturating_duration_since(at) >= HEALTHY_AFTER {
                self.attempt = 0;
            }
        }
        let cap = BACKOFF_MIN
            .saturating_mul(1 << self.attempt.min(16))
            .min(BACKOFF_MAX);
        self.attempt = self.attempt.saturating_add(1);
        cap / 2 + cap.mul_f64(self.rng.next_f64() / 2.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracker_maps_new_packet_ids_in_order_and_skips_retransmissions() {
        let mut t = Tracker::new(QoS::AtLeastOnce);
        for index in [10, 11, 12] {
            t.queue(index);
        }
        t.on_publish(1);
        t.on_publish(2);
        t.on_puback(1);
        // Reconnect: packet 2 goes out again, then the next new message.
        t.on_publish(2);
        t.on_publish(3);
        assert_eq!((t.sent, t.retransmissions, t.in_flight()), (3, 1, 2));
        t.on_puback(3);
        t.on_puback(2);
        t.on_puback(2); // a duplicate acknowledgement changes nothing
        assert_eq!(t.acked, [10, 12, 11]);
        assert_eq!(t.resolved(), 3);
    }

    #[test]
    fn tracker_reuses_packet_ids_once_acknowledged() {
        let mut t = Tracker::new(QoS::AtLeastOnce);
        t.queue(0);
        t.queue(1);
        t.on_publish(1);
        t.on_puback(1);
        t.on_publish(1);
        assert_eq!((t.sent, t.retransmissions, t.resolved()), (2, 0, 1));
    }

    #[test]
    fn tracker_counts_qos0_publishes_as_sent() {
        let mut t = Tracker::new(QoS::AtMostOnce);
        t.queue(0);
        t.queue(1);
        t.on_publish(0);
        t.on_publish(0);
        assert_eq!((t.sent, t.retransmissions), (2, 0));
        assert!(t.acked.is_empty());
        assert_eq!(t.resolved(), 2);
    }

    #[test]
    fn backoff_grows_to_its_cap_and_resets_after_a_healthy_connection_only() {
        let t0 = Instant::now();
        let mut b = Backoff::new(1);
        let delays: Vec<Duration> = (0..10).map(|_| b.next_delay(t0)).collect();
        assert!(delays[0] >= BACKOFF_MIN / 2 && delays[0] <= BACKOFF_MIN);
        assert!(delays.iter().all(|d| *d <= BACKOFF_MAX));
        assert!(delays[9] >= BACKOFF_MAX / 2);
        // Accepted, then closed at once: still at the cap.
        b.connected(t0);
        assert!(b.next_delay(t0 + HEALTHY_AFTER / 2) >= BACKOFF_MAX / 2);
        // Up long enough: from the minimum again.
        b.connected(t0);
        assert!(b.next_delay(t0 + HEALTHY_AFTER) <= BACKOFF_MIN);
    }
}
