//! The loaded rules and how an event runs them: [`RuleSet::handle`] and the timed side in `timed.rs`
//! are the whole of rule evaluation, with no threads or channels, so `run`, `check` and tests (on
//! virtual time) share them.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rhai::{AST, Dynamic, Engine, EvalAltResult, Module, Position, Scope, Shared};
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
    /// The path as the compiled script names its source: code from any other file is a module's.
    pub(super) file: Arc<str>,
    /// The rule's functions and closures, each carrying the modules the file imported, so a trigger's
    /// closure finds `x::helper()` when it runs long after the top level did.
    pub(super) ast: AST,
    pub(super) triggers: Vec<Trigger>,
    /// Each trigger's [`Rule::trigger_key`].
    pub(super) keys: Vec<Arc<str>>,
    /// The text it was compiled from, to tell a real change from a repeated file event.
    source: String,
    /// The module files of rules/lib/ it imports, directly or through another module.
    pub(super) modules: Vec<PathBuf>,
    /// Bytes its runs took since its captured variables were last measured (see [`RuleSet::run`]).
    grown: Cell<usize>,
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
        self.keys[index].to_string()
    }
}

/// What tells a trigger from the others of its file, before numbering equal ones.
fn describe(trigger: &Trigger) -> String {
    match &trigger.kind {
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
    }
}

/// Each trigger's identity across restarts (see [`Rule::trigger_key`]), in one pass: numbering each
/// trigger by counting the equal ones before it made a file of 40,000 triggers take half a minute.
fn trigger_keys(triggers: &[Trigger]) -> Vec<Arc<str>> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    triggers
        .iter()
        .map(|trigger| {
            let own = describe(trigger);
            let ordinal = seen.entry(own.clone()).or_insert(0);
            let key = format!("{own}#{ordinal}");
            *ordinal += 1;
            Arc::from(key)
        })
        .collect()
}

