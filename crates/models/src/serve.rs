//! The pinned models on the network (issue 13): what a provider node runs for an inference task and keeps for its
//! proof ([`Provider`]), and what a coordinator tokenizes requests and checks proofs with ([`Hosted`]). Both derive a
//! challenge from its seed here ([`challenge_of`]), so a node and a coordinator can only disagree about numbers.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};

use neurolov_protocol::inference::{Answer, Finish, InferOutput, InferRequest};

use crate::catalog::Model;
use crate::device::BackendKind;
use crate::engine::{ChatModel, Embedder, EmbedderFiles, EngineError};
use crate::generate::{FinishReason, Message, Sampling};
use crate::proof::embed::{self, EmbedRun, EmbedVerifier, EncoderClaim};
use crate::proof::{self, Challenge, ChatRun, ChatVerifier, HEAD_OPENINGS, Opening, Recorder, Verdict};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Proof(#[from] proof::ProofError),
    #[error("{0}")]
    Request(String),
}

/// A model loaded for inference, as the engine runs it.
#[derive(Debug)]
enum Engine {
    Embed(Embedder),
    Chat(ChatModel),
}

impl Engine {
    /// The model in `dir`: a chat model is one GGUF file (Llama architecture), an embedding model a
    /// sentence-transformers directory (BERT encoder, `model.safetensors`, `config.json`, `tokenizer.json`, mean
    /// pooling).
    fn load(dir: &Path, backend: BackendKind) -> Result<Engine, EngineError> {
        let entries =
            std::fs::read_dir(dir).map_err(|source| EngineError::Read { path: dir.display().to_string(), source })?;
        let gguf =
            entries.filter_map(Result::ok).map(|e| e.path()).find(|p| p.extension().is_some_and(|x| x == "gguf"));
        match gguf {
            Some(path) => Ok(Engine::Chat(ChatModel::load(&path, backend)?)),
            None => Ok(Engine::Embed(Embedder::load(dir, backend)?)),
        }
    }

    /// The model from its files' contents, named by their paths in the model's directory (as [`Engine::load`]
    /// finds them there).
    fn from_files(files: &[(String, Vec<u8>)], backend: BackendKind) -> Result<Engine, EngineError> {
        let file = |name: &str| {
            files
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, bytes)| bytes.as_slice())
                .ok_or_else(|| EngineError::Model(format!("the model has no {name}")))
        };
        let text = |name: &str| {
            std::str::from_utf8(file(name)?).map_err(|_| EngineError::Model(format!("{name} is not utf-8")))
        };
        if let Some((_, gguf)) = files.iter().find(|(n, _)| n.ends_with(".gguf")) {
            return Ok(Engine::Chat(ChatModel::from_gguf_bytes(gguf, backend)?));
        }
        let embedder = EmbedderFiles {
            pooling_json: text("1_Pooling/config.json")?,
            config_json: text("config.json")?,
            safetensors: file("model.safetensors")?,
            tokenizer_json: text("tokenizer.json")?,
        };
        Ok(Engine::Embed(Embedder::from_files(&embedder, backend)?))
    }
}

/// Answered requests a provider keeps for their openings at once: the oldest goes first (its attempt is probably
/// over). A long chat's record is tens of MiB.
pub const MAX_HELD_PROOFS: usize = 16;

/// An answered attempt (task, attempt) with the model that ran it and what its root covers.
type HeldProof = ((u64, u32), Arc<Provider>, Arc<Held>);

/// Answered inference attempts waiting for their challenge, oldest first, at most [`MAX_HELD_PROOFS`]: what a
/// provider (a native node, a browser tab) keeps between its answer and the coordinator's `open`, verdict or cancel.
#[derive(Debug, Default)]
pub struct HeldProofs(Mutex<VecDeque<HeldProof>>);

impl HeldProofs {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<HeldProof>> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn keep(&self, key: (u64, u32), provider: Arc<Provider>, held: Held) {
        let mut held_now = self.lock();
        if held_now.len() >= MAX_HELD_PROOFS {
            held_now.pop_front();
        }
        held_now.push_back((key, provider, Arc::new(held)));
    }

    pub fn get(&self, key: (u64, u32)) -> Option<(Arc<Provider>, Arc<Held>)> {
        self.lock().iter().find(|(k, _, _)| *k == key).map(|(_, p, h)| (Arc::clone(p), Arc::clone(h)))
    }

    /// The attempt is over: its record goes.
    pub fn forget(&self, key: (u64, u32)) {
        self.lock().retain(|(k, _, _)| *k != key);
    }
}

/// What a provider keeps of an answered request until it is asked to open it (or told the verdict).
#[derive(Debug)]
pub struct Held {
    request: InferRequest,
    answer: Answer,
    recorder: Recorder,
}

