//! `/api/v1/files…`: uploads (raw `PUT`, multipart `POST`), downloads (ETag, conditional
//! requests, single ranges, HEAD, `?download=1`), `?meta=1`, the listing, `DELETE` and
//! `files:usage`. Thin: HTTP headers in, a `files` call, HTTP headers out.

use axum::body::Body;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use axum::extract::multipart::MultipartError;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::json;

use super::error::ApiError;
use super::extract::{IdleBounded, Requester};
use crate::api::state::AppState;
use crate::store::files::{self, Conditions, FileMeta, RangeSpec, Sort, Stored};

fn path_arg(p: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    match p {
        Ok(Path(p)) => Ok(p),
        Err(r) => Err(ApiError::invalid_path(format!(
            "the file path is not valid: {}",
            r.body_text()
        ))),
    }
}

/// `?x=1|true|0|false`.
fn flag(v: Option<&str>, name: &str) -> Result<bool, ApiError> {
    match v {
        None | Some("0") | Some("false") => Ok(false),
        Some("1") | Some("true") | Some("") => Ok(true),
        Some(other) => Err(ApiError::bad_request(format!(
            "{name} must be true, false, 1 or 0, got {other:?}"
        ))),
    }
}

fn content_length(h: &HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// Entity tags of an If-Match / If-None-Match list, without quotes or `W/`.
fn etags(v: &str) -> Vec<String> {
    v.split(',')
        .map(|t| {
            let t = t.trim();
            let t = t.strip_prefix("W/").unwrap_or(t);
            t.trim_matches('"').to_owned()
        })
        .filter(|t| !t.is_empty())
        .collect()
}

/// `If-None-Match: *` (create only) and `If-Match` (replace only that version) on uploads.
fn conditions(h: &HeaderMap) -> Result<Conditions, ApiError> {
    let mut cond = Conditions::default();
    if let Some(v) = h.get(header::IF_NONE_MATCH) {
        let v = v.to_str().unwrap_or("").trim();
        if v != "*" {
            return Err(ApiError::bad_request(
                "on uploads If-None-Match takes only * (store only if no file exists there)",
            ));
        }
        cond.create_only = true;
    }
    if let Some(v) = h.get(header::IF_MATCH) {
        cond.if_match = Some(etags(v.to_str().unwrap_or("")));
    }
    Ok(cond)
}

/// The SHA-256 a client announced, as hex: `Content-Digest: sha-256=:BASE64:` (RFC 9530) or
/// `X-Checksum-Sha256: HEX` (or base64). Both given must agree.
fn expected_digest(h: &HeaderMap) -> Result<Option<String>, ApiError> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut found: Option<String> = None;
    if let Some(v) = h.get("content-digest") {
        let v = v
            .to_str()
            .map_err(|_| ApiError::bad_request("Content-Digest is not ASCII"))?;
        for item in v.split(',') {
            let Some((alg, value)) = item.trim().split_once('=') else {
                return Err(ApiError::bad_request(
                    "Content-Digest must look like sha-256=:BASE64:",
                ));
            };
            if !alg.trim().eq_ignore_ascii_case("sha-256") {
                continue;
            }
            let inner = value
                .trim()
                .strip_prefix(':')
                .and_then(|x| x.strip_suffix(':'))
                .ok_or_else(|| {
                    ApiError::bad_request("Content-Digest sha-256 value must be :BASE64:")
                })?;
            let bytes = b64
                .decode(inner)
                .ok()
                .filter(|b| b.len() == 32)
                .ok_or_else(|| {
                    ApiError::bad_request("Content-Digest sha-256 is not 32 bytes of base64")
                })?;
            found = Some(hex::encode(bytes));
        }
    }
    if let Some(v) = h.get("x-checksum-sha256") {
        let v = v.to_str().unwrap_or("").trim();
        let hexed = if v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()) {
            v.to_ascii_lowercase()
        } else {
            b64.decode(v)
                .ok()
                .filter(|b| b.len() == 32)
                .map(hex::encode)
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "X-Checksum-Sha256 must be the SHA-256 in hex (64 digits) or base64",
                    )
                })?
        };
        if found.as_deref().is_some_and(|f| f != hexed) {
            return Err(ApiError::bad_request(
                "Content-Digest and X-Checksum-Sha256 name different digests",
            ));
        }
        found = Some(hexed);
    }
    Ok(found)
}

