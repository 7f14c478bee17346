//! The coordinator's HTTP contract: every JSON request and reply of `docs/API.md` as a type. The coordinator's
//! routes build their replies from these, the CLI reads them with these, and the OpenAPI document
//! (`/openapi.json`, checked in as `docs/openapi.json`) is generated from them, so a renamed field breaks the build or
//! a test, never a client at run time. Pure: serde and schema derives, no IO.
//!
//! Amounts are integer nano-NLOV (`*_nano`); addresses are base58 ed25519 keys (Solana addresses); times are
//! milliseconds since the Unix epoch (`*_ms`).

pub mod openai;

use neurolov_protocol::messages::Access;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Every refusal: a status code and a reason in words.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorReply {
    pub error: String,
}

/// A client that names no price cap pays at most 10 NLOV per TFLOP (nodes ask 1 by default).
pub const DEFAULT_MAX_PRICE_NANO_PER_GFLOP: u64 = 10_000_000;
/// Longest `?wait_ms=` a job request (`GET /v1/jobs/{id}`, `POST /v1/jobs`) waits for the job to end.
pub const MAX_JOB_WAIT_MS: u64 = 30_000;

fn default_max_price() -> u64 {
    DEFAULT_MAX_PRICE_NANO_PER_GFLOP
}

fn one() -> u64 {
    1
}

/// Where a matmul operand comes from: generated from a seed (nothing to upload), or an uploaded blob of
/// little-endian f32s, row-major.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum Operand {
    Seed { seed: u64 },
    Blob { blob: String },
}

/// One buffer of a WGSL job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BufferSpec {
    pub binding: u32,
    /// `uniform`, `read` or `read_write`; the result is the `read_write` buffers in binding order.
    #[schema(value_type = String, example = "read_write")]
    pub access: Access,
    pub size_bytes: u64,
    /// Initial contents: the hash of an uploaded blob (shorter than `size_bytes`: the rest is zero).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<String>,
}

/// `POST /v1/jobs`: C = A·B, f32, row-major.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MatmulJob {
    pub m: u32,
    pub n: u32,
    pub k: u32,
    pub a: Operand,
    pub b: Operand,
    #[serde(default = "default_max_price")]
    pub max_price_nano_per_gflop: u64,
    #[serde(default)]
    pub min_reliability: f64,
    /// The client's name for this submission: the same key again gets the same job back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// `POST /v1/jobs`: the client's own WGSL kernel.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WgslJob {
    pub source: String,
    pub entry_point: String,
    pub buffers: Vec<BufferSpec>,
    pub dispatch: [u32; 3],
    /// Relative tolerance for float outputs; absent means replicas must agree bit for bit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub float_tolerance: Option<f32>,
    /// Declared work, for scheduling and pay (bounded by what the dispatch can do).
    #[serde(default = "one")]
    pub work_mflop: u64,
    #[serde(default = "default_max_price")]
    pub max_price_nano_per_gflop: u64,
    #[serde(default)]
    pub min_reliability: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// The body of `POST /v1/jobs` (signed by the client).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum JobRequest {
    Matmul(MatmulJob),
    Wgsl(WgslJob),
}

impl JobRequest {
    pub fn idempotency_key(&self) -> Option<&str> {
        match self {
            JobRequest::Matmul(j) => j.idempotency_key.as_deref(),
            JobRequest::Wgsl(j) => j.idempotency_key.as_deref(),
        }
    }
}

/// `POST /v1/jobs` accepted (201), or a retry under the same idempotency key (200).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobCreated {
    pub id: u64,
    /// With `?wait_ms=` on the submission: the job's status once it ended (or the wait ran out), saving the client a
    /// round trip and the coordinator a second commit wait.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<JobStatus>,
    /// With `?wait_ms=`, a job that is done and whose result is small (at most [`MAX_RESULT_IN_REPLY_BYTES`], kept in
    /// the database): the result itself, standard base64 of the bytes `GET /v1/jobs/{id}/result` returns. A sync
    /// client then has its answer in one request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
}

