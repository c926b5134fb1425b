//! MQTT client connections, 3.1.1 or 5, behind one small interface for the source and the
//! sink.
//!
//! rumqttc has a separate client for each protocol version (`rumqttc` and `rumqttc::v5`),
//! with the same shape but different types. This module is the seam: [`Options`] builds
//! either from a [`BrokerSettings`], [`Client`] sends requests (subscribe, publish, ack,
//! disconnect), and [`Connection`] is the event loop, whose [`poll`](Connection::poll)
//! yields only what the collector acts on ([`Event`]) and classifies failures
//! ([`ConnError`]). Everything else (parsing, acking after the journal commit, backoff,
//! subscribing on every ConnAck, PUBACK accounting) is written once, above it.
//!
//! As with rumqttc itself, the connection must be polled continuously, and requests that may
//! wait on its bounded request channel must not be sent from the task that polls it.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use rumqttc::v5;
use rumqttc::QoS;

use crate::config::{BrokerSettings, Protocol};

/// What a connection needs besides the broker settings, which differ between reading and
/// publishing.
#[derive(Debug, Clone, Copy)]
pub struct Tuning {
    /// Acks of received QoS 1 messages are sent by [`Client::ack`] (after the journal
    /// commit), not by rumqttc on receipt.
    pub manual_acks: bool,
    /// The largest packet accepted from the broker. MQTT 5 announces it, and the broker then
    /// never sends a larger one.
    pub max_incoming_packet: usize,
    /// The largest packet sent.
    pub max_outgoing_packet: usize,
    /// MQTT 5: the Receive Maximum announced to the broker (its in-flight window towards us).
    pub receive_maximum: Option<u16>,
    /// QoS 1 messages we publish that may await their PUBACK at once (MQTT 5: also at most
    /// the broker's Receive Maximum).
    pub max_inflight: u16,
}

/// The options of one connection, for either protocol version.
#[derive(Clone)]
pub enum Options {
    /// MQTT 3.1.1.
    V311(Box<rumqttc::MqttOptions>),
    /// MQTT 5.
    V5(Box<v5::MqttOptions>),
}

/// Not derived: rumqttc's options print the password in their `Debug`.
impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (protocol, client_id) = match self {
            Options::V311(o) => ("3.1.1", o.client_id()),
            Options::V5(o) => ("5", o.client_id()),
        };
        f.debug_struct("Options")
            .field("protocol", &protocol)
            .field("client_id", &client_id)
            .finish_non_exhaustive()
    }
}

impl Options {
    /// The options for `broker`.
    ///
    /// # Errors
    /// TLS files that cannot be read or hold no usable certificate or key.
    pub fn new(broker: &BrokerSettings, tuning: Tuning) -> Result<Options, MqttError> {
        let b = broker;
        let transport = match &b.tls {
            Some(tls) => Some(rumqttc::Transport::tls_with_config(
                rumqttc::TlsConfiguration::Rustls(std::sync::Arc::new(
                    crate::tls::client_config(Some(tls)).map_err(MqttError::Tls)?,
                )),
            )),
            None => None,
        };
        let password = b.password.as_ref().map(|p| p.expose()).unwrap_or("");
        let to_u32 = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Ok(match b.protocol {
            Protocol::V311 => {
                let mut o = rumqttc::MqttOptions::new(&b.client_id, &b.host, b.port);
                o.set_keep_alive(b.keep_alive)
                    .set_clean_session(b.clean_session)
                    .set_manual_acks(tuning.manual_acks)
                    .set_inflight(tuning.max_inflight.max(1))
                    .set_max_packet_size(tuning.max_incoming_packet, tuning.max_outgoing_packet);
                if let Some(user) = &b.username {
                    o.set_credentials(user, password);
                }
                if let Some(t) = transport {
                    o.set_transport(t);
                }
                Options::V311(Box::new(o))
            }
            Protocol::V5 => {
                let mut o = v5::MqttOptions::new(&b.client_id, &b.host, b.port);
                o.set_keep_alive(b.keep_alive)
                    .set_clean_start(b.clean_session)
                    .set_session_expiry_interval(Some(b.session_expiry))
                    .set_manual_acks(tuning.manual_acks)
                    .set_outgoing_inflight_upper_limit(tuning.max_inflight.max(1))
                    .set_max_packet_size(Some(to_u32(tuning.max_incoming_packet)))
                    .set_receive_maximum(tuning.receive_maximum);
                if let Some(user) = &b.username {
                    o.set_credentials(user, password);
                }
                if let Some(t) = transport {
                    o.set_transport(t);
                }
                Options::V5(Box::new(o))
            }
        })
    }

