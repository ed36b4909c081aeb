//! `POST /api/v1/exec` against the real daemon: arguments verbatim, input validation, the
//! queue, streaming, history, jobs dying with the daemon, a stress run, and fork safety.

use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{BIN, Daemon, Options, post_exec, post_exec_at, send_exec_stream};
use crate::http;
use crate::sandbox::start_daemon;

/// The daemon's job processes: anything below it but the sandbox zygote and the warm
/// sandboxes (`sandbox.warm-pool`): a helper whose init has no job yet. Returns (job
/// processes, warm sandboxes).
fn jobs_of(pid: i32) -> (Vec<String>, usize) {
    let mut jobs = Vec::new();
    let mut warm = 0;
    for c in children_of(pid) {
        let cmdline = std::fs::read(format!("/proc/{c}/cmdline")).unwrap_or_default();
        if !String::from_utf8_lossy(&cmdline).contains("sandbox-zygote") {
            jobs.push(c);
            continue;
        }
        for helper in children_of(c.parse().unwrap()) {
            // An exited helper the zygote has not reaped yet (it does every 200 ms).
            let stat = std::fs::read_to_string(format!("/proc/{helper}/stat")).unwrap_or_default();
            if stat
                .rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('Z'))
            {
                continue;
            }
            let inits = children_of(helper.parse().unwrap());
            let busy: Vec<String> = inits
                .iter()
                .flat_map(|i| children_of(i.parse().unwrap()))
                .collect();
            if inits.len() == 1 && busy.is_empty() {
                warm += 1;
            } else {
                jobs.push(helper);
                jobs.extend(inits);
                jobs.extend(busy);
            }
        }
    }
    (jobs, warm)
}

/// Waits until the warm pool is full (2 by default), so descriptor counts compare like with
/// like.
fn wait_warm(pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while jobs_of(pid).1 < 2 {
        assert!(
            Instant::now() < deadline,
            "the warm pool did not fill: {:?}",
            jobs_of(pid)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn children_of(pid: i32) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            if let Ok(c) = std::fs::read_to_string(t.path().join("children")) {
                out.extend(c.split_whitespace().map(str::to_owned));
            }
        }
    }
    out
}

/// The daemon's descriptors: (database files, everything else). Reader connections open the
/// WAL lazily, so database descriptors may grow up to the reader pool; nothing else may.
fn fds(pid: i32) -> (usize, usize) {
    let mut db = 0;
    let mut other = 0;
    for e in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
    {
        let target = std::fs::read_link(e.path())
            .map(|t| t.display().to_string())
            .unwrap_or_default();
        if target.contains("localhostd.db") {
            db += 1
        } else {
            other += 1
        }
    }
    (db, other)
}

#[test]
fn arguments_arrive_verbatim_and_output_is_encoded_honestly() {
    let (mut d, token) = start_daemon(None);
    let args = [
        "a b",
        "it's",
        "\"quoted\"",
        "x; rm -rf /",
        "$(id)",
        "`id`",
        "*",
        "",
        "ünïcode",
    ];
    let mut argv = vec![
        "python3".to_owned(),
        "-c".into(),
        "import sys, json; print(json.dumps(sys.argv[1:]))".into(),
    ];
    argv.extend(args.iter().map(|s| s.to_string()));
    let r = post_exec(&d, &token, &json!({"argv": argv}));
    assert_eq!(r.status, 200, "{}", r.text());
    let j = r.json();
    assert_eq!(j["status"], "ok");
    let got: Vec<String> = serde_json::from_str(j["stdout"].as_str().unwrap().trim()).unwrap();
    assert_eq!(got, args);

    let r = post_exec(
        &d,
        &token,
        &json!({"command": "cat; printf '\\377\\376' >&2", "stdin": "from stdin\n"}),
    )
    .json();
    assert_eq!(r["stdout"], "from stdin\n");
    assert_eq!(r["stderr_encoding"], "base64");
    assert_eq!(r["stderr"], "//4=");

    let r = post_exec(&d, &token, &json!({"command": "exit 7"})).json();
    assert_eq!(
        (r["status"].as_str(), r["exit_code"].as_i64()),
        (Some("nonzero_exit"), Some(7))
    );
    let r = post_exec(&d, &token, &json!({"command": "kill -SEGV $$"})).json();
    assert_eq!(
        (r["status"].as_str(), r["signal"].as_str()),
        (Some("killed"), Some("SIGSEGV"))
    );
    let r = post_exec(&d, &token, &json!({"argv": ["no-such-program"]})).json();
    assert_eq!(r["exit_code"], 127, "{r}");
    assert!(
        r["stderr"].as_str().unwrap().contains("command not found"),
        "{r}"
    );
    d.stop();
}

