//! `/api/v1/tokens`: admins create, list and revoke API tokens.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::error::ApiError;
use super::extract::Json;
use super::extract::Requester;
use crate::api::state::AppState;
use crate::store::auth::{Scope, Scopes, parse_expiry};

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// 1 to 64 ASCII letters, digits, `-`, `_`, `.`, `@`; unique.
    #[schema(pattern = "^[A-Za-z0-9._@-]{1,64}$")]
    name: String,
    /// At least one.
    #[schema(value_type = Vec<Scope>, min_items = 1)]
    scopes: Vec<String>,
    /// e.g. "30d"; absent: never expires.
    expires_in: Option<String>,
}

#[utoipa::path(
    post,
    path = "/api/v1/tokens",
    tag = "tokens",
    operation_id = "tokens_create",
    request_body(content = CreateToken, content_type = "application/json"),
    responses(
        (status = 201, description = "The new token; `token` is the secret, shown this once.", body = crate::store::auth::NewToken),
        (status = 400, description = "An unknown scope, a bad expiry or name, or not the JSON asked for (`bad_request`, `invalid_json`).", body = crate::api::openapi::ErrorResponse),
        (status = 409, description = "A token of that name exists (`conflict`).", body = crate::api::openapi::ErrorResponse),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    Requester { caller, .. }: Requester,
    Json(body): Json<CreateToken>,
) -> Result<Response, ApiError> {
    let scopes = body
        .scopes
        .iter()
        .map(|s| s.parse::<Scope>())
        .collect::<Result<Vec<_>, _>>()?;
    let scopes = Scopes::of(&scopes);
    let expires = body.expires_in.as_deref().map(parse_expiry).transpose()?;
    let result = state.auth.create_token(&body.name, scopes, expires).await;
    state
        .audit_change(
            &caller,
            "token.create",
            &body.name,
            &result,
            &format!("scopes {scopes}"),
        )
        .await;
    let new = result?;
    Ok((StatusCode::CREATED, axum::Json(new)).into_response())
}

#[utoipa::path(
    get,
    path = "/api/v1/tokens",
    tag = "tokens",
    operation_id = "tokens_list",
    responses((status = 200, description = "Every token, never its secret.", body = crate::api::openapi::Page<crate::store::auth::TokenInfo>))
)]
pub async fn list(State(state): State<AppState>) -> Result<Response, ApiError> {
    let items = state.auth.list_tokens().await?;
    Ok(axum::Json(json!({"items": items, "next_cursor": null})).into_response())
}

#[utoipa::path(
    delete,
    path = "/api/v1/tokens/{id}",
    tag = "tokens",
    operation_id = "tokens_revoke",
    params(("id" = String, Path, description = "The token's id or name.")),
    responses(
        (status = 200, description = "The token, revoked.", body = crate::store::auth::TokenInfo),
        (status = 404, description = "No such token (`not_found`).", body = crate::api::openapi::ErrorResponse),
    )
)]
pub async fn revoke(
    State(state): State<AppState>,
    Requester { caller, .. }: Requester,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let result = state.auth.revoke_token(&id).await;
    state
        .audit_change(&caller, "token.revoke", &id, &result, "")
        .await;
    Ok(axum::Json(result?).into_response())
}