    /// The same connection under another client id, with a session that starts empty and
    /// ends at disconnect (for `doctor`, so that a running collector's session is untouched).
    pub fn throwaway(&self, client_id: String) -> Options {
        match self {
            Options::V311(o) => {
                let mut o = o.clone();
                o.set_client_id(client_id).set_clean_session(true);
                Options::V311(o)
            }
            Options::V5(o) => {
                let mut o = o.clone();
                o.set_client_id(client_id)
                    .set_clean_start(true)
                    .set_session_expiry_interval(Some(0));
                Options::V5(o)
            }
        }
    }

    /// A client and its connection (nothing is sent until the connection is polled).
    /// `capacity` bounds the requests waiting to be sent.
    pub fn connect(&self, capacity: usize) -> (Client, Connection) {
        match self {
            Options::V311(o) => {
                let (c, e) = rumqttc::AsyncClient::new((**o).clone(), capacity);
                (Client::V311(c), Connection::V311(Box::new(e)))
            }
            Options::V5(o) => {
                let (c, e) = v5::AsyncClient::new((**o).clone(), capacity);
                (Client::V5(c), Connection::V5(Box::new(e)))
            }
        }
    }

    /// Connects once and disconnects, within `timeout`, as `<client id>-doctor` with a
    /// throwaway session.
    ///
    /// # Errors
    /// The broker cannot be reached, refuses the connection, or does not answer in time.
    pub async fn check(&self, client_id: &str, timeout: Duration) -> Result<(), MqttError> {
        let (client, mut conn) = self.throwaway(format!("{client_id}-doctor")).connect(8);
        let connect = async {
            loop {
                match conn.poll().await {
                    Ok(Event::Connected { .. }) => return Ok(()),
                    Ok(_) => {}
                    Err(e) => return Err(MqttError::Connect(e)),
                }
            }
        };
        let result = tokio::time::timeout(timeout, connect)
            .await
            .unwrap_or_else(|_| Err(MqttError::Timeout(timeout)));
        if result.is_ok() {
            let _ = client.disconnect().await;
            let _ = tokio::time::timeout(Duration::from_secs(1), conn.poll()).await;
        }
        result
    }
}

/// Why a connection cannot be set up, or a check failed.
#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    /// The TLS configuration cannot be built (a CA or client certificate file).
    #[error("TLS")]
    Tls(#[source] crate::tls::TlsError),
    /// The broker cannot be reached, or refused the connection.
    #[error(transparent)]
    Connect(ConnError),
    /// No CONNACK in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// An [`MqttError`] and what it was about (a source, a sink, a broker's address): `{}`
/// prints only that, `{:#}` it and every cause (as anyhow's `{:#}` does), and the error is
/// its [`source`](std::error::Error::source): no cause is printed twice.
#[derive(Debug)]
pub struct MqttFailed {
    what: String,
    error: MqttError,
}

impl MqttFailed {
    /// `error`, about `what`.
    pub fn new(what: impl Into<String>, error: MqttError) -> MqttFailed {
        MqttFailed {
            what: what.into(),
            error,
        }
    }
}

impl fmt::Display for MqttFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.what)?;
        if f.alternate() {
            let mut cause: Option<&dyn std::error::Error> = Some(&self.error);
            while let Some(e) = cause {
                write!(f, ": {e}")?;
                cause = e.source();
            }
        }
        Ok(())
    }
}

impl std::error::Error for MqttFailed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// Sends requests to a [`Connection`]. Cheap to clone.
#[derive(Clone)]
pub enum Client {
    /// MQTT 3.1.1.
    V311(rumqttc::AsyncClient),
    /// MQTT 5.
    V5(v5::AsyncClient),
}

