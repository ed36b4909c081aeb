// Small DOM helpers shared by every page: building nodes (never HTML strings), errors shown
// readably, toasts, a confirm dialog, formatting, and tables.

/** Builds an element. `attrs`: `class`, `on:<event>` handlers, `aria-*`, `data-*`, `style`
 * (an object of properties, set through the CSSOM), `value`/`checked`/`selected` (set as
 * properties), and any other attribute (`true` gives an empty attribute, `false`/null/undefined
 * none). `children`: nodes, strings, numbers, arrays of those, null/undefined/false (skipped). */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  if (attrs) {
    for (const [k, v] of Object.entries(attrs)) {
      if (v === undefined || v === null || v === false) continue;
      if (k.startsWith("on:")) {
        el.addEventListener(k.slice(3), v);
      } else if (k === "class") {
        el.className = Array.isArray(v) ? v.filter(Boolean).join(" ") : String(v);
      } else if (k === "style" && typeof v === "object") {
        for (const [p, pv] of Object.entries(v)) {
          if (p.startsWith("--")) el.style.setProperty(p, pv);
          else el.style[p] = pv;
        }
      } else if (k === "value" || k === "checked" || k === "selected" || k === "indeterminate") {
        el[k] = v;
      } else if (v === true) {
        el.setAttribute(k, "");
      } else {
        el.setAttribute(k, String(v));
      }
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else if (c instanceof Node) el.appendChild(c);
    else el.appendChild(document.createTextNode(String(c)));
  }
}

/** Removes every child of `el`; returns `el`. */
export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

/** Replaces the children of `el` with `children` (flattened as `h` does); returns `el`. */
export function fill(el, ...children) {
  clear(el);
  append(el, children);
  return el;
}

/** A readable text for any error: the API's message, the request id for server errors. */
export function errorText(err) {
  if (err === null || err === undefined) return "Something went wrong.";
  if (typeof err === "string") return err;
  if (err.name === "AbortError") return "Cancelled.";
  let text = err.message || String(err);
  if (err.status >= 500 && err.requestId) text += ` (request id ${err.requestId})`;
  return text;
}

/** Shows `err` readably in an element with role="alert". With `where`: inside it (an existing
 * `.alert` element is filled; any other element gets one alert as its first child, replacing
 * the one shown before). Without: in the page-wide alert area. Returns the alert element. */
export function showError(err, where) {
  if (err && err.name !== "AbortError") console.debug("shown to the user:", err);
  const text = errorText(err);
  let box;
  let keep = false;
  if (where && where.classList && where.classList.contains("alert")) {
    box = clear(where);
    keep = true;
  } else if (where) {
    box = where.querySelector(":scope > .alert.error");
    if (!box) {
      box = h("div", { class: "alert error" });
      // After the section's heading, if it starts with one; else first.
      const first = where.firstElementChild;
      if (first && /^H[1-6]$/.test(first.tagName)) first.after(box);
      else where.prepend(box);
    } else {
      clear(box);
    }
  } else {
    const area = document.getElementById("alerts") || document.body;
    box = h("div", { class: "alert error" });
    area.appendChild(box);
  }
  box.classList.add("error");
  box.hidden = false;
  box.setAttribute("role", "alert");
  const dismiss = h(
    "button",
    {
      type: "button",
      class: "btn small",
      "aria-label": "Dismiss this message",
      "on:click": () => {
        if (keep) box.hidden = true;
        else box.remove();
      },
    },
    "Dismiss",
  );
  box.append(h("p", { class: "alert-text" }, text), dismiss);
  return box;
}

/** A short message in the status area, gone after a few seconds. */
export function toast(text, { timeout = 5000 } = {}) {
  let area = document.getElementById("toasts");
  if (!area) {
    area = h("div", { id: "toasts", class: "toasts", role: "status", "aria-live": "polite" });
    document.body.appendChild(area);
  }
  const item = h("div", { class: "toast" }, text);
  area.appendChild(item);
  setTimeout(() => item.remove(), timeout);
  return item;
}

/** Asks a yes/no question in a modal `<dialog>`. Resolves to true when confirmed. */
export function confirmDialog(text, { danger = false, confirmLabel, cancelLabel = "Cancel", title } = {}) {
  return new Promise((resolve) => {
    const ok = h(
      "button",
      { type: "submit", value: "ok", class: danger ? "btn danger" : "btn primary" },
      confirmLabel || (danger ? "Delete" : "OK"),
    );
    const cancel = h("button", { type: "submit", value: "cancel", class: "btn", autofocus: true }, cancelLabel);
    const headingId = "dlg-" + Math.random().toString(36).slice(2);
    const dialog = h(
      "dialog",
      { class: "dialog", "aria-labelledby": headingId },
      h(
        "form",
        { method: "dialog" },
        h("h2", { id: headingId }, title || (danger ? "Are you sure?" : "Confirm")),
        h("p", null, text),
        h("div", { class: "row end" }, cancel, ok),
      ),
    );
    dialog.addEventListener("close", () => {
      resolve(dialog.returnValue === "ok");
      dialog.remove();
    });
    document.body.appendChild(dialog);
    dialog.showModal();
    cancel.focus();
  });
}

