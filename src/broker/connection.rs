//! `Connection`: the protocol state of one network connection on this shard. Kept small on purpose: an
//! idle connected client costs this struct (see the `size_of` test), its map slot and one timer-wheel
//! entry. Everything that outlives the connection lives in its `Session`.

use std::collections::VecDeque;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::session::SessionKey;
use crate::auth::{AuthExchange, AuthMethod};
use crate::protocol::Connect;
use super::topic_alias::TopicAliases;
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
}

/// Enhanced authentication state of a connection whose CONNECT named an Authentication Method (v5
/// section 4.12). Kept beside `Connection`, in `ShardCore::enhanced_auth`, so that connections without
/// enhanced authentication pay nothing for it.
pub struct ConnectionAuth {
    pub method: Rc<dyn AuthMethod>,
    /// The exchange in progress (CONNECT or re-authentication); None between exchanges.
    pub exchange: Option<Box<dyn AuthExchange>>,
    /// The CONNECT waiting for its exchange to succeed; None once connected.
    pub pending_connect: Option<Box<Connect>>,
    /// Who the last successful exchange authenticated: a re-authentication must prove the same user.
    pub user: Option<String>,
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
    pub fn new(now: Instant) -> Self {
        Connection {
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
    fn keepalive_deadline_is_one_and_a_half_intervals_mqtt_3_1_2_24() {
        let now = Instant::now();
        let mut connection = Connection::new(now);
        assert_eq!(connection.keepalive_deadline(), None, "keep-alive 0 disables it");
        connection.keepalive_secs = 10;
        assert_eq!(connection.keepalive_deadline(), Some(now + Duration::from_secs(15)));
    }
}
