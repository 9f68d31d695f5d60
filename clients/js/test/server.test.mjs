// Server-side subscriptions: channels the token's `subscribe` claim lists, subscribed by the
// node at connect, surface as subscriptions flagged `server`; across a node SIGKILL the client
// hands their positions over (?recover=) and misses nothing.
import assert from "node:assert/strict";
import { test } from "node:test";
import { Forbidden } from "../dist/index.js";
import { client, httpPublish, jwt, pids, record, until, urls } from "./live.mjs";

test("server-side subscriptions are subscriptions flagged server, recovered across a SIGKILL", async () => {
  const [a, b] = urls();
  const [pidA] = pids();
  const token = jwt({ sub: "eve", channels: ["own:*"], subscribe: ["alerts"] });
  const p = client([a, b], { token, backoff: { base: 50, cap: 400 } });
  const events = record(p, ["connected", "disconnected", "subscribed", "unsubscribed", "recovery_failed", "error"]);
  const got = [];
  p.on("subscribed", (e) => e.subscription.handle((m) => { got.push(m.data); }));
  await p.connect();
  await until(() => events.some(([name]) => name === "subscribed"), "the server-side subscription");
  const sub = p.subscriptions.get("alerts");
  assert.equal(sub.server, true);
  const subscribed = events.find(([name]) => name === "subscribed")[1];
  assert.equal(subscribed.channel, "alerts");
  assert.equal(subscribed.server, true);
  assert.equal(subscribed.subscription, sub);
  await assert.rejects(sub.unsubscribe(), Forbidden); // only the server ends it
  assert.equal(sub.active, true);

  for (const n of [1, 2]) await httpPublish(b, "alerts", n);
  await until(() => got.length === 2, "two alerts");
  process.kill(pidA, "SIGKILL");
  for (const n of [3, 4]) await httpPublish(b, "alerts", n);
  await until(() => got.length === 4 && p.connected, "the alerts published while node A was dead");
  await httpPublish(b, "alerts", 5);
  await until(() => got.length === 5, "a live alert on node B");

  assert.deepEqual(got, [1, 2, 3, 4, 5]);
  assert.equal(p.subscriptions.get("alerts"), sub); // the same subscription, renewed by node B
  assert.deepEqual(events.map(([name]) => name), ["connected", "subscribed", "disconnected", "connected"]);
  p.close();
});
