// One registered workflow: its versions, the chosen version's document, a diff between any two
// versions, rollback, and a form made from the version's declared inputs that runs it.
import { api, el, Problem, showProblem, when } from "./common.js";
import { showUnified, unifiedDiff } from "./diff.js";

const name = document.body.dataset.workflowName;
const path = `/v1/workflows/${encodeURIComponent(name)}`;
const address = new URLSearchParams(location.search);
const runForm = document.getElementById("run");
const runProblem = document.getElementById("run-problem");
const rollbackButton = document.getElementById("rollback");
const diffForm = document.getElementById("diff-form");
let chosen = null; // the version shown: {version, document, current, …}
let fields = []; // the run form's inputs: [{name, spec, control}]

// ---- the workflow and its versions --------------------------------------------------------

const versions = new Map();

async function version(number) {
  if (!versions.has(number)) versions.set(number, await api(`${path}/versions/${number}`));
  return versions.get(number);
}

function documentText(document) {
  return JSON.stringify(document, null, 2);
}

function versionRow(summary) {
  const shown = summary.version === chosen?.version;
  const link = el("a", { href: `?version=${summary.version}`, "aria-current": shown ? "page" : null },
    `Version ${summary.version}`);
  return el(
    "tr", { "data-version": String(summary.version) },
    el("th", { scope: "row" }, link),
    el("td", {}, el("code", { title: summary.sha256 }, summary.sha256.slice(0, 12))),
    el("td", {}, when(summary.pushed_at)),
    el("td", {}, summary.actor),
    el("td", {}, summary.current ? el("span", { class: "badge current" }, "current") : null),
  );
}

function showWorkflow(workflow) {
  document.getElementById("title").textContent = workflow.name;
  document.title = `${workflow.name} · Stepline`;
  document.getElementById("current").textContent = `Version ${workflow.current_version}`;
  document.getElementById("count").textContent = String(workflow.versions.length);
  document.getElementById("created").textContent = `${when(workflow.created_at)} by ${workflow.created_by}`;
  document.getElementById("updated").textContent = when(workflow.updated_at);
  document.querySelector("#versions tbody").replaceChildren(...workflow.versions.map(versionRow));
  document.getElementById("compare").hidden = workflow.versions.length < 2;
}

// ---- the chosen version: its document, rollback, run ---------------------------------------

function showVersion(shown, current) {
  const isCurrent = shown.version === current;
  document.getElementById("document-title").textContent =
    `Version ${shown.version}${isCurrent ? " (current)" : ""}`;
  document.getElementById("document").textContent = documentText(shown.document);
  rollbackButton.disabled = isCurrent;
  rollbackButton.title = isCurrent ? "This version is the current one" : "";
  document.getElementById("run-title").textContent = `Run version ${shown.version}`;
  const declared = Object.entries(shown.document.inputs ?? {});
  fields = declared.map(([input, spec]) => ({ name: input, spec, control: control(input, spec) }));
  document.getElementById("inputs").replaceChildren(...fields.map(field));
  document.getElementById("no-inputs").hidden = declared.length > 0;
  showProblem(null, runProblem);
  document.getElementById("chosen").hidden = false;
}

// What the declaration says of an input: "integer, default 1: how many copies".
function hint(spec) {
  const required = spec.default === undefined ? "required" : `default ${JSON.stringify(spec.default)}`;
  const choices = Array.isArray(spec.enum) ? `, one of ${spec.enum.map((v) => JSON.stringify(v)).join(", ")}` : "";
  return `${spec.type}, ${required}${choices}${spec.description ? `: ${spec.description}` : ""}`;
}

function field({ name: input, spec, control: box }) {
  return el("div", { class: `field ${spec.type}` },
    el("label", { for: box.id }, input),
    box,
    el("small", { id: `${box.id}-hint`, class: "quiet" }, hint(spec)));
}

// The control for one input, holding its default: the API judges the value, the form only
// makes it the JSON type the declaration names.
function control(input, spec) {
  const attributes = { id: `input-${input}`, name: input, "aria-describedby": `input-${input}-hint` };
  const preset = spec.default;
  if (Array.isArray(spec.enum)) {
    const options = spec.enum.map((choice, index) => el("option", {
      value: String(index), selected: choice === preset ? "" : null,
    }, typeof choice === "string" ? choice : JSON.stringify(choice)));
    return el("select", attributes, el("option", { value: "" }, "(not given)"), ...options);
  }
  if (spec.type === "boolean") {
    return el("input", { ...attributes, type: "checkbox", checked: preset === true ? "" : null });
  }
  if (spec.type === "object" || spec.type === "array") {
    const text = el("textarea", { ...attributes, rows: "4", cols: "50", spellcheck: "false" });
    text.value = preset === undefined ? "" : JSON.stringify(preset, null, 2);
    return text;
  }
  const numeric = spec.type === "integer" || spec.type === "number";
  const box = el("input", {
    ...attributes, type: "text", size: "30", inputmode: numeric ? "decimal" : null,
  });
  box.value = preset === undefined || preset === null ? "" : String(preset);
  return box;
}

class NotSent extends Error {
  constructor(control, message) {
    super(message);
    this.control = control;
  }
}

const NUMBER = /^-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?$/;

