//! Inference tasks on this node: the request runs on a model the node serves, the answer (with the Merkle root of
//! what the run computed) is delivered like any result, and what the root covers stays here (`serve::HeldProofs`) until
//! the coordinator draws its challenge (`open`) or the attempt ends (verdict, cancel). The opening is uploaded as a
//! blob and announced with a signed `opened`.

use std::sync::Arc;

use anyhow::{Context, anyhow};
use neurolov_protocol::FromNode;
use neurolov_protocol::inference::{Answer, InferRequest};
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

impl TaskRun {
    /// Runs an inference task and delivers its committed answer, keeping the run's record for the challenge.
    pub(crate) async fn infer(&self, task: &Task, model: &str, request: &InferRequest) -> anyhow::Result<()> {
        let provider = self
            .settings
            .models
            .iter()
            .find(|p| p.name == model)
            .cloned()
            .ok_or_else(|| anyhow!("this node does not serve {model}"))?;
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
