//! Canary tasks for WGSL work: tasks whose answer the coordinator already knows, sent to nodes as ordinary tasks.
//! The known answers are real work: a WGSL task whose replicas on different operators agreed. Replaying it to
//! another node costs that node the same effort and looks exactly like a spot-check replica of a real task, so a node
//! cannot tell a canary from paid work and cannot skip one safely. A wrong canary answer is proven fraud (the node
//! committed to it) and is slashed like any other; a right one is paid, like a spot-check replica, from the escrow of
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
}

#[derive(Default)]
pub(crate) struct Canaries {
    known: VecDeque<KnownAnswer>,
}

impl Core {
    /// Keeps a replicated, agreed WGSL result as a future canary.
    pub(crate) fn remember_known_answer(&mut self, tid: TaskId, output: Arc<[u8]>, tolerance: Tolerance) {
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
        let answer = KnownAnswer { work: t.work.clone(), work_mflop: t.work_mflop, output, tolerance };
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
        let work = t.work_mflop;
        let ask = t.assignments.iter().rev().find(|a| a.node == node).map_or(0, |a| a.price_nano_per_gflop);
        let max_pay_nano = self.task_price(&t.purpose, work, ask);
        // A canary must look like work this node could be given: nothing above its memory claim (the scheduler never
        // sends it bigger tasks, so a bigger one would give itself away).
        let memory = self.nodes.get(&node).map_or(0, |n| n.claimed.memory_bytes);
        let comparable = |w: u64| {
            w <= work.saturating_mul(COMPARABLE_WORK_FACTOR) && w.saturating_mul(COMPARABLE_WORK_FACTOR) >= work
        };
        let fits: Vec<usize> = (0..self.canaries.known.len())
            .filter(|&i| memory == 0 || crate::jobs::task_bytes(&self.canaries.known[i].work) <= memory)
            .filter(|&i| comparable(self.canaries.known[i].work_mflop))
            .collect();
        if fits.is_empty() {
            return;
        }
        let pick = fits[self.rng.usize(..fits.len())];
        let Some(answer) = self.canaries.known.get(pick).cloned() else { return };
        let purpose =
            Purpose::Canary { node, expected: answer.output, tolerance: answer.tolerance, payer, max_pay_nano };
        let tid = self.new_task(purpose, answer.work, None, answer.work_mflop, 1);
        self.persist_ids();
        self.assign(tid, node);
    }

    /// A canary's result: the node's answer against the known one.
    pub(crate) fn evaluate_canary(&mut self, tid: TaskId) {
        let Some(t) = self.tasks.get(&tid) else { return };
        let Purpose::Canary { expected, tolerance, .. } = &t.purpose else { return };
        let (expected, tolerance) = (Arc::clone(expected), *tolerance);
        let Some((attempt, node, bytes, ask)) = t
            .assignments
            .iter()
            .filter(|a| !a.dropped)
            .find_map(|a| a.result.clone().map(|r| (a.attempt, a.node, r, a.price_nano_per_gflop)))
        else {
            return;
        };
        let (price, payer) = (self.task_price(&t.purpose, t.work_mflop, ask), t.purpose.payer());
        match replicas::agree(&expected, &bytes, tolerance) {
            Ok(()) => {
                if let Some(t) = self.tasks.get_mut(&tid) {
                    t.done = true;
                }
                self.finish_assignment(tid, attempt, node);
                self.check_passed(node);
                if let Some(operator) = self.nodes.get(&node).map(|n| n.operator) {
                    self.pay_task(tid, attempt, operator, price);
                }
                self.sync_scheduler(node);
            }
            Err(e) => {
                if let Some(t) = self.tasks.get_mut(&tid) {
                    t.done = true;
                }
                self.reject(tid, attempt, node, format!("wrong answer to a known-answer task: {e:?}"));
            }
        }
        self.tasks.remove(&tid);
        self.canary_settled(payer);
    }

    /// A canary's reservation was posted or let go: a job that ended meanwhile gets back what it did not spend.
    pub(crate) fn canary_settled(&mut self, payer: Option<crate::JobId>) {
        if let Some(job) = payer.filter(|j| self.jobs.get(j).is_some_and(|j| j.state.is_final())) {
            self.refund(job);
        }
    }
}