/// `/api/v1/files/a/b c.txt` with each segment percent-encoded.
fn location(path: &str) -> String {
    const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    let encoded: Vec<String> = path
        .split('/')
        .map(|s| percent_encoding::utf8_percent_encode(s, SEGMENT).to_string())
        .collect();
    format!("/api/v1/files/{}", encoded.join("/"))
}

fn etag_of(meta: &FileMeta) -> String {
    format!("\"{}\"", meta.sha256)
}

fn stored_response(s: &Stored) -> Response {
    let status = if s.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut resp = (status, axum::Json(&s.meta)).into_response();
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&etag_of(&s.meta)) {
        h.insert(header::ETAG, v);
    }
    if s.created
        && let Ok(v) = HeaderValue::from_str(&location(&s.meta.path))
    {
        h.insert(header::LOCATION, v);
    }
    resp
}

/// `PUT /api/v1/files/{path}`: the body is the file.
#[utoipa::path(
    put,
    path = "/api/v1/files/{path}",
    tag = "files",
    operation_id = "files_put",
    params(("path" = String, Path, description = "The file's path (the rest of the URL path, `/` included; percent-decoded)."), ("If-Match" = Option<String>, Header, nullable = false, description = "Replace only the file with this ETag."), ("If-None-Match" = Option<String>, Header, nullable = false, description = "`*`: store only if no file exists there."), ("Content-Digest" = Option<String>, Header, nullable = false, description = "`sha-256=:BASE64:` (RFC 9530): refuse the upload (422) unless the content has this SHA-256."),
        ("X-Checksum-Sha256" = Option<String>, Header, nullable = false, description = "The content's SHA-256 in hex or base64, as Content-Digest.")),
    request_body(content((crate::api::openapi::Binary = "*/*")), description = "The file's bytes, of any type (the Content-Type is stored and served back)."),
    responses(
        (status = 200, description = "Replaced.", body = crate::store::files::FileMeta,
            headers(("ETag" = String, description = "The content's SHA-256, quoted."))),
        (status = 201, description = "Created.", body = crate::store::files::FileMeta,
            headers(
                ("ETag" = String, description = "The content's SHA-256, quoted."),
                ("Location" = String, description = "The file's URL."),
            )),
        (status = 400, description = "An invalid path (`invalid_path`), a bad condition or digest header, or the body stopped or stalled (`bad_request`).", body = crate::api::openapi::ErrorResponse),
        (status = 412, description = "The If-Match / If-None-Match condition does not hold (`precondition_failed`).", body = crate::api::openapi::ErrorResponse),
        (status = 413, description = "Larger than files.max-file-size (`payload_too_large`).", body = crate::api::openapi::ErrorResponse),
        (status = 422, description = "The content's SHA-256 is not the one announced (`unprocessable`).", body = crate::api::openapi::ErrorResponse),
        (status = 507, description = "files.max-total-size or files.max-files is used up (`quota_exceeded`), or the disk is full or below storage.min-free-disk (`insufficient_storage`).", body = crate::api::openapi::ErrorResponse),
    )
)]
pub async fn upload(
    State(state): State<AppState>,
    Requester { caller, .. }: Requester,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let path = path_arg(path)?;
    let cond = conditions(&headers)?;
    let expected = expected_digest(&headers)?;
    let stored = state
        .files
        .put(
            &path,
            body.into_data_stream(),
            content_length(&headers),
            expected,
            cond,
            caller,
        )
        .await?;
    Ok(stored_response(&stored))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FormQuery {
    /// Folder the form's files go into (`docs/` or `docs`).
    prefix: Option<String>,
}

/// `POST /api/v1/files` (multipart/form-data): every part with a filename is a file, stored
/// at `prefix` + filename; all of them commit together, or none.
#[utoipa::path(
    post,
    path = "/api/v1/files",
    tag = "files",
    operation_id = "files_upload_form",
    params(FormQuery, ("If-Match" = Option<String>, Header, nullable = false, description = "Replace only the file with this ETag."), ("If-None-Match" = Option<String>, Header, nullable = false, description = "`*`: store only if no file exists there.")),
    request_body(content = crate::api::openapi::FilesForm, content_type = "multipart/form-data",
        description = "Every part with a filename is a file, stored at `?prefix=` + its filename; all commit together, or none. A part may carry Content-Digest / X-Checksum-Sha256."),
    responses(
        (status = 200, description = "Stored; every file replaced one.", body = crate::api::openapi::StoredFiles),
        (status = 201, description = "Stored; at least one file is new.", body = crate::api::openapi::StoredFiles),
        (status = 400, description = "Not a multipart body, no file in it, an invalid path (`invalid_path`), or the body stopped or stalled (`bad_request`).", body = crate::api::openapi::ErrorResponse),
        (status = 412, description = "The If-Match / If-None-Match condition does not hold (`precondition_failed`).", body = crate::api::openapi::ErrorResponse),
        (status = 413, description = "Larger than files.max-file-size (`payload_too_large`).", body = crate::api::openapi::ErrorResponse),
        (status = 422, description = "The content's SHA-256 is not the one announced (`unprocessable`).", body = crate::api::openapi::ErrorResponse),
        (status = 507, description = "files.max-total-size or files.max-files is used up (`quota_exceeded`), or the disk is full or below storage.min-free-disk (`insufficient_storage`).", body = crate::api::openapi::ErrorResponse),
    )
)]
pub async fn upload_form(
    State(state): State<AppState>,
    Requester { caller, .. }: Requester,
    q: Result<Query<FormQuery>, QueryRejection>,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, ApiError> {
    let Query(q) = q?;
    // Every read of the form is bounded, not only a file's bytes: the parts that are not
    // files (skipped here) and the head of each part are read through the same body.
    let idle = state.live.get().files.upload_idle_timeout.get();
    let (request, stalled) = IdleBounded::wrap(request, idle, "files.upload-idle-timeout");
    let mut form = Multipart::from_request(request, &()).await.map_err(|r| {
        ApiError::bad_request(format!("not a multipart/form-data body: {}", r.body_text()))
    })?;
    let idle_error = || {
        ApiError::bad_request(format!(
            "the upload sent nothing for files.upload-idle-timeout ({}); aborted, nothing was stored",
            humantime::format_duration(idle)
        ))
    };
    let malformed = |e: MultipartError| {
        if stalled.load(Ordering::Relaxed) {
            idle_error()
        } else {
            ApiError::bad_request(format!("malformed multipart body: {e}"))
        }
    };
    let mut prefix = q.prefix.unwrap_or_default();
    if !prefix.is_empty() && !prefix.ends_with('/') {
        prefix.push('/');
    }
    let mut batch = state
        .files
        .batch(conditions(&headers)?, caller, content_length(&headers))?;
    while let Some(field) = form.next_field().await.map_err(malformed)? {
        // Parts without a filename are form fields, not files: skipped.
        let Some(name) = field.file_name().map(str::to_owned) else {
            continue;
        };
        let expected = expected_digest(field.headers())?;
        batch
            .add(&format!("{prefix}{name}"), field, None, expected)
            .await
            .map_err(|e| {
                if stalled.load(Ordering::Relaxed) {
                    idle_error()
                } else {
                    ApiError::from(e)
                }
            })?;
    }
    if batch.is_empty() {
        return Err(ApiError::bad_request(
            "the form has no file: send each file as a part with a filename",
        ));
    }
    let stored = batch.commit().await?;
    let items: Vec<&FileMeta> = stored.iter().map(|s| &s.meta).collect();
    let any_created = stored.iter().any(|s| s.created);
    let status = if any_created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(json!({ "items": items }))).into_response())
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct GetQuery {
    /// `1`/`true`: the file's metadata (JSON) instead of its content.
    meta: Option<String>,
    /// `1`/`true`: `Content-Disposition: attachment` with the file's name.
    download: Option<String>,
}

