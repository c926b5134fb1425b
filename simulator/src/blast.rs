//! The benchmark's yardstick: a publisher that cannot be the bottleneck, and a subscriber
//! that throws away what it receives as fast as it can.
//!
//! [`Blast`] encodes every MQTT 3.1.1 PUBLISH packet of a workload beforehand, one buffer per
//! connection, then writes each buffer to its socket in as few `write()`s as the socket takes
//! (QoS 0: the whole buffer; QoS 1: everything the window allows, while a second thread reads
//! the PUBACKs in large reads). Nothing is formatted, allocated or polled per message while
//! it sends: the broker, not the publisher, sets the pace.
//!
//! [`discard`] subscribes and reads in 256 KiB chunks, counting PUBLISH packets (at QoS 1
//! answering all the PUBACKs of a chunk in one write) until it has the expected number.
//!
//! Both speak just enough MQTT 3.1.1 for this over plain TCP, with blocking sockets and
//! threads: a clean session, no keep-alive, no reconnect. A broker that closes the connection
//! or sends anything unexpected ends the run with an error; they are measuring tools, not
//! clients (the fault-tolerant publisher is [`crate::mqtt`]).

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::fleet::Message;

/// The keep-alive we announce, the longest MQTT allows (about 18 hours): neither tool sends
/// pings, and a run has no idle period to notice a dead broker in. (0, "none", is refused
/// by rumqttd.)
const KEEP_ALIVE_SECS: u16 = u16::MAX;
/// Size of a read: many PUBACKs (or PUBLISHes) per `read()`.
const READ_CHUNK: usize = 256 * 1024;
/// Packet ids cycle through 1..=65535.
const PACKET_IDS: usize = 65_535;
/// The QoS 1 ack reader waits this long between reads, so that each read takes many
/// PUBACKs (the broker writes them one at a time) instead of waking for every one. Harmless
/// to the pace: the writer refills the window once half of it is free, so the broker has
/// half a window (500 publishes by default) to work on meanwhile.
const ACK_READ_PAUSE: Duration = Duration::from_millis(1);

/// Errors of the yardstick's connections.
#[derive(Debug, thiserror::Error)]
pub enum BlastError {
    /// The socket failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The cause.
        source: io::Error,
    },
    /// The broker answered something this tool does not expect.
    #[error("unexpected from the broker: {0}")]
    Protocol(String),
    /// The configuration cannot work.
    #[error("invalid configuration: {0}")]
    Invalid(&'static str),
}

fn io_err(context: &'static str) -> impl FnOnce(io::Error) -> BlastError {
    move |source| BlastError::Io { context, source }
}

/// The packets of one connection, encoded back to back.
#[derive(Debug, Default)]
struct ConnectionPackets {
    bytes: Vec<u8>,
    /// Where each packet ends in `bytes` (QoS 1 needs packet boundaries for its window).
    ends: Vec<usize>,
}

/// A workload encoded as PUBLISH packets, ready to be written.
#[derive(Debug)]
pub struct Blast {
    qos: u8,
    connections: Vec<ConnectionPackets>,
}

/// What a [`Blast::send`] did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BlastReport {
    /// PUBLISH packets written.
    pub messages: usize,
    /// From the first write until the broker had taken everything: at QoS 1 every PUBACK
    /// read, at QoS 0 the broker's close after our DISCONNECT (it reads packets in order).
    pub elapsed: Duration,
    /// PUBACKs whose packet id was not the next one expected (the window counts them all).
    pub acks_out_of_order: usize,
}

