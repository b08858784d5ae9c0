//! `InterestTrie`: the replicated map filter -> set of *other* shards that have at least one subscriber of
//! that filter. A shard tells every other shard when it gains its first or loses its last local subscriber
//! of a filter (`MeshMessage::InterestAdded` / `InterestRemoved`); a PUBLISH is then sent once to each
//! shard whose interest matches its topic, and that shard fans it out to its own subscribers.
//!
//! Shared subscriptions (`$share/{group}/{filter}`) are kept per group under the inner filter's node: a
//! message goes to one shard holding members of the group, not to all of them. Each shard also tells the
//! others how many of a group's members it has connected (`MeshMessage::ShareMembers`), so a publishing shard
//! can spread the group's messages in proportion (see `shared`).

use std::cell::Cell;

use smallvec::SmallVec;

use super::message::ShardId;
use super::trie::{FilterMap, TrieValue};
use crate::protocol::topic::parse_shared_subscription;
use crate::protocol::ByteStr;

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
        let Some(slot) = self.words.get_mut(word) else {
            return false;
        };
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

/// The shards interested in one filter: plain subscribers, and per shared-subscription group.
#[derive(Default, Debug)]
pub struct FilterInterest {
    shards: ShardSet,
    /// Shared-subscription groups of this filter; boxed because most filters have none (8 bytes here
    /// instead of a `Vec`'s 24, in every filter's entry).
    #[allow(clippy::box_collection)]
    groups: Option<Box<Vec<GroupInterest>>>,
}

/// The shards holding members of one shared-subscription group.
#[derive(Debug)]
pub struct GroupInterest {
    /// The whole `$share/{group}/{filter}` as subscribed; names the group across shards.
    pub share: ByteStr,
    /// Shards with members, connected or not.
    pub shards: ShardSet,
    /// Connected members per shard as last announced, ascending by shard; shards not listed have none.
    connected: SmallVec<[(ShardId, u32); 2]>,
    /// Messages this shard routed for the group so far: the position in its weighted rotation.
    turn: Cell<u32>,
}

impl GroupInterest {
    fn new(share: ByteStr) -> Self {
        GroupInterest { share, shards: ShardSet::default(), connected: SmallVec::new(), turn: Cell::new(0) }
    }

    /// Connected members per other shard, ascending by shard (only shards with at least one).
    pub fn connected(&self) -> &[(ShardId, u32)] {
        &self.connected
    }

    /// This message's position in the group's rotation (advances it).
    pub fn next_turn(&self) -> u32 {
        let turn = self.turn.get();
        self.turn.set(turn.wrapping_add(1));
        turn
    }

    fn set_connected(&mut self, shard: ShardId, count: u32) {
        let position = self.connected.binary_search_by_key(&shard, |&(known, _)| known);
        match (position, count) {
            (Ok(index), 0) => {
                self.connected.remove(index);
            }
            (Ok(index), count) => self.connected[index].1 = count,
            (Err(_), 0) => {}
            (Err(index), count) => self.connected.insert(index, (shard, count)),
        }
    }
}

impl TrieValue for FilterInterest {
    fn is_empty(&self) -> bool {
        self.shards.words.is_empty() && self.groups.is_none()
    }
}

#[derive(Default)]
pub struct InterestTrie {
    filters: FilterMap<FilterInterest>,
}

impl InterestTrie {
    /// Records that `shard` has subscribers of `filter` (plain or `$share/...`).
    pub fn add(&mut self, filter: &ByteStr, shard: ShardId) {
        match parse_shared_subscription(filter) {
            Ok(Some(shared)) => {
                let groups = self.filters.value_or_default(shared.filter).groups.get_or_insert_with(Box::default);
                let index = match groups.iter().position(|group| group.share == *filter) {
                    Some(index) => index,
                    None => {
                        groups.push(GroupInterest::new(filter.clone()));
                        groups.len() - 1
                    }
                };
                groups[index].shards.insert(shard);
            }
            _ => {
                self.filters.value_or_default(filter).shards.insert(shard);
            }
        }
    }

    /// Records that `shard` has no more subscribers of `filter`.
    pub fn remove(&mut self, filter: &ByteStr, shard: ShardId) {
        let shared = parse_shared_subscription(filter).ok().flatten();
        let key = shared.map_or(filter.as_str(), |shared| shared.filter);
        let Some(interest) = self.filters.value_mut(key) else {
            return;
        };
        if shared.is_some() {
            if let Some(groups) = &mut interest.groups {
                if let Some(index) = groups.iter().position(|group| group.share == *filter) {
                    groups[index].shards.remove(shard);
                    groups[index].set_connected(shard, 0);
                    if groups[index].shards.words.is_empty() {
                        groups.swap_remove(index);
                    }
                }
                if groups.is_empty() {
                    interest.groups = None;
                }
            }
        } else {
            interest.shards.remove(shard);
        }
        self.filters.remove_if_empty(key);
    }

