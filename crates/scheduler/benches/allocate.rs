//! Allocation decisions per second with 100,000 registered nodes (target: 1,000,000/s on one core; under 100,000/s
//! is a defect). Run with `cargo bench -p neurolov-scheduler`.

use divan::Bencher;
use neurolov_scheduler::{Features, NodeInfo, Requirements, Scheduler, Weights};

fn main() {
    divan::main();
}

const NODES: u64 = 100_000;

/// 100k nodes over 20k operators and 8 feature classes, with varied speed, reliability, price and memory.
fn pool() -> Scheduler {
    let mut rng = fastrand::Rng::with_seed(42);
    let mut s = Scheduler::new(Weights::default());
    for k in 0..NODES {
        let info = NodeInfo {
            operator: k / 5,
            eligible: rng.u8(..) < 240,
            verified_gflops: rng.f64() * 60_000.0 + 100.0,
            reliability: rng.f64(),
            price_nano_per_gflop: rng.u64(1..1000),
            features: Features(rng.u64(0..8)),
            memory_bytes: rng.u64(1..80) << 30,
            slots: rng.u32(1..8),
            stake_share: if rng.bool() { rng.f64() } else { 0.0 },
        };
        s.upsert(k, info).expect("valid node");
    }
    s
}

/// One task, one replica, loose filters; the slot is given back so the pool stays the same size.
#[divan::bench]
fn allocate_and_release(bencher: Bencher) {
    let mut s = pool();
    let req = Requirements { work_mflop: 1000, ..Requirements::default() };
    bencher.counter(divan::counter::ItemsCount::new(1usize)).bench_local(|| {
        let a = s.allocate(divan::black_box(&req)).expect("allocates");
        s.release(a.placements[0].node).expect("known node");
    });
}

/// Steady state under load: 200,000 tasks in flight (about half of all slots busy, so the best nodes are full and
/// leave the index); each decision places one task and the oldest in-flight task finishes.
#[divan::bench]
fn allocate_under_load(bencher: Bencher) {
    let mut s = pool();
    let req = Requirements { work_mflop: 1000, ..Requirements::default() };
    let mut in_flight = std::collections::VecDeque::new();
    for _ in 0..200_000 {
        in_flight.push_back(s.allocate(&req).expect("capacity").placements[0].node);
    }
    bencher.counter(divan::counter::ItemsCount::new(1usize)).bench_local(|| {
        let a = s.allocate(divan::black_box(&req)).expect("allocates");
        in_flight.push_back(a.placements[0].node);
        if let Some(done) = in_flight.pop_front() {
            s.release(done).expect("known node");
        }
    });
}

/// Three replicas on distinct operators with feature, memory, reliability and price filters.
#[divan::bench]
fn allocate_three_replicas_with_filters(bencher: Bencher) {
    let mut s = pool();
    let req = Requirements {
        features: Features(0b010),
        min_memory_bytes: 16 << 30,
        min_reliability: 0.5,
        max_price_nano_per_gflop: 500,
        replicas: 3,
        work_mflop: 1000,
        exclude_operators: Vec::new(),
    };
    bencher.counter(divan::counter::ItemsCount::new(1usize)).bench_local(|| {
        let a = s.allocate(divan::black_box(&req)).expect("allocates");
        for p in &a.placements {
            s.release(p.node).expect("known node");
        }
    });
}

/// A metric update of a node that does not hold a pool maximum (the common case: verified work changes its
/// reliability).
#[divan::bench]
fn update_node_metrics(bencher: Bencher) {
    let mut s = pool();
    let mut rng = fastrand::Rng::with_seed(7);
    bencher.bench_local(|| {
        let k = rng.u64(0..NODES);
        let mut info = s.info(k).cloned().expect("known node");
        info.reliability = rng.f64();
        s.upsert(k, info).expect("valid");
    });
}

/// Rescoring all 100k nodes: what a move of a pool maximum costs.
#[divan::bench(sample_count = 10)]
fn rescore_everything(bencher: Bencher) {
    let mut s = pool();
    bencher.bench_local(|| s.set_weights(Weights::default()));
}
