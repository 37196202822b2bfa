//! AMQP topic-exchange routing keys and binding patterns (RabbitMQ's topic
//! exchange): words separated by `.`, `*` standing for exactly one word and
//! `#` for zero or more. An `amqp` trigger's `routing_key` and the source's
//! `bindings` are patterns; a delivery's routing key is the event topic.

/// Checks a binding pattern: `*` and `#` only as whole words. Empty words
/// (`a..b`) are words like any other, as RabbitMQ has them.
pub fn validate_pattern(pattern: &str) -> Result<(), String> {
    if pattern.len() > 255 {
        return Err("a routing key is at most 255 bytes".into());
    }
    for word in pattern.split('.') {
        if word.len() > 1 && word.contains(['*', '#']) {
            return Err(format!("'*' and '#' must be whole words of the pattern {pattern:?}"));
        }
    }
    Ok(())
}

/// Whether `pattern` matches the routing key `key`.
pub fn matches(pattern: &str, key: &str) -> bool {
    let pattern: Vec<&str> = pattern.split('.').collect();
    let key: Vec<&str> = key.split('.').collect();
    words_match(&pattern, &key)
}

/// Whether the set of keys `pattern` matches contains every key `narrower`
/// matches, where telling is cheap: the same pattern, or a `#`-only one.
/// Used to warn about triggers no binding brings a delivery to.
pub fn covers(pattern: &str, narrower: &str) -> bool {
    pattern == "#" || pattern == narrower || (!narrower.contains(['*', '#']) && matches(pattern, narrower))
}

/// Word by word; a `#` tries every number of words it could stand for,
/// remembering the one place to come back to (as glob matching does), so a
/// pattern with many `#` stays linear in practice.
fn words_match(pattern: &[&str], key: &[&str]) -> bool {
    let (mut p, mut k) = (0, 0);
    let mut back: Option<(usize, usize)> = None;
    while k < key.len() {
        match pattern.get(p) {
            Some(&"#") => {
                back = Some((p, k));
                p += 1;
            }
            Some(&word) if word == "*" || word == key[k] => {
                p += 1;
                k += 1;
            }
            _ => match back {
                Some((hash, from)) => {
                    p = hash + 1;
                    k = from + 1;
                    back = Some((hash, from + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|w| *w == "#")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rabbitmq_topic_semantics() {
        // (pattern, key, matches) — the examples of RabbitMQ's topic exchange tutorial and its edge cases.
        let table = [
            ("*.orange.*", "quick.orange.rabbit", true),
            ("*.*.rabbit", "quick.orange.rabbit", true),
            ("lazy.#", "lazy.orange.elephant", true),
            ("*.orange.*", "quick.orange.fox", true),
            ("*.*.rabbit", "lazy.brown.fox", false),
            ("lazy.#", "lazy.brown.fox", true),
            ("*.orange.*", "quick.brown.fox", false),
            ("*.orange.*", "orange", false),
            ("*.orange.*", "quick.orange.new.rabbit", false),
            ("lazy.#", "lazy.orange.new.rabbit", true),
            ("lazy.#", "lazy", true),
            ("#", "", true),
            ("#", "a.b.c", true),
            ("*", "", true),
            ("*", "a.b", false),
            ("a.#.b", "a.b", true),
            ("a.#.b", "a.x.y.b", true),
            ("a.#.b", "a.x.y.c", false),
            ("#.b", "a.b.b", true),
            ("#.#", "a", true),
            ("a.*.#", "a", false),
            ("a.*.#", "a.b", true),
            ("sensors.*.alert", "sensors.kitchen.alert", true),
            ("sensors.*.alert", "sensors.alert", false),
            ("a..b", "a..b", true),
            ("a.*.b", "a..b", true),
        ];
        for (pattern, key, want) in table {
            assert_eq!(matches(pattern, key), want, "{pattern:?} vs {key:?}");
        }
    }

    #[test]
    fn wildcards_are_whole_words() {
        assert!(validate_pattern("sensors.*.alert").is_ok());
        assert!(validate_pattern("#").is_ok());
        for bad in ["sensors.a*", "a.#b", "**"] {
            assert!(validate_pattern(bad).unwrap_err().contains("whole words"), "{bad}");
        }
        assert!(validate_pattern(&"a".repeat(256)).is_err());
    }

    #[test]
    fn coverage_is_told_when_cheap() {
        assert!(covers("#", "a.*.b"));
        assert!(covers("a.*", "a.*"));
        assert!(covers("a.#", "a.b.c"));
        assert!(!covers("a.b", "a.*"));
    }
}
