//! The coordinator's IO shell around the deterministic core: the HTTP API under `/v1`, one WebSocket session per
//! node, content-addressed blob files, and the timer that ticks the core. Every decision is the core's; this crate
//! only moves bytes between the network, the disk and [`neurolov_core::Core`], and carries out its effects.
//!
//! Clients authenticate by signing requests with their ed25519 key (see [`auth`]); reads are public.

mod app;
pub mod audit;
pub mod auth;
mod blobs;
pub mod chains;
mod gov;
pub mod hosting;
mod http;
mod keys;
mod money;
mod openai;
pub mod openapi;
mod registry;
pub mod store;
pub mod telegram;
pub mod ton_custody;
pub mod uploads;
mod web;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use neurolov_core::{Config, ConnId, Core, Effect, Verification};
use tokio::sync::{mpsc, oneshot};

use crate::store::StoreMsg;

pub use blobs::BlobDir;

/// Frames queued for one node before it counts as too slow and is disconnected.
pub const MAX_OUTBOUND_FRAMES: usize = 256;
pub use neurolov_protocol::messages::MAX_BLOB_BYTES;
/// Default of [`ServeConfig::max_connections`]: most node connections at once. Each takes a file descriptor (the
/// process's `RLIMIT_NOFILE` must allow it) and about 30 KiB of memory (`scripts/bench-sessions`).
pub const MAX_CONNECTIONS: usize = 10_000;
/// Default of [`ServeConfig::max_connections_per_address`]: node connections one network address may hold at once,
/// so that one host cannot take every slot. 127.0.0.1 and ::1 are exempt, because a TLS proxy in front of the
/// coordinator connects from there (limit per address in the proxy).
pub const MAX_CONNECTIONS_PER_ADDRESS: usize = 64;
/// How old a served `/v1/stats` may be (it is computed at most this often).
pub use money::STATS_MAX_AGE;
/// Default quota of the blob directory.
pub const DEFAULT_BLOB_STORE_BYTES: u64 = 64 << 30;
/// How often the core's timers run.
pub const TICK_INTERVAL: Duration = Duration::from_millis(250);
/// Result checks (blob read, hash, Freivalds) running at once on worker threads; the rest wait in order. The queue
/// itself is bounded by the attempts in flight: each delivered attempt is checked once.
pub const MAX_PARALLEL_VERIFICATIONS: usize = 4;
/// Most result checks run in a row on one worker and settled under one lock.
pub const MAX_CHECKS_PER_BATCH: usize = 64;

/// How the coordinator is run.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    pub data_dir: PathBuf,
    pub core: Config,
    /// Key of the core's randomness, its verification secrets included: 32 bytes from the OS CSPRNG (the CLI draws
    /// them), never a guessable seed.
    pub secret_key: [u8; 32],
    /// Most bytes of blobs (inputs, results) kept on disk.
    pub max_blob_store_bytes: u64,
    /// How often blobs nothing names are collected ([`collect_blobs`]), and how old an unnamed blob must be to go
    /// (an upload the job or result frame naming it has not reached yet must stay).
    pub blob_gc_interval: Duration,
    pub blob_gc_grace: Duration,
    /// How long a finished job's result is kept: then its task results are forgotten and their blobs collected (a
    /// read gets 410). Without a limit the blob store's quota fills for good.
    pub result_retention: Duration,
    /// Most node connections at once (default [`MAX_CONNECTIONS`]).
    pub max_connections: usize,
    /// Most node connections from one address (default [`MAX_CONNECTIONS_PER_ADDRESS`]); a load test from several
    /// loopback addresses raises it.
    pub max_connections_per_address: usize,
    /// Most requests waiting for a job to end at once (`?wait_ms=`; default [`MAX_JOB_WAITERS`]); past it a request
    /// is answered at once.
    pub max_job_waiters: usize,
    /// The pinned models to host (list, tokenize, verify), from `models_dir` (issue 13); none: no inference.
    pub models: Vec<neurolov_models::catalog::Model>,
    pub models_dir: Option<PathBuf>,
    /// Custody on Solana (issue 14): withdrawals are signed and sent there; `None`, they stay requested.
    pub solana: Option<chains::SolanaCustody>,
    /// Custody on TON (issue 14): None leaves withdrawals to TON requested, deposits uncredited.
    pub ton: Option<ton_custody::TonCustody>,
    /// The Telegram bot and Mini App (issue 15): None turns their routes off (404).
    pub telegram: Option<telegram::TelegramConfig>,
}

