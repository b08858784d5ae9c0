//! A shard's connections: a slab of slots with generations (a completion names its slot by index and
//! generation, so a late completion never reaches a newer connection in the same place) and the map from
//! the core's `ConnId` to the slot, for the core's actions.
//!
//! A slot outlives the core's knowledge of its connection while requests on its socket are in flight;
//! the core may reuse the `ConnId`'s place meanwhile, which is why the two are keyed apart.

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
    by_conn: AHashMap<ConnId, u32>,
    len: usize,
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
        self.by_conn.insert(conn, index);
        self.len += 1;
        SlotKey { index, generation: entry.generation }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The slot of a connection the core knows.
    pub fn key_of(&self, conn: ConnId) -> Option<SlotKey> {
        let index = *self.by_conn.get(&conn)?;
        Some(SlotKey { index, generation: self.entries.get(index)?.generation })
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
        self.by_conn.remove(&conn);
    }

    pub fn remove(&mut self, key: SlotKey) -> Option<ConnSlot> {
        let entry = self.entries.get_mut(key.index)?;
        if entry.generation != key.generation {
            return None;
        }
        let slot = entry.slot.take()?;
        entry.generation = entry.generation.wrapping_add(1);
        self.free.push(key.index);
        if self.by_conn.get(&slot.conn()) == Some(&key.index) {
            self.by_conn.remove(&slot.conn());
        }
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
