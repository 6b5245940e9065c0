// The batches list: newest first, keyset paging, refreshed every two seconds.
import { api, el, keepFresh, pager, progressBar, when } from "./common.js";

const body = document.querySelector("#batches tbody");

function row(batch) {
  const name = `Batch ${batch.batch_id.slice(0, 8)}`;
  return el(
    "tr", { "data-batch-id": batch.batch_id },
    el("th", { scope: "row" }, el("a", { href: `/ui/batches/${batch.batch_id}` }, name)),
    el("td", {}, when(batch.created_at)),
    el("td", {}, batch.created_by),
    el("td", {}, String(batch.total)),
    el("td", {}, progressBar(batch.percent, `Progress of ${name}`), ` ${batch.finished}/${batch.total} ended`),
    el("td", {}, batch.cancelled ? "yes" : "no"),
  );
}

async function load(cursor) {
  const query = new URLSearchParams({ limit: "25" });
  if (cursor) query.set("cursor", cursor);
  const page = await api(`/v1/batches?${query}`);
  body.replaceChildren(...page.items.map(row));
  document.getElementById("empty").hidden = page.items.length > 0;
  document.getElementById("refreshed").textContent = `Updated ${new Date().toLocaleTimeString()}`;
  return { next: page.next_cursor };
}

keepFresh(pager(load).refresh);