#[test]
fn bad_requests_are_refused_and_run_nothing() {
    let (mut d, token) = start_daemon(None);
    let cases = [
        (json!({}), 400, "exactly one of argv"),
        (
            json!({"argv": ["true"], "command": "true"}),
            400,
            "exactly one of argv",
        ),
        (json!({"argv": []}), 400, "argv must name a program"),
        (
            json!({"command": "true", "profile": "nope"}),
            400,
            "unknown profile",
        ),
        (
            json!({"command": "true", "limits": {"memory_bytes": 1u64 << 40}}),
            422,
            "above the maximum",
        ),
        (
            json!({"command": "true", "timeout_ms": 86_400_000}),
            422,
            "exec.max-timeout",
        ),
        (
            json!({"command": "true", "env": {"BAD-NAME": "x"}}),
            400,
            "environment variable",
        ),
        (
            json!({"command": "true", "limits": {"cpu_ms": 0}}),
            400,
            "above zero",
        ),
        (
            json!({"command": "true", "surprise": 1}),
            400,
            "unknown field",
        ),
    ];
    for (body, status, needle) in cases {
        let r = post_exec(&d, &token, &body);
        assert_eq!(r.status, status, "{body}: {}", r.text());
        assert!(r.text().contains(needle), "{body}: {}", r.text());
    }
    let auth = format!("Bearer {token}");
    let list = http::request(
        &d.tcp,
        "GET",
        "/api/v1/executions",
        &[("Authorization", &auth)],
        b"",
    )
    .json();
    assert_eq!(
        list["items"].as_array().unwrap().len(),
        0,
        "a refused request ran: {list}"
    );
    d.stop();
}

/// The first address `ip` lists in scope global for `family` (`"inet"` or `"inet6"`), without
/// its prefix length.
fn ip_global_address(family: &str) -> Option<String> {
    let flag = if family == "inet6" { "-6" } else { "-4" };
    let out = Command::new("ip")
        .args([flag, "-o", "addr", "show", "scope", "global"])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .skip_while(|w| *w != family)
        .nth(1)
        .and_then(|cidr| Some(cidr.split('/').next()?.to_owned()))
}

/// A global IPv6 address of this host (unique-local counts: `ip` calls it global), if any.
fn host_address6() -> Option<String> {
    ip_global_address("inet6")
}

/// A global IPv4 address of this host (not loopback, not link-local), if it has one.
fn host_address() -> Option<std::net::Ipv4Addr> {
    ip_global_address("inet")?.parse().ok()
}

