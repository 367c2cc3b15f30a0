//! Notifications and HTTP calls from rules, delivered to real HTTP servers on loopback: ntfy's and
//! Gotify's publish APIs and a JSON webhook, through outages, restarts, refusals and silence, with
//! the engine's trace-level log checked for secrets.

use std::path::Path;
use std::time::{Duration, Instant};

use rumqttc::QoS;

use crate::support::http::{HttpServer, Received};
use crate::support::{Client, Engine, Process, Setup, count, eventually, free_port, query, text};

const NTFY_PASSWORD: &str = "ntfy-pass-5b1e9";
const GOTIFY_TOKEN: &str = "AgotifyTok3n77";
const HOOK_TOKEN: &str = "hook-bearer-c0ffee";

/// Standard base64 of `alice:<NTFY_PASSWORD>`, as it travels in the Basic header.
fn basic_of_alice() -> String {
    let output = std::process::Command::new("base64")
        .arg("-w0")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(format!("alice:{NTFY_PASSWORD}").as_bytes())?;
            child.wait_with_output()
        })
        .expect("run base64");
    String::from_utf8(output.stdout).expect("base64 output")
}

fn json(received: &Received) -> serde_json::Value {
    serde_json::from_str(&received.body).unwrap_or_else(|e| panic!("{e}: {}", received.body))
}

/// Every secret of the configs below, and the Basic header value that carries one.
fn assert_no_secret(log: &Path) {
    let text = std::fs::read_to_string(log).expect("read the engine's log");
    assert!(text.len() > 1_000, "the log at trace level is suspiciously short");
    for secret in [NTFY_PASSWORD, GOTIFY_TOKEN, HOOK_TOKEN, basic_of_alice().as_str()] {
        assert!(!text.contains(secret), "the log holds the secret {secret}");
    }
}

