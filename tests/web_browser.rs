//! The web pages in a real browser: headless Chromium driven over WebDriver against a running engine
//! with its embedded broker, as an owner's phone or laptop sees them. One browser session walks
//! through everything (Chromium is heavy on a small machine), and leaves screenshots of each page at a
//! phone's and a laptop's size in `target/screenshots/`.

use std::time::Duration;

use rumqttc::QoS;
use serde_json::json;

use crate::support::browser::{Browser, DESKTOP, PATIENCE, PHONE};
use crate::support::web::RELAYS;
use crate::support::{Client, Engine, Setup, count};

const PASSWORD: &str = "sofa-and-tea";
const TEMPERATURE: &str = "sensor/livingroom/temperature";

/// A rule that fails at run time (a payload that is not a number), so the Rules page has an error
/// with its position (line 3, the `parse_int` call).
const FAILING_RULE: &str = "// The boiler reports its pressure as a number.\non_message(\"boiler/pressure\", |msg| {\n    let bar = msg.payload.parse_int();\n    publish(\"boiler/ok\", bar > 1);\n});\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_logs_in_watches_values_arrive_switches_a_relay_and_reads_a_rule_error() {
    let Some(mut browser) = Browser::start(DESKTOP).await else {
        return;
    };
    let mut setup = Setup::embedded()
        .rule("boiler", FAILING_RULE)
        .rule("typo", "on_message(\"x\", |msg| {\n    let = 1;\n});\n");
    let web_port = setup.web(Some(PASSWORD), "");
    setup.extra_config.push_str(RELAYS);
    let engine = Engine::start(setup).await;
    let base = format!("http://127.0.0.1:{web_port}");
    let sensor = Client::connect(engine.setup.port, "web-sensor").await;
    // Some history before the first visit, so the topic has a row, a sparkline and a chart.
    for value in ["20.5", "20.9", "21.2", "21.0"] {
        sensor.publish(TEMPERATURE, value, QoS::AtLeastOnce, false).await;
    }
    sensor
        .publish("boiler/pressure", "high", QoS::AtLeastOnce, false)
        .await;
    let db = engine.setup.db_path();
    crate::support::eventually("the history and the failed run stored", PATIENCE, || async {
        let values = count(
            &db,
            &format!("SELECT count(*) FROM messages WHERE topic = '{TEMPERATURE}'"),
        )
        .await;
        let failures = count(
            &db,
            "SELECT count(*) FROM rule_runs WHERE rule = 'boiler' AND error IS NOT NULL",
        )
        .await;
        (values >= 4 && failures >= 1).then_some(())
    })
    .await;

    // Not logged in: any page sends the visitor to the login.
    browser.open(&format!("{base}/")).await;
    browser.find("form#login").await;
    assert!(browser.url().await.ends_with("/login"), "{}", browser.url().await);

    // A wrong password is refused with a visible error, and gives no session.
    log_in(&browser, "not-the-password").await;
    let error = browser
        .wait_for_text(".error", "an error", |t| !t.trim().is_empty())
        .await;
    assert!(error.to_lowercase().contains("password"), "{error}");
    browser.find("form#login").await;
    let cookies = browser.client.get_all_cookies().await.expect("read cookies");
    assert!(
        cookies.iter().all(|c| c.name() != "homewright_session"),
        "a wrong password gave a session: {cookies:?}"
    );

    // The right one opens the House page, with an HttpOnly, SameSite=Strict session cookie.
    browser.open(&format!("{base}/login")).await;
    log_in(&browser, PASSWORD).await;
    browser.find("#filter").await;
    assert_eq!(browser.url().await, format!("{base}/"));
    let cookies = browser.client.get_all_cookies().await.expect("read cookies");
    let session = cookies
        .iter()
        .find(|c| c.name() == "homewright_session")
        .unwrap_or_else(|| panic!("no session cookie: {cookies:?}"));
    assert_eq!(session.http_only(), Some(true), "{session:?}");
    // `cookie::SameSite`, which fantoccini does not re-export.
    assert_eq!(
        format!("{:?}", session.same_site()),
        "Some(Strict)",
        "{session:?}"
    );
    let value = format!("tr[data-topic=\"{TEMPERATURE}\"] td.value");
    browser
        .wait_for_text(&value, "the stored value", |t| t.trim() == "21.0")
        .await;

    // Values published now appear without a reload: on the row already shown, and as a new row.
    browser.run("window.notReloaded = true;", vec![]).await;
    sensor.publish(TEMPERATURE, "22.5", QoS::AtLeastOnce, false).await;
    sensor
        .publish("sensor/attic/humidity", "61", QoS::AtLeastOnce, false)
        .await;
    browser
        .wait_for_text(&value, "the new value 22.5", |t| t.trim() == "22.5")
        .await;
    browser
        .wait_for_text(
            "tr[data-topic=\"sensor/attic/humidity\"] td.value",
            "a new topic's value",
            |t| t.trim() == "61",
        )
        .await;
    let same_page = browser.run("return window.notReloaded === true;", vec![]).await;
    assert_eq!(same_page, json!(true), "the page was reloaded to show the values");

    // The filter hides the rows that do not match.
    browser
        .find("#filter")
        .await
        .send_keys("attic")
        .await
        .expect("type a filter");
    let shown = "tr[data-topic=\"sensor/attic/humidity\"]";
    let hidden = format!("tr[data-topic=\"{TEMPERATURE}\"]");
    crate::support::eventually("the filter to apply", PATIENCE, || async {
        let attic = browser.find(shown).await.is_displayed().await.unwrap_or(false);
        let living = browser.find(&hidden).await.is_displayed().await.unwrap_or(true);
        (attic && !living).then_some(())
    })
    .await;
    browser
        .find("#filter")
        .await
        .clear()
        .await
        .expect("clear the filter");
    browser
        .run(
            "document.getElementById('filter').dispatchEvent(new Event('input'));",
            vec![],
        )
        .await;

    // A relay switched from the page changes on the page and on its MQTT state topic.
    let watch = Client::connect(engine.setup.port, "web-watch").await;
    watch.subscribe("homewright/relay/porch").await;
    let relay_state = "[data-relay=\"porch\"] .state";
    browser
        .wait_for_text(relay_state, "OFF", |t| t.trim() == "OFF")
        .await;
    browser
        .find("[data-relay=\"porch\"] button[name=\"action\"][value=\"on\"]")
        .await
        .click()
        .await
        .expect("press On");
    browser
        .wait_for_text(relay_state, "ON", |t| t.trim() == "ON")
        .await;
    next_state(&watch, "ON").await;
    let switched = count(
        &db,
        "SELECT count(*) FROM actions WHERE kind = 'relay' AND target = 'porch' AND value = 'ON' AND cause = 'web'",
    );
    assert!(switched.await >= 1, "the switch is recorded with cause web");
    browser
        .find("[data-relay=\"porch\"] button[value=\"toggle\"]")
        .await
        .click()
        .await
        .expect("press Toggle");
    browser
        .wait_for_text(relay_state, "OFF", |t| t.trim() == "OFF")
        .await;
    next_state(&watch, "OFF").await;

    // A switch without the page's CSRF token is refused, though the browser sends the session cookie.
    let refused = browser
        .run_async(
            "const done = arguments[arguments.length - 1];\
             Promise.all([\
               fetch('/relays/porch', {method: 'POST', body: new URLSearchParams({action: 'on'}), redirect: 'manual'}),\
               fetch('/relays/porch', {method: 'POST', body: new URLSearchParams({action: 'on', csrf: 'forged'}), redirect: 'manual'}),\
             ]).then(rs => done(rs.map(r => r.status)), e => done(String(e)));",
            vec![],
        )
        .await;
    assert_eq!(refused, json!([403, 403]), "switches without a valid CSRF token");
    assert!(
        watch
            .try_next_on("homewright/relay/porch", Duration::from_secs(2))
            .await
            .is_none(),
        "a refused switch moved the relay"
    );
    browser.open(&format!("{base}/")).await;
    browser
        .wait_for_text(relay_state, "still OFF", |t| t.trim() == "OFF")
        .await;
    let mut too_wide: Vec<String> = screenshots(&mut browser, "house").await.into_iter().collect();

    // The topic link opens its chart and recent messages.
    browser
        .find(&format!("tr[data-topic=\"{TEMPERATURE}\"] a.topic-link"))
        .await
        .click()
        .await
        .expect("follow the topic link");
    browser.find("svg.chart, img.chart").await;
    assert!(
        browser.url().await.contains("/topic?name="),
        "{}",
        browser.url().await
    );
    browser
        .wait_for_text("#messages", "the recent values", |t| {
            t.contains("22.5") && t.contains("20.9")
        })
        .await;
    let drawn = browser
        .run(
            "const c = document.querySelector('.chart');\
             return c.tagName.toLowerCase() === 'img' ? c.naturalWidth > 0 : c.querySelectorAll('path, polyline, line').length > 0;",
            vec![],
        )
        .await;
    assert_eq!(drawn, json!(true), "the chart draws something");
    too_wide.extend(screenshots(&mut browser, "topic").await);

    // The Rules page shows the failing rule's error with its position, and the file that does not
    // compile with its error and caret.
    browser.open(&format!("{base}/rules")).await;
    let failing = "section[data-rule=\"boiler\"]";
    let error = browser
        .wait_for_text(&format!("{failing} .error"), "the run's error", |t| {
            t.contains("rules/boiler.rhai:3:")
        })
        .await;
    assert!(error.contains("rules/boiler.rhai:3:"), "{error}");
    let failures = browser
        .wait_for_text(&format!("{failing} .failures"), "a failure", |t| t.trim() != "0")
        .await;
    assert!(failures.trim().parse::<u32>().is_ok_and(|n| n >= 1), "{failures}");
    let broken = "section[data-rule=\"typo\"].broken";
    let error = browser
        .wait_for_text(&format!("{broken} .error"), "the compile error", |t| {
            t.contains("rules/typo.rhai:2:")
        })
        .await;
    let caret = browser
        .find(&format!("{broken} pre"))
        .await
        .text()
        .await
        .expect("the caret");
    assert!(caret.contains('^'), "no caret under the error: {caret}\n{error}");
    too_wide.extend(screenshots(&mut browser, "rules").await);

    browser.close().await;
    engine.stop().await;
    assert!(too_wide.is_empty(), "wider than a phone: {too_wide:?}");
}

