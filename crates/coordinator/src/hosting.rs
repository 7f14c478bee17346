//! The models this coordinator lists and verifies (issue 13). Each pinned model it is started with is loaded from
//! the model cache on the CPU — the coordinator tokenizes requests with it, renders chat templates, decodes answers —
//! with a verifier whose secret projections come from the coordinator's secret key (never from anything a node could
//! learn). The listing the core prices and schedules by is derived from the model itself; the prices of the models
//! listed from genesis are constants here until authors publish their own (the registry).

use std::path::Path;
use std::sync::Arc;

use neurolov_core::{ModelKind, ModelListing, ProofChecker, Verdict};
use neurolov_models::catalog::Model;
use neurolov_models::serve::Hosted;
use neurolov_protocol::inference::{InferOutput, InferRequest};

/// What the models listed from genesis cost, nano-NLOV per 1,000 tokens: embeddings (input only), chat input and
/// chat output. About the compute they take on a CPU node, priced like the matmul market's default.
pub const EMBED_PRICE_NANO_PER_1K: u64 = 20_000;
pub const CHAT_INPUT_PRICE_NANO_PER_1K: u64 = 100_000;
pub const CHAT_OUTPUT_PRICE_NANO_PER_1K: u64 = 300_000;

/// The hosted models, by name.
#[derive(Debug, Default)]
pub struct Hosting {
    models: Vec<Arc<Hosted>>,
}

impl Hosting {
    /// Loads `models` from `cache` (each file checked against its pinned hash first) and prepares their verifiers
    /// from `secret_key`.
    pub fn load(cache: &Path, models: &[Model], secret_key: &[u8; 32]) -> anyhow::Result<Hosting> {
        let mut hosted = Vec::with_capacity(models.len());
        for model in models {
            neurolov_models::fetch::check(cache, model)
                .map_err(|e| anyhow::anyhow!("{}: {e} (fetch it with `neurolov models fetch`)", model.name))?;
            let seed = u64::from_le_bytes(
                blake3::keyed_hash(secret_key, format!("verifier of {}", model.name).as_bytes()).as_bytes()[..8]
                    .try_into()
                    .unwrap_or_default(),
            );
            let started = std::time::Instant::now();
            hosted.push(Arc::new(Hosted::load(cache, *model, seed)?));
            tracing::info!(model = model.name, took_ms = started.elapsed().as_millis() as u64, "model hosted");
        }
        Ok(Hosting { models: hosted })
    }

    /// The listings the core prices, schedules and sizes openings by.
    pub fn listings(&self) -> Vec<ModelListing> {
        self.models.iter().map(|h| listing(h)).collect()
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Hosted>> {
        self.models.iter().find(|h| h.model.name == name)
    }

    pub fn all(&self) -> &[Arc<Hosted>] {
        &self.models
    }
}

fn listing(h: &Hosted) -> ModelListing {
    let f = h.facts();
    let (kind, price_in, price_out) = if f.chat {
        (ModelKind::Chat, CHAT_INPUT_PRICE_NANO_PER_1K, CHAT_OUTPUT_PRICE_NANO_PER_1K)
    } else {
        (ModelKind::Embeddings, EMBED_PRICE_NANO_PER_1K, 0)
    };
    ModelListing {
        name: h.model.name.to_string(),
        kind,
        price_in_nano_per_1k: price_in,
        price_out_nano_per_1k: price_out,
        // Open models by their publishers (Apache-2.0): nobody to pay a royalty to.
        author: None,
        royalty_bps: 0,
        width: f.width,
        max_positions: f.max_positions,
        opening_fixed_bytes: f.opening_fixed_bytes,
        opening_bytes_per_position: f.opening_bytes_per_position,
        mflop_per_token: f.mflop_per_token,
    }
}

impl ProofChecker for Hosting {
    fn check(&self, model: &str, request: &InferRequest, output: &InferOutput, opening: &[u8], seed: u64) -> Verdict {
        let Some(hosted) = self.get(model) else {
            return Verdict::Doubtful(format!("{model} is not hosted here"));
        };
        let v = hosted.check(request, output, opening, seed);
        if v.accepted() {
            Verdict::Accepted
        } else if v.proven_wrong() {
            match v.malformed {
                Some(why) => Verdict::Wrong(format!("the proof does not open: {why}")),
                None => Verdict::Wrong(format!(
                    "{}: {:.3e}× the bound no honest run exceeds",
                    v.convicting, v.conviction_ratio
                )),
            }
        } else {
            Verdict::Doubtful(format!(
                "{}: {:.3}× the tolerance, within what rounding could explain",
                v.worst, v.worst_ratio
            ))
        }
    }
}
