//! `Rules`: the dynamic security file compiled for checks. Built once per change (cold path) and read by
//! every shard on every check (hot path), so a check is one hash lookup and a walk over one client's
//! ACLs, already in the order Mosquitto evaluates them:
//!
//! - the client's own roles, then its groups, each group's roles in turn; groups and roles by priority,
//!   highest first (ties by name), and within a role its ACLs by priority (ties by topic);
//! - for SUBSCRIBE / UNSUBSCRIBE, within each role its `*Literal` ACLs (the filter compared as a string)
//!   come before its `*Pattern` ACLs (the ACL filter must cover the whole subscribed filter);
//! - the first ACL that matches decides (`allow` true or false); none matching: `defaultACLAccess`.
//!
//! A client without a user name gets the roles of the anonymous group; a user name that is not a dynsec
//! client (authenticated some other way) gets only the defaults.

use ahash::AHashMap;

use super::file::{AclType, DefaultAccess, DynsecFile, RoleRef, PRIORITY_DEFAULT};
use crate::auth::password_file::PasswordHash;
use crate::protocol::topic::topic_matches;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;

/// One ACL, ready to match.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Rule {
    filter: Box<str>,
    /// `*Literal`: the subscribed filter must equal `filter`.
    literal: bool,
    allow: bool,
}

/// The ACLs that apply to one client (or to anonymous clients), per check, in evaluation order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AclLists {
    publish_send: Vec<Rule>,
    publish_receive: Vec<Rule>,
    subscribe: Vec<Rule>,
    unsubscribe: Vec<Rule>,
}

/// What authentication needs to know about one client.
#[derive(Clone, Debug)]
pub struct ClientRules {
    /// None: no (usable) password set, the client cannot log in.
    pub password: Option<PasswordHash>,
    pub clientid: Option<Box<str>>,
    pub disabled: bool,
    pub acls: AclLists,
}

/// The dynamic security rules at one moment.
#[derive(Debug, Default)]
pub struct Rules {
    clients: AHashMap<Box<str>, ClientRules>,
    anonymous: AclLists,
    defaults: DefaultAccess,
}

impl Rules {
    pub fn compile(file: &DynsecFile) -> Rules {
        let clients = file
            .clients
            .iter()
            .map(|client| {
                let mut roles: Vec<&RoleRef> = client.roles.iter().collect();
                sort_by_priority(&mut roles, |role| (role.priority, role.rolename.as_str()));
                let mut groups: Vec<(&str, Option<i64>)> = file
                    .groups_of(&client.username)
                    .map(|(group, priority)| (group.groupname.as_str(), priority))
                    .collect();
                sort_by_priority(&mut groups, |(name, priority)| (*priority, *name));
                let mut role_order: Vec<&str> = roles.iter().map(|role| role.rolename.as_str()).collect();
                for (groupname, _) in groups {
                    role_order.extend(group_roles(file, groupname));
                }
                let rules = ClientRules {
                    password: password_hash(client.password.as_deref(), client.salt.as_deref(), client.iterations),
                    clientid: client.clientid.as_deref().filter(|id| !id.is_empty()).map(Box::from),
                    disabled: client.disabled,
                    acls: AclLists::from_roles(file, &role_order),
                };
                (Box::from(client.username.as_str()), rules)
            })
            .collect();
        let anonymous = match &file.anonymous_group {
            Some(group) => AclLists::from_roles(file, &group_roles(file, group)),
            None => AclLists::default(),
        };
        Rules { clients, anonymous, defaults: file.default_access }
    }

    pub fn client(&self, username: &str) -> Option<&ClientRules> {
        self.clients.get(username)
    }

    fn acls(&self, username: Option<&str>) -> Option<&AclLists> {
        match username {
            None => Some(&self.anonymous),
            Some(username) => self.clients.get(username).map(|client| &client.acls),
        }
    }

    pub fn may_publish(&self, username: Option<&str>, topic: &str) -> bool {
        let rules = self.acls(username).map_or(&[][..], |acls| &acls.publish_send);
        decide(rules, |rule| topic_matches(&rule.filter, topic), self.defaults.publish_client_send)
    }

    pub fn may_receive(&self, username: Option<&str>, topic: &str) -> bool {
        let rules = self.acls(username).map_or(&[][..], |acls| &acls.publish_receive);
        decide(rules, |rule| topic_matches(&rule.filter, topic), self.defaults.publish_client_receive)
    }

    pub fn may_subscribe(&self, username: Option<&str>, filter: &str) -> bool {
        let rules = self.acls(username).map_or(&[][..], |acls| &acls.subscribe);
        decide(rules, |rule| subscription_matches(rule, filter), self.defaults.subscribe)
    }

    pub fn may_unsubscribe(&self, username: Option<&str>, filter: &str) -> bool {
        let rules = self.acls(username).map_or(&[][..], |acls| &acls.unsubscribe);
        decide(rules, |rule| subscription_matches(rule, filter), self.defaults.unsubscribe)
    }
}

fn decide(rules: &[Rule], matches: impl Fn(&Rule) -> bool, default: bool) -> bool {
    rules.iter().find(|rule| matches(rule)).map_or(default, |rule| rule.allow)
}

