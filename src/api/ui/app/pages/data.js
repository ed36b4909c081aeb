// The data page: the key-value store. Browse keys by prefix (paged with the list's cursor),
// open one to view and edit its JSON value, create and delete keys. Every change is a
// compare-and-set: it sends the version that was read (`If-Match`, or `If-None-Match: *` to
// create), so a change made meanwhile by someone else is refused (412) and shown with the
// current value instead of being overwritten. The watch stream (`?watch=true`, Server-Sent
// Events from the listing's revision) keeps the list and the open key current.
import { api, events, ApiError } from "../api.js";
import { h, clear, showError, toast, confirmDialog, formatTime } from "../ui.js";

const PAGE = 100;

/** The URL of a key: the whole key percent-encoded (the API decodes `%2F` to `/`). */
function keyPath(key) {
  return `/api/v1/data/${encodeURIComponent(key)}`;
}

/** A value as the editor shows it: formatted JSON. */
function pretty(value) {
  return JSON.stringify(value === undefined ? null : value, null, 2);
}

/** A one-line preview of a value for the list. */
function preview(value) {
  const s = JSON.stringify(value === undefined ? null : value);
  return s.length > 80 ? `${s.slice(0, 79)}…` : s;
}

/** Parses JSON text; returns {value} or {error: "line L, column C: …"}. */
function parseJson(text) {
  try {
    return { value: JSON.parse(text) };
  } catch (e) {
    const msg = e instanceof Error ? e.message : String(e);
    return { error: msg };
  }
}

