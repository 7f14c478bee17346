//! DAO governance (issue 16), the core's owner of proposals: the whitepaper's contract (§6.1: `id, proposer,
//! description, forVotes, againstVotes, startBlock, endBlock, executed`, `votingPower`, `createProposal` above
//! `PROPOSAL_THRESHOLD`, `vote`) in the shape of Compound's Governor Bravo:
//! pending → active (after the voting delay) → succeeded | defeated (at the end: quorum of votes for, and more for
//! than against) → queued (timelock) → executed, or cancelled, or expired (not executed within the grace period).
//!
//! Voting power is staked NLOV, snapshotted when the proposal becomes active: stake moved, added or withdrawn after
//! that changes nothing, so neither flash-staking nor voting twice through transfers works. A vote (for, against,
//! abstain) is one per account and can be changed until the end; tallies are always the sum of the snapshot power
//! behind the votes cast. Executing a proposal changes the running network: a parameter of [`Config`] (each typed,
//! with a range checked when the proposal is made and again when it executes), or a treasury spend through the
//! ledger, or nothing (a text signal).

use std::collections::BTreeMap;

use neurolov_ledger::{Kind, Transfer, TransferId, codes};
use neurolov_protocol::Id;

use crate::economy::wallet;
use crate::{Config, Core, Effect, Record};

/// Most proposals not yet finished (pending, active, succeeded, queued) at once.
pub const MAX_OPEN_PROPOSALS: usize = 64;
/// Most proposals kept in all (the oldest finished ones are forgotten first).
pub const MAX_PROPOSALS: usize = 10_000;
/// Longest description.
pub const MAX_DESCRIPTION_BYTES: usize = 4096;
/// How long a queued proposal may wait past its timelock before it can no longer be executed (Bravo's grace period).
pub const GRACE_PERIOD_MS: u64 = 14 * DAY_MS;
const DAY_MS: u64 = 24 * 3_600_000;
/// The floors a proposal cannot take governance's own parameters below: a captured DAO could otherwise vote its
/// timelock and voting period away and pass anything within minutes.
pub const MIN_VOTING_DELAY_MS: u64 = 60_000;
pub const MIN_VOTING_PERIOD_MS: u64 = 3_600_000;
pub const MIN_TIMELOCK_MS: u64 = 3_600_000;
pub const MIN_QUORUM_NANO: u64 = neurolov_ledger::NANO_PER_NLOV;
pub const MIN_PROPOSAL_THRESHOLD_NANO: u64 = neurolov_ledger::NANO_PER_NLOV;

/// Governance's own parameters (themselves governable, above the floors).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GovernanceConfig {
    /// Stake a proposer needs (the whitepaper's `PROPOSAL_THRESHOLD`). Default 100,000 NLOV (0.02% of the supply):
    /// enough that proposals are not spam, low enough for a serious operator.
    pub proposal_threshold_nano: u64,
    /// Votes for a proposal needs to pass. Default 5,000,000 NLOV (1% of the supply; Compound asks 4% of its supply,
    /// but only staked NLOV votes here, a smaller base).
    pub quorum_nano: u64,
    /// Between a proposal and its vote (its snapshot): time to read it and to stake. Default 1 day.
    pub voting_delay_ms: u64,
    /// How long the vote lasts. Default 3 days (Compound's is about 3).
    pub voting_period_ms: u64,
    /// Between passing and executing: time for anyone who disagrees to leave. Default 2 days (Compound's).
    pub timelock_ms: u64,
}

impl Default for GovernanceConfig {
    fn default() -> Self {
        GovernanceConfig {
            proposal_threshold_nano: 100_000 * neurolov_ledger::NANO_PER_NLOV,
            quorum_nano: 5_000_000 * neurolov_ledger::NANO_PER_NLOV,
            voting_delay_ms: DAY_MS,
            voting_period_ms: 3 * DAY_MS,
            timelock_ms: 2 * DAY_MS,
        }
    }
}

