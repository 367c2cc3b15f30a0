//! Timed rules on virtual time over a real history file: every, cron (across DST), sunset, one-shot
//! timers across restarts, catch-up, and on_change across restarts. No test here sleeps.

use std::path::Path;
use std::time::Duration;

use chrono::TimeZone;
use homewright::rules::Limits;
use homewright::scheduler::{Location, Zone};
use homewright::sim::Simulation;
use homewright::store::SqlValue;

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;

fn limits() -> Limits {
    Limits {
        max_operations: 1_000_000,
        timeout: Duration::from_secs(1),
        max_string_size: 1 << 22,
        ..Limits::default()
    }
}

/// The house's zone in these tests (from the system's tz database, as the engine reads it).
fn ams() -> Zone {
    Zone::named("Europe/Amsterdam").expect("the tzdata package is installed")
}

fn amsterdam() -> Location {
    Location {
        timezone: ams(),
        coordinates: Some((52.37, 4.89)),
    }
}

/// Unix ms of a local wall-clock time in `zone` (the earlier one when it is ambiguous).
fn local(zone: Zone, (y, mo, d): (i32, u32, u32), (h, mi): (u32, u32)) -> i64 {
    zone.with_ymd_and_hms(y, mo, d, h, mi, 0)
        .earliest()
        .expect("a valid local time")
        .timestamp_millis()
}

fn local_date(zone: Zone, at: i64) -> String {
    zone.timestamp_millis_opt(at)
        .unwrap()
        .format("%Y-%m-%d")
        .to_string()
}

struct Home {
    dir: tempfile::TempDir,
}

impl Home {
    fn with_rule(source: &str) -> Home {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("rules")).unwrap();
        std::fs::write(dir.path().join("rules/timed.rhai"), source).unwrap();
        Home { dir }
    }

    fn start(&self, location: Location, at: i64) -> Simulation {
        let sim =
            Simulation::start(&self.db(), &self.dir.path().join("rules"), location, limits(), at).unwrap();
        assert!(sim.problems.is_empty(), "{:?}", sim.problems);
        sim
    }

    fn db(&self) -> std::path::PathBuf {
        self.dir.path().join("history.db")
    }
}

fn times(sim: &Simulation, topic: &str) -> Vec<i64> {
    sim.published()
        .into_iter()
        .filter(|(_, t, _)| t == topic)
        .map(|(at, _, _)| at)
        .collect()
}

