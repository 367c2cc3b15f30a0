//! Replaying a period of the history through rules on virtual time: the stored messages in arrival
//! order, a page at a time, timers firing at their virtual times in between, and the clock run on to
//! the period's end. What the rules produce is handed to the caller after each step; nothing is
//! performed. `homewright replay` prints it.

use tokio::runtime::Runtime;

use super::Simulation;
use crate::event::{Message, Output};
use crate::store::postgres::read::PgSiteReader;
use crate::store::{HistoryReader, StoreError};

/// Messages read from the history at a time: bounded memory on any history size.
const PAGE: i64 = 5_000;

/// Where the messages come from: the local history, or one site's history on PostgreSQL.
pub enum Source {
    Local(HistoryReader),
    Postgres(PgSiteReader),
}

impl Source {
    /// How many messages [`since`, `until`) holds (for progress).
    pub async fn count_messages(&self, since: i64, until: i64) -> Result<i64, StoreError> {
        match self {
            Source::Local(reader) => reader.count_messages(since, until).await,
            Source::Postgres(reader) => Ok(reader.count_messages(since, until).await?),
        }
    }

    /// An id below the first message of [`since`, `until`), to page from.
    async fn id_before(&self, since: i64, until: i64) -> Result<i64, StoreError> {
        match self {
            Source::Local(reader) => reader.id_before(since).await,
            Source::Postgres(reader) => Ok(reader.id_before(since, until).await?),
        }
    }

    async fn messages_page(
        &self,
        since: i64,
        until: i64,
        after_id: i64,
    ) -> Result<Vec<(i64, Message)>, StoreError> {
        match self {
            Source::Local(reader) => reader.messages_page(since, until, after_id, PAGE).await,
            Source::Postgres(reader) => Ok(reader.messages_page(since, until, after_id, PAGE).await?),
        }
    }
}

/// Delivers the messages `source` holds from `since` to `until` to `sim`, then advances it to `end`.
/// `each` gets the outputs of every step and, when the step was a message, its time (for progress).
pub fn replay<E: From<StoreError>>(
    sim: &mut Simulation,
    source: &Source,
    runtime: &Runtime,
    (since, until, end): (i64, i64, i64),
    mut each: impl FnMut(Vec<Output>, Option<i64>) -> Result<(), E>,
) -> Result<(), E> {
    each(sim.take_outputs(), None)?;
    let mut after_id = runtime.block_on(source.id_before(since, until))?;
    loop {
        let page = runtime.block_on(source.messages_page(since, until, after_id))?;
        let Some((last_id, _)) = page.last() else { break };
        after_id = *last_id;
        for (_, message) in page {
            let at = message.ts;
            sim.deliver(message)?;
            each(sim.take_outputs(), Some(at))?;
        }
    }
    sim.advance_to(end)?;
    each(sim.take_outputs(), None)
}
