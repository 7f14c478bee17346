//! A node's frames: the session rules every signed frame must pass (its connection's nonce, rising sequence numbers,
//! the registered signer), then what each message does — register, heartbeat, commit, result, failed, goodbye. A
//! refused frame changes nothing, its sequence number included. Parsing and the signature check need no state and run
//! before the core is locked ([`open_frame`]).

use std::sync::Arc;

use neurolov_protocol::messages::{
    ClaimedHardware, ErrorCode, MAX_SLOTS, MIN_PROTOCOL_VERSION, NodeKind, ToNode, Work,
};
use neurolov_protocol::{Envelope, FromNode, Id, PROTOCOL_VERSION};

use crate::registry::Node;
use crate::settle::{AttemptEnd, result_sizes};
use crate::taskbook::Assignment;
use crate::{Blobs, ConnId, Core, Effect, NodeState, TaskId, Verification, wallet};

/// A node frame parsed, its signature checked and its fields held to their limits — or why not.
pub type Opened = Result<(Envelope, FromNode), (ErrorCode, String)>;

/// Opens a node frame: pure and stateless, so the shell runs it before it locks the core.
pub fn open_frame(text: &str) -> Opened {
    open_frame_with(text, &mut neurolov_protocol::KeyCache::default())
}

/// [`open_frame`] with a session's cache of its signer's key.
pub fn open_frame_with(text: &str, keys: &mut neurolov_protocol::KeyCache) -> Opened {
    let code = |e: neurolov_protocol::EnvelopeError| match e {
        neurolov_protocol::EnvelopeError::TooLarge(_) => (ErrorCode::TooLarge, e.to_string()),
        neurolov_protocol::EnvelopeError::Signature(_) => (ErrorCode::BadSignature, e.to_string()),
        neurolov_protocol::EnvelopeError::Malformed(_) => (ErrorCode::Malformed, e.to_string()),
    };
    let env = Envelope::from_frame(text).map_err(code)?;
    let msg: FromNode = env.open_with(keys).map_err(code)?;
    msg.check_limits().map_err(|e| (ErrorCode::Malformed, e))?;
    Ok((env, msg))
}

impl Core {
    pub(crate) fn strike(&mut self, conn: ConnId, code: ErrorCode, message: String) {
        tracing::debug!(conn, ?code, %message, "frame refused");
        self.send(conn, ToNode::Error { code, message });
        if let Some(c) = self.registry.conn_mut(conn) {
            c.strikes += 1;
            if c.strikes >= self.cfg.max_strikes {
                self.effects.push(Effect::Close { conn, reason: "too many refused frames".into() });
            }
        }
    }

    pub(crate) fn handle_frame(
        &mut self,
        conn: ConnId,
        env: Envelope,
        msg: FromNode,
        blobs: &dyn Blobs,
    ) -> Result<(), (ErrorCode, String)> {
        let Some(c) = self.registry.conn(conn) else {
            return Err((ErrorCode::NotRegistered, "unknown connection".into()));
        };
        let (session, seq) = msg.session_seq();
        if session != c.nonce {
            return Err((ErrorCode::WrongSession, "session does not match this connection's challenge".into()));
        }
        if c.last_seq.is_some_and(|last| seq <= last) {
            return Err((ErrorCode::Replayed, format!("sequence number {seq} already used")));
        }
        if let Some(node) = c.node
            && self.registry.get(&node).and_then(|n| n.conn) != Some(conn)
        {
            return Err((ErrorCode::WrongSession, "this session was superseded by a newer one".into()));
        }
        match (c.node, &msg) {
            (None, FromNode::Register { .. }) => {}
            (None, _) => return Err((ErrorCode::NotRegistered, "register first".into())),
            (Some(_), FromNode::Register { .. }) => return Err((ErrorCode::Malformed, "already registered".into())),
            (Some(node), _) if node != env.signer => {
                return Err((ErrorCode::BadSignature, "signed by another node than the one registered".into()));
            }
            _ => {}
        }
        let node = env.signer;
        // A refused frame changes nothing, its sequence number included.
        let handled = self.handle_message(conn, node, env, msg, blobs);
        if handled.is_ok()
            && let Some(c) = self.registry.conn_mut(conn)
        {
            c.last_seq = Some(seq);
        }
        handled
    }