/// Default of [`ServeConfig::max_job_waiters`].
pub const MAX_JOB_WAITERS: usize = 4_096;

/// Defaults of [`ServeConfig::blob_gc_interval`], [`ServeConfig::blob_gc_grace`] and
/// [`ServeConfig::result_retention`].
pub const BLOB_GC_INTERVAL: Duration = Duration::from_secs(600);
pub const BLOB_GC_GRACE: Duration = Duration::from_secs(3600);
pub const RESULT_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

/// What goes out on a node's socket.
#[derive(Debug)]
pub(crate) enum Outbound {
    Text(String),
    Close(String),
}

/// Shared state of a running coordinator.
pub struct Coordinator {
    core: Mutex<Core>,
    conns: Mutex<HashMap<ConnId, mpsc::Sender<Outbound>>>,
    /// Open node connections per peer address (see [`ServeConfig::max_connections_per_address`]).
    per_address: Mutex<HashMap<std::net::IpAddr, usize>>,
    /// [`ServeConfig::max_connections`] and [`ServeConfig::max_connections_per_address`].
    pub(crate) max_connections: usize,
    pub(crate) max_connections_per_address: usize,
    pub(crate) max_job_waiters: usize,
    next_conn: AtomicU64,
    pub(crate) blobs: BlobDir,
    store: mpsc::UnboundedSender<StoreMsg>,
    /// Delivered results to check off the core's lock (see [`verifier`]).
    verify: mpsc::UnboundedSender<Box<Verification>>,
    /// One permit per result check that may run at once.
    checks: Arc<tokio::sync::Semaphore>,
    /// Node sessions that have not yet told the core they ended.
    sessions: AtomicUsize,
    /// Set once the coordinator is stopping: no new node session opens.
    stopping: AtomicBool,
    /// Read access to the database (the writer task owns the writes).
    pub(crate) db: sqlx::SqlitePool,
    /// Counts jobs finished: a `GET /v1/jobs/{id}?wait_ms=` waits on it instead of polling.
    pub(crate) jobs_finished: tokio::sync::watch::Sender<u64>,
    /// The models this coordinator lists and checks proofs of inference with.
    pub(crate) hosting: Arc<hosting::Hosting>,
    /// Where deposits go on Solana (the custody's address), when custody there is configured.
    pub(crate) solana_deposit_address: Option<String>,
    /// Where deposits to TON go (the custody wallet, user-friendly), when TON custody runs.
    pub(crate) ton_deposit_address: Option<String>,
    /// The Telegram bot, when configured.
    pub(crate) telegram: Option<Arc<telegram::Telegram>>,
    /// The API keys of the OpenAI-compatible routes.
    pub(crate) keys: keys::Keys,
    /// Where published models are put together (`registry.rs`), and the key their verifiers' seeds come from.
    pub(crate) data_dir: PathBuf,
    pub(crate) secret_key: [u8; 32],
}

/// Milliseconds since the Unix epoch: the core's clock (task deadlines are sent to nodes on it).
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The secret every Telegram user's key derives from: `telegram.secret` in the data directory, made on first use
/// (owner-only permissions). Losing it loses the Telegram accounts' keys (their NLOV stays in the ledger, unreachable
/// by them), so it belongs in the backups with the database.
fn telegram_secret(data_dir: &std::path::Path) -> anyhow::Result<[u8; 32]> {
    let path = data_dir.join("telegram.secret");
    if let Ok(bytes) = std::fs::read(&path) {
        return bytes.try_into().map_err(|_| anyhow::anyhow!("{} is not 32 bytes", path.display()));
    }
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    std::fs::create_dir_all(data_dir)?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    std::io::Write::write_all(&mut options.open(&path)?, &secret)?;
    Ok(secret)
}

impl Coordinator {
    /// Where deposits to `chain` go, when this coordinator keeps custody there.
    pub(crate) fn deposit_address(&self, chain: neurolov_protocol::chain::Chain) -> Option<String> {
        match chain {
            neurolov_protocol::chain::Chain::Solana => self.solana_deposit_address.clone(),
            neurolov_protocol::chain::Chain::Ton => self.ton_deposit_address.clone(),
        }
    }

