//! The network's economics, as orders to the ledger: a job escrows its client's maximum price up front; each task
//! attempt reserves its provider's pay from that escrow (a pending transfer that times out with the attempt); a
//! verified task posts that reservation and a protocol fee to the treasury; a failed or dropped attempt voids it;
//! whatever the job did not spend goes back to the client when it ends, however it ends. Proven fraud slashes a share
//! of the operator's stake to the treasury. Transfers carry the task id (holds, payments, fees) or the job id
//! (escrow, refund) in their user data.
//!
//! **Who pays for verification.** Everything a job causes is paid from that job's escrow, at the client's cap: its
//! spot-check replicas, the known-answer canary one of its placements brings along (never more than the placed
//! task's own price), and the re-run of a result revoked after its node was caught. The re-run's money is first
//! taken back from the convicted node (its pay for the revoked task) and then topped up by the treasury from that
//! same conviction's slash, never from anything else. So the treasury pays out nothing a client and its own nodes
//! could farm: whatever a client pays its own Sybil nodes came from its own escrow, less the fee.
//!
//! **Who orders.** [`Economy`] owns the ledger and is the only place transfers are made; its methods take accounts,
//! ids and amounts. The `impl Core` below is the orchestration: it looks up which job pays for a task, what the task
//! holds, what the config says, and asks the economy.

use neurolov_ledger::{
    AccountId, Bucket, Kind, Ledger, LedgerError, Outcome, TOTAL_SUPPLY_NANO, Transfer, TransferError, TransferId,
    account_flags, codes,
};
use neurolov_protocol::Id;

use crate::{Core, Effect, JobId, Purpose, Record, TaskId};

/// Basis points: 10,000 = 100%.
pub const BPS: u64 = 10_000;

/// A wallet operation refused.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum WalletError {
    #[error(transparent)]
    Transfer(#[from] TransferError),
    #[error("the faucet is off (development mode only)")]
    FaucetDisabled,
    #[error("this account has already received its faucet grant")]
    FaucetUsed,
    #[error("amount must be positive")]
    ZeroAmount,
    #[error("the ledger refused: {0}")]
    Ledger(String),
}

/// What `wallet balance` shows.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WalletView {
    /// Posted balance of the wallet.
    pub balance_nano: u64,
    /// Of which reserved by pending transfers.
    pub pending_nano: u64,
    pub staked_nano: u64,
    /// Stake on its way back (released after the unstaking delay).
    pub unstaking_nano: u64,
}

/// Ledger totals for `/v1/stats`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LedgerTotals {
    pub total_supply_nano: u64,
    pub treasury_nano: u64,
    pub escrow_nano: u64,
    pub staked_nano: u64,
    pub transfers: u64,
    pub fees_nano: u64,
    pub paid_to_providers_nano: u64,
    pub slashed_nano: u64,
}

/// Running sums of what the economy did, rebuilt from the ledger after a restart.
#[derive(Clone, Debug, Default)]
pub(crate) struct Flows {
    pub fees_nano: u64,
    pub paid_nano: u64,
    pub slashed_nano: u64,
}

impl Flows {
    pub(crate) fn count(&mut self, t: &Transfer) {
        let sum = match t.code {
            codes::FEE => &mut self.fees_nano,
            codes::TASK_PAY | codes::VERIFICATION_PAY => &mut self.paid_nano,
            codes::SLASH => &mut self.slashed_nano,
            _ => return,
        };
        *sum = sum.saturating_add(t.amount);
    }
}

pub fn wallet(id: &Id) -> AccountId {
    AccountId::derive(&[b"wallet", id.as_bytes()])
}

pub fn stake_account(id: &Id) -> AccountId {
    AccountId::derive(&[b"stake", id.as_bytes()])
}

pub fn escrow(job: JobId) -> AccountId {
    AccountId::derive(&[b"escrow", &job.to_le_bytes()])
}

pub fn treasury() -> AccountId {
    Bucket::Treasury.account()
}

fn transfer_id(parts: &[&[u8]]) -> TransferId {
    TransferId::derive(parts)
}

/// What a transfer's `user_data` names, by its code: the job of an escrow or a refund, the task of a hold, a pay, a
/// fee, a clawback or a re-run fund, the release time of an unstaking. The ledger keeps a bare `u64`; the core
/// writes and reads it only through these, so one field never means two things for one code.
trait Subject: Sized {
    fn of_job(self, job: JobId) -> Self;
    fn of_task(self, task: TaskId) -> Self;
    fn released_at(self, release_ms: u64) -> Self;
}

