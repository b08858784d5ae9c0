//! Where the core asks `crate::auth` what a client may do: the CONNECT check (password file,
//! allow_anonymous), and publish (also wills), subscribe and delivery checks against the listener's
//! authorizer (ACL file). A session remembers the user name and listener of its last connection, so
//! deliveries to it, and its will, are checked as that client also while it is offline. With no
//! authorizer configured no check runs at all. A client that logged in with an API token is checked against
//! that token's grant alone (also while offline, until the session ends).

use std::sync::Arc;
use std::time::Instant;

use tracing::warn;

use super::core::ShardCore;
use super::lifecycle::CloseReason;
use super::message::ConnId;
use super::refusal::Refusal;
use super::session::SessionKey;
use crate::auth::external::AclAction;
use crate::auth::{
    AccessControl, AuthDecision, AuthFailure, ClientIdentity, ConnectRequest, FailureKind, ListenerId, TokenGrant,
};
use crate::protocol::{ByteStr, Connect, ReasonCode};

/// The Reason String a refused login gets: never the detail (it would tell which user names exist).
const BAD_CREDENTIALS_TEXT: &str = "bad user name or password";
const NOT_AUTHORIZED_TEXT: &str = "not authorized";

/// What the CONNECT check decided.
pub(super) enum Login {
    /// `token`: logged in with this API token; `username` is then `token:{id}` (never the secret).
    Accepted {
        username: Option<String>,
        token: Option<Arc<TokenGrant>>,
    },
    Refused,
    /// The listener's external backend decides: the CONNECT is parked (`external_auth`).
    Pending,
}

impl ShardCore {
    /// Swaps in a reloaded access control (from [`AccessControl::reload`]). Connected clients keep their
    /// sessions; every later check, including deliveries to sessions that already exist, uses the new rules.
    pub fn replace_access(&mut self, access: Arc<AccessControl>) {
        self.access = access;
    }

    pub fn access(&self) -> &Arc<AccessControl> {
        &self.access
    }

    /// The listener's authenticator decides a CONNECT without an Authentication Method. A refusal is
    /// answered here (CONNACK 0x86 / 0x87, 3.x return code 4 / 5) and logged once with the client id and why.
    pub(super) fn check_login(&mut self, conn: ConnId, connect: &Connect, now: Instant) -> Login {
        let listener = self.connections.get(&conn).map_or(ListenerId::default(), |connection| connection.listener);
        let peer_identity = self.peer_identities.remove(&conn);
        let request = ConnectRequest {
            listener,
            client_id: &connect.client_id,
            username: connect.username.as_deref(),
            password: connect.password.as_deref(),
            peer_identity: peer_identity.as_deref(),
        };
        let failure = match self.access.authenticate(&request) {
            AuthDecision::Allow { username } => return Login::Accepted { username, token: None },
            AuthDecision::Token(grant) => {
                return Login::Accepted { username: Some(format!("token:{}", grant.id)), token: Some(grant) }
            }
            AuthDecision::Refuse(failure) => failure,
            AuthDecision::Pending if self.access.external_for(listener).is_some() => {
                if let Some(identity) = peer_identity {
                    self.peer_identities.insert(conn, identity);
                }
                return Login::Pending;
            }
            // A hand-built authenticator answered later without a backend to ask: refuse rather than
            // hold the CONNECT forever.
            AuthDecision::Pending => {
                let refusal = Refusal::AsynchronousAuthenticationUnsupported;
                self.refuse_connect(conn, &connect.client_id, refusal, now);
                return Login::Refused;
            }
        };
        self.refuse_login(conn, connect, failure, now);
        Login::Refused
    }

    pub(super) fn refuse_login(&mut self, conn: ConnId, connect: &Connect, failure: AuthFailure, now: Instant) {
        let (reason, text) = match failure.kind {
            FailureKind::BadCredentials => (ReasonCode::BAD_USER_NAME_OR_PASSWORD, BAD_CREDENTIALS_TEXT),
            FailureKind::NotAuthorized => (ReasonCode::NOT_AUTHORIZED, NOT_AUTHORIZED_TEXT),
        };
        let client_id = &connect.client_id;
        let user = connect.username.as_deref().unwrap_or("");
        warn!(shard = self.shard, %client_id, user, reason = %reason, "CONNECT refused: {failure}");
        self.send_connect_refusal(conn, reason, text);
        self.end_connection(conn, CloseReason::ConnectRefused, now);
    }

