//! Topic names and topic filters: validation (wildcard placement, shared subscriptions) and matching a
//! filter against a name, including the rule that wildcards never match `$`-topics ([MQTT-4.7.2-1]).

use thiserror::Error;

/// The prefix of a shared subscription filter: `$share/{group}/{filter}`.
pub const SHARED_SUBSCRIPTION_PREFIX: &str = "$share/";

/// Why a topic name or topic filter is invalid. Each variant names the spec rule it enforces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum TopicError {
    /// Topic names and filters are at least one character long [MQTT-4.7.3-1].
    #[error("topic is empty [MQTT-4.7.3-1]")]
    Empty,
    /// A topic name carries no `+` or `#` [MQTT-3.3.2-2] [MQTT-4.7.0-1].
    #[error("wildcard in a topic name [MQTT-3.3.2-2]")]
    WildcardInName,
    /// `#` stands alone in its level and is the last level of the filter [MQTT-4.7.1-1].
    #[error("'#' is not alone in the last level of the filter [MQTT-4.7.1-1]")]
    MultiLevelWildcardMisplaced,
    /// `+` occupies an entire level of the filter [MQTT-4.7.1-2].
    #[error("'+' does not occupy a whole level of the filter [MQTT-4.7.1-2]")]
    SingleLevelWildcardMisplaced,
    /// The ShareName of `$share/{ShareName}/{filter}` is at least one character and has no `/`, `+` or `#`
    /// [MQTT-4.8.2-1] [MQTT-4.8.2-2].
    #[error("invalid share name in a shared subscription [MQTT-4.8.2-1] [MQTT-4.8.2-2]")]
    SharedGroupInvalid,
    /// A shared subscription is `$share/{ShareName}/{filter}` with a non-empty filter [MQTT-4.8.2-2].
    #[error("shared subscription without a topic filter [MQTT-4.8.2-2]")]
    SharedFilterMissing,
}

/// A parsed shared subscription `$share/{group}/{filter}`, borrowing from the original filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SharedFilter<'a> {
    pub group: &'a str,
    pub filter: &'a str,
}

/// Checks a topic name (PUBLISH, Will topic): non-empty, no wildcards.
pub fn validate_topic_name(name: &str) -> Result<(), TopicError> {
    if name.is_empty() {
        return Err(TopicError::Empty);
    }
    if name.bytes().any(|b| b == b'+' || b == b'#') {
        return Err(TopicError::WildcardInName);
    }
    Ok(())
}

/// Checks a topic filter (SUBSCRIBE, UNSUBSCRIBE), including the shared-subscription form.
pub fn validate_topic_filter(filter: &str) -> Result<(), TopicError> {
    match parse_shared_subscription(filter)? {
        Some(shared) => validate_plain_filter(shared.filter),
        None => validate_plain_filter(filter),
    }
}

/// Splits `$share/{group}/{filter}` into group and filter. `Ok(None)` when `filter` is not a shared
/// subscription; an error when it starts with `$share/` but is not well formed. The inner filter's wildcards
/// are not checked here (see [`validate_topic_filter`]).
pub fn parse_shared_subscription(filter: &str) -> Result<Option<SharedFilter<'_>>, TopicError> {
    let Some(rest) = filter.strip_prefix(SHARED_SUBSCRIPTION_PREFIX) else {
        return Ok(None);
    };
    let Some((group, inner)) = rest.split_once('/') else {
        return Err(if rest.is_empty() || rest.contains(['+', '#']) {
            TopicError::SharedGroupInvalid
        } else {
            TopicError::SharedFilterMissing
        });
    };
    if group.is_empty() || group.contains(['+', '#']) {
        return Err(TopicError::SharedGroupInvalid);
    }
    if inner.is_empty() {
        return Err(TopicError::SharedFilterMissing);
    }
    Ok(Some(SharedFilter { group, filter: inner }))
}

fn validate_plain_filter(filter: &str) -> Result<(), TopicError> {
    if filter.is_empty() {
        return Err(TopicError::Empty);
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        if level.contains('#') && (level != "#" || levels.peek().is_some()) {
            return Err(TopicError::MultiLevelWildcardMisplaced);
        }
        if level.contains('+') && level != "+" {
            return Err(TopicError::SingleLevelWildcardMisplaced);
        }
    }
    Ok(())
}

