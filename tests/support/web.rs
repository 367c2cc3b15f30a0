//! The house's page for tests: the `web:` section of a test config, and a plain HTTP/1.1 client over
//! TCP that shows exactly what the server sent (status, every header, the body), cookies included.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Setup, free_port};

/// Relays of the test configs that have some: simulated pins.
pub const RELAYS: &str =
    "gpio:\n  backend: simulated\n  relays:\n    porch: { pin: 17 }\n    heater: { pin: 27 }\n";

impl Setup {
    /// Turns the page on at a free loopback port (with `password`, when given) and returns the port.
    /// `more` is added to the `web:` section, indented by two spaces.
    pub fn web(&mut self, password: Option<&str>, more: &str) -> u16 {
        let port = free_port();
        let password = password
            .map(|p| format!("  password: \"{p}\"\n"))
            .unwrap_or_default();
        self.extra_config
            .push_str(&format!("web:\n  listen: 127.0.0.1:{port}\n{password}{more}"));
        port
    }
}

/// What the server answered.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    /// Names in lower case, in the order sent.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The `name=value` of the session cookie this answer sets, if any.
    pub fn session_cookie(&self) -> Option<String> {
        let set = self.header("set-cookie")?;
        let pair = set.split(';').next()?.trim();
        pair.starts_with("homewright_session=").then(|| pair.to_string())
    }

    /// The value of the first `name="csrf" value="..."` hidden input of the page.
    pub fn csrf(&self) -> Option<String> {
        let at = self.body.find("name=\"csrf\" value=\"")? + "name=\"csrf\" value=\"".len();
        let end = self.body[at..].find('"')?;
        Some(self.body[at..at + end].to_string())
    }
}

/// One request on its own connection (`Connection: close`). `cookie` is sent as the Cookie header;
/// a `body` is sent as a form.
pub async fn request(
    port: u16,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    body: Option<&str>,
) -> Answer {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to the web server");
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    if let Some(cookie) = cookie {
        head.push_str(&format!("Cookie: {cookie}\r\n"));
    }
    let body = body.unwrap_or_default();
    if method == "POST" {
        head.push_str(&format!(
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    head.push_str(body);
    stream.write_all(head.as_bytes()).await.expect("send");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut raw))
        .await
        .expect("an answer within 30 s")
        .expect("read");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let body = if text.contains("transfer-encoding: chunked") || text.contains("Transfer-Encoding: chunked") {
        dechunk(body)
    } else {
        body.to_string()
    };
    Answer {
        status,
        headers,
        body,
    }
}

pub async fn get(port: u16, path: &str, cookie: Option<&str>) -> Answer {
    request(port, "GET", path, cookie, None).await
}

pub async fn post(port: u16, path: &str, cookie: Option<&str>, form: &str) -> Answer {
    request(port, "POST", path, cookie, Some(form)).await
}

/// Logs in with `password` and returns the session cookie (`name=value`).
pub async fn login(port: u16, password: &str) -> String {
    let answer = post(port, "/login", None, &format!("password={password}")).await;
    assert_eq!(answer.status, 303, "login: {answer:?}");
    answer.session_cookie().expect("a session cookie")
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || after.len() < size {
            break;
        }
        out.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    out
}