impl Subject for Transfer {
    fn of_job(self, job: JobId) -> Transfer {
        debug_assert!(matches!(self.code, codes::ESCROW | codes::REFUND), "code {} names no job", self.code);
        self.with_user_data(job)
    }

    fn of_task(self, task: TaskId) -> Transfer {
        debug_assert!(
            matches!(
                self.code,
                codes::TASK_HOLD
                    | codes::TASK_PAY
                    | codes::FEE
                    | codes::VERIFICATION_PAY
                    | codes::CLAWBACK
                    | codes::RERUN_FUND
                    | codes::ROYALTY
            ),
            "code {} names no task",
            self.code
        );
        self.with_user_data(task)
    }

    fn released_at(self, release_ms: u64) -> Transfer {
        debug_assert_eq!(self.code, codes::UNSTAKE, "only an unstaking has a release time");
        self.with_user_data(release_ms)
    }
}

/// The task a hold names (see [`Subject`]).
fn held_task(t: &Transfer) -> TaskId {
    debug_assert_eq!(t.code, codes::TASK_HOLD);
    t.user_data
}

/// When an unstaking's stake is released (see [`Subject`]).
fn release_ms(t: &Transfer) -> u64 {
    debug_assert_eq!(t.code, codes::UNSTAKE);
    t.user_data
}

/// Price of `work_mflop` at `nano_per_gflop`, rounded up; `None` beyond the total supply.
pub fn price_nano(work_mflop: u64, nano_per_gflop: u64) -> Option<u64> {
    let p = (u128::from(work_mflop) * u128::from(nano_per_gflop)).div_ceil(1000);
    u64::try_from(p).ok().filter(|&p| p <= TOTAL_SUPPLY_NANO)
}

/// `bps` basis points of `amount` (rounded down): the protocol fee on a price, the slashed share of a stake.
pub fn share_nano(amount: u64, bps: u64) -> u64 {
    debug_assert!(bps <= BPS, "a share is at most the whole");
    (u128::from(amount) * u128::from(bps.min(BPS)) / u128::from(BPS)) as u64
}

fn nano(v: i128) -> u64 {
    u64::try_from(v.max(0)).unwrap_or(u64::MAX)
}

/// The economy: the ledger and the running totals of what flowed through it. Every order to the ledger is made
/// here, by methods that say what they settle (an escrow, a hold, a pay, a refund, a slash) and take what they need
/// as arguments — the economy knows accounts and amounts, never tasks or jobs as the core keeps them.
pub(crate) struct Economy {
    /// The NLOV ledger: accounts, transfers applied once, pending reservations.
    ledger: Ledger,
    /// Pay, fees and slashes so far, so the statistics need no walk of the transfer log.
    flows: Flows,
}

impl Economy {
    pub fn new(ledger: Ledger, flows: Flows) -> Economy {
        Economy { ledger, flows }
    }