/// A single `bytes=` range; `None` for anything else (several ranges, other units, bad
/// syntax), which is answered with the whole file as RFC 9110 allows.
fn parse_range(v: &str) -> Option<RangeSpec> {
    let spec = v.trim().strip_prefix("bytes=")?.trim();
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    let num = |s: &str| -> Option<u64> {
        if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    match (a.is_empty(), b.is_empty()) {
        (true, false) => num(b).map(RangeSpec::Suffix),
        (false, true) => num(a).map(RangeSpec::From),
        (false, false) => {
            let (first, last) = (num(a)?, num(b)?);
            (first <= last).then_some(RangeSpec::FromTo(first, last))
        }
        (true, true) => None,
    }
}

/// `filename="ascii fallback"; filename*=UTF-8''percent-encoded` (RFC 6266 / RFC 8187).
fn content_disposition(path: &str) -> String {
    const ATTR: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'!')
        .remove(b'#')
        .remove(b'$')
        .remove(b'&')
        .remove(b'+')
        .remove(b'-')
        .remove(b'.')
        .remove(b'^')
        .remove(b'_')
        .remove(b'`')
        .remove(b'|')
        .remove(b'~');
    let name = path.rsplit('/').next().unwrap_or(path);
    let fallback: String = name
        .chars()
        .map(|c| {
            if (c.is_ascii_graphic() || c == ' ') && !matches!(c, '"' | '\\' | '%' | ';') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!(
        "attachment; filename=\"{fallback}\"; filename*=UTF-8''{}",
        percent_encoding::utf8_percent_encode(name, ATTR)
    )
}

fn set(h: &mut HeaderMap, name: header::HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(name, v);
    }
}

/// The validators every download answer carries, 304 included: the ETag and Last-Modified a
/// client revalidates with, how caches may keep it, and that ranges are served.
fn validator_headers(etag: &str, last_modified: &str) -> HeaderMap {
    let mut out = HeaderMap::new();
    set(&mut out, header::ETAG, etag);
    set(&mut out, header::LAST_MODIFIED, last_modified);
    // Authenticated content: caches may keep it only for this user, and must revalidate.
    set(&mut out, header::CACHE_CONTROL, "private, no-cache");
    set(&mut out, header::ACCEPT_RANGES, "bytes");
    out
}

/// Whether a conditional GET is answered 304: the client's copy (named by `If-None-Match`,
/// or else dated by `If-Modified-Since`) is the stored version, whose content hash is
/// `sha256` and which was last modified at `modified`. If-None-Match wins over
/// If-Modified-Since (RFC 9110 13.2.2).
fn not_modified(headers: &HeaderMap, sha256: &str, modified: SystemTime) -> bool {
    if let Some(v) = headers.get(header::IF_NONE_MATCH) {
        let v = v.to_str().unwrap_or("");
        v.trim() == "*" || etags(v).iter().any(|t| t == sha256)
    } else if let Some(since) = headers
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
    {
        // HTTP dates have whole seconds.
        httpdate::HttpDate::from(modified) <= httpdate::HttpDate::from(since)
    } else {
        false
    }
}

/// The single range the client asked for, if it holds: `If-Range` makes a range hold only for
/// the version the client has (by its ETag or Last-Modified), else the whole file is sent.
fn requested_range(headers: &HeaderMap, etag: &str, last_modified: &str) -> Option<RangeSpec> {
    let range_applies = match headers.get(header::IF_RANGE).and_then(|v| v.to_str().ok()) {
        None => true,
        Some(v) => v.trim() == etag || v.trim() == last_modified,
    };
    headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_range)
        .filter(|_| range_applies)
}

