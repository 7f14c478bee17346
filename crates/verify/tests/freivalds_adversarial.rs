//! Freivalds' two tiers against what a cheater or a hostile client can actually send, at the inner dimensions of
//! real tasks (K = 1024 … 16384, m = 64 rows, n = 256 columns): results from cheaper arithmetic (fp16, bf16, TF32,
//! int8), from part of the work (scaled, truncated K), with one entry or one column wrong, are not accepted on any
//! secret seed; gross forgeries are proven wrong; honest fp32 results from every ordinary summation order pass; and
//! operands built to make rounding systematic never get an honest node convicted.
//!
//! Our crates build at opt-level 0 in tests: products from the GEMM crate (optimized) use the full shape, products
//! from our own naive summation loops use few rows.
//!
//! `measure_false_rejects_and_accepts` (ignored; run it with
//! `cargo test -p neurolov-verify --release --test freivalds_adversarial -- --ignored --nocapture`) runs millions of
//! honest row checks and thousands of forgeries and prints the figures quoted in the `freivalds` module doc.

#![allow(clippy::unwrap_used)] // Test helpers unwrap: a panic is the failure report.

use neurolov_kernels::cpu::sgemm;
use neurolov_kernels::ops::random_vec;
use std::rc::Rc;

use neurolov_verify::freivalds::{Prepared, Report, tolerance_factor};

const KS: [usize; 3] = [1024, 4096, 16384];
const M: usize = 64;
const N: usize = 256;
/// Secret seeds every forgery must fail on.
const SEEDS: u64 = 10;

#[derive(Clone, Copy, Debug)]
enum Dist {
    /// Uniform in [-1, 1].
    Uniform,
    /// Standard normal (Box–Muller).
    Normal,
    /// Uniform in [0, 1]: every product positive, partial sums grow linearly.
    Positive,
}

fn inputs(dist: Dist, len: usize, seed: u64) -> Vec<f32> {
    let mut rng = fastrand::Rng::with_seed(seed);
    match dist {
        Dist::Uniform => random_vec(len, seed),
        Dist::Positive => (0..len).map(|_| rng.f32()).collect(),
        Dist::Normal => (0..len)
            .map(|_| {
                let (u1, u2) = (1.0 - rng.f64(), rng.f64());
                ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
            })
            .collect(),
    }
}

/// How an honest node may sum each dot product in fp32.
#[derive(Clone, Copy, Debug)]
enum Order {
    /// The CPU fallback's GEMM (matrixmultiply: register-blocked micro-kernel, k in cache blocks).
    Gemm,
    /// One fused multiply-add per product into one accumulator (a GPU thread's loop).
    Sequential,
    /// k in blocks: each block summed on its own, then added to the total (tiled GPU kernels, WebGL, lavapipe).
    Blocked(usize),
    /// k split into parts summed separately and added at the end (split-K, as in cuBLAS).
    SplitK(usize),
}

fn product(order: Order, a: &[f32], b: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
    let mut c = vec![0.0f32; m * n];
    if let Order::Gemm = order {
        sgemm(a, b, &mut c, m, n, k);
        return c;
    }
    // B's columns contiguous, so the naive loops below stay tolerable at opt-level 0.
    let bt: Vec<f32> = (0..n).flat_map(|j| (0..k).map(move |p| b[p * n + j])).collect();
    let seq = |x: &[f32], y: &[f32]| x.iter().zip(y).fold(0.0f32, |acc, (&u, &v)| u.mul_add(v, acc));
    for i in 0..m {
        let row = &a[i * k..(i + 1) * k];
        for j in 0..n {
            let col = &bt[j * k..(j + 1) * k];
            c[i * n + j] = match order {
                Order::Gemm | Order::Sequential => seq(row, col),
                Order::Blocked(size) => row.chunks(size).zip(col.chunks(size)).map(|(x, y)| seq(x, y)).sum(),
                Order::SplitK(parts) => {
                    let size = k.div_ceil(parts);
                    row.chunks(size).zip(col.chunks(size)).map(|(x, y)| seq(x, y)).sum()
                }
            };
        }
    }
    c
}

