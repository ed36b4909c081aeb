// The one door to the daemon's API for every page: JSON requests, raw responses (downloads,
// streams), Server-Sent Events read through fetch, uploads with progress, and the browser
// session (cookie + CSRF token).
//
// The session cookie is HttpOnly, so the page never sees it; what the page keeps is the CSRF
// token, which every request that changes something must carry as `X-CSRF-Token`. It comes
// from `POST /api/v1/session` (login) or `GET /api/v1/session` (a page loaded while logged in).

const SESSION_PATH = "/api/v1/session";

/** An API error: `message` is the API's own message (written for people), `status` the HTTP
 * status (0 when the server could not be reached), `code` the API's error code, `requestId`
 * the id under which the server logged the request. */
export class ApiError extends Error {
  constructor(message, { status = 0, code = "", requestId = "" } = {}) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.requestId = requestId;
  }
}

let csrfToken = null;
// The current session as last seen ({actor, csrf_token}), shared with the shell.
let current = null;

function announce() {
  window.dispatchEvent(new CustomEvent("lhd:session", { detail: current }));
}

function isSessionRoute(path) {
  return path === SESSION_PATH || path.startsWith(SESSION_PATH + "?");
}

function withQuery(path, query) {
  if (!query) return path;
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) {
    if (v === undefined || v === null || v === "") continue;
    if (Array.isArray(v)) for (const item of v) params.append(k, String(item));
    else params.append(k, String(v));
  }
  const qs = params.toString();
  if (!qs) return path;
  return path + (path.includes("?") ? "&" : "?") + qs;
}

function isChange(method) {
  const m = method.toUpperCase();
  return m !== "GET" && m !== "HEAD" && m !== "OPTIONS";
}

// Makes sure the CSRF token is known before a change: a page loaded while logged in learns it
// from GET /api/v1/session.
async function ensureCsrf() {
  if (csrfToken) return;
  await session();
}

/** Sends the browser to the login page, keeping where it was. */
export function toLogin() {
  if (location.pathname === "/login") return;
  const here = location.pathname + location.search;
  location.assign("/login?next=" + encodeURIComponent(here));
}

function readableNetworkError(err) {
  if (err && err.name === "AbortError") return err;
  return new ApiError(
    "Could not reach the localhostd server: check that it is running and that the network is up.",
    { status: 0, code: "network" },
  );
}

async function errorFrom(resp) {
  const requestId = resp.headers.get("x-request-id") || "";
  let body = null;
  try {
    body = await resp.json();
  } catch {
    body = null;
  }
  const e = body && body.error;
  if (e && typeof e.message === "string") {
    return new ApiError(e.message, {
      status: resp.status,
      code: e.code || "",
      requestId: e.request_id || requestId,
    });
  }
  const text = resp.statusText ? ` (${resp.statusText})` : "";
  return new ApiError(`The server answered ${resp.status}${text}.`, {
    status: resp.status,
    code: "",
    requestId,
  });
}

function buildInit(method, path, { json, body, headers, signal } = {}) {
  const h = new Headers(headers || {});
  let payload = body;
  if (json !== undefined) {
    payload = JSON.stringify(json);
    if (!h.has("content-type")) h.set("content-type", "application/json");
  }
  if (!h.has("accept")) h.set("accept", "application/json");
  if (isChange(method) && csrfToken) h.set("x-csrf-token", csrfToken);
  return {
    method: method.toUpperCase(),
    headers: h,
    body: payload,
    signal,
    credentials: "same-origin",
    cache: "no-store",
  };
}

/** The `Response` for a request (downloads, streaming bodies): the same headers, CSRF and 401
 * rules as `api`, but no throwing on an error status (network errors still throw). */
export async function apiRaw(method, path, opts = {}) {
  const isLogin = isSessionRoute(path) && method.toUpperCase() === "POST";
  if (isChange(method) && !isLogin) await ensureCsrf();
  const url = withQuery(path, opts.query);
  let resp;
  try {
    resp = await fetch(url, buildInit(method, path, opts));
  } catch (err) {
    throw readableNetworkError(err);
  }
  if (resp.status === 401 && !isSessionRoute(path)) {
    current = null;
    csrfToken = null;
    toLogin();
  }
  return resp;
}

/** A JSON request: the parsed body, or null for 204; throws ApiError for an error status. */
export async function api(method, path, opts = {}) {
  const resp = await apiRaw(method, path, opts);
  if (!resp.ok) throw await errorFrom(resp);
  if (resp.status === 204 || resp.status === 205) return null;
  const text = await resp.text();
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    throw new ApiError("The server's answer was not valid JSON.", {
      status: resp.status,
      code: "bad_response",
      requestId: resp.headers.get("x-request-id") || "",
    });
  }
}

/** Server-Sent Events from `path`, read with fetch and a stream reader. `onMessage(ev)` gets
 * `{event, data, id}` (event defaults to "message"); `onError(err)` gets an ApiError for an
 * error status or a lost connection; `onEnd()` (optional) when the server ends the stream.
 * `method` and `json` (optional) make it a POST whose answer is a stream (`POST
 * /api/v1/exec`). Returns `{close()}`. */