/// Largest result that rides in the reply of a waited-for submission ([`JobCreated::result`]).
pub const MAX_RESULT_IN_REPLY_BYTES: usize = 64 * 1024;

/// Where a job stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Running,
    Done,
    Failed,
}

impl JobState {
    pub fn is_final(self) -> bool {
        self != JobState::Running
    }
}

/// One task of a job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TaskStatus {
    pub task: u64,
    /// The node holding (or that delivered) its latest attempt, when known.
    pub node: Option<String>,
    pub verified: bool,
    pub attempts: u32,
}

/// `GET /v1/jobs/{id}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobStatus {
    pub id: u64,
    pub client: String,
    pub state: JobState,
    /// Why a failed job failed.
    pub reason: Option<String>,
    pub tasks_done: usize,
    pub tasks_total: usize,
    pub progress: f64,
    pub tasks: Vec<TaskStatus>,
    /// A matmul's result C: [rows, columns] (its result bytes are C row-major, little-endian f32).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_shape: Option<[u32; 2]>,
}

/// One entry of `GET /v1/jobs` (the newest jobs in memory, newest first).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct JobSummary {
    pub id: u64,
    /// `matmul` or `wgsl`.
    pub kind: String,
    pub client: String,
    pub state: JobState,
    pub reason: Option<String>,
    pub tasks_done: usize,
    pub tasks_total: usize,
}

/// One entry of `GET /v1/nodes`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NodeEntry {
    pub id: String,
    pub operator: String,
    /// `native` or `browser`.
    pub kind: String,
    /// `attesting`, `active`, `stale` or `offline`.
    pub state: String,
    pub adapter: String,
    pub backend: String,
    pub software: bool,
    /// Whether it runs WGSL (only such nodes get WGSL tasks).
    pub wgsl: bool,
    /// The models it holds (claimed at registration, or fetched and then verified in use): inference tasks for a
    /// model go to these nodes first.
    pub models: Vec<String>,
    /// Whether it fetches a model it does not hold when no holder can take a request.
    pub fetches_models: bool,
    pub gflops_verified: f64,
    pub reliability: f64,
    /// Its ask, nano-NLOV per GFLOP.
    pub price: u64,
    /// Its scheduling score, when it is eligible.
    pub score: Option<f64>,
    pub tasks_verified: u64,
    pub tasks_failed: u64,
    pub results_provisional: usize,
}

/// `GET /v1/accounts/{address}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Account {
    pub address: String,
    pub balance_nano: u64,
    pub pending_nano: u64,
    pub available_nano: u64,
    pub staked_nano: u64,
    pub unstaking_nano: u64,
}

/// One ledger transfer as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TransferView {
    pub id: String,
    pub debit: String,
    pub credit: String,
    pub amount_nano: u64,
    /// What it settles (`escrow`, `task_pay`, `fee`, `refund`, `slash`, …).
    pub code: String,
    pub pending: bool,
    /// The pending transfer this one posts or voids.
    pub posts: Option<Option<String>>,
    pub voids: Option<Option<String>>,
    pub user_data: u64,
    pub timestamp_ms: u64,
}

/// One entry of `GET /v1/accounts/{address}/transfers`, newest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HistoryEntry {
    #[serde(flatten)]
    pub transfer: TransferView,
    /// `wallet` or `stake`.
    pub account: String,
    /// `in` or `out`.
    pub direction: String,
    /// For a deposit or a withdrawal: the chain (`solana`, `ton`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<String>,
    /// For a deposit or a withdrawal: its chain transaction (Solana signature; TON `lt:hash` of a deposit, the
    /// signed message's body hash of a withdrawal), once there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain_tx: Option<String>,
}

