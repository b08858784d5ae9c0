//! The broker side of dynamic security (`crate::auth::dynsec`): a PUBLISH to
//! `$CONTROL/dynamic-security/v1` that the rules allowed is a command batch, not a message. It is applied
//! here, on the shard of the publishing admin, answered on `$CONTROL/dynamic-security/v1/response`
//! (routed like any message, so the admin's subscription gets it wherever it lives), and never delivered
//! to subscribers of the command topic.
//!
//! The new rules are visible to every shard at once (they share the `DynamicSecurity`). What needs each
//! shard is closing the live connections of clients that were deleted, disabled or given new
//! credentials: this shard closes its own and sends `MeshMessage::KickUsernames` to every other shard.
//! The mesh and not the runtime's control seam, because the command is handled inside the sans-I/O core
//! in the middle of a turn: the mesh is the one channel the core already has to its peers (ordered after
//! the messages this shard sent before, never shed, also in the simulation), while `Control::call_all`
//! is for threads outside the shards and would have this shard wait on itself.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tracing::warn;

use super::core::ShardCore;
use super::lifecycle::CloseReason;
use super::message::{ConnId, MeshMessage, Message, Origin};
use super::session::SessionKey;
use crate::auth::dynsec::{CONTROL_TOPIC, RESPONSE_TOPIC};
use crate::protocol::{ByteStr, Packet, Properties, PubResponse, Publish, QoS, ReasonCode};

impl ShardCore {
    /// Whether `topic` is the dynamic security command topic and dynamic security is in use.
    pub(super) fn is_dynsec_command(&self, topic: &str) -> bool {
        topic == CONTROL_TOPIC && self.access.dynamic_security().is_some()
    }

    /// Applies an allowed command PUBLISH, acknowledges it (PUBACK / PUBREC 0x00), publishes the answer and
    /// closes the connections the commands took away, here and on every other shard.
    pub(super) fn handle_dynsec_command(&mut self, conn: ConnId, key: SessionKey, publish: Publish, now: Instant) {
        let Some(dynsec) = self.access.dynamic_security().map(Arc::clone) else { return };
        if publish.qos == QoS::ExactlyOnce {
            let Some(session) = self.sessions.get(key) else { return };
            if session.awaiting_pubrel().contains(&publish.packet_id) {
                // A resend of a batch already applied [MQTT-4.3.3-9]: applying it twice would answer twice.
                let ack = PubResponse { packet_id: publish.packet_id, ..Default::default() };
                return self.send_when_durable(conn, Packet::PubRec(ack));
            }
        }
        let admin = self.sessions.get(key).and_then(|session| session.username.as_deref()).unwrap_or("").to_string();
        let outcome = dynsec.handle_control(&publish.payload, &admin);
        let ack = PubResponse { packet_id: publish.packet_id, reason: ReasonCode::SUCCESS, ..PubResponse::default() };
        match publish.qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => self.send_when_durable(conn, Packet::PubAck(ack)),
            QoS::ExactlyOnce => {
                self.sessions.await_pubrel(key, publish.packet_id);
                self.send_when_durable(conn, Packet::PubRec(ack));
            }
        }
        self.publish_dynsec_response(outcome.response, now);
        if !outcome.kick.is_empty() {
            let usernames: Arc<[Box<str>]> = outcome.kick.into_iter().map(String::into_boxed_str).collect();
            self.broadcast(|| MeshMessage::KickUsernames(Arc::clone(&usernames)));
            self.kick_usernames(&usernames, now);
        }
    }

    fn publish_dynsec_response(&mut self, response: Vec<u8>, now: Instant) {
        let origin = Origin { shard: self.shard, conn: None };
        let topic = ByteStr::from_static(RESPONSE_TOPIC);
        let message =
            Message::new(topic, Bytes::from(response), QoS::AtMostOnce, false, Properties::default(), None, origin);
        match message {
            Ok(message) => {
                self.route_published(message, now);
            }
            Err(err) => warn!(shard = self.shard, error = %err, "dynamic security response cannot be encoded"),
        }
    }

    /// Closes this shard's connections of clients logged in with one of `usernames` (v5: DISCONNECT
    /// 0x98 Administrative action). Their sessions stay, as after any disconnect.
    pub fn kick_usernames(&mut self, usernames: &[Box<str>], now: Instant) {
        let kicked: Vec<ConnId> = self
            .sessions
            .iter_with_keys()
            .filter(|(_, session)| session.username.as_ref().is_some_and(|name| usernames.contains(name)))
            .filter_map(|(_, session)| session.conn)
            .collect();
        for conn in kicked {
            let detail = "dynamic security: client deleted, disabled or its credentials changed";
            self.end_connection(conn, CloseReason::Kicked { detail }, now);
        }
    }
}
