// One session: its state, why it failed, its steps and what each did, its controls, and a live
// timeline of its events, grouped by step, with each command's screenshots beside it.
import {
  api, artifactUrl, badge, duration, el, failure, followEvents, milliseconds, Problem,
  sessionDuration, showProblem, waitingFor, when,
} from "./common.js";
import { watchWebhooks } from "./session_webhooks.js";
import { ENDED, SessionStatus, StepStatus } from "./statuses.js";

const sessionId = document.body.dataset.sessionId;
const timeline = document.getElementById("timeline");
const streamState = document.getElementById("stream-state");
const controls = document.getElementById("controls");
let stopFollowing = () => {};
let ticking = null;

// ---- state and steps ----------------------------------------------------------------------

function showSession(session) {
  document.getElementById("title").textContent = session.name;
  document.title = `${session.name} · Stepline`;
  document.getElementById("status").replaceWith(
    Object.assign(badge(session.status), { id: "status" }),
  );
  document.getElementById("progress").value = session.percent;
  const continued = session.continued_steps ? `, ${session.continued_steps} failed and went on past` : "";
  const skipped = session.skipped_steps ? `, ${session.skipped_steps} skipped` : "";
  // A loop not yet come up adds its iterations' steps: the total so far is a floor.
  const total = session.steps_may_grow ? `${session.total_steps}+` : String(session.total_steps);
  document.getElementById("progress-text").textContent =
    `${session.completed_steps}/${total} steps (${Math.round(session.percent)}%)${continued}${skipped}`;
  document.getElementById("current").textContent = session.current_step_text ?? "–";
  document.getElementById("started").textContent = when(session.started_at);
  document.getElementById("duration").textContent = sessionDuration(session);
  showFailure(session);
  showWaiting(session);
  showTrace(session);
  const allowed = {
    pause: session.status === SessionStatus.PENDING || session.status === SessionStatus.RUNNING,
    resume: session.status === SessionStatus.PAUSED,
    cancel: !ENDED.includes(session.status),
  };
  for (const button of controls.querySelectorAll("button")) {
    button.disabled = !allowed[button.dataset.command];
  }
}

// The session's trace id when sessions are traced; a link to it where the operator views traces.
function showTrace(session) {
  if (!session.trace_id) return;
  const id = el("code", {}, session.trace_id);
  const shown = session.trace_url ? el("a", { href: session.trace_url, rel: "noopener" }, id) : id;
  document.getElementById("trace").replaceChildren(shown);
  document.getElementById("trace-fact").hidden = false;
}

// What a waiting session waits for; Approve and Reject when it waits for an approval.
function showWaiting(session) {
  const waiting = session.status === SessionStatus.WAITING && session.waiting_for;
  document.getElementById("waiting").hidden = !waiting;
  document.getElementById("decision").hidden = !(waiting && session.waiting_for.startsWith("approval"));
  if (waiting) document.getElementById("waiting-for").textContent = waitingFor(session);
}

function showFailure(session) {
  const box = document.getElementById("failure");
  const why = failure(session);
  box.hidden = !why;
  if (why) {
    const verb = session.status.charAt(0).toUpperCase() + session.status.slice(1);
    box.replaceChildren(el("strong", {}, `${verb} because`), ` ${why}`);
  }
}

// Each command and check of the step's last attempt; the model's summary of a step it drove
// (or of one carried over from a fork's source); why it failed.
function whatItDid(step) {
  const lines = step.did.map((line) => el("li", {}, line));
  if (step.summary && (step.turns || !step.did.length)) lines.push(el("li", {}, step.summary));
  const why = failure(step);
  if (why) lines.push(el("li", { class: "why" }, why));
  return lines.length ? el("ul", { class: "did" }, ...lines) : null;
}

// A running step's clock counts; a paused one's stopped at the pause.
function stepDuration(step) {
  const counting = step.status === StepStatus.RUNNING || step.status === StepStatus.WAITING;
  return counting ? duration(step.started_at, null) : milliseconds(step.duration_ms);
}

// The step's own policy, as its workflow wrote it: `retries 3, on_failure continue`.
function stepPolicy(step) {
  const set = Object.entries(step.policy ?? {});
  if (!set.length) return null;
  return el("small", { class: "policy" }, set.map(([name, value]) => `${name} ${value}`).join(", "));
}

