//! The two blobs of the local store: a chunk (points of one series, in time order) and a
//! batch (the points of one insert, in the order they were written, for `recent`).
//!
//! A batch writes each value as [`FieldValue::encode`] does (a kind byte, then floats as
//! their 8 bytes, integers as varints, strings length-prefixed): it is written once and read
//! at the next compaction.
//!
//! A chunk is written in one of the [`Codec`]s, which its row records (`chunks.codec`):
//!
//! ```text
//! Version2 (0)  = per point: timestamp value           (schema version 2; upgraded on open)
//!                 timestamp = zigzag varint: the first one whole, then delta-of-deltas
//! Columns  (1)  = timestamps kinds [floats] [integers] [booleans] [strings]
//! Deflated (2)  = varint(length of the Columns body) deflate(Columns body)   (read only)
//! Zstd     (3)  = varint(length of the Columns body) zstd frame(Columns body)
//!
//! timestamps = zigzag varint of the first, then of each delta-of-delta (0 at a steady rate)
//! kinds      = (kind byte, varint run length)* covering every point
//! floats     = 0, then each float's 8 bytes (little-endian)
//!            | 1, e (0..=15), then zigzag varints of the deltas of m = v * 10^e, where every
//!              float of the chunk is exactly m / 10^e (decimal scaling: 21.37 is 2137)
//! integers   = zigzag varints of the (wrapping) deltas of the integers and unsigned
//!              integers, as i64, in point order
//! booleans   = one bit per boolean, least significant first
//! strings    = varint(len) bytes, for each string
//! ```
//!
//! A column holds the values of its kinds in point order; one that no point uses is left
//! out. [`ChunkWriter`] compresses full chunks with zstd when that saves a quarter or more
//! (not a series' last, short chunk, which is rewritten when it fills; not floats of full
//! precision, where compressing saves a fifth and costs several times the decoding). Chunks
//! that earlier builds deflated keep their codec and are read as they were. Decimal scaling holds only when it round-trips bit for bit: a
//! chunk with one float that does not (NaN, -0.0, full precision) stores its floats whole.
//! How these were chosen, and what else was measured, is in BENCHMARKS.md ("The local
//! store's footprint"); `measure.rs` reproduces the figures.

use std::cell::RefCell;

#[cfg(test)]
use flate2::{Compress, Compression, FlushCompress};
use flate2::{Decompress, FlushDecompress, Status};

use crate::reading::{
    get_varint, put_varint, unzigzag, zigzag, CompactString, DecodeError, FieldKind, FieldValue,
};

use super::StoreError;

#[cfg(test)]
mod footprint;
#[cfg(test)]
mod measure;

/// A chunk holds at most this many points. A compaction writes a series' new points as a
/// small chunk, and merges its small chunks into full ones once they hold this many: larger
/// means more small rows per series meanwhile; smaller, more rows per day of data.
pub(super) const CHUNK_POINTS: usize = 512;

/// A chunk is closed once its points take this many bytes as [`FieldValue::encode`] writes
/// them (long strings), whatever its number of points.
pub(super) const CHUNK_BYTES: usize = 16 * 1024;

/// The largest `Columns` body a reader inflates: a chunk is closed once it reaches
/// [`CHUNK_BYTES`], so only a single huge string makes one larger. A damaged length never
/// allocates more than this.
const MAX_BODY: usize = 16 << 20;

/// The largest decimal exponent of a scaled float column: 10^15 and below are exact in f64.
const MAX_EXPONENT: usize = 15;

/// Powers of ten, exact in f64.
const POW10: [f64; MAX_EXPONENT + 1] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
];

/// The largest integer below which every i64 is exactly an f64.
const EXACT_INT: f64 = 9_007_199_254_740_992.0;

/// The deflate level, on flate2's zlib-rs backend, of [`Codec::Deflated`] chunks (which
/// this build writes only in tests: stores written before codec 3 hold them).
#[cfg(test)]
const DEFLATE_LEVEL: u32 = 2;

/// The zstd level of [`Codec::Zstd`] chunks: 1. Higher levels gain nothing on these bodies
/// (see `measure.rs`: level 3 takes the same bytes).
const ZSTD_LEVEL: i32 = 1;