/// The status, first byte and length of what is sent of a file of `size` bytes: the range
/// (206, with its Content-Range in `out`; 416 when it lies past the end) or the whole file.
fn span(
    range: Option<RangeSpec>,
    size: u64,
    out: &mut HeaderMap,
) -> Result<(StatusCode, u64, u64), ApiError> {
    Ok(match range {
        Some(spec) => {
            let (first, last) = files::resolve_range(spec, size)?;
            set(
                out,
                header::CONTENT_RANGE,
                &format!("bytes {first}-{last}/{size}"),
            );
            (StatusCode::PARTIAL_CONTENT, first, last - first + 1)
        }
        None => (StatusCode::OK, 0, size),
    })
}

/// The headers that describe the content sent: its type and length, the policy that keeps a
/// browser from running it, and with `attachment` (`?download=1`) the name to save it as.
fn content_headers(out: &mut HeaderMap, meta: &FileMeta, len: u64, attachment: bool) {
    set(out, header::CONTENT_TYPE, &meta.content_type);
    set(out, header::CONTENT_LENGTH, &len.to_string());
    // Stored content is the user's, not ours: never let a browser run it in our origin.
    set(
        out,
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; sandbox; frame-ancestors 'none'",
    );
    if attachment {
        set(
            out,
            header::CONTENT_DISPOSITION,
            &content_disposition(&meta.path),
        );
    }
}

