//! `Connection`: the protocol state of one network connection on this shard, and `Connections`, the slab
//! that holds them. Kept small on purpose: an idle connected client costs this struct (see the `size_of`
//! test), its slab slot and one timer-wheel entry. Everything that outlives the connection lives in its
//! `Session`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::message::ConnId;
use super::session::SessionKey;
use super::topic_alias::TopicAliases;
use crate::auth::{AuthExchange, AuthMethod, ListenerId};
use crate::protocol::Connect;
use crate::protocol::ProtocolVersion;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Accepted; the first packet must be CONNECT [MQTT-3.1.0-1].
    AwaitingConnect,
    /// CONNECT accepted, attached to this session.
    Connected(SessionKey),
}

#[derive(Debug)]
pub struct Connection {
    pub phase: Phase,
    /// Set from CONNECT (also when it is refused, so the CONNACK is encoded for the client's level).
    pub version: Option<ProtocolVersion>,
    /// Negotiated keep-alive; 0 = none.
    pub keepalive_secs: u16,
    pub last_packet_at: Instant,
    /// v5 Receive Maximum of the client (65535 when absent).
    pub client_receive_maximum: u16,
    /// v5 Maximum Packet Size of the client (u32::MAX when absent).
    pub client_max_packet_size: u32,
    /// Encoded frames waiting for `take_output`. Allocates only when used.
    pub out_queue: VecDeque<Bytes>,
    /// What `out_queue` holds: its bytes plus `backlog::FRAME_OVERHEAD_BYTES` per frame.
    pub out_queue_bytes: usize,
    /// A `Write` action is pending: don't emit another until `take_output`.
    pub write_requested: bool,
    /// v5 Topic Alias Maximum of the client, capped by our `topic_alias_max`; 0 = no server aliases.
    pub outgoing_alias_max: u16,
    /// Topic aliases in both directions; allocated on first use.
    pub aliases: Option<Box<TopicAliases>>,
    /// v5 Request Problem Information of the client: when false, no Reason String on packets other than
    /// CONNACK, DISCONNECT and PUBLISH [MQTT-3.1.2-29].
    pub problem_information: bool,
    /// The listener the connection arrived on (picks its authenticator and authorizer).
    pub listener: ListenerId,
}

/// Enhanced authentication state of a connection whose CONNECT named an Authentication Method (v5
/// section 4.12). Kept beside `Connection`, in `ShardCore::enhanced_auth`, so that connections without
/// enhanced authentication pay nothing for it.
pub struct ConnectionAuth {
    pub method: Arc<dyn AuthMethod>,
    /// The exchange in progress (CONNECT or re-authentication); None between exchanges.
    pub exchange: Option<Box<dyn AuthExchange>>,
    /// The CONNECT waiting for its exchange to succeed; None once connected.
    pub pending_connect: Option<Box<Connect>>,
    /// Who the last successful exchange authenticated: a re-authentication must prove the same user.
    pub user: Option<String>,
}

/// The connections of this shard in a slab. A `ConnId` is a slot index (low 32 bits) and the slot's
/// generation (high 32 bits), so a stale id (a connection the runtime still flushes after the core closed
/// it) never reaches the slot's next connection. A doubling `Vec` of slots costs less than a hash map,
/// whose table may be more than half empty.
#[derive(Default)]
pub struct Connections {
    slots: Vec<ConnectionSlot>,
    free: Vec<u32>,
    len: usize,
}

struct ConnectionSlot {
    generation: u32,
    connection: Option<Connection>,
}

