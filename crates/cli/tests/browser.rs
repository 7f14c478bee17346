//! The browser provider in a real headless Chromium (WebGPU on SwiftShader): a tab opened on `/provide` joins a
//! coordinator on loopback, passes the same attestation as native nodes, and shares a matmul job with a native node —
//! its tasks verified and paid; a page variant that forges results is caught and never paid; and the dashboard at
//! `/` shows the nodes and the statistics (checked on the DOM, with a screenshot kept in `target/browser-artifacts`);
//! and a tab whose page is hidden stops providing until it is visible again (driven over the DevTools protocol).
//!
//! Needs `chromium` (installed by `scripts/test`). Without it the tests say so and pass, unless
//! `NEUROLOV_REQUIRE_BROWSER=1` (set by `scripts/test`) makes that a failure.

#![allow(clippy::unwrap_used)] // Test helpers unwrap: a panic is the failure report.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use common::{
    Procs, browser, cdp_eval, chromium, get_json, post_signed, serve, start_node, submit, temp_dir, wait_for,
};

/// On a failing test, prints what every tab wrote to its console: the page's own account of what went wrong.
struct TabLogs(PathBuf);

impl Drop for TabLogs {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let Ok(entries) = std::fs::read_dir(&self.0) else { return };
        for path in entries.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "log")) {
            eprintln!("---- console of {}", path.display());
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            for line in text.lines().filter(|l| l.contains("CONSOLE")) {
                eprintln!("{line}");
            }
        }
    }
}

fn open_provider(procs: &mut Procs, chromium: &Path, dir: &Path, url: &str, name: &str, extra: &str) {
    let profile = dir.join(format!("profile-{name}"));
    std::fs::create_dir_all(&profile).unwrap();
    let child: Child = browser(chromium, &profile)
        .arg(format!("{url}/provide?autostart=1&visible=any&duty=100{extra}"))
        .spawn()
        .expect("chromium starts");
    procs.0.push(child);
}

fn browser_nodes(url: &str) -> Vec<serde_json::Value> {
    get_json(&format!("{url}/v1/nodes"))
        .as_array()
        .map(|ns| ns.iter().filter(|n| n["kind"] == "browser").cloned().collect())
        .unwrap_or_default()
}