fn subscription_matches(rule: &Rule, filter: &str) -> bool {
    if rule.literal {
        &*rule.filter == filter
    } else {
        filter_covers(&rule.filter, filter)
    }
}

/// Whether every topic `filter` can match is matched by the ACL filter `acl`: `+` in the ACL covers one
/// level (also a `+` there), `#` covers the rest (also a `#`), a literal level covers only itself. A
/// filter starting with a wildcard covers no `$` topic [MQTT-4.7.2-1].
pub fn filter_covers(acl: &str, filter: &str) -> bool {
    if filter.starts_with('$') && acl.starts_with(['+', '#']) {
        return false;
    }
    let mut acl_levels = acl.split('/');
    let mut filter_levels = filter.split('/');
    loop {
        match (acl_levels.next(), filter_levels.next()) {
            (Some("#"), _) => return true,
            (Some(_), Some("#")) => return false,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(f)) if a == f && f != "+" => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

impl AclLists {
    /// The ACLs of these roles (already in order), each role's own ACLs sorted by priority.
    fn from_roles(file: &DynsecFile, role_order: &[&str]) -> AclLists {
        let mut lists = AclLists::default();
        for rolename in role_order {
            let Some(role) = file.role(rolename) else { continue };
            let mut acls: Vec<_> = role.acls.iter().collect();
            // An ACL without a priority is 0, as the plugin stores the ones `addRoleACL` makes.
            sort_by_priority(&mut acls, |acl| (Some(acl.priority.unwrap_or(0)), acl.topic.as_str()));
            let rules = |kind: AclType| {
                let literal = matches!(kind, AclType::SubscribeLiteral | AclType::UnsubscribeLiteral);
                acls.iter().filter(move |acl| acl.acltype == kind).map(move |acl| Rule {
                    filter: Box::from(acl.topic.as_str()),
                    literal,
                    allow: acl.allow,
                })
            };
            lists.publish_send.extend(rules(AclType::PublishClientSend));
            lists.publish_receive.extend(rules(AclType::PublishClientReceive));
            lists.subscribe.extend(rules(AclType::SubscribeLiteral));
            lists.subscribe.extend(rules(AclType::SubscribePattern));
            lists.unsubscribe.extend(rules(AclType::UnsubscribeLiteral));
            lists.unsubscribe.extend(rules(AclType::UnsubscribePattern));
        }
        lists
    }
}

/// The group's roles, by priority; none when the group does not exist.
fn group_roles<'a>(file: &'a DynsecFile, groupname: &str) -> Vec<&'a str> {
    let Some(group) = file.group(groupname) else { return Vec::new() };
    let mut roles: Vec<&RoleRef> = group.roles.iter().collect();
    sort_by_priority(&mut roles, |role| (role.priority, role.rolename.as_str()));
    roles.into_iter().map(|role| role.rolename.as_str()).collect()
}

/// Highest priority first (absent = -1), then by name.
fn sort_by_priority<T>(items: &mut [T], key: impl Fn(&T) -> (Option<i64>, &str)) {
    items.sort_by(|a, b| {
        let (priority_a, name_a) = key(a);
        let (priority_b, name_b) = key(b);
        let (priority_a, priority_b) = (priority_a.unwrap_or(PRIORITY_DEFAULT), priority_b.unwrap_or(PRIORITY_DEFAULT));
        priority_b.cmp(&priority_a).then_with(|| name_a.cmp(name_b))
    });
}

/// The stored PBKDF2-SHA512 hash; None when any part is missing or not base64 (the client cannot log in).
fn password_hash(password: Option<&str>, salt: Option<&str>, iterations: Option<u32>) -> Option<PasswordHash> {
    let hash = BASE64.decode(password?).ok()?;
    let salt = BASE64.decode(salt?).ok()?;
    let iterations =
        iterations.filter(|&count| (1..=crate::auth::password_file::PBKDF2_ITERATIONS_MAX).contains(&count))?;
    Some(PasswordHash::Pbkdf2Sha512 { iterations, salt, hash: hash.try_into().ok()? })
}

