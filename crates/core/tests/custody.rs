//! NLOV on chains, the core's half (issue 14): deposits credited once, withdrawals held before anything is signed,
//! never signed twice, posted only once confirmed, refunded only when they provably failed; limits; the book and the
//! holds after a restart; and, whatever order the chain reports come in, a constant supply and an `Outside` balance
//! that is exactly what left minus what came back.

#![allow(clippy::unwrap_used)] // A panic is the failure report.

mod common;

use common::{Db, Store};
use neurolov_core::{Config, Core, CustodyError, WithdrawalState, outside};
use neurolov_ledger::{NANO_PER_NLOV, TOTAL_SUPPLY_NANO, codes};
use neurolov_protocol::chain::Chain;
use neurolov_protocol::{Id, Keypair};
use proptest::prelude::*;

const NLOV: u64 = NANO_PER_NLOV;

/// Without a withdrawal fee: the tests of holds, states and limits count whole NLOV. The fee has tests of its own.
fn cfg() -> Config {
    Config { withdraw_fee_nano: 0, ..fee_cfg(0) }
}

fn fee_cfg(fee_nano: u64) -> Config {
    Config {
        faucet_grant_nano: 1_000 * NLOV,
        withdraw_max_nano: 300 * NLOV,
        withdraw_daily_max_nano: 500 * NLOV,
        withdraw_fee_nano: fee_nano,
        ..Config::default()
    }
}

fn user(seed: u8) -> Id {
    Keypair::from_seed([seed; 32]).id()
}

/// A core whose account `user(1)` has 1,000 NLOV, with every record kept in a `Db`.
fn funded() -> (Core, Db) {
    funded_with(cfg())
}

fn funded_with(cfg: Config) -> (Core, Db) {
    // Started as the shell starts a new network: genesis is among the effects, so the `Db` can restore it.
    let (mut core, effects) = Core::restore(cfg, 1, 0, Default::default(), &Store::default());
    let mut db = Db::default();
    db.absorb(&effects);
    let (_, effects) = core.faucet(0, user(1)).unwrap();
    db.absorb(&effects);
    (core, db)
}

fn balance(core: &Core, id: &Id) -> u64 {
    core.wallet_view(id).balance_nano
}

#[test]
fn a_withdrawal_holds_first_posts_only_when_confirmed_and_is_never_signed_twice() {
    let (mut core, mut db) = funded();
    let (w, effects) = core.withdraw(10, user(1), Chain::Solana, "Dest1111", 200 * NLOV, 1).unwrap();
    db.absorb(&effects);
    assert_eq!(w.state, WithdrawalState::Requested);
    assert_eq!(core.wallet_view(&user(1)).pending_nano, 200 * NLOV, "held before anything is signed");
    assert!(db.withdrawals.contains_key(&w.id), "the record is written with the hold");
    // Asking again with the same client id is the same withdrawal, not a second one.
    let (again, _) = core.withdraw(11, user(1), Chain::Solana, "Dest1111", 200 * NLOV, 1).unwrap();
    assert_eq!(again.id, w.id);
    assert_eq!(core.wallet_view(&user(1)).pending_nano, 200 * NLOV);

    // Confirmed before it was signed: refused. Signed once; a second signature refused.
    assert!(matches!(core.withdrawal_confirmed(12, w.id), Err(CustodyError::WrongState { .. })));
    db.absorb(&core.withdrawal_signed(13, w.id, "sig-1", vec![1, 2, 3], 99).unwrap());
    let second = core.withdrawal_signed(14, w.id, "sig-2", vec![4, 5, 6], 120);
    assert!(matches!(second, Err(CustodyError::WrongState { .. })), "{second:?}");
    assert!(matches!(&db.withdrawals[&w.id].state, WithdrawalState::Signed { tx_id, .. } if tx_id == "sig-1"));

    db.absorb(&core.withdrawal_confirmed(15, w.id).unwrap());
    assert_eq!(balance(&core, &user(1)), 800 * NLOV);
    assert_eq!(core.outside_nano(Chain::Solana), 200 * NLOV);
    // Nothing moves it again: not a second confirmation, not a failure after the fact.
    assert!(core.withdrawal_confirmed(16, w.id).is_err());
    assert!(core.withdrawal_failed(17, w.id, "late").is_err());
    assert_eq!(balance(&core, &user(1)), 800 * NLOV);
    core.ledger().check_full().unwrap();
    assert_eq!(core.ledger().circulating(), i128::from(TOTAL_SUPPLY_NANO));
}

