//! CONNECT: refusals (CONNACK with the reason, then close), client identifier rules (assigned ids),
//! session takeover and resume (session present, redelivery), keep-alive negotiation, the will, and the
//! v5 CONNACK properties that announce our limits.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use tracing::{info, warn};

use super::super::authorization::Login;
use super::super::connection::Phase;
use super::super::core::ShardCore;
use super::super::home_shard;
use super::super::inflight::InflightState;
use super::super::lifecycle::CloseReason;
use super::super::message::ConnId;
use super::super::owned::owned_str;
use super::super::refusal::Refusal;
use super::super::session::{InflightAck, Session, SessionKey, SESSION_NEVER_EXPIRES};
use super::super::will::PendingWill;
use crate::auth::TokenGrant;
use crate::protocol::topic::validate_topic_name;
use crate::protocol::{ByteStr, ConnAck, Connect, Packet, Properties, ProtocolVersion, PubResponse, QoS, ReasonCode};

/// What the connection agreed to, echoed in CONNACK where it differs from what the client asked.
struct Negotiated {
    keepalive_secs: u16,
    server_keep_alive: bool,
    expiry_secs: u32,
    expiry_capped: bool,
    assigned_client_id: Option<ByteStr>,
}

impl ShardCore {
    pub(in crate::broker) fn handle_connect(&mut self, conn: ConnId, connect: Connect, now: Instant) {
        if let Some(connection) = self.connections.get_mut(&conn) {
            connection.version = Some(connect.version);
            // Also a refusing CONNACK keeps within it [MQTT-3.2.2-19].
            connection.client_max_packet_size = connect.properties.maximum_packet_size.unwrap_or(u32::MAX);
        }
        if self.enhanced_auth.contains_key(&conn) {
            let refusal = Refusal::SecondConnectDuringAuthentication;
            return self.refuse_connect(conn, &connect.client_id, refusal, now);
        }
        if let Err(refusal) = self.check_connect(&connect).and_then(|()| self.check_capacity(&connect)) {
            return self.refuse_connect(conn, &connect.client_id, refusal, now);
        }
        if connect.properties.authentication_method.is_some() {
            return self.start_connect_auth(conn, Box::new(connect), now);
        }
        match self.check_login(conn, &connect, now) {
            Login::Accepted { username, token } => self.accept_connect(conn, connect, None, username, token, now),
            Login::Pending => self.park_login(conn, connect, now),
            Login::Refused => {}
        }
    }

    /// Attaches the authenticated client (`username`: who it is for authorization, None = anonymous) to its
    /// session and sends CONNACK; `auth_data` is the final Authentication Data of an enhanced authentication.
    pub(in crate::broker) fn accept_connect(
        &mut self,
        conn: ConnId,
        connect: Connect,
        auth_data: Option<Bytes>,
        username: Option<String>,
        token: Option<Arc<TokenGrant>>,
        now: Instant,
    ) {
        let negotiated = self.negotiate(&connect);
        let client_id = negotiated.assigned_client_id.clone().unwrap_or_else(|| owned_str(&connect.client_id));
        self.configure_connection(conn, &connect, negotiated.keepalive_secs);
        let (key, session_present) = self.attach_session(conn, &client_id, &connect, negotiated.expiry_secs, now);
        let listener = self.connections.get(&conn).map(|connection| connection.listener).unwrap_or_default();
        if let Some(session) = self.sessions.get_mut(key) {
            session.username = username.map(String::into_boxed_str);
            session.listener = listener;
        }
        // Before the session resumes: its queued messages are checked against the grant.
        self.set_token_grant(key, token);
        let mut connack = self.connack(&connect, session_present, negotiated);
        // A successful CONNACK repeats the CONNECT's Authentication Method [MQTT-4.12.0-5].
        connack.properties.authentication_method = connect.properties.authentication_method.as_ref().map(owned_str);
        connack.properties.authentication_data = auth_data;
        if let Some(session) = self.sessions.get_mut(key) {
            session.will = connect.will.as_ref().map(|will| Box::new(PendingWill::new(will)));
        }
        self.sessions.attached(key, session_present);
        self.send(conn, &Packet::ConnAck(connack));
        self.stats.count_connect_accepted();
        info!(shard = self.shard, %client_id, version = ?connect.version, clean_start = connect.clean_start, session_present, "client connected");
        self.arm_keepalive(conn, now);
        if session_present {
            self.resume_session(key, conn, now);
        }
    }

