//! `neurolov loadgen`: many light node sessions against a coordinator on this machine, for the session-capacity
//! benchmark (`scripts/bench-sessions`). Each session is a real protocol peer — its own key, the coordinator's
//! challenge, a signed registration, its attestation answered with the right product, signed heartbeats — without
//! the node's compute machinery, so that one process holds tens of thousands. After admission it runs heartbeat
//! phases (one interval each) and measures each heartbeat's round trip: the heartbeat frame, then a WebSocket ping
//! behind it on the same socket; the coordinator reads the ping (and answers it) only after its core has handled the
//! heartbeat, so the pong's delay is the heartbeat's handling time plus the sockets'. Loopback only and bounded: it
//! is a measuring tool, not a way to flood someone else's coordinator.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use futures_util::{SinkExt, StreamExt};
use neurolov_protocol::messages::{
    ClaimedHardware, DataRef, GiveBack, InlineResult, NodeKind, Task, ToNode, Work, seeded_f32_at,
};
use neurolov_protocol::{Envelope, FromNode, Keypair, PROTOCOL_VERSION};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::net::DEFAULT_COORDINATOR;

/// Most sessions one load generator opens.
pub const MAX_SESSIONS: usize = 200_000;
/// Most sessions connecting at once: admission is measured, not a SYN flood.
pub const MAX_CONNECT_CONCURRENCY: usize = 1_024;
/// Largest product (m·n·k) a session computes for its attestation; a bigger challenge is handed back. Serving a
/// coordinator with its default 256³ challenges would measure this generator's arithmetic, not the coordinator.
const MAX_CHALLENGE_MACS: u64 = 64 * 64 * 64;
/// Socket buffers of one session: its frames are a few hundred bytes.
const SESSION_BUFFER_BYTES: usize = 4 * 1024;
/// How often the admission progress (and the coordinator's count of attested nodes) is read.
const POLL_INTERVAL: Duration = Duration::from_millis(500);

#[derive(Args)]
pub struct LoadgenArgs {
    /// The coordinator, on a loopback address.
    #[arg(long, default_value = DEFAULT_COORDINATOR)]
    coordinator: String,
    /// Node sessions to open.
    #[arg(long, default_value_t = 1_000)]
    sessions: usize,
    /// Loopback source addresses, comma-separated; sessions take them in turn (each has about 28,000 ports).
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1")]
    sources: Vec<Ipv4Addr>,
    /// Sessions connecting at once.
    #[arg(long, default_value_t = 128)]
    connect_concurrency: usize,
    /// Heartbeat phases after admission, `EVERY_MS:SECONDS` each, comma-separated: every session sends a heartbeat
    /// every EVERY_MS for SECONDS (after one EVERY_MS of change-over). Default: the coordinator's own interval.
    #[arg(long, value_delimiter = ',')]
    phases: Vec<String>,
    /// Nodes the coordinator must count attested before the heartbeat phases start (default: `--sessions`; several
    /// load generators against one coordinator each name the total).
    #[arg(long)]
    expect_attested: Option<usize>,
    /// Give up admitting after this many seconds.
    #[arg(long, default_value_t = 600)]
    admit_timeout_s: u64,
    /// The coordinator's process id, to report its memory and CPU (read from /proc).
    #[arg(long)]
    coordinator_pid: Option<u32>,
    #[arg(long)]
    json: bool,
}

/// One heartbeat phase: its interval and how long it is measured.
#[derive(Clone, Copy, Debug)]
struct Phase {
    every_ms: u64,
    seconds: u64,
}

fn parse_phase(s: &str) -> anyhow::Result<Phase> {
    let (every, secs) = s.split_once(':').with_context(|| format!("phase {s:?} is not EVERY_MS:SECONDS"))?;
    let phase = Phase { every_ms: every.trim().parse()?, seconds: secs.trim().parse()? };
    if phase.every_ms < 10 || phase.seconds == 0 {
        bail!("phase {s:?}: heartbeats at most every 10 ms, for at least a second");
    }
    Ok(phase)
}

