//! A webhook body that continues a session: the Agent asked for
//! clarification, and the answer comes back through a webhook carrying the
//! session it belongs to. Smart Office's triggers take the body's
//! `session_id` as the envelope's session; a caller replaying an envelope's
//! memory sends `context.memory`. Either way the run's envelopes carry that
//! session instead of a new one.
//!
//! The session must be one the envelope contract accepts (its `memory`:
//! `session_id` a non-empty string, `state` an object, `stack` a list of
//! strings, nothing else), with a `session_id` of at most
//! [`MAX_SESSION_ID_BYTES`] bytes and no control characters, and all of it
//! within the stored payload cap. One that is not is ignored, never
//! refused: the event is still the event its SOP matched, the run starts in
//! a new session, and the run-start audit record says why
//! ([`Continuation::audit`]). Refusing would cost the whole event for an
//! optional field a client got wrong.

use serde_json::{json, Map, Value};

/// The longest `session_id` a body may continue.
pub const MAX_SESSION_ID_BYTES: usize = 255;

/// What a webhook body says about its session.
#[derive(Clone, Debug, PartialEq)]
pub enum Continuation {
    /// No `session_id` and no `context.memory`: a new session.
    New,
    /// The session to continue, as the contract's memory
    /// (`{session_id, state, stack}`).
    Continues(Value),
    /// The body named a session fanin does not take, and why.
    Ignored(String),
}

impl Continuation {
    /// From a webhook body: `context.memory` when the body has one (it
    /// decides alone), else a top-level `session_id` (with a new state and
    /// stack: the body's own `state` and `stack`, if any, are its content).
    /// `cap` bounds the session's JSON, as payloads are bounded in the store.
    pub fn of_body(body: &Value, cap: usize) -> Continuation {
        let Some(body) = body.as_object() else {
            return Continuation::New;
        };
        let found = match body.get("context").and_then(|c| c.get("memory")) {
            Some(memory) => memory_of(memory),
            None => match body.get("session_id") {
                Some(id) => session_id(id, "session_id").map(|id| json!({"session_id": id, "state": {}, "stack": []})),
                None => return Continuation::New,
            },
        };
        match found {
            Ok(session) if crate::event::fits_as_json(&session, cap) => Continuation::Continues(session),
            Ok(_) => Continuation::Ignored(format!(
                "the session is larger than {cap} bytes of JSON (untrusted_payload_max_bytes)"
            )),
            Err(reason) => Continuation::Ignored(reason),
        }
    }

    /// The session to continue, if any.
    pub fn session(&self) -> Option<&Value> {
        match self {
            Continuation::Continues(session) => Some(session),
            _ => None,
        }
    }

    /// What the run-start audit record says: `{"continued": <session_id>}`
    /// or `{"ignored": <reason>}`; nothing for a new session.
    pub fn audit(&self) -> Option<Value> {
        match self {
            Continuation::New => None,
            Continuation::Continues(session) => Some(json!({"continued": session["session_id"]})),
            Continuation::Ignored(reason) => Some(json!({"ignored": reason})),
        }
    }
}

/// `context.memory` as the contract's memory; the stack defaults to empty.
fn memory_of(memory: &Value) -> Result<Value, String> {
    let Some(memory) = memory.as_object() else {
        return Err(format!("context.memory must be an object, not {}", kind(memory)));
    };
    if let Some(other) = memory.keys().find(|k| !["session_id", "state", "stack"].contains(&k.as_str())) {
        return Err(format!("context.memory has {other:?}; a memory has only session_id, state and stack"));
    }
    let id = session_id(memory.get("session_id").unwrap_or(&Value::Null), "context.memory.session_id")?;
    let state = match memory.get("state") {
        Some(Value::Object(state)) => state.clone(),
        Some(other) => return Err(format!("context.memory.state must be an object, not {}", kind(other))),
        None => return Err("context.memory has no state".into()),
    };
    let stack = match memory.get("stack") {
        None => Vec::new(),
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => items.clone(),
        Some(_) => return Err("context.memory.stack must be a list of strings".into()),
    };
    let mut out = Map::new();
    out.insert("session_id".into(), Value::String(id));
    out.insert("state".into(), Value::Object(state));
    out.insert("stack".into(), Value::Array(stack));
    Ok(Value::Object(out))
}

