//! The `/metrics` endpoint: a minimal HTTP/1.1 responder on a tokio `TcpListener`, because a
//! Prometheus server scrapes every few seconds and a full HTTP stack would outweigh the rest of the
//! engine on a Pi. One request per connection, answered and closed. Connections are served side by
//! side, up to `MAX_CONNECTIONS`, each dropped when it does not send its request and take the answer
//! within `REQUEST_TIMEOUT`: slow or stuck clients (served one at a time, each held every scrape
//! behind it for those seconds) cannot keep a scrape waiting.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::METRICS;

/// How long a client may take to send its request and read the answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections served at once. Each costs a small task and a socket; beyond this, new connections
/// wait to be accepted until one ends, which `REQUEST_TIMEOUT` bounds.
const MAX_CONNECTIONS: usize = 256;

/// Largest request head read; a scrape's is a few hundred bytes.
const MAX_REQUEST: usize = 8 * 1024;

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot listen for metrics on {addr}: {source} (change metrics.listen, or remove it to turn metrics off)"
)]
pub struct BindError {
    addr: SocketAddr,
    source: std::io::Error,
}

/// The depth of each queue between stages, read without keeping any queue open: a weak sender does
/// not count as a sender, so the stage behind it still sees its input close on shutdown.
#[derive(Default)]
pub struct Queues {
    #[allow(clippy::type_complexity)]
    readers: Vec<(&'static str, Box<dyn Fn() -> (usize, usize) + Send + Sync>)>,
}

impl Queues {
    /// Watches the queue that `sender` feeds, under `name`.
    pub fn watch<T: Send + 'static>(&mut self, name: &'static str, sender: &mpsc::Sender<T>) {
        let weak = sender.downgrade();
        let bound = sender.max_capacity();
        let read = move || match weak.upgrade() {
            Some(sender) => (sender.max_capacity() - sender.capacity(), bound),
            None => (0, bound),
        };
        self.readers.push((name, Box::new(read)));
    }

    /// Watches the queue that a flume `sender` feeds (the rule thread's input), under `name`.
    pub fn watch_flume<T: Send + 'static>(&mut self, name: &'static str, sender: &flume::Sender<T>) {
        let weak = sender.downgrade();
        let bound = sender.capacity().unwrap_or(0);
        let read = move || match weak.upgrade() {
            Some(sender) => (sender.len(), bound),
            None => (0, bound),
        };
        self.readers.push((name, Box::new(read)));
    }

    fn depths(&self) -> Vec<(&'static str, usize, usize)> {
        self.readers
            .iter()
            .map(|(name, read)| {
                let (depth, bound) = read();
                (*name, depth, bound)
            })
            .collect()
    }
}

/// The endpoint, bound and ready to serve.
pub struct MetricsServer {
    listener: TcpListener,
    queues: Arc<Queues>,
}

impl MetricsServer {
    /// Binds `addr` now, so a port in use fails the start with a message naming the config key.
    pub async fn bind(addr: SocketAddr, queues: Queues) -> Result<MetricsServer, BindError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| BindError { addr, source })?;
        let local = listener.local_addr().unwrap_or(addr);
        info!(address = %local, "metrics at http://{local}/metrics");
        Ok(MetricsServer {
            listener,
            queues: Arc::new(queues),
        })
    }

    /// Serves scrapes until `shutdown`; connections still open then are dropped with their tasks.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut connections = JoinSet::new();
        loop {
            // Reaps finished connections, and waits for one to end while all slots are taken.
            while connections.try_join_next().is_some() {}
            if connections.len() >= MAX_CONNECTIONS {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = connections.join_next() => continue,
                }
            }
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => return,
                accepted = self.listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, peer)) => {
                    let queues = Arc::clone(&self.queues);
                    connections.spawn(async move {
                        match tokio::time::timeout(REQUEST_TIMEOUT, serve(&queues, stream)).await {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => debug!(%peer, "metrics request failed: {e}"),
                            Err(_) => debug!(%peer, "metrics client too slow; dropped"),
                        }
                    });
                }
                // Out of file descriptors and the like: pause rather than spin.
                Err(e) => {
                    warn!("metrics: cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

/// Answers the one request of a connection.
async fn serve(queues: &Queues, mut stream: TcpStream) -> std::io::Result<()> {
    let head = read_head(&mut stream).await?;
    let request_line = head.lines().next().unwrap_or_default();
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    let path = target.split('?').next().unwrap_or_default();
    let (status, content_type, body) = match (method, path) {
        ("GET" | "HEAD", "/metrics") => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            METRICS.render(&queues.depths()),
        ),
        ("GET" | "HEAD", _) => ("404 Not Found", "text/plain", "try /metrics\n".to_string()),
        _ => ("405 Method Not Allowed", "text/plain", "only GET\n".to_string()),
    };
    let mut response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if method != "HEAD" {
        response.push_str(&body);
    }
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// Reads up to the blank line that ends a request head.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<String> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&chunk[..n]);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}