    /// Records which API token the session's client logged in with (None: it did not), before anything is
    /// checked for it.
    pub(super) fn set_token_grant(&mut self, key: SessionKey, token: Option<Arc<TokenGrant>>) {
        match token {
            Some(grant) => self.token_sessions.insert(key, grant),
            None => self.token_sessions.remove(&key),
        };
    }

    /// The token grant of the session, if its client logged in with a token.
    fn token_grant(&self, key: SessionKey) -> Option<&Arc<TokenGrant>> {
        if self.token_sessions.is_empty() {
            return None;
        }
        self.token_sessions.get(&key)
    }

    /// Who the session's client is, for an authorization check.
    fn identity(&self, key: SessionKey) -> Option<ClientIdentity<'_>> {
        let session = self.sessions.get(key)?;
        Some(ClientIdentity {
            listener: session.listener,
            client_id: &session.client_id,
            username: session.username.as_deref(),
        })
    }

    /// May the session's client publish to `topic`? Never to `$SYS` (the broker's own, as Mosquitto).
    pub(super) fn may_publish(&self, key: SessionKey, topic: &str) -> bool {
        if super::sys_topics::is_sys_topic(topic) {
            return false;
        }
        if let Some(grant) = self.token_grant(key) {
            return grant.may_publish(topic);
        }
        if let Some(allowed) = self.external_decision(key, AclAction::Publish, topic) {
            return allowed;
        }
        if !self.access.authorizes() {
            return true;
        }
        self.identity(key).is_some_and(|client| self.access.may_publish(&client, topic))
    }

    /// May the session's client subscribe to `filter` (the filter proper for a shared subscription)?
    pub(super) fn may_subscribe(&self, key: SessionKey, filter: &str) -> bool {
        if let Some(grant) = self.token_grant(key) {
            return grant.may_subscribe(filter);
        }
        if let Some(allowed) = self.external_decision(key, AclAction::Subscribe, filter) {
            return allowed;
        }
        if !self.access.authorizes() {
            return true;
        }
        self.identity(key).is_some_and(|client| self.access.may_subscribe(&client, filter))
    }

    /// The external backend's answer when the session's listener sends its checks there (`None`: it does
    /// not, the ACL file or dynamic security decide). Deliveries are never asked: the subscribe decided.
    fn external_decision(&self, key: SessionKey, action: AclAction, topic: &str) -> Option<bool> {
        if !self.access.external_authorizes() {
            return None;
        }
        let client = self.identity(key)?;
        self.access.external_for(client.listener).filter(|external| external.authorizes())?;
        Some(self.external_allows(action, client.listener, client.client_id, client.username, topic))
    }

    /// May the session's client unsubscribe from `filter`? (Only dynamic security restricts it.)
    pub(super) fn may_unsubscribe(&self, key: SessionKey, filter: &str) -> bool {
        if !self.access.authorizes() {
            return true;
        }
        self.identity(key).is_some_and(|client| self.access.may_unsubscribe(&client, filter))
    }

    /// May the session's client receive a message on `topic`? Runs on every delivery when an ACL is
    /// configured: one user lookup and a walk over that user's rules and the patterns.
    pub(super) fn may_receive(&self, key: SessionKey, topic: &ByteStr) -> bool {
        if let Some(grant) = self.token_grant(key) {
            return grant.may_receive(topic);
        }
        if self.access.external_authorizes()
            && self
                .identity(key)
                .is_some_and(|client| self.access.external_for(client.listener).is_some_and(|e| e.authorizes()))
        {
            return true;
        }
        if !self.access.authorizes() {
            return true;
        }
        self.identity(key).is_some_and(|client| self.access.may_receive(&client, topic))
    }
}
