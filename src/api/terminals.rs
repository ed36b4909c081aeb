//! `/api/v1/terminals`: interactive sessions (a job on a pseudo-terminal in the sandbox).
//! Create (a command, or a stored program at `POST /api/v1/programs/{id}/terminals`), list,
//! inspect, end; the HTTP way to drive one (`input`, `output?since=N` as a bounded long poll or
//! Server-Sent Events, `resize`, `signal`) and its recording (asciicast v2). The WebSocket
//! attach is `api::ws`. Thin: the rules live in `crate::jobs::terminals`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::ApiError;
use super::exec::{LimitsBody, wants_stream};
use super::extract::{Json, Requester};
use crate::api::state::AppState;
use crate::jobs::exec::ExecRequest;
use crate::jobs::sandbox::TerminalSize;
use crate::jobs::terminals::{Ended, Info, Session, Spec, Viewer};
use crate::store::auth::{Actor, Scope};

/// The size a session gets unless its request gives one.
const DEFAULT_SIZE: TerminalSize = TerminalSize { cols: 80, rows: 24 };
/// How long `output` waits for new output by default, and at most (`wait_ms`).
const DEFAULT_WAIT: Duration = Duration::from_secs(20);
const MAX_WAIT: Duration = Duration::from_secs(60);
/// Most bytes one `output` answer or SSE event carries.
const MAX_CHUNK: usize = 64 << 10;

/// The owner key and admin flag of a caller: sessions belong to the token that created them
/// (a browser login made with that token is the same owner), local admin to its actor.
pub fn viewer_of(actor: &Actor) -> Viewer {
    Viewer {
        owner: match &actor.token_id {
            Some(id) => format!("token:{id}"),
            None => format!("actor:{}", actor.name),
        },
        admin: actor.scopes.allows(Scope::Admin),
    }
}

pub fn id_of(p: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    p.map(|Path(id)| id)
        .map_err(|e| ApiError::bad_request(format!("invalid terminal id: {}", e.body_text())))
}

/// What creating a session takes besides its command (both create routes).
#[derive(Default)]
struct SessionOptions {
    env: Option<BTreeMap<String, String>>,
    limits: Option<LimitsBody>,
    profile: Option<String>,
    cols: Option<u16>,
    rows: Option<u16>,
    idle_timeout_s: Option<u64>,
    lifetime_s: Option<u64>,
    shared_write: Option<bool>,
}

