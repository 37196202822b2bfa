//! Property tests of SOP.toml loading: no file makes the loader panic or
//! load a SOP beside an error, a SOP written with any mix of valid fields
//! loads with exactly those fields, each invalid field is reported under its
//! own key, and every SOP that loads gives envelopes the shipped schema
//! accepts.

use std::collections::BTreeSet;
use std::path::Path;

use chrono::Utc;
use proptest::prelude::*;
use serde_json::Value;
use toml::{Table, Value as Toml};

use super::*;
use crate::envelope::{execution, legacy, registry::RegistrySnapshot, schema, Run};
use crate::event::{Event, Payload, Source};
use crate::proptest_support::{config, hostile_text, token_soup};
use crate::sop::condition::Condition;

/// Loads `toml` as `<tmp>/<dir_name>/SOP.toml`.
fn load_text(dir_name: &str, toml: &str) -> LoadReport {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(dir_name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("SOP.toml"), toml).unwrap();
    load_dir(tmp.path(), ExecutionMode::Supervised)
}

/// What holds for every load, whatever the file said.
fn check_report(report: &LoadReport) -> Result<(), TestCaseError> {
    prop_assert!(report.sops.len() <= 1);
    prop_assert!(report.sops.is_empty() || report.errors.is_empty(), "loaded beside errors: {:?}", report.errors);
    for issue in report.errors.iter().chain(&report.warnings) {
        prop_assert!(!issue.reason.is_empty(), "{:?}", issue);
        prop_assert!(issue.file.ends_with("SOP.toml"), "{:?}", issue);
    }
    Ok(())
}

const TOML_PIECES: &[&str] = &[
    "[sop]",
    "[[triggers]]",
    "[[steps]]",
    "[sop.x]",
    "\n",
    "\n",
    "name",
    "description",
    "type",
    "path",
    "topic",
    "expression",
    "condition",
    "timezone",
    "board",
    "signal",
    "title",
    "ref",
    "params",
    " = ",
    "=",
    "\"x\"",
    "\"webhook\"",
    "\"/sop/a\"",
    "\"manual\"",
    "\"cron\"",
    "\"* * * * *\"",
    "\"$.a > 1\"",
    "1",
    "-1",
    "true",
    "1e400",
    "[",
    "]",
    "{",
    "}",
    ",",
    "'",
    "\"\"\"",
    "#",
    ".",
    "é",
    "\t",
    "\\",
    "1979-05-27T07:32:00Z",
];

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn any_text_loads_or_is_refused_cleanly(text in prop_oneof![hostile_text(200), token_soup(TOML_PIECES, 60)]) {
        check_report(&load_text("x", &text))?;
    }

    /// Well-formed TOML whose keys are SOP.toml's and whose values are of
    /// any type gets past the syntax check into the typed reading.
    #[test]
    fn any_table_of_sop_keys_loads_or_is_refused_cleanly(file in sop_key_soup()) {
        let text = toml::to_string(&file).unwrap();
        check_report(&load_text("x", &text))?;
    }
}

fn any_toml(depth: u32) -> impl Strategy<Value = Toml> {
    let leaf = prop_oneof![
        prop::sample::select(vec![
            "x",
            "",
            " ",
            "webhook",
            "mqtt",
            "cron",
            "peripheral",
            "manual",
            "calendar",
            "/sop/a",
            "/webhook",
            "a/+/#",
            "* * * * *",
            "0 0 8 * * *",
            "Europe/Paris",
            "$.a > 1",
            "> 0",
            "tool",
            "executor",
            "agent",
            "critical",
            "coalesce",
            "step_by_step",
            "checkpoint",
            "capability",
            "pin_3",
            "board-1",
            "a/b",
        ])
        .prop_map(|s| Toml::String(s.into())),
        hostile_text(10).prop_map(Toml::String),
        any::<i64>().prop_map(Toml::Integer),
        (-2i64..3).prop_map(Toml::Integer),
        any::<bool>().prop_map(Toml::Boolean),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Toml::Float),
        Just(Toml::Datetime("1979-05-27T07:32:00Z".parse().unwrap())),
    ];
    leaf.prop_recursive(depth, 12, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Toml::Array),
            prop::collection::vec(("[a-z_]{1,6}", inner), 0..4).prop_map(|kv| Toml::Table(kv.into_iter().collect())),
        ]
    })
}