// One input's value as JSON, or undefined when left empty (the API fills in its default, or
// says that it is required).
function valueOf({ name: input, spec, control: box }) {
  if (box.type === "checkbox") return box.checked;
  if (box.tagName === "SELECT") return box.value === "" ? undefined : spec.enum[Number(box.value)];
  if (spec.type === "string") return box.value === "" ? undefined : box.value;
  const text = box.value.trim();
  if (text === "") return undefined;
  if (spec.type === "integer" || spec.type === "number") {
    if (!NUMBER.test(text)) throw new NotSent(box, `input ${input}: ${JSON.stringify(text)} is not a number`);
    return JSON.parse(text);
  }
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new NotSent(box, `input ${input} is not JSON: ${error.message}`);
  }
}

function givenValues() {
  const given = fields.map((f) => [f.name, valueOf(f)]).filter(([, value]) => value !== undefined);
  return Object.fromEntries(given); // "__proto__" too is an input's name here, not a prototype
}

function markInvalid(name) {
  for (const f of fields) {
    const invalid = f.name === name;
    f.control.setAttribute("aria-invalid", String(invalid));
    if (invalid) f.control.focus();
  }
}

runForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  let given;
  try {
    given = givenValues();
  } catch (error) {
    if (!(error instanceof NotSent)) throw error;
    runProblem.replaceChildren(el("p", {}, `Not sent: ${error.message}`));
    markInvalid(fields.find((f) => f.control === error.control)?.name);
    return;
  }
  const button = runForm.querySelector("button[type=submit]");
  button.disabled = true;
  try {
    const body = { workflow: `${name}@${chosen.version}`, with: given };
    const created = await api("/v1/sessions", { method: "POST", body });
    const href = `/ui/sessions/${created.session_id}`;
    runProblem.replaceChildren();
    runForm.append(el("p", {}, "Started ", el("a", { href }, `session ${created.session_id.slice(0, 8)}`)));
    location.assign(href);
  } catch (error) {
    showProblem(error, runProblem);
    markInvalid(error.body?.details?.input);
    button.disabled = false;
  }
});

rollbackButton.addEventListener("click", async () => {
  const question = `Make version ${chosen.version} of ${name} current again? `
    + "Sessions started from now on by its name run it.";
  if (!confirm(question)) return;
  try {
    const workflow = await api(`${path}/rollback`, { method: "POST", body: { to_version: chosen.version } });
    showWorkflow(workflow);
    showVersion(chosen, workflow.current_version);
    showProblem(null);
  } catch (error) {
    showProblem(error);
  }
});

// ---- the diff between two versions --------------------------------------------------------

async function showDiff(from, to) {
  const [a, b] = await Promise.all([version(from), version(to)]);
  const lines = unifiedDiff(documentText(a.document).split("\n"), documentText(b.document).split("\n"), {
    from: `${name}@${from}`, to: `${name}@${to}`,
  });
  const shown = document.getElementById("diff");
  shown.setAttribute("aria-label", `Diff from version ${from} to version ${to}`);
  showUnified(shown, lines);
  shown.hidden = lines.length === 0;
  document.getElementById("diff-same").hidden = lines.length > 0;
}

function offerVersions(workflow, from, to) {
  for (const [select, preset] of [[diffForm.elements.from, from], [diffForm.elements.to, to]]) {
    select.replaceChildren(...workflow.versions.map((v) => el("option", {
      value: String(v.version), selected: v.version === preset ? "" : null,
    }, `Version ${v.version}`)));
  }
}

diffForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  const from = Number(diffForm.elements.from.value);
  const to = Number(diffForm.elements.to.value);
  address.set("from", String(from));
  address.set("to", String(to));
  history.replaceState(null, "", `?${address}`);
  try {
    await showDiff(from, to);
    showProblem(null);
  } catch (error) {
    showProblem(error);
  }
});

// ---- start --------------------------------------------------------------------------------

function notFound(error) {
  document.getElementById("title").textContent = "Workflow not found";
  document.title = "Workflow not found · Stepline";
  for (const id of ["overview", "versions-title"]) document.getElementById(id).closest("section").hidden = true;
  showProblem(error);
}

// The versions to compare: those in the address, else the chosen one and the one before it.
function diffPair(workflow) {
  const count = workflow.versions.length;
  const known = (n) => Number.isInteger(n) && n >= 1 && n <= count;
  const from = Number(address.get("from"));
  const to = Number(address.get("to"));
  if (known(from) && known(to)) return [from, to];
  return chosen.version > 1 ? [chosen.version - 1, chosen.version] : [1, 2];
}

async function start() {
  let workflow;
  try {
    workflow = await api(path);
  } catch (error) {
    if (error instanceof Problem && error.status === 404) return notFound(error);
    return showProblem(error);
  }
  showWorkflow(workflow);
  try {
    chosen = await version(Number(address.get("version")) || workflow.current_version);
    showWorkflow(workflow); // marks the chosen version's row
    showVersion(chosen, workflow.current_version);
    if (workflow.versions.length > 1) {
      const [from, to] = diffPair(workflow);
      offerVersions(workflow, from, to);
      await showDiff(from, to);
    }
  } catch (error) {
    showProblem(error);
  }
}

start();
