//! Tells the kernel which of the engine's threads do batch work, so that they stop preempting the
//! threads that feed them.
//!
//! The tokio worker reads the broker's stream and hands each message to the rule thread and, a batch
//! at a time, to the history writer. With every thread an ordinary one, Linux lets a thread it wakes
//! preempt the thread that woke it: the rule thread took the core from the reader for each message or
//! two, ran it, slept, and gave the core back (measured with `perf record -e sched:sched_switch` during
//! a full-rate soak: about 5,000 such round trips a second, each two context switches, and the
//! broker left with less CPU). The tokio worker did the same to the broker, once for each packet the
//! broker wrote. `SCHED_BATCH` threads are never woken into a preemption: they run when a core is free
//! or at the next time slice, and then take whatever has queued up. They still get their fair share of
//! CPU, so the engine keeps up; only the start of its work is deferred, and on an idle core a woken
//! thread starts at once, so light traffic sees no delay.
//!
//! So every thread a message passes through is a batch thread: the runtime's (`cli::run::runtime`),
//! the rule thread and the history writer. The embedded broker's threads stay ordinary ones, and so do
//! the mostly idle ones started from the main thread (the rule-file watcher's, the history reader's
//! first connection; the reader's later connections are opened from the rule thread and inherit its
//! policy).
//!
//! Nothing here is needed for correctness: where the hint cannot be given (not Linux, a seccomp
//! filter), the engine runs as before, and says so at debug level.

/// The name the history writer's thread (sqlx's worker of the writer connection) gets, so that it can
/// be found here, and in `top -H` or `perf`. At most 15 bytes: Linux truncates longer thread names.
pub const WRITER_THREAD: &str = "history-writer";

/// The name of the tokio runtime's threads (`cli::run::runtime`), told apart in `top -H` from the
/// threads of the libraries the engine links.
pub const RUNTIME_THREAD: &str = "hw-runtime";

/// Makes the calling thread a batch thread. False (and logged at debug level) when it cannot be.
pub fn batch_current_thread() -> bool {
    imp::set_policy(0, imp::BATCH)
}

/// Makes the calling thread an ordinary one again, for a thread that must not inherit the batch policy
/// of the thread that spawned it (the embedded broker, which feeds the engine as Mosquitto does).
pub fn ordinary_current_thread() -> bool {
    imp::set_policy(0, imp::ORDINARY)
}

/// Makes every thread of this process named `name` a batch thread (a thread someone else spawned, such
/// as sqlx's worker). Returns how many were changed.
pub fn batch_threads_named(name: &str) -> usize {
    imp::threads_named(name)
        .into_iter()
        .filter(|&tid| imp::set_policy(tid, imp::BATCH))
        .count()
}

/// Whether the thread `tid` (0: the calling one) is a batch thread, for tests and diagnostics.
pub fn is_batch(tid: i32) -> bool {
    imp::is_batch(tid)
}

/// The ids of this process's threads named `name`.
pub fn threads_named(name: &str) -> Vec<i32> {
    imp::threads_named(name)
}

#[cfg(target_os = "linux")]
mod imp {
    pub const BATCH: libc::c_int = libc::SCHED_BATCH;
    pub const ORDINARY: libc::c_int = libc::SCHED_OTHER;

    pub fn set_policy(tid: i32, policy: libc::c_int) -> bool {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: sched_setscheduler reads `param`, a valid sched_param on our stack, and changes only
        // the scheduling policy of thread `tid` of this process (0: the calling thread); an unprivileged
        // thread may always move between SCHED_OTHER and SCHED_BATCH.
        let result = unsafe { libc::sched_setscheduler(tid, policy, &param) };
        if result != 0 {
            tracing::debug!(
                tid,
                policy,
                "cannot change a thread's scheduling policy: {}",
                std::io::Error::last_os_error()
            );
        }
        result == 0
    }

    pub fn is_batch(tid: i32) -> bool {
        // SAFETY: sched_getscheduler only reads the policy of thread `tid` (0: the calling thread).
        unsafe { libc::sched_getscheduler(tid) == libc::SCHED_BATCH }
    }

    pub fn threads_named(name: &str) -> Vec<i32> {
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            return Vec::new();
        };
        tasks
            .flatten()
            .filter(|task| {
                std::fs::read_to_string(task.path().join("comm")).is_ok_and(|comm| comm.trim_end() == name)
            })
            .filter_map(|task| task.file_name().to_str()?.parse().ok())
            .collect()
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    pub const BATCH: i32 = 0;
    pub const ORDINARY: i32 = 1;

    pub fn set_policy(_tid: i32, _policy: i32) -> bool {
        false
    }

    pub fn is_batch(_tid: i32) -> bool {
        false
    }

    pub fn threads_named(_name: &str) -> Vec<i32> {
        Vec::new()
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn a_named_thread_becomes_a_batch_thread() {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("sched-test-1".into())
            .spawn(move || {
                ready_tx.send(is_batch(0)).unwrap();
                let _ = done_rx.recv();
                is_batch(0)
            })
            .unwrap();
        assert!(!ready_rx.recv().unwrap(), "a new thread is an ordinary one");
        assert_eq!(batch_threads_named("sched-test-1"), 1);
        done_tx.send(()).unwrap();
        assert!(thread.join().unwrap(), "the thread itself sees its new policy");
        assert!(threads_named("sched-test-none").is_empty());
    }

    #[test]
    fn the_calling_thread_becomes_a_batch_thread() {
        let thread = std::thread::spawn(|| (batch_current_thread(), is_batch(0)));
        assert_eq!(thread.join().unwrap(), (true, true));
    }

    #[test]
    fn a_thread_spawned_by_a_batch_thread_can_become_ordinary_again() {
        let thread = std::thread::spawn(|| {
            batch_current_thread();
            std::thread::spawn(|| (is_batch(0), ordinary_current_thread(), is_batch(0)))
                .join()
                .unwrap()
        });
        assert_eq!(
            thread.join().unwrap(),
            (true, true, false),
            "inherited, then reset"
        );
    }
}
