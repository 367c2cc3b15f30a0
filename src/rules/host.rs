//! The state behind the functions rules call: which rule is running, what it asked for so far, the
//! triggers a file registers while it loads, `store_set` values, the latest message per topic, and the
//! read-only history for `sql()` and `last()`.
//!
//! Rules run on one thread, so the mutex is never contended; it exists because Rhai's `sync` feature
//! requires registered functions to be `Send + Sync`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use rhai::{Dynamic, FnPtr, Position};

use super::engine::Limits;
use super::size::{JsonProblem, held_bytes, human, json_within};
use crate::config::OutboundConfig;
use crate::event::{Action, Message, Output};
use crate::relays::model::{Cause, Op as RelayOp, RelayModel};
use crate::scheduler::{Clock, Due, Location, Recurrence, Schedule};
use crate::store::{Bounds, HistoryReader, QueryResult, SqlValue};

/// Topics whose latest message the rule thread remembers for `last()`; beyond this it starts afresh.
pub const RECENT_TOPICS: usize = 10_000;

/// Most actions one run may ask for (each `after` counts as one): a `loop { publish(..) }` is stopped
/// long before it floods the broker.
pub const MAX_ACTIONS_PER_RUN: usize = 1_000;

/// Most `after` timers pending at once, over all rules: a house needs a few dozen; each costs a row in
/// `timers` and an entry in the scheduler's queue, so a rule setting timers on every message is stopped
/// long before those cost the Pi its memory.
pub const MAX_PENDING_TIMERS: usize = 10_000;

/// What one `sql()` call may return: enough for a rule's look at the history (a day of a sensor at a
/// reading a minute is 1,440 rows), small enough that the result and the Rhai array made of it stay
/// within a few times 4 MiB on a Pi. A bigger result fails the run with a hint to add a LIMIT.
pub const SQL_BOUNDS: Bounds = Bounds {
    rows: 10_000,
    bytes: 4 << 20,
};

/// What a trigger reacts to.
#[derive(Debug, Clone)]
pub enum TriggerKind {
    /// `on_message(filter, |msg| ..)`, optionally debounced or throttled.
    Message { filter: String, pacing: Option<Pacing> },
    /// `on_start(|| ..)`
    Start,
    /// `on_change(filter, |old, new| ..)`: a topic's payload differs from its previous one.
    Change { filter: String, pacing: Option<Pacing> },
    /// `on_held(filter, |msg| condition, duration, |msg| ..)`: every message on a topic kept
    /// `condition` true for `duration` ms.
    Held {
        filter: String,
        condition: FnPtr,
        duration: i64,
    },
    /// `on_silent(filter, duration, |topic, last| ..)`: a topic received nothing for `duration` ms.
    Silent { filter: String, duration: i64 },
    /// `every`, `cron`, `at_sunrise`, `at_sunset`.
    Timed {
        name: &'static str,
        recurrence: Recurrence,
        catch_up: bool,
    },
}

impl TriggerKind {
    /// The name used in `rule_runs.trigger`.
    pub fn name(&self) -> &'static str {
        match self {
            TriggerKind::Message { .. } => "on_message",
            TriggerKind::Start => "on_start",
            TriggerKind::Change { .. } => "on_change",
            TriggerKind::Held { .. } => "on_held",
            TriggerKind::Silent { .. } => "on_silent",
            TriggerKind::Timed { name, .. } => name,
        }
    }
}

/// `#{ debounce: "2s" }` or `#{ throttle: "1m" }` before the closure of `on_message` and `on_change`, in
/// ms: per topic, run once the topic has been quiet that long, or at most once per period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pacing {
    Debounce(i64),
    Throttle(i64),
}

/// The closure of a timer.
#[derive(Debug, Clone)]
pub enum Callback {
    /// Set in this run of the engine.
    Pointer(FnPtr),
    /// Restored after a restart: the closure's function by name, with its captured values (Rhai makes
    /// no pointer to an anonymous function from a name, so it is called as a function).
    Restored { name: String, captured: Vec<Dynamic> },
}

impl Callback {
    /// The closure's function name in the rule's compiled script.
    pub fn name(&self) -> &str {
        match self {
            Callback::Pointer(pointer) => pointer.fn_name(),
            Callback::Restored { name, .. } => name,
        }
    }