/// The session options of a body (the two bodies share them; serde's `flatten` cannot be
/// combined with `deny_unknown_fields`, so each lists them).
macro_rules! options_of {
    ($b:expr) => {
        SessionOptions {
            env: $b.env,
            limits: $b.limits,
            profile: $b.profile,
            cols: $b.cols,
            rows: $b.rows,
            idle_timeout_s: $b.idle_timeout_s,
            lifetime_s: $b.lifetime_s,
            shared_write: $b.shared_write,
        }
    };
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    /// The program and its arguments, passed as they are (no shell). Exactly one of `argv`
    /// and `command`.
    #[schema(min_items = 1, nullable = false)]
    argv: Option<Vec<String>>,
    /// A shell command line, run by /bin/sh -c (not only blanks).
    #[schema(pattern = "\\S", nullable = false)]
    command: Option<String>,
    /// Extra environment (TERM defaults to `xterm-256color`).
    env: Option<BTreeMap<String, String>>,
    limits: Option<LimitsBody>,
    profile: Option<String>,
    /// The terminal's size (default 80x24; 1 to 1000 each).
    #[schema(minimum = 1, maximum = 1000)]
    cols: Option<u16>,
    #[schema(minimum = 1, maximum = 1000)]
    rows: Option<u16>,
    /// Seconds without input and without an attached client before the session is ended
    /// (default `terminals.idle-timeout`, at most `terminals.max-idle-timeout`).
    idle_timeout_s: Option<u64>,
    /// Seconds the session may run in all (default `terminals.lifetime`, at most
    /// `terminals.max-lifetime`).
    lifetime_s: Option<u64>,
    /// Every attached client may type (default: one writer at a time, the first to attach
    /// with `write=true`).
    shared_write: Option<bool>,
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProgramSessionBody {
    /// Arguments after the program's main file.
    args: Option<Vec<String>>,
    /// Extra environment (TERM defaults to `xterm-256color`).
    env: Option<BTreeMap<String, String>>,
    limits: Option<LimitsBody>,
    profile: Option<String>,
    /// The terminal's size (default 80x24; 1 to 1000 each).
    #[schema(minimum = 1, maximum = 1000)]
    cols: Option<u16>,
    #[schema(minimum = 1, maximum = 1000)]
    rows: Option<u16>,
    /// Seconds without input and without an attached client before the session is ended
    /// (default `terminals.idle-timeout`, at most `terminals.max-idle-timeout`).
    idle_timeout_s: Option<u64>,
    /// Seconds the session may run in all (default `terminals.lifetime`, at most
    /// `terminals.max-lifetime`).
    lifetime_s: Option<u64>,
    /// Every attached client may type (default: one writer at a time, the first to attach
    /// with `write=true`).
    shared_write: Option<bool>,
}

fn spec(job: ExecRequest, o: SessionOptions) -> Result<Spec, ApiError> {
    let mut job = job;
    job.env = o.env.unwrap_or_default().into_iter().collect();
    job.limits = o.limits.unwrap_or_default().into();
    job.profile = o.profile;
    Ok(Spec {
        job,
        size: TerminalSize {
            cols: o.cols.unwrap_or(DEFAULT_SIZE.cols),
            rows: o.rows.unwrap_or(DEFAULT_SIZE.rows),
        },
        idle_timeout: o.idle_timeout_s.map(Duration::from_secs),
        lifetime: o.lifetime_s.map(Duration::from_secs),
        shared_write: o.shared_write.unwrap_or(false),
        hold: None,
    })
}

/// A session's JSON: its info and its URLs.
fn with_urls(info: &Info) -> Value {
    let base = format!("/api/v1/terminals/{}", info.id);
    let mut v = serde_json::to_value(info).unwrap_or(Value::Null);
    if let Some(obj) = v.as_object_mut() {
        obj.insert(
            "urls".into(),
            json!({
                "self": base,
                "attach": format!("{base}/attach"),
                "input": format!("{base}/input"),
                "output": format!("{base}/output"),
                "resize": format!("{base}/resize"),
                "signal": format!("{base}/signal"),
                "recording": format!("{base}/recording"),
            }),
        );
    }
    v
}

fn created(info: &Info) -> Response {
    let mut resp = (StatusCode::CREATED, axum::Json(with_urls(info))).into_response();
    if let Ok(loc) = HeaderValue::from_str(&format!("/api/v1/terminals/{}", info.id)) {
        resp.headers_mut().insert(header::LOCATION, loc);
    }
    resp
}

#[utoipa::path(
    post,
    path = "/api/v1/terminals",
    tag = "terminals",
    operation_id = "terminals_create",
    description = "Starts a terminal session: the command on a pseudo-terminal, confined like \
        every job. Attach at `urls.attach` (WebSocket) or drive it with `input` and `output`.",
    request_body(content = CreateBody, content_type = "application/json"),
    responses(
        (status = 201, description = "The session, with its URLs.", body = crate::api::openapi::TerminalCreated,
            headers(("Location" = String, description = "The session's URL."))),
        (status = 400, description = "Neither or both of argv and command, a bad size or duration (`bad_request`, `invalid_json`).", body = crate::api::openapi::ErrorResponse),
        (status = 422, description = "A limit, idle timeout or lifetime above its maximum, or an unknown profile (`unprocessable`).", body = crate::api::openapi::ErrorResponse),
        (status = 429, description = "terminals.max-total or terminals.max-per-token sessions run already, or the rate limit (`rate_limited`).", body = crate::api::openapi::ErrorResponse),
        (status = 503, description = "Terminals are turned off (terminals.enabled), the daemon is stopping, or the sandbox could not start the job (`unavailable`).", body = crate::api::openapi::ErrorResponse),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    Requester { actor, caller, .. }: Requester,
    Json(body): Json<CreateBody>,
) -> Result<Response, ApiError> {
    let (argv, label) = match (body.argv.clone(), body.command.clone()) {
        (Some(argv), None) => {
            let label = argv.join(" ");
            (argv, label)
        }
        (None, Some(cmd)) if !cmd.trim().is_empty() => {
            (vec!["/bin/sh".into(), "-c".into(), cmd.clone()], cmd)
        }
        (None, Some(_)) => return Err(ApiError::bad_request("command must not be empty")),
        _ => {
            return Err(ApiError::bad_request(
                "give exactly one of argv (an array) or command (a string)",
            ));
        }
    };
    if argv.first().is_none_or(String::is_empty) {
        return Err(ApiError::bad_request("argv must name a program"));
    }
    let job = ExecRequest {
        argv,
        label: label.chars().take(512).collect(),
        kind: "command",
        ..ExecRequest::default()
    };
    let spec = spec(job, options_of!(body))?;
    let info = state
        .terminals
        .create(spec, &viewer_of(&actor), &caller)
        .await?;
    Ok(created(&info))
}

#[utoipa::path(
    post,
    path = "/api/v1/programs/{id}/terminals",
    tag = "terminals",
    operation_id = "programs_terminal",
    description = "Starts a terminal session running a stored program as a run does (read-only \
        at /program, cwd /work), for programs that ask questions.",
    params(("id" = String, Path, description = "The program's id.")),
    request_body(content = ProgramSessionBody, content_type = "application/json"),
    responses(
        (status = 201, description = "The session, with its URLs.", body = crate::api::openapi::TerminalCreated,
            headers(("Location" = String, description = "The session's URL."))),
        (status = 400, description = "A bad body (`bad_request`, `invalid_json`).", body = crate::api::openapi::ErrorResponse),
        (status = 404, description = "No such program (`not_found`).", body = crate::api::openapi::ErrorResponse),
        (status = 409, description = "The program has no main file yet (`conflict`).", body = crate::api::openapi::ErrorResponse),
        (status = 422, description = "A limit, idle timeout or lifetime above its maximum, or an unknown profile (`unprocessable`).", body = crate::api::openapi::ErrorResponse),
        (status = 429, description = "Too many sessions, or the rate limit (`rate_limited`).", body = crate::api::openapi::ErrorResponse),
        (status = 503, description = "Terminals are off, the daemon is stopping, or the sandbox failed (`unavailable`).", body = crate::api::openapi::ErrorResponse),
    )
)]
pub async fn create_for_program(
    State(state): State<AppState>,
    Requester { actor, caller, .. }: Requester,
    id: Result<Path<String>, PathRejection>,
    request: axum::extract::Request,
) -> Result<Response, ApiError> {
    let id = id
        .map(|Path(id)| id)
        .map_err(|e| ApiError::bad_request(format!("invalid program id: {}", e.body_text())))?;
    // Every field is optional, and so is the body itself.
    let body = if request.headers().contains_key(header::CONTENT_TYPE) {
        let Json(b) = <Json<ProgramSessionBody> as axum::extract::FromRequest<()>>::from_request(
            request,
            &(),
        )
        .await?;
        b
    } else {
        ProgramSessionBody::default()
    };
    // Registered as a run of the program while the session lives: deleting the program
    // answers 409 (or, with force, ends the session).
    let (job, hold) = state
        .programs
        .session_job(&id, body.args.clone().unwrap_or_default())
        .await?;
    let mut spec = spec(job, options_of!(body))?;
    spec.hold = Some(std::sync::Arc::new(hold));
    let info = state
        .terminals
        .create(spec, &viewer_of(&actor), &caller)
        .await?;
    Ok(created(&info))
}

