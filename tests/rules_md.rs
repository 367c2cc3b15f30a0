//! Every example of docs/rules.md runs, so the page cannot drift from the code: each `rhai` block is
//! saved as the file its first line names (`// rules/NAME.rhai`, or `// rules/lib/NAME.rhai` for a module
//! the examples import), `homewright check` loads them all,
//! and `homewright test` plays the page's own scenarios and one scenario per example from
//! tests/rules_md/ (real zigbee2mqtt-style payloads, restarts), where a failing rule run fails too.

use std::collections::BTreeSet;
use std::path::Path;

use crate::support::run_homewright;

/// A fenced block of the page: its language, first line number and text.
struct Block {
    lang: String,
    line: usize,
    text: String,
}

fn blocks(markdown: &str) -> Vec<Block> {
    let mut found = Vec::new();
    let mut open: Option<Block> = None;
    for (index, line) in markdown.lines().enumerate() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(lang)) => {
                open = Some(Block {
                    lang: lang.trim().to_string(),
                    line: index + 2,
                    text: String::new(),
                })
            }
            (Some(_), Some(_)) => found.extend(open.take()),
            (Some(block), None) => {
                block.text.push_str(line);
                block.text.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "docs/rules.md: a code block is not closed");
    found
}

/// The rule names a scenario file plays (`rule: NAME` or a list).
fn scenario_rules(text: &str) -> Vec<String> {
    let doc: serde_yaml::Value = serde_yaml::from_str(text).expect("scenario YAML");
    match &doc["rule"] {
        serde_yaml::Value::String(name) => vec![name.clone()],
        serde_yaml::Value::Sequence(names) => names
            .iter()
            .filter_map(|n| n.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

const CONFIG: &str = "\
mqtt:
  host: 127.0.0.1
  port: 1
database:
  path: history.db
rules:
  dir: rules
location:
  latitude: 52.37
  longitude: 4.89
  timezone: Europe/Amsterdam
gpio:
  backend: simulated
  relays:
    porch_light: { pin: 17 }
    heater: { pin: 27, interlock: [cooler] }
    cooler: { pin: 22 }
notify:
  phone: ntfy://127.0.0.1:1/house
http:
  allow: [\"192.168.1.20:8080\"]
";

#[test]
fn every_example_of_docs_rules_md_loads_and_passes_its_scenario() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let page = std::fs::read_to_string(root.join("docs/rules.md")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tests = dir.path().join("rules/tests");
    std::fs::create_dir_all(&tests).unwrap();
    std::fs::write(dir.path().join("homewright.yaml"), CONFIG).unwrap();

    let mut examples = BTreeSet::new();
    let mut texts = Vec::new();
    let mut modules = Vec::new();
    let mut scenarios = 0;
    let mut played = BTreeSet::new();
    for block in blocks(&page) {
        match block.lang.as_str() {
            "rhai" if block.text.starts_with("// rules/lib/") => {
                // A module: not a rule, played through the examples that import it.
                let name = block
                    .text
                    .lines()
                    .next()
                    .and_then(|first| first.strip_prefix("// rules/lib/"))
                    .and_then(|rest| rest.split(".rhai").next())
                    .unwrap_or_default()
                    .to_string();
                std::fs::create_dir_all(dir.path().join("rules/lib")).unwrap();
                std::fs::write(dir.path().join(format!("rules/lib/{name}.rhai")), &block.text).unwrap();
                modules.push((name, block.line));
            }
            "rhai" => {
                let name = block
                    .text
                    .lines()
                    .next()
                    .and_then(|first| first.strip_prefix("// rules/"))
                    .and_then(|rest| rest.split(".rhai").next())
                    .unwrap_or_else(|| {
                        panic!(
                            "docs/rules.md:{}: a rhai example must start with `// rules/NAME.rhai`",
                            block.line
                        )
                    })
                    .to_string();
                assert!(
                    examples.insert(name.clone()),
                    "docs/rules.md:{}: a second example named {name}",
                    block.line
                );
                std::fs::write(dir.path().join(format!("rules/{name}.rhai")), &block.text).unwrap();
                texts.push(block.text.clone());
            }
            "yaml" if block.text.contains("\nsteps:") => {
                scenarios += 1;
                played.extend(scenario_rules(&block.text));
                std::fs::write(tests.join(format!("page_{}.yaml", block.line)), &block.text).unwrap();
            }
            _ => {}
        }
    }
    assert!(examples.len() >= 19, "{examples:?}");
    for (module, line) in &modules {
        assert!(
            texts
                .iter()
                .any(|text| text.contains(&format!("import \"{module}\""))),
            "docs/rules.md:{line}: no example imports the module {module}, so no scenario plays it"
        );
    }
    for entry in std::fs::read_dir(root.join("tests/rules_md")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        scenarios += 1;
        played.extend(scenario_rules(&text));
        std::fs::copy(&path, tests.join(path.file_name().unwrap())).unwrap();
    }
    let unplayed: Vec<&String> = examples.difference(&played).collect();
    assert!(
        unplayed.is_empty(),
        "examples of docs/rules.md without a scenario in tests/rules_md/: {unplayed:?}"
    );
    let stale: Vec<&String> = played.difference(&examples).collect();
    assert!(
        stale.is_empty(),
        "scenarios for examples docs/rules.md no longer has: {stale:?}"
    );

    let check = run_homewright(dir.path(), &["check", "-c", "homewright.yaml"]);
    let out = String::from_utf8_lossy(&check.stdout);
    assert_eq!(check.status.code(), Some(0), "{out}");
    assert!(out.contains(&format!("and {} rules", examples.len())), "{out}");

    let test = run_homewright(dir.path(), &["test", "-c", "homewright.yaml"]);
    let out = String::from_utf8_lossy(&test.stdout);
    assert_eq!(
        test.status.code(),
        Some(0),
        "{out}{}",
        String::from_utf8_lossy(&test.stderr)
    );
    assert_eq!(
        out.matches("\nok ").count() + usize::from(out.starts_with("ok ")),
        scenarios,
        "{out}"
    );
}
