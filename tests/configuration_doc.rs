//! docs/configuration.md checked against fanin itself, so the document
//! cannot drift from the code: for every key table it holds, the keys fanin
//! accepts must be the keys listed, and each documented default must be the
//! one fanin uses.
//!
//! The keys come from fanin's own refusal of an unknown key, which lists
//! every key the table takes (`unknown key; expected one of `a`, `b``), read
//! from `fanin validate --json`; nothing here keeps a second list. A default
//! written as a literal is checked by loading a file without the key and one
//! with `key = <default>`: both must load to the same thing (`Config` for
//! config.toml, `fanin sop show` for SOP.toml and SOP.md). `required` is
//! checked by leaving the key out, a ZeroClaw key marked `any, ignored` by
//! setting it and finding the warning. A default in words is allowed only
//! for the keys in `PROSE_DEFAULTS`, where no literal says it.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::Setup;
use serde_json::Value;

const DOC: &str = include_str!("../docs/configuration.md");

/// A key no table takes, to make fanin list the keys it does take.
const UNKNOWN: &str = "zz_not_a_key";

/// Defaults the document gives in words, by (table heading, key): what
/// they depend on cannot be written as one value.
const PROSE_DEFAULTS: &[(&str, &str)] = &[
    ("config.toml top level", "cluster"),
    ("[gateway]", "max_connections"),
    ("[channels_config]", "mqtt"),
    ("[channels_config]", "filesystem"),
    ("[channels_config]", "amqp"),
    ("[channels]", "mqtt"),
    ("[channels_config.mqtt]", "use_tls"),
    ("[channels_config.email.&lt;alias&gt;]", "imap_port"),
    ("[channels_config.email.&lt;alias&gt;]", "password"),
    ("[channels_config.email.&lt;alias&gt;]", "password_env"),
    ("[channels_config.slack.&lt;alias&gt;]", "signing_secret"),
    ("[channels_config.slack.&lt;alias&gt;]", "signing_secret_env"),
    ("[channels_config.telegram.&lt;alias&gt;]", "bot_token"),
    ("[channels_config.telegram.&lt;alias&gt;]", "bot_token_env"),
    ("[destinations]", "executor"),
    ("[destinations]", "agent"),
    ("SOP.toml [sop]", "execution_mode"),
    ("SOP.toml [[steps]]", "type"),
    ("SOP.toml [[steps]]", "ref"),
    ("SOP.toml [[steps]]", "id"),
    ("SOP.toml [[steps]]", "suggested_tools"),
    ("SOP.md step bullets", "tools"),
    ("SOP.md step bullets", "type"),
    ("SOP.md step bullets", "ref"),
    ("SOP.md step bullets", "id"),
];

const SOP_HEADER: &str = "[sop]\nname = \"probe\"\ndescription = \"d\"\n";

/// How to reach one documented table: what comes before its keys, the
/// lines of its required keys, and the dotted path fanin names its keys by.
struct Probe {
    heading: &'static str,
    prefix: &'static str,
    required: &'static [(&'static str, &'static str)],
    path: &'static str,
}

impl Probe {
    /// The file with `extra` lines in the table and every required key but
    /// `omit`. Extra lines come first: at the top level they must precede
    /// the tables.
    fn text(&self, extra: &str, omit: Option<&str>) -> String {
        let required: Vec<&str> =
            self.required.iter().filter(|(key, _)| Some(*key) != omit).map(|(_, line)| *line).collect();
        format!("{}{extra}\n{}\n", self.prefix, required.join("\n"))
    }

    fn key(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }
}

const MQTT_REQUIRED: &[(&str, &str)] = &[
    ("broker_url", "broker_url = \"mqtt://127.0.0.1:1883\""),
    ("client_id", "client_id = \"probe\""),
    ("topics", "topics = [\"probe/#\"]"),
];

