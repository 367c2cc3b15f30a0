//! A headless Chromium driven over WebDriver, for the tests that look at the web pages as an owner's
//! browser does: chromedriver on a free loopback port, one browser session, both stopped when dropped
//! (a failing test included). Where chromedriver or Chromium is not installed the tests are skipped,
//! unless HOMEWRIGHT_REQUIRE_BROWSER=1 (as `.ci/run` sets) makes their absence a failure.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;

use super::free_port;

/// How long to wait for chromedriver, a page or an element on a loaded machine.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// A phone held upright (an iPhone 12-15's CSS pixels).
pub const PHONE: (u32, u32) = (390, 844);
/// A laptop's window.
pub const DESKTOP: (u32, u32) = (1280, 800);

/// chromedriver and the browser session it drives.
pub struct Browser {
    pub client: Client,
    // Dropped in this order: the processes first, then their profile directory.
    _driver: Driver,
    _profile: tempfile::TempDir,
}

/// The chromedriver process group, killed when dropped (also when a test panics before it closed
/// its session).
struct Driver(Child);

/// The first of `candidates` that is a file.
fn first_file(candidates: &[&str]) -> Option<PathBuf> {
    candidates.iter().map(PathBuf::from).find(|p| p.is_file())
}

fn required() -> bool {
    std::env::var("HOMEWRIGHT_REQUIRE_BROWSER").is_ok_and(|v| v == "1")
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with a `size` window, or returns None (test
    /// skipped) when they are not installed and not required.
    pub async fn start(size: (u32, u32)) -> Option<Browser> {
        let driver = first_file(&["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]);
        let chromium = first_file(&["/usr/bin/chromium", "/usr/lib/chromium/chromium"]);
        let (Some(driver), Some(chromium)) = (driver, chromium) else {
            let why =
                "chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)";
            if required() {
                panic!("a browser is required (HOMEWRIGHT_REQUIRE_BROWSER=1) but {why}");
            }
            eprintln!("skipped: {why}");
            return None;
        };
        Some(Browser::launch(&driver, &chromium, size).await)
    }

    async fn launch(driver: &Path, chromium: &Path, size: (u32, u32)) -> Browser {
        let port = free_port();
        let profile = tempfile::tempdir().expect("temp dir for the browser profile");
        let log = profile.path().join("chromedriver.log");
        // Its own process group: Chromium and its helpers are chromedriver's children, and a test
        // that fails before closing the session must not leave them running.
        let mut command = Command::new(driver);
        command
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let driver = Driver(command.spawn().expect("start chromedriver"));
        let client = Browser::connect(port, chromium, profile.path(), size, &log).await;
        let mut browser = Browser {
            client,
            _driver: driver,
            _profile: profile,
        };
        browser.resize(size).await;
        browser
    }

    async fn connect(port: u16, chromium: &Path, profile: &Path, size: (u32, u32), log: &Path) -> Client {
        let until = std::time::Instant::now() + PATIENCE;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < until,
                "chromedriver did not listen on port {port} within {PATIENCE:?}: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let options = json!({
            "binary": chromium,
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                // /dev/shm is small in containers; Chromium's renderer crashes when it fills.
                "--disable-dev-shm-usage",
                "--hide-scrollbars",
                "--no-first-run",
                "--disable-extensions",
                format!("--user-data-dir={}", profile.join("chromium").display()),
                format!("--window-size={},{}", size.0, size.1),
            ],
        });
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("goog:chromeOptions".into(), options);
        let mut builder = ClientBuilder::new(HttpConnector::new());
        builder.capabilities(capabilities);
        // Chromium's first start on a busy machine can take a while; chromedriver allows 60 s.
        let mut last = None;
        for _ in 0..3 {
            match builder.connect(&format!("http://127.0.0.1:{port}")).await {
                Ok(client) => return client,
                Err(e) => last = Some(e.to_string()),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        panic!(
            "no browser session: {}\n{}",
            last.unwrap_or_default(),
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }

    /// Makes the page's viewport `size` CSS pixels, so a screenshot shows what a screen of that size
    /// shows.
    pub async fn resize(&mut self, size: (u32, u32)) {
        let (width, height) = size;
        let until = std::time::Instant::now() + PATIENCE;
        let mut window = size;
        loop {
            self.client
                .set_window_size(window.0, window.1)
                .await
                .expect("set the window size");
            // A resize lands a little later on a busy machine; the frame (outer minus inner size,
            // about 140 px of height in headless Chromium 156) is read from one consistent snapshot.
            tokio::time::sleep(Duration::from_millis(100)).await;
            let sizes = self
                .client
                .execute(
                    "return [innerWidth, innerHeight, outerWidth, outerHeight];",
                    vec![],
                )
                .await
                .expect("read the viewport size");
            let px = |i: usize| sizes[i].as_u64().unwrap_or(0) as u32;
            if (px(0), px(1)) == size {
                return;
            }
            assert!(
                std::time::Instant::now() < until,
                "cannot make the viewport {width}x{height}: it is {}x{} in a {}x{} window",
                px(0),
                px(1),
                px(2),
                px(3)
            );
            window = (
                (width + px(2)).saturating_sub(px(0)),
                (height + px(3)).saturating_sub(px(1)),
            );
        }
    }

    /// Opens `url` and waits until the page has loaded.
    pub async fn open(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// The first element matching the CSS `selector`, waiting up to [`PATIENCE`] for it.
    pub async fn find(&self, selector: &str) -> Element {
        let found = self
            .client
            .wait()
            .at_most(PATIENCE)
            .for_element(Locator::Css(selector))
            .await;
        match found {
            Ok(element) => element,
            Err(e) => panic!(
                "no element {selector} within {PATIENCE:?}: {e}\n{}",
                self.page_text().await
            ),
        }
    }

    /// Every element matching `selector` now.
    pub async fn find_all(&self, selector: &str) -> Vec<Element> {
        self.client
            .find_all(Locator::Css(selector))
            .await
            .unwrap_or_else(|e| panic!("find {selector}: {e}"))
    }

    /// Waits until the text of the first element matching `selector` satisfies `ok`; returns it.
    pub async fn wait_for_text(&self, selector: &str, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let until = std::time::Instant::now() + PATIENCE;
        let mut last = String::new();
        loop {
            if let Ok(element) = self.client.find(Locator::Css(selector)).await {
                // The element may be replaced while it is read (a live update): read it again then.
                if let Ok(text) = element.text().await {
                    if ok(&text) {
                        return text;
                    }
                    last = text;
                }
            }
            assert!(
                std::time::Instant::now() < until,
                "{selector} did not show {what} within {PATIENCE:?}; it showed {last:?}\n{}",
                self.page_text().await
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The page's URL now.
    pub async fn url(&self) -> String {
        self.client
            .current_url()
            .await
            .map(|u| u.to_string())
            .unwrap_or_default()
    }

    /// The visible text of the page, for failure messages.
    pub async fn page_text(&self) -> String {
        let url = self.url().await;
        let text = match self.client.find(Locator::Css("body")).await {
            Ok(body) => body.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        format!("page {url}:\n{text}")
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page and returns its value.
    pub async fn run(&self, script: &str, args: Vec<serde_json::Value>) -> serde_json::Value {
        self.client
            .execute(script, args)
            .await
            .unwrap_or_else(|e| panic!("run script in the page: {e}"))
    }

    /// Like [`Browser::run`] for a script that calls `arguments[arguments.length - 1](value)` when done.
    pub async fn run_async(&self, script: &str, args: Vec<serde_json::Value>) -> serde_json::Value {
        self.client
            .execute_async(script, args)
            .await
            .unwrap_or_else(|e| panic!("run async script in the page: {e}"))
    }

    /// Writes a PNG of the viewport to `target/screenshots/NAME.png` and returns its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self
            .client
            .screenshot()
            .await
            .unwrap_or_else(|e| panic!("screenshot {name}: {e}"));
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
        std::fs::create_dir_all(&dir).expect("create target/screenshots");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write the screenshot");
        path
    }

    /// Ends the session (Chromium quits) and chromedriver.
    pub async fn close(self) {
        // Drop kills whatever is left; a clean end first lets Chromium remove its own files.
        let _ = tokio::time::timeout(PATIENCE, self.client.clone().close()).await;
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The whole group: chromedriver, Chromium and its renderers.
        if let Ok(group) = libc::pid_t::try_from(self.0.id()) {
            // SAFETY: kill(2) with a negative pid signals the process group made for chromedriver.
            unsafe {
                libc::kill(-group, libc::SIGKILL);
            }
        }
        let _ = self.0.wait();
    }
}
