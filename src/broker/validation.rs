//! What a client's PUBLISH that fails a `[[validation]]` rule gets (the rules themselves are in
//! `crate::validation`): `reject` (not routed; v5 QoS 1/2 get 0x99 Payload Format Invalid with a Reason
//! String naming the rule, 3.1.1 QoS 1/2 a plain acknowledgement, QoS 0 nothing, as for an ACL denial),
//! `divert` (routed to the rule's divert topic instead, retain off, with user properties saying which rule
//! and why) or `disconnect` (v5 DISCONNECT 0x99, then close). Every failure is counted per rule.

use std::sync::Arc;
use std::time::Instant;

use tracing::{debug, info};

use super::core::ShardCore;
use super::lifecycle::CloseReason;
use super::message::ConnId;
use super::refusal::Refusal;
use crate::protocol::{ByteStr, Packet, Properties, PubResponse, Publish, QoS, ReasonCode};
use crate::validation::{OnInvalid, RuleSet};

/// User property on a diverted message: the label of the rule it failed.
pub const REJECTED_BY_PROPERTY: &str = "shardmq-rejected-by";
/// User property on a diverted message: why it failed.
pub const REJECTION_REASON_PROPERTY: &str = "shardmq-rejection-reason";

/// Longest reason text we send back (a Reason String is for humans; the payload is never echoed).
const REASON_TEXT_BYTES_MAX: usize = 256;

impl ShardCore {
    /// Replaces the validation rules (at start, and after a reload). Counters restart at zero, since rule
    /// indices may mean other rules now. An empty set turns validation off.
    pub fn set_validation(&mut self, rules: Option<Arc<RuleSet>>) {
        self.validation = rules.filter(|rules| !rules.is_empty());
        self.stats.validation_failures = vec![0; self.validation.as_ref().map_or(0, |rules| rules.len())];
    }

    /// The rules this shard checks publishes against.
    pub fn validation(&self) -> Option<&Arc<RuleSet>> {
        self.validation.as_ref()
    }

    /// Runs the rules over a client's PUBLISH. The topic and message to route (the original, or the
    /// diverted copy), or `None` when it was rejected or the connection closed.
    pub(super) fn validate_publish(
        &mut self,
        conn: ConnId,
        topic: ByteStr,
        publish: Publish,
        now: Instant,
    ) -> Option<(ByteStr, Publish)> {
        let Some(rules) = &self.validation else { return Some((topic, publish)) };
        let Some(failure) = rules.check(&topic, &publish.payload, &publish.properties) else {
            return Some((topic, publish));
        };
        let rules = Arc::clone(rules);
        let rule = rules.rule(failure.rule)?;
        if let Some(count) = self.stats.validation_failures.get_mut(failure.rule) {
            *count += 1;
        }
        let reason = truncated(format!("validation rule {} failed: {}", rule.label(), failure.detail));
        let client_id = self.client_id_of(conn);
        debug!(shard = self.shard, client_id = ?client_id, %topic, action = ?rule.on_invalid(), "{reason}");
        match rule.on_invalid() {
            OnInvalid::Reject => self.reject_invalid(conn, &publish, &reason),
            OnInvalid::Disconnect => {
                info!(shard = self.shard, client_id = ?client_id, reason = %ReasonCode::PAYLOAD_FORMAT_INVALID, "{reason}, closing");
                let close = CloseReason::Refused(Refusal::ValidationFailed { detail: reason });
                self.end_connection(conn, close, now);
            }
            OnInvalid::Divert => match rule.divert_topic(&topic) {
                Some(target) => return Some(diverted(target, publish, rule.label(), &failure.detail)),
                None => self.reject_invalid(conn, &publish, &reason),
            },
        }
        None
    }

    /// Not routed: v5 QoS 1/2 hear 0x99 with the rule in the Reason String; 3.1.1 QoS 1/2 get an
    /// acknowledgement (they have no way to hear a refusal), QoS 0 nothing.
    fn reject_invalid(&mut self, conn: ConnId, publish: &Publish, reason: &str) {
        let properties = Properties { reason_string: self.ack_reason_string(conn, reason), ..Properties::default() };
        let response =
            PubResponse { packet_id: publish.packet_id, reason: ReasonCode::PAYLOAD_FORMAT_INVALID, properties };
        match publish.qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => self.send(conn, &Packet::PubAck(response)),
            QoS::ExactlyOnce => self.send(conn, &Packet::PubRec(response)),
        }
    }
}

/// The message as it goes to the divert topic: same QoS, payload and properties, retain off (a rejected
/// message must not become the topic's retained state), and the rule and reason as user properties.
pub(super) fn diverted(target: String, mut publish: Publish, label: &str, detail: &str) -> (ByteStr, Publish) {
    publish.retain = false;
    let properties = &mut publish.properties.user_properties;
    properties.push((ByteStr::from_static(REJECTED_BY_PROPERTY), ByteStr::from(label)));
    properties.push((ByteStr::from_static(REJECTION_REASON_PROPERTY), ByteStr::from(truncated(detail.to_string()))));
    (ByteStr::from(target), publish)
}

fn truncated(mut text: String) -> String {
    if text.len() > REASON_TEXT_BYTES_MAX {
        let mut end = REASON_TEXT_BYTES_MAX;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}
