//! Text to token ids and back, with exactly the reference's ids: the Hugging Face `tokenizers` crate runs both
//! models' tokenizers. MiniLM's comes as its `tokenizer.json` (WordPiece, lower-casing, accents stripped);
//! SmolLM2's is rebuilt from the GGUF metadata (byte-level BPE: vocabulary, merges, control tokens, and the
//! pre-tokenizer llama.cpp calls "smollm": digits one by one, then GPT-2's split) into the same `tokenizer.json`
//! shape Hugging Face ships for it, so one engine tokenizes both.

use serde_json::{Value as Json, json};
use tokenizers::{Tokenizer, TruncationParams};

use crate::gguf::{Gguf, Value};

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("tokenizer: {0}")]
    Load(String),
    #[error("gguf tokenizer: {0}")]
    Gguf(String),
    #[error("tokenizing failed: {0}")]
    Encode(String),
}

/// GGUF token types (llama.cpp's `llama_token_type`): control tokens are matched whole, before the BPE.
const TOKEN_TYPE_CONTROL: u64 = 3;
const TOKEN_TYPE_USER_DEFINED: u64 = 4;

/// A tokenizer and the ids the models treat specially.
#[derive(Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TextTokenizer({} tokens)", self.inner.get_vocab_size(true))
    }
}

impl TextTokenizer {
    /// A `tokenizer.json`, truncating to `max_tokens` (special tokens included).
    pub fn from_json(json: &str, max_tokens: usize) -> Result<TextTokenizer, TokenizerError> {
        let mut inner: Tokenizer = json.parse().map_err(|e| TokenizerError::Load(format!("{e}")))?;
        let truncation = TruncationParams { max_length: max_tokens, ..TruncationParams::default() };
        inner.with_truncation(Some(truncation)).map_err(|e| TokenizerError::Load(format!("{e}")))?;
        inner.with_padding(None);
        Ok(TextTokenizer { inner })
    }

    /// The byte-level BPE a GGUF file describes (`tokenizer.ggml.*`).
    pub fn from_gguf(gguf: &Gguf<'_>) -> Result<TextTokenizer, TokenizerError> {
        let inner: Tokenizer =
            gguf_tokenizer_json(gguf)?.to_string().parse().map_err(|e| TokenizerError::Gguf(format!("{e}")))?;
        Ok(TextTokenizer { inner })
    }

    /// The ids of `text`; `special` adds the model's own markers (MiniLM's [CLS] … [SEP]).
    pub fn encode(&self, text: &str, special: bool) -> Result<Vec<u32>, TokenizerError> {
        let encoding = self.inner.encode_fast(text, special).map_err(|e| TokenizerError::Encode(format!("{e}")))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// The text of `ids`, control tokens left out when `skip_special`.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String, TokenizerError> {
        self.inner.decode(ids, skip_special).map_err(|e| TokenizerError::Encode(format!("{e}")))
    }

    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// A decoder that turns ids into text as they come, holding back bytes of an unfinished character.
    pub fn stream(&self) -> TokenStream<'_> {
        TokenStream { tokenizer: self, ids: Vec::new(), emitted: 0 }
    }
}

/// Incremental decoding for streaming output: text is emitted only once it no longer ends in a partial UTF-8
/// sequence (a byte-level BPE splits characters such as emoji across tokens).
pub struct TokenStream<'a> {
    tokenizer: &'a TextTokenizer,
    ids: Vec<u32>,
    /// Characters of the decoded text already handed out.
    emitted: usize,
}

impl TokenStream<'_> {
    /// The new text `id` completes, if any.
    pub fn push(&mut self, id: u32) -> Result<String, TokenizerError> {
        self.ids.push(id);
        let text = self.tokenizer.decode(&self.ids, true)?;
        if text.ends_with('\u{FFFD}') {
            return Ok(String::new());
        }
        let new: String = text.chars().skip(self.emitted).collect();
        self.emitted += new.chars().count();
        Ok(new)
    }
}

/// Hugging Face's `tokenizer.json` for the BPE in `gguf`'s metadata.
fn gguf_tokenizer_json(gguf: &Gguf<'_>) -> Result<Json, TokenizerError> {
    let err = |m: &str| TokenizerError::Gguf(m.to_string());
    let model =
        gguf.get("tokenizer.ggml.model").and_then(Value::as_str).ok_or_else(|| err("no tokenizer.ggml.model"))?;
    if model != "gpt2" {
        return Err(err(&format!("tokenizer model {model:?} is not supported (gpt2 byte-level BPE is)")));
    }
    let pre = gguf.get("tokenizer.ggml.pre").and_then(Value::as_str).unwrap_or("default");
    let split = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
    let pre_tokenizer = match pre {
        "smollm" => {
            json!({"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": true}, split]})
        }
        "gpt2" | "default" => split,
        other => return Err(err(&format!("pre-tokenizer {other:?} is not supported (smollm, gpt2 are)"))),
    };
    let strings = |key: &str| -> Result<Vec<&str>, TokenizerError> {
        let array = gguf.get(key).and_then(Value::as_array).ok_or_else(|| err(&format!("no {key}")))?;
        array.iter().map(|v| v.as_str().ok_or_else(|| err(&format!("{key} holds a non-string")))).collect()
    };
    let tokens = strings("tokenizer.ggml.tokens")?;
    let merges = strings("tokenizer.ggml.merges")?;
    let types = gguf.get("tokenizer.ggml.token_type").and_then(Value::as_array).unwrap_or_default();
    let vocab: serde_json::Map<String, Json> =
        tokens.iter().enumerate().map(|(i, t)| (t.to_string(), json!(i))).collect();
    let added: Vec<Json> = types
        .iter()
        .enumerate()
        .filter(|(_, t)| matches!(t.as_u64(), Some(TOKEN_TYPE_CONTROL | TOKEN_TYPE_USER_DEFINED)))
        .filter_map(|(i, _)| tokens.get(i).map(|t| (i, t)))
        .map(|(i, t)| {
            json!({"id": i, "content": t, "single_word": false, "lstrip": false, "rstrip": false,
                   "normalized": false, "special": true})
        })
        .collect();
    Ok(json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added, "normalizer": null,
        "pre_tokenizer": pre_tokenizer, "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab, "merges": merges}
    }))
}
