//! Access control against the real daemon: the first admin token, the audit trail and its log
//! fields, client addresses behind proxies, rate limits, slow clients, and the token CLI.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use crate::harness::{Daemon, Options, run_cli};
use crate::http::{self, Target};

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

fn audit(d: &Daemon, token: &str, query: &str) -> Vec<serde_json::Value> {
    let r = http::request(
        &d.tcp,
        "GET",
        &format!("/api/v1/audit?{query}"),
        &[("Authorization", &bearer(token))],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["items"].as_array().unwrap().clone()
}

#[test]
fn first_start_writes_a_private_admin_token_and_logs_only_where() {
    let mut d = Daemon::start();
    let path = d.state_dir().join("initial-admin-token");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let token = d.admin_token();
    assert!(token.starts_with("lhd_"));
    assert!(
        !d.logs().contains(&token),
        "the token itself reached the log"
    );
    assert!(d.logs().contains("initial-admin-token"));
    let r = http::request(
        &d.tcp,
        "GET",
        "/api/v1/tokens",
        &[("Authorization", &bearer(&token))],
        b"",
    );
    assert_eq!(r.status, 200);
    d.stop();
}

#[test]
fn writes_and_failed_logins_are_audited_in_the_table_and_the_log() {
    let mut d = Daemon::start();
    let token = d.admin_token();
    let body = br#"{"name":"deploy","scopes":["read","write"]}"#;
    let r = http::request(
        &d.tcp,
        "POST",
        "/api/v1/tokens",
        &[
            ("Authorization", &bearer(&token)),
            ("Content-Type", "application/json"),
            ("X-Request-Id", "audit-write-1"),
        ],
        body,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let r = http::request(
        &d.tcp,
        "POST",
        "/api/v1/session",
        &[("Content-Type", "application/json"), ("X-Request-Id", "audit-login-1")],
        br#"{"token":"lhd_0123456789abcdef_0000000000000000000000000000000000000000000000000000000000000000"}"#,
    );
    assert_eq!(r.status, 401);

    let rows = audit(&d, &token, "limit=50");
    let write = rows
        .iter()
        .find(|r| r["request_id"] == "audit-write-1")
        .expect("no audit row for the write");
    assert_eq!(write["actor"], "initial-admin");
    assert_eq!(write["action"], "token.create");
    assert_eq!(write["target"], "deploy");
    assert_eq!(write["result"], "ok");
    assert_eq!(write["client"], "127.0.0.1");
    let failed = rows
        .iter()
        .find(|r| r["request_id"] == "audit-login-1")
        .expect("no audit row for the failed login");
    assert_eq!(failed["action"], "auth.failed");
    assert_eq!(failed["actor"], "anonymous");
    assert_eq!(failed["result"], "unknown");
    let only = audit(&d, &token, "action=auth.failed");
    assert!(only.iter().all(|r| r["action"] == "auth.failed") && !only.is_empty());

    d.stop();
    // The same events in the log with their fields (journald gets them as AUDIT=1, ACTOR=…).
    let events = d.log_events();
    for (rid, action) in [
        ("audit-write-1", "token.create"),
        ("audit-login-1", "auth.failed"),
    ] {
        let ev = events
            .iter()
            .find(|e| e["message"] == "audit" && e["request_id"] == rid)
            .unwrap_or_else(|| panic!("no audit log event for {rid}:\n{}", d.logs()));
        assert_eq!(ev["audit"], 1);
        assert_eq!(ev["action"], action);
        assert!(ev["actor"].is_string() && ev["client"].is_string() && ev["result"].is_string());
        assert!(ev["audit_target"].is_string(), "audit_target missing: {ev}");
    }
}

#[test]
fn forwarded_for_is_believed_only_from_a_trusted_proxy() {
    let mut d = Daemon::start();
    let token = d.admin_token();
    let login = |target: &Target, rid: &str| {
        let r = http::request(
            target,
            "POST",
            "/api/v1/session",
            &[
                ("Content-Type", "application/json"),
                ("X-Forwarded-For", "203.0.113.77"),
                ("X-Request-Id", rid),
            ],
            br#"{"token":"nope"}"#,
        );
        assert_eq!(r.status, 401);
    };
    login(&d.tcp, "xff-untrusted"); // a TCP peer: not a trusted proxy by default
    login(&d.unix, "xff-trusted"); // a Unix peer (nginx): trusted by default
    let rows = audit(&d, &token, "action=auth.failed");
    let client =
        |rid: &str| rows.iter().find(|r| r["request_id"] == rid).unwrap()["client"].clone();
    assert_eq!(client("xff-untrusted"), "127.0.0.1");
    assert_eq!(client("xff-trusted"), "203.0.113.77");
    d.stop();
}

#[test]
fn rate_limit_answers_429_then_recovers() {
    let mut d = Daemon::start_config("[rate-limit]\nread-per-second = 2\nread-burst = 3\n");
    let token = d.admin_token();
    let get = || {
        http::request(
            &d.tcp,
            "GET",
            "/api/v1/session",
            &[("Authorization", &bearer(&token))],
            b"",
        )
    };
    for i in 0..3 {
        let r = get();
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        assert_eq!(r.header("ratelimit-limit"), Some("3"));
    }
    let r = get();
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "rate_limited");
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    assert_eq!(r.header("ratelimit-remaining"), Some("0"));
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(get().status, 200, "did not recover");
    // Health probes are never limited.
    for _ in 0..10 {
        assert_eq!(http::get(&d.tcp, "/health").status, 200);
    }
    d.stop();
}

#[test]
fn failed_logins_are_limited_far_sooner() {
    let mut d =
        Daemon::start_config("[rate-limit]\nfailed-auth-per-minute = 1\nfailed-auth-burst = 3\n");
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let r = http::request(
            &d.tcp,
            "GET",
            "/api/v1/tokens",
            &[("Authorization", "Bearer wrong")],
            b"",
        );
        statuses.push(r.status);
    }
    assert_eq!(statuses, [401, 401, 401, 429, 429]);
    d.stop();
}

