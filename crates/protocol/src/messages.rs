//! The node protocol, version 3: what a coordinator and a provider node (native or browser) say to each other over
//! one WebSocket. `docs/PROTOCOL.md` describes it message by message for people writing their own node.
//!
//! Coordinator → node messages ([`ToNode`]) are plain JSON text frames. Node → coordinator messages
//! ([`FromNode`]) travel inside a signed [`crate::Envelope`] and carry the session nonce and a sequence number, so
//! a message from another session, or an old one replayed, is refused. Bulk data never rides in messages: inputs
//! and large results are content-addressed blobs (`PUT`/`GET /v1/blobs/{hash}`), or inputs are generated from a
//! seed. Version 2 batches for throughput: several tasks per [`ToNode::Tasks`] frame, and several small results
//! (commitment and bytes in one signed [`FromNode::Deliver`]) and give-backs per node frame. Version 3 names a
//! block of a seeded matrix by its place in the seed's stream ([`DataRef::Seeded`]'s `offset`).

use crate::identity::Id;

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u32 = 3;
/// The first version whose nodes read [`DataRef::Seeded`]'s `offset` (a row block of a seeded matrix). Older nodes
/// would ignore the field and compute the wrong block: they get such inputs as data instead.
pub const SEEDED_OFFSET_VERSION: u32 = 3;
/// The oldest version a coordinator still serves: a version-1 node gets one `task` frame per task and delivers
/// with `commit`, blob upload and `result`.
pub const MIN_PROTOCOL_VERSION: u32 = 1;
/// Largest result a node may deliver inside a [`FromNode::Deliver`] frame instead of uploading it as a blob. Below
/// it the upload (a signed HTTP request, a file) costs more than the bytes.
pub const INLINE_RESULT_BYTES: usize = 8 * 1024;
/// Largest task input that travels inside its task frame ([`DataRef::Inline`], version 2) instead of as a blob the
/// node fetches.
pub const INLINE_INPUT_BYTES: usize = 8 * 1024;
/// Most tasks in one [`ToNode::Tasks`] frame, and most results plus give-backs in one [`FromNode::Deliver`].
pub const MAX_BATCH_ITEMS: usize = 64;
/// Largest coordinator → node text frame.
pub const MAX_FRAME_BYTES: usize = 256 * 1024;
/// Most tasks a node may declare it runs at once.
pub const MAX_SLOTS: u32 = 64;
/// Longest free-text field (reasons, adapter names).
pub const MAX_TEXT_BYTES: usize = 1024;
/// Most feature names a node may claim, and the longest one: the coordinator keeps and shows them.
pub const MAX_CLAIMED_FEATURES: usize = 16;
pub const MAX_FEATURE_NAME_BYTES: usize = 64;
/// Longest session nonce or result hash a node may echo.
pub const MAX_TOKEN_BYTES: usize = 128;
/// Largest blob (a task's input or result) a coordinator stores or a node fetches.
pub const MAX_BLOB_BYTES: u64 = 256 << 20;

/// How a kernel binding is accessed, as its WGSL declares it: the one word for it on the wire (`uniform`, `read`,
/// `read_write`), in the kernels, the core and the coordinator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    /// `var<uniform>`.
    Uniform,
    /// `var<storage, read>`.
    Read,
    /// `var<storage, read_write>`: the task's result is these buffers, in binding order.
    ReadWrite,
}

/// An optional WebGPU feature a kernel may need and an adapter may have. On the wire a feature is its WebGPU name
/// (a string, so a node may claim features this coordinator does not know yet).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Feature {
    ShaderF16,
    Subgroups,
}

impl Feature {
    /// Every feature, in the order of the scheduler's feature bits.
    pub const ALL: [Feature; 2] = [Feature::ShaderF16, Feature::Subgroups];

    /// The WebGPU name.
    pub fn name(self) -> &'static str {
        match self {
            Feature::ShaderF16 => "shader-f16",
            Feature::Subgroups => "subgroups",
        }
    }

    pub fn parse(name: &str) -> Option<Feature> {
        Feature::ALL.into_iter().find(|f| f.name() == name)
    }
}