/// Why the `net` profile's tests cannot run here, if they cannot.
fn net_profile_skip_reasons() -> Vec<String> {
    [
        (!std::path::Path::new("/usr/bin/slirp4netns").exists())
            .then(|| "slirp4netns is not installed (apt-get install slirp4netns)".to_owned()),
        std::fs::metadata("/dev/net/tun")
            .ok()
            .filter(|m| {
                use std::os::unix::fs::PermissionsExt;
                m.permissions().mode() & 0o006 == 0o006
            })
            .is_none()
            .then(|| {
                "/dev/net/tun is not open to other users (Debian's udev sets 0666)".to_owned()
            }),
        host_address()
            .is_none()
            .then(|| "this host has no global IPv4 address to connect to".to_owned()),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// A python probe: connects to each (name, family, address, kind) in order and prints
/// `name E errno` or `name OK`. It stops at the first connect that is not refused, so that a
/// sandbox that lets one through never sends anything to the addresses after it (the first
/// target is always on this host). Each connect is bounded by a short timeout: a refusal is
/// immediate, a timeout is printed as `name E timeout`.
fn net_probe(targets: &[(&str, &str, String, &str)]) -> String {
    let list: Vec<String> = targets
        .iter()
        .map(|(name, fam, addr, kind)| format!("('{name}', socket.{fam}, {addr}, '{kind}')"))
        .collect();
    format!(
        "import socket\n\
         for name, fam, a, kind in [{}]:\n\
         \x20   s = socket.socket(fam, socket.SOCK_STREAM if kind == 'tcp' else socket.SOCK_DGRAM)\n\
         \x20   s.settimeout(2)\n\
         \x20   try:\n\
         \x20       s.connect(a)\n\
         \x20   except socket.timeout:\n\
         \x20       print(name, 'E timeout'); continue\n\
         \x20   except OSError as e:\n\
         \x20       print(name, 'E', e.errno); continue\n\
         \x20   print(name, 'OK'); break\n\
         print('dns', open('/etc/resolv.conf').read().strip())\n",
        list.join(", ")
    )
}

/// The `net` profile reaches the public internet only. From a `net` job, by default, the
/// host's own global address, private networks (RFC 1918, RFC 6598 with 100.100.100.200,
/// another cloud's metadata address), link-local (169.254.169.254), the host's loopback
/// through the gateway, and every IPv6 destination (the host's own ULA address, fc00::/7,
/// link-local) are refused inside the job's network namespace, over TCP and UDP, with the
/// refusal errno (a prohibit route: EACCES), not a timeout. Positive control: once the host's
/// address is on the profile's `net-allow` list, the same job reaches it. Runs against a root
/// daemon (per-job uids) and an unprivileged one. No packet is sent to an address that is
/// not on this host: the probe stops at the first connect that is not refused, and its first
/// target is the host's own address.
#[test]
fn net_profile_refuses_the_host_private_and_metadata_addresses_unless_allowed() {
    let reasons = net_profile_skip_reasons();
    if !reasons.is_empty() {
        eprintln!("SKIPPED: {}", reasons.join("; "));
        return;
    }
    let addr = host_address().unwrap();
    let public = std::net::TcpListener::bind((addr, 0)).unwrap();
    let public_port = public.local_addr().unwrap().port();
    let private = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let private_port = private.local_addr().unwrap().port();
    let v6 = std::net::TcpListener::bind("[::]:0").unwrap();
    let v6_port = v6.local_addr().unwrap().port();
    // The host's own IPv6 address when it has one (else a unique-local one: the job has no
    // IPv6 route at all, so nothing is sent either way).
    let host6 = host_address6().unwrap_or_else(|| "fd00::2".to_owned());
    let t = |s: &str| s.to_owned();
    let refused = net_probe(&[
        (
            "host-tcp",
            "AF_INET",
            format!("('{addr}', {public_port})"),
            "tcp",
        ),
        (
            "host-udp",
            "AF_INET",
            format!("('{addr}', {public_port})"),
            "udp",
        ),
        ("rfc1918-10", "AF_INET", t("('10.20.30.40', 80)"), "tcp"),
        ("rfc1918-172", "AF_INET", t("('172.16.5.5', 80)"), "tcp"),
        ("rfc1918-192", "AF_INET", t("('192.168.77.1', 53)"), "udp"),
        ("shared", "AF_INET", t("('100.64.0.1', 80)"), "tcp"),
        (
            "metadata-alibaba",
            "AF_INET",
            t("('100.100.100.200', 80)"),
            "tcp",
        ),
        (
            "metadata-alibaba-udp",
            "AF_INET",
            t("('100.100.100.200', 80)"),
            "udp",
        ),
        ("metadata", "AF_INET", t("('169.254.169.254', 80)"), "tcp"),
        (
            "gateway",
            "AF_INET",
            format!("('10.0.2.2', {private_port})"),
            "tcp",
        ),
        (
            "host6-tcp",
            "AF_INET6",
            format!("('{host6}', {v6_port})"),
            "tcp",
        ),
        (
            "host6-udp",
            "AF_INET6",
            format!("('{host6}', {v6_port})"),
            "udp",
        ),
        ("ula6", "AF_INET6", t("('fd12:3456::1', 80)"), "tcp"),
        (
            "linklocal6",
            "AF_INET6",
            t("('fe80::2', 80, 0, dict((n, i) for i, n in socket.if_nameindex()).get('tap0', 0))"),
            "tcp",
        ),
    ]);
    let eacces = libc::EACCES.to_string();
    for user in [None, Some(crate::sandbox::test_user())] {
        let (mut d, token) = start_daemon(user);
        let net = post_exec(
            &d,
            &token,
            &json!({"argv": ["python3", "-c", refused], "profile": "net"}),
        )
        .json();
        assert_eq!(net["status"], "ok", "daemon as {user:?}: {net}");
        let out = net["stdout"].as_str().unwrap();
        let line = |name: &str| {
            out.lines()
                .find(|l| l.split_whitespace().next() == Some(name))
                .unwrap_or_else(|| panic!("daemon as {user:?}: no line for {name}: {out}"))
                .to_owned()
        };
        for name in [
            "host-tcp",
            "host-udp",
            "rfc1918-10",
            "rfc1918-172",
            "rfc1918-192",
            "shared",
            "metadata-alibaba",
            "metadata-alibaba-udp",
            "metadata",
            "host6-tcp",
            "host6-udp",
            "ula6",
        ] {
            assert_eq!(
                line(name),
                format!("{name} E {eacces}"),
                "daemon as {user:?}: {name} must be refused with EACCES: {out}"
            );
        }
        // The host's loopback through slirp4netns's gateway: slirp refuses it
        // (`--disable-host-loopback`).
        let gw = line("gateway");
        assert!(
            gw == format!("gateway E {}", libc::ENETUNREACH)
                || gw == format!("gateway E {}", libc::ECONNREFUSED),
            "daemon as {user:?}: the host's loopback through the gateway: {out}"
        );
        // IPv6 link-local on the job's interface: the interface has no IPv6.
        let ll = line("linklocal6");
        assert!(
            [libc::ENETUNREACH, libc::EACCES, libc::EADDRNOTAVAIL]
                .iter()
                .any(|e| ll == format!("linklocal6 E {e}")),
            "daemon as {user:?}: IPv6 link-local: {out}"
        );
        assert!(out.contains("dns nameserver 10.0.2.3"), "{out}");
        // Control: without the profile the same connect to the host's address fails too,
        // for want of any route.
        let off = post_exec(&d, &token, &json!({"argv": ["python3", "-c", refused]})).json();
        let out = off["stdout"].as_str().unwrap();
        assert!(
            out.contains(&format!("host-tcp E {}", libc::ENETUNREACH)),
            "{off}"
        );
        d.stop();
    }
    // Positive control: the host's address on the allow-list is reached (root daemon and
    // unprivileged one), and what is not on it is still refused.
    let allowed = net_probe(&[
        (
            "host-tcp",
            "AF_INET",
            format!("('{addr}', {public_port})"),
            "tcp",
        ),
        ("rfc1918-10", "AF_INET", t("('10.20.30.40', 80)"), "tcp"),
    ]);
    for user in [None, Some(crate::sandbox::test_user())] {
        let mut d = Daemon::start_with(Options {
            config: format!(
                "[rate-limit]\nenabled = false\n\
                 [sandbox.profiles.default]\n\
                 [sandbox.profiles.net]\nnetwork = true\nnet-allow = [\"{addr}/32\"]\n"
            ),
            user,
            ..Options::default()
        });
        let token = d.admin_token();
        // The refusal first (so nothing private is probed if the allow-list leaked).
        let r = post_exec(
            &d,
            &token,
            &json!({"argv": ["python3", "-c", net_probe(&[("rfc1918-10", "AF_INET", t("('10.20.30.40', 80)"), "tcp")])], "profile": "net"}),
        )
        .json();
        assert_eq!(
            r["stdout"].as_str().unwrap_or("").lines().next(),
            Some(format!("rfc1918-10 E {eacces}").as_str()),
            "daemon as {user:?}, allow-list: {r}"
        );
        let r = post_exec(
            &d,
            &token,
            &json!({"argv": ["python3", "-c", allowed], "profile": "net"}),
        )
        .json();
        let out = r["stdout"].as_str().unwrap_or("");
        assert!(
            out.contains("host-tcp OK"),
            "daemon as {user:?}: the allowed host address must be reached: {r}"
        );
        d.stop();
    }
    drop((public, private, v6));
}

#[test]
fn executions_are_recorded_and_paginated() {
    let (mut d, token) = start_daemon(None);
    for i in 0..3 {
        post_exec(&d, &token, &json!({"command": format!("echo {i}")}));
    }
    let auth = format!("Bearer {token}");
    let page = http::request(
        &d.tcp,
        "GET",
        "/api/v1/executions?limit=2",
        &[("Authorization", &auth)],
        b"",
    )
    .json();
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["label"], "echo 2");
    assert_eq!(items[0]["status"], "ok");
    assert_eq!(items[0]["actor"], "initial-admin");
    assert_eq!(items[0]["stdout_bytes"], 2);
    let cursor = page["next_cursor"].as_str().unwrap();
    let page = http::request(
        &d.tcp,
        "GET",
        &format!("/api/v1/executions?limit=2&cursor={cursor}"),
        &[("Authorization", &auth)],
        b"",
    )
    .json();
    assert_eq!(page["items"][0]["label"], "echo 0");
    assert!(page["next_cursor"].is_null());
    d.stop();
}

#[test]
fn output_streams_as_server_sent_events() {
    let (mut d, token) = start_daemon(None);
    let body = json!({"command": "for i in 1 2 3; do echo out$i; echo err$i >&2; sleep 0.2; done"})
        .to_string();
    let start = Instant::now();
    let mut s = http::connect(&d.tcp);
    send_exec_stream(&mut *s, &token, &body);
    let mut raw = Vec::new();
    let mut first_event = None;
    let mut buf = [0u8; 4096];
    loop {
        let n = std::io::Read::read(&mut *s, &mut buf).unwrap();
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
        if first_event.is_none() && String::from_utf8_lossy(&raw).contains("event: stdout") {
            first_event = Some(start.elapsed());
        }
    }
    let total = start.elapsed();
    let r = http::parse(&raw);
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    let text = r.text();
    // The first event arrives long before the job ends: it streams.
    let first = first_event.unwrap();
    assert!(
        first + Duration::from_millis(300) < total,
        "first event at {first:?}, end at {total:?}"
    );
    let events: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(events.last(), Some(&"result"), "{text}");
    assert_eq!(
        events.iter().filter(|e| **e == "stdout").count(),
        3,
        "{text}"
    );
    assert_eq!(
        events.iter().filter(|e| **e == "stderr").count(),
        3,
        "{text}"
    );
    let outs: Vec<&str> = text.lines().filter(|l| l.contains("\"out")).collect();
    assert!(
        outs[0].contains("out1") && outs[2].contains("out3"),
        "out of order: {outs:?}"
    );
    d.stop();
}

#[test]
fn a_full_queue_answers_429() {
    let (mut d, token) = {
        let d = Daemon::start_with(Options {
            config: "[rate-limit]\nenabled = false\n[exec]\nmax-concurrent = 1\nmax-queue = 0\n"
                .into(),
            ..Options::default()
        });
        let t = d.admin_token();
        (d, t)
    };
    let (tcp, t2) = (d.tcp.clone(), token.clone());
    let long =
        std::thread::spawn(move || post_exec_at(&tcp, &t2, &json!({"argv": ["sleep", "2"]})));
    std::thread::sleep(Duration::from_millis(500));
    let r = post_exec(&d, &token, &json!({"argv": ["true"]}));
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "rate_limited");
    assert!(r.header("retry-after").is_some());
    assert_eq!(long.join().unwrap().json()["status"], "ok");
    assert_eq!(
        post_exec(&d, &token, &json!({"argv": ["true"]})).status,
        200,
        "slot not released"
    );
    d.stop();
}

