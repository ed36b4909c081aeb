//! The only place where errors become HTTP: domain [`Error`] → status + `code`, and the one
//! error body every route answers with:
//! `{"error":{"code":"not_found","message":"…","request_id":"…"}}`.
//! 5xx bodies never carry internals; the full error goes to the log with the request id.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::request_id;
use crate::error::Error;
use crate::ops::backup::BackupError;

/// Marks a response whose body is already our error shape, so the normalizing middleware
/// leaves it alone.
#[derive(Debug, Clone, Copy)]
pub struct ErrorBody;

/// An error on its way to the client.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Extra top-level fields beside `error` (e.g. readiness checks).
    pub extra: Option<serde_json::Value>,
    /// Headers the status needs (Content-Range on a 416).
    pub headers: Vec<(header::HeaderName, HeaderValue)>,
}

/// One constructor per `code` a client can branch on, so a status and its code are paired
/// here alone. The message is the only part a caller chooses.
impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            extra: None,
            headers: Vec::new(),
        }
    }
    /// 400 `bad_request`.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
    /// 400 `invalid_json`: a body or value that does not parse.
    pub fn invalid_json(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", message)
    }
    /// 400 `invalid_key`.
    pub fn invalid_key(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_key", message)
    }
    /// 400 `invalid_path`.
    pub fn invalid_path(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_path", message)
    }
    /// 401 `unauthorized` (the caller adds WWW-Authenticate).
    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }
    /// 403 `forbidden`.
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }
    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    /// 405 `method_not_allowed` (the caller adds Allow).
    pub fn method_not_allowed(message: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            message,
        )
    }
    /// 409 `conflict`.
    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, "conflict", message)
    }
    /// 410 `gone`.
    pub fn gone(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::GONE, "gone", message)
    }
    /// 412 `precondition_failed`.
    pub fn precondition_failed(message: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            "precondition_failed",
            message,
        )
    }
    /// 413 `payload_too_large`: the message names the limit, as the client can change its
    /// request (or an admin the setting) only knowing which one it passed.
    pub fn payload_too_large(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
    }
    /// 415 `unsupported_media_type`.
    pub fn unsupported_media_type(message: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            message,
        )
    }
    /// 416 `range_not_satisfiable`, with the Content-Range that tells the client the size.
    pub fn range_not_satisfiable(size: u64) -> ApiError {
        let mut a = ApiError::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "range_not_satisfiable",
            format!("the Range asks for bytes outside the file, which is {size} bytes long"),
        );
        if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
            a.headers.push((header::CONTENT_RANGE, v));
        }
        a
    }
    /// 422 `unprocessable`.
    pub fn unprocessable(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "unprocessable", message)
    }
    /// 429 `rate_limited` (Retry-After is added on the way out).
    pub fn rate_limited(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message)
    }
    /// 503 `unavailable` (Retry-After is added on the way out).
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }
    /// 507 `insufficient_storage`.
    pub fn insufficient_storage(message: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "insufficient_storage",
            message,
        )
    }
    /// 507 `quota_exceeded`: a configured quota, not the disk, is full.
    pub fn quota_exceeded(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INSUFFICIENT_STORAGE, "quota_exceeded", message)
    }
    /// 500 `internal`: only through `internal`, which logs what the client is not told.
    fn server_error(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
    /// An error status made outside our handlers (axum's own), with the code
    /// [`code_for_status`] gives it.
    pub fn for_status(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError::new(status, code_for_status(status), message)
    }
    pub fn with_extra(mut self, extra: serde_json::Value) -> ApiError {
        self.extra = Some(extra);
        self
    }
}

/// The `code` for a status we answer without a more specific one.
pub fn code_for_status(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "bad_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        409 => "conflict",
        410 => "gone",
        412 => "precondition_failed",
        413 => "payload_too_large",
        415 => "unsupported_media_type",
        // Added for ranged downloads: none of the fixed codes says "your Range header asks for
        // bytes the file does not have", and clients branch on it (retry without Range).
        416 => "range_not_satisfiable",
        422 => "unprocessable",
        429 => "rate_limited",
        503 => "unavailable",
        507 => "insufficient_storage",
        s if s < 500 => "bad_request",
        _ => "internal",
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        match e {
            Error::Invalid(m) => ApiError::bad_request(m),
            Error::NotFound(m) => ApiError::not_found(m),
            Error::Conflict(m) => ApiError::conflict(m),
            Error::InvalidKey(m) => ApiError::invalid_key(m),
            Error::PreconditionFailed(m) => ApiError::precondition_failed(m),
            Error::Gone(m) => ApiError::gone(m),
            Error::TooLarge(m) => ApiError::payload_too_large(m),
            Error::Unavailable(m) => ApiError::unavailable(m),
            Error::Unprocessable(m) => ApiError::unprocessable(m),
            Error::Busy(m) => ApiError::rate_limited(m),
            Error::InsufficientStorage(m) => ApiError::insufficient_storage(m),
            Error::QuotaExceeded(m) => ApiError::quota_exceeded(m),
            Error::InvalidPath(m) => ApiError::invalid_path(m),
            Error::RangeNotSatisfiable { size } => ApiError::range_not_satisfiable(size),
            Error::Db(rusqlite::Error::SqliteFailure(f, _))
                if matches!(
                    f.code,
                    rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                ) =>
            {
                internal(
                    ApiError::unavailable,
                    &e,
                    "the database is busy; retry shortly",
                )
            }
            Error::Db(rusqlite::Error::SqliteFailure(f, _))
                if f.code == rusqlite::ErrorCode::DiskFull =>
            {
                internal(
                    ApiError::insufficient_storage,
                    &e,
                    "the state directory's disk is full",
                )
            }
            Error::SchemaTooNew { .. } | Error::Db(_) | Error::Io(_) | Error::Internal(_) => {
                internal(ApiError::server_error, &e, "internal error")
            }
        }
    }
}

