//! Property tests: random sequences of transfers, pending transfers, posts, voids, timeouts, linked chains and
//! duplicate ids, applied both to the ledger and to a deliberately simple model. Balances and outcomes must agree,
//! every invariant must hold after each batch, and replaying the log must give the same accounts.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;

use neurolov_ledger::{
    AccountId, Kind, Ledger, Outcome, TOTAL_SUPPLY_NANO, Transfer, TransferError, TransferId, account_flags,
};
use proptest::prelude::*;

const ACCOUNTS: u128 = 5;

fn acct(i: u128) -> AccountId {
    AccountId(100 + i)
}

#[derive(Clone, Debug, PartialEq)]
enum PState {
    Open,
    Closed,
}

/// A transfer's fields as the caller chose them: (debit, credit, amount, pending id, timeout, flags).
type Fields = (AccountId, AccountId, u64, Option<TransferId>, u64, u16);

/// The model: posted balances, reservations, and which ids were used for what.
#[derive(Clone, Default)]
struct Model {
    balance: HashMap<AccountId, i128>,
    reserved: HashMap<AccountId, i128>,
    /// id → (debit, credit, amount, timeout, state)
    pending: HashMap<TransferId, (AccountId, AccountId, u64, u64, PState)>,
    seen: HashMap<TransferId, Fields>,
}

impl Model {
    fn guarded(&self, a: AccountId) -> bool {
        // Account 0 is the funding account: it may go negative (like the mint); the rest may not.
        a != acct(0)
    }

    fn apply(&mut self, t: &Transfer, now: u64) -> Result<Outcome, ()> {
        let post = t.is(neurolov_ledger::transfer_flags::POST_PENDING);
        let void = t.is(neurolov_ledger::transfer_flags::VOID_PENDING);
        let mut debit = t.debit;
        let mut credit = t.credit;
        if post || void {
            let Some(p) = t.pending_id.and_then(|p| self.pending.get(&p)) else { return Err(()) };
            debit = p.0;
            credit = p.1;
        }
        let key = (debit, credit, t.amount, t.pending_id, t.timeout_ms, t.flags & !1);
        if let Some(prev) = self.seen.get(&t.id) {
            return if *prev == key { Ok(Outcome::AlreadyApplied) } else { Err(()) };
        }
        if debit == credit || !self.balance.contains_key(&debit) || !self.balance.contains_key(&credit) {
            return Err(());
        }
        if post || void {
            let pid = t.pending_id.unwrap();
            let (pd, pc, amount, timeout, state) = self.pending[&pid].clone();
            if state != PState::Open {
                return Err(());
            }
            let posted = if post {
                if (timeout != 0 && now >= timeout) || t.amount == 0 || t.amount > amount {
                    return Err(());
                }
                t.amount
            } else {
                if t.amount != 0 && t.amount != amount {
                    return Err(());
                }
                0
            };
            *self.reserved.get_mut(&pd).unwrap() -= i128::from(amount);
            *self.balance.get_mut(&pd).unwrap() -= i128::from(posted);
            *self.balance.get_mut(&pc).unwrap() += i128::from(posted);
            self.pending.get_mut(&pid).unwrap().4 = PState::Closed;
        } else {
            if t.amount == 0 || (t.timeout_ms != 0 && !t.is(neurolov_ledger::transfer_flags::PENDING)) {
                return Err(());
            }
            let available = self.balance[&debit] - self.reserved[&debit];
            if self.guarded(debit) && available < i128::from(t.amount) {
                return Err(());
            }
            if t.is(neurolov_ledger::transfer_flags::PENDING) {
                *self.reserved.get_mut(&debit).unwrap() += i128::from(t.amount);
                self.pending.insert(t.id, (debit, credit, t.amount, t.timeout_ms, PState::Open));
            } else {
                *self.balance.get_mut(&debit).unwrap() -= i128::from(t.amount);
                *self.balance.get_mut(&credit).unwrap() += i128::from(t.amount);
            }
        }
        self.seen.insert(t.id, key);
        Ok(Outcome::Applied)
    }

