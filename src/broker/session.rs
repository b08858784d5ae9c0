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
use crate::auth::ListenerId;
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
    /// Messages queued, in flight or awaiting PUBREL; `None` while there are none, so an idle session
    /// carries one pointer for all of it.
    traffic: Option<Box<SessionTraffic>>,
    pub will: Option<Box<PendingWill>>,
    /// Who the last connection authenticated as (None = anonymous) and the listener it came in on:
    /// deliveries and the will are authorized as this client, also while it is offline.
    pub username: Option<Box<str>>,
    pub listener: ListenerId,
}

/// The QoS 1/2 message state of a session that has any.
#[derive(Debug, Default)]
pub struct SessionTraffic {
    pub inflight: Inflight,
    /// QoS 1/2 messages not yet sent: client offline or its Receive Maximum reached.
    pub queue: VecDeque<Delivery>,
    pub queued_bytes: usize,
    /// Packet ids of incoming QoS 2 PUBLISHes already routed, waiting for PUBREL [MQTT-4.3.3-9].
    pub awaiting_pubrel: SmallVec<[u16; 2]>,
}

impl SessionTraffic {
    fn is_idle(&self) -> bool {
        self.inflight.len() == 0 && self.queue.is_empty() && self.awaiting_pubrel.is_empty()
    }
}

impl Session {
    pub fn new(client_id: &str, conn: ConnId, expiry_interval_secs: u32) -> Self {
        Session {
            client_id: client_id.into(),
            conn: Some(conn),
            expiry_interval_secs,
            expires_at: None,
            filters: SmallVec::new(),
            traffic: None,
            will: None,
            username: None,
            listener: ListenerId::default(),
        }
    }

    /// The message state, if the session has any.
    pub fn traffic(&self) -> Option<&SessionTraffic> {
        self.traffic.as_deref()
    }

    /// The message state, created on first use.
    pub fn traffic_mut(&mut self) -> &mut SessionTraffic {
        self.traffic.get_or_insert_with(Box::default)
    }

    /// Frees the message state once nothing is queued, in flight or awaiting PUBREL (no capacity is kept
    /// from a burst).
    pub fn release_idle_traffic(&mut self) {
        if self.traffic.as_ref().is_some_and(|traffic| traffic.is_idle()) {
            self.traffic = None;
        }
    }

    pub fn inflight_len(&self) -> usize {
        self.traffic().map_or(0, |traffic| traffic.inflight.len())
    }

    pub fn awaiting_pubrel(&self) -> &[u16] {
        self.traffic().map_or(&[], |traffic| &traffic.awaiting_pubrel)
    }

    /// Appends to the queue unless that would pass either bound; `false` = dropped.
    pub fn enqueue(&mut self, delivery: Delivery, messages_max: usize, bytes_max: usize) -> bool {
        let size = delivery.message.queued_size_bytes();
        let traffic = self.traffic_mut();
        if traffic.queue.len() >= messages_max || traffic.queued_bytes + size > bytes_max {
            self.release_idle_traffic();
            return false;
        }
        traffic.queued_bytes += size;
        traffic.queue.push_back(delivery);
        true
    }

    /// The next queued message; when there is none, idle message state is freed.
    pub fn dequeue(&mut self) -> Option<Delivery> {
        let Some(delivery) = self.traffic.as_mut().and_then(|traffic| traffic.queue.pop_front()) else {
            self.release_idle_traffic();
            return None;
        };
        let traffic = self.traffic_mut();
        traffic.queued_bytes -= delivery.message.queued_size_bytes();
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

    /// The keys of every session, in slot order.
    pub fn keys(&self) -> impl Iterator<Item = SessionKey> + '_ {
        self.slots.iter().enumerate().filter(|(_, slot)| slot.is_some()).map(|(slot, _)| SessionKey(slot as u32))
    }

    /// Every session, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = &Session> {
        self.slots.iter().flatten()
    }

    /// Every session with its key, in slot order (cold paths only: a walk over the whole slab).
    pub fn iter_with_keys(&self) -> impl Iterator<Item = (SessionKey, &Session)> {
        self.slots.iter().enumerate().filter_map(|(index, slot)| {
            let key = SessionKey(u32::try_from(index).ok()?);
            slot.as_ref().map(|session| (key, session))
        })
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

    /// Measured on x86_64: 128 bytes (client id `Box<str>` 16, filter list with one inline filter 40,
    /// attached connection 16, expiry `Option<Instant>` 16, user name `Option<Box<str>>` 16, expiry
    /// interval and listener id in one word, and one pointer each for the message state and the will), none
    /// of it allocated while the session is idle beyond its client id, user name and filter strings.
    #[test]
    fn idle_session_state_is_small() {
        assert!(std::mem::size_of::<Session>() <= 128, "{}", std::mem::size_of::<Session>());
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
        assert_eq!(session.traffic().map(|traffic| traffic.queued_bytes), Some(size));
        assert!(session.dequeue().is_some());
        assert!(session.dequeue().is_none());
        assert!(session.traffic().is_none(), "an emptied queue frees the message state");
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
