//! Tunnels with clients that behave like cloudflared and ngrok (`tests/it/tunnel_fakes/`: those
//! two cannot be installed from the registries these machines reach), run by the real
//! daemon's supervisor in the sandbox: the routes while tunnels are off, start / up / stop,
//! the public listener (never loopback; a tunnel's host passes the Host check only while it is
//! up), a crashing client restarted and then marked failed, the desired state surviving a
//! restart, and no idle exit while a tunnel is wanted. The real ssh and localtunnel clients
//! are in `tunnels_real`.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Daemon, Options, request_as, request_json};
use crate::http::{self, Target};

fn fakes() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/tunnel_fakes")
}

/// The config of a daemon with tunnels on and the fakes as cloudflared and ngrok.
fn config(extra: &str, ngrok_token: &Path) -> String {
    format!(
        "[tunnels]\nenabled = true\nurl-timeout = \"20s\"\nrestart-delay = \"100ms\"\nmax-restart-delay = \"200ms\"\n\
         [tunnels.cloudflared]\npath = {:?}\n\
         [tunnels.ngrok]\npath = {:?}\nauthtoken-file = {:?}\n{extra}",
        fakes().join("cloudflared").display().to_string(),
        fakes().join("ngrok").display().to_string(),
        ngrok_token.display().to_string(),
    )
}

fn token_file(dir: &Path) -> PathBuf {
    let p = dir.join("ngrok.authtoken");
    std::fs::write(&p, "2abcTESTtoken\n").unwrap();
    p
}

fn list(d: &Daemon, token: &str) -> Value {
    let r = request_json(d, "GET", "/api/v1/tunnels", token, &json!(null));
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

fn tunnel(d: &Daemon, token: &str, provider: &str) -> Value {
    list(d, token)["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["provider"] == provider)
        .cloned()
        .unwrap()
}

fn post(d: &Daemon, token: &str, path: &str, body: &Value) -> http::Response {
    request_json(d, "POST", path, token, body)
}

/// Polls until the tunnel of `provider` satisfies `ok`, for up to 30 s.
fn wait_for(
    d: &Daemon,
    token: &str,
    provider: &str,
    what: &str,
    ok: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let t = tunnel(d, token, provider);
        if ok(&t) {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "{provider} not {what} in 30 s: {t}\nlog:\n{}",
            d.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn target(d: &Daemon, token: &str) -> SocketAddr {
    list(d, token)["target"].as_str().unwrap().parse().unwrap()
}

/// A GET to the public listener naming `host`.
fn get_as(addr: SocketAddr, path: &str, host: &str) -> http::Response {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    http::read_response(&mut s)
}

/// The tunnel clients of the daemon whose public listener is `addr` (every client's command
/// line names it; other tests' daemons run theirs at the same time).
fn clients_of(addr: SocketAddr) -> Vec<i32> {
    processes_with(&format!("127.0.0.1:{}", addr.port()))
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("/tunnel-client/"))
        })
        .collect()
}

/// Host processes whose command line contains `needle`.
fn processes_with(needle: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline"))
            && String::from_utf8_lossy(&cmd)
                .replace('\0', " ")
                .contains(needle)
        {
            out.push(pid);
        }
    }
    out
}

fn metric(d: &Daemon, token: &str, series: &str) -> f64 {
    let r = request_as(
        &d.tcp,
        &format!("Bearer {token}"),
        "GET",
        "/metrics",
        None,
        b"",
    );
    assert_eq!(r.status, 200);
    r.text()
        .lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .map(|v| v.trim().parse::<f64>().unwrap())
        })
        .unwrap_or_else(|| panic!("no {series} in /metrics"))
}

#[test]
fn while_off_every_tunnel_route_says_how_to_turn_them_on() {
    let d = Daemon::start();
    let token = d.admin_token();
    for (method, path) in [
        ("GET", "/api/v1/tunnels"),
        ("POST", "/api/v1/tunnels/cloudflared/start"),
        ("POST", "/api/v1/tunnels/ssh/stop"),
    ] {
        let r = request_json(&d, method, path, &token, &json!({}));
        assert_eq!(r.status, 403, "{method} {path}: {}", r.text());
        let j = r.json();
        assert_eq!(j["error"]["code"], "forbidden");
        assert!(
            j["error"]["message"]
                .as_str()
                .unwrap()
                .contains("[tunnels] enabled = true"),
            "{j}"
        );
    }
    // Nothing but the API's listeners was bound.
    assert!(!d.logs().contains("public listener"), "{}", d.logs());
}

