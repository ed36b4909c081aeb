// The dashboard: CPU, memory, disk, network and load charts from GET /api/v1/metrics/history
// (uPlot), polled at the history's resolution so they update live; firing and recent alerts;
// the host's facts (GET /api/v1/system), storage (GET /api/v1/dashboard) and the top processes
// (GET /api/v1/processes, admin only).
//
// For tests and screen readers, each chart's element (`[data-chart="cpu"]`, …) carries what
// the chart drew in `data-points`: JSON `{"timestamps": [unix seconds…], "series": {"cpu":
// [value or null…]}}`, the history route's values as they are, and `data-drawn` counts the
// draws. A "Show the data" table under each chart gives the same values.

import uPlot from "../../vendor/uplot/uPlot.esm.js";

const RANGES = [
  ["15m", "15 minutes"],
  ["1h", "1 hour"],
  ["6h", "6 hours"],
  ["24h", "24 hours"],
];

const CHARTS = [
  { key: "cpu", title: "CPU", unit: "percent", series: [["cpu", "CPU busy"]], kind: "percent" },
  { key: "memory", title: "Memory", unit: "percent", series: [["memory", "Memory in use"]], kind: "percent" },
  { key: "disk", title: "Disk", unit: "percent", series: [["disk", "State filesystem used"]], kind: "percent" },
  {
    key: "network",
    title: "Network",
    unit: "bytes per second",
    series: [
      ["net_rx", "Received"],
      ["net_tx", "Sent"],
    ],
    kind: "rate",
  },
  { key: "load", title: "Load", unit: "1-minute load average", series: [["load1", "Load (1 min)"]], kind: "load" },
];

const hhmm = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });

const SERIES = CHARTS.flatMap((c) => c.series.map(([name]) => name));

