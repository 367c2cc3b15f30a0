//! `msg`: the message a trigger receives, with its payload decoded on demand (`payload`, `json`,
//! `value`, `parts`) so that a rule pays only for what it reads.

use std::sync::{Arc, OnceLock};

use rhai::{Array, Dynamic, Engine, FLOAT, INT};

use crate::event::Message;

/// A message as rules see it. Cloning is cheap (the message is shared), so every trigger a message
/// fires gets the same one, and its JSON is parsed at most once however many rules read `msg.json`.
#[derive(Debug, Clone)]
pub struct RuleMessage(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    message: Message,
    /// `msg.json`, parsed on first read.
    json: OnceLock<Dynamic>,
}

impl RuleMessage {
    pub fn new(message: Message) -> Self {
        RuleMessage(Arc::new(Shared {
            message,
            json: OnceLock::new(),
        }))
    }

    /// The message itself.
    pub fn message(&self) -> &Message {
        &self.0.message
    }

    fn payload(&self) -> String {
        String::from_utf8_lossy(&self.message().payload).into_owned()
    }

    /// The payload parsed as JSON, or `()` when it is not JSON. Each read gets its own copy, so a rule
    /// that changes the map it got does not change what the next rule reads.
    fn json(&self) -> Dynamic {
        self.0
            .json
            .get_or_init(|| {
                serde_json::from_slice::<serde_json::Value>(&self.message().payload)
                    .ok()
                    .and_then(|value| rhai::serde::to_dynamic(value).ok())
                    .unwrap_or(Dynamic::UNIT)
            })
            .clone()
    }

    /// The payload as a number (always a float, so arithmetic on sensor values never truncates), or
    /// `()` when it is not one.
    fn value(&self) -> Dynamic {
        std::str::from_utf8(&self.message().payload)
            .ok()
            .and_then(|text| text.trim().parse::<FLOAT>().ok())
            .filter(|number| number.is_finite())
            .map_or(Dynamic::UNIT, Dynamic::from_float)
    }

    fn parts(&self) -> Array {
        self.message()
            .topic
            .split('/')
            .map(|level| Dynamic::from(level.to_string()))
            .collect()
    }
}

pub(super) fn register(engine: &mut Engine) {
    engine
        .register_type_with_name::<RuleMessage>("Message")
        .register_get("topic", |m: &mut RuleMessage| m.message().topic.clone())
        .register_get("payload", |m: &mut RuleMessage| m.payload())
        .register_get("json", |m: &mut RuleMessage| m.json())
        .register_get("value", |m: &mut RuleMessage| m.value())
        .register_get("parts", |m: &mut RuleMessage| m.parts())
        .register_get("qos", |m: &mut RuleMessage| INT::from(m.message().qos))
        .register_get("retain", |m: &mut RuleMessage| m.message().retain)
        .register_get("time", |m: &mut RuleMessage| m.message().ts as INT)
        .register_fn("to_string", |m: &mut RuleMessage| {
            format!("{}: {}", m.message().topic, m.payload())
        })
        .register_fn("to_debug", |m: &mut RuleMessage| {
            format!("Message({}: {})", m.message().topic, m.payload())
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn message(payload: &[u8]) -> RuleMessage {
        RuleMessage::new(Message {
            ts: 1,
            topic: "home/kitchen/temp".into(),
            payload: Bytes::copy_from_slice(payload),
            qos: 1,
            retain: false,
        })
    }

    #[test]
    fn numeric_payloads_have_a_value() {
        assert_eq!(message(b" 21.5\n").value().as_float(), Ok(21.5));
        assert_eq!(message(b"21").value().as_float(), Ok(21.0));
        assert!(message(b"warm").value().is_unit());
        assert!(message(b"NaN").value().is_unit());
    }

    #[test]
    fn json_is_unit_when_not_json_and_invalid_utf8_is_replaced() {
        assert!(message(b"{oops").json().is_unit());
        assert_eq!(
            message(b"{\"t\": 4}").json().as_map_ref().map(|m| m.len()).ok(),
            Some(1)
        );
        assert_eq!(message(&[0x66, 0xff]).payload(), "f\u{fffd}");
        assert_eq!(message(b"x").parts().len(), 3);
    }

    #[test]
    fn json_is_parsed_once_and_each_reader_gets_its_own_copy() {
        let shared = message(b"{\"t\": 4}");
        let other = shared.clone();
        let mut first = shared.json();
        assert!(other.0.json.get().is_some(), "a clone sees the parsed value");
        if let Some(mut map) = first.write_lock::<rhai::Map>() {
            map.insert("t".into(), Dynamic::from(5_i64));
        }
        let t = other.json().as_map_ref().ok().and_then(|m| m.get("t").cloned());
        assert_eq!(t.and_then(|t| t.as_int().ok()), Some(4));
    }
}