#[test]
fn a_cloudflared_tunnel_comes_up_its_host_passes_while_up_and_stop_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start_config(&config("", &token_file(dir.path())));
    let token = d.admin_token();
    let t = tunnel(&d, &token, "ssh");
    assert_eq!(t["available"], false);
    assert!(
        t["unavailable_reason"].as_str().unwrap().contains("host"),
        "{t}"
    );
    let addr = target(&d, &token);
    assert!(addr.ip().is_loopback());

    let r = post(&d, &token, "/api/v1/tunnels/cloudflared/start", &json!({}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["desired"], "up");
    let up = wait_for(&d, &token, "cloudflared", "up", |t| t["state"] == "up");
    let url = up["url"].as_str().unwrap().to_owned();
    assert!(
        url.starts_with("https://") && url.ends_with(".trycloudflare.com"),
        "{url}"
    );
    let host = url.trim_start_matches("https://");
    assert_eq!(
        metric(&d, &token, "localhostd_tunnel_up{provider=\"cloudflared\"}"),
        1.0
    );
    assert_eq!(clients_of(addr).len(), 1);

    // The tunnel's host passes the Host check while the tunnel is up.
    let r = get_as(addr, "/health", host);
    assert_eq!(r.status, 200, "{}", r.text());
    let r = get_as(addr, "/health", "elsewhere.trycloudflare.com");
    assert_eq!(r.status, 400, "another name is refused: {}", r.text());

    let r = post(&d, &token, "/api/v1/tunnels/cloudflared/stop", &json!({}));
    assert_eq!(r.status, 200, "{}", r.text());
    let stopped = r.json();
    assert_eq!(stopped["state"], "stopped");
    assert_eq!(stopped["desired"], "down");
    assert!(stopped["url"].is_null());
    assert!(clients_of(addr).is_empty(), "the client outlived its stop");
    let r = get_as(addr, "/health", host);
    assert_eq!(r.status, 400, "the host passes only while up: {}", r.text());
    assert_eq!(
        metric(&d, &token, "localhostd_tunnel_up{provider=\"cloudflared\"}"),
        0.0
    );

    // Both changes are audited.
    let r = request_json(
        &d,
        "GET",
        "/api/v1/audit?action=tunnel.start",
        &token,
        &json!(null),
    );
    let items = r.json()["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!(items[0]["target"], "cloudflared");
    let r = request_json(
        &d,
        "GET",
        "/api/v1/audit?action=tunnel.stop",
        &token,
        &json!(null),
    );
    assert_eq!(r.json()["items"].as_array().unwrap().len(), 1);
}

#[test]
fn an_ngrok_tunnel_reads_its_url_from_the_agent_api() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start_config(&config("", &token_file(dir.path())));
    let token = d.admin_token();
    let r = post(&d, &token, "/api/v1/tunnels/ngrok/start", &json!({}));
    assert_eq!(r.status, 200, "{}", r.text());
    let up = wait_for(&d, &token, "ngrok", "up", |t| t["state"] == "up");
    let url = up["url"].as_str().unwrap();
    assert!(url.starts_with("https://"), "{url}");
    assert_eq!(clients_of(target(&d, &token)).len(), 1);
    let r = post(&d, &token, "/api/v1/tunnels/ngrok/stop", &json!({}));
    assert_eq!(r.status, 200);
    assert!(clients_of(target(&d, &token)).is_empty());
}

/// A start of a running tunnel with the same options leaves its client alone; with other
/// options it ends that client and starts one with them.
#[test]
fn starting_a_running_tunnel_again_restarts_it_only_for_other_options() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start_config(&config("", &token_file(dir.path())));
    let token = d.admin_token();
    let start = |body: Value| {
        let r = post(&d, &token, "/api/v1/tunnels/ngrok/start", &body);
        assert_eq!(r.status, 200, "{}", r.text());
    };
    start(json!({"domain": "first.example.org"}));
    let up = wait_for(&d, &token, "ngrok", "up at the first domain", |t| {
        t["url"] == "https://first.example.org"
    });
    assert_eq!(up["state"], "up");
    let addr = target(&d, &token);
    let first = clients_of(addr);
    assert_eq!(first.len(), 1, "{first:?}");

    // The same options: the same client, still up, nothing restarted.
    start(json!({"domain": "first.example.org"}));
    let same = tunnel(&d, &token, "ngrok");
    assert_eq!(same["state"], "up", "{same}");
    assert_eq!(same["url"], "https://first.example.org");
    assert_eq!(
        clients_of(addr),
        first,
        "the same start replaced the client"
    );

    // Other options: the old client is gone and a new one serves the new domain.
    start(json!({"domain": "second.example.org"}));
    let again = wait_for(&d, &token, "ngrok", "up at the second domain", |t| {
        t["url"] == "https://second.example.org"
    });
    assert_eq!(again["state"], "up");
    let second = clients_of(addr);
    assert_eq!(second.len(), 1, "{second:?}");
    assert_ne!(second, first, "other options kept the old client");
    assert!(
        !std::path::Path::new(&format!("/proc/{}", first[0])).exists(),
        "the first client outlived its replacement"
    );

    let r = post(&d, &token, "/api/v1/tunnels/ngrok/stop", &json!({}));
    assert_eq!(r.status, 200);
    assert!(clients_of(addr).is_empty());
}

