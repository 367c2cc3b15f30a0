//! The publishing connection: what rules publish, and the engine's own `online`/`offline` status.
//!
//! Its event loop runs in its own task and only polls; the actions stage hands publishes to it through
//! [`PublishHandle`] and so feels back-pressure from a slow broker, while the rule thread never does.
//! `offline` is both the last will (a crash) and the last thing sent on a clean stop.
//!
//! # The outbox
//!
//! rumqttc keeps unacknowledged publishes only in memory, and drops them when the broker answers a
//! reconnect without our session (`session_present: false` clears its `pending`). So publishes that cannot be handed over go to a
//! table of our own ([`crate::store::outbox`]), which survives an outage and a restart:
//!
//! - While the connection is up and the outbox is empty (the route is *live*), a publish goes straight
//!   into rumqttc's channel: no database write delays the rule path, which is the common case by far.
//!   Writing every publish to the outbox first would add a commit (an fsync, milliseconds on an SD
//!   card) before each one.
//! - When the connection fails, everything rumqttc still holds (sent but unacknowledged, and not yet
//!   sent) is taken from its `pending` queue and written to the outbox, and the route switches to the
//!   outbox: from then on, publishes are appended there, in order.
//! - After a ConnAck, the outbox is replayed in windows of [`REPLAY_WINDOW`] rows; a row is removed
//!   once the broker acknowledged it (PUBACK for QoS 1, PUBCOMP for QoS 2, written for QoS 0). New
//!   publishes keep going to the outbox until it is empty, so the broker sees them in the order rules
//!   made them. Then the route is live again.
//!
//! The price of the fast path: a publish handed to a live connection that the engine is killed (not
//! stopped) before the broker acknowledged it is lost, a window of one round trip. Delivery through the
//! outbox is at least once: a publish the broker received but had not acknowledged when the connection
//! failed is sent again.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rumqttc::{AsyncClient, Event as MqttEvent, EventLoop, LastWill, Outgoing, Packet, QoS, Request};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::rumqttc_ext;
use super::subscriber::LinkState;
use super::{TlsError, network_options, options, qos};
use crate::config::MqttConfig;
use crate::store::outbox::QueuedPublish;
use crate::store::{Store, StoreError};

/// Publishes queued toward the broker before the actions stage waits. Big enough to absorb a burst of
/// rule output, small enough that a dead broker is noticed as back-pressure rather than memory growth.
const REQUEST_CAPACITY: usize = 1_024;

/// Most QoS 1 and 2 publishes sent and not yet acknowledged. Mosquitto takes at most 20 QoS 2
/// messages in flight from a client (`max_inflight_messages`, 20 by default), and MQTT 3.1.1 has no way
/// to ask: with rumqttc's default of 100, a rule that published 50 QoS 2 messages at once made
/// Mosquitto drop the connection ("Bad socket read/write"), and the reconnections sent them again,
/// 103 deliveries for 50 publishes. 20 round trips in flight still carry thousands of publishes a
/// second to a broker on the LAN.
pub const PUBLISH_INFLIGHT: u16 = 20;

/// Outbox rows handed to the connection at once during a replay. Below [`PUBLISH_INFLIGHT`], so the
/// packet ids of a window never collide (one id is left for the `online` status, which may still be
/// unacknowledged), and small enough that a connection that fails mid-replay has little to send twice.
pub const REPLAY_WINDOW: usize = PUBLISH_INFLIGHT as usize - 1;

/// Times a publish may be alone in flight when the connection fails before it is set aside as refused
/// by the broker (see `Publisher::blame_window`). More than one, so a broker restart at the wrong
/// moment does not cost a good publish.
pub const REFUSALS: i64 = 3;

/// How long a live publish waits before trying again when rumqttc's request channel is full.
const CHANNEL_FULL_PAUSE: Duration = Duration::from_millis(5);

