//! The Modbus source: one task per bus (RTU: a serial line and every unit on it) or per
//! connection (TCP: a device, or a gateway and the units behind it), with tokio-modbus's
//! client over the tokio-serial (or TCP) stream.
//!
//! The task polls each device's fields as [planned](plan): fields with the same interval
//! together, contiguous registers in one request. Requests on a bus go one at a time, each
//! after the silence the baud rate requires (3.5 character times), each with a timeout
//! (tokio-modbus has none of its own) and a bounded number of retries. A request that got
//! no answer ends its device's poll; a device that stopped answering is tried again only
//! now and then (`offline_retry`, capped and jittered, one request without retries), so that
//! it does not slow the others on its bus. A poll that overruns its interval is counted
//! and the missed polls skipped, never stacked.
//!
//! Readings carry the poll's timestamp: one reading per device and poll (per unit with
//! `unit_tag`). Fields may be reported by exception (deadband, on change, heartbeat).
//!
//! Errors are counted per device and reason in `modbus_errors_total` (`timeout`, `crc`,
//! `framing`, `mismatch`, `late_answer`, `exception`; exceptions also by code in
//! `modbus_exceptions_total`), each change of a device's state (answering or not) is logged
//! once, and `modbus_device_up` shows it. A port that goes away, or a connection that
//! breaks, is reopened with capped, jittered backoff.

mod decode;
pub mod plan;
mod wire;

use std::convert::Infallible;
use std::fmt::Display;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};
use tokio_modbus::client::{Client as _, Context as Client};
use tokio_modbus::slave::{Slave, SlaveContext};
use tokio_modbus::ExceptionCode;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub use self::decode::{decode, Data, DecodeError};
use self::plan::{Plan, Request};
use self::wire::{Wire, WireState};
use super::{End, Rejections, Reopening, SourceCounters};
use crate::backoff::{Backoff, LogLimit};
use crate::channel::{Envelope, Inlet};
use crate::config::{DeviceSettings, Link, ModbusSettings, Parity, RegisterKind, RtuSettings};
use crate::events::SourceConnected;
use crate::metrics::{Counter, Gauge, Metrics};
use crate::reading::{FieldValue, Reading};
use crate::report::Exception;
use crate::sync::MutexExt;
use crate::time::now_ns;

/// How often an open serial port's path is checked (a link udev removed: the adapter is gone).
const PATH_CHECK: Duration = Duration::from_secs(1);

/// Over TCP, this many requests in a row without any answer drop the connection: the peer
/// may be gone without a word (a gateway that lost power).
const TCP_SILENT_LIMIT: u32 = 3;

/// One Modbus bus or connection.
#[derive(Debug)]
pub struct ModbusSource {
    settings: ModbusSettings,
    metrics: Metrics,
}

/// Why a request got no data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The device answered with an exception.
    Exception(ExceptionCode),
    /// No usable answer after every attempt; the reason of the last.
    NoAnswer(&'static str),
    /// The port or connection failed.
    Link(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Exception(code) => {
                write!(f, "exception {} ({code})", u8::from(*code))
            }
            Failure::NoAnswer(reason) => write!(f, "no answer ({reason})"),
            Failure::Link(e) => write!(f, "link failed: {e}"),
        }
    }
}

/// An open port or connection.
struct Open {
    client: Client,
    wire: Arc<Mutex<WireState>>,
    /// The silence kept before each request (zero over TCP).
    gap: Duration,
    tcp: bool,
    /// TCP: requests in a row that got no answer at all.
    silent: u32,
    /// The device of the last request (a late answer found before the next is its).
    last_device: Option<usize>,
}

/// What the source counts per device.
struct DeviceMetrics {
    requests: Counter,
    polls: Counter,
    overruns: Counter,
    up: Gauge,
}

/// What the task knows of one device.
struct Device {
    settings: DeviceSettings,
    metrics: DeviceMetrics,
    /// Whether it answered its last poll (`None` before the first).
    up: Option<bool>,
    /// While it does not answer: when to try again.
    retry_at: Option<Instant>,
    offline: Backoff,
    /// Report by exception: per field.
    exceptions: Vec<Exception>,
    /// Rate-limits the log of its errors.
    log: LogLimit,
}

/// One planned poll and when it is due.
struct Scheduled {
    poll: plan::Poll,
    due: Instant,
}