    fn expire(&mut self, now: u64) {
        let due: Vec<TransferId> = self
            .pending
            .iter()
            .filter(|(_, p)| p.4 == PState::Open && p.3 != 0 && p.3 <= now)
            .map(|(&id, _)| id)
            .collect();
        for id in due {
            let p = self.pending.get_mut(&id).unwrap();
            p.4 = PState::Closed;
            let (d, amount) = (p.0, p.2);
            *self.reserved.get_mut(&d).unwrap() -= i128::from(amount);
        }
    }
}

#[derive(Clone, Debug)]
enum Op {
    /// kind 0 plain, 1 pending, 2 post, 3 void; `target` picks an earlier id for posts, voids and duplicates.
    Event {
        kind: u8,
        debit: u128,
        credit: u128,
        amount: u64,
        timeout: u64,
        target: usize,
        linked: bool,
    },
    Duplicate {
        target: usize,
    },
    Advance {
        ms: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..4, 0..ACCOUNTS, 0..ACCOUNTS, 0u64..1_200, prop_oneof![Just(0u64), 1u64..50], any::<usize>(), prop::bool::weighted(0.25))
            .prop_map(|(kind, debit, credit, amount, timeout, target, linked)| Op::Event { kind, debit, credit, amount, timeout, target, linked }),
        1 => any::<usize>().prop_map(|target| Op::Duplicate { target }),
        1 => (1u64..30).prop_map(|ms| Op::Advance { ms }),
    ]
}

fn setup() -> (Ledger, Model) {
    let mut ledger = Ledger::new();
    let mut model = Model::default();
    for i in 0..ACCOUNTS {
        let flags = if i == 0 { 0 } else { account_flags::DEBITS_MUST_NOT_EXCEED_CREDITS };
        ledger.create_account(acct(i), Kind::User, flags, &format!("a{i}"), 0).unwrap();
        model.balance.insert(acct(i), 0);
        model.reserved.insert(acct(i), 0);
    }
    (ledger, model)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn ledger_agrees_with_the_model(ops in prop::collection::vec(op(), 1..120)) {
        let (mut ledger, mut model) = setup();
        let mut now = 1u64;
        let mut issued: Vec<Transfer> = Vec::new();
        let mut batch: Vec<Transfer> = Vec::new();
        let mut next_id = 1u128;
        let flush = |ledger: &mut Ledger, model: &mut Model, batch: &mut Vec<Transfer>, issued: &mut Vec<Transfer>, now: u64| {
            if batch.is_empty() { return Ok(()); }
            // The model applies chains all-or-nothing by cloning itself.
            let results = ledger.submit(batch, now);
            let mut expected = Vec::new();
            let mut start = 0;
            while start < batch.len() {
                let end = (start..batch.len()).find(|&i| !batch[i].is(neurolov_ledger::transfer_flags::LINKED));
                let Some(end) = end else {
                    expected.extend(std::iter::repeat_n(Err(()), batch.len() - start));
                    break;
                };
                let before = model.clone();
                let mut chain = Vec::new();
                for t in &batch[start..=end] { chain.push(model.apply(t, now)); }
                if chain.iter().any(|r| r.is_err()) {
                    *model = before;
                    chain = vec![Err(()); end - start + 1];
                }
                expected.extend(chain);
                start = end + 1;
            }
            let got: Vec<Result<Outcome, ()>> = results.iter().map(|r| r.clone().map_err(|_| ())).collect();
            prop_assert_eq!(&got, &expected, "batch {:?}", batch);
            issued.append(batch);
            ledger.check_full().map_err(|e| TestCaseError::fail(e.to_string()))?;
            for i in 0..ACCOUNTS {
                let a = ledger.account(acct(i)).unwrap();
                prop_assert_eq!(a.balance(), model.balance[&acct(i)]);
                prop_assert_eq!(a.debits_pending as i128, model.reserved[&acct(i)]);
            }
            Ok(())
        };
        for op in ops {
            match op {
                Op::Event { kind, debit, credit, amount, timeout, target, linked } => {
                    let id = TransferId(next_id);
                    next_id += 1;
                    let earlier = (!issued.is_empty()).then(|| issued[target % issued.len()].id);
                    let mut t = match kind {
                        0 => Transfer::new(id, acct(debit), acct(credit), amount, 1),
                        1 => Transfer::pending(id, acct(debit), acct(credit), amount, 1, if timeout == 0 { 0 } else { now + timeout }),
                        2 => Transfer::post(id, earlier.unwrap_or(TransferId(999_999)), amount, 1),
                        _ => Transfer::void(id, earlier.unwrap_or(TransferId(999_999)), 1),
                    };
                    // The funding account starts everyone off.
                    if kind == 0 && debit != 0 && amount % 3 == 0 { t.debit = acct(0); }
                    if linked { t = t.linked(); }
                    batch.push(t);
                }
                Op::Duplicate { target } => {
                    if !issued.is_empty() {
                        let mut t = issued[target % issued.len()].clone();
                        t.timestamp_ms = 0;
                        t.flags &= !neurolov_ledger::transfer_flags::LINKED;
                        batch.push(t);
                    }
                }
                Op::Advance { ms } => {
                    flush(&mut ledger, &mut model, &mut batch, &mut issued, now)?;
                    now += ms;
                    ledger.expire(now);
                    model.expire(now);
                    ledger.check_full().map_err(|e| TestCaseError::fail(e.to_string()))?;
                }
            }
            if batch.len() >= 8 && !batch.last().unwrap().is(neurolov_ledger::transfer_flags::LINKED) {
                flush(&mut ledger, &mut model, &mut batch, &mut issued, now)?;
            }
        }
        flush(&mut ledger, &mut model, &mut batch, &mut issued, now)?;
        // The log replays to the same accounts.
        let changes = ledger.take_changes().unwrap();
        let replayed = Ledger::replay(&changes.created, changes.transfers.clone()).unwrap();
        for i in 0..ACCOUNTS {
            prop_assert_eq!(replayed.account(acct(i)), ledger.account(acct(i)));
        }
        replayed.check_full().map_err(|e| TestCaseError::fail(e.to_string()))?;
    }
}

