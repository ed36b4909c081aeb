//! Extractors that turn bad input into our error shape: a JSON body (415 for a wrong content
//! type, 413 past the size limit, 400 `invalid_json` naming line and column).

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use bytes::Bytes;
use serde::de::DeserializeOwned;

use super::access::Client;
use super::error::ApiError;
use crate::store::audit::Caller;
use crate::store::auth::Actor;

/// A JSON request body, deserialized into `T`.
pub struct Json<T>(pub T);

/// Who is calling: the actor the route's guard authenticated, the client `context` found,
/// and the [`Caller`] the domain records for them. Actor and client are taken out of the
/// request (the guard put them there), not cloned.
pub struct Requester {
    pub actor: Actor,
    pub client: Client,
    /// Who is acting, for the audit trail and the execution history.
    pub caller: Caller,
}

/// The caller `actor`, calling from `client`, in the request being served: the one place the
/// api turns its view of a request into the domain's.
pub fn caller_of(actor: &Actor, client: &Client) -> Caller {
    named_caller(&actor.name, client)
}

/// The caller named `actor` (`anonymous` before any credential is accepted) from `client`.
pub fn named_caller(actor: &str, client: &Client) -> Caller {
    Caller {
        actor: actor.to_owned(),
        client: client.addr.clone(),
        request_id: super::request_id::current().unwrap_or_default(),
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Requester {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let actor = parts.extensions.remove::<Actor>();
        let client = parts.extensions.remove::<Client>();
        match (actor, client) {
            (Some(actor), Some(client)) => Ok(Requester {
                caller: caller_of(&actor, &client),
                actor,
                client,
            }),
            _ => Err(crate::error::Error::Internal(
                "the route's guard did not identify the caller".into(),
            )
            .into()),
        }
    }
}

/// Whether a Content-Type is JSON (`application/json` or `application/…+json`).
pub fn is_json(content_type: Option<&str>) -> bool {
    let Some(ct) = content_type else { return false };
    let essence = ct.split(';').next().unwrap_or("").trim();
    let starts = |p: &str| {
        essence
            .get(..p.len())
            .is_some_and(|s| s.eq_ignore_ascii_case(p))
    };
    let ends = |p: &str| {
        essence
            .len()
            .checked_sub(p.len())
            .and_then(|i| essence.get(i..))
            .is_some_and(|s| s.eq_ignore_ascii_case(p))
    };
    essence.eq_ignore_ascii_case("application/json") || (starts("application/") && ends("+json"))
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let ct = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        let limit = req
            .extensions()
            .get::<super::access::BodyLimitNote>()
            .map(|n| n.0);
        if !is_json(ct) {
            return Err(ApiError::unsupported_media_type(format!(
                "expected Content-Type: application/json, got {}",
                ct.unwrap_or("none")
            )));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|r| {
            if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::payload_too_large(match limit {
                    Some(l) => format!("request body is larger than {l}"),
                    None => "request body is larger than server.max-body-size".to_owned(),
                })
            } else {
                ApiError::bad_request(format!("cannot read request body: {}", r.body_text()))
            }
        })?;
        serde_json::from_slice(&bytes).map(Json).map_err(|e| {
            ApiError::invalid_json(format!(
                "invalid JSON body at line {}, column {}: {e}",
                e.line(),
                e.column()
            ))
        })
    }
}

/// A request body that fails once the client has sent nothing for `idle` while the handler
/// waits for it, so a stalled part of a streamed form (a field that is not a file included,
/// or the headers of the next part) cannot hold the request open. Time the handler spends
/// elsewhere (writing a chunk to disk) does not count.
pub struct IdleBounded {
    inner: axum::body::Body,
    idle: std::time::Duration,
    /// What the error says, naming the setting.
    setting: &'static str,
    timer: std::pin::Pin<Box<tokio::time::Sleep>>,
    waiting: bool,
    /// Set when the bound ended the body, for the handler to answer with a clear message.
    fired: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl IdleBounded {
    /// Wraps `req`'s body; the flag turns true if the bound ended it.
    pub fn wrap(
        req: Request,
        idle: std::time::Duration,
        setting: &'static str,
    ) -> (Request, std::sync::Arc<std::sync::atomic::AtomicBool>) {
        let fired = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = fired.clone();
        let req = req.map(|inner| {
            axum::body::Body::new(IdleBounded {
                inner,
                idle,
                setting,
                timer: Box::pin(tokio::time::sleep(idle)),
                waiting: false,
                fired: flag,
            })
        });
        (req, fired)
    }
}

impl hyper::body::Body for IdleBounded {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, axum::Error>>> {
        use std::future::Future as _;
        use std::task::Poll;
        let this = self.get_mut();
        match std::pin::Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.waiting = false;
                Poll::Ready(frame)
            }
            Poll::Pending => {
                if !this.waiting {
                    this.waiting = true;
                    let deadline = tokio::time::Instant::now() + this.idle;
                    this.timer.as_mut().reset(deadline);
                }
                if this.timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.fired.store(true, std::sync::atomic::Ordering::Relaxed);
                Poll::Ready(Some(Err(axum::Error::new(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "the client sent nothing for {} ({})",
                        this.setting,
                        humantime::format_duration(this.idle)
                    ),
                )))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types() {
        assert!(is_json(Some("application/json")));
        assert!(is_json(Some("application/json; charset=utf-8")));
        assert!(is_json(Some("Application/JSON")));
        assert!(is_json(Some("application/merge-patch+json")));
        assert!(!is_json(Some("text/plain")));
        assert!(!is_json(None));
    }
}
