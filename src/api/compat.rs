//! The seed's routes (the Flask "Localhost Web Server": `/api/data`, `/api/files/upload`,
//! `/api/execute`, …) at their own paths and methods, each answered by the v1 operation that
//! does the same job (docs/seed-compat.md). An alias copies its v1 route's guard from the
//! route table (access rule, scope, rate-limit class, body types and limit, timeout) and calls
//! the v1 handler, or where the seed's shapes differ the same domain call the handler makes:
//! the adapters here only translate paths and bodies, never reimplement an operation.

use axum::Extension;
use axum::body::{Body, Bytes};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, post};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::access::BodyLimitNote;
use super::error::ApiError;
use super::extract::{Json, Requester};
use super::routes::Route;
use super::{data, exec, files, programs, terminals, tunnels};
use crate::api::state::AppState;
use crate::error::Error;
use crate::ops::tunnels::Provider;

/// The page size the adapters that answer with a whole listing read it in.
const PAGE: usize = 1000;

/// One seed route: its method and path, the v1 route (method, path) it stands for, and the
/// handler (a thin adapter).
struct Alias {
    method: Method,
    path: &'static str,
    v1: (Method, &'static str),
    handler: MethodRouter<AppState>,
    /// The body types it takes, when the seed's body is not the v1 route's (else the v1
    /// route's).
    accepts: Option<&'static [&'static str]>,
}

/// An alias whose seed body is JSON where its v1 route takes raw bytes.
fn json_body(mut a: Alias) -> Alias {
    a.accepts = Some(super::routes::JSON);
    a
}

fn alias(
    method: Method,
    path: &'static str,
    v1_method: Method,
    v1_path: &'static str,
    handler: MethodRouter<AppState>,
) -> Alias {
    Alias {
        method,
        path,
        v1: (v1_method, v1_path),
        handler,
        accepts: None,
    }
}

/// Every seed route, as a route-table entry with the guard of its v1 route (found in `v1`,
/// the v1 table). An alias whose v1 route is missing is left out (and logged): it then
/// answers 404, and the tests that hold the table to the OpenAPI document fail.
pub fn aliases(v1: &[Route]) -> Vec<Route> {
    use Method as M;
    let mut list = vec![
        // The key-value store.
        alias(M::GET, "/api/data", M::GET, "/api/v1/data", get(data_all)),
        alias(
            M::POST,
            "/api/data",
            M::POST,
            "/api/v1/data",
            post(data_store),
        ),
        alias(
            M::GET,
            "/api/data/{*key}",
            M::GET,
            "/api/v1/data/{*key}",
            get(data_get),
        ),
        alias(
            M::DELETE,
            "/api/data/{*key}",
            M::DELETE,
            "/api/v1/data/{*key}",
            delete(data_delete),
        ),
        // The file store.
        alias(
            M::POST,
            "/api/files/upload",
            M::POST,
            "/api/v1/files",
            post(files_upload),
        ),
        alias(
            M::GET,
            "/api/files/list",
            M::GET,
            "/api/v1/files",
            get(files_list),
        ),
        alias(
            M::GET,
            "/api/files/download/{*filename}",
            M::GET,
            "/api/v1/files/{*path}",
            get(files_download),
        ),
        alias(
            M::DELETE,
            "/api/files/delete/{*filename}",
            M::DELETE,
            "/api/v1/files/{*path}",
            delete(files_delete),
        ),
        alias(
            M::GET,
            "/api/files/storage-info",
            M::GET,
            "/api/v1/files:usage",
            get(files_storage_info),
        ),
        // The program store.
        alias(
            M::POST,
            "/api/programs/upload",
            M::POST,
            "/api/v1/programs",
            post(programs_upload),
        ),
        alias(
            M::POST,
            "/api/programs/upload-zip",
            M::POST,
            "/api/v1/programs",
            post(programs_upload_zip),
        ),
        alias(
            M::GET,
            "/api/programs/list",
            M::GET,
            "/api/v1/programs",
            get(programs_list),
        ),
        alias(
            M::POST,
            "/api/programs/execute/{filename}",
            M::POST,
            "/api/v1/programs/{id}/runs",
            post(programs_execute),
        ),
        alias(
            M::POST,
            "/api/programs/execute-terminal/{id}",
            M::POST,
            "/api/v1/programs/{id}/terminals",
            post(programs_execute_terminal),
        ),
        alias(
            M::DELETE,
            "/api/programs/delete/{filename}",
            M::DELETE,
            "/api/v1/programs/{id}",
            delete(programs_delete),
        ),
        // Commands, and interactive ones as terminal sessions.
        alias(
            M::POST,
            "/api/execute",
            M::POST,
            "/api/v1/exec",
            post(execute),
        ),
        alias(
            M::POST,
            "/api/execute/interactive",
            M::POST,
            "/api/v1/terminals",
            post(execute_interactive),
        ),
        // `{"session_id", "input"}`, where the v1 route takes the raw bytes typed.
        json_body(alias(
            M::POST,
            "/api/execute/send-input",
            M::POST,
            "/api/v1/terminals/{id}/input",
            post(execute_send_input),
        )),
        alias(
            M::POST,
            "/api/execute/terminate-session",
            M::DELETE,
            "/api/v1/terminals/{id}",
            post(execute_terminate_session),
        ),
    ];
    // Tunnels: start, stop and status of each of the seed's three providers.
    list.extend([
        alias(
            M::POST,
            "/api/ngrok/start",
            M::POST,
            "/api/v1/tunnels/{provider}/start",
            post(ngrok_start),
        ),
        alias(
            M::POST,
            "/api/ngrok/stop",
            M::POST,
            "/api/v1/tunnels/{provider}/stop",
            post(ngrok_stop),
        ),
        alias(
            M::GET,
            "/api/ngrok/status",
            M::GET,
            "/api/v1/tunnels",
            get(ngrok_status),
        ),
        alias(
            M::POST,
            "/api/localtunnel/start",
            M::POST,
            "/api/v1/tunnels/{provider}/start",
            post(localtunnel_start),
        ),
        alias(
            M::POST,
            "/api/localtunnel/stop",
            M::POST,
            "/api/v1/tunnels/{provider}/stop",
            post(localtunnel_stop),
        ),
        alias(
            M::GET,
            "/api/localtunnel/status",
            M::GET,
            "/api/v1/tunnels",
            get(localtunnel_status),
        ),
        alias(
            M::POST,
            "/api/cloudflared/start",
            M::POST,
            "/api/v1/tunnels/{provider}/start",
            post(cloudflared_start),
        ),
        alias(
            M::POST,
            "/api/cloudflared/stop",
            M::POST,
            "/api/v1/tunnels/{provider}/stop",
            post(cloudflared_stop),
        ),
        alias(
            M::GET,
            "/api/cloudflared/status",
            M::GET,
            "/api/v1/tunnels",
            get(cloudflared_status),
        ),
    ]);
    list.into_iter()
        .filter_map(|a| {
            let Some(of) = v1
                .iter()
                .find(|r| r.method == a.v1.0 && r.path == a.v1.1 && r.alias_of.is_none())
            else {
                tracing::error!(
                    path = a.path,
                    v1 = a.v1.1,
                    "seed route: no v1 route to alias"
                );
                return None;
            };
            Some(Route {
                method: a.method,
                path: a.path,
                access: of.access,
                class: of.class,
                accepts: a.accepts.unwrap_or(of.accepts),
                own_timeout: of.own_timeout,
                body_limit: of.body_limit,
                ui: false,
                alias_of: Some(a.v1),
                handler: a.handler,
            })
        })
        .collect()
}

