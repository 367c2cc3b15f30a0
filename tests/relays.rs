//! Relays with the simulated backend: timed switches across restarts, interlocks, max_on, MQTT
//! commands and the CLI, and what the pins do at start and stop.

use std::sync::Arc;
use std::time::Duration;

use homewright::config::gpio::{GpioConfig, OnStop, RelayConfig};
use homewright::relays::simulated::SimulatedBackend;
use homewright::sim::{Options, RuleSource, Simulation};
use rumqttc::QoS;

use crate::support::{Client, Engine, Process, Setup, eventually, query};

const MINUTE: i64 = 60_000;
/// 2026-05-04 12:00 UTC.
const START: i64 = 1_777_896_000_000;

fn relay(name: &str, pin: u8) -> RelayConfig {
    RelayConfig {
        name: name.into(),
        pin,
        active_low: false,
        initial: false,
        max_on: None,
        interlock: vec![],
        on_stop: OnStop::Off,
        restore: false,
    }
}

fn gpio() -> GpioConfig {
    let mut heater = relay("heater", 27);
    heater.interlock = vec!["cooler".into()];
    heater.max_on = Some(Duration::from_secs(3_600));
    GpioConfig {
        relays: vec![relay("cooler", 22), heater, relay("pump", 5)],
        ..Default::default()
    }
}

struct House {
    dir: tempfile::TempDir,
}

impl House {
    fn new(rule: &str) -> House {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("rules")).unwrap();
        std::fs::write(dir.path().join("rules/control.rhai"), rule).unwrap();
        House { dir }
    }

    fn start(&self, at: i64) -> Simulation {
        let options = Options {
            gpio: gpio(),
            ..Options::default()
        };
        let rules = [self.dir.path().join("rules/control.rhai")];
        let sim = Simulation::start_with(
            &self.dir.path().join("history.db"),
            RuleSource::Files(&rules),
            options,
            at,
        )
        .unwrap();
        assert!(sim.problems.is_empty(), "{:?}", sim.problems);
        sim
    }
}

const PUMP: &str = r#"on_message("water", |msg| { relay("pump").on_for("5m"); });"#;

#[test]
fn on_for_switches_off_after_5_minutes_and_a_second_call_at_4_extends_it_to_9() {
    let house = House::new(PUMP);
    let mut sim = house.start(START);
    sim.publish("water", "").unwrap();
    assert_eq!(sim.relay_is_on("pump"), Some(true));
    sim.advance(4 * MINUTE).unwrap();
    sim.publish("water", "").unwrap();
    sim.advance(4 * MINUTE + 59_000).unwrap();
    assert_eq!(sim.relay_is_on("pump"), Some(true), "still on at 8:59");
    sim.advance(1_000).unwrap();
    assert_eq!(sim.relay_is_on("pump"), Some(false), "off at 9:00");
    let states: Vec<(i64, String)> = sim
        .published()
        .into_iter()
        .filter(|(_, t, _)| t == "homewright/relay/pump")
        .map(|(at, _, p)| (at, p))
        .collect();
    assert_eq!(states.last(), Some(&(START + 9 * MINUTE, "OFF".to_string())));
}

#[test]
fn the_extended_on_for_also_holds_across_a_restart() {
    let house = House::new(PUMP);
    let mut sim = house.start(START);
    sim.publish("water", "").unwrap();
    sim.advance(4 * MINUTE).unwrap();
    sim.publish("water", "").unwrap();
    sim.advance(MINUTE).unwrap();
    sim.stop();

    let mut sim = house.start(START + 6 * MINUTE);
    assert_eq!(
        sim.relay_is_on("pump"),
        Some(true),
        "on again after the restart: its off is still pending"
    );
    sim.advance_to(START + 9 * MINUTE - 1).unwrap();
    assert_eq!(sim.relay_is_on("pump"), Some(true));
    sim.advance_to(START + 9 * MINUTE).unwrap();
    assert_eq!(sim.relay_is_on("pump"), Some(false));
}

