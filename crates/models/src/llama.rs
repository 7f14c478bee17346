//! The Llama decoder (SmolLM2): its sizes and weights out of GGUF (4-bit and 8-bit blocks kept as they are, read
//! directly by the products), a KV cache, and the forward pass as a sequence of named ops — RMSNorm, the q/k/v
//! products, RoPE, causal grouped-query attention, the output product, the residual, RMSNorm, SwiGLU — written once
//! against [`Device`] (CPU or wgpu), each op reported to a [`Trace`] so a verifier can capture any layer's output.

use neurolov_kernels::nn::Attention;
use neurolov_kernels::quant::{QMatrix, QuantError};

use crate::device::{Cpu, Device, DeviceError, Recording};
pub use crate::device::{NoTrace, Trace};
use crate::gguf::{Gguf, TensorInfo, Value};

#[derive(Debug, thiserror::Error)]
pub enum LlamaError {
    #[error("gguf: {0}")]
    Metadata(String),
    #[error("tensor {name}: {reason}")]
    Tensor { name: String, reason: String },
    #[error(transparent)]
    Quant(#[from] QuantError),
    #[error("token id {id} is outside the vocabulary of {vocab}")]
    Token { id: u32, vocab: usize },
    #[error("the context holds {capacity} tokens; {needed} would not fit")]
    ContextFull { needed: usize, capacity: usize },
    #[error(transparent)]
    Device(#[from] DeviceError),
    #[error("nothing to run: no tokens")]
    NoTokens,
}

/// Largest model accepted: beyond these it is not a model this engine is sized for, and the sizes would be used
/// for allocations before any weight is read.
const MAX_LAYERS: usize = 256;
const MAX_WIDTH: usize = 16_384;

/// The decoder's sizes, from the GGUF metadata (`llama.*`).
#[derive(Clone, Debug, PartialEq)]
pub struct LlamaConfig {
    pub layers: usize,
    pub width: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub ffn_width: usize,
    pub vocab: usize,
    pub context: usize,
    pub rope_base: f32,
    pub rms_eps: f32,
}

impl LlamaConfig {
    pub fn from_gguf(g: &Gguf<'_>) -> Result<LlamaConfig, LlamaError> {
        let arch = g.architecture().unwrap_or("none");
        if arch != "llama" {
            return Err(LlamaError::Metadata(format!("architecture {arch:?} is not llama")));
        }
        let int = |key: &str| -> Result<usize, LlamaError> {
            let v = g.get(&format!("llama.{key}")).and_then(Value::as_u64);
            let v = v.ok_or_else(|| LlamaError::Metadata(format!("no llama.{key}")))?;
            usize::try_from(v)
                .ok()
                .filter(|v| (1..=1 << 24).contains(v))
                .ok_or_else(|| LlamaError::Metadata(format!("llama.{key} = {v}")))
        };
        let float = |key: &str, default: f32| g.get(&format!("llama.{key}")).and_then(Value::as_f32).unwrap_or(default);
        let (width, heads) = (int("embedding_length")?, int("attention.head_count")?);
        let kv_heads = int("attention.head_count_kv").unwrap_or(heads);
        let vocab = match g.get("llama.vocab_size").and_then(Value::as_u64) {
            Some(v) => v as usize,
            None => g.get("tokenizer.ggml.tokens").and_then(Value::as_array).map_or(0, <[Value]>::len),
        };
        let c = LlamaConfig {
            layers: int("block_count")?,
            width,
            heads,
            kv_heads,
            head_dim: width / heads,
            ffn_width: int("feed_forward_length")?,
            vocab,
            context: int("context_length")?,
            rope_base: float("rope.freq_base", 10_000.0),
            rms_eps: float("attention.layer_norm_rms_epsilon", 1e-5),
        };
        let fits = c.layers <= MAX_LAYERS
            && c.width <= MAX_WIDTH
            && c.width.is_multiple_of(heads)
            && heads.is_multiple_of(kv_heads)
            && c.head_dim.is_multiple_of(2)
            && c.ffn_width <= 8 * MAX_WIDTH
            && (1..=1 << 20).contains(&c.vocab)
            && c.rms_eps > 0.0
            && c.rope_base > 1.0;
        if !fits {
            return Err(LlamaError::Metadata(format!("sizes out of range: {c:?}")));
        }
        Ok(c)
    }

    pub fn kv_width(&self) -> usize {
        self.kv_heads * self.head_dim
    }
}

/// One decoder block's weights.
pub struct LlamaLayer<D: Device> {
    pub attn_norm: D::Buf,
    pub q: D::Mat,
    pub k: D::Mat,
    pub v: D::Mat,
    pub out: D::Mat,
    pub ffn_norm: D::Buf,
    pub gate: D::Mat,
    pub up: D::Mat,
    pub down: D::Mat,
}

/// The whole decoder, its weights on device `D`.
pub struct Llama<D: Device = Cpu> {
    pub config: LlamaConfig,
    /// `[vocab × width]`; also the output head when the file has no `output.weight` (tied embeddings).
    pub embeddings: D::Mat,
    pub layers: Vec<LlamaLayer<D>>,
    pub output_norm: D::Buf,
    pub output: Option<D::Mat>,
}

impl<D: Device> std::fmt::Debug for Llama<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Llama").field("config", &self.config).finish_non_exhaustive()
    }
}

