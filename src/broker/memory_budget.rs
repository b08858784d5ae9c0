//! `MemoryBudget`: the process's memory budget (`memory_max_bytes`, Mosquitto's `memory_limit`) and the
//! pressure flag every shard reads. One sampler (`shard::memory_watch`) measures the process's resident
//! memory a few times a second, off the shards, and reports it here; a shard only loads an atomic on its
//! hot paths, never a lock. While shedding, a core refuses new CONNECTs (v5 0x97 Quota exceeded, 3.x return
//! code 3) and drops QoS 0 deliveries to clients that already have unsent bytes queued; QoS 1/2 are kept
//! as always. Shedding starts above the budget and ends below `RECOVER_PERCENT` of it, so a process that
//! hovers at the budget does not flap.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Shedding ends once resident memory is below this share of the budget.
pub const RECOVER_PERCENT: u64 = 90;

/// The budget, the last sample and whether load is being shed. Written by the sampler alone, read by
/// every shard and by snapshots.
#[derive(Debug, Default)]
pub struct MemoryBudget {
    max_bytes: Option<u64>,
    resident_bytes: AtomicU64,
    shedding: AtomicBool,
    shedding_started: AtomicU64,
}

/// What a sample changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PressureChange {
    /// Above the budget: shedding starts.
    Started,
    /// Below `RECOVER_PERCENT` of it again: shedding ends.
    Ended,
}

/// A copy of the budget's state, for `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryReading {
    /// Resident memory at the last sample (0 when there is no budget and so no sampler).
    pub resident_bytes: u64,
    pub max_bytes: Option<u64>,
    pub shedding: bool,
    /// Times shedding started since the process started.
    pub shedding_started: u64,
}

impl MemoryBudget {
    /// `max_bytes`: `None` = no budget (nothing is ever shed).
    pub fn new(max_bytes: Option<u64>) -> Self {
        MemoryBudget { max_bytes, ..MemoryBudget::default() }
    }

    pub fn max_bytes(&self) -> Option<u64> {
        self.max_bytes
    }

    /// Below this resident size shedding ends.
    pub fn recover_below_bytes(&self) -> Option<u64> {
        self.max_bytes.map(|max| max / 100 * RECOVER_PERCENT)
    }

    /// Whether load is being shed now: one relaxed atomic load (a sample a few hundred milliseconds old
    /// is as good as a fresh one for this).
    pub fn is_shedding(&self) -> bool {
        self.shedding.load(Ordering::Relaxed)
    }

    /// Takes one sample of resident memory (from the one sampler) and says whether shedding started or
    /// ended with it.
    pub fn observe(&self, resident_bytes: u64) -> Option<PressureChange> {
        self.resident_bytes.store(resident_bytes, Ordering::Relaxed);
        let (max, recover_below) = (self.max_bytes?, self.recover_below_bytes()?);
        let shedding = self.is_shedding();
        if !shedding && resident_bytes > max {
            self.shedding.store(true, Ordering::Relaxed);
            self.shedding_started.fetch_add(1, Ordering::Relaxed);
            return Some(PressureChange::Started);
        }
        if shedding && resident_bytes < recover_below {
            self.shedding.store(false, Ordering::Relaxed);
            return Some(PressureChange::Ended);
        }
        None
    }

    pub fn reading(&self) -> MemoryReading {
        MemoryReading {
            resident_bytes: self.resident_bytes.load(Ordering::Relaxed),
            max_bytes: self.max_bytes,
            shedding: self.is_shedding(),
            shedding_started: self.shedding_started.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shedding_starts_above_the_budget_and_ends_only_below_ninety_percent_of_it() {
        let budget = MemoryBudget::new(Some(100 * 1024 * 1024));
        let mib = |n: u64| n * 1024 * 1024;
        assert_eq!(budget.observe(mib(99)), None);
        assert!(!budget.is_shedding());
        assert_eq!(budget.observe(mib(101)), Some(PressureChange::Started));
        assert!(budget.is_shedding());
        assert_eq!(budget.observe(mib(102)), None, "already shedding");
        assert_eq!(budget.observe(mib(95)), None, "below the budget but above 90% of it: still shedding");
        assert!(budget.is_shedding());
        assert_eq!(budget.observe(mib(89)), Some(PressureChange::Ended));
        assert!(!budget.is_shedding());
        assert_eq!(budget.observe(mib(95)), None, "not again until above the budget");
        assert_eq!(budget.observe(mib(101)), Some(PressureChange::Started));
        let reading = budget.reading();
        assert_eq!((reading.resident_bytes, reading.shedding, reading.shedding_started), (mib(101), true, 2));
    }

    #[test]
    fn without_a_budget_nothing_is_ever_shed() {
        let budget = MemoryBudget::new(None);
        assert_eq!(budget.observe(u64::MAX), None);
        assert!(!budget.is_shedding());
    }
}