    /// Whether an adapter moves withdrawals to `chain` (custody configured for it).
    pub(crate) fn custody_running(&self, chain: neurolov_protocol::chain::Chain) -> bool {
        self.deposit_address(chain).is_some()
    }

    /// Opens the data directory (blob files and `coordinator.db`), restores the core from it and starts the storage
    /// writer.
    pub async fn open(mut cfg: ServeConfig) -> anyhow::Result<Arc<Coordinator>> {
        let blobs = BlobDir::open(cfg.data_dir.join("blobs"), cfg.max_blob_store_bytes)?;
        let hosting = match (&cfg.models_dir, cfg.models.is_empty()) {
            (Some(dir), false) => {
                let (dir, models, key) = (dir.clone(), cfg.models.clone(), cfg.secret_key);
                tokio::task::spawn_blocking(move || hosting::Hosting::load(&dir, &models, &key)).await??
            }
            _ => hosting::Hosting::default(),
        };
        cfg.core.models = hosting.listings();
        let (store, restored) = store::open(&cfg.data_dir.join("coordinator.db")).await?;
        let pool = store.pool();
        let keys = keys::Keys::load(&pool).await?;
        // Published models after the genesis ones, in the order they were published: their scheduler bits stay.
        cfg.core.models.extend(registry::restore(&pool, &cfg.data_dir, cfg.secret_key, &hosting).await?);
        let (jobs, nodes) = (restored.jobs.len(), restored.nodes.len());
        let (core, effects) = Core::restore_with_key(cfg.core, cfg.secret_key, now_ms(), restored, &blobs);
        if jobs + nodes > 0 {
            tracing::info!(jobs, nodes, "resumed from storage");
        }
        let telegram = match cfg.telegram.take() {
            Some(t) => Some(Arc::new(telegram::Telegram::new(t, telegram_secret(&cfg.data_dir)?)?)),
            None => None,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(store::writer(store, rx));
        let (verify, checks) = mpsc::unbounded_channel();
        let coordinator = Arc::new(Coordinator {
            core: Mutex::new(core),
            conns: Mutex::new(HashMap::new()),
            per_address: Mutex::new(HashMap::new()),
            max_connections: cfg.max_connections,
            max_connections_per_address: cfg.max_connections_per_address,
            max_job_waiters: cfg.max_job_waiters,
            next_conn: AtomicU64::new(1),
            blobs,
            store: tx,
            verify,
            checks: Arc::new(tokio::sync::Semaphore::new(MAX_PARALLEL_VERIFICATIONS)),
            sessions: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
            db: pool,
            jobs_finished: tokio::sync::watch::Sender::new(0),
            hosting: Arc::new(hosting),
            solana_deposit_address: cfg.solana.as_ref().map(|s| {
                use solana_signer::Signer as _;
                s.custody.pubkey().to_string()
            }),
            ton_deposit_address: cfg
                .ton
                .as_ref()
                .map(|t| neurolov_chain::ton::friendly(&t.custody.address, true, false)),
            telegram,
            keys,
            data_dir: cfg.data_dir.clone(),
            secret_key: cfg.secret_key,
        });
        tokio::spawn(verifier(Arc::clone(&coordinator), checks));
        coordinator.apply(effects);
        Ok(coordinator)
    }

    /// Waits until every record emitted so far is committed to storage.
    pub(crate) async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.store.send(StoreMsg::Flush(tx)).is_err() || rx.await.is_err() {
            tracing::error!("storage writer is gone; stopping");
            std::process::exit(70);
        }
    }

    /// Runs `f` on the core and carries out the effects it returns. The durable records are handed to the writer
    /// before the core is unlocked, so they reach the database in the order the core made them (the ledger's log
    /// must replay in exactly that order); the rest is carried out after.
    pub(crate) fn with_core<T>(&self, f: impl FnOnce(&mut Core, &BlobDir) -> (T, Vec<Effect>)) -> T {
        let (value, effects) = {
            let mut core = match self.core.lock() {
                Ok(core) => core,
                Err(poisoned) => poisoned.into_inner(),
            };
            let (value, effects) = f(&mut core, &self.blobs);
            (value, self.persist(effects))
        };
        self.apply(effects);
        value
    }

