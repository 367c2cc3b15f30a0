//! `on_held` and `on_silent`: triggers that fire once a topic's messages have kept a condition true,
//! or have stopped coming, for a duration. Their state per topic (since when, whether it fired) is
//! persisted only when it changes, so a restart, or a reload that leaves the trigger as it was,
//! neither loses a hold nor repeats a firing; one that completed while the engine was down fires once
//! at start, marked late.
//!
//! A silence does not count the time the engine was down: at start, each topic's silence goes on from
//! where it stood when the engine last heard anything at all, since a message sent during the outage
//! was missed, not unsent. A hold does count it (the condition was true when last seen, and held
//! state is what `on_held` promises), which is what makes a completed hold fire late at start.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use rhai::Dynamic;
use tracing::{error, info};

use super::api::RuleMessage;
use super::diagnostic::Diagnostic;
use super::host::TriggerKind;
use super::set::{Rule, RuleSet, RunKind};
use crate::event::{Message, Output, RuleRun, TopicWatch};
use crate::mqtt::topic;
use crate::scheduler::Due;

/// One topic's state under one `on_held` or `on_silent` trigger.
#[derive(Debug, Clone, Copy)]
pub(super) struct Watch {
    /// Held: when the condition became true. Silent: when the topic last spoke.
    since: i64,
    /// Held: the condition is true now. Silent: always.
    active: bool,
    /// It fired for this hold or silence.
    fired: bool,
    /// A deadline for this topic is queued (one at most, re-queued when it was early).
    queued: bool,
}

/// The watched topics of each (rule, trigger key).
pub(super) type Watches = HashMap<(Arc<str>, Arc<str>), HashMap<Arc<str>, Watch>>;

/// What an `on_held` or `on_silent` trigger waits for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Held,
    Silent,
}

/// Moves every hold's and silence's start by `jump` ms: the wall clock jumped and they keep their length.
pub(super) fn shift(watches: &mut Watches, jump: i64) {
    for watch in watches.values_mut().flat_map(|topics| topics.values_mut()) {
        watch.since = watch.since.saturating_add(jump);
    }
}

fn watched(kind: &TriggerKind) -> Option<(Kind, &str, i64)> {
    match kind {
        TriggerKind::Held { filter, duration, .. } => Some((Kind::Held, filter, *duration)),
        TriggerKind::Silent { filter, duration } => Some((Kind::Silent, filter, *duration)),
        _ => None,
    }
}

impl RuleSet {
    /// A message on a topic that trigger `t` of rule `r` watches.
    pub(super) fn watch_message(&mut self, r: usize, t: usize, message: &Message, outputs: &mut Vec<Output>) {
        let rule = &self.rules[r];
        let Some((kind, _, duration)) = watched(&rule.triggers[t].kind) else {
            return;
        };
        let holds = match kind {
            Kind::Held => self.condition_holds(rule, t, message, outputs),
            Kind::Silent => true,
        };
        let key = (Arc::clone(&rule.name), Arc::clone(&rule.keys[t]));
        let topics = self.watches.entry(key.clone()).or_default();
        let topic = &message.topic;
        let watch = topics.entry(Arc::clone(topic)).or_insert(Watch {
            since: message.ts,
            active: false,
            fired: false,
            queued: false,
        });
        let record = |since: i64, fired: bool| {
            Output::TopicWatch(TopicWatch {
                rule: key.0.to_string(),
                trigger: key.1.to_string(),
                topic: topic.to_string(),
                since,
                fired,
            })
        };
        let done = || Output::TopicWatchDone {
            rule: key.0.to_string(),
            trigger: key.1.to_string(),
            topic: topic.to_string(),
        };
        match kind {
            Kind::Held if holds && watch.active => return,
            Kind::Held if holds => {
                *watch = Watch {
                    since: message.ts,
                    active: true,
                    fired: false,
                    ..*watch
                };
                outputs.push(record(message.ts, false));
            }
            Kind::Held => {
                if watch.active {
                    watch.active = false;
                    watch.fired = false;
                    outputs.push(done());
                }
                return;
            }
            Kind::Silent => {
                if watch.fired {
                    outputs.push(done());
                }
                watch.since = message.ts;
                watch.active = true;
                watch.fired = false;
            }
        }
        if duration == 0 {
            self.fire_watch(&key.0, t, topic, message.ts, false, outputs);
        } else if !watch.queued {
            watch.queued = true;
            let at = watch.since + duration;
            self.host.schedule(
                at,
                Due::Watch {
                    rule: key.0,
                    index: t,
                    topic: Arc::clone(topic),
                },
            );
        }
    }