/// How a chunk's blob is encoded; kept in its row (`chunks.codec`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Codec {
    /// As schema version 2 wrote every chunk: per point, its timestamp and its value as
    /// [`FieldValue::encode`] writes it. Read while a store is being upgraded; never written.
    Version2 = 0,
    /// Columns: see the module documentation.
    Columns = 1,
    /// The `Columns` body, deflated: written by the builds before codec 3; read.
    Deflated = 2,
    /// The `Columns` body, compressed by zstd: what full chunks are written in.
    Zstd = 3,
}

impl Codec {
    /// The codec of a row's number, or an error for one this build does not know.
    pub(super) fn from_i64(v: i64) -> Result<Codec, StoreError> {
        match v {
            0 => Ok(Codec::Version2),
            1 => Ok(Codec::Columns),
            2 => Ok(Codec::Deflated),
            3 => Ok(Codec::Zstd),
            other => Err(StoreError::Corrupt(format!(
                "a chunk has codec {other}, which this build does not know"
            ))),
        }
    }

    /// The number its row holds.
    pub(super) fn as_i64(self) -> i64 {
        self as i64
    }
}

/// Reading a blob failed: the store holds bytes this build did not write.
fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("{what} is not a valid encoding"))
}

impl From<DecodeError> for StoreError {
    fn from(_: DecodeError) -> StoreError {
        corrupt("a point")
    }
}

/// A finished chunk, as its row holds it.
pub(super) struct Chunk {
    pub(super) first_ts: i64,
    pub(super) last_ts: i64,
    pub(super) points: usize,
    pub(super) codec: Codec,
    pub(super) data: Vec<u8>,
    /// Its points' size as [`FieldValue::encode`] writes them (what [`CHUNK_BYTES`] bounds).
    pub(super) raw_bytes: usize,
}

/// Writes points of one series (strictly increasing timestamps) into chunks of at most
/// [`CHUNK_POINTS`] points and about [`CHUNK_BYTES`] bytes.
#[derive(Default)]
pub(super) struct ChunkWriter {
    /// The points of the chunk being filled: timestamps, and values as
    /// [`FieldValue::encode`] writes them.
    ts: Vec<i64>,
    raw: Vec<u8>,
    /// The next chunk's blob (a recycled one).
    out: Vec<u8>,
    columns: Columns,
    zstd: Option<zstd::bulk::Compressor<'static>>,
    /// Compress the last chunk too ([`ChunkWriter::finish`]): for a store that is settling.
    pub(super) deflate_last: bool,
    /// What full chunks are compressed with, instead of [`Codec::Zstd`]: `Columns` (not
    /// compressed) or `Deflated` (as the builds before codec 3 wrote them), for the tests
    /// and the measurements.
    #[cfg(test)]
    pub(super) pack: Option<Codec>,
    #[cfg(test)]
    deflate: Option<Compress>,
}

/// The values of a chunk by column, reused from one chunk to the next.
#[derive(Default)]
struct Columns {
    body: Vec<u8>,
    floats: Vec<f64>,
    ints: Vec<i64>,
    bools: Vec<bool>,
    strings: Vec<u8>,
}

impl ChunkWriter {
    /// Adds a point after the ones already added; returns the chunk it closed, if any.
    pub(super) fn push(&mut self, ts: i64, value: &FieldValue) -> Option<Chunk> {
        self.ts.push(ts);
        value.encode(&mut self.raw);
        self.close_if_full()
    }

    /// As [`ChunkWriter::push`], with the value as [`FieldValue::encode`] wrote it (checked
    /// by [`value_len`] when it was read): a copy, not a decode and encode again.
    pub(super) fn push_raw(&mut self, ts: i64, value: &[u8]) -> Option<Chunk> {
        self.ts.push(ts);
        self.raw.extend_from_slice(value);
        self.close_if_full()
    }

    /// Gives back the blob of a chunk that was written, for the next chunk, so that a
    /// compaction does not allocate (and grow) one for every chunk.
    pub(super) fn recycle(&mut self, data: Vec<u8>) {
        if data.capacity() > self.out.capacity() {
            self.out = data;
        }
    }

    fn close_if_full(&mut self) -> Option<Chunk> {
        is_full(self.ts.len(), self.raw.len()).then(|| self.take(true))
    }

    /// The chunk of the points added since the last one closed, if there are any. It is not
    /// full, so it is not deflated (unless `deflate_last`): a series' last chunk is merged
    /// into a full one later (see [`is_full`]), and deflating it each time would cost a
    /// compaction more than its few points save.
    pub(super) fn finish(&mut self) -> Option<Chunk> {
        (!self.ts.is_empty()).then(|| self.take(self.deflate_last))
    }

