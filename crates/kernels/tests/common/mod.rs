//! Shared by the integration tests: the GPU under test, or a clear skip — or a failure when CI demands a GPU.

use neurolov_kernels::gpu::{GpuExecutor, REQUIRE_GPU_ENV, gpu_required};

/// The best adapter. Without one, `None` (the test skips) unless `NEUROLOV_REQUIRE_GPU=1`, which makes it a failure.
pub fn gpu() -> Option<GpuExecutor> {
    match GpuExecutor::open_default() {
        Ok(gpu) => Some(gpu),
        Err(e) if gpu_required() => panic!("{REQUIRE_GPU_ENV}=1 but no gpu: {e}"),
        Err(e) => {
            eprintln!("skipping: {e} (set {REQUIRE_GPU_ENV}=1 to make this a failure)");
            None
        }
    }
}
