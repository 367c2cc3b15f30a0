//! The simulated backend: no hardware, every write recorded with its time, so tests can assert the
//! exact sequence of pin levels (and a machine without GPIO can still run relay rules).

use std::sync::Mutex;

use super::{GpioError, RelayBackend};
use crate::event::now_millis;

/// One write to a pin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PinWrite {
    pub pin: u8,
    pub high: bool,
    /// Unix ms.
    pub at: i64,
}

/// Records writes instead of driving pins.
#[derive(Debug, Default)]
pub struct SimulatedBackend {
    writes: Mutex<Vec<PinWrite>>,
}

impl SimulatedBackend {
    /// A backend whose pins were set to `levels` at open, as the real one does.
    pub fn with_levels(levels: &[(u8, bool)]) -> Self {
        let at = now_millis();
        let writes = levels
            .iter()
            .map(|&(pin, high)| PinWrite { pin, high, at })
            .collect();
        SimulatedBackend {
            writes: Mutex::new(writes),
        }
    }

    /// Every write so far, in order.
    pub fn writes(&self) -> Vec<PinWrite> {
        self.writes.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl RelayBackend for SimulatedBackend {
    fn set(&self, pin: u8, high: bool) -> Result<(), GpioError> {
        tracing::debug!(pin, high, "simulated GPIO write");
        self.writes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(PinWrite {
                pin,
                high,
                at: now_millis(),
            });
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "simulated"
    }
}

/// Lets a test keep a handle on the backend the engine uses.
impl RelayBackend for std::sync::Arc<SimulatedBackend> {
    fn set(&self, pin: u8, high: bool) -> Result<(), GpioError> {
        self.as_ref().set(pin, high)
    }

    fn kind(&self) -> &'static str {
        "simulated"
    }
}