    fn take(&mut self, full: bool) -> Chunk {
        let (first_ts, last_ts) = (self.ts[0], self.ts[self.ts.len() - 1]);
        let mut data = std::mem::take(&mut self.out);
        data.clear();
        let codec = match self.columns.encode(&self.ts, &self.raw) {
            Ok(()) => {
                let body = &self.columns.body;
                #[cfg(test)]
                let pack = self.pack.unwrap_or(Codec::Zstd);
                #[cfg(not(test))]
                let pack = Codec::Zstd;
                let packed = full
                    && match pack {
                        Codec::Zstd => zstd_into(&mut self.zstd, body, &mut data),
                        #[cfg(test)]
                        Codec::Deflated => deflate_into(&mut self.deflate, body, &mut data),
                        _ => false,
                    };
                if packed {
                    pack
                } else {
                    data.clear();
                    data.extend_from_slice(body);
                    Codec::Columns
                }
            }
            // Values that are not what `FieldValue::encode` writes never reach a writer (they
            // are checked when read); should one, the chunk keeps them as version 2 did,
            // and its reader reports them.
            Err(DecodeError) => {
                write_version2(&self.ts, &self.raw, &mut data);
                Codec::Version2
            }
        };
        let chunk = Chunk {
            first_ts,
            last_ts,
            points: self.ts.len(),
            codec,
            data,
            raw_bytes: self.raw.len(),
        };
        self.ts.clear();
        self.raw.clear();
        chunk
    }
}

/// Compresses `body` into `out` (empty) as [`Codec::Zstd`]; false when that does not pay
/// (saves less than a quarter of `body`: floats of full precision, which a compressor
/// shrinks by a fifth and makes several times slower to read) or fails.
fn zstd_into(
    zstd: &mut Option<zstd::bulk::Compressor<'static>>,
    body: &[u8],
    out: &mut Vec<u8>,
) -> bool {
    // Below this, the frame's header costs more than it saves.
    if body.len() < 24 {
        return false;
    }
    put_varint(out, body.len() as u64);
    let start = out.len();
    let limit = start + body.len() - body.len() / 4;
    if zstd.is_none() {
        // Creating a context fails only without memory; the chunk then stays `Columns`.
        *zstd = zstd::bulk::Compressor::new(ZSTD_LEVEL).ok();
    }
    let Some(compressor) = zstd.as_mut() else {
        return false;
    };
    // zstd writes after the header, into room for the frame's bound: it never stops short.
    out.reserve(zstd::zstd_safe::compress_bound(body.len()));
    let mut frame = std::io::Cursor::new(&mut *out);
    frame.set_position(start as u64);
    compressor.compress_to_buffer(body, &mut frame).is_ok() && out.len() < limit
}

/// Deflates `body` into `out` (empty) as [`Codec::Deflated`], as the builds before codec 3
/// did; false when that does not save a quarter.
#[cfg(test)]
fn deflate_into(deflate: &mut Option<Compress>, body: &[u8], out: &mut Vec<u8>) -> bool {
    // Below this, deflate's own framing costs more than it saves.
    if body.len() < 24 {
        return false;
    }
    put_varint(out, body.len() as u64);
    let limit = out.len() + body.len() - body.len() / 4;
    // Room for the whole stream, whatever it takes (deflate's bound: stored blocks add 5
    // bytes per 64 KiB): zlib-rs 0.6 panics when a stream it is finishing does not fit
    // ("buf.len() must fit in remaining()", seen on full-precision floats), and may end an
    // invalid stream with `Ok` in a buffer just too short (its issue 455).
    out.reserve(body.len() + body.len() / 64 + 64);
    let compress =
        deflate.get_or_insert_with(|| Compress::new(Compression::new(DEFLATE_LEVEL), false));
    compress.reset();
    matches!(
        compress.compress_vec(body, out, FlushCompress::Finish),
        Ok(Status::StreamEnd)
    ) && out.len() < limit
}

/// Whether a chunk of `points` points taking `raw_bytes` bytes (as [`FieldValue::encode`]
/// writes them) is full: [`ChunkWriter`] closes chunks at that size, and a compaction
/// leaves them as they are.
pub(super) fn is_full(points: usize, raw_bytes: usize) -> bool {
    points >= CHUNK_POINTS || raw_bytes >= CHUNK_BYTES
}

