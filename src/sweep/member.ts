// One run of a sweep, as `sae sweep FILE --index I` trains it (the local scheduler's child
// processes and Slurm's array tasks alike): skipped when done, resumed exactly from its latest
// checkpoint when interrupted or killed, started afresh when it never reached a checkpoint.
import fs from "node:fs";
import path from "node:path";
import YAML from "yaml";
import { configToYaml, loadConfig } from "../config/load.ts";
import type { Config } from "../config/schema.ts";
import type { EngineChoice } from "../engine/index.ts";
import { createRunDir, readStatus, type RunStatus } from "../io/run.ts";
import { listCheckpoints } from "../train/checkpoint.ts";
import { acquireLock, holderState, readLock } from "../io/lock.ts";
import { probeData } from "../data/index.ts";
import { resolveTfjs } from "../engine/tfjs.ts";
import { keyReaders } from "../sae/index.ts";
import { tfjsStepper } from "../train/tfjs-stepper.ts";
import { train, type PhaseEval, type TrainReporter } from "../train/loop.ts";
import type { EvalResult } from "../eval/metrics.ts";
import { SaeError } from "../errors.ts";
import { ensureHarvested, harvestDir, withHarvestedData } from "./data.ts";
import { finetuneRunConfig, type Sweep, type SweepRun } from "./spec.ts";

/** What a run's folder says about it. */
export type MemberState =
  | { kind: "new" }
  | { kind: "done"; status: RunStatus }
  | { kind: "resume"; status: RunStatus | null; step: number }
  | { kind: "restart"; status: RunStatus | null };

export function memberState(sweep: Sweep, run: SweepRun): MemberState {
  const dir = path.join(sweep.dir, run.name);
  if (!fs.existsSync(path.join(dir, "config.yaml"))) return { kind: "new" };
  const status = readStatus(dir);
  if (status?.status === "done" && fs.existsSync(path.join(dir, "eval.json"))) return { kind: "done", status };
  // the step from the checkpoint's name (its reader checks that the .json agrees, and falls back
  // to an older one when it is damaged)
  const ckpt = listCheckpoints(dir).at(-1);
  if (ckpt) return { kind: "resume", status, step: ckpt.step };
  return { kind: "restart", status };
}

/**
 * The config the run trains with: its validated config with model data replaced by the sweep's
 * harvested copy; a fine-tune's is made from its parent's run folder (as `sae finetune` does).
 */
export function trainingConfig(sweep: Sweep, run: SweepRun): Config {
  if (run.finetune) {
    const parentDir = path.join(sweep.dir, run.finetune.parent);
    const parent = loadConfig(path.join(parentDir, "config.yaml"), [], { probe: probeData }).config;
    return finetuneRunConfig(parent, parentDir, run.finetune.options, run.finetune.origin, run.overrides, sweep.dir).config;
  }
  const h = harvestDir(sweep.dir, run.config);
  return h ? withHarvestedData(run.config, h) : run.config;
}

export interface MemberOptions {
  engine: EngineChoice;
  reporter: TrainReporter;
  /** .stop = true asks the run to checkpoint and stop after its current step */
  control: { stop: boolean };
}

export interface MemberResult {
  outcome: "done" | "skipped" | "interrupted";
  status: RunStatus;
  eval: EvalResult | null;
  phases: PhaseEval[];
  dir: string;
}

/** Trains (or resumes, or skips) one run of the sweep. */
export async function runMember(sweep: Sweep, run: SweepRun, o: MemberOptions): Promise<MemberResult> {
  const dir = path.join(sweep.dir, run.name);
  const log = o.reporter.log;
  if (run.finetune) {
    const parentStatus = readStatus(path.join(sweep.dir, run.finetune.parent));
    if (parentStatus?.status !== "done") {
      throw new SaeError("runtime", `run ${run.name} fine-tunes ${run.finetune.parent}, which is ${parentStatus?.status ?? "not started"}`, `train it first: sae sweep ${path.relative(process.cwd(), sweep.file)} --index ${sweep.runs.find((r) => r.name === run.finetune!.parent)!.index}`);
    }
  } else {
    const h = harvestDir(sweep.dir, run.config);
    if (h) ensureHarvested(run.config, h, o.engine, log);
  }
  const config = trainingConfig(sweep, run);
  const release = lockRun(sweep, run, log);
  try {
    const state = memberState(sweep, run);
    if (state.kind !== "new") checkSameConfig(dir, config, sweep);
    if (state.kind === "done") {
      log(`run ${run.name} is done; skipped`);
      return { outcome: "skipped", status: state.status, eval: JSON.parse(fs.readFileSync(path.join(dir, "eval.json"), "utf8")), phases: [], dir };
    }
    if (state.kind === "restart") {
      // stopped before its first checkpoint: nothing in the folder can be continued
      log(`run ${run.name} stopped before its first checkpoint; starting it again`);
      fs.rmSync(dir, { recursive: true, force: true });
    }
    if (state.kind === "new" || state.kind === "restart") createRunDir(sweep.dir, run.name);
    const resume = state.kind === "resume";
    // train.engine as `sae train` reads it: tfjs steps on its device, the evaluation on the CPU engine
    const tfjs = await resolveTfjs(config.train.engine);
    const on = tfjs ? { engine: { ...o.engine, reason: `${tfjs.reason}; evaluation: ${o.engine.reason}` }, stepper: tfjsStepper(tfjs, config) } : { engine: o.engine };
    const r = await train({ config, runDir: dir, runId: run.name, reporter: o.reporter, control: o.control, resume, ...on });
    return { outcome: r.status.status === "done" ? "done" : "interrupted", status: r.status, eval: r.eval, phases: r.phases, dir };
  } finally {
    release();
  }
}

