//! The API's contract: an OpenAPI 3.1 document, served at `GET /api/v1/openapi.json`.
//!
//! Each handler carries its own operation (`#[utoipa::path]` above it: parameters, body, the
//! statuses the handler itself answers); the types it takes and gives derive `ToSchema`. What
//! every route gets from the layers in front of the handlers (the Host check, the route's
//! guard in `access.rs`: credentials, scope, body limit, content type, rate limits, the
//! request timeout) is added here by [`Guarded`], read from the route table itself, so the
//! document and the guard cannot drift apart. The test below holds the document and the route
//! table to each other both ways.

use axum::http::{HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::openapi::path::Operation;
use utoipa::openapi::schema::{Schema, SchemaType, Type};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{
    ContentBuilder, HeaderBuilder, Ref, RefOr, Required, Response as ApiResponse, ResponseBuilder,
};
use utoipa::{Modify, OpenApi, ToSchema};

use super::access::{Access, CSRF_HEADER, SESSION_COOKIE};
use super::ratelimit::Class;
use super::routes::{self, ANY, Route};
use super::{
    audit, backups, compat, data, exec, files, health, metrics, programs, runtimes, session,
    system, terminals, tokens, tunnels, ws,
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "localhostd",
        description = "HTTP API for one host: data, files, sandboxed programs, monitoring, \
            backups. Every error is answered with the one body `ErrorResponse`. Credentials: a \
            bearer token, or the browser session cookie from `POST /api/v1/session` (changes \
            made with the cookie also need the `X-CSRF-Token` header and a same-origin \
            `Origin`); on the admin socket, root and the daemon's own user need none. Each \
            security requirement names the scope the route needs (`admin` implies all).",
    ),
    paths(
        serve,
        health::live,
        health::ready,
        health::report,
        metrics::scrape,
        metrics::dashboard,
        metrics::history,
        metrics::alerts,
        system::facts,
        system::processes,
        session::create,
        session::get,
        session::delete,
        session::create_link,
        tokens::list,
        tokens::create,
        tokens::revoke,
        backups::create,
        backups::list,
        backups::prune,
        backups::verify,
        backups::restore,
        audit::list,
        exec::run,
        exec::list,
        exec::get,
        exec::output,
        exec::cancel,
        programs::upload,
        programs::list,
        programs::get,
        programs::delete,
        programs::set_main,
        programs::archive,
        programs::run,
        programs::runs,
        runtimes::list,
        tunnels::list,
        tunnels::start,
        tunnels::stop,
        data::list,
        data::post,
        data::batch,
        data::get,
        data::put,
        data::delete,
        files::list,
        files::upload_form,
        files::usage,
        files::download,
        files::upload,
        files::delete,
        terminals::create,
        terminals::create_for_program,
        terminals::list,
        terminals::get,
        terminals::delete,
        ws::attach,
        terminals::input,
        terminals::output,
        terminals::resize,
        terminals::signal,
        terminals::recording,
        compat::data_all,
        compat::data_store,
        compat::data_get,
        compat::data_delete,
        compat::files_upload,
        compat::files_list,
        compat::files_download,
        compat::files_delete,
        compat::files_storage_info,
        compat::programs_upload,
        compat::programs_upload_zip,
        compat::programs_list,
        compat::programs_execute,
        compat::programs_execute_terminal,
        compat::programs_delete,
        compat::execute,
        compat::execute_interactive,
        compat::execute_send_input,
        compat::execute_terminate_session,
        compat::ngrok_start,
        compat::ngrok_stop,
        compat::ngrok_status,
        compat::localtunnel_start,
        compat::localtunnel_stop,
        compat::localtunnel_status,
        compat::cloudflared_start,
        compat::cloudflared_stop,
        compat::cloudflared_status,
    ),
    components(schemas(ErrorResponse, ErrorDetail, ErrorCode)),
    modifiers(&Guarded),
    tags(
        (name = "meta", description = "This document."),
        (name = "health", description = "Liveness, readiness and the health report."),
        (name = "monitoring", description = "Prometheus metrics, the dashboard, history, alerts, the host's facts and top processes."),
        (name = "session", description = "Browser login (cookie + CSRF token), who-am-I, logout."),
        (name = "tokens", description = "API tokens (admin)."),
        (name = "backups", description = "Backups and the audit trail (admin)."),
        (name = "exec", description = "Commands in the sandbox and their history."),
        (name = "programs", description = "The program store: upload, run, download."),
        (name = "data", description = "The key-value store, with versions and a change stream."),
        (name = "files", description = "The file store: uploads, ranged downloads, usage."),
        (name = "tunnels", description = "Public tunnels to this API through an SSH reverse tunnel, localtunnel, cloudflared or ngrok: supervised clients (admin; off unless the config enables them)."),
        (name = "terminals", description = "Interactive sessions: a job on a pseudo-terminal in the sandbox, attached over WebSocket or driven over HTTP; recordings."),
        (name = "compat", description = "The seed's routes (the Flask \"Localhost Web Server\"), deprecated: each is answered by the v1 route its description names, with that route's credentials, scope, rate limit and audit (docs/seed-compat.md). `[compat] seed-routes = false` turns them off."),
    )
)]
pub struct ApiDoc;

