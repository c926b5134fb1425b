//! The serial source: one task per port (tokio-serial).
//!
//! The task opens the port by its configured path, reads it, frames lines with a hard
//! maximum length, parses each line with the port's payload format, and sends the readings of
//! each read into the pipeline. In polling mode it also writes a command every interval and
//! counts the answers that do not come in time.
//!
//! A port that goes away (USB unplug: a read returns `Ok(0)` or fails with EIO, or the path
//! vanishes) is dropped and reopened by its path with capped, jittered backoff; so is a port
//! that is absent at start. Each change of state is logged once, and shown in the gauge
//! `source_connected{source="serial:<name>"}`. A serial line has nobody to acknowledge: its
//! envelope carries no ack.

mod framing;

use std::convert::Infallible;
use std::fmt::Display;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_serial::SerialStream;
use tokio_util::sync::CancellationToken;
use tracing::info;

use self::framing::{Frame, LineDecoder};
use super::{timestamp_bounds, End, Rejections, Reopening, SourceCounters};
use crate::backoff::Backoff;
use crate::channel::{Envelope, Inlet};
use crate::config::{FlowControl, Parity, SerialSettings, TimestampConfig};
use crate::events::SourceConnected;
use crate::metrics::{Counter, Metrics};
use crate::payload::{self, Context, Reject};
use crate::reading::Reading;
use crate::time::now_ns;

/// Bytes asked of the port per read.
const READ_BUFFER: usize = 4096;

/// How often an open port's path is checked: a link that udev removed means the device is
/// gone, even if the open file has not failed yet.
const PATH_CHECK: Duration = Duration::from_secs(1);

/// One serial port.
#[derive(Debug)]
pub struct SerialSource {
    settings: SerialSettings,
    timestamps: TimestampConfig,
    metrics: Metrics,
}

/// The source's counters, looked up once.
struct PortMetrics {
    /// Lines are its messages; reopen attempts its reconnects.
    counters: SourceCounters,
    poll_timeouts: Counter,
}

impl SerialSource {
    /// A source for one configured port.
    pub fn new(
        settings: SerialSettings,
        timestamps: TimestampConfig,
        metrics: Metrics,
    ) -> SerialSource {
        SerialSource {
            settings,
            timestamps,
            metrics,
        }
    }

    /// The source's name in logs and metrics (`serial:<name>`).
    pub fn label(&self) -> String {
        format!("serial:{}", self.settings.name)
    }

    /// Runs until `stop` is cancelled: opens the port (again and again, with backoff, while
    /// it is absent), reads lines, and sends their readings to `out`. A full `out` pushes
    /// back: the port is not read until there is room.
    ///
    /// Its log lines carry the span `source{source=serial:<name>}`.
    ///
    /// # Errors
    /// None (the type says so): every failure is retried. The signature is the one every
    /// source has.
    #[tracing::instrument(name = "source", skip_all, fields(source = %self.label()))]
    pub async fn run(self, out: Inlet, stop: CancellationToken) -> Result<(), Infallible> {
        let label = self.label();
        let s = &self.settings;
        let path = s.path.display().to_string();
        let m = PortMetrics {
            counters: SourceCounters::new(&self.metrics, &label),
            poll_timeouts: self
                .metrics
                .counter("poll_timeouts_total", &[("source", &label)]),
        };
        let c = &m.counters;
        let mut reader = LineReader {
            source: &self,
            decoder: LineDecoder::new(s.line_ending, s.max_line_length),
            rejections: Rejections::new(self.metrics.clone(), &label),
            path: &path,
            delivered: false,
        };
        let mut reopening = Reopening::new(&c.connected, &path, Backoff::new(s.reopen));
        let mut first = true;
        info!(path = %path, baud_rate = s.baud_rate, "opening the port");
        loop {
            if !first {
                c.reconnects.inc();
            }
            first = false;
            let go_on = match self.open() {
                Ok(port) => {
                    SourceConnected {
                        connected: &c.connected,
                        at: Some(&path),
                        session_present: None,
                    }
                    .emit();
                    let end = reader.read_port(port, &out, &stop, &m).await;
                    // Back to short delays only if the port delivered something: a port
                    // that opens and fails at once keeps backing off.
                    if reader.delivered {
                        reopening.backoff.reset();
                    }
                    c.connected.set(0);
                    if reader.decoder.reset() {
                        reader
                            .rejections
                            .reject(&path, Reject::PartialLine.reason());
                    }
                    reopening.after(Ok(end), &stop).await
                }
                Err(e) => {
                    reopening
                        .after(Err(&e as &(dyn Display + Sync)), &stop)
                        .await
                }
            };
            if !go_on {
                break;
            }
        }
        c.connected.set(0);
        info!("stopped");
        Ok(())
    }

