//! The OpenAI-compatible API (issue 13): `GET /v1/models`, `POST /v1/embeddings` and `POST /v1/chat/completions`
//! as OpenAI's clients speak them, with `Authorization: Bearer` API keys (`/v1/keys`, made by signed requests of the
//! account they spend from). A request becomes an inference job of the key's account: the coordinator tokenizes it
//! with the hosted model, the core escrows its largest price, a node that holds the model answers and proves it, and
//! only an answer whose proof passed is returned (so a streamed answer starts when its proof has been checked: the
//! tokens a node streams before that are its claim, not yet the network's). Refusals are OpenAI's
//! `{"error": {"message", "type", "param", "code"}}` with its usual statuses.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use neurolov_api::openai as oa;
use neurolov_core::{JobSpec, JobState, SubmitError};
use neurolov_models::generate::Message;
use neurolov_models::serve::Hosted;
use neurolov_protocol::Id;
use neurolov_protocol::inference::{Answer, Finish, InferOutput, InferRequest};

use crate::app::{App, Shared};
use crate::keys::KeyError;
use crate::now_ms;

/// Longest an inference request waits for its verified answer before it is cancelled (its escrow refunded).
pub const INFERENCE_TIMEOUT_MS: u64 = 300_000;
/// Tokens a chat completion generates when the request names no limit.
pub const DEFAULT_MAX_TOKENS: u32 = 256;
/// Most stop sequences, and the longest one (OpenAI's limits).
pub const MAX_STOP_SEQUENCES: usize = 4;
pub const MAX_STOP_BYTES: usize = 256;

/// An OpenAI-shaped refusal: a status and `{"error": {...}}`.
pub(crate) struct Refusal(StatusCode, Box<oa::OpenAiError>);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (self.0, Json(*self.1)).into_response()
    }
}

pub(crate) fn refuse(status: StatusCode, kind: &str, code: Option<&str>, message: impl std::fmt::Display) -> Refusal {
    let body = oa::OpenAiError {
        error: oa::OpenAiErrorBody {
            message: message.to_string(),
            kind: kind.to_string(),
            param: None,
            code: code.map(str::to_string),
        },
    };
    Refusal(status, Box::new(body))
}

fn bad_request(message: impl std::fmt::Display) -> Refusal {
    refuse(StatusCode::BAD_REQUEST, "invalid_request_error", None, message)
}

fn key_refusal(e: KeyError) -> Refusal {
    refuse(StatusCode::UNAUTHORIZED, "invalid_request_error", Some("invalid_api_key"), e)
}

fn model_not_found(model: &str) -> Refusal {
    refuse(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        Some("model_not_found"),
        format!("the model `{model}` does not exist"),
    )
}

