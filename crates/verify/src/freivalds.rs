//! Freivalds' check of a matrix product C = A·B in O(n²) instead of O(n³), with a tolerance derived for fp32.
//!
//! The verifier draws a secret n×r matrix R (r = rounds, entries uniform in [-1, 1]) that the node never sees, so its
//! committed C cannot depend on it, and compares C·R with A·(B·R), row by row, in f64. All rounds go through one pass
//! over each matrix. [`Prepared`] keeps R and B·R for every row block of one product.
//!
//! **Tolerance.** An honest node computes C in fp32 with some summation order; the standard bound (Higham, Accuracy
//! and Stability, §3.5) gives |E_ij| ≤ γ_K·(|A||B|)_ij for E = C − AB, where γ_K = K·u/(1 − K·u), u = 2⁻²⁴. By
//! Cauchy–Schwarz (|A||B|)_ij ≤ ‖A_i‖₂·‖B_:j‖₂, so Σ_j E_ij² ≤ γ_K²·‖A_i‖₂²·‖B‖_F². R is independent of E (it is
//! drawn after the commitment), so (E·R)_iq is a sum of independent zero-mean terms bounded by |E_ij|, and Hoeffding
//! gives P(|(E·R)_iq| ≥ t) ≤ 2·exp(−t² / (2·Σ_j E_ij²)). With
//!
//!   t_i = γ_K · ‖A_i‖₂ · ‖B‖_F · √(2·ln(2·m·r / δ)),
//!
//! a union bound over the m rows and r rounds rejects an honest result with probability at most δ (we use
//! δ = 2⁻⁴⁰). The verifier's own f64 arithmetic errs by ~2⁻⁵³ relative, 2²⁹ times below γ_K; a relative slack of
//! 10⁻⁶ on t_i covers it. The bound holds for any ordinary dot-product order (blocked, tiled, fused multiply-add); it
//! does not hold for Strassen-like products or reduced-precision (TF32, fp16) units, which a matmul task forbids.
//!
//! **False accept.** Let D = C − AB be the whole deviation of a result. Fix a round and an entry (i, j); whatever
//! the other entries of R, the round passes row i only if R_jq falls in an interval of length 2·t_i/|D_ij|, which
//! has probability at most t_i/|D_ij| under the uniform density ½. Rounds are independent, so a result with an
//! entry off by |D_ij| is accepted with probability at most (t_i/|D_ij|)^r: at most 2⁻ʳ once an error reaches
//! 2·t_i, 10⁻ʳ at 10·t_i. A result not computed at all is off in almost every entry and never passes.

/// Rounds (columns of R) by default: one pass over each matrix at [`LANES`] rounds.
pub const DEFAULT_ROUNDS: u32 = 8;
/// Most rounds one check may ask for.
pub const MAX_ROUNDS: u32 = 64;
/// Rounds handled per pass over the matrices (the width of the vectorized accumulators).
pub const LANES: usize = 8;
/// log₂ of the probability δ that an honest result is rejected.
pub const FALSE_REJECT_LOG2: i32 = -40;
/// Matrices smaller than this are multiplied on one thread.
const PARALLEL_MIN_ELEMENTS: usize = 1 << 18;
/// fp32 unit roundoff.
const U32: f64 = 1.0 / 16_777_216.0;
/// Slack covering the verifier's own f64 rounding.
const VERIFIER_SLACK: f64 = 1e-6;
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
    pub accepted: bool,
    pub rounds: u32,
    /// The row whose deviation came closest to (or furthest past) its tolerance.
    pub worst_row: usize,
    /// max over rows and rounds of |C·R − A·(B·R)| / t_i: ≤ 1 passes. ∞ for a non-finite result.
    pub worst_ratio: f64,
}

/// γ_K·√(2·ln(2·m·r/δ)): t_i is this times ‖A_i‖₂·‖B‖_F.
pub fn tolerance_factor(m: usize, k: usize, rounds: u32) -> f64 {
    let ku = k as f64 * U32;
    let gamma = ku / (1.0 - ku);
    let delta = 2f64.powi(FALSE_REJECT_LOG2);
    let log_term = (2.0 * m as f64 * f64::from(rounds) / delta).ln();
    gamma * (2.0 * log_term).sqrt() * (1.0 + VERIFIER_SLACK)
}

/// Upper bound on the probability that a result with an entry off by `error` in a row with tolerance `t` passes
/// `rounds` rounds.
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

/// B's half of the check — the secret R and B·R — computed once and shared by every row block of one product: a job
/// cut into row tasks pays for B·R once instead of once per task. R stays with the verifier; it is never sent.
#[derive(Clone, Debug)]
pub struct Prepared {
    n: usize,
    k: usize,
    rounds: u32,
    /// Per group of [`LANES`] rounds: R (n × LANES) and B·R (k × LANES), and how many lanes are live.
    groups: Vec<(Vec<f64>, Vec<f64>, usize)>,
    b_frob: f64,
}

