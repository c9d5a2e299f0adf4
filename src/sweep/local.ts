// Runs a sweep on this machine: `jobs` runs at a time, each in a child process
// (`sae sweep FILE --index I --threads T`, the command a Slurm array task runs), the cores shared
// out among them. A child's output goes to logs/<run>.log in the sweep folder.
//
// Stopping: the children ignore the terminal's Ctrl-C and take orders from the parent on stdin
// ("stop": checkpoint after this step and exit; "abort": exit at once), so one Ctrl-C stops every
// run cleanly and a second one aborts them. A child whose stdin closes (the parent was killed)
// stops cleanly too. Killing everything with kill -9 loses at most the steps since each run's
// last checkpoint: the next `sae sweep` resumes from there (src/sweep/member.ts).
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { readStatus } from "../io/run.ts";
import type { EvalResult } from "../eval/metrics.ts";
import { selectEngine } from "../engine/index.ts";
import { ensureHarvested, harvestDir } from "./data.ts";
import { checkUnchanged, memberState } from "./member.ts";
import type { Sweep, SweepRun } from "./spec.ts";
import { count } from "../text.ts";

const BIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../bin/sae.js");
/** set in a child's environment: take stop orders on stdin */
export const CONTROL_ENV = "SAE_SWEEP_CONTROL";
/** set in a child's environment: the name of the run it is to train */
export const RUN_ENV = "SAE_SWEEP_RUN";

export interface LocalOptions {
  jobs: number;
  /** threads per run */
  threads: number;
  /** the arguments that load the same sweep in a child: the file and --runs-dir when given */
  sweepArgs: string[];
  /** progress lines (stderr) */
  log(line: string): void;
}

export interface LocalSummary {
  done: string[];
  skipped: string[];
  failed: { name: string; reason: string }[];
  interrupted: string[];
  /** not started: stopped before their turn, or their parent did not finish */
  notStarted: string[];
  stopped: boolean;
}

export async function runLocal(sweep: Sweep, o: LocalOptions): Promise<LocalSummary> {
  const summary: LocalSummary = { done: [], skipped: [], failed: [], interrupted: [], notStarted: [], stopped: false };
  const pending: SweepRun[] = [];
  for (const run of sweep.runs) {
    if (memberState(sweep, run).kind === "done") {
      checkUnchanged(sweep, run); // a finished run of an older sweep file is not counted as this one's
      summary.skipped.push(run.name);
    } else pending.push(run);
  }
  if (summary.skipped.length) o.log(`${summary.skipped.length} of ${count(sweep.runs.length, "run")} ${summary.skipped.length === 1 ? "is" : "are"} done already`);
  if (pending.length === 0) return summary;

  // shared data first, with every core: each child then finds it on disk
  const toHarvest = new Map<string, SweepRun>();
  for (const run of pending) {
    const h = run.finetune ? null : harvestDir(sweep.dir, run.config);
    if (h) toHarvest.set(h, run);
  }
  if (toHarvest.size) {
    const engine = selectEngine();
    for (const [dir, run] of toHarvest) ensureHarvested(run.config, dir, engine, o.log);
  }

  const logs = path.join(sweep.dir, "logs");
  fs.mkdirSync(logs, { recursive: true });
  const finished = new Set(summary.skipped);
  const running = new Map<string, { child: ChildProcess; started: number }>();
  let stopping = 0;
  const order = (line: string) => {
    for (const { child } of running.values()) child.stdin?.write(line + "\n");
  };
  const onSignal = () => {
    stopping++;
    if (stopping === 1) {
      o.log(`\nstopping: ${count(running.size, "running run")} save a checkpoint after this step (Ctrl-C again to abort them without saving)...`);
      order("stop");
    } else {
      order("abort");
    }
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  const total = sweep.runs.length;
  let started = summary.skipped.length;

  try {
    await new Promise<void>((resolve) => {
      const launch = () => {
        while (!stopping && running.size < o.jobs) {
          const next = pending.findIndex((r) => !r.finetune || finished.has(r.finetune.parent));
          if (next < 0) break;
          const [run] = pending.splice(next, 1);
          start(run);
        }
        // a fine-tune whose parent failed never becomes ready
        if (running.size === 0) {
          summary.notStarted.push(...pending.map((r) => r.name));
          resolve();
        }
      };
      const start = (run: SweepRun) => {
        started++;
        const state = memberState(sweep, run);
        const logFile = path.join(logs, `${run.name}.log`);
        const fd = fs.openSync(logFile, "a");
        fs.writeSync(fd, `\n--- ${new Date().toISOString()} sae sweep --index ${run.index} --threads ${o.threads}\n`);
        const child = spawn(process.execPath, [BIN, "sweep", ...o.sweepArgs, "--index", String(run.index), "--threads", String(o.threads)], {
          stdio: ["pipe", fd, fd],
          env: { ...process.env, [CONTROL_ENV]: "stdin", [RUN_ENV]: run.name },
        });
        fs.closeSync(fd);
        child.stdin!.on("error", () => {}); // a child that already exited
        running.set(run.name, { child, started: performance.now() });
        o.log(`[${started}/${total}] ${run.name}: ${state.kind === "resume" ? `resuming at step ${state.step}` : "started"} (log: ${path.relative(process.cwd(), logFile)})`);
        child.on("exit", (code, signal) => {
          const secs = (performance.now() - running.get(run.name)!.started) / 1000;
          running.delete(run.name);
          const status = readStatus(path.join(sweep.dir, run.name));
          if (code === 0 && status?.status === "done") {
            finished.add(run.name);
            summary.done.push(run.name);
            o.log(`  ${run.name} done in ${secs.toFixed(0)} s: ${oneLine(readEval(path.join(sweep.dir, run.name)))}`);
          } else if (status?.status === "interrupted" || (stopping && code !== 0)) {
            summary.interrupted.push(run.name);
            o.log(`  ${run.name} ${status?.status === "interrupted" ? `stopped at step ${status.step}` : "aborted"}`);
          } else {
            const reason = lastError(logFile) ?? `exit ${code ?? signal}`;
            summary.failed.push({ name: run.name, reason });
            o.log(`  ${run.name} failed: ${reason} (log: ${path.relative(process.cwd(), logFile)})`);
          }
          launch();
        });
      };
      launch();
    });
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  }
  summary.stopped = stopping > 0;
  return summary;
}

function readEval(dir: string): EvalResult | null {
  try {
    return JSON.parse(fs.readFileSync(path.join(dir, "eval.json"), "utf8")) as EvalResult;
  } catch {
    return null;
  }
}

/** "L0 8.20, FVU 0.3460, MSE 0.7880[, CE loss recovered 0.9733]" */
export function oneLine(e: EvalResult | null): string {
  if (!e) return "no evaluation";
  const parts = [`L0 ${e.l0.toFixed(2)}`, `FVU ${e.fvu.toFixed(4)}`, `MSE ${e.mse.toPrecision(4)}`, `dead ${(100 * e.dead_frac).toFixed(1)}%`];
  if (e.downstream) parts.push(`CE loss recovered ${e.downstream.ce_loss_recovered.toFixed(4)}`);
  return parts.join(", ");
}

/** the last "error: ..." line a child wrote */
function lastError(logFile: string): string | null {
  try {
    const lines = fs.readFileSync(logFile, "utf8").split("\n");
    for (let i = lines.length - 1; i >= 0; i--) if (lines[i].startsWith("error: ")) return lines[i].slice(7);
  } catch {
    /* no log */
  }
  return null;
}