// Where the step came from and when it runs: `if vars.n > 0`, `for each name in …: 2 of 3`,
// `from template login@2`.
function stepFlow(step) {
  const said = [];
  if (step.condition) said.push(`if ${step.condition}`);
  const origin = step.origin ?? {};
  if (origin.template) said.push(`from template ${origin.template}`);
  if (origin.loop) said.push(`${origin.loop}: ${origin.iteration + 1} of ${origin.of}`);
  if (!said.length) return null;
  return el("small", { class: "flow" }, said.join("; "));
}

function stepRow(step) {
  return el(
    "tr", { "data-step-index": String(step.step_index) },
    el("td", {}, String(step.step_index)),
    el("th", { scope: "row" }, step.text, stepFlow(step), stepPolicy(step)),
    el("td", {}, badge(step.status), step.continued ? " continued" : ""),
    el("td", {}, String(step.attempts)),
    el("td", {}, stepDuration(step)),
    el("td", {}, whatItDid(step)),
  );
}

let refreshes = 0; // refreshes asked for, numbered
let shown = 0; // the number of the latest one shown

async function refresh() {
  const asked = ++refreshes;
  const [session, steps] = await Promise.all([
    api(`/v1/sessions/${sessionId}`),
    api(`/v1/sessions/${sessionId}/steps`),
  ]);
  // A newer refresh (the timer, an event, a button) has shown a state at least as new: this
  // answer, come late, would show an ended session running again.
  if (asked < shown) return;
  shown = asked;
  showSession(session);
  document.querySelector("#steps tbody").replaceChildren(...steps.map(stepRow));
  if (ENDED.includes(session.status)) clearInterval(ticking);  // nothing changes any more
}

let pending = null;
function refreshSoon() {  // many events arrive together: one refresh for them
  if (pending) return;
  pending = setTimeout(() => {
    pending = null;
    refresh().catch(showProblem);
  }, 150);
}

// ---- the timeline -------------------------------------------------------------------------

function json(value) {
  return el("pre", {}, JSON.stringify(value, null, 2));
}

function origin(d) {
  const source = d.replay_of ?? d.forked_from;
  if (!source) return [];
  const link = el("a", { href: `/ui/sessions/${source.session_id}` }, source.session_id);
  return d.replay_of
    ? [", a replay of ", link, d.replay_of.strict ? " (strict)" : ""]
    : [", a fork of ", link, ` from step ${d.forked_from.step}`];
}