    /// The economy a stored ledger describes: its log replayed and checked against the stored balances, its flows
    /// summed again.
    pub fn restore(accounts: &[neurolov_ledger::Account], transfers: Vec<Transfer>) -> Result<Economy, LedgerError> {
        let mut flows = Flows::default();
        for t in &transfers {
            flows.count(t);
        }
        Ok(Economy { ledger: rebuild_ledger(accounts, transfers)?, flows })
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// Mints the total supply into the genesis buckets of a new network; the changes to store.
    pub fn genesis(&mut self, now_ms: u64) -> Result<neurolov_ledger::Changes, neurolov_ledger::LedgerError> {
        self.ledger.genesis(now_ms)?;
        self.ledger.take_changes()
    }

    pub fn account(&self, id: AccountId) -> Option<&neurolov_ledger::Account> {
        self.ledger.account(id)
    }

    /// What `id` can spend now (0 for an account that does not exist).
    pub fn available_nano(&self, id: AccountId) -> u64 {
        self.ledger.account(id).map_or(0, |a| nano(a.available()))
    }

    /// Applies `batch` (one linked chain or single transfers); logs and returns the first refusal.
    pub fn order(&mut self, batch: &[Transfer], now_ms: u64) -> Result<(), TransferError> {
        let results = self.ledger.submit(batch, now_ms);
        for (t, r) in batch.iter().zip(&results) {
            match r {
                Ok(Outcome::Applied) => self.flows.count(t),
                Ok(Outcome::AlreadyApplied) => {}
                Err(e) => {
                    tracing::warn!(transfer = %t.id, code = codes::name(t.code), error = %e, "ledger refused an order");
                    return Err(e.clone());
                }
            }
        }
        Ok(())
    }

    /// Applies one transfer and says whether it was new (a client's wallet transfer, answered either way).
    pub fn order_once(&mut self, t: Transfer, now_ms: u64) -> Result<Outcome, TransferError> {
        let result = self.ledger.submit(std::slice::from_ref(&t), now_ms);
        let outcome = result.into_iter().next().unwrap_or(Err(TransferError::BatchTooLarge));
        if outcome == Ok(Outcome::Applied) {
            self.flows.count(&t);
        }
        outcome
    }

    pub fn open_account(&mut self, id: AccountId, kind: Kind, owner: &str, now_ms: u64) {
        // A wallet opened as a client's may later be an operator's too: the kind it was opened with stays.
        if self.ledger.account(id).is_some() {
            return;
        }
        let flags = account_flags::DEBITS_MUST_NOT_EXCEED_CREDITS;
        if let Err(e) = self.ledger.create_account(id, kind, flags, owner, now_ms) {
            tracing::error!(account = %id, error = %e, "could not open an account");
        }
    }

    /// Every change since the last call, checked (see `Ledger::take_changes`).
    pub fn take_changes(&mut self) -> Result<neurolov_ledger::Changes, neurolov_ledger::LedgerError> {
        self.ledger.take_changes()
    }

    /// Moves a job's escrow from its client's wallet; a refusal changes nothing but the escrow account it opened.
    pub fn fund_escrow(&mut self, job: JobId, client: Id, amount: u64, now_ms: u64) -> Result<(), TransferError> {
        let from = wallet(&client);
        let Some(available) = self.ledger.account(from).map(|a| a.available()) else {
            return Err(TransferError::InsufficientFunds { account: from, available: 0, needed: amount });
        };
        if available < i128::from(amount) {
            return Err(TransferError::InsufficientFunds { account: from, available, needed: amount });
        }
        self.open_account(escrow(job), Kind::Escrow, &format!("job {job}"), now_ms);
        if amount == 0 {
            return Ok(());
        }
        let t = Transfer::new(transfer_id(&[b"escrow", &job.to_le_bytes()]), from, escrow(job), amount, codes::ESCROW)
            .of_job(job);
        self.order(&[t], now_ms)
    }

    /// Reserves `price` of `payer`'s escrow for an attempt, until `timeout_ms`; the reservation's id, if the escrow
    /// could cover it. The id carries the time, so an attempt number reused after a restart never meets an old hold.
    #[allow(clippy::too_many_arguments)]
    pub fn hold(
        &mut self,
        payer: JobId,
        task: TaskId,
        attempt: u32,
        operator: Id,
        price: u64,
        timeout_ms: u64,
        now_ms: u64,
    ) -> Option<TransferId> {
        let id = transfer_id(&[b"hold", &task.to_le_bytes(), &attempt.to_le_bytes(), &now_ms.to_le_bytes()]);
        let hold =
            Transfer::pending(id, escrow(payer), wallet(&operator), price, codes::TASK_HOLD, timeout_ms).of_task(task);
        self.order(&[hold], now_ms).ok().map(|()| id)
    }

    /// Voids a pending transfer if it is still open.
    pub fn void_pending(&mut self, pending: TransferId, code: u16, now_ms: u64) {
        if self.ledger.is_open_pending(pending) {
            let void = Transfer::void(transfer_id(&[b"void", &pending.0.to_le_bytes()]), pending, code);
            let _ = self.order(&[void], now_ms);
        }
    }

    /// Pays `price` for a verified attempt from `payer`'s escrow, with `fee` to the treasury and an optional royalty
    /// to a model's author, all or nothing: by posting the attempt's `hold`, or directly when it had none or the hold
    /// lapsed. The ids carry the attempt and the time, so every agreeing replica and every re-run is paid once; the
    /// ledger refuses what the escrow cannot cover (logged, paid nothing). Returns (paid to the provider, fee,
    /// royalty).
    #[allow(clippy::too_many_arguments)]
    pub fn pay(
        &mut self,
        payer: JobId,
        task: TaskId,
        attempt: u32,
        operator: Id,
        (price, fee): (u64, u64),
        royalty: Option<(Id, u64)>,
        hold: Option<TransferId>,
        now_ms: u64,
    ) -> (u64, u64, u64) {
        let key = [&task.to_le_bytes()[..], &attempt.to_le_bytes(), &now_ms.to_le_bytes()];
        let pay_id = transfer_id(&[b"pay", key[0], key[1], key[2]]);
        let royalty = royalty.filter(|&(_, r)| r > 0);
        let chain = |pay: Transfer| -> Vec<Transfer> {
            let mut legs = vec![pay];
            if fee > 0 {
                let id = transfer_id(&[b"fee", key[0], key[1], key[2]]);
                legs.push(Transfer::new(id, escrow(payer), treasury(), fee, codes::FEE));
            }
            if let Some((author, amount)) = royalty {
                let id = transfer_id(&[b"royalty", key[0], key[1], key[2]]);
                legs.push(Transfer::new(id, escrow(payer), wallet(&author), amount, codes::ROYALTY));
            }
            let last = legs.len() - 1;
            legs.into_iter()
                .enumerate()
                .map(|(i, t)| if i < last { t.of_task(task).linked() } else { t.of_task(task) })
                .collect()
        };
        let paid = (price, fee, royalty.map_or(0, |(_, r)| r));
        if let Some(h) = hold.filter(|&h| self.ledger.is_open_pending(h)) {
            if self.order(&chain(Transfer::post(pay_id, h, price, codes::TASK_PAY)), now_ms).is_ok() {
                return paid;
            }
            // The hold could not be posted (it lapsed at its timeout): let it go and pay directly.
            self.void_pending(h, codes::TASK_HOLD, now_ms);
        }
        let direct = Transfer::new(pay_id, escrow(payer), wallet(&operator), price, codes::TASK_PAY);
        if self.order(&chain(direct), now_ms).is_ok() { paid } else { (0, 0, 0) }
    }

    /// Voids the holds on `job`'s escrow except those `keep` names (by the task they are for), then returns what the
    /// escrow still holds to `client`. The refund's id carries the time and the ledger's transfer count: a job can
    /// be refunded more than once (reopened, or once more when a canary's hold is let go in the same event).
    pub fn refund(&mut self, job: JobId, client: Id, keep: impl Fn(TaskId) -> bool, now_ms: u64) {
        // The scan covers every open pending transfer (the attempts in flight), so it runs only when this escrow
        // holds something — normally nothing is held by now.
        if self.ledger.account(escrow(job)).is_some_and(|a| a.debits_pending > 0) {
            let held: Vec<TransferId> = self
                .ledger
                .open_pending()
                .filter(|t| t.debit == escrow(job) && !keep(held_task(t)))
                .map(|t| t.id)
                .collect();
            for pending in held {
                self.void_pending(pending, codes::TASK_HOLD, now_ms);
            }
        }
        let left = self.available_nano(escrow(job));
        if left == 0 {
            return;
        }
        let seq = self.ledger.transfer_count() as u64;
        let id = transfer_id(&[b"refund", &job.to_le_bytes(), &now_ms.to_le_bytes(), &seq.to_le_bytes()]);
        let t = Transfer::new(id, escrow(job), wallet(&client), left, codes::REFUND).of_job(job);
        let _ = self.order(&[t], now_ms);
    }

    /// Refills `job`'s escrow for the re-run of `task`, a revoked result of `operator`'s node, up to `needed`: first
    /// what the operator was `paid` for it (as far as its wallet still holds it), then from `budget` — what this
    /// conviction's slash brought the treasury. Returns what was taken from the budget.
    #[allow(clippy::too_many_arguments)]
    pub fn fund_rerun(
        &mut self,
        job: JobId,
        task: TaskId,
        operator: Id,
        paid: u64,
        needed: u64,
        budget: u64,
        now_ms: u64,
    ) -> u64 {
        let key = [&task.to_le_bytes()[..], &now_ms.to_le_bytes()];
        let mut funded = 0u64;
        let back = paid.min(self.available_nano(wallet(&operator))).min(needed);
        if back > 0 {
            let id = transfer_id(&[b"clawback", key[0], key[1]]);
            let t = Transfer::new(id, wallet(&operator), escrow(job), back, codes::CLAWBACK).of_task(task);
            if self.order(&[t], now_ms).is_ok() {
                funded = back;
            }
        }
        let top = needed.saturating_sub(funded).min(budget);
        if top > 0 {
            let id = transfer_id(&[b"rerun", key[0], key[1]]);
            let t = Transfer::new(id, treasury(), escrow(job), top, codes::RERUN_FUND).of_task(task);
            if self.order(&[t], now_ms).is_ok() {
                return top;
            }
        }
        0
    }

    /// Slashes `slash_bps` of the operator's stake to the treasury for proven fraud, after cancelling its pending
    /// unstakes (stake on its way out is still at stake). Returns the amount slashed.
    pub fn slash(&mut self, operator: Id, (task, attempt): (TaskId, u32), slash_bps: u64, now_ms: u64) -> u64 {
        let stake = stake_account(&operator);
        let unstakes: Vec<TransferId> =
            self.ledger.open_pending().filter(|t| t.debit == stake && t.code == codes::UNSTAKE).map(|t| t.id).collect();
        for pending in unstakes {
            self.void_pending(pending, codes::UNSTAKE, now_ms);
        }
        let amount = share_nano(self.available_nano(stake), slash_bps);
        if amount == 0 {
            return 0;
        }
        let id = transfer_id(&[b"slash", &task.to_le_bytes(), &attempt.to_le_bytes(), &now_ms.to_le_bytes()]);
        let t = Transfer::new(id, stake, treasury(), amount, codes::SLASH);
        if self.order(&[t], now_ms).is_ok() { amount } else { 0 }
    }

    /// Voids reservations past their timeout and releases matured unstakes.
    pub fn settle_timers(&mut self, now_ms: u64) {
        for pid in self.ledger.expire(now_ms) {
            tracing::debug!(pending = %pid, "reservation expired");
        }
        let matured: Vec<TransferId> = self
            .ledger
            .open_pending()
            .filter(|t| t.code == codes::UNSTAKE && release_ms(t) <= now_ms)
            .map(|t| t.id)
            .collect();
        for pending in matured {
            let amount = self.ledger.open_pending_transfer(pending).map_or(0, |t| t.amount);
            let post =
                Transfer::post(transfer_id(&[b"release", &pending.0.to_le_bytes()]), pending, amount, codes::UNSTAKE);
            let _ = self.order(&[post], now_ms);
        }
    }

    pub fn wallet_view(&self, id: &Id) -> WalletView {
        let w = self.ledger.account(wallet(id));
        let s = self.ledger.account(stake_account(id));
        WalletView {
            balance_nano: w.map_or(0, |a| nano(a.balance())),
            pending_nano: w.map_or(0, |a| a.debits_pending as u64),
            staked_nano: s.map_or(0, |a| nano(a.balance())),
            unstaking_nano: s.map_or(0, |a| a.debits_pending as u64),
        }
    }

    pub fn totals(&self) -> LedgerTotals {
        let sum = |kind: Kind| -> u64 {
            nano(self.ledger.accounts().filter(|a| a.kind == kind).map(|a| a.balance()).sum::<i128>())
        };
        LedgerTotals {
            total_supply_nano: nano(self.ledger.circulating()),
            treasury_nano: self.ledger.account(treasury()).map_or(0, |a| nano(a.balance())),
            escrow_nano: sum(Kind::Escrow),
            staked_nano: sum(Kind::Stake),
            transfers: self.ledger.transfer_count() as u64,
            fees_nano: self.flows.fees_nano,
            paid_to_providers_nano: self.flows.paid_nano,
            slashed_nano: self.flows.slashed_nano,
        }
    }
}

// The wallet operations below answer a refusal without taking the core's effects: whatever the attempt changed (an
// account it opened) stays queued and is committed with the next event, so nothing the core did is ever dropped.
impl Core {
    pub fn ledger(&self) -> &Ledger {
        self.economy.ledger()
    }

