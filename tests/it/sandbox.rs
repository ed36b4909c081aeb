//! The hostile-job suite: each case is an operation a job might try, run confined through
//! `POST /api/v1/exec` (and, unless it sets request limits, again as a terminal session on its
//! own pseudo-terminal) and asserted to be refused with the exact errno (or outcome), and run
//! unconfined by the test itself as a positive control that shows the same operation works
//! outside (so a sandbox that starts nothing, or a case that tests nothing, cannot pass).
//!
//! The suite runs twice: against a daemon running as root (each job gets its own uid from
//! sandbox.uid-range) and against one running as an unprivileged user (created here), where
//! user namespaces alone do the work. The controls need root; CI is root.

use std::io::Write;
use std::os::unix::net::UnixListener;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Daemon, Options, post_exec, request_as, request_json};

const PRELUDE: &str = r#"
import ctypes, os, errno, sys, socket, struct, fcntl, termios, stat
libc = ctypes.CDLL(None, use_errno=True)
def out(ok, e=0):
    print("OK" if ok else "E:" + errno.errorcode.get(e, str(e)))
def sc(nr, *a):
    r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(x) for x in a])
    out(r != -1, ctypes.get_errno())
    return r
def tryf(f):
    try:
        f()
        print("OK")
    except MemoryError:
        print("E:MemoryError")
    except OSError as e:
        print("E:" + errno.errorcode.get(e.errno, str(e.errno)))
"#;

/// One hostile operation.
struct Case {
    name: &'static str,
    /// Python code after PRELUDE; its last output line is compared.
    body: String,
    /// What the confined job must print.
    confined: &'static str,
    /// What the unconfined control must print (`!X` means anything but X).
    control: &'static str,
    /// Extra fields of the exec request (limits…).
    request: Value,
    /// Run the control inside `unshare -Urm` (an unprivileged user+mount namespace).
    control_in_userns: bool,
}

fn case(
    name: &'static str,
    body: impl Into<String>,
    confined: &'static str,
    control: &'static str,
) -> Case {
    Case {
        name,
        body: body.into(),
        confined,
        control,
        request: json!({}),
        control_in_userns: false,
    }
}

struct Env {
    db: String,
    state: String,
    port: u16,
    usock: String,
    abstract_name: String,
    daemon_pid: i32,
}

