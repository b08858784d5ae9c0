//! How connections and sessions end: closing a connection (with a v5 DISCONNECT when we close it after
//! CONNACK), detaching it from its session, publishing or arming the will, and ending a session
//! (its subscriptions leave the tries, other shards hear of lost interest, a pending will goes out).

use std::borrow::Cow;
use std::fmt;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use super::backlog::BacklogBound;
use super::connection::Phase;
use super::core::ShardCore;
use super::message::{Action, ConnId, MeshMessage, Origin};
use super::refusal::Refusal;
use super::session::{SessionKey, SESSION_NEVER_EXPIRES};
use super::timers::TimerKey;
use crate::protocol::topic::parse_shared_subscription;
use crate::protocol::{ByteStr, ReasonCode};

/// Why a connection ends.
#[derive(Debug)]
pub enum CloseReason {
    /// EOF or socket error seen by the runtime (it closes the socket itself).
    SocketClosed,
    /// The client sent DISCONNECT; any v5 reason but 0x00 keeps the will.
    ClientDisconnect {
        publish_will: bool,
    },
    /// The client broke a rule; v5 clients get DISCONNECT with its reason code (and the rule as the
    /// Reason String) after CONNACK.
    Refused(Refusal),
    /// The client did not read what it was sent: it owed `owed_bytes` past `bound` (no DISCONNECT: it
    /// would queue behind what the client does not read).
    OutputBacklog {
        bound: BacklogBound,
        owed_bytes: usize,
    },
    /// CONNACK with a refusal was sent.
    ConnectRefused,
    ConnectTimeout,
    KeepAliveTimeout,
    /// Another connection with the same client id connected [MQTT-3.1.4-3].
    TakenOver,
    ServerShutdown,
    /// Closed from outside the protocol (the HTTP API: a kick, a revoked or expired token); v5 clients
    /// get DISCONNECT with `reason`.
    External {
        reason: ReasonCode,
        detail: Cow<'static, str>,
    },
    /// An administrator removed the client's right to be connected (a dynamic security client deleted,
    /// disabled or given new credentials); v5 clients get DISCONNECT 0x98. No will, as Mosquitto's kick.
    Kicked {
        detail: &'static str,
    },
}

impl CloseReason {
    /// The v5 DISCONNECT we send before closing, if any.
    fn disconnect(&self) -> Option<(ReasonCode, Cow<'static, str>)> {
        match self {
            CloseReason::Refused(refusal) => Some((refusal.reason(), refusal.to_string().into())),
            CloseReason::External { reason, detail } => Some((*reason, detail.clone())),
            CloseReason::KeepAliveTimeout => Some((ReasonCode::KEEP_ALIVE_TIMEOUT, "keep alive timeout".into())),
            CloseReason::TakenOver => Some((ReasonCode::SESSION_TAKEN_OVER, "session taken over".into())),
            CloseReason::ServerShutdown => Some((ReasonCode::SERVER_SHUTTING_DOWN, "server shutting down".into())),
            CloseReason::Kicked { detail } => Some((ReasonCode::ADMINISTRATIVE_ACTION, (*detail).into())),
            _ => None,
        }
    }

    /// Wills are for abnormal ends [MQTT-3.1.2-8]; not after a normal DISCONNECT [MQTT-3.1.2-10], and not
    /// when the whole server stops (no subscriber would still be there to receive it).
    fn publishes_will(&self) -> bool {
        match self {
            CloseReason::ClientDisconnect { publish_will } => *publish_will,
            CloseReason::ServerShutdown | CloseReason::ConnectRefused | CloseReason::Kicked { .. } => false,
            _ => true,
        }
    }
}