/// Attempts to write publishes to the outbox before they are given up (and logged as lost).
const OUTBOX_ATTEMPTS: u32 = 5;
/// Pause between those attempts.
const OUTBOX_RETRY_PAUSE: Duration = Duration::from_millis(200);

/// Most bytes of a PUBLISH packet besides topic and payload: packet type, remaining length (up to 4),
/// topic length, packet id. rumqttc refuses a packet above `max_packet_size` by failing the connection.
const PUBLISH_OVERHEAD: usize = 9;

/// Status payloads on `<base_topic>/status`.
const ONLINE: &str = "online";
const OFFLINE: &str = "offline";
/// How long a clean stop waits for the broker to close the connection after our DISCONNECT.
const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a publish could not be queued.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("cannot publish: {0}")]
    InvalidTopic(String),
    #[error("cannot publish {size} bytes to `{topic}`: larger than mqtt.max_packet_size ({limit} bytes)")]
    TooLarge {
        topic: String,
        size: usize,
        limit: usize,
    },
    #[error(
        "cannot publish to `{topic}`: the broker is unreachable and the outbox cannot be written: {source}"
    )]
    Outbox { topic: String, source: StoreError },
}

/// Where a publish goes now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// Straight into rumqttc: connected, and nothing older waits in the outbox.
    Live,
    /// Appended to the outbox: not connected, or the outbox is still being replayed.
    Outbox,
}

/// Queues publishes on the publishing connection, or in the outbox.
#[derive(Clone)]
pub struct PublishHandle {
    client: AsyncClient,
    status_topic: String,
    max_packet_size: usize,
    /// Held while a publish is routed, so the publisher can switch routes between two publishes and
    /// never in the middle of one.
    route: Arc<Mutex<Route>>,
    store: Store,
}

impl PublishHandle {
    /// Queues one publish: on the connection when it is live (waiting only while rumqttc's channel is
    /// full), else in the outbox.
    pub async fn publish(
        &self,
        topic: &str,
        payload: Bytes,
        level: u8,
        retain: bool,
    ) -> Result<(), PublishError> {
        // Rules are checked where they publish; this also guards every other caller, since a topic the
        // broker refuses would cost the connection and, from the outbox, every reconnect after it.
        if let Some(problem) = super::topic::publish_problem(topic) {
            return Err(PublishError::InvalidTopic(problem));
        }
        let size = topic.len() + payload.len() + PUBLISH_OVERHEAD;
        if size > self.max_packet_size {
            // Sending it would make rumqttc drop the connection, and the outbox would retry it forever.
            return Err(PublishError::TooLarge {
                topic: topic.to_string(),
                size,
                limit: self.max_packet_size,
            });
        }
        loop {
            let route = self.route.lock().await;
            if *route == Route::Outbox {
                let queued = QueuedPublish {
                    topic: topic.to_string(),
                    payload,
                    qos: level,
                    retain,
                };
                return self
                    .store
                    .push_outbox(std::slice::from_ref(&queued))
                    .await
                    .map_err(|source| PublishError::Outbox {
                        topic: topic.to_string(),
                        source,
                    });
            }
            // try_publish, never an await while holding the route: the publisher needs the route to
            // switch it, and only the publisher's polling makes room in the channel.
            match self
                .client
                .try_publish(topic, qos(level), retain, payload.to_vec())
            {
                Ok(()) => return Ok(()),
                Err(_) => {
                    drop(route);
                    tokio::time::sleep(CHANNEL_FULL_PAUSE).await;
                }
            }
        }
    }

    /// Announces `offline` and disconnects, after everything queued before it.
    pub async fn close(self) {
        let offline = self
            .client
            .publish(self.status_topic.clone(), QoS::AtLeastOnce, true, OFFLINE);
        if let Err(e) = offline.await {
            debug!("cannot publish offline status: {e}");
        }
        if let Err(e) = self.client.disconnect().await {
            debug!("cannot disconnect the publishing connection: {e}");
        }
    }
}

