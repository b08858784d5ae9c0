//! Per source address limits, checked at accept: how many connections one IP address may hold open
//! (`connections_per_address_max`) and how fast it may open new ones (`connect_rate_per_address_max_per_second`,
//! a token bucket holding one second's worth). Shared by all shards behind one mutex: touched once per
//! accept and once per close, never per packet.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

/// The two per-address settings; `None` = no limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AddressLimits {
    pub connections_max: Option<usize>,
    pub connect_rate_max_per_second: Option<u32>,
}

impl AddressLimits {
    pub fn any(&self) -> bool {
        self.connections_max.is_some() || self.connect_rate_max_per_second.is_some()
    }
}

/// Which per-address limit refused an accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressRefusal {
    Connections { max: usize },
    ConnectRate { max_per_second: u32 },
}

#[derive(Debug)]
struct Entry {
    address: IpAddr,
    open: usize,
    /// Connects the bucket still allows now (refilled at the rate, capped at one second's worth).
    tokens: f64,
    refilled_at: Instant,
}

/// Open connections and connect buckets per address. Slots are indices so a connection's place is a
/// `u32`, not a 16-byte address (it lives in every connection's slot).
#[derive(Debug)]
pub struct AddressTable {
    limits: AddressLimits,
    slots: HashMap<IpAddr, u32>,
    entries: Vec<Option<Entry>>,
    free: Vec<u32>,
}

impl AddressTable {
    pub fn new(limits: AddressLimits) -> Self {
        AddressTable { limits, slots: HashMap::new(), entries: Vec::new(), free: Vec::new() }
    }

    /// Counts a new connection from `address`; its slot, or which limit refused it.
    pub fn admit(&mut self, address: IpAddr, now: Instant) -> Result<u32, AddressRefusal> {
        let slot = self.slot_of(address, now);
        let limits = self.limits;
        let entry = self.entries[slot as usize].as_mut().expect("a mapped slot holds an entry");
        if let Some(max) = limits.connections_max {
            if entry.open >= max {
                return Err(AddressRefusal::Connections { max });
            }
        }
        if let Some(rate) = limits.connect_rate_max_per_second {
            let capacity = f64::from(rate.max(1));
            let elapsed_secs = now.saturating_duration_since(entry.refilled_at).as_secs_f64();
            entry.tokens = (entry.tokens + elapsed_secs * f64::from(rate)).min(capacity);
            entry.refilled_at = now;
            if entry.tokens < 1.0 {
                return Err(AddressRefusal::ConnectRate { max_per_second: rate });
            }
            entry.tokens -= 1.0;
        }
        entry.open += 1;
        Ok(slot)
    }

    /// A connection counted by `admit` closed.
    pub fn release(&mut self, slot: u32) {
        if let Some(Some(entry)) = self.entries.get_mut(slot as usize) {
            entry.open = entry.open.saturating_sub(1);
        }
    }

    /// Addresses tracked now (for tests: idle ones are forgotten once their bucket is full again).
    pub fn tracked(&self) -> usize {
        self.slots.len()
    }

    fn slot_of(&mut self, address: IpAddr, now: Instant) -> u32 {
        if let Some(&slot) = self.slots.get(&address) {
            return slot;
        }
        // Before growing, forget addresses with nothing open and a full bucket: they carry no state.
        if self.free.is_empty() && self.entries.len() >= 64 && self.entries.len().is_power_of_two() {
            self.forget_idle(now);
        }
        let tokens = f64::from(self.limits.connect_rate_max_per_second.unwrap_or(0).max(1));
        let entry = Entry { address, open: 0, tokens, refilled_at: now };
        let slot = match self.free.pop() {
            Some(slot) => {
                self.entries[slot as usize] = Some(entry);
                slot
            }
            None => {
                self.entries.push(Some(entry));
                u32::try_from(self.entries.len() - 1).unwrap_or(u32::MAX)
            }
        };
        self.slots.insert(address, slot);
        slot
    }

    fn forget_idle(&mut self, now: Instant) {
        let rate = self.limits.connect_rate_max_per_second;
        for (index, cell) in self.entries.iter_mut().enumerate() {
            let idle = cell.as_ref().is_some_and(|entry| {
                entry.open == 0
                    && rate.is_none_or(|rate| {
                        let refill_secs = now.saturating_duration_since(entry.refilled_at).as_secs_f64();
                        entry.tokens + refill_secs * f64::from(rate) >= f64::from(rate.max(1))
                    })
            });
            if idle {
                if let Some(entry) = cell.take() {
                    self.slots.remove(&entry.address);
                    self.free.push(index as u32);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const HOME: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
    const OTHER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn the_connection_past_connections_per_address_max_is_refused_and_others_are_not() {
        let mut table = AddressTable::new(AddressLimits { connections_max: Some(2), ..AddressLimits::default() });
        let now = Instant::now();
        let first = table.admit(HOME, now).unwrap();
        table.admit(HOME, now).unwrap();
        assert_eq!(table.admit(HOME, now), Err(AddressRefusal::Connections { max: 2 }));
        table.admit(OTHER, now).expect("another address has its own count");
        table.release(first);
        table.admit(HOME, now).expect("a closed connection frees its place");
    }

    #[test]
    fn the_connect_rate_bucket_holds_one_seconds_worth_and_refills() {
        let limits = AddressLimits { connect_rate_max_per_second: Some(3), ..AddressLimits::default() };
        let mut table = AddressTable::new(limits);
        let now = Instant::now();
        for _ in 0..3 {
            let slot = table.admit(HOME, now).unwrap();
            table.release(slot);
        }
        assert_eq!(table.admit(HOME, now), Err(AddressRefusal::ConnectRate { max_per_second: 3 }));
        assert!(table.admit(HOME, now + Duration::from_millis(400)).is_ok(), "a third of a second gives one");
    }

    #[test]
    fn idle_addresses_are_forgotten_so_the_table_stays_bounded() {
        let limits = AddressLimits { connections_max: Some(1), connect_rate_max_per_second: Some(10) };
        let mut table = AddressTable::new(limits);
        let start = Instant::now();
        for round in 0..10u32 {
            let now = start + Duration::from_secs(u64::from(round));
            for host in 0..100u32 {
                let address = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + host + round * 100));
                let slot = table.admit(address, now).unwrap();
                table.release(slot);
            }
        }
        assert!(table.tracked() <= 256, "{} addresses tracked", table.tracked());
    }
}
