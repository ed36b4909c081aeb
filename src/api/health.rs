//! `/health` (liveness), `/ready` (readiness) and `/api/v1/health` (the JSON report).

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::error::ApiError;
use crate::api::state::AppState;

/// Liveness: the process serves HTTP. Touches nothing else.
#[utoipa::path(
    get,
    path = "/health",
    tag = "health",
    operation_id = "health_live",
    responses((status = 200, description = "The process serves HTTP.", body = crate::api::openapi::Live))
)]
pub async fn live() -> Response {
    axum::Json(json!({"status": "ok"})).into_response()
}

/// Readiness: 200 when every check passes, else 503 naming each failing check. Files whose
/// metadata has no content do not stop the service: 200 with `"status": "degraded"` and the
/// reason in `degraded`.
#[utoipa::path(
    get,
    path = "/ready",
    tag = "health",
    operation_id = "health_ready",
    responses(
        (status = 200, description = "Ready (or degraded: still serving).", body = crate::api::openapi::Ready),
        (status = 503, description = "Not ready: the failing checks.", body = crate::api::openapi::NotReady,
            headers(("Retry-After" = String, description = "Seconds to wait before retrying."))),
    )
)]
pub async fn ready(State(state): State<AppState>) -> Response {
    let checks = state.health.readiness().await;
    if checks.iter().all(|c| c.ok) {
        if let Some(reason) = files_degraded(&state) {
            return axum::Json(
                json!({"status": "degraded", "checks": checks, "degraded": [reason]}),
            )
            .into_response();
        }
        return axum::Json(json!({"status": "ready", "checks": checks})).into_response();
    }
    let reasons: Vec<String> = checks
        .iter()
        .filter(|c| !c.ok)
        .map(|c| format!("{}: {}", c.name, c.detail))
        .collect();
    ApiError::unavailable(format!("not ready: {}", reasons.join("; ")))
        .with_extra(json!({"status": "not_ready", "checks": checks}))
        .into_response()
}

/// What is wrong with the file store, if anything: metadata whose blob is gone.
fn files_degraded(state: &AppState) -> Option<String> {
    let missing = state.files.missing();
    if missing.is_empty() {
        return None;
    }
    let shown: Vec<&str> = missing.iter().take(10).map(String::as_str).collect();
    Some(format!(
        "files: {} file(s) have metadata but no content (restore them from a backup, or delete them): {}{}",
        missing.len(),
        shown.join(", "),
        if missing.len() > shown.len() {
            ", …"
        } else {
            ""
        }
    ))
}

/// Version, uptime and per-component status.
#[utoipa::path(
    get,
    path = "/api/v1/health",
    tag = "health",
    operation_id = "health_report",
    responses((status = 200, description = "Version, uptime and each component's status.", body = crate::ops::health::Report))
)]
pub async fn report(State(state): State<AppState>) -> Response {
    let mut report = state.health.report().await;
    let missing = state.files.missing().len();
    let mut facts = serde_json::Map::new();
    facts.insert("missing_blobs".into(), missing.into());
    report.components.push(crate::ops::health::Component {
        name: "files",
        status: if missing == 0 { "ok" } else { "degraded" },
        facts,
    });
    if missing > 0 {
        report.status = "degraded";
    }
    axum::Json(report).into_response()
}