/// fp32 values rounded to nearest-even with `drop` fewer mantissa bits (TF32: 13, bf16: 16).
fn round_mantissa(x: f32, drop: u32) -> f32 {
    let bits = x.to_bits();
    let half = (1u32 << (drop - 1)) - 1 + ((bits >> drop) & 1);
    f32::from_bits(bits.wrapping_add(half) & !((1u32 << drop) - 1))
}

fn fp16(x: f32) -> f32 {
    // Below 2⁻¹⁴ fp16 is subnormal: a fixed step of 2⁻²⁴.
    if x.abs() < 2f32.powi(-14) {
        (x * 2f32.powi(24)).round_ties_even() * 2f32.powi(-24)
    } else {
        round_mantissa(x, 13)
    }
}

/// Symmetric int8 quantization with one scale per matrix.
fn int8(v: &[f32]) -> Vec<f32> {
    let scale = v.iter().fold(0.0f32, |s, x| s.max(x.abs())) / 127.0;
    v.iter().map(|x| (x / scale).round() * scale).collect()
}

fn reduced(name: &str, v: &[f32]) -> Vec<f32> {
    match name {
        "fp16" => v.iter().map(|&x| fp16(x)).collect(),
        "bf16" => v.iter().map(|&x| round_mantissa(x, 16)).collect(),
        "tf32" => v.iter().map(|&x| round_mantissa(x, 13)).collect(),
        "int8" => int8(v),
        _ => unreachable!("{name}"),
    }
}

/// The one check helper: the verdicts of results `cs` for A·B at the secret `seed`, default rounds (B's half of the
/// check is prepared once for all of them, as the coordinator does for a job's row tasks).
fn check(b: &[f32], a: &[f32], cs: &[&[f32]], m: usize, n: usize, k: usize, seed: u64) -> Vec<Report> {
    let prepared = Prepared::new(b, k, n, 8, seed).unwrap();
    cs.iter().map(|c| prepared.check(a, c, m).unwrap()).collect()
}

struct Case {
    name: String,
    a: Rc<Vec<f32>>,
    b: Rc<Vec<f32>>,
    c: Vec<f32>,
}

/// Results that a node could pass off for m×K by K×n products: each far smaller a shortcut than skipping the work.
fn subtle_forgeries(dist: Dist, k: usize, seed: u64) -> Vec<Case> {
    let (a, b) = (Rc::new(inputs(dist, M * k, seed)), Rc::new(inputs(dist, k * N, seed + 1)));
    let c = product(Order::Gemm, &a, &b, M, N, k);
    let case = |name: &str, a: &Rc<Vec<f32>>, b: &Rc<Vec<f32>>, c| Case {
        name: format!("{dist:?} {name}"),
        a: a.clone(),
        b: b.clone(),
        c,
    };
    let mut cases = vec![case("scaled by 0.99", &a, &b, c.iter().map(|v| v * 0.99).collect())];
    // Only the first 80% of K multiplied.
    let kk = k * 4 / 5;
    let a_part: Vec<f32> = a.chunks_exact(k).flat_map(|row| row[..kk].to_vec()).collect();
    cases.push(case("truncated K", &a, &b, product(Order::Gemm, &a_part, &b[..kk * N], M, N, kk)));
    for name in ["fp16", "bf16", "tf32", "int8"] {
        cases.push(case(name, &a, &b, product(Order::Gemm, &reduced(name, &a), &reduced(name, &b), M, N, k)));
    }
    // One entry off by 1%: the largest of row 9, so that 1% is not lost below rounding.
    let mut one = c.clone();
    let j = (0..N).max_by(|&x, &y| c[9 * N + x].abs().total_cmp(&c[9 * N + y].abs())).unwrap();
    one[9 * N + j] *= 1.01;
    cases.push(case("one entry off by 1%", &a, &b, one));
    // One column of B a thousand times larger; the result correct there, off by 1% at one entry of another column.
    let mut b_out = b.to_vec();
    for p in 0..k {
        b_out[p * N + 3] *= 1000.0;
    }
    let mut c_out = product(Order::Gemm, &a, &b_out, M, N, k);
    let j = (0..N).filter(|&j| j != 3).max_by(|&x, &y| c_out[20 * N + x].abs().total_cmp(&c_out[20 * N + y].abs()));
    c_out[20 * N + j.unwrap()] *= 1.01;
    cases.push(case("outlier column, another column off by 1%", &a, &Rc::new(b_out), c_out));
    cases
}

