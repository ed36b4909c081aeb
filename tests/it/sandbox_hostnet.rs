//! Confined services (a public tunnel's client), driven through `localhostd::jobs::sandbox`
//! directly: a job that keeps the host's network namespace (`Policy::host_network`) reaches
//! a listener on the host's loopback only on the TCP ports landlock lets it connect to, binds
//! only the ports it may bind, still sees neither the daemon's state nor the host's /run nor
//! the host's abstract Unix sockets, runs as `nobody` inside when asked (`inside_id`), runs a
//! client bound read-only at a fixed path, and leaves no process behind when ended. A job
//! without `host_network` has its own loopback. `Executor::start_service` leases a uid of
//! `sandbox.uid-range` (as root) and gives it back.
//!
//! As root each job runs as `nobody` outside (as the daemon's per-job uids do); run by an
//! unprivileged user (`cargo test` as that user), the helper keeps that user's uid and the
//! same cases run, but for the uid lease (root only).

use std::io::Read;
use std::net::TcpListener;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use localhostd::jobs::sandbox::{NOBODY_ID, NetPorts, Policy, Report, Running, Sandbox, Warm};
use tokio::io::{AsyncBufReadExt, AsyncReadExt};
use tokio::time::Instant;

use crate::harness::{BIN, free_port, runtime, sandbox_policy};

fn as_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The uid/gid jobs run as outside: `nobody` as root (never uid 0), else our own.
fn run_as() -> Option<(u32, u32)> {
    as_root().then_some((NOBODY_ID, NOBODY_ID))
}

/// A confined service's policy: `script` run by bash, the host's network, the given ports.
fn service(script: &str, ports: Option<NetPorts>) -> Policy {
    let mut p = sandbox_policy(&["/bin/bash", "-c", script], run_as());
    p.host_network = true;
    p.net_ports = ports;
    p
}

/// Runs `policy` to its end: its stdout and stderr, and the report.
async fn run(sandbox: &Sandbox, policy: &Policy) -> (String, String, Report) {
    let mut running = sandbox.spawn(policy, Vec::new()).await.unwrap();
    let (mut out, mut err) = (String::new(), String::new());
    let (a, b) = tokio::join!(
        running.stdout.read_to_string(&mut out),
        running.stderr.read_to_string(&mut err)
    );
    a.unwrap();
    b.unwrap();
    running.exit.wait().await;
    let report = running
        .finish(false, Instant::now() + Duration::from_secs(30))
        .await
        .unwrap();
    (out, err, report)
}

