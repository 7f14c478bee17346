//! Timing kernels: the median of timed runs and the throughput it gives. Shared by calibration (`backend`), the
//! GPU executor's tile tuning (`gpu`) and the benchmark (`bench`).

use std::time::Instant;

/// Timing runs per backend in `Compute::calibrate` (the median counts), after one warm-up run.
pub const CALIBRATION_RUNS: usize = 3;

/// Median wall time of `runs` timed calls after one warm-up; `None` if any call reports failure.
pub fn median_secs(runs: usize, mut f: impl FnMut() -> bool) -> Option<f64> {
    if !f() {
        return None;
    }
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        let start = Instant::now();
        if !f() {
            return None;
        }
        times.push(start.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Some(times[times.len() / 2])
}

/// Throughput of `flops` done in `secs`.
pub fn gflops(flops: u64, secs: Option<f64>) -> Option<f64> {
    secs.map(|s| flops as f64 / s.max(1e-9) / 1e9)
}