#[test]
fn a_browser_tab_shares_a_job_is_paid_and_a_forging_tab_is_caught() {
    let Some(chromium) = chromium() else { return };
    let dir = temp_dir("browser");
    let _logs = TabLogs(dir.clone());
    let mut procs = Procs(Vec::new());
    let url = serve(&mut procs, &dir);
    // The native node has 4 slots and the tab 1: the scheduler fills the faster native node first, and the tab gets
    // the tasks that find it full.
    start_node(&mut procs, &dir, &url, "native", "cpu");
    open_provider(&mut procs, &chromium, &dir, &url, "honest", "");
    wait_for("the browser node to pass attestation", Duration::from_secs(180), || {
        browser_nodes(&url).iter().any(|n| n["state"] == "active")
    });
    let node = browser_nodes(&url).into_iter().find(|n| n["state"] == "active").unwrap();
    let id = node["id"].as_str().unwrap().to_string();
    eprintln!("browser node {id}: backend {} on {}", node["backend"], node["adapter"]);
    assert!(
        ["webgpu", "webgl2", "cpu"].contains(&node["backend"].as_str().unwrap_or("")),
        "unknown backend reported: {node}"
    );
    assert!(node["gflops_verified"].as_f64().unwrap() > 0.0, "{node}");

    // A job big enough to be shared: 32 row tasks, and the native node takes them four at a time.
    let mut shared = false;
    for _ in 0..4 {
        let job = submit(&dir, &url, "1024x64x64", true);
        let id_job = job["id"].as_u64().expect("job id");
        let status = get_json(&format!("{url}/v1/jobs/{id_job}"));
        assert_eq!(status["state"], "done", "{status}");
        let ours = status["tasks"].as_array().unwrap().iter().filter(|t| t["node"] == id.as_str()).count();
        if ours > 0 {
            shared = true;
            break;
        }
    }
    assert!(shared, "the browser node never got a task of a shared job");
    let me = browser_nodes(&url).into_iter().find(|n| n["id"] == id.as_str()).unwrap();
    assert!(me["tasks_verified"].as_u64().unwrap() >= 2, "attestation and at least one job task: {me}");
    let wallet = get_json(&format!("{url}/v1/accounts/{id}"));
    assert!(wallet["balance_nano"].as_u64().unwrap() > 0, "the browser node was not paid: {wallet}");

    // A client's WGSL kernel: the tab is new, so its result is replicated on the native node (lavapipe in the kernel
    // worker) and the two must agree bit for bit — the same WGSL through Tint/SwiftShader and naga/Vulkan.
    let wgsl = "@group(0) @binding(0) var<storage, read_write> out: array<u32>;\n\
                @compute @workgroup_size(64) fn main(@builtin(global_invocation_id) id: vec3<u32>) {\n\
                  if (id.x < arrayLength(&out)) { out[id.x] = id.x * id.x * 2654435761u + 7u; }\n}\n";
    // Eight at once: the native node's four slots fill, and the tab takes the rest (new to WGSL, it is likely
    // replicated on the native node, and any disagreement would convict one of them).
    let before = me["tasks_verified"].as_u64().unwrap();
    let jobs: Vec<u64> = (0..8)
        .map(|_| {
            let reply = post_signed(
                &url,
                &dir.join("client.json"),
                "/v1/jobs",
                &serde_json::json!({
                    "kind": "wgsl", "source": wgsl, "entry_point": "main",
                    "buffers": [{"binding": 0, "access": "read_write", "size_bytes": 4096}], "dispatch": [16, 1, 1],
                }),
            );
            reply["id"].as_u64().unwrap()
        })
        .collect();
    wait_for("the WGSL jobs", Duration::from_secs(120), || {
        jobs.iter().all(|job| {
            let s = get_json(&format!("{url}/v1/jobs/{job}"));
            assert_ne!(s["state"], "failed", "{s}");
            s["state"] == "done"
        })
    });
    let want: Vec<u8> = (0u32..1024)
        .flat_map(|i| i.wrapping_mul(i).wrapping_mul(2_654_435_761).wrapping_add(7).to_le_bytes())
        .collect();
    for job in &jobs {
        let (status, bytes) = common::get_result(&url, Some(&dir.join("client.json")), *job);
        assert_eq!((status, bytes), (200, want.clone()), "job {job}'s result is wrong");
    }
    let after =
        browser_nodes(&url).into_iter().find(|n| n["id"] == id.as_str()).unwrap()["tasks_verified"].as_u64().unwrap();
    let browser_ran_wgsl = after > before;
    assert!(browser_ran_wgsl, "the tab never ran (and agreed on) a WGSL task");
    assert!(get_json(&format!("{url}/v1/evidence")).as_array().unwrap().is_empty(), "an honest node was convicted");

    // A tab that forges its results: its signed commitment convicts it, it never gets paid work, it earns nothing.
    open_provider(&mut procs, &chromium, &dir, &url, "cheat", "&cheat=1");
    wait_for("the forging tab to be caught", Duration::from_secs(180), || {
        get_json(&format!("{url}/v1/evidence")).as_array().is_some_and(|e| e.iter().any(|e| e["node"] != id.as_str()))
    });
    let evidence = get_json(&format!("{url}/v1/evidence"));
    let cheat = evidence.as_array().unwrap().iter().find(|e| e["node"] != id.as_str()).unwrap()["node"]
        .as_str()
        .unwrap()
        .to_string();
    let view = browser_nodes(&url).into_iter().find(|n| n["id"] == cheat.as_str()).unwrap();
    assert_eq!(view["tasks_verified"], 0, "{view}");
    assert_ne!(view["state"], "active", "{view}");
    assert_eq!(get_json(&format!("{url}/v1/accounts/{cheat}"))["balance_nano"], 0);

    // The dashboard shows both browser nodes and the statistics.
    let artifacts = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("../browser-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let profile = dir.join("profile-dashboard");
    let dump = browser(&chromium, &profile)
        .args(["--dump-dom", "--virtual-time-budget=5000", "--window-size=1280,1000"])
        .arg(format!("{url}/"))
        .stdout(Stdio::piped())
        .output()
        .expect("chromium dumps the dashboard");
    let dom = String::from_utf8_lossy(&dump.stdout);
    assert!(dom.contains(&format!("data-node=\"{id}\"")), "the dashboard does not list the browser node");
    assert!(dom.contains(&format!("data-node=\"{cheat}\"")), "the dashboard does not list the forging node");
    // GPU nodes are shown apart from software adapters and CPUs (here every node is software or CPU).
    let shown = |id: &str| dom.split(&format!("id=\"{id}\">")).nth(1).and_then(|s| s.split('<').next()).unwrap_or("");
    let gpu = shown("active-gpu-nodes");
    let others = shown("other-nodes");
    let counted: Vec<u64> = others.split(|c: char| !c.is_ascii_digit()).filter_map(|w| w.parse().ok()).collect();
    assert!(gpu.parse::<u64>().is_ok(), "active GPU nodes shows {gpu:?}");
    assert!(counted.len() == 2 && counted.iter().sum::<u64>() >= 2, "other active nodes show {others:?}");
    let _ = browser(&chromium, &dir.join("profile-shot"))
        .args(["--virtual-time-budget=5000", "--window-size=1280,1000"])
        .arg(format!("--screenshot={}", artifacts.join("dashboard.png").display()))
        .arg(format!("{url}/"))
        .status();
}

/// The fallback tiers: a tab forced onto WebGL2 (a fragment-shader GEMM) and one onto the CPU (a Web Worker) each
/// compute the attestation matmul right — Freivalds-checked like any node — and report their tier.
#[test]
fn the_webgl2_and_cpu_tiers_pass_attestation() {
    let Some(chromium) = chromium() else { return };
    let dir = temp_dir("browser-tiers");
    let _logs = TabLogs(dir.clone());
    let mut procs = Procs(Vec::new());
    let url = serve(&mut procs, &dir);
    for tier in ["webgl2", "cpu"] {
        open_provider(&mut procs, &chromium, &dir, &url, tier, &format!("&backend={tier}"));
    }
    wait_for("both tiers to pass attestation", Duration::from_secs(180), || {
        let nodes = browser_nodes(&url);
        ["webgl2", "cpu"].iter().all(|tier| nodes.iter().any(|n| n["backend"] == *tier && n["state"] == "active"))
    });
    assert!(
        get_json(&format!("{url}/v1/evidence")).as_array().is_some_and(|e| e.is_empty()),
        "an honest tier was convicted"
    );
}

/// The inference engine's kernels, as the coordinator serves them, compile in the browser's WebGPU (Tint) and every
/// entry point makes a compute pipeline: the file the native node runs through naga is the file a tab would run.
#[test]
fn the_inference_kernels_compile_in_the_browser() {
    let Some(chromium) = chromium() else { return };
    let dir = temp_dir("browser-nn-wgsl");
    let _logs = TabLogs(dir.clone());
    let mut procs = Procs(Vec::new());
    let url = serve(&mut procs, &dir);
    let profile = dir.join("profile-nn");
    std::fs::create_dir_all(&profile).unwrap();
    let child = browser(&chromium, &profile)
        .arg("--remote-debugging-port=0")
        .arg(format!("{url}/"))
        .spawn()
        .expect("chromium starts");
    procs.0.push(child);
    let entries: Vec<&str> = neurolov_kernels::nn_gpu::NnKernel::ALL.iter().map(|k| k.entry_point()).collect();
    let js = format!(
        "(async () => {{
            const code = await (await fetch('/v1/kernels/nn.wgsl')).text();
            const adapter = await navigator.gpu.requestAdapter();
            if (!adapter) return 'no webgpu adapter';
            const device = await adapter.requestDevice();
            const module = device.createShaderModule({{ code }});
            const info = await module.getCompilationInfo();
            const errors = info.messages.filter(m => m.type === 'error').map(m => m.lineNum + ': ' + m.message);
            device.pushErrorScope('validation');
            for (const entryPoint of {entries:?}) {{
                device.createComputePipeline({{ layout: 'auto', compute: {{ module, entryPoint }} }});
            }}
            const invalid = await device.popErrorScope();
            return JSON.stringify({{ bytes: code.length, errors, pipelines: invalid ? invalid.message : 'ok' }});
        }})()"
    );
    wait_for("the page to load", Duration::from_secs(30), || {
        cdp_eval(&profile, &url, "location.href + ' ' + document.readyState")
            .as_str()
            .is_some_and(|s| s.starts_with(&url) && s.ends_with("complete"))
    });
    let reply = cdp_eval(&profile, &url, &js);
    let reply: serde_json::Value =
        serde_json::from_str(reply.as_str().unwrap_or_else(|| panic!("{reply}"))).unwrap_or_else(|_| panic!("{reply}"));
    // JavaScript counts UTF-16 code units (the comments hold ·, ×, ≤).
    let units = neurolov_kernels::nn_gpu::NN_WGSL.encode_utf16().count() as u64;
    assert_eq!(reply["bytes"].as_u64(), Some(units), "the whole file was served: {reply}");
    assert_eq!(reply["errors"], serde_json::json!([]), "{reply}");
    assert_eq!(reply["pipelines"], "ok", "{reply}");
}

