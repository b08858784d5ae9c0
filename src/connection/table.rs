//! A shard's connections: a slab of slots with generations (a completion names its slot by index and
//! generation, so a late completion never reaches a newer connection in the same place) and the map from
//! the core's `ConnId` to the slot, for the core's actions.
//!
//! A slot outlives the core's knowledge of its connection while requests on its socket are in flight;
//! the core may reuse the `ConnId`'s place meanwhile, which is why the two are keyed apart.
//!
//! The map from `ConnId` is an array indexed by the core's slab index (a `ConnId`'s low 32 bits), 4 bytes
//! a connection where a hash map took 17 at up to half empty (perf/SCALE.md). The core can reuse a slab
//! index before the runtime has carried out the old connection's close; the old mapping then moves to
//! `displaced`, a map that is empty but for that moment.

use ahash::AHashMap;

use super::slot::ConnSlot;
use crate::broker::ConnId;

/// Where a slot lives: its index and the generation of that place when it was put there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotKey {
    pub index: u32,
    pub generation: u32,
}

struct Entry {
    generation: u32,
    slot: Option<ConnSlot>,
}

/// Slots per page: the table grows a page at a time, never by doubling one large array.
const PAGE_SLOTS: usize = 256;

#[derive(Default)]
pub struct ConnTable {
    entries: Pages,
    free: Vec<u32>,
    by_conn: ConnIndex,
    len: usize,
}

/// `ConnId -> slot index`: `slots[conn's core index]`, checked against the slot's own `ConnId`.
#[derive(Default)]
struct ConnIndex {
    slots: Vec<u32>,
    displaced: AHashMap<ConnId, u32>,
}

/// No slot for this core index.
const UNMAPPED: u32 = u32::MAX;

fn core_index(conn: ConnId) -> usize {
    (conn.0 & u64::from(u32::MAX)) as usize
}

impl ConnTable {
    pub fn insert(&mut self, slot: ConnSlot) -> SlotKey {
        let conn = slot.conn();
        let index = match self.free.pop() {
            Some(index) => index,
            None => self.entries.grow(),
        };
        let entry = self.entries.get_mut(index).expect("a free or new index");
        debug_assert!(entry.slot.is_none());
        entry.slot = Some(slot);
        let generation = entry.generation;
        let at = core_index(conn);
        if self.by_conn.slots.len() <= at {
            self.by_conn.slots.resize(at + 1, UNMAPPED);
        }
        let previous = std::mem::replace(&mut self.by_conn.slots[at], index);
        if previous != UNMAPPED {
            let displaced = self.entries.get(previous).and_then(|entry| entry.slot.as_ref()).map(ConnSlot::conn);
            if let Some(displaced) = displaced.filter(|&displaced| displaced != conn) {
                self.by_conn.displaced.insert(displaced, previous);
            }
        }
        self.len += 1;
        SlotKey { index, generation }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The slot of a connection the core knows.
    pub fn key_of(&self, conn: ConnId) -> Option<SlotKey> {
        let index = self.mapped_index(conn)?;
        Some(SlotKey { index, generation: self.entries.get(index)?.generation })
    }

    /// The slot index `conn` maps to, if it is still mapped.
    fn mapped_index(&self, conn: ConnId) -> Option<u32> {
        let index = self.by_conn.slots.get(core_index(conn)).copied().filter(|&index| index != UNMAPPED);
        match index {
            Some(index) if self.slot_conn(index) == Some(conn) => Some(index),
            _ => self.by_conn.displaced.get(&conn).copied(),
        }
    }

    fn slot_conn(&self, index: u32) -> Option<ConnId> {
        self.entries.get(index)?.slot.as_ref().map(ConnSlot::conn)
    }

    /// The full key of the slot at `index`, if its generation is one `generation_matches` accepts.
    pub fn resolve(&self, index: u32, generation_matches: impl Fn(u32) -> bool) -> Option<SlotKey> {
        let entry = self.entries.get(index)?;
        (entry.slot.is_some() && generation_matches(entry.generation))
            .then_some(SlotKey { index, generation: entry.generation })
    }

    /// The slot at `index` if it is still of `generation` (`None` for a completion of an older slot).
    pub fn get_mut(&mut self, index: u32, generation_matches: impl Fn(u32) -> bool) -> Option<&mut ConnSlot> {
        let entry = self.entries.get_mut(index)?;
        if !generation_matches(entry.generation) {
            return None;
        }
        entry.slot.as_mut()
    }

    pub fn get_by_key(&mut self, key: SlotKey) -> Option<&mut ConnSlot> {
        self.get_mut(key.index, |generation| generation == key.generation)
    }

    /// The core forgot the connection: its `ConnId` no longer leads here (the slot stays until its
    /// requests end).
    pub fn unmap(&mut self, conn: ConnId) {
        let at = core_index(conn);
        match self.by_conn.slots.get(at) {
            Some(&index) if index != UNMAPPED && self.slot_conn(index) == Some(conn) => {
                self.by_conn.slots[at] = UNMAPPED;
            }
            _ => {
                self.by_conn.displaced.remove(&conn);
            }
        }
    }

    pub fn remove(&mut self, key: SlotKey) -> Option<ConnSlot> {
        let entry = self.entries.get(key.index)?;
        if entry.generation != key.generation {
            return None;
        }
        let conn = entry.slot.as_ref()?.conn();
        if self.mapped_index(conn) == Some(key.index) {
            self.unmap(conn);
        }
        let entry = self.entries.get_mut(key.index).expect("checked above");
        let slot = entry.slot.take().expect("checked above");
        entry.generation = entry.generation.wrapping_add(1);
        self.free.push(key.index);
        self.len -= 1;
        Some(slot)
    }

    /// Every slot's key (for shutdown).
    pub fn keys(&self) -> Vec<SlotKey> {
        let mut keys = Vec::with_capacity(self.len);
        for (page_index, page) in self.entries.pages.iter().enumerate() {
            for (offset, entry) in page.iter().enumerate() {
                if entry.slot.is_some() {
                    let index = (page_index * PAGE_SLOTS + offset) as u32;
                    keys.push(SlotKey { index, generation: entry.generation });
                }
            }
        }
        keys
    }
}

/// The slab's storage: fixed-size pages, so growing never copies or doubles it.
#[derive(Default)]
struct Pages {
    pages: Vec<Box<[Entry]>>,
    used: usize,
}

impl Pages {
    fn get(&self, index: u32) -> Option<&Entry> {
        let index = index as usize;
        (index < self.used).then(|| &self.pages[index / PAGE_SLOTS][index % PAGE_SLOTS])
    }

