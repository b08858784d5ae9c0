//! Taking a [`BrokerSnapshot`]: one control job per shard (`Control::call_all`) copies its counters
//! between two turns, and this side sums them. No shard reads another's counters and none is locked: a
//! scrape waits at most one turn of each shard (bounded by [`SNAPSHOT_TIMEOUT`]). Also the `$SYS` timer:
//! a small thread that takes a snapshot every `sys_interval_secs` and has shard 0's core publish the
//! topics that changed (retained, so the ordinary retained path replicates them to every shard).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::sys::SysTopics;
use super::BrokerSnapshot;
use crate::shard::{Control, ControlError};

/// How long a snapshot waits for a busy or stopping shard.
pub const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(2);

/// Takes snapshots of the running broker; shared by the `$SYS` thread and the HTTP side.
pub struct Collector {
    control: Control,
    started_at: Instant,
    /// Highest number of connected clients any snapshot or shard peak showed.
    clients_connected_max: AtomicU64,
}

impl Collector {
    pub fn new(control: Control) -> Arc<Collector> {
        Arc::new(Collector { control, started_at: Instant::now(), clients_connected_max: AtomicU64::new(0) })
    }

    /// Every shard's counters, now.
    pub fn snapshot(&self) -> Result<BrokerSnapshot, ControlError> {
        let shards = self.control.call_all(SNAPSHOT_TIMEOUT, |core, _now| core.stats_snapshot())?;
        let connected: u64 = shards.iter().map(|shard| shard.sessions.clients_connected as u64).sum();
        let shard_peak = shards.iter().map(|shard| shard.stats.clients_connected_max).max().unwrap_or(0);
        let seen = connected.max(shard_peak);
        let max = self.clients_connected_max.fetch_max(seen, Ordering::Relaxed).max(seen);
        Ok(BrokerSnapshot { shards, uptime_secs: self.started_at.elapsed().as_secs(), clients_connected_max: max })
    }

    /// Takes a snapshot and has shard 0 publish the `$SYS` topics that changed since the last call.
    pub fn publish_sys(&self, topics: &mut SysTopics) -> Result<usize, ControlError> {
        let snapshot = self.snapshot()?;
        let changed = topics.changed(&snapshot);
        let count = changed.len();
        self.control.run_on(0, move |core, now| core.publish_sys_topics(&changed, now))?;
        Ok(count)
    }
}

/// Starts the `$SYS` thread: publishes at once, then every `interval`, until the shards stop. `None`
/// when `interval` is zero (`sys_interval_secs = 0`: no `$SYS` topics).
pub fn start_sys_publisher(collector: Arc<Collector>, interval: Duration) -> Option<JoinHandle<()>> {
    if interval.is_zero() {
        return None;
    }
    let spawned = std::thread::Builder::new().name("shardmq-sys".into()).spawn(move || {
        let mut topics = SysTopics::default();
        loop {
            match collector.publish_sys(&mut topics) {
                Ok(count) => tracing::trace!(topics = count, "$SYS topics published"),
                Err(err) => {
                    tracing::debug!(%err, "$SYS publisher stops: shards unreachable");
                    return;
                }
            }
            std::thread::sleep(interval);
        }
    });
    match spawned {
        Ok(handle) => Some(handle),
        Err(err) => {
            tracing::warn!(%err, "cannot start the $SYS thread; no $SYS topics will be published");
            None
        }
    }
}
