//! Inference jobs through the core, frame by frame: only a node holding the model gets the task; its committed answer
//! is challenged only after the commitment; the opening's size is held to the request; the check's verdict pays the
//! tokens used (provider, author's royalty, protocol fee; the rest refunded) or convicts with the opening as evidence;
//! a node that leaves instead of opening earns nothing. The proof itself is the models crate's (checked for real in
//! `crates/models/tests/proof.rs` and end to end in the coordinator's tests): here a checker stands in for it and
//! records what the core asked it.

#![allow(clippy::unwrap_used)] // Test helpers unwrap: a panic is the failure report.

mod common;

use std::sync::Mutex;

use common::Store;
use neurolov_core::{Config, Core, Effect, JobSpec, JobState, ModelKind, ModelListing, ProofChecker, Verdict};
use neurolov_protocol::inference::{Answer, Finish, InferOutput, InferRequest};
use neurolov_protocol::messages::{ClaimedHardware, ErrorCode, NodeKind, Task, ToNode, Work, seeded_f32_at};
use neurolov_protocol::{Envelope, FromNode, Id, Keypair};

const MODEL: &str = "tiny-chat";
const NLOV: u64 = neurolov_ledger::NANO_PER_NLOV;

fn author() -> Id {
    Keypair::from_seed([9; 32]).id()
}

fn cfg() -> Config {
    Config {
        heartbeat_interval_ms: 1_000,
        attestation_size: 8,
        max_attestation_size: 8,
        faucet_grant_nano: 1_000 * NLOV,
        models: vec![ModelListing {
            name: MODEL.into(),
            kind: ModelKind::Chat,
            price_in_nano_per_1k: 1_000_000,
            price_out_nano_per_1k: 2_000_000,
            author: Some(author()),
            royalty_bps: 1_000,
            width: 0,
            max_positions: 64,
            opening_fixed_bytes: 1_000,
            opening_bytes_per_position: 100,
            mflop_per_token: 1,
        }],
        ..Config::default()
    }
}

fn chat(max_tokens: u32) -> InferRequest {
    InferRequest::Chat { prompt: vec![1, 2, 3], max_tokens, stop: vec![0], temperature: 0.0, top_p: 1.0, seed: 0 }
}

fn answer(tokens: Vec<u32>, finish: Finish, stop_token: Option<u32>) -> Vec<u8> {
    InferOutput { root: [3; 32], answer: Answer::Chat { tokens, finish, stop_token } }.to_bytes()
}

/// Stands in for the models' proof check: gives `verdict` and records the seeds it was asked about.
struct Checker {
    verdict: Verdict,
    seeds: Mutex<Vec<u64>>,
}

impl ProofChecker for Checker {
    fn check(&self, model: &str, _: &InferRequest, _: &InferOutput, opening: &[u8], seed: u64) -> Verdict {
        assert_eq!((model, opening), (MODEL, &b"opening"[..]));
        self.seeds.lock().unwrap().push(seed);
        self.verdict.clone()
    }
}

/// One node on one connection, holding `models`.
struct Net {
    core: Core,
    store: Store,
    kp: Keypair,
    nonce: String,
    seq: u64,
    now: u64,
    inbox: Vec<ToNode>,
    checker: Checker,
}

impl Net {
    fn new(models: &[&str], verdict: Verdict) -> Net {
        Net::with(cfg(), models, verdict)
    }

    fn with(config: Config, models: &[&str], verdict: Verdict) -> Net {
        let claimed =
            ClaimedHardware { models: models.iter().map(|m| m.to_string()).collect(), ..ClaimedHardware::default() };
        Net::claiming(config, claimed, 3, verdict)
    }

