//! The process's allocator: the system's, counting the bytes each thread holds, so the rule thread can
//! stop a run that builds more than it may. Rhai's own size limits look at one value at a time and
//! leave map keys out: a map of a hundred 3 MB keys, or a hundred 4 MB strings in as many variables,
//! each passes them, and only the total tells.
//!
//! The count is of the calling thread: bytes allocated here and freed on another thread (a message
//! handed to the next stage) stay counted here, so only a difference over a short span, such as one
//! rule run, means anything.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// The system allocator, counting.
pub struct Counting;

thread_local! {
    /// Bytes allocated minus bytes freed by this thread. Const-initialised and without a destructor,
    /// so reading it never allocates and works while a thread ends.
    static HELD: Cell<isize> = const { Cell::new(0) };
}

fn add(bytes: isize) {
    let _ = HELD.try_with(|held| held.set(held.get().wrapping_add(bytes)));
}

/// Bytes allocated minus bytes freed by the calling thread since it started.
pub fn thread_held() -> isize {
    HELD.try_with(Cell::get).unwrap_or(0)
}

fn signed(bytes: usize) -> isize {
    isize::try_from(bytes).unwrap_or(isize::MAX)
}

// SAFETY: every call is passed unchanged to the system allocator; the counting touches only a
// thread-local integer, which neither allocates nor unwinds.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's layout.
        let pointer = unsafe { System.alloc(layout) };
        if !pointer.is_null() {
            add(signed(layout.size()));
        }
        pointer
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's layout.
        let pointer = unsafe { System.alloc_zeroed(layout) };
        if !pointer.is_null() {
            add(signed(layout.size()));
        }
        pointer
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        // SAFETY: the pointer came from this allocator with this layout.
        unsafe { System.dealloc(pointer, layout) };
        add(-signed(layout.size()));
    }

    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the pointer came from this allocator with this layout.
        let moved = unsafe { System.realloc(pointer, layout, new_size) };
        if !moved.is_null() {
            add(signed(new_size).wrapping_sub(signed(layout.size())));
        }
        moved
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_sees_what_it_holds_and_not_what_others_do() {
        let before = thread_held();
        let block = vec![0_u8; 1 << 20];
        assert!(thread_held() - before >= 1 << 20);
        let other = std::thread::spawn(|| {
            let start = thread_held();
            let big = vec![1_u8; 4 << 20];
            (thread_held() - start, big.len())
        })
        .join()
        .unwrap();
        assert!(other.0 >= 4 << 20);
        assert!(
            thread_held() - before < 2 << 20,
            "the other thread's block is not counted here"
        );
        drop(block);
        assert!(thread_held() - before < 1 << 20);
    }
}
