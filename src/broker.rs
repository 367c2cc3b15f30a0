//! The embedded broker: rumqttd in-process, so a first run needs nothing but this binary.
//!
//! rumqttd only logs a failed bind and then serves nothing, so the port is checked here first, and the
//! engine waits until the broker accepts connections before it connects. Its state (retained messages,
//! sessions) lives in memory only; the history in SQLite does not depend on it. Owners who want a
//! broker that keeps sessions across restarts run Mosquitto with `persistence true`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};
use tracing::{error, info};

use crate::config::Credentials;

/// How long the broker may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(5);
/// Unacknowledged QoS 1/2 messages the broker sends one client before waiting: ingest commits a batch
/// before its QoS 1/2 messages fill the window it sees (see `ingest::ASSUMED_WINDOW`), so with a window
/// this size a commit holds up to 4,000 messages while the broker keeps sending, without unbounded
/// buffering.
const MAX_INFLIGHT: usize = 1_000;

/// The embedded broker's threads: the one that runs it, and rumqttd's router (named by rumqttd after
/// its router id, 0 by default) and MQTT listener.
pub const THREADS: [&str; 3] = [BROKER_THREAD, "router-0", LISTENER];

/// The thread that runs the embedded broker.
const BROKER_THREAD: &str = "embedded-broker";

/// rumqttd's name for the listener, which it gives its thread.
const LISTENER: &str = "broker-listen";

/// Why the embedded broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error(
        "cannot start the embedded broker: {addr} is already in use, probably by another MQTT broker \
         such as Mosquitto.\n  To use that broker instead, set `broker.embedded: false` and point \
         `mqtt.host`/`mqtt.port` at it.\n  To keep the embedded broker, set `broker.listen` to a free \
         port, e.g. {suggestion}"
    )]
    PortInUse {
        addr: SocketAddr,
        suggestion: SocketAddr,
    },
    #[error("cannot start the embedded broker on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the embedded broker did not start listening on {addr} within {START_TIMEOUT:?}")]
    NotListening { addr: SocketAddr },
    #[error("cannot start the embedded broker thread: {0}")]
    Thread(std::io::Error),
}

/// Starts rumqttd on `listen` and returns once it accepts connections. It runs until the process
/// exits (rumqttd has no shutdown). With `login`, every client (the engine too) must log in with that
/// username and password; rumqttd refuses others by closing the connection, without a CONNACK code.
pub fn start(
    listen: SocketAddr,
    max_packet_size: usize,
    login: Option<&Credentials>,
) -> Result<(), BrokerError> {
    check_port_free(listen)?;
    let config = config(listen, max_packet_size, login);
    std::thread::Builder::new()
        .name(BROKER_THREAD.into())
        .spawn(move || {
            // Whatever thread starts it, the broker and the threads it spawns are ordinary ones: they
            // feed the engine's batch threads, as Mosquitto does (src/os/thread_policy.rs). `Broker::new` already
            // spawns rumqttd's router thread, so it comes after the reset.
            crate::os::thread_policy::ordinary_current_thread();
            let mut broker = Broker::new(config);
            if let Err(e) = broker.start() {
                error!("embedded broker stopped: {e}");
            }
        })
        .map_err(BrokerError::Thread)?;
    wait_until_listening(listen)?;
    info!(%listen, "embedded MQTT broker started");
    Ok(())
}

fn check_port_free(addr: SocketAddr) -> Result<(), BrokerError> {
    match TcpListener::bind(addr) {
        Ok(_listener) => Ok(()), // dropped at once, freeing the port for rumqttd
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            let suggestion = SocketAddr::new(addr.ip(), addr.port().wrapping_add(1).max(1024));
            Err(BrokerError::PortInUse { addr, suggestion })
        }
        Err(source) => Err(BrokerError::Bind { addr, source }),
    }
}

fn wait_until_listening(listen: SocketAddr) -> Result<(), BrokerError> {
    let target = match listen.ip() {
        ip if ip.is_unspecified() => SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), listen.port()),
        _ => listen,
    };
    let started = Instant::now();
    while started.elapsed() < START_TIMEOUT {
        if TcpStream::connect_timeout(&target, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err(BrokerError::NotListening { addr: listen })
}

fn config(listen: SocketAddr, max_packet_size: usize, login: Option<&Credentials>) -> Config {
    let auth = login.map(|l| HashMap::from([(l.username.clone(), l.password.expose().to_string())]));
    let connections = ConnectionSettings {
        connection_timeout_ms: 5_000,
        max_payload_size: max_packet_size,
        max_inflight_count: MAX_INFLIGHT,
        auth,
        external_auth: None,
        dynamic_filters: true,
    };
    let server = ServerSettings {
        // Also the name of rumqttd's listener thread: "homewright" was the main thread's too.
        name: LISTENER.into(),
        listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections,
    };
    Config {
        router: RouterConfig {
            max_connections: 1_000,
            max_outgoing_packet_count: 200,
            // A segment must hold the largest message; ten of them bound the broker's memory.
            max_segment_size: (2 * max_packet_size).max(1 << 20),
            max_segment_count: 10,
            ..Default::default()
        },
        v4: Some(HashMap::from([(LISTENER.to_string(), server)])),
        ..Default::default()
    }
}
