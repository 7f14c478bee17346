//! The networked commands `serve`, `keygen` and `node`, and what every client command shares: keys, the runtime,
//! signed requests and typed replies. Each command builds its own tokio runtime; the benchmark and the kernel worker
//! stay synchronous.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use neurolov_api as api;
use neurolov_coordinator::{ServeConfig, auth, now_ms};
use neurolov_core::Config;
use neurolov_kernels::backend::Compute;
use neurolov_protocol::Keypair;

/// The development faucet's grant per account.
pub const DEV_FAUCET_GRANT_NANO: u64 = 1_000 * neurolov_ledger::NANO_PER_NLOV;
/// Default coordinator address.
pub(crate) const DEFAULT_COORDINATOR: &str = "http://127.0.0.1:7070";

#[derive(Args)]
pub struct ServeArgs {
    #[arg(long, default_value = "127.0.0.1:7070")]
    listen: String,
    /// Where blobs (and, later, the database) live; default: the user's data directory.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Heartbeat interval nodes are asked to keep.
    #[arg(long, default_value_t = 30_000)]
    heartbeat_ms: u64,
    /// n of a node's first attestation matmul (n×n·n×n).
    #[arg(long, default_value_t = 256)]
    attestation_size: u32,
    /// Largest n a node's challenges grow to until compute dominates the round trip.
    #[arg(long, default_value_t = 4096)]
    max_attestation_size: u32,
    /// How often blobs nothing names are collected, in ms (tests shorten it).
    #[arg(long, default_value_t = neurolov_coordinator::BLOB_GC_INTERVAL.as_millis() as u64, hide = true)]
    blob_gc_interval_ms: u64,
    /// How old an unnamed blob must be before it is collected, in ms.
    #[arg(long, default_value_t = neurolov_coordinator::BLOB_GC_GRACE.as_millis() as u64, hide = true)]
    blob_gc_grace_ms: u64,
    /// How long a finished job's result is kept, in ms (then reading it gets 410 and its blobs are collected).
    #[arg(long, default_value_t = neurolov_coordinator::RESULT_RETENTION.as_millis() as u64, hide = true)]
    result_retention_ms: u64,
    /// How long a finished job stays in the coordinator's memory before it is served from the database, in ms.
    #[arg(long, default_value_t = Config::default().finished_job_memory_ms, hide = true)]
    finished_job_memory_ms: u64,
    /// Rows of C per matmul task.
    #[arg(long, default_value_t = 256)]
    tile_rows: u32,
    /// Print the address as JSON (`{"listening": URL}`).
    #[arg(long)]
    json: bool,
    /// Development mode: a faucet grants each new account 1,000 NLOV from the ecosystem fund.
    #[arg(long)]
    dev: bool,
    /// Most disk space for blobs (job inputs and results), e.g. `64GiB`; uploads past it get 507.
    #[arg(long, default_value = "64GiB")]
    max_blob_store: String,
    /// Most node connections at once. Each needs a file descriptor: the coordinator raises its soft limit as far
    /// as the hard limit allows and says so when that is too low.
    #[arg(long, default_value_t = neurolov_coordinator::MAX_CONNECTIONS)]
    max_connections: usize,
    /// Most node connections from one address (loopback is exempt); a load test from several 127.0.0.x addresses
    /// raises it.
    #[arg(long, default_value_t = neurolov_coordinator::MAX_CONNECTIONS_PER_ADDRESS)]
    max_connections_per_address: usize,
    /// Most requests waiting for a job to end at once (`?wait_ms=`); past it a request is answered at once.
    #[arg(long, default_value_t = neurolov_coordinator::MAX_JOB_WAITERS)]
    max_job_waiters: usize,
    /// Pinned models to host for inference (listed, tokenized and verified here): names separated by commas, `all`
    /// (those whose files are in the model cache), or `none`.
    #[arg(long, default_value = "all")]
    models: String,
    /// The model cache (default: `$NEUROLOV_MODELS_DIR`, else the user's cache directory).
    #[arg(long)]
    models_dir: Option<PathBuf>,
    #[command(flatten)]
    solana: SolanaArgs,
    #[command(flatten)]
    ton: TonArgs,
    #[command(flatten)]
    withdraw: WithdrawArgs,
    #[command(flatten)]
    telegram: TelegramArgs,
    #[command(flatten)]
    gov: GovArgs,
}

