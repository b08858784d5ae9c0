//! Input the decoder rejected. After CONNACK a v5 client gets DISCONNECT with the decoder's reason code; a
//! 3.x client is just closed. Before CONNACK an unsupported protocol level is answered with the 3.1.1
//! CONNACK return code 1 [MQTT-3.1.2-2] (every level can read that form); anything else is closed.

use std::time::Instant;

use tracing::warn;

use super::super::connection::Phase;
use super::super::core::ShardCore;
use super::super::lifecycle::CloseReason;
use super::super::message::ConnId;
use super::super::refusal::Refusal;
use crate::protocol::{ConnAck, DecodeError, Packet, ProtocolVersion, ReasonCode};

impl ShardCore {
    pub(in crate::broker) fn refuse_malformed(&mut self, conn: ConnId, err: &DecodeError, now: Instant) {
        let Some(connection) = self.connections.get_mut(&conn) else {
            return;
        };
        let reason = err.reason_code();
        let awaiting_connect = connection.phase == Phase::AwaitingConnect;
        if awaiting_connect && reason == ReasonCode::UNSUPPORTED_PROTOCOL_VERSION {
            connection.version = Some(ProtocolVersion::V3_1_1);
            let connack = ConnAck { reason, ..ConnAck::default() };
            self.send(conn, &Packet::ConnAck(connack));
        }
        let client_id = self.client_id_of(conn);
        warn!(shard = self.shard, client_id = ?client_id, %reason, "malformed packet: {err}, closing");
        self.end_connection(conn, CloseReason::Refused(Refusal::Malformed(err.clone())), now);
    }
}