impl From<BackupError> for ApiError {
    fn from(e: BackupError) -> ApiError {
        match e {
            BackupError::NotFound(m) => ApiError::not_found(m),
            BackupError::Invalid(m) => ApiError::bad_request(m),
            BackupError::Conflict(m) => ApiError::conflict(m),
            // The backup is damaged or hostile: the message names the first bad entry.
            e @ BackupError::Corrupt { .. } => ApiError::unprocessable(e.to_string()),
            BackupError::Unsupported(m) => ApiError::unprocessable(m),
            BackupError::NoSpace(m) => {
                let e = Error::Internal(m);
                internal(
                    ApiError::insufficient_storage,
                    &e,
                    "the backup directory's disk is full",
                )
            }
            e @ (BackupError::Db(_) | BackupError::Io { .. } | BackupError::Internal(_)) => {
                let mut chain = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    chain.push_str(": ");
                    chain.push_str(&s.to_string());
                    source = s.source();
                }
                internal(
                    ApiError::server_error,
                    &Error::Internal(chain),
                    "internal error",
                )
            }
        }
    }
}

/// Logs the whole error with the request id and returns an opaque one for the client, made by
/// `answer` (the constructor of the status it gets).
fn internal(answer: fn(String) -> ApiError, e: &Error, public: &str) -> ApiError {
    let rid = request_id::current().unwrap_or_default();
    let mut chain = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        chain.push_str(": ");
        chain.push_str(&s.to_string());
        source = s.source();
    }
    tracing::error!(request_id = %rid, error = %chain, "request failed");
    answer(format!(
        "{public}; the server log has details under request id {rid}"
    ))
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let rid = request_id::current().unwrap_or_default();
        let mut body = json!({
            "error": { "code": self.code, "message": self.message, "request_id": rid }
        });
        if let (Some(serde_json::Value::Object(extra)), Some(obj)) =
            (self.extra, body.as_object_mut())
        {
            for (k, v) in extra {
                obj.insert(k, v);
            }
        }
        let mut resp = (self.status, axum::Json(body)).into_response();
        resp.extensions_mut().insert(ErrorBody);
        for (name, value) in self.headers {
            resp.headers_mut().insert(name, value);
        }
        if self.status == StatusCode::SERVICE_UNAVAILABLE
            || self.status == StatusCode::TOO_MANY_REQUESTS
        {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        resp
    }
}

impl From<axum::extract::rejection::QueryRejection> for ApiError {
    fn from(r: axum::extract::rejection::QueryRejection) -> ApiError {
        ApiError::bad_request(format!("invalid query string: {}", r.body_text()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_errors_map_to_statuses_and_codes() {
        let cases: Vec<(Error, u16, &str)> = vec![
            (Error::Invalid("x".into()), 400, "bad_request"),
            (Error::NotFound("x".into()), 404, "not_found"),
            (Error::Conflict("x".into()), 409, "conflict"),
            (Error::InvalidKey("x".into()), 400, "invalid_key"),
            (
                Error::PreconditionFailed("x".into()),
                412,
                "precondition_failed",
            ),
            (Error::Gone("x".into()), 410, "gone"),
            (Error::TooLarge("x".into()), 413, "payload_too_large"),
            (Error::Unavailable("x".into()), 503, "unavailable"),
            (
                Error::InsufficientStorage("x".into()),
                507,
                "insufficient_storage",
            ),
            (Error::QuotaExceeded("x".into()), 507, "quota_exceeded"),
            (
                Error::PreconditionFailed("x".into()),
                412,
                "precondition_failed",
            ),
            (Error::InvalidPath("x".into()), 400, "invalid_path"),
            (
                Error::RangeNotSatisfiable { size: 9 },
                416,
                "range_not_satisfiable",
            ),
            (Error::Internal("secret detail".into()), 500, "internal"),
            (
                Error::Io(std::io::Error::other("secret path /x")),
                500,
                "internal",
            ),
            (
                Error::Db(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
                    None,
                )),
                503,
                "unavailable",
            ),
        ];
        let a = ApiError::from(Error::RangeNotSatisfiable { size: 9 });
        assert!(
            a.headers
                .iter()
                .any(|(k, v)| k == header::CONTENT_RANGE && v == "bytes */9")
        );
        for (e, status, code) in cases {
            let a = ApiError::from(e);
            assert_eq!(a.status.as_u16(), status);
            assert_eq!(a.code, code);
            assert!(
                !a.message.contains("secret"),
                "5xx leaked internals: {}",
                a.message
            );
        }
    }

    #[test]
    fn every_status_we_normalize_has_a_code_from_the_fixed_set() {
        const CODES: &[&str] = &[
            "bad_request",
            "invalid_json",
            "invalid_key",
            "invalid_path",
            "unauthorized",
            "forbidden",
            "not_found",
            "method_not_allowed",
            "conflict",
            // A watch asked to resume from changes older than kv.history-window: the client
            // must list again, which neither not_found nor conflict tells it.
            "gone",
            "precondition_failed",
            "payload_too_large",
            "unsupported_media_type",
            "unprocessable",
            "rate_limited",
            "quota_exceeded",
            "range_not_satisfiable",
            "insufficient_storage",
            "unavailable",
            "internal",
        ];
        for s in 400..600u16 {
            let code = code_for_status(StatusCode::from_u16(s).unwrap());
            assert!(CODES.contains(&code), "{s} -> {code}");
        }
    }
}
