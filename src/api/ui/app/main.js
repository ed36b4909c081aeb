// The app shell: routes the UI's paths to page modules (loaded with import() on first use),
// keeps the nav and the logged-in actor current, sends a visitor without a session to /login,
// and runs each page's cleanup when the user leaves it.
//
// A page module `./pages/<name>.js` exports `{ title, async mount(root, ctx) }`; mount may
// return a cleanup function. Once mount resolves, `<main id="main">` gets `data-ready="<name>"`.

import * as api from "./api.js";
import * as ui from "./ui.js";

const ROUTES = {
  "/": "dashboard",
  "/login": "login",
  "/data": "data",
  "/files": "files",
  "/programs": "programs",
  "/console": "console",
  "/jobs": "jobs",
  "/terminal": "terminal",
  "/tunnels": "tunnels",
  "/admin": "admin",
};

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const sessionBox = document.getElementById("session-box");
const actorEl = document.getElementById("actor");
const logoutBtn = document.getElementById("logout");

let cleanup = null;
// Each navigation gets a number; a page whose load finishes after a newer navigation began is
// dropped (its cleanup runs at once).
let generation = 0;
let whoami = null;
let firstRender = true;

function pageOf(pathname) {
  const p = pathname.length > 1 ? pathname.replace(/\/+$/, "") : pathname;
  return Object.hasOwn(ROUTES, p) ? ROUTES[p] : null;
}

function showSession(s) {
  whoami = s;
  const loggedIn = Boolean(s && s.actor);
  nav.hidden = !loggedIn;
  sessionBox.hidden = !loggedIn;
  if (loggedIn) {
    const scopes = (s.actor.scopes || []).join(", ");
    actorEl.textContent = s.actor.name;
    actorEl.title = scopes ? `Logged in as ${s.actor.name} (scopes: ${scopes})` : `Logged in as ${s.actor.name}`;
    const isAdmin = (s.actor.scopes || []).includes("admin");
    // The admin pages (Tunnels, Admin) are offered to admin tokens only.
    for (const a of nav.querySelectorAll("a[data-admin]")) a.parentElement.hidden = !isAdmin;
  } else {
    actorEl.textContent = "";
  }
}

