//! Not a test (nothing is asserted): the measurement that chose the chunk encoding. Run with
//! `cargo test --release -p telemetry-collector --lib measure_chunk_encodings -- --ignored --nocapture`
//! (`MEASURE_DEVICES=10` for a quicker, smaller run). It encodes three data sets, series by
//! series in chunks of 512 points, with each candidate encoding, and prints the blob bytes
//! per value (SQLite's rows and index come on top) and the encode and decode time per value:
//!
//! 1. the end-to-end benchmark's workload (`scripts/bench-e2e.sh`): 1,000 devices, 500
//!    samples at 1 s, temperature, humidity and pressure as the simulator's models give them
//!    (2 decimals);
//! 2. the simulator's models over 24 h at 1 Hz for 100 devices: the three floats and the
//!    integer counter;
//! 3. full-precision noise: floats with every bit of mantissa, 100 series of 20,000 points.
//!
//! Every candidate runs `MEASURE_PASSES` times (3), the candidates one after the other in
//! each pass, and the medians are printed with every pass: the machine is shared, read the
//! times as proportions within one run. `MEASURE_DAY_DEVICES` shrinks the second data set
//! alone (100 devices: 34.56 million values); `MEASURE_ALL=1` adds the alternatives of the
//! first measurement (whole floats, Gorilla) and version 2 deflated at level 6.
//!
//! The compressors of a `Columns` body compared, each on the same body and each read back
//! through the same column decoder: flate2 on its zlib-rs backend (the one the collector
//! builds with), miniz_oxide driven as flate2's default backend drives it (what the first
//! schema 3 code ran on) and miniz_oxide's core inflater into the exact body, lz4 (lz4_flex,
//! safe Rust) and zstd (the C library); deflate's levels 1 to 9.

use std::hint::black_box;
use std::time::{Duration, Instant};

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use miniz_oxide::deflate::core::CompressorOxide;
use miniz_oxide::inflate::core::{inflate_flags, DecompressorOxide};
use miniz_oxide::inflate::stream::InflateState;
use miniz_oxide::inflate::TINFLStatus;
use miniz_oxide::{DataFormat, MZFlush, MZStatus};
use simulator::model::{DeviceModel, SplitMix64};

use super::tests::same;
use super::*;

const START_NS: i64 = 1_700_000_000_000_000_000;
const SEC: i64 = 1_000_000_000;

/// A data set: its series, each a list of points in time order.
struct DataSet {
    name: &'static str,
    series: Vec<Vec<(i64, FieldValue)>>,
}

impl DataSet {
    fn values(&self) -> usize {
        self.series.iter().map(Vec::len).sum()
    }
}

fn env_usize(name: &str) -> Option<usize> {
    std::env::var(name).ok().and_then(|d| d.parse().ok())
}

fn devices(default: usize) -> usize {
    env_usize("MEASURE_DEVICES").map_or(default, |d| d.min(default))
}

fn simulated(name: &'static str, devices: usize, samples: u64, counter: bool) -> DataSet {
    let mut series = Vec::new();
    for d in 0..devices {
        let model = DeviceModel::new(42, d);
        let fields = if counter { 4 } else { 3 };
        let mut by_field = vec![Vec::with_capacity(samples as usize); fields];
        for s in 0..samples {
            // As the simulator's fleet stamps them: device d is d µs late.
            let ts = START_NS + s as i64 * SEC + d as i64 * 1_000;
            let sample = model.sample(s, ts);
            by_field[0].push((ts, FieldValue::Float(sample.temperature)));
            by_field[1].push((ts, FieldValue::Float(sample.humidity)));
            by_field[2].push((ts, FieldValue::Float(sample.pressure)));
            if counter {
                by_field[3].push((ts, FieldValue::Integer(sample.count)));
            }
        }
        series.extend(by_field);
    }
    DataSet { name, series }
}

