//! The JSON documents the store keeps the core's records as (the core's own types stay serde-free), and the
//! conversions both ways.

use neurolov_core::{
    Deposit, Evidence, InputData, JobRecord, JobSpec, JobState, NodeRecord, Withdrawal, WithdrawalState,
};
use neurolov_ledger::TransferId;
use neurolov_protocol::Id;
use neurolov_protocol::chain::Chain;
use neurolov_protocol::messages::{ClaimedHardware, NodeKind, WgslBuffer};
use neurolov_scheduler::WorkHistory;
use neurolov_verify::replicas::Tolerance;

#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct EvidenceDoc {
    pub(super) task: u64,
    pub(super) attempt: u32,
    pub(super) commit: neurolov_protocol::Envelope,
    pub(super) work: neurolov_protocol::messages::Work,
    pub(super) reason: String,
    /// An inference's challenge seed and opening blob (absent in evidence of other work, and in older records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) opening: Option<(u64, String)>,
}

#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct NodeDoc {
    pub(super) id: Id,
    pub(super) operator: Id,
    pub(super) kind: NodeKind,
    pub(super) claimed: ClaimedHardware,
    pub(super) price_nano_per_gflop: u64,
    pub(super) slots: u32,
    pub(super) attested: bool,
    pub(super) gflops_verified: f64,
    pub(super) verified: u64,
    pub(super) failed: u64,
    pub(super) timed_out: u64,
    pub(super) up_ms: u64,
    pub(super) first_seen_ms: u64,
    #[serde(default)]
    pub(super) checks_passed: u64,
    #[serde(default)]
    pub(super) provisional: Vec<(u64, u64)>,
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(tag = "from", rename_all = "snake_case")]
pub(super) enum InputDoc {
    Seeded { seed: u64 },
    Blob { hash: String },
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(super) enum SpecDoc {
    Matmul {
        m: u32,
        n: u32,
        k: u32,
        a: InputDoc,
        b: InputDoc,
        max_price_nano_per_gflop: u64,
        min_reliability: f64,
    },
    Infer {
        model: String,
        request: neurolov_protocol::inference::InferRequest,
    },
    Wgsl {
        source_hash: String,
        entry_point: String,
        buffers: Vec<WgslBuffer>,
        dispatch: [u32; 3],
        /// `None`: bitwise; `Some((abs, rel))`: float tolerance.
        tolerance: Option<(f32, f32)>,
        work_mflop: u64,
        max_price_nano_per_gflop: u64,
        min_reliability: f64,
        #[serde(default)]
        features: Vec<String>,
    },
}

#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct JobDoc {
    pub(super) id: u64,
    pub(super) client: Id,
    pub(super) spec: SpecDoc,
    /// `running`, `done` or `failed`.
    pub(super) state: String,
    #[serde(default)]
    pub(super) reason: Option<String>,
    pub(super) tasks: Vec<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) idempotency_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) finished_ms: Option<u64>,
    /// The protocol fee it was escrowed for (absent in records from before it was kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) fee_bps: Option<u64>,
}

/// What an archived job keeps of each task (`jobs.archive`): what its status page showed when it left memory.
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct ArchivedTaskDoc {
    pub(super) task: u64,
    pub(super) node: Option<Id>,
    pub(super) verified: bool,
    pub(super) attempts: u32,
}

pub(super) fn input_doc(i: &InputData) -> InputDoc {
    match i {
        InputData::Seeded { seed } => InputDoc::Seeded { seed: *seed },
        InputData::Blob { hash } => InputDoc::Blob { hash: hash.clone() },
    }
}

pub(super) fn input(i: InputDoc) -> InputData {
    match i {
        InputDoc::Seeded { seed } => InputData::Seeded { seed },
        InputDoc::Blob { hash } => InputData::Blob { hash },
    }
}

