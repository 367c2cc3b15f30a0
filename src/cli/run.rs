//! `homewright run`: the service, until SIGINT or SIGTERM.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::{app, config};

/// Worker threads of the runtime. One: the async stages only move messages between sockets, channels
/// and the two threads that do the heavy work (the rule thread and SQLite's), and they idle between
/// bursts. With a second worker, every task woken from outside (by the network, a timer, the rule
/// thread) also woke the idle worker to look for work: a futex call and a context switch each, on the
/// cores the broker needs. Measured with `cargo bench --bench engine -- ingest`: one worker
/// takes about a sixth less CPU per message at QoS 1 and stores QoS 0 as fast as a bare subscriber
/// receives.
const WORKER_THREADS: usize = 1;

pub fn run(config_path: &Path) -> anyhow::Result<ExitCode> {
    let config = config::load(config_path)?;
    super::local_time_follows(&config.location.timezone);
    crate::os::memory::return_large_blocks();
    if let Some(warning) = config.mqtt.credentials.as_ref().and_then(|c| c.exposure()) {
        tracing::warn!("{warning}");
    }
    let runtime = runtime().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let signals = tokio::spawn(stop_on_signal(shutdown.clone()));
        let result = app::run(config, shutdown).await;
        signals.abort();
        result
    })?;
    Ok(ExitCode::SUCCESS)
}

/// The engine's runtime. Its threads are batch threads (src/os/thread_policy.rs), like the rule thread and the
/// history writer: the worker wakes for every packet the broker sends, and as an ordinary thread each
/// wake-up could preempt the broker, which then ran in short slices between them. As a batch thread
/// it runs when a core is free or at the broker's next time slice, and reads what has arrived by then.
/// Measured: flipping the worker's policy with `chrt` during one `-- soak` cut Mosquitto's
/// involuntary context switches from about 4,000 to 1,300 a second at QoS 0; over 20 `-- ingest` runs
/// of each build, taken in turn, the engine used 6% less CPU per message at QoS 0 (6.7 -> 6.3 us) and
/// about the same at QoS 1, and `-- quick` showed the same latency at 1,000 and 5,000 msg/s.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKER_THREADS)
        .thread_name(crate::os::thread_policy::RUNTIME_THREAD)
        .on_thread_start(|| {
            crate::os::thread_policy::batch_current_thread();
        })
        .enable_all()
        .build()
}

async fn stop_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot listen for SIGTERM: {e}");
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => info!("SIGINT received"),
        _ = terminate.recv() => info!("SIGTERM received"),
    }
    shutdown.cancel();
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #[test]
    fn the_runtime_runs_its_tasks_on_batch_threads() {
        let runtime = super::runtime().unwrap();
        let on_worker =
            runtime.block_on(async { tokio::spawn(async { crate::os::thread_policy::is_batch(0) }).await });
        assert!(on_worker.unwrap());
        let on_blocking = runtime.block_on(runtime.spawn_blocking(|| crate::os::thread_policy::is_batch(0)));
        assert!(on_blocking.unwrap());
    }
}
