//! A Solana JSON-RPC client: the few methods custody needs (blockhashes with their last valid block height, sending a
//! signed transaction, the statuses of signatures, the block height, token balances, rent), as types. Every reply is
//! bounded and parsed into a typed error when it is not what the method promises.

use std::time::Duration;

use base64::Engine as _;

use crate::solana::{Hash, Pubkey, TokenChange, Transaction, VersionedTransaction};

/// Most signatures one `getSignaturesForAddress` call returns (the method's own limit).
pub const MAX_SIGNATURES_PER_PAGE: usize = 1_000;

/// How long one call may take.
pub const RPC_TIMEOUT: Duration = Duration::from_secs(30);
/// Signatures one `getSignatureStatuses` call may ask about (the method's own limit).
pub const MAX_SIGNATURES_PER_CALL: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    #[error("rpc transport: {0}")]
    Transport(String),
    #[error("rpc error {code}: {message}")]
    Rpc { code: i64, message: String },
    #[error("unexpected rpc reply to {method}: {detail}")]
    Reply { method: &'static str, detail: String },
}

/// A blockhash and the last block height at which a transaction using it can still land.
#[derive(Clone, Debug, PartialEq)]
pub struct Blockhash {
    pub hash: Hash,
    pub last_valid_block_height: u64,
}

/// What the cluster says of a signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SignatureStatus {
    /// Not seen (not landed, or too old for the node's history).
    Unknown,
    /// Landed and failed (its fee was paid; the transfer did not happen, and never will under this signature).
    Failed(String),
    /// Landed and succeeded, at this commitment (`processed`, `confirmed`, `finalized`).
    Landed { commitment: String },
}

#[derive(serde::Deserialize)]
struct Envelope {
    result: Option<serde_json::Value>,
    error: Option<RpcErrorBody>,
}

#[derive(serde::Deserialize)]
struct RpcErrorBody {
    code: i64,
    message: String,
}

/// A client of one JSON-RPC endpoint.
#[derive(Clone, Debug)]
pub struct Client {
    url: String,
    http: reqwest::Client,
}

fn reply(method: &'static str, detail: impl std::fmt::Display) -> RpcError {
    RpcError::Reply { method, detail: detail.to_string() }
}

impl Client {
    pub fn new(url: &str) -> Result<Client, RpcError> {
        let http =
            reqwest::Client::builder().timeout(RPC_TIMEOUT).build().map_err(|e| RpcError::Transport(e.to_string()))?;
        Ok(Client { url: url.to_string(), http })
    }

    async fn call(&self, method: &'static str, params: serde_json::Value) -> Result<serde_json::Value, RpcError> {
        let body = serde_json::json!({ "jsonrpc": "2.0", "id": 1, "method": method, "params": params });
        let resp =
            self.http.post(&self.url).json(&body).send().await.map_err(|e| RpcError::Transport(e.to_string()))?;
        let envelope: Envelope = resp.json().await.map_err(|e| reply(method, e))?;
        if let Some(e) = envelope.error {
            return Err(RpcError::Rpc { code: e.code, message: e.message });
        }
        envelope.result.ok_or_else(|| reply(method, "no result"))
    }

    /// The latest blockhash at `finalized` commitment, and how long transactions using it stay valid.
    pub async fn latest_blockhash(&self) -> Result<Blockhash, RpcError> {
        const M: &str = "getLatestBlockhash";
        let v = self.call(M, serde_json::json!([{ "commitment": "finalized" }])).await?;
        let value = &v["value"];
        let hash = value["blockhash"].as_str().ok_or_else(|| reply(M, "no blockhash"))?;
        let hash: Hash = hash.parse().map_err(|_| reply(M, "a blockhash that is not base58 of 32 bytes"))?;
        let last_valid_block_height =
            value["lastValidBlockHeight"].as_u64().ok_or_else(|| reply(M, "no lastValidBlockHeight"))?;
        Ok(Blockhash { hash, last_valid_block_height })
    }

    /// Sends a signed transaction (no preflight: the same bytes may be sent again until they land or expire); its
    /// signature as the node reports it.
    pub async fn send(&self, tx: &Transaction) -> Result<String, RpcError> {
        const M: &str = "sendTransaction";
        let wire = base64::engine::general_purpose::STANDARD.encode(crate::solana::wire(tx));
        let params = serde_json::json!([wire, { "encoding": "base64", "skipPreflight": true, "maxRetries": 0 }]);
        let v = self.call(M, params).await?;
        v.as_str().map(str::to_string).ok_or_else(|| reply(M, "no signature"))
    }

    /// The statuses of `signatures` (at most [`MAX_SIGNATURES_PER_CALL`]), searching the node's whole history.
    pub async fn signature_statuses(&self, signatures: &[String]) -> Result<Vec<SignatureStatus>, RpcError> {
        const M: &str = "getSignatureStatuses";
        if signatures.len() > MAX_SIGNATURES_PER_CALL {
            return Err(reply(M, format!("{} signatures in one call", signatures.len())));
        }
        let v = self.call(M, serde_json::json!([signatures, { "searchTransactionHistory": true }])).await?;
        let values = v["value"].as_array().ok_or_else(|| reply(M, "no value array"))?;
        if values.len() != signatures.len() {
            return Err(reply(M, "a status count that is not the signature count"));
        }
        Ok(values.iter().map(status).collect())
    }

    /// The cluster's block height (a transaction whose blockhash's last valid height is below it can never land).
    pub async fn block_height(&self) -> Result<u64, RpcError> {
        const M: &str = "getBlockHeight";
        self.call(M, serde_json::json!([{ "commitment": "finalized" }]))
            .await?
            .as_u64()
            .ok_or_else(|| reply(M, "no height"))
    }

