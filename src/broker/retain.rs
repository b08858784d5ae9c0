//! The retained-message store of a shard.
//!
//! Choice: every shard keeps a **full replica** of the index. A retained PUBLISH (or delete, empty
//! payload) is applied on the publishing shard and broadcast to every other shard (`MeshMessage::Retain`),
//! so a SUBSCRIBE is answered from local memory, synchronously, in the order the spec asks (retained
//! messages right after the SUBACK), with no cross-shard query and no partial answers. The message itself
//! is not replicated: every shard's index holds the same `Arc<Message>` (one owned copy of topic and
//! payload, made once by the publishing shard). Two shards publishing the same retained topic at the same
//! instant may apply them in different orders; the next publish on that topic converges them.
//!
//! The index is one hash table of those `Arc`s keyed by their topic: 8 bytes a message (plus the table's
//! spare room), against ~200 B a message for a trie of topic levels (a node with its own map and two
//! copies of its level per message, per shard; perf/RESULTS.md, "Retained messages"). An exact filter is
//! one lookup; a wildcard filter scans the table, skipping topics without the filter's literal prefix (a
//! few ns a message: ~1 ms per wildcard SUBSCRIBE at 100k retained messages). The table shrinks when
//! messages go, so a mass delete gives its memory back.

use std::sync::Arc;
use std::time::Instant;

use ahash::RandomState;
use hashbrown::HashTable;

use super::message::Message;
use crate::protocol::topic::topic_matches;

pub struct RetainedStore {
    by_topic: HashTable<Arc<Message>>,
    hasher: RandomState,
    count_max: usize,
    /// Topic and payload bytes of the messages held, against `bytes_max`.
    bytes: usize,
    bytes_max: usize,
}

/// What `RetainedStore::apply` did.
#[derive(Debug, PartialEq, Eq)]
pub enum RetainOutcome {
    Stored,
    Deleted,
    /// The store holds `count_max` messages and the topic is new, or the message would take the store
    /// past `bytes_max`: not retained (a message already retained on the topic stays).
    Full,
}

/// A table this empty (entries per bucket) is shrunk.
const SHRINK_BELOW_LOAD_DIVISOR: usize = 4;
/// Small tables are not worth shrinking.
const SHRINK_ABOVE_CAPACITY: usize = 64;

impl RetainedStore {
    pub fn new(count_max: usize, bytes_max: usize) -> Self {
        RetainedStore { by_topic: HashTable::new(), hasher: RandomState::new(), count_max, bytes: 0, bytes_max }
    }

    /// Sets, replaces or (empty payload) deletes the retained message of the message's topic
    /// [MQTT-3.3.1-5] [MQTT-3.3.1-6] [MQTT-3.3.1-7].
    pub fn apply(&mut self, message: &Arc<Message>) -> RetainOutcome {
        let topic = message.topic.as_str();
        let hash = self.hasher.hash_one(topic);
        let hasher = &self.hasher;
        let rehash = |stored: &Arc<Message>| hasher.hash_one(stored.topic.as_str());
        let full = self.by_topic.len() >= self.count_max;
        let existing = self.by_topic.find_entry(hash, |stored| stored.topic.as_str() == topic);
        if message.payload.is_empty() {
            if let Ok(entry) = existing {
                let (removed, _) = entry.remove();
                self.bytes -= stored_bytes(&removed);
                self.shrink_if_sparse();
            }
            return RetainOutcome::Deleted;
        }
        let replaced_bytes = existing.as_ref().map_or(0, |entry| stored_bytes(entry.get()));
        let bytes_after = self.bytes - replaced_bytes + stored_bytes(message);
        if bytes_after > self.bytes_max {
            return RetainOutcome::Full;
        }
        match existing {
            Ok(mut entry) => *entry.get_mut() = Arc::clone(message),
            Err(_) if full => return RetainOutcome::Full,
            Err(absent) => {
                absent.into_table().insert_unique(hash, Arc::clone(message), rehash);
            }
        }
        self.bytes = bytes_after;
        RetainOutcome::Stored
    }

    /// Every unexpired retained message whose topic `filter` matches.
    pub fn matching(&self, filter: &str, now: Instant, found: &mut Vec<Arc<Message>>) {
        let live = |message: &&Arc<Message>| !message.is_expired(now);
        let Some(wildcard_at) = filter.find(['+', '#']) else {
            let hash = self.hasher.hash_one(filter);
            found.extend(self.by_topic.find(hash, |stored| stored.topic.as_str() == filter).filter(live).cloned());
            return;
        };
        // Every match starts with the filter's plain levels, except that `a/#` also matches `a` itself.
        let prefix = match &filter[wildcard_at..] {
            "#" => filter[..wildcard_at].strip_suffix('/').unwrap_or(&filter[..wildcard_at]),
            _ => &filter[..wildcard_at],
        };
        let matches = |message: &&Arc<Message>| {
            message.topic.as_str().starts_with(prefix) && topic_matches(filter, message.topic.as_str())
        };
        found.extend(self.by_topic.iter().filter(matches).filter(live).cloned());
    }

