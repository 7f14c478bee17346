//! What the core asks its shell to keep across restarts, and how a core is rebuilt from it. The durable state is
//! small: each node's reputation (attestation, verified throughput, work history, uptime), each job's spec, state
//! and task ids, and which tasks have a verified result (the bytes are blobs). Assignments in flight are not kept:
//! after a restart the nodes reconnect and the unfinished tasks are handed out again.

use neurolov_protocol::Id;
use neurolov_protocol::messages::{ClaimedHardware, NodeKind};
use neurolov_scheduler::WorkHistory;

use crate::jobs::{self, JobSpec, JobState};
use std::collections::HashSet;

use crate::{Blobs, Config, Core, Effect, JobId, Purpose, TaskId};

/// A durable fact, written by the shell in the order the core emits them.
#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    Node(NodeRecord),
    Job(JobRecord),
    /// A task's verified result, stored as the blob `result_hash` — or, when it is at most
    /// [`neurolov_protocol::messages::INLINE_RESULT_BYTES`], as `inline` with the record (delivered inside a frame,
    /// it never was a blob file).
    TaskResult {
        job: JobId,
        task: TaskId,
        result_hash: String,
        inline: Option<std::sync::Arc<[u8]>>,
    },
    /// Ids handed out so far (never reused after a restart).
    Ids {
        next_job: JobId,
        next_task: TaskId,
    },
    /// Everything one event did to the ledger: new accounts, transfers in order, the touched accounts' totals.
    Ledger(Box<neurolov_ledger::Changes>),
    /// A node the registry let go of (offline, nothing verified) to make room.
    NodeForgotten {
        id: Id,
    },
    /// A provisional result taken back: its task runs again.
    TaskResultRevoked {
        job: JobId,
        task: TaskId,
    },
    /// Proof of a fraud (kept for anyone to re-check).
    Evidence(Box<crate::Evidence>),
    /// A finished job left the core's memory (see `retention.rs`): the store serves it from now on, with these task
    /// summaries, and does not hand it back at a restart.
    JobArchived {
        job: JobId,
        tasks: Vec<crate::TaskView>,
    },
    /// A withdrawal to a chain as it now stands (written in the same commit as its ledger transfers; the shell
    /// makes a `Signed` one durable before it sends the transaction).
    Withdrawal(Box<crate::Withdrawal>),
    /// A deposit credited from a chain.
    Deposit(Box<crate::Deposit>),
    /// A governance proposal as it now stands (issue 16): made, its snapshot taken, a vote, queued, executed, or
    /// cancelled — written in the same commit as whatever its execution changed.
    Proposal(Box<crate::Proposal>),
}

/// A node's durable state: its reputation.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeRecord {
    pub id: Id,
    pub operator: Id,
    pub kind: NodeKind,
    pub claimed: ClaimedHardware,
    pub price_nano_per_gflop: u64,
    pub slots: u32,
    pub attested: bool,
    pub gflops_verified: f64,
    pub history: WorkHistory,
    pub up_ms: u64,
    pub first_seen_ms: u64,
    /// Declared work of the checks passed so far, and the results still provisional with that sum at the time each
    /// was delivered: a result delivered before a restart must not turn final because the coordinator restarted.
    pub checks_passed: u64,
    pub provisional: Vec<(TaskId, u64)>,
}

/// A job's durable state.
#[derive(Clone, Debug, PartialEq)]
pub struct JobRecord {
    pub id: JobId,
    pub client: Id,
    pub spec: JobSpec,
    pub state: JobState,
    pub tasks: Vec<TaskId>,
    /// The client's name for the submission, if it gave one (see `Core::submit_keyed`).
    pub idempotency_key: Option<String>,
    /// When it last became final (None while it runs).
    pub finished_ms: Option<u64>,
    /// The protocol fee it was escrowed for (see `Job::fee_bps`).
    pub fee_bps: Option<u64>,
}

