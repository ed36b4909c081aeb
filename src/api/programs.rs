//! `/api/v1/programs`: upload (a single file as the raw body with `?name=` or as
//! `multipart/form-data`, or a ZIP project),
//! list, get, choose the main file, run (JSON result or Server-Sent Events, as
//! `/api/v1/exec`), run history, delete. Thin: the rules live in `crate::store::programs`.

use std::time::Duration;

use axum::Extension;
use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::json;

use super::access::BodyLimitNote;
use super::error::ApiError;
use super::exec::{
    DataFields, FileBody, LimitsBody, MountBody, OutputBody, accepted, job_data, result_json,
    stdin_bytes, stream_job, wants_stream,
};
use super::extract::Json;
use super::extract::Requester;
use super::terminals::viewer_of;
use crate::api::state::AppState;
use crate::jobs::data::KeepOutputs;
use crate::store::audit::Caller;
use crate::store::programs::{RunRequest, UploadMeta};

fn id_of(p: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    p.map(|Path(id)| id)
        .map_err(|e| ApiError::bad_request(format!("invalid program id: {}", e.body_text())))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UploadQuery {
    /// The program's name (a single file needs it unless sent as a form part with a filename;
    /// a `.zip` name makes it a project).
    name: Option<String>,
    /// The project's main file.
    main: Option<String>,
}

fn is_zip(headers: &HeaderMap, name: Option<&str>) -> bool {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    ct == "application/zip"
        || ct == "application/x-zip-compressed"
        || name.is_some_and(|n| n.to_ascii_lowercase().ends_with(".zip"))
}

/// True when the body stopped because it passed the route's size limit.
fn over_limit(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cur = err.source();
    }
    false
}

fn too_large(limit: &Option<Extension<BodyLimitNote>>) -> ApiError {
    let what = limit
        .as_ref()
        .map(|Extension(n)| n.0.to_string())
        .unwrap_or_else(|| "programs.max-upload-size".into());
    ApiError::payload_too_large(format!("the upload is larger than {what}"))
}

fn is_multipart(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim()
                .to_ascii_lowercase()
                .starts_with("multipart/form-data")
        })
}

/// `multipart/form-data`: one `file` part (its filename names the program unless `?name=` or
/// a `name` part does; a `.zip` filename or a part of type application/zip makes it a
/// project), an optional `main` part and an optional `name` part (`project_name`, the seed's
/// spelling, is the same).
async fn upload_multipart(
    state: &AppState,
    caller: Caller,
    q: UploadQuery,
    limit: Option<Extension<BodyLimitNote>>,
    request: axum::extract::Request,
) -> Result<Response, ApiError> {
    use axum::extract::FromRequest;
    let mut form = axum::extract::Multipart::from_request(request, &())
        .await
        .map_err(|e| ApiError::bad_request(format!("invalid multipart body: {}", e.body_text())))?;
    let part_error = |e: axum::extract::multipart::MultipartError| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            too_large(&limit)
        } else {
            ApiError::bad_request(format!("invalid multipart body: {}", e.body_text()))
        }
    };
    let mut main = q.main;
    // The program's name from the form (`name`, or `project_name` as the seed's upload-zip
    // form spells it); `?name=` wins, the file part's filename is the fallback.
    let mut form_name: Option<String> = None;
    let mut stored: Option<(crate::store::programs::Staging, Option<String>, bool)> = None;
    while let Some(mut field) = form.next_field().await.map_err(part_error)? {
        match field.name() {
            Some("main") => {
                let max = state.live.get().programs.max_name_length;
                main = Some(small_field(&mut field, "main", max, part_error).await?);
            }
            Some(n @ ("name" | "project_name")) => {
                let n = n.to_owned();
                let max = state.live.get().programs.max_name_length;
                form_name = Some(small_field(&mut field, &n, max, part_error).await?);
            }
            Some("file") => {
                if stored.is_some() {
                    return Err(ApiError::bad_request("give exactly one file part"));
                }
                let file_name = field.file_name().map(str::to_owned);
                let zip = field
                    .content_type()
                    .is_some_and(|c| c == "application/zip" || c == "application/x-zip-compressed")
                    || q.name
                        .as_deref()
                        .or(file_name.as_deref())
                        .is_some_and(|n| n.to_ascii_lowercase().ends_with(".zip"));
                let mut staging = state.programs.begin_upload().await?;
                while let Some(chunk) = field.chunk().await.map_err(part_error)? {
                    staging.write(&chunk).await?;
                }
                stored = Some((staging, file_name, zip));
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown form field {:?}: send file (and optionally main and name)",
                    other.unwrap_or("")
                )));
            }
        }
    }
    let Some((staging, file_name, zip)) = stored else {
        return Err(ApiError::bad_request("the form has no file part"));
    };
    let name = q.name.or(form_name).or(file_name).ok_or_else(|| {
        ApiError::bad_request("the file part needs a filename (or pass ?name= or a name field)")
    })?;
    let program = state
        .programs
        .finish_upload(staging, UploadMeta { name, zip, main }, &caller)
        .await?;
    Ok((StatusCode::CREATED, axum::Json(program)).into_response())
}

