//! The loaded rules and how an event runs them: [`RuleSet::handle`] and the timed side in `timed.rs`
//! are the whole of rule evaluation, with no threads or channels, so `run`, `check` and tests (on
//! virtual time) share them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rhai::{AST, Dynamic, Engine, EvalAltResult, Position, Scope};
use tracing::{error, warn};

use super::api::{self, RuleMessage};
use super::diagnostic::Diagnostic;
use super::engine::{self, Deadline, Limits};
use super::host::{Host, Services, Trigger, TriggerKind};
use crate::event::Persisted;
use crate::event::{Event, Message, Output, RuleRun};
use crate::mqtt::topic;
use crate::scheduler::{Clock, Due, Location};

/// Topics whose matching triggers [`RuleSet::routes`] remembers at most: a home has a few hundred;
/// past this the memory is cleared and rebuilt, so each entry (about 100 bytes) stays bounded.
const ROUTE_CACHE_TOPICS: usize = 4_096;

/// One loaded rule file.
pub struct Rule {
    /// The file name without `.rhai`: the rule's name in logs and the database.
    pub name: Arc<str>,
    pub path: PathBuf,
    pub(super) ast: AST,
    pub(super) triggers: Vec<Trigger>,
    /// Each trigger's [`Rule::trigger_key`], kept for those looked up per message (`on_held`,
    /// `on_silent`).
    pub(super) keys: Vec<Arc<str>>,
    /// The text it was compiled from, to tell a real change from a repeated file event.
    source: String,
}

impl Rule {
    /// The triggers the file registered.
    pub fn triggers(&self) -> impl Iterator<Item = &TriggerKind> {
        self.triggers.iter().map(|t| &t.kind)
    }

    /// The text the rule was compiled from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The identity of trigger `index` across restarts: its kind and schedule, numbered among equal ones.
    pub(super) fn trigger_key(&self, index: usize) -> String {
        let describe = |t: &Trigger| match &t.kind {
            TriggerKind::Timed { recurrence, .. } => recurrence.describe(),
            // The condition's closure is named after a hash of its text: an edited condition is a new
            // trigger, whose holds start afresh.
            TriggerKind::Held {
                filter,
                condition,
                duration,
            } => format!("on_held {filter} {duration}ms {}", condition.fn_name()),
            TriggerKind::Silent { filter, duration } => format!("on_silent {filter} {duration}ms"),
            other => other.name().to_string(),
        };
        let own = describe(&self.triggers[index]);
        let ordinal = self.triggers[..index]
            .iter()
            .filter(|t| describe(t) == own)
            .count();
        format!("{own}#{ordinal}")
    }
}

/// The `*.rhai` files of `dir`, sorted by name so load order (and `on_start` order) is predictable.
pub fn rule_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "rhai") && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// How a trigger is being run, for its trace.
pub(super) struct RunKind<'a> {
    pub name: &'static str,
    pub position: Position,
    pub topic: Option<&'a Arc<str>>,
    pub late: bool,
}

/// Every loaded rule, with the engine that runs them and the scheduler's state.
pub struct RuleSet {
    pub(super) engine: Engine,
    pub(crate) host: Arc<Host>,
    pub(super) deadline: Arc<Deadline>,
    pub(super) timeout: Duration,
    pub(super) rules: Vec<Rule>,
    pub(crate) clock: Clock,
    /// The text of each rule file that failed to load last time, so a repeated event for the same broken
    /// text is not compiled and logged again.
    pub(super) last_failed: HashMap<String, String>,
    /// Where the engine's own topics live (relay state and commands).
    pub(crate) base_topic: String,
    /// The previous message of each topic an `on_change` trigger watches.
    previous: foldhash::HashMap<Arc<str>, Message>,
    /// Timers and catch-up state from the last run, consumed at start.
    pub(crate) persisted: Persisted,
    /// The topics each `on_held` and `on_silent` trigger watches, with their state.
    pub(super) watches: super::held::Watches,
    /// Debounced and throttled triggers' state per topic, see [`super::paced`].
    pub(super) paced: super::paced::PacedTopics,
    /// See [`super::pace`].
    pub(super) loop_guard: super::pace::LoopGuard,
    pub(super) paces: foldhash::HashMap<Arc<str>, super::pace::Pace>,
    /// The matching message triggers of each topic seen, see [`RuleSet::routes`].
    routes: foldhash::HashMap<String, Arc<[(usize, usize)]>>,
}

