//! What the engine asks of the operating system: systemd's readiness and watchdog notifications, the
//! kernel's scheduling policy for the threads that must never delay the others, the health the
//! watchdog vouches for, the allocator's return of freed memory, and the count of what each thread
//! holds.

pub mod allocation;
pub mod health;
pub mod memory;
pub mod systemd;
pub mod thread_policy;
