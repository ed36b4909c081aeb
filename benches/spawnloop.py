"""The timing loop of benches/exec.sh (see its header for what each variant is).

spawnloop.py VARIANTS.json GROUP ROUNDS SPAWNS REPORT_FILE

Prints one line per variant:
  name wall_median_us wall_p90_us start_median_us start_p90_us cpu_us start_round_medians failures
       wall_round_medians

- wall: from the request to the variant having exited and been reaped (for ours: the
  helper's pidfd turned readable and its report was read to EOF).
- start: from the request to the job's main() - the job is the static probe STAMP, which
  prints CLOCK_MONOTONIC first thing; "-" when the variant's job is not the probe.
- *_round_medians: the median of each round, comma-separated, in round order (what
  benches/exec.sh pairs round by round to compare two builds); "-" when there is none.
- cpu: user+sys of what the variant reaps (median per sample); for ours, the zygote's own
  and reaped children's CPU over the run divided by the samples (a mean, warm builds
  included).
"""
import json
import os
import select
import shutil
import socket
import sys
import time

spec, group, rounds, spawns, report = (sys.argv[1], sys.argv[2], int(sys.argv[3]),
                                       int(sys.argv[4]), sys.argv[5])
variants = json.load(open(spec))[group]
for v in variants:
    if not v[1][0].startswith("@"):
        v[1][0] = shutil.which(v[1][0]) or v[1][0]

FLAG_WARM = 2


def read_all(fd):
    out = b""
    while chunk := os.read(fd, 65536):
        out += chunk
    os.close(fd)
    return out


def stamp_of(text):
    try:
        return int(text.split()[0])
    except (ValueError, IndexError):
        return None


class Zygote:
    """The daemon's path: one `localhostd sandbox-zygote`, one request per job."""

    def __init__(self, binary, warm):
        self.sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        acts = [(os.POSIX_SPAWN_DUP2, theirs.fileno(), 3)]
        self.pid = os.posix_spawn(binary, [binary, "sandbox-zygote"], {}, file_actions=acts)
        theirs.close()
        self.null_r = os.open("/dev/null", os.O_RDONLY)
        self.null_w = os.open("/dev/null", os.O_WRONLY)
        self.out = open(report, "ab")
        self.warm = warm
        self.ready = None
        self.policies = {}

    def ticks(self):
        f = open(f"/proc/{self.pid}/stat").read().rsplit(")", 1)[1].split()
        return sum(int(x) for x in f[11:15])  # utime stime cutime cstime

    def launch(self, flags):
        """One request: returns (pid, pidfd, policy write end, stdout read end, report)."""
        pr, pw = os.pipe()
        rr, rw = os.pipe()
        orr, ow = os.pipe()
        socket.send_fds(self.sock, [bytes([flags])],
                        [self.null_r, ow, self.null_w, pr, rw])
        for fd in (pr, rw, ow):
            os.close(fd)
        msg, fds, _, _ = socket.recv_fds(self.sock, 4, 1)
        pid = int.from_bytes(msg, sys.byteorder, signed=True)
        if pid <= 0 or len(fds) != 1:
            raise RuntimeError(f"the zygote refused: {pid}")
        return pid, fds[0], pw, orr, rr

    def prepare(self, policy):
        """A warm sandbox, built before its sample starts (as the daemon's pool does)."""
        warm_line = {"run_as": policy["run_as"], "tmpfs_bytes": policy["limits"]["tmpfs_bytes"],
                     "tmpfs_inodes": policy["limits"]["tmpfs_inodes"]}
        if policy.get("mount_root"):
            warm_line["mount_root"] = policy["mount_root"]
        pid, pidfd, pw, orr, rr = self.launch(FLAG_WARM)
        os.write(pw, json.dumps(warm_line).encode() + b"\n")
        # Ready when its init waits for the policy (blocked reading the pipe).
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            try:
                kids = open(f"/proc/{pid}/task/{pid}/children").read().split()
                if kids and "pipe_read" in open(f"/proc/{kids[0]}/wchan").read():
                    break
            except OSError:
                pass
            time.sleep(0.0005)
        self.ready = (pidfd, pw, orr, rr)

    def spawn(self, policy):
        data = self.policies.get(policy)
        if data is None:
            data = self.policies[policy] = open(policy, "rb").read()
        if self.warm:
            if self.ready is None:
                self.prepare(json.loads(data))
            pidfd, pw, orr, rr = self.ready
            self.ready = None
            t0 = time.monotonic_ns()
            os.write(pw, data)
            os.close(pw)
        else:
            t0 = time.monotonic_ns()
            _, pidfd, pw, orr, rr = self.launch(0)
            os.write(pw, data)
            os.close(pw)
        p = select.poll()
        p.register(pidfd, select.POLLIN)
        p.poll()
        os.close(pidfd)
        text = read_all(rr)
        t1 = time.monotonic_ns()
        out = read_all(orr)
        self.out.write(text + b"\n")
        ok = b'"kind":"exit","code":0,' in text
        if self.warm:
            self.prepare(json.loads(data))
        stamp = stamp_of(out)
        start = (stamp - t0) / 1000.0 if stamp else None
        return (t1 - t0) / 1000.0, start, float("nan"), ok


