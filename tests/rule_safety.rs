//! A broken or hostile rule is stopped with its position, and nothing else stops.

use std::path::Path;
use std::time::Duration;

use homewright::rules::{Limits, RuleSet};
use homewright::store::SqlValue;
use rumqttc::QoS;

use crate::support::{Client, Engine, Setup, eventually, query};

const WAIT: Duration = Duration::from_secs(15);

async fn errors_of(db: &Path, rule: &str) -> Vec<String> {
    let runs = query(
        db,
        &format!("SELECT error FROM rule_runs WHERE rule = '{rule}' ORDER BY id"),
    )
    .await;
    runs.rows
        .iter()
        .filter_map(|r| match &r[0] {
            SqlValue::Text(t) => Some(t.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runaway_loop_is_stopped_with_its_position_and_the_next_message_still_runs_every_rule() {
    let setup = Setup::embedded()
        .rule("a_runaway", "on_message(\"t/#\", |msg| {\n    loop {}\n});\n")
        .rule(
            "b_echo",
            r#"on_message("t/#", |msg| publish(`echo/${msg.parts[1]}`, msg.payload));"#,
        );
    let engine = Engine::start(setup).await;
    let client = Client::connect(engine.setup.port, "runaway").await;
    client.subscribe("echo/#").await;

    client.publish("t/1", "one", QoS::AtLeastOnce, false).await;
    client.publish("t/2", "two", QoS::AtLeastOnce, false).await;
    assert_eq!(&client.next_on("echo/1", WAIT).await.payload[..], b"one");
    assert_eq!(&client.next_on("echo/2", WAIT).await.payload[..], b"two");

    let db = engine.setup.db_path();
    let errors = eventually("both runaway runs traced", WAIT, || async {
        let errors = errors_of(&db, "a_runaway").await;
        (errors.len() == 2).then_some(errors)
    })
    .await;
    for error in errors {
        // Rhai reports limits at the call site, so the position is the trigger's registration.
        assert!(
            error.ends_with("rules/a_runaway.rhai:1:1: stopped: the run took more operations than rules.max_operations allows (in the on_message trigger registered here)"),
            "{error}"
        );
    }
    engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_run_is_stopped_at_the_wall_clock_deadline() {
    let mut setup = Setup::embedded().rule(
        "slow",
        "on_message(\"slow\", |msg| {\n  let i = 0;\n  while true { i += 1; }\n});\n",
    );
    setup.rules_options = "  max_operations: 100000000000\n  timeout: 300ms\n".into();
    let engine = Engine::start(setup).await;
    let client = Client::connect(engine.setup.port, "slow").await;
    client.publish("slow", "", QoS::AtLeastOnce, false).await;
    let db = engine.setup.db_path();
    let errors = eventually("the slow run traced", WAIT, || async {
        let errors = errors_of(&db, "slow").await;
        (!errors.is_empty()).then_some(errors)
    })
    .await;
    assert!(
        errors[0].contains("rules/slow.rhai:1:1:")
            && errors[0].contains("stopped: the run took longer than 300ms (rules.timeout)"),
        "{}",
        errors[0]
    );
    engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_that_does_not_compile_is_skipped_and_the_others_run() {
    let setup = Setup::embedded()
        .rule("broken", "on_message(\"x\", |msg| {\n  let = 1;\n});\n")
        .rule("fine", r#"on_message("x", |msg| publish("fine/out", "ok"));"#);
    let engine = Engine::start(setup).await;
    let client = Client::connect(engine.setup.port, "compile").await;
    client.subscribe("fine/out").await;
    client.publish("x", "", QoS::AtLeastOnce, false).await;
    assert_eq!(&client.next_on("fine/out", WAIT).await.payload[..], b"ok");
    engine.stop().await;
}

fn load(source: &str) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hostile.rhai");
    std::fs::write(&path, source).unwrap();
    std::fs::write(dir.path().join("secret.rhai"), "fn x() { 1 }").unwrap();
    let limits = Limits {
        max_operations: 100_000,
        timeout: Duration::from_secs(1),
        max_string_size: 1 << 20,
        ..Limits::default()
    };
    let mut rules = RuleSet::new(
        limits,
        None,
        Default::default(),
        Default::default(),
        Default::default(),
    );
    rules.load_file(&path).map_err(|d| d.to_string())
}

#[test]
fn rules_cannot_import_files_call_eval_recurse_or_allocate_without_bound() {
    let import = load("import \"secret\" as s;\n").unwrap_err();
    assert!(
        import.contains("hostile.rhai:1:8:") && import.contains("lib/secret.rhai: no such file"),
        "imports come from rules/lib/ only, never the file beside the rule: {import}"
    );
    let eval = load("let x = 1;\neval(\"x\");\n").unwrap_err();
    assert!(
        eval.contains("hostile.rhai:2:1:") && eval.contains("eval"),
        "{eval}"
    );
    let recursion = load("fn f(n) { f(n + 1) }\nf(0);\n").unwrap_err();
    assert!(
        recursion.contains("hostile.rhai:2:1:") && recursion.to_lowercase().contains("stack overflow"),
        "{recursion}"
    );
    let string = load("let s = \"x\";\nloop { s += s; }\n").unwrap_err();
    assert!(
        string.contains("hostile.rhai:2:") && string.contains("Length of string too large"),
        "{string}"
    );
    let array = load("let a = [];\nloop { a.push(1); }\n").unwrap_err();
    assert!(
        array.contains("hostile.rhai:2:") && (array.contains("Size of array") || array.contains("stopped")),
        "{array}"
    );
}

#[test]
fn triggers_check_their_filter_and_actions_need_a_trigger() {
    let filter = load("on_message(\"a/#/b\", |m| {});\n").unwrap_err();
    assert!(
        filter.ends_with("hostile.rhai:1:1: `a/#/b` is not a valid MQTT topic filter"),
        "{filter}"
    );
    let top_level_publish = load("publish(\"a\", \"b\");\n").unwrap_err();
    assert!(
        top_level_publish.contains("can only be taken inside a trigger"),
        "{top_level_publish}"
    );
    let bad_topic = load("on_start(|| {});\nlet x = 1;\n");
    assert!(bad_topic.is_ok());
}

/// Runs one message through rules loaded from `files` (no broker) and returns each rule's error and
/// the topics published.
fn run_once(files: &[(&str, &str)]) -> (Vec<(String, Option<String>)>, Vec<String>) {
    use homewright::event::{Action, Event, Message, Output};
    let dir = tempfile::tempdir().unwrap();
    for (name, source) in files {
        std::fs::write(dir.path().join(format!("{name}.rhai")), source).unwrap();
    }
    let limits = Limits {
        max_operations: 1_000_000_000,
        timeout: Duration::from_secs(10),
        max_string_size: 1 << 20,
        ..Limits::default()
    };
    let mut rules = RuleSet::new(
        limits,
        None,
        Default::default(),
        Default::default(),
        Default::default(),
    );
    let problems = rules.load_dir(dir.path()).unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    let message = Message {
        ts: 0,
        topic: "t".into(),
        payload: bytes::Bytes::from_static(b"1"),
        qos: 1,
        retain: false,
        dup: false,
    };
    let mut runs = Vec::new();
    let mut published = Vec::new();
    for output in rules.handle(&Event::Message(message)) {
        match output {
            Output::Run(run) => runs.push((run.rule.to_string(), run.error)),
            Output::Action {
                action: Action::Publish { topic, .. },
                ..
            } => published.push(topic),
            _ => {}
        }
    }
    (runs, published)
}

#[test]
fn a_trigger_that_recurses_or_hoards_a_huge_map_is_stopped_with_its_position_and_others_run() {
    let (runs, published) = run_once(&[
        (
            "deep",
            "fn down(n) { down(n + 1) }\non_message(\"t\", |msg| {\n  down(0);\n});\n",
        ),
        (
            "hoard",
            // Nesting doubles the map's counted size every round: the limit is met in a few steps (a flat
            // map of 100,000 string keys takes long in a debug build, where Rhai re-counts every insert).
            "on_message(\"t\", |msg| {\n  let m = #{ x: 1 };\n  loop { m = #{ a: m, b: m }; }\n});\n",
        ),
        (
            "zfine",
            "on_message(\"t\", |msg| publish(\"ok\", msg.payload));\n",
        ),
    ]);
    let error = |rule: &str| {
        runs.iter()
            .find(|(name, _)| name == rule)
            .and_then(|(_, e)| e.clone())
            .unwrap_or_else(|| panic!("{rule} did not fail: {runs:?}"))
    };
    let deep = error("deep");
    eprintln!("recursion in a trigger: {deep}");
    assert!(
        deep.contains("deep.rhai:") && deep.to_lowercase().contains("stack overflow"),
        "{deep}"
    );
    let hoard = error("hoard");
    eprintln!("huge map in a trigger: {hoard}");
    assert!(
        // Rhai's map size limit or the run's memory limit, whichever the map meets first.
        hoard.contains("hoard.rhai:")
            && (hoard.contains("Size of object map") || hoard.contains("rules.max_run_memory")),
        "{hoard}"
    );
    assert_eq!(published, ["ok"], "the other rule still ran");
}

#[test]
fn rules_have_no_way_to_reach_files_sockets_or_programs() {
    for (call, name) in [
        ("open_file(\"/etc/passwd\")", "open_file"),
        ("read_file(\"/etc/passwd\")", "read_file"),
        ("system(\"ls\")", "system"),
        ("exec(\"ls\")", "exec"),
    ] {
        let (runs, _) = run_once(&[("probe", &format!("on_message(\"t\", |msg| {{\n  {call};\n}});\n"))]);
        let error = runs[0].1.clone().unwrap_or_default();
        assert!(
            error.contains("probe.rhai:2:3:") && error.contains("Function not found") && error.contains(name),
            "{error}"
        );
    }
}
