//! The supervisor: builds the pipeline's channels and stages, starts them into one `TaskTracker`, and
//! on shutdown drains it in order. Only the sources (the subscriber) watch the shutdown token; every
//! later stage ends when its input closes, after finishing what it holds:
//!
//! subscriber stops -> ingest commits and acks -> subscriber disconnects
//!                  -> rules finish -> actions publish and close the publisher (`offline`) -> recorder writes
//!                                               -> outbound finishes the tries in flight (briefly)

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::actions::Actions;
use crate::config::Config;
use crate::event::{ActionRequest, Event, Output, now_millis};
use crate::housekeeping::Housekeeping;
use crate::ingest::{self, Ingest};
use crate::metrics::queues::Queues;
use crate::mqtt::publisher::Publisher;
use crate::mqtt::subscriber::Subscriber;
use crate::os::health::{IngestCheck, IngestProgress};
use crate::outbound::{self, Outbound};
use crate::recorder::{self, Recorder};
use crate::relays::commands::with_command_topics;
use crate::relays::driver::RelayDriver;
use crate::relays::model::RelayModel;
use crate::relays::{self, RelayBackend};
use crate::replicate::Replicator;
use crate::rules::worker::{self, RuleWorker};
use crate::rules::{RuleSet, Services};
use crate::store::{HistoryReader, Store};
use crate::{broker, store};
use std::collections::HashMap;

