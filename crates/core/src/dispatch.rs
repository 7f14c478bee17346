//! Placing work: new tasks, the queue, a dispatch pass through the scheduler, the attempt sent to a node with its
//! deadline and its pay reserved, adaptive spot checks at a WGSL task's first placement, and tasks that wait too long
//! for a node.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use neurolov_protocol::Id;
use neurolov_protocol::messages::{
    DataRef, INLINE_INPUT_BYTES, PROTOCOL_VERSION, SEEDED_OFFSET_VERSION, Task, ToNode, WgslBuffer, Work,
};
use neurolov_scheduler::Requirements;

use crate::inference::opening_limit;
use crate::nodes::operator_key;
use crate::settle::result_sizes;
use crate::taskbook::{Assignment, Purpose, TaskRec};
use crate::{Core, Effect, RUNS_WGSL, TaskId, economy, jobs};

/// What makes two queued tasks equally placeable: minimum reliability (bits), price cap, replicas missing, feature
/// bits, memory, excluded operators.
pub(crate) type RequirementKind = (u64, u64, u32, u64, u64, Vec<u64>);

impl Core {
    pub(crate) fn new_task(
        &mut self,
        purpose: Purpose,
        work: Work,
        operands: Option<jobs::MatmulOperands>,
        work_mflop: u64,
        replicas: u32,
    ) -> TaskId {
        self.tasks.create(TaskRec {
            purpose,
            work,
            operands,
            work_mflop,
            next_attempt: 0,
            replicas_wanted: replicas,
            assignments: Vec::new(),
            done: false,
            waiting_since_ms: None,
            spot_decided: false,
            quorum: replicas,
            hold: None,
            reopened: false,
            provisional: false,
        })
    }

    pub(crate) fn assign(&mut self, tid: TaskId, node: Id) {
        let now = self.now_ms;
        // Only connected nodes are eligible and only connected nodes are challenged: a job task sent here holds a
        // scheduler slot that an early return would leak.
        let Some(n) = self.registry.get(&node) else {
            debug_assert!(false, "task {tid} assigned to unknown node {node}");
            return;
        };
        let Some(conn) = n.conn else {
            debug_assert!(false, "task {tid} assigned to node {node}, which has no connection");
            return;
        };
        debug_assert!(self.tasks.contains(&tid), "task {tid} assigned but not in the book");
        let gflops = n.gflops_verified.max(0.1);
        let price = n.price_nano_per_gflop;
        let Some(t) = self.tasks.get_mut(&tid) else { return };
        let attempt = t.next_attempt;
        t.next_attempt += 1;
        let est_ms = (t.work_mflop as f64 / gflops) as u64;
        let deadline_ms = now
            .saturating_add(self.cfg.min_task_deadline_ms)
            .saturating_add(est_ms.saturating_mul(4))
            .saturating_add((t.work_mflop / 1000).saturating_mul(self.cfg.deadline_ms_per_gflop));
        t.assignments.push(Assignment {
            node,
            attempt,
            price_nano_per_gflop: price,
            sent_ms: now,
            deadline_ms,
            commit: None,
            result: None,
            verifying: false,
            delivered_ms: now,
            verdict: None,
            uploaded: None,
            dropped: false,
            proof: None,
        });
        let version = self.registry.conn(conn).map_or(PROTOCOL_VERSION, |c| c.version);
        let work = if version < PROTOCOL_VERSION {
            let (work, stored) = for_version(&t.work, version, t.operands.as_ref().map(|o| &o.a[..]));
            self.effects.extend(stored);
            work
        } else {
            t.work.clone()
        };
        let msg = ToNode::Task(Task { task_id: tid, attempt, deadline_ms, work });
        let (purpose, work_mflop) = (t.purpose.clone(), t.work_mflop);
        let p = if matches!(t.work, Work::Infer { .. }) {
            self.inference_hold_price(&purpose)
        } else {
            self.task_price(&purpose, work_mflop, price)
        };
        if let Some(n) = self.registry.get_mut(&node) {
            n.running.insert((tid, attempt));
        }
        let operator = self.registry.get(&node).map(|n| n.operator);
        if let Some(operator) = operator {
            self.hold(tid, attempt, operator, p, deadline_ms);
        }
        self.send(conn, msg);
    }

    /// What an attempt asking `ask_nano_per_gflop` is paid for `work_mflop`: at its ask, never above the paying
    /// job's cap, and for a canary never above the price of the task it came with.
    pub(crate) fn task_price(&self, purpose: &Purpose, work_mflop: u64, ask_nano_per_gflop: u64) -> u64 {
        let Some(job) = purpose.payer() else { return 0 };
        let cap = self.jobs.get(&job).map_or(0, |j| j.max_price_nano_per_gflop);
        let price = economy::price_nano(work_mflop, ask_nano_per_gflop.min(cap)).unwrap_or(0);
        match *purpose {
            Purpose::Canary { max_pay_nano, .. } => price.min(max_pay_nano),
            _ => price,
        }
    }

