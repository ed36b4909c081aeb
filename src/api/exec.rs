//! `POST /api/v1/exec` (run a command in the sandbox; JSON result, Server-Sent Events with
//! `Accept: text/event-stream`, or `wait: false` for a background job answered 202) and
//! `/api/v1/executions`: the history, one execution with its kept output, its output as
//! Server-Sent Events (replayed, then live), its cancel. An execution, its output and its
//! cancel are for the token that started it and for admin (the rule of terminal sessions).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::error::ApiError;
use super::extract::Json;
use super::extract::Requester;
use super::terminals::viewer_of;
use crate::api::state::AppState;
use crate::jobs::data::{JobData, KeepOutputs, MountSource, MountSpec, OutputSpec};
use crate::jobs::exec::executions::State as ExecState;
use crate::jobs::exec::{
    Chunk, ExecRequest, ExecResult, Filter, OutputSource, Record, RequestLimits, View,
};
use crate::jobs::sandbox::InlineFile;
use crate::store::auth::{Actor, Scope};

/// How a folder is mounted.
#[derive(Deserialize, Clone, Copy, PartialEq, Eq, Default, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MountMode {
    /// Read-only (needs the `read` scope).
    #[default]
    Ro,
    /// A copy the job may change; its changes are committed back to the folder when the job
    /// ends with a kept status (needs the `write` scope).
    Rw,
}

/// One mount: a file-store folder (`files`) or a stored program (`program`), at `at`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MountBody {
    /// A file-store folder: `""` is the whole store, a trailing `/` is optional. An empty or
    /// unknown folder mounts empty. Exactly one of `files` and `program`.
    #[schema(nullable = false)]
    files: Option<String>,
    /// A stored program's id: its files, read-only.
    #[schema(nullable = false)]
    program: Option<String>,
    /// Where the job sees it: an absolute path, not in a system directory (`/usr`, `/bin`,
    /// `/sbin`, `/lib*`, `/etc`, `/dev`, `/proc`, `/sys`, `/tmp`, `/run`, `/var`), not
    /// `/work` itself, not overlapping another mount (`/program` is a program run's own).
    at: String,
    /// `ro` (default) or `rw` (folders only).
    mode: Option<MountMode>,
}

/// A directory of the job whose regular files are committed to a file-store folder.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OutputBody {
    /// A directory under `/work` or under a read-write mount.
    from: String,
    /// A file-store folder (the files land at `to` + their path beneath `from`).
    to: String,
}

/// How an inline file's `content` is written.
#[derive(Deserialize, Clone, Copy, Default, utoipa::ToSchema)]
pub enum FileEncoding {
    #[default]
    #[serde(rename = "utf-8")]
    Utf8,
    #[serde(rename = "base64")]
    Base64,
}

/// A file placed in `/work` before the job starts.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FileBody {
    /// Its path under `/work` (folders are made), named as file-store paths are.
    name: String,
    content: String,
    /// `utf-8` (default) or `base64`.
    encoding: Option<FileEncoding>,
    /// Mode 0755 rather than 0644.
    executable: Option<bool>,
}

/// The data fields of a job's request (`POST /api/v1/exec` and program runs).
pub struct DataFields {
    pub mounts: Option<Vec<MountBody>>,
    pub outputs: Option<Vec<OutputBody>>,
    pub keep_outputs: Option<KeepOutputs>,
    pub files: Option<Vec<FileBody>>,
}

/// Refuses (403, audited) a mount the caller's scopes do not allow.
async fn mount_allowed(
    state: &AppState,
    actor: &Actor,
    caller: &crate::store::audit::Caller,
    needed: Scope,
    what: &str,
) -> Result<(), ApiError> {
    if actor.scopes.allows(needed) {
        return Ok(());
    }
    state
        .audit_event(caller.event(
            "auth.forbidden",
            what,
            "refused",
            format!("needs scope {needed}, has {}", actor.scopes),
        ))
        .await;
    Err(ApiError::forbidden(format!(
        "{what} needs the `{needed}` scope; this credential has: {}",
        actor.scopes
    )))
}