/// Runs `script` unconfined (the positive control): its stdout and stderr together.
fn control(script: &str) -> String {
    let o = Command::new("/bin/bash")
        .args(["-c", script])
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn exited_ok(what: &str, report: &Report, out: &str, err: &str) {
    assert_eq!(
        (report.kind.as_str(), report.code),
        ("exit", 0),
        "{what}: {report:?}\nstdout: {out}\nstderr: {err}"
    );
    assert_eq!(report.landlock, "full", "{what}: {report:?}");
}

/// Connects to each port on the host's loopback, saying which worked; errors go to stdout.
/// Exits 0 either way.
fn connect_script(ports: &[u16]) -> String {
    let mut script: String = ports
        .iter()
        .map(|p| format!("(exec 3<>/dev/tcp/127.0.0.1/{p}) 2>&1 && echo \"{p}: connected\"\n"))
        .collect();
    script.push_str("true\n");
    script
}

#[test]
fn a_host_network_job_connects_and_binds_only_the_ports_it_is_given() {
    runtime().block_on(async {
        let sandbox = Sandbox::start(BIN.into()).unwrap();
        let allowed = TcpListener::bind("127.0.0.1:0").unwrap();
        let other = TcpListener::bind("127.0.0.1:0").unwrap();
        let (a, b) = (
            allowed.local_addr().unwrap().port(),
            other.local_addr().unwrap().port(),
        );
        let script = connect_script(&[a, b]);
        // Control: both listeners take a connection from the host.
        let ctl = control(&script);
        assert!(
            ctl.contains(&format!("{a}: connected")) && ctl.contains(&format!("{b}: connected")),
            "{ctl}"
        );

        let ports = NetPorts {
            connect: vec![a],
            bind: vec![],
        };
        let (out, err, report) = run(&sandbox, &service(&script, Some(ports))).await;
        exited_ok("connect", &report, &out, &err);
        assert!(out.contains(&format!("{a}: connected")), "{out}");
        assert!(!out.contains(&format!("{b}: connected")), "{out}");
        assert!(out.contains("Permission denied"), "{out}");

        // Without a port rule the host's network is all there.
        let (out, err, report) = run(&sandbox, &service(&script, None)).await;
        exited_ok("no rule", &report, &out, &err);
        assert!(out.contains(&format!("{b}: connected")), "{out}");

        // Binding: only the listed port.
        let (p1, p2) = (free_port(), free_port());
        let bind = format!(
            "python3 -c '{}' {p1} {p2}",
            "import socket, errno, sys\n\
             for p in sys.argv[1:]:\n\
             \x20   s = socket.socket()\n\
             \x20   try:\n\
             \x20       s.bind((\"127.0.0.1\", int(p))); print(p, \"bound\")\n\
             \x20   except OSError as e:\n\
             \x20       print(p, errno.errorcode[e.errno])\n"
        );
        let ctl = control(&bind);
        assert_eq!(ctl, format!("{p1} bound\n{p2} bound\n"), "control");
        let ports = NetPorts {
            connect: vec![],
            bind: vec![p1],
        };
        let (out, err, report) = run(&sandbox, &service(&bind, Some(ports))).await;
        exited_ok("bind", &report, &out, &err);
        assert_eq!(out, format!("{p1} bound\n{p2} EACCES\n"), "{err}");
        // An empty connect list refuses every TCP connection.
        let ports = NetPorts::default();
        let (out, _, _) = run(&sandbox, &service(&script, Some(ports))).await;
        assert!(!out.contains("connected"), "{out}");
        drop((allowed, other));
    });
}

#[test]
fn a_job_without_host_network_has_its_own_loopback() {
    runtime().block_on(async {
        let sandbox = Sandbox::start(BIN.into()).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let script = connect_script(&[port]);
        assert!(control(&script).contains("connected"), "control");
        let mut p = service(&script, None);
        p.host_network = false;
        let (out, err, report) = run(&sandbox, &p).await;
        exited_ok("own loopback", &report, &out, &err);
        assert!(!out.contains("connected"), "{out}");
        assert!(out.contains("Connection refused"), "{out}");
    });
}

#[test]
fn a_host_network_job_sees_no_state_no_run_and_no_host_abstract_socket() {
    runtime().block_on(async {
        let sandbox = Sandbox::start(BIN.into()).unwrap();
        let state = tempfile::tempdir().unwrap();
        std::fs::write(state.path().join("localhostd.db"), "secret").unwrap();
        let name = format!("lhd-hostnet-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let _abstract = std::os::unix::net::UnixListener::bind_addr(&addr).unwrap();
        let py = format!(
            "import socket, errno\n\
             s = socket.socket(socket.AF_UNIX)\n\
             try:\n\
             \x20   s.connect(\"\\0{name}\"); print(\"abstract: connected\")\n\
             except OSError as e:\n\
             \x20   print(\"abstract:\", errno.errorcode[e.errno])\n"
        );
        let script = format!(
            "ls {s} >/dev/null 2>&1 || echo 'state: unreachable'\n\
             ls /run >/dev/null 2>&1 || echo 'run: unreachable'\n\
             python3 -c '{py}'\n",
            s = state.path().display(),
        );
        let ctl = control(&script);
        assert!(
            !ctl.contains("state:") && !ctl.contains("run:") && ctl.contains("abstract: connected"),
            "control: {ctl}"
        );
        let (out, err, report) = run(&sandbox, &service(&script, None)).await;
        exited_ok("hidden", &report, &out, &err);
        assert_eq!(
            out, "state: unreachable\nrun: unreachable\nabstract: EPERM\n",
            "{err}"
        );
    });
}

#[test]
fn a_job_can_be_nobody_inside() {
    runtime().block_on(async {
        let sandbox = Sandbox::start(BIN.into()).unwrap();
        let script = "id -u; id -g; getent passwd 65534 >/dev/null && echo 'passwd: found'; \
                      stat -c %u /work; echo x > /work/f && echo 'scratch: writable'";
        let mut p = service(script, None);
        p.inside_id = Some(NOBODY_ID);
        let (out, err, report) = run(&sandbox, &p).await;
        exited_ok("nobody", &report, &out, &err);
        assert_eq!(
            out, "65534\n65534\npasswd: found\n65534\nscratch: writable\n",
            "{err}"
        );
        // The usual id otherwise.
        let (out, _, _) = run(&sandbox, &service("id -u", None)).await;
        assert_eq!(out, "1000\n");
        // Never 0.
        p.inside_id = Some(0);
        let e = sandbox.spawn(&p, Vec::new()).await.err().unwrap();
        assert!(e.to_string().contains("uid 0"), "{e}");

        // A warm sandbox (built with the usual id and a network namespace of its own) takes
        // neither a host-network job nor one with another id inside; port rules alone fit.
        let w = sandbox
            .warm(Warm {
                run_as: run_as(),
                tmpfs_bytes: 1 << 20,
                tmpfs_inodes: 64,
                mount_root: None,
            })
            .await
            .unwrap();
        let plain = sandbox_policy(&["/bin/true"], run_as());
        let mut nobody = plain.clone();
        nobody.inside_id = Some(NOBODY_ID);
        let mut ported = plain.clone();
        ported.net_ports = Some(NetPorts::default());
        assert!(w.fits(&plain) && w.fits(&ported));
        assert!(!w.fits(&service("true", None)) && !w.fits(&nobody));
        assert!(w.start(&nobody, Vec::new()).is_err());
    });
}

#[test]
fn a_client_bound_read_only_at_a_fixed_path_runs() {
    runtime().block_on(async {
        let sandbox = Sandbox::start(BIN.into()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        // The job's uid (nobody, as root) must be able to enter it: 0755, as a package's is.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let client = dir.path().join("client");
        std::fs::write(&client, "#!/bin/sh\necho \"client ran: $1 as $(id -u)\"\n").unwrap();
        std::fs::set_permissions(&client, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut p = sandbox_policy(&["/tunnel-client/client", "-R"], run_as());
        p.host_network = true;
        p.inside_id = Some(NOBODY_ID);
        p.net_ports = Some(NetPorts::default());
        p.ro_binds = vec![(dir.path().display().to_string(), "/tunnel-client".into())];
        let (out, err, report) = run(&sandbox, &p).await;
        exited_ok("client", &report, &out, &err);
        assert_eq!(out, "client ran: -R as 65534\n", "{err}");
        // Read-only.
        p.argv = vec![
            "/bin/sh".into(),
            "-c".into(),
            "echo x > /tunnel-client/client 2>/dev/null || echo 'client: read-only'".into(),
        ];
        let (out, _, _) = run(&sandbox, &p).await;
        assert_eq!(out, "client: read-only\n");
        assert!(
            std::fs::read_to_string(&client)
                .unwrap()
                .contains("client ran")
        );
    });
}

/// Host processes whose command line holds `marker`.
fn processes_with(marker: &str) -> Vec<i32> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let mut cmdline = Vec::new();
        if std::fs::File::open(e.path().join("cmdline"))
            .and_then(|mut f| f.read_to_end(&mut cmdline))
            .is_ok()
            && String::from_utf8_lossy(&cmdline)
                .replace('\0', " ")
                .contains(marker)
        {
            found.push(pid);
        }
    }
    found
}

#[test]
fn ending_a_host_network_job_leaves_no_process() {
    runtime().block_on(async {
        let sandbox = Sandbox::start(BIN.into()).unwrap();
        let marker = format!("{}", 700_000 + std::process::id() % 100_000);
        let script = format!("sleep {marker} & setsid sleep {marker} & echo started; wait");
        let mut running: Running = sandbox
            .spawn(&service(&script, None), Vec::new())
            .await
            .unwrap();
        let mut lines = tokio::io::BufReader::new(&mut running.stdout).lines();
        let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(first.as_deref(), Some("started"));
        // Control: the background sleeps are there while the job runs.
        let seen = format!("sleep {marker}");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while processes_with(&seen).len() < 2 {
            assert!(std::time::Instant::now() < deadline, "the sleeps never ran");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let report = running
            .finish(true, Instant::now() + Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(report.kind, "killed", "{report:?}");
        assert_eq!(processes_with(&seen), Vec::<i32>::new(), "a sleep survived");
    });
}

/// The uid a host process runs as (the real one, from /proc/PID/status).
fn uid_of(pid: u32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn start_service_leases_a_uid_of_the_range_and_gives_it_back() {
    if !as_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "the uid lease test must run as root in CI"
        );
        eprintln!("SKIPPED: uids of sandbox.uid-range are leased only when the daemon is root");
        return;
    }
    runtime().block_on(async {
        use localhostd::config::{Config, LiveConfig};
        let dir = tempfile::tempdir().unwrap();
        let cfg = Config::default();
        let first = cfg.sandbox.uid_range.first;
        let live = Arc::new(LiveConfig::new(cfg));
        let db = localhostd::store::db::Db::open(&dir.path().join("t.db"), 1).unwrap();
        let metrics =
            localhostd::ops::metrics::Metrics::new(db.clone(), live.clone(), dir.path().into())
                .unwrap();
        let pins = Arc::new(localhostd::store::pins::BlobPins::default());
        let files = localhostd::store::files::Files::new(
            db.clone(),
            live.clone(),
            dir.path().join("files"),
            pins,
        );
        let views = localhostd::store::views::Views::open(dir.path().join("mounts"), files.clone())
            .unwrap();
        let data = localhostd::jobs::data::Data::new(files, views, live.clone());
        let exec = localhostd::jobs::exec::Executor::new(
            Sandbox::start(BIN.into()).unwrap(),
            db,
            live,
            None,
            metrics,
            data,
        );
        let mut policy = service("echo up; exec sleep 1000", None);
        policy.run_as = None; // filled from the lease
        policy.allow_degraded = true; // overwritten by the live config (off)
        let mut one = exec.start_service(policy.clone()).await.unwrap();
        let two = exec.start_service(policy.clone()).await.unwrap();
        assert_eq!((one.uid(), two.uid()), (Some(first), Some(first + 1)));
        let mut lines = tokio::io::BufReader::new(&mut one.running.stdout).lines();
        let up = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(up.as_deref(), Some("up"));
        assert_eq!(uid_of(one.running.exit.id()), first, "the helper's uid");
        let report = one
            .running
            .finish(true, Instant::now() + Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(report.kind, "killed", "{report:?}");
        drop(one);
        // Its uid is free again; the other's is still taken.
        let three = exec.start_service(policy.clone()).await.unwrap();
        assert_eq!(three.uid(), Some(first));
        drop((two, three));
        let mut four = exec.start_service(policy).await.unwrap();
        assert_eq!(four.uid(), Some(first));
        let report = four
            .running
            .finish(true, Instant::now() + Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(report.kind, "killed", "{report:?}");
    });
}