/// By default a tab provides only while its page is visible: hidden, it says goodbye and the coordinator stops
/// counting on it; visible again, it comes back on its own. (Headless pages are always visible, so the test makes
/// the page hidden the way a browser would tell it: `visibilityState` and a `visibilitychange` event.)
#[test]
fn a_hidden_tab_stops_providing_and_comes_back_when_visible() {
    let Some(chromium) = chromium() else { return };
    let dir = temp_dir("browser-visibility");
    let _logs = TabLogs(dir.clone());
    let mut procs = Procs(Vec::new());
    let url = serve(&mut procs, &dir);
    let profile = dir.join("profile-visible");
    std::fs::create_dir_all(&profile).unwrap();
    // No `visible=any`: the default, visible-only.
    let child = browser(&chromium, &profile)
        .arg("--remote-debugging-port=0")
        .arg(format!("{url}/provide?autostart=1&duty=100"))
        .spawn()
        .expect("chromium starts");
    procs.0.push(child);
    let state = || browser_nodes(&url).first().map(|n| n["state"].as_str().unwrap_or("").to_string());
    wait_for("the tab to pass attestation", Duration::from_secs(120), || state().as_deref() == Some("active"));
    let set_visibility = |visibility: &str| {
        let js = format!(
            "Object.defineProperty(document, 'visibilityState', {{ get: () => '{visibility}', configurable: true }}); \
             document.dispatchEvent(new Event('visibilitychange')); document.visibilityState"
        );
        assert_eq!(cdp_eval(&profile, "/provide", &js), visibility);
    };
    set_visibility("hidden");
    wait_for("the hidden tab to leave", Duration::from_secs(30), || state().as_deref() == Some("offline"));
    assert_eq!(cdp_eval(&profile, "/provide", "document.getElementById('state').textContent"), "stopped");
    set_visibility("visible");
    wait_for("the tab to come back", Duration::from_secs(60), || state().as_deref() == Some("active"));
}