/// `GET /dashboard`, the seed's dashboard page: the web UI's home is the dashboard. Not an
/// alias (it stays with `compat.seed-routes` off); with the UI off it answers 404 as the UI's
/// pages do.
pub async fn dashboard(State(state): State<AppState>, uri: Uri) -> Response {
    if !state.live.get().ui.enabled {
        return super::not_found(&Method::GET, uri.path()).into_response();
    }
    let mut resp = StatusCode::PERMANENT_REDIRECT.into_response();
    resp.headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static("/"));
    resp
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

/// A JSON request body the seed's route may leave out: `None` without a Content-Type.
async fn optional_json<T: serde::de::DeserializeOwned>(
    request: Request,
) -> Result<Option<T>, ApiError> {
    if !request.headers().contains_key(header::CONTENT_TYPE) {
        return Ok(None);
    }
    let Json(b) = <Json<T> as axum::extract::FromRequest<()>>::from_request(request, &()).await?;
    Ok(Some(b))
}

/// A request carrying `body` as JSON, for a v1 handler that reads its own body.
fn json_request(body: &serde_json::Value) -> Result<Request, ApiError> {
    Request::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .map_err(|e| Error::Internal(format!("cannot build a request: {e}")).into())
}

/// The seed's argument string split as a POSIX shell splits words (quotes and backslashes;
/// no expansion): the program gets them as they are, no shell runs.
pub fn split_args(line: &str) -> Result<Vec<String>, ApiError> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(x) => word.push(x),
                        None => return Err(ApiError::bad_request("args: a ' is not closed")),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(x @ ('"' | '\\' | '$' | '`')) => word.push(x),
                            Some('\n') => {}
                            Some(x) => {
                                word.push('\\');
                                word.push(x);
                            }
                            None => return Err(ApiError::bad_request("args: a \" is not closed")),
                        },
                        Some(x) => word.push(x),
                        None => return Err(ApiError::bad_request("args: a \" is not closed")),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some('\n') | None => {}
                    Some(x) => word.push(x),
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        out.push(word);
    }
    Ok(out)
}

/// The seed's `args`: one string (split like a shell's words) or, as v1 takes them, a list.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum SeedArgs {
    Line(String),
    List(Vec<String>),
}

