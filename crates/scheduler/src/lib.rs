//! Node scoring and allocation: the whitepaper's score, 0.4·performance + 0.3·reliability + 0.3·cost efficiency
//! (weights are parameters that governance will set), requirement filters, replicas on distinct operators, and an
//! answer to "why was this node not chosen?". Pure: no IO, no clock, no randomness.
//!
//! Speed comes from indexes kept up to date as nodes change rather than a scan per decision: the nodes that are
//! eligible and have a free slot sit in one ordered set per feature class, best score first, so a decision walks
//! from the top of the classes that have the required features and usually stops after a few nodes.
//!
//! Normalization: performance (verified GFLOP/s) and cost efficiency (performance per unit of price) are divided by
//! their maximum over the eligible pool, so both lie in [0, 1] and the best node on each scores 1. Reliability is a
//! probability estimate (see [`reliability`]) and already lies in [0, 1]; it is used as is. Scaling it by the pool's
//! best would re-rank every node whenever the most reliable node finished a task, and would give a pool of uniformly
//! flaky nodes full marks. The pool is every eligible node, not only those passing one request's filters: a score
//! then does not depend on who asks, which is what lets it be indexed. When a pool maximum moves, every score is
//! recomputed and the indexes rebuilt (O(n log n)); that happens when the fastest or most cost-efficient node
//! changes, which is rare next to allocation decisions.
//!
//! Stake buys priority: the weighted sum is multiplied by `1 + stake_priority · stake_share` (default up to +10% for
//! an operator with the full stake), so among comparable nodes the staked one is chosen first, while a fast, reliable,
//! cheap node still beats a slow staked one.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};

/// The caller's key for a node (the coordinator interns its base58 ids to these).
pub type NodeKey = u64;
/// The caller's key for an operator, the account a node pays out to; one operator may run many nodes.
pub type OperatorKey = u64;

/// Most replicas one allocation may ask for.
pub const MAX_REPLICAS: u32 = 16;
/// Most operators one request may exclude.
pub const MAX_EXCLUDED_OPERATORS: usize = 64;
/// Most concurrent task slots one node may offer: the protocol's limit, the one number for it.
pub use neurolov_protocol::messages::MAX_SLOTS;
/// Prior for the uptime part of [`reliability`]: a node is taken to have been up for this long before it was seen.
pub const UPTIME_PRIOR_S: u64 = 3600;

/// Capabilities a node has and a task may need (kernel and adapter features), as bits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Features(pub u64);

impl Features {
    pub const NONE: Features = Features(0);

    pub fn contains(self, required: Features) -> bool {
        self.0 & required.0 == required.0
    }

    /// The required bits this set lacks.
    pub fn missing(self, required: Features) -> Features {
        Features(required.0 & !self.0)
    }
}

/// The weights of the three normalized metrics in a node's score.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Weights {
    performance: f64,
    reliability: f64,
    cost_efficiency: f64,
    /// Priority stake buys: a node's score is multiplied by `1 + stake_priority · stake_share`.
    stake_priority: f64,
}

/// Most extra priority stake may buy (a share of the score).
pub const MAX_STAKE_PRIORITY: f64 = 1.0;

impl Default for Weights {
    /// The whitepaper's 0.4 / 0.3 / 0.3, and up to 10% more for a fully staked operator.
    fn default() -> Self {
        Weights { performance: 0.4, reliability: 0.3, cost_efficiency: 0.3, stake_priority: 0.1 }
    }
}

impl Weights {
    /// Weights must be finite and non-negative and must sum to 1 (within 1e-9), so every score lies in [0, 1].
    pub fn new(performance: f64, reliability: f64, cost_efficiency: f64) -> Result<Weights, SchedulerError> {
        let all = [performance, reliability, cost_efficiency];
        if all.iter().any(|w| !w.is_finite() || *w < 0.0) || (all.iter().sum::<f64>() - 1.0).abs() > 1e-9 {
            return Err(SchedulerError::BadWeights { performance, reliability, cost_efficiency });
        }
        Ok(Weights { performance, reliability, cost_efficiency, stake_priority: Weights::default().stake_priority })
    }

