// The four charts of the analytics pages, from an analytics answer's `days` and
// `failed_by_code`: success rate and p95 duration over days (lines), failures by error code
// and cost by day (bars), each with its numbers in a table.
import { barChart, lineChart } from "./charts.js";

export const percent = (value) => `${value}%`;
export const ms = (value) => `${value} ms`;
export const plain = (value) => String(value);

export function analyticsCharts(answer) {
  const days = answer.days;
  return [
    lineChart({
      title: "Success rate by day",
      headings: ["Day (UTC)", "Runs ended that completed"],
      points: days.map((d) => ({ label: d.day, value: d.success_rate })),
      format: percent,
    }),
    lineChart({
      title: "p95 step duration by day",
      headings: ["Day (UTC)", "95th percentile attempt duration"],
      points: days.map((d) => ({ label: d.day, value: d.p95_ms })),
      format: ms,
    }),
    barChart({
      title: "Failures by error code",
      headings: ["Error code", "Runs failed"],
      bars: Object.entries(answer.failed_by_code).map(([code, count]) => ({ label: code, value: count })),
      format: plain,
    }),
    barChart({
      title: "Cost by day",
      headings: ["Day (UTC)", "Cost (null: a model without a price)"],
      bars: days.map((d) => ({ label: d.day, value: d.cost })),
      format: plain,
    }),
  ];
}

// ?since=&until= from the filter form, kept in the address bar.
export function daysQuery(form) {
  const query = new URLSearchParams();
  for (const name of ["since", "until"]) {
    const value = form.elements[name].value;
    if (value) query.set(name, value);
  }
  return query;
}
