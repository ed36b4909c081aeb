// The tunnels page (admin): every tunnel provider (GET /api/v1/tunnels) in one table: whether
// its client can run here (or why not), its state, its public URL, since when, restarts, the
// last error with the client's last output lines, and Start (with the provider's options) /
// Stop (POST /api/v1/tunnels/{provider}/start|stop). The table is asked again every few seconds
// while a tunnel is starting or restarting. With tunnels off in the config (403) the page shows
// the server's message, which says how to turn them on.
import { api, ApiError } from "../api.js";
import { h, clear, fill, showError, toast, formatTime, badge } from "../ui.js";

/** How often the list is asked again while a tunnel is starting or restarting. */
const REFRESH_MS = 2000;

const STATE_KIND = { up: "ok", starting: "warn", restarting: "warn", failed: "danger", stopped: "" };

/** Each provider's start options: the form controls and how they become the JSON body. */
const OPTIONS = {
  ssh: [{ key: "remote_port", label: "Remote port", type: "number", hint: "as configured" }],
  localtunnel: [{ key: "subdomain", label: "Subdomain", type: "text", hint: "random" }],
  cloudflared: [{ key: "named", label: "Named tunnel", type: "checkbox" }],
  ngrok: [{ key: "domain", label: "Domain", type: "text", hint: "as configured" }],
};

const busy = (s) => s === "starting" || s === "restarting";

