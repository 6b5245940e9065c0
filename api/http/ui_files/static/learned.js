// The learned actions (the action cache): each step's commands, what a hit saves, hits and
// misses, and forgetting one.
import { api, el, keepFresh, showProblem, when } from "./common.js";

const body = document.querySelector("#learned tbody");
const all = document.getElementById("all");

function state(action) {
  if (action.forgotten) return el("span", { class: "badge cancelled" }, "forgotten");
  if (action.superseded) return el("span", { class: "badge paused" }, "superseded");
  return el("span", { class: "badge completed" }, "live");
}

function commands(action) {
  return el(
    "ol", {},
    ...action.commands.map((c) => el("li", {}, el("code", {}, `${c.executor}.${c.name} ${JSON.stringify(c.args)}`))),
  );
}

function forget(action) {
  if (action.forgotten || action.superseded) return null;
  const button = el("button", { type: "button", "aria-label": `Forget ${action.step_text}` }, "Forget");
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      await api(`/v1/learned-actions/${action.id}`, { method: "DELETE" });
      await refresh();
    } catch (error) {
      showProblem(error);
      button.disabled = false;
    }
  });
  return button;
}

function row(action) {
  return el(
    "tr", { "data-action-id": action.id },
    el("th", { scope: "row" }, action.step_text, " ", el("code", {}, action.id.slice(0, 8))),
    el("td", {}, action.workflow),
    el("td", {}, String(action.version)),
    el("td", {}, commands(action)),
    el("td", {}, `${action.tokens} tokens · ${action.seconds} s`),
    el("td", {}, String(action.hits)),
    el("td", {}, String(action.misses)),
    el("td", {}, el("a", { href: `/ui/sessions/${action.source_session_id}` }, when(action.learned_at))),
    el("td", {}, state(action)),
    el("td", {}, forget(action)),
  );
}

async function refresh() {
  const query = new URLSearchParams({ limit: "200", all: all.checked ? "true" : "false" });
  const page = await api(`/v1/learned-actions?${query}`);
  body.replaceChildren(...page.items.map(row));
  document.getElementById("empty").hidden = page.items.length > 0;
  document.getElementById("refreshed").textContent = `Updated ${new Date().toLocaleTimeString()}`;
}

all.addEventListener("change", () => refresh().catch(showProblem));
keepFresh(refresh);
