//! Mosquitto's ACL file (man mosquitto.conf, `acl_file`), read unchanged:
//!
//! ```text
//! # rules before the first `user` line apply to anonymous clients
//! topic read public/#
//! user alice
//! topic readwrite alice/#          # access word optional: no word = readwrite
//! topic deny alice/secret/#
//! pattern write chat/%u/#          # every client; %u = user name, %c = client id
//! ```
//!
//! Semantics (Mosquitto 2): once a file is configured only what it grants is allowed. A client's rules are
//! its section (the anonymous one when it gave no user name) plus every `pattern`; a `deny` rule that
//! matches wins over any grant. `%u` and `%c` stand for a whole topic level; a pattern naming `%u` does not
//! apply to anonymous clients, and a user name or client id containing `+`, `#` or `/` makes a pattern
//! match nothing (a client named `#` must not widen `pattern read %c/#` to everything).
//!
//! Checks: publish to topic T needs write; receiving a message on T needs read (checked at delivery);
//! SUBSCRIBE to filter F is refused when no read rule overlaps F (no topic could ever be delivered) or a
//! `deny` rule covers all of F; the rest of F is filtered at delivery, so a `#` subscriber receives only
//! what it may read. (Mosquitto 2.0.11 accepts every SUBSCRIBE and only filters at delivery.)

use std::path::{Path, PathBuf};

use ahash::AHashMap;

use crate::protocol::topic::validate_topic_filter;

/// Why an ACL file cannot be used; each names the file (and line).
#[derive(Debug, thiserror::Error)]
pub enum AclFileError {
    #[error("cannot read ACL file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}:{line}: {reason}")]
    Parse { path: PathBuf, line: usize, reason: String },
}

/// What a rule allows (or, for `deny`, forbids).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
    ReadWrite,
    Deny,
}

impl Access {
    fn grants_read(self) -> bool {
        matches!(self, Access::Read | Access::ReadWrite)
    }

    fn grants_write(self) -> bool {
        matches!(self, Access::Write | Access::ReadWrite)
    }
}

/// One level of a rule's filter.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Level {
    Literal(Box<str>),
    /// `+`
    Single,
    /// `#` (always last)
    Multi,
    /// `%u` in a pattern: the client's user name.
    Username,
    /// `%c` in a pattern: the client's id.
    ClientId,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Rule {
    access: Access,
    levels: Vec<Level>,
}

/// Who is asking: the values `%u` and `%c` stand for.
#[derive(Clone, Copy, Debug)]
pub struct AclSubject<'a> {
    pub username: Option<&'a str>,
    pub client_id: &'a str,
}

/// A parsed ACL file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AclFile {
    anonymous: Vec<Rule>,
    users: AHashMap<String, Vec<Rule>>,
    patterns: Vec<Rule>,
}

