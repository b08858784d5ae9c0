//! `TopicTrie<V>`: a trie over topic levels whose nodes live in one arena (`Vec` + indices + free list).
//!
//! Keyed by topic *filters* (local subscriptions, shard interest): `for_each_match(topic_name)` visits the
//! value of every filter that matches a published topic. (Retained messages, keyed by topic names, live in
//! a flat table: `retain.rs`.)
//!
//! `+` and `#` children sit in their own slots beside the map of literal children. Topics starting with `$`
//! are not matched by a wildcard in the first level [MQTT-4.7.2-1].
//!
//! `FilterMap<V>` puts a trie beside one hash map for the filters without wildcards, which match exactly
//! one topic: a device's `devices/{id}/cmd` then costs one map entry instead of trie nodes with a map of
//! children each, and a publish finds it with one lookup.

use ahash::{AHashMap, RandomState};
use hashbrown::HashTable;
use smallvec::SmallVec;

/// Index of a node in the arena.
pub type NodeIdx = u32;

const NO_NODE: NodeIdx = NodeIdx::MAX;
const ROOT: NodeIdx = 0;

/// A value stored at a trie node. Nodes whose value is empty and that have no children are freed.
pub trait TrieValue: Default {
    fn is_empty(&self) -> bool;
}

impl<T> TrieValue for Option<T> {
    fn is_empty(&self) -> bool {
        self.is_none()
    }
}

struct Node<V> {
    parent: NodeIdx,
    /// This node's level in its parent (`+` / `#` for the wildcard slots).
    level: Box<str>,
    children: AHashMap<Box<str>, NodeIdx>,
    plus: NodeIdx,
    hash: NodeIdx,
    value: V,
}

impl<V: TrieValue> Node<V> {
    fn new(parent: NodeIdx, level: &str) -> Self {
        Node {
            parent,
            level: level.into(),
            children: AHashMap::new(),
            plus: NO_NODE,
            hash: NO_NODE,
            value: V::default(),
        }
    }

    fn is_leaf(&self) -> bool {
        self.children.is_empty() && self.plus == NO_NODE && self.hash == NO_NODE
    }
}

pub struct TopicTrie<V> {
    nodes: Vec<Node<V>>,
    free: Vec<NodeIdx>,
}

impl<V: TrieValue> Default for TopicTrie<V> {
    fn default() -> Self {
        TopicTrie { nodes: vec![Node::new(NO_NODE, "")], free: Vec::new() }
    }
}

type LevelStack<'a> = SmallVec<[&'a str; 8]>;

impl<V: TrieValue> TopicTrie<V> {
    /// The node for `key` (a filter or a topic name), created with an empty value if missing.
    pub fn entry(&mut self, key: &str) -> NodeIdx {
        let mut node = ROOT;
        for level in key.split('/') {
            node = match self.child(node, level) {
                Some(child) => child,
                None => self.add_child(node, level),
            };
        }
        node
    }

    /// The node for exactly `key`, if present.
    pub fn find(&self, key: &str) -> Option<NodeIdx> {
        key.split('/').try_fold(ROOT, |node, level| self.child(node, level))
    }

    pub fn value(&self, node: NodeIdx) -> &V {
        &self.nodes[node as usize].value
    }

    pub fn value_mut(&mut self, node: NodeIdx) -> &mut V {
        &mut self.nodes[node as usize].value
    }

    /// Frees `node` and its ancestors for as long as they hold nothing.
    pub fn prune(&mut self, mut node: NodeIdx) {
        while node != ROOT && self.nodes[node as usize].is_leaf() && self.nodes[node as usize].value.is_empty() {
            let parent = self.nodes[node as usize].parent;
            let level = std::mem::take(&mut self.nodes[node as usize].level);
            let parent_node = &mut self.nodes[parent as usize];
            match &*level {
                "+" => parent_node.plus = NO_NODE,
                "#" => parent_node.hash = NO_NODE,
                _ => {
                    parent_node.children.remove(&level);
                }
            }
            self.nodes[node as usize] = Node::new(NO_NODE, "");
            self.free.push(node);
            node = parent;
        }
    }

