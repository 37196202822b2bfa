//! How an operation fails, in terms both interfaces translate: the gateway
//! into a status and a JSON error (`ApiError`), the command line into the
//! one line it prints before exiting 1 (this type's `Display`).
//!
//! The variants say what kind of refusal it is, never how an interface
//! words it; the codes below are the ones the admin API has always
//! answered with, so clients see no change.

use std::fmt;

use crate::store::StoreError;

/// What an operation names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Thing {
    Run,
    /// An outbox entry, by envelope id.
    Envelope,
    Sop,
    /// A bearer token, by prefix.
    Token,
}

impl Thing {
    /// The JSON field an API reply names it under.
    pub fn field(self) -> &'static str {
        match self {
            Thing::Run => "run_id",
            Thing::Envelope => "id",
            Thing::Sop => "sop",
            Thing::Token => "prefix",
        }
    }

    /// The error code when it does not exist.
    pub fn not_found_code(self) -> &'static str {
        match self {
            Thing::Run => "run_not_found",
            Thing::Envelope => "envelope_not_found",
            Thing::Sop => "no_matching_sop",
            Thing::Token => "token_not_found",
        }
    }
}

/// Why something that exists refuses the operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConflictKind {
    /// Approve or deny: the run is not waiting at an approval gate.
    NotPending,
    /// Cancel: the run has ended.
    NotCancellable,
    /// Retry: the envelope is not a dead letter.
    NotDead,
    /// The run is where the request assumes but cannot move on (its SOP is
    /// no longer loaded), or kept moving while the operation tried.
    CannotMove,
}

impl ConflictKind {
    const ALL: [ConflictKind; 4] =
        [ConflictKind::NotPending, ConflictKind::NotCancellable, ConflictKind::NotDead, ConflictKind::CannotMove];

    pub fn code(self) -> &'static str {
        match self {
            ConflictKind::NotPending => "not_pending",
            ConflictKind::NotCancellable => "run_not_cancellable",
            ConflictKind::NotDead => "not_dead",
            ConflictKind::CannotMove => "conflict",
        }
    }

    /// The kind an API error code names (what the CLI reads back from the
    /// daemon's reply).
    pub fn from_code(code: &str) -> Option<ConflictKind> {
        ConflictKind::ALL.into_iter().find(|k| k.code() == code)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum OpError {
    /// `id` names no such thing. `detail` says more when "no such" is not
    /// the whole story (a SOP that exists but has no manual trigger).
    NotFound { what: Thing, id: String, detail: Option<String> },
    /// It exists, but where it is (`status`, when it has one) refuses the
    /// operation.
    Conflict { what: Thing, id: String, kind: ConflictKind, status: Option<String>, reason: String },
    /// The input itself is refused; `field` names the part of it.
    Invalid { field: &'static str, reason: String },
    /// The store cannot answer now; nothing was written.
    StoreUnavailable(String),
}

impl OpError {
    /// A store failure outside a compare-and-set the operation handles
    /// itself: the store cannot serve the operation now. (Reads never
    /// conflict; an operation names its own conflicts.)
    pub fn store(e: StoreError) -> OpError {
        match e {
            StoreError::Invalid(reason) => OpError::Invalid { field: "store", reason },
            StoreError::Unavailable(_) | StoreError::Conflict(_) => OpError::StoreUnavailable(e.to_string()),
        }
    }

    pub fn not_found(what: Thing, id: impl Into<String>) -> OpError {
        OpError::NotFound { what, id: id.into(), detail: None }
    }
}

impl fmt::Display for OpError {
    /// One line for people, the same whichever process refused.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpError::NotFound { detail: Some(detail), .. } => f.write_str(detail),
            OpError::NotFound { what, id, detail: None } => match what {
                Thing::Run => write!(f, "no run {id}"),
                Thing::Envelope => write!(f, "no envelope {id}"),
                Thing::Sop => write!(f, "no SOP named {id}"),
                Thing::Token => write!(f, "no active token starts with {id}"),
            },
            OpError::Conflict { id, kind, status, reason, .. } => match (kind, status.as_deref()) {
                (ConflictKind::NotPending, Some(status)) if status != "pending_approval" => {
                    write!(f, "run {id} is not waiting for approval (it is {status})")
                }
                (ConflictKind::NotCancellable, Some("cancelled")) => write!(f, "run {id} is already cancelled"),
                (ConflictKind::NotCancellable, Some(status)) => {
                    write!(f, "run {id} cannot be cancelled: it is {status}, which is final")
                }
                (ConflictKind::NotDead, Some(status)) => {
                    write!(f, "envelope {id} is not a dead letter (it is {status})")
                }
                _ => f.write_str(reason),
            },
            OpError::Invalid { reason, .. } => f.write_str(reason),
            OpError::StoreUnavailable(reason) => f.write_str(reason),
        }
    }
}

impl std::error::Error for OpError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn conflict(kind: ConflictKind, status: Option<&str>) -> OpError {
        OpError::Conflict {
            what: Thing::Run,
            id: "r1".into(),
            kind,
            status: status.map(str::to_string),
            reason: "the run moved".into(),
        }
    }

    #[test]
    fn each_refusal_is_one_line_that_names_the_thing_and_why() {
        assert_eq!(OpError::not_found(Thing::Run, "r1").to_string(), "no run r1");
        assert_eq!(OpError::not_found(Thing::Envelope, "e1").to_string(), "no envelope e1");
        assert_eq!(OpError::not_found(Thing::Token, "abcd").to_string(), "no active token starts with abcd");
        let sop =
            OpError::NotFound { what: Thing::Sop, id: "s".into(), detail: Some("SOP s has no manual trigger".into()) };
        assert_eq!(sop.to_string(), "SOP s has no manual trigger");
        assert_eq!(
            conflict(ConflictKind::NotPending, Some("cancelled")).to_string(),
            "run r1 is not waiting for approval (it is cancelled)"
        );
        assert_eq!(conflict(ConflictKind::NotPending, Some("pending_approval")).to_string(), "the run moved");
        assert_eq!(
            conflict(ConflictKind::NotCancellable, Some("cancelled")).to_string(),
            "run r1 is already cancelled"
        );
        assert_eq!(
            conflict(ConflictKind::NotCancellable, Some("completed")).to_string(),
            "run r1 cannot be cancelled: it is completed, which is final"
        );
        assert_eq!(conflict(ConflictKind::CannotMove, None).to_string(), "the run moved");
        let envelope = OpError::Conflict {
            what: Thing::Envelope,
            id: "e1".into(),
            kind: ConflictKind::NotDead,
            status: Some("delivered".into()),
            reason: "x".into(),
        };
        assert_eq!(envelope.to_string(), "envelope e1 is not a dead letter (it is delivered)");
    }

    #[test]
    fn codes_read_back_as_their_kind() {
        for kind in ConflictKind::ALL {
            assert_eq!(ConflictKind::from_code(kind.code()), Some(kind));
        }
        assert_eq!(ConflictKind::from_code("forbidden"), None);
    }

    #[test]
    fn store_failures_are_unavailable_unless_the_store_itself_is_unusable() {
        let e = OpError::store(StoreError::Unavailable("disk full".into()));
        assert_eq!(e, OpError::StoreUnavailable("store unavailable: disk full".into()));
        assert!(matches!(
            OpError::store(StoreError::Invalid("bad url".into())),
            OpError::Invalid { field: "store", .. }
        ));
    }
}
