//! The engine binary (the debug build the tests use) under libfaketime: its wall clock is moved while
//! it runs, by rewriting the file `FAKETIME_TIMESTAMP_FILE` names (re-read on every call with
//! `FAKETIME_NO_CACHE=1`); its monotonic clock stays true (`FAKETIME_DONT_FAKE_MONOTONIC=1`). The
//! test's own clocks are not faked. Skipped when libfaketime is not installed, unless
//! `HOMEWRIGHT_REQUIRE_FAKETIME=1` (set by `.ci/run`, which installs it).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rumqttc::QoS;

use crate::support::{Client, Process, Setup};

/// Where Debian's `faketime` package puts the library.
const LIBRARIES: [&str; 2] = [
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
];

const GPIO: &str =
    "gpio:\n  backend: simulated\n  relays:\n    heater: { pin: 27, max_on: 6s }\n    pump: { pin: 5 }\n";

/// The wall clock of the engines it is applied to.
struct FakeClock {
    file: PathBuf,
    library: &'static str,
}

impl FakeClock {
    /// A fake clock showing the real time, or `None` (the test is skipped) without libfaketime.
    fn new(dir: &Path) -> Option<FakeClock> {
        let Some(library) = LIBRARIES.into_iter().find(|l| Path::new(l).exists()) else {
            assert!(
                std::env::var("HOMEWRIGHT_REQUIRE_FAKETIME").as_deref() != Ok("1"),
                "HOMEWRIGHT_REQUIRE_FAKETIME=1 but libfaketime is not installed (apt-get install faketime)"
            );
            eprintln!("skipped: libfaketime is not installed (apt-get install faketime)");
            return None;
        };
        let clock = FakeClock {
            file: dir.join("faketime"),
            library,
        };
        clock.set(0);
        Some(clock)
    }

    /// `setup` with its engine on this clock.
    fn apply(&self, mut setup: Setup) -> Setup {
        setup.env.extend([
            ("LD_PRELOAD".into(), self.library.into()),
            ("FAKETIME_TIMESTAMP_FILE".into(), self.file.display().to_string()),
            ("FAKETIME_NO_CACHE".into(), "1".into()),
            ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
        ]);
        setup
    }

    /// Shows the real time plus `seconds` from now on (renamed into place: never read half-written).
    fn set(&self, seconds: i64) {
        let next = self.file.with_extension("next");
        std::fs::write(&next, format!("{seconds:+}\n")).expect("write the fake time");
        std::fs::rename(&next, &self.file).expect("move the fake time into place");
    }
}

/// An engine with the heater (`max_on: 6s`) and the pump, on a fake clock, and `rule`.
fn house(rule: &str) -> Option<(Setup, FakeClock)> {
    let mut setup = Setup::embedded().rule("house", rule);
    setup.extra_config = GPIO.into();
    let clock = FakeClock::new(setup.dir.path())?;
    Some((clock.apply(setup), clock))
}

/// When `payload` next arrives on `topic`, if it does within `timeout`.
async fn arrival(client: &Client, topic: &str, payload: &str, timeout: Duration) -> Option<Instant> {
    let until = Instant::now() + timeout;
    while let Some(left) = until.checked_duration_since(Instant::now()) {
        match client.try_next_on(topic, left).await {
            Some(p) if p.payload == payload.as_bytes() => return Some(Instant::now()),
            Some(_) => continue,
            None => return None,
        }
    }
    None
}

/// When the relay whose state `topic` carries went on, then off again, if it did within 30 s each.
async fn on_then_off(client: &Client, topic: &str) -> Option<(Instant, Instant)> {
    let on = arrival(client, topic, "ON", Duration::from_secs(30)).await?;
    let off = arrival(client, topic, "OFF", Duration::from_secs(30)).await?;
    Some((on, off))
}

/// A client listening to `topic`.
async fn listen(port: u16, topic: &str) -> Client {
    let client = Client::connect(port, &format!("watch-{}", topic.replace('/', "-"))).await;
    client.subscribe(topic).await;
    client
}

