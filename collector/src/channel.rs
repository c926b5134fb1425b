//! The channel between the sources and the journal: every source sends [`Envelope`]s
//! through a clone of one [`Inlet`]; the journal writer takes them from the [`Outlet`].
//!
//! Contract:
//! - **Bounded.** The room is counted in messages (`pipeline.channel_capacity`), not in
//!   envelopes, so memory stays bounded however a source groups its messages.
//! - **Backpressure.** [`Inlet::send`] waits for room: a full pipeline holds the sources
//!   back (they read nothing more meanwhile); nothing is dropped here.
//! - **Ack after durable.** An envelope keeps its room, and its [`Ack`], until the journal
//!   has committed it: the writer sends the ack after the commit, then drops the envelope,
//!   which gives its room back. The messages held are exactly those not yet acknowledged.
//! - Dropping the last inlet closes the channel and wakes the writer at once.
//!
//! Neither side imports the other: sources and the journal both import this module.

use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit, Semaphore};

use crate::metrics::Counter;
use crate::reading::Reading;

/// What a source sends into the pipeline: the readings of one message, or of the messages
/// that arrived together, and how to acknowledge those messages once they are durable.
#[derive(Debug)]
pub struct Envelope {
    /// The readings, at least one.
    pub readings: Vec<Reading>,
    /// Acknowledges the messages to their origin; fired by the journal after the commit.
    pub ack: Option<Ack>,
    /// How many messages (MQTT messages, serial lines) the readings came from.
    pub messages: usize,
    /// The envelope's room in the pipeline (see [`Inlet`]), given back when it is dropped:
    /// after the journal has committed and acked it.
    room: Option<OwnedSemaphorePermit>,
}

impl Envelope {
    /// The readings of `messages` messages, to acknowledge with `ack` once durable.
    pub fn new(readings: Vec<Reading>, ack: Option<Ack>, messages: usize) -> Envelope {
        Envelope {
            readings,
            ack,
            messages,
            room: None,
        }
    }
}

/// The way into the pipeline, shared by every source: the bounded channel to the journal
/// writer, with its room counted in messages (`pipeline.channel_capacity`), so that an
/// envelope of several messages takes a place for each, and holds them until the journal
/// has committed it. Memory stays bounded by the configuration however messages are
/// grouped, and the messages held are exactly those not yet acknowledged, which MQTT 5's
/// Receive Maximum is set to.
#[derive(Debug, Clone)]
pub struct Inlet {
    tx: mpsc::Sender<Envelope>,
    room: Arc<Semaphore>,
    capacity: usize,
    /// Wakes the writer before its commit delay is over (see [`Outlet::wait`]); also when
    /// the last inlet is dropped, after its sender (fields drop in order), so that the
    /// writer sees at once that input has ended.
    wake: Arc<WakeOnDrop>,
    /// The messages sent to be acknowledged and not yet committed, and how many of them
    /// make the writer commit at once (see [`Outlet::set_ack_batch`]).
    acks: Arc<AckCount>,
    /// `[[report_by_exception]]`: fields not worth writing are removed on the way in.
    report: Option<Arc<crate::report::ReportFilter>>,
}

#[derive(Debug)]
struct WakeOnDrop(Arc<Notify>);

/// The messages to acknowledge that are in the pipeline, sent and not yet committed (it may
/// dip below zero for a moment: the writer can commit an envelope before its sender counts
/// it), and the writer's threshold.
#[derive(Debug)]
struct AckCount {
    waiting: AtomicIsize,
    batch: AtomicUsize,
}

impl Drop for WakeOnDrop {
    fn drop(&mut self) {
        self.0.notify_one();
    }
}

