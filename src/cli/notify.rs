//! `homewright notify [CHANNEL] TEXT`: sends a test notification through the configured channels,
//! straight away and once (not through the service's outbox), and prints each channel's outcome, so
//! an owner sees at once whether a URL or token is right.

use std::io::Write;
use std::process::ExitCode;

use crate::config::Config;
use crate::event::Notification;
use crate::outbound::client::Client;

/// Sends `text` to `channel`, or to every channel; exit 1 when any was not delivered.
pub fn notify(
    config: &Config,
    channel: Option<&str>,
    text: &str,
    out: &mut impl Write,
) -> anyhow::Result<ExitCode> {
    let channels = &config.outbound.channels;
    let names: Vec<&String> = match channel {
        Some(name) if channels.contains_key(name) => channels.keys().filter(|k| k.as_str() == name).collect(),
        Some(name) => anyhow::bail!(
            "there is no channel `{name}` in notify: of {} (configured: {})",
            config.source.display(),
            listed(channels.keys())
        ),
        None if channels.is_empty() => anyhow::bail!(
            "no channel in notify: of {}; add one, e.g. `phone: ntfys://ntfy.sh/YOUR-TOPIC`",
            config.source.display()
        ),
        None => channels.keys().collect(),
    };
    let note = Notification {
        text: text.to_string(),
        title: Some("homewright".into()),
        priority: None,
        tags: Vec::new(),
        click: None,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let client = Client::default();
    let mut all_sent = true;
    for name in names {
        let Some(channel) = channels.get(name) else {
            continue;
        };
        let request = channel.request(&note);
        let secrets = channel.secrets();
        let result = runtime.block_on(client.send(&request, config.outbound.timeout));
        let line = match result {
            Ok(answer) if answer.status < 400 => format!("{name}: sent (HTTP {})", answer.status),
            Ok(answer) => {
                all_sent = false;
                let first = crate::outbound::redact(&answer.first_line, &secrets);
                format!("{name}: refused (HTTP {}): {first}", answer.status)
            }
            Err(e) => {
                all_sent = false;
                format!(
                    "{name}: not delivered: {}",
                    crate::outbound::redact(&e.to_string(), &secrets)
                )
            }
        };
        writeln!(out, "{line}")?;
    }
    Ok(if all_sent {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn listed<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let names: Vec<&str> = names.map(String::as_str).collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}
