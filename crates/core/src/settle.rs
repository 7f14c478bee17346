//! Judging and settling attempts: a delivered result is accepted (Freivalds for matmul, replica agreement for WGSL),
//! doubted or rejected; an accepted one is recorded and paid, a rejected one convicts its node with its own signed
//! commitment; attempts end (failed, timed out, released) and jobs fail.

use std::sync::Arc;

use neurolov_protocol::Envelope;
use neurolov_protocol::Id;
use neurolov_protocol::messages::{Access, INLINE_RESULT_BYTES, ToNode, Work};
use neurolov_verify::replicas::{self, Tolerance};

use crate::taskbook::Purpose;
use crate::{Config, Core, Effect, Evidence, JobId, JobState, NodeState, Record, TaskId, blob_hash, verification};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AttemptEnd {
    /// The node said it could not do it.
    Failed,
    /// The node's result was wrong.
    Wrong,
    TimedOut,
    /// Taken back through no fault of the node (it went offline, the job ended, another replica won).
    Released,
}

/// The sizes a task's result may have: exactly C for a matmul, exactly the read-write buffers for WGSL; an
/// inference's answer up to the largest its request can produce.
pub(crate) fn result_sizes(cfg: &Config, work: &Work) -> std::ops::RangeInclusive<u64> {
    let exact = match work {
        Work::Matmul { m, n, .. } => 4 * u64::from(*m) * u64::from(*n),
        Work::Wgsl { buffers, .. } => buffers
            .iter()
            .filter(|b| b.access == Access::ReadWrite)
            .map(|b| b.size_bytes)
            .fold(0u64, u64::saturating_add),
        Work::Infer { model, request } => {
            let width = cfg.models.iter().find(|m| &m.name == model).map_or(0, |m| m.width as usize);
            return 1..=neurolov_protocol::inference::InferOutput::max_bytes(request, width);
        }
    };
    exact..=exact
}

impl Core {
    /// An assignment ends without an accepted result; the task goes back to the queue.
    pub(crate) fn drop_assignment(&mut self, tid: TaskId, attempt: u32, node: Id, outcome: AttemptEnd) {
        let Some(t) = self.tasks.get_mut(&tid) else { return };
        let Some(a) = t.assignments.iter_mut().find(|a| a.attempt == attempt && a.node == node && !a.dropped) else {
            return;
        };
        a.dropped = true;
        // A node that goes away between its commitment and its opening has left a result it would not open: that
        // counts against it, as a failure would (it may have seen the challenge and known it would be caught).
        let outcome = match (&a.proof, outcome) {
            (Some(p), AttemptEnd::Released) if p.opening_hash.is_none() && !t.done => AttemptEnd::Failed,
            _ => outcome,
        };
        let purpose = t.purpose.clone();
        let done = t.done;
        let attempts = t.next_attempt;
        let conn = self.registry.get(&node).and_then(|n| n.conn);
        self.vacate(tid, attempt, node);
        self.release_hold(tid, attempt);
        if let Some(n) = self.registry.get_mut(&node) {
            match outcome {
                AttemptEnd::Failed | AttemptEnd::Wrong => n.history.failed += 1,
                AttemptEnd::TimedOut => n.history.timed_out += 1,
                AttemptEnd::Released => {}
            }
        }
        self.sync_scheduler(node);
        if outcome != AttemptEnd::Released
            && let Some(conn) = conn
        {
            self.send(conn, ToNode::Cancel { task_id: tid, attempt });
        }
        if done {
            return;
        }
        match purpose {
            Purpose::Attestation(n) => {
                // A failed challenge is not retried at once: the node waits for the next round, at the size it last
                // passed (a bigger one may have been more than it can hold).
                if let Some(node) = self.registry.get_mut(&n) {
                    node.challenge = None;
                    node.challenge_size = node.measured_size;
                }
                if let Some(t) = self.tasks.get_mut(&tid) {
                    t.done = true;
                }
                self.schedule_rechallenge(n);
                if let Some(node) = self.registry.get_mut(&n)
                    && !node.attested
                {
                    // Unattested nodes are retried after a short pause rather than the long re-challenge mean.
                    node.next_challenge_ms = self.now_ms.saturating_add(self.cfg.heartbeat_interval_ms);
                }
                self.tasks.remove(&tid);
            }
            Purpose::Canary { payer, .. } => {
                // A canary not answered is not retried: another one comes later, unannounced.
                self.tasks.remove(&tid);
                self.canary_settled(Some(payer));
            }
            Purpose::Job(job) => {
                if attempts >= self.cfg.max_attempts * self.tasks.get(&tid).map_or(1, |t| t.replicas_wanted.max(1)) {
                    self.fail_job(job, format!("task {tid} failed {attempts} attempts"));
                } else {
                    self.enqueue(tid);
                }
            }
        }
    }

