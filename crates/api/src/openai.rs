//! The OpenAI-compatible API (issue 13): `GET /v1/models`, `POST /v1/embeddings`, `POST /v1/chat/completions` in
//! the shapes OpenAI documents and its official clients send and read, so an unmodified client pointed at a
//! coordinator works; and the API keys (`/v1/keys`) those clients authenticate with. Neurolov adds one field to each
//! answer, `neurolov`: the job that computed it, the node that was paid and what it cost — OpenAI's clients keep
//! unknown fields.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Every refusal of the OpenAI-compatible routes: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OpenAiError {
    pub error: OpenAiErrorBody,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OpenAiErrorBody {
    pub message: String,
    /// `invalid_request_error`, `authentication_error`, `insufficient_quota`, `server_error`, …
    #[serde(rename = "type")]
    pub kind: String,
    pub param: Option<String>,
    pub code: Option<String>,
}

/// One model of `GET /v1/models`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ModelObject {
    pub id: String,
    /// Always `model`.
    pub object: String,
    pub created: u64,
    pub owned_by: String,
    /// Neurolov: `embeddings` or `chat`, and the prices per 1,000 tokens in nano-NLOV.
    pub kind: String,
    pub price_input_nano_per_1k: u64,
    pub price_output_nano_per_1k: u64,
    /// Neurolov: the longest request (tokens) it takes, and for embeddings their width.
    pub max_tokens: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<u32>,
    /// Neurolov, the marketplace's figures: the author's royalty share (basis points), active nodes serving it, and
    /// its verified use since the coordinator started.
    pub royalty_bps: u64,
    pub providers: u64,
    pub usage: ModelUsage,
}

/// A model's verified use.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ModelUsage {
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Paid to its author.
    pub royalties_nano: u64,
}

/// `GET /v1/models`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ModelList {
    /// Always `list`.
    pub object: String,
    pub data: Vec<ModelObject>,
}

/// What to embed: a string, strings, a token array or token arrays.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum EmbeddingInput {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<u32>),
    TokenLists(Vec<Vec<u32>>),
}

/// `POST /v1/embeddings`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EmbeddingRequest {
    pub model: String,
    pub input: EmbeddingInput,
    /// `float` (the default) or `base64` (little-endian f32s; the official Python client asks for it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding_format: Option<String>,
    /// Only the model's own width is served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// An embedding as floats or as base64 of little-endian f32s.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum EmbeddingVector {
    Float(Vec<f32>),
    Base64(String),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Embedding {
    /// Always `embedding`.
    pub object: String,
    pub index: usize,
    pub embedding: EmbeddingVector,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EmbeddingUsage {
    pub prompt_tokens: u64,
    pub total_tokens: u64,
}

/// What a verified answer cost and who computed it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Provenance {
    pub job: u64,
    /// The node whose answer passed its proof's check.
    pub node: Option<String>,
    /// What the request's escrow paid (provider, royalty, fee); the rest was refunded.
    pub cost_nano: u64,
    /// Always `true`: an answer is returned only after its proof was checked.
    pub verified: bool,
}

/// The reply of `POST /v1/embeddings`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EmbeddingResponse {
    /// Always `list`.
    pub object: String,
    pub data: Vec<Embedding>,
    pub model: String,
    pub usage: EmbeddingUsage,
    pub neurolov: Provenance,
}

/// A message's content: a string, or text parts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum MessageContent {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ContentPart {
    /// Only `text` is served.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub text: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ChatMessage {
    /// `system`, `developer`, `user` or `assistant`.
    pub role: String,
    #[serde(default)]
    pub content: Option<MessageContent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Stop sequences: one string or several.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// `POST /v1/chat/completions`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<ChatMessage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    /// Only 1 is served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AssistantMessage {
    /// Always `assistant`.
    pub role: String,
    pub content: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ChatChoice {
    pub index: u32,
    pub message: AssistantMessage,
    /// `stop` or `length`.
    pub finish_reason: String,
    pub logprobs: Option<serde_json::Value>,
}

/// The reply of `POST /v1/chat/completions` without `stream`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ChatResponse {
    pub id: String,
    /// Always `chat.completion`.
    pub object: String,
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChatChoice>,
    pub usage: Usage,
    pub neurolov: Provenance,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Delta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ChunkChoice {
    pub index: u32,
    pub delta: Delta,
    pub finish_reason: Option<String>,
    pub logprobs: Option<serde_json::Value>,
}

