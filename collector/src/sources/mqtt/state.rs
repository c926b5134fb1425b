//! The state of one source connection, apart from its I/O (as rumqttc keeps `state.rs` apart
//! from `eventloop.rs`): plain methods take what the connection reported and say what to do
//! next, so that every transition is tested without a broker.

use std::time::{Duration, Instant};

use crate::backoff::{Backoff, LogLimit};
use crate::config::BackoffConfig;
use crate::mqtt::{ConnError, Event, Message, MAX_REMAINING_LENGTH};

/// How often the oversized-message error is logged at most (each one is counted).
const OVERSIZED_LOG_PERIOD: Duration = Duration::from_secs(60);

/// A connection's state: up or not, its reconnect backoff, and its packet limit.
#[derive(Debug)]
pub(super) struct ConnState {
    backoff: Backoff,
    connected: bool,
    /// The largest packet the next connection reads.
    packet_limit: usize,
    /// Set when an oversized message closed the connection: the next one reads packets up to
    /// `packet_limit`.
    raise_limit: bool,
    /// Oversized messages already counted when they closed the connection: when one comes
    /// again (resent, with its DUP flag), it is rejected and acked but not counted twice.
    oversized_counted: u32,
    oversized_logs: LogLimit,
    max_payload_size: usize,
}

/// What the I/O loop does after an event.
#[derive(Debug)]
pub(super) enum Step {
    /// Subscribe (again): a session that was not kept has lost its subscriptions.
    Subscribe {
        /// Whether the broker kept a session.
        session_present: bool,
    },
    /// Every filter was granted.
    Subscribed,
    /// The broker refused some filters (one description each).
    Refused(Vec<String>),
    /// Parse the message and ack it once durable.
    Read {
        /// The message.
        msg: Message,
        /// An oversized message that comes again (DUP), already counted when it closed the
        /// connection: rejected and acked, not counted again.
        counted: bool,
    },
    /// A message that arrived while stopping: not read, not acked (the broker redelivers it).
    Skip,
    /// The connection is closed and the source stops.
    Stop,
    /// The connection is gone: wait `delay` (cancellable), then reconnect.
    Reconnect {
        /// The backoff's delay.
        delay: Duration,
        /// Why, and whether to say so.
        cause: Disconnect,
    },
    /// Nothing to do.
    Nothing,
}

/// Why a connection ended, as the loop reports it.
#[derive(Debug)]
pub(super) enum Disconnect {
    /// A message larger than the packet limit closed it; it counts as one rejected message.
    /// `unsaid`: `Some` when worth a log line (with the number not logged since the last one).
    Oversized {
        /// The packet's size.
        size: usize,
        /// Whether to log, and how many went unsaid since.
        unsaid: Option<u64>,
    },
    /// Another client took the session over.
    TakenOver,
    /// A connection that was up was lost.
    Lost(ConnError),
    /// Connecting failed; `log` is set for the first failure and every tenth.
    CannotConnect {
        /// What failed.
        error: ConnError,
        /// Attempts since the last healthy connection.
        attempts: u32,
        /// Whether worth a log line.
        log: bool,
    },
}

impl ConnState {
    /// A connection not yet up, reading packets up to `packet_limit`.
    pub(super) fn new(
        reconnect: BackoffConfig,
        packet_limit: usize,
        max_payload_size: usize,
    ) -> ConnState {
        ConnState {
            backoff: Backoff::new(reconnect),
            connected: false,
            packet_limit,
            raise_limit: false,
            oversized_counted: 0,
            oversized_logs: LogLimit::new(OVERSIZED_LOG_PERIOD),
            max_payload_size,
        }
    }

    /// The raised packet limit, once, when the next connection must read larger packets.
    pub(super) fn take_raised_limit(&mut self) -> Option<usize> {
        std::mem::take(&mut self.raise_limit).then_some(self.packet_limit)
    }

