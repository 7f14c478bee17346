//! The money endpoints: wallets (`/v1/accounts/{address}`, its history, signed transfers, stake and unstake), the
//! development faucet, fraud evidence and the network statistics (`/v1/stats`). Amounts are integer nano-NLOV.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use neurolov_api as api;
use neurolov_core::WalletError;
use neurolov_ledger::{Outcome, Transfer, TransferError, codes};
use neurolov_protocol::Id;

use crate::app::{App, error};
use crate::now_ms;

use crate::app::Shared;

/// Most history entries one request returns.
pub const MAX_HISTORY: u32 = 1_000;

/// Verifies a signed request and parses its JSON body.
pub(crate) fn signed<T: serde::de::DeserializeOwned>(
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
pub(crate) async fn durable(app: &App, body: impl serde::Serialize) -> Response {
    app.coordinator.flush().await;
    Json(body).into_response()
}

fn outcome_name(o: Outcome) -> &'static str {
    match o {
        Outcome::Applied => "applied",
        Outcome::AlreadyApplied => "already_applied",
    }
}

#[utoipa::path(get, path = "/v1/accounts/{address}", tag = "money", params(("address" = String, Path)), responses((status = 200, body = api::Account), (status = 400, body = api::ErrorReply)))]
pub(crate) async fn account(State(app): Shared, Path(address): Path<String>) -> Response {
    let Ok(id) = address.parse::<Id>() else { return error(StatusCode::BAD_REQUEST, "not an address") };
    let v = app.coordinator.read_core(|c| c.wallet_view(&id));
    Json(api::Account {
        address: id.to_string(),
        balance_nano: v.balance_nano,
        pending_nano: v.pending_nano,
        available_nano: v.balance_nano.saturating_sub(v.pending_nano),
        staked_nano: v.staked_nano,
        unstaking_nano: v.unstaking_nano,
    })
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

pub(crate) fn transfer_view(t: &Transfer) -> api::TransferView {
    api::TransferView {
        id: t.id.to_string(),
        debit: t.debit.to_string(),
        credit: t.credit.to_string(),
        amount_nano: t.amount,
        code: codes::name(t.code).into(),
        pending: t.is(neurolov_ledger::transfer_flags::PENDING),
        posts: t.is(neurolov_ledger::transfer_flags::POST_PENDING).then(|| t.pending_id.map(|p| p.to_string())),
        voids: t.is(neurolov_ledger::transfer_flags::VOID_PENDING).then(|| t.pending_id.map(|p| p.to_string())),
        user_data: t.user_data,
        timestamp_ms: t.timestamp_ms,
    }
}

/// The chain and chain transaction behind a deposit or withdrawal transfer (a withdrawal's hold, its post or void).
async fn chain_tx_of(app: &App, t: &Transfer) -> anyhow::Result<(Option<String>, Option<String>)> {
    match t.code {
        codes::DEPOSIT => {
            let found = crate::store::deposit_tx(&app.coordinator.db, t.id).await?;
            Ok(found.map_or((None, None), |(chain, tx)| (Some(chain.to_string()), Some(tx))))
        }
        codes::WITHDRAW => {
            let hold = if t.is(neurolov_ledger::transfer_flags::PENDING) { t.id } else { t.pending_id.unwrap_or(t.id) };
            Ok(app.coordinator.read_core(|core| {
                core.withdrawal(hold).map_or((None, None), |w| {
                    let tx = match &w.state {
                        neurolov_core::WithdrawalState::Signed { tx_id, .. }
                        | neurolov_core::WithdrawalState::Confirmed { tx_id } => Some(tx_id.clone()),
                        neurolov_core::WithdrawalState::Failed { tx_id, .. } => tx_id.clone(),
                        neurolov_core::WithdrawalState::Requested => None,
                    };
                    (Some(w.chain.to_string()), tx)
                })
            }))
        }
        _ => Ok((None, None)),
    }
}

#[utoipa::path(get, path = "/v1/accounts/{address}/transfers", tag = "money", params(("address" = String, Path), ("limit" = Option<u32>, Query, description = "at most 1000")), responses((status = 200, body = Vec<api::HistoryEntry>)))]
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
        let ts = match crate::store::account_history(&app.coordinator.db, account, limit).await {
            Ok(ts) => ts,
            Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e),
        };
        for t in &ts {
            let (chain, chain_tx) = match chain_tx_of(&app, t).await {
                Ok(found) => found,
                Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e),
            };
            out.push(api::HistoryEntry {
                transfer: transfer_view(t),
                account: label.into(),
                direction: if t.debit == account { "out" } else { "in" }.into(),
                chain,
                chain_tx,
            });
        }
    }
    out.sort_by_key(|e| std::cmp::Reverse(e.transfer.timestamp_ms));
    out.truncate(limit as usize);
    Json(out).into_response()
}