/// The account behind the request's bearer key.
fn account(app: &App, headers: &HeaderMap) -> Result<Id, Refusal> {
    let authorization = headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    app.coordinator.keys.authenticate(authorization).map_err(key_refusal)
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Refusal> {
    serde_json::from_slice(body).map_err(|e| bad_request(format!("malformed request: {e}")))
}

/// `GET /v1/models`: the hosted models, with their kind and prices.
#[utoipa::path(get, path = "/v1/models", tag = "openai", responses((status = 200, body = oa::ModelList)))]
pub(crate) async fn models(State(app): Shared) -> Json<oa::ModelList> {
    let listings = app.coordinator.read_core(|c| {
        let serving = |name: &str| {
            c.nodes()
                .iter()
                .filter(|n| n.state == neurolov_core::NodeState::Active && n.claimed.models.iter().any(|m| m == name))
                .count()
        };
        c.models().iter().map(|m| (m.clone(), c.model_usage(&m.name), serving(&m.name) as u64)).collect::<Vec<_>>()
    });
    let data = listings
        .into_iter()
        .map(|(m, usage, providers)| oa::ModelObject {
            id: m.name.clone(),
            object: "model".into(),
            created: 0,
            owned_by: m.author.map_or_else(|| "neurolov".to_string(), |a| a.to_string()),
            kind: m.kind.name().into(),
            price_input_nano_per_1k: m.price_in_nano_per_1k,
            price_output_nano_per_1k: m.price_out_nano_per_1k,
            max_tokens: m.max_positions,
            dimensions: (m.width > 0).then_some(m.width),
            royalty_bps: if m.author.is_some() { m.royalty_bps } else { 0 },
            providers,
            usage: oa::ModelUsage {
                requests: usage.requests,
                input_tokens: usage.input_tokens,
                output_tokens: usage.output_tokens,
                royalties_nano: usage.royalties_nano,
            },
        })
        .collect();
    Json(oa::ModelList { object: "list".into(), data })
}

/// A verified inference: its output, the node paid for it and what it cost.
struct Answered {
    output: InferOutput,
    provenance: oa::Provenance,
}

/// Submits `request` for `owner` and waits for its verified answer.
async fn infer(app: &App, owner: Id, model: &str, request: InferRequest) -> Result<Answered, Refusal> {
    let spec = JobSpec::Infer { model: model.to_string(), request: request.clone() };
    let submitted = app.coordinator.with_core(|core, blobs| match core.submit(now_ms(), owner, spec, blobs) {
        Ok((id, effects)) => (Ok(id), effects),
        Err(e) => (Err(e), Vec::new()),
    });
    let job = submitted.map_err(submit_refusal)?;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(INFERENCE_TIMEOUT_MS);
    let mut finished = app.coordinator.jobs_finished.subscribe();
    let view = loop {
        finished.mark_unchanged();
        let view = app.coordinator.read_core(|c| c.job(job));
        match view {
            Some(v) if v.state.is_final() => break v,
            Some(_) => {}
            None => {
                return Err(refuse(StatusCode::INTERNAL_SERVER_ERROR, "server_error", None, "the request was lost"));
            }
        }
        if tokio::time::timeout_at(deadline, finished.changed()).await.is_err() {
            app.coordinator.with_core(|core, _| ((), core.cancel(now_ms(), &owner, job).unwrap_or_default()));
            let message = format!(
                "no verified answer within {} s; the request was cancelled and refunded",
                INFERENCE_TIMEOUT_MS / 1000
            );
            return Err(refuse(StatusCode::GATEWAY_TIMEOUT, "server_error", Some("timeout"), message));
        }
    };
    // Reported only once what it paid is on disk.
    app.coordinator.flush().await;
    if let JobState::Failed { reason } = &view.state {
        let message = format!("no verified answer: {reason}");
        return Err(refuse(StatusCode::SERVICE_UNAVAILABLE, "server_error", Some("no_verified_answer"), message));
    }
    let hash = app.coordinator.read_core(|c| c.job_result_hashes(job)).and_then(|h| h.into_iter().next());
    // A small answer is kept in the database with its record, a larger one is a blob.
    let inline = crate::store::inline_results(&app.coordinator.db, job).await.unwrap_or_default();
    let bytes = hash.and_then(|h| inline.get(&h).map(|b| b.to_vec()).or_else(|| app.coordinator.blobs.read(&h)));
    let output = bytes.and_then(|b| InferOutput::from_bytes(&b).ok()).ok_or_else(|| {
        refuse(StatusCode::INTERNAL_SERVER_ERROR, "server_error", None, "the verified answer could not be read")
    })?;
    let listing = app.coordinator.read_core(|c| c.models().iter().find(|m| m.name == model).cloned());
    let cost_nano = listing.and_then(|m| m.price_nano(request.input_tokens(), output.output_tokens())).unwrap_or(0);
    let node = view.tasks.first().and_then(|t| t.node).map(|n| n.to_string());
    Ok(Answered { output, provenance: oa::Provenance { job, node, cost_nano, verified: true } })
}

fn submit_refusal(e: SubmitError) -> Refusal {
    match e {
        SubmitError::InsufficientFunds { .. } => {
            refuse(StatusCode::PAYMENT_REQUIRED, "insufficient_quota", Some("insufficient_quota"), e)
        }
        SubmitError::UnknownModel(model) => model_not_found(&model),
        SubmitError::TooManyJobs(_) | SubmitError::TooManyJobsForClient(_) | SubmitError::QueueFull(_) => {
            refuse(StatusCode::TOO_MANY_REQUESTS, "rate_limit_exceeded", Some("rate_limit_exceeded"), e)
        }
        SubmitError::Ledger(_) => refuse(StatusCode::INTERNAL_SERVER_ERROR, "server_error", None, e),
        other => bad_request(other),
    }
}

/// The hosted model a request names, of the kind it must be.
fn hosted(app: &App, model: &str, chat: bool) -> Result<Arc<Hosted>, Refusal> {
    let h = app.coordinator.hosting.get(model).ok_or_else(|| model_not_found(model))?;
    if h.facts().chat != chat {
        let kind = if chat { "chat completions" } else { "embeddings" };
        return Err(bad_request(format!("`{model}` does not serve {kind}")));
    }
    Ok(h)
}

/// `POST /v1/embeddings`.
#[utoipa::path(post, path = "/v1/embeddings", tag = "openai", request_body = oa::EmbeddingRequest, security(("bearer" = [])), responses((status = 200, body = oa::EmbeddingResponse), (status = 401, body = oa::OpenAiError), (status = 402, body = oa::OpenAiError), (status = 404, body = oa::OpenAiError)))]
pub(crate) async fn embeddings(State(app): Shared, headers: HeaderMap, body: Bytes) -> Response {
    match embed(&app, &headers, &body).await {
        Ok(r) => Json(r).into_response(),
        Err(r) => r.into_response(),
    }
}

async fn embed(app: &App, headers: &HeaderMap, body: &[u8]) -> Result<oa::EmbeddingResponse, Refusal> {
    let owner = account(app, headers)?;
    let req: oa::EmbeddingRequest = parse(body)?;
    let model = hosted(app, &req.model, false)?;
    let facts = model.facts();
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => return Err(bad_request(format!("encoding_format is `float` or `base64`, not `{other}`"))),
    };
    if req.dimensions.is_some_and(|d| d != facts.width) {
        return Err(bad_request(format!("`{}` makes embeddings of {} dimensions only", req.model, facts.width)));
    }
    let texts = match req.input {
        oa::EmbeddingInput::Text(t) => vec![t],
        oa::EmbeddingInput::Texts(t) => t,
        oa::EmbeddingInput::Tokens(ids) => return embed_ids(app, owner, &req.model, vec![ids], base64, facts).await,
        oa::EmbeddingInput::TokenLists(ids) => return embed_ids(app, owner, &req.model, ids, base64, facts).await,
    };
    if texts.is_empty() || texts.len() > neurolov_protocol::inference::MAX_EMBED_TEXTS {
        return Err(bad_request(format!("input has 1 to {} texts", neurolov_protocol::inference::MAX_EMBED_TEXTS)));
    }
    if texts.iter().any(String::is_empty) {
        return Err(bad_request("an input text is empty"));
    }
    let tokenizer = Arc::clone(&model);
    let ids =
        tokio::task::spawn_blocking(move || texts.iter().map(|t| tokenizer.tokenize(t)).collect::<Result<Vec<_>, _>>())
            .await
            .map_err(|e| refuse(StatusCode::INTERNAL_SERVER_ERROR, "server_error", None, e))?
            .map_err(bad_request)?;
    embed_ids(app, owner, &req.model, ids, base64, facts).await
}