fn cases(e: &Env) -> Vec<Case> {
    let mut v = vec![
        case(
            "read /etc/shadow",
            "print('EMPTY' if open('/etc/shadow','rb').read() == b'' else 'CONTENT')",
            "EMPTY",
            "CONTENT",
        ),
        case(
            "read the daemon's database",
            format!("tryf(lambda: open('{}','rb').read(1))", e.db),
            "E:ENOENT",
            "OK",
        ),
        case(
            "list the daemon's state dir",
            format!("tryf(lambda: os.listdir('{}'))", e.state),
            "E:ENOENT",
            "OK",
        ),
        case(
            "list /root",
            "tryf(lambda: os.listdir('/root'))",
            "E:ENOENT",
            "OK",
        ),
        case(
            "list /home",
            "tryf(lambda: os.listdir('/home'))",
            "E:ENOENT",
            "OK",
        ),
        case(
            "list /run (host sockets)",
            "tryf(lambda: os.listdir('/run'))",
            "E:ENOENT",
            "OK",
        ),
        case(
            "list /sys",
            "tryf(lambda: os.listdir('/sys'))",
            "E:ENOENT",
            "OK",
        ),
        case(
            "write into /etc",
            "p='/etc/.lhd-probe'\ndef f():\n    open(p,'w').write('x')\n    os.remove(p)\ntryf(f)",
            "E:EROFS",
            "OK",
        ),
        case(
            "write into /usr/bin",
            "p='/usr/bin/.lhd-probe'\ndef f():\n    open(p,'w').write('x')\n    os.remove(p)\ntryf(f)",
            "E:EROFS",
            "OK",
        ),
        case(
            "connect to a host loopback TCP listener",
            format!(
                "tryf(lambda: socket.create_connection(('127.0.0.1', {}), timeout=2))",
                e.port
            ),
            "E:ECONNREFUSED",
            "OK",
        ),
        case(
            "connect to a host Unix socket",
            format!(
                "s = socket.socket(socket.AF_UNIX)\ntryf(lambda: s.connect('{}'))",
                e.usock
            ),
            "E:ENOENT",
            "OK",
        ),
        case(
            "connect to a host abstract Unix socket",
            format!(
                "s = socket.socket(socket.AF_UNIX)\ntryf(lambda: s.connect('\\0{}'))",
                e.abstract_name
            ),
            "E:ECONNREFUSED",
            "OK",
        ),
        case(
            "ptrace(PTRACE_TRACEME)",
            "sc(101, 0, 0, 0, 0)",
            "E:EPERM",
            "OK",
        ),
        case(
            "unshare(CLONE_NEWUSER)",
            "out(libc.unshare(0x10000000) == 0, ctypes.get_errno())",
            "E:EPERM",
            "OK",
        ),
        case(
            "unshare(CLONE_NEWNET)",
            "out(libc.unshare(0x40000000) == 0, ctypes.get_errno())",
            "E:EPERM",
            "OK",
        ),
        case(
            "clone(CLONE_NEWUSER)",
            "r = libc.syscall(ctypes.c_long(56), ctypes.c_long(0x10000000 | 17), ctypes.c_long(0), ctypes.c_long(0), ctypes.c_long(0), ctypes.c_long(0))\nif r == 0:\n    os._exit(0)\nerr = ctypes.get_errno()\nif r > 0:\n    os.waitpid(r, 0)\nout(r > 0, err)",
            "E:EPERM",
            "OK",
        ),
        case(
            "clone3 is answered ENOSYS",
            "sc(435, 0, 0)",
            "E:ENOSYS",
            "E:EINVAL",
        ),
        case(
            "keyctl(KEYCTL_GET_KEYRING_ID)",
            "sc(250, 0, -3, 0)",
            "E:EPERM",
            "OK",
        ),
        case(
            "bpf(BPF_MAP_CREATE)",
            "attr = ctypes.create_string_buffer(struct.pack('IIII', 2, 4, 4, 1) + bytes(112))\nr = libc.syscall(ctypes.c_long(321), ctypes.c_long(0), attr, ctypes.c_long(128))\nout(r >= 0, ctypes.get_errno())",
            "E:EPERM",
            "OK",
        ),
        case(
            "io_uring_setup",
            "p = ctypes.create_string_buffer(120)\nr = libc.syscall(ctypes.c_long(425), ctypes.c_long(4), p)\nout(r >= 0, ctypes.get_errno())",
            "E:EPERM",
            "OK",
        ),
        case("userfaultfd", "sc(323, 0o2000000)", "E:EPERM", "OK"),
        case(
            "personality(PER_LINUX32)",
            "sc(135, 0x0008)",
            "E:EPERM",
            "OK",
        ),
        case(
            "x32 syscall number",
            "sc(0x40000000 | 39)",
            "E:EPERM",
            "!E:EPERM",
        ),
        case(
            "TIOCSTI into the terminal",
            "fd = 0\nif len(sys.argv) > 1:\n    m, fd = os.openpty()\ntryf(lambda: fcntl.ioctl(fd, termios.TIOCSTI, b'x'))",
            "E:EPERM",
            "OK",
        ),
        case(
            "TIOCSTI with high bits set (CVE-2019-10063)",
            "fd = 0\nif len(sys.argv) > 1:\n    m, fd = os.openpty()\nb = ctypes.create_string_buffer(b'x')\nr = libc.syscall(ctypes.c_long(16), ctypes.c_long(fd), ctypes.c_long(0x100005412), b)\nout(r == 0, ctypes.get_errno())",
            "E:EPERM",
            "OK",
        ),
        case(
            "TIOCLINUX",
            "fd = 0\nif len(sys.argv) > 1:\n    m, fd = os.openpty()\nb = ctypes.create_string_buffer(b'\\x06')\nr = libc.syscall(ctypes.c_long(16), ctypes.c_long(fd), ctypes.c_long(0x541C), b)\nout(r == 0, ctypes.get_errno())",
            "E:EPERM",
            "!E:EPERM",
        ),
        case(
            "signal the daemon's pid",
            format!("tryf(lambda: os.kill({}, 0))", e.daemon_pid),
            "E:ESRCH",
            "OK",
        ),
        // The job's own pid 1 is its init (not dumpable, hidden); the host's pid 1 exists
        // (this VM denies even root its environ, so the control only shows it is there).
        case(
            "read /proc/1/environ",
            "tryf(lambda: open('/proc/1/environ','rb').read())",
            "E:ENOENT",
            "!E:ENOENT",
        ),
        case(
            "read the daemon's /proc/PID/environ",
            format!(
                "tryf(lambda: open('/proc/{}/environ','rb').read())",
                e.daemon_pid
            ),
            "E:ENOENT",
            "OK",
        ),
        case(
            "see other processes",
            format!(
                "pids = [p for p in os.listdir('/proc') if p.isdigit()]\nprint('MANY' if len(pids) > 10 or '{}' in pids else 'FEW')",
                e.daemon_pid
            ),
            "FEW",
            "MANY",
        ),
        case(
            "symlink from scratch to the daemon's database",
            format!(
                "l = os.path.join(os.environ['HOME'], 'l')\nos.symlink('{}', l)\ntryf(lambda: open(l,'rb').read(1))\nos.remove(l)",
                e.db
            ),
            "E:ENOENT",
            "OK",
        ),
        case(
            "symlink from scratch to /etc/shadow",
            "l = os.path.join(os.environ['HOME'], 's')\nos.symlink('/etc/shadow', l)\nprint('EMPTY' if open(l,'rb').read() == b'' else 'CONTENT')\nos.remove(l)",
            "EMPTY",
            "CONTENT",
        ),
        // uid 0 does not exist in the job's user namespace.
        case("setuid(0)", "tryf(lambda: os.setuid(0))", "E:EINVAL", "OK"),
        case("chroot", "tryf(lambda: os.chroot('/tmp'))", "E:EPERM", "OK"),
        case(
            "mknod a character device",
            "p = os.path.join(os.environ['HOME'], 'n')\ndef f():\n    os.mknod(p, 0o600 | stat.S_IFCHR, os.makedev(1, 3))\n    os.remove(p)\ntryf(f)",
            "E:EPERM",
            "OK",
        ),
        case(
            "setns into a network namespace",
            "fd = os.open('/proc/self/ns/net', os.O_RDONLY)\nout(libc.setns(fd, 0) == 0, ctypes.get_errno())",
            "E:EPERM",
            "OK",
        ),
        case(
            "vsock socket (the hypervisor, other VMs)",
            "tryf(lambda: socket.socket(40, socket.SOCK_STREAM))",
            "E:EPERM",
            "!E:EPERM",
        ),
        case(
            "AF_ALG socket (the kernel crypto API)",
            "tryf(lambda: socket.socket(38, socket.SOCK_SEQPACKET, 0))",
            "E:EPERM",
            "!E:EPERM",
        ),
        case(
            "modify_ldt (read the LDT)",
            "b = ctypes.create_string_buffer(16)\nr = libc.syscall(ctypes.c_long(154), ctypes.c_long(0), b, ctypes.c_long(16))\nout(r >= 0, ctypes.get_errno())",
            "E:EPERM",
            "OK",
        ),
        case(
            "raw packet socket",
            "tryf(lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW))",
            "E:EPERM",
            "OK",
        ),
        case(
            "host devices (/dev/kmsg)",
            "print('PRESENT' if os.path.exists('/dev/kmsg') else 'ABSENT')",
            "ABSENT",
            "PRESENT",
        ),
        case(
            "daemon environment visible",
            "print('LEAK' if 'lhd-env-secret' in open('/proc/self/environ','rb').read().decode('latin1') + str(os.environ) else 'CLEAN')",
            "CLEAN",
            "LEAK",
        ),
        case(
            "descriptors inherited from the daemon",
            "fds = set(os.listdir('/proc/self/fd'))\nprint('CLEAN' if fds <= {'0', '1', '2', '3'} else 'EXTRA ' + ' '.join(sorted(fds)))",
            "CLEAN",
            "!CLEAN",
        ),
    ];
    let mut mount = case(
        "mount a tmpfs",
        "out(libc.mount(b'none', b'/tmp', b'tmpfs', 0, None) == 0, ctypes.get_errno())",
        "E:EPERM",
        "OK",
    );
    mount.control_in_userns = true;
    v.push(mount);
    let mut fork = case(
        "fork bomb",
        "pids = []\ndef f():\n    for i in range(300):\n        p = os.fork()\n        if p == 0:\n            import time; time.sleep(5); os._exit(0)\n        pids.append(p)\ntryf(f)\nfor p in pids:\n    os.kill(p, 9)",
        "E:EAGAIN",
        "OK",
    );
    fork.request = json!({"limits": {"processes": 32}});
    v.push(fork);
    let mut mem = case(
        "memory bomb (1 GiB)",
        "tryf(lambda: bytearray(1 << 30))",
        "E:MemoryError",
        "OK",
    );
    mem.request = json!({"limits": {"memory_bytes": 256u64 << 20}});
    v.push(mem);
    let mut fill = case(
        "fill the disk",
        "d = os.environ['HOME']\nchunk = b'x' * (16 << 20)\ndef f():\n    for i in range(24):\n        with open(os.path.join(d, 'fill%d' % i), 'wb') as fh:\n            fh.write(chunk)\ntryf(f)\nfor i in range(24):\n    try: os.remove(os.path.join(d, 'fill%d' % i))\n    except OSError: pass",
        "E:ENOSPC",
        "OK",
    );
    fill.request = json!({"timeout_ms": 60000});
    v.push(fill);
    let mut big = case(
        "write past the file size limit",
        "p = os.path.join(os.environ['HOME'], 'big')\ndef f():\n    with open(p, 'wb') as fh:\n        fh.write(b'x' * (2 << 20))\ntryf(f)\ntry: os.remove(p)\nexcept OSError: pass",
        "E:EFBIG",
        "OK",
    );
    big.request = json!({"limits": {"file_size_bytes": 1u64 << 20}});
    v.push(big);
    v
}

