#!/usr/bin/env node
// Thin shim: loads the TypeScript sources through tsx, runs the CLI, sets the exit code.
import { register } from "tsx/esm/api";

// `sae runs | head`: a closed pipe ends the output quietly, as for any Unix tool
for (const stream of [process.stdout, process.stderr]) {
  stream.on("error", (e) => {
    if (e.code === "EPIPE") process.exit(process.exitCode ?? 0);
    throw e;
  });
}

register();
const { main } = await import("../src/cli/main.ts");
process.exitCode = await main(process.argv.slice(2));
