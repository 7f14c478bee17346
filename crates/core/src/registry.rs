//! The node registry: the sockets open now, every node the network knows, and the small integer key each node has
//! in the scheduler. It owns the links between them — a connection names the node registered on it, a node names
//! its current connection, a key names exactly one node — and keeps them consistent: nodes and keys are added and
//! removed together, and a key is never handed out twice, so a stale key names nobody. What a node *does* (its
//! challenges, tasks, reputation) is decided by the core; the registry only holds it.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use neurolov_protocol::Id;
use neurolov_protocol::messages::{ClaimedHardware, NodeKind};
use neurolov_scheduler::WorkHistory;

use crate::{ConnId, NodeState, TaskId};

/// An open socket.
pub(crate) struct Conn {
    /// When it opened: a socket that never registers is closed after a while (see `supervise`).
    pub opened_ms: u64,
    /// The session nonce of its challenge: every signed frame on it must carry this, so frames of another session
    /// (or replayed from an old one) are refused.
    pub nonce: String,
    /// The node registered on it, once it has.
    pub node: Option<Id>,
    /// The last sequence number accepted: each frame's must be higher.
    pub last_seq: Option<u64>,
    /// Frames refused so far: past `Config::max_strikes` the socket is closed.
    pub strikes: u32,
    /// The protocol version its node registered with (0 before): version 2 gets its tasks batched.
    pub version: u32,
}

/// A node the network knows: what it claims, how it is doing now, and its reputation.
pub(crate) struct Node {
    /// Its key in the scheduler (see [`Registry`]).
    pub key: u64,
    /// Who is paid for its work and slashed for its fraud (signed a delegation to it).
    pub operator: Id,
    pub kind: NodeKind,
    /// What it says it has (adapter, memory, features, WGSL): claims, checked only by its results.
    pub claimed: ClaimedHardware,
    /// Its ask; an attempt keeps the ask the node had when it took the task.
    pub price_nano_per_gflop: u64,
    /// Tasks it runs at once.
    pub slots: u32,
    /// Its current session's socket (None while offline); an older socket it left behind is not it.
    pub conn: Option<ConnId>,
    pub state: NodeState,
    /// When it last said anything: missed heartbeats are counted from here.
    pub last_seen_ms: u64,
    pub first_seen_ms: u64,
    /// Time online, for reliability and the operational-hours statistic.
    pub up_ms: u64,
    pub history: WorkHistory,
    /// Its speed as measured by its last telling challenge.
    pub gflops_verified: f64,
    /// Passed a challenge and not convicted since: only attested nodes get paid work.
    pub attested: bool,
    /// The challenge it holds now, if any.
    pub challenge: Option<TaskId>,
    /// When it is challenged next (unannounced re-challenges keep the speed figure honest).
    pub next_challenge_ms: u64,
    /// Proven fraud bars it from attestation until then, whatever challenge it answers meanwhile (one already in
    /// flight when it was convicted would otherwise re-attest it at once). In memory only: after a restart a
    /// convicted node, stored unattested, is challenged like any unattested node.
    pub convicted_until_ms: u64,
    /// (task, attempt) this node holds.
    pub running: BTreeSet<(TaskId, u32)>,
    /// Declared work (MFLOP) of the checks passed (agreeing replicas, canaries, Freivalds-checked matmuls): what makes
    /// provisional results final (see `finality.rs`).
    pub checks_passed: u64,
    /// Results accepted from this node without a replica, with `checks_passed` at the time (see `finality.rs`).
    pub provisional: Vec<(TaskId, u64)>,
    /// n of this node's next n×n·n×n challenge: grown until compute dominates the round trip.
    pub challenge_size: u32,
    /// n of the challenge that set `gflops_verified`: a bigger one may raise it.
    pub measured_size: u32,
}