/// Everything a shell loaded from storage.
#[derive(Clone, Debug, Default)]
pub struct Restored {
    pub nodes: Vec<NodeRecord>,
    /// Each job with the verified results of its tasks (task, blob hash).
    pub jobs: Vec<(JobRecord, Vec<(TaskId, String)>)>,
    /// The result hashes among `jobs` whose bytes the store keeps itself (inline results): they need no blob.
    pub inline_results: HashSet<String>,
    pub next_job: JobId,
    pub next_task: TaskId,
    /// The ledger's accounts as stored (with their totals) and its transfer log in order; both empty on a new
    /// network, which then starts from genesis.
    pub ledger_accounts: Vec<neurolov_ledger::Account>,
    pub ledger_transfers: Vec<neurolov_ledger::Transfer>,
    /// Every piece of fraud evidence, oldest first.
    pub evidence: Vec<crate::Evidence>,
    /// Jobs archived (not among `jobs`), by outcome.
    pub archived: crate::Archived,
    /// Withdrawals to chains on record (unfinished ones are finished by the chain adapters after the restart).
    pub withdrawals: Vec<crate::Withdrawal>,
    /// Governance's proposals (issue 16).
    pub proposals: Vec<crate::Proposal>,
}

impl Core {
    pub(crate) fn persist_node(&mut self, id: Id) {
        let Some(n) = self.registry.get(&id) else { return };
        self.effects.push(Effect::Persist(Record::Node(NodeRecord {
            id,
            operator: n.operator,
            kind: n.kind,
            claimed: n.claimed.clone(),
            price_nano_per_gflop: n.price_nano_per_gflop,
            slots: n.slots,
            attested: n.attested,
            gflops_verified: n.gflops_verified,
            history: n.history,
            up_ms: n.up_ms,
            first_seen_ms: n.first_seen_ms,
            checks_passed: n.checks_passed,
            provisional: n.provisional.clone(),
        })));
    }

    pub(crate) fn persist_job(&mut self, id: JobId) {
        let Some(j) = self.jobs.get(&id) else { return };
        let record = JobRecord {
            id,
            client: j.client,
            spec: j.spec.clone(),
            state: j.state.clone(),
            tasks: j.tasks.clone(),
            idempotency_key: j.idempotency_key.clone(),
            finished_ms: j.finished_ms,
            fee_bps: j.fee_bps,
        };
        self.effects.push(Effect::Persist(Record::Job(record)));
    }

    pub(crate) fn persist_ids(&mut self) {
        self.effects
            .push(Effect::Persist(Record::Ids { next_job: self.jobs.next_id(), next_task: self.tasks.next_id() }));
    }

    /// Rebuilds a core from what its shell stored. Nodes come back offline (they reconnect); unfinished jobs are
    /// cut into the same tasks again and their unverified tasks queued; verified results are read from `blobs`.
    /// Randomness comes from a `u64` seed: for tests and simulations (see [`Core::restore_with_key`]).
    pub fn restore(cfg: Config, seed: u64, now_ms: u64, restored: Restored, blobs: &dyn Blobs) -> (Core, Vec<Effect>) {
        Core::restore_with(cfg, crate::secrets::SecretRng::from_seed(seed), now_ms, restored, blobs)
    }

    /// [`Core::restore`] with randomness keyed by 32 secret bytes, which the shell draws from the OS CSPRNG: the
    /// verifier's secrets cannot be searched for from what nodes see.
    pub fn restore_with_key(
        cfg: Config,
        key: [u8; 32],
        now_ms: u64,
        restored: Restored,
        blobs: &dyn Blobs,
    ) -> (Core, Vec<Effect>) {
        Core::restore_with(cfg, crate::secrets::SecretRng::from_key(key), now_ms, restored, blobs)
    }

    fn restore_with(
        cfg: Config,
        rng: crate::secrets::SecretRng,
        now_ms: u64,
        restored: Restored,
        blobs: &dyn Blobs,
    ) -> (Core, Vec<Effect>) {
        let mut core = if restored.ledger_accounts.is_empty() && restored.ledger_transfers.is_empty() {
            let mut core = Core::with_rng(cfg, rng, now_ms);
            if let Some(genesis) = core.unsaved_genesis.take() {
                core.effects.push(Effect::Persist(Record::Ledger(genesis)));
            }
            core
        } else {
            let mut core = Core::without_ledger(cfg, rng, now_ms);
            match crate::economy::Economy::restore(&restored.ledger_accounts, restored.ledger_transfers) {
                Ok(economy) => core.economy = economy,
                Err(e) => core.effects.push(Effect::Halt { reason: format!("stored ledger does not audit: {e}") }),
            }
            core
        };
        core.void_restored_holds();
        core.restore_withdrawals(restored.withdrawals);
        core.restore_proposals(restored.proposals);
        for e in restored.evidence {
            core.remember_evidence(e);
        }
        core.jobs.set_archived(restored.archived);
        let provisional: HashSet<TaskId> =
            restored.nodes.iter().flat_map(|n| n.provisional.iter().map(|&(t, _)| t)).collect();
        for r in restored.nodes {
            core.restore_node(r);
        }
        let max_task = restored.jobs.iter().flat_map(|(j, _)| j.tasks.iter().copied()).max().unwrap_or(0);
        let max_job = restored.jobs.iter().map(|(j, _)| j.id).max().unwrap_or(0);
        core.jobs.set_next_id(restored.next_job.max(max_job + 1));
        core.tasks.set_next_id(restored.next_task.max(max_task + 1));
        for (record, results) in restored.jobs {
            core.restore_job(record, results, (blobs, &restored.inline_results), &provisional);
        }
        core.refund_ended_jobs();
        core.forget_unrestorable_provisional();
        // Whatever the restore itself decided (jobs that could not resume) is written back.
        let effects = core.take_effects();
        (core, effects)
    }

