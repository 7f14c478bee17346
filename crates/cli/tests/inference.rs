//! Verified inference end to end (issue 13): a real coordinator hosting both pinned models, real `neurolov node`
//! processes serving them, an API key made with `neurolov keys`, and the OpenAI-compatible routes — answers checked
//! against the engine's own output on this machine, a cheating node caught and slashed with its opening as evidence
//! while the request is still answered by an honest one, OpenAI's error shapes for bad keys, unknown models, bad
//! requests and empty wallets, and the official `openai` Python client, unmodified (`scripts/test` installs it into a
//! throwaway environment and names its Python in `NEUROLOV_OPENAI_PYTHON`).

#![allow(clippy::unwrap_used)] // A panic is the failure report.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{Procs, active_nodes, get_json, neurolov, serve_with, temp_dir, wait_for};
use neurolov_models::catalog::{ALL_MINILM_L6_V2, SMOLLM2_135M_INSTRUCT};
use neurolov_models::device::BackendKind;
use neurolov_models::engine::{ChatModel, Embedder};
use neurolov_models::fetch::{cache_dir, model_dir};
use neurolov_models::generate::{Message, Sampling};

const EMBED: &str = ALL_MINILM_L6_V2.name;
const CHAT: &str = SMOLLM2_135M_INSTRUCT.name;
const QUESTION: &str = "What is the capital of France?";

/// A node serving both models on the CPU (`cheat`: it forges its answers under honest roots).
fn start_model_node(procs: &mut Procs, dir: &std::path::Path, url: &str, name: &str, cheat: bool) {
    let key = dir.join(format!("{name}.json"));
    assert!(neurolov().args(["keygen", "--out"]).arg(&key).output().unwrap().status.success());
    let mut cmd = neurolov();
    cmd.args(["node", "--coordinator", url, "--backend", "cpu", "--models", "all", "--model-backend", "cpu"])
        .arg("--key")
        .arg(&key)
        .stdout(Stdio::null());
    if cheat {
        cmd.arg("--cheat-inference");
    }
    procs.0.push(cmd.spawn().unwrap());
}

/// A funded account's new API key.
fn api_key(dir: &std::path::Path, url: &str, name: &str, funded: bool) -> String {
    let key = dir.join(format!("{name}.json"));
    assert!(neurolov().args(["keygen", "--out"]).arg(&key).output().unwrap().status.success());
    if funded {
        let out = neurolov().args(["wallet", "faucet", "--coordinator", url, "--key"]).arg(&key).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let out =
        neurolov().args(["keys", "create", "--coordinator", url, "--name", name, "--key"]).arg(&key).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// POSTs JSON with a bearer key: status and body.
fn post(url: &str, path: &str, key: &str, body: serde_json::Value) -> (u16, String) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let resp = reqwest::Client::new()
            .post(format!("{url}{path}"))
            .bearer_auth(key)
            .json(&body)
            .timeout(Duration::from_secs(300))
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    })
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// The engine's own answers on this machine: embeddings of `texts`, and the greedy reply to [`QUESTION`].
struct Reference {
    embedder: Embedder,
    chat: ChatModel,
}

impl Reference {
    fn load() -> Reference {
        let cache = cache_dir().unwrap();
        let embedder = Embedder::load(&model_dir(&cache, &ALL_MINILM_L6_V2), BackendKind::Cpu).unwrap();
        let path = model_dir(&cache, &SMOLLM2_135M_INSTRUCT).join(SMOLLM2_135M_INSTRUCT.files[0].name);
        Reference { embedder, chat: ChatModel::load(&path, BackendKind::Cpu).unwrap() }
    }

    fn reply(&mut self, max_tokens: usize) -> String {
        let messages = [Message { role: "user".into(), content: QUESTION.into() }];
        self.chat.chat(&messages, max_tokens, &Sampling::GREEDY, |_| std::ops::ControlFlow::Continue(())).unwrap().1
    }

    fn assert_embeddings(&mut self, texts: &[&str], got: &serde_json::Value) {
        let want = self.embedder.embed(texts).unwrap();
        let got: Vec<Vec<f32>> = serde_json::from_value(got.clone()).unwrap();
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            let worst = g.iter().zip(w).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            assert!(worst < 1e-4, "an embedding differs from the engine's by {worst}");
        }
    }
}

fn evidence_count(url: &str) -> usize {
    get_json(&format!("{url}/v1/evidence")).as_array().map_or(0, Vec::len)
}