impl SeedArgs {
    fn into_list(self) -> Result<Vec<String>, ApiError> {
        match self {
            SeedArgs::Line(l) => split_args(&l),
            SeedArgs::List(l) => Ok(l),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Data

/// Every key with its value, as one JSON object
///
/// The seed's `get_all_data()`; deprecated: use `GET /api/v1/data` (paged, with versions).
#[utoipa::path(
    get,
    path = "/api/data",
    tag = "compat",
    operation_id = "seed_data_all",
    description = "The seed's `GET /api/data`: every live key with its value, as one JSON object \
        (read from `GET /api/v1/data` page by page). Use `GET /api/v1/data`.",
    responses(
        (status = 200, description = "Every key and its value.", body = Object),
    )
)]
pub async fn data_all(State(state): State<AppState>) -> Result<Response, ApiError> {
    let mut out = String::from("{");
    let mut cursor: Option<String> = None;
    let mut first = true;
    loop {
        let page = state.kv.list("", cursor.as_deref(), PAGE, false).await?;
        for e in &page.items {
            let Some(v) = e.value.as_deref() else {
                continue;
            };
            if !first {
                out.push(',');
            }
            first = false;
            out.push_str(&json_string(&e.key));
            out.push(':');
            out.push_str(v);
        }
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    out.push('}');
    let mut resp = Response::new(Body::from(out));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

/// Stores a key's value
#[utoipa::path(
    post,
    path = "/api/data",
    tag = "compat",
    operation_id = "seed_data_store",
    description = "The seed's `POST /api/data` with `{\"key\":…,\"value\":…}`: `POST /api/v1/data` \
        itself (same body, same answer). Use `POST /api/v1/data`.",
    request_body(content = super::data::PostBody, content_type = "application/json"),
    responses(
        (status = 200, description = "Replaced.", body = crate::api::openapi::KvWritten),
        (status = 201, description = "Created.", body = crate::api::openapi::KvWritten),
        (status = 412, description = "An If-Match / If-None-Match condition does not hold (`precondition_failed`).", body = crate::api::openapi::ErrorResponse),
        (status = 507, description = "A kv quota is used up, or the disk is full (`quota_exceeded`, `insufficient_storage`).", body = crate::api::openapi::ErrorResponse),
    )
)]
pub async fn data_store(
    state: State<AppState>,
    who: Requester,
    headers: HeaderMap,
    body: Json<data::PostBody>,
) -> Result<Response, ApiError> {
    data::post(state, who, headers, body).await
}

/// A key's value
#[utoipa::path(
    get,
    path = "/api/data/{key}",
    tag = "compat",
    operation_id = "seed_data_get",
    description = "The seed's `GET /api/data/<key>`: `GET /api/v1/data/{key}` itself \
        (`{\"key\",\"value\",\"version\"}`). Use `GET /api/v1/data/{key}`.",
    params(("key" = String, Path, description = "The key (the rest of the path).")),
    responses(
        (status = 200, description = "The key, its value and version.", body = crate::api::openapi::KvEntry),
        (status = 304, description = "Not modified (If-None-Match matched)."),
        (status = 404, description = "No such key (`not_found`).", body = crate::api::openapi::ErrorResponse),
    )
)]
pub async fn data_get(
    state: State<AppState>,
    key: Result<Path<String>, PathRejection>,
    req: Request,
) -> Result<Response, ApiError> {
    data::get(state, key, req).await
}

/// Deletes a key
#[utoipa::path(
    delete,
    path = "/api/data/{key}",
    tag = "compat",
    operation_id = "seed_data_delete",
    description = "The seed's `DELETE /api/data/<key>`: `DELETE /api/v1/data/{key}` itself. \
        Use `DELETE /api/v1/data/{key}`.",
    params(("key" = String, Path, description = "The key (the rest of the path).")),
    responses(
        (status = 200, description = "Deleted: the version of the deletion.", body = crate::api::openapi::KvWritten),
        (status = 404, description = "No such key (`not_found`).", body = crate::api::openapi::ErrorResponse),
        (status = 412, description = "An If-Match condition does not hold (`precondition_failed`).", body = crate::api::openapi::ErrorResponse),
    )
)]
pub async fn data_delete(
    state: State<AppState>,
    who: Requester,
    key: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    data::delete(state, who, key, headers).await
}

// ---------------------------------------------------------------------------------------
// Files