impl ModbusSource {
    /// A source for one configured bus or connection.
    pub fn new(settings: ModbusSettings, metrics: Metrics) -> ModbusSource {
        ModbusSource { settings, metrics }
    }

    /// The source's name in logs and metrics (`modbus:<name>`).
    pub fn label(&self) -> String {
        format!("modbus:{}", self.settings.name)
    }

    fn describe(&self) -> String {
        match &self.settings.link {
            Link::Rtu(r) => r.path.display().to_string(),
            Link::Tcp(t) => format!("{}:{}", t.host, t.port),
        }
    }

    /// Runs until `stop` is cancelled: opens the port or connects (again and again, with
    /// backoff, while it is away), polls every device as planned, and sends the readings
    /// to `out`. A full `out` pushes back: polling waits.
    ///
    /// Its log lines carry the span `source{source=modbus:<name>}`.
    ///
    /// # Errors
    /// None (the type says so): every failure is retried. The signature is the one every
    /// source has.
    #[tracing::instrument(name = "source", skip_all, fields(source = %self.label()))]
    pub async fn run(self, out: Inlet, stop: CancellationToken) -> Result<(), Infallible> {
        let label = self.label();
        let at = self.describe();
        let counters = SourceCounters::new(&self.metrics, &label);
        let mut rejections = Rejections::new(self.metrics.clone(), &label);
        let start = Instant::now();
        let mut schedule: Vec<Scheduled> = Plan::of(&self.settings)
            .polls
            .into_iter()
            .map(|poll| Scheduled { poll, due: start })
            .collect();
        let mut devices: Vec<Device> = self
            .settings
            .devices
            .iter()
            .map(|d| Device::new(d, &self.settings, &self.metrics, &label))
            .collect();
        let mut reopening =
            Reopening::new(&counters.connected, &at, Backoff::new(self.settings.reopen));
        let mut first = true;
        info!(at = %at, devices = devices.len(), "opening the Modbus link");
        loop {
            if !first {
                counters.reconnects.inc();
            }
            first = false;
            let go_on = match self.open().await {
                Ok(mut open) => {
                    SourceConnected {
                        connected: &counters.connected,
                        at: Some(&at),
                        session_present: None,
                    }
                    .emit();
                    let mut answered = false;
                    let end = self
                        .serve(
                            &mut open,
                            &mut schedule,
                            &mut devices,
                            &mut Sending {
                                out: &out,
                                counters: &counters,
                                rejections: &mut rejections,
                                answered: &mut answered,
                            },
                            &stop,
                        )
                        .await;
                    counters.connected.set(0);
                    if answered {
                        reopening.backoff.reset();
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
        counters.connected.set(0);
        info!("stopped");
        Ok(())
    }

    /// Opens the port, or connects.
    async fn open(&self) -> std::io::Result<Open> {
        let unit = self.settings.devices.first().map_or(1, |d| d.unit);
        match &self.settings.link {
            Link::Rtu(r) => {
                let port = open_serial(r)?;
                let (wire, state) = Wire::new(port);
                Ok(Open {
                    client: tokio_modbus::client::rtu::attach_slave(wire, Slave(unit)),
                    wire: state,
                    gap: r.frame_gap,
                    tcp: false,
                    silent: 0,
                    last_device: None,
                })
            }
            Link::Tcp(t) => {
                let connect = async {
                    let mut last = std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        format!("{} has no address", t.host),
                    );
                    for addr in tokio::net::lookup_host((t.host.as_str(), t.port)).await? {
                        match tokio::net::TcpStream::connect(addr).await {
                            Ok(s) => return Ok(s),
                            Err(e) => last = e,
                        }
                    }
                    Err(last)
                };
                let stream = tokio::time::timeout(t.connect_timeout, connect)
                    .await
                    .map_err(|_| {
                        std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            format!("no connection within {:?}", t.connect_timeout),
                        )
                    })??;
                stream.set_nodelay(true)?;
                let (wire, state) = Wire::new(stream);
                Ok(Open {
                    client: tokio_modbus::client::tcp::attach_slave(wire, Slave(unit)),
                    wire: state,
                    gap: Duration::ZERO,
                    tcp: true,
                    silent: 0,
                    last_device: None,
                })
            }
        }
    }

    /// Polls the devices on `open` until it fails, `stop` is cancelled or the pipeline is
    /// gone.
    async fn serve(
        &self,
        open: &mut Open,
        schedule: &mut [Scheduled],
        devices: &mut [Device],
        sending: &mut Sending<'_>,
        stop: &CancellationToken,
    ) -> End {
        let mut path_check = tokio::time::interval_at(Instant::now() + PATH_CHECK, PATH_CHECK);
        path_check.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let path = match &self.settings.link {
            Link::Rtu(r) => Some(r.path.clone()),
            Link::Tcp(_) => None,
        };
        loop {
            let Some(next) = (0..schedule.len()).min_by_key(|&i| schedule[i].due) else {
                // No poll at all (cannot happen with a validated map): wait for the stop.
                stop.cancelled().await;
                return End::Stopped;
            };
            tokio::select! {
                biased;
                () = stop.cancelled() => return End::Stopped,
                _ = path_check.tick(), if path.is_some() => {
                    if let Some(p) = &path {
                        if std::fs::metadata(p).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound) {
                            return End::Disconnected("the path vanished".into());
                        }
                    }
                    continue;
                }
                () = tokio::time::sleep_until(schedule[next].due) => {}
            }
            let s = &mut schedule[next];
            let device = &mut devices[s.poll.device];
            let due = s.due;
            let interval = s.poll.interval;
            let now = Instant::now();
            let skip = device.retry_at.is_some_and(|at| now < at);
            if !skip {
                let probing = device.retry_at.is_some();
                match self
                    .poll(open, s.poll.device, device, &s.poll, probing, sending)
                    .await
                {
                    Ok(true) => {}
                    Ok(false) => return End::Closed,
                    Err(why) => return End::Disconnected(why),
                }
            }
            // The next poll is one interval after this one was due; if that is already past,
            // the missed polls are skipped (and this one counted as an overrun).
            let mut next_due = due + interval;
            let now = Instant::now();
            if next_due <= now {
                if !skip {
                    device.metrics.overruns.inc();
                }
                let behind = now.duration_since(due).as_nanos() / interval.as_nanos().max(1);
                let steps = u32::try_from(behind).unwrap_or(u32::MAX).saturating_add(1);
                next_due = due + interval.saturating_mul(steps);
            }
            s.due = next_due;
        }
    }

    /// One poll of `device`: its requests in turn, the readings of what they read.
    /// `Ok(false)`: the pipeline is gone; `Err`: the link failed.
    async fn poll(
        &self,
        open: &mut Open,
        index: usize,
        device: &mut Device,
        poll: &plan::Poll,
        probing: bool,
        sending: &mut Sending<'_>,
    ) -> Result<bool, String> {
        let timestamp = now_ns();
        device.metrics.polls.inc();
        let attempts = if probing {
            1
        } else {
            self.settings.retries + 1
        };
        let mut values: Vec<(usize, FieldValue)> = Vec::new();
        let mut answered = false;
        let mut failure: Option<Failure> = None;
        for request in &poll.requests {
            match self.request(open, index, device, request, attempts).await {
                Ok(data) => {
                    answered = true;
                    sending.counters.messages.inc();
                    for &f in &request.fields {
                        let field = &device.settings.fields[f];
                        match decode(field, &data, request.start) {
                            Ok(v) => values.push((f, v)),
                            Err(e) => sending.rejections.reject(&device.settings.name, e.reason()),
                        }
                    }
                }
                Err(Failure::Link(e)) => return Err(e),
                Err(f @ Failure::Exception(_)) => {
                    answered = true;
                    failure = Some(f);
                }
                Err(f @ Failure::NoAnswer(_)) => {
                    // The device is not answering: its other requests would only wait too.
                    failure = Some(f);
                    break;
                }
            }
        }
        if answered {
            *sending.answered = true;
        }
        device.record(answered, failure.as_ref());
        if answered {
            sending
                .counters
                .devices
                .record(&device.settings.name, 0, now_seconds());
        }
        let readings = device.readings(values, timestamp);
        if readings.is_empty() {
            return Ok(true);
        }
        sending.counters.received(&readings);
        Ok(sending
            .out
            .send(Envelope::new(readings, None, 1))
            .await
            .is_ok())
    }

    /// One request, with its retries.
    async fn request(
        &self,
        open: &mut Open,
        index: usize,
        device: &mut Device,
        request: &Request,
        attempts: u8,
    ) -> Result<Data, Failure> {
        let label = self.label();
        let unit = device.settings.unit;
        open.client.set_slave(Slave(unit));
        let mut last = "timeout";
        for _ in 0..attempts {
            // The silence the line needs before a frame, then discard what came late.
            if !open.gap.is_zero() {
                let last_rx = open.wire.lock_unpoisoned().last_rx;
                if let Some(at) = last_rx {
                    tokio::time::sleep_until(at + open.gap).await;
                }
            }
            open.wire.lock_unpoisoned().discard = true;
            device.metrics.requests.inc();
            let outcome =
                tokio::time::timeout(self.settings.timeout, read(&mut open.client, request)).await;
            let (discarded, captured) = {
                let mut w = open.wire.lock_unpoisoned();
                (
                    std::mem::take(&mut w.discarded),
                    std::mem::take(&mut w.captured),
                )
            };
            if discarded > 0 {
                // An answer that came after its request had given up (or noise): the
                // request before this one is the likely owner.
                let owner = open.last_device.unwrap_or(index);
                self.count_error(&label, owner, device, "late_answer", owner == index);
            }
            open.last_device = Some(index);
            let reason = match outcome {
                Ok(Ok(Ok(data))) => {
                    open.silent = 0;
                    let complete = match &data {
                        Data::Words(w) => w.len() == usize::from(request.count),
                        Data::Bits(b) => b.len() >= usize::from(request.count),
                    };
                    if complete {
                        return Ok(data);
                    }
                    // The answer to another request (a late one) of the same kind.
                    "mismatch"
                }
                Ok(Ok(Err(code))) => {
                    open.silent = 0;
                    device.error(&self.metrics, &label, "exception");
                    self.metrics
                        .counter(
                            "modbus_exceptions_total",
                            &[
                                ("source", &label),
                                ("device", &device.settings.name),
                                ("code", &u8::from(code).to_string()),
                            ],
                        )
                        .inc();
                    return Err(Failure::Exception(code));
                }
                Ok(Err(tokio_modbus::Error::Protocol(_))) => "mismatch",
                Ok(Err(tokio_modbus::Error::Transport(e)))
                    if e.kind() == std::io::ErrorKind::InvalidData =>
                {
                    // tokio-modbus's framing gave up on what it read (more noise than a
                    // frame), and its stream ends after such an error: open afresh.
                    let reason = classify(&captured, unit, request.kind.function_code());
                    *open = self
                        .open()
                        .await
                        .map_err(|e| Failure::Link(e.to_string()))?;
                    open.client.set_slave(Slave(unit));
                    open.last_device = Some(index);
                    reason
                }
                Ok(Err(tokio_modbus::Error::Transport(e))) => {
                    return Err(Failure::Link(e.to_string()));
                }
                Err(_elapsed) if captured.is_empty() => "timeout",
                Err(_elapsed) => classify(&captured, unit, request.kind.function_code()),
            };
            device.error(&self.metrics, &label, reason);
            last = reason;
            if reason == "timeout" {
                open.silent += 1;
                if open.tcp && open.silent >= TCP_SILENT_LIMIT {
                    return Err(Failure::Link(format!(
                        "no answer to {TCP_SILENT_LIMIT} requests in a row"
                    )));
                }
            }
        }
        Err(Failure::NoAnswer(last))
    }

    fn count_error(&self, label: &str, owner: usize, device: &mut Device, reason: &str, own: bool) {
        if own {
            device.error(&self.metrics, label, reason);
        } else if let Some(d) = self.settings.devices.get(owner) {
            self.metrics
                .counter(
                    "modbus_errors_total",
                    &[("source", label), ("device", &d.name), ("reason", reason)],
                )
                .inc();
        }
    }

    /// Opens the link, reads every device's map once, and describes what it read: one line
    /// per device (for `doctor`).
    ///
    /// # Errors
    /// The link cannot be opened; the text says why.
    pub async fn check(&self) -> Result<Vec<(String, Result<String, String>)>, String> {
        let mut open = self
            .open()
            .await
            .map_err(|e| format!("{}: {e}", self.describe()))?;
        let plan = Plan::of(&self.settings);
        let label = self.label();
        let mut out = Vec::new();
        for (i, d) in self.settings.devices.iter().enumerate() {
            let mut device = Device::new(d, &self.settings, &self.metrics, &label);
            let mut values: Vec<String> = Vec::new();
            let mut errors: Vec<String> = Vec::new();
            for poll in plan.polls.iter().filter(|p| p.device == i) {
                for r in &poll.requests {
                    match self
                        .request(&mut open, i, &mut device, r, self.settings.retries + 1)
                        .await
                    {
                        Ok(data) => {
                            for &f in &r.fields {
                                let field = &d.fields[f];
                                let unit = field
                                    .unit
                                    .as_deref()
                                    .map(|u| format!(" {u}"))
                                    .unwrap_or_default();
                                match decode(field, &data, r.start) {
                                    Ok(v) => values.push(format!("{}={v}{unit}", field.name)),
                                    Err(e) => values.push(format!("{}: {e}", field.name)),
                                }
                            }
                        }
                        Err(Failure::Link(e)) => return Err(format!("{}: {e}", self.describe())),
                        Err(e) => errors.push(format!(
                            "{} {}..={}: {e}",
                            r.kind.name(),
                            r.start,
                            u32::from(r.start) + u32::from(r.count) - 1
                        )),
                    }
                }
            }
            let name = format!("{}:{} (unit {})", label, d.name, d.unit);
            let result = if errors.is_empty() {
                Ok(values.join(", "))
            } else {
                Err(errors.join("; "))
            };
            out.push((name, result));
        }
        Ok(out)
    }
}

/// Where the readings go, and what is counted on the way.
struct Sending<'a> {
    out: &'a Inlet,
    counters: &'a SourceCounters,
    rejections: &'a mut Rejections,
    /// Whether any device answered since the link was opened.
    answered: &'a mut bool,
}