fn noise(series: usize, points: usize) -> DataSet {
    let mut rng = SplitMix64::new(7);
    let series = (0..series)
        .map(|_| {
            let base = rng.range(-50.0, 1050.0);
            (0..points)
                .map(|i| {
                    (
                        START_NS + i as i64 * SEC,
                        FieldValue::Float(base + rng.noise(1.0)),
                    )
                })
                .collect()
        })
        .collect();
    DataSet {
        name: "full-precision noise",
        series,
    }
}

/// A candidate: encodes the points of one chunk, and decodes what it wrote (to time it and
/// to check it).
trait Candidate {
    fn name(&self) -> String;
    fn encode(&mut self, points: &[(i64, FieldValue)], out: &mut Vec<u8>);
    fn decode(&mut self, data: &[u8], points: usize, out: &mut Vec<(i64, FieldValue)>);
    /// Whether it only counts bytes (it cannot be read back).
    fn bytes_only(&self) -> bool {
        false
    }
}

/// This build's writer: `Columns` (decimal scaling when it holds), deflated when smaller.
struct Ours {
    deflate: bool,
    writer: ChunkWriter,
}

impl Candidate for Ours {
    fn name(&self) -> String {
        if self.deflate {
            format!("columns, decimal floats, zstd {ZSTD_LEVEL} (chosen)")
        } else {
            "columns, decimal floats".into()
        }
    }

    fn encode(&mut self, points: &[(i64, FieldValue)], out: &mut Vec<u8>) {
        // One writer for every chunk, as a compaction has; a short chunk is written as the
        // last of a series is (not deflated).
        // The chosen one as a settled store has it (its last chunk deflated too).
        let w = &mut self.writer;
        w.pack = (!self.deflate).then_some(Codec::Columns);
        w.deflate_last = self.deflate;
        let mut closed = None;
        for (t, v) in points {
            closed = closed.or(w.push(*t, v));
        }
        let c = closed.or_else(|| w.finish()).unwrap();
        out.clear();
        out.push(c.codec as u8);
        out.extend_from_slice(&c.data);
    }

    fn decode(&mut self, data: &[u8], points: usize, out: &mut Vec<(i64, FieldValue)>) {
        // As the store's queries read a chunk.
        let codec = Codec::from_i64(i64::from(data[0])).unwrap();
        out.clear();
        out.extend(ChunkReader::new(codec, &data[1..], points as i64).map(Result::unwrap));
    }
}

/// Version 2's chunk (delta-of-delta timestamps, each value as `FieldValue::encode` writes
/// it), deflated at `level` or not.
struct Version2 {
    level: Option<u32>,
}

impl Candidate for Version2 {
    fn name(&self) -> String {
        match self.level {
            None => "version 2 (dod timestamps, 9-byte floats)".into(),
            Some(l) => format!("version 2, deflate {l}"),
        }
    }

    fn encode(&mut self, points: &[(i64, FieldValue)], out: &mut Vec<u8>) {
        let mut ts = Vec::new();
        let mut raw = Vec::new();
        for (t, v) in points {
            ts.push(*t);
            v.encode(&mut raw);
        }
        let mut body = Vec::new();
        write_version2(&ts, &raw, &mut body);
        out.clear();
        match self.level {
            None => out.extend_from_slice(&body),
            Some(level) => deflate(&body, level, out),
        }
    }

    fn decode(&mut self, data: &[u8], points: usize, out: &mut Vec<(i64, FieldValue)>) {
        out.clear();
        match self.level {
            None => decode(Codec::Version2, data, points as i64, out).unwrap(),
            Some(_) => {
                let body = inflate_all(data);
                decode(Codec::Version2, &body, points as i64, out).unwrap();
            }
        }
    }
}

/// Columns with the floats whole (no decimal scaling), deflated at `level`: what a general
/// compressor alone makes of them.
struct WholeFloats {
    level: u32,
}

impl Candidate for WholeFloats {
    fn name(&self) -> String {
        format!("dod timestamps, 8-byte floats, deflate {}", self.level)
    }

