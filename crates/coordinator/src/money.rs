//! The money endpoints: wallets (`/v1/accounts/{address}`, its history, signed transfers, stake and unstake), the
//! development faucet, fraud evidence and the network statistics (`/v1/stats`). Amounts are integer nano-NLOV.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use neurolov_core::WalletError;
use neurolov_ledger::{Outcome, Transfer, TransferError, codes};
use neurolov_protocol::Id;

use crate::http::{App, error};
use crate::now_ms;

type Shared = State<Arc<App>>;

/// Most history entries one request returns.
pub const MAX_HISTORY: u32 = 1_000;

/// Verifies a signed request and parses its JSON body.
fn signed<T: serde::de::DeserializeOwned>(
    app: &App,
    headers: &HeaderMap,
    path: &str,
    body: &[u8],
) -> Result<(Id, T), Box<Response>> {
    let header = |name: &'static str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let client = app.replay.verify(header, "POST", path, body, now_ms()).map_err(|e| error(e.status(), e))?;
    let request =
        serde_json::from_slice(body).map_err(|e| error(StatusCode::BAD_REQUEST, format!("malformed request: {e}")))?;
    Ok((client, request))
}

fn wallet_error(e: WalletError) -> Response {
    let status = match &e {
        WalletError::Transfer(TransferError::InsufficientFunds { .. }) => StatusCode::PAYMENT_REQUIRED,
        WalletError::Transfer(TransferError::AccountNotFound(_)) => StatusCode::NOT_FOUND,
        WalletError::Transfer(TransferError::ExistsWithDifferentFields(_)) | WalletError::FaucetUsed => {
            StatusCode::CONFLICT
        }
        WalletError::FaucetDisabled => StatusCode::FORBIDDEN,
        _ => StatusCode::BAD_REQUEST,
    };
    error(status, e)
}

/// Commits the effects, waits until they are durable, then answers.
async fn durable(app: &App, body: serde_json::Value) -> Response {
    app.coordinator.flush().await;
    Json(body).into_response()
}

fn outcome_name(o: Outcome) -> &'static str {
    match o {
        Outcome::Applied => "applied",
        Outcome::AlreadyApplied => "already_applied",
    }
}

pub(crate) async fn account(State(app): Shared, Path(address): Path<String>) -> Response {
    let Ok(id) = address.parse::<Id>() else { return error(StatusCode::BAD_REQUEST, "not an address") };
    let v = app.coordinator.read_core(|c| c.wallet_view(&id));
    Json(serde_json::json!({
        "address": id.to_string(),
        "balance_nano": v.balance_nano,
        "pending_nano": v.pending_nano,
        "available_nano": v.balance_nano.saturating_sub(v.pending_nano),
        "staked_nano": v.staked_nano,
        "unstaking_nano": v.unstaking_nano,
    }))
    .into_response()
}

#[derive(serde::Deserialize)]
pub(crate) struct HistoryQuery {
    #[serde(default = "default_history")]
    limit: u32,
}

fn default_history() -> u32 {
    100
}

pub(crate) fn transfer_json(t: &Transfer) -> serde_json::Value {
    serde_json::json!({
        "id": t.id.to_string(),
        "debit": t.debit.to_string(),
        "credit": t.credit.to_string(),
        "amount_nano": t.amount,
        "code": codes::name(t.code),
        "pending": t.is(neurolov_ledger::transfer_flags::PENDING),
        "posts": t.is(neurolov_ledger::transfer_flags::POST_PENDING).then(|| t.pending_id.map(|p| p.to_string())),
        "voids": t.is(neurolov_ledger::transfer_flags::VOID_PENDING).then(|| t.pending_id.map(|p| p.to_string())),
        "user_data": t.user_data,
        "timestamp_ms": t.timestamp_ms,
    })
}

pub(crate) async fn history(
    State(app): Shared,
    Path(address): Path<String>,
    Query(q): Query<HistoryQuery>,
) -> Response {
    let Ok(id) = address.parse::<Id>() else { return error(StatusCode::BAD_REQUEST, "not an address") };
    let wallet = neurolov_core::wallet(&id);
    let stake = neurolov_core::stake_account(&id);
    let limit = q.limit.min(MAX_HISTORY);
    // Only committed transfers are shown: wait for what is in flight.
    app.coordinator.flush().await;
    let mut out = Vec::new();
    for (account, label) in [(wallet, "wallet"), (stake, "stake")] {
        match crate::store::account_history(&app.coordinator.db, account, limit).await {
            Ok(ts) => out.extend(ts.iter().map(|t| {
                let mut j = transfer_json(t);
                j["account"] = label.into();
                j["direction"] = if t.debit == account { "out" } else { "in" }.into();
                j
            })),
            Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e),
        }
    }
    out.sort_by_key(|j| std::cmp::Reverse(j["timestamp_ms"].as_u64().unwrap_or(0)));
    out.truncate(limit as usize);
    Json(out).into_response()
}

#[derive(serde::Deserialize)]
struct TransferRequest {
    to: String,
    amount_nano: u64,
    /// The client's id for this transfer: sending the same request again is applied once.
    id: u64,
}