    /// A result arrived: verify it (matmul: Freivalds; WGSL: replica agreement) and settle.
    pub(crate) fn evaluate(&mut self, tid: TaskId) {
        let Some(t) = self.tasks.get(&tid) else { return };
        match (&t.purpose, &t.work) {
            (Purpose::Canary { .. }, _) => self.evaluate_canary(tid),
            (_, Work::Matmul { .. } | Work::Infer { .. }) => self.evaluate_checked(tid),
            (_, Work::Wgsl { .. }) => self.evaluate_replicas(tid),
        }
    }

    /// A result judged by its own check (Freivalds' for a matmul, its proof's for an inference), which ran in the
    /// result's verification off the core's lock; the verdict is kept with the attempt.
    pub(crate) fn evaluate_checked(&mut self, tid: TaskId) {
        let Some(t) = self.tasks.get(&tid) else { return };
        struct Ready {
            attempt: u32,
            node: Id,
            bytes: Arc<[u8]>,
            took_ms: u64,
            verdict: verification::Verdict,
        }
        let ready: Vec<Ready> = t
            .assignments
            .iter()
            .filter(|a| !a.dropped)
            .filter_map(|a| {
                Some(Ready {
                    attempt: a.attempt,
                    node: a.node,
                    bytes: a.result.clone()?,
                    took_ms: a.delivered_ms.saturating_sub(a.sent_ms),
                    verdict: a.verdict.clone()?,
                })
            })
            .collect();
        for r in ready {
            match r.verdict {
                verification::Verdict::Accepted => {
                    self.accept(tid, r.attempt, r.node, r.bytes, Some(r.took_ms.max(1)));
                    return;
                }
                verification::Verdict::Doubtful(reason) => self.doubt(tid, r.attempt, r.node, reason),
                verification::Verdict::Wrong(reason) => self.reject(tid, r.attempt, r.node, reason),
            }
        }
    }

    pub(crate) fn evaluate_replicas(&mut self, tid: TaskId) {
        let Some(t) = self.tasks.get(&tid) else { return };
        let tol = match &t.purpose {
            Purpose::Job(j) => self.jobs.get(j).map_or(replicas::DEFAULT_FLOAT, |j| j.tolerance),
            Purpose::Attestation(_) => Tolerance::Bitwise,
            Purpose::Canary { tolerance, .. } => *tolerance,
        };
        let results: Vec<(u32, Id, Arc<[u8]>)> = t
            .assignments
            .iter()
            .filter(|a| !a.dropped)
            .filter_map(|a| a.result.clone().map(|r| (a.attempt, a.node, r)))
            .collect();
        if (results.len() as u32) < t.replicas_wanted {
            return;
        }
        let outputs: Vec<&[u8]> = results.iter().map(|(_, _, r)| &r[..]).collect();
        match replicas::quorum(&outputs, tol, t.quorum as usize) {
            Some(winners) => {
                let losers: Vec<usize> = (0..results.len()).filter(|i| !winners.contains(i)).collect();
                for i in losers {
                    let (attempt, node, _) = &results[i];
                    self.reject(tid, *attempt, *node, "disagrees with the majority of replicas".into());
                }
                // Every agreeing replica is paid from the escrow (the client pays for its job's verification). The
                // job takes the reservation holder's bytes if it agreed, else the first agreeing one's; that one
                // settles last, because it completes the job and so refunds what the escrow has left.
                // Rejecting a loser may have ended the job (too many attempts): then nothing is accepted.
                if self.tasks.get(&tid).is_none_or(|t| t.done) {
                    return;
                }
                let hold = self.tasks.get(&tid).and_then(|t| t.hold).map(|(attempt, _)| attempt);
                let settler =
                    winners.iter().copied().find(|&i| Some(results[i].0) == hold).or(winners.first().copied());
                let mut ordered = winners.clone();
                if let Some(p) = settler {
                    ordered.retain(|&i| i != p);
                    ordered.push(p);
                }
                for &i in &ordered {
                    let (attempt, node, bytes) = results[i].clone();
                    self.accept_replica(tid, attempt, node, bytes, Some(i) == settler);
                }
                // Operators that agree independently make a known answer: a future canary.
                if let (true, Some(&i)) = (winners.len() >= 2, winners.first()) {
                    let producers: Vec<Id> =
                        winners.iter().filter_map(|&w| self.registry.get(&results[w].1).map(|n| n.operator)).collect();
                    self.remember_known_answer(tid, Arc::clone(&results[i].2), tol, producers);
                }
            }
            None => {
                let used = t.next_attempt;
                if used >= self.cfg.wgsl_max_replicas {
                    if let Purpose::Job(j) = t.purpose {
                        self.fail_job(j, format!("task {tid}: no majority among {used} replicas"));
                    }
                    return;
                }
                // Ask one more operator to break the tie.
                if let Some(t) = self.tasks.get_mut(&tid) {
                    t.replicas_wanted += 1;
                }
                self.enqueue(tid);
            }
        }
    }

