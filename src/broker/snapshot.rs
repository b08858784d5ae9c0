//! `ShardSnapshot`: a copy of one shard's counters and sizes, taken by a control job on the shard's own
//! thread (`Control::call_all(timeout, |core, _| core.stats_snapshot())`) and summed by `crate::metrics`.

use super::core::ShardCore;
use super::memory_budget::MemoryReading;
use super::message::ShardId;
use super::stats::{CoreGauges, CoreStats, IoCounters, SessionTotals};

/// Everything `$SYS` and `/metrics` show about one shard, at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShardSnapshot {
    pub shard: ShardId,
    pub stats: CoreStats,
    pub gauges: CoreGauges,
    pub sessions: SessionTotals,
    pub io: IoCounters,
    /// Labels of the `[[validation]]` rules, in the order of `stats.validation_failures`.
    pub validation_rules: Vec<String>,
    /// The process's memory budget as this shard sees it (the same for every shard).
    pub memory: MemoryReading,
}

impl ShardCore {
    /// Copies this shard's counters and sizes. Walks every session once (queue and inflight totals), so
    /// it is for a scrape or the `$SYS` interval, not for a hot path.
    pub fn stats_snapshot(&self) -> ShardSnapshot {
        ShardSnapshot {
            shard: self.shard,
            stats: self.stats.clone(),
            gauges: self.gauges(),
            sessions: self.session_totals(),
            io: self.io,
            memory: self.memory.reading(),
            validation_rules: self.validation.as_ref().map_or_else(Vec::new, |rules| {
                (0..rules.len()).filter_map(|index| rules.rule(index).map(|rule| rule.label().to_string())).collect()
            }),
        }
    }

    /// The runtime's counters, for the shard loop to fill (the core itself never writes them).
    pub fn io_counters_mut(&mut self) -> &mut IoCounters {
        &mut self.io
    }

    fn session_totals(&self) -> SessionTotals {
        let mut totals = SessionTotals::default();
        for session in self.sessions.iter() {
            totals.clients_connected += usize::from(session.conn.is_some());
            totals.subscriptions += session.filters.len();
            totals.inflight_messages += session.inflight_len();
            if let Some(traffic) = session.traffic() {
                totals.queued_messages += traffic.queue.len();
                totals.queued_bytes += traffic.queued_bytes;
            }
        }
        totals
    }
}
