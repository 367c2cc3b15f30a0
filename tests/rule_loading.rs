//! A house's rules can be many: loading must grow with the rule files' size, not faster. The figure
//! per size is the benchmark's (`cargo bench --bench engine -- rules_load`); this test only makes sure
//! a 5 MB file loads in seconds rather than the minutes a quadratic step would take.

use std::time::{Duration, Instant};

use crate::support::rule_files::big_rule_file;
use crate::support::{Setup, run_homewright};

/// Far above the few seconds a 5 MB file takes in a debug build on a loaded 2-core machine, far
/// below the minutes it took when numbering each trigger walked every trigger before it.
const GENEROUS: Duration = Duration::from_secs(60);

#[test]
fn a_5_mb_rule_file_checks_in_seconds() {
    let (text, triggers) = big_rule_file(5 << 20);
    let setup = Setup::embedded().rule("big", &text);
    setup.write_config();
    let started = Instant::now();
    let output = run_homewright(setup.dir.path(), &["check"]);
    let took = started.elapsed();
    eprintln!(
        "check of a {} byte rule file with {triggers} triggers: {took:?}",
        text.len()
    );
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(took < GENEROUS, "checking took {took:?}");
}
