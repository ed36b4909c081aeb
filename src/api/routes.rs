//! The route table: every route with its method, path, who may call it and its rate-limit
//! class. It both builds the router and drives the test that walks every route, so a route
//! cannot exist without a declared access rule.

use axum::http::Method;
use axum::routing::{MethodRouter, delete, get, post, put};

use super::access::Access;
use super::ratelimit::Class;
use super::{
    audit, backups, compat, data, exec, files, health, metrics, openapi, programs, runtimes,
    session, system, terminals, tokens, tunnels, ui, ws,
};
use crate::api::state::AppState;
use crate::config::{ByteSize, Config};
use crate::store::auth::Scope;

/// Body content types a JSON route accepts.
pub const JSON: &[&str] = &["application/json"];
/// Any body content type, or none (raw uploads: the bytes are the file).
pub const ANY: &[&str] = &["*/*"];
/// HTML forms with files.
pub const MULTIPART: &[&str] = &["multipart/form-data"];

/// Body content types the program upload accepts: a ZIP project or a single file.
pub const PROGRAM_UPLOAD: &[&str] = &[
    "application/zip",
    "application/x-zip-compressed",
    "application/octet-stream",
    "text/plain",
    "text/x-python",
    "text/x-shellscript",
    "application/x-sh",
    "application/javascript",
    "text/javascript",
    "multipart/form-data",
];

/// How large a request body a route takes (enforced by the guard, from the live config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLimit {
    /// `server.max-body-size`.
    Server,
    /// A data value and room for its key, its op and batch framing: `kv.max-value-size` +
    /// 64 KiB, never less than `server.max-body-size`.
    KvValue,
    /// No limit from the guard: the route enforces its own (the file store's quotas, checked
    /// while the body streams).
    Unlimited,
    /// A program upload: `programs.max-upload-size`.
    ProgramUpload,
    /// A terminal's input: `terminals.max-message-size`.
    TerminalInput,
}

/// Room for keys and JSON framing around the largest value on the data routes.
pub const KV_BODY_HEADROOM: u64 = 64 << 10;

impl BodyLimit {
    /// The limit in bytes and how to name it in a 413 message.
    pub fn resolve(self, cfg: &Config) -> (u64, LimitName) {
        let server = cfg.server.max_body_size;
        match self {
            BodyLimit::Server => (server.bytes(), LimitName::Server(server)),
            BodyLimit::Unlimited => (u64::MAX, LimitName::RouteQuota),
            BodyLimit::KvValue => {
                let value = cfg.kv.max_value_size;
                let kv = value.bytes().saturating_add(KV_BODY_HEADROOM);
                if kv > server.bytes() {
                    (kv, LimitName::KvValue(value))
                } else {
                    (server.bytes(), LimitName::Server(server))
                }
            }
            BodyLimit::ProgramUpload => {
                let max = cfg.programs.max_upload_size;
                (max.bytes(), LimitName::ProgramUpload(max))
            }
            BodyLimit::TerminalInput => {
                let max = cfg.terminals.max_message_size;
                (max.bytes(), LimitName::TerminalInput(max))
            }
        }
    }
}

/// The setting a body limit comes from, as a 413 names it (written out only when one is
/// sent, not for every request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitName {
    Server(ByteSize),
    RouteQuota,
    KvValue(ByteSize),
    ProgramUpload(ByteSize),
    TerminalInput(ByteSize),
}

impl std::fmt::Display for LimitName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LimitName::Server(s) => write!(f, "server.max-body-size ({s})"),
            LimitName::RouteQuota => f.write_str("the route's own quota"),
            LimitName::KvValue(v) => write!(f, "kv.max-value-size ({v}) + 64KiB"),
            LimitName::ProgramUpload(m) => write!(f, "programs.max-upload-size ({m})"),
            LimitName::TerminalInput(m) => write!(f, "terminals.max-message-size ({m})"),
        }
    }
}

