//! Inference on the network (issue 13): the work a node is asked to do with a model it holds
//! ([`InferRequest`], inside `Work::Infer`), the result it commits to ([`InferOutput`]: the answer and the Merkle root
//! of what its run computed) and the limits on both. The proof itself (what the root covers, the challenge, the
//! opening) lives with the models; on this wire it is a seed (`ToNode::Open`) and a blob (`FromNode::Opened`).
//!
//! An output is bytes, not JSON, because an embedding batch is up to 256 × 384 floats and its hash is what the node
//! signs: `root (32) | kind (1) | …`; for embeddings `count (u32) | width (u32) | count·width f32`, for chat
//! `finish (u8) | stop token (u32, u32::MAX for none) | count (u32) | count u32 tokens`, all little-endian.

/// Most texts in one embedding request.
pub const MAX_EMBED_TEXTS: usize = 256;
/// Most tokens a text or a prompt may have, all texts of one request together, and the most tokens generated.
pub const MAX_INFER_TOKENS: usize = 2048;
/// Most stop tokens a chat request names.
pub const MAX_STOP_TOKENS: usize = 16;
/// Most models a node may say it holds, and the longest model name.
pub const MAX_HELD_MODELS: usize = 16;
pub const MAX_MODEL_NAME_BYTES: usize = 64;
/// The widest embedding a result may carry.
pub const MAX_EMBED_WIDTH: usize = 4096;

/// What a node is asked to compute with a model.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "task", rename_all = "snake_case")]
pub enum InferRequest {
    /// One embedding per text, each text as token ids (the coordinator tokenized them, so what was asked is exact).
    Embed { texts: Vec<Vec<u32>> },
    /// Tokens after `prompt` (already through the chat template) until a `stop` token or `max_tokens`, drawn by the
    /// seeded sampler (temperature 0: greedy).
    Chat { prompt: Vec<u32>, max_tokens: u32, stop: Vec<u32>, temperature: f32, top_p: f32, seed: u64 },
}

impl InferRequest {
    /// Tokens the request puts through the model (the texts, or the prompt).
    pub fn input_tokens(&self) -> usize {
        match self {
            InferRequest::Embed { texts } => texts.iter().map(Vec::len).sum(),
            InferRequest::Chat { prompt, .. } => prompt.len(),
        }
    }

    /// Output tokens the request may produce at most (0 for embeddings).
    pub fn max_output_tokens(&self) -> usize {
        match self {
            InferRequest::Embed { .. } => 0,
            InferRequest::Chat { max_tokens, .. } => *max_tokens as usize,
        }
    }

    /// The limits every request must keep, whatever its model: `Err` says which.
    pub fn check(&self) -> Result<(), String> {
        match self {
            InferRequest::Embed { texts } => {
                if texts.is_empty() || texts.len() > MAX_EMBED_TEXTS {
                    return Err(format!("an embedding request has 1..={MAX_EMBED_TEXTS} texts"));
                }
                if texts.iter().any(Vec::is_empty) {
                    return Err("a text has no tokens".into());
                }
                if self.input_tokens() > MAX_INFER_TOKENS * 8 {
                    return Err(format!("more than {} tokens in one request", MAX_INFER_TOKENS * 8));
                }
                Ok(())
            }
            InferRequest::Chat { prompt, max_tokens, stop, temperature, top_p, .. } => {
                if prompt.is_empty() || prompt.len() + *max_tokens as usize > MAX_INFER_TOKENS {
                    return Err(format!("prompt and max_tokens together are 1..={MAX_INFER_TOKENS} tokens"));
                }
                if *max_tokens == 0 {
                    return Err("max_tokens is at least 1".into());
                }
                if stop.len() > MAX_STOP_TOKENS {
                    return Err(format!("at most {MAX_STOP_TOKENS} stop tokens"));
                }
                if !((0.0..=2.0).contains(temperature) && *top_p > 0.0 && *top_p <= 1.0) {
                    return Err("temperature is in [0, 2] and top_p in (0, 1]".into());
                }
                Ok(())
            }
        }
    }
}

