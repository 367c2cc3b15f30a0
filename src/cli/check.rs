//! `homewright check`: validates the config and compiles every rule (running each file's top level, so
//! a bad topic filter in a trigger is caught too), printing every problem.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use crate::config::{self, ConfigError};
use crate::relays::model::RelayModel;
use crate::rules::{Limits, RuleSet};
use crate::scheduler::Clock;

pub fn check(config_path: &Path, out: &mut impl Write) -> anyhow::Result<ExitCode> {
    let config = match config::load(config_path) {
        Ok(config) => config,
        Err(ConfigError::Invalid(problems)) => {
            for problem in problems {
                writeln!(out, "{problem}")?;
            }
            return Ok(ExitCode::FAILURE);
        }
        Err(other) => {
            writeln!(out, "{other}")?;
            return Ok(ExitCode::FAILURE);
        }
    };
    let limits = Limits::of(&config);
    let mut rules = RuleSet::new(limits, None, Default::default(), Clock::Wall, config.location);
    let relays = RelayModel::start_states(&config.gpio, &Default::default(), 0);
    rules.set_relays(config.gpio.clone(), &config.mqtt.base_topic, relays);
    let problems = match rules.load_dir(&config.rules.dir) {
        Ok(problems) => problems,
        Err(e) => {
            writeln!(
                out,
                "{}: cannot read the rules directory: {e} (rules.dir)",
                config.rules.dir.display()
            )?;
            return Ok(ExitCode::FAILURE);
        }
    };
    for problem in &problems {
        writeln!(out, "{}", problem.render())?;
    }
    if !problems.is_empty() {
        return Ok(ExitCode::FAILURE);
    }
    let names: Vec<&str> = rules.rules().iter().map(|r| &*r.name).collect();
    writeln!(
        out,
        "ok: {} and {} rules ({})",
        config_path.display(),
        names.len(),
        names.join(", ")
    )?;
    Ok(ExitCode::SUCCESS)
}
