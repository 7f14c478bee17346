//! Freivalds' check of a matrix product C = A·B in O(mk + kn + mn) instead of O(mnk), with two fp32 tolerances: a
//! tight one that decides whether a result is taken, and a rigorous one that decides whether it is proven wrong.
//!
//! The verifier draws a secret n×r matrix R (r = rounds, entries uniform in [-1, 1]) that the node never sees, so its
//! committed C cannot depend on it. Column j of B gets the weight w_j = 1/‖b_j‖₂ (0 for a zero column), R' = W·R, and
//! the check compares C·R' with A·(B·R') row by row, in f64: for E = C − AB the statistic is
//! S_iq = (E·R')_iq = Σ_j w_j·R_jq·E_ij. The weights make every column count at its own scale, so one outlier column
//! of B cannot widen the tolerance of the others. A zero column has an exact honest result (0), compared entry by
//! entry. All rounds go through one pass over each matrix; [`Prepared`] keeps R' and B·R' for every row block of one
//! product. Besides, [`EXACT_ENTRIES`] entries at positions drawn from the seed are recomputed exactly (f64, O(K)
//! each) and compared one by one: they catch dense small errors without going through a projection.
//!
//! **How an honest fp32 dot product errs.** Any summation order is a binary tree over the K products; with
//! fl(x ∘ y) = (x ∘ y)(1 + δ), |δ| ≤ u = 2⁻²⁴, the computed ĉ = c + Σ_v δ_v·s_v, where v runs over the tree's
//! operations (the K products unless fused, the K − 1 additions) and s_v is the exact result of operation v on its
//! computed operands: to first order the exact partial sum of the products below v (the difference is the error
//! accumulated below v, a factor ~√K·u smaller, which a factor 1 + K·u covers).
//!
//! *Rigorous, for any order and any operands* (Higham, Accuracy and Stability, §3.5): |E_ij| ≤ γ_K·(|A||B|)_ij,
//! γ_K = K·u/(1 − K·u), and by Cauchy–Schwarz (|A||B|)_ij ≤ ‖a_i‖₂·‖b_j‖₂, so |w_j·E_ij| ≤ γ_K·‖a_i‖₂.
//!
//! *Probabilistic* (Higham & Mary, SIAM J. Sci. Comput. 41(5), 2019): model the δ_v as independent, mean zero,
//! |δ_v| ≤ u. Then E_ij is a sum of independent terms bounded by u·|s_v|: sub-Gaussian with variance proxy u²·Φ_ij,
//! Φ_ij = Σ_v s_v². Φ depends on how the partial sums grow. For products x_k = a_ik·b_kj that behave like independent
//! draws along k (mean μ = c_ij/K, Σ_k x_k² = q_ij), sequential summation — the worst ordinary order: one
//! accumulator per GPU thread or per register of a CPU micro-kernel — has E[Σ_p s_p²] = Σ_p (p²μ² + p·(q/K − μ²))
//! = K·c²/3 + (K + 1)·q/2 − c²/(3K). Blocked, tiled, split-K and pairwise orders have smaller partial sums (each
//! spans fewer products; their outer sums are few), unfused products add at most q. We take
//!
//!   Φ_ij = K·(ĉ_ij²/3 + q_ij/2) + 2·q_ij:
//!
//! for all-positive data the error grows like √K·u·Σ_k|x_k| (Higham & Mary's √K), for zero-mean data like
//! u·‖a_i‖₂·‖b_j‖₂ — not like the worst case's K·u. It uses the result's own ĉ_ij: a forger who moves an entry by D
//! widens the tolerance by at most z·u·√(K/3)·|D| ≤ 10⁻³·|D| (K ≤ [`MAX_INNER`]), which buys nothing.
//!
//! **The two tolerances of the projection.** Given R, S_iq is a sum of independent terms over the rounding errors of
//! all entries of row i; with R_jq² ≤ 1 its variance proxy is at most u²·V_i, where
//!
//!   V_i = Σ_j w_j²·Φ_ij = (K/3)·Σ_j w_j²·ĉ_ij² + (K/2 + 2)·Σ_k a_ik²·β_k,   β_k = Σ_j b_kj²·w_j²,
//!
//! (β once per B, alongside B·R'; the rest in the passes over A and C). Hoeffding and a union bound over the m rows
//! and r rounds, with z = √(2·ln(2·m·r/δ)) and δ = 2⁻⁴⁰, give
//!
//!   accepted       where |S_iq| ≤ t_i = z·u·(1 + K·u)·√V_i + F_i + ε_i        (the tight tolerance)
//!   proven wrong   where |S_iq| > T_i = z·γ_K·min(‖a_i‖₂·√n', Σ_k |a_ik|·ρ_k) + F_i + ε_i   (the conviction bound)
//!
//! (n' = nonzero columns of B, ρ_k = Σ_j |b_kj|·w_j: Σ_j w_j²·(|A||B|)_ij² is at most n'·‖a_i‖₂² by Cauchy–Schwarz
//! and at most (Σ_j w_j·(|A||B|)_ij)² = (Σ_k |a_ik|·ρ_k)², the smaller one when a few large entries of B meet small
//! ones of A). T_i is rigorous: for any fixed E within the worst-case bound, Hoeffding over R alone
//! bounds |S_iq| by T_i except with probability δ, whatever the summation order and whatever the operands. t_i holds
//! under the model, for ordinary orders and operands whose partial sums wander like independent draws. Operands that
//! break the model — constant values, whose rounding errors all point the same way and grow like K·u; data whose
//! partial sums swing far along k and come back; sorted data summed in strided lanes — can push an honest result
//! past t_i, never past T_i: such a result is rejected without conviction (run again elsewhere), never slashed.
//!
//! **Tiny and huge values.** A GPU may flush subnormal inputs, products and sums to zero: a flushed operation errs
//! by less than 2⁻¹²⁶, a flushed input loses its products: in S_iq at most Σ_k |a_ik^sub|·ρ_k + Σ_k |a_ik|·ρ_k^sub,
//! ρ^sub as ρ over B's subnormal entries. Both tolerances add the deterministic
//! F_i = 2⁻¹²⁶·Σ_k ρ_k + ‖a_i‖₂·‖ρ^sub‖₂ + 2K·2⁻¹²⁶·(1 + γ_K)·Σ_j w_j, negligible for ordinary data (‖ρ^sub‖₂ is 0
//! without subnormals in B). A non-finite entry of C fails the tight tolerance;
//! it is proven wrong when no honest partial sum can overflow, (1 + γ_K)·‖a_i‖₂·max_j ‖b_j‖₂ < f32::MAX.
//!
//! **The verifier's own rounding.** Both sides use the same stored R'; f32 → f64 is exact; the two f64 products err
//! by at most ε_i = 1.01·2⁻⁵³·((K + n + 2)·Σ_k |a_ik|·ρ_k + (n + 1)·Σ_j |ĉ_ij|·w_j) (Higham's bound, |R| ≤ 1),
//! added to both tolerances; the norms get a relative slack of 10⁻⁶.
//!
//! **Exact entries.** For each drawn entry (i, j) the verifier computes in f64 c = Σ_k a_ik·b_kj (products exact,
//! the sum within K·2⁻⁵³·Σ|x|), Σ|x|, q, and the sequential prefix energy P = Σ_p s_p². The entry is accepted when
//! |ĉ − c| ≤ z_e·u·(1 + K·u)·√Φ_e + f + ε with Φ_e = max(K·(c²/3 + q/2) + 2q, 2P + 2q) (the model with the exact c,
//! or the actual partial sums, doubled for blocked orders), z_e = √(2·ln(2·8/δ)); it is proven wrong beyond
//! γ_K·Σ_k|a_ik·b_kj| + f + ε, a deterministic bound (f: the flush allowance of that entry).
//!
//! **False accept.** Let D = C − AB be the whole deviation of a result. Fix a round and an entry (i, j); whatever the
//! other entries of R, the round passes row i only if R_jq falls in an interval of length 2·t_i/(w_j·|D_ij|) (t_i
//! does not depend on R), which has probability at most t_i·‖b_j‖₂/|D_ij| under the uniform density ½. Rounds are
//! independent, so a result with an entry off by |D_ij| is accepted with probability at most
//! (t_i·‖b_j‖₂/|D_ij|)^r: [`false_accept_bound`] with t = t_i·‖b_j‖₂. A dense deviation moves S_iq by about
//! √(Σ_j w_j²·D_ij²/3), a random amount in every round, and every row must pass every round.
//!
//! **What it cannot tell apart.** When every product is positive, an honest sequential sum errs like √K·u·c, which
//! at large K is as much as rounding the inputs to fp16 or TF32 costs (both grow with the same products): on such
//! operands those results pass from K ≈ 4096 on (measured below). On zero-mean operands (weights, centred data) they
//! are hundreds of times apart and always fail.
//!
//! **Measured** (`cargo test -p neurolov-verify --release --test freivalds_adversarial -- --ignored --nocapture`,
//! about a minute on 2 cores after the release build; m = 64, n = 256, 8 rounds, uniform [-1, 1], normal and uniform [0, 1] inputs,
//! K ∈ {1024, 4096, 16384}).
//!
//! *False rejects.* 1,152,000 honest row checks (five summation orders: matrixmultiply's SGEMM, sequential FMA,
//! k-blocks of 16 and 64, split-K in 4; 400 secret seeds each): worst_ratio max 0.139, 99.9th percentile 0.085,
//! median 0.012; none above 0.5 (the node's self-check margin). 144,000 exact-entry checks: max 0.138. Tail: given a
//! row's rounding errors E, Hoeffding over R bounds a round past τ·t_i by 2·exp(−τ²/(2g²)), g = √(Σ_j w_j²·E_ij²)/t_i,
//! and |S_iq| never exceeds Σ_j w_j·|E_ij| (≤ 0.65·t_i on every one of the 2,880 measured rows: no R rejects them).
//! With g fitted by a Gaussian per configuration (max g 0.051), an honest row is rejected with probability ≤ 2·10⁻³⁶
//! by the coordinator and fails the node's self-check (2 rounds, margin 0.5) with probability ≤ 1.3·10⁻¹³; an exact
//! entry (Gaussian, RMS ratio ≤ 0.035) ≈ 10⁻¹⁸⁰.
//!
//! *False accepts*, 200 secret seeds per class, uniform and normal inputs, each K: accepted 0 times for results
//! scaled by 0.99, computed from 80% of K, from fp16-, bf16-, TF32- or int8-rounded inputs, with one entry off by
//! 1%, or with one column of B ×1000 and an entry of another column off by 1%. The closest: fp16/TF32 at K = 16384,
//! least worst_ratio 7.0 (bf16 56, int8 151, one entry 17, outlier column 12, ×0.99 245, truncated K 1.2·10⁴).
//! Proven wrong: zeros, random, another product, NaN, ∞ 200/200 at every K; truncated K 200/200; ×0.99 200/200 at
//! K = 1024, 187–193/200 at 4096, 0/200 at 16384; bf16 and int8 200/200 at K = 1024, int8 69–199/200 at 4096; fp16,
//! TF32, one entry and the outlier column are rejected without conviction (within γ_K). All-positive inputs: fp16
//! and TF32 pass 195/200 at K = 4096 and 200/200 at 16384, bf16 18/200 at 16384; every other class 0.
//! Before (the worst-case γ_K·‖a_i‖₂·‖B‖_F tolerance), the same tests accepted every one of these classes at some K.

