//! The NLOV ledger: every movement of money in the network, and nothing else moves money. It follows TigerBeetle's
//! model: accounts keep posted and pending debit/credit totals; transfers are immutable, carry caller-chosen ids
//! (the same id submitted twice is applied once), may be two-phase (pending, then posted in whole or part, voided,
//! or expired at their timeout) and may be linked into chains that apply all-or-nothing. Amounts are `u64` base
//! units ("nano", 10⁻⁹ NLOV) with checked arithmetic.
//!
//! The crate is pure: [`Ledger`] applies batches in memory and hands out what changed ([`Ledger::take_changes`]) for
//! the shell to commit durably in one transaction. [`Ledger::replay`] rebuilds a ledger from its transfer log; the
//! audit compares that replay with the stored balances.

mod engine;
mod genesis;

pub use engine::{Changes, Ledger, LedgerError, Outcome, TransferError};
pub use genesis::{Bucket, GENESIS};

/// Base units per NLOV (9 decimals).
pub const NANO_PER_NLOV: u64 = 1_000_000_000;
/// The whole supply, created once at genesis and never again.
pub const TOTAL_SUPPLY_NANO: u64 = 500_000_000 * NANO_PER_NLOV;
/// Transfers accepted in one batch.
pub const MAX_BATCH: usize = 8190;

/// An account's 128-bit id. System accounts and wallets derive theirs from what they are (see [`AccountId::derive`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountId(pub u128);

/// A transfer's 128-bit id, chosen by the caller; deriving it from the event it pays for makes retries harmless.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TransferId(pub u128);

fn derive_u128(domain: &str, parts: &[&[u8]]) -> u128 {
    let mut h = blake3::Hasher::new();
    h.update(domain.as_bytes());
    for p in parts {
        // Length-prefixed so that ("ab", "c") and ("a", "bc") differ.
        h.update(&(p.len() as u64).to_le_bytes());
        h.update(p);
    }
    let bytes = h.finalize();
    let mut id = [0u8; 16];
    id.copy_from_slice(&bytes.as_bytes()[..16]);
    // Zero is reserved as "no id".
    u128::from_le_bytes(id).max(1)
}

impl AccountId {
    pub fn derive(parts: &[&[u8]]) -> AccountId {
        AccountId(derive_u128("neurolov/account/v1", parts))
    }
}

impl TransferId {
    pub fn derive(parts: &[&[u8]]) -> TransferId {
        TransferId(derive_u128("neurolov/transfer/v1", parts))
    }
}

impl std::fmt::Display for AccountId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl std::fmt::Display for TransferId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// What an account is for. Stored with the account; the ledger enforces only the flags, the kind is for people.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// The source of the supply: debited once at genesis, never again.
    Mint,
    Genesis(Bucket),
    User,
    Provider,
    /// Holds a job's maximum price while it runs.
    Escrow,
    /// A provider's locked stake.
    Stake,
    /// NLOV on a chain outside the network's custody, by the chain's number (`neurolov_protocol::chain::Chain`): a
    /// withdrawal credits it, a deposit debits it. It never goes negative — nothing can come in from a chain that
    /// did not first go out to it — so a forged deposit report cannot create NLOV.
    Outside(u8),
}

impl Kind {
    pub fn code(self) -> u16 {
        match self {
            Kind::Mint => 1,
            Kind::Genesis(b) => 100 + b as u16,
            Kind::User => 2,
            Kind::Provider => 3,
            Kind::Escrow => 4,
            Kind::Stake => 5,
            Kind::Outside(chain) => 50 + u16::from(chain),
        }
    }

