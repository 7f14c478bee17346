//! NLOV on Solana (issue 14), where its supply is canonical: an SPL mint with 9 decimals and 500,000,000 NLOV, minted
//! once at genesis into the whitepaper's eight buckets — token accounts of the network's custody — after which the
//! mint authority is revoked in the same transaction, so the supply can never change. The custody's associated
//! token account is the ecosystem fund's bucket and pays withdrawals: each one is a `TransferChecked` to the
//! recipient's associated token account, created idempotently first, under compute-budget instructions.
//!
//! Pure: this module builds and signs transactions; sending them and reading the chain is the RPC client's.

use neurolov_ledger::{Bucket, GENESIS, NANO_PER_NLOV};
use solana_compute_budget_interface::ComputeBudgetInstruction;
use solana_instruction::Instruction;
use solana_signer::Signer;

pub use solana_hash::Hash;
pub use solana_keypair::Keypair;
pub use solana_pubkey::Pubkey;
pub use solana_transaction::Transaction;

/// NLOV's decimals on every chain (the ledger's base unit is 10⁻⁹ NLOV).
pub const DECIMALS: u8 = 9;
/// Bytes of an SPL mint and of an SPL token account.
pub const MINT_BYTES: u64 = 82;
pub const TOKEN_ACCOUNT_BYTES: u64 = 165;
/// Compute units a withdrawal asks for: the ATA program's idempotent create (about 25k when it creates, a few
/// thousand when the account exists) and a `TransferChecked` (about 6k), with room to spare.
pub const WITHDRAW_COMPUTE_UNITS: u32 = 60_000;
/// Largest transaction Solana accepts on the wire.
pub const MAX_TRANSACTION_BYTES: usize = 1_232;

/// The SPL Memo program (v2): a deposit names the account it is for in a memo.
pub const MEMO_PROGRAM: Pubkey = Pubkey::from_str_const("MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr");
/// Longest memo a deposit may carry (an account id is 32–44 base58 characters).
pub const MAX_MEMO_BYTES: usize = 128;