    /// The same weights with another stake priority, in [0, [`MAX_STAKE_PRIORITY`]].
    pub fn with_stake_priority(self, stake_priority: f64) -> Result<Weights, SchedulerError> {
        if !(0.0..=MAX_STAKE_PRIORITY).contains(&stake_priority) {
            return Err(SchedulerError::BadStakePriority(stake_priority));
        }
        Ok(Weights { stake_priority, ..self })
    }

    pub fn stake_priority(&self) -> f64 {
        self.stake_priority
    }

    pub fn performance(&self) -> f64 {
        self.performance
    }

    pub fn reliability(&self) -> f64 {
        self.reliability
    }

    pub fn cost_efficiency(&self) -> f64 {
        self.cost_efficiency
    }
}

/// What the network has seen a node do, for [`reliability`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkHistory {
    pub verified: u64,
    pub failed: u64,
    pub timed_out: u64,
    /// Seconds the node was online (heartbeating) since it was first seen.
    pub uptime_s: u64,
    /// Seconds since the node was first seen.
    pub known_s: u64,
}

/// Estimated probability that a task given to this node comes back verified: the Laplace estimate of its
/// verified share of finished work, times its smoothed uptime share. A new node starts at 0.5 (no evidence either
/// way); each verified task raises it, each failure or timeout lowers it; uptime counts from a one-hour prior.
pub fn reliability(h: &WorkHistory) -> f64 {
    let finished = h.verified.saturating_add(h.failed).saturating_add(h.timed_out);
    let work = (h.verified as f64 + 1.0) / (finished as f64 + 2.0);
    let up = h.uptime_s.min(h.known_s);
    let uptime = (up as f64 + UPTIME_PRIOR_S as f64) / (h.known_s as f64 + UPTIME_PRIOR_S as f64);
    work * uptime
}

/// What the scheduler knows of one node.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeInfo {
    pub operator: OperatorKey,
    /// Online and attested: only eligible nodes are scored, normalized over and given work.
    pub eligible: bool,
    /// Verified throughput (never the node's claim).
    pub verified_gflops: f64,
    /// In [0, 1]; see [`reliability`].
    pub reliability: f64,
    /// The node's ask, in nano-NLOV per GFLOP of work.
    pub price_nano_per_gflop: u64,
    pub features: Features,
    pub memory_bytes: u64,
    /// Tasks the node runs at once.
    pub slots: u32,
    /// The operator's stake as a share of the stake that earns full priority, in [0, 1].
    pub stake_share: f64,
}

/// What a task needs.
#[derive(Clone, Debug, PartialEq)]
pub struct Requirements {
    pub features: Features,
    pub min_memory_bytes: u64,
    pub min_reliability: f64,
    pub max_price_nano_per_gflop: u64,
    /// Copies of the task to place, each with a different operator.
    pub replicas: u32,
    /// The task's work in MFLOP, for the completion estimate and the cost.
    pub work_mflop: u64,
    /// Operators that must not get this task (e.g. those already holding a replica of it).
    pub exclude_operators: Vec<OperatorKey>,
}

impl Default for Requirements {
    fn default() -> Self {
        Requirements {
            features: Features::NONE,
            min_memory_bytes: 0,
            min_reliability: 0.0,
            max_price_nano_per_gflop: u64::MAX,
            replicas: 1,
            work_mflop: 0,
            exclude_operators: Vec::new(),
        }
    }
}

/// One replica's placement.
#[derive(Clone, Debug, PartialEq)]
pub struct Placement {
    pub node: NodeKey,
    pub operator: OperatorKey,
    pub score: f64,
    /// Work divided by the node's verified throughput.
    pub est_ms: u64,
    /// The node's ask times the work, rounded up.
    pub cost_nano: u64,
}

/// The nodes chosen for a task, best first, with the estimated completion time (the slowest replica) and the
/// total cost of all replicas.
#[derive(Clone, Debug, PartialEq)]
pub struct Allocation {
    pub placements: Vec<Placement>,
    pub est_completion_ms: u64,
    pub cost_nano: u64,
}

