//! The ledger engine: applies transfers to accounts with TigerBeetle's semantics and checks the invariants.
//!
//! A batch is applied event by event. An event that fails changes nothing; a linked chain (events flagged
//! `LINKED`, closed by the first event without it) is undone as a whole when any of its events fails. Every
//! transfer id ever applied is remembered with a fingerprint of its fields: resubmitting the same transfer answers
//! [`Outcome::AlreadyApplied`] and changes nothing, reusing its id for a different transfer is an error.

use std::collections::{BTreeSet, HashMap, HashSet};

use crate::{
    Account, AccountId, Kind, MAX_BATCH, TOTAL_SUPPLY_NANO, Transfer, TransferId, account_flags, codes, transfer_flags,
};

/// Why a transfer was refused. Nothing changed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransferError {
    #[error("transfer id must not be zero")]
    IdZero,
    #[error("transfer {0} already exists with different fields")]
    ExistsWithDifferentFields(TransferId),
    #[error("a transfer may be only one of pending, post and void")]
    FlagsConflict,
    #[error("debit and credit account are the same")]
    SameAccount,
    #[error("amount must be positive")]
    ZeroAmount,
    #[error("amount {0} exceeds the total supply")]
    AmountTooLarge(u64),
    #[error("account {0} does not exist")]
    AccountNotFound(AccountId),
    #[error("insufficient funds in account {account}: {available} available, {needed} needed")]
    InsufficientFunds { account: AccountId, available: i128, needed: u64 },
    #[error("account {0} may not be credited beyond its debits")]
    ExceedsDebits(AccountId),
    #[error("the mint may not issue more than the total supply")]
    ExceedsSupply,
    #[error("only a pending transfer may have a timeout")]
    TimeoutNotPending,
    #[error("pending transfer {0} does not exist")]
    PendingNotFound(TransferId),
    #[error("pending transfer {0} was already posted")]
    PendingAlreadyPosted(TransferId),
    #[error("pending transfer {0} was already voided")]
    PendingAlreadyVoided(TransferId),
    #[error("pending transfer {0} has expired")]
    PendingExpired(TransferId),
    #[error("post of {amount} exceeds pending transfer's {pending}")]
    PostExceedsPending { pending: u64, amount: u64 },
    #[error("post or void names other accounts than its pending transfer")]
    AccountsMismatch,
    #[error("a linked transfer in the same chain failed")]
    LinkedEventFailed,
    #[error("the batch ends inside a linked chain")]
    LinkedChainOpen,
    #[error("a batch holds at most {MAX_BATCH} transfers")]
    BatchTooLarge,
    #[error("account totals would overflow")]
    Overflow,
}

/// Errors of the ledger as a whole.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    #[error("account id must not be zero")]
    AccountIdZero,
    #[error("account {0} already exists with a different kind or flags")]
    AccountExists(AccountId),
    #[error("genesis failed: {0}")]
    Genesis(TransferError),
    #[error("transfer log entry {index} does not replay: {error}")]
    Replay { index: usize, error: TransferError },
    #[error("invariant broken: {0}")]
    Invariant(String),
}

/// A successful event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    /// The same transfer was applied before: nothing changed.
    AlreadyApplied,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PendingState {
    Pending,
    Posted,
    Voided,
    Expired,
}

/// What changed since the last [`Ledger::take_changes`]: what the shell must commit, in one transaction.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Changes {
    pub created: Vec<Account>,
    pub transfers: Vec<Transfer>,
    /// The current state of every account a transfer touched.
    pub accounts: Vec<Account>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.created.is_empty() && self.transfers.is_empty() && self.accounts.is_empty()
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Totals {
    debits_pending: u128,
    debits_posted: u128,
    credits_pending: u128,
    credits_posted: u128,
}

/// How to take back a linked chain's applied events.
#[derive(Default)]
struct Undo {
    accounts: Vec<Account>,
    seen: Vec<TransferId>,
    pending: Vec<(TransferId, Option<(Transfer, PendingState)>)>,
    timeouts_added: Vec<(u64, TransferId)>,
    timeouts_removed: Vec<(u64, TransferId)>,
}

/// What one transfer moves: pending released (a post or void settles its pending transfer), posted, newly
/// reserved (a pending transfer).
#[derive(Clone, Copy)]
struct Moves {
    released: u128,
    posted: u128,
    reserved: u128,
}

