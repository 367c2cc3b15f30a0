//! The example rules that ship in rules/ do what their comments say (on virtual time, with a restart
//! in the middle where it matters).

use std::path::Path;
use std::time::Duration;

use homewright::rules::Limits;
use homewright::scheduler::Location;
use homewright::sim::Simulation;

const MINUTE: i64 = 60_000;
/// 2026-05-04 12:00 UTC.
const START: i64 = 1_777_896_000_000;

fn start(db: &Path, at: i64) -> Simulation {
    let limits = Limits {
        max_operations: 1_000_000,
        timeout: Duration::from_secs(1),
        max_string_size: 1 << 22,
        ..Limits::default()
    };
    let location = Location {
        timezone: homewright::scheduler::Zone::named("Europe/Amsterdam").unwrap(),
        coordinates: Some((52.37, 4.89)),
    };
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    let sim = Simulation::start(db, &rules, location, limits, at).unwrap();
    assert!(sim.problems.is_empty(), "{:?}", sim.problems);
    sim
}

fn fan_commands(sim: &Simulation) -> Vec<(i64, String)> {
    sim.published()
        .into_iter()
        .filter(|(_, t, _)| t == "zigbee2mqtt/bathroom_fan/set")
        .map(|(at, _, p)| (at, p))
        .collect()
}

#[test]
fn the_bathroom_fan_runs_ten_minutes_after_the_shower_even_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("history.db");
    let mut sim = start(&db, START);
    sim.publish("zigbee2mqtt/bathroom_sensor", r#"{"humidity": 78}"#)
        .unwrap();
    sim.advance(5 * MINUTE).unwrap();
    sim.publish("zigbee2mqtt/bathroom_sensor", r#"{"humidity": 55}"#)
        .unwrap();
    let dried = sim.now();
    sim.advance(3 * MINUTE).unwrap();
    sim.stop();

    let mut sim = start(&db, dried + 4 * MINUTE);
    sim.advance(10 * MINUTE).unwrap();
    assert_eq!(
        fan_commands(&sim),
        vec![(dried + 10 * MINUTE, r#"{"state":"OFF"}"#.to_string())]
    );
}