/// The publishing connection's event loop.
pub struct Publisher {
    config: MqttConfig,
    client: AsyncClient,
    eventloop: EventLoop,
    status_topic: String,
    route: Arc<Mutex<Route>>,
    store: Store,
    replay: Replay,
    /// Outbox rows still to replay one at a time, after a connection failed with several in flight.
    careful: usize,
}

impl Publisher {
    /// Prepares the connection with `offline` as its last will. Publishes start in the outbox until the
    /// first ConnAck, so that what a previous run left there goes out first.
    pub fn new(config: &MqttConfig, store: Store) -> Result<(Publisher, PublishHandle), TlsError> {
        let status_topic = config.status_topic();
        let mut mqtt_options = options(config, format!("{}-out", config.client_id))?;
        mqtt_options
            .set_last_will(LastWill::new(&status_topic, OFFLINE, QoS::AtLeastOnce, true))
            .set_inflight(PUBLISH_INFLIGHT);
        let (client, mut eventloop) = AsyncClient::new(mqtt_options, REQUEST_CAPACITY);
        eventloop.set_network_options(network_options());
        let route = Arc::new(Mutex::new(Route::Outbox));
        let handle = PublishHandle {
            client: client.clone(),
            status_topic: status_topic.clone(),
            max_packet_size: config.max_packet_size,
            route: Arc::clone(&route),
            store: store.clone(),
        };
        let publisher = Publisher {
            config: config.clone(),
            client,
            eventloop,
            status_topic,
            route,
            store,
            replay: Replay::default(),
            careful: 0,
        };
        Ok((publisher, handle))
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
                    Err(_) => break, // everything was written; the broker is just slow to close
                },
            };
            match polled {
                Ok(MqttEvent::Incoming(Packet::ConnAck(connack))) => {
                    link.connected(connack.session_present);
                    announce_online = true;
                    self.replay = Replay::default();
                    self.next_window().await;
                }
                Ok(MqttEvent::Outgoing(Outgoing::Publish(pkid))) => self.replay.written(pkid),
                Ok(MqttEvent::Outgoing(Outgoing::AwaitAck(pkid))) => self.replay.collided(pkid),
                Ok(MqttEvent::Incoming(Packet::PubAck(ack))) => self.replay.acknowledged(ack.pkid),
                Ok(MqttEvent::Incoming(Packet::PubComp(comp))) => self.replay.acknowledged(comp.pkid),
                // Read on until the broker closes the connection: closing it ourselves with unread
                // PUBACKs in the socket would reset it, and a reset can drop our last publishes.
                Ok(MqttEvent::Outgoing(Outgoing::Disconnect)) => {
                    disconnect_by = Some(tokio::time::Instant::now() + DISCONNECT_TIMEOUT);
                }
                Ok(_) => {}
                Err(_) if disconnect_by.is_some() => break,
                Err(rumqttc::ConnectionError::RequestsDone) => break,
                Err(e) => {
                    self.blame_window().await;
                    self.spill().await;
                    if shutdown.is_cancelled() {
                        info!("stopping without a broker: what rules publish is kept in the outbox");
                        return;
                    }
                    let pause = link.failed(&e);
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = shutdown.cancelled() => {}
                    }
                }
            }
            if self.replay.window_done() {
                self.finish_window().await;
            }
            // Never awaited here: a full channel just means we try again after the next event.
            if announce_online {
                let online = self
                    .client
                    .try_publish(&self.status_topic, QoS::AtLeastOnce, true, ONLINE);
                announce_online = online.is_err();
            }
        }
        // Publishes made after this (the actions stage draining) go to the outbox, for the next run.
        self.spill().await;
    }

    /// The connection failed: moves what rumqttc still holds to the outbox and routes new publishes
    /// there. Rows being replayed are still in the outbox and are not written twice.
    async fn spill(&mut self) {
        let mut route = self.route.lock().await;
        *route = Route::Outbox;
        // Also takes what is still in the request channel.
        self.eventloop.clean();
        // rumqttc keeps the failed connection's events that were not yet polled (`Outgoing::Publish` of
        // packets written before the failure, acknowledgements read but not yet returned), and returns
        // them after the next ConnAck. The replay would pair such an old packet id with the first row
        // of its new window, and that row would wait forever for an acknowledgement, stalling the
        // outbox. Nothing in them is needed: what was not acknowledged is in `pending` (and spilled
        // below), and the replay starts over.
        rumqttc_ext::forget_unpolled_events(&mut self.eventloop);
        let mut kept = VecDeque::new();
        let mut spilled = Vec::new();
        for request in rumqttc_ext::take_pending(&mut self.eventloop) {
            match request {
                Request::Publish(publish) => {
                    // Status is announced again on the next ConnAck, and `offline` is the will.
                    if publish.topic != self.status_topic && !self.replay.owns(&publish) {
                        spilled.push(QueuedPublish {
                            topic: publish.topic,
                            payload: publish.payload,
                            qos: publish.qos as u8,
                            retain: publish.retain,
                        });
                    }
                }
                // PUBRELs must reach the broker again if it kept our session (QoS 2); rumqttc resends
                // or drops them itself.
                other => kept.push_back(other),
            }
        }
        rumqttc_ext::requeue(&mut self.eventloop, kept);
        self.replay = Replay::default();
        if !spilled.is_empty() {
            info!(
                publishes = spilled.len(),
                "the broker did not acknowledge these publishes; kept in the outbox"
            );
            write_outbox(&self.store, &spilled).await;
        }
        drop(route);
    }

    /// The connection failed while outbox rows were in flight. A broker closes the connection over a
    /// publish it refuses (Mosquitto does for a NUL in the topic), and the replay would send that
    /// publish first again at every reconnect, for ever, with every later publish behind it. So after
    /// such a failure the next rows go one at a time, and a row alone in flight when the connection
    /// fails [`REFUSALS`] times is set aside in `outbox_refused`, logged and counted.
    async fn blame_window(&mut self) {
        let in_flight = self.replay.in_flight();
        let [(id, topic)] = in_flight.as_slice() else {
            if !in_flight.is_empty() {
                self.careful = REPLAY_WINDOW;
            }
            return;
        };
        if self.replay.size > 1 {
            self.careful = REPLAY_WINDOW;
            return;
        }
        let attempts = match self.store.outbox_failed(*id).await {
            Ok(attempts) => attempts,
            Err(e) => {
                warn!("cannot count a failed delivery from the outbox: {e}");
                return;
            }
        };
        if attempts < REFUSALS {
            return;
        }
        match self.store.refuse_outbox_row(*id).await {
            Ok(()) => {
                crate::metrics::METRICS.outbox_refused.add(1);
                crate::metrics::METRICS.action_errors.add(1);
                error!(
                    "the broker closed the connection each of the {attempts} times the publish to `{}` was sent: set aside (table outbox_refused, id {id}) so the publishes behind it go out",
                    topic.escape_debug()
                );
            }
            Err(e) => warn!("cannot set aside a publish the broker refuses: {e}"),
        }
    }

    /// Hands the next window of outbox rows to the connection, or, when the outbox is empty, makes the
    /// route live.
    async fn next_window(&mut self) {
        let mut route = self.route.lock().await;
        let size = if self.careful > 0 { 1 } else { REPLAY_WINDOW };
        let rows = match self.store.outbox_after(self.replay.cursor, size).await {
            Ok(rows) => rows,
            Err(e) => {
                // Retried after the next acknowledgement or reconnect; publishes wait in the outbox.
                error!("cannot read the outbox: {e}; publishes wait there");
                self.replay.stalled = true;
                return;
            }
        };
        if rows.is_empty() {
            if *route == Route::Outbox && self.replay.cursor > 0 {
                info!("outbox delivered; publishing directly again");
            }
            *route = Route::Live;
            self.replay.active = false;
            return;
        }
        *route = Route::Outbox;
        self.replay.active = true;
        self.replay.size = rows.len();
        for (id, queued) in rows {
            let mut publish = rumqttc::Publish::from_bytes(queued.topic, qos(queued.qos), queued.payload);
            publish.retain = queued.retain;
            self.replay.cursor = id;
            self.replay.unsent.push_back((id, publish.clone()));
            rumqttc_ext::requeue(&mut self.eventloop, [Request::Publish(publish)]);
        }
    }

    /// Removes the window the broker acknowledged from the outbox and starts the next one.
    async fn finish_window(&mut self) {
        if self.replay.size == 1 {
            self.careful = self.careful.saturating_sub(1);
        }
        let done = std::mem::take(&mut self.replay.done);
        if let Err(e) = self.store.remove_from_outbox(&done).await {
            // They were delivered; removing them later is enough. A restart before that sends them again.
            warn!(
                "cannot remove {} delivered publishes from the outbox: {e}",
                done.len()
            );
        }
        self.next_window().await;
    }
}

