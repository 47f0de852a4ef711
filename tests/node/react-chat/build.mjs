// Bundles the useChat page into one script a test server can serve:
//   node tests/node/react-chat/build.mjs [OUTFILE]   (default: react-chat/bundle.js)
// React, @ai-sdk/react and ai come from tests/node/node_modules; the page needs
// index.html (beside this file) and an /api/chat route on the same origin.
import { build } from "esbuild";
import { fileURLToPath } from "node:url";

const here = (name) => fileURLToPath(new URL(name, import.meta.url));
const outfile = process.argv[2] ?? here("bundle.js");

const result = await build({
  entryPoints: [here("main.jsx")],
  outfile,
  bundle: true,
  format: "iife",
  platform: "browser",
  target: "es2022",
  jsx: "automatic",
  minify: true,
  define: { "process.env.NODE_ENV": '"production"' },
  logLevel: "warning",
  metafile: true,
});
const bytes = Object.values(result.metafile.outputs).reduce((n, o) => n + o.bytes, 0);
console.log(JSON.stringify({ outfile, bytes, warnings: result.warnings.length }));
