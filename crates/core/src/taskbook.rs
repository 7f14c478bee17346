//! The task book: every task the core knows (job tasks, challenges, canaries) with its attempts, the queue of tasks
//! waiting for a node, and the delivered results out for checking. It owns the task ids (never reused, also across
//! restarts: the next id is stored) and the queue's bookkeeping — whether a dispatch pass could place anything new,
//! and when the next queued task's wait can run out — so an event that changes nothing costs nothing.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use neurolov_protocol::messages::Work;
use neurolov_protocol::{Envelope, Id};
use neurolov_verify::replicas::Tolerance;

use crate::{JobId, TaskId, jobs, verification};

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Purpose {
    Job(JobId),
    Attestation(Id),
    /// A known-answer task sent to `node` (see `canary.rs`).
    Canary {
        node: Id,
        expected: Arc<[u8]>,
        tolerance: Tolerance,
        /// The job whose placement brought the canary along: its escrow pays for it.
        payer: JobId,
        /// The most the canary may be paid: the price of the task it came with.
        max_pay_nano: u64,
        /// Operators whose agreeing replicas made the known answer: never asked for the third opinion.
        producers: Vec<Id>,
        /// A first answer that disagreed with the known one, from a node that did not help make it: (attempt, node,
        /// answer), held until another operator gives a third opinion (see `canary.rs`).
        disputed: Option<(u32, Id, Arc<[u8]>)>,
    },
}

