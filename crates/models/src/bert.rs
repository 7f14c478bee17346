//! all-MiniLM-L6-v2's weights: its `config.json` (the BERT encoder's sizes) and `model.safetensors` read into named,
//! shape-checked f32 tensors — the embeddings and, per layer, attention (query, key, value, output), its LayerNorm,
//! the feed-forward pair and the output LayerNorm. Every tensor's shape is checked against the config before it is
//! used, so a file of another model is a typed error, not a wrong answer.

use neurolov_kernels::nn::{self, Attention};

use crate::device::{Cpu, Device, DeviceError, NoTrace, Recording, Trace};
use neurolov_kernels::quant::QMatrix;
use safetensors::{Dtype, SafeTensors};

#[derive(Debug, thiserror::Error)]
pub enum BertError {
    #[error("config.json: {0}")]
    Config(String),
    #[error("model.safetensors: {0}")]
    Safetensors(String),
    #[error("no tensor {0}")]
    Missing(String),
    #[error("{name} is {got:?}, the config needs {expected:?}")]
    Shape { name: String, expected: Vec<usize>, got: Vec<usize> },
    #[error(transparent)]
    Device(#[from] DeviceError),
    #[error("input: {0}")]
    Input(String),
    #[error("{name} is {dtype}, not f32")]
    Dtype { name: String, dtype: String },
}

/// The encoder's sizes, from `config.json`.
#[derive(Clone, Debug, PartialEq, serde::Deserialize)]
pub struct BertConfig {
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub vocab_size: usize,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f32,
}

/// Largest sizes a config may ask for: beyond them it is not a MiniLM-sized model and would allocate without bound.
const MAX_HIDDEN: usize = 4096;
const MAX_LAYERS: usize = 64;
const MAX_VOCAB: usize = 1 << 20;

impl BertConfig {
    pub fn parse(json: &str) -> Result<BertConfig, BertError> {
        let c: BertConfig = serde_json::from_str(json).map_err(|e| BertError::Config(e.to_string()))?;
        let fits = c.hidden_size > 0
            && c.hidden_size <= MAX_HIDDEN
            && c.num_attention_heads > 0
            && c.hidden_size.is_multiple_of(c.num_attention_heads)
            && (1..=MAX_LAYERS).contains(&c.num_hidden_layers)
            && c.intermediate_size <= 8 * MAX_HIDDEN
            && c.vocab_size <= MAX_VOCAB
            && c.max_position_embeddings <= 1 << 16
            && c.type_vocab_size <= 16;
        if !fits {
            return Err(BertError::Config(format!("sizes out of range: {c:?}")));
        }
        Ok(c)
    }
}

/// A named f32 tensor, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// One encoder layer's weights (PyTorch `Linear` layout: `[out, in]`).
#[derive(Clone, Debug)]
pub struct BertLayer {
    pub query: (Tensor, Tensor),
    pub key: (Tensor, Tensor),
    pub value: (Tensor, Tensor),
    pub attention_out: (Tensor, Tensor),
    pub attention_norm: (Tensor, Tensor),
    pub intermediate: (Tensor, Tensor),
    pub output: (Tensor, Tensor),
    pub output_norm: (Tensor, Tensor),
}

/// The whole encoder.
#[derive(Clone, Debug)]
pub struct BertWeights {
    pub config: BertConfig,
    pub word_embeddings: Tensor,
    pub position_embeddings: Tensor,
    pub token_type_embeddings: Tensor,
    pub embeddings_norm: (Tensor, Tensor),
    pub layers: Vec<BertLayer>,
}

impl BertWeights {
    /// Reads `safetensors` (the file's bytes) for the encoder `config` describes.
    pub fn load(config: BertConfig, safetensors: &[u8]) -> Result<BertWeights, BertError> {
        let st = SafeTensors::deserialize(safetensors).map_err(|e| BertError::Safetensors(e.to_string()))?;
        let (h, i) = (config.hidden_size, config.intermediate_size);
        let get = |name: &str, shape: &[usize]| tensor(&st, name, shape);
        let linear = |prefix: &str, out: usize, inp: usize| -> Result<(Tensor, Tensor), BertError> {
            Ok((get(&format!("{prefix}.weight"), &[out, inp])?, get(&format!("{prefix}.bias"), &[out])?))
        };
        let norm = |prefix: &str| -> Result<(Tensor, Tensor), BertError> {
            Ok((get(&format!("{prefix}.weight"), &[h])?, get(&format!("{prefix}.bias"), &[h])?))
        };
        let layers = (0..config.num_hidden_layers)
            .map(|l| {
                let p = format!("encoder.layer.{l}");
                Ok(BertLayer {
                    query: linear(&format!("{p}.attention.self.query"), h, h)?,
                    key: linear(&format!("{p}.attention.self.key"), h, h)?,
                    value: linear(&format!("{p}.attention.self.value"), h, h)?,
                    attention_out: linear(&format!("{p}.attention.output.dense"), h, h)?,
                    attention_norm: norm(&format!("{p}.attention.output.LayerNorm"))?,
                    intermediate: linear(&format!("{p}.intermediate.dense"), i, h)?,
                    output: linear(&format!("{p}.output.dense"), h, i)?,
                    output_norm: norm(&format!("{p}.output.LayerNorm"))?,
                })
            })
            .collect::<Result<Vec<_>, BertError>>()?;
        Ok(BertWeights {
            word_embeddings: get("embeddings.word_embeddings.weight", &[config.vocab_size, h])?,
            position_embeddings: get("embeddings.position_embeddings.weight", &[config.max_position_embeddings, h])?,
            token_type_embeddings: get("embeddings.token_type_embeddings.weight", &[config.type_vocab_size, h])?,
            embeddings_norm: norm("embeddings.LayerNorm")?,
            layers,
            config,
        })
    }
}

/// One encoder layer on a device: the products as matrices, biases and norms as buffers.
struct EncoderLayer<D: Device> {
    query: D::Mat,
    key: D::Mat,
    value: D::Mat,
    attention_out: D::Mat,
    /// Biases of query, key, value, attention output, intermediate, output.
    biases: [D::Buf; 6],
    attention_norm: (D::Buf, D::Buf),
    intermediate: D::Mat,
    output: D::Mat,
    output_norm: (D::Buf, D::Buf),
}

/// Most tokens one pass over the encoder holds: a batch beyond it runs in several passes, bounding the
/// activations (the widest, 8,192 × 1,536 floats, is 48 MiB).
pub const MAX_TOKENS_PER_PASS: usize = 8192;

/// The BERT encoder with mean pooling and L2 normalization (sentence embeddings), its weights on device `D`.
pub struct Bert<D: Device = Cpu> {
    config: BertConfig,
    word_embeddings: D::Mat,
    /// Position embeddings plus the (only) token type's, per position, kept on the host: each pass adds the rows
    /// its positions need.
    position_rows: Vec<f32>,
    embeddings_norm: (D::Buf, D::Buf),
    layers: Vec<EncoderLayer<D>>,
}

impl<D: Device> std::fmt::Debug for Bert<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bert").field("config", &self.config).finish_non_exhaustive()
    }
}