    /// As [`Coordinator::with_core`] when the core's lock is free now; otherwise `f` comes back, for the caller to
    /// run where waiting on the lock is allowed.
    pub(crate) fn try_with_core<T, F>(&self, f: F) -> Result<T, F>
    where
        F: FnOnce(&mut Core, &BlobDir) -> (T, Vec<Effect>),
    {
        let (value, effects) = {
            let mut core = match self.core.try_lock() {
                Ok(core) => core,
                Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => return Err(f),
            };
            let (value, effects) = f(&mut core, &self.blobs);
            (value, self.persist(effects))
        };
        self.apply(effects);
        Ok(value)
    }

    /// Sends the records among `effects` to the writer as one group and stages the blobs to store (readable at once,
    /// though their files are written only in [`Coordinator::apply`]); returns the other effects.
    fn persist(&self, effects: Vec<Effect>) -> Vec<Effect> {
        let mut records = Vec::new();
        let mut rest = Vec::with_capacity(effects.len());
        for effect in effects {
            match effect {
                Effect::Persist(record) => records.push(record),
                Effect::StoreBlob { hash, bytes } => {
                    self.blobs.stage(&hash, Arc::clone(&bytes));
                    rest.push(Effect::StoreBlob { hash, bytes });
                }
                Effect::Halt { reason } => {
                    // Money is wrong somewhere: stop before anything else is committed.
                    tracing::error!(%reason, "ledger invariant broken; stopping");
                    std::process::exit(70);
                }
                other => rest.push(other),
            }
        }
        if !records.is_empty() && self.store.send(StoreMsg::Records(records)).is_err() {
            // Going on would acknowledge writes that are never made.
            tracing::error!("storage writer is gone; stopping");
            std::process::exit(70);
        }
        rest
    }

    /// Reads the core without changing it.
    pub(crate) fn read_core<T>(&self, f: impl FnOnce(&Core) -> T) -> T {
        let core = match self.core.lock() {
            Ok(core) => core,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&core)
    }

    fn apply(&self, effects: Vec<Effect>) {
        for effect in self.persist(effects) {
            match effect {
                Effect::Send { conn, msg } => {
                    let text = match serde_json::to_string(&msg) {
                        Ok(t) => t,
                        Err(e) => {
                            tracing::error!(conn, error = %e, "could not encode a frame");
                            continue;
                        }
                    };
                    self.push(conn, Outbound::Text(text));
                }
                Effect::Close { conn, reason } => self.push(conn, Outbound::Close(reason)),
                Effect::StoreBlob { hash, bytes } => {
                    if let Err(e) = self.blobs.put_staged(&hash, &bytes) {
                        tracing::error!(%hash, error = %e, "could not store a blob");
                    }
                }
                Effect::Reward { job, task, node, operator, paid_nano, fee_nano, .. } => {
                    tracing::info!(job, task, %node, %operator, paid_nano, fee_nano, "task verified and paid");
                }
                Effect::Slash { node, operator, evidence, slashed_nano } => {
                    tracing::warn!(%node, %operator, task = evidence.task, reason = %evidence.reason, slashed_nano, "fraud proven; stake slashed");
                }
                Effect::JobFinished { job, state } => {
                    tracing::info!(job, ?state, "job finished");
                    self.jobs_finished.send_modify(|n| *n += 1);
                }
                Effect::JobReopened { job, task } => {
                    tracing::warn!(job, task, "job reopened: a provisional result was revoked")
                }
                Effect::Verify(check) => {
                    if self.verify.send(check).is_err() {
                        tracing::error!("result verifier is gone; stopping");
                        std::process::exit(70);
                    }
                }
                Effect::Persist(_) | Effect::Halt { .. } => {}
            }
        }
    }

    fn push(&self, conn: ConnId, out: Outbound) {
        let mut conns = match self.conns.lock() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(tx) = conns.get(&conn)
            && tx.try_send(out).is_err()
        {
            // A node that cannot keep up with its frames is disconnected rather than buffered without bound.
            tracing::warn!(conn, "outbound queue full or closed; dropping connection");
            conns.remove(&conn);
        }
    }

