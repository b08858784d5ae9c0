//! Entry points for callers outside the protocol: the HTTP API reaches a shard's core through
//! `crate::shard::Control` jobs that call these. A publish from the API takes the same checks and the
//! same route as a client's PUBLISH after its own checks (`handle/publish.rs`, `validation.rs`); the
//! listings read this shard's state only (the HTTP side merges the shards' answers); kicks and token
//! ends close connections with a v5 DISCONNECT saying why.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tracing::{debug, info};

use super::core::ShardCore;
use super::lifecycle::CloseReason;
use super::message::{Action, MeshMessage, Message, Origin};
use super::owned::owned_forwarded_properties;
use super::session::SessionKey;
use super::validation::diverted;
use crate::auth::{ListenerId, TokenEnd};
use crate::protocol::topic::validate_topic_name;
use crate::protocol::{ByteStr, Properties, ProtocolVersion, Publish, QoS, ReasonCode};
use crate::validation::OnInvalid;

/// An application message handed in through the HTTP API.
#[derive(Clone, Debug, Default)]
pub struct ExternalPublish {
    pub topic: String,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    /// Content type, response topic, correlation data, user properties, payload format indicator.
    pub properties: Properties,
    pub message_expiry_interval_secs: Option<u32>,
}

/// Why an API publish was not routed; the message names the rule. Nothing was published.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ExternalPublishError {
    #[error("[MQTT-3.3.2-2] topic name contains a wildcard or is empty")]
    TopicInvalid,
    #[error("[MQTT-3.2.2-11] QoS {qos} above the broker's max_qos {max_qos}")]
    QosNotSupported { qos: u8, max_qos: u8 },
    #[error("[MQTT-3.2.2-14] retain is not available on this broker (retain_available = false)")]
    RetainNotSupported,
    #[error("(v5 section 3.3.2.3.2) payload is not UTF-8 but payload_format_indicator is 1")]
    PayloadNotUtf8,
    #[error("validation rule {rule} failed: {detail}")]
    Validation { rule: String, detail: String },
    #[error("the message cannot be encoded: {0}")]
    Encode(String),
    #[error("persistence: the disk is full, QoS 1/2 publishes are refused until space returns")]
    DiskFull,
}

/// What happened to a routed API publish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExternalPublished {
    /// Some subscriber anywhere matched (the v5 PUBACK would be 0x00, not 0x10).
    pub matched: bool,
    /// A `divert` validation rule sent it to this topic instead.
    pub diverted_to: Option<String>,
}

/// One connected client, as the admin API lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientSummary {
    pub client_id: String,
    pub listener: ListenerId,
    /// The peer's socket address, when the runtime gave it.
    pub address: Option<std::net::SocketAddr>,
    pub protocol_version: ProtocolVersion,
    pub keepalive_secs: u16,
    /// Who it authenticated as (`token:{id}` for an API token); None = anonymous.
    pub username: Option<String>,
    pub subscriptions: Vec<String>,
}

/// One session (connected or not) of this shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionSummary {
    pub client_id: String,
    pub connected: bool,
    pub expiry_interval_secs: u32,
    /// Seconds until an offline session expires (None: connected, or never expires).
    pub expires_in_secs: Option<u64>,
    pub subscriptions: Vec<String>,
    pub queued_messages: usize,
    pub inflight_messages: usize,
}

/// One retained message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetainedSummary {
    pub topic: String,
    pub qos: QoS,
    pub payload: Bytes,
    pub content_type: Option<String>,
}

impl ShardCore {
    /// Publishes messages from the API on this shard, all or none: each must pass the broker's limits
    /// (topic, QoS, retain, payload format) and the `[[validation]]` rules (a `reject` or `disconnect`
    /// rule refuses it, a `divert` rule sends it to its divert topic) before any is routed, the same way
    /// as a client's PUBLISH after its own checks. The first refusal, with its index, when one fails.
    pub fn publish_external_batch(
        &mut self,
        messages: Vec<ExternalPublish>,
        now: Instant,
    ) -> Result<Vec<ExternalPublished>, (usize, ExternalPublishError)> {
        if self.refuses_durable_publish() {
            if let Some(index) = messages.iter().position(|publish| publish.qos != QoS::AtMostOnce) {
                return Err((index, ExternalPublishError::DiskFull));
            }
        }
        let mut prepared = Vec::with_capacity(messages.len());
        for (index, publish) in messages.into_iter().enumerate() {
            prepared.push(self.prepare_external(publish, now).map_err(|err| (index, err))?);
        }
        Ok(prepared
            .into_iter()
            .map(|(message, diverted_to)| ExternalPublished {
                matched: self.route_published(message, now),
                diverted_to,
            })
            .collect())
    }

