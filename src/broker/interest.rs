//! `InterestTrie`: the replicated map filter -> set of *other* shards that have at least one subscriber of
//! that filter. A shard tells every other shard when it gains its first or loses its last local subscriber
//! of a filter (`MeshMessage::InterestAdded` / `InterestRemoved`); a PUBLISH is then sent once to each
//! shard whose interest matches its topic, and that shard fans it out to its own subscribers.

use smallvec::SmallVec;

use super::message::ShardId;
use super::trie::{TopicTrie, TrieValue};

/// A set of shard ids as a bit set (one word covers 64 shards without allocating).
#[derive(Clone, Default, Debug, PartialEq, Eq)]
pub struct ShardSet {
    words: SmallVec<[u64; 1]>,
}

impl ShardSet {
    pub fn insert(&mut self, shard: ShardId) -> bool {
        let (word, bit) = (shard / 64, 1u64 << (shard % 64));
        if self.words.len() <= word {
            self.words.resize(word + 1, 0);
        }
        let added = self.words[word] & bit == 0;
        self.words[word] |= bit;
        added
    }

    pub fn remove(&mut self, shard: ShardId) -> bool {
        let (word, bit) = (shard / 64, 1u64 << (shard % 64));
        let Some(slot) = self.words.get_mut(word) else { return false };
        let removed = *slot & bit != 0;
        *slot &= !bit;
        while self.words.last() == Some(&0) {
            self.words.pop();
        }
        removed
    }

    pub fn contains(&self, shard: ShardId) -> bool {
        self.words.get(shard / 64).is_some_and(|word| word & (1 << (shard % 64)) != 0)
    }

    pub fn union_with(&mut self, other: &ShardSet) {
        if self.words.len() < other.words.len() {
            self.words.resize(other.words.len(), 0);
        }
        for (mine, theirs) in self.words.iter_mut().zip(&other.words) {
            *mine |= theirs;
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = ShardId> + '_ {
        self.words.iter().enumerate().flat_map(|(index, &word)| {
            (0..64).filter(move |bit| word & (1 << bit) != 0).map(move |bit| index * 64 + bit)
        })
    }
}

impl TrieValue for ShardSet {
    fn is_empty(&self) -> bool {
        self.words.is_empty()
    }
}

#[derive(Default)]
pub struct InterestTrie {
    trie: TopicTrie<ShardSet>,
}

impl InterestTrie {
    /// Records that `shard` has subscribers of `filter`.
    pub fn add(&mut self, filter: &str, shard: ShardId) {
        let node = self.trie.entry(filter);
        self.trie.value_mut(node).insert(shard);
    }

    /// Records that `shard` has no more subscribers of `filter`.
    pub fn remove(&mut self, filter: &str, shard: ShardId) {
        if let Some(node) = self.trie.find(filter) {
            self.trie.value_mut(node).remove(shard);
            self.trie.prune(node);
        }
    }

    /// Adds to `shards` every shard with a subscription matching `topic`.
    pub fn matching_shards(&self, topic: &str, shards: &mut ShardSet) {
        self.trie.for_each_match(topic, |set| shards.union_with(set));
    }

    pub fn node_count(&self) -> usize {
        self.trie.node_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shards_for(interest: &InterestTrie, topic: &str) -> Vec<ShardId> {
        let mut shards = ShardSet::default();
        interest.matching_shards(topic, &mut shards);
        shards.iter().collect()
    }

    #[test]
    fn matching_unions_shards_of_every_matching_filter() {
        let mut interest = InterestTrie::default();
        interest.add("a/+", 1);
        interest.add("a/b", 3);
        interest.add("#", 70);
        assert_eq!(shards_for(&interest, "a/b"), vec![1, 3, 70]);
        assert_eq!(shards_for(&interest, "a/c"), vec![1, 70]);
        assert_eq!(shards_for(&interest, "$SYS/x"), Vec::<ShardId>::new());
    }

    #[test]
    fn removing_last_shard_prunes_the_filter() {
        let mut interest = InterestTrie::default();
        interest.add("a/b", 1);
        interest.add("a/b", 2);
        interest.remove("a/b", 1);
        assert_eq!(shards_for(&interest, "a/b"), vec![2]);
        interest.remove("a/b", 2);
        assert!(shards_for(&interest, "a/b").is_empty());
        assert_eq!(interest.node_count(), 1, "only the root remains");
        interest.remove("never/added", 2);
    }

    #[test]
    fn shard_set_operations() {
        let mut set = ShardSet::default();
        assert!(set.insert(5));
        assert!(!set.insert(5));
        assert!(set.insert(65));
        assert!(set.contains(65) && set.contains(5) && !set.contains(6));
        assert!(set.remove(65));
        assert!(!set.remove(65));
        assert_eq!(set.words.len(), 1, "high words are trimmed");
        assert_eq!(set.iter().collect::<Vec<_>>(), vec![5]);
    }
}
