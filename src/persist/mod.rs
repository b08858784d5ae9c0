//! Crash-safe persistence (`[persistence]`): one append-only log per shard under the data directory, holding
//! what must survive a `kill -9`: persistent sessions (subscriptions, expiry, will), their queued and
//! inflight QoS 1/2 messages, QoS 2 state both ways, and the retained messages whose home is the shard.
//!
//! - `settings`: the `[persistence]` table (`dir`, `durability`, `interval_ms`).
//! - `frame`: checksummed length-prefixed records and the scan that finds a torn or corrupt tail.
//! - `record`: what one record says (a change of session or retained state) and its binary form.
//! - `state`: replaying records into the state to restore (`RecoveredState`).
//! - `log`: the directory (format and shard count checked), segments, recovery, compaction files.
//! - `writer`: the side thread per shard that writes, syncs (group commit) and rings the shard.
//!
//! This layer knows the protocol types but nothing of the broker core; the core turns its state into
//! `Record`s (`crate::broker`'s journal) and restores from a `RecoveredState`.

mod frame;
mod log;
mod record;
mod settings;
mod state;
mod writer;

pub use frame::{append_frame, scan_frames, FrameScan, ScanEnd};
pub use log::{open_shard_log, LogDir, PersistError, ShardLog, FORMAT_VERSION};
pub use record::{
    Record, RecordError, StoredDelivery, StoredInflightState, StoredMessage, StoredSubscription, StoredWill,
};
pub use settings::{Durability, PersistenceSettings};
pub use state::{RecoveredInflight, RecoveredSession, RecoveredState};
pub use writer::{LogWriter, WriterStats};
