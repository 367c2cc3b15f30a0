//! A house's rules can be many: loading must grow with the rule files' size, not faster. The figure
//! per size is the benchmark's (`cargo bench --bench engine -- rules_load`); this test only makes sure
//! a 5 MB file loads in seconds rather than the minutes a quadratic step takes.

use std::io::Read;
use std::process::Stdio;
use std::time::Duration;

use crate::support::rule_files::big_rule_file;
use crate::support::{Setup, homewright_command};

/// CPU time, not wall time: on a machine busy with other builds `check` may wait far longer than it
/// computes. Far above the 13 s of CPU a 5 MB file takes in a debug build, far below the ten minutes
/// it took when each closure's variables were looked up among every closure before it (2 MB already
/// took 112 s).
const GENEROUS: Duration = Duration::from_secs(120);

#[test]
// The child is reaped by `wait4` in `wait_with_cpu`, which also reports its CPU time.
#[allow(clippy::zombie_processes)]
fn a_5_mb_rule_file_checks_in_seconds() {
    let (text, triggers) = big_rule_file(5 << 20);
    let setup = Setup::embedded().rule("big", &text);
    setup.write_config();
    let mut child = homewright_command()
        .current_dir(setup.dir.path())
        .arg("check")
        .stdout(Stdio::piped())
        .spawn()
        .expect("run homewright check");
    let mut out = String::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out)
        .expect("read the output");
    let (code, cpu) = wait_with_cpu(child.id());
    eprintln!(
        "check of a {} byte rule file with {triggers} triggers: {cpu:?} of CPU",
        text.len()
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("ok: "), "{out}");
    assert!(cpu < GENEROUS, "checking took {cpu:?} of CPU");
}

/// Waits for child `pid`; its exit code and the CPU time it used (user and system).
fn wait_with_cpu(pid: u32) -> (i32, Duration) {
    let mut status = 0;
    // SAFETY: rusage is plain data that wait4 fills in; the child is ours and not waited for elsewhere.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = i32::try_from(pid).expect("a pid");
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(waited, pid, "wait4");
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, (t.tv_usec as u32) * 1000);
    (
        libc::WEXITSTATUS(status),
        time(usage.ru_utime) + time(usage.ru_stime),
    )
}
