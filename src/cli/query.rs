//! `homewright query`: SQL over the history on a read-only connection.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

use super::format::{Format, write_result};
use crate::config;
use crate::store::HistoryReader;

pub fn query(
    config_path: &Path,
    db: Option<&Path>,
    format: Format,
    sql: &str,
    out: &mut impl Write,
) -> anyhow::Result<ExitCode> {
    let path = match db {
        Some(path) => path.to_path_buf(),
        None => {
            config::load(config_path)
                .context("cannot find the database (pass --db PATH, or -c FILE for its config)")?
                .database
                .path
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(async {
        let reader = HistoryReader::open(&path).await?;
        anyhow::Ok(reader.query(sql, &[], None).await?)
    })?;
    write_result(out, &result, format)?;
    Ok(ExitCode::SUCCESS)
}
