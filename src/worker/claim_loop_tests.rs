//! The claim loop's scheduling invariants, on Tokio's paused clock and a manual wall clock: no
//! test here waits for real time.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::AtomicU32;

use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::*;

/// What the fake store saw and what its items did.
#[derive(Default)]
struct Stats {
    /// `(ms since the test started, asked, got)` of every claim.
    claims: Mutex<Vec<(u64, usize, usize)>>,
    running: AtomicUsize,
    most_running: AtomicUsize,
    done: AtomicUsize,
}

struct Fake {
    wake: Notify,
    clock: Clock,
    start: Instant,
    /// Claimable now.
    ready: Mutex<VecDeque<u32>>,
    /// Due later: `(due wall-clock ms, item)`.
    later: Mutex<Option<(i64, u32)>>,
    /// Claims that fail before the next one succeeds.
    failing: AtomicU32,
    failures_told: AtomicU32,
    /// Items run until they get a permit.
    release: Semaphore,
    /// The item whose run panics (`u32::MAX`: none).
    panicking: AtomicU32,
    stats: Stats,
}

impl Fake {
    fn new(clock: Clock, ready: impl IntoIterator<Item = u32>, gated: bool) -> Arc<Fake> {
        Arc::new(Fake {
            wake: Notify::new(),
            clock,
            start: Instant::now(),
            ready: Mutex::new(ready.into_iter().collect()),
            later: Mutex::new(None),
            failing: AtomicU32::new(0),
            failures_told: AtomicU32::new(0),
            release: Semaphore::new(if gated { 0 } else { 1 << 20 }),
            panicking: AtomicU32::new(u32::MAX),
            stats: Stats::default(),
        })
    }

    fn claims(&self) -> Vec<(u64, usize, usize)> {
        self.stats.claims.lock().expect("lock").clone()
    }
}

impl Source for Fake {
    type Item = u32;
    type Error = String;

    fn wake(&self) -> &Notify {
        &self.wake
    }

    async fn claim(&self, n: usize) -> Result<Vec<u32>, String> {
        let at = self.start.elapsed().as_millis() as u64;
        if self
            .failing
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |f| f.checked_sub(1))
            .is_ok()
        {
            self.stats.claims.lock().expect("lock").push((at, n, 0));
            return Err("unavailable".into());
        }
        let mut ready = self.ready.lock().expect("lock");
        let mut later = self.later.lock().expect("lock");
        if let Some((due, item)) = *later
            && due <= self.clock.now_ms()
        {
            ready.push_back(item);
            *later = None;
        }
        let take = n.min(ready.len());
        let items: Vec<u32> = ready.drain(..take).collect();
        self.stats
            .claims
            .lock()
            .expect("lock")
            .push((at, n, items.len()));
        Ok(items)
    }

    async fn run(&self, item: u32) {
        if item == self.panicking.load(Ordering::SeqCst) {
            panic!("item {item} panics (test)");
        }
        let stats = &self.stats;
        let now = stats.running.fetch_add(1, Ordering::SeqCst) + 1;
        stats.most_running.fetch_max(now, Ordering::SeqCst);
        self.release.acquire().await.expect("open").forget();
        stats.running.fetch_sub(1, Ordering::SeqCst);
        stats.done.fetch_add(1, Ordering::SeqCst);
    }

    fn next_due_ms(&self) -> Option<i64> {
        self.later.lock().expect("lock").map(|(due, _)| due)
    }

    fn claim_failed(&self, _error: &String, failures: u32) {
        self.failures_told.store(failures, Ordering::SeqCst);
    }
}

/// Never holds; asks for at most `batch` at once.
struct Open {
    batch: usize,
    started: usize,
}

impl Pacer for Open {
    fn hold(&mut self) -> Option<impl Future<Output = ()> + Send + '_> {
        None::<std::future::Ready<()>>
    }
    fn batch(&mut self, free: usize) -> usize {
        free.min(self.batch)
    }
    fn started(&mut self, n: usize) {
        self.started += n;
    }
}

fn open() -> Open {
    Open {
        batch: usize::MAX,
        started: 0,
    }
}

fn config(max_in_flight: usize, clock: &Clock) -> LoopConfig {
    LoopConfig {
        max_in_flight,
        claim_backoff: Doubling {
            first: Duration::from_millis(100),
            max: Duration::from_millis(3_200),
        },
        clock: clock.clone(),
    }
}