impl Clone for Llama<Cpu> {
    /// A handle on the same weights (the matrices are shared).
    fn clone(&self) -> Self {
        let layers = self
            .layers
            .iter()
            .map(|l| LlamaLayer {
                attn_norm: l.attn_norm.clone(),
                q: l.q.clone(),
                k: l.k.clone(),
                v: l.v.clone(),
                out: l.out.clone(),
                ffn_norm: l.ffn_norm.clone(),
                gate: l.gate.clone(),
                up: l.up.clone(),
                down: l.down.clone(),
            })
            .collect();
        Llama {
            config: self.config.clone(),
            embeddings: self.embeddings.clone(),
            layers,
            output_norm: self.output_norm.clone(),
            output: self.output.clone(),
        }
    }
}

impl Llama<Cpu> {
    /// The output head: `output.weight`, or the embeddings when they are tied.
    pub fn head(&self) -> &QMatrix {
        self.output.as_ref().unwrap_or(&self.embeddings)
    }

    pub fn load(g: &Gguf<'_>) -> Result<Llama<Cpu>, LlamaError> {
        let c = LlamaConfig::from_gguf(g)?;
        let (w, kvw, f) = (c.width, c.kv_width(), c.ffn_width);
        let layers = (0..c.layers)
            .map(|l| {
                let name = |t: &str| format!("blk.{l}.{t}.weight");
                Ok(LlamaLayer {
                    attn_norm: vector(g, &name("attn_norm"), w)?,
                    q: matrix(g, &name("attn_q"), w, w)?,
                    k: matrix(g, &name("attn_k"), kvw, w)?,
                    v: matrix(g, &name("attn_v"), kvw, w)?,
                    out: matrix(g, &name("attn_output"), w, w)?,
                    ffn_norm: vector(g, &name("ffn_norm"), w)?,
                    gate: matrix(g, &name("ffn_gate"), f, w)?,
                    up: matrix(g, &name("ffn_up"), f, w)?,
                    down: matrix(g, &name("ffn_down"), w, f)?,
                })
            })
            .collect::<Result<Vec<_>, LlamaError>>()?;
        let output =
            if g.tensor("output.weight").is_some() { Some(matrix(g, "output.weight", c.vocab, w)?) } else { None };
        Ok(Llama {
            embeddings: matrix(g, "token_embd.weight", c.vocab, w)?,
            output_norm: vector(g, "output_norm.weight", w)?,
            layers,
            output,
            config: c,
        })
    }

