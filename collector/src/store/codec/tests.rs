use super::*;

use proptest::prelude::*;

fn chunks(points: &[(i64, FieldValue)]) -> Vec<Chunk> {
    let mut w = ChunkWriter::default();
    let mut out: Vec<Chunk> = points.iter().filter_map(|(t, v)| w.push(*t, v)).collect();
    out.extend(w.finish());
    out
}

fn read(c: &Chunk) -> Vec<(i64, FieldValue)> {
    ChunkReader::new(c.codec, &c.data, c.points as i64)
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Equality bit for bit: -0.0 is not 0.0, a NaN equals only the same NaN.
pub(super) fn same(a: &[(i64, FieldValue)], b: &[(i64, FieldValue)]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|((ta, va), (tb, vb))| {
            ta == tb
                && match (va, vb) {
                    (FieldValue::Float(x), FieldValue::Float(y)) => x.to_bits() == y.to_bits(),
                    _ => va == vb,
                }
        })
}

/// Every kind, and every float that is hard to keep exactly.
fn special_values() -> Vec<FieldValue> {
    vec![
        FieldValue::Float(21.37),
        FieldValue::Float(-0.0),
        FieldValue::Float(0.0),
        FieldValue::Float(f64::from_bits(1)),
        FieldValue::Float(f64::MIN_POSITIVE / 3.0),
        FieldValue::Float(f64::MAX),
        FieldValue::Float(f64::MIN),
        FieldValue::Float(f64::INFINITY),
        FieldValue::Float(f64::NEG_INFINITY),
        FieldValue::Float(f64::NAN),
        FieldValue::Float(f64::from_bits(0x7ff0_0000_0000_0001)),
        FieldValue::Float(f64::from_bits(0xfff8_dead_beef_0001)),
        FieldValue::Float(0.1 + 0.2),
        FieldValue::Float(9_007_199_254_740_993.0),
        FieldValue::Integer(i64::MIN),
        FieldValue::Integer(i64::MAX),
        FieldValue::Integer(0),
        FieldValue::Integer(-1),
        FieldValue::Unsigned(u64::MAX),
        FieldValue::Unsigned(1 << 63),
        FieldValue::Unsigned(0),
        FieldValue::Boolean(true),
        FieldValue::Boolean(false),
        FieldValue::String("".into()),
        FieldValue::String("naïve \"x\"\n\u{0}✓".into()),
    ]
}

#[test]
fn every_type_and_special_value_reads_back_bit_for_bit_in_every_codec() {
    let values = special_values();
    // All together, each alone in a chunk, and each among decimals (which then cannot
    // be scaled, or can).
    let mut sets: Vec<Vec<FieldValue>> = vec![values.clone()];
    for v in &values {
        sets.push(vec![v.clone()]);
        sets.push(
            (0..100)
                .map(|i| match i {
                    50 => v.clone(),
                    _ => FieldValue::Float(f64::from(i) / 100.0 + 20.0),
                })
                .collect(),
        );
    }
    for (i, set) in sets.iter().enumerate() {
        let points: Vec<(i64, FieldValue)> = set
            .iter()
            .enumerate()
            .map(|(j, v)| (i64::MIN + 1_000 * j as i64 + i as i64, v.clone()))
            .collect();
        for pack in [Codec::Zstd, Codec::Deflated, Codec::Columns] {
            let mut w = ChunkWriter {
                pack: Some(pack),
                ..ChunkWriter::default()
            };
            let mut cs: Vec<Chunk> = points.iter().filter_map(|(t, v)| w.push(*t, v)).collect();
            cs.extend(w.finish());
            let all: Vec<_> = cs.iter().flat_map(read).collect();
            assert!(same(&all, &points), "set {i}: {all:?}");
        }
    }
}

#[test]
fn steady_decimal_points_cost_about_a_byte_and_chunks_split_at_the_limits() {
    let points: Vec<_> = (0..1100)
        .map(|i| {
            (
                1_700_000_000_000_000_000 + i * 1_000_000_000,
                FieldValue::Float(21.5 + f64::from((i % 7) as i32) / 100.0),
            )
        })
        .collect();
    let cs = chunks(&points);
    assert_eq!(
        cs.iter().map(|c| c.points).collect::<Vec<_>>(),
        [512, 512, 76]
    );
    assert_eq!(cs[0].first_ts, points[0].0);
    assert_eq!(cs[0].last_ts, points[511].0);
    assert_eq!(cs[0].codec, Codec::Zstd);
    assert!(cs[0].data.len() < 512, "{} bytes", cs[0].data.len());
    let all: Vec<_> = cs.iter().flat_map(read).collect();
    assert!(same(&all, &points));

    let long = "x".repeat(5000);
    let strings: Vec<_> = (0..10)
        .map(|i| (i, FieldValue::String(long.as_str().into())))
        .collect();
    assert_eq!(
        chunks(&strings)
            .iter()
            .map(|c| c.points)
            .collect::<Vec<_>>(),
        [4, 4, 2]
    );
}

