// The login page: a token form, and the one-time login link (`/login#link=<secret>` from
// `localhostd login-url`). The link's secret is in the fragment, which browsers never send to
// servers, so it lands in no log; the page removes it from the address bar at once and posts
// it to POST /api/v1/session. `?next=` is honoured only for the UI's own same-origin paths.

const UI_PATHS = new Set(["/", "/data", "/files", "/programs", "/console", "/jobs", "/terminal", "/admin"]);

/** Where to go after logging in: `next` when it is a same-origin path of the UI, else "/". */
export function safeNext(next) {
  if (!next || !next.startsWith("/") || next.startsWith("//") || next.startsWith("/\\")) return "/";
  let url;
  try {
    url = new URL(next, location.origin);
  } catch {
    return "/";
  }
  if (url.origin !== location.origin) return "/";
  const path = url.pathname.length > 1 ? url.pathname.replace(/\/+$/, "") : url.pathname;
  if (!UI_PATHS.has(path)) return "/";
  return path + url.search;
}

export default {
  title: "Log in",
  async mount(root, { api, ui, params, navigate }) {
    const { h } = ui;
    const next = safeNext(params.get("next"));

    // Read the link's secret before anything else and drop the fragment from the address bar
    // (and so from the history entry).
    let link = null;
    if (location.hash.startsWith("#link=")) {
      const raw = location.hash.slice("#link=".length);
      try {
        link = decodeURIComponent(raw);
      } catch {
        link = raw;
      }
      history.replaceState(null, "", location.pathname + location.search);
    }

    const errorBox = h("div", { class: "alert error", role: "alert", hidden: true });
    const status = h("p", { class: "muted", role: "status", "aria-live": "polite" });
    const tokenInput = h("input", {
      type: "password",
      name: "token",
      id: "login-token",
      autocomplete: "current-password",
      required: true,
      spellcheck: "false",
      autocapitalize: "off",
    });
    const submit = h("button", { type: "submit", class: "btn primary" }, "Log in");
    const form = h(
      "form",
      { class: "card login-card", "aria-labelledby": "login-title", novalidate: true },
      h("h1", { id: "login-title" }, "Log in to localhostd"),
      h(
        "p",
        { class: "muted" },
        "Paste an API token, or open the link that ",
        h("code", null, "localhostd login-url"),
        " prints on the host.",
      ),
      errorBox,
      ui.field("API token", tokenInput, "The token stays in this browser: it is exchanged for a session cookie."),
      h("div", { class: "row" }, submit),
      status,
    );
    root.appendChild(form);

    const fail = (err) => {
      let e = err;
      if (err instanceof api.ApiError && err.status === 401) {
        e = link
          ? "This login link is not valid: it was used already or has expired. Run `localhostd login-url` again, or log in with a token."
          : "That token was not accepted: it is unknown, revoked or expired.";
      } else if (err instanceof api.ApiError && err.status === 429) {
        e = `${err.message} Wait a moment before trying again.`;
      }
      ui.showError(e, errorBox);
    };

    const done = () => {
      status.textContent = "Logged in.";
      navigate(next, { replace: true });
    };

    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const token = tokenInput.value.trim();
      if (!token) {
        tokenInput.setAttribute("aria-invalid", "true");
        ui.showError("Enter an API token.", errorBox);
        tokenInput.focus();
        return;
      }
      tokenInput.removeAttribute("aria-invalid");
      errorBox.hidden = true;
      submit.disabled = true;
      status.textContent = "Logging in…";
      try {
        link = null;
        await api.login({ token });
        tokenInput.value = "";
        done();
      } catch (err) {
        status.textContent = "";
        fail(err);
        tokenInput.focus();
      } finally {
        submit.disabled = false;
      }
    });

    if (link) {
      status.textContent = "Logging in with the link…";
      submit.disabled = true;
      try {
        await api.login({ link });
        done();
        return undefined;
      } catch (err) {
        status.textContent = "";
        fail(err);
      } finally {
        submit.disabled = false;
      }
    } else {
      // Already logged in (a bookmark of /login): say so and offer the way on.
      try {
        const s = await api.session();
        if (s) {
          root.prepend(
            h(
              "div",
              { class: "alert ok", role: "status" },
              h("p", null, `You are logged in as ${s.actor.name}. `, h("a", { href: next }, "Continue")),
            ),
          );
        }
      } catch {
        // The form is the way on either way; a network error shows when it is used.
      }
    }
    tokenInput.focus();
    return undefined;
  },
};