/// Governance's starting parameters (proposals may change them later, above their floors).
#[derive(clap::Args)]
pub struct GovArgs {
    /// Stake a proposer needs, NLOV.
    #[arg(long, default_value = "100000")]
    gov_proposal_threshold: String,
    /// Votes for a proposal needs to pass, NLOV.
    #[arg(long, default_value = "5000000")]
    gov_quorum: String,
    /// Between a proposal and its vote, ms (1 day).
    #[arg(long, default_value_t = 86_400_000)]
    gov_voting_delay_ms: u64,
    /// How long a vote lasts, ms (3 days).
    #[arg(long, default_value_t = 259_200_000)]
    gov_voting_period_ms: u64,
    /// Between passing and executing, ms (2 days).
    #[arg(long, default_value_t = 172_800_000)]
    gov_timelock_ms: u64,
}

impl GovArgs {
    fn config(&self) -> anyhow::Result<neurolov_core::GovernanceConfig> {
        let parse = |flag: &str, text: &str| {
            neurolov_ledger::parse_nlov(text).with_context(|| format!("--{flag} {text:?} is not an amount of NLOV"))
        };
        Ok(neurolov_core::GovernanceConfig {
            proposal_threshold_nano: parse("gov-proposal-threshold", &self.gov_proposal_threshold)?,
            quorum_nano: parse("gov-quorum", &self.gov_quorum)?,
            voting_delay_ms: self.gov_voting_delay_ms,
            voting_period_ms: self.gov_voting_period_ms,
            timelock_ms: self.gov_timelock_ms,
        })
    }
}

/// The Telegram bot and Mini App (issue 15): on when a bot token file is given.
#[derive(clap::Args)]
pub struct TelegramArgs {
    /// A file holding the bot's token (from @BotFather; never logged).
    #[arg(long, requires_all = ["telegram_webhook_secret_file", "public_url"])]
    telegram_bot_token_file: Option<PathBuf>,
    /// A file holding the webhook's secret token (`setWebhook`'s `secret_token`: 1–256 of A-Z a-z 0-9 _ -).
    #[arg(long)]
    telegram_webhook_secret_file: Option<PathBuf>,
    /// This coordinator's public HTTPS address: the bot's button opens `PUBLIC_URL/tg`.
    #[arg(long)]
    public_url: Option<String>,
    /// The Bot API's base URL.
    #[arg(long, default_value = "https://api.telegram.org")]
    telegram_api_base: String,
    /// Telegram's Ed25519 key for initData signatures, hex (default: production; Telegram's test environment has
    /// its own).
    #[arg(long, default_value = neurolov_coordinator::telegram::init_data::TELEGRAM_PUBLIC_KEY)]
    telegram_public_key: String,
    /// How old initData may be, in seconds.
    #[arg(long, default_value_t = neurolov_coordinator::telegram::init_data::DEFAULT_MAX_AGE_S)]
    telegram_init_data_max_age_s: u64,
    /// The script the Mini App loads first.
    #[arg(long, default_value = "https://telegram.org/js/telegram-web-app.js")]
    telegram_web_app_js: String,
}

