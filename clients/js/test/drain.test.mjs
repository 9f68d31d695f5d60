// Drain advice: a node told to stop (SIGTERM) sends `reconnect` and closes with 1012; the
// client moves to the other node and its subscription continues where it was.
import assert from "node:assert/strict";
import { test } from "node:test";
import { client, httpPublish, pids, record, until, urls } from "./live.mjs";

test("a draining node's advice moves the client to the other node, nothing lost", async () => {
  const [a, b] = urls();
  const [pidA] = pids();
  const p = client([a, b], { backoff: { base: 50, cap: 400 } });
  const events = record(p, ["connected", "disconnected", "recovery_failed", "error"]);
  const advice = [];
  p.on("frame", (e) => { if (e.frame.type === "reconnect") advice.push(e.frame); });
  await p.connect();
  const got = [];
  await p.subscribe("news", (m) => { got.push(m.data); });
  await httpPublish(b, "news", "before");
  await until(() => got.length === 1, "the first message");

  process.kill(pidA, "SIGTERM");
  await until(() => events.length === 3, "the reconnect to the other node");
  await httpPublish(b, "news", "after");
  await until(() => got.length === 2, "the message after the drain");

  assert.deepEqual(advice, [{ type: "reconnect", reason: "draining" }]);
  assert.deepEqual(events.map(([name]) => name), ["connected", "disconnected", "connected"]);
  assert.equal(events[1][1].code, 1012);
  assert.equal(events[2][1].url, b);
  assert.deepEqual(got, ["before", "after"]);
  p.close();
});