    /// Runs `on_held`'s condition on `message`. A failing condition, or one that is neither true,
    /// false nor `()` (a missing field), counts as false and is recorded as a failed run.
    fn condition_holds(&self, rule: &Rule, t: usize, message: &Message, outputs: &mut Vec<Output>) -> bool {
        let trigger = &rule.triggers[t];
        let TriggerKind::Held { condition, .. } = &trigger.kind else {
            return false;
        };
        let started = Instant::now();
        self.host
            .begin_run(Arc::clone(&rule.name), Arc::clone(&rule.file));
        self.deadline.arm(started, self.timeout);
        let arg = Dynamic::from(RuleMessage::new(message.clone()));
        let result = condition.call::<Dynamic>(&self.engine, &rule.ast, (arg,));
        self.deadline.disarm();
        let (mut produced, _) = self.host.end_run();
        let acted = !produced.is_empty();
        if result.is_err() || acted {
            self.host.undo_store_writes(&mut produced);
        }
        let problem = match result {
            Err(e) => Diagnostic::from_eval(&rule.path, *e),
            Ok(_) if acted => Diagnostic::at(
                &rule.path,
                trigger.position,
                "the condition of on_held only tests the message; act in the last closure",
            ),
            Ok(value) if value.is_unit() => return false,
            Ok(value) => match value.as_bool() {
                Ok(holds) => return holds,
                Err(kind) => Diagnostic::at(
                    &rule.path,
                    trigger.position,
                    format!("the condition of on_held must be true or false, not {kind}"),
                ),
            },
        };
        let mut problem = problem;
        if problem.line.is_none() {
            problem.line = trigger.position.line();
            problem.column = trigger.position.position();
        }
        error!("{problem}{}", problem.snippet());
        outputs.push(Output::Run(RuleRun {
            ts: self.clock.now(),
            rule: Arc::clone(&rule.name),
            trigger: "on_held",
            topic: Some(Arc::clone(&message.topic)),
            duration_us: i64::try_from(started.elapsed().as_micros()).unwrap_or(i64::MAX),
            error: Some(problem.to_string()),
            actions: 0,
            late: false,
        }));
        false
    }

    /// A watch's deadline: runs the trigger when its hold or silence has lasted, else queues it again.
    pub(super) fn fire_watch(
        &mut self,
        rule: &str,
        index: usize,
        topic: &Arc<str>,
        now: i64,
        late: bool,
        outputs: &mut Vec<Output>,
    ) {
        let Some(loaded) = self.rules.iter().find(|r| &*r.name == rule) else {
            return;
        };
        let Some((kind, _, duration)) = loaded.triggers.get(index).and_then(|t| watched(&t.kind)) else {
            return;
        };
        let key = (Arc::clone(&loaded.name), Arc::clone(&loaded.keys[index]));
        let Some(watch) = self.watches.get_mut(&key).and_then(|t| t.get_mut(topic)) else {
            return;
        };
        watch.queued = false;
        if !watch.active || watch.fired {
            return;
        }
        let at = watch.since + duration;
        if at > now {
            watch.queued = true;
            self.host.schedule(
                at,
                Due::Watch {
                    rule: key.0,
                    index,
                    topic: Arc::clone(topic),
                },
            );
            return;
        }
        watch.fired = true;
        outputs.push(Output::TopicWatch(TopicWatch {
            rule: key.0.to_string(),
            trigger: key.1.to_string(),
            topic: topic.to_string(),
            since: watch.since,
            fired: true,
        }));
        let last = match self.host.last(topic) {
            Ok(Some(message)) => Dynamic::from(RuleMessage::new(message)),
            Ok(None) => Dynamic::UNIT,
            Err(e) => {
                error!(rule, "cannot read the last message on {topic}: {e}");
                Dynamic::UNIT
            }
        };
        let Some(loaded) = self.rule(rule) else { return };
        let trigger = &loaded.triggers[index];
        let run = RunKind {
            name: trigger.kind.name(),
            position: trigger.position,
            topic: Some(topic),
            late,
        };
        match kind {
            Kind::Held => self.run(
                loaded,
                run,
                |e, ast| trigger.callback.call(e, ast, (last,)),
                outputs,
            ),
            Kind::Silent => {
                let name = Dynamic::from(topic.to_string());
                self.run(
                    loaded,
                    run,
                    |e, ast| trigger.callback.call(e, ast, (name, last)),
                    outputs,
                )
            }
        }
    }

