//! The job book: the jobs the core holds in memory, the job ids (never reused), the clients' idempotency keys, and
//! which jobs have finished and when — what retention needs to let them go in order (see `retention.rs`). A job and
//! its key come and go together; a job is in `finished` exactly while it is final.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use neurolov_protocol::Id;

use crate::jobs::{Job, JobState};
use crate::{Archived, JobId};

/// Jobs in memory and their bookkeeping (see the module doc).
pub(crate) struct JobBook {
    /// Running jobs, and finished ones not yet archived.
    jobs: BTreeMap<JobId, Job>,
    /// The next job id handed out.
    next_id: JobId,
    /// Jobs by their client's idempotency key: a retried submission gets its job back.
    keys: HashMap<(Id, String), JobId>,
    /// Finished jobs, by when they finished: the oldest leave memory first.
    finished: BTreeSet<(u64, JobId)>,
    /// Jobs archived so far, by outcome: the statistics count jobs no longer in memory.
    archived: Archived,
}

impl Default for JobBook {
    fn default() -> Self {
        JobBook {
            jobs: BTreeMap::new(),
            next_id: 1,
            keys: HashMap::new(),
            finished: BTreeSet::new(),
            archived: Archived::default(),
        }
    }
}

impl JobBook {
    /// The id the next job gets (taken by [`JobBook::insert`]).
    pub fn next_id(&self) -> JobId {
        self.next_id
    }

    /// After a restart: ids from `next` on are free.
    pub fn set_next_id(&mut self, next: JobId) {
        self.next_id = self.next_id.max(next);
    }

    /// Adds a job (a new one under [`JobBook::next_id`], or one restored), with its key if it has one.
    pub fn insert(&mut self, job: Job) {
        let id = job.id;
        self.next_id = self.next_id.max(id + 1);
        if let Some(key) = &job.idempotency_key {
            self.keys.insert((job.client, key.clone()), id);
        }
        if let Some(ended) = job.finished_ms.filter(|_| job.state.is_final()) {
            self.finished.insert((ended, id));
        }
        self.jobs.insert(id, job);
    }

    /// Names `job` by its client's `key` from now on.
    pub fn name(&mut self, job: JobId, key: String) {
        let Some(j) = self.jobs.get_mut(&job) else { return };
        j.idempotency_key = Some(key.clone());
        self.keys.insert((j.client, key), job);
    }

    /// The job `client` submitted under `key`, while it is in memory.
    pub fn by_key(&self, client: &Id, key: &str) -> Option<JobId> {
        self.keys.get(&(*client, key.to_string())).copied()
    }

    pub fn get(&self, id: &JobId) -> Option<&Job> {
        self.jobs.get(id)
    }

    pub fn get_mut(&mut self, id: &JobId) -> Option<&mut Job> {
        self.jobs.get_mut(id)
    }

    pub fn values(&self) -> impl Iterator<Item = &Job> {
        self.jobs.values()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&JobId, &Job)> {
        self.jobs.iter()
    }

    /// Job ids, newest first.
    pub fn newest_first(&self) -> impl Iterator<Item = JobId> + '_ {
        self.jobs.keys().rev().copied()
    }

    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    /// `job` became final at `now_ms`: its time in memory starts (again, if it had finished before).
    pub fn ended(&mut self, job: JobId, now_ms: u64) {
        let Some(j) = self.jobs.get_mut(&job) else { return };
        debug_assert!(j.state.is_final(), "job {job} ended while still running");
        if let Some(before) = j.finished_ms.replace(now_ms) {
            self.finished.remove(&(before, job));
        }
        self.finished.insert((now_ms, job));
    }

    /// `job` runs again: it is no longer finished.
    pub fn reopened(&mut self, job: JobId) {
        if let Some(before) = self.jobs.get_mut(&job).and_then(|j| j.finished_ms.take()) {
            self.finished.remove(&(before, job));
        }
    }

    /// Finished jobs, oldest first, whose time in memory is up at `now_ms` or that are beyond the `keep` most
    /// recent.
    pub fn due(&self, now_ms: u64, keep_ms: u64, keep: usize) -> Vec<JobId> {
        let mut over = self.finished.len().saturating_sub(keep);
        self.finished
            .iter()
            .take_while(|&&(ended, _)| {
                let stays = ended.saturating_add(keep_ms) > now_ms && over == 0;
                over = over.saturating_sub(1);
                !stays
            })
            .map(|&(_, job)| job)
            .collect()
    }

    /// Lets a finished job go from memory, its key with it.
    pub fn archive(&mut self, job: JobId) -> Option<Job> {
        let j = self.jobs.remove(&job)?;
        if let Some(ended) = j.finished_ms {
            self.finished.remove(&(ended, job));
        }
        if let Some(key) = &j.idempotency_key {
            self.keys.remove(&(j.client, key.clone()));
        }
        match j.state {
            JobState::Done => self.archived.done += 1,
            JobState::Failed { .. } => self.archived.failed += 1,
            JobState::Running { .. } => debug_assert!(false, "job {job} archived while running"),
        }
        Some(j)
    }

    /// Jobs archived so far (restored from storage at a restart).
    pub fn archived(&self) -> Archived {
        self.archived
    }

    pub fn set_archived(&mut self, archived: Archived) {
        self.archived = archived;
    }
}
