//! Large rule files for the loading tests and benchmark: a house's worth of triggers repeated with
//! fresh topics (on_message, on_change, every, on_message reading JSON), about 115 bytes each.

use std::fmt::Write;

/// The text of a rule file of at least `bytes` bytes, and its number of triggers.
pub fn big_rule_file(bytes: usize) -> (String, usize) {
    let mut text = String::with_capacity(bytes + 200);
    let mut n = 0;
    while text.len() < bytes {
        let _ = match n % 4 {
            0 => writeln!(
                text,
                r#"on_message("house/room{n}/temperature", |msg| {{ if msg.value > 21.5 {{ publish("house/room{n}/heater/set", "off"); }} }});"#
            ),
            1 => writeln!(
                text,
                r#"on_change("house/door{n}/contact", |old, value| {{ if value.payload == "open" {{ log("door {n} opened"); }} }});"#
            ),
            2 => writeln!(
                text,
                r#"every("{}m", || {{ let v = store_get("counter/{n}") ?? 0; store_set("counter/{n}", v + 1); }});"#,
                n % 600 + 1
            ),
            _ => writeln!(
                text,
                r#"on_message("house/motion{n}/occupancy", |msg| {{ if msg.json.occupancy == true {{ publish("house/light{n}/set", "on"); }} }});"#
            ),
        };
        n += 1;
    }
    (text, n)
}
