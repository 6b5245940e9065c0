// What every dashboard page shares: the API key, calls to the JSON API, the event stream and
// formatting. No library, no build step: this file is served as it is.
import { SessionStatus } from "./statuses.js";

const KEY = "stepline.apiKey";

export class Problem extends Error {
  constructor(status, body) {
    super(body.message || body.detail || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

function authHeaders() {
  const key = sessionStorage.getItem(KEY);
  return key ? { Authorization: `Bearer ${key}` } : {};
}

// Ask for a key (the server answered 401); resolves once one is entered.
let asking = null;
function askForKey(rejected) {
  if (asking) return asking;
  const dialog = document.getElementById("key-dialog");
  const form = document.getElementById("key-form");
  const input = document.getElementById("key-input");
  document.getElementById("key-why").textContent = rejected
    ? "That key was not accepted. Enter a valid API key; it is kept in this tab only."
    : "This server needs an API key. It is kept in this tab only (session storage).";
  asking = new Promise((resolve) => {
    form.addEventListener("submit", () => {
      sessionStorage.setItem(KEY, input.value.trim());
      input.value = "";
      showForgetButton();
      asking = null;
      resolve();
    }, { once: true });
  });
  dialog.addEventListener("cancel", (event) => event.preventDefault());
  dialog.showModal();
  input.focus();
  return asking;
}

function showForgetButton() {
  const button = document.getElementById("forget-key");
  button.hidden = !sessionStorage.getItem(KEY);
}

export async function api(path, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json", ...authHeaders() };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 401) {
    await askForKey(Boolean(headers.Authorization));
    return api(path, { method, body });
  }
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) throw new Problem(response.status, answer);
  return answer;
}

// An artifact (a screenshot) as an object URL: an <img src> cannot send the key.
export async function artifactUrl(path) {
  const response = await fetch(path, { headers: authHeaders() });
  if (!response.ok) throw new Problem(response.status, {});
  return URL.createObjectURL(await response.blob());
}

// The API's error (its code, message and advice) in the page's alert, or in `box`: beside the
// form that caused it.
export function showProblem(error, box = document.getElementById("problem")) {
  box.replaceChildren();
  if (!error) return;
  const body = error.body || {};
  box.append(el("p", {}, `${body.code || "ERROR"}: ${error.message}`));
  if (body.suggested_action) box.append(el("p", { class: "quiet" }, body.suggested_action));
}

const ENDINGS = new Set(["Completed", "Failed", "Cancelled", "Expired"]);

// Follow a session's events: history, then live; after a dropped connection, resume with
// Last-Event-ID. Every event reaches `onEvent` once, in order (an event lists the artifacts it
// stored; `onArtifact`, if given, hears of each just before). Returns a function that stops.
export function followEvents(sessionId, { onEvent, onArtifact, onState }) {
  let last = 0;
  let stopped = false;
  let controller = null;
  const url = `/v1/sessions/${sessionId}/stream`;

  function take(frame) {
    if (frame.event === "artifact") {
      const artifact = JSON.parse(frame.data);
      if (onArtifact && artifact.version > last) onArtifact(artifact);
      return false;
    }
    if (frame.id === undefined) return false;
    const version = Number(frame.id);
    if (version <= last) return false;
    last = version;
    onEvent(JSON.parse(frame.data));
    return ENDINGS.has(frame.event);
  }

  async function run() {
    let attempt = 0;
    while (!stopped) {
      controller = new AbortController();
      const headers = { Accept: "text/event-stream", ...authHeaders() };
      if (last) headers["Last-Event-ID"] = String(last);
      onState(attempt ? "reconnecting" : "connecting", attempt);
      try {
        const response = await fetch(url, { headers, signal: controller.signal });
        if (response.status === 401) {
          await askForKey(Boolean(headers.Authorization));
          continue;
        }
        if (!response.ok) {
          onState("error", attempt, new Problem(response.status, await response.json()));
          return;
        }
        onState("live", attempt);
        if (await readFrames(response.body, take)) {
          onState("ended", attempt);
          return;
        }
      } catch (error) {
        if (stopped) return;
      }
      attempt += 1;
      await new Promise((resolve) => setTimeout(resolve, Math.min(5000, 250 * 2 ** attempt)));
    }
  }
  run();
  return () => { stopped = true; if (controller) controller.abort(); };
}

// Parse Server-Sent Events from a byte stream; true once `take` reports the last event.
async function readFrames(body, take) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return false;
    buffer += value.replaceAll("\r\n", "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const frame = parseFrame(buffer.slice(0, end));
      buffer = buffer.slice(end + 2);
      if (frame && take(frame)) {
        reader.cancel();
        return true;
      }
    }
  }
}

