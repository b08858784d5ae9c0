//! One handler per packet kind. `dispatch` enforces the connection phase: CONNECT first and only once
//! [MQTT-3.1.0-1] [MQTT-3.1.0-2], and only client-to-server packet kinds afterwards.

mod auth;
mod connect;
mod disconnect;
mod malformed;
mod pingreq;
mod puback;
mod pubcomp;
mod publish;
mod pubrec;
mod pubrel;
mod subscribe;
mod unsubscribe;

use std::time::Instant;

use tracing::warn;

use super::connection::Phase;
use super::core::ShardCore;
use super::lifecycle::CloseReason;
use super::message::ConnId;
use super::refusal::Refusal;
use crate::protocol::Packet;

impl ShardCore {
    pub(super) fn dispatch(&mut self, conn: ConnId, packet: Packet, now: Instant) {
        let Some(phase) = self.connections.get(&conn).map(|connection| connection.phase) else {
            return;
        };
        let key = match (phase, packet) {
            (Phase::AwaitingConnect, Packet::Connect(connect)) => return self.handle_connect(conn, *connect, now),
            (Phase::AwaitingConnect, Packet::Auth(auth)) => return self.handle_connect_auth(conn, auth, now),
            (Phase::AwaitingConnect, other) => {
                let refusal = Refusal::FirstPacketNotConnect;
                warn!(shard = self.shard, packet = ?other.packet_type(), rule = refusal.rule(), "first packet is not CONNECT, closing");
                return self.end_connection(conn, CloseReason::Refused(refusal), now);
            }
            (Phase::Connected(key), packet) => (key, packet),
        };
        let (key, packet) = key;
        match packet {
            Packet::Publish(publish) => self.handle_publish(conn, key, publish, now),
            Packet::PubAck(ack) => self.handle_puback(key, ack, now),
            Packet::PubRec(rec) => self.handle_pubrec(conn, key, rec, now),
            Packet::PubRel(rel) => self.handle_pubrel(conn, key, rel),
            Packet::PubComp(comp) => self.handle_pubcomp(key, comp, now),
            Packet::Subscribe(subscribe) => self.handle_subscribe(conn, key, subscribe, now),
            Packet::Unsubscribe(unsubscribe) => self.handle_unsubscribe(conn, key, unsubscribe),
            Packet::PingReq => self.handle_pingreq(conn),
            Packet::Disconnect(disconnect) => self.handle_disconnect(conn, key, disconnect, now),
            Packet::Auth(auth) => self.handle_reauth(conn, auth, now),
            Packet::Connect(_) => self.close_for(conn, Refusal::SecondConnect, now),
            Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
                self.close_for(conn, Refusal::ServerToClientPacket, now)
            }
        }
    }

    /// Closes a connection that broke a rule (a v5 client first gets DISCONNECT with the refusal's reason
    /// code, naming the rule); logs the rule with the client id.
    pub(super) fn close_for(&mut self, conn: ConnId, refusal: Refusal, now: Instant) {
        let client_id = self.client_id_of(conn);
        warn!(shard = self.shard, client_id = ?client_id, reason = %refusal.reason(), "{refusal}, closing");
        self.end_connection(conn, CloseReason::Refused(refusal), now);
    }

    pub(super) fn client_id_of(&self, conn: ConnId) -> Option<crate::protocol::ByteStr> {
        let key = self.connections.get(&conn)?.phase.session_key()?;
        Some(crate::protocol::ByteStr::from(&*self.sessions.get(key)?.client_id))
    }
}
