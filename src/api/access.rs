//! Access control at the HTTP edge: who the client is (peer address, or the forwarded one
//! when the peer is a trusted proxy), which Host it addressed, and the per-route guard that
//! authenticates (bearer token, session cookie + CSRF, or local admin on the admin socket),
//! checks the route's scope, applies rate limits and audits refusals.

use std::net::IpAddr;

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::extract::{caller_of, named_caller};
use super::ratelimit::{Class, Decision};
use crate::api::server::{ConnInfo, Remote};
use crate::api::state::AppState;
use crate::config::{Config, ProxySpec};
use crate::store::auth::{Actor, Refusal, Scope};

/// The session cookie's name over plain HTTP.
pub const SESSION_COOKIE: &str = "lhd_session";
/// The session cookie's name over HTTPS (behind a trusted proxy). Browsers keep a `__Host-`
/// cookie only when it is Secure, has `Path=/` and no `Domain`, so a sibling subdomain cannot
/// plant or overwrite it.
pub const SESSION_COOKIE_HTTPS: &str = "__Host-lhd_session";

/// The session cookie's name for a request over HTTPS (`secure`) or plain HTTP.
pub fn session_cookie_name(secure: bool) -> &'static str {
    if secure {
        SESSION_COOKIE_HTTPS
    } else {
        SESSION_COOKIE
    }
}

/// The session cookie a request carries: over HTTPS only the `__Host-` one (an unprefixed one
/// may have been planted by a sibling subdomain); over plain HTTP either, the prefixed first.
fn session_cookie<'a>(headers: &'a HeaderMap, client: &Client) -> Option<&'a str> {
    let prefixed = cookie(headers, SESSION_COOKIE_HTTPS);
    if client.secure {
        prefixed
    } else {
        prefixed.or_else(|| cookie(headers, SESSION_COOKIE))
    }
}
/// The header a cookie-authenticated change must carry.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone (health probes, the login route that checks its own credential).
    Public,
    /// Any valid credential, whatever its scopes.
    Authenticated,
    /// A credential with this scope (admin implies all).
    Scope(Scope),
    /// `/metrics`: anyone whose client address is a loopback address when
    /// `metrics.public-on-loopback` is set, else a credential with the `metrics` scope.
    Metrics,
    /// Only the host's admin on the admin socket (peer credentials: root or the daemon's
    /// user); any token or session, whatever its scopes, is refused 403.
    LocalAdmin,
}

/// Whether the client may have loopback privileges (`metrics.public-on-loopback`): only a
/// TCP peer on a loopback address that is not a trusted proxy. A forwarded address never
/// counts, whatever it says: a proxy relays anyone, and a client can make a proxy forward a
/// loopback address (its own `X-Forwarded-For`, a local client of nginx).
pub fn client_is_loopback(client: &Client) -> bool {
    client.loopback_peer
}

/// The client as far as we can tell; inserted into every request by `context`.
#[derive(Debug, Clone)]
pub struct Client {
    /// The client address for logs, audit and per-address limits (`unix` for a Unix peer that
    /// forwarded nothing).
    pub addr: String,
    /// Whether the original request came over TLS (X-Forwarded-Proto from a trusted proxy).
    pub secure: bool,
    /// The peer's uid when it is root or our own user on the admin socket.
    pub local_admin_uid: Option<u32>,
    /// The peer itself is on a loopback address and is not a trusted proxy (nothing of this
    /// client's address was forwarded).
    pub loopback_peer: bool,
}

impl Client {
    /// A request that did not come through a listener (in-process callers).
    fn unknown() -> Client {
        Client {
            addr: "-".into(),
            secure: false,
            local_admin_uid: None,
            loopback_peer: false,
        }
    }
}

fn trusted(cfg: &Config, remote: Remote) -> bool {
    cfg.auth.trusted_proxies.iter().any(|p| match (p, remote) {
        (ProxySpec::Unix, Remote::Unix) => true,
        (net, Remote::Tcp(a)) => net.contains(a.ip()),
        _ => false,
    })
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or(v6.is_loopback(), |v4| v4.is_loopback()),
        v4 => v4.is_loopback(),
    }
}

