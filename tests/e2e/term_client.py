#!/usr/bin/env python3
"""A terminal session driven over WebSocket, as a user's client would: for tests run outside
cargo (tests/e2e/run.sh, through nginx; Debian 12's curl has no WebSocket).

    term_client.py --base http://127.0.0.1:80      # token in LOCALHOSTD_TOKEN (exec scope)

It creates a session (POST /api/v1/terminals, /bin/sh on an 80x24 terminal), attaches
(GET /api/v1/terminals/{id}/attach?write=true, upgraded to WebSocket, the token as a bearer
token, asking for the keyboard), types a command and reads its output back, resizes (a JSON
text frame) and checks `stty size`, types `exit 3` and checks the exit message the server
sends, then deletes the session. The first
thing that goes wrong ends it with exit status 1 and one line saying what, with the end of the
terminal's output for context. Needs `websockets` (tests/e2e/requirements.txt).

The token comes from the environment, not the command line, so `ps` does not show it.
"""

import argparse
import asyncio
import json
import os
import random
import re
import sys
import urllib.error
import urllib.request

try:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed, InvalidStatus
except ImportError:
    sys.exit("term_client: FAIL: python module websockets missing: pip install -r tests/e2e/requirements.txt")


class Failure(Exception):
    pass


def api(base, token, method, path, body=None, timeout=20):
    """One HTTP request; returns (status, parsed JSON or None)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("Authorization", "Bearer " + token)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
            status = r.status
    except urllib.error.HTTPError as e:
        raw = e.read()
        status = e.code
    except OSError as e:
        raise Failure("%s %s: %s" % (method, path, e))
    try:
        return status, (json.loads(raw) if raw else None)
    except ValueError:
        return status, raw.decode("utf-8", "replace")


class Terminal:
    """The attached WebSocket: binary frames are the terminal's bytes, text frames JSON."""

    def __init__(self, ws, timeout):
        self.ws = ws
        self.timeout = timeout
        self.out = bytearray()
        self.controls = []

    async def type(self, text):
        await self.ws.send(text.encode())

    async def control(self, msg):
        await self.ws.send(json.dumps(msg))

    async def _recv_one(self, deadline):
        loop = asyncio.get_running_loop()
        left = deadline - loop.time()
        if left <= 0:
            raise asyncio.TimeoutError
        frame = await asyncio.wait_for(self.ws.recv(), left)
        if isinstance(frame, bytes):
            self.out += frame
        else:
            try:
                self.controls.append(json.loads(frame))
            except ValueError:
                raise Failure("a text frame that is not JSON: %r" % frame[:200])

    async def expect(self, pattern, what, start=0):
        """Waits until the output from offset `start` on matches `pattern` (bytes regex)."""
        deadline = asyncio.get_running_loop().time() + self.timeout
        rx = re.compile(pattern)
        while True:
            m = rx.search(self.out, start)
            if m:
                return m
            try:
                await self._recv_one(deadline)
            except asyncio.TimeoutError:
                raise Failure("no %s within %gs" % (what, self.timeout))
            except ConnectionClosed as e:
                raise Failure("the WebSocket closed while waiting for %s: %s" % (what, e))

    async def expect_exit(self):
        """The exit control message; afterwards the server may close the socket."""
        deadline = asyncio.get_running_loop().time() + self.timeout
        while True:
            for c in self.controls:
                if c.get("type") == "exit":
                    return c
            try:
                await self._recv_one(deadline)
            except asyncio.TimeoutError:
                raise Failure("no exit message within %gs (control frames: %s)" % (self.timeout, self.controls))
            except ConnectionClosed as e:
                for c in self.controls:
                    if c.get("type") == "exit":
                        return c
                raise Failure("the WebSocket closed without an exit message: %s (control frames: %s)" % (e, self.controls))

    def tail(self):
        return bytes(self.out[-400:]).decode("utf-8", "replace")


def exit_status(msg):
    """The exit code in the server's exit message, whatever the field is called."""
    for key in ("exit_code", "code", "status"):
        v = msg.get(key)
        if isinstance(v, int) and not isinstance(v, bool):
            return v
    return None


