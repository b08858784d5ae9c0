//! The per-connection driver: read -> decode -> `ShardCore::handle_packet`, and the vectored writes of the
//! frames the core queued. Owns the shard's read buffer and the process-wide connection limit.

mod driver;
pub mod read_buffer;
pub mod readiness;
pub mod vectored_write;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

pub use driver::{adopt, open_accepted, pump_reads, ConnSlot};
pub use read_buffer::ShardReadBuffer;

/// The process-wide count of open connections against `max_connections`. Shared by all shards; touched
/// once per accept and once per close, never per packet.
#[derive(Clone, Debug)]
pub struct ConnectionPermit {
    open: Arc<AtomicUsize>,
    max: usize,
}

/// One open connection's place in the count; released on drop.
#[derive(Debug)]
pub struct PermitGuard {
    open: Arc<AtomicUsize>,
}

impl ConnectionPermit {
    pub fn new(max: usize) -> Self {
        ConnectionPermit { open: Arc::new(AtomicUsize::new(0)), max }
    }

    /// A place for a newly accepted connection, or `None` at the limit.
    pub fn try_acquire(&self) -> Option<PermitGuard> {
        let before = self.open.fetch_add(1, Ordering::Relaxed);
        if before >= self.max {
            self.open.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(PermitGuard { open: self.open.clone() })
    }

    /// A second place for a connection about to move to its home shard, taken while the accepting shard
    /// still holds the first, so never refused (the connection is already counted).
    pub fn for_handoff(&self) -> PermitGuard {
        self.open.fetch_add(1, Ordering::Relaxed);
        PermitGuard { open: self.open.clone() }
    }

    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    pub fn max_connections(&self) -> usize {
        self.max
    }
}

impl Drop for PermitGuard {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_refuses_and_frees_places() {
        let permits = ConnectionPermit::new(2);
        let first = permits.try_acquire().unwrap();
        let _second = permits.try_acquire().unwrap();
        assert!(permits.try_acquire().is_none());
        assert_eq!(permits.open_connections(), 2);
        drop(first);
        assert!(permits.try_acquire().is_some());
    }

    #[test]
    fn handed_over_connections_are_counted_but_never_refused() {
        let permits = ConnectionPermit::new(1);
        let _local = permits.try_acquire().unwrap();
        let adopted = permits.for_handoff();
        assert_eq!(permits.open_connections(), 2);
        drop(adopted);
        assert_eq!(permits.open_connections(), 1);
    }
}
