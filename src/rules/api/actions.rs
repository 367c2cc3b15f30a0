//! What rules ask the world to do: `publish(topic, payload[, #{ qos, retain }])`, and `log(..)`.
//! Nothing is performed here: actions are queued for the actions stage (rules decide, the actions
//! stage does), which is why `check` and tests need no broker.

use std::sync::Arc;

use bytes::Bytes;
use rhai::{Dynamic, Engine, EvalAltResult, Map, NativeCallContext};

use super::error_at;
use crate::event::Action;
use crate::mqtt::topic::publish_problem;
use crate::rules::host::Host;
use crate::rules::size::{JsonProblem, human, json_within};

pub(super) fn register(engine: &mut Engine, host: &Arc<Host>) {
    let plain = Arc::clone(host);
    engine.register_fn(
        "publish",
        move |ctx: NativeCallContext, topic: &str, payload: Dynamic| -> Result<(), Box<EvalAltResult>> {
            publish(&plain, &ctx, topic, payload, &Map::new())
        },
    );
    let with_options = Arc::clone(host);
    engine.register_fn(
        "publish",
        move |ctx: NativeCallContext,
              topic: &str,
              payload: Dynamic,
              options: Map|
              -> Result<(), Box<EvalAltResult>> {
            publish(&with_options, &ctx, topic, payload, &options)
        },
    );
    let log = Arc::clone(host);
    engine.register_fn("log", move |value: Dynamic| {
        let rule = log.current_rule();
        tracing::info!(target: "homewright::rule", rule = rule.as_deref().unwrap_or("?"), "{value}");
    });
}

fn publish(
    host: &Host,
    ctx: &NativeCallContext,
    topic: &str,
    payload: Dynamic,
    options: &Map,
) -> Result<(), Box<EvalAltResult>> {
    if let Some(problem) = publish_problem(topic) {
        return Err(error_at(ctx, format!("publish: {problem}")));
    }
    let payload = encode_payload(payload, host.limits().max_string_size)
        .map_err(|e| error_at(ctx, format!("publish to {topic}: {e}")))?;
    let (qos, retain) =
        publish_options(options).map_err(|e| error_at(ctx, format!("publish to {topic}: {e}")))?;
    let action = Action::Publish {
        topic: topic.to_string(),
        payload,
        qos,
        retain,
    };
    host.act(action).map_err(|e| error_at(ctx, e))
}

/// Text as it is, maps and arrays as JSON (at most `max_json` bytes: map keys escape Rhai's own string
/// limit, so the JSON of a map can be far larger than any string a rule may build), blobs as bytes,
/// `()` as an empty payload, other values as their text.
pub(crate) fn encode_payload(payload: Dynamic, max_json: usize) -> Result<Bytes, String> {
    if payload.is_unit() {
        return Ok(Bytes::new());
    }
    if payload.is_string() {
        return Ok(Bytes::from(payload.into_string().unwrap_or_default()));
    }
    if payload.is_blob() {
        return Ok(Bytes::from(payload.into_blob().unwrap_or_default()));
    }
    if payload.is_map() || payload.is_array() {
        return match json_within(&payload, max_json) {
            Ok(json) => Ok(Bytes::from(json)),
            Err(JsonProblem::TooLarge) => Err(format!(
                "the value takes more than {} as JSON, the longest text a rule may build",
                human(max_json)
            )),
            Err(JsonProblem::Invalid(e)) => Err(format!("cannot send this value as JSON: {e}")),
        };
    }
    Ok(Bytes::from(payload.to_string()))
}

fn publish_options(options: &Map) -> Result<(u8, bool), String> {
    let mut qos = 0;
    let mut retain = false;
    for (key, value) in options {
        match key.as_str() {
            "qos" => {
                qos = value
                    .as_int()
                    .ok()
                    .and_then(|q| u8::try_from(q).ok())
                    .filter(|q| *q <= 2)
                    .ok_or_else(|| format!("qos must be 0, 1 or 2, not {value}"))?;
            }
            "retain" => {
                retain = value
                    .as_bool()
                    .map_err(|_| format!("retain must be true or false, not {value}"))?
            }
            other => return Err(format!("unknown option `{other}` (use qos and retain)")),
        }
    }
    Ok((qos, retain))
}
