//! What rules ask to have sent beyond MQTT: `notify(text)`, `notify(channel, text[, #{ title, priority,
//! tags, click }])` and `http(method, url, body[, #{ headers }])`. Like `publish`, each only queues an
//! action: the outbound stage delivers it, so a rule never waits on the network. Everything that can
//! be checked here is (the channel exists, the host is in `http.allow`, the options make sense), so a
//! mistake is an error at the call's position rather than a failed delivery later.

use std::sync::Arc;

use rhai::{Dynamic, Engine, EvalAltResult, Map, NativeCallContext};

use super::actions::encode_payload;
use super::error_at;
use crate::event::{Action, HttpCall, Notification};
use crate::outbound::url::Parts;
use crate::rules::host::Host;

/// The methods `http()` accepts.
const METHODS: [&str; 6] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"];

pub(super) fn register(engine: &mut Engine, host: &Arc<Host>) {
    let everywhere = Arc::clone(host);
    engine.register_fn(
        "notify",
        move |ctx: NativeCallContext, text: Dynamic| -> Result<(), Box<EvalAltResult>> {
            notify(&everywhere, &ctx, None, text, &Map::new())
        },
    );
    let one = Arc::clone(host);
    engine.register_fn(
        "notify",
        move |ctx: NativeCallContext, channel: &str, text: Dynamic| -> Result<(), Box<EvalAltResult>> {
            notify(&one, &ctx, Some(channel), text, &Map::new())
        },
    );
    let with_options = Arc::clone(host);
    engine.register_fn(
        "notify",
        move |ctx: NativeCallContext,
              channel: &str,
              text: Dynamic,
              options: Map|
              -> Result<(), Box<EvalAltResult>> {
            notify(&with_options, &ctx, Some(channel), text, &options)
        },
    );
    let plain = Arc::clone(host);
    engine.register_fn(
        "http",
        move |ctx: NativeCallContext,
              method: &str,
              url: &str,
              body: Dynamic|
              -> Result<(), Box<EvalAltResult>> {
            http(&plain, &ctx, method, url, body, &Map::new())
        },
    );
    let with_headers = Arc::clone(host);
    engine.register_fn(
        "http",
        move |ctx: NativeCallContext,
              method: &str,
              url: &str,
              body: Dynamic,
              options: Map|
              -> Result<(), Box<EvalAltResult>> {
            http(&with_headers, &ctx, method, url, body, &options)
        },
    );
}

/// Queues one notification per channel: the one named, or every configured channel.
fn notify(
    host: &Host,
    ctx: &NativeCallContext,
    channel: Option<&str>,
    text: Dynamic,
    options: &Map,
) -> Result<(), Box<EvalAltResult>> {
    let outbound = host.outbound();
    let names: Vec<String> = outbound.channels.keys().cloned().collect();
    let targets = match channel {
        Some(name) if outbound.channels.contains_key(name) => vec![name.to_string()],
        Some(name) => {
            let known = if names.is_empty() {
                "none is configured".to_string()
            } else {
                format!("configured: {}", names.join(", "))
            };
            return Err(error_at(
                ctx,
                format!("notify: there is no channel `{name}` in notify: of the config ({known})"),
            ));
        }
        None if names.is_empty() => {
            return Err(error_at(
                ctx,
                "notify: no channel is configured; add one under notify: in the config, e.g. `phone: ntfys://ntfy.sh/TOPIC`",
            ));
        }
        None => names,
    };
    let most = host.limits().max_string_size;
    let text = if text.is_string() {
        text.into_string().unwrap_or_default()
    } else if crate::rules::size::held_bytes(&text, most) > most {
        // Its text would count every map key, which Rhai's string limit does not.
        return Err(error_at(
            ctx,
            format!(
                "notify: the value is larger than {}, the longest text a rule may build",
                crate::rules::size::human(most)
            ),
        ));
    } else {
        text.to_string()
    };
    let note = notification(text, options).map_err(|e| error_at(ctx, format!("notify: {e}")))?;
    for channel in targets {
        host.act(Action::Notify {
            channel,
            note: note.clone(),
        })
        .map_err(|e| error_at(ctx, e))?;
    }
    Ok(())
}

fn notification(text: String, options: &Map) -> Result<Notification, String> {
    let mut note = Notification {
        text,
        title: None,
        priority: None,
        tags: Vec::new(),
        click: None,
    };
    let text_of = |key: &str, value: &Dynamic| -> Result<String, String> {
        value
            .clone()
            .into_string()
            .map_err(|_| format!("{key} must be text, not {value}"))
    };
    for (key, value) in options {
        match key.as_str() {
            "title" => note.title = Some(text_of("title", value)?),
            "click" => note.click = Some(text_of("click", value)?),
            "priority" => note.priority = Some(priority(value)?),
            "tags" => note.tags = tags(value)?,
            other => {
                return Err(format!(
                    "unknown option `{other}` (use title, priority, tags and click)"
                ));
            }
        }
    }
    Ok(note)
}

