//! The core facing one node, frame by frame: bad frames get a typed error and change nothing, registration and
//! attestation gate paid work, and missed heartbeats make a node stale, then offline, and requeue its task.

#![allow(clippy::unwrap_used)] // Test helpers unwrap: a panic is the failure report.

mod common;

/// Frames in, effects out, with every result check run at once (the coordinator runs them off the core's lock).
trait FrameNow {
    fn frame_now(&mut self, now: u64, conn: u64, text: &str, store: &Store) -> Vec<Effect>;
}

impl FrameNow for Core {
    fn frame_now(&mut self, now: u64, conn: u64, text: &str, store: &Store) -> Vec<Effect> {
        let effects = self.frame(now, conn, text, store);
        self.run_verifications(now, effects, store)
    }
}

use common::{Db, Store};
use neurolov_core::{Config, Core, Effect, InputData, JobSpec, JobState, NodeState};
use neurolov_protocol::messages::{
    ClaimedHardware, DataRef, ErrorCode, NodeKind, Task, ToNode, Work, seeded_f32, seeded_f32_at,
};
use neurolov_protocol::{Envelope, FromNode, Keypair, PROTOCOL_VERSION};

fn cfg() -> Config {
    Config {
        heartbeat_interval_ms: 1_000,
        attestation_size: 8,
        max_attestation_size: 8,
        tile_rows: 4,
        faucet_grant_nano: 1_000 * neurolov_ledger::NANO_PER_NLOV,
        ..Config::default()
    }
}

struct One {
    core: Core,
    store: Store,
    kp: Keypair,
    nonce: String,
    seq: u64,
    now: u64,
    inbox: Vec<ToNode>,
}

impl One {
    fn new() -> One {
        One::with(cfg())
    }

    fn with(config: Config) -> One {
        let mut core = Core::new(config, 1, 0);
        let effects = core.connected(0, 1);
        let nonce = match &effects[..] {
            [Effect::Send { msg: ToNode::Challenge { nonce, version: PROTOCOL_VERSION }, .. }] => nonce.clone(),
            other => panic!("expected a challenge, got {other:?}"),
        };
        One { core, store: Store::default(), kp: Keypair::from_seed([5; 32]), nonce, seq: 0, now: 0, inbox: Vec::new() }
    }

    fn frame_text(&mut self, text: &str) -> Vec<Effect> {
        self.now += 10;
        let effects = self.core.frame_now(self.now, 1, text, &self.store);
        self.absorb(&effects);
        effects
    }

    /// Keeps the frames sent to this node and the blobs stored.
    fn absorb(&mut self, effects: &[Effect]) {
        for e in effects {
            match e {
                Effect::Send { msg, .. } => self.inbox.push(msg.clone()),
                Effect::StoreBlob { hash, bytes } => {
                    self.store.0.insert(hash.clone(), bytes.clone());
                }
                _ => {}
            }
        }
    }

    fn send(&mut self, msg: &FromNode) -> Vec<Effect> {
        let text = serde_json::to_string(&Envelope::seal(&self.kp, msg)).unwrap();
        self.frame_text(&text)
    }

    fn register_msg(&self) -> FromNode {
        FromNode::Register {
            version: 1,
            session: self.nonce.clone(),
            seq: 0,
            operator: self.kp.id(),
            kind: NodeKind::Native,
            claimed: runs_wgsl(),
            price_nano_per_gflop: 3,
            slots: 1,
            operator_delegation: None,
        }
    }

    fn heartbeat(&mut self) -> Vec<Effect> {
        self.seq += 1;
        let msg = FromNode::Heartbeat { session: self.nonce.clone(), seq: self.seq };
        self.send(&msg)
    }

    fn last_task(&self) -> Task {
        self.inbox
            .iter()
            .rev()
            .find_map(|m| if let ToNode::Task(t) = m { Some(t.clone()) } else { None })
            .expect("a task")
    }

    /// Registers, passes attestation, and gets the one task of a 4×4×4 job a funded client submits.
    fn attested_with_a_job(&mut self) -> (u64, Task) {
        let reg = self.register_msg();
        self.send(&reg);
        let challenge = self.last_task();
        self.deliver(&challenge, false);
        let client = Keypair::from_seed([7; 32]).id();
        self.core.faucet(self.now, client).unwrap();
        let (job, effects) = self.core.submit(self.now, client, matmul_spec(4, 4, 4, 1, 2), &self.store).unwrap();
        self.absorb(&effects);
        (job, self.last_task())
    }

    /// Computes and delivers a task's answer (optionally corrupted).
    fn deliver(&mut self, task: &Task, corrupt: bool) -> Vec<Effect> {
        let result = self.commit_answer(task, corrupt);
        self.send(&result)
    }

    /// Computes a task's answer (optionally corrupted), stores it and commits to it; returns the `result` frame that
    /// delivers it.
    fn commit_answer(&mut self, task: &Task, corrupt: bool) -> FromNode {
        let Work::Matmul { m, n, k, a, b } = &task.work else { panic!("matmul expected") };
        let fetch = |r: &DataRef| match r {
            DataRef::Seeded { seed, len, offset } => seeded_f32_at(*seed, *offset, *len as usize),
            DataRef::Blob { hash } => {
                self.store.0[hash].chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
            }
            DataRef::Inline { .. } => r
                .inline_bytes()
                .expect("inline")
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        };
        let (m, n, k) = (*m as usize, *n as usize, *k as usize);
        let mut c = vec![0.0f32; m * n];
        neurolov_kernels::cpu::sgemm(&fetch(a), &fetch(b), &mut c, m, n, k);
        if corrupt {
            c[0] += 1.0;
        }
        let bytes: Vec<u8> = c.iter().flat_map(|x| x.to_le_bytes()).collect();
        let hash = blake3::hash(&bytes).to_hex().to_string();
        self.store.0.insert(hash.clone(), bytes.into());
        self.seq += 1;
        let commit = FromNode::Commit {
            session: self.nonce.clone(),
            seq: self.seq,
            task_id: task.task_id,
            attempt: task.attempt,
            result_hash: hash.clone(),
        };
        self.send(&commit);
        self.seq += 1;
        FromNode::Result {
            session: self.nonce.clone(),
            seq: self.seq,
            task_id: task.task_id,
            attempt: task.attempt,
            result_hash: hash,
        }
    }
}

/// An m×n×k matmul job from two seeds, at the default price cap, open to any node.
fn matmul_spec(m: u32, n: u32, k: u32, seed_a: u64, seed_b: u64) -> JobSpec {
    JobSpec::Matmul {
        m,
        n,
        k,
        a: InputData::Seeded { seed: seed_a },
        b: InputData::Seeded { seed: seed_b },
        max_price_nano_per_gflop: 10_000_000,
        min_reliability: 0.0,
    }
}

fn error_code(effects: &[Effect]) -> Option<ErrorCode> {
    effects.iter().find_map(|e| match e {
        Effect::Send { msg: ToNode::Error { code, .. }, .. } => Some(*code),
        _ => None,
    })
}

#[test]
fn bad_frames_get_typed_errors_and_change_nothing() {
    let mut one = One::new();
    let other = Keypair::from_seed([6; 32]);
    let reg = one.register_msg();
    let mut forged = Envelope::seal(&one.kp, &reg);
    forged.signature = Envelope::seal(&other, &reg).signature;
    let mut wrong_session = reg.clone();
    if let FromNode::Register { session, .. } = &mut wrong_session {
        *session = "not-the-nonce".into();
    }
    let mut old_version = reg.clone();
    if let FromNode::Register { version, .. } = &mut old_version {
        *version = 0;
    }
    // 60 KiB of adapter name fits a frame, but would be kept and shown on every `GET /v1/nodes`.
    let mut long_adapter = reg.clone();
    if let FromNode::Register { claimed, .. } = &mut long_adapter {
        claimed.adapter = "a".repeat(60 * 1024);
    }
    let cases: Vec<(&str, String, ErrorCode)> = vec![
        ("not json", "{{{".into(), ErrorCode::Malformed),
        ("oversized", format!("{{\"x\":\"{}\"}}", "a".repeat(300_000)), ErrorCode::TooLarge),
        ("wrong signature", serde_json::to_string(&forged).unwrap(), ErrorCode::BadSignature),
        (
            "wrong session",
            serde_json::to_string(&Envelope::seal(&one.kp, &wrong_session)).unwrap(),
            ErrorCode::WrongSession,
        ),
        (
            "60 KiB adapter name",
            serde_json::to_string(&Envelope::seal(&one.kp, &long_adapter)).unwrap(),
            ErrorCode::Malformed,
        ),
        (
            "old version",
            serde_json::to_string(&Envelope::seal(&one.kp, &old_version)).unwrap(),
            ErrorCode::UnsupportedVersion,
        ),
        (
            "heartbeat before register",
            serde_json::to_string(&Envelope::seal(
                &one.kp,
                &FromNode::Heartbeat { session: one.nonce.clone(), seq: 1 },
            ))
            .unwrap(),
            ErrorCode::NotRegistered,
        ),
    ];
    for (name, text, want) in cases {
        let effects = one.frame_text(&text);
        assert_eq!(error_code(&effects), Some(want), "{name}: {effects:?}");
        assert!(one.core.nodes().is_empty(), "{name} registered a node");
    }
    // The core still serves: a proper registration works, and a replayed frame is refused.
    let effects = one.send(&reg);
    assert_eq!(error_code(&effects), None, "{effects:?}");
    assert_eq!(one.core.nodes().len(), 1);
    let effects = one.send(&reg);
    assert_eq!(error_code(&effects), Some(ErrorCode::Replayed));
    one.heartbeat();
    let replay = FromNode::Heartbeat { session: one.nonce.clone(), seq: one.seq };
    assert_eq!(error_code(&one.send(&replay)), Some(ErrorCode::Replayed));
}

#[test]
fn attestation_gates_paid_work_and_a_wrong_answer_fails_it() {
    let mut one = One::new();
    let reg = one.register_msg();
    one.send(&reg);
    assert_eq!(one.core.nodes()[0].state, NodeState::Attesting);
    let client = Keypair::from_seed([7; 32]).id();
    let spec = matmul_spec(4, 4, 4, 1, 2);
    one.core.faucet(one.now, client).unwrap();
    let (job, _) = one.core.submit(one.now, client, spec, &one.store).unwrap();
    // Only the challenge has been sent: the job's task waits for an attested node.
    assert_eq!(one.inbox.iter().filter(|m| matches!(m, ToNode::Task(_))).count(), 1);
    assert_eq!(one.core.queued(), 1);

    let challenge = one.last_task();
    let effects = one.deliver(&challenge, true);
    assert!(effects.iter().any(|e| matches!(e, Effect::Send { msg: ToNode::Verdict { accepted: false, .. }, .. })));
    assert_eq!(one.core.nodes()[0].state, NodeState::Attesting);
    assert_eq!(one.core.queued(), 1, "an unattested node got paid work");

    // The next challenge comes after a pause; answered honestly, the node is attested and gets the job.
    one.now += 5_000;
    one.heartbeat();
    let effects = one.core.tick(one.now);
    for e in effects {
        if let Effect::Send { msg, .. } = e {
            one.inbox.push(msg);
        }
    }
    let challenge = one.last_task();
    one.deliver(&challenge, false);
    assert_eq!(one.core.nodes()[0].state, NodeState::Active);
    assert!(one.core.nodes()[0].gflops_verified > 0.0);
    let task = one.last_task();
    assert_ne!(task.task_id, challenge.task_id);
    let effects = one.deliver(&task, false);
    assert!(effects.iter().any(|e| matches!(e, Effect::Reward { .. })), "{effects:?}");
    assert!(effects.iter().any(|e| matches!(e, Effect::JobFinished { .. })));
    assert_eq!(one.core.job_result(job, &one.store).map(|r| r.len()), Some(64));
}

#[test]
fn missed_heartbeats_make_a_node_stale_then_offline() {
    let mut one = One::new();
    let reg = one.register_msg();
    one.send(&reg);
    let challenge = one.last_task();
    one.deliver(&challenge, false);
    assert_eq!(one.core.nodes()[0].state, NodeState::Active);
    one.core.tick(one.now + 1_500);
    assert_eq!(one.core.nodes()[0].state, NodeState::Stale);
    assert_eq!(one.core.nodes()[0].score, None, "a stale node is still scored");
    let effects = one.core.tick(one.now + 3_500);
    assert_eq!(one.core.nodes()[0].state, NodeState::Offline);
    assert!(effects.iter().any(|e| matches!(e, Effect::Close { conn: 1, .. })));
}

/// Registers and attests a node on `conn`; returns its keypair, nonce and next sequence number.
/// Connects `kp` on `conn` and registers it (its own operator, 1 NLOV/TFLOP, 4 slots): the session nonce and the
/// effects of the register frame.
fn connect_and_register(core: &mut Core, store: &Store, conn: u64, kp: &Keypair, now: u64) -> (String, Vec<Effect>) {
    connect_and_register_claiming(core, store, conn, kp, now, runs_wgsl(), ASK)
}

/// What a test node claims unless its test says otherwise: nothing but that it runs WGSL.
fn runs_wgsl() -> ClaimedHardware {
    ClaimedHardware { wgsl: true, ..ClaimedHardware::default() }
}

/// What the test nodes ask, nano-NLOV per GFLOP.
const ASK: u64 = 1_000_000;

