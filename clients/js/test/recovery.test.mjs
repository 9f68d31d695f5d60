// Recovery across a node SIGKILL: a subscriber on node A (of A and B, one Redis) keeps every
// message, in order, exactly once, while A dies and messages keep being published on B.
import assert from "node:assert/strict";
import { test } from "node:test";
import { client, pids, record, until, urls } from "./live.mjs";

test("a subscriber whose node is SIGKILLed resumes on the other node without a gap", async () => {
  const [a, b] = urls();
  const [pidA] = pids();
  const p = client([a, b], { backoff: { base: 50, cap: 400 } });
  const events = record(p, ["connected", "disconnected", "recovery_failed", "error"]);
  await p.connect();
  const nodeA = p.node;
  const got = [];
  await p.subscribe("orders", (m) => { got.push(m.data); });
  const publisher = client(b);
  await publisher.connect();
  for (let n = 1; n <= 5; n++) await publisher.publish("orders", n);
  await until(() => got.length === 5, "the first five messages");

  process.kill(pidA, "SIGKILL");
  for (let n = 6; n <= 10; n++) await publisher.publish("orders", n);
  await until(() => got.length === 10, "the messages published while node A was dead");
  // published after the reconnect, from the client itself: waits for the connection, then acks
  const offset = await p.publish("orders", 11, { timeout: 15000 });
  await until(() => got.length === 11, "its own message");

  assert.deepEqual(got, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
  assert.equal(offset, 11);
  assert.notEqual(p.node, nodeA);
  const names = events.map(([name]) => name);
  assert.deepEqual(names, ["connected", "disconnected", "connected"]);
  assert.equal(events[1][1].code, 1006);
  assert.equal(events[2][1].reconnect, true);
  p.close();
  publisher.close();
});