impl TelegramArgs {
    fn config(&self) -> anyhow::Result<Option<neurolov_coordinator::telegram::TelegramConfig>> {
        let (Some(token_file), Some(secret_file), Some(public_url)) =
            (&self.telegram_bot_token_file, &self.telegram_webhook_secret_file, &self.public_url)
        else {
            return Ok(None);
        };
        let read = |path: &PathBuf| -> anyhow::Result<String> {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            Ok(text.trim().to_string())
        };
        let webhook_secret = read(secret_file)?;
        let valid = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
        if webhook_secret.is_empty() || webhook_secret.len() > 256 || !webhook_secret.chars().all(valid) {
            anyhow::bail!("the webhook secret is 1-256 characters of A-Z, a-z, 0-9, _ and -");
        }
        Ok(Some(neurolov_coordinator::telegram::TelegramConfig {
            bot_token: read(token_file)?,
            webhook_secret,
            api_base: self.telegram_api_base.clone(),
            telegram_public_key: self.telegram_public_key.clone(),
            max_age_s: self.telegram_init_data_max_age_s,
            public_url: public_url.clone(),
            web_app_js: self.telegram_web_app_js.clone(),
        }))
    }
}

/// Withdrawals to chains: limits and the fee, in NLOV (e.g. `0.5`).
#[derive(clap::Args)]
pub struct WithdrawArgs {
    /// What a withdrawal pays the treasury when it lands: set it above the chain's worst cost per withdrawal (a new
    /// token account's rent on Solana, jetton wallet gas on TON) at NLOV's price.
    #[arg(long, default_value = "0.5")]
    withdraw_fee: String,
    /// Smallest withdrawal.
    #[arg(long, default_value = "1")]
    withdraw_min: String,
    /// Largest single withdrawal.
    #[arg(long, default_value = "100000")]
    withdraw_max: String,
    /// Most one account may withdraw in 24 hours.
    #[arg(long, default_value = "250000")]
    withdraw_daily_max: String,
}

impl WithdrawArgs {
    /// (fee, min, max, daily max) in nano-NLOV.
    fn nano(&self) -> anyhow::Result<(u64, u64, u64, u64)> {
        let parse = |flag: &str, text: &str| {
            neurolov_ledger::parse_nlov(text).with_context(|| format!("--{flag} {text:?} is not an amount of NLOV"))
        };
        Ok((
            parse("withdraw-fee", &self.withdraw_fee)?,
            parse("withdraw-min", &self.withdraw_min)?,
            parse("withdraw-max", &self.withdraw_max)?,
            parse("withdraw-daily-max", &self.withdraw_daily_max)?,
        ))
    }
}

/// Custody on TON (issue 14): all three of API, jetton master and custody key, or none (withdrawals to TON then stay
/// requested, deposits uncredited).
#[derive(clap::Args)]
pub struct TonArgs {
    /// A toncenter-style HTTP API (`https://toncenter.com/api/v2`).
    #[arg(long, requires_all = ["ton_jetton_master", "ton_custody_key"])]
    ton_api: Option<String>,
    /// NLOV's jetton master (minter) address.
    #[arg(long)]
    ton_jetton_master: Option<String>,
    /// The custody's key file (a Solana CLI keypair JSON; its wallet is the v4r2 wallet of that key; never logged).
    #[arg(long)]
    ton_custody_key: Option<PathBuf>,
    /// How long a signed withdrawal message stays valid, in seconds.
    #[arg(long, default_value_t = 120)]
    ton_message_ttl_s: u32,
    /// How often open withdrawals to TON are moved forward, in milliseconds.
    #[arg(long, default_value_t = 2_000)]
    ton_poll_ms: u64,
}

impl TonArgs {
    fn custody(&self) -> anyhow::Result<Option<neurolov_coordinator::ton_custody::TonCustody>> {
        let (Some(api_url), Some(master), Some(key)) = (&self.ton_api, &self.ton_jetton_master, &self.ton_custody_key)
        else {
            return Ok(None);
        };
        let jetton_master = neurolov_chain::ton::parse_address(master).context("--ton-jetton-master")?;
        Ok(Some(neurolov_coordinator::ton_custody::TonCustody {
            api_url: api_url.clone(),
            jetton_master,
            custody: std::sync::Arc::new(ton_wallet(&read_key(key)?)?),
            message_ttl_s: self.ton_message_ttl_s.max(1),
            poll_interval: std::time::Duration::from_millis(self.ton_poll_ms.max(10)),
        }))
    }
}

