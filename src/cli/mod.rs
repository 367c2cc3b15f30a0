//! The command line: parsing (clap), logging setup, and one file per subcommand. Errors are turned into
//! messages and exit codes here and nowhere deeper.

mod check;
mod format;
mod init;
mod query;
mod run;

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
        /// Database file; overrides the config's database.path.
        #[arg(long, value_name = "PATH")]
        db: Option<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// The SQL to run, e.g. "SELECT * FROM latest".
        sql: String,
    },
    /// Start a new setup: write a commented config and a rules directory with an example rule.
    Init {
        /// Where to write them (created if missing); existing files are never overwritten.
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
}

/// Runs the parsed command line and returns the process's exit code.
pub fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Run { config } => run::run(&config),
        Command::Check { config } => check::check(&config, &mut std::io::stdout()),
        Command::Query {
            config,
            db,
            format,
            sql,
        } => query::query(&config, db.as_deref(), format, &sql, &mut std::io::stdout()),
        Command::Init { dir } => init::init(&dir, &mut std::io::stdout()),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
