//! Canary tasks for WGSL work: tasks whose answer the coordinator already knows, sent to nodes as ordinary tasks.
//! The known answers are real work: a WGSL task whose replicas on different operators agreed. Replaying it to
//! another node costs that node the same effort and looks like a spot-check replica of a real task (a fresh task id
//! from the same sequence, attempt 1 as a replica's, work comparable to the task it comes with), and it goes only to
//! nodes that were never given the original, so a node cannot tell a canary from paid work by its bytes. (Operators
//! that pool what their nodes saw can still recognise replays among themselves: canaries are one check among
//! spot-check replication and Freivalds, not the only one.) A wrong canary answer is proven fraud (the node
//! committed to it) and is slashed like any other — but only on two independent opinions: a known answer is itself
//! only the agreement of two operators, who could have agreed on a wrong value for their own bait job to get honest
//! nodes convicted. So a node that disagrees with a known answer it did not help make is convicted only once a
//! third operator, unrelated to both, agrees with the known answer; if the third agrees with the node instead, the
//! known answer was poisoned and is dropped, and nobody is convicted. (A node that disagrees with an answer it helped
//! make contradicts its own signed result and is convicted at once.) A right one is paid, like a spot-check replica, from the escrow of
//! the job whose placement brought it along — never more than that placed task's own price, and only a known answer
//! of comparable work is sent. So a client cannot bait a known answer of huge declared work and have the treasury (or
//! anyone else) pay its own nodes for it: a canary costs the job that brought it at most one more copy of its task.
//!
//! Matmul tasks need no canaries: Freivalds' check verifies every one of them.

use std::collections::VecDeque;
use std::sync::Arc;

use neurolov_protocol::Id;
use neurolov_protocol::messages::Work;
use neurolov_verify::replicas::{self, Tolerance};

use crate::{Core, Purpose, TaskId};

/// Known answers kept for canaries (the newest; older ones are dropped).
pub const MAX_KNOWN_ANSWERS: usize = 64;
/// A canary's declared work is within this factor of the task it comes with: comparable work, so its pay and its
/// weight as a check match the real work it stands beside.
pub const COMPARABLE_WORK_FACTOR: u64 = 4;

/// A WGSL task's work and the output its replicas agreed on.
#[derive(Clone, Debug)]
pub(crate) struct KnownAnswer {
    pub work: Work,
    pub work_mflop: u64,
    pub output: Arc<[u8]>,
    pub tolerance: Tolerance,
    /// Operators whose agreeing replicas made it.
    pub producers: Vec<Id>,
    /// Nodes that were given the original task: they could recognise the replay, so they never get it as a canary.
    pub seen_by: Vec<Id>,
}

#[derive(Default)]
pub(crate) struct Canaries {
    known: VecDeque<KnownAnswer>,
}

impl Canaries {
    /// The work of every known answer (its blobs must stay while it may be sent).
    pub(crate) fn works(&self) -> impl Iterator<Item = &Work> {
        self.known.iter().map(|k| &k.work)
    }
}

impl Core {
    /// Keeps a replicated, agreed WGSL result as a future canary.
    pub(crate) fn remember_known_answer(
        &mut self,
        tid: TaskId,
        output: Arc<[u8]>,
        tolerance: Tolerance,
        producers: Vec<Id>,
    ) {
        let Some(t) = self.tasks.get(&tid) else { return };
        if !matches!(t.work, Work::Wgsl { .. }) {
            return;
        }
        // A canary goes to any node, so it may only use core WebGPU.
        if let crate::Purpose::Job(job) = t.purpose
            && self.jobs.get(&job).is_some_and(|j| j.features != neurolov_scheduler::Features::NONE)
        {
            return;
        }
        let seen_by = t.assignments.iter().map(|a| a.node).collect();
        let answer =
            KnownAnswer { work: t.work.clone(), work_mflop: t.work_mflop, output, tolerance, producers, seen_by };
        if self.canaries.known.len() >= MAX_KNOWN_ANSWERS {
            self.canaries.known.pop_front();
        }
        self.canaries.known.push_back(answer);
    }

