//! The broker the engine talks to, decided at start by `broker.embedded`:
//!
//! - `auto` (the default): one MQTT CONNECT to `mqtt.host:mqtt.port` ([`probe`]). A broker that answers
//!   is used (a Pi that already runs Mosquitto); when nothing listens on this machine, the embedded
//!   broker starts on `broker.listen`; anything else (not MQTT, a refused login, a remote broker that
//!   is down) stops the start with the setting to change.
//! - `true`: the embedded broker, always. `false`: never; the engine connects and retries.
//!
//! The embedded broker (cargo feature `embedded-broker`, on by default) is mqtt5's, in this process
//! (`broker/embedded.rs`, [`EmbeddedBroker`]): MQTT 3.1.1 and 5, retained messages and sessions kept on disk in
//! `broker.state_dir`, and supervised so that a failure restarts it with its saved state.

pub mod probe;

#[cfg(feature = "embedded-broker")]
mod embedded;

use std::net::{IpAddr, SocketAddr};

use tracing::info;

use crate::config::{Config, Embedded};
#[cfg(feature = "embedded-broker")]
pub use embedded::{EmbeddedBroker, THREADS};
use probe::Probe;

/// Why the engine could not settle on a broker.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error(
        "cannot start the embedded broker: {addr} is already in use, probably by another MQTT broker \
         such as Mosquitto.\n  To use that broker instead, set `broker.embedded: false` (or auto) and \
         point `mqtt.host`/`mqtt.port` at it.\n  To keep the embedded broker, set `broker.listen` to a \
         free port, e.g. {suggestion}"
    )]
    PortInUse {
        addr: SocketAddr,
        suggestion: SocketAddr,
    },
    #[error("cannot start the embedded broker on {addr}: {reason}")]
    Start { addr: SocketAddr, reason: String },
    #[error("cannot start the embedded broker thread: {0}")]
    Thread(std::io::Error),
    #[error("cannot start the embedded broker: {0}")]
    Login(String),
    #[error(
        "something that is not an MQTT broker listens on {addr} (mqtt.host, mqtt.port): {what}.\n  Point \
         mqtt.host and mqtt.port at your MQTT broker, or free that port, or set `broker.embedded: true` \
         with `broker.listen` on a free port to use the embedded broker"
    )]
    NotMqtt { addr: String, what: String },
    #[error(
        "the MQTT broker at {addr} refused our login ({reason}).\n  Set mqtt.username and a password \
         (mqtt.password, mqtt.password_file or mqtt.password_env) to an account of that broker, or set \
         `broker.embedded: true` with `broker.listen` on a free port to use the embedded broker"
    )]
    Refused { addr: String, reason: &'static str },
    #[error(
        "no MQTT broker answers at {addr} (mqtt.host, mqtt.port): {why}.\n  Start that broker, or correct \
         mqtt.host and mqtt.port, or set `broker.embedded: true` to use the embedded broker"
    )]
    Unreachable { addr: String, why: String },
}

/// The embedded broker is not part of this build, so there is never one to stop.
#[cfg(not(feature = "embedded-broker"))]
pub enum EmbeddedBroker {}

#[cfg(not(feature = "embedded-broker"))]
impl EmbeddedBroker {
    pub async fn stop(self) {
        match self {}
    }

    pub fn health(&self) -> fn() -> bool {
        match *self {}
    }
}

/// Settles on the broker as `broker.embedded` says, starting the embedded one when needed (and
/// pointing `config.mqtt` at it). The broker returned, if any, runs until [`EmbeddedBroker::stop`].
pub async fn settle(config: &mut Config) -> Result<Option<EmbeddedBroker>, BrokerError> {
    match config.broker.embedded {
        Embedded::Never => Ok(None),
        Embedded::Always => start_embedded(config).await.map(Some),
        Embedded::Auto => {
            let addr = format!("{}:{}", config.mqtt.host, config.mqtt.port);
            let probe_id = format!("{}-probe", config.mqtt.client_id);
            let answer = probe::probe(
                &config.mqtt.host,
                config.mqtt.port,
                &probe_id,
                config.mqtt.credentials.as_ref(),
            )
            .await;
            match answer {
                Probe::Broker => {
                    info!("using the MQTT broker that answers at {addr} (broker.embedded: auto)");
                    Ok(None)
                }
                Probe::Nothing if is_this_machine(&config.mqtt.host, config.broker.listen) => {
                    let broker = start_embedded(config).await?;
                    info!(
                        "nothing listens on {addr}: started the embedded MQTT broker on {} (broker.embedded: auto)",
                        config.broker.listen
                    );
                    Ok(Some(broker))
                }
                // Devices publish to that other machine: an empty broker here would store nothing.
                Probe::Nothing => Err(BrokerError::Unreachable {
                    addr,
                    why: "nothing listens there".into(),
                }),
                Probe::Unreachable(why) => Err(BrokerError::Unreachable { addr, why }),
                Probe::NotMqtt(what) => Err(BrokerError::NotMqtt { addr, what }),
                Probe::Refused(code) => Err(BrokerError::Refused {
                    addr,
                    reason: refusal(code),
                }),
            }
        }
    }
}

