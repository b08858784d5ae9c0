//! PUBCOMP from the client: a QoS 2 delivery is done; the freed window slot takes the next queued message.

use std::time::Instant;

use tracing::trace;

use super::super::core::ShardCore;
use super::super::inflight::AckOutcome;
use super::super::session::SessionKey;
use crate::protocol::PubResponse;

impl ShardCore {
    pub(in crate::broker) fn handle_pubcomp(&mut self, key: SessionKey, comp: PubResponse, now: Instant) {
        let Some(session) = self.sessions.get_mut(key) else {
            return;
        };
        if session.traffic_mut().inflight.pubcomp(comp.packet_id) == AckOutcome::UnknownPacketId {
            trace!(client_id = %session.client_id, packet_id = comp.packet_id, "PUBCOMP for no released QoS 2 PUBLISH, ignored");
        }
        self.drain_queue(key, now);
    }
}
