//! Neurolov inside Telegram (issue 15): the Mini App's sign-in, the bot's webhook, and the bot's replies.
//!
//! **Accounts.** A Telegram user's network account is custodial: its ed25519 key is derived from the coordinator's
//! Telegram secret (`telegram.secret` in the data directory, made once, never logged) and the user's id. Nothing
//! per user is stored, and the same user gets the same account on every device. The Mini App signs in with
//! `initData` (checked by [`init_data::Verifier`], each one usable once) and receives that key, so the tab signs its
//! own provider session and requests exactly as `/provide` does. Taking it out: the Mini App shows the key as a
//! Solana keypair (`neurolov wallet`, any Solana wallet) — or a user withdraws to their own wallet on TON or Solana.
//! The cost of custody, said plainly: whoever holds the coordinator's secret holds every Telegram account's key.
//!
//! **The bot.** Telegram posts updates to `/v1/telegram/webhook` with the secret token it was given
//! (`X-Telegram-Bot-Api-Secret-Token`); anything else is refused. `/start` answers with a button that opens the Mini
//! App (its parameter carried through), `/balance` and `/stats` with figures. Replies go to the Bot API's
//! `sendMessage` (its base URL is configurable, so tests record them locally).

pub mod init_data;

use std::collections::HashMap;
use std::sync::Mutex;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use neurolov_api as api;
use neurolov_protocol::Keypair;

use crate::app::{Shared, error};
use init_data::{InitDataError, Verifier};

/// Most `initData` hashes remembered for the replay guard; each is forgotten once its `auth_date` is too old to be
/// accepted anyway. Past it, sign-ins wait (503) rather than forget one still fresh.
pub const MAX_SEEN_INIT_DATA: usize = 100_000;
/// Longest update body the webhook reads.
pub const MAX_UPDATE_BYTES: usize = 64 * 1024;
/// Longest reply text sent (Telegram's own limit is 4096 characters).
pub const MAX_REPLY_CHARS: usize = 4096;
/// How long a Bot API call may take.
pub const BOT_API_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// How the coordinator is a Telegram bot.
#[derive(Clone)]
pub struct TelegramConfig {
    /// The bot's token (`--telegram-bot-token-file`; never logged).
    pub bot_token: String,
    /// The secret Telegram sends with each webhook call (`setWebhook`'s `secret_token`).
    pub webhook_secret: String,
    /// The Bot API's base URL (`https://api.telegram.org`).
    pub api_base: String,
    /// Telegram's Ed25519 key for `initData` signatures, hex (production by default).
    pub telegram_public_key: String,
    /// How old `initData` may be, in seconds.
    pub max_age_s: u64,
    /// The coordinator's public URL, for the Mini App button (`https://…`; Telegram opens only HTTPS Mini Apps).
    pub public_url: String,
    /// The script the Mini App loads first (`https://telegram.org/js/telegram-web-app.js`).
    pub web_app_js: String,
}

impl std::fmt::Debug for TelegramConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelegramConfig")
            .field("api_base", &self.api_base)
            .field("public_url", &self.public_url)
            .finish_non_exhaustive()
    }
}

/// The running bot: the checks, the replay guard, the key secret, a Bot API client.
pub struct Telegram {
    pub(crate) cfg: TelegramConfig,
    verifier: Verifier,
    /// `initData` hashes already used, with their `auth_date`.
    seen: Mutex<HashMap<String, u64>>,
    /// Derives each Telegram user's key.
    key_secret: [u8; 32],
    http: reqwest::Client,
}

impl Telegram {
    pub fn new(cfg: TelegramConfig, key_secret: [u8; 32]) -> anyhow::Result<Telegram> {
        let verifier = Verifier::new(&cfg.bot_token, &cfg.telegram_public_key, cfg.max_age_s)?;
        let http = reqwest::Client::builder().timeout(BOT_API_TIMEOUT).build()?;
        Ok(Telegram { cfg, verifier, seen: Mutex::new(HashMap::new()), key_secret, http })
    }