#[test]
fn every_10m_runs_6_times_in_a_virtual_hour() {
    let home = Home::with_rule(r#"every("10m", || publish("tick", "x"));"#);
    let start = local(ams(), (2026, 5, 4), (12, 0));
    let mut sim = home.start(amsterdam(), start);
    sim.advance(HOUR).unwrap();
    let ticks = times(&sim, "tick");
    assert_eq!(
        ticks,
        (1..=6).map(|i| start + i * 10 * MINUTE).collect::<Vec<_>>()
    );
}

#[test]
fn cron_at_7_on_weekdays_runs_5_times_in_a_virtual_week() {
    let home = Home::with_rule(r#"cron("0 7 * * Mon-Fri", || publish("wake", "up"));"#);
    let sunday = local(ams(), (2026, 5, 3), (12, 0));
    let mut sim = home.start(amsterdam(), sunday);
    sim.advance(7 * 24 * HOUR).unwrap();
    let wakes = times(&sim, "wake");
    assert_eq!(wakes.len(), 5);
    for (day, at) in wakes.iter().enumerate() {
        assert_eq!(*at, local(ams(), (2026, 5, 4 + day as u32), (7, 0)));
    }
}

#[test]
fn a_job_in_the_skipped_and_in_the_repeated_dst_hour_runs_once_each_day() {
    let home = Home::with_rule(r#"cron("0 30 2 * * *", || publish("night", "job"));"#);
    for (from, day) in [((2026, 3, 28), "2026-03-29"), ((2026, 10, 24), "2026-10-25")] {
        let mut sim = home.start(amsterdam(), local(ams(), from, (12, 0)));
        sim.advance(3 * 24 * HOUR).unwrap();
        let dates: Vec<String> = times(&sim, "night")
            .iter()
            .map(|at| local_date(ams(), *at))
            .collect();
        assert_eq!(dates.iter().filter(|d| *d == day).count(), 1, "{day}: {dates:?}");
        assert_eq!(dates.len(), 3, "one run per day: {dates:?}");
        sim.stop();
    }
}

#[test]
fn sunset_in_amsterdam_on_midsummer_and_15_minutes_before_it() {
    let home = Home::with_rule(
        r#"at_sunset("0m", || publish("sun", "set"));
           at_sunset("-15m", || publish("sun", "soon"));"#,
    );
    let mut sim = home.start(amsterdam(), local(ams(), (2026, 6, 21), (12, 0)));
    sim.advance(12 * HOUR).unwrap();
    let published = sim.published();
    let at = |payload: &str| {
        published
            .iter()
            .find(|(_, _, p)| p == payload)
            .map(|(t, _, _)| *t)
            .unwrap()
    };
    let published_sunset = local(ams(), (2026, 6, 21), (22, 6));
    assert!(
        (at("set") - published_sunset).abs() <= 2 * MINUTE,
        "sunset at {}",
        at("set")
    );
    assert_eq!(at("soon"), at("set") - 15 * MINUTE);
}

const DOOR_TIMER: &str = r#"
    on_message("fan/on", |msg| {
        let id = after("2h", || publish("fan", `off after ${msg.payload}`));
        store_set("timer", id);
    });
    on_message("fan/cancel", |msg| { cancel(store_get("timer")); });
"#;

#[test]
fn a_timer_survives_a_restart_and_fires_two_hours_after_it_was_set() {
    let home = Home::with_rule(DOOR_TIMER);
    let set_at = local(ams(), (2026, 5, 4), (12, 0));
    let mut sim = home.start(amsterdam(), set_at);
    sim.publish("fan/on", "shower").unwrap();
    sim.advance(30 * MINUTE).unwrap();
    sim.stop();

    let mut sim = home.start(amsterdam(), set_at + 30 * MINUTE);
    sim.advance(HOUR + 29 * MINUTE).unwrap();
    assert!(times(&sim, "fan").is_empty(), "not yet");
    sim.advance(2 * MINUTE).unwrap();
    assert_eq!(
        sim.published(),
        vec![(
            set_at + 2 * HOUR,
            "fan".to_string(),
            "off after shower".to_string()
        )]
    );
    assert!(sim.runs().iter().all(|r| !r.late));
}

#[test]
fn a_timer_that_fell_due_while_stopped_runs_once_at_start_marked_late() {
    let home = Home::with_rule(DOOR_TIMER);
    let set_at = local(ams(), (2026, 5, 4), (12, 0));
    let mut sim = home.start(amsterdam(), set_at);
    sim.publish("fan/on", "shower").unwrap();
    sim.stop();

    let restart = set_at + 3 * HOUR;
    let mut sim = home.start(amsterdam(), restart);
    assert_eq!(times(&sim, "fan"), vec![restart]);
    sim.advance(5 * HOUR).unwrap();
    assert_eq!(times(&sim, "fan").len(), 1, "runs once");
    sim.stop();
    let late = block_count(
        &home.db(),
        "SELECT count(*) FROM rule_runs WHERE trigger = 'after' AND late = 1",
    );
    assert_eq!(late, 1);
    assert_eq!(
        block_count(&home.db(), "SELECT count(*) FROM timers"),
        0,
        "a fired timer is forgotten"
    );
}

#[test]
fn cancel_prevents_a_firing_also_after_a_restart() {
    let home = Home::with_rule(DOOR_TIMER);
    let set_at = local(ams(), (2026, 5, 4), (12, 0));
    let mut sim = home.start(amsterdam(), set_at);
    sim.publish("fan/on", "shower").unwrap();
    sim.advance(HOUR).unwrap();
    sim.publish("fan/cancel", "").unwrap();
    sim.advance(2 * HOUR).unwrap();
    assert!(times(&sim, "fan").is_empty());
    sim.stop();
    let mut sim = home.start(amsterdam(), set_at + 4 * HOUR);
    sim.advance(HOUR).unwrap();
    assert!(times(&sim, "fan").is_empty());
}

#[test]
fn a_missed_recurring_trigger_runs_once_at_start_only_when_it_asked_to_catch_up() {
    let home = Home::with_rule(
        r#"every("1h", #{ catch_up: true }, || publish("hourly", "caught"));
           every("1h", || publish("hourly", "plain"));"#,
    );
    let start = local(ams(), (2026, 5, 4), (12, 0));
    let mut sim = home.start(amsterdam(), start);
    sim.advance(HOUR).unwrap();
    assert_eq!(sim.published().len(), 2);
    sim.stop();

    let restart = start + HOUR + 3 * HOUR + 10 * MINUTE;
    let sim = home.start(amsterdam(), restart);
    let at_start: Vec<(i64, String, String)> = sim.published();
    assert_eq!(
        at_start,
        vec![(restart, "hourly".to_string(), "caught".to_string())],
        "once, and only the catch-up one"
    );
    assert!(sim.runs().iter().any(|r| r.late));
}

#[test]
fn on_change_fires_on_a_changed_payload_not_a_repeated_one_across_a_restart() {
    let home = Home::with_rule(
        r#"on_change("door/state", |old, value| {
               publish("door/changed", `${if old == () { "?" } else { old.payload }} -> ${value.payload}`);
           });"#,
    );
    let start = local(ams(), (2026, 5, 4), (12, 0));
    let mut sim = home.start(amsterdam(), start);
    for payload in ["closed", "closed", "open", "open"] {
        sim.publish("door/state", payload).unwrap();
        sim.advance(MINUTE).unwrap();
    }
    let changes: Vec<String> = sim.published().into_iter().map(|(_, _, p)| p).collect();
    assert_eq!(changes, ["? -> closed", "closed -> open"]);
    sim.stop();

    let mut sim = home.start(amsterdam(), start + HOUR);
    sim.publish("door/state", "open").unwrap();
    assert!(
        sim.published().is_empty(),
        "same as before the restart: no change"
    );
    sim.publish("door/state", "closed").unwrap();
    assert_eq!(sim.published()[0].2, "open -> closed");
}

#[test]
fn is_dark_follows_the_sun() {
    let home = Home::with_rule(r#"on_message("ask", |msg| publish("dark", `${is_dark()}`));"#);
    let mut sim = home.start(amsterdam(), local(ams(), (2026, 6, 21), (12, 0)));
    sim.publish("ask", "").unwrap();
    sim.advance_to(local(ams(), (2026, 6, 21), (23, 0))).unwrap();
    sim.publish("ask", "").unwrap();
    let answers: Vec<String> = sim.published().into_iter().map(|(_, _, p)| p).collect();
    assert_eq!(answers, ["false", "true"]);
}

fn block_count(db: &Path, sql: &str) -> i64 {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let reader = homewright::store::HistoryReader::open(db).await.unwrap();
        match reader.query(sql, &[], None).await.unwrap().rows[0][0] {
            SqlValue::Integer(n) => n,
            ref other => panic!("{other:?}"),
        }
    })
}