const SOP_KEYS: &[&str] = &[
    "name",
    "description",
    "version",
    "priority",
    "execution_mode",
    "cooldown_secs",
    "max_concurrent",
    "admission_policy",
    "destination",
    "deterministic",
    "max_pending_approvals",
    "agent",
    "owner",
];
const TRIGGER_KEYS: &[&str] =
    &["type", "path", "topic", "expression", "timezone", "board", "signal", "condition", "extra"];
const STEP_KEYS: &[&str] = &[
    "title",
    "body",
    "tools",
    "requires_confirmation",
    "type",
    "ref",
    "params",
    "id",
    "suggested_tools",
    "kind",
    "number",
    "routing",
    "oops",
];

fn table_of(keys: &'static [&'static str]) -> impl Strategy<Value = Table> {
    prop::collection::vec((prop::sample::select(keys), any_toml(2)), 0..8)
        .prop_map(|kv| kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
}

fn sop_key_soup() -> impl Strategy<Value = Table> {
    (
        prop::option::weighted(0.9, table_of(SOP_KEYS)),
        prop::collection::vec(table_of(TRIGGER_KEYS), 0..4),
        prop::collection::vec(table_of(STEP_KEYS), 0..4),
        prop::option::weighted(0.1, any_toml(2)),
    )
        .prop_map(|(sop, triggers, steps, positions)| {
            let mut file = Table::new();
            if let Some(sop) = sop {
                file.insert("sop".into(), Toml::Table(sop));
            }
            let tables = |tables: Vec<Table>| Toml::Array(tables.into_iter().map(Toml::Table).collect());
            file.insert("triggers".into(), tables(triggers));
            file.insert("steps".into(), tables(steps));
            if let Some(positions) = positions {
                file.insert("positions".into(), positions);
            }
            file
        })
}

/// A trigger as written, and what its table says.
#[derive(Clone, Debug)]
enum WrittenTrigger {
    Webhook { path: String, condition: Option<String> },
    Mqtt { topic: String, condition: Option<String> },
    Cron { expression: String, timezone: Option<&'static str> },
    Peripheral { board: String, signal: String, condition: Option<String> },
    Manual,
}

impl WrittenTrigger {
    fn table(&self) -> Table {
        let mut t = Table::new();
        let mut set = |k: &str, v: &str| {
            t.insert(k.into(), Toml::String(v.into()));
        };
        let condition = match self {
            WrittenTrigger::Webhook { path, condition } => {
                set("type", "webhook");
                set("path", path);
                condition
            }
            WrittenTrigger::Mqtt { topic, condition } => {
                set("type", "mqtt");
                set("topic", topic);
                condition
            }
            WrittenTrigger::Cron { expression, timezone } => {
                set("type", "cron");
                set("expression", expression);
                if let Some(tz) = timezone {
                    set("timezone", tz);
                }
                &None
            }
            WrittenTrigger::Peripheral { board, signal, condition } => {
                set("type", "peripheral");
                set("board", board);
                set("signal", signal);
                condition
            }
            WrittenTrigger::Manual => {
                set("type", "manual");
                &None
            }
        };
        if let Some(c) = condition {
            t.insert("condition".into(), Toml::String(c.clone()));
        }
        t
    }

    fn condition(&self) -> Option<&str> {
        match self {
            WrittenTrigger::Webhook { condition, .. }
            | WrittenTrigger::Mqtt { condition, .. }
            | WrittenTrigger::Peripheral { condition, .. } => condition.as_deref(),
            _ => None,
        }
    }

    /// What `Trigger::describe` says of the loaded trigger.
    fn described(&self) -> String {
        let base = match self {
            WrittenTrigger::Webhook { path, .. } => format!("webhook {path}"),
            WrittenTrigger::Mqtt { topic, .. } => format!("mqtt {topic}"),
            WrittenTrigger::Cron { expression, timezone } => {
                format!("cron {expression} ({})", timezone.unwrap_or("UTC"))
            }
            WrittenTrigger::Peripheral { board, signal, .. } => format!("peripheral {board}/{signal}"),
            WrittenTrigger::Manual => "manual".into(),
        };
        // A blank condition is no condition.
        match self.condition() {
            Some(c) if !c.trim().is_empty() => format!("{base} if {c}"),
            _ => base,
        }
    }
}

/// Conditions: mostly valid ones, sometimes any text (which must be
/// refused exactly when the condition parser refuses it).
fn condition() -> impl Strategy<Value = Option<String>> {
    let valid = prop::sample::select(vec![
        "$.a == 1",
        "$.severity >= 2 && $.kind != \"test\"",
        "> 0",
        "== \"on\"",
        "!($['a b'][0] < 1.5) || $.x == null",
        "",
        " ",
        "$.data.temp == critical",
        "$.error-rate > 0.5 && $.a.0 == \"true\"",
    ])
    .prop_map(str::to_string);
    prop::option::of(prop_oneof![8 => valid, 1 => hostile_text(16)])
}

fn trigger() -> impl Strategy<Value = WrittenTrigger> {
    let path = prop_oneof![Just("/webhook".to_string()), "/sop/[a-z0-9-]{1,8}(/[a-z0-9_.-]{1,8}){0,2}",];
    let level = prop_oneof![3 => "[a-z0-9]{1,6}", 1 => Just("+".to_string())];
    let topic = (prop::collection::vec(level, 1..4), any::<bool>())
        .prop_map(|(levels, hash)| levels.join("/") + if hash { "/#" } else { "" });
    let field = |min: u32, max: u32| {
        prop_oneof![
            Just("*".to_string()),
            (min..=max).prop_map(|n| n.to_string()),
            (1..=max).prop_map(|n| format!("*/{n}")),
            (min..=max, min..=max).prop_map(|(a, b)| format!("{}-{}", a.min(b), a.max(b))),
        ]
    };
    let expression = prop_oneof![
        (field(0, 59), field(0, 23), field(1, 28), field(1, 12), field(0, 7))
            .prop_map(|(m, h, d, mo, w)| format!("{m} {h} {d} {mo} {w}")),
        (field(0, 59), field(0, 59), field(0, 23)).prop_map(|(s, m, h)| format!("{s} {m} {h} * * *")),
        prop::sample::select(vec!["@daily", "@hourly", "0 0 8 * * MON-FRI", "0 30 2 * * * 2030"])
            .prop_map(str::to_string),
    ];
    let timezone =
        prop::option::of(prop::sample::select(vec!["UTC", "Europe/Paris", "America/New_York", "Asia/Kolkata"]));
    prop_oneof![
        (path, condition()).prop_map(|(path, condition)| WrittenTrigger::Webhook { path, condition }),
        (topic, condition()).prop_map(|(topic, condition)| WrittenTrigger::Mqtt { topic, condition }),
        (expression, timezone).prop_map(|(expression, timezone)| WrittenTrigger::Cron { expression, timezone }),
        ("[a-z0-9][a-z0-9._-]{0,10}", "[A-Za-z0-9_.:é-]{1,10}", condition())
            .prop_map(|(board, signal, condition)| WrittenTrigger::Peripheral { board, signal, condition }),
        Just(WrittenTrigger::Manual),
    ]
}

/// A `[[steps]]` table as written.
#[derive(Clone, Debug)]
struct WrittenStep {
    title: Option<String>,
    body: Option<String>,
    tools: Option<Vec<String>>,
    /// Write `tools` under ZeroClaw's name `suggested_tools`.
    suggested: bool,
    requires_confirmation: Option<bool>,
    zeroclaw_kind: Option<&'static str>,
    target: Option<(StepKind, String)>,
    params: Option<Table>,
    id: Option<String>,
}

fn step_kind() -> impl Strategy<Value = StepKind> {
    prop::sample::select(vec![StepKind::Tool, StepKind::Capability, StepKind::Usecase])
}

/// Step text fields: any text, the empty string and blanks included.
fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![12 => hostile_text(12), 1 => prop::sample::select(vec!["", " ", "\t"]).prop_map(str::to_string)]
}

fn params() -> impl Strategy<Value = Table> {
    let leaf = prop_oneof![
        hostile_text(8).prop_map(Toml::String),
        any::<i64>().prop_map(Toml::Integer),
        any::<bool>().prop_map(Toml::Boolean),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Toml::Float),
    ];
    let value = leaf.prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Toml::Array),
            prop::collection::vec((hostile_text(5), inner), 0..3).prop_map(|kv| Toml::Table(kv.into_iter().collect())),
        ]
    });
    prop::collection::vec((hostile_text(6), value), 0..4).prop_map(|kv| kv.into_iter().collect())
}

