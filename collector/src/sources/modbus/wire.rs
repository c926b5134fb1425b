//! The transport under tokio-modbus's client, watched: when bytes last arrived (for the
//! inter-frame gap), what arrived since the last request (to tell a CRC error from garbage
//! when no frame could be decoded), and stale bytes (a late answer) discarded before each
//! request so that they are never taken for the next answer.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use crate::sync::MutexExt;

/// What the longest Modbus RTU frame takes: more captured bytes than this are garbage.
const CAPTURE: usize = 256;

/// A transport with its [`WireState`] shared.
pub(super) struct Wire<T> {
    inner: T,
    state: Arc<Mutex<WireState>>,
}

/// What the source knows of the bytes that crossed the wire.
#[derive(Debug, Default)]
pub(super) struct WireState {
    /// When the last byte arrived.
    pub(super) last_rx: Option<Instant>,
    /// What arrived since the last request was written (at most [`CAPTURE`] bytes).
    pub(super) captured: Vec<u8>,
    /// Set before a request: pending input is discarded before it is written.
    pub(super) discard: bool,
    /// Bytes discarded before the last request.
    pub(super) discarded: usize,
}

impl<T> Wire<T> {
    /// `inner`, watched; the state is shared with the returned handle.
    pub(super) fn new(inner: T) -> (Wire<T>, Arc<Mutex<WireState>>) {
        let state = Arc::new(Mutex::new(WireState::default()));
        (
            Wire {
                inner,
                state: Arc::clone(&state),
            },
            state,
        )
    }
}

impl<T> std::fmt::Debug for Wire<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Wire")
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Wire<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            let new = &buf.filled()[before..];
            if !new.is_empty() {
                let mut s = self.state.lock_unpoisoned();
                s.last_rx = Some(Instant::now());
                let room = CAPTURE.saturating_sub(s.captured.len());
                s.captured.extend_from_slice(&new[..new.len().min(room)]);
            }
        }
        r
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Wire<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let discard = std::mem::take(&mut self.state.lock_unpoisoned().discard);
        if discard {
            // Whatever is waiting now arrived after the last answer was complete: an answer
            // that came too late, or noise. Read it away without waiting.
            let mut scratch = [0u8; CAPTURE];
            let mut discarded = 0;
            loop {
                let mut rb = ReadBuf::new(&mut scratch);
                match Pin::new(&mut self.inner).poll_read(cx, &mut rb) {
                    Poll::Ready(Ok(())) if !rb.filled().is_empty() => {
                        discarded += rb.filled().len();
                    }
                    _ => break,
                }
            }
            let mut s = self.state.lock_unpoisoned();
            s.discarded = discarded;
            s.captured.clear();
            if discarded > 0 {
                s.last_rx = Some(Instant::now());
            }
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