/// config.toml. Defaults are checked on the first probe of a heading only:
/// the other spellings of the MQTT block warn about a missing `enabled`.
const CONFIG_PROBES: &[Probe] = &[
    Probe { heading: "config.toml top level", prefix: "", required: &[], path: "" },
    Probe { heading: "[gateway]", prefix: "[gateway]\n", required: &[], path: "gateway" },
    Probe { heading: "[channels_config]", prefix: "[channels_config]\n", required: &[], path: "channels_config" },
    Probe { heading: "[channels]", prefix: "[channels]\n", required: &[], path: "channels" },
    Probe {
        heading: "[channels_config.mqtt]",
        prefix: "[channels_config.mqtt]\n",
        required: MQTT_REQUIRED,
        path: "channels_config.mqtt",
    },
    Probe {
        heading: "[channels_config.mqtt]",
        prefix: "[channels.mqtt]\n",
        required: MQTT_REQUIRED,
        path: "channels.mqtt",
    },
    Probe {
        heading: "[channels_config.mqtt]",
        prefix: "[channels.mqtt.edge]\n",
        required: MQTT_REQUIRED,
        path: "channels.mqtt.edge",
    },
    Probe {
        heading: "[channels_config.email.&lt;alias&gt;]",
        prefix: "[channels_config.email.ops]\n",
        required: &[
            ("imap_host", "imap_host = \"127.0.0.1\""),
            ("username", "username = \"ops\""),
            ("password_env", "password_env = \"PROBE_PASSWORD\""),
        ],
        path: "channels_config.email.ops",
    },
    Probe {
        heading: "[channels_config.slack.&lt;alias&gt;]",
        prefix: "[channels_config.slack.team]\n",
        required: &[("signing_secret_env", "signing_secret_env = \"PROBE_SECRET\"")],
        path: "channels_config.slack.team",
    },
    Probe {
        heading: "[channels_config.telegram.&lt;alias&gt;]",
        prefix: "[channels_config.telegram.bot]\n",
        required: &[("bot_token_env", "bot_token_env = \"PROBE_TOKEN\"")],
        path: "channels_config.telegram.bot",
    },
    Probe {
        heading: "[channels_config.google_drive.&lt;alias&gt;]",
        prefix: "[channels_config.google_drive.shared]\n",
        required: &[],
        path: "channels_config.google_drive.shared",
    },
    Probe {
        heading: "[channels_config.filesystem]",
        prefix: "[channels_config.filesystem]\n",
        required: &[("paths", "paths = [\".\"]")],
        path: "channels_config.filesystem",
    },
    Probe {
        heading: "[channels_config.amqp]",
        prefix: "[channels_config.amqp]\n",
        required: &[("url", "url = \"amqp://127.0.0.1:5672/%2f\""), ("queue", "queue = \"probe\"")],
        path: "channels_config.amqp",
    },
    Probe { heading: "[sop]", prefix: "[sop]\n", required: &[], path: "sop" },
    Probe { heading: "[store]", prefix: "[store]\n", required: &[], path: "store" },
    Probe {
        heading: "[cluster]",
        prefix: "[store]\nurl = \"postgres://probe@127.0.0.1/probe\"\n[cluster]\n",
        required: &[],
        path: "cluster",
    },
    Probe {
        heading: "[peripherals.<board>]",
        prefix: "[peripherals.uno]\n",
        required: &[("transport", "transport = \"http\"")],
        path: "peripherals.uno",
    },
    Probe { heading: "[delivery]", prefix: "[delivery]\n", required: &[], path: "delivery" },
    Probe { heading: "[destinations]", prefix: "[destinations]\n", required: &[], path: "destinations" },
    Probe {
        heading: "[destinations.executor], [destinations.agent]",
        prefix: "[destinations.executor]\n",
        required: &[("url", "url = \"http://127.0.0.1:8080/executor\"")],
        path: "destinations.executor",
    },
    Probe {
        heading: "[destinations.executor], [destinations.agent]",
        prefix: "[destinations.agent]\n",
        required: &[("url", "url = \"http://127.0.0.1:8080/agent\"")],
        path: "destinations.agent",
    },
    Probe { heading: "[registries]", prefix: "[registries]\n", required: &[], path: "registries" },
];