#[utoipa::path(post, path = "/v1/wallet/transfer", tag = "money", request_body(content = api::TransferRequest, description = "signed request (headers x-neurolov-client, x-neurolov-timestamp, x-neurolov-signature; see docs/API.md)"), responses((status = 200, body = api::TransferReply), (status = 402, body = api::ErrorReply)))]
pub(crate) async fn transfer(State(app): Shared, headers: HeaderMap, body: Bytes) -> Response {
    let (from, req) = match signed::<api::TransferRequest>(&app, &headers, "/v1/wallet/transfer", &body) {
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
        Ok(o) => durable(&app, api::TransferReply { outcome: outcome_name(o).into() }).await,
        Err(e) => wallet_error(e),
    }
}

#[utoipa::path(post, path = "/v1/wallet/stake", tag = "money", request_body(content = api::StakeRequest, description = "signed request (headers x-neurolov-client, x-neurolov-timestamp, x-neurolov-signature; see docs/API.md)"), responses((status = 200, body = api::StakeReply), (status = 402, body = api::ErrorReply)))]
pub(crate) async fn stake(State(app): Shared, headers: HeaderMap, body: Bytes) -> Response {
    let (op, req) = match signed::<api::StakeRequest>(&app, &headers, "/v1/wallet/stake", &body) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let result =
        app.coordinator.with_core(|core, _| match core.stake(now_ms(), op, req.amount_nano, u128::from(req.id)) {
            Ok(effects) => (Ok(()), effects),
            Err(e) => (Err(e), Vec::new()),
        });
    match result {
        Ok(()) => durable(&app, api::StakeReply { staked_nano: req.amount_nano }).await,
        Err(e) => wallet_error(e),
    }
}

#[utoipa::path(post, path = "/v1/wallet/unstake", tag = "money", request_body(content = api::StakeRequest, description = "signed request (headers x-neurolov-client, x-neurolov-timestamp, x-neurolov-signature; see docs/API.md)"), responses((status = 200, body = api::UnstakeReply), (status = 402, body = api::ErrorReply)))]
pub(crate) async fn unstake(State(app): Shared, headers: HeaderMap, body: Bytes) -> Response {
    let (op, req) = match signed::<api::StakeRequest>(&app, &headers, "/v1/wallet/unstake", &body) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let result =
        app.coordinator.with_core(|core, _| match core.unstake(now_ms(), op, req.amount_nano, u128::from(req.id)) {
            Ok((release, effects)) => (Ok(release), effects),
            Err(e) => (Err(e), Vec::new()),
        });
    match result {
        Ok(release_ms) => durable(&app, api::UnstakeReply { unstaking_nano: req.amount_nano, release_ms }).await,
        Err(e) => wallet_error(e),
    }
}

#[utoipa::path(post, path = "/v1/faucet", tag = "money", request_body(content = Object, description = "signed request (headers x-neurolov-client, x-neurolov-timestamp, x-neurolov-signature; see docs/API.md), body {}"), responses((status = 200, body = api::FaucetReply), (status = 403, body = api::ErrorReply), (status = 409, body = api::ErrorReply)))]
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
        Ok(granted) => durable(&app, api::FaucetReply { granted_nano: granted }).await,
        Err(e) => wallet_error(e),
    }
}

#[utoipa::path(get, path = "/v1/evidence", tag = "money", responses((status = 200, body = Vec<api::EvidenceEntry>)))]
pub(crate) async fn evidence(State(app): Shared) -> Response {
    let list = app.coordinator.read_core(|c| {
        c.evidence()
            .iter()
            .map(|e| api::EvidenceEntry {
                task: e.task,
                attempt: e.attempt,
                reason: e.reason.clone(),
                node: e.commit.signer.to_string(),
                commit: e.commit.clone(),
                work: e.work.clone(),
                opening: e
                    .opening
                    .as_ref()
                    .map(|(seed, blob)| api::EvidenceOpening { seed: *seed, blob: blob.clone() }),
            })
            .collect::<Vec<_>>()
    });
    Json(list).into_response()
}

/// How old a served `/v1/stats` may be.
pub const STATS_MAX_AGE: std::time::Duration = std::time::Duration::from_millis(250);

