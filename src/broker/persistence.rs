//! Start-up from a shard's log: `ShardCore::restore` rebuilds sessions (subscriptions in the tries and
//! announced to the other shards, inflight window, queue, QoS 2 ids, will, expiry) and this shard's
//! durable retained messages (replicated to the other shards as any retained publish is), then turns the
//! journal on.
//!
//! Time passed while the broker was down counts: a session whose expiry ran out since its connection
//! left is ended (its will published), a retained message past its expiry is dropped, and so is a queued
//! one (the queue is rewritten in the log so later records still line up). A session that was connected
//! when the broker stopped lost that connection at the restart: its expiry and will delay count from then.

use std::sync::Arc;
use std::time::Instant;

use smallvec::SmallVec;
use tracing::info;

use super::core::ShardCore;
use super::delivery::Delivery;
use super::inflight::InflightState;
use super::journal::{stored_delivery, WallClock};
use super::message::{ConnId, MeshMessage, Message, Origin};
use super::session::{Session, SessionKey, SESSION_NEVER_EXPIRES};
use super::subscriptions::Subscriber;
use super::timers::TimerKey;
use super::will::PendingWill;
use crate::auth::ListenerId;
use crate::persist::{Record, RecoveredSession, RecoveredState, StoredDelivery, StoredInflightState, StoredMessage};
use crate::protocol::topic::parse_shared_subscription;
use crate::protocol::{ByteStr, Will};

/// What a restore found, for the start-up log line and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RestoreReport {
    pub sessions: usize,
    pub expired_sessions: usize,
    pub messages: usize,
    pub expired_messages: usize,
    pub retained: usize,
}

impl ShardCore {
    /// Rebuilds this shard's state from its log, then journals every later change.
    pub fn restore(&mut self, state: RecoveredState, clock: WallClock, now: Instant) -> RestoreReport {
        let mut report = RestoreReport::default();
        let now_unix_ms = clock.unix_ms(now);
        let mut expired = Vec::new();
        let mut rewrite = Vec::new();
        let mut connected_at_stop = Vec::new();
        let mut wills_due = Vec::new();
        let mut retained_gone = Vec::new();
        for (client_id, recovered) in state.sessions {
            let detached_at = recovered.detached_at_unix_ms.unwrap_or(now_unix_ms);
            let expiry_ms = u64::from(recovered.expiry_interval_secs) * 1000;
            let expires_at_unix_ms = (recovered.expiry_interval_secs != SESSION_NEVER_EXPIRES)
                .then(|| detached_at.saturating_add(expiry_ms));
            let key = self.restore_session(&client_id, &recovered, expires_at_unix_ms, clock, now);
            if recovered.detached_at_unix_ms.is_none() {
                connected_at_stop.push(key);
            }
            if expires_at_unix_ms.is_some_and(|at| at <= now_unix_ms) {
                report.expired_sessions += 1;
                expired.push(key);
                continue;
            }
            report.sessions += 1;
            if let Some(will) = &recovered.will {
                let publish_at = detached_at.saturating_add(u64::from(will.delay_secs) * 1000);
                match clock.instant(publish_at).filter(|&at| at > now) {
                    Some(at) => {
                        if let Some(pending) = self.sessions.get_mut(key).and_then(|session| session.will.as_mut()) {
                            pending.publish_at = Some(at);
                        }
                        self.timers.insert(now, at, TimerKey::WillDelay(key));
                    }
                    None => wills_due.push(key),
                }
            }
            self.restore_subscriptions(key, &recovered);
            let (queued, dropped) = self.restore_traffic(key, recovered, clock, now_unix_ms);
            report.messages += queued;
            report.expired_messages += dropped;
            if dropped > 0 {
                rewrite.push((key, queued + dropped));
            }
        }
        for (topic, message) in state.retained {
            if message.expires_at_unix_ms.is_some_and(|at| at <= now_unix_ms) {
                retained_gone.push(topic);
                continue;
            }
            if let Some(message) = restored_message(&message, clock, self.shard) {
                report.retained += 1;
                self.retained.apply(&message);
                self.broadcast(|| MeshMessage::Retain { message: Arc::clone(&message), deliver: false });
            }
        }
        self.sessions.journal_mut().enable(clock);
        self.journal_restore_changes(&rewrite, &connected_at_stop, now);
        for topic in retained_gone {
            self.sessions.journal_mut().record(|_| Record::RetainDelete { topic });
        }
        for key in wills_due {
            self.publish_will(key, now);
        }
        for key in expired {
            self.end_session(key, now);
        }
        info!(
            shard = self.shard,
            sessions = report.sessions,
            expired_sessions = report.expired_sessions,
            messages = report.messages,
            expired_messages = report.expired_messages,
            retained = report.retained,
            "persistence: state restored"
        );
        report
    }

