// A session's webhooks: each delivery, its state and every attempt with the receiver's answer.
// Webhooks are sent after the session ends, and retried for hours: this keeps looking.
import { api, badge, el, when } from "./common.js";

const STATES = { pending: "pending", delivered: "completed", failed: "failed" };

function attempt(a) {
  const answer = a.status_code ?? (a.duration_ms === null ? "no answer recorded" : "no answer");
  const took = a.duration_ms === null ? "" : ` in ${a.duration_ms} ms`;
  return el("li", {}, `Attempt ${a.attempt} at ${when(a.started_at)}: ${answer}${took}`,
    a.error ? el("p", { class: "why" }, a.error) : null);
}

function delivery(d) {
  const next = d.state === "pending" && d.next_attempt_at ? ` · next attempt ${when(d.next_attempt_at)}` : "";
  return el(
    "li", { "data-webhook-id": d.webhook_id },
    el("p", {}, el("span", { class: `badge ${STATES[d.state]}` }, d.state), ` ${d.event_type} to `,
      el("code", {}, d.url), next),
    el("p", { class: "quiet" }, "webhook-id ", el("code", {}, d.webhook_id)),
    el("ol", { "aria-label": `Attempts of ${d.event_type}` }, ...d.attempts.map(attempt)),
  );
}

export function watchWebhooks(sessionId, everyMs = 3000) {
  const list = document.getElementById("webhooks");
  const section = list.closest("section");
  async function show() {
    if (document.visibilityState !== "visible") return;
    const { items } = await api(`/v1/sessions/${sessionId}/webhooks`);
    section.hidden = items.length === 0;
    list.replaceChildren(...items.map(delivery));
  }
  show().catch(() => {});  // the page shows its own problems; this section retries
  return setInterval(() => show().catch(() => {}), everyMs);
}