    fn encode(&mut self, points: &[(i64, FieldValue)], out: &mut Vec<u8>) {
        let mut body = Vec::new();
        let mut t = Timestamps::default();
        for (ts, _) in points {
            t.put(*ts, &mut body);
        }
        for (_, v) in points {
            if let FieldValue::Float(v) = v {
                body.extend_from_slice(&v.to_le_bytes());
            }
        }
        out.clear();
        deflate(&body, self.level, out);
    }

    fn decode(&mut self, data: &[u8], points: usize, out: &mut Vec<(i64, FieldValue)>) {
        let body = inflate_all(data);
        let mut buf = body.as_slice();
        let mut t = Timestamps::default();
        out.clear();
        for _ in 0..points {
            out.push((t.get(&mut buf).unwrap(), FieldValue::Float(0.0)));
        }
        for (p, b) in out.iter_mut().zip(buf.chunks_exact(8)) {
            p.1 = FieldValue::Float(f64::from_le_bytes(b.try_into().unwrap()));
        }
    }
}

/// Gorilla (Facebook's, as Prometheus and InfluxDB 1.x use it): delta-of-delta timestamps as
/// here, each float XORed with the one before, written as its meaningful bits; optionally
/// deflated.
struct Gorilla {
    level: Option<u32>,
}

struct Bits {
    out: Vec<u8>,
    used: u32,
}

impl Bits {
    fn put(&mut self, v: u64, n: u32) {
        for i in (0..n).rev() {
            if self.used == 0 {
                self.out.push(0);
            }
            let bit = (v >> i) & 1;
            *self.out.last_mut().unwrap() |= (bit as u8) << (7 - self.used);
            self.used = (self.used + 1) % 8;
        }
    }
}

struct BitReader<'a> {
    data: &'a [u8],
    at: usize,
}

impl BitReader<'_> {
    fn get(&mut self, n: u32) -> u64 {
        let mut v = 0;
        for _ in 0..n {
            let bit = (self.data[self.at / 8] >> (7 - self.at % 8)) & 1;
            v = (v << 1) | u64::from(bit);
            self.at += 1;
        }
        v
    }
}

impl Candidate for Gorilla {
    fn name(&self) -> String {
        match self.level {
            None => "dod timestamps, Gorilla XOR floats".into(),
            Some(l) => format!("dod timestamps, Gorilla XOR floats, deflate {l}"),
        }
    }

    fn encode(&mut self, points: &[(i64, FieldValue)], out: &mut Vec<u8>) {
        let mut body = Vec::new();
        let mut t = Timestamps::default();
        for (ts, _) in points {
            t.put(*ts, &mut body);
        }
        let mut bits = Bits { out: body, used: 0 };
        let (mut prev, mut lead, mut trail) = (0u64, u32::MAX, 0u32);
        for (_, v) in points {
            let FieldValue::Float(v) = v else { continue };
            let x = v.to_bits() ^ prev;
            prev = v.to_bits();
            if x == 0 {
                bits.put(0, 1);
            } else {
                let (l, t) = (x.leading_zeros().min(31), x.trailing_zeros());
                if lead != u32::MAX && l >= lead && t >= trail {
                    bits.put(0b10, 2);
                    bits.put(x >> trail, 64 - lead - trail);
                } else {
                    lead = l;
                    trail = t;
                    let len = 64 - l - t;
                    bits.put(0b11, 2);
                    bits.put(u64::from(l), 5);
                    bits.put(u64::from(len - 1), 6);
                    bits.put(x >> t, len);
                }
            }
        }
        out.clear();
        match self.level {
            None => out.extend_from_slice(&bits.out),
            Some(level) => deflate(&bits.out, level, out),
        }
    }

