// The programs page: the program store. Without `?id=`: upload a single file or a ZIP
// project, and the list. With `?id=ID`: one program's details (files, main file, runtime),
// setting the main file, a run with arguments and stdin whose output streams in (the run
// route answers Server-Sent Events to `Accept: text/event-stream`), its run history, opening
// it in a terminal session, and deleting it. A run may mount file-store folders and other
// programs, write outputs to the file store (the result shows what was written) and run in the
// background (followed on the Jobs page); each run in the history opens its output there. The
// list also shows the runtimes this host has (GET /api/v1/runtimes).
import { api, events, upload, ApiError } from "../api.js";
import { h, clear, showError, toast, confirmDialog, formatBytes, formatTime, formatDuration, table } from "../ui.js";
import { runOptions, backgroundBox, startedInBackground, showOutputs, decodeOutput, statusBadge } from "../jobs.js";

const PAGE = 50;

function programUrl(id) {
  return `/api/v1/programs/${encodeURIComponent(id)}`;
}

export default {
  title: "Programs",
  async mount(root, ctx) {
    const id = ctx.params.get("id");
    const cleanups = [];
    const wrap = h("div", { class: "stack" });
    root.append(h("div", { class: "page-head" }, h("h1", {}, "Programs")));
    root.append(wrap);
    if (id) await mountDetails(wrap, ctx, id, cleanups);
    else await mountList(wrap, ctx, cleanups);
    return () => {
      for (const c of cleanups) c();
    };
  },
};

