//! `msg`: the message a trigger receives, with its payload decoded on demand (`payload`, `json`,
//! `value`, `parts`) so that a rule pays only for what it reads.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use rhai::{Array, Dynamic, Engine, EvalAltResult, FLOAT, INT, ImmutableString};

use crate::event::Message;

/// A message as rules see it. Cloning is cheap (the message is shared), so every trigger a message
/// fires gets the same one, and its JSON is parsed at most once however many rules read `msg.json`.
#[derive(Debug, Clone)]
pub struct RuleMessage(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    message: Message,
    /// `msg.json`, kept from the second read on (see [`RuleMessage::json`]).
    json: OnceLock<Dynamic>,
    /// `msg.json` was read once.
    json_read: AtomicBool,
    /// `msg.topic` as a rhai string, made on the first read: every rule that reads it (and every
    /// comparison in a loop) then shares one copy instead of allocating its own.
    topic: OnceLock<rhai::ImmutableString>,
}

impl RuleMessage {
    pub fn new(message: Message) -> Self {
        RuleMessage(Arc::new(Shared {
            message,
            json: OnceLock::new(),
            json_read: AtomicBool::new(false),
            topic: OnceLock::new(),
        }))
    }

    /// The message itself.
    pub fn message(&self) -> &Message {
        &self.0.message
    }

    /// A rhai string, not the `Arc<str>` the message shares: that would reach scripts as a custom
    /// type, so `"at " + msg.topic` printed its type name and `msg.topic == "a/b"` was false.
    fn topic(&self) -> rhai::ImmutableString {
        self.0
            .topic
            .get_or_init(|| rhai::ImmutableString::from(&*self.message().topic))
            .clone()
    }

    fn payload(&self) -> String {
        String::from_utf8_lossy(&self.message().payload).into_owned()
    }

    /// The payload parsed as JSON, or `()` when it is not JSON. Each read gets its own copy, so a rule
    /// that changes the map it got does not change what the next rule reads.
    ///
    /// Usually one rule reads it: that reader gets the parsed value itself, since keeping a copy for
    /// readers that never come cost as much as the parse (a map copied for every sensor message).
    /// A second reader parses once more and keeps that for the third and later ones to copy.
    fn json(&self) -> Dynamic {
        if let Some(kept) = self.0.json.get() {
            return kept.clone();
        }
        if !self.0.json_read.swap(true, Ordering::Relaxed) {
            return self.parse_json();
        }
        self.0.json.get_or_init(|| self.parse_json()).clone()
    }