impl Blast {
    /// Encodes `messages` at `qos` (0 or 1) over `connections` connections: the device
    /// numbered `d` in order of first appearance uses connection `d % connections`, so each
    /// device's messages keep their order, as [`crate::mqtt`] spreads them.
    ///
    /// # Errors
    /// A QoS other than 0 or 1, no connection, or a topic or packet larger than MQTT allows.
    pub fn encode(
        messages: impl IntoIterator<Item = Message>,
        qos: u8,
        connections: usize,
    ) -> Result<Self, BlastError> {
        if qos > 1 {
            return Err(BlastError::Invalid("qos must be 0 or 1"));
        }
        if connections == 0 {
            return Err(BlastError::Invalid("connections must be at least 1"));
        }
        let mut out: Vec<ConnectionPackets> = (0..connections)
            .map(|_| ConnectionPackets::default())
            .collect();
        let mut devices: HashMap<String, usize> = HashMap::new();
        for message in messages {
            let next = devices.len();
            let device = *devices.entry(message.device).or_insert(next);
            let conn = &mut out[device % connections];
            let packet_id = (conn.ends.len() % PACKET_IDS + 1) as u16;
            encode_publish(
                &mut conn.bytes,
                &message.topic,
                &message.payload,
                qos,
                packet_id,
            )?;
            conn.ends.push(conn.bytes.len());
        }
        Ok(Self {
            qos,
            connections: out,
        })
    }

    /// Messages encoded.
    pub fn messages(&self) -> usize {
        self.connections.iter().map(|c| c.ends.len()).sum()
    }

    /// Bytes encoded (what goes over the sockets, CONNECT and DISCONNECT aside).
    pub fn bytes(&self) -> usize {
        self.connections.iter().map(|c| c.bytes.len()).sum()
    }

    /// Opens the connections (MQTT CONNECT, CONNACK) without sending anything else yet.
    ///
    /// # Errors
    /// A connection that cannot be made, or a broker that refuses it.
    pub fn connect(
        &self,
        host: &str,
        port: u16,
        client_id_prefix: &str,
    ) -> Result<Vec<TcpStream>, BlastError> {
        (0..self.connections.len())
            .map(|i| connect(host, port, &format!("{client_id_prefix}-{i}")))
            .collect()
    }

    /// Writes every packet on `streams` (from [`Blast::connect`]), keeping at most `window`
    /// QoS 1 publishes unacknowledged per connection, then disconnects.
    ///
    /// # Errors
    /// A socket error or an unexpected packet on any connection.
    pub fn send(&self, streams: Vec<TcpStream>, window: usize) -> Result<BlastReport, BlastError> {
        if window == 0 {
            return Err(BlastError::Invalid("window must be at least 1"));
        }
        if window > PACKET_IDS {
            return Err(BlastError::Invalid("window must be at most 65535"));
        }
        if streams.len() != self.connections.len() {
            return Err(BlastError::Invalid("one stream per connection"));
        }
        let started = Instant::now();
        let out_of_order = std::thread::scope(|scope| {
            let handles: Vec<_> = streams
                .into_iter()
                .zip(&self.connections)
                .map(|(stream, packets)| {
                    scope.spawn(move || match self.qos {
                        0 => send_qos0(stream, packets).map(|()| 0),
                        _ => send_qos1(stream, packets, window),
                    })
                })
                .collect();
            let mut out_of_order = 0;
            for handle in handles {
                out_of_order += handle
                    .join()
                    .map_err(|_| BlastError::Protocol("a connection thread panicked".into()))??;
            }
            Ok::<_, BlastError>(out_of_order)
        })?;
        Ok(BlastReport {
            messages: self.messages(),
            elapsed: started.elapsed(),
            acks_out_of_order: out_of_order,
        })
    }
}

fn send_qos0(mut stream: TcpStream, packets: &ConnectionPackets) -> Result<(), BlastError> {
    stream
        .write_all(&packets.bytes)
        .map_err(io_err("writing the publishes"))?;
    disconnect_and_drain(stream)
}

/// DISCONNECT, then wait for the broker to close: it has then read everything before it.
fn disconnect_and_drain(mut stream: TcpStream) -> Result<(), BlastError> {
    stream
        .write_all(&[0xE0, 0x00])
        .map_err(io_err("writing DISCONNECT"))?;
    stream
        .shutdown(Shutdown::Write)
        .map_err(io_err("shutting the socket down"))?;
    let mut buf = [0u8; 64];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(_) => return Err(BlastError::Protocol("a packet after DISCONNECT".to_owned())),
            // Mosquitto may reset rather than close a connection it dropped on DISCONNECT.
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err("waiting for the broker to close")(e)),
        }
    }
}

