//! Telegram Mini App `initData` (issue 15): the query string Telegram hands a Mini App, and the checks that make it
//! an authentication (core.telegram.org/bots/webapps, "Validating data received via the Mini App"):
//! - the bot's own check: `hash` = hex HMAC-SHA256 of the data-check string (every field but `hash`, sorted by key,
//!   `key=value` joined by `\n`) under the key HMAC-SHA256("WebAppData", bot token);
//! - the third-party check, when the data carries `signature`: Ed25519 by Telegram's published key over
//!   `{bot_id}:WebAppData\n` and the fields but `hash` and `signature`, sorted and joined the same way;
//! - `auth_date` no older than the configured age (and not from the future beyond a small clock skew).
//!
//! Pure: the caller passes the time, and keeps the replay guard.

use std::collections::BTreeMap;

use base64::Engine as _;
use hmac::{Hmac, Mac as _};
use sha2::Sha256;

/// Largest `initData` accepted, in bytes (Telegram's are well under 1 KiB).
pub const MAX_INIT_DATA_BYTES: usize = 4096;
/// Most fields in one `initData`.
pub const MAX_FIELDS: usize = 32;
/// How old `auth_date` may be by default: an hour, as the issue asks.
pub const DEFAULT_MAX_AGE_S: u64 = 3600;
/// How far in the future `auth_date` may be (clock skew between Telegram and us).
pub const MAX_CLOCK_SKEW_S: u64 = 60;
/// Telegram's Ed25519 key for third-party validation, production environment.
pub const TELEGRAM_PUBLIC_KEY: &str = "e7bf03a2fa4602af4580703d88dda5bb59f32ed8b02a56c187fe7d34caed242d";
/// Telegram's Ed25519 key for third-party validation, test environment.
pub const TELEGRAM_TEST_PUBLIC_KEY: &str = "40055058a4ee38156a06562e52eece92a771bcd8346a8c4615cb7376eddf72ec";

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InitDataError {
    #[error("init data is longer than {MAX_INIT_DATA_BYTES} bytes")]
    TooLong,
    #[error("init data is malformed: {0}")]
    Malformed(String),
    #[error("init data has no {0}")]
    Missing(&'static str),
    #[error("init data's hash does not match: not signed with this bot's token")]
    BadHash,
    #[error("init data's signature is not Telegram's")]
    BadSignature,
    #[error("init data is {age_s} s old (at most {max_age_s} s)")]
    Stale { age_s: u64, max_age_s: u64 },
    #[error("init data is dated in the future")]
    FromTheFuture,
    #[error("this init data was used already")]
    Replayed,
}

/// What a validated `initData` says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitData {
    /// The Telegram user.
    pub user_id: i64,
    pub first_name: String,
    pub username: Option<String>,
    pub auth_date: u64,
    /// The Mini App's launch parameter (`startapp`), if any.
    pub start_param: Option<String>,
    /// The `hash` field: unique per issued `initData`, the replay guard's key.
    pub hash: String,
}

/// Telegram's keys and our bot's, and the age limit.
#[derive(Clone, Debug)]
pub struct Verifier {
    /// The bot's token (its secret: never logged).
    bot_token: String,
    /// Telegram's Ed25519 public key (production by default; the test environment's, or a test's own, configured).
    telegram_key: ed25519_dalek::VerifyingKey,
    pub max_age_s: u64,
}

impl Verifier {
    pub fn new(bot_token: &str, telegram_key_hex: &str, max_age_s: u64) -> Result<Verifier, InitDataError> {
        let bytes: [u8; 32] = hex32(telegram_key_hex).ok_or(InitDataError::Malformed("telegram key".into()))?;
        let telegram_key = ed25519_dalek::VerifyingKey::from_bytes(&bytes)
            .map_err(|_| InitDataError::Malformed("telegram key".into()))?;
        Ok(Verifier { bot_token: bot_token.trim().to_string(), telegram_key, max_age_s })
    }

    /// The bot's numeric id: the token's part before `:`.
    pub fn bot_id(&self) -> &str {
        self.bot_token.split(':').next().unwrap_or("")
    }

