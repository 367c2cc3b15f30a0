//! `homewright plot TOPIC[:$.field] [--since 24h] [--until TIME] [--out FILE.svg|.png]`: a topic's
//! history as a chart file, or as text in the terminal. `--db postgres://... --site NAME` charts a
//! site's replicated history instead of the local file.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

use crate::config;
use crate::event::now_millis;
use crate::plot::{self, Series, Spec, chart, terminal};
use crate::scheduler::Zone;
use crate::scheduler::when::format_local;
use crate::store::postgres::read::PgSiteReader;
use crate::store::{HistoryReader, SqlValue};

/// What `plot` was asked for.
pub struct PlotArgs<'a> {
    pub config: &'a Path,
    pub db: Option<&'a Path>,
    pub site: Option<&'a str>,
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
    let (series, known, source) = match super::postgres_db(args.db, args.site)? {
        Some(url) => load_postgres(url, args.site, &spec, from, to)?,
        None => {
            let db = super::history_path(args.db, config.as_ref().ok(), args.config)?;
            let (series, known) = load(&db, &spec, from, to)?;
            (series, known, db.display().to_string())
        }
    };
    if !known {
        anyhow::bail!(
            "no such topic: {} has no message in {source} (list the topics with: homewright query \"SELECT topic FROM latest ORDER BY topic\")",
            spec.topic,
        );
    }
    if series.points.is_empty() {
        let since = format_local(from, &zone);
        if series.skipped == 0 {
            anyhow::bail!(
                "no messages on {} since {since} (try a longer --since)",
                spec.topic
            );
        }
        let hint = if spec.path.is_empty() {
            format!("for JSON payloads name a field: {}:$.temperature", spec.topic)
        } else {
            "none has a number or on/off at that JSON path".to_string()
        };
        anyhow::bail!(
            "no values for {} since {since} ({} messages without a value; {hint})",
            spec.text,
            series.skipped,
        );
    }
    match args.out {
        Some(path) => {
            chart::write(path, &spec.text, &series, from, to, &zone).map_err(anyhow::Error::msg)?;
            writeln!(out, "wrote {} ({} values)", path.display(), series.points.len())?;
        }
        None => write!(out, "{}", terminal::render(&spec.text, &series, from, to, &zone))?,
    }
    Ok(ExitCode::SUCCESS)
}

/// The series from a site's replicated history, whether the topic is known there, and the site's name.
fn load_postgres(
    url: &str,
    site: Option<&str>,
    spec: &Spec,
    from: i64,
    to: i64,
) -> anyhow::Result<(Series, bool, String)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let reader = PgSiteReader::open(url, site).await?;
        let rows = reader.payloads(&spec.topic, from, to).await?;
        let series = Series::from_payloads(rows.iter().map(|(ts, p)| (*ts, p.as_slice())), spec);
        let known = !rows.is_empty() || reader.knows_topic(&spec.topic).await?;
        let source = format!("site {} of {}", reader.site, reader.target);
        reader.close().await;
        anyhow::Ok((series, known, source))
    })
}

/// The series, and whether the topic has any message at all in the history.
fn load(db: &Path, spec: &Spec, from: i64, to: i64) -> anyhow::Result<(Series, bool)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let reader = HistoryReader::open(db).await?;
        let series = plot::load(&reader, spec, from, to).await?;
        let known = !series.points.is_empty()
            || series.skipped > 0
            || !reader
                .query(
                    "SELECT 1 FROM latest WHERE topic = ?",
                    &[SqlValue::Text(spec.topic.clone())],
                    None,
                )
                .await?
                .rows
                .is_empty();
        anyhow::Ok((series, known))
    })
}