    pub fn len(&self) -> usize {
        self.by_topic.len()
    }

    /// Topic and payload bytes of the messages held (what `bytes_max` bounds; for tests of the count).
    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Bucket capacity of the index (for tests of the shrinking).
    #[cfg(test)]
    pub fn capacity(&self) -> usize {
        self.by_topic.capacity()
    }

    fn shrink_if_sparse(&mut self) {
        let capacity = self.by_topic.capacity();
        if capacity > SHRINK_ABOVE_CAPACITY && self.by_topic.len() * SHRINK_BELOW_LOAD_DIVISOR < capacity {
            let hasher = &self.hasher;
            self.by_topic.shrink_to(self.by_topic.len() * 2, |stored| hasher.hash_one(stored.topic.as_str()));
        }
    }
}

/// What one retained message counts against `bytes_max`: its topic and payload.
fn stored_bytes(message: &Message) -> usize {
    message.topic.len() + message.payload.len()
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
        let mut store = RetainedStore::new(10, usize::MAX);
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
        let mut store = RetainedStore::new(10, usize::MAX);
        for topic in ["a/b", "a/c", "a/b/c", "$SYS/x", "b"] {
            store.apply(&message_on(topic, "x"));
        }
        assert_eq!(topics(&store, "a/+"), vec!["a/b", "a/c"]);
        assert_eq!(topics(&store, "#"), vec!["a/b", "a/b/c", "a/c", "b"]);
        assert_eq!(topics(&store, "$SYS/#"), vec!["$SYS/x"]);
    }

    #[test]
    fn full_store_refuses_new_topics_but_replaces_existing() {
        let mut store = RetainedStore::new(1, usize::MAX);
        assert_eq!(store.apply(&message_on("a", "1")), RetainOutcome::Stored);
        assert_eq!(store.apply(&message_on("b", "1")), RetainOutcome::Full);
        assert_eq!(store.apply(&message_on("a", "2")), RetainOutcome::Stored);
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn exact_and_wildcard_filters_find_the_same_message() {
        let mut store = RetainedStore::new(10, usize::MAX);
        store.apply(&message_on("a/b/c", "x"));
        store.apply(&message_on("a", "y"));
        assert_eq!(topics(&store, "a/b/c"), vec!["a/b/c"]);
        assert_eq!(topics(&store, "a/+/c"), vec!["a/b/c"]);
        assert_eq!(topics(&store, "a/#"), vec!["a", "a/b/c"], "a/# matches its parent level too");
        assert_eq!(topics(&store, "+/b/#"), vec!["a/b/c"]);
        assert!(topics(&store, "a/b").is_empty());
        assert!(topics(&store, "a/b/c/d").is_empty());
        store.apply(&message_on("b", "z"));
        store.apply(&message_on("$SYS/load", "z"));
        assert_eq!(topics(&store, "+"), vec!["a", "b"], "no $ topic under a leading wildcard [MQTT-4.7.2-1]");
        assert_eq!(topics(&store, "$SYS/+"), vec!["$SYS/load"]);
    }

    #[test]
    fn deleting_most_messages_shrinks_the_index() {
        let mut store = RetainedStore::new(100_000, usize::MAX);
        for i in 0..10_000 {
            store.apply(&message_on(&format!("t/{i}"), "x"));
        }
        let full_capacity = store.capacity();
        for i in 0..9_990 {
            store.apply(&message_on(&format!("t/{i}"), ""));
        }
        assert_eq!(store.len(), 10);
        assert!(store.capacity() * 16 < full_capacity, "{} buckets left of {full_capacity}", store.capacity());
        assert_eq!(topics(&store, "t/9995"), vec!["t/9995"]);
        assert_eq!(topics(&store, "t/+").len(), 10);
    }

    #[test]
    fn past_retained_max_bytes_a_message_is_not_retained_and_the_old_one_stays() {
        // Topic + payload: "t1" + 8 bytes = 10 per message, 25 allowed.
        let mut store = RetainedStore::new(10, 25);
        assert_eq!(store.apply(&message_on("t1", "12345678")), RetainOutcome::Stored);
        assert_eq!(store.apply(&message_on("t2", "12345678")), RetainOutcome::Stored);
        assert_eq!(store.bytes(), 20);
        assert_eq!(store.apply(&message_on("t3", "12345678")), RetainOutcome::Full, "30 > 25 bytes");
        assert_eq!(
            store.apply(&message_on("t1", "12345678901234567")),
            RetainOutcome::Full,
            "a replacement too (29 > 25)"
        );
        let mut found = Vec::new();
        store.matching("t1", Instant::now(), &mut found);
        assert_eq!(&found[0].payload[..], b"12345678", "the refused replacement left the old message");
        assert_eq!(store.apply(&message_on("t1", "1")), RetainOutcome::Stored, "a smaller one fits");
        assert_eq!(store.bytes(), 13);
        assert_eq!(store.apply(&message_on("t2", "")), RetainOutcome::Deleted);
        assert_eq!(store.bytes(), 3);
        assert_eq!(store.apply(&message_on("t3", "12345678")), RetainOutcome::Stored, "room after the delete");
    }
}
