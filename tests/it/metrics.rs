//! Monitoring against the real binary: /metrics passes `promtool check metrics` (only the
//! camelCase lint on node_exporter's meminfo names) and has the required series, values match
//! /proc, a hung collector times out without holding up scrapes, HTTP metrics use route
//! templates, an alert fires, holds and resolves with log lines, history survives a restart.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant, SystemTime};

use serde_json::json;

use crate::harness::{Daemon, Options, post_exec};
use crate::http::{self, Target};

/// Samples often so tests need not wait; rate limits off for the request storms.
const FAST: &str = "[metrics]\ninterval = \"200ms\"\n[rate-limit]\nenabled = false\n";

fn scrape(d: &Daemon) -> String {
    let t = format!("Bearer {}", d.admin_token());
    let r = http::request(&d.tcp, "GET", "/metrics", &[("Authorization", &t)], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    r.text()
}

fn get_json(d: &Daemon, path: &str) -> serde_json::Value {
    let t = format!("Bearer {}", d.admin_token());
    let r = http::request(&d.tcp, "GET", path, &[("Authorization", &t)], b"");
    assert_eq!(r.status, 200, "{path}: {}", r.text());
    r.json()
}

/// The value of the first sample line of `series` whose labels contain every `labels` pair.
fn value(text: &str, series: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            let name = l.split(['{', ' ']).next().unwrap_or("");
            name == series && labels.iter().all(|p| l.contains(p))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Scrapes until `series` appears (the sampler's first round), at most 20 s.
fn wait_for_series(d: &Daemon, series: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = scrape(d);
        if value(&text, series, &[]).is_some() {
            return text;
        }
        assert!(Instant::now() < deadline, "no {series} after 20 s:\n{text}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn promtool() -> Option<std::path::PathBuf> {
    ["/usr/bin/promtool", "/usr/local/bin/promtool"]
        .iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.exists())
}

/// node_exporter's meminfo names keep /proc/meminfo's capitals so dashboards work; promtool's
/// lint calls them camelCase. These (and only these) lint lines are expected.
const CAMEL_CASE_OK: &[&str] = &[
    "node_memory_MemTotal_bytes",
    "node_memory_MemFree_bytes",
    "node_memory_MemAvailable_bytes",
    "node_memory_SwapCached_bytes",
    "node_memory_SwapTotal_bytes",
    "node_memory_SwapFree_bytes",
    "node_memory_AnonPages_bytes",
    "node_memory_PageTables_bytes",
    "node_memory_SReclaimable_bytes",
    "node_memory_SUnreclaim_bytes",
    "node_memory_Committed_AS_bytes",
];

const REQUIRED: &[&str] = &[
    "node_cpu_seconds_total",
    "node_load1",
    "node_memory_MemTotal_bytes",
    "node_memory_MemAvailable_bytes",
    "node_filesystem_avail_bytes",
    "node_network_receive_bytes_total",
    "process_resident_memory_bytes",
    "process_open_fds",
    "localhostd_http_requests_total",
    "localhostd_http_request_duration_seconds_bucket",
    "localhostd_http_request_duration_seconds_count",
    "localhostd_build_info",
];

#[test]
fn metrics_pass_promtool_and_have_the_required_series() {
    let mut d = Daemon::start_config(FAST);
    // Anonymous callers need the metrics scope unless metrics.public-on-loopback is set.
    let anon = http::get(&d.tcp, "/metrics");
    assert_eq!(anon.status, 401, "{}", anon.text());
    let _ = http::get(&d.tcp, "/health");
    let text = wait_for_series(&d, "node_filesystem_avail_bytes");
    for name in REQUIRED {
        assert!(
            value(&text, name, &[]).is_some(),
            "series {name} missing:\n{text}"
        );
    }
    assert_eq!(
        value(
            &text,
            "localhostd_build_info",
            &[&format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );
    for line in text
        .lines()
        .filter(|l| l.starts_with("node_filesystem_avail_bytes"))
    {
        for label in ["device=\"", "fstype=\"", "mountpoint=\""] {
            assert!(line.contains(label), "{line} lacks {label}");
        }
    }
    let Some(promtool) = promtool() else {
        println!(
            "SKIPPED: promtool check metrics: promtool is not installed (Debian package `prometheus`; .ci/run installs it)"
        );
        d.stop();
        return;
    };
    let mut child = std::process::Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut camel = 0;
    for line in report.lines().filter(|l| !l.trim().is_empty()) {
        let name = line.split(' ').next().unwrap_or("");
        assert!(
            line.ends_with("metric names should be written in 'snake_case' not 'camelCase'")
                && CAMEL_CASE_OK.contains(&name),
            "promtool reported more than the expected camelCase lint: {line}\nfull report:\n{report}"
        );
        camel += 1;
    }
    // Exit 0 (nothing) or 3 (lint only); 1 would be a parse error.
    assert!(
        out.status.success() || (out.status.code() == Some(3) && camel > 0),
        "promtool exit {:?}:\n{report}",
        out.status
    );
    println!("promtool check metrics: {camel} expected camelCase lint lines, nothing else");
    d.stop();
}

fn proc_meminfo_total() -> f64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap();
    let line = text.lines().find(|l| l.starts_with("MemTotal:")).unwrap();
    let kb: f64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024.0
}

fn proc_stat_field(prefix: &str, index: usize) -> f64 {
    let text = std::fs::read_to_string("/proc/stat").unwrap();
    let line = text.lines().find(|l| l.starts_with(prefix)).unwrap();
    line.split_whitespace().nth(index).unwrap().parse().unwrap()
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) as f64 }
}

fn series_lines<'a>(text: &'a str, name: &str) -> Vec<(&'a str, f64)> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter_map(|l| {
            let (labels, v) = l.rsplit_once(' ')?;
            Some((labels, v.parse().ok()?))
        })
        .collect()
}

