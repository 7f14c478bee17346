//! The HTTP API under `/v1` and the node WebSocket. Request and response bodies are the edge types defined here;
//! the core never sees JSON.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::{SinkExt, StreamExt};
use neurolov_api as api;
use neurolov_core::{InputData, JobSpec, JobState, JobView};
use neurolov_kernels::untrusted::{self, JobBuffer, WgslJob};
use neurolov_protocol::messages::{DataRef, WgslBuffer};
use neurolov_verify::replicas::{self, Tolerance};

use neurolov_api::MAX_JOB_WAIT_MS;

use crate::app::{App, Shared, error};
use crate::auth::ReplayCache;
use crate::blobs::is_hash;
use crate::{Coordinator, MAX_BLOB_BYTES, Outbound, money, now_ms, openai, registry, web};

/// Largest JSON request body.
const MAX_JSON_BYTES: usize = 1 << 20;

pub(crate) fn router(coordinator: Arc<Coordinator>) -> Router {
    let app = Arc::new(App {
        waiters: Arc::new(tokio::sync::Semaphore::new(coordinator.max_job_waiters)),
        coordinator,
        replay: ReplayCache::default(),
        uploads: Default::default(),
        stats: Default::default(),
    });
    Router::new()
        .route("/v1/nodes", get(nodes))
        .route("/v1/nodes/ws", get(node_socket))
        .route("/v1/blobs/{hash}", get(get_blob).put(put_blob).layer(DefaultBodyLimit::max(MAX_BLOB_BYTES as usize)))
        .route("/", get(web::index))
        .route("/provide", get(web::provide))
        .route("/tg", get(web::telegram))
        .route(
            "/v1/gov/proposals",
            post(crate::gov::propose).get(crate::gov::list).layer(DefaultBodyLimit::max(MAX_JSON_BYTES)),
        )
        .route("/v1/gov/proposals/{id}", get(crate::gov::show))
        .route("/v1/gov/proposals/{id}/vote", post(crate::gov::vote).layer(DefaultBodyLimit::max(MAX_JSON_BYTES)))
        .route("/v1/gov/proposals/{id}/{step}", post(crate::gov::step).layer(DefaultBodyLimit::max(MAX_JSON_BYTES)))
        .route("/v1/telegram/session", post(crate::telegram::session).layer(DefaultBodyLimit::max(MAX_JSON_BYTES)))
        .route(
            "/v1/telegram/webhook",
            post(crate::telegram::webhook).layer(DefaultBodyLimit::max(crate::telegram::MAX_UPDATE_BYTES)),
        )
        .route("/static/{file}", get(web::static_file))
        .route("/v1/kernels/{file}", get(web::kernel))
        .route("/v1/jobs", post(submit_job).get(recent_jobs).layer(DefaultBodyLimit::max(MAX_JSON_BYTES)))
        .route("/v1/jobs/{id}", get(job_status))
        .route("/v1/jobs/{id}/result", get(job_result))
        .route("/v1/verification", get(verification))
        .route("/v1/jobs/{id}/cancel", post(cancel_job).layer(DefaultBodyLimit::max(MAX_JSON_BYTES)))
        .route("/v1/accounts/{address}", get(money::account))
        .route("/v1/accounts/{address}/transfers", get(money::history))
        .route("/v1/accounts/{address}/withdrawals", get(money::withdrawals))
        .route("/v1/chains", get(money::chains))
        .route("/v1/chains/activity", get(money::chain_activity))
        .route("/v1/accounts/{address}/deposits", get(money::deposits))
        .route("/v1/wallet/withdraw", post(money::withdraw).layer(DefaultBodyLimit::max(MAX_JSON_BYTES)))
        .route("/v1/wallet/withdraw/check", post(money::withdraw_check).layer(DefaultBodyLimit::max(MAX_JSON_BYTES)))
        .route("/v1/wallet/transfer", post(money::transfer).layer(DefaultBodyLimit::max(MAX_JSON_BYTES)))
        .route("/v1/wallet/stake", post(money::stake).layer(DefaultBodyLimit::max(MAX_JSON_BYTES)))
        .route("/v1/wallet/unstake", post(money::unstake).layer(DefaultBodyLimit::max(MAX_JSON_BYTES)))
        .route("/v1/faucet", post(money::faucet).layer(DefaultBodyLimit::max(MAX_JSON_BYTES)))
        .route("/v1/evidence", get(money::evidence))
        .route("/v1/stats", get(money::stats))
        .route("/v1/models", get(openai::models).post(registry::publish).layer(DefaultBodyLimit::max(MAX_JSON_BYTES)))
        .route("/v1/models/{name}", get(registry::show))
        .route("/v1/models/{name}/files", get(registry::files))
        .route("/v1/embeddings", post(openai::embeddings).layer(DefaultBodyLimit::max(MAX_JSON_BYTES)))
        .route("/v1/chat/completions", post(openai::chat_completions).layer(DefaultBodyLimit::max(MAX_JSON_BYTES)))
        .route("/v1/keys", post(openai::create_key).get(openai::list_keys).layer(DefaultBodyLimit::max(MAX_JSON_BYTES)))
        .route("/v1/keys/{id}/revoke", post(openai::revoke_key).layer(DefaultBodyLimit::max(MAX_JSON_BYTES)))
        .with_state(app)
}