fn session_id(id: &Value, name: &str) -> Result<String, String> {
    let Some(id) = id.as_str() else {
        return Err(format!("{name} must be a string, not {}", kind(id)));
    };
    if id.is_empty() {
        return Err(format!("{name} is empty"));
    }
    if id.len() > MAX_SESSION_ID_BYTES {
        return Err(format!("{name} is longer than {MAX_SESSION_ID_BYTES} bytes"));
    }
    if id.chars().any(char::is_control) {
        return Err(format!("{name} holds a control character"));
    }
    Ok(id.to_string())
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null (or missing)",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAP: usize = 65536;

    fn of(body: Value) -> Continuation {
        Continuation::of_body(&body, CAP)
    }

    #[test]
    fn a_body_without_a_session_starts_a_new_one() {
        for body in [json!(null), json!("text"), json!([1]), json!({"contact": {"id": "c-1"}}), json!({"context": {}})]
        {
            assert_eq!(of(body.clone()), Continuation::New, "{body}");
            assert_eq!(of(body).audit(), None);
        }
    }

    #[test]
    fn a_session_id_continues_its_session_with_a_new_state() {
        let got = of(json!({"session_id": "sess_1740816000000", "state": "open", "stack": 3, "text": "yes"}));
        assert_eq!(got, Continuation::Continues(json!({"session_id": "sess_1740816000000", "state": {}, "stack": []})));
        assert_eq!(got.audit(), Some(json!({"continued": "sess_1740816000000"})));
    }

    #[test]
    fn context_memory_continues_its_session_state_and_stack() {
        let memory = json!({"session_id": "sess_7", "state": {"lead": "c-118", "round": 2}, "stack": ["planner"]});
        let got = of(json!({"context": {"memory": memory}, "session_id": "other", "answer": "Tuesday"}));
        assert_eq!(got.session(), Some(&memory), "context.memory decides alone");
        let got = of(json!({"context": {"memory": {"session_id": "sess_7", "state": {}}}}));
        assert_eq!(got.session(), Some(&json!({"session_id": "sess_7", "state": {}, "stack": []})));
    }

    #[test]
    fn a_session_the_contract_refuses_is_ignored_with_its_reason() {
        let long = "s".repeat(MAX_SESSION_ID_BYTES + 1);
        let cases = [
            (json!({"session_id": 42}), "session_id must be a string, not a number"),
            (json!({"session_id": null}), "session_id must be a string"),
            (json!({"session_id": ""}), "session_id is empty"),
            (json!({"session_id": long}), "longer than 255 bytes"),
            (json!({"session_id": "a\nb"}), "control character"),
            (json!({"context": {"memory": "sess_7"}}), "context.memory must be an object, not a string"),
            (json!({"context": {"memory": {}}}), "context.memory.session_id must be a string"),
            (json!({"context": {"memory": {"session_id": "s"}}}), "context.memory has no state"),
            (json!({"context": {"memory": {"session_id": "s", "state": []}}}), "state must be an object, not a list"),
            (json!({"context": {"memory": {"session_id": "s", "state": {}, "stack": [1]}}}), "list of strings"),
            (json!({"context": {"memory": {"session_id": "s", "state": {}, "user": "x"}}}), "has \"user\""),
        ];
        for (body, reason) in cases {
            let got = of(body.clone());
            let Continuation::Ignored(why) = &got else { panic!("{body}: {got:?}") };
            assert!(why.contains(reason), "{body}: {why}");
            assert_eq!(got.session(), None);
            assert_eq!(got.audit(), Some(json!({"ignored": why})));
        }
        // Exactly at the length limit is taken.
        let at_limit = "s".repeat(MAX_SESSION_ID_BYTES);
        assert!(of(json!({"session_id": at_limit})).session().is_some());
    }

    #[test]
    fn a_session_past_the_payload_cap_is_ignored() {
        let memory = json!({"session_id": "s", "state": {"notes": "n".repeat(200)}});
        let body = json!({"context": {"memory": memory}});
        assert!(Continuation::of_body(&body, 1000).session().is_some());
        let got = Continuation::of_body(&body, 100);
        assert!(matches!(&got, Continuation::Ignored(why) if why.contains("larger than 100 bytes")), "{got:?}");
    }

    /// Every session taken passes the contract's memory.
    #[test]
    fn what_is_continued_is_a_memory_the_contract_accepts() {
        for body in [
            json!({"session_id": "sess_1"}),
            json!({"context": {"memory": {"session_id": "s", "state": {"a": {"b": [1]}}, "stack": ["x", "y"]}}}),
        ] {
            let session = of(body).session().cloned().unwrap();
            crate::envelope::schema::validate_contract(&json!({"context": {"memory": session}})).unwrap();
        }
    }
}