    /// The network key of Telegram user `user_id`.
    pub fn user_key(&self, user_id: i64) -> Keypair {
        let mut hasher = blake3::Hasher::new_keyed(&self.key_secret);
        hasher.update(b"neurolov/telegram-user/v1");
        hasher.update(&user_id.to_le_bytes());
        Keypair::from_seed(*hasher.finalize().as_bytes())
    }

    /// Checks `raw` and spends it: the same `initData` signs in once.
    pub fn sign_in(&self, raw: &str, now_s: u64) -> Result<init_data::InitData, SignInError> {
        let data = self.verifier.validate(raw, now_s)?;
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let max_age_s = self.verifier.max_age_s;
        seen.retain(|_, auth_date| now_s.saturating_sub(*auth_date) <= max_age_s);
        if seen.contains_key(&data.hash) {
            return Err(InitDataError::Replayed.into());
        }
        if seen.len() >= MAX_SEEN_INIT_DATA {
            return Err(SignInError::Busy);
        }
        seen.insert(data.hash.clone(), data.auth_date);
        Ok(data)
    }

    /// Sends `text` to `chat_id`, with `markup` (an inline keyboard) if given.
    pub async fn send_message(
        &self,
        chat_id: i64,
        text: &str,
        markup: Option<serde_json::Value>,
    ) -> anyhow::Result<()> {
        let text: String = text.chars().take(MAX_REPLY_CHARS).collect();
        let mut body = serde_json::json!({ "chat_id": chat_id, "text": text });
        if let Some(markup) = markup {
            body["reply_markup"] = markup;
        }
        let url = format!("{}/bot{}/sendMessage", self.cfg.api_base.trim_end_matches('/'), self.cfg.bot_token);
        let reply = self.http.post(url).json(&body).send().await?;
        let status = reply.status();
        if !status.is_success() {
            anyhow::bail!("sendMessage answered {status}");
        }
        Ok(())
    }

    /// The Mini App's address, with the launch parameter carried through.
    fn mini_app_url(&self, start_param: Option<&str>) -> String {
        let base = format!("{}/tg", self.cfg.public_url.trim_end_matches('/'));
        match start_param.filter(|p| !p.is_empty()) {
            Some(p) => format!("{base}?startapp={}", form_urlencoded::byte_serialize(p.as_bytes()).collect::<String>()),
            None => base,
        }
    }
}

/// Why a sign-in was refused.
#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    #[error(transparent)]
    InitData(#[from] InitDataError),
    #[error("too many sign-ins at once; try again in a minute")]
    Busy,
}

fn now_s() -> u64 {
    crate::now_ms() / 1000
}