/// Writes points as [`Codec::Version2`] does.
fn write_version2(ts: &[i64], raw: &[u8], out: &mut Vec<u8>) {
    let mut timestamps = Timestamps::default();
    let mut rest = raw;
    for &t in ts {
        timestamps.put(t, out);
        let n = value_len(rest).unwrap_or(rest.len());
        let (value, after) = rest.split_at(n);
        out.extend_from_slice(value);
        rest = after;
    }
    out.extend_from_slice(rest);
}

/// [`write_version2`], for the tests that make stores as version 2 did.
#[cfg(test)]
pub(super) fn write_version2_for_tests(ts: &[i64], raw: &[u8], out: &mut Vec<u8>) {
    write_version2(ts, raw, out);
}

/// Delta-of-delta timestamps, as both codecs write them.
#[derive(Default)]
struct Timestamps {
    started: bool,
    prev: i64,
    prev_delta: i64,
}

impl Timestamps {
    fn put(&mut self, ts: i64, out: &mut Vec<u8>) {
        if self.started {
            let delta = ts.wrapping_sub(self.prev);
            put_varint(out, zigzag(delta.wrapping_sub(self.prev_delta)));
            self.prev_delta = delta;
        } else {
            self.started = true;
            put_varint(out, zigzag(ts));
        }
        self.prev = ts;
    }

    /// The next timestamp; an error when time does not go forward.
    fn get(&mut self, buf: &mut &[u8]) -> Result<i64, StoreError> {
        let v = unzigzag(get_varint(buf)?);
        let ts = if self.started {
            let delta = v.wrapping_add(self.prev_delta);
            let ts = self.prev.wrapping_add(delta);
            if ts <= self.prev {
                return Err(corrupt("a chunk (time does not go forward)"));
            }
            self.prev_delta = delta;
            ts
        } else {
            self.started = true;
            v
        };
        self.prev = ts;
        Ok(ts)
    }
}

/// The smallest decimal exponent `e` for which `v` is exactly `m / 10^e` with `m` an integer
/// that an f64 holds exactly, if there is one (never for NaN, infinities, -0.0).
fn decimal_exponent(v: f64, from: usize) -> Option<usize> {
    (from..=MAX_EXPONENT).find(|&e| scaled(v, e).is_some())
}

/// `m` with `v == m / 10^e` bit for bit, if there is one.
fn scaled(v: f64, e: usize) -> Option<i64> {
    let m = (v * POW10[e]).round();
    if m.is_nan() || m.abs() >= EXACT_INT {
        return None;
    }
    // Through the integer, as the reader computes it: -0.0 becomes 0 and fails here.
    let m = m as i64;
    ((m as f64 / POW10[e]).to_bits() == v.to_bits()).then_some(m)
}

impl Columns {
    /// Encodes the points (`raw`: values as [`FieldValue::encode`] writes them) into
    /// `self.body`.
    fn encode(&mut self, ts: &[i64], raw: &[u8]) -> Result<(), DecodeError> {
        let Columns {
            body,
            floats,
            ints,
            bools,
            strings,
        } = self;
        body.clear();
        floats.clear();
        ints.clear();
        bools.clear();
        strings.clear();
        let mut timestamps = Timestamps::default();
        for &t in ts {
            timestamps.put(t, body);
        }
        let mut rest = raw;
        let mut run: Option<(u8, u64)> = None;
        for _ in ts {
            let (&kind, after) = rest.split_first().ok_or(DecodeError)?;
            rest = after;
            match FieldKind::from_u8(kind).ok_or(DecodeError)? {
                FieldKind::Float => {
                    let (bytes, after) = rest.split_first_chunk::<8>().ok_or(DecodeError)?;
                    floats.push(f64::from_le_bytes(*bytes));
                    rest = after;
                }
                FieldKind::Integer => ints.push(unzigzag(get_varint(&mut rest)?)),
                FieldKind::Unsigned => ints.push(get_varint(&mut rest)?.cast_signed()),
                FieldKind::Boolean => {
                    let (&b, after) = rest.split_first().ok_or(DecodeError)?;
                    bools.push(b != 0);
                    rest = after;
                }
                FieldKind::String => {
                    let before = rest;
                    let n = usize::try_from(get_varint(&mut rest)?).map_err(|_| DecodeError)?;
                    let s = rest.get(..n).ok_or(DecodeError)?;
                    std::str::from_utf8(s).map_err(|_| DecodeError)?;
                    rest = &rest[n..];
                    strings.extend_from_slice(&before[..before.len() - rest.len()]);
                }
            }
            run = match run {
                Some((k, n)) if k == kind => Some((k, n + 1)),
                Some((k, n)) => {
                    body.push(k);
                    put_varint(body, n);
                    Some((kind, 1))
                }
                None => Some((kind, 1)),
            };
        }
        if !rest.is_empty() {
            return Err(DecodeError);
        }
        if let Some((k, n)) = run {
            body.push(k);
            put_varint(body, n);
        }
        if !floats.is_empty() {
            put_floats(floats, body);
        }
        let mut prev = 0i64;
        for &v in ints.iter() {
            put_varint(body, zigzag(v.wrapping_sub(prev)));
            prev = v;
        }
        for byte in bools.chunks(8) {
            body.push(
                byte.iter()
                    .enumerate()
                    .fold(0u8, |acc, (i, &b)| acc | (u8::from(b) << i)),
            );
        }
        body.extend_from_slice(strings);
        Ok(())
    }
}