/// Rounds (columns of R) by default: one pass over each matrix at [`LANES`] rounds.
pub const DEFAULT_ROUNDS: u32 = 8;
/// Most rounds one check may ask for.
pub const MAX_ROUNDS: u32 = 64;
/// Rounds handled per pass over the matrices (the width of the vectorized accumulators).
pub const LANES: usize = 8;
/// Entries of C recomputed exactly in every check.
pub const EXACT_ENTRIES: usize = 8;
/// log₂ of the probability δ that an honest result is rejected (by the projection; as much again for the exact
/// entries) under the rounding model, and that one is proven wrong under any operands.
pub const FALSE_REJECT_LOG2: i32 = -40;
/// Matrices smaller than this are multiplied on one thread.
const PARALLEL_MIN_ELEMENTS: usize = 1 << 18;
/// fp32 unit roundoff.
pub const U32: f64 = 1.0 / 16_777_216.0;
/// f64 unit roundoff.
pub const U64: f64 = f64::EPSILON / 2.0;
/// Relative slack on the verifier's f64 norms and sums of squares.
pub const VERIFIER_SLACK: f64 = 1e-6;
/// Smallest normal f32: an operation whose result is below it may be flushed to zero.
pub const FLUSH: f64 = f32::MIN_POSITIVE as f64;
/// Rounds of a provider's own check of its matmul result before it commits to it (native nodes and browser tabs).
pub const SELF_CHECK_ROUNDS: u32 = 2;
/// The self-check's share of the tight tolerance ([`Report::worst_ratio`]): stricter than the coordinator, so what a
/// provider passes the coordinator passes too, while an honest fp32 result passes (measured: honest rows reach at
/// most ~0.14 of that tolerance; an honest row fails this margin with probability ≤ 10⁻¹², see above).
pub const SELF_CHECK_MARGIN: f64 = 0.5;
/// Largest inner dimension for which γ_K is meaningful (K·u < ½).
pub const MAX_INNER: usize = 1 << 23;