/// The document as served: built once, on the first request for it.
/// The document as served: the output of [`ApiDoc`], committed as docs/openapi.json and
/// checked to be current by this module's tests (`LOCALHOSTD_UPDATE_OPENAPI=1 cargo test --lib
/// api::openapi` rewrites it). Serving the committed bytes keeps the code that builds the
/// document (most of a megabyte) out of the daemon, whose idle memory is mostly its code.
pub static DOCUMENT: &str = include_str!("../../docs/openapi.json");

/// The OpenAPI 3.1 document of this API
///
/// Generated from the handlers and the route table; no credentials needed.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "meta",
    operation_id = "openapi_document",
    responses(
        (status = 200, description = "The document (OpenAPI 3.1, JSON).", content_type = "application/json", body = Object),
    )
)]
pub async fn serve() -> Response {
    let mut resp = bytes::Bytes::from_static(DOCUMENT.as_bytes()).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

// ---------------------------------------------------------------------------------------------
// The error body, and the bodies handlers build with `json!` (described here, never built).

/// The one error body every route answers with (`src/api/error.rs`).
#[derive(Serialize, ToSchema)]
pub struct ErrorResponse {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    pub code: ErrorCode,
    /// For people: what was wrong and what to do. A 5xx message carries no internals, only
    /// the request id under which the server log has them.
    pub message: String,
    /// The request's id (also in the `X-Request-Id` response header).
    pub request_id: String,
}

/// The fixed set of error codes shared by all routes.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    InvalidJson,
    InvalidKey,
    InvalidPath,
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    Conflict,
    Gone,
    PreconditionFailed,
    PayloadTooLarge,
    UnsupportedMediaType,
    RangeNotSatisfiable,
    Unprocessable,
    RateLimited,
    QuotaExceeded,
    InsufficientStorage,
    Unavailable,
    Internal,
}

/// `GET /health`.
#[derive(Serialize, ToSchema)]
pub struct Live {
    /// Always `ok`.
    pub status: String,
}

/// `GET /ready` when every check passes.
#[derive(Serialize, ToSchema)]
pub struct Ready {
    /// `ready`, or `degraded` (files whose metadata has no content; see `degraded`).
    pub status: String,
    pub checks: Vec<crate::ops::health::Check>,
    /// Why the service is degraded; only with `status: degraded`.
    pub degraded: Option<Vec<String>>,
}

/// `GET /ready` when a check fails: the error body plus each check.
#[derive(Serialize, ToSchema)]
pub struct NotReady {
    pub error: ErrorDetail,
    /// `not_ready`.
    pub status: String,
    pub checks: Vec<crate::ops::health::Check>,
}

/// A page of a list. Lists that fit one page have `next_cursor: null`.
#[derive(Serialize, ToSchema)]
pub struct Page<T: ToSchema> {
    pub items: Vec<T>,
    /// Pass as `?cursor=` for the next page; null on the last.
    pub next_cursor: Option<String>,
}

/// `POST /api/v1/session`.
#[derive(Serialize, ToSchema)]
pub struct SessionCreated {
    /// Send as `X-CSRF-Token` with every change made with the session cookie.
    pub csrf_token: String,
    pub actor: crate::store::auth::Actor,
    /// The session ends after this many seconds without a request.
    pub idle_timeout_s: u64,
}

/// `POST /api/v1/session/links`.
#[derive(Serialize, ToSchema)]
pub struct LoginLink {
    /// The secret: `<base>/login#link=<link>` logs in once, as the admin.
    pub link: String,
    /// When it stops working (RFC 3339).
    pub expires_at: String,
}

/// `GET /api/v1/session`.
#[derive(Serialize, ToSchema)]
pub struct Whoami {
    pub actor: crate::store::auth::Actor,
    /// The session's CSRF token, when the request was made with the session cookie (send it
    /// as `X-CSRF-Token` with changes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub csrf_token: Option<String>,
}

/// `POST /api/v1/backups:prune`.
#[derive(Serialize, ToSchema)]
pub struct Pruned {
    pub removed: Vec<crate::ops::backup::BackupInfo>,
}

/// Output as text when it is UTF-8, else base64.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum OutputEncoding {
    #[serde(rename = "utf-8")]
    Utf8,
    Base64,
}

/// A terminal session (`jobs::terminals::Info`) with its URLs.
#[derive(Serialize, ToSchema)]
pub struct TerminalCreated {
    #[serde(flatten)]
    pub info: crate::jobs::terminals::Info,
    pub urls: TerminalUrls,
}

/// Where to reach a terminal session.
#[derive(Serialize, ToSchema)]
pub struct TerminalUrls {
    #[serde(rename = "self")]
    pub this: String,
    /// WebSocket (`GET` with `Upgrade: websocket`).
    pub attach: String,
    pub input: String,
    pub output: String,
    pub resize: String,
    pub signal: String,
    pub recording: String,
}

/// `GET /api/v1/terminals/{id}/output` as JSON.
#[derive(Serialize, ToSchema)]
pub struct TerminalOutput {
    /// The output: text when it is UTF-8, else base64.
    pub data: String,
    pub encoding: OutputEncoding,
    /// The offset of `data`'s first byte (`since`, or the oldest kept when `lost` > 0).
    pub from: u64,
    /// Read on from here (`?since=`).
    pub next: u64,
    /// Bytes after `since` the scrollback no longer holds.
    pub lost: u64,
    /// `running` or `ended`.
    pub state: String,
    /// Once the session ended and everything was read: `{type: "exit", code, signal, reason}`.
    pub exit: Option<TerminalExit>,
}

