//! `neurolov demo`: the whole network on one machine with no configuration. An embedded coordinator (SQLite in a
//! fresh data directory, development faucet on), N provider nodes as real `neurolov node` processes (GPU where there
//! is one, else software Vulkan or the CPU), optionally K dishonest ones, a client that submits a mix of matmul and
//! WGSL jobs, live progress, and a report: jobs verified, wrong results caught, cheaters slashed, pay per provider,
//! the treasury's fee, measured throughput and the ledger audit's verdict.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use neurolov_coordinator::ServeConfig;
use neurolov_core::Config;
use neurolov_ledger::{NANO_PER_NLOV, format_nlov};
use neurolov_protocol::Keypair;
use neurolov_protocol::messages::seeded_f32;

use neurolov_api as api;

use crate::net::{get_json, runtime, signed_post};

/// Longest the demo waits for nodes to attest and for its jobs to end.
const NODES_TIMEOUT: Duration = Duration::from_secs(120);
const JOBS_TIMEOUT: Duration = Duration::from_secs(240);
/// Longest the demo waits for its coordinator to stop cleanly.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// What each provider stakes, so that fraud has something to slash.
const STAKE_NANO: u64 = 100 * NANO_PER_NLOV;
/// Matmul jobs as (m, n, k), seeded inputs.
const MATMULS: [(u32, u32, u32); 4] = [(512, 512, 512), (1024, 256, 512), (256, 512, 1024), (768, 512, 256)];
/// WGSL jobs: this many u32 outputs each, written by `WGSL_DEMO`.
const WGSL_ELEMENTS: u32 = 4096;
const WGSL_DEMO: &str = "@group(0) @binding(0) var<storage, read_write> out: array<u32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    if (id.x < arrayLength(&out)) {
        out[id.x] = id.x * id.x * 2654435761u + 7u;
    }
}
";

#[derive(Args)]
pub struct DemoArgs {
    /// Honest provider nodes.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Dishonest nodes that return forged results (they are caught and slashed).
    #[arg(long, default_value_t = 0)]
    cheaters: usize,
    /// WGSL jobs besides the four matmul jobs.
    #[arg(long, default_value_t = 2)]
    wgsl_jobs: usize,
    /// Backend of the nodes: auto (measured per kernel), cpu or gpu.
    #[arg(long, default_value = "auto")]
    backend: String,
    /// Where the coordinator keeps its database and blobs (default: a fresh temporary directory).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

struct Procs(Vec<Child>);

/// The embedded coordinator, stopped cleanly when the demo ends however it ends — after the nodes, which are dropped
/// first: its last events are committed before the runtime goes. (Dropping the runtime under a running coordinator
/// cut events off halfway: "storage writer is gone; stopping" and exit status 70.)
struct Embedded<'a> {
    rt: &'a tokio::runtime::Runtime,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Embedded<'_> {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take()
            && self.rt.block_on(async { tokio::time::timeout(STOP_TIMEOUT, server).await }).is_err()
        {
            tracing::warn!("the coordinator did not stop within {STOP_TIMEOUT:?}");
        }
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

struct Provider {
    kp: Keypair,
    cheater: bool,
    /// Wallet balance once staked: pay is what it gains from here.
    start_nano: u64,
}

enum Expect {
    Matmul { m: usize, n: usize, k: usize, seed_a: u64, seed_b: u64 },
    Wgsl,
}

fn key_file(dir: &Path, name: &str, kp: &Keypair) -> anyhow::Result<PathBuf> {
    let path = dir.join(format!("{name}.json"));
    crate::net::write_key(&path, kp)?;
    Ok(path)
}

fn fresh_key() -> anyhow::Result<Keypair> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("no OS randomness: {e}"))?;
    Ok(Keypair::from_seed(seed))
}