function details(event) {
  const d = event.data;
  switch (event.type) {
    case "Created":
      return el("p", {}, `${d.steps.length} steps`, ...origin(d));
    case "StepsCarriedOver":
      return el("p", {}, `steps 0 to ${d.steps.length - 1} carried over, completed in the source`);
    case "StepReplayed":
      return el("p", {}, `step ${d.step_index}: ${d.actions} commands and checks done again ` +
        `without the model (${d.turns_saved} turns, ${d.tokens_saved} tokens saved)`);
    case "ReplayDiverged":
      return el("div", {},
        el("p", {}, `step ${d.step_index}: ${d.executor}.${d.name} returned ` +
          `${JSON.stringify(d.got)}, recorded ${JSON.stringify(d.expected)}` +
          (d.strict ? " (strict: the step fails)" : " (the step goes on live)")),
        el("details", {}, el("summary", {}, "arguments"), json(d.args)));
    case "LearnedActionUsed":
      return d.hit
        ? el("p", {}, `step ${d.step_index}: ${d.commands} learned commands done again without ` +
          `the model (${d.tokens_saved} tokens, ${d.seconds_saved} s saved)`)
        : el("p", {}, `step ${d.step_index}: the learned action missed at ` +
          `${d.miss?.executor}.${d.miss?.name}: got ${JSON.stringify(d.miss?.got)}, learned ` +
          `${JSON.stringify(d.miss?.expected)} (the model takes over)`);
    case "StepStarted":
      return el("p", {}, `step ${d.step_index}, attempt ${d.attempt}`);
    case "TurnRecorded":
      return el("div", {},
        el("p", {}, `step ${d.step_index}, turn ${d.turn}, ${d.model}: ` +
          `${d.prompt_tokens} prompt + ${d.completion_tokens} completion tokens, ${d.latency_ms} ms`),
        d.reasoning ? el("blockquote", {}, d.reasoning) : null);
    case "CommandIssued":
      return el("div", {},
        el("p", {}, `step ${d.step_index}: ${d.executor}.${d.name} (${d.command_id})`),
        el("details", {}, el("summary", {}, "arguments"), json(d.args)));
    case "CommandFinished":
      return el("div", {},
        el("p", {}, `${d.command_id} ${d.ok ? "ok" : "failed"} in ${d.duration_ms} ms` +
          (d.error ? ` — ${d.error.code}: ${d.error.message}` : "")),
        d.output ? el("details", {}, el("summary", {}, "result"), el("pre", {}, d.output)) : null);
    case "Checked":
      return el("div", {},
        el("p", {}, `step ${d.step_index}: ${d.executor}.${d.name} ${d.ok ? "passed" : "failed"}` +
          ` in ${d.duration_ms} ms` + (d.error ? ` — ${d.error.code}: ${d.error.message}` : "")),
        el("details", {}, el("summary", {}, "arguments"), json(d.args)),
        d.output ? el("details", {}, el("summary", {}, "result"), el("pre", {}, d.output)) : null);
    case "StepCompleted":
      return el("p", {}, `step ${d.step_index}: ${d.summary}`);
    case "StepFailed":
      return el("p", {}, `step ${d.step_index}: ${d.error.code}: ${d.error.message}` +
        (d.retryable ? " (will retry)" : ""));
    case "ContinuedAfterFailure":
      return el("p", {}, `step ${d.step_index} failed; the session went on (on_failure: continue)`);
    case "WaitStarted":
      return el("p", {}, `step ${d.step_index} waits for ${d.kind}` +
        (d.question ? `: ${d.question}` : "") + (d.signal ? ` ${d.signal}` : "") +
        (d.due_at ? ` until ${when(d.due_at)}` : ""));
    case "WaitEnded":
      return el("div", {},
        el("p", {}, `step ${d.step_index}: ${d.kind} ${d.outcome.replace("_", " ")}` +
          (d.comment ? ` — ${d.comment}` : "")),
        d.data !== null ? el("details", {}, el("summary", {}, "signal body"), json(d.data)) : null);
    case "SignalReceived":
      return el("div", {}, el("p", {}, `signal ${d.name}`),
        el("details", {}, el("summary", {}, "body"), json(d.body)));
    case "Paused": case "Resumed": case "Cancelled":
      return d.reason ? el("p", {}, `reason: ${d.reason}`) : null;
    case "Completed":
      return el("p", {}, d.outcome);
    case "Failed": case "Expired":
      return el("p", {}, `${d.outcome} ${d.error ? `(${d.error.code})` : ""}`);
    case "WebhookDeliveryFailed":
      return el("p", {}, `the ${d.event_type} webhook to ${d.url} was given up on after ` +
        `${d.attempts} attempts: ${d.error.message}`);
    default:
      return json(d);
  }
}

// ---- screenshots ----------------------------------------------------------------------------

const shot = document.getElementById("shot");

function openShot(src, label) {
  document.getElementById("shot-title").textContent = label;
  Object.assign(document.getElementById("shot-image"), { src, alt: `${label}, full size` });
  shot.showModal();
}

// A screenshot as a thumbnail in its command's entry; a click opens it full size.
function thumbnail(artifact, stepIndex) {
  const label = `Screenshot of step ${stepIndex} (${artifact.kind || "screenshot"})`;
  const figure = el("figure", { class: "artifact", "data-hash": artifact.hash });
  artifactUrl(`/v1/sessions/${sessionId}/artifacts/${artifact.hash}`).then((src) => {
    const link = el("a", { href: src, title: "Open full size" }, el("img", { src, alt: label }));
    link.addEventListener("click", (event) => { event.preventDefault(); openShot(src, label); });
    figure.prepend(link);
  }).catch((error) => {
    figure.append(el("p", {}, `could not be loaded (${error.message})`));
  });
  figure.append(el("figcaption", {}, label));
  return figure;
}

// ---- events, grouped by step --------------------------------------------------------------

const stepTexts = [];
let group = null;  // the step whose events are being added: { stepIndex, list }

function eventItem(event) {
  const time = new Date(event.timestamp).toLocaleTimeString();
  const shots = (event.data.artifacts ?? []).map((a) => thumbnail(a, event.data.step_index));
  return el(
    "li", { "data-version": String(event.version), class: `event ${event.type}` },
    el("p", { class: "event-head" },
      el("span", { class: "version" }, `v${event.version}`), " ",
      el("strong", {}, event.type), " ",
      el("time", { datetime: event.timestamp }, time),
      event.actor ? ` by ${event.actor}` : ""),
    details(event),
    ...shots,
  );
}