#[utoipa::path(get, path = "/v1/nodes", tag = "nodes", responses((status = 200, description = "every node known", body = Vec<api::NodeEntry>)))]
pub(crate) async fn nodes(State(app): Shared) -> Json<Vec<api::NodeEntry>> {
    let views = app.coordinator.read_core(|c| c.nodes());
    Json(
        views
            .into_iter()
            .map(|v| api::NodeEntry {
                id: v.id.to_string(),
                operator: v.operator.to_string(),
                kind: match v.kind {
                    neurolov_protocol::messages::NodeKind::Native => "native",
                    neurolov_protocol::messages::NodeKind::Browser => "browser",
                }
                .into(),
                state: v.state.as_str().into(),
                adapter: v.claimed.adapter,
                backend: v.claimed.backend,
                software: v.claimed.software,
                wgsl: v.claimed.wgsl,
                models: v.claimed.models,
                fetches_models: v.claimed.fetches_models,
                gflops_verified: v.gflops_verified,
                reliability: v.reliability,
                price: v.price_nano_per_gflop,
                score: v.score,
                tasks_verified: v.tasks_verified,
                tasks_failed: v.tasks_failed,
                results_provisional: v.results_provisional,
            })
            .collect(),
    )
}

/// A browser's WebSocket carries its page's origin: only the coordinator's own pages (`/provide`) may open one, so no
/// other site a visitor opens can turn that visitor's tab into a node. Native nodes send no `Origin`.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(axum::http::header::ORIGIN) else { return true };
    let host = headers.get(axum::http::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default();
    let origin = origin.to_str().unwrap_or_default();
    !host.is_empty()
        && origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://")).is_some_and(|rest| rest == host)
}

async fn node_socket(
    State(app): Shared,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if !same_origin(&headers) {
        return error(StatusCode::FORBIDDEN, "node sockets are opened by nodes or by this coordinator's own pages");
    }
    if !app.coordinator.admit_address(peer.ip()) {
        let why = format!("at most {} node connections per address", app.coordinator.max_connections_per_address);
        return error(StatusCode::TOO_MANY_REQUESTS, why);
    }
    let coordinator = Arc::clone(&app.coordinator);
    let failed = Arc::clone(&app.coordinator);
    ws.max_message_size(neurolov_protocol::envelope::MAX_PAYLOAD_BYTES * 2 + 1024)
        .read_buffer_size(SESSION_READ_BUFFER_BYTES)
        .write_buffer_size(0)
        .on_failed_upgrade(move |_| failed.release_address(peer.ip()))
        .on_upgrade(move |socket| async move {
            node_session(Arc::clone(&coordinator), socket).await;
            coordinator.release_address(peer.ip());
        })
}

/// Bytes read from a node's socket at once. Most frames are a few hundred bytes; tungstenite's default (128 KiB per
/// connection, allocated up front) cost 150 KiB of memory per idle session (`scripts/bench-sessions`).
const SESSION_READ_BUFFER_BYTES: usize = 8 * 1024;

