//! What every MQTT connection has, whether it reads (`[[sources.mqtt]]`) or publishes
//! (`[[sinks.mqtt]]`): the broker's address, the protocol version, the client id, the
//! credentials and TLS. Both sections write these keys the same way, and both are validated
//! here into one [`BrokerSettings`].

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use super::problems::Problems;
use super::{Secret, TlsConfig};

/// The MQTT protocol version of a connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Protocol {
    /// MQTT 3.1.1 (`protocol = "3.1.1"`, the default): every broker speaks it.
    #[default]
    V311,
    /// MQTT 5 (`protocol = "5"`): session expiry, Receive Maximum, reason codes.
    V5,
}

impl Protocol {
    /// As written in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::V311 => "3.1.1",
            Protocol::V5 => "5",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `"3.1.1"` or `"5"` (also the number 5, which is what TOML and environment overrides give
/// for an unquoted `5`).
impl<'de> Deserialize<'de> for Protocol {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Protocol, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Protocol;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"3.1.1\" or \"5\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Protocol, E> {
                match v {
                    "3.1.1" => Ok(Protocol::V311),
                    "5" | "5.0" => Ok(Protocol::V5),
                    _ => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
                }
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Protocol, E> {
                match v {
                    5 => Ok(Protocol::V5),
                    _ => Err(E::invalid_value(de::Unexpected::Unsigned(v), &self)),
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Protocol, E> {
                match v {
                    5 => Ok(Protocol::V5),
                    _ => Err(E::invalid_value(de::Unexpected::Signed(v), &self)),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// One validated broker connection: where, as whom, and how.
#[derive(Clone, PartialEq)]
pub struct BrokerSettings {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// MQTT 3.1.1 or 5.
    pub protocol: Protocol,
    /// Client id (names the broker-side session), with `{hostname}` already replaced.
    pub client_id: String,
    /// Whether each connect starts a new session (3.1.1: clean session; 5: clean start).
    pub clean_session: bool,
    /// MQTT 5: how long the broker keeps the session after a disconnect, in seconds
    /// (`u32::MAX`: never expires).
    pub session_expiry: u32,
    /// Keep-alive interval.
    pub keep_alive: Duration,
    /// User name.
    pub username: Option<String>,
    /// Password (shown as `***`).
    pub password: Option<Secret>,
    /// TLS files, if TLS is on.
    pub tls: Option<TlsConfig>,
}

/// Not derived, to keep the output short and to show plainly that the password is hidden.
impl fmt::Debug for BrokerSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BrokerSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("protocol", &self.protocol)
            .field("client_id", &self.client_id)
            .field("clean_session", &self.clean_session)
            .field("session_expiry", &self.session_expiry)
            .field("keep_alive", &self.keep_alive)
            .field("username", &self.username)
            .field("password", &self.password)
            .field("tls", &self.tls)
            .finish()
    }
}

/// The broker keys of a section, as written, borrowed from its config struct.
pub(super) struct BrokerKeys<'a> {
    pub(super) host: &'a str,
    pub(super) port: Option<u16>,
    pub(super) protocol: Protocol,
    pub(super) client_id: Option<&'a str>,
    pub(super) keep_alive: Duration,
    pub(super) username: Option<&'a String>,
    pub(super) password: Option<&'a Secret>,
    pub(super) tls: Option<&'a TlsConfig>,
}

/// The [`BrokerKeys`] of a config struct that has them all, under the same names
/// (`[[sources.mqtt]]`, `[[sinks.mqtt]]`).
macro_rules! broker_keys {
    ($c:expr) => {
        $crate::config::broker::BrokerKeys {
            host: &$c.host,
            port: $c.port,
            protocol: $c.protocol,
            client_id: $c.client_id.as_deref(),
            keep_alive: $c.keep_alive,
            username: $c.username.as_ref(),
            password: $c.password.as_ref(),
            tls: $c.tls.as_ref(),
        }
    };
}
pub(super) use broker_keys;

/// How a section wants its session kept.
pub(super) struct SessionKeys {
    pub(super) clean_session: bool,
    pub(super) session_expiry: Option<Duration>,
}

/// The placeholder in a client id that becomes the machine's host name, so that one
/// configuration file gives every collector its own session.
pub const HOSTNAME_PLACEHOLDER: &str = "{hostname}";

/// Validates the broker keys of the section at `path`; `default_client_id` is used when
/// none is written.
pub(super) fn validate(
    k: &BrokerKeys<'_>,
    session: &SessionKeys,
    default_client_id: &str,
    path: &str,
    p: &mut Problems,
) -> BrokerSettings {
    let host = k.host.trim();
    if host.is_empty() {
        p.add(format!("{path}.host"), "must not be empty");
    } else if host.contains(['@', '/', ' ', '\t']) {
        // `mqtt://user:password@host` would be printed wherever the host is (logs, doctor).
        p.add(
            format!("{path}.host"),
            "must be a host name or an address, without scheme, user, password or path (set `port`, `username`, `password` and `tls` apart)",
        );
    }
    p.check(k.port != Some(0), format!("{path}.port"), "must not be 0");
    let written = k.client_id.unwrap_or(default_client_id);
    let client_id = if written.contains(HOSTNAME_PLACEHOLDER) {
        match hostname() {
            Some(h) => written.replace(HOSTNAME_PLACEHOLDER, &h),
            None => {
                p.add(
                    format!("{path}.client_id"),
                    "cannot read this machine's host name for `{hostname}`",
                );
                written.to_string()
            }
        }
    } else {
        written.to_string()
    };
    p.check(
        !client_id.is_empty() && client_id.len() <= 65_535,
        format!("{path}.client_id"),
        "must not be empty",
    );
    p.check(
        (5..=65_535).contains(&k.keep_alive.as_secs()),
        format!("{path}.keep_alive"),
        "must be between 5s and 65535s",
    );
    p.check(
        k.password.is_none() || k.username.is_some(),
        format!("{path}.password"),
        "a password needs a `username`",
    );
    if let Some(tls) = k.tls {
        check_tls(tls, &format!("{path}.tls"), p);
    }
    let session_expiry = match (k.protocol, session.session_expiry) {
        (Protocol::V311, Some(_)) => {
            p.add(
                format!("{path}.session_expiry"),
                "only for protocol = \"5\" (with 3.1.1, clean_session = false keeps the session until the broker expires it)",
            );
            0
        }
        (_, Some(d)) if d.as_secs() >= u64::from(u32::MAX) => {
            p.add(
                format!("{path}.session_expiry"),
                "must be less than 136 years (leave it out for a session that never expires)",
            );
            0
        }
        (_, Some(d)) => u32::try_from(d.as_secs()).unwrap_or(0),
        // As a 3.1.1 persistent session: kept until the broker itself expires it.
        (_, None) if !session.clean_session => u32::MAX,
        (_, None) => 0,
    };
    BrokerSettings {
        host: k.host.trim().to_string(),
        port: k.port.unwrap_or(if k.tls.is_some() { 8883 } else { 1883 }),
        protocol: k.protocol,
        client_id,
        clean_session: session.clean_session,
        session_expiry,
        keep_alive: k.keep_alive,
        username: k.username.cloned(),
        password: k.password.cloned(),
        tls: k.tls.cloned(),
    }
}

/// Checks a `tls` section (MQTT or InfluxDB alike) at key `path`: its files can be read.
pub(super) fn check_tls(tls: &TlsConfig, path: &str, p: &mut Problems) {
    p.check(
        tls.client_cert_file.is_some() == tls.client_key_file.is_some(),
        path,
        "`client_cert_file` and `client_key_file` go together",
    );
    for (key, file) in [
        ("ca_file", &tls.ca_file),
        ("client_cert_file", &tls.client_cert_file),
        ("client_key_file", &tls.client_key_file),
    ] {
        if let Some(f) = file {
            p.readable_file(f, format!("{path}.{key}"));
        }
    }
}

/// This machine's host name (Linux), or `$HOSTNAME`.
fn hostname() -> Option<String> {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .chain(std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .find(|h| !h.is_empty())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::settings::tests::errors;
    use super::super::Config;
    use super::*;

    const SOURCE: &str = r#"
        [[sources.mqtt]]
        host = "localhost"
        PROTOCOL
        [[sources.mqtt.subscriptions]]
        topic = "sensors/{device}/{measurement}"
    "#;

    fn source(extra: &str) -> String {
        SOURCE.replace("PROTOCOL", extra)
    }

    #[test]
    fn the_protocol_is_3_1_1_unless_5_is_asked_for() {
        for (written, want) in [
            ("", Protocol::V311),
            ("protocol = \"3.1.1\"", Protocol::V311),
            ("protocol = \"5\"", Protocol::V5),
            ("protocol = 5", Protocol::V5),
        ] {
            let s = Config::from_toml(&source(written))
                .and_then(Config::validate)
                .unwrap();
            assert_eq!(s.mqtt[0].broker.protocol, want, "{written}");
        }
        let errs = errors(&source("protocol = \"4\""));
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].starts_with("sources.mqtt[0].protocol: ") && errs[0].contains("\"5\""),
            "{errs:?}"
        );
    }

    #[test]
    fn session_expiry_defaults_follow_clean_session_and_is_only_for_5() {
        let expiry = |extra: &str| {
            Config::from_toml(&source(extra))
                .and_then(Config::validate)
                .map(|s| s.mqtt[0].broker.session_expiry)
        };
        assert_eq!(expiry("protocol = \"5\"").unwrap(), u32::MAX);
        assert_eq!(expiry("protocol = \"5\"\nclean_session = true").unwrap(), 0);
        assert_eq!(
            expiry("protocol = \"5\"\nsession_expiry = \"1h\"").unwrap(),
            3600
        );
        assert_eq!(
            errors(&source("session_expiry = \"1h\"")),
            vec!["sources.mqtt[0].session_expiry: only for protocol = \"5\" (with 3.1.1, clean_session = false keeps the session until the broker expires it)"]
        );
    }

    #[test]
    fn hostname_in_a_client_id_becomes_this_machines_name() {
        let s = Config::from_toml(&source("client_id = \"collector-{hostname}\""))
            .and_then(Config::validate)
            .unwrap();
        let id = &s.mqtt[0].broker.client_id;
        assert_eq!(id, &format!("collector-{}", hostname().unwrap()));
        assert!(!id.contains('{'));
    }

    #[test]
    fn shared_subscriptions_get_a_client_id_per_machine_and_a_valid_group() {
        let shared = SOURCE
            .replace("PROTOCOL", "protocol = \"5\"\nreceive_maximum = 500")
            .replace("topic = \"", "topic = \"$share/collectors/");
        let s = Config::from_toml(&shared)
            .and_then(Config::validate)
            .unwrap();
        let m = &s.mqtt[0];
        assert_eq!(
            m.broker.client_id,
            format!("telemetry-collector-mqtt-0-{}", hostname().unwrap())
        );
        assert_eq!(m.receive_maximum, 500);
        assert_eq!(
            m.subscriptions[0].template.filter(),
            "$share/collectors/sensors/+/+"
        );
        let errs = errors(&shared.replace("$share/collectors/", "$share/a+b/"));
        assert_eq!(
            errs,
            vec!["sources.mqtt[0].subscriptions[0].topic: invalid shared subscription group `a+b`"]
        );
        assert_eq!(
            errors(&source("receive_maximum = 10")),
            vec!["sources.mqtt[0].receive_maximum: only for protocol = \"5\" (a 3.1.1 broker sets its own window, e.g. Mosquitto's max_inflight_messages)"]
        );
        // The default window is what the channel in front of the journal holds.
        let s = Config::from_toml(&source("protocol = \"5\""))
            .and_then(Config::validate)
            .unwrap();
        assert_eq!(s.mqtt[0].receive_maximum, 1024);
    }

    #[test]
    fn credentials_in_the_host_are_refused_without_being_shown() {
        let errs = errors(&source("").replace(
            "host = \"localhost\"",
            "host = \"mqtt://user:s3cret@broker\"",
        ));
        assert_eq!(
            errs,
            vec!["sources.mqtt[0].host: must be a host name or an address, without scheme, user, password or path (set `port`, `username`, `password` and `tls` apart)"]
        );
    }
}
