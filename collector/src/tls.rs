//! TLS for every remote the collector connects to (MQTT brokers, InfluxDB servers): one
//! rustls configuration, built here from the same keys wherever they appear (`ca_file`,
//! `client_cert_file`, `client_key_file`), with the ring provider, the one crypto provider of
//! the whole build. And the server side, for the HTTP port ([`server_config`]).
//!
//! Trust: the CA certificates of `ca_file` when it is given (a private CA, or a server's own
//! self-signed certificate if it was made as a CA), else the system's roots. There is no
//! switch that turns verification off: a server with a private certificate is trusted by
//! naming its CA, which keeps the connection authenticated.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::config::{HttpTlsConfig, TlsConfig};

/// Why a TLS configuration cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file that cannot be read or parsed (the cause is the source, not repeated here).
    #[error("{}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// A certificate file with no certificate in it.
    #[error("{}: no certificate found", .0.display())]
    NoCertificate(PathBuf),
    /// A CA certificate that rustls refuses as a trust anchor.
    #[error("{}: invalid CA certificate", path.display())]
    InvalidCa {
        /// The file.
        path: PathBuf,
        /// What rustls said.
        #[source]
        source: rustls::Error,
    },
    /// The client certificate and key do not belong together, or rustls refuses them.
    #[error("the client certificate and key cannot be used together")]
    ClientAuth(#[source] rustls::Error),
    /// The server certificate and key do not belong together, or rustls refuses them.
    #[error("the server certificate and key cannot be used together")]
    ServerCert(#[source] rustls::Error),
    /// The client CAs cannot verify client certificates.
    #[error("{}: cannot verify client certificates with it", path.display())]
    ClientVerifier {
        /// The file.
        path: PathBuf,
        /// What rustls said.
        #[source]
        source: rustls::server::VerifierBuilderError,
    },
    /// No protocol version is left (cannot happen with rustls' safe defaults).
    #[error("TLS protocol versions")]
    Versions(#[source] rustls::Error),
}

/// The client configuration for `tls` (`None`: the system's roots, no client certificate).
///
/// # Errors
/// A file that cannot be read or holds no usable certificate or key ([`TlsError`]).
pub fn client_config(tls: Option<&TlsConfig>) -> Result<ClientConfig, TlsError> {
    let mut roots = RootCertStore::empty();
    match tls.and_then(|t| t.ca_file.as_deref()) {
        Some(path) => {
            for cert in certs(path)? {
                roots.add(cert).map_err(|source| TlsError::InvalidCa {
                    path: path.to_path_buf(),
                    source,
                })?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
        }
    }
    let provider = Arc::new(ring_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Versions)?
        .with_root_certificates(roots);
    let client = tls.and_then(|t| {
        t.client_cert_file
            .as_deref()
            .zip(t.client_key_file.as_deref())
    });
    let config = match client {
        Some((cert, key)) => builder
            .with_client_auth_cert(certs(cert)?, private_key(key)?)
            .map_err(TlsError::ClientAuth)?,
        None => builder.with_no_client_auth(),
    };
    Ok(config)
}

/// The server configuration of the HTTP port: its certificate chain and key, and, with
/// `client_ca_file`, a client certificate from one of those CAs required of every client.
/// It offers only HTTP/1.1 (ALPN), the one protocol the port speaks.
///
/// # Errors
/// A file that cannot be read or holds no usable certificate or key ([`TlsError`]).
pub fn server_config(tls: &HttpTlsConfig) -> Result<ServerConfig, TlsError> {
    let provider = Arc::new(ring_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Versions)?;
    let builder = match &tls.client_ca_file {
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for cert in certs(path)? {
                roots.add(cert).map_err(|source| TlsError::InvalidCa {
                    path: path.clone(),
                    source,
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|source| TlsError::ClientVerifier {
                    path: path.clone(),
                    source,
                })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs(&tls.cert_file)?, private_key(&tls.key_file)?)
        .map_err(TlsError::ServerCert)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The *ring* provider, the tree's one crypto provider (deny.toml bans aws-lc). rustls
/// 0.23.48 deprecated its constructor because *ring* has no post-quantum key exchange (of
/// rustls's own providers only aws-lc-rs has X25519MLKEM768): connections use X25519 or
/// the NIST curves, as they always did here (README, "Security").
#[allow(deprecated)]
fn ring_provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = |source| TlsError::Pem {
        path: path.to_path_buf(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(pem)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(path.to_path_buf()));
    }
    Ok(certs)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|source| TlsError::Pem {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn unreadable_and_empty_files_are_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = TlsConfig {
            ca_file: Some(dir.path().join("nope.pem")),
            ..TlsConfig::default()
        };
        let e = client_config(Some(&missing)).unwrap_err().to_string();
        assert!(e.contains("nope.pem"), "{e}");

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = client_config(Some(&TlsConfig {
            ca_file: Some(empty),
            ..TlsConfig::default()
        }))
        .unwrap_err()
        .to_string();
        assert!(e.contains("empty.pem: no certificate found"), "{e}");
    }

    #[test]
    fn without_settings_the_system_roots_are_trusted() {
        let config = client_config(None).unwrap();
        assert!(!config.client_auth_cert_resolver.has_certs());
    }
}
