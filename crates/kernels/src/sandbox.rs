//! Runs a client's WGSL in a child process with a deadline. A GPU kernel that never ends cannot be cancelled from
//! inside the process that submitted it (wgpu can only stop waiting), so each untrusted job gets its own worker
//! process that owns its own device; past the deadline the worker is killed, the driver reclaims its context, and
//! the node keeps serving. The worker is this same binary run with a hidden subcommand that calls
//! [`serve_worker`]; the framing on its stdin and stdout is private to this module.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::gpu::GpuExecutor;
use crate::untrusted::{self, MAX_SOURCE_BYTES, MAX_TOTAL_BUFFER_BYTES, RejectError, ShaderFeatures, WgslJob};

/// Largest request header (the job without its buffer contents).
const MAX_HEADER_BYTES: u64 = 6 * MAX_SOURCE_BYTES as u64 + 64 * 1024;
/// The furthest deadline the parent will wait for (a longer timeout is cut to it).
const MAX_DEADLINE: Duration = Duration::from_secs(24 * 3600);
/// How often the parent checks whether the worker has exited.
const POLL_INTERVAL: Duration = Duration::from_millis(10);
/// Time the worker is given to start, read the job and open its device before the job's own clock starts.
pub const WORKER_STARTUP_ALLOWANCE: Duration = Duration::from_secs(30);
/// How much longer the worker's own wait on the GPU is than the job's deadline, so the parent's kill decides.
const WORKER_WAIT_GRACE: Duration = Duration::from_secs(1);
/// The byte a worker writes once it holds its device and the job: the kernel's deadline starts then.
const READY: u8 = b'R';

/// Why an isolated run produced no result.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(transparent)]
    Rejected(#[from] RejectError),
    #[error("could not start the kernel worker: {0}")]
    Spawn(std::io::Error),
    #[error("kernel exceeded its time limit of {timeout_ms} ms and was stopped")]
    Timeout { timeout_ms: u64 },
    #[error("kernel worker failed: {0}")]
    Worker(String),
    #[error("kernel worker exited without a result ({0})")]
    Crashed(String),
    #[error("kernel worker sent a malformed reply: {0}")]
    Protocol(String),
}

#[derive(serde::Serialize, serde::Deserialize)]
struct RequestHeader {
    job: WgslJob,
    init_lens: Vec<u64>,
    timeout_ms: u64,
}

/// Validates `job` here, then runs it in a worker started by `worker` (a command whose stdin and stdout this
/// function takes over) and kills the worker if the kernel is not done within `timeout` of the worker being ready.
/// Returns the read-write buffers by binding.
pub fn run_isolated(
    worker: &mut Command,
    job: &WgslJob,
    features: ShaderFeatures,
    timeout: Duration,
) -> Result<Vec<(u32, Vec<u8>)>, SandboxError> {
    untrusted::validate(job, features)?;
    let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
    let header = request_header(job, timeout_ms)?;
    let mut child = worker
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(SandboxError::Spawn)?;
    let (Some(mut stdin), Some(mut stdout)) = (child.stdin.take(), child.stdout.take()) else {
        let _ = child.kill();
        return Err(SandboxError::Protocol("worker pipes missing".into()));
    };
    let inits: Vec<Vec<u8>> = job.buffers.iter().map(|b| b.init.clone()).collect();
    let writer = std::thread::spawn(move || -> std::io::Result<()> {
        stdin.write_all(&(header.len() as u64).to_le_bytes())?;
        stdin.write_all(&header)?;
        for init in inits {
            stdin.write_all(&init)?;
        }
        stdin.flush()
    });
    let reply_limit = job.buffers.iter().map(|b| b.size_bytes + 12).sum::<u64>() + 64 * 1024;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || -> std::io::Result<Vec<u8>> {
        let mut ready = [0u8; 1];
        stdout.read_exact(&mut ready)?;
        let _ = ready_tx.send(ready[0] == READY);
        let mut reply = Vec::new();
        stdout.by_ref().take(reply_limit).read_to_end(&mut reply)?;
        Ok(reply)
    });
    let status = supervise(&mut child, &ready_rx, timeout)?;
    let _ = writer.join();
    let reply = reader.join().map_err(|_| SandboxError::Protocol("reader thread panicked".into()))?;
    let reply = match reply {
        Ok(reply) if !reply.is_empty() => reply,
        _ => return Err(SandboxError::Crashed(status.to_string())),
    };
    decode_reply(&reply)
}

/// The request's header: the job without its buffers' contents (they follow it), their lengths and the deadline.
fn request_header(job: &WgslJob, timeout_ms: u64) -> Result<Vec<u8>, SandboxError> {
    let mut header_job = job.clone();
    let init_lens = header_job.buffers.iter().map(|b| b.init.len() as u64).collect();
    for b in &mut header_job.buffers {
        b.init = Vec::new();
    }
    let header = serde_json::to_vec(&RequestHeader { job: header_job, init_lens, timeout_ms })
        .map_err(|e| SandboxError::Protocol(e.to_string()))?;
    // JSON escaping can grow a source several times over; refuse here, not in the worker.
    if header.len() as u64 > MAX_HEADER_BYTES {
        return Err(SandboxError::Protocol(format!(
            "request header is {} bytes after encoding, the limit is {MAX_HEADER_BYTES}",
            header.len()
        )));
    }
    Ok(header)
}