impl Node {
    /// A node seen for the first time: offline, unattested, no history.
    pub fn new(key: u64, operator: Id, kind: NodeKind, now_ms: u64) -> Node {
        Node {
            key,
            operator,
            kind,
            claimed: ClaimedHardware::default(),
            price_nano_per_gflop: 0,
            slots: 0,
            conn: None,
            state: NodeState::Offline,
            last_seen_ms: now_ms,
            first_seen_ms: now_ms,
            up_ms: 0,
            history: WorkHistory::default(),
            gflops_verified: 0.0,
            attested: false,
            challenge: None,
            next_challenge_ms: 0,
            convicted_until_ms: 0,
            running: BTreeSet::new(),
            checks_passed: 0,
            provisional: Vec::new(),
            challenge_size: 0,
            measured_size: 0,
        }
    }
}

/// Sockets, nodes and scheduler keys (see the module doc).
#[derive(Default)]
pub(crate) struct Registry {
    /// Open sockets by the shell's number.
    conns: HashMap<ConnId, Conn>,
    /// Every node known, online or not: a reputation outlives its connections (and a restart).
    nodes: BTreeMap<Id, Node>,
    /// Scheduler key → node: the scheduler works with small integers.
    keys: HashMap<u64, Id>,
    /// The next key to hand out (never reused).
    next_key: u64,
}

impl Registry {
    /// A socket opened with this session nonce.
    pub fn open(&mut self, conn: ConnId, nonce: String, now_ms: u64) {
        let c = Conn { opened_ms: now_ms, nonce, node: None, last_seq: None, strikes: 0, version: 0 };
        let before = self.conns.insert(conn, c);
        debug_assert!(before.is_none(), "connection {conn} opened twice");
    }

    /// A socket closed: the node whose current session it was, if any (a socket a node already left behind for a
    /// newer one names nobody).
    pub fn close(&mut self, conn: ConnId) -> Option<Id> {
        let id = self.conns.remove(&conn)?.node?;
        self.nodes.get(&id).is_some_and(|n| n.conn == Some(conn)).then_some(id)
    }

    pub fn conn(&self, conn: ConnId) -> Option<&Conn> {
        self.conns.get(&conn)
    }

    pub fn conn_mut(&mut self, conn: ConnId) -> Option<&mut Conn> {
        self.conns.get_mut(&conn)
    }

    /// Sockets open for `age_ms` or longer by `now_ms` on which no node has registered.
    pub fn unregistered_for(&self, now_ms: u64, age_ms: u64) -> Vec<ConnId> {
        let old = |c: &Conn| c.node.is_none() && now_ms.saturating_sub(c.opened_ms) >= age_ms;
        self.conns.iter().filter(|(_, c)| old(c)).map(|(&id, _)| id).collect()
    }

    pub fn get(&self, id: &Id) -> Option<&Node> {
        self.nodes.get(id)
    }

    pub fn get_mut(&mut self, id: &Id) -> Option<&mut Node> {
        self.nodes.get_mut(id)
    }

    pub fn contains(&self, id: &Id) -> bool {
        self.nodes.contains_key(id)
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Id, &Node)> {
        self.nodes.iter()
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&Id, &mut Node)> {
        self.nodes.iter_mut()
    }

    pub fn values(&self) -> impl Iterator<Item = &Node> {
        self.nodes.values()
    }

    pub fn ids(&self) -> Vec<Id> {
        self.nodes.keys().copied().collect()
    }

    /// The node a scheduler key names.
    pub fn id_of(&self, key: u64) -> Option<Id> {
        self.keys.get(&key).copied()
    }

    /// The node `id`, added (with a fresh key) by `new` if it is not known yet.
    pub fn entry(&mut self, id: Id, new: impl FnOnce(u64) -> Node) -> &mut Node {
        let Registry { nodes, keys, next_key, .. } = self;
        nodes.entry(id).or_insert_with(|| {
            *next_key += 1;
            keys.insert(*next_key, id);
            new(*next_key)
        })
    }

    /// Lets `id` go: its key names nobody from now on.
    pub fn forget(&mut self, id: &Id) -> Option<Node> {
        let node = self.nodes.remove(id)?;
        let named = self.keys.remove(&node.key);
        debug_assert_eq!(named, Some(*id), "node {id} and its key disagree");
        Some(node)
    }
}