/// The file form of a new password: base64 hash, base64 salt, iterations (fresh 12-byte salt, 101
/// iterations, as `mosquitto_ctrl` does).
pub fn hash_password(password: &str) -> (String, String, u32) {
    match PasswordHash::new_pbkdf2(password.as_bytes()) {
        PasswordHash::Pbkdf2Sha512 { iterations, salt, hash } => (BASE64.encode(hash), BASE64.encode(salt), iterations),
        PasswordHash::Sha512 { .. } => unreachable!("new_pbkdf2 makes a PBKDF2 hash"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::dynsec::file::{AclEntry, ClientEntry, ClientRef, GroupEntry, RoleEntry};

    fn acl(acltype: AclType, topic: &str, priority: Option<i64>, allow: bool) -> AclEntry {
        AclEntry { acltype, topic: topic.into(), priority, allow }
    }

    fn role(name: &str, acls: Vec<AclEntry>) -> RoleEntry {
        RoleEntry { rolename: name.into(), acls, ..RoleEntry::default() }
    }

    fn role_ref(name: &str, priority: Option<i64>) -> RoleRef {
        RoleRef { rolename: name.into(), priority }
    }

    #[test]
    fn the_first_matching_acl_by_priority_decides() {
        let file = DynsecFile {
            clients: vec![ClientEntry { username: "u".into(), roles: vec![role_ref("r", None)], ..Default::default() }],
            roles: vec![role(
                "r",
                vec![
                    acl(AclType::PublishClientSend, "a/#", Some(1), true),
                    acl(AclType::PublishClientSend, "a/secret", Some(5), false),
                ],
            )],
            ..Default::default()
        };
        let rules = Rules::compile(&file);
        assert!(rules.may_publish(Some("u"), "a/b"));
        assert!(!rules.may_publish(Some("u"), "a/secret"), "the higher priority deny is checked first");
        assert!(!rules.may_publish(Some("u"), "b"), "no match: defaultACLAccess publishClientSend false");
        assert!(rules.may_receive(Some("u"), "b"), "no match: defaultACLAccess publishClientReceive true");
        assert!(!rules.may_publish(Some("nobody"), "a/b"), "unknown user: defaults only");
    }

    #[test]
    fn client_roles_come_before_group_roles_and_groups_by_priority() {
        let file = DynsecFile {
            clients: vec![ClientEntry {
                username: "u".into(),
                roles: vec![role_ref("own", None)],
                ..Default::default()
            }],
            groups: vec![
                GroupEntry {
                    groupname: "low".into(),
                    roles: vec![role_ref("allow-all", None)],
                    clients: vec![ClientRef { username: "u".into(), priority: Some(1) }],
                    ..Default::default()
                },
                GroupEntry {
                    groupname: "high".into(),
                    roles: vec![role_ref("deny-x", None)],
                    clients: vec![ClientRef { username: "u".into(), priority: Some(9) }],
                    ..Default::default()
                },
            ],
            roles: vec![
                role("own", vec![acl(AclType::PublishClientSend, "mine", None, true)]),
                role("allow-all", vec![acl(AclType::PublishClientSend, "#", None, true)]),
                role("deny-x", vec![acl(AclType::PublishClientSend, "x", None, false)]),
            ],
            ..Default::default()
        };
        let rules = Rules::compile(&file);
        assert!(rules.may_publish(Some("u"), "mine"));
        assert!(!rules.may_publish(Some("u"), "x"), "the priority 9 group is checked before the priority 1 one");
        assert!(rules.may_publish(Some("u"), "y"));
    }

    #[test]
    fn literal_subscribe_acls_compare_strings_and_patterns_cover_filters() {
        let file = DynsecFile {
            clients: vec![ClientEntry { username: "u".into(), roles: vec![role_ref("r", None)], ..Default::default() }],
            roles: vec![role(
                "r",
                vec![
                    acl(AclType::SubscribeLiteral, "a/#", None, false),
                    acl(AclType::SubscribePattern, "a/#", None, true),
                ],
            )],
            ..Default::default()
        };
        let rules = Rules::compile(&file);
        assert!(!rules.may_subscribe(Some("u"), "a/#"), "the literal deny matches the same string");
        assert!(rules.may_subscribe(Some("u"), "a/+/c"));
        assert!(!rules.may_subscribe(Some("u"), "#"), "a/# does not cover #");
        assert!(rules.may_unsubscribe(Some("u"), "anything"), "default unsubscribe true");
    }

    #[test]
    fn filter_cover_rules() {
        assert!(filter_covers("a/+", "a/b"));
        assert!(filter_covers("a/+", "a/+"));
        assert!(!filter_covers("a/b", "a/+"));
        assert!(!filter_covers("a/+", "a/#"));
        assert!(filter_covers("a/#", "a/#"));
        assert!(filter_covers("#", "a/+/#"));
        assert!(!filter_covers("#", "$SYS/x"), "[MQTT-4.7.2-1]");
        assert!(filter_covers("$SYS/#", "$SYS/x"));
    }

    #[test]
    fn anonymous_clients_get_the_anonymous_groups_roles() {
        let mut file = DynsecFile {
            groups: vec![GroupEntry {
                groupname: "anon".into(),
                roles: vec![role_ref("pub", None)],
                ..Default::default()
            }],
            roles: vec![role("pub", vec![acl(AclType::PublishClientSend, "public/#", None, true)])],
            ..Default::default()
        };
        assert!(!Rules::compile(&file).may_publish(None, "public/x"), "no anonymous group yet");
        file.anonymous_group = Some("anon".into());
        assert!(Rules::compile(&file).may_publish(None, "public/x"));
    }

    #[test]
    fn a_password_hashed_here_verifies_and_a_broken_one_is_no_password() {
        let (hash, salt, iterations) = hash_password("pw");
        let stored = password_hash(Some(&hash), Some(&salt), Some(iterations)).expect("valid");
        assert!(stored.verify(b"pw") && !stored.verify(b"pW"));
        assert!(password_hash(Some("!!"), Some(&salt), Some(iterations)).is_none());
        assert!(password_hash(Some(&hash), None, Some(iterations)).is_none());
    }
}