async fn embed_ids(
    app: &App,
    owner: Id,
    model: &str,
    texts: Vec<Vec<u32>>,
    base64: bool,
    facts: neurolov_models::serve::Facts,
) -> Result<oa::EmbeddingResponse, Refusal> {
    if texts.iter().flatten().any(|&t| t >= facts.vocab) {
        return Err(bad_request(format!("a token id is not in the model's vocabulary (0..{})", facts.vocab)));
    }
    let prompt_tokens = texts.iter().map(Vec::len).sum::<usize>() as u64;
    let answered = infer(app, owner, model, InferRequest::Embed { texts }).await?;
    let Answer::Embeddings(vectors) = answered.output.answer else {
        return Err(refuse(StatusCode::INTERNAL_SERVER_ERROR, "server_error", None, "the answer is not embeddings"));
    };
    let data = vectors
        .into_iter()
        .enumerate()
        .map(|(index, v)| oa::Embedding {
            object: "embedding".into(),
            index,
            embedding: if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                oa::EmbeddingVector::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                oa::EmbeddingVector::Float(v)
            },
        })
        .collect();
    Ok(oa::EmbeddingResponse {
        object: "list".into(),
        data,
        model: model.to_string(),
        usage: oa::EmbeddingUsage { prompt_tokens, total_tokens: prompt_tokens },
        neurolov: answered.provenance,
    })
}