pub(super) fn job_doc(r: &JobRecord) -> JobDoc {
    let spec = match &r.spec {
        JobSpec::Matmul { m, n, k, a, b, max_price_nano_per_gflop, min_reliability } => SpecDoc::Matmul {
            m: *m,
            n: *n,
            k: *k,
            a: input_doc(a),
            b: input_doc(b),
            max_price_nano_per_gflop: *max_price_nano_per_gflop,
            min_reliability: *min_reliability,
        },
        JobSpec::Wgsl {
            source_hash,
            entry_point,
            buffers,
            dispatch,
            tolerance,
            work_mflop,
            max_price_nano_per_gflop,
            min_reliability,
            features,
        } => SpecDoc::Wgsl {
            source_hash: source_hash.clone(),
            entry_point: entry_point.clone(),
            buffers: buffers.clone(),
            dispatch: *dispatch,
            tolerance: match tolerance {
                Tolerance::Bitwise => None,
                Tolerance::Float { abs, rel } => Some((*abs, *rel)),
            },
            work_mflop: *work_mflop,
            max_price_nano_per_gflop: *max_price_nano_per_gflop,
            min_reliability: *min_reliability,
            features: features.clone(),
        },
        JobSpec::Infer { model, request } => SpecDoc::Infer { model: model.clone(), request: request.clone() },
    };
    JobDoc {
        id: r.id,
        client: r.client,
        spec,
        state: r.state.name().into(),
        reason: r.state.reason().map(str::to_string),
        tasks: r.tasks.clone(),
        idempotency_key: r.idempotency_key.clone(),
        finished_ms: r.finished_ms,
        fee_bps: r.fee_bps,
    }
}

pub(super) fn job_record(d: JobDoc) -> JobRecord {
    let spec = match d.spec {
        SpecDoc::Matmul { m, n, k, a, b, max_price_nano_per_gflop, min_reliability } => {
            JobSpec::Matmul { m, n, k, a: input(a), b: input(b), max_price_nano_per_gflop, min_reliability }
        }
        SpecDoc::Wgsl {
            source_hash,
            entry_point,
            buffers,
            dispatch,
            tolerance,
            work_mflop,
            max_price_nano_per_gflop,
            min_reliability,
            features,
        } => JobSpec::Wgsl {
            source_hash,
            entry_point,
            buffers,
            dispatch,
            tolerance: tolerance.map_or(Tolerance::Bitwise, |(abs, rel)| Tolerance::Float { abs, rel }),
            work_mflop,
            max_price_nano_per_gflop,
            min_reliability,
            features,
        },
        SpecDoc::Infer { model, request } => JobSpec::Infer { model, request },
    };
    let state = match d.state.as_str() {
        "done" => JobState::Done,
        "failed" => JobState::Failed { reason: d.reason.unwrap_or_default() },
        _ => JobState::Running { tasks_done: 0, tasks: d.tasks.len() },
    };
    JobRecord {
        id: d.id,
        client: d.client,
        spec,
        state,
        tasks: d.tasks,
        idempotency_key: d.idempotency_key,
        finished_ms: d.finished_ms,
        fee_bps: d.fee_bps,
    }
}

pub(super) fn node_record(d: NodeDoc) -> NodeRecord {
    NodeRecord {
        id: d.id,
        operator: d.operator,
        kind: d.kind,
        claimed: d.claimed,
        price_nano_per_gflop: d.price_nano_per_gflop,
        slots: d.slots,
        attested: d.attested,
        gflops_verified: d.gflops_verified,
        history: WorkHistory {
            verified: d.verified,
            failed: d.failed,
            timed_out: d.timed_out,
            uptime_s: 0,
            known_s: 0,
        },
        up_ms: d.up_ms,
        first_seen_ms: d.first_seen_ms,
        checks_passed: d.checks_passed,
        provisional: d.provisional,
    }
}

pub(super) fn node_doc(n: &NodeRecord) -> NodeDoc {
    NodeDoc {
        id: n.id,
        operator: n.operator,
        kind: n.kind,
        claimed: n.claimed.clone(),
        price_nano_per_gflop: n.price_nano_per_gflop,
        slots: n.slots,
        attested: n.attested,
        gflops_verified: n.gflops_verified,
        verified: n.history.verified,
        failed: n.history.failed,
        timed_out: n.history.timed_out,
        up_ms: n.up_ms,
        first_seen_ms: n.first_seen_ms,
        checks_passed: n.checks_passed,
        provisional: n.provisional.clone(),
    }
}

