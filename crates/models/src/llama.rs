//! The Llama decoder (SmolLM2) on the CPU: its sizes and weights out of GGUF (4-bit and 8-bit blocks kept as they
//! are, read directly by the products), a KV cache, and the forward pass as a sequence of named ops — RMSNorm,
//! the q/k/v products, RoPE, causal grouped-query attention, the output product, the residual, RMSNorm, SwiGLU
//! — each reported to a [`Trace`] so a verifier can capture any layer's inputs and outputs.

use neurolov_kernels::nn::{self, Attention};
use neurolov_kernels::quant::{QMatrix, QuantError};

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
            usize::try_from(v).ok().filter(|v| (1..=1 << 24).contains(v)).ok_or_else(|| LlamaError::Metadata(format!("llama.{key} = {v}")))
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
#[derive(Clone, Debug)]
pub struct LlamaLayer {
    pub attn_norm: Vec<f32>,
    pub q: QMatrix,
    pub k: QMatrix,
    pub v: QMatrix,
    pub out: QMatrix,
    pub ffn_norm: Vec<f32>,
    pub gate: QMatrix,
    pub up: QMatrix,
    pub down: QMatrix,
}

/// The whole decoder.
#[derive(Clone, Debug)]
pub struct Llama {
    pub config: LlamaConfig,
    /// `[vocab × width]`; also the output head when the file has no `output.weight` (tied embeddings).
    pub embeddings: QMatrix,
    pub layers: Vec<LlamaLayer>,
    pub output_norm: Vec<f32>,
    pub output: Option<QMatrix>,
}

impl Llama {
    pub fn load(g: &Gguf<'_>) -> Result<Llama, LlamaError> {
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
        let output = if g.tensor("output.weight").is_some() { Some(matrix(g, "output.weight", c.vocab, w)?) } else { None };
        Ok(Llama {
            embeddings: matrix(g, "token_embd.weight", c.vocab, w)?,
            output_norm: vector(g, "output_norm.weight", w)?,
            layers,
            output,
            config: c,
        })
    }

    /// A KV cache for up to `capacity` tokens (at most the model's context).
    pub fn cache(&self, capacity: usize) -> KvCache {
        let capacity = capacity.min(self.config.context);
        KvCache { k: vec![Vec::new(); self.config.layers], v: vec![Vec::new(); self.config.layers], len: 0, capacity }
    }

    /// Runs `tokens` after what `cache` holds, appends their keys and values, and returns the logits of the last
    /// token, or of every token when `all_logits` (`[tokens × vocab]`).
    pub fn forward(&self, tokens: &[u32], cache: &mut KvCache, all_logits: bool, trace: &mut dyn Trace) -> Result<Vec<f32>, LlamaError> {
        let c = &self.config;
        let n = tokens.len();
        if n == 0 {
            return Err(LlamaError::NoTokens);
        }
        if cache.len + n > cache.capacity {
            return Err(LlamaError::ContextFull { needed: cache.len + n, capacity: cache.capacity });
        }
        let mut x = Vec::with_capacity(n * c.width);
        for &id in tokens {
            if id as usize >= c.vocab {
                return Err(LlamaError::Token { id, vocab: c.vocab });
            }
            self.embeddings.row_into(id as usize, &mut x);
        }
        trace.op(None, "embed", &x);
        for (l, layer) in self.layers.iter().enumerate() {
            self.block(l, layer, &mut x, n, cache, trace);
        }
        cache.len += n;
        let last = if all_logits { 0 } else { n - 1 };
        let mut h = x[last * c.width..].to_vec();
        nn::rms_norm(&mut h, &self.output_norm, c.rms_eps);
        trace.op(None, "output_norm", &h);
        let rows = n - last;
        let mut logits = vec![0.0; rows * c.vocab];
        self.output.as_ref().unwrap_or(&self.embeddings).matmul(&h, rows, &mut logits);
        trace.op(None, "logits", &logits);
        Ok(logits)
    }

