//! Latency: a message in, the rule's answer out, at a steady rate, against a bare rumqttc echo.

#[allow(unused_imports)]
use super::*;

pub(crate) struct Latency {
    pub(crate) p50: f64,
    pub(crate) p90: f64,
    pub(crate) p99: f64,
    pub(crate) lost: u64,
}

/// Publishes `rate` msg/s on the trigger topics for `seconds`, each carrying its send time, and
/// measures when the answer on `echo/#` arrives.
pub(crate) async fn latency(port: u16, rate: u32, seconds: u64, qos: QoS) -> Latency {
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
                .publish_bytes(format!("bench/trigger/{}", sent % 10), qos, false, payload)
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
        p90: percentile(&values, 0.9),
        p99: percentile(&values, 0.99),
        lost: total.saturating_sub(values.len() as u64),
    }
}

pub(crate) async fn bare_echo_latency(port: u16, rate: u32, seconds: u64, qos: QoS) -> Latency {
    let (_, echo, task) = subscriber(port, "bench/trigger/+", qos, true, None).await;
    let result = latency(port, rate, seconds, qos).await;
    let _ = echo.disconnect().await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    task.abort();
    result
}

/// `runs` runs of the bare echo and then the engine, in turn, so both see the same machine; the engine's
/// runs are numbered from `first_run` (each its own client id and history).
pub(crate) async fn latency_runs(
    port: u16,
    work: &Path,
    rate: u32,
    seconds: u64,
    runs: std::ops::Range<usize>,
    qos: QoS,
) -> (Vec<Latency>, Vec<Latency>) {
    let (mut bare, mut engine) = (Vec::new(), Vec::new());
    for run in runs {
        bare.push(bare_echo_latency(port, rate, seconds, qos).await);
        engine.push(engine_latency(port, work, rate, seconds, run, qos).await);
    }
    (bare, engine)
}

pub(crate) async fn engine_latency(
    port: u16,
    work: &Path,
    rate: u32,
    seconds: u64,
    run: usize,
    qos: QoS,
) -> Latency {
    let dir = work.join(format!("latency-{rate}-{run}"));
    std::fs::create_dir_all(&dir).unwrap();
    let id = format!("hwbench-l-{run}-{}", free_port());
    let db = dir.join("history.db");
    let config = engine_config(&dir, port, QoS::AtLeastOnce, &id, &db);
    let engine = Engine::start(&config, port, &id, &db).await;
    let result = latency(port, rate, seconds, qos).await;
    engine.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}