/// How a terminal session ended (also the WebSocket's `exit` message).
#[derive(Serialize, ToSchema)]
pub struct TerminalExit {
    /// Always `exit`.
    #[serde(rename = "type")]
    pub kind: String,
    pub code: Option<i64>,
    pub signal: Option<String>,
    /// `exited`, `deleted`, `idle timeout`, `lifetime`, `daemon stopped`, `sandbox error`.
    pub reason: String,
}

/// The result of a command or a program run.
#[derive(Serialize, ToSchema)]
pub struct ExecOutcome {
    pub id: String,
    pub status: crate::jobs::exec::Status,
    pub exit_code: Option<i32>,
    /// The signal that ended the job (e.g. `SIGKILL`), if one did.
    pub signal: Option<String>,
    /// Output passed `limits.output_bytes` and was cut.
    pub truncated: bool,
    pub wall_ms: u64,
    pub cpu_ms: u64,
    pub max_rss_kb: u64,
    pub started_at: String,
    pub memory_limited_by: crate::jobs::sandbox::MemoryLimitedBy,
    pub stdout: String,
    pub stdout_encoding: OutputEncoding,
    pub stderr: String,
    pub stderr_encoding: OutputEncoding,
    /// What went wrong building the sandbox (status `sandbox_error`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// What became of the outputs and read-write mounts asked for (absent when none were).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outputs: Option<crate::jobs::data::OutputsReport>,
}

/// The answer to a job submitted with `wait: false` (202), and to a cancel.
#[derive(Serialize, ToSchema)]
pub struct ExecAccepted {
    pub id: String,
    /// `queued` or `running` (a cancel: as it stood when asked).
    pub state: crate::jobs::exec::executions::State,
    /// `/api/v1/executions/{id}`, also in the `Location` header.
    pub location: String,
}

/// `GET /api/v1/executions/{id}`: the execution's record with the output it kept.
#[derive(Serialize, ToSchema)]
pub struct ExecutionView {
    #[serde(flatten)]
    pub record: crate::jobs::exec::Record,
    /// The kept stdout (while it runs: so far); empty when `output_kept` is false.
    pub stdout: String,
    pub stdout_encoding: OutputEncoding,
    pub stderr: String,
    pub stderr_encoding: OutputEncoding,
}

/// `POST /api/v1/files` (multipart/form-data): every part with a filename is a file, stored
/// at `?prefix=` + its filename, whatever the part's name; parts without one are ignored.
#[derive(Serialize, ToSchema)]
pub struct FilesForm {
    /// A file (send one part per file).
    #[schema(value_type = String, content_media_type = "application/octet-stream")]
    pub file: Vec<u8>,
}

/// `POST /api/v1/programs` as multipart/form-data: these parts and no others.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProgramForm {
    /// The program (its filename names it unless `?name=` does; a `.zip` filename or a part
    /// of type application/zip makes it a project); not empty.
    #[schema(value_type = String, content_media_type = "application/octet-stream", min_length = 1)]
    pub file: Vec<u8>,
    /// The project's main file.
    pub main: Option<String>,
    /// The program's name, when not its filename (`?name=` wins).
    pub name: Option<String>,
    /// The same as `name` (the seed's upload-zip form calls it so).
    pub project_name: Option<String>,
}

/// The files of `POST /api/v1/files`.
#[derive(Serialize, ToSchema)]
pub struct StoredFiles {
    pub items: Vec<crate::store::files::FileMeta>,
}

/// Bytes of any kind: a file's content, a ZIP, a recording, a terminal's raw input.
pub struct Binary;

impl utoipa::PartialSchema for Binary {
    fn schema() -> utoipa::openapi::RefOr<Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(SchemaType::Type(Type::String))
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                utoipa::openapi::KnownFormat::Binary,
            )))
            .description(Some("Bytes of any kind."))
            .into()
    }
}

impl ToSchema for Binary {}

pub use crate::util::schema::AnyJson;

/// One Server-Sent Event as a client reads it: its `event` name, its `data` (a JSON text, as
/// each route's description says), and its `id` where the stream can be resumed from it.
#[derive(Serialize, ToSchema)]
pub struct SseEvent {
    pub event: Option<String>,
    pub data: String,
    pub id: Option<String>,
    pub retry: Option<u64>,
}

/// The runtimes of `GET /api/v1/runtimes`.
#[derive(Serialize, ToSchema)]
pub struct RuntimeList {
    pub items: Vec<crate::jobs::runtimes::Runtime>,
}

/// A key's value and version (`value` absent with `?keys_only=true`).
#[derive(Serialize, ToSchema)]
pub struct KvEntry {
    pub key: String,
    /// The stored JSON value, as it was written.
    #[schema(value_type = AnyJson, required = false)]
    pub value: Option<serde_json::Value>,
    /// The key's version (also the ETag, quoted).
    pub version: String,
}

/// A page of keys, with the store revision to watch from.
#[derive(Serialize, ToSchema)]
pub struct KvPage {
    pub items: Vec<KvEntry>,
    pub next_cursor: Option<String>,
    pub revision: String,
}

/// What one change wrote.
#[derive(Serialize, ToSchema)]
pub struct KvWritten {
    pub key: String,
    pub version: String,
}

/// A batch: the revision all its ops were applied at, and each op's result in order.
#[derive(Serialize, ToSchema)]
pub struct KvBatchResult {
    pub revision: String,
    pub results: Vec<KvWritten>,
}

// ---------------------------------------------------------------------------------------------
// What the layers in front of the handlers add, from the route table.