/// Uploads files (a form)
#[utoipa::path(
    post,
    path = "/api/files/upload",
    tag = "compat",
    operation_id = "seed_files_upload",
    description = "The seed's `POST /api/files/upload` (a form whose `file` part holds the file): \
        `POST /api/v1/files` itself; the file is stored under its filename, replacing one of the \
        same name. Use `POST /api/v1/files`.",
    params(super::files::FormQuery),
    request_body(content = crate::api::openapi::FilesForm, content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "Stored; every file replaced one.", body = crate::api::openapi::StoredFiles),
        (status = 201, description = "Stored; at least one file is new.", body = crate::api::openapi::StoredFiles),
        (status = 412, description = "An If-Match / If-None-Match condition does not hold (`precondition_failed`).", body = crate::api::openapi::ErrorResponse),
        (status = 422, description = "The content's SHA-256 is not the one announced (`unprocessable`).", body = crate::api::openapi::ErrorResponse),
        (status = 507, description = "A files quota is used up, or the disk is full (`quota_exceeded`, `insufficient_storage`).", body = crate::api::openapi::ErrorResponse),
    )
)]
pub async fn files_upload(
    state: State<AppState>,
    who: Requester,
    q: Result<Query<files::FormQuery>, QueryRejection>,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, ApiError> {
    files::upload_form(state, who, q, headers, request).await
}

/// A file as the seed's `list_files()` described it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct SeedFile {
    /// Its path in the file store.
    pub filename: String,
    pub size: u64,
    /// Hex SHA-256 of the content.
    pub checksum: String,
    /// When it was first stored (RFC 3339).
    pub uploaded_at: String,
    /// When it was last replaced (RFC 3339).
    pub modified_at: String,
    pub content_type: String,
}

/// Every file
#[utoipa::path(
    get,
    path = "/api/files/list",
    tag = "compat",
    operation_id = "seed_files_list",
    description = "The seed's `GET /api/files/list`: every file, by name, as one list (read from \
        `GET /api/v1/files` page by page). Use `GET /api/v1/files`.",
    responses(
        (status = 200, description = "Every file.", body = Vec<SeedFile>),
    )
)]
pub async fn files_list(State(state): State<AppState>) -> Result<Response, ApiError> {
    let mut out = Vec::new();
    let mut cursor = None;
    loop {
        let page = state
            .files
            .list(None, crate::store::files::Sort::Name, PAGE, cursor)
            .await?;
        out.extend(page.items.into_iter().map(|m| SeedFile {
            filename: m.path,
            size: m.size,
            checksum: m.sha256,
            uploaded_at: m.created,
            modified_at: m.modified,
            content_type: m.content_type,
        }));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    Ok(axum::Json(out).into_response())
}

/// A file's content
#[utoipa::path(
    get,
    path = "/api/files/download/{filename}",
    tag = "compat",
    operation_id = "seed_files_download",
    description = "The seed's `GET /api/files/download/<filename>`: `GET /api/v1/files/{path}` \
        itself (ranges, ETag; `?download=1` for an attachment). Use `GET /api/v1/files/{path}`.",
    params(("filename" = String, Path, description = "The file's path (the rest of the URL path)."), super::files::GetQuery),
    responses(
        (status = 200, description = "The content (of the file's stored type), or the metadata with `?meta=1`.",
            content((crate::api::openapi::Binary = "application/octet-stream"), (crate::store::files::FileMeta = "application/json"))),
        (status = 206, description = "The range asked for.", content((crate::api::openapi::Binary = "application/octet-stream"))),
        (status = 304, description = "Not modified."),
        (status = 404, description = "No such file (`not_found`).", body = crate::api::openapi::ErrorResponse),
        (status = 416, description = "The range is outside the file (`range_not_satisfiable`).", body = crate::api::openapi::ErrorResponse),
    )
)]
pub async fn files_download(
    state: State<AppState>,
    method: Method,
    path: Result<Path<String>, PathRejection>,
    q: Result<Query<files::GetQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    files::download(state, method, path, q, headers).await
}

/// Deletes a file
#[utoipa::path(
    delete,
    path = "/api/files/delete/{filename}",
    tag = "compat",
    operation_id = "seed_files_delete",
    description = "The seed's `DELETE /api/files/delete/<filename>`: `DELETE /api/v1/files/{path}` \
        itself (204). Use `DELETE /api/v1/files/{path}`.",
    params(("filename" = String, Path, description = "The file's path (the rest of the URL path).")),
    responses(
        (status = 204, description = "Deleted."),
        (status = 404, description = "No such file (`not_found`).", body = crate::api::openapi::ErrorResponse),
    )
)]
pub async fn files_delete(
    state: State<AppState>,
    who: Requester,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    files::delete(state, who, path).await
}

/// The file store's figures and quotas
#[utoipa::path(
    get,
    path = "/api/files/storage-info",
    tag = "compat",
    operation_id = "seed_files_storage_info",
    description = "The seed's `GET /api/files/storage-info`: `GET /api/v1/files:usage` itself. \
        Use `GET /api/v1/files:usage`.",
    responses((status = 200, description = "The store's figures and quotas.", body = crate::store::files::Usage))
)]
pub async fn files_storage_info(state: State<AppState>) -> Result<Response, ApiError> {
    files::usage(state).await
}

// ---------------------------------------------------------------------------------------
// Programs

