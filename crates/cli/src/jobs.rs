//! `neurolov job`: a client of the coordinator's job API. Matmul operands come from seeds or from the client's own
//! files (NumPy `.npy`, or raw little-endian f32 with `--matmul MxNxK`), uploaded as signed blobs; a WGSL job comes
//! from a kernel file with its buffers (`--buffer BINDING:ACCESS:FILE|SIZE`), entry point and dispatch. Results are
//! written raw or, for a matmul, as `.npy`. Every reply is read as its `neurolov-api` type.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use base64::Engine;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use neurolov_api as api;
use neurolov_coordinator::{auth, now_ms};
use neurolov_protocol::Keypair;
use neurolov_protocol::messages::Access;

use crate::net::{DEFAULT_COORDINATOR, get_json, job_result, load_or_create_key, runtime, signed_post, state_word};
use crate::npy;

/// How often `job submit --wait` polls.
const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// Longest `job submit --wait` waits.
const MAX_WAIT: Duration = Duration::from_secs(3600);

#[derive(Subcommand)]
pub enum JobCommand {
    /// Submit a job — a matmul (seeded operands or your own matrices) or your own WGSL kernel — and optionally wait.
    Submit(Box<SubmitArgs>),
    /// A job's state and its tasks.
    Status {
        #[arg(long, default_value = DEFAULT_COORDINATOR)]
        coordinator: String,
        id: u64,
        #[arg(long)]
        json: bool,
    },
    /// Download a finished job's result; only its client may. `--out X.npy` writes a matmul's C as a NumPy matrix,
    /// any other name the raw bytes (little-endian f32 row-major for a matmul; the read-write buffers for WGSL).
    Result {
        #[arg(long, default_value = DEFAULT_COORDINATOR)]
        coordinator: String,
        /// The job's client identity file; default: the user's key.
        #[arg(long)]
        key: Option<PathBuf>,
        id: u64,
        #[arg(long)]
        out: PathBuf,
    },
    /// Sync latency, end to end: submits one-task seeded matmul jobs one after another, each waited for and its
    /// result read before the next, and prints the percentiles of submit → verified result in hand.
    Latency {
        #[arg(long, default_value = DEFAULT_COORDINATOR)]
        coordinator: String,
        #[arg(long)]
        key: Option<PathBuf>,
        /// How many jobs (at most 100,000).
        #[arg(long, default_value_t = 1000)]
        jobs: usize,
        /// Each job's shape, `MxNxK` (one task while M is at most the coordinator's tile rows).
        #[arg(long, default_value = "1x1x1")]
        matmul: String,
        #[arg(long)]
        json: bool,
    },
    /// The newest jobs the coordinator holds, newest first.
    List {
        #[arg(long, default_value = DEFAULT_COORDINATOR)]
        coordinator: String,
        /// Only the jobs of this key (default: everyone's).
        #[arg(long)]
        mine: bool,
        #[arg(long)]
        key: Option<PathBuf>,
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// Cancel a running job of yours: its attempts are called off and its unspent escrow comes back.
    Cancel {
        #[arg(long, default_value = DEFAULT_COORDINATOR)]
        coordinator: String,
        #[arg(long)]
        key: Option<PathBuf>,
        id: u64,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
pub struct SubmitArgs {
    #[arg(long, default_value = DEFAULT_COORDINATOR)]
    coordinator: String,
    /// Client identity file; default: the user's key.
    #[arg(long)]
    key: Option<PathBuf>,
    /// A matmul's shape as MxNxK (needed for seeded or raw operands; read from `.npy` files otherwise).
    #[arg(long)]
    matmul: Option<String>,
    /// A's file: `.npy` (float32 or float64, M×K) or raw little-endian f32, row-major.
    #[arg(long)]
    a: Option<PathBuf>,
    /// B's file (K×N), as for `--a`.
    #[arg(long)]
    b: Option<PathBuf>,
    #[arg(long, default_value_t = 1)]
    seed_a: u64,
    #[arg(long, default_value_t = 2)]
    seed_b: u64,
    /// A WGSL kernel file: submits a WGSL job instead of a matmul.
    #[arg(long)]
    kernel: Option<PathBuf>,
    /// The kernel's entry point.
    #[arg(long, default_value = "main")]
    entry: String,
    /// Workgroups to dispatch, X,Y,Z.
    #[arg(long, default_value = "1,1,1")]
    dispatch: String,
    /// A kernel buffer, BINDING:ACCESS:FILE or BINDING:ACCESS:SIZE (ACCESS is uniform, read or read_write; a FILE
    /// is uploaded as the buffer's contents, a SIZE in bytes starts zeroed). Repeat for each binding.
    #[arg(long)]
    buffer: Vec<String>,
    /// Declared work of a WGSL job, in MFLOP (for scheduling and pay).
    #[arg(long, default_value_t = 1)]
    work_mflop: u64,
    /// Relative tolerance for a WGSL job's float outputs (default: replicas must agree bit for bit).
    #[arg(long)]
    float_tolerance: Option<f32>,
    /// Most you pay, in nano-NLOV per GFLOP.
    #[arg(long, default_value_t = api::DEFAULT_MAX_PRICE_NANO_PER_GFLOP)]
    max_price: u64,
    /// Your name for this submission: submitting again under it gets the same job back.
    #[arg(long)]
    idempotency_key: Option<String>,
    /// Wait for the job to end, with a progress bar.
    #[arg(long)]
    wait: bool,
    #[arg(long)]
    json: bool,
}

pub fn job(cmd: JobCommand) -> anyhow::Result<()> {
    match cmd {
        JobCommand::Submit(args) => submit(*args),
        JobCommand::Status { coordinator, id, json } => {
            let status: api::JobStatus =
                runtime()?.block_on(get_json(format!("{}/v1/jobs/{id}", base(&coordinator))))?;
            if json {
                println!("{}", serde_json::to_string(&status)?);
            } else {
                println!(
                    "job {id}: {} ({}/{} tasks verified){}",
                    state_word(status.state),
                    status.tasks_done,
                    status.tasks_total,
                    status.reason.map(|r| format!(": {r}")).unwrap_or_default()
                );
            }
            Ok(())
        }
        JobCommand::Result { coordinator, key, id, out } => result(&coordinator, key, id, &out),
        JobCommand::Latency { coordinator, key, jobs, matmul, json } => {
            latency(base(&coordinator), &load_or_create_key(key)?, jobs, &matmul, json)
        }
        JobCommand::List { coordinator, mine, key, limit, json } => {
            list(&coordinator, mine.then_some(key), limit, json)
        }
        JobCommand::Cancel { coordinator, key, id, json } => {
            let kp = load_or_create_key(key)?;
            let status: api::JobStatus = runtime()?
                .block_on(signed_post(base(&coordinator), &kp, &format!("/v1/jobs/{id}/cancel"), b"{}".to_vec()))
                .context("cancel refused")?;
            if json {
                println!("{}", serde_json::to_string(&status)?);
            } else {
                println!("job {id} {}", status.reason.as_deref().unwrap_or(state_word(status.state)));
            }
            Ok(())
        }
    }
}

fn base(coordinator: &str) -> &str {
    coordinator.trim_end_matches('/')
}

fn submit(args: SubmitArgs) -> anyhow::Result<()> {
    let kp = load_or_create_key(args.key.clone())?;
    let url = base(&args.coordinator).to_string();
    let rt = runtime()?;
    let request = match &args.kernel {
        Some(kernel) => wgsl_request(&rt, &url, &kp, kernel, &args)?,
        None => matmul_request(&rt, &url, &kp, &args)?,
    };
    let body = serde_json::to_vec(&request)?;
    let api::JobCreated { id, .. } = rt.block_on(signed_post(&url, &kp, "/v1/jobs", body)).context("job refused")?;
    if !args.wait {
        if args.json {
            println!("{}", serde_json::to_string(&api::JobCreated { id, status: None, result: None })?);
        } else {
            println!("job {id} submitted");
        }
        return Ok(());
    }
    let status = rt.block_on(wait_for(&url, id, args.json))?;
    if args.json {
        println!("{}", serde_json::to_string(&status)?);
    } else {
        println!("job {id} {}", state_word(status.state));
    }
    if status.state != api::JobState::Done {
        bail!("job {id} did not complete: {}", status.reason.unwrap_or_default());
    }
    Ok(())
}

/// Most jobs one `job latency` run submits.
const MAX_LATENCY_JOBS: usize = 100_000;

/// `job latency`: one-task jobs in a row, each timed from its submit to its verified result read back.
fn latency(url: &str, kp: &Keypair, jobs: usize, shape: &str, json: bool) -> anyhow::Result<()> {
    if jobs == 0 || jobs > MAX_LATENCY_JOBS {
        bail!("--jobs must be 1..={MAX_LATENCY_JOBS}");
    }
    let [m, n, k] = parse_dims(shape)?;
    let rt = runtime()?;
    let mut micros = Vec::with_capacity(jobs);
    // Per phase: submitted and reported done (one request), any further wait, result read.
    let mut phases: [Vec<u64>; 3] = Default::default();
    for i in 0..jobs {
        let request = api::JobRequest::Matmul(api::MatmulJob {
            m,
            n,
            k,
            a: api::Operand::Seed { seed: 2 * i as u64 + 1 },
            b: api::Operand::Seed { seed: 2 * i as u64 + 2 },
            max_price_nano_per_gflop: api::DEFAULT_MAX_PRICE_NANO_PER_GFLOP,
            min_reliability: 0.0,
            idempotency_key: None,
        });
        let started = std::time::Instant::now();
        let lap = |phase: &mut Vec<u64>, since: &mut std::time::Instant| {
            phase.push(since.elapsed().as_micros() as u64);
            *since = std::time::Instant::now();
        };
        rt.block_on(async {
            let mut since = started;
            let body = serde_json::to_vec(&request)?;
            // Submitted and waited for in one request: its reply comes once the job ended and is durable.
            let path = format!("/v1/jobs?wait_ms={}", api::MAX_JOB_WAIT_MS);
            let created: api::JobCreated = signed_post(url, kp, &path, body).await.context("job refused")?;
            lap(&mut phases[0], &mut since);
            let id = created.id;
            let status = match created.status.filter(|s| s.state.is_final()) {
                Some(status) => status,
                None => wait_for(url, id, true).await?,
            };
            if status.state != api::JobState::Done {
                bail!("job {id} did not complete: {}", status.reason.unwrap_or_default());
            }
            lap(&mut phases[1], &mut since);
            // A small result comes with the reply; a larger one is read as usual.
            let bytes = match created.result {
                Some(data) => base64::engine::general_purpose::STANDARD.decode(data).context("the reply's result")?,
                None => job_result(url, kp, id).await?,
            };
            ensure!(bytes.len() == 4 * m as usize * n as usize, "job {id}: a result of {} bytes", bytes.len());
            lap(&mut phases[2], &mut since);
            Ok(())
        })?;
        micros.push(started.elapsed().as_micros() as u64);
    }
    let (p50, p99, max) = (percentile(&mut micros, 0.5), percentile(&mut micros, 0.99), percentile(&mut micros, 1.0));
    let [submit, done, read] = phases.map(|mut p| percentile(&mut p, 0.5));
    if json {
        let figures = serde_json::json!({ "jobs": jobs, "p50_ms": p50, "p99_ms": p99, "max_ms": max,
            "p50_submit_ms": submit, "p50_until_done_ms": done, "p50_result_read_ms": read });
        println!("{figures}");
    } else {
        println!("{jobs} one-task jobs, submit to verified result: p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms");
        println!(
            "  p50 by phase: submitted and done {submit:.2} ms, further wait {done:.2} ms, result read {read:.2} ms"
        );
    }
    Ok(())
}

/// The `q` quantile of `micros`, in milliseconds.
fn percentile(micros: &mut [u64], q: f64) -> f64 {
    micros.sort_unstable();
    micros.get(((micros.len().saturating_sub(1)) as f64 * q).round() as usize).map_or(0.0, |&us| us as f64 / 1000.0)
}

/// Waits for a job to end — long polls of the coordinator, answered as soon as it ends — with a progress bar on a
/// terminal.
async fn wait_for(url: &str, id: u64, json: bool) -> anyhow::Result<api::JobStatus> {
    let bar = if json || !std::io::stderr().is_terminal() { ProgressBar::hidden() } else { ProgressBar::new(100) };
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}% {msg} [{elapsed}]")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    // A terminal's progress bar wants news every second; a script only the end.
    let wait_ms = if bar.is_hidden() { 10_000 } else { 1_000 };
    let started = std::time::Instant::now();
    loop {
        let asked = std::time::Instant::now();
        let status: api::JobStatus = get_json(format!("{url}/v1/jobs/{id}?wait_ms={wait_ms}")).await?;
        bar.set_position((status.progress * 100.0) as u64);
        bar.set_message(format!("job {id} {}", state_word(status.state)));
        if status.state.is_final() {
            bar.finish_and_clear();
            return Ok(status);
        }
        if started.elapsed() > MAX_WAIT {
            bail!("job {id} still running after {} s", MAX_WAIT.as_secs());
        }
        if asked.elapsed() < POLL_INTERVAL {
            // A coordinator that does not wait (an older one) is polled, not hammered.
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}

/// A matmul: seeded operands, or the client's files uploaded as blobs; the shape from `--matmul` or the `.npy`s.
fn matmul_request(
    rt: &tokio::runtime::Runtime,
    url: &str,
    kp: &Keypair,
    args: &SubmitArgs,
) -> anyhow::Result<api::JobRequest> {
    let dims = args.matmul.as_deref().map(parse_dims).transpose()?;
    let (a, b, [m, n, k]) = match (&args.a, &args.b) {
        (None, None) => {
            let dims = dims.context("--matmul MxNxK is needed with seeded operands")?;
            (api::Operand::Seed { seed: args.seed_a }, api::Operand::Seed { seed: args.seed_b }, dims)
        }
        (Some(a), Some(b)) => {
            let a = load_matrix(a, dims.map(|[m, _, k]| (m, k)))?;
            let b = load_matrix(b, dims.map(|[_, n, k]| (k, n)))?;
            ensure!(
                a.cols == b.rows,
                "A is {}×{} and B is {}×{}: A's columns must be B's rows",
                a.rows,
                a.cols,
                b.rows,
                b.cols
            );
            let shape = [u32::try_from(a.rows)?, u32::try_from(b.cols)?, u32::try_from(a.cols)?];
            if let Some(given) = dims {
                ensure!(given == shape, "--matmul says {given:?}, the files are {shape:?} (M, N, K)");
            }
            let a = api::Operand::Blob { blob: rt.block_on(upload(url, kp, a.le_bytes()))? };
            let b = api::Operand::Blob { blob: rt.block_on(upload(url, kp, b.le_bytes()))? };
            (a, b, shape)
        }
        _ => bail!("give both --a and --b, or neither (seeded operands)"),
    };
    Ok(api::JobRequest::Matmul(api::MatmulJob {
        m,
        n,
        k,
        a,
        b,
        max_price_nano_per_gflop: args.max_price,
        min_reliability: 0.0,
        idempotency_key: args.idempotency_key.clone(),
    }))
}

/// A WGSL job from a kernel file and its `--buffer`s, files uploaded as the buffers' initial contents.
fn wgsl_request(
    rt: &tokio::runtime::Runtime,
    url: &str,
    kp: &Keypair,
    kernel: &Path,
    args: &SubmitArgs,
) -> anyhow::Result<api::JobRequest> {
    let source = std::fs::read_to_string(kernel).with_context(|| format!("reading {}", kernel.display()))?;
    let dispatch: Vec<u32> =
        args.dispatch.split(',').map(|d| d.trim().parse()).collect::<Result<_, _>>().context("--dispatch is X,Y,Z")?;
    let [x, y, z] = dispatch[..] else { bail!("--dispatch is X,Y,Z") };
    ensure!(!args.buffer.is_empty(), "a kernel needs at least one --buffer (its read_write buffers are the result)");
    let mut buffers = Vec::new();
    for spec in &args.buffer {
        let (binding, access, contents) = parse_buffer(spec)?;
        let (size_bytes, init) = match contents {
            BufferContents::Zeroed(size) => (size, None),
            BufferContents::File(path) => {
                let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
                (bytes.len() as u64, Some(rt.block_on(upload(url, kp, bytes))?))
            }
        };
        buffers.push(api::BufferSpec { binding, access, size_bytes, init });
    }
    Ok(api::JobRequest::Wgsl(api::WgslJob {
        source,
        entry_point: args.entry.clone(),
        buffers,
        dispatch: [x, y, z],
        float_tolerance: args.float_tolerance,
        work_mflop: args.work_mflop,
        max_price_nano_per_gflop: args.max_price,
        min_reliability: 0.0,
        idempotency_key: args.idempotency_key.clone(),
    }))
}

/// What a `--buffer` starts with.
#[derive(Debug, PartialEq)]
enum BufferContents {
    Zeroed(u64),
    File(PathBuf),
}

/// `BINDING:ACCESS:FILE|SIZE`.
fn parse_buffer(spec: &str) -> anyhow::Result<(u32, Access, BufferContents)> {
    let mut parts = spec.splitn(3, ':');
    let (Some(binding), Some(access), Some(rest)) = (parts.next(), parts.next(), parts.next()) else {
        bail!("--buffer is BINDING:ACCESS:FILE or BINDING:ACCESS:SIZE (got {spec})");
    };
    let binding = binding.parse().with_context(|| format!("--buffer binding {binding} is not a number"))?;
    let access = match access {
        "uniform" => Access::Uniform,
        "read" => Access::Read,
        "read_write" => Access::ReadWrite,
        other => bail!("--buffer access {other} is not uniform, read or read_write"),
    };
    let contents = match rest.parse::<u64>() {
        Ok(size) => BufferContents::Zeroed(size),
        Err(_) => BufferContents::File(PathBuf::from(rest)),
    };
    Ok((binding, access, contents))
}

fn parse_dims(text: &str) -> anyhow::Result<[u32; 3]> {
    let dims: Vec<u32> =
        text.split('x').map(|d| d.trim().parse()).collect::<Result<_, _>>().context("--matmul is MxNxK")?;
    let [m, n, k] = dims[..] else { bail!("--matmul is MxNxK") };
    Ok([m, n, k])
}

/// A matrix file: `.npy`, or raw little-endian f32 of the `shape` `--matmul` gives.
fn load_matrix(path: &Path, shape: Option<(u32, u32)>) -> anyhow::Result<npy::Matrix> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if path.extension().is_some_and(|e| e == "npy") {
        return npy::read(&bytes).with_context(|| format!("reading {}", path.display()));
    }
    let (rows, cols) =
        shape.with_context(|| format!("{} is raw f32: give its shape with --matmul MxNxK", path.display()))?;
    let (rows, cols) = (rows as usize, cols as usize);
    ensure!(
        bytes.len() == 4 * rows * cols,
        "{} has {} bytes; a {rows}×{cols} f32 matrix has {}",
        path.display(),
        bytes.len(),
        4 * rows * cols
    );
    let data: Vec<f32> = bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    ensure!(data.iter().all(|v| v.is_finite()), "{} holds a non-finite value", path.display());
    Ok(npy::Matrix { rows, cols, data })
}

/// Stores `bytes` as a blob (signed: a client's uploads count against its daily allowance); its hash.
pub(crate) async fn upload(url: &str, kp: &Keypair, bytes: Vec<u8>) -> anyhow::Result<String> {
    let hash = blake3::hash(&bytes).to_hex().to_string();
    let path = format!("/v1/blobs/{hash}");
    // A blob already stored is answered before its body is read: asking first spares sending it (and a broken pipe).
    let stored = reqwest::Client::new().head(format!("{url}{path}")).send().await;
    if stored.is_ok_and(|r| r.status().is_success()) {
        return Ok(hash);
    }
    let mut req = reqwest::Client::new().put(format!("{url}{path}"));
    for (h, v) in auth::sign(kp, "PUT", &path, now_ms(), &bytes) {
        req = req.header(h, v);
    }
    let resp = req.body(bytes).send().await.with_context(|| format!("PUT {path}"))?;
    if !resp.status().is_success() {
        let status = resp.status();
        let refused = resp.json::<api::ErrorReply>().await.map(|e| e.error).unwrap_or_default();
        bail!("upload refused: {status}: {refused}");
    }
    Ok(hash)
}

fn result(coordinator: &str, key: Option<PathBuf>, id: u64, out: &Path) -> anyhow::Result<()> {
    let kp = load_or_create_key(key)?;
    let url = base(coordinator);
    let rt = runtime()?;
    let bytes = rt.block_on(job_result(url, &kp, id))?;
    let written = if out.extension().is_some_and(|e| e == "npy") {
        let status: api::JobStatus = rt.block_on(get_json(format!("{url}/v1/jobs/{id}")))?;
        let [rows, cols] = status.result_shape.context("only a matmul's result is a matrix: write it raw")?;
        let data: Vec<f32> = bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        ensure!(data.len() == rows as usize * cols as usize, "the result does not have the job's shape");
        npy::write(&npy::Matrix { rows: rows as usize, cols: cols as usize, data })
    } else {
        bytes
    };
    std::fs::write(out, &written).with_context(|| format!("writing {}", out.display()))?;
    println!("{} bytes written to {} (blake3 {})", written.len(), out.display(), blake3::hash(&written).to_hex());
    Ok(())
}

fn list(coordinator: &str, mine: Option<Option<PathBuf>>, limit: usize, json: bool) -> anyhow::Result<()> {
    let me = mine.map(load_or_create_key).transpose()?.map(|kp| kp.id().to_string());
    let jobs: Vec<api::JobSummary> =
        runtime()?.block_on(get_json(format!("{}/v1/jobs?limit={limit}", base(coordinator))))?;
    let jobs: Vec<api::JobSummary> =
        jobs.into_iter().filter(|j| me.as_ref().is_none_or(|me| j.client == *me)).collect();
    if json {
        println!("{}", serde_json::to_string(&jobs)?);
        return Ok(());
    }
    for j in &jobs {
        println!(
            "{:>8} {:<6} {:<8} {:>5}/{:<5} {}",
            j.id,
            j.kind,
            state_word(j.state),
            j.tasks_done,
            j.tasks_total,
            j.reason.as_deref().unwrap_or("")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // A panic is the failure report.

    use super::*;

    #[test]
    fn buffer_specs_read_as_documented() {
        assert_eq!(parse_buffer("0:read_write:4096").unwrap(), (0, Access::ReadWrite, BufferContents::Zeroed(4096)));
        assert_eq!(
            parse_buffer("2:read:data/x.bin").unwrap(),
            (2, Access::Read, BufferContents::File(PathBuf::from("data/x.bin")))
        );
        for bad in ["0:write:16", "x:read:16", "0:read", ""] {
            assert!(parse_buffer(bad).is_err(), "{bad} was taken");
        }
        assert_eq!(parse_dims("4x5x6").unwrap(), [4, 5, 6]);
        assert!(parse_dims("4x5").is_err());
    }
}