/// `POST /v1/wallet/transfer` (signed by the sender).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TransferRequest {
    pub to: String,
    pub amount_nano: u64,
    /// The client's id for this transfer: the same request again is applied once.
    pub id: u64,
}

/// `POST /v1/wallet/withdraw` (signed by the account): NLOV out of the network's custody to an address on a chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WithdrawRequest {
    /// `solana` or `ton`.
    pub chain: String,
    /// The destination address on that chain (for Solana, the owner: its associated token account receives).
    pub to: String,
    pub amount_nano: u64,
    /// The account's id for this withdrawal: the same request again is the same withdrawal.
    pub id: u64,
}

/// `POST /v1/gov/proposals` (signed by the proposer): the whitepaper's `createProposal`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ProposalRequest {
    pub description: String,
    /// What it does when executed: `"text"`, `{"treasury_spend": {"to": ADDRESS, "amount_nano": N}}`, or
    /// `{"set_parameter": CHANGE}` with CHANGE one of `{"fee_bps": N}`, `{"slash_bps": N}`,
    /// `{"scheduler_weights": {"performance_bps", "reliability_bps", "cost_efficiency_bps"}}`,
    /// `{"stake_priority_bps": N}`, `{"canary_rate_bps": N}`, `{"spot_check_floor_bps": N}`, `{"rerun_budget_bps": N}`, `{"max_royalty_bps": N}`, `{"heartbeat_interval_ms": N}`,
    /// `{"faucet_grant_nano": N}`, `{"withdrawal_limits": {"fee_nano", "min_nano", "max_nano", "daily_max_nano"}}`,
    /// `{"governance": {"proposal_threshold_nano", "quorum_nano", "voting_delay_ms", "voting_period_ms",
    /// "timelock_ms"}}` (see docs/API.md for the ranges).
    #[schema(value_type = Object)]
    pub action: serde_json::Value,
}

/// `POST /v1/gov/proposals/{id}/vote` (signed by the voter): `for`, `against` or `abstain`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VoteRequest {
    pub support: String,
}

/// A proposal as `GET /v1/gov/proposals` shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ProposalView {
    pub id: u64,
    pub proposer: String,
    pub description: String,
    #[schema(value_type = Object)]
    pub action: serde_json::Value,
    /// pending, active, succeeded, defeated, queued, executed, cancelled, expired.
    pub state: String,
    pub for_votes_nano: u64,
    pub against_votes_nano: u64,
    pub abstain_votes_nano: u64,
    pub quorum_nano: u64,
    pub votes: u64,
    pub start_ms: u64,
    pub end_ms: u64,
    pub eta_ms: Option<u64>,
    pub executed: bool,
    pub executed_ms: Option<u64>,
    /// The coordinator's clock when this was made (for "time left").
    pub now_ms: u64,
    /// With `?voter=ADDRESS`: that account's vote and its snapshot power.
    pub your_vote: Option<String>,
    pub your_power_nano: Option<u64>,
}

/// `POST /v1/telegram/session`: the Mini App's `Telegram.WebApp.initData`, verbatim.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TelegramSessionRequest {
    pub init_data: String,
}

/// A Telegram user signed in: their network account and its (custodial) key, for the Mini App to sign with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TelegramSession {
    /// The account (a base58 ed25519 public key, as every Neurolov id).
    pub account: String,
    pub telegram_user_id: i64,
    pub first_name: String,
    /// The Mini App's launch parameter, carried through from `/start` or a `startapp` link.
    pub start_param: Option<String>,
    /// The account's ed25519 secret seed (32 bytes, base64url): the Mini App imports it as a JWK's `d`.
    pub secret_key_base64url: String,
    /// Its public key (32 bytes, base64url): the JWK's `x`.
    pub public_key_base64url: String,
}

/// A deposit credited from a chain (`GET /v1/accounts/{address}/deposits`, `GET /v1/chains/activity`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DepositView {
    /// The ledger transfer that credited it (hex).
    pub id: String,
    pub account: String,
    pub chain: String,
    /// The chain transaction (Solana signature; TON `lt:hash`).
    pub tx_id: String,
    pub amount_nano: u64,
    pub credited_ms: u64,
}