async fn node_session(coordinator: Arc<Coordinator>, socket: WebSocket) {
    let Some((conn, mut outbound)) = coordinator.open_conn() else {
        tracing::warn!("refusing a node: the connection limit is reached or the coordinator is stopping");
        return;
    };
    let (mut sink, mut stream) = socket.split();
    coordinator.with_core(|core, _| ((), core.connected(now_ms(), conn)));
    let mut budget = FrameBudget::new();
    // The node's key, decompressed once for the frames it signs.
    let mut keys = neurolov_protocol::KeyCache::default();
    loop {
        tokio::select! {
            incoming = stream.next() => match incoming {
                Some(Ok(Message::Text(text))) => {
                    if !budget.take(std::time::Instant::now()) {
                        if budget.refused > MAX_FRAMES_REFUSED {
                            tracing::warn!(conn, "node connection closed: it kept sending past its frame rate");
                            break;
                        }
                        let refusal = neurolov_protocol::messages::ToNode::Error {
                            code: neurolov_protocol::messages::ErrorCode::RateLimited,
                            message: format!("more than {MAX_FRAMES_PER_SECOND} frames a second"),
                        };
                        let text = serde_json::to_string(&refusal).unwrap_or_default();
                        if sink.send(Message::Text(text.into())).await.is_err() {
                            break;
                        }
                        continue;
                    }
                    if handle_frame(&coordinator, conn, text.as_str(), &mut keys).await.is_err() {
                        break;
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
            out = outbound.recv() => match out {
                Some(Outbound::Text(text)) => {
                    if sink.send(Message::Text(text.into())).await.is_err() {
                        break;
                    }
                }
                Some(Outbound::Close(reason)) => {
                    tracing::info!(conn, %reason, "closing node connection");
                    let _ = sink.send(Message::Close(None)).await;
                    break;
                }
                None => break,
            },
        }
    }
    coordinator.close_conn(conn);
}

/// Frames up to this size are opened (parsed, signature checked: tens of µs) on the session's own task; larger ones
/// on a blocking thread, so that a 128 KiB delivery does not hold an async worker.
const OPEN_IN_PLACE_BYTES: usize = 4 * 1024;

/// One node frame, into the core. Parsing and the signature check need no state: they run before the core is locked;
/// results are checked off the lock too (see `Effect::Verify`). A heartbeat — what tens of thousands of idle nodes
/// send — is handled in place when the core's lock is free: a hand-off to a blocking thread per heartbeat cost more
/// CPU in thread wake-ups than the heartbeat itself (`scripts/bench-sessions`). Every other frame, and a heartbeat
/// that finds the core busy, goes to a blocking thread (a frame may wait on the lock, or dispatch work that writes
/// blob files). A heartbeat can dispatch too — to a stale node it makes eligible again, and only a version-1 node's
/// inline inputs become blob files (≤ 8 KiB each) — a rare, small write accepted on the async worker. An error means
/// the blocking thread panicked.
async fn handle_frame(
    coordinator: &Arc<Coordinator>,
    conn: neurolov_core::ConnId,
    text: &str,
    keys: &mut neurolov_protocol::KeyCache,
) -> Result<(), ()> {
    type CoreCall =
        Box<dyn FnOnce(&mut neurolov_core::Core, &crate::BlobDir) -> ((), Vec<neurolov_core::Effect>) + Send>;
    let frame = move |opened: neurolov_core::Opened| -> CoreCall {
        Box::new(move |core, blobs| ((), core.frame_opened(now_ms(), conn, opened, blobs)))
    };
    let c = Arc::clone(coordinator);
    let done = if text.len() <= OPEN_IN_PLACE_BYTES {
        let opened = neurolov_core::open_frame_with(text, keys);
        let heartbeat = matches!(opened, Ok((_, neurolov_protocol::FromNode::Heartbeat { .. })));
        let call = frame(opened);
        let call = if heartbeat {
            match coordinator.try_with_core(call) {
                Ok(()) => return Ok(()),
                Err(call) => call,
            }
        } else {
            call
        };
        tokio::task::spawn_blocking(move || c.with_core(call)).await
    } else {
        let text = text.to_string();
        tokio::task::spawn_blocking(move || c.with_core(frame(neurolov_core::open_frame(&text)))).await
    };
    done.map_err(|_| ())
}

/// Frames a node may send per second, on average, and in a burst. A busy version-2 node sends about one `deliver`
/// frame per batch of its slots' results (thousands of tiny tasks a second on a CPU node): at 200 a second such a
/// node's frames were refused and its jobs stalled.
pub const MAX_FRAMES_PER_SECOND: u32 = 2_000;
const FRAME_BURST: f64 = 4_000.0;
/// Frames past the rate a connection may send before it is closed.
const MAX_FRAMES_REFUSED: u32 = 1_000;

/// A token bucket per node connection: frames past the rate never reach the core.
struct FrameBudget {
    tokens: f64,
    at: std::time::Instant,
    /// Frames refused so far.
    refused: u32,
}

impl FrameBudget {
    fn new() -> FrameBudget {
        FrameBudget { tokens: FRAME_BURST, at: std::time::Instant::now(), refused: 0 }
    }

    fn take(&mut self, now: std::time::Instant) -> bool {
        let refill = now.saturating_duration_since(self.at).as_secs_f64() * f64::from(MAX_FRAMES_PER_SECOND);
        self.tokens = (self.tokens + refill).min(FRAME_BURST);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            self.refused += 1;
            false
        }
    }
}

#[utoipa::path(get, path = "/v1/blobs/{hash}", tag = "blobs", params(("hash" = String, Path, description = "blake3 hex")), responses((status = 200, description = "the blob's bytes", content_type = "application/octet-stream"), (status = 404, body = api::ErrorReply)))]
pub(crate) async fn get_blob(State(app): Shared, Path(hash): Path<String>) -> Response {
    if !is_hash(&hash) {
        return error(StatusCode::BAD_REQUEST, "a blob is named by its blake3 hash (64 lowercase hex characters)");
    }
    if neurolov_core::Blobs::size(&app.coordinator.blobs, &hash).is_none() {
        // A genesis model's file is served by its hash too, from the model cache.
        return match app.coordinator.hosting.genesis_file(&hash) {
            Some((path, size)) => (
                [("content-type", "application/octet-stream".to_string()), ("content-length", size.to_string())],
                axum::body::Body::from_stream(file_chunks(Some(path))),
            )
                .into_response(),
            None => error(StatusCode::NOT_FOUND, "no such blob"),
        };
    }
    stream_blobs(&app.coordinator.blobs, vec![hash], &Default::default())
}

/// What a blob read holds in memory at a time.
const BLOB_CHUNK_BYTES: usize = 1 << 20;

/// Who may store a blob (the request signed as in [`crate::auth`]): a node uploading the result of an attempt it holds
/// (one blob of that attempt's result size), or a client that holds NLOV, within its daily allowance (inputs for its
/// jobs; [`crate::uploads`]). Storing a blob that is already there changes nothing and needs no signature.
#[utoipa::path(put, path = "/v1/blobs/{hash}", tag = "blobs", params(("hash" = String, Path, description = "blake3 hex of the body")), request_body(content_type = "application/octet-stream", description = "signed request (headers x-neurolov-client, x-neurolov-timestamp, x-neurolov-signature; see docs/API.md)"), responses((status = 201, description = "stored"), (status = 401, body = api::ErrorReply), (status = 413, body = api::ErrorReply), (status = 507, body = api::ErrorReply)))]
pub(crate) async fn put_blob(
    State(app): Shared,
    Path(hash): Path<String>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    if !is_hash(&hash) {
        return error(StatusCode::BAD_REQUEST, "a blob is named by its blake3 hash (64 lowercase hex characters)");
    }
    // Everything about the upload is decided before its body is read: its size from Content-Length, its signer from
    // a signature over its name (its hash) — so a stranger cannot make the coordinator buffer 256 MiB for nothing.
    let Some(len) = headers.get(axum::http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
    else {
        return error(StatusCode::LENGTH_REQUIRED, "a blob upload states its Content-Length");
    };
    if len > MAX_BLOB_BYTES {
        return error(StatusCode::PAYLOAD_TOO_LARGE, format!("a blob is at most {MAX_BLOB_BYTES} bytes"));
    }
    let blobs = app.coordinator.blobs.clone();
    if neurolov_core::Blobs::size(&blobs, &hash) == Some(len) {
        return StatusCode::OK.into_response();
    }
    let header = |name: &'static str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let path = format!("/v1/blobs/{hash}");
    let signer = match app.replay.verify_hashed(header, "PUT", &path, &hash, now_ms()) {
        Ok(signer) => signer,
        Err(e) => return error(e.status(), format!("an upload must be signed over its name (its hash): {e}")),
    };
    let node_result = app.coordinator.with_core(|c, _| (c.claim_upload(&signer, len, &hash), Vec::new()));
    if !node_result {
        if app.coordinator.read_core(|c| c.wallet_view(&signer).balance_nano) == 0 {
            let why = "uploads are results of attempts the signing node holds (one each, of their size), or inputs \
                       from a client with NLOV in its wallet";
            return error(StatusCode::FORBIDDEN, why);
        }
        if !app.uploads.take(signer, len, now_ms()) {
            let why = format!(
                "this client's upload allowance ({} bytes a day) is used up",
                crate::uploads::CLIENT_UPLOAD_BYTES_PER_DAY
            );
            return error(StatusCode::TOO_MANY_REQUESTS, why);
        }
    }
    let body = match axum::body::to_bytes(body, len as usize).await {
        Ok(body) if body.len() as u64 == len => body,
        Ok(body) => return error(StatusCode::BAD_REQUEST, format!("body has {} bytes, not {len}", body.len())),
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("reading the body: {e}")),
    };
    let actual = blake3::hash(&body).to_hex().to_string();
    if actual != hash {
        return error(StatusCode::BAD_REQUEST, format!("body hashes to {actual}, not {hash}"));
    }
    match tokio::task::spawn_blocking(move || blobs.put(&hash, &body)).await {
        Ok(Ok(())) => StatusCode::CREATED.into_response(),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::StorageFull => error(StatusCode::INSUFFICIENT_STORAGE, e),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// Where a matmul operand comes from, in the core's words.
fn operand(o: api::Operand) -> InputData {
    match o {
        api::Operand::Seed { seed } => InputData::Seeded { seed },
        api::Operand::Blob { blob } => InputData::Blob { hash: blob },
    }
}

#[utoipa::path(post, path = "/v1/jobs", tag = "jobs", params(WaitQuery), request_body(content = api::JobRequest, description = "signed request (headers x-neurolov-client, x-neurolov-timestamp, x-neurolov-signature; see docs/API.md)"), responses((status = 201, body = api::JobCreated), (status = 200, description = "a retry under the same idempotency key", body = api::JobCreated), (status = 400, body = api::ErrorReply), (status = 401, body = api::ErrorReply)))]
pub(crate) async fn submit_job(
    State(app): Shared,
    axum::extract::Query(q): axum::extract::Query<WaitQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |name: &'static str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let client = match app.replay.verify(header, "POST", "/v1/jobs", &body, now_ms()) {
        Ok(id) => id,
        Err(e) => return error(e.status(), e),
    };
    let request: api::JobRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("malformed job: {e}")),
    };
    // A retried submission (same client, same key) gets its job back: 200 with its id, nothing escrowed again.
    let key = request.idempotency_key().map(str::to_string);
    if let Some(k) = &key {
        // In memory while the job is (the core answers again at submission), in the store once it was archived.
        let known = match app.coordinator.read_core(|c| c.job_for_key(&client, k)) {
            Some(id) => Some(id),
            None => match crate::store::job_for_key(&app.coordinator.db, &client, k).await {
                Ok(found) => found,
                Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, format!("reading jobs from storage: {e}")),
            },
        };
        if let Some(id) = known {
            // The first submission may still be on its way to disk.
            app.coordinator.flush().await;
            return (StatusCode::OK, Json(api::JobCreated { id, status: None, result: None })).into_response();
        }
    }
    // Cheap checks and the client's funds come first: nothing is read, generated or stored for a request that would
    // be refused (an unfunded key listing one blob a thousand times used to make the coordinator read it a thousand
    // times, and got its kernel source stored).
    if let Err(e) = admit(&app.coordinator, &client, &request) {
        return error(StatusCode::BAD_REQUEST, e);
    }
    let coordinator = Arc::clone(&app.coordinator);
    // A small matmul is planned right here; anything that reads blobs or generates much runs off the async
    // workers (seconds for a big seeded matmul).
    let small = matches!(&request, api::JobRequest::Matmul(j)
        if matches!((&j.a, &j.b), (api::Operand::Seed { .. }, api::Operand::Seed { .. }))
            && u64::from(j.m) * u64::from(j.k) + u64::from(j.k) * u64::from(j.n) <= SMALL_JOB_ELEMENTS);
    let outcome = if small {
        Ok(create_job(&coordinator, client, request, key))
    } else {
        tokio::task::spawn_blocking(move || create_job(&coordinator, client, request, key)).await
    };
    match outcome {
        Ok(Ok(id)) if q.wait_ms > 0 => match status_after(&app, id, q.wait_ms).await {
            // Durable: the status flushed after the submission's records.
            Ok(status) => {
                // An ended job's status was flushed; a job still running (the wait ran out, or no waiter was free)
                // is acknowledged only once its submission is durable, as without a wait.
                if !status.state.is_final() {
                    app.coordinator.flush().await;
                }
                let result = small_result(&app, id, &status).await;
                (StatusCode::CREATED, Json(api::JobCreated { id, status: Some(status), result })).into_response()
            }
            Err(response) => response,
        },
        Ok(Ok(id)) => {
            // The job is acknowledged only once it is durable.
            app.coordinator.flush().await;
            (StatusCode::CREATED, Json(api::JobCreated { id, status: None, result: None })).into_response()
        }
        Ok(Err(e)) => error(StatusCode::BAD_REQUEST, e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// Operand elements up to which a seeded matmul is planned on the request's own task.
const SMALL_JOB_ELEMENTS: u64 = 1 << 14;

/// Plans a job (operands read or generated before the core is locked) and submits it to the core.
fn create_job(
    coordinator: &Coordinator,
    client: neurolov_protocol::Id,
    request: api::JobRequest,
    key: Option<String>,
) -> Result<u64, String> {
    let spec = match request {
        api::JobRequest::Matmul(j) => JobSpec::Matmul {
            m: j.m,
            n: j.n,
            k: j.k,
            a: operand(j.a),
            b: operand(j.b),
            max_price_nano_per_gflop: j.max_price_nano_per_gflop,
            min_reliability: j.min_reliability,
        },
        api::JobRequest::Wgsl(w) => wgsl_spec(coordinator, w)?,
    };
    let inputs = neurolov_core::load_inputs(&spec, &coordinator.blobs).map_err(|e| e.to_string())?;
    coordinator.with_core(|core, blobs| match core.submit_loaded(now_ms(), client, spec, key, inputs, blobs) {
        Ok((id, effects)) => (Ok(id), effects),
        Err(e) => (Err(e.to_string()), Vec::new()),
    })
}

/// What [`neurolov_core::Core::admit`] says of a request before its kernel is validated or any input read: bounds on
/// the request's size first, then the job's cheap checks and the client's funds.
fn admit(coordinator: &Coordinator, client: &neurolov_protocol::Id, request: &api::JobRequest) -> Result<u64, String> {
    let spec = match request {
        api::JobRequest::Matmul(api::MatmulJob { m, n, k, max_price_nano_per_gflop, min_reliability, .. }) => {
            JobSpec::Matmul {
                m: *m,
                n: *n,
                k: *k,
                a: InputData::Seeded { seed: 0 },
                b: InputData::Seeded { seed: 0 },
                max_price_nano_per_gflop: *max_price_nano_per_gflop,
                min_reliability: *min_reliability,
            }
        }
        api::JobRequest::Wgsl(w) => {
            if w.buffers.len() > untrusted::MAX_BUFFERS {
                return Err(format!(
                    "a kernel may bind at most {} buffers (got {})",
                    untrusted::MAX_BUFFERS,
                    w.buffers.len()
                ));
            }
            if w.source.len() > untrusted::MAX_SOURCE_BYTES {
                return Err(format!("kernel source is larger than {} bytes", untrusted::MAX_SOURCE_BYTES));
            }
            JobSpec::Wgsl {
                source_hash: String::new(),
                entry_point: String::new(),
                buffers: Vec::new(),
                dispatch: w.dispatch,
                tolerance: Tolerance::Bitwise,
                work_mflop: w.work_mflop,
                max_price_nano_per_gflop: w.max_price_nano_per_gflop,
                min_reliability: w.min_reliability,
                features: Vec::new(),
            }
        }
    };
    coordinator.read_core(|c| c.admit(client, &spec)).map_err(|e| e.to_string())
}

#[derive(serde::Deserialize)]
pub(crate) struct RecentQuery {
    #[serde(default = "twenty")]
    limit: usize,
}

fn twenty() -> usize {
    20
}

/// Most jobs one `GET /v1/jobs` lists.
const MAX_RECENT_JOBS: usize = 200;

/// `GET /v1/jobs`: the newest jobs, newest first, with their progress and verification.
#[utoipa::path(get, path = "/v1/jobs", tag = "jobs", params(("limit" = Option<usize>, Query, description = "at most 200")), responses((status = 200, body = Vec<api::JobSummary>)))]
pub(crate) async fn recent_jobs(
    State(app): Shared,
    axum::extract::Query(q): axum::extract::Query<RecentQuery>,
) -> Json<Vec<api::JobSummary>> {
    let jobs = app.coordinator.read_core(|c| c.recent_jobs(q.limit.min(MAX_RECENT_JOBS)));
    Json(
        jobs.into_iter()
            .map(|(view, kind)| api::JobSummary {
                id: view.id,
                kind: kind.into(),
                client: view.client.to_string(),
                state: state_name(&view.state),
                reason: view.state.reason().map(str::to_string),
                tasks_done: view.tasks.iter().filter(|t| t.verified).count(),
                tasks_total: view.tasks.len(),
            })
            .collect(),
    )
}

/// The API's word for a job's state.
fn state_name(state: &JobState) -> api::JobState {
    match state {
        JobState::Running { .. } => api::JobState::Running,
        JobState::Done => api::JobState::Done,
        JobState::Failed { .. } => api::JobState::Failed,
    }
}

/// Validates a client's kernel with naga, finds the optional WebGPU features it needs (only nodes that claim them get
/// it) and stores its source.
fn wgsl_spec(
    coordinator: &Coordinator,
    api::WgslJob {
        source,
        entry_point,
        buffers,
        dispatch,
        float_tolerance,
        work_mflop,
        max_price_nano_per_gflop,
        min_reliability,
        ..
    }: api::WgslJob,
) -> Result<JobSpec, String> {
    let mut job_buffers = Vec::new();
    for b in &buffers {
        let init = match &b.init {
            Some(hash) => coordinator.blobs.read(hash).ok_or(format!("input blob {hash} is not stored"))?,
            None => Vec::new(),
        };
        job_buffers.push(JobBuffer { binding: b.binding, access: b.access, size_bytes: b.size_bytes, init });
    }
    let job = WgslJob { source: source.clone(), entry_point: entry_point.clone(), buffers: job_buffers, dispatch };
    let features = untrusted::needed_features(&job).map_err(|e| e.to_string())?;
    let tolerance = match float_tolerance {
        None => Tolerance::Bitwise,
        Some(rel) if rel > 0.0 && rel <= replicas::MAX_REL => Tolerance::Float { abs: 1e-6, rel },
        Some(rel) => return Err(format!("float tolerance must be in (0, {}] (got {rel})", replicas::MAX_REL)),
    };
    let source_hash = blake3::hash(source.as_bytes()).to_hex().to_string();
    coordinator.blobs.put(&source_hash, source.as_bytes()).map_err(|e| e.to_string())?;
    Ok(JobSpec::Wgsl {
        source_hash,
        entry_point,
        buffers: buffers
            .into_iter()
            .map(|b| WgslBuffer {
                binding: b.binding,
                access: b.access,
                size_bytes: b.size_bytes,
                init: b.init.map(|hash| DataRef::Blob { hash }),
            })
            .collect(),
        dispatch,
        tolerance,
        work_mflop,
        max_price_nano_per_gflop,
        min_reliability,
        features: features.names(),
    })
}

/// The tolerance parameters a provider's self-check uses (see [`api::VerificationParams`]).
#[utoipa::path(get, path = "/v1/verification", tag = "nodes", responses((status = 200, body = api::VerificationParams)))]
pub(crate) async fn verification() -> Json<api::VerificationParams> {
    use neurolov_verify::freivalds;
    Json(api::VerificationParams {
        unit_roundoff: freivalds::U32,
        checker_unit_roundoff: freivalds::U64,
        false_reject_log2: freivalds::FALSE_REJECT_LOG2,
        checker_slack: freivalds::VERIFIER_SLACK,
        flush_below: freivalds::FLUSH,
        self_check_rounds: freivalds::SELF_CHECK_ROUNDS,
        self_check_margin: freivalds::SELF_CHECK_MARGIN,
    })
}

/// A job from the core's memory, or else from the store (a finished job the core archived), with its result's blobs
/// when it is done.
async fn find_job(app: &App, id: u64) -> Result<Option<(JobView, Option<Vec<String>>)>, Response> {
    if let Some(found) = app.coordinator.read_core(|c| c.job(id).map(|j| (j, c.job_result_hashes(id)))) {
        return Ok(Some(found));
    }
    match crate::store::stored_job(&app.coordinator.db, id).await {
        Ok(stored) => Ok(stored.map(|s| (s.view, s.result))),
        Err(e) => Err(error(StatusCode::INTERNAL_SERVER_ERROR, format!("reading the job from storage: {e}"))),
    }
}

/// A done job's result, base64, when every part of it is kept in the database and it is at most
/// [`api::MAX_RESULT_IN_REPLY_BYTES`] (see [`api::JobCreated::result`]); `None` otherwise, and the client reads it
/// with `GET /v1/jobs/{id}/result` as for any result.
async fn small_result(app: &App, id: u64, status: &api::JobStatus) -> Option<String> {
    use base64::Engine;
    if status.state != api::JobState::Done {
        return None;
    }
    let hashes = find_job(app, id).await.ok().flatten()?.1?;
    let inline = crate::store::inline_results(&app.coordinator.db, id).await.ok()?;
    let mut bytes = Vec::new();
    for hash in &hashes {
        bytes.extend_from_slice(inline.get(hash)?);
        if bytes.len() > api::MAX_RESULT_IN_REPLY_BYTES {
            return None;
        }
    }
    Some(base64::engine::general_purpose::STANDARD.encode(bytes))
}

#[derive(serde::Deserialize, utoipa::IntoParams)]
pub(crate) struct WaitQuery {
    /// Wait up to this long (at most 30,000 ms) for a running job to end before answering.
    #[serde(default)]
    wait_ms: u64,
}

#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "jobs", params(("id" = u64, Path), WaitQuery), responses((status = 200, body = api::JobStatus), (status = 404, body = api::ErrorReply)))]
pub(crate) async fn job_status(
    State(app): Shared,
    Path(id): Path<u64>,
    axum::extract::Query(q): axum::extract::Query<WaitQuery>,
) -> Response {
    match status_after(&app, id, q.wait_ms).await {
        Ok(status) => Json(status).into_response(),
        Err(response) => response,
    }
}

/// A job's status once it has ended or `wait_ms` (at most [`MAX_JOB_WAIT_MS`], and none past
/// [`crate::ServeConfig::max_job_waiters`] waiting requests) has passed; an ended job is reported only once what it paid is
/// on disk.
async fn status_after(app: &App, id: u64, wait_ms: u64) -> Result<api::JobStatus, Response> {
    // Past the waiter cap a request is answered at once (its wait, a hint, is dropped).
    let permit = if wait_ms > 0 { Arc::clone(&app.waiters).try_acquire_owned().ok() } else { None };
    let wait_ms = if permit.is_some() { wait_ms.min(MAX_JOB_WAIT_MS) } else { 0 };
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(wait_ms);
    let mut finished = app.coordinator.jobs_finished.subscribe();
    let view = loop {
        finished.mark_unchanged();
        let view = match find_job(app, id).await? {
            Some((view, _)) => view,
            None => return Err(error(StatusCode::NOT_FOUND, "no such job")),
        };
        if view.state.is_final() {
            app.coordinator.flush().await;
            break view;
        }
        if tokio::time::timeout_at(deadline, finished.changed()).await.is_err() {
            break view;
        }
    };
    let (done, total) = match &view.state {
        JobState::Running { tasks_done, tasks } => (*tasks_done, *tasks),
        JobState::Done => (view.tasks.len(), view.tasks.len()),
        JobState::Failed { .. } => (view.tasks.iter().filter(|t| t.verified).count(), view.tasks.len()),
    };
    Ok(api::JobStatus {
        id: view.id,
        client: view.client.to_string(),
        state: state_name(&view.state),
        reason: view.state.reason().map(str::to_string),
        tasks_done: done,
        tasks_total: total,
        progress: if total == 0 { 0.0 } else { done as f64 / total as f64 },
        tasks: view
            .tasks
            .iter()
            .map(|t| api::TaskStatus {
                task: t.task,
                node: t.node.map(|n| n.to_string()),
                verified: t.verified,
                attempts: t.attempts,
            })
            .collect(),
        result_shape: view.result_shape.map(|(rows, cols)| [rows, cols]),
    })
}

/// `POST /v1/jobs/{id}/cancel`, signed by the job's client: the job fails as cancelled, its running attempts are
/// called off and its escrow, less what verified work was paid, goes back.
#[utoipa::path(post, path = "/v1/jobs/{id}/cancel", tag = "jobs", params(("id" = u64, Path)),
    request_body(content = Object, description = "signed request by the job's client, body {}"),
    responses((status = 200, body = api::JobStatus), (status = 401, body = api::ErrorReply),
        (status = 403, body = api::ErrorReply), (status = 404, body = api::ErrorReply),
        (status = 409, body = api::ErrorReply)))]
pub(crate) async fn cancel_job(State(app): Shared, Path(id): Path<u64>, headers: HeaderMap, body: Bytes) -> Response {
    let header = |name: &'static str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let path = format!("/v1/jobs/{id}/cancel");
    let client = match app.replay.verify(header, "POST", &path, &body, now_ms()) {
        Ok(client) => client,
        Err(e) => return error(e.status(), e),
    };
    let cancelled = app.coordinator.with_core(|core, _| match core.cancel(now_ms(), &client, id) {
        Ok(effects) => (Ok(()), effects),
        Err(e) => (Err(e), Vec::new()),
    });
    match cancelled {
        Ok(()) => app.coordinator.flush().await,
        Err(neurolov_core::CancelError::NotYours) => {
            return error(StatusCode::FORBIDDEN, "only the job's client may cancel it");
        }
        // Not in memory: an archived job has ended; otherwise there is no such job.
        Err(neurolov_core::CancelError::NoSuchJob) => {
            return match find_job(&app, id).await {
                Ok(Some((view, _))) if view.client != client => {
                    error(StatusCode::FORBIDDEN, "only the job's client may cancel it")
                }
                Ok(Some(_)) => error(StatusCode::CONFLICT, "the job has already ended"),
                Ok(None) => error(StatusCode::NOT_FOUND, "no such job"),
                Err(response) => response,
            };
        }
        Err(e @ neurolov_core::CancelError::AlreadyEnded) => return error(StatusCode::CONFLICT, e),
    }
    match status_after(&app, id, 0).await {
        Ok(status) => Json(status).into_response(),
        Err(response) => response,
    }
}

/// `GET /v1/jobs/{id}/result`: only the job's client may read its result (a signed GET with an empty body); job ids
/// are sequential, so anyone could otherwise read everyone's results.
#[utoipa::path(get, path = "/v1/jobs/{id}/result", tag = "jobs", params(("id" = u64, Path)), responses((status = 200, description = "the result bytes (signed request (headers x-neurolov-client, x-neurolov-timestamp, x-neurolov-signature; see docs/API.md) by the job's client)", content_type = "application/octet-stream"), (status = 401, body = api::ErrorReply), (status = 403, body = api::ErrorReply), (status = 404, body = api::ErrorReply), (status = 409, body = api::ErrorReply), (status = 410, body = api::ErrorReply)))]
pub(crate) async fn job_result(State(app): Shared, Path(id): Path<u64>, headers: HeaderMap) -> Response {
    let header = |name: &'static str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let path = format!("/v1/jobs/{id}/result");
    let reader = match app.replay.verify(header, "GET", &path, b"", now_ms()) {
        Ok(reader) => reader,
        Err(e) => return error(e.status(), format!("a result is read by its client's signed request: {e}")),
    };
    let (view, result) = match find_job(&app, id).await {
        Ok(Some(found)) => found,
        Ok(None) => return error(StatusCode::NOT_FOUND, "no such job"),
        Err(response) => return response,
    };
    if view.client != reader {
        return error(StatusCode::FORBIDDEN, "only the job's client may read its result");
    }
    match (view.state, result) {
        (_, Some(hashes)) => match crate::store::inline_results(&app.coordinator.db, id).await {
            Ok(inline) => stream_blobs(&app.coordinator.blobs, hashes, &inline),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("reading the result from storage: {e}")),
        },
        (JobState::Failed { reason }, None) => error(StatusCode::CONFLICT, format!("job failed: {reason}")),
        (JobState::Done, None) => error(StatusCode::GONE, "the job's result is no longer kept"),
        (_, None) => error(StatusCode::CONFLICT, "job is not done yet"),
    }
}