    fn restore_session(
        &mut self,
        client_id: &ByteStr,
        recovered: &RecoveredSession,
        expires_at_unix_ms: Option<u64>,
        clock: WallClock,
        now: Instant,
    ) -> SessionKey {
        let mut session = Session::new(client_id, ConnId(0), recovered.expiry_interval_secs);
        session.conn = None;
        session.username = recovered.username.as_deref().map(Box::from);
        session.listener = ListenerId(recovered.listener);
        session.will = recovered.will.as_ref().map(|will| {
            let mut properties = will.properties.clone();
            properties.will_delay_interval_secs = Some(will.delay_secs);
            let will = Will {
                topic: will.topic.clone(),
                payload: will.payload.clone(),
                qos: will.qos,
                retain: will.retain,
                properties,
            };
            Box::new(PendingWill::new(&will))
        });
        session.expires_at = expires_at_unix_ms.map(|at| clock.instant(at).unwrap_or(now).max(now));
        let expires_at = session.expires_at;
        let key = self.sessions.insert(session);
        if let Some(at) = expires_at {
            self.timers.insert(now, at, TimerKey::SessionExpiry(key));
        }
        key
    }

    fn restore_subscriptions(&mut self, key: SessionKey, recovered: &RecoveredSession) {
        for stored in &recovered.subscriptions {
            let filter = &stored.filter;
            let subscriber =
                Subscriber { session: key, options: stored.options, subscription_id: stored.subscription_id };
            let outcome = self.subscriptions.subscribe(filter, subscriber);
            if outcome.first_on_shard {
                let seq = self.next_interest_seq();
                self.broadcast(|| MeshMessage::InterestAdded { filter: filter.clone(), seq });
            }
            if matches!(parse_shared_subscription(filter), Ok(Some(_))) {
                self.recount_share(filter);
            }
            if let Some(session) = self.sessions.get_mut(key) {
                session.filters.push(filter.clone());
            }
        }
    }

    /// Inflight entries come back as they were (resent with DUP on reconnect); queued ones past their
    /// expiry are dropped. Returns (queued kept, queued dropped).
    fn restore_traffic(
        &mut self,
        key: SessionKey,
        recovered: RecoveredSession,
        clock: WallClock,
        now_unix_ms: u64,
    ) -> (usize, usize) {
        let origin = self.shard;
        let inflight = recovered
            .inflight
            .into_iter()
            .filter_map(|entry| {
                let state = match entry.state {
                    StoredInflightState::Sent => InflightState::Sent,
                    StoredInflightState::Released => InflightState::Released,
                };
                Some((entry.packet_id, state, restored_delivery(&entry.delivery, clock, origin)?))
            })
            .collect();
        let total = recovered.queue.len();
        let queue: Vec<Delivery> = recovered
            .queue
            .iter()
            .filter(|delivery| delivery.message.expires_at_unix_ms.is_none_or(|at| at > now_unix_ms))
            .filter_map(|delivery| restored_delivery(delivery, clock, origin))
            .collect();
        let kept = queue.len();
        self.sessions.restore_traffic(key, inflight, queue, recovered.awaiting_pubrel);
        (kept, total - kept)
    }

    /// Journals what restoring changed: queues that lost expired messages are rewritten (so later
    /// `QueueToInflight` records name the right message) and sessions connected at the stop are detached
    /// now.
    fn journal_restore_changes(
        &mut self,
        rewrite: &[(SessionKey, usize)],
        connected_at_stop: &[SessionKey],
        now: Instant,
    ) {
        for &(key, logged) in rewrite {
            let Some(session) = self.sessions.get(key) else { continue };
            let client_id = ByteStr::from(&*session.client_id);
            let kept: Vec<Delivery> =
                session.traffic().map(|traffic| traffic.queue.iter().cloned().collect()).unwrap_or_default();
            let journal = self.sessions.journal_mut();
            for _ in 0..logged {
                journal.record(|_| Record::QueueDropFront { client_id: client_id.clone() });
            }
            for delivery in &kept {
                journal.record(|clock| Record::Enqueue {
                    client_id: client_id.clone(),
                    delivery: stored_delivery(delivery, clock),
                });
            }
        }
        for &key in connected_at_stop {
            self.sessions.detached(key, now);
        }
    }
}

fn restored_message(stored: &StoredMessage, clock: WallClock, shard: usize) -> Option<Arc<Message>> {
    let expires_at = stored.expires_at_unix_ms.map(|at| clock.instant(at).unwrap_or(clock.base));
    let origin = Origin { shard, conn: None };
    Message::new(
        stored.topic.clone(),
        stored.payload.clone(),
        stored.qos,
        stored.retain,
        stored.properties.clone(),
        expires_at,
        origin,
    )
    .ok()
}

fn restored_delivery(stored: &StoredDelivery, clock: WallClock, shard: usize) -> Option<Delivery> {
    Some(Delivery {
        message: restored_message(&stored.message, clock, shard)?,
        qos: stored.qos,
        retain: stored.retain,
        subscription_ids: SmallVec::from_slice(&stored.subscription_ids),
    })
}