/// The address the trusted proxy itself saw the client come from: `X-Real-IP` (the shipped
/// nginx site sets it to `$remote_addr`, replacing whatever the client sent), else the last
/// `X-Forwarded-For` hop (the one the proxy appended; everything left of it is the client's
/// own claim). `Forwarded` is never read: the shipped site clears it, and a proxy that passes
/// it through would pass the client's word. A header that is repeated or does not parse as
/// one address is not believed.
fn proxy_saw(headers: &HeaderMap) -> Option<IpAddr> {
    let single = |name: &str| {
        let mut values = headers.get_all(name).iter();
        match (values.next(), values.next()) {
            (Some(v), None) => v.to_str().ok(),
            _ => None,
        }
    };
    if headers.contains_key("x-real-ip") {
        return single("x-real-ip").and_then(|v| v.trim().parse().ok());
    }
    // Several header lines are one comma-separated list (RFC 9110): the last line's last hop.
    let last = headers.get_all("x-forwarded-for").iter().next_back()?;
    last.to_str()
        .ok()?
        .rsplit(',')
        .next()
        .and_then(|hop| hop.trim().parse().ok())
}

/// Works out the client from the connection and, for a trusted proxy, its headers.
pub fn client(cfg: &Config, conn: Option<&ConnInfo>, headers: &HeaderMap) -> Client {
    let Some(conn) = conn else {
        return Client::unknown();
    };
    if conn.public {
        // A tunnel's client forwards the internet: nothing of the peer (a loopback address)
        // or of what the request says of its origin is believed, bar the scheme the
        // provider's edge served it with (for the session cookie and the Origin check).
        let secure = headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"));
        return Client {
            addr: "tunnel".into(),
            secure,
            local_admin_uid: None,
            loopback_peer: false,
        };
    }
    let local_admin_uid = if conn.admin {
        conn.peer_uid
            .filter(|uid| *uid == 0 || *uid == nix::unistd::geteuid().as_raw())
    } else {
        None
    };
    if trusted(cfg, conn.remote) {
        let secure = headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"));
        let addr = match (proxy_saw(headers), conn.remote) {
            (Some(ip), _) => ip.to_string(),
            (None, Remote::Tcp(a)) => a.ip().to_string(),
            (None, Remote::Unix) => "unix".into(),
        };
        return Client {
            addr,
            secure,
            local_admin_uid,
            loopback_peer: false,
        };
    }
    let (addr, loopback_peer) = match conn.remote {
        Remote::Tcp(a) => (a.ip().to_string(), is_loopback(a.ip())),
        Remote::Unix => ("unix".into(), false),
    };
    Client {
        addr,
        secure: false,
        local_admin_uid,
        loopback_peer,
    }
}

/// The name a Host header gives, without port, brackets or a trailing dot.
pub fn host_name(host: &str) -> &str {
    let host = host.trim().trim_end_matches('.');
    if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else if host.matches(':').count() == 1 {
        host.split(':').next().unwrap_or("")
    } else {
        host
    }
}

/// Whether the Host a request names is one of ours: localhost names, the listening addresses,
/// or `server.server-names`. Stops DNS rebinding from a browser into a loopback daemon.
pub fn host_allowed(cfg: &Config, conn: Option<&ConnInfo>, host: &str) -> bool {
    // Compared without case rather than lowercased: no copy of the name per request.
    let name = host_name(host);
    const SUFFIX: &[u8] = b".localhost";
    let b = name.as_bytes();
    if ["localhost", "127.0.0.1", "::1"]
        .iter()
        .any(|n| name.eq_ignore_ascii_case(n))
        || (b.len() >= SUFFIX.len() && b[b.len() - SUFFIX.len()..].eq_ignore_ascii_case(SUFFIX))
    {
        return true;
    }
    if let Ok(ip) = name.parse::<IpAddr>() {
        if ip.is_loopback() {
            return true;
        }
        if conn.is_some_and(|c| c.local_ip == Some(ip)) {
            return true;
        }
    }
    cfg.server
        .server_names
        .iter()
        .any(|n| n.trim_end_matches('.').eq_ignore_ascii_case(name))
}