    /// Applies `batch` now (see [`Economy::order`]).
    pub(crate) fn order(&mut self, batch: &[Transfer]) -> Result<(), TransferError> {
        self.economy.order(batch, self.now_ms)
    }

    pub(crate) fn open_account(&mut self, id: AccountId, kind: Kind, owner: &str) {
        self.economy.open_account(id, kind, owner, self.now_ms);
    }

    /// Every ledger change of this event as one durable record (or a halt, if an invariant broke).
    pub(crate) fn commit_ledger(&mut self) {
        match self.economy.take_changes() {
            Ok(changes) if changes.is_empty() => {}
            Ok(changes) => self.effects.push(Effect::Persist(Record::Ledger(Box::new(changes)))),
            Err(e) => self.effects.push(Effect::Halt { reason: e.to_string() }),
        }
    }

    /// The escrow a job needs: each task at the client's price cap plus the fee on it, as many times as the task may
    /// be paid: `(work_mflop, copies)` per task (see [`Core::paid_copies`]).
    pub(crate) fn escrow_needed(&self, tasks: &[(u64, u32)], max_price_nano_per_gflop: u64) -> Option<u64> {
        tasks.iter().try_fold(0u64, |sum, &(w, copies)| {
            let p = price_nano(w, max_price_nano_per_gflop)?;
            let once = p.checked_add(share_nano(p, self.cfg.fee_bps))?;
            sum.checked_add(once.checked_mul(u64::from(copies))?)
        })
    }

