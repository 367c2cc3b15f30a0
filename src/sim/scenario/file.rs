//! The scenario file format: a serde mirror with unknown keys refused, like the config.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// One scenario file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// The rule (file name without `.rhai`) or rules under test.
    pub rule: OneOrMany,
    /// When the scenario starts: RFC 3339, or local time in `location.timezone`.
    pub start: String,
    /// Each step is a one-key map (`- wait: 4m`), which serde_yaml reads as an enum only this way.
    #[serde(with = "serde_yaml::with::singleton_map_recursive")]
    pub steps: Vec<Step>,
}

/// A rule name or a list of them.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    /// The names.
    pub fn names(&self) -> Vec<&str> {
        match self {
            OneOrMany::One(name) => vec![name.as_str()],
            OneOrMany::Many(names) => names.iter().map(String::as_str).collect(),
        }
    }
}

/// One step.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Step {
    /// A message arrives.
    Publish(PublishStep),
    /// Time passes.
    Wait(String),
    /// Time passes until this (local) time.
    At(String),
    /// The engine stops, stays down this long, and starts again.
    Restart(String),
    /// A rule published this (already, or `within` the given time).
    ExpectPublished(ExpectPublished),
    /// Nothing was published on this topic (so far, or during `within`).
    ExpectNotPublished(ExpectNotPublished),
    /// Relays are in these states.
    ExpectRelay(serde_yaml::Mapping),
    /// `store_get` would return these values.
    ExpectStore(serde_yaml::Mapping),
}

impl Step {
    /// The step's keyword, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Step::Publish(_) => "publish",
            Step::Wait(_) => "wait",
            Step::At(_) => "at",
            Step::Restart(_) => "restart",
            Step::ExpectPublished(_) => "expect_published",
            Step::ExpectNotPublished(_) => "expect_not_published",
            Step::ExpectRelay(_) => "expect_relay",
            Step::ExpectStore(_) => "expect_store",
        }
    }
}

/// `publish: { topic, payload }`; a map or list payload is sent as JSON.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishStep {
    pub topic: String,
    #[serde(default)]
    pub payload: serde_yaml::Value,
    #[serde(default)]
    pub retain: bool,
}

/// `expect_published: { topic, payload | regex, within }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectPublished {
    pub topic: String,
    /// Exact text, or JSON compared structurally (a map or list here, or JSON text on both sides).
    pub payload: Option<serde_yaml::Value>,
    /// A regular expression the payload must match.
    pub regex: Option<String>,
    pub within: Option<String>,
}

/// `expect_not_published: { topic, within }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectNotPublished {
    pub topic: String,
    pub within: Option<String>,
}

/// Why a scenario file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("{path}: cannot read: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}:{location}{message}")]
    Format {
        path: PathBuf,
        location: String,
        message: String,
    },
}

impl Scenario {
    /// Reads a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        serde_yaml::from_str(&text).map_err(|e| {
            let location = e
                .location()
                .map(|l| format!("{}:{}: ", l.line(), l.column()))
                .unwrap_or_else(|| " ".into());
            let mut message = e.to_string();
            if let Some(l) = e.location() {
                let suffix = format!(" at line {} column {}", l.line(), l.column());
                message = message.strip_suffix(&suffix).unwrap_or(&message).to_string();
            }
            ScenarioError::Format {
                path: path.to_path_buf(),
                location,
                message,
            }
        })
    }
}

/// A YAML value as JSON (for payloads and stored values).
pub fn yaml_to_json(value: &serde_yaml::Value) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or(serde_json::Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_product_example_parses() {
        let text = r#"
rule: porch_light
start: 2026-06-01T22:00:00+02:00
steps:
  - publish: { topic: zigbee2mqtt/porch_motion, payload: '{"occupancy":true}' }
  - expect_relay: { porch_light: on }
  - wait: 4m
  - at: "2026-06-02T06:30"
  - expect_published: { topic: "homewright/relay/porch_light", payload: "OFF", within: 1m }
  - expect_not_published: { topic: x }
  - expect_store: { count: 3 }
"#;
        let scenario: Scenario = serde_yaml::from_str(text).unwrap();
        assert_eq!(scenario.rule.names(), ["porch_light"]);
        let kinds: Vec<&str> = scenario.steps.iter().map(Step::kind).collect();
        assert_eq!(
            kinds,
            [
                "publish",
                "expect_relay",
                "wait",
                "at",
                "expect_published",
                "expect_not_published",
                "expect_store"
            ]
        );
    }
}
