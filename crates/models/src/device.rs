//! Where a forward pass runs: the [`Device`] trait is the list of named ops the models are written in (gather,
//! matmul, RMSNorm, LayerNorm, RoPE, SiLU·up, GELU, adds, attention, copies), implemented once on the CPU
//! ([`Cpu`]: `neurolov_kernels::nn` and `quant`) and once on wgpu ([`Gpu`]: the kernels of `nn.wgsl`). The models
//! are written once against it, so both backends run the same sequence of ops and a trace of either can be
//! compared op by op.

use neurolov_kernels::gpu::{GpuError, GpuExecutor};
use neurolov_kernels::nn::{self, Attention};
use neurolov_kernels::nn_gpu::{GpuMatrix, GpuTensor, NnGpu};
use neurolov_kernels::pool::SpinPool;
use neurolov_kernels::quant::{self, QMatrix};

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error(transparent)]
    Gpu(#[from] GpuError),
}

/// Which device runs a model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    Cpu,
    Gpu,
}

impl std::str::FromStr for BackendKind {
    type Err = String;
    fn from_str(s: &str) -> Result<BackendKind, String> {
        match s {
            "cpu" => Ok(BackendKind::Cpu),
            "gpu" => Ok(BackendKind::Gpu),
            other => Err(format!("backend {other:?}: cpu or gpu")),
        }
    }
}

type R<T> = Result<T, DeviceError>;

/// The ops a forward pass is made of, over the device's own buffers.
pub trait Device {
    /// Activations (f32).
    type Buf;
    /// A weight matrix `[rows × cols]` in its storage type.
    type Mat;
    /// A read waiting to be collected.
    type Staged;

    /// The weights `m` on this device.
    fn matrix(&mut self, m: QMatrix) -> R<Self::Mat>;
    /// `values` on this device.
    fn input(&mut self, values: &[f32]) -> R<Self::Buf>;
    /// `len` values, to be written before they are read.
    fn zeros(&mut self, len: usize) -> R<Self::Buf>;
    /// Rows `ids` of `table`.
    fn gather(&mut self, table: &Self::Mat, ids: &[u32]) -> R<Self::Buf>;
    /// x[tokens × cols] · Wᵀ.
    fn matmul(&mut self, w: &Self::Mat, x: &Self::Buf, tokens: usize, rows: usize) -> R<Self::Buf>;
    /// Several products of the same input (`rows[i]` rows of `ws[i]`), as one op where the device gains by it.
    fn matmul_many(&mut self, ws: &[&Self::Mat], x: &Self::Buf, tokens: usize, rows: &[usize]) -> R<Vec<Self::Buf>> {
        ws.iter().zip(rows).map(|(w, &r)| self.matmul(w, x, tokens, r)).collect()
    }
    fn rms_norm(&mut self, x: &Self::Buf, weight: &Self::Buf, eps: f32) -> R<Self::Buf>;
    fn layer_norm(&mut self, x: &mut Self::Buf, gamma: &Self::Buf, beta: &Self::Buf, eps: f32) -> R<()>;
    /// RoPE on x[tokens × heads × head_dim], its first token at `first_pos`.
    fn rope(&mut self, x: &mut Self::Buf, heads: usize, head_dim: usize, first_pos: usize, base: f32) -> R<()>;
    fn silu_mul(&mut self, gate: &mut Self::Buf, up: &Self::Buf) -> R<()>;
    fn gelu(&mut self, x: &mut Self::Buf) -> R<()>;
    /// x ← x + y.
    fn add(&mut self, x: &mut Self::Buf, y: &Self::Buf) -> R<()>;
    /// x ← x + bias on every row.
    fn add_bias(&mut self, x: &mut Self::Buf, bias: &Self::Buf) -> R<()>;
    /// Attention of the queries from token `first` of `q` against keys/values from token `first`, into `out`.
    fn attention(
        &mut self,
        shape: Attention,
        first: usize,
        q: &Self::Buf,
        k: &Self::Buf,
        v: &Self::Buf,
        out: &mut Self::Buf,
    ) -> R<()>;
    /// dst[dst_at..][..len] ← src[src_at..][..len].
    fn copy(&mut self, src: &Self::Buf, src_at: usize, dst: &mut Self::Buf, dst_at: usize, len: usize) -> R<()>;
    /// Elements `range` of `x`, on the host.
    fn read(&mut self, x: &Self::Buf, range: std::ops::Range<usize>) -> R<Vec<f32>>;
    /// A read of `x` as it is now, delivered later with others by [`Device::collect`]: recording a forward pass
    /// costs the GPU one wait instead of one per op.
    fn stage(&mut self, x: &Self::Buf) -> R<Self::Staged>;
    fn collect(&mut self, staged: Vec<Self::Staged>) -> R<Vec<Vec<f32>>>;
    fn len(&self, x: &Self::Buf) -> usize;
}

