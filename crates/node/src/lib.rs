//! The native provider node: connects to a coordinator's WebSocket, answers the challenge with a signed
//! registration, heartbeats, runs the tasks it is given with the kernels' executor (matmul on the backend its
//! calibration chose, a client's WGSL in a sandboxed worker process), commits to each result before uploading it,
//! reconnects with backoff when the connection drops, and on shutdown finishes or hands back its tasks. Inference
//! tasks run on the models it was started with (`infer.rs`): it answers, keeps what its proof commits to, and opens
//! it when the coordinator challenges.

mod infer;

pub use infer::{FetchModel, ModelFetcher};

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use neurolov_kernels::backend::Compute;
use neurolov_kernels::ops::Op;
use neurolov_kernels::untrusted::{JobBuffer, WgslJob};
use neurolov_protocol::envelope::MAX_PAYLOAD_BYTES;
use neurolov_protocol::messages::{
    ClaimedHardware, DataRef, Feature, GiveBack, INLINE_RESULT_BYTES, InlineResult, MAX_BATCH_ITEMS, MAX_BLOB_BYTES,
    MIN_PROTOCOL_VERSION, NodeKind, Task, ToNode, Work, seeded_f32_at,
};
use neurolov_protocol::{Envelope, FromNode, Id, Keypair, PROTOCOL_VERSION};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;

/// First wait before reconnecting; doubles up to [`MAX_BACKOFF`].
pub const MIN_BACKOFF: Duration = Duration::from_millis(250);
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long a shutting-down node waits for its running tasks before handing them back.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// Timeout of one blob transfer.
pub const BLOB_TIMEOUT: Duration = Duration::from_secs(120);
/// Time limit of a client's WGSL kernel on this node.
pub const WGSL_TIMEOUT: Duration = Duration::from_secs(60);
/// Frames queued for the coordinator before task senders wait.
const OUTBOUND_QUEUE: usize = 64;
pub use neurolov_verify::freivalds::{SELF_CHECK_MARGIN, SELF_CHECK_ROUNDS};

/// How a node runs, in human units.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `http://host:port` of the coordinator.
    pub coordinator: String,
    pub keypair: Keypair,
    /// The account paid for this node's work.
    pub operator: Id,
    /// The operator's signature over this node's id (`None` when the node is its own operator).
    pub operator_delegation: Option<neurolov_protocol::Signature>,
    pub price_nano_per_gflop: u64,
    pub slots: u32,
    /// Largest task input this node accepts (bytes of operands and results together).
    pub max_task_bytes: u64,
    /// The binary to start as a sandboxed WGSL worker (`<it> kernel-worker`); `None` refuses WGSL tasks.
    pub worker: Option<PathBuf>,
    /// Demonstrations and tests only: return a wrong result for every task (and still commit to it), so that the
    /// network's verification and slashing can be watched at work.
    pub cheat: bool,
    /// Demonstrations and tests only: forge every inference answer (one value or token changed under the honest
    /// run's root) while computing everything else honestly, attestation included.
    pub cheat_inference: bool,
    /// The models this node serves (claimed at registration; inference tasks for them run here).
    pub models: Vec<Arc<neurolov_models::serve::Provider>>,
    /// Fetches a listed model this node does not hold when it is given a task for it (claimed as
    /// `fetches_models`); `None`: only `models` are served.
    pub fetch_models: Option<infer::ModelFetcher>,
}

