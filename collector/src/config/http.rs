//! `[http]`: the HTTP port (`/metrics`, `/health`, the dashboard) as written, and its
//! validation.
//!
//! On a loopback address the port needs nothing more. Anywhere else it must ask for
//! credentials (`[http.auth]`: a bearer token, or a user and password): validation refuses
//! such an address without them. TLS (`[http.tls]`) is optional, and what keeps those
//! credentials off the wire in the clear.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::problems::Problems;
use super::secret::secret_source;
use super::{Secret, SecretSource};

/// `[http]`: Prometheus `/metrics`, `/health`, and the dashboard (`/`, `/api/v1/`), on a
/// local port.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct HttpConfig {
    /// Whether to serve them.
    pub enabled: bool,
    /// The address to listen on. Beyond loopback, `[http.auth]` is required.
    pub listen: SocketAddr,
    /// The longest a client may take to send a request head (and a kept-alive connection
    /// may stay idle; with TLS, the handshake too): a slow or silent client is disconnected
    /// then.
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// The most connections open at once; more are refused (counted in
    /// `http_connections_refused_total`).
    pub max_connections: usize,
    /// Serve HTTPS instead of HTTP.
    pub tls: Option<HttpTlsConfig>,
    /// Ask for credentials.
    pub auth: Option<HttpAuthConfig>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 9108)),
            header_timeout: Duration::from_secs(10),
            max_connections: 64,
            tls: None,
            auth: None,
        }
    }
}

/// `[http.tls]`: the server's certificate, and optionally the CA its clients' certificates
/// must come from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct HttpTlsConfig {
    /// PEM file of the server's certificate chain (its own certificate first).
    pub cert_file: PathBuf,
    /// PEM file of its private key.
    pub key_file: PathBuf,
    /// PEM file of the CA(s) whose client certificates are required (default: none asked).
    pub client_ca_file: Option<PathBuf>,
}

/// `[http.auth]`: a bearer token (`token`, or `token_file` / `token_env` /
/// `token_credential`), or basic authentication (`username`, and `password` or
/// `password_file` / `password_env` / `password_credential`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct HttpAuthConfig {
    /// The bearer token itself (prefer a file, a variable or a credential).
    pub token: Option<Secret>,
    /// A file holding the token.
    pub token_file: Option<PathBuf>,
    /// An environment variable holding the token.
    pub token_env: Option<String>,
    /// A systemd credential holding the token.
    pub token_credential: Option<String>,
    /// The user of basic authentication.
    pub username: Option<String>,
    /// The password itself.
    pub password: Option<Secret>,
    /// A file holding the password.
    pub password_file: Option<PathBuf>,
    /// An environment variable holding the password.
    pub password_env: Option<String>,
    /// A systemd credential holding the password.
    pub password_credential: Option<String>,
}

/// What a client of the HTTP port must present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpAuthSettings {
    /// `Authorization: Bearer <token>`.
    Bearer(SecretSource),
    /// `Authorization: Basic <user:password>`.
    Basic {
        /// The user.
        username: String,
        /// The password.
        password: SecretSource,
    },
}

/// The validated `[http]` section, when enabled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSettings {
    /// The address to listen on.
    pub listen: SocketAddr,
    /// The longest a request head (and a TLS handshake) may take.
    pub header_timeout: Duration,
    /// The most connections open at once.
    pub max_connections: usize,
    /// HTTPS, when set.
    pub tls: Option<HttpTlsConfig>,
    /// The credentials asked for, when set.
    pub auth: Option<HttpAuthSettings>,
}

/// Validates `[http]` (also when disabled: its values are checked all the same).
pub(super) fn validate(c: &HttpConfig, p: &mut Problems) -> Option<HttpSettings> {
    p.check(
        (Duration::from_millis(100)..=Duration::from_secs(60)).contains(&c.header_timeout),
        "http.header_timeout",
        "must be between 100ms and 60s",
    );
    p.check(
        (1..=65_536).contains(&c.max_connections),
        "http.max_connections",
        "must be between 1 and 65536",
    );
    if let Some(tls) = &c.tls {
        p.readable_file(&tls.cert_file, "http.tls.cert_file");
        p.readable_file(&tls.key_file, "http.tls.key_file");
        if let Some(ca) = &tls.client_ca_file {
            p.readable_file(ca, "http.tls.client_ca_file");
        }
    }
    let auth = c.auth.as_ref().and_then(|a| auth(a, p));
    if c.enabled && c.auth.is_none() && !c.listen.ip().is_loopback() {
        p.add(
            "http.auth",
            format!(
                "required when http.listen ({}) is not a loopback address: set a bearer `token` or a `username` and `password` (from a file, a variable or a systemd credential), and preferably [http.tls]",
                c.listen
            ),
        );
    }
    c.enabled.then(|| HttpSettings {
        listen: c.listen,
        header_timeout: c.header_timeout,
        max_connections: c.max_connections,
        tls: c.tls.clone(),
        auth,
    })
}

