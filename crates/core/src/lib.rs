//! The coordinator's deterministic core: node registry and heartbeats, attestation, the job and task lifecycle,
//! scheduling, verification decisions and orders to the ledger. It is a state machine with no IO — events in
//! (a node's frame, a client request, a timer tick), effects out (frames to send, blobs to store, rewards and
//! slashes to settle) — with the clock and the randomness injected, so a whole network with crashes and cheaters
//! can be replayed from a seed (see `tests/simulation.rs`). The IO shell (HTTP, WebSocket, storage) wraps it.

mod canary;
mod config;
mod custody;
mod dispatch;
mod economy;
mod finality;
mod frames;
mod governance;
mod inference;
mod jobbook;
mod jobs;
mod nodes;
mod persist;
mod registry;
mod retention;
mod secrets;
mod settle;
mod taskbook;
mod usage;
mod verification;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use economy::Economy;
use jobbook::JobBook;
use neurolov_protocol::inference::InferRequest;
use neurolov_protocol::messages::{ClaimedHardware, DataRef, MAX_BATCH_ITEMS, MAX_FRAME_BYTES, NodeKind, ToNode, Work};
use neurolov_protocol::{Envelope, FromNode, Id, PROTOCOL_VERSION};
use neurolov_scheduler::Scheduler;
use registry::{Node, Registry};
use settle::AttemptEnd;
use taskbook::{Purpose, TaskBook, TaskRec};

pub use canary::MAX_KNOWN_ANSWERS;
pub use config::Config;
pub use custody::{
    CustodyError, Deposit, MAX_FINISHED_WITHDRAWALS, MAX_OPEN_WITHDRAWALS, WITHDRAW_WINDOW_MS, Withdrawal,
    WithdrawalState, fee_hold, outside,
};
pub use economy::{
    BPS, LedgerTotals, WalletError, WalletView, escrow, price_nano, rebuild_ledger, share_nano, stake_account,
    treasury, wallet,
};
pub use frames::{Opened, open_frame, open_frame_with};
pub use governance::{
    Action, GRACE_PERIOD_MS, GovernanceConfig, GovernanceError, MAX_OPEN_PROPOSALS, ParamChange, Proposal,
    ProposalState, Support,
};
pub use inference::{MAX_LISTED_MODELS, ModelKind, ModelListing, ModelUsage, ProofCheck, ProofChecker, Split, split};
pub use jobs::{
    CancelError, InputData, Inputs, JobSpec, JobState, JobView, MAX_INVOCATIONS_PER_WORKGROUP,
    MAX_MFLOP_PER_INVOCATION, SubmitError, TaskView, Verdict, load_inputs,
};
pub use persist::{JobRecord, NodeRecord, Record, Restored};
pub use retention::{ARCHIVE_INTERVAL_MS, Archived};
pub use verification::{Verification, Verified};

/// Fraud evidence kept in memory for `GET /v1/evidence` (the store keeps all of it).
pub const MAX_EVIDENCE_IN_MEMORY: usize = 10_000;

/// A job's price cap when its client names none: 10 NLOV per TFLOP.
pub const DEFAULT_MAX_PRICE_NANO_PER_GFLOP: u64 = 10_000_000;

/// A connection, numbered by the shell.
pub type ConnId = u64;
pub type JobId = u64;
pub type TaskId = u64;

/// Content-addressed blob storage, as far as the core needs it: results and inputs by blake3 hash (hex).
pub trait Blobs {
    fn get(&self, hash: &str) -> Option<Arc<[u8]>>;

    /// A blob's size without reading it (stores that can should override this).
    fn size(&self, hash: &str) -> Option<u64> {
        self.get(hash).map(|b| b.len() as u64)
    }
}

