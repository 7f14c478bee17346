//! A client of a TON HTTP API in toncenter's v2 shape (`/api/v2/...`, replies `{ok, result}`): the few calls custody
//! needs — chain time, an account's state, get methods (seqno, jetton wallet address and balance, jetton data),
//! sending a bag of cells, an account's transactions — as types. Every reply is parsed into a typed error when it is
//! not what the call promises.

use std::time::Duration;

use base64::Engine as _;
use tonlib_core::TonAddress;
use tonlib_core::cell::Cell;

use crate::ton::{self, TonError};

/// How long one call may take.
pub const TON_API_TIMEOUT: Duration = Duration::from_secs(30);
/// Most transactions one `getTransactions` call returns (toncenter's own limit).
pub const MAX_TRANSACTIONS_PER_PAGE: usize = 100;
/// Largest reply read, in bytes.
pub const MAX_REPLY_BYTES: usize = 8 << 20;

#[derive(Debug, thiserror::Error)]
pub enum TonApiError {
    #[error("ton api transport: {0}")]
    Transport(String),
    #[error("ton api error {code}: {message}")]
    Api { code: i64, message: String },
    #[error("unexpected ton api reply to {call}: {detail}")]
    Reply { call: &'static str, detail: String },
}

fn reply(call: &'static str, detail: impl std::fmt::Display) -> TonApiError {
    TonApiError::Reply { call, detail: detail.to_string() }
}

#[derive(serde::Deserialize)]
struct Envelope {
    ok: bool,
    result: Option<serde_json::Value>,
    error: Option<String>,
    code: Option<i64>,
}

/// An account as the API sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountState {
    pub balance_nanoton: u64,
    /// `active`, `uninitialized` or `frozen`.
    pub state: String,
}

/// A message of a transaction, as far as custody reads it.
#[derive(Clone, Debug)]
pub struct TonMessage {
    /// Empty for an inbound external message.
    pub source: Option<TonAddress>,
    pub destination: Option<TonAddress>,
    pub value_nanoton: u64,
    pub bounced: bool,
    /// Hex of the body's cell hash.
    pub body_hash: String,
    pub body: Option<Cell>,
}

/// A transaction of an account.
#[derive(Clone, Debug)]
pub struct TonTransaction {
    pub lt: u64,
    /// Base64 of the transaction's hash, as the API gives it.
    pub hash: String,
    pub utime: u64,
    pub in_msg: Option<TonMessage>,
    pub out_msgs: Vec<TonMessage>,
}

impl TonTransaction {
    /// `lt:hash`: unique across the chain, the ledger's idempotency key for what this transaction credits.
    pub fn id(&self) -> String {
        format!("{}:{}", self.lt, self.hash)
    }
}

/// A client of one API endpoint (`…/api/v2`).
#[derive(Clone, Debug)]
pub struct TonClient {
    base: String,
    http: reqwest::Client,
}

impl TonClient {
    pub fn new(base: &str) -> Result<TonClient, TonApiError> {
        let http = reqwest::Client::builder()
            .timeout(TON_API_TIMEOUT)
            .build()
            .map_err(|e| TonApiError::Transport(e.to_string()))?;
        Ok(TonClient { base: base.trim_end_matches('/').to_string(), http })
    }

    async fn call(
        &self,
        call: &'static str,
        request: reqwest::RequestBuilder,
    ) -> Result<serde_json::Value, TonApiError> {
        let resp = request.send().await.map_err(|e| TonApiError::Transport(e.to_string()))?;
        let bytes = resp.bytes().await.map_err(|e| TonApiError::Transport(e.to_string()))?;
        if bytes.len() > MAX_REPLY_BYTES {
            return Err(reply(call, format!("{} bytes", bytes.len())));
        }
        let envelope: Envelope = serde_json::from_slice(&bytes).map_err(|e| reply(call, e))?;
        match (envelope.ok, envelope.result) {
            (true, Some(result)) => Ok(result),
            _ => Err(TonApiError::Api {
                code: envelope.code.unwrap_or(0),
                message: envelope.error.unwrap_or_else(|| "no result".into()),
            }),
        }
    }

    async fn get(&self, call: &'static str, query: &[(&str, String)]) -> Result<serde_json::Value, TonApiError> {
        let query = form_urlencoded::Serializer::new(String::new()).extend_pairs(query).finish();
        self.call(call, self.http.get(format!("{}/{call}?{query}", self.base))).await
    }