enum AuthError {
    Missing,
    Refused(Refusal, &'static str),
    Csrf(String),
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn safe_method(m: &Method) -> bool {
    matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// A cookie-authenticated change must come from our own origin and carry the session's CSRF
/// token. Bearer tokens need neither: a browser never attaches them on its own.
fn check_csrf(
    cfg: &Config,
    headers: &HeaderMap,
    expected: &str,
    client: &Client,
) -> Result<(), String> {
    check_origin(cfg, headers, client, "change")?;
    let sent = headers
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or("missing X-CSRF-Token header (the csrf_token from POST /api/v1/session)")?;
    if !crate::store::auth::constant_time_eq(sent.as_bytes(), expected.as_bytes()) {
        return Err("X-CSRF-Token does not match this session".into());
    }
    Ok(())
}

/// A cookie-authenticated request must come from our own origin (the scheme and Host it was
/// sent to) or one of `auth.cors-origins`. Used for every change and for a WebSocket upgrade,
/// which a browser sends with the cookie from any page (cross-site WebSocket hijacking)
/// and which cannot carry a CSRF header. `what` names the request in the refusal.
pub fn check_origin(
    cfg: &Config,
    headers: &HeaderMap,
    client: &Client,
    what: &str,
) -> Result<(), String> {
    let origin = headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| format!("a cookie-authenticated {what} needs an Origin header"))?;
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let scheme = if client.secure { "https" } else { "http" };
    let same = origin.eq_ignore_ascii_case(&format!("{scheme}://{host}"));
    let listed = cfg
        .auth
        .cors_origins
        .iter()
        .any(|o| o.trim_end_matches('/').eq_ignore_ascii_case(origin));
    if !same && !listed {
        return Err(format!("cross-origin request from {origin} refused"));
    }
    Ok(())
}

/// The CSRF token of the session a request was authenticated with (a request extension, for
/// `GET /api/v1/session`).
#[derive(Debug, Clone)]
pub struct SessionCsrf(pub String);

/// Who the request comes from, with the session's CSRF token when a session cookie said so.
async fn authenticate(
    state: &AppState,
    cfg: &Config,
    method: &Method,
    headers: &HeaderMap,
    client: &Client,
) -> Result<(Actor, Option<SessionCsrf>), AuthError> {
    if let Some(uid) = client.local_admin_uid {
        return Ok((Actor::local(uid), None));
    }
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let token = value
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .ok_or(AuthError::Refused(Refusal::Malformed, "token"))?;
        return match state.auth.verify_token(token).await {
            Ok(Ok(actor)) => {
                if let Some(id) = actor.token_id.clone()
                    && state.auth.touch_due(&id)
                {
                    let auth = state.auth.clone();
                    tokio::spawn(async move {
                        if let Err(e) = auth.touch_token(&id).await {
                            tracing::debug!(error = %e, "cannot record token use");
                        }
                    });
                }
                Ok((actor, None))
            }
            Ok(Err(r)) => Err(AuthError::Refused(r, "token")),
            Err(e) => {
                tracing::error!(error = %e, "token verification failed");
                Err(AuthError::Refused(Refusal::Unknown, "token"))
            }
        };
    }
    if let Some(value) = session_cookie(headers, client) {
        let verified = state
            .auth
            .verify_session(
                value,
                cfg.auth.session_idle_timeout.get(),
                cfg.auth.session_max_age.get(),
            )
            .await;
        return match verified {
            Ok(Ok(s)) => {
                if !safe_method(method) {
                    check_csrf(cfg, headers, &s.csrf, client).map_err(AuthError::Csrf)?;
                }
                Ok((s.actor, Some(SessionCsrf(s.csrf))))
            }
            Ok(Err(r)) => Err(AuthError::Refused(r, "session")),
            Err(e) => {
                tracing::error!(error = %e, "session verification failed");
                Err(AuthError::Refused(Refusal::Unknown, "session"))
            }
        };
    }
    Err(AuthError::Missing)
}

/// Marks a response whose request is not logged on its own: a refusal only counted into a
/// summary (see [`refuse_credential`]). `context` leaves out its request log line.
#[derive(Debug, Clone, Copy)]
pub struct Summarized;

/// Answers a refused credential: 401 with an audit event, or, once this client fails more
/// often than the failed-authentication limit allows, 429 counted into the client's summary
/// (one audit event per window, `Audit::tally_refusal`) and the metric, with no event, row or
/// log line of its own. So a flood of bad credentials costs what the limit allows, no more.
pub async fn refuse_credential(
    state: &AppState,
    client: &Client,
    what: &str,
    refusal: Refusal,
    route: &str,
) -> Response {
    refuse_credential_saying(
        state,
        client,
        what,
        refusal,
        route,
        "invalid, revoked or expired credential",
    )
    .await
}

/// [`refuse_credential`] with the 401's message (a login link says why it is refused: the
/// link is one the admin just made, so the reason gives nothing away).
pub async fn refuse_credential_saying(
    state: &AppState,
    client: &Client,
    what: &str,
    refusal: Refusal,
    route: &str,
    message: &str,
) -> Response {
    let cfg = state.live.get();
    if let Decision::Limited { limit, retry_after } =
        state.limits.failed_auth(&cfg.rate_limit, &client.addr)
    {
        state.audit.tally_refusal(&client.addr, route);
        state.metrics.auth_failed(true);
        let mut resp = too_many(
            limit,
            retry_after,
            "too many failed authentications from this address",
        );
        resp.extensions_mut().insert(Summarized);
        return resp;
    }
    state.metrics.auth_failed(false);
    state
        .audit_event(named_caller("anonymous", client).event(
            "auth.failed",
            route,
            refusal.as_str(),
            format!("{what} refused: {}", refusal.as_str()),
        ))
        .await;
    let mut resp = ApiError::unauthorized(message).into_response();
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}

pub fn too_many(limit: u32, retry_after: std::time::Duration, why: &str) -> Response {
    let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
    let secs = secs.max(1);
    let mut resp = ApiError::rate_limited(format!("{why}; retry after {secs} s")).into_response();
    let h = resp.headers_mut();
    h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    h.insert("ratelimit-limit", HeaderValue::from(limit));
    h.insert("ratelimit-remaining", HeaderValue::from(0u32));
    h.insert("ratelimit-reset", HeaderValue::from(secs));
    resp
}

/// The body limit of the route a request is on, named for 413 messages (`extract::Json`).
#[derive(Debug, Clone)]
pub struct BodyLimitNote(pub super::routes::LimitName);

/// What the guard of one route enforces.
#[derive(Clone)]
pub struct Guard {
    pub access: Access,
    pub class: Class,
    pub route: &'static str,
    /// The largest body this route takes.
    pub body_limit: super::routes::BodyLimit,
    /// Content types a body may have (the first is what errors suggest).
    pub accepts: &'static [&'static str],
    /// The route bounds its own duration; otherwise `server.request-timeout` applies.
    pub own_timeout: bool,
}

