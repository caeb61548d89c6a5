//! CPU-bound work of the adapters (parsing and normalising an upstream's answer, tens of
//! microseconds for a typical answer, milliseconds for a large one) runs off the async runtime,
//! on Tokio's blocking threads, at most as many at once as the machine has cores.
//!
//! Why: answers come back in waves (every call of a wave started together, a provider answers
//! in about the same time), and parsed on the runtime's own threads they queue the work the
//! node needs to keep calls in flight (claiming the next tasks, sending their requests, reading
//! the next answers) behind thousands of answers waiting to be parsed. On blocking threads, the
//! runtime's threads keep running that short work while the operating system shares the cores
//! between the two. The queue of answers waiting to be parsed is bounded by the calls in
//! flight, as before.

use std::sync::OnceLock;

use tokio::sync::Semaphore;

/// Most parses at once: the machine's cores (their number is read once).
fn permits() -> &'static Semaphore {
    static PERMITS: OnceLock<Semaphore> = OnceLock::new();
    PERMITS.get_or_init(|| {
        Semaphore::new(std::thread::available_parallelism().map_or(2, std::num::NonZero::get))
    })
}

/// Runs `f` on one of Tokio's blocking threads once a core is free for it, and returns what it
/// returns. A panic in `f` resumes in the caller, as if `f` had run here (the dispatcher catches
/// it).
///
/// Tokio's blocking threads rather than a pool of our own: two pools of one thread per core
/// (one queue behind a lock, one queue per thread) used 20–40% less CPU per answer but held
/// 30–100 MB more at 5,000 upstream calls in flight and completed 91–94% of the ideal instead
/// of 95% (docs/PERFORMANCE.md, "Parsing off the runtime").
pub(crate) async fn off_runtime<T, F>(f: F) -> T
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    // The semaphore is never closed, so acquiring only waits. The permit goes with the work:
    // a caller that gives up waiting (a timeout) does not free it before the work ends.
    let Ok(permit) = permits().acquire().await else {
        return f();
    };
    let work = move || {
        let out = f();
        drop(permit);
        out
    };
    match tokio::task::spawn_blocking(work).await {
        Ok(out) => out,
        Err(e) => match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            // Cancelled: only when the runtime shuts down, and then this task goes too.
            Err(e) => panic!("an adapter's parse was cancelled: {e}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_work_runs_off_the_runtime_and_returns_its_value() {
        let here = std::thread::current().id();
        let (value, there) = off_runtime(|| (41 + 1, std::thread::current().id())).await;
        assert_eq!(value, 42);
        assert_ne!(here, there);
    }

    #[tokio::test]
    async fn a_panic_reaches_the_caller() {
        let caught = tokio::spawn(off_runtime(|| -> u8 { panic!("bad answer") })).await;
        let panic = caught.expect_err("the panic must come back").into_panic();
        assert_eq!(panic.downcast_ref::<&str>(), Some(&"bad answer"));
    }

    #[tokio::test]
    async fn no_more_run_at_once_than_there_are_cores() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let runs = (0..cores * 4).map(|_| {
            let (now, most) = (now.clone(), most.clone());
            tokio::spawn(off_runtime(move || {
                let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(n, Ordering::SeqCst);
                std::thread::sleep(std::time::Duration::from_millis(5));
                now.fetch_sub(1, Ordering::SeqCst);
            }))
        });
        for r in runs.collect::<Vec<_>>() {
            r.await.expect("ran");
        }
        let most = most.load(Ordering::SeqCst);
        assert!(
            (1..=cores).contains(&most),
            "{most} at once with {cores} cores"
        );
    }
}
