//! Jobs on data, driven through `localhostd::jobs::sandbox` directly: read-only mounts and
//! writable copies from a mount root bound out of the job's sight, inline files in its cwd,
//! and the directories it leaves handed back (`Running::collected`), in a sandbox built for
//! the job and in a warm one. Run as root with per-job uids (nobody, then the test user),
//! then re-executed as the unprivileged test user (the daemon's own uid runs the job).

use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use localhostd::jobs::sandbox::{InlineFile, JobMount, Policy, Report, Running, Sandbox, Warm};
use tokio::time::Instant;

use crate::harness::{BIN, runtime, sandbox_policy};

/// The job: every line it prints is checked by `check_output`.
const SCRIPT: &str = r#"
cat /data/a.csv
(echo x > /data/a.csv) 2>&1 | sed 's/.*: //'
ls /.mounts >/dev/null 2>&1 || echo "mount root: hidden"
cat /data/leak >/dev/null 2>&1 || echo "leak: unreachable"
cat /data/up/secret.txt >/dev/null 2>&1 || echo "up: no secret"
test -f /data/up/data/a.csv && echo "up: the job's own root"
cmp -s /data/evil /etc/passwd && echo "evil: the job's own /etc/passwd"
cat /data/sub/b.txt
echo "main: $(cat /work/main.py) $(stat -c %a /work/main.py)"
echo "tool: $(stat -c %a /work/bin/tool.sh) dir $(stat -c %a /work/bin)"
/work/bin/tool.sh
cat /rw/a.csv | head -1
test -e /rw/evil || test -L /rw/evil || echo "rw: no symlink copied"
test -e /rw/fifo || echo "rw: no fifo copied"
echo "rw: $(stat -c %a /rw/sub) $(stat -c %a /rw/run.sh)"
echo changed > /rw/a.csv && echo new > /rw/new.txt && echo "rw: writable"
mkdir -p /work/out/deep && echo result > /work/out/deep/r.txt && echo "out: written"
"#;

const EXPECTED: &[&str] = &[
    "1,2",
    "3,4",
    "Read-only file system",
    "mount root: hidden",
    "leak: unreachable",
    "up: no secret",
    "up: the job's own root",
    "evil: the job's own /etc/passwd",
    "inner",
    "main: print(1) 644",
    "tool: 755 dir 755",
    "tool ran",
    "1,2",
    "rw: no symlink copied",
    "rw: no fifo copied",
    "rw: 755 755",
    "rw: writable",
    "out: written",
];

/// A mount root under a directory only root (or the test user) may enter, as the state
/// directory is: the job's uid could not reach it by its path.
struct Fixture {
    _base: tempfile::TempDir,
    root: PathBuf,
}