#[test]
fn a_failed_withdrawal_is_refunded_and_a_deposit_is_credited_once() {
    let (mut core, _) = funded();
    let (w, _) = core.withdraw(10, user(1), Chain::Ton, "EQDest", 100 * NLOV, 7).unwrap();
    core.withdrawal_signed(11, w.id, "hash-1", vec![9; 40], 50).unwrap();
    core.withdrawal_failed(60, w.id, "expired and not on chain").unwrap();
    assert_eq!(balance(&core, &user(1)), 1_000 * NLOV);
    assert_eq!(core.wallet_view(&user(1)).pending_nano, 0);
    assert_eq!(core.outside_nano(Chain::Ton), 0);

    // Nothing went out to TON that stayed there: a deposit "from" TON cannot be credited (it would create NLOV).
    let forged = core.deposit(70, Chain::Ton, "tx-forged", user(2), 5 * NLOV);
    assert!(forged.is_err(), "{forged:?}");
    assert_eq!(balance(&core, &user(2)), 0);

    // Out to Solana and back to another account: credited once however often the chain reports it.
    let (w, _) = core.withdraw(80, user(1), Chain::Solana, "Dest", 150 * NLOV, 8).unwrap();
    core.withdrawal_signed(81, w.id, "sig", vec![1], 99).unwrap();
    core.withdrawal_confirmed(82, w.id).unwrap();
    let (first, _) = core.deposit(90, Chain::Solana, "sig-in", user(2), 40 * NLOV).unwrap();
    let (second, _) = core.deposit(91, Chain::Solana, "sig-in", user(2), 40 * NLOV).unwrap();
    assert_eq!(first, neurolov_ledger::Outcome::Applied);
    assert_ne!(second, neurolov_ledger::Outcome::Applied);
    assert_eq!(balance(&core, &user(2)), 40 * NLOV);
    assert_eq!(core.outside_nano(Chain::Solana), 110 * NLOV);
    core.ledger().check_full().unwrap();
}

