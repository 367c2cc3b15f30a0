//! What crosses the stages of the pipeline: a received [`Message`], the [`Event`]s rules react to, and
//! the [`Output`] of a rule run (what it asked for, and the record of the run itself).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::relays::model::RelayState;

/// One MQTT message as the engine received it. The payload is kept as bytes: it is stored byte for byte
/// and only decoded when a rule looks at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// When the engine received it, in unix milliseconds.
    pub ts: i64,
    pub topic: std::sync::Arc<str>,
    pub payload: Bytes,
    pub qos: u8,
    pub retain: bool,
    /// The broker marked it as a redelivery (MQTT DUP): after a crash between commit and
    /// acknowledgement, the duplicate row carries this mark.
    pub dup: bool,
}

/// What a rule reacts to.
#[derive(Debug, Clone)]
pub enum Event {
    /// The engine has started: `on_start` triggers run, once.
    Start,
    /// A message arrived: matching `on_message` triggers run.
    Message(Message),
    /// A rule file was created, changed or removed: reload it.
    RuleFile(std::path::PathBuf),
    /// Switch a relay as a command on its set topic would, for the house's page (cause `web`).
    RelayCommand {
        name: String,
        op: crate::relays::model::Op,
    },
}

/// Something a rule asked the outside world to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Publish {
        topic: String,
        payload: Bytes,
        qos: u8,
        retain: bool,
    },
    /// Drive a relay on or off; `cause` is what asked for it (`rule`, `set_topic`, `max_on`, ...).
    Relay {
        name: String,
        on: bool,
        cause: &'static str,
    },
    /// Send a notification on a configured channel (delivered by the outbound stage).
    Notify { channel: String, note: Notification },
    /// Make an HTTP call to an allowed host (delivered by the outbound stage).
    Http(HttpCall),
}

/// A notification as a rule asked for it; each channel renders it its own way.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Notification {
    pub text: String,
    pub title: Option<String>,
    /// 1 (min) to 5 (max), as ntfy counts.
    pub priority: Option<u8>,
    pub tags: Vec<String>,
    /// A URL to open when the notification is tapped.
    pub click: Option<String>,
}

/// An HTTP call as a rule asked for it. Its `Debug` shows only the method and the URL without secrets.
#[derive(Clone, PartialEq, Eq)]
pub struct HttpCall {
    /// Upper case.
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl std::fmt::Debug for HttpCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HttpCall({}, {} bytes)", self.target(), self.body.len())
    }
}

/// How a notification or HTTP call ended: its row in `actions`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    pub rule: Arc<str>,
    /// When the rule asked, unix ms.
    pub ts: i64,
    /// `notify` or `http`.
    pub kind: &'static str,
    /// The channel, or the method and the URL without secrets.
    pub target: String,
    /// The notification's text or the call's body.
    pub value: Bytes,
    /// `sent`, `failed` or `dropped`.
    pub outcome: &'static str,
    /// The last HTTP status the service answered.
    pub status: Option<u16>,
}

/// An action on its way to the actions stage: the only thing that stage's channel carries.
#[derive(Debug, Clone)]
pub struct ActionRequest {
    /// The rule that asked for it (empty for the engine's own).
    pub rule: Arc<str>,
    pub ts: i64,
    pub action: Action,
}

/// What a rule run produced: an action goes to the actions stage (as an [`ActionRequest`]) and, once
/// performed, to the recorder; the rest goes to the recorder straight away.
#[derive(Debug, Clone)]
pub enum Output {
    /// Perform this action, on behalf of `rule`.
    Action { rule: Arc<str>, ts: i64, action: Action },
    /// Persist a `store_set` value (JSON text).
    StoreSet { key: String, value: String },
    /// One trigger ran: the trace row for `rule_runs`.
    Run(RuleRun),
    /// A one-shot timer was set: persist it so it survives a restart.
    TimerSet(TimerRecord),
    /// A one-shot timer fired, was cancelled or cannot be restored: forget it.
    TimerDone { id: i64 },
    /// A recurring trigger that asked for catch-up ran: remember when, to tell a missed run at start.
    TriggerRan {
        rule: Arc<str>,
        trigger: String,
        ts: i64,
    },
    /// A relay's state changed (or its pending on_for off did): persist it.
    RelayState { name: String, state: RelayState },
    /// A notification or HTTP call ended (sent, refused or dropped): its `actions` row.
    Delivered(Delivered),
    /// An `on_held` or `on_silent` trigger's state for one topic changed: persist it.
    TopicWatch(TopicWatch),
    /// An `on_held` hold ended, or its trigger is gone: forget it.
    TopicWatchDone {
        rule: String,
        trigger: String,
        topic: String,
    },
}

/// The persisted state of one topic under an `on_held` or `on_silent` trigger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicWatch {
    pub rule: String,
    /// The trigger's identity in its rule (kind, filter, duration; for `on_held` also the condition).
    pub trigger: String,
    pub topic: String,
    /// `on_held`: when the condition became true; `on_silent`: when the topic last spoke (unix ms).
    pub since: i64,
    /// Whether the trigger already ran for this hold or silence.
    pub fired: bool,
}

/// A pending one-shot timer as persisted: enough to call its closure again after a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimerRecord {
    pub id: i64,
    pub rule: String,
    /// The name Rhai gave the closure (stable for the same closure source).
    pub callback: String,
    /// The closure's captured values as JSON, or `None` when they cannot be stored.
    pub captured: Option<String>,
    /// When it falls due, unix ms.
    pub due: i64,
    /// `LINE:COL` of the `after(..)` call, for messages.
    pub position: String,
}

/// The trace of one run of one trigger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleRun {
    pub ts: i64,
    pub rule: Arc<str>,
    /// `on_message`, `on_start`, ...
    pub trigger: &'static str,
    /// The message topic that triggered the run, if any.
    pub topic: Option<Arc<str>>,
    pub duration_us: i64,
    /// `rules/NAME.rhai:LINE:COL: message` when the run failed.
    pub error: Option<String>,
    /// How many actions the run asked for.
    pub actions: i64,
    /// The run happens later than planned: the engine was down when it fell due.
    pub late: bool,
}

/// What the rules persisted, handed back to them at start (read by [`crate::store::Store::load_persisted`]).
#[derive(Debug, Default)]
pub struct Persisted {
    /// `store_set` values (JSON text).
    pub kv: HashMap<String, String>,
    /// Pending one-shot timers, in due order.
    pub timers: Vec<TimerRecord>,
    /// Last run per (rule, trigger) of catch-up triggers.
    pub trigger_runs: HashMap<(String, String), i64>,
    /// Each relay's last state.
    pub relays: HashMap<String, RelayState>,
    /// `on_held` holds in progress or fired, and `on_silent` silences that fired.
    pub topic_watches: Vec<TopicWatch>,
}

/// The current wall-clock time in unix milliseconds.
pub fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