    /// A token account's balance in base units; `None` when the account does not exist.
    pub async fn token_balance(&self, account: &Pubkey) -> Result<Option<u64>, RpcError> {
        const M: &str = "getTokenAccountBalance";
        match self.call(M, serde_json::json!([account.to_string(), { "commitment": "finalized" }])).await {
            Ok(v) => {
                let amount = v["value"]["amount"].as_str().ok_or_else(|| reply(M, "no amount"))?;
                amount.parse().map(Some).map_err(|_| reply(M, "an amount that is not a u64"))
            }
            // The JSON-RPC "invalid params" code: the node's answer for an account that is not a token account.
            Err(RpcError::Rpc { code: -32602, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Lamports an account of `bytes` needs to be rent-exempt.
    pub async fn rent_exempt_lamports(&self, bytes: u64) -> Result<u64, RpcError> {
        const M: &str = "getMinimumBalanceForRentExemption";
        self.call(M, serde_json::json!([bytes])).await?.as_u64().ok_or_else(|| reply(M, "no lamports"))
    }
}

/// A landed transaction as `getTransaction` returns it.
#[derive(Clone, Debug)]
pub struct Fetched {
    pub tx: VersionedTransaction,
    /// Set when it landed and failed.
    pub err: Option<String>,
    /// The token accounts among its static keys whose balance it shows, before and after.
    pub changes: Vec<TokenChange>,
}

fn token_balances(
    method: &'static str,
    v: &serde_json::Value,
    keys: &[Pubkey],
) -> Result<Vec<(Pubkey, Pubkey, u64)>, RpcError> {
    let mut out = Vec::new();
    for b in v.as_array().into_iter().flatten() {
        let index = b["accountIndex"].as_u64().ok_or_else(|| reply(method, "a token balance without accountIndex"))?;
        // An account loaded from a lookup table is not among the static keys: a deposit never hides there.
        let Some(account) = keys.get(index as usize) else { continue };
        let mint = crate::solana::parse_address(b["mint"].as_str().unwrap_or("")).map_err(|e| reply(method, e))?;
        let amount = b["uiTokenAmount"]["amount"].as_str().and_then(|a| a.parse().ok());
        out.push((*account, mint, amount.ok_or_else(|| reply(method, "a token amount that is not a u64"))?));
    }
    Ok(out)
}

impl Client {
    /// Signatures of finalized transactions that touched `address`, newest first, down to (not including) `until`.
    pub async fn signatures_for_address(
        &self,
        address: &Pubkey,
        until: Option<&str>,
        before: Option<&str>,
    ) -> Result<Vec<String>, RpcError> {
        const M: &str = "getSignaturesForAddress";
        let mut options = serde_json::json!({ "limit": MAX_SIGNATURES_PER_PAGE, "commitment": "finalized" });
        if let Some(until) = until {
            options["until"] = until.into();
        }
        if let Some(before) = before {
            options["before"] = before.into();
        }
        let v = self.call(M, serde_json::json!([address.to_string(), options])).await?;
        let entries = v.as_array().ok_or_else(|| reply(M, "not an array"))?;
        if entries.len() > MAX_SIGNATURES_PER_PAGE {
            return Err(reply(M, "more signatures than asked for"));
        }
        entries
            .iter()
            .map(|e| e["signature"].as_str().map(str::to_string).ok_or_else(|| reply(M, "no signature")))
            .collect()
    }

    /// A finalized transaction with its token balance changes; `None` when the node does not have it.
    pub async fn transaction(&self, signature: &str) -> Result<Option<Fetched>, RpcError> {
        const M: &str = "getTransaction";
        let options =
            serde_json::json!({ "encoding": "base64", "commitment": "finalized", "maxSupportedTransactionVersion": 0 });
        let v = self.call(M, serde_json::json!([signature, options])).await;
        let v = match v {
            Ok(v) => v,
            Err(RpcError::Reply { detail, .. }) if detail == "no result" => return Ok(None),
            Err(e) => return Err(e),
        };
        if v.is_null() {
            return Ok(None);
        }
        let wire = v["transaction"][0].as_str().ok_or_else(|| reply(M, "no base64 transaction"))?;
        let wire = base64::engine::general_purpose::STANDARD.decode(wire).map_err(|e| reply(M, e))?;
        let tx =
            crate::solana::versioned_from_wire(&wire).ok_or_else(|| reply(M, "a transaction that does not parse"))?;
        let meta = &v["meta"];
        let err = (!meta["err"].is_null()).then(|| meta["err"].to_string());
        let keys = tx.message.static_account_keys().to_vec();
        let pre = token_balances(M, &meta["preTokenBalances"], &keys)?;
        let post = token_balances(M, &meta["postTokenBalances"], &keys)?;
        let mut changes: Vec<TokenChange> = post
            .iter()
            .map(|&(account, mint, after)| {
                let before = pre.iter().find(|(a, m, _)| *a == account && *m == mint).map_or(0, |p| p.2);
                TokenChange { account, mint, pre: before, post: after }
            })
            .collect();
        for &(account, mint, before) in &pre {
            if !changes.iter().any(|c| c.account == account && c.mint == mint) {
                changes.push(TokenChange { account, mint, pre: before, post: 0 });
            }
        }
        Ok(Some(Fetched { tx, err, changes }))
    }
}

fn status(v: &serde_json::Value) -> SignatureStatus {
    if v.is_null() {
        return SignatureStatus::Unknown;
    }
    if !v["err"].is_null() {
        return SignatureStatus::Failed(v["err"].to_string().chars().take(200).collect());
    }
    let commitment = v["confirmationStatus"].as_str().unwrap_or("processed").to_string();
    SignatureStatus::Landed { commitment }
}
