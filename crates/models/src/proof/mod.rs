//! Verified inference (issue 13), here for the decoder and in [`embed`] for the encoder: what a provider commits to while it generates, what the verifier
//! asks it to open afterwards, and the checks that make a wrong answer unprofitable at a small fraction of the
//! inference's cost.
//!
//! **Commitment.** A run's [`Recorder`] keeps, for every layer and every position run through the model, the
//! residual stream after attention (`mid`) and after the feed-forward block (`out`, the next layer's input), and the
//! keys and values the position put in the cache (after RoPE). They are hashed into a Merkle tree
//! ([`neurolov_verify::merkle`]) as one *residual leaf* per (layer, [`RESIDUAL_BLOCK`] positions) and one
//! *key/value leaf* per (layer, [`KV_BLOCK`] positions); its 32-byte root is signed with the answer. Everything else a layer computes is
//! a function of its input, its leaves and the cache: nothing else needs committing.
//!
//! **Challenge.** Only after the root is known does the verifier draw, from its secret seed, one position per layer
//! and up to [`HEAD_OPENINGS`] of the sampling decisions (the positions whose logits chose an emitted or stop
//! token). The provider answers with an [`Opening`]: the leaves those checks read (with the Merkle proof), and
//! per opened (layer, position) its q (after RoPE), gate and up; per opened decision the logits — values computed
//! on the CPU from the committed ones, which the checks never trust.
//!
//! **Checks** ([`ChatVerifier::check`]), each linear map by Freivalds against secret projections of the model's
//! weights prepared once ([`neurolov_verify::freivalds::Prepared`], the quantized weights exactly as the engine
//! dequantizes them, rounding bounds over the terms its block-wise products really add), the rest recomputed:
//! - attn_norm(x) from the layer input (the previous layer's `out`, or the token's embedding row at layer 0);
//! - q, k, v = attn_norm·W{q,k,v} (q and k turned back by RoPE first);
//! - attention at the position over the opened keys and values of positions ≤ s (recomputed: O(s·width));
//! - mid = x + attention·Wo, checked as one product [x | attention]·[I; Woᵀ] so the residual add's rounding is
//!   inside the tolerance the product derives (a large residual stream widens it exactly as it should);
//! - gate, up = ffn_norm(mid)·W{gate,up}; out = mid + (silu(gate)·up)·Wdown, again as one product;
//! - per opened decision: logits = output_norm(out at the last layer)·Wheadᵀ, and the token is the one the request's
//!   seeded sampler draws from those logits — exactly, unless an honest backend's rounding could have tipped it
//!   (a derived logit bound, tight and rigorous like Freivalds').
//!
//! Every tolerance is Freivalds' (derived in `freivalds.rs`: a tight one that accepts, a rigorous one that alone
//! convicts); this module adds no guessed one. What it catches: a smaller or other model, skipped layers, a layer's
//! output moved by 1%, invented activations — at every layer, each opened at one position, so any change a whole
//! layer shares is caught with certainty; a change confined to a few positions with probability (opened /
//! positions) per layer. A token its logits do not give is caught when its decision is opened ([`HEAD_OPENINGS`]
//! of them, or all when fewer: the last always — a run cut short by a forged stop is caught with certainty — the
//! others with probability (HEAD_OPENINGS − 1) / (decisions − 1) per forged token). Figures: `tests/proof.rs`
//! (honest CPU and lavapipe runs within 0.13 of the tight tolerance; every cheat beyond the rigorous bound) and
//! `neurolov models bench --only proof` (the check's share of the CPU generation's time: 0.6% for 128 + 256
//! tokens, 1.3% for 128 + 64, ~4% for 32 + 16 — a fixed ≈ 6 ms for the logits and the layers' products plus a part
//! that grows with the length; 7.4 MiB on the wire for 128 + 64, mostly the keys and values opened positions attend
//! to and the 8 logits vectors).

use std::collections::{BTreeMap, BTreeSet};

use neurolov_kernels::nn::{self, Attention};
use neurolov_kernels::quant::QMatrix;
use neurolov_verify::freivalds::{self, Prepared};
use neurolov_verify::merkle::{self, Hash, MerkleError};

pub mod embed;
pub mod wire;

use crate::device::Trace;
use crate::generate::{FinishReason, MAX_CONTEXT_TOKENS, Sampling, SplitMix64, sample};
use crate::llama::{Llama, LlamaConfig};

/// Sampling decisions opened per request (all of them when there are fewer): each costs the provider one logits
/// vector on the wire (vocab × 4 bytes) and the verifier about vocab + width multiply-adds per round.
pub const HEAD_OPENINGS: usize = 8;
/// Rounds of every Freivalds check.
pub const ROUNDS: u32 = freivalds::DEFAULT_ROUNDS;

#[derive(Debug, thiserror::Error)]
pub enum ProofError {
    #[error("the run is not a generation: {0}")]
    BadRun(String),
    #[error("the recorder holds {held} positions, the run has {expected}")]
    WrongLength { held: usize, expected: usize },
    #[error(transparent)]
    Merkle(#[from] MerkleError),
    #[error("preparing the verifier: {0}")]
    Prepare(String),
}

/// What a chat request asked and what the provider says it generated: the public facts a proof is about.
#[derive(Clone, Debug)]
pub struct ChatRun<'a> {
    pub prompt: &'a [u32],
    pub sampling: Sampling,
    /// The emitted tokens.
    pub tokens: &'a [u32],
    pub finish: FinishReason,
    /// The stop token drawn, when `finish` is `Stop`.
    pub stop_token: Option<u32>,
}