/// `GET`/`HEAD /api/v1/files/{path}`: the content (or `?meta=1`: the metadata).
#[utoipa::path(
    get,
    path = "/api/v1/files/{path}",
    tag = "files",
    operation_id = "files_get",
    description = "The file's content (a single byte range with `Range`), or with `?meta=1` its \
        metadata. HEAD answers the same without the body.",
    params(("path" = String, Path, description = "The file's path (the rest of the URL path, `/` included; percent-decoded)."), GetQuery,
        ("Range" = Option<String>, Header, nullable = false, description = "One `bytes=` range; anything else gets the whole file."),
        ("If-Range" = Option<String>, Header, nullable = false, description = "The ETag or Last-Modified the range holds for."),
        ("If-None-Match" = Option<String>, Header, nullable = false, description = "ETags or `*`: 304 when one matches."),
        ("If-Modified-Since" = Option<String>, Header, nullable = false, description = "An HTTP date: 304 when not modified since.")),
    responses(
        (status = 200, description = "The content (of the file's stored type), or the metadata with `?meta=1`.",
            content(
                (crate::api::openapi::Binary = "application/octet-stream"),
                (crate::store::files::FileMeta = "application/json"),
            ),
            headers(
                ("ETag" = String, description = "The content's SHA-256, quoted."),
                ("Last-Modified" = String, description = "When the file was stored."),
                ("Accept-Ranges" = String, description = "`bytes`."),
                ("Content-Disposition" = String, description = "With `?download=1`: attachment and the file's name."),
            )),
        (status = 206, description = "The range asked for.", content((crate::api::openapi::Binary = "application/octet-stream")),
            headers(("Content-Range" = String, description = "`bytes FIRST-LAST/SIZE`."))),
        (status = 304, description = "Not modified."),
        (status = 400, description = "An invalid path (`invalid_path`) or query parameter (`bad_request`).", body = crate::api::openapi::ErrorResponse),
        (status = 404, description = "No such file (`not_found`).", body = crate::api::openapi::ErrorResponse),
        (status = 416, description = "The range is outside the file (`range_not_satisfiable`).", body = crate::api::openapi::ErrorResponse,
            headers(("Content-Range" = String, description = "`bytes */SIZE`."))),
    )
)]
pub async fn download(
    State(state): State<AppState>,
    method: Method,
    path: Result<Path<String>, PathRejection>,
    q: Result<Query<GetQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let path = path_arg(path)?;
    let Query(q) = q?;
    if flag(q.meta.as_deref(), "meta")? {
        return Ok(axum::Json(state.files.meta(&path).await?).into_response());
    }
    let attachment = flag(q.download.as_deref(), "download")?;
    let (meta, file) = state.files.open(&path).await?;
    let etag = etag_of(&meta);
    let modified = meta.modified_time();
    let last_modified = httpdate::fmt_http_date(modified);
    let mut out = validator_headers(&etag, &last_modified);
    if not_modified(&headers, &meta.sha256, modified) {
        let mut resp = StatusCode::NOT_MODIFIED.into_response();
        resp.headers_mut().extend(out);
        return Ok(resp);
    }
    let range = requested_range(&headers, &etag, &last_modified);
    let (status, first, len) = span(range, meta.size, &mut out)?;
    content_headers(&mut out, &meta, len, attachment);
    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        Body::from_stream(files::read_stream(file, first, len).await?)
    };
    let mut resp = (status, body).into_response();
    resp.headers_mut().extend(out);
    Ok(resp)
}

