//! Wall-clock jumps. On virtual time (the rules as the engine's clock hands them a jump, and a restart
//! on a clock behind the history), then the engine binary under libfaketime with its wall clock moved
//! while it runs (`faketime` module).

use std::path::PathBuf;
use std::time::Duration;

use homewright::config::gpio::{GpioConfig, OnStop, RelayConfig};
use homewright::scheduler::{Location, Zone};
use homewright::sim::{Options, RuleSource, Simulation};

mod faketime;

const SECOND: i64 = 1_000;
const MINUTE: i64 = 60 * SECOND;
const HOUR: i64 = 60 * MINUTE;
/// 2026-05-04 12:00:30 UTC: half a minute past, so "every minute" crons are not due at the start.
const START: i64 = 1_777_896_030_000;

fn relay(name: &str, pin: u8, max_on: Option<Duration>) -> RelayConfig {
    RelayConfig {
        name: name.into(),
        pin,
        active_low: false,
        initial: false,
        max_on,
        interlock: vec![],
        on_stop: OnStop::Off,
        restore: false,
    }
}

struct House {
    dir: tempfile::TempDir,
}

impl House {
    fn new(rule: &str) -> House {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("house.rhai"), rule).unwrap();
        House { dir }
    }

    fn options() -> Options {
        Options {
            location: Location {
                timezone: Zone::named("UTC").unwrap(),
                coordinates: None,
            },
            gpio: GpioConfig {
                relays: vec![
                    relay("heater", 27, Some(Duration::from_secs(6))),
                    relay("pump", 5, None),
                ],
                ..Default::default()
            },
            ..Options::default()
        }
    }

    fn rules(&self) -> [PathBuf; 1] {
        [self.dir.path().join("house.rhai")]
    }

    fn db(&self) -> PathBuf {
        self.dir.path().join("history.db")
    }

    fn start(&self, at: i64) -> Simulation {
        let rules = self.rules();
        let sim =
            Simulation::start_with(&self.db(), RuleSource::Files(&rules), House::options(), at).unwrap();
        assert!(sim.problems.is_empty(), "{:?}", sim.problems);
        sim
    }

    fn restart(&self, sim: &mut Simulation, down: i64) {
        let rules = self.rules();
        sim.restart(&self.db(), RuleSource::Files(&rules), House::options(), down)
            .unwrap();
    }
}

fn times(sim: &Simulation, topic: &str) -> Vec<i64> {
    sim.published()
        .into_iter()
        .filter(|(_, t, _)| t == topic)
        .map(|(at, _, _)| at)
        .collect()
}

const RELAYS: &str = r#"on_message("go", |msg| { relay("heater").on(); relay("pump").on_for("3s"); });"#;

#[test]
fn on_for_and_max_on_end_on_time_after_the_clock_is_set_back_an_hour() {
    let mut sim = House::new(RELAYS).start(START);
    sim.publish("go", "").unwrap();
    sim.advance(SECOND).unwrap();
    sim.jump_clock(-HOUR).unwrap();
    sim.advance(SECOND + 999).unwrap();
    assert_eq!(sim.relay_is_on("pump"), Some(true), "2.999 s after on");
    sim.advance(1).unwrap();
    assert_eq!(sim.relay_is_on("pump"), Some(false), "off 3 s after on");
    sim.advance(2 * SECOND + 999).unwrap();
    assert_eq!(sim.relay_is_on("heater"), Some(true), "5.999 s after on");
    sim.advance(1).unwrap();
    assert_eq!(sim.relay_is_on("heater"), Some(false), "max_on: off 6 s after on");
    let back = START - HOUR;
    assert_eq!(
        times(&sim, "homewright/relay/pump").last(),
        Some(&(back + 3 * SECOND))
    );
    assert_eq!(
        times(&sim, "homewright/relay/heater").last(),
        Some(&(back + 6 * SECOND))
    );
}

#[test]
fn a_forward_jump_of_three_hours_fires_no_after_timer_early() {
    let mut sim = House::new(
        r#"on_message("go", |msg| {
               after("5m", || publish("timer", "5m"));
               after("2m", || publish("timer", "2m"));
           });"#,
    )
    .start(START);
    sim.publish("go", "").unwrap();
    sim.advance(MINUTE).unwrap();
    sim.jump_clock(3 * HOUR).unwrap();
    sim.advance(SECOND).unwrap();
    assert!(times(&sim, "timer").is_empty(), "nothing fired at the jump");
    sim.advance(10 * MINUTE).unwrap();
    let ahead = START + 3 * HOUR;
    assert_eq!(
        times(&sim, "timer"),
        vec![ahead + 2 * MINUTE, ahead + 5 * MINUTE],
        "each as long after it was set as it says"
    );
}

