//! Running under systemd: readiness and the watchdog, through a notification socket the
//! test owns.

use crate::harness::*;
use std::os::unix::net::UnixDatagram;

/// The next notification datagram, within [`WAIT`].
fn next_message(socket: &UnixDatagram) -> String {
    socket.set_read_timeout(Some(WAIT)).unwrap();
    let mut buf = [0u8; 512];
    let len = socket
        .recv(&mut buf)
        .expect("a notification within the wait");
    String::from_utf8_lossy(&buf[..len]).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_is_sent_once_running_and_the_watchdog_is_fed() {
    let broker = Mosquitto::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("collector.toml");
    std::fs::write(
        &config,
        collector_config(dir.path(), broker.port, "notify", JSON_SUBSCRIPTION),
    )
    .unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();

    let collector = Process::start_with_env(
        &config,
        &[
            ("NOTIFY_SOCKET", socket_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "400000"),
        ],
    )
    .await;
    assert!(next_message(&socket).starts_with("READY=1"));
    for _ in 0..3 {
        assert_eq!(next_message(&socket), "WATCHDOG=1");
    }
    collector.terminate();
    assert_eq!(next_message(&socket), "STOPPING=1");
}