/// What the sessions count together.
#[derive(Default)]
struct Tally {
    connected: AtomicUsize,
    registered: AtomicUsize,
    /// Sessions that failed to open or were closed: with the first few reasons.
    failed: AtomicUsize,
    reasons: Mutex<Vec<String>>,
    challenges_answered: AtomicUsize,
    coordinator_errors: AtomicUsize,
    heartbeats: AtomicU64,
    /// Heartbeat round trips of the phase being measured, in µs (`None` between measurements).
    rtts_us: Mutex<Option<Vec<u32>>>,
}

impl Tally {
    fn fail(&self, why: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut r) = self.reasons.lock()
            && r.len() < 8
        {
            r.push(why);
        }
    }

    fn rtt(&self, rtt: Duration) {
        if let Ok(mut r) = self.rtts_us.lock()
            && let Some(v) = r.as_mut()
        {
            v.push(rtt.as_micros().min(u32::MAX as u128) as u32);
        }
    }
}

/// What every session shares.
struct Shared {
    addr: SocketAddr,
    url: String,
    tally: Tally,
    /// The heartbeat interval now (0: the coordinator's).
    every_ms: watch::Receiver<u64>,
}

/// The report, one per run.
#[derive(serde::Serialize)]
struct Report {
    sessions: usize,
    sources: usize,
    registered: usize,
    attested: u64,
    failed: usize,
    failure_reasons: Vec<String>,
    /// From the first connection to the last registration, and to the coordinator counting all attested.
    register_all_s: f64,
    attest_all_s: Option<f64>,
    admitted_per_s: f64,
    coordinator: Option<ProcessFigures>,
    phases: Vec<PhaseReport>,
}

#[derive(serde::Serialize, Clone, Copy)]
struct ProcessFigures {
    rss_before_bytes: u64,
    rss_admitted_bytes: u64,
    rss_per_session_bytes: u64,
    cpu_s_admitting: f64,
}

#[derive(serde::Serialize)]
struct PhaseReport {
    every_ms: u64,
    heartbeats_per_s: f64,
    rtt_p50_ms: f64,
    rtt_p99_ms: f64,
    rtt_max_ms: f64,
    samples: usize,
    /// Cores the coordinator used during the phase, and its CPU per heartbeat.
    coordinator_cores: Option<f64>,
    coordinator_cpu_us_per_heartbeat: Option<f64>,
    /// The same heartbeat rate as a population of nodes at the default 30 s interval (a node sends one every 15 s).
    equivalent_nodes_at_30s: u64,
    sessions_lost: usize,
}

pub fn loadgen(args: LoadgenArgs) -> anyhow::Result<()> {
    if args.sessions == 0 || args.sessions > MAX_SESSIONS {
        bail!("sessions must be 1..={MAX_SESSIONS}");
    }
    if args.sources.is_empty() || args.sources.iter().any(|s| !s.is_loopback()) {
        bail!("source addresses must be loopback (127.0.0.0/8)");
    }
    let phases = args.phases.iter().map(|p| parse_phase(p)).collect::<anyhow::Result<Vec<_>>>()?;
    let runtime = crate::net::runtime()?;
    let report = runtime.block_on(run(&args, phases))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    Ok(())
}

/// The coordinator's socket address, which must be on loopback.
async fn loopback_addr(coordinator: &str) -> anyhow::Result<SocketAddr> {
    let url = reqwest::Url::parse(coordinator).with_context(|| format!("not a url: {coordinator}"))?;
    let host = url.host_str().context("the coordinator url has no host")?;
    let port = url.port_or_known_default().unwrap_or(80);
    let addr = tokio::net::lookup_host((host, port))
        .await
        .with_context(|| format!("resolving {host}"))?
        .next()
        .context("the coordinator's host has no address")?;
    if !addr.ip().is_loopback() {
        bail!("the load generator runs against a coordinator on this machine only ({addr} is not loopback)");
    }
    Ok(addr)
}

