//! A spinning helper thread for the products of one decoding step. A step is hundreds of products of ~10–50 µs
//! each; handing each to a sleeping thread pool costs a wake-up (a futex and a scheduler round trip) per product,
//! which measured ~25 % of a SmolLM2 step with rayon. Here a helper keeps polling for the next job for a short
//! while after each one (as OpenMP's barriers do) and parks only when none comes, so a step's hand-offs are a few
//! atomic operations. Jobs own their data (`Arc`s), so no lifetime is erased.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle, Thread};
use std::time::{Duration, Instant};

/// How long an idle helper polls for the next job before it parks: longer than the serial stretch between two
/// products of a step (norms, RoPE, attention), far shorter than a person's wait between requests.
pub const SPIN: Duration = Duration::from_millis(2);

type Job = Box<dyn FnOnce() -> Vec<f32> + Send>;

const IDLE: u8 = 0;
const POSTED: u8 = 1;
const DONE: u8 = 2;
const STOP: u8 = 3;

/// The slot one job passes through.
struct Slot {
    state: AtomicU8,
    job: Mutex<Option<Job>>,
    result: Mutex<Option<Vec<f32>>>,
}

/// One helper thread and its slot.
pub struct SpinPool {
    slot: Arc<Slot>,
    helper: Thread,
    handle: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for SpinPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SpinPool")
    }
}

impl SpinPool {
    /// A pool with its helper thread, or `None` when the machine has one CPU (or the thread cannot start).
    pub fn new() -> Option<SpinPool> {
        if thread::available_parallelism().map_or(1, usize::from) < 2 {
            return None;
        }
        let slot = Arc::new(Slot { state: AtomicU8::new(IDLE), job: Mutex::new(None), result: Mutex::new(None) });
        let theirs = Arc::clone(&slot);
        let handle = thread::Builder::new().name("neurolov-matvec".into()).spawn(move || helper(&theirs)).ok()?;
        Some(SpinPool { helper: handle.thread().clone(), slot, handle: Some(handle) })
    }

    /// Runs `theirs` on the helper and `mine` here, and returns both results.
    pub fn join(&self, theirs: Job, mine: impl FnOnce() -> Vec<f32>) -> (Vec<f32>, Vec<f32>) {
        debug_assert_eq!(self.slot.state.load(Ordering::Acquire), IDLE, "one job at a time");
        if let Ok(mut job) = self.slot.job.lock() {
            *job = Some(theirs);
        }
        self.slot.state.store(POSTED, Ordering::Release);
        self.helper.unpark();
        let own = mine();
        while self.slot.state.load(Ordering::Acquire) != DONE {
            std::hint::spin_loop();
        }
        let other = self.slot.result.lock().ok().and_then(|mut r| r.take()).unwrap_or_default();
        self.slot.state.store(IDLE, Ordering::Release);
        (other, own)
    }
}

impl Drop for SpinPool {
    fn drop(&mut self) {
        self.slot.state.store(STOP, Ordering::Release);
        self.helper.unpark();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn helper(slot: &Slot) {
    let mut idle_since = Instant::now();
    loop {
        match slot.state.load(Ordering::Acquire) {
            POSTED => {
                let job = slot.job.lock().ok().and_then(|mut j| j.take());
                let out = job.map(|j| j()).unwrap_or_default();
                if let Ok(mut r) = slot.result.lock() {
                    *r = Some(out);
                }
                slot.state.store(DONE, Ordering::Release);
                idle_since = Instant::now();
            }
            STOP => return,
            _ if idle_since.elapsed() < SPIN => std::hint::spin_loop(),
            // Parked until the next job's unpark (a stale unpark only makes this loop look once more).
            _ => thread::park_timeout(Duration::from_millis(100)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_run_on_both_sides_many_times_and_after_a_park() {
        let Some(pool) = SpinPool::new() else { return };
        for i in 0..1000 {
            let (a, b) = pool.join(Box::new(move || vec![i as f32]), || vec![-(i as f32)]);
            assert_eq!((a, b), (vec![i as f32], vec![-(i as f32)]));
        }
        thread::sleep(SPIN * 3);
        assert_eq!(pool.join(Box::new(|| vec![7.0]), Vec::new), (vec![7.0], vec![]));
    }
}