/// A form field that is not a file, read up to `max` bytes: past that the upload is refused
/// (413) naming the field, so such a field never takes more memory than its limit.
async fn small_field(
    field: &mut axum::extract::multipart::Field<'_>,
    name: &str,
    max: usize,
    part_error: impl Fn(axum::extract::multipart::MultipartError) -> ApiError,
) -> Result<String, ApiError> {
    let mut buf = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(&part_error)? {
        if buf.len() + chunk.len() > max {
            return Err(crate::error::Error::TooLarge(format!(
                "the form field {name} is longer than programs.max-name-length ({max} bytes)"
            ))
            .into());
        }
        buf.extend_from_slice(&chunk);
    }
    String::from_utf8(buf)
        .map_err(|_| ApiError::bad_request(format!("the form field {name} is not UTF-8 text")))
}

#[utoipa::path(
    post,
    path = "/api/v1/programs",
    tag = "programs",
    operation_id = "programs_upload",
    params(UploadQuery),
    request_body(
        description = "A ZIP project (application/zip), a single file as the raw body (with `?name=`), or a form with one `file` part and an optional `main` part.",
        content(
            (crate::api::openapi::Binary = "application/zip"),
            (crate::api::openapi::Binary = "application/x-zip-compressed"),
            (crate::api::openapi::Binary = "application/octet-stream"),
            (crate::api::openapi::Binary = "text/plain"),
            (crate::api::openapi::Binary = "text/x-python"),
            (crate::api::openapi::Binary = "text/x-shellscript"),
            (crate::api::openapi::Binary = "application/x-sh"),
            (crate::api::openapi::Binary = "application/javascript"),
            (crate::api::openapi::Binary = "text/javascript"),
            (crate::api::openapi::ProgramForm = "multipart/form-data"),
        )
    ),
    responses(
        (status = 201, description = "The program, stored.", body = crate::store::programs::Program),
        (status = 400, description = "No name, a bad form, or a bad ZIP entry name (`bad_request`).", body = crate::api::openapi::ErrorResponse),
        (status = 413, description = "Larger than programs.max-upload-size, or a form field past programs.max-name-length (`payload_too_large`).", body = crate::api::openapi::ErrorResponse),
        (status = 422, description = "The ZIP cannot be read, or its main file cannot be run here (`unprocessable`).", body = crate::api::openapi::ErrorResponse),
    )
)]
pub async fn upload(
    State(state): State<AppState>,
    Requester { caller, .. }: Requester,
    headers: HeaderMap,
    q: Result<Query<UploadQuery>, QueryRejection>,
    limit: Option<Extension<BodyLimitNote>>,
    request: axum::extract::Request,
) -> Result<Response, ApiError> {
    let Query(q) = q?;
    if is_multipart(&headers) {
        return upload_multipart(&state, caller, q, limit, request).await;
    }
    let body: Body = request.into_body();
    let zip = is_zip(&headers, q.name.as_deref());
    let name = match (q.name, zip) {
        (Some(n), _) => n,
        (None, true) => "project.zip".to_owned(),
        (None, false) => {
            return Err(ApiError::bad_request(
                "a single-file upload needs ?name=FILE (a ZIP project is sent as Content-Type: application/zip)",
            ));
        }
    };
    let mut staging = state.programs.begin_upload().await?;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            if over_limit(&e) {
                too_large(&limit)
            } else {
                ApiError::bad_request(format!("cannot read the upload: {e}"))
            }
        })?;
        staging.write(&chunk).await?;
    }
    let meta = UploadMeta {
        name,
        zip,
        main: q.main,
    };
    let program = state.programs.finish_upload(staging, meta, &caller).await?;
    Ok((StatusCode::CREATED, axum::Json(program)).into_response())
}