/// Uploads a program
#[utoipa::path(
    post,
    path = "/api/programs/upload",
    tag = "compat",
    operation_id = "seed_programs_upload",
    description = "The seed's `POST /api/programs/upload` (a form whose `file` part is the \
        program): `POST /api/v1/programs` itself. Use `POST /api/v1/programs`.",
    params(super::programs::UploadQuery),
    request_body(content = crate::api::openapi::ProgramForm, content_type = "multipart/form-data"),
    responses(
        (status = 201, description = "Stored.", body = crate::store::programs::Program),
        (status = 422, description = "A ZIP that cannot be taken in, or a program against the limits (`unprocessable`).", body = crate::api::openapi::ErrorResponse),
        (status = 507, description = "The programs quota is used up, or the disk is full (`quota_exceeded`, `insufficient_storage`).", body = crate::api::openapi::ErrorResponse),
    )
)]
pub async fn programs_upload(
    state: State<AppState>,
    who: Requester,
    headers: HeaderMap,
    q: Result<Query<programs::UploadQuery>, QueryRejection>,
    limit: Option<Extension<BodyLimitNote>>,
    request: Request,
) -> Result<Response, ApiError> {
    programs::upload(state, who, headers, q, limit, request).await
}

/// Uploads a ZIP project
#[utoipa::path(
    post,
    path = "/api/programs/upload-zip",
    tag = "compat",
    operation_id = "seed_programs_upload_zip",
    description = "The seed's `POST /api/programs/upload-zip` (a form whose `file` part is the \
        ZIP and whose `project_name` part, or `?name=`, or else the file's name names the project): `POST /api/v1/programs` itself. \
        Use `POST /api/v1/programs`.",
    params(super::programs::UploadQuery),
    request_body(content = crate::api::openapi::ProgramForm, content_type = "multipart/form-data"),
    responses(
        (status = 201, description = "Stored.", body = crate::store::programs::Program),
        (status = 422, description = "A ZIP that cannot be taken in, or a program against the limits (`unprocessable`).", body = crate::api::openapi::ErrorResponse),
        (status = 507, description = "The programs quota is used up, or the disk is full (`quota_exceeded`, `insufficient_storage`).", body = crate::api::openapi::ErrorResponse),
    )
)]
pub async fn programs_upload_zip(
    state: State<AppState>,
    who: Requester,
    headers: HeaderMap,
    q: Result<Query<programs::UploadQuery>, QueryRejection>,
    limit: Option<Extension<BodyLimitNote>>,
    request: Request,
) -> Result<Response, ApiError> {
    programs::upload(state, who, headers, q, limit, request).await
}

/// The programs
#[utoipa::path(
    get,
    path = "/api/programs/list",
    tag = "compat",
    operation_id = "seed_programs_list",
    description = "The seed's `GET /api/programs/list`: `GET /api/v1/programs` itself (a page). \
        Use `GET /api/v1/programs`.",
    params(super::PageQuery),
    responses(
        (status = 200, description = "A page of programs.", body = crate::api::openapi::Page<crate::store::programs::Program>),
    )
)]
pub async fn programs_list(
    state: State<AppState>,
    q: Result<Query<super::PageQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    programs::list(state, q).await
}

