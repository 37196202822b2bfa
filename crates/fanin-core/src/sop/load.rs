//! Loading a SOP tree (docs/configuration.md): `<dir>/<name>/SOP.toml`, with
//! an optional `SOP.md` whose `## Steps` section supplies the steps, from
//! the files a `SopFiles` hands in.
//!
//! Validation fails closed: every problem of every SOP is collected, each
//! naming the file, the key (`sop.name`, `triggers[1].expression`,
//! `steps[0].ref`) and the reason, and a SOP with any error is not loaded.
//!
//! The format is a compatible subset of ZeroClaw's SOP.toml. Keys ZeroClaw
//! has and fanin does not use (`[sop].agent`, `max_pending_approvals`,
//! `[[positions]]`, step routing keys, …) load with a warning; any other
//! unknown key is an error. Choices where fanin differs or decides:
//! - `version` defaults to `"0.1.0"`, ZeroClaw's default, so a SOP moved
//!   between the two reports the same version in audits.
//! - `deterministic = true` (ZeroClaw) means `execution_mode =
//!   "deterministic"`; combined with a different `execution_mode` it is an
//!   error rather than a silent override.
//! - `suggested_tools` (ZeroClaw) is accepted as a synonym of `tools`; a
//!   step `kind = "checkpoint"` (or `"approval"`) means
//!   `requires_confirmation = true`.
//! - Trigger types fanin does not serve yet, ZeroClaw's `calendar` and
//!   `sopcompletion`, are dropped with a warning
//!   naming the type; any other unknown type is an error. So is a `channel`
//!   trigger naming one of ZeroClaw's channels fanin has no source for
//!   (`discord`, `matrix`, …).
//! - SOP.md supplies the steps when its `## Steps` section has at least one
//!   numbered item; `[[steps]]` are then ignored (with a warning when both
//!   are present). A SOP.md without such items leaves `[[steps]]` in force.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::condition::Condition;
use super::model::*;
use super::steps_md;
use super::SopFiles;
use super::{is_signal_name, LoadReport, SopIssue};
use crate::strict_toml::{deserialize_table, read_strict, KeyLines, TomlProblem};

const IGNORED_ZEROCLAW_KEY: &str = "ignored: ZeroClaw key fanin does not use";
const DEFAULT_VERSION: &str = "0.1.0";
const UNSERVED_TRIGGER_TYPES: &[&str] = &["calendar", "sopcompletion"];
/// The trigger types fanin serves, as messages list them.
const SERVED_TRIGGER_TYPES: &str = "webhook, mqtt, cron, peripheral, manual, channel, drive, filesystem or amqp";

/// SOP.toml as written. Keys fanin uses are typed; ZeroClaw keys it ignores
/// are accepted as any value so they can be warned about.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    sop: Option<RawSop>,
    #[serde(default)]
    triggers: Vec<toml::Table>,
    #[serde(default)]
    steps: Vec<RawStep>,
    /// ZeroClaw: editor canvas coordinates of steps.
    positions: Option<toml::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSop {
    name: Option<String>,
    description: Option<String>,
    version: Option<String>,
    priority: Option<Priority>,
    execution_mode: Option<ExecutionMode>,
    cooldown_secs: Option<u64>,
    max_concurrent: Option<u32>,
    admission_policy: Option<AdmissionPolicy>,
    destination: Option<Destination>,
    /// ZeroClaw: `true` forces the deterministic mode (fanin honours it).
    deterministic: Option<bool>,
    /// ZeroClaw keys fanin ignores.
    max_pending_approvals: Option<toml::Value>,
    agent: Option<toml::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    title: Option<String>,
    body: Option<String>,
    tools: Option<Vec<String>>,
    requires_confirmation: Option<bool>,
    #[serde(rename = "type")]
    step_type: Option<StepKind>,
    #[serde(rename = "ref")]
    reference: Option<String>,
    params: Option<toml::Table>,
    id: Option<String>,
    /// ZeroClaw's name for `tools`.
    suggested_tools: Option<Vec<String>>,
    /// ZeroClaw: execute | checkpoint | approval | capability.
    kind: Option<String>,
    // ZeroClaw step keys fanin ignores.
    number: Option<toml::Value>,
    schema: Option<toml::Value>,
    scope: Option<toml::Value>,
    routing: Option<toml::Value>,
    on_failure: Option<toml::Value>,
    mode: Option<toml::Value>,
    calls: Option<toml::Value>,
    pos: Option<toml::Value>,
    agent: Option<toml::Value>,
    capability: Option<toml::Value>,
    with: Option<toml::Value>,
    policy: Option<toml::Value>,
    gate_prompt: Option<toml::Value>,
    edit: Option<toml::Value>,
}