/// The writer sends whatever the window allows in one write; the reader (this thread's
/// scoped sibling) counts PUBACKs and wakes it.
fn send_qos1(
    stream: TcpStream,
    packets: &ConnectionPackets,
    window: usize,
) -> Result<usize, BlastError> {
    let total = packets.ends.len();
    let acked = Mutex::new(0usize);
    let progress = Condvar::new();
    let mut reader = stream.try_clone().map_err(io_err("cloning the socket"))?;
    let mut writer = stream;
    std::thread::scope(|scope| {
        let acks = scope.spawn(|| {
            let result = read_acks(&mut reader, total, &acked, &progress);
            if result.is_err() {
                // Wake the writer, which then finds the socket shut.
                let _ = reader.shutdown(Shutdown::Both);
                *acked.lock().unwrap_or_else(|e| e.into_inner()) = usize::MAX;
                progress.notify_all();
            }
            result
        });
        let mut sent = 0usize;
        while sent < total {
            let limit = {
                let mut done = acked.lock().unwrap_or_else(|e| e.into_inner());
                // Refill once half the window is free (or everything left fits): large writes.
                let refill = (window / 2).max(1).min(total - sent);
                while *done != usize::MAX && *done + window < sent + refill {
                    done = progress.wait(done).unwrap_or_else(|e| e.into_inner());
                }
                if *done == usize::MAX {
                    break;
                }
                (*done + window).min(total)
            };
            let from = if sent == 0 { 0 } else { packets.ends[sent - 1] };
            if let Err(e) = writer.write_all(&packets.bytes[from..packets.ends[limit - 1]]) {
                let _ = writer.shutdown(Shutdown::Both);
                let _ = acks.join();
                return Err(io_err("writing the publishes")(e));
            }
            sent = limit;
        }
        let out_of_order = acks
            .join()
            .map_err(|_| BlastError::Protocol("the ack reader panicked".into()))??;
        disconnect_and_drain(writer)?;
        Ok(out_of_order)
    })
}

fn read_acks(
    stream: &mut TcpStream,
    total: usize,
    acked: &Mutex<usize>,
    progress: &Condvar,
) -> Result<usize, BlastError> {
    let mut buf = vec![0u8; READ_CHUNK];
    let (mut filled, mut count, mut out_of_order) = (0usize, 0usize, 0usize);
    while count < total {
        let n = read_some(stream, &mut buf[filled..], "reading PUBACKs")?;
        filled += n;
        let mut at = 0;
        let before = count;
        while filled - at >= 4 {
            let ack = &buf[at..at + 4];
            if ack[0] != 0x40 || ack[1] != 0x02 {
                return Err(BlastError::Protocol(format!(
                    "packet type {:#04x} where a PUBACK was expected",
                    ack[0]
                )));
            }
            let id = u16::from_be_bytes([ack[2], ack[3]]);
            if usize::from(id) != count % PACKET_IDS + 1 {
                out_of_order += 1;
            }
            count += 1;
            at += 4;
        }
        buf.copy_within(at..filled, 0);
        filled -= at;
        if count > before {
            *acked.lock().unwrap_or_else(|e| e.into_inner()) = count;
            progress.notify_one();
        }
        if count < total {
            std::thread::sleep(ACK_READ_PAUSE);
        }
    }
    Ok(out_of_order)
}

/// One `read()` that must return something: 0 bytes (the broker closed) is an error.
fn read_some(
    stream: &mut TcpStream,
    buf: &mut [u8],
    what: &'static str,
) -> Result<usize, BlastError> {
    loop {
        match stream.read(buf) {
            Ok(0) => {
                return Err(BlastError::Protocol(format!(
                    "the broker closed the connection while {what}"
                )))
            }
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err(what)(e)),
        }
    }
}

/// Appends MQTT's variable-length "remaining length".
fn encode_remaining_length(out: &mut Vec<u8>, mut len: usize) -> Result<(), BlastError> {
    if len > 268_435_455 {
        return Err(BlastError::Invalid("a packet larger than MQTT allows"));
    }
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            return Ok(());
        }
    }
}

