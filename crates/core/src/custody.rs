//! NLOV on chains (issue 14): the coordinator's ledger is the custody ledger between Solana, TON and the network.
//! NLOV on a chain outside the network's custody is the ledger account `Outside(chain)`. A deposit seen on a chain
//! moves NLOV from there to the account it names, once per chain transaction (the transfer id derives from the chain
//! transaction's id). A withdrawal is a pending transfer to `Outside(chain)` made durable before anything is signed.
//! It then goes through the states of [`WithdrawalState`]; the chain adapter in the shell drives them and never signs
//! a withdrawal twice. `Outside(chain)` never goes negative, so no report of the chains can make the ledger create NLOV;
//! the audit holds each chain's custody balance against it (`custody = chain supply − outside`).
//!
//! This module owns the withdrawals' book: their destinations, the signed transaction of each (kept to be re-sent
//! unchanged until it lands or expires), and the per-account daily limit.

use std::collections::BTreeMap;

use neurolov_ledger::{AccountId, Kind, Outcome, Transfer, TransferId, codes};
use neurolov_protocol::Id;
use neurolov_protocol::chain::{Chain, MAX_CHAIN_ADDRESS_BYTES, MAX_CHAIN_TX_ID_BYTES, MAX_SIGNED_TX_BYTES};

use crate::economy::wallet;
use crate::{Core, Effect, Record};

/// The window the per-account withdrawal limit counts over.
pub const WITHDRAW_WINDOW_MS: u64 = 24 * 3_600_000;
/// Most withdrawals the book keeps once finished (the oldest finished ones leave first; the ledger keeps the money).
pub const MAX_FINISHED_WITHDRAWALS: usize = 100_000;
/// Most withdrawals not yet finished at once, network-wide: each is a signing and a chain transaction to watch.
pub const MAX_OPEN_WITHDRAWALS: usize = 10_000;

/// NLOV on `chain` outside the network's custody.
pub fn outside(chain: Chain) -> AccountId {
    AccountId::derive(&[b"outside", chain.as_str().as_bytes()])
}

/// Why a custody operation was refused.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum CustodyError {
    #[error("amount must be positive")]
    ZeroAmount,
    #[error("{what} is longer than {limit} bytes")]
    TooLong { what: &'static str, limit: usize },
    #[error("a withdrawal is at most {max_nano} nano-NLOV")]
    OverWithdrawalLimit { max_nano: u64 },
    #[error("a withdrawal is at least {min_nano} nano-NLOV")]
    UnderMinimum { min_nano: u64 },
    #[error("this account may withdraw {left_nano} more nano-NLOV in the next 24 hours")]
    OverDailyLimit { left_nano: u64 },
    #[error("too many withdrawals are under way; try again later")]
    TooManyOpen,
    #[error("no withdrawal {0}")]
    Unknown(TransferId),
    #[error("withdrawal {id} is {state}, not {expected}")]
    WrongState { id: TransferId, state: &'static str, expected: &'static str },
    #[error("the ledger refused: {0}")]
    Ledger(#[from] neurolov_ledger::TransferError),
}

/// Where a withdrawal stands. It only moves forward: `Requested → Signed → Confirmed | Failed`, or
/// `Requested → Failed` when it could not even be signed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WithdrawalState {
    /// Held in the ledger, nothing signed: the adapter may build and sign it.
    Requested,
    /// Signed, and recorded durably before it was sent: from now on it is only ever re-sent byte for byte, until the
    /// chain says it landed or it can no longer land (`expires`: Solana's last valid block height, TON's
    /// `valid_until`).
    Signed { tx_id: String, signed_tx: Vec<u8>, expires: u64 },
    /// Landed and final: the ledger transfer is posted.
    Confirmed { tx_id: String },
    /// Provably not landed (or never signed): the ledger transfer is voided, the account refunded.
    Failed { tx_id: Option<String>, reason: String },
}

impl WithdrawalState {
    pub fn name(&self) -> &'static str {
        match self {
            WithdrawalState::Requested => "requested",
            WithdrawalState::Signed { .. } => "signed",
            WithdrawalState::Confirmed { .. } => "confirmed",
            WithdrawalState::Failed { .. } => "failed",
        }
    }

    pub fn is_finished(&self) -> bool {
        matches!(self, WithdrawalState::Confirmed { .. } | WithdrawalState::Failed { .. })
    }
}

/// One withdrawal: NLOV leaving the network's custody for an address on a chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Withdrawal {
    /// The pending ledger transfer that holds the amount (and the withdrawal's name everywhere).
    pub id: TransferId,
    pub account: Id,
    pub chain: Chain,
    /// The destination, as the account gave it (the adapter parses and checks it before it signs anything).
    pub to: String,
    pub amount_nano: u64,
    /// What it pays the treasury when it lands (`Config::withdraw_fee_nano` when requested), held beside the amount.
    pub fee_nano: u64,
    pub requested_ms: u64,
    pub state: WithdrawalState,
}

