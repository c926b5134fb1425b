//! Sources: where readings come from. Each runs as one task, parses what arrives into
//! [`Reading`]s and sends them, as an [`Envelope`], into the pipeline's one bounded channel.
//!
//! - [`mqtt`]: one task per broker connection.

pub mod mqtt;

use tokio::sync::mpsc;

use crate::metrics::Counter;
use crate::reading::Reading;

/// What a source sends into the pipeline: the readings of one message, and how to
/// acknowledge that message once they are durable.
#[derive(Debug)]
pub struct Envelope {
    /// The readings, at least one.
    pub readings: Vec<Reading>,
    /// Acknowledges the message to its origin; fired by the journal after the commit.
    pub ack: Option<Ack>,
}

/// A pending acknowledgement of one MQTT message (QoS 1): its packet id, and the way back
/// to the task that sends PUBACKs for its connection.
#[derive(Debug)]
pub struct Ack {
    pkid: u16,
    to: mpsc::Sender<u16>,
    failed: Counter,
}

impl Ack {
    /// An acknowledgement of packet `pkid`, to be sent through `to`. `to` must have room for
    /// every packet id that can be unacknowledged at once (65535 at most, by the protocol), so
    /// that sending never waits: the journal must never block on a source.
    pub(crate) fn new(pkid: u16, to: mpsc::Sender<u16>, failed: Counter) -> Ack {
        Ack { pkid, to, failed }
    }

    /// Sends the acknowledgement without waiting. If the connection's task is gone, the
    /// message is simply redelivered by the broker later (its readings are already durable,
    /// and a second copy overwrites the first in every store).
    pub fn send(self) {
        if self.to.try_send(self.pkid).is_err() {
            self.failed.inc();
        }
    }
}
