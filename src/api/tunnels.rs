//! `/api/v1/tunnels` (admin): every provider's state, start with options, stop. Thin: the rules
//! live in `crate::ops::tunnels`. While tunnels are off in the config every route answers
//! 403 saying how to turn them on.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::extract::Requester;
use crate::api::state::AppState;
use crate::ops::tunnels::{Provider, disabled_message};

pub fn enabled(state: &AppState) -> Result<(), ApiError> {
    if state.live.get().tunnels.enabled {
        Ok(())
    } else {
        Err(ApiError::forbidden(disabled_message()))
    }
}

fn provider(name: &str) -> Result<Provider, ApiError> {
    Provider::parse(name).ok_or_else(|| {
        ApiError::not_found(format!(
            "no tunnel provider {name:?}; there are ssh, localtunnel, cloudflared and ngrok"
        ))
    })
}

/// Every tunnel provider
///
/// Whether its client can run here (and why not), what an admin asked for (`desired`), what
/// runs (`state`), the public URL while up, since when, restarts, the last error and the
/// client's last output lines; and the public listener the clients forward to.
#[utoipa::path(
    get,
    path = "/api/v1/tunnels",
    tag = "tunnels",
    operation_id = "tunnels_list",
    responses(
        (status = 200, description = "Every provider.", body = crate::ops::tunnels::TunnelList),
        (status = 403, description = "Tunnels are off in the config (`forbidden`; the message says how to turn them on).", body = crate::api::openapi::ErrorResponse),
    )
)]
pub async fn list(State(state): State<AppState>) -> Result<Response, ApiError> {
    enabled(&state)?;
    Ok(axum::Json(state.tunnels.list()).into_response())
}

/// Starts a tunnel
///
/// With the provider's options (a JSON object; an empty body is `{}`): `ssh`: `remote_port`;
/// `localtunnel`: `subdomain`; `cloudflared`: `named` (a named tunnel with the configured
/// token); `ngrok`: `domain`. The tunnel is stored as meant to be up (a restarted daemon
/// brings it back) and its client is started; `state` is `starting` until the client says its
/// public URL. Starting a running tunnel with the same options changes nothing; with others it
/// restarts it.
#[utoipa::path(
    post,
    path = "/api/v1/tunnels/{provider}/start",
    tag = "tunnels",
    operation_id = "tunnels_start",
    params(("provider" = String, Path, description = "ssh, localtunnel, cloudflared or ngrok.")),
    request_body(content = Object, description = "The provider's options.", content_type = "application/json"),
    responses(
        (status = 200, description = "The tunnel, starting (or already up).", body = crate::ops::tunnels::TunnelView),
        (status = 400, description = "An option that is wrong or belongs to another provider (`bad_request`), or a body that is not JSON (`invalid_json`).", body = crate::api::openapi::ErrorResponse),
        (status = 403, description = "Tunnels are off in the config (`forbidden`).", body = crate::api::openapi::ErrorResponse),
        (status = 404, description = "No such provider (`not_found`).", body = crate::api::openapi::ErrorResponse),
        (status = 415, description = "A body that is not `application/json` (`unsupported_media_type`).", body = crate::api::openapi::ErrorResponse),
        (status = 422, description = "The provider cannot run here: its client is missing or a setting is not set (`unprocessable`; the message says which).", body = crate::api::openapi::ErrorResponse),
    )
)]
pub async fn start(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Requester { caller, .. }: Requester,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    enabled(&state)?;
    let p = provider(&name)?;
    let options = options(&headers, &body)?;
    let result = state.tunnels.start(p, &options, &caller.actor).await;
    state
        .audit_change(
            &caller,
            "tunnel.start",
            p.as_str(),
            &result,
            &options.to_string(),
        )
        .await;
    Ok(axum::Json(result?).into_response())
}

/// Stops a tunnel
///
/// Ends its client and every process the client started, and stores it as meant to be down.
/// Stopping a stopped tunnel is no error.
#[utoipa::path(
    post,
    path = "/api/v1/tunnels/{provider}/stop",
    tag = "tunnels",
    operation_id = "tunnels_stop",
    params(("provider" = String, Path, description = "ssh, localtunnel, cloudflared or ngrok.")),
    responses(
        (status = 200, description = "The tunnel, stopped.", body = crate::ops::tunnels::TunnelView),
        (status = 403, description = "Tunnels are off in the config (`forbidden`).", body = crate::api::openapi::ErrorResponse),
        (status = 404, description = "No such provider (`not_found`).", body = crate::api::openapi::ErrorResponse),
    )
)]
pub async fn stop(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Requester { caller, .. }: Requester,
) -> Result<Response, ApiError> {
    enabled(&state)?;
    let p = provider(&name)?;
    let result = state.tunnels.stop(p, &caller.actor).await;
    state
        .audit_change(&caller, "tunnel.stop", p.as_str(), &result, "")
        .await;
    Ok(axum::Json(result?).into_response())
}

/// A start's options: the JSON object of the body, `{}` for an empty one.
fn options(headers: &HeaderMap, body: &[u8]) -> Result<serde_json::Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(serde_json::json!({}));
    }
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    if !super::extract::is_json(ct) {
        return Err(ApiError::unsupported_media_type(format!(
            "expected Content-Type: application/json, got {}",
            ct.unwrap_or("none")
        )));
    }
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::invalid_json(format!(
            "invalid JSON body at line {}, column {}: {e}",
            e.line(),
            e.column()
        ))
    })?;
    if !v.is_object() {
        return Err(ApiError::bad_request(
            "the options must be a JSON object (e.g. {} or {\"remote_port\": 8022})",
        ));
    }
    Ok(v)
}
