//! The Prometheus endpoint of the real binary, scraped with a plain HTTP request over TCP while real
//! messages flow through the embedded broker.

use std::time::Duration;

use rumqttc::QoS;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{Client, Process, Setup, eventually, free_port};

/// `GET path` on 127.0.0.1:port; returns the status line and the body.
async fn get(port: u16, path: &str) -> (String, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to the metrics endpoint");
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/plain\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let (head, body) = response.split_once("\r\n\r\n").expect("a head and a body");
    (
        head.lines().next().unwrap_or_default().to_string(),
        body.to_string(),
    )
}

/// The value of the sample `name` (with its labels, as written) in a scrape, if present.
fn sample(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .filter_map(|line| line.strip_prefix(name))
        .find_map(|rest| rest.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

#[tokio::test]
async fn metrics_count_messages_rule_runs_and_actions_as_they_happen() {
    let metrics_port = free_port();
    let mut setup = Setup::embedded();
    setup.extra_config = format!("metrics:\n  listen: 127.0.0.1:{metrics_port}\n");
    let setup = setup.rule(
        "echo",
        r#"on_message("sensor/+", |msg| { publish("echo/" + msg.parts[1], msg.payload); });"#,
    );
    let _engine = Process::start(&setup).await;

    let (status, before) = get(metrics_port, "/metrics").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    let stored_before = sample(&before, "homewright_messages_stored_total").expect("stored counter");
    assert!(stored_before >= 1.0, "the readiness probe was stored: {before}");
    assert_eq!(sample(&before, "homewright_rule_runs_total{rule=\"echo\"}"), None);

    let sensor = Client::connect(setup.port, "metrics-sensor").await;
    for i in 0..5 {
        sensor
            .publish("sensor/t", format!("{i}"), QoS::AtLeastOnce, false)
            .await;
    }
    let after = eventually("the counters to move", Duration::from_secs(20), || async {
        let (_, body) = get(metrics_port, "/metrics").await;
        let runs = sample(&body, "homewright_rule_runs_total{rule=\"echo\"}").unwrap_or(0.0);
        let actions = sample(&body, "homewright_actions_total").unwrap_or(0.0);
        // The echoes are stored a batch later than the rule ran: wait for them too (slow machines).
        let stored = sample(&body, "homewright_messages_stored_total").unwrap_or(0.0);
        (runs >= 5.0 && actions >= 5.0 && stored >= stored_before + 10.0).then_some(body)
    })
    .await;
    let stored_after = sample(&after, "homewright_messages_stored_total").expect("stored counter");
    // The five sensor messages and the five echoes (subscribe is "#"), at least.
    assert!(stored_after >= stored_before + 10.0, "{after}");
    let received = sample(&after, "homewright_messages_received_total").expect("received counter");
    assert!(received >= stored_before + 10.0, "{after}");
    assert_eq!(
        sample(&after, "homewright_rule_failures_total{rule=\"echo\"}"),
        Some(0.0)
    );
    let commits = sample(&after, "homewright_commits_total").expect("commits counter");
    // Read after the stored counter: every stored message came in a counted commit, and a commit holds
    // at least one message.
    assert!(
        commits >= 1.0 && commits <= stored_after,
        "commits counted per batch: {after}"
    );
    let committed = sample(&after, "homewright_ingest_commit_seconds_count").expect("histogram");
    // Read after the stored counter, and observed before it is added to.
    assert!(
        committed >= stored_after,
        "every stored message has a latency: {after}"
    );
    assert_eq!(
        sample(&after, "homewright_queue_capacity{queue=\"ingest\"}"),
        Some(homewright::ingest::CHANNEL_CAPACITY as f64)
    );

    let (status, _) = get(metrics_port, "/other").await;
    assert_eq!(status, "HTTP/1.1 404 Not Found");
}

#[tokio::test]
async fn check_names_a_bad_metrics_address_with_its_line() {
    let setup = Setup::embedded();
    let config = setup.write_config();
    let mut text = std::fs::read_to_string(&config).expect("read config");
    text.push_str("metrics:\n  listen: everywhere\n");
    std::fs::write(&config, &text).expect("write config");
    let line = text.lines().count();
    let output = crate::support::homewright_command()
        .args(["check", "-c"])
        .arg(&config)
        .output()
        .expect("run check");
    assert_eq!(output.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let expected = format!(
        "{}:{line}:3: metrics.listen: `everywhere` is not an address and port",
        config.display()
    );
    assert!(stdout.contains(&expected), "{stdout}");
}

#[tokio::test]
async fn a_metrics_port_in_use_stops_the_start_naming_the_key() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let mut setup = Setup::embedded();
    setup.extra_config = format!("metrics:\n  listen: 127.0.0.1:{port}\n");
    let output = crate::support::homewright_command()
        .args(["run", "-c"])
        .arg(setup.write_config())
        .output()
        .expect("run homewright");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("cannot listen for metrics on 127.0.0.1:{port}"))
            && stderr.contains("metrics.listen"),
        "{stderr}"
    );
}

/// 100 clients that connect and never send a request (held open by a stuck exporter, a port scanner)
/// do not keep a scrape waiting: each connection is served on its own, with its own timeout. Served one
/// at a time, the scrape waited 5 s behind each of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_is_answered_while_100_slow_clients_hold_connections() {
    let metrics_port = free_port();
    let mut setup = Setup::embedded();
    setup.extra_config = format!("metrics:\n  listen: 127.0.0.1:{metrics_port}\n");
    let _engine = Process::start(&setup).await;
    let mut slow = Vec::new();
    for _ in 0..100 {
        let stream = TcpStream::connect(("127.0.0.1", metrics_port))
            .await
            .expect("connect a slow client");
        slow.push(stream);
    }
    // A hang guard far above a normal answer and far below 100 timeouts of 5 s.
    let scrape = tokio::time::timeout(Duration::from_secs(4), get(metrics_port, "/metrics")).await;
    let (status, body) = scrape.expect("a scrape answered while slow clients wait");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(body.contains("homewright_messages_stored_total"), "{body}");
    drop(slow);
}
