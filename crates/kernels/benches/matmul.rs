//! Matmul benchmarks: the CPU fallback against `matrixmultiply` called alone (the fallback must stay within 10%),
//! and the wgpu path on the best adapter found (lavapipe in CI). Run with `cargo bench -p neurolov-kernels`.

use divan::Bencher;
use neurolov_kernels::backend::Compute;
use neurolov_kernels::catalog::{KernelId, Shape};
use neurolov_kernels::cpu;
use neurolov_kernels::gpu::GpuExecutor;
use neurolov_kernels::ops::Sample;

fn main() {
    divan::main();
}

const SIZES: [usize; 3] = [256, 512, 1024];

fn sample(n: usize) -> Sample {
    Sample::new(KernelId::Matmul, Shape::Matmul { m: n, n, k: n }, 1)
}

/// `matrixmultiply::sgemm` called directly into a preallocated output: the yardstick. (divan runs benchmarks in
/// name order; the first one, `cpu_fallback`, also pays for starting the GEMM crate's thread pool, so compare its
/// fastest column or `cpu_fallback_fresh_output`.)
#[divan::bench(args = SIZES)]
fn gemm_crate_alone(bencher: Bencher, n: usize) {
    let s = sample(n);
    let neurolov_kernels::Op::Matmul { a, b, .. } = s.op() else { unreachable!() };
    let mut c = vec![0.0f32; n * n];
    bencher
        .counter(divan::counter::ItemsCount::new(2 * n * n * n))
        .bench_local(|| cpu::sgemm(divan::black_box(a), divan::black_box(b), &mut c, n, n, n));
}

/// The node's CPU fallback as a node runs it: backend choice and shape checks, then the same SGEMM into the
/// task slot's reused output buffer. This is the figure held to within 10% of `gemm_crate_alone`.
#[divan::bench(args = SIZES)]
fn cpu_fallback(bencher: Bencher, n: usize) {
    let s = sample(n);
    let compute = Compute::new(None);
    let mut out = Vec::new();
    bencher
        .counter(divan::counter::ItemsCount::new(2 * n * n * n))
        .bench_local(|| compute.run_into(divan::black_box(&s.op()), &mut out));
}

/// The same with a fresh output allocation per call: shows what reusing the buffer saves.
#[divan::bench(args = SIZES)]
fn cpu_fallback_fresh_output(bencher: Bencher, n: usize) {
    let s = sample(n);
    let compute = Compute::new(None);
    bencher
        .counter(divan::counter::ItemsCount::new(2 * n * n * n))
        .bench_local(|| compute.run(divan::black_box(&s.op())));
}

/// WGSL matmul through wgpu on the best adapter, upload and read-back included (what a task costs a node).
#[divan::bench(args = [256, 512], sample_count = 10)]
fn wgpu_matmul(bencher: Bencher, n: usize) {
    let Ok(gpu) = GpuExecutor::open_default() else {
        eprintln!("no gpu adapter: wgpu_matmul skipped");
        return;
    };
    // As a node does: pick this adapter's faster matmul variant first.
    gpu.tune_matmul(n).expect("both variants run");
    let s = sample(n);
    bencher.counter(divan::counter::ItemsCount::new(2 * n * n * n)).bench_local(|| gpu.run(divan::black_box(&s.op())));
}