/// Writes publishes to the outbox, retrying a few times; what still cannot be written is logged as lost.
async fn write_outbox(store: &Store, publishes: &[QueuedPublish]) {
    for attempt in 1..=OUTBOX_ATTEMPTS {
        match store.push_outbox(publishes).await {
            Ok(()) => return,
            Err(e) if attempt == OUTBOX_ATTEMPTS => {
                error!(
                    "cannot keep {} publishes in the outbox: {e}; they are lost",
                    publishes.len()
                );
            }
            Err(e) => {
                warn!("cannot write the outbox (attempt {attempt}): {e}; retrying");
                tokio::time::sleep(OUTBOX_RETRY_PAUSE).await;
            }
        }
    }
}

/// The outbox window in rumqttc's hands, followed through its events. Packet ids are assigned when a
/// publish is written, and rumqttc writes `pending` in order before anything from its channel, so the
/// n-th `Outgoing::Publish` after a window was queued is the window's n-th row.
#[derive(Default)]
struct Replay {
    /// A window is in flight (or the outbox has rows left).
    active: bool,
    /// Reading the outbox failed; tried again on the next reconnect.
    stalled: bool,
    /// The last outbox id handed over.
    cursor: i64,
    /// Rows in the current window.
    size: usize,
    /// Rows queued in rumqttc, not yet written.
    unsent: VecDeque<(i64, rumqttc::Publish)>,
    /// Rows written, by packet id, waiting for their acknowledgement.
    awaiting: HashMap<u16, (i64, rumqttc::Publish)>,
    /// Rows delivered, to remove from the outbox.
    done: Vec<i64>,
    /// A row rumqttc held back because its packet id was still in use (a collision), with that id:
    /// rumqttc writes it once the id's current holder is acknowledged, out of the window's order.
    held: Option<(u16, (i64, rumqttc::Publish))>,
}