#[utoipa::path(
    get,
    path = "/api/v1/programs",
    tag = "programs",
    operation_id = "programs_list",
    params(super::PageQuery),
    responses(
        (status = 200, description = "A page of programs.", body = crate::api::openapi::Page<crate::store::programs::Program>),
        (status = 400, description = "A bad limit, cursor or other query parameter (`bad_request`).", body = crate::api::openapi::ErrorResponse),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    q: Result<Query<super::PageQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q?;
    let limit = super::page_limit(q.limit)?;
    let page = state.programs.list(limit, q.cursor).await?;
    Ok(axum::Json(json!({"items": page.items, "next_cursor": page.next_cursor})).into_response())
}

#[utoipa::path(
    get,
    path = "/api/v1/programs/{id}",
    tag = "programs",
    operation_id = "programs_get",
    params(("id" = String, Path, description = "The program's id.")),
    responses(
        (status = 200, description = "The program.", body = crate::store::programs::Program),
        (status = 400, description = "Not a program id (`bad_request`).", body = crate::api::openapi::ErrorResponse),
        (status = 404, description = "No such program (`not_found`).", body = crate::api::openapi::ErrorResponse),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = id_of(id)?;
    Ok(axum::Json(state.programs.get(&id).await?).into_response())
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeleteQuery {
    /// Kill the program's runs in progress instead of refusing (409).
    force: Option<bool>,
}

#[utoipa::path(
    delete,
    path = "/api/v1/programs/{id}",
    tag = "programs",
    operation_id = "programs_delete",
    params(("id" = String, Path, description = "The program's id."), DeleteQuery),
    responses(
        (status = 204, description = "Deleted."),
        (status = 400, description = "Not a program id, or a bad query (`bad_request`).", body = crate::api::openapi::ErrorResponse),
        (status = 404, description = "No such program (`not_found`).", body = crate::api::openapi::ErrorResponse),
        (status = 409, description = "Runs are in progress (see `?force=true`), or it is being deleted (`conflict`).", body = crate::api::openapi::ErrorResponse),
    )
)]
pub async fn delete(
    State(state): State<AppState>,
    Requester { caller, .. }: Requester,
    id: Result<Path<String>, PathRejection>,
    q: Result<Query<DeleteQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let id = id_of(id)?;
    let Query(q) = q?;
    state
        .programs
        .delete(&id, q.force.unwrap_or(false), &caller)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MainBody {
    main: String,
}

#[utoipa::path(
    put,
    path = "/api/v1/programs/{id}/main",
    tag = "programs",
    operation_id = "programs_set_main",
    params(("id" = String, Path, description = "The program's id.")),
    request_body(content = MainBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The program with its new main file.", body = crate::store::programs::Program),
        (status = 400, description = "Not a file of the program, or not the JSON asked for (`bad_request`, `invalid_json`).", body = crate::api::openapi::ErrorResponse),
        (status = 404, description = "No such program (`not_found`).", body = crate::api::openapi::ErrorResponse),
        (status = 422, description = "The file cannot be run here (`unprocessable`).", body = crate::api::openapi::ErrorResponse),
    )
)]
pub async fn set_main(
    State(state): State<AppState>,
    Requester { caller, .. }: Requester,
    id: Result<Path<String>, PathRejection>,
    Json(body): Json<MainBody>,
) -> Result<Response, ApiError> {
    let id = id_of(id)?;
    let p = state.programs.set_main(&id, &body.main, &caller).await?;
    Ok(axum::Json(p).into_response())
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunBody {
    /// Arguments after the main file, passed as they are (no shell).
    args: Option<Vec<String>>,
    stdin: Option<String>,
    stdin_base64: Option<String>,
    timeout_ms: Option<u64>,
    limits: Option<LimitsBody>,
    profile: Option<String>,
    /// More file-store folders and programs to show the job (its own program is at
    /// `/program`).
    mounts: Option<Vec<MountBody>>,
    /// Directories whose files are committed to the file store when the job ends.
    outputs: Option<Vec<OutputBody>>,
    /// `on_success` (default: status `ok` only) or `on_exit` (also `nonzero_exit`).
    keep_outputs: Option<KeepOutputs>,
    /// Files placed in `/work` before the job starts.
    files: Option<Vec<FileBody>>,
    /// `false`: run in the background; the answer is 202 with the execution's id and
    /// `Location` (default `true`: the answer is the result).
    wait: Option<bool>,
}

#[utoipa::path(
    post,
    path = "/api/v1/programs/{id}/runs",
    tag = "programs",
    operation_id = "programs_run",
    description = "Runs the program's main file in the sandbox; the body is optional. With \
        `Accept: text/event-stream` the answer is a stream as for `POST /api/v1/exec`.",
    params(("id" = String, Path, description = "The program's id.")),
    request_body(content = Option<RunBody>, content_type = "application/json"),
    responses(
        (status = 200, description = "The job ran (whatever its exit status).",
            content(
                (crate::api::openapi::ExecOutcome = "application/json"),
                (crate::api::openapi::SseEvent = "text/event-stream"),
            )),
        (status = 202, description = "`wait: false`: the run is queued (or already running) in the background; follow `Location`.",
            body = crate::api::openapi::ExecAccepted,
            headers(("Location" = String, description = "`/api/v1/executions/{id}`."))),
        (status = 400, description = "Not a program id, both stdin fields, bad base64, not the JSON asked for, a mount point or output path against the rules, a bad folder or inline file name (`bad_request`, `invalid_json`, `invalid_path`).", body = crate::api::openapi::ErrorResponse),
        (status = 403, description = "A mount the token's scopes do not allow: `read` for read-only and program mounts, `write` for read-write ones (`forbidden`).", body = crate::api::openapi::ErrorResponse),
        (status = 404, description = "No such program, or a program mount names none (`not_found`).", body = crate::api::openapi::ErrorResponse),
        (status = 409, description = "The program has no main file yet, or is being deleted (`conflict`).", body = crate::api::openapi::ErrorResponse),
        (status = 422, description = "A limit or timeout above what is allowed, an unknown profile, a main file that cannot run here, or more mounts, outputs or inline files (count or bytes) than `[exec]` allows (`unprocessable`).", body = crate::api::openapi::ErrorResponse),
        (status = 507, description = "Outputs asked for while the file store has no room left (`files.max-total-size` or `storage.min-free-disk`).", body = crate::api::openapi::ErrorResponse),
        (status = 429, description = "Every job slot and queue place is taken, or the rate limit (`rate_limited`).", body = crate::api::openapi::ErrorResponse,
            headers(("Retry-After" = String, description = "Seconds to wait before retrying."))),
    )
)]
pub async fn run(
    State(state): State<AppState>,
    Requester { caller, actor, .. }: Requester,
    id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    request: axum::extract::Request,
) -> Result<Response, ApiError> {
    let id = id_of(id)?;
    // Every field is optional, and so is the body itself.
    let body = if request.headers().contains_key(header::CONTENT_TYPE) {
        let Json(b) =
            <Json<RunBody> as axum::extract::FromRequest<()>>::from_request(request, &()).await?;
        b
    } else {
        RunBody::default()
    };
    let fields = DataFields {
        mounts: body.mounts,
        outputs: body.outputs,
        keep_outputs: body.keep_outputs,
        files: body.files,
    };
    let data = job_data(&state, &actor, &caller, fields).await?;
    let req = RunRequest {
        args: body.args.unwrap_or_default(),
        stdin: stdin_bytes(body.stdin, body.stdin_base64)?,
        timeout: body.timeout_ms.map(Duration::from_millis),
        limits: body.limits.unwrap_or_default().into(),
        profile: body.profile,
        data,
        owner: viewer_of(&actor).owner,
    };
    if body.wait == Some(false) {
        let record = state.programs.submit(&id, req, &caller).await?;
        return Ok(accepted(&record));
    }
    if wants_stream(&headers) {
        // Refuse an unknown program before the stream starts.
        state.programs.get(&id).await?;
        let rid = caller.request_id.clone();
        return Ok(stream_job(rid, move |tx| async move {
            state.programs.run(&id, req, &caller, Some(tx)).await
        }));
    }
    let result = state.programs.run(&id, req, &caller, None).await?;
    Ok(axum::Json(result_json(&result, true)).into_response())
}