/// Whether `filter` (already valid, not a `$share/` form) matches the topic name `name`.
///
/// `#` matches the parent level too (`a/#` matches `a`), `+` matches exactly one level (possibly empty), and a
/// filter starting with a wildcard never matches a name starting with `$` [MQTT-4.7.2-1].
pub fn topic_matches(filter: &str, name: &str) -> bool {
    if name.starts_with('$') && filter.starts_with(['+', '#']) {
        return false;
    }
    let mut filter_levels = filter.split('/');
    let mut name_levels = name.split('/');
    loop {
        match (filter_levels.next(), name_levels.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(f), Some(n)) if f == n => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_name_rejects_wildcards_mqtt_3_3_2_2() {
        assert_eq!(validate_topic_name("a/+/b"), Err(TopicError::WildcardInName));
        assert_eq!(validate_topic_name("a/#"), Err(TopicError::WildcardInName));
        assert_eq!(validate_topic_name("a#"), Err(TopicError::WildcardInName));
        assert_eq!(validate_topic_name(""), Err(TopicError::Empty));
        assert_eq!(validate_topic_name("/"), Ok(()));
        assert_eq!(validate_topic_name("$SYS/x"), Ok(()));
    }

    #[test]
    fn filter_wildcard_placement_mqtt_4_7_1() {
        for ok in ["#", "+", "a/#", "+/+", "a/+/b", "/", "//#", "+/#", "$SYS/#", "a//b"] {
            assert_eq!(validate_topic_filter(ok), Ok(()), "{ok}");
        }
        assert_eq!(validate_topic_filter("a/#/b"), Err(TopicError::MultiLevelWildcardMisplaced));
        assert_eq!(validate_topic_filter("a#"), Err(TopicError::MultiLevelWildcardMisplaced));
        assert_eq!(validate_topic_filter("a/b#"), Err(TopicError::MultiLevelWildcardMisplaced));
        assert_eq!(validate_topic_filter("a+"), Err(TopicError::SingleLevelWildcardMisplaced));
        assert_eq!(validate_topic_filter("a/+b/c"), Err(TopicError::SingleLevelWildcardMisplaced));
        assert_eq!(validate_topic_filter(""), Err(TopicError::Empty));
    }

    #[test]
    fn shared_subscription_parse_mqtt_4_8_2() {
        assert_eq!(
            parse_shared_subscription("$share/g1/a/+/c"),
            Ok(Some(SharedFilter { group: "g1", filter: "a/+/c" }))
        );
        assert_eq!(parse_shared_subscription("a/b"), Ok(None));
        assert_eq!(parse_shared_subscription("$shared/g/a"), Ok(None));
        assert_eq!(parse_shared_subscription("$share/"), Err(TopicError::SharedGroupInvalid));
        assert_eq!(parse_shared_subscription("$share//a"), Err(TopicError::SharedGroupInvalid));
        assert_eq!(parse_shared_subscription("$share/g+/a"), Err(TopicError::SharedGroupInvalid));
        assert_eq!(parse_shared_subscription("$share/#"), Err(TopicError::SharedGroupInvalid));
        assert_eq!(parse_shared_subscription("$share/g"), Err(TopicError::SharedFilterMissing));
        assert_eq!(parse_shared_subscription("$share/g/"), Err(TopicError::SharedFilterMissing));
        assert_eq!(validate_topic_filter("$share/g/a/#/b"), Err(TopicError::MultiLevelWildcardMisplaced));
        assert_eq!(validate_topic_filter("$share/g/#"), Ok(()));
    }

    #[test]
    fn matching_levels_and_wildcards() {
        let cases = [
            ("a/b", "a/b", true),
            ("a/b", "a/c", false),
            ("a/+", "a/b", true),
            ("a/+", "a/b/c", false),
            ("a/+", "a", false),
            ("a/+", "a/", true),
            ("a/#", "a", true),
            ("a/#", "a/b/c", true),
            ("a/#", "ab", false),
            ("#", "a/b", true),
            ("#", "/", true),
            ("+/+", "/", true),
            ("+", "/a", false),
            ("a/b", "a/b/c", false),
            ("a/b/c", "a/b", false),
            ("/+", "/a", true),
            ("+/b/#", "x/b", true),
        ];
        for (filter, name, expected) in cases {
            assert_eq!(topic_matches(filter, name), expected, "{filter} vs {name}");
        }
    }

    #[test]
    fn wildcards_skip_dollar_topics_mqtt_4_7_2_1() {
        assert!(!topic_matches("#", "$SYS/uptime"));
        assert!(!topic_matches("+/uptime", "$SYS/uptime"));
        assert!(topic_matches("$SYS/#", "$SYS/uptime"));
        assert!(topic_matches("$SYS/+", "$SYS/uptime"));
        assert!(topic_matches("a/#", "a/$b"));
    }
}