    async fn post(&self, call: &'static str, body: serde_json::Value) -> Result<serde_json::Value, TonApiError> {
        self.call(call, self.http.post(format!("{}/{call}", self.base)).json(&body)).await
    }

    /// The chain's time: the newest consensus block's timestamp, unix seconds. A message whose `valid_until` is
    /// before it can never be accepted.
    pub async fn chain_time(&self) -> Result<u64, TonApiError> {
        let v = self.get("getConsensusBlock", &[]).await?;
        v["timestamp"].as_u64().ok_or_else(|| reply("getConsensusBlock", "no timestamp"))
    }

    pub async fn account_state(&self, address: &TonAddress) -> Result<AccountState, TonApiError> {
        let v = self.get("getAddressInformation", &[("address", address.to_hex())]).await?;
        let balance_nanoton = number(&v["balance"]).ok_or_else(|| reply("getAddressInformation", "no balance"))?;
        let state = v["state"].as_str().ok_or_else(|| reply("getAddressInformation", "no state"))?.to_string();
        Ok(AccountState { balance_nanoton, state })
    }

    /// Runs a get method; its exit code must be 0 (or 1, TVM's other success).
    pub async fn run_get_method(
        &self,
        address: &TonAddress,
        method: &str,
        stack: serde_json::Value,
    ) -> Result<Vec<serde_json::Value>, TonApiError> {
        let body = serde_json::json!({ "address": address.to_hex(), "method": method, "stack": stack });
        let v = self.post("runGetMethod", body).await?;
        let exit_code = v["exit_code"].as_i64().ok_or_else(|| reply("runGetMethod", "no exit code"))?;
        if exit_code != 0 && exit_code != 1 {
            return Err(TonApiError::Api { code: exit_code, message: format!("{method} exited with {exit_code}") });
        }
        v["stack"].as_array().cloned().ok_or_else(|| reply("runGetMethod", "no stack"))
    }

    /// A wallet's seqno (0 for a wallet not deployed yet: its first message carries its state init).
    pub async fn seqno(&self, wallet: &TonAddress) -> Result<u32, TonApiError> {
        if self.account_state(wallet).await?.state != "active" {
            return Ok(0);
        }
        let stack = self.run_get_method(wallet, "seqno", serde_json::json!([])).await?;
        let seqno = stack.first().and_then(stack_number).ok_or_else(|| reply("runGetMethod", "seqno: no number"))?;
        u32::try_from(seqno).map_err(|e| reply("runGetMethod", e))
    }

    /// The jetton wallet of `owner` for the jetton `master` (the minter's `get_wallet_address`).
    pub async fn jetton_wallet(&self, master: &TonAddress, owner: &TonAddress) -> Result<TonAddress, TonApiError> {
        let cell = ton::address_cell(owner).map_err(|e| reply("runGetMethod", e))?;
        let boc = tonlib_core::cell::BagOfCells::new(&[cell]).serialize(false).map_err(|e| reply("runGetMethod", e))?;
        let slice = base64::engine::general_purpose::STANDARD.encode(boc);
        let stack =
            self.run_get_method(master, "get_wallet_address", serde_json::json!([["tvm.Slice", slice]])).await?;
        let cell = stack.first().and_then(stack_cell).ok_or_else(|| reply("runGetMethod", "no address cell"))?;
        cell.parser().load_address().map_err(|e| reply("runGetMethod", e))
    }

    /// A jetton wallet's balance (0 for one not deployed: nothing was ever sent to it).
    pub async fn jetton_balance(&self, jetton_wallet: &TonAddress) -> Result<u64, TonApiError> {
        if self.account_state(jetton_wallet).await?.state != "active" {
            return Ok(0);
        }
        let stack = self.run_get_method(jetton_wallet, "get_wallet_data", serde_json::json!([])).await?;
        stack.first().and_then(stack_number).ok_or_else(|| reply("runGetMethod", "get_wallet_data: no balance"))
    }

    /// A jetton's total supply and admin (None: no admin, the supply can never change).
    pub async fn jetton_data(&self, master: &TonAddress) -> Result<(u64, Option<TonAddress>), TonApiError> {
        let stack = self.run_get_method(master, "get_jetton_data", serde_json::json!([])).await?;
        let supply = stack.first().and_then(stack_number).ok_or_else(|| reply("runGetMethod", "no total supply"))?;
        let admin_cell = stack.get(2).and_then(stack_cell).ok_or_else(|| reply("runGetMethod", "no admin"))?;
        let admin = admin_cell.parser().load_address().map_err(|e| reply("runGetMethod", e))?;
        Ok((supply, (admin != TonAddress::NULL).then_some(admin)))
    }

