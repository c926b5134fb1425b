//! The MQTT sink: publishes readings to a broker at QoS 1, as InfluxDB line protocol, from
//! the journal with its own cursor like every sink. An edge collector next to the devices
//! forwards this way to the central broker, where collectors read the stream (sharing it
//! through a shared subscription when one is not enough).
//!
//! A batch becomes messages: the readings of one topic (see [`TopicPattern`]) share a
//! message, one line each, up to `max_message_size` bytes. The batch is written when the
//! broker has acknowledged every one of its messages (PUBACK); only then does the runner
//! move the sink's cursor. So nothing is lost when the broker or the network goes away: a
//! batch that was not wholly acknowledged is published again, whole, on a new connection
//! (the messages that had arrived arrive twice, which the stores behind the broker absorb:
//! an identical point overwrites itself).
//!
//! The connection is this sink's own (a clean session that ends at disconnect: it subscribes
//! to nothing and the journal, not the broker, keeps what is unacknowledged). It is polled
//! only while a batch is written; one idle for longer than the keep-alive interval is
//! replaced before the next batch rather than trusted.
//!
//! Errors, by the runner's classes: a connection that fails, closes or stays silent for
//! `ack_timeout` is `Retryable` (with the runner's backoff, which also paces reconnects); a
//! refused CONNECT (bad credentials) or an MQTT 5 PUBACK "not authorized" is `Unauthorized`;
//! a PUBACK "quota exceeded" is `Throttled`; a PUBACK saying the topic or payload is invalid
//! is `Rejected` (the batch goes to the dead-letter file); a reading too large for one
//! message makes the batch `TooLarge` until it is alone, then `Rejected`. MQTT 3.1.1 has no
//! reason codes: a 3.1.1 broker that drops what it does not accept (Mosquitto does, for a
//! topic its ACL denies) still acknowledges it.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::line_protocol::{self, Dialect, Precision};
use super::{Batch, Sink, SinkError};
use crate::config::MqttSinkSettings;
use crate::metrics::{Counter, Metrics};
use crate::mqtt::{
    ConnError, Connection, Event, MqttError, MqttFailed, Options, PubAckOutcome, Tuning,
};
use crate::reading::Readings;
use crate::topic::TopicPattern;

/// Room in a PUBLISH packet for what is not the payload: the fixed header (at most 5
/// bytes), the topic's length prefix, the packet id and MQTT 5's properties length.
const PACKET_OVERHEAD: usize = 16;

/// The longest topic MQTT allows.
const MAX_TOPIC: usize = 65_535;

/// A broker as a [`Sink`].
pub struct MqttSink {
    name: String,
    client_id: String,
    options: Options,
    topic: TopicPattern,
    max_message_size: usize,
    ack_timeout: Duration,
    keep_alive: Duration,
    request_capacity: usize,
    live: Option<Live>,
    /// A write was interrupted (its future dropped): the connection's state is unknown.
    interrupted: bool,
    published: Counter,
    no_subscribers: Counter,
    warned_no_subscribers: Option<Instant>,
}

/// Not derived: the options hold the password.
impl std::fmt::Debug for MqttSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttSink")
            .field("name", &self.name)
            .field("client_id", &self.client_id)
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

/// An open connection.
struct Live {
    client: crate::mqtt::Client,
    events: Connection,
    /// MQTT 5: the largest packet the broker accepts.
    broker_max_packet: Option<usize>,
    last_used: Instant,
}

impl MqttSink {
    /// The line protocol it publishes: InfluxDB 3's, which the collectors reading the topics
    /// parse (`format = "line_protocol"`).
    pub const DIALECT: Dialect = Dialect::InfluxDb3;