/// What the core asks its shell to do.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    Send {
        conn: ConnId,
        msg: ToNode,
    },
    Close {
        conn: ConnId,
        reason: String,
    },
    /// Store bytes under their blake3 hash (task inputs, assembled results).
    StoreBlob {
        hash: String,
        bytes: Arc<[u8]>,
    },
    /// Step (5) of proof of computation: pay `operator` for a verified task (the ledger issue settles it).
    Reward {
        job: JobId,
        task: TaskId,
        node: Id,
        operator: Id,
        work_mflop: u64,
        price_nano_per_gflop: u64,
        /// What the ledger paid the operator, and the fee it took to the treasury.
        paid_nano: u64,
        fee_nano: u64,
        /// What the model's author was paid from the same escrow (inference only).
        royalty_nano: u64,
    },
    /// Proven fraud: the node signed a commitment to a result that failed verification.
    Slash {
        node: Id,
        operator: Id,
        evidence: Evidence,
        /// Stake moved to the treasury (0 when the operator staked nothing).
        slashed_nano: u64,
    },
    /// A ledger invariant broke: the shell must stop before anything else is committed.
    Halt {
        reason: String,
    },
    JobFinished {
        job: JobId,
        state: JobState,
    },
    /// A finished job runs again: `task`'s provisional result was revoked (its node was caught cheating).
    JobReopened {
        job: JobId,
        task: TaskId,
    },
    /// Keep this across restarts (see [`Core::restore`]).
    Persist(Record),
    /// Check a delivered result off the core's lock and hand the outcome to [`Core::verified`].
    Verify(Box<Verification>),
}

/// The proof that a node committed to a wrong result: its signed commit, re-checkable by anyone.
#[derive(Clone, Debug, PartialEq)]
pub struct Evidence {
    pub task: TaskId,
    pub attempt: u32,
    /// The node's signed `Commit` frame: task, attempt and the hash of the result it stands by.
    pub commit: Envelope,
    /// What the task asked for: with the result blob (by its committed hash) anyone can redo the check.
    pub work: Work,
    pub reason: String,
    /// For an inference: the challenge's seed and the opening's blob, the rest of what the check read.
    pub opening: Option<(u64, String)>,
}

/// A node's state in the registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeState {
    /// Connected, not (or no longer) attested: gets only its challenge.
    Attesting,
    Active,
    /// Missed a heartbeat: no new work.
    Stale,
    Offline,
}

impl NodeState {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Attesting => "attesting",
            NodeState::Active => "active",
            NodeState::Stale => "stale",
            NodeState::Offline => "offline",
        }
    }
}

/// `GET /v1/stats`: the whitepaper's key statistics.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NetworkStats {
    pub nodes_total: u64,
    /// Attested nodes online now.
    pub active_nodes: u64,
    /// Of which with a hardware GPU ("Active GPU Nodes"), a software adapter (lavapipe, SwiftShader), or the CPU —
    /// as the nodes claim their adapters.
    pub active_gpu_nodes: u64,
    pub active_software_nodes: u64,
    pub active_cpu_nodes: u64,
    /// Sum of the active nodes' verified throughput.
    pub verified_tflops: f64,
    /// Share of observed time with at least one active node ("Network Uptime", see `usage.rs`).
    pub network_availability: f64,
    /// Busy share of active slot-time, averaged over time ("Average Resource Utilization").
    pub utilization: f64,
    /// Busy task slots over all slots of the active nodes, now.
    pub utilization_now: f64,
    /// Since the ledger's genesis.
    pub network_uptime_s: u64,
    pub coordinator_uptime_s: u64,
    /// Hours nodes have been online, all together.
    pub operational_hours: f64,
    pub tasks_verified: u64,
    pub jobs_done: u64,
    pub jobs_failed: u64,
    pub jobs_running: u64,
    pub frauds_proven: u64,
    /// Jobs and tasks the core holds in memory (running, and finished ones not yet archived): what it costs.
    pub jobs_in_memory: u64,
    pub tasks_in_memory: u64,
    pub ledger: LedgerTotals,
}

/// What `GET /v1/nodes` shows of a node.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeView {
    pub id: Id,
    pub operator: Id,
    pub kind: NodeKind,
    pub state: NodeState,
    pub claimed: ClaimedHardware,
    pub gflops_verified: f64,
    pub reliability: f64,
    pub price_nano_per_gflop: u64,
    pub score: Option<f64>,
    pub tasks_verified: u64,
    pub tasks_failed: u64,
    /// Results of this node delivered without a replica and not yet final (revoked if it is caught cheating).
    pub results_provisional: usize,
}