/// The TON wallet (v4r2) of a Neurolov identity (the same ed25519 key).
pub(crate) fn ton_wallet(kp: &Keypair) -> anyhow::Result<neurolov_chain::ton::TonWallet> {
    let bytes: Vec<u8> = serde_json::from_str(&kp.to_solana_json()).context("a keypair")?;
    Ok(neurolov_chain::ton::wallet(&bytes)?)
}

/// Custody on Solana (issue 14): all three of RPC, mint and custody key, or none (withdrawals then stay requested).
#[derive(clap::Args)]
pub struct SolanaArgs {
    /// The Solana JSON-RPC endpoint.
    #[arg(long, requires_all = ["solana_mint", "solana_custody_key"])]
    solana_rpc: Option<String>,
    /// NLOV's SPL mint address.
    #[arg(long)]
    solana_mint: Option<String>,
    /// The custody's keypair file (a Solana CLI keypair JSON; its contents are never logged).
    #[arg(long)]
    solana_custody_key: Option<PathBuf>,
    /// Priority fee of withdrawals, micro-lamports per compute unit.
    #[arg(long, default_value_t = 1_000)]
    solana_priority_micro_lamports: u64,
    /// How often open withdrawals are moved forward, in milliseconds.
    #[arg(long, default_value_t = 2_000)]
    solana_poll_ms: u64,
}

impl SolanaArgs {
    fn custody(&self) -> anyhow::Result<Option<neurolov_coordinator::chains::SolanaCustody>> {
        let (Some(rpc_url), Some(mint), Some(key)) = (&self.solana_rpc, &self.solana_mint, &self.solana_custody_key)
        else {
            return Ok(None);
        };
        let mint = neurolov_chain::solana::parse_address(mint).context("--solana-mint")?;
        let kp = read_key(key)?;
        Ok(Some(neurolov_coordinator::chains::SolanaCustody {
            rpc_url: rpc_url.clone(),
            mint,
            custody: std::sync::Arc::new(solana_keypair(&kp)),
            priority_micro_lamports: self.solana_priority_micro_lamports,
            poll_interval: std::time::Duration::from_millis(self.solana_poll_ms.max(10)),
        }))
    }
}

/// The Solana keypair of a Neurolov identity (the same ed25519 key: its id is its Solana address).
pub(crate) fn solana_keypair(kp: &Keypair) -> neurolov_chain::solana::Keypair {
    // The Solana CLI format is secret ‖ public; the first 32 bytes are the secret seed.
    let json: Vec<u8> = serde_json::from_str(&kp.to_solana_json()).unwrap_or_default();
    let mut seed = [0u8; 32];
    seed.copy_from_slice(&json[..32.min(json.len())]);
    neurolov_chain::solana::keypair(&seed)
}

/// File descriptors a coordinator needs beside its node connections: the database, blob files, HTTP clients.
const RESERVED_FDS: u64 = 1_024;

