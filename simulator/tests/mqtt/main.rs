//! The publisher against a real broker (the in-process rumqttd) and a real subscriber.

mod support;

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use simulator::{
    publish, FaultConfig, FaultKind, Fleet, FleetConfig, Message, PayloadFormat, PublishConfig,
};
use support::{start_broker, Proxy, Subscriber, WAIT};
use tokio_util::sync::CancellationToken;

fn messages(config: FleetConfig, per_device: usize) -> Vec<Message> {
    Fleet::new(config)
        .expect("valid fleet")
        .messages(per_device)
}

fn publish_config(addr: std::net::SocketAddr, client_id_prefix: &str) -> PublishConfig {
    PublishConfig {
        host: addr.ip().to_string(),
        port: addr.port(),
        client_id_prefix: client_id_prefix.to_owned(),
        ..PublishConfig::default()
    }
}

fn keys(messages: &[Message]) -> Vec<(String, Vec<u8>)> {
    messages
        .iter()
        .map(|m| (m.topic.clone(), m.payload.clone()))
        .collect()
}

/// The payloads of each topic (one device's), in the order of `list`.
fn per_device(list: &[(String, Vec<u8>)]) -> BTreeMap<String, Vec<Vec<u8>>> {
    let mut map: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
    for (topic, payload) in list {
        map.entry(topic.clone()).or_default().push(payload.clone());
    }
    map
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_qos1_message_is_received_and_acked() {
    let broker = start_broker().await;
    let mut subscriber = Subscriber::start(broker.addr(), "sub-qos1", "sensors/#").await;
    let sent = messages(
        FleetConfig {
            devices: 30,
            sites: 4,
            faults: FaultConfig {
                every: Some(5),
                kinds: FaultKind::ALL.to_vec(),
                oversized_bytes: 32 * 1024,
            },
            ..FleetConfig::default()
        },
        20,
    );
    let cfg = PublishConfig {
        connections: 4,
        max_inflight: 20,
        ..publish_config(broker.addr(), "pub-qos1")
    };

    let report = publish(cfg, sent.clone(), CancellationToken::new())
        .await
        .expect("publish");

    assert_eq!(report.sent, sent.len());
    assert_eq!(report.acked, vec![true; sent.len()]);
    assert_eq!((report.reconnects, report.retransmissions), (0, 0));
    subscriber.wait_for(sent.len()).await;
    let received = subscriber.received();
    let mut got = received.clone();
    let mut want = keys(&sent);
    got.sort();
    want.sort();
    assert!(
        got == want,
        "received {} messages, not exactly the {} sent",
        got.len(),
        want.len()
    );

    // One connection per device, in order: each device's messages arrive in order.
    assert!(
        per_device(&received) == per_device(&keys(&sent)),
        "per-device order changed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos0_messages_are_sent_paced_and_received() {
    let broker = start_broker().await;
    let mut subscriber = Subscriber::start(broker.addr(), "sub-qos0", "plant/#").await;
    let sent = messages(
        FleetConfig {
            devices: 5,
            format: PayloadFormat::Value,
            topic_prefix: "plant".to_owned(),
            ..FleetConfig::default()
        },
        4,
    );
    let rate = 400.0;
    let cfg = PublishConfig {
        qos: 0,
        connections: 2,
        rate: Some(rate),
        ..publish_config(broker.addr(), "pub-qos0")
    };

    let started = Instant::now();
    let report = publish(cfg, sent.clone(), CancellationToken::new())
        .await
        .expect("publish");
    let elapsed = started.elapsed();

    assert_eq!(report.sent, sent.len());
    assert_eq!(
        report.acked,
        vec![false; sent.len()],
        "QoS 0 has no acknowledgements"
    );
    // Pacing is a schedule: the last message cannot go out before its slot.
    let last_slot = Duration::from_secs_f64((sent.len() - 1) as f64 / rate);
    assert!(elapsed >= last_slot, "{elapsed:?} < {last_slot:?}");
    subscriber.wait_for(sent.len()).await;
    let got: HashSet<_> = subscriber.received().into_iter().collect();
    assert_eq!(got, keys(&sent).into_iter().collect());
}

/// Cuts the connections while publishes are unacknowledged (the proxy swallowed them), then
/// lets the publisher reconnect to the same broker (which kept its session) or to a fresh one
/// (which has none). Either way every message must end up acknowledged and delivered.
async fn survives_connection_loss(lose_session: bool) {
    let broker = start_broker().await;
    let mut subscriber = Subscriber::start(broker.addr(), "sub-loss-a", "sensors/#").await;
    let fresh = start_broker().await;
    let fresh_subscriber = Subscriber::start(fresh.addr(), "sub-loss-b", "sensors/#").await;
    let proxy = Proxy::start(broker.addr()).await;
    let sent = messages(
        FleetConfig {
            devices: 10,
            ..FleetConfig::default()
        },
        30,
    );
    let cfg = PublishConfig {
        connections: 2,
        max_inflight: 10,
        rate: Some(1000.0),
        ..publish_config(proxy.addr(), "pub-loss")
    };
    let publishing = tokio::spawn(publish(cfg, sent.clone(), CancellationToken::new()));

    subscriber.wait_for(50).await;
    proxy.blackhole();
    let deadline = Instant::now() + WAIT;
    while proxy.discarded() == 0 {
        assert!(
            Instant::now() < deadline,
            "nothing published into the black hole"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    proxy.cut(if lose_session {
        fresh.addr()
    } else {
        broker.addr()
    });

    let report = tokio::time::timeout(WAIT, publishing)
        .await
        .expect("publishing finishes")
        .expect("join")
        .expect("publish");
    assert_eq!(report.acked, vec![true; sent.len()]);
    assert_eq!(report.sent, sent.len());
    assert!(report.reconnects >= 1, "{report:?}");
    assert!(report.retransmissions >= 1, "{report:?}");

    // At least once: duplicates are fine, losses are not.
    let mut got: HashSet<(String, Vec<u8>)> = HashSet::new();
    let deadline = Instant::now() + WAIT;
    loop {
        got.extend(subscriber.received());
        got.extend(fresh_subscriber.received());
        let missing = keys(&sent).into_iter().filter(|k| !got.contains(k)).count();
        if missing == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} messages never arrived"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacked_messages_are_resent_when_the_broker_kept_the_session() {
    survives_connection_loss(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacked_messages_are_resent_when_the_broker_lost_the_session() {
    survives_connection_loss(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_ends_a_publisher_that_cannot_connect() {
    // A port with nothing behind it: bound, then released.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port");
    let sent = messages(FleetConfig::default(), 2);
    let stop = CancellationToken::new();
    let publishing = tokio::spawn(publish(
        publish_config(addr, "pub-stop"),
        sent.clone(),
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(300)).await; // let it fail and back off
    stop.cancel();
    let report = tokio::time::timeout(Duration::from_secs(5), publishing)
        .await
        .expect("returns promptly after stop")
        .expect("join")
        .expect("publish");
    assert_eq!(report.sent, 0);
    assert_eq!(report.acked, vec![false; sent.len()]);
}

/// The benchmark's publisher: every message of the fleet arrives exactly as encoded, each
/// device's in order, at QoS 0 and 1 (within a window of 10 per connection), and the
/// discarding subscriber counts them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blast_delivers_the_fleets_messages_and_discard_counts_them() {
    use simulator::blast::{discard, Blast, DiscardSpec};
    for qos in [0u8, 1] {
        let broker = start_broker().await;
        let addr = broker.addr();
        let mut subscriber = Subscriber::start(addr, &format!("rec-{qos}"), "sensors/#").await;
        let sent = messages(
            FleetConfig {
                devices: 30,
                sites: 4,
                counter: false,
                ..FleetConfig::default()
            },
            20,
        );
        let spec = DiscardSpec {
            host: addr.ip().to_string(),
            port: addr.port(),
            client_id: format!("discard-{qos}"),
            filter: "sensors/#".to_owned(),
            qos,
            expected: sent.len(),
            idle: WAIT,
        };
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let discarding = tokio::task::spawn_blocking(move || {
            discard(&spec, move || ready_tx.send(()).expect("the test waits"))
        });
        tokio::task::spawn_blocking(move || ready_rx.recv_timeout(WAIT))
            .await
            .expect("join")
            .expect("discard subscribed");

        let blast = Blast::encode(sent.clone(), qos, 3).expect("encodes");
        assert_eq!(blast.messages(), sent.len());
        let host = addr.ip().to_string();
        let report = tokio::task::spawn_blocking(move || {
            let streams = blast
                .connect(&host, addr.port(), &format!("blast-{qos}"))
                .expect("connects");
            blast.send(streams, 10)
        })
        .await
        .expect("join")
        .expect("sends");
        assert_eq!((report.messages, report.acks_out_of_order), (sent.len(), 0));

        let discarded = discarding.await.expect("join").expect("discard runs");
        assert_eq!(discarded.messages, sent.len(), "QoS {qos}");
        subscriber.wait_for(sent.len()).await;
        let received = subscriber.received();
        assert!(
            per_device(&received) == per_device(&keys(&sent)),
            "QoS {qos}: not exactly the messages sent, each device's in order"
        );
    }
}
