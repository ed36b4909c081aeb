//! `GET /api/v1/system` and `GET /api/v1/processes` against the real binary: the facts match
//! what this test reads from the same host itself, any scope reads the facts while processes
//! need admin, a busy process shows up at the top by CPU, and bad queries get a 400 that
//! names the parameter.

use std::process::{Child, Command};

use serde_json::Value;

use crate::harness::{Daemon, request_as, token_with};
use crate::http;

fn get(d: &Daemon, token: &str, path: &str) -> http::Response {
    request_as(&d.tcp, &format!("Bearer {token}"), "GET", path, None, b"")
}

fn get_ok(d: &Daemon, token: &str, path: &str) -> Value {
    let r = get(d, token, path);
    assert_eq!(r.status, 200, "{path}: {}", r.text());
    r.json()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .trim()
        .to_owned()
}

/// The hidepid option of this process's /proc mount (the daemon shares the mount namespace).
fn hidepid() -> Option<String> {
    read("/proc/self/mountinfo")
        .lines()
        .filter(|l| l.split(' ').nth(4) == Some("/proc"))
        .filter_map(|l| l.split(" - ").nth(1))
        .rfind(|tail| tail.starts_with("proc "))
        .and_then(|tail| {
            tail.split(' ')
                .nth(2)?
                .split(',')
                .find_map(|o| o.strip_prefix("hidepid=").map(str::to_owned))
        })
}

/// A process that keeps one CPU busy until dropped.
struct Busy(Child);

