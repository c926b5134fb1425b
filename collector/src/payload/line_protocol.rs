//! InfluxDB line protocol payloads, parsed with influxdata's own parser and checked line by
//! line: a bad line is rejected and counted, the good lines around it are kept.

use influxdb_line_protocol::{parse_lines, FieldValue as LpValue};

use super::{ensure_device, Context, Reject, TimeUnit};
use crate::reading::{FieldValue, Reading};

/// Parses every line of `text` into `out`; returns one rejection per bad line.
pub(super) fn parse(
    text: &str,
    precision: TimeUnit,
    ctx: &Context<'_>,
    out: &mut Vec<Reading>,
) -> Vec<Reject> {
    let mut rejects = Vec::new();
    for line in parse_lines(text) {
        match line
            .map_err(|_| Reject::InvalidLineProtocol)
            .and_then(|l| convert(l, precision, ctx))
        {
            Ok(r) => out.push(r),
            Err(r) => rejects.push(r),
        }
    }
    rejects
}

fn convert(
    line: influxdb_line_protocol::ParsedLine<'_>,
    precision: TimeUnit,
    ctx: &Context<'_>,
) -> Result<Reading, Reject> {
    let timestamp = match line.timestamp {
        Some(ts) => ctx.bounds.check(precision.int_to_ns(ts)?)?,
        None => ctx.received_ns,
    };
    let line_tags = line.series.tag_set.as_deref().unwrap_or_default();
    let mut tags = Vec::with_capacity(ctx.tags.len() + line_tags.len() + 1);
    tags.extend_from_slice(ctx.tags);
    let mut reading = Reading {
        measurement: line.series.measurement.as_str().into(),
        tags,
        fields: Vec::with_capacity(line.field_set.len()),
        timestamp,
    };
    for (k, v) in line_tags {
        reading.set_tag(k.as_str(), v.as_str());
    }
    for (k, v) in &line.field_set {
        let value = match v {
            LpValue::I64(v) => FieldValue::Integer(*v),
            LpValue::U64(v) => FieldValue::Unsigned(*v),
            LpValue::F64(v) if v.is_finite() => FieldValue::Float(*v),
            LpValue::F64(_) => return Err(Reject::InvalidLineProtocol),
            LpValue::String(s) => FieldValue::String(s.as_str().into()),
            LpValue::Boolean(b) => FieldValue::Boolean(*b),
        };
        reading.fields.push((k.as_str().into(), value));
    }
    if reading.fields.is_empty() {
        return Err(Reject::NoFields);
    }
    ensure_device(&mut reading, ctx);
    Ok(reading)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{ctx, NOW};
    use super::*;

    #[test]
    fn lines_become_readings_and_bad_lines_are_rejected_alone() {
        let tags = vec![("site".into(), "from-topic".into())];
        let text = format!(
            "env,device=d1,site=s\\ 1 t=21.5,n=3i,u=7u,ok=t,s=\"a \\\"q\\\"\" {NOW}\n\
             this is not line protocol\n\
             env t=1 1\n\
             env,device=d2 t=2\n"
        );
        let mut out = Vec::new();
        let rejects = parse(&text, TimeUnit::Ns, &ctx(&tags), &mut out);
        assert_eq!(
            rejects,
            vec![Reject::InvalidLineProtocol, Reject::TimestampOutOfRange]
        );
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].tag("site"), Some("s 1"), "the payload's tags win");
        assert_eq!(out[0].device(), Some("d1"));
        assert_eq!(out[0].timestamp, NOW);
        assert_eq!(
            out[0].fields,
            vec![
                ("t".into(), FieldValue::Float(21.5)),
                ("n".into(), FieldValue::Integer(3)),
                ("u".into(), FieldValue::Unsigned(7)),
                ("ok".into(), FieldValue::Boolean(true)),
                ("s".into(), FieldValue::String("a \"q\"".into())),
            ]
        );
        assert_eq!(out[1].timestamp, NOW, "no timestamp: time of receipt");
        assert_eq!(out[1].tag("site"), Some("from-topic"));
    }

    #[test]
    fn precision_scales_timestamps() {
        let mut out = Vec::new();
        let secs = NOW / 1_000_000_000;
        let rejects = parse(&format!("m f=1 {secs}"), TimeUnit::S, &ctx(&[]), &mut out);
        assert!(rejects.is_empty());
        assert_eq!(out[0].timestamp, secs * 1_000_000_000);
        assert_eq!(out[0].device(), Some("sensors/a/b"));
    }

    /// Integers at and past their limits, with and without their suffixes, and timestamps
    /// whose conversion to nanoseconds overflows: exact, or rejected, never wrapped.
    #[test]
    fn integer_extremes_are_exact_or_rejected() {
        let one = |line: &str, precision: TimeUnit| {
            let mut out = Vec::new();
            let rejects = parse(line, precision, &ctx(&[]), &mut out);
            (out.pop().map(|r| r.fields), rejects)
        };
        let field = |v: FieldValue| (Some(vec![("f".into(), v)]), vec![]);
        let bad = (None, vec![Reject::InvalidLineProtocol]);
        assert_eq!(
            one("m f=-9223372036854775808i", TimeUnit::Ns),
            field(FieldValue::Integer(i64::MIN))
        );
        assert_eq!(
            one("m f=9223372036854775807i", TimeUnit::Ns),
            field(FieldValue::Integer(i64::MAX))
        );
        assert_eq!(one("m f=9223372036854775808i", TimeUnit::Ns), bad);
        assert_eq!(one("m f=-9223372036854775809i", TimeUnit::Ns), bad);
        assert_eq!(
            one("m f=18446744073709551615u", TimeUnit::Ns),
            field(FieldValue::Unsigned(u64::MAX))
        );
        assert_eq!(one("m f=18446744073709551616u", TimeUnit::Ns), bad);
        assert_eq!(one("m f=-1u", TimeUnit::Ns), bad);
        assert_eq!(
            one("m f=1.7976931348623157e308", TimeUnit::Ns),
            field(FieldValue::Float(f64::MAX))
        );
        assert_eq!(one("m f=1e309", TimeUnit::Ns), bad);
        assert_eq!(
            one("m f=5e-324", TimeUnit::Ns),
            field(FieldValue::Float(5e-324))
        );
        let out_of_range = (None, vec![Reject::TimestampOutOfRange]);
        for (ts, precision) in [
            ("9223372036854775807", TimeUnit::S),
            ("-9223372036854775808", TimeUnit::Ms),
            ("9223372036854776", TimeUnit::Us),
            ("-9223372036854775808", TimeUnit::Ns),
        ] {
            assert_eq!(
                one(&format!("m f=1i {ts}"), precision),
                out_of_range,
                "{ts} {precision:?}"
            );
        }
        assert_eq!(one("m f=1i 9223372036854775808", TimeUnit::Ns), bad);
    }
}
