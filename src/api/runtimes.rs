//! `GET /api/v1/runtimes`: what jobs can run here. Thin: the rules live in
//! `crate::jobs::runtimes`.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::api::state::AppState;

/// The runtimes jobs can use: each interpreter of `programs.runtimes`
///
/// With its file extensions, where it is, its version (asked once of the interpreter with
/// `--version`, kept until a config reload) and whether jobs can run it here (`reason` says
/// why not).
#[utoipa::path(
    get,
    path = "/api/v1/runtimes",
    tag = "programs",
    operation_id = "runtimes_list",
    responses(
        (status = 200, description = "Every configured runtime, by interpreter name.", body = crate::api::openapi::RuntimeList),
    )
)]
pub async fn list(State(state): State<AppState>) -> Response {
    axum::Json(json!({"items": state.runtimes.list().await})).into_response()
}
