//! Replaying a period of the history through rules on virtual time: the stored messages in arrival
//! order, a page at a time, timers firing at their virtual times in between, and the clock run on to
//! the period's end. What the rules produce is handed to the caller after each step; nothing is
//! performed. `homewright replay` prints it.

use tokio::runtime::Runtime;

use super::Simulation;
use crate::event::Output;
use crate::store::{HistoryReader, StoreError};

/// Messages read from the history at a time: bounded memory on any history size.
const PAGE: i64 = 5_000;

/// Delivers the messages `reader` holds from `since` to `until` to `sim`, then advances it to `end`.
/// `each` gets the outputs of every step and whether the step was a message (for progress).
pub fn replay<E: From<StoreError>>(
    sim: &mut Simulation,
    reader: &HistoryReader,
    runtime: &Runtime,
    (since, until, end): (i64, i64, i64),
    mut each: impl FnMut(Vec<Output>, bool) -> Result<(), E>,
) -> Result<(), E> {
    each(sim.take_outputs(), false)?;
    let mut after_id = runtime.block_on(reader.id_before(since))?;
    loop {
        let page = runtime.block_on(reader.messages_page(since, until, after_id, PAGE))?;
        let Some((last_id, _)) = page.last() else { break };
        after_id = *last_id;
        for (_, message) in page {
            sim.deliver(message)?;
            each(sim.take_outputs(), true)?;
        }
    }
    sim.advance_to(end)?;
    each(sim.take_outputs(), false)
}
