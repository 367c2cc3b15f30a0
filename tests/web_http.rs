//! The house's page over real HTTP on loopback, against the real binary on the embedded broker: every
//! route's status codes, the login and its cookie, the CSRF token of a relay switch, the brake on
//! guessing passwords, live values over server-sent events, and what the Topic, Rules and Health pages
//! show.

use std::time::Duration;

use rumqttc::QoS;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::web::{RELAYS, get, login, post};
use crate::support::{Client, Process, Setup, count, eventually};

const PASSWORD: &str = "correct-horse-7";

/// Every page, for the checks that hold on all of them.
const PAGES: [&str; 4] = ["/", "/topic?name=test/ready", "/rules", "/health"];

#[tokio::test]
async fn pages_ask_for_the_login_and_a_relay_switch_needs_its_csrf_token() {
    let mut setup = Setup::embedded();
    setup.extra_config.push_str(RELAYS);
    let port = setup.web(Some(PASSWORD), "");
    let log = setup.dir.path().join("engine.log");
    let _engine = Process::start_with_log(&setup, Some(&log)).await;

    // Not logged in: pages send the visitor to the login; anything else is refused.
    for page in PAGES {
        let answer = get(port, page, None).await;
        assert_eq!(answer.status, 303, "{page}: {answer:?}");
        assert_eq!(answer.header("location"), Some("/login"), "{page}");
    }
    assert_eq!(get(port, "/events", None).await.status, 403);
    assert_eq!(get(port, "/metrics", None).await.status, 401);
    assert_eq!(
        post(port, "/relays/porch", None, "action=on&csrf=x").await.status,
        403
    );
    let forged = "homewright_session=0123456789abcdef";
    assert_eq!(get(port, "/", Some(forged)).await.status, 303);

    let page = get(port, "/login", None).await;
    assert_eq!(page.status, 200);
    for part in [
        "<form id=\"login\"",
        "method=\"post\" action=\"/login\"",
        "<input name=\"password\" type=\"password\"",
        "<button type=\"submit\">",
    ] {
        assert!(page.body.contains(part), "{part}: {}", page.body);
    }
    let wrong = post(port, "/login", None, "password=guess").await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.body.contains("class=\"error\""), "{}", wrong.body);
    assert_eq!(wrong.session_cookie(), None);

    let granted = post(port, "/login", None, &format!("password={PASSWORD}")).await;
    assert_eq!(granted.status, 303, "{granted:?}");
    assert_eq!(granted.header("location"), Some("/"));
    let set = granted
        .header("set-cookie")
        .expect("a session cookie")
        .to_string();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.split(';').any(|part| part.trim() == flag), "{flag}: {set}");
    }
    let cookie = granted.session_cookie().expect("the session cookie");
    assert_eq!(
        get(port, "/login", Some(&cookie)).await.status,
        303,
        "logged in: no login form"
    );

    for page in PAGES {
        let answer = get(port, page, Some(&cookie)).await;
        assert_eq!(answer.status, 200, "{page}: {}", answer.body);
        assert!(!answer.body.contains(PASSWORD), "{page} shows the password");
        let headers = format!("{:?}", answer.headers);
        assert!(!headers.contains(PASSWORD), "{page} headers show the password");
        assert_eq!(answer.header("x-frame-options"), Some("DENY"), "{page}");
        assert!(answer.header("content-security-policy").is_some(), "{page}");
    }
    let metrics = get(port, "/metrics", Some(&cookie)).await;
    assert_eq!(metrics.status, 200);
    assert!(metrics.body.contains("homewright_messages_stored_total"));
    assert_eq!(get(port, "/nowhere", Some(&cookie)).await.status, 404);
    assert_eq!(get(port, "/relays/porch", Some(&cookie)).await.status, 405);
    assert_eq!(get(port, "/topic?name=a/%2B", Some(&cookie)).await.status, 400);

    let house = get(port, "/", Some(&cookie)).await;
    for part in [
        "<tr data-topic=\"test/ready\">",
        "<td class=\"value\">",
        "<td class=\"age\"",
        "<input id=\"filter\"",
        "<a class=\"topic-link\" href=\"/topic?name=test/ready\">",
        "data-relay=\"porch\"",
        "<form method=\"post\" action=\"/relays/porch\">",
        "<button name=\"action\" value=\"toggle\">",
    ] {
        assert!(house.body.contains(part), "{part}: {}", house.body);
    }
    let csrf = house.csrf().expect("the relay form's CSRF token");

    // A switch without the token, or with another, changes nothing.
    let watcher = Client::connect(setup.port, "web-watcher").await;
    watcher.subscribe("homewright/relay/porch").await;
    assert_eq!(
        post(port, "/relays/porch", Some(&cookie), "action=on")
            .await
            .status,
        403
    );
    let other = "a".repeat(64);
    assert_eq!(
        post(
            port,
            "/relays/porch",
            Some(&cookie),
            &format!("action=on&csrf={other}")
        )
        .await
        .status,
        403
    );
    assert_eq!(
        post(
            port,
            "/relays/nothing",
            Some(&cookie),
            &format!("action=on&csrf={csrf}")
        )
        .await
        .status,
        404
    );
    assert_eq!(
        post(
            port,
            "/relays/porch",
            Some(&cookie),
            &format!("action=explode&csrf={csrf}")
        )
        .await
        .status,
        400
    );
    let switched = post(
        port,
        "/relays/porch",
        Some(&cookie),
        &format!("action=on&csrf={csrf}"),
    )
    .await;
    assert_eq!(switched.status, 303, "{switched:?}");
    assert_eq!(switched.header("location"), Some("/"));
    eventually(
        "porch's state topic to say ON",
        Duration::from_secs(20),
        || async {
            let message = watcher
                .try_next_on("homewright/relay/porch", Duration::from_millis(500))
                .await?;
            (&message.payload[..] == b"ON").then_some(())
        },
    )
    .await;
    let db = setup.db_path();
    eventually("the switch recorded with cause web", Duration::from_secs(20), || async {
        let n = count(
            &db,
            "SELECT count(*) FROM actions WHERE kind = 'relay' AND target = 'porch' AND cause = 'web' AND CAST(value AS TEXT) = 'ON'",
        )
        .await;
        (n == 1).then_some(())
    })
    .await;
    eventually(
        "the House page to show porch ON",
        Duration::from_secs(20),
        || async {
            let page = get(port, "/", Some(&cookie)).await;
            let at = page.body.find("data-relay=\"porch\"")?;
            let relay = &page.body[at..at + 400.min(page.body.len() - at)];
            (relay.contains(">ON<") && relay.contains("web")).then_some(())
        },
    )
    .await;

    // Logging out ends the session: the old cookie no longer opens a page.
    let out = post(port, "/logout", Some(&cookie), &format!("csrf={csrf}")).await;
    assert_eq!(out.status, 303);
    assert_eq!(get(port, "/", Some(&cookie)).await.status, 303);

    // Guessing: after five failures from one address even the right password waits, and each
    // failure is logged with the address.
    for _ in 0..4 {
        assert_eq!(post(port, "/login", None, "password=guess").await.status, 401);
    }
    let braked = post(port, "/login", None, &format!("password={PASSWORD}")).await;
    assert_eq!(braked.status, 429, "{braked:?}");
    assert!(braked.body.contains("class=\"error\""));
    assert_eq!(braked.session_cookie(), None);
    let logged = std::fs::read_to_string(&log).expect("read the log");
    let failures = logged
        .lines()
        .filter(|l| l.contains("failed login to the web page: wrong password") && l.contains("127.0.0.1"))
        .count();
    assert_eq!(failures, 5, "{logged}");
    assert!(!logged.contains(PASSWORD), "the log shows the password");
}

