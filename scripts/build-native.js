// Builds the native engine (native/*.cc against OpenBLAS) with npm's bundled node-gyp.
// Run by `npm ci` (the package's install script). A failed build does not fail the install:
// the TypeScript engine takes over and says so; `sae doctor` tells why. `--strict` fails instead.
import { spawnSync } from "node:child_process";

const strict = process.argv.includes("--strict");
const pc = spawnSync("pkg-config", ["--exists", "openblas"]);
if (pc.status !== 0) {
  const msg = "sae: OpenBLAS not found by pkg-config (Debian: apt-get install libopenblas-pthread-dev pkg-config); skipping the native engine";
  console.warn(msg);
  process.exit(strict ? 1 : 0);
}
const dnnl = spawnSync(process.execPath, [new URL("./find-dnnl.js", import.meta.url).pathname], { encoding: "utf8" }).stdout.trim() === "1";
console.warn(dnnl ? "sae: oneDNN found: bf16 training compiled in (docs/engine.md#bfloat16)" : "sae: oneDNN not found (Debian: apt-get install libdnnl-dev): building without bf16 training");
const r = spawnSync("node-gyp", ["rebuild"], { stdio: "inherit", shell: true });
if (r.status !== 0) {
  console.warn("sae: building the native engine failed; the slower TypeScript engine will be used (see `sae doctor`)");
  process.exit(strict ? 1 : 0);
}
