//! Keeping a one-shot timer's closure across a restart. Rhai names a closure after a hash of its source
//! (with a fixed hashing seed, see [`FIXED_HASH_SEED`]), so the same rule file compiles to the same
//! name and the closure can be found again; its captured values are stored as JSON, with messages
//! (a common capture: `after("5m", || publish(.., msg.payload))`) encoded explicitly.

use bytes::Bytes;
use rhai::Dynamic;
use serde_json::{Value, json};

use super::api::RuleMessage;
use super::host::Callback;
use crate::event::{Message, TimerRecord};

/// Rhai hashes with a per-process random seed by default, which would rename every closure on each
/// start. A fixed seed keeps closure names stable; the hashes are internal, so nothing is weakened
/// that a home's own rule files could exploit.
pub const FIXED_HASH_SEED: [u64; 4] = [0x686f_6d65, 0x7772_6967, 0x6874_2d31, 0x7469_6d65];

/// Sets the fixed seed; must run before any engine is built. Later calls are harmless no-ops.
pub fn fix_hash_seed() {
    let _ = rhai::config::hashing::set_hashing_seed(Some(FIXED_HASH_SEED));
}

/// The captured values as JSON, or `None` when one of them cannot be stored (a function pointer, say).
pub fn encode_captured(values: &[Dynamic]) -> Option<String> {
    let encoded: Option<Vec<Value>> = values.iter().map(encode).collect();
    encoded.map(|values| Value::Array(values).to_string())
}

fn encode(value: &Dynamic) -> Option<Value> {
    if let Some(message) = value.clone().flatten().try_cast::<RuleMessage>() {
        let m = message.message();
        return Some(
            json!({ "$message": { "ts": m.ts, "topic": m.topic, "payload": m.payload.to_vec(), "qos": m.qos, "retain": m.retain } }),
        );
    }
    if value.is_fnptr() {
        return None;
    }
    serde_json::to_value(value).ok()
}

fn decode(value: Value) -> Option<Dynamic> {
    if let Value::Object(map) = &value
        && let Some(Value::Object(m)) = map.get("$message")
    {
        let payload: Vec<u8> = serde_json::from_value(m.get("payload")?.clone()).ok()?;
        return Some(Dynamic::from(RuleMessage::new(Message {
            ts: m.get("ts")?.as_i64()?,
            topic: m.get("topic")?.as_str()?.into(),
            payload: Bytes::from(payload),
            qos: u8::try_from(m.get("qos")?.as_u64()?).ok()?,
            retain: m.get("retain")?.as_bool()?,
            dup: false,
        })));
    }
    rhai::serde::to_dynamic(value).ok()
}

/// Rebuilds the closure of a persisted timer, or says why it cannot be.
pub fn restore_callback(record: &TimerRecord) -> Result<Callback, String> {
    let Some(captured) = &record.captured else {
        return Err("it captured a value that cannot be stored".into());
    };
    let values: Vec<Value> =
        serde_json::from_str(captured).map_err(|e| format!("its stored values are damaged: {e}"))?;
    let values: Option<Vec<Dynamic>> = values.into_iter().map(decode).collect();
    let captured = values.ok_or("its stored values are damaged")?;
    Ok(Callback::Restored {
        name: record.callback.clone(),
        captured,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captured_values_and_messages_round_trip() {
        let message = RuleMessage::new(Message {
            ts: 5,
            topic: "a/b".into(),
            payload: Bytes::from_static(&[0xff, 1]),
            qos: 1,
            retain: true,
            dup: false,
        });
        let values = vec![Dynamic::from(42_i64), Dynamic::from("x"), Dynamic::from(message)];
        let encoded = encode_captured(&values).unwrap();
        let record = TimerRecord {
            id: 1,
            rule: "r".into(),
            callback: "anon$1".into(),
            captured: Some(encoded),
            due: 0,
            position: "1:1".into(),
        };
        let Callback::Restored { captured: curry, .. } = restore_callback(&record).unwrap() else {
            panic!("restored")
        };
        assert_eq!(curry[0].as_int(), Ok(42));
        assert_eq!(curry[1].clone().into_string().unwrap(), "x");
        let restored = curry[2].clone().try_cast::<RuleMessage>().unwrap();
        assert_eq!(&restored.message().payload[..], &[0xff, 1]);
        assert!(restored.message().retain);
    }

    #[test]
    fn function_pointers_cannot_be_stored() {
        let pointer = Dynamic::from(rhai::FnPtr::new("f").unwrap());
        assert_eq!(encode_captured(&[pointer]), None);
    }
}
