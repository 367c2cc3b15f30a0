//! Plays a scenario against the rules on virtual time and reports the first step that fails, with the
//! rule runs that led there.

use std::fmt;
use std::path::{Path, PathBuf};

use regex::Regex;

use super::file::{ExpectNotPublished, ExpectPublished, PublishStep, Scenario, Step, yaml_to_json};
use crate::config::units::parse_duration;
use crate::event::RuleRun;
use crate::scheduler::Location;
use crate::scheduler::when::{format_local, parse_instant};
use crate::sim::{Options, RuleSource, Simulation};

/// Rule runs shown before a failing step.
const TRACE_RUNS: usize = 8;

/// How one scenario went.
#[derive(Debug)]
pub struct Outcome {
    pub path: PathBuf,
    pub steps: usize,
    /// Virtual time the scenario covered, ms.
    pub virtual_ms: i64,
    pub failure: Option<Failure>,
}

/// The step that failed (0: the file itself), what was expected and what happened.
#[derive(Debug)]
pub struct Failure {
    pub step: usize,
    pub kind: &'static str,
    pub message: String,
    /// The last rule runs before the failure, one line each.
    pub trace: Vec<String>,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hours = self.virtual_ms as f64 / 3_600_000.0;
        match &self.failure {
            None => {
                write!(
                    f,
                    "ok    {} ({} steps, {hours:.1} virtual hours)",
                    self.path.display(),
                    self.steps
                )
            }
            Some(failure) => {
                write!(f, "FAIL  {}: ", self.path.display())?;
                if failure.step > 0 {
                    write!(f, "step {} ({}): ", failure.step, failure.kind)?;
                }
                write!(f, "{}", failure.message)?;
                if !failure.trace.is_empty() {
                    write!(f, "\n      rule runs that led here:")?;
                    for line in &failure.trace {
                        write!(f, "\n        {line}")?;
                    }
                }
                Ok(())
            }
        }
    }
}

/// Runs the scenario at `path` with the rules of `rules_dir`.
pub fn run_scenario(path: &Path, rules_dir: &Path, options: &Options) -> Outcome {
    let mut outcome = Outcome {
        path: path.to_path_buf(),
        steps: 0,
        virtual_ms: 0,
        failure: None,
    };
    let fail = |message: String| Failure {
        step: 0,
        kind: "file",
        message,
        trace: Vec::new(),
    };
    let scenario = match Scenario::load(path) {
        Ok(s) => s,
        Err(e) => {
            let message = e.to_string();
            let message = message
                .strip_prefix(&format!("{}:", path.display()))
                .unwrap_or(&message)
                .trim()
                .to_string();
            outcome.failure = Some(fail(message));
            return outcome;
        }
    };
    outcome.steps = scenario.steps.len();
    match Player::start(&scenario, rules_dir, options) {
        Ok(mut player) => {
            let start = player.sim.now();
            outcome.failure = player.play(&scenario.steps);
            outcome.virtual_ms = player.sim.now() - start;
            player.sim.stop();
        }
        Err(message) => outcome.failure = Some(fail(message)),
    }
    outcome
}

struct Player {
    sim: Simulation,
    location: Location,
    /// Publishes before this index were matched by an earlier expectation.
    cursor: usize,
    /// Rule runs before this index were checked for failures.
    runs_checked: usize,
    /// What a `restart` step starts again with.
    files: Vec<PathBuf>,
    options: Options,
    dir: tempfile::TempDir,
}

impl Player {
    fn start(scenario: &Scenario, rules_dir: &Path, options: &Options) -> Result<Player, String> {
        let location = options.location.clone();
        let start = parse_instant(&scenario.start, &location.timezone).map_err(|e| format!("start: {e}"))?;
        let mut files = Vec::new();
        for name in scenario.rule.names() {
            let file = rules_dir.join(format!("{name}.rhai"));
            if !file.is_file() {
                return Err(format!("rule `{name}` not found: there is no {}", file.display()));
            }
            files.push(file);
        }
        let dir = tempfile::tempdir().map_err(|e| format!("cannot make a scratch directory: {e}"))?;
        let options = Options {
            scratch: true,
            ..options.clone()
        };
        let sim = Simulation::start_with(
            &dir.path().join("scenario.db"),
            RuleSource::Files(&files),
            options.clone(),
            start,
        )
        .map_err(|e| e.to_string())?;
        if !sim.problems.is_empty() {
            let problems: Vec<String> = sim.problems.iter().map(|p| p.render()).collect();
            return Err(format!("rules do not load:\n{}", problems.join("\n")));
        }
        Ok(Player {
            sim,
            location,
            cursor: 0,
            runs_checked: 0,
            files,
            options,
            dir,
        })
    }

    fn play(&mut self, steps: &[Step]) -> Option<Failure> {
        for (index, step) in steps.iter().enumerate() {
            if let Err(message) = self.step(step).and_then(|()| self.no_failed_runs()) {
                let trace = self.trace();
                return Some(Failure {
                    step: index + 1,
                    kind: step.kind(),
                    message,
                    trace,
                });
            }
        }
        None
    }