async fn run(args: &LoadgenArgs, phases: Vec<Phase>) -> anyhow::Result<Report> {
    let addr = loopback_addr(&args.coordinator).await?;
    let (every_tx, every_rx) = watch::channel(0u64);
    let shared =
        Arc::new(Shared { addr, url: format!("ws://{addr}/v1/nodes/ws"), tally: Tally::default(), every_ms: every_rx });
    let before = args.coordinator_pid.and_then(process_sample);
    let started = Instant::now();
    let gate = Arc::new(tokio::sync::Semaphore::new(args.connect_concurrency.clamp(1, MAX_CONNECT_CONCURRENCY)));
    for i in 0..args.sessions {
        let source = args.sources[i % args.sources.len()];
        let (shared, gate) = (Arc::clone(&shared), Arc::clone(&gate));
        tokio::spawn(async move {
            if let Err(e) = session(&shared, source, gate).await {
                shared.tally.fail(format!("{e:#}"));
            }
        });
    }
    let (register_all_s, attest_all_s, attested) = admit(args, &shared, started).await;
    let after = args.coordinator_pid.and_then(process_sample);
    let coordinator = before.zip(after).map(|(b, a)| ProcessFigures {
        rss_before_bytes: b.rss_bytes,
        rss_admitted_bytes: a.rss_bytes,
        rss_per_session_bytes: a.rss_bytes.saturating_sub(b.rss_bytes) / (attested.max(1)),
        cpu_s_admitting: a.cpu_s - b.cpu_s,
    });
    let mut reports = Vec::new();
    for phase in phases {
        reports.push(measure(args, &shared, &every_tx, phase).await);
    }
    let tally = &shared.tally;
    let registered = tally.registered.load(Ordering::Relaxed);
    Ok(Report {
        sessions: args.sessions,
        sources: args.sources.len(),
        registered,
        attested,
        failed: tally.failed.load(Ordering::Relaxed),
        failure_reasons: tally.reasons.lock().map(|r| r.clone()).unwrap_or_default(),
        register_all_s,
        attest_all_s,
        admitted_per_s: registered as f64 / register_all_s.max(1e-9),
        coordinator,
        phases: reports,
    })
}

/// Waits until every session is registered and the coordinator counts them attested (or they failed, or time ran
/// out): seconds to the last registration, to all attested, and the attested count.
async fn admit(args: &LoadgenArgs, shared: &Shared, started: Instant) -> (f64, Option<f64>, u64) {
    let http = crate::net::http();
    let stats_url = format!("http://{}/v1/stats", shared.addr);
    let deadline = started + Duration::from_secs(args.admit_timeout_s);
    let (mut register_all_s, mut attested) = (None, 0u64);
    while Instant::now() < deadline {
        tokio::time::sleep(POLL_INTERVAL).await;
        let tally = &shared.tally;
        let (registered, failed) = (tally.registered.load(Ordering::Relaxed), tally.failed.load(Ordering::Relaxed));
        if register_all_s.is_none() && registered + failed >= args.sessions {
            register_all_s = Some(started.elapsed().as_secs_f64());
        }
        if let Ok(reply) = http.get(&stats_url).send().await
            && let Ok(stats) = reply.json::<neurolov_api::Stats>().await
        {
            attested = stats.active_nodes;
        }
        if !args.json {
            eprintln!(
                "{:>6.1} s: {} connected, {registered} registered, {attested} attested, {failed} failed",
                started.elapsed().as_secs_f64(),
                tally.connected.load(Ordering::Relaxed)
            );
        }
        if register_all_s.is_some() && attested as usize >= args.expect_attested.unwrap_or(registered) {
            return (register_all_s.unwrap_or_default(), Some(started.elapsed().as_secs_f64()), attested);
        }
    }
    (register_all_s.unwrap_or(args.admit_timeout_s as f64), None, attested)
}