impl Replay {
    fn written(&mut self, pkid: u16) {
        if let Some((held_pkid, row)) = self.held.take() {
            if held_pkid == pkid {
                self.awaiting.insert(pkid, row);
                return;
            }
            self.held = Some((held_pkid, row));
        }
        if let Some((id, publish)) = self.unsent.pop_front() {
            if pkid == 0 {
                self.done.push(id); // QoS 0: written is all there is
            } else {
                self.awaiting.insert(pkid, (id, publish));
            }
        }
    }

    /// rumqttc held the row back because its packet id was still in use; it is written (and reported
    /// as `Outgoing::Publish` with this id) once that id's holder is acknowledged. A window is smaller
    /// than rumqttc's in-flight limit, so this needs a broker that acknowledges out of order.
    fn collided(&mut self, pkid: u16) {
        if let Some(row) = self.unsent.pop_front() {
            self.held = Some((pkid, row));
        }
    }

    fn acknowledged(&mut self, pkid: u16) {
        if let Some((id, _)) = self.awaiting.remove(&pkid) {
            self.done.push(id);
        }
    }

    /// The window's rows not yet delivered: their outbox ids and topics.
    fn in_flight(&self) -> Vec<(i64, String)> {
        let row = |(id, publish): &(i64, rumqttc::Publish)| (*id, publish.topic.clone());
        self.unsent
            .iter()
            .chain(self.awaiting.values())
            .chain(self.held.iter().map(|(_, row)| row))
            .map(row)
            .collect()
    }

