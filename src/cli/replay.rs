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
use crate::rules::rule_files;
use crate::scheduler::when::format_local;
use crate::sim::{Options, RuleSource, Simulation};
use crate::store::HistoryReader;

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
    let since = super::time_arg("--since", args.since, &zone, now)?;
    let until = match args.until {
        Some(until) => super::time_arg("--until", until, &zone, now)?,
        None => now,
    };
    let files = chosen_rules(&config, args.rules)?;
    let db = super::history_path(args.db, Some(&config), args.config)?;
    let reading = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let reader = reading.block_on(HistoryReader::open(&db))?;
    let total = reading.block_on(reader.count_messages(since, until))?;

    let scratch = tempfile::tempdir().context("cannot make a scratch directory")?;
    let options = Options::of(&config, true);
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
    crate::sim::replay::replay(
        &mut sim,
        &reader,
        &reading,
        (since, until, until.min(now)),
        |outputs, message| -> anyhow::Result<()> {
            printer.print(outputs)?;
            if message {
                progress.inc(1);
            }
            Ok(())
        },
    )?;
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
                Format::Table | Format::Csv => {
                    writeln!(self.out, "{time}  {rule}  publish {topic} {payload:?}")?
                }
            }
        }
        Ok(())
    }
}
