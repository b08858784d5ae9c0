//! `VerdictCache`: the answers of the external backend a shard remembers, keyed by what was asked
//! (login: listener, client id, user name and a salted hash of the password; ACL: listener, client id,
//! user name, action and topic), each for `cache_ttl_secs`, at most `cache_max_entries` of them. Owned by
//! one shard (a client is always checked on its home shard), so no lock. Every entry lives the same TTL,
//! so insertion order is expiry order: one FIFO queue both expires and evicts.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use ahash::AHashMap;

/// Remembered answers: `true` allow, `false` deny.
pub struct VerdictCache {
    entries: AHashMap<Box<[u8]>, (bool, Instant)>,
    /// Keys in insertion (= expiry) order; a key inserted again appears twice, the stale copy is skipped.
    order: VecDeque<(Box<[u8]>, Instant)>,
    ttl: Duration,
    entries_max: usize,
}

impl VerdictCache {
    pub fn new(ttl: Duration, entries_max: usize) -> VerdictCache {
        VerdictCache { entries: AHashMap::new(), order: VecDeque::new(), ttl, entries_max }
    }

    /// The remembered answer, if it has not expired.
    pub fn get(&mut self, key: &[u8], now: Instant) -> Option<bool> {
        self.expire(now);
        self.entries.get(key).filter(|(_, expires_at)| *expires_at > now).map(|(allowed, _)| *allowed)
    }

    /// `get` without dropping expired entries (for checks that only read).
    pub fn peek(&self, key: &[u8], now: Instant) -> Option<bool> {
        self.entries.get(key).filter(|(_, expires_at)| *expires_at > now).map(|(allowed, _)| *allowed)
    }

    /// Remembers an answer for the TTL; the oldest entry goes when the cache is full.
    pub fn insert(&mut self, key: &[u8], allowed: bool, now: Instant) {
        if self.entries_max == 0 || self.ttl.is_zero() {
            return;
        }
        self.expire(now);
        while self.entries.len() >= self.entries_max && !self.entries.contains_key(key) {
            let Some((oldest, expires_at)) = self.order.pop_front() else { break };
            self.remove_if_current(&oldest, expires_at);
        }
        let expires_at = now + self.ttl;
        if let Some(entry) = self.entries.get_mut(key).filter(|(_, at)| *at == expires_at) {
            entry.0 = allowed;
            return;
        }
        let key: Box<[u8]> = key.into();
        self.entries.insert(key.clone(), (allowed, expires_at));
        self.order.push_back((key, expires_at));
        // Re-inserted keys leave stale copies in `order`; drop them before they outnumber the entries.
        if self.order.len() > 2 * self.entries_max.max(16) {
            let entries = &self.entries;
            self.order.retain(|(key, expires_at)| entries.get(key).is_some_and(|(_, at)| at == expires_at));
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn expire(&mut self, now: Instant) {
        while self.order.front().is_some_and(|(_, expires_at)| *expires_at <= now) {
            if let Some((key, expires_at)) = self.order.pop_front() {
                self.remove_if_current(&key, expires_at);
            }
        }
    }

    fn remove_if_current(&mut self, key: &[u8], expires_at: Instant) {
        if self.entries.get(key).is_some_and(|(_, at)| *at == expires_at) {
            self.entries.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_remembered_for_the_ttl_only() {
        let now = Instant::now();
        let mut cache = VerdictCache::new(Duration::from_secs(10), 100);
        cache.insert(b"a", true, now);
        cache.insert(b"b", false, now);
        assert_eq!(cache.get(b"a", now + Duration::from_secs(9)), Some(true));
        assert_eq!(cache.get(b"b", now + Duration::from_secs(9)), Some(false), "denials are remembered too");
        assert_eq!(cache.get(b"a", now + Duration::from_secs(10)), None);
        assert!(cache.is_empty(), "expired entries are dropped");
    }

    #[test]
    fn a_full_cache_drops_its_oldest_entry_and_stays_bounded() {
        let now = Instant::now();
        let mut cache = VerdictCache::new(Duration::from_secs(60), 2);
        cache.insert(b"a", true, now);
        cache.insert(b"b", true, now + Duration::from_millis(1));
        cache.insert(b"c", true, now + Duration::from_millis(2));
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get(b"a", now), None);
        assert_eq!(cache.get(b"c", now), Some(true));
        for round in 0..1000u32 {
            cache.insert(b"b", round % 2 == 0, now + Duration::from_millis(3));
        }
        assert!(cache.order.len() <= 32, "stale copies are pruned: {}", cache.order.len());
        assert_eq!(cache.get(b"b", now + Duration::from_millis(3)), Some(false));
    }

    #[test]
    fn a_zero_sized_or_zero_ttl_cache_remembers_nothing() {
        let now = Instant::now();
        let mut none = VerdictCache::new(Duration::from_secs(60), 0);
        none.insert(b"a", true, now);
        assert_eq!(none.get(b"a", now), None);
        let mut zero_ttl = VerdictCache::new(Duration::ZERO, 10);
        zero_ttl.insert(b"a", true, now);
        assert_eq!(zero_ttl.get(b"a", now), None);
    }
}
