//! A TCP relay between the engine and a broker that can swallow the broker's PUBREL packets, so a
//! test can stop the engine at the one moment QoS 2 is fragile: after the engine answered a message
//! with PUBREC and before the broker's PUBREL reached it; or close each connection right after the
//! broker accepted it, as a broker that keeps dropping a client does. Real packets, real sockets: it
//! only reads MQTT's fixed header to find where each packet ends.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// A relay on a free port of 127.0.0.1 toward a broker's port, dropped with its task.
pub struct Relay {
    pub port: u16,
    swallow: Arc<AtomicBool>,
    swallowed: Arc<AtomicUsize>,
    cut: Arc<AtomicBool>,
    closer: Arc<Notify>,
    task: JoinHandle<()>,
}

impl Relay {
    /// Starts relaying every connection made to `Relay::port` to `broker_port`.
    pub async fn start(broker_port: u16) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the relay");
        let port = listener.local_addr().expect("relay address").port();
        let swallow = Arc::new(AtomicBool::new(false));
        let swallowed = Arc::new(AtomicUsize::new(0));
        let cut = Arc::new(AtomicBool::new(false));
        let closer = Arc::new(Notify::new());
        let modes = Modes {
            swallow: Arc::clone(&swallow),
            swallowed: Arc::clone(&swallowed),
            cut: Arc::clone(&cut),
            closer: Arc::clone(&closer),
        };
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(broker) = TcpStream::connect(("127.0.0.1", broker_port)).await else {
                    continue;
                };
                tokio::spawn(relay(client, broker, modes.clone()));
            }
        });
        Relay {
            port,
            swallow,
            swallowed,
            cut,
            closer,
            task,
        }
    }

    /// From now on, PUBREL packets from the broker are dropped (`true`) or passed on (`false`).
    pub fn swallow_pubrel(&self, on: bool) {
        self.swallow.store(on, Ordering::SeqCst);
    }

    /// From now on, every connection is closed right after the broker's CONNACK passed (`true`).
    pub fn cut_after_connack(&self, on: bool) {
        self.cut.store(on, Ordering::SeqCst);
    }

    /// Closes every connection relayed now.
    pub fn close_all(&self) {
        self.closer.notify_waiters();
    }

    /// How many PUBREL packets were dropped so far.
    pub fn swallowed(&self) -> usize {
        self.swallowed.load(Ordering::SeqCst)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone)]
struct Modes {
    swallow: Arc<AtomicBool>,
    swallowed: Arc<AtomicUsize>,
    cut: Arc<AtomicBool>,
    closer: Arc<Notify>,
}

async fn relay(client: TcpStream, broker: TcpStream, modes: Modes) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut broker_read, mut broker_write) = broker.into_split();
    let upstream = async {
        let _ = tokio::io::copy(&mut client_read, &mut broker_write).await;
        let _ = broker_write.shutdown().await;
    };
    let downstream = async {
        while let Some(packet) = read_packet(&mut broker_read).await {
            // PUBREL: packet type 6 with the flags 0b0010.
            if packet[0] == 0x62 && modes.swallow.load(Ordering::SeqCst) {
                modes.swallowed.fetch_add(1, Ordering::SeqCst);
                continue;
            }
            if client_write.write_all(&packet).await.is_err() {
                break;
            }
            // CONNACK: packet type 2.
            if packet[0] == 0x20 && modes.cut.load(Ordering::SeqCst) {
                break;
            }
        }
        let _ = client_write.shutdown().await;
    };
    // Dropping both halves of both sockets closes the connection on either side.
    tokio::select! {
        _ = async { tokio::join!(upstream, downstream) } => {}
        _ = modes.closer.notified() => {}
    }
}

/// One whole MQTT packet (fixed header included), or None at the end of the stream.
async fn read_packet(from: &mut (impl AsyncReadExt + Unpin)) -> Option<Vec<u8>> {
    let mut packet = vec![from.read_u8().await.ok()?];
    let mut length = 0usize;
    for shift in 0..4 {
        let byte = from.read_u8().await.ok()?;
        packet.push(byte);
        length |= usize::from(byte & 0x7f) << (7 * shift);
        if byte & 0x80 == 0 {
            break;
        }
    }
    let start = packet.len();
    packet.resize(start + length, 0);
    from.read_exact(&mut packet[start..]).await.ok()?;
    Some(packet)
}
