// The browser build: src/ bundled into one readable ES module, the file every node serves at
// GET /pully.js (committed as pully_tornado/static/pully.js, so a node needs no Node.js).
//   node build.mjs           write dist/browser/pully.js
//   node build.mjs --write   ... and copy it to pully_tornado/static/pully.js
//   node build.mjs --check   ... and exit 1 if that committed copy differs from it
import { readFileSync, writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const here = (path) => fileURLToPath(new URL(path, import.meta.url));
const OUT = here("dist/browser/pully.js");
const COMMITTED = here("../../pully_tornado/static/pully.js");
const { version } = JSON.parse(readFileSync(here("package.json"), "utf8"));

const BANNER = `// Pully browser client ${version}: protocol v1 over a WebSocket, with reconnect, resubscribe and
// recovery. Served by every node at GET /pully.js:
//
//   import { Pully } from "/pully.js";
//   const p = new Pully();                       // ws(s)://<this page's host>/ws
//   await p.connect();
//   const sub = await p.subscribe("chat", (m) => console.log(m.offset, m.data));
//   const offset = await p.publish("chat", { text: "hi" });
//
// GENERATED from clients/js/src (the pully-client npm package) by clients/js/build.mjs: edit the
// sources there and run \`npm run build -- --write\` in clients/js. See docs/clients.md.`;

await build({
  entryPoints: [here("src/index.ts")],
  outfile: OUT,
  bundle: true,
  format: "esm",
  target: "es2022",
  platform: "neutral",
  charset: "utf8",
  legalComments: "none",
  banner: { js: BANNER },
  logLevel: "warning",
});

const built = readFileSync(OUT, "utf8");
if (process.argv.includes("--write")) writeFileSync(COMMITTED, built);
if (process.argv.includes("--check") && readFileSync(COMMITTED, "utf8") !== built) {
  console.error(
    "pully_tornado/static/pully.js differs from the build of clients/js/src: run " +
      "`npm run build -- --write` in clients/js and commit the result",
  );
  process.exit(1);
}