#[tokio::test]
async fn open_pages_on_loopback_show_live_values_charts_and_rule_errors() {
    let mut setup = Setup::embedded()
        .rule(
            "failing",
            "on_message(\"test/fail\", |msg| {\n    let n = msg.payload.nope();\n});\n",
        )
        .rule("broken", "on_message(\"test/x\", |msg| {\n    let = 1;\n});\n");
    let port = setup.web(None, "");
    let _engine = Process::start(&setup).await;
    let sensor = Client::connect(setup.port, "web-sensor").await;

    // No password on loopback: the pages are open and there is no login.
    for page in PAGES {
        assert_eq!(get(port, page, None).await.status, 200, "{page}");
    }
    assert_eq!(get(port, "/login", None).await.status, 303);
    assert_eq!(get(port, "/metrics", None).await.status, 200);
    let house = get(port, "/", None).await;
    assert!(!house.body.contains("/logout"), "no logout without a login");
    // Still, a relay switch from another site's form is refused.
    assert_eq!(
        post(port, "/relays/porch", None, "action=on&csrf=x").await.status,
        403
    );

    // A value published now reaches an open event stream.
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    stream
        .write_all(b"GET /events?after=0 HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
        .await
        .expect("send");
    let mut seen = String::new();
    let mut value = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !seen.contains("\"payload\":\"21.5\"") {
        assert!(tokio::time::Instant::now() < deadline, "no live value in: {seen}");
        if value < 40 {
            value += 1;
            sensor
                .publish("house/livingroom/temperature", "21.5", QoS::AtLeastOnce, false)
                .await;
        }
        let mut buffer = [0u8; 4096];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(500), stream.read(&mut buffer)).await {
            assert!(n > 0, "the stream closed: {seen}");
            seen.push_str(&String::from_utf8_lossy(&buffer[..n]));
        }
    }
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    assert!(
        seen.to_ascii_lowercase()
            .contains("content-type: text/event-stream"),
        "{seen}"
    );
    assert!(seen.contains("event: value"), "{seen}");
    assert!(
        seen.contains("\"topic\":\"house/livingroom/temperature\""),
        "{seen}"
    );

    for v in ["20.5", "22", "21"] {
        sensor
            .publish("house/livingroom/temperature", v, QoS::AtLeastOnce, false)
            .await;
    }
    let topic = eventually("a chart of the topic", Duration::from_secs(20), || async {
        let page = get(port, "/topic?name=house/livingroom/temperature&since=1h", None).await;
        (page.status == 200 && page.body.contains("<svg class=\"chart\"") && page.body.contains(">21<"))
            .then_some(page)
    })
    .await;
    assert!(topic.body.contains("<table id=\"messages\">"), "{}", topic.body);
    let json = get(port, "/topic?name=house/livingroom/temperature&field=$.t", None).await;
    assert_eq!(json.status, 200);
    assert!(json.body.contains("No numbers"), "{}", json.body);

    sensor.publish("test/fail", "x", QoS::AtLeastOnce, false).await;
    let rules = eventually(
        "the failing rule's error on the Rules page",
        Duration::from_secs(20),
        || async {
            let page = get(port, "/rules", None).await;
            page.body.contains("failing.rhai:2:").then_some(page)
        },
    )
    .await;
    let failing = section(&rules.body, "failing");
    assert!(failing.contains("class=\"runs\">1<"), "{failing}");
    assert!(failing.contains("class=\"failures\">1<"), "{failing}");
    assert!(failing.contains("class=\"error\">"), "{failing}");
    assert!(failing.contains("rules/failing.rhai:2:"), "{failing}");
    assert!(failing.contains("on_message test/fail"), "{failing}");
    let broken = section(&rules.body, "broken");
    assert!(broken.starts_with("<section class=\"rule broken\""), "{broken}");
    assert!(broken.contains("rules/broken.rhai:2:"), "{broken}");
    assert!(broken.contains("<pre>") && broken.contains('^'), "{broken}");

    let health = get(port, "/health", None).await;
    for part in [
        "<td class=\"connection\">connected</td>",
        "data-queue=\"ingest\"",
        "id=\"commits\"",
        "id=\"outboxes\"",
        "id=\"disk\"",
    ] {
        assert!(health.body.contains(part), "{part}: {}", health.body);
    }
}

