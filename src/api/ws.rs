//! `GET /api/v1/terminals/{id}/attach`: a terminal session over WebSocket (axum's `ws`).
//!
//! Binary frames carry the terminal's bytes both ways. Text frames carry JSON control
//! messages. From the client: `{"type":"resize","cols":C,"rows":R}`,
//! `{"type":"signal","name":"INT"|"QUIT"|"TSTP"}`, and `{"type":"input","data":"text"}` (the
//! same as a binary frame). From the server: `{"type":"attached","id","writer","offset","cols",
//! "rows"}` first; `{"type":"lost","from","to"}` when output between those offsets is no
//! longer in the scrollback (a late or slow client); `{"type":"error","code","message"}` for a
//! refused message (the connection stays); and `{"type":"exit","code","signal","reason"}` when
//! the session ends, followed by a close (1000, or 1001 when the daemon stops). Limits close
//! the connection with a code and a reason: 1009 for a message larger than
//! `terminals.max-message-size`, 4429 for input faster than `terminals.input-rate`, 1003 for a
//! text frame that is not a control message.
//!
//! A client first gets the scrollback from `?since=` (default: all it holds), then the live
//! output. It may type if it asked with `?write=true` and no other client holds the keyboard
//! (or the session shares writing). The upgrade request passes the route's guard like every
//! request; when the credential is the browser's session cookie, its `Origin` must be ours
//! (a cross-site page could otherwise open the socket with the user's cookie).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, rejection};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;

use super::error::ApiError;
use super::extract::Requester;
use super::terminals::{exit_json, id_of, viewer_of};
use crate::api::state::AppState;
use crate::error::Error;
use crate::jobs::sandbox::TerminalSize;
use crate::jobs::terminals::{Attachment, Session};
use crate::store::auth::Via;

/// Most output bytes one binary frame carries.
const FRAME: usize = 32 << 10;
/// How often an idle connection is pinged (keeps proxies from closing it and finds dead
/// peers).
const PING_EVERY: Duration = Duration::from_secs(30);

/// Close codes for limits (4000-4999 are for applications).
const CLOSE_TOO_BIG: u16 = 1009;
const CLOSE_UNSUPPORTED: u16 = 1003;
const CLOSE_INPUT_RATE: u16 = 4429;
const CLOSE_NORMAL: u16 = 1000;
const CLOSE_GOING_AWAY: u16 = 1001;
const CLOSE_PROTOCOL: u16 = 1002;

/// A close frame's reason is at most 123 bytes (RFC 6455 5.5: control frames carry 125, two
/// of them the code): longer ones are cut at a character boundary.
fn close_reason(mut reason: String) -> String {
    if reason.len() > 123 {
        let mut end = 123;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
    }
    reason
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AttachQuery {
    /// Ask to type (granted unless another client holds the keyboard; always with shared
    /// writing).
    write: Option<bool>,
    /// The output offset to start from (default 0: all the scrollback holds).
    since: Option<u64>,
}

#[utoipa::path(
    get,
    path = "/api/v1/terminals/{id}/attach",
    tag = "terminals",
    operation_id = "terminals_attach",
    description = "Upgrades to a WebSocket attached to the session. Binary frames: the \
        terminal's bytes, both ways. Text frames: JSON control messages; from the client \
        `{\"type\":\"resize\",\"cols\",\"rows\"}`, `{\"type\":\"signal\",\"name\":\"INT\"}`, \
        `{\"type\":\"input\",\"data\"}`; from the server `attached`, `lost`, `error` and \
        `exit` (`{\"type\":\"exit\",\"code\",\"signal\",\"reason\"}`, then close 1000). Limits \
        close with 1009 (message size) or 4429 (input rate). A cookie-authenticated upgrade \
        needs our own `Origin`.",
    params(("id" = String, Path, description = "The session's id."), AttachQuery),
    responses(
        (status = 101, description = "Switching Protocols: the WebSocket is open.",
            headers(("Upgrade" = String, description = "`websocket`."))),
        (status = 400, description = "Not a WebSocket upgrade request, or a bad query (`bad_request`).", body = crate::api::openapi::ErrorResponse),
        (status = 404, description = "No such session, not the caller's, or ended long ago (`not_found`).", body = crate::api::openapi::ErrorResponse),
        (status = 409, description = "The session has ended (`conflict`).", body = crate::api::openapi::ErrorResponse),
    )
)]
pub async fn attach(
    State(state): State<AppState>,
    Requester {
        actor,
        client,
        caller,
    }: Requester,
    id: Result<Path<String>, PathRejection>,
    q: Result<Query<AttachQuery>, QueryRejection>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let id = id_of(id)?;
    let Query(q) = q?;
    let cfg = state.live.get();
    if actor.via == Via::Session
        && let Err(why) = super::access::check_origin(&cfg, &headers, &client, "WebSocket")
    {
        state
            .audit_event(caller.event("terminal.attach", &id, "refused", why.clone()))
            .await;
        return Err(ApiError::forbidden(why));
    }
    let session = state.terminals.session(&id, &viewer_of(&actor))?;
    if !session.is_running() && session.end_offset() <= q.since.unwrap_or(0) {
        return Err(Error::Conflict(format!("terminal session {id} has ended")).into());
    }
    let ws = ws.map_err(|r| {
        ApiError::bad_request(format!(
            "this route upgrades to a WebSocket: {}",
            r.body_text()
        ))
    })?;
    let max = usize::try_from(cfg.terminals.max_message_size.bytes()).unwrap_or(usize::MAX);
    let attachment = session.attach(q.write.unwrap_or(false));
    state
        .audit_event(caller.event(
            "terminal.attach",
            &id,
            "ok",
            if attachment.writer {
                "writer".to_owned()
            } else {
                "viewer".to_owned()
            },
        ))
        .await;
    let since = q.since.unwrap_or(0);
    let rid = caller.request_id.clone();
    // Frames up to twice the limit reach us, so the limit is answered with its close code
    // and reason; larger ones the WebSocket layer refuses on its own.
    Ok(ws
        .max_message_size(max.saturating_mul(2).saturating_add(1024))
        .max_frame_size(max.saturating_mul(2).saturating_add(1024))
        .on_upgrade(move |socket| {
            super::request_id::scope(rid, serve(socket, attachment, since, max))
        }))
}