/// `DELETE /api/v1/files/{path}`.
#[utoipa::path(
    delete,
    path = "/api/v1/files/{path}",
    tag = "files",
    operation_id = "files_delete",
    params(("path" = String, Path, description = "The file's path (the rest of the URL path, `/` included; percent-decoded).")),
    responses(
        (status = 204, description = "Deleted."),
        (status = 400, description = "An invalid path (`invalid_path`).", body = crate::api::openapi::ErrorResponse),
        (status = 404, description = "No such file (`not_found`).", body = crate::api::openapi::ErrorResponse),
    )
)]
pub async fn delete(
    State(state): State<AppState>,
    Requester { caller, .. }: Requester,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let path = path_arg(path)?;
    state.files.delete(&path, caller).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only files whose path starts with this.
    prefix: Option<String>,
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    cursor: Option<String>,
    /// `name` (default), `size` or `modified`.
    sort: Option<String>,
}

/// `GET /api/v1/files?prefix=&limit=&cursor=&sort=name|size|modified`.
#[utoipa::path(
    get,
    path = "/api/v1/files",
    tag = "files",
    operation_id = "files_list",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of files.", body = crate::api::openapi::Page<crate::store::files::FileMeta>),
        (status = 400, description = "A bad limit, cursor, sort or other query parameter (`bad_request`).", body = crate::api::openapi::ErrorResponse),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q?;
    let limit = super::page_limit(q.limit)?;
    let sort = match q.sort.as_deref() {
        None | Some("name") => Sort::Name,
        Some("size") => Sort::Size,
        Some("modified") => Sort::Modified,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "sort must be name, size or modified, got {other:?}"
            )));
        }
    };
    let page = state.files.list(q.prefix, sort, limit, q.cursor).await?;
    Ok(axum::Json(json!({"items": page.items, "next_cursor": page.next_cursor})).into_response())
}

