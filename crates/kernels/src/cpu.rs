//! The CPU path: a plain-Rust reference for every kernel (f64 accumulation, the yardstick every backend is
//! measured against) and the CPU fallback a node runs when it has no GPU or its GPU is slower. The fallback's
//! matmul is `matrixmultiply`'s multi-threaded SGEMM; the other kernels are memory-bound and run the reference.

use crate::ops::{Op, ShapeError};

/// The reference result of `op`, accumulated in f64.
pub fn reference(op: &Op) -> Result<Vec<f32>, ShapeError> {
    op.check()?;
    Ok(match *op {
        Op::Matmul { a, b, m, n, k } => {
            let mut acc = vec![0.0f64; m * n];
            for i in 0..m {
                let row = &mut acc[i * n..(i + 1) * n];
                for p in 0..k {
                    let aip = f64::from(a[i * k + p]);
                    for (c, &bv) in row.iter_mut().zip(&b[p * n..(p + 1) * n]) {
                        *c += aip * f64::from(bv);
                    }
                }
            }
            acc.into_iter().map(|v| v as f32).collect()
        }
        Op::Matvec { a, x, cols, .. } => a.chunks_exact(cols).map(|row| dot(row, x) as f32).collect(),
        Op::Add { a, b } => a.iter().zip(b).map(|(x, y)| x + y).collect(),
        Op::Mul { a, b } => a.iter().zip(b).map(|(x, y)| x * y).collect(),
        Op::Scale { a, alpha } => a.iter().map(|x| x * alpha).collect(),
        Op::Gelu { a } => a.iter().map(|&x| gelu(f64::from(x)) as f32).collect(),
        Op::ReduceSum { x, cols, .. } => {
            x.chunks_exact(cols).map(|r| r.iter().map(|&v| f64::from(v)).sum::<f64>() as f32).collect()
        }
        Op::Softmax { x, cols, .. } => x.chunks_exact(cols).flat_map(softmax_row).collect(),
        Op::Layernorm { x, gamma, beta, cols, eps, .. } => {
            x.chunks_exact(cols).flat_map(|row| layernorm_row(row, gamma, beta, eps)).collect()
        }
    })
}

/// The CPU fallback: `matrixmultiply`'s SGEMM for matmul, the reference for the rest.
pub fn run(op: &Op) -> Result<Vec<f32>, ShapeError> {
    let mut out = Vec::new();
    run_into(op, &mut out)?;
    Ok(out)
}

/// [`run`] into a caller's buffer, which is resized to the output. A node reuses one buffer per task slot: a fresh
/// multi-megabyte allocation costs a page fault per 4 KiB on first touch, which at 256³ is most of the GEMM's time.
pub fn run_into(op: &Op, out: &mut Vec<f32>) -> Result<(), ShapeError> {
    match *op {
        Op::Matmul { a, b, m, n, k } => {
            op.check()?;
            out.clear();
            out.resize(m * n, 0.0);
            sgemm(a, b, out, m, n, k);
        }
        _ => *out = reference(op)?,
    }
    Ok(())
}

/// C = A·B for row-major operands whose lengths the caller has checked (see [`Op::check`]).
pub fn sgemm(a: &[f32], b: &[f32], c: &mut [f32], m: usize, n: usize, k: usize) {
    sgemm_strided(a, b, (n, 1), c, m, n, k);
}

/// C[m×n] = A[m×k]·B[k×n] with A and C row-major and B at `b_strides` (row stride, column stride): `(n, 1)` is
/// row-major B, `(1, k)` is B given as its transpose — a weight matrix stored `[n × k]`, as layers keep them.
pub fn sgemm_strided(a: &[f32], b: &[f32], b_strides: (usize, usize), c: &mut [f32], m: usize, n: usize, k: usize) {
    let (rsb, csb) = b_strides;
    let b_reach = if k == 0 || n == 0 { 0 } else { (k - 1) * rsb + (n - 1) * csb + 1 };
    assert!(a.len() >= m * k && b.len() >= b_reach && c.len() >= m * n, "sgemm operands shorter than the shape");
    #[allow(unsafe_code)]
    // SAFETY: the assertion above keeps every index the strides reach inside the three slices.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            k as isize,
            1,
            b.as_ptr(),
            rsb as isize,
            csb as isize,
            0.0,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| f64::from(x) * f64::from(y)).sum()
}