/// Runs one heartbeat phase: switch every session over, then collect round trips for its length.
async fn measure(args: &LoadgenArgs, shared: &Shared, every_tx: &watch::Sender<u64>, phase: Phase) -> PhaseReport {
    let _ = every_tx.send(phase.every_ms);
    tokio::time::sleep(Duration::from_millis(phase.every_ms)).await;
    let lost_before = shared.tally.failed.load(Ordering::Relaxed);
    if let Ok(mut r) = shared.tally.rtts_us.lock() {
        *r = Some(Vec::new());
    }
    let (beats_before, cpu_before) =
        (shared.tally.heartbeats.load(Ordering::Relaxed), args.coordinator_pid.and_then(process_sample));
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(phase.seconds)).await;
    let wall_s = started.elapsed().as_secs_f64();
    let beats = shared.tally.heartbeats.load(Ordering::Relaxed) - beats_before;
    let cpu_s = cpu_before.zip(args.coordinator_pid.and_then(process_sample)).map(|(b, a)| a.cpu_s - b.cpu_s);
    let mut rtts = shared.tally.rtts_us.lock().ok().and_then(|mut r| r.take()).unwrap_or_default();
    rtts.sort_unstable();
    let pick = |q: f64| rtts.get(((rtts.len() as f64 * q) as usize).min(rtts.len().saturating_sub(1)));
    let ms = |v: Option<&u32>| v.map_or(0.0, |&us| us as f64 / 1e3);
    let heartbeats_per_s = beats as f64 / wall_s;
    PhaseReport {
        every_ms: phase.every_ms,
        heartbeats_per_s,
        rtt_p50_ms: ms(pick(0.5)),
        rtt_p99_ms: ms(pick(0.99)),
        rtt_max_ms: ms(rtts.last()),
        samples: rtts.len(),
        coordinator_cores: cpu_s.map(|c| c / wall_s),
        coordinator_cpu_us_per_heartbeat: cpu_s.map(|c| c * 1e6 / (beats.max(1) as f64)),
        equivalent_nodes_at_30s: (heartbeats_per_s * 15.0) as u64,
        sessions_lost: shared.tally.failed.load(Ordering::Relaxed) - lost_before,
    }
}

/// One session: connect from `source`, register, then answer challenges and heartbeat until the process ends.
async fn session(shared: &Shared, source: Ipv4Addr, gate: Arc<tokio::sync::Semaphore>) -> anyhow::Result<()> {
    let permit = gate.acquire_owned().await.context("closed")?;
    let socket = tokio::net::TcpSocket::new_v4().context("socket")?;
    socket.bind(SocketAddr::new(IpAddr::V4(source), 0)).with_context(|| format!("binding {source}"))?;
    let tcp = socket.connect(shared.addr).await.context("connecting")?;
    tcp.set_nodelay(true)?;
    let config = WebSocketConfig::default()
        .read_buffer_size(SESSION_BUFFER_BYTES)
        .write_buffer_size(0)
        .max_message_size(Some(neurolov_protocol::messages::MAX_FRAME_BYTES));
    let (ws, _) =
        tokio_tungstenite::client_async_with_config(shared.url.as_str(), tcp, Some(config)).await.context("upgrade")?;
    shared.tally.connected.fetch_add(1, Ordering::Relaxed);
    let (mut sink, mut stream) = ws.split();
    let key = Keypair::from_seed(fastrand_seed());
    let (nonce, heartbeat_ms) = register(&key, &mut sink, &mut stream).await?;
    shared.tally.registered.fetch_add(1, Ordering::Relaxed);
    drop(permit);
    let mut seq = 1u64;
    let mut seal = |make: &dyn Fn(String, u64) -> FromNode| {
        let frame = serde_json::to_string(&Envelope::seal(&key, &make(nonce.clone(), seq))).unwrap_or_default();
        seq += 1;
        Message::Text(frame.into())
    };
    let mut every_ms = shared.every_ms.clone();
    let interval = |asked: u64| Duration::from_millis(if asked == 0 { heartbeat_ms / 2 } else { asked }.max(10));
    let mut period = interval(*every_ms.borrow());
    // A random first beat spreads the sessions over the interval.
    let mut next = tokio::time::Instant::now() + period.mul_f64(fastrand::f64());
    let mut ping_sent: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {
                sink.send(seal(&|session, seq| FromNode::Heartbeat { session, seq })).await.context("heartbeat")?;
                if ping_sent.is_none() {
                    sink.send(Message::Ping(Vec::new().into())).await.context("ping")?;
                    ping_sent = Some(Instant::now());
                }
                shared.tally.heartbeats.fetch_add(1, Ordering::Relaxed);
                next += period;
            }
            changed = every_ms.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                period = interval(*every_ms.borrow_and_update());
                next = tokio::time::Instant::now() + period.mul_f64(fastrand::f64());
            }
            incoming = stream.next() => match incoming {
                Some(Ok(Message::Pong(_))) => {
                    if let Some(sent) = ping_sent.take() {
                        shared.tally.rtt(sent.elapsed());
                    }
                }
                Some(Ok(Message::Text(text))) => {
                    for reply in answer(&shared.tally, text.as_str()) {
                        sink.send(seal(&|session, seq| reply(session, seq))).await.context("delivering")?;
                    }
                }
                Some(Ok(Message::Close(_))) | None => bail!("the coordinator closed the session"),
                Some(Err(e)) => bail!("session: {e}"),
                Some(Ok(_)) => {}
            },
        }
    }
}

