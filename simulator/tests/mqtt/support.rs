//! Helpers: an in-process broker on a free port, a recording subscriber, and a TCP proxy that
//! can cut connections, swallow traffic and switch brokers.

use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use simulator::{Broker, BrokerHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Bound of every wait in these tests.
pub(crate) const WAIT: Duration = Duration::from_secs(20);

/// Starts an in-process broker on a free port.
pub(crate) async fn start_broker() -> BrokerHandle {
    let addr = {
        let probe = StdListener::bind("127.0.0.1:0").expect("bind");
        probe.local_addr().expect("addr")
    };
    tokio::task::spawn_blocking(move || Broker::start(addr))
        .await
        .expect("join")
        .expect("broker starts")
}

/// (topic, payload) of every publish received, in arrival order.
type Received = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// A subscriber with a persistent session that records every publish it receives.
pub(crate) struct Subscriber {
    received: Received,
    count: watch::Receiver<usize>,
    stop: CancellationToken,
}

impl Subscriber {
    /// Connects to `addr`, subscribes to `filter` at QoS 1 and returns once the broker
    /// acknowledged the subscription.
    pub(crate) async fn start(addr: SocketAddr, client_id: &str, filter: &str) -> Self {
        let mut options = MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
        options
            .set_clean_session(false)
            .set_max_packet_size(256 * 1024, 256 * 1024);
        let (client, mut eventloop) = AsyncClient::new(options, 10);
        let received: Received = Arc::default();
        let (count_tx, count) = watch::channel(0);
        let (ready_tx, mut ready) = watch::channel(false);
        let stop = CancellationToken::new();
        let (filter, sink, task_stop) = (filter.to_owned(), received.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let event = tokio::select! {
                    () = task_stop.cancelled() => return,
                    event = eventloop.poll() => event,
                };
                match event {
                    // Subscribe on every connection, as a collector must.
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        client
                            .try_subscribe(filter.clone(), QoS::AtLeastOnce)
                            .expect("subscribe");
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        ready_tx.send_replace(true);
                    }
                    Ok(Event::Incoming(Packet::Publish(publish))) => {
                        let mut all = sink.lock().expect("lock");
                        all.push((publish.topic.clone(), publish.payload.to_vec()));
                        count_tx.send_replace(all.len());
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        tokio::time::timeout(WAIT, ready.wait_for(|ready| *ready))
            .await
            .expect("subscribed in time")
            .expect("subscriber alive");
        Self {
            received,
            count,
            stop,
        }
    }

    /// Waits until at least `n` publishes have arrived.
    pub(crate) async fn wait_for(&mut self, n: usize) {
        let in_time = tokio::time::timeout(WAIT, self.count.wait_for(|count| *count >= n))
            .await
            .is_ok();
        let count = *self.count.borrow();
        assert!(in_time, "received {count} of {n} messages in time");
    }

    /// Everything received so far, in arrival order.
    pub(crate) fn received(&self) -> Vec<(String, Vec<u8>)> {
        self.received.lock().expect("lock").clone()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A TCP proxy in front of a broker.
pub(crate) struct Proxy {
    addr: SocketAddr,
    state: Arc<ProxyState>,
}

struct ProxyState {
    /// Upstream address and the token that cuts the connections made to it.
    route: Mutex<(SocketAddr, CancellationToken)>,
    /// Swallow client-to-broker traffic instead of forwarding it.
    blackhole: AtomicBool,
    discarded: AtomicUsize,
}

impl Proxy {
    /// Listens on a free port and forwards to `upstream`.
    pub(crate) async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(ProxyState {
            route: Mutex::new((upstream, CancellationToken::new())),
            blackhole: AtomicBool::new(false),
            discarded: AtomicUsize::new(0),
        });
        let accept_state = state.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (upstream, cut) = accept_state.route.lock().expect("lock").clone();
                let state = accept_state.clone();
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(upstream).await {
                        pipe(client, server, cut, state).await;
                    }
                });
            }
        });
        Self { addr, state }
    }

    /// The proxy's address.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// From now on, swallow what clients send.
    pub(crate) fn blackhole(&self) {
        self.state.blackhole.store(true, Ordering::SeqCst);
    }

    /// Bytes swallowed so far.
    pub(crate) fn discarded(&self) -> usize {
        self.state.discarded.load(Ordering::SeqCst)
    }

    /// Cuts every connection, stops swallowing, and sends new connections to `upstream`.
    pub(crate) fn cut(&self, upstream: SocketAddr) {
        let mut route = self.state.route.lock().expect("lock");
        route.1.cancel();
        *route = (upstream, CancellationToken::new());
        self.state.blackhole.store(false, Ordering::SeqCst);
    }
}

async fn pipe(
    client: TcpStream,
    server: TcpStream,
    cut: CancellationToken,
    state: Arc<ProxyState>,
) {
    let (mut client_rx, mut client_tx) = client.into_split();
    let (mut server_rx, mut server_tx) = server.into_split();
    let upstream = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match client_rx.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if state.blackhole.load(Ordering::SeqCst) {
                state.discarded.fetch_add(n, Ordering::SeqCst);
            } else if server_tx.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    let downstream = tokio::io::copy(&mut server_rx, &mut client_tx);
    tokio::select! {
        () = cut.cancelled() => {}
        () = upstream => {}
        _ = downstream => {}
    }
}