fn exec(d: &Daemon, token: &str, body: &Value) -> Value {
    let r = post_exec(d, token, body);
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

/// Runs `script` with python3 as a terminal session and returns the last line it printed.
fn in_session(d: &Daemon, token: &str, script: &str) -> String {
    let r = request_json(
        d,
        "POST",
        "/api/v1/terminals",
        token,
        &json!({"argv": ["python3", "-c", script]}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_owned();
    let mut since = 0u64;
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(
            Instant::now() < deadline,
            "session {id} did not end: {seen:?}"
        );
        let o = request_as(
            &d.tcp,
            &format!("Bearer {token}"),
            "GET",
            &format!("/api/v1/terminals/{id}/output?since={since}&wait_ms=2000"),
            None,
            b"",
        );
        assert_eq!(o.status, 200, "{}", o.text());
        let o = o.json();
        since = o["next"].as_u64().unwrap();
        match o["encoding"].as_str() {
            Some("utf-8") => seen.push_str(o["data"].as_str().unwrap_or("")),
            _ => seen.push_str("<binary>"),
        }
        if !o["exit"].is_null() {
            return last_line(&seen.replace('\r', ""));
        }
    }
}

fn last_line(s: &str) -> String {
    s.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_owned()
}

fn control(c: &Case, home: &std::path::Path) -> String {
    let script = format!("{PRELUDE}\n{}", c.body);
    let mut cmd = if c.control_in_userns {
        let mut cmd = Command::new("unshare");
        cmd.args(["-Urm", "python3", "-c", &script, "control"]);
        cmd
    } else {
        let mut cmd = Command::new("python3");
        cmd.args(["-c", &script, "control"]);
        cmd
    };
    // The daemon holds inheritable descriptors (its socket-activation fds, 3 and 4, are not
    // close-on-exec), so the control gets one too instead of relying on whatever the test
    // runner happened to leak: an unconfined child sees it, a confined job must not.
    let held = std::fs::File::open("/dev/null").unwrap();
    let held_fd = std::os::fd::AsRawFd::as_raw_fd(&held);
    // SAFETY: only dup2 and fcntl, which are async-signal-safe, run between fork and exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
            // dup2 onto itself (when `held` already is fd 9) keeps close-on-exec: clear it.
            if libc::dup2(held_fd, 9) < 0 || libc::fcntl(9, libc::F_SETFD, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd
        .env("HOME", home)
        .env("LHD_TEST_SECRET", "lhd-env-secret")
        .output()
        .unwrap();
    last_line(&String::from_utf8_lossy(&out.stdout))
        + &String::from_utf8_lossy(&out.stderr)
            .lines()
            .last()
            .map(|l| format!(" [{l}]"))
            .unwrap_or_default()
}

fn matches(expected: &str, got: &str) -> bool {
    match expected.strip_prefix('!') {
        Some(not) => !got.starts_with(not),
        None => got == expected || got.starts_with(&format!("{expected} [")),
    }
}

fn need_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "the sandbox suite must run as root in CI"
    );
    eprintln!(
        "SKIPPED: the hostile-job suite needs root for its positive controls and for the per-job uids"
    );
    false
}

/// Runs the ignored test `name` (its path in this binary) again as the unprivileged test user,
/// with `flag` set in its environment, and asserts that it ran and passed.
pub fn rerun_as_test_user(name: &str, flag: &str) {
    use std::os::unix::process::CommandExt as _;
    let user = test_user();
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            name,
            "--test-threads=1",
            "--nocapture",
        ])
        .uid(user.0)
        .gid(user.1)
        .env(flag, "1")
        // root's TMPDIR may be one the test user cannot write.
        .env("TMPDIR", "/tmp")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "the unprivileged run of {name} failed:\n{text}"
    );
    assert!(
        text.contains("1 passed"),
        "the unprivileged run of {name} ran nothing:\n{text}"
    );
}

