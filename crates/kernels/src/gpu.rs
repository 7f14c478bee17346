//! The wgpu executor: adapter discovery, one device per adapter, pipelines compiled once and cached, and the
//! upload → dispatch → read-back cycle with every size checked against the device's limits first. Each failure
//! is a typed [`GpuError`]; callers (see `backend`) log it and fall back to the CPU instead of panicking.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use tracing::{debug, error, warn};

use crate::catalog::{Access, KernelId};
use crate::ops::{Op, ShapeError};
use crate::untrusted::{self, RejectError, ShaderFeatures, WgslJob};

/// How long one dispatch of a catalog kernel may take before the executor gives up on the device.
pub const DEFAULT_DISPATCH_TIMEOUT: Duration = Duration::from_secs(120);
/// Set to `1` to make "no GPU adapter" an error rather than a CPU fallback (CI sets it, so the GPU path is never
/// skipped silently).
pub const REQUIRE_GPU_ENV: &str = "NEUROLOV_REQUIRE_GPU";

/// Why the GPU could not run a kernel.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GpuError {
    #[error("no gpu adapter found (backends: {backends})")]
    NoAdapter { backends: String },
    #[error("could not open a device on {adapter}: {reason}")]
    RequestDevice { adapter: String, reason: String },
    #[error("gpu device lost: {0}")]
    DeviceLost(String),
    #[error("gpu out of memory: {0}")]
    OutOfMemory(String),
    #[error("{what} is {requested}, the device limit is {limit}")]
    LimitExceeded { what: &'static str, requested: u64, limit: u64 },
    #[error("gpu rejected the work: {0}")]
    Validation(String),
    #[error("gpu internal error: {0}")]
    Internal(String),
    #[error("kernel did not finish within {timeout_ms} ms")]
    Timeout { timeout_ms: u64 },
    #[error("reading the result back failed: {0}")]
    ReadBack(String),
    #[error(transparent)]
    Shape(#[from] ShapeError),
    #[error("kernel {kernel} does not compute {op} at this shape")]
    WrongKernel { kernel: KernelId, op: KernelId },
    #[error(transparent)]
    Rejected(#[from] RejectError),
}

/// What a node reports about an adapter.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct AdapterReport {
    pub name: String,
    pub backend: String,
    pub device_type: String,
    /// A CPU implementation of the API (lavapipe, SwiftShader, WARP): slower than the CPU path for matmul.
    pub software: bool,
    pub driver: String,
    pub limits: LimitsReport,
    pub shader_f16: bool,
    pub subgroups: bool,
}

/// The device limits Neurolov's kernels depend on.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct LimitsReport {
    pub max_buffer_size: u64,
    pub max_storage_buffer_binding_size: u64,
    pub max_uniform_buffer_binding_size: u64,
    pub max_compute_workgroups_per_dimension: u32,
    pub max_compute_invocations_per_workgroup: u32,
    pub max_compute_workgroup_storage_size: u32,
}

impl AdapterReport {
    fn of(adapter: &wgpu::Adapter) -> Self {
        let info = adapter.get_info();
        let limits = adapter.limits();
        let features = adapter.features();
        let lower = info.name.to_lowercase();
        let software = info.device_type == wgpu::DeviceType::Cpu
            || ["llvmpipe", "lavapipe", "swiftshader", "softpipe", "warp"].iter().any(|s| lower.contains(s));
        AdapterReport {
            name: info.name,
            backend: info.backend.to_str().to_string(),
            device_type: format!("{:?}", info.device_type).to_lowercase(),
            software,
            driver: format!("{} {}", info.driver, info.driver_info).trim().to_string(),
            limits: LimitsReport {
                max_buffer_size: limits.max_buffer_size,
                max_storage_buffer_binding_size: limits.max_storage_buffer_binding_size,
                max_uniform_buffer_binding_size: limits.max_uniform_buffer_binding_size,
                max_compute_workgroups_per_dimension: limits.max_compute_workgroups_per_dimension,
                max_compute_invocations_per_workgroup: limits.max_compute_invocations_per_workgroup,
                max_compute_workgroup_storage_size: limits.max_compute_workgroup_storage_size,
            },
            shader_f16: features.contains(wgpu::Features::SHADER_F16),
            subgroups: features.contains(wgpu::Features::SUBGROUP),
        }
    }