    /// Calls the closure with no arguments.
    pub fn call(&self, engine: &rhai::Engine, ast: &rhai::AST) -> Result<Dynamic, Box<rhai::EvalAltResult>> {
        match self {
            Callback::Pointer(pointer) => pointer.call::<Dynamic>(engine, ast, ()),
            Callback::Restored { name, captured } => {
                // A pointer made from the function itself, so the call carries the modules the rule
                // imported (a call by name would not).
                let lib: &rhai::Module = ast.as_ref();
                let Some(function) = lib.get_script_fn(name, captured.len()) else {
                    return Err(Box::new(rhai::EvalAltResult::ErrorFunctionNotFound(
                        name.clone(),
                        Position::NONE,
                    )));
                };
                let mut pointer = FnPtr::from(function.clone());
                pointer.set_curry(captured.iter().cloned());
                pointer.call::<Dynamic>(engine, ast, ())
            }
        }
    }
}

/// A pending `after(..)` timer.
#[derive(Debug, Clone)]
pub struct OneShot {
    pub rule: Arc<str>,
    pub callback: Callback,
    pub due: i64,
    pub position: Position,
    /// What its captured variables weigh (map keys included), counted toward `rules.max_store_size`.
    pub bytes: usize,
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

/// A `store_set` value with the bytes it counts toward `rules.max_store_size` (key and JSON).
pub type StoredValue = (Dynamic, usize);

#[derive(Default)]
struct State {
    phase: Phase,
    triggers: Vec<Trigger>,
    outputs: Vec<Output>,
    actions: usize,
    /// `after` timers set by the running rule: they count toward [`MAX_ACTIONS_PER_RUN`] but are not
    /// actions in its trace (no row in `actions`).
    timers_set: usize,
    kv: HashMap<String, StoredValue>,
    /// The bytes of every value in `kv`.
    kv_bytes: usize,
    /// What the running rule's `store_set` calls replaced, oldest first, to put back if it fails.
    kv_undo: Vec<(String, Option<StoredValue>)>,
    /// The bytes of every pending timer's captured variables.
    timer_bytes: usize,
    recent: foldhash::HashMap<std::sync::Arc<str>, Message>,
    schedule: Schedule,
    timers: HashMap<i64, OneShot>,
    next_timer_id: i64,
    relays: RelayModel,
    /// The channels `notify()` may use and the hosts `http()` may call.
    outbound: Arc<OutboundConfig>,
    /// Topics rules published to, see [`Host::published_by_rules`].
    published: foldhash::HashSet<Arc<str>>,
    /// The file of the rule loading or running, as its compiled script names it: code from any other
    /// file (a module in rules/lib/) may not register triggers or timers for it.
    file: Option<Arc<str>>,
}

impl State {
    fn remove_timer(&mut self, id: i64) -> Option<OneShot> {
        let timer = self.timers.remove(&id)?;
        self.timer_bytes = self.timer_bytes.saturating_sub(timer.bytes);
        Some(timer)
    }
}

/// Remembers that a rule published to `topic`, within [`RECENT_TOPICS`] (topics that carry ids would
/// otherwise grow it forever; forgetting only delays the loop guard).
fn note_published(published: &mut foldhash::HashSet<Arc<str>>, topic: &str) {
    if published.contains(topic) {
        return;
    }
    if published.len() >= RECENT_TOPICS {
        published.clear();
    }
    published.insert(Arc::from(topic));
}

/// Refuses `what` (a trigger or a timer) when the calling code is not the rule's own: a module's
/// closures live in the module, where the rule's runs cannot call them. Code of the rule runs with its
/// own file as source, or none inside a trigger's closure.
fn from_rule(state: &State, source: Option<&str>, what: &str) -> Result<(), String> {
    match (source, &state.file) {
        (Some(source), Some(file)) if source != &**file => Err(format!(
            "{what} cannot be called in a module: a module in rules/lib/ only defines functions and \
             constants for the rules that import it; call {what} in the rule itself"
        )),
        _ => Ok(()),
    }
}

/// Shared by every function registered on the engine.
pub struct Host {
    state: Mutex<State>,
    services: Option<Services>,
    clock: Clock,
    location: Location,
    limits: Limits,
}

impl Host {
    /// A host; without `services` (as in `check`), `sql()` and history lookups are unavailable. `kv` is
    /// what `store_set` persisted, with each value's bytes.
    pub fn new(
        services: Option<Services>,
        kv: HashMap<String, StoredValue>,
        clock: Clock,
        location: Location,
        limits: Limits,
    ) -> Self {
        let state = State {
            kv_bytes: kv.values().map(|(_, bytes)| bytes).sum(),
            kv,
            next_timer_id: 1,
            ..State::default()
        };
        Host {
            state: Mutex::new(state),
            services,
            clock,
            location,
            limits,
        }
    }

    /// The limits rules run within.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The time rules run at.
    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    /// The configured location and time zone.
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// The read-only history, where there is one.
    pub fn services(&self) -> Option<&Services> {
        self.services.as_ref()
    }

