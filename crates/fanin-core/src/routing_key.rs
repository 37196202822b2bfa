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

/// Whether some routing key matches both patterns: a binding that brings
/// a trigger anything. Used to warn about triggers no binding feeds
/// (`sensors.#` feeds `sensors.*.alert`; `a.b` does not feed `a.c.*`).
pub fn overlaps(a: &str, b: &str) -> bool {
    let a: Vec<&str> = a.split('.').collect();
    let b: Vec<&str> = b.split('.').collect();
    let mut seen = vec![None; (a.len() + 1) * (b.len() + 1)];
    both_match(&a, &b, 0, 0, &mut seen)
}

/// Whether the rests `a[i..]` and `b[j..]` share a key; `seen` remembers
/// each pair of positions, so this is quadratic at worst.
fn both_match(a: &[&str], b: &[&str], i: usize, j: usize, seen: &mut [Option<bool>]) -> bool {
    let at = i * (b.len() + 1) + j;
    if let Some(known) = seen[at] {
        return known;
    }
    seen[at] = Some(false);
    let found = (i == a.len() && j == b.len())
        || (a.get(i) == Some(&"#") && both_match(a, b, i + 1, j, seen))
        || (b.get(j) == Some(&"#") && both_match(a, b, i, j + 1, seen))
        || match (a.get(i), b.get(j)) {
            // One word both can take: a `#` takes it and stays.
            (Some(&x), Some(&y)) if x == y || x == "*" || y == "*" || x == "#" || y == "#" => {
                let next_i = if x == "#" { i } else { i + 1 };
                let next_j = if y == "#" { j } else { j + 1 };
                (next_i, next_j) != (i, j) && both_match(a, b, next_i, next_j, seen)
            }
            _ => false,
        };
    seen[at] = Some(found);
    found
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
    fn two_patterns_overlap_when_some_key_matches_both() {
        let table = [
            ("#", "a.*.b", true),
            ("a.*", "a.*", true),
            ("a.#", "a.b.c", true),
            ("sensors.#", "sensors.*.alert", true),
            ("*.*.alert", "sensors.#", true),
            ("a.#.z", "#.m.#", true),
            ("#", "", true),
            ("a.b", "a.*", true),
            ("a.b", "a.c.*", false),
            ("a.*", "a", false),
            ("a.#", "b.#", false),
            ("*.x", "*.y", false),
            ("a.*.*", "#.b", true),
            ("a.*.*", "a.b", false),
        ];
        for (a, b, both) in table {
            assert_eq!(overlaps(a, b), both, "{a} / {b}");
            assert_eq!(overlaps(b, a), both, "{b} / {a}");
        }
    }
}