impl RawStep {
    /// The ZeroClaw-only keys present in this step.
    fn ignored_zeroclaw_keys(&self) -> Vec<&'static str> {
        [
            ("number", self.number.is_some()),
            ("schema", self.schema.is_some()),
            ("scope", self.scope.is_some()),
            ("routing", self.routing.is_some()),
            ("on_failure", self.on_failure.is_some()),
            ("mode", self.mode.is_some()),
            ("calls", self.calls.is_some()),
            ("pos", self.pos.is_some()),
            ("agent", self.agent.is_some()),
            ("capability", self.capability.is_some()),
            ("with", self.with.is_some()),
            ("policy", self.policy.is_some()),
            ("gate_prompt", self.gate_prompt.is_some()),
            ("edit", self.edit.is_some()),
        ]
        .into_iter()
        .filter_map(|(key, present)| present.then_some(key))
        .collect()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebhook {
    path: String,
    condition: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMqtt {
    topic: String,
    condition: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCron {
    expression: String,
    timezone: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPeripheral {
    board: String,
    signal: String,
    condition: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManual {}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFilesystem {
    path: String,
    #[serde(default)]
    events: Vec<String>,
    condition: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAmqp {
    routing_key: String,
    condition: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChannel {
    channel: String,
    alias: Option<String>,
    condition: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDrive {
    alias: Option<String>,
    #[serde(default)]
    events: Vec<String>,
    /// Smart Office's drive trigger names its folder; fanin takes it as a
    /// filter on the file's parents, beside the instance's own `folder_id`.
    folder_id: Option<String>,
    condition: Option<String>,
}

/// Problems found in one SOP directory.
struct Issues {
    toml_file: PathBuf,
    lines: KeyLines,
    errors: Vec<SopIssue>,
    warnings: Vec<SopIssue>,
}

impl Issues {
    fn issue(&self, file: &Path, key: &str, reason: impl Into<String>, line: Option<usize>) -> SopIssue {
        let reason = reason.into();
        SopIssue {
            file: file.to_path_buf(),
            key: key.to_string(),
            reason: match line {
                Some(line) => format!("{reason} (line {line})"),
                None => reason,
            },
        }
    }

    /// An error in SOP.toml, located by key.
    fn error(&mut self, key: &str, reason: impl Into<String>) {
        let issue = self.issue(&self.toml_file.clone(), key, reason, self.lines.line_of(key));
        self.errors.push(issue);
    }

    fn warning(&mut self, key: &str, reason: impl Into<String>) {
        let issue = self.issue(&self.toml_file.clone(), key, reason, self.lines.line_of(key));
        self.warnings.push(issue);
    }

    fn toml_problem(&mut self, prefix: &str, problem: &TomlProblem) {
        let key = match (prefix.is_empty(), problem.key.is_empty()) {
            (true, _) => problem.key.clone(),
            (false, true) => prefix.to_string(),
            (false, false) => format!("{prefix}.{}", problem.key),
        };
        // A syntax problem carries line and column in its reason already.
        let (reason, line) = if problem.column.is_some() {
            (problem.reason_with_location(), None)
        } else {
            (problem.reason.clone(), problem.line.or_else(|| self.lines.line_of(&key)))
        };
        let issue = self.issue(&self.toml_file.clone(), &key, reason, line);
        self.errors.push(issue);
    }
}

/// Loads every `<dir>/<name>/SOP.toml` that `files` holds, sorted by
/// directory name.
pub fn load_tree(dir: &Path, files: &dyn SopFiles, default_mode: ExecutionMode) -> LoadReport {
    let mut report = LoadReport::default();
    let mut sop_dirs = match files.subdirs(dir) {
        Ok(dirs) => dirs,
        Err(e) => {
            report.errors.push(SopIssue {
                file: dir.to_path_buf(),
                key: String::new(),
                reason: format!("cannot read the SOP directory: {e}"),
            });
            return report;
        }
    };
    sop_dirs.retain(|p| !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')));
    sop_dirs.sort();

    // name → the SOP.toml that first defined it
    let mut first_definition: HashMap<String, PathBuf> = HashMap::new();
    for sop_dir in sop_dirs {
        let toml_file = sop_dir.join("SOP.toml");
        let Some(text) = files.read(&toml_file) else {
            report.warnings.push(SopIssue {
                file: sop_dir.clone(),
                key: String::new(),
                reason: "no SOP.toml in this directory; skipped".into(),
            });
            continue;
        };
        let (sop, issues) = load_one(&sop_dir, &toml_file, text, files, default_mode);
        let mut errors = issues.errors;
        if let Some(sop) = &sop {
            // Names of invalid SOPs count too: fixing one must not reveal a
            // duplicate only on the next run.
            match first_definition.get(&sop.name) {
                Some(first) => errors.push(SopIssue {
                    file: toml_file.clone(),
                    key: "sop.name".into(),
                    reason: format!("duplicate SOP name {:?}: already defined in {}", sop.name, first.display()),
                }),
                None => {
                    first_definition.insert(sop.name.clone(), toml_file.clone());
                }
            }
        }
        report.warnings.extend(issues.warnings);
        match sop {
            Some(sop) if errors.is_empty() => report.sops.push(sop),
            _ => report.errors.extend(errors),
        }
    }
    report
}

/// Loads one SOP directory. The SOP is `None` when it cannot be built; it
/// may be `Some` while errors exist (the caller then rejects it).
fn load_one(
    sop_dir: &Path,
    toml_file: &Path,
    text: Result<String, String>,
    files: &dyn SopFiles,
    default_mode: ExecutionMode,
) -> (Option<Sop>, Issues) {
    let mut issues = Issues {
        toml_file: toml_file.to_path_buf(),
        lines: KeyLines::default(),
        errors: Vec::new(),
        warnings: Vec::new(),
    };
    let text = match text {
        Ok(text) => text,
        Err(e) => {
            issues.error("", format!("cannot read: {e}"));
            return (None, issues);
        }
    };
    let read = read_strict::<RawFile>(&text);
    issues.lines = read.lines;
    for problem in &read.problems {
        issues.toml_problem("", problem);
    }
    let Some(raw) = read.value else {
        return (None, issues);
    };
    if raw.positions.is_some() {
        issues.warning("positions", IGNORED_ZEROCLAW_KEY);
    }
    let Some(raw_sop) = raw.sop else {
        issues.error("sop", "the [sop] table is required");
        return (None, issues);
    };
    let header = build_header(raw_sop, sop_dir, default_mode, &mut issues);
    let mut triggers = build_triggers(raw.triggers, &mut issues);
    let toml_steps = build_toml_steps(raw.steps, &mut issues);
    let (mut steps, steps_file) = choose_steps(sop_dir, files, toml_steps, &mut issues);
    let Some(header) = header else {
        return (None, issues);
    };
    check_steps(&steps, &steps_file, header.destination, &mut issues);
    if triggers.is_empty() {
        issues.warning("triggers", "no triggers: nothing can start this SOP");
    }
    // Held for the daemon's life: drop the room `push` left (a SOP with one
    // trigger and one step would otherwise hold room for four of each).
    triggers.shrink_to_fit();
    steps.shrink_to_fit();
    let sop = Sop {
        name: header.name,
        description: header.description,
        version: header.version,
        priority: header.priority,
        execution_mode: header.execution_mode,
        cooldown_secs: header.cooldown_secs,
        max_concurrent: header.max_concurrent,
        admission_policy: header.admission_policy,
        destination: header.destination,
        triggers,
        steps,
        file: toml_file.to_path_buf(),
    };
    (Some(sop), issues)
}

struct Header {
    name: String,
    description: String,
    version: String,
    priority: Priority,
    execution_mode: ExecutionMode,
    cooldown_secs: u64,
    max_concurrent: u32,
    admission_policy: AdmissionPolicy,
    destination: Destination,
}

fn build_header(raw: RawSop, sop_dir: &Path, default_mode: ExecutionMode, issues: &mut Issues) -> Option<Header> {
    let name = match raw.name {
        None => {
            issues.error("sop.name", "required key is missing");
            None
        }
        Some(name) if !is_sop_name(&name) => {
            issues.error("sop.name", format!("{name:?} is not a SOP name; expected [a-z0-9][a-z0-9._-]*"));
            None
        }
        Some(name) => {
            let dir_name = sop_dir.file_name().map(|n| n.to_string_lossy().into_owned());
            if dir_name.as_deref() != Some(name.as_str()) {
                issues.warning(
                    "sop.name",
                    format!("{name:?} differs from its directory name {:?}", dir_name.unwrap_or_default()),
                );
            }
            Some(name)
        }
    };
    let description = match raw.description {
        Some(d) if !d.trim().is_empty() => Some(d),
        Some(_) => {
            issues.error("sop.description", "must not be empty");
            None
        }
        None => {
            issues.error("sop.description", "required key is missing");
            None
        }
    };
    let version = raw.version.unwrap_or_else(|| DEFAULT_VERSION.to_string());
    if version.trim().is_empty() {
        issues.error("sop.version", "must not be empty");
    }
    let max_concurrent = raw.max_concurrent.unwrap_or(1);
    if max_concurrent == 0 {
        issues.error("sop.max_concurrent", "must be at least 1");
    }
    let execution_mode = match (raw.deterministic, raw.execution_mode) {
        (Some(true), Some(mode)) if mode != ExecutionMode::Deterministic => {
            issues.error(
                "sop.deterministic",
                format!("deterministic = true contradicts execution_mode = {:?}; remove one of them", mode_name(mode)),
            );
            mode
        }
        (Some(true), _) => ExecutionMode::Deterministic,
        (_, mode) => mode.unwrap_or(default_mode),
    };
    if raw.max_pending_approvals.is_some() {
        issues.warning("sop.max_pending_approvals", IGNORED_ZEROCLAW_KEY);
    }
    if raw.agent.is_some() {
        issues.warning("sop.agent", IGNORED_ZEROCLAW_KEY);
    }
    Some(Header {
        name: name?,
        description: description?,
        version,
        priority: raw.priority.unwrap_or(Priority::Normal),
        execution_mode,
        cooldown_secs: raw.cooldown_secs.unwrap_or(0),
        max_concurrent,
        admission_policy: raw.admission_policy.unwrap_or(AdmissionPolicy::Parallel),
        destination: raw.destination.unwrap_or(Destination::Agent),
    })
}

fn mode_name(mode: ExecutionMode) -> String {
    serde_json::to_value(mode).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

/// SOP names appear in URLs, CLI arguments and audit records.
pub(crate) fn is_sop_name(name: &str) -> bool {
    super::is_board_name(name)
}

fn build_triggers(tables: Vec<toml::Table>, issues: &mut Issues) -> Vec<Trigger> {
    let mut triggers = Vec::new();
    for (i, mut table) in tables.into_iter().enumerate() {
        let prefix = format!("triggers[{i}]");
        let kind = match table.remove("type") {
            Some(toml::Value::String(kind)) => kind,
            Some(other) => {
                issues.error(&format!("{prefix}.type"), format!("expected a string, found {}", other.type_str()));
                continue;
            }
            None => {
                issues.error(
                    &format!("{prefix}.type"),
                    format!("required key is missing; expected {SERVED_TRIGGER_TYPES}"),
                );
                continue;
            }
        };
        if let Some(trigger) = build_trigger(&kind, table, &prefix, issues) {
            triggers.push(trigger);
        }
    }
    triggers
}

fn build_trigger(kind: &str, table: toml::Table, prefix: &str, issues: &mut Issues) -> Option<Trigger> {
    let key = |k: &str| format!("{prefix}.{k}");
    match kind {
        "webhook" => {
            let raw: RawWebhook = typed(table, prefix, kind, issues)?;
            let path_ok = check_webhook_path(&raw.path).map_err(|r| issues.error(&key("path"), r)).is_ok();
            let condition = parse_condition(raw.condition, prefix, issues)?;
            path_ok.then_some(Trigger { spec: TriggerSpec::Webhook { path: raw.path }, condition })
        }
        "mqtt" => {
            let raw: RawMqtt = typed(table, prefix, kind, issues)?;
            let topic_ok =
                crate::topic::validate_filter(&raw.topic).map_err(|r| issues.error(&key("topic"), r)).is_ok();
            let condition = parse_condition(raw.condition, prefix, issues)?;
            topic_ok.then_some(Trigger { spec: TriggerSpec::Mqtt { topic: raw.topic }, condition })
        }
        "cron" => {
            let raw: RawCron = typed(table, prefix, kind, issues)?;
            // Both checked, so one SOP.toml reports both problems at once.
            let timezone = match &raw.timezone {
                Some(tz) => crate::cron::parse_timezone(tz).map_err(|r| issues.error(&key("timezone"), r)),
                None => Ok(chrono_tz::Tz::UTC),
            };
            let schedule =
                crate::cron::parse_schedule(&raw.expression, None).map_err(|r| issues.error(&key("expression"), r));
            let schedule = schedule.ok()?.in_timezone(timezone.ok()?);
            for warning in schedule.warnings() {
                issues.warning(&key("expression"), warning);
            }
            Some(Trigger { spec: TriggerSpec::Cron(Box::new(schedule)), condition: None })
        }
        "peripheral" => {
            let raw: RawPeripheral = typed(table, prefix, kind, issues)?;
            let mut ok = true;
            if !super::is_board_name(&raw.board) {
                issues.error(
                    &key("board"),
                    format!("{:?} is not a board name; expected [a-z0-9][a-z0-9._-]*", raw.board),
                );
                ok = false;
            }
            if !is_signal_name(&raw.signal) {
                issues.error(
                    &key("signal"),
                    format!("{:?} is not a signal name: non-empty, without '/', '+', '#' or spaces", raw.signal),
                );
                ok = false;
            }
            let condition = parse_condition(raw.condition, prefix, issues)?;
            ok.then_some(Trigger { spec: TriggerSpec::Peripheral { board: raw.board, signal: raw.signal }, condition })
        }
        "manual" => {
            let _: RawManual = typed(table, prefix, kind, issues)?;
            Some(Trigger { spec: TriggerSpec::Manual, condition: None })
        }
        "channel" => build_channel(typed(table, prefix, kind, issues)?, prefix, issues),
        "drive" => build_drive(typed(table, prefix, kind, issues)?, prefix, issues),
        "filesystem" => build_filesystem(typed(table, prefix, kind, issues)?, prefix, issues),
        "amqp" => {
            let raw: RawAmqp = typed(table, prefix, kind, issues)?;
            let ok = crate::routing_key::validate_pattern(&raw.routing_key)
                .map_err(|r| issues.error(&key("routing_key"), r))
                .is_ok();
            let condition = parse_condition(raw.condition, prefix, issues)?;
            ok.then_some(Trigger { spec: TriggerSpec::Amqp { routing_key: raw.routing_key }, condition })
        }
        _ if UNSERVED_TRIGGER_TYPES.contains(&kind) => {
            issues.warning(
                &key("type"),
                format!("ignored: trigger type {kind:?} is not served by fanin yet; this trigger never fires"),
            );
            None
        }
        _ => {
            issues.error(&key("type"), format!("unknown trigger type {kind:?}; expected {SERVED_TRIGGER_TYPES}"));
            None
        }
    }
}

/// The channels ZeroClaw has that fanin has no source for: a trigger on
/// one loads, with a warning, and never fires.
const UNSERVED_CHANNELS: &[&str] =
    &["discord", "matrix", "whatsapp", "signal", "imessage", "irc", "lark", "dingtalk", "qq", "mattermost", "cli"];

fn build_channel(raw: RawChannel, prefix: &str, issues: &mut Issues) -> Option<Trigger> {
    let key = |k: &str| format!("{prefix}.{k}");
    let condition = parse_condition(raw.condition, prefix, issues)?;
    let alias = checked_alias(raw.alias, prefix, issues)?;
    let Some(channel) = ChannelKind::parse(&raw.channel) else {
        if UNSERVED_CHANNELS.contains(&raw.channel.as_str()) {
            issues.warning(
                &key("channel"),
                format!("ignored: fanin has no {:?} channel source; this trigger never fires", raw.channel),
            );
        } else {
            issues.error(
                &key("channel"),
                format!("unknown channel {:?}; expected email, slack or telegram", raw.channel),
            );
        }
        return None;
    };
    Some(Trigger { spec: TriggerSpec::Channel { channel, alias }, condition })
}

fn build_drive(raw: RawDrive, prefix: &str, issues: &mut Issues) -> Option<Trigger> {
    let condition = parse_condition(raw.condition, prefix, issues)?;
    let alias = checked_alias(raw.alias, prefix, issues)?;
    let events = parse_kinds(&raw.events, DriveChange::parse, "created, modified, trashed or removed", prefix, issues);
    let folder_id = match raw.folder_id {
        Some(id) if id.trim().is_empty() => None,
        other => other,
    };
    Some(Trigger { spec: TriggerSpec::Drive { alias, events: events?, folder_id }, condition })
}

fn build_filesystem(raw: RawFilesystem, prefix: &str, issues: &mut Issues) -> Option<Trigger> {
    let path = PathGlob::parse(&raw.path).map_err(|r| issues.error(&format!("{prefix}.path"), r));
    let events = parse_kinds(&raw.events, FsChange::parse, "created, modified, deleted or renamed", prefix, issues);
    let condition = parse_condition(raw.condition, prefix, issues)?;
    Some(Trigger { spec: TriggerSpec::Filesystem { path: path.ok()?, events: events? }, condition })
}

/// A trigger's `events`: each a known kind (duplicates dropped), else an
/// error naming the entry.
fn parse_kinds<K: PartialEq>(
    names: &[String],
    parse: fn(&str) -> Option<K>,
    expected: &str,
    prefix: &str,
    issues: &mut Issues,
) -> Option<Vec<K>> {
    let mut kinds = Vec::new();
    let mut ok = true;
    for (i, name) in names.iter().enumerate() {
        match parse(name) {
            Some(kind) if !kinds.contains(&kind) => kinds.push(kind),
            Some(_) => {}
            None => {
                issues.error(&format!("{prefix}.events[{i}]"), format!("unknown change {name:?}; expected {expected}"));
                ok = false;
            }
        }
    }
    ok.then_some(kinds)
}

/// An alias names a configured instance (`[channels_config.email.<alias>]`);
/// a blank one is none (every instance).
fn checked_alias(alias: Option<String>, prefix: &str, issues: &mut Issues) -> Option<Option<String>> {
    match alias {
        Some(alias) if alias.trim().is_empty() => Some(None),
        Some(alias) if super::is_board_name(&alias) => Some(Some(alias)),
        Some(alias) => {
            issues.error(
                &format!("{prefix}.alias"),
                format!("{alias:?} is not an instance name; expected [a-z0-9][a-z0-9._-]*"),
            );
            None
        }
        None => Some(None),
    }
}

/// Deserializes a trigger table into its type's fields; unknown keys (a
/// `condition` on cron or manual among them) are errors.
fn typed<T: serde::de::DeserializeOwned>(
    table: toml::Table,
    prefix: &str,
    kind: &str,
    issues: &mut Issues,
) -> Option<T> {
    let (value, problems) = deserialize_table::<T>(table);
    for problem in &problems {
        if problem.key == "condition" && problem.reason.starts_with("unknown key") {
            let key = format!("{prefix}.condition");
            issues.error(&key, format!("a {kind} trigger takes no condition"));
        } else {
            issues.toml_problem(prefix, problem);
        }
    }
    if problems.is_empty() {
        value
    } else {
        None
    }
}

/// A blank condition is no condition (as in ZeroClaw); what a condition
/// means but does not say plainly (an unquoted word) is a warning.
fn parse_condition(text: Option<String>, prefix: &str, issues: &mut Issues) -> Option<Option<Condition>> {
    let key = format!("{prefix}.condition");
    match text.map(|text| (Condition::parse(&text), text)) {
        None => Some(None),
        Some((Ok(condition), _)) if condition.is_unconditional() => Some(None),
        Some((Ok(condition), text)) => {
            for warning in condition.warnings() {
                issues.warning(&key, format!("condition {text:?}: {warning}"));
            }
            Some(Some(condition))
        }
        Some((Err(e), text)) => {
            issues.error(&key, format!("invalid condition {text:?}: {e}"));
            None
        }
    }
}

/// Only `/webhook` and paths under `/sop/` can reach a webhook trigger.
pub(crate) fn check_webhook_path(path: &str) -> Result<(), String> {
    if path == "/webhook" {
        return Ok(());
    }
    let Some(rest) = path.strip_prefix("/sop/") else {
        return Err(format!("{path:?} cannot be reached: webhook paths are \"/webhook\" or start with \"/sop/\""));
    };
    if rest.is_empty() {
        return Err("\"/sop/\" needs a name after it, e.g. \"/sop/deploy\"".into());
    }
    if path.contains(['?', '#']) {
        return Err(format!("{path:?} must not contain a query string or fragment"));
    }
    if path.contains("//") {
        return Err(format!("{path:?} must not contain an empty segment (//)"));
    }
    if path.chars().any(char::is_whitespace) {
        return Err(format!("{path:?} must not contain whitespace"));
    }
    Ok(())
}

/// Signals form the second level of the event topic `board/signal`.
fn build_toml_steps(raw_steps: Vec<RawStep>, issues: &mut Issues) -> Vec<Step> {
    let mut steps = Vec::new();
    for (i, raw) in raw_steps.into_iter().enumerate() {
        let key = |k: &str| format!("steps[{i}].{k}");
        for ignored in raw.ignored_zeroclaw_keys() {
            issues.warning(&key(ignored), IGNORED_ZEROCLAW_KEY);
        }
        let tools = match (raw.tools, raw.suggested_tools) {
            (Some(_), Some(_)) => {
                issues.error(&key("suggested_tools"), "set tools or suggested_tools (its ZeroClaw name), not both");
                Vec::new()
            }
            (Some(tools), None) | (None, Some(tools)) => tools,
            (None, None) => Vec::new(),
        };
        let mut requires_confirmation = raw.requires_confirmation.unwrap_or(false);
        match raw.kind.as_deref() {
            None | Some("execute") => {}
            Some("checkpoint" | "approval") => requires_confirmation = true,
            Some("capability") => issues.warning(
                &key("kind"),
                "ignored: ZeroClaw capability steps are not run by fanin; use type = \"capability\" and ref",
            ),
            Some(other) => {
                issues.error(&key("kind"), format!("expected execute, checkpoint or capability, found {other:?}"))
            }
        }
        let title = match (raw.title, &raw.reference) {
            (Some(t), _) if !t.trim().is_empty() => t,
            (_, Some(reference)) => reference.clone(),
            _ => {
                issues.error(&key("title"), "required (or a ref to name the step by)");
                String::new()
            }
        };
        // As in SOP.md: an empty `ref` or `id` names nothing, and every
        // envelope carrying it would fail the schema.
        for (field, value) in [("ref", &raw.reference), ("id", &raw.id)] {
            if value.as_ref().is_some_and(|v| v.trim().is_empty()) {
                issues.error(&key(field), "must not be empty");
            }
        }
        let params = match raw.params {
            None => serde_json::Map::new(),
            Some(table) => match serde_json::to_value(table) {
                Ok(serde_json::Value::Object(map)) => map,
                _ => {
                    issues.error(&key("params"), "cannot be represented as JSON");
                    serde_json::Map::new()
                }
            },
        };
        steps.push(Step {
            number: i as u32 + 1,
            title,
            body: raw.body.unwrap_or_default(),
            tools,
            requires_confirmation,
            kind: raw.step_type,
            reference: raw.reference,
            params,
            id: raw.id,
        });
    }
    steps
}

/// SOP.md's `## Steps` wins when it has items. Returns the steps and the
/// file they came from (for messages).
fn choose_steps(
    sop_dir: &Path,
    files: &dyn SopFiles,
    toml_steps: Vec<Step>,
    issues: &mut Issues,
) -> (Vec<Step>, PathBuf) {
    let md_file = sop_dir.join("SOP.md");
    let Some(text) = files.read(&md_file) else {
        return (toml_steps, issues.toml_file.clone());
    };
    let text = match text {
        Ok(text) => text,
        Err(e) => {
            let issue = issues.issue(&md_file, "", format!("cannot read: {e}"), None);
            issues.errors.push(issue);
            return (toml_steps, issues.toml_file.clone());
        }
    };
    let parsed = steps_md::parse_steps(&text);
    if parsed.steps.is_empty() {
        return (toml_steps, issues.toml_file.clone());
    }
    for md_issue in parsed.issues {
        let issue = issues.issue(&md_file, &md_issue.key, md_issue.reason, None);
        if md_issue.warning {
            issues.warnings.push(issue);
        } else {
            issues.errors.push(issue);
        }
    }
    if !toml_steps.is_empty() {
        issues.warning("steps", "ignored: the ## Steps section of SOP.md supplies the steps");
    }
    (parsed.steps, md_file)
}

/// Every step of a SOP whose destination is the executor names what to run
/// (`type` and `ref`); for the agent, `type` and `ref` still go together.
fn check_steps(steps: &[Step], file: &Path, destination: Destination, issues: &mut Issues) {
    let for_executor = destination == Destination::Executor;
    if for_executor && steps.is_empty() {
        issues.error(
            "steps",
            "destination = \"executor\" requires steps, each with type and ref (in [[steps]] or SOP.md)",
        );
        return;
    }
    let in_toml = file == issues.toml_file;
    for (i, step) in steps.iter().enumerate() {
        let one_without_other = step.kind.is_some() != step.reference.is_some();
        if !for_executor && !one_without_other {
            continue;
        }
        for (field, missing) in [("type", step.kind.is_none()), ("ref", step.reference.is_none())] {
            if missing {
                let key = format!("steps[{i}].{field}");
                let line = if in_toml { issues.lines.line_of(&key) } else { None };
                let reason = if for_executor {
                    "required: the executor runs steps by type and ref"
                } else {
                    "type and ref go together: set both or neither"
                };
                let issue = issues.issue(file, &key, reason, line);
                issues.errors.push(issue);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::sop::test_support::MemFiles;

    /// A SOP directory held in memory, rooted at `/sops`.
    struct Fixture {
        files: std::cell::RefCell<MemFiles>,
    }

    impl Fixture {
        fn new() -> Self {
            Fixture { files: Default::default() }
        }

        fn root(&self) -> &Path {
            Path::new("/sops")
        }

        fn sop(&self, dir_name: &str, toml: &str) -> &Self {
            self.files.borrow_mut().insert(self.root().join(dir_name).join("SOP.toml"), toml);
            self
        }

        fn md(&self, dir_name: &str, md: &str) -> &Self {
            self.files.borrow_mut().insert(self.root().join(dir_name).join("SOP.md"), md);
            self
        }

        fn load_as(&self, default_mode: ExecutionMode) -> LoadReport {
            load_tree(self.root(), &*self.files.borrow(), default_mode)
        }

        fn load(&self) -> LoadReport {
            self.load_as(ExecutionMode::Supervised)
        }
    }

    fn header(name: &str) -> String {
        format!("[sop]\nname = \"{name}\"\ndescription = \"Test SOP\"\n")
    }

    /// Loads one SOP `x` whose SOP.toml is the header plus `rest`.
    fn load_x(rest: &str) -> LoadReport {
        let f = Fixture::new();
        f.sop("x", &format!("{}{rest}", header("x")));
        f.load()
    }

    fn has(issues: &[SopIssue], key: &str, reason: &str) -> bool {
        issues.iter().any(|i| i.key == key && i.reason.contains(reason))
    }

    #[track_caller]
    fn assert_error(report: &LoadReport, key: &str, reason: &str) {
        assert!(has(&report.errors, key, reason), "no error {key}: …{reason}… in {:#?}", report.errors);
        assert!(report.sops.is_empty(), "a SOP with an error must not load");
    }

    #[test]
    fn a_minimal_sop_gets_the_documented_defaults() {
        let f = Fixture::new();
        f.sop("x", &format!("{}[[triggers]]\ntype = \"manual\"\n", header("x")));
        let report = f.load_as(ExecutionMode::Auto);
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert!(report.warnings.is_empty(), "{:?}", report.warnings);
        let sop = &report.sops[0];
        assert_eq!(sop.name, "x");
        assert_eq!(sop.version, "0.1.0");
        assert_eq!(sop.priority, Priority::Normal);
        assert_eq!(sop.execution_mode, ExecutionMode::Auto, "the config's default mode");
        assert_eq!(sop.cooldown_secs, 0);
        assert_eq!(sop.max_concurrent, 1);
        assert_eq!(sop.admission_policy, AdmissionPolicy::Parallel);
        assert_eq!(sop.destination, Destination::Agent);
        assert!(sop.steps.is_empty());
        assert_eq!(sop.file, f.root().join("x/SOP.toml"));
    }

    #[test]
    fn every_trigger_type_loads() {
        let report = load_x(
            "[[triggers]]\ntype = \"webhook\"\npath = \"/sop/deploy\"\ncondition = \"$.a == 1\"\n\
             [[triggers]]\ntype = \"mqtt\"\ntopic = \"sensors/+/alert\"\ncondition = \"$.severity >= 2\"\n\
             [[triggers]]\ntype = \"cron\"\nexpression = \"0 0 8 * * *\"\ntimezone = \"Europe/Paris\"\n\
             [[triggers]]\ntype = \"peripheral\"\nboard = \"nucleo-f401re\"\nsignal = \"pin_3\"\ncondition = \"> 0\"\n\
             [[triggers]]\ntype = \"manual\"\n",
        );
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        let t = &report.sops[0].triggers;
        assert_eq!(t.len(), 5);
        assert!(matches!(&t[0].spec, TriggerSpec::Webhook { path } if path == "/sop/deploy"));
        assert_eq!(t[0].condition.as_ref().unwrap().source(), "$.a == 1");
        assert!(matches!(&t[1].spec, TriggerSpec::Mqtt { topic } if topic == "sensors/+/alert"));
        match &t[2].spec {
            TriggerSpec::Cron(s) => {
                assert_eq!(s.expression(), "0 0 8 * * *");
                assert_eq!(s.timezone(), chrono_tz::Europe::Paris);
            }
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(&t[3].spec, TriggerSpec::Peripheral { board, signal } if board == "nucleo-f401re" && signal == "pin_3")
        );
        assert!(matches!(t[4].spec, TriggerSpec::Manual));
    }

    #[test]
    fn header_rules() {
        let f = Fixture::new();
        f.sop("a", "[sop]\ndescription = \"d\"\n");
        assert_error(&f.load(), "sop.name", "required");
        let f = Fixture::new();
        f.sop("a", "[sop]\nname = \"Bad Name\"\ndescription = \"d\"\n");
        assert_error(&f.load(), "sop.name", "[a-z0-9]");
        let f = Fixture::new();
        f.sop("a", "[sop]\nname = \"a\"\n");
        assert_error(&f.load(), "sop.description", "required");
        let f = Fixture::new();
        f.sop("a", "[sop]\nname = \"a\"\ndescription = \"  \"\n");
        assert_error(&f.load(), "sop.description", "empty");
        let f = Fixture::new();
        f.sop("a", "[[triggers]]\ntype = \"manual\"\n");
        assert_error(&f.load(), "sop", "required");
        assert_error(&load_x("max_concurrent = 0\n"), "sop.max_concurrent", "at least 1");
        assert_error(&load_x("priority = \"urgent\"\n"), "sop.priority", "unknown variant");
        assert_error(&load_x("execution_mode = \"yolo\"\n"), "sop.execution_mode", "unknown variant");
        assert_error(&load_x("admission_policy = \"queue\"\n"), "sop.admission_policy", "unknown variant");
        assert_error(&load_x("destination = \"human\"\n"), "sop.destination", "unknown variant");
    }

    #[test]
    fn explicit_header_values_are_kept() {
        let report = load_x(
            "version = \"2.0.0\"\npriority = \"critical\"\nexecution_mode = \"step_by_step\"\ncooldown_secs = 60\n\
             max_concurrent = 3\nadmission_policy = \"coalesce\"\n[[triggers]]\ntype = \"manual\"\n",
        );
        let sop = &report.sops[0];
        assert_eq!(sop.version, "2.0.0");
        assert_eq!(sop.priority, Priority::Critical);
        assert_eq!(sop.execution_mode, ExecutionMode::StepByStep);
        assert_eq!((sop.cooldown_secs, sop.max_concurrent), (60, 3));
        assert_eq!(sop.admission_policy, AdmissionPolicy::Coalesce);
    }

    #[test]
    fn unknown_keys_are_errors_with_their_path() {
        assert_error(&load_x("owner = \"ops\"\n"), "sop.owner", "unknown key");
        let f = Fixture::new();
        f.sop("x", &format!("notes = 1\n{}", header("x")));
        assert_error(&f.load(), "notes", "unknown key");
        assert_error(
            &load_x(
                "[[triggers]]\ntype = \"manual\"\n[[triggers]]\ntype = \"webhook\"\npath = \"/sop/a\"\npth = \"/x\"\n",
            ),
            "triggers[1].pth",
            "unknown key",
        );
        assert_error(
            &load_x("[[triggers]]\ntype = \"mqtt\"\ntopic = \"a\"\nexpression = \"* * * * *\"\n"),
            "triggers[0].expression",
            "unknown key",
        );
        assert_error(&load_x("[[steps]]\ntitle = \"a\"\ntitel = \"b\"\n"), "steps[0].titel", "unknown key");
        let report = load_x(
            "[[triggers]]\ntype = \"manual\"\n[[triggers]]\ntype = \"webhook\"\npath = \"/sop/a\"\npth = \"/x\"\n",
        );
        assert!(has(&report.errors, "triggers[1].pth", "line 9"), "{:?}", report.errors);
    }

    #[test]
    fn unknown_keys_carry_the_line() {
        let report = load_x("owner = \"ops\"\n");
        assert!(has(&report.errors, "sop.owner", "line 4"), "{:?}", report.errors);
    }

    #[test]
    fn zeroclaw_keys_load_with_warnings() {
        let report = load_x(
            "agent = \"release-bot\"\nmax_pending_approvals = 8\n\
             [[triggers]]\ntype = \"manual\"\n\
             [[triggers]]\ntype = \"calendar\"\ncalendar_ids = [\"ops\"]\n\
             [[steps]]\nnumber = 1\ntitle = \"A\"\nsuggested_tools = [\"shell\"]\nkind = \"checkpoint\"\nagent = \"x\"\n\
             [[positions]]\nstep = 1\nx = 320.5\ny = -48.0\n",
        );
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        for key in ["sop.agent", "sop.max_pending_approvals", "positions", "steps[0].number", "steps[0].agent"] {
            assert!(has(&report.warnings, key, IGNORED_ZEROCLAW_KEY), "{key}: {:?}", report.warnings);
        }
        assert!(has(&report.warnings, "triggers[1].type", "calendar"), "{:?}", report.warnings);
        let sop = &report.sops[0];
        assert_eq!(sop.triggers.len(), 1, "the calendar trigger is dropped");
        assert_eq!(sop.steps[0].tools, vec!["shell"]);
        assert!(sop.steps[0].requires_confirmation, "a checkpoint step keeps its approval gate");
    }

    #[test]
    fn every_unserved_trigger_type_loads_with_a_warning_naming_it() {
        // Each with the keys its own system gives it, which fanin does not check.
        let triggers = [
            ("calendar", "calendar_source = \"google\"\ncalendar_ids = [\"ops\"]\n"),
            ("sopcompletion", "sop_name = \"deploy\"\n"),
        ];
        assert_eq!(triggers.len(), UNSERVED_TRIGGER_TYPES.len(), "every listed type is covered");
        for (kind, keys) in triggers {
            assert!(UNSERVED_TRIGGER_TYPES.contains(&kind), "{kind}");
            let report = load_x(&format!("[[triggers]]\ntype = \"{kind}\"\n{keys}[[triggers]]\ntype = \"manual\"\n"));
            assert!(report.errors.is_empty(), "{kind}: {:?}", report.errors);
            assert!(has(&report.warnings, "triggers[0].type", &format!("{kind:?}")), "{kind}: {:?}", report.warnings);
            assert_eq!(report.sops[0].triggers.len(), 1, "{kind}: only the manual trigger stays");
        }
        let report = load_x("[[triggers]]\ntype = \"gmail\"\n");
        assert_error(&report, "triggers[0].type", "unknown trigger type \"gmail\"");
    }

    #[test]
    fn channel_and_drive_triggers_load_as_zeroclaw_and_smart_office_write_them() {
        let report = load_x(concat!(
            "[[triggers]]\ntype = \"channel\"\nchannel = \"telegram\"\nalias = \"default\"\n",
            "[[triggers]]\ntype = \"channel\"\nchannel = \"email\"\ncondition = '$.subject == \"deploy\"'\n",
            "[[triggers]]\ntype = \"drive\"\nfolder_id = \"1AbC\"\n",
            "[[triggers]]\ntype = \"drive\"\nalias = \"shared\"\nevents = [\"created\", \"modified\"]\n",
            "[[triggers]]\ntype = \"channel\"\nchannel = \"discord\"\n",
        ));
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert!(has(&report.warnings, "triggers[4].channel", "\"discord\""), "{:?}", report.warnings);
        let t = &report.sops[0].triggers;
        assert_eq!(t.len(), 4, "the discord trigger is dropped");
        assert_eq!(t[0].describe(), "channel telegram/default");
        assert_eq!(t[1].describe(), "channel email if $.subject == \"deploy\"");
        assert!(
            matches!(&t[2].spec, TriggerSpec::Drive { alias: None, events, folder_id: Some(f) } if events.is_empty() && f == "1AbC")
        );
        assert_eq!(t[3].describe(), "drive shared [created, modified]");
    }

    #[test]
    fn filesystem_and_amqp_triggers_load_as_zeroclaw_writes_them() {
        let report = load_x(concat!(
            "[[triggers]]\ntype = \"filesystem\"\npath = \"/var/inbox/**\"\nevents = [\"created\"]\ncondition = \"$.size > 0\"\n",
            "[[triggers]]\ntype = \"amqp\"\nrouting_key = \"release.*\"\n",
        ));
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        let t = &report.sops[0].triggers;
        assert_eq!(t[0].describe(), "filesystem /var/inbox/** [created] if $.size > 0");
        assert_eq!(t[1].describe(), "amqp release.*");
        let cases = [
            ("type = \"filesystem\"\npath = \"inbox/*\"\n", "triggers[0].path", "absolute"),
            ("type = \"filesystem\"\npath = \"/a\"\nevents = [\"moved\"]\n", "triggers[0].events[0]", "\"moved\""),
            ("type = \"amqp\"\nrouting_key = \"a.b*\"\n", "triggers[0].routing_key", "whole words"),
            ("type = \"amqp\"\n", "triggers[0].routing_key", "missing"),
        ];
        for (trigger, key, reason) in cases {
            assert_error(&load_x(&format!("[[triggers]]\n{trigger}")), key, reason);
        }
    }

    #[test]
    fn channel_and_drive_triggers_are_refused_naming_the_key() {
        let cases = [
            ("type = \"channel\"\nchannel = \"gmail\"\n", "triggers[0].channel", "unknown channel \"gmail\""),
            ("type = \"channel\"\n", "triggers[0].channel", "missing"),
            ("type = \"channel\"\nchannel = \"slack\"\nalias = \"My Team\"\n", "triggers[0].alias", "instance name"),
            ("type = \"drive\"\nevents = [\"created\", \"renamed\"]\n", "triggers[0].events[1]", "\"renamed\""),
            ("type = \"drive\"\nfolder = \"x\"\n", "triggers[0].folder", "unknown key"),
        ];
        for (trigger, key, reason) in cases {
            assert_error(&load_x(&format!("[[triggers]]\n{trigger}")), key, reason);
        }
    }

    #[test]
    fn a_blank_condition_is_no_condition() {
        for blank in ["\"\"", "\"  \"", "\"\\t \\n\""] {
            let report = load_x(&format!("[[triggers]]\ntype = \"mqtt\"\ntopic = \"a/b\"\ncondition = {blank}\n"));
            assert!(report.errors.is_empty() && report.warnings.is_empty(), "{blank}: {report:?}");
            let trigger = &report.sops[0].triggers[0];
            assert!(trigger.condition.is_none(), "{blank}");
            assert_eq!(trigger.describe(), "mqtt a/b");
        }
    }

    #[test]
    fn an_unquoted_word_loads_as_a_string_with_a_warning() {
        let report = load_x(
            "[[triggers]]\ntype = \"mqtt\"\ntopic = \"a/b\"\ncondition = \"$.data.temp == critical\"\n\
             [[triggers]]\ntype = \"webhook\"\npath = \"/webhook\"\ncondition = '$.kind == \"deploy\"'\n",
        );
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert_eq!(report.warnings.len(), 1, "{:?}", report.warnings);
        let warning = &report.warnings[0];
        assert_eq!(warning.key, "triggers[0].condition");
        assert!(warning.reason.contains("\"$.data.temp == critical\""), "{warning}");
        assert!(warning.reason.contains("read as the string \"critical\""), "{warning}");
        assert!(warning.reason.contains("(line 7)"), "{warning}");
        let payload = crate::event::Payload::Json(serde_json::json!({"data": {"temp": "critical"}}));
        assert!(report.sops[0].triggers[0].condition.as_ref().unwrap().matches(&payload));
    }

    #[test]
    fn cron_expressions_zeroclaw_read_otherwise_load_with_warnings() {
        let report = load_x(
            "[[triggers]]\ntype = \"cron\"\nexpression = \"0 0 9 * * 2-6\"\n\
             [[triggers]]\ntype = \"cron\"\nexpression = \"0 9 1 * MON\"\ntimezone = \"Europe/Paris\"\n\
             [[triggers]]\ntype = \"cron\"\nexpression = \"0 0 9 * * MON-FRI\"\n\
             [[triggers]]\ntype = \"cron\"\nexpression = \"0 18 * * 5-0\"\n",
        );
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        let keys: Vec<&str> = report.warnings.iter().map(|w| w.key.as_str()).collect();
        assert_eq!(keys, ["triggers[0].expression", "triggers[1].expression"], "{:?}", report.warnings);
        assert!(report.warnings[0].reason.contains("fires on TUE-SAT"), "{}", report.warnings[0]);
        assert!(report.warnings[0].reason.contains("(line 6)"), "{}", report.warnings[0]);
        assert!(report.warnings[1].reason.contains("either matches"), "{}", report.warnings[1]);
        assert_eq!(report.sops[0].triggers.len(), 4, "warnings never drop a trigger");
    }

    /// SOPs as ZeroClaw's own loader test (`src/sop/mod.rs`,
    /// `parse_all_trigger_types`) and its cookbook (`docs/book/src/sop/
    /// cookbook.md`, "IoT Alert Handler") write them.
    #[test]
    fn zeroclaw_example_sops_load() {
        let f = Fixture::new();
        f.sop(
            "multi-trigger",
            "[sop]\nname = \"multi-trigger\"\ndescription = \"SOP with all trigger types\"\n\n\
             [[triggers]]\ntype = \"mqtt\"\ntopic = \"sensors/temp\"\ncondition = \"$.value > 90\"\n\n\
             [[triggers]]\ntype = \"webhook\"\npath = \"/sop/test\"\n\n\
             [[triggers]]\ntype = \"cron\"\nexpression = \"0 */5 * * *\"\n\n\
             [[triggers]]\ntype = \"peripheral\"\nboard = \"nucleo-f401re-0\"\nsignal = \"pin_3\"\ncondition = \"> 0\"\n\n\
             [[triggers]]\ntype = \"manual\"\n",
        );
        f.sop(
            "iot-alert",
            "[sop]\nname = \"iot-alert\"\ndescription = \"Handle IoT sensor alerts from MQTT\"\npriority = \"high\"\n\n\
             [[triggers]]\ntype = \"mqtt\"\ntopic = \"sensors/temperature/#\"\ncondition = \"$.value > 85\"\n",
        );
        let report = f.load();
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert!(report.warnings.is_empty(), "{:?}", report.warnings);
        let described: Vec<Vec<String>> =
            report.sops.iter().map(|s| s.triggers.iter().map(Trigger::describe).collect()).collect();
        assert_eq!(
            described,
            [
                vec!["mqtt sensors/temperature/# if $.value > 85".to_string()],
                vec![
                    "mqtt sensors/temp if $.value > 90".to_string(),
                    "webhook /sop/test".to_string(),
                    "cron 0 */5 * * * (UTC)".to_string(),
                    "peripheral nucleo-f401re-0/pin_3 if > 0".to_string(),
                    "manual".to_string(),
                ],
            ]
        );
    }

    #[test]
    fn deterministic_selects_the_mode_and_conflicts_are_errors() {
        let report = load_x("deterministic = true\n[[triggers]]\ntype = \"manual\"\n");
        assert_eq!(report.sops[0].execution_mode, ExecutionMode::Deterministic);
        assert_error(&load_x("deterministic = true\nexecution_mode = \"auto\"\n"), "sop.deterministic", "contradicts");
    }

    #[test]
    fn trigger_rules() {
        let cases: &[(&str, &str, &str)] = &[
            ("type = \"cron\"\nexpression = \"* * *\"\n", "triggers[0].expression", "3 fields"),
            ("type = \"cron\"\nexpression = \"61 * * * * *\"\n", "triggers[0].expression", "invalid cron"),
            (
                "type = \"cron\"\nexpression = \"0 8 * * *\"\ntimezone = \"Europe/Pariss\"\n",
                "triggers[0].timezone",
                "Europe/Pariss",
            ),
            (
                "type = \"cron\"\nexpression = \"0 8 * * *\"\ncondition = \"> 1\"\n",
                "triggers[0].condition",
                "no condition",
            ),
            ("type = \"manual\"\ncondition = \"> 1\"\n", "triggers[0].condition", "no condition"),
            ("type = \"mqtt\"\ntopic = \"a/#/b\"\n", "triggers[0].topic", "#"),
            ("type = \"mqtt\"\ntopic = \"\"\n", "triggers[0].topic", "empty"),
            ("type = \"mqtt\"\n", "triggers[0].topic", "required key is missing"),
            ("type = \"webhook\"\n", "triggers[0].path", "required key is missing"),
            ("type = \"peripheral\"\nboard = \"Nucleo\"\nsignal = \"pin_3\"\n", "triggers[0].board", "board name"),
            ("type = \"peripheral\"\nboard = \"nucleo\"\nsignal = \"pin/3\"\n", "triggers[0].signal", "signal name"),
            ("type = \"email\"\n", "triggers[0].type", "unknown trigger type"),
            ("path = \"/sop/a\"\n", "triggers[0].type", "required"),
        ];
        for (trigger, key, reason) in cases {
            assert_error(&load_x(&format!("[[triggers]]\n{trigger}")), key, reason);
        }
        // A bad expression and a bad timezone in one trigger: both reported.
        let both = load_x("[[triggers]]\ntype = \"cron\"\nexpression = \"* * *\"\ntimezone = \"Mars/Olympus\"\n");
        assert_error(&both, "triggers[0].expression", "3 fields");
        assert_error(&both, "triggers[0].timezone", "Mars/Olympus");
    }

    #[test]
    fn webhook_paths_must_be_reachable() {
        for ok in ["/webhook", "/sop/deploy", "/sop/team/deploy-a", "/sop/a.b_c"] {
            assert!(check_webhook_path(ok).is_ok(), "{ok}");
        }
        for bad in
            ["/sop/", "/sop", "/deploy", "webhook", "/webhook/x", "/sop/a?b=1", "/sop/a//b", "/sop/a b", "/sop/a#x", ""]
        {
            assert!(check_webhook_path(bad).is_err(), "{bad}");
            let report = load_x(&format!("[[triggers]]\ntype = \"webhook\"\npath = \"{bad}\"\n"));
            assert_error(&report, "triggers[0].path", "");
        }
    }

    #[test]
    fn duplicate_names_are_reported_on_the_second_file() {
        let f = Fixture::new();
        f.sop("a-first", &header("same")).sop("b-second", &header("same"));
        let report = f.load();
        assert_eq!(report.sops.len(), 1);
        assert_eq!(report.sops[0].file, f.root().join("a-first/SOP.toml"));
        let err = report.errors.iter().find(|e| e.key == "sop.name").expect("duplicate error");
        assert_eq!(err.file, f.root().join("b-second/SOP.toml"));
        assert!(err.reason.contains("a-first"), "{}", err.reason);
    }

    #[test]
    fn sops_are_sorted_by_directory_and_errors_collected_from_all() {
        let f = Fixture::new();
        f.sop("c", &header("c"))
            .sop("a", &header("a"))
            .sop("b-bad", "[sop]\nname = \"b\"\n")
            .sop("d-bad", &format!("{}max_concurrent = 0\n", header("d")));
        let report = f.load();
        let names: Vec<&str> = report.sops.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["a", "c"]);
        assert!(has(&report.errors, "sop.description", ""));
        assert!(has(&report.errors, "sop.max_concurrent", ""));
    }

    #[test]
    fn several_problems_in_one_sop_are_all_reported() {
        let report = load_x(
            "max_concurrent = 0\nowner = 1\n[[triggers]]\ntype = \"cron\"\nexpression = \"bad\"\n\
             [[triggers]]\ntype = \"mqtt\"\ntopic = \"a/#/b\"\n",
        );
        for key in ["sop.max_concurrent", "sop.owner", "triggers[0].expression", "triggers[1].topic"] {
            assert!(has(&report.errors, key, ""), "{key}: {:?}", report.errors);
        }
    }

    #[test]
    fn syntax_errors_name_file_and_line() {
        let report = load_x("cooldown_secs = = 1\n");
        assert!(report.errors.iter().any(|e| e.reason.contains("line 4")), "{:?}", report.errors);
        assert!(report.errors[0].file.ends_with("x/SOP.toml"));
    }

    #[test]
    fn toml_steps_load_with_executor_fields() {
        let report = load_x(
            "destination = \"executor\"\n[[triggers]]\ntype = \"manual\"\n\
             [[steps]]\ntitle = \"Verify\"\nbody = \"Check\"\ntools = [\"http_request\"]\nrequires_confirmation = true\n\
             type = \"tool\"\nref = \"health\"\nparams = { url = \"http://x\", retries = 3 }\nid = \"s1\"\n\
             [[steps]]\ntype = \"usecase\"\nref = \"deploy\"\n",
        );
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        let steps = &report.sops[0].steps;
        assert_eq!(steps[0].number, 1);
        assert_eq!(steps[0].title, "Verify");
        assert_eq!(steps[0].tools, vec!["http_request"]);
        assert!(steps[0].requires_confirmation);
        assert_eq!(steps[0].kind, Some(StepKind::Tool));
        assert_eq!(steps[0].reference.as_deref(), Some("health"));
        assert_eq!(steps[0].params["retries"], 3);
        assert_eq!(steps[0].id.as_deref(), Some("s1"));
        assert_eq!((steps[1].number, steps[1].title.as_str()), (2, "deploy"));
    }

    #[test]
    fn executor_sops_need_steps_with_type_and_ref() {
        assert_error(&load_x("destination = \"executor\"\n"), "steps", "requires steps");
        let report =
            load_x("destination = \"executor\"\n[[steps]]\ntitle = \"a\"\ntype = \"tool\"\n[[steps]]\ntitle = \"b\"\n");
        assert_error(&report, "steps[0].ref", "required");
        assert_error(&report, "steps[1].type", "required");
        assert_error(&report, "steps[1].ref", "required");
        assert_error(&load_x("[[steps]]\ntitle = \"a\"\nref = \"x\"\n"), "steps[0].type", "go together");
        assert_error(&load_x("[[steps]]\ntitle = \"a\"\ntype = \"robot\"\n"), "steps[0].type", "unknown variant");
    }

    /// The envelope schema needs a non-empty `ref` and `id`: a SOP with a
    /// blank one would load and then fail every run.
    #[test]
    fn a_blank_ref_or_id_is_refused_as_in_sop_md() {
        let report = load_x("[[steps]]\ntitle = \"a\"\ntype = \"tool\"\nref = \"\"\n");
        assert_error(&report, "steps[0].ref", "must not be empty");
        let report = load_x("destination = \"executor\"\n[[steps]]\ntype = \"tool\"\nref = \"x\"\nid = \"  \"\n");
        assert_error(&report, "steps[0].id", "must not be empty");
    }

    #[test]
    fn sop_md_steps_override_toml_steps() {
        let f = Fixture::new();
        f.sop("x", &format!("{}[[steps]]\ntitle = \"From TOML\"\n", header("x"))).md(
            "x",
            "# X\n\n## Steps\n\n1. **First** Do it.\n   - tools: a, b\n2. **Second**\n   - requires_confirmation: true\n",
        );
        let report = f.load();
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        let steps = &report.sops[0].steps;
        assert_eq!(steps.len(), 2);
        assert_eq!(steps[0].title, "First");
        assert_eq!(steps[0].tools, vec!["a", "b"]);
        assert!(steps[1].requires_confirmation);
        assert!(has(&report.warnings, "steps", "SOP.md"), "{:?}", report.warnings);
    }

    #[test]
    fn sop_md_without_steps_leaves_toml_steps() {
        let f = Fixture::new();
        f.sop("x", &format!("{}[[steps]]\ntitle = \"From TOML\"\n", header("x"))).md("x", "# X\n\nJust notes.\n");
        let report = f.load();
        assert_eq!(report.sops[0].steps[0].title, "From TOML");
    }

    #[test]
    fn sop_md_problems_name_sop_md() {
        let f = Fixture::new();
        f.sop("x", &format!("{}destination = \"executor\"\n", header("x"))).md(
            "x",
            "## Steps\n1. **A**\n   - type: tool\n   - ref: a\n   - requires_confirmation: yes\n2. **B**\n   - agent: bot\n",
        );
        let report = f.load();
        let md = f.root().join("x/SOP.md");
        let err = report.errors.iter().find(|e| e.key == "steps[0].requires_confirmation").expect("bullet error");
        assert_eq!(err.file, md);
        let missing = report.errors.iter().find(|e| e.key == "steps[1].type").expect("executor error");
        assert_eq!(missing.file, md);
        assert!(report.warnings.iter().any(|w| w.key == "steps[1].agent" && w.file == md));
        assert!(report.sops.is_empty());
    }
}
