//! CSV rows with configured column names: `1750000000,21.5,40.1` read with the columns
//! `ts, temperature, humidity`. Cells are trimmed and may be double-quoted (without the
//! delimiter inside); an empty cell is a missing value; a column named `_` (or empty) is
//! ignored; a line that repeats the column names (a header a device prints on start) is
//! skipped. The timestamp column and the tag columns work as the keys of JSON objects.

use std::borrow::Cow;

use super::fields::Builder;
use super::{Context, CsvOptions, Reject};
use crate::reading::Reading;

/// Parses one row. `Ok(None)` for a header line.
pub(super) fn parse(
    text: &str,
    opts: &CsvOptions,
    ctx: &Context<'_>,
) -> Result<Option<Reading>, Reject> {
    let text = text.trim_matches(['\r', '\n']);
    let cells = text.split(opts.delimiter).map(|c| {
        let c = c.trim();
        c.strip_prefix('"')
            .and_then(|c| c.strip_suffix('"'))
            .unwrap_or(c)
    });
    if cells.clone().count() != opts.columns.len() {
        return Err(Reject::InvalidCsv);
    }
    if cells.clone().zip(&opts.columns).all(|(c, name)| c == name) {
        return Ok(None);
    }
    let mut builder = Builder::new(&opts.fields, ctx);
    for (cell, name) in cells.zip(&opts.columns) {
        if cell.is_empty() || name.is_empty() || name == "_" {
            continue;
        }
        builder.put_text(Cow::Borrowed(name), cell);
    }
    builder.finish().map(Some)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{ctx, NOW};
    use super::super::JsonOptions;
    use super::*;
    use crate::reading::FieldValue;

    fn opts() -> CsvOptions {
        CsvOptions {
            columns: ["ts", "temperature", "_", "room", "humidity"]
                .map(String::from)
                .to_vec(),
            delimiter: ',',
            fields: JsonOptions {
                tag_keys: vec!["room".into()],
                ..JsonOptions::default()
            },
        }
    }

    #[test]
    fn rows_become_readings_and_headers_are_skipped() {
        let ts = NOW - 2_000_000_000;
        let tags = vec![];
        let r = parse(&format!("{ts}, 21.5,x,\"lab\",\r"), &opts(), &ctx(&tags))
            .unwrap()
            .unwrap();
        assert_eq!(r.timestamp, ts);
        assert_eq!(r.tag("room"), Some("lab"));
        assert_eq!(r.device(), Some("sensors/a/b"));
        assert_eq!(
            r.fields,
            vec![("temperature".into(), FieldValue::Float(21.5))],
            "the empty humidity cell is a missing value"
        );
        assert_eq!(
            parse("ts,temperature,_,room,humidity", &opts(), &ctx(&tags)),
            Ok(None)
        );
    }

    #[test]
    fn rejections_by_reason() {
        let one = |t: &str| parse(t, &opts(), &ctx(&[]));
        assert_eq!(one("1,2,3"), Err(Reject::InvalidCsv));
        assert_eq!(one("1,2,3,4,5,6"), Err(Reject::InvalidCsv));
        assert_eq!(one(",,,,"), Err(Reject::NoFields));
        assert_eq!(one(",inf,,,"), Err(Reject::UnsupportedValue));
        assert_eq!(one("1,2,,,"), Err(Reject::TimestampOutOfRange));
        assert_eq!(
            one("1750000000.000000001,2,,,").map(|r| r.unwrap().timestamp),
            Ok(NOW + 1)
        );
    }
}
