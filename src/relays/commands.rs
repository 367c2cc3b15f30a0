//! The engine's own relay handling on the rule thread (methods of [`RuleSet`]): each relay's state
//! driven and published at start (and Home Assistant [`discovery`]), commands from `<base_topic>/relay/<name>/set` (and the CLI's
//! topic), and the `on_for`/`max_on` deadlines.

use std::collections::HashMap;

use bytes::Bytes;
use tracing::{info, warn};

use super::discovery;
use super::model::{Cause, Op, RelayModel, RelayState};
use crate::config::gpio::GpioConfig;
use crate::config::{Config, MqttConfig};
use crate::event::{Action, Message, Output};
use crate::rules::RuleSet;
use crate::scheduler::Due;

impl RuleSet {
    /// Sets up the relays with their start states (see [`RelayModel::start_states`]); their topics live
    /// under `base_topic`.
    pub fn set_relays(&mut self, gpio: GpioConfig, base_topic: &str, start: HashMap<String, RelayState>) {
        self.host.set_relays(RelayModel::new(gpio, start));
        self.base_topic = base_topic.to_string();
    }

    /// Whether relay `name` is on (`None`: no such relay).
    pub fn relay_is_on(&self, name: &str) -> Option<bool> {
        self.host.relay_is_on(name)
    }

    /// At start: every relay's state driven and published, its deadlines queued, and discovery.
    pub(crate) fn start_relays(&self, outputs: &mut Vec<Output>) {
        let model = self.host.relays();
        let now = self.clock.now();
        for relay in &model.config().relays {
            let Some(state) = model.state(&relay.name) else {
                continue;
            };
            let action = Action::Relay {
                name: relay.name.clone(),
                on: state.on,
                cause: Cause::Start.as_str(),
            };
            outputs.push(Output::Action {
                rule: "".into(),
                ts: now,
                action,
            });
            outputs.push(Output::RelayState {
                name: relay.name.clone(),
                state,
            });
        }
        for (name, at) in model.deadlines() {
            self.host.schedule(at, Due::Relay { name: name.into() });
        }
        let discovery = model.config().homeassistant_discovery;
        let mut retained = |topic: String, payload: Bytes, rule: &str| {
            let action = Action::Publish {
                topic,
                payload,
                qos: 1,
                retain: true,
            };
            outputs.push(Output::Action {
                rule: rule.into(),
                ts: now,
                action,
            });
        };
        if discovery {
            for relay in &model.config().relays {
                let (topic, payload) = discovery::config(&self.base_topic, &relay.name);
                retained(topic, payload, "homeassistant");
            }
        }
        // A relay removed from the config leaves its retained state (and discovery config) on the
        // broker, and Home Assistant a ghost switch: an empty retained message deletes both.
        let mut gone: Vec<&String> = self
            .persisted
            .relays
            .keys()
            .filter(|name| model.relay(name).is_none())
            .collect();
        gone.sort();
        for name in gone {
            info!(relay = %name, "no longer in gpio.relays: its retained state is cleared on the broker");
            retained(format!("{}/relay/{name}", self.base_topic), Bytes::new(), "");
            if discovery {
                retained(
                    discovery::topic(&self.base_topic, name),
                    Bytes::new(),
                    "homeassistant",
                );
            }
        }
    }

    /// A command on a relay's set topic: `ON`, `OFF`, `TOGGLE` (any case), or JSON
    /// `{"state": "ON", "expires": <unix ms>}` as `homewright relay` sends it. Rules still see it as any
    /// other message.
    pub(crate) fn relay_command(&self, message: &Message, outputs: &mut Vec<Output>) {
        let base = &self.base_topic;
        // Checked on every message, so without building the prefixes each time.
        let Some(rest) = message.topic.strip_prefix(base.as_str()) else {
            return;
        };
        let (name, cause) = if let Some(name) = relay_of(rest, "/relay/") {
            (name, Cause::SetTopic)
        } else if let Some(name) = relay_of(rest, "/cli/relay/") {
            (name, Cause::Cli)
        } else {
            return;
        };
        if self.host.relay_is_on(name).is_none() {
            warn!(topic = %message.topic, "no relay `{name}` in gpio.relays: command ignored");
            return;
        }
        let Some(command) = RelayCommand::parse(&message.payload) else {
            warn!(topic = %message.topic, "`{}` is not a relay command (ON, OFF or TOGGLE): ignored", String::from_utf8_lossy(&message.payload));
            return;
        };
        let now = self.clock.now();
        if let Some(late) = command.late_by(now) {
            // The sender gave up waiting (the engine was down, the broker held the command for its
            // session): switching now would surprise whoever was told it failed.
            warn!(
                topic = %message.topic,
                "relay command {} expired {:.1} s ago (its sender stopped waiting for an answer): ignored",
                String::from_utf8_lossy(&message.payload),
                late as f64 / 1000.0
            );
            return;
        }
        self.switch_commanded(name, command.op, cause, outputs);
    }