impl RuleSet {
    /// An empty set. `persisted` is what the last run left in the database.
    pub fn new(
        limits: Limits,
        services: Option<Services>,
        mut persisted: Persisted,
        clock: Clock,
        location: Location,
    ) -> Self {
        let kv = std::mem::take(&mut persisted.kv)
            .into_iter()
            .filter_map(|(key, json)| {
                let value: serde_json::Value = serde_json::from_str(&json).ok()?;
                Some((key, rhai::serde::to_dynamic(value).ok()?))
            })
            .collect();
        let host = Arc::new(Host::new(services, kv, clock.clone(), location));
        let (mut engine, deadline) = engine::build(limits);
        api::register(&mut engine, &host, &deadline);
        RuleSet {
            engine,
            host,
            deadline,
            timeout: limits.timeout,
            rules: Vec::new(),
            clock,
            previous: Default::default(),
            base_topic: "homewright".into(),
            last_failed: HashMap::new(),
            persisted,
            watches: Default::default(),
            paced: Default::default(),
            loop_guard: Default::default(),
            paces: Default::default(),
            routes: Default::default(),
        }
    }

    /// The engine's rule set, as `config` sets it up, on the wall clock: `persisted` is what the last
    /// run left in the database, `relays` each relay's start state.
    pub fn for_engine(
        config: &crate::config::Config,
        services: Services,
        persisted: Persisted,
        relays: HashMap<String, crate::relays::model::RelayState>,
    ) -> Self {
        let mut rules = RuleSet::new(
            Limits::of(config),
            Some(services),
            persisted,
            Clock::Wall,
            config.location.clone(),
        );
        rules.set_relays(config.gpio.clone(), &config.mqtt.base_topic, relays);
        rules.set_outbound(std::sync::Arc::new(config.outbound.clone()));
        rules.set_loop_guard(config.rules.loop_guard);
        rules
    }

    /// Sets the notification channels and the hosts `http()` may call.
    pub fn set_outbound(&self, outbound: Arc<crate::config::OutboundConfig>) {
        self.host.set_outbound(outbound);
    }

    /// Loads every rule file of `dir`; returns the problems of those that could not be loaded.
    pub fn load_dir(&mut self, dir: &Path) -> std::io::Result<Vec<Diagnostic>> {
        let mut problems = Vec::new();
        for path in rule_files(dir)? {
            if let Err(problem) = self.load_file(&path) {
                problems.push(problem);
            }
        }
        Ok(problems)
    }

