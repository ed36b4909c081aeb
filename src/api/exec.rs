//! `POST /api/v1/exec` (run a command in the sandbox; JSON result, or Server-Sent Events with
//! `Accept: text/event-stream`) and `GET /api/v1/executions` (the history).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::error::ApiError;
use super::extract::Json;
use super::extract::Requester;
use crate::api::state::AppState;
use crate::jobs::exec::{Chunk, ExecRequest, ExecResult, RequestLimits};

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
    /// The program and its arguments, passed as they are (no shell).
    argv: Option<Vec<String>>,
    /// A shell command line, run by /bin/sh -c inside the sandbox.
    command: Option<String>,
    stdin: Option<String>,
    stdin_base64: Option<String>,
    env: Option<BTreeMap<String, String>>,
    timeout_ms: Option<u64>,
    limits: Option<LimitsBody>,
    profile: Option<String>,
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

fn build_request(body: ExecBody) -> Result<ExecRequest, ApiError> {
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
        ..ExecRequest::default()
    })
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
                (String = "text/event-stream"),
            )),
        (status = 400, description = "Not the body asked for: neither or both of argv and command, both stdin fields, bad base64 (`bad_request`, `invalid_json`).", body = crate::api::openapi::ErrorResponse),
        (status = 422, description = "A limit or timeout above what the profile or exec.max-timeout allows, or an unknown profile (`unprocessable`).", body = crate::api::openapi::ErrorResponse),
        (status = 429, description = "Every job slot and queue place is taken, or the rate limit (`rate_limited`).", body = crate::api::openapi::ErrorResponse,
            headers(("Retry-After" = String, description = "Seconds to wait before retrying."))),
    )
)]
pub async fn run(
    State(state): State<AppState>,
    Requester { caller, .. }: Requester,
    headers: HeaderMap,
    Json(body): Json<ExecBody>,
) -> Result<Response, ApiError> {
    let req = build_request(body)?;
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

#[utoipa::path(
    get,
    path = "/api/v1/executions",
    tag = "exec",
    operation_id = "executions_list",
    params(super::PageQuery),
    responses(
        (status = 200, description = "A page of past executions, newest first.", body = crate::api::openapi::Page<crate::jobs::exec::Record>),
        (status = 400, description = "A bad limit, cursor or other query parameter (`bad_request`).", body = crate::api::openapi::ErrorResponse),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    q: Result<Query<super::PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q?;
    let limit = super::page_limit(q.limit)?;
    let page = state.exec.list(None, limit, q.cursor).await?;
    Ok(axum::Json(json!({"items": page.items, "next_cursor": page.next_cursor})).into_response())
}