    /// Queues a recurring trigger's next firing.
    pub fn schedule(&self, at: i64, due: Due) {
        self.state().schedule.insert(at, due);
    }

    /// Forgets the queued recurring triggers of `rule`.
    pub fn unschedule_rule(&self, rule: &str) {
        self.state().schedule.remove_rule(rule);
    }

    /// The earliest deadline in the queue.
    pub fn next_due(&self) -> Option<i64> {
        self.state().schedule.next()
    }

    /// The next entry due at `now`, if any.
    pub fn pop_due(&self, now: i64) -> Option<(i64, Due)> {
        self.state().schedule.pop_due(now)
    }

    /// Sets a one-shot timer of the running rule `delay` ms from now, whose captured variables weigh
    /// `bytes`; returns its id and the timer. It counts toward the run's limit of actions.
    pub fn add_timer(
        &self,
        source: Option<&str>,
        callback: FnPtr,
        delay: i64,
        position: Position,
        bytes: usize,
    ) -> Result<(i64, OneShot), String> {
        let due = self.now().saturating_add(delay);
        let mut state = self.state();
        from_rule(&state, source, "after")?;
        let Phase::Running(rule) = &state.phase else {
            return Err(
                "after can only be called inside a trigger (use on_start for a timer at start)".into(),
            );
        };
        let rule = Arc::clone(rule);
        if state.actions + state.timers_set >= MAX_ACTIONS_PER_RUN {
            return Err(format!(
                "too many actions in one run (the limit is {MAX_ACTIONS_PER_RUN}; each after() counts)"
            ));
        }
        if state.timers.len() >= MAX_PENDING_TIMERS {
            return Err(format!(
                "after: {MAX_PENDING_TIMERS} timers are already pending, the most there may be"
            ));
        }
        let total = state.timer_bytes.saturating_add(bytes);
        if total > self.limits.max_store_size {
            return Err(format!(
                "after: the pending timers' captured variables would take {}, more than {} (rules.max_store_size)",
                human(total),
                human(self.limits.max_store_size)
            ));
        }
        state.timers_set += 1;
        state.timer_bytes = total;
        let timer = OneShot {
            rule,
            callback: Callback::Pointer(callback),
            due,
            position,
            bytes,
        };
        let id = state.next_timer_id;
        state.next_timer_id += 1;
        state.timers.insert(id, timer.clone());
        state.schedule.insert(due, Due::Timer { id });
        Ok((id, timer))
    }

    /// Re-arms a persisted timer under its old id.
    pub fn restore_timer(&self, id: i64, timer: OneShot) {
        let mut state = self.state();
        state.next_timer_id = state.next_timer_id.max(id + 1);
        state.schedule.insert(timer.due, Due::Timer { id });
        state.timer_bytes = state.timer_bytes.saturating_add(timer.bytes);
        state.timers.insert(id, timer);
    }

    /// Makes sure new timers get ids above every persisted one (also those not restored).
    pub fn reserve_timer_ids(&self, above: i64) {
        let mut state = self.state();
        state.next_timer_id = state.next_timer_id.max(above + 1);
    }

    /// Takes out the pending timers of `rule` whose closure name `drop` selects; returns their ids.
    pub fn take_timers_of_where(&self, rule: &str, drop: impl Fn(&str) -> bool) -> Vec<i64> {
        let mut state = self.state();
        let ids: Vec<i64> = state
            .timers
            .iter()
            .filter(|(_, t)| &*t.rule == rule && drop(t.callback.name()))
            .map(|(id, _)| *id)
            .collect();
        for id in &ids {
            state.remove_timer(*id);
        }
        ids
    }

    /// Takes out every pending timer of `rule` (it was removed); returns their ids.
    pub fn take_timers_of(&self, rule: &str) -> Vec<i64> {
        let mut state = self.state();
        let ids: Vec<i64> = state
            .timers
            .iter()
            .filter(|(_, t)| &*t.rule == rule)
            .map(|(id, _)| *id)
            .collect();
        for id in &ids {
            state.remove_timer(*id);
        }
        ids
    }

    /// Takes a timer out (it fires now, or it is cancelled); `None` when it is already gone.
    pub fn take_timer(&self, id: i64) -> Option<OneShot> {
        self.state().remove_timer(id)
    }

    /// Sets the notification channels and the hosts `http()` may call (at start, before any rule runs).
    pub fn set_outbound(&self, outbound: Arc<OutboundConfig>) {
        self.state().outbound = outbound;
    }

    /// The notification channels and the hosts `http()` may call.
    pub fn outbound(&self) -> Arc<OutboundConfig> {
        Arc::clone(&self.state().outbound)
    }

