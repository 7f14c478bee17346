//! The coordinator's deterministic core: node registry and heartbeats, attestation, the job and task lifecycle,
//! scheduling, verification decisions and orders to the ledger. It is a state machine with no IO — events in
//! (a node's frame, a client request, a timer tick), effects out (frames to send, blobs to store, rewards and
//! slashes to settle) — with the clock and the randomness injected, so a whole network with crashes and cheaters
//! can be replayed from a seed (see `tests/simulation.rs`). The IO shell (HTTP, WebSocket, storage) wraps it.

mod canary;
mod economy;
mod finality;
mod jobbook;
mod jobs;
mod persist;
mod registry;
mod retention;
mod secrets;
mod taskbook;
mod usage;
mod verification;

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use economy::Economy;
use jobbook::JobBook;
use neurolov_protocol::messages::{Access, ClaimedHardware, DataRef, ErrorCode, NodeKind, Task, ToNode, Work};
use neurolov_protocol::{Envelope, FromNode, Id, PROTOCOL_VERSION};
use neurolov_scheduler::{NodeInfo, Requirements, Scheduler, Weights, WorkHistory, reliability};
use neurolov_verify::freivalds;
use neurolov_verify::replicas::{self, Tolerance};
use neurolov_verify::spotcheck::SpotCheckPolicy;
use registry::{Node, Registry};
use taskbook::{Assignment, Purpose, TaskBook, TaskRec};

