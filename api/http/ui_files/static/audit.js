// The audit trail: filters in the address bar, newest first, older entries on demand; the
// events of steps (started, commands, checks...) can be hidden to see who changed what. Above
// it, the head of the log's hash chain and what its last verification found.
import {
  addressFromFilters, api, el, filtersFromAddress, isoFromInput, showProblem, when,
} from "./common.js";

const form = document.getElementById("filters");
const body = document.querySelector("#audit tbody");
const more = document.getElementById("more");
let next = null;

function query(before) {
  const query = new URLSearchParams({ limit: "100", order: "newest" });
  if (form.elements.hide_steps.checked) query.set("per_step", "false");
  for (const name of ["actor", "event_type", "session_id"]) {
    const value = form.elements[name].value.trim();
    if (value) query.set(name, value);
  }
  for (const name of ["since", "until"]) {
    const value = isoFromInput(form.elements[name].value);
    if (value) query.set(name, value);
  }
  if (before) query.set("before", String(before));
  return query;
}

function row(entry) {
  return el(
    "tr", {},
    el("td", {}, String(entry.position)),
    el("td", {}, when(entry.occurred_at)),
    el("td", {}, entry.actor),
    el("td", {}, entry.event_type),
    el("td", {}, entry.event_type.startsWith("Batch.")
      ? el("a", { href: `/ui/batches/${entry.session_id}` }, entry.session_id.slice(0, 8))
      : el("a", { href: `/ui/sessions/${entry.session_id}` }, entry.session_id.slice(0, 8))),
    el("td", {}, entry.description),
  );
}

async function load(append) {
  try {
    const page = await api(`/v1/audit?${query(append ? next : null)}`);
    const rows = page.items.map(row);
    if (append) body.append(...rows); else body.replaceChildren(...rows);
    next = page.next_before;
    more.hidden = next === null;
    document.getElementById("empty").hidden = body.children.length > 0;
    showProblem(null);
  } catch (error) {
    showProblem(error);
  }
}

function verified(last) {
  if (!last) return "never (stepline audit verify)";
  const range = `positions ${last.from_position} to ${last.to_position}`;
  const found = last.clean ? "the chain holds" : `broken at position ${last.first_break ?? "–"}`;
  return `${when(last.verified_at)} by ${last.actor}: ${found} (${range})`;
}

async function loadHead() {
  try {
    const head = await api("/v1/audit/head");
    document.getElementById("head-position").textContent =
      `position ${head.position} at ${when(head.time)}`;
    document.getElementById("head-hash").textContent = head.hash ?? "none yet";
    document.getElementById("head-verified").textContent = verified(head.last_verification);
  } catch (error) {
    showProblem(error);
  }
}

filtersFromAddress(form);
form.addEventListener("submit", (event) => {
  event.preventDefault();
  addressFromFilters(form);
  load(false);
});
form.addEventListener("reset", () => setTimeout(() => { addressFromFilters(form); load(false); }));
more.addEventListener("click", () => load(true));
loadHead();
load(false);
