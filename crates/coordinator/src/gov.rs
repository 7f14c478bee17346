//! Governance over HTTP (issue 16): proposals made, voted, queued, executed and cancelled by signed requests, and
//! read by anyone. The decisions are the core's (`neurolov_core::governance`); this is their shell.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use neurolov_api as api;
use neurolov_core::{Action, GovernanceError, Proposal, Support};
use neurolov_protocol::Id;

use crate::app::{Shared, error};
use crate::money::{durable, signed};
use crate::now_ms;

#[derive(serde::Deserialize)]
pub(crate) struct VoterQuery {
    voter: Option<String>,
}

fn view(p: &Proposal, now_ms: u64, voter: Option<&Id>) -> api::ProposalView {
    let support_name = |s: &Support| match s {
        Support::For => "for",
        Support::Against => "against",
        Support::Abstain => "abstain",
    };
    api::ProposalView {
        id: p.id,
        proposer: p.proposer.to_string(),
        description: p.description.clone(),
        action: serde_json::to_value(&p.action).unwrap_or_default(),
        state: p.state(now_ms).name().into(),
        for_votes_nano: p.for_votes_nano,
        against_votes_nano: p.against_votes_nano,
        abstain_votes_nano: p.abstain_votes_nano,
        quorum_nano: p.quorum_nano,
        votes: p.votes.len() as u64,
        start_ms: p.start_ms,
        end_ms: p.end_ms,
        eta_ms: p.eta_ms,
        executed: p.executed,
        executed_ms: p.executed_ms,
        now_ms,
        your_vote: voter.and_then(|v| p.votes.get(v)).map(|s| support_name(s).to_string()),
        your_power_nano: voter.map(|v| p.snapshot.as_ref().and_then(|s| s.get(v)).copied().unwrap_or(0)),
    }
}

fn gov_error(e: GovernanceError) -> Response {
    let status = match &e {
        GovernanceError::Unknown(_) => StatusCode::NOT_FOUND,
        GovernanceError::BelowThreshold { .. } | GovernanceError::NoVotingPower | GovernanceError::NotYours => {
            StatusCode::FORBIDDEN
        }
        GovernanceError::WrongState { .. } | GovernanceError::TimelockRunning { .. } | GovernanceError::OneAtATime => {
            StatusCode::CONFLICT
        }
        GovernanceError::TooManyOpen => StatusCode::TOO_MANY_REQUESTS,
        GovernanceError::Ledger(neurolov_ledger::TransferError::InsufficientFunds { .. }) => {
            StatusCode::PAYMENT_REQUIRED
        }
        _ => StatusCode::BAD_REQUEST,
    };
    error(status, e)
}

/// Runs one governance event in the core and answers with the proposal, durable.
async fn act(
    app: &crate::app::App,
    f: impl FnOnce(&mut neurolov_core::Core, u64) -> Result<(Proposal, Vec<neurolov_core::Effect>), GovernanceError>,
) -> Response {
    let now = now_ms();
    let result = app.coordinator.with_core(|core, _| match f(core, now) {
        Ok((p, effects)) => (Ok(p), effects),
        Err(e) => (Err(e), Vec::new()),
    });
    match result {
        Ok(p) => durable(app, view(&p, now, None)).await,
        Err(e) => gov_error(e),
    }
}

#[utoipa::path(post, path = "/v1/gov/proposals", tag = "governance", request_body(content = api::ProposalRequest, description = "signed request (see docs/API.md)"), responses((status = 200, body = api::ProposalView), (status = 400, body = api::ErrorReply), (status = 403, body = api::ErrorReply), (status = 409, body = api::ErrorReply)))]
pub(crate) async fn propose(State(app): Shared, headers: HeaderMap, body: Bytes) -> Response {
    let (from, req) = match signed::<api::ProposalRequest>(&app, &headers, "/v1/gov/proposals", &body) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let action: Action = match serde_json::from_value(req.action) {
        Ok(a) => a,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("`action`: {e}")),
    };
    act(&app, |core, now| core.propose(now, from, &req.description, action)).await
}

#[utoipa::path(get, path = "/v1/gov/proposals", tag = "governance", params(("voter" = Option<String>, Query)), responses((status = 200, body = Vec<api::ProposalView>)))]
pub(crate) async fn list(State(app): Shared, Query(q): Query<VoterQuery>) -> Response {
    let voter = q.voter.as_deref().and_then(|v| v.parse::<Id>().ok());
    let now = now_ms();
    let views = app
        .coordinator
        .read_core(|c| c.proposals().into_iter().map(|p| view(p, now, voter.as_ref())).collect::<Vec<_>>());
    Json(views).into_response()
}

#[utoipa::path(get, path = "/v1/gov/proposals/{id}", tag = "governance", params(("id" = u64, Path), ("voter" = Option<String>, Query)), responses((status = 200, body = api::ProposalView), (status = 404, body = api::ErrorReply)))]
pub(crate) async fn show(State(app): Shared, Path(id): Path<u64>, Query(q): Query<VoterQuery>) -> Response {
    let voter = q.voter.as_deref().and_then(|v| v.parse::<Id>().ok());
    let now = now_ms();
    match app.coordinator.read_core(|c| c.proposal(id).map(|p| view(p, now, voter.as_ref()))) {
        Some(v) => Json(v).into_response(),
        None => gov_error(GovernanceError::Unknown(id)),
    }
}

#[utoipa::path(post, path = "/v1/gov/proposals/{id}/vote", tag = "governance", params(("id" = u64, Path)), request_body(content = api::VoteRequest, description = "signed request"), responses((status = 200, body = api::ProposalView), (status = 403, body = api::ErrorReply), (status = 409, body = api::ErrorReply)))]
pub(crate) async fn vote(State(app): Shared, Path(id): Path<u64>, headers: HeaderMap, body: Bytes) -> Response {
    let path = format!("/v1/gov/proposals/{id}/vote");
    let (from, req) = match signed::<api::VoteRequest>(&app, &headers, &path, &body) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let support = match req.support.as_str() {
        "for" => Support::For,
        "against" => Support::Against,
        "abstain" => Support::Abstain,
        _ => return error(StatusCode::BAD_REQUEST, "`support` is for, against or abstain"),
    };
    act(&app, |core, now| core.cast_vote(now, from, id, support)).await
}

/// `queue`, `execute` and `cancel`: a signed empty body (`{}`); anyone may queue and execute.
pub(crate) async fn step(
    State(app): Shared,
    Path((id, step)): Path<(u64, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("/v1/gov/proposals/{id}/{step}");
    let (from, _): (Id, serde_json::Value) = match signed(&app, &headers, &path, &body) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    match step.as_str() {
        "queue" => act(&app, |core, now| core.queue_proposal(now, id)).await,
        "execute" => act(&app, |core, now| core.execute_proposal(now, id)).await,
        "cancel" => act(&app, |core, now| core.cancel_proposal(now, from, id)).await,
        _ => error(StatusCode::NOT_FOUND, "the steps are queue, execute and cancel"),
    }
}
