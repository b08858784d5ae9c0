//! SUBSCRIBE: one reason code per filter in the SUBACK [MQTT-3.8.4-6] (granted QoS, or why not), the
//! subscription stored (replacing an existing one for the same filter [MQTT-3.8.4-3]), other shards told
//! of new interest, then the matching retained messages per Retain Handling [MQTT-3.3.1-9]
//! [MQTT-3.3.1-10] [MQTT-3.3.1-11].

use std::sync::Arc;
use std::time::Instant;

use super::super::core::ShardCore;
use super::super::held_suback::HeldSubAck;
use super::super::message::{ConnId, MeshMessage, Message};
use super::super::owned::owned_str;
use super::super::refusal::Refusal;
use super::super::session::SessionKey;
use super::super::subscriptions::Subscriber;
use crate::protocol::topic::{parse_shared_subscription, validate_topic_filter};
use crate::protocol::{ByteStr, Properties, QoS, ReasonCode, SubAck, Subscribe, SubscriptionOptions};

impl ShardCore {
    pub(in crate::broker) fn handle_subscribe(
        &mut self,
        conn: ConnId,
        key: SessionKey,
        subscribe: Subscribe,
        now: Instant,
    ) {
        let v5 = self.connections.get(&conn).is_some_and(|connection| connection.is_v5());
        let subscription_id = subscribe.properties.subscription_identifiers.first().copied().unwrap_or(0);
        let mut reasons = Vec::with_capacity(subscribe.filters.len());
        let mut retained: Vec<(Arc<Message>, QoS)> = Vec::new();
        let mut refusal_rules: Vec<&'static str> = Vec::new();
        for (filter, options) in &subscribe.filters {
            // Kept in the session, trie groups and mesh messages: a copy, not a slice of the read buffer.
            let filter = &owned_str(filter);
            let reason = match self.subscribe_one(key, filter, *options, subscription_id) {
                Ok((granted, send_retained)) => {
                    if send_retained {
                        let mut found = Vec::new();
                        self.retained.matching(filter, now, &mut found);
                        retained.extend(found.into_iter().map(|message| (message, granted)));
                    }
                    ReasonCode(granted as u8)
                }
                // 3.x SUBACK knows only 0x80 for a failure.
                Err(_) if !v5 => ReasonCode::UNSPECIFIED_ERROR,
                Err(refusal) => {
                    if !refusal_rules.contains(&refusal.rule()) {
                        refusal_rules.push(refusal.rule());
                    }
                    refusal.reason()
                }
            };
            reasons.push(reason);
        }
        let properties = Properties {
            reason_string: self.ack_reason_string(conn, &refusal_rules.join("; ")),
            ..Properties::default()
        };
        let suback = SubAck { packet_id: subscribe.packet_id, reasons, properties };
        let needs_seq = self.interest_seq_sent;
        let held = HeldSubAck { conn, session: key, suback, retained, subscription_id, needs_seq };
        self.complete_subscribe(held, now);
    }

    /// Stores one subscription. Ok: granted QoS and whether retained messages are due; Err: the SUBACK
    /// reason code and the rule, for the Reason String.
    fn subscribe_one(
        &mut self,
        key: SessionKey,
        filter: &ByteStr,
        options: SubscriptionOptions,
        subscription_id: u32,
    ) -> Result<(QoS, bool), Refusal> {
        let settings = &self.settings;
        if validate_topic_filter(filter).is_err() {
            return Err(Refusal::TopicFilterInvalid);
        }
        if super::publish::topic_over_limits(filter, settings) {
            self.stats.refused_topic_limits += 1;
            return Err(Refusal::TopicFilterLimits);
        }
        let shared_filter = parse_shared_subscription(filter).ok().flatten().map(|shared| shared.filter);
        let shared = shared_filter.is_some();
        if !self.may_subscribe(key, shared_filter.unwrap_or(filter)) {
            return Err(Refusal::SubscribeNotAuthorized);
        }
        if shared && !settings.shared_subscriptions_available {
            return Err(Refusal::SharedSubscriptionsUnavailable);
        }
        if !settings.wildcard_subscriptions_available && filter.contains(['+', '#']) {
            return Err(Refusal::WildcardSubscriptionsUnavailable);
        }
        if !settings.subscription_identifiers_available && subscription_id != 0 {
            return Err(Refusal::SubscriptionIdentifiersUnavailable);
        }
        let session = self.sessions.get(key).ok_or(Refusal::SessionGone)?;
        let known = session.filters.iter().any(|existing| existing == filter);
        if !known && session.filters.len() >= settings.subscriptions_per_session_max {
            return Err(Refusal::SubscriptionsPerSessionMax);
        }
        let granted = options.qos.min(QoS::from_u8(settings.qos_max).unwrap_or(QoS::ExactlyOnce));
        let subscriber =
            Subscriber { session: key, options: SubscriptionOptions { qos: granted, ..options }, subscription_id };
        let outcome = self.subscriptions.subscribe(filter, subscriber);
        if outcome.first_on_shard {
            let seq = self.next_interest_seq();
            self.broadcast(|| MeshMessage::InterestAdded { filter: filter.clone(), seq });
        }
        if shared {
            self.recount_share(filter);
        }
        self.sessions.subscribed(key, filter, subscriber.options, subscription_id, outcome.new_subscription);
        // No retained messages on a shared subscription (v5 section 4.8.2): the group, not the member, subscribed.
        let send_retained = match options.retain_handling {
            _ if shared => false,
            0 => true,
            1 => outcome.new_subscription,
            _ => false,
        };
        Ok((granted, send_retained))
    }
}
