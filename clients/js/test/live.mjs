// Helpers for the tests against live `pully serve` processes, which tests/test_js_package.py
// starts and describes in the environment: PULLY_TEST_URLS (ws URLs, comma-separated),
// PULLY_TEST_PIDS (their process ids, for the tests that kill or drain a node),
// PULLY_TEST_SECRET (the nodes' JWT secret, when they have one).
import { createHmac } from "node:crypto";
import { after } from "node:test";
import { Pully } from "../dist/index.js";

function list(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: these tests run from tests/test_js_package.py`);
  return value.split(",");
}

export const urls = () => list("PULLY_TEST_URLS");
export const pids = () => list("PULLY_TEST_PIDS").map(Number);
export const secret = () => list("PULLY_TEST_SECRET")[0];

/** The node's HTTP base URL for a ws URL. */
export const httpUrl = (wsUrl) => wsUrl.replace(/^ws/, "http").replace(/\/ws$/, "");

/** Resolve once `predicate()` is truthy; throw after `ms`. */
export async function until(predicate, what, ms = 15000) {
  const end = Date.now() + ms;
  while (!predicate()) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** Every event of `names` the client emits, as [name, event]. */
export function record(client, names) {
  const seen = [];
  for (const name of names) client.on(name, (event) => { seen.push([name, event]); });
  return seen;
}

/** POST /publish to the node, as an operator's script does. */
export async function httpPublish(wsUrl, channel, data) {
  const response = await fetch(`${httpUrl(wsUrl)}/publish`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ channel, data }),
    signal: AbortSignal.timeout(5000),
  });
  if (response.status !== 200) throw new Error(`publish: HTTP ${response.status} ${await response.text()}`);
  return response.json();
}

/** An HS256 JWT with `claims`, expiring in `ttl` seconds (none: no exp). */
export function jwt(claims, ttl = null) {
  const part = (obj) => Buffer.from(JSON.stringify(obj)).toString("base64url");
  const body = ttl == null ? claims : { ...claims, exp: Math.floor(Date.now() / 1000) + ttl };
  const unsigned = `${part({ alg: "HS256", typ: "JWT" })}.${part(body)}`;
  return `${unsigned}.${createHmac("sha256", secret()).update(unsigned).digest("base64url")}`;
}

const clients = [];
/** A Pully client closed after the file's tests, failed or not (else the process lives on). */
export function client(url, options) {
  const p = new Pully(url, options);
  clients.push(p);
  return p;
}
after(() => { for (const p of clients) p.close(); });
