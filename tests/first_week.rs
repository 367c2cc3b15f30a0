//! An owner's first week with the command line: local time in queries, quiet pipes, one-line errors
//! with their hint, `why` over many runs, `replay` formats and times, config problems all at once,
//! `init`'s own words, and the README's tour commands.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use homewright::event::{Message, now_millis};
use homewright::rules::Limits;
use homewright::scheduler::{Location, Zone};
use homewright::sim::Simulation;
use homewright::store::Store;

use crate::support::{homewright_command, run_homewright as homewright};

const MINUTE: i64 = 60_000;

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn message(ts: i64, topic: &str, payload: &str) -> Message {
    Message {
        ts,
        topic: topic.into(),
        payload: Bytes::from(payload.to_string()),
        qos: 1,
        retain: false,
        dup: false,
    }
}

/// A history holding `messages`, written by the engine's own store.
async fn history(path: &Path, messages: &[Message]) {
    let store = Store::open(path).await.unwrap();
    store
        .insert_messages(&messages.iter().collect::<Vec<_>>())
        .await
        .unwrap();
    store.close().await;
}

fn amsterdam_config(dir: &Path, extra: &str) -> PathBuf {
    let path = dir.join("homewright.yaml");
    std::fs::create_dir_all(dir.join("rules")).unwrap();
    std::fs::write(
        &path,
        format!("location:\n  timezone: Europe/Amsterdam\ndatabase:\n  path: history.db\nrules:\n  dir: rules\n{extra}"),
    )
    .unwrap();
    path
}

fn limits() -> Limits {
    Limits {
        max_operations: 1_000_000,
        timeout: Duration::from_secs(1),
        max_string_size: 1 << 22,
        ..Limits::default()
    }
}

#[tokio::test]
async fn query_local_time_is_the_configured_zone_on_a_utc_machine() {
    let dir = tempfile::tempdir().unwrap();
    amsterdam_config(dir.path(), "");
    history(&dir.path().join("history.db"), &[]).await;
    let output = homewright_command()
        .current_dir(dir.path())
        .env("TZ", "UTC")
        .args([
            "query",
            "--format",
            "csv",
            "SELECT datetime(0, 'unixepoch', 'localtime') AS epoch, date('now', 'localtime') AS today",
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let zone = Zone::named("Europe/Amsterdam").unwrap();
    let today = chrono::TimeZone::timestamp_millis_opt(&zone, now_millis())
        .unwrap()
        .format("%Y-%m-%d")
        .to_string();
    assert_eq!(
        stdout(&output),
        format!("epoch,today\n1970-01-01 01:00:00,{today}\n"),
        "'localtime' is Amsterdam's, not the machine's UTC"
    );
}

#[tokio::test]
async fn query_into_a_closed_pipe_stops_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("history.db");
    history(&db, &[]).await;
    let mut child = homewright_command()
        .args([
            "query",
            "--db",
            db.to_str().unwrap(),
            "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 200000) SELECT x FROM n",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // `| head -2`: read two lines, then close the pipe.
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "x");
    drop(lines);
    let output = child.wait_with_output().unwrap();
    assert_eq!(stderr(&output), "", "nothing said about the closed pipe");
    assert_eq!(output.status.code(), Some(0));
}

#[tokio::test]
async fn a_slow_query_prints_no_sqlx_warning() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("history.db");
    history(&db, &[]).await;
    let started = Instant::now();
    let output = homewright_command()
        .args([
            "query",
            "--db",
            db.to_str().unwrap(),
            "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 4000000) SELECT count(*) AS n FROM n",
        ])
        .output()
        .unwrap();
    let took = started.elapsed();
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("4000000"), "{}", stdout(&output));
    // sqlx warns about statements over a second: the query must take that long to prove anything.
    assert!(
        took > Duration::from_millis(1200),
        "too fast to show the warning: {took:?}"
    );
    assert!(!stderr(&output).contains("slow statement"), "{}", stderr(&output));
    assert_eq!(stderr(&output), "");
}

#[test]
fn missing_files_are_named_once_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let query = homewright(dir.path(), &["query", "--db", "nosuch.db", "SELECT 1"]);
    assert_eq!(query.status.code(), Some(1));
    assert_eq!(
        stderr(&query).matches("homewright run").count(),
        1,
        "the hint once: {}",
        stderr(&query)
    );
    assert!(stderr(&query).contains("nosuch.db"), "{}", stderr(&query));

    for command in ["check", "run"] {
        let output = homewright(dir.path(), &[command]);
        assert_eq!(output.status.code(), Some(1), "{command}");
        let said = format!("{}{}", stdout(&output), stderr(&output));
        assert_eq!(said.matches("os error 2").count(), 1, "{command}: {said}");
        assert!(said.contains("homewright init"), "{command}: {said}");
    }
}

