//! Modbus RTU slaves on one pseudo-terminal: a bus with several unit ids, paced as a
//! half-duplex line at its baud rate, unpluggable.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::frame::{crc16, rtu_frame, rtu_request_len};
use super::{Answer, ModbusDevice};
use crate::serial::SerialPort;

/// Bits on the wire per character: start, 8 data bits, stop (no parity).
const BITS_PER_CHAR: u64 = 10;

/// A bus: the devices answering on one port.
#[derive(Debug)]
pub struct RtuBus;

/// A running bus.
#[derive(Debug)]
pub struct RtuBusHandle {
    link: PathBuf,
    stop: CancellationToken,
    commands: mpsc::Sender<Command>,
    task: JoinHandle<io::Result<()>>,
}

#[derive(Debug)]
enum Command {
    /// Unplug now (then say so), plug in again after the duration.
    Unplug(Duration, oneshot::Sender<()>),
}

impl RtuBus {
    /// Plugs a bus in behind `link` with `devices` on it, at `baud` (8N1: 10 bits per
    /// character): requests and answers take their time on the line, one after the other.
    ///
    /// # Errors
    /// No pty available, or the link cannot be made.
    pub fn spawn(link: &Path, baud: u32, devices: Vec<ModbusDevice>) -> io::Result<RtuBusHandle> {
        // The port's own pacing is off: the bus paces the line itself, both ways.
        let port = SerialPort::plug(link, u32::MAX)?;
        let stop = CancellationToken::new();
        let (commands, rx) = mpsc::channel(4);
        let task = tokio::spawn(serve(port, baud.max(1), devices, rx, stop.clone()));
        Ok(RtuBusHandle {
            link: link.to_owned(),
            stop,
            commands,
            task,
        })
    }
}

impl RtuBusHandle {
    /// The path a collector opens.
    pub fn link(&self) -> &Path {
        &self.link
    }

    /// Unplugs the bus now and plugs it in again after `replug_after`; returns once it is
    /// unplugged.
    pub async fn unplug_for(&self, replug_after: Duration) {
        let (tx, rx) = oneshot::channel();
        if self
            .commands
            .send(Command::Unplug(replug_after, tx))
            .await
            .is_ok()
        {
            let _ = rx.await;
        }
    }

    /// Stops the bus (and unplugs it).
    ///
    /// # Errors
    /// The pty failed while it ran.
    pub async fn stop(self) -> io::Result<()> {
        self.stop.cancel();
        self.task.await.map_err(io::Error::other)?
    }
}

/// Waits until `deadline`, to well under a millisecond: the timer (1 ms ticks) for most of
/// the wait, then yielding. At 115,200 baud a short answer takes 2 ms on the line: a timer
/// tick late on each would make the simulated line a third slower than the real one.
async fn pace_until(deadline: Instant) {
    let tick = Duration::from_millis(1);
    if deadline > Instant::now() + tick {
        tokio::time::sleep_until(deadline - tick).await;
    }
    while Instant::now() < deadline {
        tokio::task::yield_now().await;
    }
}

fn wire_time(bytes: usize, baud: u32) -> Duration {
    Duration::from_nanos(bytes as u64 * BITS_PER_CHAR * 1_000_000_000 / u64::from(baud))
}

async fn serve(
    mut port: SerialPort,
    baud: u32,
    devices: Vec<ModbusDevice>,
    mut commands: mpsc::Receiver<Command>,
    stop: CancellationToken,
) -> io::Result<()> {
    let mut buf: Vec<u8> = Vec::new();
    let mut scratch = [0u8; 512];
    // When the line is free again: the last answer has left it.
    let mut line_free = Instant::now();
    // A frame of unknown length ends with silence.
    let silence = wire_time(4, baud).max(Duration::from_millis(2));
    let mut quiet_at: Option<Instant> = None;
    let far = Instant::now() + Duration::from_secs(86_400 * 365);
    loop {
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            Some(Command::Unplug(after, done)) = commands.recv() => {
                port.unplug()?;
                let _ = done.send(());
                tokio::select! {
                    () = stop.cancelled() => return Ok(()),
                    () = tokio::time::sleep(after) => {}
                }
                port.replug()?;
                buf.clear();
            }
            () = tokio::time::sleep_until(quiet_at.unwrap_or(far)), if quiet_at.is_some() => {
                quiet_at = None;
                // A whole frame of a function this bus does not read: refuse it (exception 1)
                // if its checksum is right, else drop it as noise.
                let frame = std::mem::take(&mut buf);
                if frame.len() >= 4 && crc16(&frame) == 0 {
                    let pdu = &frame[1..frame.len() - 2];
                    line_free = answer(&mut port, &devices, frame[0], pdu, frame.len(), line_free, baud).await?;
                }
            }
            read = port.read(&mut scratch), if port.is_plugged() => {
                let n = match read {
                    Ok(n) if n > 0 => n,
                    // Nobody has the port open, or it is being reopened.
                    _ => {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    }
                };
                buf.extend_from_slice(&scratch[..n]);
                quiet_at = None;
                loop {
                    if buf.len() < 2 {
                        break;
                    }
                    let Some(len) = rtu_request_len(&buf) else {
                        quiet_at = Some(Instant::now() + silence);
                        break;
                    };
                    if buf.len() < len {
                        break;
                    }
                    let frame: Vec<u8> = buf.drain(..len).collect();
                    if crc16(&frame) != 0 {
                        // A slave ignores a damaged frame; what follows may be its tail.
                        buf.clear();
                        break;
                    }
                    let pdu = &frame[1..len - 2];
                    line_free = answer(&mut port, &devices, frame[0], pdu, len, line_free, baud).await?;
                }
            }
        }
    }
}

/// Answers the request `pdu` to `address` (if a device has it) as the line allows: the
/// request's own time on the line, then the answer's. Returns when the line is free.
async fn answer(
    port: &mut SerialPort,
    devices: &[ModbusDevice],
    address: u8,
    pdu: &[u8],
    request_len: usize,
    line_free: Instant,
    baud: u32,
) -> io::Result<Instant> {
    let request_end = line_free.max(Instant::now()) + wire_time(request_len, baud);
    // Broadcast (0) and absent units: silence.
    let Some(device) = devices.iter().find(|d| address != 0 && d.unit() == address) else {
        return Ok(request_end);
    };
    let (bytes, delay) = match device.answer(pdu) {
        Answer::Silence => return Ok(request_end),
        Answer::Pdu(pdu, delay) => (rtu_frame(address, &pdu), delay),
        Answer::BadCrc(pdu) => {
            let mut frame = rtu_frame(address, &pdu);
            let n = frame.len();
            frame[n - 1] ^= 0xFF;
            (frame, Duration::ZERO)
        }
        Answer::Garbage(bytes) => (bytes, Duration::ZERO),
    };
    let end = request_end + delay + wire_time(bytes.len(), baud);
    pace_until(end).await;
    if port.is_plugged() {
        port.write(&bytes).await?;
    }
    Ok(end)
}