/// Totals after a checked transfer: the debit account's (pending, posted) debits, the credit account's (pending,
/// posted) credits, and the ledger's.
struct After {
    debit: (u128, u128),
    credit: (u128, u128),
    totals: Totals,
}

/// What `t` moves, given the pending transfer it settles (as it stands now); refused if that one is no longer
/// pending, expired, or asked for more than it holds.
fn amounts(t: &Transfer, settled: Option<&(Transfer, PendingState)>, now_ms: u64) -> Result<Moves, TransferError> {
    let (released, posted, reserved) = match settled {
        Some((p, state)) => {
            match state {
                PendingState::Pending => {}
                PendingState::Posted => return Err(TransferError::PendingAlreadyPosted(p.id)),
                PendingState::Voided => return Err(TransferError::PendingAlreadyVoided(p.id)),
                PendingState::Expired => return Err(TransferError::PendingExpired(p.id)),
            }
            if t.is(transfer_flags::POST_PENDING) {
                if p.timeout_ms != 0 && now_ms >= p.timeout_ms {
                    return Err(TransferError::PendingExpired(p.id));
                }
                if t.amount == 0 {
                    return Err(TransferError::ZeroAmount);
                }
                if t.amount > p.amount {
                    return Err(TransferError::PostExceedsPending { pending: p.amount, amount: t.amount });
                }
                (p.amount, t.amount, 0)
            } else {
                if t.amount != 0 && t.amount != p.amount {
                    return Err(TransferError::PostExceedsPending { pending: p.amount, amount: t.amount });
                }
                (p.amount, 0, 0)
            }
        }
        None => {
            if t.amount == 0 {
                return Err(TransferError::ZeroAmount);
            }
            if t.amount > TOTAL_SUPPLY_NANO {
                return Err(TransferError::AmountTooLarge(t.amount));
            }
            if t.is(transfer_flags::PENDING) { (0, 0, t.amount) } else { (0, t.amount, 0) }
        }
    };
    Ok(Moves { released: u128::from(released), posted: u128::from(posted), reserved: u128::from(reserved) })
}

/// The ledger's state.
#[derive(Default)]
pub struct Ledger {
    accounts: HashMap<AccountId, Account>,
    /// Every applied transfer id with a fingerprint of its fields (idempotency).
    seen: HashMap<TransferId, u64>,
    /// Two-phase transfers and what became of them.
    pending: HashMap<TransferId, (Transfer, PendingState)>,
    /// The ones still open, in id order: what callers scan (all pendings ever made would grow without bound), in an
    /// order that does not change from run to run.
    open: BTreeSet<TransferId>,
    timeouts: BTreeSet<(u64, TransferId)>,
    totals: Totals,
    created: Vec<Account>,
    log: Vec<Transfer>,
    dirty: HashSet<AccountId>,
}

fn fingerprint(t: &Transfer) -> u64 {
    // FNV-1a over the fields a caller chooses (not the timestamp the ledger sets).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    eat(&t.debit.0.to_le_bytes());
    eat(&t.credit.0.to_le_bytes());
    eat(&t.amount.to_le_bytes());
    eat(&t.pending_id.map_or(0, |p| p.0).to_le_bytes());
    eat(&t.timeout_ms.to_le_bytes());
    eat(&(t.flags & !transfer_flags::LINKED).to_le_bytes());
    eat(&t.code.to_le_bytes());
    eat(&t.user_data.to_le_bytes());
    h
}

impl Ledger {
    pub fn new() -> Ledger {
        Ledger::default()
    }

    /// Creates an account; creating the same account again is a no-op (`Ok(false)`).
    pub fn create_account(
        &mut self,
        id: AccountId,
        kind: Kind,
        flags: u16,
        owner: &str,
        now_ms: u64,
    ) -> Result<bool, LedgerError> {
        if id.0 == 0 {
            return Err(LedgerError::AccountIdZero);
        }
        if let Some(a) = self.accounts.get(&id) {
            return if a.kind == kind && a.flags == flags { Ok(false) } else { Err(LedgerError::AccountExists(id)) };
        }
        let account = Account {
            id,
            kind,
            flags,
            owner: owner.to_string(),
            debits_pending: 0,
            debits_posted: 0,
            credits_pending: 0,
            credits_posted: 0,
            created_ms: now_ms,
        };
        self.created.push(account.clone());
        self.accounts.insert(id, account);
        Ok(true)
    }

