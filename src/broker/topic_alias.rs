//! Topic aliases of one connection (v5 section 3.3.2.3.4), both directions, allocated on first use.
//!
//! Client to server: the topic each alias stands for, set by a PUBLISH carrying both.
//!
//! Server to client: when the client announced a
//! Topic Alias Maximum, topics it receives often are sent once in full with an alias and afterwards as the
//! alias alone. Least recently used aliases are reassigned when all are taken. Created on first use and
//! dropped with the connection (aliases never carry over to another connection [MQTT-3.3.2-7]).

use ahash::AHashMap;

use super::owned::owned_str;
use crate::protocol::ByteStr;

#[derive(Debug)]
pub struct TopicAliases {
    /// Client-to-server: index = alias - 1.
    pub incoming: Vec<Option<ByteStr>>,
    pub outgoing: OutgoingAliases,
}

impl TopicAliases {
    pub fn new(outgoing_alias_max: u16) -> Self {
        TopicAliases { incoming: Vec::new(), outgoing: OutgoingAliases::new(outgoing_alias_max) }
    }
}

#[derive(Debug)]
pub struct OutgoingAliases {
    alias_max: u16,
    by_topic: AHashMap<ByteStr, u16>,
    /// Index = alias - 1: the topic and when it was last used.
    slots: Vec<(ByteStr, u64)>,
    clock: u64,
}

/// The alias a PUBLISH would use: `known` = the client already maps it, so the topic can be left out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AliasPlan {
    pub alias: u16,
    pub known: bool,
}

impl OutgoingAliases {
    pub fn new(alias_max: u16) -> Self {
        OutgoingAliases { alias_max, by_topic: AHashMap::new(), slots: Vec::new(), clock: 0 }
    }

    /// The alias for `topic` without changing anything (the PUBLISH may still be dropped).
    pub fn plan(&self, topic: &ByteStr) -> Option<AliasPlan> {
        if let Some(&alias) = self.by_topic.get(topic) {
            return Some(AliasPlan { alias, known: true });
        }
        if self.alias_max == 0 {
            return None;
        }
        let alias = if self.slots.len() < usize::from(self.alias_max) {
            self.slots.len() + 1
        } else {
            let (index, _) = self.slots.iter().enumerate().min_by_key(|(_, (_, used))| *used)?;
            index + 1
        };
        Some(AliasPlan { alias: u16::try_from(alias).ok()?, known: false })
    }

    /// Records that the PUBLISH planned by `plan` was sent.
    pub fn commit(&mut self, topic: &ByteStr, plan: AliasPlan) {
        self.clock += 1;
        let index = usize::from(plan.alias - 1);
        if plan.known {
            self.slots[index].1 = self.clock;
            return;
        }
        let topic = owned_str(topic);
        if index < self.slots.len() {
            let (old_topic, _) = std::mem::replace(&mut self.slots[index], (topic.clone(), self.clock));
            self.by_topic.remove(&old_topic);
        } else {
            self.slots.push((topic.clone(), self.clock));
        }
        self.by_topic.insert(topic, plan.alias);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send(aliases: &mut OutgoingAliases, topic: &str) -> AliasPlan {
        let topic = ByteStr::from(topic);
        let plan = aliases.plan(&topic).expect("aliases enabled");
        aliases.commit(&topic, plan);
        plan
    }

    #[test]
    fn first_use_sends_topic_then_alias_only_and_lru_is_reassigned() {
        let mut aliases = OutgoingAliases::new(2);
        assert_eq!(send(&mut aliases, "a"), AliasPlan { alias: 1, known: false });
        assert_eq!(send(&mut aliases, "a"), AliasPlan { alias: 1, known: true });
        assert_eq!(send(&mut aliases, "b"), AliasPlan { alias: 2, known: false });
        assert_eq!(send(&mut aliases, "a"), AliasPlan { alias: 1, known: true });
        assert_eq!(send(&mut aliases, "c"), AliasPlan { alias: 2, known: false }, "b was least recently used");
        assert_eq!(send(&mut aliases, "b"), AliasPlan { alias: 1, known: false });
        assert_eq!(send(&mut aliases, "c"), AliasPlan { alias: 2, known: true });
    }

    #[test]
    fn plan_without_commit_changes_nothing() {
        let aliases = OutgoingAliases::new(1);
        let topic = ByteStr::from("t");
        assert_eq!(aliases.plan(&topic), Some(AliasPlan { alias: 1, known: false }));
        assert_eq!(aliases.plan(&topic), Some(AliasPlan { alias: 1, known: false }));
        assert!(OutgoingAliases::new(0).plan(&topic).is_none());
    }
}
