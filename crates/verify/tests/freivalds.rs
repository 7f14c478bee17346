//! Freivalds' check on real fp32 products: honest results from the CPU GEMM pass, forged ones fail, and the
//! tolerance is neither so tight that rounding fails nor so loose that a gross error passes. Edge cases of the
//! operands (zero columns, subnormals a GPU flushes, results that honestly overflow) never convict an honest node.
//! `freivalds_adversarial.rs` holds the check to cheaper arithmetic and partial work at large K.

#![allow(clippy::unwrap_used)] // Test helpers unwrap: a panic is the failure report.

use neurolov_kernels::cpu::sgemm;
use neurolov_kernels::ops::random_vec;
use neurolov_verify::freivalds::{FreivaldsError, Prepared, check, false_accept_bound};

fn product(m: usize, n: usize, k: usize, seed: u64) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let a = random_vec(m * k, seed);
    let b = random_vec(k * n, seed + 1);
    let mut c = vec![0.0; m * n];
    sgemm(&a, &b, &mut c, m, n, k);
    (a, b, c)
}

#[test]
fn honest_products_pass_at_odd_shapes() {
    for (i, &(m, n, k)) in [(1, 1, 1), (7, 17, 255), (255, 1, 1000), (100, 100, 100), (33, 65, 2047)].iter().enumerate()
    {
        let (a, b, c) = product(m, n, k, i as u64);
        let r = check(&a, &b, &c, m, n, k, 8, 99).unwrap();
        assert!(r.accepted, "{m}x{n}x{k}: {r:?}");
    }
}

#[test]
fn honest_results_use_a_small_but_real_part_of_the_tolerance() {
    // Inside with room to spare (the node's self-check fails above half of it), but not so loose that real rounding
    // is lost in it: the old worst-case tolerance left honest results at 10⁻⁴ of it here and 5·10⁻⁷ at K = 16384.
    let (a, b, c) = product(256, 256, 256, 1);
    let r = check(&a, &b, &c, 256, 256, 256, 8, 5).unwrap();
    assert!(r.accepted && !r.proven_wrong, "{r:?}");
    assert!(r.worst_ratio < 0.25 && r.worst_ratio > 0.005, "{r:?}");
    // The rigorous conviction bound sits far above both.
    assert!(r.conviction_ratio < 0.01, "{r:?}");
}

#[test]
fn forgeries_fail() {
    let (m, n, k) = (128, 96, 200);
    let (a, b, c) = product(m, n, k, 3);
    let forgeries: Vec<(&str, Vec<f32>)> = vec![
        ("zeros", vec![0.0; m * n]),
        ("random", random_vec(m * n, 77)),
        ("one entry off by 1", {
            let mut f = c.clone();
            f[5 * n + 7] += 1.0;
            f
        }),
        ("one row skipped", {
            let mut f = c.clone();
            f[40 * n..41 * n].fill(0.0);
            f
        }),
        ("transposed tile", {
            let mut f = c.clone();
            f.swap(n + 2, 2 * n + 1);
            f
        }),
        ("nan", {
            let mut f = c.clone();
            f[0] = f32::NAN;
            f
        }),
        ("infinity", {
            let mut f = c.clone();
            f[m * n - 1] = f32::INFINITY;
            f
        }),
        ("product of other inputs", product(m, n, k, 4).2),
    ];
    for (name, forged) in forgeries {
        for seed in 0..20 {
            let r = check(&a, &b, &forged, m, n, k, 8, seed).unwrap();
            assert!(!r.accepted, "{name} passed with seed {seed}: {r:?}");
            // Off by far more than any summation order of any operands can explain: convicted, too.
            assert!(r.proven_wrong, "{name} not proven wrong with seed {seed}: {r:?}");
        }
    }
}

