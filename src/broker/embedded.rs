//! The embedded broker: mqtt5's broker in this process, so a first run needs nothing but this binary.
//!
//! It runs on its own thread with its own single-threaded runtime: its threads stay ordinary ones
//! (they feed the engine's batch threads, as Mosquitto does; `os::thread_policy`), and a panic in one
//! client's task ends that task, not the broker. Retained messages, sessions and the messages queued
//! for them are kept in `broker.state_dir` and survive a restart of the engine. A supervisor restarts
//! the broker from that state if it ever stops by itself; after repeated failures it gives up, and the
//! engine's health check (the systemd watchdog) then reports the engine as failed.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mqtt5::broker::server::BrokerShutdownHandle;
use mqtt5::broker::{AuthProvider, AuthResult, BrokerConfig, MqttBroker, StorageBackendType, StorageConfig};
use mqtt5::packet::connect::ConnectPacket;
use mqtt5::protocol::v5::reason_codes::ReasonCode;
use tokio::sync::oneshot;
use tracing::{error, warn};

use super::BrokerError;
use crate::config::Credentials;

/// The embedded broker's threads: the one that runs it and its runtime's blocking pool (file I/O).
pub const THREADS: [&str; 1] = [BROKER_THREAD];

const BROKER_THREAD: &str = "embedded-broker";

/// How long the broker may take to load its saved state and start listening.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a stop may take to save the broker's state.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// More connections than a house has devices; beyond it the broker refuses new ones (and keeps serving
/// the others).
const MAX_CLIENTS: usize = 1_000;
/// Unacknowledged QoS 1/2 messages the broker sends one client before waiting: ingest commits half of
/// the window it sees per batch (see `ingest::ASSUMED_WINDOW`), so a window this size keeps the pipe
/// full while a commit runs, without unbounded buffering.
const MAX_INFLIGHT: u16 = 1_000;
/// Restarts allowed within [`FAILURE_WINDOW`] before the supervisor gives up.
const MAX_FAILURES: usize = 5;
const FAILURE_WINDOW: Duration = Duration::from_secs(60);

/// What the embedded broker is started with.
pub struct Settings {
    pub listen: SocketAddr,
    pub state_dir: PathBuf,
    pub max_packet_size: usize,
    /// When set, every client (the engine too) must log in with this username and password.
    pub login: Option<Credentials>,
}

/// The running embedded broker; [`EmbeddedBroker::stop`] saves its state and ends it.
pub struct EmbeddedBroker {
    control: Arc<Control>,
    thread: std::thread::JoinHandle<()>,
}

/// Shared between the engine and the broker's thread.
#[derive(Default)]
struct Control {
    /// The running broker's shutdown handle (replaced at each restart).
    shutdown: Mutex<Option<BrokerShutdownHandle>>,
    stopping: AtomicBool,
    /// False once the supervisor gave up.
    alive: AtomicBool,
}

impl EmbeddedBroker {
    /// Starts the broker and returns once it accepts connections.
    pub async fn start(settings: Settings) -> Result<EmbeddedBroker, BrokerError> {
        let listen = settings.listen;
        std::fs::create_dir_all(&settings.state_dir).map_err(|e| BrokerError::Start {
            addr: listen,
            reason: format!(
                "cannot create broker.state_dir {}: {e}",
                settings.state_dir.display()
            ),
        })?;
        let control = Arc::new(Control {
            alive: AtomicBool::new(true),
            ..Control::default()
        });
        let (ready_tx, ready_rx) = oneshot::channel();
        let thread = {
            let control = Arc::clone(&control);
            std::thread::Builder::new()
                .name(BROKER_THREAD.into())
                .spawn(move || supervise(&settings, &control, ready_tx))
                .map_err(BrokerError::Thread)?
        };
        let broker = EmbeddedBroker { control, thread };
        match tokio::time::timeout(START_TIMEOUT, ready_rx).await {
            Ok(Ok(Ok(()))) => Ok(broker),
            Ok(Ok(Err(reason))) => Err(BrokerError::Start { addr: listen, reason }),
            Ok(Err(_)) => Err(BrokerError::Start {
                addr: listen,
                reason: "its thread ended while starting".into(),
            }),
            Err(_) => {
                broker.stop().await;
                Err(BrokerError::Start {
                    addr: listen,
                    reason: format!("it did not start within {START_TIMEOUT:?}"),
                })
            }
        }
    }

