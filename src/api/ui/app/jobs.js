// What the console, the programs page and the jobs page share about jobs: the run options
// (background, mounts, outputs, inline files) as form controls that give the request's JSON
// fields, the statuses and states in words, output decoding, and the `outputs` report of a
// finished job with its committed files linked to the Files page.
import { api } from "./api.js";
import { h, clear, field, formatBytes } from "./ui.js";

export const STATUS_TEXT = {
  ok: "finished",
  nonzero_exit: "exited with an error",
  timeout: "timed out",
  cpu_limit: "hit the CPU limit",
  memory_limit: "hit the memory limit",
  output_limit: "hit the output limit",
  killed: "was killed",
  cancelled: "was cancelled",
  interrupted: "was interrupted (the daemon restarted)",
  sandbox_error: "could not start (sandbox error)",
};

/** "ok" / "warn" / "danger" / "" for a status or a state. */
export function statusKind(status) {
  if (status === "ok" || status === "committed") return "ok";
  if (!status || status === "running" || status === "queued") return "";
  if (status === "nonzero_exit" || status === "cancelled" || status === "discarded") return "warn";
  return "danger";
}

/** A badge for a status (or a state), underscores read as spaces. */
export function statusBadge(status) {
  if (!status) return h("span", { class: "muted" }, "–");
  const kind = statusKind(status);
  return h("span", { class: kind ? `badge ${kind}` : "badge" }, String(status).replace(/_/g, " "));
}

/** Text of an output chunk or a stored output field: as is for utf-8, decoded (invalid bytes
 * replaced) for base64. */
export function decodeOutput(data, encoding) {
  if (data === null || data === undefined) return "";
  if (encoding !== "base64") return String(data);
  try {
    const bin = atob(data);
    const bytes = Uint8Array.from(bin, (c) => c.charCodeAt(0));
    return new TextDecoder("utf-8", { fatal: false }).decode(bytes);
  } catch {
    return "[output that is not text]";
  }
}

/** The Files page's link for a file-store path (its folder, where it is listed). */
export function filesLink(path) {
  const slash = path.lastIndexOf("/");
  const folder = slash < 0 ? "" : path.slice(0, slash + 1);
  return folder ? `/files?path=${encodeURIComponent(folder)}` : "/files";
}

const OUTPUTS_STATE = {
  committed: "written to the file store",
  discarded: "not written (the job's outcome does not keep them)",
  failed: "not written (committing them failed)",
  conflict: "not written (the folder changed while the job ran)",
};

/** The `outputs` report of a result or record: its state and reason, the committed files
 * (each linked to its folder on the Files page) and the skipped ones. */
export function outputsReport(o) {
  const box = h("div", { class: "outputs-report", "data-test": "outputs-report" });
  if (!o) return box;
  box.append(
    h("h3", { class: "sub" }, "Outputs"),
    h("p", null, statusBadge(o.state), " ", OUTPUTS_STATE[o.state] || "", o.reason ? `: ${o.reason}` : ""),
  );
  const files = Array.isArray(o.files) ? o.files : [];
  if (files.length) {
    box.append(
      h(
        "ul",
        { class: "plain committed-files", "aria-label": "Files written" },
        files.map((f) =>
          h(
            "li",
            null,
            h("a", { href: filesLink(f.path), class: "mono", title: `Open ${f.path}'s folder on the Files page` }, f.path),
            " ",
            h("span", { class: "muted" }, formatBytes(f.size)),
            f.sha256 ? h("span", { class: "muted mono hash" }, ` sha256 ${String(f.sha256).slice(0, 12)}…`) : null,
          ),
        ),
      ),
    );
  } else if (o.state === "committed") {
    box.append(h("p", { class: "muted" }, "No files were written."));
  }
  const skipped = Array.isArray(o.skipped) ? o.skipped : [];
  if (skipped.length) {
    box.append(
      h("p", { class: "muted" }, "Skipped:"),
      h(
        "ul",
        { class: "plain" },
        skipped.map((s) => h("li", null, h("span", { class: "mono" }, s.path), ` (${s.reason})`)),
      ),
    );
  }
  return box;
}

// ---------------------------------------------------------------- the run options

let uid = 0;
const nextId = (p) => `${p}-${++uid}`;

/** Known file-store folders ("" excluded) and programs, for the pickers' suggestions; asked
 * once per form, when its options are first opened. */
async function suggestions() {
  const folders = new Set();
  const programs = [];
  try {
    const page = await api("GET", "/api/v1/files", { query: { limit: 1000 } });
    for (const f of page.items || []) {
      const parts = f.path.split("/");
      for (let i = 1; i < parts.length; i++) folders.add(parts.slice(0, i).join("/") + "/");
    }
  } catch {
    // Suggestions only: the fields take any text.
  }
  try {
    const page = await api("GET", "/api/v1/programs", { query: { limit: 100 } });
    for (const p of page.items || []) programs.push(p);
  } catch {
    // As above.
  }
  return { folders: [...folders].sort(), programs };
}

