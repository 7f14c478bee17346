//! Governance in the core (issue 16): the whitepaper's proposal in Governor Bravo's lifecycle — threshold, delay,
//! snapshot, quorum and majority, timelock, grace — and executions that change the running network (the protocol
//! fee, the scheduler's weights) or move treasury NLOV through the ledger, once. Properties: a tally is the sum of
//! the snapshot power behind the votes cast, and no stake counts twice however it moves during the vote.

#![allow(clippy::unwrap_used)] // A panic is the failure report.

mod common;

use neurolov_core::{
    Action, Config, Core, GovernanceConfig, GovernanceError, ParamChange, ProposalState, Support, treasury,
};
use neurolov_ledger::{NANO_PER_NLOV, TOTAL_SUPPLY_NANO};
use neurolov_protocol::{Id, Keypair};
use proptest::prelude::*;

const NLOV: u64 = NANO_PER_NLOV;
const DELAY: u64 = 1_000;
const PERIOD: u64 = 10_000;
const TIMELOCK: u64 = 5_000;

fn cfg() -> Config {
    Config {
        faucet_grant_nano: 1_000 * NLOV,
        governance: GovernanceConfig {
            proposal_threshold_nano: 100 * NLOV,
            quorum_nano: 300 * NLOV,
            voting_delay_ms: DELAY,
            voting_period_ms: PERIOD,
            timelock_ms: TIMELOCK,
        },
        ..Config::default()
    }
}

fn user(seed: u8) -> Id {
    Keypair::from_seed([seed; 32]).id()
}

/// A core where user n (1..=stakes.len()) has 1,000 NLOV, of which `stakes[n-1]` staked.
fn network(stakes: &[u64]) -> Core {
    let mut core = Core::new(cfg(), 1, 0);
    for (i, stake) in stakes.iter().enumerate() {
        let id = user(i as u8 + 1);
        core.faucet(0, id).unwrap();
        if *stake > 0 {
            core.stake(0, id, *stake, 1).unwrap();
        }
    }
    core
}

#[test]
fn a_proposal_passes_waits_out_the_timelock_and_changes_the_fee() {
    let mut core = network(&[200 * NLOV, 150 * NLOV, 100 * NLOV]);
    assert_eq!(core.config().fee_bps, Config::default().fee_bps);
    let p = core.propose(10, user(1), "lower the fee to 5%", Action::SetParameter(ParamChange::FeeBps(500))).unwrap().0;
    assert_eq!((p.start_ms, p.end_ms), (10 + DELAY, 10 + DELAY + PERIOD));
    assert_eq!(p.state(10), ProposalState::Pending);
    let early = core.cast_vote(20, user(2), p.id, Support::For);
    assert!(matches!(early, Err(GovernanceError::WrongState { .. })), "{early:?}");

    let open = p.start_ms;
    core.cast_vote(open, user(1), p.id, Support::For).unwrap();
    core.cast_vote(open + 1, user(2), p.id, Support::Against).unwrap();
    // Changed until the end: user 2 comes round.
    core.cast_vote(open + 2, user(2), p.id, Support::For).unwrap();
    let tallied = core.cast_vote(open + 3, user(3), p.id, Support::Against).unwrap().0;
    assert_eq!((tallied.for_votes_nano, tallied.against_votes_nano), (350 * NLOV, 100 * NLOV));
    assert!(matches!(core.queue_proposal(open + 4, p.id), Err(GovernanceError::WrongState { .. })), "still active");

    let ended = p.end_ms;
    assert_eq!(core.proposal(p.id).unwrap().state(ended), ProposalState::Succeeded);
    let queued = core.queue_proposal(ended, p.id).unwrap().0;
    assert_eq!(queued.eta_ms, Some(ended + TIMELOCK));
    let soon = core.execute_proposal(ended + 1, p.id);
    assert!(matches!(soon, Err(GovernanceError::TimelockRunning { .. })), "{soon:?}");
    assert_eq!(core.config().fee_bps, Config::default().fee_bps, "nothing changed before the timelock ran");
    core.execute_proposal(ended + TIMELOCK, p.id).unwrap();
    assert_eq!(core.config().fee_bps, 500, "the network's fee changed");
    let twice = core.execute_proposal(ended + TIMELOCK + 1, p.id);
    assert!(matches!(twice, Err(GovernanceError::WrongState { state: "executed", .. })), "{twice:?}");
}