/// The request's mounts, outputs and inline files, with the caller's scopes checked: a
/// read-only or program mount needs `read`, a read-write one `write`.
pub async fn job_data(
    state: &AppState,
    actor: &Actor,
    caller: &crate::store::audit::Caller,
    f: DataFields,
) -> Result<JobData, ApiError> {
    let mut mounts = Vec::new();
    for m in f.mounts.unwrap_or_default() {
        let writable = m.mode.unwrap_or_default() == MountMode::Rw;
        let source = match (m.files, m.program) {
            (Some(folder), None) => MountSource::Files(folder),
            (None, Some(id)) => {
                if writable {
                    return Err(ApiError::bad_request(format!(
                        "the program mount at {} is read-only: leave mode out or give \"ro\"",
                        m.at
                    )));
                }
                MountSource::Program(id)
            }
            _ => {
                return Err(ApiError::bad_request(
                    "each mount names exactly one of files (a folder) or program (an id)",
                ));
            }
        };
        let (needed, what) = if writable {
            (Scope::Write, format!("the read-write mount at {}", m.at))
        } else {
            (Scope::Read, format!("the mount at {}", m.at))
        };
        mount_allowed(state, actor, caller, needed, &what).await?;
        mounts.push(MountSpec {
            source,
            at: m.at,
            writable,
        });
    }
    let mut files = Vec::new();
    for file in f.files.unwrap_or_default() {
        let content = match file.encoding.unwrap_or_default() {
            FileEncoding::Utf8 => file.content.into_bytes(),
            FileEncoding::Base64 => base64::engine::general_purpose::STANDARD
                .decode(file.content.as_bytes())
                .map_err(|e| {
                    ApiError::bad_request(format!(
                        "the content of inline file {:?} is not base64: {e}",
                        file.name
                    ))
                })?,
        };
        files.push(InlineFile {
            name: file.name,
            content,
            executable: file.executable.unwrap_or(false),
            private: false,
        });
    }
    Ok(JobData {
        mounts,
        files,
        outputs: f
            .outputs
            .unwrap_or_default()
            .into_iter()
            .map(|o| OutputSpec {
                from: o.from,
                to: o.to,
            })
            .collect(),
        keep_outputs: f.keep_outputs.unwrap_or_default(),
    })
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsBody {
    cpu_ms: Option<u64>,
    memory_bytes: Option<u64>,
    output_bytes: Option<u64>,
    processes: Option<u64>,
    file_size_bytes: Option<u64>,
}

impl From<LimitsBody> for RequestLimits {
    fn from(l: LimitsBody) -> RequestLimits {
        RequestLimits {
            cpu_ms: l.cpu_ms,
            memory_bytes: l.memory_bytes,
            output_bytes: l.output_bytes,
            processes: l.processes,
            file_size_bytes: l.file_size_bytes,
        }
    }
}

/// A job's input from `stdin` (text) or `stdin_base64`, at most one of them.
pub fn stdin_bytes(text: Option<String>, b64: Option<String>) -> Result<Vec<u8>, ApiError> {
    match (text, b64) {
        (Some(s), None) => Ok(s.into_bytes()),
        (None, Some(b)) => base64::engine::general_purpose::STANDARD
            .decode(b.as_bytes())
            .map_err(|e| ApiError::bad_request(format!("stdin_base64 is not base64: {e}"))),
        (None, None) => Ok(Vec::new()),
        (Some(_), Some(_)) => Err(ApiError::bad_request(
            "give at most one of stdin and stdin_base64",
        )),
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecBody {
    /// The program and its arguments, passed as they are (no shell). Exactly one of `argv`
    /// and `command`.
    #[schema(min_items = 1, nullable = false)]
    argv: Option<Vec<String>>,
    /// A shell command line, run by /bin/sh -c inside the sandbox (not only blanks).
    #[schema(pattern = "\\S", nullable = false)]
    command: Option<String>,
    stdin: Option<String>,
    stdin_base64: Option<String>,
    env: Option<BTreeMap<String, String>>,
    timeout_ms: Option<u64>,
    limits: Option<LimitsBody>,
    profile: Option<String>,
    /// File-store folders and programs to show the job.
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

/// Text as UTF-8 when it is, else base64 — said by the `*_encoding` field.
pub fn encode_output(bytes: &[u8]) -> (Value, &'static str) {
    match std::str::from_utf8(bytes) {
        Ok(s) => (Value::String(s.to_owned()), "utf-8"),
        Err(_) => (
            Value::String(base64::engine::general_purpose::STANDARD.encode(bytes)),
            "base64",
        ),
    }
}

pub fn result_json(r: &ExecResult, with_output: bool) -> Value {
    let mut v = json!({
        "id": r.id,
        "status": r.status,
        "exit_code": r.exit_code,
        "signal": r.signal,
        "truncated": r.truncated,
        "wall_ms": r.wall_ms,
        "cpu_ms": r.cpu_ms,
        "max_rss_kb": r.max_rss_kb,
        "started_at": r.started_at,
        "memory_limited_by": r.memory_limited_by,
    });
    if let Some(obj) = v.as_object_mut() {
        if with_output {
            let (out, oe) = encode_output(&r.stdout);
            let (err, ee) = encode_output(&r.stderr);
            obj.insert("stdout".into(), out);
            obj.insert("stdout_encoding".into(), oe.into());
            obj.insert("stderr".into(), err);
            obj.insert("stderr_encoding".into(), ee.into());
        }
        if let Some(m) = &r.message {
            obj.insert("message".into(), m.clone().into());
        }
        if let Some(o) = &r.outputs {
            obj.insert(
                "outputs".into(),
                serde_json::to_value(o).unwrap_or(Value::Null),
            );
        }
    }
    v
}

pub fn wants_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|p| p.trim().starts_with("text/event-stream"))
        })
}

