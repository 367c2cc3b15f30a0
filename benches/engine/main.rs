//! `cargo bench --bench engine`: homewright measured against its performance targets, each figure printed
//! beside its target.
//!
//! Everything goes through a real Mosquitto that the benchmark starts on a free port of 127.0.0.1
//! (`set_tcp_nodelay true`, a raised in-flight window, an unlimited queue), and the engine runs as the
//! release `homewright` binary in its own process, so its memory is read from /proc/PID/status. Where
//! the machine's speed sets the figure, the benchmark also runs the reference itself in the same run (a
//! bare rumqttc subscriber, a bare rumqttc echo) and reports the ratio. Each figure is the median of
//! several runs.
//!
//! Modes (an argument or `HOMEWRIGHT_BENCH`):
//! - `full` (default): about 5-8 minutes on a 2-core machine (the first run also builds a 14M-row,
//!   1 GB history, cached in `target/bench-data/`);
//! - `quick`: about a minute, smaller counts and a 1M-row history;
//! - `ingest`: only the ingest rates and the disk figure, full counts (to try a change to the hot path);
//! - `dispatch`: only the in-process rule dispatch (no broker), the loop to profile with callgrind;
//! - `sdcard`: what the engine writes per stored message and its fsyncs per second at a house's rates
//!   (2, 20 and 200 msg/s, QoS 0 and 1, 40 zigbee2mqtt-style topics, one rule reading every message,
//!   a history of 400,000 messages to start from), through a Mosquitto with its default settings;
//!   about 6 minutes (`HOMEWRIGHT_BENCH_COMMIT_INTERVAL` sets `database.commit_interval`);
//! - `latency`: a rule answering every message at 1,000 msg/s QoS 1 through a Mosquitto with its
//!   default in-flight window of 20 (and Nagle off), beside a bare rumqttc echo; about a minute;
//!   `sdcard` and `latency` use Mosquitto with the package's drop-in
//!   (`packaging/mosquitto/homewright.conf`) instead of its defaults when
//!   `HOMEWRIGHT_BENCH_MOSQUITTO=drop-in`;
//! - `postgres`: replication's catch-up of a day of a 20 msg/s house and query latency over a month of
//!   10 sites, on the PostgreSQL at 127.0.0.1:5432 (see `postgres.rs`); about 10 minutes;
//! - `rules_load`: `homewright check` of one rule file of 0.5 to 5 MB (loading must grow linearly);
//! - `idle`: only the idle RSS with the example config and its embedded broker (median of 5), and
//!   where that memory is (the binary's code and data, heap, thread arenas and stacks, libraries);
//! - `soak`: one long ingest run, to attach `perf record` to the engine (or, with
//!   `HOMEWRIGHT_BENCH_BARE=1`, to the bare subscriber's run; `scripts/thread-cpu` uses it).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, NetworkOptions, Packet, QoS};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};

mod clients;
mod footprint;
mod ingest;
mod inprocess;
mod latency;
/// The tests' Mosquitto harness, shared so the bench and the tests start the broker the same way.
#[path = "../../tests/support/mosquitto.rs"]
#[allow(dead_code)]
mod mosquitto;
mod postgres;
mod process;
/// The tests' large rule files, shared so the bench loads what the loading test loads.
#[path = "../../tests/support/rule_files.rs"]
mod rule_files;
mod rule_load;
mod sdcard;

use clients::*;
use footprint::*;
use ingest::*;
use inprocess::*;
use latency::*;
use mosquitto::Mosquitto;
use process::*;
use rule_load::*;
use sdcard::*;

const BUILT: &str = env!("CARGO_BIN_EXE_homewright");

/// The engine binary: the one cargo built, or HOMEWRIGHT_BENCH_BINARY (to compare two builds in turn
/// on the same machine, since a figure of one run on a shared machine says little alone).
fn binary() -> String {
    std::env::var("HOMEWRIGHT_BENCH_BINARY").unwrap_or_else(|_| BUILT.to_string())
}

/// Rules loaded in every engine run: a large home's worth.
const RULES: usize = 50;

#[derive(Clone, Copy)]
struct Plan {
    quick: bool,
    ingest_only: bool,
    runs: usize,
    ingest_messages: usize,
    latency_seconds: u64,
    history_rows: u64,
    peak_messages: usize,
}