    /// One decoder block on `x[n × width]`, in place.
    fn block(&self, l: usize, layer: &LlamaLayer, x: &mut [f32], n: usize, cache: &mut KvCache, trace: &mut dyn Trace) {
        let c = &self.config;
        let at = Some(l);
        let mut h = x.to_vec();
        nn::rms_norm(&mut h, &layer.attn_norm, c.rms_eps);
        trace.op(at, "attn_norm", &h);
        let (mut q, mut k, mut v) = (vec![0.0; n * c.width], vec![0.0; n * c.kv_width()], vec![0.0; n * c.kv_width()]);
        layer.q.matmul(&h, n, &mut q);
        layer.k.matmul(&h, n, &mut k);
        layer.v.matmul(&h, n, &mut v);
        nn::rope(&mut q, c.head_dim, cache.len, c.rope_base, c.heads);
        nn::rope(&mut k, c.head_dim, cache.len, c.rope_base, c.kv_heads);
        trace.op(at, "q_rope", &q);
        trace.op(at, "k_rope", &k);
        trace.op(at, "v", &v);
        cache.k[l].extend_from_slice(&k);
        cache.v[l].extend_from_slice(&v);
        let shape = Attention { tokens: n, keys: cache.len + n, heads: c.heads, kv_heads: c.kv_heads, head_dim: c.head_dim, causal: true };
        let mut attended = vec![0.0; n * c.width];
        nn::attention(shape, &q, &cache.k[l], &cache.v[l], &mut attended);
        trace.op(at, "attention", &attended);
        layer.out.matmul(&attended, n, &mut h);
        nn::add_assign(x, &h);
        trace.op(at, "attn_residual", x);
        h.copy_from_slice(x);
        nn::rms_norm(&mut h, &layer.ffn_norm, c.rms_eps);
        trace.op(at, "ffn_norm", &h);
        let (mut gate, mut up) = (vec![0.0; n * c.ffn_width], vec![0.0; n * c.ffn_width]);
        layer.gate.matmul(&h, n, &mut gate);
        layer.up.matmul(&h, n, &mut up);
        nn::silu_mul(&mut gate, &up);
        trace.op(at, "swiglu", &gate);
        layer.down.matmul(&gate, n, &mut h);
        nn::add_assign(x, &h);
        trace.op(at, "ffn_residual", x);
    }
}

/// Keys and values of the tokens seen so far, per layer `[tokens × kv_heads × head_dim]` (after RoPE).
#[derive(Clone, Debug)]
pub struct KvCache {
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    /// Tokens held.
    len: usize,
    /// Tokens it may hold: the bound on its memory.
    capacity: usize,
}

impl KvCache {
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

/// Sees every named op's output as the forward pass runs (`layer` is `None` outside the blocks).
pub trait Trace {
    fn op(&mut self, layer: Option<usize>, name: &'static str, output: &[f32]);
}

/// Records nothing.
pub struct NoTrace;

impl Trace for NoTrace {
    fn op(&mut self, _: Option<usize>, _: &'static str, _: &[f32]) {}
}

fn info<'g>(g: &'g Gguf<'_>, name: &str) -> Result<&'g TensorInfo, LlamaError> {
    g.tensor(name).ok_or_else(|| LlamaError::Tensor { name: name.into(), reason: "missing".into() })
}

/// The `[rows × cols]` matrix `name` (GGUF dims `[cols, rows]`) in its storage type.
fn matrix(g: &Gguf<'_>, name: &str, rows: usize, cols: usize) -> Result<QMatrix, LlamaError> {
    let t = info(g, name)?;
    if t.dims != [cols as u64, rows as u64] {
        return Err(LlamaError::Tensor { name: name.into(), reason: format!("dims {:?}, expected [{cols}, {rows}]", t.dims) });
    }
    let kind = t.kind.quant_type().ok_or_else(|| LlamaError::Tensor { name: name.into(), reason: format!("type {:?}", t.kind) })?;
    Ok(QMatrix::new(kind, rows, cols, g.tensor_bytes(t).to_vec())?)
}

/// The f32 vector `name` of `len` elements (norm weights).
fn vector(g: &Gguf<'_>, name: &str, len: usize) -> Result<Vec<f32>, LlamaError> {
    let t = info(g, name)?;
    if t.dims != [len as u64] {
        return Err(LlamaError::Tensor { name: name.into(), reason: format!("dims {:?}, expected [{len}]", t.dims) });
    }
    let kind = t.kind.quant_type().ok_or_else(|| LlamaError::Tensor { name: name.into(), reason: format!("type {:?}", t.kind) })?;
    Ok(neurolov_kernels::quant::dequantize(kind, g.tensor_bytes(t))?)
}
