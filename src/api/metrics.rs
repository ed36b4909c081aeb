//! `/metrics` (Prometheus text format), `/api/v1/dashboard`, `/api/v1/metrics/history` and
//! `/api/v1/alerts`: thin handlers over `crate::ops::metrics`.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::error::ApiError;
use crate::api::state::AppState;
use crate::ops::metrics::history;

/// The exposition format's content type (text format 0.0.4).
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `GET /metrics`: the latest host sample, the daemon's own process now, the registry.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "monitoring",
    operation_id = "metrics_scrape",
    responses((status = 200, description = "Prometheus text format 0.0.4.", body = String,
        content_type = "text/plain; version=0.0.4; charset=utf-8"))
)]
pub async fn scrape(State(state): State<AppState>) -> Response {
    let (running, waiting) = state.exec.load();
    state.metrics.set_exec_load(running, waiting);
    state
        .metrics
        .set_terminals_running(state.terminals.running());
    let body = state.metrics.render();
    let mut resp = body.into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    resp
}

/// `GET /api/v1/dashboard`.
#[utoipa::path(
    get,
    path = "/api/v1/dashboard",
    tag = "monitoring",
    operation_id = "dashboard",
    responses((status = 200, description = "The host now, storage, recent activity, alerts and the last hour.", body = crate::ops::metrics::dashboard::Dashboard))
)]
pub async fn dashboard(State(state): State<AppState>) -> Result<Response, ApiError> {
    Ok(Json(state.metrics.dashboard().await?).into_response())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// Comma-separated series: cpu, memory, disk, load1, net_rx, net_tx (default: all).
    series: Option<String>,
    /// How far back, up to 24h: e.g. `15m`, `1h`, `24h` (default `1h`).
    range: Option<String>,
}

/// `GET /api/v1/metrics/history?series=cpu,memory,disk&range=1h`.
#[utoipa::path(
    get,
    path = "/api/v1/metrics/history",
    tag = "monitoring",
    operation_id = "metrics_history",
    params(HistoryQuery),
    responses(
        (status = 200, description = "One timestamp list and a column per series.", body = crate::ops::metrics::dashboard::HistoryView),
        (status = 400, description = "An unknown series or range, or another query parameter (`bad_request`).", body = crate::api::openapi::ErrorResponse),
    )
)]
pub async fn history(
    State(state): State<AppState>,
    query: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query?;
    let series = history::parse_series(q.series.as_deref())?;
    let range = history::parse_range(q.range.as_deref())?;
    Ok(Json(state.metrics.history(&series, range)).into_response())
}

/// `GET /api/v1/alerts`.
#[utoipa::path(
    get,
    path = "/api/v1/alerts",
    tag = "monitoring",
    operation_id = "alerts",
    responses((status = 200, description = "Every alert and its state.", body = crate::api::openapi::Page<crate::ops::metrics::alerts::View>))
)]
pub async fn alerts(State(state): State<AppState>) -> Response {
    Json(serde_json::json!({ "items": state.metrics.alerts(), "next_cursor": null }))
        .into_response()
}