#[utoipa::path(
    get,
    path = "/api/v1/programs/{id}/runs",
    tag = "programs",
    operation_id = "programs_runs",
    description = "The program's runs the caller may see, newest first: its own; admin sees \
        everyone's. Light: byte counts, no output (`GET /api/v1/executions/{id}` has it).",
    params(("id" = String, Path, description = "The program's id."), super::PageQuery),
    responses(
        (status = 200, description = "A page of the program's runs, newest first.", body = crate::api::openapi::Page<crate::jobs::exec::Record>),
        (status = 400, description = "Not a program id, or a bad limit, cursor or other query parameter (`bad_request`).", body = crate::api::openapi::ErrorResponse),
        (status = 404, description = "No such program (`not_found`).", body = crate::api::openapi::ErrorResponse),
    )
)]
pub async fn runs(
    State(state): State<AppState>,
    Requester { actor, .. }: Requester,
    id: Result<Path<String>, PathRejection>,
    q: Result<Query<super::PageQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let id = id_of(id)?;
    let Query(q) = q?;
    let limit = super::page_limit(q.limit)?;
    let viewer = viewer_of(&actor);
    let owner = (!viewer.admin).then_some(viewer.owner);
    let page = state.programs.runs(&id, owner, limit, q.cursor).await?;
    Ok(axum::Json(json!({"items": page.items, "next_cursor": page.next_cursor})).into_response())
}

