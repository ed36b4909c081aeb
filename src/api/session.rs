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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Login {
    token: String,
}

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

pub async fn get(Extension(actor): Extension<Actor>) -> Response {
    axum::Json(json!({"actor": actor})).into_response()
}

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