    /// Moves every queued deadline to the time `retime` gives it, see [`Schedule::retime`].
    pub fn retime_schedule(&self, retime: impl FnMut(i64, &Due) -> Option<i64>) {
        self.state().schedule.retime(retime);
    }

    /// Moves the due time of every pending `after` timer by `jump` ms (their queue entries move with
    /// [`Host::retime_schedule`]); returns them, moved.
    pub fn shift_timers(&self, jump: i64) -> Vec<(i64, OneShot)> {
        let mut state = self.state();
        state
            .timers
            .iter_mut()
            .map(|(id, timer)| {
                timer.due = timer.due.saturating_add(jump);
                (*id, timer.clone())
            })
            .collect()
    }

    /// Moves every relay's times by `jump` ms; returns the states of the relays that are on.
    pub fn shift_relays(&self, jump: i64) -> Vec<(String, crate::relays::model::RelayState)> {
        self.state().relays.shift(jump)
    }

    /// Sets up the relays (at start, before any rule runs).
    pub fn set_relays(&self, model: RelayModel) {
        self.state().relays = model;
    }

    /// A copy of the relays' model (for reading configuration and states).
    pub fn relays(&self) -> RelayModel {
        self.state().relays.clone()
    }

    /// Whether relay `name` is on; `None` when there is no such relay.
    pub fn relay_is_on(&self, name: &str) -> Option<bool> {
        self.state().relays.state(name).map(|s| s.on)
    }

    /// Applies `op` to relay `name`: queues the switch (if it changes anything), the state to persist and
    /// the next deadline. Returns whether the relay is on afterwards; `Err` when refused.
    pub fn switch_relay(&self, name: &str, op: RelayOp, cause: Cause) -> Result<bool, String> {
        let now = self.now();
        let mut state = self.state();
        let rule: Arc<str> = match &state.phase {
            Phase::Running(rule) if cause == Cause::Rule => Arc::clone(rule),
            _ => Arc::from(""),
        };
        let applied = state.relays.apply(name, op, now)?;
        if applied.changed {
            if cause == Cause::Rule {
                state.actions += 1;
            }
            let action = Action::Relay {
                name: name.to_string(),
                on: applied.state.on,
                cause: cause.as_str(),
            };
            state.outputs.push(Output::Action {
                rule,
                ts: now,
                action,
            });
        }
        state.outputs.push(Output::RelayState {
            name: name.to_string(),
            state: applied.state,
        });
        if let Some(at) = applied.deadline {
            state.schedule.insert(
                at,
                Due::Relay {
                    name: Arc::from(name),
                },
            );
        }
        Ok(applied.state.on)
    }

    /// Takes the outputs queued outside a rule run (relay commands, deadlines).
    pub fn drain_outputs(&self) -> Vec<Output> {
        std::mem::take(&mut self.state().outputs)
    }