/// SOP.toml, in `sops/probe/`. A trigger table's `type` is read before its
/// other keys, so fanin's list of them leaves it out.
const SOP_PROBES: &[Probe] = &[
    Probe { heading: "SOP.toml top level", prefix: "", required: &[("sop", SOP_HEADER)], path: "" },
    Probe {
        heading: "SOP.toml [sop]",
        prefix: "[sop]\n",
        required: &[("name", "name = \"probe\""), ("description", "description = \"d\"")],
        path: "sop",
    },
    Probe {
        heading: "SOP.toml [[triggers]] webhook",
        prefix: concat!("[sop]\nname = \"probe\"\ndescription = \"d\"\n", "[[triggers]]\n"),
        required: &[("type", "type = \"webhook\""), ("path", "path = \"/sop/probe\"")],
        path: "triggers[0]",
    },
    Probe {
        heading: "SOP.toml [[triggers]] mqtt",
        prefix: concat!("[sop]\nname = \"probe\"\ndescription = \"d\"\n", "[[triggers]]\n"),
        required: &[("type", "type = \"mqtt\""), ("topic", "topic = \"probe/#\"")],
        path: "triggers[0]",
    },
    Probe {
        heading: "SOP.toml [[triggers]] cron",
        prefix: concat!("[sop]\nname = \"probe\"\ndescription = \"d\"\n", "[[triggers]]\n"),
        required: &[("type", "type = \"cron\""), ("expression", "expression = \"0 9 * * *\"")],
        path: "triggers[0]",
    },
    Probe {
        heading: "SOP.toml [[triggers]] peripheral",
        prefix: concat!("[sop]\nname = \"probe\"\ndescription = \"d\"\n", "[[triggers]]\n"),
        required: &[("type", "type = \"peripheral\""), ("board", "board = \"uno\""), ("signal", "signal = \"button\"")],
        path: "triggers[0]",
    },
    Probe {
        heading: "SOP.toml [[triggers]] channel",
        prefix: concat!("[sop]\nname = \"probe\"\ndescription = \"d\"\n", "[[triggers]]\n"),
        required: &[("type", "type = \"channel\""), ("channel", "channel = \"email\"")],
        path: "triggers[0]",
    },
    Probe {
        heading: "SOP.toml [[triggers]] drive",
        prefix: concat!("[sop]\nname = \"probe\"\ndescription = \"d\"\n", "[[triggers]]\n"),
        required: &[("type", "type = \"drive\"")],
        path: "triggers[0]",
    },
    Probe {
        heading: "SOP.toml [[triggers]] filesystem",
        prefix: concat!("[sop]\nname = \"probe\"\ndescription = \"d\"\n", "[[triggers]]\n"),
        required: &[("type", "type = \"filesystem\""), ("path", "path = \"/srv/drop\"")],
        path: "triggers[0]",
    },
    Probe {
        heading: "SOP.toml [[triggers]] amqp",
        prefix: concat!("[sop]\nname = \"probe\"\ndescription = \"d\"\n", "[[triggers]]\n"),
        required: &[("type", "type = \"amqp\""), ("routing_key", "routing_key = \"a.#\"")],
        path: "triggers[0]",
    },
    Probe {
        heading: "SOP.toml [[triggers]] manual",
        prefix: concat!("[sop]\nname = \"probe\"\ndescription = \"d\"\n", "[[triggers]]\n"),
        required: &[("type", "type = \"manual\"")],
        path: "triggers[0]",
    },
    Probe {
        heading: "SOP.toml [[steps]]",
        prefix: concat!("[sop]\nname = \"probe\"\ndescription = \"d\"\n", "[[steps]]\n"),
        required: &[("title", "title = \"t\"")],
        path: "steps[0]",
    },
];

const MD_HEADING: &str = "SOP.md step bullets";

/// One row of a key table: the key, its type and its default as written.
#[derive(Debug)]
struct Row {
    key: String,
    kind: String,
    default: String,
}

#[derive(Debug)]
struct Table {
    heading: String,
    rows: Vec<Row>,
}

/// What a row's default column says.
#[derive(Debug, PartialEq)]
enum Default<'a> {
    /// A value as the file would spell it (TOML, or a SOP.md bullet value).
    Literal(&'a str),
    Required,
    /// A ZeroClaw key accepted with any value and warned about.
    Ignored,
    Prose,
}

impl Row {
    fn default(&self) -> Default<'_> {
        if self.kind == "any, ignored" {
            return Default::Ignored;
        }
        if self.default == "required" {
            return Default::Required;
        }
        match self.default.strip_prefix('`').and_then(|d| d.strip_suffix('`')) {
            Some(literal) if !literal.contains('`') => Default::Literal(literal),
            _ => Default::Prose,
        }
    }
}

