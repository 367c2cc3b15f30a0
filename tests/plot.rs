//! `homewright plot` over a history written by the engine's store: SVG, PNG and the terminal chart.

use std::path::{Path, PathBuf};
use std::process::Output;

use bytes::Bytes;
use homewright::event::{Message, now_millis};
use homewright::store::Store;

/// The colour of the chart's line (plotters' default palette blue), to find it in the PNG.
const LINE: [u8; 3] = [0x1f, 0x77, 0xb4];

fn homewright(args: &[&str]) -> Output {
    crate::support::homewright_command()
        .args(args)
        .output()
        .expect("run homewright")
}

/// Whether the system font the charts draw their text with is installed. Without it the file charts are
/// skipped (as the Mosquitto tests are), unless HOMEWRIGHT_REQUIRE_FONTS=1 (CI installs it and sets it):
/// `cargo test` on a machine with only Rust must pass.
fn font_installed() -> bool {
    let found = [
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/TTF/DejaVuSans.ttf",
        "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    ]
    .iter()
    .any(|p| Path::new(p).is_file());
    if !found {
        let required = std::env::var("HOMEWRIGHT_REQUIRE_FONTS").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "DejaVu Sans is required (HOMEWRIGHT_REQUIRE_FONTS=1) but not installed"
        );
        eprintln!("skipped: DejaVu Sans (fonts-dejavu-core) is not installed");
    }
    found
}

/// A history of the last three hours: a temperature every 10 minutes (with one non-numeric payload),
/// a JSON sensor, and a relay switched on for an hour.
async fn history(dir: &Path) -> PathBuf {
    let path = dir.join("history.db");
    let store = Store::open(&path).await.expect("open store");
    let now = now_millis();
    let minute = 60_000;
    let mut messages: Vec<Message> = (0..18)
        .map(|i| {
            message(
                now - (180 - i * 10) * minute,
                "greenhouse/temperature",
                format!("{}", 20 + i % 7),
            )
        })
        .collect();
    messages.push(message(
        now - 5 * minute,
        "greenhouse/temperature",
        "sensor offline".into(),
    ));
    messages.push(message(
        now - 30 * minute,
        "kitchen/sensor",
        r#"{"temperature": 21.5}"#.into(),
    ));
    messages.push(message(
        now - 20 * minute,
        "kitchen/sensor",
        r#"{"temperature": 22.5}"#.into(),
    ));
    messages.push(message(
        now - 120 * minute,
        "homewright/relay/heater",
        "ON".into(),
    ));
    messages.push(message(
        now - 60 * minute,
        "homewright/relay/heater",
        "OFF".into(),
    ));
    store
        .insert_messages(&messages.iter().collect::<Vec<_>>())
        .await
        .expect("insert");
    store.close().await;
    path
}