/// A parameter change, each with its range (checked when proposed and again when executed).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamChange {
    /// Protocol fee on each verified task, basis points: 0–20%.
    FeeBps(u64),
    /// Share of an operator's stake slashed for a proven fraud, basis points: 1–100%.
    SlashBps(u64),
    /// The scheduler's weights, basis points summing to 10,000 (today 4,000 / 3,000 / 3,000).
    SchedulerWeights { performance_bps: u64, reliability_bps: u64, cost_efficiency_bps: u64 },
    /// Extra priority stake buys, basis points of the score: 0–100%.
    StakePriorityBps(u64),
    /// Chance of a canary beside an unchecked WGSL task, basis points: 1–100% (never off).
    CanaryRateBps(u64),
    /// The lowest share of a proven node's WGSL results still spot-checked by replication, basis points: 5–100%
    /// (never off: a node with a long honest record could otherwise cheat unchecked).
    SpotCheckFloorBps(u64),
    /// The treasury's verification budget: the share of a conviction's slash that may fund re-runs, 0–100%.
    RerunBudgetBps(u64),
    /// Largest royalty a newly published model may ask, basis points: 0–50%.
    MaxRoyaltyBps(u64),
    /// Heartbeat interval: 5 s – 5 min.
    HeartbeatIntervalMs(u64),
    /// The development faucet's grant: 0 – 10,000 NLOV.
    FaucetGrantNano(u64),
    /// Withdrawals to chains: the fee (≤ 100 NLOV), the minimum (≥ 0.001 NLOV), the largest single one and the
    /// daily limit per account (≤ 10,000,000 NLOV, and at least the minimum).
    WithdrawalLimits { fee_nano: u64, min_nano: u64, max_nano: u64, daily_max_nano: u64 },
    /// Governance itself, above the floors.
    Governance(GovernanceConfig),
}

/// What a proposal does when executed.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    SetParameter(ParamChange),
    /// NLOV from the treasury to an account's wallet.
    TreasurySpend {
        to: Id,
        amount_nano: u64,
    },
    /// A signal: executing it records the decision and changes nothing else.
    Text,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Support {
    Against,
    For,
    Abstain,
}

/// Where a proposal stands (Governor Bravo's `state()`), derived from its fields and the time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProposalState {
    Pending,
    Active,
    Defeated,
    Succeeded,
    Queued,
    Expired,
    Executed,
    Cancelled,
}

impl ProposalState {
    pub fn name(self) -> &'static str {
        match self {
            ProposalState::Pending => "pending",
            ProposalState::Active => "active",
            ProposalState::Defeated => "defeated",
            ProposalState::Succeeded => "succeeded",
            ProposalState::Queued => "queued",
            ProposalState::Expired => "expired",
            ProposalState::Executed => "executed",
            ProposalState::Cancelled => "cancelled",
        }
    }

    fn is_open(self) -> bool {
        matches!(
            self,
            ProposalState::Pending | ProposalState::Active | ProposalState::Succeeded | ProposalState::Queued
        )
    }
}

/// One proposal: the whitepaper's fields (times instead of block numbers), the snapshot and the votes.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Proposal {
    pub id: u64,
    pub proposer: Id,
    pub description: String,
    pub action: Action,
    pub for_votes_nano: u64,
    pub against_votes_nano: u64,
    pub abstain_votes_nano: u64,
    /// When voting opens (and the snapshot is taken): the whitepaper's `startBlock`.
    pub start_ms: u64,
    /// When voting closes: `endBlock`.
    pub end_ms: u64,
    /// When a queued proposal may execute.
    pub eta_ms: Option<u64>,
    pub executed: bool,
    /// When it was executed: a restart re-applies executed parameter changes in this order.
    pub executed_ms: Option<u64>,
    pub cancelled: bool,
    /// Each staker's voting power at `start_ms` (None until the proposal is active).
    pub snapshot: Option<BTreeMap<Id, u64>>,
    /// Each voter's current vote.
    pub votes: BTreeMap<Id, Support>,
    /// The quorum in force when it was made (a later change of the quorum does not move the goalposts).
    pub quorum_nano: u64,
    /// Why the tick could not execute it when due (a grant the treasury cannot pay), if so.
    #[serde(default)]
    pub last_error: Option<String>,
}

