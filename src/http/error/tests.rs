//! Every error shape: variant → status, `Retry-After` and body.

use serde_json::{Value, json};

use super::*;
use crate::lifecycle::Refusal;

pub(super) fn check(error: ApiError, status: u16, retry_after: Option<&str>, body: Value) {
    let what = format!("{error:?}");
    let response = error.into_response();
    assert_eq!(response.status().as_u16(), status, "{what}");
    let header = response
        .headers()
        .get(header::RETRY_AFTER)
        .map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(header.as_deref(), retry_after, "{what}");
    let (_, got) = response.into_parts();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let bytes = rt.block_on(axum::body::to_bytes(got, usize::MAX)).unwrap();
    let got: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(got, body, "{what}");
}

fn jobs(message: &str) -> Value {
    json!({"error": message})
}

#[test]
fn openai_shapes() {
    let openai = |message: &str, kind: &str, code: &str| json!({"error": {"message": message, "type": kind, "code": code}});
    let invalid = "invalid_request_error";
    check(
        ApiError::invalid_request("bad", None),
        400,
        None,
        json!({"error": {"message": "bad", "type": invalid, "code": null}}),
    );
    check(
        ApiError::invalid_api_key(),
        401,
        None,
        openai("Invalid API key", invalid, "invalid_api_key"),
    );
    check(
        ApiError::payload_too_large(10),
        413,
        None,
        openai(
            "request body is larger than 10 bytes",
            invalid,
            "payload_too_large",
        ),
    );
    check(
        ApiError::idempotency_key_reused(),
        422,
        None,
        openai(
            "this Idempotency-Key was already used with a different request body",
            invalid,
            "idempotency_key_reused",
        ),
    );
    check(
        ApiError::refused(Refusal::Draining),
        503,
        Some("5"),
        openai(
            &format!("{}; retry later", Refusal::Draining),
            "service_unavailable",
            "gateway_draining",
        ),
    );
    check(
        ApiError::refused(Refusal::NotReady),
        503,
        Some("5"),
        openai(
            &format!("{}; retry later", Refusal::NotReady),
            "service_unavailable",
            "gateway_starting",
        ),
    );
    check(
        ApiError::no_route(StatusCode::NOT_FOUND, "GET", "/x"),
        404,
        None,
        openai("no route GET /x on this server", invalid, "not_found"),
    );
    check(
        ApiError::no_route(StatusCode::METHOD_NOT_ALLOWED, "PUT", "/x"),
        405,
        None,
        openai("PUT is not allowed on /x", invalid, "method_not_allowed"),
    );
    check(
        ApiError::model_not_found("m"),
        404,
        None,
        openai("The model 'm' does not exist", invalid, "model_not_found"),
    );
    check(
        ApiError::interrupted(),
        503,
        Some("5"),
        openai(
            "the turn was interrupted because the gateway is shutting down; retry later",
            "service_unavailable",
            "turn_interrupted",
        ),
    );
    check(
        ApiError::turn_failed("boom".into()),
        502,
        None,
        openai("boom", "server_error", "agent_incomplete"),
    );
    check(
        ApiError::Input(InputError {
            message: "no".into(),
            param: "messages[0].content".into(),
            code: Some("invalid_content_part"),
        }),
        400,
        None,
        json!({"error": {"message": "no", "type": invalid,
            "param": "messages[0].content", "code": "invalid_content_part"}}),
    );
    assert_eq!(
        incomplete_stream("cut", true),
        json!({"error": {"message": "cut", "type": "server_error",
            "code": "agent_incomplete", "partial": true}})
    );
}

#[test]
fn dashboard_shapes() {
    check(
        ApiError::Unauthenticated {
            reason: None,
            login_url: None,
        },
        401,
        None,
        json!({"error": "unauthenticated", "detail": "Unauthorized"}),
    );
    check(
        ApiError::Unauthenticated {
            reason: Some("expired"),
            login_url: Some("/login".into()),
        },
        401,
        None,
        json!({"error": "unauthenticated", "detail": "Unauthorized",
            "reason": "expired", "login_url": "/login"}),
    );
    check(
        ApiError::ProviderUnreachable("nas".into()),
        503,
        Some("5"),
        json!({"detail": "Auth provider 'nas' unreachable"}),
    );
    let shaped = |error: &str, detail: &str| json!({"error": error, "detail": detail});
    check(
        ApiError::BadRequest {
            error: "invalid_body",
            detail: "d".into(),
        },
        400,
        None,
        shaped("invalid_body", "d"),
    );
    check(
        ApiError::Conflict {
            error: "marker_is_directory",
            detail: "d".into(),
        },
        409,
        None,
        shaped("marker_is_directory", "d"),
    );
    check(
        ApiError::Dashboard {
            status: StatusCode::TOO_MANY_REQUESTS,
            error: "rate_limited",
            detail: "d".into(),
            retry_after: Some(42),
        },
        429,
        Some("42"),
        shaped("rate_limited", "d"),
    );
    check(
        ApiError::no_dashboard_route(StatusCode::NOT_FOUND, "GET", "/x"),
        404,
        None,
        shaped("not_found", "no route GET /x"),
    );
    check(
        ApiError::no_dashboard_route(StatusCode::METHOD_NOT_ALLOWED, "PUT", "/x"),
        405,
        None,
        shaped("method_not_allowed", "PUT is not allowed on /x"),
    );
    check(
        ApiError::Socket {
            status: StatusCode::FORBIDDEN,
            reason: "foreign_origin",
            detail: "d".into(),
        },
        403,
        None,
        json!({"error": "unauthenticated", "detail": "d", "reason": "foreign_origin"}),
    );
    check(
        ApiError::Internal {
            log: "disk on fire at /secret/path".into(),
        },
        500,
        None,
        json!({"error": "internal_error", "detail": "Internal server error"}),
    );
}

