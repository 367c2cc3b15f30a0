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
    if mode == "store" {
        runtime.block_on(store());
        return;
    }
    runtime.block_on(bench(plan));
}

// ---------------------------------------------------------------------------------------------------
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
    let broker = Mosquitto::start(work.path());
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
        let (mut p50s, mut p99s, mut lost, mut bare50, mut bare99) =
            (Vec::new(), Vec::new(), 0u64, Vec::new(), Vec::new());
        for run in 0..plan.runs.min(3) {
            let bare = bare_echo_latency(port, rate, plan.latency_seconds).await;
            bare50.push(bare.p50);
            bare99.push(bare.p99);
            let e = engine_latency(port, work.path(), rate, plan.latency_seconds, 200 + run).await;
            p50s.push(e.p50);
            p99s.push(e.p99);
            lost += e.lost;
        }
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

    idle_rss(&mut report, plan).await;
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

// ---------------------------------------------------------------------------------------------------
// Mosquitto

struct Mosquitto {
    child: Child,
    port: u16,
}

/// CPU time a process has used so far, all threads, user and system (`/proc/PID/stat` fields 14 and 15,
/// in the kernel's fixed 100 ticks per second).
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may contain spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime: fields 14 and 15 of the line, the 12th and 13th after the command name.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn mosquitto_version() -> String {
    Command::new("mosquitto")
        .arg("-h")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_string)
        })
        .unwrap_or_else(|| "mosquitto not found".into())
}

