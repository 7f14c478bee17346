//! NLOV's jetton on TON: TEP-2 addresses against vectors computed by an independent implementation (`@ton/core`),
//! and our custody messages run through the real TVM (`@ton/sandbox`) with the standard jetton minter and wallet:
//! a withdrawal moves the jetton and is found again by its body hash, a refused transfer bounces, a replay and an
//! expired message are refused, a user's deposit is seen as a notification from custody's own jetton wallet, a
//! forged notification is not.

#[path = "support/ton_sandbox.rs"]
mod ton_sandbox;

use neurolov_chain::ton::{self, TransferNotification};
use neurolov_chain::toncenter::TonClient;
use tonlib_core::TonAddress;

/// (raw, bounceable, non-bounceable, test-only bounceable, test-only non-bounceable), from `@ton/core`'s
/// `Address.toString` (the first is also TON's documentation example).
const ADDRESS_VECTORS: &[[&str; 5]] = &[
    [
        "0:ca6e321c7cce9ecedf0a8ca2492ec8592494aa5fb5ce0387dff96ef6af982a3e",
        "EQDKbjIcfM6ezt8KjKJJLshZJJSqX7XOA4ff-W72r5gqPrHF",
        "UQDKbjIcfM6ezt8KjKJJLshZJJSqX7XOA4ff-W72r5gqPuwA",
        "kQDKbjIcfM6ezt8KjKJJLshZJJSqX7XOA4ff-W72r5gqPgpP",
        "0QDKbjIcfM6ezt8KjKJJLshZJJSqX7XOA4ff-W72r5gqPleK",
    ],
    [
        "-1:3333333333333333333333333333333333333333333333333333333333333333",
        "Ef8zMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzM0vF",
        "Uf8zMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMxYA",
        "kf8zMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzM_BP",
        "0f8zMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzM62K",
    ],
    [
        "0:0000000000000000000000000000000000000000000000000000000000000001",
        "EQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAd99",
        "UQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAYK4",
        "kQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAWT3",
        "0QAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAATky",
    ],
];

#[test]
fn addresses_follow_tep2() {
    for [raw, b, nb, tb, tnb] in ADDRESS_VECTORS {
        let address = ton::parse_address(raw).expect("raw parses");
        assert_eq!(address.to_hex(), *raw);
        for (form, non_bounceable, testnet) in
            [(b, false, false), (nb, true, false), (tb, false, true), (tnb, true, true)]
        {
            assert_eq!(ton::friendly(&address, non_bounceable, testnet), *form, "{raw}");
            assert_eq!(ton::parse_address(form).expect("friendly parses"), address, "{form}");
        }
        // The standard-base64 spelling of the same address.
        let std = b.replace('-', "+").replace('_', "/");
        assert_eq!(ton::parse_address(&std).expect("base64 parses"), address);
    }
    let refused = [
        "EQDKbjIcfM6ezt8KjKJJLshZJJSqX7XOA4ff-W72r5gqPrHG", // checksum off by one
        "EQDKbjIcfM6ezt8KjKJJLshZJJSqX7XOA4ff-W72r5gqPrH",  // truncated
        "0:ca6e321c7cce9ecedf0a8ca2492ec8592494aa5fb5ce0387dff96ef6af982a3",
        "0:0000000000000000000000000000000000000000000000000000000000000000", // addr_none in cells: funds lost
        "7:ca6e321c7cce9ecedf0a8ca2492ec8592494aa5fb5ce0387dff96ef6af982a3e", // no such workchain
        "",
        "not an address",
    ];
    for text in refused {
        assert!(ton::parse_address(text).is_err(), "{text:?} must be refused");
    }
}

#[test]
fn comments_round_trip_and_transfers_parse_back() {
    for text in ["", "7d2f", &"a".repeat(200)] {
        let cell = ton::comment(text).expect("a comment");
        assert_eq!(ton::comment_of(&cell).as_deref(), Some(text));
    }
    assert_eq!(ton::comment_of(&ton::comment(&"a".repeat(ton::MAX_COMMENT_BYTES + 1)).expect("a cell")), None);
    let transfer = ton::JettonTransfer {
        query_id: 0x0102_0304_0506_0708,
        amount: 5_000_000_000,
        destination: ton::parse_address(ADDRESS_VECTORS[0][0]).expect("address"),
        response_destination: ton::parse_address(ADDRESS_VECTORS[2][0]).expect("address"),
        forward_nanoton: 7,
        forward_payload: Some(ton::comment("hello").expect("a comment")),
    };
    let cell = transfer.to_cell().expect("a cell");
    assert_eq!(ton::JettonTransfer::parse(&cell).expect("parses"), Some(transfer));
    assert_eq!(TransferNotification::parse(&cell).expect("parses"), None, "another op is not a notification");
}