    pub fn account(&self, id: AccountId) -> Option<&Account> {
        self.accounts.get(&id)
    }

    pub fn accounts(&self) -> impl Iterator<Item = &Account> {
        self.accounts.values()
    }

    /// Whether a transfer with this id was ever applied.
    pub fn contains(&self, id: TransferId) -> bool {
        self.seen.contains_key(&id)
    }

    /// Pending transfers not yet posted, voided or expired.
    pub fn open_pending(&self) -> impl Iterator<Item = &Transfer> {
        self.open.iter().filter_map(|id| self.pending.get(id)).map(|(t, _)| t)
    }

    /// The pending transfer `id`, if it is still open.
    pub fn open_pending_transfer(&self, id: TransferId) -> Option<&Transfer> {
        self.pending.get(&id).filter(|(_, s)| *s == PendingState::Pending).map(|(t, _)| t)
    }

    /// Whether `id` is a pending transfer still open.
    pub fn is_open_pending(&self, id: TransferId) -> bool {
        self.pending.get(&id).is_some_and(|(_, s)| *s == PendingState::Pending)
    }

    /// Transfers applied so far.
    pub fn transfer_count(&self) -> usize {
        self.seen.len()
    }

    /// Sum of every account's balance except the mint's: the supply in circulation.
    pub fn circulating(&self) -> i128 {
        self.accounts.values().filter(|a| a.kind != Kind::Mint).map(Account::balance).sum()
    }

    /// Applies a batch; one result per transfer, in order.
    pub fn submit(&mut self, batch: &[Transfer], now_ms: u64) -> Vec<Result<Outcome, TransferError>> {
        if batch.len() > MAX_BATCH {
            return vec![Err(TransferError::BatchTooLarge); batch.len()];
        }
        let mut results = Vec::with_capacity(batch.len());
        let mut start = 0;
        while start < batch.len() {
            // The chain runs to the first transfer without LINKED.
            let end = batch[start..].iter().position(|t| !t.is(transfer_flags::LINKED)).map(|p| start + p);
            let Some(end) = end else {
                results.extend(std::iter::repeat_n(Err(TransferError::LinkedChainOpen), batch.len() - start));
                break;
            };
            if end == start {
                results.push(self.apply(&batch[start], now_ms, None));
            } else {
                self.apply_chain(&batch[start..=end], now_ms, &mut results);
            }
            start = end + 1;
        }
        results
    }

    fn apply_chain(&mut self, chain: &[Transfer], now_ms: u64, results: &mut Vec<Result<Outcome, TransferError>>) {
        let mut undo = Undo::default();
        let log_len = self.log.len();
        let totals = self.totals;
        let mut outcomes = Vec::with_capacity(chain.len());
        for (i, t) in chain.iter().enumerate() {
            match self.apply(t, now_ms, Some(&mut undo)) {
                Ok(o) => outcomes.push(Ok(o)),
                Err(e) => {
                    self.rollback(undo, log_len, totals);
                    for j in 0..chain.len() {
                        results.push(Err(if j == i { e.clone() } else { TransferError::LinkedEventFailed }));
                    }
                    return;
                }
            }
        }
        results.extend(outcomes);
    }

    fn rollback(&mut self, undo: Undo, log_len: usize, totals: Totals) {
        // Oldest copies last in, so restore in reverse to land on the state before the chain.
        for a in undo.accounts.into_iter().rev() {
            self.accounts.insert(a.id, a);
        }
        for id in undo.seen {
            self.seen.remove(&id);
        }
        for (id, before) in undo.pending.into_iter().rev() {
            match before {
                Some(p) => {
                    if p.1 == PendingState::Pending {
                        self.open.insert(id);
                    } else {
                        self.open.remove(&id);
                    }
                    self.pending.insert(id, p);
                }
                None => {
                    self.open.remove(&id);
                    self.pending.remove(&id);
                }
            }
        }
        for k in undo.timeouts_added {
            self.timeouts.remove(&k);
        }
        for k in undo.timeouts_removed {
            self.timeouts.insert(k);
        }
        self.log.truncate(log_len);
        self.totals = totals;
    }