    /// Whether `peer` may open another node connection; counts it if so (given back by [`Coordinator::release_address`]).
    pub(crate) fn admit_address(&self, peer: std::net::IpAddr) -> bool {
        let exempt = matches!(peer, std::net::IpAddr::V4(v4) if v4 == std::net::Ipv4Addr::LOCALHOST)
            || peer == std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST);
        let mut counts = match self.per_address.lock() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        };
        let open = counts.entry(peer).or_insert(0);
        if *open >= self.max_connections_per_address && !exempt {
            return false;
        }
        *open += 1;
        true
    }

    pub(crate) fn release_address(&self, peer: std::net::IpAddr) {
        if let Ok(mut counts) = self.per_address.lock()
            && let Some(open) = counts.get_mut(&peer)
        {
            *open = open.saturating_sub(1);
            if *open == 0 {
                counts.remove(&peer);
            }
        }
    }

    pub(crate) fn open_conn(&self) -> Option<(ConnId, mpsc::Receiver<Outbound>)> {
        let mut conns = match self.conns.lock() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        };
        if conns.len() >= self.max_connections || self.stopping.load(Ordering::SeqCst) {
            return None;
        }
        self.sessions.fetch_add(1, Ordering::SeqCst);
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(MAX_OUTBOUND_FRAMES);
        conns.insert(id, tx);
        Some((id, rx))
    }

    pub(crate) fn close_conn(&self, conn: ConnId) {
        if let Ok(mut conns) = self.conns.lock() {
            conns.remove(&conn);
        }
        self.with_core(|core, _| ((), core.disconnected(now_ms(), conn)));
        self.sessions.fetch_sub(1, Ordering::SeqCst);
    }

    /// Refuses new node sessions and asks every open one to close.
    fn close_sessions(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        let open: Vec<ConnId> = match self.conns.lock() {
            Ok(c) => c.keys().copied().collect(),
            Err(poisoned) => poisoned.into_inner().keys().copied().collect(),
        };
        for conn in open {
            self.push(conn, Outbound::Close("the coordinator is stopping".into()));
        }
    }

    /// The end of a clean stop, once no request can arrive: waits until every node session has told the core it
    /// ended, then for the result checks in flight (those still queued are dropped: a restart checks them again),
    /// then until the writer has committed every record. After it nothing touches the core or the database, so the
    /// runtime can go without cutting an event in half.
    async fn finish(&self) {
        self.close_sessions();
        while self.sessions.load(Ordering::SeqCst) > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if let Ok(running) = self.checks.acquire_many(MAX_PARALLEL_VERIFICATIONS as u32).await {
            running.forget();
        }
        self.checks.close();
        self.flush().await;
    }
}

/// Checks delivered results on worker threads — reading a result blob, hashing it and Freivalds' check take
/// milliseconds on large tiles, and the core's lock must not be held meanwhile — and hands the outcomes back to the
/// core. Checks that queued up meanwhile (a `deliver` frame brings many) run as one batch of up to
/// [`MAX_CHECKS_PER_BATCH`], settled under one lock.
async fn verifier(coordinator: Arc<Coordinator>, mut checks: mpsc::UnboundedReceiver<Box<Verification>>) {
    while let Some(first) = checks.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_CHECKS_PER_BATCH {
            match checks.try_recv() {
                Ok(check) => batch.push(check),
                Err(_) => break,
            }
        }
        // Closed when the coordinator stops.
        let Ok(permit) = Arc::clone(&coordinator.checks).acquire_owned().await else { return };
        let coordinator = Arc::clone(&coordinator);
        tokio::task::spawn_blocking(move || {
            let verified = batch
                .iter()
                .map(|check| {
                    // A check that panics still answers, so its attempt does not wait for the core's timeout.
                    let checker: &dyn neurolov_core::ProofChecker = coordinator.hosting.as_ref();
                    let run = std::panic::AssertUnwindSafe(|| check.run_with(&coordinator.blobs, Some(checker)));
                    std::panic::catch_unwind(run).unwrap_or_else(|_| check.failed("the result's check crashed"))
                })
                .collect();
            coordinator.with_core(|core, _| ((), core.verified_all(now_ms(), verified)));
            drop(permit);
        });
    }
}

