//! `homewright init [DIR]`: a first setup a new user can run at once: the commented example config
//! (the repository's own `homewright.yaml`, so the two cannot drift) and a rules directory with one
//! example rule. Nothing that exists is overwritten: init checks every target first and writes nothing
//! if any is there, so a half-initialised directory never mixes old and new files.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

/// The example config, commented; its relative paths resolve against the directory it is written to.
const CONFIG: &str = include_str!("../../homewright.yaml");

/// The example rule: a message trigger, a JSON payload, per-room state kept between runs.
const EXAMPLE_RULE: &str = include_str!("../../rules/too_warm.rhai");

/// The example rule's scenario test, so `homewright test` has something to prove from the start.
const EXAMPLE_SCENARIO: &str = include_str!("../../rules/tests/too_warm.yaml");

/// What init writes, relative to its directory.
const FILES: [(&str, &str); 3] = [
    ("homewright.yaml", CONFIG),
    ("rules/too_warm.rhai", EXAMPLE_RULE),
    ("rules/tests/too_warm.yaml", EXAMPLE_SCENARIO),
];

pub fn init(dir: &Path, out: &mut impl Write) -> anyhow::Result<ExitCode> {
    let targets: Vec<(PathBuf, &str)> = FILES.iter().map(|(name, text)| (dir.join(name), *text)).collect();
    let existing: Vec<String> = targets
        .iter()
        .filter(|(path, _)| path.exists())
        .map(|(path, _)| path.display().to_string())
        .collect();
    if !existing.is_empty() {
        let verb = if existing.len() == 1 { "exists" } else { "exist" };
        anyhow::bail!(
            "{} already {verb}; nothing was written (init another directory: homewright init DIR)",
            existing.join(" and ")
        );
    }
    for (path, text) in &targets {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create the directory {}", parent.display()))?;
        }
        let text = if path.ends_with("homewright.yaml") {
            location_commented_out(text)
        } else {
            text.to_string()
        };
        write_new(path, &text)?;
        writeln!(out, "wrote {}", path.display())?;
    }
    let cd = if dir == Path::new(".") {
        String::new()
    } else {
        format!("cd {} && ", shell_quote(&dir.display().to_string()))
    };
    writeln!(
        out,
        "\nlocation is commented out in homewright.yaml: set your latitude and longitude there (and timezone, \
         if the system's is not the house's) before a rule uses sunrise, sunset or is_dark().\n\
         rules/tests/too_warm.yaml is the example rule's scenario: `homewright test` plays it.\n\
         \nNext:\n  {cd}homewright check && homewright test   # validate the config and rules; prove the rule\n  homewright run     # the engine, with its own broker on 127.0.0.1:1883; Ctrl-C stops it\n  homewright query \"SELECT topic, payload FROM latest\"   # what it stored"
    )?;
    Ok(ExitCode::SUCCESS)
}

/// The example config with its `location:` block commented out: the example's coordinates are
/// Amsterdam's, and a new house must not quietly get Amsterdam's sunset.
fn location_commented_out(config: &str) -> String {
    let mut inside = false;
    let mut out = String::with_capacity(config.len() + 16);
    for line in config.lines() {
        if line.starts_with("location:") {
            inside = true;
        } else if inside && !line.starts_with([' ', '#']) {
            inside = false;
        }
        if inside && !line.trim_start().starts_with('#') && !line.trim().is_empty() {
            let indent = line.len() - line.trim_start().len();
            out.push_str(&line[..indent]);
            out.push_str("# ");
            out.push_str(&line[indent..]);
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

/// Creates `path` only if it does not exist yet (`create_new`), so a file appearing between the check
/// and the write is not clobbered either.
fn write_new(path: &Path, text: &str) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Quotes a path for a POSIX shell when it needs it.
fn shell_quote(text: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+:@".contains(c);
    if !text.is_empty() && text.chars().all(plain) {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_written_config_has_no_location() {
        let text = location_commented_out(CONFIG);
        assert!(text.contains("# location:"), "{text}");
        let config = crate::config::from_yaml(&text, Path::new("/h/homewright.yaml")).unwrap();
        assert_eq!(config.location.coordinates, None);
        // Nothing else changed.
        assert_eq!(text.lines().count(), CONFIG.lines().count());
        let changed = text.lines().zip(CONFIG.lines()).filter(|(a, b)| a != b).count();
        assert_eq!(changed, 3, "{text}");
    }
}
