//! The web pages in a real browser: headless Chromium driven over WebDriver against a running engine
//! with its embedded broker, as an owner's phone or laptop sees them.

use crate::support::browser::{Browser, DESKTOP, PHONE};
use crate::support::{Engine, Setup, free_port};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browser_harness_shows_the_metrics_page() {
    let Some(mut browser) = Browser::start(DESKTOP).await else {
        return;
    };
    let metrics_port = free_port();
    let mut setup = Setup::embedded();
    setup.extra_config = format!("metrics:\n  listen: 127.0.0.1:{metrics_port}\n");
    let engine = Engine::start(setup).await;
    browser
        .open(&format!("http://127.0.0.1:{metrics_port}/metrics"))
        .await;
    browser
        .wait_for_text("body", "the stored counter", |t| {
            t.contains("homewright_messages_stored_total")
        })
        .await;
    browser.screenshot("metrics-desktop").await;
    browser.resize(PHONE).await;
    let width = browser.run("return window.innerWidth;", vec![]).await;
    assert_eq!(width.as_u64(), Some(u64::from(PHONE.0)));
    browser.screenshot("metrics-phone").await;
    browser.close().await;
    engine.stop().await;
}