/// The connection is gone: the request was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the MQTT connection is closed")]
pub struct Closed;

impl Client {
    /// Acknowledges the QoS 1 message `pkid` (waits while the request channel is full).
    ///
    /// # Errors
    /// [`Closed`]: the connection's event loop is gone; the broker will redeliver.
    pub async fn ack(&self, pkid: u16) -> Result<(), Closed> {
        match self {
            Client::V311(c) => {
                let mut p = rumqttc::Publish::new("", QoS::AtLeastOnce, Vec::<u8>::new());
                p.pkid = pkid;
                c.ack(&p).await.map_err(|_| Closed)
            }
            Client::V5(c) => {
                let mut p = v5::mqttbytes::v5::Publish::new(
                    "",
                    v5::mqttbytes::QoS::AtLeastOnce,
                    Vec::<u8>::new(),
                    None,
                );
                p.pkid = pkid;
                c.ack(&p).await.map_err(|_| Closed)
            }
        }
    }

    /// Subscribes to every `(filter, qos)` in one request.
    ///
    /// # Errors
    /// [`Closed`].
    pub async fn subscribe(&self, filters: &[(String, QoS)]) -> Result<(), Closed> {
        match self {
            Client::V311(c) => c
                .subscribe_many(
                    filters
                        .iter()
                        .map(|(f, q)| rumqttc::SubscribeFilter::new(f.clone(), *q)),
                )
                .await
                .map_err(|_| Closed),
            Client::V5(c) => c
                .subscribe_many(
                    filters
                        .iter()
                        .map(|(f, q)| v5::mqttbytes::v5::Filter::new(f.clone(), qos_v5(*q))),
                )
                .await
                .map_err(|_| Closed),
        }
    }

    /// Publishes `payload` to `topic` at QoS 1, not retained. Returns once the request is
    /// queued; its PUBACK comes as [`Event::PubAck`].
    ///
    /// # Errors
    /// [`Closed`] (or a topic rumqttc refuses: empty, or with a wildcard).
    pub async fn publish(&self, topic: String, payload: Bytes) -> Result<(), Closed> {
        match self {
            Client::V311(c) => c
                .publish_bytes(topic, QoS::AtLeastOnce, false, payload)
                .await
                .map_err(|_| Closed),
            Client::V5(c) => c
                .publish_bytes(topic, v5::mqttbytes::QoS::AtLeastOnce, false, payload)
                .await
                .map_err(|_| Closed),
        }
    }

    /// Queues a DISCONNECT without waiting (it goes out after the requests queued before it).
    pub fn try_disconnect(&self) {
        let _ = match self {
            Client::V311(c) => c.try_disconnect().map_err(|_| Closed),
            Client::V5(c) => c.try_disconnect().map_err(|_| Closed),
        };
    }

    /// Queues a DISCONNECT.
    ///
    /// # Errors
    /// [`Closed`].
    pub async fn disconnect(&self) -> Result<(), Closed> {
        match self {
            Client::V311(c) => c.disconnect().await.map_err(|_| Closed),
            Client::V5(c) => c.disconnect().await.map_err(|_| Closed),
        }
    }
}

fn qos_v5(q: QoS) -> v5::mqttbytes::QoS {
    match q {
        QoS::AtMostOnce => v5::mqttbytes::QoS::AtMostOnce,
        QoS::AtLeastOnce => v5::mqttbytes::QoS::AtLeastOnce,
        QoS::ExactlyOnce => v5::mqttbytes::QoS::ExactlyOnce,
    }
}

fn qos_from_v5(q: v5::mqttbytes::QoS) -> QoS {
    match q {
        v5::mqttbytes::QoS::AtMostOnce => QoS::AtMostOnce,
        v5::mqttbytes::QoS::AtLeastOnce => QoS::AtLeastOnce,
        v5::mqttbytes::QoS::ExactlyOnce => QoS::ExactlyOnce,
    }
}

/// The event loop of one connection: reconnects when polled again after an error.
pub enum Connection {
    /// MQTT 3.1.1.
    V311(Box<rumqttc::EventLoop>),
    /// MQTT 5.
    V5(Box<v5::EventLoop>),
}

