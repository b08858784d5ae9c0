//! Messages from other shards: interest changes update the replicated interest trie; publishes are fanned
//! out to this shard's subscribers (shared publishes to one member of their group); retained messages update this shard's replica of the retained store.

use std::time::Instant;

use super::core::ShardCore;
use super::message::{Action, MeshMessage, ShardId};

impl ShardCore {
    pub(super) fn apply_mesh(&mut self, from: ShardId, msg: MeshMessage, now: Instant) {
        match msg {
            MeshMessage::InterestAdded { filter, seq } => {
                self.interest.add(&filter, from);
                self.actions.push_back(Action::Mesh { to: from, msg: MeshMessage::InterestAck { seq } });
            }
            MeshMessage::InterestAck { seq } => self.interest_acknowledged(from, seq, now),
            MeshMessage::InterestRemoved { filter } => self.interest.remove(&filter, from),
            MeshMessage::ShareMembers { share, connected } => {
                self.interest.set_shared_connected(&share, from, connected)
            }
            MeshMessage::Publish(message) => {
                self.deliver_local(&message, now);
            }
            MeshMessage::SharedPublish { message, share } => {
                self.deliver_to_share_member(&message, &share, now);
                self.offline_copy = None;
            }
            MeshMessage::DurableBarrier { seq } => self.durable_barrier(from, seq, now),
            MeshMessage::DurableAck { seq } => self.durable_ack(from, seq, now),
            MeshMessage::Retain { message, deliver } => {
                self.apply_retained(&message);
                // A routed retained message goes to whoever matches here now, whether or not the sender knew
                // of our interest: a SUBSCRIBE whose interest was still on its way looked up the replica
                // before this arrived, so it would otherwise miss the message (seen with
                // $SYS/broker/version, published once). Only a delete by the HTTP API is not delivered.
                if deliver {
                    self.deliver_local(&message, now);
                }
            }
            MeshMessage::KickUsernames(usernames) => self.kick_usernames(&usernames, now),
        }
    }
}
