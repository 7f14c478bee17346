//! Helpers shared by the end-to-end tests: real `neurolov` processes on loopback, killed when a test ends.

#![allow(dead_code)] // Each test binary uses its own subset.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn neurolov() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_neurolov"));
    c.env("RUST_LOG", "warn");
    c
}

/// Child processes are killed when the test ends, however it ends.
pub struct Procs(pub Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("neurolov-e2e-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Starts a coordinator on a free port and returns its URL.
pub fn serve(procs: &mut Procs, dir: &std::path::Path) -> String {
    serve_on(procs, dir, "127.0.0.1:0")
}

pub fn serve_on(procs: &mut Procs, dir: &std::path::Path, listen: &str) -> String {
    serve_with(procs, dir, listen, &[])
}

/// [`serve_on`] with more `serve` arguments.
pub fn serve_with(procs: &mut Procs, dir: &std::path::Path, listen: &str, extra: &[&str]) -> String {
    let test_network = ["--dev", "--heartbeat-ms", "500", "--attestation-size", "64", "--max-attestation-size", "256"];
    let args: Vec<&str> = test_network
        .into_iter()
        .chain(["--tile-rows", "32", "--listen", listen])
        .chain(extra.iter().copied())
        .collect();
    serve_args(procs, dir, &args)
}

/// A coordinator with exactly these `serve` arguments (and a data directory in `dir`); its URL.
pub fn serve_args(procs: &mut Procs, dir: &std::path::Path, args: &[&str]) -> String {
    serve_command(procs, dir, args, neurolov())
}

/// [`serve_args`] from a prepared `neurolov` command (its environment set).
pub fn serve_command(procs: &mut Procs, dir: &std::path::Path, args: &[&str], mut cmd: Command) -> String {
    // Hosting the models (seconds of loading) only where a test asks for it.
    let models: &[&str] = if args.contains(&"--models") { &[] } else { &["--models", "none"] };
    let mut child = cmd
        .arg("serve")
        .args(args)
        .args(models)
        .arg("--data")
        .arg(dir.join("coordinator"))
        .stdout(Stdio::piped())
        .spawn()
        .expect("serve starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("address line");
    procs.0.push(child);
    line.trim().strip_prefix("listening on ").expect("listening line").to_string()
}

pub fn start_node(procs: &mut Procs, dir: &std::path::Path, url: &str, name: &str, backend: &str) -> usize {
    let key = dir.join(format!("{name}.json"));
    let out = neurolov().args(["keygen", "--out"]).arg(&key).output().expect("keygen");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let child = neurolov()
        .args(["node", "--coordinator", url, "--backend", backend, "--slots", "4"])
        .arg("--key")
        .arg(&key)
        .stdout(Stdio::null())
        .spawn()
        .expect("node starts");
    procs.0.push(child);
    procs.0.len() - 1
}

pub fn get_json(url: &str) -> serde_json::Value {
    let out = Command::new("curl").args(["-sf", url]).output();
    match out {
        Ok(o) if o.status.success() => serde_json::from_slice(&o.stdout).unwrap_or_default(),
        _ => serde_json::Value::Null,
    }
}

pub fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn active_nodes(url: &str) -> usize {
    get_json(&format!("{url}/v1/nodes"))
        .as_array()
        .map_or(0, |nodes| nodes.iter().filter(|n| n["state"] == "active").count())
}

pub fn submit(dir: &std::path::Path, url: &str, shape: &str, wait: bool) -> serde_json::Value {
    let client = dir.join("client.json");
    if !client.exists() {
        neurolov().args(["keygen", "--out"]).arg(&client).output().expect("keygen");
        let out =
            neurolov().args(["wallet", "faucet", "--coordinator", url, "--key"]).arg(&client).output().expect("faucet");
        assert!(out.status.success(), "faucet: {}", String::from_utf8_lossy(&out.stderr));
    }
    let mut cmd = neurolov();
    cmd.args(["job", "submit", "--coordinator", url, "--matmul", shape, "--seed-a", "11", "--seed-b", "12", "--json"])
        .arg("--key")
        .arg(&client);
    if wait {
        cmd.arg("--wait");
    }
    let out = cmd.output().expect("job submit");
    assert!(out.status.success(), "job submit failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("json")
}

/// POSTs `body` to `path`, signed with the keypair file `key` (as `neurolov` clients sign).
pub fn post_signed(url: &str, key: &std::path::Path, path: &str, body: &serde_json::Value) -> serde_json::Value {
    let kp =
        neurolov_protocol::Keypair::from_solana_json(&std::fs::read_to_string(key).expect("key file")).expect("key");
    post_signed_kp(url, &kp, path, body)
}

/// [`post_signed`] with the keypair itself.
pub fn post_signed_kp(
    url: &str,
    kp: &neurolov_protocol::Keypair,
    path: &str,
    body: &serde_json::Value,
) -> serde_json::Value {
    let (status, reply) = post_signed_status(url, kp, path, body);
    assert!((200..300).contains(&status), "{path}: {status} {reply}");
    reply
}

/// A signed POST's status and JSON reply, whatever they are.
pub fn post_signed_status(
    url: &str,
    kp: &neurolov_protocol::Keypair,
    path: &str,
    body: &serde_json::Value,
) -> (u16, serde_json::Value) {
    let body = serde_json::to_vec(body).expect("json");
    let now = neurolov_coordinator::now_ms();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let mut req = reqwest::Client::new().post(format!("{url}{path}")).body(body.clone());
        // The path is signed without its query (`?wait_ms=`), as clients sign.
        let signed = path.split('?').next().unwrap_or(path);
        for (h, v) in neurolov_coordinator::auth::sign(kp, "POST", signed, now, &body) {
            req = req.header(h, v);
        }
        let resp = req.header("content-type", "application/json").send().await.expect("post");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or_default())
    })
}

/// PUTs `body` as `/v1/blobs/{hash}` (of `claimed_hash`, or of the body), signed by `key` if given; the status.
pub fn put_blob(url: &str, key: Option<&neurolov_protocol::Keypair>, body: &[u8], claimed_hash: Option<&str>) -> u16 {
    let hash = claimed_hash.map_or_else(|| blake3::hash(body).to_hex().to_string(), str::to_string);
    let path = format!("/v1/blobs/{hash}");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let mut req = reqwest::Client::new().put(format!("{url}{path}")).body(body.to_vec());
        if let Some(kp) = key {
            for (h, v) in neurolov_coordinator::auth::sign(kp, "PUT", &path, neurolov_coordinator::now_ms(), body) {
                req = req.header(h, v);
            }
        }
        req.send().await.expect("put").status().as_u16()
    })
}

