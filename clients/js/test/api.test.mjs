// The whole API against one live node, in Node 18/20 through the `ws` package (found without
// being passed) or Node 22+'s global WebSocket.
import assert from "node:assert/strict";
import { test } from "node:test";
import {
  AlreadySubscribed, BadRequest, ClientClosed, InvalidChannel, NotConnected, PullyError, ServerError,
} from "../dist/index.js";
import { client, record, until, urls } from "./live.mjs";

test("connect, subscribe, publish with idempotency keys, history, presence, errors", async () => {
  const [url] = urls();
  const p = client(url, { backoff: { base: 50, cap: 400 } });
  const events = record(p, ["connected", "subscribed", "error"]);
  const out = [];
  p.on("frame", (e) => { if (e.direction === "out") out.push(e.frame); });
  await p.connect();
  assert.deepEqual(events.map(([name]) => name), ["connected"]);
  assert.match(p.clientId, /./);

  const sub = await p.subscribe("js");
  const handled = [];
  await p.subscribe("js-handled", (m) => { handled.push(m.data); });
  assert.equal(sub.server, false);
  const first = await p.publish("js", { n: 1 });
  const second = await p.publish("js", null, { idempotencyKey: "order-42" });
  assert.equal(second, first + 1);
  const got = [await sub.get(5000), await sub.get(5000)];
  assert.deepEqual(got.map((m) => [m.channel, m.data, m.offset]), [["js", { n: 1 }, first], ["js", null, second]]);
  assert.deepEqual(sub.position, { offset: second, epoch: got[1].epoch });

  const keys = out.filter((f) => f.type === "publish").map((f) => f.idempotency_key);
  assert.equal(keys.length, 2);
  assert.match(keys[0], /^[A-Za-z0-9_-]{22}$/);
  assert.equal(keys[1], "order-42");
  await assert.rejects(p.publish("js", 1, { idempotencyKey: "k".repeat(65) }), TypeError);

  await p.publish("js-handled", "h");
  await until(() => handled.length === 1, "the handler");
  assert.deepEqual(handled, ["h"]);

  const history = await p.history("js", 1);
  assert.deepEqual(history.messages.map((m) => [m.channel, m.offset, m.data]), [["js", second, null]]);
  assert.equal(history.offset, second);

  await p.subscribe("presence:js");
  assert.deepEqual((await p.presence("presence:js")).map((c) => c.client), [p.clientId]);

  const bad = await p.publish("a b", 1).catch((e) => e);
  assert.ok(bad instanceof InvalidChannel && bad instanceof ServerError && bad instanceof PullyError);
  assert.equal(bad.code, "invalid_channel");
  const noPresence = await p.presence("js").catch((e) => e);
  assert.ok(noPresence instanceof BadRequest, String(noPresence));
  await assert.rejects(p.subscribe("js"), AlreadySubscribed);
  await p.ping();

  await sub.unsubscribe();
  assert.deepEqual(await sub.next(), { value: undefined, done: true });
  assert.deepEqual([...p.subscriptions.keys()].sort(), ["js-handled", "presence:js"]);

  const offline = client(url, { offline: "fail" });
  await assert.rejects(offline.publish("js", 1), NotConnected);
  p.close();
  await assert.rejects(p.publish("js", 1), ClientClosed);
  assert.deepEqual(events.map(([name]) => name), ["connected"]); // no subscribed: client-side ones
});

test("connect() to a port nobody listens on gives up after connectTimeout", async () => {
  const p = client("ws://127.0.0.1:9/ws", { connectTimeout: 300, backoff: { base: 20, cap: 50 } });
  const error = await p.connect().catch((e) => e);
  assert.ok(error instanceof NotConnected, String(error));
  assert.match(error.message, /within 300 ms/);
  assert.equal(p.closed, true);
});