fn connect_and_register_claiming(
    core: &mut Core,
    store: &Store,
    conn: u64,
    kp: &Keypair,
    now: u64,
    claimed: ClaimedHardware,
    ask: u64,
) -> (String, Vec<Effect>) {
    let nonce = match &core.connected(now, conn)[..] {
        [Effect::Send { msg: ToNode::Challenge { nonce, .. }, .. }] => nonce.clone(),
        other => panic!("{other:?}"),
    };
    let reg = FromNode::Register {
        version: 1,
        session: nonce.clone(),
        seq: 0,
        operator: kp.id(),
        kind: NodeKind::Native,
        claimed,
        price_nano_per_gflop: ask,
        slots: 4,
        operator_delegation: None,
    };
    let effects = core.frame_now(now, conn, &serde_json::to_string(&Envelope::seal(kp, &reg)).unwrap(), store);
    (nonce, effects)
}

fn attested_node(core: &mut Core, store: &mut Store, conn: u64, seed: u8, now: u64) -> (Keypair, String, u64) {
    attested_node_logged(core, store, conn, seed, now, &mut Vec::new())
}

/// [`attested_node`] with a hardware claim.
fn attested_node_claiming(
    core: &mut Core,
    store: &mut Store,
    conn: u64,
    seed: u8,
    claimed: ClaimedHardware,
) -> (Keypair, String, u64) {
    attest(core, store, conn, seed, 0, &mut Vec::new(), claimed, ASK)
}

/// [`attested_node`], keeping every effect in `log`.
fn attested_node_logged(
    core: &mut Core,
    store: &mut Store,
    conn: u64,
    seed: u8,
    now: u64,
    log: &mut Vec<Effect>,
) -> (Keypair, String, u64) {
    attest(core, store, conn, seed, now, log, runs_wgsl(), ASK)
}

#[allow(clippy::too_many_arguments)]
fn attest(
    core: &mut Core,
    store: &mut Store,
    conn: u64,
    seed: u8,
    now: u64,
    log: &mut Vec<Effect>,
    claimed: ClaimedHardware,
    ask: u64,
) -> (Keypair, String, u64) {
    attest_taking(core, store, conn, seed, now, log, claimed, ask, 5)
}

/// [`attest`], the node answering its challenge `took_ms` after it was sent (its measured speed).
#[allow(clippy::too_many_arguments)]
fn attest_taking(
    core: &mut Core,
    store: &mut Store,
    conn: u64,
    seed: u8,
    now: u64,
    log: &mut Vec<Effect>,
    claimed: ClaimedHardware,
    ask: u64,
    took_ms: u64,
) -> (Keypair, String, u64) {
    let kp = Keypair::from_seed([seed; 32]);
    let (nonce, effects) = connect_and_register_claiming(core, store, conn, &kp, now, claimed, ask);
    log.extend(effects.iter().cloned());
    let task = effects
        .iter()
        .find_map(|e| if let Effect::Send { msg: ToNode::Task(t), .. } = e { Some(t.clone()) } else { None })
        .expect("challenge");
    let Work::Matmul { m, n, k, a: DataRef::Seeded { seed: sa, .. }, b: DataRef::Seeded { seed: sb, .. } } = task.work
    else {
        panic!("seeded challenge expected")
    };
    let (m, n, k) = (m as usize, n as usize, k as usize);
    let mut c = vec![0.0f32; m * n];
    neurolov_kernels::cpu::sgemm(&seeded_f32(sa, m * k), &seeded_f32(sb, k * n), &mut c, m, n, k);
    let bytes: Vec<u8> = c.iter().flat_map(|x| x.to_le_bytes()).collect();
    let hash = blake3::hash(&bytes).to_hex().to_string();
    store.0.insert(hash.clone(), bytes.into());
    for (seq, msg) in [
        (
            1,
            FromNode::Commit {
                session: nonce.clone(),
                seq: 1,
                task_id: task.task_id,
                attempt: 0,
                result_hash: hash.clone(),
            },
        ),
        (2, FromNode::Result { session: nonce.clone(), seq: 2, task_id: task.task_id, attempt: 0, result_hash: hash }),
    ] {
        let _ = seq;
        log.extend(core.frame_now(
            now + took_ms,
            conn,
            &serde_json::to_string(&Envelope::seal(&kp, &msg)).unwrap(),
            store,
        ));
    }
    (kp, nonce, 3)
}

/// A WGSL job whose one read-write buffer holds 12 bytes, its source stored in `store`.
fn small_wgsl_job(store: &mut Store) -> JobSpec {
    let source = b"@compute @workgroup_size(1) fn main() {}".to_vec();
    let hash = blake3::hash(&source).to_hex().to_string();
    store.0.insert(hash.clone(), source.into());
    JobSpec::Wgsl {
        source_hash: hash,
        entry_point: "main".into(),
        buffers: vec![neurolov_protocol::messages::WgslBuffer {
            binding: 0,
            access: neurolov_protocol::messages::Access::ReadWrite,
            size_bytes: 12,
            init: None,
        }],
        dispatch: [1, 1, 1],
        tolerance: neurolov_verify::replicas::Tolerance::Bitwise,
        work_mflop: 1,
        max_price_nano_per_gflop: 10_000_000,
        min_reliability: 0.0,
        features: Vec::new(),
    }
}

/// Claims filter: a kernel that needs `shader-f16` goes only to a node that claims it, a task bigger than a node's
/// memory claim never goes to that node, and a job naming an unknown feature is refused.
#[test]
fn tasks_go_only_to_nodes_that_claim_what_they_need() {
    let mut core = Core::new(cfg(), 4, 0);
    let mut store = Store::default();
    let small = ClaimedHardware { memory_bytes: 1_000, ..runs_wgsl() };
    let f16 = ClaimedHardware { features: vec!["shader-f16".into()], ..runs_wgsl() };
    attested_node_claiming(&mut core, &mut store, 1, 31, small);
    attested_node_claiming(&mut core, &mut store, 2, 32, f16);
    let client = Keypair::from_seed([9; 32]).id();
    core.faucet(100, client).unwrap();
    let sent = |effects: &[Effect]| -> Vec<u64> { tasks_in(effects).into_iter().map(|(conn, _)| conn).collect() };
    // The f16 kernel: only node 2 may run it.
    let mut spec = small_wgsl_job(&mut store);
    if let JobSpec::Wgsl { features, .. } = &mut spec {
        *features = vec!["shader-f16".into()];
    }
    let (_, mut effects) = core.submit(100, client, spec.clone(), &store).unwrap();
    effects.extend(core.tick(200));
    assert_eq!(sent(&effects), [2], "{effects:?}");
    // 16×16×16 in 4-row tiles: 1,536 bytes a task, more than node 1's 1,000.
    let big = matmul_spec(16, 16, 16, 1, 2);
    let (_, mut effects) = core.submit(300, client, big, &store).unwrap();
    effects.extend(core.tick(400));
    let to = sent(&effects);
    assert!(!to.is_empty() && to.iter().all(|&c| c == 2), "{effects:?}");
    // A task that fits goes to node 1 as well: it is idle and as good.
    let fits = matmul_spec(4, 4, 4, 3, 4);
    let (_, mut effects) = core.submit(500, client, fits, &store).unwrap();
    effects.extend(core.tick(600));
    assert_eq!(sent(&effects), [1], "{effects:?}");
    let mut unknown = spec;
    if let JobSpec::Wgsl { features, .. } = &mut unknown {
        *features = vec!["ray-tracing".into()];
    }
    assert_eq!(
        core.submit(700, client, unknown, &store).unwrap_err(),
        neurolov_core::SubmitError::UnknownFeature("ray-tracing".into())
    );
}

/// Issue 9 §4: a node that cannot run WGSL (no GPU adapter or no sandbox worker, so `claimed.wgsl` is false, as it is
/// for a node too old to send it) never gets WGSL work — a job's task, its spot-check replica, a canary — even when
/// it is the cheapest node; the nodes that claim WGSL get all of it, and the other still gets matmul work. (Nodes
/// without an adapter used to take WGSL tasks and fail them until their jobs failed.)
#[test]
fn wgsl_tasks_go_only_to_nodes_that_run_wgsl() {
    use neurolov_verify::spotcheck::SpotCheckPolicy;
    // As in the canary test: early jobs are replicated (known answers), later ones bring canaries along.
    let config = Config { canary_rate: 1.0, spot_check: SpotCheckPolicy::new(1.0, 3, 0.001, 3).unwrap(), ..cfg() };
    let mut core = Core::new(config, 16, 0);
    let mut store = Store::default();
    // Node 1 claims no WGSL and asks the least: the scheduler's first choice for anything it may take.
    let mut nodes: Vec<(Keypair, String, u64)> = (1..=4)
        .map(|c| {
            let (claimed, ask) = if c == 1 { (ClaimedHardware::default(), 1) } else { (runs_wgsl(), ASK) };
            attest(&mut core, &mut store, c, 140 + c as u8, 0, &mut Vec::new(), claimed, ask)
        })
        .collect();
    assert!(core.nodes().iter().all(|n| n.state == NodeState::Active));
    let client = Keypair::from_seed([9; 32]).id();
    core.faucet(100, client).unwrap();
    let (mut now, mut jobs, mut job_tasks) = (100, Vec::new(), std::collections::BTreeSet::new());
    let (mut wgsl_to, mut replicas, mut canaries) = (std::collections::BTreeSet::new(), 0, 0);
    for _ in 0..20 {
        let mut effects = Vec::new();
        for _ in 0..6 {
            let (job, e) = core.submit(now, client, small_wgsl_job(&mut store), &store).unwrap();
            job_tasks.extend(core.job(job).unwrap().tasks.iter().map(|t| t.task));
            jobs.push(job);
            effects.extend(e);
        }
        effects.extend(core.tick(now + 1));
        let mut pending = tasks_in(&effects);
        while let Some((conn, task)) = pending.pop() {
            now += 1;
            let (kp, nonce, seq) = &mut nodes[conn as usize - 1];
            let answer = match &task.work {
                Work::Wgsl { .. } => {
                    assert_ne!(conn, 1, "a WGSL task went to the node that runs no WGSL: {task:?}");
                    wgsl_to.insert(conn);
                    if !job_tasks.contains(&task.task_id) {
                        canaries += 1;
                    } else if task.attempt > 0 {
                        replicas += 1;
                    }
                    b"right answer".to_vec()
                }
                // A re-challenge: answered right.
                work @ Work::Matmul { .. } => matmul_answer(&store, work, false),
                Work::Infer { .. } => panic!("no inference was asked for: {task:?}"),
            };
            let effects = deliver_bytes(&mut core, &mut store, conn, kp, nonce, *seq, &task, &answer, now);
            *seq += 2;
            pending.extend(tasks_in(&effects));
            pending.extend(tasks_in(&core.tick(now)));
        }
        now += 5;
    }
    assert_eq!(wgsl_to, [2, 3, 4].into_iter().collect());
    assert!(replicas > 0 && canaries > 0, "{replicas} replicas, {canaries} canaries");
    for job in jobs {
        assert_eq!(core.job(job).unwrap().state, JobState::Done, "job {job}");
    }
    // Matmul work still goes to node 1: sixteen 4-row tasks fill every node's four slots.
    let (_, mut effects) = core.submit(now, client, matmul_spec(64, 4, 4, 1, 2), &store).unwrap();
    effects.extend(core.tick(now + 1));
    assert!(tasks_in(&effects).iter().any(|(conn, _)| *conn == 1), "{effects:?}");
}

/// One client cannot take the whole queue: past its quota of unfinished jobs it is refused (and nothing is
/// escrowed), while another client still gets in.
#[test]
fn a_client_has_a_quota_of_unfinished_jobs() {
    let mut core = Core::new(Config { max_jobs_per_client: 2, ..cfg() }, 8, 0);
    let store = Store::default();
    let (alice, bob) = (Keypair::from_seed([11; 32]).id(), Keypair::from_seed([12; 32]).id());
    for c in [alice, bob] {
        core.faucet(1, c).unwrap();
    }
    let spec = matmul_spec(4, 4, 4, 1, 2);
    core.submit(2, alice, spec.clone(), &store).unwrap();
    core.submit(3, alice, spec.clone(), &store).unwrap();
    let balance = core.wallet_view(&alice).balance_nano;
    assert_eq!(
        core.submit(4, alice, spec.clone(), &store).unwrap_err(),
        neurolov_core::SubmitError::TooManyJobsForClient(2)
    );
    assert_eq!(core.wallet_view(&alice).balance_nano, balance, "a refused job escrowed money");
    core.submit(5, bob, spec, &store).unwrap();
}

#[test]
fn wgsl_tasks_of_new_nodes_are_always_spot_checked_by_a_second_operator() {
    let mut core = Core::new(cfg(), 3, 0);
    let mut store = Store::default();
    attested_node(&mut core, &mut store, 1, 21, 0);
    attested_node(&mut core, &mut store, 2, 22, 0);
    assert!(core.nodes().iter().all(|n| n.state == NodeState::Active));
    let spec = small_wgsl_job(&mut store);
    let client = Keypair::from_seed([9; 32]).id();
    core.faucet(100, client).unwrap();
    let (_, mut effects) = core.submit(100, client, spec, &store).unwrap();
    // A node with no verified history is checked at rate 1: the second replica goes out on the next pass.
    effects.extend(core.tick(200));
    let sent_to: std::collections::BTreeSet<u64> = effects
        .iter()
        .filter_map(|e| {
            if let Effect::Send { conn, msg: ToNode::Task(t) } = e { (t.task_id > 2).then_some(*conn) } else { None }
        })
        .collect();
    assert_eq!(sent_to, [1, 2].into_iter().collect(), "{effects:?}");
}