#[test]
fn limits_and_bad_input_are_typed_errors_that_hold_nothing() {
    let (mut core, _) = funded();
    let check = |r: Result<_, CustodyError>, want: fn(&CustodyError) -> bool| match r {
        Err(e) => assert!(want(&e), "{e}"),
        Ok(_) => panic!("accepted"),
    };
    check(core.withdraw(1, user(1), Chain::Solana, "D", 0, 1), |e| matches!(e, CustodyError::ZeroAmount));
    // Dust to fresh addresses would make the custody pay a token account's rent each time: refused.
    check(core.withdraw(1, user(1), Chain::Solana, "D", NLOV - 1, 5), |e| {
        matches!(e, CustodyError::UnderMinimum { .. })
    });
    check(core.withdraw(1, user(1), Chain::Solana, "D", 301 * NLOV, 2), |e| {
        matches!(e, CustodyError::OverWithdrawalLimit { .. })
    });
    let long = "x".repeat(129);
    check(core.withdraw(1, user(1), Chain::Solana, &long, NLOV, 3), |e| matches!(e, CustodyError::TooLong { .. }));
    check(core.withdraw(1, user(1), Chain::Solana, "D", 2_000 * NLOV, 4), |e| {
        matches!(e, CustodyError::OverWithdrawalLimit { .. })
    });
    // More than the wallet holds: the ledger refuses, nothing is recorded.
    let (mut poor, _) = (Core::new(cfg(), 2, 0), ());
    check(poor.withdraw(1, user(3), Chain::Solana, "D", NLOV, 1), |e| matches!(e, CustodyError::Ledger(_)));
    assert!(poor.open_withdrawals().is_empty());
    // The daily limit counts what is held or gone, not what failed; it frees up after 24 hours.
    let (a, _) = core.withdraw(10, user(1), Chain::Solana, "D", 300 * NLOV, 10).unwrap();
    core.withdraw(11, user(1), Chain::Solana, "D", 200 * NLOV, 11).unwrap();
    check(core.withdraw(12, user(1), Chain::Solana, "D", NLOV, 12), |e| {
        matches!(e, CustodyError::OverDailyLimit { left_nano: 0 })
    });
    core.withdrawal_failed(13, a.id, "could not sign").unwrap();
    core.withdraw(14, user(1), Chain::Solana, "D", 100 * NLOV, 13).unwrap();
    let tomorrow = 15 + neurolov_core::WITHDRAW_WINDOW_MS;
    let (late, _) = core.withdraw(tomorrow, user(1), Chain::Solana, "D", 200 * NLOV, 14).unwrap();
    assert_eq!(late.amount_nano, 200 * NLOV);
    let tx_too_big = core.withdrawal_signed(tomorrow, late.id, "sig", vec![0; 5_000], 1);
    assert!(matches!(tx_too_big, Err(CustodyError::TooLong { .. })));
    let long_tx = core.deposit(1, Chain::Solana, &"t".repeat(200), user(1), 1);
    assert!(matches!(long_tx, Err(CustodyError::TooLong { .. })), "{long_tx:?}");
    core.ledger().check_full().unwrap();
}

#[test]
fn after_a_restart_a_signed_withdrawal_still_holds_its_nlov_and_can_only_be_finished() {
    let (mut core, mut db) = funded();
    let (signed, effects) = core.withdraw(10, user(1), Chain::Solana, "Dest", 100 * NLOV, 1).unwrap();
    db.absorb(&effects);
    db.absorb(&core.withdrawal_signed(11, signed.id, "sig-a", vec![7; 100], 500).unwrap());
    let (requested, effects) = core.withdraw(12, user(1), Chain::Ton, "EQ", 50 * NLOV, 2).unwrap();
    db.absorb(&effects);

    let store = Store::default();
    let (mut core, effects) = Core::restore(cfg(), 2, 1_000, db.restored(), &store);
    db.absorb(&effects);
    let open = core.open_withdrawals();
    assert_eq!(open.iter().map(|w| w.id).collect::<Vec<_>>(), [signed.id, requested.id]);
    assert!(matches!(&open[0].state, WithdrawalState::Signed { signed_tx, .. } if signed_tx == &vec![7; 100]));
    assert_eq!(core.wallet_view(&user(1)).pending_nano, 150 * NLOV, "the holds survive the restart");
    assert!(core.withdrawal_signed(1_001, signed.id, "sig-b", vec![1], 900).is_err(), "never signed again");
    core.withdrawal_confirmed(1_002, signed.id).unwrap();
    core.withdrawal_failed(1_003, requested.id, "never sent").unwrap();
    assert_eq!(balance(&core, &user(1)), 900 * NLOV);
    core.ledger().check_full().unwrap();
}

#[test]
fn a_withdrawal_hold_without_its_record_is_released_at_restart() {
    let (mut core, mut db) = funded();
    let (w, effects) = core.withdraw(10, user(1), Chain::Solana, "Dest", 100 * NLOV, 1).unwrap();
    db.absorb(&effects);
    db.withdrawals.remove(&w.id);
    let (core, _) = Core::restore(cfg(), 2, 1_000, db.restored(), &Store::default());
    assert_eq!(core.wallet_view(&user(1)).pending_nano, 0);
    assert_eq!(balance(&core, &user(1)), 1_000 * NLOV);
    assert!(core.ledger().open_pending_transfer(w.id).is_none());
    assert!(!core.ledger().is_open_pending(w.id));
    assert!(core.ledger().open_pending().all(|t| t.code != codes::WITHDRAW));
}

