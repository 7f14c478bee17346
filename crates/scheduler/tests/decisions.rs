//! The scheduler's decisions on small, hand-built pools: the score's weights, each filter and the explanation a
//! skipped node gets, replicas on distinct operators, and the estimate and cost of an allocation.

#![allow(clippy::unwrap_used)] // Test helpers unwrap: a panic is the failure report.

use neurolov_scheduler::{
    Features, NodeInfo, Requirements, Scheduler, SchedulerError, Verdict, Weights, WorkHistory, reliability,
};

const GPU_F16: Features = Features(0b01);

fn node(operator: u64, gflops: f64, reliability: f64, price: u64) -> NodeInfo {
    NodeInfo {
        operator,
        eligible: true,
        verified_gflops: gflops,
        reliability,
        price_nano_per_gflop: price,
        features: Features::NONE,
        memory_bytes: 8 << 30,
        slots: 1,
        stake_share: 0.0,
    }
}

fn pool(nodes: &[(u64, NodeInfo)]) -> Scheduler {
    let mut s = Scheduler::new(Weights::default());
    for (k, info) in nodes {
        s.upsert(*k, info.clone()).unwrap();
    }
    s
}

#[test]
fn the_whitepaper_score() {
    // Node 1: fastest (1.0), reliability 0.5, cost efficiency 100/10 = 10 (0.4 of the best).
    // Node 2: half as fast (0.5), reliability 1.0, cost efficiency 50/2 = 25 (the best, 1.0).
    let s = pool(&[(1, node(1, 100.0, 0.5, 10)), (2, node(2, 50.0, 1.0, 2))]);
    let s1 = 0.4 * 1.0 + 0.3 * 0.5 + 0.3 * (10.0 / 25.0);
    let s2 = 0.4 * 0.5 + 0.3 * 1.0 + 0.3 * 1.0;
    assert!((s.score(1).unwrap() - s1).abs() < 1e-12);
    assert!((s.score(2).unwrap() - s2).abs() < 1e-12);
    let mut s = s;
    assert_eq!(s.allocate(&Requirements::default()).unwrap().placements[0].node, 2);
    // Governance moves all weight to performance: now the fast node wins.
    s.set_weights(Weights::new(1.0, 0.0, 0.0).unwrap());
    s.release(2).unwrap();
    assert_eq!(s.allocate(&Requirements::default()).unwrap().placements[0].node, 1);
}

#[test]
fn stake_raises_priority_among_comparable_nodes_only() {
    // Identical nodes: the staked operator's wins, by exactly the stake priority.
    let mut s = pool(&[(1, node(1, 50.0, 0.9, 2)), (2, NodeInfo { stake_share: 1.0, ..node(2, 50.0, 0.9, 2) })]);
    let base = 0.4 + 0.3 * 0.9 + 0.3;
    assert!((s.score(2).unwrap() - base * 1.1).abs() < 1e-12);
    assert_eq!(s.allocate(&Requirements::default()).unwrap().placements[0].node, 2);
    // A much better unstaked node still beats a staked one.
    let mut s2 = pool(&[(1, node(1, 100.0, 0.99, 1)), (2, NodeInfo { stake_share: 1.0, ..node(2, 10.0, 0.5, 5) })]);
    assert_eq!(s2.allocate(&Requirements::default()).unwrap().placements[0].node, 1);
    // Out-of-range shares and priorities are refused.
    assert!(matches!(
        s.upsert(3, NodeInfo { stake_share: 1.5, ..node(3, 1.0, 0.5, 1) }),
        Err(SchedulerError::BadStakeShare { .. })
    ));
    assert!(matches!(Weights::default().with_stake_priority(-0.1), Err(SchedulerError::BadStakePriority(_))));
    s.set_weights(Weights::default().with_stake_priority(0.0).unwrap());
    assert!((s.score(2).unwrap() - base).abs() < 1e-12);
}

#[test]
fn weights_are_validated() {
    for (p, r, c) in [(0.5, 0.5, 0.5), (-0.1, 0.6, 0.5), (f64::NAN, 0.5, 0.5), (1.0, 0.0, 0.1)] {
        assert!(matches!(Weights::new(p, r, c), Err(SchedulerError::BadWeights { .. })), "{p} {r} {c}");
    }
    assert!(Weights::new(0.2, 0.3, 0.5).is_ok());
}

