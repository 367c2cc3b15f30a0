//! `homewright replay`: the stored messages of a period, in arrival order, through the rules on virtual
//! time (timers fire at their virtual times), performing nothing: it prints what the rules would have
//! published, when and by which rule. "What would my new rule have done last week?" With
//! `--db postgres://... --site NAME`, the messages come from that site's replicated history.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::format::Format;
use crate::config::{self, Config};
use crate::event::{Action, Output, now_millis};
use crate::rules::rule_files;
use crate::scheduler::Zone;
use crate::scheduler::when::format_local;
use crate::sim::replay::Source;
use crate::sim::{Options, RuleSource, Simulation};
use crate::store::HistoryReader;
use crate::store::postgres::read::PgSiteReader;

/// What to replay.
pub struct Replay<'a> {
    pub config: &'a Path,
    pub db: Option<&'a Path>,
    pub site: Option<&'a str>,
    pub since: &'a str,
    pub until: Option<&'a str>,
    pub format: Format,
    pub rules: &'a [String],
}

pub fn replay(args: Replay<'_>, out: &mut impl Write) -> anyhow::Result<ExitCode> {
    let config = config::load(args.config)?;
    super::local_time_follows(&config.location.timezone);
    let zone = config.location.timezone.clone();
    let now = now_millis();
    let since = super::time_arg("--since", args.since, &zone, now)?;
    let until = match args.until {
        Some(until) => super::time_arg("--until", until, &zone, now)?,
        None => now,
    };
    anyhow::ensure!(
        since < until,
        "--since {} is not before --until {}: nothing to replay",
        format_local(since, &zone),
        format_local(until, &zone)
    );
    let files = chosen_rules(&config, args.rules)?;
    let reading = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let source = match super::postgres_db(args.db, args.site)? {
        Some(url) => Source::Postgres(reading.block_on(PgSiteReader::open(url, args.site))?),
        None => {
            let db = super::history_path(args.db, Some(&config), args.config)?;
            Source::Local(reading.block_on(HistoryReader::open(&db))?)
        }
    };
    let total = reading.block_on(source.count_messages(since, until))?;

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
    let mut log_progress = ProgressLog::new(total as u64, &progress);
    let mut printer = Printer {
        out,
        format: args.format,
        zone: zone.clone(),
        actions: 0,
    };
    printer.header()?;
    crate::sim::replay::replay(
        &mut sim,
        &source,
        &reading,
        (since, until, until.min(now)),
        |outputs, message| -> anyhow::Result<()> {
            printer.print(outputs)?;
            if let Some(at) = message {
                progress.inc(1);
                log_progress.tick(at, &zone);
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

/// Where stderr is no terminal (a log file, the journal, a pipe), the bar is hidden: a line every few
/// seconds says how far a long replay has come instead.
struct ProgressLog {
    every: Option<Duration>,
    next: Instant,
    done: u64,
    total: u64,
}

impl ProgressLog {
    const EVERY: Duration = Duration::from_secs(5);

    fn new(total: u64, bar: &ProgressBar) -> Self {
        ProgressLog {
            every: bar.is_hidden().then_some(Self::EVERY),
            next: Instant::now() + Self::EVERY,
            done: 0,
            total,
        }
    }

    /// One message replayed, stored at `at`.
    fn tick(&mut self, at: i64, zone: &Zone) {
        self.done += 1;
        let Some(every) = self.every else { return };
        if Instant::now() < self.next {
            return;
        }
        self.next = Instant::now() + every;
        eprintln!(
            "replayed {}/{} messages ({}%), up to {}",
            self.done,
            self.total,
            self.done * 100 / self.total.max(1),
            format_local(at, zone)
        );
    }
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
    zone: Zone,
    actions: usize,
}

impl<W: Write> Printer<'_, W> {
    fn header(&mut self) -> std::io::Result<()> {
        if self.format == Format::Csv {
            writeln!(self.out, "time,rule,kind,target,value,cause")?;
        }
        Ok(())
    }

    fn print(&mut self, outputs: Vec<Output>) -> std::io::Result<()> {
        for output in outputs {
            let Output::Action { rule, ts, action } = output else {
                continue;
            };
            let (kind, topic, payload, qos, retain, cause) = match action {
                Action::Publish {
                    topic,
                    payload,
                    qos,
                    retain,
                } => ("publish", topic, payload, qos, retain, "rule"),
                // Switches at start only restate what is there; a replay shows what rules changed.
                Action::Relay { cause: "start", .. } => continue,
                Action::Relay { name, on, cause } => (
                    "relay",
                    name,
                    Bytes::from(if on { "ON" } else { "OFF" }),
                    1,
                    true,
                    cause,
                ),
                // Shown, never sent.
                Action::Notify { channel, note } => {
                    ("notify", channel, Bytes::from(note.text), 0, false, "rule")
                }
                Action::Http(call) => ("http", call.target(), call.body, 0, false, "rule"),
            };
            self.actions += 1;
            let payload = String::from_utf8_lossy(&payload);
            let time = format_local(ts, &self.zone);
            match self.format {
                Format::Json => {
                    let line = serde_json::json!({
                        "time": time, "ts": ts, "rule": &*rule, "kind": kind,
                        "target": topic, "value": payload, "qos": qos, "retain": retain,
                        "cause": cause,
                    });
                    writeln!(self.out, "{line}")?;
                }
                Format::Table if kind == "notify" || kind == "http" => {
                    writeln!(self.out, "{time}  {rule}  {kind} {topic} {payload:?} (not sent)")?
                }
                Format::Csv => {
                    let cells = [time.as_str(), &*rule, kind, topic.as_str(), &*payload, cause]
                        .map(super::format::csv_field);
                    writeln!(self.out, "{}", cells.join(","))?;
                }
                // A switch no rule asked for (its set topic, the CLI, on_for, max_on) shows its cause
                // where the rule's name would be.
                Format::Table if rule.is_empty() => {
                    writeln!(self.out, "{time}  ({cause})  {kind} {topic} {payload:?}")?
                }
                Format::Table => writeln!(self.out, "{time}  {rule}  {kind} {topic} {payload:?}")?,
            }
        }
        Ok(())
    }
}
