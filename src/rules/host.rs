//! The state behind the functions rules call: which rule is running, what it asked for so far, the
//! triggers a file registers while it loads, `store_set` values, the latest message per topic, and the
//! read-only history for `sql()` and `last()`.
//!
//! Rules run on one thread, so the mutex is never contended; it exists because Rhai's `sync` feature
//! requires registered functions to be `Send + Sync`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use rhai::{Dynamic, FnPtr};

use crate::event::{Action, Message, Output, now_millis};
use crate::store::{HistoryReader, QueryResult, SqlValue};

/// Most actions one run may ask for: a `loop { publish(..) }` is stopped long before it floods the
/// broker.
pub const MAX_ACTIONS_PER_RUN: usize = 1_000;

/// What a trigger reacts to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TriggerKind {
    /// `on_message(filter, |msg| ..)`
    Message { filter: String },
    /// `on_start(|| ..)`
    Start,
}

impl TriggerKind {
    /// The name used in `rule_runs.trigger`.
    pub fn name(&self) -> &'static str {
        match self {
            TriggerKind::Message { .. } => "on_message",
            TriggerKind::Start => "on_start",
        }
    }
}

/// A trigger a rule file registered, with the closure to call.
#[derive(Debug, Clone)]
pub struct Trigger {
    pub kind: TriggerKind,
    pub callback: FnPtr,
    /// Where the file registered it: the position reported for a run stopped by a limit, since Rhai
    /// reports those at the call site, which for a trigger is the engine, not the script.
    pub position: rhai::Position,
}

/// Access to the history from the rule thread, which is not a tokio thread and so may block on it.
#[derive(Clone)]
pub struct Services {
    pub reader: HistoryReader,
    pub runtime: tokio::runtime::Handle,
}

#[derive(Debug, Default)]
enum Phase {
    #[default]
    Idle,
    Loading(Arc<str>),
    Running(Arc<str>),
}

#[derive(Default)]
struct State {
    phase: Phase,
    triggers: Vec<Trigger>,
    outputs: Vec<Output>,
    actions: usize,
    kv: HashMap<String, Dynamic>,
    recent: HashMap<String, Message>,
}

/// Shared by every function registered on the engine.
pub struct Host {
    state: Mutex<State>,
    services: Option<Services>,
}

impl Host {
    /// A host; without `services` (as in `check`), `sql()` and history lookups are unavailable.
    pub fn new(services: Option<Services>, kv: HashMap<String, Dynamic>) -> Self {
        Host {
            state: Mutex::new(State {
                kv,
                ..State::default()
            }),
            services,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic in one rule run must not take every later run down with a poisoned lock.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A file's top level is about to run: triggers it registers belong to `rule`.
    pub fn begin_load(&self, rule: Arc<str>) {
        let mut state = self.state();
        state.phase = Phase::Loading(rule);
        state.triggers.clear();
    }

    /// The top level finished: the triggers it registered.
    pub fn end_load(&self) -> Vec<Trigger> {
        let mut state = self.state();
        state.phase = Phase::Idle;
        std::mem::take(&mut state.triggers)
    }

    /// A trigger of `rule` is about to run.
    pub fn begin_run(&self, rule: Arc<str>) {
        let mut state = self.state();
        state.phase = Phase::Running(rule);
        state.outputs.clear();
        state.actions = 0;
    }

    /// The run finished: what it asked for, in order, and how many actions that was.
    pub fn end_run(&self) -> (Vec<Output>, usize) {
        let mut state = self.state();
        state.phase = Phase::Idle;
        let actions = std::mem::take(&mut state.actions);
        (std::mem::take(&mut state.outputs), actions)
    }

    /// The rule whose code is executing, for log lines.
    pub fn current_rule(&self) -> Option<Arc<str>> {
        match &self.state().phase {
            Phase::Idle => None,
            Phase::Loading(rule) | Phase::Running(rule) => Some(Arc::clone(rule)),
        }
    }

    /// Registers a trigger; only a file's top level may.
    pub fn register(&self, trigger: Trigger) -> Result<(), String> {
        let mut state = self.state();
        match state.phase {
            Phase::Loading(_) => {
                state.triggers.push(trigger);
                Ok(())
            }
            _ => Err(format!(
                "{} can only be called at the top level of a rule file",
                trigger.kind.name()
            )),
        }
    }

    /// Queues an action of the running rule.
    pub fn act(&self, action: Action) -> Result<(), String> {
        let mut state = self.state();
        let Phase::Running(rule) = &state.phase else {
            return Err(
                "actions can only be taken inside a trigger (use on_start for things to do at start)".into(),
            );
        };
        if state.actions >= MAX_ACTIONS_PER_RUN {
            return Err(format!(
                "too many actions in one run (the limit is {MAX_ACTIONS_PER_RUN})"
            ));
        }
        let rule = Arc::clone(rule);
        state.actions += 1;
        state.outputs.push(Output::Action {
            rule,
            ts: now_millis(),
            action,
        });
        Ok(())
    }

    /// `store_get(key)`.
    pub fn store_get(&self, key: &str) -> Dynamic {
        self.state().kv.get(key).cloned().unwrap_or(Dynamic::UNIT)
    }

    /// `store_set(key, value)`: visible at once to every rule, persisted by the actions stage.
    pub fn store_set(&self, key: &str, value: Dynamic) -> Result<(), String> {
        let json = serde_json::to_string(&value)
            .map_err(|e| format!("store_set(\"{key}\", ..): cannot store this value: {e}"))?;
        let mut state = self.state();
        if !matches!(state.phase, Phase::Running(_)) {
            return Err("store_set can only be called inside a trigger".into());
        }
        state.kv.insert(key.to_string(), value);
        state.outputs.push(Output::StoreSet {
            key: key.to_string(),
            value: json,
        });
        Ok(())
    }

    /// Remembers the newest message of its topic for `last()`: a rule sees it before ingest has
    /// committed it.
    pub fn observe(&self, message: &Message) {
        self.state().recent.insert(message.topic.clone(), message.clone());
    }

    /// `last(topic)`: the newest message seen since start, else the newest stored one.
    pub fn last(&self, topic: &str) -> Result<Option<Message>, String> {
        if let Some(message) = self.state().recent.get(topic) {
            return Ok(Some(message.clone()));
        }
        let Some(services) = &self.services else {
            return Ok(None);
        };
        services
            .runtime
            .block_on(services.reader.latest(topic))
            .map_err(|e| e.to_string())
    }

    /// `sql(query, params)` on the read-only history, stopped at the run's deadline.
    pub fn sql(
        &self,
        query: &str,
        params: &[SqlValue],
        deadline: Option<Instant>,
    ) -> Result<QueryResult, String> {
        let Some(services) = &self.services else {
            return Err("sql() has no database here (it works in `run`)".into());
        };
        services
            .runtime
            .block_on(services.reader.query(query, params, deadline))
            .map_err(|e| format!("sql: {e}"))
    }
}