#[test]
fn bad_node_metrics_are_refused_and_change_nothing() {
    let mut s = pool(&[(1, node(1, 10.0, 0.9, 1))]);
    let before = s.score(1);
    assert!(matches!(s.upsert(1, node(1, f64::NAN, 0.9, 1)), Err(SchedulerError::BadMetric { .. })));
    assert!(matches!(s.upsert(1, node(1, 10.0, 1.5, 1)), Err(SchedulerError::BadReliability { .. })));
    assert!(matches!(
        s.upsert(1, NodeInfo { slots: 1 << 20, ..node(1, 1.0, 0.5, 1) }),
        Err(SchedulerError::TooManySlots { .. })
    ));
    assert_eq!(s.score(1), before);
}

/// Each case: a pool, a request, the node asked about, and the verdict it must get.
#[test]
fn every_skipped_node_is_told_why() {
    let mut busy = pool(&[(1, node(1, 10.0, 0.9, 1))]);
    busy.allocate(&Requirements::default()).unwrap();
    let cases: Vec<(&str, Scheduler, Requirements, u64, Verdict)> = vec![
        ("unknown", pool(&[]), Requirements::default(), 9, Verdict::Unknown),
        (
            "offline",
            pool(&[(1, NodeInfo { eligible: false, ..node(1, 10.0, 0.9, 1) })]),
            Requirements::default(),
            1,
            Verdict::NotEligible,
        ),
        (
            "features",
            pool(&[(1, node(1, 10.0, 0.9, 1))]),
            Requirements { features: GPU_F16, ..Requirements::default() },
            1,
            Verdict::MissingFeatures(GPU_F16),
        ),
        (
            "memory",
            pool(&[(1, node(1, 10.0, 0.9, 1))]),
            Requirements { min_memory_bytes: 16 << 30, ..Requirements::default() },
            1,
            Verdict::Memory { has: 8 << 30, needs: 16 << 30 },
        ),
        (
            "reliability",
            pool(&[(1, node(1, 10.0, 0.5, 1))]),
            Requirements { min_reliability: 0.8, ..Requirements::default() },
            1,
            Verdict::Reliability { has: 0.5, needs: 0.8 },
        ),
        (
            "price",
            pool(&[(1, node(1, 10.0, 0.9, 7))]),
            Requirements { max_price_nano_per_gflop: 5, ..Requirements::default() },
            1,
            Verdict::Price { asks: 7, max: 5 },
        ),
        (
            "operator excluded",
            pool(&[(1, node(4, 10.0, 0.9, 1))]),
            Requirements { exclude_operators: vec![4], ..Requirements::default() },
            1,
            Verdict::OperatorExcluded(4),
        ),
        ("busy", busy, Requirements::default(), 1, Verdict::Busy),
        (
            "outscored",
            pool(&[(1, node(1, 10.0, 0.9, 1)), (2, node(2, 5.0, 0.9, 1))]),
            Requirements::default(),
            2,
            Verdict::Outscored { score: 0.4 * 0.5 + 0.3 * 0.9 + 0.3 * 0.5, cutoff: 0.4 + 0.3 * 0.9 + 0.3 },
        ),
        (
            "chosen",
            pool(&[(1, node(1, 10.0, 0.9, 1)), (2, node(2, 5.0, 0.9, 1))]),
            Requirements::default(),
            1,
            Verdict::Chosen { score: 0.4 + 0.3 * 0.9 + 0.3 },
        ),
    ];
    for (name, s, req, node, want) in cases {
        let got = s.explain(node, &req);
        assert!(same(&got, &want), "{name}: got {got:?}, want {want:?}");
    }
}

/// Verdicts equal up to float rounding in their scores.
fn same(a: &Verdict, b: &Verdict) -> bool {
    let close = |x: f64, y: f64| (x - y).abs() < 1e-12;
    match (a, b) {
        (Verdict::Chosen { score: x }, Verdict::Chosen { score: y }) => close(*x, *y),
        (Verdict::Outscored { score: x, cutoff: cx }, Verdict::Outscored { score: y, cutoff: cy }) => {
            close(*x, *y) && close(*cx, *cy)
        }
        _ => a == b,
    }
}

#[test]
fn replicas_go_to_distinct_operators() {
    // Operator 1 runs the three best nodes; replicas must still spread.
    let mut s = pool(&[
        (1, node(1, 100.0, 0.9, 1)),
        (2, node(1, 99.0, 0.9, 1)),
        (3, node(1, 98.0, 0.9, 1)),
        (4, node(2, 10.0, 0.9, 1)),
        (5, node(3, 5.0, 0.9, 1)),
    ]);
    let a = s.allocate(&Requirements { replicas: 3, ..Requirements::default() }).unwrap();
    let nodes: Vec<u64> = a.placements.iter().map(|p| p.node).collect();
    assert_eq!(nodes, vec![1, 4, 5]);
    // A fourth operator does not exist.
    let err = s.allocate(&Requirements { replicas: 2, ..Requirements::default() }).unwrap_err();
    assert_eq!(err, SchedulerError::NotEnoughNodes { wanted: 2, found: 1 });
}