impl AclFile {
    pub fn load(path: &Path) -> Result<AclFile, AclFileError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| AclFileError::Read { path: path.to_path_buf(), source })?;
        AclFile::parse(&text, path)
    }

    /// Parses file text; `path` is only for error messages.
    pub fn parse(text: &str, path: &Path) -> Result<AclFile, AclFileError> {
        let mut file = AclFile::default();
        let mut current_user: Option<String> = None;
        for (index, raw) in text.lines().enumerate() {
            let error = |reason: String| AclFileError::Parse { path: path.to_path_buf(), line: index + 1, reason };
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (keyword, rest) = line.split_once(char::is_whitespace).map_or((line, ""), |(k, r)| (k, r.trim()));
            match keyword {
                "user" => {
                    if rest.is_empty() {
                        return Err(error("`user` needs a user name".into()));
                    }
                    file.users.entry(rest.to_string()).or_default();
                    current_user = Some(rest.to_string());
                }
                "topic" | "pattern" => {
                    let is_pattern = keyword == "pattern";
                    let rule =
                        parse_rule(rest, is_pattern).map_err(|reason| error(format!("`{keyword}`: {reason}")))?;
                    match (is_pattern, &current_user) {
                        (true, _) => file.patterns.push(rule),
                        (false, None) => file.anonymous.push(rule),
                        (false, Some(user)) => file.users.entry(user.clone()).or_default().push(rule),
                    }
                }
                other => {
                    return Err(error(format!("unknown keyword `{other}` (expected `user`, `topic` or `pattern`)")))
                }
            }
        }
        Ok(file)
    }

    /// May the client publish to `topic` (write access)?
    pub fn may_publish(&self, subject: AclSubject<'_>, topic: &str) -> bool {
        self.decide(subject, Access::grants_write, |levels, subject| topic_matches(levels, subject, topic))
    }

    /// May the client receive a message published on `topic` (read access)?
    pub fn may_receive(&self, subject: AclSubject<'_>, topic: &str) -> bool {
        self.decide(subject, Access::grants_read, |levels, subject| topic_matches(levels, subject, topic))
    }

    /// May the client subscribe to `filter`: some read rule overlaps it and no deny rule covers all of it.
    /// What the filter matches beyond the read rules is filtered at delivery ([`AclFile::may_receive`]).
    pub fn may_subscribe(&self, subject: AclSubject<'_>, filter: &str) -> bool {
        let mut granted = false;
        for rule in self.rules_for(subject) {
            if rule.access == Access::Deny {
                if covers(&rule.levels, subject, filter) {
                    return false;
                }
            } else if rule.access.grants_read() && !granted {
                granted = overlaps(&rule.levels, subject, filter);
            }
        }
        granted
    }

    /// A matching deny rule wins; otherwise any matching grant of the wanted kind allows.
    fn decide(
        &self,
        subject: AclSubject<'_>,
        grants: fn(Access) -> bool,
        matches: impl Fn(&[Level], AclSubject<'_>) -> bool,
    ) -> bool {
        let mut granted = false;
        for rule in self.rules_for(subject) {
            if rule.access == Access::Deny {
                if matches(&rule.levels, subject) {
                    return false;
                }
            } else if !granted && grants(rule.access) {
                granted = matches(&rule.levels, subject);
            }
        }
        granted
    }

    fn rules_for<'a>(&'a self, subject: AclSubject<'_>) -> impl Iterator<Item = &'a Rule> {
        let own: &[Rule] = match subject.username {
            None => &self.anonymous,
            Some(user) => self.users.get(user).map_or(&[], Vec::as_slice),
        };
        own.iter().chain(&self.patterns)
    }
}

/// `[read|write|readwrite|deny] FILTER`; the access word is optional (readwrite), the filter is the rest
/// of the line (it may contain spaces when an access word is given, as Mosquitto reads it).
fn parse_rule(rest: &str, is_pattern: bool) -> Result<Rule, String> {
    let (word, after) = rest.split_once(char::is_whitespace).map_or((rest, ""), |(w, a)| (w, a.trim()));
    let access = match word {
        "read" => Some(Access::Read),
        "write" => Some(Access::Write),
        "readwrite" => Some(Access::ReadWrite),
        "deny" => Some(Access::Deny),
        _ => None,
    };
    let (access, filter) = match access {
        Some(access) => (access, after),
        None => (Access::ReadWrite, rest),
    };
    if filter.is_empty() {
        return Err("needs a topic filter".into());
    }
    validate_topic_filter(filter).map_err(|err| format!("`{filter}` is not a valid topic filter ({err})"))?;
    let levels = filter
        .split('/')
        .map(|level| match level {
            "+" => Level::Single,
            "#" => Level::Multi,
            "%u" if is_pattern => Level::Username,
            "%c" if is_pattern => Level::ClientId,
            literal => Level::Literal(literal.into()),
        })
        .collect();
    Ok(Rule { access, levels })
}

