#!/usr/bin/env node
// Run an actions/github-script `script:` body against an in-memory fake of the
// GitHub REST API, the way actions/github-script@v7 runs it (an async function of
// require, github, context, core, ...). Usage:
//
//   node tests/tools/github-script.mjs SCRIPT_FILE SCENARIO_JSON_FILE
//
// The scenario gives the fake repository state and the environment:
//   { "env": {...}, "issueNumber": 7, "payload": {...},
//     "comments": [{id, body, user: {login, type}}], "issues": [{number, body, labels}],
//     "labels": ["name"], "fail": ["createComment", ...] }
// Prints one JSON object: { calls: [{method, params}], log: [{level, message}],
// error: string|null, comments, issues } and exits 0 (the caller asserts).
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";

const [scriptFile, scenarioFile] = process.argv.slice(2);
if (!scriptFile || !scenarioFile) {
  console.error("usage: github-script.mjs SCRIPT_FILE SCENARIO_JSON_FILE");
  process.exit(2);
}
const script = readFileSync(scriptFile, "utf8");
const scenario = JSON.parse(readFileSync(scenarioFile, "utf8"));
Object.assign(process.env, scenario.env ?? {});

const state = {
  comments: structuredClone(scenario.comments ?? []),
  issues: structuredClone(scenario.issues ?? []),
  labels: new Set(scenario.labels ?? []),
  nextId: 1000,
};
const calls = [];
const log = [];
const fail = new Set(scenario.fail ?? []);

function httpError(status, message) {
  const err = new Error(message);
  err.status = status;
  return err;
}

function api(name, impl) {
  const fn = async (params = {}) => {
    calls.push({ method: name, params });
    if (fail.has(name)) throw httpError(500, `${name} failed (simulated)`);
    return { status: 200, data: await impl(params) };
  };
  fn.endpointName = name;
  return fn;
}

const bot = { login: "github-actions[bot]", type: "Bot" };
const issuesApi = {
  listComments: api("listComments", () => state.comments),
  createComment: api("createComment", ({ issue_number, body }) => {
    const c = { id: state.nextId++, issue_number, body, user: bot };
    state.comments.push(c);
    return c;
  }),
  updateComment: api("updateComment", ({ comment_id, body }) => {
    const c = state.comments.find((x) => x.id === comment_id);
    if (!c) throw httpError(404, "comment not found");
    if (c.user?.login !== bot.login) throw httpError(403, "not your comment");
    c.body = body;
    return c;
  }),
  listForRepo: api("listForRepo", ({ state: st = "open", labels }) =>
    state.issues.filter(
      (i) =>
        (i.state ?? "open") === st &&
        (!labels || labels.split(",").every((l) => (i.labels ?? []).includes(l))),
    ),
  ),
  create: api("create", ({ title, body, labels = [] }) => {
    const i = {
      number: state.nextId++,
      title,
      body,
      state: "open",
      labels: labels.filter((l) => state.labels.has(l)),
    };
    state.issues.push(i);
    return i;
  }),
  update: api("update", ({ issue_number, ...fields }) => {
    const i = state.issues.find((x) => x.number === issue_number);
    if (!i) throw httpError(404, "issue not found");
    Object.assign(i, fields);
    return i;
  }),
  getLabel: api("getLabel", ({ name }) => {
    if (!state.labels.has(name)) throw httpError(404, "label not found");
    return { name };
  }),
  createLabel: api("createLabel", ({ name }) => {
    state.labels.add(name);
    return { name };
  }),
};

const github = {
  rest: { issues: issuesApi },
  paginate: async (fn, params) => (await fn(params)).data,
};

const issueNumber = scenario.issueNumber ?? 7;
const context = {
  repo: { owner: "acme", repo: "infra" },
  issue: { owner: "acme", repo: "infra", number: issueNumber },
  payload: scenario.payload ?? {},
  runId: 4242,
  serverUrl: "https://github.com",
  sha: "0123456789abcdef0123456789abcdef01234567",
  eventName: scenario.eventName ?? "pull_request",
};

const core = {
  info: (m) => log.push({ level: "info", message: String(m) }),
  warning: (m) => log.push({ level: "warning", message: String(m) }),
  error: (m) => log.push({ level: "error", message: String(m) }),
  setFailed: (m) => log.push({ level: "failed", message: String(m) }),
  debug: () => {},
};

const AsyncFunction = Object.getPrototypeOf(async () => {}).constructor;
const fn = new AsyncFunction("require", "github", "context", "core", "process", script);
let error = null;
try {
  await fn(createRequire(import.meta.url), github, context, core, process);
} catch (err) {
  error = `${err.name}: ${err.message}`;
}
process.stdout.write(
  JSON.stringify({ calls, log, error, comments: state.comments, issues: state.issues }),
);