fn gross_forgeries(k: usize, seed: u64) -> Vec<Case> {
    let (a, b) = (Rc::new(inputs(Dist::Uniform, M * k, seed)), Rc::new(inputs(Dist::Uniform, k * N, seed + 1)));
    let c = product(Order::Gemm, &a, &b, M, N, k);
    let other = product(Order::Gemm, &inputs(Dist::Uniform, M * k, seed + 2), &b, M, N, k);
    let mut nan = c.clone();
    nan[17 * N + 5] = f32::NAN;
    let mut inf = c;
    inf[M * N - 1] = f32::INFINITY;
    [
        ("zeros", vec![0.0; M * N]),
        ("random", inputs(Dist::Uniform, M * N, seed + 3)),
        ("product of other inputs", other),
        ("nan", nan),
        ("infinity", inf),
    ]
    .into_iter()
    .map(|(name, c)| Case { name: name.into(), a: a.clone(), b: b.clone(), c })
    .collect()
}

/// Runs `verdict` on every case and secret seed; returns the failures.
fn run(cases: &[Case], k: usize, verdict: impl Fn(&Report) -> bool) -> Vec<String> {
    let mut failures = Vec::new();
    let mut least = vec![f64::INFINITY; cases.len()];
    for seed in 0..SEEDS {
        // Cases that share B (and A) share one prepared check.
        let mut done = vec![false; cases.len()];
        for first in 0..cases.len() {
            if done[first] {
                continue;
            }
            let same: Vec<usize> = (first..cases.len())
                .filter(|&i| Rc::ptr_eq(&cases[i].b, &cases[first].b) && Rc::ptr_eq(&cases[i].a, &cases[first].a))
                .collect();
            let cs: Vec<&[f32]> = same.iter().map(|&i| &cases[i].c[..]).collect();
            let (a, b) = (&cases[first].a, &cases[first].b);
            for (&i, r) in same.iter().zip(check(b, a, &cs, M, N, k, 1000 + seed)) {
                done[i] = true;
                least[i] = least[i].min(r.worst_ratio);
                if !verdict(&r) {
                    failures.push(format!("K={k} {} seed {seed}: {r:?}", cases[i].name));
                }
            }
        }
    }
    for (case, least) in cases.iter().zip(least) {
        println!("K={k:>5} {:<50} least worst_ratio {least:.3e}", case.name);
    }
    failures
}

#[test]
fn cheaper_arithmetic_and_partial_work_are_never_accepted() {
    let mut failures = Vec::new();
    for (i, k) in KS.into_iter().enumerate() {
        for dist in [Dist::Uniform, Dist::Normal] {
            failures.extend(run(&subtle_forgeries(dist, k, 10 * i as u64), k, |r| !r.accepted));
        }
    }
    assert!(failures.is_empty(), "accepted:\n{}", failures.join("\n"));
}

#[test]
fn gross_forgeries_are_proven_wrong() {
    let mut failures = Vec::new();
    for (i, k) in KS.into_iter().enumerate() {
        failures.extend(run(&gross_forgeries(k, 50 + i as u64), k, |r| r.proven_wrong && !r.accepted));
    }
    assert!(failures.is_empty(), "not proven wrong:\n{}", failures.join("\n"));
}

#[test]
fn honest_fp32_passes_in_every_summation_order() {
    let orders = [Order::Gemm, Order::Sequential, Order::Blocked(16), Order::Blocked(64), Order::SplitK(4)];
    let (m, n) = (4, 64);
    let mut failures = Vec::new();
    for (i, k) in KS.into_iter().enumerate() {
        for dist in [Dist::Uniform, Dist::Normal, Dist::Positive] {
            let a = inputs(dist, m * k, 100 + i as u64);
            let b = inputs(dist, k * n, 200 + i as u64);
            let results: Vec<Vec<f32>> = orders.iter().map(|&order| product(order, &a, &b, m, n, k)).collect();
            let cs: Vec<&[f32]> = results.iter().map(|c| &c[..]).collect();
            let mut worst = [0.0f64; 5];
            for seed in 0..SEEDS {
                for ((r, order), worst) in check(&b, &a, &cs, m, n, k, seed).iter().zip(orders).zip(&mut worst) {
                    *worst = worst.max(r.worst_ratio);
                    if !r.accepted || r.proven_wrong {
                        failures.push(format!("K={k} {dist:?} {order:?} seed {seed}: {r:?}"));
                    }
                }
            }
            for (order, worst) in orders.iter().zip(worst) {
                println!("K={k:>5} {dist:?} {order:?}: worst_ratio {worst:.3e}");
            }
        }
    }
    assert!(failures.is_empty(), "honest results rejected:\n{}", failures.join("\n"));
}