pub use canary::MAX_KNOWN_ANSWERS;
pub use economy::{
    BPS, LedgerTotals, WalletError, WalletView, escrow, price_nano, rebuild_ledger, share_nano, stake_account,
    treasury, wallet,
};
pub use jobs::{
    InputData, Inputs, JobSpec, JobState, JobView, MAX_INVOCATIONS_PER_WORKGROUP, MAX_MFLOP_PER_INVOCATION,
    SubmitError, TaskView, load_inputs,
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

/// What makes two queued tasks equally placeable: minimum reliability (bits), price cap, replicas missing, feature
/// bits, memory, excluded operators.
type RequirementKind = (u64, u64, u32, u64, u64, Vec<u64>);

/// Bytes a task's result must have: C for a matmul, the read-write buffers for WGSL.
fn result_bytes(work: &Work) -> u64 {
    match work {
        Work::Matmul { m, n, .. } => 4 * u64::from(*m) * u64::from(*n),
        Work::Wgsl { buffers, .. } => buffers
            .iter()
            .filter(|b| b.access == Access::ReadWrite)
            .map(|b| b.size_bytes)
            .fold(0u64, u64::saturating_add),
    }
}

/// Network parameters. Every limit has a name here.
#[derive(Clone, Debug)]
pub struct Config {
    pub heartbeat_interval_ms: u64,
    /// Missed intervals after which a node is stale (gets no new work).
    pub stale_after_missed: u64,
    /// Missed intervals after which a node is offline and its tasks go back to the queue.
    pub offline_after_missed: u64,
    /// n of a node's first n×n·n×n attestation product.
    pub attestation_size: u32,
    /// Largest n a challenge grows to (see `attestation_passed`).
    pub max_attestation_size: u32,
    /// A challenge should take about this long: one that comes back sooner is followed at once by one twice the
    /// size.
    pub attestation_target_ms: u64,
    /// Chance that a WGSL task placed without a spot check brings its node a known-answer canary as well.
    pub canary_rate: f64,
    /// Mean time between unannounced re-challenges of an attested node.
    pub rechallenge_mean_ms: u64,
    /// A re-measured node whose speed falls below this share of its record loses the record.
    pub rechallenge_min_share: f64,
    /// Rows of C per matmul task.
    pub tile_rows: u32,
    /// Shortest deadline of a task; longer for more work on slower nodes.
    pub min_task_deadline_ms: u64,
    /// Deadline allowance per GFLOP of estimated work on the chosen node (ms).
    pub deadline_ms_per_gflop: u64,
    pub freivalds_rounds: u32,
    /// A task that finds no eligible node for this long fails its job.
    pub max_queue_wait_ms: u64,
    /// Attempts of one task before its job fails.
    pub max_attempts: u32,
    /// Replicas of a spot-checked WGSL task that must agree, on distinct operators.
    pub wgsl_replicas: u32,
    /// How often a WGSL task is spot-checked by replication, given the first node's verified history.
    pub spot_check: SpotCheckPolicy,
    /// Most replicas one WGSL task may use while looking for a majority.
    pub wgsl_max_replicas: u32,
    pub weights: Weights,
    /// Frames a connection may get wrong before it is closed.
    pub max_strikes: u32,
    pub max_nodes: usize,
    pub max_jobs: usize,
    /// A delivered result whose check has not come back by then is treated as unreadable (the task runs again).
    pub verify_timeout_ms: u64,
    /// Unfinished jobs one client may have: one client cannot take the whole queue, however much it can pay.
    pub max_jobs_per_client: usize,
    pub max_queued_tasks: usize,
    /// Lowest price cap a job may name: a job with no price escrows nothing and costs its client nothing to hold.
    pub min_price_nano_per_gflop: u64,
    /// Most operand bytes the unfinished jobs may hold in the core's memory together.
    pub max_operand_bytes: u64,
    /// Protocol fee on each verified task's price, to the treasury (basis points).
    pub fee_bps: u64,
    /// Share of an operator's stake slashed for one proven fraud (basis points).
    pub slash_bps: u64,
    /// How long unstaked NLOV stays locked (and slashable) before it returns to the wallet.
    pub unstake_delay_ms: u64,
    /// Stake that earns the whole spot-check discount (the rate halves; it never reaches zero).
    pub stake_for_full_discount_nano: u64,
    /// Development mode's faucet grant per account from the ecosystem fund (0: no faucet).
    pub faucet_grant_nano: u64,
    /// How long after an attempt's deadline its pay reservation expires on its own.
    pub hold_grace_ms: u64,
    /// How long a node proven to cheat waits before it is challenged again (and so before any paid work).
    pub conviction_cooldown_ms: u64,
    /// How long a finished job stays in memory before it is archived to storage (see `retention.rs`): its status
    /// and its idempotency key are answered from memory meanwhile.
    pub finished_job_memory_ms: u64,
    /// Most finished jobs kept in memory: past it the oldest are archived sooner.
    pub max_finished_jobs_in_memory: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            heartbeat_interval_ms: 30_000,
            stale_after_missed: 1,
            offline_after_missed: 3,
            attestation_size: 256,
            max_attestation_size: 4096,
            attestation_target_ms: 2_000,
            canary_rate: 0.1,
            rechallenge_mean_ms: 3_600_000,
            rechallenge_min_share: 0.5,
            tile_rows: 256,
            min_task_deadline_ms: 60_000,
            deadline_ms_per_gflop: 2_000,
            freivalds_rounds: freivalds::DEFAULT_ROUNDS,
            max_queue_wait_ms: 600_000,
            max_attempts: 5,
            wgsl_replicas: 2,
            spot_check: SpotCheckPolicy::default(),
            wgsl_max_replicas: 5,
            weights: Weights::default(),
            max_strikes: 16,
            max_nodes: 100_000,
            max_jobs: 10_000,
            verify_timeout_ms: 120_000,
            max_jobs_per_client: 100,
            max_queued_tasks: 1_000_000,
            min_price_nano_per_gflop: 1,
            max_operand_bytes: 4 << 30,
            fee_bps: 500,
            slash_bps: 5_000,
            unstake_delay_ms: 7 * 24 * 3_600_000,
            stake_for_full_discount_nano: 10_000 * neurolov_ledger::NANO_PER_NLOV,
            faucet_grant_nano: 0,
            hold_grace_ms: 60_000,
            conviction_cooldown_ms: 3_600_000,
            finished_job_memory_ms: 3_600_000,
            max_finished_jobs_in_memory: 10_000,
        }
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
        let cap = match spec {
            JobSpec::Matmul { max_price_nano_per_gflop, .. } | JobSpec::Wgsl { max_price_nano_per_gflop, .. } => {
                *max_price_nano_per_gflop
            }
        };
        let copies: Vec<(u64, u32)> = works.iter().map(|&(w, wgsl)| (w, self.paid_copies(wgsl))).collect();
        let needed = self.escrow_needed(&copies, cap).ok_or(SubmitError::PriceTooHigh)?;
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
        self.jobs.insert(job.with_tasks(task_ids));
        self.persist_ids();
        self.persist_job(id);
        self.dispatch();
        Ok((id, self.take_effects()))
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
                let kind = match self.jobs.get(&id)?.spec {
                    JobSpec::Matmul { .. } => "matmul",
                    JobSpec::Wgsl { .. } => "wgsl",
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
        std::mem::take(&mut self.effects)
    }

    fn send(&mut self, conn: ConnId, msg: ToNode) {
        self.effects.push(Effect::Send { conn, msg });
    }

    fn strike(&mut self, conn: ConnId, code: ErrorCode, message: String) {
        tracing::debug!(conn, ?code, %message, "frame refused");
        self.send(conn, ToNode::Error { code, message });
        if let Some(c) = self.registry.conn_mut(conn) {
            c.strikes += 1;
            if c.strikes >= self.cfg.max_strikes {
                self.effects.push(Effect::Close { conn, reason: "too many refused frames".into() });
            }
        }
    }

    fn handle_frame(
        &mut self,
        conn: ConnId,
        env: Envelope,
        msg: FromNode,
        blobs: &dyn Blobs,
    ) -> Result<(), (ErrorCode, String)> {
        let Some(c) = self.registry.conn(conn) else {
            return Err((ErrorCode::NotRegistered, "unknown connection".into()));
        };
        let (session, seq) = msg.session_seq();
        if session != c.nonce {
            return Err((ErrorCode::WrongSession, "session does not match this connection's challenge".into()));
        }
        if c.last_seq.is_some_and(|last| seq <= last) {
            return Err((ErrorCode::Replayed, format!("sequence number {seq} already used")));
        }
        if let Some(node) = c.node
            && self.registry.get(&node).and_then(|n| n.conn) != Some(conn)
        {
            return Err((ErrorCode::WrongSession, "this session was superseded by a newer one".into()));
        }
        match (c.node, &msg) {
            (None, FromNode::Register { .. }) => {}
            (None, _) => return Err((ErrorCode::NotRegistered, "register first".into())),
            (Some(_), FromNode::Register { .. }) => return Err((ErrorCode::Malformed, "already registered".into())),
            (Some(node), _) if node != env.signer => {
                return Err((ErrorCode::BadSignature, "signed by another node than the one registered".into()));
            }
            _ => {}
        }
        let node = env.signer;
        // A refused frame changes nothing, its sequence number included.
        let handled = self.handle_message(conn, node, env, msg, blobs);
        if handled.is_ok()
            && let Some(c) = self.registry.conn_mut(conn)
        {
            c.last_seq = Some(seq);
        }
        handled
    }

    fn handle_message(
        &mut self,
        conn: ConnId,
        node: Id,
        env: Envelope,
        msg: FromNode,
        blobs: &dyn Blobs,
    ) -> Result<(), (ErrorCode, String)> {
        match msg {
            FromNode::Register {
                version,
                operator,
                kind,
                claimed,
                price_nano_per_gflop,
                slots,
                operator_delegation,
                ..
            } => {
                // An operator is paid for a node's work and slashed for its fraud, so it must have said yes.
                neurolov_protocol::identity::check_delegation(&operator, &node, operator_delegation.as_ref()).map_err(
                    |_| {
                        (
                            ErrorCode::BadSignature,
                            "the operator has not delegated to this node (operator_delegation)".into(),
                        )
                    },
                )?;
                if version != PROTOCOL_VERSION {
                    return Err((
                        ErrorCode::UnsupportedVersion,
                        format!("this coordinator speaks version {PROTOCOL_VERSION}"),
                    ));
                }
                if slots == 0 || slots > neurolov_protocol::messages::MAX_SLOTS {
                    return Err((
                        ErrorCode::Malformed,
                        format!("slots must be 1..={}", neurolov_protocol::messages::MAX_SLOTS),
                    ));
                }
                self.register(conn, node, operator, kind, claimed, price_nano_per_gflop, slots)
            }
            FromNode::Heartbeat { .. } => {
                self.heard_from(node);
                Ok(())
            }
            FromNode::Commit { task_id, attempt, result_hash, .. } => {
                self.heard_from(node);
                let a = self.assignment_mut(task_id, attempt, node)?;
                if a.commit.is_some() {
                    return Err((ErrorCode::Malformed, "attempt already committed".into()));
                }
                a.commit = Some((result_hash, env));
                Ok(())
            }
            FromNode::Result { task_id, attempt, result_hash, .. } => {
                self.heard_from(node);
                let (expected_bytes, operands) =
                    self.tasks.get(&task_id).map_or((0, None), |t| (result_bytes(&t.work), t.operands.clone()));
                let now = self.now_ms;
                let a = self.assignment_mut(task_id, attempt, node)?;
                if a.verifying || a.result.is_some() {
                    return Err((ErrorCode::Malformed, "result already delivered".into()));
                }
                match &a.commit {
                    Some((committed, _)) if *committed == result_hash => {}
                    Some(_) => {
                        return Err((ErrorCode::CommitmentMismatch, "result hash differs from the commitment".into()));
                    }
                    None => return Err((ErrorCode::CommitmentMismatch, "commit before sending a result".into())),
                }
                // The size is checked before anything is read: a node cannot make the coordinator load a huge blob.
                let size =
                    blobs.size(&result_hash).ok_or((ErrorCode::UnknownTask, "result blob not uploaded".into()))?;
                if size != expected_bytes {
                    return Err((
                        ErrorCode::Malformed,
                        format!("result is {size} bytes, the task produces {expected_bytes}"),
                    ));
                }
                a.verifying = true;
                a.delivered_ms = now;
                self.tasks.begin_check(now, task_id, attempt, node);
                // Delivered: the node's slot is free, and the result stands even if the node goes away now. It is
                // read and checked off the core's lock; `verified` settles it.
                self.vacate(task_id, attempt, node);
                let rounds = self.cfg.freivalds_rounds;
                let check = Verification::new(task_id, attempt, node, result_hash, operands, rounds);
                self.effects.push(Effect::Verify(Box::new(check)));
                Ok(())
            }
            FromNode::Failed { task_id, attempt, reason, .. } => {
                self.heard_from(node);
                let a = self.assignment_mut(task_id, attempt, node)?;
                // A delivered result is judged, whatever the node says next: taking it back would dodge the check
                // of its signed commitment.
                if a.verifying || a.result.is_some() {
                    return Err((ErrorCode::Malformed, "result already delivered".into()));
                }
                tracing::info!(%node, task_id, %reason, "node gave a task back");
                self.drop_assignment(task_id, attempt, node, AttemptEnd::Failed);
                Ok(())
            }
            FromNode::Goodbye { .. } => {
                self.go_offline(node, "goodbye");
                self.effects.push(Effect::Close { conn, reason: "goodbye".into() });
                Ok(())
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn register(
        &mut self,
        conn: ConnId,
        id: Id,
        operator: Id,
        kind: NodeKind,
        claimed: ClaimedHardware,
        price_nano_per_gflop: u64,
        slots: u32,
    ) -> Result<(), (ErrorCode, String)> {
        if !self.registry.contains(&id) && self.registry.len() >= self.cfg.max_nodes && !self.make_room() {
            return Err((ErrorCode::RateLimited, format!("the network is full ({} nodes)", self.cfg.max_nodes)));
        }
        let now = self.now_ms;
        // A node that registers again on a new connection leaves its old session behind.
        if let Some(old) = self.registry.get(&id).and_then(|n| n.conn).filter(|&c| c != conn) {
            self.go_offline(id, "registered on a new connection");
            self.effects.push(Effect::Close { conn: old, reason: "superseded by a new session".into() });
        }
        let n = self.registry.entry(id, |key| Node::new(key, operator, kind, now));
        if n.operator != operator {
            return Err((ErrorCode::Malformed, "a node's operator cannot change".into()));
        }
        n.kind = kind;
        n.claimed = claimed;
        n.price_nano_per_gflop = price_nano_per_gflop;
        n.slots = slots;
        n.conn = Some(conn);
        n.last_seen_ms = now;
        n.state = if n.attested { NodeState::Active } else { NodeState::Attesting };
        let attested = n.attested;
        if let Some(c) = self.registry.conn_mut(conn) {
            c.node = Some(id);
        }
        self.open_account(wallet(&operator), neurolov_ledger::Kind::Provider, &operator.to_string());
        self.send(conn, ToNode::Registered { node: id, heartbeat_interval_ms: self.cfg.heartbeat_interval_ms });
        self.sync_scheduler(id);
        if attested {
            self.schedule_rechallenge(id);
        } else {
            self.challenge(id);
        }
        Ok(())
    }

    fn heard_from(&mut self, id: Id) {
        let now = self.now_ms;
        let Some(n) = self.registry.get_mut(&id) else { return };
        n.up_ms += now.saturating_sub(n.last_seen_ms).min(self.cfg.heartbeat_interval_ms);
        n.last_seen_ms = now;
        if n.state == NodeState::Stale {
            n.state = if n.attested { NodeState::Active } else { NodeState::Attesting };
            self.sync_scheduler(id);
        }
    }

    fn assignment_mut(&mut self, task: TaskId, attempt: u32, node: Id) -> Result<&mut Assignment, (ErrorCode, String)> {
        self.tasks
            .get_mut(&task)
            .filter(|t| !t.done)
            .and_then(|t| t.assignments.iter_mut().find(|a| a.attempt == attempt && a.node == node && !a.dropped))
            .ok_or((ErrorCode::UnknownTask, format!("no open attempt {attempt} of task {task} for this node")))
    }

    /// The node no longer works on this attempt: free its slot (once).
    fn vacate(&mut self, tid: TaskId, attempt: u32, node: Id) {
        // Only job tasks took a scheduler slot; challenges are sent outside the scheduler.
        let holds_slot = self.tasks.get(&tid).is_some_and(|t| matches!(t.purpose, Purpose::Job(_)));
        let Some(n) = self.registry.get_mut(&node) else { return };
        if n.running.remove(&(tid, attempt)) && holds_slot {
            let key = n.key;
            let _ = self.sched.release(key);
        }
    }

    fn reliability_of(&self, n: &Node) -> f64 {
        let known = self.now_ms.saturating_sub(n.first_seen_ms) / 1000;
        reliability(&WorkHistory { uptime_s: n.up_ms / 1000, known_s: known, ..n.history })
    }

    /// Tells the scheduler what is now true of a node.
    fn sync_scheduler(&mut self, id: Id) {
        self.persist_node(id);
        let Some(n) = self.registry.get(&id) else { return };
        let info = NodeInfo {
            operator: operator_key(&n.operator),
            eligible: n.attested && n.state == NodeState::Active,
            verified_gflops: n.gflops_verified,
            reliability: self.reliability_of(n).clamp(0.0, 1.0),
            price_nano_per_gflop: n.price_nano_per_gflop,
            // Claims, not measurements: a node that claims a feature or memory it lacks fails those tasks and loses
            // reliability. Unknown feature names are ignored; memory 0 means "not stated".
            features: n.claimed.features.iter().fold(
                if n.claimed.wgsl { RUNS_WGSL } else { neurolov_scheduler::Features::NONE },
                |acc, name| {
                    jobs::feature_bits(std::slice::from_ref(name))
                        .map_or(acc, |f| neurolov_scheduler::Features(acc.0 | f.0))
                },
            ),
            memory_bytes: if n.claimed.memory_bytes == 0 { u64::MAX } else { n.claimed.memory_bytes },
            slots: n.slots,
            stake_share: self.stake_share(&n.operator),
        };
        let key = n.key;
        if let Err(e) = self.sched.upsert(key, info) {
            tracing::warn!(node = %id, error = %e, "scheduler refused node metrics");
        }
    }

    fn new_task(
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

    /// Sends a node its (re-)attestation: a matmul from a secret seed, timed and checked with Freivalds.
    fn challenge(&mut self, id: Id) {
        if self.registry.get(&id).is_none_or(|n| n.challenge.is_some() || n.conn.is_none()) {
            return;
        }
        let size = self.registry.get(&id).map_or(0, |n| n.challenge_size).max(self.cfg.attestation_size);
        let (seed_a, seed_b) = (self.rng.u64(..), self.rng.u64(..));
        let verify_seed = self.rng.u64(..);
        let (work, operands) = jobs::seeded_matmul(size, size, size, seed_a, seed_b, verify_seed);
        let mflop = 2 * u64::from(size).pow(3) / 1_000_000;
        let tid = self.new_task(Purpose::Attestation(id), work, Some(operands), mflop, 1);
        // Challenge ids are recorded too, so a restarted coordinator never hands out the same task id twice.
        self.persist_ids();
        if let Some(n) = self.registry.get_mut(&id) {
            n.challenge = Some(tid);
        }
        self.assign(tid, id);
    }

    /// A challenge passed at `measured` GFLOP/s. A challenge that came back in under `attestation_target_ms`
    /// measured the round trip more than the node: the next one, twice the size (eight times the work, within
    /// `max_attestation_size` and the node's memory claim), goes out at once, until compute dominates; the figure
    /// rises with each. (At a fixed 256³ a 380 GFLOP/s CPU was listed at 3–7 GFLOP/s; measured on a 16-core machine
    /// whose `neurolov bench` gives 289–301 GFLOP/s, a CPU node is now listed at 134 GFLOP/s after a 4096³ challenge.)
    fn attestation_passed(&mut self, n: Id, tid: TaskId, measured: f64) {
        let size = match self.tasks.get(&tid).map(|t| &t.work) {
            Some(Work::Matmul { k, .. }) => *k,
            _ => self.cfg.attestation_size,
        };
        let took_ms = 2.0 * f64::from(size).powi(3) / (measured.max(1e-9) * 1e6);
        let next = size.saturating_mul(2).min(self.cfg.max_attestation_size);
        let fits = |memory: u64| memory == 0 || jobs::matmul_bytes(next, next, next) <= memory;
        let target = self.cfg.attestation_target_ms as f64;
        let Some(rec) = self.registry.get_mut(&n) else { return };
        rec.challenge = None;
        let first = !rec.attested;
        let growing = size > rec.measured_size;
        let grow = took_ms < target && next > size && fits(rec.claimed.memory_bytes);
        // A re-measured node that has slowed down far below its record is re-rated at its real speed; a bigger
        // challenge measures more of the node and less of the network.
        let slowed = measured < rec.gflops_verified * self.cfg.rechallenge_min_share;
        if first || slowed || (growing && measured > rec.gflops_verified) {
            rec.gflops_verified = measured;
            rec.measured_size = size;
        }
        rec.challenge_size = size;
        rec.attested = true;
        if rec.state == NodeState::Attesting {
            rec.state = NodeState::Active;
        }
        tracing::info!(node = %n, gflops = measured, size, "attestation passed");
        if grow {
            rec.challenge_size = next;
            rec.next_challenge_ms = self.now_ms;
        } else {
            self.schedule_rechallenge(n);
        }
        self.sync_scheduler(n);
        // A passed challenge has nothing more to say: its operands go.
        self.tasks.remove(&tid);
    }

    fn schedule_rechallenge(&mut self, id: Id) {
        // Exponential waiting times: a node cannot tell when the next check comes.
        let u = self.rng.f64().max(1e-12);
        let wait = (-(u.ln()) * self.cfg.rechallenge_mean_ms as f64) as u64;
        let now = self.now_ms;
        if let Some(n) = self.registry.get_mut(&id) {
            n.next_challenge_ms = now.saturating_add(wait.max(1));
        }
    }

    fn assign(&mut self, tid: TaskId, node: Id) {
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
        });
        let msg = ToNode::Task(Task { task_id: tid, attempt, deadline_ms, work: t.work.clone() });
        let (purpose, work_mflop) = (t.purpose.clone(), t.work_mflop);
        let p = self.task_price(&purpose, work_mflop, price);
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
    fn task_price(&self, purpose: &Purpose, work_mflop: u64, ask_nano_per_gflop: u64) -> u64 {
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
            if t.done || result_bytes(&t.work) != len {
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
    fn start_waiting(&mut self, tid: TaskId) {
        let now = self.now_ms;
        let Some(t) = self.tasks.get_mut(&tid) else { return };
        let since = *t.waiting_since_ms.get_or_insert(now);
        let due = since.saturating_add(self.cfg.max_queue_wait_ms);
        self.tasks.check_waits_by(due);
    }

    /// Places queued tasks on nodes; tasks that cannot be placed now stay queued in order. Stops as soon as no
    /// eligible node has a free slot, so an event costs little however long the queue is.
    fn dispatch(&mut self) {
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
            let Some(t) = self.tasks.get(&tid) else { continue };
            if t.done {
                continue;
            }
            let live = t.assignments.iter().filter(|a| !a.dropped).count() as u32;
            let missing = t.replicas_wanted.saturating_sub(live);
            if missing == 0 {
                continue;
            }
            let none = neurolov_scheduler::Features::NONE;
            let (min_reliability, max_price, features) = match &t.purpose {
                Purpose::Job(j) => self
                    .jobs
                    .get(j)
                    .map_or((0.0, u64::MAX, none), |j| (j.min_reliability, j.max_price_nano_per_gflop, j.features)),
                Purpose::Attestation(_) | Purpose::Canary { .. } => (0.0, u64::MAX, none),
            };
            // WGSL work of any purpose (a job's task, its replicas, a canary, a third opinion) goes only to nodes
            // that run WGSL.
            let features = match t.work {
                Work::Wgsl { .. } => neurolov_scheduler::Features(features.0 | RUNS_WGSL.0),
                Work::Matmul { .. } => features,
            };
            let min_memory_bytes = jobs::task_bytes(&t.work);
            // Replicas of one task go to distinct operators: those holding a live attempt or that delivered a result
            // (a replica, or a wrong one) are excluded. A node that failed or timed out may get the task again.
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
            if unmet.contains(&kind) {
                waiting.push_back(tid);
                continue;
            }
            let req = Requirements {
                min_reliability,
                max_price_nano_per_gflop: max_price,
                replicas: missing,
                work_mflop: t.work_mflop,
                exclude_operators: kind.5.clone(),
                features,
                min_memory_bytes,
            };
            match self.sched.allocate(&req) {
                Ok(allocation) => {
                    placed = true;
                    if let Some(t) = self.tasks.get_mut(&tid) {
                        t.waiting_since_ms = None;
                    }
                    let first = allocation.placements.first().and_then(|p| self.registry.id_of(p.node));
                    for p in allocation.placements {
                        if let Some(id) = self.registry.id_of(p.node) {
                            self.assign(tid, id);
                        }
                    }
                    if let Some(node) = first
                        && self.spot_check(tid, node)
                    {
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

    /// Adaptive spot checking of a WGSL task at its first placement: with the probability the policy gives for the
    /// node's verified history (never zero), the task is also run by another operator and the results must agree.
    /// Returns whether a replica is now wanted.
    fn spot_check(&mut self, tid: TaskId, node: Id) -> bool {
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
    fn expire_waiting(&mut self) {
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

    fn supervise(&mut self) {
        self.expire_checks();
        let now = self.now_ms;
        let active = self.registry.values().filter(|n| n.state == NodeState::Active && n.attested);
        let seen = active.fold(usage::Sample::default(), |s, n| usage::Sample {
            active_nodes: s.active_nodes + 1,
            slots: s.slots + u64::from(n.slots),
            busy: s.busy + n.running.len() as u64,
        });
        self.usage.sample(now, seen);
        let interval = self.cfg.heartbeat_interval_ms.max(1);
        // A connection that has not registered within the offline window is dead weight.
        let silent = self.registry.unregistered_for(now, interval * self.cfg.offline_after_missed);
        for conn in silent {
            self.registry.close(conn);
            self.effects.push(Effect::Close { conn, reason: "did not register".into() });
        }
        let ids = self.registry.ids();
        for id in ids {
            let Some(n) = self.registry.get(&id) else { continue };
            if n.conn.is_none() {
                continue;
            }
            let missed = now.saturating_sub(n.last_seen_ms) / interval;
            if missed >= self.cfg.offline_after_missed {
                let conn = n.conn;
                self.go_offline(id, "missed heartbeats");
                if let Some(conn) = conn {
                    self.effects.push(Effect::Close { conn, reason: "missed heartbeats".into() });
                }
                continue;
            }
            if missed >= self.cfg.stale_after_missed && matches!(n.state, NodeState::Active | NodeState::Attesting) {
                tracing::warn!(node = %id, missed, "heartbeat missed");
                if let Some(n) = self.registry.get_mut(&id) {
                    n.state = NodeState::Stale;
                }
                self.sync_scheduler(id);
            }
            // Unannounced re-challenges of attested nodes, and new tries for nodes not yet attested.
            if let Some(n) = self.registry.get(&id)
                && n.challenge.is_none()
                && n.next_challenge_ms <= now
                && ((n.attested && n.state == NodeState::Active) || n.state == NodeState::Attesting)
            {
                self.challenge(id);
            }
        }
        // Deadlines: only attempts nodes are holding can be late.
        let held: Vec<(TaskId, u32, Id)> =
            self.registry.iter().flat_map(|(&id, n)| n.running.iter().map(move |&(t, a)| (t, a, id))).collect();
        for (tid, attempt, node) in held {
            let late = self.tasks.get(&tid).is_some_and(|t| {
                !t.done
                    && t.assignments.iter().any(|a| {
                        a.attempt == attempt
                            && a.node == node
                            && !a.dropped
                            && a.result.is_none()
                            && a.deadline_ms <= now
                    })
            });
            if late {
                self.drop_assignment(tid, attempt, node, AttemptEnd::TimedOut);
            }
        }
        self.expire_waiting();
    }

    /// A full registry forgets the idle offline node with the least verified work (the least recently seen among
    /// equals) — but never one whose operator has stake, or that holds provisional results (they must stay
    /// revocable). So throwaway keys cannot lock newcomers out — not even Sybils that once passed a check, which used
    /// to be kept forever.
    fn make_room(&mut self) -> bool {
        let victim = self
            .registry
            .iter()
            .filter(|(_, n)| n.state == NodeState::Offline && n.running.is_empty() && n.provisional.is_empty())
            .filter(|(_, n)| self.stake_share(&n.operator) == 0.0)
            .min_by_key(|(_, n)| (n.history.verified, n.last_seen_ms))
            .map(|(&id, _)| id);
        let Some(id) = victim else { return false };
        if let Some(n) = self.registry.forget(&id) {
            let _ = self.sched.remove(n.key);
        }
        tracing::info!(node = %id, "registry full: forgot the least proven idle offline node");
        self.effects.push(Effect::Persist(Record::NodeForgotten { id }));
        true
    }

    fn go_offline(&mut self, id: Id, why: &str) {
        let Some(n) = self.registry.get_mut(&id) else { return };
        tracing::info!(node = %id, why, "node offline");
        n.state = NodeState::Offline;
        n.conn = None;
        let running: Vec<(TaskId, u32)> = n.running.iter().copied().collect();
        self.sync_scheduler(id);
        for (tid, attempt) in running {
            self.drop_assignment(tid, attempt, id, AttemptEnd::Released);
        }
    }

    /// An assignment ends without an accepted result; the task goes back to the queue.
    fn drop_assignment(&mut self, tid: TaskId, attempt: u32, node: Id, outcome: AttemptEnd) {
        let Some(t) = self.tasks.get_mut(&tid) else { return };
        let Some(a) = t.assignments.iter_mut().find(|a| a.attempt == attempt && a.node == node && !a.dropped) else {
            return;
        };
        a.dropped = true;
        let purpose = t.purpose.clone();
        let done = t.done;
        let attempts = t.next_attempt;
        let conn = self.registry.get(&node).and_then(|n| n.conn);
        self.vacate(tid, attempt, node);
        self.release_hold(tid, attempt);
        if let Some(n) = self.registry.get_mut(&node) {
            match outcome {
                AttemptEnd::Failed | AttemptEnd::Wrong => n.history.failed += 1,
                AttemptEnd::TimedOut => n.history.timed_out += 1,
                AttemptEnd::Released => {}
            }
        }
        self.sync_scheduler(node);
        if outcome != AttemptEnd::Released
            && let Some(conn) = conn
        {
            self.send(conn, ToNode::Cancel { task_id: tid, attempt });
        }
        if done {
            return;
        }
        match purpose {
            Purpose::Attestation(n) => {
                // A failed challenge is not retried at once: the node waits for the next round, at the size it last
                // passed (a bigger one may have been more than it can hold).
                if let Some(node) = self.registry.get_mut(&n) {
                    node.challenge = None;
                    node.challenge_size = node.measured_size;
                }
                if let Some(t) = self.tasks.get_mut(&tid) {
                    t.done = true;
                }
                self.schedule_rechallenge(n);
                if let Some(node) = self.registry.get_mut(&n)
                    && !node.attested
                {
                    // Unattested nodes are retried after a short pause rather than the long re-challenge mean.
                    node.next_challenge_ms = self.now_ms.saturating_add(self.cfg.heartbeat_interval_ms);
                }
                self.tasks.remove(&tid);
            }
            Purpose::Canary { payer, .. } => {
                // A canary not answered is not retried: another one comes later, unannounced.
                self.tasks.remove(&tid);
                self.canary_settled(Some(payer));
            }
            Purpose::Job(job) => {
                if attempts >= self.cfg.max_attempts * self.tasks.get(&tid).map_or(1, |t| t.replicas_wanted.max(1)) {
                    self.fail_job(job, format!("task {tid} failed {attempts} attempts"));
                } else {
                    self.enqueue(tid);
                }
            }
        }
    }

    /// A result arrived: verify it (matmul: Freivalds; WGSL: replica agreement) and settle.
    fn evaluate(&mut self, tid: TaskId) {
        let Some(t) = self.tasks.get(&tid) else { return };
        match (&t.purpose, &t.work) {
            (Purpose::Canary { .. }, _) => self.evaluate_canary(tid),
            (_, Work::Matmul { .. }) => self.evaluate_matmul(tid),
            (_, Work::Wgsl { .. }) => self.evaluate_replicas(tid),
        }
    }

    fn evaluate_matmul(&mut self, tid: TaskId) {
        let Some(t) = self.tasks.get(&tid) else { return };
        // Freivalds ran in the result's verification (off the core's lock); its verdict is kept with the attempt.
        struct Ready {
            attempt: u32,
            node: Id,
            bytes: Arc<[u8]>,
            took_ms: u64,
            verdict: verification::MatmulVerdict,
        }
        let ready: Vec<Ready> = t
            .assignments
            .iter()
            .filter(|a| !a.dropped)
            .filter_map(|a| {
                Some(Ready {
                    attempt: a.attempt,
                    node: a.node,
                    bytes: a.result.clone()?,
                    took_ms: a.delivered_ms.saturating_sub(a.sent_ms),
                    verdict: a.verdict.clone()?,
                })
            })
            .collect();
        for r in ready {
            match r.verdict {
                verification::MatmulVerdict::Accepted => {
                    self.accept(tid, r.attempt, r.node, r.bytes, Some(r.took_ms.max(1)));
                    return;
                }
                verification::MatmulVerdict::Doubtful(reason) => self.doubt(tid, r.attempt, r.node, reason),
                verification::MatmulVerdict::Wrong(reason) => self.reject(tid, r.attempt, r.node, reason),
            }
        }
    }

    fn evaluate_replicas(&mut self, tid: TaskId) {
        let Some(t) = self.tasks.get(&tid) else { return };
        let tol = match &t.purpose {
            Purpose::Job(j) => self.jobs.get(j).map_or(replicas::DEFAULT_FLOAT, |j| j.tolerance),
            Purpose::Attestation(_) => Tolerance::Bitwise,
            Purpose::Canary { tolerance, .. } => *tolerance,
        };
        let results: Vec<(u32, Id, Arc<[u8]>)> = t
            .assignments
            .iter()
            .filter(|a| !a.dropped)
            .filter_map(|a| a.result.clone().map(|r| (a.attempt, a.node, r)))
            .collect();
        if (results.len() as u32) < t.replicas_wanted {
            return;
        }
        let outputs: Vec<&[u8]> = results.iter().map(|(_, _, r)| &r[..]).collect();
        match replicas::quorum(&outputs, tol, t.quorum as usize) {
            Some(winners) => {
                let losers: Vec<usize> = (0..results.len()).filter(|i| !winners.contains(i)).collect();
                for i in losers {
                    let (attempt, node, _) = &results[i];
                    self.reject(tid, *attempt, *node, "disagrees with the majority of replicas".into());
                }
                // Every agreeing replica is paid from the escrow (the client pays for its job's verification). The
                // job takes the reservation holder's bytes if it agreed, else the first agreeing one's; that one
                // settles last, because it completes the job and so refunds what the escrow has left.
                // Rejecting a loser may have ended the job (too many attempts): then nothing is accepted.
                if self.tasks.get(&tid).is_none_or(|t| t.done) {
                    return;
                }
                let hold = self.tasks.get(&tid).and_then(|t| t.hold).map(|(attempt, _)| attempt);
                let settler =
                    winners.iter().copied().find(|&i| Some(results[i].0) == hold).or(winners.first().copied());
                let mut ordered = winners.clone();
                if let Some(p) = settler {
                    ordered.retain(|&i| i != p);
                    ordered.push(p);
                }
                for &i in &ordered {
                    let (attempt, node, bytes) = results[i].clone();
                    self.accept_replica(tid, attempt, node, bytes, Some(i) == settler);
                }
                // Operators that agree independently make a known answer: a future canary.
                if let (true, Some(&i)) = (winners.len() >= 2, winners.first()) {
                    let producers: Vec<Id> =
                        winners.iter().filter_map(|&w| self.registry.get(&results[w].1).map(|n| n.operator)).collect();
                    self.remember_known_answer(tid, Arc::clone(&results[i].2), tol, producers);
                }
            }
            None => {
                let used = t.next_attempt;
                if used >= self.cfg.wgsl_max_replicas {
                    if let Purpose::Job(j) = t.purpose {
                        self.fail_job(j, format!("task {tid}: no majority among {used} replicas"));
                    }
                    return;
                }
                // Ask one more operator to break the tie.
                if let Some(t) = self.tasks.get_mut(&tid) {
                    t.replicas_wanted += 1;
                }
                self.enqueue(tid);
            }
        }
    }

    fn accept(&mut self, tid: TaskId, attempt: u32, node: Id, bytes: Arc<[u8]>, elapsed_ms: Option<u64>) {
        let Some(t) = self.tasks.get_mut(&tid) else { return };
        t.done = true;
        let purpose = t.purpose.clone();
        let work_mflop = t.work_mflop;
        let flops = match t.work {
            Work::Matmul { m, n, k, .. } => 2.0 * f64::from(m) * f64::from(n) * f64::from(k),
            Work::Wgsl { .. } => work_mflop as f64 * 1e6,
        };
        let others: Vec<(u32, Id)> = t
            .assignments
            .iter()
            .filter(|a| !(a.dropped || (a.attempt == attempt && a.node == node)))
            .map(|a| (a.attempt, a.node))
            .collect();
        self.finish_assignment(tid, attempt, node);
        for (other_attempt, other) in others {
            // Replicas still running are no longer needed.
            self.drop_assignment(tid, other_attempt, other, AttemptEnd::Released);
        }
        let gflops = elapsed_ms.map_or(0.0, |ms| flops / (ms as f64 * 1e6));
        // A matmul result passed Freivalds' check: that counts toward the finality of the node's other results.
        self.check_passed(node, work_mflop);
        self.settle_accepted(tid, attempt, node, &purpose, work_mflop, gflops, bytes);
    }

    fn accept_replica(&mut self, tid: TaskId, attempt: u32, node: Id, bytes: Arc<[u8]>, settles: bool) {
        let Some(t) = self.tasks.get_mut(&tid) else { return };
        t.done = true;
        let purpose = t.purpose.clone();
        let work_mflop = t.work_mflop;
        let replicated = t.quorum >= 2;
        self.finish_assignment(tid, attempt, node);
        if matches!(purpose, Purpose::Job(_)) {
            if replicated {
                self.check_passed(node, work_mflop);
            } else {
                self.mark_provisional(tid, node);
            }
        }
        // Every agreeing replica is paid; the job takes the settling one's bytes.
        if settles {
            self.settle_accepted(tid, attempt, node, &purpose, work_mflop, 0.0, bytes);
        } else {
            self.pay(tid, attempt, node, &purpose, work_mflop);
        }
    }

    fn finish_assignment(&mut self, tid: TaskId, attempt: u32, node: Id) {
        if let Some(t) = self.tasks.get_mut(&tid)
            && let Some(a) = t.assignments.iter_mut().find(|a| a.attempt == attempt && a.node == node)
        {
            a.dropped = true;
        }
        let conn = self.registry.get(&node).and_then(|n| n.conn);
        self.vacate(tid, attempt, node);
        if let Some(n) = self.registry.get_mut(&node) {
            n.history.verified += 1;
        }
        if let Some(conn) = conn {
            self.send(conn, ToNode::Verdict { task_id: tid, attempt, accepted: true, reason: "verified".into() });
        }
    }

    /// Settles an accepted result; `measured_gflops` is the task's flops over its round-trip time.
    #[allow(clippy::too_many_arguments)]
    fn settle_accepted(
        &mut self,
        tid: TaskId,
        attempt: u32,
        node: Id,
        purpose: &Purpose,
        work_mflop: u64,
        measured_gflops: f64,
        bytes: Arc<[u8]>,
    ) {
        match *purpose {
            // Canaries settle in `evaluate_canary`.
            Purpose::Canary { .. } => {}
            Purpose::Attestation(n) => self.attestation_passed(n, tid, measured_gflops),
            Purpose::Job(job) => {
                if let Some(j) = self.jobs.get_mut(&job) {
                    let result_hash = blob_hash(&bytes);
                    j.task_done(tid, result_hash.clone());
                    // Recorded before the reward is ordered: after a crash a paid task is never run (and paid) again.
                    self.effects.push(Effect::Persist(Record::TaskResult { job, task: tid, result_hash }));
                    self.pay(tid, attempt, node, purpose, work_mflop);
                    if let Some(state) = self.jobs.get(&job).map(|j| j.state.clone()).filter(JobState::is_final) {
                        self.job_ended(job);
                        self.persist_job(job);
                        self.refund(job);
                        self.retire_tasks(job);
                        self.effects.push(Effect::JobFinished { job, state });
                    }
                }
            }
        }
        self.sync_scheduler(node);
    }

    /// Orders the reward for an accepted attempt, at the price the node asked when it took the task (never above
    /// the job's limit, whatever the node asks by the time it is paid), from the job's escrow.
    fn pay(&mut self, tid: TaskId, attempt: u32, node: Id, purpose: &Purpose, work_mflop: u64) {
        let Purpose::Job(job) = *purpose else { return };
        let Some(n) = self.registry.get(&node) else { return };
        let operator = n.operator;
        let asked = self
            .tasks
            .get(&tid)
            .and_then(|t| t.assignments.iter().find(|a| a.attempt == attempt && a.node == node))
            .map_or(n.price_nano_per_gflop, |a| a.price_nano_per_gflop);
        let limit = self.jobs.get(&job).map_or(u64::MAX, |j| j.max_price_nano_per_gflop);
        let rate = asked.min(limit);
        let price = self.task_price(purpose, work_mflop, asked);
        let (paid_nano, fee_nano) = self.pay_task(tid, attempt, operator, price);
        self.effects.push(Effect::Reward {
            job,
            task: tid,
            node,
            operator,
            work_mflop,
            price_nano_per_gflop: rate,
            paid_nano,
            fee_nano,
        });
    }

    /// A result outside the tight tolerance that rounding could still explain: not taken, not paid, counted as a
    /// failure of the node (its reliability falls), run again elsewhere; no evidence and no slash.
    fn doubt(&mut self, tid: TaskId, attempt: u32, node: Id, reason: String) {
        tracing::warn!(%node, task = tid, attempt, %reason, "result doubtful");
        if let Some(conn) = self.registry.get(&node).and_then(|n| n.conn) {
            self.send(conn, ToNode::Verdict { task_id: tid, attempt, accepted: false, reason });
        }
        self.drop_assignment(tid, attempt, node, AttemptEnd::Failed);
    }

    /// A result failed verification: keep the node's signed commitment as evidence, penalize, requeue.
    fn reject(&mut self, tid: TaskId, attempt: u32, node: Id, reason: String) {
        let commit = self
            .tasks
            .get(&tid)
            .and_then(|t| t.assignments.iter().find(|a| a.attempt == attempt && a.node == node))
            .and_then(|a| a.commit.as_ref().map(|(_, env)| env.clone()));
        tracing::warn!(%node, task = tid, attempt, %reason, "result rejected");
        let evidence = commit.and_then(|commit| {
            let work = self.tasks.get(&tid)?.work.clone();
            Some(Evidence { task: tid, attempt, commit, work, reason: reason.clone() })
        });
        if let Some(evidence) = evidence {
            self.effects.push(Effect::Persist(Record::Evidence(Box::new(evidence.clone()))));
            self.remember_evidence(evidence.clone());
            let mut slashed_nano = 0;
            if let Some(operator) = self.registry.get(&node).map(|n| n.operator) {
                slashed_nano = self.slash(operator, tid, attempt);
                self.effects.push(Effect::Slash { node, operator, evidence, slashed_nano });
            }
            self.revoke_provisional(node, slashed_nano);
        }
        if let Some(conn) = self.registry.get(&node).and_then(|n| n.conn) {
            self.send(conn, ToNode::Verdict { task_id: tid, attempt, accepted: false, reason });
        }
        // Proven fraud costs the node its attestation and its history: no paid work until it passes a new challenge,
        // which it is not given before the cooldown, and then it is spot-checked like a newcomer (a caught node used
        // to keep its floor spot-check rate and be re-attested seconds later).
        if let Some(n) = self.registry.get_mut(&node) {
            n.attested = false;
            if n.state == NodeState::Active {
                n.state = NodeState::Attesting;
            }
            n.history.verified = 0;
            n.next_challenge_ms = self.now_ms.saturating_add(self.cfg.conviction_cooldown_ms);
        }
        self.drop_assignment(tid, attempt, node, AttemptEnd::Wrong);
        // Its other work is not trusted either: running attempts and delivered replicas still awaiting agreement.
        let others: Vec<(TaskId, u32)> = self
            .tasks
            .iter()
            .filter(|(_, t)| !t.done && matches!(t.purpose, Purpose::Job(_)))
            .flat_map(|(&other, t)| {
                t.assignments.iter().filter(|a| a.node == node && !a.dropped).map(move |a| (other, a.attempt))
            })
            .collect();
        for (other, other_attempt) in others {
            self.drop_assignment(other, other_attempt, node, AttemptEnd::Released);
        }
    }

    fn fail_job(&mut self, job: JobId, reason: String) {
        let Some(j) = self.jobs.get_mut(&job) else { return };
        if j.state.is_final() {
            return;
        }
        j.state = JobState::Failed { reason };
        let state = j.state.clone();
        let tasks = j.tasks.clone();
        self.job_ended(job);
        self.persist_job(job);
        for tid in tasks {
            let live: Vec<(u32, Id)> = self
                .tasks
                .get(&tid)
                .map(|t| t.assignments.iter().filter(|a| !a.dropped).map(|a| (a.attempt, a.node)).collect())
                .unwrap_or_default();
            if let Some(t) = self.tasks.get_mut(&tid) {
                t.done = true;
            }
            for (attempt, node) in live {
                self.drop_assignment(tid, attempt, node, AttemptEnd::Released);
                if let Some(conn) = self.registry.get(&node).and_then(|n| n.conn) {
                    self.send(conn, ToNode::Cancel { task_id: tid, attempt });
                }
            }
        }
        self.refund(job);
        self.retire_tasks(job);
        self.effects.push(Effect::JobFinished { job, state });
    }

    /// A finished job's tasks keep only what its status page shows: operands and result bytes are let go (the job
    /// keeps its assembled result), so memory does not grow with the jobs served.
    fn retire_tasks(&mut self, job: JobId) {
        let Some(tasks) = self.jobs.get(&job).map(|j| j.tasks.clone()) else { return };
        for tid in tasks {
            if let Some(t) = self.tasks.get_mut(&tid) {
                t.operands = None;
                for a in &mut t.assignments {
                    a.result = None;
                }
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AttemptEnd {
    /// The node said it could not do it.
    Failed,
    /// The node's result was wrong.
    Wrong,
    TimedOut,
    /// Taken back through no fault of the node (it went offline, the job ended, another replica won).
    Released,
}

/// The blobs a piece of work reads.
fn work_blobs(work: &Work, out: &mut HashSet<String>) {
    let blob = |r: &DataRef| match r {
        DataRef::Blob { hash } => Some(hash.clone()),
        DataRef::Seeded { .. } => None,
    };
    match work {
        Work::Matmul { a, b, .. } => out.extend([a, b].into_iter().filter_map(blob)),
        Work::Wgsl { source, buffers, .. } => {
            out.extend(blob(source));
            out.extend(buffers.iter().filter_map(|b| b.init.as_ref().and_then(blob)));
        }
    }
}

/// The blobs a piece of evidence needs to be checked again: its work's inputs and the result its node committed to.
pub fn evidence_blobs(e: &Evidence, out: &mut HashSet<String>) {
    work_blobs(&e.work, out);
    if let Ok(FromNode::Commit { result_hash, .. }) = e.commit.open::<FromNode>() {
        out.insert(result_hash);
    }
}

/// A node frame parsed, its signature checked and its fields held to their limits — or why not.
pub type Opened = Result<(Envelope, FromNode), (ErrorCode, String)>;

/// Opens a node frame: pure and stateless, so the shell runs it before it locks the core.
pub fn open_frame(text: &str) -> Opened {
    let code = |e: neurolov_protocol::EnvelopeError| match e {
        neurolov_protocol::EnvelopeError::TooLarge(_) => (ErrorCode::TooLarge, e.to_string()),
        neurolov_protocol::EnvelopeError::Signature(_) => (ErrorCode::BadSignature, e.to_string()),
        neurolov_protocol::EnvelopeError::Malformed(_) => (ErrorCode::Malformed, e.to_string()),
    };
    let env = Envelope::from_frame(text).map_err(code)?;
    let msg: FromNode = env.open().map_err(code)?;
    msg.check_limits().map_err(|e| (ErrorCode::Malformed, e))?;
    Ok((env, msg))
}

/// The scheduler's bit for a node that runs clients' WGSL (`ClaimedHardware::wgsl`), which every WGSL task needs. The
/// top bit, apart from the optional WebGPU features a job may name (`Feature::ALL`, from bit 0 up).
const RUNS_WGSL: neurolov_scheduler::Features = neurolov_scheduler::Features(1 << 63);

/// The scheduler's key for an operator: the first eight bytes of its public key.
fn operator_key(id: &Id) -> u64 {
    let b = id.as_bytes();
    u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

/// Hex blake3 of bytes, the blob address.
pub fn blob_hash(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}