    /// At start: the holds persisted by the last run, and each watched topic's silence from the history;
    /// what completed while the engine was down fires now, late.
    pub(super) fn restore_watches(&mut self, outputs: &mut Vec<Output>) {
        let now = self.clock.now();
        let mut rows: HashMap<(String, String), Vec<TopicWatch>> = HashMap::new();
        for row in std::mem::take(&mut self.persisted.topic_watches) {
            rows.entry((row.rule.clone(), row.trigger.clone()))
                .or_default()
                .push(row);
        }
        let history = self.history_if(Kind::Silent);
        // When the engine last heard anything: the end of the outage's unheard time.
        let heard = history.iter().map(|m| m.ts).max();
        let mut late = Vec::new();
        for rule in &self.rules {
            for (index, trigger) in rule.triggers.iter().enumerate() {
                let Some((kind, filter, duration)) = watched(&trigger.kind) else {
                    continue;
                };
                let key = (Arc::clone(&rule.name), Arc::clone(&rule.keys[index]));
                let stored = rows
                    .remove(&(rule.name.to_string(), rule.keys[index].to_string()))
                    .unwrap_or_default();
                let topics = self.watches.entry(key).or_default();
                match kind {
                    Kind::Held => {
                        for row in stored {
                            topics.insert(
                                row.topic.as_str().into(),
                                Watch {
                                    since: row.since,
                                    active: true,
                                    fired: row.fired,
                                    queued: false,
                                },
                            );
                        }
                    }
                    Kind::Silent => {
                        let fired: HashMap<&str, i64> = stored
                            .iter()
                            .filter(|r| r.fired)
                            .map(|r| (r.topic.as_str(), r.since))
                            .collect();
                        for message in history.iter().filter(|m| topic::matches(&m.topic, filter)) {
                            let already = fired.get(&*message.topic).is_some_and(|s| *s >= message.ts);
                            // The outage does not count, unless the silence was complete before it.
                            let since = match heard {
                                Some(heard) if message.ts + duration > heard => {
                                    message.ts + (now - heard).max(0)
                                }
                                _ => message.ts,
                            };
                            topics.insert(
                                Arc::clone(&message.topic),
                                Watch {
                                    since,
                                    active: true,
                                    fired: already,
                                    queued: false,
                                },
                            );
                        }
                        never_heard(topics, filter, now);
                    }
                }
                for (topic, watch) in topics.iter_mut() {
                    if !watch.active || watch.fired {
                        continue;
                    }
                    if watch.since + duration <= now {
                        late.push((Arc::clone(&rule.name), index, Arc::clone(topic)));
                    } else {
                        watch.queued = true;
                        self.host.schedule(
                            watch.since + duration,
                            Due::Watch {
                                rule: Arc::clone(&rule.name),
                                index,
                                topic: Arc::clone(topic),
                            },
                        );
                    }
                }
            }
        }
        for ((rule, trigger), stored) in rows {
            info!(
                rule,
                "{trigger}: the trigger changed or is gone, so its held state is forgotten"
            );
            for row in stored {
                outputs.push(Output::TopicWatchDone {
                    rule: row.rule,
                    trigger: row.trigger,
                    topic: row.topic,
                });
            }
        }
        for (rule, index, topic) in late {
            info!(rule = %rule, "{topic}: it completed while the engine was down; running it now (late)");
            self.fire_watch(&rule, index, &topic, now, true, outputs);
        }
    }