#[test]
fn bad_starts_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start_config(&config("", &token_file(dir.path())));
    let token = d.admin_token();
    // ssh has no host configured.
    let r = post(&d, &token, "/api/v1/tunnels/ssh/start", &json!({}));
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("host")
    );
    // An option of another provider.
    let r = post(
        &d,
        &token,
        "/api/v1/tunnels/cloudflared/start",
        &json!({"subdomain": "abcd"}),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("subdomain")
    );
    // No such provider; a body that is not JSON; one that is not an object.
    let r = post(&d, &token, "/api/v1/tunnels/frp/start", &json!({}));
    assert_eq!(r.status, 404);
    let bearer = format!("Bearer {token}");
    let r = request_as(
        &d.tcp,
        &bearer,
        "POST",
        "/api/v1/tunnels/cloudflared/start",
        Some("application/json"),
        b"{nope",
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["code"], "invalid_json");
    let r = request_as(
        &d.tcp,
        &bearer,
        "POST",
        "/api/v1/tunnels/cloudflared/start",
        Some("application/json"),
        b"[1]",
    );
    assert_eq!(r.status, 400);
    // A token without the admin scope.
    let r = request_json(
        &d,
        "POST",
        "/api/v1/tokens",
        &token,
        &json!({"name": "w", "scopes": ["read", "write", "exec"]}),
    );
    let weak = r.json()["token"].as_str().unwrap().to_owned();
    let r = post(&d, &weak, "/api/v1/tunnels/cloudflared/start", &json!({}));
    assert_eq!(r.status, 403);
    // None of it started anything.
    assert!(
        list(&d, &token)["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["state"] == "stopped" && t["desired"] == "down")
    );
}

/// The public listener is the internet's, whatever the peer address: `/metrics` with
/// `public-on-loopback` answers a loopback client of the API listener and refuses the same
/// request on the tunnels' listener, even with forwarded headers naming loopback (a trusted
/// proxy on loopback is refused there too: `api::access` unit tests).
#[test]
fn the_public_listener_never_has_loopback_privileges() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start_config(&config(
        "[metrics]\npublic-on-loopback = true\n",
        &token_file(dir.path()),
    ));
    let token = d.admin_token();
    let addr = target(&d, &token);
    let direct = http::get(&d.tcp, "/metrics");
    assert_eq!(direct.status, 200, "positive control: {}", direct.text());
    let r = get_as(addr, "/metrics", "localhost");
    assert_eq!(r.status, 401, "{}", r.text());
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: localhost\r\nX-Forwarded-For: 127.0.0.1\r\nX-Real-IP: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let r = http::read_response(&mut s);
    assert_eq!(r.status, 401, "{}", r.text());
    // With a token it is an ordinary request.
    let r = http::request(
        &Target::Tcp(addr),
        "GET",
        "/api/v1/tunnels",
        &[("Authorization", &format!("Bearer {token}"))],
        b"",
    );
    assert_eq!(r.status, 200);
}

/// A fake cloudflared that exits 1 a moment after it started, in a directory of its own.
fn crashing_cloudflared(seconds: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::copy(fakes().join("cloudflared"), dir.path().join("cloudflared")).unwrap();
    std::fs::write(dir.path().join("crash-after"), format!("{seconds}\n")).unwrap();
    dir
}