#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum SchedulerError {
    #[error("weights must be finite, non-negative and sum to 1 (got {performance}, {reliability}, {cost_efficiency})")]
    BadWeights { performance: f64, reliability: f64, cost_efficiency: f64 },
    #[error("stake priority must be in [0, {MAX_STAKE_PRIORITY}] (got {0})")]
    BadStakePriority(f64),
    #[error("node {node}: stake share must be in [0, 1] (got {value})")]
    BadStakeShare { node: NodeKey, value: f64 },
    #[error("node {node}: {what} must be finite and non-negative (got {value})")]
    BadMetric { node: NodeKey, what: &'static str, value: f64 },
    #[error("node {node}: reliability {value} is outside [0, 1]")]
    BadReliability { node: NodeKey, value: f64 },
    #[error("node {node}: {slots} slots exceeds the limit of {MAX_SLOTS}")]
    TooManySlots { node: NodeKey, slots: u32 },
    #[error("replicas must be between 1 and {MAX_REPLICAS} (got {0})")]
    BadReplicas(u32),
    #[error("a request may exclude at most {MAX_EXCLUDED_OPERATORS} operators (got {0})")]
    TooManyExclusions(usize),
    #[error("minimum reliability must be a number in [0, 1] (got {0})")]
    BadMinReliability(f64),
    #[error("only {found} of {wanted} replicas could be placed on eligible nodes of distinct operators")]
    NotEnoughNodes { wanted: u32, found: u32 },
    #[error("the cost of this task overflows")]
    CostOverflow,
    #[error("unknown node {0}")]
    UnknownNode(NodeKey),
}

/// Why a node would not get a task.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// It would be among the nodes chosen, with this score.
    Chosen {
        score: f64,
    },
    Unknown,
    /// Offline or not (yet) attested.
    NotEligible,
    MissingFeatures(Features),
    Memory {
        has: u64,
        needs: u64,
    },
    Reliability {
        has: f64,
        needs: f64,
    },
    Price {
        asks: u64,
        max: u64,
    },
    OperatorExcluded(OperatorKey),
    /// Every slot is taken.
    Busy,
    /// It passes every filter, but the chosen nodes score higher (the lowest chosen score is `cutoff`), or another
    /// node of its operator was chosen.
    Outscored {
        score: f64,
        cutoff: f64,
    },
}

#[derive(Clone, Debug)]
struct Entry {
    info: NodeInfo,
    free: u32,
    score: f64,
}

/// An index key: best score first, then the lower node key. Scores are non-negative, so their bit patterns order
/// like the numbers.
type Rank = (Reverse<u64>, NodeKey);

/// A multiset of non-negative f64s that knows its maximum.
#[derive(Clone, Debug, Default)]
struct MaxSet(BTreeMap<u64, u32>);

impl MaxSet {
    fn insert(&mut self, v: f64) {
        *self.0.entry(v.to_bits()).or_insert(0) += 1;
    }

    fn remove(&mut self, v: f64) {
        let bits = v.to_bits();
        if let Some(n) = self.0.get_mut(&bits) {
            *n -= 1;
            if *n == 0 {
                self.0.remove(&bits);
            }
        }
    }

    fn max(&self) -> f64 {
        self.0.last_key_value().map_or(0.0, |(&b, _)| f64::from_bits(b))
    }
}

/// The pool maxima scores are normalized by.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Norm {
    performance: f64,
    cost_efficiency: f64,
}

/// Performance per unit of price; a zero ask counts as one nano-NLOV per GFLOP.
pub fn cost_efficiency(info: &NodeInfo) -> f64 {
    info.verified_gflops / info.price_nano_per_gflop.max(1) as f64
}

fn score(w: &Weights, norm: Norm, info: &NodeInfo) -> f64 {
    let ratio = |v: f64, max: f64| if max > 0.0 { v / max } else { 0.0 };
    let base = w.performance * ratio(info.verified_gflops, norm.performance)
        + w.reliability * info.reliability
        + w.cost_efficiency * ratio(cost_efficiency(info), norm.cost_efficiency);
    base * (1.0 + w.stake_priority * info.stake_share)
}

