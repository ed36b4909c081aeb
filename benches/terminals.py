#!/usr/bin/env python3
"""Driver of benches/terminals.sh: keystroke round trips over our WebSocket terminals and over
ssh, measured the same way; and idle sessions held open for a memory reading.

    terminals.py rtt  --kind ours|ssh|openssh --sessions N --keys K [--warmup W] [--interval-ms I]
    terminals.py hold --kind ours|ssh|openssh --sessions N --ready-file F --stop-file S

Both kinds run /bin/sh on an 80x24 pseudo-terminal and are driven by the same loop in one
asyncio event loop: a reader task per session appends what arrives to that session's buffer,
and the typing loop sends one byte and waits until its echo is there. The keys alternate
between "a" (echoed "a") and DEL (the erase character: echoed "\\b \\b"), so the shell's line
never grows and nothing is ever run. A round trip is from just before the send to the
arrival of the whole echo (time.perf_counter_ns). Each session types one key every
--interval-ms (after the echo of the previous one, if that takes longer): a fast typist, not a
flood, so with 50 sessions the figure is the terminals' latency under 50 users, not the
client's own Python loop at full load; and the sessions are split over --procs driver
processes (default: one per CPU), each with its own event loop, since OpenSSH's client runs a
process per session. Sessions start typing at a random phase within one interval so they do
not send in lockstep.

    ours  POST /api/v1/terminals {"argv": ["/bin/sh"], "cols": 80, "rows": 24}, then
          GET /api/v1/terminals/{id}/attach (WebSocket, `websockets`); keys go as binary
          frames, the echo comes back in binary frames
    ssh   asyncssh to a local sshd with a pty request (xterm, 80x24), the command /bin/sh;
          keys go as channel data, the echo comes back as channel data
    openssh  OpenSSH's client, `ssh -tt … /bin/sh`, on an 80x24 pty of the driver's; keys are
          written to the pty, the echo is read from it

Environment: ours: BENCH_BASE (http://127.0.0.1:PORT), BENCH_TOKEN (exec scope); ssh:
BENCH_SSH_PORT, BENCH_SSH_USER, BENCH_SSH_KEY (the client's private key file).
rtt prints one JSON line: {"n", "p50_us", "p99_us", "max_us", "errors", "setup_s"}.
"""

import argparse
import asyncio
import json
import os
import random
import sys
import time
import urllib.request

KEYS = [(b"a", b"a"), (b"\x7f", b"\b \b")]
PROMPT = (b"$ ", b"# ")
SETUP_TIMEOUT = 60
ECHO_TIMEOUT = 10


class Session:
    """One terminal: a byte buffer filled by a reader, an event set on every arrival."""

    def __init__(self):
        self.buf = bytearray()
        self.arrived = asyncio.Event()
        self.closed = False

    def feed(self, data):
        self.buf += data
        self.arrived.set()

    async def wait_for(self, pred, timeout):
        deadline = time.monotonic() + timeout
        while not pred(self.buf):
            if self.closed:
                raise RuntimeError("the session closed; output: %r" % bytes(self.buf[-200:]))
            left = deadline - time.monotonic()
            if left <= 0:
                raise asyncio.TimeoutError("waited %gs; output: %r" % (timeout, bytes(self.buf[-200:])))
            self.arrived.clear()
            if pred(self.buf):
                break
            try:
                await asyncio.wait_for(self.arrived.wait(), left)
            except asyncio.TimeoutError:
                pass


# ---- ours: the terminals API over WebSocket -------------------------------------------------


def http(method, path, body=None):
    base, token = os.environ["BENCH_BASE"], os.environ["BENCH_TOKEN"]
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("Authorization", "Bearer " + token)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=30) as r:
        raw = r.read()
        return r.status, (json.loads(raw) if raw else None)


