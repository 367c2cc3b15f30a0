//! The real backend: rppal output pins. Reset-on-drop is turned off (dropping a pin would otherwise
//! float the line and may switch the relay), and each pin is made an output at its start level in one
//! step, so an active-low relay starts high and never clicks on at boot (setting
//! the mode first and the level after would drive it low for a moment).

use std::collections::HashMap;
use std::sync::Mutex;

use rppal::gpio::{Gpio, OutputPin};

use super::{GpioError, RelayBackend};

/// Output pins, by BCM number.
pub struct RppalBackend {
    pins: Mutex<HashMap<u8, OutputPin>>,
}

impl RppalBackend {
    /// Claims each pin as an output at its level.
    pub fn open(levels: &[(u8, bool)]) -> Result<Self, GpioError> {
        let gpio = Gpio::new().map_err(|e| match e {
            rppal::gpio::Error::UnknownModel => GpioError::NotAPi(e.to_string()),
            other => GpioError::Pin {
                pin: 0,
                message: other.to_string(),
            },
        })?;
        let mut pins = HashMap::new();
        for &(pin, high) in levels {
            let input = gpio.get(pin).map_err(|e| GpioError::Pin {
                pin,
                message: e.to_string(),
            })?;
            let mut output = if high {
                input.into_output_high()
            } else {
                input.into_output_low()
            };
            output.set_reset_on_drop(false);
            pins.insert(pin, output);
        }
        Ok(RppalBackend {
            pins: Mutex::new(pins),
        })
    }
}

impl RelayBackend for RppalBackend {
    fn set(&self, pin: u8, high: bool) -> Result<(), GpioError> {
        let mut pins = self.pins.lock().unwrap_or_else(|p| p.into_inner());
        let output = pins.get_mut(&pin).ok_or(GpioError::Pin {
            pin,
            message: "not configured as a relay".into(),
        })?;
        if high {
            output.set_high()
        } else {
            output.set_low()
        }
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "rppal"
    }
}
