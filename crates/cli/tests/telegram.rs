//! Neurolov as a Telegram bot and Mini App (issue 15), end to end with nothing of Telegram's: a local server stands
//! in for Telegram — it serves a stand-in `telegram-web-app.js` whose `Telegram.WebApp` carries freshly signed
//! `initData` (by the test's bot token), and it records the Bot API calls the coordinator makes.
//! - The Mini App in headless Chromium signs in, its MainButton starts contributing, the tab is attested, runs a job
//!   and is paid, and the page shows the earnings. Dark and light themes are rendered (screenshots kept in
//!   `target/browser-artifacts`).
//! - The webhook: a wrong secret is refused; `/start` answers with a `web_app` button carrying the launch parameter;
//!   `/balance` names the same account the Mini App used.

#![allow(clippy::unwrap_used)] // A panic is the failure report.

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Procs, browser, cdp_eval, chromium, get_json, serve_args, submit, temp_dir, wait_for};

const BOT_TOKEN: &str = "777000111:neurolov-test-bot_token";
const WEBHOOK_SECRET: &str = "webhook-secret_42";
const USER_ID: i64 = 4242;
const PUBLIC_URL: &str = "https://neurolov.example";

/// `initData` for [`USER_ID`], signed now with [`BOT_TOKEN`]; a fresh `query_id` each time (so a fresh hash).
fn init_data() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let mut fields = std::collections::BTreeMap::new();
    fields.insert("auth_date".to_string(), now.to_string());
    fields.insert("query_id".to_string(), format!("AAQ{}", fastrand::u64(..)));
    fields.insert("user".to_string(), format!("{{\"id\":{USER_ID},\"first_name\":\"Grace\",\"username\":\"grace\"}}"));
    fields.insert("chat_type".to_string(), "private".to_string());
    let hash = neurolov_coordinator::telegram::init_data::sign(&fields, BOT_TOKEN);
    fields.insert("hash".to_string(), hash);
    neurolov_coordinator::telegram::init_data::to_query(&fields)
}

/// The stand-in for Telegram's script: `Telegram.WebApp` with the theme the page's `?theme=` names, a MainButton
/// the test taps through `_click()`, and what the Mini App calls.
fn stand_in() -> String {
    format!(
        r##"(() => {{
  const dark = new URLSearchParams(location.search).get("theme") === "dark";
  const themes = {{
    light: {{ bg_color: "#ffffff", text_color: "#000000", hint_color: "#707579", button_color: "#3390ec", button_text_color: "#ffffff", secondary_bg_color: "#f4f4f5" }},
    dark: {{ bg_color: "#17212b", text_color: "#f5f5f5", hint_color: "#708499", button_color: "#5288c1", button_text_color: "#ffffff", secondary_bg_color: "#232e3c" }},
  }};
  const MainButton = {{
    text: "", isVisible: false, _click: null,
    setText(t) {{ this.text = t; document.documentElement.dataset.mainButton = t; return this; }},
    show() {{ this.isVisible = true; return this; }},
    hide() {{ this.isVisible = false; return this; }},
    onClick(f) {{ this._click = f; return this; }},
  }};
  window.Telegram = {{ WebApp: {{
    initData: {init_data:?},
    colorScheme: dark ? "dark" : "light",
    themeParams: dark ? themes.dark : themes.light,
    viewportStableHeight: 720,
    MainButton,
    BackButton: {{ show() {{}}, hide() {{}}, onClick() {{}} }},
    HapticFeedback: {{ impactOccurred() {{}}, notificationOccurred() {{}} }},
    ready() {{ document.documentElement.dataset.ready = "1"; }},
    expand() {{}},
    onEvent() {{}},
  }} }};
}})();"##,
        init_data = init_data()
    )
}

/// The stand-in for Telegram: its script, and a Bot API that records what it is sent. Returns its base URL.
fn telegram_stand_in(sent: Arc<Mutex<Vec<serde_json::Value>>>) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            use axum::routing::{get, post};
            let app = axum::Router::new()
                .route(
                    "/telegram-web-app.js",
                    get(|| async { ([(axum::http::header::CONTENT_TYPE, "text/javascript")], stand_in()) }),
                )
                .route(
                    "/{bot}/sendMessage",
                    post(move |axum::extract::Path(bot): axum::extract::Path<String>, body: String| async move {
                        let mut v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                        v["bot"] = bot.into();
                        sent.lock().unwrap().push(v);
                        axum::Json(serde_json::json!({ "ok": true, "result": {} }))
                    }),
                );
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    format!("http://{}", rx.recv().unwrap())
}

