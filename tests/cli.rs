//! The command line as a user runs it: the real binary, a real database file.

use std::path::Path;
use std::process::Output;

use bytes::Bytes;
use homewright::event::Message;
use homewright::store::Store;

use crate::support::{Setup, count, free_port};

use crate::support::run_homewright as homewright;

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A database with three messages, made by the engine's own store.
async fn history(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("history.db");
    let store = Store::open(&path).await.unwrap();
    let messages: Vec<Message> = ["21.5", "22", "{\"t\": 4}"]
        .iter()
        .enumerate()
        .map(|(i, p)| Message {
            ts: 1_000 + i as i64,
            topic: format!("s/{i}").into(),
            payload: Bytes::from(*p),
            qos: 1,
            retain: false,
            dup: false,
        })
        .collect();
    store
        .insert_messages(&messages.iter().collect::<Vec<_>>())
        .await
        .unwrap();
    store.close().await;
    path
}

#[tokio::test]
async fn query_refuses_writes_attach_and_extensions_and_deletes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = history(dir.path()).await;
    let db_arg = db.to_str().unwrap();

    let delete = homewright(dir.path(), &["query", "--db", db_arg, "DELETE FROM messages"]);
    assert_eq!(delete.status.code(), Some(1));
    assert!(
        stderr(&delete).contains("error: the history is read-only here"),
        "{}",
        stderr(&delete)
    );
    assert_eq!(count(&db, "SELECT count(*) FROM messages").await, 3);

    let attach = homewright(
        dir.path(),
        &["query", "--db", db_arg, &format!("ATTACH '{db_arg}' AS other")],
    );
    assert_eq!(attach.status.code(), Some(1));
    assert!(
        stderr(&attach).contains("ATTACH is not allowed"),
        "{}",
        stderr(&attach)
    );

    let extension = homewright(
        dir.path(),
        &["query", "--db", db_arg, "SELECT load_extension('/tmp/x.so')"],
    );
    assert_eq!(extension.status.code(), Some(1));
    assert!(
        stderr(&extension).contains("extensions is not allowed"),
        "{}",
        stderr(&extension)
    );

    let pragma = homewright(
        dir.path(),
        &["query", "--db", db_arg, "PRAGMA journal_mode = DELETE"],
    );
    assert!(
        count(&db, "SELECT count(*) FROM messages").await == 3 && pragma.status.code() != Some(0)
            || stdout(&pragma).contains("wal")
    );
}

#[tokio::test]
async fn query_prints_table_csv_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let db = history(dir.path()).await;
    let db_arg = db.to_str().unwrap();
    let sql = "SELECT topic, payload ->> '$.t' AS t FROM messages WHERE json_valid(payload) AND json_type(payload) = 'object'";

    let table = homewright(dir.path(), &["query", "--db", db_arg, sql]);
    assert_eq!(stdout(&table), "topic | t\n------+--\ns/2   | 4\n(1 row)\n");
    let csv = homewright(
        dir.path(),
        &[
            "query",
            "--db",
            db_arg,
            "--format",
            "csv",
            "SELECT topic, payload FROM messages ORDER BY id",
        ],
    );
    assert_eq!(
        stdout(&csv),
        "topic,payload\ns/0,21.5\ns/1,22\ns/2,\"{\"\"t\"\": 4}\"\n"
    );
    let json = homewright(
        dir.path(),
        &[
            "query",
            "--db",
            db_arg,
            "--format",
            "json",
            "SELECT avg(CAST(payload AS REAL)) AS mean FROM messages WHERE topic IN ('s/0', 's/1')",
        ],
    );
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(value, serde_json::json!([{ "mean": 21.75 }]));
}

#[test]
fn check_prints_a_rule_syntax_error_as_path_line_col_and_exits_1() {
    let setup = Setup::embedded()
        .rule("bad", "on_message(\"x\", |msg| {\n    let = 5;\n});\n")
        .rule("good", "on_start(|| log(\"hi\"));\n");
    setup.write_config();
    let output = homewright(setup.dir.path(), &["check"]);
    assert_eq!(output.status.code(), Some(1));
    let out = stdout(&output);
    assert!(out.starts_with("rules/bad.rhai:2:9: "), "{out}");
    assert!(
        out.contains("2 |     let = 5;\n  |         ^"),
        "the source line and a caret: {out}"
    );
}

