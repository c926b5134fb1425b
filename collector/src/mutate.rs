//! Mutations of valid inputs, for the fuzz-style property tests of every parser (payloads,
//! serial framing, the dashboard API's query strings): bytes flipped, inserted, deleted,
//! repeated, and hostile tokens of the parser's own choosing spliced in.

use proptest::prelude::*;

/// One edit of an input; positions wrap around its length.
#[derive(Debug, Clone)]
pub(crate) enum Edit {
    Flip(usize, u8),
    Insert(usize, u8),
    Delete(usize, usize),
    Repeat(usize, usize, usize),
    /// Splices in the token at this index of the tokens given to [`mutate`].
    Splice(usize, usize),
}

/// One to four edits, splicing from `tokens` tokens.
pub(crate) fn edits(tokens: usize) -> impl Strategy<Value = Vec<Edit>> {
    let edit = prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Flip(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Insert(i, b)),
        (any::<usize>(), 0usize..16).prop_map(|(i, n)| Edit::Delete(i, n)),
        (any::<usize>(), 0usize..32, 1usize..8).prop_map(|(i, n, k)| Edit::Repeat(i, n, k)),
        (any::<usize>(), 0..tokens.max(1)).prop_map(|(i, t)| Edit::Splice(i, t)),
    ];
    proptest::collection::vec(edit, 1..5)
}

/// `seed` with `edits` applied, splicing from `tokens`.
pub(crate) fn mutate(seed: &[u8], edits: &[Edit], tokens: &[&str]) -> Vec<u8> {
    let mut b = seed.to_vec();
    for e in edits {
        let at = |i: usize, len: usize| i % (len + 1);
        match *e {
            Edit::Flip(i, v) if !b.is_empty() => {
                let i = i % b.len();
                b[i] = v;
            }
            Edit::Flip(..) => {}
            Edit::Insert(i, v) => b.insert(at(i, b.len()), v),
            Edit::Delete(i, n) => {
                let i = at(i, b.len());
                let end = (i + n).min(b.len());
                b.drain(i..end);
            }
            Edit::Repeat(i, n, k) => {
                let i = at(i, b.len());
                let end = (i + n).min(b.len());
                let piece = b[i..end].to_vec();
                for _ in 0..k {
                    b.splice(end..end, piece.iter().copied());
                }
            }
            Edit::Splice(i, t) => {
                if let Some(token) = tokens.get(t) {
                    let i = at(i, b.len());
                    b.splice(i..i, token.bytes());
                }
            }
        }
    }
    b
}