#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum FreivaldsError {
    #[error("matrix {name} has {actual} elements, the shape needs {expected}")]
    Shape { name: &'static str, expected: usize, actual: usize },
    #[error("a dimension is zero or the inner dimension exceeds {MAX_INNER}")]
    BadDimensions,
    #[error("rounds must be between 1 and {MAX_ROUNDS} (got {0})")]
    BadRounds(u32),
    #[error("input matrices contain a non-finite value")]
    NonFiniteInput,
}

/// The outcome of one check.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// Every row and exact entry within the tight tolerance (and nothing proven wrong): the result is taken.
    pub accepted: bool,
    /// Some row or exact entry beyond the rigorous bound: no honest fp32 computation, in any summation order and on
    /// any operands, gives this result (except with probability 2⁻⁴⁰ over the secret R). A result that is neither
    /// accepted nor proven wrong is rejected without conviction.
    pub proven_wrong: bool,
    pub rounds: u32,
    /// The row whose deviation came closest to (or furthest past) its tight tolerance.
    pub worst_row: usize,
    /// max over rows, rounds and exact entries of deviation / tight tolerance: ≤ 1 passes. ∞ for a non-finite result.
    pub worst_ratio: f64,
    /// max of deviation / conviction bound: > 1 is proven wrong.
    pub conviction_ratio: f64,
}

/// One row of a check: its worst round against both tolerances.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RowVerdict {
    /// max over rounds of |S_iq| / t_i.
    pub ratio: f64,
    /// max over rounds of |S_iq| / T_i.
    pub conviction_ratio: f64,
    /// The row's tight tolerance t_i (it does not depend on R).
    pub tolerance: f64,
    /// The row's conviction bound T_i.
    pub conviction_bound: f64,
}

