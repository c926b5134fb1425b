//! The HTTP port's authentication: a bearer token or basic credentials, compared in
//! constant time, never logged, never shown by `Debug`.

use std::fmt;

use base64::Engine as _;
use hyper::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use subtle::ConstantTimeEq as _;

use crate::config::{HttpAuthSettings, Secret};

/// What a request must present in its `Authorization` header.
#[derive(Clone)]
pub struct Auth {
    basic: bool,
    /// The credentials after the scheme: the token, or `base64(user:password)`.
    expected: Secret,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.basic {
            "Auth(Basic ***)"
        } else {
            "Auth(Bearer ***)"
        })
    }
}

impl Auth {
    /// `Authorization: Bearer <token>`.
    pub fn bearer(token: &Secret) -> Auth {
        Auth {
            basic: false,
            expected: token.clone(),
        }
    }

    /// `Authorization: Basic <base64 of user:password>`.
    pub fn basic(username: &str, password: &Secret) -> Auth {
        let credentials = format!("{username}:{}", password.expose());
        Auth {
            basic: true,
            expected: Secret::new(base64::engine::general_purpose::STANDARD.encode(credentials)),
        }
    }

    /// Reads the secret `settings` name.
    ///
    /// # Errors
    /// Where the secret should have been, and why it is not there (never the secret).
    pub fn load(settings: &HttpAuthSettings) -> Result<Auth, String> {
        Ok(match settings {
            HttpAuthSettings::Bearer(token) => Auth::bearer(&token.load()?),
            HttpAuthSettings::Basic { username, password } => {
                Auth::basic(username, &password.load()?)
            }
        })
    }

    /// Whether `headers` carry the expected credentials. The scheme is matched without
    /// regard to case (RFC 9110); the credentials in constant time (their length aside).
    pub(super) fn allows(&self, headers: &HeaderMap) -> bool {
        let Some(given) = headers.get(AUTHORIZATION) else {
            return false;
        };
        let given = given.as_bytes();
        let scheme: &[u8] = if self.basic { b"basic " } else { b"bearer " };
        if given.len() < scheme.len() || !given[..scheme.len()].eq_ignore_ascii_case(scheme) {
            return false;
        }
        let credentials = given[scheme.len()..].trim_ascii();
        credentials.ct_eq(self.expected.expose().as_bytes()).into()
    }

    /// The `WWW-Authenticate` value of a 401.
    pub(super) fn challenge(&self) -> HeaderValue {
        HeaderValue::from_static(if self.basic {
            // `charset`: a browser is to send a non-ASCII password as UTF-8 (RFC 7617).
            "Basic realm=\"telemetry-collector\", charset=\"UTF-8\""
        } else {
            "Bearer realm=\"telemetry-collector\""
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn with(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn only_the_exact_credentials_pass() {
        let bearer = Auth::bearer(&Secret::new("t0ken"));
        assert!(bearer.allows(&with("Bearer t0ken")));
        assert!(bearer.allows(&with("bearer  t0ken ")));
        for wrong in [
            "Bearer t0ke",
            "Bearer t0kenn",
            "Basic t0ken",
            "Bearer",
            "t0ken",
            "",
        ] {
            assert!(!bearer.allows(&with(wrong)), "{wrong:?}");
        }
        assert!(!bearer.allows(&HeaderMap::new()));

        let basic = Auth::basic("ops", &Secret::new("pa:ss"));
        // base64("ops:pa:ss")
        assert!(basic.allows(&with("Basic b3BzOnBhOnNz")));
        assert!(!basic.allows(&with("Basic b3BzOnBhOnN0")));
        assert!(!basic.allows(&with("Bearer b3BzOnBhOnNz")));
        assert!(basic
            .challenge()
            .to_str()
            .unwrap()
            .starts_with("Basic realm="));
        assert!(bearer
            .challenge()
            .to_str()
            .unwrap()
            .starts_with("Bearer realm="));
    }

    #[test]
    fn never_shown() {
        let a = Auth::basic("ops", &Secret::new("hunter2"));
        assert_eq!(format!("{a:?}"), "Auth(Basic ***)");
        assert!(!format!("{:?}", Auth::bearer(&Secret::new("hunter2"))).contains("hunter2"));
    }
}
