//! The actions stage: performs what rules asked for (publishes, relay switches) as soon as it arrives,
//! on a channel that carries only actions, and hands each performed action to the
//! [`recorder`](crate::recorder), which writes them in batches (the rule thread hands it the record of
//! every run and of every `store_set` itself). Keeping the database write out of this loop means a
//! commit never delays a publish. When the rules are done it puts each relay in its `on_stop` state,
//! then closes the publisher.

use bytes::Bytes;
use tokio::sync::mpsc;
use tracing::{error, info};

use crate::event::{Action, ActionRequest, Output, now_millis};
use crate::metrics::METRICS;
use crate::mqtt::publisher::PublishHandle;
use crate::relays::driver::RelayDriver;
use crate::relays::model::{Cause, RelayState};

/// The actions stage. Ends when the rule thread's output closes, after closing the publisher.
pub struct Actions {
    pub input: mpsc::Receiver<ActionRequest>,
    pub publisher: PublishHandle,
    pub recorder: mpsc::Sender<Vec<Output>>,
    pub relays: RelayDriver,
}

impl Actions {
    /// The stage performing what arrives on `input` and recording it to `recorder`.
    pub fn new(
        input: mpsc::Receiver<ActionRequest>,
        publisher: PublishHandle,
        recorder: mpsc::Sender<Vec<Output>>,
        relays: RelayDriver,
    ) -> Actions {
        Actions {
            input,
            publisher,
            recorder,
            relays,
        }
    }

    /// Performs and records until the rules are done, then stops the relays, publishes `offline` and
    /// disconnects.
    pub async fn run(mut self) {
        while let Some(ActionRequest { rule, ts, action }) = self.input.recv().await {
            match self.perform(&action).await {
                Ok(()) => METRICS.actions.add(1),
                Err(e) => {
                    METRICS.action_errors.add(1);
                    error!(rule = %rule, "{e}");
                    continue;
                }
            }
            self.record(Output::Action { rule, ts, action }).await;
        }
        self.stop_relays().await;
        self.publisher.close().await;
    }

    async fn record(&self, performed: Output) {
        if self.recorder.send(vec![performed]).await.is_err() {
            error!("the recorder is gone; actions are no longer recorded");
        }
    }

    async fn perform(&mut self, action: &Action) -> Result<(), String> {
        match action {
            Action::Publish {
                topic,
                payload,
                qos,
                retain,
            } => self
                .publisher
                .publish(topic, payload.clone(), *qos, *retain)
                .await
                .map_err(|e| e.to_string()),
            Action::Relay { name, on, .. } => {
                self.relays.drive(name, *on)?;
                let state = Bytes::from_static(if *on { b"ON" } else { b"OFF" });
                let topic = self.relays.state_topic(name);
                self.publisher
                    .publish(&topic, state, 1, true)
                    .await
                    .map_err(|e| e.to_string())
            }
        }
    }

    /// `on_stop: off` relays that are on go off, recorded with cause `shutdown`.
    async fn stop_relays(&mut self) {
        for name in self.relays.to_switch_off_at_stop() {
            let action = Action::Relay {
                name: name.clone(),
                on: false,
                cause: Cause::Shutdown.as_str(),
            };
            match self.perform(&action).await {
                Ok(()) => info!(relay = %name, "switched off at stop (on_stop: off)"),
                Err(e) => error!(relay = %name, "cannot switch off at stop: {e}"),
            }
            let ts = now_millis();
            self.record(Output::Action {
                rule: "".into(),
                ts,
                action,
            })
            .await;
            let state = RelayState {
                on: false,
                since: ts,
                off_due: None,
            };
            self.record(Output::RelayState { name, state }).await;
        }
    }
}
