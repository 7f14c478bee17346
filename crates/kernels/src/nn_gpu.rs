//! The inference engine on wgpu: weights uploaded once and kept on the device, activations that stay there between
//! ops, and the kernels of `wgsl/nn.wgsl` recorded into one command encoder until a result is read back — a
//! forward pass is hundreds of dispatches and one submission. Sizes are checked against the device's limits before
//! anything is recorded, and every recording runs inside error scopes, so a failure is a [`GpuError`].

use std::collections::HashMap;

use crate::gpu::{GpuError, GpuExecutor};
use crate::quant::{QMatrix, QuantType};

/// The kernel file.
pub const NN_WGSL: &str = include_str!("../wgsl/nn.wgsl");
/// Most keys one attention row sees: its scores live in workgroup memory (`MAX_KEYS` in the WGSL).
pub const MAX_ATTENTION_KEYS: usize = 2048;
/// Widest attention head the kernel takes (one invocation per output element of a head).
pub const MAX_HEAD_DIM: usize = 256;
/// Token rows from which a product uses the tiled matmul rather than `matvec` (which decodes each weight block
/// once per chunk of tokens and suits short inputs).
const MATMUL_MIN_TOKENS: usize = 64;
/// Tokens one `matvec` invocation takes (`CHUNK` in the WGSL).
const MATVEC_CHUNK: usize = 8;

/// An entry point of `nn.wgsl`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NnKernel {
    Matvec,
    MatvecChunked,
    Matmul,
    Gather,
    RmsNorm,
    LayerNorm,
    Rope,
    SiluMul,
    GeluErf,
    Add,
    Attention,
}

impl NnKernel {
    pub const ALL: [NnKernel; 11] = [
        NnKernel::Matvec,
        NnKernel::MatvecChunked,
        NnKernel::Matmul,
        NnKernel::Gather,
        NnKernel::RmsNorm,
        NnKernel::LayerNorm,
        NnKernel::Rope,
        NnKernel::SiluMul,
        NnKernel::GeluErf,
        NnKernel::Add,
        NnKernel::Attention,
    ];

    pub fn entry_point(self) -> &'static str {
        match self {
            NnKernel::Matvec => "matvec",
            NnKernel::MatvecChunked => "matvec_chunked",
            NnKernel::Matmul => "matmul",
            NnKernel::Gather => "gather",
            NnKernel::RmsNorm => "rms_norm",
            NnKernel::LayerNorm => "layer_norm",
            NnKernel::Rope => "rope",
            NnKernel::SiluMul => "silu_mul",
            NnKernel::GeluErf => "gelu_erf",
            NnKernel::Add => "add",
            NnKernel::Attention => "attention",
        }
    }
}

/// f32 values (or u32 words) in a device buffer.
#[derive(Debug)]
pub struct GpuTensor {
    buffer: wgpu::Buffer,
    /// Elements (4 bytes each).
    len: usize,
}

impl GpuTensor {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A weight matrix on the device, in the layout `weight()` in the WGSL reads.
#[derive(Debug)]
pub struct GpuMatrix {
    words: GpuTensor,
    kind: u32,
    rows: usize,
    cols: usize,
    /// Q8_0 only: blocks in the matrix (the scales come first, then the quants).
    q8_blocks: u32,
}

impl GpuMatrix {
    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }
}

/// The 32-byte parameter block every entry point reads (`Params` in the WGSL): p0–p6 and eps.
#[derive(Clone, Copy, Debug, Default)]
struct Params {
    p: [u32; 7],
    eps: f32,
}

impl Params {
    fn of(p: &[usize]) -> Result<Params, GpuError> {
        let mut params = Params::default();
        for (slot, &v) in params.p.iter_mut().zip(p) {
            *slot = u32::try_from(v).map_err(|_| GpuError::LimitExceeded {
                what: "kernel parameter",
                requested: v as u64,
                limit: u64::from(u32::MAX),
            })?;
        }
        Ok(params)
    }

    fn bytes(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (chunk, v) in out.chunks_exact_mut(4).zip(self.p.iter().copied().chain([self.eps.to_bits()])) {
            chunk.copy_from_slice(&v.to_le_bytes());
        }
        out
    }
}