function token(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

function withAlpha(hex, alpha) {
  return /^#[0-9a-f]{6}$/i.test(hex) ? hex + alpha : hex;
}

export default {
  title: "Dashboard",
  async mount(root, { api, ui, params, navigate, whoami }) {
    const { h } = ui;
    const timers = new Set();
    let stopped = false;
    // What the daemon can see of the host's processes (from /api/v1/system or /processes).
    let visibility = null;
    const range = RANGES.some(([r]) => r === params.get("range")) ? params.get("range") : "1h";

    const fmtValue = (kind, v) => {
      if (v === null || v === undefined || Number.isNaN(v)) return "–";
      if (kind === "percent") return `${v.toFixed(1)} %`;
      if (kind === "rate") return `${ui.formatBytes(v)}/s`;
      return v.toFixed(2);
    };

    // ---- Layout ----
    const rangeSelect = h(
      "select",
      {
        id: "dash-range",
        "on:change": () => navigate(`/?range=${encodeURIComponent(rangeSelect.value)}`, { replace: true }),
      },
      RANGES.map(([v, label]) => h("option", { value: v, selected: v === range }, label)),
    );
    const updated = h("span", { class: "muted updated" });
    root.appendChild(
      h(
        "div",
        { class: "page-head" },
        h("h1", null, "Dashboard"),
        h(
          "div",
          { class: "toolbar" },
          h("div", { class: "field inline" }, h("label", { for: "dash-range" }, "Show the last"), rangeSelect),
          updated,
        ),
      ),
    );

    const alertsCard = h("section", { class: "card", "aria-labelledby": "alerts-title" });
    root.appendChild(alertsCard);

    const chartsErr = h("div");
    const chartsGrid = h("div", { class: "grid charts" });
    root.appendChild(h("section", { "aria-label": "Charts" }, chartsErr, chartsGrid));

    const factsCard = h("section", { class: "card", "aria-labelledby": "facts-title" });
    const storageCard = h("section", { class: "card", "aria-labelledby": "storage-title" });
    const procCard = h("section", { class: "card", "aria-labelledby": "proc-title" });
    root.appendChild(h("div", { class: "grid facts-grid" }, factsCard, storageCard));
    root.appendChild(procCard);

    // ---- Charts ----
    await ui.loadStyle(new URL("../../vendor/uplot/uPlot.min.css", import.meta.url)).catch((err) =>
      ui.showError(`The chart styles failed to load: ${err.message}`, chartsErr),
    );

    const charts = CHARTS.map((c) => {
      const titleId = `chart-${c.key}-title`;
      const now = h("span", { class: "chart-now", "aria-hidden": "true" });
      const box = h("div", { class: "chart", "data-chart": c.key, "data-drawn": "0" });
      const tableBox = h("div", { class: "table-wrap" });
      const details = h(
        "details",
        { class: "chart-data" },
        h("summary", null, `Show the ${c.title.toLowerCase()} data as a table`),
        tableBox,
      );
      const empty = h("p", { class: "empty", hidden: true }, "No samples yet: the first arrive within one sampling interval.");
      const card = h(
        "section",
        { class: "card chart-card", "aria-labelledby": titleId },
        h("div", { class: "chart-head" }, h("h2", { id: titleId }, c.title), now),
        box,
        empty,
        details,
      );
      chartsGrid.appendChild(card);
      const chart = { def: c, box, now, details, tableBox, empty, plot: null, data: null };
      details.addEventListener("toggle", () => {
        if (details.open) renderTable(chart);
      });
      return chart;
    });

    function chartOptions(chart, width) {
      const c = chart.def;
      const muted = token("--muted");
      const grid = token("--chart-grid");
      const colors = [token("--chart-1"), token("--chart-2")];
      const yRange =
        c.kind === "percent"
          ? { range: [0, 100] }
          : {
              range: (_u, _min, max) => {
                const top = max === null || max <= 0 ? (c.kind === "rate" ? 1024 : 1) : max * 1.1;
                return [0, top];
              },
            };
      const axis = { stroke: muted, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 } };
      return {
        width,
        height: 200,
        cursor: { drag: { x: false, y: false } },
        scales: { x: { time: true }, y: yRange },
        axes: [
          {
            ...axis,
            label: "Time (local)",
            labelSize: 20,
            space: 70,
            values: (_u, splits) => splits.map((t) => hhmm.format(new Date(t * 1000))),
          },
          {
            ...axis,
            label: c.kind === "percent" ? "%" : c.kind === "rate" ? "bytes/s" : "load",
            labelSize: 20,
            size: c.kind === "rate" ? 76 : 50,
            values: (_u, vals) =>
              vals.map((v) =>
                c.kind === "rate" ? ui.formatBytes(v).replace(/\.0+ /, " ") : c.kind === "percent" ? `${v}` : `${v}`,
              ),
          },
        ],
        series: [
          { value: (_u, v) => (v === null ? "–" : ui.formatTime(v * 1000)) },
          ...c.series.map(([, label], i) => ({
            label,
            stroke: colors[i],
            width: 2,
            fill: c.series.length === 1 ? withAlpha(colors[i], "26") : undefined,
            value: (_u, v) => fmtValue(c.kind, v),
            spanGaps: false,
          })),
        ],
        hooks: {
          draw: [
            (u) => {
              u.root.parentElement?.setAttribute("data-drawn", String(Number(u.root.parentElement.dataset.drawn || 0) + 1));
            },
          ],
        },
      };
    }

    function chartWidth(chart) {
      return Math.max(200, Math.floor(chart.box.clientWidth || chart.box.parentElement.clientWidth - 32));
    }

    function build(chart) {
      if (chart.plot) chart.plot.destroy();
      ui.clear(chart.box);
      chart.box.dataset.drawn = "0";
      const data = chart.data || [[], ...chart.def.series.map(() => [])];
      chart.plot = new uPlot(chartOptions(chart, chartWidth(chart)), data, chart.box);
      const wrap = chart.plot.root.querySelector(".u-wrap");
      if (wrap) {
        wrap.setAttribute("role", "img");
        wrap.setAttribute("aria-label", describe(chart));
      }
    }

    function describe(chart) {
      const c = chart.def;
      const parts = c.series.map(([name, label], i) => {
        const ys = (chart.data ? chart.data[i + 1] : []).filter((v) => v !== null);
        if (ys.length === 0) return `${label}: no samples`;
        const last = ys[ys.length - 1];
        return `${label}: latest ${fmtValue(c.kind, last)}, lowest ${fmtValue(c.kind, Math.min(...ys))}, highest ${fmtValue(
          c.kind,
          Math.max(...ys),
        )}`;
      });
      const label = RANGES.find(([r]) => r === range)[1];
      return `${c.title} chart (${c.unit}) over the last ${label}. ${parts.join("; ")}.`;
    }

    function renderTable(chart) {
      const c = chart.def;
      const xs = chart.data ? chart.data[0] : [];
      const rows = xs.map((t, i) => ({ t, i })).reverse();
      ui.fill(chart.tableBox, 
        ui.table({
          caption: `${c.title} (${c.unit}), newest first`,
          columns: [
            { label: "Time", value: (r) => ui.formatTime(r.t * 1000) },
            ...c.series.map(([, label], si) => ({
              label,
              class: "num",
              value: (r) => fmtValue(c.kind, chart.data[si + 1][r.i]),
            })),
          ],
          rows,
          empty: "No samples yet.",
        }),
      );
    }

    function showHistory(hist) {
      const xs = hist.timestamps.map((t) => Math.floor(Date.parse(t) / 1000));
      for (const chart of charts) {
        const c = chart.def;
        const ys = c.series.map(([name]) => (hist.series[name] || xs.map(() => null)).slice());
        chart.data = [xs, ...ys];
        const points = { timestamps: xs, series: {} };
        c.series.forEach(([name], i) => {
          points.series[name] = ys[i];
        });
        chart.box.dataset.points = JSON.stringify(points);
        if (hist.units) chart.box.dataset.units = JSON.stringify(Object.fromEntries(c.series.map(([n]) => [n, hist.units[n]])));
        const latest = c.series
          .map(([, label], i) => {
            const vals = ys[i].filter((v) => v !== null);
            const v = vals.length ? vals[vals.length - 1] : null;
            return c.series.length > 1 ? `${label === "Received" ? "↓" : "↑"} ${fmtValue(c.kind, v)}` : fmtValue(c.kind, v);
          })
          .join("  ");
        chart.now.textContent = latest;
        chart.empty.hidden = ys.some((s) => s.some((v) => v !== null));
        if (!chart.plot) build(chart);
        else {
          chart.plot.setData(chart.data);
          const wrap = chart.plot.root.querySelector(".u-wrap");
          if (wrap) wrap.setAttribute("aria-label", describe(chart));
        }
        if (chart.details.open) renderTable(chart);
      }
    }

    let resolution = 10;
    async function loadHistory() {
      try {
        const hist = await api.api("GET", "/api/v1/metrics/history", {
          query: { series: SERIES.join(","), range },
        });
        resolution = hist.resolution_s || resolution;
        chartsErr.querySelector(":scope > .alert")?.remove();
        showHistory(hist);
        updated.textContent = `Updated ${new Date().toLocaleTimeString()}`;
      } catch (err) {
        ui.showError(err, chartsErr);
      }
    }

    // Redraw at the new width when the layout changes, and in the new colours when the
    // system's theme does.
    const resize = new ResizeObserver(() => {
      for (const chart of charts) {
        if (!chart.plot) continue;
        const w = chartWidth(chart);
        if (Math.abs(w - chart.plot.width) > 2) chart.plot.setSize({ width: w, height: 200 });
      }
    });
    resize.observe(chartsGrid);
    const scheme = window.matchMedia("(prefers-color-scheme: dark)");
    const onScheme = () => charts.forEach((c) => c.plot && build(c));
    scheme.addEventListener("change", onScheme);

    // ---- Alerts ----
    function stateBadge(state) {
      const kind = { firing: "danger", pending: "warn", ok: "ok", resolved: "" }[state] ?? "";
      return ui.badge(state, kind);
    }

    async function loadAlerts() {
      let page;
      try {
        page = await api.api("GET", "/api/v1/alerts");
      } catch (err) {
        ui.fill(alertsCard, h("h2", { id: "alerts-title" }, "Alerts"));
        ui.showError(err, alertsCard);
        return;
      }
      const items = page.items || [];
      const firing = items.filter((a) => a.state === "firing");
      const pending = items.filter((a) => a.state === "pending");
      const recent = items.filter((a) => a.state !== "firing" && (a.fired_at || a.resolved_at));
      const order = { firing: 0, pending: 1, resolved: 2, ok: 3 };
      items.sort((a, b) => (order[a.state] ?? 9) - (order[b.state] ?? 9) || a.name.localeCompare(b.name));
      const summary =
        firing.length > 0
          ? h("p", { class: "alert danger" }, `${firing.length} alert${firing.length > 1 ? "s" : ""} firing: ${firing.map((a) => a.description).join("; ")}.`)
          : h(
              "p",
              { class: "muted" },
              pending.length > 0 ? `No alert is firing; ${pending.length} pending.` : "No alert is firing.",
              recent.length > 0 ? ` ${recent.length} fired recently (see below).` : "",
            );
      ui.fill(alertsCard, 
        h("h2", { id: "alerts-title" }, "Alerts"),
        h("div", { "aria-live": "polite" }, summary),
        h(
          "div",
          { class: "table-wrap" },
          ui.table({
            caption: "Alerts and their state",
            columns: [
              { label: "Alert", value: (a) => h("span", null, h("strong", null, a.name), h("br"), h("span", { class: "muted" }, a.description)) },
              { label: "State", value: (a) => stateBadge(a.state) },
              { label: "Value", class: "num", value: (a) => (a.value === null || a.value === undefined ? "–" : a.value.toFixed(1)) },
              { label: "Threshold", class: "num", value: (a) => String(a.threshold) },
              { label: "Since", value: (a) => ui.formatTime(a.since) },
              {
                label: "Last fired",
                value: (a) =>
                  a.fired_at
                    ? `${ui.formatTime(a.fired_at)}${a.resolved_at ? `, resolved ${ui.formatTime(a.resolved_at)}` : ""}`
                    : "never",
              },
            ],
            rows: items,
            empty: "No alerts are configured.",
          }),
        ),
      );
    }

    // ---- System facts ----
    async function loadFacts() {
      let s;
      try {
        s = await api.api("GET", "/api/v1/system");
      } catch (err) {
        ui.fill(factsCard, h("h2", { id: "facts-title" }, "System"));
        ui.showError(err, factsCard);
        return;
      }
      const mem = s.memory || {};
      const facts = [
        ["Hostname", s.hostname],
        ["Operating system", s.os?.name],
        ["Kernel", s.kernel ? `${s.kernel.release} (${s.kernel.arch})` : null],
        ["Uptime", s.uptime_s !== undefined ? `${ui.formatDuration(s.uptime_s * 1000)} (since ${ui.formatTime(s.boot_time)})` : null],
        ["CPU", s.cpu?.model || "–"],
        [
          "CPUs",
          s.cpu ? (s.cpu.usable !== undefined && s.cpu.usable !== s.cpu.count ? `${s.cpu.count} (this daemon may use ${s.cpu.usable})` : String(s.cpu.count)) : null,
        ],
        [
          "Memory",
          mem.total_bytes !== undefined
            ? `${ui.formatBytes(mem.total_bytes)}${mem.available_bytes !== null && mem.available_bytes !== undefined ? `, ${ui.formatBytes(mem.available_bytes)} available` : ""}`
            : null,
        ],
        ["Swap", mem.swap_total_bytes ? `${ui.formatBytes(mem.swap_total_bytes)}, ${ui.formatBytes(mem.swap_free_bytes)} free` : "none"],
        ["Load", s.load ? `${s.load.one.toFixed(2)}, ${s.load.five.toFixed(2)}, ${s.load.fifteen.toFixed(2)} (1, 5, 15 min)` : null],
      ];
      const fsTable = ui.table({
        caption: "Filesystems",
        columns: [
          { label: "Mounted on", value: (f) => h("span", { class: "mono" }, f.mountpoint) },
          { label: "Type", value: (f) => f.fstype },
          { label: "Size", class: "num", value: (f) => (f.size_bytes === null ? "–" : ui.formatBytes(f.size_bytes)) },
          { label: "Available", class: "num", value: (f) => (f.avail_bytes === null ? "–" : ui.formatBytes(f.avail_bytes)) },
          {
            label: "Used",
            value: (f) =>
              f.used_percent === null || f.used_percent === undefined
                ? h("span", { class: "muted" }, f.error || "–")
                : h(
                    "span",
                    { class: "fs-usage" },
                    h("progress", { max: 100, value: f.used_percent, "aria-label": `${f.mountpoint} used` }),
                    ` ${f.used_percent.toFixed(0)} %`,
                  ),
          },
          { label: "Device", value: (f) => h("span", { class: "mono" }, f.device, f.readonly ? " (read-only)" : "") },
        ],
        rows: s.filesystems || [],
        empty: "No filesystems visible.",
      });
      const ifTable = ui.table({
        caption: "Network interfaces",
        columns: [
          { label: "Interface", value: (i) => h("span", { class: "mono" }, i.name) },
          { label: "State", value: (i) => ui.badge(i.operstate || (i.up ? "up" : "down"), i.up ? "ok" : "") },
          {
            label: "Addresses",
            value: (i) =>
              i.addresses && i.addresses.length
                ? h("span", { class: "mono" }, i.addresses.map((a, n) => [n ? h("br") : null, `${a.address}/${a.prefix}`]))
                : "–",
          },
          { label: "Received", class: "num", value: (i) => ui.formatBytes(i.rx_bytes) },
          { label: "Sent", class: "num", value: (i) => ui.formatBytes(i.tx_bytes) },
        ],
        rows: s.interfaces || [],
        empty: "No interfaces visible.",
      });
      ui.fill(factsCard, 
        h("h2", { id: "facts-title" }, "System"),
        h(
          "dl",
          { class: "facts" },
          facts.filter(([, v]) => v !== null && v !== undefined).map(([k, v]) => [h("dt", null, k), h("dd", null, v)]),
        ),
        h("h3", { class: "sub" }, "Filesystems"),
        h("div", { class: "table-wrap" }, fsTable),
        s.pseudo_filesystems ? h("p", { class: "muted hint" }, `${s.pseudo_filesystems} kernel and memory-backed mounts not listed.`) : null,
        h("h3", { class: "sub" }, "Network interfaces"),
        h("div", { class: "table-wrap" }, ifTable),
      );
      visibility = s.visibility || visibility;
    }

    // ---- Storage ----
    async function loadStorage() {
      let d;
      try {
        d = await api.api("GET", "/api/v1/dashboard");
      } catch (err) {
        ui.fill(storageCard, h("h2", { id: "storage-title" }, "Storage"));
        ui.showError(err, storageCard);
        return;
      }
      const st = d.storage || {};
      const quota = st.files_quota_bytes || 0;
      const used = st.files_bytes || 0;
      const fsys = st.filesystem;
      ui.fill(storageCard, 
        h("h2", { id: "storage-title" }, "Storage"),
        h(
          "dl",
          { class: "facts" },
          h("dt", null, "State directory"),
          h("dd", { class: "mono" }, st.state_dir || "–"),
          h("dt", null, "Files"),
          h(
            "dd",
            null,
            `${st.files ?? "–"} files, ${ui.formatBytes(used)}${quota ? ` of ${ui.formatBytes(quota)}` : ""}`,
            quota
              ? h("progress", { max: quota, value: Math.min(used, quota), "aria-label": "File store used of its quota" })
              : null,
          ),
          h("dt", null, "Data"),
          h("dd", null, `${st.kv_keys ?? "–"} keys, ${ui.formatBytes(st.kv_bytes ?? null)}`),
          h("dt", null, "Database"),
          h("dd", null, ui.formatBytes(st.database_bytes)),
          fsys
            ? [
                h("dt", null, "Its filesystem"),
                h(
                  "dd",
                  null,
                  `${ui.formatBytes(fsys.avail_bytes)} available of ${ui.formatBytes(fsys.size_bytes)}`,
                  fsys.used_percent !== null && fsys.used_percent !== undefined
                    ? h("progress", { max: 100, value: fsys.used_percent, "aria-label": "State filesystem used" })
                    : null,
                ),
              ]
            : null,
        ),
        d.activity ? activityList(d.activity) : null,
      );
    }

    function activityList(act) {
      const execs = act.executions || [];
      if (!execs.length) return null;
      return [
        h("h3", { class: "sub" }, "Recent executions"),
        h(
          "ul",
          { class: "plain" },
          execs.slice(0, 5).map((e) =>
            h(
              "li",
              null,
              ui.badge(e.status, e.status === "ok" ? "ok" : "warn"),
              " ",
              h("span", { class: "mono" }, e.label || e.id),
              h("span", { class: "muted" }, ` · ${ui.formatTime(e.started_at)}`),
            ),
          ),
        ),
      ];
    }

    // ---- Processes ----
    let procSort = "cpu";
    const procBody = h("div");
    const sortSelect = h(
      "select",
      {
        id: "proc-sort",
        "on:change": () => {
          procSort = sortSelect.value;
          loadProcesses();
        },
      },
      h("option", { value: "cpu" }, "CPU"),
      h("option", { value: "memory" }, "memory"),
    );
    procCard.append(
      h(
        "div",
        { class: "row spread" },
        h("h2", { id: "proc-title" }, "Top processes"),
        h("div", { class: "field inline" }, h("label", { for: "proc-sort" }, "By"), sortSelect),
      ),
      procBody,
    );
    let procForbidden = false;
    const isAdmin = (whoami?.actor?.scopes || []).includes("admin");
    function forbidProcesses() {
      procForbidden = true;
      sortSelect.disabled = true;
      ui.fill(procBody, h("p", { class: "muted" }, "Only admin tokens see processes: command lines can hold secrets."));
    }
    // Not asked at all without the admin scope: the answer would be 403.
    if (whoami && !isAdmin) forbidProcesses();

    async function loadProcesses() {
      if (procForbidden) return;
      let top;
      try {
        top = await api.api("GET", "/api/v1/processes", { query: { sort: procSort, limit: 10 } });
      } catch (err) {
        if (err instanceof api.ApiError && err.status === 403) {
          forbidProcesses();
          return;
        }
        ui.clear(procBody);
        ui.showError(err, procBody);
        return;
      }
      const vis = top.visibility || visibility;
      const note =
        vis && vis.processes === "own"
          ? h(
              "div",
              { class: "alert warn", role: "note" },
              h(
                "p",
                null,
                `The daemon sees only its own processes (those of the user ${vis.user}), not the whole host. `,
                vis.reason || "",
              ),
            )
          : null;
      ui.fill(procBody, 
        note,
        h(
          "p",
          { class: "muted hint" },
          `${top.total} processes visible; CPU measured over ${ui.formatDuration(top.interval_ms)}, as a share of one CPU.`,
        ),
        h(
          "div",
          { class: "table-wrap" },
          ui.table({
            caption: `Top processes by ${procSort}`,
            columns: [
              { label: "PID", class: "num", value: (p) => String(p.pid) },
              { label: "User", value: (p) => p.user },
              {
                label: "Command",
                class: "command",
                value: (p) => h("span", { class: "mono", title: p.command }, p.command.length > 120 ? `${p.command.slice(0, 120)}…` : p.command),
              },
              { label: "CPU", class: "num", value: (p) => `${p.cpu_percent.toFixed(1)} %` },
              { label: "Memory", class: "num", value: (p) => `${ui.formatBytes(p.rss_bytes)} (${p.memory_percent.toFixed(1)} %)` },
              { label: "State", value: (p) => p.state },
            ],
            rows: top.items || [],
            empty: "No processes visible.",
          }),
        ),
      );
    }

    // ---- Polling ----
    function schedule(fn, everyMs) {
      const tick = async () => {
        if (stopped) return;
        if (!document.hidden) await fn();
        if (stopped) return;
        const t = setTimeout(() => {
          timers.delete(t);
          tick();
        }, everyMs());
        timers.add(t);
      };
      const t = setTimeout(() => {
        timers.delete(t);
        tick();
      }, everyMs());
      timers.add(t);
    }

    const onVisible = () => {
      if (!document.hidden && !stopped) {
        loadHistory();
        loadAlerts();
      }
    };
    document.addEventListener("visibilitychange", onVisible);

    // The first processes answer takes a CPU sample (half a second): the page is ready without it.
    const firstProcesses = loadProcesses();
    await Promise.all([loadHistory(), loadAlerts(), loadFacts(), loadStorage()]);
    schedule(async () => {
      await Promise.all([loadHistory(), loadAlerts()]);
    }, () => resolution * 1000);
    schedule(async () => {
      await firstProcesses;
      await Promise.all([loadProcesses(), loadStorage()]);
    }, () => Math.max(resolution, 10) * 1000);
    schedule(loadFacts, () => 60_000);

    return () => {
      stopped = true;
      for (const t of timers) clearTimeout(t);
      timers.clear();
      resize.disconnect();
      scheme.removeEventListener("change", onScheme);
      document.removeEventListener("visibilitychange", onVisible);
      for (const c of charts) if (c.plot) c.plot.destroy();
    };
  },
};