/// Why a chat generation ended, as an output carries it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Finish {
    /// A stop token was drawn (it is not among the tokens).
    Stop,
    /// `max_tokens` were generated.
    Length,
    /// The model's context is full.
    Context,
}

/// The answer of an inference, as a node commits to it.
#[derive(Clone, Debug, PartialEq)]
pub struct InferOutput {
    /// The Merkle root of the run's committed activations (see `neurolov_models::proof`).
    pub root: [u8; 32],
    pub answer: Answer,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    Embeddings(Vec<Vec<f32>>),
    Chat { tokens: Vec<u32>, finish: Finish, stop_token: Option<u32> },
}

/// Why bytes are not an output.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OutputError {
    #[error("the output ends early")]
    Truncated,
    #[error("the output has {0} bytes after its end")]
    Trailing(usize),
    #[error("unknown output kind {0}")]
    Kind(u8),
    #[error("unknown finish reason {0}")]
    Finish(u8),
    #[error("{0}")]
    Bound(&'static str),
}

const EMBEDDINGS: u8 = 1;
const CHAT: u8 = 2;

impl InferOutput {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.root.to_vec();
        match &self.answer {
            Answer::Embeddings(vectors) => {
                out.push(EMBEDDINGS);
                out.extend((vectors.len() as u32).to_le_bytes());
                out.extend((vectors.first().map_or(0, Vec::len) as u32).to_le_bytes());
                vectors.iter().flatten().for_each(|v| out.extend(v.to_le_bytes()));
            }
            Answer::Chat { tokens, finish, stop_token } => {
                out.push(CHAT);
                out.push(match finish {
                    Finish::Stop => 0,
                    Finish::Length => 1,
                    Finish::Context => 2,
                });
                out.extend(stop_token.unwrap_or(u32::MAX).to_le_bytes());
                out.extend((tokens.len() as u32).to_le_bytes());
                tokens.iter().for_each(|t| out.extend(t.to_le_bytes()));
            }
        }
        out
    }

    /// Reads an output, every count checked against the bytes left before anything is allocated.
    pub fn from_bytes(bytes: &[u8]) -> Result<InferOutput, OutputError> {
        let mut r = Reader(bytes);
        let root: [u8; 32] = r.take(32)?.try_into().map_err(|_| OutputError::Truncated)?;
        let answer = match r.u8()? {
            EMBEDDINGS => {
                let (count, width) = (r.u32()? as usize, r.u32()? as usize);
                if count > MAX_EMBED_TEXTS || width > MAX_EMBED_WIDTH {
                    return Err(OutputError::Bound("more embeddings, or wider ones, than a request may have"));
                }
                if r.0.len() != count * width * 4 {
                    return Err(if r.0.len() < count * width * 4 {
                        OutputError::Truncated
                    } else {
                        OutputError::Trailing(r.0.len() - count * width * 4)
                    });
                }
                let floats: Vec<f32> =
                    r.0.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
                r.0 = &[];
                Answer::Embeddings(floats.chunks(width.max(1)).map(<[f32]>::to_vec).collect())
            }
            CHAT => {
                let finish = match r.u8()? {
                    0 => Finish::Stop,
                    1 => Finish::Length,
                    2 => Finish::Context,
                    other => return Err(OutputError::Finish(other)),
                };
                let stop_token = Some(r.u32()?).filter(|&t| t != u32::MAX);
                let count = r.u32()? as usize;
                if count > MAX_INFER_TOKENS {
                    return Err(OutputError::Bound("more tokens than a request may generate"));
                }
                let tokens = (0..count).map(|_| r.u32()).collect::<Result<_, _>>()?;
                Answer::Chat { tokens, finish, stop_token }
            }
            other => return Err(OutputError::Kind(other)),
        };
        if !r.0.is_empty() {
            return Err(OutputError::Trailing(r.0.len()));
        }
        Ok(InferOutput { root, answer })
    }

    /// The largest output `request` can have with embeddings `width` wide: what a node may upload for it.
    pub fn max_bytes(request: &InferRequest, width: usize) -> u64 {
        let body = match request {
            InferRequest::Embed { texts } => 8 + texts.len() * width * 4,
            InferRequest::Chat { max_tokens, .. } => 9 + *max_tokens as usize * 4,
        };
        (33 + body) as u64
    }

    /// Output tokens it reports (generated tokens; 0 for embeddings).
    pub fn output_tokens(&self) -> usize {
        match &self.answer {
            Answer::Embeddings(_) => 0,
            Answer::Chat { tokens, .. } => tokens.len(),
        }
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], OutputError> {
        if self.0.len() < n {
            return Err(OutputError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, OutputError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, OutputError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // A panic is the failure report.

    use super::*;

    fn outputs() -> Vec<InferOutput> {
        vec![
            InferOutput { root: [7; 32], answer: Answer::Embeddings(vec![vec![0.5, -1.0, 2.0]; 3]) },
            InferOutput {
                root: [1; 32],
                answer: Answer::Chat { tokens: vec![5, 6, 7], finish: Finish::Stop, stop_token: Some(2) },
            },
            InferOutput {
                root: [0; 32],
                answer: Answer::Chat { tokens: vec![], finish: Finish::Length, stop_token: None },
            },
        ]
    }

    #[test]
    fn outputs_round_trip_and_every_truncation_is_refused() {
        for out in outputs() {
            let bytes = out.to_bytes();
            assert_eq!(InferOutput::from_bytes(&bytes).unwrap(), out);
            for cut in 0..bytes.len() {
                assert!(InferOutput::from_bytes(&bytes[..cut]).is_err(), "cut at {cut}");
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert_eq!(InferOutput::from_bytes(&longer), Err(OutputError::Trailing(1)));
        }
    }

    #[test]
    fn huge_counts_are_refused_before_allocation() {
        let mut bytes = vec![0; 32];
        bytes.push(CHAT);
        bytes.push(1);
        bytes.extend(u32::MAX.to_le_bytes());
        bytes.extend(u32::MAX.to_le_bytes());
        assert!(matches!(InferOutput::from_bytes(&bytes), Err(OutputError::Bound(_))));
        let mut bytes = vec![0; 32];
        bytes.push(EMBEDDINGS);
        bytes.extend(100_000u32.to_le_bytes());
        bytes.extend(100_000u32.to_le_bytes());
        assert!(matches!(InferOutput::from_bytes(&bytes), Err(OutputError::Bound(_))));
    }

    #[test]
    fn the_largest_output_is_what_max_bytes_says() {
        let embed = InferRequest::Embed { texts: vec![vec![1, 2]; 3] };
        assert_eq!(InferOutput::max_bytes(&embed, 3), outputs()[0].to_bytes().len() as u64);
        let chat =
            InferRequest::Chat { prompt: vec![1], max_tokens: 3, stop: vec![], temperature: 0.0, top_p: 1.0, seed: 0 };
        assert_eq!(InferOutput::max_bytes(&chat, 0), outputs()[1].to_bytes().len() as u64);
    }

    #[test]
    fn requests_outside_the_limits_are_refused() {
        let chat = |prompt: usize, max_tokens: u32, temperature: f32| InferRequest::Chat {
            prompt: vec![1; prompt],
            max_tokens,
            stop: vec![],
            temperature,
            top_p: 1.0,
            seed: 0,
        };
        assert!(chat(10, 10, 0.7).check().is_ok());
        for bad in
            [chat(0, 10, 0.0), chat(10, 0, 0.0), chat(2000, 100, 0.0), chat(10, 10, -1.0), chat(10, 10, f32::NAN)]
        {
            assert!(bad.check().is_err(), "{bad:?}");
        }
        assert!(InferRequest::Embed { texts: vec![] }.check().is_err());
        assert!(InferRequest::Embed { texts: vec![vec![]] }.check().is_err());
        assert!(InferRequest::Embed { texts: vec![vec![1]; MAX_EMBED_TEXTS + 1] }.check().is_err());
    }
}
