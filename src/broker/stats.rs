//! `CoreStats`: counters of what a shard's core did that a client cannot see (dropped messages by cause).

/// Counters since start; read with `ShardCore::stats`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CoreStats {
    /// Larger than the receiving client's v5 Maximum Packet Size.
    pub dropped_too_large: u64,
    /// Session queue full (messages or bytes bound).
    pub dropped_queue_full: u64,
    /// QoS 0 to a connection whose out-queue is over its byte bound.
    pub dropped_slow_consumer: u64,
    /// Message Expiry Interval ran out before delivery.
    pub dropped_expired: u64,
    /// QoS 0 for a client that is not connected (not queued, as Mosquitto's default).
    pub dropped_offline_qos0: u64,
    /// A shared publish reached a shard whose group had no member left.
    pub dropped_no_share_member: u64,
    /// Retained store full, topic not retained.
    pub retained_refused: u64,
    /// PUBLISHes (and wills) dropped because the client has no write access to the topic.
    pub denied_publishes: u64,
    /// Deliveries skipped because the receiving client has no read access to the topic.
    pub denied_deliveries: u64,
    /// Client PUBLISHes that failed a `[[validation]]` rule, by rule index (reset when the rules change).
    pub validation_failures: Vec<u64>,
    /// Times reading from a connection was paused because it owed more than `out_queue_pause_bytes`.
    pub input_paused: u64,
    /// Connections closed for owing too much (`out_queue_close_bytes` or `out_queue_stall_max_secs`).
    pub closed_output_backlog: u64,
    /// Sockets closed at accept for `max_connections` (the process's or a listener's).
    pub refused_at_accept: u64,
    /// PUBLISHes and SUBSCRIBE filters refused for `topic_length_max_bytes` / `topic_levels_max`.
    pub refused_topic_limits: u64,
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
