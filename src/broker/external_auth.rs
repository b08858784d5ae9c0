//! CONNECTs and packets that wait for the external auth backend (`[auth.http]`, `crate::auth::external`).
//!
//! A CONNECT on a listener whose logins the backend decides is parked here (with its will topic's
//! publish check, when the backend also authorizes: a denied will refuses the CONNECT, as Mosquitto
//! does); a PUBLISH or SUBSCRIBE whose (client, topic, action) is not in the shard's cache is held here.
//! Either way the connection's input gate stays shut (`input_gate` says Paused), so nothing more of that
//! client is read or handled, in order, while every other client goes on. The checks run on the
//! backend's worker threads; each answer comes back as a control job (`ShardCore::external_answer`),
//! is cached when it is a real answer, and once the last answer of what waited is in, the CONNECT is
//! accepted or refused as the password-file path does (deny: 0x86 / return code 4; backend failure,
//! fail closed: 0x87 / 5), or the held packet is handled with those answers, and input opens again.
//!
//! Deliveries are not checked per message: a client's read access is the subscribe decision (as EMQX's
//! HTTP authorizer), and a will is checked once, with its CONNECT.

use std::net::SocketAddr;
use std::time::Instant;

use ahash::AHashMap;
use sha2::{Digest, Sha256};
use tracing::{debug, warn};

use super::connection::Phase;
use super::core::ShardCore;
use super::message::ConnId;
use crate::auth::external::{AclAction, Answer, Check, CheckRequest, ExternalAuth, Verdict, VerdictCache};
use crate::auth::{AuthFailure, ListenerId};
use crate::protocol::topic::parse_shared_subscription;
use crate::protocol::{Connect, Packet, Publish};

/// This shard's waits and cache. Empty maps when the backend is not used: other connections pay nothing.
#[derive(Default)]
pub(super) struct ExternalWaits {
    logins: AHashMap<ConnId, ParkedLogin>,
    held: AHashMap<ConnId, HeldPacket>,
    cache: Option<VerdictCache>,
    /// The answers of the packet being handled after its wait, consulted before the cache (which may be
    /// off, or full).
    answered: Vec<(Box<[u8]>, bool)>,
    /// Peer addresses of connections on listeners that use the backend (sent with every check).
    peers: AHashMap<ConnId, SocketAddr>,
    /// Salts the password hash in login cache keys, so no password is kept, not even unsalted hashed.
    salt: [u8; 16],
}

struct ParkedLogin {
    connect: Box<Connect>,
    login_key: Box<[u8]>,
    /// `None` while its answer is awaited.
    login: Option<Verdict>,
    /// The will topic's publish check: key and answer (`None` while awaited); absent without one.
    will: Option<(Box<[u8]>, Option<Verdict>)>,
}

struct HeldPacket {
    packet: Packet,
    /// Each check of the packet and its answer (`None` while awaited).
    checks: Vec<(Box<[u8]>, Option<bool>)>,
}

impl ExternalWaits {
    /// Whether the connection waits (its input stays shut).
    pub(super) fn holds(&self, conn: ConnId) -> bool {
        (!self.logins.is_empty() && self.logins.contains_key(&conn))
            || (!self.held.is_empty() && self.held.contains_key(&conn))
    }

    /// The connection is gone: what waited for it is dropped (a late answer finds nothing).
    pub(super) fn forget(&mut self, conn: ConnId) {
        if !self.logins.is_empty() {
            self.logins.remove(&conn);
        }
        if !self.held.is_empty() {
            self.held.remove(&conn);
        }
        if !self.peers.is_empty() {
            self.peers.remove(&conn);
        }
    }
}

/// The parts of a cache key, length-prefixed so no two different questions share a key.
fn cache_key(kind: u8, listener: ListenerId, parts: &[Option<&[u8]>]) -> Box<[u8]> {
    let mut key = Vec::with_capacity(64);
    key.push(kind);
    key.extend_from_slice(&listener.0.to_be_bytes());
    for part in parts {
        match part {
            Some(bytes) => {
                key.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
                key.extend_from_slice(bytes);
            }
            None => key.extend_from_slice(&u32::MAX.to_be_bytes()),
        }
    }
    key.into_boxed_slice()
}