/// The attack a fee stops: withdraw to a fresh address, deposit back, repeat. Each round costs the custody a chain
/// fee (and on Solana a token account's rent, which the recipient reclaims by closing it); without a fee it costs
/// the sender nothing, so a sender could drain the custody's SOL or TON for free. With it, every landed withdrawal
/// pays the treasury, refunded only when the withdrawal itself fails.
#[test]
fn a_withdrawal_pays_its_fee_when_it_lands_so_round_trips_cost_the_sender() {
    const FEE: u64 = 2 * NLOV;
    let (mut core, mut db) = funded_with(fee_cfg(FEE));
    let treasury = |core: &Core| core.ledger().account(neurolov_core::treasury()).map_or(0, |a| a.balance());
    let treasury_before = treasury(&core);
    let mut rounds = 0;
    for round in 0..5u8 {
        let (w, effects) = core.withdraw(10, user(1), Chain::Solana, "Fresh", 10 * NLOV, u128::from(round)).unwrap();
        db.absorb(&effects);
        assert_eq!(w.fee_nano, FEE);
        assert_eq!(core.wallet_view(&user(1)).pending_nano, 10 * NLOV + FEE, "the fee is held with the amount");
        db.absorb(&core.withdrawal_signed(11, w.id, &format!("sig{round}"), vec![1], 99).unwrap());
        db.absorb(&core.withdrawal_confirmed(12, w.id).unwrap());
        let (_, effects) = core.deposit(13, Chain::Solana, &format!("back{round}"), user(1), 10 * NLOV).unwrap();
        db.absorb(&effects);
        rounds += 1;
    }
    assert_eq!(balance(&core, &user(1)), 1_000 * NLOV - rounds * FEE, "each round trip cost its fee");
    assert_eq!(treasury(&core) - treasury_before, i128::from(rounds * FEE));
    assert_eq!(core.outside_nano(Chain::Solana), 0, "the fee never leaves the ledger");

    // A failed withdrawal refunds its fee too.
    let (w, _) = core.withdraw(20, user(1), Chain::Ton, "EQ", 100 * NLOV, 99).unwrap();
    core.withdrawal_failed(21, w.id, "expired").unwrap();
    assert_eq!(balance(&core, &user(1)), 1_000 * NLOV - rounds * FEE);
    let all = balance(&core, &user(1));

    // A signed withdrawal's fee hold survives a restart and is paid once it lands; a lost record releases both holds.
    let (signed, effects) = core.withdraw(30, user(1), Chain::Solana, "D", 50 * NLOV, 100).unwrap();
    db.absorb(&effects);
    db.absorb(&core.withdrawal_signed(31, signed.id, "sig-r", vec![2], 99).unwrap());
    let (lost, effects) = core.withdraw(32, user(1), Chain::Solana, "D", 20 * NLOV, 101).unwrap();
    db.absorb(&effects);
    db.withdrawals.remove(&lost.id);
    let (mut core, _) = Core::restore(fee_cfg(FEE), 2, 1_000, db.restored(), &Store::default());
    assert_eq!(core.wallet_view(&user(1)).pending_nano, 50 * NLOV + FEE);
    assert!(!core.ledger().is_open_pending(neurolov_core::fee_hold(lost.id)));
    core.withdrawal_confirmed(1_001, signed.id).unwrap();
    assert_eq!(balance(&core, &user(1)), all - 50 * NLOV - FEE);

    // A withdrawal the wallet cannot pay together with its fee is refused, holding nothing.
    let left = 100 * NLOV;
    core.transfer(1_002, user(1), user(2), all - 50 * NLOV - FEE - left, 7).unwrap();
    let refused = core.withdraw(1_003, user(1), Chain::Solana, "D", left - FEE + 1, 102);
    assert!(matches!(refused, Err(CustodyError::Ledger(_))), "{refused:?}");
    assert_eq!(core.wallet_view(&user(1)).pending_nano, 0);
    assert!(core.check_withdrawal(1_003, &user(1), "D", left - FEE).is_ok());
    core.ledger().check_full().unwrap();
    assert_eq!(core.ledger().circulating(), i128::from(TOTAL_SUPPLY_NANO));
}