/// What kind of provider a node is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeKind {
    Native,
    Browser,
}

/// Hardware as the node describes it: shown to people as a claim, never scored (attestation measures instead).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClaimedHardware {
    pub adapter: String,
    pub backend: String,
    pub software: bool,
    /// The largest task (operands and result together, in bytes) the node takes; 0 when it does not say.
    pub memory_bytes: u64,
    /// Optional WGSL features the node's adapter has (`shader-f16`, `subgroups`).
    #[serde(default)]
    pub features: Vec<String>,
    /// Whether the node runs clients' WGSL kernels (`Work::Wgsl`): it has a GPU adapter and a way to run a stranger's
    /// kernel (a native node's sandbox worker, a browser's WebGPU). WGSL tasks — jobs, replicas, canaries — go only
    /// to nodes that claim it. Absent (an older node) means `false`: such a node gets matmul tasks only, because a
    /// node that cannot run WGSL would fail every WGSL task it took until the job failed.
    #[serde(default)]
    pub wgsl: bool,
    /// Models the node holds and runs (`Work::Infer`), by name: inference tasks for a model go only to nodes that
    /// hold it. Absent (an older node) means none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<String>,
    /// Whether the node fetches a listed model it does not hold when it is given a task for it (from the
    /// coordinator, by hash, checked): inference tasks go to such a node when no node holding the model can take
    /// them. Absent (an older node) means `false`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fetches_models: bool,
}

/// Where a task's input comes from.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "from", rename_all = "snake_case")]
pub enum DataRef {
    /// A blob, by its blake3 hash (hex), fetched with `GET /v1/blobs/{hash}`: little-endian f32s.
    Blob { hash: String },
    /// `len` f32s from [`seeded_f32`] with this seed, after skipping `offset` of them (version 3: a row block of a
    /// seeded matrix, which then needs no blob; absent means 0).
    Seeded {
        seed: u64,
        len: u64,
        #[serde(default, skip_serializing_if = "is_zero")]
        offset: u64,
    },
    /// Version 2: the bytes themselves, standard base64 (at most [`INLINE_INPUT_BYTES`] decoded).
    Inline { data: String },
}

impl DataRef {
    pub fn inline(bytes: &[u8]) -> DataRef {
        use base64::Engine;
        DataRef::Inline { data: base64::engine::general_purpose::STANDARD.encode(bytes) }
    }

    /// The bytes of an inline reference (`None` for the others, or for data that is not base64 of at most
    /// [`INLINE_INPUT_BYTES`]).
    pub fn inline_bytes(&self) -> Option<Vec<u8>> {
        use base64::Engine;
        let DataRef::Inline { data } = self else { return None };
        if data.len() > INLINE_INPUT_BYTES.div_ceil(3) * 4 {
            return None;
        }
        base64::engine::general_purpose::STANDARD.decode(data).ok()
    }
}

/// The work of one task.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Work {
    /// C[m×n] = A[m×k]·B[k×n], f32 row-major; the result is C's little-endian bytes.
    Matmul { m: u32, n: u32, k: u32, a: DataRef, b: DataRef },
    /// A client's WGSL kernel; the result is the concatenation of its read-write buffers in binding order.
    Wgsl { source: DataRef, entry_point: String, buffers: Vec<WgslBuffer>, dispatch: [u32; 3] },
    /// An inference with a model the node holds; the result is an [`crate::inference::InferOutput`]'s bytes, and
    /// the node keeps what its root covers until the coordinator asks it to open it ([`ToNode::Open`]).
    Infer { model: String, request: crate::inference::InferRequest },
}

/// One buffer of a WGSL task.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WgslBuffer {
    pub binding: u32,
    pub access: Access,
    pub size_bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<DataRef>,
}

