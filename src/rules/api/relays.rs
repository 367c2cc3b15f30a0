//! Relays for rules: `relay(name)` (an unknown name is an error at the call), then `.on()`, `.off()`,
//! `.toggle()`, `.on_for("5m")` and `.is_on`. A switch an interlock refuses is logged and returns
//! false; it is not an error, so the rule goes on.

use std::sync::Arc;

use rhai::{Engine, EvalAltResult, NativeCallContext};
use tracing::warn;

use super::error_at;
use crate::relays::model::{Cause, Op};
use crate::rules::host::Host;
use crate::scheduler::spec::parse_offset;

/// A relay, as a rule holds it.
#[derive(Debug, Clone)]
pub struct Relay {
    name: String,
}

type Result<T> = std::result::Result<T, Box<EvalAltResult>>;

pub(super) fn register(engine: &mut Engine, host: &Arc<Host>) {
    engine.register_type_with_name::<Relay>("Relay");
    let lookup = Arc::clone(host);
    engine.register_fn(
        "relay",
        move |ctx: NativeCallContext, name: &str| -> Result<Relay> {
            if lookup.relay_is_on(name).is_some() {
                return Ok(Relay {
                    name: name.to_string(),
                });
            }
            let known: Vec<String> = lookup
                .relays()
                .config()
                .relays
                .iter()
                .map(|r| r.name.clone())
                .collect();
            let known = if known.is_empty() {
                "none are configured".to_string()
            } else {
                format!("known: {}", known.join(", "))
            };
            Err(error_at(
                &ctx,
                format!("there is no relay `{name}` in gpio.relays ({known})"),
            ))
        },
    );
    for (method, op) in [("on", Op::On), ("off", Op::Off), ("toggle", Op::Toggle)] {
        let switch = Arc::clone(host);
        engine.register_fn(method, move |relay: &mut Relay| {
            switch_or_warn(&switch, relay, op)
        });
    }
    let on_for = Arc::clone(host);
    engine.register_fn(
        "on_for",
        move |ctx: NativeCallContext, relay: &mut Relay, duration: &str| -> Result<bool> {
            let millis = parse_offset(duration).map_err(|e| error_at(&ctx, format!("on_for: {e}")))?;
            if millis <= 0 {
                return Err(error_at(
                    &ctx,
                    format!("on_for(\"{duration}\"): the duration must be longer than 0s"),
                ));
            }
            Ok(switch_or_warn(&on_for, relay, Op::OnFor(millis)))
        },
    );
    let state = Arc::clone(host);
    engine.register_get("is_on", move |relay: &mut Relay| {
        state.relay_is_on(&relay.name).unwrap_or(false)
    });
    engine.register_get("name", |relay: &mut Relay| relay.name.clone());
}

fn switch_or_warn(host: &Host, relay: &Relay, op: Op) -> bool {
    match host.switch_relay(&relay.name, op, Cause::Rule) {
        Ok(on) => on,
        Err(refused) => {
            let rule = host.current_rule();
            warn!(rule = rule.as_deref().unwrap_or("?"), "{refused}");
            false
        }
    }
}