/// Types `password` into the login form and sends it.
async fn log_in(browser: &Browser, password: &str) {
    let field = browser.find("form#login input[name=\"password\"]").await;
    field.clear().await.expect("clear the password field");
    field.send_keys(password).await.expect("type the password");
    browser
        .find("form#login button[type=\"submit\"]")
        .await
        .click()
        .await
        .expect("press Log in");
}

/// Waits for `state` on the relay's MQTT state topic (after the retained one read on subscribing).
async fn next_state(watch: &Client, state: &str) {
    let until = tokio::time::Instant::now() + PATIENCE;
    loop {
        let left = until.saturating_duration_since(tokio::time::Instant::now());
        let message = watch.try_next_on("homewright/relay/porch", left).await;
        match message {
            Some(m) if m.payload == state.as_bytes() => return,
            Some(_) => continue,
            None => panic!("homewright/relay/porch did not say {state} within {PATIENCE:?}"),
        }
    }
}

/// Screenshots of the page now at a phone's and a laptop's size; returns what is wrong when the page
/// does not fit the phone's width (something to scroll sideways).
async fn screenshots(browser: &mut Browser, page: &str) -> Option<String> {
    browser.resize(PHONE).await;
    let overflow = browser
        .run(
            "return document.documentElement.scrollWidth - window.innerWidth;",
            vec![],
        )
        .await;
    browser.screenshot(&format!("{page}-phone")).await;
    browser.resize(DESKTOP).await;
    browser.screenshot(&format!("{page}-desktop")).await;
    overflow
        .as_i64()
        .is_none_or(|px| px > 0)
        .then(|| format!("the {page} page is {overflow} px too wide (target/screenshots/{page}-phone.png)"))
}
