//! A job's `memory_bytes` against every way a job can hold memory: shared anonymous pages
//! touched one by one, a memfd filled with `write()` and never mapped, a deep recursion after
//! raising its own stack limit, and a fill of its tmpfs mounts. Each runs on the rlimit path
//! (a root daemon told not to use cgroups, and an unprivileged daemon) and, as root, on the
//! cgroup path where the machine has a memory controller. Each job must end at its limit, the
//! host's MemAvailable must drop by at most twice the limit while it runs, and the result,
//! the history and /api/v1/health must name the mechanism that limited it.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Daemon, Options, post_exec};
use crate::http;

/// The limit every probe gets; each probe tries to reach 1 GiB, far above twice it.
const LIMIT: u64 = 128 << 20;

const SHARED_ANON: &str = r#"
import mmap
maps = []
# 16 MiB mappings, each touched page by page, up to 1 GiB.
for n in range(64):
    m = mmap.mmap(-1, 16 << 20, flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)
    for i in range(0, 16 << 20, 4096):
        m[i] = 1
    maps.append(m)
    print("MiB", (n + 1) * 16, flush=True)
print("ESCAPED", flush=True)
"#;

const MEMFD: &str = r#"
import os
chunk = b"x" * (1 << 20)
fds = []
for i in range(1024):
    # A new memfd every 64 MiB: each stays below the file size limit.
    if i % 64 == 0:
        fds.append(os.memfd_create("fill"))
    os.write(fds[-1], chunk)
    if i % 16 == 0:
        print("MiB", i, flush=True)
print("ESCAPED", flush=True)
"#;

const TMPFS_FILL: &str = r#"
import os, sys
chunk = b"x" * (1 << 20)
total = 0
for d in ("/work", "/tmp", "/dev/shm"):
    n = 0
    try:
        while total < (1024 << 20):
            # 64 MiB per file: each stays below the file size limit.
            with open(os.path.join(d, "fill%d" % n), "wb", buffering=0) as f:
                for _ in range(64):
                    f.write(chunk)
                    total += 1 << 20
                    if total % (16 << 20) == 0:
                        print("MiB", total >> 20, flush=True)
            n += 1
    except OSError as e:
        print(d, e.strerror, flush=True)
print("TOTAL", total >> 20, flush=True)
if total >= (1024 << 20):
    print("ESCAPED", flush=True)
    sys.exit(0)
sys.exit(3)
"#;

/// Raises its soft stack limit to the hard one and re-executes itself (so the new limit also
/// shapes its address space layout), then recurses with 64 KiB frames.
const DEEP_RECURSION_C: &str = r#"
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/resource.h>
static long depth;
static void dive(void) {
    volatile char pad[64 * 1024];
    memset((char *)pad, 1, sizeof pad);
    depth++;
    if (depth % 256 == 0) { printf("MiB %ld\n", depth / 16); fflush(stdout); }
    if (depth >= 16L * 1024) { puts("ESCAPED"); fflush(stdout); _exit(0); }
    dive();
    pad[1] = 2;
}
int main(int argc, char **argv) {
    struct rlimit r;
    getrlimit(RLIMIT_STACK, &r);
    if (argc == 1) {
        r.rlim_cur = r.rlim_max;
        setrlimit(RLIMIT_STACK, &r);
        char *again[] = { argv[0], "again", NULL };
        execv("/proc/self/exe", again);
        perror("execv");
        return 2;
    }
    if (r.rlim_max == RLIM_INFINITY) puts("hard stack unlimited");
    else printf("hard stack %llu MiB\n", (unsigned long long)(r.rlim_max >> 20));
    fflush(stdout);
    dive();
    return 0;
}
"#;

fn mem_available() -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap()
        * 1024
}