#[test]
fn weights_change_and_treasury_spends_move_nlov_once() {
    let mut core = network(&[400 * NLOV, 0, 0, 0]);
    let weights =
        ParamChange::SchedulerWeights { performance_bps: 6_000, reliability_bps: 2_000, cost_efficiency_bps: 2_000 };
    let p = core.propose(0, user(1), "favour speed", Action::SetParameter(weights)).unwrap().0;
    core.cast_vote(DELAY, user(1), p.id, Support::For).unwrap();
    core.queue_proposal(DELAY + PERIOD, p.id).unwrap();
    core.execute_proposal(DELAY + PERIOD + TIMELOCK, p.id).unwrap();
    let w = &core.config().weights;
    assert_eq!((w.performance(), w.reliability(), w.cost_efficiency()), (0.6, 0.2, 0.2));
    assert_eq!(w.stake_priority(), Config::default().weights.stake_priority(), "stake priority kept");

    let t0 = 100_000;
    let treasury_before = core.ledger().account(treasury()).unwrap().balance();
    let grant = Action::TreasurySpend { to: user(4), amount_nano: 10 * NLOV };
    let p = core.propose(t0, user(1), "a grant", grant).unwrap().0;
    core.cast_vote(t0 + DELAY, user(1), p.id, Support::For).unwrap();
    core.queue_proposal(t0 + DELAY + PERIOD, p.id).unwrap();
    core.execute_proposal(t0 + DELAY + PERIOD + TIMELOCK, p.id).unwrap();
    assert!(core.execute_proposal(t0 + DELAY + PERIOD + TIMELOCK + 1, p.id).is_err(), "executed once");
    assert_eq!(core.wallet_view(&user(4)).balance_nano, 1_010 * NLOV);
    assert_eq!(core.ledger().account(treasury()).unwrap().balance(), treasury_before - i128::from(10 * NLOV));
    core.ledger().check_full().unwrap();
    assert_eq!(core.ledger().circulating(), i128::from(TOTAL_SUPPLY_NANO));
}

#[test]
fn what_governance_refuses() {
    let mut core = network(&[200 * NLOV, 50 * NLOV]);
    let check = |r: Result<_, GovernanceError>, want: fn(&GovernanceError) -> bool| match r {
        Err(e) => assert!(want(&e), "{e}"),
        Ok(p) => panic!("accepted: {p:?}"),
    };
    let fee = |bps| Action::SetParameter(ParamChange::FeeBps(bps));
    check(core.propose(0, user(2), "x", fee(100)), |e| matches!(e, GovernanceError::BelowThreshold { .. }));
    check(core.propose(0, user(1), "x", fee(5_000)), |e| matches!(e, GovernanceError::OutOfRange(_)));
    let bad_weights =
        ParamChange::SchedulerWeights { performance_bps: 5_000, reliability_bps: 5_000, cost_efficiency_bps: 1 };
    check(core.propose(0, user(1), "x", Action::SetParameter(bad_weights)), |e| {
        matches!(e, GovernanceError::OutOfRange(_))
    });
    // Governance cannot vote its own safeguards away.
    let no_timelock = GovernanceConfig { timelock_ms: 0, ..GovernanceConfig::default() };
    check(core.propose(0, user(1), "x", Action::SetParameter(ParamChange::Governance(no_timelock))), |e| {
        matches!(e, GovernanceError::OutOfRange(_))
    });
    check(core.propose(0, user(1), &"x".repeat(5_000), Action::Text), |e| *e == GovernanceError::DescriptionTooLong);
    // The other parameters' ranges, both sides.
    for (ok, change) in [
        (true, ParamChange::RerunBudgetBps(5_000)),
        (false, ParamChange::RerunBudgetBps(10_001)),
        (true, ParamChange::MaxRoyaltyBps(1_000)),
        (false, ParamChange::MaxRoyaltyBps(5_001)),
        (true, ParamChange::HeartbeatIntervalMs(10_000)),
        (false, ParamChange::HeartbeatIntervalMs(1_000)),
        (false, ParamChange::SlashBps(0)),
        (false, ParamChange::StakePriorityBps(10_001)),
        (false, ParamChange::FaucetGrantNano(10_001 * NLOV)),
        (
            false,
            ParamChange::WithdrawalLimits { fee_nano: 0, min_nano: 10 * NLOV, max_nano: NLOV, daily_max_nano: NLOV },
        ),
    ] {
        assert_eq!(change.validate().is_ok(), ok, "{change:?}");
    }
    // Verification cannot be voted off: the spot-check floor stays at 5% or more, canaries on.
    for off in [ParamChange::SpotCheckFloorBps(0), ParamChange::CanaryRateBps(0)] {
        check(core.propose(0, user(1), "x", Action::SetParameter(off)), |e| {
            matches!(e, GovernanceError::OutOfRange(_))
        });
    }
    let p = core.propose(0, user(1), "a signal", Action::Text).unwrap().0;
    check(core.propose(1, user(1), "another", Action::Text), |e| *e == GovernanceError::OneAtATime);
    // No snapshot power: user 3 holds nothing staked.
    core.faucet(0, user(3)).unwrap();
    check(core.cast_vote(DELAY, user(3), p.id, Support::For), |e| *e == GovernanceError::NoVotingPower);
    check(core.cast_vote(DELAY, user(1), 99, Support::For), |e| *e == GovernanceError::Unknown(99));
    // Only the proposer cancels while they back it.
    check(core.cancel_proposal(DELAY, user(2), p.id), |e| *e == GovernanceError::NotYours);
    core.cancel_proposal(DELAY, user(1), p.id).unwrap();
    assert_eq!(core.proposal(p.id).unwrap().state(DELAY), ProposalState::Cancelled);
    check(core.cast_vote(DELAY + 1, user(1), p.id, Support::For), |e| matches!(e, GovernanceError::WrongState { .. }));
}

