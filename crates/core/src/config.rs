//! The network's parameters: every limit, rate and interval the core works with has a name and a unit here.

use neurolov_scheduler::Weights;
use neurolov_verify::freivalds;
use neurolov_verify::spotcheck::SpotCheckPolicy;

/// Network parameters. Every limit has a name here.
#[derive(Clone, Debug)]
pub struct Config {
    pub heartbeat_interval_ms: u64,
    /// Missed intervals after which a node is stale (gets no new work).
    pub stale_after_missed: u64,
    /// Missed intervals after which a node is offline and its tasks go back to the queue.
    pub offline_after_missed: u64,
    /// n of a node's first n×n·n×n attestation product.
    pub attestation_size: u32,
    /// Largest n a challenge grows to (see `attestation_passed`).
    pub max_attestation_size: u32,
    /// A challenge should take about this long: one that comes back sooner is followed at once by one twice the
    /// size.
    pub attestation_target_ms: u64,
    /// Chance that a WGSL task placed without a spot check brings its node a known-answer canary as well.
    pub canary_rate: f64,
    /// Mean time between unannounced re-challenges of an attested node.
    pub rechallenge_mean_ms: u64,
    /// A re-measured node whose speed falls below this share of its record loses the record.
    pub rechallenge_min_share: f64,
    /// Rows of C per matmul task.
    pub tile_rows: u32,
    /// Shortest deadline of a task; longer for more work on slower nodes.
    pub min_task_deadline_ms: u64,
    /// Deadline allowance per GFLOP of estimated work on the chosen node (ms).
    pub deadline_ms_per_gflop: u64,
    pub freivalds_rounds: u32,
    /// A task that finds no eligible node for this long fails its job.
    pub max_queue_wait_ms: u64,
    /// Attempts of one task before its job fails.
    pub max_attempts: u32,
    /// Replicas of a spot-checked WGSL task that must agree, on distinct operators.
    pub wgsl_replicas: u32,
    /// How often a WGSL task is spot-checked by replication, given the first node's verified history.
    pub spot_check: SpotCheckPolicy,
    /// Most replicas one WGSL task may use while looking for a majority.
    pub wgsl_max_replicas: u32,
    pub weights: Weights,
    /// Frames a connection may get wrong before it is closed.
    pub max_strikes: u32,
    pub max_nodes: usize,
    pub max_jobs: usize,
    /// A delivered result whose check has not come back by then is treated as unreadable (the task runs again).
    pub verify_timeout_ms: u64,
    /// Unfinished jobs one client may have: one client cannot take the whole queue, however much it can pay.
    pub max_jobs_per_client: usize,
    pub max_queued_tasks: usize,
    /// Lowest price cap a job may name: a job with no price escrows nothing and costs its client nothing to hold.
    pub min_price_nano_per_gflop: u64,
    /// Most operand bytes the unfinished jobs may hold in the core's memory together.
    pub max_operand_bytes: u64,
    /// Protocol fee on each verified task's price, to the treasury (basis points).
    pub fee_bps: u64,
    /// Share of an operator's stake slashed for one proven fraud (basis points).
    pub slash_bps: u64,
    /// How long unstaked NLOV stays locked (and slashable) before it returns to the wallet.
    pub unstake_delay_ms: u64,
    /// Stake that earns the whole spot-check discount (the rate halves; it never reaches zero).
    pub stake_for_full_discount_nano: u64,
    /// Development mode's faucet grant per account from the ecosystem fund (0: no faucet).
    pub faucet_grant_nano: u64,
    /// How long after an attempt's deadline its pay reservation expires on its own.
    pub hold_grace_ms: u64,
    /// How long a node proven to cheat waits before it is challenged again (and so before any paid work).
    pub conviction_cooldown_ms: u64,
    /// How long a finished job stays in memory before it is archived to storage (see `retention.rs`): its status
    /// and its idempotency key are answered from memory meanwhile.
    pub finished_job_memory_ms: u64,
    /// Most finished jobs kept in memory: past it the oldest are archived sooner.
    pub max_finished_jobs_in_memory: usize,
    /// The models inference jobs may ask for (at most [`crate::MAX_LISTED_MODELS`]; the shell lists those it can
    /// verify). The one parameter that grows while the core runs: a published model is appended
    /// (`Core::list_model`).
    pub models: Vec<crate::ModelListing>,
    /// Largest single withdrawal to a chain.
    pub withdraw_max_nano: u64,
    /// Smallest withdrawal: each one costs the custody a chain fee and, for a new recipient, a token account's rent
    /// (about 0.002 SOL) — without a floor, dust withdrawals to fresh addresses would drain the custody's SOL.
    pub withdraw_min_nano: u64,
    /// Most one account may withdraw to chains in 24 hours (a stolen key empties a wallet no faster).
    pub withdraw_daily_max_nano: u64,
    /// What a withdrawal pays the treasury, charged only when it lands (refunded with it when it fails). It must
    /// cover the chain's worst cost per withdrawal: otherwise withdrawing to fresh addresses and depositing back
    /// costs the sender nothing while the custody pays each time (on Solana a new token account's rent, which its
    /// owner can reclaim by closing it — a profit per round trip).
    pub withdraw_fee_nano: u64,
    /// The treasury's verification budget: the share of a conviction's slash that may fund re-running the work the
    /// convicted node spoiled (basis points; governable).
    pub rerun_budget_bps: u64,
    /// Largest royalty a newly published model may ask for its author (basis points; governable, at most 50%: the
    /// provider doing the work must keep the larger part).
    pub max_royalty_bps: u64,
    /// Governance's own parameters (issue 16): threshold, quorum, delay, period, timelock.
    pub governance: crate::GovernanceConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            heartbeat_interval_ms: 30_000,
            stale_after_missed: 1,
            offline_after_missed: 3,
            attestation_size: 256,
            max_attestation_size: 4096,
            attestation_target_ms: 2_000,
            canary_rate: 0.1,
            rechallenge_mean_ms: 3_600_000,
            rechallenge_min_share: 0.5,
            tile_rows: 256,
            min_task_deadline_ms: 60_000,
            deadline_ms_per_gflop: 2_000,
            freivalds_rounds: freivalds::DEFAULT_ROUNDS,
            max_queue_wait_ms: 600_000,
            max_attempts: 5,
            wgsl_replicas: 2,
            spot_check: SpotCheckPolicy::default(),
            wgsl_max_replicas: 5,
            weights: Weights::default(),
            max_strikes: 16,
            max_nodes: 100_000,
            max_jobs: 10_000,
            verify_timeout_ms: 120_000,
            max_jobs_per_client: 100,
            max_queued_tasks: 1_000_000,
            min_price_nano_per_gflop: 1,
            max_operand_bytes: 4 << 30,
            fee_bps: 500,
            slash_bps: 5_000,
            unstake_delay_ms: 7 * 24 * 3_600_000,
            stake_for_full_discount_nano: 10_000 * neurolov_ledger::NANO_PER_NLOV,
            faucet_grant_nano: 0,
            hold_grace_ms: 60_000,
            conviction_cooldown_ms: 3_600_000,
            finished_job_memory_ms: 3_600_000,
            max_finished_jobs_in_memory: 10_000,
            models: Vec::new(),
            withdraw_max_nano: 100_000 * neurolov_ledger::NANO_PER_NLOV,
            withdraw_min_nano: neurolov_ledger::NANO_PER_NLOV,
            withdraw_fee_nano: neurolov_ledger::NANO_PER_NLOV / 2,
            rerun_budget_bps: 10_000,
            max_royalty_bps: 5_000,
            governance: crate::GovernanceConfig::default(),
            withdraw_daily_max_nano: 250_000 * neurolov_ledger::NANO_PER_NLOV,
        }
    }
}
