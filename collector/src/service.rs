//! systemd integration: readiness, status and a watchdog that is fed only while the
//! pipeline makes progress.
//!
//! The notification protocol is one datagram per message to the Unix socket named by
//! `$NOTIFY_SOCKET` (a path, or an abstract name starting with `@`). Without that variable
//! (not under systemd) every call does nothing.

use std::io;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// A connection to systemd's notification socket.
#[derive(Debug)]
pub struct Notifier {
    socket: Option<(UnixDatagram, std::os::unix::net::SocketAddr)>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// From the environment (`NOTIFY_SOCKET`, `WATCHDOG_USEC`, `WATCHDOG_PID`).
    ///
    /// # Errors
    /// The socket named by `NOTIFY_SOCKET` cannot be addressed.
    pub fn from_env() -> io::Result<Notifier> {
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|_| {
                std::env::var("WATCHDOG_PID")
                    .ok()
                    .and_then(|p| p.parse::<u32>().ok())
                    .is_none_or(|p| p == std::process::id())
            })
            .map(Duration::from_micros);
        let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
            return Ok(Notifier {
                socket: None,
                watchdog: None,
            });
        };
        let path = path.to_string_lossy().into_owned();
        let addr = match path.strip_prefix('@') {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?
            }
            None => std::os::unix::net::SocketAddr::from_pathname(&path)?,
        };
        Ok(Notifier {
            socket: Some((UnixDatagram::unbound()?, addr)),
            watchdog,
        })
    }

    /// Whether systemd listens.
    pub fn is_active(&self) -> bool {
        self.socket.is_some()
    }

    /// The watchdog interval systemd expects pings within, if it set one.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Sends `state` (such as `READY=1` or `STATUS=...`); failures are ignored, as systemd's
    /// own `sd_notify` does: the service must not stop because its supervisor went away.
    pub fn notify(&self, state: &str) {
        if let Some((socket, addr)) = &self.socket {
            let _ = socket.send_to_addr(state.as_bytes(), addr);
        }
    }
}

/// Decides whether to feed the watchdog. The pipeline is wedged when work has been waiting
/// (in the channel, or held by the journal's writer) and nothing moved across two checks in
/// a row: one check alone could catch readings that arrived a moment ago. A full journal
/// holding the sources back for a sink that is down is not a wedge (the probe says so): a
/// restart would not help, and the data is safe.
#[derive(Debug, Default)]
pub struct Progress {
    last: Option<u64>,
    stuck_once: bool,
}

impl Progress {
    /// `work_waiting`: whether anything is waiting; `counter`: a number that grows whenever
    /// the pipeline moves (commits). Returns whether to feed the watchdog.
    pub fn check(&mut self, work_waiting: bool, counter: u64) -> bool {
        let moved = self.last.is_none_or(|last| counter != last);
        self.last = Some(counter);
        if moved || !work_waiting {
            self.stuck_once = false;
            return true;
        }
        !std::mem::replace(&mut self.stuck_once, true)
    }
}

/// What the supervisor reads off the pipeline at each check.
#[derive(Debug, Default)]
pub struct Probe {
    /// Work is waiting: readings in the channel, or held by the journal's writer.
    pub work_waiting: bool,
    /// Grows whenever the pipeline moves (journal commits).
    pub commits: u64,
    /// Readings committed to the journal so far.
    pub readings: u64,
    /// Per sink, the readings in the journal it has not written yet.
    pub behind: Vec<(String, i64)>,
}

/// The one-line `STATUS=` that `systemctl status` shows: the rate in, and the sinks behind.
pub fn status_line(per_second: f64, behind: &[(String, i64)], wedged: bool) -> String {
    let mut line = if wedged {
        "wedged: work waits and the journal makes no progress".to_string()
    } else {
        format!("{per_second:.0} readings/s")
    };
    let behind: Vec<String> = behind
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(sink, n)| format!("{sink} {n}"))
        .collect();
    if behind.is_empty() {
        line.push_str("; sinks up to date");
    } else {
        line.push_str("; behind: ");
        line.push_str(&behind.join(", "));
    }
    line
}