/// One exactly recomputed entry of a check.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EntryVerdict {
    /// Row within the checked block.
    pub row: usize,
    pub column: usize,
    /// |ĉ − c| / its tight tolerance.
    pub ratio: f64,
    /// |ĉ − c| / its rigorous bound.
    pub conviction_ratio: f64,
}

/// Everything one check found, row by row and entry by entry ([`Prepared::check`] folds it into a [`Report`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Details {
    pub rounds: u32,
    pub rows: Vec<RowVerdict>,
    pub entries: Vec<EntryVerdict>,
}

impl Details {
    /// The verdict: worst row or entry, accepted, proven wrong.
    pub fn report(&self) -> Report {
        let mut worst = (0usize, 0.0f64);
        let mut conviction = 0.0f64;
        let rows = self.rows.iter().enumerate().map(|(i, r)| (i, r.ratio, r.conviction_ratio));
        for (row, ratio, conv) in rows.chain(self.entries.iter().map(|e| (e.row, e.ratio, e.conviction_ratio))) {
            if ratio > worst.1 {
                worst = (row, ratio);
            }
            conviction = conviction.max(conv);
        }
        let proven_wrong = conviction > 1.0;
        Report {
            accepted: worst.1 <= 1.0 && !proven_wrong,
            proven_wrong,
            rounds: self.rounds,
            worst_row: worst.0,
            worst_ratio: worst.1,
            conviction_ratio: conviction,
        }
    }
}

/// √(2·ln(2·trials/δ)): Hoeffding's multiple of the standard scale that `trials` tests all stay within, except with
/// probability δ.
fn z_score(trials: f64) -> f64 {
    let delta = 2f64.powi(FALSE_REJECT_LOG2);
    (2.0 * (2.0 * trials / delta).ln()).sqrt()
}

fn gamma(k: usize) -> f64 {
    let ku = k as f64 * U32;
    ku / (1.0 - ku)
}

/// z·u·(1 + K·u): the tight tolerance t_i of a row is this times √V_i (plus the flush and verifier allowances).
pub fn tolerance_factor(m: usize, k: usize, rounds: u32) -> f64 {
    z_score(m as f64 * f64::from(rounds)) * U32 * (1.0 + k as f64 * U32) * (1.0 + VERIFIER_SLACK)
}

/// z·γ_K: the conviction bound T_i of a row is this times min(‖a_i‖₂·√n', Σ_k |a_ik|·ρ_k) (plus the flush and
/// verifier allowances).
pub fn conviction_factor(m: usize, k: usize, rounds: u32) -> f64 {
    z_score(m as f64 * f64::from(rounds)) * gamma(k) * (1.0 + VERIFIER_SLACK)
}

/// Upper bound on the probability that a result with an entry off by `error` passes `rounds` rounds, where `t` is
/// the entry's tolerance t_i·‖b_j‖₂.
pub fn false_accept_bound(error: f64, t: f64, rounds: u32) -> f64 {
    if error <= t { 1.0 } else { (t / error).powi(rounds as i32) }
}

/// Checks C = A·B for row-major A (m×k), B (k×n), C (m×n) with `rounds` rounds drawn from `seed`.
#[allow(clippy::too_many_arguments)]
pub fn check(
    a: &[f32],
    b: &[f32],
    c: &[f32],
    m: usize,
    n: usize,
    k: usize,
    rounds: u32,
    seed: u64,
) -> Result<Report, FreivaldsError> {
    Prepared::new(b, k, n, rounds, seed)?.check(a, c, m)
}

/// B's half of the check — the secret R' = W·R, B·R', the column weights and B's sums for the tolerances — computed
/// once and shared by every row block of one product: a job cut into row tasks pays for B·R' once instead of once
/// per task. R stays with the verifier; it is never sent.
#[derive(Clone, Debug)]
pub struct Prepared {
    n: usize,
    k: usize,
    rounds: u32,
    /// Per group of [`LANES`] rounds: R' (n × LANES) and B·R' (k × LANES), and how many lanes are live.
    groups: Vec<(Vec<f64>, Vec<f64>, usize)>,
    /// Per column of A (row of B): [β_k = Σ_j b_kj²·w_j², ρ_k = Σ_j |b_kj|·w_j].
    side_a: Vec<[f64; 2]>,
    /// Per column of C (of B): [w_j², w_j].
    side_c: Vec<[f64; 2]>,
    /// Σ_k ρ_k.
    rho_sum: f64,
    /// The zero columns of B, where C must be exactly zero.
    zero_columns: Vec<usize>,
    /// Columns of B that are not zero (n').
    live_columns: usize,
    /// ‖ρ^sub‖₂, ρ_k^sub = Σ_j |b_kj|·w_j over B's subnormal entries (0 for ordinary data).
    rho_sub_norm: f64,
    /// Σ_j w_j.
    weight_sum: f64,
    /// max_j ‖b_j‖₂.
    max_column_norm: f64,
    /// The distinct columns of B that exact entries read, with their index.
    exact_columns: Vec<(usize, Vec<f32>)>,
    /// The same columns of the magnitude matrix, when the product sums other terms than B's entries
    /// ([`Prepared::with_magnitudes`]).
    exact_magnitudes: Option<Vec<Vec<f32>>>,
    /// Per exact entry: the seed's pick of its row (taken modulo the block's rows) and its column in `exact_columns`.
    exact: Vec<(u64, usize)>,
}