/// `GET /v1/chains/activity`: the network's newest deposits and withdrawals, newest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ChainActivity {
    pub deposits: Vec<DepositView>,
    pub withdrawals: Vec<WithdrawalView>,
}

/// `POST /v1/wallet/withdraw/check` (the body of a withdrawal, signed the same way): whether it would be held now,
/// changing nothing (`neurolov wallet withdraw --dry-run`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WithdrawCheck {
    pub chain: String,
    pub to: String,
    pub amount_nano: u64,
    /// What it would pay the treasury when it lands (held with it, refunded if it fails).
    pub fee_nano: u64,
    /// What the account could still withdraw in the next 24 hours after this one.
    pub daily_left_nano: u64,
    /// Whether this coordinator runs custody on that chain (if not, the withdrawal would wait, held).
    pub custody_running: bool,
}

/// One withdrawal as `POST /v1/wallet/withdraw` and `GET /v1/accounts/{address}/withdrawals` show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WithdrawalView {
    /// The ledger transfer that holds the amount (hex).
    pub id: String,
    /// The account withdrawing.
    #[serde(default)]
    pub account: String,
    /// What it pays the treasury when it lands (refunded with it when it fails).
    #[serde(default)]
    pub fee_nano: u64,
    pub chain: String,
    pub to: String,
    pub amount_nano: u64,
    pub requested_ms: u64,
    /// `requested` (held, not yet signed), `signed` (sent; waiting for the chain), `confirmed`, `failed` (refunded).
    pub state: String,
    /// The chain transaction's id once signed.
    pub tx_id: Option<String>,
    /// Why it failed.
    pub reason: Option<String>,
}

/// One chain as the ledger sees it (`GET /v1/chains`): what the chain's custody must hold is the chain's supply
/// minus `outside_nano`, less what signed withdrawals may already have moved (`in_flight_nano`, not yet posted).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ChainView {
    pub chain: String,
    /// NLOV on the chain outside the network's custody: withdrawn and posted, less deposits credited.
    pub outside_nano: u64,
    /// Withdrawals held but not yet signed.
    pub requested_nano: u64,
    /// Withdrawals signed and sent, not yet confirmed.
    pub in_flight_nano: u64,
    /// Where to send a deposit (with a memo naming your account), when this coordinator keeps custody there.
    pub deposit_address: Option<String>,
}

/// `POST /v1/wallet/transfer` done: `applied`, or `already_applied` for a repeat.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TransferReply {
    pub outcome: String,
}

/// `POST /v1/wallet/stake` and `/v1/wallet/unstake` (signed by the operator).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StakeRequest {
    pub amount_nano: u64,
    pub id: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StakeReply {
    pub staked_nano: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UnstakeReply {
    pub unstaking_nano: u64,
    /// When the stake returns to the wallet.
    pub release_ms: u64,
}

/// `POST /v1/faucet` (development mode).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FaucetReply {
    pub granted_nano: u64,
}

/// One entry of `GET /v1/evidence`: a proven fraud anyone can check again.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EvidenceEntry {
    pub task: u64,
    pub attempt: u32,
    pub reason: String,
    pub node: String,
    /// The node's own signed commitment (see `docs/PROTOCOL.md`).
    #[schema(value_type = Object)]
    pub commit: neurolov_protocol::Envelope,
    /// The task's inputs; the committed result is the blob named by the commit's `result_hash`.
    #[schema(value_type = Object)]
    pub work: neurolov_protocol::messages::Work,
    /// An inference's proof as it was checked: the challenge's seed and the opening's blob.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opening: Option<EvidenceOpening>,
}

/// The opening a convicted inference was checked with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EvidenceOpening {
    pub seed: u64,
    /// `GET /v1/blobs/{blob}`.
    pub blob: String,
}

