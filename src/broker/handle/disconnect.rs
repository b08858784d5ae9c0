//! DISCONNECT from the client: with reason 0x00 (always so in 3.x) the will is discarded [MQTT-3.14.4-3];
//! any other v5 reason (0x04 Disconnect with Will Message, or an error) leaves it to be published
//! (v5 section 3.1.2.5). A v5 client may change the session expiry, but not from 0 [MQTT-3.14.2-2].

use std::time::Instant;

use super::super::core::ShardCore;
use super::super::lifecycle::CloseReason;
use super::super::message::ConnId;
use super::super::refusal::Refusal;
use super::super::session::SessionKey;
use crate::protocol::{Disconnect, ReasonCode};

impl ShardCore {
    pub(in crate::broker) fn handle_disconnect(
        &mut self,
        conn: ConnId,
        key: SessionKey,
        disconnect: Disconnect,
        now: Instant,
    ) {
        if let Some(requested) = disconnect.properties.session_expiry_interval_secs {
            let expiry_max = self.settings.session_expiry_max_secs;
            let Some(session) = self.sessions.get_mut(key) else {
                return;
            };
            if session.expiry_interval_secs == 0 && requested != 0 {
                return self.close_for(conn, Refusal::SessionExpiryAfterZero, now);
            }
            self.sessions.set_expiry(key, requested.min(expiry_max));
        }
        let publish_will = disconnect.reason != ReasonCode::NORMAL_DISCONNECTION;
        self.end_connection(conn, CloseReason::ClientDisconnect { publish_will }, now);
    }
}