impl fmt::Display for CloseReason {
    /// The reason as an operator reads it in the disconnect log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::SocketClosed => f.write_str("connection closed by the client or the network"),
            CloseReason::ClientDisconnect { publish_will: false } => f.write_str("client sent DISCONNECT"),
            CloseReason::ClientDisconnect { publish_will: true } => {
                f.write_str("client sent DISCONNECT with will (0x04)")
            }
            CloseReason::Refused(refusal) => write!(f, "protocol error ({}): {refusal}", refusal.reason()),
            CloseReason::OutputBacklog { bound, owed_bytes } => {
                write!(f, "client does not read what it is sent: {owed_bytes} bytes owed, over {}", bound.setting())
            }
            CloseReason::ConnectRefused => f.write_str("CONNECT refused"),
            CloseReason::ConnectTimeout => f.write_str("no CONNECT within connect_timeout_secs"),
            CloseReason::KeepAliveTimeout => f.write_str("keep alive timeout (1.5 x keep alive without a packet)"),
            CloseReason::TakenOver => f.write_str("session taken over by a new connection"),
            CloseReason::ServerShutdown => f.write_str("server shutting down"),
            CloseReason::External { reason, detail } => write!(f, "closed through the HTTP API ({reason}): {detail}"),
            CloseReason::Kicked { detail } => write!(f, "administrative action: {detail}"),
        }
    }
}

impl ShardCore {
    /// Ends the connection: final DISCONNECT (v5, after CONNACK), `Close` action (unless the socket is
    /// already gone), and the session is detached.
    pub(super) fn end_connection(&mut self, conn: ConnId, reason: CloseReason, now: Instant) {
        let Some(phase) = self.connections.get(&conn).map(|connection| connection.phase) else { return };
        if let (Phase::Connected(_), Some((code, detail))) = (phase, reason.disconnect()) {
            self.send_disconnect(conn, code, &detail);
        }
        self.log_disconnect(conn, phase, &reason);
        let Some(connection) = self.connections.remove(&conn) else { return };
        self.enhanced_auth.remove(&conn);
        self.peer_identities.remove(&conn);
        self.backlogged.remove(&conn);
        self.publish_limits.forget(conn);
        self.external.forget(conn);
        if !matches!(reason, CloseReason::SocketClosed) {
            self.closing.insert(conn, (now, connection.out_queue));
            self.actions.push_back(Action::Close(conn));
        }
        if let Phase::Connected(key) = phase {
            self.stats.disconnects += 1;
            self.detach_session(key, reason.publishes_will(), now);
        }
    }

    /// One operator line per connection end, with the client id and the reason: info for every client
    /// that was or tried to be connected; debug for sockets that closed before any CONNECT (probes, health
    /// checks) and for each client at server shutdown (the shard logs one line for all). A refused CONNECT
    /// was already logged as the refusal.
    fn log_disconnect(&self, conn: ConnId, phase: Phase, reason: &CloseReason) {
        let client_id = phase
            .session_key()
            .and_then(|key| self.sessions.get(key))
            .map(|session| tracing::field::display(&*session.client_id));
        let quiet = match reason {
            CloseReason::ConnectRefused => return,
            CloseReason::ServerShutdown => true,
            CloseReason::SocketClosed => phase == Phase::AwaitingConnect,
            _ => false,
        };
        if matches!(reason, CloseReason::OutputBacklog { .. }) {
            warn!(shard = self.shard, conn = conn.0, client_id, %reason, "client disconnected");
        } else if quiet {
            debug!(shard = self.shard, conn = conn.0, client_id, %reason, "client disconnected");
        } else {
            info!(shard = self.shard, conn = conn.0, client_id, %reason, "client disconnected");
        }
    }

    /// Drops a connection that moved to its home shard before this core saw its CONNECT: no will, no
    /// session, no log line, no `Close` action (the runtime moved the socket), and its connect-timeout
    /// entry leaves the timer wheel.
    pub fn forget_connection(&mut self, conn: ConnId) {
        let Some(connection) = self.connections.remove(&conn) else { return };
        debug_assert_eq!(connection.phase, Phase::AwaitingConnect, "only unconnected connections move");
        self.enhanced_auth.remove(&conn);
        self.peer_identities.remove(&conn);
        self.backlogged.remove(&conn);
        self.publish_limits.forget(conn);
        self.external.forget(conn);
        self.closing.remove(&conn);
        // No packet was handled yet, so the last packet time is still the time it was opened.
        let connect_deadline =
            connection.last_packet_at + Duration::from_secs(u64::from(self.settings.connect_timeout_secs));
        self.timers.cancel(connect_deadline, &TimerKey::ConnectTimeout(conn));
    }