pub struct Route {
    pub method: Method,
    pub path: &'static str,
    pub access: Access,
    pub class: Class,
    pub accepts: &'static [&'static str],
    /// The route bounds its own duration (jobs, streams) instead of `server.request-timeout`.
    pub own_timeout: bool,
    pub body_limit: BodyLimit,
    /// A route of the web UI (its pages and assets), not of the API: left out of the OpenAPI
    /// document.
    pub ui: bool,
    /// A seed route (`api::compat`): the v1 route (method, path) it stands for, whose guard
    /// fields it copies. Routed only while `compat.seed-routes` is on.
    pub alias_of: Option<(Method, &'static str)>,
    pub handler: MethodRouter<AppState>,
}

/// A route of the web UI: public (the app is; the API it calls is not), GET (and HEAD), no
/// rate limit (static bytes from memory, like the probes).
fn ui_route(path: &'static str, handler: MethodRouter<AppState>) -> Route {
    Route {
        ui: true,
        ..r(Method::GET, path, Access::Public, Class::None, handler)
    }
}

/// A route that bounds its own duration.
fn long(mut route: Route) -> Route {
    route.own_timeout = true;
    route
}

/// An upload route: any duration (bounded by `files.upload-idle-timeout` between chunks), no
/// body limit from the middleware (the store's quotas apply while streaming), body types
/// `accepts`.
fn upload(mut route: Route, accepts: &'static [&'static str]) -> Route {
    route.own_timeout = true;
    route.body_limit = BodyLimit::Unlimited;
    route.accepts = accepts;
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
        body_limit: BodyLimit::Server,
        ui: false,
        alias_of: None,
        handler,
    }
}

/// A data route: bodies up to a full value (see [`BodyLimit::KvValue`]).
fn kv(
    method: Method,
    path: &'static str,
    access: Access,
    class: Class,
    handler: MethodRouter<AppState>,
) -> Route {
    Route {
        body_limit: BodyLimit::KvValue,
        ..r(method, path, access, class, handler)
    }
}

