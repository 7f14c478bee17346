//! What one event costs the core when its queue holds work nobody can take: `NODES` attested nodes with free slots
//! and `JOBS` jobs of `TASKS` tasks priced below every node's ask. Every event (a frame, a tick) may run a dispatch
//! pass over the queue; measured for heartbeat frames (signature check included) and for timer ticks.
//! `cargo bench -p neurolov-core --bench dispatch`.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use neurolov_core::{Blobs, Config, Core, Effect, InputData, JobSpec};
use neurolov_protocol::messages::{ClaimedHardware, DataRef, NodeKind, ToNode, Work, seeded_f32};
use neurolov_protocol::{Envelope, FromNode, Keypair};

const NODES: u64 = 50;
/// Tasks per job (the most a job may have) and jobs.
const TASKS: u32 = 4_096;
const JOBS: u32 = 2;
const TICKS: u32 = 200;

#[derive(Default)]
struct Store(HashMap<String, Arc<[u8]>>);

impl Blobs for Store {
    fn get(&self, hash: &str) -> Option<Arc<[u8]>> {
        self.0.get(hash).cloned()
    }
}

fn frame(core: &mut Core, store: &Store, now: u64, conn: u64, kp: &Keypair, msg: &FromNode) -> Vec<Effect> {
    let effects = core.frame(now, conn, &serde_json::to_string(&Envelope::seal(kp, msg)).unwrap(), store);
    core.run_verifications(now, effects, store)
}

fn main() {
    let cfg = Config {
        attestation_size: 8,
        max_attestation_size: 8,
        tile_rows: 1,
        faucet_grant_nano: 1_000 * neurolov_ledger::NANO_PER_NLOV,
        ..Config::default()
    };
    let mut core = Core::new(cfg, 1, 0);
    let mut store = Store::default();
    let mut sessions = Vec::new();
    for conn in 1..=NODES {
        let kp = Keypair::from_seed([conn as u8; 32]);
        let effects = core.connected(0, conn);
        let Some(Effect::Send { msg: ToNode::Challenge { nonce, .. }, .. }) = effects.first() else { panic!() };
        let session = nonce.clone();
        let register = FromNode::Register {
            version: 1,
            session: session.clone(),
            seq: 0,
            operator: kp.id(),
            kind: NodeKind::Native,
            claimed: ClaimedHardware::default(),
            price_nano_per_gflop: 1_000_000,
            slots: 4,
            operator_delegation: None,
        };
        let effects = frame(&mut core, &store, 1, conn, &kp, &register);
        let task = effects
            .iter()
            .find_map(|e| if let Effect::Send { msg: ToNode::Task(t), .. } = e { Some(t.clone()) } else { None })
            .unwrap();
        let Work::Matmul { m, n, k, a: DataRef::Seeded { seed: sa, .. }, b: DataRef::Seeded { seed: sb, .. } } =
            task.work
        else {
            panic!()
        };
        let (m, n, k) = (m as usize, n as usize, k as usize);
        let mut c = vec![0.0f32; m * n];
        neurolov_kernels::cpu::sgemm(&seeded_f32(sa, m * k), &seeded_f32(sb, k * n), &mut c, m, n, k);
        let bytes: Vec<u8> = c.iter().flat_map(|x| x.to_le_bytes()).collect();
        let hash = blake3::hash(&bytes).to_hex().to_string();
        store.0.insert(hash.clone(), bytes.into());
        let (task_id, attempt) = (task.task_id, task.attempt);
        let commit = FromNode::Commit { session: session.clone(), seq: 1, task_id, attempt, result_hash: hash.clone() };
        frame(&mut core, &store, 2, conn, &kp, &commit);
        let result = FromNode::Result { session: session.clone(), seq: 2, task_id, attempt, result_hash: hash };
        frame(&mut core, &store, 3, conn, &kp, &result);
        sessions.push((conn, kp, session, 2u64));
    }
    let active = core.nodes().iter().filter(|n| n.score.is_some()).count();
    assert_eq!(active as u64, NODES, "every node attested");
    let client = Keypair::from_seed([200; 32]).id();
    core.faucet(10, client).unwrap();
    let spec = JobSpec::Matmul {
        m: TASKS,
        n: 1,
        k: 1,
        a: InputData::Seeded { seed: 1 },
        b: InputData::Seeded { seed: 2 },
        max_price_nano_per_gflop: 1,
        min_reliability: 0.0,
    };
    for _ in 0..JOBS {
        core.submit(10, client, spec.clone(), &store).unwrap();
    }
    let queued = (TASKS * JOBS) as usize;
    assert_eq!(core.queued(), queued);
    // Heartbeats: signed frames that change nothing the scheduler sees.
    let mut events = 0u32;
    let start = Instant::now();
    for round in 0..TICKS / 10 {
        for (conn, kp, session, seq) in &mut sessions {
            *seq += 1;
            let beat = FromNode::Heartbeat { session: session.clone(), seq: *seq };
            frame(&mut core, &store, 20 + u64::from(round), *conn, kp, &beat);
            events += 1;
        }
    }
    let per_frame = start.elapsed() / events;
    let start = Instant::now();
    for i in 0..TICKS {
        core.tick(100 + u64::from(i));
    }
    let per_tick = start.elapsed() / TICKS;
    assert_eq!(core.queued(), queued, "the unservable tasks stay queued");
    println!(
        "{NODES} nodes with free slots, {queued} queued tasks nobody can take: {per_frame:?} per heartbeat frame, \
         {per_tick:?} per tick"
    );
}
