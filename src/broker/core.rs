//! `ShardCore`: the state of one shard and the entry points the runtime calls. The behaviour lives in the
//! sibling modules (`handle/` per packet kind, `delivery`, `lifecycle`, `mesh`, `timers`, `outbound`),
//! each an `impl ShardCore` block over the fields declared here.

use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use ahash::AHashMap;
use bytes::{Bytes, BytesMut};

use super::connection::{Connection, ConnectionAuth, Connections};
use super::durability::DurabilityGate;
use super::external_auth::ExternalWaits;
use super::held_suback::HeldSubAck;
use super::interest::InterestTrie;
use super::lifecycle::CloseReason;
use super::memory_budget::MemoryBudget;
use super::message::{Action, ConnId, MeshMessage, Message, ShardId};
use super::outbound::FanoutHeaders;
use super::publish_limit::PublishLimiter;
use super::retain::RetainedStore;
use super::session::{SessionKey, Sessions};
use super::settings::BrokerSettings;
use super::stats::{CoreGauges, CoreStats, IoCounters};
use super::subscriptions::SubscriptionTrie;
use super::timer_wheel::TimerWheel;
use super::timers::TimerKey;
use crate::auth::{AccessControl, AuthMethods, ListenerId, TokenGrant};
use crate::protocol::{DecodeError, Packet, ProtocolVersion};
use crate::validation::RuleSet;

/// All MQTT state and behaviour of one shard.
pub struct ShardCore {
    pub(super) shard: ShardId,
    pub(super) shard_count: usize,
    pub(super) settings: Rc<BrokerSettings>,
    pub(super) connections: Connections,
    pub(super) sessions: Sessions,
    pub(super) subscriptions: SubscriptionTrie,
    pub(super) interest: InterestTrie,
    pub(super) retained: RetainedStore,
    pub(super) timers: TimerWheel<TimerKey>,
    pub(super) actions: VecDeque<Action>,
    /// Final frames of connections we closed, until the runtime takes them after `Action::Close`.
    pub(super) closing: AHashMap<ConnId, (Instant, VecDeque<Bytes>)>,
    /// Scratch buffer frames are encoded into and split off from.
    pub(super) encode_buf: BytesMut,
    pub(super) fanout_headers: FanoutHeaders,
    /// The owned copy of the message being fanned out, shared by the offline sessions that queue it.
    pub(super) offline_copy: Option<(Arc<Message>, Arc<Message>)>,
    pub(super) next_assigned_id: u64,
    pub(super) stats: CoreStats,
    /// The runtime's counters, carried for snapshots (see `snapshot.rs`).
    pub(super) io: IoCounters,
    /// Last `InterestAdded` sequence number sent, and per shard the last one it acknowledged.
    pub(super) interest_seq_sent: u64,
    pub(super) interest_acks: Vec<u64>,
    pub(super) held_subacks: VecDeque<HeldSubAck>,
    /// Enhanced authentication methods offered (from `scram_users`).
    pub(super) auth_methods: AuthMethods,
    /// Connections that use enhanced authentication (during and after their exchange).
    pub(super) enhanced_auth: AHashMap<ConnId, ConnectionAuth>,
    /// Verified TLS client certificate names of connections that have not sent CONNECT yet (set by the
    /// runtime, taken by the login check), beside `Connection` so plain connections pay nothing.
    pub(super) peer_identities: AHashMap<ConnId, Box<str>>,
    /// Peer socket addresses for the admin client listing, which alone reads them: asked for by
    /// `want_peer_addresses`, filled by the runtime after that job (`fill_peer_addresses`), taken by the
    /// listing. Nothing is kept per connection, so an idle connection pays nothing for them.
    pub(super) peer_addresses: PeerAddresses,
    /// Who may connect and what they may do (shared by every shard; swapped by `replace_access`).
    pub(super) access: Arc<AccessControl>,
    /// Sessions whose client logged in with an API token, and its grant (which alone decides what they may
    /// do). Kept beside the sessions so that the others pay nothing for it.
    pub(super) token_sessions: AHashMap<SessionKey, Arc<TokenGrant>>,
    /// Rules a client's PUBLISH must pass before it is routed; `None` when there are none (nothing checked).
    pub(super) validation: Option<Arc<RuleSet>>,
    /// Connections whose reading is paused for owing too much (see `backlog`), with since when.
    pub(super) backlogged: AHashMap<ConnId, Instant>,
    /// The process's memory budget, shared by every shard: while it says so, load is shed (`memory_budget`).
    pub(super) memory: Arc<MemoryBudget>,
    /// Publish rate and bytes buckets per connection, and who is throttled (`publish_limit`).
    pub(super) publish_limits: PublishLimiter,
    /// Acknowledgements waiting for the disk (`durability = "sync"`); inactive otherwise.
    pub(super) durability: DurabilityGate,
    /// CONNECTs and packets waiting for the external auth backend, and its answers cached (`external_auth`).
    pub(super) external: ExternalWaits,
}

