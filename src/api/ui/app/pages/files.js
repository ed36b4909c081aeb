// The files page: the file store as folders. The store keeps flat paths (`reports/2024/a.csv`);
// a folder is the prefix of the files inside it, so it exists while it holds a file. The page
// lists the files under the current folder (`?path=reports/`) and shows the next path segment
// of deeper ones as subfolders. Uploads (file picker or drag and drop, many at once) go one
// `PUT /api/v1/files/<path>` per file, each with its own progress bar and cancel button.
// Usage against the quota comes from `GET /api/v1/files:usage`.
import { api, upload, ApiError } from "../api.js";
import { h, clear, showError, toast, confirmDialog, formatBytes, formatTime } from "../ui.js";

/** Pages of 1000 read at most to build one folder view. */
const MAX_PAGES = 20;
/** Uploads sent at the same time. */
const PARALLEL = 2;

/** A store path as a URL path: each segment percent-encoded, the slashes kept. */
function encodePath(p) {
  return p.split("/").map(encodeURIComponent).join("/");
}

function fileUrl(p) {
  return `/api/v1/files/${encodePath(p)}`;
}

/** The folder from `?path=`: "" (the root) or "a/b/" (no leading slash, one trailing). */
function folderOf(raw) {
  const parts = (raw || "").split("/").filter((s) => s !== "" && s !== "." && s !== "..");
  return parts.length ? `${parts.join("/")}/` : "";
}

/** What is wrong with a name typed for a folder or file, or null. */
function badName(name) {
  if (!name) return "Give it a name.";
  if (name.includes("/")) return "A name cannot contain /.";
  if (name === "." || name === "..") return "“.” and “..” are not allowed as names.";
  if ([...name].some((c) => c.charCodeAt(0) < 32 || c.charCodeAt(0) === 127)) return "Control characters are not allowed.";
  if (new TextEncoder().encode(name).length > 255) return "A name can be at most 255 bytes long.";
  return null;
}

