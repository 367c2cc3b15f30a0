//! MQTT topic names and filters, as the spec defines them (`+` one level, `#` the rest, `$`-topics not
//! matched by leading wildcards). Thin wrappers so that only `mqtt/` knows rumqttc.

/// Whether `filter` is a valid subscription filter.
pub fn valid_filter(filter: &str) -> bool {
    !filter.is_empty() && rumqttc::valid_filter(filter)
}

/// Whether `topic` is a valid topic name to publish to (no wildcards).
pub fn valid_topic(topic: &str) -> bool {
    !topic.is_empty() && rumqttc::valid_topic(topic)
}

/// The longest topic MQTT can carry: its length is a two-byte field.
pub const MAX_TOPIC_BYTES: usize = 65_535;

/// Why a rule may not publish to `topic`, or None when it may.
///
/// Checked where the publish is made, so the rule's run fails at its line: a topic the broker refuses
/// must never reach the connection. Mosquitto closes the connection over a NUL or another control
/// character, a wildcard or a topic longer than [`MAX_TOPIC_BYTES`], and a publish that sat in the
/// outbox would then be sent again at every reconnect; a `$` topic is the broker's own (`$SYS/...`), and
/// a publish there is dropped without a word.
pub fn publish_problem(topic: &str) -> Option<String> {
    if topic.is_empty() {
        return Some("the topic is empty".into());
    }
    if topic.len() > MAX_TOPIC_BYTES {
        return Some(format!(
            "the topic is {} bytes long; MQTT allows at most {MAX_TOPIC_BYTES}",
            topic.len()
        ));
    }
    let shown = shown(topic);
    if topic.starts_with('$') {
        return Some(format!(
            "`{shown}` starts with `$`, which brokers keep for themselves ($SYS/...): a publish there is dropped"
        ));
    }
    if let Some((at, c)) = topic.char_indices().find(|(_, c)| matches!(c, '+' | '#')) {
        return Some(format!(
            "`{shown}` holds the wildcard `{c}` at byte {at}: wildcards are for subscribing, not publishing"
        ));
    }
    if let Some((at, c)) = topic.char_indices().find(|(_, c)| refused_by_brokers(*c)) {
        return Some(format!(
            "`{shown}` holds the character {:?} (U+{:04X}) at byte {at}, which brokers refuse in a topic",
            c, c as u32
        ));
    }
    None
}

/// Control characters (NUL among them) and Unicode non-characters: MQTT forbids U+0000 and asks not
/// to use the others, and Mosquitto closes the connection of a client that sends any of them.
fn refused_by_brokers(c: char) -> bool {
    let code = c as u32;
    c.is_control() || (0xFDD0..=0xFDEF).contains(&code) || code & 0xFFFE == 0xFFFE
}

/// A topic as an error message shows it: escaped, and cut short when long.
fn shown(topic: &str) -> String {
    const SHOWN: usize = 80;
    let escaped: String = topic.escape_debug().collect();
    match escaped.char_indices().nth(SHOWN) {
        Some((cut, _)) => format!("{}...", &escaped[..cut]),
        None => escaped,
    }
}

