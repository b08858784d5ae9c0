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
use crate::protocol::{Packet, ReasonCode};

impl ShardCore {
    pub(super) fn dispatch(&mut self, conn: ConnId, packet: Packet, now: Instant) {
        let Some(phase) = self.connections.get(&conn).map(|connection| connection.phase) else { return };
        let key = match (phase, packet) {
            (Phase::AwaitingConnect, Packet::Connect(connect)) => return self.handle_connect(conn, *connect, now),
            (Phase::AwaitingConnect, Packet::Auth(auth)) => return self.handle_connect_auth(conn, auth, now),
            (Phase::AwaitingConnect, other) => {
                warn!(shard = self.shard, packet = ?other.packet_type(), "[MQTT-3.1.0-1] first packet is not CONNECT, closing");
                let detail = "[MQTT-3.1.0-1] first packet must be CONNECT".into();
                return self.end_connection(
                    conn,
                    CloseReason::ProtocolError { reason: ReasonCode::PROTOCOL_ERROR, detail },
                    now,
                );
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
            Packet::Connect(_) => self.protocol_error(conn, "[MQTT-3.1.0-2] second CONNECT on a connection", now),
            Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
                self.protocol_error(conn, "(section 2.1.2) server-to-client packet sent by a client", now)
            }
        }
    }

    /// Closes a connection that broke `rule` (a v5 client first gets DISCONNECT 0x82 naming it).
    pub(super) fn protocol_error(&mut self, conn: ConnId, rule: &'static str, now: Instant) {
        self.close_for(conn, ReasonCode::PROTOCOL_ERROR, rule, now);
    }

    /// Closes a connection with a v5 DISCONNECT `reason`; logs the rule with the client id.
    pub(super) fn close_for(&mut self, conn: ConnId, reason: ReasonCode, rule: &'static str, now: Instant) {
        let client_id = self.client_id_of(conn);
        warn!(shard = self.shard, client_id = ?client_id, %reason, "{rule}, closing");
        self.end_connection(conn, CloseReason::ProtocolError { reason, detail: rule.into() }, now);
    }

    pub(super) fn client_id_of(&self, conn: ConnId) -> Option<crate::protocol::ByteStr> {
        let key = self.connections.get(&conn)?.phase.session_key()?;
        Some(crate::protocol::ByteStr::from(&*self.sessions.get(key)?.client_id))
    }
}