#[test]
fn constant_operands_never_convict_an_honest_node() {
    // Every product the same value: the rounding errors of a sequential fp32 sum all point the same way and grow like
    // K·u, past the tight tolerance; the conviction bound must still hold.
    let (m, n) = (2, 32);
    let mut failures = Vec::new();
    for k in KS {
        for (x, y) in [(0.1f32, 0.1f32), (1.0 / 3.0, 1.0 / 3.0), (0.1, 1.0 / 3.0), (0.7, 1.3)] {
            let (a, b) = (vec![x; m * k], vec![y; k * n]);
            for order in [Order::Sequential, Order::Blocked(64)] {
                // Also without fused multiply-add: every product rounded too.
                let plain = || -> Vec<f32> { vec![(0..k).fold(0.0f32, |s, _| s + x * y); m * n] };
                let c = if let Order::Sequential = order { plain() } else { product(order, &a, &b, m, n, k) };
                let mut worst = (0.0f64, 0.0f64);
                for seed in 0..SEEDS {
                    let r = check(&b, &a, &[&c], m, n, k, seed).remove(0);
                    worst = (worst.0.max(r.worst_ratio), worst.1.max(r.conviction_ratio));
                    if r.proven_wrong {
                        failures.push(format!("K={k} {x}·{y} {order:?} seed {seed}: {r:?}"));
                    }
                }
                println!("K={k:>5} {x}·{y} {order:?}: worst_ratio {:.3e}, conviction_ratio {:.3e}", worst.0, worst.1);
            }
        }
    }
    assert!(failures.is_empty(), "honest results convicted:\n{}", failures.join("\n"));
}