class Ours(Session):
    async def open(self):
        from websockets.asyncio.client import connect

        status, body = await asyncio.to_thread(
            http, "POST", "/api/v1/terminals", {"argv": ["/bin/sh"], "cols": 80, "rows": 24})
        if status != 201:
            raise RuntimeError("POST /api/v1/terminals: HTTP %s %s" % (status, body))
        self.id = body["id"]
        url = os.environ["BENCH_BASE"].replace("http", "ws", 1) + "/api/v1/terminals/%s/attach?write=true" % self.id
        self.ws = await connect(url, additional_headers={"Authorization": "Bearer " + os.environ["BENCH_TOKEN"]},
                                open_timeout=SETUP_TIMEOUT, compression=None)
        self.reader = asyncio.create_task(self.read())

    async def read(self):
        try:
            async for frame in self.ws:
                if isinstance(frame, bytes):
                    self.feed(frame)
        except Exception:
            pass
        self.closed = True
        self.arrived.set()

    async def send(self, data):
        await self.ws.send(data)

    async def close(self):
        await self.ws.close()
        self.reader.cancel()
        try:
            await asyncio.to_thread(http, "DELETE", "/api/v1/terminals/%s" % self.id)
        except Exception:
            pass


# ---- the peer: sshd ---------------------------------------------------------------------------


class Ssh(Session):
    async def open(self):
        import asyncssh

        outer = self

        class Client(asyncssh.SSHClientSession):
            def data_received(self, data, datatype):
                outer.feed(data)

            def connection_lost(self, exc):
                outer.closed = True
                outer.arrived.set()

        self.conn = await asyncio.wait_for(asyncssh.connect(
            "127.0.0.1", int(os.environ["BENCH_SSH_PORT"]), username=os.environ["BENCH_SSH_USER"],
            client_keys=[os.environ["BENCH_SSH_KEY"]], known_hosts=None, agent_path=None,
            compression_algs=None), SETUP_TIMEOUT)
        self.chan, _ = await self.conn.create_session(
            Client, "/bin/sh", term_type="xterm", term_size=(80, 24), encoding=None)

    async def send(self, data):
        self.chan.write(data)

    async def close(self):
        self.chan.close()
        self.conn.close()
        await self.conn.wait_closed()


