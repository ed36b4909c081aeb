//! One tunnel's supervisor: starts its client in the sandbox (host network, landlock port
//! rules, uid 65534 inside, no state directory), reads its output for the public URL (or asks
//! the client's local API), restarts it with doubling pauses when it ends, and marks the
//! tunnel failed after `tunnels.max-failures` failures in a row. A stop ends the client's
//! whole PID namespace and returns once it is gone.

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime};

use tokio::io::AsyncReadExt;
use tokio::sync::watch;

use super::provider::{self, Discovery, Launch, Provider, StartOptions};
use super::{LAST_LINES, MAX_LINE, State, Tunnels};
use crate::jobs::sandbox::{InlineFile, Limits, NetPorts, Policy, ReportKind, SCRATCH};

use super::provider::CLIENT_DIR;
/// The uid and gid a client has inside its user namespace: `nobody`, which every
/// /etc/passwd has (OpenSSH's client exits when its uid has no passwd entry).
const CLIENT_ID: u32 = 65534;
/// How often a client's local API is asked for the URL until it has one.
const POLL_EVERY: Duration = Duration::from_millis(500);
/// How long a stopped client's sandbox may take to be gone.
const END_GRACE: Duration = Duration::from_secs(10);

/// How one run of the client ended.
enum Ended {
    /// A stop: the tunnel is no longer meant to run.
    Stopped,
    /// The client ended, or could not start, or gave no URL in time.
    Failed(String),
}

