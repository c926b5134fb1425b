//! An in-process MQTT broker (rumqttd) for self-contained demos and tests.
//!
//! rumqttd runs its router and its listener on threads of their own and has no shutdown: once
//! started, the broker lives until the process exits. Sessions live in memory only.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rumqttd::{Config, ConnectionSettings, RouterConfig, ServerSettings};
use tracing::info;

/// Largest MQTT packet the broker accepts: room for 64 KiB payloads and their topics.
pub const MAX_PACKET_BYTES: usize = 128 * 1024;
/// Connections the broker accepts (beyond that rumqttd leaves new ones unanswered).
pub const MAX_CONNECTIONS: usize = 10_000;
/// How long [`Broker::start`] waits for the broker to answer.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// Port 0 would pick a port we could not learn from rumqttd.
    #[error("the broker needs an explicit port, not 0")]
    PortZero,
    /// The address is taken or not ours.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The broker thread could not be started.
    #[error("cannot start the broker thread")]
    Thread(#[source] std::io::Error),
    /// The broker stopped or did not answer an MQTT CONNECT in time.
    #[error("the broker on {addr} did not become ready: {reason}")]
    NotReady {
        /// The address.
        addr: SocketAddr,
        /// What went wrong.
        reason: String,
    },
}

/// The in-process broker.
#[derive(Debug)]
pub struct Broker;

/// A running in-process broker.
#[derive(Debug)]
pub struct BrokerHandle {
    addr: SocketAddr,
    // Kept to document ownership: rumqttd cannot be stopped, so the thread is never joined.
    _thread: JoinHandle<()>,
}

impl BrokerHandle {
    /// The address the broker listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Broker {
    /// Starts a broker on `addr` (plain TCP, MQTT 3.1.1) and returns once it answers an MQTT
    /// CONNECT. Blocks the calling thread for that time (milliseconds; at most 10 s).
    ///
    /// Limits: [`MAX_CONNECTIONS`] connections, [`MAX_PACKET_BYTES`] per packet. Publishes on
    /// topics nobody subscribed to are accepted (rumqttd's "dynamic filters"; without them it
    /// disconnects such publishers). Persistent sessions (clean_session = false) keep their
    /// subscriptions and undelivered QoS 1 messages while the client is away, within the
    /// router's per-filter log (16 segments of 1 MiB).
    ///
    /// # Errors
    /// Port 0, an address already in use, or a broker that does not come up.
    pub fn start(addr: SocketAddr) -> Result<BrokerHandle, BrokerError> {
        if addr.port() == 0 {
            return Err(BrokerError::PortZero);
        }
        // rumqttd only logs a failed bind on its own thread: find out here, with the reason.
        drop(TcpListener::bind(addr).map_err(|source| BrokerError::Bind { addr, source })?);

        let config = config(addr);
        let thread = thread::Builder::new()
            .name("mqtt-broker".to_owned())
            .spawn(move || {
                let mut broker = rumqttd::Broker::new(config);
                if let Err(err) = broker.start() {
                    tracing::error!(error = %err, "in-process broker stopped");
                }
            })
            .map_err(BrokerError::Thread)?;

        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            match probe(addr) {
                Ok(()) => break,
                Err(reason) if thread.is_finished() || Instant::now() >= deadline => {
                    return Err(BrokerError::NotReady { addr, reason });
                }
                Err(_) => thread::sleep(Duration::from_millis(10)),
            }
        }
        info!(%addr, "in-process MQTT broker listening");
        Ok(BrokerHandle {
            addr,
            _thread: thread,
        })
    }
}

fn config(addr: SocketAddr) -> Config {
    let connections = ConnectionSettings {
        connection_timeout_ms: 10_000,
        max_payload_size: MAX_PACKET_BYTES,
        max_inflight_count: 100,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    let server = ServerSettings {
        name: "mqtt-v4".to_owned(),
        listen: addr,
        tls: None,
        next_connection_delay_ms: 0,
        connections,
    };
    Config {
        id: 0,
        router: RouterConfig {
            max_connections: MAX_CONNECTIONS,
            max_outgoing_packet_count: 200,
            max_segment_size: 1024 * 1024,
            max_segment_count: 16,
            ..RouterConfig::default()
        },
        v4: Some(HashMap::from([("1".to_owned(), server)])),
        ..Config::default()
    }
}

/// An MQTT 3.1.1 CONNECT (clean session, client id `probe`) and DISCONNECT: proof that the
/// listener and the router both work, without rumqttd logging a protocol error. Waits for the
/// broker to close the connection: closing first makes rumqttd see two disconnections, and the
/// second one would drop the next client to connect.
fn probe(addr: SocketAddr) -> Result<(), String> {
    const CONNECT: &[u8] = &[
        0x10, 17, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 10, 0, 5, b'p', b'r', b'o', b'b', b'e',
    ];
    const DISCONNECT: &[u8] = &[0xe0, 0];
    let timeout = Duration::from_millis(500);
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    stream.write_all(CONNECT).map_err(|e| e.to_string())?;
    let mut connack = [0u8; 4];
    stream.read_exact(&mut connack).map_err(|e| e.to_string())?;
    if connack != [0x20, 2, 0, 0] {
        return Err(format!("unexpected CONNACK {connack:02x?}"));
    }
    stream.write_all(DISCONNECT).map_err(|e| e.to_string())?;
    // EOF, or an error if the broker resets: either way it is done with us.
    let _ = stream.read(&mut connack);
    Ok(())
}