/// Sends a commit and a result for `task` from the node on `conn`.
#[allow(clippy::too_many_arguments)]
fn deliver_bytes(
    core: &mut Core,
    store: &mut Store,
    conn: u64,
    kp: &Keypair,
    nonce: &str,
    seq: u64,
    task: &Task,
    bytes: &[u8],
    now: u64,
) -> Vec<Effect> {
    let hash = blake3::hash(bytes).to_hex().to_string();
    store.0.insert(hash.clone(), bytes.to_vec().into());
    let commit = FromNode::Commit {
        session: nonce.into(),
        seq,
        task_id: task.task_id,
        attempt: task.attempt,
        result_hash: hash.clone(),
    };
    let result = FromNode::Result {
        session: nonce.into(),
        seq: seq + 1,
        task_id: task.task_id,
        attempt: task.attempt,
        result_hash: hash,
    };
    let mut effects = core.frame_now(now, conn, &serde_json::to_string(&Envelope::seal(kp, &commit)).unwrap(), store);
    effects.extend(core.frame_now(now, conn, &serde_json::to_string(&Envelope::seal(kp, &result)).unwrap(), store));
    effects
}

#[test]
fn a_disagreeing_replica_is_outvoted_by_a_tie_breaker_and_slashed() {
    let mut core = Core::new(cfg(), 4, 0);
    let mut store = Store::default();
    let nodes: Vec<(Keypair, String, u64)> =
        (1..=3).map(|c| attested_node(&mut core, &mut store, c, 30 + c as u8, 0)).collect();
    let spec = small_wgsl_job(&mut store);
    let client = Keypair::from_seed([9; 32]).id();
    core.faucet(100, client).unwrap();
    let (job, mut effects) = core.submit(100, client, spec, &store).unwrap();
    effects.extend(core.tick(200));
    let tasks_for = |effects: &[Effect]| -> Vec<(u64, Task)> {
        effects
            .iter()
            .filter_map(|e| {
                if let Effect::Send { conn, msg: ToNode::Task(t) } = e { Some((*conn, t.clone())) } else { None }
            })
            .collect()
    };
    let first = tasks_for(&effects);
    assert_eq!(first.len(), 2, "a new node's task is replicated: {effects:?}");
    // One replica answers right, the other wrong: no majority yet, so a third operator is asked.
    let (c_good, t_good) = first[0].clone();
    let (c_bad, t_bad) = first[1].clone();
    let (kp, nonce, seq) = &nodes[c_good as usize - 1];
    deliver_bytes(&mut core, &mut store, c_good, kp, nonce, *seq, &t_good, b"right answer", 300);
    let (kp, nonce, seq) = &nodes[c_bad as usize - 1];
    let mut effects = deliver_bytes(&mut core, &mut store, c_bad, kp, nonce, *seq, &t_bad, b"wrong answer", 300);
    effects.extend(core.tick(400));
    let third = tasks_for(&effects);
    assert_eq!(third.len(), 1, "{effects:?}");
    let (c_third, t_third) = third[0].clone();
    assert!(c_third != c_good && c_third != c_bad);
    let (kp, nonce, seq) = &nodes[c_third as usize - 1];
    let effects = deliver_bytes(&mut core, &mut store, c_third, kp, nonce, *seq, &t_third, b"right answer", 500);
    assert!(
        effects.iter().any(|e| matches!(e, Effect::JobFinished { state: neurolov_core::JobState::Done, .. })),
        "{effects:?}"
    );
    let slashed: Vec<_> =
        effects.iter().filter_map(|e| if let Effect::Slash { node, .. } = e { Some(*node) } else { None }).collect();
    assert_eq!(slashed, vec![nodes[c_bad as usize - 1].0.id()]);
    let paid = effects.iter().filter(|e| matches!(e, Effect::Reward { .. })).count();
    assert_eq!(paid, 2, "both agreeing replicas are paid");
    assert_eq!(core.job_result(job, &store).as_deref(), Some(&b"right answer"[..]));
}

#[test]
fn a_node_can_name_only_an_operator_that_delegated_to_it() {
    let operator = Keypair::from_seed([40; 32]);
    for (delegation, ok) in [
        (None, false),
        (
            Some(neurolov_protocol::identity::delegate(
                &Keypair::from_seed([41; 32]),
                &Keypair::from_seed([5; 32]).id(),
            )),
            false,
        ),
        (Some(neurolov_protocol::identity::delegate(&operator, &Keypair::from_seed([5; 32]).id())), true),
    ] {
        let mut one = One::new();
        let mut reg = one.register_msg();
        if let FromNode::Register { operator: op, operator_delegation, .. } = &mut reg {
            *op = operator.id();
            *operator_delegation = delegation;
        }
        let effects = one.send(&reg);
        if ok {
            assert_eq!(error_code(&effects), None, "{effects:?}");
            assert_eq!(one.core.nodes()[0].operator, operator.id());
        } else {
            assert_eq!(error_code(&effects), Some(ErrorCode::BadSignature));
            assert!(one.core.nodes().is_empty());
        }
    }
}

#[test]
fn a_result_of_the_wrong_size_is_refused_before_it_is_read() {
    let mut one = One::new();
    let reg = one.register_msg();
    one.send(&reg);
    let challenge = one.last_task();
    let bytes = vec![0u8; 4];
    let hash = blake3::hash(&bytes).to_hex().to_string();
    one.store.0.insert(hash.clone(), bytes.into());
    one.seq += 1;
    let commit = FromNode::Commit {
        session: one.nonce.clone(),
        seq: one.seq,
        task_id: challenge.task_id,
        attempt: 0,
        result_hash: hash.clone(),
    };
    one.send(&commit);
    one.seq += 1;
    let result = FromNode::Result {
        session: one.nonce.clone(),
        seq: one.seq,
        task_id: challenge.task_id,
        attempt: 0,
        result_hash: hash,
    };
    let effects = one.send(&result);
    assert_eq!(error_code(&effects), Some(ErrorCode::Malformed), "{effects:?}");
    assert!(
        !effects.iter().any(|e| matches!(e, Effect::Slash { .. } | Effect::Send { msg: ToNode::Verdict { .. }, .. }))
    );
}

/// Runs every task the node gets until the job ends.
fn run_job(one: &mut One, job: u64) -> Vec<Effect> {
    let mut effects = Vec::new();
    for _ in 0..64 {
        if one.core.job(job).is_some_and(|j| j.state.is_final()) {
            break;
        }
        let task = one.last_task();
        effects.extend(one.deliver(&task, false));
    }
    effects
}

/// A result is checked off the core's lock: the frame only asks for the check. Meanwhile the attempt cannot deliver
/// again, and the node may leave — its result, once checked, still counts and is paid.
#[test]
fn a_result_checked_after_its_node_left_still_counts_once() {
    let mut one = One::new();
    let (job, task) = one.attested_with_a_job();
    let result = one.commit_answer(&task, false);
    let text = serde_json::to_string(&Envelope::seal(&one.kp, &result)).unwrap();
    let effects = one.core.frame(one.now + 1, 1, &text, &one.store);
    let checks: Vec<&neurolov_core::Verification> =
        effects.iter().filter_map(|e| if let Effect::Verify(v) = e { Some(&**v) } else { None }).collect();
    assert_eq!(checks.len(), 1, "{effects:?}");
    assert!(!effects.iter().any(|e| matches!(e, Effect::Reward { .. })), "paid before the check: {effects:?}");
    let check = checks[0].clone();
    // Only this attempt's one result blob may be stored by the node (it was stored above, before the result).
    let hash = check.result_hash.clone();
    let size = 4 * 4 * 4;
    assert!(!one.core.claim_upload(&one.kp.id(), size, &hash), "a delivered attempt uploads nothing more");
    // Giving the attempt back now would dodge the check of its commitment: refused.
    one.seq += 1;
    let take_back = FromNode::Failed {
        session: one.nonce.clone(),
        seq: one.seq,
        task_id: task.task_id,
        attempt: task.attempt,
        reason: "never mind".into(),
    };
    let text = serde_json::to_string(&Envelope::seal(&one.kp, &take_back)).unwrap();
    let effects = one.core.frame(one.now + 2, 1, &text, &one.store);
    assert_eq!(error_code(&effects), Some(ErrorCode::Malformed), "{effects:?}");
    // The same delivery again (a fresh frame) is refused while the first is being checked.
    one.seq += 1;
    let again = match result {
        FromNode::Result { session, task_id, attempt, result_hash, .. } => {
            FromNode::Result { session, seq: one.seq, task_id, attempt, result_hash }
        }
        other => panic!("{other:?}"),
    };
    let text = serde_json::to_string(&Envelope::seal(&one.kp, &again)).unwrap();
    let effects = one.core.frame(one.now + 2, 1, &text, &one.store);
    assert_eq!(error_code(&effects), Some(ErrorCode::Malformed), "{effects:?}");
    assert!(!effects.iter().any(|e| matches!(e, Effect::Verify(_))), "{effects:?}");
    // The node leaves before the verdict; the verdict still settles the task.
    one.core.disconnected(one.now + 3, 1);
    let effects = one.core.verified(one.now + 4, check.run(&one.store));
    let paid: Vec<u64> = effects
        .iter()
        .filter_map(|e| if let Effect::Reward { paid_nano, .. } = e { Some(*paid_nano) } else { None })
        .collect();
    assert_eq!(paid.len(), 1, "{effects:?}");
    assert_eq!(one.core.job(job).unwrap().state, JobState::Done);
    // A check that finishes twice (a confused shell) changes nothing the second time.
    let effects = one.core.verified(one.now + 5, check.run(&one.store));
    assert!(!effects.iter().any(|e| matches!(e, Effect::Reward { .. })), "{effects:?}");
    one.core.ledger().check_full().unwrap();
}

/// A node stores one blob per attempt it holds, of that attempt's result size; a check that never comes back ends
/// the attempt after `verify_timeout_ms` (the task runs again), and its late verdict changes nothing.
#[test]
fn uploads_are_one_per_attempt_and_lost_checks_time_out() {
    let mut one = One::new();
    let (job, task) = one.attested_with_a_job();
    let node = one.kp.id();
    let (a, b) = ("a".repeat(64), "b".repeat(64));
    assert!(!one.core.claim_upload(&node, 63, &a), "not this attempt's result size");
    assert!(one.core.claim_upload(&node, 64, &a));
    assert!(one.core.claim_upload(&node, 64, &a), "the same blob again (a retried upload)");
    assert!(!one.core.claim_upload(&node, 64, &b), "a second, different blob");
    assert!(!one.core.claim_upload(&Keypair::from_seed([8; 32]).id(), 64, &b), "a node holding nothing");
    // Delivered, then the check is lost: after the timeout the attempt fails and the task is queued again.
    let result = one.commit_answer(&task, false);
    let text = serde_json::to_string(&Envelope::seal(&one.kp, &result)).unwrap();
    let effects = one.core.frame(one.now + 1, 1, &text, &one.store);
    let check = effects
        .iter()
        .find_map(|e| if let Effect::Verify(v) = e { Some((**v).clone()) } else { None })
        .expect("a check");
    let timeout = Config::default().verify_timeout_ms;
    one.core.tick(one.now + timeout / 2);
    assert_eq!(one.core.queued(), 0, "timed out too early");
    one.core.tick(one.now + 2 + timeout);
    assert_eq!(one.core.queued(), 1, "the task was not queued again");
    let late = one.core.verified(one.now + 3 + timeout, check.run(&one.store));
    assert!(!late.iter().any(|e| matches!(e, Effect::Reward { .. })), "a late verdict was paid: {late:?}");
    assert!(!matches!(one.core.job(job).unwrap().state, JobState::Done));
}

/// A task no node can take fails its job after `max_queue_wait_ms`, and not before — a matmul priced below every
/// ask, and a WGSL task whose spot-check replica finds no second operator.
#[test]
fn tasks_nobody_can_take_fail_their_job_after_the_queue_wait() {
    let wait_ms = 10_000;
    let mut one = One::with(Config { max_queue_wait_ms: wait_ms, ..cfg() });
    let reg = one.register_msg();
    one.send(&reg);
    let challenge = one.last_task();
    one.deliver(&challenge, false);
    let client = Keypair::from_seed([7; 32]).id();
    one.core.faucet(one.now, client).unwrap();
    let mut cheap = matmul_spec(4, 4, 4, 1, 2);
    if let JobSpec::Matmul { max_price_nano_per_gflop, .. } = &mut cheap {
        *max_price_nano_per_gflop = 1;
    }
    let (matmul, effects) = one.core.submit(one.now, client, cheap, &one.store).unwrap();
    one.absorb(&effects);
    // The WGSL job comes 2 s later, after the queue has been looked at: its wait starts when its replica is queued.
    let start = one.now;
    let wgsl_at = 2_000;
    let mut wgsl = None;
    let failed = |one: &One, job: Option<u64>| {
        job.is_some_and(|job| matches!(one.core.job(job).unwrap().state, JobState::Failed { .. }))
    };
    for t in (250..wait_ms + wgsl_at + 500).step_by(250) {
        if t == wgsl_at {
            let spec = small_wgsl_job(&mut one.store);
            let (job, effects) = one.core.submit(start + t, client, spec, &one.store).unwrap();
            one.absorb(&effects);
            wgsl = Some(job);
        }
        // The node stays online (its one slot busy with the WGSL task once that comes).
        one.now = start + t - 10;
        one.heartbeat();
        one.core.tick(start + t);
        assert_eq!(failed(&one, Some(matmul)), t >= wait_ms, "the matmul job at {t} ms");
        assert_eq!(failed(&one, wgsl), t >= wait_ms + wgsl_at, "the WGSL job at {t} ms");
    }
    for job in [Some(matmul), wgsl].into_iter().flatten() {
        let reason = one.core.job(job).unwrap().state.reason().unwrap_or("").to_string();
        assert!(reason.contains("found no eligible node"), "job {job}: {reason:?}");
    }
}