fn has_body(headers: &HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|n| n > 0)
}

fn content_type_ok(headers: &HeaderMap, accepts: &[&str]) -> bool {
    // `*/*`: the route takes any body (raw uploads), with or without a Content-Type.
    if accepts.contains(&"*/*") {
        return true;
    }
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let Some(value) = ct else { return false };
    let essence = value.split(';').next().unwrap_or("").trim();
    accepts.iter().any(|a| {
        if *a == "application/json" {
            super::extract::is_json(ct)
        } else {
            essence.eq_ignore_ascii_case(a)
        }
    })
}

/// Enforces `g`, the guard of the request's route (from the route table), then hands the
/// request to `next` (the router, to the route's handler).
pub async fn guard<S>(state: &AppState, g: &Guard, req: Request, next: S) -> Response
where
    S: tower::Service<Request, Response = Response, Error = std::convert::Infallible>,
{
    let cfg = state.live.get();
    let (req, decision) = match admit(state, &cfg, g, req).await {
        Ok(admitted) => admitted,
        Err(refused) => return refused,
    };
    let mut resp = match run_bounded(&cfg, g, next, req).await {
        Ok(resp) => resp,
        Err(timed_out) => return timed_out,
    };
    rate_limit_headers(&mut resp, decision);
    resp
}