    /// Assignments are not kept across a restart, so no reservation made for one can still be posted: voided.
    fn void_restored_holds(&mut self) {
        let holds: Vec<neurolov_ledger::TransferId> = self
            .economy
            .ledger()
            .open_pending()
            .filter(|t| t.code == neurolov_ledger::codes::TASK_HOLD)
            .map(|t| t.id)
            .collect();
        for pending in holds {
            self.void_pending(pending, neurolov_ledger::codes::TASK_HOLD);
        }
    }

    /// The withdrawals on record. A withdrawal hold the ledger has but no record names was never signed (a record and
    /// its hold are written in one commit, and a signature only after that): it is released.
    fn restore_withdrawals(&mut self, withdrawals: Vec<crate::Withdrawal>) {
        self.withdrawals = crate::custody::Withdrawals::restore(withdrawals);
        // A fee hold belongs to the withdrawal whose id it derives from.
        let fee_holds: std::collections::HashSet<neurolov_ledger::TransferId> =
            self.withdrawals.ids().map(crate::custody::fee_hold).collect();
        let orphans: Vec<neurolov_ledger::TransferId> = self
            .economy
            .ledger()
            .open_pending()
            .filter(|t| {
                t.code == neurolov_ledger::codes::WITHDRAW
                    && self.withdrawal(t.id).is_none()
                    && !fee_holds.contains(&t.id)
            })
            .map(|t| t.id)
            .collect();
        for pending in orphans {
            tracing::warn!(withdrawal = %pending, "a withdrawal hold without its record is released");
            self.void_pending(pending, neurolov_ledger::codes::WITHDRAW);
        }
    }

    /// A node as stored: offline until it reconnects, with its reputation.
    fn restore_node(&mut self, r: NodeRecord) {
        let now_ms = self.now_ms;
        let id = r.id;
        self.registry.entry(id, |key| crate::registry::Node {
            key,
            operator: r.operator,
            kind: r.kind,
            claimed: r.claimed,
            price_nano_per_gflop: r.price_nano_per_gflop,
            slots: r.slots,
            conn: None,
            state: crate::NodeState::Offline,
            last_seen_ms: now_ms,
            first_seen_ms: r.first_seen_ms,
            up_ms: r.up_ms,
            history: r.history,
            gflops_verified: r.gflops_verified,
            attested: r.attested,
            challenge: None,
            next_challenge_ms: 0,
            convicted_until_ms: 0,
            running: Default::default(),
            checks_passed: r.checks_passed,
            provisional: r.provisional,
            challenge_size: 0,
            measured_size: 0,
        });
        self.sync_scheduler(id);
    }

    /// A canary's reservation voided at the restart may have been all that an ended job's escrow still held back.
    fn refund_ended_jobs(&mut self) {
        let ended: Vec<JobId> = self
            .jobs
            .iter()
            .filter(|(id, j)| {
                j.state.is_final() && self.economy.account(crate::escrow(**id)).is_some_and(|a| a.available() > 0)
            })
            .map(|(&id, _)| id)
            .collect();
        for job in ended {
            self.refund(job);
        }
    }