#[utoipa::path(get, path = "/v1/stats", tag = "network", responses((status = 200, body = api::Stats)))]
pub(crate) async fn stats(State(app): Shared) -> Response {
    let s = app.network_stats();
    let l = &s.ledger;
    Json(api::Stats {
        active_nodes: s.active_nodes,
        active_gpu_nodes: s.active_gpu_nodes,
        active_software_nodes: s.active_software_nodes,
        active_cpu_nodes: s.active_cpu_nodes,
        nodes_total: s.nodes_total,
        verified_tflops: s.verified_tflops,
        network_availability: s.network_availability,
        utilization: s.utilization,
        utilization_now: s.utilization_now,
        network_uptime_s: s.network_uptime_s,
        coordinator_uptime_s: s.coordinator_uptime_s,
        operational_hours: s.operational_hours,
        tasks_verified: s.tasks_verified,
        jobs_done: s.jobs_done,
        jobs_failed: s.jobs_failed,
        jobs_running: s.jobs_running,
        frauds_proven: s.frauds_proven,
        jobs_in_memory: s.jobs_in_memory,
        tasks_in_memory: s.tasks_in_memory,
        ledger: api::LedgerStats {
            total_supply_nano: l.total_supply_nano,
            treasury_nano: l.treasury_nano,
            escrow_nano: l.escrow_nano,
            staked_nano: l.staked_nano,
            transfers: l.transfers,
            fees_nano: l.fees_nano,
            paid_to_providers_nano: l.paid_to_providers_nano,
            slashed_nano: l.slashed_nano,
        },
    })
    .into_response()
}

fn withdrawal_view(w: &neurolov_core::Withdrawal) -> api::WithdrawalView {
    use neurolov_core::WithdrawalState as S;
    let (tx_id, reason) = match &w.state {
        S::Requested => (None, None),
        S::Signed { tx_id, .. } | S::Confirmed { tx_id } => (Some(tx_id.clone()), None),
        S::Failed { tx_id, reason } => (tx_id.clone(), Some(reason.clone())),
    };
    api::WithdrawalView {
        id: w.id.to_string(),
        account: w.account.to_string(),
        fee_nano: w.fee_nano,
        chain: w.chain.to_string(),
        to: w.to.clone(),
        amount_nano: w.amount_nano,
        requested_ms: w.requested_ms,
        state: w.state.name().into(),
        tx_id,
        reason,
    }
}

fn custody_error(e: neurolov_core::CustodyError) -> Response {
    use neurolov_core::CustodyError as E;
    let status = match &e {
        E::Ledger(TransferError::InsufficientFunds { .. }) => StatusCode::PAYMENT_REQUIRED,
        E::OverDailyLimit { .. } | E::TooManyOpen => StatusCode::TOO_MANY_REQUESTS,
        _ => StatusCode::BAD_REQUEST,
    };
    error(status, e)
}

/// The chain of a withdrawal request, its destination checked to be an address there: a typo is refused before
/// anything is held.
fn destination(req: &api::WithdrawRequest) -> Result<neurolov_protocol::chain::Chain, Box<Response>> {
    use neurolov_protocol::chain::Chain;
    let chain =
        req.chain.parse::<Chain>().map_err(|_| Box::new(error(StatusCode::BAD_REQUEST, "`chain` is solana or ton")))?;
    let parsed = match chain {
        Chain::Solana => neurolov_chain::solana::parse_address(&req.to).map(|_| ()).map_err(|e| e.to_string()),
        Chain::Ton => neurolov_chain::ton::parse_address(&req.to).map(|_| ()).map_err(|e| e.to_string()),
    };
    parsed.map_err(|e| Box::new(error(StatusCode::BAD_REQUEST, format!("`to`: {e}"))))?;
    Ok(chain)
}

/// Whether a withdrawal would be held now; nothing changes (`neurolov wallet withdraw --dry-run`).
#[utoipa::path(post, path = "/v1/wallet/withdraw/check", tag = "money", request_body(content = api::WithdrawRequest, description = "signed request (headers x-neurolov-client, x-neurolov-timestamp, x-neurolov-signature; see docs/API.md)"), responses((status = 200, body = api::WithdrawCheck), (status = 400, body = api::ErrorReply), (status = 402, body = api::ErrorReply), (status = 429, body = api::ErrorReply)))]
pub(crate) async fn withdraw_check(State(app): Shared, headers: HeaderMap, body: Bytes) -> Response {
    let (from, req) = match signed::<api::WithdrawRequest>(&app, &headers, "/v1/wallet/withdraw/check", &body) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let chain = match destination(&req) {
        Ok(chain) => chain,
        Err(r) => return *r,
    };
    match app.coordinator.read_core(|core| core.check_withdrawal(now_ms(), &from, &req.to, req.amount_nano)) {
        Ok(daily_left_nano) => Json(api::WithdrawCheck {
            chain: chain.to_string(),
            to: req.to,
            amount_nano: req.amount_nano,
            fee_nano: app.coordinator.read_core(|core| core.config().withdraw_fee_nano),
            daily_left_nano,
            custody_running: app.coordinator.custody_running(chain),
        })
        .into_response(),
        Err(e) => custody_error(e),
    }
}