#[test]
fn a_job_escrows_its_price_pays_verified_work_with_the_fee_and_refunds_the_rest() {
    use neurolov_core::{escrow, treasury, wallet};
    let mut one = One::new();
    let mut reg = one.register_msg();
    if let FromNode::Register { price_nano_per_gflop, .. } = &mut reg {
        *price_nano_per_gflop = 2_000_000;
    }
    one.send(&reg);
    let challenge = one.last_task();
    one.deliver(&challenge, false);
    let client = Keypair::from_seed([7; 32]).id();
    let spec = matmul_spec(8, 8, 8, 1, 2);
    // Two tasks of 1 MFLOP each at the client's cap (10,000 nano) plus the 5% fee.
    let escrow_nano = 2 * (10_000 + 500);
    let before = one.core.ledger().transfer_count();
    let err = one.core.submit(one.now, client, spec.clone(), &one.store).unwrap_err();
    assert_eq!(err, neurolov_core::SubmitError::InsufficientFunds { available_nano: 0, needed_nano: escrow_nano });
    assert_eq!(one.core.ledger().transfer_count(), before, "a refused job moved money");
    assert!(one.core.job(1).is_none());

    let grant = 1_000 * neurolov_ledger::NANO_PER_NLOV;
    one.core.faucet(one.now, client).unwrap();
    assert_eq!(one.core.faucet(one.now, client).unwrap_err(), neurolov_core::WalletError::FaucetUsed);
    let treasury_before = one.core.ledger().account(treasury()).unwrap().balance();
    let (job, effects) = one.core.submit(one.now, client, spec, &one.store).unwrap();
    one.absorb(&effects);
    assert_eq!(one.core.wallet_view(&client).balance_nano, grant - escrow_nano);
    // The task handed out holds its pay (2 NLOV/TFLOP × 1 MFLOP = 2,000 nano) in the escrow.
    assert_eq!(one.core.ledger().account(escrow(job)).unwrap().debits_pending, 2_000);
    let effects = run_job(&mut one, job);
    assert!(matches!(one.core.job(job).unwrap().state, neurolov_core::JobState::Done), "{:?}", one.core.job(job));
    let paid: u64 = effects
        .iter()
        .filter_map(|e| if let Effect::Reward { paid_nano, .. } = e { Some(*paid_nano) } else { None })
        .sum();
    assert_eq!(paid, 4_000);
    assert_eq!(one.core.wallet_view(&one.kp.id()).balance_nano, 4_000);
    assert_eq!(one.core.ledger().account(treasury()).unwrap().balance() - treasury_before, 200);
    assert_eq!(one.core.wallet_view(&client).balance_nano, grant - 4_200, "unspent escrow not refunded");
    let escrow_account = one.core.ledger().account(escrow(job)).unwrap();
    assert_eq!((escrow_account.balance(), escrow_account.debits_pending), (0, 0));
    assert_eq!(one.core.ledger().account(wallet(&client)).unwrap().debits_pending, 0);
    one.core.ledger().check_full().unwrap();

    // Stake buys scheduling priority: 500 of the 10,000 NLOV that earn the full 10% raise the score by 0.5%.
    let operator = one.kp.id();
    let before = one.core.nodes()[0].score.unwrap();
    one.core.faucet(one.now, operator).unwrap();
    one.core.stake(one.now, operator, 500 * neurolov_ledger::NANO_PER_NLOV, 1).unwrap();
    let after = one.core.nodes()[0].score.unwrap();
    assert!((after / before - 1.005).abs() < 1e-9, "{before} → {after}");
}

/// A job pays the protocol fee its escrow was sized for, even when governance raises the fee while it runs (the
/// fee is on top of the price: a raise could otherwise outgrow the escrow); the next job pays the new fee.
#[test]
fn a_job_pays_the_fee_it_was_escrowed_for_when_governance_raises_it_midway() {
    use neurolov_core::{Action, GovernanceConfig, ParamChange, Support, treasury};
    let gov = GovernanceConfig {
        proposal_threshold_nano: 1,
        quorum_nano: 1,
        voting_delay_ms: 10,
        voting_period_ms: 10,
        timelock_ms: 10,
    };
    let mut one = One::with(Config { governance: gov, ..cfg() });
    let mut reg = one.register_msg();
    if let FromNode::Register { price_nano_per_gflop, .. } = &mut reg {
        *price_nano_per_gflop = 2_000_000;
    }
    one.send(&reg);
    let challenge = one.last_task();
    one.deliver(&challenge, false);
    let client = Keypair::from_seed([7; 32]).id();
    one.core.faucet(one.now, client).unwrap();
    one.core.stake(one.now, client, 10 * neurolov_ledger::NANO_PER_NLOV, 1).unwrap();
    let treasury_nano = |one: &One| one.core.ledger().account(treasury()).unwrap().balance();

    // Two tasks at 2,000 nano each; the first is paid at 5%.
    let before = treasury_nano(&one);
    let (job, effects) = one.core.submit(one.now, client, matmul_spec(8, 8, 8, 1, 2), &one.store).unwrap();
    one.absorb(&effects);
    let first = one.last_task();
    one.deliver(&first, false);
    // Governance raises the fee to 20% before the second task is paid.
    let change = Action::SetParameter(ParamChange::FeeBps(2_000));
    let (p, _) = one.core.propose(one.now, client, "fee 20%", change).unwrap();
    one.core.cast_vote(p.start_ms, client, p.id, Support::For).unwrap();
    one.core.queue_proposal(p.end_ms, p.id).unwrap();
    one.core.tick(p.end_ms + 10);
    assert_eq!(one.core.config().fee_bps, 2_000);
    one.now = p.end_ms + 10;
    run_job(&mut one, job);
    assert!(matches!(one.core.job(job).unwrap().state, neurolov_core::JobState::Done));
    assert_eq!(treasury_nano(&one) - before, 200, "both tasks at the 5% the job was escrowed for");
    // The next job pays 20%.
    let before = treasury_nano(&one);
    let (job, effects) = one.core.submit(one.now, client, matmul_spec(8, 8, 8, 3, 4), &one.store).unwrap();
    one.absorb(&effects);
    run_job(&mut one, job);
    assert_eq!(treasury_nano(&one) - before, 800, "20% of 4,000");
    one.core.ledger().check_full().unwrap();
}

#[test]
fn proven_fraud_slashes_half_the_stake_and_cancels_unstaking() {
    use neurolov_core::{stake_account, treasury};
    let mut one = One::new();
    let reg = one.register_msg();
    let operator = one.kp.id();
    let nlov = neurolov_ledger::NANO_PER_NLOV;
    one.core.faucet(one.now, operator).unwrap();
    one.core.stake(one.now, operator, 100 * nlov, 1).unwrap();
    // Staking the same request again is applied once; staking more than the wallet holds is refused.
    one.core.stake(one.now, operator, 100 * nlov, 1).unwrap();
    assert!(matches!(
        one.core.stake(one.now, operator, 10_000 * nlov, 2),
        Err(neurolov_core::WalletError::Transfer(neurolov_ledger::TransferError::InsufficientFunds { .. }))
    ));
    let (release_ms, _) = one.core.unstake(one.now, operator, 30 * nlov, 1).unwrap();
    assert_eq!(one.core.wallet_view(&operator).unstaking_nano, 30 * nlov);
    assert_eq!(one.core.wallet_view(&operator).balance_nano, 900 * nlov);
    one.send(&reg);
    let treasury_before = one.core.ledger().account(treasury()).unwrap().balance();
    let challenge = one.last_task();
    let effects = one.deliver(&challenge, true);
    let slashed: Vec<u64> = effects
        .iter()
        .filter_map(|e| if let Effect::Slash { slashed_nano, .. } = e { Some(*slashed_nano) } else { None })
        .collect();
    assert_eq!(slashed, vec![50 * nlov]);
    assert_eq!(one.core.ledger().account(stake_account(&operator)).unwrap().balance(), 50 * i128::from(nlov));
    assert_eq!(one.core.ledger().account(treasury()).unwrap().balance() - treasury_before, 50 * i128::from(nlov));
    assert_eq!(one.core.wallet_view(&operator).unstaking_nano, 0, "a slash must cancel pending unstakes");
    // A fresh unstake is released after the delay, not before.
    let (release2, _) = one.core.unstake(one.now, operator, 20 * nlov, 2).unwrap();
    assert!(release2 >= release_ms);
    one.core.tick(release2 - 1);
    assert_eq!(one.core.wallet_view(&operator).balance_nano, 900 * nlov);
    one.core.tick(release2);
    assert_eq!(one.core.wallet_view(&operator).balance_nano, 920 * nlov);
    assert_eq!(one.core.wallet_view(&operator).staked_nano, 30 * nlov);
    one.core.ledger().check_full().unwrap();
}

#[test]
fn known_answer_canaries_pay_when_right_and_slash_when_wrong() {
    use neurolov_verify::spotcheck::SpotCheckPolicy;
    // Rates 0.79, 0.63, 0.5, … of a node's first checks: early jobs are almost surely replicated (known answers),
    // later ones almost surely not (canaries).
    let config = Config { canary_rate: 1.0, spot_check: SpotCheckPolicy::new(1.0, 3, 0.001, 3).unwrap(), ..cfg() };
    let mut core = Core::new(config, 5, 0);
    let mut store = Store::default();
    let mut nodes: Vec<(Keypair, String, u64)> =
        (1..=4).map(|c| attested_node(&mut core, &mut store, c, 40 + c as u8, 0)).collect();
    let client = Keypair::from_seed([9; 32]).id();
    core.faucet(100, client).unwrap();
    // Honest rounds of WGSL jobs, six at a time so they spread over the nodes: replicated ones become known answers;
    // once a node's spot-check rate has fallen, a job task placed without a replica brings along a canary of work that
    // node never saw: a task that belongs to no job.
    let mut now = 100;
    let mut canary = None;
    let mut job_tasks = std::collections::BTreeSet::new();
    for _ in 0..30 {
        let mut effects = Vec::new();
        for _ in 0..6 {
            let (job, e) = core.submit(now, client, small_wgsl_job(&mut store), &store).unwrap();
            job_tasks.extend(core.job(job).unwrap().tasks.iter().map(|t| t.task));
            effects.extend(e);
        }
        effects.extend(core.tick(now + 1));
        let mut pending = tasks_in(&effects);
        while let Some((conn, task)) = pending.pop() {
            if !job_tasks.contains(&task.task_id) && canary.is_none() {
                canary = Some((conn, task));
                continue;
            }
            now += 1;
            let (kp, nonce, seq) = &mut nodes[conn as usize - 1];
            let effects = deliver_bytes(&mut core, &mut store, conn, kp, nonce, *seq, &task, b"right answer", now);
            *seq += 2;
            pending.extend(tasks_in(&effects));
            pending.extend(tasks_in(&core.tick(now)));
        }
        if canary.is_some() {
            break;
        }
        now += 5;
    }
    let (conn, task) = canary.expect("a canary within 30 rounds");
    assert_eq!(task.attempt, 1, "a canary looks like a spot-check replica");
    let (kp, nonce, seq) = nodes[conn as usize - 1].clone();
    let wallet_before = core.wallet_view(&kp.id()).balance_nano;
    let treasury_before = core.ledger().account(neurolov_core::treasury()).unwrap().balance();
    // A wrong answer to the canary is not convicted on the known answer alone: a third operator is asked first.
    let mut effects = deliver_bytes(&mut core, &mut store, conn, &kp, &nonce, seq, &task, b"wrong answer", now + 1);
    effects.extend(core.tick(now + 2));
    assert!(!effects.iter().any(|e| matches!(e, Effect::Slash { .. })), "convicted on one opinion: {effects:?}");
    let (third, third_task) =
        tasks_in(&effects).into_iter().find(|(_, t)| t.task_id == task.task_id).expect("a third opinion is asked");
    assert_ne!(third, conn);
    let (kp3, nonce3, seq3) = nodes[third as usize - 1].clone();
    // The third agrees with the known answer: proven fraud, evidence and a slash (no stake here, so nothing to take).
    let effects =
        deliver_bytes(&mut core, &mut store, third, &kp3, &nonce3, seq3, &third_task, b"right answer", now + 3);
    let slashed: Vec<&neurolov_core::Evidence> = effects
        .iter()
        .filter_map(|e| if let Effect::Slash { evidence, .. } = e { Some(evidence) } else { None })
        .collect();
    assert_eq!(slashed.len(), 1, "{effects:?}");
    assert!(slashed[0].reason.contains("known-answer"), "{}", slashed[0].reason);
    assert_eq!(slashed[0].work, task.work);
    // Nothing is paid for the wrong answer; the pay for the revoked result below is taken back for its re-run.
    assert!(core.wallet_view(&kp.id()).balance_nano < wallet_before, "a wrong canary was paid or nothing clawed back");
    // The treasury only gains the fee on the third opinion's pay.
    assert!(core.ledger().account(neurolov_core::treasury()).unwrap().balance() >= treasury_before);
    core.ledger().check_full().unwrap();
    // The job task the canary came with was accepted from this node without a replica: still provisional, so it is
    // revoked and its job runs again.
    let reopened: Vec<u64> = effects
        .iter()
        .filter_map(|e| if let Effect::JobReopened { job, .. } = e { Some(*job) } else { None })
        .collect();
    assert!(!reopened.is_empty(), "{effects:?}");
    for job in reopened {
        assert!(matches!(core.job(job).unwrap().state, neurolov_core::JobState::Running { .. }));
        assert_eq!(core.job_result(job, &store), None);
    }
}