/// The coordinator's state, by owner: each part keeps its own invariants, and the methods of `Core` (this file and
/// the files named below) route each event through them.
pub struct Core {
    /// Network parameters, fixed for the core's life.
    cfg: Config,
    /// Every random draw, secrets included (see `secrets.rs`).
    rng: secrets::SecretRng,
    /// The clock as the shell last passed it (never runs backwards).
    now_ms: u64,
    /// Sockets, nodes and their scheduler keys (see `registry.rs`).
    registry: Registry,
    /// Who gets the next task: eligible nodes with free slots, scored (see `neurolov_scheduler`).
    sched: Scheduler,
    /// Jobs in memory, their ids, idempotency keys and finish times (see `jobbook.rs`).
    jobs: JobBook,
    /// Tasks, the queue and the checks in flight (see `taskbook.rs`).
    tasks: TaskBook,
    /// The most recent fraud evidence, for `GET /v1/evidence` (all of it is stored).
    evidence: Vec<Evidence>,
    /// Frauds proven since genesis (the evidence in memory is capped).
    frauds_proven: u64,
    /// What the current event asks the shell to do; handed over by `take_effects`.
    effects: Vec<Effect>,
    /// The ledger and what flowed through it: every order to the ledger goes through it (see `economy.rs`).
    economy: Economy,
    /// Known answers for canaries (see `canary.rs`).
    canaries: canary::Canaries,
    /// When this core started (the coordinator's uptime).
    started_ms: u64,
    /// The genesis of a core made by `Core::new` (tests, simulations): kept out of its first event's effects, and
    /// handed to the store by `Core::restore` on a new network.
    unsaved_genesis: Option<Box<neurolov_ledger::Changes>>,
    /// Availability and utilization over time (see `usage.rs`).
    usage: usage::Usage,
    /// When the next look for jobs to archive is due (see `retention.rs`).
    next_archive_ms: u64,
    /// Verified inference per model since this core started (the marketplace's usage and earnings figures).
    model_usage: HashMap<String, ModelUsage>,
    /// NLOV leaving custody for chains, from request to confirmation (see `custody.rs`).
    withdrawals: custody::Withdrawals,
    /// Governance's proposals, their snapshots and votes (issue 16).
    proposals: governance::Proposals,
}

impl Core {
    /// A core with these parameters, randomness from `seed`, starting at `now_ms`.
    pub fn new(cfg: Config, seed: u64, now_ms: u64) -> Core {
        Core::with_rng(cfg, secrets::SecretRng::from_seed(seed), now_ms)
    }

    fn with_rng(cfg: Config, rng: secrets::SecretRng, now_ms: u64) -> Core {
        let mut core = Core::without_ledger(cfg, rng, now_ms);
        // Genesis is persisted by `Core::restore` on a new network (the shell's only way in); a core made here for a
        // test keeps it out of the effects of its first event.
        match core.economy.genesis(now_ms) {
            Ok(changes) => core.unsaved_genesis = Some(Box::new(changes)),
            Err(e) => core.effects.push(Effect::Halt { reason: e.to_string() }),
        }
        core
    }