function parseFrame(text) {
  const frame = {};
  const data = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "data") data.push(value);
    else if (field === "id" || field === "event") frame[field] = value;
  }
  if (!data.length) return null;
  frame.data = data.join("\n");
  return frame;
}

// ---- the page -----------------------------------------------------------------------------

export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value !== undefined && value !== null && value !== false) node.setAttribute(name, value);
  }
  node.append(...children.filter((c) => c !== undefined && c !== null));
  return node;
}

// What a waiting session waits for, and until when: "approval: Pay? (until 10:00:00)".
export function waitingFor(session) {
  const until = session.due_at ? ` (until ${when(session.due_at)})` : "";
  return `Waiting for ${session.waiting_for}${until}`;
}

export function badge(status) {
  return el("span", { class: `badge ${status}` }, status);
}

export function progressBar(percent, label) {
  return el("progress", { max: "100", value: String(percent), "aria-label": label });
}

export function when(iso) {
  return iso ? new Date(iso).toLocaleString() : "–";
}

// Why a session or a step failed: "CODE: message", or null when it did not.
export function failure(item) {
  return item.error_code ? `${item.error_code}: ${item.error_message}` : null;
}

// A session's clock stops when it ends, and while it is paused.
export function sessionDuration(session) {
  const stopped = session.finished_at ?? (session.status === SessionStatus.PAUSED ? session.updated_at : null);
  return duration(session.started_at, stopped);
}

export function duration(fromIso, toIso) {
  if (!fromIso) return "–";
  const ms = (toIso ? new Date(toIso) : new Date()) - new Date(fromIso);
  return milliseconds(ms);
}

export function milliseconds(ms) {
  if (ms === null || ms === undefined) return "–";
  if (ms < 1000) return `${Math.max(0, Math.round(ms))} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  return `${m} min ${Math.round(s - 60 * m)} s`;
}

// A datetime-local input's value as an ISO instant, or undefined.
export function isoFromInput(value) {
  return value ? new Date(value).toISOString() : undefined;
}

// Read a filter form from the address bar and keep the address bar up to date with it. Only
// what the address names is set: what was typed or ticked before the page's script ran stays.
export function filtersFromAddress(form) {
  const query = new URLSearchParams(location.search);
  for (const input of form.elements) {
    if (!input.name || !query.has(input.name)) continue;
    if (input.type === "checkbox") input.checked = true;
    else input.value = query.get(input.name);
  }
}

export function addressFromFilters(form) {
  const query = new URLSearchParams();
  for (const input of form.elements) {
    if (!input.name) continue;
    if (input.type === "checkbox") {
      if (input.checked) query.set(input.name, "1");
    } else if (input.value) {
      query.set(input.name, input.value);
    }
  }
  history.replaceState(null, "", query.size ? `?${query}` : location.pathname);
}

// Run `refresh` now and every `everyMs` while the tab is visible.
export function keepFresh(refresh, everyMs = 2000) {
  const tick = async () => {
    if (document.visibilityState === "visible") {
      try { await refresh(); showProblem(null); } catch (error) { showProblem(error); }
    }
  };
  tick();
  return setInterval(tick, everyMs);
}

// A page of keyset paging: `load(cursor)` returns {next}; the buttons walk back and forth.
export function pager(load) {
  const stack = [null];
  const newer = document.getElementById("newer");
  const older = document.getElementById("older");
  let next = null;
  async function show() {
    next = (await load(stack.at(-1))).next;
    newer.disabled = stack.length === 1;
    older.disabled = !next;
  }
  newer.addEventListener("click", () => { stack.pop(); show().catch(showProblem); });
  older.addEventListener("click", () => { stack.push(next); show().catch(showProblem); });
  return { refresh: show, reset: () => { stack.length = 1; return show(); } };
}

document.getElementById("forget-key").addEventListener("click", () => {
  sessionStorage.removeItem(KEY);
  location.reload();
});
showForgetButton();