pub(super) fn evidence(d: EvidenceDoc) -> Evidence {
    Evidence { task: d.task, attempt: d.attempt, commit: d.commit, work: d.work, reason: d.reason, opening: d.opening }
}

pub(super) fn evidence_doc(e: &Evidence) -> EvidenceDoc {
    EvidenceDoc {
        task: e.task,
        attempt: e.attempt,
        commit: e.commit.clone(),
        work: e.work.clone(),
        reason: e.reason.clone(),
        opening: e.opening.clone(),
    }
}

/// A withdrawal's state as stored; the signed transaction base64.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub(super) enum WithdrawalStateDoc {
    Requested,
    Signed { tx_id: String, signed_tx: String, expires: u64 },
    Confirmed { tx_id: String },
    Failed { tx_id: Option<String>, reason: String },
}

#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct WithdrawalDoc {
    /// The ledger transfer id, hex.
    pub(super) id: String,
    pub(super) account: Id,
    pub(super) chain: Chain,
    pub(super) to: String,
    pub(super) amount_nano: u64,
    /// Absent in records from before withdrawals paid a fee.
    #[serde(default)]
    pub(super) fee_nano: u64,
    pub(super) requested_ms: u64,
    pub(super) state: WithdrawalStateDoc,
}

#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct DepositDoc {
    pub(super) id: String,
    pub(super) account: Id,
    pub(super) chain: Chain,
    pub(super) tx_id: String,
    pub(super) amount_nano: u64,
    pub(super) credited_ms: u64,
}

fn transfer_id(hex: &str) -> anyhow::Result<TransferId> {
    Ok(TransferId(u128::from_str_radix(hex, 16)?))
}

pub(super) fn withdrawal_doc(w: &Withdrawal) -> WithdrawalDoc {
    use base64::Engine as _;
    let state = match &w.state {
        WithdrawalState::Requested => WithdrawalStateDoc::Requested,
        WithdrawalState::Signed { tx_id, signed_tx, expires } => WithdrawalStateDoc::Signed {
            tx_id: tx_id.clone(),
            signed_tx: base64::engine::general_purpose::STANDARD.encode(signed_tx),
            expires: *expires,
        },
        WithdrawalState::Confirmed { tx_id } => WithdrawalStateDoc::Confirmed { tx_id: tx_id.clone() },
        WithdrawalState::Failed { tx_id, reason } => {
            WithdrawalStateDoc::Failed { tx_id: tx_id.clone(), reason: reason.clone() }
        }
    };
    WithdrawalDoc {
        id: w.id.to_string(),
        account: w.account,
        chain: w.chain,
        to: w.to.clone(),
        amount_nano: w.amount_nano,
        fee_nano: w.fee_nano,
        requested_ms: w.requested_ms,
        state,
    }
}

pub(super) fn withdrawal(d: WithdrawalDoc) -> anyhow::Result<Withdrawal> {
    use base64::Engine as _;
    let state = match d.state {
        WithdrawalStateDoc::Requested => WithdrawalState::Requested,
        WithdrawalStateDoc::Signed { tx_id, signed_tx, expires } => WithdrawalState::Signed {
            tx_id,
            signed_tx: base64::engine::general_purpose::STANDARD.decode(signed_tx)?,
            expires,
        },
        WithdrawalStateDoc::Confirmed { tx_id } => WithdrawalState::Confirmed { tx_id },
        WithdrawalStateDoc::Failed { tx_id, reason } => WithdrawalState::Failed { tx_id, reason },
    };
    Ok(Withdrawal {
        id: transfer_id(&d.id)?,
        account: d.account,
        chain: d.chain,
        to: d.to,
        amount_nano: d.amount_nano,
        fee_nano: d.fee_nano,
        requested_ms: d.requested_ms,
        state,
    })
}

pub(super) fn deposit_doc(d: &Deposit) -> DepositDoc {
    DepositDoc {
        id: d.id.to_string(),
        account: d.account,
        chain: d.chain,
        tx_id: d.tx_id.clone(),
        amount_nano: d.amount_nano,
        credited_ms: d.credited_ms,
    }
}
