//! Freivalds' check against the product it checks, on the same backend (the CPU): at n = 2048 the check should cost
//! about 1% of the matmul. Run with `cargo bench -p neurolov-verify`.

use divan::Bencher;
use neurolov_kernels::cpu::sgemm;
use neurolov_kernels::ops::random_vec;
use neurolov_verify::freivalds::{DEFAULT_ROUNDS, Prepared, check};

fn main() {
    divan::main();
}

const SIZES: [usize; 2] = [1024, 2048];

#[divan::bench(args = SIZES, sample_count = 10)]
fn sgemm_product(bencher: Bencher, n: usize) {
    let a = random_vec(n * n, 1);
    let b = random_vec(n * n, 2);
    let mut c = vec![0.0f32; n * n];
    bencher.bench_local(|| sgemm(&a, &b, &mut c, n, n, n));
}

#[divan::bench(args = SIZES, sample_count = 10)]
fn freivalds_check(bencher: Bencher, n: usize) {
    let a = random_vec(n * n, 1);
    let b = random_vec(n * n, 2);
    let mut c = vec![0.0f32; n * n];
    sgemm(&a, &b, &mut c, n, n, n);
    bencher.bench_local(|| {
        let report = check(&a, &b, &c, n, n, n, DEFAULT_ROUNDS, 7).expect("valid shapes");
        assert!(report.accepted);
    });
}

/// Tile rows of a job's row tasks (the coordinator's default).
const TILE_ROWS: usize = 256;

/// Checking every 256-row task of one product: each task on its own (B·R recomputed per task) against one shared
/// [`Prepared`] (B·R once per job), as the coordinator now does.
#[divan::bench(args = SIZES, sample_count = 10)]
fn tiles_each_on_its_own(bencher: Bencher, n: usize) {
    let (a, b, c) = product(n);
    bencher.bench_local(|| {
        for t in 0..n / TILE_ROWS {
            let rows = t * TILE_ROWS * n..(t + 1) * TILE_ROWS * n;
            let report = check(&a[rows.clone()], &b, &c[rows], TILE_ROWS, n, n, DEFAULT_ROUNDS, 7).expect("valid");
            assert!(report.accepted);
        }
    });
}

#[divan::bench(args = SIZES, sample_count = 10)]
fn tiles_sharing_b_r(bencher: Bencher, n: usize) {
    let (a, b, c) = product(n);
    bencher.bench_local(|| {
        let prepared = Prepared::new(&b, n, n, DEFAULT_ROUNDS, 7).expect("valid");
        for t in 0..n / TILE_ROWS {
            let rows = t * TILE_ROWS * n..(t + 1) * TILE_ROWS * n;
            assert!(prepared.check(&a[rows.clone()], &c[rows], TILE_ROWS).expect("valid").accepted);
        }
    });
}

fn product(n: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let a = random_vec(n * n, 1);
    let b = random_vec(n * n, 2);
    let mut c = vec![0.0f32; n * n];
    sgemm(&a, &b, &mut c, n, n, n);
    (a, b, c)
}
