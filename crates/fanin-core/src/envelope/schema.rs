//! The envelope schemas fanin ships and the check every envelope passes
//! before it leaves.
//!
//! Two files, both compiled into the binary and compiled once, on first use:
//! - `schemas/envelope.schema.json`, the envelope contract: it takes and
//!   refuses exactly what Smart Office's published contract does, so what
//!   passes it passes any Smart Office Agent or Executor ([`validate_contract`]).
//! - `schemas/fanin-envelope.schema.json`, what fanin emits: the contract
//!   (by `$ref`) plus fanin's own promises, such as the trigger event's shape
//!   and steps for every envelope bound to the executor ([`validate`], the
//!   check before delivery).
//!
//! The files in the repository are the contract, and what is validated is
//! exactly those files. Format assertions (`date`, `date-time`) are switched
//! on, since JSON Schema 2020-12 treats `format` as an annotation by default.

use std::sync::LazyLock;

use jsonschema::error::ValidationErrorKind;
use jsonschema::{Draft, Retrieve, Uri, ValidationError, Validator};
use serde_json::Value;

/// The contract's text as shipped.
pub const SCHEMA_TEXT: &str = include_str!("../../../../schemas/envelope.schema.json");
/// The text of what fanin emits, as shipped.
pub const EMITTED_SCHEMA_TEXT: &str = include_str!("../../../../schemas/fanin-envelope.schema.json");

/// The contract's `$id`, by which the emitted schema includes it.
const CONTRACT_ID: &str = "https://fanin.dev/schemas/envelope.schema.json";

/// The two forms, in the order of the contract's top-level `oneOf`.
const FORMS: [&str; 2] = ["legacy", "execution"];
const LEGACY: usize = 0;
const EXECUTION: usize = 1;

static CONTRACT: LazyLock<Validator> = LazyLock::new(|| compiled("schemas/envelope.schema.json", SCHEMA_TEXT));
static EMITTED: LazyLock<Validator> =
    LazyLock::new(|| compiled("schemas/fanin-envelope.schema.json", EMITTED_SCHEMA_TEXT));

fn compiled(file: &str, text: &str) -> Validator {
    match compile(text) {
        Ok(validator) => validator,
        // A unit test compiles both shipped schemas, so this is a build defect.
        Err(reason) => panic!("{file}: {reason}"),
    }
}

/// Resolves the one reference between the shipped files; nothing is ever
/// fetched from elsewhere.
struct Shipped;

impl Retrieve for Shipped {
    fn retrieve(&self, uri: &Uri<String>) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        if uri.as_str() == CONTRACT_ID {
            Ok(serde_json::from_str(SCHEMA_TEXT)?)
        } else {
            Err(format!("{uri} is not one of the shipped schemas").into())
        }
    }
}

fn compile(text: &str) -> Result<Validator, String> {
    let schema: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    jsonschema::options()
        .with_draft(Draft::Draft202012)
        .should_validate_formats(true)
        .with_retriever(Shipped)
        .build(&schema)
        .map_err(|e| format!("not a valid JSON Schema: {e}"))
}

/// Checks `envelope` against what fanin emits (the contract included): the
/// check before delivery. Each error names the instance path (a JSON
/// pointer, `/` for the root) and the reason.
pub fn validate(envelope: &Value) -> Result<(), Vec<String>> {
    check(&EMITTED, envelope)
}

/// Checks `envelope` against the envelope contract alone: what any Smart
/// Office Agent or Executor accepts.
pub fn validate_contract(envelope: &Value) -> Result<(), Vec<String>> {
    check(&CONTRACT, envelope)
}