    /// Builds the sink. Connects to nothing until the first write.
    ///
    /// # Errors
    /// TLS files that cannot be read or hold no usable certificate or key.
    pub fn new(settings: &MqttSinkSettings, metrics: &Metrics) -> Result<MqttSink, MqttFailed> {
        let s = settings;
        let options = Options::new(
            &s.broker,
            Tuning {
                manual_acks: false,
                max_incoming_packet: 64 * 1024,
                max_outgoing_packet: s.max_message_size + MAX_TOPIC + PACKET_OVERHEAD,
                receive_maximum: None,
                max_inflight: s.max_inflight,
            },
        )
        .map_err(|e| MqttFailed::new(s.sink.clone(), e))?;
        let labels = [("sink", s.sink.as_str())];
        Ok(MqttSink {
            name: s.sink.clone(),
            client_id: s.broker.client_id.clone(),
            options,
            topic: s.topic.clone(),
            max_message_size: s.max_message_size,
            ack_timeout: s.ack_timeout,
            keep_alive: s.broker.keep_alive,
            request_capacity: usize::from(s.max_inflight),
            live: None,
            interrupted: false,
            published: metrics.counter("mqtt_messages_published_total", &labels),
            no_subscribers: metrics.counter("mqtt_messages_without_subscribers_total", &labels),
            warned_no_subscribers: None,
        })
    }

    /// The sink's name (`mqtt:<name>`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// For `doctor`: connects and disconnects as `<client_id>-doctor`.
    ///
    /// # Errors
    /// The broker cannot be reached, refuses the connection, or does not answer in time.
    pub async fn check(&self, timeout: Duration) -> Result<(), MqttError> {
        self.options.check(&self.client_id, timeout).await
    }

    /// A connection to write on: the open one if it is fit, else a new one.
    async fn connect(&mut self) -> Result<(), SinkError> {
        let stale = self
            .live
            .as_ref()
            .is_some_and(|l| l.last_used.elapsed() >= self.keep_alive);
        if self.interrupted || stale {
            debug!(interrupted = self.interrupted, "opening a new connection");
            self.live = None;
            self.interrupted = false;
        }
        if self.live.is_none() {
            let (client, mut events) = self.options.connect(self.request_capacity);
            let connack = async {
                loop {
                    match events.poll().await {
                        Ok(Event::Connected {
                            max_packet_size, ..
                        }) => return Ok(max_packet_size),
                        Ok(_) => {}
                        Err(e) => return Err(e),
                    }
                }
            };
            let max_packet_size = match tokio::time::timeout(self.ack_timeout, connack).await {
                Ok(Ok(max)) => max,
                Ok(Err(e)) => return Err(connection_error(e)),
                Err(_) => {
                    return Err(SinkError::Retryable(format!(
                        "no CONNACK within {:?}",
                        self.ack_timeout
                    )))
                }
            };
            info!(client_id = %self.client_id, "connected to the broker");
            self.live = Some(Live {
                client,
                events,
                broker_max_packet: max_packet_size.map(|m| m as usize),
                last_used: Instant::now(),
            });
        }
        Ok(())
    }

    /// Publishes `messages` on `live` and waits for every PUBACK; returns how many the
    /// broker routed to no subscriber.
    async fn publish_all(
        live: &mut Live,
        messages: Vec<(String, Bytes)>,
        ack_timeout: Duration,
    ) -> Result<u64, SinkError> {
        let n = messages.len();
        let client = live.client.clone();
        // Publishing waits while rumqttc's in-flight window is full, which only polling
        // the connection (below, in the same task) empties.
        let sending = async move {
            for (topic, payload) in messages {
                client.publish(topic, payload).await?;
            }
            Ok::<(), crate::mqtt::Closed>(())
        };
        tokio::pin!(sending);
        let silence = tokio::time::sleep(ack_timeout);
        tokio::pin!(silence);
        let (mut all_sent, mut acked, mut no_subscribers) = (false, 0, 0);
        while acked < n {
            tokio::select! {
                sent = &mut sending, if !all_sent => {
                    sent.map_err(SinkError::transient)?;
                    all_sent = true;
                }
                () = &mut silence => {
                    return Err(SinkError::Retryable(format!(
                        "no PUBACK within {ack_timeout:?} ({acked} of {n} messages acknowledged)"
                    )));
                }
                event = live.events.poll() => match event {
                    Ok(Event::PubAck { outcome, .. }) => {
                        acked += 1;
                        silence.as_mut().reset(Instant::now() + ack_timeout);
                        match outcome {
                            PubAckOutcome::Accepted => {}
                            PubAckOutcome::NoSubscribers => no_subscribers += 1,
                            refused => return Err(refusal(refused)),
                        }
                    }
                    Ok(_) => {}
                    Err(e) => return Err(connection_error(e)),
                },
            }
        }
        Ok(no_subscribers)
    }
}