/// The id of the program the seed names by `name`: a program id, else the one program of that
/// name (404 for none, 409 naming the ids when several have it).
async fn program_id(state: &AppState, name: &str) -> Result<String, ApiError> {
    if crate::store::programs::valid_id(name) {
        match state.programs.get(name).await {
            Ok(p) => return Ok(p.id),
            Err(Error::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let mut found = Vec::new();
    let mut cursor = None;
    loop {
        let page = state.programs.list(PAGE, cursor).await?;
        found.extend(
            page.items
                .into_iter()
                .filter(|p| p.name == name)
                .map(|p| p.id),
        );
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    match found.len() {
        0 => Err(ApiError::not_found(format!("no program named {name:?}"))),
        1 => Ok(found.remove(0)),
        _ => Err(ApiError::conflict(format!(
            "{} programs are named {name:?} ({}): name one by its id",
            found.len(),
            found.join(", ")
        ))),
    }
}

fn name_of(p: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    p.map(|Path(n)| n)
        .map_err(|e| ApiError::bad_request(format!("invalid program name: {}", e.body_text())))
}

/// The body of the seed's program runs: its arguments.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SeedRunBody {
    /// The arguments: one string, split into words as a shell splits them (quotes,
    /// backslashes; nothing expanded, no shell runs), or a list.
    args: Option<SeedArgs>,
}

/// Runs a program
#[utoipa::path(
    post,
    path = "/api/programs/execute/{filename}",
    tag = "compat",
    operation_id = "seed_programs_execute",
    description = "The seed's `POST /api/programs/execute/<filename>` with `{\"args\": \"…\"}`: \
        `POST /api/v1/programs/{id}/runs` with the arguments split into words, in the sandbox. \
        The program is named by its id or its name. The answer's `exit_code` is the seed's \
        `return_code`, `wall_ms` its `execution_time` (in milliseconds). Use \
        `POST /api/v1/programs/{id}/runs`.",
    params(("filename" = String, Path, description = "The program's id or name.")),
    request_body(content = Option<SeedRunBody>, content_type = "application/json"),
    responses(
        (status = 200, description = "The run's outcome.", body = crate::api::openapi::ExecOutcome),
        (status = 404, description = "No such program (`not_found`).", body = crate::api::openapi::ErrorResponse),
        (status = 409, description = "Several programs have that name, or the program has no main file yet (`conflict`).", body = crate::api::openapi::ErrorResponse),
        (status = 422, description = "A main file that cannot run here (`unprocessable`).", body = crate::api::openapi::ErrorResponse),
    )
)]
pub async fn programs_execute(
    State(state): State<AppState>,
    who: Requester,
    name: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, ApiError> {
    let id = program_id(&state, &name_of(name)?).await?;
    let body: Option<SeedRunBody> = optional_json(request).await?;
    let args = match body.and_then(|b| b.args) {
        Some(a) => a.into_list()?,
        None => Vec::new(),
    };
    let run = json_request(&json!({ "args": args }))?;
    programs::run(State(state), who, Ok(Path(id)), headers, run).await
}

/// Runs a program in a terminal session
#[utoipa::path(
    post,
    path = "/api/programs/execute-terminal/{id}",
    tag = "compat",
    operation_id = "seed_programs_execute_terminal",
    description = "The seed's `POST /api/programs/execute-terminal/<id>`: \
        `POST /api/v1/programs/{id}/terminals` (a terminal session; drive it with \
        `/api/execute/send-input` or the session's `urls`). The program is named by its id or \
        its name. Use `POST /api/v1/programs/{id}/terminals`.",
    params(("id" = String, Path, description = "The program's id or name.")),
    request_body(content = Option<SeedRunBody>, content_type = "application/json"),
    responses(
        (status = 201, description = "The session, with its URLs.", body = crate::api::openapi::TerminalCreated),
        (status = 404, description = "No such program (`not_found`).", body = crate::api::openapi::ErrorResponse),
        (status = 409, description = "Several programs have that name, or the program has no main file yet (`conflict`).", body = crate::api::openapi::ErrorResponse),
        (status = 422, description = "A main file that cannot run here (`unprocessable`).", body = crate::api::openapi::ErrorResponse),
    )
)]
pub async fn programs_execute_terminal(
    State(state): State<AppState>,
    who: Requester,
    name: Result<Path<String>, PathRejection>,
    request: Request,
) -> Result<Response, ApiError> {
    let id = program_id(&state, &name_of(name)?).await?;
    let body: Option<SeedRunBody> = optional_json(request).await?;
    let args = match body.and_then(|b| b.args) {
        Some(a) => a.into_list()?,
        None => Vec::new(),
    };
    let create = json_request(&json!({ "args": args }))?;
    terminals::create_for_program(State(state), who, Ok(Path(id)), create).await
}

/// Deletes a program
#[utoipa::path(
    delete,
    path = "/api/programs/delete/{filename}",
    tag = "compat",
    operation_id = "seed_programs_delete",
    description = "The seed's `DELETE /api/programs/delete/<filename>`: \
        `DELETE /api/v1/programs/{id}` (204). The program is named by its id or its name. Use \
        `DELETE /api/v1/programs/{id}`.",
    params(("filename" = String, Path, description = "The program's id or name."), super::programs::DeleteQuery),
    responses(
        (status = 204, description = "Deleted."),
        (status = 404, description = "No such program (`not_found`).", body = crate::api::openapi::ErrorResponse),
        (status = 409, description = "Several programs have that name, or the program runs (without `force`) (`conflict`).", body = crate::api::openapi::ErrorResponse),
    )
)]
pub async fn programs_delete(
    State(state): State<AppState>,
    who: Requester,
    name: Result<Path<String>, PathRejection>,
    q: Result<Query<programs::DeleteQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let id = program_id(&state, &name_of(name)?).await?;
    programs::delete(State(state), who, Ok(Path(id)), q).await
}

// ---------------------------------------------------------------------------------------
// Commands and interactive sessions

/// A shell command line, as the seed's `/api/execute` and `/api/execute/interactive` take it.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SeedCommand {
    /// Run by /bin/sh -c in the sandbox (not only blanks).
    #[schema(pattern = "\\S")]
    command: String,
}

/// Runs a command
#[utoipa::path(
    post,
    path = "/api/execute",
    tag = "compat",
    operation_id = "seed_execute",
    description = "The seed's `POST /api/execute` with `{\"command\": \"…\"}`: `POST /api/v1/exec` \
        with that command (run by /bin/sh -c in the sandbox). The answer's `exit_code` is the \
        seed's `return_code`. Use `POST /api/v1/exec`.",
    request_body(content = SeedCommand, content_type = "application/json"),
    responses(
        (status = 200, description = "The command's outcome.", body = crate::api::openapi::ExecOutcome),
        (status = 422, description = "A limit or timeout above what is allowed (`unprocessable`).", body = crate::api::openapi::ErrorResponse),
    )
)]
pub async fn execute(
    state: State<AppState>,
    who: Requester,
    headers: HeaderMap,
    Json(body): Json<SeedCommand>,
) -> Result<Response, ApiError> {
    let v1: exec::ExecBody = serde_json::from_value(json!({ "command": body.command }))
        .map_err(|e| Error::Internal(format!("cannot translate the seed's command: {e}")))?;
    exec::run(state, who, headers, Json(v1)).await
}