    /// How many times a task of this work may be paid: once for a matmul (Freivalds checks it), and for a WGSL task
    /// every replica it may need plus one canary and the canary's possible third opinion.
    pub(crate) fn paid_copies(&self, wgsl: bool) -> u32 {
        if wgsl { self.cfg.wgsl_max_replicas.max(self.cfg.wgsl_replicas).saturating_add(2) } else { 1 }
    }

    /// Moves the job's escrow from the client's wallet. Checked before the job exists: refusal changes nothing.
    pub(crate) fn fund_escrow(&mut self, job: JobId, client: Id, amount: u64) -> Result<(), TransferError> {
        self.economy.fund_escrow(job, client, amount, self.now_ms)
    }

    /// Reserves an attempt's pay from the escrow that pays for it (its job's, or for a canary the job whose
    /// placement brought it), unless another attempt of the task holds the reservation (a spot-check replica: it is
    /// paid from the same escrow when it agrees).
    pub(crate) fn hold(&mut self, task: TaskId, attempt: u32, operator: Id, price: u64, deadline_ms: u64) {
        let Some(t) = self.tasks.get(&task) else { return };
        let Some(payer) = t.purpose.payer() else { return };
        if t.hold.is_some() || price == 0 {
            return;
        }
        let timeout_ms = deadline_ms.saturating_add(self.cfg.hold_grace_ms);
        let held = self.economy.hold(payer, task, attempt, operator, price, timeout_ms, self.now_ms);
        if let (Some(id), Some(t)) = (held, self.tasks.get_mut(&task)) {
            t.hold = Some((attempt, id));
        }
    }

