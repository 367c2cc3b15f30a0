//! Trigger registration: `on_message(filter, |msg| ..)` and `on_start(|| ..)`. Called at a rule file's
//! top level; the closures run later, when their trigger fires.

use std::sync::Arc;

use rhai::{Engine, EvalAltResult, FnPtr, NativeCallContext};

use super::error_at;
use crate::mqtt::topic::valid_filter;
use crate::rules::host::{Host, Trigger, TriggerKind};

pub(super) fn register(engine: &mut Engine, host: &Arc<Host>) {
    let on_message = Arc::clone(host);
    engine.register_fn(
        "on_message",
        move |ctx: NativeCallContext, filter: &str, callback: FnPtr| -> Result<(), Box<EvalAltResult>> {
            if !valid_filter(filter) {
                return Err(error_at(
                    &ctx,
                    format!("`{filter}` is not a valid MQTT topic filter"),
                ));
            }
            let kind = TriggerKind::Message {
                filter: filter.to_string(),
                pacing: None,
            };
            on_message
                .register(
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
    let on_start = Arc::clone(host);
    engine.register_fn(
        "on_start",
        move |ctx: NativeCallContext, callback: FnPtr| -> Result<(), Box<EvalAltResult>> {
            let trigger = Trigger {
                kind: TriggerKind::Start,
                callback,
                position: ctx.call_position(),
            };
            on_start
                .register(ctx.call_source(), trigger)
                .map_err(|e| error_at(&ctx, e))
        },
    );
}