impl Connections {
    /// Stores a new connection and returns its id.
    pub fn open(&mut self, connection: Connection) -> ConnId {
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                self.slots.push(ConnectionSlot { generation: 0, connection: None });
                u32::try_from(self.slots.len() - 1).expect("more than u32::MAX connections")
            }
        };
        let entry = &mut self.slots[slot as usize];
        entry.connection = Some(connection);
        self.len += 1;
        ConnId(u64::from(entry.generation) << 32 | u64::from(slot))
    }

    fn slot_of(conn: ConnId) -> (usize, u32) {
        ((conn.0 & u64::from(u32::MAX)) as usize, (conn.0 >> 32) as u32)
    }

    pub fn get(&self, conn: &ConnId) -> Option<&Connection> {
        let (slot, generation) = Self::slot_of(*conn);
        let entry = self.slots.get(slot).filter(|entry| entry.generation == generation)?;
        entry.connection.as_ref()
    }

    pub fn get_mut(&mut self, conn: &ConnId) -> Option<&mut Connection> {
        let (slot, generation) = Self::slot_of(*conn);
        let entry = self.slots.get_mut(slot).filter(|entry| entry.generation == generation)?;
        entry.connection.as_mut()
    }

    /// Takes the connection out; its slot's next connection gets a new generation.
    pub fn remove(&mut self, conn: &ConnId) -> Option<Connection> {
        let (slot, generation) = Self::slot_of(*conn);
        let entry = self.slots.get_mut(slot).filter(|entry| entry.generation == generation)?;
        let connection = entry.connection.take()?;
        entry.generation = entry.generation.wrapping_add(1);
        self.free.push(slot as u32);
        self.len -= 1;
        Some(connection)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// The ids of every connection.
    pub fn ids(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, entry)| entry.connection.is_some())
            .map(|(slot, entry)| ConnId(u64::from(entry.generation) << 32 | slot as u64))
    }
}

impl Phase {
    pub fn session_key(self) -> Option<SessionKey> {
        match self {
            Phase::Connected(key) => Some(key),
            Phase::AwaitingConnect => None,
        }
    }
}

impl Connection {
    pub fn new(now: Instant, listener: ListenerId) -> Self {
        Connection {
            listener,
            phase: Phase::AwaitingConnect,
            version: None,
            keepalive_secs: 0,
            last_packet_at: now,
            client_receive_maximum: u16::MAX,
            client_max_packet_size: u32::MAX,
            out_queue: VecDeque::new(),
            out_queue_bytes: 0,
            write_requested: false,
            outgoing_alias_max: 0,
            aliases: None,
            problem_information: true,
        }
    }

    pub fn is_v5(&self) -> bool {
        self.version == Some(ProtocolVersion::V5)
    }

    /// When the keep-alive runs out: 1.5 x the interval after the last packet [MQTT-3.1.2-24].
    pub fn keepalive_deadline(&self) -> Option<Instant> {
        (self.keepalive_secs > 0)
            .then(|| self.last_packet_at + Duration::from_millis(u64::from(self.keepalive_secs) * 1500))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Measured on x86_64: 88 bytes (`Instant` 16, out-queue `VecDeque` 32, alias box 8, the rest
    /// scalars); nothing allocated while idle. With its map slot (`ConnId` key) and one 24-byte timer-wheel
    /// entry an idle connection costs ~120 bytes of core state; its session adds ~250 (session tests).
    #[test]
    fn idle_connection_state_is_small() {
        assert!(std::mem::size_of::<Connection>() <= 88, "{}", std::mem::size_of::<Connection>());
    }

    #[test]
    fn slab_ids_of_closed_connections_never_reach_the_slot_reused_after_them() {
        let now = Instant::now();
        let mut connections = Connections::default();
        let first = connections.open(Connection::new(now, ListenerId::default()));
        let second = connections.open(Connection::new(now, ListenerId::default()));
        assert!(connections.remove(&first).is_some());
        assert!(connections.remove(&first).is_none(), "removed once");
        let third = connections.open(Connection::new(now, ListenerId::default()));
        assert_ne!(third, first, "the reused slot has a new generation");
        assert!(connections.get(&first).is_none() && connections.get(&third).is_some());
        assert_eq!(connections.len(), 2);
        let mut ids: Vec<ConnId> = connections.ids().collect();
        ids.sort_by_key(|id| id.0);
        let mut expected = vec![second, third];
        expected.sort_by_key(|id| id.0);
        assert_eq!(ids, expected);
    }

    #[test]
    fn keepalive_deadline_is_one_and_a_half_intervals_mqtt_3_1_2_24() {
        let now = Instant::now();
        let mut connection = Connection::new(now, ListenerId::default());
        assert_eq!(connection.keepalive_deadline(), None, "keep-alive 0 disables it");
        connection.keepalive_secs = 10;
        assert_eq!(connection.keepalive_deadline(), Some(now + Duration::from_secs(15)));
    }
}