pub(super) async fn run(
    tunnels: Tunnels,
    p: Provider,
    opts: StartOptions,
    mut stop: watch::Receiver<bool>,
) {
    let mut failures: u32 = 0;
    let mut pause = tunnels.inner.live.get().tunnels.restart_delay.get();
    loop {
        let started = Instant::now();
        let mut lines = VecDeque::new();
        let ended = once(&tunnels, p, &opts, &mut stop, &mut lines).await;
        tunnels.set_url(p, None);
        let cfg = tunnels.inner.live.get().tunnels.clone();
        let last_lines: Vec<String> = lines.into_iter().collect();
        let reason = match ended {
            Ended::Stopped => {
                tunnels.set_status(p, |s| {
                    s.state = State::Stopped;
                    s.since = SystemTime::now();
                    s.last_lines = last_lines;
                });
                return;
            }
            Ended::Failed(reason) => reason,
        };
        if started.elapsed() >= cfg.stable_after.get() {
            failures = 0;
            pause = cfg.restart_delay.get();
        }
        failures += 1;
        if failures >= cfg.max_failures {
            tracing::error!(
                provider = p.as_str(),
                failures,
                error = %reason,
                last_lines = %last_lines.join("\n"),
                "a tunnel failed too often in a row; it is not restarted until it is started again"
            );
            tunnels.set_status(p, |s| {
                s.state = State::Failed;
                s.since = SystemTime::now();
                s.last_error = Some(format!("{reason} ({failures} failures in a row)"));
                s.last_lines = last_lines;
            });
            // Stay until stopped, so the slot keeps its run and a stop or start ends it.
            stopped(&mut stop).await;
            return;
        }
        tunnels.set_status(p, |s| {
            s.state = State::Restarting;
            s.since = SystemTime::now();
            s.restarts += 1;
            s.last_error = Some(reason.clone());
            s.last_lines = last_lines;
        });
        tunnels.inner.metrics.tunnel_restarted(p.as_str());
        tokio::select! {
            _ = stopped(&mut stop) => {
                tunnels.set_status(p, |s| { s.state = State::Stopped; s.since = SystemTime::now(); });
                return;
            }
            _ = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(cfg.max_restart_delay.get());
        tunnels.set_status(p, |s| {
            s.state = State::Starting;
            s.since = SystemTime::now();
        });
    }
}

/// A free TCP port on loopback, for a client's local API (bound and released: the client
/// binds it next, and nothing else here asks the kernel for ports in between).
fn free_port() -> std::io::Result<u16> {
    let l = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    Ok(l.local_addr()?.port())
}

/// The sandbox policy of a client.
fn policy(launch: &Launch, binary_dir: Option<&std::path::Path>, memory: u64) -> Policy {
    let mut env = vec![
        ("PATH".to_owned(), "/usr/local/bin:/usr/bin:/bin".to_owned()),
        ("HOME".to_owned(), SCRATCH.to_owned()),
        ("LANG".to_owned(), "C.UTF-8".to_owned()),
    ];
    for (k, v) in &launch.env {
        env.retain(|(e, _)| e != k);
        env.push((k.clone(), v.clone()));
    }
    Policy {
        argv: launch.argv.clone(),
        env,
        cwd: SCRATCH.to_owned(),
        limits: Limits {
            // A tunnel runs for days: its CPU time is not what bounds it.
            cpu_s: 10 * 365 * 24 * 3600,
            data_bytes: memory,
            address_space_bytes: None,
            stack_bytes: 8 << 20,
            processes: 256,
            file_size_bytes: 64 << 20,
            open_files: 4096,
            tmpfs_bytes: 32 << 20,
            tmpfs_inodes: 4096,
        },
        network: false,
        run_as: None,
        ro_binds: binary_dir
            .map(|d| vec![(d.display().to_string(), CLIENT_DIR.to_owned())])
            .unwrap_or_default(),
        allow_degraded: false,
        net_allow: Vec::new(),
        terminal: None,
        mount_root: None,
        mounts: Vec::new(),
        files: launch
            .files
            .iter()
            .map(|(name, content, private)| InlineFile {
                name: name.clone(),
                content: content.clone(),
                executable: false,
                private: *private,
            })
            .collect(),
        collect: Vec::new(),
        host_network: true,
        net_ports: launch.connect_ports.as_ref().map(|connect| NetPorts {
            connect: connect.clone(),
            bind: launch.bind_ports.clone(),
        }),
        inside_id: Some(CLIENT_ID),
    }
}

/// Keeps a client's last lines, each cut at `MAX_LINE` bytes.
fn keep(lines: &mut VecDeque<String>, line: &str) {
    let mut end = line.len().min(MAX_LINE);
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    if lines.len() == LAST_LINES {
        lines.pop_front();
    }
    lines.push_back(line[..end].to_owned());
}

/// Splits what a pipe gave into lines; a partial line waits in `pending` (cut at `MAX_LINE`).
fn split_lines(pending: &mut Vec<u8>, chunk: &[u8], out: &mut Vec<String>) {
    for &b in chunk {
        if b == b'\n' {
            let line = String::from_utf8_lossy(pending);
            out.push(line.trim_end_matches('\r').to_owned());
            pending.clear();
        } else if pending.len() < MAX_LINE * 8 {
            pending.push(b);
        }
    }
}

/// Runs the client once: until a stop, its end, or no URL by `tunnels.url-timeout`.
async fn once(
    tunnels: &Tunnels,
    p: Provider,
    opts: &StartOptions,
    stop: &mut watch::Receiver<bool>,
    lines: &mut VecDeque<String>,
) -> Ended {
    if *stop.borrow() {
        return Ended::Stopped;
    }
    let cfg = tunnels.inner.live.get();
    let Some(target) = tunnels.target() else {
        return Ended::Failed("the public listener is not bound".into());
    };
    let path = std::env::var_os("PATH").unwrap_or_default();
    let binary = match provider::locate(p, &cfg.tunnels, &path) {
        Ok(b) => b,
        Err(reason) => return Ended::Failed(reason),
    };
    let mut port = free_port;
    let launch = match provider::launch(p, &binary, &cfg.tunnels, opts, target, &mut port) {
        Ok(l) => l,
        Err(e) => return Ended::Failed(e.to_string()),
    };
    let policy = policy(
        &launch,
        launch.bind_dir.as_deref(),
        cfg.tunnels.memory.bytes(),
    );
    let mut service = match tunnels.inner.exec.start_service(policy).await {
        Ok(s) => s,
        Err(e) => return Ended::Failed(format!("the sandbox could not start the client: {e}")),
    };
    tracing::info!(
        provider = p.as_str(),
        helper = service.running.exit.id(),
        argv = %launch.argv.join(" "),
        "tunnel client started"
    );
    let url_by = tokio::time::Instant::now() + cfg.tunnels.url_timeout.get();
    let mut url: Option<String> = match &launch.discovery {
        Discovery::Fixed(u) => Some(u.clone()),
        _ => None,
    };
    if let Some(u) = &url {
        announce(tunnels, p, u);
    }
    let mut out_pending = Vec::new();
    let mut err_pending = Vec::new();
    let mut out_buf = [0u8; 4096];
    let mut err_buf = [0u8; 4096];
    let (mut out_open, mut err_open) = (true, true);
    let mut poll = tokio::time::interval(POLL_EVERY);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let running = &mut service.running;
    let ended = loop {
        let mut got = Vec::new();
        tokio::select! {
            _ = stopped(stop) => break Ended::Stopped,
            _ = running.exit.wait() => break Ended::Failed(String::new()),
            r = running.stdout.read(&mut out_buf), if out_open => match r {
                Ok(0) | Err(_) => out_open = false,
                Ok(n) => split_lines(&mut out_pending, &out_buf[..n], &mut got),
            },
            r = running.stderr.read(&mut err_buf), if err_open => match r {
                Ok(0) | Err(_) => err_open = false,
                Ok(n) => split_lines(&mut err_pending, &err_buf[..n], &mut got),
            },
            _ = poll.tick(), if url.is_none() && !matches!(launch.discovery, Discovery::Output | Discovery::Fixed(_)) => {
                match provider::poll_url(&launch.discovery).await {
                    Ok(Some(u)) => {
                        announce(tunnels, p, &u);
                        url = Some(u);
                    }
                    Ok(None) => {}
                    Err(e) => tracing::debug!(provider = p.as_str(), error = %e, "asking the client for its URL"),
                }
            },
            _ = tokio::time::sleep_until(url_by), if url.is_none() => {
                break Ended::Failed(format!(
                    "the client gave no public URL within tunnels.url-timeout ({}s)",
                    cfg.tunnels.url_timeout.get().as_secs()
                ));
            }
        }
        for line in got {
            tracing::debug!(provider = p.as_str(), line = %line, "tunnel client output");
            if url.is_none()
                && let Some(u) = provider::url_from_line(p, &line, &cfg.tunnels, opts)
            {
                announce(tunnels, p, &u);
                url = Some(u);
            }
            keep(lines, &line);
        }
    };
    // A client that ended by itself has its report read; any other end kills the sandbox.
    let kill = !matches!(&ended, Ended::Failed(r) if r.is_empty());
    // Whatever the client still wrote before it ended (its last words say why).
    if !kill {
        for (pipe, pending) in [
            (&mut running.stdout, &mut out_pending),
            (&mut running.stderr, &mut err_pending),
        ] {
            let mut rest = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_millis(200), pipe.read(&mut buf)).await
            {
                if n == 0 || rest.len() > 64 << 10 {
                    break;
                }
                rest.extend_from_slice(&buf[..n]);
            }
            rest.push(b'\n');
            let mut got = Vec::new();
            split_lines(pending, &rest, &mut got);
            for line in got.into_iter().filter(|l| !l.is_empty()) {
                keep(lines, &line);
            }
        }
    }
    let report = running
        .finish(kill, tokio::time::Instant::now() + END_GRACE)
        .await;
    match ended {
        Ended::Stopped => {
            tracing::info!(provider = p.as_str(), "tunnel client stopped");
            Ended::Stopped
        }
        Ended::Failed(reason) if !reason.is_empty() => Ended::Failed(reason),
        Ended::Failed(_) => Ended::Failed(match report {
            Ok(r) => match r.kind {
                ReportKind::Exit => format!("the client exited with status {}", r.code),
                ReportKind::Signal => format!("the client was killed by signal {}", r.signal),
                ReportKind::Error => {
                    format!("the sandbox could not start the client: {}", r.message)
                }
                ReportKind::Killed => "the client's sandbox was killed".to_owned(),
            },
            Err(e) => format!("the client ended; its report could not be read: {e}"),
        }),
    }
}