/// Raises the soft file-descriptor limit towards what `connections` sessions need (never above the hard limit) and
/// warns when the hard limit is lower: past it connections are refused by the kernel, not by the coordinator.
fn raise_fd_limit(connections: usize) {
    let wanted = connections as u64 + RESERVED_FDS;
    match rlimit::increase_nofile_limit(wanted) {
        Ok(got) if got < wanted => tracing::warn!(
            fd_limit = got,
            max_connections = connections,
            "the file-descriptor limit allows about {} node connections (raise the hard limit: ulimit -Hn)",
            got.saturating_sub(RESERVED_FDS)
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "could not read or raise the file-descriptor limit"),
    }
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct NodeArgs {
    #[command(subcommand)]
    status: Option<NodeStatus>,
    #[arg(long, default_value = DEFAULT_COORDINATOR)]
    coordinator: String,
    /// Identity file; default: one kept in the user's data directory (created on first run).
    #[arg(long)]
    key: Option<PathBuf>,
    /// Keypair file of the operator, the account paid for this node's work (and slashed for its fraud); it signs a
    /// delegation to this node. Default: the node is its own operator.
    #[arg(long)]
    operator_key: Option<PathBuf>,
    /// Price asked, in NLOV per TFLOP of verified work (1 NLOV/TFLOP = 10⁶ nano-NLOV per GFLOP on the wire).
    #[arg(long, default_value_t = 1.0)]
    price_nlov_per_tflop: f64,
    /// Tasks run at once.
    #[arg(long, default_value_t = 2)]
    slots: u32,
    /// Largest task this node accepts, e.g. `2GiB`, `512MiB`.
    #[arg(long, default_value = "2GiB")]
    max_task_memory: String,
    /// `auto` (measure GPU and CPU per kernel), `cpu`, or `gpu`.
    #[arg(long, default_value = "auto")]
    backend: String,
    /// Print the node's identity and per-kernel backends as JSON.
    #[arg(long)]
    json: bool,
    /// Demonstrations only: return wrong results (the network catches and slashes this node).
    #[arg(long, hide = true)]
    cheat: bool,
    /// Demonstrations only: forge inference answers, honest otherwise (the proofs catch and slash this node).
    #[arg(long, hide = true)]
    cheat_inference: bool,
    /// Pinned models to serve for inference: names separated by commas, `all` (those in the model cache), or
    /// `none`. Each is checked against its pinned hashes before it is loaded.
    #[arg(long, default_value = "none")]
    models: String,
    /// Also take inference tasks for listed models this node does not hold: fetch the model from the coordinator
    /// (by hash, checked) when the first such task comes, and keep it. Nodes holding a model are asked first.
    #[arg(long)]
    fetch_models: bool,
    /// The model cache (default: `$NEUROLOV_MODELS_DIR`, else the user's cache directory).
    #[arg(long)]
    models_dir: Option<PathBuf>,
    /// Where the models run: `cpu`, `gpu` (wgpu, the inference engine's kernels), or `auto` (the GPU when it is a
    /// hardware one).
    #[arg(long, default_value = "auto")]
    model_backend: String,
}

#[derive(Subcommand)]
enum NodeStatus {
    /// What the coordinator knows of this node.
    Status {
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// What a command that talks to a coordinator on behalf of a key takes.
#[derive(clap::Args)]
pub struct ClientArgs {
    #[arg(long, default_value = DEFAULT_COORDINATOR)]
    pub coordinator: String,
    /// Identity file (a Solana keypair JSON); default: the user's key.
    #[arg(long)]
    pub key: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

/// Seconds since the Unix epoch (for unique directory names).
pub(crate) fn now_secs() -> u64 {
    now_ms() / 1000
}

pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")
}

pub(crate) fn data_dir() -> anyhow::Result<PathBuf> {
    Ok(dirs::data_dir().context("no user data directory; pass --data or --key")?.join("neurolov"))
}

pub(crate) fn random_seed() -> anyhow::Result<[u8; 32]> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("no OS randomness: {e}"))?;
    Ok(seed)
}

/// Writes a key file readable by its owner only — from its creation, not after a chmod that leaves a window.
pub(crate) fn write_key(path: &Path, kp: &Keypair) -> anyhow::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(0o600);
        // An existing file keeps its mode on open: make it the owner's only as well.
        if path.exists() {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        }
    }
    let mut file = options.open(path).with_context(|| format!("writing {}", path.display()))?;
    file.write_all(kp.to_solana_json().as_bytes()).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

pub(crate) fn read_key(path: &Path) -> anyhow::Result<Keypair> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Keypair::from_solana_json(&text).with_context(|| format!("{} is not a usable keypair", path.display()))
}

