//! Adaptive spot checking for results that cannot be checked cheaply (a client's own WGSL kernel): how often a
//! node's result is replicated on a second operator's node, and when an unchecked result becomes final.
//!
//! BOINC's adaptive replication trusts a host after a run of valid results and then replicates only a sample; a
//! result that was not sampled is granted at once, so a host that behaves for 10 results and then cheats has every
//! forgery before its first sampled one accepted — about 9 at a 10% sampling rate. Two things differ here:
//!
//! - The rate falls with a node's verified history (halving every `half_life` verified results, and further with
//!   stake) but never below `floor`: no node is ever beyond checking.
//! - An unchecked result is **provisional**: it becomes final only after its node has passed `finality_checks`
//!   later spot checks. When a check fails, every provisional result of that node is re-run elsewhere. A node that
//!   turns to cheating fails a check within about 1/floor results, and every forgery it made meanwhile is still
//!   provisional — so none is accepted. [`simulate`] measures both policies on the same cheaters.

/// Why a policy's parameters are refused.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum PolicyError {
    #[error("rates must lie in (0, 1] with floor ≤ initial (initial {initial}, floor {floor})")]
    BadRates { initial: f64, floor: f64 },
    #[error("half-life must be at least 1 result")]
    BadHalfLife,
}

/// The spot-check policy.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SpotCheckPolicy {
    initial: f64,
    half_life: u64,
    floor: f64,
    finality_checks: u32,
}

impl Default for SpotCheckPolicy {
    /// Every result checked at first, halving every 10 verified results, never below 10%; final after 3 later
    /// passed checks.
    fn default() -> Self {
        SpotCheckPolicy { initial: 1.0, half_life: 10, floor: 0.1, finality_checks: 3 }
    }
}

impl SpotCheckPolicy {
    pub fn new(initial: f64, half_life: u64, floor: f64, finality_checks: u32) -> Result<Self, PolicyError> {
        if !(floor > 0.0 && floor <= initial && initial <= 1.0) {
            return Err(PolicyError::BadRates { initial, floor });
        }
        if half_life == 0 {
            return Err(PolicyError::BadHalfLife);
        }
        Ok(SpotCheckPolicy { initial, half_life, floor, finality_checks })
    }

    /// Probability that a result of a node with `verified` verified results is replicated. `stake_share` in [0, 1]
    /// (the node's stake against the network's requirement) halves the rate at most; the floor always holds.
    pub fn rate(&self, verified: u64, stake_share: f64) -> f64 {
        let decay = 0.5f64.powf(verified as f64 / self.half_life as f64);
        let stake = 1.0 - 0.5 * stake_share.clamp(0.0, 1.0);
        (self.initial * decay * stake).max(self.floor)
    }

    pub fn floor(&self) -> f64 {
        self.floor
    }

    /// The same policy with another floor (a governance decision), within the same bounds as [`SpotCheckPolicy::new`].
    pub fn with_floor(self, floor: f64) -> Result<Self, PolicyError> {
        SpotCheckPolicy::new(self.initial, self.half_life, floor, self.finality_checks)
    }

    pub fn finality_checks(&self) -> u32 {
        self.finality_checks
    }
}

/// A node that is honest for `honest_results` results and then returns a wrong result with probability
/// `cheat_rate` each time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cheater {
    pub honest_results: u64,
    pub cheat_rate: f64,
}

/// BOINC-style adaptive replication: every result is replicated until the host has `trust_after` consecutive valid
/// results, then a sample at `trusted_rate`; unsampled results are granted at once.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BoincPolicy {
    pub trust_after: u64,
    pub trusted_rate: f64,
}

impl Default for BoincPolicy {
    fn default() -> Self {
        BoincPolicy { trust_after: 10, trusted_rate: 0.1 }
    }
}

/// What one simulated node's career came to.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Outcome {
    /// Wrong results that ended up accepted (granted, or final).
    pub forgeries_accepted: u64,
    /// Wrong results it returned before it was caught (or the run ended).
    pub forgeries: u64,
    /// Results it returned.
    pub results: u64,
    /// Results that were replicated.
    pub replicated: u64,
    pub caught: bool,
}

/// Which policy [`simulate`] runs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Policy {
    Boinc(BoincPolicy),
    Neurolov(SpotCheckPolicy),
}

/// Runs one node for up to `max_results` results under `policy`, from `seed`. A replicated wrong result is always
/// caught (its replica disagrees); a caught node is banned, and under the Neurolov policy its provisional results
/// are re-run, so only its final forgeries count as accepted.
pub fn simulate(policy: Policy, cheater: Cheater, max_results: u64, seed: u64) -> Outcome {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut out = Outcome::default();
    let mut verified = 0u64;
    // Under the Neurolov policy: for each provisional wrong result, the passed checks it still needs to be final.
    let mut provisional: Vec<u32> = Vec::new();
    for i in 0..max_results {
        out.results += 1;
        let wrong = i >= cheater.honest_results && rng.f64() < cheater.cheat_rate;
        out.forgeries += u64::from(wrong);
        let rate = match policy {
            Policy::Boinc(b) if verified < b.trust_after => 1.0,
            Policy::Boinc(b) => b.trusted_rate,
            Policy::Neurolov(p) => p.rate(verified, 0.0),
        };
        let checked = rng.f64() < rate;
        out.replicated += u64::from(checked);
        match (checked, wrong, policy) {
            (true, true, _) => {
                out.caught = true;
                // Neurolov re-runs every provisional result of the node: none of those forgeries stands.
                return out;
            }
            (true, false, Policy::Neurolov(_)) => {
                verified += 1;
                for need in &mut provisional {
                    *need = need.saturating_sub(1);
                }
                out.forgeries_accepted += provisional.iter().filter(|&&n| n == 0).count() as u64;
                provisional.retain(|&n| n > 0);
            }
            (true, false, Policy::Boinc(_)) => verified += 1,
            (false, true, Policy::Boinc(_)) => out.forgeries_accepted += 1,
            (false, true, Policy::Neurolov(p)) => provisional.push(p.finality_checks()),
            (false, false, _) => {}
        }
    }
    out
}

/// Mean forgeries accepted and mean replicated share over `runs` seeded runs.
pub fn mean_outcome(policy: Policy, cheater: Cheater, max_results: u64, runs: u64, seed: u64) -> (f64, f64) {
    let mut accepted = 0u64;
    let mut replicated = 0u64;
    let mut results = 0u64;
    for r in 0..runs {
        let o = simulate(policy, cheater, max_results, seed.wrapping_mul(1_000_003).wrapping_add(r));
        accepted += o.forgeries_accepted;
        replicated += o.replicated;
        results += o.results;
    }
    (accepted as f64 / runs as f64, replicated as f64 / results.max(1) as f64)
}