impl ChatRun<'_> {
    fn check(&self, vocab: usize) -> Result<(), ProofError> {
        let bad = |m: &str| Err(ProofError::BadRun(m.to_string()));
        if self.prompt.is_empty() {
            return bad("empty prompt");
        }
        if (self.finish == FinishReason::Stop) != self.stop_token.is_some() {
            return bad("a stop token exactly when generation stopped on one");
        }
        if self.positions() > MAX_CONTEXT_TOKENS {
            return bad("longer than the context");
        }
        let ids = self.prompt.iter().chain(self.tokens).chain(&self.stop_token);
        if ids.into_iter().any(|&t| t as usize >= vocab) {
            return bad("a token outside the vocabulary");
        }
        self.sampling.check().map_err(|e| ProofError::BadRun(e.to_string()))
    }

    /// (position whose logits decided, token decided): every emitted token, then the stop token.
    pub fn decisions(&self) -> Vec<(usize, u32)> {
        let first = self.prompt.len() - 1;
        self.tokens.iter().chain(&self.stop_token).enumerate().map(|(i, &t)| (first + i, t)).collect()
    }

    /// Positions run through the model: the prompt, then every token whose logits decided something.
    pub fn positions(&self) -> usize {
        self.decisions().last().map_or(self.prompt.len(), |&(p, _)| p + 1).max(self.prompt.len())
    }

    /// The token id at each position run through the model.
    fn inputs(&self) -> Vec<u32> {
        self.prompt.iter().chain(self.tokens).copied().take(self.positions()).collect()
    }
}

/// One layer's committed values, every position one after the other.
#[derive(Clone, Debug, Default)]
struct LayerRecord {
    k: Vec<f32>,
    v: Vec<f32>,
    mid: Vec<f32>,
    out: Vec<f32>,
}

/// A [`Trace`] that keeps what a run commits to: per layer, each position's keys, values, and residual stream
/// after attention and after the FFN (about (2·width + 2·kv_width)·layers·4 bytes a position: 180 KiB for SmolLM2).
#[derive(Clone, Debug)]
pub struct Recorder {
    width: usize,
    kv_width: usize,
    /// The ops recorded as keys, values, mid and out (the names the model's forward pass reports them under).
    names: [&'static str; 4],
    /// Positions in the forward pass under way (from its first layer's keys).
    batch: usize,
    /// Positions recorded in full (every layer).
    positions: usize,
    layers: Vec<LayerRecord>,
    /// The leaf hashes, once asked for (the record is complete by then; a new op clears them).
    leaves: std::sync::OnceLock<Vec<Hash>>,
}

/// The decoder's ops a [`Recorder`] keeps: keys and values after RoPE, the residual stream after attention and
/// after the FFN.
const DECODER_RECORDED: [&str; 4] = ["k_rope", "v", "attn_residual", "ffn_residual"];

impl Recorder {
    pub fn new(config: &LlamaConfig) -> Recorder {
        Recorder::with(config.width, config.kv_width(), config.layers, DECODER_RECORDED)
    }

    fn with(width: usize, kv_width: usize, layers: usize, names: [&'static str; 4]) -> Recorder {
        Recorder {
            names,
            width,
            kv_width,
            batch: 0,
            positions: 0,
            layers: vec![LayerRecord::default(); layers],
            leaves: std::sync::OnceLock::new(),
        }
    }

    pub fn positions(&self) -> usize {
        self.positions
    }

    /// The residual stream after attention at (layer, position).
    fn mid(&self, l: usize, s: usize) -> &[f32] {
        &self.layers[l].mid[s * self.width..(s + 1) * self.width]
    }

    /// The residual stream after the layer at (layer, position).
    fn out(&self, l: usize, s: usize) -> &[f32] {
        &self.layers[l].out[s * self.width..(s + 1) * self.width]
    }

    fn residual_block(&self, l: usize, b: usize) -> Residual {
        let (w, r) = (self.width, &self.layers[l]);
        let span = b * RESIDUAL_BLOCK * w..((b + 1) * RESIDUAL_BLOCK).min(self.positions) * w;
        Residual { mid: r.mid[span.clone()].to_vec(), out: r.out[span].to_vec() }
    }

    fn kv_block(&self, l: usize, b: usize) -> KvBlock {
        let (kw, r) = (self.kv_width, &self.layers[l]);
        let span = b * KV_BLOCK * kw..((b + 1) * KV_BLOCK).min(self.positions) * kw;
        KvBlock { k: r.k[span.clone()].to_vec(), v: r.v[span].to_vec() }
    }

    /// Every leaf's hash in [`Layout`] order.
    pub fn leaves(&self) -> &[Hash] {
        self.leaves.get_or_init(|| self.hash_leaves())
    }

    fn hash_leaves(&self) -> Vec<Hash> {
        let layout = Layout::new(self.layers.len(), self.positions);
        let (w, kw) = (self.width, self.kv_width);
        let mut out = Vec::with_capacity(layout.leaves());
        for r in &self.layers {
            out.extend((0..layout.residual_blocks).map(|b| {
                let span = b * RESIDUAL_BLOCK * w..((b + 1) * RESIDUAL_BLOCK).min(self.positions) * w;
                Residual::leaf_of(&r.mid[span.clone()], &r.out[span])
            }));
        }
        for r in &self.layers {
            out.extend((0..layout.blocks).map(|b| {
                let span = b * KV_BLOCK * kw..((b + 1) * KV_BLOCK).min(self.positions) * kw;
                KvBlock::leaf_of(&r.k[span.clone()], &r.v[span])
            }));
        }
        out
    }

    /// The root the provider signs.
    pub fn commit(&self) -> Result<Hash, ProofError> {
        Ok(merkle::root(self.leaves())?)
    }
}

impl Trace for Recorder {
    fn wants(&self, layer: Option<usize>, name: &'static str) -> bool {
        layer.is_some() && self.names.contains(&name)
    }

