//! all-MiniLM-L6-v2's weights: its `config.json` (the BERT encoder's sizes) and `model.safetensors` read into named,
//! shape-checked f32 tensors — the embeddings and, per layer, attention (query, key, value, output), its LayerNorm,
//! the feed-forward pair and the output LayerNorm. Every tensor's shape is checked against the config before it is
//! used, so a file of another model is a typed error, not a wrong answer.

use neurolov_kernels::nn::{self, Attention};
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

/// One encoder layer ready to run: the products as matrices, the rest as vectors.
#[derive(Clone, Debug)]
struct EncoderLayer {
    query: QMatrix,
    key: QMatrix,
    value: QMatrix,
    attention_out: QMatrix,
    biases: [Vec<f32>; 6],
    attention_norm: (Vec<f32>, Vec<f32>),
    intermediate: QMatrix,
    output: QMatrix,
    output_norm: (Vec<f32>, Vec<f32>),
}

/// The BERT encoder with mean pooling and L2 normalization: sentence embeddings.
#[derive(Clone, Debug)]
pub struct Bert {
    config: BertConfig,
    word_embeddings: QMatrix,
    position_embeddings: Vec<f32>,
    token_type_0: Vec<f32>,
    embeddings_norm: (Vec<f32>, Vec<f32>),
    layers: Vec<EncoderLayer>,
}

impl Bert {
    pub fn new(w: BertWeights) -> Result<Bert, BertError> {
        let h = w.config.hidden_size;
        let m = |t: Tensor| {
            QMatrix::from_f32(t.shape[0], t.shape[1], t.data).map_err(|e| BertError::Safetensors(e.to_string()))
        };
        let layers = w
            .layers
            .into_iter()
            .map(|l| {
                Ok(EncoderLayer {
                    biases: [l.query.1.data, l.key.1.data, l.value.1.data, l.attention_out.1.data, l.intermediate.1.data, l.output.1.data],
                    query: m(l.query.0)?,
                    key: m(l.key.0)?,
                    value: m(l.value.0)?,
                    attention_out: m(l.attention_out.0)?,
                    attention_norm: (l.attention_norm.0.data, l.attention_norm.1.data),
                    intermediate: m(l.intermediate.0)?,
                    output: m(l.output.0)?,
                    output_norm: (l.output_norm.0.data, l.output_norm.1.data),
                })
            })
            .collect::<Result<Vec<_>, BertError>>()?;
        Ok(Bert {
            word_embeddings: m(w.word_embeddings)?,
            position_embeddings: w.position_embeddings.data,
            token_type_0: w.token_type_embeddings.data[..h].to_vec(),
            embeddings_norm: (w.embeddings_norm.0.data, w.embeddings_norm.1.data),
            layers,
            config: w.config,
        })
    }

    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    /// The unit-length sentence embedding of each sequence of token ids. The sequences run together, without
    /// padding: every product covers all their tokens at once, attention stays within each sequence.
    pub fn embed(&self, batch: &[Vec<u32>]) -> Result<Vec<Vec<f32>>, BertError> {
        let h = self.config.hidden_size;
        let lens: Vec<usize> = batch.iter().map(Vec::len).collect();
        let mut x = Vec::with_capacity(lens.iter().sum::<usize>() * h);
        for ids in batch {
            if ids.len() > self.config.max_position_embeddings {
                return Err(BertError::Input(format!("{} tokens, the model takes {}", ids.len(), self.config.max_position_embeddings)));
            }
            for (pos, &id) in ids.iter().enumerate() {
                if id as usize >= self.config.vocab_size {
                    return Err(BertError::Input(format!("token id {id} is outside the vocabulary")));
                }
                let start = x.len();
                self.word_embeddings.row_into(id as usize, &mut x);
                nn::add_assign(&mut x[start..], &self.position_embeddings[pos * h..(pos + 1) * h]);
                nn::add_assign(&mut x[start..], &self.token_type_0);
            }
        }
        let eps = self.config.layer_norm_eps;
        nn::layer_norm(&mut x, &self.embeddings_norm.0, &self.embeddings_norm.1, eps);
        for layer in &self.layers {
            self.layer(layer, &mut x, &lens);
        }
        Ok(mean_pool_normalized(&x, &lens, h))
    }

    /// One encoder layer on all tokens `x`, in place.
    fn layer(&self, layer: &EncoderLayer, x: &mut [f32], lens: &[usize]) {
        let (h, heads, eps) = (self.config.hidden_size, self.config.num_attention_heads, self.config.layer_norm_eps);
        let n = x.len() / h;
        let linear = |m: &QMatrix, bias: &[f32], input: &[f32]| {
            let mut out = vec![0.0; n * m.rows()];
            m.matmul(input, n, &mut out);
            nn::add_bias(&mut out, bias);
            out
        };
        let [bq, bk, bv, bo, bi, bout] = &layer.biases;
        let (q, k, v) = (linear(&layer.query, bq, x), linear(&layer.key, bk, x), linear(&layer.value, bv, x));
        let mut attended = vec![0.0; n * h];
        let mut start = 0;
        for &len in lens {
            let span = start * h..(start + len) * h;
            let shape = Attention { tokens: len, keys: len, heads, kv_heads: heads, head_dim: h / heads, causal: false };
            if len > 0 {
                nn::attention(shape, &q[span.clone()], &k[span.clone()], &v[span.clone()], &mut attended[span]);
            }
            start += len;
        }
        let projected = linear(&layer.attention_out, bo, &attended);
        nn::add_assign(x, &projected);
        nn::layer_norm(x, &layer.attention_norm.0, &layer.attention_norm.1, eps);
        let mut inner = linear(&layer.intermediate, bi, x);
        nn::gelu_erf(&mut inner);
        let out = linear(&layer.output, bout, &inner);
        nn::add_assign(x, &out);
        nn::layer_norm(x, &layer.output_norm.0, &layer.output_norm.1, eps);
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
