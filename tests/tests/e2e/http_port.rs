//! The HTTP port beyond loopback: over TLS (curl, with a CA the test makes), asking for
//! credentials (a bearer token, basic authentication), a client certificate where one is
//! required, and a client that never finishes its TLS handshake cut off at the head timeout.

use std::path::Path;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::harness::{
    collector_config, free_port, make_certificates, wait_for, with_http, InProcess,
    JSON_SUBSCRIPTION, WAIT,
};

/// The longest a connection the server must close may stay open in these tests.
const BOUND: Duration = Duration::from_secs(10);

/// A collector (its broker away: only the HTTP port matters here) serving HTTPS on a free
/// port with `extra` in `[http]` (after the listen address) and `sections` appended.
struct Port {
    collector: InProcess,
    port: u16,
    dir: tempfile::TempDir,
}

impl Port {
    fn start(extra: &str, sections: impl FnOnce(&Path) -> String) -> Port {
        let dir = tempfile::tempdir().unwrap();
        make_certificates(dir.path());
        let port = free_port();
        let listen = format!("listen = \"127.0.0.1:{port}\"");
        let toml = with_http(
            &collector_config(dir.path(), free_port(), "http-port", JSON_SUBSCRIPTION),
            port,
        )
        .replace(&listen, &format!("{listen}\n{extra}"));
        let toml = format!(
            "{toml}\n[http.tls]\ncert_file = \"{d}/server.pem\"\nkey_file = \"{d}/server.key\"\n{}",
            sections(dir.path()),
            d = dir.path().display()
        );
        Port {
            collector: InProcess::spawn(&toml),
            port,
            dir,
        }
    }

