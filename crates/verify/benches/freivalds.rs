//! Freivalds' check against the product it checks, on the same backend (the CPU): at n = 2048 the check should cost
//! about 1% of the matmul. Run with `cargo bench -p neurolov-verify`.

use divan::Bencher;
use neurolov_kernels::cpu::sgemm;
use neurolov_kernels::ops::random_vec;
use neurolov_verify::freivalds::{DEFAULT_ROUNDS, check};

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