    pub fn shader_features(&self) -> ShaderFeatures {
        ShaderFeatures { f16: self.shader_f16, subgroups: self.subgroups }
    }
}

/// The backends searched: `WGPU_BACKEND` when set (e.g. `gl`), else Vulkan, Metal and DX12.
pub fn backends() -> wgpu::Backends {
    wgpu::Backends::from_env().unwrap_or(wgpu::Backends::PRIMARY)
}

/// Every adapter wgpu finds on [`backends`], best first (discrete, integrated, virtual, software).
pub fn adapters() -> Vec<wgpu::Adapter> {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: backends(),
        ..wgpu::InstanceDescriptor::new_without_display_handle_from_env()
    });
    let mut found = pollster::block_on(instance.enumerate_adapters(backends()));
    found.sort_by_key(|a| match a.get_info().device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    });
    found
}

/// Reports on every adapter found, without opening a device.
pub fn discover() -> Vec<AdapterReport> {
    adapters().iter().map(AdapterReport::of).collect()
}

/// Whether [`REQUIRE_GPU_ENV`] is set.
pub fn gpu_required() -> bool {
    std::env::var(REQUIRE_GPU_ENV).is_ok_and(|v| v == "1")
}

/// One buffer of a dispatch.
struct BufferSpec<'a> {
    binding: u32,
    access: Access,
    size_bytes: u64,
    init: &'a [u8],
}

/// A wgpu device with its compiled catalog pipelines.
pub struct GpuExecutor {
    report: AdapterReport,
    device: wgpu::Device,
    queue: wgpu::Queue,
    limits: wgpu::Limits,
    pipelines: Mutex<HashMap<KernelId, Arc<wgpu::ComputePipeline>>>,
    /// The matmul variant for shapes with K and N multiples of 4, set by [`GpuExecutor::tune_matmul`].
    aligned_matmul: Mutex<KernelId>,
    lost: Arc<Mutex<Option<String>>>,
    /// Set after a timeout: the queue may still hold the runaway work, so the device is not trusted again.
    wedged: AtomicBool,
    dispatch_timeout: Duration,
}

impl std::fmt::Debug for GpuExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuExecutor").field("adapter", &self.report.name).finish_non_exhaustive()
    }
}

impl GpuExecutor {
    /// Opens the best adapter found.
    pub fn open_default() -> Result<Self, GpuError> {
        let adapter = adapters()
            .into_iter()
            .next()
            .ok_or_else(|| GpuError::NoAdapter { backends: format!("{:?}", backends()) })?;
        Self::open(adapter)
    }

    /// Opens every adapter found; the ones that fail are logged and skipped.
    pub fn open_all() -> Vec<Self> {
        adapters()
            .into_iter()
            .filter_map(|adapter| Self::open(adapter).map_err(|e| warn!(error = %e, "skipping gpu adapter")).ok())
            .collect()
    }