impl Purpose {
    /// The job whose escrow pays for this task: its own, or for a canary the job that brought it along.
    pub fn payer(&self) -> Option<JobId> {
        match *self {
            Purpose::Job(job) | Purpose::Canary { payer: job, .. } => Some(job),
            Purpose::Attestation(_) => None,
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Assignment {
    pub node: Id,
    pub attempt: u32,
    /// The node's ask when it took the task: what it is paid, whatever it asks later.
    pub price_nano_per_gflop: u64,
    pub sent_ms: u64,
    pub deadline_ms: u64,
    /// The hash the node committed to and its signed message saying so (shared: one `deliver` frame commits to
    /// many attempts).
    pub commit: Option<(String, Arc<Envelope>)>,
    pub result: Option<Arc<[u8]>>,
    /// Delivered and being checked (see `verification.rs`); `delivered_ms` is when the result arrived.
    pub verifying: bool,
    pub delivered_ms: u64,
    /// A matmul result's Freivalds verdict, from its verification.
    pub verdict: Option<verification::Verdict>,
    /// The blob this attempt stored (`claim_upload`): one per attempt.
    pub uploaded: Option<String>,
    /// Set once this assignment no longer counts (failed, timed out, cancelled).
    pub dropped: bool,
    /// An inference result's proof: the challenge drawn at delivery and the opening, once stored.
    pub proof: Option<crate::inference::ProofState>,
}

pub(crate) struct TaskRec {
    pub purpose: Purpose,
    pub work: Work,
    /// Matmul: the operands the verifier checks against (A rows, B, and C's shape).
    pub operands: Option<jobs::MatmulOperands>,
    pub work_mflop: u64,
    pub next_attempt: u32,
    pub replicas_wanted: u32,
    pub assignments: Vec<Assignment>,
    pub done: bool,
    /// Since when the task has waited for a node (None while it has all its replicas placed).
    pub waiting_since_ms: Option<u64>,
    /// WGSL tasks: whether the spot-check draw was made (at the first placement).
    pub spot_decided: bool,
    /// Agreeing results needed to accept (1 unless spot-checked); tie-breaking replicas raise `replicas_wanted`,
    /// never this.
    pub quorum: u32,
    /// The attempt holding this task's pay reservation in its job's escrow, and the reservation's transfer id.
    pub hold: Option<(u32, neurolov_ledger::TransferId)>,
    /// A provisional result was revoked: the re-run is paid from the escrow, refilled from the convicted node.
    pub reopened: bool,
    /// Some node's provisional marks name this task (see `finality.rs`): it may still be revoked and run again, so
    /// its job stays in memory (see `retention.rs`). Kept in step with the nodes' marks.
    pub provisional: bool,
}

/// Tasks, the queue and the checks in flight (see the module doc).
pub(crate) struct TaskBook {
    /// Every task not yet let go: running, queued, done but still needed (a finished job's, until it is archived).
    tasks: BTreeMap<TaskId, TaskRec>,
    /// The next task id handed out.
    next_id: TaskId,
    /// Tasks waiting for a node, in the order they are placed.
    queue: VecDeque<TaskId>,
    /// Whether the queue may hold something a dispatch pass has not tried since the scheduler last changed, and the
    /// scheduler's change count at the last pass (see [`TaskBook::needs_dispatch`]).
    queue_changed: bool,
    dispatched_at: u64,
    /// When a queued task's wait can first run out (see `Core::expire_waiting`).
    next_wait_check_ms: u64,
    /// Results out for checking, by when they were delivered (see `verification.rs`).
    checking: BTreeSet<(u64, TaskId, u32, Id)>,
}

impl Default for TaskBook {
    fn default() -> Self {
        TaskBook {
            tasks: BTreeMap::new(),
            next_id: 1,
            queue: VecDeque::new(),
            queue_changed: true,
            dispatched_at: 0,
            next_wait_check_ms: 0,
            checking: BTreeSet::new(),
        }
    }
}

impl TaskBook {
    /// Adds a new task under the next id.
    pub fn create(&mut self, task: TaskRec) -> TaskId {
        let id = self.next_id;
        self.next_id += 1;
        self.tasks.insert(id, task);
        id
    }

    /// Puts back a task rebuilt after a restart under its stored id.
    pub fn restore(&mut self, id: TaskId, task: TaskRec) {
        debug_assert!(id < self.next_id, "restored task {id} is beyond the ids handed out ({})", self.next_id);
        self.tasks.insert(id, task);
    }

    /// The next id to hand out.
    pub fn next_id(&self) -> TaskId {
        self.next_id
    }

    /// After a restart: ids from `next` on are free.
    pub fn set_next_id(&mut self, next: TaskId) {
        self.next_id = self.next_id.max(next);
    }

    pub fn get(&self, id: &TaskId) -> Option<&TaskRec> {
        self.tasks.get(id)
    }

    pub fn get_mut(&mut self, id: &TaskId) -> Option<&mut TaskRec> {
        self.tasks.get_mut(id)
    }

    pub fn contains(&self, id: &TaskId) -> bool {
        self.tasks.contains_key(id)
    }

    pub fn remove(&mut self, id: &TaskId) -> Option<TaskRec> {
        self.tasks.remove(id)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&TaskId, &TaskRec)> {
        self.tasks.iter()
    }

    pub fn values(&self) -> impl Iterator<Item = &TaskRec> {
        self.tasks.values()
    }

    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Queues a task for the next dispatch pass.
    pub fn enqueue(&mut self, id: TaskId) {
        self.queue.push_back(id);
        self.queue_changed = true;
    }

    /// Tasks queued.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    pub fn queue(&self) -> impl Iterator<Item = &TaskId> {
        self.queue.iter()
    }

    /// Whether a dispatch pass could place anything: something was queued, or the scheduler changed (a slot given
    /// back, a node joined or changed), since the last pass.
    pub fn needs_dispatch(&self, scheduler_changes: u64) -> bool {
        self.queue_changed || scheduler_changes != self.dispatched_at
    }

    /// The next queued task, for a dispatch pass (what the pass queues meanwhile comes after it in the same pass).
    pub fn pop_queued(&mut self) -> Option<TaskId> {
        self.queue.pop_front()
    }

    /// Everything still queued, for a pass that stops early.
    pub fn drain_queue(&mut self) -> impl Iterator<Item = TaskId> + '_ {
        self.queue.drain(..)
    }

    /// A dispatch pass ended: `waiting` is the queue again; `placed` says whether it placed anything (then the
    /// next pass may place more at once).
    pub fn dispatched(&mut self, waiting: VecDeque<TaskId>, placed: bool, scheduler_changes: u64) {
        debug_assert!(self.queue.is_empty(), "tasks were queued during a dispatch pass");
        self.queue = waiting;
        self.queue_changed = placed;
        self.dispatched_at = scheduler_changes;
    }

    /// When the next queued task's wait may run out.
    pub fn next_wait_check_ms(&self) -> u64 {
        self.next_wait_check_ms
    }

    /// The next look at waiting tasks is due no later than `due_ms`.
    pub fn check_waits_by(&mut self, due_ms: u64) {
        self.next_wait_check_ms = self.next_wait_check_ms.min(due_ms);
    }

    pub fn set_next_wait_check_ms(&mut self, at_ms: u64) {
        self.next_wait_check_ms = at_ms;
    }

    /// A delivered result goes out for checking.
    pub fn begin_check(&mut self, delivered_ms: u64, task: TaskId, attempt: u32, node: Id) {
        self.checking.insert((delivered_ms, task, attempt, node));
    }

    /// Its check came back (or was given up).
    pub fn end_check(&mut self, task: TaskId, attempt: u32, node: Id) {
        self.checking.retain(|&(_, t, a, n)| (t, a, n) != (task, attempt, node));
    }

    /// The check out longest: (delivered, task, attempt, node).
    pub fn oldest_check(&self) -> Option<(u64, TaskId, u32, Id)> {
        self.checking.first().copied()
    }
}
