//! PUBREL from the client (its QoS 2 PUBLISH, step 2): the packet id is released, so a later PUBLISH with
//! it is a new message [MQTT-4.3.3-9]; answered with PUBCOMP (0x92 if the id was unknown).

use super::super::core::ShardCore;
use super::super::message::ConnId;
use super::super::session::SessionKey;
use crate::protocol::{Packet, PubResponse, ReasonCode};

impl ShardCore {
    pub(in crate::broker) fn handle_pubrel(&mut self, conn: ConnId, key: SessionKey, rel: PubResponse) {
        let reason = match self.sessions.release_pubrel(key, rel.packet_id) {
            true => ReasonCode::SUCCESS,
            false => ReasonCode::PACKET_IDENTIFIER_NOT_FOUND,
        };
        let pubcomp = PubResponse { packet_id: rel.packet_id, reason, ..PubResponse::default() };
        self.send_when_durable(conn, Packet::PubComp(pubcomp));
    }
}