#[test]
fn a_telegram_user_contributes_from_the_mini_app_is_paid_and_talks_to_the_bot() {
    let Some(chromium) = chromium() else { return };
    let dir = temp_dir("telegram");
    let mut procs = Procs(Vec::new());
    let sent = Arc::new(Mutex::new(Vec::new()));
    let telegram = telegram_stand_in(Arc::clone(&sent));
    std::fs::write(dir.join("bot.token"), BOT_TOKEN).unwrap();
    std::fs::write(dir.join("webhook.secret"), WEBHOOK_SECRET).unwrap();
    let (token_file, secret_file) = (dir.join("bot.token"), dir.join("webhook.secret"));
    let js = format!("{telegram}/telegram-web-app.js");
    let args = [
        "--dev",
        "--listen",
        "127.0.0.1:0",
        "--telegram-bot-token-file",
        token_file.to_str().unwrap(),
        "--telegram-webhook-secret-file",
        secret_file.to_str().unwrap(),
        "--public-url",
        PUBLIC_URL,
        "--telegram-api-base",
        &telegram,
        "--telegram-web-app-js",
        &js,
    ];
    let url = serve_args(&mut procs, &dir, &args);

    // The Mini App signs in and waits for the tap.
    let profile = dir.join("profile-tg");
    std::fs::create_dir_all(&profile).unwrap();
    let child = browser(&chromium, &profile)
        .arg("--remote-debugging-port=0")
        .arg("--window-size=420,900")
        .arg(format!("{url}/tg?theme=light"))
        .spawn()
        .unwrap();
    procs.0.push(child);
    let mut account = String::new();
    wait_for("the Mini App to sign in", Duration::from_secs(60), || {
        account = cdp_eval(&profile, "/tg", "document.body.dataset.account || ''").as_str().unwrap_or("").to_string();
        !account.is_empty()
    });
    assert_eq!(cdp_eval(&profile, "/tg", "document.documentElement.dataset.ready"), "1", "ready() was called");
    assert_eq!(cdp_eval(&profile, "/tg", "Telegram.WebApp.MainButton.text"), "Start contributing");
    // The tap: the tab registers with the account's key and passes attestation.
    cdp_eval(&profile, "/tg", "Telegram.WebApp.MainButton._click(); true");
    wait_for("the Mini App's node to pass attestation", Duration::from_secs(180), || {
        get_json(&format!("{url}/v1/nodes"))
            .as_array()
            .is_some_and(|ns| ns.iter().any(|n| n["id"] == account.as_str() && n["state"] == "active"))
    });
    assert_eq!(cdp_eval(&profile, "/tg", "Telegram.WebApp.MainButton.text"), "Stop contributing");
    // It is the only provider: the job is its work, verified and paid.
    let job = submit(&dir, &url, "256x64x64", true);
    let status = get_json(&format!("{url}/v1/jobs/{}", job["id"]));
    assert_eq!(status["state"], "done", "{status}");
    let balance = get_json(&format!("{url}/v1/accounts/{account}"))["balance_nano"].as_u64().unwrap();
    assert!(balance > 0, "the Telegram user's account was not paid");
    wait_for("the Mini App to show the balance and the earnings", Duration::from_secs(30), || {
        ["earned", "earned-total"].iter().all(|id| {
            let shown = cdp_eval(&profile, "/tg", &format!("document.getElementById('{id}').textContent"));
            shown.as_str().and_then(|s| s.parse::<f64>().ok()).is_some_and(|nlov| nlov > 0.0)
        })
    });
    // Tapped again, it stops: the MainButton says so and the node says goodbye.
    cdp_eval(&profile, "/tg", "Telegram.WebApp.MainButton._click(); true");
    wait_for("the Mini App to stop contributing", Duration::from_secs(30), || {
        cdp_eval(&profile, "/tg", "Telegram.WebApp.MainButton.text") == "Start contributing"
            && get_json(&format!("{url}/v1/nodes"))
                .as_array()
                .is_some_and(|ns| ns.iter().any(|n| n["id"] == account.as_str() && n["state"] != "active"))
    });
    // A withdrawal to TON from the Mini App, signed with the account's key (funded first by a friend: a task's pay
    // is below the 1 NLOV minimum). This coordinator keeps no custody on TON: it stays held, requested.
    let out = common::neurolov()
        .args(["wallet", "transfer", "--to", &account, "--amount", "10", "--coordinator", &url, "--key"])
        .arg(dir.join("client.json"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let to = "UQDKbjIcfM6ezt8KjKJJLshZJJSqX7XOA4ff-W72r5gqPuwA";
    let fill = format!(
        "document.getElementById('withdraw-chain').value = 'ton';
         document.getElementById('withdraw-to').value = '{to}';
         document.getElementById('withdraw-amount').value = '2.5';
         document.getElementById('withdraw').requestSubmit(); true"
    );
    cdp_eval(&profile, "/tg", &fill);
    wait_for("the Mini App's withdrawal", Duration::from_secs(30), || {
        let shown = cdp_eval(&profile, "/tg", "document.getElementById('withdraw-result').textContent");
        shown.as_str().is_some_and(|s| s.starts_with("withdrawal requested"))
    });
    let withdrawals = get_json(&format!("{url}/v1/accounts/{account}/withdrawals"));
    let w = &withdrawals[0];
    let seen = (w["chain"].as_str(), w["to"].as_str(), w["amount_nano"].as_u64());
    assert_eq!(seen, (Some("ton"), Some(to), Some(2_500_000_000)), "{withdrawals}");
    let key = cdp_eval(
        &profile,
        "/tg",
        "document.getElementById('show-key').click(); document.getElementById('key').textContent",
    );
    let key: Vec<u8> = serde_json::from_str(key.as_str().unwrap()).unwrap();
    let exported = neurolov_protocol::Keypair::from_solana_json(&serde_json::to_string(&key).unwrap()).unwrap();
    assert_eq!(exported.id().to_string(), account, "the key taken out is the account's");

    themes(&chromium, &dir, &url);
    webhook(&url, &sent, &account);

    // initData signs in once, and a restart does not forget it.
    let replayed = init_data();
    let sign_in = |url: &str| {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let request = reqwest::Client::new()
            .post(format!("{url}/v1/telegram/session"))
            .json(&serde_json::json!({ "init_data": replayed }));
        rt.block_on(async { request.send().await.unwrap().status().as_u16() })
    };
    assert_eq!(sign_in(&url), 200);
    assert_eq!(sign_in(&url), 401, "a replay");
    // The coordinator was the first process started.
    let mut first = procs.0.remove(0);
    first.kill().and_then(|()| first.wait()).unwrap();
    let url = serve_args(&mut procs, &dir, &args);
    assert!(get_json(&format!("{url}/v1/accounts/{account}"))["balance_nano"].as_u64() > Some(0), "the same data");
    assert_eq!(sign_in(&url), 401, "a replay after a restart");
}

/// Both themes rendered: the page takes Telegram's colours. Screenshots are kept as artifacts.
fn themes(chromium: &std::path::Path, dir: &std::path::Path, url: &str) {
    let artifacts = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("../browser-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    for (theme, bg) in [("dark", "#17212b"), ("light", "#ffffff")] {
        let dump = browser(chromium, &dir.join(format!("profile-{theme}")))
            .args(["--dump-dom", "--virtual-time-budget=5000", "--window-size=420,900"])
            .arg(format!("{url}/tg?theme={theme}"))
            .stdout(Stdio::piped())
            .output()
            .unwrap();
        let dom = String::from_utf8_lossy(&dump.stdout);
        assert!(dom.contains(&format!("data-theme=\"{theme}\"")), "{theme}: {dom}");
        assert!(dom.contains(&format!("--tg-theme-bg-color: {bg}")), "{theme} colours not applied");
        assert!(dom.contains("Signed in as Grace"), "{theme}: not signed in");
        let shot = artifacts.join(format!("telegram-{theme}.png"));
        let status = browser(chromium, &dir.join(format!("profile-shot-{theme}")))
            .args(["--virtual-time-budget=5000", "--window-size=420,900"])
            .arg(format!("--screenshot={}", shot.display()))
            .arg(format!("{url}/tg?theme={theme}"))
            .status()
            .unwrap();
        assert!(status.success() && shot.is_file(), "no {theme} screenshot");
    }
}

/// Telegram's webhook calls: refused without the secret; `/start`, `/balance` and `/stats` answered.
fn webhook(url: &str, sent: &Arc<Mutex<Vec<serde_json::Value>>>, account: &str) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let http = reqwest::Client::new();
    let post = |secret: Option<&str>, text: &str| {
        let update = serde_json::json!({ "update_id": 1, "message": { "message_id": 1, "text": text,
            "chat": { "id": 99, "type": "private" }, "from": { "id": USER_ID, "first_name": "Grace" } } });
        let mut request = http.post(format!("{url}/v1/telegram/webhook")).json(&update);
        if let Some(secret) = secret {
            request = request.header("x-telegram-bot-api-secret-token", secret);
        }
        rt.block_on(request.send()).unwrap().status().as_u16()
    };
    assert_eq!(post(None, "/start"), 401);
    assert_eq!(post(Some("wrong-secret"), "/start"), 401);
    assert!(sent.lock().unwrap().is_empty(), "nothing answered for a refused update");
    assert_eq!(post(Some(WEBHOOK_SECRET), "/start ref42"), 200);
    assert_eq!(post(Some(WEBHOOK_SECRET), "/balance"), 200);
    assert_eq!(post(Some(WEBHOOK_SECRET), "/stats"), 200);
    wait_for("the bot's three replies", Duration::from_secs(10), || sent.lock().unwrap().len() == 3);
    let sent = sent.lock().unwrap();
    let start = sent.iter().find(|m| m["reply_markup"].is_object()).unwrap();
    assert_eq!(start["bot"], format!("bot{BOT_TOKEN}"));
    assert_eq!(start["chat_id"], 99);
    assert_eq!(
        start["reply_markup"]["inline_keyboard"][0][0]["web_app"]["url"],
        format!("{PUBLIC_URL}/tg?startapp=ref42")
    );
    let balance = sent.iter().find(|m| m["text"].as_str().is_some_and(|t| t.contains("balance"))).unwrap();
    assert!(balance["text"].as_str().unwrap().contains(account), "the bot and the Mini App agree on the account");
    assert!(sent.iter().any(|m| m["text"].as_str().is_some_and(|t| t.contains("verified TFLOPS"))));
}
