//! End to end over real processes and real sockets on loopback: a `neurolov serve` coordinator and three
//! `neurolov node` processes complete a matmul job whose result is checked against an exact product; a node
//! killed mid-job does not stop the job; and malformed, wrongly signed and oversized frames on a real WebSocket
//! get clear errors while the server keeps serving.

#![allow(clippy::unwrap_used)] // Test helpers unwrap: a panic is the failure report.

mod common;

use std::time::Duration;

use common::{
    Procs, active_nodes, get_json, neurolov, post_signed_kp, put_blob, serve, start_node, submit, temp_dir, wait_for,
};

use futures_util::{SinkExt, StreamExt};
use neurolov_protocol::messages::{ErrorCode, ToNode, seeded_f32};
use neurolov_protocol::{Envelope, FromNode, Keypair};
use tokio_tungstenite::tungstenite::Message;

fn check_result(dir: &std::path::Path, url: &str, id: u64, m: usize, n: usize, k: usize) {
    // Only the job's client reads its result (ids are sequential: anyone could guess them).
    assert_eq!(common::get_result(url, None, id).0, 401, "an unsigned read");
    let stranger = dir.join("stranger.json");
    neurolov().args(["keygen", "--out"]).arg(&stranger).output().expect("keygen");
    assert_eq!(common::get_result(url, Some(&stranger), id).0, 403, "another key's read");
    let file = dir.join(format!("result-{id}.bin"));
    let out = neurolov()
        .args(["job", "result", "--coordinator", url, &id.to_string(), "--out"])
        .arg(&file)
        .arg("--key")
        .arg(dir.join("client.json"))
        .output()
        .expect("result");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let bytes = std::fs::read(&file).expect("result file");
    let got: Vec<f32> = bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    let a = seeded_f32(11, m * k);
    let b = seeded_f32(12, k * n);
    let mut want = vec![0.0f32; m * n];
    neurolov_kernels::cpu::sgemm(&a, &b, &mut want, m, n, k);
    assert_eq!(got.len(), want.len());
    let worst = got.iter().zip(&want).map(|(g, w)| (g - w).abs()).fold(0.0f32, f32::max);
    assert!(worst < 1e-3, "result differs from the exact product by {worst}");
}

