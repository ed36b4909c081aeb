//! `/api/v1/session`: browser login with a token (an HttpOnly, SameSite=Strict cookie, named
//! `__Host-lhd_session` over HTTPS, and a CSRF token), who-am-I, and logout.

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::access::{self, Client, session_cookie_name};
use super::error::ApiError;
use super::extract::Json;
use super::extract::{Requester, caller_of};
use crate::api::state::AppState;
use crate::store::auth::{Actor, Via};

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Login {
    token: String,
}

#[utoipa::path(
    post,
    path = "/api/v1/session",
    tag = "session",
    operation_id = "session_create",
    request_body(content = Login, content_type = "application/json", description = "An API token to log in with."),
    responses(
        (status = 201, description = "Logged in: the session cookie is set; send `csrf_token` as `X-CSRF-Token` with changes.",
            body = crate::api::openapi::SessionCreated,
            headers(
                ("Set-Cookie" = String, description = "The session cookie (HttpOnly, SameSite=Strict; `__Host-lhd_session` and Secure over HTTPS)."),
                ("Cache-Control" = String, description = "`no-store`."),
            )),
        (status = 400, description = "The body is not the JSON asked for (`invalid_json`).", body = crate::api::openapi::ErrorResponse),
        (status = 401, description = "The token is unknown, revoked or expired (`unauthorized`).", body = crate::api::openapi::ErrorResponse),
        (status = 429, description = "Too many failed logins from this address, or the rate limit (`rate_limited`).", body = crate::api::openapi::ErrorResponse,
            headers(("Retry-After" = String, description = "Seconds to wait before retrying."))),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    Extension(client): Extension<Client>,
    Json(body): Json<Login>,
) -> Result<Response, ApiError> {
    let actor = match state.auth.verify_token(body.token.trim()).await? {
        Ok(a) => a,
        Err(refusal) => {
            return Ok(access::refuse_credential(
                &state,
                &client,
                "login token",
                refusal,
                "/api/v1/session",
            )
            .await);
        }
    };
    let session = state.auth.create_session(&actor).await?;
    let ok: Result<(), crate::error::Error> = Ok(());
    state
        .audit_change(
            &caller_of(&session.actor, &client),
            "session.create",
            &actor.name,
            &ok,
            "",
        )
        .await;
    let cfg = state.live.get();
    // Over HTTPS the `__Host-` name, which needs exactly these attributes: Secure, Path=/, no
    // Domain.
    let secure = if client.secure { "; Secure" } else { "" };
    let cookie = format!(
        "{}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        session_cookie_name(client.secure),
        session.cookie,
        cfg.auth.session_max_age.get().as_secs()
    );
    let mut resp = (
        StatusCode::CREATED,
        axum::Json(json!({
            "csrf_token": session.csrf,
            "actor": session.actor,
            "idle_timeout_s": cfg.auth.session_idle_timeout.get().as_secs(),
        })),
    )
        .into_response();
    let value =
        HeaderValue::from_str(&cookie).map_err(|e| crate::error::Error::Internal(e.to_string()))?;
    resp.headers_mut().insert(header::SET_COOKIE, value);
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

#[utoipa::path(
    get,
    path = "/api/v1/session",
    tag = "session",
    operation_id = "session_get",
    responses((status = 200, description = "Who the credential is; with a session cookie, the session's `csrf_token` too (a reloaded page reads it here).", body = crate::api::openapi::Whoami))
)]
pub async fn get(
    Extension(actor): Extension<Actor>,
    csrf: Option<Extension<access::SessionCsrf>>,
) -> Response {
    match csrf {
        Some(Extension(access::SessionCsrf(csrf))) => {
            let mut resp = axum::Json(json!({"actor": actor, "csrf_token": csrf})).into_response();
            resp.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            resp
        }
        None => axum::Json(json!({"actor": actor})).into_response(),
    }
}

#[utoipa::path(
    delete,
    path = "/api/v1/session",
    tag = "session",
    operation_id = "session_delete",
    responses(
        (status = 204, description = "Logged out; the cookie is cleared.",
            headers(("Set-Cookie" = String, description = "The session cookie, expired."))),
        (status = 400, description = "The request was not made with a session cookie (`bad_request`).", body = crate::api::openapi::ErrorResponse),
        (status = 404, description = "The session is already gone (`not_found`).", body = crate::api::openapi::ErrorResponse),
    )
)]
pub async fn delete(
    State(state): State<AppState>,
    Requester {
        actor,
        client,
        caller,
    }: Requester,
) -> Result<Response, ApiError> {
    let (Via::Session, Some(id)) = (actor.via, actor.session_id.as_deref()) else {
        return Err(ApiError::bad_request(
            "this request was not made with a session cookie; there is no session to end",
        ));
    };
    let result = state.auth.revoke_session(id).await;
    state
        .audit_change(&caller, "session.end", id, &result, "")
        .await;
    result?;
    let secure = if client.secure { "; Secure" } else { "" };
    let clear = format!(
        "{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}",
        session_cookie_name(client.secure)
    );
    let mut resp = StatusCode::NO_CONTENT.into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&clear).map_err(|e| crate::error::Error::Internal(e.to_string()))?,
    );
    Ok(resp)
}