/// The CPU: buffers are `Vec<f32>`, matrices [`QMatrix`]. One-token products go to a spinning helper thread
/// ([`SpinPool`]), larger work to rayon.
#[derive(Debug, Default)]
pub struct Cpu {
    pool: Option<SpinPool>,
    /// The last RoPE table, `(first_pos, tokens, head_dim, base bits)` → (cos, sin) per pair: a step applies the
    /// same rotations to q and k in every layer.
    rope: Option<(RopeKey, Vec<(f32, f32)>)>,
}

/// What a RoPE table depends on: first position, tokens, head width, base (its bits).
type RopeKey = (usize, usize, usize, u32);

impl Cpu {
    pub fn new() -> Cpu {
        Cpu { pool: SpinPool::new(), rope: None }
    }
}

impl Device for Cpu {
    type Buf = Vec<f32>;
    type Mat = QMatrix;
    type Staged = Vec<f32>;

    fn matrix(&mut self, m: QMatrix) -> R<QMatrix> {
        Ok(m)
    }
    fn input(&mut self, values: &[f32]) -> R<Vec<f32>> {
        Ok(values.to_vec())
    }
    fn zeros(&mut self, len: usize) -> R<Vec<f32>> {
        Ok(vec![0.0; len])
    }
    fn gather(&mut self, table: &QMatrix, ids: &[u32]) -> R<Vec<f32>> {
        let mut out = Vec::with_capacity(ids.len() * table.cols());
        for &id in ids {
            table.row_into(id as usize, &mut out);
        }
        Ok(out)
    }
    fn matmul(&mut self, w: &QMatrix, x: &Vec<f32>, tokens: usize, rows: usize) -> R<Vec<f32>> {
        debug_assert_eq!(rows, w.rows());
        if let (1, Some(pool)) = (tokens, &self.pool) {
            return Ok(quant::matvec_pooled(pool, x, &[w]).pop().unwrap_or_default());
        }
        let mut y = vec![0.0; tokens * rows];
        w.matmul(x, tokens, &mut y);
        Ok(y)
    }
    fn matmul_many(&mut self, ws: &[&QMatrix], x: &Vec<f32>, tokens: usize, rows: &[usize]) -> R<Vec<Vec<f32>>> {
        if tokens != 1 {
            return ws.iter().zip(rows).map(|(w, &r)| self.matmul(w, x, tokens, r)).collect();
        }
        if let Some(pool) = &self.pool {
            return Ok(quant::matvec_pooled(pool, x, ws));
        }
        let mut ys: Vec<Vec<f32>> = rows.iter().map(|&r| vec![0.0; r]).collect();
        let mut outputs: Vec<(&QMatrix, &mut [f32])> =
            ws.iter().copied().zip(ys.iter_mut().map(Vec::as_mut_slice)).collect();
        quant::matvec_many(x, &mut outputs);
        Ok(ys)
    }
    fn rms_norm(&mut self, x: &Vec<f32>, weight: &Vec<f32>, eps: f32) -> R<Vec<f32>> {
        let mut y = x.clone();
        nn::rms_norm(&mut y, weight, eps);
        Ok(y)
    }
    fn layer_norm(&mut self, x: &mut Vec<f32>, gamma: &Vec<f32>, beta: &Vec<f32>, eps: f32) -> R<()> {
        nn::layer_norm(x, gamma, beta, eps);
        Ok(())
    }
    fn rope(&mut self, x: &mut Vec<f32>, heads: usize, head_dim: usize, first_pos: usize, base: f32) -> R<()> {
        let tokens = x.len() / (heads * head_dim);
        let key = (first_pos, tokens, head_dim, base.to_bits());
        if self.rope.as_ref().is_none_or(|(k, _)| *k != key) {
            self.rope = Some((key, nn::rope_table(first_pos, tokens, head_dim, base)));
        }
        if let Some((_, table)) = &self.rope {
            nn::rope_with(x, head_dim, heads, table);
        }
        Ok(())
    }
    fn silu_mul(&mut self, gate: &mut Vec<f32>, up: &Vec<f32>) -> R<()> {
        nn::silu_mul(gate, up);
        Ok(())
    }
    fn gelu(&mut self, x: &mut Vec<f32>) -> R<()> {
        nn::gelu_erf(x);
        Ok(())
    }
    fn add(&mut self, x: &mut Vec<f32>, y: &Vec<f32>) -> R<()> {
        nn::add_assign(x, y);
        Ok(())
    }
    fn add_bias(&mut self, x: &mut Vec<f32>, bias: &Vec<f32>) -> R<()> {
        nn::add_bias(x, bias);
        Ok(())
    }
    fn attention(
        &mut self,
        shape: Attention,
        first: usize,
        q: &Vec<f32>,
        k: &Vec<f32>,
        v: &Vec<f32>,
        out: &mut Vec<f32>,
    ) -> R<()> {
        let (qw, kw) = (shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim);
        let queries = first * qw..(first + shape.tokens) * qw;
        let keys = first * kw..(first + shape.keys) * kw;
        nn::attention(shape, &q[queries.clone()], &k[keys.clone()], &v[keys], &mut out[queries]);
        Ok(())
    }
    fn copy(&mut self, src: &Vec<f32>, src_at: usize, dst: &mut Vec<f32>, dst_at: usize, len: usize) -> R<()> {
        dst[dst_at..dst_at + len].copy_from_slice(&src[src_at..src_at + len]);
        Ok(())
    }
    fn stage(&mut self, x: &Vec<f32>) -> R<Vec<f32>> {
        Ok(x.clone())
    }
    fn collect(&mut self, staged: Vec<Vec<f32>>) -> R<Vec<Vec<f32>>> {
        Ok(staged)
    }
    fn read(&mut self, x: &Vec<f32>, range: std::ops::Range<usize>) -> R<Vec<f32>> {
        Ok(x[range].to_vec())
    }
    fn len(&self, x: &Vec<f32>) -> usize {
        x.len()
    }
}

