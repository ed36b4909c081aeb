#!/usr/bin/env python3
"""Drives the system's headless Chromium over the DevTools protocol (CDP), for two callers:

  check   (tests/e2e/run.sh) logs in to localhostd's UI (a `localhostd login-url` link, or a
          token typed into the login form), loads the dashboard and checks that its charts drew
          (every chart canvas has pixels), that the host's facts are shown, and that the pages
          logged no console errors and no CSP violations.
  bench   (benches/ui.sh) measures, in one browser, bytes transferred and the time from
          navigation until the usage figures are drawn: localhostd's dashboard (the chart
          canvases have pixels) and Cockpit's overview (its usage card shows CPU and memory).
          Logins happen before and are not timed. Each round loads each page cold (browser
          cache cleared, cookies kept) and then warm (cache as the cold load left it). Prints
          one JSON object per load, then a summary.

CDP needs no driver binary, only the `websockets` package (tests/e2e/requirements.txt), and
gives the network events the byte count needs. As root Chromium runs with --no-sandbox.
"""

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

from websockets.sync.client import connect

# Runs in every page before its own scripts (CDP injects it; the page's CSP does not apply):
# watches for the usage figures and records performance.now() (ms since the navigation
# started) the first time they are drawn. One rule per peer.
PROBE = r"""
(() => {
  const blank = (c) => {
    try {
      if (!c.width || !c.height) return true;
      const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
      for (let i = 3; i < d.length; i += 4) if (d[i] !== 0) return false;
    } catch (e) { return true; }
    return true;
  };
  const ours = () => {
    const main = document.getElementById("main");
    if (!main || main.dataset.ready !== "dashboard") return false;
    const canvases = [...main.querySelectorAll("canvas")];
    return canvases.length > 0 && canvases.every((c) => !blank(c));
  };
  // Cockpit's overview runs in a same-origin iframe; its usage card (.system-usage) has two
  // progress bars (aria-labelledby the rows' headers #system-usage-cpu-progress and
  // #system-usage-memory-progress), each with its figure beside it ("3% of 2 CPUs",
  // "2.4 / 24 GiB"). Drawn: both figures shown and the memory bar's value above 0 (it is 0
  // until the first sample arrives).
  const cockpit = () => {
    const docs = [document];
    for (const f of document.querySelectorAll("iframe")) {
      try { if (f.contentDocument) docs.push(f.contentDocument); } catch (e) { /* other origin */ }
    }
    for (const d of docs) {
      const card = d.querySelector(".system-usage");
      if (!card) continue;
      const bar = (id) => card.querySelector(`[role=progressbar][aria-labelledby="${id}"]`);
      // The figure is the bar's own label, beside it in its progress element.
      const figure = (b) => (b.closest(".pf-c-progress, .pf-v5-c-progress, td") || b).textContent || "";
      const cpu = bar("system-usage-cpu-progress"), mem = bar("system-usage-memory-progress");
      if (cpu && mem && /\d+%/.test(figure(cpu)) && /\d/.test(figure(mem))
          && Number(mem.getAttribute("aria-valuenow")) > 0) return true;
    }
    return false;
  };
  window.__uiDrawn = null;
  window.__uiProbe = { ours, cockpit };
  const tick = () => {
    try {
      if (window.__uiDrawn === null && (ours() || cockpit())) {
        window.__uiDrawn = performance.now();
        return;
      }
    } catch (e) {
      window.__uiProbeError = String(e);
    }
    requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
})();
"""