#[test]
fn three_nodes_complete_a_job_and_survive_a_killed_node() {
    let dir = temp_dir("job");
    let mut procs = Procs(Vec::new());
    let url = serve(&mut procs, &dir);
    // Two CPU nodes and one on the GPU path (lavapipe in CI), each calibrated or not as its flag says.
    start_node(&mut procs, &dir, &url, "n1", "cpu");
    let victim = start_node(&mut procs, &dir, &url, "n2", "cpu");
    start_node(&mut procs, &dir, &url, "n3", "auto");
    wait_for("three attested nodes", Duration::from_secs(120), || active_nodes(&url) == 3);

    let status = submit(&dir, &url, "96x40x72", true);
    assert_eq!(status["state"], "done", "{status}");
    let id = status["id"].as_u64().expect("id");
    let nodes_used: std::collections::BTreeSet<String> = status["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .filter_map(|t| t["node"].as_str().map(str::to_string))
        .collect();
    assert!(status["tasks"].as_array().is_some_and(|t| t.iter().all(|t| t["verified"] == true)), "{status}");
    eprintln!("job {id} ran on {} node(s)", nodes_used.len());
    check_result(&dir, &url, id, 96, 40, 72);

    // A bigger job; one node is killed while it runs. Its tasks go back to the queue and the job completes.
    let submitted = submit(&dir, &url, "4096x256x256", false);
    let id = submitted["id"].as_u64().expect("id");
    wait_for("some progress", Duration::from_secs(120), || {
        get_json(&format!("{url}/v1/jobs/{id}"))["tasks_done"].as_u64().unwrap_or(0) >= 1
    });
    let before = get_json(&format!("{url}/v1/jobs/{id}"));
    assert_eq!(before["state"], "running", "the job ended before a node could be killed mid-job: {before}");
    procs.0[victim].kill().expect("kill");
    wait_for("the job to finish", Duration::from_secs(300), || {
        let s = get_json(&format!("{url}/v1/jobs/{id}"));
        assert_ne!(s["state"], "failed", "{s}");
        s["state"] == "done"
    });
    check_result(&dir, &url, id, 4096, 256, 256);
    let nodes = get_json(&format!("{url}/v1/nodes"));
    let states: Vec<&str> = nodes.as_array().expect("nodes").iter().filter_map(|n| n["state"].as_str()).collect();
    assert!(states.contains(&"offline"), "the killed node is not offline: {states:?}");
    for n in nodes.as_array().expect("nodes") {
        for key in
            ["id", "kind", "state", "adapter", "gflops_verified", "reliability", "price", "score", "tasks_verified"]
        {
            assert!(n.get(key).is_some(), "node lacks {key}: {n}");
        }
    }
}

/// Also the blob collector's test (issue 9 §3): it runs every 200 ms with no grace, and must collect an upload nothing
/// names while every blob the job, its results and the restart need survives. And the retention test: finished jobs
/// leave the coordinator's memory at once here, and are served from the database — status, result, idempotency key
/// — before and after a restart, which does not load them back.
#[test]
fn a_coordinator_killed_mid_job_resumes_from_its_database() {
    let dir = temp_dir("restart");
    let mut procs = Procs(Vec::new());
    let gc = ["--blob-gc-interval-ms", "200", "--blob-gc-grace-ms", "0", "--finished-job-memory-ms", "0"];
    let url = common::serve_with(&mut procs, &dir, "127.0.0.1:0", &gc);
    let coordinator = procs.0.len() - 1;
    let uploader = Keypair::from_seed([81; 32]);
    post_signed_kp(&url, &uploader, "/v1/faucet", &serde_json::json!({}));
    let orphan = b"an input no job ever names".to_vec();
    assert_eq!(put_blob(&url, Some(&uploader), &orphan, None), 201);
    start_node(&mut procs, &dir, &url, "r1", "cpu");
    start_node(&mut procs, &dir, &url, "r2", "cpu");
    wait_for("two attested nodes", Duration::from_secs(120), || active_nodes(&url) == 2);
    let submitted = submit(&dir, &url, "4096x256x256", false);
    let id = submitted["id"].as_u64().expect("id");
    wait_for("some progress", Duration::from_secs(120), || {
        get_json(&format!("{url}/v1/jobs/{id}"))["tasks_done"].as_u64().unwrap_or(0) >= 2
    });
    // SIGKILL: no chance to flush anything that was not already committed.
    procs.0[coordinator].kill().expect("kill");
    let _ = procs.0[coordinator].wait();
    let listen = url.trim_start_matches("http://").to_string();
    let again = common::serve_with(&mut procs, &dir, &listen, &gc);
    assert_eq!(again, url);
    // The job and the nodes' reputations are back before any node reconnects.
    let status = get_json(&format!("{url}/v1/jobs/{id}"));
    assert!(status["state"] == "running" || status["state"] == "done", "{status}");
    let nodes = get_json(&format!("{url}/v1/nodes"));
    let verified: u64 = nodes.as_array().expect("nodes").iter().filter_map(|n| n["tasks_verified"].as_u64()).sum();
    assert!(verified >= 2, "reputations were not restored: {nodes}");
    wait_for("the job to finish after the restart", Duration::from_secs(300), || {
        let s = get_json(&format!("{url}/v1/jobs/{id}"));
        assert_ne!(s["state"], "failed", "{s}");
        s["state"] == "done"
    });
    check_result(&dir, &url, id, 4096, 256, 256);
    // A keyed job, finished and archived, is still the job its key names.
    let keyed = serde_json::json!({"kind": "matmul", "m": 8, "n": 8, "k": 8, "a": {"seed": 1}, "b": {"seed": 2},
                                   "idempotency_key": "archived-42"});
    let (status, reply) = common::post_signed_status(&url, &uploader, "/v1/jobs", &keyed);
    assert_eq!(status, 201, "{reply}");
    let keyed_id = reply["id"].as_u64().expect("id");
    wait_for("both jobs to leave memory", Duration::from_secs(60), || {
        let stats = get_json(&format!("{url}/v1/stats"));
        stats["jobs_in_memory"] == 0 && stats["jobs_done"] == 2
    });
    let archived = |url: &str| {
        let s = get_json(&format!("{url}/v1/jobs/{id}"));
        assert_eq!((&s["state"], &s["tasks_done"]), (&serde_json::json!("done"), &serde_json::json!(128)), "{s}");
        let tasks = s["tasks"].as_array().expect("tasks");
        assert!(tasks.iter().all(|t| t["verified"] == true), "{s}");
        // Tasks verified before the first restart lost their node (assignments are not stored); the others keep it.
        assert!(tasks.iter().any(|t| t["node"].is_string()), "{s}");
        let (again, reply) = common::post_signed_status(url, &uploader, "/v1/jobs", &keyed);
        assert_eq!((again, reply["id"].as_u64()), (200, Some(keyed_id)), "{reply}");
    };
    archived(&url);
    check_result(&dir, &url, id, 4096, 256, 256);
    let orphan_url = format!("{url}/v1/blobs/{}", blake3::hash(&orphan).to_hex());
    wait_for("the orphan upload to be collected", Duration::from_secs(30), || {
        common::get_bytes(&orphan_url).is_empty()
    });
    // The collector kept every task result: after another restart the whole result is read back from them.
    let last = procs.0.len() - 1;
    procs.0[last].kill().expect("kill");
    let _ = procs.0[last].wait();
    assert_eq!(common::serve_with(&mut procs, &dir, &listen, &gc), url);
    let stats = get_json(&format!("{url}/v1/stats"));
    assert_eq!((&stats["jobs_in_memory"], &stats["jobs_done"]), (&serde_json::json!(0), &serde_json::json!(2)));
    archived(&url);
    check_result(&dir, &url, id, 4096, 256, 256);
    // Archived, the job names its 128 task results only through the database: they stay on disk.
    std::thread::sleep(Duration::from_millis(1_000));
    let blob_files = || std::fs::read_dir(dir.join("coordinator").join("blobs")).expect("blob dir").count();
    let files = blob_files();
    assert!(files >= 4096 / 32, "only {files} blob files left after collection");
    // Until their retention ends: restarted with none, the results are forgotten (410) and their blobs collected.
    let last = procs.0.len() - 1;
    procs.0[last].kill().expect("kill");
    let _ = procs.0[last].wait();
    let expiring = [&gc[..], &["--result-retention-ms", "0"]].concat();
    assert_eq!(common::serve_with(&mut procs, &dir, &listen, &expiring), url);
    wait_for("the expired results' blobs to be collected", Duration::from_secs(30), || blob_files() < 4096 / 32);
    let (status, body) = common::get_result(&url, Some(&dir.join("client.json")), id);
    assert_eq!(status, 410, "{}", String::from_utf8_lossy(&body));
    assert_eq!(get_json(&format!("{url}/v1/jobs/{id}"))["state"], "done");
}

fn audit(dir: &std::path::Path) -> serde_json::Value {
    let out =
        neurolov().args(["ledger", "audit", "--json", "--data"]).arg(dir.join("coordinator")).output().expect("audit");
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("audit output: {}", String::from_utf8_lossy(&out.stderr)))
}

/// Crash safety of the money: the coordinator is SIGKILLed at random moments while a stream of jobs runs, restarted
/// each time, and at the end the audit must pass and every task must have been paid exactly once (the sum of pay and
/// fees equals what the tasks are worth).
#[test]
fn sigkilled_coordinators_lose_no_money_and_pay_nothing_twice() {
    // 1024×256×256 in 32-row tiles: 32 tasks of 4.19 MFLOP (5 MFLOP billed) at the nodes' 1 NLOV/TFLOP ask; results
    // of 32 KiB travel as blobs.
    crash_rounds("crash", &[], "1024x256x256", 32, (5_000, 250));
}

/// The same kills during protocol version 2's batched deliveries: small tasks whose inputs ride in `tasks` frames
/// and whose 512-byte results come back many to a signed `deliver` frame, checked in batches.
#[test]
fn sigkilled_coordinators_during_batched_deliveries_lose_no_money_and_pay_nothing_twice() {
    // 4096×4×4 in 32-row tiles: 128 tasks of 1,024 flop (1 MFLOP billed) each.
    crash_rounds("crash-batched", &[], "4096x4x4", 128, (1_000, 50));
}

