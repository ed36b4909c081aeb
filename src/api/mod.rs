//! The HTTP API: the router, the middleware every request passes through, and one file per
//! area. Handlers are thin: extract, call the domain, map the result. `error.rs` is the only
//! place that turns errors into statuses.

pub mod access;
mod audit;
mod backups;
mod data;
pub mod error;
mod exec;
pub mod extract;
mod files;
mod health;
mod metrics;
mod programs;
pub mod ratelimit;
pub mod request_id;
pub mod routes;
mod session;
#[cfg(test)]
mod tests;
mod tokens;

use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;

use crate::daemon::AppState;
use crate::server::ConnInfo;
use error::{ApiError, ErrorBody};

/// Builds the whole HTTP application for `state` from the route table: each route gets the
/// guard of its declared access rule and rate-limit class.
pub fn router(state: AppState) -> Router {
    let mut by_path: std::collections::BTreeMap<&'static str, MethodRouter<AppState>> =
        Default::default();
    for route in routes::table() {
        let guard = access::Guard {
            state: state.clone(),
            access: route.access,
            class: route.class,
            route: route.path,
            accepts: route.accepts,
            own_timeout: route.own_timeout,
            body_limit: route.body_limit,
        };
        let guarded = route
            .handler
            .layer(middleware::from_fn_with_state(guard, access::guard));
        let merged = match by_path.remove(route.path) {
            Some(existing) => existing.merge(guarded),
            None => guarded,
        };
        by_path.insert(route.path, merged);
    }
    let mut app = Router::new();
    for (path, handler) in by_path {
        app = app.route(path, handler);
    }
    let cors = cors_layer(&state.live.get().auth.cors_origins);
    let app = app
        .fallback(not_found)
        // Each route's guard enforces its (reloadable) body limit.
        .layer(DefaultBodyLimit::disable())
        .layer(middleware::from_fn_with_state(state.clone(), context))
        .with_state(state);
    match cors {
        Some(c) => app.layer(c),
        None => app,
    }
}

/// CORS only for the origins `auth.cors-origins` lists; none at all by default.
fn cors_layer(origins: &[String]) -> Option<tower_http::cors::CorsLayer> {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let list: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o.trim_end_matches('/')).ok())
        .collect();
    if list.is_empty() {
        return None;
    }
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(list))
            .allow_methods([
                Method::GET,
                Method::HEAD,
                Method::POST,
                Method::PUT,
                Method::DELETE,
            ])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::IF_MATCH,
                header::IF_NONE_MATCH,
                HeaderName::from_static(access::CSRF_HEADER),
                HeaderName::from_static(request_id::HEADER),
            ])
            .expose_headers([HeaderName::from_static(request_id::HEADER), header::ETAG])
            .max_age(std::time::Duration::from_secs(600)),
    )
}

/// `?limit=`: default 100, at most 1000.
pub fn page_limit(limit: Option<usize>) -> Result<usize, ApiError> {
    match limit {
        None => Ok(100),
        Some(n) if (1..=1000).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::bad_request(format!(
            "limit must be between 1 and 1000, got {n}"
        ))),
    }
}

async fn not_found(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no route for {} {}", req.method(), req.uri().path()),
    )
}

/// Outermost layer: request id (accepted or made, echoed), the client (peer or trusted
/// proxy's word), the Host allow-list, security headers, error bodies normalized to our
/// shape, one log event per request with its structured fields.
async fn context(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let start = Instant::now();
    let id = request_id::from_headers(req.headers());
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let cfg = state.live.get();
    let conn = req.extensions().get::<ConnInfo>().cloned();
    let client = access::client(&cfg, conn.as_ref(), req.headers());
    let remote = client.addr.clone();
    let host = req
        .uri()
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        });
    // The admin socket is reached only by local processes with the right uid; any name goes.
    let host_ok = conn.as_ref().is_some_and(|c| c.admin)
        || host
            .as_deref()
            .is_some_and(|h| access::host_allowed(&cfg, conn.as_ref(), h));
    req.extensions_mut().insert(client);
    let in_flight = state.metrics.http_in_flight();
    let m = method.clone();
    let mut resp = request_id::scope(id.clone(), async move {
        let resp = if host_ok {
            next.run(req).await
        } else {
            ApiError::bad_request(format!(
                "Host {:?} is not a name of this server; add it to server.server-names",
                host.unwrap_or_default()
            ))
            .into_response()
        };
        normalize_error(resp, &m, &path)
    })
    .await;
    security_headers(resp.headers_mut());
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(request_id::HEADER, v);
    }
    let status = resp.status().as_u16();
    let elapsed = start.elapsed();
    drop(in_flight);
    // The route template (or "unmatched"), never the raw path: one series per route.
    state
        .metrics
        .http_observe(method.as_str(), &route, status, elapsed);
    let latency_ms = (elapsed.as_secs_f64() * 1_000_000.0).round() / 1000.0;
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

/// Headers every response carries; a page that needs a looser policy sets its own first.
fn security_headers(h: &mut axum::http::HeaderMap) {
    let defaults = [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; frame-ancestors 'none'",
        ),
    ];
    for (name, value) in defaults {
        if !h.contains_key(&name) {
            h.insert(name, HeaderValue::from_static(value));
        }
    }
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