    fn window_done(&self) -> bool {
        self.active
            && !self.stalled
            && self.unsent.is_empty()
            && self.awaiting.is_empty()
            && self.held.is_none()
    }

    /// Whether a publish rumqttc returned is one of the window's rows (which stay in the outbox); see
    /// [`rumqttc_ext::same_publish`] for how it is recognised.
    fn owns(&self, publish: &rumqttc::Publish) -> bool {
        let same = |row: &rumqttc::Publish| rumqttc_ext::same_publish(row, publish);
        self.unsent.iter().any(|(_, row)| same(row))
            || self.awaiting.values().any(|(_, row)| same(row))
            || self.held.as_ref().is_some_and(|(_, (_, row))| same(row))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(replay: &mut Replay, id: i64, level: QoS, payload: &'static [u8]) -> rumqttc::Publish {
        let publish = rumqttc::Publish::from_bytes("t", level, Bytes::from_static(payload));
        replay.unsent.push_back((id, publish.clone()));
        replay.active = true;
        publish
    }

    #[test]
    fn rows_leave_the_window_when_acknowledged_or_written_at_qos_0() {
        let mut replay = Replay::default();
        row(&mut replay, 1, QoS::AtLeastOnce, b"a");
        row(&mut replay, 2, QoS::AtMostOnce, b"b");
        row(&mut replay, 3, QoS::ExactlyOnce, b"c");
        replay.written(7);
        replay.written(0);
        replay.written(8);
        assert_eq!(replay.done, [2]);
        assert!(!replay.window_done());
        replay.acknowledged(8);
        replay.acknowledged(99); // not ours: the status publish
        replay.acknowledged(7);
        assert_eq!(replay.done, [2, 3, 1]);
        assert!(replay.window_done());
    }

    #[test]
    fn a_row_held_back_by_a_collision_is_paired_when_it_is_written() {
        let mut replay = Replay::default();
        row(&mut replay, 1, QoS::AtLeastOnce, b"a");
        row(&mut replay, 2, QoS::AtLeastOnce, b"b");
        row(&mut replay, 3, QoS::AtLeastOnce, b"c");
        replay.written(5); // row 1 holds id 5
        replay.collided(5); // row 2 must wait for it
        replay.acknowledged(5); // row 1 acknowledged; rumqttc now writes row 2 as 5
        replay.written(5);
        replay.written(6); // row 3
        assert!(!replay.window_done());
        replay.acknowledged(6);
        replay.acknowledged(5);
        assert_eq!(replay.done, [1, 3, 2]);
        assert!(replay.window_done());
    }

    #[test]
    fn a_row_returned_by_rumqttc_is_recognised_by_its_payload_and_others_are_not() {
        let mut replay = Replay::default();
        let ours = row(&mut replay, 1, QoS::AtLeastOnce, b"same");
        // Equal content, another allocation: a live publish that must be spilled, not dropped.
        let live = rumqttc::Publish::new("t", QoS::AtLeastOnce, b"same".to_vec());
        assert!(replay.owns(&ours.clone()));
        assert!(!replay.owns(&live));
        replay.written(3);
        assert!(
            replay.owns(&ours),
            "still ours while awaiting its acknowledgement"
        );
    }
}
