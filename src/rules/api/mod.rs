//! The functions rules call, grouped by domain. Each binding reports a misuse as a runtime error at
//! the caller's position, so the owner sees `rules/NAME.rhai:LINE:COL: what was wrong`.

mod actions;
mod clock;
mod held;
mod json;
mod message;
mod pacing;
mod relays;
mod state;
mod timers;
mod triggers;

use std::sync::Arc;

use rhai::{Engine, EvalAltResult, NativeCallContext};

pub use message::RuleMessage;

use super::engine::Deadline;
use super::host::Host;

/// Registers every rule function on `engine`.
pub fn register(engine: &mut Engine, host: &Arc<Host>, deadline: &Arc<Deadline>) {
    message::register(engine);
    triggers::register(engine, host);
    actions::register(engine, host);
    state::register(engine, host, deadline);
    timers::register(engine, host);
    relays::register(engine, host);
    clock::register(engine, host);
    held::register(engine, host);
    pacing::register(engine, host);
}

/// A runtime error at the position of the call being made.
fn error_at(ctx: &NativeCallContext, message: impl Into<String>) -> Box<EvalAltResult> {
    Box::new(EvalAltResult::ErrorRuntime(
        message.into().into(),
        ctx.call_position(),
    ))
}