#[test]
fn job_and_fire_shapes() {
    let table: Vec<(ApiError, u16, Option<&str>, &str)> = vec![
        (
            CronError::Invalid("name: must be a string".into()).into(),
            400,
            None,
            "name: must be a string",
        ),
        (
            CronError::NotFound("abcdefabcdef".into()).into(),
            404,
            None,
            "Job not found",
        ),
        (
            CronError::Draining.into(),
            503,
            Some("5"),
            "the gateway is draining and not starting runs; retry later",
        ),
        (
            CronError::Store(StoreError::Unavailable(
                "connection refused at 10.0.0.7".into(),
            ))
            .into(),
            503,
            Some("5"),
            "the job store is unavailable; retry later",
        ),
        (
            CronError::Store(StoreError::Query("syntax error near secret_table".into())).into(),
            500,
            None,
            "internal error",
        ),
        (
            FireRefusal::BadToken.into(),
            401,
            None,
            "invalid fire token",
        ),
        (
            FireRefusal::NoKey.into(),
            503,
            Some("5"),
            "no fire-token key can be obtained right now; retry later",
        ),
        (
            FireRefusal::BadBody("missing job_id".into()).into(),
            400,
            None,
            "missing job_id",
        ),
        (
            FireRefusal::Cron(CronError::Draining).into(),
            503,
            Some("5"),
            "the gateway is draining and not starting runs; retry later",
        ),
    ];
    for (error, status, retry_after, message) in table {
        check(error, status, retry_after, jobs(message));
    }
}

#[test]
fn session_shapes() {
    use crate::sessions::SessionError;
    let down = || SessionError::Store(StoreError::Unavailable("pg://secret@host".into()));
    let broken = || SessionError::Store(StoreError::Query("syntax error near secret".into()));
    // The `/api/sessions` routes: the job API's shape.
    let routes: Vec<(SessionError, u16, Option<&str>, &str)> = vec![
        (SessionError::InvalidId, 400, None, "Invalid session ID"),
        (SessionError::Unknown, 404, None, "Unknown session ID"),
        (
            down(),
            503,
            Some("5"),
            "the session store is unavailable; retry later",
        ),
        (broken(), 500, None, "internal error"),
    ];
    for (error, status, retry_after, message) in routes {
        check(error.into(), status, retry_after, jobs(message));
    }
    // A chat request's session: the OpenAI shape.
    let openai = |message: &str, kind: &str, code: &str| json!({"error": {"message": message, "type": kind, "code": code}});
    let invalid = "invalid_request_error";
    let chat: Vec<(SessionError, u16, Option<&str>, Value)> = vec![
        (
            SessionError::InvalidId,
            400,
            None,
            openai("Invalid session ID", invalid, "invalid_session_id"),
        ),
        (
            SessionError::NoNewMessage,
            409,
            None,
            openai(
                "No new user message to continue the session with",
                invalid,
                "no_new_message",
            ),
        ),
        (
            SessionError::Unknown,
            404,
            None,
            openai("Unknown session ID", invalid, "session_not_found"),
        ),
        (
            down(),
            503,
            Some("5"),
            openai(
                "the session store is unavailable; retry later",
                "server_error",
                "store_unavailable",
            ),
        ),
        (
            broken(),
            500,
            None,
            openai("internal error", "server_error", "internal_error"),
        ),
    ];
    for (error, status, retry_after, body) in chat {
        check(ApiError::chat_session(error), status, retry_after, body);
    }
}

#[test]
fn responses_shapes() {
    use crate::responses::ResponsesError as E;
    let openai = |message: &str, kind: &str, code: &str| json!({"error": {"message": message, "type": kind, "code": code}});
    let not_found = |m: &str| openai(m, "invalid_request_error", "response_not_found");
    let table: Vec<(E, u16, Option<&str>, Value)> = vec![
        (
            E::BadBody("invalid request body: eof".into()),
            400,
            None,
            json!({"error": {"message": "invalid request body: eof", "type": "invalid_request_error", "code": null}}),
        ),
        (
            E::Input(crate::agent::input::InputError {
                message: "No user message found in input".into(),
                param: "input".into(),
                code: None,
            }),
            400,
            None,
            json!({"error": {"message": "No user message found in input", "type": "invalid_request_error",
                "param": "input", "code": null}}),
        ),
        (
            E::NotFound("resp_1".into()),
            404,
            None,
            not_found("Response not found: resp_1"),
        ),
        (
            E::PreviousNotFound("resp_2".into()),
            404,
            None,
            not_found("Previous response not found: resp_2"),
        ),
        (
            E::Refused(Refusal::Draining),
            503,
            Some("5"),
            openai(
                &format!("{}; retry later", Refusal::Draining),
                "service_unavailable",
                "gateway_draining",
            ),
        ),
        (
            E::Failed("model crashed".into()),
            502,
            None,
            openai("model crashed", "server_error", "agent_incomplete"),
        ),
        (
            E::Store(StoreError::Unavailable("refused at 10.0.0.7".into())),
            503,
            Some("5"),
            openai(
                "the response store is unavailable; retry later",
                "service_unavailable",
                "store_unavailable",
            ),
        ),
        (
            E::Store(StoreError::Corrupt("response resp_3: secret text".into())),
            500,
            None,
            openai("internal error", "server_error", "internal_error"),
        ),
    ];
    for (error, status, retry_after, body) in table {
        check(error.into(), status, retry_after, body);
    }
    let interrupted: ApiError = E::Interrupted.into();
    assert_eq!(interrupted.into_response().status(), 503);
}