    /// With probability `canary_rate`, sends `node` a canary drawn from the known answers of work comparable to
    /// `placed`, the job task it was just given; that task's job pays for it.
    pub(crate) fn maybe_canary(&mut self, placed: TaskId, node: Id) {
        if self.canaries.known.is_empty() || self.rng.f64() >= self.cfg.canary_rate {
            return;
        }
        let Some(t) = self.tasks.get(&placed) else { return };
        let Purpose::Job(payer) = t.purpose else { return };
        // Known answers are WGSL work: only for a node that runs it.
        if !self.registry.get(&node).is_some_and(|n| n.claimed.wgsl) {
            return;
        }
        let work = t.work_mflop;
        let ask = t.assignments.iter().rev().find(|a| a.node == node).map_or(0, |a| a.price_nano_per_gflop);
        let max_pay_nano = self.task_price(&t.purpose, work, ask);
        // A canary must look like work this node could be given: nothing above its memory claim (the scheduler never
        // sends it bigger tasks, so a bigger one would give itself away).
        let memory = self.registry.get(&node).map_or(0, |n| n.claimed.memory_bytes);
        let comparable = |w: u64| {
            w <= work.saturating_mul(COMPARABLE_WORK_FACTOR) && w.saturating_mul(COMPARABLE_WORK_FACTOR) >= work
        };
        let fits: Vec<usize> = (0..self.canaries.known.len())
            .filter(|&i| memory == 0 || crate::jobs::task_bytes(&self.canaries.known[i].work) <= memory)
            .filter(|&i| comparable(self.canaries.known[i].work_mflop))
            .filter(|&i| !self.canaries.known[i].seen_by.contains(&node))
            .collect();
        if fits.is_empty() {
            return;
        }
        let pick = fits[self.rng.usize(..fits.len())];
        let Some(answer) = self.canaries.known.get(pick).cloned() else { return };
        let purpose = Purpose::Canary {
            node,
            expected: answer.output,
            tolerance: answer.tolerance,
            payer,
            max_pay_nano,
            producers: answer.producers,
            disputed: None,
        };
        let tid = self.new_task(purpose, answer.work, None, answer.work_mflop, 1);
        // On the wire a canary is a spot-check replica of a task this node never saw: attempt 1, as a replica's is.
        if let Some(t) = self.tasks.get_mut(&tid) {
            t.next_attempt = 1;
        }
        self.persist_ids();
        self.assign(tid, node);
    }

    /// A canary's result: the node's answer against the known one, or a third opinion on a disputed answer.
    pub(crate) fn evaluate_canary(&mut self, tid: TaskId) {
        let Some(t) = self.tasks.get(&tid) else { return };
        let Purpose::Canary { expected, tolerance, producers, disputed, .. } = &t.purpose else { return };
        let (expected, tolerance, disputed) = (Arc::clone(expected), *tolerance, disputed.clone());
        let Some((attempt, node, bytes, ask)) = t
            .assignments
            .iter()
            .filter(|a| !a.dropped)
            .find_map(|a| a.result.clone().map(|r| (a.attempt, a.node, r, a.price_nano_per_gflop)))
        else {
            return;
        };
        let producer = self.registry.get(&node).is_some_and(|n| producers.contains(&n.operator));
        let (price, payer) = (self.task_price(&t.purpose, t.work_mflop, ask), t.purpose.payer());
        let right = replicas::agree(&expected, &bytes, tolerance).is_ok();
        match disputed {
            None if right => self.canary_passed(tid, attempt, node, price),
            // Its own signed answer said otherwise: no second opinion is needed.
            None if producer => self.canary_failed(tid, attempt, node, "contradicts the answer it gave before"),
            None => {
                self.ask_third_opinion(tid, attempt, node, bytes);
                return;
            }
            Some((first_attempt, first, first_bytes)) => {
                let first_ask = self
                    .tasks
                    .get(&tid)
                    .and_then(|t| t.assignments.iter().find(|a| a.attempt == first_attempt))
                    .map_or(0, |a| a.price_nano_per_gflop);
                let first_price =
                    self.tasks.get(&tid).map_or(0, |t| self.task_price(&t.purpose, t.work_mflop, first_ask));
                let agrees_with_first = replicas::agree(&first_bytes, &bytes, tolerance).is_ok();
                if right && !agrees_with_first {
                    self.canary_passed(tid, attempt, node, price);
                    self.canary_failed(tid, first_attempt, first, "a third operator agreed with the known answer");
                } else if agrees_with_first {
                    // The known answer was wrong: its producers agreed on a lie, or the kernel is not deterministic.
                    tracing::warn!(task = tid, "a known answer was contradicted by two operators: dropped");
                    self.canaries.known.retain(|k| !Arc::ptr_eq(&k.output, &expected));
                    self.canary_passed(tid, attempt, node, price);
                    self.canary_passed(tid, first_attempt, first, first_price);
                } else {
                    // Three different answers: nobody is shown wrong, nobody is paid.
                    self.canaries.known.retain(|k| !Arc::ptr_eq(&k.output, &expected));
                    self.release_hold(tid, first_attempt);
                    self.finish_unpaid(tid, attempt, node);
                }
            }
        }
        self.tasks.remove(&tid);
        self.canary_settled(payer);
    }

