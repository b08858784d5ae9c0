//! AUTH and enhanced authentication (v5 section 4.12): the exchange started by a CONNECT that names an
//! Authentication Method (AUTH 0x18 both ways until CONNACK) and re-authentication of a connected client
//! (AUTH 0x19, then 0x18 both ways, ended by AUTH 0x00 or DISCONNECT 0x87). The methods themselves live in
//! `crate::auth`; this file maps their steps onto packets and reason codes.

use std::time::Instant;

use bytes::Bytes;
use tracing::{info, warn};

use super::super::connection::ConnectionAuth;
use super::super::core::ShardCore;
use super::super::lifecycle::CloseReason;
use super::super::message::ConnId;
use super::super::refusal::Refusal;
use crate::auth::{AuthExchange, FailureKind, Step};
use crate::protocol::{Auth, ByteStr, Connect, Packet, Properties, ReasonCode};

impl ShardCore {
    /// CONNECT named an Authentication Method: refuse it if unknown [MQTT-4.12.0-1], else start the exchange.
    pub(super) fn start_connect_auth(&mut self, conn: ConnId, connect: Box<Connect>, now: Instant) {
        let name = connect.properties.authentication_method.as_deref().unwrap_or_default();
        let Some(method) = self.auth_methods.find(name) else {
            return self.refuse_connect(conn, &connect.client_id, Refusal::AuthenticationMethodUnsupported, now);
        };
        let mut exchange = method.begin();
        let step = exchange.start(connect.properties.authentication_data.as_deref().unwrap_or_default());
        self.enhanced_auth.insert(conn, ConnectionAuth { method, exchange: None, pending_connect: None, user: None });
        self.connect_auth_step(conn, exchange, connect, step, now);
    }

    /// AUTH before CONNACK: the client's next step of the CONNECT's exchange.
    pub(super) fn handle_connect_auth(&mut self, conn: ConnId, auth: Auth, now: Instant) {
        let pending = self
            .enhanced_auth
            .get_mut(&conn)
            .and_then(|state| Some((state.pending_connect.take()?, state.exchange.take()?)));
        let Some((connect, mut exchange)) = pending else {
            let refusal = Refusal::AuthWithoutConnectMethod;
            warn!(shard = self.shard, "{refusal}, closing");
            return self.end_connection(conn, CloseReason::Refused(refusal), now);
        };
        if auth.reason != ReasonCode::CONTINUE_AUTHENTICATION {
            return self.refuse_connect(conn, &connect.client_id, Refusal::AuthReasonNotContinue, now);
        }
        if auth.properties.authentication_method != connect.properties.authentication_method {
            return self.refuse_connect(conn, &connect.client_id, Refusal::AuthMethodDiffersFromConnect, now);
        }
        let step = exchange.proceed(auth.properties.authentication_data.as_deref().unwrap_or_default());
        self.connect_auth_step(conn, exchange, connect, step, now);
    }

    /// Acts on a step of the CONNECT's exchange: AUTH 0x18 [MQTT-4.12.0-2], CONNACK 0x00 with the final
    /// data, or CONNACK 0x86 / 0x87 and close [MQTT-4.12.0-4].
    fn connect_auth_step(
        &mut self,
        conn: ConnId,
        exchange: Box<dyn AuthExchange>,
        connect: Box<Connect>,
        step: Step,
        now: Instant,
    ) {
        let Some(state) = self.enhanced_auth.get_mut(&conn) else { return };
        let method = ByteStr::from(state.method.name());
        match step {
            Step::Continue(data) => {
                state.exchange = Some(exchange);
                state.pending_connect = Some(connect);
                self.send_auth(conn, ReasonCode::CONTINUE_AUTHENTICATION, method, Some(data));
            }
            Step::Success(done) if connect.username.as_deref().is_some_and(|username| username != done.user) => {
                warn!(shard = self.shard, client_id = %connect.client_id, user = %done.user, %method, "CONNECT User Name is not the authenticated user");
                self.refuse_connect(conn, &connect.client_id, Refusal::AuthUserNameDiffers, now);
            }
            Step::Success(done) => {
                info!(shard = self.shard, client_id = %connect.client_id, user = %done.user, %method, "enhanced authentication succeeded");
                state.user = Some(done.user.clone());
                self.accept_connect(conn, *connect, done.server_data.map(Bytes::from), Some(done.user), None, now);
            }
            Step::Fail(failure) => {
                warn!(shard = self.shard, client_id = %connect.client_id, %method, "enhanced authentication failed: {failure}");
                let reason = match failure.kind {
                    FailureKind::BadCredentials => ReasonCode::BAD_USER_NAME_OR_PASSWORD,
                    FailureKind::NotAuthorized => ReasonCode::NOT_AUTHORIZED,
                };
                self.refuse_connect(conn, &connect.client_id, Refusal::AuthenticationFailed { reason }, now);
            }
        }
    }

    /// AUTH from a connected client: re-authentication [MQTT-4.12.1-1]. Other traffic goes on meanwhile.
    pub(super) fn handle_reauth(&mut self, conn: ConnId, auth: Auth, now: Instant) {
        let Some(mut state) = self.enhanced_auth.remove(&conn) else {
            return self.close_for(conn, Refusal::ReauthenticationWithoutMethod, now);
        };
        if auth.properties.authentication_method.as_deref() != Some(state.method.name()) {
            return self.close_for(conn, Refusal::ReauthenticationMethodChanged, now);
        }
        let data = auth.properties.authentication_data.as_deref().unwrap_or_default();
        let (exchange, step) = match (auth.reason, state.exchange.take()) {
            (ReasonCode::RE_AUTHENTICATE, None) => {
                let mut exchange = state.method.begin();
                let step = exchange.start(data);
                (exchange, step)
            }
            (ReasonCode::CONTINUE_AUTHENTICATION, Some(mut exchange)) => {
                let step = exchange.proceed(data);
                (exchange, step)
            }
            _ => return self.close_for(conn, Refusal::ReauthenticationReasonInvalid, now),
        };
        let method = ByteStr::from(state.method.name());
        match step {
            Step::Continue(data) => {
                state.exchange = Some(exchange);
                self.enhanced_auth.insert(conn, state);
                self.send_auth(conn, ReasonCode::CONTINUE_AUTHENTICATION, method, Some(data));
            }
            Step::Success(done) if state.user.as_deref() == Some(done.user.as_str()) => {
                self.enhanced_auth.insert(conn, state);
                self.send_auth(conn, ReasonCode::SUCCESS, method, done.server_data);
            }
            Step::Success(_) => self.close_for(conn, Refusal::ReauthenticatedAsAnotherUser, now),
            Step::Fail(failure) => {
                warn!(shard = self.shard, client_id = ?self.client_id_of(conn), %method, "re-authentication failed: {failure}");
                self.close_for(conn, Refusal::ReauthenticationFailed, now);
            }
        }
    }

    /// AUTH with the method name on every packet of the exchange [MQTT-4.12.0-5].
    fn send_auth(&mut self, conn: ConnId, reason: ReasonCode, method: ByteStr, data: Option<Vec<u8>>) {
        let properties = Properties {
            authentication_method: Some(method),
            authentication_data: data.map(Bytes::from),
            ..Properties::default()
        };
        self.send(conn, &Packet::Auth(Auth { reason, properties }));
    }
}
