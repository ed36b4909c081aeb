// The console: runs a command in the sandbox with POST /api/v1/exec (Server-Sent Events:
// stdout/stderr as they come, then the result), shows status, exit code and duration, and lists
// the execution history (GET /api/v1/executions, newest first, paged). Its options add mounts,
// outputs and inline files (the result then shows the outputs report) and a run in the
// background (`wait: false`: the job is followed on the Jobs page).
import { STATUS_TEXT, statusKind, statusBadge as badgeOf, decodeOutput, runOptions, backgroundBox, startedInBackground, showOutputs } from "../jobs.js";

/** Output chunk text: as is for utf-8, decoded (invalid bytes replaced) for base64. */
function chunkText(chunk) {
  return decodeOutput(chunk.data, chunk.encoding);
}

export default {
  title: "Console",
  async mount(root, { api, ui }) {
    const { h } = ui;
    let stream = null;
    let startedAt = 0;
    let ticker = null;

    // ---- The form ----
    const command = h("input", {
      type: "text",
      id: "console-command",
      name: "command",
      autocomplete: "off",
      spellcheck: "false",
      autocapitalize: "off",
      class: "mono",
      placeholder: "e.g. uname -a; ls -l /",
      required: true,
    });
    const profile = h("input", { type: "text", id: "console-profile", list: "console-profiles", value: "default", class: "mono" });
    const profiles = h("datalist", { id: "console-profiles" }, h("option", { value: "default" }), h("option", { value: "net" }));
    const timeout = h("input", { type: "number", id: "console-timeout", min: "1", step: "1", inputmode: "numeric", placeholder: "the server's default" });
    const stdin = h("textarea", { id: "console-stdin", rows: 3, spellcheck: "false" });
    const options = runOptions({ prefix: "console", inlineFiles: true });
    const background = backgroundBox("console");
    const runBtn = h("button", { type: "submit", class: "btn primary" }, "Run");
    const stopBtn = h("button", { type: "button", class: "btn", hidden: true, "on:click": () => stopFollowing() }, "Stop following");
    const formErr = h("div");
    const form = h(
      "form",
      { class: "card console-form", "aria-labelledby": "console-run-title" },
      h("h2", { id: "console-run-title" }, "Run a command"),
      formErr,
      ui.field("Command", command, "Run by /bin/sh -c in the sandbox, with a fresh working directory."),
      h(
        "details",
        { class: "more" },
        h("summary", null, "More options"),
        h(
          "div",
          { class: "row" },
          ui.field("Sandbox profile", profile),
          ui.field("Timeout (seconds)", timeout),
        ),
        profiles,
        ui.field("Standard input", stdin),
      ),
      options.el,
      background.el,
      h("div", { class: "row" }, runBtn, stopBtn),
    );

    // ---- The result ----
    const statusBadge = h("span", { class: "badge" }, "not run yet");
    const facts = h("dl", { class: "facts run-facts" });
    const outputsBox = h("div");
    const output = h("pre", { class: "console-output", role: "log", "aria-label": "Output", tabindex: "0" });
    const resultErr = h("div");
    const result = h(
      "section",
      { class: "card", "aria-labelledby": "console-result-title", hidden: true },
      h("div", { class: "row spread" }, h("h2", { id: "console-result-title" }, "Output"), h("span", { "aria-live": "polite", "data-test": "run-status" }, statusBadge)),
      resultErr,
      output,
      facts,
      outputsBox,
    );

    // ---- History ----
    const historyBody = h("div");
    const olderBtn = h("button", { type: "button", class: "btn small", hidden: true, "on:click": () => loadHistory(true) }, "Older");
    const history = h(
      "section",
      { class: "card", "aria-labelledby": "console-history-title" },
      h(
        "div",
        { class: "row spread" },
        h("h2", { id: "console-history-title" }, "Execution history"),
        h("button", { type: "button", class: "btn small", "on:click": () => loadHistory(false) }, "Refresh"),
      ),
      historyBody,
      h("div", { class: "row" }, olderBtn),
    );

    root.append(h("div", { class: "page-head" }, h("h1", null, "Console")), form, result, history);

    function setStatus(text, kind) {
      statusBadge.className = kind ? `badge ${kind}` : "badge";
      statusBadge.textContent = text;
    }

    function appendOutput(text, which) {
      const atBottom = output.scrollTop + output.clientHeight >= output.scrollHeight - 4;
      if (which === "stderr") output.appendChild(h("span", { class: "stderr" }, text));
      else output.appendChild(document.createTextNode(text));
      if (atBottom) output.scrollTop = output.scrollHeight;
    }

    function showFacts(r) {
      const rows = [
        ["Status", `${r.status} (${STATUS_TEXT[r.status] || r.status})`],
        ["Exit code", r.exit_code === null || r.exit_code === undefined ? (r.signal ? `none (signal ${r.signal})` : "none") : String(r.exit_code)],
        ["Duration", ui.formatDuration(r.wall_ms)],
        ["CPU time", ui.formatDuration(r.cpu_ms)],
        ["Peak memory", ui.formatBytes((r.max_rss_kb || 0) * 1024)],
        ["Started", ui.formatTime(r.started_at)],
        ["Execution id", r.id],
      ];
      if (r.truncated) rows.push(["Output", "cut at the output limit"]);
      if (r.dropped_bytes) rows.push(["Not shown", `${ui.formatBytes(r.dropped_bytes)} of output the stream could not keep up with`]);
      if (r.message) rows.push(["Message", r.message]);
      ui.fill(facts, rows.map(([k, v]) => [h("dt", null, k), h("dd", { class: k === "Execution id" ? "mono" : null }, v)]));
    }

    function finish() {
      stream = null;
      clearInterval(ticker);
      ticker = null;
      runBtn.disabled = false;
      stopBtn.hidden = true;
    }

    function stopFollowing() {
      if (stream) stream.close();
      finish();
      setStatus("no longer followed", "warn");
      ui.toast("Stopped following: the command runs on until it ends or its timeout.");
    }

    function run(cmd) {
      const body = { command: cmd };
      const p = profile.value.trim();
      if (p && p !== "default") body.profile = p;
      if (timeout.value) {
        const s = Number(timeout.value);
        if (!Number.isFinite(s) || s <= 0) {
          timeout.setAttribute("aria-invalid", "true");
          ui.showError("The timeout must be a positive number of seconds.", formErr);
          return;
        }
        body.timeout_ms = Math.round(s * 1000);
      }
      timeout.removeAttribute("aria-invalid");
      if (stdin.value) body.stdin = stdin.value;
      try {
        Object.assign(body, options.value());
      } catch (err) {
        ui.showError(err, formErr);
        return;
      }

      formErr.querySelector(":scope > .alert")?.remove();
      resultErr.querySelector(":scope > .alert")?.remove();
      result.hidden = false;
      ui.clear(output);
      ui.clear(facts);
      ui.clear(outputsBox);
      if (background.input.checked) {
        runInBackground(body);
        return;
      }
      output.hidden = false;
      setStatus("running…", "");
      runBtn.disabled = true;
      stopBtn.hidden = false;
      startedAt = performance.now();
      ticker = setInterval(() => setStatus(`running… ${ui.formatDuration(performance.now() - startedAt)}`, ""), 1000);
      let got = false;
      stream = api.events("/api/v1/exec", {
        method: "POST",
        json: body,
        onMessage(ev) {
          let d;
          try {
            d = JSON.parse(ev.data);
          } catch {
            return;
          }
          if (ev.event === "stdout" || ev.event === "stderr") {
            appendOutput(chunkText(d), ev.event);
          } else if (ev.event === "result") {
            got = true;
            if (!output.firstChild) output.appendChild(h("span", { class: "muted" }, "(no output)"));
            setStatus(r_label(d), statusKind(d.status));
            showFacts(d);
            showOutputs(outputsBox, d.outputs);
            finish();
            loadHistory(false);
          } else if (ev.event === "error") {
            got = true;
            finish();
            setStatus("failed", "danger");
            ui.showError(new api.ApiError(d.error?.message || "The command failed.", { code: d.error?.code }), resultErr);
            loadHistory(false);
          }
        },
        onError(err) {
          finish();
          setStatus("failed", "danger");
          ui.showError(err, resultErr);
        },
        onEnd() {
          if (!got) {
            finish();
            setStatus("unknown", "warn");
            ui.showError("The output stream ended before the command's result arrived.", resultErr);
          }
        },
      });
    }

    async function runInBackground(body) {
      setStatus("starting…", "");
      runBtn.disabled = true;
      output.hidden = true;
      try {
        const started = await api.api("POST", "/api/v1/exec", { json: { ...body, wait: false } });
        setStatus(started.state || "queued", "");
        ui.fill(outputsBox, startedInBackground(started));
        loadHistory(false);
      } catch (err) {
        setStatus("failed", "danger");
        ui.showError(err, resultErr);
      } finally {
        runBtn.disabled = false;
      }
    }

    function r_label(d) {
      if (d.status === "ok") return "exit 0";
      if (d.status === "nonzero_exit") return `exit ${d.exit_code}`;
      return d.status.replace(/_/g, " ");
    }

    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const cmd = command.value;
      if (!cmd.trim()) {
        command.setAttribute("aria-invalid", "true");
        ui.showError("Enter a command to run.", formErr);
        command.focus();
        return;
      }
      command.removeAttribute("aria-invalid");
      if (stream) return;
      run(cmd);
    });

    // ---- History ----
    let cursor = null;
    let rows = [];
    const isCommand = (e) => e.kind === "exec" || e.kind === "command";
    function commandOf(e) {
      const argv = Array.isArray(e.argv) ? e.argv : [];
      if (argv.length === 3 && argv[0] === "/bin/sh" && argv[1] === "-c") return argv[2];
      if (argv.length) return argv.join(" ");
      return e.label || "";
    }
    async function loadHistory(more) {
      let page;
      try {
        page = await api.api("GET", "/api/v1/executions", { query: { limit: 20, cursor: more ? cursor : undefined } });
      } catch (err) {
        ui.showError(err, historyBody);
        return;
      }
      rows = more ? rows.concat(page.items || []) : page.items || [];
      cursor = page.next_cursor || null;
      olderBtn.hidden = !cursor;
      ui.fill(
        historyBody,
        h(
          "div",
          { class: "table-wrap" },
          ui.table({
            caption: "Executions, newest first",
            columns: [
              { label: "Started", class: "time", value: (e) => ui.formatTime(e.started_at) },
              {
                label: "Command",
                class: "command",
                value: (e) =>
                  h(
                    "span",
                    null,
                    isCommand(e) ? null : h("span", { class: "muted" }, `${e.kind}: `),
                    h("span", { class: "mono" }, isCommand(e) ? commandOf(e) : e.label),
                  ),
              },
              { label: "Status", value: (e) => badgeOf(e.status || e.state) },
              { label: "Exit", class: "num", value: (e) => (e.exit_code === null || e.exit_code === undefined ? e.signal || "–" : String(e.exit_code)) },
              { label: "Duration", class: "num", value: (e) => ui.formatDuration(e.wall_ms) },
              { label: "By", value: (e) => e.actor },
              {
                label: "Actions",
                class: "actions",
                value: (e) =>
                  h(
                    "span",
                    { class: "row" },
                    h("a", { class: "btn small", href: `/jobs?id=${encodeURIComponent(e.id)}`, "aria-label": `Details of the execution ${e.id}` }, "Details"),
                    isCommand(e) && commandOf(e)
                      ? h(
                          "button",
                          {
                            type: "button",
                            class: "btn small",
                            "aria-label": `Use the command ${commandOf(e)}`,
                            "on:click": () => {
                              command.value = commandOf(e);
                              command.focus();
                              window.scrollTo(0, 0);
                            },
                          },
                          "Use",
                        )
                      : null,
                  ),
              },
            ],
            rows,
            empty: "No executions yet.",
          }),
        ),
      );
    }

    await loadHistory(false);
    command.focus();

    return () => {
      if (stream) stream.close();
      clearInterval(ticker);
    };
  },
};