    pub async fn send_boc(&self, boc: &[u8]) -> Result<(), TonApiError> {
        let body = serde_json::json!({ "boc": base64::engine::general_purpose::STANDARD.encode(boc) });
        self.post("sendBoc", body).await.map(|_| ())
    }

    /// Up to `limit` transactions of `address`, newest first, from `(lt, hash)` (inclusive) back to `to_lt`
    /// (exclusive).
    pub async fn transactions(
        &self,
        address: &TonAddress,
        limit: usize,
        from: Option<(u64, &str)>,
        to_lt: u64,
    ) -> Result<Vec<TonTransaction>, TonApiError> {
        let mut query = vec![
            ("address", address.to_hex()),
            ("limit", limit.min(MAX_TRANSACTIONS_PER_PAGE).to_string()),
            ("to_lt", to_lt.to_string()),
        ];
        if let Some((lt, hash)) = from {
            query.push(("lt", lt.to_string()));
            query.push(("hash", hash.to_string()));
        }
        let v = self.get("getTransactions", &query).await?;
        let list = v.as_array().ok_or_else(|| reply("getTransactions", "not a list"))?;
        list.iter().map(transaction).collect()
    }
}

fn number(v: &serde_json::Value) -> Option<u64> {
    match v {
        serde_json::Value::String(s) => s.parse().ok(),
        serde_json::Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

/// `["num", "0x…"]` as a non-negative u64.
fn stack_number(item: &serde_json::Value) -> Option<u64> {
    let text = item.get(1)?.as_str()?;
    u64::from_str_radix(text.strip_prefix("0x")?, 16).ok()
}

/// `["cell", {"bytes": base64}]` (or `slice`) as a cell.
fn stack_cell(item: &serde_json::Value) -> Option<Cell> {
    let bytes = item.get(1)?.get("bytes")?.as_str()?;
    let boc = base64::engine::general_purpose::STANDARD.decode(bytes).ok()?;
    ton::cell_from_boc(&boc).ok()
}

fn address_field(v: &serde_json::Value) -> Result<Option<TonAddress>, TonApiError> {
    match v.as_str() {
        None | Some("") => Ok(None),
        Some(text) => text.parse().map(Some).map_err(|e| reply("getTransactions", format!("address {text}: {e}"))),
    }
}

fn message(v: &serde_json::Value) -> Result<TonMessage, TonApiError> {
    let body = match v["msg_data"]["body"].as_str() {
        Some(b64) if !b64.is_empty() => {
            let boc = base64::engine::general_purpose::STANDARD.decode(b64).map_err(|e| reply("getTransactions", e))?;
            Some(ton::cell_from_boc(&boc).map_err(|e: TonError| reply("getTransactions", e))?)
        }
        _ => None,
    };
    let body_hash = match v["body_hash"].as_str() {
        Some(b64) => {
            let bytes =
                base64::engine::general_purpose::STANDARD.decode(b64).map_err(|e| reply("getTransactions", e))?;
            bytes.iter().map(|b| format!("{b:02x}")).collect()
        }
        None => body.as_ref().map(|c| c.cell_hash().to_hex()).unwrap_or_default(),
    };
    Ok(TonMessage {
        source: address_field(&v["source"])?,
        destination: address_field(&v["destination"])?,
        value_nanoton: number(&v["value"]).unwrap_or(0),
        bounced: v["bounced"].as_bool().unwrap_or(false),
        body_hash,
        body,
    })
}

fn transaction(v: &serde_json::Value) -> Result<TonTransaction, TonApiError> {
    let id = &v["transaction_id"];
    let lt = number(&id["lt"]).ok_or_else(|| reply("getTransactions", "no lt"))?;
    let hash = id["hash"].as_str().ok_or_else(|| reply("getTransactions", "no hash"))?.to_string();
    let in_msg = if v["in_msg"].is_object() { Some(message(&v["in_msg"])?) } else { None };
    let out_msgs = match v["out_msgs"].as_array() {
        Some(list) => list.iter().map(message).collect::<Result<_, _>>()?,
        None => Vec::new(),
    };
    Ok(TonTransaction { lt, hash, utime: v["utime"].as_u64().unwrap_or(0), in_msg, out_msgs })
}