impl<D: Device> Bert<D> {
    /// `w` with its weights on `dev`.
    pub fn new(w: BertWeights, dev: &mut D) -> Result<Bert<D>, BertError> {
        let h = w.config.hidden_size;
        let m = |t: Tensor, dev: &mut D| -> Result<D::Mat, BertError> {
            let q =
                QMatrix::from_f32(t.shape[0], t.shape[1], t.data).map_err(|e| BertError::Safetensors(e.to_string()))?;
            Ok(dev.matrix(q)?)
        };
        let mut layers = Vec::with_capacity(w.layers.len());
        for l in w.layers {
            let buf = |t: &Tensor, dev: &mut D| -> Result<D::Buf, BertError> { Ok(dev.input(&t.data)?) };
            layers.push(EncoderLayer {
                biases: [
                    buf(&l.query.1, dev)?,
                    buf(&l.key.1, dev)?,
                    buf(&l.value.1, dev)?,
                    buf(&l.attention_out.1, dev)?,
                    buf(&l.intermediate.1, dev)?,
                    buf(&l.output.1, dev)?,
                ],
                attention_norm: (buf(&l.attention_norm.0, dev)?, buf(&l.attention_norm.1, dev)?),
                output_norm: (buf(&l.output_norm.0, dev)?, buf(&l.output_norm.1, dev)?),
                query: m(l.query.0, dev)?,
                key: m(l.key.0, dev)?,
                value: m(l.value.0, dev)?,
                attention_out: m(l.attention_out.0, dev)?,
                intermediate: m(l.intermediate.0, dev)?,
                output: m(l.output.0, dev)?,
            });
        }
        let type_0 = &w.token_type_embeddings.data[..h];
        let mut position_rows = w.position_embeddings.data;
        for row in position_rows.chunks_exact_mut(h) {
            nn::add_assign(row, type_0);
        }
        Ok(Bert {
            word_embeddings: m(w.word_embeddings, dev)?,
            position_rows,
            embeddings_norm: (dev.input(&w.embeddings_norm.0.data)?, dev.input(&w.embeddings_norm.1.data)?),
            layers,
            config: w.config,
        })
    }

    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    /// The unit-length sentence embedding of each sequence of token ids. The sequences run together, without
    /// padding: every product covers all their tokens at once, attention stays within each sequence.
    pub fn embed(&self, dev: &mut D, batch: &[Vec<u32>]) -> Result<Vec<Vec<f32>>, BertError> {
        self.embed_traced(dev, batch, &mut NoTrace)
    }

