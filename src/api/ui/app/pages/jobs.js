// The jobs page: every execution this login may see (commands and program runs, waited for or
// run in the background). Without `?id=`: the list (GET /api/v1/executions), filtered by state,
// refreshed while some are queued or running. With `?id=ID`: one execution (GET
// /api/v1/executions/{id}): its state, status and facts, its stdout and stderr (followed live
// through GET …/{id}/output, Server-Sent Events, while it runs), Cancel while it is queued or
// running (POST …/{id}/cancel), and the outputs report.
import { api, events, ApiError } from "../api.js";
import { h, clear, fill, showError, toast, formatBytes, formatTime, formatDuration, table } from "../ui.js";
import { STATUS_TEXT, statusBadge, decodeOutput, outputsReport } from "../jobs.js";

const PAGE = 50;
/** How often the list is asked again while something in it is queued or running. */
const LIST_REFRESH_MS = 2000;

function execUrl(id) {
  return `/api/v1/executions/${encodeURIComponent(id)}`;
}

/** A record's state: `state` when the server gives it, else finished (it has a status). */
function stateOf(e) {
  return e.state || (e.status ? "finished" : "");
}

const unfinished = (e) => stateOf(e) === "queued" || stateOf(e) === "running";

/** What ran: the command line of a command, the program's name for a run. */
function whatRan(e) {
  const argv = Array.isArray(e.argv) ? e.argv : [];
  if (e.kind === "program") return e.label || e.program_id || "program";
  if (argv.length === 3 && argv[0] === "/bin/sh" && argv[1] === "-c") return argv[2];
  if (argv.length) return argv.join(" ");
  return e.label || "";
}

function go(ctx, url) {
  return (ev) => {
    if (ev.defaultPrevented || ev.button !== 0 || ev.metaKey || ev.ctrlKey || ev.shiftKey || ev.altKey) return;
    ev.preventDefault();
    ctx.navigate(url);
  };
}

export default {
  title: "Jobs",
  async mount(root, ctx) {
    const id = ctx.params.get("id");
    const cleanups = [];
    root.append(h("div", { class: "page-head" }, h("h1", null, "Jobs")));
    const wrap = h("div", { class: "stack" });
    root.append(wrap);
    if (id) await mountDetail(wrap, ctx, id, cleanups);
    else await mountList(wrap, ctx, cleanups);
    return () => {
      for (const c of cleanups) c();
    };
  },
};

// ---------------------------------------------------------------- the list

async function mountList(wrap, ctx, cleanups) {
  const stateSel = h(
    "select",
    { id: "jobs-state", name: "state" },
    h("option", { value: "" }, "all"),
    h("option", { value: "queued" }, "queued"),
    h("option", { value: "running" }, "running"),
    h("option", { value: "finished" }, "finished"),
  );
  const wanted = ctx.params.get("state") || "";
  if (["queued", "running", "finished"].includes(wanted)) stateSel.value = wanted;
  const refreshBtn = h("button", { type: "button", class: "btn small" }, "Refresh");
  const listError = h("div");
  const holder = h("div", { class: "table-wrap", "data-test": "jobs-list" });
  const more = h("button", { type: "button", class: "btn", hidden: true }, "Older jobs");
  const updated = h("p", { class: "muted updated", "aria-live": "off" });
  wrap.append(
    h(
      "section",
      { class: "card", "aria-labelledby": "jobs-list-h" },
      h("div", { class: "row spread" }, h("h2", { id: "jobs-list-h" }, "Executions"), refreshBtn),
      h("p", { class: "hint muted" }, "Commands and program runs started with your token (all of them for an admin), newest first. Start one in the background from the Console or a program's page."),
      h("div", { class: "toolbar" }, h("div", { class: "field" }, h("label", { for: "jobs-state" }, "State"), stateSel)),
      listError,
      holder,
      h("div", { class: "row" }, more),
      updated,
    ),
  );

  let rows = [];
  let cursor = null;
  let timer = null;
  let alive = true;
  cleanups.push(() => {
    alive = false;
    clearTimeout(timer);
  });

  function render() {
    fill(
      holder,
      table({
        caption: "Executions, newest first",
        columns: [
          { label: "Started", class: "time", value: (e) => formatTime(e.started_at) },
          {
            label: "Job",
            class: "command",
            value: (e) =>
              h(
                "a",
                { href: `/jobs?id=${encodeURIComponent(e.id)}`, "on:click": go(ctx, `/jobs?id=${encodeURIComponent(e.id)}`), "data-test": "job-link" },
                e.kind === "program" ? h("span", { class: "muted" }, "program: ") : null,
                h("span", { class: "mono" }, whatRan(e) || e.id),
              ),
          },
          { label: "State", value: (e) => statusBadge(stateOf(e)) },
          { label: "Status", value: (e) => (e.status ? statusBadge(e.status) : "–") },
          { label: "Exit", class: "num", value: (e) => (e.exit_code === null || e.exit_code === undefined ? e.signal || "–" : String(e.exit_code)) },
          { label: "Duration", class: "num", value: (e) => (e.status ? formatDuration(e.wall_ms) : "–") },
          { label: "By", value: (e) => e.actor },
        ],
        rows,
        empty: stateSel.value ? `No ${stateSel.value} jobs.` : "No jobs yet.",
      }),
    );
    more.hidden = !cursor;
  }

  async function load(first) {
    clearTimeout(timer);
    clear(listError);
    try {
      const query = { limit: PAGE, state: stateSel.value || undefined };
      if (!first && cursor) query.cursor = cursor;
      const page = await api("GET", "/api/v1/executions", { query });
      if (!alive) return;
      rows = first ? page.items || [] : rows.concat(page.items || []);
      cursor = page.next_cursor || null;
      render();
      updated.textContent = `Updated ${formatTime(Date.now())}`;
    } catch (err) {
      if (!alive) return;
      showError(err, listError);
    }
    // While some job shown is still queued or running, the list follows it.
    if (alive && first && rows.some(unfinished)) timer = setTimeout(() => load(true), LIST_REFRESH_MS);
  }

  stateSel.addEventListener("change", () => {
    const url = stateSel.value ? `/jobs?state=${encodeURIComponent(stateSel.value)}` : "/jobs";
    history.replaceState(null, "", url);
    load(true);
  });
  refreshBtn.addEventListener("click", () => load(true));
  more.addEventListener("click", () => load(false));
  await load(true);
}