/// Two jobs of `shape` per round, the coordinator SIGKILLed at a random moment and restarted (`NEUROLOV_CRASH_KILLS`
/// rounds, default 4), the ledger audited after each kill; then every job must finish with each task paid exactly
/// once: `paid` to its node and `fee` to the treasury.
fn crash_rounds(name: &str, serve_args: &[&str], shape: &str, tasks_per_job: u64, (paid, fee): (u64, u64)) {
    let dir = temp_dir(name);
    let mut procs = Procs(Vec::new());
    let url = common::serve_with(&mut procs, &dir, "127.0.0.1:0", serve_args);
    let listen = url.trim_start_matches("http://").to_string();
    let mut coordinator = procs.0.len() - 1;
    start_node(&mut procs, &dir, &url, "c1", "cpu");
    start_node(&mut procs, &dir, &url, "c2", "cpu");
    wait_for("two attested nodes", Duration::from_secs(120), || active_nodes(&url) == 2);
    let kills: u64 = std::env::var("NEUROLOV_CRASH_KILLS").ok().and_then(|v| v.parse().ok()).unwrap_or(4);
    let mut ids = Vec::new();
    let mut rng = fastrand::Rng::with_seed(std::process::id().into());
    for round in 0..kills {
        for _ in 0..2 {
            ids.push(submit(&dir, &url, shape, false)["id"].as_u64().expect("id"));
        }
        // Kill at a random moment: before, during or after payments.
        std::thread::sleep(Duration::from_millis(rng.u64(50..1_500)));
        procs.0[coordinator].kill().expect("kill");
        let _ = procs.0[coordinator].wait();
        let report = audit(&dir);
        assert_eq!(report["audit_ok"], true, "after kill {round}: {report}");
        assert_eq!(common::serve_with(&mut procs, &dir, &listen, serve_args), url);
        coordinator = procs.0.len() - 1;
    }
    wait_for("every job to finish", Duration::from_secs(300), || {
        ids.iter().all(|id| get_json(&format!("{url}/v1/jobs/{id}"))["state"] == "done")
    });
    let report = audit(&dir);
    assert_eq!(report["audit_ok"], true, "{report}");
    assert_eq!(report["total_supply_nano"], 500_000_000u64 * 1_000_000_000, "{report}");
    let tasks = tasks_per_job * ids.len() as u64;
    let stats = get_json(&format!("{url}/v1/stats"));
    assert_eq!(stats["ledger"]["paid_to_providers_nano"], tasks * paid, "{stats}");
    assert_eq!(stats["ledger"]["fees_nano"], tasks * fee, "{stats}");
    assert_eq!(stats["ledger"]["escrow_nano"], 0, "{stats}");
    // The client's history shows each job's escrow and its refund.
    let out = neurolov()
        .args(["wallet", "history", "--json", "--limit", "1000", "--coordinator", &url, "--key"])
        .arg(dir.join("client.json"))
        .output()
        .expect("wallet history");
    let history: serde_json::Value = serde_json::from_slice(&out.stdout).expect("history json");
    let count = |code: &str| history.as_array().expect("list").iter().filter(|t| t["code"] == code).count();
    assert_eq!(count("escrow"), ids.len(), "{history}");
    assert_eq!(count("escrow refund"), ids.len(), "{history}");
}