#[test]
fn the_false_accept_bound_matches_the_tolerance() {
    // A single entry perturbed by 2.2 times its tolerance t_i·‖b_j‖₂ passes 2 rounds with probability ≤ 2.2⁻²; measure
    // that it does not pass more often.
    let (m, n, k) = (16, 16, 64);
    let (a, b, c) = product(m, n, k, 9);
    let t_row = Prepared::new(&b, k, n, 2, 0).unwrap().details(&a, &c, m).unwrap().rows[0].tolerance;
    let norm_b3 = (0..k).map(|p| f64::from(b[p * n + 3]).powi(2)).sum::<f64>().sqrt();
    let t0 = t_row * norm_b3;
    let mut forged = c.clone();
    forged[3] += (2.2 * t0) as f32;
    let trials = 2000;
    let passed = (0..trials).filter(|&s| check(&a, &b, &forged, m, n, k, 2, s).unwrap().accepted).count();
    let bound = false_accept_bound(2.2 * t0, t0, 2);
    assert!(bound < 0.21);
    assert!((passed as f64) < bound * trials as f64 * 1.3 + 10.0, "{passed} of {trials} passed, bound {bound}");
    // And the tolerance is what it claims: half of it is not caught this way.
    let mut small = c.clone();
    small[3] += (0.5 * t0) as f32;
    let passed_small = (0..200).filter(|&s| check(&a, &b, &small, m, n, k, 2, s).unwrap().accepted).count();
    assert!(passed_small > 150, "{passed_small} of 200");
}

#[test]
fn bad_arguments_are_typed_errors() {
    let (a, b, c) = product(4, 4, 4, 1);
    assert_eq!(
        check(&a, &b, &c[..15], 4, 4, 4, 8, 1),
        Err(FreivaldsError::Shape { name: "c", expected: 16, actual: 15 })
    );
    assert_eq!(check(&a, &b, &c, 4, 4, 4, 0, 1), Err(FreivaldsError::BadRounds(0)));
    assert_eq!(check(&a, &b, &c, 0, 4, 4, 8, 1), Err(FreivaldsError::BadDimensions));
    let mut bad_a = a.clone();
    bad_a[0] = f32::NAN;
    assert_eq!(check(&bad_a, &b, &c, 4, 4, 4, 8, 1), Err(FreivaldsError::NonFiniteInput));
}

#[test]
fn a_shared_b_r_checks_each_row_block_on_its_own() {
    let (m, n, k, tile) = (96, 40, 70, 32);
    let (a, b, mut c) = product(m, n, k, 11);
    let prepared = neurolov_verify::freivalds::Prepared::new(&b, k, n, 8, 17).unwrap();
    for t in 0..m / tile {
        let (ar, cr) = (&a[t * tile * k..(t + 1) * tile * k], &c[t * tile * n..(t + 1) * tile * n]);
        assert!(prepared.check(ar, cr, tile).unwrap().accepted, "honest block {t}");
    }
    // One wrong entry in the middle block: only that block fails, and at the right row.
    c[(tile + 5) * n + 3] += 0.5;
    let verdicts: Vec<bool> = (0..m / tile)
        .map(|t| prepared.check(&a[t * tile * k..(t + 1) * tile * k], &c[t * tile * n..(t + 1) * tile * n], tile))
        .map(|r| r.unwrap().accepted)
        .collect();
    assert_eq!(verdicts, vec![true, false, true]);
    let r = prepared.check(&a[tile * k..2 * tile * k], &c[tile * n..2 * tile * n], tile).unwrap();
    assert_eq!(r.worst_row, 5);
    // Shapes are checked against the prepared B.
    assert!(matches!(prepared.check(&a[..tile * k], &c[..tile * n - 1], tile), Err(FreivaldsError::Shape { .. })));
}

#[test]
fn a_zero_column_of_b_must_give_exact_zeros() {
    let (m, n, k) = (8, 12, 50);
    let a = random_vec(m * k, 1);
    let mut b = random_vec(k * n, 2);
    for p in 0..k {
        b[p * n + 4] = 0.0;
    }
    let mut c = vec![0.0; m * n];
    sgemm(&a, &b, &mut c, m, n, k);
    assert!(check(&a, &b, &c, m, n, k, 8, 1).unwrap().accepted);
    // Any value there is wrong, however small: an honest sum of zero products is exactly zero in any order.
    c[3 * n + 4] = 1e-30;
    let r = check(&a, &b, &c, m, n, k, 8, 1).unwrap();
    assert!(!r.accepted && r.proven_wrong && r.worst_row == 3, "{r:?}");
}