/// Lets every task that can run, run (the paused clock does not move).
async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn no_more_than_max_in_flight_run_and_a_finished_item_frees_its_place() {
    let clock = Clock::manual(0);
    let fake = Fake::new(clock.clone(), 0..5, true);
    let cancel = CancellationToken::new();
    let looping = tokio::spawn(run(fake.clone(), open(), config(3, &clock), cancel.clone()));
    settle().await;
    assert_eq!(
        fake.claims(),
        [(0, 3, 3)],
        "claims only what it has places for"
    );
    assert_eq!(fake.stats.running.load(Ordering::SeqCst), 3);
    // One ends: its place is claimed again at once, not after an idle minute.
    fake.release.add_permits(1);
    settle().await;
    assert_eq!(fake.claims(), [(0, 3, 3), (0, 1, 1)]);
    fake.release.add_permits(10);
    settle().await;
    assert_eq!(fake.stats.done.load(Ordering::SeqCst), 5);
    assert_eq!(fake.stats.most_running.load(Ordering::SeqCst), 3);
    assert!(fake.claims().iter().all(|&(_, asked, _)| asked <= 3));
    cancel.cancel();
    looping.await.expect("the loop ends");
}

#[tokio::test(start_paused = true)]
async fn a_run_that_panics_frees_its_place_and_the_next_item_runs() {
    let clock = Clock::manual(0);
    let fake = Fake::new(clock.clone(), 0..3, false);
    fake.panicking.store(0, Ordering::SeqCst);
    let cancel = CancellationToken::new();
    let looping = tokio::spawn(run(fake.clone(), open(), config(1, &clock), cancel.clone()));
    settle().await;
    assert_eq!(
        fake.stats.done.load(Ordering::SeqCst),
        2,
        "the items after the panicking one ran, one place at a time: {:?}",
        fake.claims()
    );
    cancel.cancel();
    looping.await.expect("the loop ends");
}

#[tokio::test(start_paused = true)]
async fn a_full_claim_is_followed_by_another_and_the_pacer_trims_batches() {
    let clock = Clock::manual(0);
    let fake = Fake::new(clock.clone(), 0..5, false);
    let cancel = CancellationToken::new();
    let pacer = Open {
        batch: 2,
        started: 0,
    };
    let looping = tokio::spawn(run(
        fake.clone(),
        pacer,
        config(100, &clock),
        cancel.clone(),
    ));
    settle().await;
    // Asks for 2 (the pacer's batch) while it gets 2; the items that end free their places,
    // which makes the loop look again.
    assert_eq!(fake.claims()[..3], [(0, 2, 2), (0, 2, 2), (0, 2, 1)]);
    assert!(fake.claims()[3..].iter().all(|&c| c == (0, 2, 0)));
    assert_eq!(fake.stats.done.load(Ordering::SeqCst), 5);
    cancel.cancel();
    looping.await.expect("the loop ends");
}

#[tokio::test(start_paused = true)]
async fn the_loop_sleeps_until_the_next_due_time_read_from_the_wall_clock() {
    let clock = Clock::manual(1_000_000);
    let fake = Fake::new(clock.clone(), [], false);
    *fake.later.lock().expect("lock") = Some((1_005_000, 7));
    let cancel = CancellationToken::new();
    let looping = tokio::spawn(run(
        fake.clone(),
        open(),
        config(10, &clock),
        cancel.clone(),
    ));
    settle().await;
    assert_eq!(fake.claims(), [(0, 10, 0)]);
    tokio::time::sleep(Duration::from_millis(4_999)).await;
    settle().await;
    assert_eq!(fake.claims().len(), 1, "not before the due time");
    tokio::time::sleep(Duration::from_millis(1)).await;
    settle().await;
    // The wall clock did not move (it is manual): still 5 s to go.
    assert_eq!(fake.claims(), [(0, 10, 0), (5_000, 10, 0)]);
    // The wall clock jumps 4 s: a wake-up makes the loop look again and sleep 1 s only.
    clock.advance(4_000);
    fake.wake.notify_one();
    settle().await;
    assert_eq!(fake.claims().len(), 3);
    tokio::time::sleep(Duration::from_millis(999)).await;
    settle().await;
    assert_eq!(fake.claims().len(), 3);
    clock.advance(1_000);
    tokio::time::sleep(Duration::from_millis(1)).await;
    settle().await;
    assert_eq!(
        fake.claims()[3],
        (6_000, 10, 1),
        "claimed when due by the clock"
    );
    assert_eq!(fake.stats.done.load(Ordering::SeqCst), 1);
    // Nothing known to be due: an idle minute, then a look.
    let looks = fake.claims().len();
    tokio::time::sleep(MAX_IDLE - Duration::from_millis(1)).await;
    settle().await;
    assert_eq!(fake.claims().len(), looks);
    tokio::time::sleep(Duration::from_millis(1)).await;
    settle().await;
    assert_eq!(fake.claims().len(), looks + 1);
    cancel.cancel();
    looping.await.expect("the loop ends");
}