impl Prepared {
    /// Draws R from `seed` and computes B·R' for B (k×n, row-major).
    pub fn new(b: &[f32], k: usize, n: usize, rounds: u32, seed: u64) -> Result<Prepared, FreivaldsError> {
        Prepared::build(b, None, k, n, rounds, seed)
    }

    /// [`Prepared::new`] for a product that sums, for each entry b_kj, terms of magnitude up to `magnitudes[k][j]`
    /// (≥ |b_kj|) instead of b_kj itself — a quantized weight computed as a block's d·q plus its minimum m, the two
    /// nearly cancelling. Every rounding bound (β, ρ, the exact entries', the rigorous one) is taken over the
    /// magnitudes; the projection and the column weights stay B's. The rigorous bound drops its Cauchy–Schwarz
    /// branch (‖a_i‖·√n' holds for B's entries only).
    pub fn with_magnitudes(
        b: &[f32],
        magnitudes: &[f32],
        k: usize,
        n: usize,
        rounds: u32,
        seed: u64,
    ) -> Result<Prepared, FreivaldsError> {
        if magnitudes.len() != b.len() {
            return Err(FreivaldsError::Shape { name: "magnitudes", expected: b.len(), actual: magnitudes.len() });
        }
        Prepared::build(b, Some(magnitudes), k, n, rounds, seed)
    }

    fn build(
        b: &[f32],
        magnitudes: Option<&[f32]>,
        k: usize,
        n: usize,
        rounds: u32,
        seed: u64,
    ) -> Result<Prepared, FreivaldsError> {
        if n == 0 || k == 0 || k > MAX_INNER {
            return Err(FreivaldsError::BadDimensions);
        }
        if rounds == 0 || rounds > MAX_ROUNDS {
            return Err(FreivaldsError::BadRounds(rounds));
        }
        let expected = k.checked_mul(n).ok_or(FreivaldsError::BadDimensions)?;
        if b.len() != expected {
            return Err(FreivaldsError::Shape { name: "b", expected, actual: b.len() });
        }
        let mut rng = fastrand::Rng::with_seed(seed);
        // The exact entries first: their columns of B are gathered in the same pass as the column norms.
        let (columns, exact) = pick_exact_entries(&mut rng, n);
        let (norms2, subnormal, gathered) = column_norms2(b, n, &columns);
        if !norms2.iter().all(|v| v.is_finite()) {
            return Err(FreivaldsError::NonFiniteInput);
        }
        let weights: Vec<f64> = norms2.iter().map(|&s| if s > 0.0 { 1.0 / s.sqrt() } else { 0.0 }).collect();
        let side_c: Vec<[f64; 2]> = weights.iter().map(|&w| [w * w, w]).collect();
        let rho_sub_norm = if subnormal { subnormal_rho_norm(b, n, &weights) } else { 0.0 };
        let (groups, mut side_a) = draw_rounds(&mut rng, b, n, rounds, &weights, &side_c);
        let mut max_column_norm = norms2.iter().fold(0.0f64, |acc, &s| acc.max(s)).sqrt();
        let mut exact_magnitudes = None;
        if let Some(mag) = magnitudes {
            let (mag_norms2, _, mag_columns) = column_norms2(mag, n, &columns);
            let (_, stats) = rows_pass(mag, n, &vec![0.0; n * LANES], Some(&side_c));
            side_a = stats.iter().map(|s| [s[1], s[2]]).collect();
            max_column_norm = max_column_norm.max(mag_norms2.iter().fold(0.0f64, |acc, &s| acc.max(s)).sqrt());
            exact_magnitudes = Some(mag_columns);
        }
        Ok(Prepared {
            n,
            k,
            rounds,
            groups,
            rho_sum: side_a.iter().map(|s| s[1]).sum(),
            side_a,
            side_c,
            zero_columns: (0..n).filter(|&j| weights[j] == 0.0).collect(),
            live_columns: weights.iter().filter(|&&w| w > 0.0).count(),
            rho_sub_norm,
            weight_sum: weights.iter().sum(),
            max_column_norm,
            exact_columns: columns.into_iter().zip(gathered).collect(),
            exact_magnitudes,
            exact,
        })
    }

    /// Checks C_rows = A_rows·B for `m` rows of A (m×k) and of C (m×n).
    pub fn check(&self, a: &[f32], c: &[f32], m: usize) -> Result<Report, FreivaldsError> {
        Ok(self.details(a, c, m)?.report())
    }

