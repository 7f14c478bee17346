//! NLOV leaving the network for Solana end to end (issue 14): a real coordinator process keeps custody on a
//! LiteSVM cluster (the real SPL programs) behind a JSON-RPC server; `neurolov wallet withdraw` is signed, sent,
//! confirmed and posted. The coordinator is killed right after a withdrawal's signed transaction became durable and
//! before it was sent: restarted, it sends those same bytes and the recipient is paid once; killed right after the
//! send, the restart finds the signature landed and only posts it; killed before the send and restarted only after
//! the blockhash can no longer land, it refunds the account. Deposits back are credited once, `chain status` holds
//! the custody to the ledger, and the ledger audits clean after all.

#![allow(clippy::unwrap_used)] // A panic is the failure report.

mod common;
#[path = "../../chain/tests/support/localnet.rs"]
mod localnet;
#[path = "../../chain/tests/support/ton_sandbox.rs"]
mod ton_sandbox;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Procs, get_json, neurolov, serve_args, temp_dir, wait_for};
use litesvm::LiteSVM;
use neurolov_chain::{solana, ton};
use neurolov_ledger::NANO_PER_NLOV;
use solana_program_pack::Pack;
use solana_signer::Signer;

const NLOV: u64 = NANO_PER_NLOV;
/// The coordinator's default withdrawal fee, paid by each withdrawal that lands.
const FEE: u64 = NLOV / 2;

/// The custody's Solana keypair from a `neurolov keygen` file (secret ‖ public, as the Solana CLI writes it).
fn solana_key(path: &std::path::Path) -> solana::Keypair {
    let bytes: Vec<u8> = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    solana::keypair(&bytes[..32].try_into().unwrap())
}

struct Cluster {
    net: localnet::Shared,
    url: String,
    mint: solana::Pubkey,
}

impl Cluster {
    fn balance(&self, owner: &str) -> u64 {
        let owner = solana::parse_address(owner).unwrap();
        let account = solana::associated_account(&owner, &self.mint);
        let net = self.net.lock().unwrap();
        net.svm
            .get_account(&account)
            .map_or(0, |a| spl_token_interface::state::Account::unpack(&a.data).unwrap().amount)
    }

    /// The cluster moves past every blockhash handed out so far.
    fn expire(&self) {
        let mut net = self.net.lock().unwrap();
        net.svm.expire_blockhash();
        net.height += localnet::BLOCKHASH_VALID_BLOCKS + 1;
    }
}

/// A fresh LiteSVM served over JSON-RPC from a runtime of its own, with NLOV's genesis done by
/// `neurolov chain genesis` (the custody funded with SOL first, as an operator would).
fn cluster(dir: &std::path::Path, custody_key: &std::path::Path, rt: &tokio::runtime::Runtime) -> Cluster {
    let mut svm = LiteSVM::new();
    svm.airdrop(&solana_key(custody_key).pubkey(), 10_000_000_000).unwrap();
    let net = Arc::new(Mutex::new(localnet::Localnet::new(svm)));
    let url = rt.block_on(localnet::serve(Arc::clone(&net)));
    let (mint_key, mint) = keygen(dir, "mint");
    let out = neurolov()
        .args(["chain", "genesis", "--json", "--rpc", &url, "--custody-key"])
        .arg(custody_key)
        .arg("--mint-key")
        .arg(&mint_key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["mint"], mint.as_str());
    Cluster { net, url, mint: solana::parse_address(&mint).unwrap() }
}

/// `neurolov chain status`: the custody on the cluster against the coordinator's ledger.
fn chain_status(chain: &Cluster, custody: &str, url: &str) -> (bool, serde_json::Value) {
    let out = neurolov()
        .args(["chain", "status", "--json", "--rpc", &chain.url, "--mint", &chain.mint.to_string()])
        .args(["--custody", custody, "--coordinator", url])
        .output()
        .unwrap();
    (out.status.success(), serde_json::from_slice(&out.stdout).unwrap_or_default())
}