#[test]
fn a_gpu_that_flushes_subnormals_is_not_convicted() {
    // A GPU may flush subnormal inputs to zero and lose their products. That is the hardware's arithmetic, not fraud.
    let (m, n, k) = (16, 16, 64);
    let flush = |v: &[f32]| -> Vec<f32> { v.iter().map(|&x| if x.is_subnormal() { 0.0 } else { x }).collect() };
    // Column 5 of A subnormal, row 5 of B huge: the lost products (0.01 each) are 10⁶ times the rounding error.
    let (mut a1, mut b1) = (random_vec(m * k, 3), random_vec(k * n, 4));
    (0..m).for_each(|i| a1[i * k + 5] = 1e-39);
    (0..n).for_each(|j| b1[5 * n + j] = 1e37);
    // Row 5 of B subnormal, column 5 of A huge, the rest of B tiny: the lost products dominate the result, beyond
    // even the worst-case rounding bound.
    let (mut a2, b2) = (random_vec(m * k, 5), random_vec(k * n, 6));
    let mut b2: Vec<f32> = b2.iter().map(|v| v * 1e-36).collect();
    (0..m).for_each(|i| a2[i * k + 5] = 1e30);
    (0..n).for_each(|j| b2[5 * n + j] = 1e-39);
    for (case, a, b, a_run, b_run) in
        [("subnormal A", &a1, &b1, flush(&a1), b1.clone()), ("subnormal B", &a2, &b2, a2.clone(), flush(&b2))]
    {
        let mut c = vec![0.0; m * n];
        sgemm(&a_run, &b_run, &mut c, m, n, k);
        for seed in 0..10 {
            let r = check(a, b, &c, m, n, k, 8, seed).unwrap();
            assert!(r.accepted && !r.proven_wrong, "{case}: {r:?}");
        }
        // The allowance is what a flush can explain (≤ Σ_j of the lost products per entry), not a blank cheque.
        let mut forged = c.clone();
        forged[2 * n + 7] += 100.0 * c[2 * n + 7].abs().max(1.0);
        let r = check(a, b, &forged, m, n, k, 8, 0).unwrap();
        assert!(!r.accepted, "{case}: {r:?}");
    }
}

#[test]
fn exact_entries_catch_dense_errors_that_one_row_hides_from_the_projection() {
    // A one-row task with every entry off by ±9·u·‖a‖·‖b_j‖ (random signs): below what 8 random projections of one
    // row reliably see (they miss it about one time in four), above most exact entries' tolerances (≈ 7.8·u·‖a‖·‖b_j‖
    // where |c_ij| is small, more where it is large).
    let (m, n, k) = (1, 256, 4096);
    let (a, b, c) = product(m, n, k, 21);
    let norm = |v: &mut dyn Iterator<Item = f32>| v.map(|x| f64::from(x).powi(2)).sum::<f64>().sqrt();
    let a_norm = norm(&mut a.iter().copied());
    let mut rng = fastrand::Rng::with_seed(3);
    let forged: Vec<f32> = (0..n)
        .map(|j| {
            let b_norm = norm(&mut (0..k).map(|p| b[p * n + j]));
            let off = 9.0 * 2f64.powi(-24) * a_norm * b_norm;
            (f64::from(c[j]) + if rng.bool() { off } else { -off }) as f32
        })
        .collect();
    let mut projection_alone_passes = 0;
    for seed in 0..40 {
        let details = Prepared::new(&b, k, n, 8, seed).unwrap().details(&a, &forged, m).unwrap();
        let report = details.report();
        assert!(!report.accepted && !report.proven_wrong, "seed {seed}: {report:?}");
        projection_alone_passes += usize::from(details.rows[0].ratio <= 1.0);
    }
    assert!(
        projection_alone_passes >= 5,
        "the projection alone caught it {} times of 20",
        20 - projection_alone_passes
    );
}

#[test]
fn an_honest_overflow_is_rejected_but_not_convicted() {
    // Products of 10²⁰ and 10²⁰ overflow fp32: an honest node returns ∞. Not accepted (the client gets no number),
    // not fraud either. With ordinary operands the same ∞ is proven wrong (`forgeries_fail`).
    let (m, n, k) = (4, 4, 8);
    let a = vec![1e20f32; m * k];
    let b = vec![1e20f32; k * n];
    let mut c = vec![0.0; m * n];
    sgemm(&a, &b, &mut c, m, n, k);
    assert!(c.iter().all(|v| v.is_infinite()));
    let r = check(&a, &b, &c, m, n, k, 8, 1).unwrap();
    assert!(!r.accepted && !r.proven_wrong, "{r:?}");
}
