//! Notification channels: a URL in `notify:` of the config, in the form Apprise and shoutrrr users
//! know, turned into the HTTP request each service expects.
//!
//! | URL | request |
//! | --- | --- |
//! | `ntfy://[user:pass@]host[:port]/topic` (`ntfys://`: HTTPS) | POST `/topic`, text body, `Title`/`Priority`/`Tags`/`Click` headers |
//! | `gotify://host[:port][/path]/token` (`gotifys://`: HTTPS) | POST `/message` with `X-Gotify-Key`, JSON |
//! | `pushover://user@token` | POST `https://api.pushover.net/1/messages.json`, JSON |
//! | `telegram://bot_token@chat_id` | POST `https://api.telegram.org/bot<token>/sendMessage`, JSON |
//! | `https://...` or `http://...` | POST to that URL, JSON `{title, message, priority, tags, click}` |
//!
//! A channel's secret (password, token, user key) may also come apart from the URL, from the config's
//! `token`, `token_file` or `token_env`. Secrets are held as [`Secret`]s; the only text that leaves
//! this module is the request itself, and [`Channel::secrets`] to hide in anything a server sends back.

use bytes::Bytes;

use super::client::Prepared;
use super::url::Parts;
use crate::config::Secret;
use crate::event::Notification;

/// The schemes a channel URL may have, for messages.
pub const SCHEMES: &str = "ntfy, ntfys, gotify, gotifys, pushover, telegram, http, https";

/// One configured notification channel.
#[derive(Debug, Clone)]
pub struct Channel {
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    Ntfy { base: Base, topic: String, auth: Auth },
    Gotify { base: Base, token: Secret },
    Pushover { user: Secret, token: Secret },
    Telegram { token: Secret, chat: String },
    Webhook { base: Base, path: String, auth: Auth },
}

/// Where a self-hosted service answers.
#[derive(Debug, Clone)]
struct Base {
    tls: bool,
    host: String,
    port: u16,
    /// A path prefix (Gotify behind a reverse proxy), without a trailing `/`.
    prefix: String,
}

#[derive(Debug, Clone)]
enum Auth {
    None,
    Basic { user: String, password: Secret },
    Bearer(Secret),
}

impl Channel {
    /// Reads a channel URL; `token` is the secret given apart from it. Errors never quote the URL.
    pub fn parse(url: &str, token: Option<Secret>) -> Result<Channel, String> {
        let parts = Parts::split(url)?;
        let kind = match parts.scheme.as_str() {
            "ntfy" | "ntfys" => ntfy(parts, token)?,
            "gotify" | "gotifys" => gotify(parts, token)?,
            "pushover" => pushover(parts, token)?,
            "telegram" | "tgram" => telegram(parts, token)?,
            "http" | "https" => webhook(parts, token)?,
            other => {
                return Err(format!(
                    "`{other}://` is not a channel this engine knows ({SCHEMES})"
                ));
            }
        };
        Ok(Channel { kind })
    }