    /// A canary answered right: paid from its payer's escrow, and a passed check for its node.
    fn canary_passed(&mut self, tid: TaskId, attempt: u32, node: Id, price: u64) {
        if let Some(t) = self.tasks.get_mut(&tid) {
            t.done = true;
        }
        let work = self.tasks.get(&tid).map_or(1, |t| t.work_mflop);
        self.finish_assignment(tid, attempt, node);
        self.check_passed(node, work);
        if let Some(operator) = self.registry.get(&node).map(|n| n.operator) {
            self.pay_task(tid, attempt, operator, price);
        }
        self.sync_scheduler(node);
    }

    /// A canary answer shown wrong: proven fraud, with the node's signed commitment as evidence.
    fn canary_failed(&mut self, tid: TaskId, attempt: u32, node: Id, why: &str) {
        if let Some(t) = self.tasks.get_mut(&tid) {
            t.done = true;
        }
        self.release_hold(tid, attempt);
        self.reject(tid, attempt, node, format!("wrong answer to a known-answer task: {why}"));
    }

    /// A canary answer ends with no verdict: the slot is freed, nothing is paid.
    fn finish_unpaid(&mut self, tid: TaskId, attempt: u32, node: Id) {
        if let Some(t) = self.tasks.get_mut(&tid) {
            t.done = true;
            if let Some(a) = t.assignments.iter_mut().find(|a| a.attempt == attempt && a.node == node) {
                a.dropped = true;
            }
        }
        self.release_hold(tid, attempt);
        self.vacate(tid, attempt, node);
        self.sync_scheduler(node);
    }

    /// `node`, which did not help make the known answer, disagrees with it: its answer is held (neither paid nor
    /// convicted) while the canary goes to one more operator, unrelated to it and to the answer's producers.
    fn ask_third_opinion(&mut self, tid: TaskId, attempt: u32, node: Id, bytes: Arc<[u8]>) {
        let Some(t) = self.tasks.get_mut(&tid) else { return };
        if let Purpose::Canary { disputed, .. } = &mut t.purpose {
            *disputed = Some((attempt, node, bytes));
        }
        if let Some(a) = t.assignments.iter_mut().find(|a| a.attempt == attempt && a.node == node) {
            // Out of the live count, but its result (and commitment) stay: the operator is excluded from the next
            // placement, and the commitment is the evidence if the third opinion goes against it.
            a.dropped = true;
        }
        t.replicas_wanted = 1;
        self.vacate(tid, attempt, node);
        self.sync_scheduler(node);
        self.enqueue(tid);
    }

    /// A canary's reservation was posted or let go: a job that ended meanwhile gets back what it did not spend.
    pub(crate) fn canary_settled(&mut self, payer: Option<crate::JobId>) {
        if let Some(job) = payer.filter(|j| self.jobs.get(j).is_some_and(|j| j.state.is_final())) {
            self.refund(job);
        }
    }
}