fn acl_key(action: AclAction, listener: ListenerId, client_id: &str, username: Option<&str>, topic: &str) -> Box<[u8]> {
    let kind = match action {
        AclAction::Publish => b'P',
        AclAction::Subscribe => b'S',
    };
    cache_key(kind, listener, &[Some(client_id.as_bytes()), username.map(str::as_bytes), Some(topic.as_bytes())])
}

impl ShardCore {
    /// The runtime tells the core the peer address of a connection on a listener that uses the backend
    /// (`wants_peer_address`); it goes with every check of that connection.
    pub fn set_peer_address(&mut self, conn: ConnId, peer: SocketAddr) {
        if self.connections.get(&conn).is_some() {
            self.external.peers.insert(conn, peer);
        }
    }

    /// The listener the connection arrived on.
    pub fn listener_of(&self, conn: ConnId) -> Option<ListenerId> {
        self.connections.get(&conn).map(|connection| connection.listener)
    }

    /// Whether the runtime should give connections of `listener` their peer address.
    pub fn wants_peer_address(&self, listener: ListenerId) -> bool {
        self.access.external_for(listener).is_some()
    }

    fn external_cache(&mut self, external: &ExternalAuth) -> &mut VerdictCache {
        self.external.cache.get_or_insert_with(|| external.new_cache())
    }

    /// Parks a CONNECT for the backend (the listener's authenticator said `Pending`), or decides it at
    /// once from the cache.
    pub(super) fn park_login(&mut self, conn: ConnId, connect: Connect, now: Instant) {
        let listener = self.connections.get(&conn).map_or(ListenerId::default(), |connection| connection.listener);
        let Some(external) = self.access.external_for(listener).cloned() else {
            let failure = AuthFailure::not_authorized("the listener's external backend is gone (reloaded)");
            return self.refuse_login(conn, &connect, failure, now);
        };
        let password = match connect.password.as_deref().map(std::str::from_utf8) {
            Some(Err(_)) => {
                return self.refuse_login(conn, &connect, AuthFailure::bad_credentials("password is not UTF-8"), now)
            }
            Some(Ok(password)) => Some(password.to_string()),
            None => None,
        };
        let password_hash = password.as_ref().map(|password| {
            let mut hasher = Sha256::new();
            hasher.update(self.external.salt);
            hasher.update(password.as_bytes());
            hasher.finalize().to_vec()
        });
        let username = connect.username.as_deref();
        let login_key = cache_key(
            b'L',
            listener,
            &[Some(connect.client_id.as_bytes()), username.map(str::as_bytes), password_hash.as_deref()],
        );
        let peer = self.external.peers.get(&conn).copied();
        let cached = self.external_cache(&external).get(&login_key, now);
        let mut checks = Vec::new();
        let login = match cached {
            Some(allowed) => Some(if allowed { Verdict::Allow } else { Verdict::Deny }),
            None => {
                checks.push(CheckRequest::Login {
                    listener,
                    client_id: connect.client_id.to_string(),
                    username: username.map(str::to_string),
                    password,
                    peer,
                });
                None
            }
        };
        let will = match connect.will.as_ref().filter(|_| external.authorizes()) {
            Some(will) => {
                let key = acl_key(AclAction::Publish, listener, &connect.client_id, username, &will.topic);
                let cached = self.external_cache(&external).get(&key, now);
                if cached.is_none() {
                    checks.push(CheckRequest::Acl {
                        listener,
                        client_id: connect.client_id.to_string(),
                        username: username.map(str::to_string),
                        peer,
                        action: AclAction::Publish,
                        topic: will.topic.to_string(),
                    });
                }
                Some((key, cached.map(|allowed| if allowed { Verdict::Allow } else { Verdict::Deny })))
            }
            None => None,
        };
        self.external.logins.insert(conn, ParkedLogin { connect: Box::new(connect), login_key, login, will });
        if checks.is_empty() {
            return self.finish_login_if_answered(conn, now);
        }
        debug!(shard = self.shard, conn = conn.0, "CONNECT waits for the external auth backend");
        self.ask_external(&external, conn, checks, now);
    }

    /// Posts checks for `conn`; one the backend cannot take is answered at once (refused, or allowed by
    /// fail_open), after the wait is recorded.
    fn ask_external(&mut self, external: &ExternalAuth, conn: ConnId, checks: Vec<CheckRequest>, now: Instant) {
        let mut failed = Vec::new();
        for request in checks {
            if let Err(answer) = external.submit(Check { shard: self.shard, token: conn.0, request }) {
                failed.push(answer);
            }
        }
        for answer in failed {
            self.external_answer(*answer, now);
        }
    }