fn keygen(dir: &std::path::Path, name: &str) -> (std::path::PathBuf, String) {
    let path = dir.join(format!("{name}.json"));
    let out = neurolov().args(["keygen", "--json", "--out"]).arg(&path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    (path, v["id"].as_str().unwrap().to_string())
}

fn withdrawals(url: &str, id: &str) -> Vec<serde_json::Value> {
    get_json(&format!("{url}/v1/accounts/{id}/withdrawals")).as_array().cloned().unwrap_or_default()
}

fn balance_nano(url: &str, id: &str) -> u64 {
    get_json(&format!("{url}/v1/accounts/{id}"))["balance_nano"].as_u64().unwrap_or(0)
}

fn withdraw(url: &str, key: &std::path::Path, to: &str, amount: &str, id: u64) -> std::process::Output {
    withdraw_on("solana", url, key, to, amount, id)
}

fn withdraw_on(chain: &str, url: &str, key: &std::path::Path, to: &str, amount: &str, id: u64) -> std::process::Output {
    neurolov()
        .args(["wallet", "withdraw", "--chain", chain, "--to", to, "--amount", amount, "--json"])
        .args(["--id", &id.to_string(), "--coordinator", url, "--key"])
        .arg(key)
        .output()
        .unwrap()
}

#[test]
fn withdrawals_to_solana_land_once_and_survive_crashes_around_the_send() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut procs = Procs(Vec::new());
    let dir = temp_dir("custody");
    let (custody_key, custody) = keygen(&dir, "custody");
    let chain = cluster(&dir, &custody_key, &rt);
    let (client_key, client) = keygen(&dir, "client");
    let (_, alice) = keygen(&dir, "alice");
    let mint = chain.mint.to_string();
    let custody_path = custody_key.to_str().unwrap().to_string();
    let args: Vec<String> = ["--dev", "--listen", "127.0.0.1:0", "--models", "none", "--solana-rpc", &chain.url]
        .into_iter()
        .map(String::from)
        .chain([
            "--solana-mint".into(),
            mint,
            "--solana-custody-key".into(),
            custody_path,
            "--solana-poll-ms".into(),
            "50".into(),
        ])
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let url = serve_args(&mut procs, &dir, &args);
    let out = neurolov().args(["wallet", "faucet", "--coordinator", &url, "--key"]).arg(&client_key).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // A plain withdrawal: held, signed, sent, confirmed, posted.
    let out = withdraw(&url, &client_key, &alice, "5", 1);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_for("the withdrawal to be confirmed", Duration::from_secs(30), || {
        withdrawals(&url, &client).first().is_some_and(|w| w["state"] == "confirmed")
    });
    assert_eq!(chain.balance(&alice), 5 * NLOV);
    assert_eq!(balance_nano(&url, &client), 995 * NLOV - FEE);
    // Bad input: a destination that is not a Solana address is refused before anything is held.
    let out = withdraw(&url, &client_key, "not-an-address", "1", 2);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("`to`"), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(withdrawals(&url, &client).len(), 1);
    assert_eq!(balance_nano(&url, &client), 995 * NLOV - FEE);

    // Killed after signing, before sending; restarted, the same bytes are sent and land once.
    procs.0.pop().map(|mut c| c.kill().and_then(|()| c.wait()));
    let crashing = restart(&mut procs, &dir, &args, true);
    assert!(withdraw(&crashing, &client_key, &alice, "3", 3).status.success());
    let status = procs.0.last_mut().unwrap().wait().unwrap();
    assert_eq!(status.code(), Some(86), "the coordinator stopped at the crash point");
    assert_eq!(chain.balance(&alice), 5 * NLOV, "nothing was sent before the crash");
    let url = restart(&mut procs, &dir, &args, false);
    wait_for("the re-sent withdrawal to be confirmed", Duration::from_secs(30), || {
        withdrawals(&url, &client).iter().all(|w| w["state"] == "confirmed" || w["state"] == "failed")
    });
    assert_eq!(chain.balance(&alice), 8 * NLOV, "paid once");
    assert_eq!(balance_nano(&url, &client), 992 * NLOV - 2 * FEE);

    // Killed after sending, before confirming: the restart finds the signature landed and posts it, sends nothing.
    procs.0.pop().map(|mut c| c.kill().and_then(|()| c.wait()));
    let crashing = restart_crashing(&mut procs, &dir, &args, Some("NEUROLOV_CRASH_AFTER_SENDING"));
    assert!(withdraw(&crashing, &client_key, &alice, "1", 5).status.success());
    assert_eq!(procs.0.last_mut().unwrap().wait().unwrap().code(), Some(87));
    assert_eq!(chain.balance(&alice), 9 * NLOV, "sent before the crash");
    let landed_before = chain.net.lock().unwrap().landed.len();
    let url = restart(&mut procs, &dir, &args, false);
    wait_for("the sent withdrawal to be confirmed", Duration::from_secs(30), || {
        withdrawals(&url, &client).iter().all(|w| w["state"] == "confirmed" || w["state"] == "failed")
    });
    assert_eq!(chain.balance(&alice), 9 * NLOV, "paid once");
    assert_eq!(chain.net.lock().unwrap().landed.len(), landed_before, "nothing signed or sent again");
    assert_eq!(balance_nano(&url, &client), 991 * NLOV - 3 * FEE);

    // Killed the same way, but the cluster moves past the blockhash before the restart: refunded, never paid.
    procs.0.pop().map(|mut c| c.kill().and_then(|()| c.wait()));
    let crashing = restart(&mut procs, &dir, &args, true);
    assert!(withdraw(&crashing, &client_key, &alice, "2", 4).status.success());
    assert_eq!(procs.0.last_mut().unwrap().wait().unwrap().code(), Some(86));
    chain.expire();
    let url = restart(&mut procs, &dir, &args, false);
    wait_for("the expired withdrawal to fail", Duration::from_secs(30), || {
        withdrawals(&url, &client).iter().all(|w| w["state"] == "confirmed" || w["state"] == "failed")
    });
    let last = withdrawals(&url, &client).into_iter().find(|w| w["amount_nano"] == 2 * NLOV).unwrap();
    assert_eq!(last["reason"], "expired without landing", "{last}");
    assert_eq!(chain.balance(&alice), 9 * NLOV);
    assert_eq!(balance_nano(&url, &client), 991 * NLOV - 3 * FEE, "refunded");
    // Alice deposits 3 NLOV back into custody where `wallet deposit-address` says, naming the client's account in the
    // memo: credited once.
    let out = neurolov()
        .args(["wallet", "deposit-address", "--chain", "solana", "--json", "--coordinator", &url, "--key"])
        .arg(&client_key)
        .output()
        .unwrap();
    let target: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((target["address"].as_str(), target["memo"].as_str()), (Some(custody.as_str()), Some(client.as_str())));
    let alice_kp = solana::keypair(
        &serde_json::from_str::<Vec<u8>>(&std::fs::read_to_string(dir.join("alice.json")).unwrap()).unwrap()[..32]
            .try_into()
            .unwrap(),
    );
    let deposit = {
        let mut net = chain.net.lock().unwrap();
        net.svm.airdrop(&alice_kp.pubkey(), 1_000_000_000).unwrap();
        let hash = net.svm.latest_blockhash();
        solana::deposit(&alice_kp, &chain.mint, &solana_key(&custody_key).pubkey(), 3 * NLOV, &client, hash).unwrap()
    };
    rt.block_on(neurolov_chain::rpc::Client::new(&chain.url).unwrap().send(&deposit)).unwrap();
    wait_for("the deposit to be credited", Duration::from_secs(30), || {
        balance_nano(&url, &client) == 994 * NLOV - 3 * FEE
    });
    assert_eq!(chain.balance(&alice), 6 * NLOV);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(balance_nano(&url, &client), 994 * NLOV - 3 * FEE, "credited once");

    // The custody on Solana is what the ledger says it must be: the supply less what is outside.
    let (agrees, status) = chain_status(&chain, &custody, &url);
    assert!(agrees, "{status}");
    assert_eq!(status["custody_nano"], neurolov_ledger::TOTAL_SUPPLY_NANO - 6 * NLOV, "{status}");
    // A custody that lost NLOV behind the ledger's back is caught.
    {
        let custody_kp = solana_key(&custody_key);
        let mut net = chain.net.lock().unwrap();
        let hash = net.svm.latest_blockhash();
        let tx =
            solana::withdrawal(&custody_kp, &chain.mint, &solana::keypair(&[77; 32]).pubkey(), NLOV, 0, hash).unwrap();
        net.svm.send_transaction(tx).unwrap();
    }
    let (agrees, status) = chain_status(&chain, &custody, &url);
    assert!(!agrees, "{status}");

    procs.0.pop().map(|mut c| c.kill().and_then(|()| c.wait()));
    let audit = neurolov().args(["ledger", "audit", "--json", "--data"]).arg(dir.join("coordinator")).output().unwrap();
    assert!(audit.status.success(), "{}", String::from_utf8_lossy(&audit.stderr));
    // Held against the chain, the same ledger does not audit: its custody lost NLOV the ledger never paid out.
    let audit = neurolov()
        .args(["ledger", "audit", "--json", "--solana-rpc", &chain.url, "--solana-mint", &chain.mint.to_string()])
        .args(["--solana-custody", &custody, "--data"])
        .arg(dir.join("coordinator"))
        .output()
        .unwrap();
    assert!(!audit.status.success());
    let report: serde_json::Value = serde_json::from_slice(&audit.stdout).unwrap();
    assert_eq!(report["chain_checks"][0]["agrees"], false, "{report}");
}