impl Device {
    fn new(d: &DeviceSettings, s: &ModbusSettings, metrics: &Metrics, label: &str) -> Device {
        let labels = [("source", label), ("device", d.name.as_str())];
        Device {
            settings: d.clone(),
            metrics: DeviceMetrics {
                requests: metrics.counter("modbus_requests_total", &labels),
                polls: metrics.counter("modbus_polls_total", &labels),
                overruns: metrics.counter("modbus_poll_overruns_total", &labels),
                up: metrics.modbus_device_up(label, &d.name),
            },
            up: None,
            retry_at: None,
            offline: Backoff::new(s.offline_retry),
            exceptions: vec![Exception::default(); d.fields.len()],
            log: LogLimit::new(Duration::from_secs(10)),
        }
    }

    /// Counts one error of `reason`, and logs it without flooding the log.
    fn error(&mut self, metrics: &Metrics, label: &str, reason: &str) {
        metrics
            .counter(
                "modbus_errors_total",
                &[
                    ("source", label),
                    ("device", &self.settings.name),
                    ("reason", reason),
                ],
            )
            .inc();
        if let Some(similar_since_last) = self.log.event(std::time::Instant::now()) {
            debug!(device = %self.settings.name, reason, similar_since_last, "request failed");
        }
    }

    /// Records the outcome of a poll: whether the device answered (an exception is an
    /// answer), and logs a change of state once.
    fn record(&mut self, answered: bool, failure: Option<&Failure>) {
        let name = &self.settings.name;
        if answered {
            if self.up != Some(true) {
                info!(device = %name, unit = self.settings.unit, "device answering");
            }
            if let Some(f) = failure {
                // Alive, but refusing part of the map: worth a line now and then.
                if self.log.event(std::time::Instant::now()).is_some() {
                    warn!(device = %name, error = %f, "device refused a request");
                }
            }
            self.up = Some(true);
            self.retry_at = None;
            self.offline.reset();
            self.metrics.up.set(1);
        } else {
            let delay = self.offline.next_delay();
            if self.up != Some(false) {
                let why = failure.map(ToString::to_string).unwrap_or_default();
                warn!(device = %name, unit = self.settings.unit, error = %why, retry_in = ?delay, "device not answering; trying it again now and then");
            }
            self.up = Some(false);
            self.retry_at = Some(Instant::now() + delay);
            self.metrics.up.set(0);
        }
    }

