//! Shared subscriptions across shards (v5 section 4.8.2, also for 3.1.1 clients): each matching group gets
//! a message once, and which shard's member gets it follows `[mqtt] shared_subscription_strategy`.
//!
//! Every shard keeps the count of each local group's connected members and tells the other shards when it
//! changes (`MeshMessage::ShareMembers`, after the group's `InterestAdded`). The publishing shard picks the
//! shard from those counts (weighted round robin: each connected member anywhere gets a turn), the chosen
//! shard picks the member (its own round robin), so a message takes at most one mesh hop. Connected
//! members are preferred over members that are offline with a kept session; when no member is connected
//! anywhere, a local member's session queues it, else a shard holding members does.

use std::sync::Arc;
use std::time::Instant;

use smallvec::SmallVec;

use super::core::ShardCore;
use super::interest::{GroupInterest, ShardSet};
use super::message::{Action, MeshMessage, Message, ShardId};
use super::session::SessionKey;
use super::settings::SharedSubscriptionStrategy;
use super::subscriptions::SharedGroupSize;
use crate::protocol::topic::parse_shared_subscription;
use crate::protocol::ByteStr;

/// What the replicated interest says about one shared group matching a message: the other shards with
/// members, their connected members, and this message's turn in the group's rotation.
#[derive(Debug)]
pub struct RemoteGroup {
    share: ByteStr,
    shards: ShardSet,
    connected: SmallVec<[(ShardId, u32); 2]>,
    turn: u32,
}

impl RemoteGroup {
    /// Takes the group's next turn.
    pub fn of(group: &GroupInterest) -> Self {
        RemoteGroup {
            share: group.share.clone(),
            shards: group.shards.clone(),
            connected: SmallVec::from_slice(group.connected()),
            turn: group.next_turn(),
        }
    }
}

/// The shard whose member gets one message of a group; `None` when the group has no member anywhere.
/// `local` is the group on shard `here` (if it has members there), `remote` what other shards announced.
fn choose_shard(
    strategy: SharedSubscriptionStrategy,
    here: ShardId,
    local: Option<SharedGroupSize>,
    remote: Option<&RemoteGroup>,
) -> Option<ShardId> {
    let local_connected = local.map_or(0, |size| size.connected);
    if strategy == SharedSubscriptionStrategy::Local && local_connected > 0 {
        return Some(here);
    }
    let Some(remote) = remote else { return local.map(|_| here) };
    let mut weights: SmallVec<[(ShardId, u32); 4]> = SmallVec::new();
    if local_connected > 0 {
        weights.push((here, local_connected));
    }
    weights.extend(remote.connected.iter().copied().filter(|&(shard, count)| shard != here && count > 0));
    let total: u64 = weights.iter().map(|&(_, count)| u64::from(count)).sum();
    if total > 0 {
        let mut position = u64::from(remote.turn) % total;
        for &(shard, count) in &weights {
            if position < u64::from(count) {
                return Some(shard);
            }
            position -= u64::from(count);
        }
    }
    // Nobody connected (or the counts are still on their way): a kept session here queues it first.
    if local.is_some() {
        return Some(here);
    }
    let holders: SmallVec<[ShardId; 4]> = remote.shards.iter().filter(|&shard| shard != here).collect();
    (!holders.is_empty()).then(|| holders[remote.turn as usize % holders.len()])
}

impl ShardCore {
    /// Each matching shared group gets the message once: delivered here or sent to the one shard chosen by
    /// `choose_shard`. Returns whether any group took it.
    pub(super) fn route_to_shared_groups(
        &mut self,
        message: &Arc<Message>,
        remote: SmallVec<[RemoteGroup; 2]>,
        now: Instant,
    ) -> bool {
        let mut shares: SmallVec<[ByteStr; 2]> = SmallVec::new();
        self.subscriptions.for_each_shared_match(&message.topic, |share| shares.push(share.clone()));
        shares.extend(remote.iter().map(|group| group.share.clone()));
        shares.sort_unstable();
        shares.dedup();
        let strategy = self.settings.shared_subscription_strategy;
        let mut routed = false;
        for share in shares {
            let local = self.subscriptions.shared_group_size(&share);
            let remote = remote.iter().find(|group| group.share == share);
            match choose_shard(strategy, self.shard, local, remote) {
                Some(shard) if shard == self.shard => self.deliver_to_share_member(message, &share, now),
                Some(to) => {
                    let msg = MeshMessage::SharedPublish { message: Arc::clone(message), share };
                    self.actions.push_back(Action::Mesh { to, msg });
                }
                None => continue,
            }
            routed = true;
        }
        routed
    }