    /// The node on connection 1 claims `claimed` and asks `price_nano_per_gflop`.
    fn claiming(config: Config, claimed: ClaimedHardware, price_nano_per_gflop: u64, verdict: Verdict) -> Net {
        let mut core = Core::new(config, 1, 0);
        let nonce = match &core.connected(0, 1)[..] {
            [Effect::Send { msg: ToNode::Challenge { nonce, .. }, .. }] => nonce.clone(),
            other => panic!("expected a challenge, got {other:?}"),
        };
        let checker = Checker { verdict, seeds: Mutex::new(Vec::new()) };
        let mut net = Net {
            core,
            store: Store::default(),
            kp: Keypair::from_seed([5; 32]),
            nonce,
            seq: 0,
            now: 0,
            inbox: Vec::new(),
            checker,
        };
        net.send(FromNode::Register {
            version: 3,
            session: net.nonce.clone(),
            seq: 0,
            operator: net.kp.id(),
            kind: NodeKind::Native,
            claimed,
            price_nano_per_gflop,
            slots: 1,
            operator_delegation: None,
        });
        let challenge = net.last_task();
        net.answer_challenge(&challenge);
        net
    }

    /// A second node (connection `conn`, its own operator) claiming `claimed`, attested; its key.
    fn join(&mut self, conn: u64, seed: u8, claimed: ClaimedHardware, price_nano_per_gflop: u64) -> Keypair {
        let kp = Keypair::from_seed([seed; 32]);
        let nonce = match &self.core.connected(self.now, conn)[..] {
            [Effect::Send { msg: ToNode::Challenge { nonce, .. }, .. }] => nonce.clone(),
            other => panic!("expected a challenge, got {other:?}"),
        };
        let operator = kp.id();
        let register = FromNode::Register {
            version: 3,
            session: nonce.clone(),
            seq: 0,
            operator,
            kind: NodeKind::Native,
            claimed,
            price_nano_per_gflop,
            slots: 1,
            operator_delegation: None,
        };
        let effects = self.send_as(conn, &kp, &register);
        let challenge = effects
            .iter()
            .find_map(|e| match e {
                Effect::Send { msg: ToNode::Task(t), conn: c } if *c == conn => Some(t.clone()),
                _ => None,
            })
            .expect("a challenge");
        let bytes = challenge_product(&challenge);
        let hash = blake3::hash(&bytes).to_hex().to_string();
        self.store.0.insert(hash.clone(), bytes.into());
        let (task_id, attempt) = (challenge.task_id, challenge.attempt);
        let session = nonce.clone();
        self.send_as(conn, &kp, &FromNode::Commit { session, seq: 1, task_id, attempt, result_hash: hash.clone() });
        self.send_as(conn, &kp, &FromNode::Result { session: nonce, seq: 2, task_id, attempt, result_hash: hash });
        kp
    }

    fn send_as(&mut self, conn: u64, kp: &Keypair, msg: &FromNode) -> Vec<Effect> {
        self.now += 10;
        let text = serde_json::to_string(&Envelope::seal(kp, msg)).unwrap();
        let effects = self.core.frame(self.now, conn, &text, &self.store);
        let effects = self.core.run_verifications_with(self.now, effects, &self.store, Some(&self.checker));
        for e in &effects {
            if let Effect::StoreBlob { hash, bytes } = e {
                self.store.0.insert(hash.clone(), bytes.clone());
            }
        }
        effects
    }

    /// Computes an attestation challenge's product and delivers it.
    fn answer_challenge(&mut self, challenge: &Task) {
        self.commit(challenge, challenge_product(challenge));
    }

    fn send(&mut self, msg: FromNode) -> Vec<Effect> {
        self.now += 10;
        let text = serde_json::to_string(&Envelope::seal(&self.kp, &msg)).unwrap();
        let effects = self.core.frame(self.now, 1, &text, &self.store);
        let effects = self.core.run_verifications_with(self.now, effects, &self.store, Some(&self.checker));
        self.absorb(&effects);
        effects
    }

