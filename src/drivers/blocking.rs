//! The one way blocking work (hypercalls, fsync, process spawns, host
//! ioctls, disk tools, file reads) leaves the async threads: tokio's
//! blocking pool. The actix System thread carries the store, the actors and
//! the RPC connections; a call that blocks there stalls all of them.
//!
//! Every blocking entry point of the drivers (the hypervisor backends, the
//! VM records) checks, in debug builds, that it runs here or outside any
//! runtime ([`debug_assert_blocking_allowed`]); a source test keeps
//! `spawn_blocking` out of every other file.

use std::cell::Cell;

/// The blocking pool could not run the work: the runtime is shutting down,
/// or the work panicked.
#[derive(Debug, thiserror::Error)]
#[error("the blocking pool did not finish the work: {0}")]
pub struct PoolError(String);

thread_local! {
    /// Set while this thread runs work handed to [`run`].
    static IN_POOL: Cell<bool> = const { Cell::new(false) };
}

/// Marks the current thread as running pooled work while it lives (also
/// when the work panics).
struct PoolThread;

impl PoolThread {
    fn enter() -> Self {
        IN_POOL.with(|p| p.set(true));
        PoolThread
    }
}

impl Drop for PoolThread {
    fn drop(&mut self) {
        IN_POOL.with(|p| p.set(false));
    }
}

/// Runs `work` on the blocking pool and waits for it.
pub async fn run<T, F>(work: F) -> Result<T, PoolError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    tokio::task::spawn_blocking(move || {
        let _pool = PoolThread::enter();
        work()
    })
    .await
    .map_err(|e| PoolError(e.to_string()))
}

/// Whether blocking here is fine: on the blocking pool (through [`run`]),
/// or on a thread that runs no async runtime (a test, a tool).
pub fn blocking_allowed() -> bool {
    IN_POOL.with(Cell::get) || tokio::runtime::Handle::try_current().is_err()
}

/// Debug builds stop at a blocking call made on an async thread: the bug
/// is the caller's, and every test that drives the daemon would show it.
#[track_caller]
pub fn debug_assert_blocking_allowed(what: &str) {
    debug_assert!(
        blocking_allowed(),
        "{what} blocks: it must run through drivers::blocking::run"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outside_a_runtime_blocking_is_allowed() {
        assert!(blocking_allowed());
    }

    #[tokio::test]
    async fn on_the_runtime_only_the_pool_may_block() {
        assert!(!blocking_allowed());
        assert!(run(blocking_allowed).await.unwrap());
        assert!(!blocking_allowed());
    }
}