export default {
  title: "Data",
  async mount(root, ctx) {
    const params = ctx.params;
    const state = {
      prefix: params.get("prefix") || "",
      rows: new Map(), // key -> {key, value, version}
      cursor: null,
      revision: null,
      // The key open in the editor: null (none), or {key, version (null: new), dirty}.
      open: null,
      stream: null,
      retry: null,
      closed: false,
      // A save in flight, and the changes to the open key seen meanwhile.
      saving: false,
      held: [],
    };

    // ---- layout ----
    const prefixInput = h("input", {
      id: "data-prefix",
      type: "search",
      name: "prefix",
      autocomplete: "off",
      spellcheck: "false",
      placeholder: "e.g. users/",
    });
    prefixInput.value = state.prefix;
    const listError = h("div", { class: "page-errors" });
    const liveStatus = h("span", { class: "badge", "aria-live": "polite", "data-test": "live-status" }, "connecting…");
    const tableHolder = h("div", { class: "table-wrap" });
    const moreBtn = h("button", { type: "button", class: "btn", "on:click": () => loadPage(false) }, "Load more keys");
    moreBtn.hidden = true;
    const countText = h("p", { class: "muted", "aria-live": "polite" });

    const browse = h(
      "section",
      { class: "card", "aria-labelledby": "data-keys-h" },
      h("h2", { id: "data-keys-h" }, "Keys"),
      h(
        "form",
        { class: "toolbar", role: "search", "on:submit": (e) => { e.preventDefault(); setPrefix(prefixInput.value); } },
        h("div", { class: "field" }, h("label", { for: "data-prefix" }, "Prefix"), prefixInput),
        h("button", { type: "submit", class: "btn" }, "Show keys"),
        h("button", { type: "button", class: "btn primary", "on:click": () => openNew() }, "New key"),
        liveStatus,
      ),
      listError,
      countText,
      tableHolder,
      moreBtn,
    );

    // The editor.
    const editorTitle = h("h2", { id: "data-editor-h" }, "Value");
    const keyInput = h("input", { id: "data-key", type: "text", name: "key", autocomplete: "off", spellcheck: "false" });
    const keyField = h("div", { class: "field" }, h("label", { for: "data-key" }, "Key"), keyInput);
    const valueError = h("p", { id: "data-value-error", class: "field-error", role: "alert" });
    const valueInput = h("textarea", {
      id: "data-value",
      name: "value",
      class: "mono json-editor",
      rows: "14",
      spellcheck: "false",
      autocomplete: "off",
      "aria-describedby": "data-value-error data-value-hint",
    });
    const versionText = h("p", { class: "muted", "aria-live": "polite" });
    const notice = h("div", { class: "data-notice", "aria-live": "polite" });
    const editorError = h("div", { class: "page-errors" });
    const saveBtn = h("button", { type: "submit", class: "btn primary" }, "Save");
    const deleteBtn = h("button", { type: "button", class: "btn danger", "on:click": () => removeOpen() }, "Delete key");
    const reloadBtn = h("button", { type: "button", class: "btn", "on:click": () => reloadOpen() }, "Reload");
    const formatBtn = h("button", { type: "button", class: "btn", "on:click": () => formatValue() }, "Format JSON");
    const closeBtn = h("button", { type: "button", class: "btn", "on:click": () => closeEditor() }, "Close");
    const editorForm = h(
      "form",
      { class: "data-editor", "on:submit": (e) => { e.preventDefault(); save(); } },
      keyField,
      h(
        "div",
        { class: "field" },
        h("label", { for: "data-value" }, "Value (JSON)"),
        valueInput,
        h("p", { id: "data-value-hint", class: "muted" }, "Any JSON: an object, array, string, number, true, false or null. It is checked before it is sent."),
        valueError,
      ),
      versionText,
      notice,
      editorError,
      h("div", { class: "row" }, saveBtn, formatBtn, reloadBtn, deleteBtn, closeBtn),
    );
    const editor = h("section", { class: "card", "aria-labelledby": "data-editor-h" }, editorTitle, editorForm);
    editor.hidden = true;

    root.append(h("div", { class: "page-head" }, h("h1", {}, "Data")), h("div", { class: "data-layout" }, browse, editor));

    valueInput.addEventListener("input", () => {
      if (state.open) state.open.dirty = true;
      clear(valueError);
      valueInput.removeAttribute("aria-invalid");
    });

    // ---- the URL keeps the prefix and the open key ----
    function syncUrl() {
      const q = new URLSearchParams();
      if (state.prefix) q.set("prefix", state.prefix);
      if (state.open && state.open.version !== null) q.set("key", state.open.key);
      const s = q.toString();
      history.replaceState(history.state, "", `/data${s ? `?${s}` : ""}`);
    }

    // ---- the list ----
    function renderList() {
      const rows = [...state.rows.values()].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
      clear(tableHolder);
      const t = h("table", { class: "list", "data-test": "data-keys" },
        h("caption", { class: "visually-hidden" }, state.prefix ? `Keys starting with ${state.prefix}` : "All keys"),
        h("thead", {}, h("tr", {},
          h("th", { scope: "col" }, "Key"),
          h("th", { scope: "col" }, "Value"),
          h("th", { scope: "col" }, "Version"))),
        h("tbody", {}, rows.map((r) => h("tr", { "data-key": r.key, class: state.open && state.open.key === r.key ? "selected" : "" },
          h("td", {}, h("button", { type: "button", class: "linkish mono", "on:click": () => openKey(r.key) }, r.key)),
          h("td", { class: "mono muted cell-clip" }, preview(r.value)),
          h("td", { class: "mono" }, r.version)))),
      );
      if (rows.length === 0) {
        tableHolder.append(h("p", { class: "empty" }, state.prefix ? `No keys start with “${state.prefix}”.` : "No keys yet. Create one with “New key”."));
      } else {
        tableHolder.append(t);
      }
      moreBtn.hidden = !state.cursor;
      countText.textContent = rows.length === 0 ? "" : `${rows.length} key${rows.length === 1 ? "" : "s"} shown${state.cursor ? " (more below)" : ""}.`;
    }

    async function loadPage(first) {
      clear(listError);
      moreBtn.disabled = true;
      try {
        const query = { prefix: state.prefix, limit: PAGE };
        if (!first && state.cursor) query.cursor = state.cursor;
        const page = await api("GET", "/api/v1/data", { query });
        if (first) {
          state.rows.clear();
          state.revision = page.revision;
        }
        for (const it of page.items) state.rows.set(it.key, it);
        state.cursor = page.next_cursor || null;
        renderList();
      } catch (err) {
        showError(err, listError);
      } finally {
        moreBtn.disabled = false;
      }
    }

    /** Whether a key would be on the pages loaded so far (so a new key shows up in place). */
    function inLoadedRange(key) {
      if (!key.startsWith(state.prefix)) return false;
      if (!state.cursor) return true;
      let last = null;
      for (const k of state.rows.keys()) if (last === null || k > last) last = k;
      return last !== null && key < last;
    }

    // ---- live updates ----
    function setLive(text, kind) {
      liveStatus.textContent = text;
      liveStatus.className = `badge${kind ? ` ${kind}` : ""}`;
    }

    function startWatch() {
      stopWatch();
      if (state.closed) return;
      const q = new URLSearchParams({ watch: "true", prefix: state.prefix });
      if (state.revision !== null) q.set("since", state.revision);
      setLive("connecting…", "");
      state.stream = events(`/api/v1/data?${q}`, {
        onMessage: (ev) => onChange(ev),
        onError: (err) => {
          if (state.closed) return;
          setLive("live updates stopped", "warn");
          if (err instanceof ApiError && err.status === 410) {
            // The resume point is gone: list again, then watch from the new revision.
            loadPage(true).then(startWatch);
            return;
          }
          if (err instanceof ApiError && err.status >= 400 && err.status < 500 && err.status !== 408 && err.status !== 429) {
            // Refused (no read scope, a bad prefix): asking again would be refused again.
            showError(new ApiError(`Live updates are off: ${err.message}`, err), listError);
            return;
          }
          state.retry = setTimeout(() => { state.retry = null; startWatch(); }, 5000);
        },
        onEnd: () => {
          // The daemon ended the stream (it is stopping, or an error event came first).
          if (state.closed) return;
          setLive("live updates stopped", "warn");
          if (!state.retry) state.retry = setTimeout(() => { state.retry = null; startWatch(); }, 5000);
        },
      });
      setLive("live", "ok");
    }

    function stopWatch() {
      if (state.retry) { clearTimeout(state.retry); state.retry = null; }
      if (state.stream) { state.stream.close(); state.stream = null; }
    }

    function onChange(ev) {
      let d;
      try { d = JSON.parse(ev.data); } catch { return; }
      if (ev.event === "progress") {
        if (d.revision) state.revision = d.revision;
        setLive("live", "ok");
        return;
      }
      if (ev.event === "error") {
        const msg = d && d.error ? d.error.message : "the change stream ended";
        setLive("live updates stopped", "warn");
        showError(new Error(`Live updates stopped: ${msg}`), listError);
        if (d && d.error && d.error.code === "gone") loadPage(true).then(startWatch);
        return;
      }
      if (ev.event !== "put" && ev.event !== "delete") return;
      if (ev.id) state.revision = ev.id;
      if (ev.event === "put") {
        if (state.rows.has(d.key) || inLoadedRange(d.key)) {
          state.rows.set(d.key, { key: d.key, value: d.value, version: d.version });
        }
      } else {
        state.rows.delete(d.key);
      }
      renderList();
      onOpenKeyChanged(ev.event, d);
    }

    /** Another client changed the key in the editor. */
    function onOpenKeyChanged(kind, d) {
      const o = state.open;
      if (!o || o.key !== d.key) return;
      if (o.version !== null && d.version === o.version) return; // our own save
      if (state.saving) {
        // Our save's own change may come before its answer: decide once the answer is in.
        state.held.push([kind, d]);
        return;
      }
      clear(notice);
      if (kind === "delete") {
        if (o.version === null) return;
        notice.append(h("p", { class: "alert warn" }, `This key was deleted by another client (version ${d.version}). Saving now creates it again only if you reload first.`));
        return;
      }
      if (!o.dirty) {
        valueInput.value = pretty(d.value);
        o.version = d.version;
        showVersion();
        notice.append(h("p", { class: "alert" }, `Updated by another client to version ${d.version}.`));
      } else {
        notice.append(
          h("div", { class: "alert warn" },
            h("p", {}, `Another client changed this key (now version ${d.version}) while you were editing. Saving will be refused; reload to see their value.`),
            h("button", { type: "button", class: "btn small", "on:click": () => reloadOpen() }, "Reload their value")),
        );
      }
    }

    function setPrefix(p) {
      state.prefix = p;
      syncUrl();
      loadPage(true).then(startWatch);
    }

    // ---- the editor ----
    function showVersion() {
      const o = state.open;
      versionText.textContent = !o ? "" : o.version === null ? "New key: it is created only if it does not exist yet." : `Version ${o.version}${o.readAt ? ` · read ${formatTime(o.readAt)}` : ""}`;
    }

    function showEditor(key, isNew) {
      editor.hidden = false;
      clear(editorError);
      clear(notice);
      clear(valueError);
      valueInput.removeAttribute("aria-invalid");
      keyInput.readOnly = !isNew;
      keyInput.value = key;
      editorTitle.textContent = isNew ? "New key" : `Key ${key}`;
      deleteBtn.hidden = isNew;
      reloadBtn.hidden = isNew;
      showVersion();
      renderList();
      syncUrl();
    }

    function openNew() {
      state.open = { key: "", version: null, dirty: false };
      showEditor(state.prefix, true);
      valueInput.value = "{}";
      keyInput.focus();
    }

    async function openKey(key) {
      clear(editorError);
      try {
        const e = await api("GET", keyPath(key));
        state.open = { key: e.key, version: e.version, dirty: false, readAt: new Date().toISOString() };
        showEditor(e.key, false);
        valueInput.value = pretty(e.value);
        valueInput.focus();
      } catch (err) {
        if (err instanceof ApiError && err.status === 404) {
          state.rows.delete(key);
          renderList();
          showError(new Error(`The key “${key}” does not exist (any more).`), listError);
        } else {
          showError(err, listError);
        }
      }
    }

    async function reloadOpen() {
      if (!state.open) return;
      await openKey(state.open.key);
    }

    function closeEditor() {
      state.open = null;
      editor.hidden = true;
      renderList();
      syncUrl();
    }

    function validateValue() {
      const text = valueInput.value;
      const r = parseJson(text);
      clear(valueError);
      if (r.error !== undefined) {
        valueError.textContent = `Not valid JSON: ${r.error}`;
        valueInput.setAttribute("aria-invalid", "true");
        valueInput.focus();
        return null;
      }
      valueInput.removeAttribute("aria-invalid");
      return { text, value: r.value };
    }

    function formatValue() {
      const r = validateValue();
      if (r) valueInput.value = pretty(r.value);
    }

    async function save() {
      const o = state.open;
      if (!o) return;
      clear(editorError);
      const key = o.version === null ? keyInput.value : o.key;
      if (!key) {
        showError(new Error("Give the key a name."), editorError);
        keyInput.focus();
        return;
      }
      const v = validateValue();
      if (!v) return;
      const headers = { "Content-Type": "application/json" };
      if (o.version === null) headers["If-None-Match"] = "*";
      else headers["If-Match"] = `"${o.version}"`;
      saveBtn.disabled = true;
      state.saving = true;
      state.held = [];
      try {
        const w = await api("PUT", keyPath(key), { body: v.text, headers });
        state.open = { key, version: w.version, dirty: false, readAt: new Date().toISOString() };
        state.rows.set(key, { key, value: v.value, version: w.version });
        showEditor(key, false);
        // Said beside the form (a toast could cover the buttons of the editor).
        clear(notice);
        notice.append(h("p", { class: "alert ok", "data-test": "saved" }, `Saved ${key} (version ${w.version}).`));
        state.saving = false;
        // Changes by others after ours still count.
        for (const [kind, d] of state.held) {
          if (Number(d.version) > Number(w.version)) onOpenKeyChanged(kind, d);
        }
      } catch (err) {
        if (err instanceof ApiError && err.status === 412) {
          await showConflict(key, o.version === null);
        } else {
          showError(err, editorError);
        }
      } finally {
        state.saving = false;
        state.held = [];
        saveBtn.disabled = false;
      }
    }

    /** A refused compare-and-set: show the value as it is now, and the ways on. */
    async function showConflict(key, wasNew) {
      clear(notice);
      let current = null;
      try {
        current = await api("GET", keyPath(key));
      } catch (err) {
        if (!(err instanceof ApiError && err.status === 404)) {
          showError(err, editorError);
          return;
        }
      }
      const box = h("div", { class: "alert danger conflict", role: "alert", "data-test": "conflict" });
      if (wasNew) {
        box.append(h("p", {}, current ? `Not created: the key “${key}” already exists (version ${current.version}).` : `Not created: the key “${key}” was created and deleted meanwhile.`));
      } else if (!current) {
        box.append(h("p", {}, `Conflict: the key “${key}” was deleted by someone else since you opened it. Your value was not saved.`));
      } else {
        box.append(h("p", {}, `Conflict: the key “${key}” was changed by someone else (you read version ${state.open ? state.open.version : "?"}, it is now version ${current.version}). Your value was not saved.`));
      }
      if (current) {
        box.append(h("p", {}, "The current value:"), h("pre", { class: "mono json-view", tabindex: "0" }, pretty(current.value)));
      }
      const row = h("div", { class: "row" });
      if (current) {
        row.append(
          h("button", { type: "button", class: "btn", "on:click": () => openKey(key) }, "Load the current value (drop my edits)"),
          h("button", { type: "button", class: "btn danger", "on:click": () => {
            // Keep the user's text and make the next save apply on top of the current version.
            state.open = { key, version: current.version, dirty: true, readAt: new Date().toISOString() };
            keyInput.readOnly = true;
            deleteBtn.hidden = false;
            reloadBtn.hidden = false;
            clear(notice);
            showVersion();
            save();
          } }, "Overwrite with my value"),
        );
      } else {
        row.append(h("button", { type: "button", class: "btn", "on:click": () => {
          state.open = { key, version: null, dirty: true };
          clear(notice);
          showVersion();
        } }, "Create it again with my value"));
      }
      box.append(row);
      notice.append(box);
      box.scrollIntoView({ block: "nearest" });
    }

    async function removeOpen() {
      const o = state.open;
      if (!o || o.version === null) return;
      const ok = await confirmDialog(`Delete the key “${o.key}”?`, { danger: true });
      if (!ok) return;
      clear(editorError);
      try {
        await api("DELETE", keyPath(o.key), { headers: { "If-Match": `"${o.version}"` } });
        state.rows.delete(o.key);
        toast(`Deleted ${o.key}.`);
        closeEditor();
      } catch (err) {
        if (err instanceof ApiError && err.status === 412) await showConflict(o.key, false);
        else if (err instanceof ApiError && err.status === 404) {
          state.rows.delete(o.key);
          closeEditor();
          toast(`${o.key} was already deleted.`);
        } else showError(err, editorError);
      }
    }

    // ---- start ----
    await loadPage(true);
    startWatch();
    const openAtStart = params.get("key");
    if (openAtStart) await openKey(openAtStart);

    return () => {
      state.closed = true;
      stopWatch();
    };
  },
};