pub fn demo(args: DemoArgs) -> anyhow::Result<()> {
    if args.nodes == 0 {
        bail!("--nodes must be at least 1");
    }
    let data = match args.data.clone() {
        Some(d) => d,
        None => std::env::temp_dir().join(format!("neurolov-demo-{}-{}", std::process::id(), crate::net::now_secs())),
    };
    std::fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;
    let rt = runtime()?;
    let quiet = args.json || !std::io::stderr().is_terminal();
    let say = |msg: &str| {
        if !quiet {
            eprintln!("{msg}");
        }
    };
    let (url, _coordinator) = start_coordinator(&rt, &data)?;
    say(&format!("coordinator on {url}, data in {}", data.display()));
    let (procs, providers) = start_providers(&rt, &url, &data, &args)?;
    let started = Instant::now();
    wait_for_attestation(&rt, &url, args.nodes, quiet)?;
    say(&format!("{} nodes attested in {:.1} s", args.nodes, started.elapsed().as_secs_f64()));
    let wgsl_jobs = wgsl_jobs_to_run(&rt, &url, args.wgsl_jobs);
    let client = fresh_key()?;
    let _: api::FaucetReply =
        rt.block_on(signed_post(&url, &client, "/v1/faucet", b"{}".to_vec())).context("funding the client")?;
    let submitted_at = Instant::now();
    let jobs = submit_jobs(&rt, &url, &client, wgsl_jobs)?;
    let states = wait_for_jobs(&rt, &url, &jobs, quiet, submitted_at)?;
    let elapsed_s = submitted_at.elapsed().as_secs_f64();
    let checked = check_results(&rt, &url, &client, &jobs, &states)?;
    // `/v1/stats` may be up to STATS_MAX_AGE old: the report reads it once the last job's settlement is in.
    std::thread::sleep(neurolov_coordinator::STATS_MAX_AGE + Duration::from_millis(50));
    let stats: api::Stats = rt.block_on(get_json(format!("{url}/v1/stats")))?;
    let (provider_rows, cheaters_slashed) = provider_rows(&rt, &url, &providers)?;
    let audit = rt.block_on(neurolov_coordinator::audit::audit(&data.join("coordinator")))?;
    let run = Run { url: &url, data: &data, jobs: jobs.len(), states: &states, wgsl_jobs, elapsed_s };
    let report = report(&args, &run, &checked, &stats, (provider_rows, cheaters_slashed), &audit);
    if args.json {
        println!("{report}");
    } else {
        print_report(&report);
    }
    drop(procs);
    // The same verdict in text and JSON: every job verified with the right result, and the ledger's audit holds.
    if checked.verified != jobs.len() as u64 || checked.wrong_accepted > 0 || !audit.audit_ok {
        bail!(
            "the demo found a problem: {} of {} jobs verified, {} wrong results accepted, ledger audit {}",
            checked.verified,
            jobs.len(),
            checked.wrong_accepted,
            if audit.audit_ok { "ok" } else { "failed" }
        );
    }
    Ok(())
}

/// What a demo run was, for its report.
struct Run<'a> {
    url: &'a str,
    data: &'a Path,
    jobs: usize,
    states: &'a [String],
    wgsl_jobs: usize,
    elapsed_s: f64,
}

/// The demo's report: what was verified, paid and slashed, and whether the ledger's audit holds.
fn report(
    args: &DemoArgs,
    run: &Run,
    checked: &Checked,
    stats: &api::Stats,
    providers: (Vec<serde_json::Value>, usize),
    audit: &neurolov_coordinator::audit::AuditReport,
) -> serde_json::Value {
    serde_json::json!({
        "coordinator": run.url,
        "data_dir": run.data.display().to_string(),
        "jobs_submitted": run.jobs,
        "jobs_verified": checked.verified,
        "jobs_failed": run.states.iter().filter(|s| *s == "failed").count(),
        "wgsl_jobs_skipped": args.wgsl_jobs - run.wgsl_jobs,
        "wrong_results_accepted": checked.wrong_accepted,
        "wrong_results_caught": stats.frauds_proven,
        "cheaters": args.cheaters,
        "cheaters_slashed": providers.1,
        "providers": providers.0,
        "treasury_fee_nano": stats.ledger.fees_nano,
        "slashed_nano": stats.ledger.slashed_nano,
        "paid_to_providers_nano": stats.ledger.paid_to_providers_nano,
        "verified_tflops": stats.verified_tflops,
        "job_tflops": checked.flops / run.elapsed_s / 1e12,
        "elapsed_s": run.elapsed_s,
        "total_supply_nano": audit.total_supply_nano,
        "audit_ok": audit.audit_ok,
        "audit_problems": audit.problems,
    })
}