class Browser:
    """A headless Chromium with one page, spoken to over CDP."""

    def __init__(self, binary, window="1280,900"):
        self.profile = tempfile.mkdtemp(prefix="lhd-ui-cdp-")
        args = [binary, "--headless=new", "--remote-debugging-port=0",
                f"--user-data-dir={self.profile}", f"--window-size={window}",
                "--no-first-run", "--no-default-browser-check", "--disable-gpu",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--disable-dev-shm-usage", "about:blank"]
        if os.geteuid() == 0:
            args.insert(1, "--no-sandbox")
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = os.path.join(self.profile, "DevToolsActivePort")
        deadline = time.monotonic() + 30
        while not os.path.exists(port_file) or os.path.getsize(port_file) == 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError("Chromium did not start (no DevToolsActivePort in 30 s)")
            time.sleep(0.05)
        port = open(port_file).read().split()[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            pages = [t for t in json.load(r) if t.get("type") == "page"]
        self.stack = contextlib.ExitStack()
        self.ws = self.stack.enter_context(
            connect(pages[0]["webSocketDebuggerUrl"], max_size=None, open_timeout=10))
        self.next_id = 0
        self.events = []
        for domain in ("Page", "Runtime", "Network", "Log"):
            self.send(f"{domain}.enable")
        self.send("Page.addScriptToEvaluateOnNewDocument", source=PROBE)

    def send(self, method, timeout=30, **params):
        self.next_id += 1
        mid = self.next_id
        self.ws.send(json.dumps({"id": mid, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{method}: no answer in {timeout} s")
            msg = json.loads(self.ws.recv(timeout=left))
            if msg.get("id") == mid:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)

    def pump(self, seconds):
        """Reads events for `seconds`."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                msg = json.loads(self.ws.recv(timeout=left))
            except TimeoutError:
                return
            if "method" in msg:
                self.events.append(msg)

    def eval(self, expr, timeout=30):
        r = self.send("Runtime.evaluate", timeout=timeout, expression=expr,
                      returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expr[:60]}…: {r['exceptionDetails'].get('text')}")
        return r.get("result", {}).get("value")

    def wait(self, expr, timeout, what):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.eval(expr):
                return
            self.pump(0.1)
        raise TimeoutError(f"{what}: not within {timeout} s (at {self.eval('location.href')})")

    def goto(self, url):
        self.send("Page.navigate", url=url)

    def problems(self):
        """Console errors and CSP violations logged since the last call."""
        out = []
        for e in self.events:
            m, p = e["method"], e.get("params", {})
            if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append("console.%s: %s" % (p["type"], " ".join(
                    str(a.get("value", a.get("description", ""))) for a in p.get("args", []))))
            elif m == "Runtime.exceptionThrown":
                d = p.get("exceptionDetails", {})
                out.append("exception: %s" % (d.get("exception", {}).get("description") or d.get("text")))
            elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                out.append("log (%s): %s" % (p["entry"].get("source"), p["entry"].get("text")))
        self.events = []
        return out

    def close(self):
        try:
            self.stack.close()
        except Exception:
            pass
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.profile, ignore_errors=True)


def find_chromium():
    for b in ("chromium", "chromium-browser", "google-chrome"):
        if p := shutil.which(b):
            return p
    return None


DASHBOARD_READY = "document.getElementById('main')?.dataset.ready === 'dashboard'"


def login_localhostd(b, base, link=None, token=None):
    """Logs in with a login-url link (its fragment) or by typing the token into the form."""
    if link:
        fragment = link[link.index("#"):]
        b.goto(base + "/login" + fragment)
    else:
        b.goto(base + "/login")
        b.wait("document.getElementById('main')?.dataset.ready === 'login'", 30, "the login page")
        # The field is found by its label, as a person finds it.
        ok = b.eval("""(() => {
          const label = [...document.querySelectorAll('label')].find(l => /token/i.test(l.textContent));
          const input = label && (label.control || document.getElementById(label.htmlFor));
          if (!input) return false;
          input.focus();
          input.value = %s;
          input.dispatchEvent(new Event('input', {bubbles: true}));
          const button = [...input.form.querySelectorAll('button')].find(x => /log in/i.test(x.textContent));
          button.click();
          return true;
        })()""" % json.dumps(token))
        if not ok:
            raise RuntimeError("the login page has no field labelled 'token'")
    b.wait("location.pathname !== '/login' && " + DASHBOARD_READY, 60,
           "the dashboard after logging in")


def check(args):
    b = Browser(args.chromium)
    try:
        login_localhostd(b, args.base, link=args.link, token=args.token)
        how = "a login-url link" if args.link else "a token in the login form"
        print(f"ui_driver: ok: logged in through {args.base} with {how}")
        # A fresh load of the dashboard, as a returning user sees it.
        b.goto(args.base + "/")
        b.wait("window.__uiDrawn !== null && window.__uiDrawn !== undefined", 60,
               "the dashboard's charts drawn (every canvas with pixels)")
        drawn = b.eval("window.__uiDrawn")
        charts = b.eval("document.querySelectorAll('#main canvas').length")
        print(f"ui_driver: ok: dashboard charts drawn ({charts} canvases with pixels) "
              f"{drawn:.0f} ms after navigation")
        facts = b.eval("fetch('/api/v1/system').then(r => r.json())")
        if "hostname" not in facts:
            raise RuntimeError(f"GET /api/v1/system from the page: {facts}")
        b.wait("document.getElementById('main').innerText.includes(%s)"
               % json.dumps(facts["hostname"]), 30, "the host's facts (its hostname)")
        print(f"ui_driver: ok: system facts shown (hostname {facts['hostname']!r}, "
              f"{facts['os']['name']})")
        b.pump(1.0)
        bad = b.problems()
        if bad:
            for p in bad:
                print(f"ui_driver: {p}", file=sys.stderr)
            raise RuntimeError(f"{len(bad)} console error(s) or CSP violation(s)")
        print("ui_driver: ok: no console errors, no CSP violations")
        if args.screenshot:
            shot = b.send("Page.captureScreenshot", format="png")
            import base64
            with open(args.screenshot, "wb") as f:
                f.write(base64.b64decode(shot["data"]))
    finally:
        b.close()


def transferred(events):
    """Bytes received from the network (encoded: as sent, compressed) by requests that
    finished or failed, WebSocket frames included."""
    total = 0
    for e in events:
        m, p = e["method"], e.get("params", {})
        if m == "Network.loadingFinished":
            total += int(p.get("encodedDataLength", 0))
        elif m == "Network.webSocketFrameReceived":
            total += len(p.get("response", {}).get("payloadData", ""))
    return total


def measure(b, url, cold, timeout):
    """One load of `url`: bytes until the figures are drawn, and the time to draw them."""
    if cold:
        b.send("Network.clearBrowserCache")
    b.goto("about:blank")
    b.pump(0.3)
    b.events = []
    b.goto(url)
    deadline = time.monotonic() + timeout
    while True:
        v = b.eval("window.__uiDrawn ?? null")
        if v is not None:
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url}: figures not drawn within {timeout} s")
        b.pump(0.05)
    bytes_ = transferred(b.events)
    return {"ms": round(v, 1), "bytes": bytes_}


COCKPIT_DUMP = r"""(() => {
  const out = [{drawn: window.__uiDrawn, error: window.__uiProbeError || null,
    now: window.__uiProbe ? window.__uiProbe.cockpit() : "no probe"}];
  const docs = [["top", document]];
  for (const f of document.querySelectorAll("iframe")) {
    try { docs.push([f.src, f.contentDocument]); } catch (e) { out.push("no access " + f.src); }
  }
  for (const [name, d] of docs) {
    if (!d) continue;
    out.push({frame: name, title: d.title, url: d.location && d.location.href,
      text: (d.body ? d.body.innerText : "").slice(0, 600),
      error: (d.getElementById("login-error-message") || {}).textContent,
      bars: [...d.querySelectorAll("[role=progressbar], progress")].map(b => b.outerHTML.slice(0, 400)),
      usage: [...d.querySelectorAll("[class*=usage], [class*=Usage]")].map(e => e.className + " :: " + e.textContent.slice(0, 300)).slice(0, 8)});
  }
  return out;
})()"""


def login_cockpit(b, base, user, password):
    b.goto(base + "/")
    b.wait("document.readyState === 'complete' && !!document.getElementById('login-user-input')",
           60, "Cockpit's login form")
    submit = """(() => {
      if (!document.getElementById('login-button')) return 'gone';
      document.getElementById('login-user-input').value = %s;
      document.getElementById('login-password-input').value = %s;
      document.getElementById('login-button').click();
      return 'clicked';
    })()""" % (json.dumps(user), json.dumps(password))
    # The form's script may attach its handlers after the load event: submit again while the
    # form is still there.
    for _ in range(10):
        if b.eval(submit) == "gone":
            break
        b.pump(2.0)
        if b.eval("!document.getElementById('login-user-input') || "
                  "document.getElementById('login')?.hidden || "
                  "getComputedStyle(document.getElementById('login')).display === 'none'"):
            break
    try:
        b.wait("window.__uiDrawn !== null && window.__uiDrawn !== undefined", 90,
               "Cockpit's overview usage card after logging in")
    except TimeoutError:
        # What the page has, so the probe's rule can be fixed for this Cockpit.
        print(json.dumps(b.eval(COCKPIT_DUMP), indent=1)[:6000], file=sys.stderr)
        raise


def bench(args):
    b = Browser(args.chromium)
    results = []
    try:
        peers = []
        if args.base:
            login_localhostd(b, args.base, link=args.link, token=args.token)
            peers.append(("localhostd", args.base + "/"))
        if args.cockpit:
            login_cockpit(b, args.cockpit, args.cockpit_user, args.cockpit_password)
            peers.append(("cockpit", args.cockpit + "/system"))
        for rnd in range(args.rounds):
            # Alternate which peer goes first.
            order = peers if rnd % 2 == 0 else list(reversed(peers))
            for name, url in order:
                for cache in ("cold", "warm"):
                    r = measure(b, url, cache == "cold", args.timeout)
                    r.update(peer=name, cache=cache, round=rnd + 1)
                    results.append(r)
                    print(json.dumps(r), flush=True)
    finally:
        b.close()
    summary = {}
    for name in {r["peer"] for r in results}:
        for cache in ("cold", "warm"):
            rs = [r for r in results if r["peer"] == name and r["cache"] == cache]
            summary[f"{name}/{cache}"] = {
                "ms_median": round(statistics.median(r["ms"] for r in rs), 1),
                "ms_min": min(r["ms"] for r in rs), "ms_max": max(r["ms"] for r in rs),
                "bytes_median": statistics.median(r["bytes"] for r in rs),
                "rounds": len(rs),
            }
    if "localhostd/cold" in summary and "cockpit/cold" in summary:
        for cache in ("cold", "warm"):
            o, c = summary[f"localhostd/{cache}"], summary[f"cockpit/{cache}"]
            summary[f"ratio/{cache}"] = {
                "ms": round(o["ms_median"] / c["ms_median"], 3) if c["ms_median"] else None,
                "bytes": round(o["bytes_median"] / c["bytes_median"], 3) if c["bytes_median"] else None,
            }
    print(json.dumps({"summary": summary}, indent=2))


def visit(args):
    """Logs in and loads each of `--pages` once (benches/idle-rss.sh's UI_PAGES)."""
    b = Browser(args.chromium)
    try:
        login_localhostd(b, args.base, link=args.link, token=args.token)
        for page in args.pages.split(","):
            name = page.strip("/") or "dashboard"
            b.goto(args.base + page)
            b.wait(f"document.getElementById('main')?.dataset.ready === {json.dumps(name)}",
                   30, f"page {page}")
            b.pump(1.0)
            print(f"ui_driver: loaded {page}")
    finally:
        b.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["check", "bench", "visit"])
    ap.add_argument("--base", help="localhostd's UI, e.g. http://127.0.0.1:8080")
    ap.add_argument("--link", help="a `localhostd login-url` link (its fragment is used)")
    ap.add_argument("--token", default=os.environ.get("LOCALHOSTD_TOKEN"),
                    help="an API token for the login form (default $LOCALHOSTD_TOKEN)")
    ap.add_argument("--cockpit", help="Cockpit's base URL, e.g. http://127.0.0.1:9090")
    ap.add_argument("--cockpit-user", default="bench")
    ap.add_argument("--cockpit-password", default=os.environ.get("COCKPIT_PASSWORD"))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--timeout", type=float, default=60)
    ap.add_argument("--pages", default="/,/data,/files,/programs,/console,/terminal,/admin")
    ap.add_argument("--screenshot", help="check: save the dashboard as this PNG")
    ap.add_argument("--chromium", default=find_chromium())
    args = ap.parse_args()
    if not args.chromium:
        sys.exit("ui_driver: no chromium on PATH (apt-get install chromium)")
    if args.mode in ("check", "visit") and not args.base:
        sys.exit("ui_driver: --base is needed")
    if args.base and not (args.link or args.token):
        sys.exit("ui_driver: --link or --token (or $LOCALHOSTD_TOKEN) is needed")
    try:
        {"check": check, "bench": bench, "visit": visit}[args.mode](args)
    except (RuntimeError, TimeoutError, OSError) as e:
        sys.exit(f"ui_driver: FAIL: {e}")


if __name__ == "__main__":
    main()