/** Throws when the run's folder was trained with other values than the sweep file gives now (a done run's too). */
export function checkUnchanged(sweep: Sweep, run: SweepRun): void {
  const dir = path.join(sweep.dir, run.name);
  if (fs.existsSync(path.join(dir, "config.yaml"))) checkSameConfig(dir, trainingConfig(sweep, run), sweep);
}

/** A run folder trained from another config is never continued with this one: the sweep file changed. */
function checkSameConfig(dir: string, config: Config, sweep: Sweep): void {
  const file = path.join(dir, "config.yaml");
  const before = readOnly(YAML.parse(fs.readFileSync(file, "utf8")));
  const now = readOnly(YAML.parse(configToYaml(config)));
  const diff = firstDifference(before, now, []);
  if (diff) {
    throw new SaeError("usage", `run ${path.basename(dir)} was started with ${diff.key} = ${JSON.stringify(diff.before)}, and the sweep file now gives ${JSON.stringify(diff.now)}`, `restore ${path.relative(process.cwd(), sweep.file)}, or give the sweep another name (name:) so that it gets a new folder`);
  }
}

/** the config without the sae keys its variant does not read (they cannot change what trains) */
function readOnly(c: { sae?: Record<string, unknown> }): unknown {
  const variant = c.sae?.variant;
  if (typeof variant !== "string") return c;
  const readers = keyReaders();
  return { ...c, sae: Object.fromEntries(Object.entries(c.sae!).filter(([k]) => !(k in readers) || readers[k].includes(variant))) };
}

function firstDifference(a: unknown, b: unknown, at: string[]): { key: string; before: unknown; now: unknown } | null {
  if (a !== null && b !== null && typeof a === "object" && typeof b === "object" && Array.isArray(a) === Array.isArray(b)) {
    const keys = new Set([...Object.keys(a as object), ...Object.keys(b as object)]);
    for (const k of keys) {
      const d = firstDifference((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k], [...at, k]);
      if (d) return d;
    }
    return null;
  }
  // a key that one side lacks is a change of sae's schema (a new key, or one a variant no longer
  // resolves), not of the sweep file: only values that both configs give are compared
  if (a === null || a === undefined || b === null || b === undefined) return null;
  return a === b ? null : { key: at.join("."), before: a, now: b };
}

/**
 * One process trains a sweep's run at a time: a lock in the sweep's locks/ folder (the run's folder
 * may not exist yet), taken like a run's own lock (src/io/lock.ts: created whole, a dead holder's
 * taken over, a live one or another host's refuses).
 */
export function lockRun(sweep: Sweep, run: SweepRun, log: (line: string) => void): () => void {
  const file = lockFile(sweep, run);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  return acquireLock(file, { what: `sweep run ${run.name}`, busyHint: "wait for it, or stop it (Ctrl-C or kill PID: it saves a checkpoint) and run the sweep again" }, "sweep", log).release;
}

export function lockFile(sweep: Sweep, run: SweepRun): string {
  return path.join(sweep.dir, "locks", `${run.name}.lock`);
}

/** who holds the run's lock, and whether it still runs (another host's: assumed alive) */
export function lockHolder(sweep: Sweep, run: SweepRun): { host: string; pid: number; alive: boolean } | null {
  const h = readLock(lockFile(sweep, run));
  return h ? { host: h.host, pid: h.pid, alive: holderState(h) !== "dead" } : null;
}