    /// After a reload of `name`: keeps the state of the triggers that stayed as they were, forgets
    /// that of the others, and queues the deadlines again (the reload dropped them).
    pub(super) fn rearm_watches(&mut self, name: &str, outputs: &mut Vec<Output>) {
        let now = self.clock.now();
        let Some(rule) = self.rules.iter().find(|r| &*r.name == name) else {
            self.forget_watches(name, |_| true, outputs);
            return;
        };
        let rule_name = Arc::clone(&rule.name);
        let specs: Vec<(usize, Kind, String, i64, Arc<str>)> = rule
            .triggers
            .iter()
            .enumerate()
            .filter_map(|(index, t)| {
                let (kind, filter, duration) = watched(&t.kind)?;
                Some((
                    index,
                    kind,
                    filter.to_string(),
                    duration,
                    Arc::clone(&rule.keys[index]),
                ))
            })
            .collect();
        let kept: std::collections::HashSet<Arc<str>> = specs.iter().map(|s| Arc::clone(&s.4)).collect();
        self.forget_watches(name, |key| !kept.contains(key), outputs);
        let needs_history = specs.iter().any(|(_, kind, _, _, key)| {
            *kind == Kind::Silent
                && !self
                    .watches
                    .contains_key(&(Arc::clone(&rule_name), Arc::clone(key)))
        });
        let history = if needs_history {
            self.history_if(Kind::Silent)
        } else {
            Vec::new()
        };
        for (index, kind, filter, duration, key) in specs {
            let key = (Arc::clone(&rule_name), key);
            let fresh = !self.watches.contains_key(&key);
            let topics = self.watches.entry(key).or_default();
            if fresh && kind == Kind::Silent {
                for message in history.iter().filter(|m| topic::matches(&m.topic, &filter)) {
                    topics.insert(
                        Arc::clone(&message.topic),
                        Watch {
                            since: message.ts,
                            active: true,
                            fired: false,
                            queued: false,
                        },
                    );
                }
                never_heard(topics, &filter, now);
            }
            for (topic, watch) in topics.iter_mut() {
                watch.queued = watch.active && !watch.fired;
                if watch.queued {
                    self.host.schedule(
                        watch.since + duration,
                        Due::Watch {
                            rule: Arc::clone(&rule_name),
                            index,
                            topic: Arc::clone(topic),
                        },
                    );
                }
            }
        }
    }

    /// Drops the watches of `rule` whose trigger key `drop` selects, and their persisted rows.
    pub(super) fn forget_watches(
        &mut self,
        rule: &str,
        drop: impl Fn(&str) -> bool,
        outputs: &mut Vec<Output>,
    ) {
        let gone: Vec<(Arc<str>, Arc<str>)> = self
            .watches
            .keys()
            .filter(|(r, k)| &**r == rule && drop(k))
            .cloned()
            .collect();
        for key in gone {
            let Some(topics) = self.watches.remove(&key) else {
                continue;
            };
            for topic in topics.keys() {
                outputs.push(Output::TopicWatchDone {
                    rule: key.0.to_string(),
                    trigger: key.1.to_string(),
                    topic: topic.to_string(),
                });
            }
        }
    }

    /// The latest stored message of every topic, when a trigger of `kind` needs it.
    fn history_if(&self, kind: Kind) -> Vec<Message> {
        let wanted = self.rules.iter().any(|r| {
            r.triggers
                .iter()
                .any(|t| watched(&t.kind).is_some_and(|(k, ..)| k == kind))
        });
        let Some(services) = self.host.services().filter(|_| wanted) else {
            return Vec::new();
        };
        services
            .runtime
            .block_on(services.reader.latest_all())
            .unwrap_or_else(|e| {
                error!("cannot read when each topic last spoke, for on_silent: {e}");
                Vec::new()
            })
    }
}

/// A filter naming one topic that has never spoken: its silence counts from now, with no last message.
fn never_heard(topics: &mut HashMap<Arc<str>, Watch>, filter: &str, now: i64) {
    let exact = !filter.contains(['+', '#']);
    if exact && !topics.contains_key(filter) {
        topics.insert(
            filter.into(),
            Watch {
                since: now,
                active: true,
                fired: false,
                queued: false,
            },
        );
    }
}
