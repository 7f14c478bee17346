//! Our Solana transactions run by the real SPL Token and Associated Token Account programs in LiteSVM: genesis mints
//! exactly the whitepaper's buckets and leaves no mint authority; a withdrawal reaches a recipient with or without
//! its token account, is refused when custody cannot cover it, and the same signed withdrawal sent again does not
//! pay twice.

#![allow(clippy::unwrap_used)] // A panic is the failure report.

use litesvm::LiteSVM;
use neurolov_chain::solana::{self, Keypair, Pubkey, Rent};
use neurolov_ledger::{Bucket, GENESIS, NANO_PER_NLOV, TOTAL_SUPPLY_NANO};
use solana_program_pack::Pack;
use solana_signer::Signer;
use spl_token_interface::state::{Account as TokenAccount, Mint};

struct Chain {
    svm: LiteSVM,
    custody: Keypair,
    mint: Pubkey,
}

impl Chain {
    /// A cluster with NLOV's genesis done by `neurolov-chain`'s transactions.
    fn genesis() -> Chain {
        let mut svm = LiteSVM::new();
        let custody = solana::keypair(&[3; 32]);
        let mint = solana::keypair(&[4; 32]);
        svm.airdrop(&custody.pubkey(), 10_000_000_000).unwrap();
        let rent = Rent {
            mint_lamports: svm.minimum_balance_for_rent_exemption(solana::MINT_BYTES as usize),
            token_account_lamports: svm.minimum_balance_for_rent_exemption(solana::TOKEN_ACCOUNT_BYTES as usize),
        };
        for tx in solana::genesis(&custody, &mint, rent, svm.latest_blockhash()).unwrap() {
            svm.send_transaction(tx).unwrap();
        }
        Chain { svm, custody, mint: mint.pubkey() }
    }

    fn balance(&self, account: &Pubkey) -> Option<u64> {
        self.svm.get_account(account).map(|a| TokenAccount::unpack(&a.data).unwrap().amount)
    }

    fn owner_balance(&self, owner: &Pubkey) -> Option<u64> {
        self.balance(&solana::associated_account(owner, &self.mint))
    }

    fn withdraw(&mut self, to: &Pubkey, amount: u64) -> solana::Transaction {
        solana::withdrawal(&self.custody, &self.mint, to, amount, 1_000, self.svm.latest_blockhash()).unwrap()
    }
}

#[test]
fn genesis_mints_the_whitepapers_buckets_into_custody_and_revokes_the_mint_authority() {
    let mut chain = Chain::genesis();
    let mint = Mint::unpack(&chain.svm.get_account(&chain.mint).unwrap().data).unwrap();
    assert_eq!(mint.supply, TOTAL_SUPPLY_NANO);
    assert_eq!(mint.decimals, 9);
    assert!(mint.mint_authority.is_none(), "the supply can never change");
    assert!(mint.freeze_authority.is_none());
    for (bucket, whole) in GENESIS {
        let account = solana::bucket_account(&chain.custody.pubkey(), &chain.mint, bucket);
        assert_eq!(chain.balance(&account), Some(whole * NANO_PER_NLOV), "{}", bucket.name());
        let state = TokenAccount::unpack(&chain.svm.get_account(&account).unwrap().data).unwrap();
        assert_eq!(state.owner, chain.custody.pubkey(), "{} is the custody's", bucket.name());
    }
    // Minting more is impossible now, even for the custody that created the mint.
    let c = chain.custody.pubkey();
    let fund = solana::bucket_account(&c, &chain.mint, Bucket::EcosystemFund);
    let more =
        spl_token_interface::instruction::mint_to(&solana::token_program(), &chain.mint, &fund, &c, &[], 1).unwrap();
    let tx =
        solana::Transaction::new_signed_with_payer(&[more], Some(&c), &[&chain.custody], chain.svm.latest_blockhash());
    assert!(chain.svm.send_transaction(tx).is_err());
}

#[test]
fn a_withdrawal_reaches_the_recipient_once_with_or_without_its_token_account() {
    let mut chain = Chain::genesis();
    let custody = chain.custody.pubkey();
    let fund_before = chain.owner_balance(&custody).unwrap();
    let alice = solana::keypair(&[9; 32]).pubkey();
    assert_eq!(chain.owner_balance(&alice), None, "no token account yet");

    let tx = chain.withdraw(&alice, 250 * NANO_PER_NLOV);
    let wire = solana::wire(&tx);
    assert!(wire.len() <= solana::MAX_TRANSACTION_BYTES);
    assert_eq!(solana::from_wire(&wire).map(|t| solana::signature(&t)), Some(solana::signature(&tx)));
    chain.svm.send_transaction(tx.clone()).unwrap();
    assert_eq!(chain.owner_balance(&alice), Some(250 * NANO_PER_NLOV));
    // The same signed transaction again (a re-send after a crash): refused, nothing paid twice.
    assert!(chain.svm.send_transaction(tx).is_err());
    assert_eq!(chain.owner_balance(&alice), Some(250 * NANO_PER_NLOV));

    // Her token account exists now: the idempotent create passes and the second withdrawal adds to it.
    chain.svm.expire_blockhash();
    let tx = chain.withdraw(&alice, 50 * NANO_PER_NLOV);
    chain.svm.send_transaction(tx).unwrap();
    assert_eq!(chain.owner_balance(&alice), Some(300 * NANO_PER_NLOV));
    assert_eq!(chain.owner_balance(&custody), Some(fund_before - 300 * NANO_PER_NLOV));

    // More than the custody's account holds: the transaction fails as a whole, no account is left half-made.
    let bob = solana::keypair(&[10; 32]).pubkey();
    let tx = chain.withdraw(&bob, fund_before);
    assert!(chain.svm.send_transaction(tx).is_err());
    assert_eq!(chain.owner_balance(&bob), None);
    assert_eq!(chain.owner_balance(&custody), Some(fund_before - 300 * NANO_PER_NLOV));
}

#[test]
fn addresses_are_parsed_strictly() {
    let alice = solana::keypair(&[9; 32]).pubkey();
    assert_eq!(solana::parse_address(&alice.to_string()), Ok(alice));
    for bad in ["", "0OIl", "11111111111111111111111111111111111111111111111", "abc", &"1".repeat(200)] {
        assert!(solana::parse_address(bad).is_err(), "{bad}");
    }
    // A Neurolov identity is its Solana address: the same bytes, the same base58.
    let id = neurolov_protocol::Keypair::from_seed([9; 32]).id();
    assert_eq!(id.to_string(), alice.to_string());
}