export default {
  title: "Files",
  async mount(root, ctx) {
    const folder = folderOf(ctx.params.get("path"));
    const state = { closed: false, usage: null, queue: [], running: 0, uploads: new Set(), changedSinceList: false };

    // ---- breadcrumbs ----
    const crumbs = h("ol", {});
    const segs = folder ? folder.slice(0, -1).split("/") : [];
    const crumbLink = (label, path, current) =>
      h("li", {}, current
        ? h("span", { "aria-current": "page" }, label)
        : h("a", { href: `/files${path ? `?path=${encodeURIComponent(path)}` : ""}`, "on:click": (e) => go(e, path) }, label));
    crumbs.append(crumbLink("All files", "", segs.length === 0));
    segs.forEach((s, i) => crumbs.append(crumbLink(s, `${segs.slice(0, i + 1).join("/")}/`, i === segs.length - 1)));
    const nav = h("nav", { class: "breadcrumbs", "aria-label": "Folder" }, crumbs);

    function go(e, path) {
      if (e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
      e.preventDefault();
      ctx.navigate(`/files${path ? `?path=${encodeURIComponent(path)}` : ""}`);
    }

    // ---- usage ----
    const usageBox = h("div", { class: "usage", "aria-live": "polite", "data-test": "usage" });
    const usageError = h("div", {});

    // ---- upload ----
    const fileInput = h("input", { id: "files-pick", type: "file", multiple: "", class: "visually-hidden-input" });
    const pickLabel = h("label", { for: "files-pick", class: "btn primary" }, "Choose files to upload");
    const dropZone = h(
      "div",
      { class: "dropzone", "data-test": "dropzone" },
      h("p", {}, "Drop files here to upload them to ", h("strong", {}, folder ? `/${folder}` : "the top folder"), ", or"),
      pickLabel,
      fileInput,
    );
    const uploadList = h("ul", { class: "uploads", "aria-label": "Uploads", "aria-live": "polite" });
    const uploadError = h("div", {});
    const clearDone = h("button", { type: "button", class: "btn small", "on:click": () => {
      for (const li of uploadList.querySelectorAll("li.done, li.cancelled")) li.remove();
      clearDone.hidden = true;
    } }, "Clear finished uploads");
    clearDone.hidden = true;

    // ---- new folder ----
    const folderName = h("input", { id: "files-new-folder", type: "text", autocomplete: "off", spellcheck: "false" });
    const folderError = h("p", { id: "files-new-folder-error", class: "field-error", role: "alert" });
    folderName.setAttribute("aria-describedby", "files-new-folder-error files-new-folder-hint");
    const newFolder = h(
      "form",
      { class: "toolbar", "on:submit": (e) => { e.preventDefault(); makeFolder(); } },
      h("div", { class: "field" }, h("label", { for: "files-new-folder" }, "New folder"), folderName, folderError),
      h("button", { type: "submit", class: "btn" }, "Create folder"),
    );
    const newFolderHint = h("p", { id: "files-new-folder-hint", class: "muted" }, "A folder is kept while it holds a file: upload into it after creating it.");

    // ---- listing ----
    const listError = h("div", {});
    const listing = h("div", { class: "table-wrap", "aria-live": "polite" });
    const listNote = h("p", { class: "muted" });

    root.append(
      h(
        "div",
        { class: "stack" },
        h("div", { class: "page-head" }, h("h1", {}, "Files")),
        nav,
        h(
          "div",
          { class: "files-layout" },
          h(
            "section",
            { class: "card files-main", "aria-labelledby": "files-list-h" },
            h("h2", { id: "files-list-h" }, folder ? `Folder /${folder}` : "All files"),
            listError,
            listing,
            listNote,
            newFolder,
            newFolderHint,
          ),
          h(
            "div",
            { class: "stack files-side" },
            h("section", { class: "card", "aria-labelledby": "files-upload-h" }, h("h2", { id: "files-upload-h" }, "Upload"), dropZone, uploadError, uploadList, clearDone),
            h("section", { class: "card", "aria-labelledby": "files-usage-h" }, h("h2", { id: "files-usage-h" }, "Usage"), usageError, usageBox),
          ),
        ),
      ),
    );

    // ---- usage ----
    async function loadUsage() {
      clear(usageError);
      try {
        state.usage = await api("GET", "/api/v1/files:usage");
        renderUsage();
      } catch (err) {
        showError(err, usageError);
      }
    }

    function meterRow(label, used, max, fmt) {
      const p = h("progress", { class: "progress", max: String(Math.max(max, 1)), "aria-label": label });
      p.value = Math.min(used, Math.max(max, 1));
      const frac = max > 0 ? used / max : 0;
      const cls = frac >= 0.95 ? "danger" : frac >= 0.8 ? "warn" : "";
      return h("div", { class: `usage-row ${cls}` }, h("span", { class: "usage-label" }, label),
        h("span", { class: "usage-figure" }, max > 0 ? `${fmt(used)} of ${fmt(max)} (${Math.round(frac * 100)} %)` : `${fmt(used)} (no limit)`), p);
    }

    function renderUsage() {
      const u = state.usage;
      clear(usageBox);
      if (!u) return;
      const count = (n) => `${n} file${n === 1 ? "" : "s"}`;
      usageBox.append(
        meterRow("Space used", u.used_bytes, u.quota_bytes, formatBytes),
        meterRow("Files stored", u.file_count, u.quota_files, (n) => String(n)),
        h("p", { class: "muted" },
          `Largest file allowed: ${formatBytes(u.max_file_bytes)}. Free disk: ${formatBytes(u.free_disk_bytes)} (the store keeps ${formatBytes(u.min_free_disk_bytes)} free). ${count(u.file_count)} in all.`),
      );
      if (u.missing_blobs > 0) {
        usageBox.append(h("p", { class: "alert warn" }, `${count(u.missing_blobs)} have lost their content (see /ready).`));
      }
    }

    // ---- listing ----
    async function loadListing() {
      clear(listError);
      const files = [];
      const folders = new Map(); // name -> {count, size, modified}
      let cursor = null;
      let pages = 0;
      try {
        do {
          const query = { prefix: folder, limit: 1000 };
          if (cursor) query.cursor = cursor;
          const page = await api("GET", "/api/v1/files", { query });
          for (const f of page.items) {
            const rest = f.path.slice(folder.length);
            const slash = rest.indexOf("/");
            if (slash < 0) {
              files.push({ ...f, name: rest });
            } else {
              const name = rest.slice(0, slash);
              const d = folders.get(name) || { name, count: 0, size: 0, modified: "" };
              d.count += 1;
              d.size += f.size;
              if (f.modified > d.modified) d.modified = f.modified;
              folders.set(name, d);
            }
          }
          cursor = page.next_cursor || null;
          pages += 1;
        } while (cursor && pages < MAX_PAGES && !state.closed);
      } catch (err) {
        showError(err, listError);
        return;
      }
      if (state.closed) return;
      renderListing([...folders.values()].sort((a, b) => a.name.localeCompare(b.name)), files, Boolean(cursor));
    }

    function renderListing(folders, files, truncated) {
      clear(listing);
      listNote.textContent = truncated ? `Only the first ${MAX_PAGES * 1000} files under this folder were read; some are not shown.` : "";
      if (folders.length === 0 && files.length === 0) {
        listing.append(h("p", { class: "empty" }, folder ? "This folder is empty. Upload files into it above." : "No files yet. Upload some above."));
        return;
      }
      const rows = [
        ...folders.map((d) => ({ kind: "folder", ...d })),
        ...files.map((f) => ({ kind: "file", ...f })),
      ];
      const t = h("table", { class: "list files-list", "data-test": "files" },
        h("caption", { class: "visually-hidden" }, folder ? `Files in /${folder}` : "Files"),
        h("thead", {}, h("tr", {},
          h("th", { scope: "col" }, "Name"),
          h("th", { scope: "col", class: "num" }, "Size"),
          h("th", { scope: "col" }, "Modified"),
          h("th", { scope: "col" }, h("span", { class: "visually-hidden" }, "Actions")))),
        h("tbody", {}, rows.map((r) => (r.kind === "folder" ? folderRow(r) : fileRow(r)))),
      );
      listing.append(t);
    }

    function folderRow(d) {
      const path = `${folder}${d.name}/`;
      return h("tr", { "data-folder": d.name },
        h("td", {}, h("a", { href: `/files?path=${encodeURIComponent(path)}`, class: "folder-link", "on:click": (e) => go(e, path) }, `${d.name}/`)),
        h("td", { class: "num" }, formatBytes(d.size)),
        h("td", {}, `${d.count} file${d.count === 1 ? "" : "s"}`),
        h("td", { class: "actions" },
          h("button", { type: "button", class: "btn small danger", "aria-label": `Delete folder ${d.name}`, "on:click": () => deleteFolder(path, d.count) }, "Delete")),
      );
    }

    function fileRow(f) {
      return h("tr", { "data-file": f.name },
        h("td", {}, h("a", { href: fileUrl(f.path), class: "mono", target: "_blank", rel: "noopener" }, f.name)),
        h("td", { class: "num" }, formatBytes(f.size)),
        h("td", {}, h("time", { datetime: f.modified }, formatTime(f.modified))),
        h("td", { class: "actions" },
          h("a", { class: "btn small", href: `${fileUrl(f.path)}?download=1`, download: f.name, "aria-label": `Download ${f.name}` }, "Download"),
          h("button", { type: "button", class: "btn small danger", "aria-label": `Delete ${f.name}`, "on:click": () => deleteFile(f) }, "Delete")),
      );
    }

    async function deleteFile(f) {
      if (!(await confirmDialog(`Delete the file “${f.path}”?`, { danger: true }))) return;
      clear(listError);
      try {
        await api("DELETE", fileUrl(f.path));
        toast(`Deleted ${f.name}.`);
      } catch (err) {
        if (!(err instanceof ApiError && err.status === 404)) showError(err, listError);
      }
      refresh();
    }

    async function deleteFolder(path, count) {
      const ok = await confirmDialog(`Delete the folder “/${path}” and the ${count} file${count === 1 ? "" : "s"} in it?`, { danger: true });
      if (!ok) return;
      clear(listError);
      let deleted = 0;
      try {
        for (;;) {
          const page = await api("GET", "/api/v1/files", { query: { prefix: path, limit: 1000 } });
          if (page.items.length === 0) break;
          for (const f of page.items) {
            try {
              await api("DELETE", fileUrl(f.path));
              deleted += 1;
            } catch (err) {
              if (!(err instanceof ApiError && err.status === 404)) throw err;
            }
          }
          if (state.closed) break;
        }
        toast(`Deleted the folder /${path} (${deleted} file${deleted === 1 ? "" : "s"}).`);
      } catch (err) {
        showError(err, listError);
      }
      refresh();
    }

    function makeFolder() {
      const name = folderName.value.trim();
      const bad = badName(name);
      folderError.textContent = bad || "";
      if (bad) {
        folderName.setAttribute("aria-invalid", "true");
        folderName.focus();
        return;
      }
      folderName.removeAttribute("aria-invalid");
      ctx.navigate(`/files?path=${encodeURIComponent(`${folder}${name}/`)}`);
    }

    // ---- uploads ----
    function refresh() {
      loadListing();
      loadUsage();
    }

    /** The reason a file cannot be stored, known before sending it, or null. */
    function refuseEarly(file) {
      const u = state.usage;
      if (!u) return null;
      if (u.max_file_bytes > 0 && file.size > u.max_file_bytes) {
        return `${file.name} is ${formatBytes(file.size)}, larger than the largest file allowed (${formatBytes(u.max_file_bytes)}).`;
      }
      if (u.quota_bytes > 0 && u.used_bytes + file.size > u.quota_bytes) {
        return `${file.name} (${formatBytes(file.size)}) does not fit in the quota: ${formatBytes(Math.max(0, u.quota_bytes - u.used_bytes))} of ${formatBytes(u.quota_bytes)} left.`;
      }
      return null;
    }

    /** A refused upload can reach the browser as a dropped connection (the server answers
     * and closes while the body is still being sent): then say what the store's figures
     * tell, which is usually the reason. */
    async function explainFailure(e, file) {
      if (!(e instanceof ApiError) || ![0, 502, 503, 504].includes(e.status)) return e;
      await loadUsage();
      const why = refuseEarly(file);
      return why ? new Error(why) : e;
    }

    function addFiles(list) {
      clear(uploadError);
      for (const file of list) {
        const name = file.relPath || file.name;
        const bad = name.split("/").map(badName).find((m) => m);
        const item = uploadItem(file, name);
        if (bad) {
          item.fail(new Error(`${name}: ${bad}`));
          continue;
        }
        const early = refuseEarly(file);
        if (early) {
          item.fail(new Error(early));
          continue;
        }
        state.queue.push(item);
      }
      pump();
    }

    function uploadItem(file, name) {
      const progress = h("progress", { class: "progress", max: "100", "aria-label": `Upload progress of ${name}` });
      progress.value = 0;
      const status = h("span", { class: "upload-status" }, "waiting");
      const cancelBtn = h("button", { type: "button", class: "btn small", "aria-label": `Cancel upload of ${name}` }, "Cancel");
      const err = h("div", {});
      const li = h("li", { class: "upload", "data-upload": name },
        h("div", { class: "upload-head" }, h("span", { class: "upload-name mono" }, name), h("span", { class: "muted" }, formatBytes(file.size)), status, cancelBtn),
        progress,
        err);
      uploadList.prepend(li);
      const ctrl = new AbortController();
      const item = {
        file,
        name,
        ctrl,
        done: false,
        started: false,
        fail(e) {
          item.done = true;
          status.textContent = "failed";
          li.classList.add("failed");
          cancelBtn.textContent = "Dismiss";
          cancelBtn.setAttribute("aria-label", `Dismiss ${name}`);
          showError(e, err);
        },
      };
      cancelBtn.addEventListener("click", () => {
        if (item.done) {
          li.remove();
          return;
        }
        ctrl.abort();
        item.done = true;
        state.queue = state.queue.filter((q) => q !== item);
        status.textContent = "cancelled";
        li.classList.add("cancelled");
        clearDone.hidden = false;
        cancelBtn.textContent = "Dismiss";
        cancelBtn.setAttribute("aria-label", `Dismiss ${name}`);
      });
      item.run = async () => {
        item.started = true;
        status.textContent = "0 %";
        state.uploads.add(item);
        try {
          await upload("PUT", fileUrl(`${folder}${name}`), file, {
            headers: { "Content-Type": file.type || "application/octet-stream" },
            signal: ctrl.signal,
            onProgress(sent, total) {
              const pct = total > 0 ? Math.floor((sent / total) * 100) : 0;
              progress.value = pct;
              status.textContent = `${pct} %`;
            },
          });
          item.done = true;
          progress.value = 100;
          status.textContent = "uploaded";
          li.classList.add("done");
          clearDone.hidden = false;
          cancelBtn.textContent = "Dismiss";
          cancelBtn.setAttribute("aria-label", `Dismiss ${name}`);
        } catch (e) {
          if (ctrl.signal.aborted) return;
          item.fail(await explainFailure(e, file));
        } finally {
          state.uploads.delete(item);
        }
      };
      return item;
    }

    function pump() {
      while (state.running < PARALLEL && state.queue.length > 0 && !state.closed) {
        const item = state.queue.shift();
        if (item.done) continue;
        state.running += 1;
        item.run().finally(() => {
          state.running -= 1;
          if (!state.closed) {
            if (state.running === 0 && state.queue.length === 0) refresh();
            pump();
          }
        });
      }
    }

    fileInput.addEventListener("change", () => {
      addFiles([...fileInput.files]);
      fileInput.value = "";
    });

    // Drag and drop: files, and folders (their files keep their relative paths).
    const onDragOver = (e) => {
      if (!e.dataTransfer || ![...e.dataTransfer.types].includes("Files")) return;
      e.preventDefault();
      e.dataTransfer.dropEffect = "copy";
      dropZone.classList.add("over");
    };
    const onDragLeave = (e) => {
      if (e.target === dropZone) dropZone.classList.remove("over");
    };
    const onDrop = async (e) => {
      if (!e.dataTransfer) return;
      e.preventDefault();
      dropZone.classList.remove("over");
      const files = await droppedFiles(e.dataTransfer).catch((err) => {
        showError(err, uploadError);
        return [];
      });
      if (files.length) addFiles(files);
    };
    // The whole page takes drops, so a file dropped a little off the zone is not opened by
    // the browser instead.
    root.addEventListener("dragover", onDragOver);
    root.addEventListener("dragleave", onDragLeave);
    root.addEventListener("drop", onDrop);

    await Promise.all([loadUsage(), loadListing()]);

    return () => {
      state.closed = true;
      state.queue = [];
      for (const item of state.uploads) item.ctrl.abort();
    };
  },
};

/** The files of a drop; a dropped folder gives its files with `relPath` set. */
async function droppedFiles(dt) {
  const entries = [...dt.items || []]
    .filter((it) => it.kind === "file")
    .map((it) => (typeof it.webkitGetAsEntry === "function" ? it.webkitGetAsEntry() : null));
  if (entries.length === 0 || entries.some((e) => e === null)) return [...dt.files];
  const out = [];
  async function walk(entry, prefix) {
    if (entry.isFile) {
      const file = await new Promise((res, rej) => entry.file(res, rej));
      if (prefix) file.relPath = `${prefix}${file.name}`;
      out.push(file);
    } else if (entry.isDirectory) {
      const reader = entry.createReader();
      for (;;) {
        const batch = await new Promise((res, rej) => reader.readEntries(res, rej));
        if (batch.length === 0) break;
        for (const child of batch) await walk(child, `${prefix}${entry.name}/`);
      }
    }
  }
  for (const e of entries) await walk(e, "");
  return out;
}
