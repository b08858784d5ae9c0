//! `SubscriptionTrie`: this shard's subscriptions, topic filter -> the sessions subscribed with their
//! options and v5 subscription identifier. A session holds at most one subscription per filter: a second
//! SUBSCRIBE to the same filter replaces it [MQTT-3.8.4-3].
//!
//! Shared subscriptions `$share/{group}/{filter}` live under the inner filter's node as groups, each a
//! member list with a round-robin cursor and the count of its connected members (what this shard last told
//! the others, see `shared`). They are not visited by `for_each_match` (a group gets a message once, from
//! `pick_shared_member`, not once per member).

use smallvec::SmallVec;

use super::session::SessionKey;
use super::trie::{FilterMap, TrieValue};
use crate::protocol::topic::parse_shared_subscription;
use crate::protocol::{ByteStr, SubscriptionOptions};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subscriber {
    pub session: SessionKey,
    pub options: SubscriptionOptions,
    /// v5 Subscription Identifier; 0 = none.
    pub subscription_id: u32,
}

type SubscriberList = SmallVec<[Subscriber; 1]>;

#[derive(Default, Debug)]
pub struct FilterSubscribers {
    subscribers: SubscriberList,
    /// Shared-subscription groups of this filter; boxed because most filters have none (8 bytes here
    /// instead of a `Vec`'s 24, in every filter's entry).
    #[allow(clippy::box_collection)]
    groups: Option<Box<Vec<SharedGroup>>>,
}

/// The members of one shared-subscription group on this shard.
#[derive(Debug)]
struct SharedGroup {
    /// The whole `$share/{group}/{filter}`.
    share: ByteStr,
    members: SubscriberList,
    /// Round-robin position.
    next: usize,
    /// Members with a connection, as last counted by `recount_shared_members`.
    connected: u32,
}

impl TrieValue for FilterSubscribers {
    fn is_empty(&self) -> bool {
        self.subscribers.is_empty() && self.groups.is_none()
    }
}

impl FilterSubscribers {
    /// The list `share` names here: the plain subscribers, or the members of that shared group.
    fn list_mut(&mut self, share: Option<&ByteStr>) -> Option<&mut SubscriberList> {
        match share {
            None => Some(&mut self.subscribers),
            Some(share) => self.groups_mut().find(|group| group.share == *share).map(|group| &mut group.members),
        }
    }

    /// Like `list_mut`, creating the shared group if needed.
    fn list_or_create(&mut self, share: Option<&ByteStr>) -> &mut SubscriberList {
        let Some(share) = share else { return &mut self.subscribers };
        let groups = self.groups.get_or_insert_with(Box::default);
        let index = match groups.iter().position(|group| group.share == *share) {
            Some(index) => index,
            None => {
                groups.push(SharedGroup { share: share.clone(), members: SmallVec::new(), next: 0, connected: 0 });
                groups.len() - 1
            }
        };
        &mut groups[index].members
    }

    fn groups(&self) -> impl Iterator<Item = &SharedGroup> {
        self.groups.iter().flat_map(|groups| groups.iter())
    }

    fn groups_mut(&mut self) -> impl Iterator<Item = &mut SharedGroup> {
        self.groups.iter_mut().flat_map(|groups| groups.iter_mut())
    }

    fn drop_empty_groups(&mut self) {
        if let Some(groups) = &mut self.groups {
            groups.retain(|group| !group.members.is_empty());
            if groups.is_empty() {
                self.groups = None;
            }
        }
    }
}

/// How many members a shared group has on this shard, and how many of them are connected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SharedGroupSize {
    pub members: usize,
    pub connected: u32,
}

/// What `SubscriptionTrie::subscribe` changed.
#[derive(Debug, PartialEq, Eq)]
pub struct SubscribeOutcome {
    /// The session had no subscription to this filter before (Retain Handling 1 sends retained only then).
    pub new_subscription: bool,
    /// The filter (or shared group) had no subscriber on this shard before: other shards must learn of it.
    pub first_on_shard: bool,
}

#[derive(Default)]
pub struct SubscriptionTrie {
    filters: FilterMap<FilterSubscribers>,
}

/// The trie key of a filter and, for `$share/{group}/{filter}`, the share it belongs to.
fn split_share(filter: &ByteStr) -> (&str, Option<&ByteStr>) {
    match parse_shared_subscription(filter) {
        Ok(Some(shared)) => (shared.filter, Some(filter)),
        _ => (filter.as_str(), None),
    }
}