/// Serves the coordinator on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, cfg: ServeConfig) -> anyhow::Result<()> {
    serve_until(listener, cfg, std::future::pending()).await
}

/// Deletes the blob files nothing names any more — not the core's state (inputs of known work, results being
/// checked, uploads of live attempts, known answers, evidence), not the database (task results, evidence) — once
/// they are older than `grace`: results of replicas that lost, uploads of failed attempts, inputs nobody submitted.
/// Without it the store's quota filled up for good. Returns the files and bytes collected.
pub async fn collect_blobs(
    coordinator: &Arc<Coordinator>,
    grace: Duration,
    retention: Duration,
) -> anyhow::Result<(usize, u64)> {
    // Results past their retention are forgotten first (by the writer, the database's only writer).
    let (tx, rx) = oneshot::channel();
    let before_ms = now_ms().saturating_sub(retention.as_millis() as u64);
    if coordinator.store.send(StoreMsg::ExpireResults(before_ms, tx)).is_ok()
        && let Ok(expired) = rx.await
        && expired > 0
    {
        tracing::info!(task_results = expired, "results past their retention forgotten");
    }
    // The database first: a result recorded after it was read is still named by the core's state read next.
    let mut keep = store::recorded_blobs(&coordinator.db).await?;
    keep.extend(coordinator.read_core(|c| c.live_blobs()));
    keep.extend(coordinator.hosting.file_blobs());
    let blobs = coordinator.blobs.clone();
    Ok(tokio::task::spawn_blocking(move || blobs.collect(&keep, grace)).await?)
}

/// Serves the coordinator on `listener` until `stop` resolves, then stops cleanly: no new connection, node sessions
/// closed, requests and result checks in flight finished, the timer stopped and every record committed. When it
/// returns, the runtime can be dropped without anything logged as an error (an embedded coordinator, as in
/// `neurolov demo`).
pub async fn serve_until(
    listener: tokio::net::TcpListener,
    cfg: ServeConfig,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let cfg_gc = (cfg.blob_gc_interval.max(Duration::from_millis(10)), cfg.blob_gc_grace, cfg.result_retention);
    let solana = cfg.solana.clone();
    let ton = cfg.ton.clone();
    let coordinator = Coordinator::open(cfg).await?;
    let custody = solana.map(|s| tokio::spawn(chains::run_solana(Arc::clone(&coordinator), s)));
    let ton_custody = ton.map(|t| tokio::spawn(ton_custody::run_ton(Arc::clone(&coordinator), t)));
    let ticker = Arc::clone(&coordinator);
    let timer = tokio::spawn(async move {
        let mut interval = tokio::time::interval(TICK_INTERVAL);
        loop {
            interval.tick().await;
            ticker.with_core(|core, _| ((), core.tick(now_ms())));
        }
    });
    let collector = Arc::clone(&coordinator);
    let (gc_interval, gc_grace, retention) = cfg_gc;
    let gc = tokio::spawn(async move {
        let mut interval = tokio::time::interval(gc_interval);
        interval.tick().await;
        loop {
            interval.tick().await;
            match collect_blobs(&collector, gc_grace, retention).await {
                Ok((0, _)) => {}
                Ok((files, bytes)) => tracing::info!(files, bytes, "collected blobs nothing names"),
                Err(e) => tracing::warn!(error = %e, "blob collection failed"),
            }
        }
    });
    use axum::serve::ListenerExt;
    // Frames are small and latency-bound: send them at once rather than waiting to coalesce (Nagle).
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
    });
    // Node sessions outlive their HTTP upgrade: they are asked to close as soon as the stop comes.
    let closing = Arc::clone(&coordinator);
    let stop = async move {
        stop.await;
        closing.close_sessions();
    };
    let app = openapi::router(Arc::clone(&coordinator)).into_make_service_with_connect_info::<std::net::SocketAddr>();
    let served = axum::serve(listener, app).with_graceful_shutdown(stop).await;
    timer.abort();
    let _ = timer.await;
    gc.abort();
    let _ = gc.await;
    for custody in [custody, ton_custody].into_iter().flatten() {
        custody.abort();
        let _ = custody.await;
    }
    coordinator.finish().await;
    served?;
    Ok(())
}