    fn parse_json(&self) -> Dynamic {
        super::json::parse(&self.message().payload).unwrap_or(Dynamic::UNIT)
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
        .register_get("topic", |m: &mut RuleMessage| m.topic())
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
    register_fields_of_scalars(engine);
}

/// A field of a JSON value that is not a map reads as `()`, as a missing field of a map does: a sensor
/// that sends `true`, `"21.5"`, `42` or `[1, 2]` where a rule reads `msg.json.temperature` must not fail
/// the rule. Rhai falls back to a text-keyed indexer when a type has no getter of that name, so real
/// properties (`.len` of a string or an array) still work; `()` itself keeps failing, which is what
/// `?.` is for.
fn register_fields_of_scalars(engine: &mut Engine) {
    // Rhai refuses typed indexers for its own integers, strings and arrays; one taking any value is
    // accepted, and answers only for JSON's scalars and arrays: any other type (a misspelt `msg.jsn`,
    // a field of `()`) keeps Rhai's own "unknown property" error.
    engine.register_indexer_get(
        |target: &mut Dynamic, field: ImmutableString| -> Result<Dynamic, Box<EvalAltResult>> {
            let json_like = target.is_bool()
                || target.is_int()
                || target.is_float()
                || target.is_string()
                || target.is_array();
            if json_like {
                Ok(Dynamic::UNIT)
            } else {
                Err(EvalAltResult::ErrorIndexingType(
                    format!("{}.{field}", target.type_name()),
                    rhai::Position::NONE,
                )
                .into())
            }
        },
    );
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
            dup: false,
        })
    }

    #[test]
    fn scripts_see_the_topic_as_a_string_and_every_property_as_a_rhai_type() {
        // Before the engine, as `RuleSet::new` does: a test building a rule set on another thread
        // fixes rhai's hashing seed, and an engine whose functions were hashed under the old seed
        // then failed to find `starts_with` (about one run in six under load).
        crate::rules::persist::fix_hash_seed();
        let mut engine = Engine::new();
        register(&mut engine);
        let mut scope = rhai::Scope::new();
        scope.push("msg", message(b"x"));
        let script = r#"[type_of(msg.topic), "at " + msg.topic, msg.topic == "home/kitchen/temp",
            msg.topic.starts_with("home/")]"#;
        let seen: Array = engine.eval_with_scope(&mut scope, script).unwrap();
        let seen: Vec<String> = seen.iter().map(|v| v.to_string()).collect();
        assert_eq!(seen, ["string", "at home/kitchen/temp", "true", "true"]);
        // And every other property is one of rhai's own types, which scripts can operate on.
        let types: Array = engine
            .eval_with_scope(
                &mut scope,
                "[msg.payload, msg.parts, msg.parts[0], msg.qos, msg.retain, msg.time].map(|v| type_of(v))",
            )
            .unwrap();
        let types: Vec<String> = types.iter().map(|v| v.to_string()).collect();
        let int = std::any::type_name::<INT>();
        assert_eq!(types, ["string", "array", "string", int, "bool", int]);
    }

    #[test]
    fn every_reader_of_the_topic_shares_one_string() {
        let shared = message(b"x");
        let first = shared.clone().topic();
        let second = shared.topic();
        assert_eq!(first, "home/kitchen/temp");
        assert!(first.ptr_eq(&second));
    }

    #[test]
    fn a_field_of_json_that_is_not_a_map_is_unit_and_real_properties_still_work() {
        crate::rules::persist::fix_hash_seed();
        let mut engine = Engine::new();
        register(&mut engine);
        let eval = |payload: &[u8], script: &str| {
            let mut scope = rhai::Scope::new();
            scope.push("msg", message(payload));
            engine.eval_with_scope::<Dynamic>(&mut scope, script)
        };
        for payload in ["true", "\"21.5\"", "[1,2]", "42", "2.5", "{\"humidity\":50}"] {
            for script in ["msg.json?.temperature", "msg.json.temperature", "msg.json.a?.b"] {
                let seen = eval(payload.as_bytes(), script);
                assert!(
                    seen.as_ref().is_ok_and(Dynamic::is_unit),
                    "{script} on {payload}: {seen:?}"
                );
            }
        }
        assert_eq!(eval(b"[1,2]", "msg.json.len").unwrap().as_int(), Ok(2));
        assert_eq!(eval(b"\"abc\"", "msg.json.len").unwrap().as_int(), Ok(3));
        assert_eq!(eval(b"{\"t\":4}", "msg.json.t").unwrap().as_int(), Ok(4));
        // A misspelt property of the message is still an error, not `()`.
        assert!(eval(b"{}", "msg.jsn").is_err());
        // `()` (not JSON at all) still needs `?.`.
        assert!(eval(b"{oops", "msg.json.temperature").is_err());
        assert!(eval(b"{oops", "msg.json?.temperature").unwrap().is_unit());
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
    fn each_reader_of_json_gets_its_own_copy() {
        let shared = message(b"{\"t\": 4}");
        let other = shared.clone();
        let mut reads: Vec<Dynamic> = (0..3).map(|_| shared.json()).collect();
        assert!(other.0.json.get().is_some(), "kept from the second read on");
        for read in &mut reads {
            if let Some(mut map) = read.write_lock::<rhai::Map>() {
                map.insert("t".into(), Dynamic::from(5_i64));
            }
        }
        let t = other.json().as_map_ref().ok().and_then(|m| m.get("t").cloned());
        assert_eq!(t.and_then(|t| t.as_int().ok()), Some(4));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Any JSON document without null (which rules see as `()`), with integers and finite floats
        /// as Rhai holds them.
        fn json_value() -> impl Strategy<Value = serde_json::Value> {
            let leaf = prop_oneof![
                any::<bool>().prop_map(serde_json::Value::from),
                any::<i64>().prop_map(serde_json::Value::from),
                (-1e12f64..1e12).prop_map(serde_json::Value::from),
                ".{0,12}".prop_map(serde_json::Value::from),
            ];
            leaf.prop_recursive(6, 64, 8, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..8).prop_map(serde_json::Value::from),
                    prop::collection::btree_map(".{0,8}", inner, 0..8)
                        .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
                ]
            })
        }

        proptest! {
            #[test]
            fn any_bytes_decode_without_panicking(payload in prop::collection::vec(any::<u8>(), 0..256)) {
                let m = message(&payload);
                let value = m.value();
                prop_assert!(value.is_unit() || value.as_float().is_ok_and(f64::is_finite));
                let _ = m.json();
                prop_assert_eq!(m.payload(), String::from_utf8_lossy(&payload));
            }

            #[test]
            fn json_payloads_reach_rules_unchanged(value in json_value()) {
                let text = serde_json::to_vec(&value).unwrap();
                let seen = message(&text).json();
                let back: serde_json::Value = rhai::serde::from_dynamic(&seen).unwrap();
                prop_assert_eq!(back, value);
            }

            #[test]
            fn numbers_are_read_as_written(number in any::<f64>().prop_filter("finite", |n| n.is_finite())) {
                prop_assert_eq!(message(number.to_string().as_bytes()).value().as_float(), Ok(number));
                prop_assert_eq!(message(format!(" {number}\n").as_bytes()).value().as_float(), Ok(number));
            }

            #[test]
            fn parts_are_the_topic_levels(topic in "[a-z/+ ]{0,40}") {
                let m = RuleMessage::new(Message { topic: topic.as_str().into(), ..message(b"").message().clone() });
                let parts: Vec<String> = m.parts().into_iter().map(|p| p.into_string().unwrap()).collect();
                prop_assert_eq!(parts.len(), topic.matches('/').count() + 1);
                prop_assert_eq!(parts.join("/"), topic);
            }
        }
    }
}
