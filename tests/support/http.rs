//! A small HTTP/1.1 server on a loopback port, standing in for ntfy, Gotify or a webhook: it records
//! every request and answers with the statuses a test scripts (then 200), or never answers at all.
//! It can be stopped and started again on the same port, to play an outage.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// One request as the server read it.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    /// Names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Received {
    /// The value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Shared {
    received: Vec<Received>,
    /// Statuses to answer, in order; 200 once they are used up.
    script: VecDeque<(u16, String)>,
    /// Read requests but never answer.
    silent: bool,
}

/// The server; stops when dropped.
pub struct HttpServer {
    pub port: u16,
    shared: Arc<Mutex<Shared>>,
    task: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Starts on a free port.
    pub async fn start() -> HttpServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the test HTTP server");
        let port = listener.local_addr().expect("local addr").port();
        let shared = Arc::new(Mutex::new(Shared::default()));
        let task = Some(tokio::spawn(serve(listener, Arc::clone(&shared))));
        HttpServer { port, shared, task }
    }

    /// Starts an HTTPS server with this certificate chain and key (PEM).
    pub async fn start_tls(chain_pem: &str, key_pem: &str) -> HttpServer {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let _ = rustls::crypto::ring::default_provider().install_default();
        let chain = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .expect("certificate PEM");
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("key PEM");
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server TLS config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the test HTTPS server");
        let port = listener.local_addr().expect("local addr").port();
        let shared = Arc::new(Mutex::new(Shared::default()));
        let state = Arc::clone(&shared);
        let task = Some(tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let state = Arc::clone(&state);
                connections.spawn(async move {
                    if let Ok(tls) = acceptor.accept(stream).await {
                        answer(tls, state).await;
                    }
                });
            }
        }));
        HttpServer { port, shared, task }
    }

    /// Starts one that reads requests and never answers.
    pub async fn start_silent() -> HttpServer {
        let server = HttpServer::start().await;
        server.lock().silent = true;
        server
    }

    /// A port where nothing listens yet, for a server started later with [`HttpServer::start_on`].
    pub fn reserve() -> u16 {
        crate::support::free_port()
    }

    /// Starts on `port` (after an outage), keeping nothing of an earlier server.
    pub async fn start_on(port: u16) -> HttpServer {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind the test HTTP server again");
        let shared = Arc::new(Mutex::new(Shared::default()));
        let task = Some(tokio::spawn(serve(listener, Arc::clone(&shared))));
        HttpServer { port, shared, task }
    }

    /// Answers the next requests with these statuses and bodies, then 200 again.
    pub fn answer(&self, statuses: &[(u16, &str)]) {
        self.lock()
            .script
            .extend(statuses.iter().map(|(s, b)| (*s, b.to_string())));
    }

    /// Every request so far.
    pub fn received(&self) -> Vec<Received> {
        self.lock().received.clone()
    }

    /// Waits until `n` requests arrived (panics after `timeout`).
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        crate::support::eventually(
            &format!("{n} requests on port {}", self.port),
            timeout,
            || async {
                let received = self.received();
                (received.len() >= n).then_some(received)
            },
        )
        .await
    }

    /// Stops listening; the port refuses connections until a server starts on it again.
    pub fn stop(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn serve(listener: TcpListener, shared: Arc<Mutex<Shared>>) {
    let mut connections = tokio::task::JoinSet::new();
    while let Ok((stream, _)) = listener.accept().await {
        connections.spawn(answer(stream, Arc::clone(&shared)));
    }
}

async fn answer<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, shared: Arc<Mutex<Shared>>) {
    let Some(request) = read_request(&mut stream).await else {
        return;
    };
    let (status, body, silent) = {
        let mut shared = shared.lock().unwrap_or_else(|p| p.into_inner());
        shared.received.push(request);
        let (status, body) = shared.script.pop_front().unwrap_or((200, "ok".into()));
        (status, body, shared.silent)
    };
    if silent {
        tokio::time::sleep(Duration::from_secs(3_600)).await;
        return;
    }
    let response = format!(
        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

async fn read_request<S: AsyncRead + Unpin>(stream: &mut S) -> Option<Received> {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&data[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let method = request_line.next()?.to_string();
    let path = request_line.next()?.to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = data[head_end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&buf[..n]);
    }
    Some(Received {
        method,
        path,
        headers,
        body: String::from_utf8_lossy(&body).to_string(),
    })
}
