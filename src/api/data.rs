//! `/api/v1/data`: the key-value store over HTTP: get, put, delete, list, batch, and watch as
//! Server-Sent Events. Thin: read the request, call [`crate::store::kv`], shape the response. A
//! version travels as a quoted ETag (`"7"`) and as a string in bodies.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use super::error::ApiError;
use super::extract::Json;
use super::extract::Requester;
use super::routes::BodyLimit;
use crate::api::state::AppState;
use crate::error::Error;
use crate::store::audit::Caller;
use crate::store::auth::Actor;
use crate::store::kv::follow::{Watch, WatchItem};
use crate::store::kv::{self, Change, Cond, Entry, Op, Written};

/// How often an idle watch stream sends a progress event (keeps proxies and clients from
/// timing out, and moves the client's Last-Event-ID forward).
const PROGRESS_EVERY: Duration = Duration::from_secs(15);

fn key_of(p: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    match p {
        Ok(Path(k)) => Ok(k),
        Err(e) => Err(Error::InvalidKey(format!(
            "the key in the path is not valid percent-encoded UTF-8: {}",
            e.body_text()
        ))
        .into()),
    }
}

fn etag(version: u64) -> HeaderValue {
    // Formatted on the stack: the header value is the only allocation.
    let mut buf = [0u8; 24];
    let len = {
        use std::io::Write;
        let mut w = &mut buf[..];
        let _ = write!(w, "\"{version}\"");
        24 - w.len()
    };
    HeaderValue::from_bytes(&buf[..len]).unwrap_or(HeaderValue::from_static("\"0\""))
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

/// `{"key":…,"value":…,"version":"…"}`, with the stored JSON text put in as it is. Built in
/// one allocation of the right size: values are often over 1 KiB, and every growing copy of
/// one is a large-chunk malloc (which makes glibc consolidate its fast bins).
fn entry_json(e: &Entry) -> String {
    use std::fmt::Write;
    let key = json_string(&e.key);
    let value = e.value.as_deref();
    let mut out = String::with_capacity(key.len() + value.map_or(0, str::len) + 48);
    out.push_str("{\"key\":");
    out.push_str(&key);
    if let Some(v) = value {
        out.push_str(",\"value\":");
        out.push_str(v);
    }
    // Writing to a String cannot fail.
    let _ = write!(out, ",\"version\":\"{}\"}}", e.version);
    out
}

/// A JSON response, its header map sized once for what every response gets on the way out
/// (ETag, the security headers, the request id, rate-limit headers).
fn json_response(status: StatusCode, body: String) -> Response {
    let mut resp = Response::new(axum::body::Body::from(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    let _ = h.try_reserve(10);
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn written_json(w: &Written) -> String {
    use std::fmt::Write;
    let key = json_string(&w.key);
    let mut out = String::with_capacity(key.len() + 40);
    out.push_str("{\"key\":");
    out.push_str(&key);
    // Writing to a String cannot fail.
    let _ = write!(out, ",\"version\":\"{}\"}}", w.version);
    out
}

fn written_response(w: &Written) -> Response {
    let status = if w.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut resp = json_response(status, written_json(w));
    resp.headers_mut().insert(header::ETAG, etag(w.version));
    resp
}

/// The condition of a change from `If-Match` / `If-None-Match: *`.
fn cond_of(headers: &HeaderMap) -> Result<Cond, ApiError> {
    let text = |name: header::HeaderName| {
        headers
            .get(&name)
            .map(|v| {
                v.to_str()
                    .map_err(|_| ApiError::bad_request(format!("{name} is not ASCII")))
            })
            .transpose()
    };
    let if_match = text(header::IF_MATCH)?;
    let if_none = text(header::IF_NONE_MATCH)?;
    match (if_match, if_none) {
        (Some(_), Some(_)) => Err(ApiError::bad_request(
            "send If-Match or If-None-Match, not both",
        )),
        (Some(m), None) => Ok(kv::parse_version(m)?),
        (None, Some(n)) if n.trim() == "*" => Ok(Cond::Absent),
        (None, Some(n)) => Err(ApiError::bad_request(format!(
            "If-None-Match on a change takes only *, got {n:?}"
        ))),
        (None, None) => Ok(Cond::Any),
    }
}

fn body_of(state: &AppState, b: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    b.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            let (_, what) = BodyLimit::KvValue.resolve(&state.live.get());
            ApiError::payload_too_large(format!("request body is larger than {what}"))
        } else {
            ApiError::bad_request(format!("cannot read request body: {}", r.body_text()))
        }
    })
}

fn value_of(body: &[u8]) -> Result<Arc<str>, ApiError> {
    serde_json::from_slice::<&RawValue>(body)
        .map(|raw| Arc::from(raw.get()))
        .map_err(|e| {
            ApiError::invalid_json(format!(
                "the value is not JSON (line {}, column {}): {e}",
                e.line(),
                e.column()
            ))
        })
}

fn ttl_of(ttl: Option<&str>) -> Result<Option<Duration>, ApiError> {
    Ok(ttl.map(kv::parse_ttl).transpose()?)
}

/// Applies one op and answers with its result.
async fn apply_one(state: &AppState, op: Op, caller: Caller) -> Result<Response, ApiError> {
    let cfg = state.live.get();
    let applied = state.kv.apply(vec![op], caller, &cfg.kv).await?;
    let w = applied
        .written
        .first()
        .ok_or_else(|| Error::Internal("an applied op has no result".into()))?;
    Ok(written_response(w))
}

/// `GET /api/v1/data/{*key}` (and HEAD): the value, its version as ETag; 304 for a matching
/// `If-None-Match`.
#[utoipa::path(
    get,
    path = "/api/v1/data/{key}",
    tag = "data",
    operation_id = "data_get",
    description = "The key's value; HEAD answers the same without the body.",
    params(("key" = String, Path, min_length = 1, max_length = 1024, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$", description = "The key (the rest of the path, `/` included; percent-decoded): 1 to 1024 bytes of UTF-8 without control characters."),
        ("If-None-Match" = Option<String>, Header, nullable = false, description = "A version (quoted) or `*`: 304 when it matches.")),
    responses(
        (status = 200, description = "The key, its value and version.", body = crate::api::openapi::KvEntry,
            headers(("ETag" = String, description = "The version, quoted."))),
        (status = 304, description = "Not modified (If-None-Match matched).",
            headers(("ETag" = String, description = "The version, quoted."))),
        (status = 400, description = "An invalid key (`invalid_key`).", body = crate::api::openapi::ErrorResponse),
        (status = 404, description = "No such key (`not_found`).", body = crate::api::openapi::ErrorResponse),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    key: Result<Path<String>, PathRejection>,
    // The headers read in place (the HeaderMap extractor would copy them all).
    req: Request,
) -> Result<Response, ApiError> {
    let key = key_of(key)?;
    let entry = state
        .kv
        .get(&key)
        .await?
        .ok_or_else(|| Error::NotFound(format!("no key {key:?}")))?;
    let tag = etag(entry.version);
    if req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag || t.trim() == "*"))
    {
        let mut resp = StatusCode::NOT_MODIFIED.into_response();
        resp.headers_mut().insert(header::ETAG, tag);
        return Ok(resp);
    }
    let mut resp = json_response(StatusCode::OK, entry_json(&entry));
    resp.headers_mut().insert(header::ETAG, tag);
    Ok(resp)
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PutQuery {
    /// Make the key expire after this long (e.g. `60s`, `5m`, `1h`; at most 10 years).
    #[param(
        pattern = "^ *([0-9]+ *(nsec|ns|usec|us|msec|ms|seconds|second|sec|s|minutes|minute|min|m|hours|hour|hr|h|days|day|d|weeks|week|w|months|month|M|years|year|y) *)+$"
    )]
    ttl: Option<String>,
}