/// The unprivileged user the second run uses (created when missing).
pub fn test_user() -> (u32, u32) {
    let name = "localhostd-test";
    if Command::new("id")
        .arg("-u")
        .arg(name)
        .output()
        .is_ok_and(|o| !o.status.success())
    {
        let st = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                name,
            ])
            .status()
            .unwrap();
        assert!(st.success(), "useradd {name} failed");
    }
    let id = |flag: &str| -> u32 {
        let o = Command::new("id").arg(flag).arg(name).output().unwrap();
        String::from_utf8_lossy(&o.stdout).trim().parse().unwrap()
    };
    (id("-u"), id("-g"))
}

pub fn start_daemon(user: Option<(u32, u32)>) -> (Daemon, String) {
    let d = Daemon::start_with(Options {
        config: "[rate-limit]\nenabled = false\n".into(),
        env: vec![("LHD_TEST_SECRET".into(), "lhd-env-secret".into())],
        user,
        ..Options::default()
    });
    let token = d.admin_token();
    (d, token)
}

fn run_suite(user: Option<(u32, u32)>) {
    let (mut d, token) = start_daemon(user);
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = tcp.local_addr().unwrap().port();
    let sockdir = tempfile::tempdir().unwrap();
    let usock = sockdir.path().join("host.sock");
    let _unix = UnixListener::bind(&usock).unwrap();
    let abstract_name = format!("lhd-test-{}-{}", std::process::id(), port);
    let _abs = {
        use std::os::linux::net::SocketAddrExt;
        let addr =
            std::os::unix::net::SocketAddr::from_abstract_name(abstract_name.as_bytes()).unwrap();
        UnixListener::bind_addr(&addr).unwrap()
    };
    let env = Env {
        db: d.state_dir().join("localhostd.db").display().to_string(),
        state: d.state_dir().display().to_string(),
        port,
        usock: usock.display().to_string(),
        abstract_name,
        daemon_pid: d.pid(),
    };
    let home = tempfile::tempdir().unwrap();
    let all = cases(&env);
    assert!(all.len() >= 30, "only {} cases", all.len());
    let mut failures = Vec::new();
    let mut in_sessions = 0;
    for c in &all {
        let ctl = control(c, home.path());
        if !matches(c.control, &ctl) {
            failures.push(format!(
                "{}: control expected {} got {}",
                c.name, c.control, ctl
            ));
        }
        let mut body = json!({"argv": ["python3", "-c", format!("{PRELUDE}\n{}", c.body)], "timeout_ms": 20000});
        if let (Some(b), Some(extra)) = (body.as_object_mut(), c.request.as_object()) {
            for (k, v) in extra {
                b.insert(k.clone(), v.clone());
            }
        }
        let r = exec(&d, &token, &body);
        let got = last_line(r["stdout"].as_str().unwrap_or(""));
        if got != c.confined {
            failures.push(format!(
                "{}: confined expected {} got {:?} (status {}, stderr {:?})",
                c.name, c.confined, got, r["status"], r["stderr"]
            ));
        }
        // The same probe as an interactive session (on its own pseudo-terminal) is
        // contained the same way. Cases that set request limits are for commands only.
        if c.request.as_object().is_some_and(|m| m.is_empty()) {
            in_sessions += 1;
            let got = in_session(&d, &token, &format!("{PRELUDE}\n{}", c.body));
            if got != c.confined {
                failures.push(format!(
                    "{}: in a terminal session expected {} got {:?}",
                    c.name, c.confined, got
                ));
            }
        }
    }
    assert!(
        in_sessions >= 25,
        "only {in_sessions} cases ran in a session"
    );
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        all.len(),
        failures.join("\n")
    );
    // Each run (root, unprivileged) gets its own marker range: they run at the same time.
    let marker_base = if user.is_some() { 950_000 } else { 900_000 };
    outcome_cases(&d, &token, marker_base);
    d.stop();
}