/// What a pattern level stands for for this client; `None` when it must match nothing (anonymous `%u`,
/// or a value that would act as a wildcard or span levels).
fn substituted<'a>(level: &'a Level, subject: AclSubject<'a>) -> Option<&'a str> {
    let value = match level {
        Level::Literal(text) => return Some(text),
        Level::Username => subject.username?,
        Level::ClientId => subject.client_id,
        Level::Single | Level::Multi => return None,
    };
    (!value.contains(['+', '#', '/'])).then_some(value)
}

/// Does the rule filter match the topic name (MQTT matching, `$` topics not matched by a leading wildcard
/// [MQTT-4.7.2-1])?
fn topic_matches(levels: &[Level], subject: AclSubject<'_>, topic: &str) -> bool {
    if topic.starts_with('$') && matches!(levels.first(), Some(Level::Single | Level::Multi)) {
        return false;
    }
    let mut names = topic.split('/');
    for level in levels {
        match level {
            Level::Multi => return true,
            Level::Single => {
                if names.next().is_none() {
                    return false;
                }
            }
            exact => match (substituted(exact, subject), names.next()) {
                (Some(want), Some(name)) if want == name => {}
                _ => return false,
            },
        }
    }
    names.next().is_none()
}

/// Does the rule filter match every topic the subscription filter can match?
fn covers(levels: &[Level], subject: AclSubject<'_>, filter: &str) -> bool {
    let mut subscribed = filter.split('/');
    for level in levels {
        match (level, subscribed.next()) {
            (Level::Multi, _) => return true,
            (_, None) => return false,
            (Level::Single, Some(sub)) => {
                if sub == "#" {
                    return false;
                }
            }
            (exact, Some(sub)) => {
                if substituted(exact, subject) != Some(sub) {
                    return false;
                }
            }
        }
    }
    subscribed.next().is_none()
}

