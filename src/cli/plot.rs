//! `homewright plot TOPIC[:$.field] [--since 24h] [--until TIME] [--out FILE.svg|.png]`: a topic's
//! history as a chart file, or as text in the terminal.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

use crate::config;
use crate::event::now_millis;
use crate::plot::{self, Series, Spec, chart, terminal};
use crate::scheduler::Zone;
use crate::store::HistoryReader;

/// What `plot` was asked for.
pub struct PlotArgs<'a> {
    pub config: &'a Path,
    pub db: Option<&'a Path>,
    pub spec: &'a str,
    pub since: &'a str,
    pub until: Option<&'a str>,
    pub out: Option<&'a Path>,
}

pub fn plot(args: PlotArgs<'_>, out: &mut impl Write) -> anyhow::Result<ExitCode> {
    let spec = Spec::parse(args.spec).map_err(anyhow::Error::msg)?;
    // The config gives the database and the time zone; with --db and no usable config, the system's zone.
    let config = config::load(args.config);
    let zone = config
        .as_ref()
        .map_or_else(|_| Zone::system(), |c| c.location.timezone.clone());
    let now = now_millis();
    let from = super::time_arg("--since", args.since, &zone, now)?;
    let to = match args.until {
        Some(until) => super::time_arg("--until", until, &zone, now)?,
        None => now,
    };
    anyhow::ensure!(from < to, "--since must be before --until (or before now)");
    if let Some(path) = args.out {
        chart::Format::for_path(path).map_err(anyhow::Error::msg)?;
    }
    let db = super::history_path(args.db, config.as_ref().ok(), args.config)?;
    let series = load(&db, &spec, from, to)?;
    if series.points.is_empty() {
        anyhow::bail!(
            "no values for {} since {} ({} messages without a value; for JSON payloads name a field: {}:$.temperature)",
            spec.text,
            chart::time_label(from, i64::MAX),
            series.skipped,
            spec.topic
        );
    }
    match args.out {
        Some(path) => {
            chart::write(path, &spec.text, &series, from, to).map_err(anyhow::Error::msg)?;
            writeln!(out, "wrote {} ({} values)", path.display(), series.points.len())?;
        }
        None => write!(out, "{}", terminal::render(&spec.text, &series, from, to))?,
    }
    Ok(ExitCode::SUCCESS)
}

fn load(db: &Path, spec: &Spec, from: i64, to: i64) -> anyhow::Result<Series> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let reader = HistoryReader::open(db).await?;
        anyhow::Ok(plot::load(&reader, spec, from, to).await?)
    })
}