/// Starts an interactive session
#[utoipa::path(
    post,
    path = "/api/execute/interactive",
    tag = "compat",
    operation_id = "seed_execute_interactive",
    description = "The seed's `POST /api/execute/interactive` with `{\"command\": \"…\"}`: \
        `POST /api/v1/terminals` with that command (a terminal session in the sandbox). The \
        answer's `id` is the session id the seed's `send-input` and `terminate-session` take. \
        Use `POST /api/v1/terminals`.",
    request_body(content = SeedCommand, content_type = "application/json"),
    responses(
        (status = 201, description = "The session, with its URLs.", body = crate::api::openapi::TerminalCreated),
        (status = 422, description = "A limit above its maximum (`unprocessable`).", body = crate::api::openapi::ErrorResponse),
        (status = 503, description = "Terminals are turned off, or the sandbox could not start the job (`unavailable`).", body = crate::api::openapi::ErrorResponse),
    )
)]
pub async fn execute_interactive(
    state: State<AppState>,
    who: Requester,
    Json(body): Json<SeedCommand>,
) -> Result<Response, ApiError> {
    let v1: terminals::CreateBody = serde_json::from_value(json!({ "command": body.command }))
        .map_err(|e| Error::Internal(format!("cannot translate the seed's command: {e}")))?;
    terminals::create(state, who, Json(v1)).await
}

/// A line for an interactive session.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SeedInput {
    /// The session's id (`id` of the start's answer).
    session_id: String,
    /// Typed followed by a newline (as the seed's `sendline`).
    input: String,
}

/// Sends a line to an interactive session
#[utoipa::path(
    post,
    path = "/api/execute/send-input",
    tag = "compat",
    operation_id = "seed_execute_send_input",
    description = "The seed's `POST /api/execute/send-input` with `{\"session_id\", \"input\"}`: \
        `POST /api/v1/terminals/{id}/input` with the input and a newline (204; the output is at \
        `GET /api/v1/terminals/{id}/output`). Use `POST /api/v1/terminals/{id}/input`.",
    request_body(content = SeedInput, content_type = "application/json"),
    responses(
        (status = 204, description = "Typed."),
        (status = 404, description = "No such session (`not_found`).", body = crate::api::openapi::ErrorResponse),
        (status = 409, description = "The session has ended, or an attached client holds the keyboard (`conflict`).", body = crate::api::openapi::ErrorResponse),
    )
)]
pub async fn execute_send_input(
    state: State<AppState>,
    who: Requester,
    Json(body): Json<SeedInput>,
) -> Result<Response, ApiError> {
    let mut line = body.input;
    line.push('\n');
    terminals::input(state, who, Ok(Path(body.session_id)), Ok(Bytes::from(line))).await
}

/// The session an interactive route names.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SeedSession {
    session_id: String,
}

/// Ends an interactive session
#[utoipa::path(
    post,
    path = "/api/execute/terminate-session",
    tag = "compat",
    operation_id = "seed_execute_terminate_session",
    description = "The seed's `POST /api/execute/terminate-session` with `{\"session_id\"}`: \
        `DELETE /api/v1/terminals/{id}` (the session as it ended). Use \
        `DELETE /api/v1/terminals/{id}`.",
    request_body(content = SeedSession, content_type = "application/json"),
    responses(
        (status = 200, description = "The session, ended.", body = crate::api::openapi::TerminalCreated),
        (status = 404, description = "No such session (`not_found`).", body = crate::api::openapi::ErrorResponse),
    )
)]
pub async fn execute_terminate_session(
    state: State<AppState>,
    who: Requester,
    Json(body): Json<SeedSession>,
) -> Result<Response, ApiError> {
    terminals::delete(state, who, Ok(Path(body.session_id))).await
}

// ---------------------------------------------------------------------------------------
// Tunnels

/// A tunnel's state: the provider's item of `GET /api/v1/tunnels`.
async fn tunnel_status(state: AppState, p: Provider) -> Result<Response, ApiError> {
    tunnels::enabled(&state)?;
    let item = state
        .tunnels
        .list()
        .items
        .into_iter()
        .find(|t| t.provider == p)
        .ok_or_else(|| Error::Internal(format!("no {} in the tunnel list", p.as_str())))?;
    Ok(axum::Json(item).into_response())
}

