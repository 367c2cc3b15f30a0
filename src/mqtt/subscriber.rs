//! The ingest source: one persistent MQTT session that receives every subscribed message and forwards
//! it to the rules (at once) and to ingest (to be stored, then acknowledged).
//!
//! Invariants:
//! - The task that polls the event loop polls, forwards and writes acknowledgements; it never awaits a
//!   request into the client, so it cannot deadlock on its own bounded channel (rumqttc only drains that channel while it is
//!   polled, so a poller that waits on it waits on itself).
//! - QoS 1/2 messages are acknowledged only after ingest committed them; until then the broker keeps
//!   them in our session and redelivers them if we go away.
//! - Acknowledgements are written to the socket by this task, a committed batch at a time with one
//!   system call, never through rumqttc's request channel. That channel is drained one request per turn
//!   of the event loop while a turn reads up to ten messages: at full speed the queued acknowledgements
//!   outgrew it, ingest waited for room, the poll loop waited for ingest, and ingest stopped for good.
//!   It was also one `write` per message, on the core the broker needs.
//! - Subscriptions are renewed after every ConnAck, so a broker that lost our session still sends.
//! - A PUBREL is answered with PUBCOMP whatever its packet id, on every connection: the broker sends
//!   it again after a reconnect or a restart for a message we had already stored and answered with
//!   PUBREC, and rumqttc alone would drop the connection over it every time
//!   ([`rumqttc_ext::accept_any_pubrel`]).

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{
    AsyncClient, Event as MqttEvent, EventLoop, Outgoing, Packet, PubAck, PubRec, QoS, SubscribeReasonCode,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::rumqttc_ext::{self, DirectWriteError};
use super::{Backoff, TlsError, describe, network_options, options, qos};
use crate::config::MqttConfig;
use crate::event::{Event, Message, now_millis};
use crate::os::health::IngestProgress;

/// Capacity of the ingest connection's request channel: subscriptions and the DISCONNECT travel through
/// it (acknowledgements do not, see the module doc).
const REQUEST_CAPACITY: usize = 64;

/// How long a clean stop waits for the broker to take our last acknowledgements and DISCONNECT.
const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest packet MQTT 3.1.1 can carry: its remaining length (at most 268,435,455) plus the fixed
/// header. The ingest connection accepts anything up to this, so that no message can make rumqttc drop
/// the connection; see [`Forward::send`] for what happens to messages above `mqtt.max_packet_size`.
const PROTOCOL_MAX_PACKET: usize = 268_435_455 + 5;

/// A message on its way to ingest, with what is needed to acknowledge it once stored.
#[derive(Debug)]
pub struct Incoming {
    /// `None` for a message that is acknowledged (in order) but not stored: it was too large.
    pub message: Option<Message>,
    /// `None` for QoS 0, which has nothing to acknowledge.
    pub ack: Option<AckToken>,
}

/// The packet id and QoS of a received message, and the connection it came in on: all an
/// acknowledgement needs.
#[derive(Debug, Clone, Copy)]
pub struct AckToken {
    pkid: u16,
    qos: QoS,
    /// Counts ConnAcks. A message not acknowledged when its connection failed is sent again on the
    /// next one (or, when the broker forgot the session, not at all), and that copy is stored and
    /// acknowledged in its turn; acknowledging the old copy too would free its packet id early, and
    /// a second acknowledgement could then confirm another, uncommitted message that got the id.
    connection: u64,
}

/// Hands the acknowledgements of committed messages to the subscriber task, which writes them.
/// Dropping every `Acker` tells the subscriber that ingest is done.
pub struct Acker {
    batches: mpsc::UnboundedSender<Vec<AckToken>>,
    progress: Arc<IngestProgress>,
}

impl Acker {
    /// Queues the acknowledgements of one committed batch, in the order the messages were received.
    /// Never waits: waiting here is how ingest and the poll loop once stopped each other (module doc).
    /// The queue holds what ingest committed since the subscriber's last turn: at most what was
    /// received, which the broker's window (or its backlog, which Mosquitto sends past the window)
    /// bounds. Fails only when the subscriber is gone (and with it the connection to acknowledge on).
    pub fn ack(&self, tokens: Vec<AckToken>) -> Result<(), AckerClosed> {
        if tokens.is_empty() {
            return Ok(());
        }
        self.batches.send(tokens).map_err(|_| AckerClosed)
    }

    /// Ingest is done with `messages` received messages (stored, or acknowledged without storing):
    /// what the watchdog counts as progress.
    pub fn finished(&self, messages: usize) {
        self.progress.finished(messages);
    }
}

/// The subscriber task, and the ingest connection with it, is gone.
#[derive(Debug, thiserror::Error)]
#[error("the ingest connection is closed")]
pub struct AckerClosed;

/// The ingest source. Build with [`Subscriber::new`], then `run` it.
pub struct Subscriber {
    config: MqttConfig,
    client: AsyncClient,
    eventloop: EventLoop,
    forward: Option<Forward>,
    acks: mpsc::UnboundedReceiver<Vec<AckToken>>,
    progress: Arc<IngestProgress>,
}

impl Subscriber {
    /// Prepares the connection (nothing is sent until `run`) and returns the acker ingest uses.
    pub fn new(
        config: &MqttConfig,
        to_ingest: mpsc::Sender<Incoming>,
        to_rules: flume::Sender<Event>,
        progress: Arc<IngestProgress>,
    ) -> Result<(Subscriber, Acker), TlsError> {
        let mut mqtt_options = options(config, config.client_id.clone())?;
        // rumqttc drops the connection on an incoming packet above its limit, without a chance to
        // acknowledge it; the broker then redelivers it on every reconnect and ingest stalls behind it
        // for good. So take anything the protocol allows and refuse oversize
        // messages ourselves.
        mqtt_options
            .set_manual_acks(true)
            .set_max_packet_size(PROTOCOL_MAX_PACKET, config.max_packet_size);
        let (client, mut eventloop) = AsyncClient::new(mqtt_options, REQUEST_CAPACITY);
        eventloop.set_network_options(network_options());
        let (batches, acks) = mpsc::unbounded_channel();
        let acker = Acker {
            batches,
            progress: Arc::clone(&progress),
        };
        let forward = Some(Forward {
            ingest: to_ingest,
            rules: Some(to_rules),
            max_packet_size: config.max_packet_size,
            dropped: 0,
            progress: Arc::clone(&progress),
        });
        let subscriber = Subscriber {
            config: config.clone(),
            client,
            eventloop,
            forward,
            acks,
            progress,
        };
        Ok((subscriber, acker))
    }

    /// Receives until `shutdown`; then stops forwarding, keeps the connection up until ingest has
    /// committed and handed over every acknowledgement (every [`Acker`] dropped), and disconnects.
    pub async fn run(mut self, shutdown: CancellationToken) {
        // Dropping it on shutdown is what lets ingest and rules see their input end.
        let mut forward = self.forward.take();
        let mut link = LinkState::new(&self.config, "ingest", &self.config.client_id);
        let mut disconnect_by: Option<tokio::time::Instant> = None;
        let mut disconnect_sent = false;
        let mut connection: u64 = 0;
        let mut ingest_done = false;
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled(), if forward.is_some() => {
                    debug!("ingest source stopping; waiting for ingest to commit what it holds");
                    forward = None;
                }
                batch = self.acks.recv(), if !ingest_done => match batch {
                    Some(tokens) => self.write_acks(&tokens, connection).await,
                    None => {
                        ingest_done = true;
                        if !link.connected {
                            debug!("ingest done; not connected, so nothing to disconnect");
                            return;
                        }
                        if let Err(e) = self.client.try_disconnect() {
                            warn!("cannot queue DISCONNECT: {e}");
                            return;
                        }
                        disconnect_by = Some(tokio::time::Instant::now() + DISCONNECT_TIMEOUT);
                    }
                },
                _ = sleep_until(disconnect_by), if disconnect_by.is_some() => {
                    warn!("broker did not take our DISCONNECT in time; unacknowledged messages will be redelivered");
                    return;
                }
                polled = self.eventloop.poll() => match polled {
                    Ok(MqttEvent::Incoming(Packet::Publish(publish))) => {
                        // When stopping it is not forwarded, so not acknowledged: the broker redelivers it.
                        if let Some(to) = &mut forward
                            && !to.send(publish, connection).await
                        {
                            forward = None;
                        }
                    }
                    Ok(MqttEvent::Incoming(Packet::ConnAck(connack))) => {
                        link.connected(connack.session_present);
                        self.progress.set_connected(true);
                        connection += 1;
                        rumqttc_ext::accept_any_pubrel(&mut self.eventloop);
                        self.subscribe();
                    }
                    Ok(MqttEvent::Incoming(Packet::SubAck(suback))) => self.check_suback(&suback.return_codes),
                    // Not done yet: closing a socket with unread input (the broker keeps sending while
                    // its window allows) makes the kernel reset the connection, and a reset can
                    // discard our last acknowledgements at the broker. Read until the broker, having
                    // processed our DISCONNECT, closes the connection.
                    Ok(MqttEvent::Outgoing(Outgoing::Disconnect)) => disconnect_sent = true,
                    Ok(_) => {}
                    Err(e) => {
                        if disconnect_sent {
                            debug!("ingest connection closed by the broker after our DISCONNECT");
                            return;
                        }
                        if forward.is_none() {
                            // Stopping anyway; what was not acknowledged is redelivered later.
                            warn!("ingest connection failed while stopping: {e}");
                            return;
                        }
                        if link.connected {
                            self.progress.session_lost(&e.to_string());
                        }
                        self.progress.set_connected(false);
                        let pause = link.failed(&e);
                        tokio::select! {
                            _ = tokio::time::sleep(pause) => {}
                            _ = shutdown.cancelled() => forward = None,
                        }
                    }
                },
            }
        }
    }

    /// Writes the acknowledgements of one committed batch with a single flush. Those from an earlier
    /// connection, or while there is none, are dropped (see [`AckToken::connection`]): the broker
    /// sends those messages again if it kept the session. When the write fails or times out the
    /// connection is failing too, and the next poll reports it.
    ///
    /// Written straight to the connection ([`rumqttc_ext::write_direct`]), not through rumqttc's
    /// state: the state would only queue an event per acknowledgement, and this loop would then take
    /// those events one turn of the loop each, which at full message rate cost a poll per message.
    async fn write_acks(&mut self, tokens: &[AckToken], connection: u64) {
        let packets = tokens.iter().filter_map(|token| ack_packet(token, connection));
        match rumqttc_ext::write_direct(&mut self.eventloop, packets).await {
            Ok(()) => {}
            Err(DirectWriteError::NotConnected) => debug!(
                acks = tokens.len(),
                "not connected: the broker sends these messages again"
            ),
            Err(DirectWriteError::TimedOut(_)) => debug!("writing acknowledgements timed out"),
            Err(e @ DirectWriteError::Failed(_)) => debug!("cannot write acknowledgements: {e}"),
        }
    }

    /// Renews every subscription. Done on every ConnAck: harmless when the session survived, and
    /// essential when the broker forgot it.
    fn subscribe(&self) {
        let level = qos(self.config.qos);
        let filters = self
            .config
            .subscribe
            .iter()
            .map(|f| rumqttc::SubscribeFilter::new(f.clone(), level));
        if let Err(e) = self.client.try_subscribe_many(filters) {
            error!("cannot subscribe to {:?}: {e}", self.config.subscribe);
        }
    }

    fn check_suback(&self, codes: &[SubscribeReasonCode]) {
        for (filter, code) in self.config.subscribe.iter().zip(codes) {
            if matches!(code, SubscribeReasonCode::Failure) {
                error!(
                    "broker refused the subscription to `{filter}` (check the broker's ACL for this user)"
                );
            }
        }
    }
}