    /// One API publish: `publish_external_batch` of one message.
    pub fn publish_external(
        &mut self,
        publish: ExternalPublish,
        now: Instant,
    ) -> Result<ExternalPublished, ExternalPublishError> {
        let mut published = self.publish_external_batch(vec![publish], now).map_err(|(_, err)| err)?;
        Ok(published.pop().expect("one message in, one result out"))
    }

    /// The checks of an API publish; the message to route and, when diverted, where to.
    fn prepare_external(
        &mut self,
        publish: ExternalPublish,
        now: Instant,
    ) -> Result<(Arc<Message>, Option<String>), ExternalPublishError> {
        if validate_topic_name(&publish.topic).is_err() {
            return Err(ExternalPublishError::TopicInvalid);
        }
        if publish.qos as u8 > self.settings.qos_max {
            return Err(ExternalPublishError::QosNotSupported {
                qos: publish.qos as u8,
                max_qos: self.settings.qos_max,
            });
        }
        if publish.retain && !self.settings.retain_available {
            return Err(ExternalPublishError::RetainNotSupported);
        }
        if publish.properties.payload_format_indicator == Some(1) && std::str::from_utf8(&publish.payload).is_err() {
            return Err(ExternalPublishError::PayloadNotUtf8);
        }
        let mut properties = publish.properties;
        properties.message_expiry_interval_secs = publish.message_expiry_interval_secs;
        let packet = Publish {
            dup: false,
            qos: publish.qos,
            retain: publish.retain,
            topic: ByteStr::from(publish.topic),
            packet_id: 0,
            properties,
            payload: publish.payload,
        };
        let (packet, diverted_to) = self.validate_external(packet)?;
        let Publish { topic, qos, retain, payload, properties, .. } = packet;
        let expires_at = properties.message_expiry_interval_secs.map(|secs| now + Duration::from_secs(u64::from(secs)));
        let origin = Origin { shard: self.shard, conn: None };
        let message =
            Message::new(topic, payload, qos, retain, owned_forwarded_properties(&properties), expires_at, origin)
                .map_err(|err| ExternalPublishError::Encode(err.to_string()))?;
        Ok((message, diverted_to))
    }

    /// The validation rules over an API publish: the message to route and, when diverted, where to.
    fn validate_external(&mut self, publish: Publish) -> Result<(Publish, Option<String>), ExternalPublishError> {
        let Some(rules) = &self.validation else { return Ok((publish, None)) };
        let Some(failure) = rules.check(&publish.topic, &publish.payload, &publish.properties) else {
            return Ok((publish, None));
        };
        let rules = Arc::clone(rules);
        let Some(rule) = rules.rule(failure.rule) else { return Ok((publish, None)) };
        if let Some(count) = self.stats.validation_failures.get_mut(failure.rule) {
            *count += 1;
        }
        debug!(shard = self.shard, topic = %publish.topic, rule = rule.label(), "API publish failed validation: {}", failure.detail);
        if rule.on_invalid() == OnInvalid::Divert {
            if let Some(target) = rule.divert_topic(&publish.topic) {
                let topic = publish.topic.clone();
                let (target, diverted) = diverted(target, publish, rule.label(), &failure.detail);
                debug!(shard = self.shard, %topic, divert_to = %target, "API publish diverted");
                return Ok((Publish { topic: target.clone(), ..diverted }, Some(target.to_string())));
            }
        }
        Err(ExternalPublishError::Validation { rule: rule.label().to_string(), detail: failure.detail })
    }

    /// The clients connected to this shard, by client id; with their addresses when a job before asked
    /// for them (`want_peer_addresses`), which this takes.
    pub fn connected_clients(&mut self) -> Vec<ClientSummary> {
        let addresses = self.peer_addresses.found.take().unwrap_or_default();
        let mut clients: Vec<ClientSummary> =
            self.connections.ids().filter_map(|conn| self.client_summary(conn, &addresses)).collect();
        clients.sort_by(|a, b| a.client_id.cmp(&b.client_id));
        clients
    }

    /// The connected client with this id, if it is connected to this shard (its home shard); its address
    /// as for `connected_clients`.
    pub fn connected_client(&mut self, client_id: &str) -> Option<ClientSummary> {
        let addresses = self.peer_addresses.found.take().unwrap_or_default();
        let conn = self.sessions.get(self.sessions.find(client_id)?)?.conn?;
        self.client_summary(conn, &addresses)
    }

    fn client_summary(
        &self,
        conn: super::message::ConnId,
        addresses: &ahash::AHashMap<super::message::ConnId, std::net::SocketAddr>,
    ) -> Option<ClientSummary> {
        let connection = self.connections.get(&conn)?;
        let session = self.sessions.get(connection.phase.session_key()?)?;
        Some(ClientSummary {
            client_id: session.client_id.to_string(),
            listener: connection.listener,
            address: addresses.get(&conn).copied(),
            protocol_version: connection.version?,
            keepalive_secs: connection.keepalive_secs,
            username: session.username.as_deref().map(str::to_string),
            subscriptions: session.filters.iter().map(ToString::to_string).collect(),
        })
    }