/// 45 runs of `climate`, the 5 failures among the first ones, so that the latest 20 runs show none.
fn climate_history(dir: &Path) -> PathBuf {
    let db = dir.join("history.db");
    std::fs::write(
        dir.join("rules/climate.rhai"),
        "on_message(\"climate/+\", |msg| {\n    if msg.payload == \"broken\" { throw \"the sensor is broken\"; }\n    if msg.payload == \"hot\" { publish(\"fan/set\", \"ON\"); }\n});\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("rules/nightly.rhai"),
        "cron(\"0 3 * * *\", || publish(\"night\", \"1\"));\n",
    )
    .unwrap();
    let location = Location {
        timezone: Zone::named("Europe/Amsterdam").unwrap(),
        coordinates: None,
    };
    let start = now_millis() - 24 * 60 * MINUTE;
    let mut sim = Simulation::start_with(
        &db,
        homewright::sim::RuleSource::Files(&[dir.join("rules/climate.rhai")]),
        homewright::sim::Options {
            location,
            limits: limits(),
            ..Default::default()
        },
        start,
    )
    .unwrap();
    for i in 0..45 {
        let payload = match i {
            0..5 => "broken",
            i if i % 2 == 0 => "hot",
            _ => "cool",
        };
        sim.deliver(message(start + i * MINUTE, "climate/hall", payload))
            .unwrap();
    }
    sim.stop();
    db
}

#[test]
fn why_counts_the_period_and_shows_old_failures_with_their_place() {
    let dir = tempfile::tempdir().unwrap();
    amsterdam_config(dir.path(), "");
    climate_history(dir.path());
    let output = homewright(dir.path(), &["why", "climate", "--since", "2d"]);
    let out = stdout(&output);
    assert!(output.status.success(), "{out}{}", stderr(&output));
    let first = out.lines().next().unwrap_or_default();
    assert!(first.contains("45 runs, 5 failed, 20 did nothing"), "{out}");
    let failures = out.split("Recent runs").next().unwrap();
    assert!(failures.contains("Failures"), "{out}");
    assert_eq!(failures.matches("the sensor is broken").count(), 5, "{out}");
    let newest = failures.find("#5 ").expect("the latest failure is run #5");
    let oldest = failures.find("#1 ").expect("the first failure is run #1");
    assert!(newest < oldest, "newest first: {out}");
    let recent = out.split("Recent runs").nth(1).unwrap();
    assert!(
        !recent.contains("the sensor is broken"),
        "the 20 latest runs did not fail: {out}"
    );
}

#[test]
fn why_a_rule_that_does_not_exist_fails_and_a_cron_rule_gets_no_topic_advice() {
    let dir = tempfile::tempdir().unwrap();
    amsterdam_config(dir.path(), "");
    climate_history(dir.path());
    let missing = homewright(dir.path(), &["why", "nosuch"]);
    assert_eq!(missing.status.code(), Some(1), "{}", stdout(&missing));
    assert!(
        stderr(&missing).contains("there is no rule `nosuch`"),
        "{}",
        stderr(&missing)
    );

    let nightly = homewright(dir.path(), &["why", "nightly"]);
    let out = stdout(&nightly);
    assert!(nightly.status.success(), "{out}{}", stderr(&nightly));
    assert!(out.contains("has not run"), "{out}");
    assert!(!out.contains("topic filter"), "{out}");
    assert!(
        out.contains("next fires at") && out.contains("T03:00:00.000+01:00"),
        "{out}"
    );
}

/// A stored day: a set-topic command, a sensor message a rule logs and answers, at 18:00 in Amsterdam.
async fn replay_home(dir: &Path) {
    amsterdam_config(
        dir,
        "gpio:\n  backend: simulated\n  relays:\n    heater: { pin: 27 }\n",
    );
    std::fs::write(
        dir.join("rules/echo.rhai"),
        "on_message(\"sensor/x\", |msg| {\n    log(`seen ${msg.payload}`);\n    publish(\"echo\", msg.payload);\n});\n",
    )
    .unwrap();
    let zone = Zone::named("Europe/Amsterdam").unwrap();
    let six = homewright::scheduler::when::parse_instant("2026-11-24T18:00", &zone).unwrap();
    history(
        &dir.join("history.db"),
        &[
            message(six, "homewright/relay/heater/set", "ON"),
            message(six + MINUTE, "sensor/x", "hello"),
        ],
    )
    .await;
}

fn replay(dir: &Path, format: &str) -> Output {
    homewright(
        dir,
        &[
            "replay",
            "--since",
            "2026-11-24",
            "--until",
            "2026-11-25",
            "--format",
            format,
        ],
    )
}

