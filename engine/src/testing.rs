//! Helpers for the engine's unit tests: run a future on a fresh, unpinned
//! glommio executor with a small io_uring memory lock.

use std::future::Future;

/// Runs `fut` to completion on a new unbound `LocalExecutor`.
pub(crate) fn run_local<T: 'static>(fut: impl Future<Output = T> + 'static) -> T {
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(256 << 10)
        .make()
        .expect("glommio executor starts (is io_uring available and `ulimit -l` large enough?)")
        .run(fut)
}

/// Lets every ready task on the executor run, a bounded number of rounds, so
/// tests reach quiescence without sleeping on the wall clock.
pub(crate) async fn settle() {
    for _ in 0..256 {
        glommio::executor().yield_task_queue_now().await;
    }
}