/** 1536 → "1.5 KiB". */
export function formatBytes(n) {
  if (n === null || n === undefined || Number.isNaN(Number(n))) return "–";
  n = Number(n);
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let i = 0;
  let v = Math.abs(n);
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  const sign = n < 0 ? "-" : "";
  if (i === 0) return `${sign}${v} B`;
  return `${sign}${v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2)} ${units[i]}`;
}

const dateTime = new Intl.DateTimeFormat(undefined, {
  year: "numeric",
  month: "short",
  day: "numeric",
  hour: "2-digit",
  minute: "2-digit",
  second: "2-digit",
});

/** An RFC 3339 time (or epoch milliseconds) in the reader's locale and time zone. */
export function formatTime(t) {
  if (t === null || t === undefined || t === "") return "–";
  const d = typeof t === "number" ? new Date(t) : new Date(t);
  if (Number.isNaN(d.getTime())) return String(t);
  return dateTime.format(d);
}

/** 850 → "850 ms", 3200 → "3.2 s", 303000 → "5 min 3 s", then hours and days. */
export function formatDuration(ms) {
  if (ms === null || ms === undefined || Number.isNaN(Number(ms))) return "–";
  ms = Number(ms);
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s < 10 ? s.toFixed(1) : Math.round(s)} s`;
  const total = Math.round(s);
  const d = Math.floor(total / 86400);
  const hr = Math.floor((total % 86400) / 3600);
  const min = Math.floor((total % 3600) / 60);
  const sec = total % 60;
  if (d > 0) return hr ? `${d} d ${hr} h` : `${d} d`;
  if (hr > 0) return min ? `${hr} h ${min} min` : `${hr} h`;
  return sec ? `${min} min ${sec} s` : `${min} min`;
}

/** A `<table class="list">`: `columns` = [{label, value(row) → node|string, class?}], `rows`,
 * `empty` (text shown in one cell when there are no rows), `caption` (optional, for screen
 * readers). Put it in `h("div", {class: "table-wrap"}, …)` so it scrolls on narrow screens. */
export function table({ columns, rows, empty = "Nothing here yet.", caption } = {}) {
  const head = h(
    "thead",
    null,
    h(
      "tr",
      null,
      columns.map((c) => h("th", { scope: "col", class: c.class }, c.label)),
    ),
  );
  const body = h("tbody");
  if (!rows || rows.length === 0) {
    body.appendChild(h("tr", null, h("td", { colspan: columns.length, class: "empty" }, empty)));
  } else {
    for (const row of rows) {
      body.appendChild(
        h(
          "tr",
          null,
          columns.map((c) => {
            let v = c.value(row);
            if (v === null || v === undefined) v = "";
            return h("td", { class: c.class }, v);
          }),
        ),
      );
    }
  }
  return h("table", { class: "list" }, caption ? h("caption", { class: "visually-hidden" }, caption) : null, head, body);
}

/** A `<label>` with its control inside a `.field`: `field("Name", h("input", …))`. Gives the
 * control an id when it has none and ties the label to it. */
export function field(label, control, hint) {
  if (!control.id) control.id = "f-" + Math.random().toString(36).slice(2);
  const hintEl = hint ? h("p", { class: "hint muted", id: control.id + "-hint" }, hint) : null;
  if (hintEl) control.setAttribute("aria-describedby", hintEl.id);
  return h("div", { class: "field" }, h("label", { for: control.id }, label), control, hintEl);
}

/** A small badge: kind is "ok", "warn", "danger" or "" (neutral). */
export function badge(text, kind = "") {
  return h("span", { class: kind ? `badge ${kind}` : "badge" }, text);
}

/** Copies text to the clipboard, with a toast saying so (or why not). */
export async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    toast("Copied to the clipboard.");
    return true;
  } catch {
    toast("The browser refused the clipboard: select the text and copy it by hand.");
    return false;
  }
}

/** Loads a stylesheet once (a vendored library's CSS, e.g.
 * `ui.loadStyle(new URL("../../vendor/xterm/xterm.css", import.meta.url))` from a page module);
 * resolves when it has loaded. */
export function loadStyle(href) {
  const url = String(href);
  const existing = document.querySelector(`link[rel="stylesheet"][href="${CSS.escape(url)}"]`);
  if (existing) return Promise.resolve(existing);
  return new Promise((resolve, reject) => {
    const link = h("link", { rel: "stylesheet", href: url });
    link.addEventListener("load", () => resolve(link), { once: true });
    link.addEventListener("error", () => reject(new Error(`the stylesheet ${url} failed to load`)), {
      once: true,
    });
    document.head.appendChild(link);
  });
}