/// A model a provider node serves: one request at a time (the engine's state is a mutable device context).
#[derive(Debug)]
pub struct Provider {
    /// The name it is listed under.
    pub name: String,
    engine: Mutex<Engine>,
}

fn sampling(request: &InferRequest) -> Sampling {
    match request {
        InferRequest::Chat { temperature, top_p, seed, .. } => {
            Sampling { temperature: *temperature, top_p: *top_p, seed: *seed }
        }
        InferRequest::Embed { .. } => Sampling::GREEDY,
    }
}

fn finish_reason(finish: Finish) -> FinishReason {
    match finish {
        Finish::Stop => FinishReason::Stop,
        Finish::Length => FinishReason::Length,
        Finish::Context => FinishReason::Context,
    }
}

/// The challenge a coordinator's `seed` means for a run: the same on both sides.
pub fn challenge_of(layers: usize, request: &InferRequest, answer: &Answer, seed: u64) -> Result<Challenge, String> {
    match (request, answer) {
        (InferRequest::Chat { prompt, .. }, Answer::Chat { tokens, finish, stop_token }) => {
            let run = chat_run(request, prompt, tokens, *finish, *stop_token);
            Ok(Challenge::draw(seed, layers, run.positions(), run.decisions().len()))
        }
        (InferRequest::Embed { texts }, Answer::Embeddings(_)) => {
            Ok(embed::challenge(seed, layers, texts.iter().map(Vec::len).sum()))
        }
        _ => Err("the answer is not of the request's kind".into()),
    }
}

fn chat_run<'a>(
    request: &InferRequest,
    prompt: &'a [u32],
    tokens: &'a [u32],
    finish: Finish,
    stop_token: Option<u32>,
) -> ChatRun<'a> {
    ChatRun { prompt, sampling: sampling(request), tokens, finish: finish_reason(finish), stop_token }
}

impl Provider {
    /// A pinned `model` from the cache, on `backend`.
    pub fn load(cache: &Path, model: Model, backend: BackendKind) -> Result<Provider, ServeError> {
        Provider::load_dir(model.name, &crate::fetch::model_dir(cache, &model), backend)
    }

    /// The model in `dir` (its files already checked), listed as `name`, on `backend`.
    pub fn load_dir(name: &str, dir: &Path, backend: BackendKind) -> Result<Provider, ServeError> {
        Ok(Provider { name: name.to_string(), engine: Mutex::new(Engine::load(dir, backend)?) })
    }

    /// The model from its files' contents (each named by its path in the model's directory, already checked against
    /// the manifest), listed as `name`, on `backend`: what a browser tab loads.
    pub fn from_files(name: &str, files: &[(String, Vec<u8>)], backend: BackendKind) -> Result<Provider, ServeError> {
        Ok(Provider { name: name.to_string(), engine: Mutex::new(Engine::from_files(files, backend)?) })
    }

    fn engine(&self) -> std::sync::MutexGuard<'_, Engine> {
        self.engine.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs `request`, recording what its proof commits to: the answer (with its root) and what to keep for opening.
    pub fn answer(&self, request: &InferRequest) -> Result<(InferOutput, Held), ServeError> {
        request.check().map_err(ServeError::Request)?;
        let mut engine = self.engine();
        let (answer, recorder) = match (&mut *engine, request) {
            (Engine::Chat(m), InferRequest::Chat { prompt, max_tokens, stop, .. }) => {
                let mut recorder = Recorder::new(m.config());
                let s = sampling(request);
                let g = m.generate_traced(prompt, *max_tokens as usize, &s, stop, &mut recorder, |_| {
                    std::ops::ControlFlow::Continue(())
                })?;
                let finish = match g.finish {
                    FinishReason::Stop => Finish::Stop,
                    FinishReason::Length => Finish::Length,
                    FinishReason::Context => Finish::Context,
                    FinishReason::Cancelled => return Err(ServeError::Request("generation was cancelled".into())),
                };
                (Answer::Chat { tokens: g.tokens, finish, stop_token: g.stop_token }, recorder)
            }
            (Engine::Embed(e), InferRequest::Embed { texts }) => {
                let mut recorder = Recorder::for_encoder(&e.weights().config);
                (Answer::Embeddings(e.embed_ids_traced(texts, &mut recorder)?), recorder)
            }
            _ => return Err(ServeError::Request(format!("{} does not answer this kind of request", self.name))),
        };
        let root = recorder.commit()?;
        let output = InferOutput { root, answer: answer.clone() };
        Ok((output, Held { request: request.clone(), answer, recorder }))
    }

