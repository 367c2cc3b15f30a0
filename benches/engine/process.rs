//! The engine under test as its own process: the 50 bench rules, its config, starting it and waiting
//! until it is `online` and stores a probe, and reading its memory from /proc.

#[allow(unused_imports)]
use super::*;

/// 50 rules: most watch topics nothing publishes to; one reads every sensor message's JSON, one
/// answers the trigger topic, one watches a state topic with on_change.
pub(crate) fn write_rules(dir: &Path) {
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

pub(crate) struct Engine {
    pub(crate) child: Child,
    pub(crate) pid: u32,
    pub(crate) client_id: String,
    pub(crate) port: u16,
    pub(crate) db: PathBuf,
    pub(crate) launched: Instant,
    pub(crate) online_after: Duration,
}

/// Writes a config and the 50 rules under `dir`.
pub(crate) fn engine_config(dir: &Path, port: u16, qos: QoS, client_id: &str, db: &Path) -> PathBuf {
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
    pub(crate) async fn start(config: &Path, port: u16, client_id: &str, db: &Path) -> Engine {
        start_with(Path::new(&binary()), config, port, client_id, db).await
    }

    /// Publishes a probe until the engine has stored it: then it is subscribed and committing.
    pub(crate) async fn wait_ingesting(&self) -> Duration {
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

    pub(crate) fn status(&self, field: &str) -> u64 {
        let text = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap_or_default();
        text.lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// SIGTERM, wait, then drop the persistent sessions so Mosquitto stops queueing for them.
    pub(crate) async fn stop(mut self) {
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

pub(crate) async fn reader(db: &Path) -> SqlitePool {
    SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(SqliteConnectOptions::new().filename(db).read_only(true))
        .await
        .unwrap()
}

/// Launches `program run -c CONFIG` and waits until the engine announces `online` and stores a probe.
pub(crate) async fn start_with(program: &Path, config: &Path, port: u16, id: &str, db: &Path) -> Engine {
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