/// Writes the float column: scaled to integers when every float allows it, else whole.
fn put_floats(floats: &[f64], body: &mut Vec<u8>) {
    // The exponent that every float needs: the largest of each one's smallest.
    let mut exponent = Some(0);
    for &v in floats {
        exponent = exponent.and_then(|e| {
            if scaled(v, e).is_some() {
                Some(e)
            } else {
                decimal_exponent(v, e + 1)
            }
        });
        if exponent.is_none() {
            break;
        }
    }
    let start = body.len();
    if let Some(e) = exponent {
        body.push(1);
        body.push(e as u8);
        let mut prev = 0i64;
        // A float whose smallest exponent is below `e` is, scaled by `e`, the same real
        // quotient, so it rounds to the same f64; checked all the same.
        for &v in floats {
            let Some(m) = scaled(v, e) else {
                body.truncate(start);
                break;
            };
            put_varint(body, zigzag(m.wrapping_sub(prev)));
            prev = m;
        }
        if body.len() > start {
            return;
        }
    }
    body.push(0);
    for &v in floats {
        body.extend_from_slice(&v.to_le_bytes());
    }
}

thread_local! {
    /// One inflater per thread, reset for each chunk (creating one costs more than
    /// inflating a chunk).
    static INFLATE: RefCell<Option<Decompress>> = const { RefCell::new(None) };
    /// One zstd context per thread, for the same reason.
    static UNZSTD: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

/// The length of a compressed chunk's body (its header), and the rest of `data`.
fn body_len<'a>(data: &'a [u8], what: &str) -> Result<(usize, &'a [u8]), StoreError> {
    let mut rest = data;
    match usize::try_from(get_varint(&mut rest)?) {
        Ok(len) if len <= MAX_BODY => Ok((len, rest)),
        _ => Err(corrupt(what)),
    }
}

/// Decompresses a [`Codec::Zstd`] blob into `out` (cleared first).
fn unzstd(data: &[u8], out: &mut Vec<u8>) -> Result<(), StoreError> {
    let what = "a chunk (zstd)";
    let (len, rest) = body_len(data, what)?;
    out.clear();
    out.reserve_exact(len);
    UNZSTD.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.is_none() {
            *cell = Some(
                zstd::bulk::Decompressor::new()
                    .map_err(|e| StoreError::Corrupt(format!("{what} could not be read: {e}")))?,
            );
        }
        let Some(d) = cell.as_mut() else {
            return Err(corrupt(what));
        };
        // `out` has room for `len` bytes (perhaps more): a frame that says more, or less,
        // is damaged.
        match d.decompress_to_buffer(rest, out) {
            Ok(n) if n == len && out.len() == len => Ok(()),
            _ => Err(corrupt(what)),
        }
    })
}

/// Inflates a [`Codec::Deflated`] blob into `out` (cleared first).
fn inflate(data: &[u8], out: &mut Vec<u8>) -> Result<(), StoreError> {
    let bad = || corrupt("a chunk (deflate)");
    let (len, rest) = body_len(data, "a chunk (deflate)")?;
    out.clear();
    out.reserve_exact(len);
    INFLATE.with(|cell| {
        let mut cell = cell.borrow_mut();
        let inflater = cell.get_or_insert_with(|| Decompress::new(false));
        inflater.reset(false);
        // `out` has room for exactly `len` bytes: a stream that says more is damaged.
        match inflater.decompress_vec(rest, out, FlushDecompress::Finish) {
            Ok(Status::StreamEnd) if out.len() == len => Ok(()),
            _ => Err(bad()),
        }
    })
}