    pub(crate) fn accept(&mut self, tid: TaskId, attempt: u32, node: Id, bytes: Arc<[u8]>, elapsed_ms: Option<u64>) {
        let Some(t) = self.tasks.get_mut(&tid) else { return };
        t.done = true;
        let purpose = t.purpose.clone();
        let work_mflop = t.work_mflop;
        let flops = match t.work {
            Work::Matmul { m, n, k, .. } => 2.0 * f64::from(m) * f64::from(n) * f64::from(k),
            Work::Wgsl { .. } | Work::Infer { .. } => work_mflop as f64 * 1e6,
        };
        let others: Vec<(u32, Id)> = t
            .assignments
            .iter()
            .filter(|a| !(a.dropped || (a.attempt == attempt && a.node == node)))
            .map(|a| (a.attempt, a.node))
            .collect();
        self.finish_assignment(tid, attempt, node);
        for (other_attempt, other) in others {
            // Replicas still running are no longer needed.
            self.drop_assignment(tid, other_attempt, other, AttemptEnd::Released);
        }
        let gflops = elapsed_ms.map_or(0.0, |ms| flops / (ms as f64 * 1e6));
        // A matmul result passed Freivalds' check: that counts toward the finality of the node's other results.
        self.check_passed(node, work_mflop);
        self.settle_accepted(tid, attempt, node, &purpose, work_mflop, gflops, bytes);
    }

    pub(crate) fn accept_replica(&mut self, tid: TaskId, attempt: u32, node: Id, bytes: Arc<[u8]>, settles: bool) {
        let Some(t) = self.tasks.get_mut(&tid) else { return };
        t.done = true;
        let purpose = t.purpose.clone();
        let work_mflop = t.work_mflop;
        let replicated = t.quorum >= 2;
        self.finish_assignment(tid, attempt, node);
        if matches!(purpose, Purpose::Job(_)) {
            if replicated {
                self.check_passed(node, work_mflop);
            } else {
                self.mark_provisional(tid, node);
            }
        }
        // Every agreeing replica is paid; the job takes the settling one's bytes.
        if settles {
            self.settle_accepted(tid, attempt, node, &purpose, work_mflop, 0.0, bytes);
        } else {
            self.pay(tid, attempt, node, &purpose, work_mflop);
        }
    }

    pub(crate) fn finish_assignment(&mut self, tid: TaskId, attempt: u32, node: Id) {
        if let Some(t) = self.tasks.get_mut(&tid)
            && let Some(a) = t.assignments.iter_mut().find(|a| a.attempt == attempt && a.node == node)
        {
            a.dropped = true;
        }
        let conn = self.registry.get(&node).and_then(|n| n.conn);
        self.vacate(tid, attempt, node);
        // Work finished during a conviction's cooldown (a challenge sent before it) earns the node no trust back.
        let now = self.now_ms;
        if let Some(n) = self.registry.get_mut(&node).filter(|n| now >= n.convicted_until_ms) {
            n.history.verified += 1;
        }
        if let Some(conn) = conn {
            self.send(conn, ToNode::Verdict { task_id: tid, attempt, accepted: true, reason: "verified".into() });
        }
    }

