//! `homewright test`: scenario files as an owner writes them, through the real binary.

use std::path::Path;

fn homewright(dir: &Path, args: &[&str]) -> (Option<i32>, String) {
    let output = crate::support::homewright_command()
        .current_dir(dir)
        .args(["--log-level", "warn"])
        .args(args)
        .output()
        .expect("run homewright");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

fn home(rule: &str, scenarios: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("homewright.yaml"),
        "location:\n  latitude: 52.37\n  longitude: 4.89\n  timezone: Europe/Amsterdam\n",
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("rules/tests")).unwrap();
    std::fs::write(dir.path().join("rules/porch.rhai"), rule).unwrap();
    for (name, text) in scenarios {
        std::fs::write(dir.path().join("rules/tests").join(name), text).unwrap();
    }
    dir
}

const PORCH: &str = r#"
on_message("porch/motion", |msg| {
    if is_dark() {
        publish("porch/light", "ON");
        let id = store_get("off");
        if id != () { cancel(id); }
        store_set("off", after("5m", || { publish("porch/light", "OFF"); store_set("off", ()); }));
    }
});
"#;

#[test]
fn a_passing_and_a_failing_scenario_each_get_one_line_and_the_failure_names_the_step_and_the_difference() {
    let pass = r#"
rule: porch
start: 2026-06-01T23:00:00+02:00
steps:
  - publish: { topic: porch/motion, payload: '{"occupancy":true}' }
  - expect_published: { topic: porch/light, payload: "ON" }
  - wait: 4m
  - publish: { topic: porch/motion, payload: '{"occupancy":true}' }
  - expect_published: { topic: porch/light, payload: "ON" }
  - expect_not_published: { topic: porch/light, within: 4m }
  - expect_published: { topic: porch/light, payload: "OFF", within: 2m }
"#;
    let fail = r#"
rule: porch
start: 2026-06-01T23:00:00+02:00
steps:
  - publish: { topic: porch/motion, payload: '{"occupancy":true}' }
  - expect_published: { topic: porch/light, payload: "OFF", within: 1m }
"#;
    let dir = home(PORCH, &[("a_pass.yaml", pass), ("b_fail.yaml", fail)]);
    let (code, out) = homewright(dir.path(), &["test"]);
    assert_eq!(code, Some(1), "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("ok    rules/tests/a_pass.yaml (7 steps"),
        "{out}"
    );
    assert_eq!(
        lines[1],
        "FAIL  rules/tests/b_fail.yaml: step 2 (expect_published): expected a publish on porch/light with payload \"OFF\" within 1m; published since the last match: porch/light \"ON\""
    );
    assert_eq!(lines[2], "      rule runs that led here:");
    assert_eq!(
        lines[3],
        "        2026-06-01T23:00:00.000+02:00  porch  on_message porch/motion: 1 action"
    );
    assert_eq!(lines.last(), Some(&"2 scenarios: 1 passed, 1 failed"));

    let (code, out) = homewright(dir.path(), &["test", "rules/tests/a_pass.yaml"]);
    assert_eq!((code, out.lines().count()), (Some(0), 2), "{out}");
}

#[test]
fn a_week_of_timers_and_sunsets_runs_on_virtual_time() {
    let rule = r#"
        at_sunset("-15m", || publish("garden", "on"));
        cron("0 30 23 * * *", || publish("garden", "off"));
        every("1h", || store_set("hours", (store_get("hours") ?? 0) + 1));
    "#;
    let week = r#"
rule: porch
start: 2026-06-01T12:00:00+02:00
steps:
  - wait: 7d
  - expect_store: { hours: 168 }
  - expect_published: { topic: garden, payload: "on" }
  - expect_published: { topic: garden, payload: "off" }
"#;
    let dir = home(rule, &[("week.yaml", week)]);
    let (code, out) = homewright(dir.path(), &["test"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.starts_with("ok    rules/tests/week.yaml (4 steps, 168.0 virtual hours)"),
        "{out}"
    );
}

#[test]
fn every_example_rule_has_a_passing_scenario() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (code, out) = homewright(root, &["test"]);
    assert_eq!(code, Some(0), "{out}");
    for rule in std::fs::read_dir(root.join("rules")).unwrap() {
        let path = rule.unwrap().path();
        if path.extension().is_some_and(|e| e == "rhai") {
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            assert!(
                out.contains(&format!("ok    rules/tests/{name}.yaml")),
                "no passing scenario for {name}: {out}"
            );
        }
    }
}
