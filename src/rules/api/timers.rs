//! Timed triggers and timers: `every`, `cron`, `at_sunrise`, `at_sunset` (each optionally with
//! `#{ catch_up: true }`), `on_change`, `after`/`cancel`, and `is_dark()`.

use std::sync::Arc;

use rhai::{Engine, EvalAltResult, FnPtr, INT, Map, NativeCallContext};

use super::error_at;
use crate::event::{Output, TimerRecord};
use crate::mqtt::topic::valid_filter;
use crate::rules::host::{Host, Trigger, TriggerKind};
use crate::rules::persist;
use crate::rules::size::{held_bytes_all, human};
use crate::scheduler::spec::{self, parse_offset};
use crate::scheduler::{Recurrence, Sun};

type Result<T> = std::result::Result<T, Box<EvalAltResult>>;

pub(super) fn register(engine: &mut Engine, host: &Arc<Host>) {
    register_timed(engine, host, "every", |text, _| {
        let interval = parse_offset(text)?;
        if interval <= 0 {
            return Err(format!("every(\"{text}\"): the interval must be longer than 0s"));
        }
        Ok(Recurrence::Every { interval })
    });
    register_timed(engine, host, "cron", |text, _| Recurrence::cron(text));
    register_timed(engine, host, "at_sunrise", |text, host| {
        sun(text, host, Sun::Rise, "at_sunrise")
    });
    register_timed(engine, host, "at_sunset", |text, host| {
        sun(text, host, Sun::Set, "at_sunset")
    });

    let change = Arc::clone(host);
    engine.register_fn(
        "on_change",
        move |ctx: NativeCallContext, filter: &str, callback: FnPtr| -> Result<()> {
            if !valid_filter(filter) {
                return Err(error_at(
                    &ctx,
                    format!("`{filter}` is not a valid MQTT topic filter"),
                ));
            }
            let kind = TriggerKind::Change {
                filter: filter.to_string(),
                pacing: None,
            };
            change
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

    let after = Arc::clone(host);
    engine.register_fn(
        "after",
        move |ctx: NativeCallContext, delay: &str, callback: FnPtr| -> Result<INT> {
            let millis = parse_offset(delay).map_err(|e| error_at(&ctx, format!("after: {e}")))?;
            if millis < 0 {
                return Err(error_at(
                    &ctx,
                    format!("after(\"{delay}\"): the delay cannot be negative"),
                ));
            }
            let position = ctx.call_position();
            let most = after.limits().max_value_size;
            let too_large = || {
                error_at(
                    &ctx,
                    format!(
                        "after: the closure's captured variables take more than {} (rules.max_value_size); capture only what the timer needs",
                        human(most)
                    ),
                )
            };
            // Measured in memory first, so a huge capture is refused before it is encoded.
            let held = held_bytes_all(callback.curry(), most);
            if held > most {
                return Err(too_large());
            }
            let captured = persist::encode_captured(callback.curry());
            let bytes = captured.as_ref().map_or(held, |json| json.len().max(held));
            if bytes > most {
                return Err(too_large());
            }
            let (id, timer) = after
                .add_timer(ctx.call_source(), callback, millis, position, bytes)
                .map_err(|e| error_at(&ctx, e))?;
            after.note(Output::TimerSet(TimerRecord {
                id,
                rule: timer.rule.to_string(),
                callback: timer.callback.name().to_string(),
                captured,
                due: timer.due,
                position: format!(
                    "{}:{}",
                    position.line().unwrap_or(0),
                    position.position().unwrap_or(0)
                ),
            }));
            Ok(id)
        },
    );
    let cancel = Arc::clone(host);
    engine.register_fn("cancel", move |id: INT| -> bool {
        let cancelled = cancel.take_timer(id).is_some();
        if cancelled {
            cancel.note(Output::TimerDone { id });
        }
        cancelled
    });

    let dark = Arc::clone(host);
    engine.register_fn("is_dark", move |ctx: NativeCallContext| -> Result<bool> {
        spec::is_dark(dark.now(), dark.location()).ok_or_else(|| {
            error_at(
                &ctx,
                "is_dark() needs location.latitude and location.longitude in homewright.yaml",
            )
        })
    });
}

fn sun(offset: &str, host: &Host, event: Sun, name: &str) -> std::result::Result<Recurrence, String> {
    if host.location().coordinates.is_none() {
        return Err(format!(
            "{name} needs location.latitude and location.longitude in homewright.yaml"
        ));
    }
    Ok(Recurrence::Sun {
        event,
        offset: parse_offset(offset).map_err(|e| format!("{name}: {e}"))?,
    })
}

/// Registers `name(spec, || ..)` and `name(spec, #{ catch_up: bool }, || ..)`.
fn register_timed(
    engine: &mut Engine,
    host: &Arc<Host>,
    name: &'static str,
    parse: impl Fn(&str, &Host) -> std::result::Result<Recurrence, String> + Send + Sync + Copy + 'static,
) {
    let plain = Arc::clone(host);
    engine.register_fn(
        name,
        move |ctx: NativeCallContext, spec: &str, callback: FnPtr| -> Result<()> {
            add_timed(&plain, &ctx, name, parse(spec, &plain), &Map::new(), callback)
        },
    );
    let with_options = Arc::clone(host);
    engine.register_fn(
        name,
        move |ctx: NativeCallContext, spec: &str, options: Map, callback: FnPtr| -> Result<()> {
            add_timed(
                &with_options,
                &ctx,
                name,
                parse(spec, &with_options),
                &options,
                callback,
            )
        },
    );
}

fn add_timed(
    host: &Host,
    ctx: &NativeCallContext,
    name: &'static str,
    recurrence: std::result::Result<Recurrence, String>,
    options: &Map,
    callback: FnPtr,
) -> Result<()> {
    let recurrence = recurrence.map_err(|e| error_at(ctx, e))?;
    let mut catch_up = false;
    for (key, value) in options {
        match key.as_str() {
            "catch_up" => {
                catch_up = value
                    .as_bool()
                    .map_err(|_| error_at(ctx, format!("{name}: catch_up must be true or false")))?;
            }
            other => {
                return Err(error_at(
                    ctx,
                    format!("{name}: unknown option `{other}` (use catch_up)"),
                ));
            }
        }
    }
    let kind = TriggerKind::Timed {
        name,
        recurrence,
        catch_up,
    };
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