/// `POST /v1/telegram/session`: the Mini App signs in with `initData` and receives its account's key.
#[utoipa::path(post, path = "/v1/telegram/session", tag = "telegram", request_body = api::TelegramSessionRequest, responses((status = 200, body = api::TelegramSession), (status = 401, body = api::ErrorReply), (status = 404, body = api::ErrorReply), (status = 503, body = api::ErrorReply)))]
pub(crate) async fn session(State(app): Shared, Json(req): Json<api::TelegramSessionRequest>) -> Response {
    let Some(telegram) = app.coordinator.telegram.as_ref() else {
        return error(StatusCode::NOT_FOUND, "this coordinator is not a Telegram bot");
    };
    let now = now_s();
    let data = match telegram.sign_in(&req.init_data, now) {
        Ok(d) => d,
        Err(SignInError::Busy) => return error(StatusCode::SERVICE_UNAVAILABLE, SignInError::Busy),
        Err(e) => return error(StatusCode::UNAUTHORIZED, e),
    };
    // Durably too: a restart forgets the memory above, not this.
    let forget_before = now.saturating_sub(telegram.cfg.max_age_s);
    match crate::store::spend_sign_in(&app.coordinator.db, &data.hash, data.auth_date, forget_before).await {
        Ok(true) => {}
        Ok(false) => return error(StatusCode::UNAUTHORIZED, InitDataError::Replayed),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
    let key = telegram.user_key(data.user_id);
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let public = key.id();
    tracing::info!(telegram_user = data.user_id, account = %public, "telegram sign-in");
    Json(api::TelegramSession {
        account: public.to_string(),
        telegram_user_id: data.user_id,
        first_name: data.first_name,
        start_param: data.start_param,
        secret_key_base64url: b64(&key.seed()),
        public_key_base64url: b64(public.as_bytes()),
    })
    .into_response()
}

/// `POST /v1/telegram/webhook`: an update from Telegram (checked by its secret token), answered through the Bot API.
pub(crate) async fn webhook(State(app): Shared, headers: HeaderMap, body: Bytes) -> Response {
    let Some(telegram) = app.coordinator.telegram.clone() else {
        return error(StatusCode::NOT_FOUND, "this coordinator is not a Telegram bot");
    };
    let given = headers.get("x-telegram-bot-api-secret-token").map(|v| v.as_bytes()).unwrap_or_default();
    let expected = telegram.cfg.webhook_secret.as_bytes();
    if given.len() != expected.len() || given.iter().zip(expected).fold(0u8, |acc, (a, b)| acc | (a ^ b)) != 0 {
        return error(StatusCode::UNAUTHORIZED, "wrong secret token");
    }
    let Ok(update) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "not a JSON update");
    };
    let message = &update["message"];
    let (Some(chat_id), Some(text)) = (message["chat"]["id"].as_i64(), message["text"].as_str()) else {
        return StatusCode::OK.into_response(); // not a text message: nothing to answer
    };
    let user_id = message["from"]["id"].as_i64();
    let reply = answer(&app, &telegram, text, user_id);
    // Telegram waits for the webhook's answer before it sends the next update: reply through the Bot API apart.
    tokio::spawn(async move {
        let (text, markup) = reply;
        if let Err(e) = telegram.send_message(chat_id, &text, markup).await {
            tracing::warn!(chat = chat_id, error = %e, "telegram reply failed");
        }
    });
    StatusCode::OK.into_response()
}

/// The bot's answer to a command.
fn answer(
    app: &crate::app::App,
    telegram: &Telegram,
    text: &str,
    user_id: Option<i64>,
) -> (String, Option<serde_json::Value>) {
    let mut words = text.split_whitespace();
    // `/start@botname param`: the command without the bot's name.
    let command = words.next().unwrap_or("").split('@').next().unwrap_or("");
    match command {
        "/start" => {
            let url = telegram.mini_app_url(words.next());
            let button =
                serde_json::json!({ "inline_keyboard": [[{ "text": "Open Neurolov", "web_app": { "url": url } }]] });
            ("Share this device's GPU with the Neurolov network and earn NLOV. Tap to start.".into(), Some(button))
        }
        "/balance" => match user_id {
            Some(id) => {
                let account = telegram.user_key(id).id();
                let view = app.coordinator.read_core(|core| core.wallet_view(&account));
                let text = format!(
                    "Your Neurolov account {account}\nbalance: {} NLOV\nstaked: {} NLOV",
                    neurolov_ledger::format_nlov(u128::from(view.balance_nano)),
                    neurolov_ledger::format_nlov(u128::from(view.staked_nano)),
                );
                (text, None)
            }
            None => ("I cannot tell who you are.".into(), None),
        },
        "/stats" => {
            let stats = app.network_stats();
            let text = format!(
                "Neurolov now: {} active GPU nodes ({} software, {} CPU), {:.4} verified TFLOPS, {} tasks verified, \
                 {} jobs done",
                stats.active_gpu_nodes,
                stats.active_software_nodes,
                stats.active_cpu_nodes,
                stats.verified_tflops,
                stats.tasks_verified,
                stats.jobs_done
            );
            (text, None)
        }
        _ => ("Commands: /start, /balance, /stats".into(), None),
    }
}