/// 1 (min) to 5 (max), as ntfy counts; names as ntfy writes them.
fn priority(value: &Dynamic) -> Result<u8, String> {
    let wrong = || format!("priority must be 1 to 5 or min, low, default, high, max, urgent; not {value}");
    if let Ok(number) = value.as_int() {
        return u8::try_from(number)
            .ok()
            .filter(|p| (1..=5).contains(p))
            .ok_or_else(wrong);
    }
    match value
        .clone()
        .into_string()
        .map_err(|_| wrong())?
        .to_ascii_lowercase()
        .as_str()
    {
        "min" => Ok(1),
        "low" => Ok(2),
        "default" => Ok(3),
        "high" => Ok(4),
        "max" | "urgent" => Ok(5),
        _ => Err(wrong()),
    }
}

/// An array of texts, or one text with commas.
fn tags(value: &Dynamic) -> Result<Vec<String>, String> {
    if let Some(array) = value.read_lock::<rhai::Array>() {
        return array
            .iter()
            .map(|tag| {
                tag.clone()
                    .into_string()
                    .map_err(|_| format!("tags must be texts, not {tag}"))
            })
            .collect();
    }
    let text = value
        .clone()
        .into_string()
        .map_err(|_| format!("tags must be a list of texts or one text, not {value}"))?;
    Ok(text
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect())
}

fn http(
    host: &Host,
    ctx: &NativeCallContext,
    method: &str,
    url: &str,
    body: Dynamic,
    options: &Map,
) -> Result<(), Box<EvalAltResult>> {
    let method = method.to_ascii_uppercase();
    if !METHODS.contains(&method.as_str()) {
        return Err(error_at(
            ctx,
            format!("http: `{method}` is not a method (use {})", METHODS.join(", ")),
        ));
    }
    let parts = Parts::split(url).map_err(|e| error_at(ctx, format!("http: {e}")))?;
    if parts.scheme != "http" && parts.scheme != "https" {
        return Err(error_at(ctx, "http: the URL must start with http:// or https://"));
    }
    if parts.host.is_empty() {
        return Err(error_at(ctx, "http: the URL has no host"));
    }
    if !host.outbound().allows(&parts) {
        return Err(error_at(
            ctx,
            format!(
                "http: {} is not in http.allow; add `{}` to http.allow in the config to let rules call it",
                parts.authority(),
                parts.authority()
            ),
        ));
    }
    let json = body.is_map() || body.is_array();
    let body = encode_payload(body, host.limits().max_string_size)
        .map_err(|e| error_at(ctx, format!("http: {e}")))?;
    let mut headers = headers(options).map_err(|e| error_at(ctx, format!("http: {e}")))?;
    if !body.is_empty()
        && !headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("content-type"))
    {
        let content_type = if json {
            "application/json"
        } else {
            "text/plain; charset=utf-8"
        };
        headers.push(("Content-Type".into(), content_type.into()));
    }
    let call = HttpCall {
        method,
        url: url.trim().to_string(),
        headers,
        body,
    };
    host.act(Action::Http(call)).map_err(|e| error_at(ctx, e))
}

fn headers(options: &Map) -> Result<Vec<(String, String)>, String> {
    let mut headers = Vec::new();
    for (key, value) in options {
        if key.as_str() != "headers" {
            return Err(format!("unknown option `{key}` (use headers)"));
        }
        let map = value
            .read_lock::<Map>()
            .ok_or_else(|| "headers must be a map, e.g. #{ \"X-Key\": \"...\" }".to_string())?;
        for (name, value) in map.iter() {
            let valid_name = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if !valid_name {
                return Err(format!("`{name}` is not a header name"));
            }
            let value = if value.is_string() {
                value.clone().into_string().unwrap_or_default()
            } else {
                value.to_string()
            };
            // The value is not quoted: it may be a token.
            if value.bytes().any(|b| b < 0x20 && b != b'\t' || b == 0x7f) {
                return Err(format!(
                    "the value of header {name} has a line break or control character"
                ));
            }
            headers.push((name.to_string(), value));
        }
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_take_numbers_and_ntfy_names() {
        assert_eq!(priority(&Dynamic::from(4_i64)), Ok(4));
        assert_eq!(priority(&Dynamic::from("urgent")), Ok(5));
        assert!(priority(&Dynamic::from(9_i64)).is_err());
        assert!(priority(&Dynamic::from("loud")).is_err());
    }

    #[test]
    fn tags_take_a_list_or_commas() {
        let list: rhai::Array = vec!["a".into(), "b".into()];
        assert_eq!(tags(&Dynamic::from(list)).unwrap(), ["a", "b"]);
        assert_eq!(tags(&Dynamic::from("x, y")).unwrap(), ["x", "y"]);
    }
}
