//! Verified embeddings: the encoder's (MiniLM's) side of [`super`], with the same leaves, tree, challenge and
//! Freivalds checks. BERT normalizes *after* each residual add (post-LN), so what a layer commits is the sum before
//! each LayerNorm: `mid` = x + attention·Wo + bo and `out` = LN(mid) + GELU(…)·Wout + bout; the verifier applies the
//! LayerNorms itself. The keys and values (with their biases) are the key/value leaves; attention stays within each
//! text of the batch.
//!
//! Per opened (layer, position) the provider claims q and the intermediate product before GELU; the verifier checks
//! q, k, v (each [x | 1]·[Wᵀ; b]), recomputes attention over the position's text, checks mid as
//! [x | attention | 1]·[I; Woᵀ; bo], the intermediate product, and out as [LN(mid) | GELU(inner) | 1]·[I; Woutᵀ;
//! bout]. The last layer's residual leaves are opened at every position: the verifier pools them itself and holds
//! each returned embedding to its own within [`embedding_tolerance`].

use std::collections::BTreeSet;

use neurolov_kernels::nn::{self, Attention};
use neurolov_kernels::quant::QMatrix;
use neurolov_verify::freivalds::{self, Prepared};
use neurolov_verify::merkle::{self, Hash};

use super::{Challenge, KV_BLOCK, Layout, Opening, ProofError, Recorder, Verdict, freivalds_into, prepare};
use crate::bert::{BertConfig, BertWeights, Tensor};
use crate::generate::SplitMix64;

/// The encoder's ops a [`Recorder`] keeps: keys, values, and the sums before each LayerNorm.
const ENCODER_RECORDED: [&str; 4] = ["k", "v", "attn_sum", "ffn_sum"];

impl Recorder {
    /// A recorder for the encoder `config` describes.
    pub fn for_encoder(config: &BertConfig) -> Recorder {
        Recorder::with(config.hidden_size, config.hidden_size, config.num_hidden_layers, ENCODER_RECORDED)
    }
}

/// An embedding request and the provider's answer.
#[derive(Clone, Debug)]
pub struct EmbedRun<'a> {
    /// Each text's token ids, as the coordinator tokenized them.
    pub texts: &'a [Vec<u32>],
    /// One unit vector per text.
    pub embeddings: &'a [Vec<f32>],
}

impl EmbedRun<'_> {
    fn positions(&self) -> usize {
        self.texts.iter().map(Vec::len).sum()
    }

    /// Each position's text as a range of positions.
    fn text_of(&self) -> Vec<std::ops::Range<usize>> {
        let mut out = Vec::with_capacity(self.positions());
        let mut start = 0;
        for t in self.texts {
            out.extend(std::iter::repeat_n(start..start + t.len(), t.len()));
            start += t.len();
        }
        out
    }

    fn check(&self, config: &BertConfig) -> Result<(), ProofError> {
        let bad = |m: &str| Err(ProofError::BadRun(m.to_string()));
        if self.texts.is_empty() || self.texts.iter().any(Vec::is_empty) {
            return bad("an empty text");
        }
        if self.texts.iter().any(|t| t.len() > config.max_position_embeddings) {
            return bad("a text longer than the model takes");
        }
        if self.texts.iter().flatten().any(|&id| id as usize >= config.vocab_size) {
            return bad("a token outside the vocabulary");
        }
        if self.embeddings.len() != self.texts.len() || self.embeddings.iter().any(|e| e.len() != config.hidden_size) {
            return bad("not one embedding of the model's width per text");
        }
        Ok(())
    }
}

/// The provider's claims at one opened (layer, position) of the encoder.
#[derive(Clone, Debug, PartialEq)]
pub struct EncoderClaim {
    /// The query (with its bias).
    pub q: Vec<f32>,
    /// The intermediate product (with its bias), before GELU.
    pub inner: Vec<f32>,
}

/// The leaves an encoder challenge reads: the opened positions' residual leaves and their inputs', the key/value
/// blocks of their texts, and every residual leaf of the last layer (the pooling).
fn leaves(
    challenge: &Challenge,
    layout: &Layout,
    text_of: &[std::ops::Range<usize>],
) -> (BTreeSet<usize>, BTreeSet<usize>) {
    let mut residuals: BTreeSet<usize> = (0..layout.positions).map(|s| layout.residual(layout.layers - 1, s)).collect();
    let mut blocks = BTreeSet::new();
    for &(l, s) in &challenge.pairs {
        residuals.insert(layout.residual(l, s));
        if l > 0 {
            residuals.insert(layout.residual(l - 1, s));
        }
        let text = &text_of[s];
        blocks.extend((text.start / KV_BLOCK..=(text.end - 1) / KV_BLOCK).map(|b| layout.kv_block(l, b)));
    }
    (residuals, blocks)
}