/// Where received messages go.
struct Forward {
    ingest: mpsc::Sender<Incoming>,
    /// `None` once the rule thread is gone: storing goes on without rules.
    rules: Option<flume::Sender<Event>>,
    /// `mqtt.max_packet_size`: larger messages are acknowledged but neither stored nor given to rules.
    max_packet_size: usize,
    /// Messages dropped for their size since start.
    dropped: u64,
    progress: Arc<IngestProgress>,
}

impl Forward {
    /// Sends one received message to the rules and to ingest. Returns false when ingest is gone.
    ///
    /// A message larger than `mqtt.max_packet_size` goes to ingest only to be acknowledged in its turn:
    /// refusing it any other way would make the broker redeliver it forever. It is logged with its
    /// topic and size (the first one, then at every power of two, so a stream of them cannot flood the
    /// log).
    async fn send(&mut self, publish: rumqttc::Publish, connection: u64) -> bool {
        crate::metrics::METRICS.received.add(1);
        // Counted before the wait for room in ingest's queue: a message waiting there waits for ingest.
        self.progress.forwarded();
        let ack = match publish.qos {
            QoS::AtMostOnce => None,
            qos => Some(AckToken {
                pkid: publish.pkid,
                qos,
                connection,
            }),
        };
        let size = publish.topic.len() + publish.payload.len();
        if size > self.max_packet_size {
            self.dropped += 1;
            if self.dropped.is_power_of_two() {
                warn!(
                    topic = %publish.topic,
                    size,
                    dropped = self.dropped,
                    "dropped a message larger than mqtt.max_packet_size ({} bytes): not stored, not given to rules (raise mqtt.max_packet_size to keep such messages)",
                    self.max_packet_size
                );
            }
            return self.ingest.send(Incoming { message: None, ack }).await.is_ok();
        }
        let message = Message {
            ts: now_millis(),
            // Shared from here on: rules, ingest and each run's record all hold the same topic.
            topic: publish.topic.into(),
            payload: publish.payload,
            qos: publish.qos as u8,
            retain: publish.retain,
            dup: publish.dup,
        };
        // Rules first: their latency must not include the store's.
        if let Some(rules) = &self.rules
            && rules.send_async(Event::Message(message.clone())).await.is_err()
        {
            error!("the rule thread is gone; messages are still stored but no rule runs");
            self.rules = None;
        }
        self.ingest
            .send(Incoming {
                message: Some(message),
                ack,
            })
            .await
            .is_ok()
    }
}