/// Cases judged by the job's outcome rather than an errno.
fn outcome_cases(d: &Daemon, token: &str, marker_base: u32) {
    // Output flood: killed at the cap, output truncated to it.
    let r = exec(
        d,
        token,
        &json!({"argv": ["yes"], "limits": {"output_bytes": 4096}}),
    );
    assert_eq!(r["status"], "output_limit", "{r}");
    assert_eq!(r["truncated"], true);
    assert_eq!(r["stdout"].as_str().unwrap().len(), 4096);
    // The same program, unconfined, writes that much and more.
    let out = Command::new("sh")
        .args(["-c", "yes | head -c 100000 | wc -c"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "100000");

    // Sleep forever: killed at the timeout.
    let t = Instant::now();
    let r = exec(
        d,
        token,
        &json!({"argv": ["sleep", "1000"], "timeout_ms": 300}),
    );
    assert_eq!(r["status"], "timeout", "{r}");
    assert!(t.elapsed() < Duration::from_secs(5));

    // CPU spin: stopped by the CPU limit.
    let r = exec(
        d,
        token,
        &json!({"argv": ["python3", "-c", "while True: pass"], "limits": {"cpu_ms": 1000}, "timeout_ms": 20000}),
    );
    assert_eq!(r["status"], "cpu_limit", "{r}");

    // setsid + double fork to escape the timeout: nothing survives.
    let marker = marker_base + (std::process::id() % 40_000);
    let cmd = format!(
        "setsid sleep {marker} & (sleep {} &); sh -c 'sleep {}' & sleep 1000",
        marker + 1,
        marker + 2
    );
    let r = exec(d, token, &json!({"command": cmd, "timeout_ms": 500}));
    assert_eq!(r["status"], "timeout", "{r}");
    std::thread::sleep(Duration::from_millis(300));
    let survivors = |m: u32| {
        let o = Command::new("pgrep")
            .args(["-f", &format!("sleep {m}")])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).trim().to_owned()
    };
    for m in [marker, marker + 1, marker + 2] {
        assert_eq!(survivors(m), "", "sleep {m} survived the job");
    }
    // Control: the same escape unconfined does survive its parent (then we end it).
    let mut ctl = Command::new("setsid")
        .args(["sleep", &(marker + 3).to_string()])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert_ne!(survivors(marker + 3), "");
    let _ = ctl.kill();
    let _ = ctl.wait();

    // Leftovers: one job's files are gone for the next one.
    let r = exec(
        d,
        token,
        &json!({"command": "echo x > $HOME/left && echo x > /tmp/left && echo x > /dev/shm/left && echo done"}),
    );
    assert_eq!(r["stdout"], "done\n", "{r}");
    let r = exec(
        d,
        token,
        &json!({"command": "ls $HOME/left /tmp/left /dev/shm/left 2>&1 | grep -c 'No such file'"}),
    );
    assert_eq!(r["stdout"], "3\n", "{r}");
    let shared = tempfile::tempdir().unwrap();
    std::fs::write(shared.path().join("left"), "x").unwrap();
    assert!(
        shared.path().join("left").exists(),
        "control: unconfined processes share files"
    );

    // A job cannot reach the daemon's state through its socket either.
    let mut s = std::os::unix::net::UnixStream::connect(match &d.unix {
        crate::http::Target::Unix(p) => p.clone(),
        crate::http::Target::Tcp(_) => unreachable!(),
    })
    .unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
}

#[test]
fn hostile_jobs_are_refused_when_the_daemon_runs_as_root() {
    if !need_root() {
        return;
    }
    run_suite(None);
}

#[test]
fn hostile_jobs_are_refused_when_the_daemon_runs_unprivileged() {
    if !need_root() {
        return;
    }
    run_suite(Some(test_user()));
}

#[path = "sandbox_data.rs"]
mod data;