    /// Whether the broker still runs (false once it failed repeatedly and its supervisor gave up), for
    /// the watchdog.
    pub fn health(&self) -> impl Fn() -> bool + Send + Sync + 'static {
        let control = Arc::clone(&self.control);
        move || control.alive.load(Ordering::Relaxed)
    }

    /// Stops the broker: it closes every connection and saves its state, then its thread ends.
    pub async fn stop(self) {
        self.control.stopping.store(true, Ordering::SeqCst);
        if let Some(handle) = lock(&self.control.shutdown).as_ref() {
            handle.shutdown();
        }
        let thread = self.thread;
        let joined = tokio::task::spawn_blocking(move || thread.join());
        if tokio::time::timeout(STOP_TIMEOUT, joined).await.is_err() {
            warn!("the embedded broker did not stop within {STOP_TIMEOUT:?}");
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

type Ready = oneshot::Sender<Result<(), String>>;

/// The broker's thread: runs the broker, and restarts it from its saved state when it stops by itself,
/// until the engine stops it or it failed [`MAX_FAILURES`] times within [`FAILURE_WINDOW`].
fn supervise(settings: &Settings, control: &Control, ready: Ready) {
    // Whatever thread starts it, the broker's threads are ordinary ones (see the module doc).
    crate::os::thread_policy::ordinary_current_thread();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .thread_name(BROKER_THREAD)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            let _ = ready.send(Err(format!("cannot start its runtime: {e}")));
            return;
        }
    };
    let mut ready = Some(ready);
    let mut failures: Vec<Instant> = Vec::new();
    loop {
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            runtime.block_on(run_once(settings, control, &mut ready))
        }));
        if control.stopping.load(Ordering::SeqCst) {
            return;
        }
        let why = match run {
            Ok(Ok(())) => "it stopped by itself".to_string(),
            Ok(Err(e)) => e,
            Err(_) => "it panicked".to_string(),
        };
        if let Some(ready) = ready.take() {
            let _ = ready.send(Err(why));
            return;
        }
        let now = Instant::now();
        failures.retain(|at| now.duration_since(*at) < FAILURE_WINDOW);
        failures.push(now);
        if failures.len() >= MAX_FAILURES {
            error!(
                "the embedded broker failed {MAX_FAILURES} times within {FAILURE_WINDOW:?} ({why}); giving up"
            );
            control.alive.store(false, Ordering::SeqCst);
            return;
        }
        error!("the embedded broker stopped ({why}); restarting it with its saved state");
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// One life of the broker: build it, say it is ready (the first time), run it until it stops.
async fn run_once(settings: &Settings, control: &Control, ready: &mut Option<Ready>) -> Result<(), String> {
    let mut broker = MqttBroker::with_config(config(settings))
        .await
        .map_err(|e| e.to_string())?;
    if let Some(login) = &settings.login {
        broker = broker.with_auth_provider(Arc::new(OneLogin::new(login)));
    }
    *lock(&control.shutdown) = Some(broker.shutdown_handle());
    if control.stopping.load(Ordering::SeqCst) {
        return Ok(());
    }
    let mut accepting = broker.ready_receiver();
    let run = broker.run();
    tokio::pin!(run);
    tokio::select! {
        result = &mut run => return result.map_err(|e| e.to_string()),
        ok = accepting.wait_for(|accepting| *accepting) => {
            if ok.is_ok() && let Some(ready) = ready.take() {
                let _ = ready.send(Ok(()));
            }
        }
    }
    run.await.map_err(|e| e.to_string())
}

fn config(settings: &Settings) -> BrokerConfig {
    let storage = StorageConfig::new()
        .with_backend(StorageBackendType::File)
        .with_base_dir(settings.state_dir.clone())
        .with_persistence(true);
    let mut config = BrokerConfig::new()
        .with_bind_address(settings.listen)
        .with_max_clients(MAX_CLIENTS)
        .with_max_packet_size(settings.max_packet_size)
        .with_max_outbound_inflight(MAX_INFLIGHT)
        .with_storage(storage)
        // $SYS statistics every 10 s: nobody here reads them.
        .with_sys_topics_enabled(false);
    // Without a login every local client may connect, as with Mosquitto's defaults on loopback. With
    // one, `OneLogin` replaces the whole check (mqtt5 itself would want a password file).
    config.auth_config.allow_anonymous = true;
    config
}

/// The one account of a broker that requires a login: the engine's own, from `mqtt.username` and its
/// password. Every client may publish and subscribe once logged in.
struct OneLogin {
    username: String,
    password: Vec<u8>,
}

impl OneLogin {
    fn new(login: &Credentials) -> Self {
        OneLogin {
            username: login.username.clone(),
            password: login.password.expose().as_bytes().to_vec(),
        }
    }

    fn accepts(&self, username: Option<&str>, password: Option<&[u8]>) -> bool {
        let user_ok = username == Some(self.username.as_str());
        let password_ok = password.is_some_and(|p| constant_time_eq(p, &self.password));
        user_ok & password_ok
    }
}

/// Compares without stopping at the first difference, so the time taken says nothing about the password.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

type Answer<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

impl AuthProvider for OneLogin {
    fn authenticate<'a>(
        &'a self,
        connect: &'a ConnectPacket,
        _client_addr: SocketAddr,
    ) -> Answer<'a, mqtt5::Result<AuthResult>> {
        let result = if self.accepts(connect.username.as_deref(), connect.password.as_deref()) {
            AuthResult::success_with_user(self.username.clone())
        } else {
            AuthResult::fail(ReasonCode::BadUsernameOrPassword)
        };
        Box::pin(async move { Ok(result) })
    }

    fn authorize_publish<'a>(
        &'a self,
        _client_id: &str,
        _user_id: Option<&'a str>,
        _topic: &'a str,
    ) -> Answer<'a, bool> {
        Box::pin(async { true })
    }

    fn authorize_subscribe<'a>(
        &'a self,
        _client_id: &str,
        _user_id: Option<&'a str>,
        _topic_filter: &'a str,
    ) -> Answer<'a, bool> {
        Box::pin(async { true })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_configured_login_is_accepted() {
        let login = OneLogin::new(&Credentials {
            username: "alice".into(),
            password: crate::config::Secret::new("s3cret".into()),
            kept_in: None,
        });
        assert!(login.accepts(Some("alice"), Some(b"s3cret")));
        assert!(!login.accepts(Some("alice"), Some(b"s3cre")));
        assert!(!login.accepts(Some("alice"), Some(b"s3creT")));
        assert!(!login.accepts(Some("bob"), Some(b"s3cret")));
        assert!(!login.accepts(None, None));
        assert!(!login.accepts(Some("alice"), None));
    }
}