#[tokio::test(start_paused = true)]
async fn failed_claims_back_off_doubling_and_a_success_resets_it() {
    let clock = Clock::manual(0);
    let fake = Fake::new(clock.clone(), 0..1, false);
    fake.failing.store(3, Ordering::SeqCst);
    let cancel = CancellationToken::new();
    let looping = tokio::spawn(run(
        fake.clone(),
        open(),
        config(10, &clock),
        cancel.clone(),
    ));
    tokio::time::sleep(Duration::from_secs(1)).await;
    settle().await;
    let at: Vec<u64> = fake.claims().iter().map(|c| c.0).collect();
    assert_eq!(at[..4], [0, 100, 300, 700], "100, 200 then 400 ms apart");
    assert!(
        at[4..].iter().all(|&t| t == 700),
        "the item's end: another look"
    );
    assert_eq!(fake.failures_told.load(Ordering::SeqCst), 3);
    assert_eq!(fake.stats.done.load(Ordering::SeqCst), 1);
    // A new streak starts from the first wait again.
    fake.failing.store(1, Ordering::SeqCst);
    fake.wake.notify_one();
    settle().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    settle().await;
    let at: Vec<u64> = fake
        .claims()
        .iter()
        .map(|c| c.0)
        .filter(|&t| t >= 1_000)
        .collect();
    assert_eq!(at, [1_000, 1_100]);
    assert_eq!(fake.failures_told.load(Ordering::SeqCst), 1);
    cancel.cancel();
    looping.await.expect("the loop ends");
}

#[tokio::test(start_paused = true)]
async fn cancelling_claims_nothing_more_and_waits_for_running_items() {
    let clock = Clock::manual(0);
    let fake = Fake::new(clock.clone(), 0..2, true);
    let cancel = CancellationToken::new();
    let looping = tokio::spawn(run(
        fake.clone(),
        open(),
        config(10, &clock),
        cancel.clone(),
    ));
    settle().await;
    assert_eq!(fake.stats.running.load(Ordering::SeqCst), 2);
    cancel.cancel();
    fake.ready.lock().expect("lock").push_back(9);
    fake.wake.notify_one();
    settle().await;
    assert!(!looping.is_finished(), "two items still run");
    fake.release.add_permits(2);
    looping.await.expect("the loop ends");
    assert_eq!(fake.stats.done.load(Ordering::SeqCst), 2);
    assert_eq!(fake.claims().len(), 1, "nothing claimed after the cancel");
}

/// Holds while `held` is set, looking again every 10 ms.
struct Holding {
    held: Arc<std::sync::atomic::AtomicBool>,
}

impl Pacer for Holding {
    fn hold(&mut self) -> Option<impl Future<Output = ()> + Send + '_> {
        self.held
            .load(Ordering::SeqCst)
            .then(|| tokio::time::sleep(Duration::from_millis(10)))
    }
}

#[tokio::test(start_paused = true)]
async fn a_held_loop_claims_nothing_until_released() {
    let clock = Clock::manual(0);
    let fake = Fake::new(clock.clone(), 0..1, false);
    let held = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let cancel = CancellationToken::new();
    let pacer = Holding { held: held.clone() };
    let looping = tokio::spawn(run(fake.clone(), pacer, config(10, &clock), cancel.clone()));
    tokio::time::sleep(Duration::from_millis(95)).await;
    settle().await;
    assert!(fake.claims().is_empty());
    held.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(10)).await;
    settle().await;
    assert_eq!(fake.claims()[0], (100, 10, 1));
    assert!(fake.claims()[1..].iter().all(|&c| c == (100, 10, 0)));
    cancel.cancel();
    looping.await.expect("the loop ends");
}
