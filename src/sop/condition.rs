//! The condition language of DESIGN §3: parsed once at load, evaluated
//! against the parsed payload on every match.
//! (Skeleton: the parser and evaluator are being written.)

use crate::event::Payload;

/// A parsed condition. Cheap to evaluate; never re-parsed.
#[derive(Clone, Debug)]
pub struct Condition {
    source: String,
}

/// Why a condition did not hold, for `fanin explain`.
#[derive(Clone, Debug, PartialEq)]
pub struct Miss(pub String);

impl std::fmt::Display for Miss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A condition that does not parse: the reason and the byte offset.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{reason} at offset {offset}")]
pub struct ParseError {
    pub reason: String,
    pub offset: usize,
}

impl Condition {
    pub fn parse(text: &str) -> Result<Condition, ParseError> {
        Ok(Condition {
            source: text.to_string(),
        })
    }

    /// The condition as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// True when the condition holds. Allocation-free on the hot path.
    pub fn matches(&self, payload: &Payload) -> bool {
        self.check(payload).is_ok()
    }

    /// `Ok` when the condition holds, else why not.
    pub fn check(&self, _payload: &Payload) -> Result<(), Miss> {
        todo!()
    }
}