/// A challenge for an embedding run: one position per layer (no sampling decisions).
pub fn challenge(seed: u64, layers: usize, positions: usize) -> Challenge {
    Challenge::draw(seed, layers, positions, 0)
}

/// The embeddings' inputs and the few weights every party reads the same way.
struct Encoder<'w> {
    config: &'w BertConfig,
    word: &'w Tensor,
    /// Position plus token-type rows, per position within a text.
    positions: Vec<f32>,
    norm: (&'w [f32], &'w [f32]),
}

impl<'w> Encoder<'w> {
    fn new(w: &'w BertWeights) -> Encoder<'w> {
        let h = w.config.hidden_size;
        let mut positions = w.position_embeddings.data.clone();
        for row in positions.chunks_exact_mut(h) {
            nn::add_assign(row, &w.token_type_embeddings.data[..h]);
        }
        Encoder {
            config: &w.config,
            word: &w.word_embeddings,
            positions,
            norm: (&w.embeddings_norm.0.data, &w.embeddings_norm.1.data),
        }
    }

    /// Layer 0's input at a position: LN(word + position + type).
    fn input(&self, token: u32, position_in_text: usize) -> Vec<f32> {
        let h = self.config.hidden_size;
        let mut x = self.word.data[token as usize * h..(token as usize + 1) * h].to_vec();
        nn::add_assign(&mut x, &self.positions[position_in_text * h..(position_in_text + 1) * h]);
        nn::layer_norm(&mut x, self.norm.0, self.norm.1, self.config.layer_norm_eps);
        x
    }
}

fn normed(x: &[f32], norm: &(Tensor, Tensor), eps: f32) -> Vec<f32> {
    let mut y = x.to_vec();
    nn::layer_norm(&mut y, &norm.0.data, &norm.1.data, eps);
    y
}

fn linear(t: &(Tensor, Tensor), x: &[f32]) -> Vec<f32> {
    let (w, b) = t;
    let (out, inn) = (w.shape[0], w.shape[1]);
    (0..out).map(|j| neurolov_kernels::quant::dot_f32(&w.data[j * inn..(j + 1) * inn], x) + b.data[j]).collect()
}

/// The provider's side for an embedding run.
pub fn open(
    w: &BertWeights,
    recorder: &Recorder,
    run: &EmbedRun,
    challenge: &Challenge,
) -> Result<Opening<EncoderClaim>, ProofError> {
    let c = &w.config;
    run.check(c)?;
    let positions = run.positions();
    if recorder.positions != positions {
        return Err(ProofError::WrongLength { held: recorder.positions, expected: positions });
    }
    let layout = Layout::new(c.num_hidden_layers, positions);
    let text_of = run.text_of();
    let (residual_set, kv_set) = leaves(challenge, &layout, &text_of);
    let residuals =
        residual_set.iter().map(|&i| (i, recorder.residual_block(layout.at(i).0, layout.at(i).1))).collect();
    let kv = kv_set.iter().map(|&i| (i, recorder.kv_block(layout.at(i).0, layout.at(i).1))).collect();
    let opened: Vec<usize> = residual_set.iter().chain(&kv_set).copied().collect();
    let proof = merkle::prove(recorder.leaves(), &opened)?;
    let ids: Vec<u32> = run.texts.concat();
    let encoder = Encoder::new(w);
    let pairs = challenge
        .pairs
        .iter()
        .map(|&(l, s)| {
            let x = match l {
                0 => encoder.input(ids[s], s - text_of[s].start),
                _ => normed(recorder.out(l - 1, s), &w.layers[l - 1].output_norm, c.layer_norm_eps),
            };
            let layer = &w.layers[l];
            let mid = normed(recorder.mid(l, s), &layer.attention_norm, c.layer_norm_eps);
            EncoderClaim { q: linear(&layer.query, &x), inner: linear(&layer.intermediate, &mid) }
        })
        .collect();
    Ok(Opening { residuals, kv, proof, pairs, logits: Vec::new() })
}

/// One encoder layer's secret projections.
struct LayerCheck {
    q: Prepared,
    k: Prepared,
    v: Prepared,
    /// [x | attention | 1] · [I; Woᵀ; bo].
    out: Prepared,
    inner: Prepared,
    /// [LN(mid) | GELU(inner) | 1] · [I; Woutᵀ; bout].
    output: Prepared,
}

/// The verifier of one embedding model.
pub struct EmbedVerifier {
    weights: BertWeights,
    layers: Vec<LayerCheck>,
}

impl std::fmt::Debug for EmbedVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbedVerifier").field("config", &self.weights.config).finish_non_exhaustive()
    }
}