#[test]
fn an_allocation_states_its_estimate_and_cost() {
    let mut s = pool(&[(1, node(1, 100.0, 0.9, 3)), (2, node(2, 50.0, 0.9, 2))]);
    let req = Requirements { replicas: 2, work_mflop: 10_000, ..Requirements::default() };
    let a = s.allocate(&req).unwrap();
    // 10 GFLOP at 100 and 50 GFLOP/s: 100 ms and 200 ms; the slower one finishes the task.
    assert_eq!(a.est_completion_ms, 200);
    // 10 GFLOP × 3 and × 2 nano-NLOV per GFLOP.
    assert_eq!(a.cost_nano, 30 + 20);
    assert_eq!(a.placements.iter().map(|p| p.cost_nano).collect::<Vec<_>>(), vec![30, 20]);
}

#[test]
fn slots_are_taken_and_given_back() {
    let mut s = pool(&[(1, NodeInfo { slots: 2, ..node(1, 10.0, 0.9, 1) })]);
    let req = Requirements::default();
    s.allocate(&req).unwrap();
    s.allocate(&req).unwrap();
    assert_eq!(s.explain(1, &req), Verdict::Busy);
    assert!(s.allocate(&req).is_err());
    s.release(1).unwrap();
    assert_eq!(s.allocate(&req).unwrap().placements[0].node, 1);
    // Updating a busy node's metrics keeps its running tasks.
    s.upsert(1, NodeInfo { slots: 3, ..node(1, 20.0, 0.9, 1) }).unwrap();
    assert_eq!(s.busy(1), Some(2));
}

/// The change counter moves with everything that can turn a failed allocation into a success, and only then: a
/// caller that skips re-asking while it stands still misses nothing.
#[test]
fn the_change_counter_moves_when_a_failed_request_could_succeed() {
    let mut s = pool(&[(1, node(1, 10.0, 0.9, 5))]);
    let cheap = Requirements { max_price_nano_per_gflop: 1, ..Requirements::default() };
    let any = Requirements::default();
    let mut seen = s.changes();
    let mut moved = |s: &Scheduler| {
        let now = s.changes();
        let moved = now != seen;
        seen = now;
        moved
    };
    assert!(s.allocate(&cheap).is_err());
    assert!(!moved(&s), "a failed allocation changed nothing");
    s.allocate(&any).unwrap();
    assert!(!moved(&s), "taking a slot cannot make a failed request succeed");
    assert!(s.allocate(&any).is_err());
    s.release(1).unwrap();
    assert!(moved(&s), "a slot given back");
    s.release(1).unwrap();
    assert!(!moved(&s), "a slot that was free already");
    s.upsert(1, node(1, 10.0, 0.9, 1)).unwrap();
    assert!(moved(&s), "a node that changed its price");
    assert!(s.allocate(&cheap).is_ok());
    s.upsert(2, node(2, 10.0, 0.9, 1)).unwrap();
    assert!(moved(&s), "a node joined");
    s.remove(2);
    assert!(moved(&s), "a node left");
    s.set_weights(Weights::default());
    assert!(moved(&s), "new weights");
}

#[test]
fn requests_are_validated() {
    let s = pool(&[(1, node(1, 10.0, 0.9, 1))]);
    let bad = [
        Requirements { replicas: 0, ..Requirements::default() },
        Requirements { replicas: 17, ..Requirements::default() },
        Requirements { min_reliability: f64::NAN, ..Requirements::default() },
        Requirements { exclude_operators: (0..65).collect(), ..Requirements::default() },
    ];
    for req in bad {
        assert!(s.plan(&req).is_err(), "{req:?}");
    }
}

#[test]
fn reliability_estimate() {
    let fresh = reliability(&WorkHistory::default());
    assert_eq!(fresh, 0.5);
    let good = reliability(&WorkHistory { verified: 98, known_s: 3600, uptime_s: 3600, ..Default::default() });
    assert!((good - 0.99).abs() < 1e-12, "{good}");
    let flaky = reliability(&WorkHistory { verified: 98, timed_out: 50, failed: 50, known_s: 3600, uptime_s: 3600 });
    assert!(flaky < 0.5, "{flaky}");
    let half_up =
        reliability(&WorkHistory { verified: 98, known_s: 7 * 3600, uptime_s: 3 * 3600, ..Default::default() });
    assert!((half_up - 0.99 * 0.5).abs() < 1e-12, "{half_up}");
}
