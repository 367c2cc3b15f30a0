//! Relays on the Pi's GPIO pins, and the only module that knows rppal.
//!
//! Two sides: the [`model`] lives on the rule thread and decides (interlocks, `on_for`, `max_on`), with
//! the [`commands`] from MQTT and the start states handled there too, so rules see a relay's state at
//! once and scenario tests need no hardware; Home Assistant [`discovery`] is published at start. On the
//! actions stage, the [`driver`] drives the pins through a [`RelayBackend`]: [`rppal`] is
//! the real one; [`simulated`] records every write with its time, for machines without a GPIO chip and
//! for tests. The settings are in [`crate::config::gpio`].

pub mod commands;
pub mod discovery;
pub mod driver;
pub mod model;
pub mod rppal;
pub mod simulated;

use std::collections::HashMap;
use std::sync::Arc;

use tracing::info;

use crate::config::gpio::{Backend, GpioConfig};

/// Drives output pins. Implementations must leave a pin at the level last set when dropped.
pub trait RelayBackend: Send + Sync {
    /// Sets `pin` high or low.
    fn set(&self, pin: u8, high: bool) -> Result<(), GpioError>;
    /// `rppal` or `simulated`, for logs.
    fn kind(&self) -> &'static str;
}

/// Why GPIO could not be used.
#[derive(Debug, thiserror::Error)]
pub enum GpioError {
    #[error(
        "gpio.backend is rppal, but this is not a Raspberry Pi ({0}); use gpio.backend: simulated \
         (or auto) off a Pi"
    )]
    NotAPi(String),
    #[error("cannot use GPIO pin {pin}: {message} (is the user in the `gpio` group?)")]
    Pin { pin: u8, message: String },
}

/// Whether this machine is a Raspberry Pi (by its device tree model).
pub fn is_raspberry_pi() -> bool {
    ["/sys/firmware/devicetree/base/model", "/proc/device-tree/model"]
        .iter()
        .filter_map(|p| std::fs::read(p).ok())
        .any(|model| String::from_utf8_lossy(&model).contains("Raspberry Pi"))
}

/// Opens the configured backend with every relay's pin already at its start level (`start`: relay name
/// -> on), so nothing clicks at boot.
pub fn open(config: &GpioConfig, start: &HashMap<String, bool>) -> Result<Arc<dyn RelayBackend>, GpioError> {
    let levels: Vec<(u8, bool)> = config
        .relays
        .iter()
        .map(|r| (r.pin, r.level(start.get(&r.name).copied().unwrap_or(false))))
        .collect();
    let use_rppal = match config.backend {
        Backend::Rppal => true,
        Backend::Simulated => false,
        // No relays: nothing to open, so a user outside the `gpio` group can still run the engine.
        Backend::Auto => is_raspberry_pi() && !config.relays.is_empty(),
    };
    let backend: Arc<dyn RelayBackend> = if use_rppal {
        Arc::new(self::rppal::RppalBackend::open(&levels)?)
    } else {
        if config.backend == Backend::Auto && !config.relays.is_empty() {
            info!("not a Raspberry Pi: relays are simulated (gpio.backend: auto)");
        }
        Arc::new(simulated::SimulatedBackend::with_levels(&levels))
    };
    if !config.relays.is_empty() {
        info!(
            backend = backend.kind(),
            relays = config.relays.len(),
            "relays ready"
        );
    }
    Ok(backend)
}