const RELAYS: &str = r#"on_message("go", |msg| { relay("heater").on(); relay("pump").on_for("3s"); });"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_for_and_max_on_end_on_time_when_the_clock_is_set_back_an_hour() {
    let Some((setup, clock)) = house(RELAYS) else {
        return;
    };
    let _engine = Process::start(&setup).await;
    let pump = listen(setup.port, "homewright/relay/pump").await;
    let heater = listen(setup.port, "homewright/relay/heater").await;
    let sender = Client::connect(setup.port, "sender").await;
    sender.publish("go", "", QoS::AtLeastOnce, false).await;
    let jump = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        clock.set(-3_600);
    };
    let (pump, heater, ()) = tokio::join!(
        on_then_off(&pump, "homewright/relay/pump"),
        on_then_off(&heater, "homewright/relay/heater"),
        jump
    );
    let (on, pump_off) = pump.expect("the pump goes off (before: still on 99 s later)");
    let (_, heater_off) = heater.expect("the heater goes off at its max_on (before: still on 99 s later)");
    let (pump_on_for, heater_on_for) = (pump_off - on, heater_off - on);
    assert!(
        pump_on_for >= Duration::from_millis(2_500),
        "pump on {pump_on_for:?}"
    );
    assert!(
        heater_on_for >= Duration::from_millis(5_500),
        "heater on {heater_on_for:?}"
    );
    eprintln!(
        "after a jump back of 1 h: pump on {pump_on_for:?} (on_for 3s), heater {heater_on_for:?} (max_on 6s)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_keeps_running_when_the_clock_is_set_back_90_seconds() {
    let Some((setup, clock)) = house(r#"every("2s", || publish("tick", "x"));"#) else {
        return;
    };
    let _engine = Process::start(&setup).await;
    let ticks = listen(setup.port, "tick").await;
    arrival(&ticks, "tick", "x", Duration::from_secs(10))
        .await
        .expect("a first tick");
    clock.set(-90);
    let jumped = Instant::now();
    let mut count = 0;
    while arrival(&ticks, "tick", "x", Duration::from_secs(10))
        .await
        .is_some()
    {
        count += 1;
        if count == 4 {
            break;
        }
    }
    assert_eq!(count, 4, "ticks after the jump back (before: none for 90 s)");
    eprintln!(
        "4 ticks of every(\"2s\") in {:?} after a jump back of 90 s",
        jumped.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forward_jump_of_three_hours_fires_no_after_timer_early() {
    let Some((setup, clock)) =
        house(r#"on_message("go", |msg| { after("5s", || publish("timer", "5s")); });"#)
    else {
        return;
    };
    let _engine = Process::start(&setup).await;
    let timer = listen(setup.port, "timer").await;
    let sender = Client::connect(setup.port, "sender").await;
    let sent = Instant::now();
    sender.publish("go", "", QoS::AtLeastOnce, false).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    clock.set(3 * 3_600);
    let fired = arrival(&timer, "timer", "5s", Duration::from_secs(30))
        .await
        .expect("the timer fires");
    let after = fired - sent;
    assert!(
        after >= Duration::from_millis(4_500),
        "fired {after:?} after it was set (before: at the jump)"
    );
    eprintln!("after(\"5s\") fired {after:?} after it was set, across a jump forward of 3 h");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_two_hours_behind_then_ntp_switches_a_pending_on_for_off_on_time() {
    let rule = r#"on_message("go", |msg| { relay("pump").on_for("12s"); });
                  every("1s", || publish("tick", "x"));"#;
    let Some((setup, clock)) = house(rule) else { return };
    let engine = Process::start(&setup).await;
    let pump = listen(setup.port, "homewright/relay/pump").await;
    let sender = Client::connect(setup.port, "sender").await;
    sender.publish("go", "", QoS::AtLeastOnce, false).await;
    let on = arrival(&pump, "homewright/relay/pump", "ON", Duration::from_secs(10))
        .await
        .expect("the pump goes on");
    tokio::time::sleep(Duration::from_secs(2)).await;
    engine.signal("KILL");
    drop(engine);
    drop((pump, sender));

    // A Pi without a real-time clock boots on a time two hours old, then NTP syncs.
    clock.set(-2 * 3_600);
    let _engine = Process::start(&setup).await;
    let restarted = Instant::now();
    let pump = listen(setup.port, "homewright/relay/pump").await;
    let ticks = listen(setup.port, "tick").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    clock.set(0);
    let off = arrival(&pump, "homewright/relay/pump", "OFF", Duration::from_secs(30))
        .await
        .expect("the pump goes off");
    assert!(
        off - on <= Duration::from_secs(12) + (restarted - on) + Duration::from_secs(2),
        "the pump stayed on {:?} in all, {:?} after the restart",
        off - on,
        off - restarted
    );
    let mut count = 0;
    while ticks
        .try_next_on("tick", Duration::from_millis(10))
        .await
        .is_some()
    {
        count += 1;
    }
    let seconds = restarted.elapsed().as_secs();
    assert!(
        count <= seconds + 2,
        "{count} ticks of every(\"1s\") in {seconds} s: a storm"
    );
    eprintln!(
        "restart 2 h behind, NTP at +2 s: pump off {:?} after the restart ({:?} in all, on_for 12s); {count} ticks in {seconds} s",
        off - restarted,
        off - on
    );
}
