//! PUBREC from the client (our QoS 2 delivery, step 1): answered with PUBREL [MQTT-4.3.3-4]; a PUBREC with
//! an error reason ends the exchange without PUBREL (v5 section 4.3.3).

use std::time::Instant;

use super::super::core::ShardCore;
use super::super::inflight::AckOutcome;
use super::super::message::ConnId;
use super::super::session::{InflightAck, SessionKey};
use crate::protocol::{Packet, PubResponse, ReasonCode};

impl ShardCore {
    pub(in crate::broker) fn handle_pubrec(&mut self, conn: ConnId, key: SessionKey, rec: PubResponse, now: Instant) {
        if !rec.reason.is_success() {
            self.sessions.inflight_ack(key, InflightAck::Failed, rec.packet_id);
            return self.drain_queue(key, now);
        }
        let reason = match self.sessions.inflight_ack(key, InflightAck::PubRec, rec.packet_id) {
            AckOutcome::Done => ReasonCode::SUCCESS,
            AckOutcome::UnknownPacketId => ReasonCode::PACKET_IDENTIFIER_NOT_FOUND,
        };
        let pubrel = PubResponse { packet_id: rec.packet_id, reason, ..PubResponse::default() };
        self.send(conn, &Packet::PubRel(pubrel));
    }
}
