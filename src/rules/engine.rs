//! The one place a Rhai engine is made, hardened the same way for `run`, `check` and tests: imports
//! only from rules/lib/ (see `library.rs`), no `eval`, explicit limits (Rhai's own defaults differ
//! between debug and release builds, so a rule tested in one could fail in the other), output through
//! `tracing`, and a wall-clock deadline and a memory allowance per run.

use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rhai::{Dynamic, Engine};

use super::library::Library;

/// Nesting of function calls a rule may use; recursion deeper than this is stopped.
pub const MAX_CALL_LEVELS: usize = 48;
/// Expression nesting at the top level and inside functions.
pub const MAX_EXPR_DEPTHS: (usize, usize) = (64, 32);
/// Elements in one array or map: generous for home data, small enough to stop a runaway allocation.
pub const MAX_COLLECTION_SIZE: usize = 100_000;
/// Operations between two looks at the clock: reading it on every operation would cost more than the
/// script itself.
const CLOCK_CHECK_INTERVAL: u64 = 256;

/// The limits of one run, from `rules:` in the config.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_operations: u64,
    pub timeout: Duration,
    /// Longest string a rule may build (at least the largest MQTT packet, so payloads fit).
    pub max_string_size: usize,
    /// Memory one run may take beyond what the rule thread held when it began, and what a rule may
    /// keep in its captured variables between runs.
    pub max_run_memory: usize,
    /// The JSON of one `store_set` value, and the captured variables of one `after` timer.
    pub max_value_size: usize,
    /// All `store_set` values together, and all pending timers' captured variables together.
    pub max_store_size: usize,
}

impl Default for Limits {
    /// The defaults of `rules:` with `mqtt.max_packet_size` at its default of 1 MiB.
    fn default() -> Self {
        Limits {
            max_operations: 1_000_000,
            timeout: Duration::from_secs(1),
            max_string_size: 4 << 20,
            max_run_memory: 16 << 20,
            max_value_size: 1 << 20,
            max_store_size: 16 << 20,
        }
    }
}

impl Limits {
    /// The limits `config` sets: `rules.max_operations` and `rules.timeout`, and strings up to four
    /// times `mqtt.max_packet_size` (a rule builds a payload from parts, and every message must fit).
    pub fn of(config: &crate::config::Config) -> Limits {
        Limits {
            max_operations: config.rules.max_operations,
            timeout: config.rules.timeout,
            max_string_size: 4 * config.mqtt.max_packet_size,
            max_run_memory: config.rules.max_run_memory,
            max_value_size: config.rules.max_value_size,
            max_store_size: config.rules.max_store_size,
        }
    }
}

/// The deadline of the run in progress, shared between the rule thread and the engine's progress
/// callback. Microseconds since `origin`; 0 means no run is in progress.
#[derive(Debug)]
pub struct Deadline {
    origin: Instant,
    micros: AtomicU64,
    /// What the rule thread held when the run began (see [`crate::os::allocation`]).
    held_at_start: AtomicIsize,
}

impl Deadline {
    fn new() -> Self {
        Deadline {
            origin: Instant::now(),
            micros: AtomicU64::new(0),
            held_at_start: AtomicIsize::new(0),
        }
    }

    /// Starts a run, begun at `started`, that may last `timeout`. Called on the thread that runs it.
    pub fn arm(&self, started: Instant, timeout: Duration) -> Instant {
        self.held_at_start
            .store(crate::os::allocation::thread_held(), Ordering::Relaxed);
        let at = started + timeout;
        let micros = at.duration_since(self.origin).as_micros();
        self.micros.store(
            u64::try_from(micros).unwrap_or(u64::MAX).max(1),
            Ordering::Relaxed,
        );
        at
    }

    /// Ends the run.
    pub fn disarm(&self) {
        self.micros.store(0, Ordering::Relaxed);
    }

    /// When the current run must end, if one is in progress.
    pub fn current(&self) -> Option<Instant> {
        match self.micros.load(Ordering::Relaxed) {
            0 => None,
            micros => Some(self.origin + Duration::from_micros(micros)),
        }
    }

    fn passed(&self) -> bool {
        self.current().is_some_and(|at| Instant::now() >= at)
    }

    /// Bytes the calling thread took since the run began (negative when it freed more).
    pub fn memory_used(&self) -> isize {
        crate::os::allocation::thread_held() - self.held_at_start.load(Ordering::Relaxed)
    }
}

/// Builds a hardened engine whose `import` loads from `library`. The returned deadline must be armed
/// around every run.
pub fn build(limits: Limits, library: Library) -> (Engine, Arc<Deadline>) {
    // The seed is process-wide and read at every call: an engine made before it is fixed no longer
    // finds its own functions afterwards.
    super::persist::fix_hash_seed();
    let mut engine = Engine::new();
    // Engine::new() resolves `import "x"` from any path on disk; a rule may read rules/lib/ only.
    engine.set_module_resolver(library);
    engine.disable_symbol("eval");
    engine.set_strict_variables(true);
    engine
        .set_max_operations(limits.max_operations)
        .set_max_call_levels(MAX_CALL_LEVELS)
        .set_max_expr_depths(MAX_EXPR_DEPTHS.0, MAX_EXPR_DEPTHS.1)
        .set_max_string_size(limits.max_string_size)
        .set_max_array_size(MAX_COLLECTION_SIZE)
        .set_max_map_size(MAX_COLLECTION_SIZE);
    engine.on_print(|text| tracing::info!(target: "homewright::rule", "{text}"));
    engine.on_debug(|text, source, position| {
        tracing::debug!(target: "homewright::rule", "{}:{position}: {text}", source.unwrap_or("rule"));
    });
    let deadline = Arc::new(Deadline::new());
    let watched = Arc::clone(&deadline);
    let timeout = limits.timeout;
    let max_memory = isize::try_from(limits.max_run_memory).unwrap_or(isize::MAX);
    // Checked at every operation: reading a thread-local costs less than the operation. A single
    // operation (a string join, a map copy) may overshoot by what it builds, at most a few times
    // Rhai's own limits.
    engine.on_progress(move |operations| {
        if watched.current().is_some() && watched.memory_used() > max_memory {
            return Some(Dynamic::from(format!(
                "the run took more than {} of memory (rules.max_run_memory)",
                super::size::human(max_memory.unsigned_abs())
            )));
        }
        if operations % CLOCK_CHECK_INTERVAL == 0 && watched.passed() {
            Some(Dynamic::from(format!(
                "the run took longer than {timeout:?} (rules.timeout)"
            )))
        } else {
            None
        }
    });
    (engine, deadline)
}