    /// Compiles `path`, runs its top level to collect its triggers, and schedules its timed ones.
    pub fn load_file(&mut self, path: &Path) -> Result<(), Diagnostic> {
        let name: Arc<str> = path
            .file_stem()
            .map(|s| s.to_string_lossy())
            .unwrap_or_default()
            .into();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Diagnostic::at(path, Position::NONE, format!("cannot read: {e}")))?;
        let mut ast = self
            .engine
            .compile(&text)
            .map_err(|e| Diagnostic::at(path, e.1, e.0.to_string()))?;
        ast.set_source(path.to_string_lossy().as_ref());
        self.host.begin_load(Arc::clone(&name));
        self.deadline.arm(Instant::now(), self.timeout);
        let result = self.engine.run_ast_with_scope(&mut Scope::new(), &ast);
        self.deadline.disarm();
        let triggers = self.host.end_load();
        result.map_err(|e| Diagnostic::from_eval(path, *e))?;
        self.rules.retain(|r| r.name != name);
        self.host.unschedule_rule(&name);
        let mut rule = Rule {
            name,
            path: path.to_path_buf(),
            source: text,
            ast,
            triggers,
            keys: Vec::new(),
        };
        rule.keys = (0..rule.triggers.len())
            .map(|index| rule.trigger_key(index).into())
            .collect();
        self.schedule_rule(&rule, self.clock.now());
        self.remember_watched(&rule);
        self.rules.push(rule);
        self.forget_routes();
        Ok(())
    }

    /// Queues the first firing of each timed trigger of `rule` after `now`.
    fn schedule_rule(&self, rule: &Rule, now: i64) {
        for (index, trigger) in rule.triggers.iter().enumerate() {
            if let TriggerKind::Timed { recurrence, .. } = &trigger.kind {
                match recurrence.next_after(now, self.host.location()) {
                    Some(at) => {
                        super::timed::note_polar_gap(&rule.name, recurrence, now, at);
                        let due = Due::Trigger {
                            rule: Arc::clone(&rule.name),
                            index,
                        };
                        self.host.schedule(at, due);
                    }
                    None => {
                        warn!(rule = %rule.name, "{} never fires here (no sunrise or sunset within a year)", recurrence.describe())
                    }
                }
            }
        }
    }

    /// Loads the stored latest message of every topic `rule`'s `on_change` triggers watch, so a change is
    /// told from the value before a restart.
    fn remember_watched(&mut self, rule: &Rule) {
        let filters: Vec<&str> = rule
            .triggers
            .iter()
            .filter_map(|t| match &t.kind {
                TriggerKind::Change { filter, .. } => Some(filter.as_str()),
                _ => None,
            })
            .collect();
        let Some(services) = self.host.services().filter(|_| !filters.is_empty()) else {
            return;
        };
        match services.runtime.block_on(services.reader.latest_all()) {
            Ok(messages) => {
                for message in messages {
                    if filters.iter().any(|f| topic::matches(&message.topic, f)) {
                        self.previous.entry(message.topic.clone()).or_insert(message);
                    }
                }
            }
            Err(e) => warn!(rule = %rule.name, "cannot read the latest values for on_change: {e}"),
        }
    }

    /// The value persisted under `key` by `store_set`, as JSON.
    pub fn stored(&self, key: &str) -> Option<serde_json::Value> {
        let value = self.host.store_get(key);
        if value.is_unit() {
            None
        } else {
            serde_json::to_value(&value).ok()
        }
    }

    /// The loaded rules, in load order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Runs every trigger `event` fires, in rule order, and returns what they asked for followed by
    /// the trace of each run.
    pub fn handle(&mut self, event: &Event) -> Vec<Output> {
        let mut outputs = Vec::new();
        match event {
            Event::Start => self.start(&mut outputs),
            Event::RuleFile(path) => self.reload(path, &mut outputs),
            Event::Message(message) => self.message(message, &mut outputs),
            Event::RelayCommand { name, op } => {
                self.switch_commanded(name, *op, crate::relays::model::Cause::Web, &mut outputs)
            }
        }
        outputs
    }

    fn message(&mut self, message: &Message, outputs: &mut Vec<Output>) {
        self.host.observe(message);
        self.relay_command(message, outputs);
        let routes = self.routes(&message.topic);
        if routes.is_empty() {
            return;
        }
        let previous = self.previous.get(&*message.topic);
        let changed = previous.is_none_or(|p| p.payload != message.payload);
        let old = previous.map_or(Dynamic::UNIT, |p| Dynamic::from(RuleMessage::new(p.clone())));
        // One message for every trigger it fires: its JSON is then parsed at most once.
        let shared = RuleMessage::new(message.clone());
        let mut watched = false;
        let fed = self.host.published_by_rules(&message.topic);
        let mut admitted = (usize::MAX, true);
        let mut paced = Vec::new();
        for &(r, t) in routes.iter() {
            if admitted.0 != r {
                admitted = (r, self.admit(r, &message.topic, fed, outputs));
            }
            if !admitted.1 {
                continue;
            }
            let rule = &self.rules[r];
            let trigger = &rule.triggers[t];
            let run = RunKind {
                name: trigger.kind.name(),
                position: trigger.position,
                topic: Some(&message.topic),
                late: false,
            };
            match &trigger.kind {
                TriggerKind::Message {
                    pacing: Some(pacing), ..
                } => paced.push((r, t, *pacing, vec![Dynamic::from(shared.clone())])),
                TriggerKind::Message { .. } => {
                    let arg = Dynamic::from(shared.clone());
                    self.run(rule, run, |e, ast| trigger.callback.call(e, ast, (arg,)), outputs);
                }
                TriggerKind::Change {
                    pacing: Some(pacing), ..
                } => {
                    watched = true;
                    if changed {
                        let args = vec![old.clone(), Dynamic::from(shared.clone())];
                        paced.push((r, t, *pacing, args));
                    }
                }
                TriggerKind::Change { .. } => {
                    watched = true;
                    if changed {
                        let new = Dynamic::from(shared.clone());
                        let old = old.clone();
                        self.run(
                            rule,
                            run,
                            |e, ast| trigger.callback.call(e, ast, (old, new)),
                            outputs,
                        );
                    }
                }
                TriggerKind::Held { .. } | TriggerKind::Silent { .. } => {
                    self.watch_message(r, t, message, outputs)
                }
                _ => {}
            }
        }
        if watched {
            self.previous.insert(message.topic.clone(), message.clone());
        }
        for (r, t, pacing, args) in paced {
            self.pace(r, t, pacing, &message.topic, args, outputs);
        }
    }

    /// The message triggers (rule index, trigger index, in rule order) whose filter matches `topic`.
    /// Matching every filter of every rule costs microseconds per message with 50 rules, while a home
    /// sends the same few hundred topics over and over: so the answer is remembered per topic.
    fn routes(&mut self, topic: &str) -> Arc<[(usize, usize)]> {
        if let Some(found) = self.routes.get(topic) {
            return Arc::clone(found);
        }
        let found: Arc<[(usize, usize)]> = self
            .rules
            .iter()
            .enumerate()
            .flat_map(|(r, rule)| {
                rule.triggers.iter().enumerate().filter_map(move |(t, trigger)| {
                    let filter = match &trigger.kind {
                        TriggerKind::Message { filter, .. }
                        | TriggerKind::Change { filter, .. }
                        | TriggerKind::Held { filter, .. }
                        | TriggerKind::Silent { filter, .. } => filter,
                        _ => return None,
                    };
                    topic::matches(topic, filter).then_some((r, t))
                })
            })
            .collect();
        if self.routes.len() >= ROUTE_CACHE_TOPICS {
            // Topics that carry ids (one per request, per session) would otherwise grow it forever.
            self.routes.clear();
        }
        self.routes.insert(topic.to_string(), Arc::clone(&found));
        found
    }

    /// The loaded rules changed: every remembered route may be wrong.
    pub(super) fn forget_routes(&mut self) {
        self.routes.clear();
    }

    /// Runs one trigger's closure (`call`) and appends what it asked for and its trace to `outputs`.
    pub(super) fn run(
        &self,
        rule: &Rule,
        kind: RunKind<'_>,
        call: impl FnOnce(&Engine, &AST) -> Result<Dynamic, Box<EvalAltResult>>,
        outputs: &mut Vec<Output>,
    ) {
        let ts = self.clock.now();
        let started = Instant::now();
        self.host.begin_run(Arc::clone(&rule.name));
        self.deadline.arm(started, self.timeout);
        let result = call(&self.engine, &rule.ast);
        self.deadline.disarm();
        let (produced, actions) = self.host.end_run();
        let error = result.err().map(|e| {
            let mut diagnostic = Diagnostic::from_eval(&rule.path, *e);
            if diagnostic.line.is_none() {
                diagnostic.line = kind.position.line();
                diagnostic.column = kind.position.position();
                diagnostic.message = format!(
                    "{} (in the {} trigger registered here)",
                    diagnostic.message, kind.name
                );
            }
            error!("{diagnostic}{}", diagnostic.snippet());
            diagnostic.to_string()
        });
        outputs.extend(produced);
        outputs.push(Output::Run(RuleRun {
            ts,
            rule: Arc::clone(&rule.name),
            trigger: kind.name,
            topic: kind.topic.cloned(),
            duration_us: i64::try_from(started.elapsed().as_micros()).unwrap_or(i64::MAX),
            error,
            actions: actions as i64,
            late: kind.late,
        }));
    }

    /// The rule named `name`.
    pub(super) fn rule(&self, name: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| &*r.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn limits() -> Limits {
        Limits {
            max_operations: 100_000,
            timeout: Duration::from_secs(1),
            max_string_size: 1 << 20,
        }
    }

    fn runs_for(rules: &mut RuleSet, topic: &str) -> Vec<String> {
        let event = Event::Message(Message {
            ts: 1,
            topic: topic.into(),
            payload: Bytes::from_static(b"{\"t\": 1}"),
            qos: 0,
            retain: false,
            dup: false,
        });
        rules
            .handle(&event)
            .into_iter()
            .filter_map(|o| match o {
                Output::Run(run) => Some(run.rule.to_string()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn remembered_routes_follow_rules_that_are_added_changed_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let mut rules = RuleSet::new(
            limits(),
            None,
            Persisted::default(),
            Clock::Wall,
            Location::default(),
        );
        let a = dir.path().join("a.rhai");
        std::fs::write(&a, "on_message(\"home/+/t\", |msg| msg.json);\n").unwrap();
        rules.load_file(&a).unwrap();
        assert_eq!(runs_for(&mut rules, "home/x/t"), ["a"]);
        assert!(runs_for(&mut rules, "garden/t").is_empty());

        let b = dir.path().join("b.rhai");
        std::fs::write(&b, "on_message(\"garden/#\", |msg| msg.json);\n").unwrap();
        rules.load_file(&b).unwrap();
        assert_eq!(
            runs_for(&mut rules, "garden/t"),
            ["b"],
            "a topic seen before the rule came"
        );

        std::fs::write(&a, "on_message(\"garden/t\", |msg| msg.json);\n").unwrap();
        rules.load_file(&a).unwrap();
        assert!(
            runs_for(&mut rules, "home/x/t").is_empty(),
            "the old filter is gone"
        );
        assert_eq!(
            runs_for(&mut rules, "garden/t"),
            ["b", "a"],
            "rule order: load order"
        );

        std::fs::remove_file(&b).unwrap();
        rules.handle(&Event::RuleFile(b));
        assert_eq!(runs_for(&mut rules, "garden/t"), ["a"]);
    }
}