fn build_request(body: ExecBody, data: JobData) -> Result<ExecRequest, ApiError> {
    let (argv, label) = match (body.argv, body.command) {
        (Some(argv), None) => {
            let label = argv.join(" ");
            (argv, label)
        }
        (None, Some(cmd)) => {
            if cmd.trim().is_empty() {
                return Err(ApiError::bad_request("command must not be empty"));
            }
            (vec!["/bin/sh".into(), "-c".into(), cmd.clone()], cmd)
        }
        _ => {
            return Err(ApiError::bad_request(
                "give exactly one of argv (an array) or command (a string)",
            ));
        }
    };
    if argv.is_empty() || argv[0].is_empty() {
        return Err(ApiError::bad_request("argv must name a program"));
    }
    let stdin = stdin_bytes(body.stdin, body.stdin_base64)?;
    Ok(ExecRequest {
        argv,
        stdin,
        env: body.env.unwrap_or_default().into_iter().collect(),
        timeout: body.timeout_ms.map(Duration::from_millis),
        limits: body.limits.unwrap_or_default().into(),
        profile: body.profile,
        label: label.chars().take(512).collect(),
        kind: "command",
        data,
        ..ExecRequest::default()
    })
}

/// The answer to a job submitted with `wait: false`: 202, `{id, state, location}` and
/// `Location`.
pub fn accepted(record: &Record) -> Response {
    let location = format!("/api/v1/executions/{}", record.id);
    let body = json!({"id": record.id, "state": record.state, "location": location});
    (
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        axum::Json(body),
    )
        .into_response()
}

