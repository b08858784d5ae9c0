//! A connection on its shard, without the shard: the slot the runtime keeps per socket (`slot`), the
//! table of slots (`table`), decoding input into the core (`input`), the vectored send batch (`send`),
//! the move to the home shard (`placement`), and the process-wide connection limit. Nothing here reaches
//! into `shard`: the shard passes in what is needed and acts on what comes back.

pub mod input;
pub mod placement;
pub mod send;
pub mod slot;
pub mod table;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

pub use input::{InputStep, Placement};
pub use placement::Handoff;
pub use slot::{ConnSlot, SendStep};
pub use table::{ConnTable, SlotKey};

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
}