def spawn_plain(argv, policy):
    orr, ow = os.pipe()
    acts = [
        (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
        (os.POSIX_SPAWN_DUP2, ow, 1),
        (os.POSIX_SPAWN_OPEN, 2, "/dev/null", os.O_WRONLY, 0),
        (os.POSIX_SPAWN_OPEN, 3, policy, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 4, report, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600),
    ]
    t0 = time.monotonic_ns()
    pid = os.posix_spawn(argv[0], argv, {}, file_actions=acts)
    os.close(ow)
    _, status, ru = os.wait4(pid, 0)
    t1 = time.monotonic_ns()
    out = read_all(orr)
    ok = os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    stamp = stamp_of(out)
    start = (stamp - t0) / 1000.0 if stamp else None
    return (t1 - t0) / 1000.0, start, (ru.ru_utime + ru.ru_stime) * 1e6, ok


zygotes = {}
for name, argv, _ in variants:
    if argv[0] in ("@zygote", "@zygote-warm"):
        zygotes[name] = Zygote(argv[1], warm=argv[0] == "@zygote-warm")


def spawn(name, argv, policy):
    if name in zygotes:
        return zygotes[name].spawn(policy)
    return spawn_plain(argv, policy)


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, int(-(-p * len(xs) // 100)) - 1))]


def median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


names = [v[0] for v in variants]
wall = {n: [] for n in names}
start = {n: [] for n in names}
cpu = {n: [] for n in names}
rmed = {n: [] for n in names}
wrmed = {n: [] for n in names}
fail = {n: 0 for n in names}
for v in variants:  # warm-up (page cache, binaries), not counted
    for _ in range(10):
        spawn(*v)
open(report, "w").close()
for z in zygotes.values():
    z.out.seek(0)
    z.out.truncate()
ticks0 = {n: z.ticks() for n, z in zygotes.items()}
for r in range(rounds):
    order = variants[r % len(variants):] + variants[:r % len(variants)]
    this = {n: [] for n in names}
    this_wall = {n: [] for n in names}
    for _ in range(spawns):
        for v in order:
            w, s, c, ok = spawn(*v)
            if not ok:
                fail[v[0]] += 1
            wall[v[0]].append(w)
            this_wall[v[0]].append(w)
            cpu[v[0]].append(c)
            if s is not None:
                start[v[0]].append(s)
                this[v[0]].append(s)
    for n in names:
        if this[n]:
            rmed[n].append(median(this[n]))
        if this_wall[n]:
            wrmed[n].append(median(this_wall[n]))
time.sleep(0.6)  # the zygote reaps its exited helpers every 200 ms when idle
hz = os.sysconf("SC_CLK_TCK")
for n, z in zygotes.items():
    z.out.flush()
    cpu[n] = [(z.ticks() - ticks0[n]) * 1e6 / hz / len(wall[n])]
    z.sock.close()
    os.waitpid(z.pid, 0)
for n in names:
    st = start[n]
    print(n, round(median(wall[n])), round(pct(wall[n], 90)),
          round(median(st)) if st else "-", round(pct(st, 90)) if st else "-",
          round(median(cpu[n])),
          ",".join(str(round(x)) for x in rmed[n]) or "-", fail[n],
          ",".join(str(round(x)) for x in wrmed[n]) or "-")