fn keypair() -> [u8; 64] {
    solana_keypair::Keypair::new().to_bytes()
}

fn valid_until(seconds: u64) -> u32 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("time").as_secs();
    u32::try_from(now + seconds).expect("fits")
}

/// A message at `seqno` valid for `seconds` more (negative: already expired), not deploying its wallet.
fn at(seqno: u32, seconds: i64) -> ton::Envelope {
    let valid_until = if seconds >= 0 { valid_until(seconds.unsigned_abs()) } else { valid_until(0) - 10 };
    ton::Envelope { seqno, valid_until, deploy: false }
}

const SUPPLY: u64 = 1_000_000 * 1_000_000_000;

#[tokio::test]
async fn custody_messages_run_through_the_real_tvm() {
    let Some(sandbox) = ton_sandbox::TonSandbox::start() else { return };
    let client = TonClient::new(&sandbox.api()).expect("client");
    let custody_key = keypair();
    let custody = ton::wallet(&custody_key).expect("wallet");
    let deployed = sandbox.deploy_wallet(&custody_key[32..], "10").await;
    assert_eq!(deployed, custody.address, "our v4r2 address derivation agrees with @ton/ton's");
    let master = sandbox.deploy_jetton(SUPPLY, &custody.address, true).await;
    let (supply, admin) = client.jetton_data(&master).await.expect("jetton data");
    assert_eq!((supply, admin), (SUPPLY, None), "all minted, no admin left to mint more");
    let custody_jw = client.jetton_wallet(&master, &custody.address).await.expect("custody's jetton wallet");
    assert_eq!(client.jetton_balance(&custody_jw).await.expect("balance"), SUPPLY);

    // A withdrawal moves the jetton to a user's wallet (an address that has nothing deployed yet).
    let user_key = keypair();
    let user = ton::wallet(&user_key).expect("wallet");
    let seqno = client.seqno(&custody.address).await.expect("seqno");
    let amount = 1_234_000_000_000;
    let signed = ton::withdrawal(&custody, &custody_jw, &user.address, amount, 42, at(seqno, 60)).expect("signed");
    assert_eq!(ton::signed_seqno(&signed.boc).expect("parses"), (seqno, signed.valid_until));
    client.send_boc(&signed.boc).await.expect("accepted");
    assert_eq!(client.seqno(&custody.address).await.expect("seqno"), seqno + 1);
    let user_jw = client.jetton_wallet(&master, &user.address).await.expect("user's jetton wallet");
    assert_eq!(client.jetton_balance(&user_jw).await.expect("balance"), amount);
    assert_eq!(client.jetton_balance(&custody_jw).await.expect("balance"), SUPPLY - amount);
    let wallet_txs = client.transactions(&custody.address, 20, None, 0).await.expect("transactions");
    assert!(ton::accepted(&wallet_txs, &signed.body_hash).is_some(), "found by its body hash");
    let jw_txs = client.transactions(&custody_jw, 20, None, 0).await.expect("transactions");
    assert_eq!(ton::transfer_outcome(&jw_txs, &custody.address, 42), Some(true));
    assert_eq!(ton::transfer_outcome(&jw_txs, &custody.address, 43), None);

    // The same bytes again are refused (seqno used): nothing moves twice.
    assert!(client.send_boc(&signed.boc).await.is_err(), "a replay is refused");
    assert_eq!(client.jetton_balance(&user_jw).await.expect("balance"), amount);
    // An expired message is refused and consumes nothing.
    let expired = ton::withdrawal(&custody, &custody_jw, &user.address, 1, 44, at(seqno + 1, -10)).expect("signed");
    assert!(client.send_boc(&expired.boc).await.is_err(), "an expired message is refused");
    assert_eq!(client.seqno(&custody.address).await.expect("seqno"), seqno + 1);
    // A transfer beyond the custody's balance: the wallet sends it, the jetton wallet refuses, the toncoin bounces.
    let too_much =
        ton::withdrawal(&custody, &custody_jw, &user.address, SUPPLY, 45, at(seqno + 1, 60)).expect("signed");
    client.send_boc(&too_much.boc).await.expect("the wallet accepts it");
    let jw_txs = client.transactions(&custody_jw, 20, None, 0).await.expect("transactions");
    assert_eq!(ton::transfer_outcome(&jw_txs, &custody.address, 45), Some(false), "refused by the jetton wallet");
    assert_eq!(client.jetton_balance(&custody_jw).await.expect("balance"), SUPPLY - amount);

    // The user deposits back, naming an account in the comment: custody sees a notification from its jetton wallet.
    sandbox.deploy_wallet(&user_key[32..], "5").await;
    let account = "ab".repeat(32);
    let deposit =
        ton::deposit(&user, &user_jw, &custody.address, 234_000_000_000, &account, at(0, 60)).expect("signed");
    client.send_boc(&deposit.boc).await.expect("accepted");
    assert_eq!(client.jetton_balance(&custody_jw).await.expect("balance"), SUPPLY - amount + 234_000_000_000);
    let wallet_txs = client.transactions(&custody.address, 20, None, 0).await.expect("transactions");
    let deposits: Vec<_> = wallet_txs.iter().filter_map(|tx| ton::deposit_of(tx, &custody_jw)).collect();
    assert_eq!(deposits, vec![(234_000_000_000, Some(account.clone()))]);

    // A forged notification: the user's wallet sends custody a body that reads like one. Not from custody's jetton
    // wallet, so not a deposit.
    let forged = forged_notification(&user.address, 10 * SUPPLY, &account);
    let internal = ton::internal_message(&custody.address, 10_000_000, forged).expect("message");
    let signed = ton::sign(&user, internal, at(1, 60)).expect("signed");
    client.send_boc(&signed.boc).await.expect("accepted");
    let wallet_txs = client.transactions(&custody.address, 20, None, 0).await.expect("transactions");
    let forged_seen = wallet_txs.iter().any(|tx| {
        tx.in_msg
            .as_ref()
            .and_then(|m| m.body.as_ref())
            .and_then(|b| TransferNotification::parse(b).ok().flatten())
            .is_some_and(|n| n.amount == 10 * SUPPLY)
    });
    assert!(forged_seen, "the forged notification reached custody");
    let deposits: Vec<_> = wallet_txs.iter().filter_map(|tx| ton::deposit_of(tx, &custody_jw)).collect();
    assert_eq!(deposits.len(), 1, "and is not a deposit");

    // Paging: a full page holds the newest transactions, a page from its oldest (inclusive) goes on from there.
    let before = client.transactions(&custody.address, 100, None, 0).await.expect("page").len();
    sandbox.ping(&custody.address, 120).await;
    let full = client.transactions(&custody.address, 100, None, 0).await.expect("page");
    assert_eq!(full.len(), neurolov_chain::toncenter::MAX_TRANSACTIONS_PER_PAGE);
    let oldest = full.last().expect("a transaction");
    let rest = client.transactions(&custody.address, 100, Some((oldest.lt, &oldest.hash)), 0).await.expect("page");
    assert_eq!(rest[0].lt, oldest.lt);
    assert_eq!(full.len() + rest.len() - 1, before + 120, "every transaction on exactly one page");
    let first = client.transactions(&custody.address, 1, None, 0).await.expect("page");
    let newest = &first[0];
    let older = client.transactions(&custody.address, 2, Some((newest.lt, &newest.hash)), 0).await.expect("page");
    assert_eq!(older[0].lt, newest.lt, "the cursor is inclusive");
    assert!(older[1].lt < newest.lt);
    let none_newer = client.transactions(&custody.address, 10, None, newest.lt).await.expect("page");
    assert!(none_newer.is_empty(), "to_lt is exclusive");
}

fn forged_notification(sender: &TonAddress, amount: u64, account: &str) -> tonlib_core::cell::Cell {
    let mut b = tonlib_core::cell::CellBuilder::new();
    b.store_u32(32, ton::OP_TRANSFER_NOTIFICATION).expect("bits");
    b.store_u64(64, 0).expect("bits");
    b.store_coins(&num_bigint::BigUint::from(amount)).expect("bits");
    b.store_address(sender).expect("bits");
    b.store_bit(true).expect("bits");
    b.store_reference(&ton::comment(account).expect("comment").to_arc()).expect("ref");
    b.build().expect("a cell")
}
