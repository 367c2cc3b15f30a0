//! Local time, `on_held` and `on_silent` on virtual time: daylight saving days, holds and silences per
//! topic, and a restart of the engine (over the same history) in the middle of one or after it
//! completed while the engine was down.

use std::path::PathBuf;
use std::time::Duration;

use homewright::rules::Limits;
use homewright::scheduler::{Location, Zone};
use homewright::sim::harness::Simulation;

const SECOND: i64 = 1_000;
const MINUTE: i64 = 60 * SECOND;

struct House {
    dir: tempfile::TempDir,
}

impl House {
    fn new(rules: &[(&str, &str)]) -> House {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("rules")).unwrap();
        let house = House { dir };
        for (name, text) in rules {
            house.write(name, text);
        }
        house
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join("rules").join(format!("{name}.rhai"));
        std::fs::write(&path, text).unwrap();
        path
    }

    fn start(&self, at: i64) -> Simulation {
        let limits = Limits {
            max_operations: 1_000_000,
            timeout: Duration::from_secs(1),
            max_string_size: 1 << 22,
            ..Limits::default()
        };
        let location = Location {
            timezone: Zone::named("Europe/Amsterdam").unwrap(),
            coordinates: Some((52.37, 4.89)),
        };
        let sim = Simulation::start(
            &self.dir.path().join("history.db"),
            &self.dir.path().join("rules"),
            location,
            limits,
            at,
        )
        .unwrap();
        assert!(sim.problems.is_empty(), "{:?}", sim.problems);
        sim
    }
}

/// A local time in Amsterdam, unix ms; `offset` is the UTC offset in hours that day.
fn local(date: &str, clock: &str, offset: i64) -> i64 {
    let text = format!("{date}T{clock}:00+0{offset}:00");
    chrono::DateTime::parse_from_rfc3339(&text)
        .unwrap_or_else(|e| panic!("{text}: {e}"))
        .timestamp_millis()
}

fn published_on(sim: &Simulation, topic: &str) -> Vec<(i64, String)> {
    sim.published()
        .into_iter()
        .filter(|(_, t, _)| t == topic)
        .map(|(at, _, p)| (at, p))
        .collect()
}

fn payloads(sim: &Simulation, topic: &str) -> Vec<String> {
    published_on(sim, topic).into_iter().map(|(_, p)| p).collect()
}

const CLOCK: &str = r#"
every("30m", || {
    let t = time();
    publish("clock", `${t.date} ${t.weekday} ${t.clock} ${time_between("02:00", "03:00")}`);
});
"#;

#[test]
fn time_follows_the_wall_clock_across_the_spring_forward_night() {
    let house = House::new(&[("clock", CLOCK)]);
    let mut sim = house.start(local("2026-03-29", "00:00", 1));
    sim.advance(5 * 30 * MINUTE).unwrap();
    // 02:00 became 03:00: no time of that night is between 02:00 and 03:00.
    assert_eq!(
        payloads(&sim, "clock"),
        [
            "2026-03-29 Sun 00:30 false",
            "2026-03-29 Sun 01:00 false",
            "2026-03-29 Sun 01:30 false",
            "2026-03-29 Sun 03:00 false",
            "2026-03-29 Sun 03:30 false",
        ]
    );
}

#[test]
fn time_follows_the_wall_clock_across_the_fall_back_night() {
    let house = House::new(&[("clock", CLOCK)]);
    let mut sim = house.start(local("2026-10-25", "00:00", 2));
    sim.advance(8 * 30 * MINUTE).unwrap();
    // 03:00 became 02:00 again: the hour from 02:00 is lived twice.
    assert_eq!(
        payloads(&sim, "clock"),
        [
            "2026-10-25 Sun 00:30 false",
            "2026-10-25 Sun 01:00 false",
            "2026-10-25 Sun 01:30 false",
            "2026-10-25 Sun 02:00 true",
            "2026-10-25 Sun 02:30 true",
            "2026-10-25 Sun 02:00 true",
            "2026-10-25 Sun 02:30 true",
            "2026-10-25 Sun 03:00 false",
        ]
    );
}