#[test]
fn values_match_proc_and_loopback_may_scrape_when_configured() {
    let mut d =
        Daemon::start_config("[metrics]\ninterval = \"200ms\"\npublic-on-loopback = true\n");
    // A loopback client without a token may scrape when metrics.public-on-loopback is set.
    let deadline = Instant::now() + Duration::from_secs(20);
    let first = loop {
        let r = http::get(&d.tcp, "/metrics");
        assert_eq!(r.status, 200, "{}", r.text());
        let text = r.text();
        if value(&text, "node_cpu_seconds_total", &[]).is_some() {
            break text;
        }
        assert!(Instant::now() < deadline, "no sample after 20 s");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        value(&first, "node_memory_MemTotal_bytes", &[]),
        Some(proc_meminfo_total()),
        "MemTotal must match /proc/meminfo exactly"
    );
    assert_eq!(
        value(&first, "node_boot_time_seconds", &[]),
        Some(proc_stat_field("btime ", 1))
    );
    // The sample is older than this read of /proc/stat: its counter cannot be ahead.
    let user_now = proc_stat_field("cpu0 ", 1) / clock_ticks();
    let sampled = value(
        &first,
        "node_cpu_seconds_total",
        &["cpu=\"0\"", "mode=\"user\""],
    )
    .unwrap();
    assert!(
        sampled <= user_now + 1e-9 && sampled > 0.0,
        "cpu0 user {sampled} vs /proc/stat {user_now}"
    );
    // The daemon's own process, read at scrape time.
    let pid = d.pid();
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count() as f64;
    let open = value(&first, "process_open_fds", &[]).unwrap();
    // Collector threads and connections come and go between the two reads.
    assert!(
        (open - fds).abs() <= 16.0,
        "process_open_fds {open}, /proc says {fds}"
    );
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss_kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .parse()
        .unwrap();
    let rss = value(&first, "process_resident_memory_bytes", &[]).unwrap();
    assert!(
        rss > rss_kb * 1024.0 * 0.5 && rss < rss_kb * 1024.0 * 2.0,
        "process_resident_memory_bytes {rss}, VmRSS {rss_kb} kB"
    );
    let start = value(&first, "process_start_time_seconds", &[]).unwrap();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        (now - start).abs() < 120.0,
        "process_start_time_seconds {start}, now {now}"
    );
    assert!(value(&first, "process_max_fds", &[]).unwrap() >= open);
    // CPU seconds only go up, sample after sample.
    std::thread::sleep(Duration::from_millis(700));
    let second = http::get(&d.tcp, "/metrics").text();
    let a = series_lines(&first, "node_cpu_seconds_total");
    let b = series_lines(&second, "node_cpu_seconds_total");
    assert_eq!(a.len(), b.len());
    assert!(a.len() >= 8);
    let mut grew = 0.0;
    for ((la, va), (lb, vb)) in a.iter().zip(b.iter()) {
        assert_eq!(la, lb);
        assert!(vb >= va, "{la} went from {va} to {vb}");
        grew += vb - va;
    }
    assert!(
        grew > 0.0,
        "no CPU time passed between two samples 0.7 s apart"
    );
    d.stop();
}

