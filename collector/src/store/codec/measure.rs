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

use std::hint::black_box;
use std::time::{Duration, Instant};

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
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

fn devices(default: usize) -> usize {
    std::env::var("MEASURE_DEVICES")
        .ok()
        .and_then(|d| d.parse().ok())
        .map_or(default, |d: usize| d.min(default))
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
}

/// This build's writer: `Columns` (decimal scaling when it holds), deflated when smaller.
struct Ours {
    deflate: bool,
    writer: ChunkWriter,
}

impl Candidate for Ours {
    fn name(&self) -> String {
        if self.deflate {
            "columns, decimal floats, deflate 1 (chosen)".into()
        } else {
            "columns, decimal floats".into()
        }
    }

    fn encode(&mut self, points: &[(i64, FieldValue)], out: &mut Vec<u8>) {
        // One writer for every chunk, as a compaction has; a short chunk is written as the
        // last of a series is (not deflated).
        // The chosen one as a settled store has it (its last chunk deflated too).
        let w = &mut self.writer;
        w.no_deflate = !self.deflate;
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
        let codec = Codec::from_i64(i64::from(data[0])).unwrap();
        decode(codec, &data[1..], points as i64, out).unwrap();
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
            None => decode_version2(data, points, out).unwrap(),
            Some(_) => {
                let body = inflate_all(data);
                decode_version2(&body, points, out).unwrap();
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
            let started = Instant::now();
            c.decode(black_box(&blob), chunk.len(), &mut back);
            dec += started.elapsed();
            assert!(same(&back, chunk), "{} does not read back", c.name());
        }
    }
    (bytes, enc, dec)
}

#[test]
#[ignore = "a measurement, not a test"]
fn measure_chunk_encodings() {
    let sets = [
        simulated(
            "e2e workload (1,000 devices x 500 x 3 floats)",
            devices(1000),
            500,
            false,
        ),
        simulated(
            "simulator models, 24 h at 1 Hz, 100 devices (3 floats + counter)",
            devices(100),
            86_400,
            true,
        ),
        noise(devices(100), 20_000),
    ];
    for set in &sets {
        println!("\n{}: {} values", set.name, set.values());
        println!("| encoding | bytes per value | encode ns per value | decode ns per value |");
        println!("|---|---|---|---|");
        let mut candidates: Vec<Box<dyn Candidate>> = vec![
            Box::new(Version2 { level: None }),
            Box::new(Version2 { level: Some(1) }),
            Box::new(Version2 { level: Some(6) }),
            Box::new(Ours {
                deflate: false,
                writer: ChunkWriter::default(),
            }),
            Box::new(Ours {
                deflate: true,
                writer: ChunkWriter::default(),
            }),
        ];
        // The float-only candidates (the counter is an integer).
        if set
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
        for c in &mut candidates {
            let (bytes, enc, dec) = run(c.as_mut(), set);
            let n = set.values() as f64;
            println!(
                "| {} | {:.2} | {:.0} | {:.0} |",
                c.name(),
                bytes as f64 / n,
                enc.as_nanos() as f64 / n,
                dec.as_nanos() as f64 / n,
            );
        }
    }
}