/// A client that sends one header byte per second is cut off at server.header-timeout while
/// other clients are served normally.
#[test]
fn slowloris_is_cut_off_at_the_header_timeout_while_others_are_served() {
    let mut d = Daemon::start_config("[server]\nheader-timeout = \"2s\"\n");
    let Target::Tcp(addr) = d.tcp.clone() else {
        unreachable!()
    };
    let slow = std::thread::spawn(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let start = Instant::now();
        let head = b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
        for b in head.iter() {
            if s.write_all(&[*b]).is_err() {
                return (start.elapsed(), true);
            }
            let mut buf = [0u8; 512];
            // Closed (0 bytes) or an error page: the server gave up on us.
            match std::io::Read::read(&mut s, &mut buf) {
                Ok(0) => return (start.elapsed(), true),
                Ok(n) if String::from_utf8_lossy(&buf[..n]).contains("408") => {
                    return (start.elapsed(), true);
                }
                _ => {}
            }
            std::thread::sleep(Duration::from_millis(950));
        }
        (start.elapsed(), false)
    });
    // Meanwhile others are served.
    let mut served = 0;
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(1500) {
        assert_eq!(http::get(&d.tcp, "/health").status, 200);
        served += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    let (took, cut) = slow.join().unwrap();
    assert!(
        cut,
        "the slow client sent its whole request over {took:?} and was never cut off"
    );
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(6),
        "cut off after {took:?}"
    );
    assert!(served >= 5);
    d.stop();
}