    fn decode(&mut self, data: &[u8], points: usize, out: &mut Vec<(i64, FieldValue)>) {
        let body = match self.level {
            None => data.to_vec(),
            Some(_) => inflate_all(data),
        };
        let mut buf = body.as_slice();
        let mut t = Timestamps::default();
        out.clear();
        for _ in 0..points {
            out.push((t.get(&mut buf).unwrap(), FieldValue::Float(0.0)));
        }
        let mut r = BitReader { data: buf, at: 0 };
        let (mut prev, mut lead, mut trail) = (0u64, 0u32, 0u32);
        for p in out.iter_mut() {
            if r.get(1) == 1 {
                if r.get(1) == 1 {
                    lead = r.get(5) as u32;
                    let len = r.get(6) as u32 + 1;
                    trail = 64 - lead - len;
                }
                prev ^= r.get(64 - lead - trail) << trail;
            }
            p.1 = FieldValue::Float(f64::from_bits(prev));
        }
    }
}

fn deflate(body: &[u8], level: u32, out: &mut Vec<u8>) {
    let mut c = Compress::new(Compression::new(level), false);
    out.reserve(body.len() + 64);
    c.compress_vec(body, out, FlushCompress::Finish).unwrap();
}

fn inflate_all(data: &[u8]) -> Vec<u8> {
    let mut d = Decompress::new(false);
    let mut out = Vec::with_capacity(64 * 1024);
    d.decompress_vec(data, &mut out, FlushDecompress::Finish)
        .unwrap();
    out
}

/// What compresses a `Columns` body, in [`Body`].
#[derive(Clone, Copy, Debug)]
enum Packer {
    /// flate2 at a level, on the backend the collector builds it with (zlib-rs).
    Flate2(u32),
    /// miniz_oxide at a level, driven as flate2's default backend drives it (a stream
    /// inflater that goes through its 32 KiB window).
    Miniz(u32),
    /// miniz_oxide level 1 as `Miniz`, inflated by its core straight into the body.
    MinizCore,
    /// lz4 (lz4_flex's block format, safe Rust).
    Lz4,
    /// zstd at a level (bulk API, one context reused).
    Zstd(i32),
}

/// How a body is decoded, in [`Body`].
#[derive(Clone, Copy, Debug, PartialEq)]
enum Reader {
    /// As the first schema 3 code did: a new vector of points per chunk, a vector per
    /// column, then the points.
    Vectors,
    /// The same into a vector reused from chunk to chunk, as [`ChunkReader`] now does.
    Reused,
}

/// A `Columns` body (as [`ChunkWriter`] makes it), compressed by `packer` when that saves a
/// quarter (as [`ChunkWriter`] decides), read by `reader`. The blob: a byte (1: compressed),
/// the body's length as a varint, the compressed body (or the body).
struct Body {
    packer: Packer,
    reader: Reader,
    /// Counts the bytes of the body without its timestamps (not readable back): the most a
    /// better timestamp column could save.
    no_timestamps: bool,
    columns: Columns,
    ts: Vec<i64>,
    raw: Vec<u8>,
    body: Vec<u8>,
    flate_c: Option<Compress>,
    flate_d: Decompress,
    miniz_c: Box<CompressorOxide>,
    miniz_d: Box<InflateState>,
    miniz_core: Box<DecompressorOxide>,
    zstd_c: Option<zstd::bulk::Compressor<'static>>,
    zstd_d: zstd::bulk::Decompressor<'static>,
}

impl Body {
    fn new(packer: Packer, reader: Reader) -> Body {
        let mut miniz_c = Box::<CompressorOxide>::default();
        let level = match packer {
            Packer::Miniz(l) => l,
            _ => 1,
        };
        miniz_c.set_format_and_level(DataFormat::Raw, level as u8);
        Body {
            packer,
            reader,
            no_timestamps: false,
            columns: Columns::default(),
            ts: Vec::new(),
            raw: Vec::new(),
            body: Vec::new(),
            flate_c: None,
            flate_d: Decompress::new(false),
            miniz_c,
            miniz_d: InflateState::new_boxed(DataFormat::Raw),
            miniz_core: Box::default(),
            zstd_c: match packer {
                Packer::Zstd(level) => Some(zstd::bulk::Compressor::new(level).unwrap()),
                _ => None,
            },
            zstd_d: zstd::bulk::Decompressor::new().unwrap(),
        }
    }

