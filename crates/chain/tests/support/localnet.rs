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
            // As with skipPreflight on a validator: the signature comes back whatever becomes of the transaction.
            let _ = net.svm.send_transaction(tx);
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
        other => Err((-32601, format!("method not found: {other}"))),
    }
}