/// Runs `f` while sampling MemAvailable; returns its result and the largest drop below the
/// value seen just before.
fn sampled<T>(f: impl FnOnce() -> T) -> (T, u64) {
    let base = mem_available();
    let stop = Arc::new(AtomicBool::new(false));
    let low = Arc::new(AtomicU64::new(base));
    let sampler = {
        let (stop, low) = (stop.clone(), low.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                low.fetch_min(mem_available(), Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let out = f();
    stop.store(true, Ordering::SeqCst);
    sampler.join().unwrap();
    (out, base.saturating_sub(low.load(Ordering::SeqCst)))
}

fn call(d: &Daemon, token: &str, method: &str, path: &str, ct: &str, body: &[u8]) -> Value {
    let auth = format!("Bearer {token}");
    let r = http::request(
        &d.tcp,
        method,
        path,
        &[("Authorization", &auth), ("Content-Type", ct)],
        body,
    );
    assert!(r.status < 300, "{method} {path}: {} {}", r.status, r.text());
    r.json()
}

/// The largest "MiB n" progress line of a job's output.
fn reached_mib(stdout: &str) -> u64 {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("MiB ").or_else(|| l.strip_prefix("TOTAL ")))
        .filter_map(|n| n.trim().parse().ok())
        .max()
        .unwrap_or(0)
}

/// The deep recursion probe, compiled and stored as a program (None without gcc).
fn upload_recursion(d: &Daemon, token: &str) -> Option<String> {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("deep.c");
    let exe = tmp.path().join("deep");
    std::fs::write(&src, DEEP_RECURSION_C).unwrap();
    let ok = Command::new("gcc")
        .args(["-O0", "-o"])
        .arg(&exe)
        .arg(&src)
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "gcc is needed for the deep recursion probe in CI"
        );
        println!("SKIPPED: the deep recursion probe (no working gcc)");
        return None;
    }
    let p = call(
        d,
        token,
        "POST",
        "/api/v1/programs?name=deep",
        "application/octet-stream",
        &std::fs::read(&exe).unwrap(),
    );
    Some(p["id"].as_str().unwrap().to_owned())
}

/// Runs the four probes at `LIMIT`; every way a probe got past its limit is a failure.
fn probes(d: &Daemon, mechanism: &str) -> Vec<String> {
    let token = d.admin_token();
    let mut jobs: Vec<(&str, String, Value)> = vec![
        (
            "shared anonymous memory",
            "/api/v1/exec".into(),
            json!({"argv": ["python3", "-c", SHARED_ANON]}),
        ),
        (
            "memfd filled with write()",
            "/api/v1/exec".into(),
            json!({"argv": ["python3", "-c", MEMFD]}),
        ),
        (
            "tmpfs fill",
            "/api/v1/exec".into(),
            json!({"argv": ["python3", "-c", TMPFS_FILL]}),
        ),
    ];
    if let Some(id) = upload_recursion(d, &token) {
        jobs.push((
            "deep recursion",
            format!("/api/v1/programs/{id}/runs"),
            json!({}),
        ));
    }
    let mut failures = Vec::new();
    let mut ids = Vec::new();
    for (name, path, mut body) in jobs {
        body["limits"] = json!({"memory_bytes": LIMIT});
        body["timeout_ms"] = json!(60_000);
        let (r, drop) = sampled(|| {
            call(
                d,
                &token,
                "POST",
                &path,
                "application/json",
                body.to_string().as_bytes(),
            )
        });
        let stdout = r["stdout"].as_str().unwrap_or("");
        let status = r["status"].as_str().unwrap_or("");
        let reached = reached_mib(stdout);
        println!(
            "{mechanism} / {name}: status {status}, reached {reached} MiB, MemAvailable dropped {} MiB, limited by {}",
            drop >> 20,
            r["memory_limited_by"]
        );
        let mut fail = |what: String| failures.push(format!("{mechanism} / {name}: {what}"));
        if stdout.contains("ESCAPED") || reached << 20 > LIMIT {
            fail(format!(
                "got past its {} MiB limit: reached {reached} MiB (status {status}, stdout tail {:?})",
                LIMIT >> 20,
                stdout.lines().last()
            ));
        }
        // Positive control: the probe does take memory up to near its limit (a memfd is
        // refused outright where rlimits limit the job).
        let refused = mechanism == "rlimit" && name.starts_with("memfd");
        if !refused && reached < 16 {
            fail(format!(
                "took only {reached} MiB before it ended (status {status}, stderr {:?})",
                r["stderr"]
            ));
        }
        if drop > 2 * LIMIT {
            fail(format!(
                "MemAvailable dropped by {} MiB (at most {} MiB allowed)",
                drop >> 20,
                (2 * LIMIT) >> 20
            ));
        }
        // The job ends at its limit: the cgroup's OOM kill is `memory_limit`; on the rlimit
        // path the job meets ENOMEM, ENOSYS, ENOSPC or a stack overflow and ends with it.
        let ended = if mechanism == "cgroup" {
            status == "memory_limit"
        } else {
            ["memory_limit", "nonzero_exit", "killed"].contains(&status)
        };
        if !ended {
            fail(format!(
                "status {status:?}, stderr {:?}, message {:?}",
                r["stderr"], r["message"]
            ));
        }
        if r["memory_limited_by"] != mechanism {
            fail(format!(
                "the result says memory_limited_by = {}, expected {mechanism:?}",
                r["memory_limited_by"]
            ));
        }
        ids.push(r["id"].as_str().unwrap_or("").to_owned());
    }
    let hist = call(
        d,
        &token,
        "GET",
        "/api/v1/executions?limit=20",
        "application/json",
        b"",
    );
    for id in ids {
        let rec = hist["items"]
            .as_array()
            .and_then(|a| a.iter().find(|e| e["id"] == id.as_str()));
        match rec {
            Some(e) if e["memory_limited_by"] == mechanism => {}
            other => failures.push(format!(
                "{mechanism}: the history entry of {id} says memory_limited_by = {:?}",
                other.map(|e| e["memory_limited_by"].clone())
            )),
        }
    }
    let health = http::get(&d.tcp, "/api/v1/health").json();
    let reported = health["components"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "job_cgroups"))
        .map(|c| c["memory_limited_by"].clone());
    if reported != Some(json!(mechanism)) {
        failures.push(format!(
            "{mechanism}: /api/v1/health says memory_limited_by = {reported:?}"
        ));
    }
    failures
}

