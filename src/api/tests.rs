//! API tests through the real router (`api::serve`, as the server calls it, and `oneshot`): the route-table walk (every non-public
//! route refuses anonymous callers with 401 and callers without its scope with 403), tokens,
//! sessions and CSRF.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use tower::ServiceExt;

use super::access::Access;
use super::routes;
use crate::api::state::AppState;
use crate::config::{Config, LiveConfig};
use crate::ops::health::Health;
use crate::store::auth::{Scope, Scopes};
use crate::store::db::Db;

async fn state_with(cfg: Config) -> (tempfile::TempDir, AppState) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&dir.path().join("t.db"), 2).unwrap();
    let live = Arc::new(LiveConfig::new(cfg));
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let health = Arc::new(Health {
        db: db.clone(),
        state_dir: dir.path().to_owned(),
        live: live.clone(),
        started: Instant::now(),
        started_at: SystemTime::now(),
        listeners: 1,
        socket_activated: false,
        job_cgroups: "not available (tests)".into(),
        cgroups_delegated: false,
        memory_limited_by: crate::jobs::sandbox::MemoryLimitedBy::Rlimit,
        shutting_down: rx,
    });
    let sandbox = crate::jobs::sandbox::Sandbox::start(
        // No job runs in these tests (the binary is not built for unit tests).
        std::path::PathBuf::from("/nonexistent/localhostd"),
    )
    .unwrap();
    (dir, AppState::new(db, live, health, sandbox, None).unwrap())
}

async fn state() -> (tempfile::TempDir, AppState) {
    state_with(Config::default()).await
}

struct Sent {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    json: serde_json::Value,
}

async fn send(
    app: &super::App,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<serde_json::Value>,
) -> Sent {
    let mut b = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, "localhost:8080");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let req = match body {
        Some(j) => b
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(j.to_string()))
            .unwrap(),
        None => b.body(Body::empty()).unwrap(),
    };
    // The server's own path (`api::serve`); other tests here go through `Service::call`.
    let resp = super::serve(app, req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    Sent {
        status,
        headers,
        json,
    }
}

fn concrete(path: &str) -> String {
    path.split('/')
        .map(|seg| if seg.starts_with('{') { "some-id" } else { seg })
        .collect::<Vec<_>>()
        .join("/")
}

