// The sessions list: filters in the address bar, keyset paging, refreshed every two seconds.
import {
  addressFromFilters, api, badge, el, failure, filtersFromAddress, isoFromInput, keepFresh,
  pager, progressBar, sessionDuration, waitingFor, when,
} from "./common.js";

const form = document.getElementById("filters");
const body = document.querySelector("#sessions tbody");

function query(cursor) {
  const query = new URLSearchParams({ limit: "25" });
  const value = (name) => form.elements[name].value.trim();
  if (value("status")) query.set("status", value("status"));
  if (value("label")) query.set("label", value("label"));
  const after = isoFromInput(value("created_after"));
  const before = isoFromInput(value("created_before"));
  if (after) query.set("created_after", after);
  if (before) query.set("created_before", before);
  if (cursor) query.set("cursor", cursor);
  return query;
}

function row(session) {
  const labels = Object.entries(session.labels).map(([k, v]) => el("span", { class: "label" }, `${k}=${v}`));
  const progress = `${session.completed_steps}/${session.step_count} steps`;
  const why = failure(session);
  return el(
    "tr", { "data-session-id": session.session_id },
    el("td", {}, el("code", {}, session.session_id.slice(0, 8))),
    el("th", { scope: "row" }, el("a", { href: `/ui/sessions/${session.session_id}` }, session.name)),
    el("td", {}, badge(session.status), why ? el("p", { class: "why" }, why) : null,
      session.waiting_for ? el("p", { class: "waiting-for" }, waitingFor(session)) : null),
    el("td", {}, ...labels),
    el("td", {}, progressBar(session.percent, `Progress of ${session.name}`), " ", progress),
    el("td", {}, when(session.started_at)),
    el("td", {}, sessionDuration(session)),
  );
}

async function load(cursor) {
  const page = await api(`/v1/sessions?${query(cursor)}`);
  body.replaceChildren(...page.items.map(row));
  document.getElementById("empty").hidden = page.items.length > 0;
  document.getElementById("refreshed").textContent = `Updated ${new Date().toLocaleTimeString()}`;
  return { next: page.next_cursor };
}

filtersFromAddress(form);
const pages = pager(load);
form.addEventListener("submit", (event) => {
  event.preventDefault();
  addressFromFilters(form);
  pages.reset();
});
form.addEventListener("reset", () => {
  setTimeout(() => { addressFromFilters(form); pages.reset(); });
});
keepFresh(pages.refresh);