/// The checks a request passes before its handler runs, in order: the body limit, the
/// client's access (authentication, CSRF and the route's scope), the content type, the rate
/// limit. The first that fails answers the request; on success the request carries its
/// client (and actor) for the handler, with the rate-limit decision for the response.
async fn admit(
    state: &AppState,
    cfg: &Config,
    g: &Guard,
    req: Request,
) -> Result<(Request, Decision), Response> {
    let mut req = limit_body(cfg, g, req).map_err(IntoResponse::into_response)?;
    // Taken out (not cloned) for the checks; back in before the handler runs.
    let client = req
        .extensions_mut()
        .remove::<Client>()
        .unwrap_or_else(Client::unknown);
    let access = effective_access(cfg, g.access, &client);
    let limit_key = match access {
        Access::Public | Access::Metrics => bucket(cfg, g, format_args!("ip:{}", client.addr)),
        Access::Authenticated | Access::Scope(_) | Access::LocalAdmin => {
            // Parts are Sync (the body is not), so they can be borrowed across the await.
            let (parts, body) = req.into_parts();
            let (actor, csrf) = authenticate_request(state, cfg, g, &parts, &client).await?;
            authorise(state, g, access, &actor, &parts.method, &client).await?;
            let key = match &actor.token_id {
                Some(id) => bucket(cfg, g, format_args!("token:{id}")),
                None => bucket(cfg, g, format_args!("local:{}", actor.name)),
            };
            req = Request::from_parts(parts, body);
            req.extensions_mut().insert(actor);
            if let Some(csrf) = csrf {
                req.extensions_mut().insert(csrf);
            }
            key
        }
    };
    check_content_type(&req, g).map_err(IntoResponse::into_response)?;
    let decision = state.limits.check(&cfg.rate_limit, g.class, &limit_key);
    req.extensions_mut().insert(client);
    if let Decision::Limited { limit, retry_after } = decision {
        return Err(too_many(limit, retry_after, "rate limit reached"));
    }
    Ok((req, decision))
}

/// Refuses a body the request declares larger than the route takes (from Content-Length
/// alone, before anything waits on the body), and bounds the body it does read, so a client
/// that declares nothing, or lies, cannot send more either.
fn limit_body(cfg: &Config, g: &Guard, req: Request) -> Result<Request, ApiError> {
    let (max, what) = g.body_limit.resolve(cfg);
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(len) = declared
        && len > max
    {
        return Err(ApiError::payload_too_large(format!(
            "request body of {len} bytes is larger than {what}"
        )));
    }
    let limit = usize::try_from(max).unwrap_or(usize::MAX);
    let mut req = req.map(|b| axum::body::Body::new(http_body_util::Limited::new(b, limit)));
    req.extensions_mut().insert(BodyLimitNote(what));
    Ok(req)
}

/// The access this request needs: `/metrics` is public to a loopback client when
/// `metrics.public-on-loopback` says so, and otherwise needs the `metrics` scope like any
/// scoped route.
fn effective_access(cfg: &Config, access: Access, client: &Client) -> Access {
    match access {
        Access::Metrics if cfg.metrics.public_on_loopback && client_is_loopback(client) => {
            Access::Public
        }
        Access::Metrics => Access::Scope(Scope::Metrics),
        a => a,
    }
}

/// The name of the rate-limit bucket a request counts against; made only when a limit
/// applies to the route, so unlimited routes build no string for it.
fn bucket(cfg: &Config, g: &Guard, name: std::fmt::Arguments) -> String {
    if cfg.rate_limit.enabled && g.class != Class::None {
        name.to_string()
    } else {
        String::new()
    }
}

/// Who sent the request (the local admin, a bearer token or a session, with its CSRF check
/// for a change), or the refusal the client gets: 401 asking for a credential when none was
/// sent, the refused-credential answer (audited, or summarized under a flood), 403 for a
/// failed CSRF check.
async fn authenticate_request(
    state: &AppState,
    cfg: &Config,
    g: &Guard,
    parts: &axum::http::request::Parts,
    client: &Client,
) -> Result<(Actor, Option<SessionCsrf>), Response> {
    match authenticate(state, cfg, &parts.method, &parts.headers, client).await {
        Ok(found) => Ok(found),
        Err(AuthError::Missing) => Err(authentication_required()),
        Err(AuthError::Refused(r, what)) => {
            Err(refuse_credential(state, client, what, r, g.route).await)
        }
        Err(AuthError::Csrf(msg)) => Err(refuse_csrf(state, client, g.route, msg).await),
    }
}