#[test]
fn time_fields_weekdays_and_windows_that_wrap_midnight() {
    let rule = r#"
on_message("ask", |msg| {
    let t = time();
    publish("answer", `${t.year}-${t.month}-${t.day} ${t.hour}:${t.minute}:${t.second} ${t.weekday} ${is_weekday()} ${is_weekend()} ${time_between("22:00", "06:30")} ${time_between("06:30:00", "22:00:30")}`);
});
"#;
    let house = House::new(&[("ask", rule)]);
    // Friday 2026-12-04, 22:00:15 in Amsterdam (21:00:15 UTC).
    let mut sim = house.start(local("2026-12-04", "22:00", 1) + 15 * SECOND);
    sim.publish("ask", "").unwrap();
    sim.advance(2 * 3600 * SECOND).unwrap(); // Saturday, 00:00:15
    sim.publish("ask", "").unwrap();
    sim.advance(6 * 3600 * SECOND + 30 * MINUTE - 15 * SECOND)
        .unwrap(); // 06:30:00
    sim.publish("ask", "").unwrap();
    assert_eq!(
        payloads(&sim, "answer"),
        [
            "2026-12-4 22:0:15 Fri true false true true",
            "2026-12-5 0:0:15 Sat false true true false",
            "2026-12-5 6:30:0 Sat false true false true",
        ]
    );
}

#[test]
fn a_bad_time_of_day_is_an_error_at_its_position() {
    let rule = "on_message(\"ask\", |msg| {\n    if time_between(\"7pm\", \"06:00\") { publish(\"x\", \"y\"); }\n});\n";
    let house = House::new(&[("bad", rule)]);
    let mut sim = house.start(local("2026-12-04", "12:00", 1));
    sim.publish("ask", "").unwrap();
    let runs = sim.runs();
    let error = runs[0].error.as_deref().unwrap();
    assert!(
        error.contains("bad.rhai:2:") && error.contains("`7pm` is not a time of day"),
        "{error}"
    );
}

const FREEZER: &str = r#"
on_held("freezer/+", |msg| msg.json?.t > -15.0, "10m", |msg| {
    publish("alert", `${msg.topic} ${msg.json.t}`);
});
"#;