impl Sink for MqttSink {
    /// Publishes the batch and waits for every PUBACK.
    ///
    /// # Errors
    /// The classes described in the [module documentation](self).
    ///
    /// # Cancel safety
    /// Dropping the future leaves some messages published and some not; the next write
    /// opens a new connection, and the runner publishes the whole batch again.
    async fn write(&mut self, batch: &Batch) -> Result<(), SinkError> {
        self.connect().await?;
        let Some(live) = self.live.as_mut() else {
            unreachable!("connected above")
        };
        let messages = encode(
            batch,
            &self.topic,
            self.max_message_size,
            live.broker_max_packet,
        )?;
        let count = messages.len() as u64;
        self.interrupted = true;
        match MqttSink::publish_all(live, messages, self.ack_timeout).await {
            Ok(no_subscribers) => {
                live.last_used = Instant::now();
                self.interrupted = false;
                self.published.add(count);
                if no_subscribers > 0 {
                    self.no_subscribers.add(no_subscribers);
                    let now = Instant::now();
                    if self
                        .warned_no_subscribers
                        .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(60))
                    {
                        self.warned_no_subscribers = Some(now);
                        warn!(messages = no_subscribers,
                            "the broker has no subscriber for some of the topics published to: those readings reached nobody (check the topic and the subscribers; a persistent session keeps a subscription while its collector is away)");
                    }
                }
                Ok(())
            }
            Err(e) => {
                self.live = None;
                self.interrupted = false;
                Err(e)
            }
        }
    }
}

/// The messages of `batch`: per topic, the readings' lines, at most `max` bytes each (less
/// when the broker accepts less).
///
/// # Errors
/// `TooLarge` when a reading cannot fit in a message and the batch has others (the runner
/// halves it), `Rejected` when it is alone; `Refused` for the readings line protocol cannot
/// say (a line break in a tag...).
fn encode(
    batch: &Batch,
    pattern: &TopicPattern,
    max: usize,
    broker_max_packet: Option<usize>,
) -> Result<Vec<(String, Bytes)>, SinkError> {
    let mut messages: Vec<(String, Vec<u8>)> = Vec::new();
    // The message still open for each topic.
    let mut open: HashMap<String, usize> = HashMap::new();
    let (mut topic, mut line) = (String::new(), Vec::new());
    let mut refused = line_protocol::Refusals::default();
    let mut at = 0;
    batch.try_for_each(|r| {
        at += 1;
        line.clear();
        if let Err(why) = line_protocol::encode_one(r, Precision::Ns, MqttSink::DIALECT, &mut line)
        {
            refused.readings.push((at - 1, why));
            return Ok(());
        }
        topic.clear();
        pattern.render(r, &mut topic);
        let limit = broker_max_packet.map_or(max, |b| {
            max.min(b.saturating_sub(topic.len() + PACKET_OVERHEAD))
        });
        if line.len() > limit || topic.len() > MAX_TOPIC {
            let reason = format!(
                "a reading of {} bytes (topic {} bytes) does not fit in one message of at most {limit} bytes",
                line.len(),
                topic.len()
            );
            return Err(if batch.len() > 1 {
                SinkError::TooLarge(reason)
            } else {
                SinkError::Rejected(reason)
            });
        }
        match open.get(topic.as_str()) {
            Some(&i) if messages[i].1.len() + line.len() <= limit => {
                messages[i].1.extend_from_slice(&line);
            }
            _ => {
                open.insert(topic.clone(), messages.len());
                messages.push((topic.clone(), line.clone()));
            }
        }
        Ok(())
    })?;
    if !refused.readings.is_empty() {
        return Err(SinkError::Refused(refused.refused(MqttSink::DIALECT)));
    }
    Ok(messages
        .into_iter()
        .map(|(t, p)| (t, Bytes::from(p)))
        .collect())
}

fn connection_error(e: ConnError) -> SinkError {
    match e {
        ConnError::Unauthorized(reason) => SinkError::Unauthorized(format!(
            "the broker refused the connection: {reason} (check username and password)"
        )),
        e => SinkError::Retryable(format!("connection: {e}")),
    }
}