    /// The opening of `held` at the challenge `seed` means, as wire bytes.
    pub fn open(&self, held: &Held, seed: u64) -> Result<Vec<u8>, ServeError> {
        let engine = self.engine();
        match (&*engine, &held.request, &held.answer) {
            (Engine::Chat(m), InferRequest::Chat { prompt, .. }, Answer::Chat { tokens, finish, stop_token }) => {
                let run = chat_run(&held.request, prompt, tokens, *finish, *stop_token);
                let challenge =
                    challenge_of(m.config().layers, &held.request, &held.answer, seed).map_err(ServeError::Request)?;
                Ok(proof::open(m.weights(), &held.recorder, &run, &challenge)?.to_bytes())
            }
            (Engine::Embed(e), InferRequest::Embed { texts }, Answer::Embeddings(embeddings)) => {
                let w = e.weights();
                let run = EmbedRun { texts, embeddings };
                let challenge = challenge_of(w.config.num_hidden_layers, &held.request, &held.answer, seed)
                    .map_err(ServeError::Request)?;
                Ok(embed::open(w, &held.recorder, &run, &challenge)?.to_bytes())
            }
            _ => Err(ServeError::Request("the held run is not this model's".into())),
        }
    }
}

/// What a coordinator needs to know of a model to list it: the figures of its `ModelListing`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Facts {
    pub chat: bool,
    /// Floats per embedding (0 for chat).
    pub width: u32,
    /// Most positions one request may run (prompt and generated tokens; the longest text for embeddings).
    pub max_positions: u32,
    /// An opening's largest size: `fixed + per_position · positions` (a bound the core holds uploads to).
    pub opening_fixed_bytes: u64,
    pub opening_bytes_per_position: u64,
    /// About 2 × parameters, in MFLOP per position.
    pub mflop_per_token: u64,
    /// Token ids run from 0 to this (exclusive).
    pub vocab: u32,
}

/// The verifier of a hosted model.
enum Verifier {
    Chat(Box<ChatVerifier>),
    Embed(Box<EmbedVerifier>),
}

/// A model as a coordinator hosts it: its tokenizer and chat template (requests arrive as text), and its secret
/// verifier (prepared once from the coordinator's secret seed).
pub struct Hosted {
    /// The name it is listed under.
    pub name: String,
    engine: Engine,
    verifier: Verifier,
}

impl std::fmt::Debug for Hosted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hosted").field("name", &self.name).finish_non_exhaustive()
    }
}

/// Bytes of a leaf's index and length on the wire, and of a Merkle hash.
const LEAF_HEADER_BYTES: u64 = 12;
const HASH_BYTES: u64 = 32;

/// Rounded-up bound on an opening of a model with these shapes: every residual and key/value leaf at most once,
/// a multiproof never longer than the leaves, one claim per layer, up to [`HEAD_OPENINGS`] logits vectors.
fn opening_bound(layers: u64, width: u64, kv_width: u64, claim_floats: u64, vocab: u64) -> (u64, u64) {
    let leaves_per_position = 1.0 / proof::RESIDUAL_BLOCK as f64 + 1.0 / proof::KV_BLOCK as f64;
    let per_leaf = (LEAF_HEADER_BYTES + HASH_BYTES) as f64;
    let per_position = layers * (8 * width + 8 * kv_width + (leaves_per_position * per_leaf).ceil() as u64);
    // The last, partial leaves of each kind, and each layer's claim with its counts.
    let per_layer = 2 * (LEAF_HEADER_BYTES + HASH_BYTES) + 16 + 4 * claim_floats;
    let fixed = 64 + layers * per_layer + HEAD_OPENINGS as u64 * (4 + 4 * vocab);
    (fixed, per_position)
}

impl Hosted {
    /// `model` from the cache (on the CPU: the coordinator tokenizes with it and its verifier reads its weights),
    /// with a verifier of secret `seed`.
    pub fn load(cache: &Path, model: Model, seed: u64) -> Result<Hosted, ServeError> {
        Hosted::load_dir(model.name, &crate::fetch::model_dir(cache, &model), seed)
    }

    /// The model in `dir` (its files already checked), listed as `name`, with a verifier of secret `seed`.
    pub fn load_dir(name: &str, dir: &Path, seed: u64) -> Result<Hosted, ServeError> {
        let engine = Engine::load(dir, BackendKind::Cpu)?;
        let verifier = match &engine {
            Engine::Chat(m) => Verifier::Chat(Box::new(ChatVerifier::prepare(m.weights(), seed)?)),
            Engine::Embed(e) => Verifier::Embed(Box::new(EmbedVerifier::prepare(e.weights(), seed)?)),
        };
        Ok(Hosted { name: name.to_string(), engine, verifier })
    }

