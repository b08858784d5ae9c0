//! The sans-I/O broker core: all MQTT behaviour of one shard (connections' protocol state, sessions,
//! subscriptions, the replicated interest trie, retained messages, wills, keep-alive).
//!
//! `ShardCore` is a state machine. The runtime feeds it decoded packets, connection events, messages from
//! other shards and the current time; it answers with `Action`s (write these frames, close that connection,
//! send this to shard N). There are no sockets, no executor and no clock in here, so every behaviour is
//! testable by hand (see `tests/core_*.rs`).
//!
//! Where things are:
//! - `backlog`: what a connection owes its client unsent, and the gate that stops reading from it;
//!   `publish_limit`: the per-connection publish rate and bytes buckets that throttle through that gate.
//! - `authorization`: the CONNECT check and the publish / subscribe / delivery checks (`crate::auth`).
//! - `core`: the `ShardCore` struct and the runtime's entry points; `handle/`: one file per packet kind.
//! - `connection` (per-socket protocol state, kept small), `session` (what outlives a connection),
//!   `inflight` (outgoing QoS 1/2 window and packet ids), `will`, `topic_alias`, `lifecycle` (how
//!   connections and sessions end), `timers` + `timer_wheel` (every deadline of the shard in one wheel).
//! - `trie` (arena topic trie), `subscriptions` (local filter -> sessions, shared groups), `interest`
//!   (replicated filter -> shards), `retain` (full per-shard replica of the retained store), `delivery`
//!   (routing and fan-out), `shared` (which shard and member of a shared group gets a message), `mesh`
//!   (messages from other shards), `outbound` (encoding and out-queues), `owned` (copies that must not pin
//!   read buffers), `validation` (what a PUBLISH failing a `[[validation]]` rule gets), `stats` + `snapshot` (counters
//!   for `$SYS` and `/metrics`), `sys_topics` (publishing `$SYS/broker/...`), `settings`.
//! - `memory_budget`: the process's memory budget and the pressure flag that makes a core shed load.
//! - `external_auth`: CONNECTs parked and PUBLISH / SUBSCRIBE held while the external auth backend
//!   (`[auth.http]`) answers off the shard, and its per-shard answer cache.
//! - `external`: what the HTTP API calls on a shard (publish, client and session listings, kick, retained
//!   messages, ending an API token's sessions).

mod actions;
mod authorization;
mod backlog;
mod connection;
mod core;
mod delivery;
mod durability;
mod dynsec;
mod external;
mod external_auth;
mod handle;
mod held_suback;
mod inflight;
mod interest;
mod journal;
mod lifecycle;
mod memory_budget;
mod mesh;
mod message;
mod outbound;
mod owned;
mod persistence;
mod publish_limit;
mod refusal;
mod retain;
mod session;
mod settings;
mod shared;
mod snapshot;
mod stats;
mod subscriptions;
pub mod sys_topics;
mod timer_wheel;
mod timers;
mod topic_alias;
pub(crate) mod trie;
mod validation;
mod will;

pub use self::core::ShardCore;
pub use crate::auth::ListenerId;
pub use actions::{run_actions, ActionTarget};
pub use backlog::InputGate;
pub use external::{
    ClientSummary, ExternalPublish, ExternalPublishError, ExternalPublished, RetainedSummary, SessionSummary,
};
pub use journal::WallClock;
pub use memory_budget::{MemoryBudget, MemoryReading, PressureChange};
pub use message::{Action, ConnId, MeshMessage, Message, Origin, ShardId};
pub use persistence::RestoreReport;
pub use refusal::Refusal;
pub use settings::{BrokerSettings, SharedSubscriptionStrategy, DEPRECATED_NAMES};
pub use snapshot::ShardSnapshot;
pub use stats::{CoreGauges, CoreStats, IoCounters, SessionTotals};

/// The shard that owns the session of `client_id`: the same answer on every shard and in every run
/// (FNV-1a, not a per-process seeded hash).
pub fn home_shard(client_id: &str, shard_count: usize) -> ShardId {
    const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    let hash = client_id.bytes().fold(FNV_OFFSET, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME));
    (hash % shard_count.max(1) as u64) as ShardId
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn home_shard_is_stable_and_in_range() {
        // FNV-1a of "" is the offset basis itself; fixed numbers prove it is not seeded per process.
        assert_eq!(home_shard("", 7), (0xcbf2_9ce4_8422_2325u64 % 7) as usize);
        assert_eq!(home_shard("client-1", 4), home_shard("client-1", 4));
        let spread: std::collections::HashSet<_> = (0..64).map(|i| home_shard(&format!("c{i}"), 4)).collect();
        assert_eq!(spread.len(), 4, "64 ids should reach all 4 shards");
        assert_eq!(home_shard("anything", 1), 0);
    }
}