const BEARER: &str = "bearer";
const SESSION: &str = "session";
const CSRF: &str = "csrf";

/// An OpenAPI path template for a route-table path: axum's catch-all `{*rest}` is `{rest}`.
pub fn template(path: &str) -> String {
    path.replace("{*", "{")
}

fn safe(m: &Method) -> bool {
    matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The operation of `method` in a path item.
pub fn operation_mut<'a>(
    item: &'a mut utoipa::openapi::PathItem,
    method: &Method,
) -> Option<&'a mut Operation> {
    match *method {
        Method::GET => item.get.as_mut(),
        Method::POST => item.post.as_mut(),
        Method::PUT => item.put.as_mut(),
        Method::DELETE => item.delete.as_mut(),
        Method::PATCH => item.patch.as_mut(),
        Method::HEAD => item.head.as_mut(),
        Method::OPTIONS => item.options.as_mut(),
        _ => None,
    }
}

fn error_response(description: &str, headers: &[(&str, &str)]) -> RefOr<ApiResponse> {
    let content = ContentBuilder::new()
        .schema(Some(Ref::from_schema_name("ErrorResponse")))
        .build();
    let mut r = ResponseBuilder::new()
        .description(description)
        .content("application/json", content);
    for (name, what) in headers {
        let h = HeaderBuilder::new()
            .schema(utoipa::openapi::ObjectBuilder::new().schema_type(Type::String))
            .description(Some(*what))
            .build();
        r = r.header(*name, h);
    }
    RefOr::T(r.build())
}

/// The statuses the layers in front of the handler can answer `route` with, with why.
fn guard_responses(route: &Route) -> Vec<(&'static str, RefOr<ApiResponse>)> {
    const RETRY: (&str, &str) = ("Retry-After", "Seconds to wait before retrying.");
    let mut out = vec![
        (
            "400",
            error_response(
                "Bad request (`bad_request`): among others a Host that is not a name of this \
                 server.",
                &[],
            ),
        ),
        (
            "413",
            error_response(
                "The body is larger than the route's limit (`payload_too_large`).",
                &[],
            ),
        ),
        (
            "500",
            error_response(
                "Internal error (`internal`); the server log has the details under the \
                 request id.",
                &[],
            ),
        ),
        (
            "503",
            error_response(
                "Unavailable (`unavailable`): the database is busy, the daemon is stopping, or \
                 the request ran past `server.request-timeout`.",
                &[RETRY],
            ),
        ),
    ];
    let credentials = route.access != Access::Public;
    if credentials {
        out.push((
            "401",
            error_response(
                "No credential, or one that is unknown, revoked or expired (`unauthorized`).",
                &[("WWW-Authenticate", "`Bearer`.")],
            ),
        ));
        out.push((
            "403",
            error_response(
                "The credential lacks the route's scope, or a cookie-authenticated change came \
                 without a matching `X-CSRF-Token` or from another origin (`forbidden`).",
                &[],
            ),
        ));
    }
    if credentials || route.class != Class::None {
        out.push((
            "429",
            error_response(
                "Rate limited (`rate_limited`): the route's rate limit, or too many failed \
                 authentications from this address.",
                &[RETRY],
            ),
        ));
    }
    if !safe(&route.method) && route.accepts != ANY {
        out.push((
            "415",
            error_response(
                "The body's Content-Type is not one the route takes (`unsupported_media_type`).",
                &[],
            ),
        ));
    }
    if !safe(&route.method) {
        out.push((
            "507",
            error_response(
                "The state directory's disk is full or below `storage.min-free-disk` \
                 (`insufficient_storage`), or a quota is used up (`quota_exceeded`).",
                &[],
            ),
        ));
    }
    out
}

/// The security requirements of a route: alternatives, each naming the scope needed.
fn security(route: &Route) -> Vec<SecurityRequirement> {
    let scope: Vec<&str> = match route.access {
        Access::Public => return Vec::new(),
        Access::Authenticated => Vec::new(),
        Access::Scope(s) => vec![s.as_str()],
        Access::Metrics => vec!["metrics"],
        // Not a credential a client can present: the admin socket's peer credentials.
        Access::LocalAdmin => vec!["admin"],
    };
    let cookie = if safe(&route.method) {
        SecurityRequirement::new(SESSION, scope.clone())
    } else {
        SecurityRequirement::new(SESSION, scope.clone()).add(CSRF, scope.clone())
    };
    vec![SecurityRequirement::new(BEARER, scope), cookie]
}

/// An optional body is one a client may leave out, not one it may send as `null` (which is how
/// `Option<T>` describes it, and which the JSON extractor refuses).
fn not_null(content: &mut utoipa::openapi::Content) {
    let is_null = |s: &RefOr<Schema>| matches!(s, RefOr::T(Schema::Object(o)) if o.schema_type == SchemaType::Type(Type::Null));
    if let Some(RefOr::T(Schema::OneOf(one))) = &content.schema {
        let mut rest = one.items.iter().filter(|s| !is_null(s));
        if let (Some(only), None) = (rest.next(), rest.next()) {
            content.schema = Some(only.clone());
        }
    }
}

/// Adds, to each route's operation, what the layers in front of its handler do: the security
/// requirement of its access rule and the error statuses they can answer with (the handler's
/// own description of a status wins). Also the security schemes.
pub struct Guarded;