#[test]
fn defeated_without_quorum_or_majority_expired_past_grace_and_cancelled_by_anyone_once_unbacked() {
    let mut core = network(&[200 * NLOV, 250 * NLOV, 100 * NLOV]);
    // Quorum is 300 NLOV for: 200 is short.
    let p = core.propose(0, user(1), "short of quorum", Action::Text).unwrap().0;
    core.cast_vote(DELAY, user(1), p.id, Support::For).unwrap();
    assert_eq!(core.proposal(p.id).unwrap().state(DELAY + PERIOD), ProposalState::Defeated);
    assert!(core.queue_proposal(DELAY + PERIOD, p.id).is_err());
    // A majority against.
    let t = 50_000;
    let p = core.propose(t, user(2), "opposed", Action::Text).unwrap().0;
    core.cast_vote(t + DELAY, user(1), p.id, Support::For).unwrap();
    core.cast_vote(t + DELAY, user(3), p.id, Support::For).unwrap();
    core.cast_vote(t + DELAY, user(2), p.id, Support::Against).unwrap();
    assert_eq!(core.proposal(p.id).unwrap().for_votes_nano, 300 * NLOV);
    assert_eq!(
        core.proposal(p.id).unwrap().state(t + DELAY + PERIOD),
        ProposalState::Succeeded,
        "300 for, 250 against"
    );
    core.queue_proposal(t + DELAY + PERIOD, p.id).unwrap();
    let late = t + DELAY + PERIOD + TIMELOCK + neurolov_core::GRACE_PERIOD_MS;
    assert_eq!(core.proposal(p.id).unwrap().state(late), ProposalState::Expired);
    assert!(core.execute_proposal(late, p.id).is_err(), "an expired proposal never executes");
    // The proposer unstakes below the threshold: anyone may cancel what they no longer back.
    let t = 10_000_000;
    let p = core.propose(t, user(3), "unbacked", Action::Text).unwrap().0;
    core.unstake(t + 1, user(3), 50 * NLOV, 9).unwrap();
    core.cancel_proposal(t + 2, user(1), p.id).unwrap();
}

/// A coordinator stopped between queue and execute: restarted past the timelock, its tick executes the proposal
/// once; restarted again, the executed change is in force and nothing executes twice (the grant is paid once).
#[test]
fn a_restart_between_queue_and_execute_executes_once() {
    use common::{Db, Store};
    let (mut core, effects) = Core::restore(cfg(), 1, 0, Default::default(), &Store::default());
    let mut db = Db::default();
    db.absorb(&effects);
    db.absorb(&core.faucet(0, user(1)).unwrap().1);
    db.absorb(&core.stake(0, user(1), 400 * NLOV, 1).unwrap());
    let fee = core.propose(0, user(1), "fee 5%", Action::SetParameter(ParamChange::FeeBps(500))).unwrap();
    db.absorb(&fee.1);
    db.absorb(&core.cast_vote(DELAY, user(1), fee.0.id, Support::For).unwrap().1);
    db.absorb(&core.queue_proposal(DELAY + PERIOD, fee.0.id).unwrap().1);
    let eta = DELAY + PERIOD + TIMELOCK;
    let treasury_before = core.ledger().account(treasury()).unwrap().balance();

    let (mut core, effects) = Core::restore(cfg(), 2, eta, db.restored(), &Store::default());
    db.absorb(&effects);
    assert_eq!(core.config().fee_bps, Config::default().fee_bps, "not executed before the tick");
    assert_eq!(core.proposal(fee.0.id).unwrap().state(eta), ProposalState::Queued);
    db.absorb(&core.tick(eta));
    assert_eq!(core.config().fee_bps, 500, "the tick executed it");
    let executed_ms = core.proposal(fee.0.id).unwrap().executed_ms;
    assert_eq!(executed_ms, Some(eta));
    // A grant made the same way, then two restarts: paid once.
    let t = eta + 1;
    let grant = Action::TreasurySpend { to: user(5), amount_nano: 7 * NLOV };
    db.absorb(&core.propose(t, user(1), "grant", grant).unwrap().1);
    db.absorb(&core.cast_vote(t + DELAY, user(1), 2, Support::For).unwrap().1);
    db.absorb(&core.queue_proposal(t + DELAY + PERIOD, 2).unwrap().1);
    db.absorb(&core.tick(t + DELAY + PERIOD + TIMELOCK));
    for seed in [3, 4] {
        let (mut core, effects) =
            Core::restore(cfg(), seed, t + 2 * (DELAY + PERIOD + TIMELOCK), db.restored(), &Store::default());
        db.absorb(&effects);
        db.absorb(&core.tick(t + 2 * (DELAY + PERIOD + TIMELOCK)));
        assert_eq!(core.config().fee_bps, 500, "the executed change is in force after a restart");
        assert_eq!(core.proposal(fee.0.id).unwrap().executed_ms, executed_ms, "not executed again");
        assert_eq!(core.wallet_view(&user(5)).balance_nano, 7 * NLOV, "the grant paid once");
        assert_eq!(core.ledger().account(treasury()).unwrap().balance(), treasury_before - i128::from(7 * NLOV));
        core.ledger().check_full().unwrap();
    }
}