/// The points of a chunk, decoded, in time order.
///
/// # Errors
/// [`StoreError::Corrupt`] for bytes that are not a chunk of `points` points in `codec`: a
/// count that does not match, timestamps that do not increase, bytes left over.
pub(super) fn decode(
    codec: Codec,
    data: &[u8],
    points: i64,
    out: &mut Vec<(i64, FieldValue)>,
) -> Result<(), StoreError> {
    let n = usize::try_from(points).map_err(|_| corrupt("a chunk (point count)"))?;
    out.clear();
    match codec {
        Codec::Version2 => decode_version2(data, n, out),
        Codec::Columns => decode_columns(data, n, out),
        Codec::Deflated => BODY.with(|cell| {
            let mut body = cell.borrow_mut();
            inflate(data, &mut body)?;
            decode_columns(&body, n, out)
        }),
        Codec::Zstd => BODY.with(|cell| {
            let mut body = cell.borrow_mut();
            unzstd(data, &mut body)?;
            decode_columns(&body, n, out)
        }),
    }
}

thread_local! {
    /// The inflated body of the chunk being decoded, reused.
    static BODY: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

fn decode_version2(
    mut buf: &[u8],
    n: usize,
    out: &mut Vec<(i64, FieldValue)>,
) -> Result<(), StoreError> {
    let mut timestamps = Timestamps::default();
    for _ in 0..n {
        if buf.is_empty() {
            return Err(corrupt("a chunk (points missing)"));
        }
        let ts = timestamps.get(&mut buf)?;
        out.push((ts, FieldValue::decode(&mut buf)?));
    }
    if !buf.is_empty() {
        return Err(corrupt("a chunk (bytes left over)"));
    }
    Ok(())
}

fn decode_columns(
    mut buf: &[u8],
    n: usize,
    out: &mut Vec<(i64, FieldValue)>,
) -> Result<(), StoreError> {
    let bad = |what: &str| corrupt(&format!("a chunk ({what})"));
    // No more points than the bytes could hold: a damaged count never allocates.
    if n > buf.len() {
        return Err(bad("points missing"));
    }
    out.reserve(n);
    let mut timestamps = Timestamps::default();
    for _ in 0..n {
        // A placeholder value, replaced below: the timestamps come first.
        out.push((timestamps.get(&mut buf)?, FieldValue::Boolean(false)));
    }
    // Kind runs: the kind of each point, and how many of each kind.
    let mut runs: Vec<(FieldKind, usize)> = Vec::new();
    let (mut floats, mut ints, mut bools) = (0usize, 0usize, 0usize);
    let mut covered = 0usize;
    while covered < n {
        let (&k, rest) = buf.split_first().ok_or_else(|| bad("kinds"))?;
        buf = rest;
        let kind = FieldKind::from_u8(k).ok_or_else(|| bad("kind"))?;
        let len = usize::try_from(get_varint(&mut buf)?).map_err(|_| bad("kinds"))?;
        if len == 0 || len > n - covered {
            return Err(bad("kinds"));
        }
        covered += len;
        match kind {
            FieldKind::Float => floats += len,
            FieldKind::Integer | FieldKind::Unsigned => ints += len,
            FieldKind::Boolean => bools += len,
            FieldKind::String => {}
        }
        runs.push((kind, len));
    }
    let floats = get_floats(&mut buf, floats)?;
    let mut ints_col = Vec::with_capacity(ints);
    let mut prev = 0i64;
    for _ in 0..ints {
        prev = prev.wrapping_add(unzigzag(get_varint(&mut buf)?));
        ints_col.push(prev);
    }
    let bool_col = buf
        .get(..bools.div_ceil(8))
        .ok_or_else(|| bad("booleans"))?;
    let mut strings = &buf[bool_col.len()..];
    let (mut f, mut i, mut b) = (floats.into_iter(), ints_col.into_iter(), 0usize);
    let mut points = out.iter_mut();
    for &(kind, len) in &runs {
        for point in points.by_ref().take(len) {
            point.1 = match kind {
                FieldKind::Float => FieldValue::Float(f.next().ok_or_else(|| bad("floats"))?),
                FieldKind::Integer => FieldValue::Integer(i.next().ok_or_else(|| bad("integers"))?),
                FieldKind::Unsigned => {
                    FieldValue::Unsigned(i.next().ok_or_else(|| bad("integers"))?.cast_unsigned())
                }
                FieldKind::Boolean => {
                    let bit = bool_col[b / 8] >> (b % 8) & 1;
                    b += 1;
                    FieldValue::Boolean(bit != 0)
                }
                FieldKind::String => {
                    let len =
                        usize::try_from(get_varint(&mut strings)?).map_err(|_| bad("strings"))?;
                    let s = strings.get(..len).ok_or_else(|| bad("strings"))?;
                    strings = &strings[len..];
                    FieldValue::String(CompactString::from_utf8(s).map_err(|_| bad("strings"))?)
                }
            };
        }
    }
    if !strings.is_empty() {
        return Err(bad("bytes left over"));
    }
    Ok(())
}

/// Reads the float column of `count` floats.
fn get_floats(buf: &mut &[u8], count: usize) -> Result<Vec<f64>, StoreError> {
    let bad = || corrupt("a chunk (floats)");
    let mut out = Vec::with_capacity(count);
    if count == 0 {
        return Ok(out);
    }
    let (&mode, rest) = buf.split_first().ok_or_else(bad)?;
    *buf = rest;
    match mode {
        0 => {
            let bytes = buf.get(..count * 8).ok_or_else(bad)?;
            out.extend(
                bytes
                    .chunks_exact(8)
                    .map(|b| f64::from_le_bytes(b.try_into().unwrap_or_default())),
            );
            *buf = &buf[count * 8..];
        }
        1 => {
            let (&e, rest) = buf.split_first().ok_or_else(bad)?;
            *buf = rest;
            let scale = *POW10.get(usize::from(e)).ok_or_else(bad)?;
            let mut m = 0i64;
            for _ in 0..count {
                m = m.wrapping_add(unzigzag(get_varint(buf)?));
                // What the writer checked: |m| < 2^53, so `m as f64` is exact.
                out.push(m as f64 / scale);
            }
        }
        _ => return Err(bad()),
    }
    Ok(out)
}
/// How many bytes the value that [`FieldValue::encode`] wrote at the front of `buf` takes,
/// with the checks [`FieldValue::decode`] makes (a known kind, every byte there, strings in
/// UTF-8), without building the value.
pub(super) fn value_len(buf: &[u8]) -> Result<usize, DecodeError> {
    let (&kind, rest) = buf.split_first().ok_or(DecodeError)?;
    let len = match FieldKind::from_u8(kind).ok_or(DecodeError)? {
        FieldKind::Float => 8,
        FieldKind::Boolean => 1,
        FieldKind::Integer | FieldKind::Unsigned => {
            let mut after = rest;
            get_varint(&mut after)?;
            rest.len() - after.len()
        }
        FieldKind::String => {
            let mut after = rest;
            let n = usize::try_from(get_varint(&mut after)?).map_err(|_| DecodeError)?;
            let s = after.get(..n).ok_or(DecodeError)?;
            std::str::from_utf8(s).map_err(|_| DecodeError)?;
            rest.len() - after.len() + n
        }
    };
    if len > rest.len() {
        return Err(DecodeError);
    }
    Ok(1 + len)
}

/// The value at the front of `buf` as [`FieldValue::encode`] wrote it (see [`value_len`]),
/// and `buf` advanced past it.
pub(super) fn take_value<'a>(buf: &mut &'a [u8]) -> Result<&'a [u8], DecodeError> {
    let (value, rest) = buf.split_at(value_len(buf)?);
    *buf = rest;
    Ok(value)
}

