//! A connection on its shard, without the shard: the slot the runtime keeps per socket (`slot`), the
//! table of slots (`table`), decoding input into the core (`input`), the vectored send batch (`send`),
//! the move to the home shard (`placement`), and the process-wide connection limit. Nothing here reaches
//! into `shard`: the shard passes in what is needed and acts on what comes back.

pub mod address_limit;
pub mod input;
pub mod placement;
pub mod send;
pub mod slot;
pub mod table;

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use address_limit::{AddressLimits, AddressRefusal, AddressTable};

pub use input::{InputStep, Placement};
pub use placement::Handoff;
pub use slot::{ConnSlot, SendStep};
pub use table::{ConnTable, SlotKey};

/// The counts of open connections against the process-wide `connections_max` and each listener's own
/// `connections_max`. Shared by all shards; touched once per accept and once per close, never per packet.
#[derive(Clone, Debug)]
pub struct ConnectionPermit {
    counts: Arc<Counts>,
}

#[derive(Debug)]
struct Counts {
    open: AtomicUsize,
    max: usize,
    /// Per listener (in `Config::effective_listeners` order): open connections and the cap (`usize::MAX`
    /// when the listener has none).
    listeners: Box<[(AtomicUsize, usize)]>,
    /// Per source address counts, when a per-address limit is set.
    addresses: Option<Mutex<AddressTable>>,
}

/// One open connection's place in the counts; released on drop. 16 bytes: it lives in every connection's
/// slot, so it holds one pointer and the listener's index, not its own copies of the tables.
#[derive(Debug)]
pub struct PermitGuard {
    counts: Arc<Counts>,
    /// Index into `Counts::listeners`, or `NO_LISTENER` for a place counted against the process only.
    listener: u32,
    /// Slot in `Counts::addresses`, or `NO_ADDRESS` when no per-address limit counts it.
    address: u32,
}

const NO_LISTENER: u32 = u32::MAX;
const NO_ADDRESS: u32 = u32::MAX;

/// Which limit refused a connection at accept (for the log line).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectionLimit {
    /// The process-wide `connections_max`.
    Process { max: usize },
    /// `listeners[index].connections_max`.
    Listener { index: usize, max: usize },
    /// `connections_per_address_max` or `connect_rate_per_address_max_per_second` for the peer's address.
    Address(AddressRefusal),
}

impl std::fmt::Display for ConnectionLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectionLimit::Process { max } => write!(f, "connections_max reached ({max})"),
            ConnectionLimit::Listener { index, max } => write!(f, "listeners[{index}].connections_max reached ({max})"),
            ConnectionLimit::Address(AddressRefusal::Connections { max }) => {
                write!(f, "connections_per_address_max reached ({max})")
            }
            ConnectionLimit::Address(AddressRefusal::ConnectRate { max_per_second }) => {
                write!(f, "connect_rate_per_address_max_per_second exceeded ({max_per_second})")
            }
        }
    }
}

impl ConnectionPermit {
    pub fn new(max: usize) -> Self {
        ConnectionPermit::with_listener_caps(max, &[])
    }

    /// `listener_caps[i]`: listener i's own `connections_max`, if any.
    pub fn with_listener_caps(max: usize, listener_caps: &[Option<usize>]) -> Self {
        let listeners = listener_caps.iter().map(|cap| (AtomicUsize::new(0), cap.unwrap_or(usize::MAX))).collect();
        ConnectionPermit { counts: Arc::new(Counts { open: AtomicUsize::new(0), max, listeners, addresses: None }) }
    }

    /// As `with_listener_caps`, with limits per source address as well.
    pub fn with_limits(max: usize, listener_caps: &[Option<usize>], per_address: AddressLimits) -> Self {
        let mut permit = ConnectionPermit::with_listener_caps(max, listener_caps);
        if per_address.any() {
            let counts = Arc::get_mut(&mut permit.counts).expect("just made");
            counts.addresses = Some(Mutex::new(AddressTable::new(per_address)));
        }
        permit
    }