    pub fn open(adapter: wgpu::Adapter) -> Result<Self, GpuError> {
        let report = AdapterReport::of(&adapter);
        let mut required_features = wgpu::Features::empty();
        if report.shader_f16 {
            required_features |= wgpu::Features::SHADER_F16;
        }
        if report.subgroups {
            required_features |= wgpu::Features::SUBGROUP;
        }
        // The adapter's own limits, so large buffers are not refused by WebGPU's conservative defaults.
        let limits = adapter.limits();
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("neurolov"),
            required_features,
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|e| GpuError::RequestDevice { adapter: report.name.clone(), reason: e.to_string() })?;
        let lost = Arc::new(Mutex::new(None));
        let lost_slot = Arc::clone(&lost);
        let adapter_name = report.name.clone();
        device.set_device_lost_callback(move |reason, message| {
            error!(adapter = %adapter_name, ?reason, %message, "gpu device lost");
            if let Ok(mut slot) = lost_slot.lock() {
                *slot = Some(format!("{reason:?}: {message}"));
            }
        });
        // Every operation runs inside error scopes; anything that still escapes is logged, never a panic.
        device.on_uncaptured_error(Arc::new(|e| error!(error = %e, "uncaptured gpu error")));
        debug!(adapter = %report.name, backend = %report.backend, "gpu device opened");
        let aligned_matmul = if report.software { KernelId::MatmulVec4 } else { KernelId::MatmulVec4Large };
        Ok(GpuExecutor {
            report,
            device,
            queue,
            limits,
            pipelines: Mutex::new(HashMap::new()),
            // Until measured: the large tiles on real GPUs, the small ones on CPU-backed adapters.
            aligned_matmul: Mutex::new(aligned_matmul),
            lost,
            wedged: AtomicBool::new(false),
            dispatch_timeout: DEFAULT_DISPATCH_TIMEOUT,
        })
    }

    pub fn with_dispatch_timeout(mut self, timeout: Duration) -> Self {
        self.dispatch_timeout = timeout;
        self
    }

    /// Releases the device (at shutdown). Later runs fail with [`GpuError::DeviceLost`].
    pub fn destroy(&self) {
        self.device.destroy();
        // wgpu delivers the device-lost callback from its maintenance pass; run one so the loss is recorded now.
        let _ = self.guarded(|| {
            let _ = self.device.poll(wgpu::PollType::Poll);
            Ok(())
        });
    }

    pub(crate) fn device(&self) -> &wgpu::Device {
        &self.device
    }

    pub(crate) fn queue(&self) -> &wgpu::Queue {
        &self.queue
    }

    pub(crate) fn limits(&self) -> &wgpu::Limits {
        &self.limits
    }

    pub(crate) fn dispatch_timeout(&self) -> Duration {
        self.dispatch_timeout
    }

    pub fn report(&self) -> &AdapterReport {
        &self.report
    }

    /// The kernel this device runs `op` with: the matmul variant measured fastest here where the shape allows it.
    pub fn kernel_for(&self, op: &Op) -> KernelId {
        let default = op.gpu_kernel();
        match self.aligned_matmul.lock() {
            Ok(k) if default == KernelId::MatmulVec4 => *k,
            _ => default,
        }
    }

    /// Times the vec4 matmul variants at `size`³ and keeps the faster for aligned shapes: tile sizes are chosen per
    /// adapter, by measurement. Returns (kernel, GFLOP/s) per variant.
    pub fn tune_matmul(&self, size: usize) -> Result<Vec<(KernelId, f64)>, GpuError> {
        let sample =
            crate::ops::Sample::new(KernelId::MatmulVec4, crate::Shape::Matmul { m: size, n: size, k: size }, 3);
        let op = sample.op();
        let mut timings = Vec::new();
        for kernel in [KernelId::MatmulVec4, KernelId::MatmulVec4Large] {
            let mut error = None;
            let secs =
                crate::timing::median_secs(crate::timing::CALIBRATION_RUNS, || match self.run_kernel(&op, kernel) {
                    Ok(_) => true,
                    Err(e) => {
                        error = Some(e);
                        false
                    }
                });
            match (crate::timing::gflops(op.flops(), secs), error) {
                (Some(g), _) => timings.push((kernel, g)),
                (None, Some(e)) => return Err(e),
                (None, None) => return Err(GpuError::Internal("matmul tuning measured nothing".into())),
            }
        }
        if let Some(&(best, gflops)) = timings.iter().max_by(|x, y| x.1.total_cmp(&y.1))
            && let Ok(mut slot) = self.aligned_matmul.lock()
        {
            debug!(adapter = %self.report.name, kernel = %best, gflops, "matmul variant chosen");
            *slot = best;
        }
        Ok(timings)
    }

    /// Runs a catalog kernel and returns its output.
    pub fn run(&self, op: &Op) -> Result<Vec<f32>, GpuError> {
        self.run_kernel(op, self.kernel_for(op))
    }

    /// Runs `op` with a given catalog kernel, which must compute it (see [`crate::KernelSpec::computes`]).
    pub fn run_kernel(&self, op: &Op, kernel: KernelId) -> Result<Vec<f32>, GpuError> {
        self.guarded(|| self.run_kernel_unguarded(op, kernel))
    }

    /// Runs `f`, turning a panic inside wgpu into [`GpuError::DeviceLost`]: wgpu 30 panics rather than returning
    /// an error when a device is lost or runs out of memory in some calls (`Device::poll`, for one), and a node
    /// must survive its GPU. The device is not used again afterwards.
    pub(crate) fn guarded<T>(&self, f: impl FnOnce() -> Result<T, GpuError>) -> Result<T, GpuError> {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
            Ok(result) => result,
            Err(panic) => {
                self.wedged.store(true, Ordering::Relaxed);
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "wgpu panicked".into());
                error!(adapter = %self.report.name, %message, "gpu failed inside wgpu; device abandoned");
                Err(GpuError::DeviceLost(message))
            }
        }
    }

    fn run_kernel_unguarded(&self, op: &Op, kernel: KernelId) -> Result<Vec<f32>, GpuError> {
        op.check()?;
        if !op.computed_by(kernel.spec()) {
            return Err(GpuError::WrongKernel { kernel, op: op.kernel() });
        }
        let pipeline = self.catalog_pipeline(kernel)?;
        let params = op.params();
        let mut buffers = vec![BufferSpec {
            binding: 0,
            access: Access::Uniform,
            size_bytes: 16,
            init: bytemuck::cast_slice(&params),
        }];
        for (binding, data) in op.inputs() {
            let bytes: &[u8] = bytemuck::cast_slice(data);
            buffers.push(BufferSpec { binding, access: Access::Read, size_bytes: bytes.len() as u64, init: bytes });
        }
        let out_bytes = (op.output_len() * 4) as u64;
        buffers.push(BufferSpec {
            binding: op.output_binding(),
            access: Access::ReadWrite,
            size_bytes: out_bytes,
            init: &[],
        });
        let groups = self.dispatch_size(op, kernel)?;
        let mut outputs = self.dispatch(&pipeline, &buffers, groups, self.dispatch_timeout)?;
        let out = outputs.pop().map(|(_, bytes)| f32s_of_bytes(&bytes)).unwrap_or_default();
        Ok(out)
    }

    /// Validates and runs a client's kernel, with wgpu's runtime bounds checks on, and returns the contents of its
    /// read-write buffers by binding. Prefer [`crate::sandbox`] for jobs from strangers: a kernel that never ends
    /// can only be stopped by ending the process that owns the device.
    pub fn run_untrusted(&self, job: &WgslJob, timeout: Duration) -> Result<Vec<(u32, Vec<u8>)>, GpuError> {
        untrusted::validate(job, self.report.shader_features())?;
        self.guarded(|| self.run_untrusted_unguarded(job, timeout))
    }

    fn run_untrusted_unguarded(&self, job: &WgslJob, timeout: Duration) -> Result<Vec<(u32, Vec<u8>)>, GpuError> {
        self.check_usable()?;
        let pipeline = self.with_error_scopes(|| {
            let module = self.device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some("job"),
                source: wgpu::ShaderSource::Wgsl(job.source.as_str().into()),
            });
            self.compute_pipeline(&module, &job.entry_point)
        })?;
        let buffers: Vec<BufferSpec> = job
            .buffers
            .iter()
            .map(|b| BufferSpec { binding: b.binding, access: b.access, size_bytes: b.size_bytes, init: &b.init })
            .collect();
        self.dispatch(&pipeline, &buffers, job.dispatch, timeout)
    }

    pub(crate) fn check_usable(&self) -> Result<(), GpuError> {
        if let Some(reason) = self.lost.lock().ok().and_then(|slot| slot.clone()) {
            return Err(GpuError::DeviceLost(reason));
        }
        if self.wedged.load(Ordering::Relaxed) {
            return Err(GpuError::DeviceLost("an earlier kernel timed out and may still be running".into()));
        }
        Ok(())
    }

    fn catalog_pipeline(&self, kernel: KernelId) -> Result<Arc<wgpu::ComputePipeline>, GpuError> {
        self.check_usable()?;
        let mut cache = self.pipelines.lock().map_err(|_| GpuError::Internal("pipeline cache poisoned".into()))?;
        if let Some(p) = cache.get(&kernel) {
            return Ok(Arc::clone(p));
        }
        let spec = kernel.spec();
        let pipeline = self.with_error_scopes(|| {
            #[allow(unsafe_code)]
            // SAFETY: catalog kernels are our own, reviewed WGSL; every index they compute is guarded by the shape
            // that `Op::check` has verified against the buffer lengths, and every loop is bounded by that shape.
            let module = unsafe {
                self.device.create_shader_module_trusted(
                    wgpu::ShaderModuleDescriptor {
                        label: Some(spec.name),
                        source: wgpu::ShaderSource::Wgsl(spec.source().into()),
                    },
                    wgpu::ShaderRuntimeChecks::unchecked(),
                )
            };
            self.compute_pipeline(&module, spec.entry_point)
        })?;
        let pipeline = Arc::new(pipeline);
        cache.insert(kernel, Arc::clone(&pipeline));
        Ok(pipeline)
    }

    fn compute_pipeline(&self, module: &wgpu::ShaderModule, entry_point: &str) -> wgpu::ComputePipeline {
        self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(entry_point),
            layout: None,
            module,
            entry_point: Some(entry_point),
            compilation_options: wgpu::PipelineCompilationOptions::default(),
            cache: None,
        })
    }

    /// Runs `f` inside out-of-memory, validation and internal error scopes and turns what they caught into a
    /// [`GpuError`].
    pub(crate) fn with_error_scopes<T>(&self, f: impl FnOnce() -> T) -> Result<T, GpuError> {
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let internal = self.device.push_error_scope(wgpu::ErrorFilter::Internal);
        let value = f();
        let errors =
            [pollster::block_on(internal.pop()), pollster::block_on(validation.pop()), pollster::block_on(oom.pop())];
        match errors.into_iter().flatten().next() {
            None => Ok(value),
            Some(wgpu::Error::OutOfMemory { source }) => Err(GpuError::OutOfMemory(source.to_string())),
            Some(wgpu::Error::Validation { description, .. }) => Err(GpuError::Validation(description)),
            Some(wgpu::Error::Internal { description, .. }) => Err(GpuError::Internal(description)),
        }
    }

    /// The workgroup grid for a catalog op: a 2-D fold where one dimension would exceed the device limit.
    fn dispatch_size(&self, op: &Op, kernel: KernelId) -> Result<[u32; 3], GpuError> {
        let groups = match op.shape() {
            crate::Shape::Matmul { m, n, .. } => {
                let tile = kernel.spec().matmul_tile().unwrap_or(64);
                return self.checked_grid([n.div_ceil(tile) as u64, m.div_ceil(tile) as u64]);
            }
            crate::Shape::Flat { len } => len.div_ceil(256) as u64,
            crate::Shape::Rows { rows, .. } => rows as u64,
        };
        let max = u64::from(self.limits.max_compute_workgroups_per_dimension);
        let x = groups.min(max);
        self.checked_grid([x, groups.div_ceil(x.max(1))])
    }

    fn checked_grid(&self, grid: [u64; 2]) -> Result<[u32; 3], GpuError> {
        let dim = |g: u64| {
            u32::try_from(g).map_err(|_| GpuError::LimitExceeded {
                what: "workgroups per dimension",
                requested: g,
                limit: u64::from(self.limits.max_compute_workgroups_per_dimension),
            })
        };
        Ok([dim(grid[0])?, dim(grid[1])?, 1])
    }

    fn check_limits(&self, buffers: &[BufferSpec], groups: [u32; 3]) -> Result<(), GpuError> {
        let l = &self.limits;
        for b in buffers {
            let (what, limit) = match b.access {
                Access::Uniform => ("uniform buffer binding size", l.max_uniform_buffer_binding_size),
                _ => ("storage buffer binding size", l.max_storage_buffer_binding_size),
            };
            if b.size_bytes > limit {
                return Err(GpuError::LimitExceeded { what, requested: b.size_bytes, limit });
            }
            if b.size_bytes > l.max_buffer_size {
                return Err(GpuError::LimitExceeded {
                    what: "buffer size",
                    requested: b.size_bytes,
                    limit: l.max_buffer_size,
                });
            }
        }
        for g in groups {
            let limit = u64::from(l.max_compute_workgroups_per_dimension);
            if u64::from(g) > limit {
                return Err(GpuError::LimitExceeded { what: "workgroups per dimension", requested: g.into(), limit });
            }
        }
        Ok(())
    }

    /// Uploads, dispatches once, and reads back every read-write buffer, as (binding, bytes) in binding order.
    fn dispatch(
        &self,
        pipeline: &wgpu::ComputePipeline,
        buffers: &[BufferSpec],
        groups: [u32; 3],
        timeout: Duration,
    ) -> Result<Vec<(u32, Vec<u8>)>, GpuError> {
        self.check_usable()?;
        self.check_limits(buffers, groups)?;
        let (submission, staging) = self.with_error_scopes(|| self.submit(pipeline, buffers, groups))?;
        self.read_back(submission, staging, timeout)
    }

    /// Creates and fills the buffers, records the dispatch and the copies of the read-write buffers to mappable ones,
    /// and submits: the submission and the (binding, buffer) pairs to read back.
    fn submit(
        &self,
        pipeline: &wgpu::ComputePipeline,
        buffers: &[BufferSpec],
        groups: [u32; 3],
    ) -> (wgpu::SubmissionIndex, Vec<(u32, wgpu::Buffer)>) {
        let gpu_buffers: Vec<(u32, Access, wgpu::Buffer)> = buffers
            .iter()
            .map(|b| {
                let usage = match b.access {
                    Access::Uniform => wgpu::BufferUsages::UNIFORM,
                    Access::Read => wgpu::BufferUsages::STORAGE,
                    Access::ReadWrite => wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
                };
                // Not `create_buffer_init`: it panics when the buffer cannot be created (out of memory).
                let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: None,
                    size: b.size_bytes,
                    usage: usage | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                if !b.init.is_empty() {
                    self.queue.write_buffer(&buffer, 0, b.init);
                }
                (b.binding, b.access, buffer)
            })
            .collect();
        let entries: Vec<wgpu::BindGroupEntry> = gpu_buffers
            .iter()
            .map(|(binding, _, buffer)| wgpu::BindGroupEntry {
                binding: *binding,
                resource: buffer.as_entire_binding(),
            })
            .collect();
        let bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        let mut encoder = self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        {
            let mut pass =
                encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: None, timestamp_writes: None });
            pass.set_pipeline(pipeline);
            pass.set_bind_group(0, &bind_group, &[]);
            pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
        }
        let mut staging = Vec::new();
        for (binding, access, buffer) in &gpu_buffers {
            if *access != Access::ReadWrite {
                continue;
            }
            let read = self.device.create_buffer(&wgpu::BufferDescriptor {
                label: None,
                size: buffer.size(),
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            encoder.copy_buffer_to_buffer(buffer, 0, &read, 0, buffer.size());
            staging.push((*binding, read));
        }
        (self.queue.submit([encoder.finish()]), staging)
    }

    /// Waits for `submission` (until `timeout`: past it the device counts as wedged) and maps the staging buffers.
    pub(crate) fn read_back(
        &self,
        submission: wgpu::SubmissionIndex,
        staging: Vec<(u32, wgpu::Buffer)>,
        timeout: Duration,
    ) -> Result<Vec<(u32, Vec<u8>)>, GpuError> {
        let (tx, rx) = mpsc::channel();
        for (i, (_, buffer)) in staging.iter().enumerate() {
            let tx = tx.clone();
            buffer.map_async(wgpu::MapMode::Read, .., move |r| {
                let _ = tx.send((i, r));
            });
        }
        drop(tx);
        match self.device.poll(wgpu::PollType::Wait { submission_index: Some(submission), timeout: Some(timeout) }) {
            Ok(_) => {}
            Err(wgpu::PollError::Timeout) => {
                self.wedged.store(true, Ordering::Relaxed);
                warn!(adapter = %self.report.name, timeout_ms = timeout.as_millis() as u64, "gpu dispatch timed out");
                return Err(GpuError::Timeout { timeout_ms: timeout.as_millis() as u64 });
            }
            Err(e) => return Err(GpuError::Internal(e.to_string())),
        }
        self.check_usable()?;
        // The poll above has run every mapping callback of this submission.
        for (_, result) in rx.try_iter() {
            result.map_err(|e| GpuError::ReadBack(e.to_string()))?;
        }
        let mut out = Vec::with_capacity(staging.len());
        for (binding, buffer) in staging {
            let bytes = buffer.get_mapped_range(..).map_err(|e| GpuError::ReadBack(e.to_string()))?.to_vec();
            buffer.unmap();
            out.push((binding, bytes));
        }
        out.sort_by_key(|(b, _)| *b);
        Ok(out)
    }
}

/// f32s from bytes read back from the GPU (native byte order, as they were uploaded).
pub fn f32s_of_bytes(bytes: &[u8]) -> Vec<f32> {
    bytemuck::pod_collect_to_vec(bytes)
}