#[tokio::test]
async fn replay_shows_set_topic_switches_as_relays_in_every_format_and_logs_replayed_times() {
    let dir = tempfile::tempdir().unwrap();
    replay_home(dir.path()).await;

    let table = replay(dir.path(), "table");
    assert!(table.status.success(), "{}", stderr(&table));
    let out = stdout(&table);
    assert!(
        out.contains("2026-11-24T18:00:00.000+01:00  (set_topic)  relay heater \"ON\""),
        "{out}"
    );
    assert!(
        out.contains("2026-11-24T18:01:00.000+01:00  echo  publish echo \"hello\""),
        "{out}"
    );
    // The rule's log line carries the replayed time (in UTC, as every log line), not today's.
    let log = stderr(&table);
    let seen = log
        .lines()
        .find(|l| l.contains("seen hello"))
        .expect("the rule's log line");
    assert!(seen.starts_with("2026-11-24T17:01:00"), "{log}");

    let csv = replay(dir.path(), "csv");
    assert!(csv.status.success(), "{}", stderr(&csv));
    let out = stdout(&csv);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "time,rule,kind,target,value,cause", "{out}");
    assert_eq!(
        lines[1], "2026-11-24T18:00:00.000+01:00,,relay,heater,ON,set_topic",
        "{out}"
    );
    assert_eq!(
        lines[2], "2026-11-24T18:01:00.000+01:00,echo,publish,echo,hello,rule",
        "{out}"
    );

    let json = replay(dir.path(), "json");
    let first: serde_json::Value =
        serde_json::from_str(stdout(&json).lines().next().unwrap_or_default()).unwrap();
    assert_eq!(
        (first["kind"].as_str(), first["cause"].as_str()),
        (Some("relay"), Some("set_topic"))
    );
}

#[tokio::test]
async fn replay_refuses_a_start_after_its_end() {
    let dir = tempfile::tempdir().unwrap();
    replay_home(dir.path()).await;
    let output = homewright(
        dir.path(),
        &["replay", "--since", "2026-11-25", "--until", "2026-11-24"],
    );
    assert_eq!(output.status.code(), Some(1), "{}", stdout(&output));
    assert!(
        stderr(&output).contains("is not before --until"),
        "{}",
        stderr(&output)
    );
}

#[tokio::test]
async fn a_long_replay_logs_its_progress_when_stderr_is_no_terminal() {
    let dir = tempfile::tempdir().unwrap();
    amsterdam_config(dir.path(), "");
    // Each run spins a while, so that the replay takes longer than the progress interval.
    std::fs::write(
        dir.path().join("rules/busy.rhai"),
        "on_message(\"busy\", |msg| {\n    let n = 0;\n    for i in 0..20000 { n += i; }\n});\n",
    )
    .unwrap();
    let start = now_millis() - 60 * MINUTE;
    let messages: Vec<Message> = (0..480).map(|i| message(start + i * 1000, "busy", "x")).collect();
    history(&dir.path().join("history.db"), &messages).await;
    let started = Instant::now();
    let output = homewright(dir.path(), &["replay", "--since", "2h"]);
    let took = started.elapsed();
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        took > Duration::from_secs(6),
        "too fast to need a progress line: {took:?}"
    );
    let log = stderr(&output);
    assert!(
        log.lines()
            .any(|l| l.starts_with("replayed ") && l.contains("/480 messages (")),
        "{log}"
    );
}

#[test]
fn check_reports_unknown_keys_together_with_every_other_problem() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("homewright.yaml"),
        "mqtt:\n  prot: 1883\n  qos: 7\nbrokr:\n  embedded: false\ngpio:\n  relays:\n    heater: { pin: 27, activ_low: true }\n",
    )
    .unwrap();
    let output = homewright(dir.path(), &["check"]);
    assert_eq!(output.status.code(), Some(1));
    let out = stdout(&output);
    assert!(
        out.contains("homewright.yaml:2:3: mqtt: unknown field `prot`"),
        "{out}"
    );
    assert!(
        out.contains("homewright.yaml:4:1: unknown field `brokr`"),
        "{out}"
    );
    assert!(
        out.contains("gpio.relays.heater: unknown field `activ_low`"),
        "{out}"
    );
    assert!(out.contains("mqtt.qos"), "the invalid value too: {out}");
}

#[test]
fn init_writes_location_commented_out_and_says_what_it_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let output = homewright(dir.path(), &["init"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let out = stdout(&output);
    assert!(out.contains("rules/tests/too_warm.yaml"), "{out}");
    assert!(
        out.contains("location"),
        "it says where to set the location: {out}"
    );
    let config = homewright::config::load(&dir.path().join("homewright.yaml")).unwrap();
    assert_eq!(config.location.coordinates, None, "no made-up coordinates");
    let text = std::fs::read_to_string(dir.path().join("homewright.yaml")).unwrap();
    assert!(text.contains("# location:"), "{text}");
}

#[test]
fn the_tours_mosquitto_commands_name_the_port() {
    let readme = include_str!("../README.md");
    let commands: Vec<&str> = readme
        .lines()
        .filter(|l| l.starts_with("mosquitto_sub") || l.starts_with("mosquitto_pub"))
        .collect();
    assert!(!commands.is_empty());
    for command in commands {
        assert!(
            command.contains(" -p "),
            "a moved broker is not found by: {command}"
        );
    }
}