/// 401 for a request without any credential: not audited (it is what every first request of
/// a client looks like), and it says how to get one.
fn authentication_required() -> Response {
    let mut resp = ApiError::unauthorized(
        "authentication required: send Authorization: Bearer <token>, or log in with POST /api/v1/session",
    )
    .into_response();
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}

/// 403 for a cookie-authenticated change that failed the CSRF check, audited: it may be a
/// cross-site attack through a logged-in browser.
async fn refuse_csrf(state: &AppState, client: &Client, route: &str, msg: String) -> Response {
    state
        .audit_event(named_caller("anonymous", client).event(
            "auth.csrf_refused",
            route,
            "refused",
            msg.clone(),
        ))
        .await;
    ApiError::forbidden(msg).into_response()
}

/// Whether the actor's scopes allow the route; a refusal is audited (a valid credential
/// reaching past its scopes) and answered 403 naming the scope needed.
async fn authorise(
    state: &AppState,
    g: &Guard,
    access: Access,
    actor: &Actor,
    method: &Method,
    client: &Client,
) -> Result<(), Response> {
    if access == Access::LocalAdmin {
        if actor.via == crate::store::auth::Via::Local {
            return Ok(());
        }
        state
            .audit_event(caller_of(actor, client).event(
                "auth.forbidden",
                &format!("{method} {}", g.route),
                "refused",
                "needs the admin socket".to_owned(),
            ))
            .await;
        return Err(ApiError::forbidden(
            "only the host's admin on the admin socket may do this: run `localhostd login-url` \
             as root (or the daemon's user) on the host",
        )
        .into_response());
    }
    let Access::Scope(needed) = access else {
        return Ok(());
    };
    if actor.scopes.allows(needed) {
        return Ok(());
    }
    state
        .audit_event(caller_of(actor, client).event(
            "auth.forbidden",
            &format!("{method} {}", g.route),
            "refused",
            format!("needs scope {needed}, has {}", actor.scopes),
        ))
        .await;
    Err(ApiError::forbidden(format!(
        "this route needs the `{needed}` scope; this credential has: {}",
        actor.scopes
    ))
    .into_response())
}

/// Refuses a change whose body has a Content-Type the route does not take (415), so a
/// handler never parses a body as something it was not sent as (and a cross-site form post,
/// which cannot send JSON, never reaches a JSON route).
fn check_content_type(req: &Request, g: &Guard) -> Result<(), ApiError> {
    if safe_method(req.method())
        || !has_body(req.headers())
        || content_type_ok(req.headers(), g.accepts)
    {
        return Ok(());
    }
    let got = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none");
    Err(ApiError::unsupported_media_type(format!(
        "this route takes Content-Type: {}, got {got}",
        g.accepts.join(" or ")
    )))
}

/// Runs the handler, bounded by `server.request-timeout` unless the route bounds its own
/// duration: a handler stuck on something must not hold the connection and its resources
/// for ever. The error is the 503 a request that ran out of time gets.
async fn run_bounded<S>(
    cfg: &Config,
    g: &Guard,
    next: S,
    req: Request,
) -> Result<Response, Response>
where
    S: tower::Service<Request, Response = Response, Error = std::convert::Infallible>,
{
    let run = async move {
        match tower::ServiceExt::oneshot(next, req).await {
            Ok(r) => r,
            Err(never) => match never {},
        }
    };
    if g.own_timeout {
        return Ok(run.await);
    }
    let timeout = cfg.server.request_timeout;
    tokio::time::timeout(timeout.get(), run).await.map_err(|_| {
        ApiError::unavailable(format!(
            "the request did not finish within server.request-timeout ({timeout})"
        ))
        .into_response()
    })
}

