//! One-time login links through the real router: made only on the admin socket, logging in
//! once as the local admin (a session with its CSRF token), refused when used again, wrong
//! or expired, with a message that says which; audited.

use super::*;
use crate::api::server::{ConnInfo, Remote};

/// A request as it arrives on the admin socket from our own uid (peer credentials).
async fn on_admin_socket(app: &super::super::App, method: Method, path: &str) -> Sent {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, "localhost")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{}"))
        .unwrap();
    req.extensions_mut().insert(ConnInfo {
        remote: Remote::Unix,
        listener: "admin".into(),
        admin: true,
        public: false,
        peer_uid: Some(nix::unistd::geteuid().as_raw()),
        local_ip: None,
    });
    let resp = super::super::serve(app, req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    Sent {
        status,
        headers,
        json: serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    }
}

async fn login_with(app: &super::super::App, body: serde_json::Value) -> Sent {
    send(app, Method::POST, "/api/v1/session", &[], Some(body)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_link_from_the_admin_socket_logs_in_once_as_the_admin() {
    let (_d, state) = state().await;
    let app = super::super::router(state.clone());

    // Not with a token, not even an admin one (the route walk checks that too), nor anonymously.
    let anon = send(
        &app,
        Method::POST,
        "/api/v1/session/links",
        &[],
        Some(serde_json::json!({})),
    )
    .await;
    assert_eq!(anon.status, StatusCode::UNAUTHORIZED);

    let made = on_admin_socket(&app, Method::POST, "/api/v1/session/links").await;
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.json);
    assert_eq!(made.headers.get(header::CACHE_CONTROL).unwrap(), "no-store");
    let link = made.json["link"].as_str().unwrap().to_owned();
    assert!(
        made.json["expires_at"].as_str().unwrap().ends_with('Z'),
        "{}",
        made.json
    );

    let login = login_with(&app, serde_json::json!({"link": link})).await;
    assert_eq!(login.status, StatusCode::CREATED, "{}", login.json);
    let uid = nix::unistd::geteuid().as_raw();
    assert_eq!(login.json["actor"]["name"], format!("local:uid={uid}"));
    let cookie = login
        .headers
        .get(header::SET_COOKIE)
        .unwrap()
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let csrf = login.json["csrf_token"].as_str().unwrap().to_owned();

    // The session is the admin's: who-am-I with its CSRF token, and an admin route works.
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
    assert_eq!(me.json["csrf_token"], csrf.as_str());
    let tokens = send(
        &app,
        Method::GET,
        "/api/v1/tokens",
        &[("cookie", &cookie)],
        None,
    )
    .await;
    assert_eq!(tokens.status, StatusCode::OK, "{}", tokens.json);
    // A session cannot make links (only the admin socket can).
    let again = send(
        &app,
        Method::POST,
        "/api/v1/session/links",
        &[
            ("cookie", &cookie),
            ("origin", "http://localhost:8080"),
            ("x-csrf-token", &csrf),
        ],
        Some(serde_json::json!({})),
    )
    .await;
    assert_eq!(again.status, StatusCode::FORBIDDEN, "{}", again.json);
    assert!(
        again.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("login-url"),
        "{}",
        again.json
    );

    // Used: refused, saying so.
    let reuse = login_with(&app, serde_json::json!({"link": link})).await;
    assert_eq!(reuse.status, StatusCode::UNAUTHORIZED);
    let msg = reuse.json["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("used already") && msg.contains("localhostd login-url"),
        "{msg}"
    );

    // A wrong secret for the same id, and a malformed one.
    let (id, _) = link.split_once('.').unwrap();
    for bad in [format!("{id}.{}", "a".repeat(64)), "x".to_owned()] {
        let r = login_with(&app, serde_json::json!({"link": bad})).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        let msg = r.json["error"]["message"].as_str().unwrap();
        assert!(msg.contains("not valid"), "{msg}");
    }

    // Neither or both of token and link: 400.
    for body in [
        serde_json::json!({}),
        serde_json::json!({"token": "lhd_x", "link": "y"}),
    ] {
        let r = login_with(&app, body.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.json);
    }

    // Audited: the link made, the login with it, the refused reuse.
    let events = state
        .audit
        .list(crate::store::audit::Filter {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    let text = format!("{:?}", events.items);
    assert!(text.contains("session.link_create"), "{text}");
    assert!(text.contains("with a login link"), "{text}");
    assert!(text.contains("login link refused: used"), "{text}");
}