    /// Compresses `body` into `out` (empty, with room for `body`); false when it does not
    /// fit.
    fn pack(&mut self, body: &[u8], out: &mut Vec<u8>) -> bool {
        let start = out.len();
        match self.packer {
            Packer::Flate2(level) => {
                let c = self
                    .flate_c
                    .get_or_insert_with(|| Compress::new(Compression::new(level), false));
                c.reset();
                matches!(
                    c.compress_vec(body, out, FlushCompress::Finish),
                    Ok(flate2::Status::StreamEnd)
                )
            }
            Packer::Miniz(_) | Packer::MinizCore => {
                self.miniz_c.reset();
                out.resize(start + body.len(), 0);
                let r = miniz_oxide::deflate::stream::deflate(
                    &mut self.miniz_c,
                    body,
                    &mut out[start..],
                    MZFlush::Finish,
                );
                out.truncate(start + r.bytes_written);
                matches!(r.status, Ok(MZStatus::StreamEnd))
            }
            Packer::Lz4 => {
                out.resize(
                    start + lz4_flex::block::get_maximum_output_size(body.len()),
                    0,
                );
                let n = lz4_flex::block::compress_into(body, &mut out[start..]).unwrap();
                out.truncate(start + n);
                true
            }
            Packer::Zstd(_) => {
                // It writes from the start of a vector: into one of its own, then after
                // the header.
                let c = self.zstd_c.as_mut().unwrap();
                let mut packed = Vec::with_capacity(body.len());
                let fits = c.compress_to_buffer(body, &mut packed).is_ok();
                out.extend_from_slice(&packed);
                fits
            }
        }
    }

    /// Decompresses `data` into `self.body` (`len` bytes).
    fn unpack(&mut self, data: &[u8], len: usize) {
        let body = &mut self.body;
        body.clear();
        match self.packer {
            Packer::Flate2(_) => {
                body.reserve_exact(len);
                self.flate_d.reset(false);
                self.flate_d
                    .decompress_vec(data, body, FlushDecompress::Finish)
                    .unwrap();
            }
            Packer::Miniz(_) => {
                body.resize(len, 0);
                self.miniz_d.reset(DataFormat::Raw);
                let r = miniz_oxide::inflate::stream::inflate(
                    &mut self.miniz_d,
                    data,
                    body,
                    MZFlush::Finish,
                );
                assert_eq!(r.bytes_written, len);
            }
            Packer::MinizCore => {
                body.resize(len, 0);
                self.miniz_core.init();
                let (status, _, written) = miniz_oxide::inflate::core::decompress(
                    &mut self.miniz_core,
                    data,
                    body,
                    0,
                    inflate_flags::TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF,
                );
                assert!(status == TINFLStatus::Done && written == len);
            }
            Packer::Lz4 => {
                body.resize(len, 0);
                lz4_flex::block::decompress_into(data, body).unwrap();
            }
            Packer::Zstd(_) => {
                body.reserve_exact(len);
                self.zstd_d.decompress_to_buffer(data, body).unwrap();
            }
        }
        assert_eq!(body.len(), len);
    }
}

impl Candidate for Body {
    fn name(&self) -> String {
        let packer = match self.packer {
            Packer::Flate2(l) => format!("deflate {l} (flate2 on zlib-rs)"),
            Packer::Miniz(l) => format!("deflate {l} (miniz_oxide as flate2 drives it)"),
            Packer::MinizCore => "deflate 1 (miniz_oxide, its core inflater)".into(),
            Packer::Lz4 => "lz4 (lz4_flex)".into(),
            Packer::Zstd(l) => format!("zstd {l}"),
        };
        let reader = match self.reader {
            Reader::Vectors => "read into a new vector",
            Reader::Reused => "read into a reused vector",
        };
        if self.no_timestamps {
            format!("columns without their timestamps, {packer}")
        } else {
            format!("columns, {packer}, {reader}")
        }
    }

    fn bytes_only(&self) -> bool {
        self.no_timestamps
    }

