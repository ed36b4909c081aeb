//! What a job's init (PID 1 of its namespace) holds while the job runs: its /dev/null stdio
//! and the status pipe to the helper. Not the O_PATH handles on the host's unmasked /etc and
//! /usr it built the root from, and not the report channel (issue 23, points 1 and 9).

use std::os::unix::fs::OpenOptionsExt as _;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::post_exec_at;
use crate::sandbox::start_daemon;

/// Every descriptor of `pid`: (fd, link target, whether it is O_PATH).
fn descriptors(pid: i32) -> Vec<(i32, String, bool)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return out;
    };
    for e in dir.flatten() {
        let Some(fd) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let target = std::fs::read_link(e.path())
            .map(|t| t.display().to_string())
            .unwrap_or_default();
        let flags = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("flags:"))
            .and_then(|f| u32::from_str_radix(f.trim(), 8).ok())
            .unwrap_or(0);
        out.push((fd, target, flags & libc::O_PATH as u32 != 0));
    }
    out.sort();
    out
}

/// The parent of `pid` as the host sees it.
fn parent_of(pid: i32) -> Option<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))?
        .trim()
        .parse()
        .ok()
}

fn find_sleep(marker: &str) -> Option<i32> {
    let want = format!("sleep\0{marker}\0");
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid = e.file_name().to_str()?.parse::<i32>().ok()?;
        std::fs::read(e.path().join("cmdline"))
            .ok()
            .filter(|c| c == want.as_bytes())
            .map(|_| pid)
    })
}

/// While a job runs, its init holds /dev/null on 0–2 and one pipe (the status pipe), nothing
/// else: no O_PATH handle (the control shows the scan sees one) and no report channel.
#[test]
fn a_jobs_init_keeps_no_host_directory_handles_or_report_channel() {
    if !nix::unistd::geteuid().is_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "this test must run as root in CI"
        );
        eprintln!("SKIPPED: reading a job's init's descriptors needs root (it is not dumpable)");
        return;
    }
    let own = std::fs::File::options()
        .read(true)
        .custom_flags(libc::O_PATH)
        .open("/etc")
        .unwrap();
    let me = std::process::id() as i32;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&own);
    assert!(
        descriptors(me)
            .iter()
            .any(|(f, _, o_path)| *f == fd && *o_path),
        "control: the scan does not see an O_PATH descriptor"
    );

    let (mut d, token) = start_daemon(None);
    let marker = format!("66.6{}", std::process::id());
    let (tcp, t2, m2) = (d.tcp.clone(), token.clone(), marker.clone());
    let job = std::thread::spawn(move || {
        post_exec_at(
            &tcp,
            &t2,
            &json!({"argv": ["sleep", m2], "timeout_ms": 8000}),
        )
    });
    let start = Instant::now();
    let mut last = Vec::new();
    let mut clean = false;
    while start.elapsed() < Duration::from_secs(6) && !clean {
        std::thread::sleep(Duration::from_millis(50));
        let Some(init) = find_sleep(&marker).and_then(parent_of) else {
            continue;
        };
        last = descriptors(init);
        let pipes = last
            .iter()
            .filter(|(_, t, _)| t.starts_with("pipe:"))
            .count();
        clean = last.iter().all(|(fd, t, o_path)| {
            !o_path && ((*fd <= 2 && t == "/dev/null") || t.starts_with("pipe:"))
        }) && pipes == 1
            && last.len() == 4;
    }
    let r = job.join().unwrap();
    assert_eq!(r.json()["status"], "timeout", "{}", r.text());
    assert!(clean, "the job's init holds: {last:?}");
    d.stop();
}