    pub fn facts(&self) -> Facts {
        match &self.engine {
            Engine::Chat(m) => {
                let c = m.config();
                let kv_width = (c.kv_heads * c.head_dim) as u64;
                let claim = (c.heads * c.head_dim + 2 * c.ffn_width) as u64;
                let (fixed, per) = opening_bound(c.layers as u64, c.width as u64, kv_width, claim, c.vocab as u64);
                let params = c.layers * (2 * c.width * (c.width + kv_width as usize) + 3 * c.width * c.ffn_width);
                Facts {
                    chat: true,
                    width: 0,
                    max_positions: c.context.min(crate::generate::MAX_CONTEXT_TOKENS) as u32,
                    opening_fixed_bytes: fixed,
                    opening_bytes_per_position: per,
                    mflop_per_token: (2 * (params + c.width * c.vocab) as u64).div_ceil(1_000_000),
                    vocab: c.vocab as u32,
                }
            }
            Engine::Embed(e) => {
                let c = &e.weights().config;
                let w = c.hidden_size as u64;
                let claim = (c.hidden_size + c.intermediate_size) as u64;
                let (fixed, per) = opening_bound(c.num_hidden_layers as u64, w, w, claim, 0);
                let params =
                    c.num_hidden_layers * (4 * c.hidden_size * c.hidden_size + 2 * c.hidden_size * c.intermediate_size);
                Facts {
                    chat: false,
                    width: c.hidden_size as u32,
                    max_positions: crate::engine::MINILM_MAX_TOKENS.min(c.max_position_embeddings) as u32,
                    opening_fixed_bytes: fixed,
                    opening_bytes_per_position: per,
                    mflop_per_token: (2 * params as u64).div_ceil(1_000_000),
                    vocab: c.vocab_size as u32,
                }
            }
        }
    }

    /// A text's token ids as the embedding model reads them.
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>, ServeError> {
        match &self.engine {
            Engine::Embed(e) => Ok(e.tokenize(text)?),
            Engine::Chat(m) => Ok(m.tokenizer.encode(text, false).map_err(EngineError::from)?),
        }
    }

    /// A chat's prompt through the model's template, and the tokens that end its turn.
    pub fn prompt(&self, messages: &[Message]) -> Result<(Vec<u32>, Vec<u32>), ServeError> {
        match &self.engine {
            Engine::Chat(m) => Ok((m.prompt(messages)?, m.stop_tokens().to_vec())),
            Engine::Embed(_) => Err(ServeError::Request(format!("{} is not a chat model", self.name))),
        }
    }

    /// The text of generated tokens.
    pub fn decode(&self, tokens: &[u32]) -> Result<String, ServeError> {
        match &self.engine {
            Engine::Chat(m) => Ok(m.tokenizer.decode(tokens, true).map_err(EngineError::from)?),
            Engine::Embed(_) => Err(ServeError::Request(format!("{} is not a chat model", self.name))),
        }
    }

    /// The text each generated token adds, in order (a character split across tokens comes with its last one):
    /// what a streamed answer sends piece by piece.
    pub fn pieces(&self, tokens: &[u32]) -> Result<Vec<String>, ServeError> {
        let Engine::Chat(m) = &self.engine else {
            return Err(ServeError::Request(format!("{} is not a chat model", self.name)));
        };
        let mut stream = m.tokenizer.stream();
        tokens.iter().map(|&t| Ok(stream.push(t).map_err(EngineError::from)?)).collect()
    }

    /// Checks a committed output's proof from the opening's bytes at the challenge `seed` means.
    pub fn check(&self, request: &InferRequest, output: &InferOutput, opening: &[u8], seed: u64) -> Verdict {
        let malformed = Verdict::malformed;
        match (&self.verifier, request, &output.answer) {
            (Verifier::Chat(v), InferRequest::Chat { prompt, .. }, Answer::Chat { tokens, finish, stop_token }) => {
                let run = chat_run(request, prompt, tokens, *finish, *stop_token);
                let challenge = match challenge_of(v.config().layers, request, &output.answer, seed) {
                    Ok(c) => c,
                    Err(e) => return malformed(e),
                };
                match Opening::from_bytes(opening) {
                    Ok(o) => v.check(&run, &output.root, &challenge, &o),
                    Err(e) => malformed(format!("the opening: {e}")),
                }
            }
            (Verifier::Embed(v), InferRequest::Embed { texts }, Answer::Embeddings(embeddings)) => {
                let run = EmbedRun { texts, embeddings };
                let layers = v.config().num_hidden_layers;
                let challenge = match challenge_of(layers, request, &output.answer, seed) {
                    Ok(c) => c,
                    Err(e) => return malformed(e),
                };
                match Opening::<EncoderClaim>::from_bytes(opening) {
                    Ok(o) => v.check(&run, &output.root, &challenge, &o),
                    Err(e) => malformed(format!("the opening: {e}")),
                }
            }
            _ => malformed("the answer is not of this model's kind".into()),
        }
    }
}