fn message(ts: i64, topic: &str, payload: String) -> Message {
    Message {
        ts,
        topic: topic.into(),
        payload: Bytes::from(payload),
        qos: 1,
        retain: false,
        dup: false,
    }
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test]
async fn plot_writes_an_svg_with_the_line_and_its_labels() {
    if !font_installed() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let db = history(dir.path()).await;
    let svg = dir.path().join("chart.svg");
    let output = homewright(&[
        "plot",
        "--db",
        db.to_str().unwrap(),
        "greenhouse/temperature",
        "--since",
        "4h",
        "--out",
        svg.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert!(stdout(&output).contains("(18 values)"), "{}", stdout(&output));
    let text = std::fs::read_to_string(&svg).expect("read svg");
    assert!(text.starts_with("<svg"), "{}", &text[..100.min(text.len())]);
    assert!(text.contains("greenhouse/temperature"), "no title");
    assert!(text.contains("<polyline"), "no line");
    assert!(text.contains("\n26\n</text>"), "no label for the highest value");
}

#[tokio::test]
async fn plot_writes_a_png_that_shows_the_line() {
    if !font_installed() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let db = history(dir.path()).await;
    let png = dir.path().join("chart.png");
    let output = homewright(&[
        "plot",
        "--db",
        db.to_str().unwrap(),
        "kitchen/sensor:$.temperature",
        "--since",
        "1h",
        "--out",
        png.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let image = image::open(&png).expect("decode png").to_rgb8();
    assert_eq!(image.dimensions(), (1000, 500));
    let line_pixels = image.pixels().filter(|p| p.0 == LINE).count();
    assert!(line_pixels > 200, "only {line_pixels} pixels of the line");
}

#[tokio::test]
async fn the_terminal_chart_fits_80_columns_and_shows_relay_periods() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = history(dir.path()).await;
    let db = db.to_str().unwrap();
    let numbers = stdout(&homewright(&[
        "plot",
        "--db",
        db,
        "greenhouse/temperature",
        "--since",
        "4h",
    ]));
    assert!(
        numbers.starts_with("greenhouse/temperature  (18 values, 20 .. 26)"),
        "{numbers}"
    );
    assert!(numbers.contains('•'), "{numbers}");
    let relay = stdout(&homewright(&[
        "plot",
        "--db",
        db,
        "homewright/relay/heater",
        "--since",
        "3h",
    ]));
    // On from 2h ago to 1h ago of 3h: the middle third of the band (a column at each edge may be both).
    let band: Vec<char> = relay
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split('┤')
        .nth(1)
        .unwrap_or_default()
        .chars()
        .collect();
    assert_eq!(band.len(), 68, "{relay}");
    assert!(band[..20].iter().all(|&c| c == '─'), "{relay}");
    assert!(band[25..43].iter().all(|&c| c == '█'), "{relay}");
    assert!(band[48..].iter().all(|&c| c == '─'), "{relay}");
    for line in numbers.lines().chain(relay.lines()) {
        assert!(
            line.chars().count() <= 80,
            "{} columns: {line}",
            line.chars().count()
        );
    }
}

#[tokio::test]
async fn plot_explains_an_empty_result_and_a_bad_file_name() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = history(dir.path()).await;
    let db = db.to_str().unwrap();
    let json = homewright(&["plot", "--db", db, "kitchen/sensor"]);
    assert_eq!(json.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&json.stderr);
    assert!(
        stderr.contains("name a field: kitchen/sensor:$.temperature"),
        "{stderr}"
    );
    let jpeg = homewright(&["plot", "--db", db, "greenhouse/temperature", "--out", "x.jpg"]);
    assert_eq!(jpeg.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&jpeg.stderr).contains("x.jpg: write the chart to a .svg or .png file"));
}

#[tokio::test]
async fn plot_says_no_such_topic_for_a_topic_never_seen() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = history(dir.path()).await;
    let output = homewright(&["plot", "--db", db.to_str().unwrap(), "greenhouse/humidity"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no such topic: greenhouse/humidity"), "{stderr}");
    assert!(
        !stderr.contains("$.temperature"),
        "no JSON hint for a topic that does not exist: {stderr}"
    );
}

/// The x-axis labels of an SVG chart: (x, text), those below the plot (the time axis).
fn time_labels(svg: &str) -> Vec<(f64, String)> {
    let label = regex::Regex::new(r#"<text x="([0-9.]+)" y="([0-9.]+)"[^>]*>\s*([^<]*?)\s*</text>"#).unwrap();
    let labels: Vec<(f64, f64, String)> = label
        .captures_iter(svg)
        .map(|c| (c[1].parse().unwrap(), c[2].parse().unwrap(), c[3].to_string()))
        .collect();
    let lowest = labels.iter().map(|l| l.1).fold(0.0, f64::max);
    labels
        .into_iter()
        .filter(|l| l.1 == lowest)
        .map(|l| (l.0, l.2))
        .collect()
}

#[tokio::test]
async fn chart_time_labels_sit_at_round_times_and_are_not_cut_off() {
    if !font_installed() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let db = history(dir.path()).await;
    let db = db.to_str().unwrap();
    let week = dir.path().join("week.svg");
    let output = homewright(&[
        "plot",
        "--db",
        db,
        "greenhouse/temperature",
        "--since",
        "7d",
        "--out",
        week.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let labels = time_labels(&std::fs::read_to_string(&week).unwrap());
    assert!(labels.len() >= 5, "{labels:?}");
    let day = regex::Regex::new(r"^\d\d-\d\d$").unwrap();
    for (x, text) in &labels {
        // A day each, MM-DD; centred on its tick, and 14-pixel text is under 9 pixels a character.
        assert!(day.is_match(text), "{labels:?}");
        assert!(
            x + 4.5 * text.len() as f64 <= 1000.0,
            "cut off at the right edge: {labels:?}"
        );
    }

    let minutes = dir.path().join("minutes.svg");
    let output = homewright(&[
        "plot",
        "--db",
        db,
        "greenhouse/temperature",
        "--since",
        "52m",
        "--until",
        "46m",
        "--out",
        minutes.to_str().unwrap(),
    ]);
    // Six minutes around the reading of 50 minutes ago.
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let labels = time_labels(&std::fs::read_to_string(&minutes).unwrap());
    let minutes: Vec<i64> = labels
        .iter()
        .map(|(_, t)| {
            let (h, m) = t.split_once(':').expect("HH:MM");
            h.parse::<i64>().unwrap() * 60 + m.parse::<i64>().unwrap()
        })
        .collect();
    assert!(minutes.len() >= 5, "{labels:?}");
    for pair in minutes.windows(2) {
        assert_eq!(
            (pair[1] - pair[0]).rem_euclid(1440),
            1,
            "one a minute: {labels:?}"
        );
    }
}