    fn op(&mut self, layer: Option<usize>, name: &'static str, output: &[f32]) {
        let Some(l) = layer else { return };
        self.leaves.take();
        let [k, v, mid, out] = self.names;
        if l == 0 && name == k {
            self.batch = output.len() / self.kv_width;
        }
        let last = l + 1 == self.layers.len();
        let Some(r) = self.layers.get_mut(l) else { return };
        if name == k {
            r.k.extend_from_slice(output);
        } else if name == v {
            r.v.extend_from_slice(output);
        } else if name == mid {
            r.mid.extend_from_slice(output);
        } else if name == out {
            r.out.extend_from_slice(output);
            if last {
                self.positions += self.batch;
            }
        }
    }
}

/// blake3 of two f32 slices' little-endian bytes, one after the other (the slices' own memory where the machine
/// is little-endian: hashing, not converting, is the cost of a commitment).
fn pair_hash(a: &[f32], b: &[f32]) -> Hash {
    let mut h = blake3::Hasher::new();
    for part in [a, b] {
        if cfg!(target_endian = "little") {
            h.update(bytemuck::cast_slice(part));
        } else {
            h.update(&part.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>());
        }
    }
    *h.finalize().as_bytes()
}

/// What the verifier asks to see, drawn after the root is committed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    /// (layer, position): one per layer.
    pub pairs: Vec<(usize, usize)>,
    /// Indices into the run's decisions whose logits are opened.
    pub decisions: Vec<usize>,
}

impl Challenge {
    /// One uniformly drawn position per layer and up to [`HEAD_OPENINGS`] distinct decisions, from `seed` (the
    /// verifier's secret): always the last one — it ends the run, so an answer cut short by a stop token its
    /// logits did not give is caught with certainty (a run that stops for length must have every token asked for) —
    /// and the others uniformly among the rest.
    pub fn draw(seed: u64, layers: usize, positions: usize, decisions: usize) -> Challenge {
        let mut rng = SplitMix64::new(seed);
        let below = |rng: &mut SplitMix64, n: usize| (rng.next_f64() * n as f64) as usize % n.max(1);
        let pairs = (0..layers).map(|l| (l, below(&mut rng, positions))).collect();
        let mut all: Vec<usize> = (0..decisions).collect();
        let take = decisions.min(HEAD_OPENINGS);
        if take > 0 {
            all.swap(0, decisions - 1);
        }
        for i in 1..take {
            let j = i + below(&mut rng, decisions - i);
            all.swap(i, j);
        }
        all.truncate(take);
        all.sort_unstable();
        Challenge { pairs, decisions: all }
    }

    /// The leaves the checks read: residual leaves (the opened positions, their layer inputs, the last layer at
    /// each opened decision) and key/value blocks (every block an opened position attends to), as [`Layout`]
    /// indices.
    fn leaves(&self, layout: &Layout, decisions: &[(usize, u32)]) -> (BTreeSet<usize>, BTreeSet<usize>) {
        let mut residuals = BTreeSet::new();
        let mut blocks = BTreeSet::new();
        for &(l, s) in &self.pairs {
            residuals.insert(layout.residual(l, s));
            if l > 0 {
                residuals.insert(layout.residual(l - 1, s));
            }
            blocks.extend((0..=s / KV_BLOCK).map(|b| layout.kv_block(l, b)));
        }
        for &d in &self.decisions {
            if let Some(&(p, _)) = decisions.get(d) {
                residuals.insert(layout.residual(layout.layers - 1, p));
            }
        }
        (residuals, blocks)
    }
}

/// Positions whose keys and values make one leaf: large enough that hashing runs at full speed (blake3 measured
/// here: 1 GB/s on 3 KiB, 5.4 GB/s on 24 KiB — 24 KiB for SmolLM2), small enough that an opening sends few
/// positions it did not need.
pub const KV_BLOCK: usize = 16;
/// Positions whose residual streams make one leaf (12–18 KiB): an opened position carries its block's others.
pub const RESIDUAL_BLOCK: usize = 4;

/// Where each leaf sits in the tree: first every layer's residual blocks, then every layer's key/value blocks.
#[derive(Clone, Copy, Debug)]
struct Layout {
    layers: usize,
    positions: usize,
    residual_blocks: usize,
    blocks: usize,
}

impl Layout {
    fn new(layers: usize, positions: usize) -> Layout {
        Layout {
            layers,
            positions,
            residual_blocks: positions.div_ceil(RESIDUAL_BLOCK),
            blocks: positions.div_ceil(KV_BLOCK),
        }
    }