/// Whether `topic` matches `filter`, per MQTT 3.1.1 section 4.7: `+` is one whole level, `#` the rest
/// (including the parent level itself), and a topic starting with `$` is matched only by a filter that
/// does not start with a wildcard.
///
/// Written here rather than taken from rumqttc, whose `matches` panics on a topic whose first character
/// is not ASCII (it slices the first byte; a sensor named `Ölstand/...` would panic the rule thread)
/// and never matches a `$` topic, not even with the filter `$SYS/#`.
pub fn matches(topic: &str, filter: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut levels = topic.split('/');
    for wanted in filter.split('/') {
        if wanted == "#" {
            return true;
        }
        match levels.next() {
            Some(_) if wanted == "+" => {}
            Some(level) if level == wanted => {}
            _ => return false,
        }
    }
    levels.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_follow_the_spec() {
        assert!(matches("home/kitchen/temp", "home/+/temp"));
        assert!(matches("home", "home/#"));
        assert!(!matches("home/a/b/temp", "home/+/temp"));
        assert!(!matches("$SYS/broker", "#"));
        assert!(!matches("$SYS/broker", "+/broker"));
        assert!(matches("$SYS/broker", "$SYS/#"));
        assert!(matches("Ölstand/tank", "Ölstand/+"));
        assert!(matches("a//b", "a/+/b"));
        assert!(!matches("a/b", "a/b/+"));
        assert!(!valid_filter("a/#/b"));
        assert!(!valid_filter(""));
        assert!(!valid_topic("a/+"));
        assert!(valid_topic("zigbee2mqtt/porch motion"));
    }

    /// rumqttc's `matches()` slices the topic's first byte as a string and panics when it starts with a
    /// letter outside ASCII; this matcher must never, whatever a device names its topic.
    #[test]
    fn topics_in_any_language_are_matched_without_panicking() {
        for topic in ["Ölstand/tank", "ÿ/x", "Žlutý kůň/teplota", "😀", "温度/客厅", "é"] {
            for filter in ["#", "+/#", "+", "+/+", "Ölstand/#", "ÿ/x", "a/b"] {
                let _ = matches(topic, filter);
            }
            assert!(matches(topic, "#"), "{topic}");
        }
        assert!(matches("ÿ/x", "+/x"));
        assert!(matches("Žlutý kůň/teplota", "Žlutý kůň/+"));
        assert!(!matches("Ölstand/tank", "Olstand/tank"));
        assert!(matches("$Ölstand", "$Ölstand") && !matches("$Ölstand", "#"));
    }

    #[test]
    fn topics_a_broker_refuses_are_named_with_the_reason() {
        assert_eq!(publish_problem("zigbee2mqtt/Ölstand"), None);
        assert_eq!(publish_problem(&"a".repeat(MAX_TOPIC_BYTES)), None);
        let problem = |t: &str| publish_problem(t).unwrap_or_default();
        assert!(problem("").contains("empty"));
        assert!(problem(&"a".repeat(MAX_TOPIC_BYTES + 1)).contains("65536 bytes"));
        assert!(problem("$SYS/x").contains("starts with `$`"));
        assert!(problem("a/+/b").contains("wildcard `+` at byte 2"));
        assert!(problem("a/#").contains("wildcard `#`"));
        let nul = problem("p2/a\0b");
        assert!(
            nul.contains("U+0000") && nul.contains("byte 4") && nul.contains("p2/a\\0b"),
            "{nul}"
        );
        assert!(problem("a\u{1}").contains("U+0001"));
        assert!(problem("a\u{ffff}").contains("U+FFFF"));
        let long = problem(&format!("{}\0", "x".repeat(200)));
        assert!(long.len() < 250, "the topic is cut short: {long}");
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        // A small alphabet, so that random topics and filters often share levels.
        fn topic() -> impl Strategy<Value = String> {
            prop::collection::vec("(a|b|\\$s|)", 1..5).prop_map(|levels| levels.join("/"))
        }

        fn filter() -> impl Strategy<Value = String> {
            (prop::collection::vec("(a|b|\\+|\\$s|)", 1..5), any::<bool>()).prop_map(|(mut levels, hash)| {
                if hash {
                    levels.push("#".into());
                }
                levels.join("/")
            })
        }

        proptest! {
            /// Checked against rumqttc's independent implementation, where that one is right (it
            /// panics on a non-ASCII first character and never matches `$` topics).
            #[test]
            fn matching_agrees_with_rumqttc_on_ordinary_topics(topic in topic(), filter in filter()) {
                prop_assume!(valid_topic(&topic) && valid_filter(&filter) && !topic.starts_with('$'));
                prop_assert_eq!(matches(&topic, &filter), rumqttc::matches(&topic, &filter), "{} vs {}", topic, filter);
            }

            #[test]
            fn dollar_topics_are_matched_only_by_filters_naming_them(topic in topic(), filter in filter()) {
                prop_assume!(valid_topic(&topic) && valid_filter(&filter) && topic.starts_with('$'));
                if filter.starts_with('+') || filter.starts_with('#') {
                    prop_assert!(!matches(&topic, &filter));
                }
                prop_assert!(matches(&topic, &topic));
                let below = format!("{}/#", topic);
                prop_assert!(matches(&topic, &below));
            }

            #[test]
            fn a_topic_matches_itself_and_wildcards_over_it(levels in prop::collection::vec("[a-z0-9 ]{1,6}", 1..6), at in any::<prop::sample::Index>()) {
                let topic = levels.join("/");
                prop_assert!(valid_topic(&topic) && valid_filter(&topic));
                prop_assert!(matches(&topic, &topic));
                prop_assert!(matches(&topic, "#"));
                let i = at.index(levels.len());
                let mut plus = levels.clone();
                plus[i] = "+".into();
                prop_assert!(matches(&topic, &plus.join("/")));
                let mut hash = levels[..i].to_vec();
                hash.push("#".into());
                prop_assert!(matches(&topic, &hash.join("/")));
                let mut other = levels.clone();
                other[i].push('x');
                prop_assert!(!matches(&topic, &other.join("/")));
            }

            #[test]
            fn arbitrary_text_never_panics(text in ".{0,30}") {
                let _ = (valid_topic(&text), valid_filter(&text), matches(&text, &text), matches("a/b", &text));
            }
        }
    }
}
