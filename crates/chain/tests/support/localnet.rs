//! A small Solana JSON-RPC server backed by LiteSVM (the real SPL programs): the methods `neurolov_chain::rpc`
//! calls, answered as a validator answers them, on a loopback port. Block height advances only when a test moves it
//! (expiring the blockhash and passing every earlier last valid height), so expiry is exact rather than timed.

use std::str::FromStr;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::State;
use base64::Engine as _;
use litesvm::LiteSVM;
use serde_json::{Value, json};
use solana_program_pack::Pack;

/// How many blocks a blockhash stays valid (as on Solana).
pub const BLOCKHASH_VALID_BLOCKS: u64 = 150;

pub struct Localnet {
    pub svm: LiteSVM,
    pub height: u64,
    /// Every transaction that landed, oldest first, with the token balances of its accounts before and after.
    pub landed: Vec<Landed>,
}

pub struct Landed {
    pub signature: String,
    pub wire: Vec<u8>,
    pub keys: Vec<neurolov_chain::solana::Pubkey>,
    pub err: Option<String>,
    pub pre: Vec<Value>,
    pub post: Vec<Value>,
    pub slot: u64,
}

impl Localnet {
    pub fn new(svm: LiteSVM) -> Localnet {
        Localnet { svm, height: 1_000, landed: Vec::new() }
    }

    /// The token balances of `keys` as `getTransaction` shows them.
    fn token_balances(&self, keys: &[neurolov_chain::solana::Pubkey]) -> Vec<Value> {
        keys.iter()
            .enumerate()
            .filter_map(|(i, k)| {
                let data = self.svm.get_account(k)?.data;
                let state = spl_token_interface::state::Account::unpack(&data).ok()?;
                Some(json!({ "accountIndex": i, "mint": state.mint.to_string(), "owner": state.owner.to_string(),
                    "uiTokenAmount": { "amount": state.amount.to_string(), "decimals": 9 } }))
            })
            .collect()
    }
}

pub type Shared = Arc<Mutex<Localnet>>;

/// Serves `net` on a free loopback port; its URL.
pub async fn serve(net: Shared) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new().route("/", axum::routing::post(handle)).with_state(net);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

async fn handle(State(net): State<Shared>, Json(req): Json<Value>) -> Json<Value> {
    let id = req["id"].clone();
    let mut net = net.lock().unwrap();
    let reply = match answer(&mut net, req["method"].as_str().unwrap_or(""), &req["params"]) {
        Ok(result) => json!({ "jsonrpc": "2.0", "id": id, "result": result }),
        Err((code, message)) => json!({ "jsonrpc": "2.0", "id": id, "error": { "code": code, "message": message } }),
    };
    Json(reply)
}

fn answer(net: &mut Localnet, method: &str, params: &Value) -> Result<Value, (i64, String)> {
    let context = json!({ "slot": net.height });
    match method {
        "getLatestBlockhash" => Ok(json!({ "context": context, "value": {
            "blockhash": net.svm.latest_blockhash().to_string(),
            "lastValidBlockHeight": net.height + BLOCKHASH_VALID_BLOCKS,
        }})),
        "getBlockHeight" => Ok(json!(net.height)),
        "getMinimumBalanceForRentExemption" => {
            Ok(json!(net.svm.minimum_balance_for_rent_exemption(params[0].as_u64().unwrap_or(0) as usize)))
        }
        "sendTransaction" => {
            let wire = base64::engine::general_purpose::STANDARD
                .decode(params[0].as_str().unwrap_or(""))
                .map_err(|e| (-32602, e.to_string()))?;
            let tx = neurolov_chain::solana::from_wire(&wire).ok_or((-32602, "not a transaction".to_string()))?;
            let signature = neurolov_chain::solana::signature(&tx);
            let keys = tx.message.account_keys.clone();
            let pre = net.token_balances(&keys);
            // As with skipPreflight on a validator: the signature comes back whatever becomes of the transaction.
            let err = match net.svm.send_transaction(tx) {
                Ok(_) => None,
                Err(failed) => Some(failed.err.to_string()),
            };
            let landed = solana_signature::Signature::from_str(&signature)
                .ok()
                .is_some_and(|s| net.svm.get_transaction(&s).is_some());
            if landed {
                let post = net.token_balances(&keys);
                let slot = net.height;
                net.landed.push(Landed { signature: signature.clone(), wire, keys, err, pre, post, slot });
            }
            Ok(json!(signature))
        }
        "getSignatureStatuses" => {
            let statuses: Vec<Value> = params[0]
                .as_array()
                .into_iter()
                .flatten()
                .map(|s| {
                    let sig = solana_signature::Signature::from_str(s.as_str().unwrap_or("")).ok();
                    match sig.and_then(|sig| net.svm.get_transaction(&sig).cloned()) {
                        None => Value::Null,
                        Some(Ok(_)) => json!({ "slot": net.height, "confirmations": null, "err": null,
                            "confirmationStatus": "finalized" }),
                        Some(Err(failed)) => json!({ "slot": net.height, "confirmations": null,
                            "err": failed.err.to_string(), "confirmationStatus": "finalized" }),
                    }
                })
                .collect();
            Ok(json!({ "context": context, "value": statuses }))
        }
        "getTokenAccountBalance" => {
            let account = neurolov_chain::solana::parse_address(params[0].as_str().unwrap_or(""))
                .map_err(|e| (-32602, e.to_string()))?;
            let data = net.svm.get_account(&account).map(|a| a.data).unwrap_or_default();
            let state = spl_token_interface::state::Account::unpack(&data)
                .map_err(|_| (-32602, "Invalid param: could not find account".to_string()))?;
            Ok(json!({ "context": context, "value": { "amount": state.amount.to_string(), "decimals": 9 } }))
        }
        "getSignaturesForAddress" => {
            let address = neurolov_chain::solana::parse_address(params[0].as_str().unwrap_or(""))
                .map_err(|e| (-32602, e.to_string()))?;
            let until = params[1]["until"].as_str();
            let before = params[1]["before"].as_str();
            let limit = params[1]["limit"].as_u64().unwrap_or(1_000) as usize;
            // Newest first: after `before` (exclusive) when given, back to `until` (exclusive).
            let start =
                before.and_then(|b| net.landed.iter().rev().position(|l| l.signature == b)).map_or(0, |p| p + 1);
            let found: Vec<Value> = net
                .landed
                .iter()
                .rev()
                .skip(start)
                .take_while(|l| Some(l.signature.as_str()) != until)
                .filter(|l| l.keys.contains(&address))
                .take(limit)
                .map(|l| json!({ "signature": l.signature, "slot": l.slot, "err": l.err, "confirmationStatus": "finalized" }))
                .collect();
            Ok(json!(found))
        }
        "getTransaction" => {
            let signature = params[0].as_str().unwrap_or("");
            Ok(net.landed.iter().find(|l| l.signature == signature).map_or(Value::Null, |l| {
                json!({ "slot": l.slot, "transaction": [base64::engine::general_purpose::STANDARD.encode(&l.wire), "base64"],
                    "meta": { "err": l.err, "preTokenBalances": l.pre, "postTokenBalances": l.post } })
            }))
        }
        other => Err((-32601, format!("method not found: {other}"))),
    }
}
