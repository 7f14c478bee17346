//! The indexed scheduler against a brute-force model that scans every node per decision: over random sequences of
//! upserts, removals, eligibility changes, allocations and releases, both must choose exactly the same nodes.

#![allow(clippy::unwrap_used)] // Test helpers unwrap: a panic is the failure report.

use std::collections::HashMap;

use neurolov_scheduler::{
    Features, NodeInfo, NodeKey, Requirements, Scheduler, SchedulerError, Verdict, Weights, cost_efficiency,
};
use proptest::prelude::*;

/// The model: the nodes and their free slots, and a full scan per decision.
#[derive(Default)]
struct Model {
    nodes: HashMap<NodeKey, (NodeInfo, u32)>,
}

impl Model {
    fn upsert(&mut self, key: NodeKey, info: NodeInfo) {
        let busy = self.nodes.get(&key).map_or(0, |(old, free)| old.slots - free);
        let free = info.slots.saturating_sub(busy);
        self.nodes.insert(key, (info, free));
    }

    fn scores(&self, w: Weights) -> HashMap<NodeKey, f64> {
        let eligible = || self.nodes.values().filter(|(i, _)| i.eligible).map(|(i, _)| i);
        let max_perf = eligible().map(|i| i.verified_gflops).fold(0.0, f64::max);
        let max_cost = eligible().map(cost_efficiency).fold(0.0, f64::max);
        let ratio = |v: f64, m: f64| if m > 0.0 { v / m } else { 0.0 };
        self.nodes
            .iter()
            .map(|(&k, (i, _))| {
                let s = w.performance() * ratio(i.verified_gflops, max_perf)
                    + w.reliability() * i.reliability
                    + w.cost_efficiency() * ratio(cost_efficiency(i), max_cost);
                (k, s * (1.0 + w.stake_priority() * i.stake_share))
            })
            .collect()
    }

    fn choose(&self, w: Weights, req: &Requirements) -> Result<Vec<NodeKey>, SchedulerError> {
        let scores = self.scores(w);
        let mut candidates: Vec<(f64, NodeKey)> = self
            .nodes
            .iter()
            .filter(|(_, (i, free))| {
                i.eligible
                    && *free > 0
                    && i.features.contains(req.features)
                    && i.memory_bytes >= req.min_memory_bytes
                    && i.reliability >= req.min_reliability
                    && i.price_nano_per_gflop <= req.max_price_nano_per_gflop
                    && !req.exclude_operators.contains(&i.operator)
            })
            .map(|(&k, _)| (scores[&k], k))
            .collect();
        candidates.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut chosen: Vec<NodeKey> = Vec::new();
        for (_, k) in candidates {
            let op = self.nodes[&k].0.operator;
            if chosen.iter().all(|c| self.nodes[c].0.operator != op) {
                chosen.push(k);
            }
            if chosen.len() == req.replicas as usize {
                return Ok(chosen);
            }
        }
        Err(SchedulerError::NotEnoughNodes { wanted: req.replicas, found: chosen.len() as u32 })
    }
}

#[derive(Clone, Debug)]
enum Step {
    Upsert(NodeKey, NodeInfo),
    Remove(NodeKey),
    Eligible(NodeKey, bool),
    Allocate(Requirements),
    Release(NodeKey),
}

fn node_info() -> impl Strategy<Value = NodeInfo> {
    (0u64..4, any::<bool>(), 0u32..5, 0u32..=20, 1u64..5, 0u64..4, 0u64..3, 0u32..3, 0u32..=4).prop_map(
        |(operator, eligible, perf, rel, price, features, mem, slots, stake)| NodeInfo {
            operator,
            eligible: eligible || perf > 0,
            verified_gflops: f64::from(perf) * 10.0,
            reliability: f64::from(rel) / 20.0,
            price_nano_per_gflop: price,
            features: Features(features),
            memory_bytes: mem << 30,
            slots,
            stake_share: f64::from(stake) / 4.0,
        },
    )
}

