//! How freed memory goes back to the system.
//!
//! glibc serves an allocation of 128 KiB or more with its own mapping, returned to the kernel when
//! freed, but raises that threshold to the size of each such block freed (up to 32 MiB). After one
//! large message the next ones come from the heap, whose free space glibc keeps: with the embedded
//! broker, 200 messages of 1 MB left the engine at 40 MB of RSS for good. A fixed threshold keeps
//! every large buffer (a message, a batch) a mapping of its own that goes back when freed.

/// Allocations from this size up get their own mapping, returned to the kernel when freed.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 128 * 1024;

/// Fixes the allocator's mapping threshold (see the module doc). Call before the threads start.
pub fn return_large_blocks() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called before the engine's threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}
