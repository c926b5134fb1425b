//! Line framing with a hard maximum: a device that spews bytes without a line ending never
//! makes the collector buffer more than `max_line_length` bytes.

use crate::config::LineEnding;

const CR: u8 = b'\r';
const LF: u8 = b'\n';

/// What the decoder finds in the bytes it is fed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Frame<'a> {
    /// A complete line, without its ending; never empty.
    Line(&'a [u8]),
    /// A line longer than the maximum: its bytes are discarded up to the next line ending,
    /// and it is reported once.
    TooLong,
}

/// Splits a byte stream into lines. The partial line lives in the decoder, not in a future,
/// so reading it from `select!` is cancel-safe.
#[derive(Debug)]
pub(crate) struct LineDecoder {
    ending: LineEnding,
    max: usize,
    buf: Vec<u8>,
    /// Discarding the rest of a line that was too long.
    discarding: bool,
    /// The last byte seen was a CR (for `crlf`, also while discarding).
    last_cr: bool,
}

impl LineDecoder {
    /// A decoder for lines ended by `ending`, of at most `max` bytes each (a CR before an LF
    /// counts).
    pub(crate) fn new(ending: LineEnding, max: usize) -> LineDecoder {
        LineDecoder {
            ending,
            max: max.max(1),
            buf: Vec::new(),
            discarding: false,
            last_cr: false,
        }
    }

