//! Every place the engine reaches past rumqttc's API into its internals, gathered so an upgrade of
//! rumqttc has one file to check. At-least-once delivery depends on each of them; each function says
//! what it assumes of rumqttc, and `Cargo.toml` pins the exact version these assumptions were read
//! from.
//!
//! Why reach in at all: rumqttc keeps unacknowledged publishes only in memory and drops them when the
//! broker answers a reconnect without our session, so the publisher moves them to its outbox itself
//! ([`take_pending`], [`forget_unpolled_events`], [`requeue`], [`same_publish`]); and the subscriber
//! acknowledges a committed batch with one write instead of one event per acknowledgement
//! ([`write_direct`]) and completes any QoS 2 release the broker sends ([`accept_any_pubrel`]).

use std::collections::VecDeque;
use std::time::Duration;

use rumqttc::{EventLoop, Incoming, Packet, Publish, QoS, Request};

/// Forgets the events a failed connection left unpolled.
///
/// Assumes: `EventLoop::state.events` is the queue `poll` returns from before it touches the network,
/// and after a failure it still holds that connection's events (`Outgoing::Publish` of packets written
/// before the failure, acknowledgements read but not yet returned), which `poll` would return after the
/// next ConnAck, with packet ids of the old connection.
pub fn forget_unpolled_events(eventloop: &mut EventLoop) {
    eventloop.state.events.clear();
}

/// Takes every request rumqttc holds to send again after the next ConnAck.
///
/// Assumes: after a connection fails, `EventLoop::pending` holds what was sent and not acknowledged
/// and what was not yet sent, as `Request`s (publishes with their payload `Bytes` as given to rumqttc,
/// not copied; PUBRELs of QoS 2 publishes), and rumqttc sends `pending` in order, before anything from
/// its request channel, once connected again.
pub fn take_pending(eventloop: &mut EventLoop) -> VecDeque<Request> {
    std::mem::take(&mut eventloop.pending)
}

/// Puts requests back at the end of what rumqttc sends first after the next ConnAck (see
/// [`take_pending`] for what that assumes).
pub fn requeue(eventloop: &mut EventLoop, requests: impl IntoIterator<Item = Request>) {
    eventloop.pending.extend(requests);
}

/// Whether a publish rumqttc handed back (from [`take_pending`]) is `ours`, a publish we gave it.
///
/// Assumes: rumqttc keeps the payload `Bytes` it was given (a clone shares the allocation), so the
/// payload's address identifies the publish. An empty payload has no allocation to compare, and is
/// matched by topic, QoS and retain alone.
pub fn same_publish(ours: &Publish, returned: &Publish) -> bool {
    ours.topic == returned.topic
        && ours.qos == returned.qos
        && ours.retain == returned.retain
        && ours.payload.len() == returned.payload.len()
        && (ours.payload.is_empty() || ours.payload.as_ptr() == returned.payload.as_ptr())
}

/// Makes the next connection answer a PUBREL for any packet id with PUBCOMP, as MQTT 3.1.1
/// (section 4.3.3) requires of a receiver, instead of failing the connection. Call it after every
/// ConnAck of a connection that receives QoS 2 messages.
///
/// Why: rumqttc forgets on every reconnect which QoS 2 messages it received, and treats the PUBREL
/// the broker sends again for a message we had answered with PUBREC as unsolicited: it drops the
/// connection, the broker sends the PUBREL again on the next one, and ingest never moves again.
/// Answering PUBCOMP is right for any id: we send PUBREC only once a message is committed, so a
/// PUBREL always concerns a message already stored, whichever connection or run received it.
///
/// Assumes: `MqttState::handle_incoming_packet` with a QoS 2 `Publish` and manual acknowledgements
/// (which the ingest connection uses) only records the packet id in the set a PUBREL is checked
/// against (`incoming_pub`, cleared by `MqttState::clean` on every reconnect), answers nothing, and
/// queues the publish as an event, which is discarded here; `poll` returns the ConnAck before it reads
/// anything more from the connection, so this runs before the broker's first PUBREL is read.
pub fn accept_any_pubrel(eventloop: &mut EventLoop) {
    debug_assert!(
        eventloop.state.manual_acks,
        "would send a PUBREC for every packet id"
    );
    if !eventloop.state.manual_acks {
        return;
    }
    let queued = std::mem::take(&mut eventloop.state.events);
    for pkid in 1..=u16::MAX {
        let mut marker = Publish::new("", QoS::ExactlyOnce, Vec::new());
        marker.pkid = pkid;
        let _ = eventloop.state.handle_incoming_packet(Incoming::Publish(marker));
        // Emptied as it goes, so the markers never take more than a few kilobytes.
        if eventloop.state.events.len() >= 256 {
            eventloop.state.events.clear();
        }
    }
    eventloop.state.events = queued;
}

/// Why [`write_direct`] wrote nothing, or not everything.
#[derive(Debug, thiserror::Error)]
pub enum DirectWriteError {
    #[error("not connected")]
    NotConnected,
    #[error("{0}")]
    Failed(rumqttc::StateError),
    #[error("timed out after {0:?}")]
    TimedOut(Duration),
}

