//! The `## Steps` section of a `SOP.md`: numbered items, each opened by
//! `N. **Title** rest of text`, optionally followed by `- key: value`
//! bullets. When it yields steps they replace `[[steps]]` of SOP.toml.
//!
//! The grammar is ZeroClaw's, read strictly:
//! - The section starts at a `## Steps` heading (any case) and ends at the
//!   next `#` or `##` heading. Fenced code blocks are body text.
//! - A step starts at a numbered line (`1. `) indented less than two columns;
//!   the written number is ignored, steps are numbered 1, 2, 3… in order.
//! - The title is the leading `**bold**` text (a `—`, `–`, `-` or `:` after it
//!   is dropped); without bold, the whole line is the title.
//! - Bullets `- key: value` set step fields: `tools` (comma-separated),
//!   `requires_confirmation` (true|false), `type` (tool|capability|usecase),
//!   `ref`, `id`, `params` (a JSON object) and ZeroClaw's `kind`
//!   (`execute`; `checkpoint`/`approval` = requires_confirmation). Other
//!   ZeroClaw step keys are ignored with a warning. Any other lowercase
//!   `key:` bullet is an error: a misspelt `requires_confirmation` must not
//!   silently drop an approval gate.
//! - Every other line of a step is its body.

use super::model::{Step, StepKind};

/// Step keys ZeroClaw's SOP.md understands that fanin does not use.
pub(crate) const ZEROCLAW_IGNORED_MD_KEYS: &[&str] = &[
    "allow-tools",
    "allow_tools",
    "deny-tools",
    "deny_tools",
    "capability",
    "with",
    "input",
    "output",
    "when",
    "next",
    "terminal",
    "depends_on",
    "depends-on",
    "switch",
    "on_failure",
    "on-failure",
    "mode",
    "agent",
    "call",
    "prompt",
    "policy",
    "edit",
];

/// A problem in SOP.md: `steps[i].key`, the reason (with its line), and
/// whether it is only a warning.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct MdIssue {
    pub key: String,
    pub reason: String,
    pub warning: bool,
}

#[derive(Debug, Default)]
pub(crate) struct MdSteps {
    pub steps: Vec<Step>,
    pub issues: Vec<MdIssue>,
}

pub(crate) fn parse_steps(text: &str) -> MdSteps {
    let mut out = MdSteps::default();
    let mut in_section = false;
    let mut in_fence = false;
    let mut current: Option<Step> = None;
    for (index, line) in text.lines().enumerate() {
        let line_no = index + 1;
        let trimmed = line.trim();
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            in_fence = !in_fence;
            if in_section {
                append_body(&mut current, trimmed);
            }
            continue;
        }
        if !in_fence && is_section_heading(trimmed) {
            flush(&mut current, &mut out.steps);
            in_section = trimmed.eq_ignore_ascii_case("## steps");
            continue;
        }
        if !in_section {
            continue;
        }
        if !in_fence && indentation(line) < 2 {
            if let Some(rest) = numbered_item(trimmed) {
                flush(&mut current, &mut out.steps);
                current = Some(new_step(out.steps.len() as u32 + 1, rest));
                continue;
            }
        }
        let Some(step) = current.as_mut() else {
            continue; // text between the heading and the first item
        };
        if !in_fence {
            if let Some((key, value)) = bullet(trimmed) {
                let index = step.number as usize - 1;
                apply_bullet(step, key, value, line_no, index, &mut out.issues);
                continue;
            }
        }
        append_body(&mut current, trimmed);
    }
    flush(&mut current, &mut out.steps);
    out
}

/// `#` and `##` headings end the section (`###` is body text).
fn is_section_heading(trimmed: &str) -> bool {
    trimmed.starts_with("# ") || trimmed.starts_with("## ")
}

fn indentation(line: &str) -> usize {
    line.chars().take_while(|c| c.is_whitespace()).map(|c| if c == '\t' { 4 } else { 1 }).sum()
}