/// The tasks sent among `effects`, with the connection each went to.
/// Issue 16: scheduler weights changed by a governance proposal steer the next allocation. Node 1 is fast and dear,
/// node 2 slower but the better buy; weights all on cost efficiency send the next task to node 2, then a proposal putting them
/// all on performance passes, executes on the tick — and the next task goes to node 1.
#[test]
fn weights_a_proposal_sets_steer_the_next_allocation() {
    use neurolov_core::{Action, GovernanceConfig, ParamChange, Support};
    let gov = GovernanceConfig {
        proposal_threshold_nano: 1,
        quorum_nano: 1,
        voting_delay_ms: 10,
        voting_period_ms: 100,
        timelock_ms: 50,
    };
    let weights = |p, r, c| neurolov_scheduler::Weights::new(p, r, c).unwrap();
    let mut core = Core::new(Config { governance: gov, weights: weights(0.0, 0.0, 1.0), ..cfg() }, 4, 0);
    let mut store = Store::default();
    // Node 1 twice as fast at ten times the price: node 2 gives five times the GFLOP per NLOV.
    attest_taking(&mut core, &mut store, 1, 41, 0, &mut Vec::new(), runs_wgsl(), ASK * 10, 10);
    attest_taking(&mut core, &mut store, 2, 42, 0, &mut Vec::new(), runs_wgsl(), ASK, 20);
    let client = Keypair::from_seed([9; 32]).id();
    core.faucet(300, client).unwrap();
    let sent = |effects: &[Effect]| -> Vec<u64> { tasks_in(effects).into_iter().map(|(conn, _)| conn).collect() };
    let (_, mut effects) = core.submit(300, client, matmul_spec(4, 4, 4, 1, 2), &store).unwrap();
    effects.extend(core.tick(301));
    assert_eq!(sent(&effects), [2], "all on cost: the cheap node");

    // The client stakes and proposes performance only; it passes and executes on the tick after its timelock.
    core.stake(400, client, 10 * neurolov_ledger::NANO_PER_NLOV, 1).unwrap();
    let change = ParamChange::SchedulerWeights { performance_bps: 10_000, reliability_bps: 0, cost_efficiency_bps: 0 };
    let (p, _) = core.propose(400, client, "speed first", Action::SetParameter(change)).unwrap();
    core.tick(p.start_ms);
    core.cast_vote(p.start_ms, client, p.id, Support::For).unwrap();
    core.queue_proposal(p.end_ms, p.id).unwrap();
    core.tick(p.end_ms + 50);
    assert_eq!(core.config().weights.performance(), 1.0);
    let now = p.end_ms + 100;
    let (_, mut effects) = core.submit(now, client, matmul_spec(4, 4, 4, 3, 4), &store).unwrap();
    effects.extend(core.tick(now + 1));
    assert_eq!(sent(&effects), [1], "all on performance: the fast node");
}

fn tasks_in(effects: &[Effect]) -> Vec<(u64, Task)> {
    effects
        .iter()
        .filter_map(
            |e| if let Effect::Send { conn, msg: ToNode::Task(t) } = e { Some((*conn, t.clone())) } else { None },
        )
        .collect()
}

/// A result delivered without a replica stays provisional across a coordinator restart: the rebuilt core still holds
/// it against its node, and when that node is then proven to cheat, the finished job it belongs to runs again.
#[test]
fn provisional_results_survive_a_restart_and_are_revoked_when_their_node_cheats() {
    use neurolov_verify::spotcheck::SpotCheckPolicy;
    // Finished jobs leave memory at once, except those standing on a provisional result: they must still be there
    // to run again.
    let config = || Config {
        canary_rate: 0.0,
        spot_check: SpotCheckPolicy::new(1.0, 3, 0.001, 3).unwrap(),
        finished_job_memory_ms: 0,
        ..cfg()
    };
    let mut store = Store::default();
    let (mut core, mut log) = Core::restore(config(), 7, 0, Default::default(), &store);
    let mut nodes: Vec<(Keypair, String, u64)> =
        (1..=2).map(|c| attested_node_logged(&mut core, &mut store, c, 60 + c as u8, 0, &mut log)).collect();
    let client = Keypair::from_seed([9; 32]).id();
    log.extend(core.faucet(100, client).unwrap().1);
    // Honest WGSL jobs until one finishes on a single node's result (its spot-check rate has fallen).
    let mut now = 100;
    let mut done_jobs = Vec::new();
    while !core.nodes().iter().any(|n| n.results_provisional > 0) {
        assert!(done_jobs.len() < 60, "no job finished without a replica in 60 rounds");
        let (job, mut effects) = core.submit(now, client, small_wgsl_job(&mut store), &store).unwrap();
        effects.extend(core.tick(now + 1));
        let mut pending = tasks_in(&effects);
        log.extend(effects);
        while let Some((conn, task)) = pending.pop() {
            now += 1;
            let (kp, nonce, seq) = &mut nodes[conn as usize - 1];
            let mut effects = deliver_bytes(&mut core, &mut store, conn, kp, nonce, *seq, &task, b"right answer", now);
            *seq += 2;
            effects.extend(core.tick(now));
            pending.extend(tasks_in(&effects));
            log.extend(effects);
        }
        assert_eq!(core.job(job).unwrap().state, JobState::Done);
        done_jobs.push(job);
        now += 5;
    }
    let provisional = |core: &Core| -> Vec<(neurolov_protocol::Id, usize)> {
        let mut v: Vec<_> = core.nodes().iter().map(|n| (n.id, n.results_provisional)).collect();
        v.sort();
        v
    };
    let before = provisional(&core);
    now += 2 * neurolov_core::ARCHIVE_INTERVAL_MS;
    log.extend(core.tick(now));
    let standing: usize = before.iter().map(|(_, c)| c).sum();
    assert_eq!(core.jobs_in_memory(), standing, "only the jobs standing on a provisional result stay in memory");
    assert_eq!(core.stats().jobs_done, done_jobs.len() as u64, "archived jobs still count");
    // The coordinator restarts from what it asked to persist.
    let mut db = Db::default();
    db.absorb(&log);
    let (mut core, effects) = Core::restore(config(), 8, now, db.restored(), &store);
    assert!(!effects.iter().any(|e| matches!(e, Effect::Halt { .. })), "{effects:?}");
    assert_eq!(provisional(&core), before, "provisional marks were lost in the restart");
    // The node holding a provisional result reconnects and answers its next matmul wrong: proven fraud.
    let (cheat, _) = *before.iter().find(|(_, count)| *count > 0).unwrap();
    let (kp, _, _) = nodes.iter().find(|(kp, _, _)| kp.id() == cheat).unwrap().clone();
    let (nonce, mut effects) = connect_and_register(&mut core, &store, 10, &kp, now);
    let spec = matmul_spec(4, 4, 4, 1, 2);
    effects.extend(core.submit(now, client, spec, &store).unwrap().1);
    effects.extend(core.tick(now + 1));
    let (_, task) =
        tasks_in(&effects).into_iter().find(|(conn, t)| *conn == 10 && matches!(t.work, Work::Matmul { .. })).unwrap();
    let Work::Matmul { m, n, .. } = task.work else { unreachable!() };
    let wrong: Vec<u8> = (0..m * n).flat_map(|i| (i as f32 + 100.0).to_le_bytes()).collect();
    let effects = deliver_bytes(&mut core, &mut store, 10, &kp, &nonce, 1, &task, &wrong, now + 2);
    assert!(effects.iter().any(|e| matches!(e, Effect::Slash { node, .. } if *node == cheat)), "{effects:?}");
    let reopened: Vec<u64> = effects
        .iter()
        .filter_map(|e| if let Effect::JobReopened { job, .. } = e { Some(*job) } else { None })
        .collect();
    assert_eq!(reopened.len(), before.iter().map(|(_, c)| c).sum::<usize>(), "{effects:?}");
    for job in reopened {
        assert!(done_jobs.contains(&job));
        assert!(matches!(core.job(job).unwrap().state, JobState::Running { .. }));
        assert_eq!(core.job_result(job, &store), None);
    }
    // The stored record no longer holds the revoked marks (they would later revoke other nodes' re-runs).
    db.absorb(&effects);
    assert!(db.nodes[&cheat].provisional.is_empty(), "{:?}", db.nodes[&cheat]);
    core.ledger().check_full().unwrap();
}

#[test]
fn a_full_registry_forgets_the_least_proven_idle_node_but_never_a_staked_one() {
    let config = Config { max_nodes: 3, ..cfg() };
    let mut core = Core::new(config, 6, 0);
    let mut store = Store::default();
    let register = |core: &mut Core, conn: u64, kp: &Keypair, now: u64| -> Vec<Effect> {
        connect_and_register(core, &Store::default(), conn, kp, now).1
    };
    let forgot = |effects: &[Effect]| -> Vec<neurolov_protocol::Id> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Persist(neurolov_core::Record::NodeForgotten { id }) => Some(*id),
                _ => None,
            })
            .collect()
    };
    // Node 1 passed a check (a Sybil that once verified something), node 2 too and its operator staked, node 3 only
    // registered; all three leave.
    let (kp1, _, _) = attested_node(&mut core, &mut store, 1, 51, 0);
    let (kp2, _, _) = attested_node(&mut core, &mut store, 2, 52, 0);
    core.faucet(5, kp2.id()).unwrap();
    core.stake(5, kp2.id(), 100 * neurolov_ledger::NANO_PER_NLOV, 1).unwrap();
    let kp3 = Keypair::from_seed([53; 32]);
    register(&mut core, 3, &kp3, 10);
    for conn in 1..=3 {
        core.disconnected(20, conn);
    }
    // Newcomers make room: first the node with nothing verified, then the once-verified Sybil (it used to be kept
    // forever), never the staked node.
    assert_eq!(forgot(&register(&mut core, 4, &Keypair::from_seed([54; 32]), 30)), vec![kp3.id()]);
    assert_eq!(forgot(&register(&mut core, 5, &Keypair::from_seed([55; 32]), 40)), vec![kp1.id()]);
    let ids: Vec<_> = core.nodes().iter().map(|n| n.id).collect();
    assert!(ids.contains(&kp2.id()), "{ids:?}");
    // Now every node is online or staked: a sixth is refused.
    let effects = register(&mut core, 6, &Keypair::from_seed([56; 32]), 50);
    assert!(
        effects
            .iter()
            .any(|e| matches!(e, Effect::Send { msg: ToNode::Error { code: ErrorCode::RateLimited, .. }, .. })),
        "{effects:?}"
    );
    assert_eq!(core.nodes().len(), 3);
}

#[test]
fn a_refused_wallet_request_drops_nothing_the_core_did() {
    // A refused stake still opened the stake account: that change must reach storage with the next event, or the
    // shell would later be asked to store an account it never saw created.
    let mut core = Core::new(cfg(), 8, 0);
    let op = Keypair::from_seed([61; 32]).id();
    core.faucet(0, op).unwrap();
    assert!(core.stake(1, op, 5_000 * neurolov_ledger::NANO_PER_NLOV, 1).is_err());
    let effects = core.tick(2);
    let created: Vec<neurolov_ledger::AccountId> = effects
        .iter()
        .filter_map(|e| if let Effect::Persist(neurolov_core::Record::Ledger(c)) = e { Some(c) } else { None })
        .flat_map(|c| c.created.iter().map(|a| a.id))
        .collect();
    assert!(created.contains(&neurolov_core::stake_account(&op)), "{effects:?}");
}