/// The README's main command: a whole network with a cheater, finished and audited.
#[test]
fn the_demo_verifies_pays_and_slashes() {
    let dir = temp_dir("demo");
    let out = neurolov()
        .args(["demo", "--json", "--cheaters", "1", "--backend", "cpu", "--data"])
        .arg(&dir)
        .output()
        .expect("demo runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // A clean stop: the embedded coordinator's last events are committed before the runtime goes (it used to log
    // "storage writer is gone; stopping" and exit 70 in --json mode).
    assert!(!stderr.contains("ERROR"), "{stderr}");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json report");
    assert_eq!(r["jobs_verified"], r["jobs_submitted"], "{r}");
    assert_eq!(r["jobs_failed"], 0, "{r}");
    if neurolov_kernels::gpu::gpu_required() {
        // A GPU adapter here (lavapipe at least): the WGSL jobs run too.
        assert_eq!(r["jobs_submitted"], 6, "{r}");
    }
    assert_eq!(r["wrong_results_accepted"], 0, "{r}");
    assert_eq!(r["cheaters"], 1);
    assert_eq!(r["cheaters_slashed"], 1, "{r}");
    assert_eq!(r["audit_ok"], true, "{r}");
    assert_eq!(r["total_supply_nano"], 500_000_000u64 * 1_000_000_000);
    let providers = r["providers"].as_array().expect("providers");
    assert_eq!(providers.len(), 4);
    for p in providers {
        if p["cheater"] == true {
            assert_eq!(p["paid_nano"], 0, "a cheater was paid: {p}");
        }
    }
    let paid: u64 = providers.iter().filter_map(|p| p["paid_nano"].as_u64()).sum();
    assert!(paid > 0, "{r}");
    assert_eq!(r["paid_to_providers_nano"], paid, "{r}");
    assert!(r["treasury_fee_nano"].as_u64().unwrap_or(0) > 0, "{r}");
}

/// Issue 9 §4: with no Vulkan driver visible, no node claims WGSL, so no node takes a WGSL task and fails it: the demo
/// runs its matmul jobs, says it skipped the WGSL ones, and exits 0 with every job it submitted verified. (Nodes
/// without an adapter used to take the WGSL tasks and fail them: "6 submitted, 4 completed and verified, 2 failed".)
#[cfg(target_os = "linux")]
#[test]
fn the_demo_without_a_gpu_adapter_runs_no_wgsl_on_nodes_that_cannot() {
    let dir = temp_dir("demo-no-adapter");
    let out = neurolov()
        .args(["demo", "--json", "--data"])
        .arg(&dir)
        .env("VK_ICD_FILENAMES", dir.join("no-such-icd.json"))
        .env("VK_DRIVER_FILES", dir.join("no-such-icd.json"))
        .env_remove(neurolov_kernels::gpu::REQUIRE_GPU_ENV)
        .output()
        .expect("demo runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("ERROR"), "{stderr}");
    assert!(stderr.contains("skipping the 2 WGSL jobs"), "{stderr}");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json report");
    assert_eq!(r["wgsl_jobs_skipped"], 2, "{r}");
    assert_eq!(r["jobs_submitted"], 4, "{r}");
    assert_eq!(r["jobs_verified"], 4, "{r}");
    assert_eq!(r["jobs_failed"], 0, "{r}");
    assert_eq!(r["audit_ok"], true, "{r}");
}

/// Issue 9 §4 on real processes: a node that finds no GPU adapter (no Vulkan driver visible to it) claims no WGSL and
/// is given no WGSL task, beside two nodes that have an adapter and do all the WGSL work; it fails nothing. (Nodes
/// without an adapter used to take WGSL tasks and fail them, "no gpu adapter found", until their jobs failed.)
#[cfg(target_os = "linux")]
#[test]
fn a_node_without_a_gpu_adapter_is_given_no_wgsl_task() {
    let dir = temp_dir("no-adapter-node");
    let mut procs = Procs(Vec::new());
    let url = serve(&mut procs, &dir);
    let bare_key = dir.join("bare.json");
    neurolov().args(["keygen", "--out"]).arg(&bare_key).output().expect("keygen");
    let bare = neurolov()
        .args(["node", "--coordinator", &url, "--slots", "4", "--key"])
        .arg(&bare_key)
        .env("VK_ICD_FILENAMES", dir.join("no-such-icd.json"))
        .env("VK_DRIVER_FILES", dir.join("no-such-icd.json"))
        .env_remove(neurolov_kernels::gpu::REQUIRE_GPU_ENV)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("node starts");
    procs.0.push(bare);
    wait_for("the adapter-less node to be attested", Duration::from_secs(60), || active_nodes(&url) == 1);
    let nodes = get_json(&format!("{url}/v1/nodes"));
    let bare_id = nodes[0]["id"].as_str().expect("id").to_string();
    assert_eq!(nodes[0]["wgsl"], false, "{nodes}");
    if !neurolov_kernels::gpu::gpu_required() {
        return; // Whether this machine has an adapter for the other two is not known here: the claim is the check.
    }
    start_node(&mut procs, &dir, &url, "gpu1", "auto");
    start_node(&mut procs, &dir, &url, "gpu2", "auto");
    wait_for("three nodes", Duration::from_secs(60), || active_nodes(&url) == 3);
    let client = Keypair::from_seed([94; 32]);
    post_signed_kp(&url, &client, "/v1/faucet", &serde_json::json!({}));
    let source = "@group(0) @binding(0) var<storage, read_write> out: array<u32>;\n\
                  @compute @workgroup_size(64) fn main(@builtin(global_invocation_id) id: vec3<u32>) {\n\
                  if (id.x < arrayLength(&out)) { out[id.x] = id.x * 3u + 1u; } }";
    let jobs: Vec<u64> = (0..4)
        .map(|_| {
            let job = serde_json::json!({
                "kind": "wgsl", "source": source, "entry_point": "main",
                "buffers": [{"binding": 0, "access": "read_write", "size_bytes": 4096}],
                "dispatch": [16, 1, 1], "work_mflop": 1,
            });
            post_signed_kp(&url, &client, "/v1/jobs", &job)["id"].as_u64().expect("job id")
        })
        .collect();
    for id in jobs {
        let job = format!("{url}/v1/jobs/{id}");
        wait_for("a WGSL job", Duration::from_secs(120), || get_json(&job)["state"] != "running");
        let j = get_json(&job);
        assert_eq!(j["state"], "done", "{j}");
        for t in j["tasks"].as_array().expect("tasks") {
            assert_ne!(t["node"], bare_id.as_str(), "a WGSL task went to the node without an adapter: {j}");
        }
    }
    let nodes = get_json(&format!("{url}/v1/nodes"));
    for n in nodes.as_array().expect("nodes") {
        assert_eq!(n["wgsl"], n["id"] != bare_id.as_str(), "{n}");
        assert_eq!(n["tasks_failed"], 0, "{n}");
    }
}

#[test]
fn bad_frames_on_a_real_socket_get_errors_and_the_server_keeps_serving() {
    let dir = temp_dir("frames");
    let mut procs = Procs(Vec::new());
    let url = serve(&mut procs, &dir);
    let ws_url = format!("{}/v1/nodes/ws", url.replace("http://", "ws://"));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let (mut ws, _) = tokio_tungstenite::connect_async(&ws_url).await.expect("connects");
        let nonce = match next(&mut ws).await {
            ToNode::Challenge { nonce, .. } => nonce,
            other => panic!("expected a challenge, got {other:?}"),
        };
        let kp = Keypair::from_seed([1; 32]);
        let register = FromNode::Register {
            version: 1,
            session: nonce.clone(),
            seq: 0,
            operator: kp.id(),
            kind: neurolov_protocol::messages::NodeKind::Native,
            claimed: Default::default(),
            price_nano_per_gflop: 1,
            slots: 1,
            operator_delegation: None,
        };
        let mut forged = Envelope::seal(&kp, &register);
        forged.signature = Envelope::seal(&Keypair::from_seed([2; 32]), &register).signature;
        for (frame, want) in [
            ("definitely not json".to_string(), ErrorCode::Malformed),
            (serde_json::to_string(&forged).unwrap(), ErrorCode::BadSignature),
        ] {
            ws.send(Message::Text(frame.into())).await.expect("send");
            match next(&mut ws).await {
                ToNode::Error { code, .. } => assert_eq!(code, want),
                other => panic!("expected an error, got {other:?}"),
            }
        }
        // A proper registration still works on the same connection; replaying it is refused.
        let good = serde_json::to_string(&Envelope::seal(&kp, &register)).unwrap();
        ws.send(Message::Text(good.clone().into())).await.expect("send");
        assert!(matches!(next(&mut ws).await, ToNode::Registered { .. }));
        ws.send(Message::Text(good.into())).await.expect("send");
        loop {
            match next(&mut ws).await {
                ToNode::Error { code, .. } => {
                    assert_eq!(code, ErrorCode::Replayed);
                    break;
                }
                ToNode::Task(_) => continue,
                other => panic!("expected replayed, got {other:?}"),
            }
        }
        // An oversized frame ends that connection, not the server.
        let huge = "x".repeat(1 << 20);
        let _ = ws.send(Message::Text(huge.into())).await;
    });
    assert!(get_json(&format!("{url}/v1/nodes")).is_array(), "server stopped serving");
    let (second, _) = rt.block_on(tokio_tungstenite::connect_async(&ws_url)).expect("server still accepts nodes");
    drop(second);
}

async fn next<S>(ws: &mut S) -> ToNode
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        match tokio::time::timeout(Duration::from_secs(30), ws.next()).await.expect("a frame in time") {
            Some(Ok(Message::Text(t))) => return serde_json::from_str(t.as_str()).expect("a ToNode frame"),
            Some(Ok(_)) => continue,
            other => panic!("connection ended: {other:?}"),
        }
    }
}