    /// The leaf holding (layer, position)'s residual streams.
    fn residual(&self, l: usize, s: usize) -> usize {
        l * self.residual_blocks + s / RESIDUAL_BLOCK
    }

    fn kv_block(&self, l: usize, b: usize) -> usize {
        self.layers * self.residual_blocks + l * self.blocks + b
    }

    fn leaves(&self) -> usize {
        self.layers * (self.residual_blocks + self.blocks)
    }

    fn is_residual(&self, i: usize) -> bool {
        i < self.layers * self.residual_blocks
    }

    /// (layer, block) of a leaf index.
    fn at(&self, i: usize) -> (usize, usize) {
        if self.is_residual(i) {
            (i / self.residual_blocks, i % self.residual_blocks)
        } else {
            let j = i - self.layers * self.residual_blocks;
            (j / self.blocks, j % self.blocks)
        }
    }

    /// Values of `width` per position a leaf holds.
    fn leaf_len(&self, i: usize, width: usize) -> usize {
        let (_, b) = self.at(i);
        let per = if self.is_residual(i) { RESIDUAL_BLOCK } else { KV_BLOCK };
        (self.positions - b * per).min(per) * width
    }
}

/// A residual leaf: the stream after attention and after the FFN at [`RESIDUAL_BLOCK`] positions of one layer (fewer
/// in the last).
#[derive(Clone, Debug, PartialEq)]
pub struct Residual {
    pub mid: Vec<f32>,
    pub out: Vec<f32>,
}

impl Residual {
    fn leaf(&self) -> Hash {
        Residual::leaf_of(&self.mid, &self.out)
    }

    fn leaf_of(mid: &[f32], out: &[f32]) -> Hash {
        merkle::leaf(&[b"residual", &pair_hash(mid, out)])
    }
}

/// A key/value leaf: the keys and values (after RoPE) of [`KV_BLOCK`] positions of one layer (fewer in the last).
#[derive(Clone, Debug, PartialEq)]
pub struct KvBlock {
    pub k: Vec<f32>,
    pub v: Vec<f32>,
}

impl KvBlock {
    fn leaf(&self) -> Hash {
        KvBlock::leaf_of(&self.k, &self.v)
    }

    fn leaf_of(k: &[f32], v: &[f32]) -> Hash {
        merkle::leaf(&[b"kv", &pair_hash(k, v)])
    }
}

/// The provider's claims at one opened (layer, position): values the verifier checks, never trusts.
#[derive(Clone, Debug, PartialEq)]
pub struct PairClaim {
    /// The query after RoPE.
    pub q: Vec<f32>,
    pub gate: Vec<f32>,
    pub up: Vec<f32>,
}

/// The provider's answer to a [`Challenge`] (claims `C` per opened pair: [`PairClaim`] for the decoder,
/// [`embed::EncoderClaim`] for the encoder).
#[derive(Clone, Debug, PartialEq)]
pub struct Opening<C = PairClaim> {
    pub residuals: BTreeMap<usize, Residual>,
    pub kv: BTreeMap<usize, KvBlock>,
    pub proof: Vec<Hash>,
    /// One per challenged pair, in its order.
    pub pairs: Vec<C>,
    /// One logits vector per challenged decision, in its order.
    pub logits: Vec<Vec<f32>>,
}

impl<C> Opening<C> {
    /// Whether the opened leaves and the proof lead to the committed `root` of a tree laid out as `layout`.
    fn verify_leaves(&self, layout: &Layout, root: &Hash) -> Result<(), String> {
        let leaves: BTreeMap<usize, Hash> = self
            .residuals
            .iter()
            .map(|(&i, r)| (i, r.leaf()))
            .chain(self.kv.iter().map(|(&i, b)| (i, b.leaf())))
            .collect();
        merkle::verify(root, layout.leaves(), &leaves, &self.proof).map_err(|e| e.to_string())
    }