/// The pending transfer that holds withdrawal `id`'s fee.
pub fn fee_hold(id: TransferId) -> TransferId {
    TransferId::derive(&[b"withdraw-fee", &id.0.to_le_bytes()])
}

/// A deposit credited: kept so an account's history can name the chain transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deposit {
    pub id: TransferId,
    pub account: Id,
    pub chain: Chain,
    pub tx_id: String,
    pub amount_nano: u64,
    pub credited_ms: u64,
}

/// The withdrawals the core knows, by id.
#[derive(Debug, Default)]
pub(crate) struct Withdrawals {
    book: BTreeMap<TransferId, Withdrawal>,
}

impl Withdrawals {
    pub(crate) fn restore(withdrawals: Vec<Withdrawal>) -> Withdrawals {
        Withdrawals { book: withdrawals.into_iter().map(|w| (w.id, w)).collect() }
    }

    fn open(&self) -> usize {
        self.book.values().filter(|w| !w.state.is_finished()).count()
    }

    pub(crate) fn ids(&self) -> impl Iterator<Item = TransferId> + '_ {
        self.book.keys().copied()
    }

    /// What `account` withdrew (or holds for withdrawal) since `since_ms`, failed ones excepted.
    fn recent_nano(&self, account: &Id, since_ms: u64) -> u64 {
        self.book
            .values()
            .filter(|w| w.account == *account && w.requested_ms >= since_ms)
            .filter(|w| !matches!(w.state, WithdrawalState::Failed { .. }))
            .fold(0u64, |sum, w| sum.saturating_add(w.amount_nano))
    }

    /// Forgets the oldest finished withdrawals past [`MAX_FINISHED_WITHDRAWALS`].
    fn trim(&mut self) {
        let finished: Vec<(u64, TransferId)> =
            self.book.values().filter(|w| w.state.is_finished()).map(|w| (w.requested_ms, w.id)).collect();
        if finished.len() <= MAX_FINISHED_WITHDRAWALS {
            return;
        }
        let mut finished = finished;
        finished.sort_unstable();
        for (_, id) in &finished[..finished.len() - MAX_FINISHED_WITHDRAWALS] {
            self.book.remove(id);
        }
    }
}

fn check_len(what: &'static str, s: &str, limit: usize) -> Result<(), CustodyError> {
    if s.len() > limit { Err(CustodyError::TooLong { what, limit }) } else { Ok(()) }
}

impl Core {
    fn outside_account(&mut self, chain: Chain) -> AccountId {
        let id = outside(chain);
        self.open_account(id, Kind::Outside(chain.number()), chain.as_str());
        id
    }

    /// Credits `account` with a deposit seen final on `chain` in transaction `tx_id` (with the index of the transfer
    /// inside it, for transactions that carry several). Reporting the same one again changes nothing.
    pub fn deposit(
        &mut self,
        now_ms: u64,
        chain: Chain,
        tx_id: &str,
        account: Id,
        amount_nano: u64,
    ) -> Result<(Outcome, Vec<Effect>), CustodyError> {
        self.advance(now_ms);
        check_len("a transaction id", tx_id, MAX_CHAIN_TX_ID_BYTES)?;
        if amount_nano == 0 {
            return Err(CustodyError::ZeroAmount);
        }
        let from = self.outside_account(chain);
        self.open_account(wallet(&account), Kind::User, &account.to_string());
        let id = TransferId::derive(&[b"deposit", chain.as_str().as_bytes(), tx_id.as_bytes()]);
        let outcome =
            self.economy.order_once(Transfer::new(id, from, wallet(&account), amount_nano, codes::DEPOSIT), now_ms)?;
        if outcome == Outcome::Applied {
            let deposit = Deposit { id, account, chain, tx_id: tx_id.to_string(), amount_nano, credited_ms: now_ms };
            tracing::info!(%account, %chain, tx_id, amount_nano, "deposit credited");
            self.effects.push(Effect::Persist(Record::Deposit(Box::new(deposit))));
        }
        self.commit_ledger();
        Ok((outcome, self.take_effects()))
    }