/// A message the broker delivered.
#[derive(Debug, Clone)]
pub struct Message {
    /// Its topic; `None` when it is not UTF-8 (which MQTT forbids, but a broker may pass on).
    pub topic: Option<String>,
    /// Its payload.
    pub payload: Bytes,
    /// The QoS it was delivered with.
    pub qos: QoS,
    /// Its packet id (0 at QoS 0): what [`Client::ack`] takes.
    pub pkid: u16,
    /// The broker sent it before (a QoS 1 message resent after a reconnect).
    pub dup: bool,
}

/// What the collector acts on; every other packet is [`Event::Other`].
#[derive(Debug, Clone)]
pub enum Event {
    /// The broker accepted the connection.
    Connected {
        /// Whether the broker kept a session for this client id.
        session_present: bool,
        /// MQTT 5: the largest packet the broker accepts, if it says.
        max_packet_size: Option<u32>,
    },
    /// The broker answered a SUBSCRIBE: what it refused, one description per filter.
    Subscribed {
        /// Refusals (empty when every filter was granted).
        refused: Vec<String>,
    },
    /// A message arrived.
    Message(Message),
    /// The broker acknowledged a QoS 1 message we published.
    PubAck {
        /// Its packet id.
        pkid: u16,
        /// How it went.
        outcome: PubAckOutcome,
    },
    /// A QoS 1 message we publish went out with this packet id.
    Published {
        /// Its packet id.
        pkid: u16,
    },
    /// Our DISCONNECT went out: the connection is closing.
    Disconnecting,
    /// Anything else (pings, our acks, our subscribes).
    Other,
}

/// What a PUBACK said (MQTT 3.1.1 has no reason codes: always `Accepted`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PubAckOutcome {
    /// The broker took the message.
    Accepted,
    /// MQTT 5: the broker took it, but no subscription matched its topic: it reached nobody.
    NoSubscribers,
    /// MQTT 5: the broker refused it (reason code 0x87 Not authorized).
    NotAuthorized,
    /// MQTT 5: the broker refused it for now (0x97 Quota exceeded).
    QuotaExceeded,
    /// MQTT 5: the broker refused this message for good (topic name or payload format invalid).
    Invalid,
    /// MQTT 5: another failure (unspecified, implementation specific, packet id in use).
    Failed,
}

/// Why polling failed. Polling again reconnects.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConnError {
    /// A message larger than the packet limit arrived (3.1.1: the connection is closed).
    #[error("a packet of {size} bytes is larger than the limit")]
    Oversized {
        /// Its size.
        size: usize,
    },
    /// The broker refused our credentials (bad user name or password, not authorized).
    #[error("the broker refused the connection: {0}")]
    Unauthorized(String),
    /// The broker closed the connection because another client connected with our client
    /// id (MQTT 5 reason 0x8E Session taken over).
    #[error("the broker closed the connection: another client connected with the same client id")]
    TakenOver,
    /// Anything else: network, TLS, protocol, refusal, timeout.
    #[error("{0}")]
    Other(String),
}

/// The largest remaining length an MQTT packet can have (a 4-byte variable integer).
pub const MAX_REMAINING_LENGTH: usize = 268_435_455;

impl Connection {
    /// From the next connection on, accepts packets of up to `incoming` bytes (after the
    /// fixed header; at most [`MAX_REMAINING_LENGTH`]); the open connection keeps its limit.
    /// MQTT 5 announces the new limit to the broker. `outgoing` is the limit on what we send,
    /// unchanged (3.1.1 sets both at once).
    pub fn set_max_incoming_packet(&mut self, incoming: usize, outgoing: usize) {
        let incoming = incoming.min(MAX_REMAINING_LENGTH);
        match self {
            Connection::V311(e) => {
                e.mqtt_options.set_max_packet_size(incoming, outgoing);
            }
            Connection::V5(e) => {
                // MQTT 5's Maximum Packet Size counts the fixed header too (at most 5 bytes).
                let total = u32::try_from(incoming + 5).unwrap_or(u32::MAX);
                e.options.set_max_packet_size(Some(total));
            }
        }
    }