impl Prepared {
    /// Draws R from `seed` and computes B·R for B (k×n, row-major).
    pub fn new(b: &[f32], k: usize, n: usize, rounds: u32, seed: u64) -> Result<Prepared, FreivaldsError> {
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
        let mut groups = Vec::new();
        let mut b_frob2 = 0.0;
        let mut done = 0u32;
        while done < rounds {
            let lanes = (rounds - done).min(LANES as u32) as usize;
            let r: Vec<f64> =
                (0..n * LANES).map(|i| if i % LANES < lanes { rng.f64() * 2.0 - 1.0 } else { 0.0 }).collect();
            let first = groups.is_empty();
            let (br, b_sq) = times_lanes(b, n, &r, first);
            if first {
                if !b_sq.iter().all(|v| v.is_finite()) {
                    return Err(FreivaldsError::NonFiniteInput);
                }
                b_frob2 = b_sq.iter().sum();
            }
            groups.push((r, br, lanes));
            done += lanes as u32;
        }
        Ok(Prepared { n, k, rounds, groups, b_frob: f64::sqrt(b_frob2) })
    }

    /// Checks C_rows = A_rows·B for `m` rows of A (m×k) and of C (m×n).
    pub fn check(&self, a: &[f32], c: &[f32], m: usize) -> Result<Report, FreivaldsError> {
        if m == 0 {
            return Err(FreivaldsError::BadDimensions);
        }
        for (name, actual, cols) in [("a", a.len(), self.k), ("c", c.len(), self.n)] {
            let expected = m.checked_mul(cols).ok_or(FreivaldsError::BadDimensions)?;
            if actual != expected {
                return Err(FreivaldsError::Shape { name, expected, actual });
            }
        }
        let factor = tolerance_factor(m, self.k, self.rounds);
        let mut row_norm2 = Vec::new();
        let mut worst = (0usize, 0.0f64);
        for (g, (r, br, lanes)) in self.groups.iter().enumerate() {
            let (abr, a_sq) = times_lanes(a, self.k, br, g == 0);
            let (cr, _) = times_lanes(c, self.n, r, false);
            if g == 0 {
                if !a_sq.iter().all(|v| v.is_finite()) {
                    return Err(FreivaldsError::NonFiniteInput);
                }
                row_norm2 = a_sq;
            }
            for i in 0..m {
                let t = factor * row_norm2[i].sqrt() * self.b_frob + f64::MIN_POSITIVE;
                for q in 0..*lanes {
                    let diff = (cr[i * LANES + q] - abr[i * LANES + q]).abs();
                    // A non-finite result (NaN or ∞ anywhere in the row) is infinitely far off.
                    let ratio = if diff.is_finite() { diff / t } else { f64::INFINITY };
                    if ratio > worst.1 {
                        worst = (i, ratio);
                    }
                }
            }
        }
        Ok(Report { accepted: worst.1 <= 1.0, rounds: self.rounds, worst_row: worst.0, worst_ratio: worst.1 })
    }
}

/// X (rows × cols, f32, row-major) times the cols × LANES matrix `r`, in f64; also each row's squared norm when
/// `norms` is set. Rows are split over the available cores.
fn times_lanes(x: &[f32], cols: usize, r: &[f64], norms: bool) -> (Vec<f64>, Vec<f64>) {
    let rows = x.len() / cols;
    let mut out = vec![0.0f64; rows * LANES];
    let mut sq = vec![0.0f64; if norms { rows } else { 0 }];
    // Threads pay off only for large matrices; small checks (most tasks) run on the caller's thread.
    let threads = if x.len() < PARALLEL_MIN_ELEMENTS {
        1
    } else {
        std::thread::available_parallelism().map_or(1, |t| t.get()).min(rows.max(1))
    };
    let rows_per = rows.div_ceil(threads).max(1);
    if threads == 1 {
        rows_times_lanes(x, cols, r, &mut out, norms.then_some(&mut sq[..]));
        return (out, sq);
    }
    std::thread::scope(|scope| {
        let mut sq_chunks: Vec<&mut [f64]> = if norms { sq.chunks_mut(rows_per).collect() } else { Vec::new() };
        for (t, out_chunk) in out.chunks_mut(rows_per * LANES).enumerate() {
            let sq_chunk = if norms { Some(std::mem::take(&mut sq_chunks[t])) } else { None };
            let x_chunk = &x[t * rows_per * cols..((t * rows_per + out_chunk.len() / LANES) * cols)];
            scope.spawn(move || rows_times_lanes(x_chunk, cols, r, out_chunk, sq_chunk));
        }
    });
    (out, sq)
}

fn rows_times_lanes(x: &[f32], cols: usize, r: &[f64], out: &mut [f64], mut sq: Option<&mut [f64]>) {
    for (i, (row, acc_out)) in x.chunks_exact(cols).zip(out.chunks_exact_mut(LANES)).enumerate() {
        let mut acc = [0.0f64; LANES];
        let mut norm = 0.0f64;
        for (&v, rj) in row.iter().zip(r.chunks_exact(LANES)) {
            let v = f64::from(v);
            norm += v * v;
            for q in 0..LANES {
                acc[q] += v * rj[q];
            }
        }
        acc_out.copy_from_slice(&acc);
        if let Some(sq) = sq.as_deref_mut() {
            sq[i] = norm;
        }
    }
}