/// Appends a point of series `series_id` to a batch.
pub(super) fn put_batch_point(buf: &mut Vec<u8>, series_id: i64, ts: i64, value: &FieldValue) {
    put_varint(buf, series_id.cast_unsigned());
    put_varint(buf, zigzag(ts));
    value.encode(buf);
}

/// The points of a batch, in the order they were written: `(series_id, ts, value)`.
pub(super) struct BatchReader<'a> {
    buf: &'a [u8],
}

impl<'a> BatchReader<'a> {
    pub(super) fn new(data: &'a [u8]) -> BatchReader<'a> {
        BatchReader { buf: data }
    }

    /// The same points with their values as [`FieldValue::encode`] wrote them (checked, not
    /// decoded).
    pub(super) fn raw(self) -> RawBatchReader<'a> {
        RawBatchReader(self)
    }

    fn step<T>(
        &mut self,
        value: impl FnOnce(&mut &'a [u8]) -> Result<T, DecodeError>,
    ) -> Option<Result<(i64, i64, T), StoreError>> {
        if self.buf.is_empty() {
            return None;
        }
        let read = || -> Result<(i64, i64, T), DecodeError> {
            let series_id = get_varint(&mut self.buf)?.cast_signed();
            let ts = unzigzag(get_varint(&mut self.buf)?);
            Ok((series_id, ts, value(&mut self.buf)?))
        };
        let point = read().map_err(|_| corrupt("a batch of `recent`"));
        if point.is_err() {
            self.buf = &[];
        }
        Some(point)
    }
}

impl Iterator for BatchReader<'_> {
    type Item = Result<(i64, i64, FieldValue), StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.step(FieldValue::decode)
    }
}