/// The three routes of one of the seed's tunnel providers.
macro_rules! seed_tunnel {
    ($name:literal, $start:ident, $stop:ident, $status:ident) => {
        #[doc = concat!("Starts the ", $name, " tunnel")]
        #[utoipa::path(
            post,
            path = concat!("/api/", $name, "/start"),
            tag = "compat",
            operation_id = concat!("seed_", $name, "_start"),
            description = concat!("The seed's `POST /api/", $name, "/start`: `POST /api/v1/tunnels/",
                $name, "/start` itself (options as a JSON object, or no body). Use `POST /api/v1/tunnels/{provider}/start`."),
            request_body(content = Object, description = "The provider's options.", content_type = "application/json"),
            responses(
                (status = 200, description = "The tunnel, starting (or already up).", body = crate::ops::tunnels::TunnelView),
                (status = 403, description = "Tunnels are off in the config (`forbidden`).", body = crate::api::openapi::ErrorResponse),
                (status = 422, description = "The provider cannot run here: its client is missing or a setting is not set (`unprocessable`).", body = crate::api::openapi::ErrorResponse),
            )
        )]
        pub async fn $start(
            state: State<AppState>,
            who: Requester,
            headers: HeaderMap,
            body: Bytes,
        ) -> Result<Response, ApiError> {
            tunnels::start(state, Path($name.to_owned()), who, headers, body).await
        }

        #[doc = concat!("Stops the ", $name, " tunnel")]
        #[utoipa::path(
            post,
            path = concat!("/api/", $name, "/stop"),
            tag = "compat",
            operation_id = concat!("seed_", $name, "_stop"),
            description = concat!("The seed's `POST /api/", $name, "/stop`: `POST /api/v1/tunnels/",
                $name, "/stop` itself. Use `POST /api/v1/tunnels/{provider}/stop`."),
            responses(
                (status = 200, description = "The tunnel, stopped.", body = crate::ops::tunnels::TunnelView),
                (status = 403, description = "Tunnels are off in the config (`forbidden`).", body = crate::api::openapi::ErrorResponse),
            )
        )]
        pub async fn $stop(state: State<AppState>, who: Requester) -> Result<Response, ApiError> {
            tunnels::stop(state, Path($name.to_owned()), who).await
        }

        #[doc = concat!("The ", $name, " tunnel's state")]
        #[utoipa::path(
            get,
            path = concat!("/api/", $name, "/status"),
            tag = "compat",
            operation_id = concat!("seed_", $name, "_status"),
            description = concat!("The seed's `GET /api/", $name, "/status`: the `", $name,
                "` item of `GET /api/v1/tunnels`. Use `GET /api/v1/tunnels`."),
            responses(
                (status = 200, description = "The tunnel.", body = crate::ops::tunnels::TunnelView),
                (status = 403, description = "Tunnels are off in the config (`forbidden`).", body = crate::api::openapi::ErrorResponse),
            )
        )]
        pub async fn $status(State(state): State<AppState>) -> Result<Response, ApiError> {
            let p = Provider::parse($name)
                .ok_or_else(|| Error::Internal(format!("no tunnel provider {}", $name)))?;
            tunnel_status(state, p).await
        }
    };
}

seed_tunnel!("ngrok", ngrok_start, ngrok_stop, ngrok_status);
seed_tunnel!(
    "localtunnel",
    localtunnel_start,
    localtunnel_stop,
    localtunnel_status
);
seed_tunnel!(
    "cloudflared",
    cloudflared_start,
    cloudflared_stop,
    cloudflared_status
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_split_like_a_shell() {
        let s = |l: &str| split_args(l).unwrap();
        assert_eq!(s(""), Vec::<String>::new());
        assert_eq!(s("  a  b "), vec!["a", "b"]);
        assert_eq!(s("'a b' \"c d\" e\\ f"), vec!["a b", "c d", "e f"]);
        assert_eq!(s("x'' \"\""), vec!["x", ""]);
        assert_eq!(s("\"a\\\"b\" $HOME"), vec!["a\"b", "$HOME"]);
        assert!(split_args("'open").is_err());
        assert!(split_args("\"open").is_err());
    }

    #[test]
    fn every_alias_has_the_guard_of_its_v1_route() {
        let table = super::super::routes::table();
        let aliases: Vec<&Route> = table.iter().filter(|r| r.alias_of.is_some()).collect();
        // 4 data, 5 files, 6 programs, 4 execute, 9 tunnels.
        assert_eq!(aliases.len(), 28);
        for a in aliases {
            let (m, p) = a.alias_of.clone().unwrap();
            let v1 = table
                .iter()
                .find(|r| r.method == m && r.path == p && r.alias_of.is_none())
                .unwrap();
            assert_eq!(a.access, v1.access, "{}", a.path);
            assert_eq!(a.class, v1.class, "{}", a.path);
            if a.path == "/api/execute/send-input" {
                assert_eq!(a.accepts, super::super::routes::JSON, "the seed sends JSON");
            } else {
                assert_eq!(a.accepts, v1.accepts, "{}", a.path);
            }
            assert_eq!(a.body_limit, v1.body_limit, "{}", a.path);
            assert_eq!(a.own_timeout, v1.own_timeout, "{}", a.path);
            assert!(a.path.starts_with("/api/") && !a.path.starts_with("/api/v1/"));
        }
    }
}
