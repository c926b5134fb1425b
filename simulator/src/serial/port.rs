//! A simulated serial port: a pseudo-terminal behind a symlink at a path the caller
//! chooses (as `/dev/serial/by-id/...` is a symlink to `/dev/ttyUSB0`), paced at its baud
//! rate, that can be unplugged and plugged in again.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use tokio_serial::{SerialPort as _, SerialStream};

/// Bits on the wire per byte: a start bit, 8 data bits, a stop bit.
const BITS_PER_BYTE: u64 = 10;

/// One simulated port. The device side is the pty's master; the collector opens the slave
/// through the link.
#[derive(Debug)]
pub struct SerialPort {
    link: PathBuf,
    baud: u32,
    pty: Option<Pty>,
    /// When the bytes written so far have left the wire, at the baud rate.
    wire_free: Instant,
}

#[derive(Debug)]
struct Pty {
    master: SerialStream,
    /// Held open so that what the device writes waits in the pty until the collector reads
    /// it, and so that the collector can close and reopen the port.
    slave: SerialStream,
}

impl SerialPort {
    /// Plugs a new port in: a new pty, and `link` pointing at it (replacing any old link).
    ///
    /// # Errors
    /// No pty available, or the link cannot be created.
    pub fn plug(link: &Path, baud: u32) -> io::Result<SerialPort> {
        let mut port = SerialPort {
            link: link.to_owned(),
            baud: baud.max(1),
            pty: None,
            wire_free: Instant::now(),
        };
        port.replug()?;
        Ok(port)
    }

    /// The path a collector opens.
    pub fn link(&self) -> &Path {
        &self.link
    }

    /// Whether the port is plugged in.
    pub fn is_plugged(&self) -> bool {
        self.pty.is_some()
    }

    /// Unplugs it, as pulling a USB adapter does: the link disappears and the pty closes (a
    /// reader sees the end of the file; whatever it had not read is lost).
    ///
    /// # Errors
    /// The link cannot be removed.
    pub fn unplug(&mut self) -> io::Result<()> {
        let removed = match std::fs::remove_file(&self.link) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        };
        self.pty = None;
        removed
    }

    /// Plugs it in again: a new pty behind the same link (unplugging first if needed).
    ///
    /// # Errors
    /// No pty available, or the link cannot be created.
    pub fn replug(&mut self) -> io::Result<()> {
        if self.pty.is_some() {
            self.unplug()?;
        }
        let (master, slave) = SerialStream::pair().map_err(io::Error::from)?;
        let target = slave
            .name()
            .ok_or_else(|| io::Error::other("the pty has no name"))?;
        // Atomically: a reader sees the old link, no link, or the new one; never a half.
        let tmp = self
            .link
            .with_extension(format!("plugging-{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&target, &tmp)?;
        std::fs::rename(&tmp, &self.link)?;
        self.pty = Some(Pty { master, slave });
        self.wire_free = Instant::now();
        Ok(())
    }

    /// Writes `bytes` as the device does: no faster than the baud rate allows (10 bits per
    /// byte), and waiting while the pty is full (the collector is behind).
    ///
    /// # Errors
    /// The port is unplugged, or the pty failed.
    pub async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        tokio::time::sleep_until(self.wire_free).await;
        let start = self.wire_free.max(Instant::now());
        let pty = self.pty.as_mut().ok_or_else(unplugged)?;
        pty.master.write_all(bytes).await?;
        let on_wire = Duration::from_nanos(
            (bytes.len() as u64)
                .saturating_mul(BITS_PER_BYTE)
                .saturating_mul(1_000_000_000)
                / u64::from(self.baud),
        );
        self.wire_free = start + on_wire;
        Ok(())
    }

    /// Reads what the collector wrote (commands of a polled instrument).
    ///
    /// # Errors
    /// The port is unplugged, or the pty failed.
    ///
    /// # Cancel safety
    /// Cancel safe: nothing is read unless it returns.
    pub async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let pty = self.pty.as_mut().ok_or_else(unplugged)?;
        pty.master.read(buf).await
    }

    /// Bytes written that the collector has not read yet (in the pty's input queue).
    ///
    /// # Errors
    /// The port is unplugged, or the pty failed.
    pub fn unread(&self) -> io::Result<u32> {
        let pty = self.pty.as_ref().ok_or_else(unplugged)?;
        pty.slave.bytes_to_read().map_err(io::Error::from)
    }

    /// Waits (at most `timeout`) until the collector has read everything written: the queue
    /// stays empty for 100 ms in a row. Returns whether it did.
    pub async fn drain(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut empty_since: Option<Instant> = None;
        while Instant::now() < deadline {
            match self.unread() {
                Ok(0) => {
                    let since = *empty_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= Duration::from_millis(100) {
                        return true;
                    }
                }
                Ok(_) => empty_since = None,
                Err(_) => return false,
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }
}

impl Drop for SerialPort {
    fn drop(&mut self) {
        if self.pty.is_some() {
            let _ = std::fs::remove_file(&self.link);
        }
    }
}

fn unplugged() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "the port is unplugged")
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    fn open(link: &Path) -> io::Result<SerialStream> {
        SerialStream::open(&tokio_serial::new(link.to_string_lossy(), 115_200))
            .map_err(io::Error::from)
    }

    #[tokio::test]
    async fn a_reader_reads_through_the_link_sees_the_unplug_and_reopens() {
        let dir = tempfile::tempdir().expect("tempdir");
        let link = dir.path().join("usb-sim-0");
        let mut port = SerialPort::plug(&link, 115_200).expect("plug");
        let mut reader = open(&link).expect("open the link");
        port.write(b"hello\r\n").await.expect("write");
        let mut buf = [0u8; 64];
        let n = reader.read(&mut buf).await.expect("read");
        assert_eq!(&buf[..n], b"hello\r\n");
        assert!(port.drain(Duration::from_secs(5)).await);

        reader.write_all(b"READ?\n").await.expect("command");
        let n = port.read(&mut buf).await.expect("read the command");
        assert_eq!(&buf[..n], b"READ?\n");

        port.unplug().expect("unplug");
        assert!(!link.exists());
        let gone = tokio::time::timeout(Duration::from_secs(5), reader.read(&mut buf))
            .await
            .expect("the unplug is seen at once");
        assert!(matches!(gone, Ok(0) | Err(_)), "{gone:?}");
        assert!(open(&link).is_err(), "nothing to open while unplugged");
        assert!(port.write(b"x").await.is_err());

        port.replug().expect("replug");
        let mut again = open(&link).expect("reopen by the same path");
        port.write(b"again\n").await.expect("write");
        let n = again.read(&mut buf).await.expect("read");
        assert_eq!(&buf[..n], b"again\n");
        drop(again);
        // The collector may close and reopen while the device stays plugged in.
        let mut third = open(&link).expect("reopen while plugged in");
        port.write(b"third\n").await.expect("write");
        let n = third.read(&mut buf).await.expect("read");
        assert_eq!(&buf[..n], b"third\n");
    }

    #[tokio::test]
    async fn writes_are_paced_at_the_baud_rate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut port = SerialPort::plug(&dir.path().join("slow"), 9600).expect("plug");
        let _reader = open(port.link()).expect("open");
        let start = Instant::now();
        // 960 bytes per second: three 96-byte writes take at least 200 ms (the third starts
        // once the first two are on the wire).
        for _ in 0..3 {
            port.write(&[b'x'; 96]).await.expect("write");
        }
        assert!(
            start.elapsed() >= Duration::from_millis(195),
            "{:?}",
            start.elapsed()
        );
    }
}
