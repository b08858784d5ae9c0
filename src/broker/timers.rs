//! What the shard's timer wheel can fire, and what firing does. Every key is re-checked against current
//! state before acting: a keep-alive entry of a connection that sent packets since is re-armed, a will or
//! session entry whose session reconnected (or was replaced) is ignored.

use std::time::{Duration, Instant};

use super::connection::Phase;
use super::core::ShardCore;
use super::lifecycle::CloseReason;
use super::message::ConnId;
use super::session::SessionKey;

/// How soon the keep-alive of a connection we are not reading (throttled) is checked again.
const KEEPALIVE_RECHECK_WHILE_THROTTLED: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerKey {
    /// No CONNECT within `connect_timeout_secs`.
    ConnectTimeout(ConnId),
    /// 1.5 x keep-alive without a packet [MQTT-3.1.2-24].
    KeepAlive(ConnId),
    /// A v5 Will Delay Interval ends.
    WillDelay(SessionKey),
    /// A disconnected session's expiry interval ends.
    SessionExpiry(SessionKey),
    /// A connection paused for owing too much may have stalled (`out_queue_stall_max_secs`).
    OutputStall(ConnId),
    /// A connection throttled for publishing too fast may be read again (`publish_limit`).
    PublishThrottle(ConnId),
}

impl ShardCore {
    pub(super) fn fire_timers(&mut self, now: Instant) {
        let mut due = Vec::new();
        self.timers.expire(now, &mut due);
        for key in due {
            match key {
                TimerKey::ConnectTimeout(conn) => self.connect_timeout(conn, now),
                TimerKey::KeepAlive(conn) => self.keepalive_check(conn, now),
                TimerKey::WillDelay(session) => self.will_delay_ended(session, now),
                TimerKey::SessionExpiry(session) => self.session_expiry_check(session, now),
                TimerKey::OutputStall(conn) => self.output_stall_check(conn, now),
                TimerKey::PublishThrottle(conn) => self.publish_throttle_ended(conn, now),
            }
        }
    }

    /// Arms the keep-alive check of a connection that just connected.
    pub(super) fn arm_keepalive(&mut self, conn: ConnId, now: Instant) {
        if let Some(deadline) = self.connections.get(&conn).and_then(|connection| connection.keepalive_deadline()) {
            self.timers.insert(now, deadline, TimerKey::KeepAlive(conn));
        }
    }

    fn connect_timeout(&mut self, conn: ConnId, now: Instant) {
        if self.connections.get(&conn).is_some_and(|connection| connection.phase == Phase::AwaitingConnect) {
            self.end_connection(conn, CloseReason::ConnectTimeout, now);
        }
    }

    fn keepalive_check(&mut self, conn: ConnId, now: Instant) {
        let Some(deadline) = self.connections.get(&conn).and_then(|connection| connection.keepalive_deadline()) else {
            return;
        };
        if deadline <= now && self.publish_limits.is_throttled(conn) {
            // We are not reading it (a PUBLISH far larger than a second's worth of
            // `publish_bytes_max_per_second` pauses it long): its packets wait in the socket, so check
            // again one keep-alive window on; the resume restarts its clock.
            self.timers.insert(now, now + KEEPALIVE_RECHECK_WHILE_THROTTLED, TimerKey::KeepAlive(conn));
        } else if deadline <= now {
            self.end_connection(conn, CloseReason::KeepAliveTimeout, now);
        } else {
            self.timers.insert(now, deadline, TimerKey::KeepAlive(conn));
        }
    }

    fn will_delay_ended(&mut self, key: SessionKey, now: Instant) {
        let Some(session) = self.sessions.get(key).filter(|session| session.conn.is_none()) else {
            return;
        };
        match session.will.as_ref().and_then(|will| will.publish_at) {
            Some(at) if at <= now => self.publish_will(key, now),
            Some(at) => self.timers.insert(now, at, TimerKey::WillDelay(key)),
            None => {}
        }
    }

    fn session_expiry_check(&mut self, key: SessionKey, now: Instant) {
        let Some(session) = self.sessions.get(key).filter(|session| session.conn.is_none()) else {
            return;
        };
        match session.expires_at {
            Some(at) if at <= now => {
                self.stats.clients_expired += 1;
                self.end_session(key, now);
            }
            Some(at) => self.timers.insert(now, at, TimerKey::SessionExpiry(key)),
            None => {}
        }
    }
}