    /// A command from outside the rules (a set topic, the CLI, the house's page): switches relay `name`,
    /// publishing its state even when nothing changed (the sender waits to see it), or why it refused
    /// on `<base>/relay/<name>/refused`.
    pub(crate) fn switch_commanded(&self, name: &str, op: Op, cause: Cause, outputs: &mut Vec<Output>) {
        let base = &self.base_topic;
        let now = self.clock.now();
        if self.host.relay_is_on(name).is_none() {
            warn!("no relay `{name}` in gpio.relays: command ignored");
            return;
        }
        match self.host.switch_relay(name, op, cause) {
            Ok(on) => {
                let produced = self.host.drain_outputs();
                let changed = produced.iter().any(|o| matches!(o, Output::Action { .. }));
                outputs.extend(produced);
                if !changed {
                    // Nothing to drive, but the sender waits to see the state: publish it again.
                    let payload = Bytes::from_static(if on { b"ON" } else { b"OFF" });
                    let action = Action::Publish {
                        topic: format!("{base}/relay/{name}"),
                        payload,
                        qos: 1,
                        retain: true,
                    };
                    outputs.push(Output::Action {
                        rule: "".into(),
                        ts: now,
                        action,
                    });
                }
            }
            Err(refused) => {
                warn!(relay = name, cause = cause.as_str(), "{refused}");
                // The sender (`homewright relay`) waits for an answer: tell it why nothing changed.
                let action = Action::Publish {
                    topic: format!("{base}/relay/{name}/refused"),
                    payload: Bytes::from(refused),
                    qos: 1,
                    retain: false,
                };
                outputs.push(Output::Action {
                    rule: "".into(),
                    ts: now,
                    action,
                });
            }
        }
    }

    /// A relay deadline fell due: switch it off if it is still current.
    pub(crate) fn relay_deadline(&self, name: &str, at: i64, outputs: &mut Vec<Output>) {
        let Some(cause) = self.host.relays().due(name, at) else {
            return;
        };
        if cause == Cause::MaxOn {
            warn!(relay = name, "on longer than its max_on: switching it off");
        } else {
            info!(relay = name, "on_for is over: switching it off");
        }
        if let Err(e) = self.host.switch_relay(name, Op::Off, cause) {
            warn!(relay = name, "{e}");
        }
        outputs.extend(self.host.drain_outputs());
    }
}

/// A command for a relay, as received.
#[derive(Debug, PartialEq, Eq)]
struct RelayCommand {
    op: Op,
    /// When the sender stops waiting (unix ms): a command received later is ignored.
    expires: Option<i64>,
}

impl RelayCommand {
    fn parse(payload: &[u8]) -> Option<RelayCommand> {
        let text = std::str::from_utf8(payload).ok()?.trim();
        if text.starts_with('{') {
            #[derive(serde::Deserialize)]
            struct Json {
                state: String,
                expires: Option<i64>,
            }
            let json: Json = serde_json::from_str(text).ok()?;
            return Some(RelayCommand {
                op: op_of(&json.state)?,
                expires: json.expires,
            });
        }
        Some(RelayCommand {
            op: op_of(text)?,
            expires: None,
        })
    }

    /// How long ago (ms) the command expired, if it has. `expires` comes from the network: any i64,
    /// so the difference saturates instead of overflowing.
    fn late_by(&self, now: i64) -> Option<i64> {
        self.expires
            .filter(|at| *at < now)
            .map(|at| now.saturating_sub(at))
    }
}

fn op_of(word: &str) -> Option<Op> {
    match word.trim().to_ascii_uppercase().as_str() {
        "ON" => Some(Op::On),
        "OFF" => Some(Op::Off),
        "TOGGLE" => Some(Op::Toggle),
        _ => None,
    }
}

/// The relay name in `<prefix><name>/set`.
fn relay_of<'a>(topic: &'a str, prefix: &str) -> Option<&'a str> {
    let name = topic.strip_prefix(prefix)?.strip_suffix("/set")?;
    (!name.is_empty() && !name.contains('/')).then_some(name)
}

/// `config.mqtt`, subscribed to the relays' command topics too when `mqtt.subscribe` does not cover
/// them (added as their own filters only then: a second, overlapping subscription makes some brokers
/// deliver twice). The validated config itself is left as the owner wrote it.
pub fn with_command_topics(config: &Config) -> MqttConfig {
    let mut mqtt = config.mqtt.clone();
    if config.gpio.relays.is_empty() {
        return mqtt;
    }
    let base = &config.mqtt.base_topic;
    for (sample, filter) in [
        (format!("{base}/relay/x/set"), format!("{base}/relay/+/set")),
        (
            format!("{base}/cli/relay/x/set"),
            format!("{base}/cli/relay/+/set"),
        ),
    ] {
        if !mqtt
            .subscribe
            .iter()
            .any(|f| crate::mqtt::topic::matches(&sample, f))
        {
            mqtt.subscribe.push(filter);
        }
    }
    mqtt
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_json_commands_parse_and_others_do_not() {
        let parse = |text: &str| RelayCommand::parse(text.as_bytes());
        assert_eq!(parse(" on\n").map(|c| c.op), Some(Op::On));
        assert_eq!(parse("Toggle").map(|c| c.op), Some(Op::Toggle));
        assert_eq!(
            parse(r#"{"state":"OFF","expires":12}"#),
            Some(RelayCommand {
                op: Op::Off,
                expires: Some(12)
            })
        );
        assert_eq!(parse(r#"{"state":"On"}"#).map(|c| c.expires), Some(None));
        let late = |expires| RelayCommand { op: Op::On, expires }.late_by(10_000);
        assert_eq!(late(None), None);
        assert_eq!(late(Some(10_000)), None, "expires now: still in time");
        assert_eq!(late(Some(9_000)), Some(1_000));
        assert_eq!(
            late(Some(i64::MIN)),
            Some(i64::MAX),
            "a hostile value does not overflow"
        );
        for bad in ["explode", "", r#"{"state":"up"}"#, r#"{"expires":1}"#, "{oops"] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