/// The wallet commands against a real coordinator: faucet, transfer (a repeated id is applied once), balance, stake,
/// unstake, and the clear refusals that change nothing.
#[test]
fn wallet_commands_move_money_once_and_refuse_clearly() {
    let dir = temp_dir("wallet");
    let mut procs = Procs(Vec::new());
    let url = serve(&mut procs, &dir);
    let key = |name: &str| {
        let path = dir.join(format!("{name}.json"));
        let out = neurolov().args(["keygen", "--json", "--out"]).arg(&path).output().expect("keygen");
        let id =
            serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("json")["id"].as_str().unwrap().to_string();
        (path, id)
    };
    let (alice, _) = key("alice");
    let (bob, bob_id) = key("bob");
    let wallet = |args: &[&str], key: &std::path::Path| {
        let out = neurolov()
            .arg("wallet")
            .args(args)
            .args(["--coordinator", &url, "--json", "--key"])
            .arg(key)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let balance = |key: &std::path::Path| -> serde_json::Value {
        let (ok, out, err) = wallet(&["balance"], key);
        assert!(ok, "{err}");
        serde_json::from_str(&out).unwrap()
    };
    assert!(wallet(&["faucet"], &alice).0);
    let (ok, _, err) = wallet(&["faucet"], &alice);
    assert!(!ok && err.contains("already received"), "{err}");
    // The same transfer id twice: applied once.
    for expect in ["applied", "already_applied"] {
        let (ok, out, err) = wallet(&["transfer", "--to", &bob_id, "--amount", "12.5", "--id", "7"], &alice);
        assert!(ok, "{err}");
        assert!(out.contains(expect), "{out}");
    }
    assert_eq!(balance(&alice)["balance_nano"], 987_500_000_000u64);
    assert_eq!(balance(&bob)["balance_nano"], 12_500_000_000u64);
    // Insufficient funds and a bad amount are refused and change nothing.
    let (ok, _, err) = wallet(&["transfer", "--to", &bob_id, "--amount", "5000", "--id", "8"], &alice);
    assert!(!ok && err.contains("insufficient funds"), "{err}");
    let (ok, _, err) = wallet(&["transfer", "--to", &bob_id, "--amount", "1.0000000001"], &alice);
    assert!(!ok && err.contains("at most 9 decimals"), "{err}");
    assert_eq!(balance(&alice)["balance_nano"], 987_500_000_000u64);
    // Stake, then unstake: the unstaked part is reserved until the delay has passed.
    assert!(!wallet(&["stake", "--amount", "100", "--id", "1"], &bob).0, "bob has only 12.5 NLOV");
    let (ok, _, err) = wallet(&["stake", "--amount", "10", "--id", "1"], &bob);
    assert!(ok, "{err}");
    assert!(wallet(&["unstake", "--amount", "4", "--id", "2"], &bob).0);
    let b = balance(&bob);
    assert_eq!(
        (b["balance_nano"].as_u64(), b["staked_nano"].as_u64(), b["unstaking_nano"].as_u64()),
        (Some(2_500_000_000), Some(10_000_000_000), Some(4_000_000_000)),
        "{b}"
    );
    let audit = neurolov().args(["ledger", "audit", "--json", "--data"]).arg(dir.join("coordinator")).output().unwrap();
    assert!(audit.status.success(), "{}", String::from_utf8_lossy(&audit.stdout));
}

/// Blob uploads on a real coordinator: unsigned or from a stranger with no NLOV they are refused (so nobody can
/// fill the disk for free), from a client holding NLOV they are stored, a body that does not hash to its name is
/// refused, and storing what is already there needs nothing. (Nodes' result uploads are covered by every job test.)
#[test]
fn blob_uploads_need_a_signer_with_work_or_funds() {
    let dir = temp_dir("uploads");
    let mut procs = Procs(Vec::new());
    let url = serve(&mut procs, &dir);
    let blob: Vec<u8> = (0..4096u32).flat_map(|i| i.to_le_bytes()).collect();
    let client = Keypair::from_seed([77; 32]);
    assert_eq!(put_blob(&url, None, &blob, None), 401, "unsigned");
    assert_eq!(put_blob(&url, Some(&client), &blob, None), 403, "signed by a client with an empty wallet");
    post_signed_kp(&url, &client, "/v1/faucet", &serde_json::json!({}));
    let wrong_name = blake3::hash(b"something else").to_hex().to_string();
    // An upload is signed over its name; a body that does not hash to that name fails the signature check.
    assert_eq!(put_blob(&url, Some(&client), &blob, Some(&wrong_name)), 401, "body does not hash to its name");
    assert_eq!(put_blob(&url, Some(&client), &blob, None), 201, "a funded client");
    assert_eq!(common::get_bytes(&format!("{url}/v1/blobs/{}", blake3::hash(&blob).to_hex())), blob);
    assert_eq!(put_blob(&url, None, &blob, None), 200, "already stored");
}

/// Issue 9 §3: a request that will be refused costs the coordinator nothing. An unfunded key listing one blob a
/// thousand times is refused on the count, before any blob is read; an unfunded key's kernel is not stored; a job
/// with no price (which escrowed nothing) is refused.
#[test]
fn refused_jobs_cost_the_coordinator_nothing() {
    let dir = temp_dir("refused");
    let mut procs = Procs(Vec::new());
    let url = serve(&mut procs, &dir);
    let client = Keypair::from_seed([78; 32]);
    let source = "@group(0) @binding(0) var<storage, read_write> out: array<u32>;\n\
                  @compute @workgroup_size(1) fn main() { out[0] = 7u; }";
    let buffer =
        |init: Option<&str>| serde_json::json!({"binding": 0, "access": "read_write", "size_bytes": 4, "init": init});
    let job = |buffers: Vec<serde_json::Value>| serde_json::json!({"kind": "wgsl", "source": source, "entry_point": "main", "buffers": buffers, "dispatch": [1, 1, 1]});
    let unknown = blake3::hash(b"never uploaded").to_hex().to_string();
    let (status, reply) =
        common::post_signed_status(&url, &client, "/v1/jobs", &job(vec![buffer(Some(&unknown)); 1000]));
    assert_eq!(status, 400);
    assert!(reply["error"].as_str().unwrap_or_default().contains("at most"), "{reply}");
    let (status, reply) = common::post_signed_status(&url, &client, "/v1/jobs", &job(vec![buffer(None)]));
    assert_eq!(status, 400);
    assert!(reply["error"].as_str().unwrap_or_default().contains("insufficient funds"), "{reply}");
    let source_hash = blake3::hash(source.as_bytes()).to_hex().to_string();
    assert!(common::get_bytes(&format!("{url}/v1/blobs/{source_hash}")).is_empty(), "a refused kernel was stored");
    post_signed_kp(&url, &client, "/v1/faucet", &serde_json::json!({}));
    let free = serde_json::json!({"kind": "matmul", "m": 8192, "n": 8192, "k": 8192, "a": {"seed": 1}, "b": {"seed": 2},
                                  "max_price_nano_per_gflop": 0});
    let (status, reply) = common::post_signed_status(&url, &client, "/v1/jobs", &free);
    assert_eq!(status, 400, "{reply}");
    assert!(reply["error"].as_str().unwrap_or_default().contains("at least"), "{reply}");
}

/// Issue 9 §3: another site cannot turn a visitor's tab into a node (a WebSocket whose Origin is not the
/// coordinator's own is refused; a native node sends none) nor frame the provider page.
#[test]
fn foreign_pages_can_neither_open_node_sockets_nor_frame_the_provider() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let dir = temp_dir("origin");
    let mut procs = Procs(Vec::new());
    let url = serve(&mut procs, &dir);
    let host = url.trim_start_matches("http://").to_string();
    let ws_url = format!("ws://{host}/v1/nodes/ws");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let status = |origin: Option<&str>| {
        let mut req = ws_url.as_str().into_client_request().expect("request");
        if let Some(o) = origin {
            req.headers_mut().insert("origin", o.parse().expect("header"));
        }
        rt.block_on(async {
            match tokio_tungstenite::connect_async(req).await {
                Ok((_, resp)) => resp.status().as_u16(),
                Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
                Err(e) => panic!("{e}"),
            }
        })
    };
    assert_eq!(status(Some("https://evil.example")), 403, "a foreign origin");
    assert_eq!(status(Some(&format!("http://{host}"))), 101, "the coordinator's own page");
    assert_eq!(status(None), 101, "a native node");
    let headers = std::process::Command::new("curl").args(["-sI", &format!("{url}/provide")]).output().expect("curl");
    let headers = String::from_utf8_lossy(&headers.stdout).to_lowercase();
    assert!(headers.contains("frame-ancestors 'none'"), "{headers}");
}