    /// Voids a pending transfer if it is still open.
    pub(crate) fn void_pending(&mut self, pending: TransferId, code: u16) {
        self.economy.void_pending(pending, code, self.now_ms);
    }

    /// Releases an attempt's reservation, if it holds one.
    pub(crate) fn release_hold(&mut self, task: TaskId, attempt: u32) {
        let Some(t) = self.tasks.get_mut(&task) else { return };
        let Some((held_by, pending)) = t.hold else { return };
        if held_by != attempt {
            return;
        }
        t.hold = None;
        self.void_pending(pending, codes::TASK_HOLD);
    }

    /// The protocol fee a task pays: its job's, fixed when the job was submitted and escrowed (a governance change
    /// applies to later jobs); the configuration's for tasks of no job and for jobs recorded before it was kept.
    fn task_fee_bps(&self, task: TaskId) -> u64 {
        let job = self.tasks.get(&task).and_then(|t| match t.purpose {
            crate::Purpose::Job(job) => self.jobs.get(&job),
            _ => None,
        });
        job.and_then(|j| j.fee_bps).unwrap_or(self.cfg.fee_bps)
    }

    /// Pays a verified attempt `price` from the escrow that pays for it (see [`Purpose::payer`]), with the protocol
    /// fee on top. Returns (paid to the provider, fee).
    pub(crate) fn pay_task(&mut self, task: TaskId, attempt: u32, operator: Id, price: u64) -> (u64, u64) {
        let fee = share_nano(price, self.task_fee_bps(task));
        let split = crate::inference::Split { provider_nano: price, royalty_nano: 0, fee_nano: fee };
        let (paid, fee, _) = self.pay_task_shares(task, attempt, operator, split, None);
        (paid, fee)
    }