fn encode_str(out: &mut Vec<u8>, s: &[u8]) -> Result<(), BlastError> {
    let len =
        u16::try_from(s.len()).map_err(|_| BlastError::Invalid("a string over 65535 bytes"))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s);
    Ok(())
}

fn encode_publish(
    out: &mut Vec<u8>,
    topic: &str,
    payload: &[u8],
    qos: u8,
    packet_id: u16,
) -> Result<(), BlastError> {
    out.push(0x30 | (qos << 1));
    let id_len = if qos > 0 { 2 } else { 0 };
    encode_remaining_length(out, 2 + topic.len() + id_len + payload.len())?;
    encode_str(out, topic.as_bytes())?;
    if qos > 0 {
        out.extend_from_slice(&packet_id.to_be_bytes());
    }
    out.extend_from_slice(payload);
    Ok(())
}

/// Connects and completes the MQTT handshake (clean session, no keep-alive).
fn connect(host: &str, port: u16, client_id: &str) -> Result<TcpStream, BlastError> {
    let mut stream =
        TcpStream::connect((host, port)).map_err(io_err("connecting to the broker"))?;
    stream
        .set_nodelay(true)
        .map_err(io_err("setting TCP_NODELAY"))?;
    let mut body = Vec::new();
    encode_str(&mut body, b"MQTT")?;
    body.push(4); // protocol level: 3.1.1
    body.push(0x02); // clean session
    body.extend_from_slice(&KEEP_ALIVE_SECS.to_be_bytes());
    encode_str(&mut body, client_id.as_bytes())?;
    let mut connack = [0u8; 4];
    exchange(
        &mut stream,
        0x10,
        &body,
        &mut connack,
        "writing CONNECT",
        "reading CONNACK",
    )?;
    if connack[..2] != [0x20, 0x02] || connack[3] != 0 {
        return Err(BlastError::Protocol(format!("CONNACK {connack:02x?}")));
    }
    Ok(stream)
}

/// Writes the packet of first byte `header` and `body`, then reads exactly `reply.len()`
/// bytes of the broker's answer.
fn exchange(
    stream: &mut TcpStream,
    header: u8,
    body: &[u8],
    reply: &mut [u8],
    request: &'static str,
    answer: &'static str,
) -> Result<(), BlastError> {
    let mut packet = vec![header];
    encode_remaining_length(&mut packet, body.len())?;
    packet.extend_from_slice(body);
    stream.write_all(&packet).map_err(|source| BlastError::Io {
        context: request,
        source,
    })?;
    stream.read_exact(reply).map_err(|source| BlastError::Io {
        context: answer,
        source,
    })
}

/// What [`discard`] received.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DiscardReport {
    /// PUBLISH packets received.
    pub messages: usize,
    /// From the first PUBLISH to the last.
    pub first_to_last: Duration,
    /// How long ago the last PUBLISH arrived when it returned (the idle time when it gave
    /// up before `expected`).
    pub since_last: Duration,
}

/// What [`discard`] subscribes to and how long it reads.
#[derive(Debug, Clone)]
pub struct DiscardSpec {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// MQTT client id.
    pub client_id: String,
    /// Topic filter.
    pub filter: String,
    /// QoS of the subscription: 0 or 1.
    pub qos: u8,
    /// Messages to wait for.
    pub expected: usize,
    /// Give up when nothing came for this long.
    pub idle: Duration,
}