function go(ctx, url) {
  return (e) => {
    if (e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
    e.preventDefault();
    ctx.navigate(url);
  };
}

// ---------------------------------------------------------------- the list and the upload

async function mountList(wrap, ctx, cleanups) {
  const fileInput = h("input", { id: "prog-file", type: "file", name: "file" });
  const nameInput = h("input", { id: "prog-name", type: "text", name: "name", autocomplete: "off", spellcheck: "false" });
  const mainInput = h("input", { id: "prog-main", type: "text", name: "main", autocomplete: "off", spellcheck: "false" });
  const progress = h("progress", { class: "progress", max: "100", "aria-label": "Upload progress" });
  progress.hidden = true;
  const uploadStatus = h("p", { class: "muted", "aria-live": "polite" });
  const uploadError = h("div", {});
  const submit = h("button", { type: "submit", class: "btn primary" }, "Upload program");
  const cancel = h("button", { type: "button", class: "btn" }, "Cancel upload");
  cancel.hidden = true;
  let ctrl = null;
  cancel.addEventListener("click", () => ctrl && ctrl.abort());
  cleanups.push(() => ctrl && ctrl.abort());

  const form = h(
    "form",
    { class: "stack", "on:submit": (e) => { e.preventDefault(); send(); } },
    h("div", { class: "field" },
      h("label", { for: "prog-file" }, "Program: a single file (script or binary) or a ZIP project"),
      fileInput),
    h("div", { class: "row" },
      h("div", { class: "field" }, h("label", { for: "prog-name" }, "Name (optional; the file's name by default)"), nameInput),
      h("div", { class: "field" }, h("label", { for: "prog-main" }, "Main file of a ZIP project (optional)"), mainInput)),
    h("div", { class: "row" }, submit, cancel),
    progress,
    uploadStatus,
    uploadError,
  );

  const listError = h("div", {});
  const listHolder = h("div", { class: "table-wrap" });
  const more = h("button", { type: "button", class: "btn" }, "Load more programs");
  more.hidden = true;
  let cursor = null;
  let rows = [];

  const runtimesError = h("div", {});
  const runtimesHolder = h("div", { class: "table-wrap", "data-test": "runtimes" });

  wrap.append(
    h("section", { class: "card", "aria-labelledby": "prog-upload-h" }, h("h2", { id: "prog-upload-h" }, "Upload a program"), form),
    h("section", { class: "card", "aria-labelledby": "prog-list-h" }, h("h2", { id: "prog-list-h" }, "Programs"), listError, listHolder, more),
    h("section", { class: "card", "aria-labelledby": "prog-rt-h" },
      h("h2", { id: "prog-rt-h" }, "Runtimes"),
      h("p", { class: "hint muted" }, "What programs can run on this host, by file extension (the daemon's programs.runtimes). Files with a #! line and compiled executables run directly. An upload whose main file needs a missing runtime is refused."),
      runtimesError, runtimesHolder),
  );

  async function loadRuntimes() {
    try {
      const page = await api("GET", "/api/v1/runtimes");
      clear(runtimesHolder);
      runtimesHolder.append(table({
        caption: "Runtimes",
        columns: [
          { label: "Runtime", value: (r) => h("span", { class: "mono" }, r.name) },
          { label: "Extensions", value: (r) => (r.extensions || []).map((e) => `.${e}`).join(" ") },
          { label: "Available", value: (r) => (r.present ? h("span", { class: "badge ok" }, "present") : h("span", { class: "badge danger" }, "missing")) },
          { label: "Version", value: (r) => r.version || (r.present ? h("span", { class: "muted" }, "not told") : "–") },
          { label: "Interpreter", value: (r) => (r.present ? h("span", { class: "mono" }, r.interpreter) : h("span", { class: "muted" }, r.reason || "not found")) },
        ],
        rows: page.items || [],
        empty: "No runtimes are configured: only #! scripts and executables run.",
      }));
    } catch (err) {
      showError(err, runtimesError);
    }
  }

  async function send() {
    clear(uploadError);
    const file = fileInput.files && fileInput.files[0];
    if (!file) {
      showError(new Error("Choose a file to upload first."), uploadError);
      fileInput.focus();
      return;
    }
    const name = nameInput.value.trim() || file.name;
    const isZip = /\.zip$/i.test(file.name) || file.type === "application/zip" || file.type === "application/x-zip-compressed";
    const query = { name: isZip && !/\.zip$/i.test(name) ? `${name}.zip` : name };
    if (mainInput.value.trim()) query.main = mainInput.value.trim();
    ctrl = new AbortController();
    submit.disabled = true;
    cancel.hidden = false;
    progress.hidden = false;
    progress.value = 0;
    uploadStatus.textContent = `Uploading ${file.name}…`;
    try {
      const p = await upload("POST", "/api/v1/programs", file, {
        headers: { "Content-Type": isZip ? "application/zip" : "application/octet-stream" },
        query,
        signal: ctrl.signal,
        onProgress(sent, total) {
          progress.value = total > 0 ? Math.floor((sent / total) * 100) : 0;
        },
      });
      uploadStatus.textContent = `Uploaded ${p.name}.`;
      toast(`Uploaded ${p.name}.`);
      form.reset();
      ctx.navigate(`/programs?id=${encodeURIComponent(p.id)}`);
    } catch (err) {
      if (ctrl.signal.aborted) uploadStatus.textContent = "Upload cancelled.";
      else {
        uploadStatus.textContent = "";
        showError(err, uploadError);
      }
    } finally {
      ctrl = null;
      submit.disabled = false;
      cancel.hidden = true;
      progress.hidden = true;
    }
  }

  function render() {
    clear(listHolder);
    listHolder.append(table({
      columns: [
        { label: "Name", value: (p) => h("a", { href: `/programs?id=${encodeURIComponent(p.id)}`, "on:click": go(ctx, `/programs?id=${encodeURIComponent(p.id)}`) }, p.name) },
        { label: "Kind", value: (p) => p.kind },
        { label: "Main file", value: (p) => (p.main ? h("span", { class: "mono" }, p.main) : h("span", { class: "badge warn" }, "not set")) },
        { label: "Runtime", value: (p) => p.runtime || "–" },
        { label: "Size", value: (p) => formatBytes(p.size), class: "num" },
        { label: "Runs", value: (p) => String(p.run_count), class: "num" },
        { label: "Last run", value: (p) => (p.last_run_at ? h("span", {}, statusBadge(p.last_run_status), " ", formatTime(p.last_run_at)) : "never") },
      ],
      rows,
      empty: "No programs yet. Upload one above.",
    }));
    more.hidden = !cursor;
  }

  async function load(first) {
    clear(listError);
    try {
      const query = { limit: PAGE };
      if (!first && cursor) query.cursor = cursor;
      const page = await api("GET", "/api/v1/programs", { query });
      rows = first ? page.items : rows.concat(page.items);
      cursor = page.next_cursor || null;
      render();
    } catch (err) {
      showError(err, listError);
    }
  }
  more.addEventListener("click", () => load(false));
  await Promise.all([load(true), loadRuntimes()]);
}

// ---------------------------------------------------------------- one program

async function mountDetails(wrap, ctx, id, cleanups) {
  const back = h("p", {}, h("a", { href: "/programs", "on:click": go(ctx, "/programs") }, "← All programs"));
  const headError = h("div", {});
  wrap.append(back, headError);
  let prog;
  try {
    prog = await api("GET", programUrl(id));
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) showError(new Error(`There is no program with the id ${id} (it may have been deleted).`), headError);
    else showError(err, headError);
    return;
  }

  // ---- details ----
  const title = h("h2", { id: "prog-h" });
  const facts = h("dl", { class: "facts" });
  const filesHolder = h("div", { class: "table-wrap" });
  const detailError = h("div", {});
  const mainSelect = h("select", { id: "prog-main-select", name: "main" });
  const mainForm = h("form", { class: "toolbar", "on:submit": (e) => { e.preventDefault(); setMain(mainSelect.value); } },
    h("div", { class: "field" }, h("label", { for: "prog-main-select" }, "Main file"), mainSelect),
    h("button", { type: "submit", class: "btn" }, "Set main file"));
  const termBtn = h("button", { type: "button", class: "btn" }, "Open in a terminal");
  const delBtn = h("button", { type: "button", class: "btn danger" }, "Delete program");
  const archive = h("a", { class: "btn", href: `${programUrl(id)}/archive`, download: "" }, "Download as ZIP");

  wrap.append(h("section", { class: "card", "aria-labelledby": "prog-h" },
    title, facts, mainForm, detailError,
    h("h3", {}, "Files"), filesHolder,
    h("div", { class: "row" }, archive, delBtn)));

  function renderDetails() {
    title.textContent = prog.name;
    clear(facts);
    const fact = (k, v) => [h("dt", {}, k), h("dd", {}, v)];
    facts.append(
      ...fact("Id", h("span", { class: "mono" }, prog.id)),
      ...fact("Kind", prog.kind === "project" ? "project (ZIP)" : "single file"),
      ...fact("Main file", prog.main ? h("span", { class: "mono" }, prog.main) : h("span", { class: "badge warn" }, "not set: choose one below")),
      ...fact("Runtime", prog.runtime || "unknown"),
      ...fact("Size", formatBytes(prog.size)),
      ...fact("SHA-256", h("span", { class: "mono hash" }, prog.sha256)),
      ...fact("Uploaded", formatTime(prog.created_at)),
      ...fact("Runs", `${prog.run_count}${prog.last_run_at ? `, last ${formatTime(prog.last_run_at)} (${(prog.last_run_status || "").replace(/_/g, " ")})` : ""}`),
    );
    clear(mainSelect);
    if (!prog.main) mainSelect.append(h("option", { value: "" }, "– choose –"));
    for (const f of prog.files) {
      const o = h("option", { value: f.path }, f.path);
      if (f.path === prog.main) o.selected = true;
      mainSelect.append(o);
    }
    mainForm.hidden = prog.files.length < 2 && Boolean(prog.main);
    clear(filesHolder);
    filesHolder.append(table({
      columns: [
        { label: "Path", value: (f) => h("span", { class: "mono" }, f.path, f.path === prog.main ? " " : "", f.path === prog.main ? h("span", { class: "badge ok" }, "main") : "") },
        { label: "Size", value: (f) => formatBytes(f.size), class: "num" },
        { label: "Executable", value: (f) => (f.executable ? "yes" : "no") },
        { label: "Action", value: (f) => (f.path === prog.main ? "" : h("button", { type: "button", class: "btn small", "aria-label": `Make main: ${f.path}`, "on:click": () => setMain(f.path) }, "Make main")) },
      ],
      rows: prog.files,
      empty: "No files.",
    }));
  }

  async function setMain(path) {
    clear(detailError);
    if (!path) {
      showError(new Error("Choose the main file first."), detailError);
      return;
    }
    try {
      prog = await api("PUT", `${programUrl(id)}/main`, { json: { main: path } });
      renderDetails();
      toast(`The main file is now ${path}.`);
    } catch (err) {
      showError(err, detailError);
    }
  }

  termBtn.addEventListener("click", async () => {
    clear(detailError);
    clear(runError);
    if (needsMain(runError)) return;
    termBtn.disabled = true;
    try {
      const body = { args: argList() };
      const t = await api("POST", `${programUrl(id)}/terminals`, { json: body });
      ctx.navigate(`/terminal?id=${encodeURIComponent(t.id)}`);
    } catch (err) {
      showError(err, detailError);
    } finally {
      termBtn.disabled = false;
    }
  });

  delBtn.addEventListener("click", async () => {
    clear(detailError);
    if (!(await confirmDialog(`Delete the program “${prog.name}”?`, { danger: true }))) return;
    try {
      await api("DELETE", programUrl(id));
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 409)) {
        showError(err, detailError);
        return;
      }
      const force = await confirmDialog(`${err.message} Stop its runs and terminal sessions and delete it anyway?`, { danger: true });
      if (!force) return;
      try {
        await api("DELETE", programUrl(id), { query: { force: "true" } });
      } catch (err2) {
        showError(err2, detailError);
        return;
      }
    }
    toast(`Deleted ${prog.name}.`);
    ctx.navigate("/programs");
  });

  // ---- run ----
  const argsInput = h("textarea", { id: "run-args", name: "args", rows: "3", class: "mono", spellcheck: "false", "aria-describedby": "run-args-hint" });
  const stdinInput = h("textarea", { id: "run-stdin", name: "stdin", rows: "3", class: "mono", spellcheck: "false" });
  const timeoutInput = h("input", { id: "run-timeout", name: "timeout", type: "number", min: "1", step: "1", inputmode: "numeric" });
  const runBtn = h("button", { type: "submit", class: "btn primary" }, "Run");
  const stopBtn = h("button", { type: "button", class: "btn" }, "Stop watching");
  stopBtn.hidden = true;
  const options = runOptions({ prefix: "run" });
  const background = backgroundBox("run");
  const outputsBox = h("div", {});
  const runError = h("div", {});
  const runStatus = h("div", { class: "run-status", "aria-live": "polite", "data-test": "run-status" });
  const output = h("pre", { class: "output mono", role: "log", "aria-label": "Program output", tabindex: "0", "data-test": "run-output" });
  output.hidden = true;

  function argList() {
    return argsInput.value.split("\n").filter((l, i, all) => l !== "" || i < all.length - 1).filter((l) => l !== "");
  }

  const runForm = h("form", { class: "run-form", "on:submit": (e) => { e.preventDefault(); run(); } },
    h("div", { class: "row" },
      h("div", { class: "field" },
        h("label", { for: "run-args" }, "Arguments, one per line"),
        argsInput,
        h("p", { id: "run-args-hint", class: "hint muted" }, "Passed as they are, without a shell: no quoting needed. A terminal gets them too.")),
      h("div", { class: "field" }, h("label", { for: "run-stdin" }, "Standard input (optional)"), stdinInput)),
    h("div", { class: "row" },
      h("div", { class: "field narrow" }, h("label", { for: "run-timeout" }, "Timeout in seconds (optional)"), timeoutInput)),
    options.el,
    background.el,
    h("div", { class: "row" }, runBtn, stopBtn, termBtn));
  wrap.append(h("section", { class: "card", "aria-labelledby": "run-h" },
    h("h2", { id: "run-h" }, "Run"), runForm, runError, runStatus, output, outputsBox));

  // The run's event stream while it is read, and how to end the wait for it.
  let running = null;
  cleanups.push(() => running && running.stream.close());
  stopBtn.addEventListener("click", () => {
    if (!running) return;
    running.stream.close();
    clear(runStatus);
    runStatus.append(h("p", { class: "muted" }, "Stopped watching: the run goes on until it ends; its result will be in the history."));
    running.done();
  });

  function append(text, stream) {
    const atEnd = output.scrollTop + output.clientHeight >= output.scrollHeight - 4;
    const span = h("span", { class: stream === "stderr" ? "stderr" : "stdout" });
    span.textContent = text;
    output.append(span);
    if (atEnd) output.scrollTop = output.scrollHeight;
  }

  function showResult(r) {
    clear(runStatus);
    const bits = [statusBadge(r.status)];
    if (r.exit_code !== null && r.exit_code !== undefined) bits.push(` exit code ${r.exit_code}`);
    if (r.signal) bits.push(` signal ${r.signal}`);
    bits.push(` · ${formatDuration(r.wall_ms)} wall, ${formatDuration(r.cpu_ms)} CPU, ${formatBytes((r.max_rss_kb || 0) * 1024)} memory`);
    if (r.truncated) bits.push(" · output cut at the limit");
    if (r.dropped_bytes) bits.push(` · ${formatBytes(r.dropped_bytes)} of output not shown (the page fell behind)`);
    runStatus.append(h("p", { "data-test": "run-result" }, ...bits));
    if (r.message) runStatus.append(h("p", { class: "alert warn" }, r.message));
  }

  /** A program without a main file cannot run: say so at the form, before asking the API. */
  function needsMain(where) {
    if (prog.main) return false;
    showError(new Error("This program has no main file yet: choose it above (Main file, then “Set main file”)."), where);
    mainSelect.focus();
    return true;
  }

  async function run() {
    clear(runError);
    if (needsMain(runError)) return;
    const body = {};
    const args = argList();
    if (args.length) body.args = args;
    if (stdinInput.value !== "") body.stdin = stdinInput.value;
    if (timeoutInput.value !== "") {
      const s = Number(timeoutInput.value);
      if (!Number.isInteger(s) || s < 1) {
        showError(new Error("The timeout is a whole number of seconds, at least 1."), runError);
        timeoutInput.focus();
        return;
      }
      body.timeout_ms = s * 1000;
    }
    try {
      Object.assign(body, options.value());
    } catch (err) {
      showError(err, runError);
      return;
    }
    clear(outputsBox);
    if (background.input.checked) {
      runBtn.disabled = true;
      output.hidden = true;
      clear(runStatus);
      try {
        const started = await api("POST", `${programUrl(id)}/runs`, { json: { ...body, wait: false } });
        runStatus.append(startedInBackground(started));
        loadRuns(true);
      } catch (err) {
        showError(err, runError);
      } finally {
        runBtn.disabled = false;
      }
      return;
    }
    runBtn.disabled = true;
    stopBtn.hidden = false;
    clear(output);
    output.hidden = false;
    clear(runStatus);
    runStatus.append(h("p", {}, h("span", { class: "badge" }, "running"), " started ", formatTime(new Date().toISOString())));
    let gotResult = false;
    // The run answers Server-Sent Events: stdout/stderr chunks as they come, then one result
    // (or error) event.
    await new Promise((resolve) => {
      const stream = events(`${programUrl(id)}/runs`, {
        method: "POST",
        json: body,
        onMessage(ev) {
          let d;
          try { d = JSON.parse(ev.data); } catch { return; }
          if (ev.event === "stdout" || ev.event === "stderr") append(decodeOutput(d.data, d.encoding), ev.event);
          else if (ev.event === "result") {
            gotResult = true;
            showResult(d);
            showOutputs(outputsBox, d.outputs);
          } else if (ev.event === "error") {
            gotResult = true;
            clear(runStatus);
            showError(new ApiError(d.error ? d.error.message : "the run failed", { code: d.error ? d.error.code : "" }), runError);
          }
        },
        onError(err) {
          clear(runStatus);
          showError(err, runError);
          resolve();
        },
        onEnd() {
          if (!gotResult) {
            clear(runStatus);
            showError(new Error("The output stream ended before the run's result came."), runError);
          }
          resolve();
        },
      });
      running = { stream, done: resolve };
    });
    running = null;
    runBtn.disabled = false;
    stopBtn.hidden = true;
    if (output.childNodes.length === 0) output.append(h("span", { class: "muted" }, "(no output)"));
    loadRuns(true);
    refreshProgram();
  }

  async function refreshProgram() {
    try {
      prog = await api("GET", programUrl(id));
      renderDetails();
    } catch {
      // The details stay as they were; the run's own result is shown above.
    }
  }

  // ---- history ----
  const runsError = h("div", {});
  const runsHolder = h("div", { class: "table-wrap", "aria-live": "polite" });
  const moreRuns = h("button", { type: "button", class: "btn" }, "Load more runs");
  moreRuns.hidden = true;
  wrap.append(h("section", { class: "card", "aria-labelledby": "runs-h" }, h("h2", { id: "runs-h" }, "Run history"), runsError, runsHolder, moreRuns));
  let runs = [];
  let runsCursor = null;

  async function loadRuns(first) {
    clear(runsError);
    try {
      const query = { limit: 20 };
      if (!first && runsCursor) query.cursor = runsCursor;
      const page = await api("GET", `${programUrl(id)}/runs`, { query });
      runs = first ? page.items : runs.concat(page.items);
      runsCursor = page.next_cursor || null;
      clear(runsHolder);
      runsHolder.append(table({
        columns: [
          { label: "Started", value: (r) => formatTime(r.started_at) },
          { label: "Status", value: (r) => statusBadge(r.status || r.state) },
          { label: "Exit", value: (r) => (r.exit_code === null || r.exit_code === undefined ? (r.signal || "–") : String(r.exit_code)), class: "num" },
          { label: "Duration", value: (r) => formatDuration(r.wall_ms), class: "num" },
          {
            label: "Output",
            value: (r) => h("a", { href: `/jobs?id=${encodeURIComponent(r.id)}`, "on:click": go(ctx, `/jobs?id=${encodeURIComponent(r.id)}`), "data-test": "run-output-link" },
              r.status ? `Show output (${formatBytes(r.stdout_bytes)} out, ${formatBytes(r.stderr_bytes)} err)` : `Follow output (${r.state || "running"})`),
          },
          { label: "By", value: (r) => r.actor },
        ],
        rows: runs,
        empty: "Not run yet.",
      }));
      moreRuns.hidden = !runsCursor;
    } catch (err) {
      showError(err, runsError);
    }
  }
  moreRuns.addEventListener("click", () => loadRuns(false));

  renderDetails();
  await loadRuns(true);
}