    fn check_connect(&self, connect: &Connect) -> Result<(), Refusal> {
        let id = &connect.client_id;
        if id.len() > self.settings.client_id_length_max_bytes {
            return Err(Refusal::ClientIdTooLong);
        }
        if id.is_empty() && connect.version == ProtocolVersion::V3_1 {
            return Err(Refusal::ClientIdEmptyInMqtt31);
        }
        if id.is_empty() && connect.version == ProtocolVersion::V3_1_1 && !connect.clean_start {
            return Err(Refusal::ClientIdEmptyWithoutCleanSession);
        }
        if let Some(will) = &connect.will {
            if will.qos as u8 > self.settings.qos_max {
                return Err(Refusal::WillQosNotSupported);
            }
            if will.retain && !self.settings.retain_available {
                return Err(Refusal::WillRetainNotSupported);
            }
            if validate_topic_name(&will.topic).is_err() {
                return Err(Refusal::WillTopicInvalid);
            }
        }
        Ok(())
    }

    /// Refusals that are about this server, not the client: a configured redirect, memory over its budget,
    /// or no room for a session.
    fn check_capacity(&self, connect: &Connect) -> Result<(), Refusal> {
        if self.settings.server_reference.is_some() {
            return Err(Refusal::Redirected);
        }
        if self.memory.is_shedding() {
            return Err(Refusal::MemoryBudgetExceeded);
        }
        let existing = self.sessions.find(&connect.client_id).is_some();
        if !existing && self.sessions.len() >= self.settings.sessions_per_shard_max {
            return Err(Refusal::SessionsPerShardMax);
        }
        Ok(())
    }

    pub(in crate::broker) fn refuse_connect(
        &mut self,
        conn: ConnId,
        client_id: &ByteStr,
        refusal: Refusal,
        now: Instant,
    ) {
        warn!(shard = self.shard, %client_id, reason = %refusal.reason(), "{refusal}, CONNECT refused");
        self.send_connect_refusal(conn, refusal.reason(), refusal.rule());
        self.end_connection(conn, CloseReason::ConnectRefused, now);
    }

    /// The refusing CONNACK (`text` as its v5 Reason String); the caller logs and closes.
    pub(in crate::broker) fn send_connect_refusal(&mut self, conn: ConnId, reason: ReasonCode, text: &str) {
        let properties = Properties {
            reason_string: self.reason_string(text),
            server_reference: self.settings.server_reference.as_deref().map(ByteStr::from),
            ..Properties::default()
        };
        let connack = ConnAck { session_present: false, reason, properties };
        self.send(conn, &Packet::ConnAck(connack));
        *self.stats.connects_refused.entry(reason.0).or_default() += 1;
    }

    fn negotiate(&mut self, connect: &Connect) -> Negotiated {
        let v5 = connect.version.is_v5();
        let keepalive_max = self.settings.keepalive_max_secs;
        // A 3.x client cannot be told a shorter keep-alive, so only v5 gets the cap (Server Keep Alive),
        // also when it asked for none.
        let uncapped = connect.keep_alive_secs == 0 && keepalive_max < u16::MAX;
        let server_keep_alive = v5 && (connect.keep_alive_secs > keepalive_max || uncapped);
        let keepalive_secs = if server_keep_alive { keepalive_max } else { connect.keep_alive_secs };
        let requested_expiry = match (v5, connect.clean_start) {
            (true, _) => connect.properties.session_expiry_interval_secs.unwrap_or(0),
            (false, true) => 0,
            (false, false) => SESSION_NEVER_EXPIRES,
        };
        let expiry_secs = requested_expiry.min(self.settings.session_expiry_max_secs);
        let assigned_client_id = connect.client_id.is_empty().then(|| self.assign_client_id());
        Negotiated {
            keepalive_secs,
            server_keep_alive,
            expiry_secs,
            expiry_capped: v5 && expiry_secs != requested_expiry,
            assigned_client_id,
        }
    }

    /// A fresh client id whose home is this shard, so the client reconnecting with it lands here.
    fn assign_client_id(&mut self) -> ByteStr {
        loop {
            self.next_assigned_id += 1;
            let candidate = ByteStr::from(format!("shardmq-{}-{:x}", self.shard, self.next_assigned_id));
            if home_shard(&candidate, self.shard_count) == self.shard && self.sessions.find(&candidate).is_none() {
                return candidate;
            }
        }
    }

    fn configure_connection(&mut self, conn: ConnId, connect: &Connect, keepalive_secs: u16) {
        let Some(connection) = self.connections.get_mut(&conn) else {
            return;
        };
        connection.keepalive_secs = keepalive_secs;
        connection.client_receive_maximum = connect.properties.receive_maximum.unwrap_or(u16::MAX);
        connection.client_max_packet_size = connect.properties.maximum_packet_size.unwrap_or(u32::MAX);
        connection.outgoing_alias_max =
            connect.properties.topic_alias_maximum.unwrap_or(0).min(self.settings.topic_alias_max);
        connection.problem_information = connect.properties.request_problem_information != Some(0);
    }