/// A subscriber that discards: subscribes, calls `subscribed` once the broker has granted the
/// subscription, then reads and counts PUBLISH packets (acking them at QoS 1, one write per
/// read) until it has `spec.expected` of them or none came for `spec.idle`.
///
/// # Errors
/// A socket error, a refused subscription, or an unexpected packet.
pub fn discard(spec: &DiscardSpec, subscribed: impl FnOnce()) -> Result<DiscardReport, BlastError> {
    let (expected, idle) = (spec.expected, spec.idle);
    if spec.qos > 1 {
        return Err(BlastError::Invalid("qos must be 0 or 1"));
    }
    let mut stream = connect(&spec.host, spec.port, &spec.client_id)?;
    let mut body = vec![0x00, 0x01]; // packet id 1
    encode_str(&mut body, spec.filter.as_bytes())?;
    body.push(spec.qos);
    let mut suback = [0u8; 5];
    exchange(
        &mut stream,
        0x82,
        &body,
        &mut suback,
        "writing SUBSCRIBE",
        "reading SUBACK",
    )?;
    if suback[0] != 0x90 || suback[4] > 1 {
        return Err(BlastError::Protocol(format!("SUBACK {suback:02x?}")));
    }
    subscribed();
    stream
        .set_read_timeout(Some(idle))
        .map_err(io_err("setting the idle timeout"))?;

    let mut buf = vec![0u8; READ_CHUNK];
    let mut acks = Vec::new();
    let (mut filled, mut count) = (0usize, 0usize);
    let (mut first, mut last) = (None, Instant::now());
    while count < expected {
        let n = match stream.read(&mut buf[filled..]) {
            Ok(0) => {
                return Err(BlastError::Protocol(
                    "the broker closed the connection".to_owned(),
                ))
            }
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                break
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err("reading publishes")(e)),
        };
        last = Instant::now();
        first.get_or_insert(last);
        filled += n;
        let mut at = 0;
        while let Some((header, len)) = packet_at(&buf[at..filled])? {
            let kind = buf[at] >> 4;
            if kind != 3 {
                return Err(BlastError::Protocol(format!(
                    "packet type {kind} where a PUBLISH was expected"
                )));
            }
            let packet_qos = (buf[at] >> 1) & 3;
            if packet_qos == 1 {
                let body = &buf[at + header..at + header + len];
                let topic_len = usize::from(u16::from_be_bytes([body[0], body[1]]));
                let id = body
                    .get(2 + topic_len..4 + topic_len)
                    .ok_or_else(|| BlastError::Protocol("a PUBLISH without packet id".into()))?;
                acks.extend_from_slice(&[0x40, 0x02, id[0], id[1]]);
            }
            count += 1;
            at += header + len;
        }
        if at == 0 && filled == buf.len() {
            // One packet larger than the buffer: grow it.
            buf.resize(buf.len() * 2, 0);
        }
        buf.copy_within(at..filled, 0);
        filled -= at;
        if !acks.is_empty() {
            stream.write_all(&acks).map_err(io_err("writing PUBACKs"))?;
            acks.clear();
        }
        if n < READ_CHUNK / 4 && count < expected {
            // Caught up: let the next read take many packets rather than wake for each
            // (the last message is then seen at most this much late).
            std::thread::sleep(ACK_READ_PAUSE);
        }
    }
    let _ = stream.write_all(&[0xE0, 0x00]);
    Ok(DiscardReport {
        messages: count,
        first_to_last: first.map_or(Duration::ZERO, |first| last - first),
        since_last: last.elapsed(),
    })
}

/// The header length and remaining length of the packet at the start of `buf`, once it is
/// there whole; `None` while incomplete.
fn packet_at(buf: &[u8]) -> Result<Option<(usize, usize)>, BlastError> {
    let mut len = 0usize;
    for i in 1..5 {
        let Some(&byte) = buf.get(i) else {
            return Ok(None);
        };
        len |= usize::from(byte & 0x7f) << (7 * (i - 1));
        if byte & 0x80 == 0 {
            let header = i + 1;
            return Ok((buf.len() >= header + len).then_some((header, len)));
        }
    }
    Err(BlastError::Protocol(
        "a remaining length over 4 bytes".to_owned(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_packets_are_mqtt_311() {
        let mut out = Vec::new();
        encode_publish(&mut out, "a/b", b"xy", 1, 0x0102).expect("encodes");
        assert_eq!(out, [0x32, 9, 0, 3, b'a', b'/', b'b', 1, 2, b'x', b'y']);
        out.clear();
        encode_publish(&mut out, "t", &[7; 200], 0, 1).expect("encodes");
        // 2 + 1 + 200 = 203 = 0x4b + 1 * 128
        assert_eq!(&out[..5], [0x30, 0xcb, 0x01, 0, 1]);
        assert_eq!(packet_at(&out).expect("valid"), Some((3, 203)));
        assert_eq!(packet_at(&out[..100]).expect("valid"), None);
    }
}