    /// The session lost its connection: arm or publish the will, then end the session or start its expiry.
    fn detach_session(&mut self, key: SessionKey, publish_will: bool, now: Instant) {
        let Some(session) = self.sessions.get_mut(key) else { return };
        let expiry_secs = session.expiry_interval_secs;
        if !publish_will {
            session.will = None;
        }
        self.sessions.detached(key, now);
        self.recount_session_shares(key);
        let Some(session) = self.sessions.get_mut(key) else { return };
        if let Some(will) = session.will.as_mut() {
            if will.delay_secs == 0 || expiry_secs == 0 {
                self.publish_will(key, now);
            } else {
                let publish_at = now + Duration::from_secs(u64::from(will.delay_secs));
                will.publish_at = Some(publish_at);
                self.timers.insert(now, publish_at, TimerKey::WillDelay(key));
            }
        }
        match expiry_secs {
            0 => self.end_session(key, now),
            SESSION_NEVER_EXPIRES => {}
            secs => {
                let expires_at = now + Duration::from_secs(u64::from(secs));
                if let Some(session) = self.sessions.get_mut(key) {
                    session.expires_at = Some(expires_at);
                }
                self.timers.insert(now, expires_at, TimerKey::SessionExpiry(key));
            }
        }
    }

    /// Publishes the session's pending will, if any.
    pub(super) fn publish_will(&mut self, key: SessionKey, now: Instant) {
        let Some(will) = self.sessions.take_will(key) else { return };
        if !self.may_publish(key, &will.will.topic) {
            self.stats.denied_publishes += 1;
            let client_id = self.sessions.get(key).map(|session| tracing::field::display(&*session.client_id));
            debug!(shard = self.shard, client_id, topic = %will.will.topic, "will not authorized (no write access), not published");
            return;
        }
        match will.into_message(Origin { shard: self.shard, conn: None }, now) {
            Ok(message) => {
                self.route_published(message, now);
            }
            Err(err) => warn!(shard = self.shard, error = %err, "will cannot be encoded, not published"),
        }
    }

    /// Discards the session: its subscriptions leave the tries and a pending will is published
    /// (v5: at the latest when the session ends).
    pub(super) fn end_session(&mut self, key: SessionKey, now: Instant) {
        self.publish_will(key, now);
        let Some(session) = self.sessions.remove(key) else { return };
        self.token_sessions.remove(&key);
        for filter in &session.filters {
            self.remove_subscription(filter, key);
        }
        debug!(shard = self.shard, client_id = %session.client_id, "session ended");
    }

    /// Removes one subscription; tells other shards when the filter had its last subscriber here.
    pub(super) fn remove_subscription(&mut self, filter: &ByteStr, key: SessionKey) -> bool {
        match self.subscriptions.unsubscribe(filter, key) {
            Some(last_on_shard) => {
                if last_on_shard {
                    self.broadcast(|| MeshMessage::InterestRemoved { filter: filter.clone() });
                } else if matches!(parse_shared_subscription(filter), Ok(Some(_))) {
                    self.recount_share(filter);
                }
                true
            }
            None => false,
        }
    }

    /// Queues `make()` for every other shard.
    pub(super) fn broadcast(&mut self, make: impl Fn() -> MeshMessage) {
        for shard in (0..self.shard_count).filter(|&shard| shard != self.shard) {
            self.actions.push_back(Action::Mesh { to: shard, msg: make() });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;
    use std::time::{Duration, Instant};

    use super::super::{BrokerSettings, ShardCore};

    #[test]
    fn a_forgotten_connection_leaves_no_state_action_or_timer_behind() {
        let settings = BrokerSettings { connect_timeout_secs: 1, ..BrokerSettings::default() };
        let mut core = ShardCore::new(0, 2, Rc::new(settings));
        let start = Instant::now();
        let moved = core.open_connection(start, crate::broker::ListenerId(0));
        let stays = core.open_connection(start, crate::broker::ListenerId(0));
        core.forget_connection(moved);
        assert_eq!(core.gauges().connections, 1);
        assert_eq!(core.gauges().timers, 1, "the moved connection's connect timeout is cancelled");
        assert!(core.poll_action().is_none(), "forgetting queues nothing");
        core.tick(start + Duration::from_secs(2));
        let mut closed = Vec::new();
        while let Some(action) = core.poll_action() {
            closed.push(action);
        }
        // Only the connection still here times out; the moved one's stale wheel entry does nothing.
        assert!(matches!(closed.as_slice(), [super::Action::Close(conn)] if *conn == stays), "{closed:?}");
        assert_eq!(core.gauges().connections, 0);
    }
}