    /// What a frame that passed the session rules does.
    pub(crate) fn handle_message(
        &mut self,
        conn: ConnId,
        node: Id,
        env: Envelope,
        msg: FromNode,
        blobs: &dyn Blobs,
    ) -> Result<(), (ErrorCode, String)> {
        if !matches!(msg, FromNode::Register { .. } | FromNode::Goodbye { .. }) {
            self.heard_from(node);
        }
        match msg {
            FromNode::Register {
                version,
                operator,
                kind,
                claimed,
                price_nano_per_gflop,
                slots,
                operator_delegation,
                ..
            } => {
                check_registration(&node, &operator, operator_delegation.as_ref(), version, slots)?;
                if let Some(c) = self.registry.conn_mut(conn) {
                    c.version = version;
                }
                self.register(conn, node, operator, kind, claimed, price_nano_per_gflop, slots)
            }
            FromNode::Heartbeat { .. } => Ok(()),
            FromNode::Commit { task_id, attempt, result_hash, .. } => {
                let a = self.assignment_mut(task_id, attempt, node)?;
                if a.commit.is_some() {
                    return Err((ErrorCode::Malformed, "attempt already committed".into()));
                }
                a.commit = Some((result_hash, Arc::new(env)));
                Ok(())
            }
            FromNode::Result { task_id, attempt, result_hash, .. } => {
                let size = blobs.size(&result_hash).ok_or((ErrorCode::UnknownTask, "result blob not uploaded".into()));
                self.result_delivered(node, (task_id, attempt), result_hash, size?, None)
            }
            FromNode::Failed { task_id, attempt, reason, .. } => self.gave_back(node, task_id, attempt, &reason),
            FromNode::Opened { task_id, attempt, opening_hash, .. } => {
                self.opening_delivered(node, (task_id, attempt), opening_hash, blobs)
            }
            FromNode::Deliver { results, failed, .. } => {
                self.deliver_batch(conn, node, Arc::new(env), results, failed);
                Ok(())
            }
            FromNode::Goodbye { .. } => {
                self.go_offline(node, "goodbye");
                self.effects.push(Effect::Close { conn, reason: "goodbye".into() });
                Ok(())
            }
        }
    }

    /// The node gives an attempt back (`failed`, or a give-back in a `deliver`).
    fn gave_back(&mut self, node: Id, task_id: TaskId, attempt: u32, reason: &str) -> Result<(), (ErrorCode, String)> {
        let a = self.assignment_mut(task_id, attempt, node)?;
        // A delivered result is judged, whatever the node says next: taking it back would dodge the check of its
        // signed commitment.
        if a.verifying || a.result.is_some() {
            return Err((ErrorCode::Malformed, "result already delivered".into()));
        }
        tracing::info!(%node, task_id, %reason, "node gave a task back");
        self.drop_assignment(task_id, attempt, node, AttemptEnd::Failed);
        Ok(())
    }

    /// A version-2 `deliver` frame: each item is taken or refused on its own, as the one-item message it replaces
    /// would be (a refused item is answered with an `error` and counts as a strike; the others stand).
    fn deliver_batch(
        &mut self,
        conn: ConnId,
        node: Id,
        env: Arc<Envelope>,
        results: Vec<neurolov_protocol::messages::InlineResult>,
        failed: Vec<neurolov_protocol::messages::GiveBack>,
    ) {
        for item in results {
            let (task_id, attempt) = (item.task_id, item.attempt);
            if let Err((code, message)) = self.inline_delivered(node, &env, item) {
                self.strike(conn, code, format!("task {task_id} attempt {attempt}: {message}"));
            }
        }
        for item in failed {
            if let Err((code, message)) = self.gave_back(node, item.task_id, item.attempt, &item.reason) {
                self.strike(conn, code, format!("task {} attempt {}: {message}", item.task_id, item.attempt));
            }
        }
    }

    /// A result delivered inside a signed `deliver` frame: the frame is both its commitment and its bytes.
    fn inline_delivered(
        &mut self,
        node: Id,
        env: &Arc<Envelope>,
        item: neurolov_protocol::messages::InlineResult,
    ) -> Result<(), (ErrorCode, String)> {
        let bytes = item.bytes().map_err(|e| (ErrorCode::Malformed, e))?;
        let a = self.assignment_mut(item.task_id, item.attempt, node)?;
        if a.commit.is_some() {
            return Err((ErrorCode::Malformed, "attempt already committed".into()));
        }
        a.commit = Some((item.result_hash.clone(), Arc::clone(env)));
        let size = bytes.len() as u64;
        let delivered =
            self.result_delivered(node, (item.task_id, item.attempt), item.result_hash, size, Some(bytes.into()));
        if delivered.is_err()
            && let Ok(a) = self.assignment_mut(item.task_id, item.attempt, node)
        {
            // Refused as a whole: the attempt stays open, uncommitted, as if the item never came.
            a.commit = None;
        }
        delivered
    }