#[test]
fn a_hold_fires_once_per_topic_after_its_duration_and_a_false_message_resets_it() {
    let house = House::new(&[("freezer", FREEZER)]);
    let t0 = local("2026-12-04", "12:00", 1);
    let mut sim = house.start(t0);
    sim.publish("freezer/a", r#"{"t": -20}"#).unwrap();
    sim.advance(MINUTE).unwrap();
    sim.publish("freezer/a", r#"{"t": -10}"#).unwrap(); // holds from t0+1m
    sim.publish("freezer/b", r#"{"t": -12}"#).unwrap(); // another topic, its own hold
    sim.advance(4 * MINUTE).unwrap();
    sim.publish("freezer/a", r#"{"t": -12}"#).unwrap();
    sim.advance(3 * MINUTE).unwrap();
    sim.publish("freezer/b", r#"{"t": -18}"#).unwrap(); // b's hold ends before 10 minutes
    sim.advance(3 * MINUTE).unwrap(); // t0+11m
    sim.publish("freezer/a", r#"{"t": -11}"#).unwrap(); // still held: no second alert
    sim.advance(20 * MINUTE).unwrap();
    assert_eq!(
        published_on(&sim, "alert"),
        [(t0 + 11 * MINUTE, "freezer/a -12".to_string())]
    );
    // False in between, then held again for ten minutes: a second alert.
    sim.publish("freezer/a", r#"{"t": -19}"#).unwrap();
    sim.publish("freezer/a", r#"{"t": -9}"#).unwrap();
    let again = sim.now();
    sim.advance(15 * MINUTE).unwrap();
    let alerts = published_on(&sim, "alert");
    assert_eq!(alerts.len(), 2, "{alerts:?}");
    assert_eq!(alerts[1], (again + 10 * MINUTE, "freezer/a -9".to_string()));
}

#[test]
fn a_zero_hold_is_a_crossing_trigger() {
    let rule = r#"
on_held("power", |msg| msg.json?.watts > 1000, "0s", |msg| publish("crossed", `${msg.json.watts}`));
"#;
    let house = House::new(&[("power", rule)]);
    let mut sim = house.start(local("2026-12-04", "12:00", 1));
    for watts in [500, 1200, 1500, 800, 2000, 2100] {
        sim.publish("power", format!(r#"{{"watts": {watts}}}"#)).unwrap();
        sim.advance(SECOND).unwrap();
    }
    assert_eq!(payloads(&sim, "crossed"), ["1200", "2000"]);
}

#[test]
fn a_hold_survives_a_restart_in_its_middle_and_fires_on_time() {
    let house = House::new(&[("freezer", FREEZER)]);
    let t0 = local("2026-12-04", "12:00", 1);
    let mut sim = house.start(t0);
    sim.publish("freezer/a", r#"{"t": -10}"#).unwrap();
    sim.advance(4 * MINUTE).unwrap();
    sim.stop();

    let mut sim = house.start(t0 + 6 * MINUTE);
    sim.advance(10 * MINUTE).unwrap();
    assert_eq!(
        published_on(&sim, "alert"),
        [(t0 + 10 * MINUTE, "freezer/a -10".to_string())]
    );
    let run = sim.runs().into_iter().find(|r| r.trigger == "on_held").unwrap();
    assert!(!run.late);
    sim.stop();

    // It fired: another restart does not fire it again.
    let mut sim = house.start(t0 + 30 * MINUTE);
    sim.advance(30 * MINUTE).unwrap();
    assert!(published_on(&sim, "alert").is_empty());
}

#[test]
fn a_hold_that_completed_while_the_engine_was_down_fires_once_at_start_marked_late() {
    let house = House::new(&[("freezer", FREEZER)]);
    let t0 = local("2026-12-04", "12:00", 1);
    let mut sim = house.start(t0);
    sim.publish("freezer/a", r#"{"t": -10}"#).unwrap();
    sim.advance(4 * MINUTE).unwrap();
    sim.stop();

    let start = t0 + 30 * MINUTE;
    let mut sim = house.start(start);
    assert_eq!(
        published_on(&sim, "alert"),
        [(start, "freezer/a -10".to_string())]
    );
    let runs: Vec<_> = sim
        .runs()
        .into_iter()
        .filter(|r| r.trigger == "on_held")
        .collect();
    assert_eq!(runs.len(), 1);
    assert!(runs[0].late);
    sim.advance(MINUTE).unwrap();
    sim.stop();

    let mut sim = house.start(start + 2 * MINUTE);
    sim.advance(MINUTE).unwrap();
    assert!(published_on(&sim, "alert").is_empty(), "fired twice");
}

#[test]
fn a_hold_survives_a_reload_that_leaves_its_trigger_as_it_was_and_restarts_when_it_changed() {
    let house = House::new(&[("freezer", FREEZER)]);
    let t0 = local("2026-12-04", "12:00", 1);
    let mut sim = house.start(t0);
    sim.publish("freezer/a", r#"{"t": -10}"#).unwrap();
    sim.advance(4 * MINUTE).unwrap();
    // Another trigger added to the file: the hold goes on.
    let path = house.write(
        "freezer",
        &format!("{FREEZER}\non_message(\"other\", |msg| log(\"x\"));\n"),
    );
    sim.reload(&path).unwrap();
    sim.advance(10 * MINUTE).unwrap();
    assert_eq!(
        published_on(&sim, "alert"),
        [(t0 + 10 * MINUTE, "freezer/a -10".to_string())]
    );

    // A new condition is a new trigger: its hold starts with the next message.
    sim.publish("freezer/a", r#"{"t": -20}"#).unwrap();
    sim.publish("freezer/a", r#"{"t": -10}"#).unwrap();
    sim.advance(2 * MINUTE).unwrap();
    let path = house.write("freezer", &FREEZER.replace("-15.0", "-14.0"));
    sim.reload(&path).unwrap();
    sim.advance(20 * MINUTE).unwrap();
    assert_eq!(published_on(&sim, "alert").len(), 1, "{:?}", sim.published());
    sim.publish("freezer/a", r#"{"t": -10}"#).unwrap();
    let held = sim.now();
    sim.advance(11 * MINUTE).unwrap();
    assert_eq!(
        published_on(&sim, "alert").last(),
        Some(&(held + 10 * MINUTE, "freezer/a -10".to_string()))
    );
}

#[test]
fn a_condition_that_fails_or_acts_is_an_error_and_counts_as_false() {
    let rule = r#"
on_held("a", |msg| msg.payload.len() > 1 && msg.payload.parse_int() > 3, "0s", |msg| publish("held", "a"));
on_held("b", |msg| { publish("x", "y"); true }, "0s", |msg| publish("held", "b"));
on_held("c", |msg| 42, "0s", |msg| publish("held", "c"));
"#;
    let house = House::new(&[("bad", rule)]);
    let mut sim = house.start(local("2026-12-04", "12:00", 1));
    sim.publish("a", "xyz").unwrap();
    sim.publish("b", "1").unwrap();
    sim.publish("c", "1").unwrap();
    assert!(sim.published().is_empty(), "{:?}", sim.published());
    let errors: Vec<String> = sim.runs().iter().filter_map(|r| r.error.clone()).collect();
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(errors[0].contains("bad.rhai:2:"), "{}", errors[0]);
    assert!(
        errors[1].contains("bad.rhai:3:") && errors[1].contains("only tests the message"),
        "{}",
        errors[1]
    );
    assert!(
        errors[2].contains("bad.rhai:4:") && errors[2].contains("must be true or false"),
        "{}",
        errors[2]
    );
}

const BATTERIES: &str = r#"
on_silent("sensors/+", "1h", |topic, last| {
    let said = if last == () { "nothing" } else { last.payload };
    publish("silent", `${topic} ${said}`);
});
on_silent("doorbell", "2h", |topic, last| publish("silent", `${topic} never: ${last == ()}`));
"#;

#[test]
fn a_silence_fires_once_per_topic_and_again_after_the_topic_spoke_and_went_quiet() {
    let house = House::new(&[("batteries", BATTERIES)]);
    let t0 = local("2026-12-04", "12:00", 1);
    let mut sim = house.start(t0);
    sim.publish("sensors/a", "1").unwrap();
    sim.advance(30 * MINUTE).unwrap();
    sim.publish("sensors/b", "2").unwrap();
    sim.advance(20 * MINUTE).unwrap();
    sim.publish("sensors/b", "3").unwrap();
    sim.advance(3 * 60 * MINUTE).unwrap(); // t0+3h50m
    sim.publish("sensors/a", "4").unwrap();
    sim.advance(2 * 60 * MINUTE).unwrap();
    assert_eq!(
        published_on(&sim, "silent"),
        [
            (t0 + 60 * MINUTE, "sensors/a 1".to_string()),
            (t0 + 110 * MINUTE, "sensors/b 3".to_string()),
            // The exact topic that never spoke: its silence counts from the start.
            (t0 + 120 * MINUTE, "doorbell never: true".to_string()),
            (t0 + 290 * MINUTE, "sensors/a 4".to_string()),
        ]
    );
}

#[test]
fn a_silence_that_fired_does_not_fire_again_after_a_restart_and_the_outage_does_not_count() {
    let house = House::new(&[("batteries", BATTERIES)]);
    let t0 = local("2026-12-04", "12:00", 1);
    let mut sim = house.start(t0);
    sim.publish("sensors/a", "1").unwrap();
    sim.advance(90 * MINUTE).unwrap(); // a went silent at t0+1h
    sim.publish("sensors/b", "2").unwrap(); // b spoke 20 minutes before the engine stopped
    sim.advance(20 * MINUTE).unwrap();
    sim.publish("other", "x").unwrap(); // the engine last heard anything at t0+110m
    sim.stop();

    // Down for two hours: b's silence goes on from 20 minutes, a's is not repeated.
    let start = t0 + 230 * MINUTE;
    let mut sim = house.start(start);
    sim.advance(2 * 60 * MINUTE).unwrap();
    assert_eq!(
        published_on(&sim, "silent"),
        [
            (start + 40 * MINUTE, "sensors/b 2".to_string()),
            (start + 120 * MINUTE, "doorbell never: true".to_string()),
        ]
    );
    assert!(sim.runs().iter().all(|r| !r.late));
}

// Wall-clock: the engine itself, stopped and started again, against a Mosquitto that stays up.

mod real {
    use std::time::{Duration, Instant};

    use rumqttc::QoS;

    use crate::support::mosquitto::Mosquitto;
    use crate::support::{Client, Engine, Setup, count, eventually, query, text};

    const WAIT: Duration = Duration::from_secs(20);

    /// What arrives on `topic` during `within`.
    async fn alerts(client: &Client, topic: &str, within: Duration) -> Vec<String> {
        let until = Instant::now() + within;
        let mut seen = Vec::new();
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            match client.try_next_on(topic, left).await {
                Some(message) => seen.push(String::from_utf8_lossy(&message.payload).into_owned()),
                None => break,
            }
        }
        seen
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hold_survives_a_real_restart_and_one_completed_while_down_fires_late_at_start() {
        let Some(broker) = Mosquitto::start().await else {
            return;
        };
        let rule = r#"on_held("door/+", |msg| msg.payload == "open", "3s", |msg| publish("door/alert", msg.topic));"#;
        let setup = Setup::external(broker.port).rule("door", rule);
        let db = setup.db_path();
        let engine = Engine::start(setup).await;
        let client = Client::connect(broker.port, "door-test").await;
        client.subscribe("door/alert").await;

        // Completed while down: open, stop, stay down past the 3 s, start again.
        client
            .publish("door/front", "open", QoS::AtLeastOnce, false)
            .await;
        let opened = Instant::now();
        eventually("the hold persisted", WAIT, || async {
            (count(&db, "SELECT count(*) FROM topic_watches").await == 1).then_some(())
        })
        .await;
        let setup = engine.stop().await;
        tokio::time::sleep(Duration::from_secs(4).saturating_sub(opened.elapsed())).await;
        let engine = Engine::start(setup).await;
        let alert = client.next_on("door/alert", WAIT).await;
        assert_eq!(&alert.payload[..], b"door/front");

        // In the middle: open, stop and start again at once; it fires when its 3 s are up.
        client.publish("door/back", "open", QoS::AtLeastOnce, false).await;
        let opened = Instant::now();
        eventually("the second hold persisted", WAIT, || async {
            (count(
                &db,
                "SELECT count(*) FROM topic_watches WHERE topic = 'door/back'",
            )
            .await
                == 1)
                .then_some(())
        })
        .await;
        let setup = engine.stop().await;
        let engine = Engine::start(setup).await;
        let alert = client.next_on("door/alert", WAIT).await;
        assert_eq!(&alert.payload[..], b"door/back");
        assert!(
            opened.elapsed() >= Duration::from_secs(3),
            "{:?}",
            opened.elapsed()
        );
        assert!(
            alerts(&client, "door/alert", Duration::from_secs(2))
                .await
                .is_empty(),
            "a hold fired twice"
        );
        let setup = engine.stop().await;
        let runs = query(
            &setup.db_path(),
            "SELECT topic, late FROM rule_runs WHERE trigger = 'on_held' ORDER BY id",
        )
        .await;
        let rows: Vec<(String, String)> = runs.rows.iter().map(|r| (text(&r[0]), text(&r[1]))).collect();
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert_eq!(rows[0], ("door/front".to_string(), "1".to_string()));
        assert_eq!(rows[1].0, "door/back");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_silence_fires_once_across_real_restarts_and_one_begun_before_a_restart_still_fires() {
        let Some(broker) = Mosquitto::start().await else {
            return;
        };
        let rule =
            r#"on_silent("dev/+", "3s", |topic, last| publish("alert/silent", `${topic} ${last.payload}`));"#;
        let setup = Setup::external(broker.port).rule("quiet", rule);
        let db = setup.db_path();
        let engine = Engine::start(setup).await;
        let client = Client::connect(broker.port, "quiet-test").await;
        client.subscribe("alert/silent").await;

        client.publish("dev/a", "1", QoS::AtLeastOnce, false).await;
        let alert = client.next_on("alert/silent", WAIT).await;
        assert_eq!(&alert.payload[..], b"dev/a 1");
        eventually("the silence persisted as fired", WAIT, || async {
            (count(&db, "SELECT count(*) FROM topic_watches WHERE fired = 1").await == 1).then_some(())
        })
        .await;

        // Restarted: a's silence fired already, so nothing; b spoke just before the stop and goes
        // quiet across it, so its silence still comes.
        client.publish("dev/b", "2", QoS::AtLeastOnce, false).await;
        eventually("b stored", WAIT, || async {
            (count(&db, "SELECT count(*) FROM messages WHERE topic = 'dev/b'").await == 1).then_some(())
        })
        .await;
        let setup = engine.stop().await;
        let engine = Engine::start(setup).await;
        let seen = alerts(&client, "alert/silent", Duration::from_secs(6)).await;
        assert_eq!(seen, ["dev/b 2"]);
        let setup = engine.stop().await;
        let engine = Engine::start(setup).await;
        let seen = alerts(&client, "alert/silent", Duration::from_secs(5)).await;
        assert!(seen.is_empty(), "{seen:?}");
        engine.stop().await;
    }
}

#[test]
fn a_rule_that_feeds_itself_is_paused_once_and_a_busy_sensor_rule_is_not() {
    let looping = r#"on_message("loop/a", |m| publish("loop/a", "x"));"#;
    let busy = r#"on_message("meter/power", |m| if m.payload == "never" { publish("x", "y") });"#;
    let house = House::new(&[("looping", looping), ("busy", busy)]);
    let t0 = local("2026-12-04", "12:00", 1);
    let mut sim = house.start(t0);
    // 125 messages a second for 8 s on each topic: the loop's own, and a busy meter's.
    for _ in 0..1_000 {
        sim.publish("loop/a", "x").unwrap();
        sim.publish("meter/power", "100").unwrap();
        sim.advance(8).unwrap();
    }
    let runs = sim.runs();
    let count = |rule: &str| {
        runs.iter()
            .filter(|r| &*r.rule == rule && r.trigger == "on_message")
            .count()
    };
    assert_eq!(count("busy"), 1_000, "the busy rule ran on every message");
    let guard: Vec<_> = runs.iter().filter(|r| r.trigger == "loop_guard").collect();
    assert_eq!(guard.len(), 1, "one row says so");
    assert_eq!(&*guard[0].rule, "looping");
    assert_eq!(guard[0].topic.as_deref(), Some("loop/a"));
    let error = guard[0].error.as_deref().unwrap();
    assert!(
        error.contains("rules/looping.rhai ran more than 100 times a second over 5 s"),
        "{error}"
    );
    assert!(error.contains("paused for 60 s"), "{error}");
    // Paused once the average over 5 s passes 100 a second: after about 4 s at 125 a second.
    let looped = count("looping");
    assert!((495..=510).contains(&looped), "{looped} runs before the pause");
    assert!(guard[0].ts - t0 < 5 * SECOND, "{}", guard[0].ts - t0);

    // A minute later the rule runs again.
    sim.advance(60 * SECOND).unwrap();
    sim.publish("loop/a", "x").unwrap();
    assert_eq!(
        sim.runs()
            .iter()
            .filter(|r| &*r.rule == "looping" && r.trigger == "on_message")
            .count(),
        looped + 1
    );
}

mod real_loop {
    use std::time::Duration;

    use rumqttc::QoS;

    use crate::support::{Client, Engine, Setup, count, eventually};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_loop_through_the_broker_is_paused_and_ingest_goes_on() {
        let mut setup =
            Setup::embedded().rule("looping", r#"on_message("loop/a", |m| publish("loop/a", "x"));"#);
        // Low enough for a debug build under load; the default is 100.
        setup.rules_options = "  loop_guard_rate: 20\n  loop_guard_pause: 1h\n".into();
        let db = setup.db_path();
        let engine = Engine::start(setup).await;
        let client = Client::connect(engine.setup.port, "looper").await;
        client.publish("loop/a", "go", QoS::AtLeastOnce, false).await;
        eventually("the loop guard's row", Duration::from_secs(30), || async {
            (count(&db, "SELECT count(*) FROM rule_runs WHERE trigger = 'loop_guard' AND rule = 'looping' AND topic = 'loop/a' AND error LIKE '%paused%'").await == 1).then_some(())
        })
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let runs = "SELECT count(*) FROM rule_runs WHERE rule = 'looping'";
        let paused_at = count(&db, runs).await;
        client
            .publish("other/topic", "still stored", QoS::AtLeastOnce, false)
            .await;
        eventually("ingest goes on", Duration::from_secs(10), || async {
            (count(&db, "SELECT count(*) FROM messages WHERE topic = 'other/topic'").await == 1).then_some(())
        })
        .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(count(&db, runs).await, paused_at, "the rule still ran");
        engine.stop().await;
    }
}

#[test]
fn a_debounced_on_change_compares_the_value_before_the_burst_with_the_last_and_bad_options_are_errors() {
    let rule = r#"
on_change("dimmer", #{ debounce: "1s" }, |old, value| {
    let before = if old == () { "none" } else { old.payload };
    publish("dimmed", `${before}->${value.payload}`);
});
"#;
    let bad = r#"
on_message("a", #{ debounce: "1s", throttle: "1m" }, |msg| ());
"#;
    let house = House::new(&[("dimmer", rule)]);
    let t0 = local("2026-12-04", "18:00", 1);
    let mut sim = house.start(t0);
    sim.publish("dimmer", "10").unwrap();
    sim.advance(5 * SECOND).unwrap();
    for level in ["20", "30", "30", "40"] {
        sim.publish("dimmer", level).unwrap();
        sim.advance(300).unwrap();
    }
    sim.advance(5 * SECOND).unwrap();
    assert_eq!(
        published_on(&sim, "dimmed")
            .into_iter()
            .map(|(at, p)| (at - t0, p))
            .collect::<Vec<_>>(),
        [
            (SECOND, "none->10".to_string()),
            (5 * SECOND + 900 + SECOND, "10->40".to_string())
        ]
    );
    sim.stop();

    let house = House::new(&[("bad", bad)]);
    let dir = house.dir.path().join("rules");
    let limits = Limits {
        max_operations: 1_000,
        timeout: Duration::from_secs(1),
        max_string_size: 1 << 20,
        ..Limits::default()
    };
    let sim = Simulation::start(
        &house.dir.path().join("h.db"),
        &dir,
        Location::default(),
        limits,
        t0,
    )
    .unwrap();
    let problem = sim.problems[0].to_string();
    assert!(
        problem.contains("bad.rhai:2:") && problem.contains("use debounce or throttle, not both"),
        "{problem}"
    );
}