/// One case per error: the ledger refuses it with that error and nothing changes.
#[test]
fn refusals_are_typed_and_change_nothing() {
    let mut ledger = Ledger::with_genesis(1).unwrap();
    let fund = neurolov_ledger::Bucket::EcosystemFund.account();
    let user = AccountId(7);
    ledger.create_account(user, Kind::User, account_flags::DEBITS_MUST_NOT_EXCEED_CREDITS, "u", 1).unwrap();
    assert_eq!(ledger.submit(&[Transfer::new(TransferId(1), fund, user, 100, 2)], 1), vec![Ok(Outcome::Applied)]);
    let hold = Transfer::pending(TransferId(2), user, fund, 60, 2, 50);
    assert_eq!(ledger.submit(&[hold], 1), vec![Ok(Outcome::Applied)]);
    ledger.take_changes().unwrap();
    let check = |ledger: &mut Ledger, t: Transfer, now: u64, want: TransferError| {
        let before: Vec<_> = [fund, user].iter().map(|&a| ledger.account(a).cloned()).collect();
        assert_eq!(ledger.submit(std::slice::from_ref(&t), now), vec![Err(want.clone())], "{t:?}");
        let after: Vec<_> = [fund, user].iter().map(|&a| ledger.account(a).cloned()).collect();
        assert_eq!(before, after, "{want}");
        let changes = ledger.take_changes().unwrap();
        assert!(changes.transfers.is_empty(), "{want}: {:?}", changes.transfers);
        ledger.check_full().unwrap();
    };
    check(
        &mut ledger,
        Transfer::new(TransferId(3), user, fund, 41, 2),
        1,
        TransferError::InsufficientFunds { account: user, available: 40, needed: 41 },
    );
    check(
        &mut ledger,
        Transfer::new(TransferId(3), AccountId(99), fund, 1, 2),
        1,
        TransferError::AccountNotFound(AccountId(99)),
    );
    check(
        &mut ledger,
        Transfer::new(TransferId(1), fund, user, 101, 2),
        1,
        TransferError::ExistsWithDifferentFields(TransferId(1)),
    );
    check(&mut ledger, Transfer::new(TransferId(0), fund, user, 1, 2), 1, TransferError::IdZero);
    check(&mut ledger, Transfer::new(TransferId(3), user, user, 1, 2), 1, TransferError::SameAccount);
    check(&mut ledger, Transfer::new(TransferId(3), fund, user, 0, 2), 1, TransferError::ZeroAmount);
    check(
        &mut ledger,
        Transfer::new(TransferId(3), fund, user, TOTAL_SUPPLY_NANO + 1, 2),
        1,
        TransferError::AmountTooLarge(TOTAL_SUPPLY_NANO + 1),
    );
    check(
        &mut ledger,
        Transfer::new(TransferId(3), neurolov_ledger::Bucket::Team.account(), AccountId::derive(&[b"mint"]), 1, 2),
        1,
        TransferError::ExceedsSupply,
    );
    check(
        &mut ledger,
        Transfer::post(TransferId(3), TransferId(2), 61, 2),
        1,
        TransferError::PostExceedsPending { pending: 60, amount: 61 },
    );
    check(
        &mut ledger,
        Transfer::post(TransferId(3), TransferId(9), 1, 2),
        1,
        TransferError::PendingNotFound(TransferId(9)),
    );
    check(
        &mut ledger,
        Transfer::post(TransferId(3), TransferId(2), 10, 2),
        50,
        TransferError::PendingExpired(TransferId(2)),
    );
    // Linked: the second fails, so the first is undone too.
    let chain =
        [Transfer::new(TransferId(4), fund, user, 5, 2).linked(), Transfer::new(TransferId(5), user, fund, 1_000, 2)];
    let results = ledger.submit(&chain, 1);
    assert_eq!(results[0], Err(TransferError::LinkedEventFailed));
    assert!(matches!(results[1], Err(TransferError::InsufficientFunds { .. })));
    assert_eq!(ledger.account(user).unwrap().balance(), 100);
    assert!(!ledger.contains(TransferId(4)));
    assert_eq!(
        ledger.submit(&[Transfer::new(TransferId(6), fund, user, 5, 2).linked()], 1),
        vec![Err(TransferError::LinkedChainOpen)]
    );
    // Partial post releases the rest; a second post of the same pending is refused.
    assert_eq!(ledger.submit(&[Transfer::post(TransferId(7), TransferId(2), 25, 2)], 2), vec![Ok(Outcome::Applied)]);
    assert_eq!(ledger.account(user).unwrap().available(), 75);
    assert_eq!(ledger.take_changes().unwrap().transfers.len(), 1);
    check(
        &mut ledger,
        Transfer::void(TransferId(8), TransferId(2), 2),
        2,
        TransferError::PendingAlreadyPosted(TransferId(2)),
    );
    // The same transfer again is applied once.
    assert_eq!(
        ledger.submit(&[Transfer::post(TransferId(7), TransferId(2), 25, 2)], 3),
        vec![Ok(Outcome::AlreadyApplied)]
    );
    assert_eq!(ledger.account(user).unwrap().available(), 75);
    ledger.check_full().unwrap();
}