impl Inlet {
    /// An inlet with room for `capacity` messages (at least 1), and the journal writer's end.
    pub fn new(capacity: usize) -> (Inlet, Outlet) {
        let capacity = capacity.clamp(1, Semaphore::MAX_PERMITS);
        // Every envelope holds at least one place: the channel itself never fills first.
        let (tx, rx) = mpsc::channel(capacity);
        let room = Arc::new(Semaphore::new(capacity));
        let wake = Arc::new(Notify::new());
        let acks = Arc::new(AckCount {
            waiting: AtomicIsize::new(0),
            batch: AtomicUsize::new(1),
        });
        let inlet = Inlet {
            tx,
            room: Arc::clone(&room),
            capacity,
            wake: Arc::new(WakeOnDrop(Arc::clone(&wake))),
            acks: Arc::clone(&acks),
            report: None,
        };
        let outlet = Outlet {
            rx,
            room,
            capacity,
            wake,
            acks,
        };
        (inlet, outlet)
    }

    /// This inlet, removing from every envelope the fields that `filter` says are not worth
    /// writing (report by exception).
    pub fn with_report(mut self, filter: Option<crate::report::ReportFilter>) -> Inlet {
        self.report = filter.map(Arc::new);
        self
    }

    /// The most messages one envelope may hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Sends `envelope` once there is room for its messages: a full pipeline pushes back
    /// here, and the source reads nothing more meanwhile. Wakes the writer if it waits
    /// for company and should not, or should wait less: the envelope is the first to be
    /// acknowledged since the last commit (the writer then waits `journal.ack_delay` at
    /// most), or brings the messages waiting for their ack to the writer's `ack_batch`,
    /// or half the room is taken.
    ///
    /// # Errors
    /// The pipeline is gone; the envelope is handed back.
    ///
    /// # Cancel safety
    /// Cancelling it drops the envelope unsent (its messages unacknowledged).
    pub async fn send(&self, mut envelope: Envelope) -> Result<(), Envelope> {
        if let Some(report) = &self.report {
            report.apply(&mut envelope.readings);
            if envelope.readings.is_empty() {
                // Nothing to make durable: the messages can be acknowledged now.
                if let Some(ack) = envelope.ack.take() {
                    ack.send();
                }
                return Ok(());
            }
        }
        let places = u32::try_from(envelope.messages.clamp(1, self.capacity)).unwrap_or(u32::MAX);
        match Arc::clone(&self.room).acquire_many_owned(places).await {
            Ok(permit) => envelope.room = Some(permit),
            Err(_) => return Err(envelope), // never closed while an inlet exists
        }
        let to_ack = if envelope.ack.is_some() {
            isize::try_from(envelope.messages.max(1)).unwrap_or(isize::MAX)
        } else {
            0
        };
        let mut urgent = half_taken(&self.room, self.capacity);
        self.tx.send(envelope).await.map_err(|e| e.0)?;
        if to_ack > 0 {
            let before = self.acks.waiting.fetch_add(to_ack, Ordering::SeqCst);
            let batch = isize::try_from(self.acks.batch.load(Ordering::Relaxed)).unwrap_or(1);
            urgent |= before <= 0 || (before < batch && before + to_ack >= batch);
        }
        if urgent {
            self.wake.0.notify_one();
        }
        Ok(())
    }

    /// A handle that does not keep the pipeline open (for the watchdog's probe).
    pub fn downgrade(&self) -> mpsc::WeakSender<Envelope> {
        self.tx.downgrade()
    }
}

/// Whether at least half of the `capacity` places of `room` are taken.
fn half_taken(room: &Semaphore, capacity: usize) -> bool {
    room.available_permits() <= capacity / 2
}

/// The journal writer's end of the pipeline.
#[derive(Debug)]
pub struct Outlet {
    rx: mpsc::Receiver<Envelope>,
    room: Arc<Semaphore>,
    capacity: usize,
    wake: Arc<Notify>,
    acks: Arc<AckCount>,
}

impl Outlet {
    /// Makes the inlets wake the writer once `batch` messages (at least 1) wait for their
    /// ack, besides the first of them (1, the default: every envelope to acknowledge wakes
    /// a waiting writer).
    pub fn set_ack_batch(&self, batch: usize) {
        self.acks.batch.store(batch.max(1), Ordering::Relaxed);
    }

    /// Tells the inlets that `messages` messages to acknowledge were committed.
    pub fn acks_committed(&self, messages: usize) {
        let n = isize::try_from(messages).unwrap_or(isize::MAX);
        self.acks.waiting.fetch_sub(n, Ordering::SeqCst);
    }

