//! Everything that speaks MQTT to the broker, and the only module that knows rumqttc.
//!
//! Two connections, as in vector's MQTT source and sink: the [`subscriber`] ingests (persistent
//! session, manual acknowledgements) and the [`publisher`] sends what rules ask for plus the engine's
//! status. Ingest -> rules -> publish can therefore never wait on itself through one client's bounded
//! request channel.

pub mod publisher;
pub mod subscriber;
pub mod topic;

use std::time::Duration;

use rumqttc::{MqttOptions, NetworkOptions, QoS};

use crate::config::MqttConfig;

/// First pause after a failed connection attempt; it doubles up to [`BACKOFF_MAX`].
const BACKOFF_START: Duration = Duration::from_millis(500);
/// Longest pause between connection attempts: a broker that comes back is found within this.
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Converts a QoS number that config or a rule validated (0..=2) into rumqttc's type.
fn qos(level: u8) -> QoS {
    match level {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

/// Options shared by both connections: fixed id, persistent session, raised packet limit.
fn options(config: &MqttConfig, client_id: String) -> MqttOptions {
    let mut options = MqttOptions::new(client_id, config.host.clone(), config.port);
    options
        .set_keep_alive(config.keep_alive)
        // A persistent session makes the broker keep what we have not acknowledged while we are away.
        .set_clean_session(false)
        // rumqttc's default is 10 KiB; a larger message would drop the connection, and with a
        // persistent session the broker would redeliver it forever.
        .set_max_packet_size(config.max_packet_size, config.max_packet_size);
    if let Some(credentials) = &config.credentials {
        options.set_credentials(credentials.username.clone(), credentials.password.expose());
    }
    options
}

/// Network options: Nagle off, since one message in and one out per rule run is the common case, and
/// Nagle plus delayed ACKs adds milliseconds to each (CRATES.md).
fn network_options() -> NetworkOptions {
    let mut network = NetworkOptions::new();
    network.set_tcp_nodelay(true);
    network.set_connection_timeout(5);
    network
}

/// Exponential backoff between reconnection attempts.
#[derive(Debug)]
struct Backoff {
    next: Duration,
}

impl Backoff {
    fn new() -> Self {
        Backoff { next: BACKOFF_START }
    }

    /// The pause to take now; the next one will be twice as long, up to the maximum.
    fn step(&mut self) -> Duration {
        let pause = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        pause
    }

    fn reset(&mut self) {
        self.next = BACKOFF_START;
    }
}

/// Describes a connection error for a log line. The options never hold a password in clear text in
/// rumqttc's error types, but we still word it ourselves to name the broker.
fn describe(error: &rumqttc::ConnectionError, config: &MqttConfig) -> String {
    let broker = format!("{}:{}", config.host, config.port);
    match error {
        rumqttc::ConnectionError::ConnectionRefused(code) => {
            format!("broker {broker} refused the connection: {code:?} (check mqtt.username and the password)")
        }
        rumqttc::ConnectionError::Io(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            format!("no broker is listening on {broker} (start one, or set broker.embedded: true)")
        }
        other => format!("connection to broker {broker} failed: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_maximum_and_resets() {
        let mut backoff = Backoff::new();
        let steps: Vec<u64> = (0..9).map(|_| backoff.step().as_millis() as u64).collect();
        assert_eq!(steps, [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
        backoff.reset();
        assert_eq!(backoff.step(), BACKOFF_START);
    }
}
