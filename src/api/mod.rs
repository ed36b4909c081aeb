//! The HTTP API: the router, the middleware every request passes through, and one file per
//! area. Handlers are thin: extract, call the domain, map the result. `error.rs` is the only
//! place that turns errors into statuses.

pub mod error;
pub mod extract;
mod health;
pub mod request_id;

use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::daemon::AppState;
use crate::server::ConnInfo;
use error::{ApiError, ErrorBody};

/// Builds the whole HTTP application for `state`.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health::live))
        .route("/ready", get(health::ready))
        .route("/api/v1/health", get(health::report))
        .fallback(not_found)
        // Our own `limits` layer enforces the (reloadable) body limit.
        .layer(DefaultBodyLimit::disable())
        .layer(middleware::from_fn_with_state(state.clone(), limits))
        .layer(middleware::from_fn(context))
        .with_state(state)
}

async fn not_found(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no route for {} {}", req.method(), req.uri().path()),
    )
}

/// Outermost layer: request id (accepted or made, echoed), error bodies normalized to our
/// shape, one log event per request with its structured fields.
async fn context(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let id = request_id::from_headers(req.headers());
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let remote = req
        .extensions()
        .get::<ConnInfo>()
        .map(|c| c.remote.to_string())
        .unwrap_or_else(|| "-".to_owned());
    let m = method.clone();
    let mut resp = request_id::scope(id.clone(), async move {
        let resp = next.run(req).await;
        normalize_error(resp, &m, &path)
    })
    .await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(request_id::HEADER, v);
    }
    let status = resp.status().as_u16();
    let latency_ms = (start.elapsed().as_secs_f64() * 1_000_000.0).round() / 1000.0;
    tracing::info!(
        request_id = %id,
        method = %method,
        route = %route,
        status,
        latency_ms,
        remote = %remote,
        "request"
    );
    resp
}

/// Gives error responses made outside our handlers (axum's 405, a body-limit 413…) our body,
/// keeping their headers (Allow, Retry-After).
fn normalize_error(resp: Response, method: &axum::http::Method, path: &str) -> Response {
    let status = resp.status();
    if status.as_u16() < 400 || resp.extensions().get::<ErrorBody>().is_some() {
        return resp;
    }
    let message = match status {
        StatusCode::METHOD_NOT_ALLOWED => {
            // axum adds the Allow header outside this layer; clients read it there.
            format!(
                "method {method} is not allowed on {path}; the Allow header lists the allowed methods"
            )
        }
        StatusCode::PAYLOAD_TOO_LARGE => {
            "request body is larger than server.max-body-size".to_owned()
        }
        s => format!("{} {}", s.as_u16(), s.canonical_reason().unwrap_or("error")),
    };
    let (parts, _) = resp.into_parts();
    let mut fresh = ApiError::new(status, error::code_for_status(status), message).into_response();
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            fresh.headers_mut().insert(name.clone(), value.clone());
        }
    }
    fresh
}

/// Request body size limit and request timeout, both read from the live config so a reload
/// changes them.
async fn limits(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let cfg = state.live.get();
    let max = cfg.server.max_body_size;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(len) = declared
        && len > max.bytes()
    {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request body of {len} bytes is larger than server.max-body-size ({max})"),
        ));
    }
    let limit = usize::try_from(max.bytes()).unwrap_or(usize::MAX);
    let req = req.map(|b| Body::new(http_body_util::Limited::new(b, limit)));
    let timeout = cfg.server.request_timeout;
    tokio::time::timeout(timeout.get(), next.run(req))
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                format!("the request did not finish within server.request-timeout ({timeout})"),
            )
        })
}