impl Modify for Guarded {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API token (`Authorization: Bearer lhd_…`), made with `localhostd \
                         token create` or `POST /api/v1/tokens`.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            SESSION,
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                SESSION_COOKIE,
                "The browser session from `POST /api/v1/session` (named `__Host-lhd_session` \
                 when the request came over HTTPS through a trusted proxy).",
            ))),
        );
        components.add_security_scheme(
            CSRF,
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                CSRF_HEADER,
                "The session's `csrf_token`: every change made with the session cookie sends \
                 it, from the same origin.",
            ))),
        );
        for route in routes::table().into_iter().filter(|r| !r.ui) {
            let Some(item) = doc.paths.paths.get_mut(&template(route.path)) else {
                continue;
            };
            let Some(op) = operation_mut(item, &route.method) else {
                continue;
            };
            for (status, response) in guard_responses(&route) {
                op.responses
                    .responses
                    .entry(status.to_owned())
                    .or_insert(response);
            }
            if let Some(body) = op.request_body.as_mut()
                && body.required != Some(Required::True)
            {
                body.content.values_mut().for_each(not_null);
            }
            // A seed route is deprecated: its description names the v1 route to use.
            if route.alias_of.is_some() {
                op.deprecated = Some(utoipa::openapi::Deprecated::True);
            }
            let security = security(&route);
            if !security.is_empty() {
                op.security = Some(security);
            }
        }
        add_links(doc);
        exactly_one_of(doc);
    }
}

/// Request bodies with fields that exclude each other: exactly one field of each group must be
/// given (the handler checks the same and answers 400), stated as `allOf` the struct's own
/// schema and a `oneOf` of its alternatives, each requiring one of them.
const EXACTLY_ONE_OF: &[(&str, &[&str])] = &[
    ("ExecBody", &["argv", "command"]),
    ("CreateBody", &["argv", "command"]),
    ("MountBody", &["files", "program"]),
    ("Login", &["token", "link"]),
];

fn exactly_one_of(doc: &mut utoipa::openapi::OpenApi) {
    let Some(components) = doc.components.as_mut() else {
        return;
    };
    for (name, fields) in EXACTLY_ONE_OF {
        let Some(own) = components.schemas.remove(*name) else {
            continue;
        };
        let mut alternatives = utoipa::openapi::schema::OneOfBuilder::new();
        for field in *fields {
            alternatives = alternatives.item(
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(SchemaType::Type(Type::Object))
                    .required(*field),
            );
        }
        let both = utoipa::openapi::schema::AllOfBuilder::new()
            .item(own)
            .item(alternatives)
            .build();
        components
            .schemas
            .insert((*name).to_owned(), RefOr::T(Schema::AllOf(both)));
    }
}

/// What a created resource leads to: OpenAPI links from a create's answer to the operations
/// on what it made, so a client (and schemathesis's stateful phase) can follow them.
/// (from operation, status, to operation, parameter, where its value comes from)
const LINKS: &[(&str, &str, &str, &str, &str)] = &[
    (
        "tokens_create",
        "201",
        "tokens_revoke",
        "id",
        "$response.body#/id",
    ),
    (
        "backups_create",
        "201",
        "backups_verify",
        "id",
        "$response.body#/id",
    ),
    ("data_put", "201", "data_get", "key", "$request.path.key"),
    ("data_put", "201", "data_delete", "key", "$request.path.key"),
    ("data_post", "201", "data_get", "key", "$response.body#/key"),
    (
        "data_post",
        "201",
        "data_delete",
        "key",
        "$response.body#/key",
    ),
    (
        "files_put",
        "201",
        "files_get",
        "path",
        "$request.path.path",
    ),
    (
        "files_put",
        "201",
        "files_delete",
        "path",
        "$request.path.path",
    ),
    (
        "programs_upload",
        "201",
        "programs_get",
        "id",
        "$response.body#/id",
    ),
    (
        "programs_upload",
        "201",
        "programs_archive",
        "id",
        "$response.body#/id",
    ),
    (
        "programs_upload",
        "201",
        "programs_runs",
        "id",
        "$response.body#/id",
    ),
    (
        "programs_upload",
        "201",
        "programs_run",
        "id",
        "$response.body#/id",
    ),
    (
        "programs_upload",
        "201",
        "programs_delete",
        "id",
        "$response.body#/id",
    ),
    (
        "programs_upload",
        "201",
        "programs_set_main",
        "id",
        "$response.body#/id",
    ),
    (
        "programs_upload",
        "201",
        "programs_terminal",
        "id",
        "$response.body#/id",
    ),
    (
        "seed_programs_upload",
        "201",
        "seed_programs_execute",
        "filename",
        "$response.body#/name",
    ),
    (
        "seed_programs_upload",
        "201",
        "seed_programs_execute_terminal",
        "id",
        "$response.body#/id",
    ),
    (
        "seed_programs_upload",
        "201",
        "seed_programs_delete",
        "filename",
        "$response.body#/name",
    ),
    (
        "seed_programs_upload_zip",
        "201",
        "seed_programs_execute",
        "filename",
        "$response.body#/name",
    ),
    (
        "seed_programs_upload_zip",
        "201",
        "seed_programs_execute_terminal",
        "id",
        "$response.body#/id",
    ),
    (
        "seed_programs_upload_zip",
        "201",
        "seed_programs_delete",
        "filename",
        "$response.body#/name",
    ),
    (
        "exec_run",
        "202",
        "executions_get",
        "id",
        "$response.body#/id",
    ),
    (
        "exec_run",
        "202",
        "executions_cancel",
        "id",
        "$response.body#/id",
    ),
    (
        "terminals_create",
        "201",
        "terminals_get",
        "id",
        "$response.body#/id",
    ),
    (
        "terminals_create",
        "201",
        "terminals_input",
        "id",
        "$response.body#/id",
    ),
    (
        "terminals_create",
        "201",
        "terminals_resize",
        "id",
        "$response.body#/id",
    ),
    (
        "terminals_create",
        "201",
        "terminals_signal",
        "id",
        "$response.body#/id",
    ),
    (
        "terminals_create",
        "201",
        "terminals_delete",
        "id",
        "$response.body#/id",
    ),
];

