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

/// Whether `topic` matches `filter`.
pub fn matches(topic: &str, filter: &str) -> bool {
    rumqttc::matches(topic, filter)
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
        assert!(!valid_filter("a/#/b"));
        assert!(!valid_filter(""));
        assert!(!valid_topic("a/+"));
        assert!(valid_topic("zigbee2mqtt/porch motion"));
    }
}