    /// One event. Checks everything before changing anything, so a refused event leaves no trace.
    fn apply(&mut self, t: &Transfer, now_ms: u64, undo: Option<&mut Undo>) -> Result<Outcome, TransferError> {
        let (mut t, pending_before) = self.normalize(t)?;
        if let Some(&fp) = self.seen.get(&t.id) {
            return if fp == fingerprint(&t) {
                Ok(Outcome::AlreadyApplied)
            } else {
                Err(TransferError::ExistsWithDifferentFields(t.id))
            };
        }
        if t.timeout_ms != 0 && !t.is(transfer_flags::PENDING) {
            return Err(TransferError::TimeoutNotPending);
        }
        if t.debit == t.credit {
            return Err(TransferError::SameAccount);
        }
        for account in [t.debit, t.credit] {
            if !self.accounts.contains_key(&account) {
                return Err(TransferError::AccountNotFound(account));
            }
        }
        let moves = amounts(&t, pending_before.as_ref(), now_ms)?;
        let after = self.balances_after(&t, moves)?;
        // Every check passed: change things now.
        t.timestamp_ms = now_ms;
        if let Some(undo) = undo {
            self.remember(&t, undo);
        }
        self.commit(t, after);
        Ok(Outcome::Applied)
    }

    /// The transfer as it will be logged — a post or void carries its pending transfer's accounts — with the
    /// pending transfer it settles, as it stands now.
    fn normalize(&self, t: &Transfer) -> Result<(Transfer, Option<(Transfer, PendingState)>), TransferError> {
        if t.id.0 == 0 {
            return Err(TransferError::IdZero);
        }
        let phase_flags =
            t.flags & (transfer_flags::PENDING | transfer_flags::POST_PENDING | transfer_flags::VOID_PENDING);
        if phase_flags.count_ones() > 1 {
            return Err(TransferError::FlagsConflict);
        }
        let settles = t.is(transfer_flags::POST_PENDING) || t.is(transfer_flags::VOID_PENDING);
        if !settles {
            return if t.pending_id.is_some() { Err(TransferError::FlagsConflict) } else { Ok((t.clone(), None)) };
        }
        let mut t = t.clone();
        let pid = t.pending_id.ok_or(TransferError::PendingNotFound(TransferId(0)))?;
        let (p, state) = self.pending.get(&pid).cloned().ok_or(TransferError::PendingNotFound(pid))?;
        for (given, actual) in [(&mut t.debit, p.debit), (&mut t.credit, p.credit)] {
            if given.0 == 0 {
                *given = actual;
            } else if *given != actual {
                return Err(TransferError::AccountsMismatch);
            }
        }
        Ok((t, Some((p, state))))
    }

    /// Both accounts' totals and the ledger's after `t` moves `moves`, checked against every account flag and for
    /// overflow.
    fn balances_after(&self, t: &Transfer, moves: Moves) -> Result<After, TransferError> {
        let debit = self.accounts.get(&t.debit).ok_or(TransferError::AccountNotFound(t.debit))?;
        let credit = self.accounts.get(&t.credit).ok_or(TransferError::AccountNotFound(t.credit))?;
        let Moves { released, posted, reserved } = moves;
        let ovf = || TransferError::Overflow;
        let shift = |pending: u128| pending.checked_sub(released).and_then(|p| p.checked_add(reserved)).ok_or(ovf());
        let d_pending = shift(debit.debits_pending)?;
        let d_posted = debit.debits_posted.checked_add(posted).ok_or(ovf())?;
        let c_pending = shift(credit.credits_pending)?;
        let c_posted = credit.credits_posted.checked_add(posted).ok_or(ovf())?;
        if debit.flags & account_flags::DEBITS_MUST_NOT_EXCEED_CREDITS != 0
            && d_pending.checked_add(d_posted).ok_or(ovf())? > debit.credits_posted
        {
            return Err(TransferError::InsufficientFunds {
                account: debit.id,
                available: debit.available(),
                needed: t.amount,
            });
        }
        if debit.flags & account_flags::MINT != 0 && d_pending + d_posted > u128::from(TOTAL_SUPPLY_NANO) {
            return Err(TransferError::ExceedsSupply);
        }
        if credit.flags & account_flags::CREDITS_MUST_NOT_EXCEED_DEBITS != 0
            && c_pending.checked_add(c_posted).ok_or(ovf())? > credit.debits_posted
        {
            return Err(TransferError::ExceedsDebits(credit.id));
        }
        if credit.flags & account_flags::MINT != 0 {
            return Err(TransferError::ExceedsSupply);
        }
        let totals = Totals {
            debits_pending: shift(self.totals.debits_pending)?,
            credits_pending: shift(self.totals.credits_pending)?,
            debits_posted: self.totals.debits_posted.checked_add(posted).ok_or(ovf())?,
            credits_posted: self.totals.credits_posted.checked_add(posted).ok_or(ovf())?,
        };
        Ok(After { debit: (d_pending, d_posted), credit: (c_pending, c_posted), totals })
    }