    /// (mid, out) at (layer, position) of `width`, from its opened block.
    fn residual(&self, layout: &Layout, width: usize, l: usize, s: usize) -> (&[f32], &[f32]) {
        let block = &self.residuals[&layout.residual(l, s)];
        let at = (s % RESIDUAL_BLOCK) * width;
        (&block.mid[at..at + width], &block.out[at..at + width])
    }
}

/// The provider's side: opens `challenge` from what `recorder` kept of the run, computing the claims on the CPU
/// from the committed values (whatever backend ran the request).
pub fn open(model: &Llama, recorder: &Recorder, run: &ChatRun, challenge: &Challenge) -> Result<Opening, ProofError> {
    let c = &model.config;
    run.check(c.vocab)?;
    let positions = run.positions();
    if recorder.positions != positions {
        return Err(ProofError::WrongLength { held: recorder.positions, expected: positions });
    }
    let decisions = run.decisions();
    let layout = Layout::new(c.layers, positions);
    let (residual_set, kv_set) = challenge.leaves(&layout, &decisions);
    let at = |i: usize| layout.at(i);
    let residuals = residual_set.iter().map(|&i| (i, recorder.residual_block(at(i).0, at(i).1))).collect();
    let kv = kv_set.iter().map(|&i| (i, recorder.kv_block(at(i).0, at(i).1))).collect();
    let opened: Vec<usize> = residual_set.iter().chain(&kv_set).copied().collect();
    let proof = merkle::prove(recorder.leaves(), &opened)?;
    let inputs = run.inputs();
    let pairs = challenge
        .pairs
        .iter()
        .map(|&(l, s)| {
            let x = if l == 0 { embedding(model, inputs[s]) } else { recorder.out(l - 1, s).to_vec() };
            let layer = &model.layers[l];
            let mut h = x;
            nn::rms_norm(&mut h, &layer.attn_norm, c.rms_eps);
            let mut q = product(&layer.q, &h);
            nn::rope(&mut q, c.head_dim, s, c.rope_base, c.heads);
            let mut h2 = recorder.mid(l, s).to_vec();
            nn::rms_norm(&mut h2, &layer.ffn_norm, c.rms_eps);
            PairClaim { q, gate: product(&layer.gate, &h2), up: product(&layer.up, &h2) }
        })
        .collect();
    let logits = challenge
        .decisions
        .iter()
        .filter_map(|&d| decisions.get(d))
        .map(|&(p, _)| {
            let mut h = recorder.out(c.layers - 1, p).to_vec();
            nn::rms_norm(&mut h, &model.output_norm, c.rms_eps);
            product(model.head(), &h)
        })
        .collect();
    Ok(Opening { residuals, kv, proof, pairs, logits })
}

fn product(w: &QMatrix, x: &[f32]) -> Vec<f32> {
    let mut y = vec![0.0; w.rows()];
    w.matvec(x, &mut y);
    y
}

fn embedding(model: &Llama, token: u32) -> Vec<f32> {
    let mut row = Vec::new();
    model.embeddings.row_into(token as usize, &mut row);
    row
}

/// A verifier's outcome: the worst deviation against the tight tolerances (≤ 1 passes) and against the rigorous
/// bounds (> 1 proves the answer wrong), with where it was; or a malformed opening, which proves it wrong too (the
/// provider signed a root it cannot open).
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    pub worst_ratio: f64,
    pub conviction_ratio: f64,
    /// The check behind `worst_ratio`, e.g. `layer 7 position 31 down`.
    pub worst: String,
    /// The check behind `conviction_ratio`.
    pub convicting: String,
    pub malformed: Option<String>,
}

impl Verdict {
    fn new() -> Verdict {
        Verdict {
            worst_ratio: 0.0,
            conviction_ratio: 0.0,
            worst: String::new(),
            convicting: String::new(),
            malformed: None,
        }
    }

    pub(crate) fn malformed(reason: impl Into<String>) -> Verdict {
        Verdict { malformed: Some(reason.into()), ..Verdict::new() }
    }

    fn note(&mut self, ratio: f64, conviction: f64, at: impl Fn() -> String) {
        let (ratio, conviction) = (nan_max(ratio), nan_max(conviction));
        if ratio > self.worst_ratio {
            self.worst_ratio = ratio;
            self.worst = at();
        }
        if conviction > self.conviction_ratio {
            self.conviction_ratio = conviction;
            self.convicting = at();
        }
    }

    /// Taken and paid.
    pub fn accepted(&self) -> bool {
        self.malformed.is_none() && self.worst_ratio <= 1.0 && self.conviction_ratio <= 1.0
    }

    /// No honest run on any backend gives this answer: slash, with the opening as evidence.
    pub fn proven_wrong(&self) -> bool {
        self.malformed.is_some() || self.conviction_ratio > 1.0
    }
}

fn nan_max(x: f64) -> f64 {
    if x.is_nan() { f64::INFINITY } else { x }
}

/// The secret projections of one layer's seven products.
struct LayerCheck {
    attn_norm: Vec<f32>,
    ffn_norm: Vec<f32>,
    q: Prepared,
    k: Prepared,
    v: Prepared,
    /// [x | attention] · [I; Woᵀ]: the output product with its residual add.
    out: Prepared,
    gate: Prepared,
    up: Prepared,
    /// [mid | silu(gate)·up] · [I; Wdownᵀ].
    down: Prepared,
}

/// The verifier of one chat model: its secret projections (prepared once per seed, about a second and a few MiB for
/// SmolLM2) and the few weights the checks read directly.
pub struct ChatVerifier {
    config: LlamaConfig,
    embeddings: QMatrix,
    output_norm: Vec<f32>,
    layers: Vec<LayerCheck>,
    head_check: Prepared,
    /// max over vocabulary rows of the head of ‖row‖₂ (the sampling check's rounding bound).
    head_row_norm: f64,
}

impl std::fmt::Debug for ChatVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatVerifier").field("config", &self.config).finish_non_exhaustive()
    }
}

