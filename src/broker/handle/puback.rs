//! PUBACK from the client: a QoS 1 delivery is done; the freed window slot takes the next queued message.

use std::time::Instant;

use tracing::trace;

use super::super::core::ShardCore;
use super::super::inflight::AckOutcome;
use super::super::session::SessionKey;
use crate::protocol::PubResponse;

impl ShardCore {
    pub(in crate::broker) fn handle_puback(&mut self, key: SessionKey, ack: PubResponse, now: Instant) {
        let Some(session) = self.sessions.get_mut(key) else {
            return;
        };
        if session.traffic_mut().inflight.puback(ack.packet_id) == AckOutcome::UnknownPacketId {
            trace!(client_id = %session.client_id, packet_id = ack.packet_id, "PUBACK for no inflight QoS 1 PUBLISH, ignored");
        }
        self.drain_queue(key, now);
    }
}