#[test]
fn sun_triggers_and_is_dark_need_a_location_and_say_so_at_the_call() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("porch.rhai");
    std::fs::write(
        &path,
        "let x = 1;\nat_sunset(\"-15m\", || publish(\"porch\", \"on\"));\n",
    )
    .unwrap();
    let no_location = Location {
        timezone: ams(),
        coordinates: None,
    };
    let mut rules = homewright::rules::RuleSet::new(
        limits(),
        None,
        Default::default(),
        Default::default(),
        no_location,
    );
    let error = rules.load_file(&path).unwrap_err().to_string();
    assert!(
        error.ends_with(
            "porch.rhai:2:1: at_sunset needs location.latitude and location.longitude in homewright.yaml"
        ),
        "{error}"
    );
    std::fs::write(&path, "cron(\"61 * * * *\", || {});\n").unwrap();
    let error = rules.load_file(&path).unwrap_err().to_string();
    assert!(
        error.contains("porch.rhai:1:1: `61 * * * *` is not a cron pattern"),
        "{error}"
    );
}

mod wall_clock {
    use std::time::Duration;

    use rumqttc::QoS;

    use crate::support::{Client, Engine, Setup, count, eventually};

    /// The one scheduler test on real time: the rule thread's wait for the next deadline works in `run`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_after_timer_fires_in_the_running_engine_and_is_forgotten() {
        let setup = Setup::embedded().rule(
            "delay",
            r#"on_message("go", |msg| { after("100ms", || publish("went", msg.payload)); });"#,
        );
        let engine = Engine::start(setup).await;
        let client = Client::connect(engine.setup.port, "timer").await;
        client.subscribe("went").await;
        client.publish("go", "now", QoS::AtLeastOnce, false).await;
        assert_eq!(
            &client.next_on("went", Duration::from_secs(10)).await.payload[..],
            b"now"
        );
        let db = engine.setup.db_path();
        eventually("the fired timer forgotten", Duration::from_secs(10), || async {
            let set = count(&db, "SELECT count(*) FROM rule_runs WHERE trigger = 'after'").await;
            let pending = count(&db, "SELECT count(*) FROM timers").await;
            (set == 1 && pending == 0).then_some(())
        })
        .await;
        engine.stop().await;
    }
}

