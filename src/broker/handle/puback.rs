//! PUBACK from the client: a QoS 1 delivery is done; the freed window slot takes the next queued message.

use std::time::Instant;

use tracing::trace;

use super::super::core::ShardCore;
use super::super::inflight::AckOutcome;
use super::super::session::{InflightAck, SessionKey};
use crate::protocol::PubResponse;

impl ShardCore {
    pub(in crate::broker) fn handle_puback(&mut self, key: SessionKey, ack: PubResponse, now: Instant) {
        if self.sessions.inflight_ack(key, InflightAck::PubAck, ack.packet_id) == AckOutcome::UnknownPacketId {
            let client_id = self.sessions.get(key).map(|session| tracing::field::display(&*session.client_id));
            trace!(client_id, packet_id = ack.packet_id, "PUBACK for no inflight QoS 1 PUBLISH, ignored");
        }
        self.drain_queue(key, now);
    }
}
