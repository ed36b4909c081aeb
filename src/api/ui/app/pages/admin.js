// The admin page: API tokens (list, create with scopes, the secret shown once with a copy
// button, revoke), backups (create, list, verify, prune), the audit log (filters, paging) and
// the alerts. Every route here needs the admin scope; a refusal is shown as the API words it.

const SCOPES = [
  ["read", "read: data, files, programs, monitoring"],
  ["write", "write: change data and files, upload programs"],
  ["exec", "exec: run commands, programs and terminals"],
  ["metrics", "metrics: the Prometheus scrape"],
  ["admin", "admin: everything, tokens and backups included"],
];

const EXPIRY = [
  ["", "never"],
  ["1d", "1 day"],
  ["7d", "7 days"],
  ["30d", "30 days"],
  ["90d", "90 days"],
  ["365d", "1 year"],
];

/** A `datetime-local` value as RFC 3339 (UTC), or undefined when empty. */
function rfc3339(local) {
  if (!local) return undefined;
  const d = new Date(local);
  return Number.isNaN(d.getTime()) ? undefined : d.toISOString().replace(/\.\d{3}Z$/, "Z");
}

export default {
  title: "Admin",
  async mount(root, { api, ui, whoami }) {
    const { h } = ui;
    if (whoami && !(whoami.actor?.scopes || []).includes("admin")) {
      root.append(
        h("div", { class: "page-head" }, h("h1", null, "Admin")),
        h(
          "div",
          { class: "alert warn", role: "note" },
          h(
            "p",
            null,
            `Tokens, backups and the audit log need a token with the admin scope; ${whoami.actor.name} has ${
              (whoami.actor.scopes || []).join(", ") || "no scope"
            }. Log in with an admin token to use this page.`,
          ),
        ),
      );
      return undefined;
    }

    const section = (id, title, ...children) =>
      h("section", { class: "card", id, "aria-labelledby": `${id}-title` }, h("h2", { id: `${id}-title` }, title), ...children);

    root.append(
      h(
        "div",
        { class: "page-head" },
        h("h1", null, "Admin"),
        h(
          "nav",
          { class: "row", "aria-label": "Admin sections" },
          h("a", { href: "#tokens" }, "Tokens"),
          h("a", { href: "#backups" }, "Backups"),
          h("a", { href: "#audit" }, "Audit log"),
          h("a", { href: "#alerts" }, "Alerts"),
        ),
      ),
    );

    // =========================== Tokens ===========================
    const tokName = h("input", { type: "text", id: "token-name", autocomplete: "off", required: true, maxlength: "64", spellcheck: "false" });
    const scopeBoxes = SCOPES.map(([scope, label]) => {
      const box = h("input", { type: "checkbox", id: `scope-${scope}`, name: "scopes", value: scope, checked: scope === "read" });
      return { scope, box, el: h("div", { class: "field inline" }, box, h("label", { for: `scope-${scope}` }, label)) };
    });
    const expiry = h("select", { id: "token-expiry" }, EXPIRY.map(([v, l]) => h("option", { value: v }, l)));
    const tokErr = h("div");
    const secretBox = h("div", { "aria-live": "polite" });
    const createBtn = h("button", { type: "submit", class: "btn primary" }, "Create token");
    const tokForm = h(
      "form",
      { class: "token-form", "aria-labelledby": "token-create-title" },
      h("h3", { id: "token-create-title", class: "sub" }, "New token"),
      tokErr,
      h("div", { class: "row" }, ui.field("Name", tokName, "Letters, digits, '-', '_' and '.'."), ui.field("Expires after", expiry)),
      h("fieldset", null, h("legend", null, "Scopes"), scopeBoxes.map((s) => s.el)),
      h("div", { class: "row" }, createBtn),
    );
    const showRevoked = h("input", { type: "checkbox", id: "tokens-show-revoked", "on:change": () => loadTokens() });
    const tokList = h("div");
    root.appendChild(
      section(
        "tokens",
        "Tokens",
        secretBox,
        h("div", { class: "toolbar" }, h("div", { class: "field inline" }, showRevoked, h("label", { for: "tokens-show-revoked" }, "Show revoked and expired tokens"))),
        tokList,
        tokForm,
      ),
    );

    function tokenState(t) {
      if (t.revoked_at) return ui.badge("revoked", "danger");
      if (t.expires_at && Date.parse(t.expires_at) <= Date.now()) return ui.badge("expired", "warn");
      return ui.badge("active", "ok");
    }

    async function loadTokens() {
      let items = [];
      try {
        let cursor;
        do {
          const page = await api.api("GET", "/api/v1/tokens", { query: { cursor } });
          items = items.concat(page.items || []);
          cursor = page.next_cursor;
        } while (cursor);
      } catch (err) {
        ui.clear(tokList);
        ui.showError(err, tokList);
        return;
      }
      const rows = showRevoked.checked
        ? items
        : items.filter((t) => !t.revoked_at && !(t.expires_at && Date.parse(t.expires_at) <= Date.now()));
      ui.fill(
        tokList,
        h(
          "div",
          { class: "table-wrap" },
          ui.table({
            caption: "API tokens",
            columns: [
              { label: "Name", value: (t) => h("strong", null, t.name) },
              { label: "Scopes", value: (t) => t.scopes.map((s, i) => [i ? " " : null, ui.badge(s, s === "admin" ? "warn" : "")]) },
              { label: "State", value: tokenState },
              { label: "Created", value: (t) => ui.formatTime(t.created_at) },
              { label: "Last used", value: (t) => (t.last_used_at ? ui.formatTime(t.last_used_at) : "never") },
              { label: "Expires", value: (t) => (t.expires_at ? ui.formatTime(t.expires_at) : "never") },
              { label: "Id", value: (t) => h("span", { class: "mono" }, t.id) },
              {
                label: "Actions",
                class: "actions",
                value: (t) =>
                  t.revoked_at
                    ? ""
                    : h(
                        "button",
                        {
                          type: "button",
                          class: "btn small danger",
                          "aria-label": `Revoke ${t.name}`,
                          "on:click": () => revoke(t),
                        },
                        "Revoke",
                      ),
              },
            ],
            rows,
            empty: "No tokens.",
          }),
        ),
      );
    }

    async function revoke(t) {
      const self = t.id === (api.currentSession()?.actor?.token_id ?? null);
      const ok = await ui.confirmDialog(
        self
          ? `Revoke ${t.name}? It is the token this browser logged in with: this session ends too.`
          : `Revoke the token ${t.name}? Every client using it is refused from now on.`,
        { danger: true, confirmLabel: "Revoke", title: "Revoke a token" },
      );
      if (!ok) return;
      try {
        await api.api("DELETE", `/api/v1/tokens/${encodeURIComponent(t.id)}`);
        ui.toast(`Token ${t.name} revoked.`);
      } catch (err) {
        ui.showError(err, tokList);
        return;
      }
      await loadTokens();
    }

    tokForm.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      tokErr.querySelector(":scope > .alert")?.remove();
      const name = tokName.value.trim();
      const scopes = scopeBoxes.filter((s) => s.box.checked).map((s) => s.scope);
      if (!name) {
        tokName.setAttribute("aria-invalid", "true");
        ui.showError("Give the token a name.", tokErr);
        tokName.focus();
        return;
      }
      tokName.removeAttribute("aria-invalid");
      if (scopes.length === 0) {
        ui.showError("Choose at least one scope.", tokErr);
        scopeBoxes[0].box.focus();
        return;
      }
      const body = { name, scopes };
      if (expiry.value) body.expires_in = expiry.value;
      createBtn.disabled = true;
      try {
        const made = await api.api("POST", "/api/v1/tokens", { json: body });
        showSecret(made);
        tokName.value = "";
      } catch (err) {
        ui.showError(err, tokErr);
        return;
      } finally {
        createBtn.disabled = false;
      }
      await loadTokens();
    });

    function showSecret(made) {
      const secret = h("input", {
        type: "text",
        id: "new-token-secret",
        readonly: true,
        value: made.token,
        class: "mono secret",
        spellcheck: "false",
        "on:focus": (e) => e.target.select(),
      });
      const box = h(
        "div",
        { class: "alert ok secret-box", "data-test": "new-token" },
        h(
          "div",
          { class: "grow" },
          h("p", null, h("strong", null, `Token ${made.name} created. `), "Copy its secret now: it is shown only this once."),
          ui.field(`Secret of ${made.name}`, secret),
          h(
            "div",
            { class: "row" },
            h("button", { type: "button", class: "btn primary small", "on:click": () => ui.copyText(made.token) }, "Copy"),
            h("button", { type: "button", class: "btn small", "on:click": () => ui.clear(secretBox) }, "Done, hide it"),
          ),
        ),
      );
      ui.fill(secretBox, box);
      secret.focus();
    }

    // =========================== Backups ===========================
    const backupErr = h("div");
    const backupList = h("div");
    const backupResult = h("div", { "aria-live": "polite" });
    const readData = h("input", { type: "checkbox", id: "verify-read-data" });
    const makeBtn = h("button", { type: "button", class: "btn primary", "on:click": () => makeBackup() }, "Create a backup");
    const pruneBtn = h("button", { type: "button", class: "btn danger", "on:click": () => prune() }, "Prune old backups");
    root.appendChild(
      section(
        "backups",
        "Backups",
        backupErr,
        h(
          "div",
          { class: "toolbar" },
          makeBtn,
          pruneBtn,
          h("div", { class: "field inline" }, readData, h("label", { for: "verify-read-data" }, "Verify re-reads every byte")),
        ),
        backupResult,
        backupList,
      ),
    );

    function note(where, text, kind = "ok") {
      ui.fill(where, h("div", { class: `alert ${kind}` }, h("p", null, text)));
    }

    async function loadBackups() {
      let items = [];
      try {
        let cursor;
        do {
          const page = await api.api("GET", "/api/v1/backups", { query: { cursor } });
          items = items.concat(page.items || []);
          cursor = page.next_cursor;
        } while (cursor);
      } catch (err) {
        ui.clear(backupList);
        ui.showError(err, backupList);
        return;
      }
      ui.fill(
        backupList,
        h(
          "div",
          { class: "table-wrap" },
          ui.table({
            caption: "Backups, newest first",
            columns: [
              { label: "Backup", value: (b) => h("span", { class: "mono" }, b.id) },
              { label: "Created", value: (b) => ui.formatTime(b.created) },
              { label: "Size", class: "num", value: (b) => ui.formatBytes(b.size) },
              {
                label: "Actions",
                class: "actions",
                value: (b) =>
                  h("button", { type: "button", class: "btn small", "aria-label": `Verify ${b.id}`, "on:click": (e) => verify(b, e.currentTarget) }, "Verify"),
              },
            ],
            rows: items.slice().sort((a, b) => b.created.localeCompare(a.created)),
            empty: "No backups yet.",
          }),
        ),
      );
    }

    async function makeBackup() {
      makeBtn.disabled = true;
      note(backupResult, "Making a backup…", "");
      try {
        const c = await api.api("POST", "/api/v1/backups");
        const missing = c.missing_blobs && c.missing_blobs.length ? ` ${c.missing_blobs.length} files had no data to back up.` : "";
        note(
          backupResult,
          `Backup ${c.id} made: ${ui.formatBytes(c.size)}, ${c.files} files, ${c.programs} programs, in ${ui.formatDuration(c.duration_ms)}.${missing}`,
          missing ? "warn" : "ok",
        );
      } catch (err) {
        ui.clear(backupResult);
        ui.showError(err, backupResult);
      } finally {
        makeBtn.disabled = false;
      }
      await loadBackups();
    }

    async function verify(b, btn) {
      btn.disabled = true;
      note(backupResult, `Verifying ${b.id}…`, "");
      try {
        const v = await api.api("POST", `/api/v1/backups/${encodeURIComponent(b.id)}/verify`, {
          query: { read_data: readData.checked ? "true" : undefined },
        });
        note(
          backupResult,
          `Backup ${b.id} is sound: ${v.entries} entries, ${ui.formatBytes(v.data_bytes)} of data, ${
            v.read_data ? "every byte re-read and every SHA-256 recomputed" : "structure, sizes and checksums checked"
          } (made by localhostd ${v.daemon_version}, schema ${v.schema_version}).`,
        );
      } catch (err) {
        ui.clear(backupResult);
        ui.showError(err, backupResult);
      } finally {
        btn.disabled = false;
      }
    }

    async function prune() {
      const ok = await ui.confirmDialog("Delete the backups that the retention policy (the [backup] section of the config) no longer keeps?", {
        danger: true,
        confirmLabel: "Prune",
        title: "Prune backups",
      });
      if (!ok) return;
      pruneBtn.disabled = true;
      try {
        const r = await api.api("POST", "/api/v1/backups:prune");
        const n = (r.removed || []).length;
        note(backupResult, n ? `Pruned ${n} backup${n > 1 ? "s" : ""}: ${r.removed.map((b) => b.id).join(", ")}.` : "Nothing to prune: every backup is still kept by the policy.");
      } catch (err) {
        ui.clear(backupResult);
        ui.showError(err, backupResult);
      } finally {
        pruneBtn.disabled = false;
      }
      await loadBackups();
    }

    // =========================== Audit log ===========================
    const fActor = h("input", { type: "text", id: "audit-actor", autocomplete: "off", spellcheck: "false" });
    const fAction = h("input", { type: "text", id: "audit-action", autocomplete: "off", spellcheck: "false", placeholder: "e.g. token.create", list: "audit-actions" });
    const actions = h(
      "datalist",
      { id: "audit-actions" },
      ["token.create", "token.revoke", "session.create", "session.end", "auth.refused", "auth.csrf_refused", "backup.create", "backup.prune"].map((a) =>
        h("option", { value: a }),
      ),
    );
    const fSince = h("input", { type: "datetime-local", id: "audit-since", step: "1" });
    const fUntil = h("input", { type: "datetime-local", id: "audit-until", step: "1" });
    const auditList = h("div");
    const auditOlder = h("button", { type: "button", class: "btn small", hidden: true, "on:click": () => loadAudit(true) }, "Older events");
    const auditForm = h(
      "form",
      { class: "audit-filters", "aria-label": "Audit log filters" },
      h("div", { class: "row" }, ui.field("Actor", fActor), ui.field("Action", fAction), ui.field("Since", fSince), ui.field("Until", fUntil)),
      actions,
      h(
        "div",
        { class: "row" },
        h("button", { type: "submit", class: "btn primary" }, "Filter"),
        h(
          "button",
          {
            type: "button",
            class: "btn",
            "on:click": () => {
              auditForm.reset();
              loadAudit(false);
            },
          },
          "Clear filters",
        ),
      ),
    );
    root.appendChild(section("audit", "Audit log", auditForm, auditList, h("div", { class: "row" }, auditOlder)));

    let auditCursor = null;
    let auditRows = [];
    async function loadAudit(more) {
      let page;
      try {
        page = await api.api("GET", "/api/v1/audit", {
          query: {
            actor: fActor.value.trim(),
            action: fAction.value.trim(),
            since: rfc3339(fSince.value),
            until: rfc3339(fUntil.value),
            limit: 50,
            cursor: more ? auditCursor : undefined,
          },
        });
      } catch (err) {
        ui.clear(auditList);
        ui.showError(err, auditList);
        return;
      }
      auditRows = more ? auditRows.concat(page.items || []) : page.items || [];
      auditCursor = page.next_cursor || null;
      auditOlder.hidden = !auditCursor;
      ui.fill(
        auditList,
        h("p", { class: "muted hint", "aria-live": "polite" }, `${auditRows.length} event${auditRows.length === 1 ? "" : "s"} shown${auditCursor ? "; older ones on request" : ""}.`),
        h(
          "div",
          { class: "table-wrap" },
          ui.table({
            caption: "Audit events, newest first",
            columns: [
              { label: "Time", value: (e) => ui.formatTime(e.at) },
              { label: "Actor", value: (e) => e.actor },
              { label: "Action", value: (e) => h("span", { class: "mono" }, e.action) },
              { label: "Target", value: (e) => h("span", { class: "mono" }, e.target) },
              { label: "Result", value: (e) => ui.badge(e.result, e.result === "ok" ? "ok" : e.result === "refused" ? "warn" : "danger") },
              { label: "Client", value: (e) => e.client },
              { label: "Detail", class: "command", value: (e) => e.detail },
              { label: "Request id", value: (e) => h("span", { class: "mono" }, e.request_id || "–") },
            ],
            rows: auditRows,
            empty: "No events match.",
          }),
        ),
      );
    }
    auditForm.addEventListener("submit", (ev) => {
      ev.preventDefault();
      loadAudit(false);
    });

    // =========================== Alerts ===========================
    const alertList = h("div");
    root.appendChild(
      section(
        "alerts",
        "Alerts",
        h("p", { class: "muted" }, "Thresholds come from the [alerts] section of the config; the dashboard shows the same states live."),
        alertList,
      ),
    );
    async function loadAlerts() {
      let page;
      try {
        page = await api.api("GET", "/api/v1/alerts");
      } catch (err) {
        ui.clear(alertList);
        ui.showError(err, alertList);
        return;
      }
      const kind = { firing: "danger", pending: "warn", ok: "ok" };
      ui.fill(
        alertList,
        h(
          "div",
          { class: "table-wrap" },
          ui.table({
            caption: "Alerts",
            columns: [
              { label: "Alert", value: (a) => h("strong", null, a.name) },
              { label: "Condition", value: (a) => a.description },
              { label: "State", value: (a) => ui.badge(a.state, kind[a.state] || "") },
              { label: "Value", class: "num", value: (a) => (a.value === null || a.value === undefined ? "–" : a.value.toFixed(1)) },
              { label: "Threshold", class: "num", value: (a) => String(a.threshold) },
              { label: "Since", value: (a) => ui.formatTime(a.since) },
              { label: "Fired", value: (a) => (a.fired_at ? ui.formatTime(a.fired_at) : "never") },
              { label: "Resolved", value: (a) => (a.resolved_at ? ui.formatTime(a.resolved_at) : "–") },
            ],
            rows: page.items || [],
            empty: "No alerts are configured.",
          }),
        ),
      );
    }

    await Promise.all([loadTokens(), loadBackups(), loadAudit(false), loadAlerts()]);
    return undefined;
  },
};