    /// Polls the event loop for the next event.
    ///
    /// # Cancel safety
    /// As rumqttc's `poll`: cancel-safe (a packet read is kept for the next poll).
    ///
    /// # Errors
    /// [`ConnError`]; polling again reconnects.
    pub async fn poll(&mut self) -> Result<Event, ConnError> {
        match self {
            Connection::V311(e) => e.poll().await.map(event_v311).map_err(error_v311),
            Connection::V5(e) => e.poll().await.map(event_v5).map_err(error_v5),
        }
    }
}

fn event_v311(e: rumqttc::Event) -> Event {
    use rumqttc::{Event as E, Outgoing, Packet};
    match e {
        E::Incoming(Packet::ConnAck(a)) => Event::Connected {
            session_present: a.session_present,
            max_packet_size: None,
        },
        E::Incoming(Packet::SubAck(a)) => Event::Subscribed {
            refused: a
                .return_codes
                .iter()
                .filter(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure))
                .map(|c| format!("{c:?}"))
                .collect(),
        },
        E::Incoming(Packet::Publish(p)) => Event::Message(Message {
            topic: Some(p.topic),
            payload: p.payload,
            qos: p.qos,
            pkid: p.pkid,
            dup: p.dup,
        }),
        E::Incoming(Packet::PubAck(a)) => Event::PubAck {
            pkid: a.pkid,
            outcome: PubAckOutcome::Accepted,
        },
        E::Outgoing(Outgoing::Publish(pkid)) => Event::Published { pkid },
        E::Outgoing(Outgoing::Disconnect) => Event::Disconnecting,
        _ => Event::Other,
    }
}

fn event_v5(e: v5::Event) -> Event {
    use rumqttc::Outgoing;
    use v5::mqttbytes::v5::{Packet, PubAckReason as R, SubscribeReasonCode};
    use v5::Event as E;
    match e {
        E::Incoming(Packet::ConnAck(a)) => Event::Connected {
            session_present: a.session_present,
            max_packet_size: a.properties.and_then(|p| p.max_packet_size),
        },
        E::Incoming(Packet::SubAck(a)) => Event::Subscribed {
            refused: a
                .return_codes
                .iter()
                .filter(|c| !matches!(c, SubscribeReasonCode::Success(_)))
                .map(|c| format!("{c:?}"))
                .collect(),
        },
        E::Incoming(Packet::Publish(p)) => Event::Message(Message {
            topic: String::from_utf8(p.topic.to_vec()).ok(),
            payload: p.payload,
            qos: qos_from_v5(p.qos),
            pkid: p.pkid,
            dup: p.dup,
        }),
        E::Incoming(Packet::PubAck(a)) => Event::PubAck {
            pkid: a.pkid,
            outcome: match a.reason {
                R::Success => PubAckOutcome::Accepted,
                R::NoMatchingSubscribers => PubAckOutcome::NoSubscribers,
                R::NotAuthorized => PubAckOutcome::NotAuthorized,
                R::QuotaExceeded => PubAckOutcome::QuotaExceeded,
                R::TopicNameInvalid | R::PayloadFormatInvalid => PubAckOutcome::Invalid,
                R::UnspecifiedError | R::ImplementationSpecificError | R::PacketIdentifierInUse => {
                    PubAckOutcome::Failed
                }
            },
        },
        E::Outgoing(Outgoing::Publish(pkid)) => Event::Published { pkid },
        E::Outgoing(Outgoing::Disconnect) => Event::Disconnecting,
        _ => Event::Other,
    }
}

fn error_v311(e: rumqttc::ConnectionError) -> ConnError {
    use rumqttc::{ConnectReturnCode as C, ConnectionError as E, StateError};
    match e {
        E::MqttState(StateError::Deserialization(
            rumqttc::mqttbytes::Error::PayloadSizeLimitExceeded(size),
        )) => ConnError::Oversized { size },
        E::ConnectionRefused(code @ (C::BadUserNamePassword | C::NotAuthorized)) => {
            ConnError::Unauthorized(format!("{code:?}"))
        }
        e => ConnError::Other(e.to_string()),
    }
}