/// `12. rest` → `rest`.
fn numbered_item(trimmed: &str) -> Option<&str> {
    let digits = trimmed.chars().take_while(char::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let rest = trimmed[digits..].strip_prefix(". ")?.trim();
    (!rest.is_empty()).then_some(rest)
}

fn new_step(number: u32, rest: &str) -> Step {
    let (title, body) = split_title(rest);
    Step {
        number,
        title,
        body,
        tools: Vec::new(),
        requires_confirmation: false,
        kind: None,
        reference: None,
        params: serde_json::Map::new(),
        id: None,
    }
}

fn split_title(rest: &str) -> (String, String) {
    if let Some(after_open) = rest.strip_prefix("**") {
        if let Some(close) = after_open.find("**") {
            let title = after_open[..close].trim().to_string();
            let body = after_open[close + 2..].trim_start().trim_start_matches(['—', '–', '-', ':']).trim().to_string();
            return (title, body);
        }
    }
    (rest.to_string(), String::new())
}

/// `- key: value` (or `* key: value`) with a lowercase identifier key.
fn bullet(trimmed: &str) -> Option<(&str, &str)> {
    let item = trimmed.strip_prefix("- ").or_else(|| trimmed.strip_prefix("* "))?.trim();
    let (key, value) = item.split_once(':')?;
    let is_key = key.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && key.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    is_key.then(|| (key, value.trim()))
}

fn apply_bullet(step: &mut Step, key: &str, value: &str, line: usize, index: usize, issues: &mut Vec<MdIssue>) {
    let mut issue = |field: &str, reason: String, warning: bool| {
        issues.push(MdIssue {
            key: format!("steps[{index}].{field}"),
            reason: format!("{reason} (line {line})"),
            warning,
        })
    };
    match key {
        "tools" => step.tools = value.split(',').map(str::trim).filter(|t| !t.is_empty()).map(str::to_string).collect(),
        "requires_confirmation" => match parse_bool(value) {
            Some(b) => step.requires_confirmation = b,
            None => issue(key, format!("expected true or false, found {value:?}"), false),
        },
        "type" => match parse_step_kind(value) {
            Some(kind) => step.kind = Some(kind),
            None => issue(key, format!("expected tool, capability or usecase, found {value:?}"), false),
        },
        "ref" if !value.is_empty() => step.reference = Some(value.to_string()),
        "id" if !value.is_empty() => step.id = Some(value.to_string()),
        "ref" | "id" => issue(key, "must not be empty".into(), false),
        "params" => match serde_json::from_str::<serde_json::Value>(value) {
            Ok(serde_json::Value::Object(map)) => step.params = map,
            _ => issue(key, "expected a JSON object, e.g. {\"service\": \"a\"}".into(), false),
        },
        "kind" => match value.to_ascii_lowercase().as_str() {
            "execute" => {}
            "checkpoint" | "approval" => step.requires_confirmation = true,
            "capability" => issue(
                key,
                "ignored: ZeroClaw capability steps are not run by fanin; use `- type: capability` and `- ref:`".into(),
                true,
            ),
            _ => issue(key, format!("expected execute, checkpoint or capability, found {value:?}"), false),
        },
        _ if ZEROCLAW_IGNORED_MD_KEYS.contains(&key) => {
            issue(key, "ignored: ZeroClaw key fanin does not use".into(), true)
        }
        _ => {
            issue(key, "unknown step key; expected tools, requires_confirmation, type, ref, id or params".into(), false)
        }
    }
}

pub(crate) fn parse_bool(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

pub(crate) fn parse_step_kind(value: &str) -> Option<StepKind> {
    match value {
        "tool" => Some(StepKind::Tool),
        "capability" => Some(StepKind::Capability),
        "usecase" => Some(StepKind::Usecase),
        _ => None,
    }
}

fn append_body(current: &mut Option<Step>, text: &str) {
    let Some(step) = current.as_mut() else { return };
    if text.is_empty() {
        return;
    }
    if !step.body.is_empty() {
        step.body.push('\n');
    }
    step.body.push_str(text);
}

fn flush(current: &mut Option<Step>, steps: &mut Vec<Step>) {
    if let Some(step) = current.take() {
        steps.push(step);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MD: &str = "# Valve SOP\n\nSome intro.\n\n## Steps\n\n\
        1. **Check readings** — Read sensor data and confirm.\n   - tools: gpio_read, memory_store\n\n\
        2. **Close valve** Set GPIO pin 5 LOW.\n   Second line of the body.\n   - tools: gpio_write\n   - requires_confirmation: true\n\n\
        7. **Notify** - Send alert.\n   - type: tool\n   - ref: pushover\n   - params: {\"priority\": 2}\n   - id: notify-1\n\n\
        ## Notes\n\n1. **Not a step** after the section.\n";

    #[test]
    fn numbered_items_become_steps_numbered_by_position() {
        let parsed = parse_steps(MD);
        assert!(parsed.issues.is_empty(), "{:?}", parsed.issues);
        let s = &parsed.steps;
        assert_eq!(s.len(), 3);
        assert_eq!((s[0].number, s[1].number, s[2].number), (1, 2, 3));
        assert_eq!(s[0].title, "Check readings");
        assert_eq!(s[0].body, "Read sensor data and confirm.");
        assert_eq!(s[0].tools, vec!["gpio_read", "memory_store"]);
        assert!(!s[0].requires_confirmation);
        assert_eq!(s[1].title, "Close valve");
        assert_eq!(s[1].body, "Set GPIO pin 5 LOW.\nSecond line of the body.");
        assert!(s[1].requires_confirmation);
        assert_eq!(s[2].kind, Some(StepKind::Tool));
        assert_eq!(s[2].reference.as_deref(), Some("pushover"));
        assert_eq!(s[2].params["priority"], 2);
        assert_eq!(s[2].id.as_deref(), Some("notify-1"));
    }

    #[test]
    fn a_line_without_bold_is_the_title() {
        let s = parse_steps("## steps\n1. Just a plain step.\n").steps;
        assert_eq!(s[0].title, "Just a plain step.");
        assert_eq!(s[0].body, "");
    }

    #[test]
    fn no_steps_section_gives_no_steps() {
        assert!(parse_steps("# Title\n\n1. **A** b\n").steps.is_empty());
    }

    #[test]
    fn fenced_code_and_nested_lists_stay_in_the_body() {
        let md = "## Steps\n1. **Run** the script:\n```\n## not a heading\n- tools: nope\n```\n   1. nested item\n2. **Done**\n";
        let s = parse_steps(md).steps;
        assert_eq!(s.len(), 2);
        assert!(s[0].body.contains("## not a heading"));
        assert!(s[0].body.contains("1. nested item"));
        assert!(s[0].tools.is_empty());
    }

    #[test]
    fn checkpoint_kind_requires_confirmation() {
        let s = parse_steps("## Steps\n1. **Review**\n   - kind: checkpoint\n").steps;
        assert!(s[0].requires_confirmation);
    }

    #[test]
    fn bad_and_unknown_bullets_are_errors_and_zeroclaw_keys_warnings() {
        let md = "## Steps\n1. **A**\n   - requires_confirmation: maybe\n   - requires_confirmaton: true\n   - type: robot\n   - params: [1]\n2. **B**\n   - agent: ops-bot\n   - when: $.x > 1\n";
        let issues = parse_steps(md).issues;
        let find = |key: &str| issues.iter().find(|i| i.key == key).unwrap_or_else(|| panic!("{key}: {issues:?}"));
        assert!(!find("steps[0].requires_confirmation").warning);
        assert!(find("steps[0].requires_confirmation").reason.contains("line 3"));
        assert!(!find("steps[0].requires_confirmaton").warning);
        assert!(!find("steps[0].type").warning);
        assert!(!find("steps[0].params").warning);
        assert!(find("steps[1].agent").warning);
        assert!(find("steps[1].agent").reason.contains("ZeroClaw"));
        assert!(find("steps[1].when").warning);
    }

    #[test]
    fn prose_bullets_are_body_text() {
        let s = parse_steps("## Steps\n1. **A**\n   - Check the dashboard: all green\n").steps;
        assert_eq!(s[0].body, "- Check the dashboard: all green");
    }
}