/// A chat request's messages as the template reads them.
fn messages(req: &oa::ChatRequest) -> Result<Vec<Message>, Refusal> {
    if req.messages.is_empty() {
        return Err(bad_request("messages is empty"));
    }
    req.messages
        .iter()
        .map(|m| {
            let role = match m.role.as_str() {
                "system" | "developer" => "system",
                "user" => "user",
                "assistant" => "assistant",
                other => {
                    return Err(bad_request(format!(
                        "a message's role is system, developer, user or assistant, not `{other}`"
                    )));
                }
            };
            let content = match &m.content {
                None => String::new(),
                Some(oa::MessageContent::Text(t)) => t.clone(),
                Some(oa::MessageContent::Parts(parts)) => {
                    if let Some(p) = parts.iter().find(|p| p.kind != "text") {
                        return Err(bad_request(format!("only text content is served, not `{}`", p.kind)));
                    }
                    parts.iter().filter_map(|p| p.text.as_deref()).collect::<Vec<_>>().join("")
                }
            };
            Ok(Message { role: role.into(), content })
        })
        .collect()
}

fn stops(stop: &Option<oa::Stop>) -> Result<Vec<String>, Refusal> {
    let stops = match stop {
        None => Vec::new(),
        Some(oa::Stop::One(s)) => vec![s.clone()],
        Some(oa::Stop::Many(v)) => v.clone(),
    };
    if stops.len() > MAX_STOP_SEQUENCES || stops.iter().any(|s| s.is_empty() || s.len() > MAX_STOP_BYTES) {
        return Err(bad_request(format!(
            "stop is up to {MAX_STOP_SEQUENCES} non-empty strings of at most {MAX_STOP_BYTES} bytes"
        )));
    }
    Ok(stops)
}

/// The generated text cut at the first stop sequence, if one occurs (then the finish is `stop`), and the text of
/// each token up to the cut.
fn cut_at_stops(pieces: Vec<String>, stops: &[String]) -> (Vec<String>, bool) {
    let text: String = pieces.concat();
    let Some(cut) = stops.iter().filter_map(|s| text.find(s.as_str())).min() else { return (pieces, false) };
    let mut kept = Vec::new();
    let mut at = 0;
    for p in pieces {
        if at >= cut {
            break;
        }
        let take = p.len().min(cut - at);
        at += p.len();
        kept.push(p[..take].to_string());
    }
    (kept, true)
}

/// `POST /v1/chat/completions` (with `stream`, server-sent events ending in `data: [DONE]`).
#[utoipa::path(post, path = "/v1/chat/completions", tag = "openai", request_body = oa::ChatRequest, security(("bearer" = [])), responses((status = 200, body = oa::ChatResponse), (status = 401, body = oa::OpenAiError), (status = 402, body = oa::OpenAiError), (status = 404, body = oa::OpenAiError)))]
pub(crate) async fn chat_completions(State(app): Shared, headers: HeaderMap, body: Bytes) -> Response {
    match chat(&app, &headers, &body).await {
        Ok(r) => r,
        Err(r) => r.into_response(),
    }
}