impl SubscriptionTrie {
    pub fn subscribe(&mut self, filter: &ByteStr, subscriber: Subscriber) -> SubscribeOutcome {
        let (key, share) = split_share(filter);
        let list = self.filters.value_or_default(key).list_or_create(share);
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
    /// filter's (or shared group's) last subscriber on this shard.
    pub fn unsubscribe(&mut self, filter: &ByteStr, session: SessionKey) -> Option<bool> {
        let (key, share) = split_share(filter);
        let value = self.filters.value_mut(key)?;
        let list = value.list_mut(share)?;
        let index = list.iter().position(|existing| existing.session == session)?;
        list.swap_remove(index);
        let last = list.is_empty();
        value.drop_empty_groups();
        self.filters.remove_if_empty(key);
        Some(last)
    }

    /// Visits every plain (not shared) subscription whose filter matches the topic name.
    pub fn for_each_match(&self, topic: &str, mut visit: impl FnMut(&Subscriber)) {
        self.filters.for_each_match(topic, |value| value.subscribers.iter().for_each(&mut visit));
    }

    /// Visits the share name of every local shared group whose filter matches the topic name.
    pub fn for_each_shared_match(&self, topic: &str, mut visit: impl FnMut(&ByteStr)) {
        self.filters.for_each_match(topic, |value| value.groups().for_each(|group| visit(&group.share)));
    }

    /// The local group `share`: its members here and how many of them were connected when last counted;
    /// `None` if it has no member here.
    pub fn shared_group_size(&self, share: &ByteStr) -> Option<SharedGroupSize> {
        let (key, _) = split_share(share);
        let group = self.filters.value(key)?.groups().find(|group| group.share == *share)?;
        Some(SharedGroupSize { members: group.members.len(), connected: group.connected })
    }

    /// Counts again the members of the local group `share` for which `connected` is true; returns the new
    /// count when it changed (other shards must learn it), `None` when it did not or the group is gone.
    pub fn recount_shared_members(&mut self, share: &ByteStr, connected: impl Fn(SessionKey) -> bool) -> Option<u32> {
        let (key, _) = split_share(share);
        let group = self.filters.value_mut(key)?.groups_mut().find(|group| group.share == *share)?;
        let count = group.members.iter().filter(|member| connected(member.session)).count();
        let count = u32::try_from(count).unwrap_or(u32::MAX);
        (count != group.connected).then(|| {
            group.connected = count;
            count
        })
    }

    /// The next member of the shared group `share` in round-robin order, preferring members for which
    /// `preferred` is true (connected ones); `None` if the group has no member here.
    pub fn pick_shared_member(
        &mut self,
        share: &ByteStr,
        preferred: impl Fn(SessionKey) -> bool,
    ) -> Option<Subscriber> {
        let (key, _) = split_share(share);
        let group = self.filters.value_mut(key)?.groups_mut().find(|group| group.share == *share)?;
        let count = group.members.len();
        let start = group.next;
        let offset = (0..count).find(|offset| preferred(group.members[(start + offset) % count].session)).unwrap_or(0);
        let chosen = (start + offset) % count;
        group.next = (chosen + 1) % count;
        Some(group.members[chosen])
    }

    /// Filters without wildcards plus wildcard trie nodes (the root included).
    pub fn node_count(&self) -> usize {
        self.filters.entry_count()
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
        let first = trie.subscribe(&"a/+".into(), subscriber(1, QoS::AtMostOnce));
        assert_eq!(first, SubscribeOutcome { new_subscription: true, first_on_shard: true });
        let again = trie.subscribe(&"a/+".into(), subscriber(1, QoS::ExactlyOnce));
        assert_eq!(again, SubscribeOutcome { new_subscription: false, first_on_shard: false });
        let other = trie.subscribe(&"a/+".into(), subscriber(2, QoS::AtMostOnce));
        assert_eq!(other, SubscribeOutcome { new_subscription: true, first_on_shard: false });
        let mut seen = Vec::new();
        trie.for_each_match("a/b", |found| seen.push((found.session.0, found.options.qos)));
        seen.sort();
        assert_eq!(seen, vec![(1, QoS::ExactlyOnce), (2, QoS::AtMostOnce)]);
    }

    #[test]
    fn unsubscribe_reports_last_subscriber_and_prunes() {
        let mut trie = SubscriptionTrie::default();
        trie.subscribe(&"x/y".into(), subscriber(1, QoS::AtMostOnce));
        trie.subscribe(&"x/y".into(), subscriber(2, QoS::AtMostOnce));
        assert_eq!(trie.unsubscribe(&"x/y".into(), SessionKey(3)), None);
        assert_eq!(trie.unsubscribe(&"x/y".into(), SessionKey(1)), Some(false));
        assert_eq!(trie.unsubscribe(&"x/y".into(), SessionKey(2)), Some(true));
        assert_eq!(trie.unsubscribe(&"x/y".into(), SessionKey(2)), None);
        assert_eq!(trie.node_count(), 1, "only the wildcard trie's root remains");
    }

    #[test]
    fn shared_group_members_picked_round_robin_preferring_connected() {
        let mut trie = SubscriptionTrie::default();
        let share: ByteStr = "$share/g/s/+".into();
        for session in 1..=3 {
            let outcome = trie.subscribe(&share, subscriber(session, QoS::AtMostOnce));
            assert_eq!(outcome.first_on_shard, session == 1);
        }
        let mut plain = Vec::new();
        trie.for_each_match("s/t", |found| plain.push(found.session));
        assert!(plain.is_empty(), "group members are not plain subscribers");
        let mut shares = Vec::new();
        trie.for_each_shared_match("s/t", |found| shares.push(found.to_string()));
        assert_eq!(shares, vec!["$share/g/s/+"]);
        let picks: Vec<u32> =
            (0..4).filter_map(|_| trie.pick_shared_member(&share, |_| true)).map(|s| s.session.0).collect();
        assert_eq!(picks, vec![1, 2, 3, 1]);
        let connected_only: Vec<u32> = (0..3)
            .filter_map(|_| trie.pick_shared_member(&share, |session| session.0 == 2))
            .map(|s| s.session.0)
            .collect();
        assert_eq!(connected_only, vec![2, 2, 2]);
        assert_eq!(trie.recount_shared_members(&share, |session| session.0 != 3), Some(2));
        assert_eq!(trie.recount_shared_members(&share, |session| session.0 != 1), None, "still two");
        assert_eq!(trie.shared_group_size(&share), Some(SharedGroupSize { members: 3, connected: 2 }));
        assert_eq!(trie.unsubscribe(&share, SessionKey(1)), Some(false));
        assert_eq!(trie.unsubscribe(&share, SessionKey(2)), Some(false));
        assert_eq!(trie.unsubscribe(&share, SessionKey(3)), Some(true));
        assert_eq!(trie.pick_shared_member(&share, |_| true), None);
        assert_eq!(trie.node_count(), 1, "only the wildcard trie's root remains");
    }
}