impl Busy {
    fn start() -> Busy {
        Busy(
            Command::new("sh")
                .args(["-c", "while :; do :; done"])
                .spawn()
                .unwrap(),
        )
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn system_facts_match_the_host_and_a_read_token_gets_them() {
    let d = Daemon::start();
    let reader = token_with(&d, &d.admin_token(), "reader", &["read"]);
    let anonymous = http::request(&d.tcp, "GET", "/api/v1/system", &[], b"");
    assert_eq!(anonymous.status, 401, "{}", anonymous.text());

    let s = get_ok(&d, &reader, "/api/v1/system");
    assert_eq!(s["hostname"], read("/proc/sys/kernel/hostname"), "{s:#}");
    assert_eq!(s["kernel"]["release"], read("/proc/sys/kernel/osrelease"));
    assert!(!s["os"]["name"].as_str().unwrap().is_empty(), "{s:#}");
    let cpus = read("/proc/cpuinfo")
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    assert_eq!(s["cpu"]["count"], cpus, "{s:#}");
    assert!(s["cpu"]["usable"].as_u64().unwrap() >= 1);
    let mem_total_kib: u64 = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    assert_eq!(s["memory"]["total_bytes"], mem_total_kib * 1024);
    let uptime: f64 = read("/proc/uptime")
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let reported = s["uptime_s"].as_f64().unwrap();
    assert!(
        reported > 0.0 && reported <= uptime + 1.0,
        "{reported} vs {uptime}"
    );
    assert!(s["boot_time"].as_str().unwrap().ends_with('Z'), "{s:#}");

    // Filesystems: no kernel or memory-backed ones, each mount point once, sizes consistent.
    let fss = s["filesystems"].as_array().unwrap();
    let mut seen = std::collections::HashSet::new();
    for fs in fss {
        let t = fs["fstype"].as_str().unwrap();
        assert!(
            !["proc", "sysfs", "cgroup2", "tmpfs", "devtmpfs", "devpts"].contains(&t),
            "{fs}"
        );
        assert!(
            seen.insert(fs["mountpoint"].as_str().unwrap().to_owned()),
            "{fs}"
        );
        if let (Some(size), Some(used)) = (fs["size_bytes"].as_u64(), fs["used_bytes"].as_u64()) {
            assert!(used <= size, "{fs}");
        } else {
            assert!(fs["error"].is_string(), "no sizes and no reason: {fs}");
        }
    }
    assert!(
        s["pseudo_filesystems"].as_u64().unwrap() >= 1,
        "/proc at least"
    );

    // Interfaces: loopback with its address.
    let lo = s["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "lo")
        .unwrap_or_else(|| panic!("no lo: {s:#}"));
    assert_eq!(lo["loopback"], true, "{lo}");
    assert!(
        lo["addresses"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["address"] == "127.0.0.1" && a["prefix"] == 8 && a["family"] == "inet"),
        "{lo}"
    );

    // What the daemon can see follows the /proc mount (hidepid hides other users).
    let hidden = matches!(
        hidepid().as_deref(),
        Some("1" | "2" | "noaccess" | "invisible")
    );
    let v = &s["visibility"];
    if hidden && !am_root() {
        assert_eq!(v["processes"], "own", "{v}");
        assert!(v["reason"].as_str().unwrap().contains("hidepid"), "{v}");
    } else if !hidden {
        assert_eq!(v["processes"], "all", "{v}");
        assert!(v["reason"].is_null(), "{v}");
    }
}

fn am_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn processes_need_admin_and_a_busy_process_is_at_the_top_by_cpu() {
    let d = Daemon::start();
    let reader = token_with(&d, &d.admin_token(), "reader", &["read", "write", "exec"]);
    let r = get(&d, &reader, "/api/v1/processes");
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "forbidden");

    let busy = Busy::start();
    let pid = busy.0.id();
    let admin = d.admin_token();
    let top = get_ok(&d, &admin, "/api/v1/processes?sort=cpu&limit=100");
    assert_eq!(top["sort"], "cpu");
    assert_eq!(top["cpu_basis"], "interval");
    assert!(top["interval_ms"].as_u64().unwrap() > 0, "{top:#}");
    let items = top["items"].as_array().unwrap();
    assert!(!items.is_empty() && items.len() <= 100, "{top:#}");
    assert!(top["total"].as_u64().unwrap() >= items.len() as u64);
    let cpu: Vec<f64> = items
        .iter()
        .map(|p| p["cpu_percent"].as_f64().unwrap())
        .collect();
    assert!(cpu.windows(2).all(|w| w[0] >= w[1]), "not sorted: {cpu:?}");
    let me = items
        .iter()
        .find(|p| p["pid"] == pid)
        .unwrap_or_else(|| panic!("the busy process {pid} is not listed: {top:#}"));
    assert!(me["cpu_percent"].as_f64().unwrap() > 0.0, "{me}");
    assert!(
        me["command"]
            .as_str()
            .unwrap()
            .contains("while :; do :; done"),
        "{me}"
    );
    assert_eq!(me["uid"], my_uid(), "{me}");
    assert!(me["rss_bytes"].as_u64().unwrap() > 0, "{me}");
    for field in ["user", "name", "state", "started_at"] {
        assert!(me[field].is_string(), "{field}: {me}");
    }

    let mem = get_ok(&d, &admin, "/api/v1/processes?sort=memory&limit=3");
    let rss: Vec<u64> = mem["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["rss_bytes"].as_u64().unwrap())
        .collect();
    assert!(!rss.is_empty() && rss.len() <= 3, "{mem:#}");
    assert!(rss.windows(2).all(|w| w[0] >= w[1]), "not sorted: {rss:?}");
    drop(busy);
}

fn my_uid() -> u32 {
    // SAFETY: getuid has no preconditions.
    unsafe { libc::getuid() }
}

#[test]
fn bad_process_queries_get_a_400_naming_the_parameter() {
    let d = Daemon::start();
    let admin = d.admin_token();
    for (query, names) in [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=ten", "limit"),
        ("sort=rss", "sort"),
        ("order=cpu", "order"),
    ] {
        let r = get(&d, &admin, &format!("/api/v1/processes?{query}"));
        assert_eq!(r.status, 400, "{query}: {}", r.text());
        let e = r.json();
        assert_eq!(e["error"]["code"], "bad_request", "{query}: {e}");
        assert!(
            e["error"]["message"].as_str().unwrap().contains(names),
            "{query}: {e}"
        );
    }
    // The control: the same route with good values answers.
    get_ok(&d, &admin, "/api/v1/processes?sort=memory&limit=100");
}