/// Writes `packets` straight to the connection and flushes once, bypassing rumqttc's state.
///
/// Assumes: `EventLoop::network` is the live connection (`None` while there is none) and its
/// `write`/`flush` only buffer and send; for a PUBACK or PUBREC rumqttc's state keeps no account (a
/// QoS 2 message's id is recorded when the message comes in, which is what its PUBREL is checked
/// against), so skipping the state loses nothing. Bounded by rumqttc's own connection timeout, so a
/// stuck connection cannot hold the caller for good.
pub async fn write_direct(
    eventloop: &mut EventLoop,
    packets: impl Iterator<Item = Packet>,
) -> Result<(), DirectWriteError> {
    let EventLoop {
        network,
        network_options,
        ..
    } = eventloop;
    let Some(network) = network.as_mut() else {
        return Err(DirectWriteError::NotConnected);
    };
    let timeout = Duration::from_secs(network_options.connection_timeout());
    let write = async {
        for packet in packets {
            network.write(packet).await?;
        }
        network.flush().await
    };
    match tokio::time::timeout(timeout, write).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(DirectWriteError::Failed(e)),
        Err(_) => Err(DirectWriteError::TimedOut(timeout)),
    }
}

/// The tests' Mosquitto, shared with the integration tests.
#[cfg(test)]
#[path = "../../tests/support/mosquitto.rs"]
#[allow(dead_code)]
mod mosquitto;

