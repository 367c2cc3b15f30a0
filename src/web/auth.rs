//! Who may look and switch: the login (`web.password`), the session cookie it sets, the CSRF token
//! every state-changing form carries, and the brake on guessing passwords.
//!
//! Sessions live in memory: a restart logs everyone out, which for one house is a fair price for
//! keeping no secret on disk. The cookie is `HttpOnly` (no script reads it) and `SameSite=Strict` (no
//! other site's page sends it); the CSRF token is a second secret only the engine's own pages carry,
//! so a form posted from elsewhere is refused even by a browser that sends the cookie. Without a
//! password (allowed on loopback only) the pages are open and the CSRF token is one per process.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use ring::digest::{SHA256, digest};
use ring::rand::{SecureRandom, SystemRandom};

use crate::config::Secret;

/// The session cookie's name.
pub const COOKIE: &str = "homewright_session";

/// How long a login lasts.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(30 * 86_400);

/// Sessions kept at most; a new login beyond this ends the oldest.
const MAX_SESSIONS: usize = 64;

/// Failed logins from one address within [`FAILURE_WINDOW`] before it must wait.
pub const MAX_FAILURES: usize = 5;

/// The window failed logins are counted in, and how long an address waits once over the limit.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);

/// Addresses whose failures are remembered at most (the oldest are forgotten first).
const MAX_TRACKED: usize = 1024;

struct Session {
    csrf: String,
    expires: Instant,
}

/// The login state of the web server.
pub struct Auth {
    /// SHA-256 of the password; `None` leaves the pages open.
    password: Option<[u8; 32]>,
    sessions: Mutex<HashMap<String, Session>>,
    /// The CSRF token of the open pages (no password).
    open_csrf: String,
    failures: Mutex<HashMap<IpAddr, Vec<Instant>>>,
    random: SystemRandom,
}

/// What a login attempt came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Login {
    /// A new session: its token for the cookie.
    Granted(String),
    Refused,
    /// Too many failures from this address: wait this long.
    Wait(Duration),
}

impl Auth {
    pub fn new(password: Option<&Secret>) -> Auth {
        let random = SystemRandom::new();
        Auth {
            password: password.map(|p| sha256(p.expose().as_bytes())),
            sessions: Mutex::new(HashMap::new()),
            open_csrf: token(&random),
            failures: Mutex::new(HashMap::new()),
            random,
        }
    }

    /// Whether pages ask for a login.
    pub fn required(&self) -> bool {
        self.password.is_some()
    }

    /// The CSRF token of the request's session: `None` when a login is required and the request has
    /// no live session.
    pub fn csrf(&self, headers: &HeaderMap) -> Option<String> {
        if self.password.is_none() {
            return Some(self.open_csrf.clone());
        }
        let token = session_cookie(headers)?;
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        sessions.retain(|_, s| s.expires > now);
        sessions.get(token).map(|s| s.csrf.clone())
    }

    /// Checks a password from `client`, counting failures per address.
    pub fn login(&self, client: IpAddr, password: &str) -> Login {
        let Some(expected) = self.password else {
            return Login::Granted(String::new());
        };
        let now = Instant::now();
        {
            let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(times) = failures.get_mut(&client) {
                times.retain(|t| now.duration_since(*t) < FAILURE_WINDOW);
                if times.len() >= MAX_FAILURES {
                    let oldest = times.first().copied().unwrap_or(now);
                    return Login::Wait(FAILURE_WINDOW.saturating_sub(now.duration_since(oldest)));
                }
            }
        }
        if !same(&sha256(password.as_bytes()), &expected) {
            let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
            if failures.len() >= MAX_TRACKED && !failures.contains_key(&client) {
                failures.retain(|_, times| times.iter().any(|t| now.duration_since(*t) < FAILURE_WINDOW));
                if failures.len() >= MAX_TRACKED {
                    failures.clear();
                }
            }
            failures.entry(client).or_default().push(now);
            return Login::Refused;
        }
        let session = token(&self.random);
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions.retain(|_, s| s.expires > now);
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone())
        {
            sessions.remove(&oldest);
        }
        sessions.insert(
            session.clone(),
            Session {
                csrf: token(&self.random),
                expires: now + SESSION_LIFETIME,
            },
        );
        Login::Granted(session)
    }

    /// Ends the request's session.
    pub fn logout(&self, headers: &HeaderMap) {
        if let Some(token) = session_cookie(headers) {
            self.sessions
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(token);
        }
    }
}

/// The `Set-Cookie` value for a new session.
pub fn set_cookie(token: &str) -> String {
    format!(
        "{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
        SESSION_LIFETIME.as_secs()
    )
}

/// The `Set-Cookie` value that deletes the session cookie.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0")
}

/// Whether a form's CSRF token is the expected one.
pub fn csrf_matches(expected: &str, given: &str) -> bool {
    !expected.is_empty() && same(&sha256(expected.as_bytes()), &sha256(given.as_bytes()))
}

fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == COOKIE && !value.is_empty()).then_some(value)
        })
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, bytes).as_ref());
    out
}

/// Equal, in a time that does not depend on where they differ.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// 32 random bytes as hex. Without the system's random source there is nothing safe to hand out;
/// the all-zero fallback never happens on Linux, whose getrandom does not fail once seeded.
fn token(random: &SystemRandom) -> String {
    let mut bytes = [0u8; 32];
    if random.fill(&mut bytes).is_err() {
        tracing::error!("the system's random source failed; session tokens are not safe");
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_cookie(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(axum::http::header::COOKIE, value.parse().unwrap());
        headers
    }

    #[test]
    fn a_session_is_granted_for_the_password_and_found_by_its_cookie() {
        let auth = Auth::new(Some(&Secret::new("s3cret".into())));
        let client: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(auth.login(client, "wrong"), Login::Refused);
        let Login::Granted(token) = auth.login(client, "s3cret") else {
            panic!("the right password is granted")
        };
        let headers = with_cookie(&format!("other=1; {COOKIE}={token}"));
        let csrf = auth.csrf(&headers).expect("a live session");
        assert_eq!(csrf.len(), 64);
        assert!(auth.csrf(&with_cookie(&format!("{COOKIE}=forged"))).is_none());
        auth.logout(&headers);
        assert!(auth.csrf(&headers).is_none());
    }

    #[test]
    fn an_address_waits_after_too_many_failures_and_others_do_not() {
        let auth = Auth::new(Some(&Secret::new("s3cret".into())));
        let guesser: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..MAX_FAILURES {
            assert_eq!(auth.login(guesser, "guess"), Login::Refused);
        }
        assert!(matches!(auth.login(guesser, "s3cret"), Login::Wait(_)));
        let owner: IpAddr = "192.0.2.2".parse().unwrap();
        assert!(matches!(auth.login(owner, "s3cret"), Login::Granted(_)));
    }

    #[test]
    fn csrf_tokens_must_match_exactly() {
        assert!(csrf_matches("abc", "abc"));
        assert!(!csrf_matches("abc", "abd"));
        assert!(!csrf_matches("", ""));
    }
}