    pub fn from_code(code: u16) -> Option<Kind> {
        Some(match code {
            1 => Kind::Mint,
            2 => Kind::User,
            3 => Kind::Provider,
            4 => Kind::Escrow,
            5 => Kind::Stake,
            c @ 50..=99 => Kind::Outside(u8::try_from(c - 50).ok()?),
            c if c >= 100 => Kind::Genesis(*Bucket::ALL.get(usize::from(c - 100))?),
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Mint => "mint",
            Kind::Genesis(Bucket::Treasury) => "treasury",
            Kind::Genesis(_) => "genesis",
            Kind::User => "user",
            Kind::Provider => "provider",
            Kind::Escrow => "escrow",
            Kind::Stake => "stake",
            Kind::Outside(_) => "outside",
        }
    }
}

/// Account flags (TigerBeetle's names).
pub mod account_flags {
    /// Debits (posted and pending) may never exceed posted credits: the balance cannot go negative.
    pub const DEBITS_MUST_NOT_EXCEED_CREDITS: u16 = 1 << 0;
    /// Credits may never exceed posted debits (an account that may only give back what it took).
    pub const CREDITS_MUST_NOT_EXCEED_DEBITS: u16 = 1 << 1;
    /// The supply's source: its debits may never exceed the total supply.
    pub const MINT: u16 = 1 << 2;
}

/// Transfer flags (TigerBeetle's names).
pub mod transfer_flags {
    /// This transfer and the next one succeed or fail together.
    pub const LINKED: u16 = 1 << 0;
    /// Reserve the amount (pending totals) until posted, voided or timed out.
    pub const PENDING: u16 = 1 << 1;
    pub const POST_PENDING: u16 = 1 << 2;
    pub const VOID_PENDING: u16 = 1 << 3;
}

/// An account and its totals. Balances are `credits_posted − debits_posted`; totals are `u128` so that a long-lived
/// account's turnover never overflows, while every single amount is a `u64`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    pub id: AccountId,
    pub kind: Kind,
    pub flags: u16,
    /// Who or what it belongs to, for people: an address, `job 17`, a bucket's name.
    pub owner: String,
    pub debits_pending: u128,
    pub debits_posted: u128,
    pub credits_pending: u128,
    pub credits_posted: u128,
    pub created_ms: u64,
}

impl Account {
    /// Posted credits minus posted debits (negative only for the mint).
    pub fn balance(&self) -> i128 {
        self.credits_posted as i128 - self.debits_posted as i128
    }

    /// What can still be spent: the balance less pending debits.
    pub fn available(&self) -> i128 {
        self.balance() - self.debits_pending as i128
    }
}

/// An immutable transfer. For a post or void, `debit` and `credit` may be left zero: the ledger fills them in from
/// the pending transfer, so the log is self-contained.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transfer {
    pub id: TransferId,
    pub debit: AccountId,
    pub credit: AccountId,
    pub amount: u64,
    /// The pending transfer a post or void settles.
    pub pending_id: Option<TransferId>,
    /// Pending transfers only: when it voids itself (ms on the ledger's clock; 0 = never).
    pub timeout_ms: u64,
    pub flags: u16,
    /// What the transfer is for (see [`codes`]).
    pub code: u16,
    /// Free for the caller: a job id, a release time.
    pub user_data: u64,
    /// Set by the ledger when applied.
    pub timestamp_ms: u64,
}

impl Transfer {
    /// A plain posted transfer.
    pub fn new(id: TransferId, debit: AccountId, credit: AccountId, amount: u64, code: u16) -> Transfer {
        Transfer {
            id,
            debit,
            credit,
            amount,
            pending_id: None,
            timeout_ms: 0,
            flags: 0,
            code,
            user_data: 0,
            timestamp_ms: 0,
        }
    }

    /// A pending (reserved) transfer that voids itself at `timeout_ms` (0 = never).
    pub fn pending(
        id: TransferId,
        debit: AccountId,
        credit: AccountId,
        amount: u64,
        code: u16,
        timeout_ms: u64,
    ) -> Transfer {
        Transfer { timeout_ms, flags: transfer_flags::PENDING, ..Transfer::new(id, debit, credit, amount, code) }
    }

    /// Posts `amount` (≤ the pending amount; the rest is released) of `pending`.
    pub fn post(id: TransferId, pending: TransferId, amount: u64, code: u16) -> Transfer {
        Transfer {
            pending_id: Some(pending),
            flags: transfer_flags::POST_PENDING,
            ..Transfer::new(id, AccountId(0), AccountId(0), amount, code)
        }
    }

    /// Releases `pending` entirely.
    pub fn void(id: TransferId, pending: TransferId, code: u16) -> Transfer {
        Transfer {
            pending_id: Some(pending),
            flags: transfer_flags::VOID_PENDING,
            ..Transfer::new(id, AccountId(0), AccountId(0), 0, code)
        }
    }

    pub fn linked(mut self) -> Transfer {
        self.flags |= transfer_flags::LINKED;
        self
    }

    pub fn with_user_data(mut self, user_data: u64) -> Transfer {
        self.user_data = user_data;
        self
    }

    pub fn is(&self, flag: u16) -> bool {
        self.flags & flag != 0
    }
}

