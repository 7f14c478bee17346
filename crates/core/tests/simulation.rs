//! Deterministic simulation of a whole network around the core: nodes that churn, crash and lose messages, and
//! dishonest nodes of several kinds (always wrong, sometimes wrong, honest then cheating, lazily copying another
//! result, colluding pairs returning the same wrong answer). Every run is replayed from its seed. Invariants:
//!
//! - no wrong matmul result is accepted (each finished job's C is checked against an exact product);
//! - every job ends done or failed, explicitly;
//! - no task is ever held by an unattested or offline node.
//!
//! In half the runs the coordinator itself crashes once and is rebuilt from what it asked to persist.
//!
//! `NEUROLOV_SIM_RUNS` sets the number of seeded runs (default 200); `NEUROLOV_SIM_SEED` replays one seed.

mod common;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use common::{Db, Store};

use neurolov_core::{Blobs, Config, ConnId, Core, Effect, InputData, JobId, JobSpec, JobState, NodeState, Restored};
use neurolov_protocol::messages::{
    ClaimedHardware, DataRef, NodeKind, Task, ToNode, WgslBuffer, Work, seeded_f32, seeded_f32_at,
};
use neurolov_protocol::{Envelope, FromNode, Keypair};
use neurolov_verify::replicas::DEFAULT_FLOAT;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Behavior {
    Honest,
    AlwaysWrong,
    SometimesWrong(f64),
    HonestThenCheat(u32),
    /// Returns the last result it saw, whatever task it was for.
    LazyCopier,
    /// Returns a wrong answer derived only from the task, so two colluders agree on it.
    Colluder,
}

impl Behavior {
    fn is_dishonest(self) -> bool {
        self != Behavior::Honest
    }
}

struct SimNode {
    kp: Keypair,
    operator: Keypair,
    behavior: Behavior,
    conn: Option<ConnId>,
    session: Option<String>,
    seq: u64,
    /// Tasks being computed: (task, ready at).
    working: Vec<(Task, u64)>,
    next_heartbeat_ms: u64,
    down_until_ms: u64,
    done: u32,
    last_result: Option<Vec<u8>>,
    speed_ms_per_task: u64,
}

struct Sim {
    seed: u64,
    rng: fastrand::Rng,
    core: Core,
    now: u64,
    store: Store,
    nodes: Vec<SimNode>,
    conn_node: HashMap<ConnId, usize>,
    next_conn: ConnId,
    to_nodes: VecDeque<(ConnId, ToNode)>,
    loss: f64,
    jobs: BTreeMap<JobId, (JobSpec, Option<JobState>)>,
    slashed: usize,
    db: Db,
    crash_at_step: Option<usize>,
    restarts: u64,
    /// Jobs reopened because a caught node's provisional result was revoked.
    reopened: u64,
    /// Result checks the shell is running off the core's lock; each finishes after a random delay, so a task's
    /// results can be judged out of order and after their node has gone.
    verifying: Vec<neurolov_core::Verification>,
    /// The governance proposal of this run (issue 16) and what it does: made, voted, queued and executed through
    /// the churn and the coordinator's crash like everything else.
    proposal: Option<(u64, neurolov_core::Action)>,
}

/// The client (who also stakes and proposes) and the account a governance grant goes to.
fn client() -> neurolov_protocol::Id {
    Keypair::from_seed([9; 32]).id()
}

fn grantee() -> neurolov_protocol::Id {
    Keypair::from_seed([10; 32]).id()
}

fn config() -> Config {
    Config {
        heartbeat_interval_ms: 1_000,
        attestation_size: 8,
        max_attestation_size: 32,
        rechallenge_mean_ms: 20_000,
        tile_rows: 4,
        min_task_deadline_ms: 5_000,
        max_attempts: 8,
        max_queue_wait_ms: 60_000,
        faucet_grant_nano: 1_000_000 * neurolov_ledger::NANO_PER_NLOV,
        // Finished jobs leave memory within the run (and across its restarts): their results are read from the
        // simulated store then.
        finished_job_memory_ms: 3_000,
        max_finished_jobs_in_memory: 4,
        governance: neurolov_core::GovernanceConfig {
            proposal_threshold_nano: neurolov_ledger::NANO_PER_NLOV,
            quorum_nano: neurolov_ledger::NANO_PER_NLOV,
            voting_delay_ms: 2_000,
            voting_period_ms: 6_000,
            timelock_ms: 4_000,
        },
        ..Config::default()
    }
}

