//! JSON payloads straight into Rhai values, for `msg.json`.
//!
//! rhai's own `Deserialize for Dynamic` hands every map and array it has built to `From<BTreeMap>` or
//! `From<Vec>`, which collect them into a new map or array, element by element: a third of parsing a
//! sensor's `{"temperature":21.5}` went into building its map twice (callgrind, `cargo bench --bench
//! engine -- dispatch`). The values are the same as rhai's: integers that fit in an `i64` as INT, other
//! numbers as FLOAT, `null` as `()`.

use std::fmt;

use rhai::{Array, Dynamic, FLOAT, INT, Map};
use serde::Deserializer;
use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};

/// The value of the JSON document `bytes`, or `None` when it is not JSON.
pub(super) fn parse(bytes: &[u8]) -> Option<Dynamic> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = Value.deserialize(&mut deserializer).ok()?;
    deserializer.end().ok()?;
    Some(value)
}

/// One JSON value.
struct Value;

impl<'de> DeserializeSeed<'de> for Value {
    type Value = Dynamic;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Dynamic, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Value {
    type Value = Dynamic;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Dynamic, E> {
        Ok(Dynamic::from_bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Dynamic, E> {
        Ok(Dynamic::from_int(v as INT))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Dynamic, E> {
        Ok(INT::try_from(v).map_or_else(|_| Dynamic::from_float(v as FLOAT), Dynamic::from_int))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Dynamic, E> {
        Ok(Dynamic::from_float(v as FLOAT))
    }

    fn visit_str<E>(self, v: &str) -> Result<Dynamic, E> {
        Ok(v.into())
    }

    fn visit_string<E>(self, v: String) -> Result<Dynamic, E> {
        Ok(v.into())
    }

    fn visit_unit<E>(self) -> Result<Dynamic, E> {
        Ok(Dynamic::UNIT)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Dynamic, A::Error> {
        let mut array = Array::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(element) = seq.next_element_seed(Value)? {
            array.push(element);
        }
        Ok(Dynamic::from_array(array))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<Dynamic, A::Error> {
        let mut map = Map::new();
        while let Some(key) = entries.next_key_seed(Key)? {
            let value = entries.next_value_seed(Value)?;
            map.insert(key.into(), value);
        }
        Ok(Dynamic::from_map(map))
    }
}

/// A key of a JSON object: borrowed from the payload when it has no escapes, so the only copy is
/// the map's own (short keys live inline in it).
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = std::borrow::Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = std::borrow::Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(std::borrow::Cow::Borrowed(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(std::borrow::Cow::Owned(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(std::borrow::Cow::Owned(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same values as rhai's own deserializer gives, which the rules were written against.
    #[test]
    fn values_match_rhai_s_own_deserializer() {
        for document in [
            r#"{"temperature":21.5,"n":7,"on":true,"name":"k\u00fcche","none":null}"#,
            r#"[1, -2, 18446744073709551615, 1e300, [], {}, {"a\"b": [{"c": "d"}]}]"#,
            r#""text""#,
            "42",
        ] {
            let ours = parse(document.as_bytes()).map(|v| format!("{v:?}"));
            let rhai = serde_json::from_str::<Dynamic>(document)
                .ok()
                .map(|v| format!("{v:?}"));
            assert_eq!(ours, rhai, "{document}");
        }
        assert!(parse(b"{oops").is_none());
        assert!(parse(b"{} trailing").is_none());
    }
}