#[test]
fn a_hung_collector_times_out_without_holding_up_scrapes_or_the_others() {
    // The filesystem collector blocks for ever (as statvfs on a stale NFS mount does).
    let mut d = Daemon::start_config(
        "[metrics]\ninterval = \"1s\"\ncollector-timeout = \"500ms\"\nsimulate-hang = \"filesystem\"\n",
    );
    let text = wait_for_series(&d, "node_load1");
    assert!(value(&text, "node_filesystem_avail_bytes", &[]).is_none());
    assert_eq!(
        value(
            &text,
            "localhostd_collector_success",
            &["collector=\"filesystem\""]
        ),
        Some(0.0)
    );
    assert_eq!(
        value(
            &text,
            "localhostd_collector_success",
            &["collector=\"cpu\""]
        ),
        Some(1.0)
    );
    // Scrapes never wait for the stuck collector: each answers well within its deadline.
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let t = Instant::now();
        let body = scrape(&d);
        slowest = slowest.max(t.elapsed());
        assert!(body.contains("node_load1 "));
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("slowest of 20 scrapes with a hung collector: {slowest:?}");
    assert!(
        slowest < Duration::from_millis(500),
        "a scrape took {slowest:?}, longer than the collector deadline"
    );
    // The sampler goes on round after round; the stuck collector is not started again but
    // counted as timed out each time.
    std::thread::sleep(Duration::from_millis(2500));
    let later = scrape(&d);
    let timeouts = value(
        &later,
        "localhostd_collector_timeouts_total",
        &["collector=\"filesystem\""],
    )
    .unwrap();
    assert!(timeouts >= 3.0, "timeouts {timeouts}");
    let threads = std::fs::read_dir(format!("/proc/{}/task", d.pid()))
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("comm")).ok())
        .filter(|c| c.trim().starts_with("collect-filesys"))
        .count();
    assert_eq!(threads, 1, "exactly one stuck collector thread");
    // A stuck collector thread does not hold up shutdown either.
    d.stop();
}

/// GETs `paths` over one keep-alive connection; returns how many answered `status`.
fn keepalive_gets(
    addr: SocketAddr,
    bearer: &str,
    paths: impl Iterator<Item = String>,
    status: u16,
) -> usize {
    let s = TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    let mut n = 0;
    for path in paths {
        // One write per request (no Nagle/delayed-ACK stalls between pieces).
        let req =
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: {bearer}\r\n\r\n");
        w.write_all(req.as_bytes()).unwrap();
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        let got: u16 = line.split(' ').nth(1).unwrap().parse().unwrap();
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            r.read_line(&mut h).unwrap();
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                len = v.trim().parse().unwrap();
            }
        }
        let mut body = vec![0u8; len];
        r.read_exact(&mut body).unwrap();
        if got == status {
            n += 1;
        }
    }
    n
}

fn http_series(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.starts_with("localhostd_http_"))
        .map(|l| l.rsplit_once(' ').unwrap().0.to_owned())
        .collect()
}