    /// Takes over a connected session [MQTT-3.1.4-3], resumes it unless Clean Start [MQTT-3.1.2-4]
    /// [MQTT-3.1.2-5], or creates one. Returns the session and the Session Present flag.
    fn attach_session(
        &mut self,
        conn: ConnId,
        client_id: &ByteStr,
        connect: &Connect,
        expiry_secs: u32,
        now: Instant,
    ) -> (SessionKey, bool) {
        if let Some(old_conn) =
            self.sessions.find(client_id).and_then(|key| self.sessions.get(key)).and_then(|session| session.conn)
        {
            info!(shard = self.shard, %client_id, "session taken over by a new connection");
            self.end_connection(old_conn, CloseReason::TakenOver, now);
        }
        let mut present = None;
        if let Some(key) = self.sessions.find(client_id) {
            if connect.clean_start {
                self.end_session(key, now);
            } else if let Some(session) = self.sessions.get_mut(key) {
                // Reconnecting cancels a will still waiting for its delay (v5 section 3.1.3.2.2).
                session.will = None;
                session.conn = Some(conn);
                session.expires_at = None;
                session.expiry_interval_secs = expiry_secs;
                present = Some(key);
            }
        }
        let (key, session_present) = match present {
            Some(key) => {
                self.recount_session_shares(key);
                (key, true)
            }
            None => (self.sessions.insert(Session::new(client_id, conn, expiry_secs)), false),
        };
        if let Some(connection) = self.connections.get_mut(&conn) {
            connection.phase = Phase::Connected(key);
        }
        (key, session_present)
    }

    fn connack(&self, connect: &Connect, session_present: bool, negotiated: Negotiated) -> ConnAck {
        let mut connack = ConnAck { session_present, reason: ReasonCode::SUCCESS, properties: Properties::default() };
        if !connect.version.is_v5() {
            return connack;
        }
        let settings = &self.settings;
        let flag = |available: bool| Some(u8::from(available));
        let properties = &mut connack.properties;
        properties.receive_maximum = (settings.receive_maximum != u16::MAX).then_some(settings.receive_maximum);
        properties.maximum_packet_size = Some(settings.packet_size_max_bytes);
        properties.topic_alias_maximum = (settings.topic_alias_max > 0).then_some(settings.topic_alias_max);
        properties.retain_available = (!settings.retain_available).then_some(0);
        properties.maximum_qos = (settings.qos_max < 2).then_some(settings.qos_max);
        properties.wildcard_subscription_available = flag(settings.wildcard_subscriptions_available);
        properties.subscription_identifier_available = flag(settings.subscription_identifiers_available);
        properties.shared_subscription_available = flag(settings.shared_subscriptions_available);
        properties.server_keep_alive_secs = negotiated.server_keep_alive.then_some(negotiated.keepalive_secs);
        properties.session_expiry_interval_secs = negotiated.expiry_capped.then_some(negotiated.expiry_secs);
        let client_id = negotiated.assigned_client_id.as_ref().unwrap_or(&connect.client_id);
        if connect.properties.request_response_information == Some(1) {
            properties.response_information = settings
                .response_information_prefix
                .as_ref()
                .map(|prefix| ByteStr::from(format!("{prefix}{client_id}")));
        }
        properties.assigned_client_identifier = negotiated.assigned_client_id;
        connack
    }

    /// Sends again what the session had in flight, PUBLISH with DUP or PUBREL, in the original order
    /// [MQTT-4.4.0-1] [MQTT-4.6.0-1], then what waited in its queue.
    fn resume_session(&mut self, key: SessionKey, conn: ConnId, now: Instant) {
        let Some(session) = self.sessions.get(key) else {
            return;
        };
        let resend: Vec<_> = session
            .traffic()
            .map(|traffic| {
                traffic.inflight.iter().map(|entry| (entry.packet_id, entry.state, entry.delivery.clone())).collect()
            })
            .unwrap_or_default();
        for (packet_id, state, delivery) in resend {
            match state {
                InflightState::Sent => {
                    let dup = delivery.qos != QoS::AtMostOnce;
                    if self.send_publish(conn, &delivery, packet_id, dup, now).is_err() {
                        self.sessions.inflight_ack(key, InflightAck::Failed, packet_id);
                    }
                }
                InflightState::Released => {
                    let pubrel = PubResponse { packet_id, ..PubResponse::default() };
                    self.send(conn, &Packet::PubRel(pubrel));
                }
            }
        }
        self.drain_queue(key, now);
    }
}