/// What happens while a proposal is open: votes, and stake moving (staking, unstaking, transfers of the freed NLOV).
#[derive(Clone, Debug)]
enum Op {
    Vote { voter: u8, support: u8 },
    Stake { who: u8, amount: u64 },
    Unstake { who: u8, amount: u64 },
    Transfer { from: u8, to: u8, amount: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (1u8..7, 0u8..3).prop_map(|(voter, support)| Op::Vote { voter, support }),
        (1u8..7, 1u64..300).prop_map(|(who, amount)| Op::Stake { who, amount: amount * NLOV }),
        (1u8..7, 1u64..300).prop_map(|(who, amount)| Op::Unstake { who, amount: amount * NLOV }),
        (1u8..7, 1u8..7, 1u64..300).prop_map(|(from, to, amount)| Op::Transfer { from, to, amount: amount * NLOV }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// However stake moves once the vote is open, each account's power is what it had at the snapshot, it counts
    /// once (its latest vote), and each tally is exactly the sum of the snapshot power behind the votes for it.
    #[test]
    fn tallies_are_snapshot_power_and_no_stake_counts_twice(
        stakes in prop::collection::vec(0u64..400, 6),
        ops in prop::collection::vec(op(), 1..60),
    ) {
        let stakes: Vec<u64> = stakes.iter().map(|s| s * NLOV).collect();
        let mut core = network(&stakes);
        core.stake(0, user(1), 100 * NLOV, 2).unwrap(); // the proposer has the threshold
        let p = core.propose(0, user(1), "a signal", Action::Text).unwrap().0;
        let snapshot: Vec<u64> = (1..=6u8).map(|i| {
            let v = core.wallet_view(&user(i));
            v.staked_nano - v.unstaking_nano
        }).collect();
        let mut latest: std::collections::BTreeMap<u8, u8> = Default::default();
        core.tick(DELAY); // the vote opens: the snapshot is taken
        for (i, op) in ops.into_iter().enumerate() {
            let now = DELAY + 1 + i as u64;
            match op {
                Op::Vote { voter, support } => {
                    let s = [Support::Against, Support::For, Support::Abstain][support as usize];
                    if core.cast_vote(now, user(voter), p.id, s).is_ok() {
                        latest.insert(voter, support);
                    } else {
                        prop_assert_eq!(snapshot[voter as usize - 1], 0, "refused only without snapshot power");
                    }
                }
                Op::Stake { who, amount } => { let _ = core.stake(now, user(who), amount, 1_000 + i as u128); }
                Op::Unstake { who, amount } => { let _ = core.unstake(now, user(who), amount, 1_000 + i as u128); }
                Op::Transfer { from, to, amount } => {
                    let _ = core.transfer(now, user(from), user(to), amount, 1_000 + i as u128);
                }
            }
            core.tick(now);
            for voter in 1..=6u8 {
                prop_assert_eq!(core.voting_power(p.id, &user(voter)), snapshot[voter as usize - 1]);
            }
        }
        let mut want = [0u64; 3];
        for (voter, support) in &latest {
            want[*support as usize] += snapshot[*voter as usize - 1];
        }
        let p = core.proposal(p.id).unwrap();
        prop_assert_eq!([p.against_votes_nano, p.for_votes_nano, p.abstain_votes_nano], want);
        prop_assert!(want.iter().sum::<u64>() <= snapshot.iter().sum::<u64>());
    }
}