/// Memory a rule's runs may take before its captured variables are measured again: measuring walks
/// them, so it is done only once their runs could have grown them by this much.
const MEASURE_KEPT_EVERY: usize = 1 << 20;

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
    /// When each catch-up trigger last ran, by (rule, trigger key): tells a firing a forward clock jump
    /// skipped from one that already ran.
    pub(super) last_runs: HashMap<(String, String), i64>,
    /// The matching message triggers of each topic seen, see [`RuleSet::routes`].
    routes: foldhash::HashMap<String, Arc<[(usize, usize)]>>,
    /// What `import` may load, and what the rule loading imported.
    library: super::library::Library,
    /// The rules directory: its `lib/` holds modules, not rules.
    pub(super) dir: Option<PathBuf>,
    /// The module files each rule file that failed to load tried to import: fixing one retries it.
    pub(super) failed_imports: HashMap<PathBuf, Vec<PathBuf>>,
    /// Rules whose captured variables grew past `rules.max_run_memory`, to be restarted once the
    /// event in progress is handled.
    pub(super) oversized: RefCell<Vec<Arc<str>>>,
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
                let value = rhai::serde::to_dynamic(value).ok()?;
                let held = super::size::held_bytes(&value, limits.max_value_size);
                let bytes = key.len() + json.len().max(held);
                Some((key, (value, bytes)))
            })
            .collect();
        let host = Arc::new(Host::new(services, kv, clock.clone(), location, limits));
        let library = super::library::Library::default();
        let (mut engine, deadline) = engine::build(limits, library.clone());
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
            last_runs: HashMap::new(),
            library,
            dir: None,
            failed_imports: HashMap::new(),
            oversized: Default::default(),
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
            Clock::steady(),
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
        self.dir = Some(dir.to_path_buf());
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
        if self.dir.is_none() {
            self.dir = path.parent().map(Path::to_path_buf);
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| Diagnostic::at(path, Position::NONE, format!("cannot read: {e}")))?;
        let file: Arc<str> = path.to_string_lossy().into();
        let (ast, triggers, modules) = match self.load_in_pieces(path, &name, &file, &text) {
            Some((ast, triggers)) => (ast, triggers, Vec::new()),
            None => self.load_whole(path, &name, &file, &text)?,
        };
        self.rules.retain(|r| r.name != name);
        self.host.unschedule_rule(&name);
        let rule = Rule {
            name,
            path: path.to_path_buf(),
            file,
            source: text,
            ast,
            keys: trigger_keys(&triggers),
            triggers,
            modules,
            grown: Cell::new(0),
        };
        self.schedule_rule(&rule, self.clock.now());
        self.remember_watched(&rule);
        self.rules.push(rule);
        self.forget_routes();
        Ok(())
    }

    /// Compiles `text` and runs its top level: the AST, the triggers it registered and the modules it
    /// imported.
    fn load_whole(
        &mut self,
        path: &Path,
        name: &Arc<str>,
        file: &Arc<str>,
        text: &str,
    ) -> Result<(AST, Vec<Trigger>, Vec<PathBuf>), Diagnostic> {
        let mut ast = self
            .engine
            .compile(text)
            .map_err(|e| Diagnostic::at(path, e.1, e.0.to_string()))?;
        ast.set_source(&**file);
        self.host.begin_load(Arc::clone(name), Arc::clone(file));
        self.library.begin(path);
        self.deadline.arm(Instant::now(), self.timeout);
        // Run as a module would be: what comes back holds the rule's functions, each with the modules
        // the top level imported (a plain run forgets them when it ends).
        let result = Module::eval_ast_as_new(Scope::new(), &ast, &self.engine);
        self.deadline.disarm();
        let triggers = self.host.end_load();
        let modules = self.library.end();
        let module = match result {
            Ok(module) => module,
            Err(e) => {
                self.failed_imports.insert(path.to_path_buf(), modules);
                return Err(Diagnostic::from_eval(path, *e));
            }
        };
        self.failed_imports.remove(path);
        // With imports: the original functions first (private ones too), then the same functions with
        // the imported modules. Without, the script as compiled (a closure then runs without the cost of
        // setting up an environment).
        let ast = if modules.is_empty() {
            ast
        } else {
            ast.clone_functions_only()
                .merge(&AST::new_from_module(Shared::new(module)))
        };
        Ok((ast, triggers, modules))
    }

    /// A large file, compiled and run a piece at a time (see [`super::pieces`]) so loading grows with
    /// its size: each piece sees the variables of those before it, and the AST kept holds every piece's
    /// functions. `None` when the file is small, or when a piece fails: a piece may use what only a
    /// later one defines (a function called at the top level), so a failure is left to the whole file's
    /// load to confirm and report.
    fn load_in_pieces(
        &self,
        path: &Path,
        name: &Arc<str>,
        file: &Arc<str>,
        text: &str,
    ) -> Option<(AST, Vec<Trigger>)> {
        // Pieces run one after another with a plain scope, which forgets imported modules: a file that
        // may import anything loads whole.
        if text.contains("import") {
            return None;
        }
        let pieces = super::pieces::pieces(text);
        if pieces.len() < 2 {
            return None;
        }
        let source = path.to_string_lossy();
        let mut scope = Scope::new();
        let mut functions = AST::empty();
        self.host.begin_load(Arc::clone(name), Arc::clone(file));
        for index in 0..pieces.len() {
            let piece = super::pieces::padded(text, &pieces, index);
            let Ok(mut ast) = self.engine.compile_with_scope(&scope, &piece) else {
                self.host.end_load();
                return None;
            };
            ast.set_source(source.as_ref());
            // Each piece's run has the whole limit: the limits stop a runaway top level, not a long file.
            self.deadline.arm(Instant::now(), self.timeout);
            let result = self.engine.run_ast_with_scope(&mut scope, &ast);
            self.deadline.disarm();
            if result.is_err() {
                self.host.end_load();
                return None;
            }
            ast.clear_statements();
            functions.combine(ast);
        }
        functions.set_source(source.as_ref());
        Some((functions, self.host.end_load()))
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
        self.restart_oversized(&mut outputs);
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
        self.host
            .begin_run(Arc::clone(&rule.name), Arc::clone(&rule.file));
        self.deadline.arm(started, self.timeout);
        let result = call(&self.engine, &rule.ast);
        self.deadline.disarm();
        let used = self.deadline.memory_used();
        let (mut produced, actions) = self.host.end_run();
        if result.is_err() {
            self.host.undo_store_writes(&mut produced);
        }
        let kept = self.measure_kept(rule, used);
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
        let error = match (error, kept) {
            (None, Some(kept)) => {
                let diagnostic = Diagnostic::at(&rule.path, kind.position, kept);
                error!("{diagnostic}");
                Some(diagnostic.to_string())
            }
            (error, _) => error,
        };
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

    /// After a run of `rule` that took `used` bytes: whether its captured variables, which live as long
    /// as the rule, now hold more than `rules.max_run_memory` (a map a rule adds to on every message);
    /// if so the rule is restarted with fresh ones once the event is handled, and the reason is returned.
    fn measure_kept(&self, rule: &Rule, used: isize) -> Option<String> {
        let grown = rule.grown.get().saturating_add(used.max(0).unsigned_abs());
        if grown < MEASURE_KEPT_EVERY {
            rule.grown.set(grown);
            return None;
        }
        rule.grown.set(0);
        let most = self.host.limits().max_run_memory;
        // Each closure alone: those of one file share its variables, which a sum would count again.
        let kept = rule
            .triggers
            .iter()
            .map(|t| super::size::held_bytes_all(t.callback.curry(), most))
            .max()
            .unwrap_or(0);
        if kept <= most {
            return None;
        }
        self.oversized.borrow_mut().push(Arc::clone(&rule.name));
        Some(format!(
            "the rule keeps more than {} in its captured variables (rules.max_run_memory); it restarts with fresh ones",
            super::size::human(most)
        ))
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
            max_string_size: 1 << 20,
            ..Limits::default()
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
