"""The dashboard: each chart's canvas draws the values of /api/v1/metrics/history (read back
from the canvas's pixels, not only from what the page says it drew), the facts of
/api/v1/system are shown, and the charts update live. It runs late in the suite, so the
daemon (sampling every second) has a few 10-second history slots to plot."""

import math
import socket

CHARTS = {
    "cpu": ["cpu"],
    "memory": ["memory"],
    "disk": ["disk"],
    "network": ["net_rx", "net_tx"],
    "load": ["load1"],
}

# For each chart, in one synchronous step (so the data and the drawing are of the same
# moment): the points the page says it drew, and whether the canvas has the series' stroke
# colour where each point must be. The plot area is uPlot's `.u-over` element; the x scale
# spans the first to the last timestamp; the y scale is 0..100 for percentages, else 0 up to
# 1.1 x the largest value (the page's range function).
READ_CANVAS = r"""
const [charts, shift] = arguments;
const css = getComputedStyle(document.documentElement);
const rgb = (s) => {
  s = s.trim();
  if (s.startsWith('#')) {
    if (s.length === 4) s = '#' + [...s.slice(1)].map(c => c + c).join('');
    return [1, 3, 5].map(i => parseInt(s.slice(i, i + 2), 16));
  }
  const m = s.match(/\d+(\.\d+)?/g); return m ? m.slice(0, 3).map(Number) : null;
};
const colors = [rgb(css.getPropertyValue('--chart-1')), rgb(css.getPropertyValue('--chart-2'))];
const out = {};
for (const [key, names] of Object.entries(charts)) {
  const box = document.querySelector(`[data-chart="${key}"]`);
  if (!box) { out[key] = {missing: true}; continue; }
  const canvas = box.querySelector('canvas'), over = box.querySelector('.u-over');
  if (!canvas || !over) { out[key] = {missing: true, html: box.outerHTML.slice(0, 300)}; continue; }
  const points = JSON.parse(box.dataset.points || 'null');
  const cr = canvas.getBoundingClientRect(), or = over.getBoundingClientRect();
  const sx = canvas.width / cr.width, sy = canvas.height / cr.height;
  const img = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  const px = (x, y) => { const i = (y * canvas.width + x) * 4; return [img[i], img[i + 1], img[i + 2], img[i + 3]]; };
  const near = (p, c) => p[3] > 128 && Math.abs(p[0] - c[0]) + Math.abs(p[1] - c[1]) + Math.abs(p[2] - c[2]) < 90;
  // Not blank: pixels of each series' colour somewhere in the plot area.
  const colored = names.map((_, si) => {
    let n = 0;
    for (let y = Math.floor((or.top - cr.top) * sy); y < (or.bottom - cr.top) * sy; y++)
      for (let x = Math.floor((or.left - cr.left) * sx); x < (or.right - cr.left) * sx; x++)
        if (near(px(x, y), colors[si])) n++;
    return n;
  });
  const result = {points, colored, checked: [], misses: []};
  if (points && points.timestamps.length >= 2) {
    const ts = points.timestamps, t0 = ts[0], t1 = ts[ts.length - 1];
    const all = names.flatMap(n => points.series[n] || []).filter(v => v !== null);
    const max = all.length ? Math.max(...all) : 0;
    const top = key === 'cpu' || key === 'memory' || key === 'disk' ? 100
      : max > 0 ? max * 1.1 : (key === 'network' ? 1024 : 1);
    const yOf = (v) => (or.top - cr.top) + (1 - v / top) * or.height + shift * or.height;
    names.forEach((name, si) => {
      const ys = points.series[name] || [];
      ys.forEach((v, i) => {
        if (v === null) return;
        const linked = (i > 0 && ys[i - 1] !== null) || (i + 1 < ys.length && ys[i + 1] !== null);
        if (!linked) return;  // a lone point between gaps draws no line
        const xc = (or.left - cr.left) + (ts[i] - t0) / (t1 - t0) * or.width, yc = yOf(v);
        // Another series drawn over this one at the same place hides it: not a miss.
        const hidden = names.some((other, oi) => oi > si && points.series[other]
          && points.series[other][i] !== null && Math.abs(yOf(points.series[other][i]) - yc) < 4);
        let hit = false;
        for (let dy = -3; dy <= 3 && !hit; dy++) for (let dx = -3; dx <= 3 && !hit; dx++) {
          const x = Math.round(xc * sx) + dx, y = Math.round(yc * sy) + dy;
          if (x >= 0 && y >= 0 && x < canvas.width && y < canvas.height && near(px(x, y), colors[si])) hit = true;
        }
        result.checked.push([name, ts[i], v]);
        if (!hit && !hidden) result.misses.push([name, ts[i], v, Math.round(xc), Math.round(yc)]);
      });
    });
  }
  out[key] = result;
}
return out;
"""