    /// Whether [`Core::withdraw`] would hold `amount_nano` of `account` for `to` now, changing nothing (`wallet
    /// withdraw --dry-run`). Returns what the account may still withdraw in the next 24 hours after this one.
    pub fn check_withdrawal(&self, now_ms: u64, account: &Id, to: &str, amount_nano: u64) -> Result<u64, CustodyError> {
        check_len("an address", to, MAX_CHAIN_ADDRESS_BYTES)?;
        if amount_nano == 0 {
            return Err(CustodyError::ZeroAmount);
        }
        if amount_nano < self.cfg.withdraw_min_nano {
            return Err(CustodyError::UnderMinimum { min_nano: self.cfg.withdraw_min_nano });
        }
        if amount_nano > self.cfg.withdraw_max_nano {
            return Err(CustodyError::OverWithdrawalLimit { max_nano: self.cfg.withdraw_max_nano });
        }
        let recent = self.withdrawals.recent_nano(account, now_ms.saturating_sub(WITHDRAW_WINDOW_MS));
        let left_nano = self.cfg.withdraw_daily_max_nano.saturating_sub(recent);
        if amount_nano > left_nano {
            return Err(CustodyError::OverDailyLimit { left_nano });
        }
        if self.withdrawals.open() >= MAX_OPEN_WITHDRAWALS {
            return Err(CustodyError::TooManyOpen);
        }
        let available = self.economy.available_nano(wallet(account));
        let needed = amount_nano.saturating_add(self.cfg.withdraw_fee_nano);
        if available < needed {
            return Err(CustodyError::Ledger(neurolov_ledger::TransferError::InsufficientFunds {
                account: wallet(account),
                available: i128::from(available),
                needed,
            }));
        }
        Ok(left_nano - amount_nano)
    }

    /// Holds `amount_nano` of `account`'s wallet for a withdrawal to `to` on `chain`; `client_id` is the account's own
    /// id for the request (asking again returns the same withdrawal). Within the per-withdrawal and daily limits.
    pub fn withdraw(
        &mut self,
        now_ms: u64,
        account: Id,
        chain: Chain,
        to: &str,
        amount_nano: u64,
        client_id: u128,
    ) -> Result<(Withdrawal, Vec<Effect>), CustodyError> {
        self.advance(now_ms);
        let id = TransferId::derive(&[b"withdraw", account.as_bytes(), &client_id.to_le_bytes()]);
        if let Some(w) = self.withdrawals.book.get(&id) {
            return Ok((w.clone(), self.take_effects()));
        }
        self.check_withdrawal(now_ms, &account, to, amount_nano)?;
        let to_outside = self.outside_account(chain);
        // No timeout: a hold that lapsed by itself while its transaction could still land would pay twice.
        let hold = Transfer::pending(id, wallet(&account), to_outside, amount_nano, codes::WITHDRAW, 0);
        let fee_nano = self.cfg.withdraw_fee_nano;
        if fee_nano == 0 {
            self.economy.order(&[hold], now_ms)?;
        } else {
            let fee =
                Transfer::pending(fee_hold(id), wallet(&account), crate::treasury(), fee_nano, codes::WITHDRAW, 0);
            self.economy.order(&[hold.linked(), fee], now_ms)?;
        }
        let w = Withdrawal {
            id,
            account,
            chain,
            to: to.to_string(),
            amount_nano,
            fee_nano,
            requested_ms: now_ms,
            state: WithdrawalState::Requested,
        };
        tracing::info!(%account, %chain, to, amount_nano, withdrawal = %id, "withdrawal requested");
        self.withdrawals.book.insert(id, w.clone());
        self.persist_withdrawal(id);
        self.commit_ledger();
        Ok((w, self.take_effects()))
    }

    /// The adapter signed withdrawal `id` as `signed_tx` (transaction id `tx_id`, unusable after `expires`). The
    /// shell makes this record durable before it sends a byte of it.
    pub fn withdrawal_signed(
        &mut self,
        now_ms: u64,
        id: TransferId,
        tx_id: &str,
        signed_tx: Vec<u8>,
        expires: u64,
    ) -> Result<Vec<Effect>, CustodyError> {
        self.advance(now_ms);
        check_len("a transaction id", tx_id, MAX_CHAIN_TX_ID_BYTES)?;
        if signed_tx.len() > MAX_SIGNED_TX_BYTES {
            return Err(CustodyError::TooLong { what: "a signed transaction", limit: MAX_SIGNED_TX_BYTES });
        }
        self.expect_state(id, "requested")?;
        let state = WithdrawalState::Signed { tx_id: tx_id.to_string(), signed_tx, expires };
        self.set_withdrawal_state(id, state);
        Ok(self.take_effects())
    }