    /// What a linked chain needs to take `t` back: both accounts as they are, and the pending state it changes.
    fn remember(&self, t: &Transfer, undo: &mut Undo) {
        undo.accounts.extend(self.accounts.get(&t.debit).cloned());
        undo.accounts.extend(self.accounts.get(&t.credit).cloned());
        undo.seen.push(t.id);
        if let Some(pid) = t.pending_id {
            undo.pending.push((pid, self.pending.get(&pid).cloned()));
            if let Some((p, _)) = self.pending.get(&pid)
                && p.timeout_ms != 0
            {
                undo.timeouts_removed.push((p.timeout_ms, pid));
            }
        }
        if t.is(transfer_flags::PENDING) {
            undo.pending.push((t.id, None));
            if t.timeout_ms != 0 {
                undo.timeouts_added.push((t.timeout_ms, t.id));
            }
        }
    }

    /// Applies a checked transfer: the accounts' and the ledger's totals, the pending transfer it settles or opens
    /// (with its timer), and the log.
    fn commit(&mut self, t: Transfer, after: After) {
        let (debit_id, credit_id) = (t.debit, t.credit);
        if let Some(d) = self.accounts.get_mut(&debit_id) {
            (d.debits_pending, d.debits_posted) = after.debit;
        }
        if let Some(c) = self.accounts.get_mut(&credit_id) {
            (c.credits_pending, c.credits_posted) = after.credit;
        }
        self.totals = after.totals;
        if let Some(pid) = t.pending_id {
            let state = if t.is(transfer_flags::POST_PENDING) {
                PendingState::Posted
            } else if t.code == codes::EXPIRED {
                PendingState::Expired
            } else {
                PendingState::Voided
            };
            if let Some(entry) = self.pending.get_mut(&pid) {
                if entry.0.timeout_ms != 0 {
                    self.timeouts.remove(&(entry.0.timeout_ms, pid));
                }
                entry.1 = state;
            }
            self.open.remove(&pid);
        }
        if t.is(transfer_flags::PENDING) {
            if t.timeout_ms != 0 {
                self.timeouts.insert((t.timeout_ms, t.id));
            }
            self.pending.insert(t.id, (t.clone(), PendingState::Pending));
            self.open.insert(t.id);
        }
        self.seen.insert(t.id, fingerprint(&t));
        self.dirty.insert(debit_id);
        self.dirty.insert(credit_id);
        self.log.push(t);
    }

    /// Voids every pending transfer whose timeout has come; the voids are logged like any transfer. Returns the
    /// expired pending ids.
    pub fn expire(&mut self, now_ms: u64) -> Vec<TransferId> {
        let due: Vec<(u64, TransferId)> = self.timeouts.iter().take_while(|(at, _)| *at <= now_ms).copied().collect();
        let mut expired = Vec::with_capacity(due.len());
        for (_, pid) in due {
            let void = Transfer::void(TransferId::derive(&[b"expire", &pid.0.to_le_bytes()]), pid, codes::EXPIRED);
            match self.apply(&void, now_ms, None) {
                Ok(_) => expired.push(pid),
                Err(e) => {
                    // Cannot happen for an open pending transfer; drop the timer rather than retry forever.
                    self.timeouts.retain(|(_, id)| *id != pid);
                    debug_assert!(false, "expiring {pid}: {e}");
                }
            }
        }
        expired
    }

    /// Hands out what changed since the last call, for the shell to commit; checks the invariants that the changes
    /// could have broken first.
    pub fn take_changes(&mut self) -> Result<Changes, LedgerError> {
        self.check_commit()?;
        let mut accounts: Vec<Account> = self.dirty.drain().filter_map(|id| self.accounts.get(&id).cloned()).collect();
        accounts.sort_by_key(|a| a.id);
        Ok(Changes { created: std::mem::take(&mut self.created), transfers: std::mem::take(&mut self.log), accounts })
    }