/// `W` (`[out × in]`) as Freivalds' B = Wᵀ (`[in × out]`, row-major), below an identity when `residual` (B = [I; Wᵀ]
/// for a product whose input is prefixed with the residual stream it is added to) and above the `bias` row (for an
/// input suffixed with a 1). Rounding bounds are taken over the terms the engine's products really sum
/// ([`QMatrix::magnitudes`]), widened by (1 + 4/K) for the few operations a block-wise product adds per entry (a
/// scale product, the minimum's term, the residual add, the bias).
fn prepare(w: &QMatrix, residual: bool, bias: Option<&[f32]>, seed: u64) -> Result<Prepared, ProofError> {
    let (out, inn) = (w.rows(), w.cols());
    let skip = if residual { out } else { 0 };
    let k = skip + inn + usize::from(bias.is_some());
    let widen = 1.0 + 4.0 / k as f32;
    let transposed = |dense: Vec<f32>, bias: Option<Vec<f32>>| {
        let mut b = vec![0f32; k * out];
        for i in 0..skip {
            b[i * out + i] = 1.0;
        }
        for (j, row) in dense.chunks_exact(inn).enumerate() {
            for (c, &x) in row.iter().enumerate() {
                b[(skip + c) * out + j] = x;
            }
        }
        if let Some(bias) = bias {
            b[(k - 1) * out..].copy_from_slice(&bias);
        }
        b
    };
    let b = transposed(w.to_f32(), bias.map(<[f32]>::to_vec));
    let magnitudes: Vec<f32> = transposed(w.magnitudes(), bias.map(|b| b.iter().map(|x| x.abs()).collect()))
        .into_iter()
        .map(|m| m * widen)
        .collect();
    Prepared::with_magnitudes(&b, &magnitudes, k, out, ROUNDS, seed).map_err(|e| ProofError::Prepare(e.to_string()))
}