fn step(for_executor: bool) -> impl Strategy<Value = WrittenStep> {
    let target = (step_kind(), any_text());
    let target = if for_executor { target.prop_map(Some).boxed() } else { prop::option::of(target).boxed() };
    (
        (prop::option::weighted(0.9, any_text()), prop::option::of(any_text())),
        (prop::option::of(prop::collection::vec(any_text(), 0..3)), any::<bool>(), prop::option::of(any::<bool>())),
        prop::option::of(prop::sample::select(vec!["execute", "checkpoint", "approval"])),
        target,
        prop::option::of(params()),
        prop::option::of(any_text()),
    )
        .prop_map(
            |((title, body), (tools, suggested, requires_confirmation), zeroclaw_kind, target, params, id)| {
                WrittenStep { title, body, tools, suggested, requires_confirmation, zeroclaw_kind, target, params, id }
            },
        )
}

impl WrittenStep {
    fn table(&self) -> Table {
        let mut t = Table::new();
        let mut text = |k: &str, v: &Option<String>| {
            if let Some(v) = v {
                t.insert(k.into(), Toml::String(v.clone()));
            }
        };
        text("title", &self.title);
        text("body", &self.body);
        text("id", &self.id);
        if let Some(tools) = &self.tools {
            let key = if self.suggested { "suggested_tools" } else { "tools" };
            t.insert(key.into(), Toml::Array(tools.iter().cloned().map(Toml::String).collect()));
        }
        if let Some(b) = self.requires_confirmation {
            t.insert("requires_confirmation".into(), Toml::Boolean(b));
        }
        if let Some(kind) = self.zeroclaw_kind {
            t.insert("kind".into(), Toml::String(kind.into()));
        }
        if let Some((kind, reference)) = &self.target {
            t.insert("type".into(), Toml::String(serde_json::to_value(kind).unwrap().as_str().unwrap().into()));
            t.insert("ref".into(), Toml::String(reference.clone()));
        }
        if let Some(params) = &self.params {
            t.insert("params".into(), Toml::Table(params.clone()));
        }
        t
    }