pub(crate) async fn transfer(State(app): Shared, headers: HeaderMap, body: Bytes) -> Response {
    let (from, req) = match signed::<TransferRequest>(&app, &headers, "/v1/wallet/transfer", &body) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let Ok(to) = req.to.parse::<Id>() else { return error(StatusCode::BAD_REQUEST, "`to` is not an address") };
    let result = app.coordinator.with_core(|core, _| {
        match core.transfer(now_ms(), from, to, req.amount_nano, u128::from(req.id)) {
            Ok((o, effects)) => (Ok(o), effects),
            Err(e) => (Err(e), Vec::new()),
        }
    });
    match result {
        Ok(o) => durable(&app, serde_json::json!({ "outcome": outcome_name(o) })).await,
        Err(e) => wallet_error(e),
    }
}

#[derive(serde::Deserialize)]
struct StakeRequest {
    amount_nano: u64,
    id: u64,
}

pub(crate) async fn stake(State(app): Shared, headers: HeaderMap, body: Bytes) -> Response {
    let (op, req) = match signed::<StakeRequest>(&app, &headers, "/v1/wallet/stake", &body) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let result =
        app.coordinator.with_core(|core, _| match core.stake(now_ms(), op, req.amount_nano, u128::from(req.id)) {
            Ok(effects) => (Ok(()), effects),
            Err(e) => (Err(e), Vec::new()),
        });
    match result {
        Ok(()) => durable(&app, serde_json::json!({ "staked_nano": req.amount_nano })).await,
        Err(e) => wallet_error(e),
    }
}

pub(crate) async fn unstake(State(app): Shared, headers: HeaderMap, body: Bytes) -> Response {
    let (op, req) = match signed::<StakeRequest>(&app, &headers, "/v1/wallet/unstake", &body) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let result =
        app.coordinator.with_core(|core, _| match core.unstake(now_ms(), op, req.amount_nano, u128::from(req.id)) {
            Ok((release, effects)) => (Ok(release), effects),
            Err(e) => (Err(e), Vec::new()),
        });
    match result {
        Ok(release_ms) => {
            durable(&app, serde_json::json!({ "unstaking_nano": req.amount_nano, "release_ms": release_ms })).await
        }
        Err(e) => wallet_error(e),
    }
}

pub(crate) async fn faucet(State(app): Shared, headers: HeaderMap, body: Bytes) -> Response {
    let (to, _): (Id, serde_json::Value) = match signed(&app, &headers, "/v1/faucet", &body) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let result = app.coordinator.with_core(|core, _| match core.faucet(now_ms(), to) {
        Ok((grant, effects)) => (Ok(grant), effects),
        Err(e) => (Err(e), Vec::new()),
    });
    match result {
        Ok(granted) => durable(&app, serde_json::json!({ "granted_nano": granted })).await,
        Err(e) => wallet_error(e),
    }
}

pub(crate) async fn evidence(State(app): Shared) -> Response {
    let list = app.coordinator.read_core(|c| {
        c.evidence()
            .iter()
            .map(|e| {
                serde_json::json!({
                    "task": e.task,
                    "attempt": e.attempt,
                    "reason": e.reason,
                    "node": e.commit.signer.to_string(),
                    // The node's own signed commitment: anyone can check the signature and the task it names.
                    "commit": e.commit,
                    // The task's inputs; the committed result is the blob named by the commit's `result_hash`.
                    "work": e.work,
                })
            })
            .collect::<Vec<_>>()
    });
    Json(list).into_response()
}

/// How old a served `/v1/stats` may be.
pub const STATS_MAX_AGE: std::time::Duration = std::time::Duration::from_millis(250);

pub(crate) async fn stats(State(app): Shared) -> Response {
    let now = std::time::Instant::now();
    let mut cached = match app.stats.lock() {
        Ok(c) => c,
        Err(poisoned) => poisoned.into_inner(),
    };
    let s = match cached.as_ref().filter(|(at, _)| now.saturating_duration_since(*at) < STATS_MAX_AGE) {
        Some((_, s)) => s.clone(),
        None => {
            let s = app.coordinator.read_core(|c| c.stats());
            *cached = Some((now, s.clone()));
            s
        }
    };
    drop(cached);
    let l = &s.ledger;
    Json(serde_json::json!({
        "active_nodes": s.active_nodes,
        "active_gpu_nodes": s.active_gpu_nodes,
        "active_software_nodes": s.active_software_nodes,
        "active_cpu_nodes": s.active_cpu_nodes,
        "nodes_total": s.nodes_total,
        "verified_tflops": s.verified_tflops,
        "network_availability": s.network_availability,
        "utilization": s.utilization,
        "utilization_now": s.utilization_now,
        "network_uptime_s": s.network_uptime_s,
        "coordinator_uptime_s": s.coordinator_uptime_s,
        "operational_hours": s.operational_hours,
        "tasks_verified": s.tasks_verified,
        "jobs_done": s.jobs_done,
        "jobs_failed": s.jobs_failed,
        "jobs_running": s.jobs_running,
        "frauds_proven": s.frauds_proven,
        "jobs_in_memory": s.jobs_in_memory,
        "tasks_in_memory": s.tasks_in_memory,
        "ledger": {
            "total_supply_nano": l.total_supply_nano,
            "treasury_nano": l.treasury_nano,
            "escrow_nano": l.escrow_nano,
            "staked_nano": l.staked_nano,
            "transfers": l.transfers,
            "fees_nano": l.fees_nano,
            "paid_to_providers_nano": l.paid_to_providers_nano,
            "slashed_nano": l.slashed_nano,
        },
    }))
    .into_response()
}
