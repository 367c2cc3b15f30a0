//! Every place the engine reaches past rumqttc's API into its internals, gathered so an upgrade of
//! rumqttc has one file to check. At-least-once delivery depends on each of them; each function says
//! what it assumes of rumqttc, and `Cargo.toml` pins the exact version these assumptions were read
//! from.
//!
//! Why reach in at all: rumqttc keeps unacknowledged publishes only in memory and drops them when the
//! broker answers a reconnect without our session, so the publisher moves them to its outbox itself
//! ([`take_pending`], [`forget_unpolled_events`], [`requeue`], [`same_publish`]); and the subscriber
//! acknowledges a committed batch with one write instead of one event per acknowledgement
//! ([`write_direct`]).

use std::collections::VecDeque;
use std::time::Duration;

use rumqttc::{EventLoop, Packet, Publish, Request};

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
