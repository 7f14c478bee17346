//! How long a finished job stays in the core's memory. Jobs and their tasks used to stay forever, so memory (and
//! every scan over the jobs: admission, statistics) grew with the jobs ever served. A job that has been final for
//! `Config::finished_job_memory_ms` — or sooner, when more than `Config::max_finished_jobs_in_memory` are finished
//! — is *archived*: its job and tasks leave memory and `Record::JobArchived` tells the store, which keeps the job,
//! its task summaries and its results (by hash) and serves them from then on. Results never lived here: a job holds
//! only their hashes, the bytes stay in the blob store.
//!
//! A job leaves only when nothing may still need it in memory: no task of it held or being checked, no pay
//! reservation on its escrow and nothing left in it (a canary it brought along settles first), and no provisional
//! result among its tasks (one could be revoked and run again while its node is unproven, see `finality.rs`).

use neurolov_protocol::messages::Work;

use crate::{Core, Effect, JobId, Record, TaskId};

/// How often the core looks for jobs to archive.
pub const ARCHIVE_INTERVAL_MS: u64 = 1_000;

impl Core {
    /// `job` just became final (done or failed): its time in memory starts.
    pub(crate) fn job_ended(&mut self, job: JobId) {
        self.jobs.ended(job, self.now_ms);
    }

    /// `job` runs again (a provisional result of it was revoked): it is no longer finished.
    pub(crate) fn job_reopened(&mut self, job: JobId) {
        self.jobs.reopened(job);
    }

    /// Archives, oldest first, the finished jobs whose time in memory is up or that are beyond the count kept.
    pub(crate) fn archive_finished(&mut self) {
        if self.now_ms < self.next_archive_ms {
            return;
        }
        self.next_archive_ms = self.now_ms.saturating_add(ARCHIVE_INTERVAL_MS);
        let due = self.jobs.due(self.now_ms, self.cfg.finished_job_memory_ms, self.cfg.max_finished_jobs_in_memory);
        for job in due {
            if self.may_archive(job) {
                self.archive(job);
            }
        }
    }

    /// Whether nothing may still need `job` in memory (see the module doc).
    fn may_archive(&self, job: JobId) -> bool {
        let Some(j) = self.jobs.get(&job) else { return false };
        let escrow_settled = self
            .economy
            .account(crate::escrow(job))
            .is_none_or(|a| a.debits_pending == 0 && a.credits_pending == 0 && a.available() == 0);
        escrow_settled && j.state.is_final() && j.tasks.iter().all(|&tid| self.task_is_settled(tid))
    }

    /// A task no node holds, nothing checks, nothing reserves pay for, and that no node may still see revoked.
    fn task_is_settled(&self, tid: TaskId) -> bool {
        let Some(t) = self.tasks.get(&tid) else { return true };
        let held = t
            .assignments
            .iter()
            .any(|a| a.verifying || self.registry.get(&a.node).is_some_and(|n| n.running.contains(&(tid, a.attempt))));
        debug_assert!(!t.provisional || matches!(t.work, Work::Wgsl { .. }), "a matmul result is never provisional");
        !held && !t.provisional && t.hold.is_none() && (t.done || t.assignments.is_empty())
    }

    /// Lets `job` and its tasks go from memory; the store keeps what its status page shows.
    fn archive(&mut self, job: JobId) {
        let Some(view) = self.job(job) else { return };
        let Some(j) = self.jobs.archive(job) else { return };
        for tid in &j.tasks {
            self.tasks.remove(tid);
        }
        self.effects.push(Effect::Persist(Record::JobArchived { job, tasks: view.tasks }));
    }

    /// Jobs held in memory now (running, and finished ones not yet archived).
    pub fn jobs_in_memory(&self) -> usize {
        self.jobs.len()
    }

    /// Tasks held in memory now.
    pub fn tasks_in_memory(&self) -> usize {
        self.tasks.len()
    }
}

/// Finished jobs that have left memory, by how they ended: the statistics count them too.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Archived {
    pub done: u64,
    pub failed: u64,
}
