//! `/health` (liveness), `/ready` (readiness) and `/api/v1/health` (the JSON report).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::error::ApiError;
use crate::daemon::AppState;

/// Liveness: the process serves HTTP. Touches nothing else.
pub async fn live() -> Response {
    axum::Json(json!({"status": "ok"})).into_response()
}

/// Readiness: 200 when every check passes, else 503 naming each failing check.
pub async fn ready(State(state): State<AppState>) -> Response {
    let checks = state.health.readiness().await;
    if checks.iter().all(|c| c.ok) {
        return axum::Json(json!({"status": "ready", "checks": checks})).into_response();
    }
    let reasons: Vec<String> = checks
        .iter()
        .filter(|c| !c.ok)
        .map(|c| format!("{}: {}", c.name, c.detail))
        .collect();
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        format!("not ready: {}", reasons.join("; ")),
    )
    .with_extra(json!({"status": "not_ready", "checks": checks}))
    .into_response()
}

/// Version, uptime and per-component status.
pub async fn report(State(state): State<AppState>) -> Response {
    axum::Json(state.health.report().await).into_response()
}