#[utoipa::path(
    post,
    path = "/api/v1/exec",
    tag = "exec",
    operation_id = "exec_run",
    description = "Runs a command in the sandbox. With `Accept: text/event-stream` the answer is a \
        stream of `stdout`/`stderr` events (`{\"data\":…,\"encoding\":\"utf-8\"|\"base64\"}`) and \
        then one `result` event (the result without its output, plus `dropped_bytes`) or one \
        `error` event (`{\"error\":{\"code\":…,\"message\":…}}`).",
    request_body(content = ExecBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The job ran (whatever its exit status).",
            content(
                (crate::api::openapi::ExecOutcome = "application/json"),
                (crate::api::openapi::SseEvent = "text/event-stream"),
            )),
        (status = 202, description = "`wait: false`: the job is queued (or already running) in the background; follow `Location`.",
            body = crate::api::openapi::ExecAccepted,
            headers(("Location" = String, description = "`/api/v1/executions/{id}`."))),
        (status = 400, description = "Not the body asked for: neither or both of argv and command, both stdin fields, bad base64, a mount point or output path against the rules, a bad folder or inline file name (`bad_request`, `invalid_json`, `invalid_path`).", body = crate::api::openapi::ErrorResponse),
        (status = 403, description = "A mount the token's scopes do not allow: `read` for read-only and program mounts, `write` for read-write ones (`forbidden`).", body = crate::api::openapi::ErrorResponse),
        (status = 404, description = "A program mount names no program (`not_found`).", body = crate::api::openapi::ErrorResponse),
        (status = 422, description = "A limit or timeout above what the profile or exec.max-timeout allows, an unknown profile, or more mounts, outputs or inline files (count or bytes) than `[exec]` allows (`unprocessable`).", body = crate::api::openapi::ErrorResponse),
        (status = 507, description = "Outputs asked for while the file store has no room left (`files.max-total-size` or `storage.min-free-disk`).", body = crate::api::openapi::ErrorResponse),
        (status = 429, description = "Every job slot and queue place is taken, or the rate limit (`rate_limited`).", body = crate::api::openapi::ErrorResponse,
            headers(("Retry-After" = String, description = "Seconds to wait before retrying."))),
    )
)]
pub async fn run(
    State(state): State<AppState>,
    Requester { caller, actor, .. }: Requester,
    headers: HeaderMap,
    Json(mut body): Json<ExecBody>,
) -> Result<Response, ApiError> {
    let wait = body.wait.unwrap_or(true);
    let fields = DataFields {
        mounts: body.mounts.take(),
        outputs: body.outputs.take(),
        keep_outputs: body.keep_outputs.take(),
        files: body.files.take(),
    };
    let data = job_data(&state, &actor, &caller, fields).await?;
    let mut req = build_request(body, data)?;
    req.owner = viewer_of(&actor).owner;
    if !wait {
        let record = state.exec.submit(req, &caller).await?;
        return Ok(accepted(&record));
    }
    if wants_stream(&headers) {
        let rid = caller.request_id.clone();
        return Ok(stream_job(rid, move |tx| async move {
            state.exec.run(req, &caller, Some(tx)).await
        }));
    }
    let result = state.exec.run(req, &caller, None).await?;
    Ok(axum::Json(result_json(&result, true)).into_response())
}

