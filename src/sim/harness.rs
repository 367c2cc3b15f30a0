//! Rules on virtual time, with a real history file and no broker: what the scheduler tests,
//! `homewright test` and `homewright replay` drive. Messages go into the history as ingest would store them,
//! outputs are recorded as the recorder would record them (but nothing is published), and time
//! moves only when the driver moves it.

use std::path::Path;

use bytes::Bytes;

use crate::config::gpio::GpioConfig;
use crate::event::{Action, Event, HttpCall, Message, Notification, Output, RuleRun};
use crate::recorder;
use crate::relays::model::RelayModel;
use crate::rules::{Diagnostic, Limits, RuleSet, Services};
use crate::scheduler::{Clock, Location};
use crate::store::{HistoryReader, RecordBatch, Store, StoreError};

/// Why a simulation could not start.
#[derive(Debug, thiserror::Error)]
pub enum SimulationError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot start the async runtime for the history: {0}")]
    Runtime(std::io::Error),
    #[error("cannot read the rules directory {dir}: {source}")]
    Rules { dir: String, source: std::io::Error },
}

/// Which rule files a simulation loads.
#[derive(Debug, Clone, Copy)]
pub enum RuleSource<'a> {
    /// Every `*.rhai` of a directory.
    Dir(&'a Path),
    /// These files.
    Files(&'a [std::path::PathBuf]),
}

/// A run of the rules on a virtual clock.
pub struct Simulation {
    rules: RuleSet,
    clock: Clock,
    store: Store,
    runtime: tokio::runtime::Runtime,
    log: Vec<Output>,
    /// Rule files that did not load.
    pub problems: Vec<Diagnostic>,
    /// Whether outputs are written to the history (off for replay, which reads only what it prints).
    record_to_history: bool,
    base_topic: String,
    /// Log lines written on this thread carry the virtual time while the simulation lives.
    _log_time: crate::logging::VirtualTime,
}

/// What a simulation runs with besides its rules.
#[derive(Debug, Clone)]
pub struct Options {
    pub location: Location,
    pub limits: Limits,
    /// The relays (driven by no backend: their state is the model's).
    pub gpio: GpioConfig,
    /// Where relay state topics live.
    pub base_topic: String,
    /// A history without fsyncs, for scenario tests and replay, where nothing must survive.
    pub scratch: bool,
    /// The notification channels and allowed hosts: `notify()` and `http()` are checked against them
    /// as in the service, and recorded, but nothing is sent.
    pub outbound: std::sync::Arc<crate::config::OutboundConfig>,
}

impl Options {
    /// What `config` sets for rules, on a scratch history when `scratch`.
    pub fn of(config: &crate::config::Config, scratch: bool) -> Options {
        Options {
            location: config.location.clone(),
            limits: Limits::of(config),
            gpio: config.gpio.clone(),
            base_topic: config.mqtt.base_topic.clone(),
            scratch,
            outbound: std::sync::Arc::new(config.outbound.clone()),
        }
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            location: Location::default(),
            limits: Limits {
                max_operations: 1_000_000,
                timeout: std::time::Duration::from_secs(1),
                max_string_size: 4 << 20,
                ..Limits::default()
            },
            gpio: GpioConfig::default(),
            base_topic: "homewright".into(),
            scratch: false,
            outbound: Default::default(),
        }
    }
}

impl Simulation {
    /// Opens (or creates) the history at `db`, loads the rules of `rules_dir` with what an earlier run
    /// persisted there, and starts them at `start` (unix ms).
    pub fn start(
        db: &Path,
        rules_dir: &Path,
        location: Location,
        limits: Limits,
        start: i64,
    ) -> Result<Simulation, SimulationError> {
        let options = Options {
            location,
            limits,
            ..Options::default()
        };
        Simulation::start_with(db, RuleSource::Dir(rules_dir), options, start)
    }

    /// Like [`Simulation::start`], with the rule files chosen one by one, and optionally a scratch
    /// history (no fsyncs: for scenario tests and replay, where nothing must survive).
    pub fn start_with(
        db: &Path,
        source: RuleSource<'_>,
        options: Options,
        start: i64,
    ) -> Result<Simulation, SimulationError> {
        Simulation::open(db, source, options, start, false)
    }

