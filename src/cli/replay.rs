//! `homewright replay`: the stored messages of a period, in arrival order, through the rules on virtual
//! time (timers fire at their virtual times), performing nothing: it prints what the rules would have
//! published, when and by which rule. "What would my new rule have done last week?"

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use bytes::Bytes;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::format::Format;
use crate::config::{self, Config};
use crate::event::{Action, Output, now_millis};
use crate::rules::{Limits, rule_files};
use crate::scheduler::when::{format_local, parse_since};
use crate::sim::{Options, RuleSource, Simulation};
use crate::store::HistoryReader;

/// Messages read from the history at a time: bounded memory on any history size.
const PAGE: i64 = 5_000;

/// What to replay.
pub struct Replay<'a> {
    pub config: &'a Path,
    pub db: Option<&'a Path>,
    pub since: &'a str,
    pub until: Option<&'a str>,
    pub format: Format,
    pub rules: &'a [String],
}

pub fn replay(args: Replay<'_>, out: &mut impl Write) -> anyhow::Result<ExitCode> {
    let config = config::load(args.config)?;
    let zone = config.location.timezone.clone();
    let now = now_millis();
    let since = parse_since(args.since, &zone, now)
        .map_err(anyhow::Error::msg)
        .context("--since")?;
    let until = match args.until {
        Some(until) => parse_since(until, &zone, now)
            .map_err(anyhow::Error::msg)
            .context("--until")?,
        None => now,
    };
    let files = chosen_rules(&config, args.rules)?;
    let db = args
        .db
        .map(Path::to_path_buf)
        .unwrap_or_else(|| config.database.path.clone());
    let reading = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let reader = reading.block_on(HistoryReader::open(&db))?;
    let total = reading.block_on(reader.count_messages(since, until))?;

    let scratch = tempfile::tempdir().context("cannot make a scratch directory")?;
    let limits = Limits {
        max_operations: config.rules.max_operations,
        timeout: config.rules.timeout,
        max_string_size: 4 * config.mqtt.max_packet_size,
    };
    let options = Options {
        location: config.location,
        limits,
        gpio: config.gpio.clone(),
        base_topic: config.mqtt.base_topic.clone(),
        scratch: true,
        outbound: std::sync::Arc::new(config.outbound.clone()),
    };
    let mut sim = Simulation::start_with(
        &scratch.path().join("replay.db"),
        RuleSource::Files(&files),
        options,
        since,
    )?;
    if !sim.problems.is_empty() {
        let problems: Vec<String> = sim.problems.iter().map(|p| p.render()).collect();
        anyhow::bail!("rules do not load:\n{}", problems.join("\n"));
    }
    sim.stop_recording();
    let progress = progress_bar(total as u64);
    let mut printer = Printer {
        out,
        format: args.format,
        zone: zone.clone(),
        actions: 0,
    };
    printer.print(sim.take_outputs())?;
    let mut after_id = reading.block_on(reader.id_before(since))?;
    loop {
        let page = reading.block_on(reader.messages_page(since, until, after_id, PAGE))?;
        let Some((last_id, _)) = page.last() else { break };
        after_id = *last_id;
        for (_, message) in page {
            sim.deliver(message)?;
            printer.print(sim.take_outputs())?;
            progress.inc(1);
        }
    }
    sim.advance_to(until.min(now))?;
    printer.print(sim.take_outputs())?;
    progress.finish_and_clear();
    eprintln!(
        "replayed {total} messages from {} to {}: {} actions (nothing was performed)",
        format_local(since, &zone),
        format_local(until, &zone),
        printer.actions
    );
    sim.stop();
    Ok(ExitCode::SUCCESS)
}

/// The named rules' files, or every rule file.
fn chosen_rules(config: &Config, names: &[String]) -> anyhow::Result<Vec<PathBuf>> {
    if names.is_empty() {
        return rule_files(&config.rules.dir)
            .with_context(|| format!("cannot read the rules directory {}", config.rules.dir.display()));
    }
    names
        .iter()
        .map(|name| {
            let file = config.rules.dir.join(format!("{name}.rhai"));
            if file.is_file() {
                Ok(file)
            } else {
                anyhow::bail!("rule `{name}` not found: there is no {}", file.display())
            }
        })
        .collect()
}

fn progress_bar(total: u64) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if !std::io::stderr().is_terminal() || total < 10_000 {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    if let Ok(style) = ProgressStyle::with_template("{bar:40} {pos}/{len} messages, {eta} left") {
        bar.set_style(style);
    }
    bar
}

struct Printer<'a, W: Write> {
    out: &'a mut W,
    format: Format,
    zone: crate::scheduler::Zone,
    actions: usize,
}

impl<W: Write> Printer<'_, W> {
    fn print(&mut self, outputs: Vec<Output>) -> std::io::Result<()> {
        for output in outputs {
            let Output::Action { rule, ts, action } = output else {
                continue;
            };
            let (kind, topic, payload, qos, retain) = match action {
                Action::Publish {
                    topic,
                    payload,
                    qos,
                    retain,
                } => ("publish", topic, payload, qos, retain),
                // Switches at start only restate what is there; a replay shows what rules changed.
                Action::Relay { cause: "start", .. } => continue,
                Action::Relay { name, on, .. } => {
                    ("relay", name, Bytes::from(if on { "ON" } else { "OFF" }), 1, true)
                }
                // Shown, never sent.
                Action::Notify { channel, note } => ("notify", channel, Bytes::from(note.text), 0, false),
                Action::Http(call) => ("http", call.target(), call.body, 0, false),
            };
            self.actions += 1;
            let payload = String::from_utf8_lossy(&payload);
            let time = format_local(ts, &self.zone);
            match self.format {
                Format::Json => {
                    let line = serde_json::json!({
                        "time": time, "ts": ts, "rule": &*rule, "kind": kind,
                        "target": topic, "value": payload, "qos": qos, "retain": retain,
                    });
                    writeln!(self.out, "{line}")?;
                }
                Format::Table | Format::Csv if kind == "notify" || kind == "http" => {
                    writeln!(self.out, "{time}  {rule}  {kind} {topic} {payload:?} (not sent)")?
                }
                Format::Table | Format::Csv => {
                    writeln!(self.out, "{time}  {rule}  publish {topic} {payload:?}")?
                }
            }
        }
        Ok(())
    }
}