/// The coordinator's resident memory, from /proc.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kb * 1024
}

/// Issue 9 §3: slow readers of a big blob cost the coordinator a chunk each, not the blob: 16 readers that do not
/// read a 64 MiB blob used to make it hold 16 copies (≈ 1 GiB); streamed, it holds what the sockets buffer.
#[test]
fn slow_readers_of_a_big_blob_cost_the_coordinator_little_memory() {
    use std::io::Write;
    let dir = temp_dir("slow-readers");
    let mut procs = Procs(Vec::new());
    let url = serve(&mut procs, &dir);
    let pid = procs.0[0].id();
    let client = Keypair::from_seed([79; 32]);
    post_signed_kp(&url, &client, "/v1/faucet", &serde_json::json!({}));
    let blob: Vec<u8> = (0..16u32 << 20).flat_map(|i| i.wrapping_mul(2_654_435_761).to_le_bytes()).collect();
    assert_eq!(put_blob(&url, Some(&client), &blob, None), 201);
    let hash = blake3::hash(&blob).to_hex().to_string();
    drop(blob);
    std::thread::sleep(Duration::from_millis(500));
    let before = rss_bytes(pid);
    let host = url.trim_start_matches("http://");
    let readers: Vec<std::net::TcpStream> = (0..16)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(host).expect("connect");
            write!(s, "GET /v1/blobs/{hash} HTTP/1.1\r\nHost: {host}\r\n\r\n").expect("request");
            s
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    let grew = rss_bytes(pid).saturating_sub(before);
    drop(readers);
    assert!(grew < 256 << 20, "16 slow readers of a 64 MiB blob grew the coordinator by {} MiB", grew >> 20);
}

/// Issue 9 §5: a node speaks `wss://` and `https://` to a coordinator behind TLS (here a TLS terminator in front of
/// it, with a certificate the node trusts through `SSL_CERT_FILE`): it registers, uploads its challenge's result
/// over HTTPS and is attested. The node's WebSocket client used to be built without TLS.
#[test]
fn a_node_reaches_a_coordinator_behind_tls() {
    use std::io::BufRead;
    let dir = temp_dir("tls");
    let mut procs = Procs(Vec::new());
    let url = serve(&mut procs, &dir);
    // A test CA and a certificate for localhost signed by it (webpki refuses a CA certificate as the server's own).
    let (ca, cert, key) = (dir.join("ca.pem"), dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(dir.join("leaf.ext"), "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n").expect("ext");
    let openssl = |args: &[&str]| {
        let made = std::process::Command::new("openssl").current_dir(&dir).args(args).output().expect("openssl");
        assert!(made.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&made.stderr));
    };
    openssl(
        &["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=test-ca"]
            .into_iter()
            .chain(["-keyout", "ca.key", "-out", "ca.pem"])
            .collect::<Vec<_>>(),
    );
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "key.pem",
        "-out",
        "leaf.csr",
    ]);
    openssl(
        &["x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "1"]
            .into_iter()
            .chain(["-extfile", "leaf.ext", "-out", "cert.pem"])
            .collect::<Vec<_>>(),
    );
    let port = url.rsplit(':').next().expect("port");
    let mut proxy = std::process::Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/tls_proxy.py"))
        .args([&cert, &key])
        .arg(port)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs the TLS terminator");
    let mut line = String::new();
    std::io::BufReader::new(proxy.stdout.take().expect("stdout")).read_line(&mut line).expect("port line");
    procs.0.push(proxy);
    let tls_url = format!("https://localhost:{}", line.trim());
    let node_key = dir.join("node.json");
    neurolov().args(["keygen", "--out"]).arg(&node_key).output().expect("keygen");
    let node = neurolov()
        .args(["node", "--coordinator", &tls_url, "--backend", "cpu", "--key"])
        .arg(&node_key)
        .env("SSL_CERT_FILE", &ca)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("node starts");
    procs.0.push(node);
    wait_for("the node behind TLS to be attested", Duration::from_secs(60), || active_nodes(&url) == 1);
}

/// Issue 9 §3: one address cannot take every node slot (there were 10,000, with no limit per address): from
/// 127.0.0.2 the 65th socket is refused while the first 64 stay open.
#[test]
fn one_address_cannot_take_every_node_slot() {
    let dir = temp_dir("per-address");
    let mut procs = Procs(Vec::new());
    let url = serve(&mut procs, &dir);
    let host = url.trim_start_matches("http://").to_string();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let open = |from: &'static str| {
            let host = host.clone();
            async move {
                let socket = tokio::net::TcpSocket::new_v4().expect("socket");
                socket.bind(format!("{from}:0").parse().expect("address")).expect("bind");
                let stream = socket.connect(host.parse().expect("address")).await.expect("connect");
                tokio_tungstenite::client_async(format!("ws://{host}/v1/nodes/ws"), stream).await
            }
        };
        let mut held = Vec::new();
        for i in 0..64 {
            held.push(open("127.0.0.2").await.unwrap_or_else(|e| panic!("socket {i}: {e}")));
        }
        match open("127.0.0.2").await {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status().as_u16(), 429),
            other => panic!("the 65th socket from one address: {:?}", other.map(|_| ())),
        }
        assert!(open("127.0.0.3").await.is_ok(), "another address is refused too");
    });
}