#[test]
fn floats_that_deflate_barely_shrinks_stay_columns_and_read_back() {
    // Full-precision noise around a level: deflate saves less than a quarter, and its
    // stream takes about the body's size (zlib-rs once panicked there).
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for base in [20.0, 1013.25, -40.0] {
        let points: Vec<_> = (0..2 * CHUNK_POINTS as i64)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let noise = (x >> 11) as f64 / (1u64 << 53) as f64;
                (i * 1_000_000_000, FieldValue::Float(base + noise))
            })
            .collect();
        let cs = chunks(&points);
        assert!(cs.iter().all(|c| c.codec == Codec::Columns));
        let all: Vec<_> = cs.iter().flat_map(read).collect();
        assert!(same(&all, &points));
    }
}

#[test]
fn a_version_2_chunk_reads_as_it_did() {
    // Bytes as version 2 wrote them: the first timestamp, the first delta, then steady.
    let mut data = Vec::new();
    let mut t = Timestamps::default();
    for (i, v) in [
        FieldValue::Float(1.5),
        FieldValue::Integer(-3),
        FieldValue::Boolean(true),
    ]
    .iter()
    .enumerate()
    {
        t.put(100 + 10 * i as i64, &mut data);
        v.encode(&mut data);
    }
    let got: Vec<_> = ChunkReader::new(Codec::Version2, &data, 3)
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        got,
        [
            (100, FieldValue::Float(1.5)),
            (110, FieldValue::Integer(-3)),
            (120, FieldValue::Boolean(true))
        ]
    );
}

#[test]
fn damaged_chunks_and_batches_are_errors_not_panics() {
    // A full chunk, compressed (zstd, and deflated as older builds wrote it).
    let points: Vec<_> = (0..512).map(|i| (i * 10, FieldValue::Integer(i))).collect();
    let c = &chunks(&points)[0];
    assert_eq!(c.codec, Codec::Zstd);
    let mut w = ChunkWriter {
        pack: Some(Codec::Deflated),
        ..ChunkWriter::default()
    };
    let deflated = points.iter().find_map(|(t, v)| w.push(*t, v)).unwrap();
    assert_eq!(deflated.codec, Codec::Deflated);
    let errs = |codec: Codec, data: &[u8], n: i64| {
        ChunkReader::new(codec, data, n)
            .filter(Result::is_err)
            .count()
    };
    for codec in [
        Codec::Columns,
        Codec::Deflated,
        Codec::Zstd,
        Codec::Version2,
    ] {
        let data = match codec {
            Codec::Zstd => c.data.clone(),
            Codec::Deflated => deflated.data.clone(),
            Codec::Columns => {
                let mut body = Vec::new();
                unzstd(&c.data, &mut body).unwrap();
                let mut inflated = Vec::new();
                inflate(&deflated.data, &mut inflated).unwrap();
                assert_eq!(body, inflated);
                body
            }
            Codec::Version2 => {
                let mut raw = Vec::new();
                let mut ts = Vec::new();
                for (t, v) in &points {
                    ts.push(*t);
                    v.encode(&mut raw);
                }
                let mut out = Vec::new();
                write_version2(&ts, &raw, &mut out);
                out
            }
        };
        assert_eq!(errs(codec, &data, 512), 0, "{codec:?}");
        assert_eq!(errs(codec, &data, 511), 1, "{codec:?}: bytes left over");
        assert_eq!(errs(codec, &data, 513), 1, "{codec:?}: a point missing");
        assert_eq!(errs(codec, &data, -1), 1, "{codec:?}");
        assert_eq!(
            errs(codec, &data[..data.len() - 1], 512),
            1,
            "{codec:?}: truncated"
        );
    }
    assert!(Codec::from_i64(4).is_err());
    // A repeated timestamp: a delta-of-delta that makes the delta 0.
    let mut bad = Vec::new();
    let mut t = Timestamps::default();
    for ts in [10, 20, 20] {
        t.put(ts, &mut bad);
        FieldValue::Integer(1).encode(&mut bad);
    }
    assert_eq!(
        errs(Codec::Version2, &bad, 3),
        1,
        "time does not go forward"
    );

    let mut batch = Vec::new();
    put_batch_point(&mut batch, 7, -5, &FieldValue::String("é".into()));
    let got: Vec<_> = BatchReader::new(&batch).collect::<Result<_, _>>().unwrap();
    assert_eq!(got, [(7, -5, FieldValue::String("é".into()))]);
    for cut in 0..batch.len() {
        let results: Vec<_> = BatchReader::new(&batch[..cut]).collect();
        assert!(results.iter().all(Result::is_err), "cut at {cut}");
    }
}

fn float() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>(),
        // Every bit pattern: NaN payloads, subnormals, -0.0.
        any::<u64>().prop_map(f64::from_bits),
        // Decimals of a few digits, as sensors report them.
        (-10_000_000i64..10_000_000, 0i32..5).prop_map(|(m, e)| m as f64 / 10f64.powi(e)),
    ]
}