    /// The same model with its weights on `dev`.
    pub fn to_device<D: Device>(self, dev: &mut D) -> Result<Llama<D>, LlamaError> {
        let layers = self
            .layers
            .into_iter()
            .map(|l| {
                Ok(LlamaLayer {
                    attn_norm: dev.input(&l.attn_norm)?,
                    q: dev.matrix(l.q)?,
                    k: dev.matrix(l.k)?,
                    v: dev.matrix(l.v)?,
                    out: dev.matrix(l.out)?,
                    ffn_norm: dev.input(&l.ffn_norm)?,
                    gate: dev.matrix(l.gate)?,
                    up: dev.matrix(l.up)?,
                    down: dev.matrix(l.down)?,
                })
            })
            .collect::<Result<Vec<_>, LlamaError>>()?;
        Ok(Llama {
            embeddings: dev.matrix(self.embeddings)?,
            output_norm: dev.input(&self.output_norm)?,
            output: self.output.map(|m| dev.matrix(m)).transpose()?,
            layers,
            config: self.config,
        })
    }
}

impl<D: Device> Llama<D> {
    /// A KV cache for up to `capacity` tokens (at most the model's context).
    pub fn cache(&self, dev: &mut D, capacity: usize) -> Result<KvCache<D>, LlamaError> {
        let capacity = capacity.min(self.config.context);
        let per_layer = capacity * self.config.kv_width();
        let mut buffers = || (0..self.config.layers).map(|_| dev.zeros(per_layer)).collect::<Result<Vec<_>, _>>();
        Ok(KvCache { k: buffers()?, v: buffers()?, len: 0, capacity })
    }

    /// Runs `tokens` after what `cache` holds, appends their keys and values, and returns the logits of the last
    /// token, or of every token when `all_logits` (`[tokens × vocab]`).
    pub fn forward(
        &self,
        dev: &mut D,
        tokens: &[u32],
        cache: &mut KvCache<D>,
        all_logits: bool,
        trace: &mut dyn Trace,
    ) -> Result<Vec<f32>, LlamaError> {
        let c = &self.config;
        let n = tokens.len();
        if n == 0 {
            return Err(LlamaError::NoTokens);
        }
        if cache.len + n > cache.capacity {
            return Err(LlamaError::ContextFull { needed: cache.len + n, capacity: cache.capacity });
        }
        if let Some(&id) = tokens.iter().find(|&&id| id as usize >= c.vocab) {
            return Err(LlamaError::Token { id, vocab: c.vocab });
        }
        let mut rec = Recording::new(trace);
        let mut x = dev.gather(&self.embeddings, tokens)?;
        rec.record(dev, None, "embed", &x)?;
        for (l, layer) in self.layers.iter().enumerate() {
            self.block(dev, l, layer, &mut x, n, cache, &mut rec)?;
        }
        cache.len += n;
        let rows = if all_logits { n } else { 1 };
        let last = if all_logits {
            x
        } else {
            let mut row = dev.zeros(c.width)?;
            dev.copy(&x, (n - 1) * c.width, &mut row, 0, c.width)?;
            row
        };
        let h = dev.rms_norm(&last, &self.output_norm, c.rms_eps)?;
        rec.record(dev, None, "output_norm", &h)?;
        rec.deliver(dev)?;
        let logits = dev.matmul(self.output.as_ref().unwrap_or(&self.embeddings), &h, rows, c.vocab)?;
        Ok(dev.read(&logits, 0..rows * c.vocab)?)
    }

