//! The provider benchmark behind `neurolov bench`: matmul throughput on every backend a node has (each GPU adapter,
//! software ones included, and the CPU GEMM), the median of several timed runs after a warm-up, each checked
//! against the f64 CPU reference.

use crate::catalog::{KernelId, Shape};
use crate::cpu;
use crate::gpu::GpuExecutor;
use crate::ops::Sample;
use crate::timing::{gflops, median_secs};

/// The matrix sizes benchmarked by default (square n×n·n×n products).
pub const DEFAULT_SIZES: [usize; 4] = [256, 512, 1024, 2048];
/// Timed runs per size and backend by default; the median is reported.
pub const DEFAULT_RUNS: usize = 3;
/// Largest size `neurolov bench` accepts: 8192² f32 operands are 256 MiB each.
pub const MAX_SIZE: usize = 8192;

/// One benchmark result, as `neurolov bench --json` prints it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct BenchRow {
    /// `vulkan`, `metal`, `dx12`, `gl` or `cpu`.
    pub backend: String,
    pub adapter: String,
    pub software: bool,
    /// The kernel that ran: a WGSL matmul variant, or `sgemm` on the CPU.
    pub kernel: String,
    pub size: usize,
    pub gflops: f64,
    pub max_abs_error: f64,
}

/// Something the benchmark measures.
#[derive(Clone, Copy, Debug)]
pub enum Target<'a> {
    Gpu(&'a GpuExecutor),
    Cpu,
}

impl Target<'_> {
    pub fn backend(&self) -> String {
        match self {
            Target::Gpu(gpu) => gpu.report().backend.clone(),
            Target::Cpu => "cpu".into(),
        }
    }

    pub fn adapter(&self) -> String {
        match self {
            Target::Gpu(gpu) => gpu.report().name.clone(),
            Target::Cpu => {
                let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
                format!("matrixmultiply sgemm, {threads} threads")
            }
        }
    }

    pub fn software(&self) -> bool {
        match self {
            Target::Gpu(gpu) => gpu.report().software,
            Target::Cpu => false,
        }
    }
}

/// Why one measurement has no row.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchFailure {
    pub backend: String,
    pub adapter: String,
    pub size: usize,
    pub error: String,
}

/// Benchmarks `size`×`size` matmul on every target, checking each against the reference; `progress` is called
/// after each measurement.
pub fn matmul_size(
    targets: &[Target],
    size: usize,
    runs: usize,
    mut progress: impl FnMut(&Target, usize),
) -> (Vec<BenchRow>, Vec<BenchFailure>) {
    let sample = Sample::new(KernelId::Matmul, Shape::Matmul { m: size, n: size, k: size }, size as u64);
    let op = sample.op();
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    let reference = match cpu::reference(&op) {
        Ok(r) => r,
        Err(e) => {
            failures.extend(targets.iter().map(|t| BenchFailure {
                backend: t.backend(),
                adapter: t.adapter(),
                size,
                error: e.to_string(),
            }));
            return (rows, failures);
        }
    };
    for target in targets {
        let mut last = None;
        let mut error = None;
        let secs = median_secs(runs, || {
            let result = match target {
                Target::Gpu(gpu) => gpu.run(&op).map_err(|e| e.to_string()),
                Target::Cpu => cpu::run(&op).map_err(|e| e.to_string()),
            };
            match result {
                Ok(out) => {
                    last = Some(out);
                    true
                }
                Err(e) => {
                    error = Some(e);
                    false
                }
            }
        });
        match (gflops(op.flops(), secs), last) {
            (Some(gflops), Some(out)) => rows.push(BenchRow {
                backend: target.backend(),
                adapter: target.adapter(),
                software: target.software(),
                kernel: match target {
                    Target::Gpu(gpu) => gpu.kernel_for(&op).name().to_string(),
                    Target::Cpu => "sgemm".into(),
                },
                size,
                gflops,
                max_abs_error: cpu::max_abs_error(&out, &reference),
            }),
            _ => failures.push(BenchFailure {
                backend: target.backend(),
                adapter: target.adapter(),
                size,
                error: error.unwrap_or_else(|| "no result".into()),
            }),
        }
        progress(target, size);
    }
    (rows, failures)
}
