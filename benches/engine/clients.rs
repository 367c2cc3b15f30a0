//! The load and the references: MQTT clients that publish as fast as the broker takes, the bare
//! rumqttc subscriber the engine's ingest is compared with, and reading a process's CPU time.

#[allow(unused_imports)]
use super::*;

/// CPU time a process has used so far, all threads, user and system (`/proc/PID/stat` fields 14 and 15,
/// in the kernel's fixed 100 ticks per second).
pub(crate) fn cpu_time(pid: u32) -> Duration {
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

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub(crate) fn mosquitto_version() -> String {
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

pub(crate) fn client(port: u16, id: &str, clean: bool) -> (AsyncClient, EventLoop) {
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
pub(crate) struct Counter {
    pub(crate) base: Instant,
    pub(crate) count: AtomicU64,
    pub(crate) last_ns: AtomicU64,
}

/// A subscriber that only counts (the ingest ceiling) and optionally echoes (the latency reference).
/// Returns once the subscription is acknowledged.
pub(crate) async fn subscriber(
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
pub(crate) async fn blast(port: u16, qos: QoS, count: usize) {
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
pub(crate) fn blast_bytes(count: usize) -> f64 {
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
pub(crate) async fn wait_progress<F, Fut>(target: u64, stall: Duration, mut progress: F) -> (u64, Instant)
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
pub(crate) async fn bare_ingest(port: u16, qos: QoS, count: usize) -> f64 {
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
