//! The model registry (issue 13): authors publish models to the marketplace. A model is a manifest signed by its
//! author (name, version, kind, license, files by size and blake3, prices per 1,000 tokens, royalty share) whose files
//! were uploaded as blobs first. Before it is listed the coordinator puts the files together in its data directory
//! and loads the model — it must be an architecture the engine runs and the proofs verify (a BERT sentence encoder, a
//! Llama GGUF) — with a verifier of its own secret. The record is kept (and the model loaded again at every start);
//! its files stay blobs, served by hash, which nodes fetch and check (`neurolov node --models NAME`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use neurolov_api::openai as oa;
use neurolov_models::serve::Hosted;
use neurolov_protocol::Id;

use crate::app::{Shared, error};
use crate::blobs::BlobDir;
use crate::hosting::verifier_seed;
use crate::{Coordinator, now_ms};

/// Bounds on what a manifest may ask the coordinator to hold and load.
pub const MAX_MODEL_BYTES: u64 = 2 << 30;
pub const MAX_MODEL_FILES: usize = 16;
pub const MAX_NAME_BYTES: usize = 64;
pub const MAX_ROYALTY_BPS: u64 = 5_000;
/// The highest price per 1,000 tokens a manifest may set (1,000 NLOV): beyond it a request's escrow overflows
/// nothing, but no client could mean it.
pub const MAX_PRICE_NANO_PER_1K: u64 = 1_000 * 1_000_000_000;

/// Where published models' files are put together.
pub(crate) fn models_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("models")
}

fn safe_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME_BYTES
        && s != "."
        && s != ".."
        && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// A file's path inside a model: one or two safe names (`1_Pooling/config.json`).
fn safe_path(s: &str) -> bool {
    let parts: Vec<&str> = s.split('/').collect();
    parts.len() <= 2 && parts.iter().all(|p| safe_name(p))
}

/// What a manifest must say before anything is read for it.
pub(crate) fn check_manifest(m: &oa::ModelManifest, max_royalty_bps: u64) -> Result<(), String> {
    if !safe_name(&m.name) {
        return Err(format!("a model's name is 1 to {MAX_NAME_BYTES} of A-Z a-z 0-9 . _ -"));
    }
    if m.version.is_empty() || m.version.len() > 32 || m.license.is_empty() || m.license.len() > 64 {
        return Err("version (1 to 32 bytes) and license (1 to 64 bytes) are required".into());
    }
    if !matches!(m.kind.as_str(), "embeddings" | "chat") {
        return Err("kind is `embeddings` or `chat`".into());
    }
    if m.files.is_empty() || m.files.len() > MAX_MODEL_FILES {
        return Err(format!("a model has 1 to {MAX_MODEL_FILES} files"));
    }
    if let Some(f) = m.files.iter().find(|f| !safe_path(&f.name) || !crate::blobs::is_hash(&f.blake3)) {
        return Err(format!("file {:?}: a path of one or two safe names and a blake3 hex hash", f.name));
    }
    let mut names: Vec<&str> = m.files.iter().map(|f| f.name.as_str()).collect();
    names.sort_unstable();
    if names.windows(2).any(|w| w[0] == w[1]) {
        return Err("a file is named twice".into());
    }
    if m.files.iter().try_fold(0u64, |sum, f| sum.checked_add(f.size)).is_none_or(|total| total > MAX_MODEL_BYTES) {
        return Err(format!("a model's files are at most {MAX_MODEL_BYTES} bytes together"));
    }
    if m.royalty_bps > max_royalty_bps.min(MAX_ROYALTY_BPS) {
        return Err(format!("the royalty is at most {} basis points", max_royalty_bps.min(MAX_ROYALTY_BPS)));
    }
    if m.price_input_nano_per_1k > MAX_PRICE_NANO_PER_1K || m.price_output_nano_per_1k > MAX_PRICE_NANO_PER_1K {
        return Err(format!("a price is at most {MAX_PRICE_NANO_PER_1K} nano-NLOV per 1,000 tokens"));
    }
    if m.price_input_nano_per_1k == 0 {
        return Err("the input price is at least 1 nano-NLOV per 1,000 tokens (every request costs its check)".into());
    }
    Ok(())
}

