//! Triggers on how long something lasted: `on_held(filter, |msg| condition, duration, |msg| ..)` and
//! `on_silent(filter, duration, |topic, last| ..)`. What they do per topic is in `rules/held.rs`.

use std::sync::Arc;

use rhai::{Engine, EvalAltResult, FnPtr, NativeCallContext};

use super::error_at;
use crate::mqtt::topic::valid_filter;
use crate::rules::host::{Host, Trigger, TriggerKind};
use crate::scheduler::spec::parse_offset;

type Result<T> = std::result::Result<T, Box<EvalAltResult>>;

pub(super) fn register(engine: &mut Engine, host: &Arc<Host>) {
    let held = Arc::clone(host);
    engine.register_fn(
        "on_held",
        move |ctx: NativeCallContext,
              filter: &str,
              condition: FnPtr,
              duration: &str,
              callback: FnPtr|
              -> Result<()> {
            check_filter(&ctx, filter)?;
            let duration = parse_duration(&ctx, "on_held", duration)?;
            let kind = TriggerKind::Held {
                filter: filter.to_string(),
                condition,
                duration,
            };
            add_trigger(&held, &ctx, kind, callback)
        },
    );
    let silent = Arc::clone(host);
    engine.register_fn(
        "on_silent",
        move |ctx: NativeCallContext, filter: &str, duration: &str, callback: FnPtr| -> Result<()> {
            check_filter(&ctx, filter)?;
            let duration = parse_duration(&ctx, "on_silent", duration)?;
            if duration == 0 {
                return Err(error_at(
                    &ctx,
                    format!("on_silent(\"{filter}\", \"0s\", ..): the silence must last longer than 0s"),
                ));
            }
            let kind = TriggerKind::Silent {
                filter: filter.to_string(),
                duration,
            };
            add_trigger(&silent, &ctx, kind, callback)
        },
    );
}

fn check_filter(ctx: &NativeCallContext, filter: &str) -> Result<()> {
    if valid_filter(filter) {
        Ok(())
    } else {
        Err(error_at(
            ctx,
            format!("`{filter}` is not a valid MQTT topic filter"),
        ))
    }
}

fn parse_duration(ctx: &NativeCallContext, name: &str, text: &str) -> Result<i64> {
    let millis = parse_offset(text).map_err(|e| error_at(ctx, format!("{name}: {e}")))?;
    if millis < 0 {
        return Err(error_at(
            ctx,
            format!("{name}: the duration \"{text}\" cannot be negative"),
        ));
    }
    Ok(millis)
}

fn add_trigger(host: &Host, ctx: &NativeCallContext, kind: TriggerKind, callback: FnPtr) -> Result<()> {
    host.register(
        ctx.call_source(),
        Trigger {
            kind,
            callback,
            position: ctx.call_position(),
        },
    )
    .map_err(|e| error_at(ctx, e))
}