    fn step(&mut self, step: &Step) -> Result<(), String> {
        match step {
            Step::Publish(publish) => self.publish(publish),
            Step::Wait(duration) => {
                let millis = millis(duration)?;
                self.sim.advance(millis).map_err(|e| e.to_string())
            }
            Step::At(time) => {
                let at = parse_instant(time, &self.location.timezone)?;
                if at < self.sim.now() {
                    return Err(format!(
                        "{time} is before the scenario's current time {}",
                        self.now_text()
                    ));
                }
                self.sim.advance_to(at).map_err(|e| e.to_string())
            }
            Step::Restart(down) => {
                let down = millis(down)?;
                let db = self.dir.path().join("scenario.db");
                let source = RuleSource::Files(&self.files);
                self.sim
                    .restart(&db, source, self.options.clone(), down)
                    .map_err(|e| e.to_string())?;
                if !self.sim.problems.is_empty() {
                    let problems: Vec<String> = self.sim.problems.iter().map(|p| p.render()).collect();
                    return Err(format!("rules do not load again:\n{}", problems.join("\n")));
                }
                Ok(())
            }
            Step::ExpectPublished(expect) => self.expect_published(expect),
            Step::ExpectNotPublished(expect) => self.expect_not_published(expect),
            Step::ExpectStore(expected) => self.expect_store(expected),
            Step::ExpectRelay(expected) => self.expect_relay(expected),
        }
    }

    fn publish(&mut self, step: &PublishStep) -> Result<(), String> {
        let payload = match &step.payload {
            serde_yaml::Value::String(text) => text.clone(),
            serde_yaml::Value::Null => String::new(),
            serde_yaml::Value::Number(n) => n.to_string(),
            serde_yaml::Value::Bool(b) => b.to_string(),
            other => yaml_to_json(other).to_string(),
        };
        let _ = step.retain; // stored as given; rules see msg.retain
        self.sim.publish(&step.topic, payload).map_err(|e| e.to_string())
    }

    /// Looks for the expected publish among those not yet matched, moving time forward (deadline by
    /// deadline) up to `within`; on success, time stands at the match.
    fn expect_published(&mut self, expect: &ExpectPublished) -> Result<(), String> {
        let matcher = Matcher::new(expect)?;
        let deadline = match &expect.within {
            Some(within) => self.sim.now() + millis(within)?,
            None => self.sim.now(),
        };
        loop {
            let published = self.sim.published();
            if let Some(found) = published
                .iter()
                .skip(self.cursor)
                .position(|(_, t, p)| t == &expect.topic && matcher.matches(p))
            {
                self.cursor += found + 1;
                return Ok(());
            }
            match self.sim.rules().next_due().filter(|due| *due <= deadline) {
                Some(due) => self.sim.advance_to(due).map_err(|e| e.to_string())?,
                None if self.sim.now() < deadline => {
                    self.sim.advance_to(deadline).map_err(|e| e.to_string())?
                }
                None => {
                    let within = expect
                        .within
                        .as_ref()
                        .map(|w| format!(" within {w}"))
                        .unwrap_or_default();
                    return Err(format!(
                        "expected a publish on {} with {}{within}; published since the last match: {}",
                        expect.topic,
                        matcher.describe(),
                        self.unmatched()
                    ));
                }
            }
        }
    }

    fn expect_not_published(&mut self, expect: &ExpectNotPublished) -> Result<(), String> {
        if let Some(within) = &expect.within {
            self.sim.advance(millis(within)?).map_err(|e| e.to_string())?;
        }
        let published = self.sim.published();
        match published
            .iter()
            .skip(self.cursor)
            .find(|(_, t, _)| t == &expect.topic)
        {
            None => Ok(()),
            Some((at, topic, payload)) => Err(format!(
                "expected nothing on {topic}, but a rule published {payload:?} at {}",
                format_local(*at, &self.location.timezone)
            )),
        }
    }

