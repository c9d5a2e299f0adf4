import { InvalidArgumentError } from "commander";
import { resolveRun, type RunPurpose } from "../io/run.ts";
import type { CliIo } from "./io.ts";

export function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

export function positiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError(`expected a positive integer, received "${value}"`);
  return n;
}

export function nonNegativeInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError(`expected an integer >= 0, received "${value}"`);
  return n;
}

export function positiveFloat(value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError(`expected a positive number, received "${value}"`);
  return n;
}

export function nonNegativeFloat(value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0) throw new InvalidArgumentError(`expected a number >= 0, received "${value}"`);
  return n;
}

export function fmtNum(v: number): string {
  if (!Number.isFinite(v)) return String(v);
  if (v !== 0 && (Math.abs(v) < 1e-3 || Math.abs(v) >= 1e5)) return v.toExponential(3);
  return v.toFixed(4);
}

/** The help text of an optional RUN argument. */
export function runArgHelp(purpose: RunPurpose): string {
  const what = purpose === "finished" ? "finished" : "interrupted, failed or dead";
  return `run id, a unique prefix of one, a run folder, latest or latest~N (default: the latest ${what} run)`;
}

/**
 * The run a command works on: RUN as given, or when left out (or latest, latest~N) the one that
 * began training last among those that fit (see resolveRun); in that case the command's first
 * line, on stderr, says which. Returns the run's folder.
 */
export function pickRun(io: CliIo, runsDir: string, arg: string | undefined, purpose: RunPurpose): string {
  const { dir, picked } = resolveRun(runsDir, arg, purpose);
  if (picked) io.err(picked);
  return dir;
}
