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
        if model.config().homeassistant_discovery {
            for relay in &model.config().relays {
                let (topic, payload) = discovery::config(&self.base_topic, &relay.name);
                let action = Action::Publish {
                    topic,
                    payload,
                    qos: 1,
                    retain: true,
                };
                outputs.push(Output::Action {
                    rule: "homeassistant".into(),
                    ts: now,
                    action,
                });
            }
        }
    }

    /// A command on a relay's set topic (`ON`, `OFF`, `TOGGLE`, any case); returns whether `message` was
    /// one (rules still see it as any other message).
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
        let command = String::from_utf8_lossy(&message.payload)
            .trim()
            .to_ascii_uppercase();
        let op = match command.as_str() {
            "ON" => Op::On,
            "OFF" => Op::Off,
            "TOGGLE" => Op::Toggle,
            _ => {
                warn!(topic = %message.topic, "`{}` is not a relay command (ON, OFF or TOGGLE): ignored", String::from_utf8_lossy(&message.payload));
                return;
            }
        };
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
                        ts: self.clock.now(),
                        action,
                    });
                }
            }
            Err(refused) => warn!(topic = %message.topic, "{refused}"),
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