    /// Lets `node` store the blob `hash` of `len` bytes if it holds an attempt not yet delivered whose result has that
    /// size and that has not stored a different blob: one upload per attempt (repeating the same one is fine), so a
    /// node can store no more than the work it was given. The commitment, checked when the result is delivered,
    /// says which bytes count.
    pub fn claim_upload(&mut self, node: &Id, len: u64, hash: &str) -> bool {
        let Some(n) = self.registry.get(node) else { return false };
        for &(tid, attempt) in &n.running {
            let Some(t) = self.tasks.get_mut(&tid) else { continue };
            if t.done {
                continue;
            }
            if let Some(limit) = opening_limit(&self.cfg, &t.work) {
                let proving = t
                    .assignments
                    .iter_mut()
                    .find(|a| (a.attempt, a.node) == (attempt, *node) && !a.dropped && len <= limit);
                if let Some(p) = proving.and_then(|a| a.proof.as_mut()).filter(|p| p.opening_hash.is_none())
                    && p.uploaded.as_deref().is_none_or(|h| h == hash)
                {
                    p.uploaded = Some(hash.to_string());
                    return true;
                }
            }
            if !result_sizes(&self.cfg, &t.work).contains(&len) {
                continue;
            }
            let open = t.assignments.iter_mut().find(|a| {
                a.attempt == attempt
                    && a.node == *node
                    && !a.dropped
                    && !a.verifying
                    && a.result.is_none()
                    && a.uploaded.as_deref().is_none_or(|h| h == hash)
            });
            if let Some(a) = open {
                a.uploaded = Some(hash.to_string());
                return true;
            }
        }
        false
    }

    /// Queues a task for the next dispatch pass.
    pub(crate) fn enqueue(&mut self, tid: TaskId) {
        self.tasks.enqueue(tid);
        self.start_waiting(tid);
    }

    /// A queued task's wait for a node starts now (unless it already has), and the next expiry check comes no later
    /// than its deadline.
    pub(crate) fn start_waiting(&mut self, tid: TaskId) {
        let now = self.now_ms;
        let Some(t) = self.tasks.get_mut(&tid) else { return };
        let since = *t.waiting_since_ms.get_or_insert(now);
        let due = since.saturating_add(self.cfg.max_queue_wait_ms);
        self.tasks.check_waits_by(due);
    }

    /// Places queued tasks on nodes; tasks that cannot be placed now stay queued in order. Stops as soon as no
    /// eligible node has a free slot, so an event costs little however long the queue is.
    pub(crate) fn dispatch(&mut self) {
        // A pass that placed nothing leaves a queue that fails the same way until the scheduler changes (a slot is
        // given back, a node joins or changes) or a task is queued: most events (commits, heartbeats of busy nodes,
        // ticks) then cost nothing here, however many queued tasks nobody can take.
        if !self.tasks.needs_dispatch(self.sched.changes()) {
            return;
        }
        let mut placed = false;
        let mut waiting = VecDeque::with_capacity(self.tasks.queued());
        let mut seen = HashSet::with_capacity(self.tasks.queued());
        // Requirements no free slot met in this pass. A pass only takes slots, so they stay unmet until it ends: the
        // other tasks that share them (usually a whole job's) wait without asking the scheduler again, and a queue of
        // tasks nobody can serve costs one allocation attempt per kind, not one per task, on every event.
        let mut unmet: HashSet<RequirementKind> = HashSet::new();
        while let Some(tid) = self.tasks.pop_queued() {
            if !self.sched.has_available() {
                waiting.push_back(tid);
                waiting.extend(self.tasks.drain_queue());
                break;
            }
            if !seen.insert(tid) {
                continue;
            }
            let Some((kind, req)) = self.requirements(tid) else { continue };
            if unmet.contains(&kind) {
                waiting.push_back(tid);
                continue;
            }
            // An inference goes to a node that holds its model; failing that, to one that fetches models on demand.
            let allocation = self.sched.allocate(&req).or_else(|e| match self.fetching(tid, &req) {
                Some(fallback) => self.sched.allocate(&fallback),
                None => Err(e),
            });
            match allocation {
                Ok(allocation) => {
                    placed = true;
                    if self.place(tid, allocation) {
                        // The replica goes out on the next pass, to another operator; it waits from now.
                        self.start_waiting(tid);
                        waiting.push_back(tid);
                    }
                }
                Err(_) => {
                    unmet.insert(kind);
                    waiting.push_back(tid);
                }
            }
        }
        // Placing took slots and may have queued spot-check replicas: look again at the next event.
        let changes = self.sched.changes();
        self.tasks.dispatched(waiting, placed, changes);
    }