fn need_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "the memory tests must run as root in CI"
    );
    eprintln!("SKIPPED: the memory tests need root (per-job uids, a daemon run unprivileged)");
    false
}

/// Whether this machine gives a root daemon a memory cgroup for its jobs: the cgroup v1
/// memory controller mounted, or a cgroup v2 root with the memory controller.
fn machine_has_memory_cgroup() -> bool {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let v1 = mounts.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() > 3 && f[2] == "cgroup" && f[3].split(',').any(|o| o == "memory")
    });
    let v2 = std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers")
        .is_ok_and(|c| c.split_whitespace().any(|x| x == "memory"));
    v1 || v2
}

fn start(config: &str, user: Option<(u32, u32)>) -> Daemon {
    Daemon::start_with(Options {
        config: format!("[rate-limit]\nenabled = false\n{config}"),
        user,
        ..Options::default()
    })
}

fn assert_none(failures: Vec<String>) {
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn memory_limit_holds_on_the_rlimit_path_when_the_daemon_runs_as_root() {
    if !need_root() {
        return;
    }
    let mut d = start("[sandbox]\njob-cgroups = \"off\"\n", None);
    let failures = probes(&d, "rlimit");
    d.stop();
    assert_none(failures);
}

#[test]
fn memory_limit_holds_on_the_rlimit_path_when_the_daemon_runs_unprivileged() {
    if !need_root() {
        return;
    }
    let mut d = start("", Some(crate::sandbox::test_user()));
    let failures = probes(&d, "rlimit");
    d.stop();
    assert_none(failures);
}

#[test]
fn memory_limit_holds_on_the_cgroup_path_when_the_daemon_runs_as_root() {
    if !need_root() {
        return;
    }
    if !machine_has_memory_cgroup() {
        eprintln!("SKIPPED: this machine mounts no memory cgroup controller");
        return;
    }
    let mut d = start("", None);
    let failures = probes(&d, "cgroup");
    d.stop();
    assert_none(failures);
}

/// The directory a root daemon on the cgroup v1 memory controller makes its jobs' cgroups
/// in (it shares this test's memory cgroup), if this machine has that controller.
fn v1_jobs_parent(daemon_pid: i32) -> Option<std::path::PathBuf> {
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    let mount = mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() > 3 && f[2] == "cgroup" && f[3].split(',').any(|o| o == "memory"))
            .then(|| f[1].to_owned())
    })?;
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let rel = own.lines().find_map(|l| {
        let mut p = l.splitn(3, ':');
        let (_, c, path) = (p.next()?, p.next()?, p.next()?);
        c.split(',').any(|c| c == "memory").then(|| path.to_owned())
    })?;
    let dir = std::path::Path::new(&mount)
        .join(rel.trim_start_matches('/'))
        .join(format!("localhostd-{daemon_pid}"));
    dir.is_dir().then_some(dir)
}

