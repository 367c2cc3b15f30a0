//! The actions stage: performs what rules asked for (publishes, relay switches) as soon as it arrives,
//! and hands a record of it to the [`recorder`], which writes them in batches (the rule thread hands
//! it the record of every run and of every `store_set` itself). Keeping the database write out of this loop means a commit never delays a
//! publish. When the rules are done it puts each relay in its `on_stop` state, then closes the publisher.

pub mod recorder;
pub mod relays;

use bytes::Bytes;
use tokio::sync::mpsc;
use tracing::{error, info};

use self::recorder::Record;
use self::relays::RelayDriver;
use crate::event::{Action, Output, now_millis};
use crate::gpio::model::{Cause, RelayState};
use crate::metrics::METRICS;
use crate::mqtt::publisher::PublishHandle;
use crate::store::audit::ActionRecord;

/// The actions stage. Ends when the rule thread's output closes, after closing the publisher.
pub struct Actions {
    pub input: mpsc::Receiver<Output>,
    pub publisher: PublishHandle,
    pub recorder: mpsc::Sender<Vec<Record>>,
    pub relays: RelayDriver,
}

impl Actions {
    /// Performs and records until the rules are done, then stops the relays, publishes `offline` and
    /// disconnects.
    pub async fn run(mut self) {
        while let Some(output) = self.input.recv().await {
            // Only actions come here (the rule thread records the rest itself).
            if let Output::Action { rule, action, .. } = &output {
                match self.perform(action).await {
                    Ok(()) => METRICS.actions.add(1),
                    Err(e) => {
                        METRICS.action_errors.add(1);
                        error!(rule = %rule, "{e}");
                        continue;
                    }
                }
            }
            self.record(Record::of(output)).await;
        }
        self.stop_relays().await;
        self.publisher.close().await;
    }

    async fn record(&self, record: Record) {
        if self.recorder.send(vec![record]).await.is_err() {
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
            self.record(Record::of(Output::Action {
                rule: "".into(),
                ts,
                action,
            }))
            .await;
            let state = RelayState {
                on: false,
                since: ts,
                off_due: None,
            };
            self.record(Record::of(Output::RelayState { name, state })).await;
        }
    }
}

impl Record {
    /// The audit row for an output (for an action: once it was performed).
    pub fn of(output: Output) -> Record {
        match output {
            Output::Action { rule, ts, action } => Record::Action(record_of(&rule, ts, action)),
            Output::StoreSet { key, value } => Record::Store { key, value },
            Output::Run(run) => Record::Run(run),
            Output::TimerSet(timer) => Record::TimerSet(timer),
            Output::TimerDone { id } => Record::TimerDone(id),
            Output::TriggerRan { rule, trigger, ts } => Record::TriggerRan {
                rule: rule.to_string(),
                trigger,
                ts,
            },
            Output::RelayState { name, state } => Record::RelayState { name, state },
        }
    }
}

fn record_of(rule: &str, ts: i64, action: Action) -> ActionRecord {
    match action {
        Action::Publish { topic, payload, .. } => ActionRecord {
            ts,
            rule: rule.to_string(),
            kind: "publish",
            target: topic,
            value: payload,
            // Rules have names; the engine's own publishes (state, discovery) have none.
            cause: if rule.is_empty() { "engine" } else { "rule" },
        },
        Action::Relay { name, on, cause } => ActionRecord {
            ts,
            rule: rule.to_string(),
            kind: "relay",
            target: name,
            value: Bytes::from_static(if on { b"ON" } else { b"OFF" }),
            cause,
        },
    }
}
