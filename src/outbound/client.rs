//! The HTTP client: one HTTP/1.1 request per connection, with hyper over plain TCP or rustls (the
//! `ring` provider the MQTT connection already installs), and one deadline for all of it.
//!
//! Why hyper's connection-level API and not a client crate: hyper and hyper-util are already in the
//! binary (the embedded broker's HTTP API is built on them), and rustls too, so this client adds only
//! its own code. Notifications are rare, so a connection is opened for each request and closed after
//! it (`Connection: close`): no pool to keep, and nothing left open while the engine idles.
//!
//! Server certificates are checked against the system's roots (`/etc/ssl/certs`), read once, at the
//! first HTTPS request: an engine that never calls out never reads them.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderName, HeaderValue};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// The most of an answer read: enough for an error message, and a server cannot fill the memory.
const MAX_ANSWER: usize = 64 * 1024;

/// A request ready to send. No `Debug`: its headers and path may hold tokens.
#[derive(Clone)]
pub struct Prepared {
    pub method: String,
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Path and query.
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

/// What the server answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    /// The first non-empty line of the body, at most 200 characters: for the log of a refusal.
    pub first_line: String,
}

/// Why no answer came. The messages name the host, never the path or a header.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SendError {
    #[error("no answer from {host} within {after:?}")]
    Timeout { host: String, after: Duration },
    #[error("cannot connect to {host}: {reason}")]
    Connect { host: String, reason: String },
    #[error("TLS with {host} failed: {reason}")]
    Tls { host: String, reason: String },
    #[error("HTTP exchange with {host} failed: {reason}")]
    Exchange { host: String, reason: String },
    #[error("the request cannot be made: {0}")]
    Invalid(String),
}

impl SendError {
    /// Whether trying again later may succeed (a bad request will not).
    pub fn is_transient(&self) -> bool {
        !matches!(self, SendError::Invalid(_))
    }
}

/// Sends requests. Cheap to clone; the TLS roots are shared.
#[derive(Clone, Default)]
pub struct Client {
    tls: Arc<OnceLock<Result<Arc<rustls::ClientConfig>, String>>>,
}

impl Client {
    /// Sends `request` and reads the answer, all within `timeout`.
    pub async fn send(&self, request: &Prepared, timeout: Duration) -> Result<Answer, SendError> {
        let host = authority(&request.host, request.port, request.tls);
        match tokio::time::timeout(timeout, self.exchange(request, &host)).await {
            Ok(result) => result,
            Err(_) => Err(SendError::Timeout { host, after: timeout }),
        }
    }

    async fn exchange(&self, request: &Prepared, host: &str) -> Result<Answer, SendError> {
        let http_request = build(request, host)?;
        let connect = |reason: std::io::Error| SendError::Connect {
            host: host.to_string(),
            reason: reason.to_string(),
        };
        let tcp = TcpStream::connect((request.host.as_str(), request.port))
            .await
            .map_err(connect)?;
        // Small requests: send each write at once rather than wait for an ACK (Nagle).
        let _ = tcp.set_nodelay(true);
        if !request.tls {
            return over(tcp, http_request, host).await;
        }
        let config = self.tls_config().map_err(|reason| SendError::Tls {
            host: host.to_string(),
            reason,
        })?;
        let name =
            rustls::pki_types::ServerName::try_from(request.host.clone()).map_err(|e| SendError::Tls {
                host: host.to_string(),
                reason: e.to_string(),
            })?;
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| SendError::Tls {
                host: host.to_string(),
                reason: e.to_string(),
            })?;
        over(tls, http_request, host).await
    }

    fn tls_config(&self) -> Result<Arc<rustls::ClientConfig>, String> {
        self.tls.get_or_init(load_roots).clone()
    }
}

/// The system's root certificates as a client configuration.
fn load_roots() -> Result<Arc<rustls::ClientConfig>, String> {
    // Once per process; Err only means a provider is already installed, which is the one we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let found = rustls_native_certs::load_native_certs();
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err("no root certificates found on this system (install the ca-certificates package)".into());
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn authority(host: &str, port: u16, tls: bool) -> String {
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    if port == if tls { 443 } else { 80 } {
        host
    } else {
        format!("{host}:{port}")
    }
}

fn build(request: &Prepared, host: &str) -> Result<hyper::Request<Full<Bytes>>, SendError> {
    let method = hyper::Method::from_bytes(request.method.as_bytes())
        .map_err(|_| SendError::Invalid(format!("`{}` is not an HTTP method", request.method)))?;
    let mut builder = hyper::Request::builder()
        .method(method)
        .uri(request.path.as_str())
        .header(hyper::header::HOST, host)
        .header(hyper::header::CONNECTION, "close")
        .header(
            hyper::header::USER_AGENT,
            concat!("homewright/", env!("CARGO_PKG_VERSION")),
        );
    for (name, value) in &request.headers {
        // The value is not quoted: it may be a token.
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| SendError::Invalid(format!("`{name}` is not a header name")))?;
        let value = HeaderValue::from_str(value).map_err(|_| {
            SendError::Invalid(format!("the value of header {name} is not valid header text"))
        })?;
        builder = builder.header(name, value);
    }
    builder
        .body(Full::new(request.body.clone()))
        .map_err(|_| SendError::Invalid("the URL's path is not valid".into()))
}

/// One exchange on an open connection. hyper's connection future does the I/O and must be polled
/// while the response is awaited, so both run here together rather than in a spawned task.
async fn over<S>(stream: S, request: hyper::Request<Full<Bytes>>, host: &str) -> Result<Answer, SendError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let failed = |e: hyper::Error| SendError::Exchange {
        host: host.to_string(),
        reason: e.to_string(),
    };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(failed)?;
    let exchange = async {
        let response = sender.send_request(request).await.map_err(failed)?;
        let status = response.status().as_u16();
        // An unreadable body still has a status; the status is what decides.
        let body = Limited::new(response.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map(|collected| collected.to_bytes())
            .unwrap_or_default();
        Ok(Answer {
            status,
            first_line: first_line(&body),
        })
    };
    tokio::pin!(connection, exchange);
    tokio::select! {
        biased;
        answer = &mut exchange => answer,
        ended = &mut connection => match ended {
            Err(e) => Err(failed(e)),
            // The server closed after answering: the answer is already on its way to `exchange`.
            Ok(()) => exchange.await,
        },
    }
}

fn first_line(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or_default();
    line.chars().take(200).collect()
}