#[test]
fn the_client_pays_the_reservation_holder_first_and_the_escrow_ends_empty() {
    use neurolov_core::{escrow, wallet};
    // Three attested operators. A new node's WGSL task is replicated: A holds the pay reservation, B is the replica.
    // A drops out (its reservation is voided, the task goes to C, which gets a new one); B and C agree. Both are paid
    // from the escrow (the client pays for its job's verification) before the job's completion refunds the rest, and
    // nothing stays held.
    let mut core = Core::new(cfg(), 9, 0);
    let mut store = Store::default();
    let nodes: Vec<(Keypair, String, u64)> =
        (1..=3).map(|c| attested_node(&mut core, &mut store, c, 70 + c as u8, 0)).collect();
    let client = Keypair::from_seed([9; 32]).id();
    core.faucet(100, client).unwrap();
    let grant = core.wallet_view(&client).balance_nano;
    let (job, mut effects) = core.submit(100, client, small_wgsl_job(&mut store), &store).unwrap();
    effects.extend(core.tick(110));
    let tasks: Vec<(u64, Task)> = effects
        .iter()
        .filter_map(
            |e| if let Effect::Send { conn, msg: ToNode::Task(t) } = e { Some((*conn, t.clone())) } else { None },
        )
        .collect();
    assert_eq!(tasks.len(), 2, "{effects:?}");
    let (a_conn, _) = tasks[0];
    let (b_conn, b_task) = tasks[1].clone();
    let effects = core.disconnected(120, a_conn);
    let (c_conn, c_task) = effects
        .iter()
        .find_map(|e| if let Effect::Send { conn, msg: ToNode::Task(t) } = e { Some((*conn, t.clone())) } else { None })
        .expect("the task goes to the third operator");
    assert!(c_conn != a_conn && c_conn != b_conn);
    let deliver = |core: &mut Core, store: &mut Store, conn: u64, task: &Task, now: u64| {
        let (kp, nonce, seq) = &nodes[conn as usize - 1];
        deliver_bytes(core, store, conn, kp, nonce, *seq, task, b"right answer", now)
    };
    deliver(&mut core, &mut store, b_conn, &b_task, 130);
    let effects = deliver(&mut core, &mut store, c_conn, &c_task, 140);
    assert!(matches!(core.job(job).unwrap().state, neurolov_core::JobState::Done), "{effects:?}");
    let paid: Vec<u64> = effects
        .iter()
        .filter_map(|e| if let Effect::Reward { paid_nano, .. } = e { Some(*paid_nano) } else { None })
        .collect();
    assert_eq!(paid.len(), 2);
    assert!(paid.iter().all(|&p| p > 0), "an agreeing replica went unpaid: {paid:?}");
    let e = core.ledger().account(escrow(job)).unwrap();
    assert_eq!((e.balance(), e.debits_pending), (0, 0), "escrow left over");
    let price = paid[0];
    let fee = price * 5 / 100;
    assert!(fee > 0, "the fee must be in play: it is what an escrow refunded too early cannot cover");
    assert_eq!(core.wallet_view(&client).balance_nano, grant - 2 * (price + fee), "the client pays both replicas");
    for conn in [b_conn, c_conn] {
        let id = nodes[conn as usize - 1].0.id();
        assert_eq!(core.ledger().account(wallet(&id)).unwrap().balance(), i128::from(price));
    }
    core.ledger().check_full().unwrap();
}

/// The strategies an attacker — one client account and its own nodes — plays against the economy (issue 9 §1).
#[derive(Clone, Copy, Debug)]
enum Strategy {
    /// Replicated self-dealt WGSL jobs at a high cap: its Sybil replicas used to be paid by the treasury.
    SybilReplicas,
    /// A known answer of huge declared work baited at a 1-nano cap, then farmed as canaries (one canary once took
    /// 75M NLOV from the treasury).
    CanaryBait,
    /// Unreplicated self-dealt results, then a staged conviction of their node: the re-runs, done by its other
    /// nodes, used to be paid by the treasury.
    StagedConviction,
}

/// A network of attacker nodes only, driven to quiet: every task sent is answered at once (WGSL with agreeing bytes,
/// matmul honestly, except by `cheat`, which answers matmul wrong).
struct Attack {
    core: Core,
    store: Store,
    nodes: Vec<(Keypair, String, u64)>,
    now: u64,
    cheat: Option<u64>,
    /// WGSL tasks answered, slashes and reopened jobs seen: proof the strategy exercised what it aims at.
    wgsl_tasks: Vec<u64>,
    slashes: usize,
    reopened: usize,
}

impl Attack {
    fn run(&mut self, effects: Vec<Effect>) {
        let mut pending = tasks_in(&effects);
        let mut rounds = 0;
        loop {
            while let Some((conn, task)) = pending.pop() {
                self.now += 1;
                let bytes = match &task.work {
                    Work::Wgsl { .. } => b"right answer".to_vec(),
                    work => matmul_answer(&self.store, work, self.cheat == Some(conn)),
                };
                let (kp, nonce, seq) = &mut self.nodes[conn as usize - 1];
                let effects =
                    deliver_bytes(&mut self.core, &mut self.store, conn, kp, nonce, *seq, &task, &bytes, self.now);
                *seq += 2;
                if matches!(task.work, Work::Wgsl { .. }) {
                    self.wgsl_tasks.push(task.task_id);
                }
                self.slashes += effects.iter().filter(|e| matches!(e, Effect::Slash { .. })).count();
                self.reopened += effects.iter().filter(|e| matches!(e, Effect::JobReopened { .. })).count();
                pending.extend(tasks_in(&effects));
            }
            // Nodes keep beating so none goes offline; the queue gets another look.
            self.now += 500;
            for conn in 1..=self.nodes.len() as u64 {
                let (kp, nonce, seq) = &mut self.nodes[conn as usize - 1];
                let hb = FromNode::Heartbeat { session: nonce.clone(), seq: *seq };
                *seq += 1;
                let text = serde_json::to_string(&Envelope::seal(kp, &hb)).unwrap();
                pending.extend(tasks_in(&self.core.frame_now(self.now, conn, &text, &self.store)));
            }
            pending.extend(tasks_in(&self.core.tick(self.now)));
            rounds += 1;
            if pending.is_empty() || rounds > 50 {
                break;
            }
        }
    }

    /// What the attacker holds: its client's and nodes' wallets and stakes, and the escrows of its jobs.
    fn holdings(&self, client: &neurolov_protocol::Id, jobs: &[u64]) -> u128 {
        let ids = self.nodes.iter().map(|(kp, _, _)| kp.id()).chain([*client]);
        let wallets: u128 = ids
            .map(|id| {
                let v = self.core.wallet_view(&id);
                u128::from(v.balance_nano) + u128::from(v.staked_nano) + u128::from(v.unstaking_nano)
            })
            .sum();
        let escrows: u128 = jobs
            .iter()
            .filter_map(|&j| self.core.ledger().account(neurolov_core::escrow(j)))
            .map(|a| u128::try_from(a.balance()).unwrap())
            .sum();
        wallets + escrows
    }

    fn treasury(&self) -> i128 {
        self.core.ledger().account(neurolov_core::treasury()).unwrap().balance()
    }
}