    /// Live nodes, the root included (for tests and memory accounting).
    pub fn node_count(&self) -> usize {
        self.nodes.len() - self.free.len()
    }

    /// Visits the value of every stored filter that matches the topic name `topic`.
    pub fn for_each_match(&self, topic: &str, mut visit: impl FnMut(&V)) {
        let levels: LevelStack = topic.split('/').collect();
        let dollar = topic.starts_with('$');
        let mut stack: SmallVec<[(NodeIdx, usize); 16]> = SmallVec::new();
        stack.push((ROOT, 0));
        while let Some((idx, depth)) = stack.pop() {
            let node = &self.nodes[idx as usize];
            let wildcards_allowed = !(depth == 0 && dollar);
            if wildcards_allowed && node.hash != NO_NODE {
                // "a/#" matches "a" as well as everything below it (section 4.7.1.2).
                visit(&self.nodes[node.hash as usize].value);
            }
            let Some(level) = levels.get(depth) else {
                visit(&node.value);
                continue;
            };
            if let Some(&child) = node.children.get(*level) {
                stack.push((child, depth + 1));
            }
            if wildcards_allowed && node.plus != NO_NODE {
                stack.push((node.plus, depth + 1));
            }
        }
    }

    fn child(&self, node: NodeIdx, level: &str) -> Option<NodeIdx> {
        let node = &self.nodes[node as usize];
        let child = match level {
            "+" => node.plus,
            "#" => node.hash,
            _ => return node.children.get(level).copied(),
        };
        (child != NO_NODE).then_some(child)
    }

    fn add_child(&mut self, parent: NodeIdx, level: &str) -> NodeIdx {
        let fresh = Node::new(parent, level);
        let idx = match self.free.pop() {
            Some(idx) => {
                self.nodes[idx as usize] = fresh;
                idx
            }
            None => {
                self.nodes.push(fresh);
                NodeIdx::try_from(self.nodes.len() - 1).expect("trie arena exceeds u32 nodes")
            }
        };
        let parent_node = &mut self.nodes[parent as usize];
        match level {
            "+" => parent_node.plus = idx,
            "#" => parent_node.hash = idx,
            _ => {
                parent_node.children.insert(level.into(), idx);
            }
        }
        idx
    }
}

/// Topic filters and their values: filters without wildcards by exact topic in one map, the others in a
/// `TopicTrie`.
pub struct FilterMap<V> {
    exact: ExactFilters<V>,
    wildcard: TopicTrie<V>,
}

impl<V: TrieValue> Default for FilterMap<V> {
    fn default() -> Self {
        FilterMap { exact: ExactFilters::default(), wildcard: TopicTrie::default() }
    }
}

/// Filters without wildcards: the entries in a dense `Vec`, found through a hash table of entry indices.
/// A table bucket is then 4 bytes, so the table's empty part (up to half of it after it doubles) costs
/// little.
struct ExactFilters<V> {
    index: HashTable<u32>,
    entries: Vec<ExactFilter<V>>,
    hasher: RandomState,
}

struct ExactFilter<V> {
    filter: Box<str>,
    value: V,
}

impl<V> Default for ExactFilters<V> {
    fn default() -> Self {
        ExactFilters { index: HashTable::new(), entries: Vec::new(), hasher: RandomState::new() }
    }
}

impl<V: TrieValue> ExactFilters<V> {
    fn position(&self, filter: &str) -> Option<usize> {
        let hash = self.hasher.hash_one(filter);
        let found = self.index.find(hash, |&index| &*self.entries[index as usize].filter == filter)?;
        Some(*found as usize)
    }

    fn get(&self, filter: &str) -> Option<&V> {
        self.position(filter).map(|index| &self.entries[index].value)
    }

    fn get_mut(&mut self, filter: &str) -> Option<&mut V> {
        let index = self.position(filter)?;
        Some(&mut self.entries[index].value)
    }