    fn get_mut(&mut self, index: u32) -> Option<&mut Entry> {
        let index = index as usize;
        (index < self.used).then(|| &mut self.pages[index / PAGE_SLOTS][index % PAGE_SLOTS])
    }

    /// A new index past the used ones.
    fn grow(&mut self) -> u32 {
        if self.used == self.pages.len() * PAGE_SLOTS {
            self.pages.push((0..PAGE_SLOTS).map(|_| Entry { generation: 0, slot: None }).collect());
        }
        self.used += 1;
        u32::try_from(self.used - 1).expect("more than u32::MAX connections on a shard")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::ConnectionPermit;

    fn slot(permits: &ConnectionPermit, conn: ConnId) -> ConnSlot {
        let fd = std::fs::File::open("/dev/null").expect("/dev/null").into();
        ConnSlot::new(conn, fd, 0, None, permits.try_acquire().expect("a permit"), true)
    }

    /// A ConnId of core slab index `index` and generation `generation`, as the core makes them.
    fn conn(index: u32, generation: u32) -> ConnId {
        ConnId(u64::from(generation) << 32 | u64::from(index))
    }

    #[test]
    fn a_connection_is_found_by_its_conn_id_until_unmapped_and_its_slot_until_removed() {
        let permits = ConnectionPermit::new(8);
        let mut table = ConnTable::default();
        let (a, b) = (conn(0, 0), conn(5, 0));
        let key_a = table.insert(slot(&permits, a));
        let key_b = table.insert(slot(&permits, b));
        assert_eq!(table.key_of(a), Some(key_a));
        assert_eq!(table.key_of(b), Some(key_b));
        assert_eq!(table.key_of(conn(5, 1)), None, "another generation at the same core index");
        assert_eq!(table.key_of(conn(3, 0)), None);
        table.unmap(a);
        assert_eq!(table.key_of(a), None);
        assert!(table.get_by_key(key_a).is_some(), "the slot stays while its requests end");
        assert!(table.remove(key_a).is_some());
        assert!(table.remove(key_a).is_none(), "removed once");
        assert!(table.remove(key_b).is_some());
        assert_eq!(table.key_of(b), None, "removing a slot unmaps its connection");
        assert!(table.is_empty());
    }

    #[test]
    fn a_core_index_reused_before_the_old_close_keeps_both_connections_reachable() {
        let permits = ConnectionPermit::new(8);
        let mut table = ConnTable::default();
        // The core forgot `old` and reused its index for `new` before the runtime carried out the close.
        let (old, new) = (conn(2, 0), conn(2, 1));
        let key_old = table.insert(slot(&permits, old));
        let key_new = table.insert(slot(&permits, new));
        assert_eq!(table.key_of(old), Some(key_old));
        assert_eq!(table.key_of(new), Some(key_new));
        table.unmap(old);
        assert_eq!(table.key_of(old), None);
        assert_eq!(table.key_of(new), Some(key_new), "unmapping the old one leaves the new one");
        assert!(table.remove(key_old).is_some());
        assert_eq!(table.key_of(new), Some(key_new));
        // And the other order: the new connection goes first, then the displaced one is removed.
        let newer = conn(2, 2);
        table.unmap(new);
        assert!(table.remove(key_new).is_some());
        let key_newer = table.insert(slot(&permits, newer));
        let (reused, reuser) = (newer, conn(2, 3));
        let key_reuser = table.insert(slot(&permits, reuser));
        assert!(table.remove(key_reuser).is_some());
        assert_eq!(table.key_of(reuser), None);
        assert_eq!(table.key_of(reused), Some(key_newer), "the displaced mapping survives the newer's removal");
        assert!(table.by_conn.slots.iter().all(|&index| index == UNMAPPED || table.slot_conn(index).is_some()));
    }
}
