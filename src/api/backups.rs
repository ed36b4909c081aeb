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

#[utoipa::path(
    post,
    path = "/api/v1/backups",
    tag = "backups",
    operation_id = "backups_create",
    responses(
        (status = 201, description = "The backup, made and complete.", body = crate::ops::backup::Created),
        (status = 409, description = "Another backup or a restore is under way (`conflict`).", body = crate::api::openapi::ErrorResponse),
    )
)]
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

#[utoipa::path(
    get,
    path = "/api/v1/backups",
    tag = "backups",
    operation_id = "backups_list",
    responses((status = 200, description = "Every backup, newest first.", body = crate::api::openapi::Page<crate::ops::backup::BackupInfo>))
)]
pub async fn list(State(state): State<AppState>) -> Result<Response, ApiError> {
    let mut items = state.backups.list().await?;
    items.reverse();
    Ok(axum::Json(json!({"items": items, "next_cursor": null})).into_response())
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct VerifyQuery {
    /// Re-read every byte and recompute every SHA-256 (else: structure, sizes and gzip CRC).
    #[serde(default)]
    read_data: bool,
}

#[utoipa::path(
    post,
    path = "/api/v1/backups/{id}/verify",
    tag = "backups",
    operation_id = "backups_verify",
    params(("id" = String, Path, description = "The backup's id."), VerifyQuery),
    responses(
        (status = 200, description = "The backup is whole.", body = crate::ops::backup::Verified),
        (status = 400, description = "Not a backup id, or a bad query (`bad_request`).", body = crate::api::openapi::ErrorResponse),
        (status = 404, description = "No such backup (`not_found`).", body = crate::api::openapi::ErrorResponse),
        (status = 409, description = "A restore is under way (`conflict`).", body = crate::api::openapi::ErrorResponse),
        (status = 422, description = "The backup is damaged or of an unsupported format; the message names the first bad entry (`unprocessable`).", body = crate::api::openapi::ErrorResponse),
    )
)]
pub async fn verify(
    State(state): State<AppState>,
    Path(id): Path<String>,
    q: Result<Query<VerifyQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q?;
    let v = state.backups.verify(&id, q.read_data).await?;
    Ok(axum::Json(v).into_response())
}

#[utoipa::path(
    post,
    path = "/api/v1/backups/{id}/restore",
    tag = "backups",
    operation_id = "backups_restore",
    params(("id" = String, Path, description = "The backup's id.")),
    description = "A restore replaces the database the daemon holds open, so it runs offline \
        (`localhostd backup restore ID` with the service stopped): for a backup that exists this \
        route answers 409 with the steps.",
    responses(
        (status = 400, description = "Not a backup id (`bad_request`).", body = crate::api::openapi::ErrorResponse),
        (status = 404, description = "No such backup (`not_found`).", body = crate::api::openapi::ErrorResponse),
        (status = 409, description = "The backup exists; restore it offline, as the message says (`conflict`).", body = crate::api::openapi::ErrorResponse),
    )
)]
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

#[utoipa::path(
    post,
    path = "/api/v1/backups:prune",
    tag = "backups",
    operation_id = "backups_prune",
    responses(
        (status = 200, description = "The backups the retention settings removed.", body = crate::api::openapi::Pruned),
        (status = 409, description = "A backup or restore is under way (`conflict`).", body = crate::api::openapi::ErrorResponse),
    )
)]
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
