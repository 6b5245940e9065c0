"""What a page looks like, as text a small model can act on.

One walk of the visible DOM, in document order: headings as `#` lines, text as plain lines,
list items as `- ` lines, and every interactive element numbered — `[3] button "Add"`,
`[4] textbox "New todo" value="milk"` — so a model can name a target by its number. The numbers
are stamped on the elements (`data-stepline-ref`), so `click("3")` finds exactly the element
shown, until the next snapshot renumbers them. A password field never shows its value.
"""

from __future__ import annotations

import re

REF_ATTRIBUTE = "data-stepline-ref"
ELEMENT_LINE = re.compile(r"\[\d+\] ")

SNAPSHOT_JS = r"""
(limit) => {
  const ATTR = "data-stepline-ref";
  const INTERACTIVE = [
    "a[href]", "button", "input:not([type=hidden])", "select", "textarea", "summary",
    "[role=button]", "[role=link]", "[role=checkbox]", "[role=radio]", "[role=tab]",
    "[role=menuitem]", "[role=option]", "[role=switch]", "[role=combobox]", "[role=textbox]",
    "[contenteditable=''], [contenteditable=true]",
  ].join(",");
  const BLOCK = /^(block|flex|grid|list-item|table|table-row|table-cell|flow-root)$/;
  const INPUT_ROLES = {checkbox: "checkbox", radio: "radio", submit: "button", button: "button",
    reset: "button", search: "searchbox", range: "slider", number: "spinbutton"};
  const TAG_ROLES = {A: "link", BUTTON: "button", SELECT: "combobox", TEXTAREA: "textbox",
    SUMMARY: "button"};
  document.querySelectorAll("[" + ATTR + "]").forEach((e) => e.removeAttribute(ATTR));

  const clean = (text) => (text || "").replace(/\s+/g, " ").trim();
  const quote = (text) => JSON.stringify(clean(text).slice(0, 80));
  const roleOf = (el) => el.getAttribute("role") || TAG_ROLES[el.tagName] ||
    (el.tagName === "INPUT" ? INPUT_ROLES[el.type] || "textbox" : "generic");
  const nameOf = (el) => {
    const labelled = el.getAttribute("aria-labelledby");
    if (labelled) {
      const names = labelled.split(/\s+/).map((id) => document.getElementById(id))
        .filter(Boolean).map((e) => e.innerText);
      if (names.length) return clean(names.join(" "));
    }
    const candidates = [
      el.getAttribute("aria-label"),
      el.labels && el.labels.length ? el.labels[0].innerText : "",
      el.tagName === "INPUT" && /^(submit|button|reset)$/.test(el.type) ? el.value : "",
      el.tagName === "INPUT" || el.tagName === "TEXTAREA" ? "" : el.innerText,
      el.getAttribute("placeholder"), el.getAttribute("title"), el.getAttribute("alt"),
      el.getAttribute("name"),
    ];
    return clean(candidates.find((c) => clean(c)) || "");
  };
  const stateOf = (el) => {
    const parts = [];
    if (el.tagName === "INPUT" && el.type === "password") {
      if (el.value) parts.push("(filled)");
    } else if (el.tagName === "INPUT" && /^(checkbox|radio)$/.test(el.type)) {
      parts.push(el.checked ? "(checked)" : "(unchecked)");
    } else if (el.tagName === "SELECT") {
      const chosen = el.selectedOptions[0];
      parts.push("selected=" + quote(chosen ? chosen.text : ""));
      const options = [...el.options].slice(0, 20).map((o) => clean(o.text));
      parts.push("options=" + JSON.stringify(options));
    } else if (el.tagName === "INPUT" || el.tagName === "TEXTAREA") {
      parts.push("value=" + quote(el.value));
    }
    if (el.tagName === "A") parts.push("-> " + el.getAttribute("href"));
    if (el.disabled) parts.push("(disabled)");
    return parts.length ? " " + parts.join(" ") : "";
  };
  const visible = (el) => {
    const style = getComputedStyle(el);
    if (style.display === "none" || style.visibility === "hidden") return false;
    const box = el.getBoundingClientRect();
    return box.width > 0 || box.height > 0 || style.display === "contents";
  };

  const lines = [];
  let used = 0, numbered = 0, omitted = 0, pending = "";
  const emit = (line) => {
    if (used + line.length > limit) { omitted += 1; return; }
    lines.push(line); used += line.length + 1;
  };
  const flush = (prefix) => {
    const text = clean(pending); pending = "";
    if (text) emit((prefix || "") + text);
  };
  const walk = (node, prefix) => {
    for (const child of node.childNodes) {
      if (child.nodeType === Node.TEXT_NODE) { pending += " " + child.textContent; continue; }
      if (child.nodeType !== Node.ELEMENT_NODE) continue;
      if (/^(SCRIPT|STYLE|NOSCRIPT|TEMPLATE|HEAD)$/.test(child.tagName)) continue;
      if (!visible(child)) continue;
      if (child.matches(INTERACTIVE)) {
        flush(prefix);
        numbered += 1;
        child.setAttribute(ATTR, String(numbered));
        emit(`[${numbered}] ${roleOf(child)} ${quote(nameOf(child))}${stateOf(child)}`);
        continue;
      }
      const heading = /^H([1-6])$/.exec(child.tagName);
      if (heading) {
        flush(prefix);
        emit("#".repeat(+heading[1]) + " " + clean(child.innerText));
        continue;
      }
      const block = BLOCK.test(getComputedStyle(child).display);
      if (block) flush(prefix);
      walk(child, child.tagName === "LI" ? "- " : prefix);
      if (block) flush(child.tagName === "LI" ? "- " : prefix);
    }
  };
  if (document.body) walk(document.body, "");
  flush("");
  if (omitted) lines.push(`[${omitted} more lines not shown]`);
  return lines.join("\n");
}
"""


def interactive_elements(snapshot: str) -> list[str]:
    """The numbered lines of a snapshot: what a person or a model can name as a target."""
    return [line for line in snapshot.splitlines() if ELEMENT_LINE.match(line)]