/// Every table of the document whose first column is `key`, under the
/// heading it follows. Fenced code is skipped: SOP.md examples hold
/// headings of their own.
fn doc_tables() -> Vec<Table> {
    let mut tables: Vec<Table> = Vec::new();
    let mut heading = String::new();
    let mut in_fence = false;
    let mut in_table = false;
    for line in DOC.lines() {
        if line.starts_with("```") {
            in_fence = !in_fence;
            continue;
        }
        if in_fence {
            continue;
        }
        if let Some(text) = line.strip_prefix('#') {
            heading = text.trim_start_matches('#').trim().to_string();
            continue;
        }
        if !line.starts_with('|') {
            in_table = false;
            continue;
        }
        let cells: Vec<&str> = line.trim().trim_matches('|').split('|').map(str::trim).collect();
        if cells[0] == "key" {
            in_table = true;
            tables.push(Table { heading: heading.clone(), rows: Vec::new() });
            continue;
        }
        if !in_table || cells.iter().all(|c| c.chars().all(|ch| ch == '-')) {
            continue;
        }
        assert_eq!(
            cells.len(),
            5,
            "a row of `{heading}` needs 5 cells (key, type, default, meaning, when wrong): {line}"
        );
        let key = cells[0].strip_prefix('`').and_then(|k| k.strip_suffix('`'));
        let key = key.unwrap_or_else(|| panic!("`{heading}`: the key is written `key`: {line}"));
        let row = Row { key: key.to_string(), kind: cells[1].to_string(), default: cells[2].to_string() };
        tables.last_mut().expect("in a table").rows.push(row);
    }
    tables
}

fn doc_table(heading: &str) -> Table {
    let mut found: Vec<Table> = doc_tables().into_iter().filter(|t| t.heading == heading).collect();
    assert_eq!(found.len(), 1, "docs/configuration.md needs exactly one key table under `### {heading}`");
    found.remove(0)
}

fn doc_keys(table: &Table) -> BTreeSet<String> {
    table.rows.iter().map(|r| r.key.clone()).collect()
}

/// `fanin validate --json`: (errors, warnings), each `file: key: reason`.
fn validate(setup: &Setup) -> (Vec<String>, Vec<String>) {
    let out = setup.cli(&["validate", "--json"]);
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("validate --json printed no JSON ({e}): {}", String::from_utf8_lossy(&out.stderr)));
    let lines = |name: &str| -> Vec<String> {
        report[name].as_array().expect(name).iter().map(|v| v.as_str().expect("a line").to_string()).collect()
    };
    (lines("errors"), lines("warnings"))
}

/// The keys fanin says the table at `key`'s parent takes, from its refusal
/// of the unknown `key`.
fn accepted_keys(errors: &[String], key: &str) -> BTreeSet<String> {
    let marker = format!(": {key}: unknown key");
    let refusal = errors
        .iter()
        .find_map(|e| e.split_once(&marker).map(|(_, rest)| rest.to_string()))
        .unwrap_or_else(|| panic!("fanin did not refuse the unknown key {key}: {errors:#?}"));
    if refusal.contains("this table takes no keys") {
        return BTreeSet::new();
    }
    let listed: BTreeSet<String> = refusal.split('`').skip(1).step_by(2).map(str::to_string).collect();
    assert!(!listed.is_empty(), "fanin's refusal of {key} lists no keys: {refusal}");
    listed
}

fn assert_same_keys(what: &str, documented: &BTreeSet<String>, accepted: &BTreeSet<String>) {
    let undocumented: Vec<&String> = accepted.difference(documented).collect();
    let refused: Vec<&String> = documented.difference(accepted).collect();
    assert!(
        undocumented.is_empty() && refused.is_empty(),
        "{what}: fanin accepts keys docs/configuration.md does not list: {undocumented:?}; \
         the document lists keys fanin refuses: {refused:?}"
    );
}

fn write_config(setup: &Setup, text: &str) {
    std::fs::write(setup.config_path(), text).expect("write config.toml");
}

fn write_sop(setup: &Setup, toml: &str, md: Option<&str>) {
    let dir = setup.dir.path().join("sops").join("probe");
    std::fs::create_dir_all(&dir).expect("SOP directory");
    std::fs::write(dir.join("SOP.toml"), toml).expect("write SOP.toml");
    let md_file = dir.join("SOP.md");
    match md {
        Some(md) => std::fs::write(md_file, md).expect("write SOP.md"),
        None => {
            let _ = std::fs::remove_file(md_file);
        }
    }
}

/// The config as fanin loads it, for comparing two spellings of it.
fn loaded_config(path: &Path, text: &str) -> String {
    std::fs::write(path, text).expect("write config.toml");
    format!("{:#?}", fanin::config::load(path))
}

