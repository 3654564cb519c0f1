//! The OpenAPI document, generated from the handler annotations.

use utoipa::OpenApi;

use super::{api, dashboard, fire, session, ws};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "hermes-gateway",
        description = "Control plane of the Hermes agent gateway."
    ),
    paths(
        api::health,
        api::health_detailed,
        api::models,
        api::model,
        api::capabilities,
        api::chat_completions,
        dashboard::status,
        dashboard::drain_status,
        dashboard::drain_action,
        dashboard::restart,
        dashboard::metrics,
        dashboard::openapi,
        fire::fire,
        session::login_page,
        session::password_login,
        session::logout,
        session::me,
        session::providers,
        session::ws_ticket,
        ws::events,
        ws::chat,
    ),
    components(schemas(dashboard::DrainBegun, dashboard::DrainCancelled))
)]
struct ApiDoc;

/// The document as JSON text.
pub fn document() -> String {
    ApiDoc::openapi()
        .to_json()
        .unwrap_or_else(|e| format!("{{\"error\":\"cannot render the OpenAPI document: {e}\"}}"))
}
