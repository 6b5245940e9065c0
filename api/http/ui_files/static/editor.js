// The workflow editor: a form and its YAML side by side, kept in sync both ways, checked as
// the person types by the API's own validation (POST /v1/workflows/check), saved as the
// registry's next version after its diff is shown, tried, and forked from a step.
//
// The document being written (`doc`) is the one truth: the form and the YAML pane are two
// views of it. Editing the form changes `doc` and writes the YAML again; editing the YAML
// parses it into `doc` and draws the form again (the pane itself is left as typed). Fields
// the form has no control for (labels, config, a loop's steps, a template's values) stay in
// `doc` untouched, so the form never drops what the YAML says.
import { api, el, showProblem } from "./common.js";
import { showUnified, unifiedDiff } from "./diff.js";
import { emit, parse, YamlError } from "./yaml.js";

const editing = document.body.dataset.workflowName; // "" on /ui/workflows/new
const form = document.getElementById("form");
const stepList = document.getElementById("steps");
const inputList = document.getElementById("inputs");
const yamlPane = document.getElementById("yaml");
const yamlStatus = document.getElementById("yaml-status");
const announce = document.getElementById("announce");
const actionProblem = document.getElementById("action-problem");
const saveDialog = document.getElementById("save-dialog");

let doc = { name: "", steps: [{ text: "" }] };
let current = null; // the registered current version: {version, document}, or null
let checks = 0; // the number of the latest check asked for: older answers are dropped

// ---- the document in the order the editor writes it ------------------------------------

const TOP = ["name", "executor", "base_url", "labels", "inputs", "steps", "config", "webhook"];
const STEP = ["text", "expect", "if", "retries", "retry_backoff_ms", "timeout_ms", "max_turns",
  "on_failure", "for_each", "max_iterations", "steps", "use", "with"];
const INPUT = ["type", "default", "description"];

// An object whose keys are set as data, so a key named "__proto__" is a key like any other.
function objectOf(entries) {
  const made = {};
  for (const [key, value] of entries) {
    Object.defineProperty(made, key, { value, enumerable: true, writable: true, configurable: true });
  }
  return made;
}

function ordered(object, first) {
  const known = first.filter((key) => Object.hasOwn(object, key));
  const rest = Object.keys(object).filter((key) => !first.includes(key));
  return objectOf([...known, ...rest].map((key) => [key, object[key]]));
}

// A step as the registry keeps it: its text alone when it has nothing else.
function canonicalStep(step) {
  if (typeof step !== "object" || step === null || Array.isArray(step)) return step;
  const keys = Object.keys(step);
  return keys.length === 1 && keys[0] === "text" ? step.text : ordered(step, STEP);
}

function canonical(document) {
  const out = ordered(document, TOP);
  if (Array.isArray(out.steps)) out.steps = out.steps.map(canonicalStep);
  if (isObject(out.inputs)) {
    out.inputs = objectOf(Object.entries(out.inputs).map(([n, spec]) => [n, isObject(spec) ? ordered(spec, INPUT) : spec]));
  }
  return out;
}