    /// Settles an accepted result; `measured_gflops` is the task's flops over its round-trip time.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn settle_accepted(
        &mut self,
        tid: TaskId,
        attempt: u32,
        node: Id,
        purpose: &Purpose,
        work_mflop: u64,
        measured_gflops: f64,
        bytes: Arc<[u8]>,
    ) {
        match *purpose {
            // Canaries settle in `evaluate_canary`.
            Purpose::Canary { .. } => {}
            Purpose::Attestation(n) => self.attestation_passed(n, tid, measured_gflops),
            Purpose::Job(job) => {
                if let Some(j) = self.jobs.get_mut(&job) {
                    let result_hash = blob_hash(&bytes);
                    j.task_done(tid, result_hash.clone());
                    // A small result is kept in the database with its record (it may never have been a blob).
                    let inline = (bytes.len() <= INLINE_RESULT_BYTES).then(|| Arc::clone(&bytes));
                    // Recorded before the reward is ordered: after a crash a paid task is never run (and paid) again.
                    self.effects.push(Effect::Persist(Record::TaskResult { job, task: tid, result_hash, inline }));
                    if self.tasks.get(&tid).is_some_and(|t| matches!(t.work, Work::Infer { .. })) {
                        self.pay_inference(tid, attempt, node, job, &bytes);
                    } else {
                        self.pay(tid, attempt, node, purpose, work_mflop);
                    }
                    if let Some(state) = self.jobs.get(&job).map(|j| j.state.clone()).filter(JobState::is_final) {
                        self.job_ended(job);
                        self.persist_job(job);
                        self.refund(job);
                        self.retire_tasks(job);
                        self.effects.push(Effect::JobFinished { job, state });
                    }
                }
            }
        }
        self.sync_scheduler(node);
    }

    /// Orders the reward for an accepted attempt, at the price the node asked when it took the task (never above
    /// the job's limit, whatever the node asks by the time it is paid), from the job's escrow.
    pub(crate) fn pay(&mut self, tid: TaskId, attempt: u32, node: Id, purpose: &Purpose, work_mflop: u64) {
        let Purpose::Job(job) = *purpose else { return };
        let Some(n) = self.registry.get(&node) else { return };
        let operator = n.operator;
        let asked = self
            .tasks
            .get(&tid)
            .and_then(|t| t.assignments.iter().find(|a| a.attempt == attempt && a.node == node))
            .map_or(n.price_nano_per_gflop, |a| a.price_nano_per_gflop);
        let limit = self.jobs.get(&job).map_or(u64::MAX, |j| j.max_price_nano_per_gflop);
        let rate = asked.min(limit);
        let price = self.task_price(purpose, work_mflop, asked);
        let (paid_nano, fee_nano) = self.pay_task(tid, attempt, operator, price);
        self.effects.push(Effect::Reward {
            job,
            task: tid,
            node,
            operator,
            work_mflop,
            price_nano_per_gflop: rate,
            paid_nano,
            fee_nano,
            royalty_nano: 0,
        });
    }

    /// A result outside the tight tolerance that rounding could still explain: not taken, not paid, counted as a
    /// failure of the node (its reliability falls), run again elsewhere; no evidence and no slash.
    pub(crate) fn doubt(&mut self, tid: TaskId, attempt: u32, node: Id, reason: String) {
        tracing::warn!(%node, task = tid, attempt, %reason, "result doubtful");
        if let Some(conn) = self.registry.get(&node).and_then(|n| n.conn) {
            self.send(conn, ToNode::Verdict { task_id: tid, attempt, accepted: false, reason });
        }
        self.drop_assignment(tid, attempt, node, AttemptEnd::Failed);
    }

    /// A result failed verification: keep the node's signed commitment as evidence, penalize, requeue.
    pub(crate) fn reject(&mut self, tid: TaskId, attempt: u32, node: Id, reason: String) {
        let commit = self
            .tasks
            .get(&tid)
            .and_then(|t| t.assignments.iter().find(|a| a.attempt == attempt && a.node == node))
            .and_then(|a| a.commit.as_ref().map(|(_, env)| Envelope::clone(env)));
        tracing::warn!(%node, task = tid, attempt, %reason, "result rejected");
        let failed_challenge = self.tasks.get(&tid).is_some_and(|t| matches!(t.purpose, Purpose::Attestation(_)));
        let evidence = commit.and_then(|commit| {
            let t = self.tasks.get(&tid)?;
            let opening = t
                .assignments
                .iter()
                .find(|a| a.attempt == attempt && a.node == node)
                .and_then(|a| a.proof.as_ref())
                .and_then(|p| Some((p.seed, p.opening_hash.clone()?)));
            Some(Evidence { task: tid, attempt, commit, work: t.work.clone(), reason: reason.clone(), opening })
        });
        if let Some(evidence) = evidence {
            self.effects.push(Effect::Persist(Record::Evidence(Box::new(evidence.clone()))));
            self.remember_evidence(evidence.clone());
            let mut slashed_nano = 0;
            if let Some(operator) = self.registry.get(&node).map(|n| n.operator) {
                slashed_nano = self.slash(operator, tid, attempt);
                self.effects.push(Effect::Slash { node, operator, evidence, slashed_nano });
            }
            self.revoke_provisional(node, slashed_nano);
        }
        if let Some(conn) = self.registry.get(&node).and_then(|n| n.conn) {
            self.send(conn, ToNode::Verdict { task_id: tid, attempt, accepted: false, reason });
        }
        // Proven fraud costs the node its attestation and its history: no paid work until it passes a new challenge,
        // which it is not given before the cooldown, and then it is spot-checked like a newcomer (a caught node used
        // to keep its floor spot-check rate and be re-attested seconds later).
        if let Some(n) = self.registry.get_mut(&node) {
            n.attested = false;
            if n.state == NodeState::Active {
                n.state = NodeState::Attesting;
            }
            n.history.verified = 0;
            n.next_challenge_ms = self.now_ms.saturating_add(self.cfg.conviction_cooldown_ms);
            // A challenge still in flight must not re-attest the node before the cooldown ends. (A failed challenge
            // is itself the only challenge in flight; its retry policy is the attestation's, in drop_assignment.)
            if !failed_challenge {
                n.convicted_until_ms = n.next_challenge_ms;
            }
        }
        self.drop_assignment(tid, attempt, node, AttemptEnd::Wrong);
        // Its other work is not trusted either: running attempts and delivered replicas still awaiting agreement.
        let others: Vec<(TaskId, u32)> = self
            .tasks
            .iter()
            .filter(|(_, t)| !t.done && matches!(t.purpose, Purpose::Job(_)))
            .flat_map(|(&other, t)| {
                t.assignments.iter().filter(|a| a.node == node && !a.dropped).map(move |a| (other, a.attempt))
            })
            .collect();
        for (other, other_attempt) in others {
            self.drop_assignment(other, other_attempt, node, AttemptEnd::Released);
        }
    }

    pub(crate) fn fail_job(&mut self, job: JobId, reason: String) {
        let Some(j) = self.jobs.get_mut(&job) else { return };
        if j.state.is_final() {
            return;
        }
        j.state = JobState::Failed { reason };
        let state = j.state.clone();
        let tasks = j.tasks.clone();
        self.job_ended(job);
        self.persist_job(job);
        for tid in tasks {
            let live: Vec<(u32, Id)> = self
                .tasks
                .get(&tid)
                .map(|t| t.assignments.iter().filter(|a| !a.dropped).map(|a| (a.attempt, a.node)).collect())
                .unwrap_or_default();
            if let Some(t) = self.tasks.get_mut(&tid) {
                t.done = true;
            }
            for (attempt, node) in live {
                self.drop_assignment(tid, attempt, node, AttemptEnd::Released);
                if let Some(conn) = self.registry.get(&node).and_then(|n| n.conn) {
                    self.send(conn, ToNode::Cancel { task_id: tid, attempt });
                }
            }
        }
        self.refund(job);
        self.retire_tasks(job);
        self.effects.push(Effect::JobFinished { job, state });
    }

    /// A finished job's tasks keep only what its status page shows: operands and result bytes are let go (the job
    /// keeps its assembled result), so memory does not grow with the jobs served.
    pub(crate) fn retire_tasks(&mut self, job: JobId) {
        let Some(tasks) = self.jobs.get(&job).map(|j| j.tasks.clone()) else { return };
        for tid in tasks {
            if let Some(t) = self.tasks.get_mut(&tid) {
                t.operands = None;
                for a in &mut t.assignments {
                    a.result = None;
                }
            }
        }
    }
}
