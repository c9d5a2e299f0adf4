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
const r = spawnSync("node-gyp", ["rebuild"], { stdio: "inherit", shell: true });
if (r.status !== 0) {
  console.warn("sae: building the native engine failed; the slower TypeScript engine will be used (see `sae doctor`)");
  process.exit(strict ? 1 : 0);
}
