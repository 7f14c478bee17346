//! The two models ready to use, loaded from their directory in the model cache: [`Embedder`] (all-MiniLM-L6-v2:
//! text → unit-length sentence vector) and [`ChatModel`] (SmolLM2-135M-Instruct: messages → streamed reply).
//! This is what the CLI and, next, the network's inference tasks call.

use std::ops::ControlFlow;
use std::path::Path;

use crate::bert::{Bert, BertConfig, BertError, BertWeights};
use crate::device::{BackendKind, Cpu, Gpu};
use crate::generate::{self, ChatTemplate, GenerateError, Generated, Message, Sampling};
use crate::gguf::{Gguf, GgufError, Value};
use crate::llama::{Llama, LlamaConfig, LlamaError, NoTrace, Trace};
use crate::tokenizer::{TextTokenizer, TokenizerError};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("reading {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error(transparent)]
    Bert(#[from] BertError),
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error(transparent)]
    Llama(#[from] LlamaError),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error(transparent)]
    Generate(#[from] GenerateError),
    #[error(transparent)]
    Proof(#[from] crate::proof::ProofError),
    #[error("{0}")]
    Model(String),
    #[error("{texts} texts in one call; at most {MAX_EMBED_BATCH}")]
    TooManyTexts { texts: usize },
}

/// Tokens MiniLM reads per text (sentence-transformers' `max_seq_length`): longer texts are truncated.
pub const MINILM_MAX_TOKENS: usize = 256;
/// Most texts one embedding call takes: bounds the activations held at once (≈ 256 × 256 tokens × 1536 floats).
pub const MAX_EMBED_BATCH: usize = 256;

fn read(path: &Path) -> Result<Vec<u8>, EngineError> {
    std::fs::read(path).map_err(|source| EngineError::Read { path: path.display().to_string(), source })
}

fn read_text(path: &Path) -> Result<String, EngineError> {
    String::from_utf8(read(path)?).map_err(|_| EngineError::Model(format!("{} is not utf-8", path.display())))
}

/// A model's weights on the device that runs it.
#[derive(Debug)]
enum OnDevice<C, G> {
    Cpu(C, Box<Cpu>),
    Gpu(G, Box<Gpu>),
}

/// The contents of a sentence-transformers directory's files that an [`Embedder`] reads.
#[derive(Clone, Copy, Debug)]
pub struct EmbedderFiles<'a> {
    /// `1_Pooling/config.json`.
    pub pooling_json: &'a str,
    /// `config.json`.
    pub config_json: &'a str,
    /// `model.safetensors`.
    pub safetensors: &'a [u8],
    /// `tokenizer.json`.
    pub tokenizer_json: &'a str,
}

/// all-MiniLM-L6-v2: its tokenizer and encoder.
#[derive(Debug)]
pub struct Embedder {
    tokenizer: TextTokenizer,
    bert: OnDevice<Bert<Cpu>, Bert<Gpu>>,
    /// The weights as loaded: what openings of a verifiable run and verifiers are computed from.
    weights: BertWeights,
}

impl Embedder {
    /// The model in `dir` (`config.json`, `tokenizer.json`, `model.safetensors`, `1_Pooling/config.json`), on
    /// `backend`.
    pub fn load(dir: &Path, backend: BackendKind) -> Result<Embedder, EngineError> {
        let files = EmbedderFiles {
            pooling_json: &read_text(&dir.join("1_Pooling/config.json"))?,
            config_json: &read_text(&dir.join("config.json"))?,
            safetensors: &read(&dir.join("model.safetensors"))?,
            tokenizer_json: &read_text(&dir.join("tokenizer.json"))?,
        };
        Embedder::from_files(&files, backend)
    }

    /// The model from its files' contents (a browser has no directory), on `backend`.
    pub fn from_files(files: &EmbedderFiles<'_>, backend: BackendKind) -> Result<Embedder, EngineError> {
        let pooling: serde_json::Value = serde_json::from_str(files.pooling_json)
            .map_err(|e| EngineError::Model(format!("1_Pooling/config.json: {e}")))?;
        if pooling["pooling_mode_mean_tokens"] != serde_json::Value::Bool(true) {
            return Err(EngineError::Model("only mean pooling is implemented".into()));
        }
        let config = BertConfig::parse(files.config_json)?;
        let weights = BertWeights::load(config, files.safetensors)?;
        let bert = match backend {
            BackendKind::Cpu => {
                let mut cpu = Cpu::default();
                OnDevice::Cpu(Bert::new(weights.clone(), &mut cpu)?, Box::new(cpu))
            }
            BackendKind::Gpu => {
                let mut gpu = Gpu::open().map_err(BertError::from)?;
                OnDevice::Gpu(Bert::new(weights.clone(), &mut gpu)?, Box::new(gpu))
            }
        };
        let tokenizer = TextTokenizer::from_json(files.tokenizer_json, MINILM_MAX_TOKENS)?;
        Ok(Embedder { tokenizer, bert, weights })
    }

    /// The token ids the encoder reads for `text` ([CLS] … [SEP], at most [`MINILM_MAX_TOKENS`]).
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>, EngineError> {
        Ok(self.tokenizer.encode(text, true)?)
    }

    /// One unit-length vector per text.
    pub fn embed(&mut self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EngineError> {
        if texts.len() > MAX_EMBED_BATCH {
            return Err(EngineError::TooManyTexts { texts: texts.len() });
        }
        let ids = texts.iter().map(|t| self.tokenize(t)).collect::<Result<Vec<_>, _>>()?;
        Ok(match &mut self.bert {
            OnDevice::Cpu(bert, _) => embed_on_threads(bert, &ids)?,
            OnDevice::Gpu(bert, dev) => bert.embed(dev, &ids)?,
        })
    }

    /// [`Embedder::embed`] with every op's output reported to `trace` (on the CPU in one thread's pass).
    pub fn embed_traced(&mut self, texts: &[&str], trace: &mut dyn Trace) -> Result<Vec<Vec<f32>>, EngineError> {
        if texts.len() > MAX_EMBED_BATCH {
            return Err(EngineError::TooManyTexts { texts: texts.len() });
        }
        let ids = texts.iter().map(|t| self.tokenize(t)).collect::<Result<Vec<_>, _>>()?;
        self.embed_ids_traced(&ids, trace)
    }

    /// The embeddings of token id sequences (as [`Embedder::tokenize`] makes them), every op reported to `trace`.
    pub fn embed_ids_traced(&mut self, ids: &[Vec<u32>], trace: &mut dyn Trace) -> Result<Vec<Vec<f32>>, EngineError> {
        if ids.len() > MAX_EMBED_BATCH {
            return Err(EngineError::TooManyTexts { texts: ids.len() });
        }
        Ok(match &mut self.bert {
            OnDevice::Cpu(bert, dev) => bert.embed_traced(dev, ids, trace)?,
            OnDevice::Gpu(bert, dev) => bert.embed_traced(dev, ids, trace)?,
        })
    }

    /// The weights as loaded (for openings and verifiers).
    pub fn weights(&self) -> &BertWeights {
        &self.weights
    }

    pub fn dimensions(&self) -> usize {
        match &self.bert {
            OnDevice::Cpu(bert, _) => bert.config().hidden_size,
            OnDevice::Gpu(bert, _) => bert.config().hidden_size,
        }
    }
}

/// The batch in one group of texts per thread, each group through the whole encoder on its own: the threads meet
/// once per call instead of at every op of every layer (the ops of a 32-sentence batch are tens of microseconds
/// each, and a hand-off costs a wake-up).
fn embed_on_threads(bert: &Bert<Cpu>, ids: &[Vec<u32>]) -> Result<Vec<Vec<f32>>, BertError> {
    use rayon::prelude::*;
    let tokens: usize = ids.iter().map(Vec::len).sum();
    let per_group = tokens.div_ceil(rayon::current_num_threads()).max(1);
    // Contiguous groups of about equal token counts.
    let mut groups: Vec<&[Vec<u32>]> = Vec::new();
    let (mut start, mut count) = (0, 0);
    for (i, text) in ids.iter().enumerate() {
        count += text.len();
        if count >= per_group || i + 1 == ids.len() {
            groups.push(&ids[start..=i]);
            (start, count) = (i + 1, 0);
        }
    }
    let parts: Vec<Vec<Vec<f32>>> =
        groups.par_iter().map(|g| bert.embed(&mut Cpu::default(), g)).collect::<Result<_, _>>()?;
    Ok(parts.concat())
}

/// SmolLM2-135M-Instruct: its decoder, tokenizer, chat template and stop tokens.
#[derive(Debug)]
pub struct ChatModel {
    llama: OnDevice<Llama<Cpu>, Llama<Gpu>>,
    /// The weights as the CPU reads them (shared with `llama` on the CPU path): what openings of a verifiable run
    /// are computed from, whatever ran the request.
    weights: Llama<Cpu>,
    pub tokenizer: TextTokenizer,
    template: ChatTemplate,
    /// Tokens that end the assistant's turn: the end-of-sequence token and the chat format's end markers.
    stop: Vec<u32>,
}

/// Control tokens that end a turn in the chat formats the engine knows (ChatML's, and end of text).
const END_MARKERS: [&str; 2] = ["<|im_end|>", "<|endoftext|>"];

impl ChatModel {
    /// The GGUF model at `path`, on `backend`.
    pub fn load(path: &Path, backend: BackendKind) -> Result<ChatModel, EngineError> {
        ChatModel::from_gguf_bytes(&read(path)?, backend)
    }

    /// The model from its GGUF file's contents, on `backend`.
    pub fn from_gguf_bytes(bytes: &[u8], backend: BackendKind) -> Result<ChatModel, EngineError> {
        let gguf = Gguf::parse(bytes)?;
        let tokenizer = TextTokenizer::from_gguf(&gguf)?;
        let mut stop: Vec<u32> = END_MARKERS.iter().filter_map(|m| tokenizer.token_id(m)).collect();
        if let Some(eos) = gguf.get("tokenizer.ggml.eos_token_id").and_then(Value::as_u64) {
            stop.push(eos as u32);
        }
        stop.sort_unstable();
        stop.dedup();
        let weights = Llama::load(&gguf)?;
        let llama = match backend {
            BackendKind::Cpu => OnDevice::Cpu(weights.clone(), Box::new(Cpu::new())),
            BackendKind::Gpu => {
                let mut gpu = Gpu::open().map_err(LlamaError::from)?;
                OnDevice::Gpu(weights.clone().to_device(&mut gpu)?, Box::new(gpu))
            }
        };
        Ok(ChatModel { llama, weights, template: ChatTemplate::from_gguf(&gguf)?, tokenizer, stop })
    }

    /// The prompt's token ids for `messages`, through the chat template.
    pub fn prompt(&self, messages: &[Message]) -> Result<Vec<u32>, EngineError> {
        let text = self.template.render(messages)?;
        Ok(self.tokenizer.encode(&text, false)?)
    }

    /// The weights on the CPU (for openings and verifiers).
    pub fn weights(&self) -> &Llama<Cpu> {
        &self.weights
    }

    pub fn stop_tokens(&self) -> &[u32] {
        &self.stop
    }

    pub fn config(&self) -> &LlamaConfig {
        match &self.llama {
            OnDevice::Cpu(m, _) => &m.config,
            OnDevice::Gpu(m, _) => &m.config,
        }
    }

    /// Logits after `tokens` (from an empty context): every position's when `all`, else the last one's.
    pub fn logits(&mut self, tokens: &[u32], all: bool, trace: &mut dyn Trace) -> Result<Vec<f32>, EngineError> {
        Ok(match &mut self.llama {
            OnDevice::Cpu(m, dev) => {
                let mut cache = m.cache(dev, tokens.len())?;
                m.forward(dev, tokens, &mut cache, all, trace)?
            }
            OnDevice::Gpu(m, dev) => {
                let mut cache = m.cache(dev.as_mut(), tokens.len())?;
                m.forward(dev.as_mut(), tokens, &mut cache, all, trace)?
            }
        })
    }

    /// Tokens after `prompt` until one of the model's stop tokens or `max_tokens`; `on_token` sees each as it
    /// comes.
    pub fn generate(
        &mut self,
        prompt: &[u32],
        max_tokens: usize,
        sampling: &Sampling,
        on_token: impl FnMut(u32) -> ControlFlow<()>,
    ) -> Result<Generated, EngineError> {
        let stop = self.stop.clone();
        self.generate_until(prompt, max_tokens, sampling, &stop, on_token)
    }

    /// [`ChatModel::generate`] with the stop tokens given (none: exactly `max_tokens`).
    pub fn generate_until(
        &mut self,
        prompt: &[u32],
        max_tokens: usize,
        sampling: &Sampling,
        stop: &[u32],
        on_token: impl FnMut(u32) -> ControlFlow<()>,
    ) -> Result<Generated, EngineError> {
        self.generate_traced(prompt, max_tokens, sampling, stop, &mut NoTrace, on_token)
    }

    /// [`ChatModel::generate_until`] with every forward pass reported to `trace` (a verifiable run's recorder).
    pub fn generate_traced(
        &mut self,
        prompt: &[u32],
        max_tokens: usize,
        sampling: &Sampling,
        stop: &[u32],
        trace: &mut dyn Trace,
        on_token: impl FnMut(u32) -> ControlFlow<()>,
    ) -> Result<Generated, EngineError> {
        let (p, n, s) = (prompt, max_tokens, sampling);
        Ok(match &mut self.llama {
            OnDevice::Cpu(m, dev) => generate::generate(m, dev, p, n, s, stop, trace, on_token)?,
            OnDevice::Gpu(m, dev) => generate::generate(m, dev.as_mut(), p, n, s, stop, trace, on_token)?,
        })
    }

    /// The assistant's reply to `messages`; `on_text` hears the text as it is generated and may cancel.
    pub fn chat(
        &mut self,
        messages: &[Message],
        max_tokens: usize,
        sampling: &Sampling,
        mut on_text: impl FnMut(&str) -> ControlFlow<()>,
    ) -> Result<(Generated, String), EngineError> {
        let prompt = self.prompt(messages)?;
        let tokenizer = self.tokenizer.clone();
        let mut stream = tokenizer.stream();
        let mut failed = None;
        let generated = self.generate(&prompt, max_tokens, sampling, |id| match stream.push(id) {
            Ok(text) if text.is_empty() => ControlFlow::Continue(()),
            Ok(text) => on_text(&text),
            Err(e) => {
                failed = Some(e);
                ControlFlow::Break(())
            }
        })?;
        if let Some(e) = failed {
            return Err(e.into());
        }
        let text = self.tokenizer.decode(&generated.tokens, true)?;
        Ok((generated, text))
    }
}