/// Waits for the worker to end, and kills it at its deadline: the kernel's clock starts when the worker says it has
/// its device and the job (opening a device is not the job's time); before that it has the startup allowance.
fn supervise(
    child: &mut std::process::Child,
    ready: &std::sync::mpsc::Receiver<bool>,
    timeout: Duration,
) -> Result<std::process::ExitStatus, SandboxError> {
    let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
    let later = |d: Duration| Instant::now().checked_add(d).unwrap_or_else(|| Instant::now() + MAX_DEADLINE);
    let mut deadline = later(WORKER_STARTUP_ALLOWANCE);
    let mut running = false;
    loop {
        if !running && let Ok(true) = ready.try_recv() {
            running = true;
            deadline = later(timeout);
        }
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                if !running {
                    return Err(SandboxError::Crashed("worker did not open a gpu device in time".into()));
                }
                tracing::warn!(timeout_ms, "untrusted kernel stopped at its deadline");
                return Err(SandboxError::Timeout { timeout_ms });
            }
            Ok(None) => std::thread::sleep(POLL_INTERVAL),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(SandboxError::Crashed(e.to_string()));
            }
        }
    }
}

fn decode_reply(reply: &[u8]) -> Result<Vec<(u32, Vec<u8>)>, SandboxError> {
    let mut cur = reply;
    let mut take = |n: usize| -> Result<&[u8], SandboxError> {
        if cur.len() < n {
            return Err(SandboxError::Protocol("reply truncated".into()));
        }
        let (head, tail) = cur.split_at(n);
        cur = tail;
        Ok(head)
    };
    let tag = take(1)?[0];
    let count = u32::from_le_bytes(take(4)?.try_into().map_err(|_| SandboxError::Protocol("bad count".into()))?);
    if tag > 1 {
        return Err(SandboxError::Protocol(format!("unknown reply tag {tag}")));
    }
    if tag == 1 {
        let message = take(count as usize)?;
        return Err(SandboxError::Worker(String::from_utf8_lossy(message).into_owned()));
    }
    let mut out = Vec::new();
    for _ in 0..count {
        let binding =
            u32::from_le_bytes(take(4)?.try_into().map_err(|_| SandboxError::Protocol("bad binding".into()))?);
        let len = u64::from_le_bytes(take(8)?.try_into().map_err(|_| SandboxError::Protocol("bad length".into()))?);
        let len = usize::try_from(len).map_err(|_| SandboxError::Protocol("length overflows".into()))?;
        out.push((binding, take(len)?.to_vec()));
    }
    Ok(out)
}

/// The worker side: reads one job from `input`, runs it on this machine's best GPU adapter, writes the reply to
/// `output`. Errors in the job are replied, not returned; only IO failures on the pipes are.
pub fn serve_worker(mut input: impl Read, mut output: impl Write) -> std::io::Result<()> {
    let prepared = read_request(&mut input).and_then(|(job, timeout)| {
        GpuExecutor::open_default().map(|gpu| (gpu, job, timeout)).map_err(|e| e.to_string())
    });
    output.write_all(&[READY])?;
    output.flush()?;
    let reply = prepared.and_then(|(gpu, job, timeout)| gpu.run_untrusted(&job, timeout).map_err(|e| e.to_string()));
    match reply {
        Ok(buffers) => {
            output.write_all(&[0])?;
            output.write_all(&(buffers.len() as u32).to_le_bytes())?;
            for (binding, bytes) in buffers {
                output.write_all(&binding.to_le_bytes())?;
                output.write_all(&(bytes.len() as u64).to_le_bytes())?;
                output.write_all(&bytes)?;
            }
        }
        Err(message) => {
            output.write_all(&[1])?;
            output.write_all(&(message.len() as u32).to_le_bytes())?;
            output.write_all(message.as_bytes())?;
        }
    }
    output.flush()
}

fn read_request(input: &mut impl Read) -> Result<(WgslJob, Duration), String> {
    let mut len = [0u8; 8];
    input.read_exact(&mut len).map_err(|e| format!("reading request: {e}"))?;
    let len = u64::from_le_bytes(len);
    if len > MAX_HEADER_BYTES {
        return Err(format!("request header of {len} bytes exceeds {MAX_HEADER_BYTES}"));
    }
    let mut header = vec![0u8; len as usize];
    input.read_exact(&mut header).map_err(|e| format!("reading request: {e}"))?;
    let header: RequestHeader = serde_json::from_slice(&header).map_err(|e| format!("malformed request: {e}"))?;
    let mut job = header.job;
    if header.init_lens.len() != job.buffers.len() || header.init_lens.iter().sum::<u64>() > MAX_TOTAL_BUFFER_BYTES {
        return Err("request buffer lengths do not match the job".into());
    }
    for (buf, &n) in job.buffers.iter_mut().zip(&header.init_lens) {
        if n > buf.size_bytes {
            return Err(format!("initial data for binding {} exceeds its buffer", buf.binding));
        }
        buf.init = vec![0u8; n as usize];
        input.read_exact(&mut buf.init).map_err(|e| format!("reading buffer data: {e}"))?;
    }
    Ok((job, Duration::from_millis(header.timeout_ms) + WORKER_WAIT_GRACE))
}