    fn open(&self) -> tokio_serial::Result<SerialStream> {
        let s = &self.settings;
        let builder = tokio_serial::new(s.path.to_string_lossy(), s.baud_rate)
            .data_bits(match s.data_bits {
                5 => tokio_serial::DataBits::Five,
                6 => tokio_serial::DataBits::Six,
                7 => tokio_serial::DataBits::Seven,
                _ => tokio_serial::DataBits::Eight,
            })
            .parity(match s.parity {
                Parity::None => tokio_serial::Parity::None,
                Parity::Odd => tokio_serial::Parity::Odd,
                Parity::Even => tokio_serial::Parity::Even,
            })
            .stop_bits(match s.stop_bits {
                2 => tokio_serial::StopBits::Two,
                _ => tokio_serial::StopBits::One,
            })
            .flow_control(match s.flow_control {
                FlowControl::None => tokio_serial::FlowControl::None,
                FlowControl::Software => tokio_serial::FlowControl::Software,
                FlowControl::Hardware => tokio_serial::FlowControl::Hardware,
            });
        SerialStream::open(&builder)
    }
}

/// Reads one open port at a time; keeps the partial line across reads.
struct LineReader<'a> {
    source: &'a SerialSource,
    decoder: LineDecoder,
    rejections: Rejections,
    path: &'a str,
    /// Whether the port delivered any byte since it was last opened.
    delivered: bool,
}

impl LineReader<'_> {
    /// Reads `port` until it goes away, `stop` is cancelled or the pipeline is gone.
    async fn read_port(
        &mut self,
        mut port: SerialStream,
        out: &Inlet,
        stop: &CancellationToken,
        m: &PortMetrics,
    ) -> End {
        let s = &self.source.settings;
        let mut buf = vec![0u8; READ_BUFFER];
        self.delivered = false;
        let mut poll = s.poll.as_ref().map(|p| {
            let mut tick = tokio::time::interval(p.interval);
            tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
            (p, tick)
        });
        // When polling: the deadline of the answer to the last command.
        let mut answer_due: Option<Instant> = None;
        let far = Instant::now() + Duration::from_secs(86_400 * 365);
        let mut path_check = tokio::time::interval_at(Instant::now() + PATH_CHECK, PATH_CHECK);
        path_check.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                () = stop.cancelled() => return End::Stopped,
                read = port.read(&mut buf) => {
                    let n = match read {
                        Ok(0) => return End::Disconnected("end of file".into()),
                        Ok(n) => {
                            self.delivered = true;
                            n
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(e) => return End::Disconnected(e.to_string()),
                    };
                    let (readings, lines) = self.parse(&buf[..n]);
                    m.counters.messages.add(lines);
                    if lines > 0 {
                        answer_due = None;
                    }
                    if !readings.is_empty() {
                        m.counters.received(&readings);
                        let envelope = Envelope::new(readings, None, lines as usize);
                        if out.send(envelope).await.is_err() {
                            return End::Closed;
                        }
                    }
                }
                () = tick(&mut poll), if poll.is_some() => {
                    let Some((p, _)) = &poll else { continue };
                    match tokio::time::timeout(p.timeout, port.write_all(&p.command)).await {
                        Ok(Ok(())) => answer_due = Some(Instant::now() + p.timeout),
                        Ok(Err(e)) => return End::Disconnected(e.to_string()),
                        Err(_) => self.poll_timeout(m),
                    }
                }
                _ = path_check.tick() => {
                    if let Err(e) = std::fs::metadata(&s.path) {
                        if e.kind() == std::io::ErrorKind::NotFound {
                            return End::Disconnected("the path vanished".into());
                        }
                    }
                }
                () = tokio::time::sleep_until(answer_due.unwrap_or(far)), if answer_due.is_some() => {
                    answer_due = None;
                    self.poll_timeout(m);
                }
            }
        }
    }

    fn poll_timeout(&mut self, m: &PortMetrics) {
        m.poll_timeouts.inc();
        self.rejections
            .reject(self.path, Reject::PollTimeout.reason());
    }

    /// Frames and parses `bytes`: the readings, and how many lines (or overlong lines) ended
    /// in them.
    fn parse(&mut self, bytes: &[u8]) -> (Vec<Reading>, u64) {
        let s = &self.source.settings;
        let mut readings = Vec::new();
        let mut lines = 0;
        let mut rejects: Vec<Reject> = Vec::new();
        self.decoder.feed(bytes, |frame| {
            lines += 1;
            match frame {
                Frame::TooLong => rejects.push(Reject::LineTooLong),
                Frame::Line(line) => {
                    let now = now_ns();
                    let ctx = Context {
                        measurement: &s.measurement,
                        tags: &s.tags,
                        field: &s.field,
                        default_device: &s.device,
                        received_ns: now,
                        bounds: timestamp_bounds(&self.source.timestamps, now),
                    };
                    rejects.extend(payload::parse(&s.format, line, &ctx, &mut readings));
                }
            }
        });
        for r in rejects {
            self.rejections.reject(self.path, r.reason());
        }
        (readings, lines)
    }
}

/// The next tick of the polling interval; never, without one.
async fn tick(poll: &mut Option<(&crate::config::PollSettings, Interval)>) {
    match poll {
        Some((_, interval)) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}