    fn encode(&mut self, points: &[(i64, FieldValue)], out: &mut Vec<u8>) {
        self.ts.clear();
        self.raw.clear();
        for (t, v) in points {
            self.ts.push(*t);
            v.encode(&mut self.raw);
        }
        self.columns.encode(&self.ts, &self.raw).unwrap();
        let mut body = std::mem::take(&mut self.columns.body);
        if self.no_timestamps {
            // The timestamps are the first varints.
            let n = body
                .iter()
                .enumerate()
                .filter(|(_, &b)| b < 0x80)
                .nth(points.len() - 1)
                .map_or(0, |(i, _)| i + 1);
            body.drain(..n);
        }
        out.clear();
        out.push(1);
        put_varint(out, body.len() as u64);
        let start = out.len();
        out.reserve(body.len() + 64);
        if !(self.pack(&body, out) && out.len() - start < body.len() - body.len() / 4) {
            out.clear();
            out.push(0);
            put_varint(out, body.len() as u64);
            out.extend_from_slice(&body);
        }
        self.columns.body = body;
    }

    fn decode(&mut self, data: &[u8], points: usize, out: &mut Vec<(i64, FieldValue)>) {
        let mut rest = &data[1..];
        let len = get_varint(&mut rest).unwrap() as usize;
        let body: &[u8] = if data[0] == 1 {
            self.unpack(rest, len);
            &self.body
        } else {
            rest
        };
        match self.reader {
            Reader::Vectors => {
                // A new vector per chunk, as `ChunkReader` had.
                let mut points_vec = Vec::new();
                decode_columns(body, points, &mut points_vec).unwrap();
                *out = points_vec;
            }
            Reader::Reused => {
                out.clear();
                decode_columns(body, points, out).unwrap();
            }
        }
    }
}

