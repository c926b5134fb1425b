//! Publishing a fleet's messages to an MQTT broker, and knowing which ones the broker took.
//!
//! Messages are spread over several MQTT connections by device (the device numbered `d`, in
//! order of first appearance, uses connection `d % connections`), so each device's messages go
//! out in order on one connection. A dispatcher paces the messages (`rate`, messages per
//! second over all connections) and hands them to one task per connection, which publishes
//! them through a rumqttc client while a second task polls the event loop without ever
//! blocking it. The poller maps packet ids to messages and marks them acknowledged on PUBACK,
//! reconnects with capped backoff, and republishes what the broker had not acknowledged, even
//! when the broker lost the session.
//!
//! A message the broker refuses by closing the connection (one over its packet size limit,
//! say) is sent again after every reconnect, forever: MQTT 3.1.1 gives the client no way to
//! tell that apart from a broker restart. Keep oversized faults under the broker's limit.

mod connection;

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, Instrument};

use crate::fleet::Message;
use connection::{ConnectionOutcome, ConnectionSettings, Outbound};

/// How to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct PublishConfig {
    /// Broker host name or IP address.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// Client ids are `{client_id_prefix}-{connection}`. Two publishers with the same prefix on
    /// one broker take each other's connections over.
    pub client_id_prefix: String,
    /// Number of MQTT connections (at least 1).
    pub connections: usize,
    /// QoS of the publishes: 0 or 1.
    pub qos: u8,
    /// Total messages per second over all connections; `None`: as fast as possible.
    pub rate: Option<f64>,
    /// MQTT clean session. With `false` (the default) the broker keeps the session across a
    /// reconnect, which is what resuming unacknowledged publishes relies on.
    pub clean_session: bool,
    /// Unacknowledged QoS 1 publishes per connection before the client waits (at least 1).
    pub max_inflight: u16,
}

impl Default for PublishConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".to_owned(),
            port: 1883,
            client_id_prefix: "telemetry-simulator".to_owned(),
            connections: 1,
            qos: 1,
            rate: None,
            clean_session: false,
            max_inflight: 100,
        }
    }
}

/// What happened to the messages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishReport {
    /// Messages written to a connection at least once.
    pub sent: usize,
    /// Per message taken from the input (for [`publish`], indexed like its `messages`): whether
    /// the broker acknowledged it. Always `false` at QoS 0, which has no acknowledgement.
    pub acked: Vec<bool>,
    /// Times a connection was re-established after losing it.
    pub reconnects: u64,
    /// Publishes written again after a reconnect because they had not been acknowledged.
    pub retransmissions: u64,
}

impl PublishReport {
    /// Number of acknowledged messages.
    pub fn acked_count(&self) -> usize {
        self.acked.iter().filter(|acked| **acked).count()
    }
}

/// Why publishing could not run.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The configuration cannot work.
    #[error("invalid publish config: {0}")]
    InvalidConfig(&'static str),
    /// A connection task panicked (a bug).
    #[error("connection task failed")]
    Task(#[from] tokio::task::JoinError),
}

/// Publishes `messages` and returns once every one is acknowledged (QoS 1) or written to the
/// network (QoS 0), or once `stop` is cancelled; then it disconnects cleanly.
///
/// Connection errors are not errors here: the connections retry with capped backoff until
/// `stop`, so a broker that is down or restarting only delays the run.
///
/// # Errors
/// An invalid [`PublishConfig`], or a connection task that panicked.
pub async fn publish(
    cfg: PublishConfig,
    messages: Vec<Message>,
    stop: CancellationToken,
) -> Result<PublishReport, PublishError> {
    let total = messages.len();
    let mut report = publish_stream(cfg, messages, stop).await?;
    report.acked.resize(total, false);
    Ok(report)
}

/// Like [`publish`], for a stream that need not fit in memory (e.g. an endless
/// [`Fleet::iter`](crate::fleet::Fleet::iter) cut by a deadline): only the messages not yet
/// acknowledged are held. `acked` covers the messages taken from the stream.
///
/// # Errors
/// As [`publish`].
pub async fn publish_stream<I>(
    cfg: PublishConfig,
    messages: I,
    stop: CancellationToken,
) -> Result<PublishReport, PublishError>
where
    I: IntoIterator<Item = Message>,
{
    let settings = ConnectionSettings::new(&cfg)?;
    let rate = match cfg.rate {
        Some(rate) if !(rate.is_finite() && rate > 0.0) => {
            return Err(PublishError::InvalidConfig(
                "rate must be a positive number",
            ));
        }
        rate => rate,
    };

    let mut senders = Vec::with_capacity(cfg.connections);
    let mut tasks = Vec::with_capacity(cfg.connections);
    for index in 0..cfg.connections {
        let (tx, rx) = mpsc::channel(DISPATCH_CAPACITY);
        let settings = settings.for_connection(index);
        let span = tracing::info_span!("mqtt_connection", client_id = %settings.client_id);
        tasks.push(tokio::spawn(
            connection::run(settings, rx, stop.clone()).instrument(span),
        ));
        senders.push(tx);
    }

    let started = Instant::now();
    let mut devices: HashMap<String, usize> = HashMap::new();
    let mut dispatched = 0usize;
    for message in messages {
        if let Some(rate) = rate {
            let due = started + Duration::from_secs_f64(dispatched as f64 / rate);
            tokio::select! {
                biased;
                () = stop.cancelled() => break,
                () = tokio::time::sleep_until(due) => {}
            }
        }
        let next_device = devices.len();
        let device = *devices.entry(message.device.clone()).or_insert(next_device);
        let outbound = Outbound {
            index: dispatched,
            topic: message.topic,
            payload: message.payload,
        };
        let sent = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            sent = senders[device % senders.len()].send(outbound) => sent,
        };
        if sent.is_err() {
            break; // the connection stopped, which it only does on `stop`
        }
        dispatched += 1;
    }
    drop(senders);

    let mut report = PublishReport {
        acked: vec![false; dispatched],
        ..PublishReport::default()
    };
    for task in tasks {
        let ConnectionOutcome {
            sent,
            acked,
            reconnects,
            retransmissions,
        } = task.await?;
        report.sent += sent;
        report.reconnects += reconnects;
        report.retransmissions += retransmissions;
        for index in acked {
            if let Some(slot) = report.acked.get_mut(index) {
                *slot = true;
            }
        }
    }
    let elapsed = started.elapsed();
    info!(
        dispatched,
        sent = report.sent,
        acked = report.acked_count(),
        reconnects = report.reconnects,
        ?elapsed,
        "publishing finished"
    );
    Ok(report)
}

/// Messages waiting for each connection: enough to keep it busy, few enough to stay small.
const DISPATCH_CAPACITY: usize = 64;