#[utoipa::path(
    get,
    path = "/api/v1/terminals",
    tag = "terminals",
    operation_id = "terminals_list",
    description = "The caller's sessions (an admin's: everyone's), running and ended, newest first.",
    params(super::PageQuery),
    responses(
        (status = 200, description = "A page of sessions.", body = crate::api::openapi::Page<Info>),
        (status = 400, description = "A bad limit or cursor (`bad_request`).", body = crate::api::openapi::ErrorResponse),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    Requester { actor, .. }: Requester,
    q: Result<Query<super::PageQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q?;
    let limit = super::page_limit(q.limit)?;
    let page = state
        .terminals
        .list(&viewer_of(&actor), limit, q.cursor)
        .await?;
    Ok(axum::Json(json!({"items": page.items, "next_cursor": page.next_cursor})).into_response())
}

#[utoipa::path(
    get,
    path = "/api/v1/terminals/{id}",
    tag = "terminals",
    operation_id = "terminals_get",
    params(("id" = String, Path, description = "The session's id.")),
    responses(
        (status = 200, description = "The session, with its URLs.", body = crate::api::openapi::TerminalCreated),
        (status = 404, description = "No such session, or not the caller's (`not_found`).", body = crate::api::openapi::ErrorResponse),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    Requester { actor, .. }: Requester,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = id_of(id)?;
    let info = state.terminals.get(&id, &viewer_of(&actor)).await?;
    Ok(axum::Json(with_urls(&info)).into_response())
}