/// How often `STATUS=` is refreshed when systemd set no watchdog.
const STATUS_EVERY: Duration = Duration::from_secs(10);

/// Tells systemd the service is ready, then every half watchdog interval (or every 10
/// seconds without a watchdog) refreshes `STATUS=` and, while `probe` shows progress, feeds
/// the watchdog, until `stop`.
pub async fn supervise(
    notifier: Notifier,
    probe: impl Fn() -> Probe + Send + 'static,
    stop: tokio_util::sync::CancellationToken,
) {
    notifier.notify("READY=1\nSTATUS=collecting");
    if !notifier.is_active() {
        stop.cancelled().await;
        return;
    }
    let watchdog = notifier.watchdog_interval();
    let every = watchdog.map_or(STATUS_EVERY, |w| w / 2);
    let mut progress = Progress::default();
    let mut starving = false;
    let mut tick = tokio::time::interval(every);
    let mut last: Option<(std::time::Instant, u64)> = None;
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = tick.tick() => {
                let p = probe();
                let now = std::time::Instant::now();
                let rate = last.map_or(0.0, |(t, n)| {
                    p.readings.saturating_sub(n) as f64 / now.duration_since(t).as_secs_f64().max(1e-3)
                });
                last = Some((now, p.readings));
                let feed = progress.check(p.work_waiting, p.commits);
                let status = status_line(rate, &p.behind, !feed);
                if !feed && !starving {
                    tracing::error!("the pipeline has work waiting and makes no progress: no longer feeding the watchdog");
                } else if feed && starving {
                    tracing::info!("the pipeline moves again: feeding the watchdog");
                }
                starving = !feed;
                if feed && watchdog.is_some() {
                    notifier.notify(&format!("WATCHDOG=1\nSTATUS={status}"));
                } else {
                    notifier.notify(&format!("STATUS={status}"));
                }
            }
        }
    }
    notifier.notify("STOPPING=1");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_starves_only_a_wedged_pipeline() {
        let mut p = Progress::default();
        assert!(
            p.check(true, 0),
            "the first check has nothing to compare with"
        );
        assert!(p.check(false, 0), "idle is not wedged");
        assert!(p.check(true, 5), "moved");
        assert!(
            p.check(true, 5),
            "work waiting without movement once: it may have just arrived"
        );
        assert!(!p.check(true, 5), "twice in a row: wedged");
        assert!(!p.check(true, 5), "still wedged");
        assert!(p.check(true, 6), "moving again");
        assert!(p.check(true, 6), "and it takes two checks again");
        assert!(p.check(false, 6), "idle");
        assert!(p.check(true, 6));
        assert!(!p.check(true, 6));
    }

    #[test]
    fn status_line_says_the_rate_and_who_is_behind() {
        assert_eq!(
            status_line(1234.4, &[("local".into(), 0)], false),
            "1234 readings/s; sinks up to date"
        );
        assert_eq!(
            status_line(
                10.0,
                &[
                    ("local".into(), 0),
                    ("influxdb:a".into(), 500),
                    ("b".into(), 7)
                ],
                false
            ),
            "10 readings/s; behind: influxdb:a 500, b 7"
        );
        assert_eq!(
            status_line(0.0, &[], true),
            "wedged: work waits and the journal makes no progress; sinks up to date"
        );
    }

    #[test]
    fn notifications_reach_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let listener = UnixDatagram::bind(&path).unwrap();
        let addr = std::os::unix::net::SocketAddr::from_pathname(&path).unwrap();
        let n = Notifier {
            socket: Some((UnixDatagram::unbound().unwrap(), addr)),
            watchdog: Some(Duration::from_secs(10)),
        };
        n.notify("READY=1");
        let mut buf = [0u8; 64];
        let len = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1");
        assert!(n.is_active());
    }
}