/// A task offered to a node.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Task {
    pub task_id: u64,
    /// Incremented each time the task is handed out again.
    pub attempt: u32,
    /// The node must have committed by then (coordinator clock, ms since the Unix epoch).
    pub deadline_ms: u64,
    pub work: Work,
}

/// Machine-readable reasons for [`ToNode::Error`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    Malformed,
    TooLarge,
    BadSignature,
    WrongSession,
    Replayed,
    UnsupportedVersion,
    NotRegistered,
    UnknownTask,
    CommitmentMismatch,
    RateLimited,
}

/// Coordinator → node.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToNode {
    /// First frame of every connection: sign `nonce` into a [`FromNode::Register`].
    Challenge {
        version: u32,
        nonce: String,
    },
    Registered {
        node: Id,
        heartbeat_interval_ms: u64,
    },
    Task(Task),
    /// Several tasks at once (version 2): what the coordinator hands one node in one event.
    Tasks {
        tasks: Vec<Task>,
    },
    /// Stop working on this attempt (it was reassigned or the job ended).
    Cancel {
        task_id: u64,
        attempt: u32,
    },
    /// Open the proof of a delivered inference result: the challenge is drawn from `seed` (see
    /// `neurolov_models::proof`), now that the node has committed to its root. Answered with [`FromNode::Opened`].
    Open {
        task_id: u64,
        attempt: u32,
        seed: u64,
    },
    /// The outcome of a result the node delivered.
    Verdict {
        task_id: u64,
        attempt: u32,
        accepted: bool,
        reason: String,
    },
    Error {
        code: ErrorCode,
        message: String,
    },
}

/// Node → coordinator, always sealed in an [`crate::Envelope`] signed by the node's key.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FromNode {
    /// Answers the challenge; `session` is its nonce and `seq` starts at 0.
    Register {
        version: u32,
        session: String,
        seq: u64,
        operator: Id,
        kind: NodeKind,
        claimed: ClaimedHardware,
        price_nano_per_gflop: u64,
        slots: u32,
        /// The operator's signature over this node's id (domain [`crate::identity::DELEGATION_DOMAIN`]): proof that
        /// the operator accepts this node's work and its penalties. Not needed when the node is its own operator.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        operator_delegation: Option<crate::identity::Signature>,
    },
    Heartbeat {
        session: String,
        seq: u64,
    },
    /// Step (1) of proof of computation: the node binds itself to its result before anyone sees it.
    Commit {
        session: String,
        seq: u64,
        task_id: u64,
        attempt: u32,
        result_hash: String,
    },
    /// The committed result is uploaded as a blob under `result_hash`.
    Result {
        session: String,
        seq: u64,
        task_id: u64,
        attempt: u32,
        result_hash: String,
    },
    /// The node cannot complete this attempt.
    Failed {
        session: String,
        seq: u64,
        task_id: u64,
        attempt: u32,
        reason: String,
    },
    /// Version 2: several small results and give-backs in one signed frame. Each result is its own commitment (the
    /// signature covers the hash and the bytes), so it needs no `commit` before it and no upload.
    Deliver {
        session: String,
        seq: u64,
        #[serde(default)]
        results: Vec<InlineResult>,
        #[serde(default)]
        failed: Vec<GiveBack>,
    },
    /// The opening asked for by [`ToNode::Open`], uploaded as the blob `opening_hash`.
    Opened {
        session: String,
        seq: u64,
        task_id: u64,
        attempt: u32,
        opening_hash: String,
    },
    /// Graceful shutdown: unfinished tasks go back to the queue.
    Goodbye {
        session: String,
        seq: u64,
    },
}

/// A result delivered inside a [`FromNode::Deliver`] frame.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InlineResult {
    pub task_id: u64,
    pub attempt: u32,
    /// blake3 (hex) of the decoded bytes: what the node stands by.
    pub result_hash: String,
    /// The result's bytes, standard base64 (at most [`INLINE_RESULT_BYTES`] decoded).
    pub data: String,
}