    /// The next envelope, waiting for it; `None` once every inlet is gone and nothing is
    /// left. Blocking: not for async code.
    pub fn blocking_recv(&mut self) -> Option<Envelope> {
        self.rx.blocking_recv()
    }

    /// The next envelope if one is waiting.
    pub fn try_recv(&mut self) -> Option<Envelope> {
        self.rx.try_recv().ok()
    }

    /// The next envelope, waiting for it (for tests and tools).
    pub async fn recv(&mut self) -> Option<Envelope> {
        self.rx.recv().await
    }

    /// Whether the writer should commit what it has now rather than wait for more: half of
    /// the room is taken (sources would soon have to wait for the commit), or every inlet
    /// is gone (input has ended).
    pub fn should_commit(&self) -> bool {
        half_taken(&self.room, self.capacity) || self.rx.is_closed()
    }

    /// Waits until `deadline`, or until woken sooner: an envelope to acknowledge was sent,
    /// half of the room is taken, or the last inlet is gone. Returns whether it was woken.
    /// A wake may be left over from an earlier envelope: check [`Outlet::should_commit`].
    pub async fn wait(&self, deadline: tokio::time::Instant) -> bool {
        tokio::time::timeout_at(deadline, self.wake.notified())
            .await
            .is_ok()
    }
}

/// Pending acknowledgements of MQTT messages (QoS 1) of one connection: their packet ids, and
/// the way back to the task that sends PUBACKs for that connection.
#[derive(Debug)]
pub struct Ack {
    pkids: Vec<u16>,
    to: mpsc::Sender<u16>,
    failed: Counter,
}

impl Ack {
    /// An acknowledgement of packet `pkid`, to be sent through `to`. `to` must have room for
    /// every packet id that can be unacknowledged at once (65535 at most, by the protocol), so
    /// that sending never waits: the journal must never block on a source.
    pub(crate) fn new(pkid: u16, to: mpsc::Sender<u16>, failed: Counter) -> Ack {
        Ack {
            pkids: vec![pkid],
            to,
            failed,
        }
    }

    /// Adds packet `pkid` (of the same connection) to acknowledge.
    pub(crate) fn add(&mut self, pkid: u16) {
        self.pkids.push(pkid);
    }

    /// Sends the acknowledgements without waiting. If the connection's task is gone, the
    /// messages are simply redelivered by the broker later (their readings are already
    /// durable, and a second copy overwrites the first in every store).
    pub fn send(self) {
        for pkid in self.pkids {
            if self.to.try_send(pkid).is_err() {
                self.failed.inc();
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_inlet_counts_messages_and_frees_their_room_once_the_envelope_is_dropped() {
        let (inlet, mut rx) = Inlet::new(3);
        let envelope = |messages| Envelope::new(vec![Reading::new("m", 1)], None, messages);
        inlet.send(envelope(2)).await.unwrap();
        inlet.send(envelope(1)).await.unwrap();
        // Full: three messages are in the pipeline, in two envelopes.
        let blocked = tokio::time::timeout(Duration::from_secs(1), inlet.send(envelope(1)));
        assert!(blocked.await.is_err(), "no room for a fourth message");
        // Received is not enough: the room comes back when the journal drops the envelope
        // (after its commit).
        let first = rx.recv().await.unwrap();
        assert_eq!(first.messages, 2);
        let blocked = tokio::time::timeout(Duration::from_secs(1), inlet.send(envelope(1)));
        assert!(blocked.await.is_err());
        drop(first);
        inlet.send(envelope(2)).await.unwrap();
        // An envelope of more messages than the whole room takes all of it, not forever.
        drop(rx.recv().await.unwrap());
        drop(rx.recv().await.unwrap());
        inlet.send(envelope(10)).await.unwrap();
        drop(inlet);
        assert_eq!(rx.recv().await.unwrap().messages, 10);
        assert!(rx.recv().await.is_none(), "closed with its last inlet");
    }
}