#[test]
fn jobs_die_with_the_daemon_even_on_kill_9() {
    let (d, token) = start_daemon(None);
    let marker = 800_000 + (std::process::id() % 90_000);
    let (tcp, t2) = (d.tcp.clone(), token.clone());
    let cmd = format!("setsid sleep {marker} & sleep {}", marker + 1);
    std::thread::spawn(move || {
        let body = json!({"command": cmd, "timeout_ms": 600_000});
        let _ = std::panic::catch_unwind(|| post_exec_at(&tcp, &t2, &body));
    });
    let running = |m: u32| {
        let o = Command::new("pgrep")
            .args(["-f", &format!("^sleep {m}$")])
            .output()
            .unwrap();
        !String::from_utf8_lossy(&o.stdout).trim().is_empty()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(running(marker) && running(marker + 1)) {
        assert!(Instant::now() < deadline, "the job did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    d.signal(libc::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(5);
    while running(marker) || running(marker + 1) {
        assert!(
            Instant::now() < deadline,
            "job processes outlived the daemon"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(d);
}

/// 1,000 jobs, 16 at a time, while other requests are served: no hang, no leaked process,
/// no leaked descriptor in the daemon.
#[test]
fn stress_1000_jobs_16_at_a_time() {
    let (mut d, token) = start_daemon(None);
    let pid = d.pid();
    post_exec(&d, &token, &json!({"argv": ["true"]}));
    wait_warm(pid);
    let fds_before = fds(pid);
    let start = Instant::now();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (tcp, flag) = (d.tcp.clone(), done.clone());
    let prober = std::thread::spawn(move || {
        let mut served = 0;
        while !flag.load(std::sync::atomic::Ordering::SeqCst) {
            assert_eq!(http::get(&tcp, "/health").status, 200);
            served += 1;
            std::thread::sleep(Duration::from_millis(20));
        }
        served
    });
    let workers: Vec<_> = (0..16)
        .map(|w| {
            let (tcp, token) = (d.tcp.clone(), token.clone());
            std::thread::spawn(move || {
                let mut bad = Vec::new();
                for i in 0..(1000 / 16 + usize::from(w < 1000 % 16)) {
                    let body = json!({"argv": ["sh", "-c", "echo $1", "x", format!("{w}-{i}")]});
                    let r = post_exec_at(&tcp, &token, &body);
                    let j = r.json();
                    if r.status != 200 || j["status"] != "ok" || j["stdout"] != format!("{w}-{i}\n")
                    {
                        bad.push(j.to_string());
                    }
                }
                bad
            })
        })
        .collect();
    let mut failures = Vec::new();
    let mut total = 0;
    for w in workers {
        let bad = w.join().unwrap();
        failures.extend(bad);
    }
    for w in 0..16 {
        total += 1000 / 16 + usize::from(w < 1000 % 16);
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let served = prober.join().unwrap();
    assert_eq!(total, 1000);
    assert!(
        failures.is_empty(),
        "{} jobs failed, first: {}",
        failures.len(),
        failures[0]
    );
    assert!(served > 0);
    eprintln!(
        "1000 jobs in {:?}; {served} health probes served meanwhile",
        start.elapsed()
    );
    wait_warm(pid);
    let (jobs, warm) = jobs_of(pid);
    assert!(jobs.is_empty(), "leftover job processes: {jobs:?}");
    assert_eq!(warm, 2, "warm sandboxes beyond sandbox.warm-pool");
    let fds_after = fds(pid);
    assert!(
        fds_after.1 <= fds_before.1,
        "descriptors leaked (non-database): {fds_before:?} before, {fds_after:?} after"
    );
    // Each of the 4 readers and the writer hold at most the db, its WAL and its shm.
    assert!(fds_after.0 <= 3 * 5, "database descriptors: {fds_after:?}");
    d.stop();
}

/// Between fork and exec the daemon must not allocate (another thread may hold the
/// allocator's lock). This test binary's global allocator aborts any forked child that
/// allocates before exec; the control shows the trap fires.
#[test]
fn nothing_allocates_between_fork_and_exec() {
    use std::os::unix::process::CommandExt as _;
    let mut cmd = Command::new("/bin/true");
    // SAFETY: deliberately allocates in pre_exec, to show the trap catches it.
    unsafe {
        cmd.pre_exec(|| {
            let v = vec![7u8; 4096];
            std::hint::black_box(v);
            Ok(())
        });
    }
    let st = cmd.status().unwrap();
    assert_eq!(
        st.signal(),
        Some(libc::SIGABRT),
        "control: the trap did not fire ({st})"
    );

    let run_as = if nix::unistd::geteuid().is_root() {
        Some((65534, 65534))
    } else {
        None
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // The daemon forks once per zygote (jobs are forked by the zygote, a separate
        // single-threaded process): one sandbox, so one zygote, per 4 jobs makes this test
        // process fork 50 times while the other threads allocate.
        let sandboxes: Vec<_> = (0..50)
            .map(|_| localhostd::jobs::sandbox::Sandbox::start(BIN.into()).unwrap())
            .collect();
        // Other threads allocate hard the whole time.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let churn: Vec<_> = (0..3)
            .map(|_| {
                let stop = stop.clone();
                tokio::task::spawn_blocking(move || {
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let v: Vec<Vec<u8>> = (0..64).map(|i| vec![i as u8; 1024]).collect();
                        std::hint::black_box(v);
                    }
                })
            })
            .collect();
        let mut tasks = Vec::new();
        for i in 0..200 {
            let sandbox = sandboxes[i / 4].clone();
            tasks.push(tokio::spawn(async move {
                let cmd = format!("echo {i}");
                let policy = crate::harness::sandbox_policy(&["/bin/sh", "-c", &cmd], run_as);
                let mut running = sandbox.spawn(&policy, Vec::new()).await.unwrap();
                let mut out = String::new();
                tokio::io::AsyncReadExt::read_to_string(&mut running.stdout, &mut out)
                    .await
                    .unwrap();
                running.exit.wait().await;
                let by = tokio::time::Instant::now() + Duration::from_secs(30);
                let report = running.finish(false, by).await.unwrap();
                (i, out, report)
            }));
        }
        let mut bad = Vec::new();
        for t in tasks {
            let (i, out, report) = t.await.unwrap();
            if out != format!("{i}\n") || report.kind != "exit" || report.code != 0 {
                bad.push(format!("job {i}: out {out:?}, report {report:?}"));
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for c in churn {
            c.await.unwrap();
        }
        assert!(
            bad.is_empty(),
            "{} of 200 spawns failed, first: {}",
            bad.len(),
            bad[0]
        );
    });
}

/// Warm sandboxes (`sandbox.warm-pool`) are built ahead but serve one job each: consecutive
/// commands (more than the pool holds, so some come from the pool and some are built while
/// others wait) each find a fresh PID namespace (the job's shell is PID 2, right after its
/// init), an IPC namespace without the message queue the job before created (System V
/// shared memory is refused where rlimits limit a job's memory), and an empty scratch. (Namespace inode numbers cannot show this: the kernel reuses them once a
/// namespace is gone.)
#[test]
fn every_job_gets_namespaces_no_other_job_had() {
    let (mut d, token) = start_daemon(None);
    // The job's cwd is its scratch.
    let script = "echo $$; ipcs -q | grep -c '^0x'; ls -A . | wc -l; \
                  ipcmk -Q >/dev/null && touch mark && echo marked";
    for i in 0..8 {
        let r = post_exec(&d, &token, &json!({"command": script})).json();
        assert_eq!(r["status"], "ok", "{r}");
        let out = r["stdout"].as_str().unwrap();
        let lines: Vec<&str> = out.lines().map(str::trim).collect();
        assert_eq!(lines, ["2", "0", "0", "marked"], "job {i}: {r}");
    }
    d.stop();
}

/// A profile whose tmpfs sizes differ from the default profile's still runs from a warm
/// sandbox (built with the default's sizes): its scratch, /tmp and /dev/shm are resized to
/// the profile's before the job starts, and the default profile keeps its own.
#[test]
fn warm_sandboxes_take_the_jobs_tmpfs_sizes() {
    let d = Daemon::start_with(Options {
        config: "[rate-limit]\nenabled = false\n[sandbox.profiles.default]\n[sandbox.profiles.small]\ntmpfs-size = \"2MiB\"\ntmpfs-inodes = 100\n"
            .into(),
        ..Options::default()
    });
    let token = d.admin_token();
    let df = "for m in /work /tmp /dev/shm; do stat -f -c '%b %S %c' $m; done";
    let sizes = |profile: &str| -> Vec<(u64, u64)> {
        let r = post_exec(&d, &token, &json!({"command": df, "profile": profile})).json();
        assert_eq!(r["status"], "ok", "{r}");
        r["stdout"]
            .as_str()
            .unwrap()
            .lines()
            .map(|l| {
                let f: Vec<u64> = l.split_whitespace().map(|x| x.parse().unwrap()).collect();
                (f[0] * f[1], f[2])
            })
            .collect()
    };
    // Without a memory cgroup the three tmpfs mounts share at most half of the profile's
    // memory (1 GiB): a sixth each, whole pages.
    let health = http::get(&d.tcp, "/api/v1/health").json();
    let by_rlimit = health["components"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["name"] == "job_cgroups" && c["memory_limited_by"] == "rlimit");
    let default_size = if by_rlimit {
        (1u64 << 30) / 6 / 4096 * 4096
    } else {
        256 << 20
    };
    for _ in 0..3 {
        assert_eq!(sizes("small"), vec![(2 << 20, 100); 3]);
        assert_eq!(sizes("default"), vec![(default_size, 65536); 3]);
    }
}