#[test]
fn http_metrics_use_route_templates_so_10000_keys_make_no_new_series() {
    let mut d = Daemon::start_config(FAST);
    let Target::Tcp(addr) = d.tcp.clone() else {
        unreachable!()
    };
    let bearer = format!("Bearer {}", d.admin_token());
    // Warm up: every (route, status) pair the storm will use exists once.
    assert_eq!(
        keepalive_gets(
            addr,
            &bearer,
            (0..10).map(|i| format!("/api/v1/data/warm-{i}")),
            404
        ),
        10
    );
    assert_eq!(
        keepalive_gets(addr, &bearer, (0..10).map(|i| format!("/no-such-{i}")), 404),
        10
    );
    // The first scrape makes /metrics' own series; count from the second.
    scrape(&d);
    let before = http_series(&scrape(&d));
    let storm = keepalive_gets(
        addr,
        &bearer,
        (0..10_000).map(|i| format!("/api/v1/data/storm-key-{i}")),
        404,
    );
    assert_eq!(storm, 10_000);
    assert_eq!(
        keepalive_gets(
            addr,
            &bearer,
            (0..1000).map(|i| format!("/unmatched-{i}/x")),
            404
        ),
        1000
    );
    let text = scrape(&d);
    let after = http_series(&text);
    assert_eq!(
        before.len(),
        after.len(),
        "HTTP series grew with distinct paths:\n{}",
        after
            .iter()
            .filter(|s| !before.contains(s))
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(!text.contains("storm-key") && !text.contains("unmatched-1"));
    let kv = value(
        &text,
        "localhostd_http_requests_total",
        &[
            "route=\"/api/v1/data/{*key}\"",
            "status=\"404\"",
            "method=\"GET\"",
        ],
    )
    .unwrap();
    assert!(kv >= 10_010.0, "{kv}");
    let unmatched = value(
        &text,
        "localhostd_http_requests_total",
        &["route=\"unmatched\"", "status=\"404\""],
    )
    .unwrap();
    assert!(unmatched >= 1010.0, "{unmatched}");
    d.stop();
}

fn log_time(ev: &serde_json::Value) -> SystemTime {
    humantime::parse_rfc3339(ev["timestamp"].as_str().unwrap()).unwrap()
}

fn alert_state(d: &Daemon, name: &str) -> String {
    let list = get_json(d, "/api/v1/alerts");
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == name)
        .unwrap()["state"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn wait_alert(d: &Daemon, name: &str, state: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while alert_state(d, name) != state {
        assert!(
            Instant::now() < deadline,
            "{name} not {state} after 20 s; log:\n{}",
            d.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn alert_event(d: &Daemon, state: &str) -> serde_json::Value {
    d.log_events()
        .into_iter()
        .find(|e| e["alert"] == "disk_used" && e["alert_state"] == state)
        .unwrap_or_else(|| panic!("no {state} log line for disk_used:\n{}", d.logs()))
}

fn wait_status(d: &mut Daemon, want: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let last = d
            .notes
            .iter()
            .rev()
            .flat_map(|m| m.lines())
            .find(|l| l.starts_with("STATUS="))
            .map(str::to_owned);
        if let Some(s) = last.filter(|s| want(s)) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "no such STATUS=; notes {:?}",
            d.notes
        );
        d.recv_notify();
    }
}

#[test]
fn an_alert_fires_after_its_hold_and_resolves_after_its_hold_with_log_lines() {
    let config = "[metrics]\ninterval = \"200ms\"\n[alerts]\ndisk-used-percent = 0.0\nmemory-available-percent = 0.0\nload-per-cpu = 1000.0\nfailed-executions-per-minute = 1000.0\nhold = \"1s\"\n";
    let mut d = Daemon::start_config(config);
    wait_alert(&d, "disk_used", "firing");
    let pending = alert_event(&d, "pending");
    let firing = alert_event(&d, "firing");
    assert_eq!(pending["level"], "INFO");
    // Warn level: journald PRIORITY=4 (tracing-journald maps WARN to 4).
    assert_eq!(firing["level"], "WARN");
    assert_eq!(firing["threshold"], 0.0);
    assert!(firing["value"].as_f64().unwrap() > 0.0);
    let held = log_time(&firing)
        .duration_since(log_time(&pending))
        .unwrap();
    assert!(
        held >= Duration::from_millis(950),
        "fired after {held:?}, hold is 1s"
    );
    for name in ["memory_low", "load_high", "executions_failing"] {
        assert_eq!(alert_state(&d, name), "ok");
    }
    assert_eq!(
        value(
            &scrape(&d),
            "localhostd_alert_firing",
            &["alert=\"disk_used\""]
        ),
        Some(1.0)
    );
    let status = wait_status(&mut d, |s| s.contains("alerts firing: disk_used"));
    assert!(status.starts_with("STATUS=serving on "), "{status}");

    // The condition goes away (threshold raised, SIGHUP): still firing for the hold, then
    // resolved.
    let text = std::fs::read_to_string(&d.config_path).unwrap();
    std::fs::write(
        &d.config_path,
        text.replace("disk-used-percent = 0.0", "disk-used-percent = 100.0"),
    )
    .unwrap();
    d.signal(libc::SIGHUP);
    wait_alert(&d, "disk_used", "resolved");
    let reloaded = d
        .log_events()
        .into_iter()
        .find(|e| e["message"] == "configuration reloaded")
        .unwrap();
    let resolved = alert_event(&d, "resolved");
    assert_eq!(resolved["level"], "INFO");
    let held = log_time(&resolved)
        .duration_since(log_time(&reloaded))
        .unwrap();
    assert!(
        held >= Duration::from_millis(950),
        "resolved after {held:?}, hold is 1s"
    );
    let list = get_json(&d, "/api/v1/alerts");
    let disk = &list["items"][0];
    assert_eq!(disk["name"], "disk_used");
    assert!(disk["fired_at"].is_string() && disk["resolved_at"].is_string());
    wait_status(&mut d, |s| !s.contains("alerts firing"));
    d.stop();
}

#[test]
fn history_survives_a_restart_and_feeds_the_dashboard() {
    let mut d = Daemon::start_config(FAST);
    let t = format!("Bearer {}", d.admin_token());
    let r = http::request(
        &d.tcp,
        "PUT",
        "/api/v1/data/dash/key",
        &[("Authorization", &t), ("Content-Type", "application/json")],
        b"{\"a\":1}",
    );
    assert!(r.status == 200 || r.status == 201, "{}", r.text());
    wait_for_series(&d, "node_load1");
    std::thread::sleep(Duration::from_millis(1500));
    let dash = get_json(&d, "/api/v1/dashboard");
    assert_eq!(
        dash["system"]["memory_total_bytes"].as_f64(),
        Some(proc_meminfo_total())
    );
    assert!(
        dash["storage"]["filesystem"]["size_bytes"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert_eq!(dash["storage"]["kv_keys"], 1);
    assert_eq!(dash["activity"]["kv_changes"][0]["key"], "dash/key");
    assert_eq!(dash["alerts"].as_array().unwrap().len(), 4);
    d.stop();
    // Stopping wrote the slots in progress.
    let stored: Vec<(i64, i64)> = {
        let c = rusqlite::Connection::open(d.state_dir().join("localhostd.db")).unwrap();
        let mut st = c
            .prepare("SELECT resolution, at FROM metrics_history ORDER BY resolution, at")
            .unwrap();
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    assert!(stored.iter().any(|(r, _)| *r == 10), "{stored:?}");
    assert!(stored.iter().any(|(r, _)| *r == 60), "{stored:?}");

    let dir = std::mem::replace(&mut d.dir, tempfile::tempdir().unwrap());
    let _ = std::fs::remove_file(dir.path().join("http.sock"));
    let mut again = Daemon::start_with(Options {
        config: FAST.into(),
        dir: Some(dir),
        ..Options::default()
    });
    let h = get_json(
        &again,
        "/api/v1/metrics/history?series=cpu,memory,disk&range=1h",
    );
    assert_eq!(h["resolution_s"], 10);
    let first_fine = stored.iter().find(|(r, _)| *r == 10).unwrap().1;
    let want = humantime::format_rfc3339_seconds(
        SystemTime::UNIX_EPOCH + Duration::from_secs(first_fine as u64),
    )
    .to_string();
    let stamps: Vec<&str> = h["timestamps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(stamps.contains(&want.as_str()), "{want} not in {stamps:?}");
    let i = stamps.iter().position(|s| *s == want).unwrap();
    assert!(h["series"]["memory"][i].as_f64().unwrap() > 0.0, "{h}");
    assert!(h["series"]["disk"][i].as_f64().is_some(), "{h}");
    assert!(
        h["series"].get("load1").is_none(),
        "only the series asked for"
    );
    let day = get_json(&again, "/api/v1/metrics/history?range=24h");
    assert_eq!(day["resolution_s"], 60);
    assert!(!day["timestamps"].as_array().unwrap().is_empty(), "{day}");
    let bad = http::request(
        &again.tcp,
        "GET",
        "/api/v1/metrics/history?series=gpu",
        &[("Authorization", &format!("Bearer {}", again.admin_token()))],
        b"",
    );
    assert_eq!(bad.status, 400);
    assert!(
        bad.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("gpu")
    );
    again.stop();
}

#[test]
fn executions_are_counted_by_status_with_their_spawn_latency() {
    let mut d = Daemon::start_config(FAST);
    let token = d.admin_token();
    for (argv, status) in [("true", "ok"), ("false", "nonzero_exit")] {
        let r = post_exec(&d, &token, &json!({"argv": [argv]}));
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["status"], status, "{}", r.text());
    }
    let text = scrape(&d);
    for (status, n) in [("ok", 1.0), ("nonzero_exit", 1.0), ("timeout", 0.0)] {
        assert_eq!(
            value(
                &text,
                "localhostd_executions_total",
                &[&format!("status=\"{status}\"")]
            ),
            Some(n),
            "{status}"
        );
    }
    assert_eq!(
        value(
            &text,
            "localhostd_sandbox_spawn_duration_seconds_count",
            &[]
        ),
        Some(2.0)
    );
    assert_eq!(
        value(&text, "localhostd_execution_duration_seconds_count", &[]),
        Some(2.0)
    );
    assert_eq!(value(&text, "localhostd_exec_queue_length", &[]), Some(0.0));
    let dash = get_json(&d, "/api/v1/dashboard");
    let recent = dash["activity"]["executions"].as_array().unwrap();
    assert_eq!(recent.len(), 2);
    assert_eq!(recent[0]["status"], "nonzero_exit");
    d.stop();
}

/// Terminal sessions: running now (a gauge read at the scrape), started, and ended by reason.
#[test]
fn terminal_sessions_are_counted_running_started_and_ended_by_reason() {
    let mut d = Daemon::start_config(FAST);
    let token = d.admin_token();
    let create = |body: serde_json::Value| {
        let r = crate::harness::request_json(&d, "POST", "/api/v1/terminals", &token, &body);
        assert_eq!(r.status, 201, "{}", r.text());
        r.json()["id"].as_str().unwrap().to_owned()
    };
    let state = |id: &str| {
        crate::harness::request_as(
            &d.tcp,
            &format!("Bearer {token}"),
            "GET",
            &format!("/api/v1/terminals/{id}"),
            None,
            b"",
        )
        .json()["state"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let text = scrape(&d);
    assert_eq!(value(&text, "localhostd_terminals_running", &[]), Some(0.0));
    assert_eq!(
        value(
            &text,
            "localhostd_terminals_ended_total",
            &["reason=\"idle_timeout\""]
        ),
        Some(0.0),
        "every reason is registered up front"
    );
    // One that exits by itself, one that is deleted.
    let done = create(json!({"argv": ["/bin/true"]}));
    let shell = create(json!({"argv": ["/bin/sh"]}));
    let until = Instant::now() + Duration::from_secs(30);
    while state(&done) != "ended" {
        assert!(
            Instant::now() < until,
            "the session of /bin/true did not end"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let text = scrape(&d);
    assert_eq!(value(&text, "localhostd_terminals_running", &[]), Some(1.0));
    assert_eq!(
        value(&text, "localhostd_terminals_started_total", &[]),
        Some(2.0)
    );
    assert_eq!(
        value(
            &text,
            "localhostd_terminals_ended_total",
            &["reason=\"exited\""]
        ),
        Some(1.0)
    );
    let r = crate::harness::request_as(
        &d.tcp,
        &format!("Bearer {token}"),
        "DELETE",
        &format!("/api/v1/terminals/{shell}"),
        None,
        b"",
    );
    assert!(r.status < 300, "{}", r.text());
    while state(&shell) != "ended" {
        assert!(Instant::now() < until, "the deleted session did not end");
        std::thread::sleep(Duration::from_millis(50));
    }
    let text = scrape(&d);
    assert_eq!(value(&text, "localhostd_terminals_running", &[]), Some(0.0));
    assert_eq!(
        value(
            &text,
            "localhostd_terminals_ended_total",
            &["reason=\"deleted\""]
        ),
        Some(1.0)
    );
    d.stop();
}