    /// What to do with `event`; `stopping` once the source no longer reads messages. `now`
    /// is for the log limit.
    pub(super) fn on_event(
        &mut self,
        event: Result<Event, ConnError>,
        stopping: bool,
        now: Instant,
    ) -> Step {
        match event {
            Ok(Event::Disconnecting) => Step::Stop,
            Ok(Event::Connected {
                session_present, ..
            }) => {
                self.connected = true;
                self.backoff.connected();
                Step::Subscribe { session_present }
            }
            Ok(Event::Subscribed { refused }) if refused.is_empty() => Step::Subscribed,
            Ok(Event::Subscribed { refused }) => Step::Refused(refused),
            Ok(Event::Message(_)) if stopping => Step::Skip,
            Ok(Event::Message(msg)) => {
                let counted = self.resent_oversized(&msg);
                Step::Read { msg, counted }
            }
            Ok(_) => Step::Nothing,
            Err(_) if stopping => Step::Stop,
            Err(e) => {
                let delay = self.backoff.next_delay();
                let was_connected = std::mem::replace(&mut self.connected, false);
                let cause = match e {
                    ConnError::Oversized { size } => self.oversized(size, now),
                    ConnError::TakenOver => Disconnect::TakenOver,
                    e if was_connected => Disconnect::Lost(e),
                    error => Disconnect::CannotConnect {
                        error,
                        attempts: self.backoff.attempts(),
                        log: self.backoff.worth_logging(),
                    },
                };
                Step::Reconnect { delay, cause }
            }
        }
    }

    /// The message is lost (QoS 0) or comes again (QoS 1, and with MQTT 3.1.1 after every
    /// reconnect, for as long as it is not acked). Take it on the next connection, once, so
    /// that it is rejected and acked like any oversized payload: its memory is paid once, and
    /// nothing behind it waits.
    fn oversized(&mut self, size: usize, now: Instant) -> Disconnect {
        self.oversized_counted += 1;
        let limit = size.max(self.packet_limit).min(MAX_REMAINING_LENGTH);
        if limit > self.packet_limit {
            self.packet_limit = limit;
            self.raise_limit = true;
        }
        Disconnect::Oversized {
            size,
            unsaid: self.oversized_logs.event(now),
        }
    }