#[utoipa::path(
    delete,
    path = "/api/v1/terminals/{id}",
    tag = "terminals",
    operation_id = "terminals_delete",
    description = "Ends the session: its job and everything it started are killed; answers once \
        they are gone. Ending an ended session answers it as it is.",
    params(("id" = String, Path, description = "The session's id.")),
    responses(
        (status = 200, description = "The ended session.", body = crate::api::openapi::TerminalCreated),
        (status = 404, description = "No such session, or not the caller's (`not_found`).", body = crate::api::openapi::ErrorResponse),
    )
)]
pub async fn delete(
    State(state): State<AppState>,
    Requester { actor, caller, .. }: Requester,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = id_of(id)?;
    let result = state.terminals.kill(&id, &viewer_of(&actor)).await;
    if !matches!(result, Err(crate::error::Error::NotFound(_))) {
        state
            .audit_change(&caller, "terminal.kill", &id, &result, "")
            .await;
    }
    let info = result?;
    Ok(axum::Json(with_urls(&info)).into_response())
}

#[utoipa::path(
    post,
    path = "/api/v1/terminals/{id}/input",
    tag = "terminals",
    operation_id = "terminals_input",
    description = "Types the body's bytes into the terminal (any content type; `\\r` is Enter, \
        0x03 is Ctrl-C). Refused while an attached client holds the keyboard (unless the \
        session shares writing).",
    params(("id" = String, Path, description = "The session's id.")),
    request_body(content = crate::api::openapi::Binary, content_type = "application/octet-stream"),
    responses(
        (status = 204, description = "Written to the terminal."),
        (status = 404, description = "No such session, or not the caller's (`not_found`).", body = crate::api::openapi::ErrorResponse),
        (status = 409, description = "The session has ended, or an attached client holds the keyboard (`conflict`).", body = crate::api::openapi::ErrorResponse),
        (status = 413, description = "Larger than terminals.max-message-size (`payload_too_large`).", body = crate::api::openapi::ErrorResponse),
        (status = 429, description = "Faster than terminals.input-rate (`rate_limited`).", body = crate::api::openapi::ErrorResponse),
        (status = 503, description = "The job has not read its input for a while: its terminal's input queue is full (`unavailable`).", body = crate::api::openapi::ErrorResponse),
    )
)]
pub async fn input(
    State(state): State<AppState>,
    Requester { actor, .. }: Requester,
    id: Result<Path<String>, PathRejection>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let id = id_of(id)?;
    let session = state.terminals.session(&id, &viewer_of(&actor))?;
    let body = body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::payload_too_large(format!(
                "input is larger than terminals.max-message-size ({})",
                state.live.get().terminals.max_message_size
            ))
        } else {
            ApiError::bad_request(format!("cannot read the body: {}", r.body_text()))
        }
    })?;
    session.input(&body, None).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct OutputQuery {
    /// The offset to read from (bytes since the session started; `next` of the last answer).
    /// Default 0: everything the scrollback still holds.
    since: Option<u64>,
    /// How long to wait for output after `since` when there is none yet (default 20000, at
    /// most 60000; 0 answers at once). Not used by the event stream.
    wait_ms: Option<u64>,
}

/// Output as JSON: text when it is UTF-8, else base64 (`encoding` says which).
fn chunk_json(data: &[u8], from: u64, next: u64, lost: u64) -> Value {
    let (data, encoding) = match std::str::from_utf8(data) {
        Ok(s) => (Value::String(s.to_owned()), "utf-8"),
        Err(_) => (
            Value::String(base64::engine::general_purpose::STANDARD.encode(data)),
            "base64",
        ),
    };
    json!({"data": data, "encoding": encoding, "from": from, "next": next, "lost": lost})
}

