//! Counters the stages bump as work passes through them, rendered in the Prometheus text format for
//! `/metrics` (served by [`crate::web`] on `metrics.listen`, and on `web.listen`).
//!
//! The counters are one process-wide [`static@METRICS`], like a Prometheus client's default registry:
//! a stage adds to them with one line and no handle threaded through its constructor, and the cost
//! on the message path is a few relaxed atomic adds (no lock, no allocation). Per-rule counters take
//! an uncontended lock once per rule run, on the rule thread. Engines started
//! in one process (the in-process tests) share the counters; the endpoint serves the process.

pub mod queues;

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::event::{RuleRun, now_millis};

/// The engine's counters.
pub static METRICS: Metrics = Metrics::new();

/// Upper bounds (milliseconds) of the ingest-to-commit latency buckets: a message waits at most 50 ms
/// for its batch, then for the commit (a few ms on an SSD, more on an SD card); above a second
/// something is wrong.
const LATENCY_BUCKETS_MS: [u64; 11] = [1, 2, 5, 10, 25, 50, 100, 250, 500, 1_000, 5_000];

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    const fn new() -> Self {
        Counter(AtomicU64::new(0))
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        // Relaxed: each counter is read on its own; no other memory depends on its value.
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The current count.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Every counter of the engine.
#[derive(Debug)]
pub struct Metrics {
    /// Messages the subscriber received from the broker.
    pub received: Counter,
    /// Messages committed to the history.
    pub stored: Counter,
    /// Batches of messages committed: each is one transaction and one fsync, so `stored / commits` is
    /// how many messages share one (an SD card's wear).
    pub commits: Counter,
    /// Commits of a batch of messages that failed (and were retried).
    pub store_errors: Counter,
    /// Actions performed (published).
    pub actions: Counter,
    /// Actions that could not be performed.
    pub action_errors: Counter,
    /// Publishes set aside from the outbox because the broker refused them (closed the connection
    /// each time they were sent).
    pub outbox_refused: Counter,
    /// Notifications and HTTP calls delivered (a 1xx-3xx answer).
    pub deliveries_sent: Counter,
    /// Tries of a notification or HTTP call that failed and will be made again.
    pub deliveries_retried: Counter,
    /// Notifications and HTTP calls refused (a 4xx answer) or impossible: not retried.
    pub deliveries_failed: Counter,
    /// Notifications and HTTP calls dropped undelivered after `http.max_age`.
    pub deliveries_dropped: Counter,
    latency: Histogram,
    rules: Mutex<BTreeMap<String, RuleCounts>>,
}

#[derive(Debug, Default, Clone, Copy)]
struct RuleCounts {
    runs: u64,
    failures: u64,
    actions: u64,
}

impl Metrics {
    const fn new() -> Self {
        Metrics {
            received: Counter::new(),
            stored: Counter::new(),
            commits: Counter::new(),
            store_errors: Counter::new(),
            actions: Counter::new(),
            action_errors: Counter::new(),
            outbox_refused: Counter::new(),
            deliveries_sent: Counter::new(),
            deliveries_retried: Counter::new(),
            deliveries_failed: Counter::new(),
            deliveries_dropped: Counter::new(),
            latency: Histogram::new(),
            rules: Mutex::new(BTreeMap::new()),
        }
    }

    /// Counts a committed batch, given when each of its messages was received (unix ms).
    pub fn committed(&self, received_at: impl Iterator<Item = i64>) {
        let now = now_millis();
        let mut count = 0;
        for ts in received_at {
            self.latency.observe(u64::try_from(now - ts).unwrap_or(0));
            count += 1;
        }
        self.stored.add(count);
        self.commits.add(1);
    }

    /// Counts one run of one rule's trigger.
    pub fn rule_run(&self, run: &RuleRun) {
        let mut rules = self.rules.lock().unwrap_or_else(|p| p.into_inner());
        let counts = match rules.get_mut(&*run.rule) {
            Some(counts) => counts,
            None => rules.entry(run.rule.to_string()).or_default(),
        };
        counts.runs += 1;
        counts.failures += u64::from(run.error.is_some());
        counts.actions += u64::try_from(run.actions).unwrap_or(0);
    }

    /// The Prometheus text exposition (format 0.0.4) of every counter, plus `queues`' depths.
    pub fn render(&self, queues: &[(&'static str, usize, usize)]) -> String {
        let mut out = String::with_capacity(4096);
        let info = format!(
            "homewright_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        family(
            &mut out,
            "homewright_build_info",
            "gauge",
            "The running version.",
            &info,
        );
        counter(
            &mut out,
            "messages_received",
            "Messages received from the broker.",
            &self.received,
        );
        // Before `messages_stored`: a commit adds to it first, so the commits read never exceed the
        // messages read.
        counter(
            &mut out,
            "commits",
            "Batches of messages committed, one transaction and one fsync each.",
            &self.commits,
        );
        counter(
            &mut out,
            "messages_stored",
            "Messages committed to the history.",
            &self.stored,
        );
        counter(
            &mut out,
            "store_errors",
            "Failed commits of a batch of messages (retried).",
            &self.store_errors,
        );
        counter(
            &mut out,
            "actions",
            "Actions performed (MQTT publishes).",
            &self.actions,
        );
        counter(
            &mut out,
            "action_errors",
            "Actions that could not be performed.",
            &self.action_errors,
        );
        counter(
            &mut out,
            "outbox_refused",
            "Publishes the broker refused, set aside from the outbox (table outbox_refused).",
            &self.outbox_refused,
        );
        let deliveries: Vec<String> = [
            ("sent", &self.deliveries_sent),
            ("retried", &self.deliveries_retried),
            ("failed", &self.deliveries_failed),
            ("dropped", &self.deliveries_dropped),
        ]
        .iter()
        .map(|(outcome, counter)| {
            format!(
                "homewright_deliveries_total{{outcome=\"{outcome}\"}} {}",
                counter.get()
            )
        })
        .collect();
        family(
            &mut out,
            "homewright_deliveries_total",
            "counter",
            "Notifications and HTTP calls by outcome: sent; retried (a try failed, another follows); failed (refused, not retried); dropped (older than http.max_age).",
            &deliveries.join("\n"),
        );
        self.render_rules(&mut out);
        let mut depths = String::new();
        let mut capacities = String::new();
        for (name, depth, capacity) in queues {
            let _ = writeln!(depths, "homewright_queue_depth{{queue=\"{name}\"}} {depth}");
            let _ = writeln!(
                capacities,
                "homewright_queue_capacity{{queue=\"{name}\"}} {capacity}"
            );
        }
        family(
            &mut out,
            "homewright_queue_depth",
            "gauge",
            "Items waiting between two stages.",
            depths.trim_end(),
        );
        family(
            &mut out,
            "homewright_queue_capacity",
            "gauge",
            "Bound of each queue; a full queue makes the stage before it wait.",
            capacities.trim_end(),
        );
        self.latency.render(&mut out);
        out
    }

    fn render_rules(&self, out: &mut String) {
        let rules = self.rules.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut lines = [String::new(), String::new(), String::new()];
        for (rule, counts) in &rules {
            let rule = escape(rule);
            let values = [counts.runs, counts.failures, counts.actions];
            for (text, (metric, value)) in lines.iter_mut().zip(RULE_METRICS.iter().zip(values)) {
                let _ = writeln!(text, "homewright_{}_total{{rule=\"{rule}\"}} {value}", metric.0);
            }
        }
        for (text, (metric, help)) in lines.iter().zip(RULE_METRICS) {
            family(
                out,
                &format!("homewright_{metric}_total"),
                "counter",
                help,
                text.trim_end(),
            );
        }
    }
}

const RULE_METRICS: [(&str, &str); 3] = [
    ("rule_runs", "Runs of a rule's triggers."),
    (
        "rule_failures",
        "Runs of a rule that failed (an error or a limit).",
    ),
    ("rule_actions", "Actions a rule asked for."),
];

fn counter(out: &mut String, name: &str, help: &str, counter: &Counter) {
    let name = format!("homewright_{name}_total");
    let sample = format!("{name} {}", counter.get());
    family(out, &name, "counter", help, &sample);
}

fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    if !samples.is_empty() {
        let _ = writeln!(out, "{samples}");
    }
}

/// A label value with `\`, `"` and newlines escaped, as the text format requires.
fn escape(value: &str) -> String {
    value
        .replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

/// Ingest-to-commit latency: counts per bucket (not cumulative; summed when rendered).
#[derive(Debug)]
struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS_MS.len() + 1],
    sum_ms: AtomicU64,
}

impl Histogram {
    const fn new() -> Self {
        Histogram {
            buckets: [const { AtomicU64::new(0) }; LATENCY_BUCKETS_MS.len() + 1],
            sum_ms: AtomicU64::new(0),
        }
    }

    fn observe(&self, ms: u64) {
        let index = LATENCY_BUCKETS_MS.partition_point(|bound| *bound < ms);
        self.buckets[index].fetch_add(1, Ordering::Relaxed);
        self.sum_ms.fetch_add(ms, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String) {
        let name = "homewright_ingest_commit_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time from receiving a message to committing it (ms resolution).\n# TYPE {name} histogram"
        );
        let mut cumulative = 0;
        for (bound, bucket) in LATENCY_BUCKETS_MS.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let le = *bound as f64 / 1000.0;
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        cumulative += self.buckets[LATENCY_BUCKETS_MS.len()].load(Ordering::Relaxed);
        let sum = self.sum_ms.load(Ordering::Relaxed) as f64 / 1000.0;
        let _ = writeln!(
            out,
            "{name}_bucket{{le=\"+Inf\"}} {cumulative}\n{name}_sum {sum}\n{name}_count {cumulative}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_lands_in_the_first_bucket_at_or_above_it() {
        let histogram = Histogram::new();
        for ms in [0, 1, 2, 3, 60_000] {
            histogram.observe(ms);
        }
        let mut out = String::new();
        histogram.render(&mut out);
        assert!(out.contains("_bucket{le=\"0.001\"} 2\n"), "{out}");
        assert!(out.contains("_bucket{le=\"0.002\"} 3\n"), "{out}");
        assert!(out.contains("_bucket{le=\"0.005\"} 4\n"), "{out}");
        assert!(out.contains("_bucket{le=\"5\"} 4\n"), "{out}");
        assert!(out.contains("_bucket{le=\"+Inf\"} 5\n"), "{out}");
        assert!(out.contains("_sum 60.006\n"), "{out}");
    }

    #[test]
    fn rule_names_are_escaped_in_labels() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
