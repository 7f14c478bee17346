//! Inference tasks on this node: the request runs on a model the node serves, the answer (with the Merkle root of
//! what the run computed) is delivered like any result, and what the root covers stays here (`serve::HeldProofs`) until
//! the coordinator draws its challenge (`open`) or the attempt ends (verdict, cancel). The opening is uploaded as a
//! blob and announced with a signed `opened`.

use std::sync::Arc;

use anyhow::{Context, anyhow};
use neurolov_models::serve::Provider;
use neurolov_protocol::FromNode;
use neurolov_protocol::inference::{Answer, InferRequest, MAX_HELD_MODELS};
use neurolov_protocol::messages::Task;

use crate::{Outgoing, Pending, TaskRun};

/// The forged answer of a cheating node (`Settings::cheat_inference`, demonstrations and tests): one value or token changed
/// after the honest run, under the honest run's root.
fn forge(answer: &mut Answer) {
    match answer {
        Answer::Embeddings(vectors) => {
            if let Some(v) = vectors.first_mut().and_then(|v| v.first_mut()) {
                *v += 0.5;
            }
        }
        Answer::Chat { tokens, .. } => {
            if let Some(t) = tokens.first_mut() {
                *t = t.wrapping_add(1);
            }
        }
    }
}

/// Loads a model from the coordinator by name (its files fetched by hash and checked): the binary supplies it.
pub type FetchModel = dyn Fn(&str) -> anyhow::Result<Provider> + Send + Sync;

/// The models a node fetches on demand (`Settings::fetch_models`): one fetch at a time, each kept for the next tasks,
/// at most [`MAX_HELD_MODELS`] (the oldest is dropped first).
#[derive(Clone)]
pub struct ModelFetcher {
    fetch: Arc<FetchModel>,
    fetched: Arc<std::sync::Mutex<Vec<Arc<Provider>>>>,
    /// Held while a model is fetched: tasks for a model being fetched wait for it rather than fetch it again.
    fetching: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for ModelFetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelFetcher").field("held", &self.held()).finish_non_exhaustive()
    }
}

impl ModelFetcher {
    pub fn new(fetch: Arc<FetchModel>) -> ModelFetcher {
        ModelFetcher { fetch, fetched: Arc::default(), fetching: Arc::default() }
    }

    fn find(&self, name: &str) -> Option<Arc<Provider>> {
        let fetched = self.fetched.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        fetched.iter().find(|p| p.name == name).cloned()
    }

    /// Names of the models fetched so far.
    pub fn held(&self) -> Vec<String> {
        let fetched = self.fetched.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        fetched.iter().map(|p| p.name.clone()).collect()
    }

    /// `name`, fetched and loaded unless it already was.
    pub async fn get(&self, name: &str) -> anyhow::Result<Arc<Provider>> {
        if let Some(p) = self.find(name) {
            return Ok(p);
        }
        let _one_at_a_time = self.fetching.lock().await;
        if let Some(p) = self.find(name) {
            return Ok(p);
        }
        let (fetch, owned) = (Arc::clone(&self.fetch), name.to_string());
        let started = std::time::Instant::now();
        let provider = Arc::new(tokio::task::spawn_blocking(move || fetch(&owned)).await??);
        tracing::info!(model = name, took_ms = started.elapsed().as_millis() as u64, "model fetched on demand");
        let mut fetched = self.fetched.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if fetched.len() >= MAX_HELD_MODELS {
            fetched.remove(0);
        }
        fetched.push(Arc::clone(&provider));
        Ok(provider)
    }
}

impl TaskRun {
    /// Runs an inference task and delivers its committed answer, keeping the run's record for the challenge.
    pub(crate) async fn infer(&self, task: &Task, model: &str, request: &InferRequest) -> anyhow::Result<()> {
        let held = self.settings.models.iter().find(|p| p.name == model).cloned();
        let provider = match (held, &self.settings.fetch_models) {
            (Some(p), _) => p,
            (None, Some(fetcher)) => fetcher.get(model).await.with_context(|| format!("fetching {model}"))?,
            (None, None) => return Err(anyhow!("this node does not serve {model}")),
        };
        let request = request.clone();
        let runner = Arc::clone(&provider);
        let (mut output, held) = tokio::task::spawn_blocking(move || runner.answer(&request)).await??;
        if self.settings.cheat_inference {
            forge(&mut output.answer);
        }
        tracing::info!(task = task.task_id, model, tokens = output.output_tokens(), "inference answered");
        self.proofs.keep((task.task_id, task.attempt), provider, held);
        self.deliver(task.task_id, task.attempt, output.to_bytes()).await
    }

    /// Opens an answered attempt's proof at the challenge `seed` means, uploads it and says so.
    pub(crate) async fn open(self, task_id: u64, attempt: u32, seed: u64) {
        if let Err(e) = self.try_open(task_id, attempt, seed).await {
            // Nothing to give back: the answer is delivered and stays judged (unopened, it is not paid).
            tracing::warn!(task_id, attempt, error = format!("{e:#}"), "could not open a proof");
        }
    }

    async fn try_open(&self, task_id: u64, attempt: u32, seed: u64) -> anyhow::Result<()> {
        let (provider, held) = self.proofs.get((task_id, attempt)).context("no record of this attempt")?;
        let opening = tokio::task::spawn_blocking(move || provider.open(&held, seed)).await??;
        let bytes = opening.len();
        let opening_hash = self.upload(opening).await.context("uploading the opening")?;
        tracing::info!(task_id, attempt, bytes, "proof opened");
        let opened: Pending =
            Box::new(move |session, seq| FromNode::Opened { session, seq, task_id, attempt, opening_hash });
        self.out.send(Outgoing::Message(opened)).await.map_err(|_| anyhow!("session closed"))?;
        self.proofs.forget((task_id, attempt));
        Ok(())
    }
}
