//! `RecoveredState`: what a shard's log says is live, built by replaying its records in order. Replay is
//! forgiving: a record about a session or packet id the state does not have (possible only after a cut
//! tail) is skipped, never a panic.

use std::collections::{BTreeMap, VecDeque};

use super::record::{Record, StoredDelivery, StoredInflightState, StoredMessage, StoredSubscription, StoredWill};
use crate::protocol::ByteStr;

#[derive(Clone, Debug, PartialEq)]
pub struct RecoveredInflight {
    pub packet_id: u16,
    pub state: StoredInflightState,
    pub delivery: StoredDelivery,
}

#[derive(Clone, Debug, PartialEq, Default)]
pub struct RecoveredSession {
    pub expiry_interval_secs: u32,
    pub username: Option<ByteStr>,
    pub listener: u16,
    pub will: Option<StoredWill>,
    /// When its connection left; `None`: it was connected when the broker stopped.
    pub detached_at_unix_ms: Option<u64>,
    /// In the order they were made (a replaced subscription keeps its place).
    pub subscriptions: Vec<StoredSubscription>,
    pub inflight: VecDeque<RecoveredInflight>,
    pub queue: VecDeque<StoredDelivery>,
    pub awaiting_pubrel: Vec<u16>,
}

#[derive(Clone, Debug, PartialEq, Default)]
pub struct RecoveredState {
    pub sessions: BTreeMap<ByteStr, RecoveredSession>,
    pub retained: BTreeMap<ByteStr, StoredMessage>,
    /// Records that named something absent (counted for the recovery log line).
    pub skipped_records: u64,
}

impl RecoveredState {
    pub fn apply(&mut self, record: Record) {
        let applied = match record {
            Record::SessionPut { client_id, expiry_interval_secs, username, listener, will } => {
                let session = self.sessions.entry(client_id).or_default();
                session.expiry_interval_secs = expiry_interval_secs;
                session.username = username;
                session.listener = listener;
                session.will = will;
                session.detached_at_unix_ms = None;
                true
            }
            Record::SessionDetached { client_id, at_unix_ms, will_kept } => self.with(&client_id, |session| {
                session.detached_at_unix_ms = Some(at_unix_ms);
                if !will_kept {
                    session.will = None;
                }
            }),
            Record::SessionExpiry { client_id, expiry_interval_secs } => {
                self.with(&client_id, |session| session.expiry_interval_secs = expiry_interval_secs)
            }
            Record::WillGone { client_id } => self.with(&client_id, |session| session.will = None),
            Record::SessionEnd { client_id } => self.sessions.remove(&client_id).is_some(),
            Record::Subscribe { client_id, subscription } => self.with(&client_id, |session| {
                match session.subscriptions.iter_mut().find(|existing| existing.filter == subscription.filter) {
                    Some(existing) => *existing = subscription,
                    None => session.subscriptions.push(subscription),
                }
            }),
            Record::Unsubscribe { client_id, filter } => {
                self.with(&client_id, |session| session.subscriptions.retain(|existing| existing.filter != filter))
            }
            Record::Enqueue { client_id, delivery } => {
                self.with(&client_id, |session| session.queue.push_back(delivery))
            }
            Record::QueueToInflight { client_id, packet_id } => self.try_with(&client_id, |session| {
                let delivery = session.queue.pop_front()?;
                session.inflight.push_back(RecoveredInflight { packet_id, state: StoredInflightState::Sent, delivery });
                Some(())
            }),
            Record::QueueDropFront { client_id } => {
                self.try_with(&client_id, |session| session.queue.pop_front().map(drop))
            }
            Record::Inflight { client_id, packet_id, state, delivery } => self.with(&client_id, |session| {
                session.inflight.push_back(RecoveredInflight { packet_id, state, delivery })
            }),
            Record::InflightReleased { client_id, packet_id } => self.try_with(&client_id, |session| {
                let entry = session.inflight.iter_mut().find(|entry| entry.packet_id == packet_id)?;
                entry.state = StoredInflightState::Released;
                Some(())
            }),
            Record::InflightDone { client_id, packet_id } => self.try_with(&client_id, |session| {
                let index = session.inflight.iter().position(|entry| entry.packet_id == packet_id)?;
                session.inflight.remove(index).map(drop)
            }),
            Record::AwaitPubrel { client_id, packet_id } => self.with(&client_id, |session| {
                if !session.awaiting_pubrel.contains(&packet_id) {
                    session.awaiting_pubrel.push(packet_id);
                }
            }),
            Record::PubrelDone { client_id, packet_id } => self.try_with(&client_id, |session| {
                let index = session.awaiting_pubrel.iter().position(|&id| id == packet_id)?;
                session.awaiting_pubrel.swap_remove(index);
                Some(())
            }),
            Record::RetainSet { message } => {
                self.retained.insert(message.topic.clone(), message);
                true
            }
            Record::RetainDelete { topic } => self.retained.remove(&topic).is_some(),
        };
        if !applied {
            self.skipped_records += 1;
        }
    }

