//! `on_message(filter, #{ debounce | throttle }, |msg| ..)` and `on_change(filter, #{ .. }, |old,
//! value| ..)`: the same triggers with an options map before the closure, as `catch_up` is given to the
//! timed ones. What the options do is in `rules/paced.rs`.

use std::sync::Arc;

use rhai::{Engine, EvalAltResult, FnPtr, Map, NativeCallContext};

use super::error_at;
use crate::mqtt::topic::valid_filter;
use crate::rules::host::{Host, Pacing, Trigger, TriggerKind};
use crate::scheduler::spec::parse_offset;

type Result<T> = std::result::Result<T, Box<EvalAltResult>>;

pub(super) fn register(engine: &mut Engine, host: &Arc<Host>) {
    for name in ["on_message", "on_change"] {
        let host = Arc::clone(host);
        engine.register_fn(
            name,
            move |ctx: NativeCallContext, filter: &str, options: Map, callback: FnPtr| -> Result<()> {
                if !valid_filter(filter) {
                    return Err(error_at(
                        &ctx,
                        format!("`{filter}` is not a valid MQTT topic filter"),
                    ));
                }
                let pacing = pacing(&ctx, name, &options)?;
                let filter = filter.to_string();
                let kind = if name == "on_message" {
                    TriggerKind::Message { filter, pacing }
                } else {
                    TriggerKind::Change { filter, pacing }
                };
                host.register(
                    ctx.call_source(),
                    Trigger {
                        kind,
                        callback,
                        position: ctx.call_position(),
                    },
                )
                .map_err(|e| error_at(&ctx, e))
            },
        );
    }
}

fn pacing(ctx: &NativeCallContext, name: &str, options: &Map) -> Result<Option<Pacing>> {
    let mut pacing = None;
    for (key, value) in options {
        let make: fn(i64) -> Pacing = match key.as_str() {
            "debounce" => Pacing::Debounce,
            "throttle" => Pacing::Throttle,
            other => {
                return Err(error_at(
                    ctx,
                    format!("{name}: unknown option `{other}` (use debounce or throttle)"),
                ));
            }
        };
        if pacing.is_some() {
            return Err(error_at(
                ctx,
                format!("{name}: use debounce or throttle, not both"),
            ));
        }
        let text = value
            .clone()
            .into_string()
            .map_err(|_| error_at(ctx, format!("{name}: {key} takes a duration such as \"2s\"")))?;
        let millis = parse_offset(&text).map_err(|e| error_at(ctx, format!("{name}: {key}: {e}")))?;
        if millis <= 0 {
            return Err(error_at(ctx, format!("{name}: {key} must be longer than 0s")));
        }
        pacing = Some(make(millis));
    }
    Ok(pacing)
}