impl Mosquitto {
    fn start(dir: &Path) -> Mosquitto {
        let port = free_port();
        let config = dir.join("mosquitto.conf");
        // Nagle off toward clients (as the engine sets it); a window large enough that acknowledging after
        // commit does not stall delivery; no queue limit, so nothing is dropped while a client is busy.
        std::fs::write(
            &config,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\n\
                 max_inflight_messages 10000\nmax_queued_messages 0\npersistence false\n"
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("mosquitto.log")).unwrap();
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("mosquitto must be installed (apt-get install mosquitto)");
        let mosquitto = Mosquitto { child, port };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return mosquitto;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(mosquitto);
        panic!("mosquitto did not listen on {port}");
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------------
// MQTT clients

fn client(port: u16, id: &str, clean: bool) -> (AsyncClient, EventLoop) {
    let mut options = MqttOptions::new(id, "127.0.0.1", port);
    options
        .set_keep_alive(Duration::from_secs(30))
        .set_clean_session(clean)
        .set_inflight(1_000)
        .set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut eventloop) = AsyncClient::new(options, 20_000);
    let mut network = NetworkOptions::new();
    network.set_tcp_nodelay(true);
    eventloop.set_network_options(network);
    (client, eventloop)
}

/// Called with each publish a bench client receives.
type OnMessage = Arc<dyn Fn(&rumqttc::Publish) + Send + Sync>;

/// Counts received publishes; `last_ns` is when the latest arrived, since `base`.
struct Counter {
    base: Instant,
    count: AtomicU64,
    last_ns: AtomicU64,
}

/// A subscriber that only counts (the ingest ceiling) and optionally echoes (the latency reference).
/// Returns once the subscription is acknowledged.
async fn subscriber(
    port: u16,
    filter: &str,
    qos: QoS,
    echo: bool,
    on_message: Option<OnMessage>,
) -> (Arc<Counter>, AsyncClient, tokio::task::JoinHandle<()>) {
    let id = format!("bench-sub-{}", free_port());
    let (client, mut eventloop) = client(port, &id, true);
    client.subscribe(filter, qos).await.unwrap();
    let counter = Arc::new(Counter {
        base: Instant::now(),
        count: AtomicU64::new(0),
        last_ns: AtomicU64::new(0),
    });
    let (subscribed_tx, subscribed_rx) = tokio::sync::oneshot::channel();
    let mut subscribed_tx = Some(subscribed_tx);
    let task_counter = Arc::clone(&counter);
    let echo_client = client.clone();
    let task = tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(tx) = subscribed_tx.take() {
                        let _ = tx.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    let now = task_counter.base.elapsed().as_nanos() as u64;
                    task_counter.last_ns.store(now, Ordering::Relaxed);
                    task_counter.count.fetch_add(1, Ordering::Relaxed);
                    if let Some(f) = &on_message {
                        f(&publish);
                    }
                    if echo {
                        let topic = publish.topic.replacen("bench/trigger", "echo", 1);
                        let _ = echo_client.try_publish(topic, QoS::AtMostOnce, false, publish.payload);
                    }
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    let _ = tokio::time::timeout(Duration::from_secs(5), subscribed_rx).await;
    (counter, client, task)
}

/// Sends `count` messages as fast as the client goes: one in a hundred on a topic a rule answers.
async fn blast(port: u16, qos: QoS, count: usize) {
    let id = format!("bench-pub-{}", free_port());
    let (client, mut eventloop) = client(port, &id, true);
    let acked = Arc::new(AtomicU64::new(0));
    let task_acked = Arc::clone(&acked);
    let poll = tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => {
                    task_acked.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    for i in 0..count {
        let topic = if i % 100 == 99 {
            format!("bench/trigger/{}", i % 10)
        } else {
            format!("bench/sensor/room{}", i % 100)
        };
        let payload = format!("{{\"temperature\":{}.5,\"n\":{i}}}", 15 + i % 20);
        client.publish(topic, qos, false, payload).await.unwrap();
    }
    if qos != QoS::AtMostOnce {
        for _ in 0..3000 {
            if acked.load(Ordering::Relaxed) >= count as u64 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let _ = client.disconnect().await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    poll.abort();
}

/// Average bytes of topic + payload of what [`blast`] sends (measured, not guessed).
fn blast_bytes(count: usize) -> f64 {
    let mut total = 0usize;
    for i in 0..count {
        let topic = if i % 100 == 99 {
            format!("bench/trigger/{}", i % 10)
        } else {
            format!("bench/sensor/room{}", i % 100)
        };
        let payload = format!("{{\"temperature\":{}.5,\"n\":{i}}}", 15 + i % 20);
        total += topic.len() + payload.len();
    }
    total as f64 / count as f64
}

/// Waits until `progress()` reaches `target` or stops moving for `stall`; returns the final value and
/// when it last moved.
async fn wait_progress<F, Fut>(target: u64, stall: Duration, mut progress: F) -> (u64, Instant)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = u64>,
{
    let mut last = 0;
    let mut moved = Instant::now();
    loop {
        let now = progress().await;
        if now != last {
            last = now;
            moved = Instant::now();
        }
        if now >= target || moved.elapsed() > stall {
            return (now, moved);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Messages per second a bare rumqttc subscriber receives.
async fn bare_ingest(port: u16, qos: QoS, count: usize) -> f64 {
    let (counter, client, task) = subscriber(port, "bench/#", qos, false, None).await;
    let start = counter.base.elapsed();
    blast(port, qos, count).await;
    let (received, _) = wait_progress(count as u64, Duration::from_secs(2), || {
        let c = Arc::clone(&counter);
        async move { c.count.load(Ordering::Relaxed) }
    })
    .await;
    let last = Duration::from_nanos(counter.last_ns.load(Ordering::Relaxed));
    let _ = client.disconnect().await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    task.abort();
    received as f64 / (last - start).as_secs_f64()
}

// ---------------------------------------------------------------------------------------------------
// The engine process

/// 50 rules: most watch topics nothing publishes to; one reads every sensor message's JSON, one
/// answers the trigger topic, one watches a state topic with on_change.
fn write_rules(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..RULES - 3 {
        let source = format!(
            "on_message(\"house/room{i}/+/temperature\", |msg| {{\n    let t = msg.value;\n    \
             if t != () && t > 30.0 {{ publish(\"house/room{i}/alert\", `too warm: ${{t}}`); }}\n}});\n"
        );
        std::fs::write(dir.join(format!("r{i:02}_idle.rhai")), source).unwrap();
    }
    std::fs::write(
        dir.join("s1_sensor.rhai"),
        "on_message(\"bench/sensor/+\", |msg| {\n    let t = msg.json?.temperature;\n    \
         if t != () && t > 99.0 { publish(\"bench-alert/\" + msg.parts[2], \"hot\"); }\n});\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("s2_echo.rhai"),
        "on_message(\"bench/trigger/+\", |msg| {\n    publish(\"echo/\" + msg.parts[2], msg.payload);\n});\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("s3_state.rhai"),
        "on_change(\"bench/state/+\", |before, after| {\n    publish(\"bench-alert/state\", after.payload);\n});\n",
    )
    .unwrap();
}

struct Engine {
    child: Child,
    pid: u32,
    client_id: String,
    port: u16,
    db: PathBuf,
    launched: Instant,
    online_after: Duration,
}

/// Writes a config and the 50 rules under `dir`.
fn engine_config(dir: &Path, port: u16, qos: QoS, client_id: &str, db: &Path) -> PathBuf {
    write_rules(&dir.join("rules"));
    let config = dir.join("homewright.yaml");
    std::fs::write(
        &config,
        format!(
            "mqtt:\n  host: 127.0.0.1\n  port: {port}\n  client_id: {client_id}\n  subscribe: [\"bench/#\"]\n  \
             qos: {}\n  base_topic: {client_id}\nbroker:\n  embedded: false\ndatabase:\n  path: {}\n\
             rules:\n  dir: {}\n{}",
            qos as u8,
            db.display(),
            dir.join("rules").display(),
            // HOMEWRIGHT_BENCH_METRICS=ADDR: the engine serves /metrics there (queue depths of a stall).
            std::env::var("HOMEWRIGHT_BENCH_METRICS")
                .map(|addr| format!("metrics:\n  listen: {addr}\n"))
                .unwrap_or_default()
        ),
    )
    .unwrap();
    config
}

impl Engine {
    /// Launches `homewright run` and waits until it announces `online` and stores a probe.
    async fn start(config: &Path, port: u16, client_id: &str, db: &Path) -> Engine {
        start_with(Path::new(&binary()), config, port, client_id, db).await
    }

    /// Publishes a probe until the engine has stored it: then it is subscribed and committing.
    async fn wait_ingesting(&self) -> Duration {
        let (client, mut eventloop) = client(self.port, &format!("bench-probe-{}", free_port()), true);
        let poll = tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
        // With the embedded broker the port opens before the history is created.
        for _ in 0..500 {
            if self.db.exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let pool = reader(&self.db).await;
        for _ in 0..1000 {
            client
                .publish("bench/probe", QoS::AtLeastOnce, false, "probe")
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
            let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM messages WHERE topic = 'bench/probe'")
                .fetch_one(&pool)
                .await
                .unwrap_or(0);
            if stored > 0 {
                let _ = client.disconnect().await;
                poll.abort();
                return self.launched.elapsed();
            }
        }
        panic!("the engine did not start ingesting");
    }

    fn status(&self, field: &str) -> u64 {
        let text = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap_or_default();
        text.lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// SIGTERM, wait, then drop the persistent sessions so Mosquitto stops queueing for them.
    async fn stop(mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status();
        for _ in 0..600 {
            if self.child.try_wait().ok().flatten().is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        for id in [self.client_id.clone(), format!("{}-out", self.client_id)] {
            let (client, mut eventloop) = client(self.port, &id, true);
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                loop {
                    match eventloop.poll().await {
                        Ok(Event::Incoming(Packet::ConnAck(_))) => {
                            let _ = client.try_disconnect();
                        }
                        Ok(_) => {}
                        Err(_) => return,
                    }
                }
            })
            .await;
        }
    }
}

impl Drop for Engine {
    /// A benchmark that fails half-way must not leave engines running.
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(self.pid.to_string())
                .status();
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

async fn reader(db: &Path) -> SqlitePool {
    SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(SqliteConnectOptions::new().filename(db).read_only(true))
        .await
        .unwrap()
}

struct Disk {
    table_ratio: f64,
    file_ratio: f64,
    file_bytes_per_message: f64,
}

struct IngestRun {
    rate: f64,
    /// The engine process's CPU time (all threads, user and system) per stored message: on a machine
    /// where the broker, the load and the engine share two cores, this is what the ingest ratio
    /// mostly depends on.
    cpu_us_per_message: f64,
    peak_rss_kb: u64,
    disk: Option<Disk>,
}

/// Messages per second the engine stores (and runs through its rules), from the first publish to the
/// last commit.
async fn engine_ingest(port: u16, work: &Path, qos: QoS, count: usize, run: usize) -> IngestRun {
    let dir = work.join(format!("ingest-q{}-{run}", qos as u8));
    std::fs::create_dir_all(&dir).unwrap();
    let id = format!("hwbench-i{}-{run}-{}", qos as u8, free_port());
    let db = dir.join("history.db");
    let config = engine_config(&dir, port, qos, &id, &db);
    let engine = Engine::start(&config, port, &id, &db).await;
    let pool = reader(&db).await;
    let base: i64 = sqlx::query_scalar("SELECT count(*) FROM messages")
        .fetch_one(&pool)
        .await
        .unwrap();
    let start = Instant::now();
    let cpu_before = cpu_time(engine.pid);
    blast(port, qos, count).await;
    let (stored, last) = wait_progress(count as u64, Duration::from_secs(3), || {
        let pool = pool.clone();
        async move {
            let max: Option<i64> = sqlx::query_scalar("SELECT max(id) FROM messages")
                .fetch_one(&pool)
                .await
                .unwrap_or(None);
            (max.unwrap_or(0) - base).max(0) as u64
        }
    })
    .await;
    let rate = stored as f64 / (last - start).as_secs_f64();
    let cpu_us_per_message = (cpu_time(engine.pid) - cpu_before).as_secs_f64() * 1e6 / stored.max(1) as f64;
    let peak_rss_kb = engine.status("VmHWM:");
    pool.close().await;
    engine.stop().await;
    let disk = if qos == QoS::AtLeastOnce {
        Some(disk_use(&db, count).await)
    } else {
        None
    };
    let _ = std::fs::remove_file(&db);
    IngestRun {
        rate,
        cpu_us_per_message,
        peak_rss_kb,
        disk,
    }
}

async fn disk_use(db: &Path, count: usize) -> Disk {
    let pool = reader(db).await;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM messages")
        .fetch_one(&pool)
        .await
        .unwrap();
    let table: i64 = sqlx::query_scalar(
        "SELECT sum(pgsize) FROM dbstat WHERE name IN \
         ('message_rows', 'message_rows_topic_ts', 'topics', 'sqlite_autoindex_topics_1')",
    )
    .fetch_one(&pool)
    .await
    .unwrap_or(0);
    pool.close().await;
    let file = std::fs::metadata(db).map_or(0, |m| m.len())
        + std::fs::metadata(db.with_extension("db-wal")).map_or(0, |m| m.len());
    let content = blast_bytes(count);
    Disk {
        table_ratio: table as f64 / rows as f64 / content,
        file_ratio: file as f64 / rows as f64 / content,
        file_bytes_per_message: file as f64 / rows as f64,
    }
}

/// fsyncs per committed batch: the engine under strace (only fsync/fdatasync are stopped on, through
/// seccomp, so it runs at nearly full speed) while bursts of messages arrive.
async fn fsyncs(port: u16, work: &Path, report: &mut Report, plan: Plan) {
    let dir = work.join("fsync");
    std::fs::create_dir_all(&dir).unwrap();
    let id = format!("hwbench-f-{}", free_port());
    let db = dir.join("history.db");
    let config = engine_config(&dir, port, QoS::AtLeastOnce, &id, &db);
    let trace = dir.join("strace.txt");
    // A wrapper script, so Engine::start runs it like the binary.
    let wrapper = dir.join("traced.sh");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec strace -f -qq --seccomp-bpf -y -e trace=fsync,fdatasync -o {} {} \"$@\"\n",
            trace.display(),
            binary()
        ),
    )
    .unwrap();
    let _ = Command::new("chmod").arg("+x").arg(&wrapper).status();
    if Command::new("strace").arg("-V").output().is_err() {
        report.line(
            "fsyncs per batch",
            "strace not installed".into(),
            "1 per batch",
            None,
        );
        return;
    }
    let engine = start_with(&wrapper, &config, port, &id, &db).await;
    let before = count_lines(&trace);
    let bursts = if plan.quick { 20 } else { 50 };
    let per_burst = 500;
    for _ in 0..bursts {
        blast(port, QoS::AtLeastOnce, per_burst).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let total = count_lines(&trace) - before;
    let wal = std::fs::read_to_string(&trace)
        .unwrap_or_default()
        .lines()
        .skip(before)
        .filter(|l| l.contains("history.db-wal"))
        .count();
    engine.stop().await;
    let messages = bursts * per_burst;
    let per_burst_fsyncs = total as f64 / bursts as f64;
    report.line(
        "fsyncs while storing",
        format!(
            "{total} for {messages} msgs in {bursts} bursts ({:.0} msgs/fsync)",
            messages as f64 / total.max(1) as f64
        ),
        "1 per batch, not per msg",
        Some(total < messages / 20),
    );
    report.line(
        "  fsyncs per burst of 500 (WAL / all)",
        format!("{:.1} / {per_burst_fsyncs:.1}", wal as f64 / bursts as f64),
        "(messages + rule_runs)",
        None,
    );
}

fn count_lines(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |t| t.lines().count())
}

/// Launches `program run -c CONFIG` and waits until the engine announces `online` and stores a probe.
async fn start_with(program: &Path, config: &Path, port: u16, id: &str, db: &Path) -> Engine {
    // `program` is the binary itself, or a wrapper (a tracer) that runs it.
    let status = format!("{id}/status");
    let (online_tx, online_rx) = tokio::sync::oneshot::channel();
    let online_tx = Mutex::new(Some(online_tx));
    let (_, status_client, status_task) = subscriber(
        port,
        &status,
        QoS::AtLeastOnce,
        false,
        Some(Arc::new(move |p: &rumqttc::Publish| {
            // Not a retained `online` left by an earlier run: this engine's own.
            if &p.payload[..] == b"online"
                && !p.retain
                && let Some(tx) = online_tx.lock().unwrap().take()
            {
                let _ = tx.send(Instant::now());
            }
        })),
    )
    .await;
    let launched = Instant::now();
    let child = spawn(program, config);
    let online = tokio::time::timeout(Duration::from_secs(30), online_rx)
        .await
        .expect("online")
        .unwrap();
    let _ = status_client.disconnect().await;
    status_task.abort();
    // The engine is the tracer's child: signals go to it, since a tracer that is told to stop detaches
    // and leaves its tracee running.
    let children = format!("/proc/{0}/task/{0}/children", child.id());
    let pid = std::fs::read_to_string(children)
        .ok()
        .and_then(|c| c.split_whitespace().next().and_then(|p| p.parse().ok()))
        .unwrap_or(child.id());
    let engine = Engine {
        pid,
        child,
        client_id: id.to_string(),
        port,
        db: db.to_path_buf(),
        launched,
        online_after: online - launched,
    };
    engine.wait_ingesting().await;
    engine
}

// ---------------------------------------------------------------------------------------------------
// Latency

struct Latency {
    p50: f64,
    p99: f64,
    lost: u64,
}

/// Publishes `rate` msg/s on the trigger topics for `seconds`, each carrying its send time, and
/// measures when the answer on `echo/#` arrives.
async fn latency(port: u16, rate: u32, seconds: u64) -> Latency {
    let samples = Arc::new(Mutex::new(Vec::<f64>::new()));
    let base = Instant::now();
    let sink = Arc::clone(&samples);
    let (_, receiver, receiver_task) = subscriber(
        port,
        "echo/#",
        QoS::AtMostOnce,
        false,
        Some(Arc::new(move |p: &rumqttc::Publish| {
            let now = base.elapsed().as_nanos() as u64;
            if let Some(sent) = std::str::from_utf8(&p.payload)
                .ok()
                .and_then(|t| t.parse::<u64>().ok())
            {
                sink.lock().unwrap().push((now - sent) as f64 / 1e6);
            }
        })),
    )
    .await;
    let (sender, mut eventloop) = client(port, &format!("bench-lat-{}", free_port()), true);
    let poll = tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let per_tick = (rate / 1000).max(1);
    let total = u64::from(per_tick) * seconds * 1000;
    let mut sent = 0u64;
    while sent < total {
        tick.tick().await;
        for _ in 0..per_tick {
            let payload = Bytes::from(base.elapsed().as_nanos().to_string());
            sender
                .publish_bytes(
                    format!("bench/trigger/{}", sent % 10),
                    QoS::AtMostOnce,
                    false,
                    payload,
                )
                .await
                .unwrap();
            sent += 1;
        }
    }
    let samples_done = Arc::clone(&samples);
    let _ = wait_progress(total, Duration::from_secs(1), || {
        let s = Arc::clone(&samples_done);
        async move { s.lock().unwrap().len() as u64 }
    })
    .await;
    let _ = sender.disconnect().await;
    let _ = receiver.disconnect().await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    poll.abort();
    receiver_task.abort();
    let mut values = samples.lock().unwrap().clone();
    values.sort_by(|a, b| a.total_cmp(b));
    Latency {
        p50: percentile(&values, 0.5),
        p99: percentile(&values, 0.99),
        lost: total.saturating_sub(values.len() as u64),
    }
}

async fn bare_echo_latency(port: u16, rate: u32, seconds: u64) -> Latency {
    let (_, echo, task) = subscriber(port, "bench/trigger/+", QoS::AtMostOnce, true, None).await;
    let result = latency(port, rate, seconds).await;
    let _ = echo.disconnect().await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    task.abort();
    result
}

async fn engine_latency(port: u16, work: &Path, rate: u32, seconds: u64, run: usize) -> Latency {
    let dir = work.join(format!("latency-{rate}-{run}"));
    std::fs::create_dir_all(&dir).unwrap();
    let id = format!("hwbench-l-{run}-{}", free_port());
    let db = dir.join("history.db");
    let config = engine_config(&dir, port, QoS::AtLeastOnce, &id, &db);
    let engine = Engine::start(&config, port, &id, &db).await;
    let result = latency(port, rate, seconds).await;
    engine.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

// ---------------------------------------------------------------------------------------------------
// Memory at idle, start time and queries on a large history

/// RSS of `homewright run` with the example config (embedded broker on a free port), 3 s after it
/// announced `online`.
async fn idle_rss(report: &mut Report, plan: Plan) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let example = std::fs::read_to_string(root.join("homewright.yaml")).unwrap();
    let mut values = Vec::new();
    for _ in 0..plan.runs.min(3) {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let text = example
            .replace("port: 1883", &format!("port: {port}"))
            .replace("listen: 127.0.0.1:1883", &format!("listen: 127.0.0.1:{port}"))
            .replace(
                "path: data/history.db",
                &format!("path: {}", dir.path().join("history.db").display()),
            )
            .replace("dir: rules", &format!("dir: {}", root.join("rules").display()));
        let config = dir.path().join("homewright.yaml");
        std::fs::write(&config, text).unwrap();
        let db = dir.path().join("history.db");
        let engine = start_embedded(&config, port, &db).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        values.push(engine.status("VmRSS:") as f64 / 1024.0);
        engine.stop().await;
    }
    let rss = median(&mut values);
    report.line(
        "idle RSS, example config (embedded broker)",
        format!("{rss:.1} MB ({})", all(&values, 1)),
        "<= 12 MB",
        Some(rss <= 12.0),
    );
}

/// `program run -c config`, its log beside the config.
fn spawn(program: &Path, config: &Path) -> Child {
    Command::new(program)
        .args(["run", "-c"])
        .arg(config)
        // HOMEWRIGHT_BENCH_LOG (e.g. `debug`) to see what an engine did in a run that went wrong.
        .env(
            "RUST_LOG",
            std::env::var("HOMEWRIGHT_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(config.with_extension("log")).unwrap())
        .spawn()
        .unwrap()
}

async fn start_embedded(config: &Path, port: u16, db: &Path) -> Engine {
    let launched = Instant::now();
    let child = spawn(Path::new(&binary()), config);
    for _ in 0..500 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let engine = Engine {
        pid: child.id(),
        child,
        client_id: "homewright".into(),
        port,
        db: db.to_path_buf(),
        launched,
        online_after: Duration::ZERO,
    };
    // The example subscribes to `#`, so the probe is stored like any message.
    engine.wait_ingesting().await;
    engine
}

/// Builds (once, cached under target/bench-data) a history of `rows` messages on 100 topics, one every
/// 100 ms, with a single INSERT ... SELECT over a recursive CTE.
async fn big_history(rows: u64) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-data");
    std::fs::create_dir_all(&dir).unwrap();
    // "v2": the schema with topic ids (a cached history of the first schema would be migrated at start).
    let path = dir.join(format!("history-v2-{rows}.db"));
    if path.exists() {
        return path;
    }
    let building = dir.join(format!("history-v2-{rows}.building.db"));
    let _ = std::fs::remove_file(&building);
    let started = Instant::now();
    println!(
        "  (building a {rows}-row history in {}; cached for later runs)",
        path.display()
    );
    let store = homewright::store::Store::open(&building).await.unwrap();
    store.close().await;
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(SqliteConnectOptions::new().filename(&building))
        .await
        .unwrap();
    let end = homewright::event::now_millis();
    let start = end - rows as i64 * 100;
    for statement in [
        "PRAGMA journal_mode = OFF".to_string(),
        "PRAGMA synchronous = OFF".to_string(),
        "PRAGMA cache_size = -400000".to_string(),
        "DROP INDEX message_rows_topic_ts".to_string(),
        "WITH RECURSIVE seq(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM seq WHERE i < 99) \
         INSERT INTO topics (id, topic) SELECT i + 1, 'home/room' || i || '/temperature' FROM seq"
            .to_string(),
        format!(
            "WITH RECURSIVE seq(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM seq WHERE i < {rows} - 1) \
             INSERT INTO message_rows (ts, topic_id, payload, qos, retain) \
             SELECT {start} + i * 100, 1 + i % 100, \
             printf('{{\"temperature\":%.2f,\"humidity\":%d}}', 18 + (i % 1000) / 100.0, 40 + i % 30), 1, 0 \
             FROM seq"
        ),
        "CREATE INDEX message_rows_topic_ts ON message_rows (topic_id, ts)".to_string(),
        "PRAGMA journal_mode = WAL".to_string(),
    ] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
            .execute(&pool)
            .await
            .unwrap();
    }
    pool.close().await;
    // Written with `synchronous = OFF`: without this the first engine start's first fsync would flush
    // the whole file and be timed as its start.
    std::fs::File::open(&building).unwrap().sync_all().unwrap();
    std::fs::rename(&building, &path).unwrap();
    println!("  (built in {:.0} s)", started.elapsed().as_secs_f64());
    path
}

async fn history(port: u16, work: &Path, report: &mut Report, plan: Plan) {
    let path = big_history(plan.history_rows).await;
    let size = std::fs::metadata(&path).map_or(0, |m| m.len());
    let rows = plan.history_rows;

    // Start: launch -> `online`, and launch -> first message stored, with 50 rules.
    let mut online = Vec::new();
    let mut ingesting = Vec::new();
    for run in 0..plan.runs.min(3) {
        let dir = work.join(format!("start-{run}"));
        std::fs::create_dir_all(&dir).unwrap();
        let id = format!("hwbench-s-{run}-{}", free_port());
        let config = engine_config(&dir, port, QoS::AtLeastOnce, &id, &path);
        let engine = Engine::start(&config, port, &id, &path).await;
        online.push(engine.online_after.as_secs_f64() * 1000.0);
        // Engine::start returns once a probe is stored; a second probe is cheap, so time from launch.
        ingesting.push(engine.launched.elapsed().as_secs_f64() * 1000.0);
        engine.stop().await;
    }
    let o = median(&mut online);
    report.line(
        &format!("start to online, 50 rules, {:.2} GB history", size as f64 / 1e9),
        format!("{o:.0} ms ({})", all(&online, 0)),
        "<= 150 ms",
        Some(o <= 150.0),
    );
    report.line(
        "  start to first message stored",
        format!(
            "{:.0} ms (upper bound: probes every 10 ms)",
            median(&mut ingesting)
        ),
        "",
        None,
    );

    // Queries, through the engine's own read-only reader.
    let history_reader = homewright::store::HistoryReader::open(&path).await.unwrap();
    let mut times = Vec::new();
    for i in 0..200 {
        let topic = format!("home/room{}/temperature", i % 100);
        let started = Instant::now();
        let latest = history_reader.latest(&topic).await.unwrap();
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        assert!(latest.is_some());
    }
    let latest_ms = median(&mut times);
    report.line(
        &format!("latest value of a topic, {rows} rows"),
        format!("{latest_ms:.3} ms (p99 {:.3})", percentile(&times, 0.99)),
        "<= 10 ms",
        Some(latest_ms <= 10.0),
    );
    let pool = reader(&path).await;
    let end: i64 = sqlx::query_scalar("SELECT max(ts) FROM latest")
        .fetch_one(&pool)
        .await
        .unwrap();
    let hourly = "SELECT ts / 3600000 * 3600000 AS hour, avg(CAST(json_extract(payload, '$.temperature') AS REAL)) \
                  FROM messages WHERE topic = ? AND ts >= ? AND ts < ? GROUP BY hour";
    let plan_rows: Vec<(i64, i64, i64, String)> =
        sqlx::query_as(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {hourly}")))
            .bind("home/room7/temperature")
            .bind(end - 86_400_000)
            .bind(end)
            .fetch_all(&pool)
            .await
            .unwrap();
    let mut times = Vec::new();
    let mut hours = 0;
    for _ in 0..20 {
        let started = Instant::now();
        let result: Vec<(i64, Option<f64>)> = sqlx::query_as(sqlx::AssertSqlSafe(hourly))
            .bind("home/room7/temperature")
            .bind(end - 86_400_000)
            .bind(end)
            .fetch_all(&pool)
            .await
            .unwrap();
        hours = result.len();
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    let detail: Vec<&str> = plan_rows.iter().map(|r| r.3.as_str()).collect();
    let indexed = detail
        .iter()
        .any(|d| d.contains("USING INDEX message_rows_topic_ts"));
    report.line(
        "hourly average of a topic over a day",
        format!("{:.1} ms, {hours} hours, index: {indexed}", median(&mut times)),
        "uses an index",
        Some(indexed),
    );
    println!("  query plan: {}", detail.join(" | "));
    report.lines.push(format!("  query plan: {}", detail.join(" | ")));

    // Without a ts index: a time range over every topic, one seek per topic (planner statistics).
    let recent = "SELECT count(*) FROM messages WHERE ts >= ?";
    let plan_rows: Vec<(i64, i64, i64, String)> =
        sqlx::query_as(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {recent}")))
            .bind(end - 3_600_000)
            .fetch_all(&pool)
            .await
            .unwrap();
    let mut times = Vec::new();
    let mut count = 0;
    for _ in 0..20 {
        let started = Instant::now();
        count = sqlx::query_scalar(sqlx::AssertSqlSafe(recent))
            .bind(end - 3_600_000)
            .fetch_one(&pool)
            .await
            .unwrap();
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    let detail: Vec<&str> = plan_rows.iter().map(|r| r.3.as_str()).collect();
    let line = format!(
        "  last hour over all topics: {:.1} ms, {count} rows; plan: {}",
        median(&mut times),
        detail.join(" | ")
    );
    println!("{line}");
    report.lines.push(line);
}

/// One long QoS 1 ingest run (`HOMEWRIGHT_BENCH_MESSAGES`, default 1,000,000), to attach a profiler
/// to the engine (`perf record -p $(pgrep -x homewright)`).
async fn soak() {
    let count = std::env::var("HOMEWRIGHT_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let work = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(work.path());
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

// ---------------------------------------------------------------------------------------------------
// In-process store and dispatch (what callgrind profiles)

/// Writes messages and a rule run for each, as ingest and the recorder do, in batches of 4,000 to a
/// fresh history: no broker, no rules. `valgrind --tool=callgrind` counts the instructions of the
/// writer (all threads) the same way every run, which a shared machine's timings cannot.
async fn store() {
    use homewright::event::{Message, RuleRun};
    use homewright::store::RecordBatch;
    use homewright::store::Store;
    let count: usize = std::env::var("HOMEWRIGHT_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("history.db")).await.unwrap();
    let rule: Arc<str> = Arc::from("s1_sensor");
    let started = Instant::now();
    let batch = 4_000;
    for first in (0..count).step_by(batch) {
        let messages: Vec<Message> = (first..(first + batch).min(count))
            .map(|i| Message {
                ts: 1_700_000_000_000 + i as i64 / 50,
                topic: format!("bench/sensor/room{}", i % 100).into(),
                payload: Bytes::from(format!("{{\"temperature\":{}.5,\"n\":{i}}}", 15 + i % 20)),
                qos: 0,
                retain: false,
                dup: false,
            })
            .collect();
        let refs: Vec<&Message> = messages.iter().collect();
        store.insert_messages(&refs).await.unwrap();
        let audit = RecordBatch {
            runs: messages
                .iter()
                .map(|m| RuleRun {
                    ts: m.ts,
                    rule: Arc::clone(&rule),
                    trigger: "on_message",
                    topic: Some(m.topic.clone()),
                    duration_us: 3,
                    error: None,
                    actions: 0,
                    late: false,
                })
                .collect(),
            ..Default::default()
        };
        store.write_records(&audit).await.unwrap();
    }
    let elapsed = started.elapsed();
    println!(
        "store: {count} messages and as many rule runs in {:.3} s: {:.2} us/msg",
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1e6 / count as f64
    );
    store.close().await;
}

/// Runs messages through a `RuleSet` with the 50 bench rules, as the rule thread does, with no broker
/// and no database: the cost of dispatch and of the rules themselves per message.
fn dispatch() {
    use homewright::event::{Event as HwEvent, Message};
    use homewright::rules::{Limits, RuleSet};
    let dir = tempfile::tempdir().unwrap();
    write_rules(dir.path());
    let limits = Limits {
        max_operations: 1_000_000,
        timeout: Duration::from_secs(1),
        max_string_size: 4 << 20,
    };
    let mut rules = RuleSet::new(
        limits,
        None,
        Default::default(),
        homewright::scheduler::Clock::Wall,
        Default::default(),
    );
    let problems = rules.load_dir(dir.path()).unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    let count: usize = std::env::var("HOMEWRIGHT_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let messages: Vec<HwEvent> = (0..count)
        .map(|i| {
            let topic = if i % 100 == 99 {
                format!("bench/trigger/{}", i % 10)
            } else if i % 2 == 0 {
                format!("bench/sensor/room{}", i % 100)
            } else {
                // Half the traffic matches no rule at all: the common case in a house.
                format!("zigbee/device{}/linkquality", i % 100)
            };
            HwEvent::Message(Message {
                ts: i as i64,
                topic: topic.into(),
                payload: Bytes::from(format!("{{\"temperature\":{}.5,\"n\":{i}}}", 15 + i % 20)),
                qos: 1,
                retain: false,
                dup: false,
            })
        })
        .collect();
    let started = Instant::now();
    let mut outputs = 0;
    for event in &messages {
        outputs += rules.handle(event).len();
    }
    let elapsed = started.elapsed();
    println!(
        "dispatch: {count} messages through {RULES} rules in {:.3} s: {:.2} us/msg, {:.0} msg/s ({outputs} outputs)",
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1e6 / count as f64,
        count as f64 / elapsed.as_secs_f64()
    );
}
