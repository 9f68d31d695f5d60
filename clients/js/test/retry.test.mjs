// A publish is sent again with the same idempotency key: after `unavailable` (Redis is down)
// and after its connection is lost (node A SIGKILLed meanwhile); once Redis is back it is
// published once. Run as `node test/retry.test.mjs`: tests/test_js_package.py reads the lines
// this prints ("ready", "restart redis") and writes "redis down" to its stdin.
import assert from "node:assert/strict";
import { createInterface } from "node:readline";
import { test } from "node:test";
import { client, pids, until, urls } from "./live.mjs";

const lines = createInterface({ input: process.stdin });
const said = [];
lines.on("line", (line) => said.push(line));

test("a publish is retried with the same key after unavailable and a lost connection", async () => {
  const [a, b] = urls();
  const [pidA] = pids();
  const p = client([a, b], { backoff: { base: 100, cap: 300 } });
  const sent = []; // [node, idempotency_key] of each publish frame
  const refused = [];
  p.on("frame", ({ direction, frame }) => {
    if (direction === "out" && frame.type === "publish") sent.push([p.node, frame.idempotency_key]);
    if (direction === "in" && frame.type === "error") refused.push(frame.code);
  });
  await p.connect();
  const nodeA = p.node;
  console.log("ready");
  await until(() => said.includes("redis down"), "the word that Redis is down");

  const publishing = p.publish("retried", { n: 1 }, { timeout: 30000 });
  await until(() => sent.length >= 2, "a second attempt after unavailable");
  process.kill(pidA, "SIGKILL");
  await until(() => sent.some(([node]) => node !== nodeA), "an attempt on node B");
  console.log("restart redis");
  const offset = await publishing;

  assert.equal(offset, 1); // the first publication of the restarted Redis
  assert.ok(refused.length >= 1 && refused.every((code) => code === "unavailable"), String(refused));
  assert.equal(new Set(sent.map(([, key]) => key)).size, 1); // one key, every attempt
  assert.match(sent[0][1], /^[A-Za-z0-9_-]{22}$/);
  const history = await p.history("retried");
  assert.deepEqual(history.messages.map((m) => m.data), [{ n: 1 }]);
  lines.close();
});