/// The packet that acknowledges `token`'s message on the current `connection`: PUBACK for QoS 1, PUBREC
/// for QoS 2 (rumqttc answers the broker's PUBREL with PUBCOMP). None for a message of an earlier
/// connection (see [`AckToken::connection`]).
fn ack_packet(token: &AckToken, connection: u64) -> Option<Packet> {
    if token.connection != connection {
        return None;
    }
    Some(match token.qos {
        QoS::ExactlyOnce => Packet::PubRec(PubRec::new(token.pkid)),
        _ => Packet::PubAck(PubAck::new(token.pkid)),
    })
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Connection state for logging each change once, not every retry.
pub(super) struct LinkState {
    broker: String,
    config: MqttConfig,
    role: &'static str,
    client_id: String,
    pub(super) connected: bool,
    last_error: Option<String>,
    backoff: Backoff,
}

impl LinkState {
    /// `role` names the connection in logs (`ingest`, `publish`).
    pub(super) fn new(config: &MqttConfig, role: &'static str, client_id: &str) -> Self {
        LinkState {
            broker: format!("{}:{}", config.host, config.port),
            config: config.clone(),
            role,
            client_id: client_id.to_string(),
            connected: false,
            last_error: None,
            backoff: Backoff::new(),
        }
    }

    pub(super) fn connected(&mut self, session_present: bool) {
        info!(broker = %self.broker, session_present, client_id = %self.client_id, "{} connection up", self.role);
        self.connected = true;
        self.last_error = None;
        self.backoff.reset();
    }

    /// Logs a failure (once per distinct failure) and returns how long to wait before retrying.
    pub(super) fn failed(&mut self, error: &rumqttc::ConnectionError) -> Duration {
        let text = describe(error, &self.config, !self.connected);
        let pause = self.backoff.step();
        if self.connected {
            warn!("{} connection lost: {text}; reconnecting", self.role);
        } else if self.last_error.as_deref() != Some(text.as_str()) {
            warn!(
                "{} connection: {text}; retrying with backoff up to 30s",
                self.role
            );
        } else {
            debug!("{text}; retrying in {pause:?}");
        }
        self.connected = false;
        self.last_error = Some(text);
        pause
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(pkid: u16, qos: QoS, connection: u64) -> AckToken {
        AckToken {
            pkid,
            qos,
            connection,
        }
    }

    #[test]
    fn acknowledgements_match_the_qos_and_skip_an_earlier_connection() {
        let tokens = [
            token(7, QoS::AtLeastOnce, 2),
            token(8, QoS::ExactlyOnce, 2),
            token(9, QoS::AtLeastOnce, 1),
        ];
        let packets: Vec<Packet> = tokens.iter().filter_map(|t| ack_packet(t, 2)).collect();
        assert_eq!(
            packets,
            [Packet::PubAck(PubAck::new(7)), Packet::PubRec(PubRec::new(8))]
        );
        assert!(ack_packet(&token(9, QoS::AtLeastOnce, 1), 1).is_some());
    }
}