async def dialogue(args, token, tid, seen):
    ws_base = re.sub(r"^http", "ws", args.base)
    url = "%s/api/v1/terminals/%s/attach?write=true" % (ws_base, tid)
    try:
        ws = await connect(url, additional_headers={"Authorization": "Bearer " + token},
                           open_timeout=args.timeout, max_size=2**22)
    except InvalidStatus as e:
        raise Failure("attach %s: HTTP %s instead of 101 Switching Protocols" % (url, e.response.status_code))
    except (OSError, asyncio.TimeoutError) as e:
        raise Failure("attach %s: %s" % (url, e))
    async with ws:
        t = Terminal(ws, args.timeout)
        seen.append(t)
        # The shell's prompt comes first (it ends in "$ " or "# "), after the server's
        # "attached" message, which says whether this client got the keyboard.
        await t.expect(rb"[$#] $", "shell prompt")
        for c in t.controls:
            if c.get("type") == "attached" and c.get("writer") is not True:
                raise Failure("attached without the keyboard (?write=true): %s" % json.dumps(c))
        n = random.randrange(10000, 99999)
        # The shell computes the number, so what comes back is the command's output, not the
        # terminal echoing what was typed.
        start = len(t.out)
        await t.type("echo hi-$((%d+1))\r" % n)
        await t.expect(rb"\nhi-%d\r?\n" % (n + 1), "output hi-%d of `echo hi-$((%d+1))`" % (n + 1, n), start)
        print("term_client: ok: typed `echo hi-$((%d+1))`, read back hi-%d" % (n, n + 1))

        await t.control({"type": "resize", "cols": 101, "rows": 29})
        start = len(t.out)
        await t.type("stty size\r")
        m = await t.expect(rb"\n(\d+) (\d+)\r?\n", "`stty size` output", start)
        if m.group(1, 2) != (b"29", b"101"):
            raise Failure("after resize to 101x29, `stty size` says %s rows %s cols"
                          % (m.group(1).decode(), m.group(2).decode()))
        print("term_client: ok: resize to 101x29, `stty size` says 29 101")

        await t.type("exit 3\r")
        msg = await t.expect_exit()
        code = exit_status(msg)
        if code != 3:
            raise Failure("exit message %s: exit status %r, want 3" % (json.dumps(msg), code))
        print("term_client: ok: `exit 3` ended the session, exit message %s" % json.dumps(msg))


async def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", default="http://127.0.0.1", help="the API's base URL (through nginx)")
    p.add_argument("--timeout", type=float, default=20, help="seconds to wait for each step")
    p.add_argument("--argv", default="/bin/sh", help="the program to run, split on spaces")
    args = p.parse_args()
    args.base = args.base.rstrip("/")
    token = os.environ.get("LOCALHOSTD_TOKEN", "")
    if not token:
        raise Failure("set LOCALHOSTD_TOKEN to a token with the exec scope")

    status, body = api(args.base, token, "POST", "/api/v1/terminals",
                       {"argv": args.argv.split(), "cols": 80, "rows": 24})
    if status != 201 or not isinstance(body, dict) or "id" not in body:
        raise Failure("POST /api/v1/terminals: HTTP %s %s, want 201 with an id" % (status, body))
    tid = body["id"]
    print("term_client: ok: created terminal %s" % tid)
    seen = []
    try:
        await dialogue(args, token, tid, seen)
    except Failure as e:
        tail = seen[0].tail() if seen else ""
        raise Failure("%s\n  terminal output (end): %r" % (e, tail)) from None
    finally:
        # Nothing of the session is left, whatever happened above (404: already gone).
        status, body = api(args.base, token, "DELETE", "/api/v1/terminals/%s" % tid)
        if status not in (200, 202, 204, 404, 410):
            print("term_client: DELETE /api/v1/terminals/%s: HTTP %s %s" % (tid, status, body), file=sys.stderr)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except Failure as e:
        sys.exit("term_client: FAIL: %s" % e)
    except KeyboardInterrupt:
        sys.exit(130)