    /// The check of [`Prepared::check`], row by row and entry by entry.
    pub fn details(&self, a: &[f32], c: &[f32], m: usize) -> Result<Details, FreivaldsError> {
        if m == 0 {
            return Err(FreivaldsError::BadDimensions);
        }
        for (name, actual, cols) in [("a", a.len(), self.k), ("c", c.len(), self.n)] {
            let expected = m.checked_mul(cols).ok_or(FreivaldsError::BadDimensions)?;
            if actual != expected {
                return Err(FreivaldsError::Shape { name, expected, actual });
            }
        }
        // Rows with a non-zero entry where B's column is zero.
        let misplaced: Vec<bool> =
            c.chunks_exact(self.n).map(|row| self.zero_columns.iter().any(|&j| row[j] != 0.0)).collect();
        let mut rows = vec![RowVerdict { ratio: 0.0, conviction_ratio: 0.0, tolerance: 0.0, conviction_bound: 0.0 }; m];
        // Per row: (t_i, T_i, whether a non-finite entry there proves the result wrong), from the first group.
        let mut bounds = Vec::new();
        for (g, (r, br, lanes)) in self.groups.iter().enumerate() {
            let first = g == 0;
            let (abr, a_stats) = rows_pass(a, self.k, br, first.then_some(&self.side_a[..]));
            let (cr, c_stats) = rows_pass(c, self.n, r, first.then_some(&self.side_c[..]));
            if first {
                if !a_stats.iter().all(|s| s[0].is_finite()) {
                    return Err(FreivaldsError::NonFiniteInput);
                }
                bounds = self.row_bounds(m, &a_stats, &c_stats, &misplaced);
            }
            for ((verdict, &(t, big_t, broken, proves)), (cri, abri)) in
                rows.iter_mut().zip(&bounds).zip(cr.chunks_exact(LANES).zip(abr.chunks_exact(LANES)))
            {
                (verdict.tolerance, verdict.conviction_bound) = (t, big_t);
                if broken {
                    verdict.ratio = f64::INFINITY;
                    verdict.conviction_ratio = if proves { f64::INFINITY } else { 0.0 };
                    continue;
                }
                for q in 0..*lanes {
                    let diff = (cri[q] - abri[q]).abs();
                    let diff = if diff.is_finite() { diff } else { f64::INFINITY };
                    verdict.ratio = verdict.ratio.max(diff / t);
                    verdict.conviction_ratio = verdict.conviction_ratio.max(diff / big_t);
                }
            }
        }
        let entries = self.exact.iter().map(|&(row_pick, at)| self.exact_entry(a, c, m, row_pick, at)).collect();
        Ok(Details { rounds: self.rounds, rows, entries })
    }

    /// Each row's tight tolerance t_i and conviction bound T_i, from the first pass's statistics (sa = [‖a_i‖²,
    /// Σ_k a_ik²·β_k, Σ_k |a_ik|·ρ_k], sc = [Σ_j ĉ_ij², Σ_j w_j²·ĉ_ij², Σ_j w_j·|ĉ_ij|]), whether the row is broken
    /// outright (a non-finite entry, or a non-zero one in a zero column of B), and whether that proves it wrong.
    fn row_bounds(
        &self,
        m: usize,
        a_stats: &[[f64; 3]],
        c_stats: &[[f64; 3]],
        misplaced: &[bool],
    ) -> Vec<(f64, f64, bool, bool)> {
        let (k, n) = (self.k as f64, self.n as f64);
        let gamma = gamma(self.k);
        let tight = tolerance_factor(m, self.k, self.rounds);
        let live = self.live_columns as f64;
        let conviction = conviction_factor(m, self.k, self.rounds);
        // Flushed subnormal entries of A (each below 2⁻¹²⁶), and flushed products and sums.
        let flush_all = FLUSH * self.rho_sum + 2.0 * k * FLUSH * (1.0 + gamma) * self.weight_sum;
        a_stats
            .iter()
            .zip(c_stats)
            .zip(misplaced)
            .map(|((sa, sc), &misplaced)| {
                let a_norm = sa[0].sqrt();
                let v = k / 3.0 * sc[1] + (k / 2.0 + 2.0) * sa[1];
                let flush = a_norm * self.rho_sub_norm + flush_all;
                let verifier = 1.01 * U64 * ((k + n + 2.0) * sa[2] + (n + 1.0) * sc[2]);
                let t = tight * v.sqrt() + flush + verifier + f64::MIN_POSITIVE;
                let worst = if self.exact_magnitudes.is_some() { sa[2] } else { (a_norm * live.sqrt()).min(sa[2]) };
                let big_t = conviction * worst + flush + verifier + f64::MIN_POSITIVE;
                let no_overflow = (1.0 + gamma) * a_norm * self.max_column_norm < f64::from(f32::MAX);
                let broken = !(sc[0].is_finite() && sc[1].is_finite()) || misplaced;
                (t, big_t, broken, misplaced || no_overflow)
            })
            .collect()
    }