impl InlineResult {
    pub fn new(task_id: u64, attempt: u32, bytes: &[u8]) -> InlineResult {
        use base64::Engine;
        InlineResult {
            task_id,
            attempt,
            result_hash: blake3::hash(bytes).to_hex().to_string(),
            data: base64::engine::general_purpose::STANDARD.encode(bytes),
        }
    }

    /// The bytes, if `data` is base64 of at most [`INLINE_RESULT_BYTES`] that hash to `result_hash`.
    pub fn bytes(&self) -> Result<Vec<u8>, String> {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD.decode(&self.data).map_err(|e| format!("data: {e}"))?;
        if bytes.len() > INLINE_RESULT_BYTES {
            return Err(format!("an inline result is at most {INLINE_RESULT_BYTES} bytes"));
        }
        if blake3::hash(&bytes).to_hex().as_str() != self.result_hash {
            return Err("data does not hash to result_hash".into());
        }
        Ok(bytes)
    }
}

/// An attempt a node gives back inside a [`FromNode::Deliver`] frame (as [`FromNode::Failed`] would).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GiveBack {
    pub task_id: u64,
    pub attempt: u32,
    pub reason: String,
}

impl FromNode {
    /// The result hash this message commits to for `task`'s `attempt`: a `commit`, or a result of a `deliver`. Fraud
    /// evidence is the signed message; this reads it back.
    pub fn commitment(&self, task: u64, attempt: u32) -> Option<&str> {
        match self {
            FromNode::Commit { task_id, attempt: a, result_hash, .. } if (*task_id, *a) == (task, attempt) => {
                Some(result_hash)
            }
            FromNode::Deliver { results, .. } => {
                results.iter().find(|r| (r.task_id, r.attempt) == (task, attempt)).map(|r| r.result_hash.as_str())
            }
            _ => None,
        }
    }

    /// The bytes of an inline result this message carries for `task`'s `attempt`.
    pub fn inline_result(&self, task: u64, attempt: u32) -> Option<Vec<u8>> {
        let FromNode::Deliver { results, .. } = self else { return None };
        results.iter().find(|r| (r.task_id, r.attempt) == (task, attempt)).and_then(|r| r.bytes().ok())
    }

    /// Checks every field a coordinator keeps or shows against its limit: a register frame can carry 60 KiB of
    /// adapter name, which would be cloned on every `GET /v1/nodes`. `Err` names the field.
    pub fn check_limits(&self) -> Result<(), String> {
        let text = |name: &str, value: &str, limit: usize| {
            if value.len() > limit {
                Err(format!("{name} is {} bytes, the limit is {limit}", value.len()))
            } else {
                Ok(())
            }
        };
        let (session, _) = self.session_seq();
        text("session", session, MAX_TOKEN_BYTES)?;
        match self {
            FromNode::Register { claimed, .. } => {
                text("claimed.adapter", &claimed.adapter, MAX_TEXT_BYTES)?;
                text("claimed.backend", &claimed.backend, MAX_TEXT_BYTES)?;
                if claimed.features.len() > MAX_CLAIMED_FEATURES {
                    return Err(format!("more than {MAX_CLAIMED_FEATURES} claimed features"));
                }
                claimed.features.iter().try_for_each(|f| text("a claimed feature", f, MAX_FEATURE_NAME_BYTES))?;
                if claimed.models.len() > crate::inference::MAX_HELD_MODELS {
                    return Err(format!("more than {} held models", crate::inference::MAX_HELD_MODELS));
                }
                claimed.models.iter().try_for_each(|m| text("a held model", m, crate::inference::MAX_MODEL_NAME_BYTES))
            }
            FromNode::Commit { result_hash, .. } | FromNode::Result { result_hash, .. } => {
                text("result_hash", result_hash, MAX_TOKEN_BYTES)
            }
            FromNode::Opened { opening_hash, .. } => text("opening_hash", opening_hash, MAX_TOKEN_BYTES),
            FromNode::Failed { reason, .. } => text("reason", reason, MAX_TEXT_BYTES),
            FromNode::Deliver { results, failed, .. } => {
                if results.len() + failed.len() > MAX_BATCH_ITEMS {
                    return Err(format!("more than {MAX_BATCH_ITEMS} results and give-backs in one frame"));
                }
                // Base64 is 4 characters per 3 bytes.
                let data_limit = INLINE_RESULT_BYTES.div_ceil(3) * 4;
                results.iter().try_for_each(|r| {
                    text("result_hash", &r.result_hash, MAX_TOKEN_BYTES)?;
                    text("data", &r.data, data_limit)
                })?;
                failed.iter().try_for_each(|f| text("reason", &f.reason, MAX_TEXT_BYTES))
            }
            FromNode::Heartbeat { .. } | FromNode::Goodbye { .. } => Ok(()),
        }
    }