    /// [`Bert::embed`], every op's output reported to `trace` (pass by pass: a batch over
    /// [`MAX_TOKENS_PER_PASS`] tokens is several passes).
    pub fn embed_traced(
        &self,
        dev: &mut D,
        batch: &[Vec<u32>],
        trace: &mut dyn Trace,
    ) -> Result<Vec<Vec<f32>>, BertError> {
        let c = &self.config;
        for ids in batch {
            if ids.len() > c.max_position_embeddings || ids.len() > MAX_TOKENS_PER_PASS {
                return Err(BertError::Input(format!(
                    "{} tokens, the model takes {}",
                    ids.len(),
                    c.max_position_embeddings
                )));
            }
            if let Some(id) = ids.iter().find(|&&id| id as usize >= c.vocab_size) {
                return Err(BertError::Input(format!("token id {id} is outside the vocabulary")));
            }
        }
        let mut out = Vec::with_capacity(batch.len());
        let mut rest = batch;
        while !rest.is_empty() {
            let mut tokens = 0;
            let take = rest.iter().take_while(|ids| {
                tokens += ids.len();
                tokens <= MAX_TOKENS_PER_PASS
            });
            let take = take.count().max(1);
            out.extend(self.pass(dev, &rest[..take], trace)?);
            rest = &rest[take..];
        }
        Ok(out)
    }

    /// One pass of the encoder over `batch`.
    fn pass(&self, dev: &mut D, batch: &[Vec<u32>], trace: &mut dyn Trace) -> Result<Vec<Vec<f32>>, BertError> {
        let h = self.config.hidden_size;
        let lens: Vec<usize> = batch.iter().map(Vec::len).collect();
        let ids: Vec<u32> = batch.concat();
        let mut positions = Vec::with_capacity(ids.len() * h);
        for &len in &lens {
            positions.extend_from_slice(&self.position_rows[..len * h]);
        }
        let mut x = dev.gather(&self.word_embeddings, &ids)?;
        let positions = dev.input(&positions)?;
        dev.add(&mut x, &positions)?;
        dev.layer_norm(&mut x, &self.embeddings_norm.0, &self.embeddings_norm.1, self.config.layer_norm_eps)?;
        let mut rec = Recording::new(trace);
        rec.record(dev, None, "embed", &x)?;
        for (l, layer) in self.layers.iter().enumerate() {
            self.layer(dev, l, layer, &mut x, &lens, &mut rec)?;
        }
        rec.deliver(dev)?;
        let x = dev.read(&x, 0..ids.len() * h)?;
        Ok(mean_pool_normalized(&x, &lens, h))
    }

