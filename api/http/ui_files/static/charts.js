// Small charts drawn as inline SVG: a line (a value per day) and bars (a value per label).
// Readable without colour: a line's points are marked with a shape and a bar is hatched, every
// point and bar is labelled with its number, the SVG has a <title> and an aria-label; and the
// same numbers are in a <table> right after it (in a <details> that starts open). No library.
import { el } from "./common.js";

const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 560;
const HEIGHT = 200;
const PAD = { top: 24, right: 16, bottom: 40, left: 48 };

function svg(tag, attributes = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
  node.append(...children);
  return node;
}

function text(x, y, content, attributes = {}) {
  const node = svg("text", { x, y, "font-size": 11, ...attributes });
  node.textContent = content;
  return node;
}

let drawn = 0;

// The frame every chart shares: the <svg> with its title, the axes, and a hatch pattern.
function frame(title, maximum, format) {
  drawn += 1;
  const titleId = `chart-title-${drawn}`;
  const titleNode = svg("title", { id: titleId });
  titleNode.textContent = title;
  const hatch = `hatch-${drawn}`;
  const root = svg(
    "svg",
    { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: "img", "aria-label": title,
      "aria-labelledby": titleId, class: "chart" },
    titleNode,
    svg("defs", {}, svg("pattern", { id: hatch, width: 6, height: 6,
      patternUnits: "userSpaceOnUse", patternTransform: "rotate(45)" },
      svg("rect", { width: 6, height: 6, class: "chart-bar-fill" }),
      svg("line", { x1: 0, y1: 0, x2: 0, y2: 6, class: "chart-hatch" }))),
  );
  const bottom = HEIGHT - PAD.bottom;
  root.append(
    svg("line", { x1: PAD.left, y1: PAD.top, x2: PAD.left, y2: bottom, class: "chart-axis" }),
    svg("line", { x1: PAD.left, y1: bottom, x2: WIDTH - PAD.right, y2: bottom, class: "chart-axis" }),
    text(PAD.left - 6, PAD.top + 4, format(maximum), { "text-anchor": "end" }),
    text(PAD.left - 6, bottom, format(0), { "text-anchor": "end" }),
  );
  return { root, hatch, bottom };
}

function y(value, maximum, bottom) {
  return bottom - (maximum ? (value / maximum) * (bottom - PAD.top) : 0);
}

function slotX(index, count) {
  const span = WIDTH - PAD.left - PAD.right;
  return PAD.left + (span * (index + 0.5)) / Math.max(count, 1);
}

// The numbers behind the chart, as a table captioned with the chart's title.
function table(title, headings, rows) {
  return el(
    "details", { open: "" },
    el("summary", {}, `${title}: the numbers`),
    el(
      "table", { class: "chart-table" },
      el("caption", {}, title),
      el("thead", {}, el("tr", {}, ...headings.map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, ...rows.map(([label, value]) =>
        el("tr", {}, el("th", { scope: "row" }, label), el("td", {}, value)))),
    ),
  );
}

function figure(title, drawing, numbers, empty) {
  if (empty) return el("figure", { class: "chart-figure" }, el("figcaption", {}, title), el("p", { class: "quiet" }, "Nothing in these days."));
  return el("figure", { class: "chart-figure" }, el("figcaption", {}, title), drawing, numbers);
}

// A line over `points` ([{label, value}], value null: no point); `format` writes a value.
export function lineChart({ title, headings, points, format }) {
  const known = points.filter((p) => p.value !== null && p.value !== undefined);
  const maximum = Math.max(0, ...known.map((p) => p.value)) || 1;
  const { root, bottom } = frame(title, maximum, format);
  const at = points.map((p, i) => ({ ...p, x: slotX(i, points.length) }))
    .filter((p) => p.value !== null && p.value !== undefined);
  if (at.length > 1) {
    const path = at.map((p) => `${p.x},${y(p.value, maximum, bottom)}`).join(" ");
    root.append(svg("polyline", { points: path, class: "chart-line", fill: "none" }));
  }
  points.forEach((p, i) => {
    root.append(text(slotX(i, points.length), bottom + 16, p.label, { "text-anchor": "middle" }));
  });
  for (const p of at) {
    const py = y(p.value, maximum, bottom);
    // A square marker with a dot in it: a shape, not a colour, marks each day's value.
    root.append(
      svg("rect", { x: p.x - 4, y: py - 4, width: 8, height: 8, class: "chart-marker" }),
      svg("circle", { cx: p.x, cy: py, r: 1.5, class: "chart-marker-dot" }),
      text(p.x, py - 8, format(p.value), { "text-anchor": "middle" }),
    );
  }
  const rows = points.map((p) => [p.label, p.value === null || p.value === undefined ? "–" : format(p.value)]);
  return figure(title, root, table(title, headings, rows), points.length === 0);
}

// Bars for `bars` ([{label, value}]), hatched; `format` writes a value.
export function barChart({ title, headings, bars, format }) {
  const maximum = Math.max(0, ...bars.map((b) => b.value ?? 0)) || 1;
  const { root, hatch, bottom } = frame(title, maximum, format);
  const span = (WIDTH - PAD.left - PAD.right) / Math.max(bars.length, 1);
  bars.forEach((b, i) => {
    const x = slotX(i, bars.length);
    const top = y(b.value ?? 0, maximum, bottom);
    const width = Math.min(48, span * 0.6);
    root.append(
      svg("rect", { x: x - width / 2, y: top, width, height: bottom - top,
        fill: `url(#${hatch})`, class: "chart-bar" }),
      text(x, top - 6, b.value === null ? "–" : format(b.value), { "text-anchor": "middle" }),
      text(x, bottom + 16, b.label, { "text-anchor": "middle" }),
    );
  });
  const rows = bars.map((b) => [b.label, b.value === null ? "–" : format(b.value)]);
  return figure(title, root, table(title, headings, rows), bars.length === 0);
}
