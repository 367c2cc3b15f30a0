//! What the relays should be doing, decided on the rule thread: interlocks, `on_for` and `max_on`
//! deadlines, and commands from the set topics. Every decision becomes an [`Applied`] change: a relay
//! [`Action`](crate::event::Action) for the actions stage to drive and record, and a [`RelayState`]
//! to persist (for `restore` and for pending `on_for` offs across a restart).

use std::collections::HashMap;

use crate::config::gpio::{GpioConfig, RelayConfig};

/// A relay's state as persisted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayState {
    pub on: bool,
    /// When it last changed, unix ms.
    pub since: i64,
    /// When an `on_for` will switch it off.
    pub off_due: Option<i64>,
}

/// What asked for a switch, as recorded in `actions.cause`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    Rule,
    SetTopic,
    Cli,
    /// The house's page (`web:`).
    Web,
    OnFor,
    MaxOn,
    Start,
    Shutdown,
}

impl Cause {
    /// The word stored in `actions.cause`.
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Rule => "rule",
            Cause::SetTopic => "set_topic",
            Cause::Cli => "cli",
            Cause::Web => "web",
            Cause::OnFor => "on_for",
            Cause::MaxOn => "max_on",
            Cause::Start => "start",
            Cause::Shutdown => "shutdown",
        }
    }
}

/// What to do with a relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    On,
    Off,
    Toggle,
    /// On, then off after this many ms (a second call restarts the duration).
    OnFor(i64),
}

/// The outcome of an operation that was allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Whether the relay changed state (and the pin must be driven).
    pub changed: bool,
    pub state: RelayState,
    /// A deadline to queue: when the relay must be looked at again (on_for or max_on).
    pub deadline: Option<i64>,
}

/// Every relay's state.
#[derive(Debug, Clone, Default)]
pub struct RelayModel {
    config: GpioConfig,
    states: HashMap<String, RelayState>,
}

impl RelayModel {
    /// Each relay's state at start: the persisted one where it asks to `restore`, else `initial`.
    pub fn start_states(
        config: &GpioConfig,
        persisted: &HashMap<String, RelayState>,
        now: i64,
    ) -> HashMap<String, RelayState> {
        config
            .relays
            .iter()
            .map(|relay| {
                let state = match persisted.get(&relay.name) {
                    Some(saved) if relay.restore => *saved,
                    // A pending on_for off outlives a restart even without `restore`.
                    Some(saved) if saved.on && saved.off_due.is_some() => *saved,
                    _ => RelayState {
                        on: relay.initial,
                        since: now,
                        off_due: None,
                    },
                };
                (relay.name.clone(), state)
            })
            .collect()
    }

    /// A model starting from `states`.
    pub fn new(config: GpioConfig, states: HashMap<String, RelayState>) -> Self {
        RelayModel { config, states }
    }

    /// The relays' configuration.
    pub fn config(&self) -> &GpioConfig {
        &self.config
    }

    /// The relay called `name`.
    pub fn relay(&self, name: &str) -> Option<&RelayConfig> {
        self.config.relay(name)
    }

    /// The state of `name`.
    pub fn state(&self, name: &str) -> Option<RelayState> {
        self.states.get(name).copied()
    }

    /// The deadlines to queue at start (pending on_for offs and max_on limits of relays that are on).
    pub fn deadlines(&self) -> Vec<(String, i64)> {
        self.states
            .iter()
            .filter_map(|(name, state)| self.deadline_of(name, state).map(|at| (name.clone(), at)))
            .collect()
    }