fn refusal(outcome: PubAckOutcome) -> SinkError {
    let said = |what: &str| format!("the broker refused a message: {what}");
    match outcome {
        PubAckOutcome::NotAuthorized => {
            SinkError::Unauthorized(said("not authorized (check its ACL for the topics)"))
        }
        PubAckOutcome::QuotaExceeded => SinkError::Throttled {
            reason: said("quota exceeded"),
            retry_after: None,
        },
        PubAckOutcome::Invalid => SinkError::Rejected(said("invalid topic name or payload")),
        _ => SinkError::Retryable(said("unspecified error")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::reading::FieldValue;
    use crate::reading::Reading;

    fn reading(device: &str, i: i64) -> Reading {
        let mut r = Reading::new("env", 1_700_000_000_000_000_000 + i);
        r.set_tag("device", device);
        r.fields.push(("v".into(), FieldValue::Integer(i)));
        r
    }

    fn text(b: &Bytes) -> &str {
        std::str::from_utf8(b).unwrap()
    }

    #[test]
    fn readings_of_a_topic_share_messages_up_to_the_limit_in_order() {
        let pattern = TopicPattern::parse("t/{device}/{measurement}").unwrap();
        let batch: Batch = (0..6)
            .map(|i| reading(["a", "b"][i as usize % 2], i))
            .collect::<Vec<_>>()
            .into();
        let one = "env,device=a v=0i 1700000000000000000\n".len();
        let messages = encode(&batch, &pattern, 2 * one, None).unwrap();
        let got: Vec<(&str, &str)> = messages
            .iter()
            .map(|(t, p)| (t.as_str(), text(p)))
            .collect();
        assert_eq!(
            got,
            vec![
                ("t/a/env", "env,device=a v=0i 1700000000000000000\nenv,device=a v=2i 1700000000000000002\n"),
                ("t/b/env", "env,device=b v=1i 1700000000000000001\nenv,device=b v=3i 1700000000000000003\n"),
                ("t/a/env", "env,device=a v=4i 1700000000000000004\n"),
                ("t/b/env", "env,device=b v=5i 1700000000000000005\n"),
            ]
        );
        // The broker's own limit counts too (MQTT 5 CONNACK).
        let small = encode(&batch, &pattern, 1 << 20, Some(one + 7 + PACKET_OVERHEAD)).unwrap();
        assert_eq!(small.len(), 6);
    }

    #[test]
    fn a_reading_larger_than_a_message_splits_the_batch_then_is_rejected_alone() {
        let pattern = TopicPattern::parse("t/{device}").unwrap();
        let batch = Batch::from(vec![reading("a", 1), reading("b", 2)]);
        assert!(matches!(
            encode(&batch, &pattern, 20, None),
            Err(SinkError::TooLarge(_))
        ));
        assert!(matches!(
            encode(&batch.split_at(1).0, &pattern, 20, None),
            Err(SinkError::Rejected(_))
        ));
    }

    #[test]
    fn broker_refusals_map_to_the_runners_classes() {
        assert!(matches!(
            refusal(PubAckOutcome::NotAuthorized),
            SinkError::Unauthorized(_)
        ));
        assert!(matches!(
            refusal(PubAckOutcome::QuotaExceeded),
            SinkError::Throttled {
                retry_after: None,
                ..
            }
        ));
        assert!(matches!(
            refusal(PubAckOutcome::Invalid),
            SinkError::Rejected(_)
        ));
        assert!(refusal(PubAckOutcome::Failed).is_retryable());
        assert!(matches!(
            connection_error(ConnError::Unauthorized("BadUserNamePassword".into())),
            SinkError::Unauthorized(_)
        ));
        for e in [
            ConnError::TakenOver,
            ConnError::Other("I/O: connection refused".into()),
        ] {
            assert!(matches!(connection_error(e), SinkError::Retryable(_)));
        }
    }

    #[test]
    fn the_password_is_never_in_debug_output() {
        let settings = crate::config::Config::from_toml(
            r#"
            [sinks.local]
            enabled = false
            [[sources.serial]]
            name = "p"
            path = "/dev/ttyUSB0"
            measurement = "env"
            [[sinks.mqtt]]
            name = "core"
            host = "localhost"
            username = "edge"
            password = "hunter2-secret"
            "#,
        )
        .and_then(crate::config::Config::validate)
        .unwrap();
        let sink = MqttSink::new(&settings.mqtt_sinks[0], &Metrics::new()).unwrap();
        let shown = format!("{sink:?} {settings:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
