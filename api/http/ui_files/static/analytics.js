// The tenant's workflow versions with their runs, failures, durations and cost (those with
// flaky steps first), and every workflow's charts by day.
import { addressFromFilters, api, el, filtersFromAddress, pager, showProblem } from "./common.js";
import { analyticsCharts, daysQuery, ms, plain } from "./analytics_charts.js";

const form = document.getElementById("days");
const body = document.querySelector("#workflows tbody");
const charts = document.getElementById("charts");

function row(w) {
  const href = `/ui/analytics/${encodeURIComponent(w.workflow)}`;
  const cells = [w.runs, w.completed, w.failed, w.retries, w.flaky_steps].map((n) => el("td", {}, plain(n)));
  return el(
    "tr", {},
    el("th", { scope: "row" }, el("a", { href }, w.workflow)),
    el("td", {}, w.version === 0 ? "inline" : plain(w.version)),
    ...cells,
    el("td", {}, w.p50_ms === null ? "–" : ms(w.p50_ms)),
    el("td", {}, w.p95_ms === null ? "–" : ms(w.p95_ms)),
    el("td", {}, w.cost === null ? "–" : plain(w.cost)),
  );
}

async function load(cursor) {
  const query = daysQuery(form);
  query.set("limit", "25");
  if (cursor) query.set("cursor", cursor);
  const page = await api(`/v1/analytics/workflows?${query}`);
  body.replaceChildren(...page.items.map(row));
  document.getElementById("empty").hidden = page.items.length > 0;
  charts.replaceChildren(...analyticsCharts(page));
  return { next: page.next_cursor };
}

filtersFromAddress(form);
const pages = pager(load);
form.addEventListener("submit", (event) => {
  event.preventDefault();
  addressFromFilters(form);
  pages.reset().then(() => showProblem(null), showProblem);
});
pages.refresh().catch(showProblem);
