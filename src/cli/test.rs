//! `homewright test`: runs scenario files on virtual time, one line per scenario, exit 1 on a failure.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::config;
use crate::sim::Options;
use crate::sim::scenario::run_scenario;

pub fn test(config_path: &Path, paths: &[PathBuf], out: &mut impl Write) -> anyhow::Result<ExitCode> {
    let config = config::load(config_path)?;
    let files = scenario_files(paths, &config.rules.dir.join("tests"))?;
    if files.is_empty() {
        writeln!(
            out,
            "no scenario files found (looked in {})",
            config.rules.dir.join("tests").display()
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    let options = Options::of(&config, true);
    let mut failed = 0;
    for file in &files {
        let outcome = run_scenario(file, &config.rules.dir, &options);
        failed += usize::from(outcome.failure.is_some());
        writeln!(out, "{outcome}")?;
    }
    writeln!(
        out,
        "{} scenarios: {} passed, {failed} failed",
        files.len(),
        files.len() - failed
    )?;
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The `.yaml` files named, or found in the directories named (default: `rules/tests`).
fn scenario_files(paths: &[PathBuf], default_dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let wanted: Vec<PathBuf> = if paths.is_empty() {
        vec![default_dir.to_path_buf()]
    } else {
        paths.to_vec()
    };
    let mut files = Vec::new();
    for path in wanted {
        if path.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(&path)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
                .collect();
            found.sort();
            files.extend(found);
        } else if path.is_file() {
            files.push(path);
        } else if !paths.is_empty() {
            anyhow::bail!("{}: no such scenario file or directory", path.display());
        }
    }
    Ok(files)
}
