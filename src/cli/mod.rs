//! The command line: parsing (clap), logging setup, and one file per subcommand. Errors are turned into
//! messages and exit codes here and nowhere deeper.

mod check;
mod format;
mod init;
mod notify;
mod plot;
mod query;
mod relay;
mod replay;
mod run;
mod test;
mod why;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use format::Format;

/// homewright: a rule-based home automation engine. MQTT in, SQLite history, Rhai rules, MQTT out.
#[derive(Debug, Parser)]
#[command(name = "homewright", version, about, long_about = None)]
pub struct Cli {
    /// Log level (error, warn, info, debug, trace) or a tracing filter; default: RUST_LOG, else info.
    #[arg(long, global = true, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Log format: auto (journald under systemd, else text), text, journald or json.
    #[arg(long, global = true, value_enum, value_name = "FORMAT", default_value_t = crate::logging::LogFormat::Auto)]
    pub log_format: crate::logging::LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service: connect (or start the embedded broker), store every message, run the rules.
    Run {
        /// Config file.
        #[arg(short, long, value_name = "FILE", default_value = crate::config::DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Validate the config and compile every rule; print each problem as PATH:LINE:COL: message.
    Check {
        /// Config file.
        #[arg(short, long, value_name = "FILE", default_value = crate::config::DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Run SQL against the history, read-only (works while `run` is running).
    Query {
        /// Config file (for database.path).
        #[arg(short, long, value_name = "FILE", default_value = crate::config::DEFAULT_PATH)]
        config: PathBuf,
        /// Database file (overrides the config's database.path), or a postgres:// URL of a
        /// replicated history, queried in a read-only transaction.
        #[arg(long, value_name = "PATH|URL")]
        db: Option<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// Stop the query when it runs longer than this (e.g. 500ms, 30s, 5m).
        #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = crate::config::units::parse_duration)]
        timeout: std::time::Duration,
        /// The SQL to run, e.g. "SELECT * FROM latest".
        sql: String,
    },
    /// Replay stored messages through the rules on virtual time and print what they would have done.
    Replay {
        /// Config file (rules, location, database).
        #[arg(short, long, value_name = "FILE", default_value = crate::config::DEFAULT_PATH)]
        config: PathBuf,
        /// Database file (overrides the config's database.path), or a postgres:// URL of a
        /// replicated history, read on a read-only session.
        #[arg(long, value_name = "PATH|URL")]
        db: Option<PathBuf>,
        /// With a postgres:// --db: the site (history.replicate.site) whose messages to replay;
        /// needed when the database holds several.
        #[arg(long, value_name = "NAME")]
        site: Option<String>,
        /// Start: 2026-11-24, 2026-11-24T18:00, RFC 3339, or a duration ago such as 7d.
        #[arg(long, value_name = "TIME")]
        since: String,
        /// End (default: now).
        #[arg(long, value_name = "TIME")]
        until: Option<String>,
        /// Output format: table (a line per action), csv (with a header) or json (an object per line).
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// Only these rules (file names without .rhai); default: all.
        rules: Vec<String>,
    },
    /// Show a rule's recent runs and the messages that matched it but made it do nothing.
    Why {
        /// The rule (file name without .rhai).
        rule: String,
        /// Config file.
        #[arg(short, long, value_name = "FILE", default_value = crate::config::DEFAULT_PATH)]
        config: PathBuf,
        /// Database file; overrides the config's database.path.
        #[arg(long, value_name = "PATH")]
        db: Option<PathBuf>,
        /// How far back: a duration ago (24h, 7d) or a time.
        #[arg(long, value_name = "TIME", default_value = "24h")]
        since: String,
        /// Rows per section.
        #[arg(long, default_value_t = 20)]
        limit: i64,
    },
    /// Switch a relay through the running service (via its MQTT command topic).
    Relay {
        /// The relay's name in gpio.relays.
        name: String,
        /// on, off or toggle (any case: ON and On too).
        #[arg(value_enum, ignore_case = true)]
        command: relay::Command,
        /// Config file.
        #[arg(short, long, value_name = "FILE", default_value = crate::config::DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Run rule scenarios on virtual time (default: rules/tests/*.yaml); exit 1 on any failure.
    Test {
        /// Config file (for rules.dir and location).
        #[arg(short, long, value_name = "FILE", default_value = crate::config::DEFAULT_PATH)]
        config: PathBuf,
        /// Scenario files or directories.
        paths: Vec<PathBuf>,
    },
    /// Chart a topic's values over time: a file with --out, else text for the terminal.
    Plot {
        /// Config file (for database.path).
        #[arg(short, long, value_name = "FILE", default_value = crate::config::DEFAULT_PATH)]
        config: PathBuf,
        /// Database file (overrides the config's database.path), or a postgres:// URL of a
        /// replicated history, read on a read-only session.
        #[arg(long, value_name = "PATH|URL")]
        db: Option<PathBuf>,
        /// With a postgres:// --db: the site (history.replicate.site) whose topic to chart; needed
        /// when the database holds several.
        #[arg(long, value_name = "NAME")]
        site: Option<String>,
        /// The topic, e.g. greenhouse/temperature, or a field of its JSON: TOPIC:$.temperature.
        topic: String,
        /// Start: a duration ago (24h, 7d), a date (2026-11-24), a local time (2026-11-24T18:00).
        #[arg(long, default_value = "24h", value_name = "TIME")]
        since: String,
        /// End, written like --since; default: now.
        #[arg(long, value_name = "TIME")]
        until: Option<String>,
        /// Write an .svg or .png file instead of printing a chart.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Send a test notification through the configured channels (all, or CHANNEL) and print the outcome.
    Notify {
        /// Config file (for notify: and http.timeout).
        #[arg(short, long, value_name = "FILE", default_value = crate::config::DEFAULT_PATH)]
        config: PathBuf,
        /// A channel's name in notify: (default: every channel), then the text; or only the text.
        #[arg(required = true, num_args = 1..=2, value_name = "[CHANNEL] TEXT")]
        words: Vec<String>,
    },
    /// Start a new setup: a commented config (location commented out), an example rule and its scenario test.
    Init {
        /// Where to write them (created if missing); existing files are never overwritten.
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
}

/// The history file a command reads: `--db` when given, else `database.path` of `config` (or, when the
/// command has not loaded it, of the config file at `config_path`). Commands that read the history give
/// `--db` the same meaning everywhere.
pub(crate) fn history_path(
    db: Option<&std::path::Path>,
    config: Option<&crate::config::Config>,
    config_path: &std::path::Path,
) -> anyhow::Result<PathBuf> {
    use anyhow::Context;

    if let Some(db) = db {
        return Ok(db.to_path_buf());
    }
    if let Some(config) = config {
        return Ok(config.database.path.clone());
    }
    Ok(crate::config::load(config_path)
        .context("cannot find the database (pass --db PATH, or -c FILE for its config)")?
        .database
        .path)
}

/// The PostgreSQL URL `--db` holds, if it holds one; `--site` only goes with one.
pub(crate) fn postgres_db<'a>(
    db: Option<&'a std::path::Path>,
    site: Option<&str>,
) -> anyhow::Result<Option<&'a str>> {
    let url = db
        .and_then(std::path::Path::to_str)
        .filter(|d| crate::store::postgres::read::is_url(d));
    if url.is_none() && site.is_some() {
        anyhow::bail!("--site reads a replicated history: give it with --db postgres://USER@HOST/DATABASE");
    }
    Ok(url)
}

/// A time argument (`--since`, `--until`): a date, a date and time, RFC 3339, or a duration meaning
/// that long before `now`, local to `zone`; an error names the flag.
pub(crate) fn time_arg(
    flag: &str,
    text: &str,
    zone: &crate::scheduler::Zone,
    now: i64,
) -> anyhow::Result<i64> {
    crate::scheduler::when::parse_since(text, zone, now).map_err(|e| anyhow::anyhow!("{flag}: {e}"))
}

/// Runs the parsed command line and returns the process's exit code.
pub fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Run { config } => run::run(&config),
        Command::Check { config } => check::check(&config, &mut std::io::stdout()),
        Command::Test { config, paths } => test::test(&config, &paths, &mut std::io::stdout()),
        Command::Relay {
            name,
            command,
            config,
        } => crate::config::load(&config)
            .map_err(anyhow::Error::from)
            .and_then(|c| relay::relay(&c, &name, command)),
        Command::Replay {
            config,
            db,
            site,
            since,
            until,
            format,
            rules,
        } => {
            let args = replay::Replay {
                config: &config,
                db: db.as_deref(),
                site: site.as_deref(),
                since: &since,
                until: until.as_deref(),
                format,
                rules: &rules,
            };
            replay::replay(args, &mut std::io::stdout())
        }
        Command::Why {
            rule,
            config,
            db,
            since,
            limit,
        } => why::why(
            why::Why {
                config: &config,
                db: db.as_deref(),
                rule: &rule,
                since: &since,
                limit,
            },
            &mut std::io::stdout(),
        ),
        Command::Query {
            config,
            db,
            format,
            timeout,
            sql,
        } => query::query(
            &config,
            db.as_deref(),
            format,
            &sql,
            timeout,
            &mut std::io::stdout(),
        ),
        Command::Plot {
            config,
            db,
            site,
            topic,
            since,
            until,
            out,
        } => plot::plot(
            plot::PlotArgs {
                config: &config,
                db: db.as_deref(),
                site: site.as_deref(),
                spec: &topic,
                since: &since,
                until: until.as_deref(),
                out: out.as_deref(),
            },
            &mut std::io::stdout(),
        ),
        Command::Notify { config, words } => {
            let (channel, text) = match words.as_slice() {
                [channel, text] => (Some(channel.as_str()), text.as_str()),
                [text] => (None, text.as_str()),
                _ => (None, ""),
            };
            crate::config::load(&config)
                .map_err(anyhow::Error::from)
                .and_then(|c| notify::notify(&c, channel, text, &mut std::io::stdout()))
        }
        Command::Init { dir } => init::init(&dir, &mut std::io::stdout()),
    };
    match result {
        Ok(code) => code,
        // The reader went away (`homewright query ... | head`): stop quietly, as `cat` does.
        Err(error) if is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Makes the C library's local time, which SQLite's `'localtime'` modifier uses, that of
/// `location.timezone` rather than the system's, so that `date('now', 'localtime')` in a query or a
/// rule's `sql()` is the rules' day. Must run before the command starts any thread: `cli::run` is called
/// by `main` on its only thread, and each command calls this right after loading its config.
fn local_time_follows(zone: &crate::scheduler::Zone) {
    unsafe extern "C" {
        /// POSIX: re-reads `TZ` for the C library's local time.
        fn tzset();
    }
    let Some(name) = zone.iana_name() else {
        return; // the system's own zone: nothing to change
    };
    // SAFETY: no other thread exists yet (see above), so nothing reads the environment concurrently,
    // and tzset only re-reads TZ into the C library's own state.
    unsafe {
        std::env::set_var("TZ", name);
        tzset();
    }
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