/// Tells the client what is left of its rate limit (RateLimit headers), so a well-behaved
/// client can slow down before it is refused.
fn rate_limit_headers(resp: &mut Response, decision: Decision) {
    if let Decision::Allowed { limit, remaining } = decision {
        let h = resp.headers_mut();
        h.insert("ratelimit-limit", HeaderValue::from(limit));
        h.insert("ratelimit-remaining", HeaderValue::from(remaining));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg_with(proxies: &[&str]) -> Config {
        let mut c = Config::default();
        c.auth.trusted_proxies = proxies.iter().map(|p| p.parse().unwrap()).collect();
        c
    }

    fn conn(remote: Remote) -> ConnInfo {
        ConnInfo {
            remote,
            listener: "t".into(),
            admin: false,
            public: false,
            peer_uid: None,
            local_ip: None,
        }
    }

    /// The tunnels' listener: a loopback peer, even one in a trusted proxy's network, is
    /// the internet there; its forwarded headers name no address we believe.
    #[test]
    fn the_tunnel_listener_is_never_local_nor_a_trusted_proxy() {
        let mut cfg = cfg_with(&["127.0.0.0/8"]);
        cfg.metrics.public_on_loopback = true;
        let mut c = conn(Remote::Tcp("127.0.0.1:5000".parse().unwrap()));
        c.public = true;
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("127.0.0.1"));
        h.insert("x-real-ip", HeaderValue::from_static("127.0.0.1"));
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        let client = client(&cfg, Some(&c), &h);
        assert!(!client.loopback_peer);
        assert!(!client_is_loopback(&client));
        assert_eq!(client.addr, "tunnel");
        assert!(client.local_admin_uid.is_none());
        assert!(client.secure, "the provider's edge served it over https");
        // The same peer on an ordinary listener is a trusted proxy's request.
        c.public = false;
        assert_eq!(super::client(&cfg, Some(&c), &h).addr, "127.0.0.1");
    }

    #[test]
    fn forwarded_headers_count_only_from_trusted_peers() {
        let cfg = cfg_with(&["unix"]);
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "203.0.113.9".parse().unwrap());
        h.insert("x-forwarded-proto", "https".parse().unwrap());
        let tcp = conn(Remote::Tcp("127.0.0.1:5000".parse().unwrap()));
        let c = client(&cfg, Some(&tcp), &h);
        assert_eq!(c.addr, "127.0.0.1");
        assert!(!c.secure);
        let c = client(&cfg, Some(&conn(Remote::Unix)), &h);
        assert_eq!(c.addr, "203.0.113.9");
        assert!(c.secure);
    }

    #[test]
    fn the_address_the_proxy_saw_wins_over_client_claims() {
        let cfg = cfg_with(&["unix", "10.0.0.0/8"]);
        let unix = conn(Remote::Unix);
        let addr = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.append(*k, v.parse().unwrap());
            }
            client(&cfg, Some(&unix), &h).addr
        };
        // The last X-Forwarded-For hop is the one the proxy appended.
        assert_eq!(
            addr(&[("x-forwarded-for", "1.1.1.1, 198.51.100.7, 10.0.0.5")]),
            "10.0.0.5"
        );
        assert_eq!(
            addr(&[
                ("x-forwarded-for", "127.0.0.1"),
                ("x-forwarded-for", "198.51.100.7")
            ]),
            "198.51.100.7"
        );
        // X-Real-IP, as the shipped site sets it, wins over X-Forwarded-For.
        assert_eq!(
            addr(&[
                ("x-real-ip", " 2001:db8::1 "),
                ("x-forwarded-for", "198.51.100.7")
            ]),
            "2001:db8::1"
        );
        // Forwarded is never believed; nor a repeated or malformed X-Real-IP.
        assert_eq!(addr(&[("forwarded", "for=198.51.100.9")]), "unix");
        assert_eq!(
            addr(&[
                ("forwarded", "for=127.0.0.1"),
                ("x-forwarded-for", "203.0.113.5")
            ]),
            "203.0.113.5"
        );
        assert_eq!(
            addr(&[("x-real-ip", "127.0.0.1"), ("x-real-ip", "203.0.113.5")]),
            "unix"
        );
        assert_eq!(addr(&[("x-real-ip", "127.0.0.1, 1.2.3.4")]), "unix");
        assert_eq!(addr(&[("x-forwarded-for", "1.2.3.4, junk")]), "unix");
        // A trusted TCP proxy that forwards nothing: its address, without the port.
        let tcp = conn(Remote::Tcp("10.1.2.3:4567".parse().unwrap()));
        assert_eq!(client(&cfg, Some(&tcp), &HeaderMap::new()).addr, "10.1.2.3");
    }

    #[test]
    fn loopback_privileges_never_come_from_a_forwarded_address() {
        let cfg = cfg_with(&["unix", "127.0.0.2"]);
        let unix = conn(Remote::Unix);
        let mut h = HeaderMap::new();
        assert!(
            !client_is_loopback(&client(&cfg, Some(&unix), &h)),
            "a Unix peer that forwards nothing"
        );
        for (name, value) in [
            ("x-forwarded-for", "127.0.0.1"),
            ("x-real-ip", "::1"),
            ("forwarded", "for=127.0.0.1"),
        ] {
            h.insert(name, value.parse().unwrap());
            let c = client(&cfg, Some(&unix), &h);
            assert!(!client_is_loopback(&c), "{name}: {value} -> {c:?}");
        }
        for peer in ["127.0.0.1:5", "[::1]:5", "[::ffff:127.0.0.1]:5"] {
            let c = conn(Remote::Tcp(peer.parse().unwrap()));
            assert!(
                client_is_loopback(&client(&cfg, Some(&c), &h)),
                "{peer} with forwarded headers it is not believed for"
            );
        }
        // A trusted proxy on loopback relays others: never loopback, forwarded or not.
        let proxy = conn(Remote::Tcp("127.0.0.2:5".parse().unwrap()));
        assert!(!client_is_loopback(&client(&cfg, Some(&proxy), &h)));
        assert!(!client_is_loopback(&client(
            &cfg,
            Some(&proxy),
            &HeaderMap::new()
        )));
        let c = conn(Remote::Tcp("192.168.1.9:5".parse().unwrap()));
        assert!(!client_is_loopback(&client(
            &cfg,
            Some(&c),
            &HeaderMap::new()
        )));
    }

    #[test]
    fn host_allow_list() {
        let mut cfg = Config::default();
        cfg.server.server_names = vec!["lh.example.org".into()];
        for ok in [
            "localhost",
            "localhost:8080",
            "127.0.0.1:8080",
            "[::1]:80",
            "LH.example.org",
            "app.localhost",
            // Names compare without case; a trailing dot is the same name.
            "LOCALHOST:8080",
            "App.LocalHost",
            "localhost.",
            "[::1]",
        ] {
            assert!(host_allowed(&cfg, None, ok), "{ok}");
        }
        for bad in [
            "evil.example.com",
            "lh.example.org.evil.com",
            "192.168.1.5",
            "",
            "xlocalhost",
            // Multi-byte characters where the suffix check cuts: refused, no panic.
            "ééééé.localhos",
            "localhost\u{e9}",
        ] {
            assert!(!host_allowed(&cfg, None, bad), "{bad}");
        }
        let mut c = conn(Remote::Tcp("192.168.1.9:1".parse().unwrap()));
        c.local_ip = Some("192.168.1.5".parse().unwrap());
        assert!(host_allowed(&cfg, Some(&c), "192.168.1.5:8080"));
    }

    #[test]
    fn csrf_needs_same_origin_and_matching_token() {
        let cfg = Config::default();
        let client = Client {
            addr: "x".into(),
            ..Client::unknown()
        };
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "localhost:8080".parse().unwrap());
        assert!(check_csrf(&cfg, &h, "tok", &client).is_err(), "no origin");
        h.insert(header::ORIGIN, "http://evil.example".parse().unwrap());
        h.insert(CSRF_HEADER, "tok".parse().unwrap());
        assert!(
            check_csrf(&cfg, &h, "tok", &client)
                .unwrap_err()
                .contains("cross-origin")
        );
        h.insert(header::ORIGIN, "http://localhost:8080".parse().unwrap());
        assert!(check_csrf(&cfg, &h, "tok", &client).is_ok());
        h.insert(CSRF_HEADER, "other".parse().unwrap());
        assert!(check_csrf(&cfg, &h, "tok", &client).is_err());
    }
}
