//! The publishing connection: what rules publish, and the engine's own `online`/`offline` status.
//!
//! Its event loop runs in its own task and only polls; the actions stage hands publishes to it through
//! a bounded channel ([`PublishHandle`]) and so feels back-pressure from a slow broker, while the rule
//! thread never does. `offline` is both the last will (a crash) and the last thing sent on a clean stop.

use std::time::Duration;

use bytes::Bytes;
use rumqttc::{AsyncClient, Event as MqttEvent, EventLoop, LastWill, Outgoing, Packet, QoS};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::subscriber::LinkState;
use super::{network_options, options, qos};
use crate::config::MqttConfig;

/// Publishes queued toward the broker before the actions stage waits. Big enough to absorb a burst of
/// rule output, small enough that a dead broker is noticed as back-pressure rather than memory growth.
const REQUEST_CAPACITY: usize = 1_024;

/// Status payloads on `<base_topic>/status`.
const ONLINE: &str = "online";
/// How long a clean stop waits for the broker to close the connection after our DISCONNECT.
const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const OFFLINE: &str = "offline";

/// Why a publish could not be queued.
#[derive(Debug, thiserror::Error)]
#[error("cannot publish to {topic}: {source}")]
pub struct PublishError {
    topic: String,
    source: rumqttc::ClientError,
}

/// Queues publishes on the publishing connection.
#[derive(Clone)]
pub struct PublishHandle {
    client: AsyncClient,
    status_topic: String,
}

impl PublishHandle {
    /// Queues one publish; waits only while the connection's channel is full.
    pub async fn publish(
        &self,
        topic: &str,
        payload: Bytes,
        level: u8,
        retain: bool,
    ) -> Result<(), PublishError> {
        self.client
            .publish_bytes(topic, qos(level), retain, payload)
            .await
            .map_err(|source| PublishError {
                topic: topic.to_string(),
                source,
            })
    }

    /// Announces `offline` and disconnects, after everything queued before it.
    pub async fn close(self) {
        let offline = self
            .client
            .publish(self.status_topic.clone(), QoS::AtLeastOnce, true, OFFLINE);
        if let Err(e) = offline.await {
            warn!("cannot publish offline status: {e}");
        }
        if let Err(e) = self.client.disconnect().await {
            warn!("cannot disconnect the publishing connection: {e}");
        }
    }
}

/// The publishing connection's event loop.
pub struct Publisher {
    config: MqttConfig,
    client: AsyncClient,
    eventloop: EventLoop,
    status_topic: String,
}

impl Publisher {
    /// Prepares the connection with `offline` as its last will.
    pub fn new(config: &MqttConfig) -> (Publisher, PublishHandle) {
        let status_topic = config.status_topic();
        let mut mqtt_options = options(config, format!("{}-out", config.client_id));
        mqtt_options.set_last_will(LastWill::new(&status_topic, OFFLINE, QoS::AtLeastOnce, true));
        let (client, mut eventloop) = AsyncClient::new(mqtt_options, REQUEST_CAPACITY);
        eventloop.set_network_options(network_options());
        let handle = PublishHandle {
            client: client.clone(),
            status_topic: status_topic.clone(),
        };
        let publisher = Publisher {
            config: config.clone(),
            client,
            eventloop,
            status_topic,
        };
        (publisher, handle)
    }

    /// Polls until the DISCONNECT queued by [`PublishHandle::close`] is sent, or every handle is gone.
    /// After `shutdown`, a broker that cannot be reached ends the loop instead of being retried.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut link = LinkState::new(&self.config, "publish", &format!("{}-out", self.config.client_id));
        let mut announce_online = false;
        let mut disconnect_by = None;
        loop {
            let polled = match disconnect_by {
                None => self.eventloop.poll().await,
                Some(deadline) => match tokio::time::timeout_at(deadline, self.eventloop.poll()).await {
                    Ok(polled) => polled,
                    Err(_) => return, // everything was written; the broker is just slow to close
                },
            };
            match polled {
                Ok(MqttEvent::Incoming(Packet::ConnAck(connack))) => {
                    link.connected(connack.session_present);
                    announce_online = true;
                }
                // Read on until the broker closes the connection: closing it ourselves with unread
                // PUBACKs in the socket would reset it, and a reset can drop our last publishes.
                Ok(MqttEvent::Outgoing(Outgoing::Disconnect)) => {
                    disconnect_by = Some(tokio::time::Instant::now() + DISCONNECT_TIMEOUT);
                }
                Ok(_) => {}
                Err(_) if disconnect_by.is_some() => return,
                Err(rumqttc::ConnectionError::RequestsDone) => return,
                Err(e) => {
                    if shutdown.is_cancelled() {
                        warn!("stopping without a broker: publishes still queued are not sent");
                        return;
                    }
                    let pause = link.failed(&e);
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = shutdown.cancelled() => {}
                    }
                }
            }
            // Never awaited here: a full channel just means we try again after the next event.
            if announce_online {
                let online = self
                    .client
                    .try_publish(&self.status_topic, QoS::AtLeastOnce, true, ONLINE);
                announce_online = online.is_err();
            }
        }
    }
}
