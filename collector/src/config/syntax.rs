//! TOML syntax errors, told without quoting the file.
//!
//! The `toml` crate's own message quotes the offending line with a caret under it; when that
//! line is `password = "...` with its closing quote missing, the message prints the password.
//! Here a syntax error becomes: where (line, column), what is wrong (the parser's
//! description, which never holds text from the file), and, when the line starts with a key,
//! that key's path (`sources.mqtt[0].password`), worked out from the table headers above it.

use std::collections::BTreeMap;

/// Checks that `text` is TOML; the problem is one line that quotes nothing from `text` but
/// keys.
pub(super) fn check(text: &str) -> Result<(), String> {
    match toml::de::DeTable::parse(text) {
        Ok(_) => Ok(()),
        Err(e) => Err(describe(text, e.message(), e.span())),
    }
}

fn describe(text: &str, message: &str, span: Option<std::ops::Range<usize>>) -> String {
    let message = message.trim_end_matches('\n');
    let Some(at) = span.map(|s| s.start.min(text.len())) else {
        return format!("TOML syntax error: {message}");
    };
    // A span that is not on a character boundary counts from the boundary before it.
    let at = (0..=at)
        .rev()
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(0);
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    let line_text = text[line_start..].split('\n').next().unwrap_or("");
    let key = key_of_line(line_text)
        .map(|k| format!(" (at key {})", key_path(&text[..line_start], &k)))
        .unwrap_or_default();
    format!("TOML syntax error at line {line}, column {column}{key}: {message}")
}

/// The key a line assigns to, if the line is `key = ...` with a plain (dotted) key.
fn key_of_line(line: &str) -> Option<String> {
    let (key, _) = line.split_once('=')?;
    plain_key(key)
}

/// `a . b` as `a.b`, if it is a dotted key of bare parts (letters, digits, `_`, `-`).
fn plain_key(key: &str) -> Option<String> {
    let parts: Vec<&str> = key.split('.').map(str::trim).collect();
    let bare = |p: &&str| {
        !p.is_empty()
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    };
    parts.iter().all(bare).then(|| parts.join("."))
}

/// The full path of `key` after the lines `above`: the last table header, with the index of
/// every array of tables on the way (`sources.mqtt[1].subscriptions[0]`).
fn key_path(above: &str, key: &str) -> String {
    // How many `[[name]]` headers were seen, counted again under each new parent element.
    let mut arrays: BTreeMap<String, usize> = BTreeMap::new();
    let mut table: Option<String> = None;
    for line in above.lines().map(str::trim) {
        let (name, is_array) = if let Some(inner) = line
            .strip_prefix("[[")
            .and_then(|l| l.split("]]").next().filter(|_| l.contains("]]")))
        {
            (inner, true)
        } else if let Some(inner) = line
            .strip_prefix('[')
            .and_then(|l| l.split(']').next().filter(|_| l.contains(']')))
        {
            (inner, false)
        } else {
            continue;
        };
        let Some(name) = plain_key(name) else {
            table = None;
            continue;
        };
        if is_array {
            let children = format!("{name}.");
            arrays.retain(|k, _| !k.starts_with(&children));
            *arrays.entry(name.clone()).or_default() += 1;
        }
        table = Some(name);
    }
    let mut path = String::new();
    if let Some(table) = table {
        let mut prefix = String::new();
        for part in table.split('.') {
            if !prefix.is_empty() {
                prefix.push('.');
                path.push('.');
            }
            prefix.push_str(part);
            path.push_str(part);
            if let Some(n) = arrays.get(&prefix) {
                path.push_str(&format!("[{}]", n.saturating_sub(1)));
            }
        }
        path.push('.');
    }
    path.push_str(key);
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_position_and_the_key_but_never_the_line() {
        let text = "data_dir = \"/tmp\"\n\
                    [[sources.mqtt]]\nhost = \"a\"\n\
                    [[sources.mqtt]]\nhost = \"b\"\n\
                    [[sources.mqtt.subscriptions]]\ntopic = \"x\"\n\
                    [sources.mqtt.tls]\nca_file = \"/ca\"\n\
                    [[sources.mqtt.subscriptions]]\ntopic = \"y\"\n\
                    password = \"hunter2-s3cret\n";
        let e = check(text).unwrap_err();
        assert_eq!(
            e,
            "TOML syntax error at line 12, column 27 (at key sources.mqtt[1].subscriptions[1].password): \
             invalid basic string, expected `\"`"
        );
        let e = check("[journal]\nmax_bytes = 5\n[[sinks.influxdb]]\n  token=\"abc\"def\"\n")
            .unwrap_err();
        assert!(e.contains("line 4"), "{e}");
        assert!(e.contains("(at key sinks.influxdb[0].token)"), "{e}");
        assert!(!e.contains("abc") && !e.contains("def"), "{e}");
    }

    #[test]
    fn a_line_without_a_plain_key_is_told_by_its_position_only() {
        let e = check("a = 1\n\"s3cret\n").unwrap_err();
        assert!(e.starts_with("TOML syntax error at line 2, column"), "{e}");
        assert!(!e.contains("s3cret") && !e.contains("at key"), "{e}");
        let e = check("password = \"\"\"s3cret\nmore\n").unwrap_err();
        assert!(!e.contains("s3cret") && !e.contains("more"), "{e}");
        assert!(check("a = 'é\n").unwrap_err().contains("line 1"));
    }
}
