//! AUTH: no enhanced authentication method is offered (CONNECT with one is refused with 0x8C), so an AUTH
//! packet is a protocol error (v5 section 4.12).

use std::time::Instant;

use super::super::core::ShardCore;
use super::super::message::ConnId;

impl ShardCore {
    pub(in crate::broker) fn handle_auth(&mut self, conn: ConnId, now: Instant) {
        self.protocol_error(conn, "[MQTT-4.12.0-1] AUTH without an authentication method in CONNECT", now);
    }
}
