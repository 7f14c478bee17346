//! Freivalds' check on real fp32 products: honest results from the CPU GEMM pass, forged ones fail, and the
//! tolerance is neither so tight that rounding fails nor so loose that a gross error passes.

#![allow(clippy::unwrap_used)] // Test helpers unwrap: a panic is the failure report.

use neurolov_kernels::cpu::sgemm;
use neurolov_kernels::ops::random_vec;
use neurolov_verify::freivalds::{FreivaldsError, check, false_accept_bound, tolerance_factor};

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
fn honest_results_sit_far_inside_the_tolerance() {
    // The bound is rigorous, hence pessimistic: real rounding uses a small part of it.
    let (a, b, c) = product(256, 256, 256, 1);
    let r = check(&a, &b, &c, 256, 256, 256, 8, 5).unwrap();
    assert!(r.worst_ratio < 0.05, "{r:?}");
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
        }
    }
}

#[test]
fn the_false_accept_bound_matches_the_tolerance() {
    // A single entry perturbed by just over 2·t passes 8 rounds with probability ≤ 2⁻⁸; measure it is rare.
    let (m, n, k) = (16, 16, 64);
    let (a, b, c) = product(m, n, k, 9);
    let norm_a0 = a[..k].iter().map(|v| f64::from(*v).powi(2)).sum::<f64>().sqrt();
    let frob_b = b.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>().sqrt();
    let t0 = tolerance_factor(m, k, 2) * norm_a0 * frob_b;
    let mut forged = c.clone();
    forged[3] += (2.2 * t0) as f32;
    let trials = 2000;
    let passed = (0..trials).filter(|&s| check(&a, &b, &forged, m, n, k, 2, s).unwrap().accepted).count();
    let bound = false_accept_bound(2.2 * t0, t0, 2);
    assert!(bound < 0.21);
    assert!((passed as f64) < bound * trials as f64 * 1.3 + 10.0, "{passed} of {trials} passed, bound {bound}");
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