/// Encodes every series of `set` in chunks of 512 points: (bytes, encode time, decode time).
fn run(c: &mut dyn Candidate, set: &DataSet) -> (usize, Duration, Duration) {
    let mut bytes = 0;
    let (mut enc, mut dec) = (Duration::ZERO, Duration::ZERO);
    let mut blob = Vec::new();
    let mut back = Vec::new();
    for series in &set.series {
        for chunk in series.chunks(CHUNK_POINTS) {
            let started = Instant::now();
            c.encode(black_box(chunk), &mut blob);
            enc += started.elapsed();
            bytes += blob.len();
            if c.bytes_only() {
                continue;
            }
            let started = Instant::now();
            c.decode(black_box(&blob), chunk.len(), &mut back);
            dec += started.elapsed();
            assert!(same(&back, chunk), "{} does not read back", c.name());
        }
    }
    (bytes, enc, dec)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The candidates for `set`.
fn candidates(set: &DataSet) -> Vec<Box<dyn Candidate>> {
    let all = std::env::var("MEASURE_ALL").is_ok_and(|v| v == "1");
    let mut candidates: Vec<Box<dyn Candidate>> = vec![
        Box::new(Version2 { level: None }),
        Box::new(Version2 { level: Some(1) }),
    ];
    if all {
        candidates.push(Box::new(Version2 { level: Some(6) }));
    }
    candidates.extend([
        Box::new(Ours {
            deflate: false,
            writer: ChunkWriter::default(),
        }) as Box<dyn Candidate>,
        Box::new(Ours {
            deflate: true,
            writer: ChunkWriter::default(),
        }),
        Box::new(Body::new(Packer::Miniz(1), Reader::Vectors)),
        Box::new(Body::new(Packer::MinizCore, Reader::Reused)),
        Box::new(Body::new(Packer::Flate2(1), Reader::Vectors)),
        Box::new(Body::new(Packer::Flate2(1), Reader::Reused)),
        Box::new(Body::new(Packer::Lz4, Reader::Reused)),
        Box::new(Body::new(Packer::Zstd(1), Reader::Reused)),
        Box::new(Body::new(Packer::Zstd(3), Reader::Reused)),
        Box::new(Body::new(Packer::Flate2(2), Reader::Reused)),
        Box::new(Body::new(Packer::Flate2(2), Reader::Vectors)),
        Box::new(Body::new(Packer::Flate2(4), Reader::Reused)),
        Box::new(Body::new(Packer::Flate2(6), Reader::Reused)),
        Box::new(Body::new(Packer::Flate2(9), Reader::Reused)),
        Box::new(Body {
            no_timestamps: true,
            ..Body::new(Packer::Flate2(DEFLATE_LEVEL), Reader::Reused)
        }),
    ]);
    // The float-only candidates (the counter is an integer).
    if all
        && set
            .series
            .iter()
            .flatten()
            .all(|(_, v)| matches!(v, FieldValue::Float(_)))
    {
        candidates.extend([
            Box::new(WholeFloats { level: 1 }) as Box<dyn Candidate>,
            Box::new(WholeFloats { level: 6 }),
            Box::new(Gorilla { level: None }),
            Box::new(Gorilla { level: Some(1) }),
        ]);
    }
    candidates
}

/// Whether miniz_oxide and zlib-rs deflate the same bodies into the same bytes at level 1:
/// (chunks, identical, miniz_oxide's bytes, zlib-rs' bytes).
fn same_bytes(set: &DataSet) -> (usize, usize, usize, usize) {
    let (mut miniz, mut zlib) = (
        Body::new(Packer::Miniz(1), Reader::Reused),
        Body::new(Packer::Flate2(1), Reader::Reused),
    );
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let mut counts = (0, 0, 0, 0);
    for series in &set.series {
        for chunk in series.chunks(CHUNK_POINTS) {
            miniz.encode(chunk, &mut a);
            zlib.encode(chunk, &mut b);
            counts.0 += 1;
            counts.1 += usize::from(a == b);
            counts.2 += a.len();
            counts.3 += b.len();
        }
    }
    counts
}

#[test]
#[ignore = "a measurement, not a test"]
fn measure_chunk_encodings() {
    let passes = env_usize("MEASURE_PASSES").unwrap_or(3).max(1);
    let day_devices = env_usize("MEASURE_DAY_DEVICES").unwrap_or(100).min(100);
    let sets = [
        simulated(
            "e2e workload (1,000 devices x 500 x 3 floats)",
            devices(1000),
            500,
            false,
        ),
        simulated(
            "simulator models, 24 h at 1 Hz (3 floats + counter)",
            devices(day_devices),
            86_400,
            true,
        ),
        noise(devices(100), 20_000),
    ];
    for set in &sets {
        let n = set.values() as f64;
        println!("\n{}: {} values, {passes} passes", set.name, set.values());
        let (chunks, identical, miniz, zlib) = same_bytes(set);
        println!(
            "deflate 1: {identical} of {chunks} chunks the same bytes with miniz_oxide and zlib-rs; \
             {:.3} and {:.3} bytes per value",
            miniz as f64 / n,
            zlib as f64 / n
        );
        let mut candidates = candidates(set);
        let mut figures = vec![(0usize, Vec::new(), Vec::new()); candidates.len()];
        for _ in 0..passes {
            for (c, f) in candidates.iter_mut().zip(&mut figures) {
                let (bytes, enc, dec) = run(c.as_mut(), set);
                f.0 = bytes;
                f.1.push(enc.as_nanos() as f64 / n);
                f.2.push(dec.as_nanos() as f64 / n);
            }
        }
        println!("| encoding | bytes per value | encode ns per value (median; passes) | decode ns per value (median; passes) |");
        println!("|---|---|---|---|");
        let list = |v: &[f64]| {
            v.iter()
                .map(|x| format!("{x:.0}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        for (c, (bytes, enc, dec)) in candidates.iter().zip(figures) {
            let decode = if c.bytes_only() {
                "-".to_string()
            } else {
                format!("{:.0} ({})", median(dec.clone()), list(&dec))
            };
            println!(
                "| {} | {:.3} | {:.0} ({}) | {decode} |",
                c.name(),
                bytes as f64 / n,
                median(enc.clone()),
                list(&enc),
            );
        }
    }
}
