// Bundles a handler and its npm dependencies into the one ES module
// componentize-js takes:  node bundle.mjs ENTRY.js OUT.js
// Imports of the component's own interfaces (`natsapp:handler/...`,
// `wasi:...`) stay imports; everything else is inlined.
import { rolldown } from "rolldown";

const [input, output] = process.argv.slice(2);
if (!input || !output) {
  console.error("usage: node bundle.mjs ENTRY.js OUT.js");
  process.exit(2);
}
const bundle = await rolldown({
  input,
  platform: "neutral",
  external: [/^[a-z][a-z0-9-]*:[a-z]/],
  resolve: { conditionNames: ["import", "module", "default"], mainFields: ["module", "main"] },
  logLevel: "warn",
});
await bundle.write({ file: output, format: "esm", codeSplitting: false });
await bundle.close();