/// Returns once a stop was asked for (or the tunnel's handle is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is dropped here, not held across the caller's awaits.
    let _ = stop.wait_for(|s| *s).await.is_ok();
}

/// The client said its URL: the tunnel is up.
fn announce(tunnels: &Tunnels, p: Provider, url: &str) {
    tunnels.set_url(p, Some(url.to_owned()));
    tunnels.set_status(p, |s| {
        s.state = State::Up;
        s.since = SystemTime::now();
        // `last_error` stays: why the client last ended, even once it is back up.
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_split_and_cut() {
        let mut pending = Vec::new();
        let mut out = Vec::new();
        split_lines(&mut pending, b"one\r\ntw", &mut out);
        split_lines(&mut pending, b"o\nthree", &mut out);
        assert_eq!(out, ["one", "two"]);
        assert_eq!(pending, b"three");
        let mut kept = VecDeque::new();
        for i in 0..(LAST_LINES + 5) {
            keep(&mut kept, &format!("line {i}"));
        }
        assert_eq!(kept.len(), LAST_LINES);
        assert_eq!(kept.front().map(String::as_str), Some("line 5"));
        keep(&mut kept, &"é".repeat(MAX_LINE));
        assert!(kept.back().is_some_and(|l| l.len() <= MAX_LINE));
    }
}
