//! `GET /api/v1/audit`: the audit trail, newest first, filtered and paginated.

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::error::ApiError;
use crate::api::state::AppState;
use crate::store::audit::Filter;

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only this actor's events.
    actor: Option<String>,
    /// Only this action (e.g. `token.create`).
    action: Option<String>,
    /// Events at or after this time (RFC 3339).
    since: Option<String>,
    /// Events at or before this time (RFC 3339).
    until: Option<String>,
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    cursor: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/v1/audit",
    tag = "backups",
    operation_id = "audit_list",
    params(AuditQuery),
    responses(
        (status = 200, description = "A page of events, newest first.", body = crate::api::openapi::Page<crate::store::audit::Record>),
        (status = 400, description = "A bad limit, cursor, time or other query parameter (`bad_request`).", body = crate::api::openapi::ErrorResponse),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    q: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q?;
    let limit = super::page_limit(q.limit)?;
    let page = state
        .audit
        .list(Filter {
            actor: q.actor,
            action: q.action,
            since: q.since,
            until: q.until,
            limit,
            cursor: q.cursor,
        })
        .await?;
    Ok(axum::Json(json!({"items": page.items, "next_cursor": page.next_cursor})).into_response())
}