/// Every route of the API.
pub fn table() -> Vec<Route> {
    use Access::{Authenticated, Public};
    let admin = Access::Scope(Scope::Admin);
    let read = Access::Scope(Scope::Read);
    let write = Access::Scope(Scope::Write);
    let exec_scope = Access::Scope(Scope::Exec);
    let mut table = vec![
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
        // The API's contract (OpenAPI 3.1): public, built once.
        r(
            Method::GET,
            "/api/v1/openapi.json",
            Public,
            Class::None,
            get(openapi::serve),
        ),
        // Monitoring. /metrics: the `metrics` scope, or anyone on loopback when
        // metrics.public-on-loopback is set.
        r(
            Method::GET,
            "/metrics",
            Access::Metrics,
            Class::None,
            get(metrics::scrape),
        ),
        r(
            Method::GET,
            "/api/v1/dashboard",
            read,
            Class::Read,
            get(metrics::dashboard),
        ),
        r(
            Method::GET,
            "/api/v1/metrics/history",
            read,
            Class::Read,
            get(metrics::history),
        ),
        r(
            Method::GET,
            "/api/v1/alerts",
            read,
            Class::Read,
            get(metrics::alerts),
        ),
        // The host's facts (read) and its top processes (admin: command lines can hold
        // secrets). A first request for processes waits for its CPU sample (500 ms).
        r(
            Method::GET,
            "/api/v1/system",
            read,
            Class::Read,
            get(system::facts),
        ),
        r(
            Method::GET,
            "/api/v1/processes",
            admin,
            Class::Read,
            get(system::processes),
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
        // One-time login links (`localhostd login-url`): the admin socket only.
        r(
            Method::POST,
            "/api/v1/session/links",
            Access::LocalAdmin,
            Class::Write,
            post(session::create_link),
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
        // Backups. Making and verifying one reads every byte of state: no request timeout.
        // `backups:prune` is a literal segment (like `data:batch`).
        long(r(
            Method::POST,
            "/api/v1/backups",
            admin,
            Class::Write,
            post(backups::create),
        )),
        r(
            Method::GET,
            "/api/v1/backups",
            admin,
            Class::Read,
            get(backups::list),
        ),
        r(
            Method::POST,
            "/api/v1/backups:prune",
            admin,
            Class::Write,
            post(backups::prune),
        ),
        long(r(
            Method::POST,
            "/api/v1/backups/{id}/verify",
            admin,
            Class::Write,
            post(backups::verify),
        )),
        r(
            Method::POST,
            "/api/v1/backups/{id}/restore",
            admin,
            Class::Write,
            post(backups::restore),
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
        // One execution, its output and its cancel: for the token that started it (a job
        // needs `exec`) and admin; others get 404. The output stream bounds itself (the job's
        // end).
        r(
            Method::GET,
            "/api/v1/executions/{id}",
            exec_scope,
            Class::Read,
            get(exec::get),
        ),
        long(r(
            Method::GET,
            "/api/v1/executions/{id}/output",
            exec_scope,
            Class::Read,
            get(exec::output),
        )),
        r(
            Method::POST,
            "/api/v1/executions/{id}/cancel",
            exec_scope,
            Class::Write,
            post(exec::cancel),
        ),
        // The program store. Uploads stream to disk up to programs.max-upload-size; runs
        // bound themselves like /api/v1/exec.
        Route {
            accepts: PROGRAM_UPLOAD,
            body_limit: BodyLimit::ProgramUpload,
            ..r(
                Method::POST,
                "/api/v1/programs",
                write,
                Class::Upload,
                post(programs::upload),
            )
        },
        r(
            Method::GET,
            "/api/v1/programs",
            read,
            Class::Read,
            get(programs::list),
        ),
        r(
            Method::GET,
            "/api/v1/programs/{id}",
            read,
            Class::Read,
            get(programs::get),
        ),
        r(
            Method::DELETE,
            "/api/v1/programs/{id}",
            write,
            Class::Write,
            delete(programs::delete),
        ),
        r(
            Method::PUT,
            "/api/v1/programs/{id}/main",
            write,
            Class::Write,
            put(programs::set_main),
        ),
        r(
            Method::GET,
            "/api/v1/programs/{id}/archive",
            read,
            Class::Read,
            get(programs::archive),
        ),
        long(r(
            Method::POST,
            "/api/v1/programs/{id}/runs",
            Access::Scope(Scope::Exec),
            Class::Exec,
            post(programs::run),
        )),
        r(
            Method::GET,
            "/api/v1/programs/{id}/runs",
            read,
            Class::Read,
            get(programs::runs),
        ),
        // Public tunnels (admin): every provider's state, start, stop. Off in the config,
        // each answers 403 saying how to turn tunnels on.
        r(
            Method::GET,
            "/api/v1/tunnels",
            admin,
            Class::Read,
            get(tunnels::list),
        ),
        r(
            Method::POST,
            "/api/v1/tunnels/{provider}/start",
            admin,
            Class::Write,
            post(tunnels::start),
        ),
        r(
            Method::POST,
            "/api/v1/tunnels/{provider}/stop",
            admin,
            Class::Write,
            post(tunnels::stop),
        ),
        // What jobs can run here (the interpreters of programs.runtimes).
        r(
            Method::GET,
            "/api/v1/runtimes",
            read,
            Class::Read,
            get(runtimes::list),
        ),
        // Terminal sessions (jobs on a pseudo-terminal); every route needs `exec`, and a
        // caller sees only its own sessions (admin: all). Creating one is a job start (the exec
        // bucket); typing, resizing and signalling are small writes; the attach (WebSocket) and
        // the output stream bound themselves (the session's end, its lifetime; a long poll its
        // wait_ms).
        r(
            Method::POST,
            "/api/v1/terminals",
            exec_scope,
            Class::Exec,
            post(terminals::create),
        ),
        r(
            Method::POST,
            "/api/v1/programs/{id}/terminals",
            exec_scope,
            Class::Exec,
            post(terminals::create_for_program),
        ),
        r(
            Method::GET,
            "/api/v1/terminals",
            exec_scope,
            Class::Read,
            get(terminals::list),
        ),
        r(
            Method::GET,
            "/api/v1/terminals/{id}",
            exec_scope,
            Class::Read,
            get(terminals::get),
        ),
        // DELETE waits until the job is gone: bounded by the sandbox's end grace.
        long(r(
            Method::DELETE,
            "/api/v1/terminals/{id}",
            exec_scope,
            Class::Write,
            delete(terminals::delete),
        )),
        long(r(
            Method::GET,
            "/api/v1/terminals/{id}/attach",
            exec_scope,
            Class::Read,
            get(ws::attach),
        )),
        Route {
            accepts: ANY,
            body_limit: BodyLimit::TerminalInput,
            ..r(
                Method::POST,
                "/api/v1/terminals/{id}/input",
                exec_scope,
                Class::Write,
                post(terminals::input),
            )
        },
        long(r(
            Method::GET,
            "/api/v1/terminals/{id}/output",
            exec_scope,
            Class::Read,
            get(terminals::output),
        )),
        r(
            Method::POST,
            "/api/v1/terminals/{id}/resize",
            exec_scope,
            Class::Write,
            post(terminals::resize),
        ),
        r(
            Method::POST,
            "/api/v1/terminals/{id}/signal",
            exec_scope,
            Class::Write,
            post(terminals::signal),
        ),
        r(
            Method::GET,
            "/api/v1/terminals/{id}/recording",
            exec_scope,
            Class::Read,
            get(terminals::recording),
        ),
        // The key-value store. `{*key}` takes the rest of the path, `/` included; axum
        // percent-decodes it, so `a%2Fb` and `a/b` are the same key. HEAD is answered by the
        // GET handler (axum drops the body), with the same ETag. The batch path is the
        // static segment `data:batch`: axum 0.8 reads `:` literally (parameters are `{…}`),
        // so it routes apart from `/api/v1/data` and `/api/v1/data/{*key}`.
        kv(
            Method::GET,
            "/api/v1/data",
            read,
            Class::Read,
            get(data::list),
        ),
        kv(
            Method::POST,
            "/api/v1/data",
            write,
            Class::Write,
            post(data::post),
        ),
        kv(
            Method::POST,
            "/api/v1/data:batch",
            write,
            Class::Write,
            post(data::batch),
        ),
        kv(
            Method::GET,
            "/api/v1/data/{*key}",
            read,
            Class::Read,
            get(data::get),
        ),
        kv(
            Method::PUT,
            "/api/v1/data/{*key}",
            write,
            Class::Write,
            put(data::put),
        ),
        kv(
            Method::DELETE,
            "/api/v1/data/{*key}",
            write,
            Class::Write,
            delete(data::delete),
        ),
        // The file store. `files:usage` is a literal segment beside `files` and `files/{*path}`;
        // the router matches it exactly (a file named `usage` stays reachable at
        // /api/v1/files/usage). GET routes answer HEAD too (axum), with the same guard.
        r(
            Method::GET,
            "/api/v1/files",
            Access::Scope(Scope::Read),
            Class::Read,
            get(files::list),
        ),
        upload(
            r(
                Method::POST,
                "/api/v1/files",
                Access::Scope(Scope::Write),
                Class::Upload,
                post(files::upload_form),
            ),
            MULTIPART,
        ),
        r(
            Method::GET,
            "/api/v1/files:usage",
            Access::Scope(Scope::Read),
            Class::Read,
            get(files::usage),
        ),
        r(
            Method::GET,
            "/api/v1/files/{*path}",
            Access::Scope(Scope::Read),
            Class::Read,
            get(files::download),
        ),
        upload(
            r(
                Method::PUT,
                "/api/v1/files/{*path}",
                Access::Scope(Scope::Write),
                Class::Upload,
                put(files::upload),
            ),
            ANY,
        ),
        r(
            Method::DELETE,
            "/api/v1/files/{*path}",
            Access::Scope(Scope::Write),
            Class::Write,
            delete(files::delete),
        ),
    ];
    // The seed's routes, each with the guard of the v1 route it stands for (`api::compat`).
    let aliases = compat::aliases(&table);
    table.extend(aliases);
    // The web UI: its pages (each the entry page; the app routes on the client) and assets.
    // The seed's dashboard page is the UI's home.
    table.extend(ui::PAGES.iter().map(|&p| ui_route(p, get(ui::page))));
    table.push(ui_route("/dashboard", get(compat::dashboard)));
    table.push(ui_route("/ui/{hash}/{*path}", get(ui::asset)));
    table
}
