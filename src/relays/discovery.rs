//! Home Assistant's MQTT discovery (`homeassistant.discovery`): each relay announced as a switch, with
//! its command, state and availability topics, so it appears there without configuration.
//!
//! Checked against Home Assistant's discovery schema: the node id in the topic and `unique_id` hold only
//! `[a-zA-Z0-9_-]` whatever `base_topic` holds (`house/engine` gives `house_engine`);
//! `default_entity_id` (`switch.<slug>`) replaced `object_id`, which Home Assistant no longer accepts;
//! `origin` and the device's `sw_version` say which program and version announced it.

use bytes::Bytes;

/// Home Assistant's MQTT discovery config for a relay: its topic and payload.
pub fn config(base: &str, name: &str) -> (String, Bytes) {
    let node = node_id(base);
    let version = env!("CARGO_PKG_VERSION");
    let config = serde_json::json!({
        "name": name,
        "unique_id": format!("{node}_{name}"),
        "default_entity_id": format!("switch.{}", entity_slug(&format!("{node}_{name}"))),
        "command_topic": format!("{base}/relay/{name}/set"),
        "state_topic": format!("{base}/relay/{name}"),
        "payload_on": "ON",
        "payload_off": "OFF",
        "availability_topic": format!("{base}/status"),
        "payload_available": "online",
        "payload_not_available": "offline",
        "device": {
            "identifiers": [node],
            "name": base,
            "manufacturer": "homewright",
            "sw_version": version,
        },
        "origin": { "name": "homewright", "sw_version": version },
    });
    (topic(base, name), Bytes::from(config.to_string()))
}

/// Home Assistant's discovery topic of relay `name`.
pub fn topic(base_topic: &str, name: &str) -> String {
    format!("homeassistant/switch/{}/{name}/config", node_id(base_topic))
}

/// `base_topic` as a discovery node id: characters outside `[a-zA-Z0-9_-]` become `_`.
fn node_id(base_topic: &str) -> String {
    base_topic
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// An entity id's object part: lower-case letters, digits and single `_`, none at either end.
fn entity_slug(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    words.join("_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_and_entity_slugs_hold_only_what_home_assistant_accepts() {
        assert_eq!(node_id("house/engine"), "house_engine");
        assert_eq!(node_id("homewright"), "homewright");
        assert_eq!(node_id("a b+c#-d_e"), "a_b_c_-d_e");
        assert_eq!(entity_slug("house_engine_Fan-2"), "house_engine_fan_2");
        assert_eq!(entity_slug("_x__y_"), "x_y");
    }
}
