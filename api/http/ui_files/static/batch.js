// One batch: its sessions' statuses, refreshed every two seconds, and a cancel button.
import { api, badge, el, keepFresh, Problem, showProblem } from "./common.js";

const batchId = document.body.dataset.batchId;
const controls = document.getElementById("controls");
let timer = null;

function show(batch) {
  document.getElementById("title").textContent = `Batch ${batchId.slice(0, 8)}`;
  document.getElementById("progress").value = batch.percent;
  document.getElementById("progress-text").textContent = `${batch.finished}/${batch.total} ended`;
  document.getElementById("by-status").textContent =
    Object.entries(batch.by_status).map(([status, n]) => `${n} ${status}`).join(", ");
  document.getElementById("cancelled").textContent = batch.cancelled ? "yes" : "no";
  controls.querySelector("button").disabled = batch.cancelled || batch.finished === batch.total;
  document.querySelector("#members tbody").replaceChildren(...batch.sessions.map((s) => el(
    "tr", {},
    el("th", { scope: "row" }, el("a", { href: `/ui/sessions/${s.session_id}` }, s.session_id)),
    el("td", {}, badge(s.status)),
  )));
}

async function refresh() {
  try {
    show(await api(`/v1/batches/${batchId}`));
  } catch (error) {
    if (!(error instanceof Problem && error.status === 404)) throw error;
    clearInterval(timer);
    document.getElementById("title").textContent = "Batch not found";
    for (const id of ["controls", "members"]) document.getElementById(id).hidden = true;
    throw error;
  }
}

controls.addEventListener("click", async (event) => {
  if (event.target.dataset?.command !== "cancel") return;
  const reason = controls.elements.reason.value.trim();
  try {
    await api(`/v1/batches/${batchId}/cancel`, { method: "POST", body: { reason } });
    await refresh();
  } catch (error) {
    showProblem(error);
  }
});

timer = keepFresh(refresh);
