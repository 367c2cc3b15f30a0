//! Every query of docs/sql.md, taken from the Markdown itself, run with `homewright query` against a
//! history the rules wrote: a query the docs show cannot drift from the schema unnoticed.

use std::path::Path;
use std::time::Duration;

use homewright::config::gpio::GpioConfig;
use homewright::event::now_millis;
use homewright::rules::Limits;
use homewright::scheduler::{Location, Zone};
use homewright::sim::{Options, RuleSource, Simulation};

use crate::support::run_homewright as homewright;

const MINUTE: i64 = 60_000;

/// The ```sql blocks of a Markdown text, in order (SQLite's; PostgreSQL's are ```postgresql).
fn sql_blocks(markdown: &str) -> Vec<String> {
    fenced_blocks(markdown, "sql")
}

/// The blocks fenced as ```LANG of a Markdown text, in order.
pub fn fenced_blocks(markdown: &str, lang: &str) -> Vec<String> {
    let fence = format!("```{lang}");
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match (&mut current, line.trim_end()) {
            (None, open) if open == fence => current = Some(String::new()),
            (Some(_), "```") => blocks.extend(current.take()),
            (Some(block), text) => {
                block.push_str(text);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

/// Two hours of a house: a plain-number greenhouse sensor, JSON room sensors, a heater's state topic,
/// and rules that publish under home/, save to the store, switch the heater and sometimes fail.
fn house(dir: &Path) -> std::path::PathBuf {
    let rules = dir.join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::write(
        rules.join("climate.rhai"),
        r#"on_message("home/+/temperature", |msg| {
    let t = msg.json.temperature;
    if t > 22 {
        publish(`home/${msg.parts[1]}/alert`, `${t}`);
        store_set(`warm_${msg.parts[1]}`, t);
        relay("heater").off();
    } else {
        relay("heater").on();
    }
});
on_message("greenhouse/temperature", |msg| {
    if msg.payload == "sensor offline" { throw "the greenhouse sensor is offline"; }
});
"#,
    )
    .unwrap();
    let gpio: GpioConfig = {
        let config = dir.join("gpio.yaml");
        std::fs::write(
            &config,
            "gpio:\n  backend: simulated\n  relays:\n    heater: { pin: 27 }\n",
        )
        .unwrap();
        homewright::config::load(&config).unwrap().gpio
    };
    let db = dir.join("history.db");
    let start = now_millis() - 3 * 60 * MINUTE;
    let mut sim = Simulation::start_with(
        &db,
        RuleSource::Dir(&rules),
        Options {
            location: Location {
                timezone: Zone::named("Europe/Amsterdam").unwrap(),
                coordinates: Some((52.37, 4.89)),
            },
            limits: Limits {
                max_operations: 1_000_000,
                timeout: Duration::from_secs(1),
                max_string_size: 1 << 22,
                ..Limits::default()
            },
            gpio,
            ..Default::default()
        },
        start,
    )
    .unwrap();
    assert!(sim.problems.is_empty(), "{:?}", sim.problems);
    for i in 0..120 {
        let at = start + i * MINUTE;
        sim.advance_to(at).unwrap();
        let greenhouse = if i % 40 == 39 {
            "sensor offline".to_string()
        } else {
            format!("{}", 18 + i % 9)
        };
        sim.publish("greenhouse/temperature", greenhouse).unwrap();
        for (room, base) in [("living", 20.0), ("kitchen", 21.0)] {
            let t = base + (i % 5) as f64 * 0.5;
            sim.publish(
                &format!("home/{room}/temperature"),
                format!(r#"{{"temperature": {t}, "humidity": 40, "battery": 90, "linkquality": 120}}"#),
            )
            .unwrap();
        }
        let heater = if sim.relay_is_on("heater") == Some(true) {
            "ON"
        } else {
            "OFF"
        };
        sim.publish("homewright/relay/heater", heater).unwrap();
    }
    sim.stop();
    db
}

#[test]
fn every_query_of_the_sql_docs_runs_against_a_real_history() {
    let docs = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/sql.md")).unwrap();
    let queries = sql_blocks(&docs);
    assert!(
        queries.len() >= 10,
        "found only {} queries in docs/sql.md",
        queries.len()
    );
    let dir = tempfile::tempdir().unwrap();
    let db = house(dir.path());
    let db = db.to_str().unwrap();
    let mut empty = Vec::new();
    for sql in &queries {
        let output = homewright(dir.path(), &["query", "--db", db, sql]);
        let out = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "docs/sql.md query failed:\n{sql}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        if out.trim_end().ends_with("(0 rows)") {
            empty.push(sql.clone());
        }
    }
    // Only "last night" may find nothing: the history holds the last three hours.
    assert!(
        empty.iter().all(|sql| sql.contains("18:00")),
        "queries of docs/sql.md that found nothing in a history made for them:\n{}",
        empty.join("\n")
    );
}

#[test]
fn the_markdown_reader_finds_sql_blocks_only() {
    let text = "x\n```sql\nSELECT 1;\n```\n```sh\nls\n```\n```sql\nSELECT 2\nFROM t;\n```\n";
    assert_eq!(sql_blocks(text), ["SELECT 1;\n", "SELECT 2\nFROM t;\n"]);
}
