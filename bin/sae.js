#!/usr/bin/env node
// Thin shim: loads the TypeScript sources through tsx, runs the CLI, sets the exit code.
import { register } from "tsx/esm/api";

register();
const { main } = await import("../src/cli/main.ts");
process.exitCode = await main(process.argv.slice(2));