#[test]
fn a_timer_moved_by_a_jump_keeps_its_moved_time_across_a_restart() {
    let house = House::new(r#"on_message("go", |msg| { after("5m", || publish("timer", "5m")); });"#);
    let mut sim = house.start(START);
    sim.publish("go", "").unwrap();
    sim.advance(MINUTE).unwrap();
    sim.jump_clock(3 * HOUR).unwrap();
    house.restart(&mut sim, 0);
    sim.advance(10 * MINUTE).unwrap();
    assert_eq!(
        times(&sim, "timer"),
        vec![START + 3 * HOUR + 5 * MINUTE],
        "at its moved time, not late at the restart"
    );
    assert!(sim.runs().iter().all(|r| !r.late));
}

#[test]
fn every_keeps_its_rhythm_after_the_clock_is_set_back_90_seconds() {
    let mut sim = House::new(r#"every("2s", || publish("tick", "x"));"#).start(START);
    sim.advance(5 * SECOND).unwrap();
    sim.jump_clock(-90 * SECOND).unwrap();
    sim.advance(10 * SECOND).unwrap();
    let after_jump: Vec<i64> = times(&sim, "tick").into_iter().filter(|at| *at < START).collect();
    let back = START + 5 * SECOND - 90 * SECOND;
    assert_eq!(
        after_jump,
        (0..5).map(|i| back + SECOND + i * 2 * SECOND).collect::<Vec<_>>(),
        "every 2 s, on the rhythm it had"
    );
}

#[test]
fn a_forward_jump_skips_calendar_firings_and_catches_up_only_those_that_asked() {
    let mut sim = House::new(
        r#"cron("0 * * * *", || publish("hourly", "plain"));
           cron("0 * * * *", #{ catch_up: true }, || publish("hourly", "caught"));"#,
    )
    .start(START);
    sim.jump_clock(3 * HOUR).unwrap();
    let hourly: Vec<(i64, String, String)> = sim
        .published()
        .into_iter()
        .filter(|(_, t, _)| t == "hourly")
        .collect();
    assert_eq!(
        hourly,
        vec![(START + 3 * HOUR, "hourly".to_string(), "caught".to_string())],
        "three hours jumped over: the catch-up one runs once, the plain one not at all"
    );
    assert!(sim.runs().iter().all(|r| r.late));
    sim.advance(HOUR).unwrap();
    let next = START - 30 * SECOND + 4 * HOUR;
    assert_eq!(times(&sim, "hourly"), vec![START + 3 * HOUR, next, next]);
}

#[test]
fn a_backward_jump_keeps_a_minutely_cron_going_and_never_repeats_a_daily_one() {
    let mut sim = House::new(
        r#"cron("* * * * *", || publish("minutely", "x"));
           cron("0 12 * * *", || publish("noon", "x"));"#,
    )
    .start(START - 31 * SECOND);
    // 12:00:00: noon and the minute run.
    sim.advance(SECOND).unwrap();
    assert_eq!(times(&sim, "noon").len(), 1);
    sim.advance(30 * SECOND).unwrap();
    sim.jump_clock(-90 * SECOND).unwrap();
    // Now 11:59:00 again: the minutely cron runs at 12:00:00, noon does not repeat.
    sim.advance(2 * MINUTE).unwrap();
    let minutely = times(&sim, "minutely");
    let noon = START - 30 * SECOND;
    assert_eq!(minutely, vec![noon, noon, noon + MINUTE], "no stall of 90 s");
    assert_eq!(times(&sim, "noon"), vec![noon], "noon ran once");
}

#[test]
fn a_restart_on_a_clock_two_hours_behind_keeps_what_was_left_of_on_for_and_after() {
    let house = House::new(
        r#"on_message("go", |msg| {
               relay("pump").on_for("30s");
               after("1m", || publish("timer", "1m"));
           });"#,
    );
    let mut sim = house.start(START);
    sim.publish("go", "").unwrap();
    sim.advance(5 * SECOND).unwrap();
    sim.publish("alive", "").unwrap();
    // A Pi without a real-time clock boots on a time two hours old.
    house.restart(&mut sim, -2 * HOUR);
    let boot = START + 5 * SECOND - 2 * HOUR;
    assert_eq!(sim.now(), boot);
    assert_eq!(sim.relay_is_on("pump"), Some(true));
    sim.advance(10 * SECOND).unwrap();
    // NTP syncs: the clock jumps forward to the real time.
    sim.jump_clock(2 * HOUR).unwrap();
    sim.advance(14 * SECOND + 999).unwrap();
    assert_eq!(sim.relay_is_on("pump"), Some(true), "24.999 s after the restart");
    sim.advance(1).unwrap();
    assert_eq!(
        sim.relay_is_on("pump"),
        Some(false),
        "off 25 s after the restart: the 30 s less the 5 s before it"
    );
    sim.advance(MINUTE).unwrap();
    let synced = boot + 2 * HOUR;
    assert_eq!(
        times(&sim, "timer"),
        vec![synced + 55 * SECOND],
        "55 s after the restart: the 60 s less the 5 s before it"
    );
    assert!(sim.runs().iter().all(|r| !r.late), "nothing ran as missed");
}