    /// [`Simulation::start_with`]; with `rebase`, pending times are re-based as the engine does at
    /// start when the clock is behind the history ([`crate::scheduler::rebase`]).
    fn open(
        db: &Path,
        source: RuleSource<'_>,
        options: Options,
        start: i64,
        rebase: bool,
    ) -> Result<Simulation, SimulationError> {
        let Options {
            location,
            limits,
            gpio,
            base_topic,
            scratch,
            outbound,
        } = options;
        // Handle::block_on from the rule side needs a runtime whose drivers run on their own thread.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(SimulationError::Runtime)?;
        let (store, reader, persisted) = runtime.block_on(async {
            let store = if scratch {
                Store::open_scratch(db).await?
            } else {
                Store::open(db).await?
            };
            let reader = HistoryReader::open(db).await?;
            let mut persisted = store.load_persisted(limits.max_value_size).await?;
            if rebase {
                crate::scheduler::rebase::rebase(&mut persisted, start, store.last_recorded().await?);
            }
            Ok::<_, StoreError>((store, reader, persisted))
        })?;
        let clock = Clock::virtual_at(start);
        // Before the rules load: a rule's top level may log too.
        let log_time = crate::logging::VirtualTime::follow(clock.clone());
        let services = Services {
            reader,
            runtime: runtime.handle().clone(),
        };
        let relays = RelayModel::start_states(&gpio, &persisted.relays, start);
        let mut rules = RuleSet::new(limits, Some(services), persisted, clock.clone(), location);
        rules.set_relays(gpio, &base_topic, relays);
        rules.set_outbound(outbound);
        let problems = match source {
            RuleSource::Dir(dir) => rules.load_dir(dir).map_err(|source| SimulationError::Rules {
                dir: dir.display().to_string(),
                source,
            })?,
            RuleSource::Files(files) => files.iter().filter_map(|f| rules.load_file(f).err()).collect(),
        };
        let mut simulation = Simulation {
            rules,
            clock,
            store,
            runtime,
            log: Vec::new(),
            problems,
            record_to_history: true,
            base_topic,
            _log_time: log_time,
        };
        let outputs = simulation.rules.handle(&Event::Start);
        simulation.record(outputs)?;
        Ok(simulation)
    }

    /// Stops, stays down for `down` ms of virtual time, and starts again on the same history with
    /// `source` and `options`, as the service would after an outage: persisted timers, catch-up
    /// triggers, `store_set` values and relay states carry over, captured variables do not. The log of
    /// what happened before is kept. A negative `down` starts that much before the time it stopped: a
    /// machine without a real-time clock that booted on an old time.
    pub fn restart(
        &mut self,
        db: &Path,
        source: RuleSource<'_>,
        options: Options,
        down: i64,
    ) -> Result<(), SimulationError> {
        let at = self.now() + down;
        let mut earlier = std::mem::take(&mut self.log);
        // Everything is written already (each output is recorded as it happens): the next start reads
        // it back as the service would.
        let next = Simulation::open(db, source, options, at, true)?;
        let old = std::mem::replace(self, next);
        old.stop();
        earlier.append(&mut self.log);
        self.log = earlier;
        Ok(())
    }

    /// The virtual time, unix ms.
    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    /// A message arrives now: stored as ingest would, then offered to the rules.
    pub fn publish(&mut self, topic: &str, payload: impl Into<Bytes>) -> Result<(), StoreError> {
        let message = Message {
            ts: self.now(),
            topic: topic.into(),
            payload: payload.into(),
            qos: 1,
            retain: false,
            dup: false,
        };
        self.deliver(message)
    }

    /// A recorded message arrives at its own time: timers due before it fire first.
    pub fn deliver(&mut self, message: Message) -> Result<(), StoreError> {
        self.advance_to(message.ts)?;
        self.runtime.block_on(self.store.insert_messages(&[&message]))?;
        let outputs = self.rules.handle(&Event::Message(message));
        self.record(outputs)
    }

    /// A rule file was saved (or removed) now: reloaded as the running engine's watcher would.
    pub fn reload(&mut self, path: &Path) -> Result<(), StoreError> {
        let outputs = self.rules.handle(&Event::RuleFile(path.to_path_buf()));
        self.record(outputs)
    }