    /// Records that `shard` has `count` connected members of the shared group `share` (ignored for a group
    /// the shard has not announced: `InterestAdded` always comes first on the same channel).
    pub fn set_shared_connected(&mut self, share: &ByteStr, shard: ShardId, count: u32) {
        let Ok(Some(shared)) = parse_shared_subscription(share) else { return };
        let Some(groups) = self.filters.value_mut(shared.filter).and_then(|interest| interest.groups.as_mut()) else {
            return;
        };
        if let Some(group) = groups.iter_mut().find(|group| group.share == *share && group.shards.contains(shard)) {
            group.set_connected(shard, count);
        }
    }

    /// Adds to `shards` every shard with a plain subscription matching `topic`, and calls `group` for every
    /// shared-subscription group matching it.
    pub fn matching(&self, topic: &str, shards: &mut ShardSet, mut group: impl FnMut(&GroupInterest)) {
        self.filters.for_each_match(topic, |interest| {
            shards.union_with(&interest.shards);
            interest.groups.iter().flat_map(|groups| groups.iter()).for_each(&mut group);
        });
    }

    /// Filters without wildcards plus wildcard trie nodes (the root included).
    pub fn node_count(&self) -> usize {
        self.filters.entry_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shards_for(interest: &InterestTrie, topic: &str) -> Vec<ShardId> {
        let mut shards = ShardSet::default();
        interest.matching(topic, &mut shards, |_| {});
        shards.iter().collect()
    }

    fn groups_for(interest: &InterestTrie, topic: &str) -> Vec<(String, Vec<ShardId>)> {
        let mut groups = Vec::new();
        interest.matching(topic, &mut ShardSet::default(), |group| {
            groups.push((group.share.to_string(), group.shards.iter().collect()))
        });
        groups.sort();
        groups
    }

    #[test]
    fn shared_groups_kept_apart_from_plain_interest() {
        let mut interest = InterestTrie::default();
        interest.add(&"$share/g/a/+".into(), 1);
        interest.add(&"$share/g/a/+".into(), 2);
        interest.add(&"$share/h/a/#".into(), 2);
        interest.add(&"a/b".into(), 3);
        assert_eq!(shards_for(&interest, "a/b"), vec![3]);
        assert_eq!(
            groups_for(&interest, "a/b"),
            vec![("$share/g/a/+".into(), vec![1, 2]), ("$share/h/a/#".into(), vec![2])]
        );
        interest.remove(&"$share/g/a/+".into(), 1);
        interest.remove(&"$share/h/a/#".into(), 2);
        assert_eq!(groups_for(&interest, "a/b"), vec![("$share/g/a/+".into(), vec![2])]);
        interest.remove(&"$share/g/a/+".into(), 2);
        interest.remove(&"a/b".into(), 3);
        assert_eq!(interest.node_count(), 1);
    }

    #[test]
    fn connected_member_counts_follow_announcements_and_leave_with_the_shard() {
        let mut interest = InterestTrie::default();
        let share: ByteStr = "$share/g/a/+".into();
        interest.set_shared_connected(&share, 1, 4);
        interest.add(&share, 1);
        interest.add(&share, 2);
        interest.set_shared_connected(&share, 2, 3);
        interest.set_shared_connected(&share, 1, 2);
        let connected = |interest: &InterestTrie| {
            let mut seen = Vec::new();
            interest.matching("a/b", &mut ShardSet::default(), |group| seen.extend_from_slice(group.connected()));
            seen
        };
        assert_eq!(connected(&interest), vec![(1, 2), (2, 3)], "the count sent before InterestAdded is ignored");
        interest.set_shared_connected(&share, 2, 0);
        assert_eq!(connected(&interest), vec![(1, 2)]);
        interest.remove(&share, 1);
        assert_eq!(connected(&interest), vec![]);
        let mut turns = Vec::new();
        interest
            .matching("a/b", &mut ShardSet::default(), |group| turns.extend([group.next_turn(), group.next_turn()]));
        assert_eq!(turns, vec![0, 1]);
    }

    #[test]
    fn matching_unions_shards_of_every_matching_filter() {
        let mut interest = InterestTrie::default();
        interest.add(&"a/+".into(), 1);
        interest.add(&"a/b".into(), 3);
        interest.add(&"#".into(), 70);
        assert_eq!(shards_for(&interest, "a/b"), vec![1, 3, 70]);
        assert_eq!(shards_for(&interest, "a/c"), vec![1, 70]);
        assert_eq!(shards_for(&interest, "$SYS/x"), Vec::<ShardId>::new());
    }

    #[test]
    fn removing_last_shard_prunes_the_filter() {
        let mut interest = InterestTrie::default();
        interest.add(&"a/b".into(), 1);
        interest.add(&"a/b".into(), 2);
        interest.remove(&"a/b".into(), 1);
        assert_eq!(shards_for(&interest, "a/b"), vec![2]);
        interest.remove(&"a/b".into(), 2);
        assert!(shards_for(&interest, "a/b").is_empty());
        assert_eq!(interest.node_count(), 1, "only the root remains");
        interest.remove(&"never/added".into(), 2);
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
