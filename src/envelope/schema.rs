//! The envelope JSON Schema fanin ships (`schemas/envelope.schema.json`) and
//! the check every envelope passes before it leaves (DESIGN §7).
//!
//! The schema is compiled into the binary and compiled once, on first use:
//! the file in the repository is the contract, and what is validated is
//! exactly that file. Format assertions (`date-time`) are switched on, since
//! JSON Schema 2020-12 treats `format` as an annotation by default.

use std::sync::LazyLock;

use jsonschema::error::ValidationErrorKind;
use jsonschema::{Draft, ValidationError, Validator};
use serde_json::Value;

/// The schema text as shipped.
pub const SCHEMA_TEXT: &str = include_str!("../../schemas/envelope.schema.json");

/// The two forms, in the order of the schema's top-level `oneOf`.
const FORMS: [&str; 2] = ["legacy", "execution"];
const LEGACY: usize = 0;
const EXECUTION: usize = 1;

static VALIDATOR: LazyLock<Validator> = LazyLock::new(|| match compile(SCHEMA_TEXT) {
    Ok(validator) => validator,
    // A unit test compiles the shipped schema, so this is a build defect.
    Err(reason) => panic!("schemas/envelope.schema.json: {reason}"),
});

fn compile(text: &str) -> Result<Validator, String> {
    let schema: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    jsonschema::options()
        .with_draft(Draft::Draft202012)
        .should_validate_formats(true)
        .build(&schema)
        .map_err(|e| format!("not a valid JSON Schema: {e}"))
}

/// Checks `envelope` against the shipped schema. Each error names the
/// instance path (a JSON pointer, `/` for the root) and the reason.
pub fn validate(envelope: &Value) -> Result<(), Vec<String>> {
    let mut errors = Vec::new();
    for error in VALIDATOR.iter_errors(envelope) {
        describe(&error, envelope, &mut errors);
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// The top-level `oneOf` alone would only say "matches neither form"; the
/// useful errors are those of the form the envelope claims to be.
fn describe(error: &ValidationError<'_>, envelope: &Value, out: &mut Vec<String>) {
    let at_root = error.instance_path().as_str().is_empty();
    match error.kind() {
        ValidationErrorKind::OneOfNotValid { context } if at_root && context.len() == FORMS.len() => {
            let form = claimed_form(envelope);
            for inner in &context[form] {
                out.push(format!("{} (as {} envelope)", line(inner), FORMS[form]));
            }
        }
        _ => out.push(line(error)),
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

    fn memory() -> Value {
        json!({"session_id": "run-1", "state": {}, "stack": []})
    }

    fn execution(destination: &str, steps: Option<Value>) -> Value {
        let mut payload = json!({"memory": memory()});
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
    fn the_shipped_schema_compiles_as_2020_12() {
        compile(SCHEMA_TEXT).unwrap();
        let schema: Value = serde_json::from_str(SCHEMA_TEXT).unwrap();
        assert_eq!(schema["$schema"], json!("https://json-schema.org/draft/2020-12/schema"));
    }

    #[test]
    fn minimal_forms_are_accepted() {
        validate(&json!({"context": {"memory": {}}})).unwrap();
        validate(&json!({"context": {"memory": memory()}, "input": {}, "output": null, "error": null})).unwrap();
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
        let errors = errors_of(&json!({"context": {"memory": {"session_id": 7, "stack": {}}}}));
        assert!(mentions(&errors, "/context/memory/session_id"), "{errors:?}");
        assert!(mentions(&errors, "/context/memory/stack"), "{errors:?}");
    }

    #[test]
    fn the_executor_needs_at_least_one_step() {
        let errors = errors_of(&execution("executor", None));
        assert!(mentions(&errors, "/payload: \"steps\" is a required property"), "{errors:?}");
        assert!(mentions(&errors, "as execution envelope"), "{errors:?}");
        let errors = errors_of(&execution("executor", Some(json!([]))));
        assert!(mentions(&errors, "/payload/steps"), "{errors:?}");
    }

    #[test]
    fn header_fields_are_checked() {
        let cases = [
            ("timestamp", json!("yesterday"), "/header/timestamp"),
            ("timestamp", json!("2025-03-01 08:00"), "/header/timestamp"),
            ("source", json!("webhook"), "/header/source"),
            ("source", json!("so.trigger.Web_hook"), "/header/source"),
            ("destination", json!("printer"), "/header/destination"),
            ("id", json!(""), "/header/id"),
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
            ("options", json!({"fallbackRegistry": {"plugins": {}}}), "/payload/options/fallbackRegistry"),
        ];
        for (field, value, path) in cases {
            let mut envelope = execution("executor", Some(one_step()));
            envelope["payload"][field] = value.clone();
            let errors = errors_of(&envelope);
            assert!(mentions(&errors, path), "{field} = {value}: {errors:?}");
        }
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
        envelope["context"] = json!({"memory": {}});
        let errors = errors_of(&envelope);
        assert!(mentions(&errors, "context"), "{errors:?}");
    }
}