    /// The value a rule stored under `key` with `store_set`, as JSON.
    pub fn stored(&self, key: &str) -> Option<serde_json::Value> {
        self.rules.stored(key)
    }

    /// The rules that loaded.
    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    /// Moves the clock to `at`, running every trigger and timer due on the way at its own time.
    pub fn advance_to(&mut self, at: i64) -> Result<(), StoreError> {
        let outputs = self.rules.advance_to(at);
        self.record(outputs)
    }

    /// The wall clock steps by `jump` ms (either way) without time passing, as the engine's clock
    /// notices it: durations keep their length, calendar triggers follow the new time.
    pub fn jump_clock(&mut self, jump: i64) -> Result<(), StoreError> {
        self.clock.set(self.now() + jump);
        let outputs = self.rules.clock_jumped(jump);
        self.record(outputs)
    }

    /// Moves the clock forward by `millis`.
    pub fn advance(&mut self, millis: i64) -> Result<(), StoreError> {
        self.advance_to(self.now() + millis)
    }

    /// Everything the rules produced so far, in order.
    pub fn outputs(&self) -> &[Output] {
        &self.log
    }

    /// Takes what the rules produced so far out of the log (a long replay need not keep it all).
    pub fn take_outputs(&mut self) -> Vec<Output> {
        std::mem::take(&mut self.log)
    }

    /// What the rules published so far: (virtual time, topic, payload as text). A relay switch shows as
    /// the publish of its state topic, as the actions stage would make it.
    pub fn published(&self) -> Vec<(i64, String, String)> {
        self.log
            .iter()
            .filter_map(|o| match o {
                Output::Action {
                    ts,
                    action: Action::Publish { topic, payload, .. },
                    ..
                } => Some((*ts, topic.clone(), String::from_utf8_lossy(payload).into_owned())),
                Output::Action {
                    ts,
                    action: Action::Relay { name, on, .. },
                    ..
                } => {
                    let state = if *on { "ON" } else { "OFF" };
                    Some((
                        *ts,
                        format!("{}/relay/{name}", self.base_topic),
                        state.to_string(),
                    ))
                }
                _ => None,
            })
            .collect()
    }

    /// The notifications rules asked for so far (none is sent): (virtual time, channel, notification).
    pub fn notified(&self) -> Vec<(i64, &str, &Notification)> {
        self.log
            .iter()
            .filter_map(|o| match o {
                Output::Action {
                    ts,
                    action: Action::Notify { channel, note },
                    ..
                } => Some((*ts, channel.as_str(), note)),
                _ => None,
            })
            .collect()
    }

    /// The HTTP calls rules asked for so far (none is made): (virtual time, call).
    pub fn http_calls(&self) -> Vec<(i64, &HttpCall)> {
        self.log
            .iter()
            .filter_map(|o| match o {
                Output::Action {
                    ts,
                    action: Action::Http(call),
                    ..
                } => Some((*ts, call)),
                _ => None,
            })
            .collect()
    }

    /// Whether relay `name` is on (`None`: no such relay).
    pub fn relay_is_on(&self, name: &str) -> Option<bool> {
        self.rules.relay_is_on(name)
    }

    /// The traces of every run so far.
    pub fn runs(&self) -> Vec<&RuleRun> {
        self.log
            .iter()
            .filter_map(|o| match o {
                Output::Run(run) => Some(run),
                _ => None,
            })
            .collect()
    }

    /// Stops, as the service would: everything recorded is already in the history.
    pub fn stop(self) {
        self.runtime.block_on(self.store.close());
    }

    /// Stops writing outputs to the history (they are still kept in the log).
    pub fn stop_recording(&mut self) {
        self.record_to_history = false;
    }

    /// Writes outputs to the history as the recorder would, then keeps them in the log.
    fn record(&mut self, outputs: Vec<Output>) -> Result<(), StoreError> {
        if !self.record_to_history {
            self.log.extend(outputs);
            return Ok(());
        }
        let mut batch = RecordBatch::default();
        for output in &outputs {
            recorder::add(&mut batch, output.clone());
        }
        if !batch.is_empty() {
            self.runtime.block_on(self.store.write_records(&batch))?;
        }
        self.log.extend(outputs);
        Ok(())
    }
}