function markNav(name) {
  for (const a of nav.querySelectorAll("a[data-page]")) {
    if (a.dataset.page === name) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
}

function runCleanup() {
  const fn = cleanup;
  cleanup = null;
  if (typeof fn === "function") {
    try {
      fn();
    } catch (err) {
      console.error("page cleanup failed", err);
    }
  }
}

/** Goes to `url` (same origin) without reloading; `replace` replaces the history entry. */
export function navigate(url, { replace = false } = {}) {
  const target = new URL(url, location.href);
  if (target.origin !== location.origin || pageOf(target.pathname) === null) {
    location.assign(target.href);
    return;
  }
  const next = target.pathname + target.search + target.hash;
  if (replace) history.replaceState(null, "", next);
  else history.pushState(null, "", next);
  route();
}

function notFound(gen) {
  if (gen !== generation) return;
  ui.clear(main);
  document.title = "Not found · localhostd";
  markNav(null);
  main.append(
    ui.h("h1", null, "Page not found"),
    ui.h("p", null, "There is no page at ", ui.h("code", null, location.pathname), "."),
    ui.h("p", null, ui.h("a", { href: "/" }, "Go to the dashboard")),
  );
  main.dataset.ready = "not-found";
}

async function route() {
  const gen = ++generation;
  runCleanup();
  delete main.dataset.ready;
  delete main.dataset.failed;
  const name = pageOf(location.pathname);
  if (name === null) {
    notFound(gen);
    return;
  }

  if (name !== "login") {
    let s;
    try {
      s = await api.session();
    } catch (err) {
      if (gen !== generation) return;
      ui.clear(main);
      main.append(ui.h("h1", null, "localhostd"));
      ui.showError(err, main);
      main.dataset.failed = name;
      return;
    }
    if (gen !== generation) return;
    if (!s) {
      const here = location.pathname + location.search;
      navigate("/login?next=" + encodeURIComponent(here), { replace: true });
      return;
    }
    showSession(s);
  }

  markNav(name);
  let mod;
  try {
    mod = await import(`./pages/${name}.js`);
  } catch (err) {
    if (gen !== generation) return;
    console.error(`the ${name} page failed to load`, err);
    ui.clear(main);
    main.append(ui.h("h1", null, "This page could not be loaded"));
    ui.showError(
      `The ${name} page's code failed to load (${err && err.message ? err.message : err}). Reload to try again.`,
      main,
    );
    main.dataset.failed = name;
    return;
  }
  if (gen !== generation) return;

  const page = mod.default;
  ui.clear(main);
  document.title = `${page.title || name} · localhostd`;
  const root = ui.h("div", { class: `page page-${name}` });
  main.appendChild(root);
  const ctx = {
    api,
    ui,
    params: new URLSearchParams(location.search),
    navigate,
    whoami,
  };
  try {
    const fn = await page.mount(root, ctx);
    if (gen !== generation) {
      if (typeof fn === "function") fn();
      return;
    }
    cleanup = fn || null;
    markScrollableWraps();
    main.dataset.ready = name;
  } catch (err) {
    if (gen !== generation) return;
    console.error(`the ${name} page failed`, err);
    ui.showError(err, main);
    main.dataset.failed = name;
    return;
  }
  if (!firstRender) {
    // Moves focus to the new page's content so keyboard and screen reader users land there.
    main.focus({ preventScroll: true });
    window.scrollTo(0, 0);
  }
  firstRender = false;
}

// Same-origin links to the UI's pages route client-side; everything else (new tab, modified
// click, downloads, other paths) is left to the browser.
document.addEventListener("click", (ev) => {
  if (ev.defaultPrevented || ev.button !== 0 || ev.metaKey || ev.ctrlKey || ev.shiftKey || ev.altKey) return;
  const a = ev.target.closest("a[href]");
  if (!a || a.target || a.hasAttribute("download")) return;
  const url = new URL(a.href, location.href);
  if (url.origin !== location.origin || pageOf(url.pathname) === null) return;
  if (url.pathname === location.pathname && url.search === location.search && url.hash) return;
  ev.preventDefault();
  navigate(url.href);
});

// A table that scrolls (narrow screens) must be reachable by keyboard: every `.table-wrap`
// that overflows becomes a focusable, named region, whichever page made it.
let wrapsPending = false;
function markScrollableWraps() {
  wrapsPending = false;
  for (const w of main.querySelectorAll(".table-wrap")) {
    const scrolls = w.scrollWidth > w.clientWidth + 1 || w.scrollHeight > w.clientHeight + 1;
    if (scrolls && !w.hasAttribute("tabindex")) {
      w.setAttribute("tabindex", "0");
      w.dataset.autoFocusable = "1";
      if (!w.hasAttribute("role")) w.setAttribute("role", "region");
      if (!w.hasAttribute("aria-label") && !w.hasAttribute("aria-labelledby")) {
        const caption = w.querySelector("caption");
        w.setAttribute("aria-label", caption && caption.textContent ? caption.textContent : "Table");
      }
    } else if (!scrolls && w.dataset.autoFocusable) {
      w.removeAttribute("tabindex");
      delete w.dataset.autoFocusable;
    }
  }
}
function scheduleWraps() {
  if (wrapsPending) return;
  wrapsPending = true;
  requestAnimationFrame(markScrollableWraps);
}
new MutationObserver(scheduleWraps).observe(main, { childList: true, subtree: true });
window.addEventListener("resize", scheduleWraps);

window.addEventListener("popstate", () => route());

// Leaving by a full navigation: Chromium may keep this document in its back/forward cache with
// its connections open (a terminal's WebSocket would hold the keyboard), so the page's cleanup
// runs on pagehide, and the page mounts afresh if the document is shown again from the cache.
window.addEventListener("pagehide", () => {
  generation++;
  runCleanup();
});
window.addEventListener("pageshow", (ev) => {
  if (ev.persisted) route();
});

window.addEventListener("lhd:session", (ev) => showSession(ev.detail));

logoutBtn.addEventListener("click", async () => {
  logoutBtn.disabled = true;
  try {
    await api.logout();
  } catch (err) {
    // 404: the session had already ended; either way the cookie is gone or useless.
    if (!(err instanceof api.ApiError) || err.status !== 404) {
      ui.showError(err);
      logoutBtn.disabled = false;
      return;
    }
  }
  logoutBtn.disabled = false;
  showSession(null);
  navigate("/login", { replace: true });
});

route();
