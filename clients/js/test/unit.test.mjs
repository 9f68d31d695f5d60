// The pure parts, without a node: backoff, URLs, token expiry, idempotency keys, options.
import assert from "node:assert/strict";
import { test } from "node:test";
import {
  backoffCeiling, backoffDelay, newIdempotencyKey, Pully, renewDelay, tokenExpiry, toWsUrl,
} from "../dist/index.js";

test("backoff: full jitter under min(cap, base * 2^n)", () => {
  assert.deepEqual([0, 1, 2, 6, 7, 50].map((n) => backoffCeiling(n)), [500, 1000, 2000, 20000, 20000, 20000]);
  for (let n = 0; n < 40; n++) assert.ok(backoffDelay(n, 500, 20000, () => 0.999999) <= backoffCeiling(n));
  assert.equal(backoffDelay(3, 100, 1000, () => 0.5), 400);
});

test("URLs: http becomes ws, the path defaults to /ws, other schemes are refused", () => {
  assert.equal(toWsUrl("http://h:1"), "ws://h:1/ws");
  assert.equal(toWsUrl("https://h/x"), "wss://h/x");
  assert.throws(() => toWsUrl("ftp://h"), TypeError);
  assert.throws(() => new Pully([]), /at least one URL/);
  assert.throws(() => new Pully("ws://h", { offline: "later" }), /offline must be/);
});

test("token expiry and renewal delay", () => {
  const token = `x.${Buffer.from(JSON.stringify({ exp: 100 })).toString("base64url")}.y`;
  assert.equal(tokenExpiry(token), 100000);
  assert.equal(tokenExpiry("not a jwt"), null);
  assert.equal(renewDelay(1000000, 0), 940000); // 60 s ahead at most
  assert.equal(renewDelay(100000, 0), 80000); // 20 % of the remaining life
  assert.equal(renewDelay(1500, 0), 500); // 1 s ahead at least
});

test("idempotency keys: 22 URL-safe characters, each one new", () => {
  const keys = new Set(Array.from({ length: 1000 }, newIdempotencyKey));
  assert.equal(keys.size, 1000);
  for (const key of keys) assert.match(key, /^[A-Za-z0-9_-]{22}$/);
});

test("unknown event names are refused", () => {
  const p = new Pully("ws://127.0.0.1:9/ws");
  assert.throws(() => p.on("conected", () => {}), /unknown event conected/);
});