    /// Whether per-address limits are configured (the runtime looks up a peer's address only then).
    pub fn limits_addresses(&self) -> bool {
        self.counts.addresses.is_some()
    }

    /// `try_acquire_on`, and then within the per-address limits of `peer` (a socket whose peer address is
    /// unknown is not counted per address).
    pub fn try_acquire_from(
        &self,
        listener: usize,
        peer: Option<IpAddr>,
        now: Instant,
    ) -> Result<PermitGuard, ConnectionLimit> {
        let mut guard = self.try_acquire_on(listener)?;
        if let (Some(addresses), Some(peer)) = (&self.counts.addresses, peer) {
            let mut table = addresses.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            // Dropping `guard` on refusal gives back the process and listener places.
            guard.address = table.admit(peer, now).map_err(ConnectionLimit::Address)?;
        }
        Ok(guard)
    }

    /// A place for a newly accepted connection, or `None` at the process-wide limit.
    pub fn try_acquire(&self) -> Option<PermitGuard> {
        let counts = &self.counts;
        if counts.open.fetch_add(1, Ordering::Relaxed) >= counts.max {
            counts.open.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(PermitGuard { counts: Arc::clone(counts), listener: NO_LISTENER, address: NO_ADDRESS })
    }

    /// A place for a connection accepted on `listener`: within its own cap and the process-wide one.
    pub fn try_acquire_on(&self, listener: usize) -> Result<PermitGuard, ConnectionLimit> {
        let process = ConnectionLimit::Process { max: self.counts.max };
        let (Some((open, max)), Ok(index)) = (self.counts.listeners.get(listener), u32::try_from(listener)) else {
            return self.try_acquire().ok_or(process);
        };
        if open.fetch_add(1, Ordering::Relaxed) >= *max {
            open.fetch_sub(1, Ordering::Relaxed);
            return Err(ConnectionLimit::Listener { index: listener, max: *max });
        }
        match self.try_acquire() {
            Some(mut guard) => {
                guard.listener = index;
                Ok(guard)
            }
            None => {
                open.fetch_sub(1, Ordering::Relaxed);
                Err(process)
            }
        }
    }

    pub fn open_connections(&self) -> usize {
        self.counts.open.load(Ordering::Relaxed)
    }

    pub fn connections_max(&self) -> usize {
        self.counts.max
    }
}

impl Drop for PermitGuard {
    fn drop(&mut self) {
        self.counts.open.fetch_sub(1, Ordering::Relaxed);
        if let Some((open, _)) = self.counts.listeners.get(self.listener as usize) {
            open.fetch_sub(1, Ordering::Relaxed);
        }
        if let (Some(addresses), true) = (&self.counts.addresses, self.address != NO_ADDRESS) {
            addresses.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).release(self.address);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_place_is_two_words_at_most() {
        assert!(std::mem::size_of::<PermitGuard>() <= 16, "it lives in every connection's slot");
    }

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
    fn a_listener_cap_refuses_on_that_listener_only_and_frees_its_place() {
        let permits = ConnectionPermit::with_listener_caps(3, &[Some(1), None]);
        let first = permits.try_acquire_on(0).unwrap();
        assert_eq!(permits.try_acquire_on(0).unwrap_err(), ConnectionLimit::Listener { index: 0, max: 1 });
        let _second = permits.try_acquire_on(1).unwrap();
        let _third = permits.try_acquire_on(1).unwrap();
        assert_eq!(permits.try_acquire_on(1).unwrap_err(), ConnectionLimit::Process { max: 3 });
        drop(first);
        assert_eq!(permits.open_connections(), 2);
        let _again = permits.try_acquire_on(0).expect("the listener's place was freed");
        assert_eq!(permits.try_acquire_on(1).unwrap_err(), ConnectionLimit::Process { max: 3 }, "process cap");
    }
}