    fn absorb(&mut self, effects: &[Effect]) {
        for e in effects {
            match e {
                Effect::Send { msg: ToNode::Tasks { tasks }, .. } => {
                    self.inbox.extend(tasks.iter().cloned().map(ToNode::Task));
                }
                Effect::Send { msg, .. } => self.inbox.push(msg.clone()),
                Effect::StoreBlob { hash, bytes } => {
                    self.store.0.insert(hash.clone(), bytes.clone());
                }
                _ => {}
            }
        }
    }

    fn last_task(&self) -> Task {
        self.inbox
            .iter()
            .rev()
            .find_map(|m| if let ToNode::Task(t) = m { Some(t.clone()) } else { None })
            .expect("a task")
    }

    /// A funded client's inference job; the task the node got, if it got one.
    fn submit(&mut self, request: InferRequest) -> (Id, u64, Option<Task>) {
        let client = Keypair::from_seed([7; 32]).id();
        self.core.faucet(self.now, client).unwrap();
        let before = self.inbox.len();
        let spec = JobSpec::Infer { model: MODEL.into(), request };
        let (job, effects) = self.core.submit(self.now, client, spec, &self.store).unwrap();
        self.absorb(&effects);
        let task =
            self.inbox[before..].iter().find_map(|m| if let ToNode::Task(t) = m { Some(t.clone()) } else { None });
        (client, job, task)
    }

    /// Stores `bytes` as the attempt's result and delivers it with `commit` and `result`.
    fn commit(&mut self, task: &Task, bytes: Vec<u8>) -> Vec<Effect> {
        let hash = blake3::hash(&bytes).to_hex().to_string();
        assert!(self.core.claim_upload(&self.kp.id(), bytes.len() as u64, &hash), "the result upload is allowed");
        self.store.0.insert(hash.clone(), bytes.into());
        let (task_id, attempt) = (task.task_id, task.attempt);
        self.seq += 1;
        let session = self.nonce.clone();
        self.send(FromNode::Commit {
            session: session.clone(),
            seq: self.seq,
            task_id,
            attempt,
            result_hash: hash.clone(),
        });
        self.seq += 1;
        self.send(FromNode::Result { session, seq: self.seq, task_id, attempt, result_hash: hash })
    }

    /// Uploads `bytes` as the attempt's opening (if the core allows it) and says so.
    fn open(&mut self, task: &Task, bytes: &[u8]) -> Vec<Effect> {
        let hash = blake3::hash(bytes).to_hex().to_string();
        if self.core.claim_upload(&self.kp.id(), bytes.len() as u64, &hash) {
            self.store.0.insert(hash.clone(), bytes.into());
        }
        self.seq += 1;
        let (task_id, attempt) = (task.task_id, task.attempt);
        self.send(FromNode::Opened { session: self.nonce.clone(), seq: self.seq, task_id, attempt, opening_hash: hash })
    }

    fn open_asked(&self) -> Option<u64> {
        self.inbox.iter().rev().find_map(|m| if let ToNode::Open { seed, .. } = m { Some(*seed) } else { None })
    }

    fn balance(&self, id: &Id) -> u64 {
        self.core.wallet_view(id).balance_nano
    }
}

