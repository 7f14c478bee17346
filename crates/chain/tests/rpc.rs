//! The JSON-RPC client against a validator's answers (a LiteSVM-backed server on loopback): NLOV's genesis and a
//! withdrawal sent and confirmed over RPC; a withdrawal whose blockhash expired before it was sent is provably
//! never landing; one that failed on chain is reported failed; errors are typed.

#![allow(clippy::unwrap_used)] // A panic is the failure report.

mod support;

use std::sync::{Arc, Mutex};

use litesvm::LiteSVM;
use neurolov_chain::rpc::{Client, RpcError, SignatureStatus};
use neurolov_chain::solana::{self, Rent};
use neurolov_ledger::{Bucket, NANO_PER_NLOV};
use solana_signer::Signer;
use support::localnet::{self, Localnet};

async fn localnet_with_genesis() -> (Client, support::localnet::Shared, solana::Keypair, solana::Pubkey) {
    let mut svm = LiteSVM::new();
    let custody = solana::keypair(&[3; 32]);
    svm.airdrop(&custody.pubkey(), 10_000_000_000).unwrap();
    let net = Arc::new(Mutex::new(Localnet::new(svm)));
    let client = Client::new(&localnet::serve(Arc::clone(&net)).await).unwrap();
    let mint = solana::keypair(&[4; 32]);
    let rent = Rent {
        mint_lamports: client.rent_exempt_lamports(solana::MINT_BYTES).await.unwrap(),
        token_account_lamports: client.rent_exempt_lamports(solana::TOKEN_ACCOUNT_BYTES).await.unwrap(),
    };
    let blockhash = client.latest_blockhash().await.unwrap();
    let txs = solana::genesis(&custody, &mint, rent, blockhash.hash).unwrap();
    let mut signatures = Vec::new();
    for tx in &txs {
        signatures.push(client.send(tx).await.unwrap());
    }
    let statuses = client.signature_statuses(&signatures).await.unwrap();
    assert!(statuses.iter().all(|s| matches!(s, SignatureStatus::Landed { .. })), "{statuses:?}");
    (client, net, custody, mint.pubkey())
}

#[tokio::test]
async fn genesis_and_a_withdrawal_over_rpc_land_and_are_read_back() {
    let (client, net, custody, mint) = localnet_with_genesis().await;
    let fund = solana::bucket_account(&custody.pubkey(), &mint, Bucket::EcosystemFund);
    assert_eq!(client.token_balance(&fund).await.unwrap(), Some(100_000_000 * NANO_PER_NLOV));
    let alice = solana::keypair(&[9; 32]).pubkey();
    let alice_account = solana::associated_account(&alice, &mint);
    assert_eq!(client.token_balance(&alice_account).await.unwrap(), None);

    let blockhash = client.latest_blockhash().await.unwrap();
    let tx = solana::withdrawal(&custody, &mint, &alice, 7 * NANO_PER_NLOV, 1_000, blockhash.hash).unwrap();
    let sent = client.send(&tx).await.unwrap();
    assert_eq!(sent, solana::signature(&tx), "the id recorded before sending is the one the cluster reports");
    assert_eq!(
        client.signature_statuses(&[sent]).await.unwrap(),
        [SignatureStatus::Landed { commitment: "finalized".into() }]
    );
    assert_eq!(client.token_balance(&alice_account).await.unwrap(), Some(7 * NANO_PER_NLOV));

    // Alice deposits 2 NLOV back, naming her Neurolov account in the memo: the custody's history shows it, and
    // only the deposit is one (the withdrawal took NLOV out).
    let alice_kp = solana::keypair(&[9; 32]);
    net.lock().unwrap().svm.airdrop(&alice_kp.pubkey(), 1_000_000_000).unwrap();
    let blockhash = client.latest_blockhash().await.unwrap();
    let named = "8qbHbw2BbbTHBW1sbeqakYXVKRQM8Ne7pLK7m6CVfeR";
    let tx = solana::deposit(&alice_kp, &mint, &custody.pubkey(), 2 * NANO_PER_NLOV, named, blockhash.hash).unwrap();
    let deposit = client.send(&tx).await.unwrap();
    let signatures = client.signatures_for_address(&fund, None, None).await.unwrap();
    assert_eq!(signatures.first(), Some(&deposit), "newest first");
    let mut deposits = Vec::new();
    for sig in &signatures {
        let fetched = client.transaction(sig).await.unwrap().unwrap();
        if let Some(d) = solana::deposit_of(&fetched.tx, &fetched.changes, &fund, &mint) {
            deposits.push((sig.clone(), d));
        }
    }
    assert_eq!(deposits, [(deposit.clone(), (2 * NANO_PER_NLOV, Some(named.to_string())))]);
    assert_eq!(client.signatures_for_address(&fund, Some(&deposit), None).await.unwrap(), Vec::<String>::new());
    // Paging back: the page before the newest is everything older.
    assert_eq!(client.signatures_for_address(&fund, None, Some(&deposit)).await.unwrap(), signatures[1..]);
    assert!(client.transaction(&"1".repeat(64)).await.unwrap().is_none());
}

#[tokio::test]
async fn an_expired_withdrawal_never_lands_and_a_failed_one_is_reported() {
    let (client, net, custody, mint) = localnet_with_genesis().await;
    let alice = solana::keypair(&[9; 32]).pubkey();
    let blockhash = client.latest_blockhash().await.unwrap();
    let tx = solana::withdrawal(&custody, &mint, &alice, NANO_PER_NLOV, 1_000, blockhash.hash).unwrap();
    // The cluster moves past the blockhash's last valid height before the transaction is sent (a crash, a stall).
    let height = {
        let mut net = net.lock().unwrap();
        net.svm.expire_blockhash();
        net.height += localnet::BLOCKHASH_VALID_BLOCKS + 1;
        net.height
    };
    assert_eq!(client.block_height().await.unwrap(), height);
    let sent = client.send(&tx).await.unwrap();
    assert_eq!(client.signature_statuses(&[sent]).await.unwrap(), [SignatureStatus::Unknown]);
    assert!(height > blockhash.last_valid_block_height, "provably never landing: safe to refund");
    assert_eq!(client.token_balance(&solana::associated_account(&alice, &mint)).await.unwrap(), None);

    // More than custody holds: it lands, fails, and says so.
    let blockhash = client.latest_blockhash().await.unwrap();
    let tx = solana::withdrawal(&custody, &mint, &alice, 500_000_000 * NANO_PER_NLOV, 1_000, blockhash.hash).unwrap();
    let sent = client.send(&tx).await.unwrap();
    let status = client.signature_statuses(&[sent]).await.unwrap();
    assert!(matches!(&status[..], [SignatureStatus::Failed(_)]), "{status:?}");

    // Typed errors: an unknown method, and an endpoint that is not there.
    let too_many = vec!["x".to_string(); 257];
    assert!(matches!(client.signature_statuses(&too_many).await, Err(RpcError::Reply { .. })));
    let nowhere = Client::new("http://127.0.0.1:9").unwrap();
    assert!(matches!(nowhere.block_height().await, Err(RpcError::Transport(_))));
}
