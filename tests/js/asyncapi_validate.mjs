// Validates a served AsyncAPI document with the official AsyncAPI parser.
// Usage: node asyncapi_validate.mjs URL
// Prints {errors, warnings, channels, operations} as JSON; exits 1 when the
// document has errors (the parser's severity 0).
import { Parser } from "@asyncapi/parser";

const [url] = process.argv.slice(2);
const response = await fetch(url);
if (!response.ok) throw new Error(`GET ${url}: ${response.status}`);
const text = await response.text();
const parser = new Parser();
const { document, diagnostics } = await parser.parse(text);
const pick = (d) => ({ code: d.code, message: d.message, path: d.path.join("/") });
const errors = diagnostics.filter((d) => d.severity === 0).map(pick);
const warnings = diagnostics.filter((d) => d.severity === 1).map(pick);
const out = {
  errors,
  warnings,
  channels: document ? document.channels().all().map((c) => c.address()) : [],
  operations: document ? document.operations().all().map((o) => o.id()) : [],
};
console.log(JSON.stringify(out));
process.exit(errors.length || !document ? 1 : 0);