/// The key at `path`, or the user's default key, created if missing.
pub(crate) fn load_or_create_key(path: Option<PathBuf>) -> anyhow::Result<Keypair> {
    match path {
        Some(p) => read_key(&p),
        None => {
            let p = data_dir()?.join("id.json");
            if p.exists() {
                read_key(&p)
            } else {
                let kp = Keypair::from_seed(random_seed()?);
                write_key(&p, &kp)?;
                tracing::info!(path = %p.display(), id = %kp.id(), "created a new identity");
                Ok(kp)
            }
        }
    }
}

pub fn keygen(out: &Path, force: bool, json: bool) -> anyhow::Result<()> {
    if out.exists() && !force {
        bail!("{} exists; pass --force to overwrite it", out.display());
    }
    let kp = Keypair::from_seed(random_seed()?);
    write_key(out, &kp)?;
    if json {
        println!("{}", serde_json::json!({ "id": kp.id().to_string(), "path": out.display().to_string() }));
    } else {
        println!("{} written to {}", kp.id(), out.display());
    }
    Ok(())
}

pub fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let data = match args.data {
        Some(d) => d,
        None => data_dir()?.join("coordinator"),
    };
    let secret_key = random_seed()?;
    let models_dir = crate::models::cache(args.models_dir.clone())?;
    let models = crate::models::served(&args.models, &models_dir)?;
    let (withdraw_fee_nano, withdraw_min_nano, withdraw_max_nano, withdraw_daily_max_nano) = args.withdraw.nano()?;
    let core = Config {
        governance: args.gov.config()?,
        withdraw_fee_nano,
        withdraw_min_nano,
        withdraw_max_nano,
        withdraw_daily_max_nano,
        heartbeat_interval_ms: args.heartbeat_ms.max(100),
        attestation_size: args.attestation_size.clamp(8, 4096),
        max_attestation_size: args.max_attestation_size.clamp(8, 8192),
        tile_rows: args.tile_rows.max(1),
        faucet_grant_nano: if args.dev { DEV_FAUCET_GRANT_NANO } else { 0 },
        finished_job_memory_ms: args.finished_job_memory_ms,
        ..Config::default()
    };
    runtime()?.block_on(async move {
        let listener =
            tokio::net::TcpListener::bind(&args.listen).await.with_context(|| format!("binding {}", args.listen))?;
        // The first line on stdout is the address, for scripts and tests that listen on port 0.
        let url = format!("http://{}", listener.local_addr()?);
        if args.json {
            println!("{}", serde_json::json!({ "listening": url }));
        } else {
            println!("listening on {url}");
        }
        let max_blob_store_bytes = parse_bytes(&args.max_blob_store)?;
        let cfg = ServeConfig {
            data_dir: data,
            core,
            secret_key,
            max_blob_store_bytes,
            blob_gc_interval: std::time::Duration::from_millis(args.blob_gc_interval_ms),
            blob_gc_grace: std::time::Duration::from_millis(args.blob_gc_grace_ms),
            result_retention: std::time::Duration::from_millis(args.result_retention_ms),
            max_connections: args.max_connections.max(1),
            max_connections_per_address: args.max_connections_per_address.max(1),
            max_job_waiters: args.max_job_waiters,
            models,
            models_dir: Some(models_dir),
            solana: args.solana.custody()?,
            ton: args.ton.custody()?,
            telegram: args.telegram.config()?,
        };
        raise_fd_limit(cfg.max_connections);
        neurolov_coordinator::serve(listener, cfg).await
    })
}

fn parse_bytes(s: &str) -> anyhow::Result<u64> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len()));
    let n: f64 = num.trim().parse().with_context(|| format!("not a size: {s}"))?;
    let mult = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1u64,
        "kib" | "k" => 1 << 10,
        "mib" | "m" => 1 << 20,
        "gib" | "g" => 1 << 30,
        other => bail!("unknown size unit {other}"),
    };
    Ok((n * mult as f64) as u64)
}