/// Q(x) = P(N(0, 1) > x), from erfc's continued fraction for large x and a series otherwise (x ≥ 0).
fn gaussian_tail(x: f64) -> f64 {
    if x < 3.0 {
        // Abramowitz & Stegun 7.1.26 (absolute error < 1.5e-7), ample below 3σ.
        let t = 1.0 / (1.0 + 0.327_591_1 * x / std::f64::consts::SQRT_2);
        let poly =
            t * (0.254_829_592 + t * (-0.284_496_736 + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
        return 0.5 * poly * (-x * x / 2.0).exp();
    }
    // Lentz-free continued fraction Q(x) = φ(x) / (x + 1/(x + 2/(x + 3/(x + …)))).
    let mut f = x;
    for i in (1..60).rev() {
        f = x + f64::from(i) / f;
    }
    (-x * x / 2.0).exp() / (2.0 * std::f64::consts::PI).sqrt() / f
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn mean_std(v: &[f64]) -> (f64, f64) {
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    (mean, (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (v.len() - 1) as f64).sqrt())
}

/// The false-reject and false-accept figures of the `freivalds` module doc. Release build: about a minute on 2 cores.
#[test]
#[ignore = "a measurement: run it in release with --nocapture"]
fn measure_false_rejects_and_accepts() {
    let orders = [Order::Gemm, Order::Sequential, Order::Blocked(16), Order::Blocked(64), Order::SplitK(4)];
    let seeds: u64 = std::env::var("SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(400);
    let (m, n) = (M, N);
    let mut worst_ratios = Vec::new(); // one per honest row check (8 rounds)
    let mut entry_ratios = Vec::new(); // one per exact entry check
    let mut row_scale: Vec<Vec<f64>> = Vec::new(); // per configuration, per honest row: √(Σ_j w_j²·E_ij²) / t_i
    let mut row_l1 = 0.0f64; // max over rows of Σ_j w_j·|E_ij| / t_i: |S_iq| can never exceed it
    let mut entry_scale = Vec::new(); // per config: RMS of |ĉ − c| / t_e over its exact entries
    let started = std::time::Instant::now();
    for (di, dist) in [Dist::Uniform, Dist::Normal, Dist::Positive].into_iter().enumerate() {
        for (ki, k) in KS.into_iter().enumerate() {
            let seed = 7000 + 10 * (3 * di + ki) as u64;
            let (a, b) = (inputs(dist, m * k, seed), inputs(dist, k * n, seed + 1));
            let results: Vec<Vec<f32>> = orders.iter().map(|&order| product(order, &a, &b, m, n, k)).collect();
            // The exact product (f64; products of f32 are exact, the sums err by ~2⁻⁵³) and B's column weights.
            let b_ref = &b;
            let bt: Vec<f64> = (0..n).flat_map(|j| (0..k).map(move |p| f64::from(b_ref[p * n + j]))).collect();
            let exact: Vec<f64> = (0..m * n)
                .map(|ij| {
                    let (row, col) = (&a[ij / n * k..(ij / n + 1) * k], &bt[ij % n * k..(ij % n + 1) * k]);
                    row.iter().zip(col).map(|(&x, &y)| f64::from(x) * y).sum()
                })
                .collect();
            let w: Vec<f64> =
                bt.chunks_exact(k).map(|col| 1.0 / col.iter().map(|v| v * v).sum::<f64>().sqrt()).collect();
            let cs: Vec<&[f32]> = results.iter().map(|c| &c[..]).collect();
            let mut entries: Vec<Vec<f64>> = vec![Vec::new(); orders.len()];
            for s in 0..seeds {
                let prepared = Prepared::new(&b, k, n, 8, 90_000 + s).unwrap();
                for (o, c) in cs.iter().enumerate() {
                    let details = prepared.details(&a, c, m).unwrap();
                    if s == 0 {
                        row_scale.push(Vec::new());
                        for (i, row) in details.rows.iter().enumerate() {
                            let e = |j: usize| (f64::from(c[i * n + j]) - exact[i * n + j]) * w[j];
                            row_scale
                                .last_mut()
                                .unwrap()
                                .push((0..n).map(|j| e(j).powi(2)).sum::<f64>().sqrt() / row.tolerance);
                            row_l1 = row_l1.max((0..n).map(|j| e(j).abs()).sum::<f64>() / row.tolerance);
                        }
                    }
                    worst_ratios.extend(details.rows.iter().map(|r| r.ratio));
                    entries[o].extend(details.entries.iter().map(|e| e.ratio));
                }
            }
            for (order, ratios) in orders.iter().zip(entries) {
                let rms = (ratios.iter().map(|r| r * r).sum::<f64>() / ratios.len() as f64).sqrt();
                println!("{dist:?} K={k} {order:?}: exact entries RMS ratio {rms:.3e}");
                entry_scale.push(rms);
                entry_ratios.extend(ratios);
            }
            println!("{dist:?} K={k} done after {:.0?}", started.elapsed());
        }
    }
    worst_ratios.sort_by(f64::total_cmp);
    entry_ratios.sort_by(f64::total_cmp);
    let above = |v: &[f64], x: f64| v.iter().filter(|&&r| r > x).count();
    println!(
        "honest row checks: {} (m = {m}, n = {n}, 8 rounds), worst_ratio max {:.3e}, 99.9th percentile {:.3e}, \
         median {:.3e}; above 0.5: {}, above 1: {}",
        worst_ratios.len(),
        worst_ratios[worst_ratios.len() - 1],
        percentile(&worst_ratios, 0.999),
        percentile(&worst_ratios, 0.5),
        above(&worst_ratios, 0.5),
        above(&worst_ratios, 1.0),
    );
    println!(
        "honest exact-entry checks: {}, ratio max {:.3e}, 99.9th percentile {:.3e}; above 1: {}",
        entry_ratios.len(),
        entry_ratios[entry_ratios.len() - 1],
        percentile(&entry_ratios, 0.999),
        above(&entry_ratios, 1.0),
    );
    // Tail. Given a row's rounding errors E, S_iq = Σ_j w_j·R_jq·E_ij over the uniform R: Hoeffding bounds one round
    // past τ·t_i by 2·exp(−τ²/(2g²)), g = √(Σ_j w_j²·E_ij²)/t_i, and |S_iq| ≤ Σ_j w_j·|E_ij| always. Within one
    // configuration, g (a sum over n columns of rounding errors) is fitted with a Gaussian across its rows:
    // P(row rejected) ≤ min over g* of P(g > g*) + 2·r·exp(−τ²/(2g*²)); the worst configuration is quoted.
    let tail = |tau: f64, rounds: f64| {
        let mut worst = (0.0f64, 0.0, 0.0, 0.0);
        for g in &row_scale {
            let (mean, std) = mean_std(g);
            let max = g.iter().fold(0.0f64, |x, &y| x.max(y));
            let mut best = 1.0f64;
            for step in 0..4000 {
                let g_star = max * (1.0 + step as f64 * 0.005);
                let p = gaussian_tail((g_star - mean) / std)
                    + 2.0 * rounds * (-(tau * tau) / (2.0 * g_star * g_star)).exp();
                best = best.min(p);
            }
            if best > worst.0 {
                worst = (best, mean, std, max);
            }
        }
        worst
    };
    let g_max = row_scale.iter().flatten().fold(0.0f64, |x, &y| x.max(y));
    let (p, mean, std, max) = tail(1.0, 8.0);
    println!(
        "rows: {} (distinct rounding errors), g = √(Σ w²E²)/t max {g_max:.3e}; max Σ w|E|/t {row_l1:.3e} (≤ 1: no R \
         rejects these rows); per-configuration Gaussian fit: P(reject per row) ≤ {p:.1e} (worst configuration: g \
         mean {mean:.3e}, std {std:.3e}, max {max:.3e})",
        row_scale.iter().map(Vec::len).sum::<usize>(),
    );
    // Node self-check: margin 0.5 at 2 rounds, i.e. 0.5·t(m, 2) instead of t(m, 8).
    let node = tolerance_factor(m, 4096, 2) * 0.5 / tolerance_factor(m, 4096, 8);
    let (p, ..) = tail(node, 2.0);
    println!("node self-check (2 rounds, margin 0.5 = {node:.3}·t): P(honest row fails) ≤ {p:.1e}");
    let (e_max, e_mean) = (entry_scale.iter().fold(0.0f64, |x, &y| x.max(y)), mean_std(&entry_scale).0);
    println!(
        "exact entries: RMS of |ĉ − c|/t_e per configuration: mean {e_mean:.3e}, max {e_max:.3e}; Gaussian: \
         P(reject per entry) ≈ 2·Q(1/{e_max:.3e}) = {:.1e}",
        2.0 * gaussian_tail(1.0 / e_max)
    );

    // False accepts: every forgery class, many secret seeds.
    let forgery_seeds = seeds / 2;
    for (i, k) in KS.into_iter().enumerate() {
        let mut cases = subtle_forgeries(Dist::Uniform, k, 10 * i as u64);
        cases.extend(subtle_forgeries(Dist::Normal, k, 10 * i as u64));
        // Not required to fail: with every product positive, honest sequential rounding grows like √K·u·c and
        // reaches the size of fp16/TF32 input rounding at large K (see the module doc).
        cases.extend(subtle_forgeries(Dist::Positive, k, 10 * i as u64));
        cases.extend(gross_forgeries(k, 50 + i as u64));
        let mut tally = vec![(0u64, 0u64, f64::INFINITY); cases.len()];
        for s in 0..forgery_seeds {
            let mut prepared: Vec<(*const Vec<f32>, Prepared)> = Vec::new();
            for (case, tally) in cases.iter().zip(&mut tally) {
                let key = Rc::as_ptr(&case.b);
                if !prepared.iter().any(|(p, _)| *p == key) {
                    prepared.push((key, Prepared::new(&case.b, k, N, 8, 5_000_000 + s).unwrap()));
                }
                let p = &prepared.iter().find(|(p, _)| *p == key).unwrap().1;
                let r = p.check(&case.a, &case.c, M).unwrap();
                tally.0 += u64::from(r.accepted);
                tally.1 += u64::from(r.proven_wrong);
                tally.2 = tally.2.min(r.worst_ratio);
            }
        }
        for (case, (accepted, proven, least)) in cases.iter().zip(tally) {
            println!(
                "K={k:>5} {:<50} accepted {accepted}/{forgery_seeds}, proven wrong {proven}/{forgery_seeds}, \
                 least worst_ratio {least:.3e}",
                case.name
            );
        }
    }
    println!("measured in {:.0?}", started.elapsed());
}