    /// `req` asked of a node that fetches models instead of one that holds the model, for an inference task.
    fn fetching(&self, tid: TaskId, req: &Requirements) -> Option<Requirements> {
        let t = self.tasks.get(&tid)?;
        matches!(t.work, Work::Infer { .. })
            .then(|| Requirements { features: crate::inference::FETCHES_MODELS, ..req.clone() })
    }

    /// What placing the rest of `tid` asks of a node, and the kind of request it is (tasks of one kind succeed or
    /// fail together within a pass); `None` when the task needs no placement (done, or all its replicas out).
    fn requirements(&self, tid: TaskId) -> Option<(RequirementKind, Requirements)> {
        let t = self.tasks.get(&tid).filter(|t| !t.done)?;
        let live = t.assignments.iter().filter(|a| !a.dropped).count() as u32;
        let missing = t.replicas_wanted.saturating_sub(live);
        if missing == 0 {
            return None;
        }
        let none = neurolov_scheduler::Features::NONE;
        let (min_reliability, max_price, features) = match &t.purpose {
            Purpose::Job(j) => self
                .jobs
                .get(j)
                .map_or((0.0, u64::MAX, none), |j| (j.min_reliability, j.max_price_nano_per_gflop, j.features)),
            Purpose::Attestation(_) | Purpose::Canary { .. } => (0.0, u64::MAX, none),
        };
        // WGSL work of any purpose (a job's task, its replicas, a canary, a third opinion) goes only to nodes that
        // run WGSL.
        let features = match t.work {
            Work::Wgsl { .. } => neurolov_scheduler::Features(features.0 | RUNS_WGSL.0),
            Work::Matmul { .. } | Work::Infer { .. } => features,
        };
        let min_memory_bytes = jobs::task_bytes(&t.work);
        // Replicas of one task go to distinct operators: those holding a live attempt or that delivered a result (a
        // replica, or a wrong one) are excluded. A node that failed or timed out may get the task again.
        let mut exclude: Vec<u64> = t
            .assignments
            .iter()
            .filter(|a| !a.dropped || a.result.is_some())
            .filter_map(|a| self.registry.get(&a.node).map(|n| operator_key(&n.operator)))
            .collect();
        if let Purpose::Canary { producers, .. } = &t.purpose {
            exclude.extend(producers.iter().map(operator_key));
        }
        exclude.sort_unstable();
        exclude.dedup();
        exclude.truncate(neurolov_scheduler::MAX_EXCLUDED_OPERATORS);
        let kind = (min_reliability.to_bits(), max_price, missing, features.0, min_memory_bytes, exclude);
        let req = Requirements {
            min_reliability,
            max_price_nano_per_gflop: max_price,
            replicas: missing,
            work_mflop: t.work_mflop,
            exclude_operators: kind.5.clone(),
            features,
            min_memory_bytes,
        };
        Some((kind, req))
    }

    /// Sends `tid` to the nodes the scheduler chose; whether a spot-check replica is now wanted as well.
    fn place(&mut self, tid: TaskId, allocation: neurolov_scheduler::Allocation) -> bool {
        if let Some(t) = self.tasks.get_mut(&tid) {
            t.waiting_since_ms = None;
        }
        let first = allocation.placements.first().and_then(|p| self.registry.id_of(p.node));
        for p in allocation.placements {
            let id = self.registry.id_of(p.node);
            debug_assert!(id.is_some(), "the scheduler placed task {tid} on unknown key {}", p.node);
            if let Some(id) = id {
                self.assign(tid, id);
            }
        }
        first.is_some_and(|node| self.spot_check(tid, node))
    }

    /// Adaptive spot checking of a WGSL task at its first placement: with the probability the policy gives for the
    /// node's verified history (never zero), the task is also run by another operator and the results must agree.
    /// Returns whether a replica is now wanted.
    pub(crate) fn spot_check(&mut self, tid: TaskId, node: Id) -> bool {
        let (verified, share) =
            self.registry.get(&node).map_or((0, 0.0), |n| (n.history.verified, self.stake_share(&n.operator)));
        let rate = self.cfg.spot_check.rate(verified, share);
        let draw = self.rng.f64();
        let Some(t) = self.tasks.get_mut(&tid) else { return false };
        if t.spot_decided || !matches!(t.work, Work::Wgsl { .. }) {
            return false;
        }
        t.spot_decided = true;
        if draw < rate {
            t.replicas_wanted = self.cfg.wgsl_replicas.max(2);
            t.quorum = t.replicas_wanted;
            return true;
        }
        // Not spot-checked: now and then the node gets a known-answer task alongside, which it cannot tell apart.
        self.maybe_canary(tid, node);
        false
    }