export function events(path, { onMessage, onError, onEnd, query, headers, method = "GET", json } = {}) {
  const controller = new AbortController();
  let closed = false;
  const fail = (err) => {
    if (closed || (err && err.name === "AbortError")) return;
    if (onError) onError(err);
    else console.warn("event stream failed", err);
  };
  (async () => {
    const h = new Headers(headers || {});
    h.set("accept", "text/event-stream");
    const resp = await apiRaw(method, path, { query, json, headers: h, signal: controller.signal });
    if (!resp.ok) throw await errorFrom(resp);
    if (!resp.body) throw new ApiError("The browser gave no stream to read.", { code: "stream" });
    const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    let ev = { event: "", data: [], id: "" };
    let lastId = "";
    const dispatch = () => {
      if (ev.data.length > 0 || ev.event) {
        if (ev.id) lastId = ev.id;
        const msg = { event: ev.event || "message", data: ev.data.join("\n"), id: ev.id || lastId };
        if (!closed && onMessage) onMessage(msg);
      }
      ev = { event: "", data: [], id: "" };
    };
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value;
      let nl;
      while ((nl = buf.search(/\r\n|\r|\n/)) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + (buf.startsWith("\r\n", nl) ? 2 : 1));
        if (line === "") {
          dispatch();
          continue;
        }
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let val = colon < 0 ? "" : line.slice(colon + 1);
        if (val.startsWith(" ")) val = val.slice(1);
        if (field === "event") ev.event = val;
        else if (field === "data") ev.data.push(val);
        else if (field === "id") ev.id = val;
      }
    }
    if (!closed) {
      closed = true;
      if (onEnd) onEnd();
    }
  })().catch(fail);
  return {
    close() {
      closed = true;
      controller.abort();
    },
  };
}

/** Uploads a File or Blob as the request body with XMLHttpRequest (for progress). Resolves to
 * the parsed JSON answer (null when empty); rejects with ApiError, or an AbortError DOMException
 * when `signal` aborts. */
export async function upload(method, path, fileOrBlob, { headers, query, onProgress, signal } = {}) {
  await ensureCsrf();
  return new Promise((resolve, reject) => {
    if (signal && signal.aborted) {
      reject(new DOMException("The upload was cancelled.", "AbortError"));
      return;
    }
    const xhr = new XMLHttpRequest();
    xhr.open(method.toUpperCase(), withQuery(path, query));
    xhr.setRequestHeader("accept", "application/json");
    for (const [k, v] of new Headers(headers || {})) xhr.setRequestHeader(k, v);
    if (csrfToken) xhr.setRequestHeader("x-csrf-token", csrfToken);
    if (onProgress) {
      xhr.upload.addEventListener("progress", (e) => {
        onProgress(e.loaded, e.lengthComputable ? e.total : fileOrBlob.size);
      });
    }
    const onAbort = () => xhr.abort();
    if (signal) signal.addEventListener("abort", onAbort, { once: true });
    const done = () => {
      if (signal) signal.removeEventListener("abort", onAbort);
    };
    xhr.addEventListener("load", () => {
      done();
      const requestId = xhr.getResponseHeader("x-request-id") || "";
      let body = null;
      try {
        body = xhr.responseText ? JSON.parse(xhr.responseText) : null;
      } catch {
        body = null;
      }
      if (xhr.status >= 200 && xhr.status < 300) {
        if (onProgress) onProgress(fileOrBlob.size, fileOrBlob.size);
        resolve(body);
        return;
      }
      if (xhr.status === 401) {
        current = null;
        csrfToken = null;
        toLogin();
      }
      const e = body && body.error;
      reject(
        new ApiError(e && e.message ? e.message : `The server answered ${xhr.status}.`, {
          status: xhr.status,
          code: (e && e.code) || "",
          requestId: (e && e.request_id) || requestId,
        }),
      );
    });
    xhr.addEventListener("error", () => {
      done();
      reject(readableNetworkError(null));
    });
    xhr.addEventListener("abort", () => {
      done();
      reject(new DOMException("The upload was cancelled.", "AbortError"));
    });
    xhr.send(fileOrBlob);
  });
}

/** The current session `{actor, csrf_token}`, or null when not logged in. */
export async function session() {
  let resp;
  try {
    resp = await fetch(SESSION_PATH, {
      headers: { accept: "application/json" },
      credentials: "same-origin",
      cache: "no-store",
    });
  } catch (err) {
    throw readableNetworkError(err);
  }
  if (resp.status === 401) {
    const changed = current !== null;
    current = null;
    csrfToken = null;
    if (changed) announce();
    return null;
  }
  if (!resp.ok) throw await errorFrom(resp);
  const body = await resp.json();
  if (body.csrf_token) csrfToken = body.csrf_token;
  current = { actor: body.actor, csrf_token: body.csrf_token || csrfToken };
  announce();
  return current;
}

/** Logs in with `{token}` or a one-time login link's secret `{link}`. Resolves to the session
 * `{actor, csrf_token, idle_timeout_s}`; throws ApiError (401 for a wrong token). */
export async function login(credential) {
  const body = await api("POST", SESSION_PATH, { json: credential });
  csrfToken = body.csrf_token;
  current = { actor: body.actor, csrf_token: body.csrf_token };
  announce();
  return body;
}

/** Logs out (ends the session on the server and clears the cookie). */
export async function logout() {
  try {
    await api("DELETE", SESSION_PATH);
  } finally {
    current = null;
    csrfToken = null;
    announce();
  }
}

/** The session last seen, without asking the server. */
export function currentSession() {
  return current;
}