    /// A result delivered as committed, `size` bytes: its size is checked before anything is read (a node cannot
    /// make the coordinator load a huge blob), then it goes out for checking off the core's lock ([`Core::verified`]
    /// settles it). Delivered, the attempt frees the node's slot, and the result stands even if the node goes away.
    fn result_delivered(
        &mut self,
        node: Id,
        (task_id, attempt): (TaskId, u32),
        result_hash: String,
        size: u64,
        inline: Option<Arc<[u8]>>,
    ) -> Result<(), (ErrorCode, String)> {
        let (sizes, operands, infer) = self.tasks.get(&task_id).map_or((0..=0, None, false), |t| {
            (result_sizes(&self.cfg, &t.work), t.operands.clone(), matches!(t.work, Work::Infer { .. }))
        });
        let now = self.now_ms;
        let a = self.assignment_mut(task_id, attempt, node)?;
        if a.verifying || a.result.is_some() {
            return Err((ErrorCode::Malformed, "result already delivered".into()));
        }
        match &a.commit {
            Some((committed, _)) if *committed == result_hash => {}
            Some(_) => return Err((ErrorCode::CommitmentMismatch, "result hash differs from the commitment".into())),
            None => return Err((ErrorCode::CommitmentMismatch, "commit before sending a result".into())),
        }
        if !sizes.contains(&size) {
            let (lo, hi) = sizes.into_inner();
            let expected = if lo == hi { format!("{lo}") } else { format!("{lo} to {hi}") };
            return Err((ErrorCode::Malformed, format!("result is {size} bytes, the task produces {expected}")));
        }
        a.verifying = true;
        a.delivered_ms = now;
        if infer {
            // Committed: now the challenge (the check goes out when the opening is stored).
            self.ask_to_open(node, (task_id, attempt), inline);
            return Ok(());
        }
        self.tasks.begin_check(now, task_id, attempt, node);
        self.vacate(task_id, attempt, node);
        let rounds = self.cfg.freivalds_rounds;
        let check = Verification::new(task_id, attempt, node, result_hash, inline, operands, rounds);
        self.effects.push(Effect::Verify(Box::new(check)));
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn register(
        &mut self,
        conn: ConnId,
        id: Id,
        operator: Id,
        kind: NodeKind,
        claimed: ClaimedHardware,
        price_nano_per_gflop: u64,
        slots: u32,
    ) -> Result<(), (ErrorCode, String)> {
        if !self.registry.contains(&id) && self.registry.len() >= self.cfg.max_nodes && !self.make_room() {
            return Err((ErrorCode::RateLimited, format!("the network is full ({} nodes)", self.cfg.max_nodes)));
        }
        let now = self.now_ms;
        // A node that registers again on a new connection leaves its old session behind.
        if let Some(old) = self.registry.get(&id).and_then(|n| n.conn).filter(|&c| c != conn) {
            self.go_offline(id, "registered on a new connection");
            self.effects.push(Effect::Close { conn: old, reason: "superseded by a new session".into() });
        }
        let n = self.registry.entry(id, |key| Node::new(key, operator, kind, now));
        if n.operator != operator {
            return Err((ErrorCode::Malformed, "a node's operator cannot change".into()));
        }
        n.kind = kind;
        n.claimed = claimed;
        n.price_nano_per_gflop = price_nano_per_gflop;
        n.slots = slots;
        n.conn = Some(conn);
        n.last_seen_ms = now;
        n.state = if n.attested { NodeState::Active } else { NodeState::Attesting };
        let attested = n.attested;
        if let Some(c) = self.registry.conn_mut(conn) {
            c.node = Some(id);
        }
        self.open_account(wallet(&operator), neurolov_ledger::Kind::Provider, &operator.to_string());
        self.send(conn, ToNode::Registered { node: id, heartbeat_interval_ms: self.cfg.heartbeat_interval_ms });
        self.sync_scheduler(id);
        if attested {
            self.schedule_rechallenge(id);
        } else {
            self.challenge(id);
        }
        Ok(())
    }

    pub(crate) fn heard_from(&mut self, id: Id) {
        let now = self.now_ms;
        let Some(n) = self.registry.get_mut(&id) else { return };
        n.up_ms += now.saturating_sub(n.last_seen_ms).min(self.cfg.heartbeat_interval_ms);
        n.last_seen_ms = now;
        if n.state == NodeState::Stale {
            n.state = if n.attested { NodeState::Active } else { NodeState::Attesting };
            self.sync_scheduler(id);
        }
    }

    pub(crate) fn assignment_mut(
        &mut self,
        task: TaskId,
        attempt: u32,
        node: Id,
    ) -> Result<&mut Assignment, (ErrorCode, String)> {
        self.tasks
            .get_mut(&task)
            .filter(|t| !t.done)
            .and_then(|t| t.assignments.iter_mut().find(|a| a.attempt == attempt && a.node == node && !a.dropped))
            .ok_or((ErrorCode::UnknownTask, format!("no open attempt {attempt} of task {task} for this node")))
    }
}

/// What a registration must say before the registry is touched: an operator that delegated to this node (it is
/// paid for the node's work and slashed for its fraud, so it must have said yes), our protocol version, and a slot
/// count within the protocol's limit.
fn check_registration(
    node: &Id,
    operator: &Id,
    delegation: Option<&neurolov_protocol::Signature>,
    version: u32,
    slots: u32,
) -> Result<(), (ErrorCode, String)> {
    neurolov_protocol::identity::check_delegation(operator, node, delegation).map_err(|_| {
        (ErrorCode::BadSignature, "the operator has not delegated to this node (operator_delegation)".into())
    })?;
    if !(MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&version) {
        let speaks = format!("this coordinator speaks versions {MIN_PROTOCOL_VERSION} to {PROTOCOL_VERSION}");
        return Err((ErrorCode::UnsupportedVersion, speaks));
    }
    if slots == 0 || slots > MAX_SLOTS {
        return Err((ErrorCode::Malformed, format!("slots must be 1..={MAX_SLOTS}")));
    }
    Ok(())
}
