// The workflow editor's YAML: a small emitter and a parser of what it emits, plus JSON.
//
// No library: the dashboard loads nothing from elsewhere and has no build step. So the editor
// writes YAML in one plain, stable style it controls (block mappings and sequences, two
// spaces a level; a string left plain only where every YAML reader, PyYAML's 1.1 included,
// reads it back as the same string, else written as a JSON string, which YAML reads as the
// same), and reads back that style and JSON (YAML is a superset of JSON: `{...}` and `[...]`
// on one line, or the whole document). Anything else (anchors, block scalars, tags, flow
// styles that are not JSON, a plain string YAML might read as something else) is refused
// with its line rather than read wrongly: the server reads the YAML it is sent with a full
// YAML parser, and the editor must not show a different workflow than the one it would push.

// Words YAML 1.1 reads as booleans or null when they are left plain.
const SPECIAL = /^(y|n|yes|no|true|false|on|off|null|~)$/i;
const CONTROL = /[\x00-\x1f\x7f-\x9f\u2028\u2029\ufeff]/;
const KEY = /^[A-Za-z_][A-Za-z0-9_-]*$/;
const NUMBER = /^-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?$/;

export class YamlError extends Error {
  constructor(line, message) {
    super(`line ${line}: ${message}`);
    this.line = line;
  }
}

// Whether `text` may be written plain: it starts with a letter (so it is no number, date,
// indicator or quote), holds no ": " or " #" (a mapping or a comment), does not end in ":" or
// a space, is not a word YAML reads as a boolean or null, and has no control character.
export function plainOk(text) {
  return /^[A-Za-z]/.test(text) && !SPECIAL.test(text) && !CONTROL.test(text)
    && !text.includes(": ") && !text.includes(" #") && !/[:\s]$/.test(text);
}