    /// The loaded step, or the keys of the errors it must give.
    fn expected(&self, number: u32, errors: &mut BTreeSet<String>) -> Step {
        let key = |k: &str| format!("steps[{}].{k}", number - 1);
        let reference = self.target.as_ref().map(|(_, r)| r.clone());
        let title = match (&self.title, &reference) {
            (Some(t), _) if !t.trim().is_empty() => t.clone(),
            (_, Some(r)) => r.clone(),
            _ => {
                errors.insert(key("title"));
                String::new()
            }
        };
        if reference.as_ref().is_some_and(|r| r.trim().is_empty()) {
            errors.insert(key("ref"));
        }
        if self.id.as_ref().is_some_and(|id| id.trim().is_empty()) {
            errors.insert(key("id"));
        }
        let gate = matches!(self.zeroclaw_kind, Some("checkpoint" | "approval"));
        Step {
            number,
            title,
            body: self.body.clone().unwrap_or_default(),
            tools: self.tools.clone().unwrap_or_default(),
            requires_confirmation: self.requires_confirmation.unwrap_or(false) || gate,
            kind: self.target.as_ref().map(|(k, _)| *k),
            reference,
            params: match &self.params {
                Some(p) => match serde_json::to_value(p).unwrap() {
                    Value::Object(map) => map,
                    other => panic!("a table is an object, not {other}"),
                },
                None => Default::default(),
            },
            id: self.id.clone(),
        }
    }
}

/// A whole SOP.toml as written.
#[derive(Clone, Debug)]
struct WrittenSop {
    name: String,
    description: String,
    version: Option<String>,
    priority: Option<Priority>,
    execution_mode: Option<ExecutionMode>,
    deterministic: Option<bool>,
    cooldown_secs: Option<u64>,
    max_concurrent: Option<u32>,
    admission_policy: Option<AdmissionPolicy>,
    destination: Destination,
    write_destination: bool,
    triggers: Vec<WrittenTrigger>,
    steps: Vec<WrittenStep>,
}

