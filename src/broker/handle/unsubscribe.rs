//! UNSUBSCRIBE: each filter removed (0x11 in the v5 UNSUBACK when there was no such subscription
//! (v5 section 3.11.3); 0x87 when the authorizer forbids it, and it stays); other shards told when this shard lost its last subscriber of a filter.

use super::super::core::ShardCore;
use super::super::message::ConnId;
use super::super::session::SessionKey;
use crate::protocol::topic::validate_topic_filter;
use crate::protocol::{Packet, ReasonCode, UnsubAck, Unsubscribe};

impl ShardCore {
    pub(in crate::broker) fn handle_unsubscribe(&mut self, conn: ConnId, key: SessionKey, unsubscribe: Unsubscribe) {
        let v5 = self.connections.get(&conn).is_some_and(|connection| connection.is_v5());
        let mut reasons = Vec::with_capacity(if v5 { unsubscribe.filters.len() } else { 0 });
        for filter in &unsubscribe.filters {
            if validate_topic_filter(filter).is_err() {
                if v5 {
                    reasons.push(ReasonCode::TOPIC_FILTER_INVALID);
                }
                continue;
            }
            if !self.may_unsubscribe(key, filter) {
                // The subscription stays; a 3.x UNSUBACK has no per-filter code to say so.
                if v5 {
                    reasons.push(ReasonCode::NOT_AUTHORIZED);
                }
                continue;
            }
            let existed = self.remove_subscription(filter, key);
            if existed {
                self.sessions.unsubscribed(key, filter);
            }
            if v5 {
                reasons.push(if existed { ReasonCode::SUCCESS } else { ReasonCode::NO_SUBSCRIPTION_EXISTED });
            }
        }
        let unsuback = UnsubAck { packet_id: unsubscribe.packet_id, reasons, ..UnsubAck::default() };
        self.send_when_durable(conn, Packet::UnsubAck(unsuback));
    }
}