/// The exit as JSON (the WebSocket's `exit` message has the same fields).
pub fn exit_json(e: &Ended) -> Value {
    json!({
        "type": "exit",
        "code": e.exit_code,
        "signal": e.signal,
        "reason": e.reason,
    })
}

#[utoipa::path(
    get,
    path = "/api/v1/terminals/{id}/output",
    tag = "terminals",
    operation_id = "terminals_output",
    description = "The output after offset `since`: a long poll that answers as soon as there \
        is some (or the session ends, or `wait_ms` passes) with `{data, encoding, from, next, \
        lost, state, exit}` (`data` is text when it is UTF-8, else base64 as `encoding` says; read \
        on from `next`; `lost` counts bytes after `since` the scrollback no longer holds; `exit` \
        is set once the session ended). With `Accept: text/event-stream`: `output` events (the \
        same object without `state`/`exit`) as output comes, then one `exit` event \
        (`{type, code, signal, reason}`), and the stream ends.",
    params(("id" = String, Path, description = "The session's id."), OutputQuery),
    responses(
        (status = 200, description = "Output (or none, after the wait).",
            content(
                (crate::api::openapi::TerminalOutput = "application/json"),
                (crate::api::openapi::SseEvent = "text/event-stream"),
            )),
        (status = 400, description = "A bad query (`bad_request`).", body = crate::api::openapi::ErrorResponse),
        (status = 404, description = "No such session, not the caller's, or ended long ago: its recording has the output (`not_found`).", body = crate::api::openapi::ErrorResponse),
    )
)]
pub async fn output(
    State(state): State<AppState>,
    Requester { actor, caller, .. }: Requester,
    id: Result<Path<String>, PathRejection>,
    q: Result<Query<OutputQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = id_of(id)?;
    let Query(q) = q?;
    let session = state.terminals.session(&id, &viewer_of(&actor))?;
    let since = q.since.unwrap_or(0);
    if wants_stream(&headers) {
        return Ok(stream_output(session, since, caller.request_id));
    }
    let wait = match q.wait_ms {
        None => DEFAULT_WAIT,
        Some(ms) if Duration::from_millis(ms) <= MAX_WAIT => Duration::from_millis(ms),
        Some(ms) => {
            return Err(ApiError::bad_request(format!(
                "wait_ms = {ms} is above {}",
                MAX_WAIT.as_millis()
            )));
        }
    };
    session
        .wait_output(since, tokio::time::Instant::now() + wait)
        .await;
    let r = session.read(since, MAX_CHUNK);
    let mut v = chunk_json(&r.data, r.from, r.next, r.lost);
    let ended = session.ended().filter(|_| r.next >= session.end_offset());
    if let Some(obj) = v.as_object_mut() {
        obj.insert(
            "state".into(),
            if session.is_running() {
                "running"
            } else {
                "ended"
            }
            .into(),
        );
        obj.insert("exit".into(), ended.as_ref().map_or(Value::Null, exit_json));
    }
    Ok(axum::Json(v).into_response())
}

/// `output` as Server-Sent Events until the session ends (bounded by its lifetime).
fn stream_output(session: std::sync::Arc<Session>, since: u64, rid: String) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Event, Infallible>>(16);
    tokio::spawn(super::request_id::scope(rid, async move {
        let mut offset = since;
        let mut out = session.subscribe_output();
        let mut end = session.subscribe_end();
        loop {
            let r = session.read(offset, MAX_CHUNK);
            if !r.data.is_empty() || r.lost > 0 {
                offset = r.next;
                let ev = Event::default()
                    .event("output")
                    .data(chunk_json(&r.data, r.from, r.next, r.lost).to_string());
                if tx.send(Ok(ev)).await.is_err() {
                    return;
                }
                continue;
            }
            if let Some(e) = session.ended() {
                let ev = Event::default()
                    .event("exit")
                    .data(exit_json(&e).to_string());
                let _ = tx.send(Ok(ev)).await;
                return;
            }
            tokio::select! {
                _ = out.wait_for(|e| *e > offset) => {}
                _ = end.wait_for(Option::is_some) => {}
                _ = tx.closed() => return,
            }
        }
    }));
    let mut resp = Sse::new(tokio_stream::wrappers::ReceiverStream::new(rx))
        .keep_alive(KeepAlive::default())
        .into_response();
    resp.headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResizeBody {
    /// 1 to 1000.
    #[schema(minimum = 1, maximum = 1000)]
    cols: u16,
    /// 1 to 1000.
    #[schema(minimum = 1, maximum = 1000)]
    rows: u16,
}