/// GELU's tanh form as x / (1 + e^(−2u)), as `elementwise.wgsl` computes it (see there for why).
fn gelu(x: f64) -> f64 {
    let u = (0.797_884_560_802_865_4 * (x + 0.044715 * x * x * x)).clamp(-43.0, 43.0);
    x / (1.0 + (-2.0 * u).exp())
}

fn softmax_row(row: &[f32]) -> Vec<f32> {
    let max = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(f64::from(v)));
    let exps: Vec<f64> = row.iter().map(|&v| (f64::from(v) - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.into_iter().map(|e| (e / sum) as f32).collect()
}

fn layernorm_row(row: &[f32], gamma: &[f32], beta: &[f32], eps: f32) -> Vec<f32> {
    let n = row.len() as f64;
    let mean = row.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let var = row.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / n;
    let inv_std = 1.0 / (var + f64::from(eps)).sqrt();
    row.iter()
        .zip(gamma.iter().zip(beta))
        .map(|(&v, (&g, &b))| ((f64::from(v) - mean) * inv_std * f64::from(g) + f64::from(b)) as f32)
        .collect()
}

/// The largest absolute difference between two equally long slices (∞ when the lengths differ or a value is NaN).
pub fn max_abs_error(got: &[f32], want: &[f32]) -> f64 {
    if got.len() != want.len() {
        return f64::INFINITY;
    }
    got.iter().zip(want).fold(0.0f64, |worst, (&g, &w)| {
        let d = (f64::from(g) - f64::from(w)).abs();
        if d.is_nan() { f64::INFINITY } else { worst.max(d) }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::random_vec;

    #[test]
    fn reference_matmul_on_a_worked_example() {
        // [1 2; 3 4] · [5 6; 7 8] = [19 22; 43 50]
        let a = [1.0, 2.0, 3.0, 4.0];
        let b = [5.0, 6.0, 7.0, 8.0];
        let op = Op::Matmul { a: &a, b: &b, m: 2, n: 2, k: 2 };
        assert_eq!(reference(&op).unwrap(), vec![19.0, 22.0, 43.0, 50.0]);
    }

    #[test]
    fn gemm_crate_agrees_with_the_reference_on_odd_shapes() {
        for (m, n, k) in [(1, 1, 1), (7, 17, 5), (33, 1, 65), (100, 37, 255)] {
            let a = random_vec(m * k, 1);
            let b = random_vec(k * n, 2);
            let op = Op::Matmul { a: &a, b: &b, m, n, k };
            let err = max_abs_error(&run(&op).unwrap(), &reference(&op).unwrap());
            assert!(err < 1e-4, "{m}x{n}x{k}: {err}");
        }
    }

    #[test]
    fn softmax_is_stable_for_large_inputs_and_layernorm_centres() {
        let x = [1000.0f32, 1000.0, 1000.0, 1000.0];
        let y = reference(&Op::Softmax { x: &x, rows: 1, cols: 4 }).unwrap();
        assert_eq!(y, vec![0.25; 4]);
        let x = [1.0f32, 2.0, 3.0, 4.0];
        let ones = [1.0f32; 4];
        let zeros = [0.0f32; 4];
        let y = reference(&Op::Layernorm { x: &x, gamma: &ones, beta: &zeros, rows: 1, cols: 4, eps: 0.0 }).unwrap();
        assert!(y.iter().sum::<f32>().abs() < 1e-6);
        assert!((y[3] - 1.341_640_8).abs() < 1e-5, "{y:?}");
    }

    #[test]
    fn max_abs_error_treats_nan_as_infinitely_wrong() {
        assert_eq!(max_abs_error(&[1.0, 2.0], &[1.0, 2.5]), 0.5);
        assert_eq!(max_abs_error(&[f32::NAN], &[1.0]), f64::INFINITY);
        assert_eq!(max_abs_error(&[1.0], &[1.0, 2.0]), f64::INFINITY);
    }
}
