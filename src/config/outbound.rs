//! `notify:` (the channels `notify()` sends to) and `http:` (the hosts `http()` may call, and how
//! deliveries are tried): raw, then validated, as the rest of the config.
//!
//! ```yaml
//! notify:
//!   phone: ntfys://ntfy.sh/my-house-7f3a          # a channel is a URL ...
//!   family:                                      # ... or a URL with its secret kept apart
//!     url: gotifys://push.example.com
//!     token_file: /etc/homewright/gotify.token    # or token, or token_env: VAR
//! http:
//!   allow: [ntfy.sh, "192.168.1.20:8080"]         # a host allows every port; host:port only that one
//!   timeout: 10s                                  # one try: connect, send, read the answer
//!   max_age: 1h                                   # undelivered longer than this: dropped, with a warning
//! ```
//!
//! Problems never quote a channel's URL: it may hold a token.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::Secret;
use super::units::parse_duration;
use crate::outbound::channel::Channel;
use crate::outbound::url::Parts;

/// How long one try may take when `http.timeout` is not set: a phone service answers in well under a
/// second; ten leave room for a slow mobile uplink without holding a lane for long.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an undelivered notification is worth keeping: "the door is open" is useless hours later.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(3_600);

/// One `notify:` entry: a URL, or a URL with its secret given apart.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawChannel {
    Url(String),
    Full(RawChannelFull),
}

/// `notify.NAME: { url, token | token_file | token_env }`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawChannelFull {
    pub url: Option<String>,
    pub token: Option<String>,
    pub token_file: Option<String>,
    pub token_env: Option<String>,
}

/// `http:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawHttp {
    pub allow: Option<Vec<String>>,
    pub timeout: Option<String>,
    pub max_age: Option<String>,
}

/// A host rules may call, with its port when only that one is allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHost {
    /// Lower case.
    pub host: String,
    pub port: Option<u16>,
}

/// The channels, the allowed hosts and the delivery settings.
#[derive(Debug, Clone)]
pub struct OutboundConfig {
    /// By name, in name order (the order `notify(text)` sends in).
    pub channels: BTreeMap<String, Channel>,
    pub allow: Vec<AllowedHost>,
    pub timeout: Duration,
    pub max_age: Duration,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        OutboundConfig {
            channels: BTreeMap::new(),
            allow: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            max_age: DEFAULT_MAX_AGE,
        }
    }
}

impl OutboundConfig {
    /// Whether `http()` may call this URL's host.
    pub fn allows(&self, url: &Parts) -> bool {
        let port = url.port.unwrap_or(if url.scheme == "https" { 443 } else { 80 });
        self.allow.iter().any(|allowed| {
            allowed.host.eq_ignore_ascii_case(&url.host) && allowed.port.is_none_or(|p| p == port)
        })
    }
}

/// Validates `notify:` and `http:`; `base` resolves relative token files; each problem goes to
/// `problem` with its key.
pub fn validate(
    notify: &BTreeMap<String, RawChannel>,
    http: &RawHttp,
    base: &Path,
    problem: &mut dyn FnMut(&str, String),
) -> OutboundConfig {
    let mut channels = BTreeMap::new();
    for (name, raw) in notify {
        let key = format!("notify.{name}");
        let (url, token) = match raw {
            RawChannel::Url(url) => (Some(url.clone()), None),
            RawChannel::Full(full) => {
                let token = secret(full, base, &key, problem);
                let given = full.token.is_some() || full.token_file.is_some() || full.token_env.is_some();
                if given && token.is_none() {
                    continue; // already reported; the URL alone would only add a second problem
                }
                (full.url.clone(), token)
            }
        };
        let Some(url) = url else {
            problem(&key, "give the channel's url".into());
            continue;
        };
        match Channel::parse(&url, token) {
            Ok(channel) => {
                channels.insert(name.clone(), channel);
            }
            Err(e) => problem(&key, e),
        }
    }
    let mut allow = Vec::new();
    for (index, entry) in http.allow.iter().flatten().enumerate() {
        match allowed_host(entry) {
            Ok(host) => allow.push(host),
            Err(e) => problem(&format!("http.allow.{index}"), e),
        }
    }
    let mut duration =
        |key: &str, value: &Option<String>, default: Duration| match value.as_deref().map(parse_duration) {
            None => default,
            Some(Ok(d)) if !d.is_zero() => d,
            Some(Ok(_)) => {
                problem(key, "must be longer than 0s".into());
                default
            }
            Some(Err(e)) => {
                problem(key, e);
                default
            }
        };
    let timeout = duration("http.timeout", &http.timeout, DEFAULT_TIMEOUT);
    let max_age = duration("http.max_age", &http.max_age, DEFAULT_MAX_AGE);
    OutboundConfig {
        channels,
        allow,
        timeout,
        max_age,
    }
}