    fn get_or_default(&mut self, filter: &str) -> &mut V {
        let index = match self.position(filter) {
            Some(index) => index,
            None => {
                let index = self.entries.len();
                let hash = self.hasher.hash_one(filter);
                self.entries.push(ExactFilter { filter: filter.into(), value: V::default() });
                let (entries, hasher) = (&self.entries, &self.hasher);
                let slot = u32::try_from(index).expect("more than u32::MAX exact filters");
                self.index.insert_unique(hash, slot, |&index| hasher.hash_one(&*entries[index as usize].filter));
                index
            }
        };
        &mut self.entries[index].value
    }

    fn remove(&mut self, filter: &str) {
        let hash = self.hasher.hash_one(filter);
        let entries = &self.entries;
        let Ok(found) = self.index.find_entry(hash, |&index| &*entries[index as usize].filter == filter) else {
            return;
        };
        let index = found.remove().0 as usize;
        let last = self.entries.len() - 1;
        if index != last {
            // The last entry moves into the freed place; its index entry follows it.
            let moved_hash = self.hasher.hash_one(&*self.entries[last].filter);
            if let Some(moved) = self.index.find_mut(moved_hash, |&candidate| candidate as usize == last) {
                *moved = index as u32;
            }
        }
        self.entries.swap_remove(index);
    }

    fn len(&self) -> usize {
        self.entries.len()
    }
}

fn has_wildcard(filter: &str) -> bool {
    filter.contains(['+', '#'])
}

impl<V: TrieValue> FilterMap<V> {
    /// The value of `filter`, created empty if missing.
    pub fn value_or_default(&mut self, filter: &str) -> &mut V {
        if has_wildcard(filter) {
            let node = self.wildcard.entry(filter);
            return self.wildcard.value_mut(node);
        }
        self.exact.get_or_default(filter)
    }

    pub fn value(&self, filter: &str) -> Option<&V> {
        if has_wildcard(filter) {
            let node = self.wildcard.find(filter)?;
            return Some(self.wildcard.value(node));
        }
        self.exact.get(filter)
    }

    pub fn value_mut(&mut self, filter: &str) -> Option<&mut V> {
        if has_wildcard(filter) {
            let node = self.wildcard.find(filter)?;
            return Some(self.wildcard.value_mut(node));
        }
        self.exact.get_mut(filter)
    }

    /// Forgets `filter` if its value is empty (and frees the trie nodes that held only it).
    pub fn remove_if_empty(&mut self, filter: &str) {
        if has_wildcard(filter) {
            if let Some(node) = self.wildcard.find(filter) {
                self.wildcard.prune(node);
            }
        } else if self.exact.get(filter).is_some_and(V::is_empty) {
            self.exact.remove(filter);
        }
    }

    /// Visits the value of every filter that matches the topic name `topic`.
    pub fn for_each_match(&self, topic: &str, mut visit: impl FnMut(&V)) {
        if let Some(value) = self.exact.get(topic) {
            visit(value);
        }
        self.wildcard.for_each_match(topic, visit);
    }