    fn deadline_of(&self, name: &str, state: &RelayState) -> Option<i64> {
        if !state.on {
            return None;
        }
        let max = self
            .relay(name)
            .and_then(|r| r.max_on)
            .map(|d| state.since + d.as_millis() as i64);
        match (state.off_due, max) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Moves every relay's times by `jump` ms (the wall clock jumped and their durations keep their
    /// length); returns the states of the relays that are on, whose deadlines moved.
    pub fn shift(&mut self, jump: i64) -> Vec<(String, RelayState)> {
        let mut moved = Vec::new();
        for (name, state) in &mut self.states {
            state.since = state.since.saturating_add(jump);
            state.off_due = state.off_due.map(|at| at.saturating_add(jump));
            if state.on {
                moved.push((name.clone(), *state));
            }
        }
        moved
    }

    /// Applies `op` to `name` at `now`; `Err` says why it is refused (unknown relay, interlock).
    pub fn apply(&mut self, name: &str, op: Op, now: i64) -> Result<Applied, String> {
        let current = self
            .state(name)
            .ok_or_else(|| format!("there is no relay `{name}` in gpio.relays"))?;
        let want_on = match op {
            Op::On | Op::OnFor(_) => true,
            Op::Off => false,
            Op::Toggle => !current.on,
        };
        if want_on
            && !current.on
            && let Some(other) = self.config.relays.iter().find(|r| {
                r.name != name
                    && self.config.interlocked(name, &r.name)
                    && self.state(&r.name).is_some_and(|s| s.on)
            })
        {
            return Err(format!(
                "refused to switch {name} on: it is interlocked with {}, which is on",
                other.name
            ));
        }
        let changed = want_on != current.on;
        let mut state = if changed {
            RelayState {
                on: want_on,
                since: now,
                off_due: None,
            }
        } else {
            current
        };
        // An explicit on (or off, or a toggle) replaces a pending on_for: "on" means on until told
        // otherwise, as a wall switch does, not "on until an earlier on_for runs out". For the same
        // reason an on_for does not put a time limit on a relay that is already on without one: the
        // light switched on by hand stays on when the motion rule asks for five minutes.
        state.off_due = match op {
            Op::OnFor(_) if current.on && current.off_due.is_none() => None,
            Op::OnFor(duration) => Some(now + duration),
            Op::On | Op::Off | Op::Toggle => None,
        };
        self.states.insert(name.to_string(), state);
        let deadline = if changed || matches!(op, Op::OnFor(_)) {
            self.deadline_of(name, &state)
        } else {
            None
        };
        Ok(Applied {
            changed,
            state,
            deadline,
        })
    }

    /// A queued deadline of `name` fell due at `at`: the cause of the switch-off it calls for, if it is
    /// still current (a restarted on_for or a switch in between makes it stale).
    pub fn due(&self, name: &str, at: i64) -> Option<Cause> {
        let state = self.state(name)?;
        if !state.on {
            return None;
        }
        if state.off_due == Some(at) {
            return Some(Cause::OnFor);
        }
        let max = self.relay(name)?.max_on?;
        (state.since + max.as_millis() as i64 == at).then_some(Cause::MaxOn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::gpio::OnStop;
    use std::time::Duration;

    fn relay(name: &str, pin: u8, interlock: &[&str], max_on: Option<u64>) -> RelayConfig {
        RelayConfig {
            name: name.into(),
            pin,
            active_low: false,
            initial: false,
            max_on: max_on.map(Duration::from_millis),
            interlock: interlock.iter().map(|s| s.to_string()).collect(),
            on_stop: OnStop::Off,
            restore: false,
        }
    }

    fn model() -> RelayModel {
        let config = GpioConfig {
            relays: vec![
                relay("cooler", 22, &[], None),
                relay("heater", 27, &["cooler"], Some(1_000)),
            ],
            ..Default::default()
        };
        let states = RelayModel::start_states(&config, &HashMap::new(), 0);
        RelayModel::new(config, states)
    }

    #[test]
    fn an_interlock_refuses_either_side_while_the_other_is_on() {
        let mut model = model();
        model.apply("cooler", Op::On, 1).unwrap();
        assert!(
            model
                .apply("heater", Op::On, 2)
                .unwrap_err()
                .contains("interlocked with cooler")
        );
        model.apply("cooler", Op::Off, 3).unwrap();
        model.apply("heater", Op::On, 4).unwrap();
        assert!(
            model.apply("cooler", Op::Toggle, 5).is_err(),
            "the interlock holds both ways"
        );
    }

    #[test]
    fn on_for_restarts_and_max_on_is_a_deadline() {
        let mut model = model();
        let first = model.apply("cooler", Op::OnFor(300), 0).unwrap();
        assert_eq!(first.deadline, Some(300));
        let second = model.apply("cooler", Op::OnFor(300), 240).unwrap();
        assert!(!second.changed);
        assert_eq!(second.deadline, Some(540));
        assert_eq!(model.due("cooler", 300), None, "the first off is stale");
        assert_eq!(model.due("cooler", 540), Some(Cause::OnFor));
        let heater = model.apply("heater", Op::On, 10).unwrap_err();
        assert!(heater.contains("interlocked"));
        model.apply("cooler", Op::Off, 600).unwrap();
        assert_eq!(model.apply("heater", Op::On, 700).unwrap().deadline, Some(1_700));
        assert_eq!(model.due("heater", 1_700), Some(Cause::MaxOn));
        assert!(
            model
                .apply("nothing", Op::On, 0)
                .unwrap_err()
                .contains("no relay `nothing`")
        );
    }

    #[test]
    fn an_explicit_on_replaces_a_pending_on_for() {
        let mut model = model();
        model.apply("cooler", Op::OnFor(300), 0).unwrap();
        model.apply("cooler", Op::On, 100).unwrap();
        assert_eq!(model.due("cooler", 300), None, "stays on");
        assert_eq!(model.state("cooler").map(|s| s.on), Some(true));
        let again = model.apply("cooler", Op::OnFor(300), 200).unwrap();
        assert_eq!(
            again.state.off_due, None,
            "an on_for does not limit an explicit on"
        );
        assert_eq!(model.due("cooler", 500), None);
        model.apply("cooler", Op::Off, 600).unwrap();
        let limited = model.apply("cooler", Op::OnFor(300), 700).unwrap();
        assert_eq!(limited.state.off_due, Some(1_000));
    }
}
