//! `SubscriptionTrie`: this shard's subscriptions, topic filter -> the sessions subscribed with their
//! options and v5 subscription identifier. A session holds at most one subscription per filter: a second
//! SUBSCRIBE to the same filter replaces it [MQTT-3.8.4-3].
//!
//! Shared subscriptions fit beside `subscribers` as a per-filter list of groups (each a member list with a
//! round-robin cursor); the trie and the interest replication stay as they are.

use smallvec::SmallVec;

use super::session::SessionKey;
use super::trie::{TopicTrie, TrieValue};
use crate::protocol::SubscriptionOptions;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subscriber {
    pub session: SessionKey,
    pub options: SubscriptionOptions,
    /// v5 Subscription Identifier; 0 = none.
    pub subscription_id: u32,
}

#[derive(Default, Debug)]
pub struct FilterSubscribers {
    subscribers: SmallVec<[Subscriber; 1]>,
}

impl TrieValue for FilterSubscribers {
    fn is_empty(&self) -> bool {
        self.subscribers.is_empty()
    }
}

/// What `SubscriptionTrie::subscribe` changed.
#[derive(Debug, PartialEq, Eq)]
pub struct SubscribeOutcome {
    /// The session had no subscription to this filter before (Retain Handling 1 sends retained only then).
    pub new_subscription: bool,
    /// The filter had no subscriber on this shard before: other shards must learn of the interest.
    pub first_on_shard: bool,
}

#[derive(Default)]
pub struct SubscriptionTrie {
    trie: TopicTrie<FilterSubscribers>,
}

impl SubscriptionTrie {
    pub fn subscribe(&mut self, filter: &str, subscriber: Subscriber) -> SubscribeOutcome {
        let node = self.trie.entry(filter);
        let list = &mut self.trie.value_mut(node).subscribers;
        let first_on_shard = list.is_empty();
        match list.iter_mut().find(|existing| existing.session == subscriber.session) {
            Some(existing) => {
                *existing = subscriber;
                SubscribeOutcome { new_subscription: false, first_on_shard }
            }
            None => {
                list.push(subscriber);
                SubscribeOutcome { new_subscription: true, first_on_shard }
            }
        }
    }

    /// Removes the session's subscription to `filter`. `None` if it had none; `Some(true)` if it was the
    /// filter's last subscriber on this shard.
    pub fn unsubscribe(&mut self, filter: &str, session: SessionKey) -> Option<bool> {
        let node = self.trie.find(filter)?;
        let list = &mut self.trie.value_mut(node).subscribers;
        let index = list.iter().position(|existing| existing.session == session)?;
        list.swap_remove(index);
        let last = list.is_empty();
        self.trie.prune(node);
        Some(last)
    }

    /// Visits every subscription whose filter matches the topic name.
    pub fn for_each_match(&self, topic: &str, mut visit: impl FnMut(&Subscriber)) {
        self.trie.for_each_match(topic, |value| value.subscribers.iter().for_each(&mut visit));
    }

    pub fn node_count(&self) -> usize {
        self.trie.node_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::QoS;

    fn subscriber(session: u32, qos: QoS) -> Subscriber {
        Subscriber {
            session: SessionKey(session),
            options: SubscriptionOptions { qos, ..SubscriptionOptions::default() },
            subscription_id: 0,
        }
    }

    #[test]
    fn resubscribe_replaces_options_mqtt_3_8_4_3() {
        let mut trie = SubscriptionTrie::default();
        let first = trie.subscribe("a/+", subscriber(1, QoS::AtMostOnce));
        assert_eq!(first, SubscribeOutcome { new_subscription: true, first_on_shard: true });
        let again = trie.subscribe("a/+", subscriber(1, QoS::ExactlyOnce));
        assert_eq!(again, SubscribeOutcome { new_subscription: false, first_on_shard: false });
        let other = trie.subscribe("a/+", subscriber(2, QoS::AtMostOnce));
        assert_eq!(other, SubscribeOutcome { new_subscription: true, first_on_shard: false });
        let mut seen = Vec::new();
        trie.for_each_match("a/b", |found| seen.push((found.session.0, found.options.qos)));
        seen.sort();
        assert_eq!(seen, vec![(1, QoS::ExactlyOnce), (2, QoS::AtMostOnce)]);
    }

    #[test]
    fn unsubscribe_reports_last_subscriber_and_prunes() {
        let mut trie = SubscriptionTrie::default();
        trie.subscribe("x/y", subscriber(1, QoS::AtMostOnce));
        trie.subscribe("x/y", subscriber(2, QoS::AtMostOnce));
        assert_eq!(trie.unsubscribe("x/y", SessionKey(3)), None);
        assert_eq!(trie.unsubscribe("x/y", SessionKey(1)), Some(false));
        assert_eq!(trie.unsubscribe("x/y", SessionKey(2)), Some(true));
        assert_eq!(trie.unsubscribe("x/y", SessionKey(2)), None);
        assert_eq!(trie.node_count(), 1);
    }
}
