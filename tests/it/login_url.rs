//! The web UI against the real binary: its entry page and an asset over TCP, and
//! `localhostd login-url`: the CLI asks the running daemon (admin socket) for a one-time link,
//! the link logs a client in once as the admin, a second use is refused.

use crate::harness::{Daemon, Options, run_cli};
use crate::http::{self, Target};

#[test]
fn the_ui_is_served_and_login_url_logs_in_once() {
    // The daemon binds its own sockets (not activated), so it has its admin socket in the
    // state directory, and server.listen names its real TCP address (the CLI's default base).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("own.sock");
    let mut d = Daemon::start_with(Options {
        config: format!(
            "[server]\nlisten = [\"127.0.0.1:{port}\", \"unix:{}\"]\nadmin-socket = \"/nonexistent/admin.sock\"\n",
            sock.display()
        ),
        activated: false,
        dir: Some(dir),
        ..Options::default()
    });
    d.tcp = Target::Tcp(format!("127.0.0.1:{port}").parse().unwrap());
    let cfg = d.config_path.to_str().unwrap().to_owned();

    // The entry page and the assets it names, without a token.
    let page = http::get(&d.tcp, "/");
    assert_eq!(page.status, 200, "{}", page.text());
    assert_eq!(page.header("cache-control"), Some("no-cache"));
    assert!(
        page.header("content-security-policy")
            .is_some_and(|c| c.contains("script-src 'self'")),
        "{:?}",
        page.headers
    );
    let html = page.text();
    let main = html
        .split('"')
        .find(|s| s.starts_with("/ui/") && s.ends_with("/app/main.js"))
        .unwrap_or_else(|| panic!("no main.js in {html}"))
        .to_owned();
    let js = http::get(&d.tcp, &main);
    assert_eq!(js.status, 200);
    assert_eq!(
        js.header("cache-control"),
        Some("public, max-age=31536000, immutable")
    );

    // --base as given (behind a proxy), without its trailing slash.
    let (code, out, err) = run_cli(
        &[
            "login-url",
            "--config",
            &cfg,
            "--base",
            "https://h.example.com/lhd/",
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.trim()
            .starts_with("https://h.example.com/lhd/login#link="),
        "{out}"
    );

    // The default base: the first TCP address of server.listen.
    let (code, out, err) = run_cli(&["login-url", "--config", &cfg], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("works once"), "{err}");
    let url = out.trim();
    let secret = url
        .strip_prefix(&format!("http://127.0.0.1:{port}/login#link="))
        .unwrap_or_else(|| panic!("{url}"));

    let body = serde_json::json!({ "link": secret }).to_string();
    let json = [("Content-Type", "application/json")];
    let login = http::request(&d.tcp, "POST", "/api/v1/session", &json, body.as_bytes());
    assert_eq!(login.status, 201, "{}", login.text());
    let cookie = login
        .header("set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let me = http::request(
        &d.tcp,
        "GET",
        "/api/v1/session",
        &[("Cookie", &cookie)],
        b"",
    );
    assert_eq!(me.status, 200, "{}", me.text());
    let uid = nix::unistd::geteuid().as_raw();
    assert_eq!(me.json()["actor"]["name"], format!("local:uid={uid}"));
    assert!(me.json()["csrf_token"].is_string(), "{}", me.text());
    let tokens = http::request(&d.tcp, "GET", "/api/v1/tokens", &[("Cookie", &cookie)], b"");
    assert_eq!(tokens.status, 200, "{}", tokens.text());

    // Once only.
    let again = http::request(&d.tcp, "POST", "/api/v1/session", &json, body.as_bytes());
    assert_eq!(again.status, 401, "{}", again.text());
    assert!(again.text().contains("used already"), "{}", again.text());

    // A bad --base is refused before anything is asked.
    let (code, _, err) = run_cli(
        &["login-url", "--config", &cfg, "--base", "example.com"],
        &[],
    );
    assert_ne!(code, 0);
    assert!(err.contains("http://"), "{err}");

    // No daemon: said plainly.
    d.stop();
    let (code, _, err) = run_cli(&["login-url", "--config", &cfg], &[]);
    assert_ne!(code, 0);
    assert!(err.contains("no running daemon"), "{err}");
}