/// How long a stop may take before the supervisor gives up on the stages still running.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(15);

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Broker(#[from] broker::BrokerError),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("cannot start the rule thread: {0}")]
    RuleThread(std::io::Error),
    #[error(transparent)]
    Tls(#[from] crate::mqtt::TlsError),
    #[error(transparent)]
    Gpio(#[from] relays::GpioError),
    #[error(transparent)]
    Listen(#[from] crate::web::serve::BindError),
}

/// Runs the engine until `shutdown` is cancelled, then drains every stage.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), StartError> {
    run_with(config, shutdown, None).await
}

/// Like [`run`], with the relays driven by `backend` instead of the configured one (tests keep a handle
/// on a simulated backend this way). Each stage is built from the config by its own constructor; this
/// only wires them, in the order that lets `on_start` run before the first message.
pub async fn run_with(
    mut config: Config,
    shutdown: CancellationToken,
    backend: Option<Arc<dyn RelayBackend>>,
) -> Result<(), StartError> {
    let embedded = broker::settle(&mut config).await?;
    let result = run_engine(config, shutdown, backend, embedded.as_ref()).await;
    if let Some(embedded) = embedded {
        // Last, once the engine's connections said goodbye: it saves retained messages and sessions.
        embedded.stop().await;
    }
    result
}

async fn run_engine(
    config: Config,
    shutdown: CancellationToken,
    backend: Option<Arc<dyn RelayBackend>>,
    embedded: Option<&broker::EmbeddedBroker>,
) -> Result<(), StartError> {
    let store = Store::open(&config.database.path).await?;
    let reader = HistoryReader::open(&config.database.path).await?;
    let mut persisted = store.load_persisted(config.rules.max_value_size).await?;
    let now = now_millis();
    if let Some(behind) = crate::scheduler::rebase::rebase(&mut persisted, now, store.last_recorded().await?)
    {
        warn!(
            "the clock is {} behind the history's last record (not synced since boot?); pending timers and relay \
             limits keep what was left of them then",
            crate::scheduler::clock::describe_span(behind)
        );
    }
    let relay_start = RelayModel::start_states(&config.gpio, &persisted.relays, now);
    let levels: HashMap<String, bool> = relay_start.iter().map(|(name, s)| (name.clone(), s.on)).collect();
    let backend = match backend {
        Some(backend) => backend,
        None => relays::open(&config.gpio, &levels)?,
    };
    info!(database = %config.database.path.display(), "history opened");

    let (rules_tx, rules_rx) = flume::bounded(worker::INPUT_CAPACITY);
    let (ingest_tx, ingest_rx) = mpsc::channel(ingest::CHANNEL_CAPACITY);
    let (actions_tx, actions_rx) = mpsc::channel(worker::OUTPUT_CAPACITY);
    let (records_tx, records_rx) = mpsc::channel(recorder::CHANNEL_CAPACITY);
    let (outbound_tx, outbound_rx) = mpsc::channel(outbound::CHANNEL_CAPACITY);
    let progress = Arc::new(IngestProgress::default());
    let web = {
        let mut queues = queues(&rules_tx, &ingest_tx, &actions_tx, &records_tx);
        queues.watch("outbound", &outbound_tx);
        crate::web::Servers::bind(crate::web::Parts {
            config: Arc::new(config.clone()),
            reader: reader.clone(),
            queues: Arc::new(queues),
            rules: rules_tx.downgrade(),
            ingest: Arc::clone(&progress),
        })
        .await?
    };

    // Both connections are prepared (TLS files parsed) before anything starts, so a bad setting stops
    // the start cleanly.
    let (publisher, publish_handle) = Publisher::new(&config.mqtt, store.clone())?;
    let (subscriber, acker) = Subscriber::new(
        &with_command_topics(&config),
        ingest_tx,
        rules_tx.clone(),
        Arc::clone(&progress),
    )?;
    let stages = Stages::default();
    stages.spawn("publisher", publisher.run(shutdown.clone()));
    let commit_interval = config.database.commit_interval;
    stages.spawn(
        "recorder",
        Recorder::new(store.clone(), records_rx, commit_interval).run(),
    );
    let driver = RelayDriver::new(backend, &config, levels);
    let outbound = Outbound::new(&config, store.clone(), outbound_rx, records_tx.clone());
    stages.spawn("outbound", outbound.run());
    let actions = Actions::new(
        actions_rx,
        publish_handle,
        records_tx.clone(),
        driver,
        outbound_tx,
    );
    stages.spawn("actions", actions.run());

    let services = Services {
        reader,
        runtime: tokio::runtime::Handle::current(),
    };
    let rules = RuleSet::for_engine(&config, services, persisted, relay_start);
    let (ready_tx, ready_rx) = oneshot::channel();
    let worker = RuleWorker::new(
        config.rules.dir.clone(),
        rules,
        rules_rx,
        actions_tx,
        records_tx,
        ready_tx,
    );
    stages.spawn_thread("rules", move || {
        crate::os::thread_policy::batch_current_thread();
        worker.run()
    })?;
    // Before any message: on_start triggers run first. Ingest starts once the rules are loaded, so an
    // on_change trigger compares the first new message with the value from before this start.
    let _ = rules_tx.send_async(Event::Start).await;
    let _ = ready_rx.await;
    let watcher = match crate::rules::watch::watch(&config.rules.dir, rules_tx.clone()) {
        Ok(watcher) => Some(watcher),
        Err(e) => {
            warn!(
                "cannot watch {} for changes ({e}); edited rules are picked up at the next start",
                config.rules.dir.display()
            );
            None
        }
    };
    // From here on the subscriber and the watcher hold the rule thread's only inputs: once they are
    // gone, the rule thread ends.
    drop(rules_tx);

    stages.spawn(
        "ingest",
        Ingest::new(store.clone(), acker, ingest_rx, commit_interval).run(),
    );
    stages.spawn("subscriber", subscriber.run(shutdown.clone()));
    let housekeeping = Housekeeping::new(store.clone(), &config);
    stages.spawn("housekeeping", housekeeping.run(shutdown.clone()));
    match &config.replicate {
        Some(replicate) => {
            let replicator = Replicator::new(store.clone(), replicate).await?;
            stages.spawn("replication", replicator.run(shutdown.clone()));
        }
        None => crate::replicate::note_unconfigured(&store).await,
    }
    if !web.is_empty() {
        stages.spawn("web", web.run(shutdown.clone()));
    }
    crate::os::systemd::ready(&format!(
        "ingesting from {}:{}",
        config.mqtt.host, config.mqtt.port
    ));
    start_watchdog(&stages, &shutdown, progress, embedded);

    shutdown.cancelled().await;
    crate::os::systemd::stopping();
    // Its sender is one of the rule thread's inputs: gone, so the rule thread can end.
    drop(watcher);
    info!("stopping: committing what was received, sending what rules queued");
    stages.wait(SHUTDOWN_TIMEOUT).await;
    store.close().await;
    info!("stopped");
    Ok(())
}

/// The queues between stages, for `/metrics` and the health page.
fn queues(
    rules: &flume::Sender<Event>,
    ingest: &mpsc::Sender<crate::mqtt::subscriber::Incoming>,
    outputs: &mpsc::Sender<ActionRequest>,
    records: &mpsc::Sender<Vec<Output>>,
) -> Queues {
    let mut queues = Queues::default();
    queues.watch_flume("rules", rules);
    queues.watch("ingest", ingest);
    queues.watch("actions", outputs);
    queues.watch("recorder", records);
    queues
}

/// Pings systemd's watchdog (when it asked for one) while every stage started so far still runs and
/// ingest makes progress or has nothing to do.
fn start_watchdog(
    stages: &Stages,
    shutdown: &CancellationToken,
    progress: Arc<IngestProgress>,
    embedded: Option<&broker::EmbeddedBroker>,
) {
    let expected = stages.names();
    let running = Arc::clone(&stages.running);
    // The engine's connections only retry against a dead broker: the watchdog must say it is dead.
    let broker_alive: Box<dyn Fn() -> bool + Send + Sync> = match embedded {
        Some(embedded) => Box::new(embedded.health()),
        None => Box::new(|| true),
    };
    let healthy = move |timeout: Duration| {
        let mut ingest = IngestCheck::new(progress, timeout, std::time::Instant::now());
        move |now: std::time::Instant| {
            if !broker_alive() {
                return Err("the embedded broker failed and could not be restarted".to_string());
            }
            let ended = {
                let running = running.lock().unwrap_or_else(|p| p.into_inner());
                expected.iter().find(|name| !running.contains(*name)).copied()
            };
            match ended {
                Some(name) => Err(format!("the {name} stage ended on its own")),
                None => ingest.check(now),
            }
        }
    };
    if let Some(watchdog) = crate::os::systemd::Watchdog::from_env(healthy) {
        stages.spawn("watchdog", watchdog.run(shutdown.clone()));
    }
}

/// The running stages, by name, so a stop that hangs can say which stage hangs.
#[derive(Default)]
struct Stages {
    tracker: TaskTracker,
    running: Arc<Mutex<BTreeSet<&'static str>>>,
}

impl Stages {
    fn spawn(&self, name: &'static str, stage: impl Future<Output = ()> + Send + 'static) {
        let running = self.mark_running(name);
        self.tracker.spawn(async move {
            stage.await;
            done(&running, name);
        });
    }

    /// Runs blocking work (the rule thread) on its own OS thread, tracked like a task.
    fn spawn_thread(
        &self,
        name: &'static str,
        work: impl FnOnce() + Send + 'static,
    ) -> Result<(), StartError> {
        let running = self.mark_running(name);
        let (finished_tx, finished_rx) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name(name.into())
            .stack_size(worker::STACK_SIZE)
            .spawn(move || {
                work();
                let _ = finished_tx.send(());
            })
            .map_err(StartError::RuleThread)?;
        self.tracker.spawn(async move {
            let _ = finished_rx.await;
            done(&running, name);
        });
        Ok(())
    }

    fn names(&self) -> BTreeSet<&'static str> {
        self.running.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn mark_running(&self, name: &'static str) -> Arc<Mutex<BTreeSet<&'static str>>> {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name);
        Arc::clone(&self.running)
    }

    async fn wait(&self, timeout: Duration) {
        self.tracker.close();
        if tokio::time::timeout(timeout, self.tracker.wait()).await.is_err() {
            let running = self.running.lock().unwrap_or_else(|p| p.into_inner()).clone();
            warn!(
                "gave up waiting after {timeout:?} for: {}",
                running.into_iter().collect::<Vec<_>>().join(", ")
            );
        }
    }
}

fn done(running: &Mutex<BTreeSet<&'static str>>, name: &'static str) {
    running.lock().unwrap_or_else(|p| p.into_inner()).remove(name);
    tracing::debug!(stage = name, "stage finished");
}
