//! Everything that speaks MQTT to the broker, and the only module that knows rumqttc.
//!
//! Two connections, as in vector's MQTT source and sink: the [`subscriber`] ingests (persistent
//! session, manual acknowledgements) and the [`publisher`] sends what rules ask for plus the engine's
//! status. Ingest -> rules -> publish can therefore never wait on itself through one client's bounded
//! request channel. Where they reach past rumqttc's API, they do it through [`rumqttc_ext`].

pub mod publisher;
pub mod rumqttc_ext;
pub mod subscriber;
mod tls;
pub mod topic;

pub use tls::TlsError;

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

/// Options shared by both connections: fixed id, persistent session, raised packet limit, TLS.
fn options(config: &MqttConfig, client_id: String) -> Result<MqttOptions, TlsError> {
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
    if let Some(tls) = &config.tls {
        options.set_transport(tls::transport(tls)?);
    }
    Ok(options)
}

/// Network options: Nagle off, since one message in and one out per rule run is the common case, and
/// Nagle plus delayed ACKs adds milliseconds to each (the small packet waits for the ACK of the
/// previous one, which the peer delays hoping to piggyback it).
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

/// Describes a connection error for a log line, naming the broker and, where the cause is clear, the
/// setting to fix. `before_connack`: the broker closed the connection before accepting it, which is how
/// some brokers refuse a bad password (they send no CONNACK code). Built from rumqttc's and rustls' error
/// texts, which hold no password.
fn describe(error: &rumqttc::ConnectionError, config: &MqttConfig, before_connack: bool) -> String {
    use rumqttc::{ConnectReturnCode, ConnectionError, StateError};
    let broker = format!("{}:{}", config.host, config.port);
    match error {
        ConnectionError::ConnectionRefused(ConnectReturnCode::BadUserNamePassword) => format!(
            "broker {broker} refused our username or password (check mqtt.username and mqtt.password, password_file or password_env)"
        ),
        ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized) => format!(
            "broker {broker} refused the connection: not authorized (check mqtt.username, the password and the broker's ACL)"
        ),
        ConnectionError::ConnectionRefused(code) => {
            format!("broker {broker} refused the connection: {code:?}")
        }
        ConnectionError::Tls(e) => describe_tls(&e.to_string(), &broker, config),
        ConnectionError::Io(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            format!("no broker is listening on {broker} (start one, or set broker.embedded: true)")
        }
        // Plain MQTT to a TLS listener: the broker answers the CONNECT with a TLS alert, which is no MQTT
        // packet.
        ConnectionError::MqttState(StateError::Deserialization(_)) if config.tls.is_none() => format!(
            "broker {broker} answered with something that is not MQTT: port {port} is probably a TLS listener (often 8883) and TLS is on one side only; set mqtt.tls (with the broker's CA in mqtt.tls.ca), or set mqtt.port to the broker's plain port (often 1883): {error}",
            port = config.port
        ),
        ConnectionError::MqttState(StateError::ConnectionAborted | StateError::Io(_))
            if before_connack && config.credentials.is_some() =>
        {
            format!(
                "broker {broker} closed the connection before accepting it; a broker that checks logins does this on a wrong username or password (check mqtt.username and the password)"
            )
        }
        other => format!("connection to broker {broker} failed: {other}"),
    }
}

/// Names what is wrong in a TLS handshake error, by the variant names rustls prints.
fn describe_tls(text: &str, broker: &str, config: &MqttConfig) -> String {
    let ca = config
        .tls
        .as_ref()
        .map(|t| t.ca_path.display().to_string())
        .unwrap_or_default();
    if text.contains("UnknownIssuer") || text.contains("BadSignature") {
        format!(
            "the certificate of broker {broker} is not trusted: it is not signed by the CA in mqtt.tls.ca ({ca}): {text}"
        )
    } else if text.contains("NotValidForName") {
        format!(
            "the certificate of broker {broker} is not valid for the name {}: connect by a name the certificate lists (mqtt.host): {text}",
            config.host
        )
    } else if text.contains("Expired") || text.contains("NotValidYet") {
        format!("the certificate of broker {broker} is expired or not yet valid: {text}")
    } else if text.contains("CertificateRequired") {
        format!("broker {broker} requires a client certificate: set mqtt.tls.cert and mqtt.tls.key: {text}")
    } else if text.contains("UnsupportedCertVersion") {
        format!(
            "TLS with broker {broker} failed: a certificate (possibly our own mqtt.tls.cert) is X.509 v1; issue v3 certificates: {text}"
        )
    } else if [
        "reset by peer",
        "InvalidContentType",
        "CorruptMessage",
        "end of file",
        "UnexpectedEof",
    ]
    .iter()
    .any(|sign| text.contains(sign))
    {
        // TLS to a plain listener: the broker takes the ClientHello for a malformed MQTT packet and
        // drops the connection, or answers in plain MQTT.
        format!(
            "TLS handshake with broker {broker} failed: port {} does not seem to speak TLS, so TLS is on one side only; mqtt.tls is set, so set mqtt.port to the broker's TLS listener (often 8883), or remove mqtt.tls for its plain port: {text}",
            config.port
        )
    } else {
        format!("TLS handshake with broker {broker} failed: {text}")
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