#[utoipa::path(
    post,
    path = "/api/v1/terminals/{id}/resize",
    tag = "terminals",
    operation_id = "terminals_resize",
    params(("id" = String, Path, description = "The session's id.")),
    request_body(content = ResizeBody, content_type = "application/json"),
    responses(
        (status = 204, description = "Resized (the job got SIGWINCH)."),
        (status = 400, description = "A size outside 1 to 1000 (`bad_request`, `invalid_json`).", body = crate::api::openapi::ErrorResponse),
        (status = 404, description = "No such session, or not the caller's (`not_found`).", body = crate::api::openapi::ErrorResponse),
        (status = 409, description = "The session has ended (`conflict`).", body = crate::api::openapi::ErrorResponse),
    )
)]
pub async fn resize(
    State(state): State<AppState>,
    Requester { actor, .. }: Requester,
    id: Result<Path<String>, PathRejection>,
    Json(body): Json<ResizeBody>,
) -> Result<Response, ApiError> {
    let id = id_of(id)?;
    let session = state.terminals.session(&id, &viewer_of(&actor))?;
    session.resize(TerminalSize {
        cols: body.cols,
        rows: body.rows,
    })?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignalBody {
    /// `INT`, `QUIT` or `TSTP` (with or without `SIG`).
    #[schema(pattern = "^(SIG)?(INT|QUIT|TSTP)$")]
    name: String,
}

#[utoipa::path(
    post,
    path = "/api/v1/terminals/{id}/signal",
    tag = "terminals",
    operation_id = "terminals_signal",
    description = "Sends a signal to the terminal's foreground process group, as Ctrl-C, Ctrl-\\ \
        or Ctrl-Z would, even when the job turned those keys off. DELETE ends the session.",
    params(("id" = String, Path, description = "The session's id.")),
    request_body(content = SignalBody, content_type = "application/json"),
    responses(
        (status = 204, description = "Sent."),
        (status = 400, description = "Not INT, QUIT or TSTP (`bad_request`, `invalid_json`).", body = crate::api::openapi::ErrorResponse),
        (status = 404, description = "No such session, or not the caller's (`not_found`).", body = crate::api::openapi::ErrorResponse),
        (status = 409, description = "The session has ended (`conflict`).", body = crate::api::openapi::ErrorResponse),
    )
)]
pub async fn signal(
    State(state): State<AppState>,
    Requester { actor, .. }: Requester,
    id: Result<Path<String>, PathRejection>,
    Json(body): Json<SignalBody>,
) -> Result<Response, ApiError> {
    let id = id_of(id)?;
    let session = state.terminals.session(&id, &viewer_of(&actor))?;
    session.signal(&body.name)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[utoipa::path(
    get,
    path = "/api/v1/terminals/{id}/recording",
    tag = "terminals",
    operation_id = "terminals_recording",
    description = "The session's recording in asciicast v2 (play it with `asciinema play`): a \
        header line, then `[seconds, \"o\", text]` output events (`\"r\"`: a resize, `\"m\"`: \
        where recording stopped at its bound). Input is not recorded. A running session's \
        recording is as of the last second.",
    params(("id" = String, Path, description = "The session's id.")),
    responses(
        (status = 200, description = "The recording.", content((crate::api::openapi::Binary = "application/x-asciicast"))),
        (status = 404, description = "No such session, not the caller's, or no recording (off, or deleted after terminals.recording-retention) (`not_found`).", body = crate::api::openapi::ErrorResponse),
    )
)]
pub async fn recording(
    State(state): State<AppState>,
    Requester { actor, .. }: Requester,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = id_of(id)?;
    let path = state.terminals.recording(&id, &viewer_of(&actor)).await?;
    let bytes = tokio::fs::read(&path)
        .await
        .map_err(|e| ApiError::from(crate::error::Error::Io(e)))?;
    let mut resp = bytes.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-asciicast"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{id}.cast\"")) {
        resp.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}