// ---------------------------------------------------------------- one execution

async function mountDetail(wrap, ctx, id, cleanups) {
  const back = h("p", null, h("a", { href: "/jobs", "on:click": go(ctx, "/jobs") }, "← All jobs"));
  const headError = h("div");
  wrap.append(back, headError);
  let rec;
  try {
    rec = await api("GET", execUrl(id));
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) {
      showError(new Error(`There is no job with the id ${id} that you may see (it may have been removed after its retention time).`), headError);
    } else showError(err, headError);
    return;
  }

  const title = h("h2", { id: "job-h", class: "mono" });
  const stateLine = h("p", { "aria-live": "polite", "data-test": "job-state" });
  const facts = h("dl", { class: "facts run-facts" });
  const cancelBtn = h("button", { type: "button", class: "btn danger" }, "Cancel");
  const actionError = h("div");
  const output = h("pre", { class: "output mono", role: "log", "aria-label": "Job output", tabindex: "0", "data-test": "job-output" });
  const outputNote = h("p", { class: "muted" });
  const outputsBox = h("div");
  wrap.append(
    h(
      "section",
      { class: "card", "aria-labelledby": "job-h" },
      title,
      stateLine,
      h("div", { class: "row" }, cancelBtn),
      actionError,
      facts,
    ),
    h(
      "section",
      { class: "card", "aria-labelledby": "job-out-h" },
      h("h2", { id: "job-out-h" }, "Output"),
      h("p", { class: "hint muted" }, "Standard output, with standard error in red."),
      output,
      outputNote,
      outputsBox,
    ),
  );

  let stream = null;
  let alive = true;
  cleanups.push(() => {
    alive = false;
    if (stream) stream.close();
  });

  function append(text, which) {
    if (!text) return;
    const atEnd = output.scrollTop + output.clientHeight >= output.scrollHeight - 4;
    const span = h("span", { class: which === "stderr" ? "stderr" : "stdout" });
    span.textContent = text;
    output.append(span);
    if (atEnd) output.scrollTop = output.scrollHeight;
  }

  function renderHead() {
    title.textContent = whatRan(rec) || rec.id;
    const state = stateOf(rec);
    const bits = [statusBadge(state)];
    if (rec.status) bits.push(" ", statusBadge(rec.status), ` ${STATUS_TEXT[rec.status] || ""}`);
    else if (state === "queued") bits.push(" waiting for a job slot");
    else if (state === "running") bits.push(" its output follows below as it comes");
    fill(stateLine, ...bits);
    cancelBtn.hidden = !unfinished(rec);
    const rows = [
      ["Id", h("span", { class: "mono" }, rec.id)],
      ["Kind", rec.kind === "program" ? "program run" : "command"],
    ];
    if (rec.program_id) {
      const url = `/programs?id=${encodeURIComponent(rec.program_id)}`;
      rows.push(["Program", h("a", { href: url, "on:click": go(ctx, url) }, rec.label || rec.program_id)]);
    }
    if (Array.isArray(rec.argv) && rec.argv.length) rows.push(["Arguments", h("span", { class: "mono" }, JSON.stringify(rec.argv))]);
    rows.push(["Started", formatTime(rec.started_at)]);
    if (rec.status) {
      rows.push(
        ["Exit code", rec.exit_code === null || rec.exit_code === undefined ? (rec.signal ? `none (signal ${rec.signal})` : "none") : String(rec.exit_code)],
        ["Duration", formatDuration(rec.wall_ms)],
        ["CPU time", formatDuration(rec.cpu_ms)],
        ["Peak memory", formatBytes((rec.max_rss_kb || 0) * 1024)],
      );
    }
    if (rec.profile) rows.push(["Profile", rec.profile]);
    rows.push(["By", rec.actor || "–"]);
    if (rec.stdout_bytes !== undefined && rec.status) rows.push(["Output size", `${formatBytes(rec.stdout_bytes)} out, ${formatBytes(rec.stderr_bytes)} err${rec.truncated ? " (cut at the limit)" : ""}`]);
    if (rec.message) rows.push(["Message", rec.message]);
    fill(facts, rows.map(([k, v]) => [h("dt", null, k), h("dd", null, v)]));
    fill(outputsBox, rec.outputs ? outputsReport(rec.outputs) : null);
  }

  /** A finished job's stored output, from its record. */
  function renderStoredOutput() {
    clear(output);
    clear(outputNote);
    append(decodeOutput(rec.stdout, rec.stdout_encoding), "stdout");
    append(decodeOutput(rec.stderr, rec.stderr_encoding), "stderr");
    if (rec.output_kept === false) {
      const why = rec.output_reason || rec.output_not_kept_reason || rec.reason || "";
      outputNote.textContent = `The output was not kept${why ? `: ${why}` : "."}`;
    } else if (!output.firstChild) {
      output.append(h("span", { class: "muted" }, "(no output)"));
    }
  }

  /** Reads the record again; `withOutput`: shows its stored output too (a followed job's live
   * log is kept, in the order it came). */
  async function reload(withOutput = true) {
    try {
      rec = await api("GET", execUrl(id));
    } catch (err) {
      if (alive) showError(err, actionError);
      return;
    }
    if (!alive) return;
    renderHead();
    if (unfinished(rec)) return;
    if (withOutput) renderStoredOutput();
    else if (rec.output_kept === false) {
      const why = rec.output_reason || rec.output_not_kept_reason || rec.reason || "";
      outputNote.textContent = `The output was not kept${why ? `: ${why}` : "."}`;
    }
  }

  /** Follows a queued or running job's output: stdout and stderr from the start, then its
   * result, after which the record (with its outputs report) is read again. */
  function follow() {
    clear(output);
    clear(outputNote);
    let gotResult = false;
    stream = events(`${execUrl(id)}/output`, {
      onMessage(ev) {
        let d;
        try {
          d = JSON.parse(ev.data);
        } catch {
          return;
        }
        if (ev.event === "stdout" || ev.event === "stderr") {
          append(decodeOutput(d.data, d.encoding), ev.event);
          if (stateOf(rec) === "queued") {
            rec = { ...rec, state: "running" };
            renderHead();
          }
        } else if (ev.event === "result") {
          gotResult = true;
          stream = null;
          rec = { ...rec, ...d, state: "finished" };
          renderHead();
          if (!output.firstChild) output.append(h("span", { class: "muted" }, "(no output)"));
          reload(false);
        } else if (ev.event === "error") {
          gotResult = true;
          showError(new ApiError(d.error ? d.error.message : "The job failed.", { code: d.error ? d.error.code : "" }), actionError);
        }
      },
      onError(err) {
        stream = null;
        if (alive) showError(err, actionError);
      },
      onEnd() {
        stream = null;
        if (alive && !gotResult) reload();
      },
    });
  }

  cancelBtn.addEventListener("click", async () => {
    clear(actionError);
    cancelBtn.disabled = true;
    try {
      await api("POST", `${execUrl(id)}/cancel`);
      toast("Cancelling the job…");
      if (!stream) await reload();
    } catch (err) {
      if (err instanceof ApiError && err.status === 409) {
        toast("The job had already finished.");
        await reload();
      } else {
        showError(err, actionError);
      }
    } finally {
      cancelBtn.disabled = false;
    }
  });

  renderHead();
  if (unfinished(rec)) follow();
  else renderStoredOutput();
}
