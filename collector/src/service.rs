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

/// Decides whether to feed the watchdog: the pipeline is making progress when nothing is
/// waiting for it, or when it has moved since the last check. A pipeline that has work and
/// does not move is wedged: the watchdog is then starved and systemd restarts the service.
#[derive(Debug, Default)]
pub struct Progress {
    last: Option<u64>,
}

impl Progress {
    /// `work_waiting`: whether anything is waiting (in the channel, or in the journal for a
    /// sink); `counter`: a number that grows whenever the pipeline moves (commits, writes).
    pub fn check(&mut self, work_waiting: bool, counter: u64) -> bool {
        let moved = self.last.is_none_or(|last| counter != last);
        self.last = Some(counter);
        moved || !work_waiting
    }
}

/// Tells systemd the service is ready, then feeds its watchdog (if it set one) every half
/// interval while `probe` shows progress, until `stop`. `probe` returns whether work is
/// waiting, and a counter that grows when the pipeline moves.
pub async fn supervise(
    notifier: Notifier,
    probe: impl Fn() -> (bool, u64) + Send + 'static,
    stop: tokio_util::sync::CancellationToken,
) {
    notifier.notify("READY=1\nSTATUS=collecting");
    let Some(interval) = notifier.watchdog_interval() else {
        stop.cancelled().await;
        notifier.notify("STOPPING=1");
        return;
    };
    let mut progress = Progress::default();
    let mut starving = false;
    let mut tick = tokio::time::interval(interval / 2);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = tick.tick() => {
                let (waiting, counter) = probe();
                if progress.check(waiting, counter) {
                    notifier.notify("WATCHDOG=1");
                    starving = false;
                } else if !starving {
                    starving = true;
                    tracing::error!("the pipeline has work waiting and makes no progress: no longer feeding the watchdog");
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
        assert!(!p.check(true, 5), "work waiting and no movement: wedged");
        assert!(p.check(true, 6), "moving again");
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