/// One report from a chain adapter or one request, on withdrawal `n` (by index among those made so far).
#[derive(Clone, Debug)]
enum Op {
    Withdraw { chain: u8, amount: u64 },
    Sign(usize),
    Confirm(usize),
    Fail(usize),
    Deposit { chain: u8, tx: u8, amount: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..2, 1u64..400).prop_map(|(chain, amount)| Op::Withdraw { chain, amount: amount * NLOV }),
        (0usize..8).prop_map(Op::Sign),
        (0usize..8).prop_map(Op::Confirm),
        (0usize..8).prop_map(Op::Fail),
        (0u8..2, 0u8..6, 1u64..300).prop_map(|(chain, tx, amount)| Op::Deposit { chain, tx, amount: amount * NLOV }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever the reports and in whatever order: the supply is constant, the ledger's invariants hold, each chain's
    /// `Outside` is what was confirmed out minus what was credited in, and no withdrawal is both paid and refunded.
    #[test]
    fn custody_keeps_the_supply_and_the_books_whatever_the_chains_report(
        ops in prop::collection::vec(op(), 1..40),
        fee in prop_oneof![Just(0u64), Just(NLOV / 2), Just(3 * NLOV)],
    ) {
        let (mut core, _) = funded_with(fee_cfg(fee));
        let mut paid = 0u64;
        let mut made = Vec::new();
        let mut out = [0u64; 2];
        let mut deposited = std::collections::HashSet::new();
        for (i, op) in ops.into_iter().enumerate() {
            let now = 10 + i as u64;
            let chain = |c: u8| if c == 0 { Chain::Solana } else { Chain::Ton };
            match op {
                Op::Withdraw { chain: c, amount } => {
                    if let Ok((w, _)) = core.withdraw(now, user(1), chain(c), "D", amount, i as u128) {
                        made.push(w.id);
                    }
                }
                Op::Sign(n) => if let Some(&id) = made.get(n) { let _ = core.withdrawal_signed(now, id, "s", vec![1], 9); },
                Op::Confirm(n) => if let Some(&id) = made.get(n) {
                    let w = core.withdrawal(id).cloned().unwrap();
                    if core.withdrawal_confirmed(now, id).is_ok() {
                        out[w.chain.number() as usize] += w.amount_nano;
                        paid += w.amount_nano + w.fee_nano;
                    }
                },
                Op::Fail(n) => if let Some(&id) = made.get(n) { let _ = core.withdrawal_failed(now, id, "x"); },
                Op::Deposit { chain: c, tx, amount } => {
                    let applied = core.deposit(now, chain(c), &format!("tx{tx}"), user(2), amount);
                    if matches!(applied, Ok((neurolov_ledger::Outcome::Applied, _))) {
                        prop_assert!(deposited.insert((c, tx)), "a chain transaction credited twice");
                        out[c as usize] = out[c as usize].checked_sub(amount).expect("credited more than went out");
                    }
                }
            }
            core.ledger().check_full().unwrap();
            prop_assert_eq!(core.ledger().circulating(), i128::from(TOTAL_SUPPLY_NANO));
        }
        prop_assert_eq!(core.outside_nano(Chain::Solana), out[0]);
        prop_assert_eq!(core.outside_nano(Chain::Ton), out[1]);
        let held: u64 = core.open_withdrawals().iter().map(|w| w.amount_nano + w.fee_nano).sum();
        prop_assert_eq!(core.wallet_view(&user(1)).pending_nano, held);
        // Whatever landed cost its amount and its fee, nothing else: failures refunded both.
        prop_assert_eq!(balance(&core, &user(1)), 1_000 * NLOV - paid);
        prop_assert_eq!(core.ledger().account(outside(Chain::Solana)).map_or(0, |a| a.debits_pending), 0);
    }
}
