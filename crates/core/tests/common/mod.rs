//! What the core's tests share: a blob store and a database that keep what the core asks them to, so a test can
//! rebuild a core from it the way the coordinator does after a restart.

#![allow(dead_code)] // Each test file uses its own part.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use neurolov_core::{Blobs, Effect, JobId, JobRecord, NodeRecord, Record, Restored};

#[derive(Default)]
pub struct Store(pub HashMap<String, Arc<[u8]>>);

/// The simulated database: the latest of each record, as the shell's storage keeps them.
#[derive(Default)]
pub struct Db {
    pub nodes: BTreeMap<neurolov_protocol::Id, NodeRecord>,
    pub jobs: BTreeMap<JobId, JobRecord>,
    pub results: BTreeMap<u64, (JobId, String)>,
    pub next_job: u64,
    pub next_task: u64,
    pub accounts: BTreeMap<neurolov_ledger::AccountId, neurolov_ledger::Account>,
    pub transfers: Vec<neurolov_ledger::Transfer>,
    pub evidence: Vec<neurolov_core::Evidence>,
    /// Jobs archived: out of `jobs`, as the store keeps them apart, with their task summaries.
    pub archived: BTreeMap<JobId, (JobRecord, Vec<neurolov_core::TaskView>)>,
    /// Results recorded with their bytes (small ones): a restore needs no blob for them.
    pub inline_results: std::collections::HashSet<String>,
    pub withdrawals: BTreeMap<neurolov_ledger::TransferId, neurolov_core::Withdrawal>,
    pub deposits: Vec<neurolov_core::Deposit>,
    pub proposals: BTreeMap<u64, neurolov_core::Proposal>,
}

impl Db {
    pub fn apply(&mut self, r: Record) {
        match r {
            Record::Node(n) => {
                self.nodes.insert(n.id, n);
            }
            Record::Job(j) => {
                self.jobs.insert(j.id, j);
            }
            Record::TaskResult { job, task, result_hash, inline } => {
                if inline.is_some() {
                    self.inline_results.insert(result_hash.clone());
                }
                self.results.insert(task, (job, result_hash));
            }
            Record::Ids { next_job, next_task } => {
                self.next_job = self.next_job.max(next_job);
                self.next_task = self.next_task.max(next_task);
            }
            Record::Evidence(e) => self.evidence.push(*e),
            Record::NodeForgotten { id } => {
                self.nodes.remove(&id);
            }
            Record::TaskResultRevoked { task, .. } => {
                self.results.remove(&task);
            }
            Record::JobArchived { job, tasks } => {
                if let Some(record) = self.jobs.remove(&job) {
                    self.archived.insert(job, (record, tasks));
                }
            }
            Record::Withdrawal(w) => {
                self.withdrawals.insert(w.id, *w);
            }
            Record::Deposit(d) => self.deposits.push(*d),
            Record::Proposal(p) => {
                self.proposals.insert(p.id, *p);
            }
            Record::Ledger(changes) => {
                for a in changes.created.into_iter().chain(changes.accounts) {
                    self.accounts.insert(a.id, a);
                }
                self.transfers.extend(changes.transfers);
            }
        }
    }

    pub fn restored(&self) -> Restored {
        Restored {
            inline_results: self.inline_results.clone(),
            nodes: self.nodes.values().cloned().collect(),
            jobs: self
                .jobs
                .values()
                .map(|j| {
                    let results = self
                        .results
                        .iter()
                        .filter(|(_, (job, _))| *job == j.id)
                        .map(|(&t, (_, h))| (t, h.clone()))
                        .collect();
                    (j.clone(), results)
                })
                .collect(),
            next_job: self.next_job,
            next_task: self.next_task,
            ledger_accounts: self.accounts.values().cloned().collect(),
            ledger_transfers: self.transfers.clone(),
            evidence: self.evidence.clone(),
            withdrawals: self.withdrawals.values().cloned().collect(),
            proposals: self.proposals.values().cloned().collect(),
            archived: self.archived.values().fold(neurolov_core::Archived::default(), |mut a, (j, _)| {
                match j.state {
                    neurolov_core::JobState::Done => a.done += 1,
                    _ => a.failed += 1,
                }
                a
            }),
        }
    }
}

impl Blobs for Store {
    fn get(&self, hash: &str) -> Option<Arc<[u8]>> {
        self.0.get(hash).cloned()
    }
}

impl Db {
    /// Keeps every record among `effects`.
    pub fn absorb(&mut self, effects: &[Effect]) {
        for e in effects {
            if let Effect::Persist(r) = e {
                self.apply(r.clone());
            }
        }
    }
}
