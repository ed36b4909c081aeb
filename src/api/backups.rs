//! `/api/v1/backups`: admins make, list, verify and (offline) restore backups, and apply the
//! retention settings. Thin: extract → `backup::Backups` → map.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::error::ApiError;
use super::extract::Requester;
use crate::api::state::AppState;

/// The audit trail takes the domain error; a backup error is recorded by its message alone
/// (a message-only variant, so the row reads "error: <message>").
fn for_audit<T>(r: &Result<T, crate::ops::backup::BackupError>) -> crate::error::Result<()> {
    match r {
        Ok(_) => Ok(()),
        Err(e) => Err(crate::error::Error::Invalid(e.to_string())),
    }
}

pub async fn create(
    State(state): State<AppState>,
    Requester { caller, .. }: Requester,
) -> Result<Response, ApiError> {
    let result = state.backups.create().await;
    let detail = match &result {
        Ok(c) => format!(
            "{} entries, {} bytes in, {} bytes archived, {} ms",
            c.entries, c.data_bytes, c.size, c.duration_ms
        ),
        Err(_) => String::new(),
    };
    let target = result.as_ref().map(|c| c.id.clone()).unwrap_or_default();
    state
        .audit_change(
            &caller,
            "backup.create",
            &target,
            &for_audit(&result),
            &detail,
        )
        .await;
    let created = result?;
    state
        .metrics
        .backup_succeeded(created.completed_unix_seconds() as u64);
    Ok((StatusCode::CREATED, axum::Json(created)).into_response())
}

pub async fn list(State(state): State<AppState>) -> Result<Response, ApiError> {
    let mut items = state.backups.list().await?;
    items.reverse();
    Ok(axum::Json(json!({"items": items, "next_cursor": null})).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyQuery {
    #[serde(default)]
    read_data: bool,
}

pub async fn verify(
    State(state): State<AppState>,
    Path(id): Path<String>,
    q: Result<Query<VerifyQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q?;
    let v = state.backups.verify(&id, q.read_data).await?;
    Ok(axum::Json(v).into_response())
}

pub async fn restore(
    State(state): State<AppState>,
    Requester { caller, .. }: Requester,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let result = state.backups.restore(&id).await;
    state
        .audit_change(&caller, "backup.restore", &id, &for_audit(&result), "")
        .await;
    Ok(axum::Json(result?).into_response())
}

pub async fn prune(
    State(state): State<AppState>,
    Requester { caller, .. }: Requester,
) -> Result<Response, ApiError> {
    let result = state.backups.prune().await;
    let detail = match &result {
        Ok(gone) => gone
            .iter()
            .map(|b| b.id.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        Err(_) => String::new(),
    };
    state
        .audit_change(&caller, "backup.prune", "", &for_audit(&result), &detail)
        .await;
    let removed = result?;
    Ok(axum::Json(json!({"removed": removed})).into_response())
}
