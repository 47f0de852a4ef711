// Bundles a chat page into one script a test server can serve:
//   node tests/node/react-chat/build.mjs [--page use-chat|assistant-ui] [OUTFILE]
// use-chat (the default): App.jsx, @ai-sdk/react's useChat -> bundle.js, for index.html;
// assistant-ui: assistant-ui.jsx, @assistant-ui/react -> assistant-ui.js, for
// assistant-ui.html. The packages come from tests/node/node_modules; the pages need an
// /api/chat route on the same origin. Prints {"outfile", "bytes", "warnings"} as JSON.
import { build } from "esbuild";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

const PAGES = {
  "use-chat": { entry: "main.jsx", outfile: "bundle.js" },
  "assistant-ui": { entry: "assistant-ui-main.jsx", outfile: "assistant-ui.js" },
};
const here = (name) => fileURLToPath(new URL(name, import.meta.url));
const { values, positionals } = parseArgs({
  options: { page: { type: "string", default: "use-chat" } }, allowPositionals: true,
});
const page = PAGES[values.page];
if (!page) throw new Error(`--page must be one of ${Object.keys(PAGES).join(", ")}`);
const outfile = positionals[0] ?? here(page.outfile);

const result = await build({
  entryPoints: [here(page.entry)],
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
