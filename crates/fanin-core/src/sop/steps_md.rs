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
pub const ZEROCLAW_IGNORED_MD_KEYS: &[&str] = &[
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

    mod props {
        use proptest::prelude::*;
        use serde_json::{Map, Value};

        use super::super::*;
        use crate::proptest_support::{config, hostile_text, json_object, token_soup};

        const PIECES: &[&str] = &[
            "## Steps",
            "## steps",
            "# Title",
            "### Sub",
            "\n",
            "\n",
            "\n",
            "1. ",
            "12. ",
            "1.",
            " ",
            "   ",
            "\t",
            "**",
            "Bold",
            "—",
            "–",
            "-",
            ":",
            "- ",
            "* ",
            "tools: ",
            "requires_confirmation: ",
            "true",
            "maybe",
            "type: ",
            "tool",
            "robot",
            "ref: ",
            "id: ",
            "params: ",
            "{\"a\": 1}",
            "[1]",
            "kind: ",
            "checkpoint",
            "capability",
            "agent: ",
            "```",
            "~~~",
            "é",
            ",",
            "\r\n",
        ];

        proptest! {
            #![proptest_config(config(256))]

            /// Whatever the text, steps are numbered 1, 2, 3… and every
            /// problem names a step that exists and a line of the text.
            #[test]
            fn any_text_gives_numbered_steps_and_located_issues(
                text in prop_oneof![hostile_text(200), token_soup(PIECES, 60)],
            ) {
                let parsed = parse_steps(&text);
                for (i, step) in parsed.steps.iter().enumerate() {
                    prop_assert_eq!(step.number as usize, i + 1);
                }
                let lines = text.lines().count();
                for issue in &parsed.issues {
                    let index: usize = issue.key.strip_prefix("steps[").and_then(|k| k.split_once(']'))
                        .and_then(|(i, _)| i.parse().ok()).expect("issue keys are steps[i].key");
                    prop_assert!(index < parsed.steps.len(), "{:?}", issue);
                    let line: usize = issue.reason.rsplit_once("(line ").and_then(|(_, l)| l.strip_suffix(')'))
                        .and_then(|l| l.parse().ok()).expect("issues name their line");
                    prop_assert!((1..=lines).contains(&line), "{:?} in {} lines", issue, lines);
                }
            }
        }

        /// One step as an author writes it in SOP.md.
        #[derive(Clone, Debug)]
        struct Written {
            number: u16,
            indent: &'static str,
            title: String,
            bold: bool,
            separator: &'static str,
            first_line: String,
            body: Vec<String>,
            fenced: Vec<String>,
            tools: Option<Vec<String>>,
            confirmation: Option<(bool, &'static str)>,
            zeroclaw_kind: Option<&'static str>,
            kind: Option<(StepKind, &'static str)>,
            reference: Option<String>,
            id: Option<String>,
            params: Option<Map<String, Value>>,
        }

        fn prose() -> impl Strategy<Value = String> {
            "[A-Za-z][A-Za-z0-9 ,.;!?()'éß]{0,30}".prop_map(|s| s.trim().to_string())
        }

        fn written() -> impl Strategy<Value = Written> {
            let fenced = prop::collection::vec(
                hostile_text(30)
                    .prop_map(|s| s.replace('\n', " "))
                    .prop_filter("not a fence", |s| !s.trim().starts_with("```") && !s.trim().starts_with("~~~")),
                0..3,
            );
            let kinds =
                vec![(StepKind::Tool, "tool"), (StepKind::Capability, "capability"), (StepKind::Usecase, "usecase")];
            (
                (any::<u16>(), prop::sample::select(vec!["", " "]), prose(), any::<bool>()),
                (
                    prop::sample::select(vec!["", " — ", " - ", ": ", " – ", " "]),
                    prose(),
                    prop::collection::vec(prose(), 0..3),
                    fenced,
                ),
                (
                    prop::option::of(prop::collection::vec("[a-z_]{1,8}", 0..4)),
                    prop::option::of((any::<bool>(), prop::sample::select(vec!["", "upper", "title"]))),
                    prop::option::of(prop::sample::select(vec!["execute", "checkpoint", "approval", "Checkpoint"])),
                ),
                (
                    prop::option::of(prop::sample::select(kinds)),
                    prop::option::of("[A-Za-z0-9_./:-]{1,16}"),
                    prop::option::of("[A-Za-z0-9_./:-]{1,16}"),
                    prop::option::of(json_object(2, 8)),
                ),
            )
                .prop_map(
                    |(
                        (number, indent, title, bold),
                        (separator, first_line, body, fenced),
                        (tools, confirmation, zeroclaw_kind),
                        (kind, reference, id, params),
                    )| Written {
                        number,
                        indent,
                        title,
                        bold,
                        separator,
                        first_line,
                        body,
                        fenced,
                        tools,
                        confirmation,
                        zeroclaw_kind,
                        kind,
                        reference,
                        id,
                        params,
                    },
                )
        }

        fn render(steps: &[Written], heading: &str) -> String {
            let mut md = format!("# A SOP\n\nWhat it is for.\n\n{heading}\n\nBefore the first step.\n\n");
            for w in steps {
                if w.bold {
                    md.push_str(&format!("{}{}. **{}**{}{}\n", w.indent, w.number, w.title, w.separator, w.first_line));
                } else {
                    md.push_str(&format!("{}{}. {}\n", w.indent, w.number, w.title));
                }
                for line in &w.body {
                    md.push_str(&format!("   {line}\n"));
                }
                if !w.fenced.is_empty() {
                    md.push_str("   ```\n");
                    for line in &w.fenced {
                        md.push_str(&format!("{line}\n"));
                    }
                    md.push_str("   ```\n");
                }
                if let Some(tools) = &w.tools {
                    md.push_str(&format!("   - tools: {}\n", tools.join(", ")));
                }
                if let Some((value, case)) = w.confirmation {
                    let text = match case {
                        "upper" => value.to_string().to_uppercase(),
                        "title" if value => "True".into(),
                        "title" => "False".into(),
                        _ => value.to_string(),
                    };
                    md.push_str(&format!("   * requires_confirmation: {text}\n"));
                }
                if let Some(kind) = w.zeroclaw_kind {
                    md.push_str(&format!("   - kind: {kind}\n"));
                }
                if let Some((_, name)) = w.kind {
                    md.push_str(&format!("   - type: {name}\n"));
                }
                if let Some(reference) = &w.reference {
                    md.push_str(&format!("   - ref: {reference}\n"));
                }
                if let Some(id) = &w.id {
                    md.push_str(&format!("   - id: {id}\n"));
                }
                if let Some(params) = &w.params {
                    md.push_str(&format!("   - params: {}\n", serde_json::to_string(params).unwrap()));
                }
                md.push('\n');
            }
            md.push_str("## Notes\n\n1. **Not a step** after the section.\n");
            md
        }

        /// The step `w` describes, as the documented grammar reads it.
        fn expected(w: &Written, number: u32) -> Step {
            let (title, mut body) = if w.bold {
                (w.title.clone(), if w.first_line.is_empty() { vec![] } else { vec![w.first_line.clone()] })
            } else {
                (w.title.clone(), vec![])
            };
            body.extend(w.body.iter().cloned());
            if !w.fenced.is_empty() {
                body.push("```".into());
                body.extend(w.fenced.iter().map(|l| l.trim().to_string()).filter(|l| !l.is_empty()));
                body.push("```".into());
            }
            let gate = matches!(w.zeroclaw_kind, Some(k) if k.eq_ignore_ascii_case("checkpoint") || k == "approval");
            Step {
                number,
                title,
                body: body.join("\n"),
                tools: w.tools.clone().unwrap_or_default(),
                requires_confirmation: w.confirmation.is_some_and(|(value, _)| value) || gate,
                kind: w.kind.map(|(kind, _)| kind),
                reference: w.reference.clone(),
                params: w.params.clone().unwrap_or_default(),
                id: w.id.clone(),
            }
        }

        proptest! {
            #![proptest_config(config(128))]

            #[test]
            fn written_steps_are_read_back_as_written(
                steps in prop::collection::vec(written(), 1..5),
                heading in prop::sample::select(vec!["## Steps", "## steps", "## STEPS"]),
            ) {
                let md = render(&steps, heading);
                let parsed = parse_steps(&md);
                prop_assert!(parsed.issues.is_empty(), "{:?}\n{}", parsed.issues, md);
                let want: Vec<Step> = steps.iter().enumerate().map(|(i, w)| expected(w, i as u32 + 1)).collect();
                prop_assert_eq!(parsed.steps, want, "{}", md);
            }
        }
    }
}