    /// One encoder layer on all tokens `x`, in place.
    fn layer(
        &self,
        dev: &mut D,
        l: usize,
        layer: &EncoderLayer<D>,
        x: &mut D::Buf,
        lens: &[usize],
        rec: &mut Recording<'_, D>,
    ) -> Result<(), BertError> {
        let at = Some(l);
        let c = &self.config;
        let (h, heads, eps) = (c.hidden_size, c.num_attention_heads, c.layer_norm_eps);
        let n = lens.iter().sum();
        let [bq, bk, bv, bo, bi, bout] = &layer.biases;
        let linear =
            |m: &D::Mat, bias: &D::Buf, input: &D::Buf, rows: usize, dev: &mut D| -> Result<D::Buf, BertError> {
                let mut out = dev.matmul(m, input, n, rows)?;
                dev.add_bias(&mut out, bias)?;
                Ok(out)
            };
        let q = linear(&layer.query, bq, x, h, dev)?;
        let k = linear(&layer.key, bk, x, h, dev)?;
        let v = linear(&layer.value, bv, x, h, dev)?;
        rec.record(dev, at, "q", &q)?;
        rec.record(dev, at, "k", &k)?;
        rec.record(dev, at, "v", &v)?;
        let mut attended = dev.zeros(n * h)?;
        let mut start = 0;
        for &len in lens.iter().filter(|&&len| len > 0) {
            let shape =
                Attention { tokens: len, keys: len, heads, kv_heads: heads, head_dim: h / heads, causal: false };
            dev.attention(shape, start, &q, &k, &v, &mut attended)?;
            start += len;
        }
        rec.record(dev, at, "attention", &attended)?;
        let projected = linear(&layer.attention_out, bo, &attended, h, dev)?;
        dev.add(x, &projected)?;
        rec.record(dev, at, "attn_sum", x)?;
        dev.layer_norm(x, &layer.attention_norm.0, &layer.attention_norm.1, eps)?;
        rec.record(dev, at, "attn_norm", x)?;
        let mut inner = linear(&layer.intermediate, bi, x, c.intermediate_size, dev)?;
        dev.gelu(&mut inner)?;
        rec.record(dev, at, "gelu", &inner)?;
        let out = linear(&layer.output, bout, &inner, h, dev)?;
        dev.add(x, &out)?;
        rec.record(dev, at, "ffn_sum", x)?;
        dev.layer_norm(x, &layer.output_norm.0, &layer.output_norm.1, eps)?;
        rec.record(dev, at, "output_norm", x)?;
        Ok(())
    }
}

/// Each sequence's mean token vector, scaled to unit length (sentence-transformers' Pooling and Normalize).
fn mean_pool_normalized(x: &[f32], lens: &[usize], h: usize) -> Vec<Vec<f32>> {
    let mut start = 0;
    lens.iter()
        .map(|&len| {
            let mut mean = vec![0.0f32; h];
            for row in x[start * h..(start + len) * h].chunks_exact(h) {
                nn::add_assign(&mut mean, row);
            }
            start += len;
            let norm = mean.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
            mean.iter().map(|v| v / norm).collect()
        })
        .collect()
}

/// The f32 tensor `name`, which must have `shape`.
fn tensor(st: &SafeTensors<'_>, name: &str, shape: &[usize]) -> Result<Tensor, BertError> {
    let view = st.tensor(name).map_err(|_| BertError::Missing(name.to_string()))?;
    if view.dtype() != Dtype::F32 {
        return Err(BertError::Dtype { name: name.to_string(), dtype: format!("{:?}", view.dtype()) });
    }
    if view.shape() != shape {
        return Err(BertError::Shape { name: name.to_string(), expected: shape.to_vec(), got: view.shape().to_vec() });
    }
    let data = view.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    Ok(Tensor { shape: shape.to_vec(), data })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_out_of_range_are_refused() {
        let ok = r#"{"hidden_size":384,"num_hidden_layers":6,"num_attention_heads":12,"intermediate_size":1536,
            "vocab_size":30522,"max_position_embeddings":512,"type_vocab_size":2,"layer_norm_eps":1e-12}"#;
        assert!(BertConfig::parse(ok).is_ok());
        for bad in [
            ok.replace("\"num_attention_heads\":12", "\"num_attention_heads\":7"),
            ok.replace("\"num_hidden_layers\":6", "\"num_hidden_layers\":0"),
            ok.replace("\"vocab_size\":30522", "\"vocab_size\":99999999"),
            ok.replace("\"hidden_size\":384,", ""),
        ] {
            assert!(matches!(BertConfig::parse(&bad), Err(BertError::Config(_))), "{bad}");
        }
    }
}