/// A job whose cgroup cannot be created is refused (503, logged), never run silently on
/// rlimits; with `sandbox.cgroup-fallback` it runs on rlimits, logged and recorded so.
#[test]
fn a_job_whose_cgroup_cannot_be_made_is_refused_or_runs_on_rlimits_as_configured() {
    if !need_root() {
        return;
    }
    for fallback in [false, true] {
        let mut d = start(
            &format!("[sandbox]\nwarm-pool = 0\ncgroup-fallback = {fallback}\n"),
            None,
        );
        let Some(parent) = v1_jobs_parent(d.pid()) else {
            eprintln!(
                "SKIPPED: no cgroup v1 memory controller here to make a job's cgroup fail in"
            );
            d.stop();
            return;
        };
        let token = d.admin_token();
        let run = |d: &Daemon| post_exec(d, &token, &json!({"argv": ["true"]}));
        // Control: with its parent there, a job gets its cgroup.
        let r = run(&d);
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["memory_limited_by"], "cgroup", "{}", r.text());
        // Without it (no job runs now, so it is empty), creating the job's cgroup fails.
        std::fs::remove_dir(&parent).unwrap();
        let r = run(&d);
        let logs = d.logs();
        if fallback {
            assert_eq!(r.status, 200, "{}", r.text());
            assert_eq!(r.json()["memory_limited_by"], "rlimit", "{}", r.text());
            assert!(
                logs.contains("it runs limited by rlimits"),
                "no warning logged: {logs}"
            );
        } else {
            assert_eq!(r.status, 503, "{}", r.text());
            assert!(r.text().contains("cgroup"), "{}", r.text());
            assert!(
                logs.contains("the job is refused"),
                "no error logged: {logs}"
            );
        }
        d.stop();
    }
}

/// On the rlimit path Node (V8 reserves far more address space than it touches) runs within
/// a small memory limit thanks to its built-in address space headroom, and fails without it.
#[test]
fn node_runs_on_the_rlimit_path_with_its_address_space_headroom_and_not_without() {
    if !need_root() {
        return;
    }
    if !Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        println!("SKIPPED: node is not installed");
        return;
    }
    let body = json!({
        "argv": ["node", "-e", "console.log('node ' + Buffer.alloc(16 << 20).length)"],
        "limits": {"memory_bytes": 256u64 << 20},
        // Without headroom Node hangs or aborts: the timeout ends it either way.
        "timeout_ms": 15_000,
    });
    for (config, works) in [
        ("[sandbox]\njob-cgroups = \"off\"\n", true),
        (
            "[sandbox]\njob-cgroups = \"off\"\n[sandbox.address-space-headroom]\n",
            false,
        ),
    ] {
        let mut d = start(config, None);
        let token = d.admin_token();
        let r = call(
            &d,
            &token,
            "POST",
            "/api/v1/exec",
            "application/json",
            body.to_string().as_bytes(),
        );
        d.stop();
        assert_eq!(r["memory_limited_by"], "rlimit", "{r}");
        if works {
            assert_eq!(r["status"], "ok", "{r}");
            assert_eq!(r["stdout"], "node 16777216\n", "{r}");
        } else {
            assert_ne!(r["status"], "ok", "node ran without headroom: {r}");
        }
    }
}