/// A wgpu device running `nn.wgsl`.
#[derive(Debug)]
pub struct Gpu {
    nn: NnGpu,
}

impl Gpu {
    pub fn new(exec: GpuExecutor) -> R<Gpu> {
        Ok(Gpu { nn: NnGpu::new(exec)? })
    }

    /// The best adapter wgpu finds.
    pub fn open() -> R<Gpu> {
        Gpu::new(GpuExecutor::open_default()?)
    }

    pub fn adapter(&self) -> &str {
        &self.nn.executor().report().name
    }
}

impl Device for Gpu {
    type Buf = GpuTensor;
    type Mat = GpuMatrix;
    type Staged = neurolov_kernels::nn_gpu::StagedRead;

    fn matrix(&mut self, m: QMatrix) -> R<GpuMatrix> {
        Ok(self.nn.upload_matrix(&m)?)
    }
    fn input(&mut self, values: &[f32]) -> R<GpuTensor> {
        Ok(self.nn.upload(values)?)
    }
    fn zeros(&mut self, len: usize) -> R<GpuTensor> {
        Ok(self.nn.scratch(len)?)
    }
    fn gather(&mut self, table: &GpuMatrix, ids: &[u32]) -> R<GpuTensor> {
        let ids: Vec<f32> = ids.iter().map(|&i| i as f32).collect();
        let ids = self.nn.upload(&ids)?;
        let out = self.nn.scratch(ids.len() * table.cols())?;
        self.nn.gather(table, &ids, &out)?;
        Ok(out)
    }
    fn matmul(&mut self, w: &GpuMatrix, x: &GpuTensor, tokens: usize, rows: usize) -> R<GpuTensor> {
        let y = self.nn.scratch(tokens * rows)?;
        self.nn.matmul(w, x, tokens, &y)?;
        Ok(y)
    }
    fn rms_norm(&mut self, x: &GpuTensor, weight: &GpuTensor, eps: f32) -> R<GpuTensor> {
        let y = self.nn.scratch(x.len())?;
        self.nn.rms_norm(x, weight, eps, &y)?;
        Ok(y)
    }
    fn layer_norm(&mut self, x: &mut GpuTensor, gamma: &GpuTensor, beta: &GpuTensor, eps: f32) -> R<()> {
        Ok(self.nn.layer_norm(x, gamma, beta, eps)?)
    }
    fn rope(&mut self, x: &mut GpuTensor, heads: usize, head_dim: usize, first_pos: usize, base: f32) -> R<()> {
        // The angles on the host, in f64 as the CPU path takes them, so both backends turn by the same amounts.
        let tokens = x.len() / (heads * head_dim);
        let mut angles = Vec::with_capacity(tokens * head_dim);
        for t in 0..tokens {
            for i in 0..head_dim / 2 {
                let (sin, cos) = nn::rope_angle((first_pos + t) as f64, i, head_dim, base).sin_cos();
                angles.extend([cos as f32, sin as f32]);
            }
        }
        let angles = self.nn.upload(&angles)?;
        Ok(self.nn.rope(x, heads, head_dim, &angles)?)
    }
    fn silu_mul(&mut self, gate: &mut GpuTensor, up: &GpuTensor) -> R<()> {
        Ok(self.nn.silu_mul(gate, up)?)
    }
    fn gelu(&mut self, x: &mut GpuTensor) -> R<()> {
        Ok(self.nn.gelu_erf(x)?)
    }
    fn add(&mut self, x: &mut GpuTensor, y: &GpuTensor) -> R<()> {
        Ok(self.nn.add(x, Some(y), None)?)
    }
    fn add_bias(&mut self, x: &mut GpuTensor, bias: &GpuTensor) -> R<()> {
        Ok(self.nn.add(x, None, Some(bias))?)
    }
    fn attention(
        &mut self,
        shape: Attention,
        first: usize,
        q: &GpuTensor,
        k: &GpuTensor,
        v: &GpuTensor,
        out: &mut GpuTensor,
    ) -> R<()> {
        Ok(self.nn.attention(shape, first, q, k, v, out)?)
    }
    fn copy(&mut self, src: &GpuTensor, src_at: usize, dst: &mut GpuTensor, dst_at: usize, len: usize) -> R<()> {
        Ok(self.nn.copy(src, src_at, dst, dst_at, len)?)
    }
    fn stage(&mut self, x: &GpuTensor) -> R<Self::Staged> {
        Ok(self.nn.stage(x)?)
    }
    fn collect(&mut self, staged: Vec<Self::Staged>) -> R<Vec<Vec<f32>>> {
        Ok(self.nn.collect(staged)?)
    }
    fn read(&mut self, x: &GpuTensor, range: std::ops::Range<usize>) -> R<Vec<f32>> {
        Ok(self.nn.read(x, range)?)
    }
    fn len(&self, x: &GpuTensor) -> usize {
        x.len()
    }
}