/// The answer to a matmul task, computed with the CPU GEMM (wrong in one entry when `corrupt`).
fn matmul_answer(store: &Store, work: &Work, corrupt: bool) -> Vec<u8> {
    let Work::Matmul { m, n, k, a, b } = work else { panic!("matmul expected") };
    let fetch = |r: &DataRef| match r {
        DataRef::Seeded { seed, len, offset } => seeded_f32_at(*seed, *offset, *len as usize),
        DataRef::Blob { hash } => {
            store.0[hash].chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
        }
        DataRef::Inline { .. } => r
            .inline_bytes()
            .expect("inline")
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    };
    let (m, n, k) = (*m as usize, *n as usize, *k as usize);
    let mut c = vec![0.0f32; m * n];
    neurolov_kernels::cpu::sgemm(&fetch(a), &fetch(b), &mut c, m, n, k);
    if corrupt {
        c[0] += 1.0;
    }
    c.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A WGSL job of `work_mflop` declared work at `cap` nano-NLOV per GFLOP.
fn wgsl_job(store: &mut Store, work_mflop: u64, cap: u64) -> JobSpec {
    let mut spec = small_wgsl_job(store);
    if let JobSpec::Wgsl { work_mflop: work, max_price_nano_per_gflop: price, .. } = &mut spec {
        (*work, *price) = (work_mflop, cap);
    }
    spec
}

fn check_attack(strategy: Strategy) {
    use neurolov_verify::spotcheck::SpotCheckPolicy;
    let nlov = neurolov_ledger::NANO_PER_NLOV;
    let config = Config { canary_rate: 1.0, spot_check: SpotCheckPolicy::new(1.0, 3, 0.001, 3).unwrap(), ..cfg() };
    let mut core = Core::new(config, 11, 0);
    let mut store = Store::default();
    // Three nodes ask 1 nano-NLOV per GFLOP; the fourth asks 10⁹ and takes canaries (which used to ignore the cap).
    let nodes: Vec<(Keypair, String, u64)> = (1..=4)
        .map(|c| {
            let ask = if c == 4 { 1_000_000_000 } else { 1 };
            attest(&mut core, &mut store, c, 80 + c as u8, 0, &mut Vec::new(), runs_wgsl(), ask)
        })
        .collect();
    let mut attack =
        Attack { core, store, nodes, now: 100, cheat: None, wgsl_tasks: Vec::new(), slashes: 0, reopened: 0 };
    let client = Keypair::from_seed([90; 32]).id();
    for id in attack.nodes.iter().map(|(kp, _, _)| kp.id()).chain([client]).collect::<Vec<_>>() {
        attack.core.faucet(attack.now, id).unwrap();
    }
    let staker = attack.nodes[0].0.id();
    attack.core.stake(attack.now, staker, 100 * nlov, 1).unwrap();
    let (put_in, treasury_before) = (attack.holdings(&client, &[]), attack.treasury());
    let mut jobs = Vec::new();
    let mut submit = |attack: &mut Attack, spec: JobSpec| {
        let (job, effects) = attack.core.submit(attack.now, client, spec, &attack.store).unwrap();
        jobs.push(job);
        attack.run(effects);
    };
    match strategy {
        Strategy::SybilReplicas => {
            for _ in 0..10 {
                let spec = wgsl_job(&mut attack.store, 1_000, 1_000_000_000);
                submit(&mut attack, spec);
            }
        }
        Strategy::CanaryBait => {
            // Bait: huge declared work at a 1-nano cap, replicated (new nodes) into a known answer; then more of the
            // same until unreplicated placements bring the bait along as canaries.
            // Jobs go out six at a time, so placements spread over the cheap nodes and each gets canaries of known
            // answers it never saw.
            for _ in 0..8 {
                let mut effects = Vec::new();
                for _ in 0..6 {
                    let most = neurolov_core::MAX_INVOCATIONS_PER_WORKGROUP * neurolov_core::MAX_MFLOP_PER_INVOCATION;
                    let spec = wgsl_job(&mut attack.store, most, 1);
                    let (job, e) = attack.core.submit(attack.now, client, spec, &attack.store).unwrap();
                    jobs.push(job);
                    effects.extend(e);
                }
                attack.run(effects);
            }
        }
        Strategy::StagedConviction => {
            for _ in 0..30 {
                let spec = wgsl_job(&mut attack.store, 1_000, 1_000_000_000);
                submit(&mut attack, spec);
            }
            // Every node that holds provisional results gets itself convicted on a matmul, one after another.
            for conn in 1..=attack.nodes.len() as u64 {
                attack.cheat = Some(conn);
                let spec = matmul_spec(4, 4, 4, conn, conn + 1);
                submit(&mut attack, spec);
            }
            attack.cheat = None;
            attack.run(Vec::new());
        }
    }
    // The strategy really ran: replicas, canaries (WGSL tasks of no job), or convictions that reopened jobs.
    let in_jobs: std::collections::BTreeSet<u64> =
        jobs.iter().flat_map(|&j| attack.core.job(j).unwrap().tasks.into_iter().map(|t| t.task)).collect();
    let canaries = attack.wgsl_tasks.iter().filter(|t| !in_jobs.contains(t)).count();
    let replicas = attack.wgsl_tasks.len() - canaries;
    match strategy {
        Strategy::SybilReplicas => assert!(replicas > 10, "{replicas} replicas"),
        Strategy::CanaryBait => assert!(canaries > 0, "no canary in {} tasks", attack.wgsl_tasks.len()),
        Strategy::StagedConviction => {
            assert!(attack.slashes > 0 && attack.reopened > 0, "{} {}", attack.slashes, attack.reopened)
        }
    }
    for &job in &jobs {
        assert_eq!(attack.core.job(job).unwrap().state, JobState::Done, "{strategy:?}: job {job}");
    }
    let (held, treasury) = (attack.holdings(&client, &jobs), attack.treasury());
    assert!(held <= put_in, "{strategy:?}: the attacker turned {put_in} into {held}");
    assert!(treasury >= treasury_before, "{strategy:?}: the treasury went from {treasury_before} to {treasury}");
    attack.core.ledger().check_full().unwrap();
}

#[test]
fn a_client_and_its_own_nodes_never_take_money_from_the_treasury() {
    for strategy in [Strategy::SybilReplicas, Strategy::CanaryBait, Strategy::StagedConviction] {
        check_attack(strategy);
    }
}

/// Issue 9 §3: a job is admitted — quotas, cheap checks, funds — before its operands are read or generated: an
/// unfunded client's job over inputs that were never uploaded is refused for its funds, not after a search for them.
#[test]
fn funds_are_checked_before_any_operand_is_read() {
    let mut core = Core::new(cfg(), 12, 0);
    let store = Store::default();
    let client = Keypair::from_seed([91; 32]).id();
    let missing = InputData::Blob { hash: blake3::hash(b"never uploaded").to_hex().to_string() };
    let spec = JobSpec::Matmul {
        m: 8192,
        n: 8192,
        k: 8192,
        a: missing.clone(),
        b: missing,
        max_price_nano_per_gflop: 1,
        min_reliability: 0.0,
    };
    let refused = core.submit(1, client, spec.clone(), &store).unwrap_err();
    assert!(matches!(refused, neurolov_core::SubmitError::InsufficientFunds { .. }), "{refused}");
    assert_eq!(core.admit(&client, &spec).unwrap_err(), refused);
    let free = JobSpec::Matmul {
        m: 4,
        n: 4,
        k: 4,
        a: InputData::Seeded { seed: 1 },
        b: InputData::Seeded { seed: 2 },
        max_price_nano_per_gflop: 0,
        min_reliability: 0.0,
    };
    core.faucet(2, client).unwrap();
    assert!(matches!(core.submit(3, client, free, &store), Err(neurolov_core::SubmitError::PriceTooLow(1))));
}

/// Issue 9 §2: two colluding operators agree on a wrong value for their own bait job, which becomes a known answer.
/// An honest node that later gets it as a canary and answers right is not convicted on the colluders' word: a third
/// operator is asked, agrees with the honest node, and the poisoned answer is dropped. (It used to be slashed and
/// lose its attestation and its provisional results.)
#[test]
fn a_poisoned_known_answer_convicts_no_honest_node() {
    use neurolov_verify::spotcheck::SpotCheckPolicy;
    let config = Config { canary_rate: 1.0, spot_check: SpotCheckPolicy::new(1.0, 3, 0.001, 3).unwrap(), ..cfg() };
    let mut core = Core::new(config, 13, 0);
    let mut store = Store::default();
    let client = Keypair::from_seed([92; 32]).id();
    core.faucet(0, client).unwrap();
    let mut nodes: Vec<(Keypair, String, u64)> =
        (1..=2).map(|c| attested_node(&mut core, &mut store, c, 100 + c as u8, 0)).collect();
    let mut now = 100;
    let mut slashed = Vec::new();
    let mut sent: std::collections::BTreeMap<u64, std::collections::BTreeSet<u64>> = Default::default();
    // Connections 1 and 2 collude (a poisoned value), 3 and 4 are honest.
    let mut run_job = |core: &mut Core, store: &mut Store, nodes: &mut Vec<(Keypair, String, u64)>, now: &mut u64| {
        let (_, mut effects) = core.submit(*now, client, small_wgsl_job(store), store).unwrap();
        effects.extend(core.tick(*now + 1));
        let mut pending = tasks_in(&effects);
        while let Some((conn, task)) = pending.pop() {
            *now += 1;
            sent.entry(task.task_id).or_default().insert(conn);
            // Results of the small job are 12 bytes.
            let answer: &[u8] = if conn <= 2 { b"poison value" } else { b"right answer" };
            let (kp, nonce, seq) = &mut nodes[conn as usize - 1];
            let effects = deliver_bytes(core, store, conn, kp, nonce, *seq, &task, answer, *now);
            *seq += 2;
            slashed.extend(
                effects.iter().filter_map(|e| if let Effect::Slash { node, .. } = e { Some(*node) } else { None }),
            );
            pending.extend(tasks_in(&effects));
            pending.extend(tasks_in(&core.tick(*now)));
        }
        *now += 5;
    };
    for _ in 0..4 {
        run_job(&mut core, &mut store, &mut nodes, &mut now);
    }
    core.disconnected(now, 1);
    core.disconnected(now, 2);
    for c in 3..=4u64 {
        nodes.push(attested_node(&mut core, &mut store, c, 100 + c as u8, now));
    }
    let jobs_before = core.recent_jobs(1000).len();
    for _ in 0..40 {
        run_job(&mut core, &mut store, &mut nodes, &mut now);
    }
    let in_jobs: std::collections::BTreeSet<u64> =
        core.recent_jobs(1000).iter().flat_map(|(j, _)| j.tasks.iter().map(|t| t.task)).collect();
    let disputed =
        sent.iter().filter(|(t, conns)| !in_jobs.contains(t) && conns.contains(&3) && conns.contains(&4)).count();
    assert!(core.recent_jobs(1000).len() > jobs_before);
    let canaries: Vec<_> = sent.iter().filter(|(t, _)| !in_jobs.contains(t)).collect();
    assert!(disputed > 0, "no poisoned canary reached an honest node in 40 jobs: {canaries:?} {slashed:?}");
    let honest: Vec<_> = nodes[2..].iter().map(|(kp, _, _)| kp.id()).collect();
    assert!(slashed.iter().all(|n| !honest.contains(n)), "an honest node was convicted: {slashed:?}");
    assert!(core.evidence().is_empty(), "{:?}", core.evidence());
    core.ledger().check_full().unwrap();
}

/// Issue 9 §2: cheap checks do not buy finality, and a conviction costs a node its history. A node holding a
/// provisional WGSL result of 1,000 MFLOP passes three 1×1×1 matmul checks (which used to make the result final)
/// and is then caught: the result is still revoked, the node's verified history is gone (it is spot-checked like a
/// newcomer again) and it is not challenged again before the cooldown (it used to be re-attested seconds later).
#[test]
fn tiny_checks_buy_no_finality_and_a_conviction_costs_the_history() {
    use neurolov_verify::spotcheck::SpotCheckPolicy;
    let config = Config { canary_rate: 0.0, spot_check: SpotCheckPolicy::new(1.0, 3, 0.001, 3).unwrap(), ..cfg() };
    let mut core = Core::new(config, 14, 0);
    let mut store = Store::default();
    let mut nodes: Vec<(Keypair, String, u64)> =
        (1..=2).map(|c| attested_node(&mut core, &mut store, c, 110 + c as u8, 0)).collect();
    let client = Keypair::from_seed([93; 32]).id();
    core.faucet(0, client).unwrap();
    let mut now = 100;
    let answer_all = |core: &mut Core,
                      store: &mut Store,
                      nodes: &mut Vec<(Keypair, String, u64)>,
                      effects: Vec<Effect>,
                      now: &mut u64,
                      corrupt: bool| {
        let mut pending = tasks_in(&effects);
        let mut all = effects;
        while let Some((conn, task)) = pending.pop() {
            *now += 1;
            let bytes = match &task.work {
                Work::Wgsl { .. } => b"right answer".to_vec(),
                work => matmul_answer(store, work, corrupt),
            };
            let (kp, nonce, seq) = &mut nodes[conn as usize - 1];
            let effects = deliver_bytes(core, store, conn, kp, nonce, *seq, &task, &bytes, *now);
            *seq += 2;
            pending.extend(tasks_in(&effects));
            all.extend(effects);
        }
        all
    };
    while !core.nodes().iter().any(|n| n.results_provisional > 0) {
        assert!(now < 1_000, "no unreplicated result");
        let spec = wgsl_job(&mut store, 1_000, 10_000_000);
        let (_, mut effects) = core.submit(now, client, spec, &store).unwrap();
        effects.extend(core.tick(now + 1));
        answer_all(&mut core, &mut store, &mut nodes, effects, &mut now, false);
        now += 5;
    }
    let node = core.nodes().iter().find(|n| n.results_provisional > 0).unwrap().id;
    let conn = if nodes[0].0.id() == node { 1 } else { 2 };
    core.disconnected(now, 3 - conn);
    for seed in 0..3 {
        let effects = core.submit(now, client, matmul_spec(1, 1, 1, seed, seed + 1), &store).unwrap().1;
        answer_all(&mut core, &mut store, &mut nodes, effects, &mut now, false);
    }
    let view = |core: &Core| core.nodes().into_iter().find(|n| n.id == node).unwrap();
    assert!(view(&core).results_provisional > 0, "three 1-MFLOP checks made a 1,000-MFLOP result final");
    let effects = core.submit(now, client, matmul_spec(4, 4, 4, 7, 8), &store).unwrap().1;
    let effects = answer_all(&mut core, &mut store, &mut nodes, effects, &mut now, true);
    assert!(effects.iter().any(|e| matches!(e, Effect::Slash { node: n, .. } if *n == node)), "{effects:?}");
    assert!(effects.iter().any(|e| matches!(e, Effect::JobReopened { .. })), "the provisional result was not revoked");
    assert_eq!(view(&core).tasks_verified, 0, "a convicted node kept its verified history");
    // Within the cooldown it gets no challenge, however long it keeps beating.
    let (kp, nonce, seq) = &mut nodes[conn as usize - 1];
    for _ in 0..20 {
        now += 1_000;
        *seq += 1;
        let hb = FromNode::Heartbeat { session: nonce.clone(), seq: *seq };
        let mut effects = core.frame_now(now, conn, &serde_json::to_string(&Envelope::seal(kp, &hb)).unwrap(), &store);
        effects.extend(core.tick(now));
        assert!(tasks_in(&effects).iter().all(|(c, _)| *c != conn), "re-challenged within the cooldown");
    }
}

/// Issue 9 §5: a challenge that comes back much faster than `attestation_target_ms` measured the round trip, not the
/// node: the next one, twice the size, goes out at once, up to `max_attestation_size`, and the verified figure rises
/// with each (at a fixed 256³ a 380 GFLOP/s CPU was listed at 3–7 GFLOP/s).
#[test]
fn challenges_grow_until_compute_dominates_the_round_trip() {
    let mut one = One::with(Config { max_attestation_size: 64, ..cfg() });
    let reg = one.register_msg();
    one.send(&reg);
    let mut sizes = Vec::new();
    let mut figures = Vec::new();
    for _ in 0..6 {
        let Some(task) = one.inbox.drain(..).find_map(|m| if let ToNode::Task(t) = m { Some(t) } else { None }) else {
            break;
        };
        let Work::Matmul { k, .. } = task.work else { panic!("a challenge is a matmul") };
        sizes.push(k);
        one.deliver(&task, false);
        figures.push(one.core.nodes()[0].gflops_verified);
        one.now += 1;
        let effects = one.core.tick(one.now);
        one.absorb(&effects);
    }
    assert_eq!(sizes, vec![8, 16, 32, 64], "challenge sizes");
    assert!(figures.windows(2).all(|w| w[1] > w[0]), "the figure rises with the size: {figures:?}");
}

/// Issue 9 §5: the statistics mean what the whitepaper means. Active GPU nodes are counted apart from software
/// adapters and CPUs; network uptime is the share of time with an active node and utilization an average over time.
#[test]
fn statistics_are_averages_over_time_and_count_gpus_apart() {
    let mut core = Core::new(cfg(), 15, 0);
    let mut store = Store::default();
    let claim = |adapter: &str, backend: &str, software: bool| ClaimedHardware {
        adapter: adapter.into(),
        backend: backend.into(),
        software,
        ..ClaimedHardware::default()
    };
    core.tick(0);
    core.tick(500); // no node at all until the tick at 600
    let claims = [claim("NVIDIA H200", "vulkan", false), claim("llvmpipe", "vulkan", true), claim("cpu", "cpu", false)];
    for (conn, claimed) in (1..).zip(claims) {
        attest(&mut core, &mut store, conn, 120 + conn as u8, 500, &mut Vec::new(), claimed, ASK);
    }
    core.tick(600);
    core.tick(1_000);
    let s = core.stats();
    assert_eq!((s.active_gpu_nodes, s.active_software_nodes, s.active_cpu_nodes), (1, 1, 1));
    assert!((s.network_availability - 0.4).abs() < 1e-9, "{}", s.network_availability);
    assert!(s.utilization.abs() < 1e-9 && s.utilization_now.abs() < 1e-9);
}

/// Issue 9 §2: Freivalds' tight tolerance decides what is taken, its rigorous bound what is convicted. Constant
/// operands summed in order give honest rounding errors past the tight tolerance (they all point the same way): such
/// a result is not taken and runs again elsewhere, but its node is not convicted (it would have been slashed had
/// every rejection been fraud).
#[test]
fn a_doubtful_matmul_result_runs_again_and_convicts_nobody() {
    let mut core = Core::new(cfg(), 16, 0);
    let mut store = Store::default();
    let nodes: Vec<(Keypair, String, u64)> =
        (1..=2).map(|c| attested_node(&mut core, &mut store, c, 130 + c as u8, 0)).collect();
    let client = Keypair::from_seed([94; 32]).id();
    core.faucet(0, client).unwrap();
    let (m, n, k) = (2usize, 32usize, 16_384usize);
    let mut blob = |len: usize| {
        let bytes: Vec<u8> = std::iter::repeat_n(0.1f32, len).flat_map(|x| x.to_le_bytes()).collect();
        let hash = blake3::hash(&bytes).to_hex().to_string();
        store.0.insert(hash.clone(), bytes.into());
        InputData::Blob { hash }
    };
    let (a, b) = (blob(m * k), blob(k * n));
    let spec = JobSpec::Matmul {
        m: m as u32,
        n: n as u32,
        k: k as u32,
        a,
        b,
        max_price_nano_per_gflop: 10_000_000,
        min_reliability: 0.0,
    };
    let (job, effects) = core.submit(10, client, spec, &store).unwrap();
    let (conn, task) = tasks_in(&effects).remove(0);
    // Every entry the plain in-order fp32 sum of K products 0.1·0.1: honest, and 1.6% off the exact value.
    let entry = (0..k).fold(0.0f32, |s, _| s + 0.1f32 * 0.1f32);
    let bytes: Vec<u8> = std::iter::repeat_n(entry, m * n).flat_map(|x| x.to_le_bytes()).collect();
    let (kp, nonce, seq) = &nodes[conn as usize - 1];
    let mut effects = deliver_bytes(&mut core, &mut store, conn, kp, nonce, *seq, &task, &bytes, 20);
    effects.extend(core.tick(30));
    assert!(!effects.iter().any(|e| matches!(e, Effect::Slash { .. })), "an honest rounding was convicted");
    assert!(core.evidence().is_empty());
    assert!(
        effects.iter().any(|e| matches!(e, Effect::Send { msg: ToNode::Verdict { accepted: false, .. }, .. })),
        "the doubtful result was taken: {effects:?}"
    );
    assert!(matches!(core.job(job).unwrap().state, JobState::Running { .. }));
    let again = tasks_in(&effects);
    assert!(again.iter().any(|(c, t)| t.task_id == task.task_id && *c != conn), "not run again elsewhere: {again:?}");
}

/// Issue 9 §3: job submission has an idempotency key. The same key from the same client names the same job — no
/// second job, no second escrow — and still does after a restart; another key or another client makes a new job.
#[test]
fn a_submission_retried_under_its_key_is_one_job_even_after_a_restart() {
    let store = Store::default();
    let (mut core, mut log) = Core::restore(cfg(), 17, 0, Default::default(), &store);
    let client = Keypair::from_seed([95; 32]).id();
    log.extend(core.faucet(1, client).unwrap().1);
    let key = Some("retry-1".to_string());
    let (first, effects) = core.submit_keyed(2, client, matmul_spec(4, 4, 4, 1, 2), key.clone(), &store).unwrap();
    log.extend(effects);
    let balance = core.wallet_view(&client).balance_nano;
    let (again, effects) = core.submit_keyed(3, client, matmul_spec(4, 4, 4, 1, 2), key.clone(), &store).unwrap();
    assert_eq!(again, first);
    assert!(effects.is_empty(), "{effects:?}");
    assert_eq!(core.wallet_view(&client).balance_nano, balance, "escrowed twice");
    let mut db = Db::default();
    db.absorb(&log);
    let (mut core, _) = Core::restore(cfg(), 18, 10, db.restored(), &store);
    let (after, _) = core.submit_keyed(11, client, matmul_spec(4, 4, 4, 1, 2), key.clone(), &store).unwrap();
    assert_eq!(after, first, "the key was forgotten in the restart");
    let (other, _) = core.submit_keyed(12, client, matmul_spec(4, 4, 4, 1, 2), Some("retry-2".into()), &store).unwrap();
    assert_ne!(other, first);
    let stranger = Keypair::from_seed([96; 32]).id();
    core.faucet(13, stranger).unwrap();
    let (theirs, _) = core.submit_keyed(14, stranger, matmul_spec(4, 4, 4, 1, 2), key, &store).unwrap();
    assert_ne!(theirs, first);
    let too_long = Some("k".repeat(65));
    let refused = core.submit_keyed(15, client, matmul_spec(4, 4, 4, 1, 2), too_long, &store).unwrap_err();
    assert_eq!(refused, neurolov_core::SubmitError::BadIdempotencyKey);
}

/// Issue 9 §3: a job's operands are read or generated before the core is locked (`load_inputs`); given them, the
/// core reads nothing — here the blobs they came from are not even in the core's store any more.
#[test]
fn operands_loaded_outside_the_core_are_not_read_again() {
    let mut core = Core::new(cfg(), 19, 0);
    let mut loaded_from = Store::default();
    let client = Keypair::from_seed([97; 32]).id();
    core.faucet(1, client).unwrap();
    let mut blob = |len: usize, seed: u64| {
        let bytes: Vec<u8> = seeded_f32(seed, len).iter().flat_map(|x| x.to_le_bytes()).collect();
        let hash = blake3::hash(&bytes).to_hex().to_string();
        loaded_from.0.insert(hash.clone(), bytes.into());
        InputData::Blob { hash }
    };
    let (a, b) = (blob(8 * 8, 1), blob(8 * 8, 2));
    let spec = JobSpec::Matmul { m: 8, n: 8, k: 8, a, b, max_price_nano_per_gflop: 10_000_000, min_reliability: 0.0 };
    let inputs = neurolov_core::load_inputs(&spec, &loaded_from).unwrap();
    let empty = Store::default();
    let missing = core.submit(2, client, spec.clone(), &empty).unwrap_err();
    assert!(matches!(missing, neurolov_core::SubmitError::MissingBlob(_)), "{missing}");
    let (job, _) = core.submit_loaded(3, client, spec, None, inputs, &empty).unwrap();
    assert!(matches!(core.job(job).unwrap().state, JobState::Running { .. }));
}

/// Issue 9 §1: declared work is a claim, bounded by what the dispatch can do: at most 1 GFLOP per invocation and 256
/// invocations per workgroup (the kernels crate's limit, held equal here). A 10⁹-MFLOP claim on one workgroup — the
/// canary bait of the review — is refused.
#[test]
fn declared_work_is_bounded_by_the_dispatch() {
    assert_eq!(
        neurolov_core::MAX_INVOCATIONS_PER_WORKGROUP,
        u64::from(neurolov_kernels::untrusted::MAX_WORKGROUP_INVOCATIONS)
    );
    let mut core = Core::new(cfg(), 20, 0);
    let mut store = Store::default();
    let client = Keypair::from_seed([98; 32]).id();
    core.faucet(1, client).unwrap();
    let most = neurolov_core::MAX_INVOCATIONS_PER_WORKGROUP * neurolov_core::MAX_MFLOP_PER_INVOCATION;
    let bait = wgsl_job(&mut store, 1_000_000_000, 1);
    assert_eq!(
        core.admit(&client, &bait),
        Err(neurolov_core::SubmitError::WorkBeyondDispatch { work_mflop: 1_000_000_000, most })
    );
    assert!(core.admit(&client, &wgsl_job(&mut store, most, 1)).is_ok());
}

/// A client cancels its running job: its attempts are called off (the node is told), the job fails as cancelled,
/// and the escrow goes back whole (nothing was verified). Only its client may, and only once.
#[test]
fn a_client_cancels_its_job_and_gets_its_escrow_back() {
    use neurolov_core::{CancelError, escrow};
    let mut one = One::new();
    let reg = one.register_msg();
    one.send(&reg);
    let challenge = one.last_task();
    one.deliver(&challenge, false);
    let client = Keypair::from_seed([7; 32]).id();
    one.core.faucet(one.now, client).unwrap();
    let before = one.core.wallet_view(&client).balance_nano;
    let (job, effects) = one.core.submit(one.now, client, matmul_spec(8, 8, 8, 1, 2), &one.store).unwrap();
    one.absorb(&effects);
    let held = one.last_task();
    assert!(one.core.wallet_view(&client).balance_nano < before, "nothing escrowed");
    let stranger = Keypair::from_seed([8; 32]).id();
    assert_eq!(one.core.cancel(one.now, &stranger, job).unwrap_err(), CancelError::NotYours);
    assert_eq!(one.core.cancel(one.now, &client, 999).unwrap_err(), CancelError::NoSuchJob);
    let effects = one.core.cancel(one.now, &client, job).unwrap();
    assert!(
        effects.iter().any(|e| matches!(e, Effect::Send { msg: ToNode::Cancel { task_id, .. }, .. }
            if *task_id == held.task_id)),
        "the node holding the task was not told: {effects:?}"
    );
    let state = one.core.job(job).unwrap().state;
    assert_eq!(state, JobState::Failed { reason: "cancelled by its client".into() });
    assert_eq!(one.core.wallet_view(&client).balance_nano, before, "the escrow did not come back whole");
    assert_eq!(one.core.ledger().account(escrow(job)).unwrap().balance(), 0);
    assert_eq!(one.core.cancel(one.now, &client, job).unwrap_err(), CancelError::AlreadyEnded);
    one.core.ledger().check_full().unwrap();
}

/// Protocol version 2: a node's tasks come in one `tasks` frame with their inputs inline, and its results go back
/// in one signed `deliver` frame. Each item stands alone: honest results are verified and paid, an item whose bytes
/// do not hash to its commitment is refused without touching its attempt, and a forged result delivered for that
/// attempt later is slashed on the evidence of its `deliver` frame.
#[test]
fn version_2_batches_tasks_and_deliveries_and_judges_each_item() {
    use neurolov_protocol::messages::InlineResult;
    let (mut one, client) = attested_speaking(2);
    // 16 rows in 4-row tiles: four tasks, handed out in one event.
    let (_, effects) = one.core.submit(one.now, client, matmul_spec(16, 4, 4, 1, 2), &one.store).unwrap();
    one.absorb(&effects);
    let frames: Vec<&Vec<Task>> =
        one.inbox.iter().filter_map(|m| if let ToNode::Tasks { tasks } = m { Some(tasks) } else { None }).collect();
    assert_eq!(frames.len(), 1, "one tasks frame, got {:?}", one.inbox);
    let tasks = frames[0].clone();
    assert_eq!(tasks.len(), 4);
    // The first block of a seeded A is the seed's stream from its start; the others' values travel inline.
    assert!(matches!(&tasks[0].work, Work::Matmul { a: DataRef::Seeded { offset: 0, .. }, .. }));
    assert!(tasks[1..].iter().all(|t| matches!(&t.work, Work::Matmul { a: DataRef::Inline { .. }, .. })));
    assert!(!one.inbox.iter().any(|m| matches!(m, ToNode::Task(_))));
    let mut results: Vec<InlineResult> = tasks
        .iter()
        .map(|t| InlineResult::new(t.task_id, t.attempt, &matmul_answer(&one.store, &t.work, false)))
        .collect();
    // The last item's bytes do not hash to its commitment.
    results[3].result_hash = results[0].result_hash.clone();
    one.seq += 1;
    let effects = one.send(&FromNode::Deliver { session: one.nonce.clone(), seq: one.seq, results, failed: vec![] });
    let refused: Vec<_> = effects
        .iter()
        .filter_map(|e| {
            if let Effect::Send { msg: ToNode::Error { code, message }, .. } = e { Some((code, message)) } else { None }
        })
        .collect();
    assert!(
        matches!(&refused[..], [(ErrorCode::Malformed, m)] if m.contains(&format!("task {}", tasks[3].task_id))),
        "{refused:?}"
    );
    let accepted = effects
        .iter()
        .filter(|e| matches!(e, Effect::Send { msg: ToNode::Verdict { accepted: true, .. }, .. }))
        .count();
    assert_eq!(accepted, 3, "{effects:?}");
    // The refused item's attempt is still open: a forged result delivered for it now is judged, and slashed on the
    // signed frame that carried it.
    let forged = matmul_answer(&one.store, &tasks[3].work, true);
    let item = InlineResult::new(tasks[3].task_id, tasks[3].attempt, &forged);
    one.seq += 1;
    let effects =
        one.send(&FromNode::Deliver { session: one.nonce.clone(), seq: one.seq, results: vec![item], failed: vec![] });
    let slashed: Vec<_> = effects
        .iter()
        .filter_map(|e| if let Effect::Slash { evidence, .. } = e { Some(evidence) } else { None })
        .collect();
    assert_eq!(slashed.len(), 1, "{effects:?}");
    let signed: FromNode = slashed[0].commit.open().unwrap();
    let forged_hash = blake3::hash(&forged).to_hex().to_string();
    assert_eq!(signed.commitment(tasks[3].task_id, tasks[3].attempt), Some(forged_hash.as_str()));
    assert_eq!(signed.inline_result(tasks[3].task_id, tasks[3].attempt), Some(forged));
}

/// A node speaking protocol `version` with 8 slots, attested, and a funded client; the inbox empty.
fn attested_speaking(version: u32) -> (One, neurolov_protocol::Id) {
    let mut one = One::new();
    let mut reg = one.register_msg();
    if let FromNode::Register { version: v, slots, .. } = &mut reg {
        *v = version;
        *slots = 8;
    }
    one.send(&reg);
    let challenge = one.last_task();
    one.deliver(&challenge, false);
    let client = Keypair::from_seed([7; 32]).id();
    one.core.faucet(one.now, client).unwrap();
    one.inbox.clear();
    (one, client)
}

/// A row block of a seeded A is named by its place in the seed's stream (version 3): planning stores nothing and a
/// version-3 node generates its block; a version-2 node gets the block's values inline and a version-1 node a blob,
/// because either would ignore `offset` and compute the wrong block. Every version's answer is accepted.
#[test]
fn seeded_blocks_travel_as_offsets_to_version_3_and_as_data_to_older_nodes() {
    for version in [3, 2, 1] {
        let (mut one, client) = attested_speaking(version);
        let (_, effects) = one.core.submit(one.now, client, matmul_spec(16, 4, 4, 1, 2), &one.store).unwrap();
        let stored = effects.iter().filter(|e| matches!(e, Effect::StoreBlob { .. })).count();
        one.absorb(&effects);
        let tasks: Vec<Task> = one
            .inbox
            .iter()
            .flat_map(|m| match m {
                ToNode::Tasks { tasks } => tasks.clone(),
                ToNode::Task(t) => vec![t.clone()],
                _ => vec![],
            })
            .collect();
        assert_eq!(tasks.len(), 4, "version {version}: {:?}", one.inbox);
        let offsets: Vec<Option<u64>> = tasks
            .iter()
            .map(|t| match &t.work {
                Work::Matmul { a: DataRef::Seeded { offset, .. }, .. } => Some(*offset),
                _ => None,
            })
            .collect();
        match version {
            3 => {
                assert_eq!(offsets, [Some(0), Some(16), Some(32), Some(48)]);
                assert_eq!(stored, 0, "planning a seeded job stores nothing");
            }
            2 => assert!(tasks[1..].iter().all(|t| matches!(&t.work, Work::Matmul { a: DataRef::Inline { .. }, .. }))),
            _ => assert!(tasks[1..].iter().all(|t| matches!(&t.work, Work::Matmul { a: DataRef::Blob { .. }, .. }))),
        }
        for t in &tasks {
            let effects = one.deliver(t, false);
            let accepted =
                effects.iter().any(|e| matches!(e, Effect::Send { msg: ToNode::Verdict { accepted: true, .. }, .. }));
            assert!(accepted, "version {version}, task {}: {effects:?}", t.task_id);
        }
    }
}
