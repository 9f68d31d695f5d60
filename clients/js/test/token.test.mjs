// Token renewal: tokens that live 3 s, from a token function; the client renews each one on the
// open connection ahead of its `exp`, so the node never closes it (4001).
import assert from "node:assert/strict";
import { test } from "node:test";
import { client, jwt, record, urls } from "./live.mjs";

test("a token function renews the token in place before it expires", async () => {
  const [url] = urls();
  const issued = [];
  const mint = async () => {
    const token = jwt({ sub: "dee", channels: ["*"], publish: ["*"] }, 3);
    issued.push(JSON.parse(Buffer.from(token.split(".")[1], "base64url")).exp);
    return token;
  };
  const p = client(url, { token: mint });
  const events = record(p, ["connected", "disconnected", "error"]);
  const refreshed = [];
  p.on("frame", (e) => { if (e.frame.type === "refreshed") refreshed.push(e.frame.expires); });
  await p.connect();
  assert.equal(p.user, "dee");
  const sub = await p.subscribe("ticks");
  const clientId = p.clientId;
  await new Promise((resolve) => setTimeout(resolve, 5500)); // past the first token's exp
  const offset = await p.publish("ticks", "still here");
  assert.equal((await sub.get(5000)).offset, offset);

  assert.ok(refreshed.length >= 2, `renewed ${refreshed.length} times`);
  assert.deepEqual(refreshed, issued.slice(1, refreshed.length + 1));
  assert.deepEqual(events.map(([name]) => name), ["connected"]);
  assert.equal(p.clientId, clientId);
  p.close();
});