    /// Withdrawal `id`'s transaction is final on its chain: the held NLOV leaves for good.
    pub fn withdrawal_confirmed(&mut self, now_ms: u64, id: TransferId) -> Result<Vec<Effect>, CustodyError> {
        self.advance(now_ms);
        let WithdrawalState::Signed { tx_id, .. } = self.expect_state(id, "signed")? else {
            return Err(CustodyError::Unknown(id));
        };
        let (amount, fee) = self.withdrawals.book.get(&id).map_or((0, 0), |w| (w.amount_nano, w.fee_nano));
        let post =
            Transfer::post(TransferId::derive(&[b"withdrawn", &id.0.to_le_bytes()]), id, amount, codes::WITHDRAW);
        if fee == 0 {
            self.economy.order(&[post], now_ms)?;
        } else {
            let fee_id = fee_hold(id);
            let post_fee = Transfer::post(
                TransferId::derive(&[b"withdraw-fee-paid", &id.0.to_le_bytes()]),
                fee_id,
                fee,
                codes::WITHDRAW,
            );
            self.economy.order(&[post.linked(), post_fee], now_ms)?;
        }
        self.set_withdrawal_state(id, WithdrawalState::Confirmed { tx_id });
        self.commit_ledger();
        Ok(self.take_effects())
    }

    /// Withdrawal `id` did not happen and never will (it was never signed, or its signed transaction provably did
    /// not land and has expired): the held NLOV returns to the account.
    pub fn withdrawal_failed(
        &mut self,
        now_ms: u64,
        id: TransferId,
        reason: &str,
    ) -> Result<Vec<Effect>, CustodyError> {
        self.advance(now_ms);
        let state = self.withdrawals.book.get(&id).map(|w| w.state.clone()).ok_or(CustodyError::Unknown(id))?;
        let tx_id = match state {
            WithdrawalState::Requested => None,
            WithdrawalState::Signed { tx_id, .. } => Some(tx_id),
            done => return Err(CustodyError::WrongState { id, state: done.name(), expected: "requested or signed" }),
        };
        self.economy.void_pending(id, codes::WITHDRAW, now_ms);
        self.economy.void_pending(fee_hold(id), codes::WITHDRAW, now_ms);
        let reason: String = reason.chars().take(200).collect();
        tracing::warn!(withdrawal = %id, %reason, "withdrawal failed; refunded");
        self.set_withdrawal_state(id, WithdrawalState::Failed { tx_id, reason });
        self.commit_ledger();
        Ok(self.take_effects())
    }

    /// The withdrawals not yet finished, oldest first: what the adapter works on (and checks first after a restart).
    pub fn open_withdrawals(&self) -> Vec<Withdrawal> {
        let mut open: Vec<Withdrawal> =
            self.withdrawals.book.values().filter(|w| !w.state.is_finished()).cloned().collect();
        open.sort_by_key(|w| (w.requested_ms, w.id));
        open
    }

    pub fn withdrawal(&self, id: TransferId) -> Option<&Withdrawal> {
        self.withdrawals.book.get(&id)
    }

    /// `account`'s withdrawals, newest first.
    pub fn withdrawals_of(&self, account: &Id) -> Vec<Withdrawal> {
        let mut mine: Vec<Withdrawal> =
            self.withdrawals.book.values().filter(|w| w.account == *account).cloned().collect();
        mine.sort_by_key(|w| std::cmp::Reverse((w.requested_ms, w.id)));
        mine
    }

    /// The newest `limit` withdrawals of everyone, newest first (the dashboard's chain activity).
    pub fn recent_withdrawals(&self, limit: usize) -> Vec<Withdrawal> {
        let mut all: Vec<&Withdrawal> = self.withdrawals.book.values().collect();
        all.sort_unstable_by_key(|w| std::cmp::Reverse((w.requested_ms, w.id)));
        all.into_iter().take(limit).cloned().collect()
    }

    /// NLOV the ledger counts on `chain` outside custody: the audit holds `chain supply − custody` to it.
    pub fn outside_nano(&self, chain: Chain) -> u64 {
        self.economy.account(outside(chain)).map_or(0, |a| u64::try_from(a.balance()).unwrap_or(0))
    }

    fn expect_state(&self, id: TransferId, expected: &'static str) -> Result<WithdrawalState, CustodyError> {
        let w = self.withdrawals.book.get(&id).ok_or(CustodyError::Unknown(id))?;
        if w.state.name() != expected {
            return Err(CustodyError::WrongState { id, state: w.state.name(), expected });
        }
        Ok(w.state.clone())
    }

    fn set_withdrawal_state(&mut self, id: TransferId, state: WithdrawalState) {
        if let Some(w) = self.withdrawals.book.get_mut(&id) {
            tracing::info!(withdrawal = %id, from = w.state.name(), to = state.name(), "withdrawal moved");
            w.state = state;
        }
        self.persist_withdrawal(id);
        self.withdrawals.trim();
    }

    fn persist_withdrawal(&mut self, id: TransferId) {
        if let Some(w) = self.withdrawals.book.get(&id) {
            self.effects.push(Effect::Persist(Record::Withdrawal(Box::new(w.clone()))));
        }
    }
}