    /// The request that delivers `note` on this channel.
    pub fn request(&self, note: &Notification) -> Prepared {
        match &self.kind {
            Kind::Ntfy { base, topic, auth } => {
                let mut headers = Vec::new();
                if let Some(title) = &note.title {
                    headers.push(("Title".to_string(), header_text(title)));
                }
                if let Some(priority) = note.priority {
                    headers.push(("Priority".to_string(), priority.to_string()));
                }
                if !note.tags.is_empty() {
                    headers.push(("Tags".to_string(), header_text(&note.tags.join(","))));
                }
                if let Some(click) = &note.click {
                    headers.push(("Click".to_string(), header_text(click)));
                }
                headers.push(("Content-Type".into(), "text/plain; charset=utf-8".into()));
                auth.add_to(&mut headers);
                base.post(&format!("/{topic}"), headers, Bytes::from(note.text.clone()))
            }
            Kind::Gotify { base, token } => {
                let mut body = serde_json::json!({ "message": note.text });
                if let Some(title) = &note.title {
                    body["title"] = title.as_str().into();
                }
                if let Some(priority) = note.priority {
                    body["priority"] = [1, 3, 5, 7, 10][priority_index(priority)].into();
                }
                if let Some(click) = &note.click {
                    body["extras"] =
                        serde_json::json!({ "client::notification": { "click": { "url": click } } });
                }
                let headers = vec![("X-Gotify-Key".to_string(), token.expose().to_string())];
                base.post("/message", json_headers(headers), json(&body))
            }
            Kind::Pushover { user, token } => {
                let mut body = serde_json::json!({
                    "token": token.expose(), "user": user.expose(), "message": note.text,
                });
                if let Some(title) = &note.title {
                    body["title"] = title.as_str().into();
                }
                if let Some(priority) = note.priority {
                    // Pushover's 2 (emergency) needs retry settings; the highest here is 1.
                    body["priority"] = [-2, -1, 0, 1, 1][priority_index(priority)].into();
                }
                if let Some(click) = &note.click {
                    body["url"] = click.as_str().into();
                }
                Base::https("api.pushover.net").post(
                    "/1/messages.json",
                    json_headers(Vec::new()),
                    json(&body),
                )
            }
            Kind::Telegram { token, chat } => {
                let mut text = match &note.title {
                    Some(title) => format!("{title}\n\n{}", note.text),
                    None => note.text.clone(),
                };
                if let Some(click) = &note.click {
                    text = format!("{text}\n{click}");
                }
                let body = serde_json::json!({
                    "chat_id": chat, "text": text,
                    "disable_notification": note.priority.is_some_and(|p| p <= 2),
                });
                let path = format!("/bot{}/sendMessage", token.expose());
                Base::https("api.telegram.org").post(&path, json_headers(Vec::new()), json(&body))
            }
            Kind::Webhook { base, path, auth } => {
                let mut body = serde_json::json!({ "message": note.text });
                if let Some(title) = &note.title {
                    body["title"] = title.as_str().into();
                }
                if let Some(priority) = note.priority {
                    body["priority"] = priority.into();
                }
                if !note.tags.is_empty() {
                    body["tags"] = note.tags.clone().into();
                }
                if let Some(click) = &note.click {
                    body["click"] = click.as_str().into();
                }
                let mut headers = json_headers(Vec::new());
                auth.add_to(&mut headers);
                base.post(path, headers, json(&body))
            }
        }
    }

    /// The channel's secrets, to hide in whatever a server sends back.
    pub fn secrets(&self) -> Vec<String> {
        let secrets = match &self.kind {
            Kind::Ntfy { auth, .. } | Kind::Webhook { auth, .. } => auth.secret().into_iter().collect(),
            Kind::Gotify { token, .. } => vec![token.expose()],
            Kind::Pushover { user, token } => vec![user.expose(), token.expose()],
            Kind::Telegram { token, .. } => vec![token.expose()],
        };
        secrets.into_iter().map(str::to_string).collect()
    }
}

fn ntfy(parts: Parts, token: Option<Secret>) -> Result<Kind, String> {
    let topic = parts.path.trim_matches('/').to_string();
    if topic.is_empty() || topic.contains('/') {
        return Err("an ntfy URL names one topic: ntfy://host/topic".into());
    }
    let base = Base::of(&parts, parts.scheme == "ntfys", "")?;
    let auth = match (parts.user, parts.password, token) {
        (Some(_), Some(_), Some(_)) => return Err(both()),
        (Some(user), Some(password), None) => Auth::Basic {
            user,
            password: Secret::new(password),
        },
        (Some(user), None, Some(password)) => Auth::Basic { user, password },
        (None, _, Some(token)) => Auth::Bearer(token),
        (Some(_), None, None) => {
            return Err(
                "the ntfy URL has a user but no password (write user:password@, or give token_file)".into(),
            );
        }
        (None, _, None) => Auth::None,
    };
    Ok(Kind::Ntfy { base, topic, auth })
}

fn gotify(parts: Parts, token: Option<Secret>) -> Result<Kind, String> {
    let path = parts.path.trim_end_matches('/');
    let (prefix, in_url) = match path.rsplit_once('/') {
        Some((prefix, last)) if !last.is_empty() && token.is_none() => (prefix, Some(last.to_string())),
        _ => (path, None),
    };
    let token = match (in_url, token) {
        (Some(token), None) => Secret::new(token),
        (None, Some(token)) => token,
        _ => {
            return Err(
                "a gotify URL ends with the application token: gotify://host/TOKEN (or give token_file)"
                    .into(),
            );
        }
    };
    let base = Base::of(&parts, parts.scheme == "gotifys", prefix)?;
    Ok(Kind::Gotify { base, token })
}