fn auth(a: &HttpAuthConfig, p: &mut Problems) -> Option<HttpAuthSettings> {
    let token_given = a.token.is_some()
        || a.token_file.is_some()
        || a.token_env.is_some()
        || a.token_credential.is_some();
    let basic_given = a.username.is_some()
        || a.password.is_some()
        || a.password_file.is_some()
        || a.password_env.is_some()
        || a.password_credential.is_some();
    match (token_given, basic_given) {
        (true, true) => {
            p.add(
                "http.auth",
                "give either a bearer `token` or a `username` and `password`, not both",
            );
            None
        }
        (false, false) => {
            p.add(
                "http.auth",
                "set a bearer `token` or a `username` and `password` (or remove [http.auth])",
            );
            None
        }
        (true, false) => {
            let keys = (&a.token, &a.token_file, &a.token_env, &a.token_credential);
            secret_source("token", keys, "http.auth", true, p).map(HttpAuthSettings::Bearer)
        }
        (false, true) => {
            let username = a.username.clone().unwrap_or_default();
            // RFC 7617: the user-id cannot hold a colon (it separates the password).
            let user_ok = !username.is_empty() && !username.contains(':');
            if !user_ok {
                p.add("http.auth.username", "required, without `:`");
            }
            let keys = (
                &a.password,
                &a.password_file,
                &a.password_env,
                &a.password_credential,
            );
            let password = secret_source("password", keys, "http.auth", true, p)?;
            user_ok.then_some(HttpAuthSettings::Basic { username, password })
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::settings::tests::MINIMAL;

    fn errors(http: &str) -> Vec<String> {
        super::super::settings::tests::errors(&format!("{MINIMAL}\n{http}"))
    }

    #[test]
    fn beyond_loopback_credentials_are_required() {
        let errs = errors("[http]\nlisten = \"0.0.0.0:9108\"\n");
        assert_eq!(
            errs,
            vec!["http.auth: required when http.listen (0.0.0.0:9108) is not a loopback address: set a bearer `token` or a `username` and `password` (from a file, a variable or a systemd credential), and preferably [http.tls]"]
        );
        // Disabled, the address does not matter; on loopback, nothing is required.
        assert!(errors("[http]\nenabled = false\nlisten = \"0.0.0.0:9108\"\n").is_empty());
        assert!(errors("[http]\nlisten = \"[::1]:9108\"\n").is_empty());
        let ok = "[http]\nlisten = \"0.0.0.0:9108\"\n[http.auth]\ntoken_env = \"HTTP_TOKEN\"\n";
        assert!(errors(ok).is_empty(), "{:?}", errors(ok));
    }

    #[test]
    fn one_kind_of_credentials_from_one_place() {
        let errs = errors("[http.auth]\ntoken = \"a\"\nusername = \"u\"\n");
        assert_eq!(
            errs,
            vec![
                "http.auth: give either a bearer `token` or a `username` and `password`, not both"
            ]
        );
        let errs = errors("[http.auth]\ntoken = \"a\"\ntoken_env = \"B\"\n");
        assert_eq!(
            errs,
            vec!["http.auth.token: give only one of `token`, `token_file`, `token_env` and `token_credential`"]
        );
        let errs = errors("[http.auth]\nusername = \"a:b\"\n");
        assert_eq!(
            errs,
            vec![
                "http.auth.username: required, without `:`",
                "http.auth.password: set one of `password`, `password_file`, `password_env` or `password_credential`",
            ]
        );
        let errs = errors(
            "[http.tls]\ncert_file = \"/nonexistent/c.pem\"\nkey_file = \"/nonexistent/k.pem\"\n",
        );
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(errs[0].starts_with("http.tls.cert_file: "), "{errs:?}");
    }

    #[test]
    fn the_secret_is_never_shown() {
        let c = crate::config::Config::from_toml(
            "[http.auth]\nusername = \"ops\"\npassword = \"hunter2-secret\"\n",
        )
        .unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