    /// Whether `msg` is an oversized message resent after it closed the connection (and was
    /// counted then).
    fn resent_oversized(&mut self, msg: &Message) -> bool {
        let again = msg.topic.is_some()
            && msg.dup
            && self.oversized_counted > 0
            && msg.payload.len() > self.max_payload_size;
        if again {
            self.oversized_counted -= 1;
        }
        again
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use rumqttc::QoS;

    use super::*;

    const LIMIT: usize = 1000;
    const MAX_PAYLOAD: usize = 100;

    fn state() -> ConnState {
        let reconnect = BackoffConfig {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(60),
        };
        ConnState::new(reconnect, LIMIT, MAX_PAYLOAD)
    }

    fn connack() -> Result<Event, ConnError> {
        Ok(Event::Connected {
            session_present: false,
            max_packet_size: None,
        })
    }

    fn message(size: usize, dup: bool) -> Result<Event, ConnError> {
        Ok(Event::Message(Message {
            topic: Some("a/b".into()),
            payload: Bytes::from(vec![b'1'; size]),
            qos: QoS::AtLeastOnce,
            pkid: 7,
            dup,
        }))
    }

    fn lost() -> Result<Event, ConnError> {
        Err(ConnError::Other("connection reset".into()))
    }

    #[test]
    fn every_connack_subscribes() {
        let mut s = state();
        let now = Instant::now();
        for _ in 0..2 {
            let step = s.on_event(connack(), false, now);
            assert!(matches!(
                step,
                Step::Subscribe {
                    session_present: false
                }
            ));
            assert!(matches!(
                s.on_event(lost(), false, now),
                Step::Reconnect { .. }
            ));
        }
        let granted = s.on_event(Ok(Event::Subscribed { refused: vec![] }), false, now);
        assert!(matches!(granted, Step::Subscribed));
        let refused = Ok(Event::Subscribed {
            refused: vec!["a/#: not authorized".into()],
        });
        assert!(matches!(s.on_event(refused, false, now), Step::Refused(r) if r.len() == 1));
    }

    #[test]
    fn an_oversized_close_raises_the_limit_of_the_next_connection_once() {
        let mut s = state();
        let now = Instant::now();
        assert_eq!(s.take_raised_limit(), None);
        s.on_event(connack(), false, now);
        let step = s.on_event(Err(ConnError::Oversized { size: 5000 }), false, now);
        let Step::Reconnect {
            cause: Disconnect::Oversized { size, unsaid },
            ..
        } = step
        else {
            panic!("{step:?}")
        };
        assert_eq!((size, unsaid), (5000, Some(0)));
        assert_eq!(s.take_raised_limit(), Some(5000));
        assert_eq!(s.take_raised_limit(), None, "raised once");

        // A smaller one does not lower it; the second log line within the period is held.
        let step = s.on_event(Err(ConnError::Oversized { size: 2000 }), false, now);
        assert!(matches!(
            step,
            Step::Reconnect {
                cause: Disconnect::Oversized { unsaid: None, .. },
                ..
            }
        ));
        assert_eq!(s.take_raised_limit(), None);

        // Never beyond what MQTT can encode.
        s.on_event(Err(ConnError::Oversized { size: usize::MAX }), false, now);
        assert_eq!(s.take_raised_limit(), Some(MAX_REMAINING_LENGTH));
    }

    #[test]
    fn an_oversized_message_resent_with_dup_is_not_counted_twice() {
        let mut s = state();
        let now = Instant::now();
        s.on_event(Err(ConnError::Oversized { size: 5000 }), false, now);
        s.on_event(connack(), false, now);
        let read = |s: &mut ConnState, size, dup| match s.on_event(message(size, dup), false, now) {
            Step::Read { counted, .. } => counted,
            step => panic!("{step:?}"),
        };
        assert!(!read(&mut s, 4900, false), "not a resend");
        assert!(!read(&mut s, 50, true), "small enough to be read");
        assert!(
            read(&mut s, 4900, true),
            "the message that closed the connection"
        );
        assert!(!read(&mut s, 4900, true), "counted once only");
    }

    #[test]
    fn while_stopping_messages_are_skipped_and_errors_stop() {
        let mut s = state();
        let now = Instant::now();
        assert!(matches!(
            s.on_event(message(10, false), true, now),
            Step::Skip
        ));
        assert!(matches!(s.on_event(lost(), true, now), Step::Stop));
        assert!(matches!(
            s.on_event(Ok(Event::Disconnecting), false, now),
            Step::Stop
        ));
        assert!(matches!(
            s.on_event(Ok(Event::Other), false, now),
            Step::Nothing
        ));
    }

    #[test]
    fn a_connection_closed_before_it_is_healthy_keeps_backing_off() {
        let mut s = state();
        let now = Instant::now();
        let attempts = |step| match step {
            Step::Reconnect {
                cause: Disconnect::CannotConnect { attempts, log, .. },
                ..
            } => (attempts, log),
            Step::Reconnect {
                cause: Disconnect::Lost(_),
                ..
            } => (0, true),
            step => panic!("{step:?}"),
        };
        assert_eq!(attempts(s.on_event(lost(), false, now)), (1, true));
        assert_eq!(attempts(s.on_event(lost(), false, now)), (2, false));
        // Up, then closed at once: lost (logged as such), and the delays keep growing
        // rather than starting again from the first step.
        s.on_event(connack(), false, now);
        let Step::Reconnect { delay, cause } = s.on_event(lost(), false, now) else {
            panic!()
        };
        assert!(matches!(cause, Disconnect::Lost(_)));
        assert!(delay >= Duration::from_millis(200), "{delay:?}");
        assert_eq!(attempts(s.on_event(lost(), false, now)), (4, false));
    }
}