impl ShardCore {
    pub fn new(shard: ShardId, shard_count: usize, settings: Rc<BrokerSettings>) -> Self {
        let mut core = ShardCore {
            shard,
            shard_count,
            retained: RetainedStore::new(settings.retained_max_messages, settings.retained_max_bytes),
            auth_methods: AuthMethods::from_config(&settings.scram_users),
            publish_limits: PublishLimiter::new(&settings),
            memory: Arc::new(MemoryBudget::new(None)),
            access: Arc::clone(&settings.access),
            settings,
            connections: Connections::default(),
            sessions: Sessions::default(),
            subscriptions: SubscriptionTrie::default(),
            interest: InterestTrie::default(),
            timers: TimerWheel::default(),
            actions: VecDeque::new(),
            closing: AHashMap::new(),
            encode_buf: BytesMut::new(),
            fanout_headers: FanoutHeaders::default(),
            offline_copy: None,
            next_assigned_id: 0,
            stats: CoreStats::default(),
            io: IoCounters::default(),
            interest_seq_sent: 0,
            interest_acks: vec![0; shard_count],
            held_subacks: VecDeque::new(),
            enhanced_auth: AHashMap::new(),
            peer_identities: AHashMap::new(),
            peer_addresses: PeerAddresses::default(),
            token_sessions: AHashMap::new(),
            validation: None,
            backlogged: AHashMap::new(),
            durability: DurabilityGate::default(),
            external: ExternalWaits::default(),
        };
        if core.access.external().is_some() {
            core.seed_external_salt();
        }
        core.set_validation(core.settings.validation_rules.clone());
        core
    }

    pub fn shard(&self) -> ShardId {
        self.shard
    }

    pub fn settings(&self) -> &BrokerSettings {
        &self.settings
    }

    /// The process's memory budget this core sheds load by (every shard gets the same one).
    pub fn set_memory_budget(&mut self, budget: Arc<MemoryBudget>) {
        self.memory = budget;
    }

    pub fn stats(&self) -> &CoreStats {
        &self.stats
    }

    /// The runtime closed a socket at accept for a connection limit (`connections_max`, the process's or
    /// a listener's): counted here with the core's other refusals.
    pub fn count_refused_at_accept(&mut self) {
        self.stats.refused_at_accept += 1;
    }

    /// The runtime closed a socket at accept for a per source address limit: `connections_per_address_max`
    /// (`open_limit`) or `connect_rate_per_address_max_per_second`.
    pub fn count_refused_per_address(&mut self, open_limit: bool) {
        match open_limit {
            true => self.stats.refused_connections_per_address += 1,
            false => self.stats.refused_connect_rate_per_address += 1,
        }
    }

    /// Sizes of this shard's state: connections (connected or awaiting CONNECT), sessions (connected or
    /// not), retained messages, trie nodes, armed timers.
    pub fn gauges(&self) -> CoreGauges {
        CoreGauges {
            connections: self.connections.len(),
            sessions: self.sessions.len(),
            retained_messages: self.retained.len(),
            subscription_trie_nodes: self.subscriptions.node_count(),
            interest_trie_nodes: self.interest.node_count(),
            timers: self.timers.len(),
        }
    }

    /// A socket was accepted on (or handed to) this shard from `listener`. It must send CONNECT within the
    /// connect timeout.
    pub fn open_connection(&mut self, now: Instant, listener: ListenerId) -> ConnId {
        let conn = self.connections.open(Connection::new(now, listener));
        self.stats.connections_opened += 1;
        let timeout = std::time::Duration::from_secs(u64::from(self.settings.connect_timeout_secs));
        self.timers.insert(now, now + timeout, TimerKey::ConnectTimeout(conn));
        conn
    }

    /// Who the transport proved the peer to be (a verified TLS client certificate's Common Name), for a
    /// listener with `use_identity_as_username`; given before the connection's CONNECT is handled.
    pub fn set_peer_identity(&mut self, conn: ConnId, common_name: &str) {
        if self.connections.get(&conn).is_some_and(|connection| connection.version.is_none()) {
            self.peer_identities.insert(conn, common_name.into());
        }
    }

    /// A job asks for the peer addresses of this shard's connections (`client_id`: of that client's only):
    /// the runtime fills them in after the jobs of this turn, for a later job (the admin client listing)
    /// to read.
    pub fn want_peer_addresses(&mut self, client_id: Option<&str>) {
        self.peer_addresses.wanted = match client_id {
            None => Some(PeerWanted::Every),
            Some(id) => self.sessions.find(id).and_then(|key| self.sessions.get(key)?.conn).map(PeerWanted::One),
        };
    }