    /// The session nonce and sequence number every node message carries.
    pub fn session_seq(&self) -> (&str, u64) {
        match self {
            FromNode::Register { session, seq, .. }
            | FromNode::Heartbeat { session, seq }
            | FromNode::Commit { session, seq, .. }
            | FromNode::Result { session, seq, .. }
            | FromNode::Failed { session, seq, .. }
            | FromNode::Deliver { session, seq, .. }
            | FromNode::Opened { session, seq, .. }
            | FromNode::Goodbye { session, seq } => (session, *seq),
        }
    }
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// The seeded input generator every node and browser implements identically: Mulberry32 (32-bit arithmetic only,
/// so JavaScript computes it exactly with `Math.imul`), state = low 32 bits of `seed` XOR high 32 bits; each output
/// x gives the f32 ((x >> 8) / 2²⁴)·2 − 1, exactly representable, in [-1, 1).
pub fn seeded_f32(seed: u64, len: usize) -> Vec<f32> {
    seeded_f32_at(seed, 0, len)
}

/// Values `offset..offset + len` of [`seeded_f32`]'s stream, without generating the ones before: the state advances
/// by a constant per value, so value i starts from state₀ + i·0x6D2B79F5 (mod 2³²).
pub fn seeded_f32_at(seed: u64, offset: u64, len: usize) -> Vec<f32> {
    let start = ((seed as u32) ^ ((seed >> 32) as u32)).wrapping_add((offset as u32).wrapping_mul(0x6D2B_79F5));
    let mut state = start;
    (0..len)
        .map(|_| {
            state = state.wrapping_add(0x6D2B_79F5);
            let mut t = state;
            t = (t ^ (t >> 15)).wrapping_mul(t | 1);
            t ^= t.wrapping_add((t ^ (t >> 7)).wrapping_mul(t | 61));
            let x = t ^ (t >> 14);
            ((x >> 8) as f32) / 16_777_216.0 * 2.0 - 1.0
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // A panic is the failure report.

    use super::*;

    #[test]
    fn a_seeded_block_is_those_values_of_the_whole_stream() {
        let seed = 0xDEAD_BEEF_0123_4567;
        let whole = seeded_f32(seed, 5_000);
        for (offset, len) in [(0, 10), (1, 1), (4_096, 904), (4_999, 1)] {
            assert_eq!(seeded_f32_at(seed, offset as u64, len), whole[offset..offset + len], "at {offset}");
        }
    }

    /// Version 2 nodes and older coordinators read the same JSON: no `offset` unless it is not zero.
    #[test]
    fn a_zero_offset_stays_off_the_wire() {
        let whole = DataRef::Seeded { seed: 1, len: 2, offset: 0 };
        assert_eq!(serde_json::to_string(&whole).unwrap(), r#"{"from":"seeded","seed":1,"len":2}"#);
        assert_eq!(serde_json::from_str::<DataRef>(r#"{"from":"seeded","seed":1,"len":2}"#).unwrap(), whole);
        let block = DataRef::Seeded { seed: 1, len: 2, offset: 6 };
        assert_eq!(serde_json::to_string(&block).unwrap(), r#"{"from":"seeded","seed":1,"len":2,"offset":6}"#);
    }
}