/// The program's files as a ZIP, streamed from a temp file.
#[utoipa::path(
    get,
    path = "/api/v1/programs/{id}/archive",
    tag = "programs",
    operation_id = "programs_archive",
    params(("id" = String, Path, description = "The program's id.")),
    responses(
        (status = 200, description = "The program's files as a ZIP.", content((crate::api::openapi::Binary = "application/zip")),
            headers(("Content-Disposition" = String, description = "`attachment` with the program's name."))),
        (status = 400, description = "Not a program id (`bad_request`).", body = crate::api::openapi::ErrorResponse),
        (status = 404, description = "No such program (`not_found`).", body = crate::api::openapi::ErrorResponse),
    )
)]
pub async fn archive(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = id_of(id)?;
    let (file, len, name) = state.programs.archive(&id).await?;
    let file = tokio::fs::File::from_std(file);
    let body = futures_util::stream::unfold(file, |mut f| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 64 * 1024];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(bytes::Bytes::from(buf)), f))
            }
            Err(e) => Some((Err(e), f)),
        }
    });
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || ".-_".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    Ok((
        [
            (header::CONTENT_TYPE, "application/zip".to_owned()),
            (header::CONTENT_LENGTH, len.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{safe}\""),
            ),
        ],
        Body::from_stream(body),
    )
        .into_response())
}