/// A coordinator in this process on a free local port, its data under `<data>/coordinator`; stopped cleanly when
/// the returned guard drops.
fn start_coordinator<'a>(rt: &'a tokio::runtime::Runtime, data: &Path) -> anyhow::Result<(String, Embedded<'a>)> {
    let core = Config {
        heartbeat_interval_ms: 1_000,
        attestation_size: 128,
        tile_rows: 128,
        faucet_grant_nano: crate::net::DEV_FAUCET_GRANT_NANO,
        ..Config::default()
    };
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).context("binding a local port")?;
    let url = format!("http://{}", listener.local_addr()?);
    let cfg = ServeConfig {
        data_dir: data.join("coordinator"),
        core,
        secret_key: crate::net::random_seed()?,
        max_blob_store_bytes: neurolov_coordinator::DEFAULT_BLOB_STORE_BYTES,
        blob_gc_interval: neurolov_coordinator::BLOB_GC_INTERVAL,
        blob_gc_grace: neurolov_coordinator::BLOB_GC_GRACE,
        result_retention: neurolov_coordinator::RESULT_RETENTION,
        max_connections: neurolov_coordinator::MAX_CONNECTIONS,
        max_connections_per_address: neurolov_coordinator::MAX_CONNECTIONS_PER_ADDRESS,
        max_job_waiters: neurolov_coordinator::MAX_JOB_WAITERS,
        models: Vec::new(),
        models_dir: None,
        solana: None,
        ton: None,
        telegram: None,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = rt.spawn(async move {
        let stop = async {
            let _ = stopped.await;
        };
        if let Err(e) = neurolov_coordinator::serve_until(listener, cfg, stop).await {
            tracing::error!(error = %e, "coordinator stopped");
        }
    });
    Ok((url, Embedded { rt, stop: Some(stop), server: Some(server) }))
}

/// The providers as `neurolov node` processes: each its own operator, funded by the faucet and staked; the last
/// `--cheaters` of them cheat.
fn start_providers(
    rt: &tokio::runtime::Runtime,
    url: &str,
    data: &Path,
    args: &DemoArgs,
) -> anyhow::Result<(Procs, Vec<Provider>)> {
    let exe = std::env::current_exe().context("locating the neurolov binary")?;
    let mut procs = Procs(Vec::new());
    let mut providers = Vec::new();
    for i in 0..args.nodes + args.cheaters {
        let cheater = i >= args.nodes;
        let kp = fresh_key()?;
        rt.block_on(async {
            let _: api::FaucetReply = signed_post(url, &kp, "/v1/faucet", b"{}".to_vec()).await?;
            let body = serde_json::to_vec(&api::StakeRequest { amount_nano: STAKE_NANO, id: 1 })?;
            signed_post::<api::StakeReply>(url, &kp, "/v1/wallet/stake", body).await
        })
        .context("funding a provider")?;
        let start_nano = crate::net::DEV_FAUCET_GRANT_NANO - STAKE_NANO;
        let name = if cheater { format!("cheater{i}") } else { format!("provider{i}") };
        let key = key_file(data, &name, &kp)?;
        // Each node's log goes to `<data>/<name>.log`, where a failed task can be looked into.
        let log_path = data.join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
        let mut cmd = Command::new(&exe);
        cmd.args(["node", "--coordinator", url, "--backend", &args.backend, "--slots", "2"])
            .arg("--key")
            .arg(&key)
            .stdout(Stdio::null())
            .stderr(log);
        if cheater {
            cmd.arg("--cheat");
        }
        procs.0.push(cmd.spawn().context("starting a node")?);
        providers.push(Provider { kp, cheater, start_nano });
    }
    Ok((procs, providers))
}

