//! MQTT topic names and filters (MQTT 3.1.1 §4.7 / 5.0 §4.7): validation and
//! the reference matching rule. The index uses a trie for speed; this module
//! is the plain statement of the rule it must agree with.

/// Checks a subscription filter: non-empty, no NUL, `#` only as the whole
/// last level, `+` only as a whole level.
pub fn validate_filter(filter: &str) -> Result<(), String> {
    if filter.is_empty() {
        return Err("topic filter is empty".into());
    }
    if filter.len() > 65535 {
        return Err("topic filter is longer than 65535 bytes".into());
    }
    if filter.contains('\0') {
        return Err("topic filter contains a NUL character".into());
    }
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        if level.contains('#') && (*level != "#" || i != levels.len() - 1) {
            return Err(format!("'#' must be the whole last level of the filter {filter:?}"));
        }
        if level.contains('+') && *level != "+" {
            return Err(format!("'+' must be a whole level of the filter {filter:?}"));
        }
    }
    Ok(())
}

/// Checks a topic name (what a message is published to): no wildcards.
pub fn validate_topic(topic: &str) -> Result<(), String> {
    if topic.is_empty() {
        return Err("topic is empty".into());
    }
    if topic.contains(['+', '#', '\0']) {
        return Err(format!("topic {topic:?} contains a wildcard or NUL"));
    }
    Ok(())
}

/// Whether `filter` matches `topic`. Wildcards at the first level do not
/// match topics starting with `$` (`$SYS/...`), as brokers do.
pub fn filter_matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(fl), Some(tl)) if fl == tl => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Whether every topic `inner` matches is also matched by `outer` (used to
/// warn about SOP filters no configured subscription delivers).
pub fn filter_covers(outer: &str, inner: &str) -> bool {
    let o: Vec<&str> = outer.split('/').collect();
    let i: Vec<&str> = inner.split('/').collect();
    if inner.starts_with('$') != outer.starts_with('$') && (outer.starts_with('+') || outer.starts_with('#')) {
        return false;
    }
    for (k, ol) in o.iter().enumerate() {
        if *ol == "#" {
            return true;
        }
        let Some(il) = i.get(k) else { return false };
        match (*ol, *il) {
            ("+", "#") => return false,
            ("+", _) => {}
            (a, b) if a == b => {}
            _ => return false,
        }
    }
    o.len() == i.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_and_invalid_filters() {
        for ok in ["a", "a/b", "+", "#", "a/+/c", "a/#", "+/+", "/", "a//b", "$SYS/#"] {
            assert!(validate_filter(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a#", "a/#/b", "a/b#", "a+/b", "a/+b", "#/a", "a\0b"] {
            assert!(validate_filter(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn topic_names_have_no_wildcards() {
        assert!(validate_topic("a/b").is_ok());
        assert!(validate_topic("a/+").is_err());
        assert!(validate_topic("").is_err());
    }

    #[test]
    fn matching_rule() {
        let cases = [
            ("a/b", "a/b", true),
            ("a/b", "a/c", false),
            ("a/+", "a/b", true),
            ("a/+", "a/b/c", false),
            ("a/+", "a/", true),
            ("a/#", "a", true),
            ("a/#", "a/b/c", true),
            ("#", "a/b", true),
            ("+", "a", true),
            ("+", "a/b", false),
            ("+/+", "/a", true),
            ("#", "$SYS/x", false),
            ("+/x", "$SYS/x", false),
            ("$SYS/#", "$SYS/x", true),
            ("a/+/c", "a/b/c", true),
            ("a/+/c", "a/b/d", false),
        ];
        for (f, t, want) in cases {
            assert_eq!(filter_matches(f, t), want, "{f} ~ {t}");
        }
    }

    /// ZeroClaw's own expectations (`mqtt_topic_matching_edge_cases` in
    /// zeroclaw-labs/zeroclaw `crates/zeroclaw-runtime/src/sop/engine.rs`)
    /// hold here too. Two cases its matcher gets wrong and its tests do not
    /// cover are where fanin follows the MQTT specification instead: `a/#`
    /// matches the parent level `a`, and a leading wildcard does not match
    /// `$SYS` topics.
    #[test]
    fn zeroclaw_topic_expectations_hold() {
        let zeroclaw = [
            ("a/b/c", "a/b/c", true),
            ("a/b/c", "a/b/d", false),
            ("a/b/c", "a/b", false),
            ("a/b", "a/b/c", false),
            ("+/+/+", "a/b/c", true),
            ("+/+", "a/b/c", false),
            ("#", "a/b/c", true),
            ("a/#", "a/b/c", true),
            ("b/#", "a/b/c", false),
        ];
        for (f, t, want) in zeroclaw {
            assert_eq!(filter_matches(f, t), want, "{f} ~ {t}");
        }
        // Deliberately not ZeroClaw's verdicts.
        assert!(filter_matches("sensors/#", "sensors"), "`#` includes the parent level");
        assert!(!filter_matches("#", "$SYS/broker/uptime"), "wildcards skip $-topics");
    }

    #[test]
    fn coverage() {
        assert!(filter_covers("ops/deploy/#", "ops/deploy/+"));
        assert!(filter_covers("#", "a/b"));
        assert!(filter_covers("a/+", "a/b"));
        assert!(!filter_covers("a/+", "a/#"));
        assert!(!filter_covers("a/b", "a/+"));
        assert!(!filter_covers("sensors/alert", "sensors/+/alert"));
        assert!(filter_covers("sensors/+/alert", "sensors/x/alert"));
    }
}