/// A port nothing listens on, for the tests' Mosquitto.
#[cfg(test)]
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// One test per assumption, each against a real Mosquitto: an upgrade of rumqttc that changes one of
/// them fails here, not in a home's lost publishes.
#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, PubAck, PubRec, QoS};

    use super::mosquitto::Mosquitto;
    use super::*;

    fn client(port: u16, id: &str, manual_acks: bool) -> (AsyncClient, EventLoop) {
        let mut options = MqttOptions::new(id, "127.0.0.1", port);
        options.set_clean_session(false).set_manual_acks(manual_acks);
        AsyncClient::new(options, 10)
    }

    async fn next(eventloop: &mut EventLoop) -> Event {
        tokio::time::timeout(Duration::from_secs(5), eventloop.poll())
            .await
            .expect("an event within 5 s")
            .expect("a working connection")
    }

    async fn until(eventloop: &mut EventLoop, wanted: impl Fn(&Event) -> bool) -> Event {
        loop {
            let event = next(eventloop).await;
            if wanted(&event) {
                return event;
            }
        }
    }

    fn is_connack(event: &Event) -> bool {
        matches!(event, Event::Incoming(Packet::ConnAck(_)))
    }

    /// Why [`forget_unpolled_events`] exists: events left in `state.events` when a connection fails
    /// are returned after the next ConnAck (with the old connection's packet ids).
    #[tokio::test]
    async fn unpolled_events_outlive_a_reconnect_unless_forgotten() {
        let Some(broker) = Mosquitto::start().await else {
            return;
        };
        let (_client, mut eventloop) = client(broker.port, "ext-events", false);
        until(&mut eventloop, is_connack).await;
        let stale = Event::Incoming(Packet::PingResp);

        eventloop.state.events.push_back(stale.clone());
        eventloop.clean(); // what a failed poll does
        assert!(is_connack(&next(&mut eventloop).await));
        assert_eq!(next(&mut eventloop).await, stale, "the stale event comes back");

        eventloop.state.events.push_back(stale.clone());
        eventloop.clean();
        forget_unpolled_events(&mut eventloop);
        assert!(is_connack(&next(&mut eventloop).await));
        let after = tokio::time::timeout(Duration::from_millis(500), eventloop.poll()).await;
        assert!(
            !matches!(&after, Ok(Ok(event)) if *event == stale),
            "forgotten, yet returned: {after:?}"
        );
    }

    /// [`take_pending`] and [`same_publish`]: a publish written but not acknowledged when the
    /// connection fails is in `pending`, with the very payload it was given. [`requeue`]: `pending` is
    /// written before the request channel after a reconnect.
    #[tokio::test]
    async fn pending_keeps_our_unacknowledged_publish_and_goes_first_after_a_reconnect() {
        let Some(broker) = Mosquitto::start().await else {
            return;
        };
        let (client, mut eventloop) = client(broker.port, "ext-pending", false);
        until(&mut eventloop, is_connack).await;
        let payload = Bytes::from(vec![b'x'; 64]);
        let ours = Publish::from_bytes("t/a", QoS::AtLeastOnce, payload.clone());
        client
            .publish_bytes("t/a", QoS::AtLeastOnce, false, payload.clone())
            .await
            .expect("queued");
        until(&mut eventloop, |e| {
            matches!(e, Event::Outgoing(Outgoing::Publish(_)))
        })
        .await;
        eventloop.clean(); // the connection fails before the PUBACK is read

        let pending = take_pending(&mut eventloop);
        assert!(eventloop.pending.is_empty());
        let returned: Vec<&Publish> = pending
            .iter()
            .filter_map(|r| match r {
                Request::Publish(p) => Some(p),
                _ => None,
            })
            .collect();
        assert_eq!(returned.len(), 1, "{pending:?}");
        assert!(same_publish(&ours, returned[0]), "the same payload allocation");
        let copy = Publish::from_bytes("t/a", QoS::AtLeastOnce, Bytes::copy_from_slice(&payload));
        assert!(
            !same_publish(&copy, returned[0]),
            "an equal copy is another publish"
        );

        assert!(is_connack(&next(&mut eventloop).await));
        requeue(&mut eventloop, pending);
        client
            .publish("t/b", QoS::AtLeastOnce, false, "b")
            .await
            .expect("queued");
        until(&mut eventloop, |e| {
            matches!(e, Event::Outgoing(Outgoing::Publish(_)))
        })
        .await;
        assert!(
            eventloop.pending.is_empty(),
            "the requeued publish is written before the channel's"
        );
    }

    /// [`write_direct`]: acknowledgements written past rumqttc's state reach the broker, and rumqttc
    /// still completes QoS 2 (the PUBREL is checked against the id recorded at the publish).
    #[tokio::test]
    async fn acknowledgements_written_directly_reach_the_broker_and_complete_qos_2() {
        let Some(broker) = Mosquitto::start().await else {
            return;
        };
        let (_idle, mut unconnected) = client(broker.port, "ext-unconnected", true);
        assert!(matches!(
            write_direct(&mut unconnected, std::iter::empty()).await,
            Err(DirectWriteError::NotConnected)
        ));

        let (subscriber, mut inbox) = client(broker.port, "ext-acks", true);
        until(&mut inbox, is_connack).await;
        subscriber
            .subscribe("t/#", QoS::ExactlyOnce)
            .await
            .expect("queued");
        until(&mut inbox, |e| matches!(e, Event::Incoming(Packet::SubAck(_)))).await;
        let (publisher, mut outbox) = client(broker.port, "ext-sender", false);
        let sending = tokio::spawn(async move { while outbox.poll().await.is_ok() {} });
        publisher
            .publish("t/1", QoS::AtLeastOnce, false, "one")
            .await
            .expect("queued");
        publisher
            .publish("t/2", QoS::ExactlyOnce, false, "two")
            .await
            .expect("queued");

        for _ in 0..2 {
            let Event::Incoming(Packet::Publish(publish)) =
                until(&mut inbox, |e| matches!(e, Event::Incoming(Packet::Publish(_)))).await
            else {
                unreachable!()
            };
            let ack = match publish.qos {
                QoS::ExactlyOnce => Packet::PubRec(PubRec::new(publish.pkid)),
                _ => Packet::PubAck(PubAck::new(publish.pkid)),
            };
            write_direct(&mut inbox, std::iter::once(ack))
                .await
                .expect("written");
            if publish.qos == QoS::ExactlyOnce {
                let pkid = publish.pkid;
                until(
                    &mut inbox,
                    |e| matches!(e, Event::Incoming(Packet::PubRel(r)) if r.pkid == pkid),
                )
                .await;
                assert_eq!(
                    next(&mut inbox).await,
                    Event::Outgoing(Outgoing::PubComp(pkid)),
                    "rumqttc answers the PUBREL of a message acknowledged past its state"
                );
            }
        }
        sending.abort();

        // The broker took both acknowledgements: a new connection of the same session gets nothing again.
        drop(inbox);
        let (_again, mut inbox) = client(broker.port, "ext-acks", true);
        until(&mut inbox, is_connack).await;
        let redelivered = tokio::time::timeout(Duration::from_millis(700), async {
            until(&mut inbox, |e| matches!(e, Event::Incoming(Packet::Publish(_)))).await
        })
        .await;
        assert!(redelivered.is_err(), "redelivered: {redelivered:?}");
    }

    /// [`accept_any_pubrel`]: every packet id is completed, and events already queued are kept.
    #[test]
    fn a_pubrel_for_an_unknown_id_is_completed_and_queued_events_are_kept() {
        let mut options = MqttOptions::new("t", "127.0.0.1", 1883);
        options.set_manual_acks(true);
        let mut eventloop = EventLoop::new(options, 10);
        let unrelated = rumqttc::Event::Incoming(Packet::PingResp);
        eventloop.state.events.push_back(unrelated.clone());
        // What rumqttc 0.25.1 does on its own: the connection fails.
        let mut plain = eventloop.state.clone();
        assert!(
            plain
                .handle_incoming_packet(Incoming::PubRel(rumqttc::PubRel::new(7409)))
                .is_err()
        );

        accept_any_pubrel(&mut eventloop);
        assert_eq!(eventloop.state.events, [unrelated]);
        for pkid in [1, 7409, u16::MAX] {
            let answer = eventloop
                .state
                .handle_incoming_packet(Incoming::PubRel(rumqttc::PubRel::new(pkid)));
            assert_eq!(
                answer.ok().flatten(),
                Some(Packet::PubComp(rumqttc::PubComp::new(pkid)))
            );
        }
    }
}