/// Issue 9 §3: a submission retried with its idempotency key (a fresh signature, so the replay cache lets it in) is
/// answered with the job it made: 201, then 200 with the same id.
#[test]
fn a_retried_submission_is_one_job() {
    let dir = temp_dir("idempotent");
    let mut procs = Procs(Vec::new());
    let url = serve(&mut procs, &dir);
    let client = Keypair::from_seed([80; 32]);
    post_signed_kp(&url, &client, "/v1/faucet", &serde_json::json!({}));
    let job = serde_json::json!({"kind": "matmul", "m": 8, "n": 8, "k": 8, "a": {"seed": 1}, "b": {"seed": 2},
                                 "idempotency_key": "order-42"});
    let (first, reply) = common::post_signed_status(&url, &client, "/v1/jobs", &job);
    assert_eq!(first, 201, "{reply}");
    std::thread::sleep(Duration::from_millis(5)); // another timestamp, another signature
    let (again, reply2) = common::post_signed_status(&url, &client, "/v1/jobs", &job);
    assert_eq!((again, &reply2["id"]), (200, &reply["id"]), "{reply2}");
}

/// Issue 9 §3: an upload is judged before its body is read. A stranger announcing a 200 MiB blob gets its 401 at
/// once, without sending a byte of it (the body used to be buffered whole before the signature was checked).
#[test]
fn an_unsigned_upload_is_refused_before_its_body_is_read() {
    use std::io::{Read, Write};
    let dir = temp_dir("upload-first");
    let mut procs = Procs(Vec::new());
    let url = serve(&mut procs, &dir);
    let host = url.trim_start_matches("http://");
    let hash = blake3::hash(b"never sent").to_hex();
    let mut s = std::net::TcpStream::connect(host).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    write!(s, "PUT /v1/blobs/{hash} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\n\r\n", 200u64 << 20)
        .expect("headers");
    let mut reply = [0u8; 64];
    let n = s.read(&mut reply).expect("an answer before the body");
    let head = String::from_utf8_lossy(&reply[..n]);
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
}