fn fixture() -> Fixture {
    let base = tempfile::tempdir().unwrap();
    std::fs::set_permissions(base.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let root = base.path().join("mounts");
    let v1 = root.join("views/v1");
    std::fs::create_dir_all(v1.join("sub")).unwrap();
    for d in [&root, &root.join("views"), &v1, &v1.join("sub")] {
        let mode = if d == &root { 0o711 } else { 0o755 };
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let file = |p: &Path, text: &str, mode: u32| {
        std::fs::write(p, text).unwrap();
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    file(&v1.join("a.csv"), "1,2\n3,4\n", 0o644);
    file(&v1.join("sub/b.txt"), "inner\n", 0o644);
    file(&v1.join("run.sh"), "#!/bin/sh\necho run\n", 0o755);
    file(&root.join("secret.txt"), "mount root secret\n", 0o644);
    let link =
        |target: &str, name: &str| std::os::unix::fs::symlink(target, v1.join(name)).unwrap();
    link("/etc/passwd", "evil");
    link("..", "up");
    link(&root.join("secret.txt").display().to_string(), "leak");
    std::os::unix::fs::symlink("v1", root.join("views/linked")).unwrap();
    nix::unistd::mkfifo(
        &v1.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    Fixture { _base: base, root }
}

fn data_policy(root: &Path, run_as: Option<(u32, u32)>) -> Policy {
    let mut p = sandbox_policy(&["/bin/sh", "-c", SCRIPT], run_as);
    p.limits.tmpfs_inodes = 256;
    p.mount_root = Some(root.display().to_string());
    p.mounts = vec![
        JobMount {
            source: "views/v1".into(),
            inside: "/data".into(),
            writable: false,
            size_bytes: 0,
            inodes: 0,
        },
        JobMount {
            source: "views/v1".into(),
            inside: "/rw".into(),
            writable: true,
            size_bytes: 1 << 20,
            inodes: 64,
        },
    ];
    p.files = vec![
        InlineFile {
            name: "main.py".into(),
            content: b"print(1)".to_vec(),
            executable: false,
            private: false,
        },
        InlineFile {
            name: "bin/tool.sh".into(),
            content: b"#!/bin/sh\necho tool ran\n".to_vec(),
            executable: true,
            private: false,
        },
    ];
    p.collect = vec!["/work/out".into(), "/rw".into(), "/work/missing".into()];
    p
}

async fn output_and_report(mut running: Running, kill: bool) -> (String, Report, Running) {
    let mut out = String::new();
    if !kill {
        tokio::io::AsyncReadExt::read_to_string(&mut running.stdout, &mut out)
            .await
            .unwrap();
        running.exit.wait().await;
    }
    let by = Instant::now() + Duration::from_secs(30);
    let report = running.finish(kill, by).await.unwrap();
    (out, report, running)
}

/// Reads `rel` beneath a collected directory, without following a symlink.
fn read_beneath(dir: &OwnedFd, rel: &str) -> String {
    use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS);
    let fd = nix::fcntl::openat2(dir, rel, how).unwrap_or_else(|e| panic!("{rel}: {e}"));
    let mut s = String::new();
    std::fs::File::from(fd).read_to_string(&mut s).unwrap();
    s
}

fn check_run(how: &str, out: &str, report: &Report, running: &mut Running) {
    assert_eq!(
        (report.kind.as_str(), report.code),
        ("exit", 0),
        "{how}: {report:?}\n{out}"
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines, EXPECTED, "{how}");
    let collected = running.collected();
    let paths: Vec<&str> = collected.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        paths,
        ["/work/out", "/rw"],
        "{how}: the missing one is skipped"
    );
    assert_eq!(
        read_beneath(&collected[0].1, "deep/r.txt"),
        "result\n",
        "{how}"
    );
    assert_eq!(read_beneath(&collected[1].1, "a.csv"), "changed\n", "{how}");
    assert_eq!(read_beneath(&collected[1].1, "new.txt"), "new\n", "{how}");
    assert_eq!(
        read_beneath(&collected[1].1, "sub/b.txt"),
        "inner\n",
        "{how}"
    );
    assert!(running.collected().is_empty(), "{how}: taken once");
}

async fn data_jobs(run_as: Option<(u32, u32)>) {
    let fx = fixture();
    let sandbox = Sandbox::start(BIN.into()).unwrap();
    let policy = data_policy(&fx.root, run_as);

    // Built for the job.
    let running = sandbox.spawn(&policy, Vec::new()).await.unwrap();
    let (out, report, mut running) = output_and_report(running, false).await;
    check_run("cold", &out, &report, &mut running);

    // The same job in a warm sandbox built with the mount root.
    let warm = Warm {
        run_as,
        tmpfs_bytes: 1 << 20,
        tmpfs_inodes: 64,
        mount_root: Some(fx.root.display().to_string()),
    };
    let w = sandbox.warm(warm.clone()).await.unwrap();
    assert!(w.fits(&policy));
    let running = w.start(&policy, Vec::new()).unwrap();
    let (out, report, mut running) = output_and_report(running, false).await;
    check_run("warm", &out, &report, &mut running);

    // A warm sandbox built with the mount root runs a job without mounts as before, the
    // mount root gone; one built without it (or with another) does not take a job with
    // mounts.
    let w = sandbox.warm(warm.clone()).await.unwrap();
    let plain = sandbox_policy(
        &[
            "/bin/sh",
            "-c",
            "ls /.mounts 2>&1 || echo gone; echo hi > x && cat x",
        ],
        run_as,
    );
    let (out, report, _) = output_and_report(w.start(&plain, Vec::new()).unwrap(), false).await;
    assert_eq!(report.kind, "exit", "{report:?}");
    assert!(out.ends_with("gone\nhi\n"), "{out}");
    // Built for a job with files but no mounts: no mount root either.
    let mut files_only = plain.clone();
    files_only.mount_root = policy.mount_root.clone();
    files_only.argv[2] = "ls /.mounts 2>&1 || echo gone; cat main.py".into();
    files_only.files = policy.files.clone();
    let (out, report, _) =
        output_and_report(sandbox.spawn(&files_only, Vec::new()).await.unwrap(), false).await;
    assert_eq!(report.kind, "exit", "{report:?}");
    assert!(out.ends_with("gone\nprint(1)"), "{out}");

    // A view made after the warm sandbox was built is there for its job: the mount root is
    // bound, not copied.
    let w = sandbox.warm(warm.clone()).await.unwrap();
    let late = fx.root.join("views/late");
    std::fs::create_dir(&late).unwrap();
    std::fs::set_permissions(&late, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(late.join("n.txt"), "late\n").unwrap();
    std::fs::set_permissions(late.join("n.txt"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut later = sandbox_policy(&["/bin/cat", "/late/n.txt"], run_as);
    later.mount_root = policy.mount_root.clone();
    later.mounts = vec![JobMount {
        source: "views/late".into(),
        inside: "/late".into(),
        writable: false,
        size_bytes: 0,
        inodes: 0,
    }];
    let (out, report, _) = output_and_report(w.start(&later, Vec::new()).unwrap(), false).await;
    assert_eq!(
        (report.kind.as_str(), out.as_str()),
        ("exit", "late\n"),
        "{report:?}"
    );
    let other = sandbox
        .warm(Warm {
            mount_root: None,
            ..warm.clone()
        })
        .await
        .unwrap();
    assert!(!other.fits(&policy) && other.fits(&plain));

    // A killed job hands nothing back.
    let mut sleeper = policy.clone();
    sleeper.argv = vec![
        "/bin/sh".into(),
        "-c".into(),
        "mkdir /work/out; sleep 30".into(),
    ];
    let running = sandbox.spawn(&sleeper, Vec::new()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, report, mut running) = output_and_report(running, true).await;
    assert_eq!(report.kind, "killed", "{report:?}");
    assert!(running.collected().is_empty());

    // A mount source that leaves its folder is refused before anything runs; one that is a
    // symlink (even to a sibling) fails the sandbox.
    let mut up = policy.clone();
    up.mounts[0].source = "views/v1/../..".into();
    let err = sandbox.spawn(&up, Vec::new()).await.err().unwrap();
    assert!(err.to_string().contains("plain relative"), "{err}");
    let mut linked = policy.clone();
    linked.mounts[0].source = "views/linked".into();
    let running = sandbox.spawn(&linked, Vec::new()).await.unwrap();
    let (_, report, mut running) = output_and_report(running, false).await;
    assert_eq!(report.kind, "error", "{report:?}");
    assert!(
        report.message.contains("mount source views/linked"),
        "{report:?}"
    );
    assert!(running.collected().is_empty());

    // A writable mount too small for its source fails the sandbox rather than the job.
    let mut small = policy.clone();
    small.mounts[1].inodes = 2;
    let (_, report, _) =
        output_and_report(sandbox.spawn(&small, Vec::new()).await.unwrap(), false).await;
    assert_eq!(report.kind, "error", "{report:?}");
    assert!(
        report.message.contains("writable mount at /rw"),
        "{report:?}"
    );
}

/// As root with per-job uids (nobody, then the test user), as the daemon runs jobs as root;
/// then re-executed as the unprivileged test user (`data_jobs_run_by_an_unprivileged_user`).
#[test]
fn jobs_see_their_mounts_and_files_and_hand_back_what_they_leave() {
    if !nix::unistd::geteuid().is_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "the sandbox data tests must run as root in CI"
        );
        eprintln!("SKIPPED: per-job uids and the unprivileged run need root");
        return;
    }
    let user = super::test_user();
    for run_as in [(65534, 65534), user] {
        runtime().block_on(data_jobs(Some(run_as)));
    }
    super::rerun_as_test_user(
        "sandbox::data::data_jobs_run_by_an_unprivileged_user",
        "LOCALHOSTD_DATA_UNPRIVILEGED",
    );
}

/// Run only by `jobs_see_their_mounts_and_files_and_hand_back_what_they_leave`, as the
/// unprivileged test user: the helper keeps that uid.
#[test]
#[ignore = "run as the unprivileged test user by jobs_see_their_mounts_and_files_and_hand_back_what_they_leave"]
fn data_jobs_run_by_an_unprivileged_user() {
    assert!(
        std::env::var_os("LOCALHOSTD_DATA_UNPRIVILEGED").is_some()
            && !nix::unistd::geteuid().is_root(),
        "run by jobs_see_their_mounts_and_files_and_hand_back_what_they_leave only"
    );
    runtime().block_on(data_jobs(None));
}