/// The blobs `hashes` one after the other as one body (a job's result from its task results), read a chunk at a
/// time: a slow reader holds one chunk, never the whole result (up to 256 MiB). Small results kept in the database
/// come from `inline`.
fn stream_blobs(
    blobs: &crate::blobs::BlobDir,
    hashes: Vec<String>,
    inline: &std::collections::HashMap<String, std::sync::Arc<[u8]>>,
) -> Response {
    let mut len = 0u64;
    for hash in &hashes {
        match inline.get(hash).map(|b| b.len() as u64).or_else(|| neurolov_core::Blobs::size(blobs, hash)) {
            Some(size) => len += size,
            None => return error(StatusCode::GONE, "the job's result is no longer stored"),
        }
    }
    let parts: Vec<BlobSource> = hashes
        .into_iter()
        .map(|hash| match inline.get(&hash).cloned().or_else(|| blobs.staged(&hash)) {
            Some(bytes) => BlobSource::Staged(bytes),
            None => BlobSource::File(blobs.path(&hash)),
        })
        .collect();
    let chunks = futures_util::stream::iter(parts).flat_map(|part| match part {
        BlobSource::Staged(bytes) => {
            futures_util::stream::once(async move { Ok(axum::body::Bytes::from_owner(bytes)) }).boxed()
        }
        BlobSource::File(path) => file_chunks(path).boxed(),
    });
    (
        [("content-type", "application/octet-stream".to_string()), ("content-length", len.to_string())],
        axum::body::Body::from_stream(chunks),
    )
        .into_response()
}

