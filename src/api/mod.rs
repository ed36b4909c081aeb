//! The HTTP API: the router, the middleware every request passes through, and one file per
//! area. Handlers are thin: extract, call the domain, map the result. `error.rs` is the only
//! place that turns errors into statuses.

pub mod access;
mod audit;
mod backups;
mod compat;
mod data;
pub mod error;
mod exec;
pub mod extract;
mod files;
mod health;
mod metrics;
pub mod openapi;
mod programs;
pub mod ratelimit;
pub mod request_id;
pub mod routes;
mod runtimes;
pub mod server;
mod session;
pub mod state;
mod system;
mod terminals;
#[cfg(test)]
mod tests;
mod tokens;
mod tunnels;
pub mod ui;
mod ws;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use tower::Layer;

use crate::api::server::ConnInfo;
use crate::api::state::AppState;
use error::{ApiError, ErrorBody};

/// The whole HTTP API as one service: [`Api`], behind CORS when `auth.cors-origins` lists
/// origins.
pub type App = tower::util::Either<tower_http::cors::Cors<Api>, Api>;

/// Builds the whole HTTP application for `state` from the route table.
pub fn router(state: AppState) -> App {
    let api = Api::new(state);
    let cors = cors_layer(&api.0.state.live.get().auth.cors_origins);
    match cors {
        Some(c) => tower::util::Either::Left(tower::Layer::layer(&c, api)),
        None => tower::util::Either::Right(api),
    }
}

/// The API: every request passes `context` (request id, client, Host, logging, metrics),
/// then the guard its route declares in the table, then axum's router to the handler.
///
/// The guards sit in front of the router instead of being layered on each route: a request
/// reaches the router only through a route-table entry (path and method) and that entry's
/// guard, so a handler cannot be reached unguarded; a path no route has is answered 404, a
/// method its path does not have 405, both here. (As per-route axum middleware, the two
/// layers and their boxed services allocated on every request; this way it is one boxed
/// future, and the router's own.)
#[derive(Clone)]
pub struct Api(Arc<ApiInner>);

struct ApiInner {
    state: AppState,
    /// The route table by path (the same matcher and path syntax as axum's router).
    guards: matchit::Router<PathGuards>,
    /// The handlers; the extension from `DefaultBodyLimit::disable` lets axum's body
    /// extractors leave the limit to each route's guard.
    router: Handlers,
}

/// The router behind `DefaultBodyLimit::disable()` (its service type is not nameable).
type Handlers = <DefaultBodyLimit as Layer<Router>>::Service;

/// The routes of one path: the guard of each method.
struct PathGuards {
    path: &'static str,
    methods: Vec<(Method, access::Guard)>,
}

impl PathGuards {
    /// The guard for `method`; HEAD takes GET's (axum answers HEAD with the GET handler).
    fn get(&self, method: &Method) -> Option<&access::Guard> {
        let find = |m: &Method| self.methods.iter().find(|(x, _)| x == m).map(|(_, g)| g);
        find(method).or_else(|| {
            (*method == Method::HEAD)
                .then(|| find(&Method::GET))
                .flatten()
        })
    }

    /// The Allow header: every method of the path (HEAD with GET).
    fn allow(&self) -> String {
        let mut names: Vec<&str> = self.methods.iter().map(|(m, _)| m.as_str()).collect();
        if names.contains(&"GET") && !names.contains(&"HEAD") {
            names.push("HEAD");
        }
        names.join(",")
    }
}

impl Api {
    fn new(state: AppState) -> Api {
        let mut by_path: BTreeMap<&'static str, (MethodRouter<AppState>, PathGuards)> =
            BTreeMap::new();
        let seed_routes = state.live.get().compat.seed_routes;
        for route in routes::table() {
            if route.alias_of.is_some() && !seed_routes {
                continue;
            }
            let guard = access::Guard {
                access: route.access,
                class: route.class,
                route: route.path,
                accepts: route.accepts,
                own_timeout: route.own_timeout,
                body_limit: route.body_limit,
            };
            match by_path.remove(route.path) {
                Some((handlers, mut guards)) => {
                    guards.methods.push((route.method, guard));
                    by_path.insert(route.path, (handlers.merge(route.handler), guards));
                }
                None => {
                    let guards = PathGuards {
                        path: route.path,
                        methods: vec![(route.method, guard)],
                    };
                    by_path.insert(route.path, (route.handler, guards));
                }
            }
        }
        let mut app = Router::new();
        let mut guards = matchit::Router::new();
        for (path, (handlers, path_guards)) in by_path {
            app = app.route(path, handlers);
            // The table's paths are static and distinct (the router above accepted them, and
            // panics on a conflict). Were one refused here, its path would answer 404: closed,
            // and the route-walk test fails.
            if let Err(e) = guards.insert(path, path_guards) {
                tracing::error!(path, error = %e, "route table: path not served");
            }
        }
        let router = DefaultBodyLimit::disable().layer(app.with_state(state.clone()));
        Api(Arc::new(ApiInner {
            state,
            guards,
            router,
        }))
    }
}

impl tower::Service<Request> for Api {
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Response, Self::Error>> + Send + 'static>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        Box::pin(self.clone().serve(req))
    }
}

impl Api {
    /// Serves one request. Unlike `Service::call` its future is not boxed: hyper keeps the
    /// future of a connection's request in one allocation it reuses (for the whole API that
    /// state is large, so a boxed one would be a large-chunk malloc and free per request).
    pub async fn serve(self, req: Request) -> Result<Response, std::convert::Infallible> {
        Ok(context(self.0, req).await)
    }
}