impl Proposal {
    pub fn state(&self, now_ms: u64) -> ProposalState {
        if self.cancelled {
            ProposalState::Cancelled
        } else if now_ms < self.start_ms {
            ProposalState::Pending
        } else if now_ms < self.end_ms {
            ProposalState::Active
        } else if self.for_votes_nano <= self.against_votes_nano || self.for_votes_nano < self.quorum_nano {
            ProposalState::Defeated
        } else if self.executed {
            ProposalState::Executed
        } else {
            match self.eta_ms {
                None => ProposalState::Succeeded,
                Some(eta) if now_ms >= eta.saturating_add(GRACE_PERIOD_MS) => ProposalState::Expired,
                Some(_) => ProposalState::Queued,
            }
        }
    }

    /// The tallies from the votes and the snapshot: the only way they are ever set.
    fn recount(&mut self) {
        let (mut f, mut a, mut n) = (0u64, 0u64, 0u64);
        let snapshot = self.snapshot.as_ref();
        for (voter, support) in &self.votes {
            let power = snapshot.and_then(|s| s.get(voter)).copied().unwrap_or(0);
            let tally = match support {
                Support::For => &mut f,
                Support::Against => &mut a,
                Support::Abstain => &mut n,
            };
            *tally = tally.saturating_add(power);
        }
        (self.for_votes_nano, self.against_votes_nano, self.abstain_votes_nano) = (f, a, n);
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GovernanceError {
    #[error("a proposer needs {needed_nano} nano-NLOV staked, has {staked_nano}")]
    BelowThreshold { needed_nano: u64, staked_nano: u64 },
    #[error("{0}")]
    OutOfRange(String),
    #[error("the description is longer than {MAX_DESCRIPTION_BYTES} bytes")]
    DescriptionTooLong,
    #[error("this proposer has a proposal under way already")]
    OneAtATime,
    #[error("too many proposals under way; try again later")]
    TooManyOpen,
    #[error("no proposal {0}")]
    Unknown(u64),
    #[error("proposal {id} is {state}, not {expected}")]
    WrongState { id: u64, state: &'static str, expected: &'static str },
    #[error("the timelock has {left_ms} ms to run")]
    TimelockRunning { left_ms: u64 },
    #[error("no voting power in this proposal's snapshot")]
    NoVotingPower,
    #[error("only the proposer may cancel, unless their stake fell below the threshold")]
    NotYours,
    #[error("the ledger refused: {0}")]
    Ledger(#[from] neurolov_ledger::TransferError),
}

fn range(ok: bool, what: impl Into<String>) -> Result<(), GovernanceError> {
    if ok { Ok(()) } else { Err(GovernanceError::OutOfRange(what.into())) }
}

impl ParamChange {
    /// Whether the value is within its range.
    pub fn validate(&self) -> Result<(), GovernanceError> {
        const NLOV: u64 = neurolov_ledger::NANO_PER_NLOV;
        match self {
            ParamChange::FeeBps(v) => range(*v <= 2_000, "the protocol fee is 0-2000 bps"),
            ParamChange::SlashBps(v) => range((100..=10_000).contains(v), "the slash share is 100-10000 bps"),
            ParamChange::SchedulerWeights { performance_bps, reliability_bps, cost_efficiency_bps } => range(
                performance_bps.checked_add(*reliability_bps).and_then(|s| s.checked_add(*cost_efficiency_bps))
                    == Some(10_000),
                "the scheduler's weights sum to 10000 bps",
            ),
            ParamChange::StakePriorityBps(v) => range(*v <= 10_000, "stake priority is 0-10000 bps"),
            ParamChange::CanaryRateBps(v) => range((1..=10_000).contains(v), "the canary rate is 1-10000 bps"),
            ParamChange::SpotCheckFloorBps(v) => {
                range((500..=10_000).contains(v), "the spot-check floor is 500-10000 bps")
            }
            ParamChange::RerunBudgetBps(v) => range(*v <= 10_000, "the re-run budget is 0-10000 bps of a slash"),
            ParamChange::MaxRoyaltyBps(v) => range(*v <= 5_000, "the largest royalty is 0-5000 bps"),
            ParamChange::HeartbeatIntervalMs(v) => {
                range((5_000..=300_000).contains(v), "the heartbeat interval is 5000-300000 ms")
            }
            ParamChange::FaucetGrantNano(v) => range(*v <= 10_000 * NLOV, "the faucet grant is at most 10000 NLOV"),
            ParamChange::WithdrawalLimits { fee_nano, min_nano, max_nano, daily_max_nano } => range(
                *fee_nano <= 100 * NLOV
                    && *min_nano >= NLOV / 1_000
                    && min_nano <= max_nano
                    && max_nano <= daily_max_nano
                    && *daily_max_nano <= 10_000_000 * NLOV,
                "withdrawal limits: fee ≤ 100 NLOV, 0.001 NLOV ≤ min ≤ max ≤ daily max ≤ 10,000,000 NLOV",
            ),
            ParamChange::Governance(g) => range(
                g.voting_delay_ms >= MIN_VOTING_DELAY_MS
                    && g.voting_period_ms >= MIN_VOTING_PERIOD_MS
                    && g.timelock_ms >= MIN_TIMELOCK_MS
                    && g.quorum_nano >= MIN_QUORUM_NANO
                    && g.proposal_threshold_nano >= MIN_PROPOSAL_THRESHOLD_NANO
                    && g.voting_delay_ms.max(g.voting_period_ms).max(g.timelock_ms) <= 30 * DAY_MS,
                "governance: delay ≥ 1 min, period ≥ 1 h, timelock ≥ 1 h (each ≤ 30 days), quorum and threshold ≥ 1 NLOV",
            ),
        }
    }

    /// Writes the value into `cfg` (after [`ParamChange::validate`]).
    fn apply(&self, cfg: &mut Config) -> Result<(), GovernanceError> {
        self.validate()?;
        let bps = |v: u64| v as f64 / 10_000.0;
        match self {
            ParamChange::FeeBps(v) => cfg.fee_bps = *v,
            ParamChange::SlashBps(v) => cfg.slash_bps = *v,
            ParamChange::SchedulerWeights { performance_bps, reliability_bps, cost_efficiency_bps } => {
                let weights = neurolov_scheduler::Weights::new(
                    bps(*performance_bps),
                    bps(*reliability_bps),
                    bps(*cost_efficiency_bps),
                )
                .and_then(|w| w.with_stake_priority(cfg.weights.stake_priority()))
                .map_err(|e| GovernanceError::OutOfRange(e.to_string()))?;
                cfg.weights = weights;
            }
            ParamChange::StakePriorityBps(v) => {
                cfg.weights =
                    cfg.weights.with_stake_priority(bps(*v)).map_err(|e| GovernanceError::OutOfRange(e.to_string()))?;
            }
            ParamChange::CanaryRateBps(v) => cfg.canary_rate = bps(*v),
            ParamChange::SpotCheckFloorBps(v) => {
                cfg.spot_check =
                    cfg.spot_check.with_floor(bps(*v)).map_err(|e| GovernanceError::OutOfRange(e.to_string()))?;
            }
            ParamChange::RerunBudgetBps(v) => cfg.rerun_budget_bps = *v,
            ParamChange::MaxRoyaltyBps(v) => cfg.max_royalty_bps = *v,
            ParamChange::HeartbeatIntervalMs(v) => cfg.heartbeat_interval_ms = *v,
            ParamChange::FaucetGrantNano(v) => cfg.faucet_grant_nano = *v,
            ParamChange::WithdrawalLimits { fee_nano, min_nano, max_nano, daily_max_nano } => {
                cfg.withdraw_fee_nano = *fee_nano;
                cfg.withdraw_min_nano = *min_nano;
                cfg.withdraw_max_nano = *max_nano;
                cfg.withdraw_daily_max_nano = *daily_max_nano;
            }
            ParamChange::Governance(g) => cfg.governance = g.clone(),
        }
        Ok(())
    }
}

/// The proposals, by id.
#[derive(Clone, Debug, Default)]
pub struct Proposals {
    book: BTreeMap<u64, Proposal>,
    next_id: u64,
}

impl Core {
    /// Stake each account has now, less what it is unstaking (the voting power a snapshot records).
    fn stake_snapshot(&self) -> BTreeMap<Id, u64> {
        self.ledger()
            .accounts()
            .filter(|a| a.kind == Kind::Stake && a.available() > 0)
            .filter_map(|a| Some((a.owner.parse::<Id>().ok()?, u64::try_from(a.available()).ok()?)))
            .collect()
    }

    /// Stake `id` has now, less what it is unstaking.
    fn staked_nano(&self, id: &Id) -> u64 {
        let view = self.wallet_view(id);
        view.staked_nano.saturating_sub(view.unstaking_nano)
    }

    /// `createProposal`: `proposer` (with at least the threshold staked) proposes `action`.
    pub fn propose(
        &mut self,
        now_ms: u64,
        proposer: Id,
        description: &str,
        action: Action,
    ) -> Result<(Proposal, Vec<Effect>), GovernanceError> {
        self.advance(now_ms);
        if description.len() > MAX_DESCRIPTION_BYTES {
            return Err(GovernanceError::DescriptionTooLong);
        }
        match &action {
            Action::SetParameter(change) => change.validate()?,
            Action::TreasurySpend { amount_nano, .. } => range(*amount_nano > 0, "a spend is of some NLOV")?,
            Action::Text => {}
        }
        let gov = self.cfg.governance.clone();
        let staked_nano = self.staked_nano(&proposer);
        if staked_nano < gov.proposal_threshold_nano {
            return Err(GovernanceError::BelowThreshold { needed_nano: gov.proposal_threshold_nano, staked_nano });
        }
        let open: Vec<&Proposal> = self.proposals.book.values().filter(|p| p.state(now_ms).is_open()).collect();
        if open.iter().any(|p| p.proposer == proposer) {
            return Err(GovernanceError::OneAtATime);
        }
        if open.len() >= MAX_OPEN_PROPOSALS {
            return Err(GovernanceError::TooManyOpen);
        }
        self.proposals.next_id += 1;
        let start_ms = now_ms.saturating_add(gov.voting_delay_ms);
        let proposal = Proposal {
            id: self.proposals.next_id,
            proposer,
            description: description.to_string(),
            action,
            for_votes_nano: 0,
            against_votes_nano: 0,
            abstain_votes_nano: 0,
            start_ms,
            end_ms: start_ms.saturating_add(gov.voting_period_ms),
            eta_ms: None,
            executed: false,
            executed_ms: None,
            cancelled: false,
            snapshot: None,
            votes: BTreeMap::new(),
            quorum_nano: gov.quorum_nano,
            last_error: None,
        };
        tracing::info!(proposal = proposal.id, %proposer, "proposal made");
        self.proposals.book.insert(proposal.id, proposal.clone());
        self.persist_proposal(proposal.id);
        self.forget_old_proposals(now_ms);
        Ok((proposal, self.take_effects()))
    }

    fn persist_proposal(&mut self, id: u64) {
        if let Some(p) = self.proposals.book.get(&id) {
            self.effects.push(Effect::Persist(Record::Proposal(Box::new(p.clone()))));
        }
    }

    /// Takes the snapshot of every proposal whose vote has opened and has none yet (the shell's tick calls it, and
    /// every vote does first).
    pub fn snapshot_proposals(&mut self, now_ms: u64) {
        let due: Vec<u64> = self
            .proposals
            .book
            .values()
            .filter(|p| p.snapshot.is_none() && !p.cancelled && now_ms >= p.start_ms)
            .map(|p| p.id)
            .collect();
        if due.is_empty() {
            return;
        }
        let snapshot = self.stake_snapshot();
        for id in due {
            if let Some(p) = self.proposals.book.get_mut(&id) {
                p.snapshot = Some(snapshot.clone());
                p.recount();
            }
            self.persist_proposal(id);
        }
    }

    /// Executes every queued proposal whose timelock has run (the tick calls it): the network follows a decision
    /// without waiting for someone to call `execute`. One that cannot execute now (a grant the treasury cannot pay)
    /// stays queued and is tried again; its error is logged when it changes.
    pub(crate) fn execute_due_proposals(&mut self, now_ms: u64) {
        let due: Vec<u64> = self
            .proposals
            .book
            .values()
            .filter(|p| p.state(now_ms) == ProposalState::Queued && p.eta_ms.is_some_and(|eta| now_ms >= eta))
            .map(|p| p.id)
            .collect();
        for id in due {
            if let Err(e) = self.execute_proposal_inner(now_ms, id) {
                let error = e.to_string();
                let Some(p) = self.proposals.book.get_mut(&id) else { continue };
                if p.last_error.as_deref() != Some(error.as_str()) {
                    tracing::warn!(proposal = id, %error, "a due proposal cannot execute yet");
                    p.last_error = Some(error);
                }
            }
        }
    }

    /// `vote`: `voter`'s vote on proposal `id`, replacing any earlier one, while it is active.
    pub fn cast_vote(
        &mut self,
        now_ms: u64,
        voter: Id,
        id: u64,
        support: Support,
    ) -> Result<(Proposal, Vec<Effect>), GovernanceError> {
        self.advance(now_ms);
        self.snapshot_proposals(now_ms);
        let p = self.proposals.book.get_mut(&id).ok_or(GovernanceError::Unknown(id))?;
        let state = p.state(now_ms);
        if state != ProposalState::Active {
            return Err(GovernanceError::WrongState { id, state: state.name(), expected: "active" });
        }
        if p.snapshot.as_ref().and_then(|s| s.get(&voter)).copied().unwrap_or(0) == 0 {
            return Err(GovernanceError::NoVotingPower);
        }
        p.votes.insert(voter, support);
        p.recount();
        let p = p.clone();
        self.persist_proposal(id);
        Ok((p, self.take_effects()))
    }

    /// Puts a succeeded proposal in the timelock.
    pub fn queue_proposal(&mut self, now_ms: u64, id: u64) -> Result<(Proposal, Vec<Effect>), GovernanceError> {
        self.advance(now_ms);
        let timelock_ms = self.cfg.governance.timelock_ms;
        let p = self.proposals.book.get_mut(&id).ok_or(GovernanceError::Unknown(id))?;
        let state = p.state(now_ms);
        if state != ProposalState::Succeeded {
            return Err(GovernanceError::WrongState { id, state: state.name(), expected: "succeeded" });
        }
        p.eta_ms = Some(now_ms.saturating_add(timelock_ms));
        let p = p.clone();
        self.persist_proposal(id);
        Ok((p, self.take_effects()))
    }

    /// Executes a queued proposal whose timelock has run: once.
    pub fn execute_proposal(&mut self, now_ms: u64, id: u64) -> Result<(Proposal, Vec<Effect>), GovernanceError> {
        self.advance(now_ms);
        let p = self.execute_proposal_inner(now_ms, id)?;
        Ok((p, self.take_effects()))
    }

    fn execute_proposal_inner(&mut self, now_ms: u64, id: u64) -> Result<Proposal, GovernanceError> {
        let p = self.proposals.book.get(&id).ok_or(GovernanceError::Unknown(id))?;
        let state = p.state(now_ms);
        if state != ProposalState::Queued {
            return Err(GovernanceError::WrongState { id, state: state.name(), expected: "queued" });
        }
        let eta = p.eta_ms.unwrap_or(u64::MAX);
        if now_ms < eta {
            return Err(GovernanceError::TimelockRunning { left_ms: eta - now_ms });
        }
        match p.action.clone() {
            Action::SetParameter(change) => {
                change.apply(&mut self.cfg)?;
                self.config_changed();
            }
            Action::TreasurySpend { to, amount_nano } => {
                self.open_account(wallet(&to), Kind::User, &to.to_string());
                let transfer_id = TransferId::derive(&[b"governance-spend", &id.to_le_bytes()]);
                let spend = Transfer::new(transfer_id, crate::treasury(), wallet(&to), amount_nano, codes::GRANT);
                self.economy.order(&[spend], now_ms)?;
                self.commit_ledger();
            }
            Action::Text => {}
        }
        let p = self.proposals.book.get_mut(&id).ok_or(GovernanceError::Unknown(id))?;
        p.executed = true;
        p.executed_ms = Some(now_ms);
        p.last_error = None;
        let p = p.clone();
        tracing::info!(proposal = id, "proposal executed");
        self.persist_proposal(id);
        Ok(p)
    }

    /// Cancels a proposal not yet executed: its proposer may; anyone may once the proposer's stake fell below the
    /// threshold (Bravo's rule: a proposer cannot keep a proposal alive they no longer back).
    pub fn cancel_proposal(
        &mut self,
        now_ms: u64,
        caller: Id,
        id: u64,
    ) -> Result<(Proposal, Vec<Effect>), GovernanceError> {
        self.advance(now_ms);
        let threshold = self.cfg.governance.proposal_threshold_nano;
        let p = self.proposals.book.get(&id).ok_or(GovernanceError::Unknown(id))?;
        let state = p.state(now_ms);
        if matches!(state, ProposalState::Executed | ProposalState::Cancelled) {
            return Err(GovernanceError::WrongState { id, state: state.name(), expected: "not executed" });
        }
        if caller != p.proposer && self.staked_nano(&p.proposer) >= threshold {
            return Err(GovernanceError::NotYours);
        }
        let p = self.proposals.book.get_mut(&id).ok_or(GovernanceError::Unknown(id))?;
        p.cancelled = true;
        let p = p.clone();
        self.persist_proposal(id);
        Ok((p, self.take_effects()))
    }

    /// The proposals on record, after a restart: executed parameter changes are applied again, in the order they
    /// were executed, over the configuration the network started with (grants are in the ledger already).
    pub(crate) fn restore_proposals(&mut self, proposals: Vec<Proposal>) {
        let mut executed: Vec<&Proposal> = proposals.iter().filter(|p| p.executed).collect();
        executed.sort_by_key(|p| (p.executed_ms, p.id));
        for p in executed {
            if let Action::SetParameter(change) = &p.action
                && let Err(e) = change.apply(&mut self.cfg)
            {
                tracing::error!(proposal = p.id, error = %e, "an executed parameter change no longer applies");
            }
        }
        self.config_changed();
        self.proposals.next_id = proposals.iter().map(|p| p.id).max().unwrap_or(0);
        self.proposals.book = proposals.into_iter().map(|p| (p.id, p)).collect();
    }

    /// Brings what holds a copy of a parameter up to date with [`Config`]: the scheduler's weights (it rescores every
    /// node when they change). Everything else reads `Config` when it needs it.
    fn config_changed(&mut self) {
        if self.sched.weights() != self.cfg.weights {
            self.sched.set_weights(self.cfg.weights);
        }
    }

    pub fn proposal(&self, id: u64) -> Option<&Proposal> {
        self.proposals.book.get(&id)
    }

    /// Every proposal, newest first.
    pub fn proposals(&self) -> Vec<&Proposal> {
        self.proposals.book.values().rev().collect()
    }

    /// The voting power `voter` has in proposal `id` (0 before its snapshot).
    pub fn voting_power(&self, id: u64, voter: &Id) -> u64 {
        self.proposal(id).and_then(|p| p.snapshot.as_ref()).and_then(|s| s.get(voter)).copied().unwrap_or(0)
    }

    fn forget_old_proposals(&mut self, now_ms: u64) {
        while self.proposals.book.len() > MAX_PROPOSALS {
            let oldest_finished = self.proposals.book.values().find(|p| !p.state(now_ms).is_open()).map(|p| p.id);
            match oldest_finished {
                Some(id) => {
                    self.proposals.book.remove(&id);
                }
                None => break,
            }
        }
    }
}
