//! The allocator a long-running Gatehouse server runs on: jemalloc, with
//! its background threads on, so memory freed after a burst (a thousand
//! slow connections, say) goes back to the system within seconds instead
//! of staying with the process. glibc's allocator kept it: freed small
//! blocks between live ones can never be trimmed.
//!
//! A binary opts in with
//! `#[global_allocator] static A: gatehouse_service_kit::alloc::Jemalloc = ...;`
//! and calls [`return_freed_memory`] at start.

pub use tikv_jemallocator::Jemalloc;

/// Starts jemalloc's background threads, which purge freed pages on the
/// decay schedule (about 10 s) even while the process is idle.
pub fn return_freed_memory() {
    if let Err(e) = tikv_jemalloc_ctl::background_thread::write(true) {
        tracing::warn!(error = %e, "cannot start the allocator's background purging");
    }
}