/// `GET /v1/verification`: the parameters of the tight Freivalds tolerance (`neurolov_verify::freivalds`, whose module
/// doc derives it) that a provider's own check of its matmul result uses, so a browser tab does not keep copies.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct VerificationParams {
    /// fp32 unit roundoff u.
    pub unit_roundoff: f64,
    /// f64 unit roundoff of the checker's own arithmetic.
    pub checker_unit_roundoff: f64,
    /// log₂ of the probability that an honest row is rejected.
    pub false_reject_log2: i32,
    /// Relative slack on the checker's norms and sums of squares.
    pub checker_slack: f64,
    /// Smallest normal f32: below it a GPU may flush to zero.
    pub flush_below: f64,
    /// Rounds of the self-check, and its share of the tolerance.
    pub self_check_rounds: u32,
    pub self_check_margin: f64,
}

/// The ledger's part of `GET /v1/stats`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LedgerStats {
    pub total_supply_nano: u64,
    pub treasury_nano: u64,
    pub escrow_nano: u64,
    pub staked_nano: u64,
    pub transfers: u64,
    pub fees_nano: u64,
    pub paid_to_providers_nano: u64,
    pub slashed_nano: u64,
}

/// `GET /v1/stats`: the whitepaper's key statistics (computed at most every 250 ms).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Stats {
    pub active_nodes: u64,
    pub active_gpu_nodes: u64,
    pub active_software_nodes: u64,
    pub active_cpu_nodes: u64,
    pub nodes_total: u64,
    pub verified_tflops: f64,
    /// Share of observed time with an active node ("Network Uptime").
    pub network_availability: f64,
    /// Busy share of active slot-time, averaged over time ("Average Resource Utilization").
    pub utilization: f64,
    pub utilization_now: f64,
    pub network_uptime_s: u64,
    pub coordinator_uptime_s: u64,
    pub operational_hours: f64,
    pub tasks_verified: u64,
    pub jobs_done: u64,
    pub jobs_failed: u64,
    pub jobs_running: u64,
    pub frauds_proven: u64,
    pub jobs_in_memory: u64,
    pub tasks_in_memory: u64,
    pub ledger: LedgerStats,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // A panic is the failure report.

    use super::*;

    /// The wire words stay what clients send today: the kind tag, seeds and blobs, the access words, defaults.
    #[test]
    fn job_requests_read_the_documented_json() {
        let matmul: JobRequest = serde_json::from_str(
            r#"{"kind":"matmul","m":2,"n":3,"k":4,"a":{"seed":1},"b":{"blob":"ab"},"idempotency_key":"x"}"#,
        )
        .unwrap();
        let JobRequest::Matmul(m) = &matmul else { panic!("{matmul:?}") };
        assert_eq!((m.a.clone(), m.b.clone()), (Operand::Seed { seed: 1 }, Operand::Blob { blob: "ab".into() }));
        assert_eq!(m.max_price_nano_per_gflop, DEFAULT_MAX_PRICE_NANO_PER_GFLOP);
        assert_eq!(matmul.idempotency_key(), Some("x"));
        let wgsl: JobRequest = serde_json::from_str(
            r#"{"kind":"wgsl","source":"s","entry_point":"main","dispatch":[1,1,1],
                "buffers":[{"binding":0,"access":"read_write","size_bytes":16}]}"#,
        )
        .unwrap();
        let JobRequest::Wgsl(w) = &wgsl else { panic!("{wgsl:?}") };
        assert_eq!((w.buffers[0].access, w.work_mflop), (Access::ReadWrite, 1));
        let back = serde_json::to_value(&wgsl).unwrap();
        assert_eq!(back["kind"], "wgsl");
        assert_eq!(back["buffers"][0]["access"], "read_write");
        assert!(serde_json::from_str::<JobRequest>(r#"{"kind":"sort"}"#).is_err());
    }
}