class OpenSsh(Session):
    """OpenSSH's own client, `ssh -tt`, on a pseudo-terminal of the driver's: the way a user
    types into `ssh localhost`. One more terminal hop each way than with asyncssh (the local
    pty, which ssh puts in raw mode), and the C client instead of Python's."""

    async def open(self):
        import fcntl
        import pty
        import struct
        import termios

        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        os.set_blocking(master, False)
        self.master = master
        argv = ["ssh", "-tt", "-F", "/dev/null", "-p", os.environ["BENCH_SSH_PORT"],
                "-i", os.environ["BENCH_SSH_KEY"], "-l", os.environ["BENCH_SSH_USER"],
                "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=no",
                "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "127.0.0.1", "/bin/sh"]
        # The pty's slave becomes ssh's controlling terminal (setsid, then the first tty opened).
        self.proc = await asyncio.create_subprocess_exec(
            *argv, stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
        os.close(slave)
        asyncio.get_running_loop().add_reader(master, self.readable)

    def readable(self):
        try:
            data = os.read(self.master, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            self.feed(data)
        else:
            asyncio.get_running_loop().remove_reader(self.master)
            self.closed = True
            self.arrived.set()

    async def send(self, data):
        os.write(self.master, data)

    async def close(self):
        if self.proc.returncode is None:
            self.proc.terminate()
        await self.proc.wait()
        asyncio.get_running_loop().remove_reader(self.master)
        os.close(self.master)


KINDS = {"ours": Ours, "ssh": Ssh, "openssh": OpenSsh}


async def open_all(kind, n):
    sessions = [KINDS[kind]() for _ in range(n)]
    # A few at a time: creating 50 at once would measure the setup path, not typing.
    sem = asyncio.Semaphore(8)

    async def one(s):
        async with sem:
            await s.open()
            await s.wait_for(lambda b: b.endswith(PROMPT), SETUP_TIMEOUT)

    await asyncio.gather(*(one(s) for s in sessions))
    return sessions


async def close_all(sessions):
    await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)


async def type_keys(s, keys, warmup, interval, start_at, out):
    loop = asyncio.get_running_loop()
    await asyncio.sleep(max(0.0, start_at - loop.time()))
    errors = 0
    for i in range(warmup + keys):
        key, echo = KEYS[i % 2]
        next_at = loop.time() + interval
        s.buf.clear()
        t0 = time.perf_counter_ns()
        await s.send(key)
        try:
            await s.wait_for(lambda b: b.endswith(echo), ECHO_TIMEOUT)
        except (asyncio.TimeoutError, RuntimeError) as e:
            print("%s: %s" % (type(s).__name__, e), file=sys.stderr)
            errors += 1
            if s.closed:
                break
            continue
        dt = time.perf_counter_ns() - t0
        if i >= warmup:
            out.append(dt / 1000)
        await asyncio.sleep(max(0.0, next_at - loop.time()))
    return errors


def pct(sorted_vals, p):
    if not sorted_vals:
        return 0
    k = min(len(sorted_vals) - 1, max(0, int(round(p / 100 * len(sorted_vals) + 0.5)) - 1))
    return sorted_vals[k]


async def rtt_part(args, n, barrier):
    """One driver process's share: n sessions opened, then (once every process has its
    sessions open) typed into; returns (latencies in µs, errors, setup seconds)."""
    t = time.monotonic()
    sessions = await open_all(args.kind, n)
    setup = time.monotonic() - t
    lat = []
    interval = args.interval_ms / 1000
    try:
        if barrier is not None:
            await asyncio.to_thread(barrier.wait, SETUP_TIMEOUT)
        start = asyncio.get_running_loop().time() + 0.2
        errors = await asyncio.gather(*(
            type_keys(s, args.keys, args.warmup, interval, start + random.random() * interval, lat)
            for s in sessions))
    finally:
        await close_all(sessions)
    return lat, sum(errors), setup


def rtt_worker(args, n, barrier, conn):
    try:
        conn.send(("ok", asyncio.run(rtt_part(args, n, barrier))))
    except BaseException as e:  # the parent says what went wrong
        barrier.abort()
        conn.send(("error", "%s: %s" % (type(e).__name__, e)))


def rtt(args):
    """The sessions split over --procs driver processes (each its own event loop), so with
    many sessions the figure is not one Python loop's queue: OpenSSH's client row has a
    process per session, and ours and asyncssh should not be handicapped against it."""
    import multiprocessing

    procs = max(1, min(args.procs, args.sessions))
    if procs == 1:
        lat, errors, setup = asyncio.run(rtt_part(args, args.sessions, None))
    else:
        ctx = multiprocessing.get_context("fork")
        barrier = ctx.Barrier(procs)
        parts = [args.sessions // procs + (i < args.sessions % procs) for i in range(procs)]
        workers = []
        for n in parts:
            parent, child = ctx.Pipe(duplex=False)
            w = ctx.Process(target=rtt_worker, args=(args, n, barrier, child))
            w.start()
            workers.append((w, parent))
        lat, errors, setup, failed = [], 0, 0.0, []
        for w, parent in workers:
            status, res = parent.recv()
            w.join()
            if status != "ok":
                failed.append(res)
                continue
            lat += res[0]
            errors += res[1]
            setup = max(setup, res[2])
        if failed:
            raise SystemExit("driver: " + "; ".join(failed))
    lat.sort()
    print(json.dumps({"n": len(lat), "p50_us": round(pct(lat, 50)), "p99_us": round(pct(lat, 99)),
                      "max_us": round(lat[-1]) if lat else 0, "errors": errors,
                      "setup_s": round(setup, 2), "procs": procs}))


async def hold(args):
    sessions = await open_all(args.kind, args.sessions)
    try:
        with open(args.ready_file, "w") as f:
            f.write("%d\n" % len(sessions))
        deadline = time.monotonic() + args.max_seconds
        while not os.path.exists(args.stop_file) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
    finally:
        await close_all(sessions)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["rtt", "hold"])
    p.add_argument("--kind", choices=sorted(KINDS), required=True)
    p.add_argument("--sessions", type=int, default=1)
    p.add_argument("--keys", type=int, default=200, help="measured keystrokes per session")
    p.add_argument("--warmup", type=int, default=20, help="keystrokes per session not counted")
    p.add_argument("--interval-ms", type=float, default=20)
    p.add_argument("--procs", type=int, default=os.cpu_count() or 1,
                   help="driver processes the sessions are split over (rtt)")
    p.add_argument("--ready-file")
    p.add_argument("--stop-file")
    p.add_argument("--max-seconds", type=float, default=300)
    args = p.parse_args()
    if args.mode == "rtt":
        rtt(args)
    else:
        asyncio.run(hold(args))


if __name__ == "__main__":
    main()