/// Holds the amount for a withdrawal to a chain; the chain's adapter signs and sends it (see `chains.rs`).
#[utoipa::path(post, path = "/v1/wallet/withdraw", tag = "money", request_body(content = api::WithdrawRequest, description = "signed request (headers x-neurolov-client, x-neurolov-timestamp, x-neurolov-signature; see docs/API.md)"), responses((status = 200, body = api::WithdrawalView), (status = 400, body = api::ErrorReply), (status = 402, body = api::ErrorReply), (status = 429, body = api::ErrorReply)))]
pub(crate) async fn withdraw(State(app): Shared, headers: HeaderMap, body: Bytes) -> Response {
    let (from, req) = match signed::<api::WithdrawRequest>(&app, &headers, "/v1/wallet/withdraw", &body) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let chain = match destination(&req) {
        Ok(chain) => chain,
        Err(r) => return *r,
    };
    let result = app.coordinator.with_core(|core, _| {
        match core.withdraw(now_ms(), from, chain, &req.to, req.amount_nano, u128::from(req.id)) {
            Ok((w, effects)) => (Ok(w), effects),
            Err(e) => (Err(e), Vec::new()),
        }
    });
    match result {
        Ok(w) => durable(&app, withdrawal_view(&w)).await,
        Err(e) => custody_error(e),
    }
}

/// An account's withdrawals to chains, newest first.
#[utoipa::path(get, path = "/v1/accounts/{address}/withdrawals", tag = "money", params(("address" = String, Path)), responses((status = 200, body = Vec<api::WithdrawalView>), (status = 400, body = api::ErrorReply)))]
pub(crate) async fn withdrawals(State(app): Shared, Path(address): Path<String>) -> Response {
    let Ok(id) = address.parse::<Id>() else { return error(StatusCode::BAD_REQUEST, "not an address") };
    let list = app.coordinator.read_core(|c| c.withdrawals_of(&id));
    Json(list.iter().map(withdrawal_view).collect::<Vec<_>>()).into_response()
}

/// Most entries `GET /v1/chains/activity` and `GET /v1/accounts/{address}/deposits` return.
pub const MAX_ACTIVITY: u32 = 100;

#[derive(serde::Deserialize)]
pub(crate) struct ActivityQuery {
    #[serde(default = "default_activity")]
    limit: u32,
}

fn default_activity() -> u32 {
    20
}

/// The network's newest deposits and withdrawals (the dashboard shows them).
#[utoipa::path(get, path = "/v1/chains/activity", tag = "money", params(("limit" = Option<u32>, Query, description = "at most 100 of each")), responses((status = 200, body = api::ChainActivity)))]
pub(crate) async fn chain_activity(State(app): Shared, Query(q): Query<ActivityQuery>) -> Response {
    let limit = q.limit.min(MAX_ACTIVITY);
    let deposits = match crate::store::recent_deposits(&app.coordinator.db, None, limit).await {
        Ok(d) => d,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e),
    };
    let withdrawals = app.coordinator.read_core(|c| c.recent_withdrawals(limit as usize));
    Json(api::ChainActivity { deposits, withdrawals: withdrawals.iter().map(withdrawal_view).collect() })
        .into_response()
}

/// An account's deposits from chains, newest first.
#[utoipa::path(get, path = "/v1/accounts/{address}/deposits", tag = "money", params(("address" = String, Path), ("limit" = Option<u32>, Query, description = "at most 100")), responses((status = 200, body = Vec<api::DepositView>), (status = 400, body = api::ErrorReply)))]
pub(crate) async fn deposits(
    State(app): Shared,
    Path(address): Path<String>,
    Query(q): Query<ActivityQuery>,
) -> Response {
    let Ok(id) = address.parse::<Id>() else { return error(StatusCode::BAD_REQUEST, "not an address") };
    match crate::store::recent_deposits(&app.coordinator.db, Some(&id), q.limit.min(MAX_ACTIVITY)).await {
        Ok(d) => Json(d).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// The ledger's view of each chain: what custody there must hold (see `neurolov chain status`).
#[utoipa::path(get, path = "/v1/chains", tag = "money", responses((status = 200, body = Vec<api::ChainView>)))]
pub(crate) async fn chains(State(app): Shared) -> Json<Vec<api::ChainView>> {
    use neurolov_protocol::chain::Chain;
    Json(app.coordinator.read_core(|core| {
        let open = core.open_withdrawals();
        Chain::ALL
            .into_iter()
            .map(|chain| {
                let sum = |signed: bool| {
                    open.iter()
                        .filter(|w| {
                            w.chain == chain
                                && matches!(w.state, neurolov_core::WithdrawalState::Signed { .. }) == signed
                        })
                        .map(|w| w.amount_nano)
                        .sum()
                };
                api::ChainView {
                    chain: chain.to_string(),
                    outside_nano: core.outside_nano(chain),
                    requested_nano: sum(false),
                    in_flight_nano: sum(true),
                    deposit_address: app.coordinator.deposit_address(chain),
                }
            })
            .collect()
    }))
}
