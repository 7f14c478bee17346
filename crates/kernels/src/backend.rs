//! Which backend runs each kernel on this node. A node measures every kernel on its GPU and on its CPU and keeps
//! the faster (a software Vulkan adapter loses matmul to a good CPU GEMM); any GPU failure — device lost, out of
//! memory, a limit exceeded, a timeout — is logged and the op is rerun on the CPU, so a caller always gets a result.

use std::collections::BTreeMap;

use tracing::{info, warn};

use crate::catalog::{KernelId, Shape};
use crate::cpu;
use crate::gpu::{GpuError, GpuExecutor, gpu_required};
use crate::ops::{Op, Sample, ShapeError};
pub use crate::timing::{CALIBRATION_RUNS, gflops, median_secs};

/// Where a kernel ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    Gpu,
    Cpu,
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::Gpu => "gpu",
            Backend::Cpu => "cpu",
        })
    }
}

/// An op's output and the backend that produced it.
#[derive(Clone, Debug, PartialEq)]
pub struct Ran {
    pub output: Vec<f32>,
    pub backend: Backend,
}

/// The kernels a node chooses a backend for, one per [`KernelId::family`].
pub fn planned_kernels() -> impl Iterator<Item = KernelId> {
    KernelId::ALL.into_iter().filter(|&k| k.family() == k)
}

/// The n of the n³ matmul the vec4 variants are timed at to choose this adapter's tile size.
pub const MATMUL_TUNING_SIZE: usize = 1024;

/// The shape each kernel is calibrated at: big enough to amortize dispatch overhead, small enough to take well
/// under a second on a software adapter.
pub fn calibration_shape(kernel: KernelId) -> Shape {
    match kernel {
        KernelId::Matmul | KernelId::MatmulVec4 | KernelId::MatmulVec4Large => Shape::Matmul { m: 384, n: 384, k: 384 },
        KernelId::Add | KernelId::Mul | KernelId::Scale | KernelId::Gelu => Shape::Flat { len: 1 << 20 },
        KernelId::Matvec | KernelId::ReduceSum | KernelId::Softmax | KernelId::Layernorm => {
            Shape::Rows { rows: 1024, cols: 1024 }
        }
    }
}

/// One kernel's calibration: measured GFLOP/s per backend and the choice made.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Calibration {
    pub kernel: KernelId,
    pub gpu_gflops: Option<f64>,
    pub cpu_gflops: f64,
    pub chosen: Backend,
}

/// A node's compute: an optional GPU, the CPU, and the per-kernel choice between them.
#[derive(Debug)]
pub struct Compute {
    gpu: Option<GpuExecutor>,
    plan: BTreeMap<KernelId, Backend>,
}

impl Compute {
    /// Every planned kernel on the GPU when there is one, else on the CPU; [`Compute::calibrate`] refines it.
    pub fn new(gpu: Option<GpuExecutor>) -> Self {
        let default = if gpu.is_some() { Backend::Gpu } else { Backend::Cpu };
        Compute { gpu, plan: planned_kernels().map(|k| (k, default)).collect() }
    }

    /// Opens the best GPU adapter; without one, runs on the CPU — unless [`crate::gpu::REQUIRE_GPU_ENV`] is set.
    pub fn open() -> Result<Self, GpuError> {
        match GpuExecutor::open_default() {
            Ok(gpu) => Ok(Compute::new(Some(gpu))),
            Err(e) if gpu_required() => Err(e),
            Err(e) => {
                warn!(error = %e, "no usable gpu; every kernel runs on the cpu");
                Ok(Compute::new(None))
            }
        }
    }

    pub fn gpu(&self) -> Option<&GpuExecutor> {
        self.gpu.as_ref()
    }

    pub fn plan(&self) -> &BTreeMap<KernelId, Backend> {
        &self.plan
    }

    /// Where `kernel` runs.
    pub fn backend_for(&self, kernel: KernelId) -> Backend {
        self.plan.get(&kernel.family()).copied().unwrap_or(Backend::Cpu)
    }

    /// Times every planned kernel on each backend and keeps the faster per kernel; on the GPU it first picks the
    /// matmul variant (tile size) that is fastest on this adapter.
    pub fn calibrate(&mut self) -> Vec<Calibration> {
        if let Some(gpu) = &self.gpu
            && let Err(e) = gpu.tune_matmul(MATMUL_TUNING_SIZE)
        {
            warn!(adapter = %gpu.report().name, error = %e, "matmul tuning failed; keeping the default variant");
        }
        let mut out = Vec::new();
        for kernel in planned_kernels() {
            let sample = Sample::new(kernel, calibration_shape(kernel), 7);
            let op = sample.op();
            let cpu_gflops = gflops(op.flops(), median_secs(CALIBRATION_RUNS, || cpu::run(&op).is_ok()));
            let gpu_gflops = self
                .gpu
                .as_ref()
                .and_then(|gpu| gflops(op.flops(), median_secs(CALIBRATION_RUNS, || gpu.run(&op).is_ok())));
            let chosen = match (gpu_gflops, cpu_gflops) {
                (Some(g), Some(c)) if g < c => Backend::Cpu,
                (Some(_), _) => Backend::Gpu,
                (None, _) => Backend::Cpu,
            };
            info!(%kernel, ?gpu_gflops, ?cpu_gflops, %chosen, "kernel backend chosen");
            self.plan.insert(kernel, chosen);
            out.push(Calibration { kernel, gpu_gflops, cpu_gflops: cpu_gflops.unwrap_or(0.0), chosen });
        }
        out
    }

    /// Runs `op` where the plan says; a GPU failure is logged and the op rerun on the CPU. Only a shape error
    /// (the caller's data does not fit its shape) is returned as an error.
    pub fn run(&self, op: &Op) -> Result<Ran, ShapeError> {
        let mut output = Vec::new();
        let backend = self.run_into(op, &mut output)?;
        Ok(Ran { output, backend })
    }

    /// [`Compute::run`] into a caller's buffer (see [`cpu::run_into`] for why a node reuses one).
    pub fn run_into(&self, op: &Op, out: &mut Vec<f32>) -> Result<Backend, ShapeError> {
        op.check()?;
        if let (Backend::Gpu, Some(gpu)) = (self.backend_for(op.kernel()), &self.gpu) {
            match gpu.run(op) {
                Ok(output) => {
                    *out = output;
                    return Ok(Backend::Gpu);
                }
                Err(GpuError::Shape(e)) => return Err(e),
                Err(e) => {
                    warn!(kernel = %op.kernel(), adapter = %gpu.report().name, error = %e, "gpu failed; running on the cpu")
                }
            }
        }
        cpu::run_into(op, out)?;
        Ok(Backend::Cpu)
    }
}