/// Where one blob of a streamed body comes from.
enum BlobSource {
    /// In memory: ordered stored a moment ago (its file not yet written), or read from the database.
    Staged(std::sync::Arc<[u8]>),
    File(Option<std::path::PathBuf>),
}

/// A blob file's bytes in chunks of [`BLOB_CHUNK_BYTES`]; an error if it cannot be opened (collected meanwhile).
fn file_chunks(
    path: Option<std::path::PathBuf>,
) -> impl futures_util::Stream<Item = std::io::Result<axum::body::Bytes>> + Send {
    futures_util::stream::unfold((path, None::<tokio::fs::File>), |(path, file)| async move {
        use tokio::io::AsyncReadExt;
        let mut file = match file {
            Some(f) => f,
            None => match path.as_ref() {
                Some(p) => match tokio::fs::File::open(p).await {
                    Ok(f) => f,
                    Err(e) => return Some((Err(e), (None, None))),
                },
                None => return None,
            },
        };
        let mut buf = vec![0u8; BLOB_CHUNK_BYTES];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(axum::body::Bytes::from(buf)), (path, Some(file))))
            }
            Err(e) => Some((Err(e), (None, None))),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::{FRAME_BURST, FrameBudget, MAX_FRAMES_PER_SECOND};

    /// A node gets a burst and then its rate: frames past it are refused before they reach the core.
    #[test]
    fn a_node_connection_has_a_frame_budget() {
        let start = std::time::Instant::now();
        let mut budget = FrameBudget { tokens: FRAME_BURST, at: start, refused: 0 };
        let tries = 2 * FRAME_BURST as u32;
        let burst = (0..tries).filter(|_| budget.take(start)).count();
        assert_eq!(burst, FRAME_BURST as usize);
        assert_eq!(budget.refused, tries - FRAME_BURST as u32);
        let later = start + std::time::Duration::from_secs(1);
        let refilled = (0..tries).filter(|_| budget.take(later)).count();
        assert_eq!(refilled, MAX_FRAMES_PER_SECOND as usize);
    }
}