    /// The invariants a commit must keep, in time proportional to the accounts it touched: debits equal credits,
    /// and every touched account keeps to its flags.
    pub fn check_commit(&self) -> Result<(), LedgerError> {
        let t = &self.totals;
        if t.debits_posted != t.credits_posted || t.debits_pending != t.credits_pending {
            return Err(LedgerError::Invariant(format!("debits and credits differ: {t:?}")));
        }
        for id in &self.dirty {
            if let Some(a) = self.accounts.get(id) {
                check_account(a)?;
            }
        }
        Ok(())
    }

    /// Every invariant, over the whole ledger: totals recomputed from the accounts, every account's flags, pending
    /// totals equal to the open pending transfers, and the supply: the mint has issued exactly the total supply
    /// (or nothing, before genesis) and every other balance adds up to it.
    pub fn check_full(&self) -> Result<(), LedgerError> {
        let mut sums = Totals::default();
        for a in self.accounts.values() {
            check_account(a)?;
            sums.debits_pending += a.debits_pending;
            sums.debits_posted += a.debits_posted;
            sums.credits_pending += a.credits_pending;
            sums.credits_posted += a.credits_posted;
        }
        if sums != self.totals {
            return Err(LedgerError::Invariant(format!("account totals {sums:?} differ from the ledger's")));
        }
        self.check_commit()?;
        let open_ids: BTreeSet<TransferId> =
            self.pending.iter().filter(|(_, (_, s))| *s == PendingState::Pending).map(|(id, _)| *id).collect();
        if open_ids != self.open {
            return Err(LedgerError::Invariant("the index of open pending transfers is out of step".into()));
        }
        let open: u128 = self.open_pending().map(|t| u128::from(t.amount)).sum();
        if open != sums.debits_pending {
            return Err(LedgerError::Invariant(format!(
                "open pending transfers hold {open}, accounts show {} pending",
                sums.debits_pending
            )));
        }
        let issued: i128 = self.accounts.values().filter(|a| a.kind == Kind::Mint).map(|a| -a.balance()).sum();
        if issued != 0 && issued != i128::from(TOTAL_SUPPLY_NANO) {
            return Err(LedgerError::Invariant(format!("the mint issued {issued}, not the total supply")));
        }
        if self.circulating() != issued {
            return Err(LedgerError::Invariant(format!(
                "balances add up to {}, the mint issued {issued}",
                self.circulating()
            )));
        }
        Ok(())
    }

    /// Rebuilds a ledger from its accounts (their definitions; totals are ignored) and its transfer log in the
    /// order it was applied.
    pub fn replay<'a>(
        accounts: impl IntoIterator<Item = &'a Account>,
        transfers: impl IntoIterator<Item = Transfer>,
    ) -> Result<Ledger, LedgerError> {
        let mut ledger = Ledger::new();
        for a in accounts {
            ledger.create_account(a.id, a.kind, a.flags, &a.owner, a.created_ms)?;
        }
        for (index, t) in transfers.into_iter().enumerate() {
            let now = t.timestamp_ms;
            match ledger.apply(&t, now, None) {
                Ok(Outcome::Applied) => {}
                Ok(Outcome::AlreadyApplied) => {
                    return Err(LedgerError::Replay { index, error: TransferError::ExistsWithDifferentFields(t.id) });
                }
                Err(error) => return Err(LedgerError::Replay { index, error }),
            }
        }
        ledger.created.clear();
        ledger.log.clear();
        ledger.dirty.clear();
        Ok(ledger)
    }
}

fn check_account(a: &Account) -> Result<(), LedgerError> {
    if a.flags & account_flags::DEBITS_MUST_NOT_EXCEED_CREDITS != 0
        && a.debits_pending + a.debits_posted > a.credits_posted
    {
        return Err(LedgerError::Invariant(format!("account {} ({}) is overdrawn", a.id, a.owner)));
    }
    if a.flags & account_flags::CREDITS_MUST_NOT_EXCEED_DEBITS != 0
        && a.credits_pending + a.credits_posted > a.debits_posted
    {
        return Err(LedgerError::Invariant(format!("account {} ({}) is over-credited", a.id, a.owner)));
    }
    if a.flags & account_flags::MINT != 0
        && (a.debits_pending + a.debits_posted > u128::from(TOTAL_SUPPLY_NANO)
            || a.credits_posted + a.credits_pending > 0)
    {
        return Err(LedgerError::Invariant("the mint moved beyond the supply".into()));
    }
    Ok(())
}
