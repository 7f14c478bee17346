//! A Solana JSON-RPC client: the few methods custody needs (blockhashes with their last valid block height, sending a
//! signed transaction, the statuses of signatures, the block height, token balances, rent), as types. Every reply is
//! bounded and parsed into a typed error when it is not what the method promises.

use std::time::Duration;

use base64::Engine as _;

use crate::solana::{Hash, Pubkey, Transaction};

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
