//! `/api/v1/session`: browser login with a token or a one-time login link (an HttpOnly,
//! SameSite=Strict cookie, named `__Host-lhd_session` over HTTPS, and a CSRF token),
//! who-am-I, logout; `/api/v1/session/links`: login links for the local admin
//! (`localhostd login-url`).

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
use crate::store::auth::{Actor, Refusal, Via};

/// Log in with an API token, or with a one-time login link's secret (`localhostd login-url`
/// prints `<base>/login#link=<secret>`): exactly one of the two.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Login {
    #[schema(nullable = false)]
    token: Option<String>,
    #[schema(nullable = false)]
    link: Option<String>,
}

#[utoipa::path(
    post,
    path = "/api/v1/session",
    tag = "session",
    operation_id = "session_create",
    request_body(content = Login, content_type = "application/json", description = "An API token, or a login link's secret, to log in with."),
    responses(
        (status = 201, description = "Logged in: the session cookie is set; send `csrf_token` as `X-CSRF-Token` with changes.",
            body = crate::api::openapi::SessionCreated,
            headers(
                ("Set-Cookie" = String, description = "The session cookie (HttpOnly, SameSite=Strict; `__Host-lhd_session` and Secure over HTTPS)."),
                ("Cache-Control" = String, description = "`no-store`."),
            )),
        (status = 400, description = "The body is not the JSON asked for, or has neither or both of `token` and `link` (`invalid_json`, `bad_request`).", body = crate::api::openapi::ErrorResponse),
        (status = 401, description = "The token is unknown, revoked or expired, or the link unknown, used already or expired (`unauthorized`, with the reason for a link).", body = crate::api::openapi::ErrorResponse),
        (status = 429, description = "Too many failed logins from this address, or the rate limit (`rate_limited`).", body = crate::api::openapi::ErrorResponse,
            headers(("Retry-After" = String, description = "Seconds to wait before retrying."))),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    Extension(client): Extension<Client>,
    Json(body): Json<Login>,
) -> Result<Response, ApiError> {
    let (actor, how) = match (body.token, body.link) {
        (Some(token), None) => match state.auth.verify_token(token.trim()).await? {
            Ok(a) => (a, "token"),
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
        },
        (None, Some(link)) => match state.auth.redeem_login_link(link.trim()).await? {
            Ok(a) => (a, "login link"),
            Err(refusal) => {
                let why = match refusal {
                    Refusal::Used => "this login link was used already (each works once)",
                    Refusal::Expired => "this login link has expired",
                    _ => "this login link is not valid",
                };
                let message =
                    format!("{why}; run `localhostd login-url` on the host for a new one");
                return Ok(access::refuse_credential_saying(
                    &state,
                    &client,
                    "login link",
                    refusal,
                    "/api/v1/session",
                    &message,
                )
                .await);
            }
        },
        _ => {
            return Err(ApiError::bad_request(
                "send exactly one of \"token\" (an API token) and \"link\" (a login link's secret)",
            ));
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
            &format!("with a {how}"),
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

#[utoipa::path(
    post,
    path = "/api/v1/session/links",
    tag = "session",
    operation_id = "session_link_create",
    responses(
        (status = 201, description = "A one-time login link's secret, valid for `auth.login-link-ttl`: open `<base>/login#link=<link>` (what `localhostd login-url` prints), or post it as `{\"link\"}` to `POST /api/v1/session`. Only the host's admin on the admin socket may make one.",
            body = crate::api::openapi::LoginLink,
            headers(("Cache-Control" = String, description = "`no-store`."))),
        (status = 403, description = "Not the admin socket: any token or session is refused, whatever its scopes (`forbidden`).", body = crate::api::openapi::ErrorResponse),
    )
)]
pub async fn create_link(
    State(state): State<AppState>,
    Requester {
        actor,
        client: _,
        caller,
    }: Requester,
) -> Result<Response, ApiError> {
    let ttl = state.live.get().auth.login_link_ttl.get();
    let made = state.auth.create_login_link(&actor, ttl).await;
    state
        .audit_change(&caller, "session.link_create", &actor.name, &made, "")
        .await;
    let made = made?;
    let mut resp = (
        StatusCode::CREATED,
        axum::Json(json!({"link": made.link, "expires_at": made.expires_at})),
    )
        .into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}