function isObject(value) {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

// A document read from the YAML pane or the registry, with each step as an object.
function editable(document) {
  if (!isObject(document)) throw new YamlError(1, "a workflow is a mapping with name and steps");
  if (document.steps !== undefined && !Array.isArray(document.steps)) {
    throw new YamlError(1, "steps is a list of steps");
  }
  const steps = (document.steps ?? []).map((step) => (typeof step === "string" ? { text: step } : step));
  return objectOf(Object.entries({ ...document, steps }));
}

function yamlOf(document) {
  return emit(canonical(document));
}

// ---- the YAML pane ----------------------------------------------------------------------

function writeYaml() {
  yamlPane.value = yamlOf(doc);
  yamlPane.removeAttribute("aria-invalid");
  yamlStatus.textContent = "";
}

function readYaml() {
  try {
    doc = editable(parse(yamlPane.value));
  } catch (error) {
    if (!(error instanceof YamlError)) throw error;
    yamlPane.setAttribute("aria-invalid", "true");
    yamlStatus.textContent = `Not read, the form is unchanged: ${error.message}. Edit this in a file, or write it as JSON.`;
    return;
  }
  yamlPane.removeAttribute("aria-invalid");
  yamlStatus.textContent = "Read into the form.";
  drawForm();
  checkSoon();
}

function debounced(action, ms) {
  let timer = null;
  return () => {
    clearTimeout(timer);
    timer = setTimeout(action, ms);
  };
}

yamlPane.addEventListener("input", debounced(readYaml, 300));

// ---- the form: name, executor, base URL ------------------------------------------------

function setOrDrop(object, key, value) {
  if (value === "" || value === undefined) delete object[key];
  else object[key] = value;
}

function drawHead() {
  document.getElementById("name").value = doc.name ?? "";
  document.getElementById("executor").value = doc.executor ?? "http";
  document.getElementById("base-url").value = doc.base_url ?? "";
}

function headChanged(target) {
  if (target.id === "name") doc.name = target.value;
  if (target.id === "executor") setOrDrop(doc, "executor", target.value === "http" ? "" : target.value);
  if (target.id === "base-url") setOrDrop(doc, "base_url", target.value);
}

// ---- the form: inputs -------------------------------------------------------------------

const TYPES = ["string", "integer", "number", "boolean", "object", "array"];

function inputRow([name, spec], index) {
  const n = index + 1;
  const shown = spec.default === undefined ? "" : spec.type === "string" ? String(spec.default) : JSON.stringify(spec.default);
  const at = { "data-input": String(index) };
  return el("div", { role: "group", "aria-label": `Input ${n}`, class: "row input-row" },
    el("label", {}, "Name", el("input", { ...at, "data-field": "name", type: "text", size: "14", value: name })),
    el("label", {}, "Type", el("select", { ...at, "data-field": "type" },
      ...TYPES.map((type) => el("option", { value: type, selected: spec.type === type ? "" : null }, type)))),
    el("label", {}, "Default", el("input", { ...at, "data-field": "default", type: "text", size: "14", value: shown })),
    el("label", {}, "Description", el("input", { ...at, "data-field": "description", type: "text", size: "24", value: spec.description ?? "" })),
    el("button", { type: "button", "data-remove-input": String(index) }, `Remove input ${n}`));
}

function inputEntries() {
  return isObject(doc.inputs) ? Object.entries(doc.inputs) : [];
}

function drawInputs() {
  inputList.replaceChildren(...inputEntries().map(inputRow));
}

// A default as its type makes it: a string as typed, anything else as JSON (left as typed
// when it is not JSON, for the API to refuse in its own words).
function defaultOf(text, type) {
  if (text === "") return undefined;
  if (type === "string") return text;
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

function inputChanged(target) {
  const entries = inputEntries().map(([name, spec]) => [name, { ...spec }]);
  const row = entries[Number(target.dataset.input)];
  const field = target.dataset.field;
  if (field === "name") row[0] = target.value;
  else if (field === "type") row[1].type = target.value;
  else if (field === "description") setOrDrop(row[1], "description", target.value);
  const defaultBox = inputList.querySelector(`[data-input="${target.dataset.input}"][data-field="default"]`);
  setOrDrop(row[1], "default", defaultOf(defaultBox.value, row[1].type));
  setInputs(entries);
}

function setInputs(entries) {
  if (entries.length) doc.inputs = objectOf(entries);
  else delete doc.inputs;
}

// ---- the form: steps --------------------------------------------------------------------

const FIELDS = [
  { key: "text", label: "Text", size: "40" },
  { key: "expect", label: "Expect", size: "24" },
  { key: "if", label: "If", size: "24" },
  { key: "retries", label: "Retries", size: "4", numeric: true },
  { key: "timeout_ms", label: "Timeout (ms)", size: "8", numeric: true },
];

function stepControl(step, index, field) {
  const value = step[field.key] === undefined ? "" : String(step[field.key]);
  return el("label", { class: field.key === "text" ? "wide" : null }, field.label, el("input", {
    type: "text", size: field.size, value, "data-step": String(index), "data-field": field.key,
    inputmode: field.numeric ? "numeric" : null, "aria-describedby": `step-${index}-runs step-${index}-problem`,
  }));
}

function onFailureControl(step, index) {
  const choices = [["", "(the workflow's)"], ["fail", "fail"], ["continue", "continue"]];
  return el("label", {}, "On failure", el("select", { "data-step": String(index), "data-field": "on_failure" },
    ...choices.map(([value, said]) => el("option", { value, selected: (step.on_failure ?? "") === value ? "" : null }, said))));
}

// A loop or a template has no text to edit here: it is said, and edited in the YAML.
function stepBody(step, index) {
  if (isObject(step) && (step.for_each !== undefined || step.use !== undefined)) {
    const said = step.use !== undefined ? `Template: use ${step.use}` : `Loop: for each ${step.for_each}`;
    return [el("p", {}, `${said} (edit it in the YAML)`)];
  }
  return [...FIELDS.map((field) => stepControl(step, index, field)), onFailureControl(step, index)];
}

function stepRow(step, index) {
  const n = index + 1;
  const count = doc.steps.length;
  const handle = el("span", { class: "handle", draggable: "true", title: "Drag to reorder", "aria-hidden": "true", "data-drag": String(index) }, "⠿");
  return el("li", { "data-index": String(index) },
    el("fieldset", {},
      el("legend", {}, handle, ` Step ${n}`),
      el("div", { class: "row" }, ...stepBody(step, index)),
      el("p", { class: "runs-as quiet", id: `step-${index}-runs` }),
      el("p", { class: "why", id: `step-${index}-problem` }),
      el("div", { class: "row" },
        el("button", { type: "button", "data-move": "-1", disabled: index === 0 ? "" : null }, `Move step ${n} up`),
        el("button", { type: "button", "data-move": "1", disabled: index === count - 1 ? "" : null }, `Move step ${n} down`),
        el("button", { type: "button", "data-remove-step": String(index) }, `Remove step ${n}`))));
}

function drawSteps() {
  stepList.replaceChildren(...doc.steps.map(stepRow));
}

function drawForm() {
  drawHead();
  drawInputs();
  drawSteps();
}

function numberOr(text) {
  return /^\d+$/.test(text) ? Number(text) : text; // not a number: the API says why
}

function stepChanged(target) {
  const step = doc.steps[Number(target.dataset.step)];
  const field = FIELDS.find((f) => f.key === target.dataset.field);
  if (target.dataset.field === "text") step.text = target.value;
  else setOrDrop(step, target.dataset.field, field?.numeric ? numberOr(target.value.trim()) : target.value);
}

// Move step `from` to position `to`, say so, and keep the focus on the control it was on.
function moveStep(from, to, focusField) {
  if (to < 0 || to >= doc.steps.length || from === to) return;
  const [moved] = doc.steps.splice(from, 1);
  doc.steps.splice(to, 0, moved);
  changed(true);
  announce.textContent = `Step ${from + 1} moved to position ${to + 1} of ${doc.steps.length}.`;
  const row = stepList.querySelector(`li[data-index="${to}"]`);
  const again = focusField && row.querySelector(focusField);
  (again || row.querySelector("input, select, button:not([disabled])"))?.focus();
}

function focusSelector(target) {
  if (target.dataset.field) return `[data-field="${target.dataset.field}"]`;
  if (target.dataset.move) return `[data-move="${target.dataset.move}"]`;
  return null;
}

stepList.addEventListener("keydown", (event) => {
  if (!event.altKey || !["ArrowUp", "ArrowDown"].includes(event.key)) return;
  const row = event.target.closest("li[data-index]");
  if (!row) return;
  event.preventDefault();
  const from = Number(row.dataset.index);
  moveStep(from, from + (event.key === "ArrowUp" ? -1 : 1), focusSelector(event.target));
});

stepList.addEventListener("dragstart", (event) => {
  const index = event.target.dataset?.drag;
  if (index === undefined) return;
  event.dataTransfer.setData("text/plain", index);
  event.dataTransfer.effectAllowed = "move";
});
stepList.addEventListener("dragover", (event) => {
  if (event.target.closest("li[data-index]")) event.preventDefault();
});
stepList.addEventListener("drop", (event) => {
  const row = event.target.closest("li[data-index]");
  const from = event.dataTransfer.getData("text/plain");
  if (!row || !/^\d+$/.test(from)) return;
  event.preventDefault();
  moveStep(Number(from), Number(row.dataset.index), null);
});

// ---- the form's events ------------------------------------------------------------------

// Something changed in `doc`: the YAML written again (the form drawn again when its rows
// changed), and a check asked for.
function changed(redraw) {
  if (redraw) drawForm();
  writeYaml();
  checkSoon();
}

function onEdit(event) {
  const target = event.target;
  if (target.dataset.step !== undefined) stepChanged(target);
  else if (target.dataset.input !== undefined) inputChanged(target);
  else if (["name", "executor", "base-url"].includes(target.id)) headChanged(target);
  else return;
  changed(false);
}

form.addEventListener("input", onEdit);
form.addEventListener("change", (event) => {
  if (event.target.tagName === "SELECT") onEdit(event);
});

form.addEventListener("click", (event) => {
  const button = event.target.closest("button");
  if (!button) return;
  const row = button.closest("li[data-index]");
  if (button.dataset.move) {
    const from = Number(row.dataset.index);
    moveStep(from, from + Number(button.dataset.move), `[data-move="${button.dataset.move}"]`);
  } else if (button.dataset.removeStep !== undefined) {
    removeStep(Number(button.dataset.removeStep));
  } else if (button.dataset.removeInput !== undefined) {
    setInputs(inputEntries().filter((_, index) => index !== Number(button.dataset.removeInput)));
    changed(true);
    document.getElementById("add-input").focus();
  }
});

function removeStep(index) {
  doc.steps.splice(index, 1);
  changed(true);
  announce.textContent = `Step ${index + 1} removed; ${doc.steps.length} left.`;
  const next = stepList.querySelector(`li[data-index="${Math.min(index, doc.steps.length - 1)}"] input`);
  (next || document.getElementById("add-step")).focus();
}

document.getElementById("add-step").addEventListener("click", () => {
  doc.steps.push({ text: "" });
  changed(true);
  stepList.querySelector(`li[data-index="${doc.steps.length - 1}"] [data-field="text"]`).focus();
});

document.getElementById("add-input").addEventListener("click", () => {
  const entries = inputEntries();
  let name = `input${entries.length + 1}`;
  while (entries.some(([taken]) => taken === name)) name += "_";
  setInputs([...entries, [name, { type: "string" }]]);
  changed(true);
  inputList.lastElementChild.querySelector('[data-field="name"]').focus();
});

// ---- checked as it is typed -------------------------------------------------------------

const KIND_SAID = { definition: "Definition", ai: "AI", unusable: "Unusable definition", loop: "Loop", template: "Template" };

// The step a problem's field names: "steps[2].if" (a domain error), "body.steps.2.text" (a
// field of the request), or null for the workflow as a whole.
function stepOf(field) {
  const found = /(?:^|\.)steps(?:\[(\d+)\]|\.(\d+))/.exec(field ?? "");
  return found ? Number(found[1] ?? found[2]) : null;
}

function problemsOf(error) {
  const details = error.body?.details ?? {};
  if (Array.isArray(details.errors)) {
    return details.errors.map((e) => ({ step: stepOf(e.field), said: `${e.field.replace(/^body\./, "")}: ${e.message}` }));
  }
  return [{ step: stepOf(details.field), said: `${error.body?.code ?? "ERROR"}: ${error.message}` }];
}

function clearChecks() {
  for (const box of stepList.querySelectorAll(".runs-as, .why")) box.textContent = "";
  for (const box of stepList.querySelectorAll("[aria-invalid]")) box.removeAttribute("aria-invalid");
  document.getElementById("workflow-problem").textContent = "";
}

function showLabels(steps) {
  for (const step of steps) {
    const box = document.getElementById(`step-${step.index}-runs`);
    if (box) box.textContent = `Runs as: ${KIND_SAID[step.kind] ?? step.kind}: ${step.runs_as}`;
  }
}

function showProblems(error) {
  const problems = problemsOf(error);
  for (const { step, said } of problems) {
    const box = step === null ? null : document.getElementById(`step-${step}-problem`);
    if (box) {
      box.textContent = box.textContent ? `${box.textContent}; ${said}` : said;
      stepList.querySelector(`li[data-index="${step}"] [data-field="text"]`)?.setAttribute("aria-invalid", "true");
    } else {
      const whole = document.getElementById("workflow-problem");
      whole.textContent = whole.textContent ? `${whole.textContent}; ${said}` : said;
    }
  }
  return problems.length;
}

async function check() {
  const asked = ++checks;
  let answer = null;
  let refused = null;
  try {
    answer = await api("/v1/workflows/check", { method: "POST", body: canonical(doc) });
  } catch (error) {
    if (error.status !== 422) throw error;
    refused = error;
  }
  if (asked !== checks) return; // the document changed since: a newer answer is coming
  clearChecks();
  const said = document.getElementById("check");
  if (answer) {
    showLabels(answer.steps);
    said.textContent = "Checked: the registry would take it.";
  } else {
    const count = showProblems(refused);
    said.textContent = `Checked: ${count} problem${count === 1 ? "" : "s"}.`;
  }
}

const checkSoon = debounced(() => check().catch((error) => showProblem(error)), 300);

// ---- save, try, run from a step ---------------------------------------------------------

function showDiff(before, after) {
  const lines = unifiedDiff(before.split("\n"), after.split("\n"), {
    from: current ? `${current.document.name}@${current.version}` : "(nothing)", to: "this form",
  });
  const shown = document.getElementById("save-diff");
  showUnified(shown, lines);
  shown.hidden = lines.length === 0;
  return lines.length;
}

function askToSave() {
  const same = current && current.document.name === doc.name;
  const before = same ? yamlOf(editable(current.document)) : "";
  const changes = showDiff(before, yamlOf(doc));
  document.getElementById("save-what").textContent = !same
    ? `${doc.name || "This workflow"}: its first version, or a new version of another workflow.`
    : changes ? `Changes from version ${current.version}:` : `No changes from version ${current.version}.`;
  saveDialog.returnValue = "";
  saveDialog.showModal();
  document.getElementById("confirm-save").focus();
}

async function loadCurrent(name) {
  const path = `/v1/workflows/${encodeURIComponent(name)}`;
  const workflow = await api(path);
  const version = await api(`${path}/versions/${workflow.current_version}`);
  current = { version: version.version, document: version.document };
}

async function save() {
  const before = current && current.document.name === doc.name ? current.version : null;
  const version = await api("/v1/workflows", { method: "POST", body: canonical(doc) });
  current = { version: version.version, document: version.document };
  document.getElementById("saved").textContent = version.version === before
    ? `Unchanged: version ${version.version} is the current one.`
    : `Version ${version.version} saved.`;
  const here = `/ui/workflows/${encodeURIComponent(version.name)}/edit`;
  if (location.pathname !== here) history.replaceState(null, "", here);
  document.getElementById("title").textContent = `Edit ${version.name}`;
  document.title = `Edit ${version.name} · Stepline`;
}

saveDialog.addEventListener("close", () => {
  if (saveDialog.returnValue !== "save") return;
  save().then(() => showProblem(null, actionProblem), (error) => showProblem(error, actionProblem));
});

document.getElementById("save").addEventListener("click", async () => {
  try {
    if (doc.name && (!current || current.document.name !== doc.name)) {
      await loadCurrent(doc.name).catch((error) => {
        if (error.status !== 404) throw error;
        current = null;
      });
    }
    askToSave();
  } catch (error) {
    showProblem(error, actionProblem);
  }
});

const LAST_TRY = "stepline.lastTry.";

document.getElementById("try").addEventListener("click", async () => {
  if (!current) {
    showProblem({ message: "save it first: Try runs the saved version", body: { code: "NOT_SAVED" } }, actionProblem);
    return;
  }
  try {
    const name = current.document.name;
    const created = await api("/v1/sessions", { method: "POST", body: { workflow: `${name}@${current.version}` } });
    sessionStorage.setItem(LAST_TRY + name, created.session_id);
    location.assign(`/ui/sessions/${created.session_id}`);
  } catch (error) {
    showProblem(error, actionProblem);
  }
});

document.getElementById("fork").addEventListener("click", async () => {
  const last = sessionStorage.getItem(LAST_TRY + doc.name);
  if (!last) {
    showProblem({ message: "no try of this workflow in this tab yet: use Try first", body: { code: "NO_TRY" } }, actionProblem);
    return;
  }
  try {
    const from = Number(document.getElementById("from-step").value) - 1;
    const forked = await api(`/v1/sessions/${last}/fork`, { method: "POST", body: { from_step: from } });
    location.assign(`/ui/sessions/${forked.session_id}`);
  } catch (error) {
    showProblem(error, actionProblem);
  }
});

// ---- start ------------------------------------------------------------------------------

async function start() {
  if (editing) {
    document.getElementById("title").textContent = `Edit ${editing}`;
    document.title = `Edit ${editing} · Stepline`;
    try {
      await loadCurrent(editing);
      doc = editable(current.document);
      document.getElementById("loaded").textContent = `Loaded version ${current.version}.`;
    } catch (error) {
      showProblem(error);
    }
  } else {
    // What was typed into the head before this module ran (a slow page, a fast typist) is
    // the document's, not overwritten by the empty one.
    for (const id of ["name", "executor", "base-url"]) headChanged(document.getElementById(id));
  }
  drawForm();
  writeYaml();
  checkSoon();
}

start();