    /// Filters without wildcards, plus the wildcard trie's live nodes (the root included).
    pub fn entry_count(&self) -> usize {
        self.exact.len() + self.wildcard.node_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter_trie(filters: &[&'static str]) -> TopicTrie<Option<&'static str>> {
        let mut trie = TopicTrie::default();
        for filter in filters {
            let node = trie.entry(filter);
            *trie.value_mut(node) = Some(*filter);
        }
        trie
    }

    fn matches(trie: &TopicTrie<Option<&'static str>>, topic: &str) -> Vec<&'static str> {
        let mut found = Vec::new();
        trie.for_each_match(topic, |value| found.extend(value.iter().copied()));
        found.sort();
        found
    }

    #[test]
    fn wildcards_match_per_mqtt_4_7() {
        let trie = filter_trie(&["sport/#", "sport/+", "sport/tennis/+", "+/+", "#", "sport/tennis", "+"]);
        assert_eq!(matches(&trie, "sport"), vec!["#", "+", "sport/#"]);
        assert_eq!(matches(&trie, "sport/tennis"), vec!["#", "+/+", "sport/#", "sport/+", "sport/tennis"]);
        assert_eq!(matches(&trie, "sport/tennis/player1"), vec!["#", "sport/#", "sport/tennis/+"]);
        assert_eq!(matches(&trie, "/finance"), vec!["#", "+/+"]);
        assert_eq!(matches(&trie, "sport/"), vec!["#", "+/+", "sport/#", "sport/+"]);
    }

    #[test]
    fn dollar_topics_not_matched_by_leading_wildcard_mqtt_4_7_2_1() {
        let trie = filter_trie(&["#", "+/monitor/Clients", "$SYS/#", "$SYS/monitor/+"]);
        assert_eq!(matches(&trie, "$SYS/monitor/Clients"), vec!["$SYS/#", "$SYS/monitor/+"]);
        assert_eq!(matches(&trie, "SYS/monitor/Clients"), vec!["#", "+/monitor/Clients"]);
    }

    #[test]
    fn prune_frees_empty_branches_and_reuses_slots() {
        let mut trie = filter_trie(&["a/b/c", "a/+"]);
        assert_eq!(trie.node_count(), 5);
        let leaf = trie.find("a/b/c").expect("stored");
        *trie.value_mut(leaf) = None;
        trie.prune(leaf);
        assert_eq!(trie.node_count(), 3, "a/b and a/b/c freed, a kept for a/+");
        assert!(trie.find("a/b").is_none());
        assert_eq!(matches(&trie, "a/x"), vec!["a/+"]);
        let before = trie.nodes.len();
        trie.entry("a/d/e");
        assert_eq!(trie.nodes.len(), before, "freed slots are reused");
    }

    #[test]
    fn exact_filters_stay_findable_when_others_are_removed() {
        let mut filters: FilterMap<Option<usize>> = FilterMap::default();
        let names: Vec<String> = (0..200).map(|id| format!("devices/{id}/cmd")).collect();
        for (id, name) in names.iter().enumerate() {
            *filters.value_or_default(name) = Some(id);
        }
        for name in names.iter().step_by(3) {
            *filters.value_mut(name).expect("stored") = None;
            filters.remove_if_empty(name);
        }
        for (id, name) in names.iter().enumerate() {
            let mut found = Vec::new();
            filters.for_each_match(name, |value| found.extend(*value));
            let expected = if id % 3 == 0 { vec![] } else { vec![id] };
            assert_eq!(found, expected, "{name}");
        }
        assert_eq!(filters.entry_count(), 133 + 1);
    }

    #[test]
    fn filter_map_matches_exact_and_wildcard_filters_and_forgets_empty_ones() {
        let mut filters: FilterMap<Option<&'static str>> = FilterMap::default();
        for filter in ["a/b", "a/+", "#", "$SYS/x", "a/b/c"] {
            *filters.value_or_default(filter) = Some(filter);
        }
        let matches = |filters: &FilterMap<Option<&'static str>>, topic: &str| {
            let mut found = Vec::new();
            filters.for_each_match(topic, |value| found.extend(value.iter().copied()));
            found.sort();
            found
        };
        assert_eq!(matches(&filters, "a/b"), vec!["#", "a/+", "a/b"]);
        assert_eq!(matches(&filters, "$SYS/x"), vec!["$SYS/x"], "an exact filter matches a $ topic, # does not");
        assert_eq!(filters.entry_count(), 3 + 4, "three exact filters; root, a, + under a, and # in the trie");
        *filters.value_mut("a/b").expect("stored") = None;
        filters.remove_if_empty("a/b");
        *filters.value_mut("a/+").expect("stored") = None;
        filters.remove_if_empty("a/+");
        assert_eq!(matches(&filters, "a/b"), vec!["#"]);
        assert!(filters.value_mut("a/b").is_none());
        assert_eq!(filters.entry_count(), 2 + 2, "a/b/c and $SYS/x; root and # in the trie");
    }
}