    /// The readings of one poll's `values`, at `timestamp`: those that report by exception
    /// only when they are to be written; one reading, or one per unit with `unit_tag`.
    fn readings(&mut self, values: Vec<(usize, FieldValue)>, timestamp: i64) -> Vec<Reading> {
        let s = &self.settings;
        let mut readings: Vec<Reading> = Vec::new();
        for (f, value) in values {
            let field = &s.fields[f];
            if let Some(report) = &field.report {
                if !self.exceptions[f].admit(report, &value, timestamp) {
                    continue;
                }
            }
            let unit = s.unit_tag.as_ref().and(field.unit.as_ref());
            let at = readings.iter().position(|r| match (&s.unit_tag, unit) {
                (Some(tag), Some(u)) => r.tag(tag) == Some(u.as_str()),
                (Some(tag), None) => r.tag(tag).is_none(),
                (None, _) => true,
            });
            let reading = match at {
                Some(i) => &mut readings[i],
                None => {
                    let mut r = Reading::new(s.measurement.clone(), timestamp);
                    r.tags.clone_from(&s.tags);
                    if let (Some(tag), Some(u)) = (&s.unit_tag, unit) {
                        r.set_tag(tag.clone(), u.clone());
                    }
                    readings.push(r);
                    let last = readings.len() - 1;
                    &mut readings[last]
                }
            };
            reading.fields.push((field.name.clone(), value));
        }
        readings
    }
}