fn error_v5(e: v5::ConnectionError) -> ConnError {
    use v5::mqttbytes::v5::{ConnectReturnCode as C, DisconnectReasonCode};
    use v5::{ConnectionError as E, StateError};
    match e {
        E::MqttState(StateError::Deserialization(
            v5::mqttbytes::Error::PayloadSizeLimitExceeded { pkt_size, .. },
        )) => ConnError::Oversized { size: pkt_size },
        E::MqttState(StateError::IncomingPacketTooLarge { pkt_size, .. }) => {
            ConnError::Oversized { size: pkt_size }
        }
        E::ConnectionRefused(code @ (C::BadUserNamePassword | C::NotAuthorized))
        | E::MqttState(StateError::ConnFail {
            reason: code @ (C::BadUserNamePassword | C::NotAuthorized),
        }) => ConnError::Unauthorized(format!("{code:?}")),
        E::MqttState(StateError::ServerDisconnect {
            reason_code: DisconnectReasonCode::SessionTakenOver,
            ..
        }) => ConnError::TakenOver,
        e => ConnError::Other(e.to_string()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn a_failure_prints_its_causes_once() {
        let dir = tempfile::tempdir().unwrap();
        let tls = crate::config::TlsConfig {
            ca_file: Some(dir.path().join("nope.pem")),
            ..crate::config::TlsConfig::default()
        };
        let tls = crate::tls::client_config(Some(&tls)).unwrap_err();
        let io = std::error::Error::source(&tls).unwrap().to_string();
        let e = MqttFailed::new("source a", MqttError::Tls(tls));
        assert_eq!(e.to_string(), "source a");
        let chain = format!("{e:#}");
        assert!(
            chain.starts_with("source a: TLS: ") && chain.contains("nope.pem: "),
            "{chain}"
        );
        assert_eq!(chain.matches(&io).count(), 1, "{chain}");
        assert_eq!(format!("{:#}", anyhow::Error::from(e)), chain);
    }

    fn broker(extra: &str) -> BrokerSettings {
        let text = format!(
            "[[sources.mqtt]]\nhost = \"localhost\"\nclient_id = \"c1\"\n{extra}\n[[sources.mqtt.subscriptions]]\ntopic = \"a/{{device}}/{{measurement}}\"\n"
        );
        Config::from_toml(&text)
            .and_then(Config::validate)
            .unwrap()
            .mqtt
            .remove(0)
            .broker
    }

    const TUNING: Tuning = Tuning {
        manual_acks: true,
        max_incoming_packet: 4096,
        max_outgoing_packet: 1024,
        receive_maximum: Some(100),
        max_inflight: 1,
    };

    #[test]
    fn mqtt_5_announces_the_session_expiry_the_receive_maximum_and_the_packet_limit() {
        let options = Options::new(&broker("protocol = \"5\"\nsession_expiry = \"1h\""), TUNING);
        let Ok(Options::V5(o)) = &options else {
            panic!("{options:?}")
        };
        assert_eq!(o.client_id(), "c1");
        assert!(!o.clean_start() && o.manual_acks());
        assert_eq!(o.session_expiry_interval(), Some(3600));
        assert_eq!(o.receive_maximum(), Some(100));
        assert_eq!(o.max_packet_size(), Some(4096));
        // doctor's connection: another id, a session that starts empty and ends with it.
        let Options::V5(d) = options.unwrap().throwaway("c1-doctor".into()) else {
            panic!("still MQTT 5")
        };
        assert_eq!(d.client_id(), "c1-doctor");
        assert!(d.clean_start());
        assert_eq!(d.session_expiry_interval(), Some(0));
    }

    #[test]
    fn mqtt_3_1_1_keeps_its_persistent_session() {
        let options = Options::new(&broker(""), TUNING).unwrap();
        let Options::V311(o) = &options else {
            panic!("{options:?}")
        };
        assert!(!o.clean_session() && o.manual_acks());
        assert_eq!(o.max_packet_size(), 4096);
        assert!(format!("{options:?}").contains("3.1.1"));
    }
}
