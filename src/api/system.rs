//! `GET /api/v1/system` (the host's facts) and `GET /api/v1/processes` (the top processes):
//! thin handlers over `crate::ops::system` and `crate::ops::processes`, which read procfs on
//! a blocking thread.

use axum::Json;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::error::ApiError;
use crate::api::state::AppState;
use crate::error::Error;
use crate::ops::processes::{self, SortBy};
use crate::ops::system;

/// Runs blocking `f` on the runtime's blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> crate::error::Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("a blocking task failed: {e}")))?
        .map_err(ApiError::from)
}

/// The host: hostname, OS, kernel, uptime, CPU, load, memory, filesystems, interfaces
#[utoipa::path(
    get,
    path = "/api/v1/system",
    tag = "monitoring",
    operation_id = "system_facts",
    responses(
        (status = 200, description = "The host's facts and what the daemon can see of it.", body = crate::ops::system::SystemFacts),
    )
)]
pub async fn facts() -> Result<Response, ApiError> {
    Ok(Json(blocking(system::facts).await?).into_response())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ProcessesQuery {
    /// `cpu` (default) or `memory`.
    #[param(pattern = "^(cpu|memory)$")]
    sort: Option<String>,
    /// How many, 1 to 100 (default 10).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100)]
    limit: Option<String>,
}

/// The top processes by CPU or memory (admin: command lines can hold secrets)
///
/// CPU shares are measured between two readings of /proc: this request's and the previous
/// request's when that is at most 30 s old, else one taken 500 ms before (`interval_ms` says
/// which). Under the packaged unit (`ProtectProc=invisible`) only the daemon's own user's
/// processes are visible: `visibility` says so.
#[utoipa::path(
    get,
    path = "/api/v1/processes",
    tag = "monitoring",
    operation_id = "processes_top",
    params(ProcessesQuery),
    responses(
        (status = 200, description = "The top processes, highest first.", body = crate::ops::processes::Top),
        (status = 400, description = "A bad `sort` or `limit`, or another query parameter (`bad_request`).", body = crate::api::openapi::ErrorResponse),
    )
)]
pub async fn processes(
    State(state): State<AppState>,
    query: Result<Query<ProcessesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query?;
    let sort = SortBy::parse(q.sort.as_deref())?;
    let limit = processes::parse_limit(q.limit.as_deref())?;
    let state = state.clone();
    let top = blocking(move || state.processes.top(sort, limit)).await?;
    Ok(Json(top).into_response())
}