pub fn node(args: NodeArgs) -> anyhow::Result<()> {
    if let Some(NodeStatus::Status { client: ClientArgs { coordinator, key, json } }) = args.status {
        return node_status(&coordinator, key, json);
    }
    let keypair = load_or_create_key(args.key)?;
    let (operator, operator_delegation) = match &args.operator_key {
        Some(path) => {
            let op = read_key(path)?;
            (op.id(), Some(neurolov_protocol::identity::delegate(&op, &keypair.id())))
        }
        None => (keypair.id(), None),
    };
    if !(args.price_nlov_per_tflop.is_finite() && args.price_nlov_per_tflop >= 0.0) {
        bail!("--price-nlov-per-tflop must be a non-negative number");
    }
    let compute = match args.backend.as_str() {
        "cpu" => Compute::new(None),
        "gpu" => Compute::new(Some(neurolov_kernels::gpu::GpuExecutor::open_default()?)),
        "auto" => {
            let mut c = Compute::open()?;
            c.calibrate();
            c
        }
        other => bail!("--backend must be auto, cpu or gpu (got {other})"),
    };
    for (kernel, backend) in compute.plan() {
        tracing::info!(%kernel, %backend, "kernel backend");
    }
    let settings = neurolov_node::Settings {
        coordinator: args.coordinator.clone(),
        keypair,
        operator,
        operator_delegation,
        // NLOV per TFLOP = 10⁹ nano-NLOV per 10³ GFLOP = 10⁶ nano-NLOV per GFLOP.
        price_nano_per_gflop: (args.price_nlov_per_tflop * 1e6).round() as u64,
        slots: args.slots.clamp(1, neurolov_protocol::messages::MAX_SLOTS),
        max_task_bytes: parse_bytes(&args.max_task_memory)?,
        worker: std::env::current_exe().ok(),
        cheat: args.cheat,
        cheat_inference: args.cheat_inference,
        models: crate::models::providers(
            &args.models,
            args.models_dir.clone(),
            &args.model_backend,
            &compute,
            &args.coordinator,
        )?,
        fetch_models: if args.fetch_models {
            Some(crate::models::fetcher(&args.coordinator, args.models_dir.clone(), &args.model_backend, &compute)?)
        } else {
            None
        },
    };
    if args.json {
        let plan: serde_json::Map<String, serde_json::Value> =
            compute.plan().iter().map(|(k, b)| (k.name().to_string(), b.to_string().into())).collect();
        println!(
            "{}",
            serde_json::json!({
                "node": settings.keypair.id().to_string(),
                "operator": settings.operator.to_string(),
                "coordinator": settings.coordinator,
                "backends": plan,
            })
        );
    } else {
        println!("node {} (operator {}) serving {}", settings.keypair.id(), settings.operator, settings.coordinator);
    }
    runtime()?.block_on(async move {
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown_signal().await;
            tracing::info!("shutting down: finishing running tasks");
            let _ = tx.send(true);
        });
        neurolov_node::run(settings, Arc::new(compute), rx).await
    })
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

fn node_status(coordinator: &str, key: Option<PathBuf>, json: bool) -> anyhow::Result<()> {
    let id = load_or_create_key(key)?.id().to_string();
    let nodes: Vec<api::NodeEntry> = runtime()?
        .block_on(get_json(format!("{}/v1/nodes", coordinator.trim_end_matches('/'))))
        .context("asking the coordinator")?;
    let me = nodes.into_iter().find(|n| n.id == id);
    match (me, json) {
        (Some(n), true) => println!("{}", serde_json::to_string(&n)?),
        (Some(n), false) => println!(
            "{id}: {} on {}, {:.2} GFLOP/s verified, reliability {:.3}, {} tasks verified",
            n.state, n.adapter, n.gflops_verified, n.reliability, n.tasks_verified
        ),
        (None, true) => println!("{}", serde_json::json!({ "id": id, "state": "unknown" })),
        (None, false) => println!("{id} is not known to {coordinator}"),
    }
    Ok(())
}