// A JSON string, with the characters YAML will not take raw escaped too.
function quoted(text) {
  return JSON.stringify(text).replace(/[\x7f-\x9f\u2028\u2029\ufeff]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
}

function scalar(value) {
  if (typeof value === "string") return plainOk(value) ? value : quoted(value);
  if (typeof value === "number" && !Number.isFinite(value)) throw new Error("not a JSON number");
  return JSON.stringify(value); // numbers, true, false, null
}

function key(name) {
  return KEY.test(name) && !SPECIAL.test(name) ? name : quoted(name);
}

function isBlock(value) {
  if (Array.isArray(value)) return value.length > 0;
  return value !== null && typeof value === "object" && Object.keys(value).length > 0;
}

function inline(value) {
  if (Array.isArray(value)) return "[]";
  if (value !== null && typeof value === "object") return "{}";
  return scalar(value);
}

// `value` (JSON data) as YAML lines at `indent` spaces.
function lines(value, indent) {
  const pad = " ".repeat(indent);
  if (Array.isArray(value)) {
    return value.flatMap((item) => {
      if (!isBlock(item)) return [`${pad}- ${inline(item)}`];
      const [first, ...rest] = lines(item, indent + 2);
      return Array.isArray(item)
        ? [`${pad}-`, first, ...rest]
        : [`${pad}- ${first.slice(indent + 2)}`, ...rest];
    });
  }
  return Object.entries(value).flatMap(([name, item]) => (isBlock(item)
    ? [`${pad}${key(name)}:`, ...lines(item, indent + 2)]
    : [`${pad}${key(name)}: ${inline(item)}`]));
}

// The YAML of a JSON object, ending with a newline.
export function emit(document) {
  return `${lines(document, 0).join("\n")}\n`;
}

// ---- the parser -------------------------------------------------------------------------

const OUTSIDE = "the editor reads only the YAML it writes, and JSON";

// One meaningful line: its number (from 1), indent and text without the indent.
function meaningful(text) {
  return text.split("\n").flatMap((raw, index) => {
    const line = raw.replace(/\r$/, "");
    const body = line.trimStart();
    if (body === "" || body.startsWith("#") || (index === 0 && body === "---")) return [];
    if (/^ *\t/.test(line)) throw new YamlError(index + 1, "a tab in the indent");
    return [{ no: index + 1, indent: line.length - body.length, text: body.trimEnd() }];
  });
}

// A value written after "key: " or "- " on one line.
function value(text, no) {
  if (text.startsWith('"') || text.startsWith("[") || text.startsWith("{")) {
    try {
      return JSON.parse(text);
    } catch (error) {
      throw new YamlError(no, `not JSON: ${text} (${OUTSIDE})`);
    }
  }
  if (NUMBER.test(text)) return Number(text);
  if (text === "true" || text === "false" || text === "null") return JSON.parse(text);
  if (plainOk(text)) return text;
  throw new YamlError(no, `${JSON.stringify(text)} may not be read as written: write it as a JSON string ("...") (${OUTSIDE})`);
}

// `name: rest` at the start of `text`, or null when it is not a mapping's entry.
function entry(text, no) {
  if (text.startsWith('"')) {
    const end = /^"(?:[^"\\]|\\.)*"/.exec(text);
    if (!end || !/^:( |$)/.test(text.slice(end[0].length))) return null;
    return { name: value(end[0], no), rest: text.slice(end[0].length + 1).trim() };
  }
  const found = /^([^\s:"'[\]{}#][^:]*?):( |$)/.exec(text);
  if (!found) return null;
  if (!KEY.test(found[1]) || SPECIAL.test(found[1])) {
    throw new YamlError(no, `the key ${JSON.stringify(found[1])} must be written as a JSON string (${OUTSIDE})`);
  }
  return { name: found[1], rest: text.slice(found[0].length).trim() };
}

class Reader {
  constructor(all) {
    this.all = all;
    this.at = 0;
  }

  get line() {
    return this.all[this.at];
  }

  // The block starting at the current line, whose lines have its indent.
  block() {
    const first = this.line;
    if (first.text === "-" || first.text.startsWith("- ")) return this.sequence(first.indent);
    if (entry(first.text, first.no)) return this.mapping(first.indent);
    this.at += 1;
    return value(first.text, first.no);
  }

  // What follows "key:" or "-" with nothing after it: a deeper block (or, after a key, a
  // sequence at the key's own indent, as YAML allows); else null.
  nested(indent, afterKey) {
    const next = this.line;
    if (next && next.indent > indent) return this.block();
    if (next && afterKey && next.indent === indent && /^-( |$)/.test(next.text)) {
      return this.sequence(indent);
    }
    return null;
  }

  mapping(indent) {
    const mapped = {};
    while (this.line && this.line.indent === indent) {
      const { no, text } = this.line;
      const found = entry(text, no);
      if (!found) throw new YamlError(no, `expected "key: value" (${OUTSIDE})`);
      if (Object.hasOwn(mapped, found.name)) throw new YamlError(no, `${found.name} is given twice`);
      this.at += 1;
      const item = found.rest === "" ? this.nested(indent, true) : value(found.rest, no);
      Object.defineProperty(mapped, found.name, { value: item, enumerable: true, writable: true, configurable: true });
    }
    return mapped;
  }

  sequence(indent) {
    const items = [];
    while (this.line && this.line.indent === indent && /^-( |$)/.test(this.line.text)) {
      const { no, text } = this.line;
      if (text === "-") {
        this.at += 1;
        items.push(this.nested(indent, false));
        continue;
      }
      const body = text.slice(2).trimStart();
      // "- key: value" opens a mapping whose lines are indented to where its first key is.
      this.all[this.at] = { no, indent: indent + text.length - body.length, text: body };
      items.push(this.block());
    }
    return items;
  }
}

// The JSON object a YAML (or JSON) text holds; a YamlError saying where it is not one the
// editor can read.
export function parse(text) {
  if (text.trimStart().startsWith("{")) {
    try {
      return JSON.parse(text);
    } catch (error) {
      throw new YamlError(1, `not JSON: ${error.message}`);
    }
  }
  const all = meaningful(text);
  if (!all.length) throw new YamlError(1, "it is empty: a workflow is a mapping with name and steps");
  const reader = new Reader(all);
  const document = reader.block();
  if (reader.line) {
    throw new YamlError(reader.line.no, `unexpected indent or text (${OUTSIDE})`);
  }
  if (!isBlock(document) || Array.isArray(document)) {
    throw new YamlError(all[0].no, "a workflow is a mapping with name and steps");
  }
  return document;
}
