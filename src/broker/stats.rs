//! `CoreStats`, `CoreGauges` and `IoCounters`: what one shard did and holds, for `$SYS` topics and
//! `/metrics`. Plain integers owned by the shard's thread (no atomics, no locks): the only reader outside
//! the shard is a control job (`ShardCore::stats_snapshot`), which copies them between two turns.

use std::collections::BTreeMap;

use crate::protocol::QoS;

/// Counters since start; read with `ShardCore::stats`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CoreStats {
    /// Larger than the receiving client's v5 Maximum Packet Size.
    pub dropped_too_large: u64,
    /// Session queue full (messages or bytes bound).
    pub dropped_queue_full: u64,
    /// QoS 0 to a connection whose out-queue is over its byte bound.
    pub dropped_slow_consumer: u64,
    /// QoS 0 to a connection with unsent bytes queued while the process was over `memory_max_bytes`.
    pub dropped_memory_budget: u64,
    /// Message Expiry Interval ran out before delivery.
    pub dropped_expired: u64,
    /// QoS 0 for a client that is not connected (not queued, as Mosquitto's default).
    pub dropped_offline_qos0: u64,
    /// A shared publish reached a shard whose group had no member left.
    pub dropped_no_share_member: u64,
    /// Retained store full, topic not retained.
    pub retained_refused: u64,
    /// PUBLISHes (and wills) dropped because the client has no write access to the topic (or it is `$SYS`).
    pub denied_publishes: u64,
    /// Deliveries skipped because the receiving client has no read access to the topic.
    pub denied_deliveries: u64,
    /// Client PUBLISHes that failed a `[[validation]]` rule, by rule index (reset when the rules change).
    pub validation_failures: Vec<u64>,
    /// Sockets opened on this core (accepted here or handed over to it).
    pub connections_opened: u64,
    /// CONNECTs answered with a successful CONNACK.
    pub connects_accepted: u64,
    /// CONNECTs refused, by the CONNACK's v5 reason code (3.x return codes are counted as their v5 reason).
    pub connects_refused: BTreeMap<u8, u64>,
    /// Connected clients whose connection ended (any reason, takeovers included).
    pub disconnects: u64,
    /// Sessions that ended because their expiry interval ran out while disconnected.
    pub clients_expired: u64,
    /// Most clients connected at once on this shard.
    pub clients_connected_max: u64,
    /// MQTT packets decoded from clients, any kind.
    pub packets_received: u64,
    /// MQTT packets queued to clients, any kind.
    pub packets_sent: u64,
    /// PUBLISH packets received from clients, by QoS.
    pub publishes_received: [u64; 3],
    /// PUBLISH packets queued to clients, by the QoS they were sent with.
    pub publishes_sent: [u64; 3],
    /// Payload bytes of the PUBLISHes received / queued.
    pub publish_payload_bytes_received: u64,
    pub publish_payload_bytes_sent: u64,
    /// Times reading from a connection was paused because it owed more than `out_queue_pause_bytes`.
    pub input_paused: u64,
    /// Times a connection was throttled (not read until its bucket refilled) for publishing faster than
    /// `publish_rate_max_per_second` / `publish_bytes_max_per_second`.
    pub publish_throttled_rate: u64,
    pub publish_throttled_bytes: u64,
    /// Connections closed for owing too much (`out_queue_close_bytes` or `out_queue_stall_max_secs`).
    pub closed_output_backlog: u64,
    /// Sockets closed at accept for `connections_max` (the process's or a listener's).
    pub refused_at_accept: u64,
    /// Sockets closed at accept for `connections_per_address_max`.
    pub refused_connections_per_address: u64,
    /// Sockets closed at accept for `connect_rate_per_address_max_per_second`.
    pub refused_connect_rate_per_address: u64,
    /// PUBLISHes and SUBSCRIBE filters refused for `topic_length_max_bytes` / `topic_levels_max`.
    pub refused_topic_limits: u64,
}

impl CoreStats {
    pub(super) fn count_connect_accepted(&mut self) {
        self.connects_accepted += 1;
        // Every accepted CONNECT ends in exactly one disconnect, so the difference is who is connected now.
        let connected = self.connects_accepted - self.disconnects;
        self.clients_connected_max = self.clients_connected_max.max(connected);
    }

    pub(super) fn count_publish_received(&mut self, qos: QoS, payload_bytes: usize) {
        self.publishes_received[qos as usize] += 1;
        self.publish_payload_bytes_received += payload_bytes as u64;
    }

    pub(super) fn count_publish_sent(&mut self, qos: QoS, payload_bytes: usize) {
        self.publishes_sent[qos as usize] += 1;
        self.publish_payload_bytes_sent += payload_bytes as u64;
        self.packets_sent += 1;
    }

    /// Every message the core dropped, whatever the cause (not counting denied publishes).
    pub fn dropped_total(&self) -> u64 {
        self.dropped_too_large
            + self.dropped_queue_full
            + self.dropped_slow_consumer
            + self.dropped_memory_budget
            + self.dropped_expired
            + self.dropped_offline_qos0
            + self.dropped_no_share_member
    }
}

/// Sizes of a shard core's state right now; read with `ShardCore::gauges`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CoreGauges {
    pub connections: usize,
    pub sessions: usize,
    pub retained_messages: usize,
    /// Filters without wildcards plus wildcard trie nodes (see `trie::FilterMap`); likewise for interest.
    pub subscription_trie_nodes: usize,
    pub interest_trie_nodes: usize,
    pub timers: usize,
}

/// Sizes that need a walk over every session, taken only for a snapshot (never per message).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionTotals {
    /// Sessions with a connected client.
    pub clients_connected: usize,
    /// Subscriptions of every session (one per filter, shared ones included).
    pub subscriptions: usize,
    /// Messages waiting in session queues, and their bytes (topic + payload).
    pub queued_messages: usize,
    pub queued_bytes: usize,
    /// Outgoing QoS 1/2 messages sent and not yet acknowledged.
    pub inflight_messages: usize,
}

/// Counters of the runtime around the core (socket bytes, mesh shedding). The shard loop fills them
/// through `ShardCore::io_counters_mut`; the core keeps them only so that a snapshot carries them along.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoCounters {
    /// Bytes read from and written to sockets (TLS and WebSocket framing included), as Mosquitto counts.
    pub socket_bytes_received: u64,
    pub socket_bytes_sent: u64,
    /// Messages parked in the mesh overflow lists towards the other shards right now.
    pub mesh_overflow_messages: u64,
    /// Mesh messages dropped: QoS 0 publishes shed, QoS 1/2 publishes shed, batches to a stopped shard.
    pub mesh_shed_qos0_messages: u64,
    pub mesh_shed_reliable_messages: u64,
    pub mesh_closed_batches: u64,
    /// Receives that found every provided read buffer taken (ENOBUFS): the bytes waited in the socket
    /// for a buffer to come back. Often nonzero means `read_buffers` is too small for the load.
    pub receive_buffers_dry: u64,
}