/// `PUT /api/v1/data/{*key}`: the body is the value. `If-Match` makes it a compare-and-set,
/// `If-None-Match: *` create-only; `?ttl=60s` makes the key expire.
#[utoipa::path(
    put,
    path = "/api/v1/data/{key}",
    tag = "data",
    operation_id = "data_put",
    params(("key" = String, Path, min_length = 1, max_length = 1024, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$", description = "The key (the rest of the path, `/` included; percent-decoded): 1 to 1024 bytes of UTF-8 without control characters."), PutQuery, ("If-Match" = Option<String>, Header, nullable = false, pattern = "^(W/)?\"?([0-9]{1,19}|\\*)\"?$", description = "Change only if the key has this version (quoted or not), or `*`: if it exists."), ("If-None-Match" = Option<String>, Header, nullable = false, pattern = "^\\*$", description = "`*`: create only (the key must not exist).")),
    request_body(content = crate::api::openapi::AnyJson, content_type = "application/json", description = "The value: any JSON."),
    responses(
        (status = 200, description = "Replaced.", body = crate::api::openapi::KvWritten,
            headers(("ETag" = String, description = "The new version, quoted."))),
        (status = 201, description = "Created.", body = crate::api::openapi::KvWritten,
            headers(("ETag" = String, description = "The new version, quoted."))),
        (status = 400, description = "An invalid key (`invalid_key`), a value that is not JSON (`invalid_json`), a bad ttl or condition (`bad_request`).", body = crate::api::openapi::ErrorResponse),
        (status = 412, description = "The If-Match / If-None-Match condition does not hold (`precondition_failed`).", body = crate::api::openapi::ErrorResponse),
        (status = 413, description = "A value larger than kv.max-value-size (`payload_too_large`).", body = crate::api::openapi::ErrorResponse),
        (status = 507, description = "A kv quota is used up (`quota_exceeded`), or the disk is full or below storage.min-free-disk (`insufficient_storage`).", body = crate::api::openapi::ErrorResponse),
    )
)]
pub async fn put(
    State(state): State<AppState>,
    Requester { caller, .. }: Requester,
    key: Result<Path<String>, PathRejection>,
    q: Result<Query<PutQuery>, QueryRejection>,
    req: Request,
) -> Result<Response, ApiError> {
    let key = key_of(key)?;
    let Query(q) = q?;
    // The headers read in place (the HeaderMap extractor would copy them all).
    let cond = cond_of(req.headers())?;
    let ttl = ttl_of(q.ttl.as_deref())?;
    let body = body_of(&state, Bytes::from_request(req, &state).await)?;
    let value = value_of(&body)?;
    let op = Op {
        key,
        value: Some(value),
        cond,
        ttl,
    };
    apply_one(&state, op, caller).await
}