    /// Fails the jobs of tasks that have waited longer than `max_queue_wait_ms` for an eligible node. The queue is
    /// walked only when the earliest wait can have run out (every task's wait starts when it is queued), not on
    /// every tick: a long queue would otherwise hold the core for a walk four times a second.
    pub(crate) fn expire_waiting(&mut self) {
        let now = self.now_ms;
        if now < self.tasks.next_wait_check_ms() {
            return;
        }
        let mut next = u64::MAX;
        let (mut expired, mut canaries) = (Vec::new(), Vec::new());
        let queued: Vec<TaskId> = self.tasks.queue().copied().collect();
        for tid in queued {
            if let Some(t) = self.tasks.get_mut(&tid)
                && !t.done
            {
                let since = *t.waiting_since_ms.get_or_insert(now);
                next = next.min(since.saturating_add(self.cfg.max_queue_wait_ms));
                if now.saturating_sub(since) >= self.cfg.max_queue_wait_ms {
                    match t.purpose {
                        Purpose::Job(job) => expired.push((job, tid, now - since)),
                        // A disputed canary that found no third operator convicts nobody.
                        Purpose::Canary { payer, .. } => canaries.push((tid, payer)),
                        Purpose::Attestation(_) => {}
                    }
                }
            }
        }
        self.tasks.set_next_wait_check_ms(next);
        for (tid, payer) in canaries {
            self.tasks.remove(&tid);
            self.canary_settled(Some(payer));
        }
        for (job, tid, waited) in expired {
            self.fail_job(job, format!("task {tid} found no eligible node for {waited} ms"));
        }
    }

    /// The node no longer works on this attempt: free its slot (once).
    pub(crate) fn vacate(&mut self, tid: TaskId, attempt: u32, node: Id) {
        // Only job tasks took a scheduler slot; challenges are sent outside the scheduler.
        let holds_slot = self.tasks.get(&tid).is_some_and(|t| matches!(t.purpose, Purpose::Job(_)));
        let Some(n) = self.registry.get_mut(&node) else { return };
        if n.running.remove(&(tid, attempt)) && holds_slot {
            let key = n.key;
            let _ = self.sched.release(key);
        }
    }
}

/// `work` as a node of protocol `version` reads it, and the orders to store the blobs that takes: a block of a seeded
/// matrix (`offset`, version 3) becomes its values — inline for version 2, a blob for version 1 — and inline inputs
/// become blobs for version 1.
///
/// `known`: values the core already holds for a seeded block (a matmul's A rows, kept for its check), used instead
/// of generating them again under the lock.
fn for_version(work: &Work, version: u32, known: Option<&[f32]>) -> (Work, Vec<Effect>) {
    let mut stored = Vec::new();
    let mut to_blob = |r: &DataRef| {
        let bytes = match r {
            DataRef::Seeded { seed, len, offset } if *offset > 0 && version < SEEDED_OFFSET_VERSION => {
                let bytes: Vec<u8> = match known.filter(|k| k.len() as u64 == *len) {
                    Some(values) => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
                    None => neurolov_protocol::messages::seeded_f32_at(*seed, *offset, *len as usize)
                        .iter()
                        .flat_map(|v| v.to_le_bytes())
                        .collect(),
                };
                if version >= 2 && bytes.len() <= INLINE_INPUT_BYTES {
                    return DataRef::inline(&bytes);
                }
                bytes
            }
            DataRef::Inline { .. } if version < 2 => match r.inline_bytes() {
                Some(bytes) => bytes,
                None => return r.clone(),
            },
            _ => return r.clone(),
        };
        let hash = crate::blob_hash(&bytes);
        stored.push(Effect::StoreBlob { hash: hash.clone(), bytes: Arc::from(bytes) });
        DataRef::Blob { hash }
    };
    let work = match work {
        Work::Matmul { m, n, k, a, b } => Work::Matmul { m: *m, n: *n, k: *k, a: to_blob(a), b: to_blob(b) },
        Work::Wgsl { source, entry_point, buffers, dispatch } => Work::Wgsl {
            source: to_blob(source),
            entry_point: entry_point.clone(),
            buffers: buffers
                .iter()
                .map(|b| WgslBuffer { init: b.init.as_ref().map(&mut to_blob), ..b.clone() })
                .collect(),
            dispatch: *dispatch,
        },
        // Only nodes that claim a model get its inference, and only version-3 nodes claim models.
        Work::Infer { .. } => work.clone(),
    };
    (work, stored)
}