    /// Recomputes one entry of C exactly and holds the result's value to both tolerances.
    fn exact_entry(&self, a: &[f32], c: &[f32], m: usize, row_pick: u64, at: usize) -> EntryVerdict {
        let (column, b_col) = (&self.exact_columns[at].0, &self.exact_columns[at].1);
        let mag_col = self.exact_magnitudes.as_ref().map_or(b_col, |m| &m[at]);
        let row = (row_pick % m as u64) as usize;
        let a_row = &a[row * self.k..(row + 1) * self.k];
        let (mut s, mut abs, mut q, mut prefix, mut lost) = (0.0f64, 0.0f64, 0.0f64, 0.0f64, 0.0f64);
        for ((&x, &y), &mag) in a_row.iter().zip(b_col).zip(mag_col) {
            // The product of two f32 is exact in f64.
            let p = f64::from(x) * f64::from(y);
            // The magnitude of the terms summed for it (|p| unless the product sums larger ones).
            let t = f64::from(x) * f64::from(mag);
            s += p;
            abs += t.abs();
            q += t * t;
            prefix += s * s;
            if x.is_subnormal() || y.is_subnormal() {
                lost += t.abs();
            }
        }
        let k = self.k as f64;
        let gamma = gamma(self.k);
        let value = c[row * self.n + column];
        let verdict = |ratio, conviction_ratio| EntryVerdict { row, column: *column, ratio, conviction_ratio };
        if !value.is_finite() {
            let proves = (1.0 + gamma) * abs < f64::from(f32::MAX);
            return verdict(f64::INFINITY, if proves { f64::INFINITY } else { 0.0 });
        }
        let diff = (f64::from(value) - s).abs();
        let flush = lost + 2.0 * k * FLUSH * (1.0 + gamma);
        let verifier = 1.01 * U64 * (k + 1.0) * abs;
        let phi = (k * (s * s / 3.0 + q / 2.0) + 2.0 * q).max(2.0 * prefix + 2.0 * q);
        let z = z_score(EXACT_ENTRIES as f64);
        let t = z * U32 * (1.0 + k * U32) * (1.0 + VERIFIER_SLACK) * phi.sqrt() + flush + verifier + f64::MIN_POSITIVE;
        let big_t = gamma * (1.0 + VERIFIER_SLACK) * abs + flush + verifier + f64::MIN_POSITIVE;
        verdict(diff / t, diff / big_t)
    }
}

/// The entries of C recomputed exactly: [`EXACT_ENTRIES`] (row pick, index into the distinct columns drawn).
fn pick_exact_entries(rng: &mut fastrand::Rng, n: usize) -> (Vec<usize>, Vec<(u64, usize)>) {
    let mut columns: Vec<usize> = Vec::new();
    let mut exact = Vec::with_capacity(EXACT_ENTRIES);
    for _ in 0..EXACT_ENTRIES {
        let column = rng.usize(..n);
        let row_pick = rng.u64(..);
        let at = columns.iter().position(|&j| j == column).unwrap_or_else(|| {
            columns.push(column);
            columns.len() - 1
        });
        exact.push((row_pick, at));
    }
    (columns, exact)
}

/// ‖ρ^sub‖₂: per row of B, the weighted sum of its subnormal entries' magnitudes (what a GPU may flush to zero).
fn subnormal_rho_norm(b: &[f32], n: usize, weights: &[f64]) -> f64 {
    let rho_sub = map_row_chunks(b, n, |chunk| {
        let rows = chunk.chunks_exact(n);
        let rho = |row: &[f32]| -> f64 {
            row.iter().zip(weights).filter(|(v, _)| v.is_subnormal()).map(|(v, w)| f64::from(v.abs()) * w).sum()
        };
        rows.map(|row| rho(row).powi(2)).sum::<f64>()
    });
    rho_sub.iter().sum::<f64>().sqrt()
}

/// The secret R, [`LANES`] rounds per group, column j weighted by w_j, with B·R for each group; the first pass also
/// gathers B's per-row statistics the tolerance needs.
#[allow(clippy::type_complexity)]
fn draw_rounds(
    rng: &mut fastrand::Rng,
    b: &[f32],
    n: usize,
    rounds: u32,
    weights: &[f64],
    side_c: &[[f64; 2]],
) -> (Vec<(Vec<f64>, Vec<f64>, usize)>, Vec<[f64; 2]>) {
    let mut groups = Vec::new();
    let mut side_a = Vec::new();
    let mut done = 0u32;
    while done < rounds {
        let lanes = (rounds - done).min(LANES as u32) as usize;
        let mut r = vec![0.0f64; n * LANES];
        for (rj, &w) in r.chunks_exact_mut(LANES).zip(weights) {
            for v in &mut rj[..lanes] {
                *v = w * (rng.f64() * 2.0 - 1.0);
            }
        }
        let first = groups.is_empty();
        let (br, stats) = rows_pass(b, n, &r, first.then_some(side_c));
        if first {
            side_a = stats.iter().map(|s| [s[1], s[2]]).collect();
        }
        groups.push((r, br, lanes));
        done += lanes as u32;
    }
    (groups, side_a)
}