    pub fn peer_addresses_wanted(&self) -> bool {
        self.peer_addresses.wanted.is_some()
    }

    /// The runtime answers `want_peer_addresses`: `lookup` gives a connection's peer address (its socket's).
    pub fn fill_peer_addresses(&mut self, mut lookup: impl FnMut(ConnId) -> Option<std::net::SocketAddr>) {
        let found = match self.peer_addresses.wanted.take() {
            None => return,
            Some(PeerWanted::Every) => self.connections.ids().filter_map(|conn| Some((conn, lookup(conn)?))).collect(),
            Some(PeerWanted::One(conn)) => lookup(conn).map(|address| (conn, address)).into_iter().collect(),
        };
        self.peer_addresses.found = Some(found);
    }

    /// Whether the core still knows the connection (it forgets one it closed or that was lost).
    pub fn has_connection(&self, conn: ConnId) -> bool {
        self.connections.get(&conn).is_some()
    }

    /// The connection's protocol level; `None` until it sent CONNECT.
    pub fn protocol_version(&self, conn: ConnId) -> Option<ProtocolVersion> {
        self.connections.get(&conn).and_then(|connection| connection.version)
    }

    pub fn handle_packet(&mut self, conn: ConnId, packet: Packet, now: Instant) {
        let Some(connection) = self.connections.get_mut(&conn) else {
            return;
        };
        connection.last_packet_at = now;
        self.stats.packets_received += 1;
        if !self.access.external_authorizes() {
            return self.dispatch(conn, packet, now);
        }
        if let Some(packet) = self.hold_for_external(conn, packet, now) {
            self.dispatch(conn, packet, now);
            self.external_handled();
        }
    }

    /// The decoder rejected the connection's input: the v5 reason (DISCONNECT, or CONNACK while
    /// connecting), a log line naming the rule, then close. For 3.x the connection is just closed, except
    /// an unsupported protocol level, answered with return code 1 [MQTT-3.1.2-2].
    pub fn handle_decode_error(&mut self, conn: ConnId, err: &DecodeError, now: Instant) {
        self.refuse_malformed(conn, err, now);
    }

    /// The socket ended without us asking (EOF or error). No `Close` action follows.
    pub fn connection_lost(&mut self, conn: ConnId, now: Instant) {
        self.end_connection(conn, CloseReason::SocketClosed, now);
    }

    pub fn handle_mesh(&mut self, from: ShardId, msg: MeshMessage, now: Instant) {
        self.apply_mesh(from, msg, now);
    }

    /// Fires due deadlines: connect timeout, keep-alive, will delay, session expiry.
    pub fn tick(&mut self, now: Instant) {
        self.fire_timers(now);
        self.closing.retain(|_, (closed_at, _)| now.saturating_duration_since(*closed_at).as_secs() < 5);
    }

    /// When `tick` next has work to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.timers.next_deadline()
    }

    /// Server shutdown: DISCONNECT 0x8B to v5 clients, then close every connection. Sessions are kept
    /// in memory (wills of still-connected clients are published, as for any server-side close).
    pub fn shutdown(&mut self, now: Instant) {
        let conns: Vec<ConnId> = self.connections.ids().collect();
        for conn in conns {
            self.end_connection(conn, CloseReason::ServerShutdown, now);
        }
    }

    /// Whether actions wait for the runtime.
    pub fn has_actions(&self) -> bool {
        !self.actions.is_empty()
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Gives back the capacity a burst left in the core's queues (called by a quiet shard, never per
    /// message): the action queue once empty, down to a small capacity.
    pub fn trim_scratch(&mut self) {
        if self.actions.is_empty() && self.actions.capacity() > 64 {
            self.actions.shrink_to(64);
        }
    }

    /// Moves the connection's queued encoded frames into `frames` (also the final frames after `Close`).
    pub fn take_output(&mut self, conn: ConnId, frames: &mut Vec<Bytes>) {
        if let Some(connection) = self.connections.get_mut(&conn) {
            // Taken whole, so an idle connection keeps no queue capacity from its last burst.
            frames.extend(std::mem::take(&mut connection.out_queue));
            connection.out_queue_bytes = 0;
            connection.write_requested = false;
            self.backlog_drained(conn);
            return;
        }
        if let Some((_, queue)) = self.closing.remove(&conn) {
            frames.extend(queue);
        }
    }
}

/// See `ShardCore::peer_addresses`.
#[derive(Default)]
pub(super) struct PeerAddresses {
    pub(super) wanted: Option<PeerWanted>,
    pub(super) found: Option<AHashMap<ConnId, std::net::SocketAddr>>,
}

pub(super) enum PeerWanted {
    Every,
    One(ConnId),
}