/// What went wrong with an answer that could not be decoded: its address and function
/// code are right but the frame is not (`crc`), or it is not even that (`framing`).
fn classify(captured: &[u8], unit: u8, function: u8) -> &'static str {
    match captured {
        [a, f, ..] if *a == unit && (*f == function || *f == function | 0x80) => "crc",
        _ => "framing",
    }
}

/// Sends `r` and returns what came back. Through `call`, not tokio-modbus's `Reader`
/// methods: those assert (in debug builds) that the answer has as many registers as asked,
/// and an answer to another request (a late one) may not; the caller checks the length.
async fn read(client: &mut Client, r: &Request) -> tokio_modbus::Result<Data> {
    use tokio_modbus::{Request as Ask, Response};
    let (start, count) = (r.start, r.count);
    let ask = match r.kind {
        RegisterKind::Coil => Ask::ReadCoils(start, count),
        RegisterKind::DiscreteInput => Ask::ReadDiscreteInputs(start, count),
        RegisterKind::Holding => Ask::ReadHoldingRegisters(start, count),
        RegisterKind::Input => Ask::ReadInputRegisters(start, count),
    };
    Ok(client.call(ask).await?.map(|response| match response {
        Response::ReadCoils(bits) | Response::ReadDiscreteInputs(bits) => Data::Bits(bits),
        Response::ReadHoldingRegisters(words) | Response::ReadInputRegisters(words) => {
            Data::Words(words)
        }
        // tokio-modbus checks that the function code answers the request's.
        _ => Data::Words(Vec::new()),
    }))
}