/// The scheduler: every known node, and the indexes over those that can take work now.
#[derive(Clone, Debug, Default)]
pub struct Scheduler {
    weights: Weights,
    nodes: HashMap<NodeKey, Entry>,
    /// Eligible nodes with a free slot, per feature set, best first.
    available: HashMap<Features, BTreeSet<Rank>>,
    performance: MaxSet,
    cost_efficiency: MaxSet,
    norm: Norm,
    rebuilds: u64,
    /// Counts changes that can make an allocation succeed where it failed before.
    changes: u64,
}

impl Scheduler {
    pub fn new(weights: Weights) -> Self {
        Scheduler { weights, ..Scheduler::default() }
    }

    pub fn weights(&self) -> Weights {
        self.weights
    }

    /// Changes the weights (a governance decision) and rescores every node.
    pub fn set_weights(&mut self, weights: Weights) {
        self.weights = weights;
        self.changes += 1;
        self.rebuild();
    }

    /// A counter of every change that can make an allocation succeed where it failed before: a node added, changed
    /// or removed, a slot given back, new weights. While it stands still, a request that failed fails again, so a
    /// caller holding a queue of such requests need not ask again.
    pub fn changes(&self) -> u64 {
        self.changes
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// How many times every score has been recomputed (a pool maximum moved or the weights changed).
    pub fn rebuilds(&self) -> u64 {
        self.rebuilds
    }

    /// Whether any eligible node has a free slot (if not, no allocation can succeed).
    pub fn has_available(&self) -> bool {
        !self.available.is_empty()
    }

    /// The node's current score, if it is known and eligible.
    pub fn score(&self, node: NodeKey) -> Option<f64> {
        self.nodes.get(&node).filter(|e| e.info.eligible).map(|e| e.score)
    }

    pub fn info(&self, node: NodeKey) -> Option<&NodeInfo> {
        self.nodes.get(&node).map(|e| &e.info)
    }

    /// Tasks the node is running (slots taken).
    pub fn busy(&self, node: NodeKey) -> Option<u32> {
        self.nodes.get(&node).map(|e| e.info.slots - e.free)
    }

    /// Adds a node or replaces what is known of it; tasks it is running keep their slots.
    pub fn upsert(&mut self, node: NodeKey, info: NodeInfo) -> Result<(), SchedulerError> {
        for (what, value) in [("verified_gflops", info.verified_gflops)] {
            if !value.is_finite() || value < 0.0 {
                return Err(SchedulerError::BadMetric { node, what, value });
            }
        }
        if !(0.0..=1.0).contains(&info.reliability) {
            return Err(SchedulerError::BadReliability { node, value: info.reliability });
        }
        if !(0.0..=1.0).contains(&info.stake_share) {
            return Err(SchedulerError::BadStakeShare { node, value: info.stake_share });
        }
        if info.slots > MAX_SLOTS {
            return Err(SchedulerError::TooManySlots { node, slots: info.slots });
        }
        let busy = match self.nodes.get(&node) {
            Some(old) => {
                let busy = old.info.slots - old.free;
                self.detach(node);
                busy
            }
            None => 0,
        };
        let free = info.slots.saturating_sub(busy);
        if info.eligible {
            self.performance.insert(info.verified_gflops);
            self.cost_efficiency.insert(cost_efficiency(&info));
        }
        self.nodes.insert(node, Entry { info, free, score: 0.0 });
        if !self.renormalize() {
            self.attach(node);
        }
        self.changes += 1;
        Ok(())
    }

    /// Forgets a node. Its running tasks are the caller's to requeue.
    pub fn remove(&mut self, node: NodeKey) -> Option<NodeInfo> {
        self.nodes.get(&node)?;
        self.detach(node);
        let entry = self.nodes.remove(&node)?;
        self.renormalize();
        self.changes += 1;
        Some(entry.info)
    }

    /// Marks a node eligible (online and attested) or not, keeping everything else.
    pub fn set_eligible(&mut self, node: NodeKey, eligible: bool) -> Result<(), SchedulerError> {
        let mut info = self.nodes.get(&node).ok_or(SchedulerError::UnknownNode(node))?.info.clone();
        if info.eligible != eligible {
            info.eligible = eligible;
            self.upsert(node, info)?;
        }
        Ok(())
    }

    /// Chooses nodes for a task and takes one slot on each.
    pub fn allocate(&mut self, req: &Requirements) -> Result<Allocation, SchedulerError> {
        let allocation = self.plan(req)?;
        for p in &allocation.placements {
            let rank = self.rank(p.node);
            if let Some(e) = self.nodes.get_mut(&p.node) {
                e.free -= 1;
                if e.free == 0 {
                    let features = e.info.features;
                    self.remove_rank(features, rank);
                }
            }
        }
        Ok(allocation)
    }

    /// Gives back a slot taken by [`Scheduler::allocate`] (the task finished, failed or was requeued).
    pub fn release(&mut self, node: NodeKey) -> Result<(), SchedulerError> {
        let rank = self.rank(node);
        let e = self.nodes.get_mut(&node).ok_or(SchedulerError::UnknownNode(node))?;
        if e.free < e.info.slots {
            e.free += 1;
            self.changes += 1;
            if e.free == 1 && e.info.eligible {
                let features = e.info.features;
                self.available.entry(features).or_default().insert(rank);
            }
        }
        Ok(())
    }

    /// The allocation [`Scheduler::allocate`] would make, without taking any slot.
    pub fn plan(&self, req: &Requirements) -> Result<Allocation, SchedulerError> {
        if req.replicas == 0 || req.replicas > MAX_REPLICAS {
            return Err(SchedulerError::BadReplicas(req.replicas));
        }
        if req.exclude_operators.len() > MAX_EXCLUDED_OPERATORS {
            return Err(SchedulerError::TooManyExclusions(req.exclude_operators.len()));
        }
        if !(0.0..=1.0).contains(&req.min_reliability) {
            return Err(SchedulerError::BadMinReliability(req.min_reliability));
        }
        // A k-way merge over the feature classes that qualify, best first.
        let mut heads: BinaryHeap<Reverse<(Rank, usize)>> = BinaryHeap::new();
        let mut iters: Vec<std::collections::btree_set::Iter<Rank>> = Vec::new();
        for (features, set) in &self.available {
            if features.contains(req.features) {
                let mut it = set.iter();
                if let Some(&first) = it.next() {
                    heads.push(Reverse((first, iters.len())));
                    iters.push(it);
                }
            }
        }
        let mut placements: Vec<Placement> = Vec::with_capacity(req.replicas as usize);
        while let Some(Reverse(((_, node), i))) = heads.pop() {
            if let Some(&next) = iters[i].next() {
                heads.push(Reverse((next, i)));
            }
            let Some(e) = self.nodes.get(&node) else { continue };
            let info = &e.info;
            if info.memory_bytes < req.min_memory_bytes
                || info.reliability < req.min_reliability
                || info.price_nano_per_gflop > req.max_price_nano_per_gflop
                || req.exclude_operators.contains(&info.operator)
                || placements.iter().any(|p| p.operator == info.operator)
            {
                continue;
            }
            placements.push(placement(node, e, req.work_mflop)?);
            if placements.len() == req.replicas as usize {
                break;
            }
        }
        if placements.len() < req.replicas as usize {
            return Err(SchedulerError::NotEnoughNodes { wanted: req.replicas, found: placements.len() as u32 });
        }
        let est_completion_ms = placements.iter().map(|p| p.est_ms).max().unwrap_or(0);
        let cost_nano = placements
            .iter()
            .try_fold(0u64, |acc, p| acc.checked_add(p.cost_nano))
            .ok_or(SchedulerError::CostOverflow)?;
        Ok(Allocation { placements, est_completion_ms, cost_nano })
    }

    /// Why `node` would or would not get a task with these requirements.
    pub fn explain(&self, node: NodeKey, req: &Requirements) -> Verdict {
        let Some(e) = self.nodes.get(&node) else { return Verdict::Unknown };
        let info = &e.info;
        if !info.eligible {
            return Verdict::NotEligible;
        }
        if !info.features.contains(req.features) {
            return Verdict::MissingFeatures(info.features.missing(req.features));
        }
        if info.memory_bytes < req.min_memory_bytes {
            return Verdict::Memory { has: info.memory_bytes, needs: req.min_memory_bytes };
        }
        if info.reliability < req.min_reliability {
            return Verdict::Reliability { has: info.reliability, needs: req.min_reliability };
        }
        if info.price_nano_per_gflop > req.max_price_nano_per_gflop {
            return Verdict::Price { asks: info.price_nano_per_gflop, max: req.max_price_nano_per_gflop };
        }
        if req.exclude_operators.contains(&info.operator) {
            return Verdict::OperatorExcluded(info.operator);
        }
        if e.free == 0 {
            return Verdict::Busy;
        }
        // Everything that can be said without the competition has been; now ask what a decision would be. With
        // too few nodes for all replicas, a node that passes every filter still counts as chosen.
        let chosen = match self.plan(req) {
            Ok(a) => a.placements,
            Err(_) => return Verdict::Chosen { score: e.score },
        };
        if chosen.iter().any(|p| p.node == node) {
            return Verdict::Chosen { score: e.score };
        }
        let cutoff = chosen.iter().map(|p| p.score).fold(f64::INFINITY, f64::min);
        Verdict::Outscored { score: e.score, cutoff }
    }

    fn rank(&self, node: NodeKey) -> Rank {
        let score = self.nodes.get(&node).map_or(0.0, |e| e.score);
        (Reverse(score.to_bits()), node)
    }

    fn remove_rank(&mut self, features: Features, rank: Rank) {
        if let Some(set) = self.available.get_mut(&features) {
            set.remove(&rank);
            if set.is_empty() {
                self.available.remove(&features);
            }
        }
    }

    /// Takes a node out of the indexes and the pool maxima (before its info changes or it goes).
    fn detach(&mut self, node: NodeKey) {
        let rank = self.rank(node);
        let Some(e) = self.nodes.get(&node) else { return };
        let (features, eligible, perf, cost) =
            (e.info.features, e.info.eligible, e.info.verified_gflops, cost_efficiency(&e.info));
        if eligible {
            self.performance.remove(perf);
            self.cost_efficiency.remove(cost);
        }
        self.remove_rank(features, rank);
    }

    /// Scores a node and indexes it if it can take work.
    fn attach(&mut self, node: NodeKey) {
        let (weights, norm) = (self.weights, self.norm);
        let Some(e) = self.nodes.get_mut(&node) else { return };
        e.score = score(&weights, norm, &e.info);
        if e.info.eligible && e.free > 0 {
            let (features, rank) = (e.info.features, (Reverse(e.score.to_bits()), node));
            self.available.entry(features).or_default().insert(rank);
        }
    }

    /// Rebuilds every score if a pool maximum moved; says whether it did.
    fn renormalize(&mut self) -> bool {
        let norm = Norm { performance: self.performance.max(), cost_efficiency: self.cost_efficiency.max() };
        if norm == self.norm {
            return false;
        }
        self.norm = norm;
        self.rebuild();
        true
    }

    fn rebuild(&mut self) {
        self.rebuilds += 1;
        let mut classes: HashMap<Features, Vec<Rank>> = HashMap::new();
        for (&node, e) in &mut self.nodes {
            e.score = score(&self.weights, self.norm, &e.info);
            if e.info.eligible && e.free > 0 {
                classes.entry(e.info.features).or_default().push((Reverse(e.score.to_bits()), node));
            }
        }
        // Sorted input lets the sets be built in bulk.
        self.available = classes
            .into_iter()
            .map(|(f, mut ranks)| {
                ranks.sort_unstable();
                (f, ranks.into_iter().collect())
            })
            .collect();
    }
}

fn placement(node: NodeKey, e: &Entry, work_mflop: u64) -> Result<Placement, SchedulerError> {
    let gflops = e.info.verified_gflops;
    // MFLOP ÷ GFLOP/s = ms.
    let est_ms = if gflops > 0.0 { (work_mflop as f64 / gflops).ceil().min(u64::MAX as f64) as u64 } else { u64::MAX };
    let cost = u128::from(e.info.price_nano_per_gflop) * u128::from(work_mflop);
    let cost_nano = u64::try_from(cost.div_ceil(1000)).map_err(|_| SchedulerError::CostOverflow)?;
    Ok(Placement { node, operator: e.info.operator, score: e.score, est_ms, cost_nano })
}