/** Only http(s) URLs become links (a server string never becomes a `javascript:` href). */
function urlCell(url) {
  if (!url) return h("span", { class: "muted" }, "–");
  if (!/^https?:\/\//i.test(url)) return h("span", { class: "mono" }, url);
  return h("a", { href: url, target: "_blank", rel: "noopener noreferrer", class: "mono tunnel-url", "data-test": "tunnel-url" }, url);
}

export default {
  title: "Tunnels",
  async mount(root, { whoami }) {
    root.append(h("div", { class: "page-head" }, h("h1", null, "Tunnels")));
    const wrap = h("div", { class: "stack" });
    root.append(wrap);

    let data;
    try {
      data = await api("GET", "/api/v1/tunnels");
    } catch (err) {
      if (err instanceof ApiError && err.status === 403) {
        // Tunnels are off on this host (or the token is no admin's): the server says why and how.
        const admin = !whoami || (whoami.actor?.scopes || []).includes("admin");
        wrap.append(
          h(
            "div",
            { class: "alert warn", role: "note" },
            h(
              "div",
              { class: "alert-text" },
              h("p", null, h("strong", null, admin ? "Tunnels are off." : "The tunnels need a token with the admin scope.")),
              h("p", { "data-test": "tunnels-off" }, err.message),
            ),
          ),
        );
        return undefined;
      }
      throw err;
    }

    const refreshBtn = h("button", { type: "button", class: "btn small" }, "Refresh");
    const target = h("p", { class: "hint muted" });
    const actionError = h("div");
    const loadError = h("div");
    const holder = h("div", { class: "table-wrap", "data-test": "tunnels-list" });
    const updated = h("p", { class: "muted updated", "aria-live": "off" });
    wrap.append(
      h(
        "section",
        { class: "card", "aria-labelledby": "tunnels-h" },
        h("div", { class: "row spread" }, h("h2", { id: "tunnels-h" }, "Public tunnels"), refreshBtn),
        h(
          "p",
          { class: "hint muted" },
          "A tunnel publishes this host's API on the internet through the provider's client. Whatever comes in through it is treated as coming from the internet: it needs a token like any other request, and never counts as local.",
        ),
        target,
        actionError,
        loadError,
        holder,
        updated,
      ),
    );

    const tbody = h("tbody");
    fill(
      holder,
      h(
        "table",
        { class: "list tunnels" },
        h("caption", { class: "visually-hidden" }, "Tunnel providers"),
        h(
          "thead",
          null,
          h(
            "tr",
            null,
            ["Provider", "Available", "State", "Public URL", "Since", "Restarts", "Last error", "Actions"].map((l) =>
              h("th", { scope: "col", class: l === "Restarts" ? "num" : null }, l),
            ),
          ),
        ),
        tbody,
      ),
    );

    // One row per provider, built once and updated in place, so that an option being typed
    // and the focus survive a refresh.
    const rows = new Map();
    let timer = null;
    let alive = true;

    function rowFor(p) {
      let r = rows.get(p);
      if (r) return r;
      const cells = {};
      for (const k of ["provider", "available", "state", "url", "since", "restarts", "error", "actions"]) {
        cells[k] = h("td", { "data-test": k, class: k === "restarts" ? "num" : k === "since" ? "time" : null });
      }
      const controls = (OPTIONS[p] || []).map((o) => {
        const id = `tunnel-${p}-${o.key}`;
        const input =
          o.type === "checkbox"
            ? h("input", { type: "checkbox", id, name: o.key })
            : h("input", {
                type: o.type,
                id,
                name: o.key,
                autocomplete: "off",
                spellcheck: "false",
                inputmode: o.type === "number" ? "numeric" : null,
                min: o.type === "number" ? "1" : null,
                max: o.type === "number" ? "65535" : null,
                placeholder: o.hint || null,
                class: "tunnel-opt",
              });
        // The label names the provider for screen readers (four forms share the table).
        const label = h("label", { for: id }, o.label, h("span", { class: "visually-hidden" }, ` (${p})`));
        const el = h("div", { class: o.type === "checkbox" ? "field inline" : "field" }, o.type === "checkbox" ? [input, label] : [label, input]);
        return { o, input, el };
      });
      const startBtn = h("button", { type: "submit", class: "btn primary small", "aria-label": `Start ${p}` }, "Start");
      const stopBtn = h("button", { type: "button", class: "btn danger small", "aria-label": `Stop ${p}` }, "Stop");
      const form = h("form", { class: "tunnel-form", "aria-label": `Start ${p}` }, controls.map((c) => c.el), h("div", { class: "row" }, startBtn, stopBtn));
      form.addEventListener("submit", (ev) => {
        ev.preventDefault();
        act(p, "start", optionsOf(controls), startBtn);
      });
      stopBtn.addEventListener("click", () => act(p, "stop", null, stopBtn));
      fill(cells.actions, form);
      const tr = h("tr", { "data-provider": p }, Object.values(cells));
      tbody.append(tr);
      r = { tr, cells, controls, startBtn, stopBtn, filled: false, details: null };
      rows.set(p, r);
      return r;
    }

    function optionsOf(controls) {
      const out = {};
      for (const { o, input } of controls) {
        if (o.type === "checkbox") {
          if (input.checked) out[o.key] = true;
        } else if (o.type === "number") {
          if (input.value.trim() !== "") out[o.key] = Number(input.value);
        } else if (input.value.trim() !== "") {
          out[o.key] = input.value.trim();
        }
      }
      return out;
    }

    function render(t) {
      const r = rowFor(t.provider);
      const c = r.cells;
      fill(c.provider, h("strong", null, t.provider));
      if (t.available) {
        fill(c.available, badge("available", "ok"), t.binary ? h("div", { class: "muted mono small-text" }, t.binary) : null);
      } else {
        fill(c.available, badge("unavailable", "warn"), h("div", { class: "muted reason", "data-test": "reason" }, t.unavailable_reason || "its client cannot run here"));
      }
      const wanted =
        t.desired === "up" && t.state !== "up" ? h("div", { class: "muted" }, "meant to be up") : null;
      fill(c.state, badge(t.state, STATE_KIND[t.state] || ""), wanted);
      fill(c.url, urlCell(t.url));
      fill(c.since, t.since ? formatTime(t.since) : "–");
      fill(c.restarts, String(t.restarts ?? 0));
      // The client's last lines, in a details element that stays open across refreshes.
      const wasOpen = r.details ? r.details.open : false;
      r.details = null;
      const lines = Array.isArray(t.last_lines) ? t.last_lines : [];
      if (lines.length) {
        r.details = h(
          "details",
          { class: "more tunnel-lines", open: wasOpen },
          h("summary", null, `Client output (${lines.length} line${lines.length === 1 ? "" : "s"})`),
          h("pre", { class: "output mono", tabindex: "0", "aria-label": `The ${t.provider} client's last output lines` }, lines.join("\n")),
        );
      }
      fill(c.error, t.last_error ? h("div", { class: "tunnel-error" }, t.last_error) : h("span", { class: "muted" }, "–"), r.details);
      // Options as last started, unless the admin is typing.
      if (!r.filled) {
        r.filled = true;
        const opts = t.options && typeof t.options === "object" ? t.options : {};
        for (const { o, input } of r.controls) {
          const v = opts[o.key];
          if (o.type === "checkbox") input.checked = v === true;
          else if (v !== undefined && v !== null) input.value = String(v);
        }
      }
      const why = t.available ? null : `Unavailable: ${t.unavailable_reason || "its client cannot run here"}`;
      for (const { input } of r.controls) {
        input.disabled = !t.available;
        if (why) input.title = why;
        else input.removeAttribute("title");
      }
      r.startBtn.disabled = !t.available;
      r.stopBtn.disabled = t.desired !== "up" && t.state === "stopped";
      if (why) {
        r.startBtn.title = why;
        r.stopBtn.title = r.stopBtn.disabled ? why : "";
      } else {
        r.startBtn.removeAttribute("title");
        if (r.stopBtn.disabled) r.stopBtn.title = "Not running";
        else r.stopBtn.removeAttribute("title");
      }
    }

    function show(list) {
      data = list;
      target.textContent = list.target
        ? `The clients forward to this host's public listener, ${list.target}.`
        : "The public listener is not bound.";
      for (const t of list.items || []) render(t);
      updated.textContent = `Updated ${formatTime(Date.now())}`;
      schedule();
    }

    function schedule() {
      clearTimeout(timer);
      if (alive && (data.items || []).some((t) => busy(t.state))) timer = setTimeout(load, REFRESH_MS);
    }

    async function load() {
      clearTimeout(timer);
      try {
        const list = await api("GET", "/api/v1/tunnels");
        if (!alive) return;
        clear(loadError);
        show(list);
      } catch (err) {
        if (!alive) return;
        showError(err, loadError);
        timer = setTimeout(load, REFRESH_MS * 2);
      }
    }

    async function act(p, what, options, btn) {
      btn.disabled = true;
      clear(actionError);
      try {
        const view = await api("POST", `/api/v1/tunnels/${encodeURIComponent(p)}/${what}`, { json: what === "start" ? options : undefined });
        if (!alive) return;
        toast(what === "start" ? `${p}: ${view.state === "up" ? "up" : "starting"}.` : `${p}: stopped.`);
      } catch (err) {
        if (!alive) return;
        showError(err, actionError);
      }
      await load();
    }

    refreshBtn.addEventListener("click", load);
    show(data);
    return () => {
      alive = false;
      clearTimeout(timer);
    };
  },
};
