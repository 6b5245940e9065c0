// A line diff of two texts, and its unified form (as `diff -u` and Python's difflib write it):
// what the workflow page shows between two versions' documents. No library: the longest common
// subsequence of the lines, after the common head and tail are set aside.

// Past this many cells (lines of one side times lines of the other, once the common head and
// tail are set aside) the middle is shown as all removed then all added: still a true diff,
// only not the shortest, and no tab stalls on a table of hundreds of megabytes.
const MAX_CELLS = 4_000_000;

// The edits that turn `a` into `b` (arrays of lines): [{op: " " | "-" | "+", text}], in order,
// each run of changes its removals first; as few "-" and "+" as there can be.
export function lineDiff(a, b) {
  let head = 0;
  while (head < a.length && head < b.length && a[head] === b[head]) head += 1;
  let tail = 0;
  while (tail < a.length - head && tail < b.length - head
    && a[a.length - 1 - tail] === b[b.length - 1 - tail]) tail += 1;
  const same = (lines) => lines.map((text) => ({ op: " ", text }));
  const middle = changed(a.slice(head, a.length - tail), b.slice(head, b.length - tail));
  return [...same(a.slice(0, head)), ...removalsFirst(middle), ...same(a.slice(a.length - tail))];
}

function changed(a, b) {
  const removed = a.map((text) => ({ op: "-", text }));
  const added = b.map((text) => ({ op: "+", text }));
  if (!a.length || !b.length || a.length * b.length > MAX_CELLS) return [...removed, ...added];
  // lengths[i * width + j]: the longest common subsequence of a[i:] and b[j:].
  const width = b.length + 1;
  const lengths = new Uint32Array((a.length + 1) * width);
  for (let i = a.length - 1; i >= 0; i -= 1) {
    for (let j = b.length - 1; j >= 0; j -= 1) {
      lengths[i * width + j] = a[i] === b[j]
        ? lengths[(i + 1) * width + j + 1] + 1
        : Math.max(lengths[(i + 1) * width + j], lengths[i * width + j + 1]);
    }
  }
  const edits = [];
  let i = 0;
  let j = 0;
  while (i < a.length && j < b.length) {
    if (a[i] === b[j]) {
      edits.push({ op: " ", text: a[i] }); i += 1; j += 1;
    } else if (lengths[(i + 1) * width + j] >= lengths[i * width + j + 1]) {
      edits.push(removed[i]); i += 1;
    } else {
      edits.push(added[j]); j += 1;
    }
  }
  return [...edits, ...removed.slice(i), ...added.slice(j)];
}

// Each run of changes as its removals, then its additions, as a unified diff shows them.
function removalsFirst(edits) {
  const ordered = [];
  let run = [];
  const flush = () => { // a loop, not push(...run): a run may be longer than a call's arguments
    for (const op of ["-", "+"]) for (const edit of run) if (edit.op === op) ordered.push(edit);
    run = [];
  };
  for (const edit of edits) {
    if (edit.op === " ") { flush(); ordered.push(edit); } else run.push(edit);
  }
  flush();
  return ordered;
}

// The unified diff of `a` and `b` (arrays of lines) with `context` lines around each change:
// [{kind: "file" | "hunk" | "context" | "removed" | "added", text}], the text as `diff -u`
// prints the line; [] when the two are the same.
export function unifiedDiff(a, b, { from = "a", to = "b", context = 3 } = {}) {
  const edits = lineDiff(a, b);
  let aLine = 0;
  let bLine = 0;
  const numbered = edits.map((edit) => {
    const at = { ...edit, aLine, bLine };
    if (edit.op !== "+") aLine += 1;
    if (edit.op !== "-") bLine += 1;
    return at;
  });
  const hunks = grouped(numbered, context);
  if (!hunks.length) return [];
  const lines = [{ kind: "file", text: `--- ${from}` }, { kind: "file", text: `+++ ${to}` }];
  const KINDS = { " ": "context", "-": "removed", "+": "added" };
  for (const hunk of hunks) {
    lines.push({ kind: "hunk", text: hunkHeader(hunk) });
    for (const edit of hunk) lines.push({ kind: KINDS[edit.op], text: `${edit.op}${edit.text}` });
  }
  return lines;
}

// The changes with `context` unchanged lines around each; changes closer than twice that share
// a hunk.
function grouped(edits, context) {
  const changes = edits.flatMap((edit, index) => (edit.op === " " ? [] : [index]));
  const hunks = [];
  let start = null;
  let end = null;
  for (const index of changes) {
    if (start !== null && index - end - 1 <= 2 * context) {
      end = index;
      continue;
    }
    if (start !== null) hunks.push(edits.slice(Math.max(0, start - context), end + 1 + context));
    start = index;
    end = index;
  }
  if (start !== null) hunks.push(edits.slice(Math.max(0, start - context), end + 1 + context));
  return hunks;
}

function hunkHeader(hunk) {
  const first = hunk[0];
  const aCount = hunk.filter((edit) => edit.op !== "+").length;
  const bCount = hunk.filter((edit) => edit.op !== "-").length;
  return `@@ -${range(first.aLine, aCount)} +${range(first.bLine, bCount)} @@`;
}

// A hunk's range as difflib writes it: "3" for one line, "3,4" for more, "2,0" for none
// (the line before it).
function range(start, count) {
  if (count === 1) return String(start + 1);
  return `${count ? start + 1 : start},${count}`;
}

// `lines` (as unifiedDiff gives them) shown in `node`, a span of its kind's class each: one by
// one, not spread into one call, as a long diff has more lines than a call takes arguments.
export function showUnified(node, lines) {
  const spans = document.createDocumentFragment();
  for (const line of lines) {
    const span = document.createElement("span");
    span.className = line.kind;
    span.textContent = line.text;
    spans.append(span, "\n");
  }
  node.replaceChildren(spans);
}