/// Whether `host` names this machine, where the embedded broker would stand in for the missing one.
fn is_this_machine(host: &str, listen: SocketAddr) -> bool {
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    match host.parse::<IpAddr>() {
        Ok(ip) => ip.is_loopback() || ip.is_unspecified() || ip == listen.ip(),
        Err(_) => false,
    }
}

/// An MQTT 3.1.1 CONNACK return code, in words.
fn refusal(code: u8) -> &'static str {
    match code {
        1 => "it does not accept MQTT 3.1.1",
        2 => "it rejected the client id",
        3 => "it says it is unavailable",
        4 => "bad username or password",
        5 => "not authorized: a wrong username or password, or none where the broker wants one",
        _ => "an unknown refusal code",
    }
}

/// Where the engine reaches a broker that listens on `listen`: loopback when it listens everywhere.
#[cfg(feature = "embedded-broker")]
fn reachable(listen: SocketAddr) -> SocketAddr {
    match listen.ip() {
        ip if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), listen.port())
        }
        _ => listen,
    }
}

#[cfg(feature = "embedded-broker")]
async fn start_embedded(config: &mut Config) -> Result<EmbeddedBroker, BrokerError> {
    let listen = config.broker.listen;
    if let Some(message) = crate::config::login_required(listen, config.mqtt.credentials.as_ref()) {
        return Err(BrokerError::Login(message));
    }
    check_port_free(listen)?;
    let broker = EmbeddedBroker::start(embedded::Settings {
        listen,
        state_dir: config.broker.state_dir.clone(),
        max_packet_size: config.mqtt.max_packet_size,
        login: config.mqtt.credentials.clone(),
    })
    .await?;
    let target = reachable(listen);
    config.mqtt.host = target.ip().to_string();
    config.mqtt.port = target.port();
    Ok(broker)
}

#[cfg(not(feature = "embedded-broker"))]
async fn start_embedded(_config: &mut Config) -> Result<EmbeddedBroker, BrokerError> {
    // Validation turns `true` into a problem and `auto` into `false` in a build without the broker.
    Err(BrokerError::Login(
        "this build has no embedded broker: set broker.embedded: false".into(),
    ))
}

/// The broker would report a taken port as a bare I/O error; this names the port and the fix.
#[cfg(feature = "embedded-broker")]
fn check_port_free(addr: SocketAddr) -> Result<(), BrokerError> {
    match std::net::TcpListener::bind(addr) {
        Ok(_listener) => Ok(()), // dropped at once, freeing the port for the broker
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            let suggestion = SocketAddr::new(addr.ip(), addr.port().wrapping_add(1).max(1024));
            Err(BrokerError::PortInUse { addr, suggestion })
        }
        Err(e) => Err(BrokerError::Start {
            addr,
            reason: e.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_address_of_this_machine_falls_back_to_the_embedded_broker() {
        let listen: SocketAddr = "127.0.0.1:1883".parse().unwrap();
        assert!(is_this_machine("localhost", listen));
        assert!(is_this_machine("127.0.0.1", listen));
        assert!(is_this_machine("::1", listen));
        assert!(is_this_machine(
            "192.168.1.5",
            "192.168.1.5:1883".parse().unwrap()
        ));
        assert!(!is_this_machine("192.168.1.5", listen));
        assert!(!is_this_machine("mosquitto.lan", listen));
    }
}