/// A fresh identity per session (the coordinator sees distinct nodes); no secret worth a CSPRNG.
fn fastrand_seed() -> [u8; 32] {
    let mut seed = [0u8; 32];
    seed.iter_mut().for_each(|b| *b = fastrand::u8(..));
    seed
}

type WsStream = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// The challenge, the signed registration, the coordinator's answer: the session nonce and heartbeat interval.
async fn register(
    key: &Keypair,
    sink: &mut futures_util::stream::SplitSink<WsStream, Message>,
    stream: &mut futures_util::stream::SplitStream<WsStream>,
) -> anyhow::Result<(String, u64)> {
    let ToNode::Challenge { nonce, .. } = next_message(stream).await? else { bail!("expected a challenge") };
    let claimed = ClaimedHardware {
        adapter: "neurolov loadgen".into(),
        backend: "cpu".into(),
        software: true,
        memory_bytes: 1 << 20,
        features: Vec::new(),
        wgsl: false,
        models: Vec::new(),
        fetches_models: false,
    };
    let register = FromNode::Register {
        version: PROTOCOL_VERSION,
        session: nonce.clone(),
        seq: 0,
        operator: key.id(),
        kind: NodeKind::Native,
        claimed,
        price_nano_per_gflop: 1_000_000,
        slots: 1,
        operator_delegation: None,
    };
    let frame = serde_json::to_string(&Envelope::seal(key, &register))?;
    sink.send(Message::Text(frame.into())).await.context("registering")?;
    match next_message(stream).await? {
        ToNode::Registered { heartbeat_interval_ms, .. } => Ok((nonce, heartbeat_interval_ms)),
        ToNode::Error { code, message } => bail!("registration refused ({code:?}): {message}"),
        other => bail!("expected registration, got {other:?}"),
    }
}

async fn next_message(stream: &mut futures_util::stream::SplitStream<WsStream>) -> anyhow::Result<ToNode> {
    loop {
        match stream.next().await {
            Some(Ok(Message::Text(text))) => return serde_json::from_str(text.as_str()).context("unreadable frame"),
            Some(Ok(Message::Close(_))) | None => bail!("the coordinator closed the session"),
            Some(Err(e)) => bail!("session: {e}"),
            Some(Ok(_)) => {}
        }
    }
}

/// A message that still needs the session nonce and sequence number.
type Reply = Box<dyn Fn(String, u64) -> FromNode + Send + Sync>;

/// What a session answers a coordinator frame with: its challenges' products (delivered inline), a give-back for
/// anything else.
fn answer(tally: &Tally, text: &str) -> Vec<Reply> {
    let tasks = match serde_json::from_str::<ToNode>(text) {
        Ok(ToNode::Task(task)) => vec![task],
        Ok(ToNode::Tasks { tasks }) => tasks,
        Ok(ToNode::Error { .. }) => {
            tally.coordinator_errors.fetch_add(1, Ordering::Relaxed);
            return Vec::new();
        }
        _ => return Vec::new(),
    };
    let (mut results, mut failed) = (Vec::new(), Vec::new());
    for task in tasks {
        match product(&task) {
            Some(bytes) => {
                tally.challenges_answered.fetch_add(1, Ordering::Relaxed);
                results.push(InlineResult::new(task.task_id, task.attempt, &bytes));
            }
            None => failed.push(GiveBack {
                task_id: task.task_id,
                attempt: task.attempt,
                reason: "the load generator computes only small seeded products".into(),
            }),
        }
    }
    vec![Box::new(move |session, seq| FromNode::Deliver {
        session,
        seq,
        results: results.clone(),
        failed: failed.clone(),
    })]
}

