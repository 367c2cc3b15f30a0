//! At start, before anything is re-armed: what the last run left pending (timers, `on_for` offs, the
//! start of a relay's `max_on`, holds) is in the wall time of that run. When the clock now is behind
//! the history's last record, it was set back since, typically a Pi without a real-time clock that
//! booted on the time it last saved and has not synced yet. Taken as it is, each deadline would then
//! lie as far in the future as the clock is behind (hours for a relay's 30 s `on_for`), and keep that
//! distance through the forward jump NTP brings, since a running engine keeps durations' lengths. So
//! the pending times are moved back by the gap: each keeps what was left of it at the last record, as
//! if no time had passed since (the time the engine was down cannot be known on such a clock).
//!
//! A clock at or past the last record is taken as it is: what fell due while the engine was down runs
//! once at start, late.

use super::clock::JUMP_THRESHOLD_MS;
use crate::event::Persisted;

/// Moves `persisted`'s pending times back when `now` is behind `last_recorded` (by more than a
/// jump); returns by how much.
pub fn rebase(persisted: &mut Persisted, now: i64, last_recorded: Option<i64>) -> Option<i64> {
    let behind = last_recorded?.saturating_sub(now);
    if behind < JUMP_THRESHOLD_MS {
        return None;
    }
    let back = |at: &mut i64| *at = at.saturating_sub(behind);
    persisted.timers.iter_mut().for_each(|t| back(&mut t.due));
    for state in persisted.relays.values_mut() {
        back(&mut state.since);
        state.off_due.as_mut().map(back);
    }
    persisted
        .topic_watches
        .iter_mut()
        .for_each(|w| back(&mut w.since));
    Some(behind)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::TimerRecord;
    use crate::relays::model::RelayState;

    fn persisted() -> Persisted {
        let mut persisted = Persisted::default();
        persisted.timers.push(TimerRecord {
            id: 1,
            rule: "r".into(),
            callback: "f".into(),
            captured: None,
            due: 10_300_000,
            position: "1:1".into(),
        });
        persisted.relays.insert(
            "pump".into(),
            RelayState {
                on: true,
                since: 10_000_000,
                off_due: Some(10_030_000),
            },
        );
        persisted
    }

    #[test]
    fn a_clock_behind_the_history_keeps_what_was_left_of_each_deadline() {
        let mut persisted = persisted();
        // Last record 5 s after the pump went on; the clock now shows two hours earlier.
        let now = 10_005_000 - 7_200_000;
        assert_eq!(rebase(&mut persisted, now, Some(10_005_000)), Some(7_200_000));
        let pump = persisted.relays["pump"];
        assert_eq!(pump.off_due, Some(now + 25_000), "25 s of its 30 s left");
        assert_eq!(pump.since, now - 5_000);
        assert_eq!(persisted.timers[0].due, now + 295_000);
    }

    #[test]
    fn a_clock_past_the_history_is_taken_as_it_is() {
        let mut persisted = persisted();
        assert_eq!(rebase(&mut persisted, 20_000_000, Some(10_005_000)), None);
        assert_eq!(
            rebase(&mut persisted, 10_004_500, Some(10_005_000)),
            None,
            "noise"
        );
        assert_eq!(rebase(&mut persisted, 0, None), None, "an empty history");
        assert_eq!(persisted.relays["pump"].off_due, Some(10_030_000));
        assert_eq!(persisted.timers[0].due, 10_300_000);
    }
}