/// A coordinator on the same data directory (`crash`: it stops right after signing a withdrawal, before sending).
fn restart(procs: &mut Procs, dir: &std::path::Path, args: &[&str], crash: bool) -> String {
    restart_crashing(procs, dir, args, crash.then_some("NEUROLOV_CRASH_AFTER_SIGNING"))
}

/// A coordinator on the same data directory that stops at the crash point `hook` names, if any.
fn restart_crashing(procs: &mut Procs, dir: &std::path::Path, args: &[&str], hook: Option<&str>) -> String {
    let mut cmd = neurolov();
    if let Some(hook) = hook {
        cmd.env(hook, "1");
    }
    common::serve_command(procs, dir, args, cmd)
}

/// The 64 key bytes (seed ‖ public) of a `neurolov keygen` file.
fn key_bytes(path: &std::path::Path) -> Vec<u8> {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Settled: every withdrawal of `id` confirmed or failed.
fn all_settled(url: &str, id: &str) -> bool {
    withdrawals(url, id).iter().all(|w| w["state"] == "confirmed" || w["state"] == "failed")
}

/// Message validity of the TON test's coordinator: short, so the expiry case waits seconds, not minutes.
const TON_TTL_S: u64 = 3;

/// The same story on TON, through the real TVM (`@ton/sandbox`) and the standard jetton contracts: the jetton's
/// supply minted into the custody's wallet and its admin dropped; withdrawals confirmed by what the custody's jetton
/// wallet did, refused ones refunded, crashes around the send survived (the wallet's seqno and the chain's time
/// decide), a deposit with the account in its comment credited once, `chain status --chain ton` agreeing.
#[test]
fn withdrawals_to_ton_land_once_and_survive_crashes_around_the_send() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let Some(sandbox) = ton_sandbox::TonSandbox::start() else { return };
    let ton_client = neurolov_chain::toncenter::TonClient::new(&sandbox.api()).unwrap();
    let mut procs = Procs(Vec::new());
    let dir = temp_dir("custody-ton");
    let (custody_key, _) = keygen(&dir, "custody");
    let (client_key, client) = keygen(&dir, "client");
    let (alice_key, _) = keygen(&dir, "alice");
    let custody = ton::wallet(&key_bytes(&custody_key)).unwrap();
    let alice = ton::wallet(&key_bytes(&alice_key)).unwrap();
    let alice_address = ton::friendly(&alice.address, true, false);
    const SUPPLY: u64 = 100 * NLOV;
    let master = rt.block_on(async {
        sandbox.deploy_wallet(&key_bytes(&custody_key)[32..], "10").await;
        sandbox.deploy_jetton(SUPPLY, &custody.address, true).await
    });
    let jetton_balance = |owner: &ton::TonAddress| {
        rt.block_on(async {
            let wallet = ton_client.jetton_wallet(&master, owner).await.unwrap();
            ton_client.jetton_balance(&wallet).await.unwrap()
        })
    };
    let args: Vec<String> = [
        "--dev",
        "--listen",
        "127.0.0.1:0",
        "--models",
        "none",
        "--ton-api",
        &sandbox.api(),
        "--ton-jetton-master",
        &master.to_hex(),
        "--ton-custody-key",
        custody_key.to_str().unwrap(),
        "--ton-poll-ms",
        "50",
        "--ton-message-ttl-s",
        &TON_TTL_S.to_string(),
    ]
    .into_iter()
    .map(String::from)
    .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let url = serve_args(&mut procs, &dir, &args);
    let out = neurolov().args(["wallet", "faucet", "--coordinator", &url, "--key"]).arg(&client_key).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // A plain withdrawal: held, signed, accepted, sent on by the custody's jetton wallet, posted.
    assert!(withdraw_on("ton", &url, &client_key, &alice_address, "5", 1).status.success());
    wait_for("the withdrawal to be confirmed", Duration::from_secs(30), || {
        withdrawals(&url, &client).first().is_some_and(|w| w["state"] == "confirmed")
    });
    assert_eq!(jetton_balance(&alice.address), 5 * NLOV);
    assert_eq!(balance_nano(&url, &client), 995 * NLOV - FEE);
    // `--dry-run` checks and holds nothing; an unaffordable one is refused the same way a real one would be.
    let dry = |amount: &str| {
        neurolov()
            .args(["wallet", "withdraw", "--dry-run", "--chain", "ton", "--amount", amount, "--json"])
            .args(["--coordinator", &url, "--key"])
            .arg(&client_key)
            .output()
            .unwrap()
    };
    let out = dry("7");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let check: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((check["custody_running"].as_bool(), check["fee_nano"].as_u64()), (Some(true), Some(FEE)), "{check}");
    let own = ton::friendly(&ton::wallet(&key_bytes(&client_key)).unwrap().address, true, false);
    assert_eq!(check["to"], own.as_str(), "defaults to the key's own TON wallet");
    assert!(!dry("5000").status.success(), "more than the balance");
    assert_eq!((withdrawals(&url, &client).len(), balance_nano(&url, &client)), (1, 995 * NLOV - FEE), "nothing held");
    // Refused: not a TON address (before anything is held); more than the custody holds on TON (held, refunded).
    assert!(!withdraw_on("ton", &url, &client_key, "EQnot-an-address", "1", 2).status.success());
    assert!(withdraw_on("ton", &url, &client_key, &alice_address, "200", 3).status.success());
    wait_for("the refused withdrawal to fail", Duration::from_secs(30), || all_settled(&url, &client));
    let failed: Vec<_> = withdrawals(&url, &client).into_iter().filter(|w| w["state"] == "failed").collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(balance_nano(&url, &client), 995 * NLOV - FEE, "refunded");

    // Killed after signing, before sending: restarted, the same bytes are sent and land once.
    procs.0.pop().map(|mut c| c.kill().and_then(|()| c.wait()));
    let crashing = restart(&mut procs, &dir, &args, true);
    assert!(withdraw_on("ton", &crashing, &client_key, &alice_address, "3", 4).status.success());
    assert_eq!(procs.0.last_mut().unwrap().wait().unwrap().code(), Some(86));
    assert_eq!(jetton_balance(&alice.address), 5 * NLOV, "nothing was sent before the crash");
    let url = restart(&mut procs, &dir, &args, false);
    wait_for("the re-sent withdrawal to be confirmed", Duration::from_secs(30), || all_settled(&url, &client));
    assert_eq!(jetton_balance(&alice.address), 8 * NLOV, "paid once");
    assert_eq!(balance_nano(&url, &client), 992 * NLOV - 2 * FEE);

    // Killed after sending, before confirming: the restart finds it accepted and posts it, signs nothing new.
    procs.0.pop().map(|mut c| c.kill().and_then(|()| c.wait()));
    let crashing = restart_crashing(&mut procs, &dir, &args, Some("NEUROLOV_CRASH_AFTER_SENDING"));
    assert!(withdraw_on("ton", &crashing, &client_key, &alice_address, "1", 5).status.success());
    assert_eq!(procs.0.last_mut().unwrap().wait().unwrap().code(), Some(87));
    assert_eq!(jetton_balance(&alice.address), 9 * NLOV, "sent before the crash");
    let seqno_before = rt.block_on(ton_client.seqno(&custody.address)).unwrap();
    let url = restart(&mut procs, &dir, &args, false);
    wait_for("the sent withdrawal to be confirmed", Duration::from_secs(30), || all_settled(&url, &client));
    assert_eq!(rt.block_on(ton_client.seqno(&custody.address)).unwrap(), seqno_before, "nothing signed again");
    assert_eq!(jetton_balance(&alice.address), 9 * NLOV, "paid once");
    assert_eq!(balance_nano(&url, &client), 991 * NLOV - 3 * FEE);

    // Killed before the send and restarted only once the message's `valid_until` has passed: refunded, never paid.
    procs.0.pop().map(|mut c| c.kill().and_then(|()| c.wait()));
    let crashing = restart(&mut procs, &dir, &args, true);
    assert!(withdraw_on("ton", &crashing, &client_key, &alice_address, "2", 6).status.success());
    assert_eq!(procs.0.last_mut().unwrap().wait().unwrap().code(), Some(86));
    std::thread::sleep(Duration::from_secs(TON_TTL_S + 2));
    let url = restart(&mut procs, &dir, &args, false);
    wait_for("the expired withdrawal to fail", Duration::from_secs(30), || all_settled(&url, &client));
    let last = withdrawals(&url, &client).into_iter().find(|w| w["amount_nano"] == 2 * NLOV).unwrap();
    assert_eq!(last["reason"], "expired without being accepted", "{last}");
    assert_eq!(jetton_balance(&alice.address), 9 * NLOV);
    assert_eq!(balance_nano(&url, &client), 991 * NLOV - 3 * FEE, "refunded");

    // Alice deposits 3 NLOV back where `wallet deposit-address --chain ton` says, the client's account as comment.
    let out = neurolov()
        .args(["wallet", "deposit-address", "--chain", "ton", "--json", "--coordinator", &url, "--key"])
        .arg(&client_key)
        .output()
        .unwrap();
    let target: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let to = ton::parse_address(target["address"].as_str().unwrap()).unwrap();
    assert_eq!((&to, target["memo"].as_str()), (&custody.address, Some(client.as_str())));
    // It lands while the coordinator is down, and more custody transactions than a page follow it: the restart
    // pages back to where it had looked before (its cursor is on disk) and finds it.
    procs.0.pop().map(|mut c| c.kill().and_then(|()| c.wait()));
    rt.block_on(async {
        sandbox.deploy_wallet(&key_bytes(&alice_key)[32..], "5").await;
        let alice_jw = ton_client.jetton_wallet(&master, &alice.address).await.unwrap();
        let valid_until = u32::try_from(ton_client.chain_time().await.unwrap() + 60).unwrap();
        let envelope = ton::Envelope { seqno: 0, valid_until, deploy: false };
        let deposit = ton::deposit(&alice, &alice_jw, &to, 3 * NLOV, &client, envelope).unwrap();
        ton_client.send_boc(&deposit.boc).await.unwrap();
        let page = neurolov_chain::toncenter::MAX_TRANSACTIONS_PER_PAGE as u32;
        sandbox.ping(&custody.address, page + page / 2).await;
    });
    let url = restart(&mut procs, &dir, &args, false);
    wait_for("the deposit to be credited", Duration::from_secs(30), || {
        balance_nano(&url, &client) == 994 * NLOV - 3 * FEE
    });
    assert_eq!(jetton_balance(&alice.address), 6 * NLOV);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(balance_nano(&url, &client), 994 * NLOV - 3 * FEE, "credited once");
    // `wallet history` names the chain transactions: the deposit's `lt:hash`, each withdrawal's message body hash.
    let out = neurolov()
        .args(["wallet", "history", "--json", "--coordinator", &url, "--key"])
        .arg(&client_key)
        .output()
        .unwrap();
    let history: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let deposit = history.iter().find(|e| e["code"] == "deposit").unwrap();
    assert_eq!(deposit["chain"], "ton", "{deposit}");
    assert!(deposit["chain_tx"].as_str().unwrap().contains(':'), "{deposit}");
    let first = withdrawals(&url, &client).into_iter().find(|w| w["amount_nano"] == 5 * NLOV).unwrap();
    let posted: Vec<_> = history.iter().filter(|e| e["code"] == "withdrawal" && e["amount_nano"] == 5 * NLOV).collect();
    assert!(!posted.is_empty() && posted.iter().all(|e| e["chain_tx"] == first["tx_id"]), "{posted:?} {first}");

    // The custody on TON is the jetton's supply less what the ledger says is outside.
    let status = |url: &str| {
        let out = neurolov()
            .args(["chain", "status", "--chain", "ton", "--json", "--rpc", &sandbox.api(), "--mint", &master.to_hex()])
            .args(["--custody", &custody.address.to_hex(), "--coordinator", url])
            .output()
            .unwrap();
        (out.status.success(), serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap_or_default())
    };
    let (agrees, report) = status(&url);
    assert!(agrees, "{report}");
    assert_eq!(report["custody_nano"], SUPPLY - 6 * NLOV, "{report}");

    dashboard_shows_chains(&url, &dir);

    // `ledger audit` holds the stopped coordinator's ledger against TON: agrees; then the custody key moves NLOV
    // behind the ledger's back, and it does not.
    procs.0.pop().map(|mut c| c.kill().and_then(|()| c.wait()));
    let audit = || {
        let out = neurolov()
            .args(["ledger", "audit", "--json", "--ton-api", &sandbox.api(), "--ton-jetton-master", &master.to_hex()])
            .args(["--ton-custody", &custody.address.to_hex(), "--data"])
            .arg(dir.join("coordinator"))
            .output()
            .unwrap();
        (out.status.success(), serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap())
    };
    let (ok, report) = audit();
    assert!(ok && report["chain_checks"][0]["agrees"] == true, "{report}");
    rt.block_on(async {
        let custody_jw = ton_client.jetton_wallet(&master, &custody.address).await.unwrap();
        let seqno = ton_client.seqno(&custody.address).await.unwrap();
        let valid_until = u32::try_from(ton_client.chain_time().await.unwrap() + 60).unwrap();
        let envelope = ton::Envelope { seqno, valid_until, deploy: false };
        let stray = ton::withdrawal(&custody, &custody_jw, &alice.address, NLOV, 9, envelope).unwrap();
        ton_client.send_boc(&stray.boc).await.unwrap();
    });
    let (ok, report) = audit();
    assert!(!ok && report["chain_checks"][0]["agrees"] == false, "{report}");
}