impl ChatVerifier {
    /// Draws the secret projections from `seed` (never sent anywhere) for `model`'s weights.
    pub fn prepare(model: &Llama, seed: u64) -> Result<ChatVerifier, ProofError> {
        use rayon::prelude::*;
        let seeds = |l: usize| {
            let mut rng = SplitMix64::new(seed ^ (l as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            move || rng.next_u64()
        };
        let layers = model
            .layers
            .par_iter()
            .enumerate()
            .map(|(l, w)| {
                let mut next = seeds(l);
                Ok(LayerCheck {
                    attn_norm: w.attn_norm.clone(),
                    ffn_norm: w.ffn_norm.clone(),
                    q: prepare(&w.q, false, None, next())?,
                    k: prepare(&w.k, false, None, next())?,
                    v: prepare(&w.v, false, None, next())?,
                    out: prepare(&w.out, true, None, next())?,
                    gate: prepare(&w.gate, false, None, next())?,
                    up: prepare(&w.up, false, None, next())?,
                    down: prepare(&w.down, true, None, next())?,
                })
            })
            .collect::<Result<Vec<_>, ProofError>>()?;
        let head = model.head().clone();
        let head_check = prepare(&head, false, None, seeds(usize::MAX)())?;
        let mut row = Vec::new();
        let head_row_norm = (0..head.rows())
            .map(|r| {
                row.clear();
                head.row_into(r, &mut row);
                row.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>().sqrt()
            })
            .fold(0.0, f64::max);
        Ok(ChatVerifier {
            config: model.config.clone(),
            embeddings: model.embeddings.clone(),
            output_norm: model.output_norm.clone(),
            layers,
            head_check,
            head_row_norm,
        })
    }

    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// Checks `opening` against the committed `root` of `run` for `challenge` (which the verifier drew).
    pub fn check(&self, run: &ChatRun, root: &Hash, challenge: &Challenge, opening: &Opening) -> Verdict {
        if let Err(e) = run.check(self.config.vocab) {
            return Verdict::malformed(e.to_string());
        }
        if let Err(e) = self.check_shape(run, root, challenge, opening) {
            return Verdict::malformed(e);
        }
        let mut verdict = Verdict::new();
        let layout = Layout::new(self.config.layers, run.positions());
        let inputs = run.inputs();
        for (&(l, s), claim) in challenge.pairs.iter().zip(&opening.pairs) {
            self.check_pair(&mut verdict, opening, &layout, inputs[s], (l, s), claim);
        }
        let decisions = run.decisions();
        for (&d, logits) in challenge.decisions.iter().zip(&opening.logits) {
            let (p, token) = decisions[d];
            let (_, last) = opening.residual(&layout, self.config.width, self.config.layers - 1, p);
            self.check_decision(&mut verdict, &run.sampling, d, p, token, last, logits);
        }
        verdict
    }

    /// The opening holds exactly the leaves and claims asked for, of the right sizes, and they lead to the root.
    fn check_shape(&self, run: &ChatRun, root: &Hash, challenge: &Challenge, opening: &Opening) -> Result<(), String> {
        let c = &self.config;
        let (positions, decisions) = (run.positions(), run.decisions());
        let bad_pair = challenge.pairs.iter().enumerate().any(|(i, &(l, s))| l != i || s >= positions);
        if challenge.pairs.len() != c.layers || bad_pair || challenge.decisions.iter().any(|&d| d >= decisions.len()) {
            return Err("the challenge does not fit the run".into());
        }
        let layout = Layout::new(c.layers, positions);
        let (residuals, blocks) = challenge.leaves(&layout, &decisions);
        if !opening.residuals.keys().eq(residuals.iter()) || !opening.kv.keys().eq(blocks.iter()) {
            return Err("the opening does not hold the leaves asked for".into());
        }
        let (w, kw, f) = (c.width, c.kv_width(), c.ffn_width);
        let full_ok =
            opening.residuals.iter().all(|(&i, r)| r.mid.len() == layout.leaf_len(i, w) && r.out.len() == r.mid.len());
        let keys_ok = opening.kv.iter().all(|(&i, b)| b.k.len() == layout.leaf_len(i, kw) && b.v.len() == b.k.len());
        let pairs_ok = opening.pairs.len() == challenge.pairs.len()
            && opening.pairs.iter().all(|p| p.q.len() == w && p.gate.len() == f && p.up.len() == f);
        let logits_ok =
            opening.logits.len() == challenge.decisions.len() && opening.logits.iter().all(|l| l.len() == c.vocab);
        if !(full_ok && keys_ok && pairs_ok && logits_ok) {
            return Err("an opened vector has the wrong length".into());
        }
        opening.verify_leaves(&layout, root)
    }

    /// One layer at one position: q, k, v, attention and the output product, gate, up, and the down product.
    fn check_pair(
        &self,
        verdict: &mut Verdict,
        opening: &Opening,
        layout: &Layout,
        token: u32,
        (l, s): (usize, usize),
        claim: &PairClaim,
    ) {
        let c = &self.config;
        let (lc, kw) = (&self.layers[l], c.kv_width());
        let x = if l == 0 {
            let mut row = Vec::new();
            self.embeddings.row_into(token as usize, &mut row);
            row
        } else {
            opening.residual(layout, c.width, l - 1, s).1.to_vec()
        };
        let (mid, out) = opening.residual(layout, c.width, l, s);
        // Keys and values of positions 0..=s, from their blocks.
        let (mut keys, mut values) = (Vec::with_capacity((s + 1) * kw), Vec::with_capacity((s + 1) * kw));
        for b in 0..=s / KV_BLOCK {
            let block = &opening.kv[&layout.kv_block(l, b)];
            let take = ((s + 1 - b * KV_BLOCK).min(KV_BLOCK)) * kw;
            keys.extend_from_slice(&block.k[..take]);
            values.extend_from_slice(&block.v[..take]);
        }
        let (own_k, own_v) = (&keys[s * kw..], &values[s * kw..]);
        let mut check = |p: &Prepared, a: &[f32], cv: &[f32], op: &'static str| {
            freivalds_into(verdict, p, a, cv, || format!("layer {l} position {s} {op}"));
        };
        let mut h = x.clone();
        nn::rms_norm(&mut h, &lc.attn_norm, c.rms_eps);
        check(&lc.q, &h, &unrope(&claim.q, c.heads, c.head_dim, s, c.rope_base), "q");
        check(&lc.k, &h, &unrope(own_k, c.kv_heads, c.head_dim, s, c.rope_base), "k");
        check(&lc.v, &h, own_v, "v");
        let shape = Attention {
            tokens: 1,
            keys: s + 1,
            heads: c.heads,
            kv_heads: c.kv_heads,
            head_dim: c.head_dim,
            causal: true,
        };
        let mut attended = vec![0.0; c.width];
        nn::attention(shape, &claim.q, &keys, &values, &mut attended);
        check(&lc.out, &[x.as_slice(), &attended].concat(), mid, "attention output");
        let mut h2 = mid.to_vec();
        nn::rms_norm(&mut h2, &lc.ffn_norm, c.rms_eps);
        check(&lc.gate, &h2, &claim.gate, "gate");
        check(&lc.up, &h2, &claim.up, "up");
        let mut swiglu = claim.gate.clone();
        nn::silu_mul(&mut swiglu, &claim.up);
        check(&lc.down, &[mid, &swiglu].concat(), out, "down");
    }

    /// A sampling decision: the logits are the head's product of the last layer's output, and the token is what the
    /// request's sampler draws from them (up to what rounding on another backend could tip).
    #[allow(clippy::too_many_arguments)] // The decision's parts, each needed.
    fn check_decision(
        &self,
        verdict: &mut Verdict,
        sampling: &Sampling,
        index: usize,
        p: usize,
        token: u32,
        last: &[f32],
        logits: &[f32],
    ) {
        let c = &self.config;
        let mut h = last.to_vec();
        nn::rms_norm(&mut h, &self.output_norm, c.rms_eps);
        freivalds_into(verdict, &self.head_check, &h, logits, || format!("position {p} logits"));
        // How far two honest computations of one logit can differ: each sums `width` products in its own order
        // (γ_K·Σ|h_k·w_k| apiece, rigorous; z·u·√K·‖h‖·‖w‖ under the rounding model), and the two backends' RMSNorm
        // outputs differ by a few units in the last place (4u relative, both bounds).
        let k = c.width as f64;
        let h_norm = h.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
        let scale = h_norm * self.head_row_norm;
        let rigorous = (2.0 * gamma(c.width) + 8.0 * freivalds::U32) * scale;
        let tight = (2.0 * freivalds::tolerance_factor(1, c.width, 1) * k.sqrt() + 8.0 * freivalds::U32) * scale;
        let at = || format!("position {p} sampling");
        let mut rng = SplitMix64::new(sampling.seed);
        if sampling.temperature != 0.0 {
            (0..index).for_each(|_| {
                rng.next_u64();
            });
        }
        if sample(logits, sampling, &mut rng.clone()) == token {
            return;
        }
        let Some(&chosen) = logits.get(token as usize) else { return verdict.note(f64::INFINITY, f64::INFINITY, at) };
        if sampling.temperature == 0.0 {
            let gap = f64::from(logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v))) - f64::from(chosen);
            return verdict.note(gap / (2.0 * tight), gap / (2.0 * rigorous), at);
        }
        let t = f64::from(sampling.temperature);
        let miss = draw_miss(logits, sampling, rng.next_f64(), token);
        // Each probability moves by a factor within e^(±2·bound/T) (its logit and the maximum); cumulative sums by
        // at most that much of the whole.
        let eps = |bound: f64| (4.0 * bound / t).exp_m1() + 1e-12;
        verdict.note(miss / eps(tight), miss / eps(rigorous), at);
    }
}