    /// Checks `raw` at unix time `now_s`: the bot's HMAC, Telegram's signature when present, the age.
    pub fn validate(&self, raw: &str, now_s: u64) -> Result<InitData, InitDataError> {
        let fields = parse(raw)?;
        let hash = fields.get("hash").ok_or(InitDataError::Missing("hash"))?;
        let expected = sign(&fields, &self.bot_token);
        if !constant_time_eq(expected.as_bytes(), hash.to_ascii_lowercase().as_bytes()) {
            return Err(InitDataError::BadHash);
        }
        if let Some(signature) = fields.get("signature") {
            let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(signature.trim_end_matches('='))
                .map_err(|_| InitDataError::BadSignature)?;
            let signature = ed25519_dalek::Signature::from_slice(&bytes).map_err(|_| InitDataError::BadSignature)?;
            let message = format!("{}:WebAppData\n{}", self.bot_id(), check_string(&fields, &["hash", "signature"]));
            self.telegram_key.verify_strict(message.as_bytes(), &signature).map_err(|_| InitDataError::BadSignature)?;
        }
        let auth_date: u64 = fields
            .get("auth_date")
            .ok_or(InitDataError::Missing("auth_date"))?
            .parse()
            .map_err(|_| InitDataError::Malformed("auth_date".into()))?;
        if auth_date > now_s.saturating_add(MAX_CLOCK_SKEW_S) {
            return Err(InitDataError::FromTheFuture);
        }
        let age_s = now_s.saturating_sub(auth_date);
        if age_s > self.max_age_s {
            return Err(InitDataError::Stale { age_s, max_age_s: self.max_age_s });
        }
        let user: serde_json::Value = serde_json::from_str(fields.get("user").ok_or(InitDataError::Missing("user"))?)
            .map_err(|e| InitDataError::Malformed(format!("user: {e}")))?;
        let user_id = user["id"].as_i64().ok_or(InitDataError::Missing("user id"))?;
        Ok(InitData {
            user_id,
            first_name: user["first_name"].as_str().unwrap_or("").chars().take(64).collect(),
            username: user["username"].as_str().map(|u| u.chars().take(64).collect()),
            auth_date,
            start_param: fields.get("start_param").map(|p| p.chars().take(64).collect()),
            hash: hash.to_ascii_lowercase(),
        })
    }
}

/// The fields of a query string, values percent-decoded; a field given twice is refused (which one would count?).
pub fn parse(raw: &str) -> Result<BTreeMap<String, String>, InitDataError> {
    if raw.len() > MAX_INIT_DATA_BYTES {
        return Err(InitDataError::TooLong);
    }
    let mut fields = BTreeMap::new();
    for (key, value) in form_urlencoded::parse(raw.trim().as_bytes()) {
        if fields.len() >= MAX_FIELDS {
            return Err(InitDataError::Malformed("too many fields".into()));
        }
        if fields.insert(key.to_string(), value.to_string()).is_some() {
            return Err(InitDataError::Malformed(format!("{key} given twice")));
        }
    }
    Ok(fields)
}

/// The fields as a query string, percent-encoded (what a Telegram client hands the Mini App).
pub fn to_query(fields: &BTreeMap<String, String>) -> String {
    form_urlencoded::Serializer::new(String::new()).extend_pairs(fields).finish()
}

/// The data-check string: the fields but `exclude`, sorted by key, `key=value` joined by `\n`.
pub fn check_string(fields: &BTreeMap<String, String>, exclude: &[&str]) -> String {
    let lines: Vec<String> =
        fields.iter().filter(|(k, _)| !exclude.contains(&k.as_str())).map(|(k, v)| format!("{k}={v}")).collect();
    lines.join("\n")
}

/// The `hash` a bot with `bot_token` gives `fields` (all but `hash` are signed, `signature` included).
pub fn sign(fields: &BTreeMap<String, String>, bot_token: &str) -> String {
    let secret = hmac_sha256(b"WebAppData", bot_token.trim().as_bytes());
    let mac = hmac_sha256(&secret, check_string(fields, &["hash"]).as_bytes());
    mac.iter().map(|b| format!("{b:02x}")).collect()
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    // HMAC takes keys of any length: `new_from_slice` cannot fail for it.
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC accepts any key length"),
    };
    mac.update(message);
    mac.finalize().into_bytes().into()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn hex32(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}
