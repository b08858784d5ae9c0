//! PINGREQ: answered with PINGRESP [MQTT-3.12.4-1]; receiving it already renewed the keep-alive.

use super::super::core::ShardCore;
use super::super::message::ConnId;
use crate::protocol::Packet;

impl ShardCore {
    pub(in crate::broker) fn handle_pingreq(&mut self, conn: ConnId) {
        self.send(conn, &Packet::PingResp);
    }
}
