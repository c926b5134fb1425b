//! Printing an error with its causes, in the collector's one format.

/// `err` and its causes, `: `-separated, as `{:#}` prints an anyhow error; a cause whose text
/// the message already holds (some libraries repeat their cause in their own message) is not
/// printed again.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{message}")]
    struct Wrapped {
        message: String,
        #[source]
        cause: std::io::Error,
    }

    #[test]
    fn causes_follow_once() {
        let cause = || std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let plain = Wrapped {
            message: "cannot connect".into(),
            cause: cause(),
        };
        assert_eq!(error_chain(&plain), "cannot connect: refused");
        let repeated = Wrapped {
            message: "cannot connect: refused".into(),
            cause: cause(),
        };
        assert_eq!(error_chain(&repeated), "cannot connect: refused");
    }
}
