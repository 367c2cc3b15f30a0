//! The loaded rules and how an event runs them: [`RuleSet::handle`] is the whole of rule evaluation,
//! with no threads or channels, so `run`, `check` and tests share it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rhai::{AST, Dynamic, Engine, FuncArgs, Scope};
use tracing::error;

use super::api::{self, RuleMessage};
use super::diagnostic::Diagnostic;
use super::engine::{self, Deadline, Limits};
use super::host::{Host, Services, Trigger, TriggerKind};
use crate::event::{Event, Output, RuleRun, now_millis};
use crate::mqtt::topic;

/// One loaded rule file.
pub struct Rule {
    /// The file name without `.rhai`: the rule's name in logs and the database.
    pub name: Arc<str>,
    pub path: PathBuf,
    ast: AST,
    triggers: Vec<Trigger>,
}

impl Rule {
    /// The triggers the file registered.
    pub fn triggers(&self) -> impl Iterator<Item = &TriggerKind> {
        self.triggers.iter().map(|t| &t.kind)
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

/// Every loaded rule, with the engine that runs them.
pub struct RuleSet {
    engine: Engine,
    host: Arc<Host>,
    deadline: Arc<Deadline>,
    timeout: Duration,
    rules: Vec<Rule>,
}

impl RuleSet {
    /// An empty set. `stored` is the persisted `store_set` data (key -> JSON text).
    pub fn new(limits: Limits, services: Option<Services>, stored: HashMap<String, String>) -> Self {
        let kv = stored
            .into_iter()
            .filter_map(|(key, json)| {
                let value: serde_json::Value = serde_json::from_str(&json).ok()?;
                Some((key, rhai::serde::to_dynamic(value).ok()?))
            })
            .collect();
        let host = Arc::new(Host::new(services, kv));
        let (mut engine, deadline) = engine::build(limits);
        api::register(&mut engine, &host, &deadline);
        RuleSet {
            engine,
            host,
            deadline,
            timeout: limits.timeout,
            rules: Vec::new(),
        }
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

    /// Compiles `path` and runs its top level to collect its triggers.
    pub fn load_file(&mut self, path: &Path) -> Result<(), Diagnostic> {
        let name: Arc<str> = path
            .file_stem()
            .map(|s| s.to_string_lossy())
            .unwrap_or_default()
            .into();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Diagnostic::at(path, rhai::Position::NONE, format!("cannot read: {e}")))?;
        let mut ast = self
            .engine
            .compile(&text)
            .map_err(|e| Diagnostic::at(path, e.1, e.0.to_string()))?;
        ast.set_source(path.to_string_lossy().as_ref());
        self.host.begin_load(Arc::clone(&name));
        self.deadline.arm(self.timeout);
        let result = self.engine.run_ast_with_scope(&mut Scope::new(), &ast);
        self.deadline.disarm();
        let triggers = self.host.end_load();
        result.map_err(|e| Diagnostic::from_eval(path, *e))?;
        self.rules.retain(|r| r.name != name);
        self.rules.push(Rule {
            name,
            path: path.to_path_buf(),
            ast,
            triggers,
        });
        Ok(())
    }

    /// The loaded rules, in load order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Runs every trigger `event` fires, in rule order, and returns what they asked for followed by
    /// the trace of each run.
    pub fn handle(&mut self, event: &Event) -> Vec<Output> {
        let mut outputs = Vec::new();
        if let Event::Message(message) = event {
            self.host.observe(message);
        }
        for rule in &self.rules {
            for trigger in &rule.triggers {
                match (&trigger.kind, event) {
                    (TriggerKind::Start, Event::Start) => {
                        self.run(rule, trigger, (), None, &mut outputs);
                    }
                    (TriggerKind::Message { filter }, Event::Message(message))
                        if topic::matches(&message.topic, filter) =>
                    {
                        let arg = Dynamic::from(RuleMessage(message.clone()));
                        self.run(rule, trigger, (arg,), Some(&message.topic), &mut outputs);
                    }
                    _ => {}
                }
            }
        }
        outputs
    }

    fn run(
        &self,
        rule: &Rule,
        trigger: &Trigger,
        args: impl FuncArgs,
        topic: Option<&str>,
        outputs: &mut Vec<Output>,
    ) {
        let ts = now_millis();
        let started = Instant::now();
        self.host.begin_run(Arc::clone(&rule.name));
        self.deadline.arm(self.timeout);
        let result = trigger.callback.call::<Dynamic>(&self.engine, &rule.ast, args);
        self.deadline.disarm();
        let (produced, actions) = self.host.end_run();
        let error = result.err().map(|e| {
            let mut diagnostic = Diagnostic::from_eval(&rule.path, *e);
            if diagnostic.line.is_none() {
                diagnostic.line = trigger.position.line();
                diagnostic.column = trigger.position.position();
                diagnostic.message = format!(
                    "{} (in the {} trigger registered here)",
                    diagnostic.message,
                    trigger.kind.name()
                );
            }
            error!("{diagnostic}");
            diagnostic.to_string()
        });
        outputs.extend(produced);
        outputs.push(Output::Run(RuleRun {
            ts,
            rule: Arc::clone(&rule.name),
            trigger: trigger.kind.name(),
            topic: topic.map(str::to_string),
            duration_us: i64::try_from(started.elapsed().as_micros()).unwrap_or(i64::MAX),
            error,
            actions: actions as i64,
        }));
    }
}
