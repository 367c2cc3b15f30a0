//! How big a rule's value is where it leaves the script: a stored value, a timer's captured variables,
//! the variables a rule keeps between runs. Rhai's own limits count strings, arrays and map values but
//! not map keys, so a map of a hundred 3 MB keys passed them all; here every byte counts.

use std::io::Write;

use rhai::Dynamic;

use super::api::RuleMessage;

/// What a value costs beyond its text and elements: the size of a `Dynamic`, roughly.
const SLOT: usize = 16;
/// Nesting followed at most; a deeper value is counted as its cut-off parts, which only undercounts
/// what is anyway refused long before (Rhai's expression depth stops such values being built).
const MAX_DEPTH: usize = 64;

/// The bytes `value` holds in memory, counting map keys and a message's topic and payload; counting
/// stops once past `limit` (the answer is then some number above it), so a huge value costs no more
/// to measure than a value at the limit.
pub fn held_bytes(value: &Dynamic, limit: usize) -> usize {
    let mut total = 0;
    add(value, limit, 0, &mut total);
    total
}

/// The total of [`held_bytes`] over `values`, stopping past `limit`.
pub fn held_bytes_all(values: &[Dynamic], limit: usize) -> usize {
    let mut total = 0;
    for value in values {
        add(value, limit, 0, &mut total);
        if total > limit {
            break;
        }
    }
    total
}

fn add(value: &Dynamic, limit: usize, depth: usize, total: &mut usize) {
    *total = total.saturating_add(SLOT);
    if *total > limit || depth > MAX_DEPTH {
        return;
    }
    // A captured variable is read through its lock; one locked now is being changed by the caller,
    // which measures it again when done.
    if value.is_shared() && value.is_locked() {
        return;
    }
    if let Ok(text) = value.as_immutable_string_ref() {
        *total = total.saturating_add(text.len());
    } else if let Ok(array) = value.as_array_ref() {
        for element in array.iter() {
            add(element, limit, depth + 1, total);
            if *total > limit {
                return;
            }
        }
    } else if let Ok(map) = value.as_map_ref() {
        for (key, element) in map.iter() {
            *total = total.saturating_add(key.len());
            add(element, limit, depth + 1, total);
            if *total > limit {
                return;
            }
        }
    } else if value.is_blob() {
        if let Some(blob) = value.read_lock::<rhai::Blob>() {
            *total = total.saturating_add(blob.len());
        }
    } else if let Some(message) = value.read_lock::<RuleMessage>() {
        let message = message.message();
        *total = total.saturating_add(message.topic.len() + message.payload.len());
    }
}

/// `value` as JSON, or `Err(n)` with `n > limit` when its JSON is longer than `limit` bytes: the
/// encoding stops there, so an oversized value never costs more than the limit to refuse.
pub fn json_within(value: &Dynamic, limit: usize) -> Result<String, JsonProblem> {
    let mut out = Bounded {
        bytes: Vec::new(),
        limit,
    };
    match serde_json::to_writer(&mut out, value) {
        Ok(()) => String::from_utf8(out.bytes).map_err(|e| JsonProblem::Invalid(e.to_string())),
        Err(e) if e.is_io() => Err(JsonProblem::TooLarge),
        Err(e) => Err(JsonProblem::Invalid(e.to_string())),
    }
}

/// Why a value has no JSON within its limit.
#[derive(Debug, PartialEq, Eq)]
pub enum JsonProblem {
    /// Longer than the limit.
    TooLarge,
    /// Not representable as JSON, with serde's reason.
    Invalid(String),
}

struct Bounded {
    bytes: Vec<u8>,
    limit: usize,
}

impl Write for Bounded {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len() + data.len() > self.limit {
            return Err(std::io::Error::other("over the limit"));
        }
        self.bytes.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A size for people: `1 MiB`, `300 KiB`, `512 B`.
pub fn human(bytes: usize) -> String {
    const MIB: usize = 1 << 20;
    const KIB: usize = 1 << 10;
    if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else if bytes >= MIB {
        format!("{:.1} MiB", bytes as f64 / MIB as f64)
    } else if bytes >= KIB {
        format!("{} KiB", bytes / KIB)
    } else {
        format!("{bytes} B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rhai::Map;

    #[test]
    fn map_keys_count() {
        let mut map = Map::new();
        map.insert("k".repeat(3000).into(), Dynamic::from(1_i64));
        let size = held_bytes(&Dynamic::from_map(map.clone()), usize::MAX);
        assert!(size >= 3000, "{size}");
        assert_eq!(
            json_within(&Dynamic::from_map(map), 100),
            Err(JsonProblem::TooLarge)
        );
    }

    #[test]
    fn counting_stops_past_the_limit() {
        let array: rhai::Array = (0..100_000).map(|_| Dynamic::from("x".repeat(100))).collect();
        let size = held_bytes(&Dynamic::from_array(array), 10_000);
        assert!((10_000..11_000).contains(&size), "{size}");
    }

    #[test]
    fn small_values_encode() {
        let value = Dynamic::from_array(vec![Dynamic::from(1_i64), Dynamic::from("a")]);
        assert_eq!(json_within(&value, 100).as_deref(), Ok("[1,\"a\"]"));
        assert_eq!(human(1 << 20), "1 MiB");
        assert_eq!(human(16 << 20), "16 MiB");
    }
}