fn pushover(parts: Parts, token: Option<Secret>) -> Result<Kind, String> {
    let Some(user) = parts.user else {
        return Err("a pushover URL is pushover://USER_KEY@APP_TOKEN".into());
    };
    let token = match (parts.host.is_empty(), token) {
        (false, None) => Secret::new(parts.host),
        (true, Some(token)) => token,
        (false, Some(_)) => return Err(both()),
        (true, None) => return Err("a pushover URL is pushover://USER_KEY@APP_TOKEN".into()),
    };
    Ok(Kind::Pushover {
        user: Secret::new(user),
        token,
    })
}

fn telegram(parts: Parts, token: Option<Secret>) -> Result<Kind, String> {
    let in_url = match (parts.user, parts.password) {
        (Some(bot), Some(key)) => Some(format!("{bot}:{key}")),
        (Some(bot), None) => Some(bot),
        (None, _) => None,
    };
    let token = match (in_url, token) {
        (Some(token), None) => Secret::new(token),
        (None, Some(token)) => token,
        (Some(_), Some(_)) => return Err(both()),
        (None, None) => return Err("a telegram URL is telegram://BOT_TOKEN@CHAT_ID".into()),
    };
    if parts.host.is_empty() {
        return Err("a telegram URL is telegram://BOT_TOKEN@CHAT_ID (the chat id is missing)".into());
    }
    Ok(Kind::Telegram {
        token,
        chat: parts.host,
    })
}

fn webhook(parts: Parts, token: Option<Secret>) -> Result<Kind, String> {
    let auth = match (parts.user.clone(), parts.password.clone(), token) {
        (Some(_), _, Some(_)) => return Err(both()),
        (Some(user), password, None) => Auth::Basic {
            user,
            password: Secret::new(password.unwrap_or_default()),
        },
        (None, _, Some(token)) => Auth::Bearer(token),
        (None, _, None) => Auth::None,
    };
    let base = Base::of(&parts, parts.scheme == "https", "")?;
    Ok(Kind::Webhook {
        base,
        path: parts.path_and_query(),
        auth,
    })
}

fn both() -> String {
    "the secret is both in the URL and in token/token_file/token_env; give it once".into()
}

impl Base {
    fn of(parts: &Parts, tls: bool, prefix: &str) -> Result<Base, String> {
        if parts.host.is_empty() {
            return Err("the URL has no host".into());
        }
        Ok(Base {
            tls,
            host: parts.host.clone(),
            port: parts.port.unwrap_or(if tls { 443 } else { 80 }),
            prefix: prefix.trim_end_matches('/').to_string(),
        })
    }

    fn https(host: &str) -> Base {
        Base {
            tls: true,
            host: host.into(),
            port: 443,
            prefix: String::new(),
        }
    }

    fn post(&self, path: &str, headers: Vec<(String, String)>, body: Bytes) -> Prepared {
        Prepared {
            method: "POST".into(),
            tls: self.tls,
            host: self.host.clone(),
            port: self.port,
            path: format!("{}{path}", self.prefix),
            headers,
            body,
        }
    }
}

impl Auth {
    fn add_to(&self, headers: &mut Vec<(String, String)>) {
        match self {
            Auth::None => {}
            Auth::Basic { user, password } => {
                let pair = format!("{user}:{}", password.expose());
                headers.push((
                    "Authorization".into(),
                    format!("Basic {}", base64(pair.as_bytes())),
                ));
            }
            Auth::Bearer(token) => {
                headers.push(("Authorization".into(), format!("Bearer {}", token.expose())))
            }
        }
    }

    fn secret(&self) -> Option<&str> {
        match self {
            Auth::None => None,
            Auth::Basic { password, .. } => Some(password.expose()),
            Auth::Bearer(token) => Some(token.expose()),
        }
    }
}

/// Index 0..=4 of a priority 1..=5 (checked when the rule asked).
fn priority_index(priority: u8) -> usize {
    usize::from(priority.clamp(1, 5) - 1)
}

fn json_headers(mut headers: Vec<(String, String)>) -> Vec<(String, String)> {
    headers.push(("Content-Type".into(), "application/json".into()));
    headers
}

fn json(value: &serde_json::Value) -> Bytes {
    Bytes::from(value.to_string())
}

/// Header values are ASCII; other text goes as RFC 2047 encoded words, which ntfy decodes.
fn header_text(text: &str) -> String {
    let one_line = text.replace(['\r', '\n'], " ");
    if one_line.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        one_line
    } else {
        format!("=?UTF-8?B?{}?=", base64(one_line.as_bytes()))
    }
}

