//! Jobs on a pseudo-terminal made inside the sandbox (`Sandbox::spawn_terminal`), driven
//! through the library directly, the way the daemon's terminal sessions will drive them: a
//! shell is typed at, resized and interrupted through the master, and the terminal is shown
//! to be the job's own and as confined as every job (no_new_privs, seccomp, TIOCSTI refused,
//! only its own terminal in /dev/pts, no master in the job). Killing the job leaves no
//! process. Runs with a per-job uid as root (as the daemon does as root) and, re-executed as
//! the unprivileged test user, with the user namespace alone.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use localhostd::jobs::sandbox::{Policy, Running, Sandbox, Terminal, TerminalSize};
use tokio::time::Instant;

use crate::harness::{BIN, runtime, sandbox_policy};

const SIZE: TerminalSize = TerminalSize {
    cols: 100,
    rows: 30,
};

fn policy(argv: &[&str], run_as: Option<(u32, u32)>) -> Policy {
    Policy {
        terminal: Some(SIZE),
        ..sandbox_policy(argv, run_as)
    }
}

/// The terminal's output, read as it comes.
struct Screen<'a> {
    term: &'a Terminal,
    seen: String,
}

impl Screen<'_> {
    /// Reads until the output holds `needle` after what `expect` consumed before; returns
    /// the output up to and including it.
    async fn expect(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut buf = [0u8; 4096];
        loop {
            if let Some(at) = self.seen.find(needle) {
                let upto: String = self.seen.drain(..at + needle.len()).collect();
                return upto;
            }
            let n = tokio::time::timeout_at(deadline, self.term.read(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("no {needle:?} in the output; got {:?}", self.seen))
                .unwrap();
            assert!(n > 0, "EOF before {needle:?}; got {:?}", self.seen);
            self.seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }

    /// Reads until the terminal is hung up (every process of the job let go of it).
    async fn eof(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut buf = [0u8; 4096];
        loop {
            let n = tokio::time::timeout_at(deadline, self.term.read(&mut buf))
                .await
                .expect("the terminal was not hung up")
                .unwrap();
            if n == 0 {
                return;
            }
            self.seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }

    /// Types `line` and returns what the command printed before `marker` (which `line` must
    /// print; written as `EN''D` in the command, so the echo of the typed line never matches).
    async fn run(&mut self, line: &str, marker: &str) -> Vec<String> {
        self.term
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
        lines(&self.expect(marker).await)
    }
}

async fn start(
    sandbox: &Sandbox,
    argv: &[&str],
    run_as: Option<(u32, u32)>,
) -> (Running, Terminal) {
    let by = Instant::now() + Duration::from_secs(20);
    sandbox
        .spawn_terminal(&policy(argv, run_as), None, by)
        .await
        .unwrap()
}

async fn finish(mut running: Running) -> localhostd::jobs::sandbox::Report {
    running.exit.wait().await;
    let by = Instant::now() + Duration::from_secs(20);
    running.finish(false, by).await.unwrap()
}

/// The lines of `out` without their CR and without the shell's prompts (which the shell
/// may print before or after the echo of what was typed).
fn lines(out: &str) -> Vec<String> {
    out.split('\n')
        .map(|l| {
            let mut l = l.trim_end_matches('\r');
            while let Some(rest) = l.strip_prefix("$ ") {
                l = rest;
            }
            l.to_owned()
        })
        .collect()
}

/// Everything a terminal job shows, for one way of running the sandbox.
async fn dialogue(run_as: Option<(u32, u32)>) {
    let sandbox = Sandbox::start(BIN.into()).unwrap();

    // The wrong entry point for each kind of policy is refused.
    assert!(
        sandbox
            .spawn(&policy(&["/bin/true"], run_as), Vec::new())
            .await
            .is_err()
    );
    let mut plain = policy(&["/bin/true"], run_as);
    plain.terminal = None;
    assert!(
        sandbox
            .spawn_terminal(&plain, None, Instant::now() + Duration::from_secs(5))
            .await
            .is_err()
    );

    // A sandbox that cannot be built hands no terminal over: its report's message is the
    // error.
    let mut broken = policy(&["/bin/true"], run_as);
    broken
        .ro_binds
        .push(("/nonexistent-lhd-pty".into(), "/program".into()));
    let err = sandbox
        .spawn_terminal(&broken, None, Instant::now() + Duration::from_secs(20))
        .await
        .err()
        .expect("a sandbox with a missing bind source started");
    assert!(err.to_string().contains("/nonexistent-lhd-pty"), "{err}");

    let (running, term) = start(&sandbox, &["/bin/sh"], run_as).await;
    let mut s = Screen {
        term: &term,
        seen: String::new(),
    };
    // Typed input comes back (echoed), and so does its output.
    s.expect("$ ").await;
    term.write_all(b"echo hi\n").await.unwrap();
    // The line as typed (echoed by the terminal), then its output.
    s.expect("echo hi\r\n").await;
    let out = lines(&s.expect("hi\r\n").await);
    assert_eq!(out, ["hi", ""], "{out:?}");

    let out = s.run("tty; stty size; echo EN''D1", "END1").await;
    assert!(out.iter().any(|l| l == "/dev/pts/0"), "tty: {out:?}");
    assert!(out.iter().any(|l| l == "30 100"), "stty size: {out:?}");
    term.resize(TerminalSize {
        cols: 120,
        rows: 40,
    })
    .unwrap();
    let out = s.run("stty size; echo EN''D2", "END2").await;
    assert!(
        out.iter().any(|l| l == "40 120"),
        "stty size after resize: {out:?}"
    );
    assert!(
        term.resize(TerminalSize { cols: 0, rows: 40 }).is_err(),
        "a size without cells"
    );

    // The terminal is the job's own: its instance holds nothing else.
    let out = s
        .run("echo PTS $(ls -A /dev/pts); echo EN''D3", "END3")
        .await;
    assert!(
        out.iter().any(|l| l == "PTS 0 ptmx"),
        "ls /dev/pts: {out:?}"
    );

    // Confined like every job.
    let out = s
        .run(
            "grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status | tr -s ' \\t' ' '; echo EN''D4",
            "END4",
        )
        .await;
    assert!(out.iter().any(|l| l == "NoNewPrivs: 1"), "{out:?}");
    assert!(out.iter().any(|l| l == "Seccomp: 2"), "{out:?}");

    // Input injection is refused by seccomp (EPERM, before the kernel's own check); the
    // job can reopen its terminal and use it, but cannot make another one; it holds nothing
    // but its terminal.
    let probe = "import errno, fcntl, os, termios
def err(f):
    try:
        f()
        return 'OK'
    except OSError as e:
        return errno.errorcode[e.errno]
print('TIOCSTI', err(lambda: fcntl.ioctl(0, termios.TIOCSTI, b'x')))
def reopen(p):
    fd = os.open(p, os.O_RDWR)
    termios.tcgetattr(fd)
    os.write(fd, b'')
    os.close(fd)
print('TTY', err(lambda: reopen('/dev/tty')), err(lambda: reopen('/dev/pts/0')))
print('PTMX', err(lambda: os.open('/dev/ptmx', os.O_RDWR)), err(lambda: os.open('/dev/pts/ptmx', os.O_RDWR)))
def link(f):
    try:
        return f + '=' + os.readlink('/proc/self/fd/' + f)
    except OSError:
        return ''
print('FDS', ' '.join(filter(None, map(link, sorted(os.listdir('/proc/self/fd'), key=int)))))
print('EN' + 'D5')";
    let out = s
        .run(
            &format!("python3 -c \"$(printf '%s' '{}' | base64 -d)\"", b64(probe)),
            "END5",
        )
        .await;
    assert!(out.iter().any(|l| l == "TIOCSTI EPERM"), "{out:?}");
    assert!(out.iter().any(|l| l == "TTY OK OK"), "{out:?}");
    assert!(out.iter().any(|l| l == "PTMX EACCES EACCES"), "{out:?}");
    // 0–2 are the terminal, and nothing else is open (the listing's own descriptor is gone
    // by the time it is read).
    assert!(
        out.iter()
            .any(|l| l == "FDS 0=/dev/pts/0 1=/dev/pts/0 2=/dev/pts/0"),
        "{out:?}"
    );

    // TIOCSIG SIGINT interrupts the foreground job; the shell survives.
    s.run("echo SLE''EPING; sleep 100", "SLEEPING\r\n").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = std::time::Instant::now();
    term.signal(libc::SIGINT).unwrap();
    s.run("echo ALI''VE", "ALIVE").await;
    assert!(before.elapsed() < Duration::from_secs(30));
    assert!(
        term.signal(libc::SIGTERM).is_err(),
        "TIOCSIG takes INT, QUIT, TSTP only"
    );

    // `exit 3` hangs the terminal up and ends the job with its code.
    term.write_all(b"exit 3\n").await.unwrap();
    s.eof().await;
    let report = finish(running).await;
    assert_eq!(
        (report.kind.as_str(), report.code),
        ("exit", 3),
        "{report:?}"
    );

    // Killing the job leaves no process: every process of the sandbox (helper, init, the
    // shell and its children) is watched by pidfd, and each ends.
    let (running, term) = start(&sandbox, &["/bin/sh"], run_as).await;
    let mut s = Screen {
        term: &term,
        seen: String::new(),
    };
    s.run("sleep 1000 & sleep 1000 & echo STAR''TED", "STARTED")
        .await;
    let helper = running.exit.id() as i32;
    let tree = descendants(helper);
    assert!(tree.len() >= 4, "helper {helper}: {tree:?}");
    // Neither the helper nor init (the helper's child) holds any part of the terminal. (Only
    // root may look: init is not dumpable.)
    if nix::unistd::geteuid().is_root() {
        for pid in [helper, children(helper)[0]] {
            for fd in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap() {
                let target = std::fs::read_link(fd.unwrap().path()).unwrap_or_default();
                let t = target.to_string_lossy();
                assert!(
                    !t.contains("pts") && !t.contains("ptmx") && !t.contains("devpts"),
                    "process {pid} holds {t}"
                );
            }
        }
    }
    let watched: Vec<(i32, OwnedFd)> = std::iter::once(helper)
        .chain(tree)
        .map(|pid| (pid, pidfd(pid)))
        .collect();
    drop(running);
    for (pid, fd) in &watched {
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, 20_000) };
        assert_eq!(n, 1, "process {pid} of the killed job is still running");
    }
    s.eof().await;
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn children(pid: i32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect()
}

fn descendants(pid: i32) -> Vec<i32> {
    let mut all = Vec::new();
    let mut todo = children(pid);
    while let Some(p) = todo.pop() {
        all.push(p);
        todo.extend(children(p));
    }
    all
}

fn pidfd(pid: i32) -> OwnedFd {
    // SAFETY: pidfd_open with integer arguments.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    assert!(
        fd >= 0,
        "pidfd_open {pid}: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: the syscall returned a new descriptor, which we now own.
    unsafe { OwnedFd::from_raw_fd(fd as i32) }
}

/// As root, with a per-job uid (nobody, then the test user), as the daemon runs jobs as root;
/// then this test binary re-executed as the unprivileged test user
/// (`terminal_jobs_run_by_an_unprivileged_user`).
#[test]
fn terminal_jobs_are_real_terminals_confined_like_every_job() {
    if !nix::unistd::geteuid().is_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "the terminal tests must run as root in CI"
        );
        eprintln!("SKIPPED: per-job uids and the unprivileged run need root");
        return;
    }
    let user = crate::sandbox::test_user();
    for run_as in [(65534, 65534), user] {
        runtime().block_on(dialogue(Some(run_as)));
    }
    crate::sandbox::rerun_as_test_user(
        "pty::terminal_jobs_run_by_an_unprivileged_user",
        "LOCALHOSTD_PTY_UNPRIVILEGED",
    );
}

/// Run only by `terminal_jobs_are_real_terminals_confined_like_every_job`, as the
/// unprivileged test user: the helper keeps that uid and the user namespace does the work.
#[test]
#[ignore = "run as the unprivileged test user by terminal_jobs_are_real_terminals_confined_like_every_job"]
fn terminal_jobs_run_by_an_unprivileged_user() {
    assert!(
        std::env::var_os("LOCALHOSTD_PTY_UNPRIVILEGED").is_some()
            && !nix::unistd::geteuid().is_root(),
        "run by terminal_jobs_are_real_terminals_confined_like_every_job only"
    );
    runtime().block_on(dialogue(None));
}
