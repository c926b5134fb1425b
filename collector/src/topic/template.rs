//! Topic templates: one string that is both the subscription filter and the recipe that turns
//! topic segments into the measurement, the field and tags.
//!
//! `sensors/{site}/{device}/{measurement}` subscribes to `sensors/+/+/+` and maps
//! `sensors/lab/t1/env` to measurement `env` with tags `site=lab`, `device=t1`. `{field}`
//! names the field of a bare value; `+` matches a segment that is ignored; a final `#`
//! matches the rest. A `$share/<group>/` prefix (MQTT v5 shared subscriptions) is part of the
//! filter but never of the matched topic.

use std::fmt;

/// One segment of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Capture(String),
    Any,
    Rest,
}

/// A parsed topic template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicTemplate {
    share_prefix: Option<String>,
    segments: Vec<Segment>,
}

/// What a topic told us: parts of the topic and names from the template, borrowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMatch<'a> {
    /// From `{measurement}`.
    pub measurement: Option<&'a str>,
    /// From `{field}`.
    pub field: Option<&'a str>,
    template: &'a TopicTemplate,
    topic: &'a str,
}

impl<'a> TopicMatch<'a> {
    /// Every other capture (name, segment), in template order (found again in the topic, so
    /// that a match allocates nothing).
    pub fn tags(&self) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        self.template
            .segments
            .iter()
            .zip(self.topic.split('/'))
            .filter_map(|(segment, part)| match segment {
                Segment::Capture(name) if !matches!(name.as_str(), "measurement" | "field") => {
                    Some((name.as_str(), part))
                }
                _ => None,
            })
    }
}

impl TopicTemplate {
    /// Parses a template.
    ///
    /// # Errors
    /// A message saying what is wrong: empty, a capture that is not a whole segment, a name
    /// used twice, `#` not last, a wildcard inside a segment, a malformed `$share` prefix.
    pub fn parse(template: &str) -> Result<TopicTemplate, String> {
        if template.is_empty() {
            return Err("must not be empty".into());
        }
        let (share_prefix, rest) = match template.strip_prefix("$share/") {
            Some(after) => {
                let (group, filter) = after
                    .split_once('/')
                    .ok_or("a shared subscription is `$share/<group>/<filter>`")?;
                if group.is_empty() || group.contains(['+', '#', '{', '}']) {
                    return Err(format!("invalid shared subscription group `{group}`"));
                }
                (Some(format!("$share/{group}/")), filter)
            }
            None => (None, template),
        };
        if rest.is_empty() {
            return Err("the topic filter must not be empty".into());
        }
        let parts: Vec<&str> = rest.split('/').collect();
        let mut segments = Vec::with_capacity(parts.len());
        let mut names: Vec<&str> = Vec::new();
        for (i, part) in parts.iter().enumerate() {
            let seg = match *part {
                "+" => Segment::Any,
                "#" if i + 1 == parts.len() => Segment::Rest,
                "#" => return Err("`#` may only be the last segment".into()),
                p if p.starts_with('{') && p.ends_with('}') && p.len() > 2 => {
                    let name = &p[1..p.len() - 1];
                    if !name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                    {
                        return Err(format!("invalid capture name `{name}`"));
                    }
                    if names.contains(&name) {
                        return Err(format!("capture `{{{name}}}` is used twice"));
                    }
                    names.push(name);
                    Segment::Capture(name.to_string())
                }
                p if p.contains(['{', '}', '+', '#']) => {
                    return Err(format!(
                        "segment `{p}`: captures and wildcards must fill a whole segment"
                    ))
                }
                p => Segment::Literal(p.to_string()),
            };
            segments.push(seg);
        }
        Ok(TopicTemplate {
            share_prefix,
            segments,
        })
    }

    /// The MQTT subscription filter (captures become `+`).
    pub fn filter(&self) -> String {
        let body: Vec<&str> = self
            .segments
            .iter()
            .map(|s| match s {
                Segment::Literal(l) => l.as_str(),
                Segment::Capture(_) | Segment::Any => "+",
                Segment::Rest => "#",
            })
            .collect();
        format!(
            "{}{}",
            self.share_prefix.as_deref().unwrap_or(""),
            body.join("/")
        )
    }

    /// Whether the template captures `name`.
    pub fn captures(&self, name: &str) -> bool {
        self.segments
            .iter()
            .any(|s| matches!(s, Segment::Capture(n) if n == name))
    }

    /// Matches a concrete topic; `None` if it does not fit the template.
    pub fn matches<'a>(&'a self, topic: &'a str) -> Option<TopicMatch<'a>> {
        let mut m = TopicMatch {
            measurement: None,
            field: None,
            template: self,
            topic,
        };
        let mut parts = topic.split('/');
        for seg in &self.segments {
            if *seg == Segment::Rest {
                return Some(m);
            }
            let part = parts.next()?;
            match seg {
                Segment::Literal(l) if l != part => return None,
                Segment::Capture(name) => match name.as_str() {
                    "measurement" => m.measurement = Some(part),
                    "field" => m.field = Some(part),
                    _ => {}
                },
                _ => {}
            }
        }
        parts.next().is_none().then_some(m)
    }
}

impl fmt::Display for TopicTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.share_prefix.as_deref().unwrap_or(""))?;
        for (i, s) in self.segments.iter().enumerate() {
            if i > 0 {
                f.write_str("/")?;
            }
            match s {
                Segment::Literal(l) => f.write_str(l)?,
                Segment::Capture(n) => write!(f, "{{{n}}}")?,
                Segment::Any => f.write_str("+")?,
                Segment::Rest => f.write_str("#")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_become_measurement_field_and_tags() {
        let t = TopicTemplate::parse("sensors/{site}/{device}/{measurement}").unwrap();
        assert_eq!(t.filter(), "sensors/+/+/+");
        let m = t.matches("sensors/lab/t1/env").unwrap();
        assert_eq!(m.measurement, Some("env"));
        assert_eq!(
            m.tags().collect::<Vec<_>>(),
            vec![("site", "lab"), ("device", "t1")]
        );
        assert_eq!(t.matches("sensors/lab/t1"), None);
        assert_eq!(t.matches("sensors/lab/t1/env/x"), None);
        assert_eq!(t.matches("other/lab/t1/env"), None);
        assert_eq!(t.to_string(), "sensors/{site}/{device}/{measurement}");
    }

    #[test]
    fn wildcards_and_shared_subscriptions() {
        let t = TopicTemplate::parse("$share/g1/home/+/{device}/{field}/#").unwrap();
        assert_eq!(t.filter(), "$share/g1/home/+/+/+/#");
        let m = t.matches("home/x/d9/temp/a/b").unwrap();
        assert_eq!(m.field, Some("temp"));
        assert_eq!(m.tags().collect::<Vec<_>>(), vec![("device", "d9")]);
        assert!(
            t.matches("home/x/d9/temp").is_some(),
            "# also matches the parent level"
        );
        assert!(t.captures("device") && !t.captures("site"));
    }

    #[test]
    fn invalid_templates() {
        for bad in [
            "",
            "a/#/b",
            "a/x{b}",
            "a/{b}/{b}",
            "a/b+",
            "a/{b c}",
            "$share/g",
            "$share//a",
            "$share/g/",
        ] {
            assert!(TopicTemplate::parse(bad).is_err(), "{bad}");
        }
    }
}
