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
/// cores the broker needs. Measured with `cargo bench --bench engine -- ingest` (issue 7): one worker
/// takes about a sixth less CPU per message at QoS 1 and stores QoS 0 as fast as a bare subscriber
/// receives.
const WORKER_THREADS: usize = 1;

pub fn run(config_path: &Path) -> anyhow::Result<ExitCode> {
    let config = config::load(config_path)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKER_THREADS)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let signals = tokio::spawn(stop_on_signal(shutdown.clone()));
        let result = app::run(config, shutdown).await;
        signals.abort();
        result
    })?;
    Ok(ExitCode::SUCCESS)
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