fn matmul(a: &[f32], b: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
    let mut c = vec![0.0f32; m * n];
    neurolov_kernels::cpu::sgemm(a, b, &mut c, m, n, k);
    c
}

fn bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut nodes = Vec::new();
        let honest = rng.usize(3..6);
        let mut kinds: Vec<Behavior> = vec![Behavior::Honest; honest];
        let cheats = [
            Behavior::AlwaysWrong,
            Behavior::SometimesWrong(0.3),
            Behavior::HonestThenCheat(rng.u32(1..6)),
            Behavior::LazyCopier,
            Behavior::Colluder,
            Behavior::Colluder,
        ];
        for c in cheats {
            if rng.bool() {
                kinds.push(c);
            }
        }
        for (i, behavior) in kinds.into_iter().enumerate() {
            let kp = Keypair::from_seed(seed_bytes(seed, i as u64));
            // Colluders hide behind distinct operators, as real colluders would.
            let operator = Keypair::from_seed(seed_bytes(seed ^ 0xABCD, i as u64));
            nodes.push(SimNode {
                kp,
                operator,
                behavior,
                conn: None,
                session: None,
                seq: 0,
                working: Vec::new(),
                next_heartbeat_ms: 0,
                down_until_ms: 0,
                done: 0,
                last_result: None,
                speed_ms_per_task: rng.u64(50..800),
            });
        }
        // A new network starts the way the shell starts one: through restore from an empty store (genesis).
        let (core, genesis) = Core::restore(config(), seed, 0, Restored::default(), &Store::default());
        let mut db = Db::default();
        for e in genesis {
            if let Effect::Persist(r) = e {
                db.apply(r);
            }
        }
        Sim {
            seed,
            loss: rng.f64() * 0.05,
            rng,
            core,
            now: 0,
            store: Store::default(),
            nodes,
            conn_node: HashMap::new(),
            next_conn: 1,
            to_nodes: VecDeque::new(),
            jobs: BTreeMap::new(),
            proposal: None,
            slashed: 0,
            db,
            crash_at_step: None,
            restarts: 0,
            reopened: 0,
            verifying: Vec::new(),
        }
    }

    /// The coordinator dies and comes back from its database: every connection is gone.
    fn restart_coordinator(&mut self) {
        self.restarts += 1;
        let (core, effects) =
            Core::restore(config(), self.seed ^ (self.restarts << 32), self.now, self.db.restored(), &self.store);
        self.core = core;
        self.conn_node.clear();
        self.to_nodes.clear();
        // Checks in flight die with the process; the nodes' results are delivered again or their tasks re-run.
        self.verifying.clear();
        for n in &mut self.nodes {
            n.conn = None;
            n.session = None;
            n.working.clear();
            n.down_until_ms = self.now + 200;
        }
        self.apply(effects);
    }

    /// The client stakes and proposes one of: a new fee, new scheduler weights, a treasury grant.
    fn propose(&mut self) {
        use neurolov_core::{Action, ParamChange};
        let (now, who) = (self.now, client());
        if self.core.wallet_view(&who).balance_nano == 0 {
            let (_, effects) = self.core.faucet(now, who).unwrap_or_else(|e| self.fail(&format!("faucet: {e}")));
            self.apply(effects);
        }
        let effects = self
            .core
            .stake(now, who, 10 * neurolov_ledger::NANO_PER_NLOV, 77)
            .unwrap_or_else(|e| self.fail(&format!("stake: {e}")));
        self.apply(effects);
        let action = match self.rng.u8(..3) {
            0 => Action::SetParameter(ParamChange::FeeBps(self.rng.u64(..=2_000))),
            1 => {
                let performance_bps = self.rng.u64(..=10_000);
                let reliability_bps = self.rng.u64(..=10_000 - performance_bps);
                let cost_efficiency_bps = 10_000 - performance_bps - reliability_bps;
                Action::SetParameter(ParamChange::SchedulerWeights {
                    performance_bps,
                    reliability_bps,
                    cost_efficiency_bps,
                })
            }
            _ => Action::TreasurySpend { to: grantee(), amount_nano: 1_000 * neurolov_ledger::NANO_PER_NLOV },
        };
        let (p, effects) = self
            .core
            .propose(now, who, "simulated", action.clone())
            .unwrap_or_else(|e| self.fail(&format!("propose: {e}")));
        self.apply(effects);
        self.proposal = Some((p.id, action));
    }

    /// Moves the proposal on as its stakeholders would: vote once it is active, queue once it passed.
    fn govern(&mut self) {
        use neurolov_core::{ProposalState, Support};
        let Some((id, _)) = self.proposal.clone() else { return };
        let Some(p) = self.core.proposal(id) else { self.fail("the proposal was lost") };
        let result = match p.state(self.now) {
            ProposalState::Active if p.votes.is_empty() => self.core.cast_vote(self.now, client(), id, Support::For),
            ProposalState::Succeeded => self.core.queue_proposal(self.now, id),
            _ => return,
        };
        match result {
            Ok((_, effects)) => self.apply(effects),
            // The vote opens with the snapshot: a tick may not have taken it yet (it is taken by the vote itself).
            Err(e) => self.fail(&format!("governance: {e}")),
        }
    }

    fn proposal_executed(&self) -> bool {
        self.proposal.as_ref().is_none_or(|(id, _)| self.core.proposal(*id).is_some_and(|p| p.executed))
    }

    /// The proposal executed once and its effect holds, through whatever crash the run had.
    fn check_governance(&self) {
        use neurolov_core::{Action, ParamChange};
        let Some((id, action)) = &self.proposal else { return };
        let Some(p) = self.core.proposal(*id) else { self.fail("the proposal was lost") };
        if !p.executed {
            self.fail(&format!("the proposal is {}, not executed", p.state(self.now).name()));
        }
        let cfg = self.core.config();
        match action {
            Action::SetParameter(ParamChange::FeeBps(bps)) if cfg.fee_bps != *bps => {
                self.fail("the fee did not change")
            }
            Action::SetParameter(ParamChange::SchedulerWeights { performance_bps, .. })
                if (cfg.weights.performance() - *performance_bps as f64 / 10_000.0).abs() > 1e-9 =>
            {
                self.fail("the weights did not change")
            }
            Action::TreasurySpend { amount_nano, .. }
                if self.core.wallet_view(&grantee()).balance_nano != *amount_nano =>
            {
                self.fail("the grant was not paid exactly once")
            }
            _ => {}
        }
    }

    fn fail(&self, what: &str) -> ! {
        panic!("simulation seed {} failed: {what} (replay: NEUROLOV_SIM_SEED={})", self.seed, self.seed)
    }

    fn apply(&mut self, effects: Vec<Effect>) {
        for e in effects {
            match e {
                Effect::Send { conn, msg } => self.to_nodes.push_back((conn, msg)),
                Effect::Close { conn, .. } => {
                    if let Some(i) = self.conn_node.remove(&conn) {
                        let n = &mut self.nodes[i];
                        if n.conn == Some(conn) {
                            n.conn = None;
                            n.session = None;
                            n.working.clear();
                        }
                    }
                    let more = self.core.disconnected(self.now, conn);
                    self.apply(more);
                }
                Effect::StoreBlob { hash, bytes } => {
                    self.store.0.insert(hash, bytes);
                }
                Effect::JobFinished { job, state } => {
                    if let Some(j) = self.jobs.get_mut(&job) {
                        if j.1.is_some() {
                            self.fail(&format!("job {job} finished twice"));
                        }
                        j.1 = Some(state);
                    }
                }
                Effect::Slash { evidence, node, .. } => {
                    // Anyone can re-check the evidence: the commit is signed by the slashed node.
                    let msg: FromNode =
                        evidence.commit.open().unwrap_or_else(|e| self.fail(&format!("bad evidence: {e}")));
                    if evidence.commit.signer != node || !matches!(msg, FromNode::Commit { .. }) {
                        self.fail("evidence does not show the node's own commitment");
                    }
                    self.slashed += 1;
                }
                Effect::Reward { .. } => {}
                Effect::Halt { reason } => self.fail(&format!("the core halted: {reason}")),
                Effect::JobReopened { job, .. } => {
                    self.reopened += 1;
                    if let Some(j) = self.jobs.get_mut(&job) {
                        j.1 = None;
                    }
                }
                Effect::Persist(record) => self.db.apply(record),
                Effect::Verify(v) => self.verifying.push(*v),
            }
        }
    }

    fn send(&mut self, i: usize, msg: FromNode) {
        let Some(conn) = self.nodes[i].conn else { return };
        let env = Envelope::seal(&self.nodes[i].kp, &msg);
        if self.rng.f64() < self.loss {
            return;
        }
        let text = serde_json::to_string(&env).unwrap_or_default();
        let effects = self.core.frame(self.now, conn, &text, &self.store);
        self.apply(effects);
    }

    fn next_seq(&mut self, i: usize) -> (String, u64) {
        let n = &mut self.nodes[i];
        n.seq += 1;
        (n.session.clone().unwrap_or_default(), n.seq)
    }

    fn connect(&mut self, i: usize) {
        let conn = self.next_conn;
        self.next_conn += 1;
        self.nodes[i].conn = Some(conn);
        self.nodes[i].seq = 0;
        self.conn_node.insert(conn, i);
        let effects = self.core.connected(self.now, conn);
        self.apply(effects);
    }

    fn crash(&mut self, i: usize) {
        if let Some(conn) = self.nodes[i].conn.take() {
            self.conn_node.remove(&conn);
            self.nodes[i].working.clear();
            self.nodes[i].session = None;
            let effects = self.core.disconnected(self.now, conn);
            self.apply(effects);
        }
        self.nodes[i].down_until_ms = self.now + self.rng.u64(500..8_000);
    }

    fn fetch(&self, r: &DataRef) -> Vec<f32> {
        match r {
            DataRef::Seeded { seed, len, offset } => seeded_f32_at(*seed, *offset, *len as usize),
            DataRef::Inline { .. } => r
                .inline_bytes()
                .map(|b| b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
                .unwrap_or_default(),
            DataRef::Blob { hash } => self
                .store
                .get(hash)
                .map(|b| b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
                .unwrap_or_default(),
        }
    }

    /// The honest answer to a task.
    fn compute(&self, task: &Task) -> Vec<u8> {
        match &task.work {
            Work::Matmul { m, n, k, a, b } => {
                bytes(&matmul(&self.fetch(a), &self.fetch(b), *m as usize, *n as usize, *k as usize))
            }
            // The simulation does not run WGSL: an honest replica's output is a fixed function of the source.
            Work::Wgsl { source, .. } => bytes(&self.fetch(source).iter().map(|x| x * 2.0).collect::<Vec<_>>()),
            Work::Infer { .. } => panic!("the simulated network lists no models"),
        }
    }

    fn answer(&mut self, i: usize, task: &Task) -> Vec<u8> {
        let honest = self.compute(task);
        let wrong = |mut v: Vec<u8>, salt: u64| {
            if v.len() >= 4 {
                let at = (salt as usize % (v.len() / 4)) * 4;
                let x = f32::from_le_bytes([v[at], v[at + 1], v[at + 2], v[at + 3]]) + 1.0;
                v[at..at + 4].copy_from_slice(&x.to_le_bytes());
            } else {
                v.push(1);
            }
            v
        };
        let node = &self.nodes[i];
        let out = match node.behavior {
            Behavior::Honest => honest,
            Behavior::AlwaysWrong => wrong(honest, self.rng.u64(..)),
            Behavior::SometimesWrong(p) => {
                if self.rng.f64() < p {
                    wrong(honest, self.rng.u64(..))
                } else {
                    honest
                }
            }
            Behavior::HonestThenCheat(after) => {
                if node.done >= after {
                    wrong(honest, self.rng.u64(..))
                } else {
                    honest
                }
            }
            Behavior::LazyCopier => match &node.last_result {
                Some(prev) if prev.len() == honest.len() && *prev != honest => prev.clone(),
                _ => wrong(honest, task.task_id),
            },
            // Both colluders corrupt the same entry of the same task identically.
            Behavior::Colluder => wrong(honest, task.task_id),
        };
        self.nodes[i].last_result = Some(out.clone());
        out
    }

    fn deliver(&mut self) {
        let mut budget = 10_000;
        while let Some((conn, msg)) = self.to_nodes.pop_front() {
            budget -= 1;
            if budget == 0 {
                self.fail("message storm");
            }
            let Some(&i) = self.conn_node.get(&conn) else { continue };
            if self.nodes[i].conn != Some(conn) || self.rng.f64() < self.loss {
                continue;
            }
            match msg {
                ToNode::Challenge { nonce, .. } => {
                    self.nodes[i].session = Some(nonce.clone());
                    self.nodes[i].seq = 0;
                    let n = &self.nodes[i];
                    let msg = FromNode::Register {
                        version: 1,
                        session: nonce,
                        seq: 0,
                        operator: n.operator.id(),
                        kind: NodeKind::Native,
                        claimed: ClaimedHardware { adapter: "sim".into(), wgsl: true, ..ClaimedHardware::default() },
                        price_nano_per_gflop: 1 + (i as u64 % 5),
                        slots: 2,
                        operator_delegation: Some(neurolov_protocol::identity::delegate(&n.operator, &n.kp.id())),
                    };
                    self.send(i, msg);
                }
                ToNode::Task(task) => {
                    let ready = self.now + self.nodes[i].speed_ms_per_task;
                    self.nodes[i].working.push((task, ready));
                }
                ToNode::Cancel { task_id, attempt } => {
                    self.nodes[i].working.retain(|(t, _)| !(t.task_id == task_id && t.attempt == attempt));
                }
                ToNode::Registered { .. } | ToNode::Verdict { .. } | ToNode::Error { .. } => {}
                ToNode::Tasks { .. } => panic!("a version-1 node was sent a version-2 tasks frame"),
                ToNode::Open { .. } => panic!("the simulated network lists no models"),
            }
        }
    }

    fn step(&mut self, churn: bool) {
        self.now += self.rng.u64(50..700);
        // Each pending check finishes this step with probability ½, in random order.
        let mut i = 0;
        while i < self.verifying.len() {
            if self.rng.bool() {
                let check = self.verifying.swap_remove(i);
                let effects = self.core.verified(self.now, check.run(&self.store));
                self.apply(effects);
            } else {
                i += 1;
            }
        }
        for i in 0..self.nodes.len() {
            if self.nodes[i].conn.is_none() {
                if self.now >= self.nodes[i].down_until_ms {
                    self.connect(i);
                }
                continue;
            }
            if churn && self.rng.f64() < 0.004 {
                self.crash(i);
                continue;
            }
            if self.now >= self.nodes[i].next_heartbeat_ms && self.nodes[i].session.is_some() {
                // Now and then a node stalls a few heartbeats (a long GC pause, a flaky link).
                let stall = churn && self.rng.f64() < 0.01;
                self.nodes[i].next_heartbeat_ms = self.now + if stall { 3_500 } else { 800 };
                let (session, seq) = self.next_seq(i);
                self.send(i, FromNode::Heartbeat { session, seq });
            }
            let ready: Vec<Task> = {
                let now = self.now;
                let n = &mut self.nodes[i];
                let (done, wait): (Vec<_>, Vec<_>) = n.working.drain(..).partition(|(_, at)| *at <= now);
                n.working = wait;
                done.into_iter().map(|(t, _)| t).collect()
            };
            for task in ready {
                let out = self.answer(i, &task);
                let hash = blake3::hash(&out).to_hex().to_string();
                self.store.0.insert(hash.clone(), out.into());
                let (session, seq) = self.next_seq(i);
                self.send(
                    i,
                    FromNode::Commit {
                        session,
                        seq,
                        task_id: task.task_id,
                        attempt: task.attempt,
                        result_hash: hash.clone(),
                    },
                );
                let (session, seq) = self.next_seq(i);
                self.send(
                    i,
                    FromNode::Result { session, seq, task_id: task.task_id, attempt: task.attempt, result_hash: hash },
                );
                self.nodes[i].done += 1;
            }
        }
        self.deliver();
        let effects = self.core.tick(self.now);
        self.apply(effects);
        self.deliver();
        if let Err(e) = self.core.assignments_are_sound() {
            self.fail(&e);
        }
        if let Err(e) = self.core.ledger().check_full() {
            self.fail(&format!("ledger: {e}"));
        }
    }

    fn submit(&mut self) {
        let client = client();
        if self.core.wallet_view(&client).balance_nano == 0 {
            let (_, effects) =
                self.core.faucet(self.now, client).unwrap_or_else(|e| self.fail(&format!("faucet: {e}")));
            self.apply(effects);
        }
        let spec = if self.rng.u8(..) < 200 {
            let (m, n, k) = (self.rng.u32(1..14), self.rng.u32(1..9), self.rng.u32(1..9));
            JobSpec::Matmul {
                m,
                n,
                k,
                a: InputData::Seeded { seed: self.rng.u64(..) },
                b: InputData::Seeded { seed: self.rng.u64(..) },
                max_price_nano_per_gflop: 10_000_000,
                min_reliability: 0.0,
            }
        } else {
            let source: Vec<u8> = bytes(&seeded_f32(self.rng.u64(..), 8));
            let hash = blake3::hash(&source).to_hex().to_string();
            self.store.0.insert(hash.clone(), source.into());
            JobSpec::Wgsl {
                source_hash: hash,
                entry_point: "main".into(),
                buffers: vec![WgslBuffer {
                    binding: 0,
                    access: neurolov_protocol::messages::Access::ReadWrite,
                    size_bytes: 32,
                    init: None,
                }],
                dispatch: [1, 1, 1],
                tolerance: DEFAULT_FLOAT,
                work_mflop: 1,
                max_price_nano_per_gflop: 10_000_000,
                min_reliability: 0.0,
                features: Vec::new(),
            }
        };
        match self.core.submit(self.now, client, spec.clone(), &self.store) {
            Ok((id, effects)) => {
                self.jobs.insert(id, (spec, None));
                self.apply(effects);
            }
            Err(e) => self.fail(&format!("valid job refused: {e}")),
        }
    }

    fn run(&mut self) {
        if self.rng.bool() {
            self.crash_at_step = Some(self.rng.usize(50..350));
        }
        for s in 0..400 {
            if self.crash_at_step == Some(s) {
                self.restart_coordinator();
            }
            if s % 20 == 0 && s < 300 {
                self.submit();
            }
            if s == 25 {
                self.propose();
            }
            self.govern();
            self.step(true);
        }
        // Calm: no more crashes or stalls; honest capacity drains the queue, the proposal runs its course.
        self.loss = 0.0;
        for _ in 0..2_000 {
            if self.jobs.values().all(|(_, st)| st.is_some()) && self.proposal_executed() {
                break;
            }
            self.govern();
            self.step(false);
        }
        self.check();
        self.check_governance();
        self.check_retention();
        self.check();
    }

    /// WGSL jobs done, and how many of them stand on a forged result (spot checks are probabilistic: this is
    /// reported, not asserted).
    fn wgsl_outcomes(&self) -> (u64, u64) {
        let (mut done, mut forged) = (0, 0);
        for (&id, (spec, state)) in &self.jobs {
            if let (JobSpec::Wgsl { source_hash, .. }, Some(JobState::Done)) = (spec, state) {
                done += 1;
                let source = &self.store.0[source_hash];
                let floats: Vec<f32> =
                    source.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) * 2.0).collect();
                if self.result(id).as_deref() != Some(&bytes(&floats)[..]) {
                    forged += 1;
                }
            }
        }
        (done, forged)
    }

    /// A done job's result: from the core while the job is in memory, else from the store it was archived to.
    fn result(&self, id: JobId) -> Option<Vec<u8>> {
        if self.core.job(id).is_some() {
            return self.core.job_result(id, &self.store);
        }

        let (record, _) = self.db.archived.get(&id)?;
        let parts: Option<Vec<Arc<[u8]>>> = record
            .tasks
            .iter()
            .map(|t| self.db.results.get(t).and_then(|(_, hash)| self.store.0.get(hash).cloned()))
            .collect();
        Some(parts?.concat())
    }

    /// Finished jobs leave memory: long after the run, only running jobs, jobs with a result still provisional
    /// (revocable), and at most the configured number of others are left; every other job is in the store's archive
    /// with the state it finished in.
    fn check_retention(&mut self) {
        self.now += 10 * self.core.config().finished_job_memory_ms;
        let effects = self.core.tick(self.now);
        self.apply(effects);
        let running = self.jobs.values().filter(|(_, st)| st.is_none()).count();
        let provisional: usize = self.core.nodes().iter().map(|v| v.results_provisional).sum();
        let bound = running + provisional + self.core.config().max_finished_jobs_in_memory;
        if self.core.jobs_in_memory() > bound {
            self.fail(&format!("{} jobs still in memory, at most {bound} may be", self.core.jobs_in_memory()));
        }
        for (id, (record, _)) in &self.db.archived {
            match self.jobs.get(id) {
                Some((_, Some(state))) if *state == record.state => {}
                other => self.fail(&format!("job {id} archived as {:?}, it finished {other:?}", record.state)),
            }
        }
    }

    fn check(&self) {
        for (&id, (spec, state)) in &self.jobs {
            let Some(state) = state else {
                let nodes: Vec<String> = self
                    .core
                    .nodes()
                    .iter()
                    .map(|v| {
                        let b = self.nodes.iter().find(|n| n.kp.id() == v.id).map(|n| n.behavior);
                        format!(
                            "{:?} {} verified={} failed={} score={:?}",
                            b,
                            v.state.as_str(),
                            v.tasks_verified,
                            v.tasks_failed,
                            v.score
                        )
                    })
                    .collect();
                let attempts: Vec<String> = self
                    .core
                    .job(id)
                    .map(|j| j.tasks.iter().flat_map(|t| self.core.task_attempts(t.task)).collect::<Vec<_>>())
                    .unwrap_or_default()
                    .iter()
                    .map(|(node, attempt, committed, result, dropped)| {
                        let b = self.nodes.iter().find(|n| n.kp.id() == *node).map(|n| n.behavior);
                        format!("{b:?} attempt {attempt} committed={committed} result={result} dropped={dropped}")
                    })
                    .collect();
                self.fail(&format!(
                    "job {id} never finished: {:?} {:?}; queued {}; nodes {nodes:#?}; attempts {attempts:#?}",
                    spec,
                    self.core.job(id),
                    self.core.queued()
                ))
            };
            if let (JobSpec::Matmul { m, n, k, a, b, .. }, JobState::Done) = (spec, state) {
                let (InputData::Seeded { seed: sa }, InputData::Seeded { seed: sb }) = (a, b) else { unreachable!() };
                let (m, n, k) = (*m as usize, *n as usize, *k as usize);
                let want = matmul(&seeded_f32(*sa, m * k), &seeded_f32(*sb, k * n), m, n, k);
                let got = self.result(id).unwrap_or_else(|| self.fail(&format!("job {id} done without a result")));
                let got: Vec<f32> = got.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
                if got.len() != want.len() || got.iter().zip(&want).any(|(g, w)| (g - w).abs() > 1e-4) {
                    self.fail(&format!("job {id}: a wrong matmul result was accepted"));
                }
            }
        }
        // Money: the stored log replays to the live ledger; nothing was created or lost; every finished job's
        // escrow is back at zero (its client got the rest); every task was paid by its client at most once.
        let replayed = neurolov_core::rebuild_ledger(
            &self.db.accounts.values().cloned().collect::<Vec<_>>(),
            self.db.transfers.clone(),
        )
        .unwrap_or_else(|e| self.fail(&format!("stored ledger does not audit: {e}")));
        if replayed.circulating() != i128::from(neurolov_ledger::TOTAL_SUPPLY_NANO) {
            self.fail("total supply changed");
        }
        for (&id, (_, state)) in &self.jobs {
            let escrow = self.core.ledger().account(neurolov_core::escrow(id)).map_or(0, |a| a.balance());
            if state.is_some() && escrow != 0 {
                self.fail(&format!("job {id} ended with {escrow} left in escrow"));
            }
        }
        // Every agreeing replica of a task is paid (from its job's escrow), each on its own operator: no operator is
        // paid twice for one task. A posted hold names its pending transfer, whose credit is the operator.
        let credit_of: std::collections::HashMap<neurolov_ledger::TransferId, neurolov_ledger::AccountId> = self
            .db
            .transfers
            .iter()
            .filter(|t| t.code == neurolov_ledger::codes::TASK_HOLD)
            .map(|t| (t.id, t.credit))
            .collect();
        let mut paid = std::collections::HashMap::new();
        for t in self.db.transfers.iter().filter(|t| t.code == neurolov_ledger::codes::TASK_PAY) {
            let to = t.pending_id.and_then(|p| credit_of.get(&p).copied()).unwrap_or(t.credit);
            *paid.entry((t.user_data, to)).or_insert(0u32) += 1;
        }
        if paid.values().any(|&n| n > 1) {
            self.fail("a task paid one operator twice");
        }
        // Every fraud proven was stored as evidence, and a restarted core still counts it.
        if self.core.stats().frauds_proven != self.db.evidence.len() as u64 || self.slashed != self.db.evidence.len() {
            self.fail(&format!(
                "{} frauds counted, {} slashes, {} pieces of evidence stored",
                self.core.stats().frauds_proven,
                self.slashed,
                self.db.evidence.len()
            ));
        }
        // Nodes that only ever lie never get attested.
        for (view, node) in
            self.core.nodes().iter().filter_map(|v| self.nodes.iter().find(|n| n.kp.id() == v.id).map(|n| (v, n)))
        {
            if node.behavior == Behavior::AlwaysWrong && view.tasks_verified > 0 {
                self.fail("an always-wrong node had work verified");
            }
            if node.behavior == Behavior::AlwaysWrong && view.state == NodeState::Active {
                self.fail("an always-wrong node became active");
            }
        }
    }
}

