//! The actions stage: performs what rules asked for (publishes, for now) as soon as it arrives, and
//! hands a record of it, of every rule run and of every `store_set` to the [`recorder`], which writes
//! them in batches. Keeping the database write out of this loop means a commit never delays a publish.

pub mod recorder;

use tokio::sync::mpsc;
use tracing::error;

use self::recorder::Record;
use crate::event::{Action, Output};
use crate::metrics::METRICS;
use crate::mqtt::publisher::PublishHandle;
use crate::store::audit::ActionRecord;

/// The actions stage. Ends when the rule thread's output closes, after closing the publisher.
pub struct Actions {
    pub input: mpsc::Receiver<Output>,
    pub publisher: PublishHandle,
    pub recorder: mpsc::Sender<Record>,
}

impl Actions {
    /// Performs and records until the rules are done, then publishes `offline` and disconnects.
    pub async fn run(mut self) {
        while let Some(output) = self.input.recv().await {
            let record = match output {
                Output::Action { rule, ts, action } => match self.perform(&action).await {
                    Ok(()) => {
                        METRICS.actions.add(1);
                        Record::Action(record_of(&rule, ts, action))
                    }
                    Err(e) => {
                        METRICS.action_errors.add(1);
                        error!(rule = %rule, "{e}");
                        continue;
                    }
                },
                Output::StoreSet { key, value } => Record::Store { key, value },
                Output::Run(run) => {
                    METRICS.rule_run(&run);
                    Record::Run(run)
                }
            };
            if self.recorder.send(record).await.is_err() {
                error!("the recorder is gone; actions are no longer recorded");
            }
        }
        self.publisher.close().await;
    }

    async fn perform(&self, action: &Action) -> Result<(), crate::mqtt::publisher::PublishError> {
        match action {
            Action::Publish {
                topic,
                payload,
                qos,
                retain,
            } => {
                self.publisher
                    .publish(topic, payload.clone(), *qos, *retain)
                    .await
            }
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
        },
    }
}