    /// Delivers to one member of the local shared group `share`, a connected one if any (a group whose
    /// members are all offline queues QoS 1/2 in the chosen member's session).
    pub(super) fn deliver_to_share_member(&mut self, message: &Arc<Message>, share: &ByteStr, now: Instant) {
        if message.is_expired(now) {
            self.stats.dropped_expired += 1;
            return;
        }
        let sessions = &self.sessions;
        let connected = |key: SessionKey| sessions.get(key).is_some_and(|session| session.conn.is_some());
        let Some(member) = self.subscriptions.pick_shared_member(share, connected) else {
            self.stats.dropped_no_share_member += 1;
            return;
        };
        if let Some(delivery) = self.delivery_for(&[member], message) {
            self.deliver_to_session(member.session, delivery, now);
        }
    }

    /// Counts the connected members of the local group `share` again and tells the other shards when the
    /// count changed. Called after a member joins or leaves, or its session gains or loses its connection.
    pub(super) fn recount_share(&mut self, share: &ByteStr) {
        let sessions = &self.sessions;
        let connected = |key: SessionKey| sessions.get(key).is_some_and(|session| session.conn.is_some());
        if let Some(count) = self.subscriptions.recount_shared_members(share, connected) {
            self.broadcast(|| MeshMessage::ShareMembers { share: share.clone(), connected: count });
        }
    }

    /// `recount_share` for every shared group the session is a member of (it connected or disconnected).
    pub(super) fn recount_session_shares(&mut self, key: SessionKey) {
        let shared_count = self.sessions.get(key).map_or(0, |session| session.filters.len());
        for index in 0..shared_count {
            let Some(filter) = self.sessions.get(key).and_then(|session| session.filters.get(index)).cloned() else {
                return;
            };
            if matches!(parse_shared_subscription(&filter), Ok(Some(_))) {
                self.recount_share(&filter);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use SharedSubscriptionStrategy::{Local, RoundRobin};

    fn remote(shards: &[ShardId], connected: &[(ShardId, u32)], turn: u32) -> RemoteGroup {
        let mut set = ShardSet::default();
        shards.iter().for_each(|&shard| {
            set.insert(shard);
        });
        RemoteGroup { share: "$share/g/t".into(), shards: set, connected: SmallVec::from_slice(connected), turn }
    }

    fn size(members: usize, connected: u32) -> Option<SharedGroupSize> {
        Some(SharedGroupSize { members, connected })
    }

    fn picks(
        strategy: SharedSubscriptionStrategy,
        local: Option<SharedGroupSize>,
        shards: &[ShardId],
        connected: &[(ShardId, u32)],
    ) -> Vec<Option<ShardId>> {
        (0..6).map(|turn| choose_shard(strategy, 0, local, Some(&remote(shards, connected, turn)))).collect()
    }

    #[test]
    fn round_robin_weighs_each_shard_by_its_connected_members() {
        let shares = picks(RoundRobin, size(1, 1), &[1, 2], &[(1, 2), (2, 0)]);
        assert_eq!(shares, vec![Some(0), Some(1), Some(1), Some(0), Some(1), Some(1)]);
        assert_eq!(
            picks(RoundRobin, None, &[1, 2], &[(1, 1), (2, 1)]),
            vec![Some(1), Some(2), Some(1), Some(2), Some(1), Some(2)]
        );
    }

    #[test]
    fn local_strategy_keeps_messages_here_while_a_member_here_is_connected() {
        assert_eq!(picks(Local, size(1, 1), &[1], &[(1, 5)]), vec![Some(0); 6]);
        assert_eq!(
            picks(Local, size(1, 0), &[1], &[(1, 5)]),
            vec![Some(1); 6],
            "offline here: a connected one elsewhere"
        );
    }

    #[test]
    fn connected_members_anywhere_come_before_offline_ones_here() {
        assert_eq!(picks(RoundRobin, size(2, 0), &[1], &[(1, 1)]), vec![Some(1); 6]);
        assert_eq!(picks(RoundRobin, size(2, 0), &[1], &[]), vec![Some(0); 6], "nobody connected: queued here");
        assert_eq!(picks(RoundRobin, None, &[1, 2], &[]), vec![Some(1), Some(2), Some(1), Some(2), Some(1), Some(2)]);
    }

    #[test]
    fn a_group_without_members_anywhere_gets_nothing_and_a_local_only_group_stays_here() {
        assert_eq!(choose_shard(RoundRobin, 0, None, None), None);
        assert_eq!(choose_shard(RoundRobin, 0, size(1, 0), None), Some(0));
        assert_eq!(choose_shard(RoundRobin, 0, None, Some(&remote(&[], &[], 3))), None);
    }
}