#[test]
fn token_cli_works_through_the_admin_socket_and_offline() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("own.sock");
    let mut d = Daemon::start_with(Options {
        config: format!(
            "[server]\nlisten = [\"unix:{}\"]\nadmin-socket = \"/nonexistent/admin.sock\"\n",
            sock.display()
        ),
        activated: false,
        dir: Some(dir),
        ..Options::default()
    });
    let cfg = d.config_path.to_str().unwrap().to_owned();
    let admin_sock = d.state_dir().join("admin.sock");
    let mode = std::fs::metadata(&admin_sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "admin socket must be private");

    let (code, out, err) = run_cli(
        &[
            "token",
            "create",
            "--config",
            &cfg,
            "--name",
            "ci",
            "--scope",
            "read,write",
            "--expires",
            "30d",
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let token = out.trim().to_owned();
    assert!(token.starts_with("lhd_"), "{out}");
    assert!(err.contains("only time it is shown"));
    // The daemon made it: it works right away over HTTP, with exactly its scopes.
    let r = http::request(
        &Target::Unix(sock.clone()),
        "GET",
        "/api/v1/session",
        &[("Authorization", &bearer(&token))],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["actor"]["scopes"],
        serde_json::json!(["read", "write"])
    );
    let (code, out, _) = run_cli(&["token", "list", "--config", &cfg], &[]);
    assert_eq!(code, 0);
    assert!(
        out.contains("ci") && out.contains("read,write") && !out.contains(&token),
        "{out}"
    );
    let (code, _, err) = run_cli(
        &[
            "token", "create", "--config", &cfg, "--name", "ci", "--scope", "read",
        ],
        &[],
    );
    assert_ne!(code, 0);
    assert!(err.contains("already exists"), "{err}");
    let (code, _, err) = run_cli(
        &[
            "token", "create", "--config", &cfg, "--name", "x", "--scope", "root",
        ],
        &[],
    );
    assert_ne!(code, 0);
    assert!(err.contains("unknown scope"), "{err}");

    d.stop();
    // Offline: no daemon, the CLI takes the lock and edits the database itself.
    let (code, out, err) = run_cli(&["token", "revoke", "--config", &cfg, "ci"], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("revoked token ci"), "{out}");
    let (code, out, _) = run_cli(&["token", "list", "--config", &cfg], &[]);
    assert_eq!(code, 0);
    let line = out.lines().find(|l| l.contains(" ci ")).unwrap();
    assert!(line.contains("20"), "revocation time missing: {line}");
    let c = rusqlite::Connection::open(d.state_dir().join("localhostd.db")).unwrap();
    let actor: String = c
        .query_row(
            "SELECT actor FROM audit WHERE action = 'token.revoke' ORDER BY id DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(actor.contains("offline"), "{actor}");

    // Never creates a state directory.
    let empty = tempfile::tempdir().unwrap();
    let cfg2 = empty.path().join("c.toml");
    let missing = empty.path().join("no-state");
    std::fs::write(
        &cfg2,
        format!(
            "state-dir = {:?}\n[server]\nadmin-socket = \"/nonexistent/a.sock\"\n",
            missing.display().to_string()
        ),
    )
    .unwrap();
    let (code, _, err) = run_cli(&["token", "list", "--config", cfg2.to_str().unwrap()], &[]);
    assert_ne!(code, 0);
    assert!(err.contains("start the service first"), "{err}");
    assert!(!missing.exists());
}

/// The review's spoof: through the Unix socket nginx uses, a client that sends its own
/// `X-Forwarded-For` and `Forwarded: for=127.0.0.1` (or any loopback claim) does not get the
/// loopback privilege of `/metrics`; a real loopback peer does.
#[test]
fn loopback_claims_through_the_proxy_socket_do_not_open_metrics() {
    let mut d = Daemon::start_config("[metrics]\npublic-on-loopback = true\n");
    // Positive control: a loopback TCP peer that forwards nothing reads /metrics.
    let r = http::get(&d.tcp, "/metrics");
    assert_eq!(r.status, 200, "{}", r.text());
    let spoofs: [&[(&str, &str)]; 5] = [
        &[
            ("X-Forwarded-For", "203.0.113.5"),
            ("Forwarded", "for=127.0.0.1"),
        ],
        &[("Forwarded", "for=127.0.0.1")],
        &[("X-Forwarded-For", "127.0.0.1")],
        &[("X-Real-IP", "127.0.0.1")],
        &[("X-Real-IP", "::1"), ("X-Forwarded-For", "127.0.0.1")],
    ];
    for headers in spoofs {
        let r = http::request(&d.unix, "GET", "/metrics", headers, b"");
        assert_eq!(r.status, 401, "{headers:?} opened /metrics: {}", r.text());
    }
    // From an untrusted peer no forwarded header counts either way: still its own address.
    let r = http::request(
        &d.tcp,
        "GET",
        "/metrics",
        &[
            ("X-Real-IP", "203.0.113.5"),
            ("X-Forwarded-For", "203.0.113.5"),
        ],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    d.stop();
}

/// Behind the proxy the client is the address nginx saw: `X-Real-IP`, else the last
/// `X-Forwarded-For` hop (the one nginx appended). What the client wrote to the left of it,
/// and any `Forwarded` header, are not believed.
#[test]
fn client_address_behind_the_proxy_is_the_one_nginx_saw() {
    let mut d = Daemon::start();
    let token = d.admin_token();
    let login = |target: &Target, rid: &str, headers: &[(&str, &str)]| {
        let mut h = vec![("Content-Type", "application/json"), ("X-Request-Id", rid)];
        h.extend_from_slice(headers);
        let r = http::request(
            target,
            "POST",
            "/api/v1/session",
            &h,
            br#"{"token":"nope"}"#,
        );
        assert_eq!(r.status, 401, "{}", r.text());
    };
    login(
        &d.unix,
        "real-ip",
        &[
            ("X-Real-IP", "198.51.100.7"),
            ("X-Forwarded-For", "127.0.0.1, 198.51.100.7"),
            ("Forwarded", "for=192.0.2.1"),
        ],
    );
    login(
        &d.unix,
        "last-hop",
        &[
            ("X-Forwarded-For", "192.0.2.66, 203.0.113.9"),
            ("Forwarded", "for=192.0.2.1"),
        ],
    );
    login(&d.unix, "forwarded-only", &[("Forwarded", "for=192.0.2.1")]);
    login(
        &d.tcp,
        "untrusted",
        &[
            ("X-Real-IP", "198.51.100.7"),
            ("X-Forwarded-For", "198.51.100.7"),
        ],
    );
    let rows = audit(&d, &token, "action=auth.failed");
    let client = |rid: &str| {
        rows.iter()
            .find(|r| r["request_id"] == rid)
            .unwrap_or_else(|| panic!("no row for {rid}: {rows:?}"))["client"]
            .clone()
    };
    assert_eq!(client("real-ip"), "198.51.100.7");
    assert_eq!(client("last-hop"), "203.0.113.9");
    assert_eq!(client("forwarded-only"), "unix");
    assert_eq!(client("untrusted"), "127.0.0.1");
    d.stop();
}

/// The review's flood, ten thousand times: requests with a bad token from one address leave
/// the failed-auth burst's audit rows and, for the rest, at most one summary row per limiter
/// window (which counts them all), and no journal line per refused request.
#[test]
fn a_bad_token_flood_leaves_the_burst_rows_and_one_summary_per_window() {
    const FLOOD: usize = 10_000;
    const BURST: usize = 10;
    // One failure a minute after the burst: the flood ends long before a second is allowed.
    let mut d = Daemon::start_config(&format!(
        "[rate-limit]\nfailed-auth-per-minute = 1\nfailed-auth-burst = {BURST}\n"
    ));
    let token = d.admin_token();
    let started = Instant::now();
    let statuses: Vec<Vec<u16>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..8)
            .map(|_| {
                let target = d.tcp.clone();
                s.spawn(move || {
                    (0..FLOOD / 8)
                        .map(|_| {
                            http::request(
                                &target,
                                "GET",
                                "/api/v1/tokens",
                                &[("Authorization", "Bearer lhd_x")],
                                b"",
                            )
                            .status
                        })
                        .collect()
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let windows = started.elapsed().as_secs() / 60 + 1;
    let all: Vec<u16> = statuses.into_iter().flatten().collect();
    let refused = all.iter().filter(|s| **s == 401).count();
    let limited = all.iter().filter(|s| **s == 429).count();
    assert_eq!((refused, limited), (BURST, FLOOD - BURST));
    let metrics = http::request(
        &d.tcp,
        "GET",
        "/metrics",
        &[("Authorization", &bearer(&token))],
        b"",
    )
    .text();
    // Summaries are written when their window ends, and at the latest when the daemon stops.
    d.stop();
    let db = rusqlite::Connection::open(d.state_dir().join("localhostd.db")).unwrap();
    let rows: Vec<(String, String, String)> = db
        .prepare("SELECT action, result, detail FROM audit WHERE action = 'auth.failed'")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    let (summaries, single): (Vec<_>, Vec<_>) = rows
        .iter()
        .partition(|(_, result, _)| result == "rate_limited");
    assert_eq!(single.len(), BURST, "one row per failure within the burst");
    assert!(
        !summaries.is_empty() && summaries.len() as u64 <= windows,
        "{} summary rows for {windows} window(s)",
        summaries.len()
    );
    // Every refused request is accounted for: the summaries' counts add up to the rest.
    let counted: usize = summaries
        .iter()
        .map(|(_, _, detail)| {
            detail
                .split_whitespace()
                .next()
                .and_then(|n| n.parse::<usize>().ok())
                .unwrap_or_else(|| panic!("summary detail without a count: {detail}"))
        })
        .sum();
    assert_eq!(counted, FLOOD - BURST);
    // The metric counts every refused credential, recorded one by one or summarized.
    for (how, n) in [("event", BURST), ("summarized", FLOOD - BURST)] {
        let line = format!("localhostd_auth_failures_total{{audit=\"{how}\"}} {n}");
        assert!(
            metrics.lines().any(|l| l == line),
            "no {line:?} in:\n{}",
            metrics
                .lines()
                .filter(|l| l.contains("auth_failures"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    // The journal: no line per refused request either (neither audit nor request line).
    let events = d.log_events();
    let audit_lines = events
        .iter()
        .filter(|e| e["message"] == "audit" && e["action"] == "auth.failed")
        .count();
    assert_eq!(audit_lines, single.len() + summaries.len());
    let request_lines = events.iter().filter(|e| e["message"] == "request").count();
    assert!(
        request_lines < 2 * BURST,
        "{request_lines} request log lines for a flood of {FLOOD}"
    );
}

/// Over HTTPS (behind the proxy) the session cookie is `__Host-lhd_session` (Secure, Path=/,
/// no Domain), so a sibling subdomain cannot plant one, and only that name is accepted there;
/// over plain HTTP it is `lhd_session`, as browsers refuse `__Host-` cookies without TLS.
#[test]
fn session_cookie_is_host_prefixed_over_https_and_plain_over_http() {
    let mut d = Daemon::start();
    let token = d.admin_token();
    let body = format!(r#"{{"token":"{token}"}}"#);
    let https = [
        ("X-Forwarded-Proto", "https"),
        ("X-Real-IP", "198.51.100.7"),
    ];
    let login = |target: &Target, extra: &[(&str, &str)]| {
        let mut h = vec![("Content-Type", "application/json")];
        h.extend_from_slice(extra);
        let r = http::request(target, "POST", "/api/v1/session", &h, body.as_bytes());
        assert_eq!(r.status, 201, "{}", r.text());
        let csrf = r.json()["csrf_token"].as_str().unwrap().to_owned();
        (r.header("set-cookie").unwrap().to_owned(), csrf)
    };
    let me = |target: &Target, cookie: &str, extra: &[(&str, &str)]| {
        let mut h = vec![("Cookie", cookie)];
        h.extend_from_slice(extra);
        http::request(target, "GET", "/api/v1/session", &h, b"").status
    };

    let (set, csrf) = login(&d.unix, &https);
    let (pair, attrs) = set.split_once(';').unwrap();
    let value = pair
        .strip_prefix("__Host-lhd_session=")
        .unwrap_or_else(|| panic!("{set}"));
    assert!(
        attrs.contains("Secure") && attrs.contains("Path=/"),
        "{set}"
    );
    assert!(!attrs.to_ascii_lowercase().contains("domain"), "{set}");
    assert_eq!(me(&d.unix, pair, &https), 200);
    // The same session under the unprefixed name, as a sibling subdomain could set it: refused
    // over HTTPS (it would be accepted over plain HTTP, where no prefix can be had).
    let planted = format!("lhd_session={value}");
    assert_eq!(me(&d.unix, &planted, &https), 401);
    assert_eq!(me(&d.unix, &planted, &[]), 200);

    let (set, _) = login(&d.tcp, &[]);
    assert!(set.starts_with("lhd_session="), "{set}");
    assert!(!set.contains("Secure"), "{set}");
    let pair = set.split(';').next().unwrap();
    assert_eq!(me(&d.tcp, pair, &[]), 200);

    // Logout over HTTPS clears the prefixed cookie, with the attributes its prefix needs.
    let https_pair = format!("__Host-lhd_session={value}");
    let mut h = vec![
        ("Cookie", https_pair.as_str()),
        ("Origin", "https://localhost"),
        ("X-CSRF-Token", csrf.as_str()),
    ];
    h.extend_from_slice(&https);
    let r = http::request(&d.unix, "DELETE", "/api/v1/session", &h, b"");
    assert_eq!(r.status, 204, "{}", r.text());
    let cleared = r.header("set-cookie").unwrap();
    assert!(
        cleared.starts_with("__Host-lhd_session=;")
            && cleared.contains("Max-Age=0")
            && cleared.contains("Secure")
            && cleared.contains("Path=/"),
        "{cleared}"
    );
    assert_eq!(me(&d.unix, &https_pair, &https), 401);
    d.stop();
}