def enough_history(page):
    h = page.daemon.request("GET", "/api/v1/metrics/history?series=cpu&range=1h")
    return sum(v is not None for v in h["series"]["cpu"]) >= 4


def test_the_charts_draw_the_history_and_the_facts_are_shown(page):
    page.ensure_logged_in()
    page.wait(lambda: enough_history(page), "four 10 s history slots", timeout=60)
    page.open("/", "dashboard")
    page.wait(lambda: all(
        page.js("const b = document.querySelector(arguments[0]); return b && b.dataset.points && Number(b.dataset.drawn) > 0",
                f'[data-chart="{k}"]') for k in CHARTS), "every chart drawn")
    read = page.js(READ_CANVAS, CHARTS, 0)
    # Control: the same check with every point expected a third of the plot lower finds the
    # line missing (so the check can fail).
    control = page.js(READ_CANVAS, {"cpu": ["cpu"], "memory": ["memory"]}, 1 / 3)
    for key in ("cpu", "memory"):
        assert control[key]["misses"], f"the pixel check cannot tell where the {key} line is: {control[key]}"
    api = page.daemon.request("GET", "/api/v1/metrics/history?range=1h")
    for key, names in CHARTS.items():
        r = read[key]
        assert not r.get("missing"), f"no chart {key}: {r}"
        assert r["checked"], f"the {key} chart had no points to check: {r['points']}"
        assert not r["misses"], f"the {key} chart's canvas lacks these points (series, t, value, x, y): {r['misses'][:10]} of {len(r['checked'])}"
        # Not blank (where two lines coincide, as sent and received on a quiet host can,
        # the one drawn last hides the other).
        assert max(r["colored"]) > 0, f"the {key} chart's plot has no pixel of its lines' colours"
        # What the page drew is what the API says, slot for slot (the newest slot is still
        # filling, so its mean may have moved since).
        pts = r["points"]
        api_ts = [int(__import__("datetime").datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp())
                  for t in api["timestamps"]]
        common = sorted(set(pts["timestamps"]) & set(api_ts))[:-1]
        assert len(common) >= 3, (pts["timestamps"], api_ts)
        for name in names:
            mine = dict(zip(pts["timestamps"], pts["series"][name]))
            theirs = dict(zip(api_ts, api["series"][name]))
            for t in common:
                a, b = mine[t], theirs[t]
                assert (a is None and b is None) or (a is not None and b is not None and math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)), \
                    f"{name} at {t}: the page drew {a}, the API says {b}"
    page.check("dashboard")

    # Live: a newer slot is drawn without a reload.
    last = max(read["cpu"]["points"]["timestamps"])
    page.js("window.__noReload = 1")
    page.wait(lambda: max(__import__("json").loads(page.js(
        "return document.querySelector('[data-chart=cpu]').dataset.points"))["timestamps"]) > last,
        "a newer slot on the CPU chart", timeout=45)
    assert page.js("return window.__noReload") == 1

    # The host's facts.
    system = page.daemon.request("GET", "/api/v1/system")
    assert system["hostname"] == socket.gethostname()
    text = page.body_text()
    assert system["hostname"] in text, "the hostname is not shown"
    for k in ("kernel", "os"):
        v = system.get(k)
        if isinstance(v, str) and v:
            assert v in text, f"the {k} ({v!r}) is not shown"