/// C = A·B of a small seeded matmul task, as little-endian bytes.
fn product(task: &Task) -> Option<Vec<u8>> {
    let Work::Matmul {
        m,
        n,
        k,
        a: DataRef::Seeded { seed: sa, offset: oa, .. },
        b: DataRef::Seeded { seed: sb, offset: ob, .. },
    } = &task.work
    else {
        return None;
    };
    let (m, n, k) = (*m as usize, *n as usize, *k as usize);
    if (m * n) as u64 * k as u64 > MAX_CHALLENGE_MACS || m * n * 4 > neurolov_protocol::messages::INLINE_RESULT_BYTES {
        return None;
    }
    let (a, b) = (seeded_f32_at(*sa, *oa, m * k), seeded_f32_at(*sb, *ob, k * n));
    let mut c = vec![0f32; m * n];
    for i in 0..m {
        for p in 0..k {
            let aip = a[i * k + p];
            for j in 0..n {
                c[i * n + j] += aip * b[p * n + j];
            }
        }
    }
    Some(c.iter().flat_map(|x| x.to_le_bytes()).collect())
}

/// Resident memory and CPU time (user + system) of a process, from /proc.
#[derive(Clone, Copy)]
struct ProcessSample {
    rss_bytes: u64,
    cpu_s: f64,
}

fn process_sample(pid: u32) -> Option<ProcessSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib: u64 =
        status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.split_whitespace().next()?.parse().ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at state: utime and stime are the 12th and 13th.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // /proc reports CPU time in USER_HZ, 100 on every Linux architecture's ABI.
    Some(ProcessSample { rss_bytes: rss_kib * 1024, cpu_s: ticks as f64 / 100.0 })
}

fn print_report(r: &Report) {
    println!(
        "{} sessions from {} source addresses: {} registered, {} attested, {} failed",
        r.sessions, r.sources, r.registered, r.attested, r.failed
    );
    for why in &r.failure_reasons {
        println!("  failure: {why}");
    }
    let attest = r.attest_all_s.map_or("not all".to_string(), |s| format!("{s:.1} s"));
    println!(
        "admission: all registered in {:.1} s ({:.0}/s), all attested in {attest}",
        r.register_all_s, r.admitted_per_s
    );
    if let Some(c) = r.coordinator {
        println!(
            "coordinator: rss {:.1} MiB before, {:.1} MiB admitted, {:.1} KiB per session; {:.1} cpu-s admitting",
            c.rss_before_bytes as f64 / 1048576.0,
            c.rss_admitted_bytes as f64 / 1048576.0,
            c.rss_per_session_bytes as f64 / 1024.0,
            c.cpu_s_admitting
        );
    }
    for p in &r.phases {
        println!(
            "heartbeat every {:>6} ms: {:>8.0}/s (= {:>8} nodes at 30 s)  rtt p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms  \
             coordinator {} cores, {} µs/heartbeat  lost {}",
            p.every_ms,
            p.heartbeats_per_s,
            p.equivalent_nodes_at_30s,
            p.rtt_p50_ms,
            p.rtt_p99_ms,
            p.rtt_max_ms,
            p.coordinator_cores.map_or("-".into(), |c| format!("{c:.2}")),
            p.coordinator_cpu_us_per_heartbeat.map_or("-".into(), |c| format!("{c:.0}")),
            p.sessions_lost
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_parse_and_refuse_nonsense() {
        let p = parse_phase("15000:60").expect("a phase");
        assert_eq!((p.every_ms, p.seconds), (15_000, 60));
        for bad in ["15000", "5:10", "100:0", "x:1"] {
            assert!(parse_phase(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn challenges_are_answered_with_the_product_and_big_ones_handed_back() {
        let task = |n: u32| Task {
            task_id: 1,
            attempt: 0,
            deadline_ms: 0,
            work: Work::Matmul {
                m: n,
                n,
                k: n,
                a: DataRef::Seeded { seed: 3, len: (n * n) as u64, offset: 0 },
                b: DataRef::Seeded { seed: 4, len: (n * n) as u64, offset: 0 },
            },
        };
        let c = product(&task(16)).expect("small products are computed");
        let (a, b) = (seeded_f32_at(3, 0, 256), seeded_f32_at(4, 0, 256));
        let c01: f32 = (0..16).map(|p| a[p] * b[p * 16 + 1]).sum();
        let got = f32::from_le_bytes([c[4], c[5], c[6], c[7]]);
        assert!((got - c01).abs() <= 1e-4 * c01.abs().max(1.0), "{got} vs {c01}");
        assert!(product(&task(256)).is_none(), "a default-size challenge is handed back, not computed");
    }
}
