//! The `homewright` binary: parse the command line, set up logging, run, exit with its code.

#![deny(clippy::unwrap_used, clippy::expect_used)]

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = homewright::cli::Cli::parse();
    homewright::logging::init(cli.log_level.as_deref(), cli.log_format);
    homewright::cli::run(cli)
}