fn written_sop() -> impl Strategy<Value = WrittenSop> {
    let destination = prop::sample::select(vec![Destination::Agent, Destination::Executor]);
    (destination, any::<bool>()).prop_flat_map(|(destination, write_destination)| {
        let for_executor = destination == Destination::Executor;
        let steps = prop::collection::vec(step(for_executor), usize::from(for_executor)..4);
        (
            ("[a-z0-9][a-z0-9._-]{0,12}", any_text(), prop::option::of(any_text())),
            (
                prop::option::of(prop::sample::select(vec![
                    Priority::Low,
                    Priority::Normal,
                    Priority::High,
                    Priority::Critical,
                ])),
                prop::option::of(prop::sample::select(vec![
                    ExecutionMode::Auto,
                    ExecutionMode::Supervised,
                    ExecutionMode::StepByStep,
                    ExecutionMode::PriorityBased,
                    ExecutionMode::Deterministic,
                ])),
                prop::option::of(any::<bool>()),
            ),
            (
                prop::option::of(0..=i64::MAX as u64),
                prop::option::of(1..=u32::MAX),
                prop::option::of(prop::sample::select(vec![
                    AdmissionPolicy::Parallel,
                    AdmissionPolicy::Hold,
                    AdmissionPolicy::Coalesce,
                    AdmissionPolicy::Drop,
                ])),
            ),
            prop::collection::vec(trigger(), 0..4),
            steps,
        )
            .prop_map(
                move |(
                    (name, description, version),
                    (priority, execution_mode, deterministic),
                    (cooldown_secs, max_concurrent, admission_policy),
                    triggers,
                    steps,
                )| {
                    // An explicit contradiction is its own error, tested elsewhere.
                    let deterministic = deterministic
                        .filter(|d| !*d || execution_mode.is_none_or(|m| m == ExecutionMode::Deterministic));
                    WrittenSop {
                        name,
                        description,
                        version,
                        priority,
                        execution_mode,
                        deterministic,
                        cooldown_secs,
                        max_concurrent,
                        admission_policy,
                        destination,
                        write_destination: write_destination || destination == Destination::Executor,
                        triggers,
                        steps,
                    }
                },
            )
    })
}

fn enum_text<T: serde::Serialize>(value: &T) -> Toml {
    Toml::String(serde_json::to_value(value).unwrap().as_str().unwrap().to_string())
}

impl WrittenSop {
    fn toml(&self) -> String {
        let mut sop = Table::new();
        sop.insert("name".into(), Toml::String(self.name.clone()));
        sop.insert("description".into(), Toml::String(self.description.clone()));
        if let Some(v) = &self.version {
            sop.insert("version".into(), Toml::String(v.clone()));
        }
        if let Some(p) = &self.priority {
            sop.insert("priority".into(), enum_text(p));
        }
        if let Some(m) = &self.execution_mode {
            sop.insert("execution_mode".into(), enum_text(m));
        }
        if let Some(d) = self.deterministic {
            sop.insert("deterministic".into(), Toml::Boolean(d));
        }
        if let Some(c) = self.cooldown_secs {
            sop.insert("cooldown_secs".into(), Toml::Integer(c as i64));
        }
        if let Some(m) = self.max_concurrent {
            sop.insert("max_concurrent".into(), Toml::Integer(m.into()));
        }
        if let Some(a) = &self.admission_policy {
            sop.insert("admission_policy".into(), enum_text(a));
        }
        if self.write_destination {
            sop.insert("destination".into(), enum_text(&self.destination));
        }
        let mut file = Table::new();
        file.insert("sop".into(), Toml::Table(sop));
        file.insert("triggers".into(), Toml::Array(self.triggers.iter().map(|t| Toml::Table(t.table())).collect()));
        file.insert("steps".into(), Toml::Array(self.steps.iter().map(|s| Toml::Table(s.table())).collect()));
        toml::to_string(&file).unwrap()
    }

    /// The steps the loader must produce, and the keys of every error the
    /// file must give.
    fn expected(&self) -> (Vec<Step>, BTreeSet<String>) {
        let mut errors = BTreeSet::new();
        if self.description.trim().is_empty() {
            errors.insert("sop.description".to_string());
        }
        if self.version.as_ref().is_some_and(|v| v.trim().is_empty()) {
            errors.insert("sop.version".to_string());
        }
        for (i, trigger) in self.triggers.iter().enumerate() {
            if trigger.condition().is_some_and(|c| Condition::parse(c).is_err()) {
                errors.insert(format!("triggers[{i}].condition"));
            }
        }
        let steps = self.steps.iter().enumerate().map(|(i, s)| s.expected(i as u32 + 1, &mut errors)).collect();
        (steps, errors)
    }
}