    fn expect_store(&self, expected: &serde_yaml::Mapping) -> Result<(), String> {
        for (key, value) in expected {
            let key = key
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| yaml_to_json(key).to_string());
            let want = yaml_to_json(value);
            // Nothing stored reads as `()` in a rule, which is null here.
            let have = self.sim.stored(&key).unwrap_or(serde_json::Value::Null);
            if !json_eq(&have, &want) {
                return Err(format!(
                    "expected store_get(\"{key}\") to be {want}, but it is {have}"
                ));
            }
        }
        Ok(())
    }

    fn expect_relay(&self, expected: &serde_yaml::Mapping) -> Result<(), String> {
        for (name, state) in expected {
            let name = name.as_str().unwrap_or_default();
            let want = match state {
                serde_yaml::Value::String(s) if s.eq_ignore_ascii_case("on") => true,
                serde_yaml::Value::String(s) if s.eq_ignore_ascii_case("off") => false,
                serde_yaml::Value::Bool(b) => *b,
                other => {
                    return Err(format!(
                        "expect_relay: write on or off for {name}, not {}",
                        yaml_to_json(other)
                    ));
                }
            };
            let word = |on: bool| if on { "on" } else { "off" };
            match self.sim.relay_is_on(name) {
                None => return Err(format!("there is no relay `{name}` in gpio.relays of the config")),
                Some(on) if on != want => {
                    return Err(format!(
                        "expected relay {name} {}, but it is {}",
                        word(want),
                        word(on)
                    ));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// A rule run that failed fails the scenario at the step during which it ran: a rule that throws
    /// on a payload its sensor really sends is a bug, even when no expectation looks there.
    fn no_failed_runs(&mut self) -> Result<(), String> {
        let runs = self.sim.runs();
        let failed = runs
            .iter()
            .skip(self.runs_checked)
            .find_map(|run| run.error.as_ref().map(|e| (run.trigger, e.clone())));
        self.runs_checked = runs.len();
        match failed {
            Some((trigger, error)) => Err(format!("a rule run ({trigger}) failed: {error}")),
            None => Ok(()),
        }
    }

    fn unmatched(&self) -> String {
        let published = self.sim.published();
        let rest: Vec<String> = published
            .iter()
            .skip(self.cursor)
            .map(|(_, t, p)| format!("{t} {p:?}"))
            .collect();
        if rest.is_empty() {
            "nothing".into()
        } else {
            rest.join(", ")
        }
    }

    fn trace(&self) -> Vec<String> {
        let runs = self.sim.runs();
        let skip = runs.len().saturating_sub(TRACE_RUNS);
        runs[skip..]
            .iter()
            .map(|run| describe_run(run, &self.location))
            .collect()
    }

    fn now_text(&self) -> String {
        format_local(self.sim.now(), &self.location.timezone)
    }
}

fn describe_run(run: &RuleRun, location: &Location) -> String {
    let what = match (&run.error, run.actions) {
        (Some(error), _) => format!("failed: {error}"),
        (None, 1) => "1 action".into(),
        (None, n) => format!("{n} actions"),
    };
    let topic = run.topic.as_deref().map(|t| format!(" {t}")).unwrap_or_default();
    format!(
        "{}  {}  {}{topic}: {what}",
        format_local(run.ts, &location.timezone),
        run.rule,
        run.trigger
    )
}

fn millis(duration: &str) -> Result<i64, String> {
    parse_duration(duration).map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// How an expected payload is compared.
enum Matcher {
    Any,
    /// Exact text, or equal JSON when both sides are JSON.
    Text(String),
    Json(serde_json::Value),
    Regex(Regex),
}

impl Matcher {
    fn new(expect: &ExpectPublished) -> Result<Matcher, String> {
        match (&expect.payload, &expect.regex) {
            (Some(_), Some(_)) => Err("give payload or regex, not both".into()),
            (None, Some(pattern)) => Regex::new(pattern)
                .map(Matcher::Regex)
                .map_err(|e| format!("regex: {e}")),
            (None, None) => Ok(Matcher::Any),
            (Some(serde_yaml::Value::String(text)), None) => Ok(Matcher::Text(text.clone())),
            (Some(serde_yaml::Value::Null), None) => Ok(Matcher::Text(String::new())),
            (Some(other), None) => Ok(Matcher::Json(yaml_to_json(other))),
        }
    }

    fn matches(&self, payload: &str) -> bool {
        match self {
            Matcher::Any => true,
            Matcher::Text(text) => {
                text == payload
                    || matches!((serde_json::from_str(text), serde_json::from_str(payload)), (Ok(a), Ok(b)) if json_eq(&a, &b))
            }
            Matcher::Json(want) => serde_json::from_str(payload).is_ok_and(|have| json_eq(&have, want)),
            Matcher::Regex(regex) => regex.is_match(payload),
        }
    }

    fn describe(&self) -> String {
        match self {
            Matcher::Any => "any payload".into(),
            Matcher::Text(text) => format!("payload {text:?}"),
            Matcher::Json(json) => format!("JSON payload {json}"),
            Matcher::Regex(regex) => format!("a payload matching /{}/", regex.as_str()),
        }
    }
}

/// Structural JSON equality where numbers compare by value (`1` equals `1.0`).
fn json_eq(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_eq(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_compare_as_text_json_or_regex() {
        let text = Matcher::Text(r#"{"a": 1, "b": [true]}"#.into());
        assert!(text.matches(r#"{"b":[true],"a":1.0}"#));
        assert!(!text.matches(r#"{"a":2,"b":[true]}"#));
        assert!(Matcher::Text("ON".into()).matches("ON"));
        assert!(!Matcher::Text("ON".into()).matches("on"));
        assert!(Matcher::Regex(Regex::new("^(ON|OFF)$").unwrap()).matches("OFF"));
        assert!(Matcher::Json(serde_json::json!({"state": "ON"})).matches(r#"{"state":"ON"}"#));
    }
}