fn requirements() -> impl Strategy<Value = Requirements> {
    (0u64..4, 0u64..3, 0u32..=4, 1u64..6, 1u32..4, proptest::collection::vec(0u64..4, 0..2)).prop_map(
        |(features, mem, rel, price, replicas, exclude)| Requirements {
            features: Features(features),
            min_memory_bytes: mem << 30,
            min_reliability: f64::from(rel) / 4.0,
            max_price_nano_per_gflop: price,
            replicas,
            work_mflop: 1000,
            exclude_operators: exclude,
        },
    )
}

fn step() -> impl Strategy<Value = Step> {
    let key = 0u64..12;
    prop_oneof![
        3 => (key.clone(), node_info()).prop_map(|(k, i)| Step::Upsert(k, i)),
        1 => key.clone().prop_map(Step::Remove),
        1 => (key.clone(), any::<bool>()).prop_map(|(k, e)| Step::Eligible(k, e)),
        4 => requirements().prop_map(Step::Allocate),
        2 => key.prop_map(Step::Release),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("NEUROLOV_PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256)
    ))]

    #[test]
    fn indexed_decisions_equal_a_full_scan(steps in proptest::collection::vec(step(), 1..60)) {
        let w = Weights::default();
        let mut s = Scheduler::new(w);
        let mut m = Model::default();
        for step in steps {
            match step {
                Step::Upsert(k, info) => {
                    s.upsert(k, info.clone()).unwrap();
                    m.upsert(k, info);
                }
                Step::Remove(k) => {
                    prop_assert_eq!(s.remove(k).is_some(), m.nodes.remove(&k).is_some());
                }
                Step::Eligible(k, e) => {
                    let known = s.set_eligible(k, e).is_ok();
                    prop_assert_eq!(known, m.nodes.contains_key(&k));
                    if let Some((info, _)) = m.nodes.get_mut(&k) {
                        info.eligible = e;
                    }
                }
                Step::Allocate(req) => {
                    let want = m.choose(w, &req);
                    let got = s.allocate(&req).map(|a| a.placements.iter().map(|p| p.node).collect::<Vec<_>>());
                    prop_assert_eq!(&got, &want);
                    if let Ok(chosen) = &want {
                        for k in chosen {
                            m.nodes.get_mut(k).unwrap().1 -= 1;
                        }
                        // Every chosen node explains itself as chosen before the slots were taken; afterwards
                        // the verdict of every node is consistent with the model's filters.
                    }
                    for (&k, (info, free)) in &m.nodes {
                        let verdict = s.explain(k, &req);
                        let passes = info.eligible && *free > 0 && info.features.contains(req.features)
                            && info.memory_bytes >= req.min_memory_bytes && info.reliability >= req.min_reliability
                            && info.price_nano_per_gflop <= req.max_price_nano_per_gflop
                            && !req.exclude_operators.contains(&info.operator);
                        let filtered_out = !matches!(verdict, Verdict::Chosen { .. } | Verdict::Outscored { .. });
                        prop_assert_eq!(filtered_out, !passes, "node {} verdict {:?}", k, verdict);
                    }
                }
                Step::Release(k) => {
                    prop_assert_eq!(s.release(k).is_ok(), m.nodes.contains_key(&k));
                    if let Some((info, free)) = m.nodes.get_mut(&k) {
                        *free = (*free + 1).min(info.slots);
                    }
                }
            }
            for (&k, (info, free)) in &m.nodes {
                prop_assert_eq!(s.busy(k), Some(info.slots - free));
            }
            let scores = m.scores(w);
            for (&k, (info, _)) in &m.nodes {
                if info.eligible {
                    let got = s.score(k).unwrap();
                    let top = 1.0 + w.stake_priority();
                    prop_assert!((0.0..=top + 1e-12).contains(&got), "score {} out of range", got);
                    prop_assert_eq!(got, scores[&k]);
                }
            }
        }
    }
}
