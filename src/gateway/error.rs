//! An operation's refusal ([`OpError`]) as the admin API answers it: the
//! one mapping of operations' errors to HTTP.

use axum::http::StatusCode;
use serde_json::json;

use crate::http::ApiError;
use crate::operations::OpError;

impl From<OpError> for ApiError {
    /// Missing: 404 with the thing's code and id. Refused where it is: 409
    /// with the kind's code, the id, its `status` (null when it has none)
    /// and the reason as `detail`. A refused input: 400 `invalid_request`
    /// naming the field. The store: 503.
    fn from(e: OpError) -> ApiError {
        match e {
            OpError::NotFound { what, id, detail } => {
                let error = ApiError::new(StatusCode::NOT_FOUND, what.not_found_code()).with(what.field(), id);
                match detail {
                    Some(detail) => error.with("detail", detail),
                    None => error,
                }
            }
            OpError::Conflict { what, id, kind, status, reason } => ApiError::new(StatusCode::CONFLICT, kind.code())
                .with(what.field(), id)
                .with("status", json!(status))
                .with("detail", reason),
            OpError::Invalid { field, reason } => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_request").with("field", field).with("detail", reason)
            }
            OpError::StoreUnavailable(reason) => {
                tracing::warn!(%reason, "admin operation: the store is unavailable");
                ApiError::store_unavailable()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;
    use crate::operations::{ConflictKind, Thing};

    fn body(e: &ApiError) -> Value {
        Value::Object(e.body.clone())
    }

    #[test]
    fn operation_refusals_keep_the_codes_the_admin_api_answers_with() {
        let e = ApiError::from(OpError::Conflict {
            what: Thing::Run,
            id: "r".into(),
            kind: ConflictKind::NotPending,
            status: Some("cancelled".into()),
            reason: "run r is cancelled".into(),
        });
        assert_eq!(e.status(), StatusCode::CONFLICT);
        assert_eq!(
            body(&e),
            json!({"error": "not_pending", "run_id": "r", "status": "cancelled", "detail": "run r is cancelled"})
        );
        let e = ApiError::from(OpError::not_found(Thing::Run, "r"));
        assert_eq!((e.status(), body(&e)), (StatusCode::NOT_FOUND, json!({"error": "run_not_found", "run_id": "r"})));
        let e = ApiError::from(OpError::not_found(Thing::Envelope, "e"));
        assert_eq!(body(&e), json!({"error": "envelope_not_found", "id": "e"}));
        let e = ApiError::from(OpError::NotFound {
            what: Thing::Sop,
            id: "s".into(),
            detail: Some("no SOP named s".into()),
        });
        assert_eq!(body(&e), json!({"error": "no_matching_sop", "sop": "s", "detail": "no SOP named s"}));
    }

    #[test]
    fn cancel_refusals_say_where_the_run_is() {
        let e = ApiError::from(OpError::Conflict {
            what: Thing::Run,
            id: "r".into(),
            kind: ConflictKind::NotCancellable,
            status: Some("completed".into()),
            reason: "run r is completed; it cannot become cancelled".into(),
        });
        assert_eq!(e.status(), StatusCode::CONFLICT);
        assert_eq!(
            (body(&e)["error"].clone(), body(&e)["status"].clone()),
            (json!("run_not_cancellable"), json!("completed"))
        );
    }

    #[test]
    fn a_retry_refusal_names_the_envelope() {
        let e = ApiError::from(OpError::Conflict {
            what: Thing::Envelope,
            id: "e".into(),
            kind: ConflictKind::NotDead,
            status: None,
            reason: "is pending".into(),
        });
        assert_eq!(body(&e), json!({"error": "not_dead", "id": "e", "status": null, "detail": "is pending"}));
    }

    #[test]
    fn bad_input_is_400_and_the_store_503() {
        let e = ApiError::from(OpError::Invalid { field: "prefix", reason: "too short".into() });
        assert_eq!((e.status(), body(&e)["field"].clone()), (StatusCode::BAD_REQUEST, json!("prefix")));
        let e = ApiError::from(OpError::StoreUnavailable("store unavailable: disk full".into()));
        assert_eq!((e.status(), body(&e)), (StatusCode::SERVICE_UNAVAILABLE, json!({"error": "store_unavailable"})));
    }
}