/// Issue 10 §3: the CLI is a real client. A client multiplies its own matrices (A from a NumPy file, B raw f32) and
/// gets C back as a NumPy file; runs its own WGSL kernel from a file with an input buffer; lists its jobs; cancels
/// one that cannot be placed and gets its escrow back.
#[test]
fn the_cli_runs_a_clients_own_matrices_and_kernel_and_cancels_a_job() {
    let dir = temp_dir("cli-client");
    let mut procs = Procs(Vec::new());
    let url = serve(&mut procs, &dir);
    start_node(&mut procs, &dir, &url, "k1", "auto");
    start_node(&mut procs, &dir, &url, "k2", "auto");
    wait_for("two attested nodes", Duration::from_secs(120), || active_nodes(&url) == 2);
    let key = dir.join("me.json");
    assert!(neurolov().args(["keygen", "--out"]).arg(&key).output().expect("keygen").status.success());
    let cli = |args: &[&str]| {
        let out = neurolov().args(args).args(["--coordinator", &url, "--key"]).arg(&key).output().expect("neurolov");
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    cli(&["wallet", "faucet"]);
    let funded = cli(&["wallet", "balance", "--json"]);
    // A = [[0, .5, 1], [1.5, 2, 2.5]] written by numpy; B (3×2) raw little-endian f32.
    let a = dir.join("a.npy");
    std::fs::copy(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/a23.npy"), &a).expect("a");
    let b_values = [1.0f32, -1.0, 2.0, 0.5, -3.0, 4.0];
    let b = dir.join("b.f32");
    std::fs::write(&b, b_values.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>()).expect("b");
    let a_str = a.to_string_lossy().to_string();
    let b_str = b.to_string_lossy().to_string();
    let status: serde_json::Value = serde_json::from_str(&cli(&[
        "job", "submit", "--a", &a_str, "--b", &b_str, "--matmul", "2x2x3", "--wait", "--json",
    ]))
    .expect("status json");
    assert_eq!((&status["state"], &status["result_shape"]), (&"done".into(), &serde_json::json!([2, 2])), "{status}");
    let matmul_id = status["id"].as_u64().expect("id");
    let c = dir.join("c.npy");
    cli(&["job", "result", &matmul_id.to_string(), "--out", &c.to_string_lossy()]);
    let c_bytes = std::fs::read(&c).expect("c.npy");
    assert!(c_bytes.starts_with(b"\x93NUMPY\x01\x00") && c_bytes[10..].starts_with(b"{'descr': '<f4'"));
    let header_len = usize::from(u16::from_le_bytes([c_bytes[8], c_bytes[9]]));
    assert!(String::from_utf8_lossy(&c_bytes[10..10 + header_len]).contains("'shape': (2, 2)"));
    let got: Vec<f32> =
        c_bytes[10 + header_len..].chunks_exact(4).map(|x| f32::from_le_bytes([x[0], x[1], x[2], x[3]])).collect();
    let a_values = [0.0f32, 0.5, 1.0, 1.5, 2.0, 2.5];
    let want: Vec<f32> = (0..2)
        .flat_map(|i| (0..2).map(move |j| (0..3).map(|k| a_values[i * 3 + k] * b_values[k * 2 + j]).sum::<f32>()))
        .collect();
    assert_eq!(got, want);

    // The client's own kernel: doubles its input buffer into the output.
    let kernel = dir.join("double.wgsl");
    std::fs::write(
        &kernel,
        "@group(0) @binding(0) var<storage, read> input: array<u32>;\n\
         @group(0) @binding(1) var<storage, read_write> out: array<u32>;\n\
         @compute @workgroup_size(16) fn main(@builtin(global_invocation_id) id: vec3<u32>) {\n\
         if (id.x < arrayLength(&out)) { out[id.x] = input[id.x] * 2u; } }",
    )
    .expect("kernel");
    let input: Vec<u32> = (0..16).map(|i| i * 7 + 1).collect();
    let input_file = dir.join("input.bin");
    std::fs::write(&input_file, input.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>()).expect("input");
    let read_buffer = format!("0:read:{}", input_file.display());
    let status: serde_json::Value = serde_json::from_str(&cli(&[
        "job",
        "submit",
        "--kernel",
        &kernel.to_string_lossy(),
        "--buffer",
        &read_buffer,
        "--buffer",
        "1:read_write:64",
        "--dispatch",
        "1,1,1",
        "--wait",
        "--json",
    ]))
    .expect("status json");
    assert_eq!(status["state"], "done", "{status}");
    let wgsl_id = status["id"].as_u64().expect("id");
    let out = dir.join("out.bin");
    cli(&["job", "result", &wgsl_id.to_string(), "--out", &out.to_string_lossy()]);
    let doubled: Vec<u32> = std::fs::read(&out)
        .expect("out")
        .chunks_exact(4)
        .map(|x| u32::from_le_bytes([x[0], x[1], x[2], x[3]]))
        .collect();
    assert_eq!(doubled, input.iter().map(|x| x * 2).collect::<Vec<_>>());

    // A job priced below every node's ask waits; its client cancels it and has all its escrow back.
    let before: serde_json::Value = serde_json::from_str(&cli(&["wallet", "balance", "--json"])).expect("balance");
    let created: serde_json::Value =
        serde_json::from_str(&cli(&["job", "submit", "--matmul", "64x64x64", "--max-price", "1", "--json"]))
            .expect("created");
    let waiting_id = created["id"].as_u64().expect("id");
    let cancelled: serde_json::Value =
        serde_json::from_str(&cli(&["job", "cancel", &waiting_id.to_string(), "--json"])).expect("cancelled");
    assert_eq!((&cancelled["state"], &cancelled["reason"]), (&"failed".into(), &"cancelled by its client".into()));
    let after: serde_json::Value = serde_json::from_str(&cli(&["wallet", "balance", "--json"])).expect("balance");
    assert_eq!(after["balance_nano"], before["balance_nano"], "the escrow did not come back");
    let again = neurolov()
        .args(["job", "cancel", &waiting_id.to_string(), "--coordinator", &url, "--key"])
        .arg(&key)
        .output()
        .expect("cancel again");
    assert!(!again.status.success() && String::from_utf8_lossy(&again.stderr).contains("409"));
    let listed: Vec<serde_json::Value> =
        serde_json::from_str(&cli(&["job", "list", "--mine", "--json"])).expect("list");
    let ids: Vec<u64> = listed.iter().filter_map(|j| j["id"].as_u64()).collect();
    assert_eq!(ids, [waiting_id, wgsl_id, matmul_id], "{listed:?}");
    assert_ne!(funded, "", "no balance printed");
}

/// The session-capacity load generator against a real coordinator: sessions from two loopback source addresses
/// register, pass attestation and heartbeat, and their round trips are measured; the per-address cap refuses the
/// sessions past it with a clear reason, and a coordinator that is not on loopback is refused by the generator.
#[test]
fn the_load_generator_admits_attests_and_measures_sessions_within_the_address_cap() {
    let dir = temp_dir("loadgen");
    let mut procs = Procs(Vec::new());
    // Challenges small enough for the generator to compute (16³; a test network's 64³ is 16 KiB, past inline size).
    let serve = ["--listen", "127.0.0.1:0", "--heartbeat-ms", "500", "--attestation-size", "16"];
    let cap = ["--max-attestation-size", "16", "--max-connections-per-address", "30"];
    let url = common::serve_args(&mut procs, &dir, &[&serve[..], &cap[..]].concat());
    let run = |sessions: &str, sources: &str| {
        let out = neurolov()
            .args(["loadgen", "--coordinator", &url, "--sessions", sessions, "--sources", sources])
            .args(["--phases", "100:1", "--admit-timeout-s", "20", "--json"])
            .output()
            .expect("loadgen runs");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("a json report")
    };
    let report = run("40", "127.0.0.2,127.0.0.3");
    assert_eq!((report["registered"].as_u64(), report["failed"].as_u64()), (Some(40), Some(0)), "{report}");
    // `attested` is the coordinator's own count (`/v1/stats`), read while the sessions were open.
    assert!(report["attested"].as_u64() >= Some(40), "{report}");
    let phase = &report["phases"][0];
    assert!(phase["samples"].as_u64() >= Some(40), "every session measured a heartbeat: {phase}");
    assert!(phase["rtt_p99_ms"].as_f64() > Some(0.0), "{phase}");

    // 35 from one address (the first run's sessions ended with it): 30 fit under the cap, 5 are refused.
    let capped = run("35", "127.0.0.2");
    assert_eq!((capped["registered"].as_u64(), capped["failed"].as_u64()), (Some(30), Some(5)), "{capped}");
    assert!(capped["failure_reasons"].to_string().contains("429"), "{capped}");

    let refused = neurolov().args(["loadgen", "--coordinator", "http://192.0.2.1:7070"]).output().expect("runs");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("loopback"));
}

/// Requests waiting for a job to end are bounded: with room for one waiter, a second `?wait_ms=` request on a job
/// that cannot end (no nodes) is answered at once with the job still running, while the first still waits.
#[test]
fn waiting_requests_past_the_cap_are_answered_at_once() {
    let dir = temp_dir("waiters");
    let mut procs = Procs(Vec::new());
    let url = common::serve_with(&mut procs, &dir, "127.0.0.1:0", &["--max-job-waiters", "1"]);
    let id = submit(&dir, &url, "2x2x2", false)["id"].as_u64().expect("a job id");
    let waiting = format!("{url}/v1/jobs/{id}?wait_ms=30000");
    let first = {
        let waiting = waiting.clone();
        std::thread::spawn(move || get_json(&waiting))
    };
    // The first request holds the only permit once it is in; the second finds none and is not held.
    std::thread::sleep(Duration::from_millis(500));
    let second = get_json(&waiting);
    assert_eq!(second["state"], "running", "{second}");
    assert!(!first.is_finished(), "the first request waits for the job (30 s) while the second was answered");
}

/// A sync client's whole round trip is one request: `POST /v1/jobs?wait_ms=` answers once the job is done and
/// durable, with a small result inside the reply — the same bytes its client reads with `GET /v1/jobs/{id}/result`.
#[test]
fn a_waited_submission_carries_its_small_result() {
    let dir = temp_dir("waited");
    let mut procs = Procs(Vec::new());
    let url = serve(&mut procs, &dir);
    start_node(&mut procs, &dir, &url, "n", "cpu");
    wait_for("the node's attestation", Duration::from_secs(60), || active_nodes(&url) >= 1);
    submit(&dir, &url, "1x1x1", true); // funds the client key
    let client = dir.join("client.json");
    let kp = Keypair::from_solana_json(&std::fs::read_to_string(&client).unwrap()).unwrap();
    let job = serde_json::json!({"kind": "matmul", "m": 3, "n": 5, "k": 4, "a": {"seed": 11}, "b": {"seed": 12}});
    let reply = post_signed_kp(&url, &kp, "/v1/jobs?wait_ms=30000", &job);
    assert_eq!(reply["status"]["state"], "done", "{reply}");
    use base64::Engine;
    let inline = base64::engine::general_purpose::STANDARD.decode(reply["result"].as_str().expect("a result")).unwrap();
    let id = reply["id"].as_u64().unwrap();
    assert_eq!(common::get_result(&url, Some(&client), id), (200, inline.clone()));
    check_result(&dir, &url, id, 3, 5, 4);
    // Without waiting there is nothing to carry.
    let reply = post_signed_kp(&url, &kp, "/v1/jobs", &job);
    assert!(reply.get("result").is_none(), "{reply}");
}