/// Σ_k b_kj² for each column j of B (k × n, row-major), in f64; whether B has a subnormal entry; and the `columns`
/// of B, gathered while its rows stream by.
fn column_norms2(b: &[f32], n: usize, columns: &[usize]) -> (Vec<f64>, bool, Vec<Vec<f32>>) {
    let partial = map_row_chunks(b, n, |chunk| {
        let mut sums = vec![0.0f64; n];
        let mut subnormals = 0u32;
        let mut gathered: Vec<Vec<f32>> = vec![Vec::with_capacity(chunk.len() / n); columns.len()];
        for row in chunk.chunks_exact(n) {
            for (s, &v) in sums.iter_mut().zip(row) {
                let x = f64::from(v);
                *s += x * x;
                // Branch-free `is_subnormal` (|bits| in 1..=0x7f_ffff), so that the loop vectorizes.
                subnormals |= u32::from((v.to_bits() & 0x7fff_ffff).wrapping_sub(1) < 0x007f_ffff);
            }
            for (column, &j) in gathered.iter_mut().zip(columns) {
                column.push(row[j]);
            }
        }
        (sums, subnormals != 0, gathered)
    });
    let mut sums = vec![0.0f64; n];
    let mut subnormal = false;
    let mut gathered: Vec<Vec<f32>> = vec![Vec::with_capacity(b.len() / n); columns.len()];
    for (part, sub, columns) in partial {
        for (s, p) in sums.iter_mut().zip(part) {
            *s += p;
        }
        subnormal |= sub;
        for (all, part) in gathered.iter_mut().zip(columns) {
            all.extend_from_slice(&part);
        }
    }
    (sums, subnormal, gathered)
}

/// X (rows × cols, f32, row-major) times the cols × LANES matrix `r`, in f64; with `side` (weights [s_j, s'_j] per
/// column), also per row [Σ_j x_j², Σ_j x_j²·s_j, Σ_j |x_j|·s'_j]. Rows are split over the cores.
fn rows_pass(x: &[f32], cols: usize, r: &[f64], side: Option<&[[f64; 2]]>) -> (Vec<f64>, Vec<[f64; 3]>) {
    let parts = map_row_chunks(x, cols, |chunk| rows_pass_chunk(chunk, cols, r, side));
    let mut out = Vec::with_capacity(x.len() / cols * LANES);
    let mut stats = Vec::with_capacity(if side.is_some() { x.len() / cols } else { 0 });
    for (o, s) in parts {
        out.extend_from_slice(&o);
        stats.extend_from_slice(&s);
    }
    (out, stats)
}

fn rows_pass_chunk(x: &[f32], cols: usize, r: &[f64], side: Option<&[[f64; 2]]>) -> (Vec<f64>, Vec<[f64; 3]>) {
    let rows = x.len() / cols;
    let mut out = vec![0.0f64; rows * LANES];
    let mut stats = Vec::with_capacity(if side.is_some() { rows } else { 0 });
    for (row, acc_out) in x.chunks_exact(cols).zip(out.chunks_exact_mut(LANES)) {
        let mut acc = [0.0f64; LANES];
        match side {
            Some(side) => {
                let mut st = [0.0f64; 3];
                for ((&v, rj), s) in row.iter().zip(r.chunks_exact(LANES)).zip(side) {
                    let x = f64::from(v);
                    add_lanes(&mut acc, x, rj);
                    let x2 = x * x;
                    st[0] += x2;
                    st[1] += x2 * s[0];
                    st[2] += x.abs() * s[1];
                }
                stats.push(st);
            }
            None => {
                for (&v, rj) in row.iter().zip(r.chunks_exact(LANES)) {
                    add_lanes(&mut acc, f64::from(v), rj);
                }
            }
        }
        acc_out.copy_from_slice(&acc);
    }
    (out, stats)
}

/// acc += x·r over the [`LANES`] lanes, written out: the same code once optimized, and several times faster in the
/// unoptimized builds that tests run.
#[inline(always)]
fn add_lanes(acc: &mut [f64; LANES], x: f64, r: &[f64]) {
    let r = &r[..LANES];
    acc[0] += x * r[0];
    acc[1] += x * r[1];
    acc[2] += x * r[2];
    acc[3] += x * r[3];
    acc[4] += x * r[4];
    acc[5] += x * r[5];
    acc[6] += x * r[6];
    acc[7] += x * r[7];
}

/// Maps `f` over chunks of whole rows of `x` (rows × cols), one chunk per core for large matrices (small checks, most
/// tasks, run on the caller's thread), and returns the results in row order.
fn map_row_chunks<T: Send>(x: &[f32], cols: usize, f: impl Fn(&[f32]) -> T + Sync) -> Vec<T> {
    let rows = x.len() / cols;
    let threads = if x.len() < PARALLEL_MIN_ELEMENTS {
        1
    } else {
        std::thread::available_parallelism().map_or(1, |t| t.get()).min(rows.max(1))
    };
    if threads <= 1 {
        return vec![f(x)];
    }
    let rows_per = rows.div_ceil(threads).max(1);
    let f = &f;
    std::thread::scope(|scope| {
        let handles: Vec<_> = x.chunks(rows_per * cols).map(|chunk| scope.spawn(move || f(chunk))).collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))).collect()
    })
}
