//! A node's life in the network: what the scheduler knows of it, heartbeats (stale, then offline), attestation
//! challenges grown until compute dominates the round trip, unannounced re-challenges, and room in a full registry.

use neurolov_protocol::Id;
use neurolov_protocol::messages::Work;
use neurolov_scheduler::{NodeInfo, WorkHistory, reliability};

use crate::registry::Node;
use crate::settle::AttemptEnd;
use crate::taskbook::Purpose;
use crate::{Core, Effect, NodeState, RUNS_WGSL, Record, TaskId, jobs, usage};

/// The scheduler's key for an operator: the first eight bytes of its public key.
pub(crate) fn operator_key(id: &Id) -> u64 {
    let b = id.as_bytes();
    u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

impl Core {
    pub(crate) fn reliability_of(&self, n: &Node) -> f64 {
        let known = self.now_ms.saturating_sub(n.first_seen_ms) / 1000;
        reliability(&WorkHistory { uptime_s: n.up_ms / 1000, known_s: known, ..n.history })
    }

    /// Tells the scheduler what is now true of a node.
    pub(crate) fn sync_scheduler(&mut self, id: Id) {
        self.persist_node(id);
        let Some(n) = self.registry.get(&id) else { return };
        let info = NodeInfo {
            operator: operator_key(&n.operator),
            eligible: n.attested && n.state == NodeState::Active,
            verified_gflops: n.gflops_verified,
            reliability: self.reliability_of(n).clamp(0.0, 1.0),
            price_nano_per_gflop: n.price_nano_per_gflop,
            // Claims, not measurements: a node that claims a feature or memory it lacks fails those tasks and loses
            // reliability. Unknown feature names are ignored; memory 0 means "not stated".
            features: neurolov_scheduler::Features(
                n.claimed
                    .features
                    .iter()
                    .fold(if n.claimed.wgsl { RUNS_WGSL } else { neurolov_scheduler::Features::NONE }, |acc, name| {
                        jobs::feature_bits(std::slice::from_ref(name))
                            .map_or(acc, |f| neurolov_scheduler::Features(acc.0 | f.0))
                    })
                    .0
                    | crate::inference::model_bits(&self.cfg, &n.claimed.models).0
                    | if n.claimed.fetches_models { crate::inference::FETCHES_MODELS.0 } else { 0 },
            ),
            memory_bytes: if n.claimed.memory_bytes == 0 { u64::MAX } else { n.claimed.memory_bytes },
            slots: n.slots,
            stake_share: self.stake_share(&n.operator),
        };
        let key = n.key;
        if let Err(e) = self.sched.upsert(key, info) {
            tracing::warn!(node = %id, error = %e, "scheduler refused node metrics");
        }
    }

    /// Sends a node its (re-)attestation: a matmul from a secret seed, timed and checked with Freivalds.
    pub(crate) fn challenge(&mut self, id: Id) {
        if self.registry.get(&id).is_none_or(|n| n.challenge.is_some() || n.conn.is_none()) {
            return;
        }
        let size = self.registry.get(&id).map_or(0, |n| n.challenge_size).max(self.cfg.attestation_size);
        let (seed_a, seed_b) = (self.rng.u64(..), self.rng.u64(..));
        let verify_seed = self.rng.u64(..);
        let (work, operands) = jobs::seeded_matmul(size, size, size, seed_a, seed_b, verify_seed);
        let mflop = 2 * u64::from(size).pow(3) / 1_000_000;
        let tid = self.new_task(Purpose::Attestation(id), work, Some(operands), mflop, 1);
        // Challenge ids are recorded too, so a restarted coordinator never hands out the same task id twice.
        self.persist_ids();
        if let Some(n) = self.registry.get_mut(&id) {
            n.challenge = Some(tid);
        }
        self.assign(tid, id);
    }

    /// A challenge passed at `measured` GFLOP/s. A challenge that came back in under `attestation_target_ms`
    /// measured the round trip more than the node: the next one, twice the size (eight times the work, within
    /// `max_attestation_size` and the node's memory claim), goes out at once, until compute dominates; the figure
    /// rises with each. (At a fixed 256³ a 380 GFLOP/s CPU was listed at 3–7 GFLOP/s; measured on a 16-core machine
    /// whose `neurolov bench` gives 289–301 GFLOP/s, a CPU node is now listed at 134 GFLOP/s after a 4096³ challenge.)
    pub(crate) fn attestation_passed(&mut self, n: Id, tid: TaskId, measured: f64) {
        let size = match self.tasks.get(&tid).map(|t| &t.work) {
            Some(Work::Matmul { k, .. }) => *k,
            _ => self.cfg.attestation_size,
        };
        let took_ms = 2.0 * f64::from(size).powi(3) / (measured.max(1e-9) * 1e6);
        let next = size.saturating_mul(2).min(self.cfg.max_attestation_size);
        let fits = |memory: u64| memory == 0 || jobs::matmul_bytes(next, next, next) <= memory;
        let target = self.cfg.attestation_target_ms as f64;
        let Some(rec) = self.registry.get_mut(&n) else { return };
        rec.challenge = None;
        if self.now_ms < rec.convicted_until_ms {
            // A challenge sent before the node was convicted: answered, it proves speed, not honesty.
            rec.next_challenge_ms = rec.convicted_until_ms;
            tracing::info!(node = %n, "challenge answered during a conviction's cooldown: not attested");
            self.tasks.remove(&tid);
            return;
        }
        let first = !rec.attested;
        let growing = size > rec.measured_size;
        let grow = took_ms < target && next > size && fits(rec.claimed.memory_bytes);
        // A re-measured node that has slowed down far below its record is re-rated at its real speed; a bigger
        // challenge measures more of the node and less of the network.
        let slowed = measured < rec.gflops_verified * self.cfg.rechallenge_min_share;
        if first || slowed || (growing && measured > rec.gflops_verified) {
            rec.gflops_verified = measured;
            rec.measured_size = size;
        }
        rec.challenge_size = size;
        rec.attested = true;
        if rec.state == NodeState::Attesting {
            rec.state = NodeState::Active;
        }
        tracing::info!(node = %n, gflops = measured, size, "attestation passed");
        if grow {
            rec.challenge_size = next;
            rec.next_challenge_ms = self.now_ms;
        } else {
            self.schedule_rechallenge(n);
        }
        self.sync_scheduler(n);
        // A passed challenge has nothing more to say: its operands go.
        self.tasks.remove(&tid);
    }

    pub(crate) fn schedule_rechallenge(&mut self, id: Id) {
        // Exponential waiting times: a node cannot tell when the next check comes.
        let u = self.rng.f64().max(1e-12);
        let wait = (-(u.ln()) * self.cfg.rechallenge_mean_ms as f64) as u64;
        let now = self.now_ms;
        if let Some(n) = self.registry.get_mut(&id) {
            n.next_challenge_ms = now.saturating_add(wait.max(1));
        }
    }

    pub(crate) fn supervise(&mut self) {
        self.expire_checks();
        let now = self.now_ms;
        let active = self.registry.values().filter(|n| n.state == NodeState::Active && n.attested);
        let seen = active.fold(usage::Sample::default(), |s, n| usage::Sample {
            active_nodes: s.active_nodes + 1,
            slots: s.slots + u64::from(n.slots),
            busy: s.busy + n.running.len() as u64,
        });
        self.usage.sample(now, seen);
        let interval = self.cfg.heartbeat_interval_ms.max(1);
        // A connection that has not registered within the offline window is dead weight.
        let silent = self.registry.unregistered_for(now, interval * self.cfg.offline_after_missed);
        for conn in silent {
            self.registry.close(conn);
            self.effects.push(Effect::Close { conn, reason: "did not register".into() });
        }
        for id in self.registry.ids() {
            self.watch(id, now, interval);
        }
        // Deadlines: only attempts nodes are holding can be late.
        let held: Vec<(TaskId, u32, Id)> =
            self.registry.iter().flat_map(|(&id, n)| n.running.iter().map(move |&(t, a)| (t, a, id))).collect();
        for (tid, attempt, node) in held {
            let late = self.tasks.get(&tid).is_some_and(|t| {
                !t.done
                    && t.assignments.iter().any(|a| {
                        a.attempt == attempt
                            && a.node == node
                            && !a.dropped
                            && a.result.is_none()
                            && a.deadline_ms <= now
                    })
            });
            if late {
                self.drop_assignment(tid, attempt, node, AttemptEnd::TimedOut);
            }
        }
        self.expire_waiting();
    }

    /// One node's heartbeats at `now_ms`: offline after `offline_after_missed` intervals of silence (its socket
    /// closed), stale after `stale_after_missed` (no new work); and its re-challenge when one is due.
    fn watch(&mut self, id: Id, now: u64, interval: u64) {
        let Some(n) = self.registry.get(&id) else { return };
        if n.conn.is_none() {
            return;
        }
        let missed = now.saturating_sub(n.last_seen_ms) / interval;
        if missed >= self.cfg.offline_after_missed {
            let conn = n.conn;
            self.go_offline(id, "missed heartbeats");
            if let Some(conn) = conn {
                self.effects.push(Effect::Close { conn, reason: "missed heartbeats".into() });
            }
            return;
        }
        if missed >= self.cfg.stale_after_missed && matches!(n.state, NodeState::Active | NodeState::Attesting) {
            tracing::warn!(node = %id, missed, "heartbeat missed");
            if let Some(n) = self.registry.get_mut(&id) {
                n.state = NodeState::Stale;
            }
            self.sync_scheduler(id);
        }
        // Unannounced re-challenges of attested nodes, and new tries for nodes not yet attested.
        if let Some(n) = self.registry.get(&id)
            && n.challenge.is_none()
            && n.next_challenge_ms <= now
            && ((n.attested && n.state == NodeState::Active) || n.state == NodeState::Attesting)
        {
            self.challenge(id);
        }
    }

    /// A full registry forgets the idle offline node with the least verified work (the least recently seen among
    /// equals) — but never one whose operator has stake, or that holds provisional results (they must stay
    /// revocable). So throwaway keys cannot lock newcomers out — not even Sybils that once passed a check, which used
    /// to be kept forever.
    pub(crate) fn make_room(&mut self) -> bool {
        let victim = self
            .registry
            .iter()
            .filter(|(_, n)| n.state == NodeState::Offline && n.running.is_empty() && n.provisional.is_empty())
            .filter(|(_, n)| self.stake_share(&n.operator) == 0.0)
            .min_by_key(|(_, n)| (n.history.verified, n.last_seen_ms))
            .map(|(&id, _)| id);
        let Some(id) = victim else { return false };
        if let Some(n) = self.registry.forget(&id) {
            let _ = self.sched.remove(n.key);
        }
        tracing::info!(node = %id, "registry full: forgot the least proven idle offline node");
        self.effects.push(Effect::Persist(Record::NodeForgotten { id }));
        true
    }

    pub(crate) fn go_offline(&mut self, id: Id, why: &str) {
        let Some(n) = self.registry.get_mut(&id) else { return };
        tracing::info!(node = %id, why, "node offline");
        n.state = NodeState::Offline;
        n.conn = None;
        let running: Vec<(TaskId, u32)> = n.running.iter().copied().collect();
        self.sync_scheduler(id);
        for (tid, attempt) in running {
            self.drop_assignment(tid, attempt, id, AttemptEnd::Released);
        }
    }
}