/// Why the loop ended, as the close frame says it.
struct Close(u16, String);

async fn serve(mut socket: WebSocket, attachment: Attachment, since: u64, max: usize) {
    let session = attachment.session().clone();
    let size = session.size();
    let hello = json!({
        "type": "attached",
        "id": session.id(),
        "writer": attachment.writer,
        "offset": since.min(session.end_offset()),
        "cols": size.cols,
        "rows": size.rows,
    });
    if socket
        .send(Message::Text(hello.to_string().into()))
        .await
        .is_err()
    {
        return;
    }
    let close = pump(&mut socket, &session, &attachment, since, max).await;
    drop(attachment);
    if let Some(Close(code, reason)) = close {
        let _ = socket
            .send(Message::Close(Some(CloseFrame {
                code,
                reason: close_reason(reason).into(),
            })))
            .await;
    }
}

/// Moves output to the client and its messages to the session until one side ends. `None`:
/// the client went away (nothing to close).
async fn pump(
    socket: &mut WebSocket,
    session: &Arc<Session>,
    attachment: &Attachment,
    since: u64,
    max: usize,
) -> Option<Close> {
    let mut offset = since;
    let mut out = session.subscribe_output();
    let mut end = session.subscribe_end();
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.reset();
    loop {
        tokio::select! {
            biased;
            msg = socket.recv() => {
                let msg = match msg {
                    Some(Ok(m)) => m,
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "terminal WebSocket ended with an error");
                        let e = e.to_string();
                        let code = if e.contains("too long") { CLOSE_TOO_BIG } else { CLOSE_PROTOCOL };
                        return Some(Close(code, e));
                    }
                    None => return None,
                };
                match handle(socket, session, attachment, msg, max).await {
                    Ok(true) => {}
                    Ok(false) => return None,
                    Err(close) => return Some(close),
                }
            }
            _ = async { out.wait_for(|e| *e > offset).await.is_ok() } => {
                let r = session.read(offset, FRAME);
                if r.lost > 0 {
                    let lost = json!({"type": "lost", "from": offset, "to": r.from});
                    socket.send(Message::Text(lost.to_string().into())).await.ok()?;
                }
                offset = r.next;
                if !r.data.is_empty() {
                    socket.send(Message::Binary(r.data.into())).await.ok()?;
                }
            }
            _ = async { end.wait_for(Option::is_some).await.is_ok() } => {
                // What the job wrote last, then how it ended.
                loop {
                    let r = session.read(offset, FRAME);
                    if r.data.is_empty() {
                        break;
                    }
                    offset = r.next;
                    socket.send(Message::Binary(r.data.into())).await.ok()?;
                }
                let ended = session.ended()?;
                socket
                    .send(Message::Text(exit_json(&ended).to_string().into()))
                    .await
                    .ok()?;
                let code = if ended.reason == "daemon stopped" {
                    CLOSE_GOING_AWAY
                } else {
                    CLOSE_NORMAL
                };
                return Some(Close(code, format!("session ended: {}", ended.reason)));
            }
            _ = ping.tick() => {
                socket.send(Message::Ping(Default::default())).await.ok()?;
            }
        }
    }
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum Control {
    Resize { cols: u16, rows: u16 },
    Signal { name: String },
    Input { data: String },
}

/// One client message. `Ok(false)`: the client closed. `Err`: close with this code.
async fn handle(
    socket: &mut WebSocket,
    session: &Session,
    attachment: &Attachment,
    msg: Message,
    max: usize,
) -> Result<bool, Close> {
    let too_big = |n: usize| {
        Close(
            CLOSE_TOO_BIG,
            format!("a message of {n} bytes is larger than terminals.max-message-size ({max})"),
        )
    };
    let result = match msg {
        Message::Binary(b) => {
            if b.len() > max {
                return Err(too_big(b.len()));
            }
            session.input(&b, Some(attachment)).await
        }
        Message::Text(t) => {
            if t.len() > max {
                return Err(too_big(t.len()));
            }
            match serde_json::from_str::<Control>(t.as_str()) {
                Ok(Control::Input { data }) => {
                    session.input(data.as_bytes(), Some(attachment)).await
                }
                Ok(Control::Resize { cols, rows }) => session.resize(TerminalSize { cols, rows }),
                Ok(Control::Signal { name }) => session.signal(&name),
                Err(e) => {
                    return Err(Close(
                        CLOSE_UNSUPPORTED,
                        format!("not a control message: {e}"),
                    ));
                }
            }
        }
        Message::Close(_) => return Ok(false),
        Message::Ping(_) | Message::Pong(_) => Ok(()),
    };
    match result {
        Ok(()) => Ok(true),
        // The input rate is the one `Busy` a session's input gives.
        Err(Error::Busy(m)) => Err(Close(CLOSE_INPUT_RATE, m)),
        Err(e) => {
            let api = ApiError::from(e);
            let msg = json!({"type": "error", "code": api.code, "message": api.message});
            socket
                .send(Message::Text(msg.to_string().into()))
                .await
                .map_err(|_| Close(CLOSE_NORMAL, String::new()))?;
            Ok(true)
        }
    }
}