    fn restore_job(
        &mut self,
        record: JobRecord,
        results: Vec<(TaskId, String)>,
        (blobs, inline): (&dyn Blobs, &HashSet<String>),
        provisional: &HashSet<TaskId>,
    ) {
        let id = record.id;
        if record.state.is_final() {
            // A finished job needs no tasks (nor its operands), only its results — except those still provisional,
            // which must be able to run again if their node is caught cheating.
            let mut job =
                jobs::Job::finished(id, record.client, record.spec.clone(), record.state.clone(), record.tasks.clone());
            job.idempotency_key = record.idempotency_key.clone();
            job.fee_bps = record.fee_bps;
            for (task, hash) in results {
                job.restore_result(task, hash);
            }
            // A job stored before jobs had an end time starts its time in memory now.
            job.finished_ms = Some(record.finished_ms.unwrap_or(self.now_ms));
            self.jobs.insert(job);
            if record.state == JobState::Done && record.tasks.iter().any(|t| provisional.contains(t)) {
                let verify_seed = self.rng.u64(..);
                let planned = jobs::plan(id, record.client, record.spec, &self.cfg, blobs, verify_seed, None);
                // The same cut into the same tasks, or the marks cannot be trusted to name the right work.
                if let Some((_, planned)) = planned.ok().filter(|(_, tasks)| tasks.len() == record.tasks.len()) {
                    for (&tid, planned) in record.tasks.iter().zip(planned).filter(|(t, _)| provisional.contains(t)) {
                        let task = restored_task(id, planned, true);
                        // A WGSL task re-runs from its work alone; matmul results are never provisional.
                        self.tasks.restore(tid, crate::TaskRec { operands: None, ..task });
                    }
                }
            }
            return;
        }
        let verify_seed = self.rng.u64(..);
        let planned = jobs::plan(id, record.client, record.spec.clone(), &self.cfg, blobs, verify_seed, None);
        let (job, tasks) = match planned {
            Ok((job, tasks)) if tasks.len() == record.tasks.len() => (job, tasks),
            Ok(_) => {
                self.fail_restored(id, record, "its tasks could not be rebuilt after a restart");
                return;
            }
            Err(e) => {
                self.fail_restored(id, record, &format!("its inputs could not be reloaded after a restart: {e}"));
                return;
            }
        };
        let mut job = job.with_tasks(record.tasks.clone());
        job.state = record.state.clone();
        job.idempotency_key = record.idempotency_key.clone();
        job.fee_bps = record.fee_bps;
        // A result whose blob is gone is run again.
        let done: std::collections::HashMap<TaskId, String> =
            results.into_iter().filter(|(_, h)| inline.contains(h) || blobs.size(h).is_some()).collect();
        for (&tid, planned) in record.tasks.iter().zip(tasks) {
            let result = done.get(&tid).cloned();
            self.tasks.restore(tid, restored_task(id, planned, result.is_some()));
            match result {
                Some(hash) => job.restore_result(tid, hash),
                None if !record.state.is_final() => self.enqueue(tid),
                None => {}
            }
        }
        job.refresh_state();
        let ended = job.state.is_final();
        self.jobs.insert(job);
        if ended {
            self.job_ended(id);
        }
    }

    /// A provisional result whose task could not be rebuilt (its inputs are gone) can no longer be re-run: it stands.
    /// The others' tasks are marked provisional again.
    fn forget_unrestorable_provisional(&mut self) {
        let tasks = &mut self.tasks;
        let mut changed = Vec::new();
        for (id, n) in self.registry.iter_mut() {
            let before = n.provisional.len();
            n.provisional.retain(|(t, _)| match tasks.get_mut(t) {
                Some(task) => {
                    task.provisional = true;
                    true
                }
                None => false,
            });
            if n.provisional.len() != before {
                changed.push(*id);
            }
        }
        // Written back, so a later restore cannot bring them back to life.
        for id in changed {
            self.persist_node(id);
        }
    }

    fn fail_restored(&mut self, id: JobId, record: JobRecord, reason: &str) {
        let state = JobState::Failed { reason: format!("job {id}: {reason}") };
        let job = jobs::Job::finished(id, record.client, record.spec, state.clone(), record.tasks);
        self.jobs.insert(job);
        self.job_ended(id);
        self.persist_job(id);
        self.refund(id);
        self.effects.push(Effect::JobFinished { job: id, state });
    }
}

/// A task rebuilt from its job's plan after a restart, with no attempts.
fn restored_task(job: JobId, planned: jobs::PlannedTask, done: bool) -> crate::TaskRec {
    crate::TaskRec {
        purpose: Purpose::Job(job),
        work: planned.work,
        operands: planned.operands,
        work_mflop: planned.work_mflop,
        next_attempt: 0,
        replicas_wanted: planned.replicas,
        assignments: Vec::new(),
        done,
        waiting_since_ms: None,
        spot_decided: false,
        quorum: planned.replicas,
        hold: None,
        reopened: false,
        provisional: false,
    }
}