/// The envelopes a run of `sop` leaves in, checked against the schema.
fn check_envelopes(sop: &Sop) -> Result<(), TestCaseError> {
    let event = Event::new(
        crate::ids::fresh(),
        Source::Manual,
        sop.name.clone(),
        Payload::Json(serde_json::json!({"k": 1})),
        Utc::now(),
    );
    let trigger = legacy::event_json(&event);
    let run = Run {
        run_id: "run-1",
        sop_name: &sop.name,
        sop_version: &sop.version,
        source: event.source,
        trigger: &trigger,
        session: None,
    };
    // An agent SOP with steps goes step by step: only one without steps
    // leaves as a legacy envelope.
    if sop.destination == Destination::Agent && sop.steps.is_empty() {
        let agent = legacy::build_for_run(&run, &sop.steps);
        prop_assert!(schema::validate(&agent).is_ok(), "{:?}", schema::validate(&agent));
    }
    if sop.destination == Destination::Executor {
        let registries = RegistrySnapshot { categories: Vec::new() };
        let header =
            execution::Header { id: "env-1", timestamp: Utc::now(), destination: sop.destination, trace_id: None };
        let input = execution::ExecutionInput { header, run, steps: &sop.steps, registries: &registries };
        let envelope = execution::build(&input);
        prop_assert!(schema::validate(&envelope).is_ok(), "{:?}", schema::validate(&envelope));
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(128))]

    /// A SOP.toml written with any mix of fields loads with exactly those
    /// fields (and the documented defaults), or gives exactly the errors its
    /// invalid fields call for; what loads can be delivered.
    #[test]
    fn a_written_sop_loads_as_written_or_names_each_bad_field(sop in written_sop()) {
        let text = sop.toml();
        let report = load_text(&sop.name, &text);
        check_report(&report)?;
        let (steps, want_errors) = sop.expected();
        let got_errors: BTreeSet<String> = report.errors.iter().map(|e| e.key.clone()).collect();
        prop_assert_eq!(&got_errors, &want_errors, "{:#?}\n{}", report.errors, text);
        if !want_errors.is_empty() {
            return Ok(());
        }
        let loaded = &report.sops[0];
        prop_assert_eq!(&loaded.name, &sop.name);
        prop_assert_eq!(&loaded.description, &sop.description);
        prop_assert_eq!(&loaded.version, sop.version.as_deref().unwrap_or("0.1.0"));
        prop_assert_eq!(loaded.priority, sop.priority.unwrap_or(Priority::Normal));
        let mode = match (sop.deterministic, sop.execution_mode) {
            (Some(true), _) => ExecutionMode::Deterministic,
            (_, mode) => mode.unwrap_or(ExecutionMode::Supervised),
        };
        prop_assert_eq!(loaded.execution_mode, mode);
        prop_assert_eq!(loaded.cooldown_secs, sop.cooldown_secs.unwrap_or(0));
        prop_assert_eq!(loaded.max_concurrent, sop.max_concurrent.unwrap_or(1));
        prop_assert_eq!(loaded.admission_policy, sop.admission_policy.unwrap_or(AdmissionPolicy::Parallel));
        prop_assert_eq!(loaded.destination, sop.destination);
        let described: Vec<String> = loaded.triggers.iter().map(Trigger::describe).collect();
        let want: Vec<String> = sop.triggers.iter().map(WrittenTrigger::described).collect();
        prop_assert_eq!(described, want);
        prop_assert_eq!(&loaded.steps, &steps);
        prop_assert_eq!(loaded.file.file_name(), Some(Path::new("SOP.toml").as_os_str()));
        check_envelopes(loaded)?;
    }
}

/// The TOML parser bounds its own recursion; a hostile file is a syntax
/// error, not a stack overflow of `fanin validate` or of the daemon.
#[test]
fn deeply_nested_toml_is_a_syntax_error() {
    let header = "[sop]\nname = \"x\"\ndescription = \"d\"\nagent = ";
    for value in [
        format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000)),
        format!("{}1{}", "{a = ".repeat(10_000), "}".repeat(10_000)),
    ] {
        let report = load_text("x", &format!("{header}{value}\n"));
        assert!(report.sops.is_empty());
        assert!(report.errors.iter().any(|e| e.reason.contains("recursion")), "{:?}", report.errors);
    }
}