/// Opens the serial port of `r`.
fn open_serial(r: &RtuSettings) -> std::io::Result<tokio_serial::SerialStream> {
    let builder = tokio_serial::new(r.path.to_string_lossy(), r.baud_rate)
        .data_bits(if r.data_bits == 7 {
            tokio_serial::DataBits::Seven
        } else {
            tokio_serial::DataBits::Eight
        })
        .parity(match r.parity {
            Parity::None => tokio_serial::Parity::None,
            Parity::Odd => tokio_serial::Parity::Odd,
            Parity::Even => tokio_serial::Parity::Even,
        })
        .stop_bits(if r.stop_bits == 2 {
            tokio_serial::StopBits::Two
        } else {
            tokio_serial::StopBits::One
        });
    tokio_serial::SerialStream::open(&builder).map_err(std::io::Error::from)
}

fn now_seconds() -> i64 {
    i64::try_from(crate::time::now_seconds()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_frame_with_the_right_header_is_a_crc_error() {
        assert_eq!(classify(&[1, 3, 4, 0, 0], 1, 3), "crc");
        assert_eq!(classify(&[1, 0x83, 2, 0, 0], 1, 3), "crc");
        assert_eq!(classify(&[7, 3, 4], 1, 3), "framing");
        assert_eq!(classify(&[1], 1, 3), "framing");
    }
}