    /// Pays a verified attempt its shares from the escrow that pays for it, settling the attempt's hold one way or
    /// the other. Returns (paid to the provider, fee, royalty).
    pub(crate) fn pay_task_shares(
        &mut self,
        task: TaskId,
        attempt: u32,
        operator: Id,
        shares: crate::inference::Split,
        royalty: Option<(Id, u64)>,
    ) -> (u64, u64, u64) {
        let Some(t) = self.tasks.get_mut(&task) else { return (0, 0, 0) };
        let hold = match t.hold {
            Some((held_by, id)) if held_by == attempt => {
                t.hold = None;
                Some(id)
            }
            _ => None,
        };
        let total = shares.provider_nano + shares.fee_nano + shares.royalty_nano;
        let Some(payer) = t.purpose.payer().filter(|_| total > 0) else {
            if let Some(h) = hold {
                self.void_pending(h, codes::TASK_HOLD);
            }
            return (0, 0, 0);
        };
        let legs = (shares.provider_nano, shares.fee_nano);
        self.economy.pay(payer, task, attempt, operator, legs, royalty, hold, self.now_ms)
    }

    /// Returns what a finished job did not spend to its client. A canary its placements brought along keeps its
    /// reservation until it is answered (then this runs again); every other reservation goes back too.
    pub(crate) fn refund(&mut self, job: JobId) {
        let Some(client) = self.jobs.get(&job).map(|j| j.client) else { return };
        let tasks = &self.tasks;
        let canary = |task: TaskId| tasks.get(&task).is_some_and(|c| matches!(c.purpose, Purpose::Canary { .. }));
        self.economy.refund(job, client, canary, self.now_ms);
    }

    /// Funds the re-run of `task`, a revoked result of `operator`'s node, to what a fresh task would escrow (see
    /// [`Economy::fund_rerun`]). Returns what was taken from `budget`, this conviction's slash.
    pub(crate) fn fund_rerun(&mut self, task: TaskId, operator: Id, paid: u64, budget: u64) -> u64 {
        let Some(t) = self.tasks.get(&task) else { return 0 };
        let Purpose::Job(job) = t.purpose else { return 0 };
        let wgsl = matches!(t.work, neurolov_protocol::messages::Work::Wgsl { .. });
        let cap = self.jobs.get(&job).map_or(0, |j| j.max_price_nano_per_gflop);
        let needed = self.escrow_needed(&[(t.work_mflop, self.paid_copies(wgsl))], cap).unwrap_or(0);
        self.economy.fund_rerun(job, task, operator, paid, needed, budget, self.now_ms)
    }

    /// Slashes a share of the operator's stake for proven fraud and rescores its nodes. Returns the amount slashed.
    pub(crate) fn slash(&mut self, operator: Id, task: TaskId, attempt: u32) -> u64 {
        let slashed = self.economy.slash(operator, (task, attempt), self.cfg.slash_bps, self.now_ms);
        self.restake(operator);
        slashed
    }

    /// Voids reservations past their timeout and releases matured unstakes.
    pub(crate) fn settle_timers(&mut self) {
        self.economy.settle_timers(self.now_ms);
    }

    /// A wallet transfer signed by `from`; `client_id` is the client's own id for it (retrying it is harmless).
    pub fn transfer(
        &mut self,
        now_ms: u64,
        from: Id,
        to: Id,
        amount: u64,
        client_id: u128,
    ) -> Result<(Outcome, Vec<Effect>), WalletError> {
        self.advance(now_ms);
        if amount == 0 {
            return Err(WalletError::ZeroAmount);
        }
        self.open_account(wallet(&to), Kind::User, &to.to_string());
        let id = transfer_id(&[b"wallet", from.as_bytes(), &client_id.to_le_bytes()]);
        let t = Transfer::new(id, wallet(&from), wallet(&to), amount, codes::WALLET);
        let outcome = self.economy.order_once(t, now_ms)?;
        Ok((outcome, self.take_effects()))
    }