/// Runs the node until `shutdown` turns true.
pub async fn run(settings: Settings, compute: Arc<Compute>, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    let http = reqwest::Client::builder().timeout(BLOB_TIMEOUT).build().context("building the http client")?;
    // Decided once: finding adapters takes a moment, and the answer does not change while the node runs.
    let wgsl = runs_wgsl(&settings, &compute);
    tracing::info!(wgsl, "takes client WGSL tasks: {}", if wgsl { "yes" } else { "no (no gpu adapter or no worker)" });
    let mut backoff = MIN_BACKOFF;
    loop {
        if *shutdown.borrow() {
            return Ok(());
        }
        match session(&settings, &compute, wgsl, &http, &mut shutdown).await {
            Ok(Ended::Shutdown) => return Ok(()),
            Ok(Ended::Dropped) => {
                tracing::warn!("coordinator closed the connection; reconnecting");
                backoff = MIN_BACKOFF;
            }
            Err(e) => {
                tracing::warn!(error = format!("{e:#}"), retry_in_ms = backoff.as_millis() as u64, "session failed")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.changed() => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

enum Ended {
    Shutdown,
    Dropped,
}

fn ws_url(coordinator: &str) -> String {
    let base = coordinator.trim_end_matches('/');
    let base = base.strip_prefix("http://").map(|r| format!("ws://{r}")).unwrap_or_else(|| {
        base.strip_prefix("https://").map(|r| format!("wss://{r}")).unwrap_or_else(|| base.to_string())
    });
    format!("{base}/v1/nodes/ws")
}

/// A message waiting for its session nonce and sequence number. Numbers are assigned when the session loop sends
/// it, never earlier: frames made concurrently by several tasks would otherwise reach the coordinator out of order
/// and be refused as replays.
type Pending = Box<dyn FnOnce(String, u64) -> FromNode + Send>;

/// What a task sends the coordinator. Small results and give-backs wait for the session loop to batch them into
/// one signed `deliver` frame (protocol version 2) with whatever else is ready; other messages go alone, in order.
enum Outgoing {
    Result(InlineResult),
    GiveBack(GiveBack),
    Message(Pending),
}

/// Bytes of a `deliver` frame's payload this node fills before it starts another (the envelope's limit, less room
/// for the JSON around the items).
const DELIVER_PAYLOAD_BUDGET: usize = MAX_PAYLOAD_BYTES - 2048;

/// Signs node messages with the session's nonce and increasing sequence numbers.
struct Signer {
    keypair: Keypair,
    session: String,
    seq: AtomicU64,
    /// The protocol version of this session: the lower of the coordinator's and ours.
    version: u32,
}

impl Signer {
    fn frame(&self, make: impl FnOnce(String, u64) -> FromNode) -> String {
        let seq = self.seq.fetch_add(1, Ordering::SeqCst);
        let env = Envelope::seal(&self.keypair, &make(self.session.clone(), seq));
        serde_json::to_string(&env).unwrap_or_default()
    }
}

/// The socket's two halves.
type WsStream = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;
type Sink = futures_util::stream::SplitSink<WsStream, Message>;
type Source = futures_util::stream::SplitStream<WsStream>;

async fn session(
    settings: &Settings,
    compute: &Arc<Compute>,
    wgsl: bool,
    http: &reqwest::Client,
    shutdown: &mut watch::Receiver<bool>,
) -> anyhow::Result<Ended> {
    // Nagle off: every frame is small and waits on an answer.
    let (ws, _) = tokio_tungstenite::connect_async_with_config(ws_url(&settings.coordinator), None, true)
        .await
        .context("connecting")?;
    let (mut sink, mut stream) = ws.split();
    let (signer, heartbeat_ms) = handshake(settings, compute, wgsl, &mut sink, &mut stream).await?;
    let (out_tx, mut out_rx) = mpsc::channel::<Outgoing>(OUTBOUND_QUEUE);
    let mut running = Running::default();
    let seeded = Arc::new(SeededCache::default());
    let proofs = Arc::new(neurolov_models::serve::HeldProofs::default());
    let mut heartbeat = tokio::time::interval(Duration::from_millis(heartbeat_ms.clamp(100, 3_600_000) / 2));
    loop {
        running.retain(|_, h| !h.is_finished());
        tokio::select! {
            _ = heartbeat.tick() => {
                let frame = signer.frame(|session, seq| FromNode::Heartbeat { session, seq });
                sink.send(Message::Text(frame.into())).await.context("heartbeat")?;
            }
            Some(first) = out_rx.recv() => {
                for frame in batch_frames(&signer, first, &mut out_rx) {
                    sink.send(Message::Text(frame.into())).await.context("sending")?;
                }
            }
            incoming = stream.next() => {
                let msg = match incoming {
                    Some(Ok(Message::Text(text))) => match serde_json::from_str::<ToNode>(text.as_str()) {
                        Ok(m) => m,
                        Err(e) => {
                            tracing::warn!(error = %e, "unreadable frame from the coordinator");
                            continue;
                        }
                    },
                    Some(Ok(Message::Close(_))) | None => return Ok(Ended::Dropped),
                    Some(Err(e)) => return Err(e.into()),
                    Some(Ok(_)) => continue,
                };
                let run = || TaskRun {
                    seeded: Arc::clone(&seeded),
                    proofs: Arc::clone(&proofs),
                    settings: settings.clone(),
                    compute: Arc::clone(compute),
                    http: http.clone(),
                    out: out_tx.clone(),
                    version: signer.version,
                };
                on_message(msg, &mut running, run);
            }
            _ = shutdown.changed() => {
                shut_down(&signer, &mut sink, &mut out_rx, &mut running).await;
                return Ok(Ended::Shutdown);
            }
        }
    }
}

/// `first` and whatever else is ready now, as frames in order: consecutive results and give-backs go in one
/// `deliver` frame (up to [`MAX_BATCH_ITEMS`] and [`DELIVER_PAYLOAD_BUDGET`]), any other message alone. Nothing
/// waits for company: a lone result leaves at once.
fn batch_frames(signer: &Signer, first: Outgoing, out_rx: &mut mpsc::Receiver<Outgoing>) -> Vec<String> {
    let mut frames = Vec::new();
    let (mut results, mut failed, mut bytes) = (Vec::new(), Vec::new(), 0usize);
    let flush = |results: &mut Vec<InlineResult>, failed: &mut Vec<GiveBack>, frames: &mut Vec<String>| {
        if results.is_empty() && failed.is_empty() {
            return;
        }
        let (results, failed) = (std::mem::take(results), std::mem::take(failed));
        frames.push(signer.frame(|session, seq| FromNode::Deliver { session, seq, results, failed }));
    };
    let mut next = Some(first);
    while let Some(item) = next.take() {
        let size = match &item {
            Outgoing::Result(r) => r.data.len() + r.result_hash.len() + 64,
            Outgoing::GiveBack(g) => g.reason.len() + 64,
            Outgoing::Message(_) => 0,
        };
        if results.len() + failed.len() >= MAX_BATCH_ITEMS || bytes + size > DELIVER_PAYLOAD_BUDGET {
            flush(&mut results, &mut failed, &mut frames);
            bytes = 0;
        }
        bytes += size;
        match item {
            Outgoing::Result(r) => results.push(r),
            Outgoing::GiveBack(g) => failed.push(g),
            Outgoing::Message(pending) => {
                flush(&mut results, &mut failed, &mut frames);
                bytes = 0;
                frames.push(signer.frame(pending));
            }
        }
        next = out_rx.try_recv().ok();
    }
    flush(&mut results, &mut failed, &mut frames);
    frames
}

/// The session's opening: the coordinator's challenge, the signed registration, its answer. The session's signer
/// and the heartbeat interval the coordinator asks for.
async fn handshake(
    settings: &Settings,
    compute: &Compute,
    wgsl: bool,
    sink: &mut Sink,
    stream: &mut Source,
) -> anyhow::Result<(Arc<Signer>, u64)> {
    let (nonce, version) = match next_message(stream).await? {
        // A coordinator that speaks an older version gets that version (down to the oldest this node speaks).
        ToNode::Challenge { version, nonce } if version >= MIN_PROTOCOL_VERSION => {
            (nonce, version.min(PROTOCOL_VERSION))
        }
        ToNode::Challenge { version, .. } => {
            bail!(
                "coordinator speaks protocol version {version}, this node {MIN_PROTOCOL_VERSION} to {PROTOCOL_VERSION}"
            )
        }
        other => bail!("expected a challenge, got {other:?}"),
    };
    let signer =
        Arc::new(Signer { keypair: settings.keypair.clone(), session: nonce, seq: AtomicU64::new(0), version });
    let mut claimed = claimed_hardware(compute, settings.max_task_bytes, wgsl);
    claimed.models = settings.models.iter().map(|m| m.name.clone()).collect();
    if let Some(fetcher) = &settings.fetch_models {
        // Models fetched in an earlier session are held now.
        claimed.models.extend(fetcher.held());
        claimed.fetches_models = true;
    }
    let register = signer.frame(|session, seq| FromNode::Register {
        version,
        session,
        seq,
        operator: settings.operator,
        kind: NodeKind::Native,
        claimed,
        price_nano_per_gflop: settings.price_nano_per_gflop,
        slots: settings.slots,
        operator_delegation: settings.operator_delegation,
    });
    sink.send(Message::Text(register.into())).await.context("registering")?;
    match next_message(stream).await? {
        ToNode::Registered { heartbeat_interval_ms, node } => {
            tracing::info!(%node, heartbeat_interval_ms, "registered");
            Ok((signer, heartbeat_interval_ms))
        }
        ToNode::Error { code, message } => bail!("registration refused ({code:?}): {message}"),
        other => bail!("expected registration, got {other:?}"),
    }
}

/// What the coordinator says during a session: a task starts (`run` makes its runner), a cancel aborts one.
fn on_message(msg: ToNode, running: &mut Running, run: impl Fn() -> TaskRun) {
    match msg {
        ToNode::Task(task) => {
            running.insert((task.task_id, task.attempt), tokio::spawn(run().run(task)));
        }
        ToNode::Tasks { tasks } => {
            for task in tasks {
                running.insert((task.task_id, task.attempt), tokio::spawn(run().run(task)));
            }
        }
        ToNode::Cancel { task_id, attempt } => {
            if let Some(h) = running.remove(&(task_id, attempt)) {
                h.abort();
            }
            run().proofs.forget((task_id, attempt));
        }
        ToNode::Open { task_id, attempt, seed } => {
            running.insert((task_id, attempt), tokio::spawn(run().open(task_id, attempt, seed)));
        }
        ToNode::Verdict { task_id, attempt, accepted, reason } => {
            tracing::info!(task_id, attempt, accepted, %reason, "verdict");
            run().proofs.forget((task_id, attempt));
        }
        ToNode::Error { code, message } => tracing::warn!(?code, %message, "coordinator refused a frame"),
        ToNode::Challenge { .. } | ToNode::Registered { .. } => {}
    }
}

/// A clean end: what is running gets a bounded time to finish (its frames sent), the rest is handed back as
/// failed, then goodbye.
async fn shut_down(signer: &Signer, sink: &mut Sink, out_rx: &mut mpsc::Receiver<Outgoing>, running: &mut Running) {
    let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
    while running.values().any(|h| !h.is_finished()) && tokio::time::Instant::now() < deadline {
        tokio::select! {
            Some(first) = out_rx.recv() => {
                for frame in batch_frames(signer, first, out_rx) {
                    let _ = sink.send(Message::Text(frame.into())).await;
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    }
    while let Ok(first) = out_rx.try_recv() {
        for frame in batch_frames(signer, first, out_rx) {
            let _ = sink.send(Message::Text(frame.into())).await;
        }
    }
    for ((task_id, attempt), h) in running.drain() {
        if !h.is_finished() {
            h.abort();
            let frame = signer.frame(|session, seq| FromNode::Failed {
                session,
                seq,
                task_id,
                attempt,
                reason: "node shutting down".into(),
            });
            let _ = sink.send(Message::Text(frame.into())).await;
        }
    }
    let bye = signer.frame(|session, seq| FromNode::Goodbye { session, seq });
    let _ = sink.send(Message::Text(bye.into())).await;
    let _ = sink.close().await;
}

/// The tasks of one session; dropping it (the session ended, however) aborts any still running, so an orphaned
/// task does not keep the GPU busy.
#[derive(Default)]
struct Running(HashMap<(u64, u32), tokio::task::JoinHandle<()>>);

impl std::ops::Deref for Running {
    type Target = HashMap<(u64, u32), tokio::task::JoinHandle<()>>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        for h in self.0.values() {
            h.abort();
        }
    }
}

async fn next_message<S>(stream: &mut S) -> anyhow::Result<ToNode>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        match tokio::time::timeout(Duration::from_secs(30), stream.next()).await {
            Err(_) => bail!("coordinator did not answer"),
            Ok(None) | Ok(Some(Ok(Message::Close(_)))) => bail!("connection closed"),
            Ok(Some(Err(e))) => return Err(e.into()),
            Ok(Some(Ok(Message::Text(text)))) => {
                return serde_json::from_str(text.as_str()).context("unreadable frame");
            }
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// Whether this node can run clients' WGSL: that takes its sandbox worker (`Settings::worker`), which opens the
/// machine's default wgpu adapter — the node's own GPU, or, for a node whose kernels run on the CPU, one wgpu finds.
/// Without either the node does not claim WGSL, so it is never given a WGSL task it would fail.
pub fn runs_wgsl(settings: &Settings, compute: &Compute) -> bool {
    settings.worker.is_some() && (compute.gpu().is_some() || !neurolov_kernels::gpu::adapters().is_empty())
}

/// What the node tells the coordinator about its hardware (a claim; attestation measures the truth). The memory claim
/// is the largest task it takes (`max_task_bytes`), so the scheduler never sends it one it would refuse; `wgsl` is
/// [`runs_wgsl`].
pub fn claimed_hardware(compute: &Compute, max_task_bytes: u64, wgsl: bool) -> ClaimedHardware {
    match compute.gpu() {
        Some(gpu) => {
            let r = gpu.report();
            let mut features = Vec::new();
            if r.shader_f16 {
                features.push(Feature::ShaderF16.name().into());
            }
            if r.subgroups {
                features.push(Feature::Subgroups.name().into());
            }
            ClaimedHardware {
                adapter: r.name.clone(),
                backend: r.backend.clone(),
                software: r.software,
                memory_bytes: max_task_bytes,
                features,
                wgsl,
                models: Vec::new(),
                fetches_models: false,
            }
        }
        None => ClaimedHardware {
            adapter: "cpu".into(),
            backend: "cpu".into(),
            software: false,
            memory_bytes: max_task_bytes,
            features: Vec::new(),
            wgsl,
            models: Vec::new(),
            fetches_models: false,
        },
    }
}

/// Whole seeded inputs (offset 0) generated lately, most recently used last: the tasks of one seeded job share their
/// B, which each generated again (16.7M values per task of a 4096³ job: 8 % of the machine's time in
/// `scripts/bench-large`). Tasks that want one at the same time wait for one generation. A block of A (offset > 0)
/// is one task's own and is not kept.
#[derive(Default)]
struct SeededCache(std::sync::Mutex<std::collections::VecDeque<(SeededKey, SeededCell)>>);

/// A seeded input: seed, offset, length.
type SeededKey = (u64, u64, u64);
type SeededCell = Arc<tokio::sync::OnceCell<Arc<[f32]>>>;

/// Inputs [`SeededCache`] keeps, and the largest it keeps (bytes): a node's memory is for its tasks.
const SEEDED_CACHE_ENTRIES: usize = 3;
const SEEDED_CACHE_MAX_BYTES: u64 = 256 << 20;

impl SeededCache {
    /// `len` values of `seed`'s stream from `offset`, generated off the async threads unless cached.
    async fn get(&self, seed: u64, offset: u64, len: u64) -> anyhow::Result<Arc<[f32]>> {
        let generate = move || async move {
            let values = tokio::task::spawn_blocking(move || seeded_f32_at(seed, offset, len as usize)).await?;
            Ok::<Arc<[f32]>, anyhow::Error>(values.into())
        };
        if offset > 0 || len.saturating_mul(4) > SEEDED_CACHE_MAX_BYTES {
            return generate().await;
        }
        let cell = {
            let Ok(mut entries) = self.0.lock() else { return generate().await };
            let key = (seed, offset, len);
            let cell = match entries.iter().position(|(k, _)| *k == key).and_then(|at| entries.remove(at)) {
                Some((_, cell)) => cell,
                None => Arc::default(),
            };
            if entries.len() >= SEEDED_CACHE_ENTRIES {
                entries.pop_front();
            }
            entries.push_back((key, Arc::clone(&cell)));
            cell
        };
        cell.get_or_try_init(generate).await.map(Arc::clone)
    }
}

struct TaskRun {
    /// The session's seeded inputs (see [`SeededCache`]).
    seeded: Arc<SeededCache>,
    /// Answered inference requests kept until their proof is opened (see `infer.rs`).
    proofs: Arc<neurolov_models::serve::HeldProofs>,
    settings: Settings,
    compute: Arc<Compute>,
    http: reqwest::Client,
    out: mpsc::Sender<Outgoing>,
    /// The session's protocol version: from 2, small results and failures go out batched.
    version: u32,
}

impl TaskRun {
    async fn run(self, task: Task) {
        let (task_id, attempt) = (task.task_id, task.attempt);
        match self.execute(&task).await {
            Ok(()) => {}
            Err(e) => {
                tracing::warn!(task_id, attempt, error = %e, "task failed");
                let reason: String = e.to_string().chars().take(neurolov_protocol::messages::MAX_TEXT_BYTES).collect();
                let failed = if self.version >= 2 {
                    Outgoing::GiveBack(GiveBack { task_id, attempt, reason })
                } else {
                    Outgoing::Message(Box::new(move |session, seq| FromNode::Failed {
                        session,
                        seq,
                        task_id,
                        attempt,
                        reason,
                    }))
                };
                let _ = self.out.send(failed).await;
            }
        }
    }

    async fn execute(&self, task: &Task) -> anyhow::Result<()> {
        let mut result = match &task.work {
            Work::Matmul { m, n, k, a, b } => self.matmul([*m, *n, *k], a, b).await?,
            Work::Wgsl { source, entry_point, buffers, dispatch } => {
                self.wgsl(source, entry_point, buffers, *dispatch).await?
            }
            // Cheating, if asked to, is the inference's own (a forged answer under an honest root).
            Work::Infer { model, request } => return self.infer(task, model, request).await,
        };
        if self.settings.cheat {
            // A plausible-looking forgery: one value changed (an exponent bit of the first f32), the rest honest.
            let at = 3.min(result.len().saturating_sub(1));
            if let Some(byte) = result.get_mut(at) {
                *byte ^= 0x40;
            }
        }
        self.deliver(task.task_id, task.attempt, result).await
    }

    /// A matmul block, checked by this node (Freivalds) before it is committed to.
    async fn matmul(&self, [m, n, k]: [u32; 3], a: &DataRef, b: &DataRef) -> anyhow::Result<Vec<u8>> {
        let (m, n, k) = (m as usize, n as usize, k as usize);
        let bytes_needed = 4 * (m as u64 * k as u64 + k as u64 * n as u64 + m as u64 * n as u64);
        if bytes_needed > self.settings.max_task_bytes {
            bail!("task needs {bytes_needed} bytes, this node takes at most {}", self.settings.max_task_bytes);
        }
        let a = self.floats(a).await?;
        let b = self.floats(b).await?;
        let compute = Arc::clone(&self.compute);
        tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<u8>> {
            let ran = compute.run(&Op::Matmul { a: &a, b: &b, m, n, k })?;
            tracing::debug!(backend = %ran.backend, m, n, k, "matmul done");
            self_check(&a, &b, &ran.output, m, n, k).with_context(|| format!("{} backend", ran.backend))?;
            Ok(ran.output.iter().flat_map(|v| v.to_le_bytes()).collect())
        })
        .await?
    }

    /// A client's kernel, run in the sandbox worker process: its read-write buffers in binding order.
    async fn wgsl(
        &self,
        source: &DataRef,
        entry_point: &str,
        buffers: &[neurolov_protocol::messages::WgslBuffer],
        dispatch: [u32; 3],
    ) -> anyhow::Result<Vec<u8>> {
        let Some(worker) = self.settings.worker.clone() else { bail!("this node runs no wgsl") };
        let source = String::from_utf8(self.bytes(source).await?).context("kernel source is not utf-8")?;
        let mut job_buffers = Vec::new();
        for b in buffers {
            let init = match &b.init {
                Some(r) => self.bytes(r).await?,
                None => Vec::new(),
            };
            job_buffers.push(JobBuffer { binding: b.binding, access: b.access, size_bytes: b.size_bytes, init });
        }
        let job = WgslJob { source, entry_point: entry_point.to_string(), buffers: job_buffers, dispatch };
        let features = self.compute.gpu().map(|g| g.report().shader_features()).unwrap_or_default();
        tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<u8>> {
            let mut cmd = std::process::Command::new(worker);
            cmd.arg("kernel-worker");
            let outputs = neurolov_kernels::sandbox::run_isolated(&mut cmd, &job, features, WGSL_TIMEOUT)?;
            Ok(outputs.into_iter().flat_map(|(_, b)| b).collect())
        })
        .await?
    }

    /// A small result (version 2) rides in a signed `deliver` frame, commitment and bytes together. A large one is
    /// committed first — the signed hash binds this node to the result before anyone can see it — then uploaded as
    /// a blob (signed: the coordinator takes uploads only from nodes holding an attempt of that size), then announced.
    async fn deliver(&self, task_id: u64, attempt: u32, result: Vec<u8>) -> anyhow::Result<()> {
        let closed = |_| anyhow!("session closed");
        if self.version >= 2 && result.len() <= INLINE_RESULT_BYTES {
            let inline = InlineResult::new(task_id, attempt, &result);
            return self.out.send(Outgoing::Result(inline)).await.map_err(closed);
        }
        let hash = blake3::hash(&result).to_hex().to_string();
        let committed = hash.clone();
        let commit: Pending =
            Box::new(move |session, seq| FromNode::Commit { session, seq, task_id, attempt, result_hash: committed });
        self.out.send(Outgoing::Message(commit)).await.map_err(closed)?;
        self.upload(result).await.context("uploading the result")?;
        let done: Pending =
            Box::new(move |session, seq| FromNode::Result { session, seq, task_id, attempt, result_hash: hash });
        self.out.send(Outgoing::Message(done)).await.map_err(closed)?;
        Ok(())
    }

    /// Stores `bytes` as a blob on the coordinator (a signed upload: it takes only what an attempt of this node may
    /// store); returns its hash.
    async fn upload(&self, bytes: Vec<u8>) -> anyhow::Result<String> {
        let hash = blake3::hash(&bytes).to_hex().to_string();
        let path = format!("/v1/blobs/{hash}");
        let url = format!("{}{path}", self.settings.coordinator.trim_end_matches('/'));
        let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
        let mut put = self.http.put(url);
        for (header, value) in
            neurolov_protocol::request::sign(&self.settings.keypair, "PUT", &path, now_ms as u64, &bytes)
        {
            put = put.header(header, value);
        }
        let resp = put.body(bytes).send().await?;
        if !resp.status().is_success() {
            bail!("upload refused: {}", resp.status());
        }
        Ok(hash)
    }

    async fn bytes(&self, r: &DataRef) -> anyhow::Result<Vec<u8>> {
        match r {
            DataRef::Seeded { seed, len, offset } => {
                Ok(self.seeded(*seed, *len, *offset).await?.iter().flat_map(|v| v.to_le_bytes()).collect())
            }
            DataRef::Inline { .. } => r.inline_bytes().context("an inline input is not base64 of at most 8 KiB"),
            DataRef::Blob { hash } => {
                let url = format!("{}/v1/blobs/{hash}", self.settings.coordinator.trim_end_matches('/'));
                let resp = self.http.get(url).send().await.context("fetching an input")?;
                if !resp.status().is_success() {
                    bail!("input blob {hash}: {}", resp.status());
                }
                if resp.content_length().is_some_and(|l| l > MAX_BLOB_BYTES) {
                    bail!("input blob {hash} is larger than {MAX_BLOB_BYTES} bytes");
                }
                let body = resp.bytes().await.context("reading an input")?;
                if blake3::hash(&body).to_hex().as_str() != hash {
                    bail!("input blob {hash} does not match its hash");
                }
                Ok(body.to_vec())
            }
        }
    }

    /// A seeded input: `len` values of the seed's stream from `offset` on, refused past this node's size limit.
    async fn seeded(&self, seed: u64, len: u64, offset: u64) -> anyhow::Result<Arc<[f32]>> {
        if len.saturating_mul(4) > self.settings.max_task_bytes {
            bail!("seeded input of {len} values is too large");
        }
        self.seeded.get(seed, offset, len).await
    }

    async fn floats(&self, r: &DataRef) -> anyhow::Result<Arc<[f32]>> {
        if let DataRef::Seeded { seed, len, offset } = r {
            return self.seeded(*seed, *len, *offset).await;
        }
        let bytes = self.bytes(r).await?;
        if bytes.len() % 4 != 0 {
            bail!("input is not a whole number of f32s");
        }
        Ok(bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
    }
}

/// A node commits only to what it computed: its matmul result is checked here with Freivalds (random vectors and
/// exact entries of its own, half the coordinator's tight tolerance) before it is signed, so a faulty GPU or driver (a
/// lost device, a bad row) gives a `failed` task instead of a signed wrong result, which the coordinator would reject
/// or, beyond its rigorous bound, punish as fraud.
pub fn self_check(a: &[f32], b: &[f32], c: &[f32], m: usize, n: usize, k: usize) -> anyhow::Result<()> {
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let report = neurolov_verify::freivalds::check(a, b, c, m, n, k, SELF_CHECK_ROUNDS, seed)?;
    if report.worst_ratio > SELF_CHECK_MARGIN {
        bail!("self-check failed at row {}: {:.3e}× the tolerance", report.worst_row, report.worst_ratio);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use neurolov_protocol::messages::seeded_f32;
    /// The inputs a seeded job's tasks share are generated once — also when tasks ask at the same time — while
    /// blocks of A come and go, and every one is the generator's values.
    #[tokio::test]
    async fn a_shared_seeded_input_is_generated_once() {
        let cache = SeededCache::default();
        let (b, again) = tokio::join!(cache.get(9, 0, 4_096), cache.get(9, 0, 4_096));
        let b = b.unwrap();
        assert!(Arc::ptr_eq(&b, &again.unwrap()), "two tasks asking at once share one generation");
        assert_eq!(&b[..], &seeded_f32_at(9, 0, 4_096)[..]);
        for block in 1..6 {
            let a = cache.get(8, block * 64, 64).await.unwrap();
            assert_eq!(&a[..], &seeded_f32_at(8, block * 64, 64)[..]);
            assert!(Arc::ptr_eq(&b, &cache.get(9, 0, 4_096).await.unwrap()), "block {block}: B generated again");
        }
        for other in 10..13 {
            cache.get(other, 0, 16).await.unwrap();
        }
        assert!(!Arc::ptr_eq(&b, &cache.get(9, 0, 4_096).await.unwrap()), "three newer inputs pushed B out");
    }

    #[test]
    fn the_self_check_passes_honest_products_and_stops_faulty_ones() {
        let (m, n, k) = (32, 24, 40);
        let a = seeded_f32(1, m * k);
        let b = seeded_f32(2, k * n);
        let mut c = vec![0.0f32; m * n];
        neurolov_kernels::cpu::sgemm(&a, &b, &mut c, m, n, k);
        assert!(self_check(&a, &b, &c, m, n, k).is_ok());
        let check = |c: &[f32]| self_check(&a, &b, c, m, n, k).map_err(|e| e.to_string());
        // A bad row, a zeroed result, a NaN: each is caught before anything is signed.
        let mut bad_row = c.clone();
        for v in &mut bad_row[5 * n..6 * n] {
            *v += 0.5;
        }
        assert!(check(&bad_row).is_err_and(|e| e.contains("row 5")), "{:?}", check(&bad_row));
        assert!(check(&vec![0.0; m * n]).is_err());
        let mut nan = c.clone();
        nan[7] = f32::NAN;
        assert!(check(&nan).is_err());
    }
}