#[test]
fn check_reports_errors_inside_a_module_at_its_place_and_names_the_importing_rule() {
    let setup = Setup::embedded()
        .rule(
            "cellar",
            "import \"house\" as house;\non_message(\"x\", |msg| log(house::warning(\"a\")));\n",
        )
        .rule(
            "escape",
            "// reads a file outside rules/lib/\nimport \"../secrets\" as s;\n",
        )
        .rule("missing", "import \"nowhere\" as n;\n")
        .rule("suffix", "import \"house.rhai\" as h;\n")
        .rule("triggers", "import \"sneaky\" as s;\n")
        .rule("cycle", "import \"ping\" as p;\n")
        .rule("through", "import \"helper\" as h;\nh::watch();\n");
    let lib = setup.dir.path().join("rules/lib");
    std::fs::create_dir(&lib).unwrap();
    std::fs::write(
        lib.join("house.rhai"),
        "fn warning(text) {\n    `!! ${text}` +\n}\n",
    )
    .unwrap();
    std::fs::write(
        lib.join("sneaky.rhai"),
        "fn f() { 1 }\n\nevery(\"1m\", || f());\n",
    )
    .unwrap();
    std::fs::write(
        lib.join("helper.rhai"),
        "fn watch() { on_message(\"y\", |m| 1); }\n",
    )
    .unwrap();
    std::fs::write(lib.join("ping.rhai"), "import \"pong\" as pong;\n").unwrap();
    std::fs::write(lib.join("pong.rhai"), "import \"ping\" as ping;\n").unwrap();
    std::fs::write(setup.dir.path().join("secrets.rhai"), "fn key() { 42 }\n").unwrap();
    setup.write_config();
    let output = homewright(setup.dir.path(), &["check"]);
    assert_eq!(output.status.code(), Some(1));
    let out = stdout(&output);
    let line = |start: &str| {
        out.lines()
            .find(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no line starting {start}: {out}"))
            .to_string()
    };
    let syntax = line("rules/lib/house.rhai:3:1: ");
    assert!(
        syntax.ends_with("(imported by rules/cellar.rhai:1:8)"),
        "{syntax}"
    );
    assert!(
        out.contains("3 | }\n  | ^"),
        "the module's own line and caret: {out}"
    );
    let escape = line("rules/escape.rhai:2:8: ");
    assert!(escape.contains("rules/lib/ only"), "{escape}");
    let missing = line("rules/missing.rhai:1:8: ");
    assert!(
        missing.contains("cannot read rules/lib/nowhere.rhai: no such file"),
        "{missing}"
    );
    let suffix = line("rules/suffix.rhai:1:8: ");
    assert!(suffix.contains("leave out `.rhai`"), "{suffix}");
    let triggers = line("rules/lib/sneaky.rhai:3:1: ");
    assert!(
        triggers.contains("every cannot be called in a module")
            && triggers.ends_with("(imported by rules/triggers.rhai:1:8)"),
        "{triggers}"
    );
    let cycle = line("rules/lib/pong.rhai:1:8: ");
    assert!(
        cycle.contains(
            "import cycle: rules/lib/ping.rhai imports rules/lib/pong.rhai imports rules/lib/ping.rhai"
        ),
        "{cycle}"
    );
    let through = line("rules/lib/helper.rhai:1:14: ");
    assert!(
        through.contains("on_message cannot be called in a module")
            && through.ends_with("(called from rules/through.rhai:2:4)"),
        "{through}"
    );
    assert!(!out.contains("42"), "{out}");
}

#[test]
fn check_names_an_unknown_config_key_and_every_invalid_value() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("homewright.yaml"),
        "mqtt:\n  host: x\n  prot: 1883\n",
    )
    .unwrap();
    let unknown = homewright(dir.path(), &["check"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(
        stdout(&unknown).starts_with("homewright.yaml:3:3: mqtt: unknown field `prot`"),
        "{}",
        stdout(&unknown)
    );

    std::fs::write(
        dir.path().join("homewright.yaml"),
        "mqtt:\n  keep_alive: 10x\n  qos: 7\n",
    )
    .unwrap();
    let invalid = homewright(dir.path(), &["check"]);
    assert_eq!(invalid.status.code(), Some(1));
    assert_eq!(
        stdout(&invalid),
        "homewright.yaml:2:3: mqtt.keep_alive: `10x` is not a duration (write it like 500ms, 30s, 5m, 2h or 30d)\n\
         homewright.yaml:3:3: mqtt.qos: 7 is not an MQTT QoS (0, 1 or 2)\n"
    );
}

#[test]
fn the_shipped_example_config_and_rules_pass_check() {
    let output = homewright(Path::new(env!("CARGO_MANIFEST_DIR")), &["check"]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}{}",
        stdout(&output),
        stderr(&output)
    );
    assert!(
        stdout(&output).starts_with("ok: homewright.yaml and 8 rules"),
        "{}",
        stdout(&output)
    );
}

#[test]
fn run_with_the_broker_port_taken_says_which_port_and_how_to_fix_it() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let setup = Setup::new_for_port_test(port);
    setup.write_config();
    let output = homewright(setup.dir.path(), &["run"]);
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert!(
        err.contains(&format!(
            "error: cannot start the embedded broker: 127.0.0.1:{port} is already in use"
        )),
        "{err}"
    );
    assert!(err.contains("set `broker.embedded: false`"), "{err}");
}

#[test]
fn every_command_has_help() {
    let dir = tempfile::tempdir().unwrap();
    for command in ["run", "check", "query"] {
        let output = homewright(dir.path(), &[command, "--help"]);
        assert_eq!(output.status.code(), Some(0), "{command} --help");
        assert!(stdout(&output).contains("Usage: homewright"), "{command}");
    }
    let _ = free_port();
}

#[tokio::test]
async fn a_runaway_query_is_stopped_at_its_timeout_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let db = history(dir.path()).await;
    let db_arg = db.to_str().unwrap();
    let endless = "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) SELECT count(*) FROM n";
    let output = homewright(
        dir.path(),
        &["query", "--db", db_arg, "--timeout", "300ms", endless],
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("error: the query ran longer than 300ms (--timeout) and was stopped"),
        "{}",
        stderr(&output)
    );
    // A query within its time is unaffected.
    let quick = homewright(
        dir.path(),
        &[
            "query",
            "--db",
            db_arg,
            "--timeout",
            "300ms",
            "SELECT count(*) AS n FROM messages",
        ],
    );
    assert_eq!(quick.status.code(), Some(0), "{}", stderr(&quick));
}