/// Standard base64 with padding (Basic authentication, encoded words): too small a need for a crate.
pub(super) fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note() -> Notification {
        Notification {
            text: "Washing done".into(),
            title: Some("Laundry".into()),
            priority: Some(4),
            tags: vec!["basket".into()],
            click: None,
        }
    }

    fn header<'a>(request: &'a Prepared, name: &str) -> Option<&'a str> {
        request
            .headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn base64_matches_the_standard_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
    }

    #[test]
    fn ntfy_sends_text_with_headers_and_basic_auth() {
        let channel = Channel::parse("ntfys://alice:s3cret!@ntfy.example.com/house", None).unwrap();
        let request = channel.request(&note());
        assert!(request.tls);
        assert_eq!(
            (request.host.as_str(), request.port, request.path.as_str()),
            ("ntfy.example.com", 443, "/house")
        );
        assert_eq!(header(&request, "Title"), Some("Laundry"));
        assert_eq!(header(&request, "Priority"), Some("4"));
        assert_eq!(header(&request, "Tags"), Some("basket"));
        assert_eq!(
            header(&request, "Authorization"),
            Some(format!("Basic {}", base64(b"alice:s3cret!")).as_str())
        );
        assert_eq!(&request.body[..], b"Washing done");
        let shown = super::super::redact("bad password s3cret! here", &channel.secrets());
        assert_eq!(shown, "bad password *** here");
    }

    #[test]
    fn gotify_takes_its_token_from_the_url_or_apart() {
        let in_url = Channel::parse("gotify://10.0.0.2:8008/gotify/AbCdEf123", None).unwrap();
        let request = in_url.request(&note());
        assert!(!request.tls);
        assert_eq!(request.path, "/gotify/message");
        assert_eq!(header(&request, "X-Gotify-Key"), Some("AbCdEf123"));
        let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(body["priority"], 7);
        let apart = Channel::parse("gotifys://push.example", Some(Secret::new("T0ken".into()))).unwrap();
        let request = apart.request(&note());
        assert_eq!((request.path.as_str(), request.port), ("/message", 443));
        assert_eq!(header(&request, "X-Gotify-Key"), Some("T0ken"));
    }

    #[test]
    fn pushover_and_telegram_go_to_their_services() {
        let pushover = Channel::parse("pushover://uKey123@aToken456", None)
            .unwrap()
            .request(&note());
        assert_eq!(pushover.host, "api.pushover.net");
        let body: serde_json::Value = serde_json::from_slice(&pushover.body).unwrap();
        assert_eq!(
            (body["user"].as_str(), body["token"].as_str()),
            (Some("uKey123"), Some("aToken456"))
        );
        let telegram = Channel::parse("telegram://123456:ABC-def@-100200", None)
            .unwrap()
            .request(&note());
        assert_eq!(telegram.path, "/bot123456:ABC-def/sendMessage");
        let body: serde_json::Value = serde_json::from_slice(&telegram.body).unwrap();
        assert_eq!(body["chat_id"], "-100200");
        assert_eq!(body["text"], "Laundry\n\nWashing done");
    }

    #[test]
    fn a_webhook_gets_json_and_a_bearer_token() {
        let channel = Channel::parse(
            "https://hooks.example/notify?src=hw",
            Some(Secret::new("tok-42".into())),
        )
        .unwrap();
        let request = channel.request(&note());
        assert_eq!(request.path, "/notify?src=hw");
        assert_eq!(header(&request, "Authorization"), Some("Bearer tok-42"));
        let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"message": "Washing done", "title": "Laundry", "priority": 4, "tags": ["basket"]})
        );
    }

    #[test]
    fn channel_errors_never_quote_the_secret() {
        for url in [
            "ntfy://alice@host/",
            "gotify://host",
            "pushover://secretkey1",
            "telegram://host",
            "matrix://user:secretkey1@host",
            "ntfy://u:secretkey1@host:http/topic",
        ] {
            let error = Channel::parse(url, None).unwrap_err();
            assert!(!error.contains("secretkey1"), "{url}: {error}");
        }
    }

    #[test]
    fn a_non_ascii_title_is_an_encoded_word() {
        assert_eq!(
            header_text("Wäsche"),
            format!("=?UTF-8?B?{}?=", base64("Wäsche".as_bytes()))
        );
        assert_eq!(header_text("two\nlines"), "two lines");
    }
}
