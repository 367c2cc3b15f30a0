//! The accept loop under the house's page and `/metrics`: hyper's HTTP/1 connections on a tokio
//! `TcpListener`, each served on its own task, with a bound on how many are open at once and on how
//! long a client may take to send a request head. A port scanner or a stuck exporter holding
//! connections open can neither keep a scrape or a page waiting nor run the engine out of sockets.
//! (axum's own `serve` has neither bound.)

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower_service::Service;
use tracing::{debug, warn};

/// How long a client may take to send a request's head.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections served at once. Each costs a small task and a socket; beyond this, new connections
/// wait to be accepted until one ends.
const MAX_CONNECTIONS: usize = 256;

/// Why a listener could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen for {what} on {addr}: {source} (change {key}, or remove it to turn {what} off)")]
pub struct BindError {
    what: &'static str,
    key: &'static str,
    addr: SocketAddr,
    source: std::io::Error,
}

/// The client's address, in every request's extensions.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// A bound listener and what it serves.
pub struct Listener {
    listener: TcpListener,
    router: Router,
    /// Off for the metrics-only listener: a scraper sends one request and reads to the end.
    keep_alive: bool,
}

impl Listener {
    /// Binds `addr` now, so a port in use fails the start with a message naming `key`.
    pub async fn bind(
        addr: SocketAddr,
        (what, key): (&'static str, &'static str),
        router: Router,
        keep_alive: bool,
    ) -> Result<Listener, BindError> {
        let listener = TcpListener::bind(addr).await.map_err(|source| BindError {
            what,
            key,
            addr,
            source,
        })?;
        Ok(Listener {
            listener,
            router,
            keep_alive,
        })
    }

    /// The address bound (the port the OS chose for port 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Serves until `shutdown`; connections still open then (a page's event stream) are dropped.
    pub async fn run(self, shutdown: CancellationToken) {
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let mut connections = JoinSet::new();
        loop {
            while connections.try_join_next().is_some() {}
            let slot = tokio::select! {
                _ = shutdown.cancelled() => return,
                slot = Arc::clone(&slots).acquire_owned() => slot,
            };
            let Ok(slot) = slot else { return };
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => return,
                accepted = self.listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                // Out of file descriptors and the like: pause rather than spin.
                Err(e) => {
                    warn!("web: cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let router = self.router.clone();
            let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
                request.extensions_mut().insert(Peer(peer));
                let mut router = router.clone();
                async move { Ok::<_, Infallible>(router.call(request).await.unwrap_or_else(|e| match e {})) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(REQUEST_TIMEOUT)
                .keep_alive(self.keep_alive)
                .serve_connection(TokioIo::new(stream), service);
            connections.spawn(async move {
                if let Err(e) = connection.await {
                    debug!(%peer, "web connection ended: {e}");
                }
                drop(slot);
            });
        }
    }
}