/// Transfer codes: what a transfer is for. Shown in histories; the ledger does not interpret them.
pub mod codes {
    pub const GENESIS: u16 = 1;
    pub const WALLET: u16 = 2;
    pub const FAUCET: u16 = 3;
    pub const ESCROW: u16 = 10;
    pub const TASK_HOLD: u16 = 11;
    pub const TASK_PAY: u16 = 12;
    pub const FEE: u16 = 13;
    pub const REFUND: u16 = 14;
    /// Kept for transfers made before verification work was paid from the client's escrow.
    pub const VERIFICATION_PAY: u16 = 15;
    /// A convicted node's pay for a revoked result, taken back into that job's escrow for the re-run.
    pub const CLAWBACK: u16 = 16;
    /// The treasury's share of a conviction's slash put into a revoked job's escrow for its re-run.
    pub const RERUN_FUND: u16 = 17;
    /// A model author's share of a verified inference's price.
    pub const ROYALTY: u16 = 18;
    /// NLOV that arrived in the network's custody on a chain, credited to the account it names (user data: none; the
    /// transfer id derives from the chain transaction's id, so a deposit is credited once).
    pub const DEPOSIT: u16 = 40;
    /// NLOV leaving custody for an address on a chain: pending until the chain transaction is confirmed, then posted;
    /// voided (refunded) if it provably did not land.
    pub const WITHDRAW: u16 = 41;
    /// A treasury spend a governance proposal executed.
    pub const GRANT: u16 = 42;
    pub const STAKE: u16 = 20;
    pub const UNSTAKE: u16 = 21;
    pub const SLASH: u16 = 22;
    pub const EXPIRED: u16 = 30;

    pub fn name(code: u16) -> &'static str {
        match code {
            GENESIS => "genesis",
            WALLET => "transfer",
            FAUCET => "faucet",
            ESCROW => "escrow",
            TASK_HOLD => "task hold",
            TASK_PAY => "task payment",
            FEE => "protocol fee",
            REFUND => "escrow refund",
            VERIFICATION_PAY => "verification payment",
            CLAWBACK => "clawback",
            RERUN_FUND => "re-run fund",
            ROYALTY => "model royalty",
            STAKE => "stake",
            UNSTAKE => "unstake",
            SLASH => "slash",
            EXPIRED => "expired hold",
            DEPOSIT => "deposit",
            WITHDRAW => "withdrawal",
            GRANT => "governance grant",
            _ => "other",
        }
    }
}

/// Formats base units as NLOV with all nine decimals trimmed of trailing zeros.
pub fn format_nlov(nano: u128) -> String {
    let whole = nano / u128::from(NANO_PER_NLOV);
    let frac = nano % u128::from(NANO_PER_NLOV);
    if frac == 0 {
        return whole.to_string();
    }
    let frac = format!("{frac:09}");
    format!("{whole}.{}", frac.trim_end_matches('0'))
}

/// Parses a decimal NLOV amount ("12", "0.5", "1.000000001") into base units, exactly.
pub fn parse_nlov(text: &str) -> Option<u64> {
    let text = text.trim();
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    if whole.is_empty() && frac.is_empty() || frac.len() > 9 {
        return None;
    }
    if !whole.chars().all(|c| c.is_ascii_digit()) || !frac.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let whole: u64 = if whole.is_empty() { 0 } else { whole.parse().ok()? };
    let frac: u64 = if frac.is_empty() { 0 } else { format!("{frac:0<9}").parse().ok()? };
    whole.checked_mul(NANO_PER_NLOV)?.checked_add(frac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nlov_amounts_round_trip() {
        for (text, nano) in
            [("0", 0), ("1", NANO_PER_NLOV), ("0.5", NANO_PER_NLOV / 2), ("1.000000001", NANO_PER_NLOV + 1)]
        {
            assert_eq!(parse_nlov(text), Some(nano), "{text}");
            assert_eq!(format_nlov(u128::from(nano)), text);
        }
        for bad in ["", ".", "1.0000000001", "-1", "1e3", "abc", "18446744073709551616"] {
            assert_eq!(parse_nlov(bad), None, "{bad}");
        }
    }

    #[test]
    fn kinds_round_trip_through_codes() {
        let mut kinds = vec![Kind::Mint, Kind::User, Kind::Provider, Kind::Escrow, Kind::Stake, Kind::Outside(0)];
        kinds.extend([Kind::Outside(1), Kind::Outside(49)]);
        kinds.extend(Bucket::ALL.iter().map(|&b| Kind::Genesis(b)));
        for k in kinds {
            assert_eq!(Kind::from_code(k.code()), Some(k));
        }
        assert_eq!(Kind::from_code(0), None);
        assert_eq!(Kind::from_code(200), None);
    }

    #[test]
    fn derived_ids_separate_their_parts() {
        assert_ne!(TransferId::derive(&[b"ab", b"c"]), TransferId::derive(&[b"a", b"bc"]));
        assert_ne!(AccountId::derive(&[b"x"]).0, TransferId::derive(&[b"x"]).0);
    }
}
