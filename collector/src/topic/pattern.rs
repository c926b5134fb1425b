//! The topic a reading is published to: a pattern such as `telemetry/{site}/{device}/
//! {measurement}` whose placeholders are filled from the reading.

use std::fmt;

use crate::reading::Reading;

/// What a placeholder stands for when the reading lacks it (a tag it does not have), and
/// what stands for an empty value: MQTT topic levels should not be empty.
pub const MISSING: &str = "_";

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Measurement,
    Tag(String),
}

/// A parsed topic pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPattern {
    parts: Vec<Part>,
}

impl TopicPattern {
    /// Parses a pattern: text, with `{measurement}` and `{<tag>}` placeholders anywhere.
    ///
    /// # Errors
    /// A message saying what is wrong: empty, a wildcard, a `$` at the start (topics the
    /// broker reserves), an unclosed or empty placeholder, an invalid placeholder name.
    pub fn parse(pattern: &str) -> Result<TopicPattern, String> {
        if pattern.is_empty() {
            return Err("must not be empty".into());
        }
        if pattern.contains(['+', '#']) {
            return Err("`+` and `#` are not allowed in a topic to publish to".into());
        }
        if pattern.contains('\0') {
            return Err("must not contain a NUL character".into());
        }
        if pattern.starts_with('$') {
            return Err("topics starting with `$` are reserved for the broker".into());
        }
        let mut parts = Vec::new();
        let mut rest = pattern;
        while let Some(open) = rest.find(['{', '}']) {
            if rest[open..].starts_with('}') {
                return Err("`}` without `{`".into());
            }
            if open > 0 {
                parts.push(Part::Literal(rest[..open].to_string()));
            }
            let after = &rest[open + 1..];
            let close = after.find('}').ok_or("`{` without `}`")?;
            let name = &after[..close];
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(format!("invalid placeholder `{{{name}}}`"));
            }
            parts.push(if name == "measurement" {
                Part::Measurement
            } else {
                Part::Tag(name.to_string())
            });
            rest = &after[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_string()));
        }
        Ok(TopicPattern { parts })
    }

    /// The topic of `r`, appended to `out`. A placeholder's value never adds a level or a
    /// wildcard: `/`, `+`, `#` and NUL in it become `_`; a missing tag or an empty value is
    /// [`MISSING`].
    pub fn render(&self, r: &Reading, out: &mut String) {
        for part in &self.parts {
            let value = match part {
                Part::Literal(l) => {
                    out.push_str(l);
                    continue;
                }
                Part::Measurement => r.measurement.as_str(),
                Part::Tag(name) => r.tag(name).unwrap_or(MISSING),
            };
            if value.is_empty() {
                out.push_str(MISSING);
            }
            out.extend(value.chars().map(|c| match c {
                '/' | '+' | '#' | '\0' => '_',
                c => c,
            }));
        }
    }
}

impl fmt::Display for TopicPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for part in &self.parts {
            match part {
                Part::Literal(l) => f.write_str(l)?,
                Part::Measurement => f.write_str("{measurement}")?,
                Part::Tag(t) => write!(f, "{{{t}}}")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn render(pattern: &str, r: &Reading) -> String {
        let mut out = String::new();
        TopicPattern::parse(pattern).unwrap().render(r, &mut out);
        out
    }

    #[test]
    fn placeholders_take_the_readings_values_and_never_add_levels() {
        let mut r = Reading::new("env", 1);
        r.set_tag("device", "dev/1+#");
        r.set_tag("site", "");
        assert_eq!(
            render("t/{site}/{device}/{measurement}", &r),
            "t/_/dev_1__/env"
        );
        assert_eq!(render("t/x-{device}/{room}", &r), "t/x-dev_1__/_");
        let p = TopicPattern::parse("t/{site}/{device}/{measurement}").unwrap();
        assert_eq!(p.to_string(), "t/{site}/{device}/{measurement}");
    }

    #[test]
    fn invalid_patterns() {
        for bad in [
            "", "a/+", "a/#", "$SYS/x", "a/{", "a/}", "a/{}", "a/{b c}", "a\0",
        ] {
            assert!(TopicPattern::parse(bad).is_err(), "{bad:?}");
        }
    }
}