/// The SPL Token program NLOV lives under.
pub fn token_program() -> Pubkey {
    spl_token_interface::id()
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SolanaError {
    #[error("not a Solana address (32 bytes in base58): {0}")]
    BadAddress(String),
    #[error("the transaction is {0} bytes; Solana takes at most {MAX_TRANSACTION_BYTES}")]
    TooLarge(usize),
    #[error("building an instruction: {0}")]
    Instruction(String),
}

/// `s` as an address: base58 of exactly 32 bytes. Any such address may own a token account, on the curve or not
/// (a program-derived address is a valid recipient).
pub fn parse_address(s: &str) -> Result<Pubkey, SolanaError> {
    let bytes = bs58::decode(s).into_vec().map_err(|_| SolanaError::BadAddress(s.chars().take(64).collect()))?;
    let bytes: [u8; 32] = bytes.try_into().map_err(|_| SolanaError::BadAddress(s.chars().take(64).collect()))?;
    Ok(Pubkey::new_from_array(bytes))
}

/// The Solana keypair of an ed25519 secret (a Neurolov identity is one: its id is its Solana address).
pub fn keypair(secret: &[u8; 32]) -> Keypair {
    Keypair::new_from_array(*secret)
}

/// `owner`'s associated token account for `mint`.
pub fn associated_account(owner: &Pubkey, mint: &Pubkey) -> Pubkey {
    spl_associated_token_account_interface::address::get_associated_token_address(owner, mint)
}

/// The seed of a bucket's token account (at most 32 bytes).
fn bucket_seed(bucket: Bucket) -> String {
    format!("nlov {}", bucket.name())
}

/// A genesis bucket's token account, owned by `custody`: the ecosystem fund is the custody's associated token
/// account (the one withdrawals are paid from); the others are accounts derived from the custody with a seed.
pub fn bucket_account(custody: &Pubkey, mint: &Pubkey, bucket: Bucket) -> Pubkey {
    if bucket == Bucket::EcosystemFund {
        return associated_account(custody, mint);
    }
    Pubkey::create_with_seed(custody, &bucket_seed(bucket), &token_program())
        .unwrap_or_else(|_| unreachable!("a bucket seed is under 32 bytes"))
}

/// Rent-exempt balances the genesis accounts need (from `getMinimumBalanceForRentExemption`).
#[derive(Clone, Copy, Debug)]
pub struct Rent {
    pub mint_lamports: u64,
    pub token_account_lamports: u64,
}

fn instruction(r: Result<Instruction, impl std::fmt::Display>) -> Result<Instruction, SolanaError> {
    r.map_err(|e| SolanaError::Instruction(e.to_string()))
}

/// The genesis of NLOV on a cluster, as transactions to send in order, each signed by the custody (which pays)
/// and the first also by the new mint's keypair: (1) the mint (authority: the custody) and the custody's
/// associated token account; (2, 3) the other buckets' token accounts; (4) each bucket's allocation minted, then the
/// mint authority revoked — in one transaction, so there is never a moment when more could be minted.
// `Hash` is `Copy` only with some of solana-hash's features (test builds turn them on): cloned, it builds both ways.
#[allow(clippy::clone_on_copy)]
pub fn genesis(
    custody: &Keypair,
    mint: &Keypair,
    rent: Rent,
    blockhash: Hash,
) -> Result<Vec<Transaction>, SolanaError> {
    let (c, m, token) = (custody.pubkey(), mint.pubkey(), token_program());
    let first = vec![
        solana_system_interface::instruction::create_account(&c, &m, rent.mint_lamports, MINT_BYTES, &token),
        instruction(spl_token_interface::instruction::initialize_mint2(&token, &m, &c, None, DECIMALS))?,
        spl_associated_token_account_interface::instruction::create_associated_token_account_idempotent(
            &c, &c, &m, &token,
        ),
    ];
    let mut txs = vec![sign(&first, custody, &[mint], blockhash.clone())?];
    let seeded: Vec<Bucket> = Bucket::ALL.into_iter().filter(|&b| b != Bucket::EcosystemFund).collect();
    for part in seeded.chunks(4) {
        let mut ixs = Vec::with_capacity(2 * part.len());
        for &b in part {
            let account = bucket_account(&c, &m, b);
            ixs.push(solana_system_interface::instruction::create_account_with_seed(
                &c,
                &account,
                &c,
                &bucket_seed(b),
                rent.token_account_lamports,
                TOKEN_ACCOUNT_BYTES,
                &token,
            ));
            ixs.push(instruction(spl_token_interface::instruction::initialize_account3(&token, &account, &m, &c))?);
        }
        txs.push(sign(&ixs, custody, &[], blockhash.clone())?);
    }
    let mut mint_all = Vec::with_capacity(GENESIS.len() + 1);
    for (bucket, whole) in GENESIS {
        let account = bucket_account(&c, &m, bucket);
        let amount = whole * NANO_PER_NLOV;
        mint_all.push(instruction(spl_token_interface::instruction::mint_to(&token, &m, &account, &c, &[], amount))?);
    }
    mint_all.push(instruction(spl_token_interface::instruction::set_authority(
        &token,
        &m,
        None,
        spl_token_interface::instruction::AuthorityType::MintTokens,
        &c,
        &[],
    ))?);
    txs.push(sign(&mint_all, custody, &[], blockhash)?);
    Ok(txs)
}

/// A withdrawal of `amount_nano` from the custody's associated token account to `to`'s (created if missing, paid
/// by the custody), at `micro_lamports_per_unit` priority, valid while `blockhash` is.
pub fn withdrawal(
    custody: &Keypair,
    mint: &Pubkey,
    to: &Pubkey,
    amount_nano: u64,
    micro_lamports_per_unit: u64,
    blockhash: Hash,
) -> Result<Transaction, SolanaError> {
    let (c, token) = (custody.pubkey(), token_program());
    let ixs = [
        ComputeBudgetInstruction::set_compute_unit_limit(WITHDRAW_COMPUTE_UNITS),
        ComputeBudgetInstruction::set_compute_unit_price(micro_lamports_per_unit),
        spl_associated_token_account_interface::instruction::create_associated_token_account_idempotent(
            &c, to, mint, &token,
        ),
        instruction(spl_token_interface::instruction::transfer_checked(
            &token,
            &associated_account(&c, mint),
            mint,
            &associated_account(to, mint),
            &c,
            &[],
            amount_nano,
            DECIMALS,
        ))?,
    ];
    sign(&ixs, custody, &[], blockhash)
}

/// `instructions` paid by `payer` and signed by it and `others`, checked to fit Solana's packet.
fn sign(
    instructions: &[Instruction],
    payer: &Keypair,
    others: &[&Keypair],
    blockhash: Hash,
) -> Result<Transaction, SolanaError> {
    let mut signers: Vec<&Keypair> = vec![payer];
    signers.extend_from_slice(others);
    let tx = Transaction::new_signed_with_payer(instructions, Some(&payer.pubkey()), &signers, blockhash);
    let len = wire(&tx).len();
    if len > MAX_TRANSACTION_BYTES {
        return Err(SolanaError::TooLarge(len));
    }
    Ok(tx)
}

/// The transaction's bytes as `sendTransaction` takes them (base64 of these).
pub fn wire(tx: &Transaction) -> Vec<u8> {
    bincode::serialize(tx).unwrap_or_default()
}

/// The transaction read back from its wire bytes (a withdrawal's kept copy, re-sent unchanged).
pub fn from_wire(bytes: &[u8]) -> Option<Transaction> {
    bincode::deserialize(bytes).ok()
}

/// A transaction's id: its first signature, base58 (what `getSignatureStatuses` takes).
pub fn signature(tx: &Transaction) -> String {
    tx.signatures.first().map(ToString::to_string).unwrap_or_default()
}

/// A deposit as a user's wallet makes it: `amount_nano` from `from`'s associated token account to the custody's, with
/// a memo naming the Neurolov account to credit (`account`).
pub fn deposit(
    from: &Keypair,
    mint: &Pubkey,
    custody: &Pubkey,
    amount_nano: u64,
    account: &str,
    blockhash: Hash,
) -> Result<Transaction, SolanaError> {
    let (f, token) = (from.pubkey(), token_program());
    let ixs = [
        instruction(spl_token_interface::instruction::transfer_checked(
            &token,
            &associated_account(&f, mint),
            mint,
            &associated_account(custody, mint),
            &f,
            &[],
            amount_nano,
            DECIMALS,
        ))?,
        Instruction { program_id: MEMO_PROGRAM, accounts: Vec::new(), data: account.as_bytes().to_vec() },
    ];
    sign(&ixs, from, &[], blockhash)
}

/// A transaction as a cluster returns it: legacy or versioned (wallets send both).
pub use solana_transaction::versioned::VersionedTransaction;

/// A landed transaction read back from its wire bytes, legacy or versioned.
pub fn versioned_from_wire(bytes: &[u8]) -> Option<VersionedTransaction> {
    bincode::deserialize(bytes).ok()
}

/// The memo a transaction carries (the first memo instruction's text), if any.
pub fn memo(tx: &VersionedTransaction) -> Option<String> {
    let keys = tx.message.static_account_keys();
    tx.message.instructions().iter().find_map(|ix| {
        let program = keys.get(usize::from(ix.program_id_index))?;
        if *program != MEMO_PROGRAM || ix.data.len() > MAX_MEMO_BYTES {
            return None;
        }
        String::from_utf8(ix.data.clone()).ok().map(|s| s.trim().to_string())
    })
}

/// What a landed transaction did to one token account: its balance before and after, in base units, and the mint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenChange {
    pub account: Pubkey,
    pub mint: Pubkey,
    pub pre: u64,
    pub post: u64,
}

/// NLOV a landed transaction moved into the custody's account (`custody_account` of `mint`), and the memo it
/// carries: a deposit when both are there. Only a transfer counts: a transaction that took NLOV out (a withdrawal)
/// or changed the supply (genesis) is no deposit.
pub fn deposit_of(
    tx: &VersionedTransaction,
    changes: &[TokenChange],
    custody_account: &Pubkey,
    mint: &Pubkey,
) -> Option<(u64, Option<String>)> {
    let change = changes.iter().find(|c| c.account == *custody_account && c.mint == *mint)?;
    let added = change.post.checked_sub(change.pre).filter(|&a| a > 0)?;
    // A transfer moves NLOV between accounts; one that changes the total (genesis minting) is no deposit.
    let total = |f: fn(&TokenChange) -> u64| {
        changes.iter().filter(|c| c.mint == *mint).try_fold(0u64, |sum, c| sum.checked_add(f(c)))
    };
    if total(|c| c.pre)? != total(|c| c.post)? {
        return None;
    }
    Some((added, memo(tx)))
}