// A run of events of one step goes in one group; a session's own events (created, paused,
// ended) stand between the groups, so the timeline keeps the order things happened in.
function groupFor(stepIndex) {
  if (group?.stepIndex === stepIndex) return group.list;
  const list = el("ol", { class: "step-events", "aria-label": `Events of step ${stepIndex}` });
  timeline.append(el(
    "li", { class: "step-group", "data-step-index": String(stepIndex) },
    el("p", { class: "step-head" }, el("strong", {}, `Step ${stepIndex}`), " ", stepTexts[stepIndex] ?? ""),
    list,
  ));
  group = { stepIndex, list };
  return list;
}

function addEvent(event) {
  if (event.type === "Created") stepTexts.push(...event.data.steps.map((step) => step.text));
  const stepIndex = event.data.step_index;
  if (stepIndex === undefined || stepIndex === null) {
    group = null;
    timeline.append(eventItem(event));
  } else {
    groupFor(stepIndex).append(eventItem(event));
  }
  refreshSoon();
}

const STATES = {
  connecting: "Connecting to the live stream…",
  live: "Live",
  reconnecting: "Connection lost; reconnecting…",
  ended: "The session has ended; every event is shown.",
};

function showStreamState(state, attempt, error) {
  streamState.dataset.state = state;
  streamState.dataset.reconnects = String(attempt);
  streamState.textContent = error ? `The stream failed: ${error.message}` : STATES[state];
}

// ---- controls -----------------------------------------------------------------------------

controls.addEventListener("click", async (event) => {
  const command = event.target.dataset?.command;
  if (!command) return;
  const reason = controls.elements.reason.value.trim();
  try {
    await api(`/v1/sessions/${sessionId}/${command}`, { method: "POST", body: { reason } });
    controls.elements.reason.value = "";
    showProblem(null);
    await refresh();
  } catch (error) {
    showProblem(error);
  }
});

const decision = document.getElementById("decision");
decision.addEventListener("click", async (event) => {
  const verb = event.target.dataset?.decision;
  if (!verb) return;
  const comment = decision.elements.comment.value.trim();
  try {
    await api(`/v1/sessions/${sessionId}/${verb}`, { method: "POST", body: { comment } });
    decision.elements.comment.value = "";
    showProblem(null);
    await refresh();
  } catch (error) {
    showProblem(error);
  }
});

// ---- replays and forks ----------------------------------------------------------------------

const ORIGINS = { new: "", replay: "replay", fork: "fork" };

function lineageItem(node) {
  const current = node.session_id === sessionId;
  const link = el("a", {
    href: `/ui/sessions/${node.session_id}`, "aria-current": current ? "page" : null,
  }, node.name);
  const origin = ORIGINS[node.origin] ? ` ${ORIGINS[node.origin]}` : "";
  const item = el("li", { "data-session-id": node.session_id },
    link, origin, " ", badge(node.status), ` ${when(node.created_at)}`);
  if (node.children.length) item.append(el("ul", {}, ...node.children.map(lineageItem)));
  return item;
}

async function showLineage() {
  const { root } = await api(`/v1/sessions/${sessionId}/lineage`);
  const list = document.getElementById("lineage");
  list.replaceChildren(lineageItem(root));
  list.closest("section").hidden = root.children.length === 0;
}

const again = document.getElementById("again");
again.addEventListener("click", async (event) => {
  const kind = event.target.dataset?.again;
  if (!kind) return;
  const body = kind === "replay"
    ? { strict: again.elements.strict.checked }
    : { from_step: Number(again.elements.from_step.value) };
  try {
    const created = await api(`/v1/sessions/${sessionId}/${kind}`, { method: "POST", body });
    location.assign(`/ui/sessions/${created.session_id}`);
  } catch (error) {
    showProblem(error);
  }
});

// ---- start --------------------------------------------------------------------------------

function notFound(error) {
  document.getElementById("title").textContent = "Session not found";
  document.title = "Session not found · Stepline";
  for (const id of ["overview", "steps-title", "timeline-title", "lineage-title"]) {
    document.getElementById(id).closest("section").hidden = true;
  }
  showProblem(error);
}

async function start() {
  try {
    await refresh();
    await showLineage();
  } catch (error) {
    if (error instanceof Problem && error.status === 404) return notFound(error);
    showProblem(error);
  }
  stopFollowing = followEvents(sessionId, { onEvent: addEvent, onState: showStreamState });
  watchWebhooks(sessionId);
  // Durations keep counting while nothing happens.
  ticking = setInterval(() => refresh().catch(showProblem), 5000);
}

addEventListener("pagehide", () => stopFollowing());
start();