/// Serves one request with `app` the way `Service::call` does, without boxing the future
/// when there is no CORS layer (see [`Api::serve`]).
pub fn serve(
    app: &App,
    req: Request,
) -> impl std::future::Future<Output = Result<Response, std::convert::Infallible>> + Send + use<> {
    use futures_util::future::Either;
    match app {
        tower::util::Either::Right(api) => Either::Left(api.clone().serve(req)),
        tower::util::Either::Left(cors) => {
            Either::Right(tower::Service::call(&mut cors.clone(), req))
        }
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

/// The query of a list that has nothing but its page: `?limit=` and `?cursor=`.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// How many items (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
    /// Where the previous page ended (its `next_cursor`).
    pub cursor: Option<String>,
}

/// `?limit=`: the page size rules of [`crate::util::paging::limit`], refused with 400.
pub fn page_limit(limit: Option<usize>) -> Result<usize, ApiError> {
    crate::util::paging::limit(limit).map_err(|e| ApiError::bad_request(e.to_string()))
}

fn not_found(method: &Method, path: &str) -> ApiError {
    ApiError::not_found(format!("no route for {method} {path}"))
}

/// Outermost: request id (accepted or made, echoed), the client (peer or trusted proxy's
/// word), the Host allow-list, then the route's guard and handler, security headers, error
/// bodies normalized to our shape, one log event per request with its structured fields.
async fn context(api: Arc<ApiInner>, mut req: Request) -> Response {
    let start = Instant::now();
    let state = &api.state;
    let id = request_id::from_headers(req.headers());
    let method = req.method().clone();
    let uri = req.uri().clone();
    // The route template (or "unmatched"), never the raw path: one series per route.
    let matched = api.guards.at(uri.path()).ok().map(|m| m.value);
    let route = matched.map_or("unmatched", |g| g.path);
    let cfg = state.live.get();
    let conn = req.extensions().get::<ConnInfo>();
    let client = access::client(&cfg, conn, req.headers());
    // The admin socket is reached only by local processes with the right uid; any name goes.
    let refused = if conn.is_some_and(|c| c.admin) {
        None
    } else {
        let host = req.uri().authority().map(|a| a.as_str()).or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
        });
        match host {
            // A tunnel's public host passes while that tunnel is up (looked up last: no
            // cost for the names above).
            Some(h)
                if access::host_allowed(&cfg, conn, h)
                    || state.tunnels.public_host(access::host_name(h)) =>
            {
                None
            }
            h => Some(ApiError::bad_request(format!(
                "Host {:?} is not a name of this server; add it to server.server-names",
                h.unwrap_or_default()
            ))),
        }
    };
    drop(cfg);
    // For the log line (made only when it is written).
    let remote = tracing::enabled!(tracing::Level::INFO).then(|| client.addr.clone());
    req.extensions_mut().insert(client);
    let in_flight = state.metrics.http_in_flight();
    let id_header = HeaderValue::from_str(&id).ok();
    let mut resp = request_id::scope(id, async {
        let resp = match refused {
            Some(e) => e.into_response(),
            None => dispatch(&api, matched, req).await,
        };
        normalize_error(resp, &method, uri.path())
    })
    .await;
    security_headers(resp.headers_mut());
    if let Some(v) = id_header {
        resp.headers_mut()
            .insert(HeaderName::from_static(request_id::HEADER), v);
    }
    // Read back from the response (a clone of the header value would be an allocation).
    let id = resp
        .headers()
        .get(request_id::HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    let status = resp.status().as_u16();
    let elapsed = start.elapsed();
    drop(in_flight);
    state
        .metrics
        .http_observe(method.as_str(), route, status, elapsed);
    if resp.extensions().get::<access::Summarized>().is_some() {
        return resp;
    }
    let latency_ms = (elapsed.as_secs_f64() * 1_000_000.0).round() / 1000.0;
    tracing::info!(
        request_id = %id,
        method = %method,
        route = %route,
        status,
        latency_ms,
        remote = remote.as_deref().unwrap_or("-"),
        "request"
    );
    resp
}

/// A request past `context`: to its route's guard and on to the handler; 404 for a path no
/// route has, 405 for a method its path does not have (with Allow).
async fn dispatch(api: &ApiInner, matched: Option<&PathGuards>, req: Request) -> Response {
    let Some(path) = matched else {
        return not_found(req.method(), req.uri().path()).into_response();
    };
    let Some(guard) = path.get(req.method()) else {
        let mut resp = ApiError::method_not_allowed(format!(
            "method {} is not allowed on {}; the Allow header lists the allowed methods",
            req.method(),
            req.uri().path()
        ))
        .into_response();
        if let Ok(v) = HeaderValue::from_str(&path.allow()) {
            resp.headers_mut().insert(header::ALLOW, v);
        }
        return resp;
    };
    access::guard(&api.state, guard, req, api.router.clone()).await
}

/// Headers every response carries; a page that needs a looser policy sets its own first.
fn security_headers(h: &mut axum::http::HeaderMap) {
    // Room for these and the request id in one step rather than growing on the way.
    let _ = h.try_reserve(5);
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
    let mut fresh = ApiError::for_status(status, message).into_response();
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            fresh.headers_mut().insert(name.clone(), value.clone());
        }
    }
    fresh
}