/// Copies the model's files into `dir` (made anew) — each an uploaded blob, or a file of a genesis model that has
/// its hash (`genesis`: served by that hash already, so a client's upload skips it) — and loads it with its verifier;
/// the directory goes again if it does not load.
fn assemble(
    dir: &Path,
    m: &oa::ModelManifest,
    blobs: &BlobDir,
    genesis: &dyn Fn(&str) -> Option<PathBuf>,
    seed: u64,
) -> Result<Hosted, String> {
    let _ = std::fs::remove_dir_all(dir);
    let loaded = (|| {
        for f in &m.files {
            let bytes = blobs
                .read(&f.blake3)
                .or_else(|| std::fs::read(genesis(&f.blake3)?).ok())
                .ok_or_else(|| format!("file {} (blob {}) is not uploaded", f.name, f.blake3))?;
            if bytes.len() as u64 != f.size {
                return Err(format!("file {} is {} bytes, the manifest says {}", f.name, bytes.len(), f.size));
            }
            let path = dir.join(&f.name);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
            }
            std::fs::write(&path, bytes).map_err(|e| e.to_string())?;
        }
        let hosted = Hosted::load_dir(&m.name, dir, seed).map_err(|e| format!("the engine cannot load it: {e}"))?;
        if hosted.facts().chat != (m.kind == "chat") {
            return Err(format!("the files are not a {} model", m.kind));
        }
        Ok(hosted)
    })();
    if loaded.is_err() {
        let _ = std::fs::remove_dir_all(dir);
    }
    loaded
}

/// `POST /v1/models` (signed by the author): publishes a model whose files are uploaded blobs; 201 with its record.
#[utoipa::path(post, path = "/v1/models", tag = "openai", request_body(content = oa::ModelManifest, description = "signed request"), responses((status = 201, body = oa::PublishedModel), (status = 400, body = neurolov_api::ErrorReply), (status = 409, body = neurolov_api::ErrorReply)))]
pub(crate) async fn publish(State(app): Shared, headers: HeaderMap, body: Bytes) -> Response {
    let header = |name: &'static str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let author = match app.replay.verify(header, "POST", "/v1/models", &body, now_ms()) {
        Ok(a) => a,
        Err(e) => return error(e.status(), e),
    };
    let manifest: oa::ModelManifest = match serde_json::from_slice(&body) {
        Ok(m) => m,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("malformed manifest: {e}")),
    };
    let max_royalty_bps = app.coordinator.read_core(|c| c.config().max_royalty_bps);
    if let Err(e) = check_manifest(&manifest, max_royalty_bps) {
        return error(StatusCode::BAD_REQUEST, e);
    }
    let c = &app.coordinator;
    if c.hosting.get(&manifest.name).is_some() || neurolov_models::catalog::find(&manifest.name).is_some() {
        return error(StatusCode::CONFLICT, format!("a model named {} is listed", manifest.name));
    }
    let record = oa::PublishedModel {
        manifest: manifest.clone(),
        author: author.to_string(),
        published_ms: header(neurolov_protocol::request::HEADER_TIMESTAMP).and_then(|t| t.parse().ok()).unwrap_or(0),
        manifest_json: String::from_utf8_lossy(&body).into_owned(),
        signature: header(neurolov_protocol::request::HEADER_SIGNATURE).unwrap_or_default(),
    };
    let (dir, blobs, seed) =
        (models_dir(&c.data_dir).join(&manifest.name), c.blobs.clone(), verifier_seed(&c.secret_key, &manifest.name));
    let hosting = Arc::clone(&c.hosting);
    let genesis = move |hash: &str| hosting.genesis_file(hash).map(|(path, _)| path);
    let hosted = match tokio::task::spawn_blocking(move || assemble(&dir, &manifest, &blobs, &genesis, seed)).await {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => return error(StatusCode::BAD_REQUEST, e),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e),
    };
    if let Err(r) = keep(c, &record).await {
        return *r;
    }
    match list(c, hosted, record.clone(), author) {
        Ok(()) => (StatusCode::CREATED, Json(record)).into_response(),
        Err(e) => error(StatusCode::CONFLICT, e),
    }
}

/// Hosts a published model and lists it in the core.
fn list(c: &Coordinator, hosted: Hosted, record: oa::PublishedModel, author: Id) -> Result<(), String> {
    let name = record.manifest.name.clone();
    let listing = c.hosting.publish(hosted, record, author);
    c.with_core(|core, _| match core.list_model(now_ms(), listing) {
        Ok(effects) => (Ok(()), effects),
        Err(e) => (Err(e), Vec::new()),
    })?;
    tracing::info!(model = %name, %author, "model published");
    Ok(())
}

async fn keep(c: &Coordinator, record: &oa::PublishedModel) -> Result<(), Box<Response>> {
    let (done, written) = tokio::sync::oneshot::channel();
    let doc = serde_json::to_string(record).unwrap_or_default();
    let msg = crate::store::StoreMsg::Doc {
        table: crate::store::DocTable::PublishedModels,
        key: record.manifest.name.clone(),
        doc,
        done,
    };
    if c.store.send(msg).is_err() || written.await.is_err() {
        return Err(Box::new(error(StatusCode::INTERNAL_SERVER_ERROR, "the model could not be stored")));
    }
    Ok(())
}