/// The SOP as fanin loads it (`fanin sop show --json`), or why not.
fn loaded_sop(setup: &Setup, toml: &str, md: Option<&str>) -> String {
    write_sop(setup, toml, md);
    let out = setup.cli(&["sop", "show", "probe", "--json"]);
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn assert_has(lines: &[String], needle: &str, also: &str, what: &str) {
    assert!(
        lines.iter().any(|l| l.split_once(needle).is_some_and(|(_, rest)| rest.contains(also))),
        "{what}: no line with `{needle}…{also}` in {lines:#?}"
    );
}

fn assert_prose_allowed(heading: &str, row: &Row) {
    assert!(
        PROSE_DEFAULTS.contains(&(heading, row.key.as_str())),
        "`{heading}` `{}`: its default {:?} is neither a literal in backticks nor `required`; \
         write the value fanin uses (checked), or list the key in PROSE_DEFAULTS if no value says it",
        row.key,
        row.default
    );
}

#[test]
fn every_key_table_of_the_document_is_checked() {
    let probed: BTreeSet<&str> =
        CONFIG_PROBES.iter().chain(SOP_PROBES).map(|p| p.heading).chain([MD_HEADING]).collect();
    let documented: BTreeSet<String> = doc_tables().into_iter().map(|t| t.heading).collect();
    let documented: BTreeSet<&str> = documented.iter().map(String::as_str).collect();
    assert_eq!(documented, probed, "key tables of docs/configuration.md against the tables this test checks");
    for (heading, key) in PROSE_DEFAULTS {
        let table = doc_table(heading);
        let row = table.rows.iter().find(|r| r.key == *key);
        assert!(row.is_some_and(|r| r.default() == Default::Prose), "PROSE_DEFAULTS: `{heading}` `{key}` is stale");
    }
}

#[test]
fn config_toml_keys_are_the_documented_ones() {
    let setup = Setup::new("", "");
    for probe in CONFIG_PROBES {
        write_config(&setup, &probe.text(&format!("{UNKNOWN} = 1"), None));
        let (errors, _) = validate(&setup);
        let accepted = accepted_keys(&errors, &probe.key(UNKNOWN));
        assert_same_keys(
            &format!("config.toml {}", probe.prefix.trim()),
            &doc_keys(&doc_table(probe.heading)),
            &accepted,
        );
    }
}

#[test]
fn config_toml_defaults_are_the_documented_ones() {
    let setup = Setup::new("", "");
    let path = setup.config_path();
    let mut seen = BTreeSet::new();
    for probe in CONFIG_PROBES.iter().filter(|p| seen.insert(p.heading)) {
        let table = doc_table(probe.heading);
        let base = loaded_config(&path, &probe.text("", None));
        assert!(base.starts_with("Ok("), "`{}` with its required keys only does not load: {base}", probe.heading);
        for row in &table.rows {
            let key = probe.key(&row.key);
            match row.default() {
                Default::Literal(value) => {
                    let with_default = loaded_config(&path, &probe.text(&format!("{} = {value}", row.key), None));
                    assert_eq!(base, with_default, "{key}: documented default {value} is not what fanin uses");
                }
                Default::Required => {
                    write_config(&setup, &probe.text("", Some(&row.key)));
                    assert_has(&validate(&setup).0, &format!(": {key}: "), "required key is missing", &key);
                }
                Default::Ignored => {
                    write_config(&setup, &probe.text(&format!("{} = 1", row.key), None));
                    assert_has(&validate(&setup).1, &format!(": {key}: "), "ignored", &key);
                }
                Default::Prose => assert_prose_allowed(probe.heading, row),
            }
        }
    }
}

#[test]
fn sop_toml_keys_are_the_documented_ones() {
    let setup = Setup::new("", "");
    for probe in SOP_PROBES {
        write_sop(&setup, &probe.text(&format!("{UNKNOWN} = 1"), None), None);
        let (errors, _) = validate(&setup);
        let mut accepted = accepted_keys(&errors, &probe.key(UNKNOWN));
        if probe.path.starts_with("triggers") {
            accepted.insert("type".into());
        }
        assert_same_keys(probe.heading, &doc_keys(&doc_table(probe.heading)), &accepted);
    }
}

#[test]
fn trigger_types_are_the_documented_ones() {
    let setup = Setup::new("", "");
    write_sop(&setup, &format!("{SOP_HEADER}[[triggers]]\ntype = \"{UNKNOWN}\"\n"), None);
    let (errors, _) = validate(&setup);
    let refusal = errors.iter().find(|e| e.contains(": triggers[0].type: unknown trigger type")).expect("refused");
    let (_, expected) = refusal.split_once("; expected ").expect("lists the types");
    let expected = expected.split(" (line").next().unwrap_or(expected);
    let accepted: BTreeSet<String> = expected.replace(" or ", ", ").split(", ").map(str::to_string).collect();
    let documented: BTreeSet<String> = doc_tables()
        .iter()
        .filter_map(|t| t.heading.strip_prefix("SOP.toml [[triggers]] ").map(str::to_string))
        .collect();
    assert_same_keys("trigger types (one `### SOP.toml [[triggers]] <type>` table each)", &documented, &accepted);
}

#[test]
fn sop_toml_defaults_are_the_documented_ones() {
    let setup = Setup::new("", "");
    for probe in SOP_PROBES {
        let table = doc_table(probe.heading);
        let base = loaded_sop(&setup, &probe.text("", None), None);
        assert!(base.starts_with('{'), "`{}` with its required keys only does not load: {base}", probe.heading);
        for row in &table.rows {
            let key = probe.key(&row.key);
            match row.default() {
                Default::Literal(value) => {
                    let with_default = loaded_sop(&setup, &probe.text(&format!("{} = {value}", row.key), None), None);
                    assert_eq!(base, with_default, "{key}: documented default {value} is not what fanin uses");
                }
                Default::Required => {
                    write_sop(&setup, &probe.text("", Some(&row.key)), None);
                    assert_has(&validate(&setup).0, &format!(": {key}: "), "required", &key);
                }
                Default::Ignored => {
                    write_sop(&setup, &probe.text(&format!("{} = 1", row.key), None), None);
                    assert_has(&validate(&setup).1, &format!(": {key}: "), "ignored", &key);
                }
                Default::Prose => assert_prose_allowed(probe.heading, row),
            }
        }
    }
}

/// SOP.md's bullets are matched by hand, not by serde, so fanin's refusal
/// lists only the keys it uses: those and the ZeroClaw keys it ignores must
/// be documented, and every documented key must be taken (used, or warned
/// about as ignored).
#[test]
fn sop_md_bullets_are_the_documented_ones() {
    let setup = Setup::new("", "");
    let md = |bullets: &str| format!("# Probe\n\n## Steps\n\n1. **Probe** the body.\n{bullets}");
    let table = doc_table(MD_HEADING);
    let documented = doc_keys(&table);

    write_sop(&setup, SOP_HEADER, Some(&md(&format!("   - {UNKNOWN}: 1\n"))));
    let (errors, _) = validate(&setup);
    let marker = format!(": steps[0].{UNKNOWN}: unknown step key; expected ");
    let refusal = errors.iter().find_map(|e| e.split_once(&marker)).map(|(_, rest)| rest).expect("refused");
    let listed = refusal.split(" (line").next().unwrap_or(refusal).replace(" or ", ", ");
    let used: BTreeSet<String> = listed.split(", ").map(str::to_string).collect();
    let missing: Vec<&String> = used.difference(&documented).collect();
    assert!(missing.is_empty(), "SOP.md bullets fanin uses but docs/configuration.md does not list: {missing:?}");
    let ignored: Vec<&&str> =
        fanin::sop::ZEROCLAW_IGNORED_MD_KEYS.iter().filter(|key| !documented.contains(**key)).collect();
    assert!(ignored.is_empty(), "SOP.md bullets fanin ignores but docs/configuration.md does not list: {ignored:?}");

    let base = loaded_sop(&setup, SOP_HEADER, Some(&md("")));
    assert!(base.starts_with('{'), "a SOP.md step without bullets does not load: {base}");
    for row in &table.rows {
        let key = format!("steps[0].{}", row.key);
        let value = match row.default() {
            Default::Literal(value) => value,
            Default::Prose => {
                assert_prose_allowed(MD_HEADING, row);
                "probe"
            }
            Default::Ignored | Default::Required => "1",
        };
        write_sop(&setup, SOP_HEADER, Some(&md(&format!("   - {}: {value}\n", row.key))));
        let (errors, warnings) = validate(&setup);
        assert!(!errors.iter().any(|e| e.contains(&format!(": {key}: unknown step key"))), "{key} is refused");
        match row.default() {
            Default::Literal(value) => {
                let with_default = loaded_sop(&setup, SOP_HEADER, Some(&md(&format!("   - {}: {value}\n", row.key))));
                assert_eq!(base, with_default, "SOP.md {key}: documented default {value} is not what fanin uses");
            }
            Default::Ignored => assert_has(&warnings, &format!(": {key}: "), "ignored", &key),
            Default::Required => panic!("SOP.md {key}: no bullet is required"),
            Default::Prose => {}
        }
    }
}
