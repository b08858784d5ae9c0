//! The retained-message store of a shard.
//!
//! Choice: every shard keeps a **full replica**. A retained PUBLISH (or delete, empty payload) is applied
//! on the publishing shard and broadcast to every other shard (`MeshMessage::Retain`), so a SUBSCRIBE is
//! answered from local memory, synchronously, in the order the spec asks (retained messages right after
//! the SUBACK), with no cross-shard query and no partial answers. The cost is memory x shards and one
//! mesh message per retained publish per shard; retained traffic is small next to live traffic. Two
//! shards publishing the same retained topic at the same instant may apply them in different orders; the
//! next publish on that topic converges them.

use std::sync::Arc;
use std::time::Instant;

use super::message::Message;
use super::trie::{NodeIdx, TopicTrie};

pub struct RetainedStore {
    trie: TopicTrie<Option<Arc<Message>>>,
    count: usize,
    count_max: usize,
}

/// What `RetainedStore::apply` did.
#[derive(Debug, PartialEq, Eq)]
pub enum RetainOutcome {
    Stored,
    Deleted,
    /// The store is full and the topic is new: not retained.
    Full,
}

impl RetainedStore {
    pub fn new(count_max: usize) -> Self {
        RetainedStore { trie: TopicTrie::default(), count: 0, count_max }
    }

    /// Sets, replaces or (empty payload) deletes the retained message of the message's topic
    /// [MQTT-3.3.1-5] [MQTT-3.3.1-6] [MQTT-3.3.1-7].
    pub fn apply(&mut self, message: &Arc<Message>) -> RetainOutcome {
        if message.payload.is_empty() {
            if let Some(node) = self.trie.find(&message.topic) {
                self.clear(node);
            }
            return RetainOutcome::Deleted;
        }
        let existing = self.trie.find(&message.topic).filter(|&node| self.trie.value(node).is_some());
        if existing.is_none() && self.count >= self.count_max {
            return RetainOutcome::Full;
        }
        let node = self.trie.entry(&message.topic);
        if self.trie.value_mut(node).replace(Arc::clone(message)).is_none() {
            self.count += 1;
        }
        RetainOutcome::Stored
    }

    /// Every unexpired retained message whose topic `filter` matches.
    pub fn matching(&self, filter: &str, now: Instant, found: &mut Vec<Arc<Message>>) {
        self.trie.for_each_in_filter(filter, |stored| {
            if let Some(message) = stored.as_ref().filter(|message| !message.is_expired(now)) {
                found.push(Arc::clone(message));
            }
        });
    }

    pub fn len(&self) -> usize {
        self.count
    }

    fn clear(&mut self, node: NodeIdx) {
        if self.trie.value_mut(node).take().is_some() {
            self.count -= 1;
        }
        self.trie.prune(node);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::delivery::tests::message_on;

    fn topics(store: &RetainedStore, filter: &str) -> Vec<String> {
        let mut found = Vec::new();
        store.matching(filter, Instant::now(), &mut found);
        let mut topics: Vec<String> = found.iter().map(|message| message.topic.to_string()).collect();
        topics.sort();
        topics
    }

    #[test]
    fn set_replace_delete_mqtt_3_3_1_5_to_7() {
        let mut store = RetainedStore::new(10);
        assert_eq!(store.apply(&message_on("a/b", "one")), RetainOutcome::Stored);
        assert_eq!(store.apply(&message_on("a/b", "two")), RetainOutcome::Stored);
        assert_eq!(store.len(), 1);
        let mut found = Vec::new();
        store.matching("a/b", Instant::now(), &mut found);
        assert_eq!(&found[0].payload[..], b"two");
        assert_eq!(store.apply(&message_on("a/b", "")), RetainOutcome::Deleted);
        assert_eq!(store.len(), 0);
        assert!(topics(&store, "#").is_empty());
    }

    #[test]
    fn wildcard_filter_gets_every_match_but_no_dollar_topics() {
        let mut store = RetainedStore::new(10);
        for topic in ["a/b", "a/c", "a/b/c", "$SYS/x", "b"] {
            store.apply(&message_on(topic, "x"));
        }
        assert_eq!(topics(&store, "a/+"), vec!["a/b", "a/c"]);
        assert_eq!(topics(&store, "#"), vec!["a/b", "a/b/c", "a/c", "b"]);
        assert_eq!(topics(&store, "$SYS/#"), vec!["$SYS/x"]);
    }

    #[test]
    fn full_store_refuses_new_topics_but_replaces_existing() {
        let mut store = RetainedStore::new(1);
        assert_eq!(store.apply(&message_on("a", "1")), RetainOutcome::Stored);
        assert_eq!(store.apply(&message_on("b", "1")), RetainOutcome::Full);
        assert_eq!(store.apply(&message_on("a", "2")), RetainOutcome::Stored);
        assert_eq!(store.len(), 1);
    }
}
