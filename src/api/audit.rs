//! `GET /api/v1/audit`: the audit trail, newest first, filtered and paginated.

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::error::ApiError;
use crate::api::state::AppState;
use crate::store::audit::Filter;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    actor: Option<String>,
    action: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

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