fn body_for(m: &Method) -> Option<serde_json::Value> {
    matches!(*m, Method::POST | Method::PUT | Method::PATCH).then(|| serde_json::json!({}))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_non_public_route_needs_credentials_and_its_scope() {
    // Tunnels on: off, their routes refuse everyone (403 saying how to turn them on).
    let mut cfg = Config::default();
    cfg.tunnels.enabled = true;
    let (_d, state) = state_with(cfg).await;
    let app = super::router(state.clone());
    let table = routes::table();
    assert!(
        table.iter().any(|r| r.access != Access::Public),
        "nothing to walk"
    );
    let mut walked = 0;
    for route in &table {
        let path = concrete(route.path);
        let anon = send(
            &app,
            route.method.clone(),
            &path,
            &[],
            body_for(&route.method),
        )
        .await;
        let needed = match route.access {
            Access::Public => {
                assert_ne!(
                    anon.status,
                    StatusCode::UNAUTHORIZED,
                    "public route {} {} asked for credentials",
                    route.method,
                    path
                );
                continue;
            }
            Access::Authenticated => None,
            Access::Scope(s) => Some(s),
            Access::Metrics => Some(Scope::Metrics),
            Access::LocalAdmin => {
                // The admin socket only: 401 without a credential, 403 for an admin token.
                assert_eq!(
                    anon.status,
                    StatusCode::UNAUTHORIZED,
                    "{} {path}",
                    route.method
                );
                let t = state
                    .auth
                    .create_token(
                        &format!("admin-{walked}"),
                        Scopes::of(&[Scope::Admin]),
                        None,
                    )
                    .await
                    .unwrap();
                let r = send(
                    &app,
                    route.method.clone(),
                    &path,
                    &[("authorization", &format!("Bearer {}", t.token))],
                    body_for(&route.method),
                )
                .await;
                assert_eq!(r.status, StatusCode::FORBIDDEN, "{} {path}", route.method);
                walked += 1;
                continue;
            }
        };
        assert_eq!(
            anon.status,
            StatusCode::UNAUTHORIZED,
            "{} {} without credentials",
            route.method,
            path
        );
        assert_eq!(anon.json["error"]["code"], "unauthorized");
        assert_eq!(
            anon.headers.get(header::WWW_AUTHENTICATE).unwrap(),
            "Bearer"
        );
        if let Some(scope) = needed {
            // Every scope but the needed one (and admin, which implies it).
            let others: Vec<Scope> = Scope::ALL
                .into_iter()
                .filter(|s| *s != scope && *s != Scope::Admin)
                .collect();
            let name = format!("lacks-{scope}-{walked}");
            let t = state
                .auth
                .create_token(&name, Scopes::of(&others), None)
                .await
                .unwrap();
            let bearer = format!("Bearer {}", t.token);
            let r = send(
                &app,
                route.method.clone(),
                &path,
                &[("authorization", &bearer)],
                body_for(&route.method),
            )
            .await;
            assert_eq!(
                r.status,
                StatusCode::FORBIDDEN,
                "{} {} with scopes {:?}",
                route.method,
                path,
                others
            );
            assert_eq!(r.json["error"]["code"], "forbidden");
            // Positive control: the needed scope gets past the guard.
            let t = state
                .auth
                .create_token(&format!("has-{scope}-{walked}"), Scopes::of(&[scope]), None)
                .await
                .unwrap();
            let bearer = format!("Bearer {}", t.token);
            let r = send(
                &app,
                route.method.clone(),
                &path,
                &[("authorization", &bearer)],
                body_for(&route.method),
            )
            .await;
            assert!(
                r.status != StatusCode::UNAUTHORIZED && r.status != StatusCode::FORBIDDEN,
                "{} {} refused a token with its scope: {}",
                route.method,
                path,
                r.json
            );
        }
        walked += 1;
    }
    assert!(walked >= 5, "walked only {walked} routes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_and_expired_tokens_are_refused() {
    let (_d, state) = state().await;
    let app = super::router(state.clone());
    let t = state
        .auth
        .create_token("soon-gone", Scopes::of(&[Scope::Admin]), None)
        .await
        .unwrap();
    let bearer = format!("Bearer {}", t.token);
    assert_eq!(
        send(
            &app,
            Method::GET,
            "/api/v1/tokens",
            &[("authorization", &bearer)],
            None
        )
        .await
        .status,
        200
    );
    state.auth.revoke_token("soon-gone").await.unwrap();
    let r = send(
        &app,
        Method::GET,
        "/api/v1/tokens",
        &[("authorization", &bearer)],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    let t = state
        .auth
        .create_token(
            "expiring",
            Scopes::of(&[Scope::Admin]),
            Some(std::time::Duration::from_secs(3600)),
        )
        .await
        .unwrap();
    let id = t.info.id.clone();
    state
        .db
        .write(move |c| Ok(c.execute("UPDATE tokens SET expires_at = 1 WHERE id = ?1", [id])?))
        .await
        .unwrap();
    let bearer = format!("Bearer {}", t.token);
    let r = send(
        &app,
        Method::GET,
        "/api/v1/tokens",
        &[("authorization", &bearer)],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // Both refusals are in the audit trail.
    let page = state
        .audit
        .list(crate::store::audit::Filter {
            limit: 10,
            action: Some("auth.failed".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let results: Vec<&str> = page.items.iter().map(|r| r.result.as_str()).collect();
    assert!(
        results.contains(&"revoked") && results.contains(&"expired"),
        "{results:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_changes_need_csrf_and_same_origin_bearer_does_not() {
    let (_d, state) = state().await;
    let app = super::router(state.clone());
    let t = state
        .auth
        .create_token("admin-web", Scopes::of(&[Scope::Admin]), None)
        .await
        .unwrap();

    let bad = send(
        &app,
        Method::POST,
        "/api/v1/session",
        &[],
        Some(serde_json::json!({"token": "lhd_nope"})),
    )
    .await;
    assert_eq!(bad.status, StatusCode::UNAUTHORIZED);

    let login = send(
        &app,
        Method::POST,
        "/api/v1/session",
        &[],
        Some(serde_json::json!({"token": t.token})),
    )
    .await;
    assert_eq!(login.status, StatusCode::CREATED, "{}", login.json);
    let set_cookie = login
        .headers
        .get(header::SET_COOKIE)
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict"),
        "{set_cookie}"
    );
    assert!(
        !set_cookie.contains("Secure"),
        "plain HTTP from an untrusted peer is not TLS"
    );
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    let csrf = login.json["csrf_token"].as_str().unwrap().to_owned();

    // Reads need no CSRF token.
    let me = send(
        &app,
        Method::GET,
        "/api/v1/session",
        &[("cookie", &cookie)],
        None,
    )
    .await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.json["actor"]["via"], "session");
    // A reloaded page learns its CSRF token here; a bearer token has none.
    assert_eq!(me.json["csrf_token"], csrf.as_str(), "{}", me.json);
    let bearer_me = send(
        &app,
        Method::GET,
        "/api/v1/session",
        &[("authorization", &format!("Bearer {}", t.token))],
        None,
    )
    .await;
    assert_eq!(bearer_me.status, StatusCode::OK);
    assert!(
        bearer_me.json.get("csrf_token").is_none(),
        "{}",
        bearer_me.json
    );

    let create = |name: &str| Some(serde_json::json!({"name": name, "scopes": ["read"]}));
    let origin = "http://localhost:8080";
    let cases: [(&str, Vec<(&str, &str)>); 4] = [
        (
            "missing csrf",
            vec![("cookie", &cookie), ("origin", origin)],
        ),
        (
            "wrong csrf",
            vec![
                ("cookie", &cookie),
                ("origin", origin),
                ("x-csrf-token", "0000"),
            ],
        ),
        (
            "cross origin",
            vec![
                ("cookie", &cookie),
                ("origin", "http://evil.example"),
                ("x-csrf-token", &csrf),
            ],
        ),
        (
            "no origin",
            vec![("cookie", &cookie), ("x-csrf-token", &csrf)],
        ),
    ];
    for (what, headers) in cases {
        let r = send(&app, Method::POST, "/api/v1/tokens", &headers, create("x")).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{what}: {}", r.json);
    }
    assert!(
        state
            .auth
            .list_tokens()
            .await
            .unwrap()
            .iter()
            .all(|t| t.name != "x"),
        "a refused request changed state"
    );
    let ok = send(
        &app,
        Method::POST,
        "/api/v1/tokens",
        &[
            ("cookie", &cookie),
            ("origin", origin),
            ("x-csrf-token", &csrf),
        ],
        create("via-cookie"),
    )
    .await;
    assert_eq!(ok.status, StatusCode::CREATED, "{}", ok.json);

    let bearer = format!("Bearer {}", t.token);
    let ok = send(
        &app,
        Method::POST,
        "/api/v1/tokens",
        &[("authorization", &bearer)],
        create("via-bearer"),
    )
    .await;
    assert_eq!(
        ok.status,
        StatusCode::CREATED,
        "bearer needs no CSRF: {}",
        ok.json
    );

    // Logout ends the session.
    let out = send(
        &app,
        Method::DELETE,
        "/api/v1/session",
        &[
            ("cookie", &cookie),
            ("origin", origin),
            ("x-csrf-token", &csrf),
        ],
        None,
    )
    .await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);
    let me = send(
        &app,
        Method::GET,
        "/api/v1/session",
        &[("cookie", &cookie)],
        None,
    )
    .await;
    assert_eq!(me.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bodies_get_clear_errors_and_change_nothing() {
    let (_d, state) = state().await;
    let app = super::router(state.clone());
    let t = state
        .auth
        .create_token("a", Scopes::of(&[Scope::Admin]), None)
        .await
        .unwrap();
    let bearer = format!("Bearer {}", t.token);
    let raw = |ct: &'static str, body: &'static str| {
        let app = app.clone();
        let bearer = bearer.clone();
        async move {
            let req = Request::builder()
                .method(Method::POST)
                .uri("/api/v1/tokens")
                .header(header::HOST, "localhost")
                .header("authorization", bearer)
                .header(header::CONTENT_TYPE, ct)
                .body(Body::from(body))
                .unwrap();
            let resp = app.oneshot(req).await.unwrap();
            let status = resp.status();
            let bytes = resp.into_body().collect().await.unwrap().to_bytes();
            (
                status,
                serde_json::from_slice::<serde_json::Value>(&bytes).unwrap(),
            )
        }
    };
    let (s, j) = raw(
        "application/json",
        "{\"name\": \"x\", \"scopes\": [\"read\"",
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(j["error"]["code"], "invalid_json");
    assert!(
        j["error"]["message"]
            .as_str()
            .unwrap()
            .contains("line 1, column"),
        "{j}"
    );
    let (s, j) = raw("text/plain", "{}").await;
    assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(j["error"]["code"], "unsupported_media_type");
    let (s, j) = raw(
        "application/json",
        "{\"name\": \"x\", \"scopes\": [\"root\"]}",
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        j["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown scope"),
        "{j}"
    );
    let (s, _) = raw(
        "application/json",
        "{\"name\": \"../etc\", \"scopes\": [\"read\"]}",
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(
        state.auth.list_tokens().await.unwrap().len(),
        1,
        "a refused request created a token"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_hosts_are_refused_and_security_headers_are_set() {
    let (_d, state) = state().await;
    let app = super::router(state);
    let req = Request::builder()
        .uri("/health")
        .header(header::HOST, "rebind.attacker.example")
        .body(Body::empty())
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let ok = send(&app, Method::GET, "/health", &[], None).await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(ok.headers.get("x-content-type-options").unwrap(), "nosniff");
    assert!(
        ok.headers
            .get("content-security-policy")
            .unwrap()
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'none'")
    );
    assert!(
        ok.headers.get("access-control-allow-origin").is_none(),
        "CORS without configured origins"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_only_for_listed_origins() {
    let mut cfg = Config::default();
    cfg.auth.cors_origins = vec!["https://app.example.org".into()];
    let (_d, state) = state_with(cfg).await;
    let app = super::router(state);
    let listed = send(
        &app,
        Method::GET,
        "/health",
        &[("origin", "https://app.example.org")],
        None,
    )
    .await;
    assert_eq!(
        listed.headers.get("access-control-allow-origin").unwrap(),
        "https://app.example.org"
    );
    let other = send(
        &app,
        Method::GET,
        "/health",
        &[("origin", "https://evil.example")],
        None,
    )
    .await;
    assert!(other.headers.get("access-control-allow-origin").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_limit_is_per_route_uploads_bypass_it_json_routes_keep_it() {
    let mut cfg = Config::default();
    cfg.server.max_body_size = crate::config::ByteSize(64);
    cfg.storage.min_free_disk = crate::config::ByteSize(0);
    let (_d, state) = state_with(cfg).await;
    let app = super::router(state.clone());
    let t = state
        .auth
        .create_token("limits", Scopes::of(&[Scope::Admin]), None)
        .await
        .unwrap();
    let bearer = format!("Bearer {}", t.token);
    let big = vec![b'x'; 4096];
    // BodyLimit::Unlimited: a raw upload far above server.max-body-size is stored.
    let req = Request::builder()
        .method(Method::PUT)
        .uri("/api/v1/files/big.bin")
        .header(header::HOST, "localhost")
        .header("authorization", &bearer)
        .header(header::CONTENT_LENGTH, big.len())
        .body(Body::from(big.clone()))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    // BodyLimit::Server: the same body on a JSON route is refused, declared or streamed.
    for declared in [true, false] {
        let mut b = Request::builder()
            .method(Method::POST)
            .uri("/api/v1/tokens")
            .header(header::HOST, "localhost")
            .header("authorization", &bearer)
            .header(header::CONTENT_TYPE, "application/json");
        if declared {
            b = b.header(header::CONTENT_LENGTH, big.len());
        }
        let body = if declared {
            Body::from(big.clone())
        } else {
            Body::from_stream(tokio_stream::iter(vec![Ok::<_, std::io::Error>(
                bytes::Bytes::from(big.clone()),
            )]))
        };
        let resp = app.clone().oneshot(b.body(body).unwrap()).await.unwrap();
        assert_eq!(
            resp.status(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "declared: {declared}"
        );
    }
}

mod data;
mod login_links;
mod ui;

/// Below the free-disk floor a data write and a token (each with its audit row) answer 507
/// and write nothing; a refused credential still answers 401 (its event only reaches the log).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_below_the_free_disk_floor_answer_507_and_store_nothing() {
    let put = |app: super::App, bearer: String, v: i64| async move {
        send(
            &app,
            Method::PUT,
            "/api/v1/data/k",
            &[("authorization", &bearer)],
            Some(serde_json::json!(v)),
        )
        .await
    };
    let admin = |state: AppState| async move {
        let t = state
            .auth
            .create_token("admin", Scopes::of(&[Scope::Admin]), None)
            .await
            .unwrap();
        format!("Bearer {}", t.token)
    };
    let rows = |state: AppState| async move {
        state
            .audit
            .list(crate::store::audit::Filter {
                limit: 1000,
                ..Default::default()
            })
            .await
            .unwrap()
            .items
            .len()
    };
    // Positive control: with room (the default floor), the write is stored.
    let (_d, state) = state().await;
    let bearer = admin(state.clone()).await;
    let ok = put(super::router(state.clone()), bearer, 1).await;
    assert!(ok.status.is_success(), "{}", ok.json);

    let mut cfg = Config::default();
    cfg.storage.min_free_disk = crate::config::ByteSize(u64::MAX / 2);
    let (_d, state) = state_with(cfg).await;
    let app = super::router(state.clone());
    // Made before the floor was in force (tokens are refused below it too).
    state.db.set_min_free_disk(crate::config::ByteSize(0));
    let bearer = admin(state.clone()).await;
    state
        .db
        .set_min_free_disk(crate::config::ByteSize(u64::MAX / 2));
    let before = rows(state.clone()).await;
    let full = put(app.clone(), bearer.clone(), 2).await;
    assert_eq!(
        full.status,
        StatusCode::INSUFFICIENT_STORAGE,
        "{}",
        full.json
    );
    assert_eq!(full.json["error"]["code"], "insufficient_storage");
    let token = send(
        &app,
        Method::POST,
        "/api/v1/tokens",
        &[("authorization", &bearer)],
        Some(serde_json::json!({"name": "more", "scopes": ["read"]})),
    )
    .await;
    assert_eq!(
        token.status,
        StatusCode::INSUFFICIENT_STORAGE,
        "{}",
        token.json
    );
    let bad = send(
        &app,
        Method::GET,
        "/api/v1/tokens",
        &[("authorization", "Bearer lhd_x")],
        None,
    )
    .await;
    assert_eq!(bad.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        rows(state.clone()).await,
        before,
        "an audit row was written"
    );
    assert!(state.kv.get("k").await.unwrap().is_none());
    assert!(
        state
            .auth
            .list_tokens()
            .await
            .unwrap()
            .iter()
            .all(|t| t.name != "more")
    );
}