/// POSTs `body` to `path` signed with `kp`; the reply as the API's type for it, or its error as an error.
/// One HTTP client for the process: its connections are kept and reused (a job's submit, waits and result read
/// share one), instead of a new connection per request.
pub(crate) fn http() -> &'static reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT.get_or_init(reqwest::Client::new)
}

pub(crate) async fn signed_post<T: serde::de::DeserializeOwned>(
    base: &str,
    kp: &Keypair,
    path: &str,
    body: Vec<u8>,
) -> anyhow::Result<T> {
    let mut req = http().post(format!("{base}{path}")).body(body.clone());
    // The signature covers the path, not the query (`?wait_ms=` only says how long to wait for the reply).
    let signed_path = path.split('?').next().unwrap_or(path);
    for (h, v) in auth::sign(kp, "POST", signed_path, now_ms(), &body) {
        req = req.header(h, v);
    }
    let resp = req.header("content-type", "application/json").send().await.with_context(|| format!("POST {path}"))?;
    reply(resp, &format!("POST {path}")).await
}

/// A reply's body as `T`, or the API's error as an error.
async fn reply<T: serde::de::DeserializeOwned>(resp: reqwest::Response, what: &str) -> anyhow::Result<T> {
    let status = resp.status();
    let bytes = resp.bytes().await.with_context(|| format!("{what}: reading the reply"))?;
    if !status.is_success() {
        let refused = serde_json::from_slice::<neurolov_api::ErrorReply>(&bytes).map(|e| e.error).unwrap_or_default();
        bail!("{status}: {refused}");
    }
    serde_json::from_slice(&bytes).with_context(|| format!("{what}: the reply is not what the API promises"))
}

/// GETs `path` signed with `kp` (an empty body); the reply as the API's type for it.
pub(crate) async fn signed_get<T: serde::de::DeserializeOwned>(
    base: &str,
    kp: &Keypair,
    path: &str,
) -> anyhow::Result<T> {
    let mut req = http().get(format!("{base}{path}"));
    for (h, v) in auth::sign(kp, "GET", path, now_ms(), b"") {
        req = req.header(h, v);
    }
    let resp = req.send().await.with_context(|| format!("GET {path}"))?;
    reply(resp, &format!("GET {path}")).await
}

/// A finished job's result, read with its client's signed request.
pub(crate) async fn job_result(base: &str, kp: &Keypair, id: u64) -> anyhow::Result<Vec<u8>> {
    let path = format!("/v1/jobs/{id}/result");
    let mut req = http().get(format!("{base}{path}"));
    for (h, v) in auth::sign(kp, "GET", &path, now_ms(), b"") {
        req = req.header(h, v);
    }
    let resp = req.send().await.with_context(|| format!("GET {path}"))?;
    if !resp.status().is_success() {
        let status = resp.status();
        let refused = resp.json::<neurolov_api::ErrorReply>().await.map(|e| e.error).unwrap_or_default();
        bail!("{status}: {refused}");
    }
    Ok(resp.bytes().await?.to_vec())
}

/// GETs `url`; the reply as the API's type for it.
pub(crate) async fn get_json<T: serde::de::DeserializeOwned>(url: String) -> anyhow::Result<T> {
    let resp = http().get(&url).send().await.with_context(|| format!("GET {url}"))?;
    reply(resp, &format!("GET {url}")).await
}

/// The word for a job's state.
pub(crate) fn state_word(state: api::JobState) -> &'static str {
    match state {
        api::JobState::Running => "running",
        api::JobState::Done => "done",
        api::JobState::Failed => "failed",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // A panic is the failure report.

    /// A key file is its owner's only, whether it is new or written over one that was not.
    #[cfg(unix)]
    #[test]
    fn key_files_are_readable_by_their_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("neurolov-keyfile-{}", std::process::id()));
        let path = dir.join("sub").join("key.json");
        let kp = neurolov_protocol::Keypair::from_seed([3; 32]);
        super::write_key(&path, &kp).unwrap();
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        super::write_key(&path, &kp).unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(super::read_key(&path).unwrap().id(), kp.id());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