#[test]
fn a_crashing_client_is_restarted_then_marked_failed_with_its_last_lines() {
    let dir = tempfile::tempdir().unwrap();
    let crashing = crashing_cloudflared("0.5");
    let cfg = config("", &token_file(dir.path())).replace(
        &format!(
            "path = {:?}\n[tunnels.ngrok]",
            fakes().join("cloudflared").display().to_string()
        ),
        &format!(
            "path = {:?}\n[tunnels.ngrok]",
            crashing.path().join("cloudflared").display().to_string()
        ),
    );
    let d = Daemon::start_config(&format!("{cfg}\n"));
    let token = d.admin_token();
    // max-failures is 5 by default; each run lives 0.5 s.
    let r = post(&d, &token, "/api/v1/tunnels/cloudflared/start", &json!({}));
    assert_eq!(r.status, 200, "{}", r.text());
    let failed = wait_for(&d, &token, "cloudflared", "failed", |t| {
        t["state"] == "failed"
    });
    assert_eq!(failed["desired"], "up");
    assert_eq!(failed["restarts"], 4, "{failed}");
    let error = failed["last_error"].as_str().unwrap();
    assert!(
        error.contains("exited with status 1") && error.contains("5 failures"),
        "{error}"
    );
    assert!(
        failed["last_lines"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l.as_str().unwrap().contains("trycloudflare.com")),
        "{failed}"
    );
    assert!(
        metric(
            &d,
            &token,
            "localhostd_tunnel_restarts_total{provider=\"cloudflared\"}"
        ) >= 4.0
    );
    assert!(d.logs().contains("a tunnel failed too often in a row"));
    // A start after the failure starts it afresh (and it fails again, the same way).
    let r = post(&d, &token, "/api/v1/tunnels/cloudflared/start", &json!({}));
    assert_eq!(r.status, 200);
    assert_ne!(r.json()["state"], "failed");
    let r = post(&d, &token, "/api/v1/tunnels/cloudflared/stop", &json!({}));
    assert_eq!(r.status, 200);
    assert!(clients_of(target(&d, &token)).is_empty());
}

#[test]
fn a_restarted_daemon_brings_back_the_tunnels_meant_to_be_up() {
    let tokens = tempfile::tempdir().unwrap();
    let cfg = config("", &token_file(tokens.path()));
    let mut d = Daemon::start_config(&cfg);
    let token = d.admin_token();
    assert_eq!(
        post(&d, &token, "/api/v1/tunnels/cloudflared/start", &json!({})).status,
        200
    );
    assert_eq!(
        post(&d, &token, "/api/v1/tunnels/ngrok/start", &json!({})).status,
        200
    );
    wait_for(&d, &token, "cloudflared", "up", |t| t["state"] == "up");
    wait_for(&d, &token, "ngrok", "up", |t| t["state"] == "up");
    assert_eq!(
        post(&d, &token, "/api/v1/tunnels/ngrok/stop", &json!({})).status,
        200
    );
    let addr = target(&d, &token);
    assert_eq!(clients_of(addr).len(), 1);
    d.stop();
    assert!(clients_of(addr).is_empty(), "a client outlived the daemon");

    let dir = std::mem::replace(&mut d.dir, tempfile::tempdir().unwrap());
    // The next daemon gets its sockets afresh, as from systemd.
    std::fs::remove_file(dir.path().join("http.sock")).unwrap();
    let d = Daemon::start_with(Options {
        config: cfg,
        dir: Some(dir),
        ..Options::default()
    });
    let up = wait_for(&d, &token, "cloudflared", "up", |t| t["state"] == "up");
    assert_eq!(up["desired"], "up");
    let ngrok = tunnel(&d, &token, "ngrok");
    assert_eq!(ngrok["desired"], "down");
    assert_eq!(ngrok["state"], "stopped");
    assert!(
        d.logs()
            .contains("starting a tunnel that was up before the restart")
    );
}

#[test]
fn a_wanted_tunnel_keeps_an_idle_daemon_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start_config(&config(
        "[server]\nidle-exit-after = \"1s\"\n",
        &token_file(dir.path()),
    ));
    let token = d.admin_token();
    assert_eq!(
        post(&d, &token, "/api/v1/tunnels/cloudflared/start", &json!({})).status,
        200
    );
    wait_for(&d, &token, "cloudflared", "up", |t| t["state"] == "up");
    // Three idle seconds: past idle-exit-after, and the daemon is still there.
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        d.child.try_wait().unwrap().is_none(),
        "exited while a tunnel was wanted"
    );
    assert_eq!(
        post(&d, &token, "/api/v1/tunnels/cloudflared/stop", &json!({})).status,
        200
    );
    // Positive control: with no tunnel wanted, it exits when idle.
    let status = d.wait_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(0));
    assert!(
        d.logs()
            .contains("no connection for server.idle-exit-after")
    );
}