async fn rows(db: &Path, sql: &str) -> Vec<Vec<String>> {
    query(db, sql)
        .await
        .rows
        .iter()
        .map(|row| row.iter().map(text).collect())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn ntfy_gotify_and_a_webhook_get_what_rules_send_a_500_is_retried_a_400_is_not() {
    let ntfy = HttpServer::start().await;
    let gotify = HttpServer::start().await;
    let hook = HttpServer::start().await;
    ntfy.answer(&[(500, "try later")]);
    let rule = format!(
        r#"on_message("washer/power", |msg| {{
    notify("phone", "Washing done", #{{ title: "Laundry", priority: 4, tags: ["basket", "tada"] }});
    notify("family", "Washing done", #{{ title: "Laundry" }});
    notify("hook", "Washing done");
    http("POST", "http://127.0.0.1:{port}/log", #{{ event: "washer", watts: msg.value }});
}});
on_message("washer/again", |msg| notify("phone", "second"));
"#,
        port = hook.port
    );
    let mut setup = Setup::embedded().rule("washer", &rule);
    std::fs::write(setup.dir.path().join("gotify.token"), format!("{GOTIFY_TOKEN}\n")).unwrap();
    setup.env.push(("HW_TEST_HOOK_TOKEN".into(), HOOK_TOKEN.into()));
    setup.log_level = Some("trace".into());
    let metrics_port = free_port();
    setup.extra_config = format!(
        "metrics:\n  listen: 127.0.0.1:{metrics_port}\nnotify:\n  phone: ntfy://alice:{NTFY_PASSWORD}@127.0.0.1:{}/house\n  family:\n    url: gotify://127.0.0.1:{}\n    token_file: gotify.token\n  hook:\n    url: http://127.0.0.1:{}/notify\n    token_env: HW_TEST_HOOK_TOKEN\nhttp:\n  allow: [\"127.0.0.1:{}\"]\n",
        ntfy.port, gotify.port, hook.port, hook.port
    );
    let log = setup.dir.path().join("engine.log");
    let process = Process::start_logged(&setup, &log).await;
    let plug = Client::connect(setup.port, "washer-plug").await;
    plug.publish("washer/power", "2.5", QoS::AtLeastOnce, false).await;

    // ntfy: refused with a 500 first, then accepted on the retry.
    let tries = ntfy.wait_for(2, Duration::from_secs(10)).await;
    for received in &tries {
        assert_eq!(
            (received.method.as_str(), received.path.as_str()),
            ("POST", "/house")
        );
        assert_eq!(received.header("title"), Some("Laundry"));
        assert_eq!(received.header("priority"), Some("4"));
        assert_eq!(received.header("tags"), Some("basket,tada"));
        assert_eq!(
            received.header("authorization"),
            Some(format!("Basic {}", basic_of_alice()).as_str())
        );
        assert_eq!(received.body, "Washing done");
    }
    let got = gotify.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(
        (got[0].method.as_str(), got[0].path.as_str()),
        ("POST", "/message")
    );
    assert_eq!(got[0].header("x-gotify-key"), Some(GOTIFY_TOKEN));
    assert_eq!(
        json(&got[0]),
        serde_json::json!({ "message": "Washing done", "title": "Laundry" })
    );
    let hooked = hook.wait_for(2, Duration::from_secs(5)).await;
    let channel = hooked
        .iter()
        .find(|r| r.path == "/notify")
        .expect("the webhook channel");
    assert_eq!(
        channel.header("authorization"),
        Some(format!("Bearer {HOOK_TOKEN}").as_str())
    );
    assert_eq!(json(channel), serde_json::json!({ "message": "Washing done" }));
    let call = hooked.iter().find(|r| r.path == "/log").expect("the http() call");
    assert_eq!(call.header("content-type"), Some("application/json"));
    assert_eq!(json(call), serde_json::json!({ "event": "washer", "watts": 2.5 }));
    assert_eq!(call.header("authorization"), None);

    let db = setup.db_path();
    let sent = "SELECT count(*) FROM actions WHERE outcome = 'sent' AND status = 200";
    eventually("four sent rows", Duration::from_secs(5), || async {
        (count(&db, sent).await == 4).then_some(())
    })
    .await;
    let targets = rows(
        &db,
        "SELECT kind, target, rule, CAST(value AS TEXT) FROM actions WHERE outcome = 'sent' ORDER BY target",
    )
    .await;
    assert_eq!(
        targets,
        [
            [
                "http",
                &format!("POST http://127.0.0.1:{}/log", hook.port),
                "washer",
                r#"{"event":"washer","watts":2.5}"#
            ],
            ["notify", "family", "washer", "Washing done"],
            ["notify", "hook", "washer", "Washing done"],
            ["notify", "phone", "washer", "Washing done"],
        ]
    );

    // A 400 is a refusal: logged, recorded, not retried.
    ntfy.answer(&[(400, "invalid topic\nsee the docs")]);
    plug.publish("washer/again", "", QoS::AtLeastOnce, false).await;
    ntfy.wait_for(3, Duration::from_secs(5)).await;
    let failed =
        "SELECT count(*) FROM actions WHERE target = 'phone' AND outcome = 'failed' AND status = 400";
    eventually("the refusal's row", Duration::from_secs(5), || async {
        (count(&db, failed).await == 1).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(ntfy.received().len(), 3, "a 400 must not be retried");
    assert_eq!(count(&db, "SELECT count(*) FROM deliveries").await, 0);
    let (_, scrape) = crate::metrics::get(metrics_port, "/metrics").await;
    let outcome = |name: &str| {
        crate::metrics::sample(
            &scrape,
            &format!("homewright_deliveries_total{{outcome=\"{name}\"}}"),
        )
    };
    assert_eq!(
        [
            outcome("sent"),
            outcome("retried"),
            outcome("failed"),
            outcome("dropped")
        ],
        [Some(4.0), Some(1.0), Some(1.0), Some(0.0)]
    );

    process.signal("TERM");
    assert_eq!(process.wait().await, Some(0));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("notify phone: HTTP 500: try later; try 1 failed"),
        "no retry logged"
    );
    assert!(
        text.contains("notify phone: refused with HTTP 400: invalid topic; not retried"),
        "no refusal logged"
    );
    assert_no_secret(&log);
}

#[tokio::test(flavor = "multi_thread")]
async fn notifications_wait_out_an_outage_and_a_restart_and_arrive_once_in_order() {
    let port = free_port();
    let mut setup = Setup::embedded().rule("door", r#"on_message("door/+", |msg| notify(msg.payload));"#);
    setup.log_level = Some("trace".into());
    setup.extra_config = format!("notify:\n  phone: ntfy://alice:{NTFY_PASSWORD}@127.0.0.1:{port}/door\n");
    let log = setup.dir.path().join("engine.log");
    let db = setup.db_path();
    let outage = Instant::now();

    let first = Process::start_logged(&setup, &log).await;
    let door = Client::connect(setup.port, "door-sensor").await;
    for n in 1..=3 {
        door.publish("door/front", n.to_string(), QoS::AtLeastOnce, false)
            .await;
    }
    let waiting = "SELECT count(*) FROM deliveries";
    eventually("three rows in the outbox", Duration::from_secs(5), || async {
        (count(&db, waiting).await == 3).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1_500)).await; // a few tries against the closed port
    first.signal("TERM");
    assert_eq!(first.wait().await, Some(0));
    drop(door);
    assert_eq!(count(&db, waiting).await, 3, "kept across the stop");

    let second = Process::start_logged(&setup, &log).await;
    let door = Client::connect(setup.port, "door-sensor-2").await;
    for n in 4..=5 {
        door.publish("door/back", n.to_string(), QoS::AtLeastOnce, false)
            .await;
    }
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(outage.elapsed())).await;
    let ntfy = HttpServer::start_on(port).await;
    let received = ntfy.wait_for(5, Duration::from_secs(70)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let bodies: Vec<String> = ntfy.received().iter().map(|r| r.body.clone()).collect();
    assert_eq!(bodies, ["1", "2", "3", "4", "5"], "each once, in order");
    assert!(received.iter().all(|r| r.path == "/door"));
    let sent = "SELECT count(*) FROM actions WHERE kind = 'notify' AND outcome = 'sent'";
    eventually("five sent rows", Duration::from_secs(5), || async {
        (count(&db, sent).await == 5).then_some(())
    })
    .await;
    assert_eq!(count(&db, waiting).await, 0);
    second.signal("TERM");
    assert_eq!(second.wait().await, Some(0));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("cannot connect to 127.0.0.1"),
        "the outage is logged"
    );
    assert_no_secret(&log);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_never_answers_times_out_and_holds_up_nothing_else() {
    let silent = HttpServer::start_silent().await;
    let ntfy = HttpServer::start().await;
    let rule = format!(
        r#"on_message("go/+", |msg| {{
    http("PUT", "http://localhost:{silent}/x", msg.payload);
    notify("phone", msg.payload);
    publish("done/" + msg.parts[1], msg.payload);
}});
"#,
        silent = silent.port
    );
    let mut setup = Setup::embedded().rule("slow", &rule);
    setup.extra_config = format!(
        "notify:\n  phone: ntfy://127.0.0.1:{}/house\nhttp:\n  allow: [localhost]\n  timeout: 1s\n",
        ntfy.port
    );
    let engine = Engine::start(setup).await;
    let client = Client::connect(engine.setup.port, "watcher").await;
    client.subscribe("done/#").await;
    client.publish("go/1", "a", QoS::AtLeastOnce, false).await;
    client.next_on("done/1", Duration::from_secs(2)).await;
    ntfy.wait_for(1, Duration::from_secs(2)).await;
    // Timed out after 1 s, tried again after 1 s more.
    silent.wait_for(2, Duration::from_secs(6)).await;
    client.publish("go/2", "b", QoS::AtLeastOnce, false).await;
    client.next_on("done/2", Duration::from_secs(2)).await;
    let notified = ntfy.wait_for(2, Duration::from_secs(2)).await;
    assert_eq!(notified[1].body, "b");
    let db = engine.setup.db_path();
    let runs = "SELECT count(*) FROM rule_runs WHERE rule = 'slow' AND error IS NULL";
    eventually("two clean runs", Duration::from_secs(2), || async {
        (count(&db, runs).await == 2).then_some(())
    })
    .await;
    // Both calls wait on their lane; the notifications and publishes went on.
    assert_eq!(
        count(&db, "SELECT count(*) FROM deliveries WHERE kind = 'http'").await,
        2
    );
    engine.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_url_outside_http_allow_is_an_error_at_the_call() {
    let hook = HttpServer::start().await;
    let rule =
        "on_message(\"call/now\", |msg| {\n    http(\"GET\", \"https://evil.example/steal\", ());\n});\n";
    let mut setup = Setup::embedded().rule("caller", rule);
    setup.extra_config = format!("http:\n  allow: [\"127.0.0.1:{}\"]\n", hook.port);
    let engine = Engine::start(setup).await;
    let client = Client::connect(engine.setup.port, "caller").await;
    client.publish("call/now", "", QoS::AtLeastOnce, false).await;
    let db = engine.setup.db_path();
    let error = eventually("the failed run", Duration::from_secs(5), || async {
        let found = rows(
            &db,
            "SELECT error FROM rule_runs WHERE rule = 'caller' AND error IS NOT NULL",
        )
        .await;
        found.into_iter().next().map(|row| row[0].clone())
    })
    .await;
    assert!(
        error.ends_with(
            "rules/caller.rhai:2:5: http: evil.example is not in http.allow; add `evil.example` to http.allow in the config to let rules call it"
        ),
        "{error}"
    );
    assert_eq!(count(&db, "SELECT count(*) FROM deliveries").await, 0);
    engine.stop().await;
    assert!(hook.received().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_notify_command_sends_a_test_notification_and_prints_the_outcome() {
    let ntfy = HttpServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("homewright.yaml"),
        format!(
            "notify:\n  phone: ntfy://alice:{NTFY_PASSWORD}@127.0.0.1:{}/house\n",
            ntfy.port
        ),
    )
    .unwrap();
    let output = crate::support::run_homewright(dir.path(), &["notify", "Hello from homewright"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(stdout.trim(), "phone: sent (HTTP 200)");
    assert_eq!(ntfy.received()[0].body, "Hello from homewright");

    ntfy.answer(&[(401, "unauthorized")]);
    let output = crate::support::run_homewright(dir.path(), &["notify", "phone", "again"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(stdout.trim(), "phone: refused (HTTP 401): unauthorized");
    let output = crate::support::run_homewright(dir.path(), &["notify", "pager", "x"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no channel `pager` in notify:"), "{stderr}");
    assert!(!stderr.contains(NTFY_PASSWORD) && !stdout.contains(NTFY_PASSWORD));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_notification_older_than_max_age_is_dropped_and_recorded() {
    let down = free_port();
    let mut setup = Setup::embedded().rule(
        "door",
        r#"on_message("door/open", |msg| notify("the door is open"));"#,
    );
    setup.extra_config = format!("notify:\n  phone: ntfy://127.0.0.1:{down}/door\nhttp:\n  max_age: 2s\n");
    let engine = Engine::start(setup).await;
    let client = Client::connect(engine.setup.port, "door").await;
    client.publish("door/open", "", QoS::AtLeastOnce, false).await;
    let db = engine.setup.db_path();
    let dropped =
        "SELECT count(*) FROM actions WHERE kind = 'notify' AND target = 'phone' AND outcome = 'dropped'";
    eventually("the dropped row", Duration::from_secs(10), || async {
        (count(&db, dropped).await == 1).then_some(())
    })
    .await;
    assert_eq!(count(&db, "SELECT count(*) FROM deliveries").await, 0);
    // Nothing is sent once the server is back: it was dropped, not forgotten in a queue.
    let server = HttpServer::start_on(down).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(server.received().is_empty());
    engine.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn scenarios_check_notifications_and_http_calls_without_sending_them() {
    let server = HttpServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("rules/tests")).unwrap();
    std::fs::write(
        dir.path().join("homewright.yaml"),
        format!(
            "notify:\n  phone: ntfy://127.0.0.1:{port}/house\nhttp:\n  allow: [\"127.0.0.1:{port}\"]\n",
            port = server.port
        ),
    )
    .unwrap();
    let rule = format!(
        "on_message(\"mode\", |msg| {{\n    notify(\"phone\", `mode: ${{msg.payload}}`);\n    http(\"PUT\", \"http://127.0.0.1:{}/setpoint\", #{{ celsius: 17 }});\n}});\n",
        server.port
    );
    std::fs::write(dir.path().join("rules/away.rhai"), rule).unwrap();
    let url = format!("http://127.0.0.1:{}/setpoint", server.port);
    let pass = format!(
        "rule: away\nstart: 2026-06-01T10:00:00+02:00\nsteps:\n  - expect_not_notified: {{ channel: phone }}\n  - publish: {{ topic: mode, payload: away }}\n  - expect_notified: {{ channel: phone, text: \"mode: away\" }}\n  - expect_http: {{ method: PUT, url: \"{url}\", body: {{ celsius: 17 }} }}\n"
    );
    let fail = format!(
        "rule: away\nstart: 2026-06-01T10:00:00+02:00\nsteps:\n  - publish: {{ topic: mode, payload: home }}\n  - expect_notified: {{ regex: \"away$\", within: 1m }}\n  - expect_http: {{ url: \"{url}\", body: {{ celsius: 21 }} }}\n"
    );
    std::fs::write(dir.path().join("rules/tests/a_pass.yaml"), pass).unwrap();
    std::fs::write(dir.path().join("rules/tests/b_fail.yaml"), fail).unwrap();
    let output = crate::support::run_homewright(dir.path(), &["test"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("ok    rules/tests/a_pass.yaml (4 steps"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "FAIL  rules/tests/b_fail.yaml: step 2 (expect_notified): expected a notification with a text matching /away$/ within 1m; notified since the last match: phone \"mode: home\""
        ),
        "{stdout}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(server.received().is_empty(), "homewright test sent something");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_https_channel_checks_the_certificate_against_the_system_roots() {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "homewright test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca, ca_key);
    let server_key = KeyPair::generate().unwrap();
    let server_cert = CertificateParams::new(vec!["localhost".into()])
        .unwrap()
        .signed_by(&server_key, &issuer)
        .unwrap();
    let server = HttpServer::start_tls(&server_cert.pem(), &server_key.serialize_pem()).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), &ca_pem).unwrap();
    std::fs::write(
        dir.path().join("homewright.yaml"),
        format!(
            "notify:\n  phone: ntfys://localhost:{}/house\nhttp:\n  timeout: 5s\n",
            server.port
        ),
    )
    .unwrap();
    let notify = |trusted: bool| {
        let mut command = crate::support::homewright_command();
        command.current_dir(dir.path()).args(["notify", "over TLS"]);
        // The system's roots, as rustls-native-certs reads them: here, only the test CA.
        if trusted {
            command.env("SSL_CERT_FILE", dir.path().join("ca.pem"));
        } else {
            command
                .env("SSL_CERT_FILE", "/nonexistent.pem")
                .env("SSL_CERT_DIR", dir.path().join("none"));
        }
        command.output().expect("run homewright notify")
    };
    let output = notify(true);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        stdout.trim(),
        "phone: sent (HTTP 200)",
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let received = server.received();
    assert_eq!(
        (received[0].path.as_str(), received[0].body.as_str()),
        ("/house", "over TLS")
    );
    let output = notify(false);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stdout.starts_with("phone: not delivered: TLS with localhost:"),
        "{stdout}"
    );
    assert_eq!(server.received().len(), 1);
}
