//! Checking a delivered result, as work the shell runs outside the core. Reading a result blob, hashing it and
//! Freivalds' check take milliseconds for large tiles, and the core (behind one lock in the coordinator) must not
//! stall every other node and client meanwhile. So the core only decides *what* to check when a result arrives —
//! [`Effect::Verify`] carries the task's operands and the secret R, never anything the node chose — and the shell
//! runs [`Verification::run`] on a worker thread, then hands the [`Verified`] outcome to [`Core::verified`], which
//! settles it like any other event. Tests and the simulation run the same code inline ([`Core::run_verifications`]),
//! the simulation after random delays, so results of one task can be judged in any order.

use std::sync::Arc;

use neurolov_protocol::Id;
use neurolov_protocol::messages::ErrorCode;

use crate::inference::{ProofCheck, ProofChecker};
use crate::jobs::MatmulOperands;
pub(crate) use crate::jobs::Verdict;
use crate::{Blobs, ConnId, Core, Effect, TaskId};

/// A delivered result to check: its blob must hash to the node's commitment, and a matmul result must pass
/// Freivalds' check against the task's operands.
#[derive(Clone)]
pub struct Verification {
    pub task: TaskId,
    pub attempt: u32,
    pub node: Id,
    pub result_hash: String,
    /// The bytes, when the node delivered them inside its frame (version 2) rather than as a blob.
    inline: Option<Arc<[u8]>>,
    operands: Option<MatmulOperands>,
    rounds: u32,
    /// An inference's proof (see `inference.rs`), checked by the shell's [`ProofChecker`].
    proof: Option<Box<ProofCheck>>,
}

/// Leaves the operands out: they hold the verifier's secret seed, which must not reach a log.
impl std::fmt::Debug for Verification {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verification")
            .field("task", &self.task)
            .field("attempt", &self.attempt)
            .field("node", &self.node)
            .field("result_hash", &self.result_hash)
            .field("freivalds", &self.operands.is_some())
            .field("proof", &self.proof.as_ref().map(|p| &p.listing.name))
            .finish()
    }
}

impl PartialEq for Verification {
    fn eq(&self, other: &Self) -> bool {
        (self.task, self.attempt, self.node, &self.result_hash)
            == (other.task, other.attempt, other.node, &other.result_hash)
    }
}

/// What a [`Verification`] found.
#[derive(Clone, Debug)]
pub struct Verified {
    task: TaskId,
    attempt: u32,
    node: Id,
    /// The result's bytes and, for a matmul, Freivalds' verdict; or why the bytes
    /// could not be read as committed.
    outcome: Result<(Arc<[u8]>, Option<Verdict>), String>,
}

impl Verification {
    pub(crate) fn new(
        task: TaskId,
        attempt: u32,
        node: Id,
        result_hash: String,
        inline: Option<Arc<[u8]>>,
        operands: Option<MatmulOperands>,
        rounds: u32,
    ) -> Verification {
        Verification { task, attempt, node, result_hash, inline, operands, rounds, proof: None }
    }

    pub(crate) fn with_proof(self, proof: ProofCheck) -> Verification {
        Verification { proof: Some(Box::new(proof)), ..self }
    }

    /// Reads the result and checks it. Pure computation over `blobs`: safe on any thread.
    pub fn run(&self, blobs: &dyn Blobs) -> Verified {
        self.run_with(blobs, None)
    }

    /// [`Verification::run`] with the shell's checker of inference proofs (without one an inference's check cannot
    /// be made, and its result counts as unreadable: nobody is convicted).
    pub fn run_with(&self, blobs: &dyn Blobs, checker: Option<&dyn ProofChecker>) -> Verified {
        let bytes = self.inline.clone().or_else(|| blobs.get(&self.result_hash));
        let outcome = match bytes {
            None => Err("result blob not uploaded".to_string()),
            Some(bytes) if blake3::hash(&bytes).to_hex().as_str() != self.result_hash => {
                Err("stored blob does not hash to the commitment".to_string())
            }
            Some(bytes) => match &self.proof {
                Some(proof) => proof.run(&bytes, blobs, checker).map(|verdict| (bytes, Some(verdict))),
                None => {
                    let verdict = self.operands.as_ref().map(|ops| ops.check(&bytes, self.rounds));
                    Ok((bytes, verdict))
                }
            },
        };
        Verified { task: self.task, attempt: self.attempt, node: self.node, outcome }
    }