    /// Feeds `data`, calling `on` for every complete line and every overflow, in order.
    pub(crate) fn feed(&mut self, mut data: &[u8], mut on: impl FnMut(Frame<'_>)) {
        while !data.is_empty() {
            let end = match self.ending {
                LineEnding::Any => data.iter().position(|b| *b == CR || *b == LF),
                LineEnding::Lf | LineEnding::Crlf => data.iter().position(|b| *b == LF),
                LineEnding::Cr => data.iter().position(|b| *b == CR),
            };
            let Some(i) = end else {
                self.take(data, &mut on);
                return;
            };
            self.take(&data[..i], &mut on);
            let terminator = data[i];
            data = &data[i + 1..];
            match self.ending {
                LineEnding::Crlf if !self.last_cr => {
                    // A lone LF is part of the line.
                    self.take(&[terminator], &mut on);
                }
                LineEnding::Lf | LineEnding::Crlf => {
                    if self.buf.last() == Some(&CR) {
                        self.buf.pop();
                    }
                    self.end_line(&mut on);
                }
                LineEnding::Any | LineEnding::Cr => self.end_line(&mut on),
            }
            self.last_cr = terminator == CR;
        }
    }

    /// Drops the partial line (the port went away). Returns whether there was one.
    pub(crate) fn reset(&mut self) -> bool {
        let partial = !self.discarding && !self.buf.is_empty();
        self.buf.clear();
        self.discarding = false;
        self.last_cr = false;
        partial
    }

    /// Bytes held for the current partial line.
    #[cfg(test)]
    pub(crate) fn buffered(&self) -> usize {
        self.buf.len()
    }

    fn take(&mut self, bytes: &[u8], on: &mut impl FnMut(Frame<'_>)) {
        let Some(last) = bytes.last() else {
            return;
        };
        self.last_cr = *last == CR;
        if self.discarding {
            return;
        }
        if self.buf.len() + bytes.len() > self.max {
            self.buf.clear();
            self.discarding = true;
            on(Frame::TooLong);
            return;
        }
        self.buf.extend_from_slice(bytes);
    }

    fn end_line(&mut self, on: &mut impl FnMut(Frame<'_>)) {
        if self.discarding {
            self.discarding = false;
        } else if !self.buf.is_empty() {
            on(Frame::Line(&self.buf));
        }
        self.buf.clear();
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, PartialEq)]
    enum Owned {
        Line(Vec<u8>),
        TooLong,
    }

    fn frames(ending: LineEnding, max: usize, chunks: &[&[u8]]) -> Vec<Owned> {
        let mut d = LineDecoder::new(ending, max);
        let mut out = Vec::new();
        for c in chunks {
            d.feed(c, |f| {
                out.push(match f {
                    Frame::Line(l) => Owned::Line(l.to_vec()),
                    Frame::TooLong => Owned::TooLong,
                })
            });
        }
        out
    }

    fn lines(v: &[&str]) -> Vec<Owned> {
        v.iter()
            .map(|l| Owned::Line(l.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn each_line_ending() {
        let input: &[&[u8]] = &[b"a\r\nb\nc\rd\r", b"\ne\n\n"];
        assert_eq!(
            frames(LineEnding::Any, 64, input),
            lines(&["a", "b", "c", "d", "e"])
        );
        assert_eq!(
            frames(LineEnding::Lf, 64, input),
            lines(&["a", "b", "c\rd", "e"])
        );
        assert_eq!(
            frames(LineEnding::Cr, 64, input),
            lines(&["a", "\nb\nc", "d", "\ne\n\n"][..3])
        );
        assert_eq!(
            frames(LineEnding::Crlf, 64, input),
            lines(&["a", "b\nc\rd"])
        );
    }

    #[test]
    fn an_overlong_line_is_reported_once_and_its_neighbours_survive() {
        let long = [b'x'; 100];
        let got = frames(
            LineEnding::Any,
            10,
            &[b"ok1\n", &long[..50], &long[50..], b"tail\nok2\n"],
        );
        assert_eq!(
            got,
            vec![
                Owned::Line(b"ok1".to_vec()),
                Owned::TooLong,
                Owned::Line(b"ok2".to_vec())
            ]
        );
        // Exactly the maximum fits.
        assert_eq!(frames(LineEnding::Lf, 3, &[b"abc\n"]), lines(&["abc"]));
        // crlf: the CR that ends an overlong line is still seen while discarding.
        let got = frames(LineEnding::Crlf, 4, &[b"abcdefgh\r", b"\nok\r\n"]);
        assert_eq!(got, vec![Owned::TooLong, Owned::Line(b"ok".to_vec())]);
    }

    #[test]
    fn reset_reports_a_partial_line() {
        let mut d = LineDecoder::new(LineEnding::Any, 16);
        d.feed(b"whole\npart", |_| {});
        assert_eq!(d.buffered(), 4);
        assert!(d.reset());
        assert!(!d.reset());
        let mut got = Vec::new();
        d.feed(b"ial\n", |f| got.push(format!("{f:?}")));
        assert_eq!(got, vec![format!("{:?}", Frame::Line(b"ial"))]);
    }

    fn any_ending() -> impl Strategy<Value = LineEnding> {
        prop_oneof![
            Just(LineEnding::Lf),
            Just(LineEnding::Cr),
            Just(LineEnding::Crlf),
            Just(LineEnding::Any)
        ]
    }

    proptest! {
        /// Random bytes cut at random places: no panic, never more than `max` bytes held,
        /// no line longer than `max`, and the same frames however the bytes were cut.
        #[test]
        fn random_bytes_are_framed_within_bounds(
            data in proptest::collection::vec(
                prop_oneof![4 => any::<u8>(), 1 => Just(b'\n'), 1 => Just(b'\r')], 0..2048),
            cuts in proptest::collection::vec(0usize..2048, 0..16),
            max in 1usize..64,
            ending in any_ending(),
        ) {
            let mut d = LineDecoder::new(ending, max);
            let mut chunked = Vec::new();
            let mut cuts = cuts;
            cuts.push(data.len());
            cuts.sort_unstable();
            let mut from = 0;
            for c in cuts {
                let c = c.min(data.len());
                if c < from { continue; }
                d.feed(&data[from..c], |f| {
                    if let Frame::Line(l) = f {
                        assert!(!l.is_empty() && l.len() <= max);
                        chunked.push(Owned::Line(l.to_vec()));
                    } else {
                        chunked.push(Owned::TooLong);
                    }
                });
                prop_assert!(d.buffered() <= max);
                prop_assert!(d.buf.capacity() <= max.max(8) * 2);
                from = c;
            }
            prop_assert_eq!(chunked, frames(ending, max, &[&data]));
        }
    }

    /// What a hostile or broken device splices into its lines.
    const TOKENS: &[&str] = &[
        "\r", "\n", "\r\n", "\n\r", "\0", "\u{fffd}", "\x1b[2J", "\u{ff}",
    ];

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

        /// Mutations of a valid stream of lines: no panic, no line longer than `max`, no
        /// more frames than line endings (and one overflow of an unfinished line), no more
        /// bytes out than in, and never more than `max` bytes held.
        #[test]
        fn mutated_streams_are_framed_within_bounds(
            lines in proptest::collection::vec("[ -~]{0,40}", 1..16),
            edits in crate::mutate::edits(TOKENS.len()),
            max in 1usize..64,
            ending in any_ending(),
        ) {
            let end = match ending {
                LineEnding::Lf | LineEnding::Any => "\n",
                LineEnding::Cr => "\r",
                LineEnding::Crlf => "\r\n",
            };
            let stream = lines.join(end) + end;
            let data = crate::mutate::mutate(stream.as_bytes(), &edits, TOKENS);
            let mut d = LineDecoder::new(ending, max);
            let (mut frames, mut bytes) = (0usize, 0usize);
            let mut too_long_line = false;
            d.feed(&data, |f| {
                frames += 1;
                match f {
                    Frame::Line(l) => {
                        too_long_line |= l.is_empty() || l.len() > max;
                        bytes += l.len();
                    }
                    Frame::TooLong => {}
                }
            });
            prop_assert!(!too_long_line);
            let endings = data.iter().filter(|b| matches!(**b, b'\n' | b'\r')).count();
            prop_assert!(frames <= endings + 1, "{frames} frames, {endings} endings");
            prop_assert!(bytes <= data.len());
            prop_assert!(d.buffered() <= max);
        }
    }
}