#[test]
fn the_interlock_refuses_the_heater_while_the_cooler_is_on_and_max_on_forces_it_off() {
    let house = House::new(
        r#"on_message("cool", |msg| { relay("cooler").on(); });
           on_message("warm", |msg| { let ok = relay("heater").on(); publish("heater/accepted", `${ok}`); });
           on_message("stop", |msg| { relay("cooler").off(); });"#,
    );
    let mut sim = house.start(START);
    sim.publish("cool", "").unwrap();
    sim.publish("warm", "").unwrap();
    assert_eq!(sim.relay_is_on("heater"), Some(false));
    sim.publish("stop", "").unwrap();
    sim.publish("warm", "").unwrap();
    assert_eq!(sim.relay_is_on("heater"), Some(true));
    let accepted: Vec<String> = sim
        .published()
        .into_iter()
        .filter(|(_, t, _)| t == "heater/accepted")
        .map(|(_, _, p)| p)
        .collect();
    assert_eq!(accepted, ["false", "true"]);
    sim.advance(60 * MINUTE).unwrap();
    assert_eq!(sim.relay_is_on("heater"), Some(false), "max_on: 1h");
}

#[test]
fn a_set_message_switches_a_relay_and_its_state_follows_and_a_bad_command_changes_nothing() {
    let house = House::new("let x = 1;");
    let mut sim = house.start(START);
    sim.publish("homewright/relay/pump/set", "on").unwrap();
    assert_eq!(sim.relay_is_on("pump"), Some(true));
    sim.publish("homewright/relay/pump/set", "Toggle").unwrap();
    assert_eq!(sim.relay_is_on("pump"), Some(false));
    let before = sim.published().len();
    sim.publish("homewright/relay/pump/set", "explode").unwrap();
    assert_eq!(sim.relay_is_on("pump"), Some(false));
    assert_eq!(sim.published().len(), before, "a bad command publishes nothing");
    let states: Vec<String> = sim
        .published()
        .into_iter()
        .filter(|(_, t, _)| t == "homewright/relay/pump")
        .map(|(_, _, p)| p)
        .collect();
    assert_eq!(states, ["OFF", "ON", "OFF"], "start, on, toggle");
}

