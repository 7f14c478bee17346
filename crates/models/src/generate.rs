//! Text generation with the decoder: the chat template (the GGUF's own Jinja template, rendered by `minijinja`),
//! greedy and seeded sampling (temperature, top-p) with a generator whose sequence is fixed by this file — the
//! same seed gives the same tokens wherever the logits are the same, which verification relies on — and the loop
//! that stops at a stop token, at `max_tokens`, or when the context is full.

use std::ops::ControlFlow;

use crate::device::Device;
use crate::gguf::{Gguf, Value};
use crate::llama::{Llama, LlamaError, Trace};

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("chat template: {0}")]
    Template(String),
    #[error(transparent)]
    Model(#[from] LlamaError),
    #[error("sampling: {0}")]
    Sampling(String),
}

/// Most tokens one request may generate, and most tokens one context may hold: bound the KV cache's memory
/// (SmolLM2: 30 layers × 2 × 192 floats = 46 KiB per token, 94 MiB at this bound).
pub const MAX_NEW_TOKENS: usize = 2048;
pub const MAX_CONTEXT_TOKENS: usize = 2048;

/// One chat message.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

/// A model's chat template (Jinja, as `tokenizer.chat_template` carries it) and the strings it may use.
#[derive(Clone, Debug)]
pub struct ChatTemplate {
    pub source: String,
    pub bos_token: String,
    pub eos_token: String,
}

impl ChatTemplate {
    /// The template a GGUF file carries.
    pub fn from_gguf(gguf: &Gguf<'_>) -> Result<ChatTemplate, GenerateError> {
        let source = gguf
            .get("tokenizer.chat_template")
            .and_then(Value::as_str)
            .ok_or_else(|| GenerateError::Template("the model has no tokenizer.chat_template".into()))?;
        let token = |key: &str| -> String {
            let id = gguf.get(key).and_then(Value::as_u64);
            let tokens = gguf.get("tokenizer.ggml.tokens").and_then(Value::as_array).unwrap_or_default();
            id.and_then(|i| tokens.get(i as usize)).and_then(Value::as_str).unwrap_or_default().to_string()
        };
        Ok(ChatTemplate {
            source: source.to_string(),
            bos_token: token("tokenizer.ggml.bos_token_id"),
            eos_token: token("tokenizer.ggml.eos_token_id"),
        })
    }

    /// The conversation `messages` as the model's prompt, ending with the assistant's turn opened
    /// (`add_generation_prompt`).
    pub fn render(&self, messages: &[Message]) -> Result<String, GenerateError> {
        let mut env = minijinja::Environment::new();
        env.add_template("chat", &self.source).map_err(|e| GenerateError::Template(e.to_string()))?;
        let context = minijinja::context! {
            messages => messages,
            add_generation_prompt => true,
            bos_token => &self.bos_token,
            eos_token => &self.eos_token,
        };
        let tmpl = env.get_template("chat").map_err(|e| GenerateError::Template(e.to_string()))?;
        tmpl.render(context).map_err(|e| GenerateError::Template(e.to_string()))
    }
}

/// How the next token is chosen.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampling {
    /// 0 is greedy (the highest logit; the lowest id among equals); above 0 the logits are divided by it.
    pub temperature: f32,
    /// Only the most likely tokens whose probabilities add up to this are kept (1 keeps all).
    pub top_p: f32,
    pub seed: u64,
}

impl Sampling {
    pub const GREEDY: Sampling = Sampling { temperature: 0.0, top_p: 1.0, seed: 0 };

    pub fn check(&self) -> Result<(), GenerateError> {
        if !((0.0..=100.0).contains(&self.temperature) && self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(GenerateError::Sampling(format!(
                "temperature must be in [0, 100] and top_p in (0, 1], got {} and {}",
                self.temperature, self.top_p
            )));
        }
        Ok(())
    }
}

/// SplitMix64 (Steele, Lea, Flood 2014): a fixed, tiny generator, so a seed means the same draws in every
/// implementation (native, browser) and every version.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1) from the top 53 bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The next token from `logits` (one draw from `rng` unless greedy).
pub fn sample(logits: &[f32], sampling: &Sampling, rng: &mut SplitMix64) -> u32 {
    let argmax = logits
        .iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, &v)| if v > best.1 { (i, v) } else { best })
        .0;
    if sampling.temperature == 0.0 {
        return argmax as u32;
    }
    // Probabilities in f64, most likely first (ties by id), cut at top_p.
    let max = f64::from(logits[argmax]);
    let t = f64::from(sampling.temperature);
    let mut probs: Vec<(u32, f64)> =
        logits.iter().enumerate().map(|(i, &v)| (i as u32, ((f64::from(v) - max) / t).exp())).collect();
    probs.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let total: f64 = probs.iter().map(|p| p.1).sum();
    let mut kept = 0.0;
    let mut keep = probs.len();
    for (i, p) in probs.iter().enumerate() {
        kept += p.1 / total;
        if kept >= f64::from(sampling.top_p) {
            keep = i + 1;
            break;
        }
    }
    let kept_total: f64 = probs[..keep].iter().map(|p| p.1).sum();
    let mut u = rng.next_f64() * kept_total;
    for &(id, p) in &probs[..keep] {
        if u < p {
            return id;
        }
        u -= p;
    }
    probs[keep - 1].0
}

