//! Sessions of the clients whose home is this shard, keyed by client id: what outlives a network
//! connection (subscriptions, outgoing inflight window, the queue of messages waiting for the client,
//! incoming QoS 2 packet ids awaiting PUBREL, the pending will) and its expiry.
//!
//! Sessions live in a slab (`SessionKey` = slot index) so the subscription trie can name a subscriber with
//! four bytes; a slot is reused only after the session's subscriptions have left the trie.

use std::collections::VecDeque;
use std::time::Instant;

use ahash::RandomState;
use hashbrown::HashTable;
use smallvec::SmallVec;

use super::delivery::Delivery;
use super::inflight::Inflight;
use super::message::ConnId;
use super::will::PendingWill;
use crate::protocol::ByteStr;

/// Index of a session in this shard's slab.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionKey(pub u32);

/// Session Expiry Interval meaning "never expires" (v5 section 3.1.2.11.2).
pub const SESSION_NEVER_EXPIRES: u32 = u32::MAX;

#[derive(Debug)]
pub struct Session {
    /// The only copy of the client id on this shard: the index by client id points at the slot.
    pub client_id: Box<str>,
    /// The connection currently attached, if any.
    pub conn: Option<ConnId>,
    /// Seconds the session outlives its connection; 0 = ends with it, `SESSION_NEVER_EXPIRES` = never.
    pub expiry_interval_secs: u32,
    /// Set while no connection is attached and the session will expire.
    pub expires_at: Option<Instant>,
    /// Topic filters this session subscribed to (the trie holds the options). Most devices hold one.
    pub filters: SmallVec<[ByteStr; 1]>,
    pub inflight: Inflight,
    /// QoS 1/2 messages not yet sent: client offline or its Receive Maximum reached.
    pub queue: VecDeque<Delivery>,
    pub queued_bytes: usize,
    /// Packet ids of incoming QoS 2 PUBLISHes already routed, waiting for PUBREL [MQTT-4.3.3-9].
    pub awaiting_pubrel: SmallVec<[u16; 2]>,
    pub will: Option<Box<PendingWill>>,
}

impl Session {
    pub fn new(client_id: &str, conn: ConnId, expiry_interval_secs: u32) -> Self {
        Session {
            client_id: client_id.into(),
            conn: Some(conn),
            expiry_interval_secs,
            expires_at: None,
            filters: SmallVec::new(),
            inflight: Inflight::default(),
            queue: VecDeque::new(),
            queued_bytes: 0,
            awaiting_pubrel: SmallVec::new(),
            will: None,
        }
    }

    /// Appends to the queue unless that would pass either bound; `false` = dropped.
    pub fn enqueue(&mut self, delivery: Delivery, messages_max: usize, bytes_max: usize) -> bool {
        let size = delivery.message.queued_size_bytes();
        if self.queue.len() >= messages_max || self.queued_bytes + size > bytes_max {
            return false;
        }
        self.queued_bytes += size;
        self.queue.push_back(delivery);
        true
    }

    pub fn dequeue(&mut self) -> Option<Delivery> {
        let delivery = self.queue.pop_front()?;
        self.queued_bytes -= delivery.message.queued_size_bytes();
        Some(delivery)
    }
}

/// The slab of sessions plus the index by client id. The index holds only slot numbers (hashed by the
/// client id stored in the slot), so a client id is kept once.
#[derive(Default)]
pub struct Sessions {
    slots: Vec<Option<Session>>,
    free: Vec<u32>,
    by_client_id: HashTable<SessionKey>,
    hasher: RandomState,
}

impl Sessions {
    pub fn find(&self, client_id: &str) -> Option<SessionKey> {
        let hash = self.hasher.hash_one(client_id);
        self.by_client_id.find(hash, |key| self.client_id_at(*key) == Some(client_id)).copied()
    }

    pub fn get(&self, key: SessionKey) -> Option<&Session> {
        self.slots.get(key.0 as usize).and_then(Option::as_ref)
    }