async fn chat(app: &App, headers: &HeaderMap, body: &[u8]) -> Result<Response, Refusal> {
    let owner = account(app, headers)?;
    let req: oa::ChatRequest = parse(body)?;
    let model = hosted(app, &req.model, true)?;
    if req.n.is_some_and(|n| n != 1) {
        return Err(bad_request("only n = 1 is served"));
    }
    let stop_sequences = stops(&req.stop)?;
    let messages = messages(&req)?;
    let templater = Arc::clone(&model);
    let (prompt, stop) = tokio::task::spawn_blocking(move || templater.prompt(&messages))
        .await
        .map_err(|e| refuse(StatusCode::INTERNAL_SERVER_ERROR, "server_error", None, e))?
        .map_err(bad_request)?;
    let room = (model.facts().max_positions as usize).saturating_sub(prompt.len());
    if room == 0 {
        let message =
            format!("the prompt is {} tokens, the model's context {}", prompt.len(), model.facts().max_positions);
        return Err(refuse(StatusCode::BAD_REQUEST, "invalid_request_error", Some("context_length_exceeded"), message));
    }
    let asked = req.max_completion_tokens.or(req.max_tokens);
    if asked == Some(0) {
        return Err(bad_request("max_tokens is at least 1"));
    }
    let max_tokens = asked.unwrap_or(DEFAULT_MAX_TOKENS).min(room as u32);
    let seed = match req.seed {
        Some(s) => s,
        None => {
            let mut b = [0u8; 8];
            getrandom::fill(&mut b).map_err(|e| refuse(StatusCode::INTERNAL_SERVER_ERROR, "server_error", None, e))?;
            u64::from_le_bytes(b)
        }
    };
    let request = InferRequest::Chat {
        prompt: prompt.clone(),
        max_tokens,
        stop,
        temperature: req.temperature.unwrap_or(1.0),
        top_p: req.top_p.unwrap_or(1.0),
        seed,
    };
    request.check().map_err(bad_request)?;
    let answered = infer(app, owner, &req.model, request).await?;
    let Answer::Chat { tokens, finish, .. } = &answered.output.answer else {
        return Err(refuse(StatusCode::INTERNAL_SERVER_ERROR, "server_error", None, "the answer is not a chat"));
    };
    let pieces =
        model.pieces(tokens).map_err(|e| refuse(StatusCode::INTERNAL_SERVER_ERROR, "server_error", None, e))?;
    let (pieces, stopped_by_sequence) = cut_at_stops(pieces, &stop_sequences);
    let finish_reason = if stopped_by_sequence || *finish == Finish::Stop { "stop" } else { "length" };
    let usage = oa::Usage {
        prompt_tokens: prompt.len() as u64,
        completion_tokens: tokens.len() as u64,
        total_tokens: (prompt.len() + tokens.len()) as u64,
    };
    let id = format!("chatcmpl-{}", answered.provenance.job);
    let created = now_ms() / 1000;
    if req.stream == Some(true) {
        let include_usage = req.stream_options.as_ref().is_some_and(|o| o.include_usage);
        return Ok(stream(&id, created, &req.model, pieces, finish_reason, include_usage.then_some(usage)));
    }
    let reply = oa::ChatResponse {
        id,
        object: "chat.completion".into(),
        created,
        model: req.model.clone(),
        choices: vec![oa::ChatChoice {
            index: 0,
            message: oa::AssistantMessage { role: "assistant".into(), content: pieces.concat() },
            finish_reason: finish_reason.into(),
            logprobs: None,
        }],
        usage,
        neurolov: answered.provenance,
    };
    Ok(Json(reply).into_response())
}

/// A verified answer as server-sent events: the role, one chunk per token's text, the finish, the usage if asked,
/// then `[DONE]`.
fn stream(
    id: &str,
    created: u64,
    model: &str,
    pieces: Vec<String>,
    finish: &str,
    usage: Option<oa::Usage>,
) -> Response {
    let chunk =
        |delta: oa::Delta, finish_reason: Option<&str>, usage: Option<oa::Usage>, choices: bool| oa::ChatChunk {
            id: id.to_string(),
            object: "chat.completion.chunk".into(),
            created,
            model: model.to_string(),
            choices: if choices {
                vec![oa::ChunkChoice {
                    index: 0,
                    delta,
                    finish_reason: finish_reason.map(str::to_string),
                    logprobs: None,
                }]
            } else {
                Vec::new()
            },
            usage,
        };
    let mut events =
        vec![chunk(oa::Delta { role: Some("assistant".into()), content: Some(String::new()) }, None, None, true)];
    events.extend(
        pieces
            .into_iter()
            .filter(|p| !p.is_empty())
            .map(|p| chunk(oa::Delta { role: None, content: Some(p) }, None, None, true)),
    );
    events.push(chunk(oa::Delta::default(), Some(finish), None, true));
    if let Some(u) = usage {
        events.push(chunk(oa::Delta::default(), None, Some(u), false));
    }
    let mut body = String::new();
    for e in events {
        body.push_str("data: ");
        body.push_str(&serde_json::to_string(&e).unwrap_or_default());
        body.push_str("\n\n");
    }
    body.push_str("data: [DONE]\n\n");
    ([(axum::http::header::CONTENT_TYPE, "text/event-stream"), (axum::http::header::CACHE_CONTROL, "no-cache")], body)
        .into_response()
}