/// `DELETE /api/v1/data/{*key}`; `If-Match` makes it conditional.
#[utoipa::path(
    delete,
    path = "/api/v1/data/{key}",
    tag = "data",
    operation_id = "data_delete",
    params(("key" = String, Path, min_length = 1, max_length = 1024, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$", description = "The key (the rest of the path, `/` included; percent-decoded): 1 to 1024 bytes of UTF-8 without control characters."), ("If-Match" = Option<String>, Header, nullable = false, pattern = "^(W/)?\"?([0-9]{1,19}|\\*)\"?$", description = "Change only if the key has this version (quoted or not), or `*`: if it exists.")),
    responses(
        (status = 200, description = "Deleted: the version of the deletion.", body = crate::api::openapi::KvWritten,
            headers(("ETag" = String, description = "The deletion's version, quoted."))),
        (status = 400, description = "An invalid key (`invalid_key`) or condition (`bad_request`).", body = crate::api::openapi::ErrorResponse),
        (status = 404, description = "No such key (`not_found`).", body = crate::api::openapi::ErrorResponse),
        (status = 412, description = "The If-Match / If-None-Match condition does not hold (`precondition_failed`).", body = crate::api::openapi::ErrorResponse),
    )
)]
pub async fn delete(
    State(state): State<AppState>,
    Requester { caller, .. }: Requester,
    key: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let key = key_of(key)?;
    let cond = cond_of(&headers)?;
    let op = Op {
        key,
        value: None,
        cond,
        ttl: None,
    };
    let mut resp = apply_one(&state, op, caller).await?;
    *resp.status_mut() = StatusCode::OK;
    Ok(resp)
}

/// Deserializes a present value, `null` included, as `Some` (serde's `Option` would make
/// `null` look absent).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(d).map(Some)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PostBody {
    #[schema(
        min_length = 1,
        max_length = 1024,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$"
    )]
    key: String,
    /// Any JSON value.
    #[schema(value_type = crate::api::openapi::AnyJson)]
    value: Box<RawValue>,
    /// Make the key expire after this long (e.g. `60s`; at most 10 years).
    #[schema(
        pattern = "^ *([0-9]+ *(nsec|ns|usec|us|msec|ms|seconds|second|sec|s|minutes|minute|min|m|hours|hour|hr|h|days|day|d|weeks|week|w|months|month|M|years|year|y) *)+$"
    )]
    ttl: Option<String>,
}