    /// Closes the client's connection (v5: DISCONNECT 0x98 Administrative action); its session stays as
    /// its expiry interval says, and its will is published as for any server-side close. Whether it was
    /// connected here.
    pub fn kick_client(&mut self, client_id: &str, now: Instant) -> bool {
        let Some(conn) = self.sessions.find(client_id).and_then(|key| self.sessions.get(key)).and_then(|s| s.conn)
        else {
            return false;
        };
        info!(shard = self.shard, %client_id, "client kicked through the HTTP API");
        let reason = CloseReason::External { reason: ReasonCode::ADMINISTRATIVE_ACTION, detail: "kicked".into() };
        self.end_connection(conn, reason, now);
        true
    }

    /// The sessions of this shard (connected or not), by client id.
    pub fn session_summaries(&self, now: Instant) -> Vec<SessionSummary> {
        let mut sessions: Vec<SessionSummary> = self
            .sessions
            .keys()
            .filter_map(|key| self.sessions.get(key))
            .map(|session| SessionSummary {
                client_id: session.client_id.to_string(),
                connected: session.conn.is_some(),
                expiry_interval_secs: session.expiry_interval_secs,
                expires_in_secs: session.expires_at.map(|at| at.saturating_duration_since(now).as_secs()),
                subscriptions: session.filters.iter().map(ToString::to_string).collect(),
                queued_messages: session.traffic().map_or(0, |traffic| traffic.queue.len()),
                inflight_messages: session.inflight_len(),
            })
            .collect();
        sessions.sort_by(|a, b| a.client_id.cmp(&b.client_id));
        sessions
    }

    /// The unexpired retained messages whose topic `filter` matches (this shard's replica holds them all).
    pub fn retained_matching(&self, filter: &str, now: Instant) -> Vec<RetainedSummary> {
        let mut found = Vec::new();
        self.retained.matching(filter, now, &mut found);
        let mut retained: Vec<RetainedSummary> = found
            .iter()
            .map(|message| RetainedSummary {
                topic: message.topic.to_string(),
                qos: message.qos,
                payload: message.payload.clone(),
                content_type: message.properties().content_type.as_ref().map(ToString::to_string),
            })
            .collect();
        retained.sort_by(|a, b| a.topic.cmp(&b.topic));
        retained
    }

    /// Deletes the retained message of `topic` on every shard without delivering anything to subscribers
    /// (unlike an MQTT retained publish with an empty payload). Whether this shard had one.
    pub fn delete_retained(&mut self, topic: &str, now: Instant) -> bool {
        let mut found = Vec::new();
        self.retained.matching(topic, now, &mut found);
        let existed = found.iter().any(|message| &*message.topic == topic);
        let origin = Origin { shard: self.shard, conn: None };
        let Ok(delete) = Message::new(
            ByteStr::from(topic.to_string()),
            Bytes::new(),
            QoS::AtMostOnce,
            true,
            Properties::default(),
            None,
            origin,
        ) else {
            return false;
        };
        self.apply_retained(&delete);
        for shard in (0..self.shard_count).filter(|&shard| shard != self.shard) {
            let msg = MeshMessage::Retain { message: Arc::clone(&delete), deliver: false };
            self.actions.push_back(Action::Mesh { to: shard, msg });
        }
        existed
    }

    /// Closes the clients of this shard that logged in with the API token `token_id` and ends their
    /// sessions (a token's session must not outlive it). v5 clients get DISCONNECT 0xA0 (Maximum connect
    /// time) for an expired token, 0x87 (Not authorized) for a revoked one. How many sessions ended.
    pub fn end_token_sessions(&mut self, token_id: &str, end: TokenEnd, now: Instant) -> usize {
        let keys: Vec<SessionKey> =
            self.token_sessions.iter().filter(|(_, grant)| grant.id == token_id).map(|(key, _)| *key).collect();
        let (reason, detail): (ReasonCode, Cow<'static, str>) = match end {
            TokenEnd::Expired => (ReasonCode::MAXIMUM_CONNECT_TIME, "token expired".into()),
            TokenEnd::Revoked => (ReasonCode::NOT_AUTHORIZED, "token revoked".into()),
        };
        for &key in &keys {
            if let Some(conn) = self.sessions.get(key).and_then(|session| session.conn) {
                self.end_connection(conn, CloseReason::External { reason, detail: detail.clone() }, now);
            }
            self.end_session(key, now);
        }
        keys.len()
    }
}
