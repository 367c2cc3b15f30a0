//! The `gpio:` and `homeassistant:` sections: relays by name, validated (BCM pin numbers, no pin used
//! twice, interlocks that name real relays) into [`GpioConfig`].

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde::Deserialize;

/// `gpio:` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawGpio {
    pub backend: Option<String>,
    pub relays: BTreeMap<String, RawRelay>,
}

/// One relay as written.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawRelay {
    pub pin: Option<i64>,
    pub active_low: bool,
    pub initial: Option<String>,
    pub max_on: Option<String>,
    pub interlock: Vec<String>,
    pub on_stop: Option<String>,
    pub restore: bool,
}

/// `homeassistant:` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawHomeAssistant {
    pub discovery: bool,
}

/// Which GPIO implementation drives the relays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// rppal on a Raspberry Pi, simulated elsewhere.
    #[default]
    Auto,
    Rppal,
    Simulated,
}

/// What a relay does when the engine stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnStop {
    /// Switch it off (the safe default).
    #[default]
    Off,
    /// Leave it as it is.
    Hold,
}

/// One relay.
#[derive(Debug, Clone, PartialEq)]
pub struct RelayConfig {
    pub name: String,
    /// BCM GPIO number, 0-27.
    pub pin: u8,
    /// On means the pin is low (most relay boards).
    pub active_low: bool,
    pub initial: bool,
    pub max_on: Option<Duration>,
    /// Relays that must never be on together with this one (symmetric).
    pub interlock: Vec<String>,
    pub on_stop: OnStop,
    /// Drive the last state again at start instead of `initial`.
    pub restore: bool,
}

impl RelayConfig {
    /// The pin level that means `on` for this relay.
    pub fn level(&self, on: bool) -> bool {
        on != self.active_low
    }
}

/// The validated GPIO section.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GpioConfig {
    pub backend: Backend,
    /// Sorted by name.
    pub relays: Vec<RelayConfig>,
    pub homeassistant_discovery: bool,
}

impl GpioConfig {
    /// The relay called `name`.
    pub fn relay(&self, name: &str) -> Option<&RelayConfig> {
        self.relays.iter().find(|r| r.name == name)
    }

    /// Whether `a` and `b` must never be on together (either names the other).
    pub fn interlocked(&self, a: &str, b: &str) -> bool {
        let names = |x: &str, y: &str| self.relay(x).is_some_and(|r| r.interlock.iter().any(|n| n == y));
        names(a, b) || names(b, a)
    }
}

/// Validates `gpio:`; `problem(key, message)` collects what is wrong.
pub fn validate(raw: &RawGpio, ha: &RawHomeAssistant, problem: &mut dyn FnMut(&str, String)) -> GpioConfig {
    let backend = match raw.backend.as_deref() {
        None | Some("auto") => Backend::Auto,
        Some("rppal") => Backend::Rppal,
        Some("simulated") => Backend::Simulated,
        Some(other) => {
            problem(
                "gpio.backend",
                format!("`{other}` is not a backend (auto, rppal or simulated)"),
            );
            Backend::Auto
        }
    };
    let mut relays = Vec::new();
    let mut pins = HashSet::new();
    for (name, relay) in &raw.relays {
        let key = |field: &str| format!("gpio.relays.{name}.{field}");
        let pin = match relay.pin {
            None => {
                problem(
                    &format!("gpio.relays.{name}"),
                    "needs a pin (a BCM GPIO number, 0-27)".into(),
                );
                0
            }
            Some(pin @ 0..=27) => pin as u8,
            Some(pin) => {
                problem(&key("pin"), format!("{pin} is not a BCM GPIO number (0-27)"));
                0
            }
        };
        if relay.pin.is_some() && !pins.insert(pin) {
            problem(&key("pin"), format!("pin {pin} is already used by another relay"));
        }
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            problem(
                &format!("gpio.relays.{name}"),
                "a relay name may hold letters, digits, `_` and `-`".into(),
            );
        }
        let initial = match relay.initial.as_deref() {
            None | Some("off") => false,
            Some("on") => true,
            Some(other) => {
                problem(&key("initial"), format!("`{other}` is not on or off"));
                false
            }
        };
        let max_on = relay
            .max_on
            .as_deref()
            .and_then(|text| match super::units::parse_duration(text) {
                Ok(d) if !d.is_zero() => Some(d),
                Ok(_) => {
                    problem(&key("max_on"), "must be longer than 0s".into());
                    None
                }
                Err(e) => {
                    problem(&key("max_on"), e);
                    None
                }
            });
        for other in &relay.interlock {
            if other == name || !raw.relays.contains_key(other) {
                problem(
                    &key("interlock"),
                    format!("`{other}` is not another relay of gpio.relays"),
                );
            }
        }
        let on_stop = match relay.on_stop.as_deref() {
            None | Some("off") => OnStop::Off,
            Some("hold") => OnStop::Hold,
            Some(other) => {
                problem(&key("on_stop"), format!("`{other}` is not off or hold"));
                OnStop::Off
            }
        };
        relays.push(RelayConfig {
            name: name.clone(),
            pin,
            active_low: relay.active_low,
            initial,
            max_on,
            interlock: relay.interlock.clone(),
            on_stop,
            restore: relay.restore,
        });
    }
    GpioConfig {
        backend,
        relays,
        homeassistant_discovery: ha.discovery,
    }
}