    /// The outcome of a check that could not be run (it crashed): the result counts as unreadable.
    pub fn failed(&self, reason: &str) -> Verified {
        Verified { task: self.task, attempt: self.attempt, node: self.node, outcome: Err(reason.to_string()) }
    }
}

impl Core {
    /// A verification the shell ran has finished: the result is judged (and the task settled) as if it had just
    /// arrived. Outcomes for attempts that ended meanwhile (the job failed, the node sent `failed`) are ignored.
    pub fn verified(&mut self, now_ms: u64, v: Verified) -> Vec<Effect> {
        self.verified_all(now_ms, vec![v])
    }

    /// Several finished verifications settled as one event: the nodes' freed slots are filled in one dispatch pass,
    /// and each node's new tasks go out together.
    pub fn verified_all(&mut self, now_ms: u64, checks: Vec<Verified>) -> Vec<Effect> {
        self.advance(now_ms);
        for v in checks {
            self.settle_check(v);
        }
        self.dispatch();
        self.take_effects()
    }

    fn settle_check(&mut self, v: Verified) {
        self.tasks.end_check(v.task, v.attempt, v.node);
        let conn = self.registry.get(&v.node).and_then(|n| n.conn);
        let open = self.tasks.get_mut(&v.task).filter(|t| !t.done).and_then(|t| {
            t.assignments.iter_mut().find(|a| a.attempt == v.attempt && a.node == v.node && !a.dropped && a.verifying)
        });
        if let Some(a) = open {
            a.verifying = false;
            match v.outcome {
                Ok((bytes, verdict)) => {
                    a.result = Some(bytes);
                    a.verdict = verdict;
                    self.evaluate(v.task);
                }
                Err(reason) => self.unreadable_result(v.task, v.attempt, v.node, conn, reason),
            }
        }
    }

    /// Checks the shell never answered (a lost worker) end after `verify_timeout_ms` as unreadable results, so no
    /// attempt waits for a verdict forever.
    pub(crate) fn expire_checks(&mut self) {
        let cutoff = self.now_ms.saturating_sub(self.cfg.verify_timeout_ms);
        while let Some((at, task, attempt, node)) = self.tasks.oldest_check() {
            if at > cutoff {
                break;
            }
            let outcome = Err("the result's check did not finish in time".to_string());
            self.settle_check(Verified { task, attempt, node, outcome });
        }
    }

    /// The bytes behind a commitment could not be read back as committed (a blob store fault, or a node racing its
    /// own upload): nothing signed was shown wrong, so the attempt fails without a conviction and the task runs again.
    fn unreadable_result(&mut self, task: TaskId, attempt: u32, node: Id, conn: Option<ConnId>, reason: String) {
        tracing::warn!(%node, task, attempt, %reason, "result unreadable");
        if let Some(conn) = conn {
            self.send(
                conn,
                neurolov_protocol::messages::ToNode::Error { code: ErrorCode::CommitmentMismatch, message: reason },
            );
        }
        self.drop_assignment(task, attempt, node, crate::AttemptEnd::Failed);
    }

    /// Runs every [`Effect::Verify`] among `effects` here and now (and those its outcomes cause), returning the
    /// other effects: the synchronous path for tests and tools that have no worker threads.
    pub fn run_verifications(&mut self, now_ms: u64, effects: Vec<Effect>, blobs: &dyn Blobs) -> Vec<Effect> {
        self.run_verifications_with(now_ms, effects, blobs, None)
    }

    /// [`Core::run_verifications`] with a checker of inference proofs.
    pub fn run_verifications_with(
        &mut self,
        now_ms: u64,
        effects: Vec<Effect>,
        blobs: &dyn Blobs,
        checker: Option<&dyn ProofChecker>,
    ) -> Vec<Effect> {
        let mut out = Vec::with_capacity(effects.len());
        let mut pending: std::collections::VecDeque<Effect> = effects.into();
        while let Some(effect) = pending.pop_front() {
            match effect {
                Effect::Verify(v) => pending.extend(self.verified(now_ms, v.run_with(blobs, checker))),
                other => out.push(other),
            }
        }
        out
    }
}