/// Waits until `honest` nodes are active (attested), within [`NODES_TIMEOUT`].
fn wait_for_attestation(rt: &tokio::runtime::Runtime, url: &str, honest: usize, quiet: bool) -> anyhow::Result<()> {
    let bar = if quiet { ProgressBar::hidden() } else { ProgressBar::new_spinner() };
    bar.set_message(format!("waiting for {honest} honest nodes to pass attestation"));
    let started = Instant::now();
    loop {
        let nodes: Vec<api::NodeEntry> = rt.block_on(get_json(format!("{url}/v1/nodes"))).unwrap_or_default();
        let active = nodes.iter().filter(|n| n.state == "active").count();
        bar.tick();
        if active >= honest {
            bar.finish_and_clear();
            return Ok(());
        }
        if started.elapsed() > NODES_TIMEOUT {
            bail!("only {active} of {honest} nodes passed attestation within {NODES_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// How many of the `wanted` WGSL jobs to run: WGSL tasks go only to nodes that run WGSL (a GPU adapter, even a
/// software one); with none here they could only wait, so they are left out, and the report says so.
fn wgsl_jobs_to_run(rt: &tokio::runtime::Runtime, url: &str, wanted: usize) -> usize {
    let nodes: Vec<api::NodeEntry> = rt.block_on(get_json(format!("{url}/v1/nodes"))).unwrap_or_default();
    let wgsl_nodes = nodes.iter().filter(|n| n.wgsl).count();
    if wgsl_nodes > 0 {
        return wanted;
    }
    eprintln!(
        "no node here can run WGSL (no GPU adapter: no Vulkan driver?); skipping the {wanted} WGSL jobs. \
         ./scripts/demo installs Mesa's software Vulkan driver (lavapipe) first."
    );
    0
}

/// Submits the demo's matmuls and `wgsl_jobs` WGSL jobs: (job id, what its result must be, its FLOPs).
fn submit_jobs(
    rt: &tokio::runtime::Runtime,
    url: &str,
    client: &Keypair,
    wgsl_jobs: usize,
) -> anyhow::Result<Vec<(u64, Expect, f64)>> {
    let mut jobs = Vec::new();
    for (i, &(m, n, k)) in MATMULS.iter().enumerate() {
        let (seed_a, seed_b) = (100 + i as u64, 200 + i as u64);
        let body = serde_json::to_vec(&api::JobRequest::Matmul(api::MatmulJob {
            m,
            n,
            k,
            a: api::Operand::Seed { seed: seed_a },
            b: api::Operand::Seed { seed: seed_b },
            max_price_nano_per_gflop: api::DEFAULT_MAX_PRICE_NANO_PER_GFLOP,
            min_reliability: 0.0,
            idempotency_key: None,
        }))?;
        let api::JobCreated { id, .. } =
            rt.block_on(signed_post(url, client, "/v1/jobs", body)).context("submitting a matmul job")?;
        let flops = 2.0 * f64::from(m) * f64::from(n) * f64::from(k);
        jobs.push((id, Expect::Matmul { m: m as usize, n: n as usize, k: k as usize, seed_a, seed_b }, flops));
    }
    for _ in 0..wgsl_jobs {
        let body = serde_json::to_vec(&api::JobRequest::Wgsl(api::WgslJob {
            source: WGSL_DEMO.into(),
            entry_point: "main".into(),
            buffers: vec![api::BufferSpec {
                binding: 0,
                access: neurolov_protocol::messages::Access::ReadWrite,
                size_bytes: 4 * u64::from(WGSL_ELEMENTS),
                init: None,
            }],
            dispatch: [WGSL_ELEMENTS / 64, 1, 1],
            float_tolerance: None,
            work_mflop: 1,
            max_price_nano_per_gflop: api::DEFAULT_MAX_PRICE_NANO_PER_GFLOP,
            min_reliability: 0.0,
            idempotency_key: None,
        }))?;
        let api::JobCreated { id, .. } =
            rt.block_on(signed_post(url, client, "/v1/jobs", body)).context("submitting a WGSL job")?;
        jobs.push((id, Expect::Wgsl, 1e6));
    }
    Ok(jobs)
}

/// Polls the jobs until each is done or failed (within [`JOBS_TIMEOUT`] of `since`); their final states.
fn wait_for_jobs(
    rt: &tokio::runtime::Runtime,
    url: &str,
    jobs: &[(u64, Expect, f64)],
    quiet: bool,
    since: Instant,
) -> anyhow::Result<Vec<String>> {
    let bar = if quiet { ProgressBar::hidden() } else { ProgressBar::new(jobs.len() as u64) };
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} jobs {msg} [{elapsed}]")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let ended = |s: &String| s == "done" || s == "failed";
    let mut states = vec![String::new(); jobs.len()];
    loop {
        for (i, (id, _, _)) in jobs.iter().enumerate() {
            if !ended(&states[i]) {
                let s: Option<api::JobStatus> = rt.block_on(get_json(format!("{url}/v1/jobs/{id}"))).ok();
                states[i] = s.map_or("", |s| crate::net::state_word(s.state)).to_string();
            }
        }
        let finished = states.iter().filter(|s| ended(s)).count();
        bar.set_position(finished as u64);
        if let Ok(stats) = rt.block_on(get_json::<api::Stats>(format!("{url}/v1/stats"))) {
            bar.set_message(format!(
                "· {} tasks verified · {} frauds caught",
                stats.tasks_verified, stats.frauds_proven
            ));
        }
        if finished == jobs.len() {
            bar.finish_and_clear();
            return Ok(states);
        }
        if since.elapsed() > JOBS_TIMEOUT {
            bail!("jobs still running after {JOBS_TIMEOUT:?}: {states:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// What the client's own check of the results found.
struct Checked {
    verified: u64,
    wrong_accepted: u64,
    /// FLOPs of the jobs verified.
    flops: f64,
}

/// Reads every verified job's result as its client and checks it against what it must be.
fn check_results(
    rt: &tokio::runtime::Runtime,
    url: &str,
    client: &Keypair,
    jobs: &[(u64, Expect, f64)],
    states: &[String],
) -> anyhow::Result<Checked> {
    let mut checked = Checked { verified: 0, wrong_accepted: 0, flops: 0.0 };
    let wgsl_want: Vec<u8> = (0..WGSL_ELEMENTS)
        .flat_map(|i| i.wrapping_mul(i).wrapping_mul(2_654_435_761).wrapping_add(7).to_le_bytes())
        .collect();
    for ((id, expect, flops), state) in jobs.iter().zip(states) {
        if state != "done" {
            continue;
        }
        checked.verified += 1;
        checked.flops += flops;
        let bytes = rt.block_on(crate::net::job_result(url, client, *id))?;
        let right = match expect {
            Expect::Matmul { m, n, k, seed_a, seed_b } => {
                let a = seeded_f32(*seed_a, m * k);
                let b = seeded_f32(*seed_b, k * n);
                let mut want = vec![0.0f32; m * n];
                neurolov_kernels::cpu::sgemm(&a, &b, &mut want, *m, *n, *k);
                bytes.len() == 4 * want.len()
                    && bytes.chunks_exact(4).zip(&want).all(|(g, w)| {
                        (f32::from_le_bytes([g[0], g[1], g[2], g[3]]) - w).abs() <= 1e-3 * (1.0 + w.abs())
                    })
            }
            Expect::Wgsl => bytes[..] == wgsl_want[..],
        };
        if !right {
            checked.wrong_accepted += 1;
        }
    }
    Ok(checked)
}

/// Each provider's row of the report, and how many cheaters lost stake.
fn provider_rows(
    rt: &tokio::runtime::Runtime,
    url: &str,
    providers: &[Provider],
) -> anyhow::Result<(Vec<serde_json::Value>, usize)> {
    let nodes: Vec<api::NodeEntry> = rt.block_on(get_json(format!("{url}/v1/nodes")))?;
    let mut rows = Vec::new();
    let mut cheaters_slashed = 0;
    for p in providers {
        let id = p.kp.id().to_string();
        let wallet: api::Account = rt.block_on(get_json(format!("{url}/v1/accounts/{id}")))?;
        let (balance, staked) = (wallet.balance_nano, wallet.staked_nano);
        if p.cheater && staked < STAKE_NANO {
            cheaters_slashed += 1;
        }
        let tasks = nodes.iter().find(|n| n.id == id).map_or(0, |n| n.tasks_verified);
        rows.push(serde_json::json!({
            "id": id,
            "cheater": p.cheater,
            "tasks_verified": tasks,
            "paid_nano": balance.saturating_sub(p.start_nano),
            "staked_nano": staked,
        }));
    }
    Ok((rows, cheaters_slashed))
}

fn nlov(v: &serde_json::Value) -> String {
    format_nlov(u128::from(v.as_u64().unwrap_or(0)))
}

fn print_report(r: &serde_json::Value) {
    println!("Neurolov demo ({:.1} s of jobs)", r["elapsed_s"].as_f64().unwrap_or(0.0));
    println!(
        "  jobs: {} submitted, {} completed and verified, {} failed; wrong results accepted: {}",
        r["jobs_submitted"], r["jobs_verified"], r["jobs_failed"], r["wrong_results_accepted"]
    );
    if r["wgsl_jobs_skipped"].as_u64().unwrap_or(0) > 0 {
        println!("  ({} WGSL jobs skipped: no node here can run WGSL)", r["wgsl_jobs_skipped"]);
    }
    println!(
        "  fraud: {} wrong results caught; {} of {} cheaters slashed ({} NLOV to the treasury)",
        r["wrong_results_caught"],
        r["cheaters_slashed"],
        r["cheaters"],
        nlov(&r["slashed_nano"])
    );
    println!("  providers:");
    for p in r["providers"].as_array().into_iter().flatten() {
        println!(
            "    {} {:<8} {:>4} tasks verified, paid {} NLOV",
            p["id"].as_str().unwrap_or(""),
            if p["cheater"] == true { "cheater" } else { "honest" },
            p["tasks_verified"],
            nlov(&p["paid_nano"])
        );
    }
    println!("  protocol fee to the treasury: {} NLOV", nlov(&r["treasury_fee_nano"]));
    println!(
        "  throughput: {:.4} TFLOPS verified at attestation, {:.4} TFLOPS delivered on the jobs",
        r["verified_tflops"].as_f64().unwrap_or(0.0),
        r["job_tflops"].as_f64().unwrap_or(0.0)
    );
    println!(
        "  ledger: total supply {} NLOV; audit {}",
        nlov(&r["total_supply_nano"]),
        if r["audit_ok"] == true { "ok" } else { "FAILED" }
    );
}