#[test]
fn verified_inference_through_the_openai_api() {
    let mut procs = Procs(Vec::new());
    let dir = temp_dir("inference");
    let url = serve_with(&mut procs, &dir, "127.0.0.1:0", &["--models", "all"]);
    let models = get_json(&format!("{url}/v1/models"));
    let ids: Vec<&str> = models["data"].as_array().unwrap().iter().filter_map(|m| m["id"].as_str()).collect();
    assert_eq!(ids, [EMBED, CHAT], "{models}");
    let key = api_key(&dir, &url, "client", true);
    let mut reference = Reference::load();

    // A cheater alone takes the first requests: each answer fails its proof, the node is slashed with its opening as
    // evidence, and the requests wait for an honest node.
    start_model_node(&mut procs, &dir, &url, "cheater", true);
    wait_for("the cheater to attest", Duration::from_secs(60), || active_nodes(&url) == 1);
    let texts = ["hello world", "the quick brown fox"];
    let embed_request = serde_json::json!({ "model": EMBED, "input": texts, "encoding_format": "float" });
    let waiting = {
        let (url, key, body) = (url.clone(), key.clone(), embed_request.clone());
        std::thread::spawn(move || post(&url, "/v1/embeddings", &key, body))
    };
    wait_for("the cheater's conviction", Duration::from_secs(60), || evidence_count(&url) >= 1);
    let evidence = get_json(&format!("{url}/v1/evidence"))[0].clone();
    assert_eq!(evidence["work"]["kind"], "infer", "{evidence}");
    let opening = evidence["opening"]["blob"].as_str().expect("the opening is part of the evidence");
    assert!(!common::get_bytes(&format!("{url}/v1/blobs/{opening}")).is_empty(), "the opening is kept");
    eprintln!("cheater convicted: {}", evidence["reason"]);
    start_model_node(&mut procs, &dir, &url, "honest", false);
    let (status, body) = waiting.join().unwrap();
    assert_eq!(status, 200, "{body}");
    let reply = json(&body);
    reference
        .assert_embeddings(&texts, &reply["data"].as_array().unwrap().iter().map(|d| d["embedding"].clone()).collect());
    assert_eq!(reply["usage"]["prompt_tokens"], 4 + 6, "[CLS] hello world [SEP], [CLS] the quick brown fox [SEP]");
    assert_eq!(reply["neurolov"]["verified"], true);
    let nodes = get_json(&format!("{url}/v1/nodes"));
    let cheater = nodes.as_array().unwrap().iter().find(|n| n["id"] == evidence["node"]).unwrap();
    assert!(cheater["tasks_failed"].as_u64() >= Some(1) && cheater["tasks_verified"] == 0, "{cheater}");

    // Greedy chat: the honest node's verified reply is the engine's own, whole and streamed.
    let chat = serde_json::json!({ "model": CHAT, "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 16, "temperature": 0 });
    let (status, body) = post(&url, "/v1/chat/completions", &key, chat.clone());
    assert_eq!(status, 200, "{body}");
    let reply = json(&body);
    let want = reference.reply(16);
    assert_eq!(reply["choices"][0]["message"]["content"], want.as_str());
    let mut streamed = chat.clone();
    streamed["stream"] = true.into();
    let (status, body) = post(&url, "/v1/chat/completions", &key, streamed);
    assert_eq!(status, 200, "{body}");
    assert!(body.trim_end().ends_with("data: [DONE]"), "{body}");
    let text: String = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: ").filter(|d| *d != "[DONE]"))
        .filter_map(|d| json(d)["choices"][0]["delta"]["content"].as_str().map(str::to_string))
        .collect();
    assert_eq!(text, want);

    // Refusals in OpenAI's shape.
    let check = |status_want: u16, code: &str, (status, body): (u16, String)| {
        assert_eq!(status, status_want, "{body}");
        let error = &json(&body)["error"];
        assert!(error["message"].is_string() && error["type"].is_string(), "{body}");
        assert_eq!(error["code"], code, "{body}");
    };
    check(401, "invalid_api_key", post(&url, "/v1/embeddings", "nlv-wrong", embed_request.clone()));
    check(
        404,
        "model_not_found",
        post(&url, "/v1/embeddings", &key, serde_json::json!({"model": "gpt-9", "input": "x"})),
    );
    let (status, body) = post(&url, "/v1/embeddings", &key, serde_json::json!({"model": EMBED, "input": []}));
    assert_eq!(status, 400, "{body}");
    let poor = api_key(&dir, &url, "poor", false);
    check(402, "insufficient_quota", post(&url, "/v1/embeddings", &poor, embed_request.clone()));
    // A revoked key stops working at once.
    let list = neurolov()
        .args(["keys", "list", "--json", "--coordinator", &url, "--key"])
        .arg(dir.join("poor.json"))
        .output()
        .unwrap();
    let entries = json(&String::from_utf8(list.stdout).unwrap());
    let id = entries[0]["id"].as_str().unwrap().to_string();
    let out = neurolov()
        .args(["keys", "revoke", &id, "--coordinator", &url, "--key"])
        .arg(dir.join("poor.json"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    check(401, "invalid_api_key", post(&url, "/v1/embeddings", &poor, embed_request));

    official_client(&url, &key, &mut reference);
    marketplace(&url, &dir);
    published_model(&mut procs, &url, &dir, &key, &mut reference);
}

/// The browser's inference engine (`crates/wasm`, built by `scripts/build-web-engine`) where the coordinator under
/// test looks for it; `None` (the test skipped) unless it is built — `scripts/test` builds it and sets
/// `NEUROLOV_REQUIRE_BROWSER=1`, which makes its absence a failure.
fn web_engine() -> Option<std::path::PathBuf> {
    let exe = std::path::Path::new(env!("CARGO_BIN_EXE_neurolov"));
    let path = exe.parent()?.parent()?.join("wasm32-unknown-unknown/debug/neurolov_wasm.wasm");
    if path.is_file() {
        return Some(path);
    }
    assert!(
        std::env::var("NEUROLOV_REQUIRE_BROWSER").as_deref() != Ok("1"),
        "{} is not built (scripts/build-web-engine) and NEUROLOV_REQUIRE_BROWSER=1",
        path.display()
    );
    eprintln!("the browser engine is not built: browser inference skipped");
    None
}

#[test]
fn a_browser_tab_serves_embeddings_and_chat_verified() {
    let Some(chromium) = common::chromium() else { return };
    let Some(_) = web_engine() else { return };
    let mut procs = Procs(Vec::new());
    let dir = temp_dir("browser-inference");
    let url = serve_with(&mut procs, &dir, "127.0.0.1:0", &["--models", "all"]);
    let key = api_key(&dir, &url, "client", true);
    // The tab is the only provider: it downloads both models from the coordinator by hash, checks and loads them
    // in the engine compiled to WebAssembly, then registers claiming them.
    let profile = dir.join("profile-provider");
    std::fs::create_dir_all(&profile).unwrap();
    let tab = common::browser(&chromium, &profile)
        .arg(format!("{url}/provide?autostart=1&visible=any&duty=100&backend=cpu&models=all"))
        .spawn()
        .unwrap();
    procs.0.push(tab);
    let node = || {
        let nodes = get_json(&format!("{url}/v1/nodes"));
        nodes.as_array().and_then(|ns| ns.iter().find(|n| n["kind"] == "browser").cloned()).unwrap_or_default()
    };
    wait_for("the tab to load the models and attest", Duration::from_secs(180), || node()["state"] == "active");
    let mut reference = Reference::load();

    let texts = ["hello world", "a browser tab computed this"];
    let embed = serde_json::json!({ "model": EMBED, "input": texts, "encoding_format": "float" });
    let (status, body) = post(&url, "/v1/embeddings", &key, embed);
    assert_eq!(status, 200, "{body}");
    let reply = json(&body);
    assert_eq!(reply["neurolov"]["node"], node()["id"], "{body}");
    assert_eq!(reply["neurolov"]["verified"], true);
    reference
        .assert_embeddings(&texts, &reply["data"].as_array().unwrap().iter().map(|d| d["embedding"].clone()).collect());

    let chat = serde_json::json!({ "model": CHAT, "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 8, "temperature": 0 });
    let (status, body) = post(&url, "/v1/chat/completions", &key, chat);
    assert_eq!(status, 200, "{body}");
    let reply = json(&body);
    assert_eq!(reply["neurolov"]["node"], node()["id"], "{body}");
    assert_eq!(reply["choices"][0]["message"]["content"], reference.reply(8).as_str(), "{body}");

    // More honest runs of both kinds, sampled chats among them: the WebAssembly engine's rounding differs from the
    // native one's, and the tolerances must pass it every time.
    let long = "the network verifies every answer it returns ".repeat(40);
    let texts =
        ["Ünïcödé — naïve café, 東京", long.as_str(), "a", "GPU owners contribute compute and are paid in NLOV"];
    let (status, body) = post(&url, "/v1/embeddings", &key, serde_json::json!({ "model": EMBED, "input": texts }));
    assert_eq!(status, 200, "{body}");
    for seed in 1..=3 {
        let chat = serde_json::json!({ "model": CHAT, "messages": [{"role": "user", "content": "Name a colour."}],
            "max_tokens": 10, "temperature": 0.9, "top_p": 0.95, "seed": seed });
        let (status, body) = post(&url, "/v1/chat/completions", &key, chat);
        assert_eq!(status, 200, "{body}");
        assert_eq!(json(&body)["neurolov"]["verified"], true);
    }

    // Honest WebAssembly runs pass the same proofs as native ones: nothing convicted or doubted, every answer paid.
    assert_eq!(evidence_count(&url), 0, "{}", get_json(&format!("{url}/v1/evidence")));
    let me = node();
    assert!(me["tasks_verified"].as_u64() >= Some(6), "the attestation and six requests: {me}");
    assert_eq!(me["tasks_failed"], 0, "a doubted or failed answer: {me}");
    let wallet = get_json(&format!("{url}/v1/accounts/{}", me["id"].as_str().unwrap()));
    assert!(wallet["balance_nano"].as_u64() > Some(0), "the tab was not paid: {wallet}");
}

/// An author publishes a model (a copy of MiniLM's files, under its own name, price and royalty); a node fetches it
/// from the coordinator by hash and serves it; a client's verified request pays the author its royalty.
fn published_model(procs: &mut Procs, url: &str, dir: &std::path::Path, key: &str, reference: &mut Reference) {
    let author = dir.join("author.json");
    assert!(neurolov().args(["keygen", "--out"]).arg(&author).output().unwrap().status.success());
    let out = neurolov().args(["wallet", "faucet", "--coordinator", url, "--key"]).arg(&author).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let files = dir.join("community-minilm");
    let source = model_dir(&cache_dir().unwrap(), &ALL_MINILM_L6_V2);
    for f in ALL_MINILM_L6_V2.files {
        std::fs::create_dir_all(files.join(f.name).parent().unwrap()).unwrap();
        std::fs::copy(source.join(f.name), files.join(f.name)).unwrap();
    }
    let publish = |name: &str, dir: &std::path::Path| {
        neurolov()
            .args(["models", "publish"])
            .arg(dir)
            .args(["--name", name, "--kind", "embeddings", "--license", "Apache-2.0", "--price-input", "40000"])
            .args(["--royalty-bps", "2000", "--coordinator", url, "--key"])
            .arg(&author)
            .output()
            .unwrap()
    };
    let taken = publish(EMBED, &files);
    assert!(!taken.status.success() && String::from_utf8_lossy(&taken.stderr).contains("409"), "a listed name");
    let garbage = dir.join("garbage-model");
    std::fs::create_dir_all(&garbage).unwrap();
    std::fs::write(garbage.join("config.json"), b"{\"not\": \"a bert\"}").unwrap();
    let refused = publish("garbage", &garbage);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && stderr.contains("cannot load"), "{stderr}");
    let published = publish("minilm-community", &files);
    assert!(published.status.success(), "{}", String::from_utf8_lossy(&published.stderr));
    let record = get_json(&format!("{url}/v1/models/minilm-community"));
    assert_eq!(record["manifest"]["files"].as_array().map(Vec::len), Some(ALL_MINILM_L6_V2.files.len()), "{record}");

    // A node that fetches models on demand, holding none: the request finds no holder, so it goes there; the node
    // fetches the files by hash, checks them against the manifest, and answers.
    let models_dir = dir.join("fetching-node-models");
    let node_key = dir.join("fetching.json");
    assert!(neurolov().args(["keygen", "--out"]).arg(&node_key).output().unwrap().status.success());
    let child = neurolov()
        .args([
            "node",
            "--coordinator",
            url,
            "--backend",
            "cpu",
            "--models",
            "none",
            "--fetch-models",
            "--model-backend",
            "cpu",
        ])
        .arg("--models-dir")
        .arg(&models_dir)
        .arg("--key")
        .arg(&node_key)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    procs.0.push(child);
    let texts = ["a model published by its author"];
    let (status, body) = post(
        url,
        "/v1/embeddings",
        key,
        serde_json::json!({ "model": "minilm-community", "input": texts, "encoding_format": "float" }),
    );
    assert_eq!(status, 200, "{body}");
    let reply = json(&body);
    reference.assert_embeddings(&texts, &serde_json::json!([reply["data"][0]["embedding"]]));
    assert!(models_dir.join("network/minilm-community/1_Pooling/config.json").exists(), "the node cached the files");
    let fetcher = get_json(&format!("{url}/v1/nodes"))
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == reply["neurolov"]["node"])
        .cloned()
        .unwrap();
    assert_eq!(fetcher["models"], serde_json::json!(["minilm-community"]), "it holds the model now: {fetcher}");
    assert_eq!(fetcher["fetches_models"], true);
    // Price ⌈tokens · 40,000 / 1,000⌉, the author's 20% of it.
    let tokens = reply["usage"]["prompt_tokens"].as_u64().unwrap();
    let royalty = (tokens * 40_000).div_ceil(1_000) * 2_000 / 10_000;
    let author_id = json(
        &String::from_utf8(
            neurolov()
                .args(["wallet", "balance", "--json", "--coordinator", url, "--key"])
                .arg(&author)
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap(),
    );
    let faucet = 1_000 * neurolov_ledger::NANO_PER_NLOV;
    assert_eq!(author_id["balance_nano"].as_u64(), Some(faucet + royalty), "{author_id}");
    let listed = get_json(&format!("{url}/v1/models"));
    let community = listed["data"].as_array().unwrap().iter().find(|m| m["id"] == "minilm-community").unwrap().clone();
    assert_eq!(community["usage"]["royalties_nano"].as_u64(), Some(royalty), "{community}");
    assert_eq!(community["royalty_bps"], 2000);

    // A restarted coordinator lists it again, loaded from its data directory, and still owes nothing to nobody.
    let coordinator = &mut procs.0[0];
    coordinator.kill().unwrap();
    coordinator.wait().unwrap();
    let url = serve_with(procs, dir, "127.0.0.1:0", &["--models", "all"]);
    let listed = get_json(&format!("{url}/v1/models"));
    let ids: Vec<&str> = listed["data"].as_array().unwrap().iter().filter_map(|m| m["id"].as_str()).collect();
    assert_eq!(ids, [EMBED, CHAT, "minilm-community"], "{listed}");
    assert_eq!(get_json(&format!("{url}/v1/models/minilm-community"))["author"], author_id["address"]);
}

/// The models' figures in `/v1/models` and on the dashboard's marketplace: prices, providers, verified use.
fn marketplace(url: &str, dir: &std::path::Path) {
    let models = get_json(&format!("{url}/v1/models"));
    let embed = models["data"].as_array().unwrap().iter().find(|m| m["id"] == EMBED).unwrap().clone();
    assert!(embed["usage"]["requests"].as_u64() >= Some(1), "{embed}");
    assert_eq!(embed["providers"], 1, "the honest node serves it (the convicted one is no longer active): {embed}");
    let Some(chromium) = common::chromium() else { return };
    let dump = common::browser(&chromium, &dir.join("profile-dashboard"))
        .args(["--dump-dom", "--virtual-time-budget=5000", "--window-size=1280,1000"])
        .arg(format!("{url}/"))
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&dump.stdout);
    for id in [EMBED, CHAT] {
        let row = dom.split(&format!("data-model=\"{id}\"")).nth(1).and_then(|r| r.split("</tr>").next()).unwrap_or("");
        assert!(!row.is_empty(), "the dashboard does not list {id}");
        let requests = row.split("class=\"requests\">").nth(1).and_then(|r| r.split('<').next()).unwrap_or("");
        assert!(requests.parse::<u64>().is_ok_and(|n| n >= 1), "{id}: requests shown as {requests:?} in {row}");
    }
}

/// The official Python client, unmodified: models, embeddings (its default base64 and float), chat with and
/// without streaming, its errors.
fn official_client(url: &str, key: &str, reference: &mut Reference) {
    let Some(python) = std::env::var_os("NEUROLOV_OPENAI_PYTHON") else {
        assert!(std::env::var_os("NEUROLOV_REQUIRE_OPENAI").is_none(), "NEUROLOV_OPENAI_PYTHON is not set");
        eprintln!("skipping the official client: NEUROLOV_OPENAI_PYTHON is not set (scripts/test sets it)");
        return;
    };
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/openai_client.py");
    let out = std::process::Command::new(python).arg(script).args([url, key, EMBED, CHAT]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got = json(&String::from_utf8(out.stdout).unwrap());
    eprintln!("openai {}", got["version"]);
    assert_eq!(got["models"], serde_json::json!([EMBED, CHAT]));
    let texts =
        ["The quick brown fox jumps over the lazy dog.", "Verified inference makes a wrong answer unprofitable."];
    reference.assert_embeddings(&texts, &got["embeddings_default"]);
    reference.assert_embeddings(&texts, &got["embeddings_float"]);
    reference.assert_embeddings(&texts[..1], &serde_json::json!([got["embedding_base64"]]));
    let want = reference.reply(16);
    assert_eq!(got["chat"], want.as_str());
    assert_eq!(got["stream"], want.as_str());
    assert_eq!(got["chat_finish"], got["stream_finish"]);
    assert_eq!(got["unknown_model"], 404);
    assert_eq!(got["bad_key"], 401);
}