/// `POST /api/v1/data` with `{"key":…,"value":…}`, as the old clients send it.
#[utoipa::path(
    post,
    path = "/api/v1/data",
    tag = "data",
    operation_id = "data_post",
    params(("If-Match" = Option<String>, Header, nullable = false, pattern = "^(W/)?\"?([0-9]{1,19}|\\*)\"?$", description = "Change only if the key has this version (quoted or not), or `*`: if it exists."), ("If-None-Match" = Option<String>, Header, nullable = false, pattern = "^\\*$", description = "`*`: create only (the key must not exist).")),
    request_body(content = PostBody, content_type = "application/json"),
    responses(
        (status = 200, description = "Replaced.", body = crate::api::openapi::KvWritten,
            headers(("ETag" = String, description = "The new version, quoted."))),
        (status = 201, description = "Created.", body = crate::api::openapi::KvWritten,
            headers(("ETag" = String, description = "The new version, quoted."))),
        (status = 400, description = "An invalid key (`invalid_key`), a value that is not JSON (`invalid_json`), a bad ttl or condition (`bad_request`).", body = crate::api::openapi::ErrorResponse),
        (status = 412, description = "The If-Match / If-None-Match condition does not hold (`precondition_failed`).", body = crate::api::openapi::ErrorResponse),
        (status = 413, description = "A value larger than kv.max-value-size (`payload_too_large`).", body = crate::api::openapi::ErrorResponse),
        (status = 507, description = "A kv quota is used up (`quota_exceeded`), or the disk is full or below storage.min-free-disk (`insufficient_storage`).", body = crate::api::openapi::ErrorResponse),
    )
)]
pub async fn post(
    State(state): State<AppState>,
    Requester { caller, .. }: Requester,
    headers: HeaderMap,
    Json(body): Json<PostBody>,
) -> Result<Response, ApiError> {
    let op = Op {
        key: body.key,
        value: Some(Arc::from(body.value.get())),
        cond: cond_of(&headers)?,
        ttl: ttl_of(body.ttl.as_deref())?,
    };
    apply_one(&state, op, caller).await
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchBody {
    /// At least one; at most `kv.max-batch-ops`.
    #[schema(min_items = 1)]
    ops: Vec<BatchOp>,
}

#[derive(Deserialize, PartialEq, Eq, Clone, Copy, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
enum OpKind {
    Put,
    Delete,
}

/// A version (`"7"` or `7`), or `"*"`: the key must exist.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
enum VersionText {
    Text(String),
    Number(u64),
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchOp {
    op: OpKind,
    #[schema(
        min_length = 1,
        max_length = 1024,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$"
    )]
    key: String,
    /// A put's value (any JSON, `null` included); a delete has none.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = crate::api::openapi::AnyJson, required = false)]
    value: Option<Box<RawValue>>,
    if_version: Option<VersionText>,
    /// A put's expiry (e.g. `60s`; at most 10 years).
    #[schema(
        pattern = "^ *([0-9]+ *(nsec|ns|usec|us|msec|ms|seconds|second|sec|s|minutes|minute|min|m|hours|hour|hr|h|days|day|d|weeks|week|w|months|month|M|years|year|y) *)+$"
    )]
    ttl: Option<String>,
}

