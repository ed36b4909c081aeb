//! The route table: every route with its method, path, who may call it and its rate-limit
//! class. It both builds the router and drives the test that walks every route, so a route
//! cannot exist without a declared access rule.

use axum::http::Method;
use axum::routing::{MethodRouter, delete, get, post};

use super::access::Access;
use super::ratelimit::Class;
use super::{audit, exec, health, session, tokens};
use crate::auth::Scope;
use crate::daemon::AppState;

/// Body content types a JSON route accepts.
pub const JSON: &[&str] = &["application/json"];

pub struct Route {
    pub method: Method,
    pub path: &'static str,
    pub access: Access,
    pub class: Class,
    pub accepts: &'static [&'static str],
    /// The route bounds its own duration (jobs, streams) instead of `server.request-timeout`.
    pub own_timeout: bool,
    pub handler: MethodRouter<AppState>,
}

/// A route that bounds its own duration.
fn long(mut route: Route) -> Route {
    route.own_timeout = true;
    route
}

fn r(
    method: Method,
    path: &'static str,
    access: Access,
    class: Class,
    handler: MethodRouter<AppState>,
) -> Route {
    Route {
        method,
        path,
        access,
        class,
        accepts: JSON,
        own_timeout: false,
        handler,
    }
}

/// Every route of the API.
pub fn table() -> Vec<Route> {
    use Access::{Authenticated, Public};
    let admin = Access::Scope(Scope::Admin);
    vec![
        // Probes: public, unlimited, no secrets.
        r(
            Method::GET,
            "/health",
            Public,
            Class::None,
            get(health::live),
        ),
        r(
            Method::GET,
            "/ready",
            Public,
            Class::None,
            get(health::ready),
        ),
        r(
            Method::GET,
            "/api/v1/health",
            Public,
            Class::None,
            get(health::report),
        ),
        // Browser sessions. Login checks its own credential (and counts failures).
        r(
            Method::POST,
            "/api/v1/session",
            Public,
            Class::Write,
            post(session::create),
        ),
        r(
            Method::GET,
            "/api/v1/session",
            Authenticated,
            Class::Read,
            get(session::get),
        ),
        r(
            Method::DELETE,
            "/api/v1/session",
            Authenticated,
            Class::Write,
            delete(session::delete),
        ),
        // Administration.
        r(
            Method::GET,
            "/api/v1/tokens",
            admin,
            Class::Read,
            get(tokens::list),
        ),
        r(
            Method::POST,
            "/api/v1/tokens",
            admin,
            Class::Write,
            post(tokens::create),
        ),
        r(
            Method::DELETE,
            "/api/v1/tokens/{id}",
            admin,
            Class::Write,
            delete(tokens::revoke),
        ),
        r(
            Method::GET,
            "/api/v1/audit",
            admin,
            Class::Read,
            get(audit::list),
        ),
        // Commands in the sandbox; a job bounds itself (timeout_ms within exec.max-timeout).
        long(r(
            Method::POST,
            "/api/v1/exec",
            Access::Scope(Scope::Exec),
            Class::Exec,
            post(exec::run),
        )),
        r(
            Method::GET,
            "/api/v1/executions",
            Access::Scope(Scope::Read),
            Class::Read,
            get(exec::list),
        ),
    ]
}