    fn with(&mut self, client_id: &ByteStr, change: impl FnOnce(&mut RecoveredSession)) -> bool {
        self.try_with(client_id, |session| {
            change(session);
            Some(())
        })
    }

    fn try_with(&mut self, client_id: &ByteStr, change: impl FnOnce(&mut RecoveredSession) -> Option<()>) -> bool {
        self.sessions.get_mut(client_id).and_then(change).is_some()
    }

    /// The records that rebuild this state from nothing: what a compacted segment holds.
    pub fn snapshot_records(&self, mut emit: impl FnMut(Record)) {
        for (client_id, session) in &self.sessions {
            emit(Record::SessionPut {
                client_id: client_id.clone(),
                expiry_interval_secs: session.expiry_interval_secs,
                username: session.username.clone(),
                listener: session.listener,
                will: session.will.clone(),
            });
            if let Some(at_unix_ms) = session.detached_at_unix_ms {
                let will_kept = session.will.is_some();
                emit(Record::SessionDetached { client_id: client_id.clone(), at_unix_ms, will_kept });
            }
            for subscription in &session.subscriptions {
                emit(Record::Subscribe { client_id: client_id.clone(), subscription: subscription.clone() });
            }
            for entry in &session.inflight {
                emit(Record::Inflight {
                    client_id: client_id.clone(),
                    packet_id: entry.packet_id,
                    state: entry.state,
                    delivery: entry.delivery.clone(),
                });
            }
            for delivery in &session.queue {
                emit(Record::Enqueue { client_id: client_id.clone(), delivery: delivery.clone() });
            }
            for &packet_id in &session.awaiting_pubrel {
                emit(Record::AwaitPubrel { client_id: client_id.clone(), packet_id });
            }
        }
        for message in self.retained.values() {
            emit(Record::RetainSet { message: message.clone() });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::record::tests::{stored_delivery, stored_message};
    use super::*;
    use crate::protocol::Properties;

    fn put(client_id: &str) -> Record {
        Record::SessionPut {
            client_id: ByteStr::from(client_id),
            expiry_interval_secs: 100,
            username: None,
            listener: 0,
            will: None,
        }
    }

    fn id(client_id: &str) -> ByteStr {
        ByteStr::from(client_id)
    }

    #[test]
    fn queue_moves_into_the_window_and_acks_end_entries() {
        let mut state = RecoveredState::default();
        state.apply(put("c"));
        for payload in ["1", "2", "3"] {
            state.apply(Record::Enqueue { client_id: id("c"), delivery: stored_delivery(payload) });
        }
        state.apply(Record::QueueToInflight { client_id: id("c"), packet_id: 1 });
        state.apply(Record::QueueToInflight { client_id: id("c"), packet_id: 2 });
        state.apply(Record::InflightReleased { client_id: id("c"), packet_id: 2 });
        state.apply(Record::InflightDone { client_id: id("c"), packet_id: 1 });
        state.apply(Record::AwaitPubrel { client_id: id("c"), packet_id: 5 });
        let session = &state.sessions[&id("c")];
        assert_eq!(session.queue.len(), 1);
        assert_eq!(&session.queue[0].message.payload[..], b"3");
        assert_eq!(session.inflight.len(), 1);
        assert_eq!((session.inflight[0].packet_id, session.inflight[0].state), (2, StoredInflightState::Released));
        assert_eq!(session.awaiting_pubrel, vec![5]);
        assert_eq!(state.skipped_records, 0);
    }

    #[test]
    fn records_about_absent_sessions_are_skipped_not_fatal() {
        let mut state = RecoveredState::default();
        state.apply(Record::QueueToInflight { client_id: id("nobody"), packet_id: 1 });
        state.apply(put("c"));
        state.apply(Record::InflightDone { client_id: id("c"), packet_id: 9 });
        state.apply(Record::SessionEnd { client_id: id("c") });
        assert!(state.sessions.is_empty());
        assert_eq!(state.skipped_records, 2);
    }

    #[test]
    fn a_snapshot_replays_to_the_same_state() {
        let mut state = RecoveredState::default();
        state.apply(put("a"));
        state.apply(Record::SessionPut {
            client_id: id("b"),
            expiry_interval_secs: 5,
            username: Some(id("user")),
            listener: 1,
            will: Some(StoredWill {
                topic: id("w"),
                payload: bytes::Bytes::from_static(b"x"),
                qos: crate::protocol::QoS::AtLeastOnce,
                retain: false,
                properties: Properties::default(),
                delay_secs: 3,
            }),
        });
        state.apply(Record::SessionDetached { client_id: id("b"), at_unix_ms: 77, will_kept: true });
        state.apply(Record::Enqueue { client_id: id("a"), delivery: stored_delivery("1") });
        state.apply(Record::Enqueue { client_id: id("a"), delivery: stored_delivery("2") });
        state.apply(Record::QueueToInflight { client_id: id("a"), packet_id: 4 });
        state.apply(Record::RetainSet { message: stored_message("r", "v") });
        let mut copy = RecoveredState::default();
        state.snapshot_records(|record| copy.apply(record));
        assert_eq!(copy, state);
    }
}