    /// An answer of the backend for this shard (run as a control job): cached if real, then whatever
    /// waited for it goes on once its last answer is in.
    pub fn external_answer(&mut self, answer: Answer, now: Instant) {
        let conn = ConnId(answer.token);
        let listener = match &answer.request {
            CheckRequest::Login { listener, .. } | CheckRequest::Acl { listener, .. } => *listener,
        };
        let allowed = answer.verdict == Verdict::Allow;
        let key = match &answer.request {
            CheckRequest::Acl { action, client_id, username, topic, .. } => {
                Some(acl_key(*action, listener, client_id, username.as_deref(), topic))
            }
            CheckRequest::Login { .. } => None,
        };
        if let Some(parked) = self.external.logins.get_mut(&conn) {
            match (&answer.request, key) {
                (CheckRequest::Login { .. }, _) => {
                    parked.login = Some(answer.verdict);
                    if answer.cacheable {
                        let login_key = parked.login_key.clone();
                        self.cache_answer(listener, &login_key, allowed, now);
                    }
                }
                (CheckRequest::Acl { .. }, Some(key)) => {
                    if let Some((will_key, verdict)) = parked.will.as_mut().filter(|(will_key, _)| *will_key == key) {
                        *verdict = Some(answer.verdict);
                        let will_key = will_key.clone();
                        if answer.cacheable {
                            self.cache_answer(listener, &will_key, allowed, now);
                        }
                    }
                }
                _ => {}
            }
            return self.finish_login_if_answered(conn, now);
        }
        let Some(key) = key else { return };
        if answer.cacheable {
            self.cache_answer(listener, &key, allowed, now);
        }
        let Some(held) = self.external.held.get_mut(&conn) else { return };
        for (check_key, verdict) in held.checks.iter_mut() {
            if *check_key == key && verdict.is_none() {
                *verdict = Some(allowed);
            }
        }
        if held.checks.iter().any(|(_, verdict)| verdict.is_none()) {
            return;
        }
        let Some(held) = self.external.held.remove(&conn) else { return };
        self.external.answered =
            held.checks.into_iter().map(|(key, verdict)| (key, verdict.unwrap_or(false))).collect();
        self.dispatch(conn, held.packet, now);
        self.external_handled();
        self.open_input(conn);
    }

    fn cache_answer(&mut self, listener: ListenerId, key: &[u8], allowed: bool, now: Instant) {
        if let Some(external) = self.access.external_for(listener).cloned() {
            self.external_cache(&external).insert(key, allowed, now);
        }
    }

    fn finish_login_if_answered(&mut self, conn: ConnId, now: Instant) {
        let answered = self.external.logins.get(&conn).is_some_and(|parked| {
            parked.login.is_some() && parked.will.as_ref().is_none_or(|(_, verdict)| verdict.is_some())
        });
        if !answered {
            return;
        }
        let Some(parked) = self.external.logins.remove(&conn) else { return };
        let connect = *parked.connect;
        let failure = match (parked.login, parked.will.and_then(|(_, verdict)| verdict)) {
            (Some(Verdict::Deny), _) => {
                Some(AuthFailure::bad_credentials("the external auth backend denied the login"))
            }
            (Some(Verdict::Unavailable), _) => {
                Some(AuthFailure::not_authorized("the external auth backend failed (fail closed)"))
            }
            (_, Some(Verdict::Deny)) => {
                Some(AuthFailure::not_authorized("will topic not authorized by the external backend"))
            }
            (_, Some(Verdict::Unavailable)) => {
                Some(AuthFailure::not_authorized("will topic check failed at the external backend (fail closed)"))
            }
            _ => None,
        };
        match failure {
            Some(failure) => self.refuse_login(conn, &connect, failure, now),
            None => {
                let username = connect.username.as_deref().map(str::to_string);
                self.accept_connect(conn, connect, None, username, None, now);
                self.open_input(conn);
            }
        }
    }