fn add_links(doc: &mut utoipa::openapi::OpenApi) {
    for (from, status, to, param, value) in LINKS {
        let op = doc.paths.paths.values_mut().find_map(|item| {
            [
                item.get.as_mut(),
                item.post.as_mut(),
                item.put.as_mut(),
                item.delete.as_mut(),
            ]
            .into_iter()
            .flatten()
            .find(|op| op.operation_id.as_deref() == Some(*from))
        });
        let Some(op) = op else {
            continue;
        };
        if let Some(utoipa::openapi::RefOr::T(response)) = op.responses.responses.get_mut(*status) {
            let link = utoipa::openapi::link::LinkBuilder::new()
                .operation_id(*to)
                .parameter(*param, *value)
                .build();
            let name = to
                .split('_')
                .map(|w| {
                    let mut c = w.chars();
                    c.next()
                        .map(|f| f.to_uppercase().chain(c).collect::<String>())
                        .unwrap_or_default()
                })
                .collect::<String>();
            response.links.insert(name, utoipa::openapi::RefOr::T(link));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use serde_json::Value;

    use super::*;

    const METHODS: &[&str] = &[
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];

    fn document() -> Value {
        generated()
    }

    /// Every operation of the document: (method, path) → the operation object.
    /// The document as committed: [`ApiDoc`]'s, with the one spelling utoipa 5.5 gets wrong
    /// put right (a link's `operation_id` is `operationId` in OpenAPI).
    fn generated() -> Value {
        fn fix(v: &mut Value, in_links: bool) {
            match v {
                Value::Object(o) => {
                    if in_links && let Some(id) = o.remove("operation_id") {
                        o.insert("operationId".into(), id);
                    }
                    for (k, child) in o.iter_mut() {
                        fix(child, k == "links" || (in_links && !child.is_string()));
                    }
                }
                Value::Array(a) => a.iter_mut().for_each(|c| fix(c, false)),
                _ => {}
            }
        }
        let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        fix(&mut doc, false);
        doc
    }

    fn operations(doc: &Value) -> BTreeMap<(String, String), Value> {
        let mut out = BTreeMap::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for m in METHODS {
                if let Some(op) = item.get(*m) {
                    out.insert((m.to_uppercase(), path.clone()), op.clone());
                }
            }
        }
        out
    }

    fn route_of<'a>(table: &'a [Route], method: &str, path: &str) -> &'a Route {
        table
            .iter()
            .find(|r| r.method.as_str() == method && template(r.path) == path)
            .unwrap()
    }

    /// Every schema the document gives is a real one: not `{}`, not only a description. A
    /// response or body without content (204, 304) has no schema at all, which is right.
    fn empty_schemas(v: &Value, at: &str, out: &mut Vec<String>) {
        match v {
            Value::Object(o) => {
                for (k, child) in o {
                    let here = format!("{at}/{k}");
                    let is_schema_slot =
                        matches!(k.as_str(), "schema" | "items" | "additionalProperties")
                            || at.ends_with("/properties")
                            || at.ends_with("/schemas");
                    if is_schema_slot
                        && let Value::Object(sch) = child
                        && sch.keys().all(|k| k == "description")
                    {
                        out.push(here.clone());
                    }
                    if k != "example" && k != "examples" {
                        empty_schemas(child, &here, out);
                    }
                }
            }
            Value::Array(a) => {
                for (i, child) in a.iter().enumerate() {
                    empty_schemas(child, &format!("{at}/{i}"), out);
                }
            }
            _ => {}
        }
    }

    /// Every answer an operation can give is listed by its status code: no `default`, no
    /// `2XX`-style ranges; every body (request or response) has a schema, and no schema is
    /// empty. What schemathesis checks responses against (`tests/api/schemathesis.sh`).
    #[test]
    fn every_response_has_its_code_and_every_body_a_schema() {
        let doc = document();
        let mut problems = Vec::new();
        for ((method, path), op) in operations(&doc) {
            let responses = op["responses"].as_object().unwrap();
            assert!(!responses.is_empty(), "{method} {path} lists no response");
            for (code, r) in responses {
                if code.len() != 3 || !code.chars().all(|c| c.is_ascii_digit()) {
                    problems.push(format!(
                        "{method} {path}: response {code:?} is not a status code"
                    ));
                }
                for (ct, c) in r["content"].as_object().into_iter().flatten() {
                    if c.get("schema").is_none() {
                        problems.push(format!("{method} {path} {code} {ct}: no schema"));
                    }
                }
            }
            for (ct, c) in op["requestBody"]["content"]
                .as_object()
                .into_iter()
                .flatten()
            {
                if c.get("schema").is_none() {
                    problems.push(format!("{method} {path} body {ct}: no schema"));
                }
            }
        }
        empty_schemas(&doc, "", &mut problems);
        assert!(problems.is_empty(), "{problems:#?}");
    }

    /// Every group of `EXACTLY_ONE_OF` is on its schema (a renamed struct would otherwise
    /// lose it without a word).
    #[test]
    fn every_exclusive_group_is_stated_on_its_schema() {
        let doc = generated();
        for (name, fields) in EXACTLY_ONE_OF {
            let schema = &doc["components"]["schemas"][*name];
            let all = schema["allOf"]
                .as_array()
                .unwrap_or_else(|| panic!("{name} is not allOf: {schema}"));
            assert_eq!(all.len(), 2, "{name}");
            // The struct's own schema still names every field of the group…
            for f in *fields {
                assert!(
                    all[0]["properties"][*f].is_object(),
                    "{name}.{f}: {}",
                    all[0]
                );
            }
            // …and the second requires exactly one of them.
            let alternatives: Vec<Vec<String>> = all[1]["oneOf"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| serde_json::from_value(a["required"].clone()).unwrap())
                .collect();
            let want: Vec<Vec<String>> = fields.iter().map(|f| vec![f.to_string()]).collect();
            assert_eq!(alternatives, want, "{name}");
        }
    }

    /// Every link of `LINKS` is in the document, from an operation and answer that exist to
    /// an operation that exists and has the parameter.
    #[test]
    fn every_link_joins_two_operations() {
        let doc = document();
        let ops = operations(&doc);
        let by_id = |id: &str| {
            ops.values()
                .find(|op| op["operationId"] == id)
                .unwrap_or_else(|| panic!("no operation {id}"))
                .clone()
        };
        for (from, status, to, param, _) in LINKS {
            let op = by_id(from);
            let link = &op["responses"][*status]["links"];
            assert!(link.is_object(), "{from} {status} has no links");
            let target = by_id(to);
            assert!(
                target["parameters"]
                    .as_array()
                    .is_some_and(|ps| ps.iter().any(|p| p["name"] == *param)),
                "{to} has no parameter {param}"
            );
        }
    }

    #[test]
    fn every_route_is_an_operation_and_every_operation_a_route() {
        let doc = document();
        let documented: BTreeSet<(String, String)> = operations(&doc).into_keys().collect();
        // The web UI's routes are not the API's: none is in the document.
        let (ui, table): (Vec<Route>, Vec<Route>) = routes::table().into_iter().partition(|r| r.ui);
        assert!(ui.len() > 1, "no UI routes in the table");
        for r in &ui {
            assert!(
                !documented.contains(&(r.method.to_string(), template(r.path))),
                "UI route {} {} is in the OpenAPI document",
                r.method,
                r.path
            );
        }
        let routed: BTreeSet<(String, String)> = table
            .iter()
            .map(|r| (r.method.to_string(), template(r.path)))
            .collect();
        assert_eq!(
            routed.len(),
            table.len(),
            "a (method, path) twice in the table"
        );
        let undocumented: Vec<_> = routed.difference(&documented).collect();
        let unrouted: Vec<_> = documented.difference(&routed).collect();
        assert!(
            undocumented.is_empty() && unrouted.is_empty(),
            "routes without an operation: {undocumented:?}; operations without a route: {unrouted:?}"
        );
        // The comparison has something to compare (a positive control for the walk above).
        assert!(documented.contains(&("GET".into(), "/api/v1/openapi.json".into())));
        assert!(documented.contains(&("PUT".into(), "/api/v1/files/{path}".into())));
    }

    /// Every `$ref` in `v`, with where it was found.
    fn refs(v: &Value, at: &str, out: &mut Vec<(String, String)>) {
        match v {
            Value::Object(map) => {
                for (k, x) in map {
                    if k == "$ref" {
                        if let Value::String(r) = x {
                            out.push((at.to_owned(), r.clone()));
                        }
                    } else {
                        refs(x, &format!("{at}/{k}"), out);
                    }
                }
            }
            Value::Array(items) => {
                for (i, x) in items.iter().enumerate() {
                    refs(x, &format!("{at}/{i}"), out);
                }
            }
            _ => {}
        }
    }

    #[test]
    fn the_document_is_well_formed_openapi_3_1() {
        let doc = document();
        assert_eq!(doc["openapi"], "3.1.0");
        assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
        // Servers omitted: clients resolve paths against the URL they fetched it from.
        assert!(doc.get("servers").is_none(), "{}", doc["servers"]);

        let mut found = Vec::new();
        refs(&doc, "#", &mut found);
        assert!(found.len() > 50, "only {} $refs", found.len());
        let dangling: Vec<_> = found
            .iter()
            .filter(|(_, r)| {
                r.strip_prefix('#')
                    .is_none_or(|pointer| doc.pointer(pointer).is_none())
            })
            .collect();
        assert!(
            dangling.is_empty(),
            "$refs that do not resolve: {dangling:?}"
        );

        let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
        let table = routes::table();
        let mut ids = BTreeSet::new();
        for ((method, path), op) in operations(&doc) {
            let name = format!("{method} {path}");
            let id = op["operationId"].as_str().unwrap_or_default().to_owned();
            assert!(
                !id.is_empty() && ids.insert(id.clone()),
                "{name}: operationId {id:?}"
            );
            let responses = op["responses"].as_object().unwrap();
            assert!(!responses.is_empty(), "{name}: no responses");
            for (status, r) in responses {
                assert!(
                    status.len() == 3
                        && status.parse::<u16>().is_ok_and(|s| (100..600).contains(&s)),
                    "{name}: response {status:?} (no `default`, no ranges)"
                );
                assert!(
                    r["description"].is_string(),
                    "{name} {status}: no description"
                );
                if status.starts_with('4') || status.starts_with('5') {
                    let schema = &r["content"]["application/json"]["schema"]["$ref"];
                    assert!(
                        schema == "#/components/schemas/ErrorResponse"
                            || schema == "#/components/schemas/NotReady",
                        "{name} {status}: not the error body: {r}"
                    );
                }
            }
            // Path parameters: exactly the template's, each required.
            let in_template: BTreeSet<String> = path
                .split('/')
                .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
                .map(str::to_owned)
                .collect();
            let params = op["parameters"].as_array().cloned().unwrap_or_default();
            let declared: BTreeSet<String> = params
                .iter()
                .filter(|p| p["in"] == "path")
                .map(|p| {
                    assert_eq!(p["required"], true, "{name}: {p}");
                    p["name"].as_str().unwrap().to_owned()
                })
                .collect();
            assert_eq!(in_template, declared, "{name}: path parameters");

            let route = route_of(&table, &method, &path);
            // What the guard refuses with is described, with the credentials it takes.
            let security = op["security"].as_array().cloned().unwrap_or_default();
            if route.access == Access::Public {
                assert!(security.is_empty(), "{name}: public, but {security:?}");
            } else {
                assert!(!security.is_empty(), "{name}: no security requirement");
                for status in ["401", "403", "429"] {
                    assert!(responses.contains_key(status), "{name}: no {status}");
                }
            }
            for requirement in &security {
                for scheme in requirement.as_object().unwrap().keys() {
                    assert!(
                        schemes.contains_key(scheme),
                        "{name}: unknown scheme {scheme}"
                    );
                }
            }
            for status in ["400", "413", "500", "503"] {
                assert!(responses.contains_key(status), "{name}: no {status}");
            }
            // A body is described only in content types the guard lets through.
            if let Some(body) = op.get("requestBody") {
                assert!(!safe(&route.method), "{name}: a body on a safe method");
                for (ct, content) in body["content"].as_object().unwrap() {
                    let variants = content["schema"]["oneOf"].as_array().cloned();
                    assert!(
                        !variants
                            .unwrap_or_default()
                            .iter()
                            .any(|v| v["type"] == "null"),
                        "{name}: a body that may be null"
                    );
                    assert!(
                        route.accepts == ANY || route.accepts.contains(&ct.as_str()),
                        "{name}: body type {ct} is not in the route's {:?}",
                        route.accepts
                    );
                }
                if route.accepts != ANY {
                    assert!(responses.contains_key("415"), "{name}: no 415");
                }
            }
        }
    }

    /// openapi-spec-validator on `doc`: `None` when this machine has no such validator. The
    /// Python is `$LOCALHOSTD_TEST_PYTHON` (the virtual environment `.ci/run` makes, where the
    /// validator must be: a missing one there fails) or else `python3`.
    fn spec_validator(doc: &Value) -> Option<Result<(), String>> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("openapi.json");
        std::fs::write(&file, serde_json::to_vec(doc).unwrap()).unwrap();
        let python = std::env::var("LOCALHOSTD_TEST_PYTHON").ok();
        let out = std::process::Command::new(python.as_deref().unwrap_or("python3"))
            .args(["-m", "openapi_spec_validator", "--schema", "3.1"])
            .arg(&file)
            .output()
            .ok()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.contains("No module named") {
            assert!(
                python.is_none(),
                "LOCALHOSTD_TEST_PYTHON={python:?} has no openapi_spec_validator: {stderr}"
            );
            return None;
        }
        let said = format!("{}{stderr}", String::from_utf8_lossy(&out.stdout));
        let head: String = said.chars().take(2000).collect();
        Some(if out.status.success() {
            Ok(())
        } else {
            Err(head)
        })
    }

    #[test]
    fn a_real_validator_accepts_the_document() {
        // Positive control: the validator refuses a document without `info`.
        let Some(refused) = spec_validator(&serde_json::json!({"openapi": "3.1.0", "paths": {}}))
        else {
            eprintln!("SKIPPED: python3 -m openapi_spec_validator is not installed");
            return;
        };
        assert!(
            refused.is_err(),
            "the validator accepted a document without info"
        );
        if let Some(Err(e)) = spec_validator(&document()) {
            panic!("openapi-spec-validator refused the document: {e}");
        }
    }

    #[test]
    fn the_committed_document_is_the_generated_one() {
        let generated = format!("{}\n", serde_json::to_string_pretty(&generated()).unwrap());
        if std::env::var_os("LOCALHOSTD_UPDATE_OPENAPI").is_some() {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.json");
            std::fs::write(&path, &generated).unwrap();
            eprintln!("wrote {}", path.display());
            return;
        }
        assert!(
            generated == DOCUMENT,
            "docs/openapi.json is not what the handlers and types describe: \
             run `LOCALHOSTD_UPDATE_OPENAPI=1 cargo test --lib api::openapi` and commit it"
        );
    }

    #[tokio::test]
    async fn the_document_is_served_as_json() {
        let resp = serve().await;
        assert_eq!(resp.status(), axum::http::StatusCode::OK);
        assert_eq!(
            resp.headers().get(header::CONTENT_TYPE).unwrap(),
            "application/json"
        );
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        let served: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(served, document());
    }
}