/// The dashboard, rendered by headless Chromium: the TON row of the chains table with what is outside custody there,
/// and the deposit and a confirmed withdrawal among the chain activity, with their chain transactions.
fn dashboard_shows_chains(url: &str, dir: &std::path::Path) {
    let Some(chromium) = common::chromium() else { return };
    let dump = common::browser(&chromium, &dir.join("profile-dashboard"))
        .args(["--dump-dom", "--virtual-time-budget=5000", "--window-size=1280,1000"])
        .arg(format!("{url}/"))
        .stdout(std::process::Stdio::piped())
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&dump.stdout);
    let row = |marker: &str| dom.split(marker).nth(1).and_then(|r| r.split("</tr>").next()).unwrap_or("").to_string();
    let ton = row("<tr data-chain=\"ton\">");
    assert!(ton.contains("class=\"outside\">6 NLOV"), "the dashboard's TON row: {ton}");
    let deposit = row("data-kind=\"deposit\" data-chain=\"ton\"");
    assert!(deposit.contains("3 NLOV") && deposit.contains("credited"), "{deposit}");
    let withdrawals: Vec<&str> = dom.split("data-kind=\"withdrawal\" data-chain=\"ton\"").skip(1).collect();
    assert!(
        withdrawals.iter().any(|w| w.split("</tr>").next().unwrap_or("").contains("confirmed")),
        "no confirmed withdrawal on the dashboard"
    );
}