/// Streams `stdout`/`stderr` events as the job `run` (given the output channel) produces
/// output, then one `result` (or `error`) event.
pub fn stream_job<F, Fut>(rid: String, run: F) -> Response
where
    F: FnOnce(mpsc::Sender<Chunk>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = crate::error::Result<ExecResult>> + Send + 'static,
{
    let (events_tx, events_rx) = mpsc::channel::<Result<Event, Infallible>>(64);
    tokio::spawn(super::request_id::scope(rid, async move {
        let (chunks_tx, mut chunks_rx) = mpsc::channel::<Chunk>(64);
        let forward_tx = events_tx.clone();
        let forward = tokio::spawn(async move {
            while let Some(c) = chunks_rx.recv().await {
                let (name, bytes) = match c {
                    Chunk::Stdout(b) => ("stdout", b),
                    Chunk::Stderr(b) => ("stderr", b),
                };
                let (data, encoding) = encode_output(&bytes);
                let ev = Event::default()
                    .event(name)
                    .data(json!({"data": data, "encoding": encoding}).to_string());
                if forward_tx.send(Ok(ev)).await.is_err() {
                    break;
                }
            }
        });
        let outcome = run(chunks_tx).await;
        let _ = forward.await;
        let ev = match outcome {
            Ok(r) => {
                let mut v = result_json(&r, false);
                // Output the stream had to drop because this consumer fell behind.
                if let Some(obj) = v.as_object_mut() {
                    obj.insert("dropped_bytes".into(), r.dropped_bytes.into());
                }
                Event::default().event("result").data(v.to_string())
            }
            Err(e) => {
                let api = ApiError::from(e);
                Event::default()
                    .event("error")
                    .data(json!({"error": {"code": api.code, "message": api.message}}).to_string())
            }
        };
        let _ = events_tx.send(Ok(ev)).await;
    }));
    let stream = tokio_stream::wrappers::ReceiverStream::new(events_rx);
    let mut resp = Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response();
    // nginx: pass events through as they come.
    resp.headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only executions in this state: `queued`, `running` or `finished`.
    state: Option<String>,
    /// Only this program's runs.
    program: Option<String>,
    /// Only this actor's (the name of the token that started them).
    actor: Option<String>,
    /// Started at or after this time (RFC 3339; a queued one: submitted).
    since: Option<String>,
    /// Started at or before this time (RFC 3339).
    until: Option<String>,
    /// How many items (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// Where the previous page ended (its `next_cursor`).
    cursor: Option<String>,
}

fn parse_time(s: &str, what: &str) -> Result<i64, ApiError> {
    crate::util::time::parse_rfc3339(s).map_err(|e| {
        ApiError::bad_request(format!(
            "{what} must be an RFC 3339 time such as 2026-01-31T12:00:00Z: {e}"
        ))
    })
}

#[utoipa::path(
    get,
    path = "/api/v1/executions",
    tag = "exec",
    operation_id = "executions_list",
    description = "The executions the caller may see, newest first: its own (those started with \
        its token, or a browser login made with it); admin sees everyone's. Light: byte counts, \
        no output (`GET /api/v1/executions/{id}` has it).",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of executions, newest first.", body = crate::api::openapi::Page<crate::jobs::exec::Record>),
        (status = 400, description = "A bad limit, cursor, state, time or other query parameter (`bad_request`).", body = crate::api::openapi::ErrorResponse),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    Requester { actor, .. }: Requester,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q?;
    let limit = super::page_limit(q.limit)?;
    let exec_state = match q.state.as_deref() {
        None => None,
        Some(s) => Some(ExecState::parse(s).ok_or_else(|| {
            ApiError::bad_request(format!(
                "state must be queued, running or finished, not {s:?}"
            ))
        })?),
    };
    let viewer = viewer_of(&actor);
    let filter = Filter {
        program_id: q.program,
        state: exec_state,
        actor: q.actor,
        since: q
            .since
            .as_deref()
            .map(|t| parse_time(t, "since"))
            .transpose()?,
        until: q
            .until
            .as_deref()
            .map(|t| parse_time(t, "until"))
            .transpose()?,
        owner: (!viewer.admin).then_some(viewer.owner),
    };
    let page = state.exec.list(filter, limit, q.cursor).await?;
    Ok(axum::Json(json!({"items": page.items, "next_cursor": page.next_cursor})).into_response())
}

fn execution_id(p: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    p.map(|Path(id)| id)
        .map_err(|e| ApiError::bad_request(format!("invalid execution id: {}", e.body_text())))
}

/// An execution's record with its kept output (`*_encoding` says text or base64).
fn view_json(v: &View) -> Value {
    let mut j = serde_json::to_value(&v.record).unwrap_or(Value::Null);
    if let Some(obj) = j.as_object_mut() {
        let (out, oe) = encode_output(&v.stdout);
        let (err, ee) = encode_output(&v.stderr);
        obj.insert("stdout".into(), out);
        obj.insert("stdout_encoding".into(), oe.into());
        obj.insert("stderr".into(), err);
        obj.insert("stderr_encoding".into(), ee.into());
    }
    j
}

#[utoipa::path(
    get,
    path = "/api/v1/executions/{id}",
    tag = "exec",
    operation_id = "executions_get",
    description = "One execution: its state (`queued`, `running`, `finished`), how it ended \
        (`status`, once finished) and the stdout and stderr it kept (while it runs: what it has \
        produced so far). Only for the token that started it and for admin.",
    params(("id" = String, Path, description = "The execution's id.")),
    responses(
        (status = 200, description = "The execution.", body = crate::api::openapi::ExecutionView),
        (status = 400, description = "Not an execution id (`bad_request`).", body = crate::api::openapi::ErrorResponse),
        (status = 404, description = "No such execution, or not the caller's (`not_found`).", body = crate::api::openapi::ErrorResponse),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    Requester { actor, .. }: Requester,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = execution_id(id)?;
    let view = state.exec.get(&id, &viewer_of(&actor)).await?;
    Ok(axum::Json(view_json(&view)).into_response())
}