    /// Development mode: one grant per account from the ecosystem fund.
    pub fn faucet(&mut self, now_ms: u64, to: Id) -> Result<(u64, Vec<Effect>), WalletError> {
        self.advance(now_ms);
        let grant = self.cfg.faucet_grant_nano;
        if grant == 0 {
            return Err(WalletError::FaucetDisabled);
        }
        let id = transfer_id(&[b"faucet", to.as_bytes()]);
        if self.economy.ledger().contains(id) {
            return Err(WalletError::FaucetUsed);
        }
        self.open_account(wallet(&to), Kind::User, &to.to_string());
        let t = Transfer::new(id, Bucket::EcosystemFund.account(), wallet(&to), grant, codes::FAUCET);
        self.order(&[t])?;
        Ok((grant, self.take_effects()))
    }

    /// Locks `amount` of the operator's wallet as stake.
    pub fn stake(
        &mut self,
        now_ms: u64,
        operator: Id,
        amount: u64,
        client_id: u128,
    ) -> Result<Vec<Effect>, WalletError> {
        self.advance(now_ms);
        if amount == 0 {
            return Err(WalletError::ZeroAmount);
        }
        self.open_account(stake_account(&operator), Kind::Stake, &operator.to_string());
        let id = transfer_id(&[b"stake", operator.as_bytes(), &client_id.to_le_bytes()]);
        let result =
            self.order(&[Transfer::new(id, wallet(&operator), stake_account(&operator), amount, codes::STAKE)]);
        self.restake(operator);
        result?;
        Ok(self.take_effects())
    }

    /// Starts unstaking: the amount stays locked (and slashable) for the unstaking delay, then returns to the wallet.
    pub fn unstake(
        &mut self,
        now_ms: u64,
        operator: Id,
        amount: u64,
        client_id: u128,
    ) -> Result<(u64, Vec<Effect>), WalletError> {
        self.advance(now_ms);
        if amount == 0 {
            return Err(WalletError::ZeroAmount);
        }
        let id = transfer_id(&[b"unstake", operator.as_bytes(), &client_id.to_le_bytes()]);
        if self.economy.ledger().contains(id) {
            // A retried request: applied once, answered with the release time it got then.
            let release_ms = self.economy.ledger().open_pending_transfer(id).map_or(self.now_ms, release_ms);
            return Ok((release_ms, self.take_effects()));
        }
        let release_ms = self.now_ms.saturating_add(self.cfg.unstake_delay_ms);
        let t = Transfer::pending(id, stake_account(&operator), wallet(&operator), amount, codes::UNSTAKE, 0)
            .released_at(release_ms);
        let result = self.order(&[t]);
        self.restake(operator);
        result?;
        Ok((release_ms, self.take_effects()))
    }

    pub fn wallet_view(&self, id: &Id) -> WalletView {
        self.economy.wallet_view(id)
    }

    /// Rescores an operator's nodes after its stake changed (stake buys scheduling priority).
    pub(crate) fn restake(&mut self, operator: Id) {
        let nodes: Vec<Id> = self.registry.iter().filter(|(_, n)| n.operator == operator).map(|(&id, _)| id).collect();
        for id in nodes {
            self.sync_scheduler(id);
        }
    }

    /// The share of the spot-check discount and scheduling priority an operator's stake earns, in [0, 1].
    pub(crate) fn stake_share(&self, operator: &Id) -> f64 {
        let full = self.cfg.stake_for_full_discount_nano.max(1) as f64;
        (self.economy.available_nano(stake_account(operator)) as f64 / full).min(1.0)
    }

    pub fn ledger_totals(&self) -> LedgerTotals {
        self.economy.totals()
    }
}

/// Replays a stored ledger and checks it against the stored balances: what a restarted coordinator and
/// `neurolov ledger audit` both do.
pub fn rebuild_ledger(
    accounts: &[neurolov_ledger::Account],
    transfers: Vec<Transfer>,
) -> Result<Ledger, neurolov_ledger::LedgerError> {
    let ledger = Ledger::replay(accounts, transfers)?;
    for stored in accounts {
        let live = ledger.account(stored.id);
        if live != Some(stored) {
            return Err(neurolov_ledger::LedgerError::Invariant(format!(
                "stored balances of account {} ({}) differ from its transfers",
                stored.id, stored.owner
            )));
        }
    }
    ledger.check_full()?;
    Ok(ledger)
}