    /// Queues an output of the running rule that is not an action (timer bookkeeping).
    pub fn note(&self, output: Output) {
        self.state().outputs.push(output);
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic in one rule run must not take every later run down with a poisoned lock.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A file's top level is about to run: triggers it registers belong to `rule`, from `file`.
    pub fn begin_load(&self, rule: Arc<str>, file: Arc<str>) {
        let mut state = self.state();
        state.phase = Phase::Loading(rule);
        state.file = Some(file);
        state.triggers.clear();
    }

    /// The top level finished: the triggers it registered.
    pub fn end_load(&self) -> Vec<Trigger> {
        let mut state = self.state();
        state.phase = Phase::Idle;
        std::mem::take(&mut state.triggers)
    }

    /// A trigger of `rule`, from `file`, is about to run.
    pub fn begin_run(&self, rule: Arc<str>, file: Arc<str>) {
        let mut state = self.state();
        state.phase = Phase::Running(rule);
        state.file = Some(file);
        state.outputs.clear();
        state.actions = 0;
        state.timers_set = 0;
        state.kv_undo.clear();
    }

    /// The run that just ended failed: the values its `store_set` calls replaced are put back, so a
    /// run stopped by a limit leaves nothing of what it stored (what it stored is not in the outputs
    /// either, see [`Output::StoreSet`]).
    pub fn undo_store_writes(&self, produced: &mut Vec<Output>) {
        let mut state = self.state();
        let state = &mut *state;
        while let Some((key, old)) = state.kv_undo.pop() {
            let replaced = match old {
                Some(old) => {
                    state.kv_bytes += old.1;
                    state.kv.insert(key, old)
                }
                None => state.kv.remove(&key),
            };
            state.kv_bytes -= replaced.map_or(0, |(_, bytes)| bytes);
        }
        produced.retain(|output| !matches!(output, Output::StoreSet { .. }));
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

    /// Registers a trigger; only a rule file's top level may. `source` is the file of the calling
    /// code (Rhai's source of the call).
    pub fn register(&self, source: Option<&str>, trigger: Trigger) -> Result<(), String> {
        let mut state = self.state();
        from_rule(&state, source, trigger.kind.name())?;
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
        if state.actions + state.timers_set >= MAX_ACTIONS_PER_RUN {
            return Err(format!(
                "too many actions in one run (the limit is {MAX_ACTIONS_PER_RUN}; each after() counts)"
            ));
        }
        let rule = Arc::clone(rule);
        state.actions += 1;
        if let Action::Publish { topic, .. } = &action {
            note_published(&mut state.published, topic);
        }
        state.outputs.push(Output::Action {
            rule,
            ts: self.clock.now(),
            action,
        });
        Ok(())
    }

    /// Whether rules have published to `topic` since the engine started (for the loop guard).
    pub fn published_by_rules(&self, topic: &str) -> bool {
        let state = self.state();
        !state.published.is_empty() && state.published.contains(topic)
    }

    /// `store_get(key)`.
    pub fn store_get(&self, key: &str) -> Dynamic {
        self.state()
            .kv
            .get(key)
            .map_or(Dynamic::UNIT, |(value, _)| value.clone())
    }

    /// `store_set(key, value)`: visible at once to every rule, persisted by the recorder if the run
    /// succeeds. The key and the value (the larger of its JSON and what it holds in memory) together
    /// count toward `rules.max_value_size`, and all values toward `rules.max_store_size`.
    pub fn store_set(&self, key: &str, value: Dynamic) -> Result<(), String> {
        let most = self.limits.max_value_size;
        let call = || {
            let shown: String = key.chars().take(40).collect();
            let more = if shown.len() < key.len() { "..." } else { "" };
            format!("store_set(\"{shown}{more}\", ..)")
        };
        // In memory a value can take several times its JSON (`[1,1,1]`): the larger of the two counts.
        let held = held_bytes(&value, most);
        let json = match json_within(&value, most.saturating_sub(key.len())) {
            Ok(_) if key.len() + held > most => Err(JsonProblem::TooLarge),
            other => other,
        };
        let json = match json {
            Ok(json) => json,
            Err(JsonProblem::TooLarge) => {
                return Err(format!(
                    "{}: the key and the value take more than {} (rules.max_value_size)",
                    call(),
                    human(most)
                ));
            }
            Err(JsonProblem::Invalid(e)) => return Err(format!("{}: cannot store this value: {e}", call())),
        };
        let bytes = key.len() + json.len().max(held);
        let mut state = self.state();
        if !matches!(state.phase, Phase::Running(_)) {
            return Err("store_set can only be called inside a trigger".into());
        }
        let replaced = state.kv.get(key).map_or(0, |(_, bytes)| *bytes);
        let total = state.kv_bytes - replaced + bytes;
        if total > self.limits.max_store_size {
            return Err(format!(
                "{}: the store would hold {}, more than {} (rules.max_store_size); store_set(key, ()) frees a key",
                call(),
                human(total),
                human(self.limits.max_store_size)
            ));
        }
        state.kv_bytes = total;
        let old = state.kv.insert(key.to_string(), (value, bytes));
        state.kv_undo.push((key.to_string(), old));
        state.outputs.push(Output::StoreSet {
            key: key.to_string(),
            value: json,
        });
        Ok(())
    }

    /// Remembers the newest message of its topic for `last()`: a rule sees it before ingest has
    /// committed it.
    pub fn observe(&self, message: &Message) {
        let mut state = self.state();
        // Updated in place when the topic is known (the usual case): no new key, no topic copy.
        match state.recent.get_mut(&*message.topic) {
            Some(recent) => {
                recent.ts = message.ts;
                recent.payload = message.payload.clone();
                recent.qos = message.qos;
                recent.retain = message.retain;
                recent.dup = message.dup;
            }
            None => {
                // Bounded: topics that carry ids would otherwise grow this forever. Forgetting is safe:
                // `last()` then reads the stored history, behind only by ingest's uncommitted batch.
                if state.recent.len() >= RECENT_TOPICS {
                    state.recent.clear();
                }
                state.recent.insert(message.topic.clone(), message.clone());
            }
        }
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
            .block_on(
                services
                    .reader
                    .query_bounded(query, params, deadline, Some(SQL_BOUNDS)),
            )
            .map_err(|e| format!("sql: {e}"))
    }
}
