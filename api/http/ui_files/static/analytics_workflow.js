// One workflow's analytics: its versions, its steps (flaky first) and its charts by day.
import { addressFromFilters, api, el, filtersFromAddress, showProblem } from "./common.js";
import { analyticsCharts, daysQuery, ms, plain } from "./analytics_charts.js";

const name = document.body.dataset.workflowName;
const form = document.getElementById("days");

function version(v) {
  return v === 0 ? "inline" : plain(v);
}

function outcomes(item) {
  return [
    ...[item.runs, item.completed, item.failed, item.retries].map((n) => el("td", {}, plain(n))),
    el("td", {}, Object.entries(item.failed_by_code).map(([c, n]) => `${c}: ${n}`).join(", ") || "–"),
    el("td", {}, item.p50_ms === null ? "–" : ms(item.p50_ms)),
    el("td", {}, item.p95_ms === null ? "–" : ms(item.p95_ms)),
    el("td", {}, plain(item.prompt_tokens + item.completion_tokens)),
    el("td", {}, item.cost === null ? "–" : plain(item.cost)),
  ];
}

function stepRow(step) {
  return el(
    "tr", { "data-flaky": step.flaky ? "true" : "false" },
    el("th", { scope: "row" }, step.text),
    el("td", {}, version(step.version)),
    el("td", {}, step.place),
    el("td", {}, step.flaky ? "Flaky" : "–"),
    ...outcomes(step),
  );
}

function versionRow(v) {
  return el("tr", {}, el("th", { scope: "row" }, version(v.version)), el("td", {}, plain(v.flaky_steps)), ...outcomes(v));
}

async function load() {
  const query = daysQuery(form);
  try {
    const answer = await api(`/v1/analytics/workflows/${encodeURIComponent(name)}?${query}`);
    document.querySelector("#versions tbody").replaceChildren(...answer.versions.map(versionRow));
    document.querySelector("#steps tbody").replaceChildren(...answer.steps.map(stepRow));
    document.getElementById("charts").replaceChildren(...analyticsCharts(answer));
    document.getElementById("found").hidden = false;
    showProblem(null);
  } catch (error) {
    if (error.status === 404) {
      document.getElementById("title").textContent = "Workflow not found";
      document.getElementById("found").hidden = true;
    }
    showProblem(error);
  }
}

document.getElementById("title").textContent = name;
filtersFromAddress(form);
form.addEventListener("submit", (event) => {
  event.preventDefault();
  addressFromFilters(form);
  load();
});
load();
