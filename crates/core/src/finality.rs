//! Provisional finality for unreplicated WGSL results. A WGSL result accepted without a replica (the spot-check draw
//! said no) is delivered at once but stays *provisional* until its node passes later checks (an agreeing spot-check
//! replica, a known-answer canary, a Freivalds-checked matmul) of `finality_checks` times its own declared work. If the node is proven to cheat first, each
//! of its provisional results is revoked: the job is reopened and the task runs again on other operators with a
//! replica. The re-run is paid from the job's escrow, refilled with what the convicted node was paid for the revoked
//! result and, where its wallet no longer holds that, from what this conviction's slash brought the treasury — never
//! from the treasury's own money, so a client convicting its own node gains nothing (`economy.rs`). This is what makes adaptive
//! spot-checking beat BOINC's against a node that behaves and then cheats: its forgeries are undone, not just
//! stopped (see `neurolov_verify::spotcheck`).
//!
//! Provisional marks are part of the node's durable record (persisted with it whenever they change), so a restart
//! does not make them final: a finished job with a provisional task gets that task back, ready to run again.

use neurolov_protocol::Id;

use crate::{Core, Effect, Record, TaskId};

/// Provisional results remembered per node; beyond this the oldest count as final.
pub const MAX_PROVISIONAL_PER_NODE: usize = 1_024;

impl Core {
    /// Marks `tid`, just accepted from `node` without a replica, as provisional.
    pub(crate) fn mark_provisional(&mut self, tid: TaskId, node: Id) {
        let Some(n) = self.registry.get_mut(&node) else { return };
        let evicted = (n.provisional.len() >= MAX_PROVISIONAL_PER_NODE).then(|| n.provisional.remove(0).0);
        n.provisional.push((tid, n.checks_passed));
        self.persist_node(node);
        self.set_provisional(evicted, false);
        self.set_provisional(Some(tid), true);
    }

    /// Keeps a task's `provisional` flag in step with the nodes' marks.
    fn set_provisional(&mut self, tid: Option<TaskId>, provisional: bool) {
        if let Some(t) = tid.and_then(|tid| self.tasks.get_mut(&tid)) {
            t.provisional = provisional;
        }
    }

    /// `node` passed a check of `work_mflop` declared work. Checks count by their work: a result becomes final only
    /// once the node has passed `finality_checks` times that result's own work in later checks, so a few tiny checks
    /// (three 1×1×1 matmuls used to do it) cannot make a big forgery final.
    pub(crate) fn check_passed(&mut self, node: Id, work_mflop: u64) {
        let needed = u64::from(self.cfg.spot_check.finality_checks());
        let Some(n) = self.registry.get(&node) else { return };
        let passed = n.checks_passed.saturating_add(work_mflop.max(1));
        let weight = |tid: TaskId| self.tasks.get(&tid).map_or(1, |t| t.work_mflop.max(1));
        let keep: Vec<(TaskId, u64)> = n
            .provisional
            .iter()
            .copied()
            .filter(|&(tid, at)| at.saturating_add(needed.saturating_mul(weight(tid))) > passed)
            .collect();
        let Some(n) = self.registry.get_mut(&node) else { return };
        n.checks_passed = passed;
        let changed = keep.len() != n.provisional.len();
        let turned_final: Vec<TaskId> =
            n.provisional.iter().map(|&(t, _)| t).filter(|t| !keep.iter().any(|(k, _)| k == t)).collect();
        n.provisional = keep;
        for tid in turned_final {
            self.set_provisional(Some(tid), false);
        }
        // A stored count that lags only delays finality (safe); results turning final must be written.
        if changed {
            self.persist_node(node);
        }
    }

    /// `node` is proven to cheat: every result it delivered that is still provisional is revoked and run again, its
    /// re-run funded from the node's pay for it and then from `slashed_nano`, this conviction's slash.
    pub(crate) fn revoke_provisional(&mut self, node: Id, slashed_nano: u64) {
        let Some(n) = self.registry.get_mut(&node) else { return };
        let revoked = std::mem::take(&mut n.provisional);
        let (operator, ask) = (n.operator, n.price_nano_per_gflop);
        if !revoked.is_empty() {
            // Stored marks must not outlive the revocation: they would later revoke other nodes' re-runs.
            self.persist_node(node);
        }
        // The treasury's verification budget for this conviction: a governable share of what its slash brought in.
        let mut budget = crate::economy::share_nano(slashed_nano, self.cfg.rerun_budget_bps);
        for (tid, _) in revoked {
            self.set_provisional(Some(tid), false);
            let paid = self.tasks.get(&tid).map_or(0, |t| {
                let asked = t.assignments.iter().find(|a| a.node == node).map_or(ask, |a| a.price_nano_per_gflop);
                self.task_price(&t.purpose, t.work_mflop, asked)
            });
            if self.reopen(tid) {
                budget = budget.saturating_sub(self.fund_rerun(tid, operator, paid, budget));
            }
        }
    }

    /// Reopens a finished task; whether it did.
    fn reopen(&mut self, tid: TaskId) -> bool {
        let Some(t) = self.tasks.get_mut(&tid) else { return false };
        let crate::Purpose::Job(job) = t.purpose else { return false };
        if !t.done {
            return false;
        }
        t.done = false;
        t.reopened = true;
        t.spot_decided = true;
        t.replicas_wanted = self.cfg.wgsl_replicas.max(2);
        t.quorum = t.replicas_wanted;
        t.waiting_since_ms = None;
        let Some(j) = self.jobs.get_mut(&job) else { return false };
        if !j.revoke_result(tid) {
            return false;
        }
        self.job_reopened(job);
        tracing::warn!(job, task = tid, "provisional result revoked: its node was caught cheating");
        self.effects.push(Effect::Persist(Record::TaskResultRevoked { job, task: tid }));
        self.persist_job(job);
        self.effects.push(Effect::JobReopened { job, task: tid });
        self.enqueue(tid);
        true
    }
}
