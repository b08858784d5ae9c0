//! Home-shard placement: which shard a connection belongs on once its CONNECT is parsed, and the handoff
//! that carries the socket there (fd, bytes already read after the CONNECT, the parsed CONNECT).
//!
//! The accepting shard never lets its core see a CONNECT it does not own, so session takeover, persistent
//! sessions and wills stay local to one shard. Empty client ids (server-assigned ids) stay where accepted.

use std::os::fd::OwnedFd;

use bytes::BytesMut;

use super::PermitGuard;
use crate::broker::{home_shard, ShardId};
use crate::protocol::Packet;
use crate::transport::BoxedTransport;

/// A connection moving to its home shard over the mesh.
pub struct Handoff {
    /// The socket itself: the accepting shard has no request on it in flight and forgot it.
    pub fd: OwnedFd,
    /// The listener it arrived on (an index into the effective listener list).
    pub listener: u16,
    /// The transport's state (TLS session, WebSocket framing), when it is not plain TCP.
    pub transport: Option<BoxedTransport>,
    /// Bytes read after the CONNECT, decoded by the home shard after it.
    pub leftover: BytesMut,
    /// The parsed CONNECT, fed to the home shard's core first.
    pub connect: Packet,
    /// The connection's place under `connections_max`, carried along so the count never dips while the
    /// connection is in flight.
    pub permit: PermitGuard,
}

impl Handoff {
    /// The client id of the moving connection, for the log.
    pub fn client_id(&self) -> &str {
        match &self.connect {
            Packet::Connect(connect) => connect.client_id.as_str(),
            _ => "",
        }
    }
}

/// The shard `first_packet` must be handled on, when it is not `this_shard`: only a CONNECT with a
/// non-empty client id whose home is elsewhere moves.
pub fn move_target(first_packet: &Packet, this_shard: ShardId, shard_count: usize) -> Option<ShardId> {
    let Packet::Connect(connect) = first_packet else {
        return None;
    };
    if shard_count < 2 || connect.client_id.is_empty() {
        return None;
    }
    let home = home_shard(connect.client_id.as_str(), shard_count);
    (home != this_shard).then_some(home)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{ByteStr, Connect, Properties, ProtocolVersion};
    use bytes::Bytes;

    fn connect(client_id: &'static str) -> Packet {
        Packet::Connect(Box::new(Connect {
            version: ProtocolVersion::V5,
            clean_start: true,
            keep_alive_secs: 30,
            client_id: ByteStr::from_utf8(Bytes::from_static(client_id.as_bytes())).unwrap(),
            will: None,
            username: None,
            password: None,
            properties: Properties::default(),
        }))
    }

    /// A client id whose home is `shard` among `shards`.
    fn id_homed_on(shard: ShardId, shards: usize) -> &'static str {
        let id = (0..).map(|n| format!("client-{n}")).find(|id| home_shard(id, shards) == shard).unwrap();
        Box::leak(id.into_boxed_str())
    }

    #[test]
    fn a_connect_homed_elsewhere_moves_to_its_home() {
        let id = id_homed_on(1, 2);
        assert_eq!(move_target(&connect(id), 0, 2), Some(1));
        assert_eq!(move_target(&connect(id), 1, 2), None);
    }

    #[test]
    fn every_shard_agrees_on_the_target() {
        for n in 0..50 {
            let id: &'static str = Box::leak(format!("device-{n}").into_boxed_str());
            let home = home_shard(id, 4);
            for shard in 0..4 {
                let expected = (shard != home).then_some(home);
                assert_eq!(move_target(&connect(id), shard, 4), expected, "{id} on shard {shard}");
            }
        }
    }

    #[test]
    fn empty_client_ids_and_single_shards_stay() {
        assert_eq!(move_target(&connect(""), 0, 4), None);
        assert_eq!(move_target(&connect(id_homed_on(0, 2)), 0, 1), None);
    }

    #[test]
    fn packets_other_than_connect_never_move() {
        assert_eq!(move_target(&Packet::PingReq, 0, 2), None);
    }
}
