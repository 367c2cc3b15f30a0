//! Driving relays for the actions stage: pin levels through the backend (active-low inverted here and
//! nowhere else), and what happens to each relay when the engine stops (`on_stop`).

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::Config;
use crate::config::gpio::{GpioConfig, OnStop};
use crate::relays::RelayBackend;

/// The relays' pins and the state last driven.
pub struct RelayDriver {
    pub backend: Arc<dyn RelayBackend>,
    pub config: GpioConfig,
    /// `<base_topic>/relay/`, where each relay's state is published.
    pub state_prefix: String,
    /// Relay name -> on, as last driven.
    pub on: HashMap<String, bool>,
}

impl RelayDriver {
    /// The driver of `config`'s relays through `backend`, whose pins are at `levels` (relay name -> on).
    pub fn new(backend: Arc<dyn RelayBackend>, config: &Config, levels: HashMap<String, bool>) -> Self {
        RelayDriver {
            backend,
            config: config.gpio.clone(),
            state_prefix: format!("{}/relay/", config.mqtt.base_topic),
            on: levels,
        }
    }

    /// Drives `name` on or off.
    pub fn drive(&mut self, name: &str, on: bool) -> Result<(), String> {
        let relay = self
            .config
            .relay(name)
            .ok_or_else(|| format!("there is no relay `{name}`"))?;
        self.backend
            .set(relay.pin, relay.level(on))
            .map_err(|e| format!("relay {name}: {e}"))?;
        self.on.insert(name.to_string(), on);
        Ok(())
    }

    /// The retained state topic of `name`.
    pub fn state_topic(&self, name: &str) -> String {
        format!("{}{name}", self.state_prefix)
    }

    /// The relays to switch off now that the engine stops: those on with `on_stop: off`.
    pub fn to_switch_off_at_stop(&self) -> Vec<String> {
        self.config
            .relays
            .iter()
            .filter(|r| r.on_stop == OnStop::Off && self.on.get(&r.name).copied().unwrap_or(false))
            .map(|r| r.name.clone())
            .collect()
    }
}
