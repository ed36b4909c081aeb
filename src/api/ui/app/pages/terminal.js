// The terminal page: terminal sessions in xterm.js. Without `?id=`: the caller's sessions
// (running and ended) to reattach to, and a form that starts a new one. With `?id=ID`: the
// session attached over the WebSocket `…/attach?write=true` (binary frames carry the bytes
// both ways, text frames JSON control messages), sized to the page with the fit addon (each
// new size goes to the session as a `resize` message), the exit status once the process ends,
// the recording to download, and a button that ends the session. An ended session shows the
// output the daemon still keeps (`…/output`), read-only.
import { api, ApiError } from "../api.js";
import { h, clear, showError, toast, confirmDialog, formatBytes, formatTime, table, loadStyle } from "../ui.js";

const XTERM = "../../vendor/xterm/xterm.mjs";
const XTERM_CSS = "../../vendor/xterm/xterm.css";
const FIT = "../../vendor/xterm-addon-fit/addon-fit.mjs";

function termUrl(id) {
  return `/api/v1/terminals/${encodeURIComponent(id)}`;
}

function go(ctx, url) {
  return (e) => {
    if (e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
    e.preventDefault();
    ctx.navigate(url);
  };
}


/** The terminal's colours from the design tokens (light or dark) as they apply to `el`. */
function themeFromTokens(el) {
  const css = getComputedStyle(el);
  const v = (name, fallback) => css.getPropertyValue(name).trim() || fallback;
  const dark = window.matchMedia("(prefers-color-scheme: dark)").matches;
  return {
    background: v("--term-bg", dark ? "#101317" : "#fbfbfc"),
    foreground: v("--term-fg", dark ? "#e6e6e6" : "#1d2125"),
    cursor: v("--accent", dark ? "#7cb7ff" : "#0b5fcc"),
    cursorAccent: v("--term-bg", dark ? "#101317" : "#fbfbfc"),
    selectionBackground: dark ? "#3a4a60" : "#b8d4f5",
    // ANSI colours readable on both backgrounds.
    ...(dark
      ? {}
      : {
          black: "#1d2125", red: "#b3261e", green: "#1e7b34", yellow: "#8a6100", blue: "#0b5fcc",
          magenta: "#8a2fa8", cyan: "#0d7480", white: "#5f6368", brightBlack: "#5f6368",
          brightRed: "#c5221f", brightGreen: "#188038", brightYellow: "#9a6700", brightBlue: "#1967d2",
          brightMagenta: "#9334e6", brightCyan: "#007b83", brightWhite: "#3c4043",
        }),
  };
}

function commandOf(t) {
  return Array.isArray(t.argv) ? t.argv.join(" ") : String(t.argv || "");
}

function stateBadge(t) {
  if (t.state === "running") return h("span", { class: "badge ok" }, "running");
  return h("span", { class: "badge" }, "ended");
}

function endText(t) {
  if (t.state === "running") return t.attached ? `${t.attached} attached` : "";
  const bits = [t.end_reason || "ended"];
  if (t.exit_code !== null && t.exit_code !== undefined) bits.push(`exit code ${t.exit_code}`);
  if (t.signal) bits.push(`signal ${t.signal}`);
  return bits.join(", ");
}

/** How a session ended, in words, from an `exit` message. */
function exitText(x) {
  const how = [];
  if (x.code !== null && x.code !== undefined) how.push(`exit code ${x.code}`);
  if (x.signal) how.push(`signal ${x.signal}`);
  const reason = x.reason && x.reason !== "exited" ? ` (${x.reason})` : "";
  return `The session ended${how.length ? ` with ${how.join(", ")}` : ""}${reason}.`;
}

export default {
  title: "Terminal",
  async mount(root, ctx) {
    const id = ctx.params.get("id");
    const cleanups = [];
    const wrap = h("div", { class: "stack" });
    root.append(h("div", { class: "page-head" }, h("h1", {}, "Terminal")));
    root.append(wrap);
    if (id) await mountSession(wrap, ctx, id, cleanups);
    await mountList(wrap, ctx, id, cleanups);
    return () => {
      for (const c of cleanups.splice(0)) {
        try {
          c();
        } catch {
          // Leaving the page goes on with the other cleanups.
        }
      }
    };
  },
};

// ---------------------------------------------------------------- the list and "new terminal"

async function mountList(wrap, ctx, currentId, cleanups) {
  const cmd = h("input", { id: "term-command", type: "text", name: "command", autocomplete: "off", spellcheck: "false", placeholder: "/bin/sh", "aria-describedby": "term-command-hint" });
  const newError = h("div", {});
  const newBtn = h("button", { type: "submit", class: "btn primary" }, "New terminal");
  const form = h("form", { class: "toolbar", "on:submit": (e) => { e.preventDefault(); create(); } },
    h("div", { class: "field grow" },
      h("label", { for: "term-command" }, "Command"),
      cmd,
      h("p", { id: "term-command-hint", class: "muted" }, "Empty for a shell (/bin/sh); otherwise a command line run by /bin/sh -c.")),
    newBtn);
  const listError = h("div", {});
  const holder = h("div", { class: "table-wrap" });
  const more = h("button", { type: "button", class: "btn" }, "Load more sessions");
  more.hidden = true;
  const refreshBtn = h("button", { type: "button", class: "btn small" }, "Refresh");

  wrap.append(
    h("section", { class: "card", "aria-labelledby": "term-new-h" }, h("h2", { id: "term-new-h" }, currentId ? "Another terminal" : "New terminal"), form, newError),
    h("section", { class: "card", "aria-labelledby": "term-list-h" },
      h("div", { class: "row spread" }, h("h2", { id: "term-list-h" }, "Your sessions"), refreshBtn),
      listError, holder, more),
  );

  async function create() {
    clear(newError);
    newBtn.disabled = true;
    const line = cmd.value.trim();
    const body = line ? { command: line } : { argv: ["/bin/sh"] };
    try {
      const t = await api("POST", "/api/v1/terminals", { json: body });
      ctx.navigate(`/terminal?id=${encodeURIComponent(t.id)}`);
    } catch (err) {
      showError(err, newError);
    } finally {
      newBtn.disabled = false;
    }
  }

  let rows = [];
  let cursor = null;
  let shown = "";
  async function load(first) {
    clear(listError);
    try {
      const query = { limit: 25 };
      if (!first && cursor) query.cursor = cursor;
      const page = await api("GET", "/api/v1/terminals", { query });
      rows = first ? page.items : rows.concat(page.items);
      cursor = page.next_cursor || null;
      // The periodic refresh redraws only when something changed (keeps the focus in place).
      const now = JSON.stringify([rows.map((t) => [t.id, t.state, t.attached, t.recording_bytes, t.end_reason]), cursor]);
      if (now === shown) return;
      shown = now;
      render();
    } catch (err) {
      showError(err, listError);
    }
  }

  async function end(t) {
    if (!(await confirmDialog(`End the session “${commandOf(t)}”? Its process and everything it started are killed.`, { danger: true }))) return;
    try {
      await api("DELETE", termUrl(t.id));
      toast("Session ended.");
    } catch (err) {
      showError(err, listError);
    }
    load(true);
  }

  function render() {
    clear(holder);
    holder.append(table({
      columns: [
        {
          label: "Command",
          value: (t) => {
            const url = `/terminal?id=${encodeURIComponent(t.id)}`;
            const label = commandOf(t) || t.id;
            return t.id === currentId
              ? h("span", { class: "mono", "aria-current": "true" }, label, " (this one)")
              : h("a", { class: "mono", href: url, "on:click": go(ctx, url), "aria-label": `${t.state === "running" ? "Attach to" : "Open"} ${label} (started ${formatTime(t.created_at)})` }, label);
          },
        },
        { label: "State", value: (t) => stateBadge(t) },
        { label: "Started", value: (t) => formatTime(t.created_at) },
        { label: "End", value: (t) => endText(t) },
        {
          label: "Actions",
          value: (t) => h("span", { class: "actions" },
            t.recording_bytes > 0
              ? h("a", { class: "btn small", href: `${termUrl(t.id)}/recording`, download: `terminal-${t.id}.cast`, "aria-label": `Recording of ${commandOf(t)} (${formatBytes(t.recording_bytes)})` }, "Recording")
              : "",
            t.state === "running" ? h("button", { type: "button", class: "btn small danger", "aria-label": `End ${commandOf(t)}`, "on:click": () => end(t) }, "End") : ""),
        },
      ],
      rows,
      empty: "No sessions yet: start one above.",
    }));
    more.hidden = !cursor;
  }

  more.addEventListener("click", () => load(false));
  refreshBtn.addEventListener("click", () => load(true));
  // Ended sessions and new ones (from other tabs) show up without a reload.
  const timer = setInterval(() => { if (document.visibilityState === "visible") load(true); }, 15000);
  cleanups.push(() => clearInterval(timer));
  await load(true);
}

// ---------------------------------------------------------------- one session

async function mountSession(wrap, ctx, id, cleanups) {
  const headError = h("div", {});
  const title = h("h2", { id: "term-h" }, "Terminal");
  const meta = h("p", { class: "muted" });
  const status = h("div", { class: "term-status", "aria-live": "polite", "data-test": "term-status" });
  const screen = h("div", { class: "term-screen", "data-test": "terminal" });
  const endBtn = h("button", { type: "button", class: "btn danger" }, "End session");
  const reconnectBtn = h("button", { type: "button", class: "btn" }, "Reconnect");
  reconnectBtn.hidden = true;
  const recording = h("a", { class: "btn", href: `${termUrl(id)}/recording`, download: `terminal-${id}.cast` }, "Download recording");
  const ctrlC = h("button", { type: "button", class: "btn small", "aria-label": "Send Ctrl-C (interrupt)" }, "Ctrl-C");
  const keysHint = h("p", { class: "hint muted", id: "term-keys" }, "Tab and Esc are typed into the terminal; Shift+Esc moves the focus out of it.");
  const buttons = h("div", { class: "row" }, ctrlC, reconnectBtn, recording, endBtn);
  const section = h("section", { class: "card term-card", "aria-labelledby": "term-h" },
    title, meta, headError, screen, keysHint, status, buttons);
  wrap.append(section);

  let info;
  try {
    info = await api("GET", termUrl(id));
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) {
      showError(new Error(`There is no terminal session ${id} of yours (it may have ended long ago).`), headError);
    } else showError(err, headError);
    screen.hidden = true;
    endBtn.hidden = true;
    recording.hidden = true;
    ctrlC.hidden = true;
    return;
  }
  title.textContent = `Terminal: ${commandOf(info)}`;
  meta.textContent = `Started ${formatTime(info.created_at)} by ${info.creator}${info.kind === "program" ? " (a stored program)" : ""}.`;

  let Terminal;
  let FitAddon;
  try {
    // xterm's own stylesheet, added once to the document (it stays for the next visit).
    [{ Terminal }, { FitAddon }] = await Promise.all([import(XTERM), import(FIT), loadStyle(new URL(XTERM_CSS, import.meta.url))]);
  } catch (err) {
    showError(new Error(`The terminal emulator could not be loaded: ${err instanceof Error ? err.message : err}`), headError);
    return;
  }
  const term = new Terminal({
    cursorBlink: true,
    fontFamily: getComputedStyle(document.documentElement).getPropertyValue("--mono").trim() || "monospace",
    fontSize: 14,
    scrollback: 5000,
    theme: themeFromTokens(screen),
  });
  const fit = new FitAddon();
  term.loadAddon(fit);
  term.open(screen);
  cleanups.push(() => term.dispose());
  // The terminal takes Tab (a shell completes with it), so it would be a keyboard trap:
  // Shift+Esc leaves it for the buttons below.
  term.attachCustomKeyEventHandler((e) => {
    if (e.key === "Escape" && e.shiftKey) {
      if (e.type === "keydown") {
        const next = [...buttons.querySelectorAll("button, a")].find((b) => !b.hidden);
        if (next) next.focus();
      }
      return false;
    }
    return true;
  });
  const input = screen.querySelector("textarea");
  if (input) input.setAttribute("aria-describedby", "term-keys");
  const dark = window.matchMedia("(prefers-color-scheme: dark)");
  const onScheme = () => { term.options.theme = themeFromTokens(screen); };
  dark.addEventListener("change", onScheme);
  cleanups.push(() => dark.removeEventListener("change", onScheme));

  const s = { ws: null, writer: false, ended: info.state !== "running", offset: null, left: false };
  // Sockets this page closed on purpose: their close is no error to show.
  const closing = new WeakSet();
  function disconnect(why) {
    if (!s.ws) return;
    closing.add(s.ws);
    s.ws.close(1000, why);
    s.ws = null;
  }
  const enc = new TextEncoder();

  function setStatus(text, kind) {
    clear(status);
    status.append(h("p", { class: kind ? `alert ${kind}` : "muted" }, text));
  }

  function refit() {
    if (!screen.isConnected || screen.clientWidth === 0) return;
    try {
      fit.fit();
    } catch {
      // Not laid out yet: the next resize fits it.
    }
  }
  let raf = 0;
  const ro = new ResizeObserver(() => {
    cancelAnimationFrame(raf);
    raf = requestAnimationFrame(refit);
  });
  ro.observe(screen);
  cleanups.push(() => { ro.disconnect(); cancelAnimationFrame(raf); });

  function sendControl(msg) {
    if (s.ws && s.ws.readyState === WebSocket.OPEN) s.ws.send(JSON.stringify(msg));
  }
  function sendBytes(bytes) {
    if (s.ws && s.ws.readyState === WebSocket.OPEN && s.writer) s.ws.send(bytes);
  }
  const dataSub = term.onData((d) => sendBytes(enc.encode(d)));
  const binSub = term.onBinary((d) => sendBytes(Uint8Array.from(d, (c) => c.charCodeAt(0) & 0xff)));
  const resizeSub = term.onResize(({ cols, rows }) => {
    if (s.writer) sendControl({ type: "resize", cols, rows });
  });
  cleanups.push(() => { dataSub.dispose(); binSub.dispose(); resizeSub.dispose(); });
  ctrlC.addEventListener("click", () => {
    sendControl({ type: "signal", name: "INT" });
    term.focus();
  });

  function onEnded(x) {
    s.ended = true;
    setStatus(exitText(x), x.code === 0 && !x.signal ? "" : "warn");
    status.firstChild.setAttribute("data-test", "term-exit");
    endBtn.hidden = true;
    ctrlC.hidden = true;
    reconnectBtn.hidden = true;
    term.options.cursorBlink = false;
    term.options.disableStdin = true;
  }

  function connect() {
    reconnectBtn.hidden = true;
    const q = new URLSearchParams({ write: "true" });
    if (s.offset !== null) q.set("since", String(s.offset));
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${proto}//${location.host}${termUrl(id)}/attach?${q}`);
    ws.binaryType = "arraybuffer";
    s.ws = ws;
    setStatus("Connecting…");
    ws.addEventListener("message", (ev) => {
      if (typeof ev.data !== "string") {
        const bytes = new Uint8Array(ev.data);
        if (s.offset !== null) s.offset += bytes.length;
        term.write(bytes);
        return;
      }
      let m;
      try { m = JSON.parse(ev.data); } catch { return; }
      if (m.type === "attached") {
        s.writer = Boolean(m.writer);
        s.offset = typeof m.offset === "number" ? m.offset : null;
        if (s.writer) {
          setStatus("Connected.");
          // Size the session to this window.
          refit();
          sendControl({ type: "resize", cols: term.cols, rows: term.rows });
          term.focus();
        } else {
          setStatus("View only: another client holds the keyboard of this session.", "warn");
        }
      } else if (m.type === "lost") {
        s.offset = m.to;
        term.write(`\r\n\x1b[2m[output from byte ${m.from} to ${m.to} is no longer kept]\x1b[0m\r\n`);
      } else if (m.type === "error") {
        setStatus(`Refused: ${m.message || m.code}`, "warn");
      } else if (m.type === "exit") {
        onEnded(m);
      }
    });
    ws.addEventListener("close", (ev) => {
      if (s.ws === ws) s.ws = null;
      if (closing.has(ws) || s.left || s.ended) return;
      const why = ev.reason ? `: ${ev.reason}` : "";
      const what = ev.code === 1006 ? "The connection to the terminal was lost (or refused)" : `The connection closed (code ${ev.code})${why}`;
      setStatus(`${what}. Reconnect to carry on where it stopped.`, "warn");
      reconnectBtn.hidden = false;
      // Why it was refused, if it was (ended meanwhile, logged out, gone).
      api("GET", termUrl(id)).then((t) => {
        if (t.state !== "running") onEnded({ code: t.exit_code, signal: t.signal, reason: t.end_reason });
      }).catch((err) => showError(err, headError));
    });
  }

  /** An ended session: what output the daemon still keeps, read-only. */
  async function showEndedOutput() {
    onEnded({ code: info.exit_code, signal: info.signal, reason: info.end_reason });
    let since = 0;
    try {
      for (let i = 0; i < 50; i += 1) {
        const o = await api("GET", `${termUrl(id)}/output`, { query: { since: String(since), wait_ms: "0" } });
        if (o.data) {
          term.write(o.encoding === "base64" ? Uint8Array.from(atob(o.data), (c) => c.charCodeAt(0)) : o.data);
        }
        if (o.exit || o.next === since) break;
        since = o.next;
      }
    } catch (err) {
      if (err instanceof ApiError && (err.status === 404 || err.status === 410)) {
        term.write("\x1b[2m[the output is no longer kept: download the recording]\x1b[0m\r\n");
      } else showError(err, headError);
    }
  }

  reconnectBtn.addEventListener("click", () => connect());
  endBtn.addEventListener("click", async () => {
    if (!(await confirmDialog("End this terminal session? Its process and everything it started are killed.", { danger: true }))) return;
    try {
      const t = await api("DELETE", termUrl(id));
      onEnded({ code: t.exit_code, signal: t.signal, reason: t.end_reason || "deleted" });
    } catch (err) {
      showError(err, headError);
    }
  });
  cleanups.push(() => {
    s.left = true;
    disconnect("left the page");
  });

  refit();
  if (s.ended) await showEndedOutput();
  else connect();
}