/// Could some topic match both the rule filter and the subscription filter?
fn overlaps(levels: &[Level], subject: AclSubject<'_>, filter: &str) -> bool {
    let dollar = |text: &str| text.starts_with('$');
    let leading_wildcard = |text: &str| text == "+" || text == "#";
    let first_sub = filter.split('/').next().unwrap_or_default();
    match levels.first() {
        Some(Level::Single | Level::Multi) if dollar(first_sub) => return false,
        Some(level) if leading_wildcard(first_sub) && substituted(level, subject).is_some_and(dollar) => return false,
        _ => {}
    }
    let mut subscribed = filter.split('/').peekable();
    for (index, level) in levels.iter().enumerate() {
        let Some(sub) = subscribed.next() else {
            // The subscription ended: only a rule whose remaining level is `#` still matches this topic.
            return matches!(&levels[index..], [Level::Multi]);
        };
        match level {
            Level::Multi => return true,
            Level::Single if sub == "#" => return true,
            Level::Single => {}
            // Checked before the subscription's `#`: a pattern level that matches nothing stays so.
            exact => match substituted(exact, subject) {
                None => return false,
                Some(_) if sub == "#" => return true,
                Some(want) if sub == "+" || sub == want => {}
                Some(_) => return false,
            },
        }
    }
    match subscribed.next() {
        None => true,
        // The rule ended: the subscription still matches this topic if all it has left is `#`.
        Some(rest) => rest == "#" && subscribed.peek().is_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(text: &str) -> AclFile {
        AclFile::parse(text, Path::new("acl")).expect("valid ACL")
    }

    fn user<'a>(name: &'a str, client_id: &'a str) -> AclSubject<'a> {
        AclSubject { username: Some(name), client_id }
    }

    const ANONYMOUS: AclSubject<'static> = AclSubject { username: None, client_id: "anon" };

    #[test]
    fn rules_before_the_first_user_line_apply_to_anonymous_clients_only() {
        let file = acl("topic read public/#\nuser alice\ntopic alice/#\n");
        assert!(file.may_receive(ANONYMOUS, "public/news"));
        assert!(!file.may_publish(ANONYMOUS, "public/news"), "read only");
        assert!(!file.may_receive(user("alice", "c"), "public/news"), "the anonymous section is not alice's");
        assert!(
            file.may_publish(user("alice", "c"), "alice/x") && file.may_receive(user("alice", "c"), "alice/x"),
            "no access word = readwrite"
        );
        assert!(!file.may_receive(user("bob", "c"), "alice/x"), "a user without a section gets nothing");
    }

    #[test]
    fn access_words_grant_what_they_say() {
        let file = acl("user u\ntopic read r\ntopic write w\ntopic readwrite rw\n");
        let u = user("u", "c");
        assert!(file.may_receive(u, "r") && !file.may_publish(u, "r"));
        assert!(file.may_publish(u, "w") && !file.may_receive(u, "w"));
        assert!(file.may_publish(u, "rw") && file.may_receive(u, "rw"));
        assert!(!file.may_publish(u, "other") && !file.may_receive(u, "other"), "only what is listed");
    }

    #[test]
    fn a_deny_rule_wins_over_broader_grants_in_any_order() {
        let file = acl(
            "user u\ntopic readwrite a/#\ntopic deny a/secret/#\nuser v\ntopic deny a/secret/#\ntopic readwrite a/#\n",
        );
        for name in ["u", "v"] {
            let subject = user(name, "c");
            assert!(file.may_receive(subject, "a/open"));
            assert!(!file.may_receive(subject, "a/secret/x"), "{name}");
            assert!(!file.may_publish(subject, "a/secret"), "{name}: `#` also matches the parent level");
        }
    }

    #[test]
    fn patterns_apply_to_every_client_with_user_name_and_client_id_substituted() {
        let file = acl("user alice\ntopic read chat/#\npattern write chat/%u/#\npattern readwrite devices/%c/state\n");
        let alice = user("alice", "phone-1");
        assert!(file.may_publish(alice, "chat/alice/room"));
        assert!(!file.may_publish(alice, "chat/bob/room"));
        assert!(file.may_publish(alice, "devices/phone-1/state") && !file.may_publish(alice, "devices/phone-2/state"));
        assert!(file.may_publish(user("bob", "x"), "chat/bob/room"), "patterns apply also to users without a section");
        assert!(file.may_publish(ANONYMOUS, "devices/anon/state"), "%c applies to anonymous clients");
        assert!(
            !file.may_publish(ANONYMOUS, "chat/%u/x") && !file.may_publish(ANONYMOUS, "chat/anon/x"),
            "%u never matches an anonymous client"
        );
    }

    #[test]
    fn a_user_name_or_client_id_with_wildcards_or_slashes_never_widens_a_pattern() {
        let file = acl("pattern readwrite home/%u/#\npattern read dev/%c\n");
        for evil in ["#", "+", "a/b", "x+"] {
            assert!(!file.may_publish(user(evil, "c"), "home/anything/x"), "{evil}");
            assert!(!file.may_publish(user(evil, "c"), &format!("home/{evil}/x")), "{evil}");
            assert!(!file.may_subscribe(user(evil, "c"), "home/#"), "{evil}");
            assert!(!file.may_receive(user("u", evil), "dev/x"), "{evil}");
            assert!(!file.may_receive(user("u", evil), &format!("dev/{evil}")), "{evil}");
        }
        assert!(file.may_publish(user("ok", "c"), "home/ok/x"));
    }

    #[test]
    fn percent_signs_in_topic_rules_are_literal_text() {
        let file = acl("user u\ntopic read a/%u\n");
        assert!(file.may_receive(user("u", "c"), "a/%u"));
        assert!(!file.may_receive(user("u", "c"), "a/u"));
    }

    #[test]
    fn wildcard_rules_follow_mqtt_matching_and_leave_dollar_topics_alone_mqtt_4_7_2_1() {
        let file = acl("user u\ntopic read +/status\ntopic read #\n");
        let u = user("u", "c");
        assert!(file.may_receive(u, "a/status") && file.may_receive(u, "a/b/c"));
        assert!(!file.may_receive(u, "$SYS/broker/uptime"), "a leading wildcard does not match $ topics");
        let sys = acl("user u\ntopic read $SYS/#\n");
        assert!(sys.may_receive(u, "$SYS/broker/uptime"));
    }

    #[test]
    fn subscribe_needs_a_read_rule_overlapping_the_filter() {
        let file = acl("user alice\ntopic read chat/#\ntopic write out/#\n");
        let alice = user("alice", "c");
        for allowed in ["chat/#", "chat/+/x", "chat", "#", "+/bob", "+/+/+"] {
            assert!(file.may_subscribe(alice, allowed), "{allowed}");
        }
        for refused in ["secret/x", "out/#", "chats/#", "$SYS/#"] {
            assert!(!file.may_subscribe(alice, refused), "{refused}");
        }
    }

    #[test]
    fn subscribe_is_refused_when_a_deny_rule_covers_the_whole_filter() {
        let file = acl("user mon\ntopic read #\ntopic deny chat/bob/private/#\n");
        let mon = user("mon", "c");
        assert!(!file.may_subscribe(mon, "chat/bob/private/#"));
        assert!(!file.may_subscribe(mon, "chat/bob/private/+/x"));
        assert!(file.may_subscribe(mon, "#"), "partly denied: allowed, filtered at delivery");
        assert!(file.may_subscribe(mon, "chat/+/private/x"), "chat/alice/private/x is readable");
        assert!(!file.may_receive(mon, "chat/bob/private/x") && file.may_receive(mon, "chat/alice/x"));
    }

    #[test]
    fn filters_overlap_as_mqtt_matching_implies() {
        let subject = user("u", "c");
        let levels = |filter: &str| parse_rule(filter, false).unwrap().levels;
        let cases = [
            ("a/b", "a/b", true),
            ("a/+", "a/b", true),
            ("a/b", "a/+", true),
            ("a/b", "a/c", false),
            ("a/#", "a", true),
            ("a", "a/#", true),
            ("a/b", "a/b/c", false),
            ("a/b/c", "a/b", false),
            ("+/+", "a", false),
            ("#", "$SYS/x", false),
            ("$SYS/x", "#", false),
            ("$SYS/x", "$SYS/#", true),
        ];
        for (rule, filter, expected) in cases {
            assert_eq!(overlaps(&levels(rule), subject, filter), expected, "{rule} vs {filter}");
        }
    }

    #[test]
    fn comments_blank_lines_and_multiple_sections_of_one_user() {
        let file = acl("# comment\n\n   # indented\nuser a\ntopic x\nuser b\ntopic y\nuser a\ntopic z\n");
        assert!(file.may_receive(user("a", "c"), "x") && file.may_receive(user("a", "c"), "z"));
        assert!(!file.may_receive(user("a", "c"), "y"));
    }

    #[test]
    fn a_topic_with_spaces_follows_an_access_word() {
        let file = acl("user u\ntopic read my topic/x\n");
        assert!(file.may_receive(user("u", "c"), "my topic/x") && !file.may_publish(user("u", "c"), "my topic/x"));
    }

    #[test]
    fn syntax_errors_name_the_file_and_line() {
        let cases = [
            ("user u\ntopic read\n", 2, "needs a topic filter"),
            ("topic read a/#/b\n", 1, "not a valid topic filter"),
            ("# ok\nuser\n", 2, "needs a user name"),
            ("user u\ntopic a\ntopics b\n", 3, "unknown keyword `topics`"),
            ("pattern deny\n", 1, "needs a topic filter"),
        ];
        for (text, line, reason) in cases {
            let err = AclFile::parse(text, Path::new("/etc/acl")).unwrap_err().to_string();
            assert!(err.starts_with(&format!("/etc/acl:{line}: ")), "{text:?}: {err}");
            assert!(err.contains(reason), "{text:?}: {err}");
        }
    }
}