fn seed_bytes(seed: u64, i: u64) -> [u8; 32] {
    let mut out = [0u8; 32];
    out[..8].copy_from_slice(&seed.to_le_bytes());
    out[8..16].copy_from_slice(&i.to_le_bytes());
    out[16] = 1;
    out
}

#[test]
fn seeded_networks_with_churn_and_cheaters_keep_the_invariants() {
    if let Some(seed) = std::env::var("NEUROLOV_SIM_SEED").ok().and_then(|v| v.parse().ok()) {
        Sim::new(seed).run();
        return;
    }
    let runs: u64 = std::env::var("NEUROLOV_SIM_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
    let mut slashed = 0;
    let mut reopened = 0;
    let mut archived = 0;
    let (mut wgsl_done, mut wgsl_forged) = (0, 0);
    let mut cheaters_present = 0;
    for seed in 0..runs {
        let mut sim = Sim::new(seed);
        cheaters_present += usize::from(sim.nodes.iter().any(|n| n.behavior.is_dishonest()));
        sim.run();
        slashed += sim.slashed;
        reopened += sim.reopened;
        archived += sim.db.archived.len();
        let (done, forged) = sim.wgsl_outcomes();
        wgsl_done += done;
        wgsl_forged += forged;
    }
    eprintln!(
        "{runs} runs, {cheaters_present} with cheaters, {slashed} slashes, {reopened} provisional results revoked, \
         {wgsl_forged} of {wgsl_done} finished WGSL jobs stand on a forged result, {archived} finished jobs archived"
    );
    assert!(archived > 0, "no finished job ever left memory");
    assert!(slashed > 0, "no cheater was ever caught");
}