/**
 * The run options as a `<details>` section: mounts (a file-store folder or a stored program,
 * where, read-only or read-write), outputs (a directory of the job → a file-store folder, and
 * when to keep them), and with `inlineFiles` files placed in the job's /work. `background` is
 * a separate checkbox (see `backgroundBox`). `prefix` keeps ids unique per page.
 *
 * Returns `{el, value()}`; `value()` gives the request's fields (only those set) or throws an
 * Error naming what is wrong.
 */
export function runOptions({ prefix, inlineFiles = false, programs = true }) {
  const folderList = h("datalist", { id: `${prefix}-folders` });
  const programList = h("datalist", { id: `${prefix}-programs` });
  let asked = false;

  const mountRows = h("div", { class: "opt-rows", "data-test": "mount-rows" });
  const outputRows = h("div", { class: "opt-rows", "data-test": "output-rows" });
  const fileRows = h("div", { class: "opt-rows", "data-test": "file-rows" });
  const keep = h(
    "select",
    { id: `${prefix}-keep` },
    h("option", { value: "on_success" }, "only when the job succeeds (exit 0)"),
    h("option", { value: "on_exit" }, "whenever it exits, whatever its exit code"),
  );

  function removeBtn(row, what) {
    return h(
      "button",
      { type: "button", class: "btn small", "aria-label": `Remove this ${what}`, "on:click": () => row.remove() },
      "Remove",
    );
  }

  function addMount() {
    const row = h("div", { class: "opt-row row", "data-test": "mount-row" });
    const kind = h(
      "select",
      { id: nextId(`${prefix}-mkind`), "data-test": "mount-kind" },
      h("option", { value: "files" }, "File-store folder"),
      programs ? h("option", { value: "program" }, "Stored program") : null,
    );
    const source = h("input", {
      type: "text",
      id: nextId(`${prefix}-msrc`),
      class: "mono",
      list: folderList.id,
      autocomplete: "off",
      spellcheck: "false",
      placeholder: "reports/2026/",
      "data-test": "mount-source",
    });
    const at = h("input", {
      type: "text",
      id: nextId(`${prefix}-mat`),
      class: "mono",
      autocomplete: "off",
      spellcheck: "false",
      placeholder: "/data",
      "data-test": "mount-at",
    });
    const mode = h(
      "select",
      { id: nextId(`${prefix}-mmode`), "data-test": "mount-mode" },
      h("option", { value: "ro" }, "read-only"),
      h("option", { value: "rw" }, "read-write (changes saved)"),
    );
    const sourceLabel = h("label", { for: source.id }, "Folder");
    kind.addEventListener("change", () => {
      const prog = kind.value === "program";
      source.setAttribute("list", prog ? programList.id : folderList.id);
      source.placeholder = prog ? "program id" : "reports/2026/";
      sourceLabel.textContent = prog ? "Program id" : "Folder";
      mode.value = "ro";
      mode.disabled = prog;
    });
    row.append(
      field("Mount", kind),
      h("div", { class: "field grow" }, sourceLabel, source),
      field("At (path in the job)", at),
      field("Mode", mode),
      removeBtn(row, "mount"),
    );
    row.value = () => {
      const src = source.value.trim();
      const where = at.value.trim();
      if (!where.startsWith("/")) throw new Error(`A mount needs an absolute path in the job (“At”), such as /data.`);
      if (kind.value === "program") {
        if (!src) throw new Error("A program mount needs the program's id.");
        return { program: src, at: where };
      }
      return { files: src, at: where, mode: mode.value };
    };
    mountRows.append(row);
    source.focus();
    return row;
  }

  function addOutput() {
    const row = h("div", { class: "opt-row row", "data-test": "output-row" });
    const from = h("input", {
      type: "text",
      id: nextId(`${prefix}-ofrom`),
      class: "mono",
      value: "/work/out/",
      autocomplete: "off",
      spellcheck: "false",
      "data-test": "output-from",
    });
    const to = h("input", {
      type: "text",
      id: nextId(`${prefix}-oto`),
      class: "mono",
      list: folderList.id,
      autocomplete: "off",
      spellcheck: "false",
      placeholder: "results/run-1/",
      "data-test": "output-to",
    });
    row.append(
      field("From (a directory of the job)", from),
      field("To (a file-store folder)", to),
      removeBtn(row, "output"),
    );
    row.value = () => {
      const f = from.value.trim();
      const t = to.value.trim();
      if (!f.startsWith("/")) throw new Error("An output's “From” is an absolute directory of the job, such as /work/out/.");
      if (!t) throw new Error("An output needs the file-store folder to write to (“To”).");
      return { from: f, to: t };
    };
    outputRows.append(row);
    to.focus();
    return row;
  }

  function addFile() {
    const row = h("div", { class: "opt-row file-row", "data-test": "file-row" });
    const name = h("input", {
      type: "text",
      id: nextId(`${prefix}-fname`),
      class: "mono",
      autocomplete: "off",
      spellcheck: "false",
      placeholder: "main.py",
      "data-test": "file-name",
    });
    const content = h("textarea", { id: nextId(`${prefix}-fbody`), rows: 4, spellcheck: "false", "data-test": "file-content" });
    const exe = h("input", { type: "checkbox", id: nextId(`${prefix}-fexe`) });
    row.append(
      h("div", { class: "row" }, field("File name (in /work)", name), h("div", { class: "field inline" }, exe, h("label", { for: exe.id }, "Executable")), removeBtn(row, "file")),
      field("Content", content),
    );
    row.value = () => {
      const n = name.value.trim();
      if (!n) throw new Error("An inline file needs a name.");
      const f = { name: n, content: content.value };
      if (exe.checked) f.executable = true;
      return f;
    };
    fileRows.append(row);
    name.focus();
    return row;
  }

  const el = h(
    "details",
    {
      class: "more run-options",
      "on:toggle": async (ev) => {
        if (!ev.target.open || asked) return;
        asked = true;
        const s = await suggestions();
        for (const f of s.folders) folderList.append(h("option", { value: f }));
        for (const p of s.programs) programList.append(h("option", { value: p.id }, p.name));
      },
    },
    h("summary", null, inlineFiles ? "Mounts, outputs and files" : "Mounts and outputs"),
    folderList,
    programList,
    h(
      "fieldset",
      null,
      h("legend", null, "Mounts"),
      h("p", { class: "hint muted" }, "A file-store folder or a stored program shown in the job. Read-only by default; a read-write folder's changes are saved to it when the job succeeds."),
      mountRows,
      h("button", { type: "button", class: "btn small", "on:click": addMount }, "Add a mount"),
    ),
    h(
      "fieldset",
      null,
      h("legend", null, "Outputs"),
      h("p", { class: "hint muted" }, "Files the job leaves in a directory, written to a file-store folder when it ends."),
      outputRows,
      h("button", { type: "button", class: "btn small", "on:click": addOutput }, "Add an output"),
      field("Keep outputs", keep),
    ),
    inlineFiles
      ? h(
          "fieldset",
          null,
          h("legend", null, "Files"),
          h("p", { class: "hint muted" }, "Files placed in the job's working directory (/work) before it starts."),
          fileRows,
          h("button", { type: "button", class: "btn small", "on:click": addFile }, "Add a file"),
        )
      : null,
  );

  function value() {
    const body = {};
    const mounts = [...mountRows.children].map((r) => r.value());
    const outputs = [...outputRows.children].map((r) => r.value());
    const files = [...fileRows.children].map((r) => r.value());
    if (mounts.length) body.mounts = mounts;
    if (outputs.length) body.outputs = outputs;
    if (files.length) body.files = files;
    const rw = mounts.some((m) => m.mode === "rw");
    if ((outputs.length || rw) && keep.value !== "on_success") body.keep_outputs = keep.value;
    return body;
  }

  return { el, value, addMount, addOutput, addFile };
}

/** The "Run in the background" checkbox: `{el, input}`. */
export function backgroundBox(prefix) {
  const input = h("input", { type: "checkbox", id: `${prefix}-background`, "aria-describedby": `${prefix}-background-hint` });
  const el = h(
    "div",
    { class: "field inline" },
    input,
    h("label", { for: input.id }, "Run in the background"),
    h("span", { id: `${prefix}-background-hint`, class: "hint muted" }, "Do not wait: follow it on the Jobs page."),
  );
  return { el, input };
}

/** What a 202 to `wait: false` says, with the link to follow the job. */
export function startedInBackground(started) {
  const id = started && started.id;
  return h(
    "p",
    { "data-test": "background-started" },
    statusBadge(started.state || "queued"),
    " Running in the background as ",
    h("span", { class: "mono" }, id),
    ". ",
    h("a", { href: `/jobs?id=${encodeURIComponent(id)}` }, "Follow it on the Jobs page"),
  );
}

/** Empties `el` and puts the outputs report of `o` in it (nothing when there is none). */
export function showOutputs(el, o) {
  clear(el);
  if (o) el.append(outputsReport(o));
}