/// `POST /api/v1/data:batch`: every op applied at one revision, or none (412 naming the key
/// whose condition failed).
#[utoipa::path(
    post,
    path = "/api/v1/data:batch",
    tag = "data",
    operation_id = "data_batch",
    request_body(content = BatchBody, content_type = "application/json"),
    responses(
        (status = 200, description = "Every op applied, at one revision.", body = crate::api::openapi::KvBatchResult),
        (status = 400, description = "A bad op: invalid key (`invalid_key`), not JSON (`invalid_json`), a put without a value, a key twice, too many ops (`bad_request`).", body = crate::api::openapi::ErrorResponse),
        (status = 404, description = "A delete of a key that does not exist; nothing was applied (`not_found`).", body = crate::api::openapi::ErrorResponse),
        (status = 412, description = "An op's if_version does not hold; nothing was applied; the message names the key (`precondition_failed`).", body = crate::api::openapi::ErrorResponse),
        (status = 413, description = "A value larger than kv.max-value-size (`payload_too_large`).", body = crate::api::openapi::ErrorResponse),
        (status = 507, description = "A kv quota is used up (`quota_exceeded`), or the disk is full or below storage.min-free-disk (`insufficient_storage`).", body = crate::api::openapi::ErrorResponse),
    )
)]
pub async fn batch(
    State(state): State<AppState>,
    Requester { caller, .. }: Requester,
    Json(body): Json<BatchBody>,
) -> Result<Response, ApiError> {
    let mut ops = Vec::with_capacity(body.ops.len());
    for (i, b) in body.ops.into_iter().enumerate() {
        let cond = match &b.if_version {
            None => Cond::Any,
            Some(VersionText::Number(n)) => kv::parse_version(&n.to_string())?,
            Some(VersionText::Text(t)) if t.trim() == "*" => Cond::Exists,
            Some(VersionText::Text(t)) => kv::parse_version(t)?,
        };
        let value = match (b.op, b.value) {
            (OpKind::Put, Some(v)) => Some(Arc::from(v.get())),
            (OpKind::Put, None) => {
                return Err(ApiError::bad_request(format!(
                    "ops[{i}]: a put needs a value"
                )));
            }
            (OpKind::Delete, None) => None,
            (OpKind::Delete, Some(_)) => {
                return Err(ApiError::bad_request(format!(
                    "ops[{i}]: a delete takes no value"
                )));
            }
        };
        if b.op == OpKind::Delete && b.ttl.is_some() {
            return Err(ApiError::bad_request(format!(
                "ops[{i}]: a delete takes no ttl"
            )));
        }
        ops.push(Op {
            key: b.key,
            value,
            cond,
            ttl: ttl_of(b.ttl.as_deref())?,
        });
    }
    let cfg = state.live.get();
    let applied = state.kv.apply(ops, caller, &cfg.kv).await?;
    let results: Vec<String> = applied.written.iter().map(written_json).collect();
    Ok(json_response(
        StatusCode::OK,
        format!(
            "{{\"revision\":\"{}\",\"results\":[{}]}}",
            applied.revision,
            results.join(",")
        ),
    ))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only keys that start with this.
    #[serde(default)]
    prefix: String,
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    cursor: Option<String>,
    /// Leave the values out.
    #[serde(default)]
    keys_only: bool,
    /// Answer with the change stream (Server-Sent Events) instead of a page.
    #[serde(default)]
    watch: bool,
    /// With `watch=true`: the revision to stream changes from (else `Last-Event-ID`, else now).
    since: Option<String>,
}

/// `GET /api/v1/data?prefix=&limit=&cursor=&keys_only=`: a page of live entries in key order,
/// with the store revision to watch from. With `watch=true`: the change stream.
#[utoipa::path(
    get,
    path = "/api/v1/data",
    tag = "data",
    operation_id = "data_list",
    description = "A page of live keys in key order, with the store revision. With `watch=true`: \
        Server-Sent Events `put`/`delete` (`{\"type\",\"key\",\"value\"?,\"version\"}`, id = the \
        revision), `progress` (`{\"revision\"}`) while idle, and a last `error` event if the change \
        log cannot be read.",
    params(ListQuery,
        ("Last-Event-ID" = Option<String>, Header, nullable = false, description = "With `watch=true`: resume after this revision.")),
    responses(
        (status = 200, description = "A page of keys, or the change stream.",
            content(
                (crate::api::openapi::KvPage = "application/json"),
                (crate::api::openapi::SseEvent = "text/event-stream"),
            )),
        (status = 400, description = "A bad limit, cursor, since or other query parameter (`bad_request`).", body = crate::api::openapi::ErrorResponse),
        (status = 410, description = "The resume point is older than the kept history: list again (`gone`).", body = crate::api::openapi::ErrorResponse),
        (status = 429, description = "Too many open watch streams for this token or in all, or the rate limit (`rate_limited`).", body = crate::api::openapi::ErrorResponse,
            headers(("Retry-After" = String, description = "Seconds to wait before retrying."))),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    Requester { actor, .. }: Requester,
    q: Result<Query<ListQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Query(q) = q?;
    if q.watch {
        return watch(state, q, &headers, &actor).await;
    }
    if q.since.is_some() {
        return Err(ApiError::bad_request("since is only for watch=true"));
    }
    let limit = super::page_limit(q.limit)?;
    let page = state
        .kv
        .list(&q.prefix, q.cursor.as_deref(), limit, q.keys_only)
        .await?;
    let items: Vec<String> = page.items.iter().map(entry_json).collect();
    let cursor = page
        .next_cursor
        .as_deref()
        .map(json_string)
        .unwrap_or_else(|| "null".to_owned());
    Ok(json_response(
        StatusCode::OK,
        format!(
            "{{\"items\":[{}],\"next_cursor\":{cursor},\"revision\":\"{}\"}}",
            items.join(","),
            page.revision
        ),
    ))
}

