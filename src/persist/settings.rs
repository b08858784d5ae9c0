//! The `[persistence]` table: where the logs live and when a change counts as kept.

use std::path::PathBuf;

use serde::Deserialize;

/// When the broker syncs its log to disk, and so what an acknowledgement promises.
#[derive(Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// PUBACK, PUBREC, PUBCOMP, SUBACK and UNSUBACK leave only once the change is on disk (fdatasync; one
    /// for all changes of a shard's turn, and of every turn that arrived while the last sync ran).
    Sync,
    /// Written at once (a process crash loses nothing), synced every `interval_ms`: a power loss may lose
    /// the last interval.
    #[default]
    Periodic,
    /// Written at once, never synced by us (the kernel writes back when it likes).
    None,
}

#[derive(Deserialize, Clone, Debug, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PersistenceSettings {
    /// Data directory; `None` (the default) keeps everything in memory only, as before.
    pub dir: Option<PathBuf>,
    pub durability: Durability,
    /// Sync period of `durability = "periodic"`.
    pub interval_ms: u64,
    /// A shard's log is rewritten from its live state once it is this many times the live size...
    pub compact_ratio: u64,
    /// ...and at least this large.
    pub compact_min_bytes: u64,
    /// Space kept allocated past the end of each shard's log, and the free space below which the disk
    /// counts as full: new QoS 1/2 publishes are then refused (v5 0x97) while what was accepted before
    /// still fits in the reserve. 0 turns the reserve and the free-space probe off (a failed write still
    /// stops acknowledgements).
    pub reserve_bytes: u64,
}

impl Default for PersistenceSettings {
    fn default() -> Self {
        PersistenceSettings {
            dir: None,
            durability: Durability::Periodic,
            interval_ms: 100,
            compact_ratio: 4,
            compact_min_bytes: 64 << 20,
            reserve_bytes: 1 << 20,
        }
    }
}

impl PersistenceSettings {
    pub fn enabled(&self) -> bool {
        self.dir.is_some()
    }
}