/// Why generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// A stop token came (it is not part of the output).
    Stop,
    /// `max_tokens` were generated.
    Length,
    /// The context has no room for another token.
    Context,
    /// The caller asked to stop.
    Cancelled,
}

/// What one generation produced.
#[derive(Clone, Debug, PartialEq)]
pub struct Generated {
    pub tokens: Vec<u32>,
    pub finish: FinishReason,
    pub prompt_tokens: usize,
    /// The stop token drawn when `finish` is `Stop` (it is not part of `tokens`).
    pub stop_token: Option<u32>,
}

/// Generates after `prompt` until a `stop` token, `max_tokens`, or a full context; `on_token` sees each token as
/// it comes and may cancel; `trace` sees every forward pass (what a verifiable run commits to).
///
/// Positions run through the model: the prompt, then each emitted token except the last one when generation ends
/// for length, context or cancel (nothing will read its logits). The token at index i was drawn from the logits of
/// position `prompt.len() − 1 + i`, and a stop token from those after the last emitted one.
#[allow(clippy::too_many_arguments)] // The request's parts, each needed.
pub fn generate<D: Device>(
    model: &Llama<D>,
    dev: &mut D,
    prompt: &[u32],
    max_tokens: usize,
    sampling: &Sampling,
    stop: &[u32],
    trace: &mut dyn Trace,
    mut on_token: impl FnMut(u32) -> ControlFlow<()>,
) -> Result<Generated, GenerateError> {
    sampling.check()?;
    let max_tokens = max_tokens.min(MAX_NEW_TOKENS);
    let mut cache = model.cache(dev, MAX_CONTEXT_TOKENS)?;
    let mut rng = SplitMix64::new(sampling.seed);
    let mut logits = model.forward(dev, prompt, &mut cache, false, trace)?;
    let mut tokens = Vec::new();
    let mut stop_token = None;
    let finish = loop {
        if tokens.len() >= max_tokens {
            break FinishReason::Length;
        }
        let next = sample(&logits, sampling, &mut rng);
        if stop.contains(&next) {
            stop_token = Some(next);
            break FinishReason::Stop;
        }
        tokens.push(next);
        if on_token(next).is_break() {
            break FinishReason::Cancelled;
        }
        if tokens.len() >= max_tokens {
            break FinishReason::Length;
        }
        if cache.len() >= cache.capacity() {
            break FinishReason::Context;
        }
        logits = model.forward(dev, &[next], &mut cache, false, trace)?;
    };
    Ok(Generated { tokens, finish, prompt_tokens: prompt.len(), stop_token })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_matches_its_published_sequence() {
        // The reference implementation's first outputs for seed 1234567 (Vigna's splitmix64.c).
        let mut r = SplitMix64::new(1_234_567);
        let got: Vec<u64> = (0..3).map(|_| r.next_u64()).collect();
        assert_eq!(got, [6_457_827_717_110_365_317, 3_203_168_211_198_807_973, 9_817_491_932_198_370_423]);
    }

    #[test]
    fn sampling_is_greedy_at_zero_seeded_otherwise_and_cut_by_top_p() {
        let logits = [1.0, 3.0, 3.0, 2.0];
        assert_eq!(sample(&logits, &Sampling::GREEDY, &mut SplitMix64::new(0)), 1, "ties go to the lowest id");
        let s = Sampling { temperature: 1.0, top_p: 1.0, seed: 7 };
        let draw = |seed| {
            let mut rng = SplitMix64::new(seed);
            (0..64).map(|_| sample(&logits, &s, &mut rng)).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7), "same seed, same tokens");
        assert_ne!(draw(7), draw(8));
        assert!(draw(7).contains(&0), "temperature 1 reaches an unlikely token in 64 draws");
        // top_p 0.5: ids 1 and 2 hold 2·e³/(e+2e³+e²) ≈ 0.84 together; id 1 alone ≈ 0.42 < 0.5, so both stay.
        let cut = Sampling { top_p: 0.5, ..s };
        let mut rng = SplitMix64::new(3);
        let drawn: Vec<u32> = (0..200).map(|_| sample(&logits, &cut, &mut rng)).collect();
        assert!(drawn.iter().all(|&t| t == 1 || t == 2) && drawn.contains(&1) && drawn.contains(&2), "{drawn:?}");
        assert!(Sampling { top_p: 0.0, ..s }.check().is_err());
        assert!(Sampling { temperature: -1.0, ..s }.check().is_err());
    }
}