const GPIO_SECTION: &str = "gpio:\n  backend: simulated\n  relays:\n    porch: { pin: 17, active_low: true }\n    fan: { pin: 4, initial: on }\n    cooler: { pin: 22, initial: on, on_stop: hold }\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_leaves_each_relay_in_its_on_stop_state_and_active_low_inverts_only_the_level() {
    let backend = Arc::new(SimulatedBackend::with_levels(&[
        (17, true),
        (4, true),
        (22, true),
    ]));
    let mut setup = Setup::embedded().rule(
        "porch",
        r#"on_message("motion", |msg| { relay("porch").on(); });"#,
    );
    setup.extra_config = GPIO_SECTION.into();
    let engine = Engine::start_with(setup, Some(Arc::new(Arc::clone(&backend)))).await;
    let client = Client::connect(engine.setup.port, "relay-watch").await;
    client.subscribe("homewright/relay/porch").await;
    assert_eq!(
        &client
            .next_on("homewright/relay/porch", Duration::from_secs(10))
            .await
            .payload[..],
        b"OFF"
    );
    client.publish("motion", "", QoS::AtLeastOnce, false).await;
    assert_eq!(
        &client
            .next_on("homewright/relay/porch", Duration::from_secs(10))
            .await
            .payload[..],
        b"ON"
    );
    let setup = engine.stop().await;

    let writes: Vec<(u8, bool)> = backend.writes().iter().map(|w| (w.pin, w.high)).collect();
    let of = |pin: u8| {
        writes
            .iter()
            .filter(|(p, _)| *p == pin)
            .map(|(_, high)| *high)
            .collect::<Vec<_>>()
    };
    // porch is active-low: off is high (at open and at start), on is low, and the stop drives it high.
    assert_eq!(of(17), [true, true, false, true]);
    // fan (initial on, on_stop off): on at open and start, off at stop.
    assert_eq!(of(4), [true, true, false]);
    // cooler (on_stop: hold): never written at stop.
    assert_eq!(of(22), [true, true]);
    let db = setup.db_path();
    let stop = query(
        &db,
        "SELECT target, value, cause FROM actions WHERE cause = 'shutdown' ORDER BY target",
    )
    .await;
    assert_eq!(stop.rows.len(), 2, "{stop:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_command_switches_through_the_running_service() {
    let mut setup = Setup::embedded();
    setup.extra_config = GPIO_SECTION.into();
    let engine = Process::start(&setup).await;
    let run = |args: &[&str]| {
        let output = crate::support::homewright_command()
            .current_dir(setup.dir.path())
            .args(args)
            .output()
            .unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (code, out, err) = run(&["relay", "porch", "on"]);
    assert_eq!((code, out.as_str()), (Some(0), "porch is ON\n"), "{err}");
    let (code, out, _) = run(&["relay", "porch", "toggle"]);
    assert_eq!((code, out.as_str()), (Some(0), "porch is OFF\n"));
    let (code, _, err) = run(&["relay", "garage", "on"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("there is no relay `garage`"), "{err}");
    let db = setup.db_path();
    eventually("the CLI switches recorded", Duration::from_secs(10), || async {
        let rows = query(&db, "SELECT value FROM actions WHERE cause = 'cli' ORDER BY id")
            .await
            .rows;
        (rows.len() == 2).then_some(())
    })
    .await;
    engine.signal("TERM");
    assert_eq!(engine.wait().await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_on_cancels_a_pending_on_for_and_a_later_on_for_does_not_limit_it_live() {
    let mut setup = Setup::embedded().rule(
        "porch",
        r#"on_message("motion", |msg| { relay("porch").on_for("1s"); });
           on_message("button", |msg| { relay("porch").on(); });"#,
    );
    setup.extra_config = GPIO_SECTION.into();
    let engine = Engine::start(setup).await;
    let client = Client::connect(engine.setup.port, "on-for-watch").await;
    client.subscribe("homewright/relay/porch").await;
    let next = || client.next_on("homewright/relay/porch", Duration::from_secs(10));
    assert_eq!(&next().await.payload[..], b"OFF");
    client.publish("motion", "", QoS::AtLeastOnce, false).await;
    assert_eq!(&next().await.payload[..], b"ON");
    client.publish("button", "", QoS::AtLeastOnce, false).await;
    client.publish("motion", "", QoS::AtLeastOnce, false).await;
    let state = "SELECT is_on, off_due IS NULL FROM relays WHERE name = 'porch'";
    eventually(
        "the button's on is persisted without an off time",
        Duration::from_secs(10),
        || async {
            let rows = engine.query(state).await.rows;
            (rows.len() == 1 && crate::support::text(&rows[0][1]) == "1").then_some(())
        },
    )
    .await;
    // Well past the on_for's second: still on, and no OFF was published.
    assert!(
        client
            .try_next_on("homewright/relay/porch", Duration::from_secs(3))
            .await
            .is_none(),
        "the relay switched after the button's on"
    );
    let rows = engine.query(state).await.rows;
    assert_eq!(crate::support::text(&rows[0][0]), "1");
    engine.stop().await;
}

/// Checked against Home Assistant's MQTT discovery schema: ids of `[a-zA-Z0-9_-]` (the node id in the
/// topic and `unique_id`), `default_entity_id` as `switch.<slug>` instead of the removed `object_id`,
/// an `origin`, the device's `sw_version`; and a relay removed from the config leaves no ghost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn home_assistant_discovery_follows_its_schema_and_clears_relays_that_are_gone() {
    let Some(broker) = crate::support::mosquitto::Mosquitto::start().await else {
        return;
    };
    let mut setup = Setup::external(broker.port);
    setup.mqtt_options = "  base_topic: house/engine\n".into();
    let gpio = |relays: &str| {
        format!("gpio:\n  backend: simulated\n  relays:\n{relays}homeassistant:\n  discovery: true\n")
    };
    setup.extra_config = gpio("    porch: { pin: 17 }\n    Fan-2: { pin: 4 }\n");
    let engine = Engine::start(setup).await;
    let watch = Client::connect(broker.port, "ha-watch").await;
    watch.subscribe("homeassistant/#").await;
    let topic = "homeassistant/switch/house_engine/Fan-2/config";
    let config: serde_json::Value =
        serde_json::from_slice(&watch.next_on(topic, Duration::from_secs(10)).await.payload).unwrap();
    let id = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    let unique_id = config["unique_id"].as_str().unwrap();
    assert!(unique_id.chars().all(id), "{unique_id}");
    assert_eq!(unique_id, "house_engine_Fan-2");
    assert_eq!(config["default_entity_id"], "switch.house_engine_fan_2");
    assert!(config.get("object_id").is_none(), "{config}");
    assert_eq!(config["origin"]["name"], "homewright");
    assert_eq!(config["origin"]["sw_version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(config["device"]["sw_version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(config["device"]["identifiers"][0], "house_engine");
    assert_eq!(config["command_topic"], "house/engine/relay/Fan-2/set");
    assert_eq!(config["state_topic"], "house/engine/relay/Fan-2");
    drop(watch);
    let mut setup = engine.stop().await;

    // Fan-2 is removed from the config: its retained config and state are gone from the broker.
    setup.extra_config = gpio("    porch: { pin: 17 }\n");
    let engine = Engine::start(setup).await;
    let late = Client::connect(broker.port, "ha-late").await;
    late.subscribe("homeassistant/#").await;
    let states = Client::connect(broker.port, "ha-states").await;
    states.subscribe("house/engine/relay/#").await;
    let porch = late
        .next_on(
            "homeassistant/switch/house_engine/porch/config",
            Duration::from_secs(10),
        )
        .await;
    assert!(porch.retain && !porch.payload.is_empty());
    let ghost = late.try_next_on(topic, Duration::from_secs(2)).await;
    assert!(ghost.is_none(), "a ghost switch: {ghost:?}");
    let state = states
        .try_next_on("house/engine/relay/Fan-2", Duration::from_secs(1))
        .await;
    assert!(state.is_none(), "a ghost state: {state:?}");
    engine.stop().await;
}

/// `homewright relay` while the service is down says it failed; the broker keeps the command for the
/// service's session, and the service must not act on it when it starts again, long after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_command_the_cli_gave_up_on_never_switches_later_and_a_refusal_is_printed() {
    let Some(broker) = crate::support::mosquitto::Mosquitto::start().await else {
        return;
    };
    let mut setup = Setup::external(broker.port);
    setup.extra_config = "gpio:\n  backend: simulated\n  relays:\n    porch: { pin: 17 }\n    cooler: { pin: 22, initial: on }\n    heater: { pin: 27, interlock: [cooler] }\n".into();
    let log = setup.dir.path().join("engine.log");
    let run = |args: &[&str]| {
        let output = crate::support::homewright_command()
            .current_dir(setup.dir.path())
            .args(args)
            .output()
            .unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let engine = Process::start_logged(&setup, &log).await;
    let (code, out, err) = run(&["relay", "porch", "On"]);
    assert_eq!((code, out.as_str()), (Some(0), "porch is ON\n"), "{err}");
    let (code, out, err) = run(&["relay", "porch", "OFF"]);
    assert_eq!((code, out.as_str()), (Some(0), "porch is OFF\n"), "{err}");
    let (code, _, err) = run(&["relay", "heater", "on"]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("refused to switch heater on: it is interlocked with cooler"),
        "{err}"
    );
    engine.signal("TERM");
    assert_eq!(engine.wait().await, Some(0));

    let (code, _, err) = run(&["relay", "porch", "on"]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("no answer about porch") && err.contains("will not switch later"),
        "{err}"
    );
    let engine = Process::start_logged(&setup, &log).await;
    let db = setup.db_path();
    let cli = "SELECT value FROM actions WHERE cause = 'cli' ORDER BY id";
    // The queued command arrives once the service is subscribed: it is either ignored (logged) or acted on.
    eventually(
        "the queued command is handled",
        Duration::from_secs(10),
        || async {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            (text.contains("expired") || query(&db, cli).await.rows.len() > 2).then_some(())
        },
    )
    .await;
    let rows = query(&db, cli).await.rows;
    let values: Vec<String> = rows.iter().map(|r| crate::support::text(&r[0])).collect();
    assert_eq!(values, ["ON", "OFF"], "only the two answered commands switched");
    let porch = query(&db, "SELECT is_on FROM relays WHERE name = 'porch'")
        .await
        .rows;
    assert_eq!(crate::support::text(&porch[0][0]), "0");
    engine.signal("TERM");
    assert_eq!(engine.wait().await, Some(0));
}