/// `GET /v1/models/{name}`: a published model's signed manifest (its files are `GET /v1/blobs/{blake3}`).
#[utoipa::path(get, path = "/v1/models/{name}", tag = "openai", params(("name" = String, Path)), responses((status = 200, body = oa::PublishedModel), (status = 404, body = neurolov_api::ErrorReply)))]
pub(crate) async fn show(State(app): Shared, UrlPath(name): UrlPath<String>) -> Response {
    match app.coordinator.hosting.published(&name) {
        Some(record) => Json(record).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            format!(
                "no published model {name} (the genesis models come from their pinned packages: `neurolov models list`)"
            ),
        ),
    }
}

/// `GET /v1/models/{name}/files`: what a provider fetches (by hash) and checks to serve a hosted model.
#[utoipa::path(get, path = "/v1/models/{name}/files", tag = "openai", params(("name" = String, Path)), responses((status = 200, body = oa::ModelFiles), (status = 404, body = neurolov_api::ErrorReply)))]
pub(crate) async fn files(State(app): Shared, UrlPath(name): UrlPath<String>) -> Response {
    match app.coordinator.hosting.files(&name) {
        Some(files) => Json(oa::ModelFiles { model: name, files }).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no model {name} is hosted here")),
    }
}

/// Loads the published models on record again (at start, before the core is restored), in the order they were
/// published; their listings, to append to the core's. A model whose files are gone from the data directory is
/// skipped with a warning.
pub(crate) async fn restore(
    pool: &sqlx::SqlitePool,
    data_dir: &Path,
    secret_key: [u8; 32],
    hosting: &crate::hosting::Hosting,
) -> anyhow::Result<Vec<neurolov_core::ModelListing>> {
    let rows: Vec<(String,)> =
        sqlx::query_as("SELECT doc FROM published_models ORDER BY rowid").fetch_all(pool).await?;
    let mut listings = Vec::new();
    for (doc,) in rows {
        let record: oa::PublishedModel = serde_json::from_str(&doc)?;
        let Ok(author) = record.author.parse::<Id>() else { continue };
        let name = record.manifest.name.clone();
        let dir = models_dir(data_dir).join(&name);
        let seed = verifier_seed(&secret_key, &name);
        match tokio::task::spawn_blocking(move || Hosted::load_dir(&name, &dir, seed)).await? {
            Ok(hosted) => listings.push(hosting.publish(hosted, record, author)),
            Err(e) => {
                tracing::warn!(model = %record.manifest.name, error = %e, "a published model could not be loaded")
            }
        }
    }
    Ok(listings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> oa::ModelManifest {
        oa::ModelManifest {
            name: "my-model".into(),
            version: "1.0".into(),
            kind: "embeddings".into(),
            license: "Apache-2.0".into(),
            files: vec![oa::ModelFile { name: "1_Pooling/config.json".into(), size: 10, blake3: "ab".repeat(32) }],
            price_input_nano_per_1k: 10,
            price_output_nano_per_1k: 0,
            royalty_bps: 1_000,
        }
    }

    #[test]
    fn manifests_outside_the_rules_are_refused() {
        assert_eq!(check_manifest(&manifest(), MAX_ROYALTY_BPS), Ok(()));
        type Change = Box<dyn Fn(&mut oa::ModelManifest)>;
        let bad: Vec<(&str, Change)> = vec![
            ("a path out of the directory", Box::new(|m| m.files[0].name = "../../etc/passwd".into())),
            ("an absolute path", Box::new(|m| m.files[0].name = "/etc/passwd".into())),
            ("three levels", Box::new(|m| m.files[0].name = "a/b/c".into())),
            ("a name with a slash", Box::new(|m| m.name = "a/b".into())),
            ("an unknown kind", Box::new(|m| m.kind = "vision".into())),
            ("a royalty above half", Box::new(|m| m.royalty_bps = 5_001)),
            ("a free model", Box::new(|m| m.price_input_nano_per_1k = 0)),
            ("a file twice", Box::new(|m| m.files.push(m.files[0].clone()))),
            ("too large", Box::new(|m| m.files[0].size = MAX_MODEL_BYTES + 1)),
            (
                "sizes that overflow",
                Box::new(|m| {
                    m.files[0].size = u64::MAX;
                    m.files.push(oa::ModelFile { name: "b".into(), size: 2, blake3: "cd".repeat(32) });
                }),
            ),
            ("not a hash", Box::new(|m| m.files[0].blake3 = "zz".into())),
        ];
        for (what, change) in bad {
            let mut m = manifest();
            change(&mut m);
            assert!(check_manifest(&m, MAX_ROYALTY_BPS).is_err(), "{what} was accepted");
        }
    }
}