    /// curl `path` over HTTPS, trusting the test CA, with `args`: the status code (0 when
    /// no HTTP answer came), the `WWW-Authenticate` header and the body.
    async fn curl(&self, path: &str, args: &[&str]) -> (u16, String, String) {
        let out = tokio::process::Command::new("curl")
            .args(["-sS", "--max-time", "10", "--cacert"])
            .arg(self.dir.path().join("ca.pem"))
            .args(["-w", "\n%{http_code} %header{www-authenticate}"])
            .args(args)
            .arg(format!("https://127.0.0.1:{}{path}", self.port))
            .output()
            .await
            .expect("curl is installed (scripts/test.sh installs it)");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, last) = text.rsplit_once('\n').unwrap_or(("", &text));
        let (code, challenge) = last.split_once(' ').unwrap_or((last, ""));
        (
            code.parse().unwrap_or(0),
            challenge.to_string(),
            body.to_string(),
        )
    }

    /// Waits until the port answers `/health` (200, or 401 if it demands more).
    async fn ready(&self, args: &[&str]) {
        let deadline = Instant::now() + WAIT;
        loop {
            let code = self.curl("/health", args).await.0;
            if code != 0 {
                return;
            }
            assert!(Instant::now() < deadline, "the HTTPS port never answered");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn closed(&self, reason: &str) -> u64 {
        self.collector
            .count("http_connections_closed_total", &[("reason", reason)])
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_a_bearer_token_is_required_and_health_tells_only_its_status_without() {
    let port = Port::start("", |dir| {
        std::fs::write(dir.join("token"), "s3cret-t0ken\n").unwrap();
        format!("[http.auth]\ntoken_file = \"{}/token\"\n", dir.display())
    });
    port.ready(&[]).await;
    let bearer = ["-H", "Authorization: Bearer s3cret-t0ken"];

    let (code, challenge, body) = port.curl("/metrics", &[]).await;
    assert_eq!(
        (code, challenge.as_str()),
        (401, "Bearer realm=\"telemetry-collector\""),
        "{body}"
    );
    let wrong = ["-H", "Authorization: Bearer s3cret-t0ke"];
    assert_eq!(port.curl("/metrics", &wrong).await.0, 401);
    assert_eq!(port.curl("/api/v1/devices", &[]).await.0, 401);
    assert_eq!(port.curl("/", &[]).await.0, 401);

    let (code, _, body) = port.curl("/metrics", &bearer).await;
    assert_eq!(code, 200);
    assert!(body.contains("http_connections_open"), "{body}");
    // Open to probes, but only the status; the report needs the token.
    assert_eq!(port.curl("/health", &[]).await.2, "{\"status\":\"ok\"}\n");
    let (code, _, body) = port.curl("/health", &bearer).await;
    assert_eq!(code, 200);
    assert!(body.contains("\"journal\""), "{body}");
    // The server's certificate is checked: without the test CA, curl refuses it.
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", "-o", "/dev/null"])
        .arg(format!("https://127.0.0.1:{}/health", port.port))
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(60), "curl: certificate not trusted");
    // Plain HTTP to the HTTPS port: no answer, a failed handshake counted.
    assert_eq!(crate::harness::http(port.port, "GET", "/health", "").0, 0);
    wait_for("the failed handshake counted", WAIT, || {
        port.closed("tls_handshake") >= 1
    })
    .await;
    port.collector.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_authentication_with_a_required_client_certificate() {
    let port = Port::start("", |dir| {
        std::fs::write(dir.join("password"), "pa:ss w\u{f6}rd\n").unwrap();
        format!(
            "client_ca_file = \"{d}/ca.pem\"\n[http.auth]\nusername = \"ops\"\npassword_file = \"{d}/password\"\n",
            d = dir.display()
        )
    });
    let d = port.dir.path().display().to_string();
    let (cert, key) = (format!("{d}/client.pem"), format!("{d}/client.key"));
    let with_cert = ["--cert", cert.as_str(), "--key", key.as_str()];
    port.ready(&with_cert).await;

    // Without a client certificate, no TLS session at all.
    assert_eq!(port.curl("/health", &[]).await.0, 0);
    wait_for("the refused handshake counted", WAIT, || {
        port.closed("tls_handshake") >= 1
    })
    .await;

    let (code, challenge, _) = port.curl("/api/v1/devices", &with_cert).await;
    assert_eq!(code, 401);
    assert_eq!(
        challenge,
        "Basic realm=\"telemetry-collector\", charset=\"UTF-8\""
    );
    let mut wrong = with_cert.to_vec();
    wrong.extend(["-u", "ops:pa:ss wOrd"]);
    assert_eq!(port.curl("/metrics", &wrong).await.0, 401);
    let mut right = with_cert.to_vec();
    right.extend(["-u", "ops:pa:ss w\u{f6}rd"]);
    let (code, _, body) = port.curl("/metrics", &right).await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("http_connections_open"), "{body}");
    port.collector.stop().await;
}

/// Reads until the server closes `stream`; `None` if it is still open after `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Option<()> {
    let read = async {
        let mut buf = [0u8; 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(within, read).await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_or_slow_tls_client_is_cut_off_and_the_connection_limit_holds() {
    let header_timeout = Duration::from_millis(500);
    let port = Port::start("header_timeout = \"500ms\"\nmax_connections = 2\n", |_| {
        String::new()
    });
    port.ready(&[]).await;
    let started = Instant::now();
    // One says nothing after connecting; the other starts a TLS record and sends its
    // hello a byte every 50 ms.
    let mut silent = TcpStream::connect(("127.0.0.1", port.port)).await.unwrap();
    let slow = TcpStream::connect(("127.0.0.1", port.port)).await.unwrap();
    let (mut slow_read, mut slow_write) = slow.into_split();
    tokio::spawn(async move {
        let mut hello = vec![
            0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
        ];
        hello.resize(517, 0x41);
        for b in hello {
            if slow_write.write_all(&[b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let open = || {
        port.collector
            .metrics
            .gauges()
            .into_iter()
            .find(|(k, _)| k.name == "http_connections_open")
            .map_or(0, |(_, v)| v)
    };
    wait_for("two connections open", WAIT, || open() == 2).await;
    // A third is over the limit: closed at once, while the two are still held.
    let mut third = TcpStream::connect(("127.0.0.1", port.port)).await.unwrap();
    closed_within(&mut third, BOUND)
        .await
        .expect("the third is refused");
    assert_eq!(
        port.collector.count("http_connections_refused_total", &[]),
        1
    );
    assert_eq!(open(), 2, "refused while the two were held");

    closed_within(&mut silent, BOUND)
        .await
        .expect("the silent client is cut off");
    let mut buf = Vec::new();
    tokio::time::timeout(BOUND, slow_read.read_to_end(&mut buf))
        .await
        .expect("the slow client is cut off")
        .ok();
    assert!(started.elapsed() >= header_timeout);
    wait_for("both counted", WAIT, || {
        port.closed("header_timeout") == 2 && open() == 0
    })
    .await;
    // And the port serves again.
    assert_eq!(port.curl("/health", &[]).await.0, 200);
    port.collector.stop().await;
}