/// The `<section ...>` of rule `name` on the Rules page.
fn section<'a>(page: &'a str, name: &str) -> &'a str {
    let marker = format!("data-rule=\"{name}\"");
    let at = page
        .find(&marker)
        .unwrap_or_else(|| panic!("no section for {name}: {page}"));
    let start = page[..at].rfind("<section").expect("a section start");
    let end = page[at..].find("</section>").map_or(page.len(), |e| at + e);
    &page[start..end]
}

#[tokio::test]
async fn listening_beyond_loopback_without_a_password_is_refused_naming_the_key() {
    let mut setup = Setup::embedded();
    setup.extra_config = "web:\n  listen: 0.0.0.0:8080\n".into();
    let config = setup.write_config();
    let output = crate::support::homewright_command()
        .args(["check", "-c"])
        .arg(&config)
        .output()
        .expect("run check");
    assert_eq!(output.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("web.password: web.listen is 0.0.0.0:8080, which other machines can reach"),
        "{stdout}"
    );
    setup.extra_config = "web:\n  listen: 0.0.0.0:8080\n  password_env: HOMEWRIGHT_TEST_NO_SUCH_VAR\n".into();
    let config = setup.write_config();
    let output = crate::support::homewright_command()
        .args(["check", "-c"])
        .arg(&config)
        .output()
        .expect("run check");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("web.password_env: the environment variable HOMEWRIGHT_TEST_NO_SUCH_VAR is not set"),
        "{stdout}"
    );
}

#[tokio::test]
async fn a_web_port_in_use_stops_the_start_naming_the_key() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let mut setup = Setup::embedded();
    setup.extra_config = format!("web:\n  listen: 127.0.0.1:{port}\n");
    let output = crate::support::homewright_command()
        .args(["run", "-c"])
        .arg(setup.write_config())
        .output()
        .expect("run homewright");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("cannot listen for the web page on 127.0.0.1:{port}"))
            && stderr.contains("web.listen"),
        "{stderr}"
    );
}

#[tokio::test]
async fn metrics_on_the_web_port_can_be_opened_to_a_scraper() {
    let mut setup = Setup::embedded();
    let port = setup.web(Some(PASSWORD), "  metrics_login: false\n");
    let _engine = Process::start(&setup).await;
    let metrics = get(port, "/metrics", None).await;
    assert_eq!(metrics.status, 200);
    assert!(metrics.body.contains("homewright_messages_stored_total"));
    assert_eq!(
        get(port, "/", None).await.status,
        303,
        "pages still ask for the login"
    );
    let cookie = login(port, PASSWORD).await;
    assert_eq!(get(port, "/", Some(&cookie)).await.status, 200);
}