/// The raw body of a GET (empty on any failure).
pub fn get_bytes(url: &str) -> Vec<u8> {
    match Command::new("curl").args(["-sf", url]).output() {
        Ok(o) if o.status.success() => o.stdout,
        _ => Vec::new(),
    }
}

/// A job's result read with a signed GET by the keypair file `key` (or unsigned): the status and the body.
pub fn get_result(url: &str, key: Option<&std::path::Path>, job: u64) -> (u16, Vec<u8>) {
    let path = format!("/v1/jobs/{job}/result");
    let kp = key.map(|k| {
        neurolov_protocol::Keypair::from_solana_json(&std::fs::read_to_string(k).expect("key file")).expect("key")
    });
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let mut req = reqwest::Client::new().get(format!("{url}{path}"));
        if let Some(kp) = &kp {
            for (h, v) in neurolov_coordinator::auth::sign(kp, "GET", &path, neurolov_coordinator::now_ms(), b"") {
                req = req.header(h, v);
            }
        }
        let resp = req.send().await.expect("get");
        let status = resp.status().as_u16();
        (status, resp.bytes().await.map(|b| b.to_vec()).unwrap_or_default())
    })
}

/// The Chromium this machine has (`None`: browser tests are skipped, unless `NEUROLOV_REQUIRE_BROWSER=1`).
pub fn chromium() -> Option<PathBuf> {
    let found = ["chromium", "chromium-browser", "google-chrome"].iter().find_map(|name| {
        let out = Command::new("which").arg(name).output().ok()?;
        out.status.success().then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
    });
    if found.is_none() {
        assert!(
            std::env::var("NEUROLOV_REQUIRE_BROWSER").as_deref() != Ok("1"),
            "chromium is not installed and NEUROLOV_REQUIRE_BROWSER=1"
        );
        eprintln!("chromium not found: browser tests skipped");
    }
    found
}

/// Chromium's headless flags that give WebGPU on SwiftShader.
pub fn browser(chromium: &Path, profile: &Path) -> Command {
    let mut c = Command::new(chromium);
    c.args([
        "--headless=new",
        "--no-sandbox",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-gpu-sandbox",
        "--enable-unsafe-webgpu",
        // Without it, WebGL's software fallback is "deprecated" and about one launch in three hands the page a
        // context that renders nothing (all zeros).
        "--enable-unsafe-swiftshader",
        "--disable-background-timer-throttling",
        "--disable-renderer-backgrounding",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .stdout(Stdio::null());
    // The page's console (and Chromium's own complaints) go to a file beside the profile: a failing run's tabs can
    // be read afterwards.
    match std::fs::File::create(profile.with_extension("log")) {
        Ok(log) => c.arg("--enable-logging=stderr").stderr(log),
        Err(_) => c.stderr(Stdio::null()),
    };
    c
}

/// Evaluates `expression` in the tab whose URL contains `url_part`, over the DevTools protocol of the Chromium
/// started with `--remote-debugging-port=0` on `profile`; returns the result's value.
pub fn cdp_eval(profile: &Path, url_part: &str, expression: &str) -> serde_json::Value {
    let mut port = String::new();
    wait_for("DevTools to listen", Duration::from_secs(30), || {
        port = std::fs::read_to_string(profile.join("DevToolsActivePort"))
            .ok()
            .and_then(|s| s.lines().next().map(str::to_string))
            .unwrap_or_default();
        !port.is_empty()
    });
    let targets = get_json(&format!("http://127.0.0.1:{port}/json/list"));
    let ws_url = targets
        .as_array()
        .and_then(|ts| {
            ts.iter().find(|t| t["type"] == "page" && t["url"].as_str().is_some_and(|u| u.contains(url_part)))
        })
        .and_then(|t| t["webSocketDebuggerUrl"].as_str())
        .unwrap_or_else(|| panic!("no tab on {url_part}: {targets}"))
        .to_string();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        use futures_util::{SinkExt, StreamExt};
        let (mut ws, _) = tokio_tungstenite::connect_async(ws_url.as_str()).await.unwrap();
        let call = serde_json::json!({"id": 1, "method": "Runtime.evaluate",
            "params": {"expression": expression, "returnByValue": true, "awaitPromise": true}});
        ws.send(tokio_tungstenite::tungstenite::Message::Text(call.to_string().into())).await.unwrap();
        while let Some(Ok(msg)) = ws.next().await {
            if let Ok(reply) = serde_json::from_str::<serde_json::Value>(msg.to_text().unwrap_or(""))
                && reply["id"] == 1
            {
                return reply["result"]["result"]["value"].clone();
            }
        }
        panic!("DevTools closed before answering");
    })
}
