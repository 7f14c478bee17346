//! The models this coordinator lists and verifies (issue 13). Each pinned model it is started with is loaded from
//! the model cache on the CPU — the coordinator tokenizes requests with it, renders chat templates, decodes answers —
//! with a verifier whose secret projections come from the coordinator's secret key (never from anything a node could
//! learn); so is each model an author published (`registry.rs`). The listing the core prices and schedules by is
//! derived from the model itself and, for a published one, its manifest (prices, royalty, author); the prices of the
//! models listed from genesis are constants here.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use neurolov_api::openai::ModelFile;

use neurolov_core::{ModelKind, ModelListing, ProofChecker, Verdict};
use neurolov_models::catalog::Model;
use neurolov_models::serve::Hosted;
use neurolov_protocol::inference::{InferOutput, InferRequest};

/// What the models listed from genesis cost, nano-NLOV per 1,000 tokens: embeddings (input only), chat input and
/// chat output. About the compute they take on a CPU node, priced like the matmul market's default.
pub const EMBED_PRICE_NANO_PER_1K: u64 = 20_000;
pub const CHAT_INPUT_PRICE_NANO_PER_1K: u64 = 100_000;
pub const CHAT_OUTPUT_PRICE_NANO_PER_1K: u64 = 300_000;

/// A genesis model's file as the coordinator serves it to providers that have no package cache (browser tabs).
#[derive(Clone, Debug)]
struct GenesisFile {
    model: String,
    file: ModelFile,
    /// In the model cache, checked against the pinned SHA-256 at start.
    path: PathBuf,
}

/// The hosted models, in listing order, and the published ones' records.
#[derive(Debug, Default)]
pub struct Hosting {
    models: std::sync::RwLock<Vec<Arc<Hosted>>>,
    published: std::sync::RwLock<Vec<neurolov_api::openai::PublishedModel>>,
    /// The genesis models' files, served by hash like published models' blobs.
    genesis_files: Vec<GenesisFile>,
}

/// The genesis `model`'s files in `cache`, with their blake3 (the name they are served by).
fn genesis_files(cache: &Path, model: &Model) -> anyhow::Result<Vec<GenesisFile>> {
    let dir = neurolov_models::fetch::model_dir(cache, model);
    model
        .files
        .iter()
        .map(|f| {
            let path = dir.join(f.name);
            let mut hasher = blake3::Hasher::new();
            hasher.update_reader(std::fs::File::open(&path)?)?;
            let file =
                ModelFile { name: f.name.to_string(), size: f.size, blake3: hasher.finalize().to_hex().to_string() };
            Ok(GenesisFile { model: model.name.to_string(), file, path })
        })
        .collect()
}

/// The secret seed of `name`'s verifier, from the coordinator's key.
pub(crate) fn verifier_seed(secret_key: &[u8; 32], name: &str) -> u64 {
    let hash = blake3::keyed_hash(secret_key, format!("verifier of {name}").as_bytes());
    u64::from_le_bytes(hash.as_bytes()[..8].try_into().unwrap_or_default())
}

impl Hosting {
    /// Loads `models` from `cache` (each file checked against its pinned hash first) and prepares their verifiers
    /// from `secret_key`.
    pub fn load(cache: &Path, models: &[Model], secret_key: &[u8; 32]) -> anyhow::Result<Hosting> {
        let mut hosted = Vec::with_capacity(models.len());
        let mut files = Vec::new();
        for model in models {
            neurolov_models::fetch::check(cache, model)
                .map_err(|e| anyhow::anyhow!("{}: {e} (fetch it with `neurolov models fetch`)", model.name))?;
            let started = std::time::Instant::now();
            hosted.push(Arc::new(Hosted::load(cache, *model, verifier_seed(secret_key, model.name))?));
            files.extend(genesis_files(cache, model)?);
            tracing::info!(model = model.name, took_ms = started.elapsed().as_millis() as u64, "model hosted");
        }
        Ok(Hosting { models: std::sync::RwLock::new(hosted), published: Default::default(), genesis_files: files })
    }

    /// A hosted model's files, as a provider fetches them (by hash) and checks them.
    pub(crate) fn files(&self, name: &str) -> Option<Vec<ModelFile>> {
        if let Some(published) = self.published(name) {
            return Some(published.manifest.files);
        }
        let files: Vec<ModelFile> =
            self.genesis_files.iter().filter(|g| g.model == name).map(|g| g.file.clone()).collect();
        (!files.is_empty()).then_some(files)
    }

    /// Where a genesis model's file of this blake3 lies, and its size: served as if it were a blob.
    pub(crate) fn genesis_file(&self, blake3: &str) -> Option<(PathBuf, u64)> {
        self.genesis_files.iter().find(|g| g.file.blake3 == blake3).map(|g| (g.path.clone(), g.file.size))
    }

    /// The genesis models' listings the core prices, schedules and sizes openings by.
    pub fn listings(&self) -> Vec<ModelListing> {
        self.read().iter().map(|h| listing(h)).collect()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<Arc<Hosted>>> {
        self.models.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn get(&self, name: &str) -> Option<Arc<Hosted>> {
        self.read().iter().find(|h| h.name == name).cloned()
    }

    /// Hosts a published model; its listing (to hand the core).
    pub(crate) fn publish(
        &self,
        hosted: Hosted,
        record: neurolov_api::openai::PublishedModel,
        author: neurolov_protocol::Id,
    ) -> ModelListing {
        let m = &record.manifest;
        let listing = ModelListing {
            price_in_nano_per_1k: m.price_input_nano_per_1k,
            price_out_nano_per_1k: m.price_output_nano_per_1k,
            author: Some(author),
            royalty_bps: m.royalty_bps,
            ..listing(&hosted)
        };
        self.models.write().unwrap_or_else(std::sync::PoisonError::into_inner).push(Arc::new(hosted));
        self.published.write().unwrap_or_else(std::sync::PoisonError::into_inner).push(record);
        listing
    }

    /// A published model's record.
    pub(crate) fn published(&self, name: &str) -> Option<neurolov_api::openai::PublishedModel> {
        let published = self.published.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        published.iter().find(|p| p.manifest.name == name).cloned()
    }

    /// The blobs of published models' files: nodes fetch them, so the blob collector keeps them.
    pub(crate) fn file_blobs(&self) -> Vec<String> {
        let published = self.published.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        published.iter().flat_map(|p| p.manifest.files.iter().map(|f| f.blake3.clone())).collect()
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
        name: h.name.clone(),
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
