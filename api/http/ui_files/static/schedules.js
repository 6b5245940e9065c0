// The schedules list: when each fires next, what it last did, its sessions; pause and resume.
import { api, badge, el, keepFresh, pager, showProblem, when } from "./common.js";

const body = document.querySelector("#schedules tbody");

function timing(schedule) {
  return schedule.cron ? `cron ${schedule.cron} (${schedule.timezone})` : `every ${schedule.every}`;
}

function lastFired(schedule) {
  if (!schedule.last_session_id) return "–";
  return el("a", { href: `/ui/sessions/${schedule.last_session_id}` }, when(schedule.last_fired_at));
}

function state(schedule) {
  const refused = schedule.last_error
    ? el("p", { class: "why" }, `Last firing refused: ${schedule.last_error.code}: ${schedule.last_error.message}`)
    : null;
  const shown = schedule.paused ? badge("paused") : el("span", { class: "badge running" }, "active");
  return [shown, refused];
}

function toggle(schedule) {
  const label = `${schedule.paused ? "Resume" : "Pause"} ${schedule.name}`;
  const button = el("button", { type: "button", "aria-label": label }, schedule.paused ? "Resume" : "Pause");
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      await api(`/v1/schedules/${schedule.schedule_id}`, { method: "PATCH", body: { paused: !schedule.paused } });
      await pages.refresh();
    } catch (error) {
      showProblem(error);
      button.disabled = false;
    }
  });
  return button;
}

function row(schedule) {
  const sessions = new URLSearchParams({ label: `schedule_id=${schedule.schedule_id}` });
  return el(
    "tr", { "data-schedule-id": schedule.schedule_id },
    el("th", { scope: "row" }, schedule.name, " ", el("code", {}, schedule.schedule_id.slice(0, 8))),
    el("td", {}, timing(schedule), schedule.catch_up === "one" ? null : ` · catch up ${schedule.catch_up}`),
    el("td", {}, when(schedule.next_firing_at)),
    el("td", {}, lastFired(schedule)),
    el("td", {}, el("a", { href: `/ui?${sessions}` }, `${schedule.firings} sessions`)),
    el("td", {}, ...state(schedule)),
    el("td", {}, toggle(schedule)),
  );
}

async function load(cursor) {
  const query = new URLSearchParams({ limit: "25" });
  if (cursor) query.set("cursor", cursor);
  const page = await api(`/v1/schedules?${query}`);
  body.replaceChildren(...page.items.map(row));
  document.getElementById("empty").hidden = page.items.length > 0;
  document.getElementById("refreshed").textContent = `Updated ${new Date().toLocaleTimeString()}`;
  return { next: page.next_cursor };
}

const pages = pager(load);
keepFresh(pages.refresh);