fn check(validator: &Validator, envelope: &Value) -> Result<(), Vec<String>> {
    let mut errors = Vec::new();
    for error in validator.iter_errors(envelope) {
        describe(&error, envelope, &mut errors);
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// The top-level `oneOf` alone would only say "matches neither form"; the
/// useful errors are those of the form the envelope claims to be. The
/// emitted schema repeats some of the contract's checks, so a reason is
/// given once.
fn describe(error: &ValidationError<'_>, envelope: &Value, out: &mut Vec<String>) {
    let at_root = error.instance_path().as_str().is_empty();
    let mut push = |text: String| {
        if !out.contains(&text) {
            out.push(text);
        }
    };
    match error.kind() {
        ValidationErrorKind::OneOfNotValid { context } if at_root && context.len() == FORMS.len() => {
            let form = claimed_form(envelope);
            for inner in &context[form] {
                push(format!("{} (as {} envelope)", line(inner), FORMS[form]));
            }
        }
        _ => push(line(error)),
    }
}

/// An object with a `header` or a `payload` means to be an execution
/// envelope; anything else is checked as a legacy one.
fn claimed_form(envelope: &Value) -> usize {
    let has = |key| envelope.get(key).is_some();
    if has("header") || has("payload") {
        EXECUTION
    } else {
        LEGACY
    }
}

/// Messages quote the offending value; a whole payload quoted in an audit
/// record helps nobody, so each line is cut.
const MAX_LINE_CHARS: usize = 400;

fn line(error: &ValidationError<'_>) -> String {
    let path = error.instance_path().as_str();
    let path = if path.is_empty() { "/" } else { path };
    let text = format!("{path}: {error}");
    match text.char_indices().nth(MAX_LINE_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event() -> Value {
        json!({"id": "e-1", "source": "webhook", "timestamp": "2025-03-01T08:00:00.000Z", "path": "/sop/deploy",
               "body": {"branch": "main"}, "query": {}, "headers": {}})
    }

    fn memory() -> Value {
        json!({"session_id": "run-1", "state": {"trigger": event()}, "stack": []})
    }

    /// An execution envelope in the shape fanin builds.
    fn execution(destination: &str, steps: Option<Value>) -> Value {
        let mut payload = json!({"memory": memory(), "registryFiles": [], "options": {"fallbackRegistry": {}}});
        if let Some(steps) = steps {
            payload["steps"] = steps;
        }
        json!({
            "header": {
                "id": "env-1", "version": "1.0", "timestamp": "2025-03-01T08:00:00Z",
                "source": "so.trigger.webhook", "destination": destination, "type": "sop.run"
            },
            "payload": payload,
        })
    }

    /// A legacy envelope in the shape fanin builds.
    fn legacy() -> Value {
        json!({"context": {"memory": memory()}, "input": {"event": event()}, "output": {}, "error": null})
    }

    fn one_step() -> Value {
        json!([{"type": "tool", "ref": "ci_status", "params": {}}])
    }

    fn errors_of(envelope: &Value) -> Vec<String> {
        validate(envelope).expect_err("the envelope should be rejected")
    }

    fn mentions(errors: &[String], needle: &str) -> bool {
        errors.iter().any(|e| e.contains(needle))
    }

    #[test]
    fn the_shipped_schemas_compile_as_2020_12() {
        for text in [SCHEMA_TEXT, EMITTED_SCHEMA_TEXT] {
            compile(text).unwrap();
            let schema: Value = serde_json::from_str(text).unwrap();
            assert_eq!(schema["$schema"], json!("https://json-schema.org/draft/2020-12/schema"));
        }
        let contract: Value = serde_json::from_str(SCHEMA_TEXT).unwrap();
        assert_eq!(contract["$id"], json!(CONTRACT_ID));
    }

    #[test]
    fn minimal_forms_are_accepted() {
        let session = json!({"session_id": "s-1", "state": {}});
        validate_contract(&json!({"context": {"memory": session}})).unwrap();
        validate_contract(&json!({"context": {"memory": session}, "input": {}, "output": {}, "error": null})).unwrap();
        let header = json!({"id": "e", "version": "1", "timestamp": "2025-03-01", "source": "s", "destination": "d",
                            "type": "t"});
        validate_contract(&json!({"header": header, "payload": {"steps": one_step()}})).unwrap();
        validate_contract(&json!({"header": header, "payload": {"registryFiles": []}})).unwrap();
        validate(&legacy()).unwrap();
        validate(&execution("executor", Some(one_step()))).unwrap();
        validate(&execution("agent", None)).unwrap();
    }

    #[test]
    fn a_legacy_envelope_needs_context_memory() {
        let errors = errors_of(&json!({"context": {}, "input": {}}));
        assert!(mentions(&errors, "/context: \"memory\" is a required property"), "{errors:?}");
        assert!(mentions(&errors, "as legacy envelope"), "{errors:?}");
        let errors = errors_of(&json!({"input": {}}));
        assert!(mentions(&errors, "\"context\" is a required property"), "{errors:?}");
    }

    #[test]
    fn memory_members_are_typed() {
        let errors = errors_of(&json!({"context": {"memory": {"session_id": 7, "state": {}, "stack": {}}}}));
        assert!(mentions(&errors, "/context/memory/session_id"), "{errors:?}");
        assert!(mentions(&errors, "/context/memory/stack"), "{errors:?}");
        let errors = validate_contract(&json!({"context": {"memory": {}}})).unwrap_err();
        assert!(mentions(&errors, "\"session_id\" is a required property"), "{errors:?}");
        assert!(mentions(&errors, "\"state\" is a required property"), "{errors:?}");
    }

    #[test]
    fn output_is_an_object_and_error_an_object_or_null() {
        let mut envelope = legacy();
        envelope["output"] = Value::Null;
        let errors = errors_of(&envelope);
        assert!(mentions(&errors, "/output: null is not of type \"object\""), "{errors:?}");
        envelope["output"] = json!({});
        envelope["error"] = json!("boom");
        assert!(mentions(&errors_of(&envelope), "/error"));
    }

    #[test]
    fn the_executor_needs_at_least_one_step() {
        let errors = errors_of(&execution("executor", None));
        assert!(mentions(&errors, "/payload: \"steps\" is a required property"), "{errors:?}");
        let errors = errors_of(&execution("executor", Some(json!([]))));
        assert!(mentions(&errors, "/payload/steps"), "{errors:?}");
        assert!(mentions(&errors, "as execution envelope"), "{errors:?}");
    }

    #[test]
    fn header_fields_are_checked() {
        let cases = [
            ("timestamp", json!("yesterday"), "/header/timestamp"),
            ("timestamp", json!("2025-03-01 08:00"), "/header/timestamp"),
            ("timestamp", json!("2025-03-01"), "/header/timestamp"),
            ("source", json!("webhook"), "/header/source"),
            ("source", json!("so.trigger.Web_hook"), "/header/source"),
            ("destination", json!("printer"), "/header/destination"),
            ("id", json!(""), "/header/id"),
            ("trace_id", json!(""), "/header/trace_id"),
        ];
        for (field, value, path) in cases {
            let mut envelope = execution("executor", Some(one_step()));
            envelope["header"][field] = value.clone();
            let errors = errors_of(&envelope);
            assert!(mentions(&errors, path), "{field} = {value}: {errors:?}");
        }
        for field in ["id", "version", "timestamp", "source", "destination", "type"] {
            let mut envelope = execution("executor", Some(one_step()));
            envelope["header"].as_object_mut().unwrap().remove(field);
            let errors = errors_of(&envelope);
            assert!(mentions(&errors, &format!("\"{field}\" is a required property")), "{field}: {errors:?}");
        }
    }

    #[test]
    fn steps_and_registry_files_are_checked() {
        let cases = [
            ("steps", json!([{"type": "script", "ref": "x", "params": {}}]), "/payload/steps/0/type"),
            ("steps", json!([{"type": "tool", "params": {}}]), "/payload/steps/0"),
            ("steps", json!([{"type": "tool", "ref": "x", "params": []}]), "/payload/steps/0/params"),
            (
                "registryFiles",
                json!([{"category": "plugins", "ref": "x", "content": {}}]),
                "/payload/registryFiles/0/category",
            ),
            ("registryFiles", json!([{"category": "tools", "ref": "x"}]), "/payload/registryFiles/0"),
            (
                "registryFiles",
                json!([{"category": "tools", "ref": "x", "content": []}]),
                "/payload/registryFiles/0/content",
            ),
            ("options", json!({"fallbackRegistry": {"plugins": {}}}), "/payload/options/fallbackRegistry"),
            ("options", json!({"fallbackRegistry": {"tools": []}}), "/payload/options/fallbackRegistry/tools"),
        ];
        for (field, value, path) in cases {
            let mut envelope = execution("executor", Some(one_step()));
            envelope["payload"][field] = value.clone();
            let errors = errors_of(&envelope);
            assert!(mentions(&errors, path), "{field} = {value}: {errors:?}");
        }
    }

    #[test]
    fn the_trigger_event_is_checked() {
        let cases = [
            (json!({"time": "2025-03-01T08:00:00Z"}), "/context/memory/state/trigger"),
            (json!({"source": "cron"}), "/context/memory/state/trigger/source"),
            (json!({"timestamp": "08:00"}), "/context/memory/state/trigger/timestamp"),
            (json!({"payload": {}}), "/context/memory/state/trigger"),
            (json!({"headers": []}), "/context/memory/state/trigger/headers"),
        ];
        for (change, path) in cases {
            let mut envelope = legacy();
            for (key, value) in change.as_object().unwrap() {
                envelope["context"]["memory"]["state"]["trigger"][key] = value.clone();
            }
            let errors = errors_of(&envelope);
            assert!(mentions(&errors, path), "{change}: {errors:?}");
        }
        let mut envelope = legacy();
        envelope["input"]["event"].as_object_mut().unwrap().remove("query");
        assert!(mentions(&errors_of(&envelope), "/input/event: \"query\" is a required property"));
    }

    #[test]
    fn long_messages_are_cut() {
        let errors = errors_of(&json!({"context": "x".repeat(5000)}));
        assert!(errors[0].starts_with("/context: "), "{errors:?}");
        assert!(errors[0].ends_with("… (as legacy envelope)"), "{errors:?}");
        assert!(errors[0].chars().count() <= MAX_LINE_CHARS + 30, "{errors:?}");
    }

    #[test]
    fn the_two_forms_do_not_mix() {
        let mut envelope = execution("agent", None);
        envelope["context"] = json!({"memory": memory()});
        let errors = errors_of(&envelope);
        assert!(mentions(&errors, "context"), "{errors:?}");
    }

    #[derive(serde::Deserialize)]
    struct Case {
        name: String,
        verdict: String,
        document: Value,
    }

    /// Documents in the shape Smart Office's triggers and registry loader
    /// build, each with the verdict Smart Office's published contract gives.
    fn smart_office_cases() -> Vec<Case> {
        #[derive(serde::Deserialize)]
        struct Table {
            cases: Vec<Case>,
        }
        let table: Table = serde_json::from_str(include_str!("smart_office_cases.json")).unwrap();
        table.cases
    }

    #[test]
    fn the_contract_gives_smart_offices_verdicts() {
        let cases = smart_office_cases();
        assert!(cases.len() > 80, "{}", cases.len());
        let mut wrong = Vec::new();
        for case in &cases {
            let got = validate_contract(&case.document);
            let verdict = if got.is_ok() { "accept" } else { "refuse" };
            assert!(["accept", "refuse"].contains(&case.verdict.as_str()), "{}: {}", case.name, case.verdict);
            if verdict != case.verdict {
                wrong.push(format!("{}: Smart Office would {}, the contract says {:?}", case.name, case.verdict, got));
            }
        }
        assert!(wrong.is_empty(), "{wrong:#?}");
        for verdict in ["accept", "refuse"] {
            assert!(cases.iter().any(|c| c.verdict == verdict), "the table has cases to {verdict}");
        }
    }

    /// The emitted schema includes the contract: what the contract refuses,
    /// fanin never sends.
    #[test]
    fn what_fanin_emits_is_within_the_contract() {
        for case in smart_office_cases().iter().filter(|c| c.verdict == "refuse") {
            assert!(validate(&case.document).is_err(), "{}", case.name);
        }
        // Narrower than the contract where fanin promises more.
        let mut executor_without_steps = execution("executor", None);
        executor_without_steps["payload"]["registryFiles"] = json!([]);
        let mut named_otherwise = execution("executor", Some(one_step()));
        named_otherwise["header"]["source"] = json!("trigger");
        for envelope in [executor_without_steps, named_otherwise] {
            validate_contract(&envelope).unwrap();
            assert!(validate(&envelope).is_err(), "{envelope}");
        }
    }
}
