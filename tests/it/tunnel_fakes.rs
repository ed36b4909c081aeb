//! The fake cloudflared and ngrok in `tests/it/tunnel_fakes/` (stand-ins for clients that
//! cannot be installed here, for the supervisor's tests) take exactly the command line
//! `ops::tunnels::provider::launch` builds, and their output and local APIs give the URL through
//! the provider's own discovery (`url_from_line`, `poll_url`). Run outside the sandbox: the
//! program is the script itself, and `/work` is a temporary directory.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use localhostd::config::TunnelsConfig;
use localhostd::ops::tunnels::provider::{
    self, CLIENT_DIR, Discovery, Launch, Provider, StartOptions, WORK_DIR,
};

fn fakes_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/tunnel_fakes")
}

/// `launch()`'s port source.
fn free_port() -> std::io::Result<u16> {
    Ok(crate::harness::free_port())
}

/// Ends the child when the test ends, pass or fail.
struct Running {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs what `launch` describes: the files written to `work` (standing for /work), the
/// program found in `bind_dir`, `/work` paths in argv pointing into `work`, only `l.env`.
fn run(l: &Launch, work: &Path) -> Running {
    for (name, content, _) in &l.files {
        std::fs::write(work.join(name), content).unwrap();
    }
    let inside = l.argv[0].strip_prefix(&format!("{CLIENT_DIR}/")).unwrap();
    let program = l.bind_dir.as_ref().unwrap().join(inside);
    let work_text = work.to_str().unwrap();
    let args = l.argv[1..]
        .iter()
        .map(|a| a.replacen(WORK_DIR, work_text, 1));
    let mut child = Command::new(program)
        .args(args)
        .env_clear()
        .envs(l.env.iter().map(|(k, v)| (k, v)))
        .current_dir(work)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, lines) = mpsc::channel();
    for out in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    }
    Running { child, lines }
}

/// The URL the first output line announcing one gives, and every line read until then.
fn url_from_output(
    r: &Running,
    p: Provider,
    cfg: &TunnelsConfig,
    opts: &StartOptions,
) -> (String, Vec<String>) {
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(line) = r.lines.recv_timeout(Duration::from_millis(100)) {
            if let Some(url) = provider::url_from_line(p, &line, cfg, opts) {
                return (url, seen);
            }
            seen.push(line);
        }
    }
    panic!("no URL in the output: {seen:#?}");
}

/// Polls until the client's local API gives the URL.
fn url_from_api(d: &Discovery) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match rt.block_on(provider::poll_url(d)) {
            Ok(Some(url)) => return url,
            Ok(None) | Err(_) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100))
            }
            other => panic!("no URL from {d:?}: {other:?}"),
        }
    }
}

fn target() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

#[test]
fn fake_cloudflared_quick_tunnel_matches_launch_and_discovery() {
    let cfg = TunnelsConfig::default();
    let opts = StartOptions::default();
    let binary = fakes_dir().join("cloudflared");
    let l = provider::launch(
        Provider::Cloudflared,
        &binary,
        &cfg,
        &opts,
        target(),
        &mut free_port,
    )
    .unwrap();
    assert_eq!(l.bind_dir.as_deref(), Some(fakes_dir().as_path()));
    let work = tempfile::tempdir().unwrap();
    let r = run(&l, work.path());
    let (from_line, before) = url_from_output(&r, Provider::Cloudflared, &cfg, &opts);
    assert!(
        from_line.starts_with("https://") && from_line.ends_with(".trycloudflare.com"),
        "{from_line}"
    );
    assert!(
        before
            .iter()
            .any(|l| l.contains("Requesting new quick Tunnel")),
        "{before:#?}"
    );
    assert!(matches!(l.discovery, Discovery::CloudflaredMetrics(_)));
    assert_eq!(url_from_api(&l.discovery), from_line);
}

#[test]
fn fake_cloudflared_named_tunnel_matches_launch_and_discovery() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = TunnelsConfig::default();
    std::fs::write(dir.path().join("token"), "eyJ0IjoidGVzdCJ9\n").unwrap();
    cfg.cloudflared.token_file = Some(dir.path().join("token"));
    cfg.cloudflared.hostname = "api.example.com".into();
    let opts =
        provider::options(Provider::Cloudflared, &serde_json::json!({"named": true})).unwrap();
    let l = provider::launch(
        Provider::Cloudflared,
        &fakes_dir().join("cloudflared"),
        &cfg,
        &opts,
        target(),
        &mut free_port,
    )
    .unwrap();
    let work = tempfile::tempdir().unwrap();
    let r = run(&l, work.path());
    let (from_line, _) = url_from_output(&r, Provider::Cloudflared, &cfg, &opts);
    assert_eq!(from_line, "https://api.example.com");
    assert_eq!(url_from_api(&l.discovery), "https://api.example.com");
}

#[test]
fn fake_ngrok_matches_launch_and_discovery() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = TunnelsConfig::default();
    std::fs::write(dir.path().join("authtoken"), "2fakeToken_abc\n").unwrap();
    cfg.ngrok.authtoken_file = Some(dir.path().join("authtoken"));
    for (opts, fixed) in [
        (StartOptions::default(), None),
        (
            provider::options(
                Provider::Ngrok,
                &serde_json::json!({"domain": "x.ngrok.app"}),
            )
            .unwrap(),
            Some("https://x.ngrok.app"),
        ),
    ] {
        let l = provider::launch(
            Provider::Ngrok,
            &fakes_dir().join("ngrok"),
            &cfg,
            &opts,
            target(),
            &mut free_port,
        )
        .unwrap();
        let work = tempfile::tempdir().unwrap();
        let r = run(&l, work.path());
        let (from_line, _) = url_from_output(&r, Provider::Ngrok, &cfg, &opts);
        assert!(from_line.starts_with("https://"), "{from_line}");
        if let Some(fixed) = fixed {
            assert_eq!(from_line, fixed);
        }
        assert_eq!(url_from_api(&l.discovery), from_line);
    }
}

#[test]
fn fakes_crash_when_told_to() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["cloudflared", "ngrok"] {
        std::fs::copy(fakes_dir().join(name), dir.path().join(name)).unwrap();
    }
    std::fs::write(dir.path().join("crash-after"), "0.5\n").unwrap();
    std::fs::write(dir.path().join("authtoken"), "tok\n").unwrap();
    let mut cfg = TunnelsConfig::default();
    cfg.ngrok.authtoken_file = Some(dir.path().join("authtoken"));
    for p in [Provider::Cloudflared, Provider::Ngrok] {
        let binary = dir.path().join(p.program());
        let l = provider::launch(
            p,
            &binary,
            &cfg,
            &StartOptions::default(),
            target(),
            &mut free_port,
        )
        .unwrap();
        let work = tempfile::tempdir().unwrap();
        let mut r = run(&l, work.path());
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = r.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "{p} did not crash");
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_eq!(status.code(), Some(1), "{p}");
    }
}