    /// Holds a PUBLISH or SUBSCRIBE whose checks are not all in the cache (see the module doc); returns
    /// the packet when it can be handled now.
    pub(super) fn hold_for_external(&mut self, conn: ConnId, packet: Packet, now: Instant) -> Option<Packet> {
        if !matches!(packet, Packet::Publish(_) | Packet::Subscribe(_)) {
            return Some(packet);
        }
        let Some(connection) = self.connections.get(&conn) else { return Some(packet) };
        let (Phase::Connected(key), listener) = (connection.phase, connection.listener) else { return Some(packet) };
        let Some(external) = self.access.external_for(listener).filter(|external| external.authorizes()).cloned()
        else {
            return Some(packet);
        };
        if !self.token_sessions.is_empty() && self.token_sessions.contains_key(&key) {
            return Some(packet);
        }
        let topics: Vec<(AclAction, String)> = match &packet {
            Packet::Publish(publish) => {
                self.publish_topic(conn, publish).map(|topic| vec![(AclAction::Publish, topic)]).unwrap_or_default()
            }
            Packet::Subscribe(subscribe) => subscribe
                .filters
                .iter()
                .map(|(filter, _)| {
                    let proper =
                        parse_shared_subscription(filter).ok().flatten().map_or(&**filter, |shared| shared.filter);
                    (AclAction::Subscribe, proper.to_string())
                })
                .collect(),
            _ => Vec::new(),
        };
        let Some(session) = self.sessions.get(key) else { return Some(packet) };
        let (client_id, username) = (session.client_id.to_string(), session.username.as_deref().map(str::to_string));
        let peer = self.external.peers.get(&conn).copied();
        let mut checks = Vec::with_capacity(topics.len());
        let mut requests = Vec::new();
        for (action, topic) in topics {
            let check_key = acl_key(action, listener, &client_id, username.as_deref(), &topic);
            let cached = self.external_cache(&external).get(&check_key, now);
            if cached.is_none() && !checks.iter().any(|(known, _): &(Box<[u8]>, Option<bool>)| *known == check_key) {
                let (client_id, username) = (client_id.clone(), username.clone());
                requests.push(CheckRequest::Acl { listener, client_id, username, peer, action, topic });
            }
            checks.push((check_key, cached));
        }
        if requests.is_empty() {
            // Every answer is cached; kept for the handler in case the cache drops them meanwhile.
            self.external.answered = checks.into_iter().filter_map(|(key, verdict)| Some((key, verdict?))).collect();
            return Some(packet);
        }
        self.external.held.insert(conn, HeldPacket { packet, checks });
        self.ask_external(&external, conn, requests, now);
        None
    }

    /// The topic a PUBLISH goes to (its alias resolved without changing the alias table); `None` when the
    /// handler will refuse it anyway (or for `$SYS`, always refused), so nothing is asked.
    fn publish_topic(&self, conn: ConnId, publish: &Publish) -> Option<String> {
        let topic = if publish.topic.is_empty() {
            let alias = usize::from(publish.properties.topic_alias?);
            let aliases = self.connections.get(&conn)?.aliases.as_ref()?;
            aliases.incoming.get(alias.checked_sub(1)?)?.as_ref()?.to_string()
        } else {
            publish.topic.to_string()
        };
        (!super::sys_topics::is_sys_topic(&topic) && crate::protocol::topic::validate_topic_name(&topic).is_ok())
            .then_some(topic)
    }

    /// The backend's decision on (client, action, topic) for the handler: the answers `hold_for_external`
    /// gathered for the packet being handled. None for them means no packet is being handled: a will being
    /// published, checked with its CONNECT, so it passes.
    pub(super) fn external_allows(
        &self,
        action: AclAction,
        listener: ListenerId,
        client_id: &str,
        username: Option<&str>,
        topic: &str,
    ) -> bool {
        let key = acl_key(action, listener, client_id, username, topic);
        if let Some((_, allowed)) = self.external.answered.iter().find(|(known, _)| *known == key) {
            return *allowed;
        }
        if action == AclAction::Publish {
            return true;
        }
        warn!(shard = self.shard, client_id, topic, "no external answer for a subscribe check; refused");
        false
    }

    /// Forgets the answers of the packet just handled.
    pub(super) fn external_handled(&mut self) {
        if !self.external.answered.is_empty() {
            self.external.answered.clear();
        }
    }

    /// A fresh salt for login cache keys (once per shard).
    pub(super) fn seed_external_salt(&mut self) {
        let _ = getrandom::fill(&mut self.external.salt);
    }
}