/// Sees every named op's output as the forward pass runs (`layer` is `None` outside the blocks).
pub trait Trace {
    fn op(&mut self, layer: Option<usize>, name: &'static str, output: &[f32]);
    /// Whether outputs are wanted at all (a GPU reads them back only then).
    fn enabled(&self) -> bool {
        true
    }
    /// Whether this op's output is wanted (each one a GPU reads back costs a round trip).
    fn wants(&self, _layer: Option<usize>, _name: &'static str) -> bool {
        self.enabled()
    }
}

/// Records nothing.
pub struct NoTrace;

impl Trace for NoTrace {
    fn op(&mut self, _: Option<usize>, _: &'static str, _: &[f32]) {}
    fn enabled(&self) -> bool {
        false
    }
}

/// What a forward pass reports to a [`Trace`]: each wanted op's output staged where it is computed, all delivered
/// at the end of the pass in one read.
pub(crate) struct Recording<'t, D: Device> {
    trace: &'t mut dyn Trace,
    pending: Vec<(Option<usize>, &'static str, D::Staged)>,
}

impl<'t, D: Device> Recording<'t, D> {
    pub(crate) fn new(trace: &'t mut dyn Trace) -> Recording<'t, D> {
        Recording { trace, pending: Vec::new() }
    }

    /// Stages `buf` as op `name` when the trace wants it.
    pub(crate) fn record(&mut self, dev: &mut D, layer: Option<usize>, name: &'static str, buf: &D::Buf) -> R<()> {
        if self.trace.enabled() && self.trace.wants(layer, name) {
            self.pending.push((layer, name, dev.stage(buf)?));
        }
        Ok(())
    }

    /// Reads what was staged and hands it to the trace, in the order it was computed.
    pub(crate) fn deliver(self, dev: &mut D) -> R<()> {
        let (names, staged): (Vec<_>, Vec<_>) = self.pending.into_iter().map(|(l, n, s)| ((l, n), s)).unzip();
        for ((layer, name), values) in names.into_iter().zip(dev.collect(staged)?) {
            self.trace.op(layer, name, &values);
        }
        Ok(())
    }
}