fn secret(
    raw: &RawChannelFull,
    base: &Path,
    key: &str,
    problem: &mut dyn FnMut(&str, String),
) -> Option<Secret> {
    let given = [&raw.token, &raw.token_file, &raw.token_env]
        .iter()
        .filter(|s| s.is_some())
        .count();
    if given > 1 {
        problem(
            &format!("{key}.token"),
            "give only one of token, token_file and token_env".into(),
        );
        return None;
    }
    if let Some(token) = &raw.token {
        return Some(Secret::new(token.clone()));
    }
    if let Some(file) = &raw.token_file {
        let path = base.join(file);
        return match std::fs::read_to_string(&path) {
            // A trailing newline is an editor's, not part of the token.
            Ok(token) => Some(Secret::new(token.trim_end_matches(['\n', '\r']).to_string())),
            Err(e) => {
                problem(&format!("{key}.token_file"), format!("cannot read {file}: {e}"));
                None
            }
        };
    }
    if let Some(var) = &raw.token_env {
        return match std::env::var(var) {
            Ok(token) => Some(Secret::new(token)),
            Err(_) => {
                problem(
                    &format!("{key}.token_env"),
                    format!("the environment variable {var} is not set"),
                );
                None
            }
        };
    }
    None
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
fn allowed_host(entry: &str) -> Result<AllowedHost, String> {
    let entry = entry.trim();
    if entry.contains("://") || entry.contains('/') {
        return Err(format!(
            "`{entry}` is not a host: write the host alone (e.g. ntfy.sh or 192.168.1.20:8080)"
        ));
    }
    let parts = Parts::split(&format!("http://{entry}")).map_err(|e| format!("`{entry}`: {e}"))?;
    if parts.host.is_empty() || parts.user.is_some() {
        return Err(format!(
            "`{entry}` is not a host: write it like ntfy.sh or 192.168.1.20:8080"
        ));
    }
    Ok(AllowedHost {
        host: parts.host.to_ascii_lowercase(),
        port: parts.port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(yaml_notify: &str, allow: &[&str]) -> (OutboundConfig, Vec<String>) {
        let notify: BTreeMap<String, RawChannel> = serde_yaml::from_str(yaml_notify).unwrap();
        let http = RawHttp {
            allow: Some(allow.iter().map(|s| s.to_string()).collect()),
            ..Default::default()
        };
        let mut problems = Vec::new();
        let config = validate(&notify, &http, Path::new("/nonexistent"), &mut |key, message| {
            problems.push(format!("{key}: {message}"))
        });
        (config, problems)
    }

    #[test]
    fn hosts_are_allowed_by_name_or_by_name_and_port() {
        let (config, problems) = check("{}", &["ntfy.sh", "192.168.1.20:8080", "[::1]:9000"]);
        assert!(problems.is_empty(), "{problems:?}");
        let allows = |url: &str| config.allows(&Parts::split(url).unwrap());
        assert!(allows("https://NTFY.sh/topic"));
        assert!(allows("http://ntfy.sh:8080/x"));
        assert!(allows("http://192.168.1.20:8080/hook"));
        assert!(!allows("http://192.168.1.20/hook"));
        assert!(allows("http://[::1]:9000/"));
        assert!(!allows("https://evil.example/"));
    }

    #[test]
    fn channel_problems_name_the_key_and_never_the_token() {
        let (config, problems) = check(
            "phone: ntfys://ntfy.sh/house\nbad: matrix://user:sekrit99@host\nfam: { url: 'gotify://h', token_env: HOMEWRIGHT_TEST_UNSET }",
            &["https://x/"],
        );
        assert!(config.channels.contains_key("phone"));
        let text = problems.join("\n");
        assert!(
            text.contains("notify.bad: `matrix://` is not a channel"),
            "{text}"
        );
        assert!(
            text.contains("notify.fam.token_env: the environment variable HOMEWRIGHT_TEST_UNSET is not set"),
            "{text}"
        );
        assert!(text.contains("http.allow.0:"), "{text}");
        assert!(!text.contains("sekrit99"), "{text}");
    }
}