/// Freivalds' check of one product row, folded into `verdict`.
fn freivalds_into(verdict: &mut Verdict, p: &Prepared, a: &[f32], c: &[f32], at: impl Fn() -> String) {
    match p.check(a, c, 1) {
        Ok(r) => verdict.note(r.worst_ratio, r.conviction_ratio, at),
        Err(_) => verdict.note(f64::INFINITY, f64::INFINITY, at),
    }
}

fn gamma(k: usize) -> f64 {
    let ku = k as f64 * freivalds::U32;
    ku / (1.0 - ku)
}

/// RoPE undone: each pair turned back by its angle at `pos`.
fn unrope(x: &[f32], heads: usize, head_dim: usize, pos: usize, base: f32) -> Vec<f32> {
    let table: Vec<(f32, f32)> =
        nn::rope_table(pos, 1, head_dim, base).into_iter().map(|(cos, sin)| (cos, -sin)).collect();
    let mut y = x.to_vec();
    nn::rope_with(&mut y, head_dim, heads, &table);
    y
}

/// How far (as a share of the kept probability) the sampler's draw `u` falls from `token`'s interval, for any cut
/// the top-p rule could make within rounding: 0 when some cut puts the draw inside it, 1 when the token is never
/// kept.
fn draw_miss(logits: &[f32], sampling: &Sampling, u: f64, token: u32) -> f64 {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let t = f64::from(sampling.temperature);
    let mut probs: Vec<(u32, f64)> =
        logits.iter().enumerate().map(|(i, &v)| (i as u32, ((f64::from(v) - f64::from(max)) / t).exp())).collect();
    probs.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let total: f64 = probs.iter().map(|p| p.1).sum();
    let Some(rank) = probs.iter().position(|p| p.0 == token) else { return 1.0 };
    let below: f64 = probs[..rank].iter().map(|p| p.1).sum::<f64>() / total;
    let (lo, hi) = (below, below + probs[rank].1 / total);
    // The kept share for a cut after `keep` tokens; the sampler's own cut is the first reaching top_p.
    let mut best = 1.0f64;
    let mut kept = 0.0;
    for (i, p) in probs.iter().enumerate() {
        kept += p.1 / total;
        if i >= rank {
            let at = u * kept;
            let miss = if at < lo {
                lo - at
            } else if at >= hi {
                at - hi
            } else {
                0.0
            };
            // A cut other than the sampler's own is honest only as far as rounding moves the cumulative share.
            let cut_gap = if kept >= f64::from(sampling.top_p) { 0.0 } else { f64::from(sampling.top_p) - kept };
            best = best.min(miss.max(cut_gap) / kept.max(f64::MIN_POSITIVE));
        }
        if kept >= f64::from(sampling.top_p) {
            break;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each layer's position and each decision is drawn uniformly: a cheat confined to one position of a layer, or
    /// one forged token among `d` decisions, is opened with probability 1/positions and HEAD_OPENINGS/d.
    #[test]
    fn challenges_are_uniform() {
        let (positions, decisions, draws) = (10, 24, 20_000);
        let mut at_position = vec![0usize; positions];
        let mut at_decision = vec![0usize; decisions];
        for seed in 0..draws {
            let c = Challenge::draw(seed, 3, positions, decisions);
            assert_eq!(c.pairs.iter().map(|p| p.0).collect::<Vec<_>>(), [0, 1, 2]);
            at_position[c.pairs[1].1] += 1;
            assert_eq!(c.decisions.len(), HEAD_OPENINGS);
            assert!(c.decisions.windows(2).all(|w| w[0] < w[1]), "distinct and sorted");
            c.decisions.iter().for_each(|&d| at_decision[d] += 1);
        }
        let expect_position = draws as f64 / positions as f64;
        // The last decision every time; the others uniformly among the rest.
        let expect_decision = draws as f64 * (HEAD_OPENINGS - 1) as f64 / (decisions - 1) as f64;
        // Five standard deviations of a binomial count.
        let close = |n: usize, e: f64, p: f64| (n as f64 - e).abs() < 5.0 * (e * (1.0 - p)).sqrt();
        assert!(at_position.iter().all(|&n| close(n, expect_position, 1.0 / positions as f64)), "{at_position:?}");
        assert_eq!(at_decision[decisions - 1], draws as usize, "the run's last decision is always opened");
        let p = (HEAD_OPENINGS - 1) as f64 / (decisions - 1) as f64;
        let rest = &at_decision[..decisions - 1];
        assert!(rest.iter().all(|&n| close(n, expect_decision, p)), "{at_decision:?}");
        let few = Challenge::draw(1, 2, 1, 3);
        assert_eq!((few.pairs, few.decisions), (vec![(0, 0), (1, 0)], vec![0, 1, 2]), "fewer decisions: all opened");
    }
}