/// See [`BatchReader::raw`].
pub(super) struct RawBatchReader<'a>(BatchReader<'a>);

impl<'a> Iterator for RawBatchReader<'a> {
    type Item = Result<(i64, i64, &'a [u8]), StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.0.step(take_value)
    }
}

/// The points of a chunk, in time order: decoded whole when it is opened (column by
/// column: faster than point by point, see `measure.rs`), into a vector that the thread
/// reuses from one reader to the next; a damaged chunk is one error (rather than a panic).
pub(super) struct ChunkReader {
    points: Vec<(i64, FieldValue)>,
    next: usize,
    error: Option<StoreError>,
}

thread_local! {
    /// The vector of the last [`ChunkReader`] dropped on this thread, for the next one.
    static SPARE: RefCell<Vec<(i64, FieldValue)>> = const { RefCell::new(Vec::new()) };
}

impl ChunkReader {
    /// Reads `data`, in `codec`, which its row says holds `points` points.
    pub(super) fn new(codec: Codec, data: &[u8], points: i64) -> ChunkReader {
        let mut out = SPARE
            .with(|spare| spare.try_borrow_mut().map(|mut s| std::mem::take(&mut *s)))
            .unwrap_or_default();
        let error = decode(codec, data, points, &mut out).err();
        if error.is_some() {
            out.clear();
        }
        ChunkReader {
            points: out,
            next: 0,
            error,
        }
    }
}

impl Drop for ChunkReader {
    fn drop(&mut self) {
        let mut points = std::mem::take(&mut self.points);
        points.clear();
        let _ = SPARE.with(|spare| {
            spare.try_borrow_mut().map(|mut s| {
                if points.capacity() > s.capacity() {
                    *s = points;
                }
            })
        });
    }
}

impl Iterator for ChunkReader {
    type Item = Result<(i64, FieldValue), StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(e) = self.error.take() {
            return Some(Err(e));
        }
        let (ts, value) = self.points.get_mut(self.next)?;
        self.next += 1;
        Some(Ok((
            *ts,
            std::mem::replace(value, FieldValue::Boolean(false)),
        )))
    }
}

/// Appends the points of a chunk to `out` as a compaction places them: each point's
/// timestamp (8 bytes, little-endian), then its value as [`FieldValue::encode`] writes it.
/// [`next_placed`] reads them back.
///
/// # Errors
/// As [`decode`].
pub(super) fn decode_placed(
    codec: Codec,
    data: &[u8],
    points: i64,
    scratch: &mut Vec<(i64, FieldValue)>,
    out: &mut Vec<u8>,
) -> Result<(), StoreError> {
    decode(codec, data, points, scratch)?;
    for (ts, value) in scratch.drain(..) {
        out.extend_from_slice(&ts.to_le_bytes());
        value.encode(out);
    }
    Ok(())
}

/// The point at the front of a buffer of placed points (see [`decode_placed`]), and `buf`
/// advanced past it; `None` at its end.
pub(super) fn next_placed<'a>(buf: &mut &'a [u8]) -> Option<Result<(i64, &'a [u8]), DecodeError>> {
    if buf.is_empty() {
        return None;
    }
    let Some((ts, rest)) = buf.split_first_chunk::<8>() else {
        *buf = &[];
        return Some(Err(DecodeError));
    };
    *buf = rest;
    Some(take_value(buf).map(|value| (i64::from_le_bytes(*ts), value)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