fn matrix(t: &Tensor) -> Result<QMatrix, ProofError> {
    QMatrix::from_f32(t.shape[0], t.shape[1], t.data.clone()).map_err(|e| ProofError::Prepare(e.to_string()))
}

impl EmbedVerifier {
    /// Draws the secret projections from `seed` for the weights `w`.
    pub fn prepare(w: &BertWeights, seed: u64) -> Result<EmbedVerifier, ProofError> {
        use rayon::prelude::*;
        let layers = w
            .layers
            .par_iter()
            .enumerate()
            .map(|(l, layer)| {
                let mut rng = SplitMix64::new(seed ^ (l as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
                let mut p = |t: &(Tensor, Tensor), residual: bool| {
                    prepare(&matrix(&t.0)?, residual, Some(&t.1.data), rng.next_u64())
                };
                Ok(LayerCheck {
                    q: p(&layer.query, false)?,
                    k: p(&layer.key, false)?,
                    v: p(&layer.value, false)?,
                    out: p(&layer.attention_out, true)?,
                    inner: p(&layer.intermediate, false)?,
                    output: p(&layer.output, true)?,
                })
            })
            .collect::<Result<Vec<_>, ProofError>>()?;
        Ok(EmbedVerifier { weights: w.clone(), layers })
    }

    pub fn config(&self) -> &BertConfig {
        &self.weights.config
    }

    /// Checks `opening` against the committed `root` of `run` for `challenge`.
    pub fn check(
        &self,
        run: &EmbedRun,
        root: &Hash,
        challenge: &Challenge,
        opening: &Opening<EncoderClaim>,
    ) -> Verdict {
        let c = &self.weights.config;
        if let Err(e) = run.check(c) {
            return Verdict::malformed(e.to_string());
        }
        let layout = Layout::new(c.num_hidden_layers, run.positions());
        let text_of = run.text_of();
        if let Err(e) = self.check_shape(&layout, &text_of, root, challenge, opening) {
            return Verdict::malformed(e);
        }
        let mut verdict = Verdict::new();
        let ids: Vec<u32> = run.texts.concat();
        let encoder = Encoder::new(&self.weights);
        for (&(l, s), claim) in challenge.pairs.iter().zip(&opening.pairs) {
            let x = match l {
                0 => encoder.input(ids[s], s - text_of[s].start),
                _ => {
                    let (_, out) = opening.residual(&layout, c.hidden_size, l - 1, s);
                    normed(out, &self.weights.layers[l - 1].output_norm, c.layer_norm_eps)
                }
            };
            self.check_pair(&mut verdict, opening, &layout, &text_of[s], (l, s), &x, claim);
        }
        self.check_pooling(&mut verdict, opening, &layout, run);
        verdict
    }

    fn check_shape(
        &self,
        layout: &Layout,
        text_of: &[std::ops::Range<usize>],
        root: &Hash,
        challenge: &Challenge,
        opening: &Opening<EncoderClaim>,
    ) -> Result<(), String> {
        let c = &self.weights.config;
        let (h, inner) = (c.hidden_size, c.intermediate_size);
        let bad_pair = challenge.pairs.iter().enumerate().any(|(i, &(l, s))| l != i || s >= layout.positions);
        if challenge.pairs.len() != layout.layers || bad_pair || !challenge.decisions.is_empty() {
            return Err("the challenge does not fit the run".into());
        }
        let (residuals, blocks) = leaves(challenge, layout, text_of);
        if !opening.residuals.keys().eq(residuals.iter()) || !opening.kv.keys().eq(blocks.iter()) {
            return Err("the opening does not hold the leaves asked for".into());
        }
        let ok =
            opening.residuals.iter().all(|(&i, r)| r.mid.len() == layout.leaf_len(i, h) && r.out.len() == r.mid.len())
                && opening.kv.iter().all(|(&i, b)| b.k.len() == layout.leaf_len(i, h) && b.v.len() == b.k.len())
                && opening.pairs.len() == challenge.pairs.len()
                && opening.pairs.iter().all(|p| p.q.len() == h && p.inner.len() == inner)
                && opening.logits.is_empty();
        if !ok {
            return Err("an opened vector has the wrong length".into());
        }
        opening.verify_leaves(layout, root)
    }

    #[allow(clippy::too_many_arguments)] // The pair's parts, each needed.
    fn check_pair(
        &self,
        verdict: &mut Verdict,
        opening: &Opening<EncoderClaim>,
        layout: &Layout,
        text: &std::ops::Range<usize>,
        (l, s): (usize, usize),
        x: &[f32],
        claim: &EncoderClaim,
    ) {
        let c = &self.weights.config;
        let (lc, h, eps) = (&self.layers[l], c.hidden_size, c.layer_norm_eps);
        let (leaf_mid, leaf_out) = opening.residual(layout, h, l, s);
        // Keys and values of the position's text, from their blocks.
        let (mut keys, mut values) = (Vec::with_capacity(text.len() * h), Vec::with_capacity(text.len() * h));
        for t in text.clone() {
            let block = &opening.kv[&layout.kv_block(l, t / KV_BLOCK)];
            let at = (t % KV_BLOCK) * h;
            keys.extend_from_slice(&block.k[at..at + h]);
            values.extend_from_slice(&block.v[at..at + h]);
        }
        let own = (s - text.start) * h;
        let one = |v: &[f32]| [v, &[1.0]].concat();
        let mut check = |p: &Prepared, a: &[f32], cv: &[f32], op: &'static str| {
            freivalds_into(verdict, p, a, cv, || format!("layer {l} position {s} {op}"));
        };
        let x1 = one(x);
        check(&lc.q, &x1, &claim.q, "q");
        check(&lc.k, &x1, &keys[own..own + h], "k");
        check(&lc.v, &x1, &values[own..own + h], "v");
        let heads = c.num_attention_heads;
        let shape =
            Attention { tokens: 1, keys: text.len(), heads, kv_heads: heads, head_dim: h / heads, causal: false };
        let mut attended = vec![0.0; h];
        nn::attention(shape, &claim.q, &keys, &values, &mut attended);
        check(&lc.out, &[x, &attended, &[1.0]].concat(), leaf_mid, "attention output");
        let layer = &self.weights.layers[l];
        let mid = normed(leaf_mid, &layer.attention_norm, eps);
        check(&lc.inner, &one(&mid), &claim.inner, "intermediate");
        let mut gelu = claim.inner.clone();
        nn::gelu_erf(&mut gelu);
        check(&lc.output, &[mid.as_slice(), &gelu, &[1.0]].concat(), leaf_out, "output");
    }

    /// Each returned embedding against the verifier's own pooling of the opened last layer.
    fn check_pooling(&self, verdict: &mut Verdict, opening: &Opening<EncoderClaim>, layout: &Layout, run: &EmbedRun) {
        let c = &self.weights.config;
        let (h, last) = (c.hidden_size, &self.weights.layers[layout.layers - 1]);
        let mut start = 0;
        for (i, (text, returned)) in run.texts.iter().zip(run.embeddings).enumerate() {
            let mut pooled = vec![0.0f64; h];
            let mut magnitude = 0.0f64;
            for t in start..start + text.len() {
                let out =
                    normed(opening.residual(layout, h, layout.layers - 1, t).1, &last.output_norm, c.layer_norm_eps);
                for (p, &v) in pooled.iter_mut().zip(&out) {
                    *p += f64::from(v);
                }
                magnitude += out.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>().sqrt();
            }
            start += text.len();
            let norm = pooled.iter().map(|v| v * v).sum::<f64>().sqrt();
            let tolerance = embedding_tolerance(h, text.len(), magnitude / norm.max(f64::MIN_POSITIVE));
            let worst =
                pooled.iter().zip(returned).map(|(p, &r)| (p / norm - f64::from(r)).abs()).fold(0.0, nan_or_max);
            verdict.note(worst / tolerance, worst / tolerance, || format!("embedding {i}"));
        }
    }
}

fn nan_or_max(a: f64, b: f64) -> f64 {
    if b.is_nan() { f64::INFINITY } else { a.max(b) }
}

/// How far an honest embedding's component can be from the verifier's, worst case: the last LayerNorm (mean and
/// variance over `width` values, a square root, a product: within (2·width + 8)·u of its scale), the pooling
/// (`tokens` additions) and the normalization (`width` squares and a square root), each first-order, times how
/// much the pooling cancels (Σ‖token vector‖ / ‖pooled‖ = `cancellation` ≥ 1), doubled for the two computations.
pub fn embedding_tolerance(width: usize, tokens: usize, cancellation: f64) -> f64 {
    2.0 * (3 * width + tokens + 16) as f64 * freivalds::U32 * cancellation.max(1.0)
}
