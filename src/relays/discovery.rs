//! Home Assistant's MQTT discovery (`homeassistant.discovery`): each relay announced as a switch, with
//! its command, state and availability topics, so it appears there without configuration.

use bytes::Bytes;

/// Home Assistant's MQTT discovery config for a relay: it appears there as a switch.
pub fn config(base: &str, name: &str) -> (String, Bytes) {
    let config = serde_json::json!({
        "name": name,
        "unique_id": format!("{base}_{name}"),
        "object_id": format!("{base}_{name}"),
        "command_topic": format!("{base}/relay/{name}/set"),
        "state_topic": format!("{base}/relay/{name}"),
        "payload_on": "ON",
        "payload_off": "OFF",
        "availability_topic": format!("{base}/status"),
        "payload_available": "online",
        "payload_not_available": "offline",
        "device": { "identifiers": [base], "name": base, "manufacturer": "homewright" },
    });
    (
        format!("homeassistant/switch/{base}/{name}/config"),
        Bytes::from(config.to_string()),
    )
}