/// The honest answer to an attestation challenge: its product's bytes.
fn challenge_product(challenge: &Task) -> Vec<u8> {
    let Work::Matmul { m, n, k, a, b } = &challenge.work else { panic!("a matmul challenge") };
    let seeded = |r: &neurolov_protocol::messages::DataRef| match r {
        neurolov_protocol::messages::DataRef::Seeded { seed, len, offset } => {
            seeded_f32_at(*seed, *offset, *len as usize)
        }
        other => panic!("a seeded challenge, got {other:?}"),
    };
    let (m, n, k) = (*m as usize, *n as usize, *k as usize);
    let mut c = vec![0.0f32; m * n];
    neurolov_kernels::cpu::sgemm(&seeded(a), &seeded(b), &mut c, m, n, k);
    c.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The connection an inference task went out on, among `effects`.
fn sent_to(effects: &[Effect]) -> Option<(u64, Task)> {
    effects.iter().find_map(|e| match e {
        Effect::Send { conn, msg: ToNode::Task(t) } if matches!(t.work, Work::Infer { .. }) => Some((*conn, t.clone())),
        Effect::Send { conn, msg: ToNode::Tasks { tasks } } => {
            tasks.iter().find(|t| matches!(t.work, Work::Infer { .. })).map(|t| (*conn, t.clone()))
        }
        _ => None,
    })
}

#[test]
fn a_node_that_fetches_models_gets_a_request_only_when_no_holder_can_take_it_and_then_holds_the_model() {
    // The fetcher (connection 1) asks the lowest price: by score alone it would win every task.
    let fetcher = ClaimedHardware { fetches_models: true, ..ClaimedHardware::default() };
    let mut net = Net::claiming(cfg(), fetcher, 1, Verdict::Accepted);
    let holder = ClaimedHardware { models: vec![MODEL.into()], ..ClaimedHardware::default() };
    net.join(2, 9, holder, 1_000);
    let client = Keypair::from_seed([7; 32]).id();
    net.core.faucet(net.now, client).unwrap();
    let spec = JobSpec::Infer { model: MODEL.into(), request: chat(5) };
    let (_, effects) = net.core.submit(net.now, client, spec.clone(), &net.store).unwrap();
    assert_eq!(sent_to(&effects).map(|(conn, _)| conn), Some(2), "the holder first: {effects:?}");
    // The holder's one slot is taken: the next request goes to the node that fetches the model.
    let (_, effects) = net.core.submit(net.now, client, spec.clone(), &net.store).unwrap();
    net.absorb(&effects);
    let (conn, task) = sent_to(&effects).expect("the fetcher gets the request the holder cannot take");
    assert_eq!(conn, 1);
    assert!(net.core.nodes().iter().all(|n| n.id != net.kp.id() || n.claimed.models.is_empty()));
    net.commit(&task, answer(vec![4, 5], Finish::Stop, Some(0)));
    net.open(&task, b"opening");
    // Verified with the model it fetched, it holds the model now: the scheduler counts it among the holders.
    let me = net.core.nodes().into_iter().find(|n| n.id == net.kp.id()).unwrap();
    assert_eq!(me.claimed.models, [MODEL]);
    let (_, effects) = net.core.submit(net.now, client, spec, &net.store).unwrap();
    assert_eq!(sent_to(&effects).map(|(conn, _)| conn), Some(1), "a holder now, and the cheaper one");
}

fn error_code(effects: &[Effect]) -> Option<ErrorCode> {
    effects
        .iter()
        .find_map(|e| if let Effect::Send { msg: ToNode::Error { code, .. }, .. } = e { Some(*code) } else { None })
}

#[test]
fn a_verified_chat_pays_the_tokens_used_to_provider_author_and_treasury_and_refunds_the_rest() {
    let mut net = Net::new(&[MODEL], Verdict::Accepted);
    let (client, job, task) = net.submit(chat(5));
    let task = task.expect("the node holding the model gets the task");
    // Escrowed: 3 input tokens at 1 NLOV-milli... the largest price: (3·10⁶ + 5·2·10⁶) / 1000.
    assert_eq!(net.balance(&client), 1_000 * NLOV - 13_000);
    let effects = net.commit(&task, answer(vec![4, 5], Finish::Stop, Some(0)));
    assert!(!effects.iter().any(|e| matches!(e, Effect::Reward { .. })), "paid before its proof: {effects:?}");
    let seed = net.open_asked().expect("the node is asked to open its proof after it committed");
    let effects = net.open(&task, b"opening");
    assert_eq!(*net.checker.seeds.lock().unwrap(), [seed], "the check is made at the challenge sent");
    // Used: (3·10⁶ + 2·2·10⁶) / 1000 = 7000; 10% royalty, 5% fee, the provider the rest.
    let reward = effects.iter().find_map(|e| match e {
        Effect::Reward { paid_nano, fee_nano, royalty_nano, .. } => Some((*paid_nano, *fee_nano, *royalty_nano)),
        _ => None,
    });
    assert_eq!(reward, Some((5_950, 350, 700)));
    assert_eq!(net.balance(&author()), 700);
    assert_eq!(net.balance(&net.kp.id()), 5_950);
    assert_eq!(net.balance(&client), 1_000 * NLOV - 7_000, "the escrow's rest is refunded");
    assert_eq!(net.core.job(job).unwrap().state, JobState::Done);
    let usage = net.core.model_usage(MODEL);
    assert_eq!((usage.requests, usage.input_tokens, usage.output_tokens, usage.royalties_nano), (1, 3, 2, 700));
    net.core.ledger().check_full().unwrap();
}

#[test]
fn a_proof_proven_wrong_convicts_with_the_opening_as_evidence_and_pays_nothing() {
    let mut net = Net::new(&[MODEL], Verdict::Wrong("layer 3 is not the model's".into()));
    let (client, _, task) = net.submit(chat(5));
    let task = task.unwrap();
    net.commit(&task, answer(vec![4, 5, 6, 7, 8], Finish::Length, None));
    let seed = net.open_asked().unwrap();
    let effects = net.open(&task, b"opening");
    let evidence =
        effects.iter().find_map(|e| if let Effect::Slash { evidence, .. } = e { Some(evidence.clone()) } else { None });
    let evidence = evidence.expect("convicted");
    let opening_hash = blake3::hash(b"opening").to_hex().to_string();
    assert_eq!(evidence.opening, Some((seed, opening_hash.clone())));
    assert!(net.core.live_blobs().contains(&opening_hash), "the evidence keeps its opening");
    assert_eq!(net.balance(&net.kp.id()), 0);
    assert_eq!(net.balance(&author()), 0);
    // The task runs again (nobody else holds the model, so it waits): the client's escrow is still held.
    assert_eq!(net.balance(&client), 1_000 * NLOV - 13_000);
}

#[test]
fn answers_a_request_cannot_have_are_proven_wrong_without_the_proof() {
    for (bytes, why) in [
        (answer(vec![4, 0], Finish::Length, None), "a stop token emitted"),
        (answer(vec![4, 5, 6], Finish::Length, None), "length with fewer tokens than asked"),
        (answer(vec![4], Finish::Stop, Some(9)), "stopped on a token that is not a stop token"),
        (vec![7; 40], "not an output at all"),
    ] {
        let mut net = Net::new(&[MODEL], Verdict::Accepted);
        let (_, _, task) = net.submit(chat(5));
        let task = task.unwrap();
        net.commit(&task, bytes);
        let effects = net.open(&task, b"opening");
        assert!(effects.iter().any(|e| matches!(e, Effect::Slash { .. })), "{why}: {effects:?}");
        assert!(net.checker.seeds.lock().unwrap().is_empty(), "{why}: the proof was not needed");
    }
}

/// A challenge already in flight when a node is convicted does not re-attest it: the conviction's cooldown holds.
#[test]
fn a_convicted_node_is_not_re_attested_by_a_challenge_sent_before_its_conviction() {
    let mut net = Net::with(Config { max_attestation_size: 16, ..cfg() }, &[MODEL], Verdict::Wrong("forged".into()));
    // The first challenge came back fast: a larger one goes out at once.
    net.now += 10;
    let effects = net.core.tick(net.now);
    net.absorb(&effects);
    let challenge = net.last_task();
    assert!(matches!(challenge.work, Work::Matmul { m: 16, .. }), "{challenge:?}");
    let (_, _, task) = net.submit(chat(5));
    let task = task.unwrap();
    net.commit(&task, answer(vec![4, 5], Finish::Stop, Some(0)));
    let effects = net.open(&task, b"opening");
    assert!(effects.iter().any(|e| matches!(e, Effect::Slash { .. })), "convicted");
    net.answer_challenge(&challenge);
    let me = &net.core.nodes()[0];
    assert_ne!(me.state, neurolov_core::NodeState::Active, "re-attested during its cooldown");
    assert_eq!(me.tasks_verified, 0, "trust earned back during its cooldown");
}

#[test]
fn only_nodes_holding_the_model_get_it_and_unknown_models_are_refused() {
    let mut net = Net::new(&["another-model"], Verdict::Accepted);
    let (_, _, task) = net.submit(chat(5));
    assert!(task.is_none(), "a node without the model got its task");
    assert_eq!(net.core.queued(), 1);
    let client = Keypair::from_seed([7; 32]).id();
    let refused = net.core.admit(&client, &JobSpec::Infer { model: "nope".into(), request: chat(5) });
    assert!(matches!(refused, Err(neurolov_core::SubmitError::UnknownModel(_))), "{refused:?}");
    let too_long =
        InferRequest::Chat { prompt: vec![1; 60], max_tokens: 10, stop: vec![], temperature: 0.0, top_p: 1.0, seed: 0 };
    let refused = net.core.admit(&client, &JobSpec::Infer { model: MODEL.into(), request: too_long });
    assert!(matches!(refused, Err(neurolov_core::SubmitError::BadRequest(_))), "{refused:?}");
    let embed = InferRequest::Embed { texts: vec![vec![1]] };
    let refused = net.core.admit(&client, &JobSpec::Infer { model: MODEL.into(), request: embed });
    assert!(matches!(refused, Err(neurolov_core::SubmitError::BadRequest(_))), "{refused:?}");
}

#[test]
fn an_opening_larger_than_the_request_needs_or_not_asked_for_is_refused() {
    let mut net = Net::new(&[MODEL], Verdict::Accepted);
    let (_, _, task) = net.submit(chat(5));
    let task = task.unwrap();
    // Before the commitment there is nothing to open (the blob is stored, as another attempt's could be).
    net.store.0.insert(blake3::hash(b"opening").to_hex().to_string(), b"opening"[..].into());
    net.seq += 1;
    let early = FromNode::Opened {
        session: net.nonce.clone(),
        seq: net.seq,
        task_id: task.task_id,
        attempt: task.attempt,
        opening_hash: blake3::hash(b"opening").to_hex().to_string(),
    };
    assert_eq!(error_code(&net.send(early)), Some(ErrorCode::Malformed), "an opening nobody asked for");
    net.commit(&task, answer(vec![4, 5], Finish::Stop, Some(0)));
    // 1000 + 100 · (3 + 5) bytes at most.
    let huge = vec![1u8; 1_801];
    assert!(!net.core.claim_upload(&net.kp.id(), huge.len() as u64, blake3::hash(&huge).to_hex().as_ref()));
    net.store.0.insert(blake3::hash(&huge).to_hex().to_string(), huge.clone().into());
    assert_eq!(error_code(&net.open(&task, &huge)), Some(ErrorCode::TooLarge));
    let effects = net.open(&task, b"opening");
    assert!(effects.iter().any(|e| matches!(e, Effect::Reward { .. })), "the right opening still counts: {effects:?}");
}

#[test]
fn a_node_that_leaves_instead_of_opening_earns_nothing_and_the_task_runs_again() {
    let mut net = Net::new(&[MODEL], Verdict::Accepted);
    let (client, job, task) = net.submit(chat(5));
    let task = task.unwrap();
    net.commit(&task, answer(vec![4, 5], Finish::Stop, Some(0)));
    assert!(net.open_asked().is_some());
    let verified_before = net.core.nodes()[0].tasks_failed;
    net.now += 10;
    let effects = net.core.disconnected(net.now, 1);
    net.absorb(&effects);
    assert_eq!(net.core.nodes()[0].tasks_failed, verified_before + 1, "leaving with an unopened result is a failure");
    assert_eq!(net.balance(&net.kp.id()), 0);
    assert!(!net.core.job(job).unwrap().state.is_final());
    assert_eq!(net.core.queued(), 1, "the request waits for another node");
    assert_eq!(net.balance(&client), 1_000 * NLOV - 13_000);
}