fn value() -> impl Strategy<Value = FieldValue> {
    prop_oneof![
        4 => float().prop_map(FieldValue::Float),
        1 => any::<i64>().prop_map(FieldValue::Integer),
        1 => any::<u64>().prop_map(FieldValue::Unsigned),
        1 => any::<bool>().prop_map(FieldValue::Boolean),
        1 => ".{0,40}".prop_map(|s| FieldValue::String(s.into())),
    ]
}

/// Points of one kind mostly (as a series is), with others mixed in at times.
fn series() -> impl Strategy<Value = Vec<(i64, FieldValue)>> {
    prop_oneof![
        proptest::collection::vec((any::<i64>(), value()), 0..1500),
        proptest::collection::vec(
            (
                0i64..100_000_000,
                (-100_000i64..100_000).prop_map(|m| FieldValue::Float(m as f64 / 100.0))
            ),
            0..1500
        ),
    ]
    .prop_map(|mut raw| {
        raw.sort_by_key(|(t, _)| *t);
        raw.dedup_by_key(|(t, _)| *t);
        raw
    })
}

proptest! {
    #[test]
    fn any_increasing_points_read_back_exactly(raw in series()) {
        let cs = chunks(&raw);
        prop_assert!(cs.iter().all(|c| c.points <= CHUNK_POINTS));
        let all: Vec<_> = cs.iter().flat_map(read).collect();
        prop_assert!(same(&all, &raw));
        for c in &cs {
            prop_assert_eq!(c.first_ts, read(c)[0].0);
            prop_assert_eq!(c.last_ts, read(c).last().unwrap().0);
        }
    }

    #[test]
    fn raw_values_are_the_encoded_bytes_and_copy_exactly(raw in series()) {
        let mut batch = Vec::new();
        for (i, (t, v)) in raw.iter().enumerate() {
            put_batch_point(&mut batch, i as i64, *t, v);
        }
        // A batch read raw gives each value's encoding; copied into chunks, they read
        // back as the values, and placed as the same encodings.
        let mut w = ChunkWriter::default();
        let mut cs = Vec::new();
        for (i, point) in BatchReader::new(&batch).raw().enumerate() {
            let (id, t, bytes) = point.unwrap();
            let mut want = Vec::new();
            raw[i].1.encode(&mut want);
            prop_assert_eq!((id, t, bytes), (i as i64, raw[i].0, want.as_slice()));
            if let Some(c) = w.push_raw(t, bytes) {
                cs.push(c);
            }
        }
        cs.extend(w.finish());
        let all: Vec<_> = cs.iter().flat_map(read).collect();
        prop_assert!(same(&all, &raw));
        let mut placed = Vec::new();
        let mut scratch = Vec::new();
        for c in &cs {
            decode_placed(c.codec, &c.data, c.points as i64, &mut scratch, &mut placed).unwrap();
        }
        let mut rest = placed.as_slice();
        let mut i = 0;
        while let Some(point) = next_placed(&mut rest) {
            let (t, bytes) = point.unwrap();
            let mut want = Vec::new();
            raw[i].1.encode(&mut want);
            prop_assert_eq!((t, bytes), (raw[i].0, want.as_slice()));
            i += 1;
        }
        prop_assert_eq!(i, raw.len());
    }

    #[test]
    fn value_len_checks_what_decode_checks(data in proptest::collection::vec(any::<u8>(), 0..40)) {
        let mut rest = data.as_slice();
        let decoded = FieldValue::decode(&mut rest);
        match value_len(&data) {
            Ok(n) => prop_assert_eq!(n, data.len() - rest.len()),
            Err(_) => prop_assert!(decoded.is_err()),
        }
        prop_assert_eq!(value_len(&data).is_ok(), decoded.is_ok());
    }

    #[test]
    fn garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200), n in -2i64..600) {
        for codec in [Codec::Version2, Codec::Columns, Codec::Deflated, Codec::Zstd] {
            let _ = ChunkReader::new(codec, &data, n).count();
        }
        let _ = BatchReader::new(&data).count();
        let _ = BatchReader::new(&data).raw().count();
        let mut rest = data.as_slice();
        while next_placed(&mut rest).is_some() {}
    }

    #[test]
    fn damaged_compressed_chunks_never_panic(
        flip in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4)
    ) {
        let points: Vec<_> = (0..512)
            .map(|i| (i * 1000, FieldValue::Float(f64::from(i as i32) / 10.0)))
            .collect();
        for pack in [Codec::Zstd, Codec::Deflated] {
            let mut w = ChunkWriter { pack: Some(pack), ..ChunkWriter::default() };
            let c = points.iter().find_map(|(t, v)| w.push(*t, v)).unwrap();
            prop_assert_eq!(c.codec, pack);
            let mut data = c.data.clone();
            for &(at, x) in &flip {
                let n = data.len();
                data[at % n] ^= x;
            }
            let _ = ChunkReader::new(c.codec, &data, c.points as i64).count();
        }
    }
}