    /// One decoder block on `x[n × width]`, in place.
    #[allow(clippy::too_many_arguments)] // The block's inputs, each needed; bundling them would only rename them.
    fn block(
        &self,
        dev: &mut D,
        l: usize,
        layer: &LlamaLayer<D>,
        x: &mut D::Buf,
        n: usize,
        cache: &mut KvCache<D>,
        rec: &mut Recording<'_, D>,
    ) -> Result<(), LlamaError> {
        let c = &self.config;
        let (at, kvw) = (Some(l), c.kv_width());
        let h = dev.rms_norm(x, &layer.attn_norm, c.rms_eps)?;
        rec.record(dev, at, "attn_norm", &h)?;
        let [mut q, mut k, v]: [D::Buf; 3] = dev
            .matmul_many(&[&layer.q, &layer.k, &layer.v], &h, n, &[c.width, kvw, kvw])?
            .try_into()
            .map_err(|_| LlamaError::Metadata("q, k, v: three products expected".into()))?;
        dev.rope(&mut q, c.heads, c.head_dim, cache.len, c.rope_base)?;
        dev.rope(&mut k, c.kv_heads, c.head_dim, cache.len, c.rope_base)?;
        rec.record(dev, at, "q_rope", &q)?;
        rec.record(dev, at, "k_rope", &k)?;
        rec.record(dev, at, "v", &v)?;
        dev.copy(&k, 0, &mut cache.k[l], cache.len * kvw, n * kvw)?;
        dev.copy(&v, 0, &mut cache.v[l], cache.len * kvw, n * kvw)?;
        let shape = Attention {
            tokens: n,
            keys: cache.len + n,
            heads: c.heads,
            kv_heads: c.kv_heads,
            head_dim: c.head_dim,
            causal: true,
        };
        let mut attended = dev.zeros(n * c.width)?;
        dev.attention(shape, 0, &q, &cache.k[l], &cache.v[l], &mut attended)?;
        rec.record(dev, at, "attention", &attended)?;
        let projected = dev.matmul(&layer.out, &attended, n, c.width)?;
        dev.add(x, &projected)?;
        rec.record(dev, at, "attn_residual", x)?;
        let h = dev.rms_norm(x, &layer.ffn_norm, c.rms_eps)?;
        rec.record(dev, at, "ffn_norm", &h)?;
        let [mut gate, up]: [D::Buf; 2] = dev
            .matmul_many(&[&layer.gate, &layer.up], &h, n, &[c.ffn_width, c.ffn_width])?
            .try_into()
            .map_err(|_| LlamaError::Metadata("gate, up: two products expected".into()))?;
        dev.silu_mul(&mut gate, &up)?;
        rec.record(dev, at, "swiglu", &gate)?;
        let down = dev.matmul(&layer.down, &gate, n, c.width)?;
        dev.add(x, &down)?;
        rec.record(dev, at, "ffn_residual", x)?;
        Ok(())
    }
}

/// Keys and values of the tokens seen so far, per layer `[capacity × kv_heads × head_dim]` (after RoPE).
pub struct KvCache<D: Device> {
    k: Vec<D::Buf>,
    v: Vec<D::Buf>,
    /// Tokens held.
    len: usize,
    /// Tokens it may hold: the bound on its memory.
    capacity: usize,
}

impl<D: Device> KvCache<D> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

fn info<'g>(g: &'g Gguf<'_>, name: &str) -> Result<&'g TensorInfo, LlamaError> {
    g.tensor(name).ok_or_else(|| LlamaError::Tensor { name: name.into(), reason: "missing".into() })
}

/// The `[rows × cols]` matrix `name` (GGUF dims `[cols, rows]`) in its storage type.
fn matrix(g: &Gguf<'_>, name: &str, rows: usize, cols: usize) -> Result<QMatrix, LlamaError> {
    let t = info(g, name)?;
    if t.dims != [cols as u64, rows as u64] {
        return Err(LlamaError::Tensor {
            name: name.into(),
            reason: format!("dims {:?}, expected [{cols}, {rows}]", t.dims),
        });
    }
    let kind = t
        .kind
        .quant_type()
        .ok_or_else(|| LlamaError::Tensor { name: name.into(), reason: format!("type {:?}", t.kind) })?;
    Ok(QMatrix::new(kind, rows, cols, g.tensor_bytes(t).to_vec())?)
}

/// The f32 vector `name` of `len` elements (norm weights).
fn vector(g: &Gguf<'_>, name: &str, len: usize) -> Result<Vec<f32>, LlamaError> {
    let t = info(g, name)?;
    if t.dims != [len as u64] {
        return Err(LlamaError::Tensor { name: name.into(), reason: format!("dims {:?}, expected [{len}]", t.dims) });
    }
    let kind = t
        .kind
        .quant_type()
        .ok_or_else(|| LlamaError::Tensor { name: name.into(), reason: format!("type {:?}", t.kind) })?;
    Ok(neurolov_kernels::quant::dequantize(kind, g.tensor_bytes(t))?)
}