fn change_event(c: &Change) -> Event {
    let version = format!("\"version\":\"{}\"", c.revision);
    let data = match &c.value {
        Some(v) => format!(
            "{{\"type\":\"{}\",\"key\":{},\"value\":{v},{version}}}",
            c.kind.as_str(),
            json_string(&c.key)
        ),
        None => format!(
            "{{\"type\":\"{}\",\"key\":{},{version}}}",
            c.kind.as_str(),
            json_string(&c.key)
        ),
    };
    let ev = Event::default().event(c.kind.as_str()).data(data);
    // Only the last change of a revision is a point to resume from (a batch is one revision).
    if c.last_of_revision {
        ev.id(c.revision.to_string())
    } else {
        ev
    }
}

/// The SSE event of one item of a change stream: a change, a progress mark (a resume point,
/// so the client's Last-Event-ID moves on while nothing changes) or the error that ends it.
fn watch_event(item: WatchItem) -> Event {
    match item {
        WatchItem::Change(c) => change_event(&c),
        WatchItem::Progress(revision) => {
            let data = format!("{{\"revision\":\"{revision}\"}}");
            Event::default()
                .event("progress")
                .id(revision.to_string())
                .data(data)
        }
        WatchItem::Failed(e) => {
            let (code, message) = match &e {
                Error::Gone(m) => ("gone", m.clone()),
                other => {
                    tracing::warn!(error = %other, "watch stream ends on an error");
                    (
                        "unavailable",
                        "the change log cannot be read now".to_owned(),
                    )
                }
            };
            let data = serde_json::json!({"error": {"code": code, "message": message}});
            Event::default().event("error").data(data.to_string())
        }
    }
}

/// `watch=true`: Server-Sent Events from `since` (or `Last-Event-ID`, or now) on. A resume
/// point older than the kept history answers 410 before the stream starts.
async fn watch(
    state: AppState,
    q: ListQuery,
    headers: &HeaderMap,
    actor: &Actor,
) -> Result<Response, ApiError> {
    if q.cursor.is_some() || q.limit.is_some() || q.keys_only {
        return Err(ApiError::bad_request(
            "watch=true takes prefix and since only",
        ));
    }
    // A token's streams count together, whether opened with the token or a session of it.
    let owner = actor.token_id.as_deref().unwrap_or(&actor.name);
    let slot = state.watches.acquire(owner)?;
    let since = q.since.as_deref().or_else(|| {
        headers
            .get("last-event-id")
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
    });
    let since = since
        .map(|s| {
            s.trim().parse::<u64>().map_err(|_| {
                ApiError::bad_request(format!(
                    "since must be a revision (a non-negative integer), got {s:?}"
                ))
            })
        })
        .transpose()?;
    // Refuses (410) a resume point whose changes are no longer kept, before streaming.
    let watch = Watch::open(
        &state.kv,
        slot,
        q.prefix,
        since,
        state.health.shutting_down.clone(),
        PROGRESS_EVERY,
    )
    .await?;
    let stream = futures_util::StreamExt::map(watch.into_stream(), |item| {
        Ok::<_, Infallible>(watch_event(item))
    });
    let mut resp = Sse::new(stream).into_response();
    // nginx passes the stream on as it comes instead of buffering it.
    resp.headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(resp)
}