#[utoipa::path(
    post,
    path = "/api/v1/executions/{id}/cancel",
    tag = "exec",
    operation_id = "executions_cancel",
    description = "Cancels an execution: a queued one never starts, a running one is killed \
        with everything it started (status `cancelled`). The answer comes at once with the \
        execution as it stood; its record says how it ended (a job that was ending anyway may \
        end with its own status).",
    params(("id" = String, Path, description = "The execution's id.")),
    responses(
        (status = 202, description = "Asked to stop: `{id, state, location}`.", body = crate::api::openapi::ExecAccepted,
            headers(("Location" = String, description = "`/api/v1/executions/{id}`."))),
        (status = 400, description = "Not an execution id (`bad_request`).", body = crate::api::openapi::ErrorResponse),
        (status = 404, description = "No such execution, or not the caller's (`not_found`).", body = crate::api::openapi::ErrorResponse),
        (status = 409, description = "It is already finished (`conflict`).", body = crate::api::openapi::ErrorResponse),
    )
)]
pub async fn cancel(
    State(state): State<AppState>,
    Requester { actor, caller, .. }: Requester,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = execution_id(id)?;
    let record = state.exec.cancel(&id, &viewer_of(&actor), &caller).await?;
    Ok(accepted(&record))
}

/// Most bytes one output event carries when stored output is replayed.
const MAX_EVENT: usize = 64 << 10;

fn output_event(stderr: bool, bytes: &[u8]) -> Event {
    let (data, encoding) = encode_output(bytes);
    Event::default()
        .event(if stderr { "stderr" } else { "stdout" })
        .data(json!({"data": data, "encoding": encoding}).to_string())
}

fn result_event(record: &Record) -> Event {
    Event::default()
        .event("result")
        .data(serde_json::to_string(record).unwrap_or_default())
}

#[utoipa::path(
    get,
    path = "/api/v1/executions/{id}/output",
    tag = "exec",
    operation_id = "executions_output",
    description = "The execution's output as Server-Sent Events, from the start: `stdout` and \
        `stderr` events (`{\"data\":…,\"encoding\":\"utf-8\"|\"base64\"}`), then one `result` \
        event (the execution's record, without output) and the stream ends. While it runs, what \
        it produced so far is replayed in the order it was written, then what comes follows \
        live; once finished, the kept stdout is replayed, then the kept stderr. Either way only \
        the kept output (`exec.keep-output-size`) is in the stream; the record's byte counts \
        say how much the job wrote.",
    params(("id" = String, Path, description = "The execution's id.")),
    responses(
        (status = 200, description = "The stream.", content((crate::api::openapi::SseEvent = "text/event-stream"))),
        (status = 400, description = "Not an execution id (`bad_request`).", body = crate::api::openapi::ErrorResponse),
        (status = 404, description = "No such execution, or not the caller's (`not_found`).", body = crate::api::openapi::ErrorResponse),
    )
)]
pub async fn output(
    State(state): State<AppState>,
    Requester { actor, .. }: Requester,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = execution_id(id)?;
    let source = state.exec.output(&id, &viewer_of(&actor)).await?;
    let (tx, rx) = mpsc::channel::<Result<Event, Infallible>>(16);
    tokio::spawn(async move {
        match source {
            OutputSource::Finished(v) => {
                for (stderr, bytes) in [(false, &v.stdout), (true, &v.stderr)] {
                    for chunk in bytes.chunks(MAX_EVENT) {
                        if tx.send(Ok(output_event(stderr, chunk))).await.is_err() {
                            return;
                        }
                    }
                }
                let _ = tx.send(Ok(result_event(&v.record))).await;
            }
            OutputSource::Live(live) => {
                // Follows the execution: at most the pieces not sent yet are held here, and
                // the entry keeps no more than its bound.
                let mut changed = live.subscribe();
                let mut next = 0;
                loop {
                    changed.borrow_and_update();
                    let (pieces, done) = live.read_from(next);
                    next += pieces.len();
                    for p in pieces {
                        if tx.send(Ok(output_event(p.stderr, &p.bytes))).await.is_err() {
                            return;
                        }
                    }
                    if let Some(record) = done {
                        let _ = tx.send(Ok(result_event(&record))).await;
                        return;
                    }
                    if changed.changed().await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    let mut resp = Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response();
    // nginx: pass events through as they come.
    resp.headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(resp)
}