#[test]
fn genesis_fills_the_eight_buckets_once() {
    let mut ledger = Ledger::with_genesis(5).unwrap();
    let sum: i128 = neurolov_ledger::GENESIS.iter().map(|(b, _)| ledger.account(b.account()).unwrap().balance()).sum();
    assert_eq!(sum, i128::from(TOTAL_SUPPLY_NANO));
    assert_eq!(ledger.account(neurolov_ledger::Bucket::Reserves.account()).unwrap().balance(), 110_000_000_000_000_000);
    ledger.genesis(6).unwrap();
    assert_eq!(ledger.circulating(), i128::from(TOTAL_SUPPLY_NANO));
    ledger.check_full().unwrap();
}

#[test]
fn pending_transfers_expire_at_their_timeout() {
    let mut ledger = Ledger::with_genesis(0).unwrap();
    let fund = neurolov_ledger::Bucket::EcosystemFund.account();
    let user = AccountId(7);
    ledger.create_account(user, Kind::User, account_flags::DEBITS_MUST_NOT_EXCEED_CREDITS, "u", 0).unwrap();
    ledger.submit(&[Transfer::pending(TransferId(1), fund, user, 10, 2, 100)], 0);
    assert!(ledger.expire(99).is_empty());
    assert_eq!(ledger.expire(100), vec![TransferId(1)]);
    assert!(!ledger.is_open_pending(TransferId(1)));
    assert_eq!(ledger.account(fund).unwrap().debits_pending, 0);
    assert_eq!(ledger.account(user).unwrap().balance(), 0);
    assert_eq!(
        ledger.submit(&[Transfer::post(TransferId(2), TransferId(1), 10, 2)], 100),
        vec![Err(TransferError::PendingExpired(TransferId(1)))]
    );
    ledger.check_full().unwrap();
}
