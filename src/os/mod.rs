//! What the engine asks of the operating system: systemd's readiness and watchdog notifications, and
//! the kernel's scheduling policy for the threads that must never delay the others; and the health
//! the watchdog vouches for.

pub mod health;
pub mod systemd;
pub mod thread_policy;
