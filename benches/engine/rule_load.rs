//! `rules_load`: how long `homewright check` takes on one rule file of 0.5, 1, 2, 4 and 5 MB, the median
//! of three runs each, and the ratio of 4 MB to 2 MB (2 when loading grows linearly with the size).

use std::process::Command;
use std::time::Instant;

use crate::rule_files::big_rule_file;
use crate::{Report, binary, median};

pub(crate) fn rules_load() {
    let mut report = Report { lines: Vec::new() };
    let mut by_size = Vec::new();
    for tenths in [5, 10, 20, 40, 50] {
        let bytes = (tenths << 20) / 10;
        let (text, triggers) = big_rule_file(bytes);
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("rules")).unwrap();
        std::fs::write(dir.path().join("rules/big.rhai"), &text).unwrap();
        std::fs::write(
            dir.path().join("homewright.yaml"),
            "broker:\n  embedded: false\nrules:\n  dir: rules\n",
        )
        .unwrap();
        let mut seconds = Vec::new();
        for _ in 0..3 {
            let started = Instant::now();
            let status = Command::new(binary())
                .current_dir(dir.path())
                .arg("check")
                .output()
                .unwrap()
                .status;
            assert!(status.success(), "check failed on the {bytes} byte file");
            seconds.push(started.elapsed().as_secs_f64());
        }
        let took = median(&mut seconds);
        by_size.push(took);
        report.line(
            &format!(
                "check a {:.1} MB rule file ({triggers} triggers)",
                tenths as f64 / 10.0
            ),
            format!("{took:.2} s"),
            "",
            None,
        );
    }
    let ratio = by_size[3] / by_size[2];
    report.line(
        "4 MB / 2 MB load time",
        format!("{ratio:.2}"),
        "< 3 (2: linear)",
        Some(ratio < 3.0),
    );
}
