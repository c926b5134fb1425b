//! A Modbus TCP server: one device, or a gateway with several units behind it. It can be
//! stopped (every connection closed) and started again on the same address.

use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{Answer, ModbusDevice};

/// Exception 0x0B: the gateway's target device failed to respond.
const GATEWAY_TARGET_FAILED: u8 = 0x0B;

/// A running server.
#[derive(Debug)]
pub struct TcpGateway {
    addr: SocketAddr,
    devices: Vec<ModbusDevice>,
    running: Option<(CancellationToken, JoinHandle<()>)>,
}

impl TcpGateway {
    /// Serves `devices` on `addr` (port 0: a free one). A request to a unit that no device
    /// has is answered with exception 0x0B, as gateways do; a server with one device
    /// answers unit 0 and 255 as that device.
    ///
    /// # Errors
    /// The address cannot be bound.
    pub async fn start(addr: SocketAddr, devices: Vec<ModbusDevice>) -> io::Result<TcpGateway> {
        let mut g = TcpGateway {
            addr,
            devices,
            running: None,
        };
        g.start_again().await?;
        Ok(g)
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops listening and closes every connection.
    pub async fn stop(&mut self) {
        if let Some((stop, task)) = self.running.take() {
            stop.cancel();
            let _ = task.await;
        }
    }

    /// Listens again on the same address (after [`TcpGateway::stop`]).
    ///
    /// # Errors
    /// The address cannot be bound.
    pub async fn start_again(&mut self) -> io::Result<()> {
        self.stop().await;
        let listener = TcpListener::bind(self.addr).await?;
        self.addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let task = tokio::spawn(accept(listener, self.devices.clone(), stop.clone()));
        self.running = Some((stop, task));
        Ok(())
    }
}

async fn accept(listener: TcpListener, devices: Vec<ModbusDevice>, stop: CancellationToken) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    let _ = stream.set_nodelay(true);
                    let (devices, stop) = (devices.clone(), stop.clone());
                    connections.spawn(async move {
                        tokio::select! {
                            () = stop.cancelled() => {}
                            _ = serve(stream, &devices) => {}
                        }
                    });
                }
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    connections.shutdown().await;
}

/// Answers the requests of one connection until it closes or sends something that is not
/// Modbus TCP.
async fn serve(mut stream: TcpStream, devices: &[ModbusDevice]) -> io::Result<()> {
    let mut header = [0u8; 7];
    let mut pdu = vec![0u8; 253];
    loop {
        stream.read_exact(&mut header).await?;
        let [t0, t1, p0, p1, l0, l1, unit] = header;
        let len = usize::from(u16::from_be_bytes([l0, l1]));
        if u16::from_be_bytes([p0, p1]) != 0 || !(2..=254).contains(&len) {
            return Ok(());
        }
        let pdu = &mut pdu[..len - 1];
        stream.read_exact(pdu).await?;
        let device = devices
            .iter()
            .find(|d| d.unit() == unit)
            .or_else(|| (devices.len() == 1 && matches!(unit, 0 | 255)).then(|| &devices[0]));
        let answer = match device {
            Some(d) => d.answer(pdu),
            None => Answer::Pdu(
                vec![pdu[0] | 0x80, GATEWAY_TARGET_FAILED],
                Default::default(),
            ),
        };
        let bytes = match answer {
            Answer::Silence => continue,
            Answer::Pdu(body, delay) => {
                tokio::time::sleep(delay).await;
                let mut out = Vec::with_capacity(7 + body.len());
                out.extend_from_slice(&[t0, t1, 0, 0]);
                out.extend_from_slice(&(body.len() as u16 + 1).to_be_bytes());
                out.push(unit);
                out.extend_from_slice(&body);
                out
            }
            Answer::BadCrc(_) | Answer::Garbage(_) => {
                // No checksum over TCP: a damaged answer is a header that makes no sense.
                vec![t0, t1, 0xFF, 0xFF, 0, 2, unit, 0xFF]
            }
        };
        stream.write_all(&bytes).await?;
    }
}