    fn without_ledger(cfg: Config, rng: secrets::SecretRng, now_ms: u64) -> Core {
        Core {
            sched: Scheduler::new(cfg.weights),
            cfg,
            rng,
            now_ms,
            registry: Registry::default(),
            jobs: JobBook::default(),
            tasks: TaskBook::default(),
            evidence: Vec::new(),
            frauds_proven: 0,
            effects: Vec::new(),
            economy: Economy::new(neurolov_ledger::Ledger::new(), economy::Flows::default()),
            canaries: canary::Canaries::default(),
            started_ms: now_ms,
            unsaved_genesis: None,
            usage: usage::Usage::default(),
            next_archive_ms: 0,
            model_usage: HashMap::new(),
            withdrawals: custody::Withdrawals::default(),
            proposals: governance::Proposals::default(),
        }
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// A new connection: it is sent its challenge.
    pub fn connected(&mut self, now_ms: u64, conn: ConnId) -> Vec<Effect> {
        self.advance(now_ms);
        let mut nonce = [0u8; 16];
        self.rng.fill(&mut nonce);
        let nonce = bs58::encode(nonce).into_string();
        self.registry.open(conn, nonce.clone(), self.now_ms);
        self.send(conn, ToNode::Challenge { version: PROTOCOL_VERSION, nonce });
        self.take_effects()
    }

    /// A connection closed (by the node, the network or the shell).
    pub fn disconnected(&mut self, now_ms: u64, conn: ConnId) -> Vec<Effect> {
        self.advance(now_ms);
        if let Some(id) = self.registry.close(conn) {
            self.go_offline(id, "connection closed");
        }
        self.dispatch();
        self.take_effects()
    }

    /// A text frame from a node.
    pub fn frame(&mut self, now_ms: u64, conn: ConnId, text: &str, blobs: &dyn Blobs) -> Vec<Effect> {
        self.frame_opened(now_ms, conn, open_frame(text), blobs)
    }

    /// [`Core::frame`] for a frame the shell already opened with [`open_frame`] — parsing and the signature check
    /// are the costly part, and need no state, so they run before the core is locked.
    pub fn frame_opened(&mut self, now_ms: u64, conn: ConnId, opened: Opened, blobs: &dyn Blobs) -> Vec<Effect> {
        self.advance(now_ms);
        if let Err((code, message)) = opened.and_then(|(env, msg)| self.handle_frame(conn, env, msg, blobs)) {
            self.strike(conn, code, message);
        }
        self.dispatch();
        self.take_effects()
    }

    /// Time passes: heartbeats are supervised, deadlines enforced, re-challenges issued, work dispatched.
    pub fn tick(&mut self, now_ms: u64) -> Vec<Effect> {
        self.advance(now_ms);
        self.supervise();
        self.settle_timers();
        self.snapshot_proposals(now_ms);
        self.execute_due_proposals(now_ms);
        self.dispatch();
        self.archive_finished();
        self.take_effects()
    }

    /// Whether `client` may submit `spec` now, and the escrow it needs: quotas, the job's cheap checks, the operand
    /// memory budget and the client's funds, all before anything is read, generated or stored for the request (the
    /// shell asks this first, and [`Core::submit`] asks again).
    pub fn admit(&self, client: &Id, spec: &JobSpec) -> Result<u64, SubmitError> {
        let (running, mine, held) = self.jobs.values().filter(|j| !j.state.is_final()).fold((0, 0, 0u64), |acc, j| {
            (acc.0 + 1, acc.1 + usize::from(j.client == *client), acc.2.saturating_add(jobs::operand_bytes(&j.spec)))
        });
        if running >= self.cfg.max_jobs {
            return Err(SubmitError::TooManyJobs(self.cfg.max_jobs));
        }
        if mine >= self.cfg.max_jobs_per_client {
            return Err(SubmitError::TooManyJobsForClient(self.cfg.max_jobs_per_client));
        }
        let works = jobs::task_works(spec, &self.cfg)?;
        if self.tasks.queued() + works.len() > self.cfg.max_queued_tasks {
            return Err(SubmitError::QueueFull(self.cfg.max_queued_tasks));
        }
        if held.saturating_add(jobs::operand_bytes(spec)) > self.cfg.max_operand_bytes {
            return Err(SubmitError::OperandMemoryFull(self.cfg.max_operand_bytes));
        }
        let needed = match spec {
            JobSpec::Matmul { max_price_nano_per_gflop: cap, .. }
            | JobSpec::Wgsl { max_price_nano_per_gflop: cap, .. } => {
                let copies: Vec<(u64, u32)> = works.iter().map(|&(w, wgsl)| (w, self.paid_copies(wgsl))).collect();
                self.escrow_needed(&copies, *cap).ok_or(SubmitError::PriceTooHigh)?
            }
            JobSpec::Infer { model, request } => inference::infer_plan(&self.cfg, model, request)?.0,
        };
        let available = self.economy.account(economy::wallet(client)).map_or(0, |a| a.available());
        if available < i128::from(needed) {
            return Err(SubmitError::InsufficientFunds {
                available_nano: available.max(0) as u64,
                needed_nano: needed,
            });
        }
        Ok(needed)
    }

    /// A client's job. Inputs given as blobs are read from `blobs` now, after [`Core::admit`] let it in.
    pub fn submit(
        &mut self,
        now_ms: u64,
        client: Id,
        spec: JobSpec,
        blobs: &dyn Blobs,
    ) -> Result<(JobId, Vec<Effect>), SubmitError> {
        self.submit_keyed(now_ms, client, spec, None, blobs)
    }

    /// The job `client` submitted under `key`, if any: a retried submission gets it back instead of a second job.
    pub fn job_for_key(&self, client: &Id, key: &str) -> Option<JobId> {
        self.jobs.by_key(client, key)
    }

    /// [`Core::submit`] under the client's idempotency key: the same key from the same client always names the same
    /// job (a request replayed or retried after the replay window escrows nothing twice); it is answered with that
    /// job's id and no effects.
    pub fn submit_keyed(
        &mut self,
        now_ms: u64,
        client: Id,
        spec: JobSpec,
        key: Option<String>,
        blobs: &dyn Blobs,
    ) -> Result<(JobId, Vec<Effect>), SubmitError> {
        self.submit_loaded(now_ms, client, spec, key, None, blobs)
    }

    /// [`Core::submit_keyed`] with the matmul operands already read or generated by [`load_inputs`] outside the
    /// core's lock (the shell's path; without them they are loaded here).
    pub fn submit_loaded(
        &mut self,
        now_ms: u64,
        client: Id,
        spec: JobSpec,
        key: Option<String>,
        inputs: Option<Inputs>,
        blobs: &dyn Blobs,
    ) -> Result<(JobId, Vec<Effect>), SubmitError> {
        if let Some(k) = &key {
            if k.is_empty() || k.len() > jobs::MAX_IDEMPOTENCY_KEY_BYTES {
                return Err(SubmitError::BadIdempotencyKey);
            }
            if let Some(id) = self.job_for_key(&client, k) {
                return Ok((id, Vec::new()));
            }
        }
        let (id, effects) = self.submit_new(now_ms, client, spec, inputs, blobs)?;
        if let Some(k) = key {
            self.jobs.name(id, k);
            self.persist_job(id);
        }
        Ok((id, effects.into_iter().chain(self.take_effects()).collect()))
    }

    fn submit_new(
        &mut self,
        now_ms: u64,
        client: Id,
        spec: JobSpec,
        inputs: Option<Inputs>,
        blobs: &dyn Blobs,
    ) -> Result<(JobId, Vec<Effect>), SubmitError> {
        self.advance(now_ms);
        let needed = self.admit(&client, &spec)?;
        let id = self.jobs.next_id();
        let verify_seed = self.rng.u64(..);
        let (job, tasks) = jobs::plan(id, client, spec, &self.cfg, blobs, verify_seed, inputs)?;
        self.fund_escrow(id, client, needed).map_err(|e| match e {
            neurolov_ledger::TransferError::InsufficientFunds { available, needed, .. } => {
                SubmitError::InsufficientFunds { available_nano: available.max(0) as u64, needed_nano: needed }
            }
            other => SubmitError::Ledger(other.to_string()),
        })?;
        let mut task_ids = Vec::with_capacity(tasks.len());
        for t in tasks {
            for (hash, bytes) in t.blobs {
                self.effects.push(Effect::StoreBlob { hash, bytes });
            }
            let tid = self.new_task(Purpose::Job(id), t.work, t.operands, t.work_mflop, t.replicas);
            task_ids.push(tid);
            self.enqueue(tid);
        }
        let mut job = job.with_tasks(task_ids);
        job.fee_bps = Some(self.cfg.fee_bps);
        self.jobs.insert(job);
        self.persist_ids();
        self.persist_job(id);
        self.dispatch();
        Ok((id, self.take_effects()))
    }

    /// `client` cancels its job: it fails now ("cancelled by its client"), its running attempts are called off and
    /// what its escrow did not pay for verified work goes back to the client.
    pub fn cancel(&mut self, now_ms: u64, client: &Id, job: JobId) -> Result<Vec<Effect>, CancelError> {
        self.advance(now_ms);
        let j = self.jobs.get(&job).ok_or(CancelError::NoSuchJob)?;
        if j.client != *client {
            return Err(CancelError::NotYours);
        }
        if j.state.is_final() {
            return Err(CancelError::AlreadyEnded);
        }
        self.fail_job(job, "cancelled by its client".into());
        self.dispatch();
        Ok(self.take_effects())
    }

    pub fn job(&self, id: JobId) -> Option<JobView> {
        let job = self.jobs.get(&id)?;
        Some(job.view(|t| {
            let rec = self.tasks.get(&t)?;
            let last = rec.assignments.iter().rev().find(|a| !a.dropped).or(rec.assignments.last());
            Some((last.map(|a| a.node), rec.done, rec.next_attempt))
        }))
    }

    /// The newest `limit` jobs, newest first, with their kind (`matmul` or `wgsl`).
    pub fn recent_jobs(&self, limit: usize) -> Vec<(JobView, &'static str)> {
        self.jobs
            .newest_first()
            .take(limit)
            .filter_map(|id| {
                let kind = match &self.jobs.get(&id)?.spec {
                    JobSpec::Matmul { .. } => "matmul",
                    JobSpec::Wgsl { .. } => "wgsl",
                    JobSpec::Infer { request: InferRequest::Embed { .. }, .. } => "embeddings",
                    JobSpec::Infer { request: InferRequest::Chat { .. }, .. } => "chat",
                };
                Some((self.job(id)?, kind))
            })
            .collect()
    }

    /// A done job's result as the blobs of its task results, in order: the shell streams them from the blob store
    /// (up to 256 MiB), neither copying them per reader nor holding the core while it does.
    pub fn job_result_hashes(&self, id: JobId) -> Option<Vec<String>> {
        self.jobs.get(&id)?.result_hashes()
    }

    /// A done job's assembled result read from `blobs`: C's bytes for matmul, the agreed buffers for WGSL (tests and
    /// tools; the shell streams [`Core::job_result_hashes`]).
    pub fn job_result(&self, id: JobId, blobs: &dyn Blobs) -> Option<Vec<u8>> {
        let parts: Option<Vec<Arc<[u8]>>> = self.job_result_hashes(id)?.iter().map(|h| blobs.get(h)).collect();
        Some(parts?.concat())
    }

    pub fn nodes(&self) -> Vec<NodeView> {
        self.registry
            .iter()
            .map(|(&id, n)| NodeView {
                id,
                operator: n.operator,
                kind: n.kind,
                state: n.state,
                claimed: n.claimed.clone(),
                gflops_verified: n.gflops_verified,
                reliability: self.reliability_of(n),
                price_nano_per_gflop: n.price_nano_per_gflop,
                score: self.sched.score(n.key),
                tasks_verified: n.history.verified,
                tasks_failed: n.history.failed + n.history.timed_out,
                results_provisional: n.provisional.len(),
            })
            .collect()
    }

    /// The network's key statistics, measured live.
    pub fn stats(&self) -> NetworkStats {
        let active: Vec<&Node> =
            self.registry.values().filter(|n| n.state == NodeState::Active && n.attested).collect();
        let cpu = |n: &&&Node| n.claimed.backend == "cpu" || n.claimed.adapter == "cpu";
        let active_cpu_nodes = active.iter().filter(cpu).count() as u64;
        let active_software_nodes = active.iter().filter(|n| !cpu(n) && n.claimed.software).count() as u64;
        let slots: u64 = active.iter().map(|n| u64::from(n.slots)).sum();
        let busy: u64 = active.iter().map(|n| n.running.len() as u64).sum();
        let genesis_ms = self
            .economy
            .ledger()
            .accounts()
            .find(|a| a.kind == neurolov_ledger::Kind::Mint)
            .map_or(self.started_ms, |a| a.created_ms);
        let count = |f: fn(&JobState) -> bool| self.jobs.values().filter(|j| f(&j.state)).count() as u64;
        NetworkStats {
            nodes_total: self.registry.len() as u64,
            active_nodes: active.len() as u64,
            verified_tflops: active.iter().map(|n| n.gflops_verified).sum::<f64>() / 1000.0,
            active_gpu_nodes: active.len() as u64 - active_cpu_nodes - active_software_nodes,
            active_software_nodes,
            active_cpu_nodes,
            network_availability: self.usage.availability(),
            utilization: self.usage.utilization(),
            utilization_now: if slots == 0 { 0.0 } else { busy as f64 / slots as f64 },
            network_uptime_s: self.now_ms.saturating_sub(genesis_ms) / 1000,
            coordinator_uptime_s: self.now_ms.saturating_sub(self.started_ms) / 1000,
            operational_hours: self.registry.values().map(|n| n.up_ms as f64).sum::<f64>() / 3_600_000.0,
            tasks_verified: self.registry.values().map(|n| n.history.verified).sum(),
            jobs_done: count(|s| matches!(s, JobState::Done)) + self.jobs.archived().done,
            jobs_failed: count(|s| matches!(s, JobState::Failed { .. })) + self.jobs.archived().failed,
            jobs_running: count(|s| !s.is_final()),
            frauds_proven: self.frauds_proven,
            jobs_in_memory: self.jobs.len() as u64,
            tasks_in_memory: self.tasks.len() as u64,
            ledger: self.ledger_totals(),
        }
    }

    /// Every blob the core's state still names: inputs of the work it knows (tasks, jobs' specs, known answers,
    /// evidence), results delivered and committed to, and what attempts uploaded. The shell's collector keeps these,
    /// the task results and evidence on record, and anything recent; everything else may go.
    pub fn live_blobs(&self) -> HashSet<String> {
        let mut live = HashSet::new();
        for t in self.tasks.values() {
            work_blobs(&t.work, &mut live);
            for a in &t.assignments {
                live.extend(a.commit.as_ref().map(|(hash, _)| hash.clone()));
                live.extend(a.uploaded.clone());
                live.extend(a.proof.as_ref().and_then(|p| p.opening_hash.clone()));
            }
        }
        for j in self.jobs.values() {
            match &j.spec {
                JobSpec::Matmul { a, b, .. } => {
                    for input in [a, b] {
                        if let InputData::Blob { hash } = input {
                            live.insert(hash.clone());
                        }
                    }
                }
                JobSpec::Wgsl { source_hash, buffers, .. } => {
                    live.insert(source_hash.clone());
                    live.extend(buffers.iter().filter_map(|b| match &b.init {
                        Some(DataRef::Blob { hash }) => Some(hash.clone()),
                        _ => None,
                    }));
                }
                JobSpec::Infer { .. } => {}
            }
        }
        for answer in self.canaries.works() {
            work_blobs(answer, &mut live);
        }
        for e in &self.evidence {
            evidence_blobs(e, &mut live);
        }
        live
    }

    /// A task's attempts, for diagnostics: (node, attempt, committed, has result, dropped).
    pub fn task_attempts(&self, task: TaskId) -> Vec<(Id, u32, bool, bool, bool)> {
        self.tasks
            .get(&task)
            .map(|t| {
                t.assignments
                    .iter()
                    .map(|a| (a.node, a.attempt, a.commit.is_some(), a.result.is_some(), a.dropped))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The most recent fraud evidence (at most [`MAX_EVIDENCE_IN_MEMORY`]; all of it is stored).
    pub fn evidence(&self) -> &[Evidence] {
        &self.evidence
    }

    pub(crate) fn remember_evidence(&mut self, evidence: Evidence) {
        self.frauds_proven += 1;
        if self.evidence.len() >= MAX_EVIDENCE_IN_MEMORY {
            self.evidence.remove(0);
        }
        self.evidence.push(evidence);
    }

    /// Queued tasks not yet placed.
    pub fn queued(&self) -> usize {
        self.tasks.queued()
    }

    /// For the simulation's invariant: is the node holding `task` eligible for it (attested and online), or is it
    /// an attestation challenge sent to that node?
    pub fn assignments_are_sound(&self) -> Result<(), String> {
        for (&tid, t) in self.tasks.iter() {
            // Held = handed out and not yet delivered.
            for a in t.assignments.iter().filter(|a| !a.dropped && a.result.is_none() && !a.verifying && !t.done) {
                let Some(n) = self.registry.get(&a.node) else { return Err(format!("task {tid} on unknown node")) };
                if n.state == NodeState::Offline {
                    return Err(format!("task {tid} held by offline node {}", a.node));
                }
                if matches!(t.purpose, Purpose::Job(_)) && !n.attested {
                    return Err(format!("job task {tid} held by unattested node {}", a.node));
                }
            }
        }
        Ok(())
    }

    // ---- internals ----

    fn advance(&mut self, now_ms: u64) {
        // The clock never runs backwards, whatever the shell passes.
        self.now_ms = self.now_ms.max(now_ms);
    }

    fn take_effects(&mut self) -> Vec<Effect> {
        self.commit_ledger();
        let effects = std::mem::take(&mut self.effects);
        self.batch_tasks(effects)
    }

    /// A version-2 node gets the tasks one event hands it in `tasks` frames of up to [`MAX_BATCH_ITEMS`] (and half
    /// the frame limit of inline inputs), each where its first task was: one frame, one parse and one wake-up
    /// instead of one per task.
    fn batch_tasks(&self, effects: Vec<Effect>) -> Vec<Effect> {
        let tasks = effects.iter().filter(|e| matches!(e, Effect::Send { msg: ToNode::Task(_), .. })).count();
        if tasks < 2 {
            return effects;
        }
        let batched = |conn: ConnId| self.registry.conn(conn).is_some_and(|c| c.version >= 2);
        let mut out = Vec::with_capacity(effects.len());
        // Where each connection's open `tasks` frame is in `out`, and the inline bytes it carries.
        let mut open: HashMap<ConnId, (usize, usize)> = HashMap::new();
        for effect in effects {
            let Effect::Send { conn, msg: ToNode::Task(task) } = effect else {
                out.push(effect);
                continue;
            };
            if !batched(conn) {
                out.push(Effect::Send { conn, msg: ToNode::Task(task) });
                continue;
            }
            let size = inline_len(&task.work);
            if let Some((at, carried)) = open.get_mut(&conn)
                && let Some(Effect::Send { msg: ToNode::Tasks { tasks }, .. }) = out.get_mut(*at)
                && tasks.len() < MAX_BATCH_ITEMS
                && *carried + size <= MAX_FRAME_BYTES / 2
            {
                tasks.push(task);
                *carried += size;
                continue;
            }
            open.insert(conn, (out.len(), size));
            out.push(Effect::Send { conn, msg: ToNode::Tasks { tasks: vec![task] } });
        }
        out
    }

    fn send(&mut self, conn: ConnId, msg: ToNode) {
        self.effects.push(Effect::Send { conn, msg });
    }
}

/// Bytes of inline inputs in `work` (as sent: base64).
fn inline_len(work: &Work) -> usize {
    let len = |r: &DataRef| if let DataRef::Inline { data } = r { data.len() } else { 0 };
    match work {
        Work::Matmul { a, b, .. } => len(a) + len(b),
        Work::Wgsl { source, buffers, .. } => {
            len(source) + buffers.iter().filter_map(|b| b.init.as_ref()).map(len).sum::<usize>()
        }
        Work::Infer { request, .. } => 4 * request.input_tokens(),
    }
}

/// The blobs a piece of work reads.
fn work_blobs(work: &Work, out: &mut HashSet<String>) {
    let blob = |r: &DataRef| match r {
        DataRef::Blob { hash } => Some(hash.clone()),
        DataRef::Seeded { .. } | DataRef::Inline { .. } => None,
    };
    match work {
        Work::Matmul { a, b, .. } => out.extend([a, b].into_iter().filter_map(blob)),
        Work::Wgsl { source, buffers, .. } => {
            out.extend(blob(source));
            out.extend(buffers.iter().filter_map(|b| b.init.as_ref().and_then(blob)));
        }
        Work::Infer { .. } => {}
    }
}

/// The blobs a piece of evidence needs to be checked again: its work's inputs and the result its node committed to.
pub fn evidence_blobs(e: &Evidence, out: &mut HashSet<String>) {
    work_blobs(&e.work, out);
    out.extend(e.opening.as_ref().map(|(_, hash)| hash.clone()));
    if let Some(result_hash) =
        e.commit.open::<FromNode>().ok().and_then(|m| m.commitment(e.task, e.attempt).map(String::from))
    {
        out.insert(result_hash);
    }
}

/// The scheduler's bit for a node that runs clients' WGSL (`ClaimedHardware::wgsl`), which every WGSL task needs. The
/// top bit, apart from the optional WebGPU features a job may name (`Feature::ALL`, from bit 0 up).
const RUNS_WGSL: neurolov_scheduler::Features = neurolov_scheduler::Features(1 << 63);

/// Hex blake3 of bytes, the blob address.
pub fn blob_hash(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}