/// One server-sent event of a streamed chat completion (`data: {...}`, the last one `data: [DONE]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ChatChunk {
    pub id: String,
    /// Always `chat.completion.chunk`.
    pub object: String,
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChunkChoice>,
    /// In the last chunk, when `stream_options.include_usage` asked for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// `POST /v1/keys` (signed by the account the key spends from).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct KeyRequest {
    /// A label for people (at most 64 bytes).
    #[serde(default)]
    pub name: String,
}

/// An API key as listed: never the secret.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct KeyEntry {
    /// The key's public handle (the first 16 hex digits of its hash).
    pub id: String,
    pub name: String,
    /// The account its requests spend from.
    pub owner: String,
    pub created_ms: u64,
    pub revoked_ms: Option<u64>,
}

/// The reply of `POST /v1/keys`: the secret, shown this once (the coordinator keeps only its hash).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct KeyCreated {
    pub key: String,
    pub entry: KeyEntry,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // A panic is the failure report.

    use super::*;

    /// The request shapes OpenAI documents, as its clients send them.
    #[test]
    fn openai_request_shapes_parse() {
        let e: EmbeddingRequest =
            serde_json::from_str(r#"{"model":"m","input":["a","b"],"encoding_format":"base64"}"#).unwrap();
        assert_eq!(e.input, EmbeddingInput::Texts(vec!["a".into(), "b".into()]));
        let e: EmbeddingRequest = serde_json::from_str(r#"{"model":"m","input":[[1,2],[3]]}"#).unwrap();
        assert_eq!(e.input, EmbeddingInput::TokenLists(vec![vec![1, 2], vec![3]]));
        let e: EmbeddingRequest = serde_json::from_str(r#"{"model":"m","input":[5,6]}"#).unwrap();
        assert_eq!(e.input, EmbeddingInput::Tokens(vec![5, 6]));
        let c: ChatRequest = serde_json::from_str(
            r#"{"model":"m","messages":[{"role":"system","content":"be brief"},
                {"role":"user","content":[{"type":"text","text":"hi"}]}],
                "stop":"\n","stream":true,"stream_options":{"include_usage":true},"max_completion_tokens":5}"#,
        )
        .unwrap();
        assert_eq!(c.stop, Some(Stop::One("\n".into())));
        assert_eq!(
            c.messages[1].content,
            Some(MessageContent::Parts(vec![ContentPart { kind: "text".into(), text: Some("hi".into()) }]))
        );
        assert_eq!((c.stream, c.max_completion_tokens), (Some(true), Some(5)));
    }
}

/// One file of a published model: its path inside the model's directory, size, and blake3 (hex) — its blob's name
/// (`GET /v1/blobs/{blake3}`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ModelFile {
    pub name: String,
    pub size: u64,
    pub blake3: String,
}

/// `GET /v1/models/{name}/files`: what a provider fetches to serve a model (a browser tab has no package cache):
/// every file by its path in the model's directory, size and blake3 — each served at `GET /v1/blobs/{blake3}`, and
/// checked against this hash before it runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ModelFiles {
    pub model: String,
    pub files: Vec<ModelFile>,
}

/// `POST /v1/models` (signed by the author, whose account is paid the royalty): a model for the marketplace. Its
/// files are uploaded as blobs first; the coordinator loads it (it must be an architecture the engine runs and
/// verifies: a BERT sentence encoder or a Llama GGUF) before it is listed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ModelManifest {
    /// `[A-Za-z0-9._-]`, at most 64 bytes; unique on the coordinator.
    pub name: String,
    pub version: String,
    /// `embeddings` or `chat`.
    pub kind: String,
    pub license: String,
    pub files: Vec<ModelFile>,
    pub price_input_nano_per_1k: u64,
    #[serde(default)]
    pub price_output_nano_per_1k: u64,
    /// The author's share of each verified request's price (basis points, at most 5,000).
    pub royalty_bps: u64,
}

/// `GET /v1/models/{name}`: a published model's manifest, who signed it and when (the signed request's headers:
/// anyone can check the author's signature over the manifest's bytes).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PublishedModel {
    pub manifest: ModelManifest,
    pub author: String,
    pub published_ms: u64,
    /// The manifest exactly as signed (its blake3 is what the signature covers), and the signature (base58).
    pub manifest_json: String,
    pub signature: String,
}