    pub fn get_mut(&mut self, key: SessionKey) -> Option<&mut Session> {
        self.slots.get_mut(key.0 as usize).and_then(Option::as_mut)
    }

    /// Stores a session whose client id is not present yet.
    pub fn insert(&mut self, session: Session) -> SessionKey {
        debug_assert!(self.find(&session.client_id).is_none());
        let hash = self.hasher.hash_one(&*session.client_id);
        let key = match self.free.pop() {
            Some(slot) => {
                self.slots[slot as usize] = Some(session);
                SessionKey(slot)
            }
            None => {
                self.slots.push(Some(session));
                SessionKey(u32::try_from(self.slots.len() - 1).expect("more than u32::MAX sessions"))
            }
        };
        let (slots, hasher) = (&self.slots, &self.hasher);
        self.by_client_id.insert_unique(hash, key, |key| hasher.hash_one(client_id_in(slots, *key).unwrap_or("")));
        key
    }

    pub fn remove(&mut self, key: SessionKey) -> Option<Session> {
        let client_id = self.client_id_at(key)?;
        let hash = self.hasher.hash_one(client_id);
        if let Ok(entry) = self.by_client_id.find_entry(hash, |found| *found == key) {
            entry.remove();
        }
        let session = self.slots.get_mut(key.0 as usize)?.take()?;
        self.free.push(key.0);
        Some(session)
    }

    pub fn len(&self) -> usize {
        self.by_client_id.len()
    }

    fn client_id_at(&self, key: SessionKey) -> Option<&str> {
        client_id_in(&self.slots, key)
    }
}

fn client_id_in(slots: &[Option<Session>], key: SessionKey) -> Option<&str> {
    slots.get(key.0 as usize)?.as_ref().map(|session| &*session.client_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::delivery::tests::delivery;
    use crate::protocol::QoS;

    /// Measured on x86_64: 208 bytes (client id `Bytes` 32, inflight and queue `VecDeque`s 32 each, filters
    /// `Vec` 24, expiry `Option<Instant>` 16, the rest scalars and the will `Box`), none of it allocated
    /// while the session is idle with nothing queued. Per connected idle client the core then holds about
    /// 96 (connection + map key) + 24 (timer entry) + 208 (session slab slot) + 36 (client id index)
    /// bytes plus the client id's own bytes: roughly 0.4 KiB.
    #[test]
    fn idle_session_state_is_small() {
        assert!(std::mem::size_of::<Session>() <= 208, "{}", std::mem::size_of::<Session>());
    }

    #[test]
    fn queue_bounded_by_messages_and_bytes() {
        let mut session = Session::new("c", ConnId(1), 0);
        let size = delivery(QoS::AtLeastOnce).message.queued_size_bytes();
        assert!(session.enqueue(delivery(QoS::AtLeastOnce), 2, size * 10));
        assert!(session.enqueue(delivery(QoS::AtLeastOnce), 2, size * 10));
        assert!(!session.enqueue(delivery(QoS::AtLeastOnce), 2, size * 10), "message bound");
        assert!(session.dequeue().is_some());
        assert!(!session.enqueue(delivery(QoS::AtLeastOnce), 10, size), "byte bound");
        assert_eq!(session.queued_bytes, size);
    }

    #[test]
    fn slab_reuses_slots_and_indexes_by_client_id() {
        let mut sessions = Sessions::default();
        let a = sessions.insert(Session::new("a", ConnId(1), 0));
        let b = sessions.insert(Session::new("b", ConnId(2), 0));
        assert_eq!(sessions.find("b"), Some(b));
        assert!(sessions.remove(a).is_some());
        assert_eq!(sessions.find("a"), None);
        let c = sessions.insert(Session::new("c", ConnId(3), 0));
        assert_eq!(c, a, "slot reused");
        assert_eq!(sessions.len(), 2);
    }
}