/// Verifies a signed request (any method) and returns its account.
fn signed_by(app: &App, headers: &HeaderMap, method: &str, path: &str, body: &[u8]) -> Result<Id, Box<Response>> {
    let header = |name: &'static str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    app.replay.verify(header, method, path, body, now_ms()).map_err(|e| Box::new(crate::app::error(e.status(), e)))
}

/// Writes a key's record and waits until it is on disk.
async fn keep_key(app: &App, hash: String, doc: &crate::keys::KeyDoc) -> Result<(), Box<Response>> {
    let (done, written) = tokio::sync::oneshot::channel();
    let doc = serde_json::to_string(doc).unwrap_or_default();
    let table = crate::store::DocTable::ApiKeys;
    let sent = app.coordinator.store.send(crate::store::StoreMsg::Doc { table, key: hash, doc, done }).is_ok();
    if !sent || written.await.is_err() {
        return Err(Box::new(crate::app::error(StatusCode::INTERNAL_SERVER_ERROR, "the key could not be stored")));
    }
    Ok(())
}

/// `POST /v1/keys` (signed): a new API key spending from the signer's account; the secret is in this reply only.
#[utoipa::path(post, path = "/v1/keys", tag = "openai", request_body(content = oa::KeyRequest, description = "signed request"), responses((status = 200, body = oa::KeyCreated)))]
pub(crate) async fn create_key(State(app): Shared, headers: HeaderMap, body: Bytes) -> Response {
    let owner = match signed_by(&app, &headers, "POST", "/v1/keys", &body) {
        Ok(o) => o,
        Err(r) => return *r,
    };
    let req: oa::KeyRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return crate::app::error(StatusCode::BAD_REQUEST, format!("malformed request: {e}")),
    };
    let (secret, hash, doc) = match app.coordinator.keys.create(owner, &req.name, now_ms()) {
        Ok(k) => k,
        Err(e) => return crate::app::error(StatusCode::BAD_REQUEST, e),
    };
    if let Err(r) = keep_key(&app, hash, &doc).await {
        return *r;
    }
    Json(oa::KeyCreated { key: secret, entry: doc.entry() }).into_response()
}

/// `GET /v1/keys` (signed, empty body): the signer's keys, never their secrets.
#[utoipa::path(get, path = "/v1/keys", tag = "openai", responses((status = 200, body = Vec<oa::KeyEntry>)))]
pub(crate) async fn list_keys(State(app): Shared, headers: HeaderMap) -> Response {
    match signed_by(&app, &headers, "GET", "/v1/keys", b"") {
        Ok(owner) => {
            Json(app.coordinator.keys.of(&owner).iter().map(|k| k.entry()).collect::<Vec<_>>()).into_response()
        }
        Err(r) => *r,
    }
}

/// `POST /v1/keys/{id}/revoke` (signed, empty body): the key stops working at once, for good.
#[utoipa::path(post, path = "/v1/keys/{id}/revoke", tag = "openai", params(("id" = String, Path)), responses((status = 200, body = oa::KeyEntry)))]
pub(crate) async fn revoke_key(
    State(app): Shared,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let owner = match signed_by(&app, &headers, "POST", &format!("/v1/keys/{id}/revoke"), &body) {
        Ok(o) => o,
        Err(r) => return *r,
    };
    let (hash, doc) = match app.coordinator.keys.revoke(&owner, &id, now_ms()) {
        Ok(k) => k,
        Err(e) => return crate::app::error(StatusCode::NOT_FOUND, e),
    };
    if let Err(r) = keep_key(&app, hash, &doc).await {
        return *r;
    }
    Json(doc.entry()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_sequences_cut_the_text_and_its_pieces() {
        let pieces = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let (kept, stopped) = cut_at_stops(pieces(&["Hello", ", wor", "ld!", " Bye"]), &["wor".into(), "Bye".into()]);
        assert_eq!((kept.concat(), stopped), ("Hello, ".to_string(), true));
        let (kept, stopped) = cut_at_stops(pieces(&["a", "b"]), &["z".into()]);
        assert_eq!((kept.concat(), stopped), ("ab".to_string(), false));
        let (kept, stopped) = cut_at_stops(pieces(&["ab", "c"]), &["a".into()]);
        assert_eq!((kept.concat(), stopped), (String::new(), true));
    }
}
