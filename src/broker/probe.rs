//! Finds out what listens at the configured broker address, for `broker.embedded: auto`: an MQTT
//! broker (use it), nothing (start the embedded one), or something else (tell the owner what to change).
//!
//! One MQTT 3.1.1 CONNECT, written by hand: the answer we need is the first four bytes (a CONNACK and
//! its return code), and a client library would retry, reconnect or hide the difference between "no
//! answer" and "not MQTT".

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::Credentials;

/// How long the connection and the CONNACK may each take.
const TIMEOUT: Duration = Duration::from_secs(3);

/// What answered at the broker address.
#[derive(Debug, PartialEq, Eq)]
pub enum Probe {
    /// An MQTT broker that accepted our CONNECT (and login, if any).
    Broker,
    /// Nothing listens there: every address refused the TCP connection.
    Nothing,
    /// An MQTT broker that refused our CONNECT with this CONNACK return code (4: bad username or
    /// password, 5: not authorized).
    Refused(u8),
    /// Something that is not an MQTT broker, or did not answer like one: what it did.
    NotMqtt(String),
    /// The address could not be reached or resolved: why.
    Unreachable(String),
}

/// Sends one CONNECT to `host:port` as `client_id` and reads the answer.
pub async fn probe(host: &str, port: u16, client_id: &str, login: Option<&Credentials>) -> Probe {
    let addrs: Vec<SocketAddr> = match tokio::net::lookup_host((host, port)).await {
        Ok(addrs) => addrs.collect(),
        Err(e) => return Probe::Unreachable(format!("cannot resolve {host}: {e}")),
    };
    let mut last = Probe::Unreachable(format!("{host} has no address"));
    let mut refused = 0;
    for addr in &addrs {
        match tokio::time::timeout(TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => return exchange(stream, client_id, login).await,
            Ok(Err(e)) if e.kind() == ErrorKind::ConnectionRefused => refused += 1,
            Ok(Err(e)) => last = Probe::Unreachable(format!("cannot connect to {addr}: {e}")),
            Err(_) => last = Probe::Unreachable(format!("no answer from {addr} within {TIMEOUT:?}")),
        }
    }
    if refused == addrs.len() && refused > 0 {
        Probe::Nothing
    } else {
        last
    }
}

async fn exchange(mut stream: TcpStream, client_id: &str, login: Option<&Credentials>) -> Probe {
    let _ = stream.set_nodelay(true);
    if let Err(e) = stream.write_all(&connect_packet(client_id, login)).await {
        return Probe::NotMqtt(format!(
            "it closed the connection when we sent an MQTT CONNECT ({e})"
        ));
    }
    let mut answer = [0u8; 4];
    let read = tokio::time::timeout(TIMEOUT, read_up_to(&mut stream, &mut answer)).await;
    let probe = match read {
        Err(_) => Probe::NotMqtt(format!("it did not answer an MQTT CONNECT within {TIMEOUT:?}")),
        Ok(Err(e)) => Probe::NotMqtt(format!("reading its answer failed: {e}")),
        Ok(Ok(0)) if login.is_some() => Probe::NotMqtt(
            "it closed the connection without answering our MQTT CONNECT (a broker that checks logins may do this on a wrong username or password)".into(),
        ),
        Ok(Ok(0)) => Probe::NotMqtt("it closed the connection without answering our MQTT CONNECT".into()),
        Ok(Ok(n)) => match answer {
            [0x20, 0x02, _, 0] if n == 4 => Probe::Broker,
            [0x20, 0x02, _, code] if n == 4 => Probe::Refused(code),
            _ => {
                // The rest of its first line, if it comes at once, tells the owner what it is.
                let mut more = [0u8; 60];
                let extra = tokio::time::timeout(Duration::from_millis(200), stream.read(&mut more))
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .unwrap_or(0);
                let mut seen = answer[..n].to_vec();
                seen.extend_from_slice(&more[..extra]);
                Probe::NotMqtt(format!(
                    "it answered an MQTT CONNECT with {}",
                    printable(&seen)
                ))
            }
        },
    };
    if probe == Probe::Broker {
        // DISCONNECT, so the broker does not publish a will or log an abrupt close.
        let _ = stream.write_all(&[0xE0, 0x00]).await;
    }
    probe
}

async fn read_up_to(stream: &mut TcpStream, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match stream.read(&mut buf[filled..]).await? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// The first line of a text answer, quoted; the bytes in hex otherwise.
fn printable(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let line = text.lines().next().unwrap_or_default();
    if !line.is_empty() && line.chars().all(|c| !c.is_control()) {
        format!("{line:?}")
    } else {
        bytes
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// An MQTT 3.1.1 CONNECT: clean session (the probe leaves no session behind), keep-alive 10 s.
fn connect_packet(client_id: &str, login: Option<&Credentials>) -> Vec<u8> {
    fn string(out: &mut Vec<u8>, bytes: &[u8]) {
        let len = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&bytes[..usize::from(len)]);
    }
    let mut flags = 0x02;
    let mut body = Vec::new();
    string(&mut body, b"MQTT");
    body.push(4);
    if login.is_some() {
        flags |= 0x80 | 0x40;
    }
    body.push(flags);
    body.extend_from_slice(&10u16.to_be_bytes());
    string(&mut body, client_id.as_bytes());
    if let Some(login) = login {
        string(&mut body, login.username.as_bytes());
        string(&mut body, login.password.expose().as_bytes());
    }
    let mut packet = vec![0x10];
    let mut len = body.len();
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        packet.push(byte);
        if len == 0 {
            break;
        }
    }
    packet.extend_from_slice(&body);
    packet
}