fn main() {
    let mode = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .or_else(|| std::env::var("HOMEWRIGHT_BENCH").ok())
        .unwrap_or_else(|| "full".into());
    let plan = match mode.as_str() {
        "quick" => Plan {
            quick: true,
            ingest_only: false,
            runs: 3,
            ingest_messages: 30_000,
            latency_seconds: 2,
            history_rows: 1_000_000,
            peak_messages: 100_000,
        },
        "ingest" => Plan {
            quick: false,
            ingest_only: true,
            runs: 5,
            ingest_messages: 100_000,
            latency_seconds: 5,
            history_rows: 10_000_000,
            peak_messages: 200_000,
        },
        _ => Plan {
            quick: false,
            ingest_only: false,
            runs: 5,
            ingest_messages: 100_000,
            latency_seconds: 5,
            // 1.05 GB: the start target asks for a 1 GB history (and its query targets for 10
            // million rows, which this exceeds).
            history_rows: 14_000_000,
            peak_messages: 200_000,
        },
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if mode == "dispatch" {
        dispatch();
        return;
    }
    if mode == "soak" {
        runtime.block_on(soak());
        return;
    }
    if mode == "sdcard" {
        runtime.block_on(sdcard());
        return;
    }
    if mode == "latency" {
        runtime.block_on(latency_default_broker(plan));
        return;
    }
    if mode == "postgres" {
        runtime.block_on(postgres::postgres());
        return;
    }
    if mode == "rules_load" {
        rules_load();
        return;
    }
    if mode == "store" {
        runtime.block_on(store());
        return;
    }
    if mode == "idle" {
        let mut report = Report { lines: Vec::new() };
        runtime.block_on(idle_rss(&mut report, 5, true));
        return;
    }
    runtime.block_on(bench(plan));
}

// The report

struct Report {
    lines: Vec<String>,
}

impl Report {
    fn line(&mut self, what: &str, figure: String, target: &str, pass: Option<bool>) {
        let verdict = match pass {
            Some(true) => "pass",
            Some(false) => "MISS",
            None => "",
        };
        let line = format!("{what:<44} {figure:<34} {target:<26} {verdict}");
        println!("{line}");
        self.lines.push(line);
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    if values.is_empty() {
        return f64::NAN;
    }
    values[values.len() / 2]
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn all(values: &[f64], digits: usize) -> String {
    let parts: Vec<String> = values.iter().map(|v| format!("{v:.digits$}")).collect();
    parts.join(" ")
}

async fn bench(plan: Plan) {
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_default();
    println!(
        "homewright benchmark ({} mode, {} runs each): {nproc} cores, {cpu}; {}",
        if plan.quick { "quick" } else { "full" },
        plan.runs,
        mosquitto_version()
    );
    let work = tempfile::tempdir().unwrap();
    let broker = broker().await;
    let port = broker.port;
    let mut report = Report { lines: Vec::new() };
    println!();
    println!("{:<44} {:<34} {:<26} verdict", "figure", "measured", "target");

    // Ingest: engine vs bare subscriber, alternating so both see the same machine load.
    let mut peak_rss = Vec::new();
    let mut disk = Vec::new();
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
        let (mut bare, mut engine, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        let mut cpu = Vec::new();
        for run in 0..plan.runs {
            let b = bare_ingest(port, qos, plan.ingest_messages).await;
            let e = engine_ingest(port, work.path(), qos, plan.ingest_messages, run).await;
            bare.push(b);
            engine.push(e.rate);
            cpu.push(e.cpu_us_per_message);
            ratios.push(e.rate / b);
            if let Some(d) = e.disk {
                disk.push(d);
            }
        }
        let level = qos as u8;
        println!(
            "  (QoS {level}: bare subscriber msg/s {}; engine msg/s {}; engine CPU per message, us: {})",
            all(&bare, 0),
            all(&engine, 0),
            all(&cpu, 1)
        );
        let ratio = median(&mut ratios);
        report.line(
            &format!("ingest QoS {level}: engine / bare subscriber"),
            format!(
                "{ratio:.2}x ({:.0} / {:.0} msg/s)",
                median(&mut engine),
                median(&mut bare)
            ),
            ">= 0.90x",
            Some(ratio >= 0.9),
        );
        // What the ratio depends on where the machine is short of CPU, and what compares across
        // machines better than the ratio does.
        report.line(
            &format!("  engine CPU per stored QoS {level} message"),
            format!("{:.1} us (all threads)", median(&mut cpu)),
            "",
            None,
        );
    }

    if plan.ingest_only {
        report_disk(&disk, &mut report);
        return;
    }

    // Peak memory while 200,000 messages arrive as fast as the broker delivers them.
    for run in 0..plan.runs.min(3) {
        let e = engine_ingest(port, work.path(), QoS::AtLeastOnce, plan.peak_messages, 100 + run).await;
        peak_rss.push(e.peak_rss_kb as f64 / 1024.0);
    }
    let peak = median(&mut peak_rss);
    report.line(
        &format!("peak RSS, {} msgs at full speed", plan.peak_messages),
        format!("{peak:.1} MB (VmHWM)"),
        "<= 64 MB",
        Some(peak <= 64.0),
    );

    report_disk(&disk, &mut report);
    fsyncs(port, work.path(), &mut report, plan).await;

    // Latency: a bare echo first (no engine subscribed), then the engine.
    for rate in [1_000u32, 5_000] {
        let runs = 200..200 + plan.runs.min(3);
        let (bare, engine) = latency_runs(
            port,
            work.path(),
            rate,
            plan.latency_seconds,
            runs,
            QoS::AtMostOnce,
        )
        .await;
        let mut p50s: Vec<f64> = engine.iter().map(|e| e.p50).collect();
        let mut p99s: Vec<f64> = engine.iter().map(|e| e.p99).collect();
        let lost: u64 = engine.iter().map(|e| e.lost).sum();
        let mut bare50: Vec<f64> = bare.iter().map(|b| b.p50).collect();
        let mut bare99: Vec<f64> = bare.iter().map(|b| b.p99).collect();
        println!(
            "  ({rate} msg/s: engine p50 ms {}, p99 ms {}; bare echo p50 ms {}, p99 ms {})",
            all(&p50s, 2),
            all(&p99s, 2),
            all(&bare50, 2),
            all(&bare99, 2)
        );
        let (p50, p99) = (median(&mut p50s), median(&mut p99s));
        let (b50, b99) = (median(&mut bare50), median(&mut bare99));
        if rate == 1_000 {
            report.line(
                "latency p50 at 1,000 msg/s",
                format!("{p50:.2} ms (bare echo {b50:.2})"),
                "<= 0.5 ms",
                Some(p50 <= 0.5),
            );
            report.line(
                "latency p99 at 1,000 msg/s",
                format!("{p99:.2} ms (bare echo {b99:.2})"),
                "<= 2 ms",
                Some(p99 <= 2.0),
            );
        } else {
            report.line(
                "latency p50 at 5,000 msg/s",
                format!("{p50:.2} ms (bare echo {b50:.2})"),
                "",
                None,
            );
            report.line(
                "latency p99 at 5,000 msg/s",
                format!("{p99:.2} ms (bare echo {b99:.2})"),
                "<= 5 ms",
                Some(p99 <= 5.0),
            );
        }
        report.line(
            &format!("messages lost at {rate} msg/s"),
            format!("{lost}"),
            "0",
            Some(lost == 0),
        );
    }

    idle_rss(&mut report, plan.runs.min(3), false).await;
    history(port, work.path(), &mut report, plan).await;

    println!();
    println!("summary");
    for line in &report.lines {
        println!("{line}");
    }
    drop(broker);
}

/// Disk, from the QoS 1 runs' databases (checkpointed by the engine's clean stop).
fn report_disk(disk: &[Disk], report: &mut Report) {
    if !disk.is_empty() {
        let mut table: Vec<f64> = disk.iter().map(|d| d.table_ratio).collect();
        let mut file: Vec<f64> = disk.iter().map(|d| d.file_ratio).collect();
        let t = median(&mut table);
        report.line(
            "disk per message / (topic + payload)",
            format!("{t:.2}x (messages + indexes)"),
            "<= 1.5x",
            Some(t <= 1.5),
        );
        report.line(
            "  whole file per message / (topic+payload)",
            format!(
                "{:.2}x ({:.0} B/msg)",
                median(&mut file),
                disk[0].file_bytes_per_message
            ),
            "(with rule_runs etc.)",
            None,
        );
    }
}

/// One long QoS 1 ingest run (`HOMEWRIGHT_BENCH_MESSAGES`, default 1,000,000), to attach a profiler
/// to the engine (`perf record -p $(pgrep -x homewright)`).
async fn soak() {
    let count = std::env::var("HOMEWRIGHT_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let work = tempfile::tempdir().unwrap();
    let broker = broker().await;
    // HOMEWRIGHT_BENCH_QOS=0: QoS 0 instead of 1.
    let qos = match std::env::var("HOMEWRIGHT_BENCH_QOS").as_deref() {
        Ok("0") => QoS::AtMostOnce,
        _ => QoS::AtLeastOnce,
    };
    // HOMEWRIGHT_BENCH_BARE=1: the bare subscriber instead of the engine (the reference's own cost,
    // with `scripts/thread-cpu`).
    if std::env::var("HOMEWRIGHT_BENCH_BARE").is_ok_and(|v| v == "1") {
        let rate = bare_ingest(broker.port, qos, count).await;
        println!("bare soak: {count} messages at {rate:.0} msg/s");
        return;
    }
    let run = engine_ingest(broker.port, work.path(), qos, count, 999).await;
    println!(
        "soak: {count} messages at {:.0} msg/s, {:.1} us of engine CPU per message, peak RSS {} kB",
        run.rate, run.cpu_us_per_message, run.peak_rss_kb
    );
}

/// Mosquitto as the bench runs it, through the tests' harness (which sets Nagle off toward clients, as
/// the engine does, and no queue limit, so nothing is dropped while a client is busy): a window large
/// enough that acknowledging after commit does not stall delivery, and nothing kept on disk.
async fn broker() -> Mosquitto {
    Mosquitto::start_with("max_inflight_messages 10000\npersistence false\n")
        .await
        .expect("mosquitto must be installed (apt-get install mosquitto)")
}