/// The inputs of one dispatch (`None` binds a placeholder).
#[derive(Default)]
struct Inputs<'t> {
    x: Option<&'t GpuTensor>,
    w: Option<&'t GpuTensor>,
    a: Option<&'t GpuTensor>,
    b: Option<&'t GpuTensor>,
}

/// A device running the inference kernels, with the work recorded since the last read.
pub struct NnGpu {
    exec: GpuExecutor,
    layout: wgpu::BindGroupLayout,
    pipelines: HashMap<NnKernel, wgpu::ComputePipeline>,
    /// Bound where a kernel does not read an input.
    placeholder: wgpu::Buffer,
    /// Work recorded and not yet submitted.
    encoder: Option<wgpu::CommandEncoder>,
    /// Dispatches recorded since the last submission (to bound the encoder's size).
    recorded: usize,
}

impl std::fmt::Debug for NnGpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NnGpu").field("adapter", &self.exec.report().name).finish_non_exhaustive()
    }
}

/// Dispatches after which the recorded work is submitted without waiting for a read.
const MAX_RECORDED_DISPATCHES: usize = 1024;

impl NnGpu {
    /// Compiles the kernels on `exec`'s device.
    pub fn new(exec: GpuExecutor) -> Result<NnGpu, GpuError> {
        exec.check_usable()?;
        let device = exec.device().clone();
        let (layout, pipelines, placeholder) = exec.guarded(|| {
            exec.with_error_scopes(|| {
                let storage = |binding: u32, read_only: bool| wgpu::BindGroupLayoutEntry {
                    binding,
                    visibility: wgpu::ShaderStages::COMPUTE,
                    ty: wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Storage { read_only },
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                    count: None,
                };
                let mut entries = vec![wgpu::BindGroupLayoutEntry {
                    binding: 0,
                    visibility: wgpu::ShaderStages::COMPUTE,
                    ty: wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Uniform,
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                    count: None,
                }];
                entries.extend((1..=4).map(|b| storage(b, true)));
                entries.push(storage(5, false));
                let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                    label: Some("nn"),
                    entries: &entries,
                });
                let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                    label: Some("nn"),
                    bind_group_layouts: &[Some(&layout)],
                    immediate_size: 0,
                });
                let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
                    label: Some("nn.wgsl"),
                    source: wgpu::ShaderSource::Wgsl(NN_WGSL.into()),
                });
                let pipelines = NnKernel::ALL
                    .iter()
                    .map(|&k| {
                        let p = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                            label: Some(k.entry_point()),
                            layout: Some(&pipeline_layout),
                            module: &module,
                            entry_point: Some(k.entry_point()),
                            compilation_options: wgpu::PipelineCompilationOptions::default(),
                            cache: None,
                        });
                        (k, p)
                    })
                    .collect();
                let placeholder = device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("placeholder"),
                    size: 16,
                    usage: wgpu::BufferUsages::STORAGE,
                    mapped_at_creation: false,
                });
                (layout, pipelines, placeholder)
            })
        })?;
        Ok(NnGpu { exec, layout, pipelines, placeholder, encoder: None, recorded: 0 })
    }

    pub fn executor(&self) -> &GpuExecutor {
        &self.exec
    }

    fn buffer(&self, len: usize, contents: Option<&[u8]>) -> Result<GpuTensor, GpuError> {
        let size = (len.max(1) * 4) as u64;
        let limits = self.exec.limits();
        let limit = limits.max_storage_buffer_binding_size.min(limits.max_buffer_size);
        if size > limit {
            return Err(GpuError::LimitExceeded { what: "storage buffer binding size", requested: size, limit });
        }
        self.exec.guarded(|| {
            self.exec.with_error_scopes(|| {
                let buffer = self.exec.device().create_buffer(&wgpu::BufferDescriptor {
                    label: None,
                    size,
                    usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                if let Some(bytes) = contents {
                    self.exec.queue().write_buffer(&buffer, 0, bytes);
                }
                GpuTensor { buffer, len }
            })
        })
    }

    /// `values` on the device.
    pub fn upload(&self, values: &[f32]) -> Result<GpuTensor, GpuError> {
        self.buffer(values.len(), Some(bytemuck::cast_slice(values)))
    }

    /// A device buffer of `len` elements, contents unspecified until written.
    pub fn scratch(&self, len: usize) -> Result<GpuTensor, GpuError> {
        self.buffer(len, None)
    }

    /// `m` on the device: f32 and Q4_1 as stored (Q4_1's 20-byte blocks are whole words), Q8_0 repacked into its
    /// scales and then its quants so every read is 4-byte aligned.
    pub fn upload_matrix(&self, m: &QMatrix) -> Result<GpuMatrix, GpuError> {
        let (kind, bytes, q8_blocks): (u32, Vec<u8>, usize) = match m.kind() {
            QuantType::F32 => (0, bytemuck::cast_slice(&m.to_f32()).to_vec(), 0),
            QuantType::Q4_1 => (1, m.block_bytes().to_vec(), 0),
            QuantType::Q8_0 => {
                let blocks = m.block_bytes().len() / 34;
                let mut out = Vec::with_capacity(blocks * 36);
                for b in m.block_bytes().chunks_exact(34) {
                    out.extend(crate::quant::f16_to_f32(u16::from_le_bytes([b[0], b[1]])).to_le_bytes());
                }
                for b in m.block_bytes().chunks_exact(34) {
                    out.extend_from_slice(&b[2..34]);
                }
                (2, out, blocks)
            }
            other => return Err(GpuError::Validation(format!("{other:?} matrices are not uploaded"))),
        };
        debug_assert!(bytes.len().is_multiple_of(4));
        let q8_blocks = Params::of(&[q8_blocks])?.p[0];
        Ok(GpuMatrix {
            words: self.buffer(bytes.len() / 4, Some(&bytes))?,
            kind,
            rows: m.rows(),
            cols: m.cols(),
            q8_blocks,
        })
    }

    /// The workgroup grid for `groups` groups, folded into two dimensions past the device's limit.
    fn grid(&self, groups: usize) -> Result<[u32; 3], GpuError> {
        let max = self.exec.limits().max_compute_workgroups_per_dimension as usize;
        let x = groups.clamp(1, max);
        let y = groups.div_ceil(x);
        if y > max {
            return Err(GpuError::LimitExceeded {
                what: "workgroups",
                requested: groups as u64,
                limit: (max * max) as u64,
            });
        }
        Ok([x as u32, y as u32, 1])
    }

    /// Records one dispatch of `kernel` writing `out`.
    fn record(
        &mut self,
        kernel: NnKernel,
        params: Params,
        inputs: Inputs<'_>,
        out: &GpuTensor,
        grid: [u32; 3],
    ) -> Result<(), GpuError> {
        self.exec.check_usable()?;
        if self.recorded >= MAX_RECORDED_DISPATCHES {
            self.submit()?;
        }
        let exec = &self.exec;
        let device = exec.device();
        let (layout, placeholder) = (&self.layout, &self.placeholder);
        let pipeline = &self.pipelines[&kernel];
        let encoder = self.encoder.get_or_insert_with(|| {
            device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("nn") })
        });
        exec.guarded(|| {
            exec.with_error_scopes(|| {
                let uniform = device.create_buffer(&wgpu::BufferDescriptor {
                    label: None,
                    size: 32,
                    usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                exec.queue().write_buffer(&uniform, 0, &params.bytes());
                fn bind<'b>(t: Option<&'b GpuTensor>, placeholder: &'b wgpu::Buffer) -> wgpu::BindingResource<'b> {
                    t.map_or(placeholder, |t| &t.buffer).as_entire_binding()
                }
                let entries = [
                    wgpu::BindGroupEntry { binding: 0, resource: uniform.as_entire_binding() },
                    wgpu::BindGroupEntry { binding: 1, resource: bind(inputs.x, placeholder) },
                    wgpu::BindGroupEntry { binding: 2, resource: bind(inputs.w, placeholder) },
                    wgpu::BindGroupEntry { binding: 3, resource: bind(inputs.a, placeholder) },
                    wgpu::BindGroupEntry { binding: 4, resource: bind(inputs.b, placeholder) },
                    wgpu::BindGroupEntry { binding: 5, resource: out.buffer.as_entire_binding() },
                ];
                let group =
                    device.create_bind_group(&wgpu::BindGroupDescriptor { label: None, layout, entries: &entries });
                let mut pass =
                    encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: None, timestamp_writes: None });
                pass.set_pipeline(pipeline);
                pass.set_bind_group(0, &group, &[]);
                pass.dispatch_workgroups(grid[0], grid[1], grid[2]);
            })
        })?;
        self.recorded += 1;
        Ok(())
    }

    /// Submits what is recorded.
    fn submit(&mut self) -> Result<Option<wgpu::SubmissionIndex>, GpuError> {
        self.recorded = 0;
        let Some(encoder) = self.encoder.take() else { return Ok(None) };
        let exec = &self.exec;
        exec.guarded(|| exec.with_error_scopes(|| exec.queue().submit([encoder.finish()]))).map(Some)
    }

    /// y[tokens × rows] = x[tokens × cols] · Wᵀ.
    pub fn matmul(&mut self, w: &GpuMatrix, x: &GpuTensor, tokens: usize, y: &GpuTensor) -> Result<(), GpuError> {
        check_len("matmul input", x, tokens * w.cols)?;
        check_len("matmul output", y, tokens * w.rows)?;
        let mut params = Params::of(&[w.rows, w.cols, 0, tokens])?;
        params.p[2] = w.kind;
        params.p[6] = w.q8_blocks;
        let inputs = Inputs { x: Some(x), w: Some(&w.words), ..Inputs::default() };
        if tokens == 1 {
            let grid = self.grid(w.rows.div_ceil(64))?;
            self.record(NnKernel::Matvec, params, inputs, y, grid)
        } else if tokens < MATMUL_MIN_TOKENS {
            let grid = self.grid((w.rows * tokens.div_ceil(MATVEC_CHUNK)).div_ceil(64))?;
            self.record(NnKernel::MatvecChunked, params, inputs, y, grid)
        } else {
            let (gx, gy) = (w.rows.div_ceil(64), tokens.div_ceil(64));
            let max = self.exec.limits().max_compute_workgroups_per_dimension as usize;
            if gx > max || gy > max {
                return Err(GpuError::LimitExceeded {
                    what: "workgroups per dimension",
                    requested: gx.max(gy) as u64,
                    limit: max as u64,
                });
            }
            self.record(NnKernel::Matmul, params, inputs, y, [gx as u32, gy as u32, 1])
        }
    }

    /// out[tokens × cols] = rows `ids` of `table`.
    pub fn gather(&mut self, table: &GpuMatrix, ids: &GpuTensor, out: &GpuTensor) -> Result<(), GpuError> {
        let tokens = ids.len();
        check_len("gather output", out, tokens * table.cols)?;
        let mut params = Params::of(&[tokens, table.cols, 0])?;
        params.p[2] = table.kind;
        params.p[6] = table.q8_blocks;
        let grid = self.grid((tokens * table.cols).div_ceil(256))?;
        self.record(
            NnKernel::Gather,
            params,
            Inputs { w: Some(&table.words), a: Some(ids), ..Inputs::default() },
            out,
            grid,
        )
    }

    /// out = RMSNorm(x)·weight, row by row.
    pub fn rms_norm(&mut self, x: &GpuTensor, weight: &GpuTensor, eps: f32, out: &GpuTensor) -> Result<(), GpuError> {
        let rows = x.len() / weight.len();
        check_len("rms_norm output", out, x.len())?;
        let mut params = Params::of(&[rows, weight.len()])?;
        params.eps = eps;
        let grid = self.grid(rows)?;
        self.record(NnKernel::RmsNorm, params, Inputs { x: Some(x), a: Some(weight), ..Inputs::default() }, out, grid)
    }

    /// x ← LayerNorm(x)·gamma + beta, row by row.
    pub fn layer_norm(&mut self, x: &GpuTensor, gamma: &GpuTensor, beta: &GpuTensor, eps: f32) -> Result<(), GpuError> {
        let rows = x.len() / gamma.len();
        let mut params = Params::of(&[rows, gamma.len()])?;
        params.eps = eps;
        let grid = self.grid(rows)?;
        self.record(NnKernel::LayerNorm, params, Inputs { a: Some(gamma), b: Some(beta), ..Inputs::default() }, x, grid)
    }

    /// RoPE in place on x[tokens × heads × head_dim] with the (cos, sin) pairs `angles[tokens × head_dim/2 × 2]`.
    pub fn rope(&mut self, x: &GpuTensor, heads: usize, head_dim: usize, angles: &GpuTensor) -> Result<(), GpuError> {
        let tokens = x.len() / (heads * head_dim);
        check_len("rope angles", angles, tokens * head_dim)?;
        let params = Params::of(&[tokens, heads, head_dim])?;
        let grid = self.grid((x.len() / 2).div_ceil(256))?;
        self.record(NnKernel::Rope, params, Inputs { a: Some(angles), ..Inputs::default() }, x, grid)
    }

    /// gate ← silu(gate)·up.
    pub fn silu_mul(&mut self, gate: &GpuTensor, up: &GpuTensor) -> Result<(), GpuError> {
        check_len("silu_mul up", up, gate.len())?;
        let grid = self.grid(gate.len().div_ceil(256))?;
        self.record(
            NnKernel::SiluMul,
            Params::of(&[gate.len()])?,
            Inputs { x: Some(up), ..Inputs::default() },
            gate,
            grid,
        )
    }

    /// x ← GELU(x), exact form.
    pub fn gelu_erf(&mut self, x: &GpuTensor) -> Result<(), GpuError> {
        let grid = self.grid(x.len().div_ceil(256))?;
        self.record(NnKernel::GeluErf, Params::of(&[x.len()])?, Inputs::default(), x, grid)
    }

    /// x ← x + y (when given) + bias broadcast over rows (when given).
    pub fn add(&mut self, x: &GpuTensor, y: Option<&GpuTensor>, bias: Option<&GpuTensor>) -> Result<(), GpuError> {
        if let Some(y) = y {
            check_len("add operand", y, x.len())?;
        }
        let params = Params::of(&[x.len(), bias.map_or(0, GpuTensor::len), usize::from(y.is_some())])?;
        let grid = self.grid(x.len().div_ceil(256))?;
        self.record(NnKernel::Add, params, Inputs { x: y, a: bias, ..Inputs::default() }, x, grid)
    }

    /// Attention of `shape.tokens` queries starting at token `first` of `q` against keys and values starting at
    /// token `first` of `k`, `v`, into `out` at the queries' place.
    pub fn attention(
        &mut self,
        shape: crate::nn::Attention,
        first: usize,
        q: &GpuTensor,
        k: &GpuTensor,
        v: &GpuTensor,
        out: &GpuTensor,
    ) -> Result<(), GpuError> {
        let crate::nn::Attention { tokens, keys, heads, kv_heads, head_dim, causal } = shape;
        if keys > MAX_ATTENTION_KEYS
            || head_dim > MAX_HEAD_DIM
            || keys < tokens
            || kv_heads == 0
            || !heads.is_multiple_of(kv_heads)
        {
            return Err(GpuError::Validation(format!("attention shape {shape:?} is outside the kernel's limits")));
        }
        check_len("attention queries", q, (first + tokens) * heads * head_dim)?;
        check_len("attention keys", k, (first + keys) * kv_heads * head_dim)?;
        check_len("attention values", v, (first + keys) * kv_heads * head_dim)?;
        check_len("attention output", out, (first + tokens) * heads * head_dim)?;
        let params = Params::of(&[tokens, keys, heads, kv_heads, head_dim, first, usize::from(causal)])?;
        let grid = self.grid(tokens * heads)?;
        self.record(
            NnKernel::Attention,
            params,
            Inputs { x: Some(q), a: Some(k), b: Some(v), ..Inputs::default() },
            out,
            grid,
        )
    }

    /// Copies `len` elements of `src` from `src_at` to `dst` at `dst_at` (a KV cache append).
    pub fn copy(
        &mut self,
        src: &GpuTensor,
        src_at: usize,
        dst: &GpuTensor,
        dst_at: usize,
        len: usize,
    ) -> Result<(), GpuError> {
        if src_at + len > src.len || dst_at + len > dst.len {
            return Err(GpuError::Validation(format!("copy of {len} elements past a buffer's end")));
        }
        let device = self.exec.device();
        let encoder = self.encoder.get_or_insert_with(|| {
            device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("nn") })
        });
        encoder.copy_buffer_to_buffer(
            &src.buffer,
            (src_at * 4) as u64,
            &dst.buffer,
            (dst_at * 4) as u64,
            (len * 4) as u64,
        );
        Ok(())
    }

    /// Submits everything recorded, waits for it, and returns elements `range` of `t`.
    pub fn read(&mut self, t: &GpuTensor, range: std::ops::Range<usize>) -> Result<Vec<f32>, GpuError> {
        if range.end > t.len || range.start > range.end {
            return Err(GpuError::Validation(format!("read of {range:?} from {} elements", t.len)));
        }
        let staged = self.stage_range(t, range)?;
        Ok(self.collect(vec![staged])?.pop().unwrap_or_default())
    }

    /// Encodes a copy of `t` as it is at this point of the command stream into a buffer of its own, without waiting:
    /// [`NnGpu::collect`] reads many of them back in one wait (a forward pass's recorded activations).
    pub fn stage(&mut self, t: &GpuTensor) -> Result<StagedRead, GpuError> {
        self.stage_range(t, 0..t.len)
    }

    /// [`NnGpu::stage`] of elements `range` (within `t`, checked by the caller).
    fn stage_range(&mut self, t: &GpuTensor, range: std::ops::Range<usize>) -> Result<StagedRead, GpuError> {
        let len = range.end - range.start;
        let bytes = (len * 4).max(4) as u64;
        let device = self.exec.device().clone();
        let buffer = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("nn read"),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let encoder = self.encoder.get_or_insert_with(|| {
            device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("nn") })
        });
        if len > 0 {
            encoder.copy_buffer_to_buffer(&t.buffer, (range.start * 4) as u64, &buffer, 0, bytes);
        }
        Ok(StagedRead { buffer, len })
    }

    /// The values of `staged` reads, in order, after one submission and one wait.
    pub fn collect(&mut self, staged: Vec<StagedRead>) -> Result<Vec<Vec<f32>>, GpuError> {
        if staged.is_empty() {
            return Ok(Vec::new());
        }
        // An empty encoder still makes a submission to wait on (earlier ones hold the copies then).
        let device = self.exec.device().clone();
        self.encoder.get_or_insert_with(|| {
            device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("nn") })
        });
        let submission = self.submit()?.ok_or_else(|| GpuError::Internal("nothing was submitted".into()))?;
        let lens: Vec<usize> = staged.iter().map(|s| s.len).collect();
        let buffers = staged.into_iter().enumerate().map(|(i, s)| (i as u32, s.buffer)).collect();
        let timeout = self.exec.dispatch_timeout();
        let exec = &self.exec;
        let out = exec.guarded(|| exec.read_back(submission, buffers, timeout))?;
        Ok(out
            .iter()
            .zip(lens)
            .map(|((_, bytes), len)| {
                let mut v = crate::gpu::f32s_of_bytes(&bytes[..(len * 4).min(bytes.len())]);
                v.truncate(len);
                v
            })
            .collect())
    }
}

/// A read encoded with [`NnGpu::stage`], waiting for [`NnGpu::collect`].
#[derive(Debug)]
pub struct StagedRead {
    buffer: wgpu::Buffer,
    len: usize,
}

fn check_len(what: &'static str, t: &GpuTensor, needed: usize) -> Result<(), GpuError> {
    if t.len < needed {
        return Err(GpuError::Validation(format!("{what} holds {} elements, {needed} are needed", t.len)));
    }
    Ok(())
}
