// The tenant's registered workflows: newest first, each linked to its page; keyset paging.
import { api, el, keepFresh, pager, when } from "./common.js";

const body = document.querySelector("#workflows tbody");

function workflowHref(name) {
  return `/ui/workflows/${encodeURIComponent(name)}`;
}

function row(workflow) {
  return el(
    "tr", {},
    el("th", { scope: "row" }, el("a", { href: workflowHref(workflow.name) }, workflow.name)),
    el("td", {}, String(workflow.current_version)),
    el("td", {}, String(workflow.version_count)),
    el("td", {}, when(workflow.updated_at)),
    el("td", {}, when(workflow.created_at)),
  );
}

async function load(cursor) {
  const query = new URLSearchParams({ limit: "25" });
  if (cursor) query.set("cursor", cursor);
  const page = await api(`/v1/workflows?${query}`);
  body.replaceChildren(...page.items.map(row));
  document.getElementById("empty").hidden = page.items.length > 0;
  document.getElementById("refreshed").textContent = `Updated ${new Date().toLocaleTimeString()}`;
  return { next: page.next_cursor };
}

keepFresh(pager(load).refresh);
