//! State and history for rules: `store_get`/`store_set` (persisted), `last(topic)`, `sql(query,
//! params)` on the read-only history, and `now()`.

use std::sync::Arc;

use rhai::{Array, Dynamic, Engine, EvalAltResult, INT, Map, NativeCallContext};

use super::error_at;
use super::message::RuleMessage;
use crate::rules::engine::Deadline;
use crate::rules::host::Host;
use crate::store::SqlValue;

pub(super) fn register(engine: &mut Engine, host: &Arc<Host>, deadline: &Arc<Deadline>) {
    let get = Arc::clone(host);
    engine.register_fn("store_get", move |key: &str| get.store_get(key));
    let set = Arc::clone(host);
    engine.register_fn(
        "store_set",
        move |ctx: NativeCallContext, key: &str, value: Dynamic| -> Result<(), Box<EvalAltResult>> {
            set.store_set(key, value).map_err(|e| error_at(&ctx, e))
        },
    );
    let last = Arc::clone(host);
    engine.register_fn(
        "last",
        move |ctx: NativeCallContext, topic: &str| -> Result<Dynamic, Box<EvalAltResult>> {
            match last.last(topic) {
                Ok(Some(message)) => Ok(Dynamic::from(RuleMessage::new(message))),
                Ok(None) => Ok(Dynamic::UNIT),
                Err(e) => Err(error_at(&ctx, format!("last(\"{topic}\"): {e}"))),
            }
        },
    );
    for with_params in [false, true] {
        let sql_host = Arc::clone(host);
        let sql_deadline = Arc::clone(deadline);
        let run =
            move |ctx: NativeCallContext, query: &str, params: Array| -> Result<Array, Box<EvalAltResult>> {
                let params = params
                    .iter()
                    .map(to_sql)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| error_at(&ctx, e))?;
                let result = sql_host
                    .sql(query, &params, sql_deadline.current())
                    .map_err(|e| error_at(&ctx, e))?;
                Ok(result
                    .rows
                    .into_iter()
                    .map(|row| {
                        let map: Map = result
                            .columns
                            .iter()
                            .map(|c| c.as_str().into())
                            .zip(row.into_iter().map(from_sql))
                            .collect();
                        Dynamic::from_map(map)
                    })
                    .collect())
            };
        if with_params {
            engine.register_fn("sql", run);
        } else {
            engine.register_fn("sql", move |ctx: NativeCallContext, query: &str| {
                run(ctx, query, Array::new())
            });
        }
    }
    let clock = Arc::clone(host);
    engine.register_fn("now", move || clock.now() as INT);
}

fn to_sql(value: &Dynamic) -> Result<SqlValue, String> {
    if value.is_unit() {
        Ok(SqlValue::Null)
    } else if let Ok(i) = value.as_int() {
        Ok(SqlValue::Integer(i))
    } else if let Ok(f) = value.as_float() {
        Ok(SqlValue::Real(f))
    } else if let Ok(b) = value.as_bool() {
        Ok(SqlValue::Integer(i64::from(b)))
    } else if value.is_string() {
        Ok(SqlValue::Text(value.to_string()))
    } else if value.is_blob() {
        Ok(SqlValue::Blob(value.clone().into_blob().unwrap_or_default()))
    } else {
        Err(format!(
            "sql: a parameter must be a number, text, bool, blob or (), not {}",
            value.type_name()
        ))
    }
}

fn from_sql(value: SqlValue) -> Dynamic {
    match value {
        SqlValue::Null => Dynamic::UNIT,
        SqlValue::Integer(i) => Dynamic::from_int(i),
        SqlValue::Real(f) => Dynamic::from_float(f),
        SqlValue::Text(t) => Dynamic::from(t),
        SqlValue::Blob(b) => Dynamic::from_blob(b),
    }
}