#[test]
fn a_catch_up_trigger_that_never_fired_is_still_caught_up_after_an_outage() {
    let home = Home::with_rule(r#"every("1h", #{ catch_up: true }, || publish("hourly", "caught"));"#);
    let start = local(ams(), (2026, 5, 4), (12, 0));
    let sim = home.start(amsterdam(), start);
    sim.stop();
    let restart = start + 3 * HOUR;
    let sim = home.start(amsterdam(), restart);
    assert_eq!(
        sim.published(),
        vec![(restart, "hourly".to_string(), "caught".to_string())]
    );
}

#[test]
fn missed_catch_up_triggers_run_oldest_first_so_the_latest_decides_the_state() {
    // Registered "off" first: in registration order the older "on" would run last and win.
    let home = Home::with_rule(
        r#"cron("0 0 7 * * *", #{ catch_up: true }, || store_set("night", false));
           cron("0 0 22 * * *", #{ catch_up: true }, || store_set("night", true));
           every("30m", #{ catch_up: true }, || store_set("tick", now()));"#,
    );
    let start = local(ams(), (2026, 5, 4), (12, 0));
    let mut sim = home.start(amsterdam(), start);
    sim.advance(9 * HOUR).unwrap(); // 21:00, before either cron fired
    sim.stop();

    // Down from 21:00 until 08:10 the next day: 22:00 and 07:00 both missed.
    let restart = local(ams(), (2026, 5, 5), (8, 10));
    let sim = home.start(amsterdam(), restart);
    assert_eq!(sim.stored("night"), Some(serde_json::json!(false)));
    let late: Vec<&str> = sim.runs().iter().filter(|r| r.late).map(|r| r.trigger).collect();
    assert_eq!(late.len(), 3, "each missed trigger once: {late:?}");
}

#[test]
fn a_pending_timer_whose_closure_was_edited_is_dropped_at_reload_not_failed_later() {
    use homewright::event::{Event, Output};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fan.rhai");
    std::fs::write(
        &path,
        r#"on_message("on", |m| { after("1h", || publish("fan", "off")); });"#,
    )
    .unwrap();
    let clock = homewright::scheduler::Clock::virtual_at(0);
    let mut rules = homewright::rules::RuleSet::new(limits(), None, Default::default(), clock, amsterdam());
    rules.load_file(&path).unwrap();
    let message = homewright::event::Message {
        ts: 0,
        topic: "on".into(),
        payload: Default::default(),
        qos: 0,
        retain: false,
        dup: false,
    };
    rules.handle(&Event::Message(message));
    std::fs::write(
        &path,
        r#"on_message("on", |m| { after("1h", || publish("fan", "OFF")); });"#,
    )
    .unwrap();
    let reloaded = rules.handle(&Event::RuleFile(path.clone()));
    assert!(
        reloaded.iter().any(|o| matches!(o, Output::TimerDone { .. })),
        "{reloaded:?}"
    );
    let later = rules.advance_to(2 * HOUR);
    assert!(
        later.iter().all(|o| !matches!(o, Output::Run(_))),
        "nothing runs, nothing fails: {later:?}"
    );
}