/// `GET /api/v1/files:usage`.
#[utoipa::path(
    get,
    path = "/api/v1/files:usage",
    tag = "files",
    operation_id = "files_usage",
    responses((status = 200, description = "The store's figures and quotas.", body = crate::store::files::Usage))
)]
pub async fn usage(State(state): State<AppState>) -> Result<Response, ApiError> {
    Ok(axum::Json(state.files.usage().await?).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_single_byte_ranges_only() {
        assert_eq!(parse_range("bytes=0-0"), Some(RangeSpec::FromTo(0, 0)));
        assert_eq!(parse_range("bytes=5-"), Some(RangeSpec::From(5)));
        assert_eq!(parse_range("bytes=-3"), Some(RangeSpec::Suffix(3)));
        assert_eq!(parse_range("bytes=0-1,3-4"), None, "several ranges");
        assert_eq!(parse_range("bytes=5-3"), None, "invalid: ignored");
        assert_eq!(parse_range("items=0-1"), None);
        assert_eq!(parse_range("bytes=x-1"), None);
        assert_eq!(parse_range("bytes=-"), None);
    }

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(k.clone(), v.parse().unwrap());
        }
        h
    }

    #[test]
    fn a_matching_entity_tag_or_a_date_not_before_the_change_is_not_modified() {
        let sha = "abc";
        let modified = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_000_500);
        let date = |secs: u64| {
            httpdate::fmt_http_date(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
        };
        let inm = header::IF_NONE_MATCH;
        let ims = header::IF_MODIFIED_SINCE;
        assert!(not_modified(
            &headers(&[(inm.clone(), "\"x\", W/\"abc\"")]),
            sha,
            modified
        ));
        assert!(not_modified(
            &headers(&[(inm.clone(), " * ")]),
            sha,
            modified
        ));
        // Control: another version's tag is modified.
        assert!(!not_modified(
            &headers(&[(inm.clone(), "\"abd\"")]),
            sha,
            modified
        ));
        // HTTP dates have whole seconds: the same second is not modified, the one before is.
        assert!(not_modified(
            &headers(&[(ims.clone(), &date(1000))]),
            sha,
            modified
        ));
        assert!(!not_modified(
            &headers(&[(ims.clone(), &date(999))]),
            sha,
            modified
        ));
        assert!(!not_modified(
            &headers(&[(ims.clone(), "yesterday")]),
            sha,
            modified
        ));
        // If-None-Match wins: a stale tag is modified whatever the date says.
        let both = headers(&[(inm, "\"old\""), (ims, &date(5000))]);
        assert!(!not_modified(&both, sha, modified));
        assert!(!not_modified(&HeaderMap::new(), sha, modified));
    }

    #[test]
    fn a_range_holds_only_for_the_version_if_range_names() {
        let (etag, lm) = ("\"abc\"", "Thu, 01 Jan 1970 00:16:40 GMT");
        let range = (header::RANGE, "bytes=2-");
        let want = Some(RangeSpec::From(2));
        assert_eq!(
            requested_range(&headers(std::slice::from_ref(&range)), etag, lm),
            want
        );
        for current in [etag, lm] {
            let h = headers(&[range.clone(), (header::IF_RANGE, current)]);
            assert_eq!(requested_range(&h, etag, lm), want, "{current}");
        }
        let stale = headers(&[range, (header::IF_RANGE, "\"old\"")]);
        assert_eq!(requested_range(&stale, etag, lm), None);
        assert_eq!(requested_range(&HeaderMap::new(), etag, lm), None);
    }

    #[test]
    fn a_range_is_sent_as_206_with_its_content_range_and_past_the_end_is_refused() {
        let mut out = HeaderMap::new();
        let got = span(Some(RangeSpec::FromTo(2, 99)), 10, &mut out).unwrap();
        assert_eq!(got, (StatusCode::PARTIAL_CONTENT, 2, 8));
        assert_eq!(out[header::CONTENT_RANGE], "bytes 2-9/10");
        let mut out = HeaderMap::new();
        assert_eq!(span(None, 10, &mut out).unwrap(), (StatusCode::OK, 0, 10));
        assert!(out.get(header::CONTENT_RANGE).is_none());
        assert!(span(Some(RangeSpec::From(10)), 10, &mut out).is_err());
    }

    #[test]
    fn digests_from_both_headers_are_read_and_must_agree() {
        let sha = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
        let b64 = base64::engine::general_purpose::STANDARD.encode(hex::decode(sha).unwrap());
        let mut h = HeaderMap::new();
        h.insert(
            "content-digest",
            format!("sha-512=:AAAA:, sha-256=:{b64}:").parse().unwrap(),
        );
        assert_eq!(expected_digest(&h).unwrap().as_deref(), Some(sha));
        h.insert("x-checksum-sha256", sha.to_uppercase().parse().unwrap());
        assert_eq!(expected_digest(&h).unwrap().as_deref(), Some(sha));
        h.insert("x-checksum-sha256", "00".repeat(32).parse().unwrap());
        assert!(expected_digest(&h).is_err(), "disagreeing headers");
        let mut h = HeaderMap::new();
        h.insert("content-digest", "sha-256=:bm9wZQ==:".parse().unwrap());
        assert!(expected_digest(&h).is_err(), "not 32 bytes");
    }

    #[test]
    fn attachment_names_are_quoted_safely() {
        assert_eq!(
            content_disposition("a/b/report.pdf"),
            "attachment; filename=\"report.pdf\"; filename*=UTF-8''report.pdf"
        );
        let d = content_disposition("x/\"évil\";\\ 1%.txt");
        assert_eq!(
            d,
            "attachment; filename=\"__vil___ 1_.txt\"; filename*=UTF-8''%22%C3%A9vil%22%3B%5C%201%25.txt"
        );
        assert!(HeaderValue::from_str(&d).is_ok());
    }

    #[test]
    fn locations_encode_each_segment() {
        assert_eq!(location("a b/c?.txt"), "/api/v1/files/a%20b/c%3F.txt");
    }
}
