import { Command } from "commander";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { selectEngine } from "../engine/index.ts";
import { readStatus } from "../io/run.ts";
import { SaeError } from "../errors.ts";
import { loadSweep, runAt, writeSweepJson, type Sweep } from "../sweep/spec.ts";
import { lockHolder, memberState, runMember } from "../sweep/member.ts";
import { CONTROL_ENV, RUN_ENV, oneLine, runLocal } from "../sweep/local.ts";
import { submitSlurm, writeSlurm } from "../sweep/slurm.ts";
import { ensureHarvested, harvestDir } from "../sweep/data.ts";
import type { CliIo } from "./io.ts";
import { collect, nonNegativeInt, positiveInt } from "./common.ts";
import { printEval } from "./eval.ts";
import { count } from "../text.ts";

interface SweepOpts {
  jobs: number; threads?: number; runsDir?: string; dryRun?: boolean; status?: boolean; index?: number; prepare?: boolean;
  slurm?: boolean; submit?: boolean; partition?: string; time?: string; cpusPerTask?: number; sbatch: string[];
}

export function sweepCommand(io: CliIo): Command {
  return new Command("sweep")
    .description("train every run of a sweep file (a base config and groups of overrides) into one sweep folder, here or on a Slurm cluster")
    .argument("<sweep>", "YAML sweep file (see configs/sweeps/)")
    .option("--jobs <n>", "runs at a time; the cores are shared out among them", positiveInt, 1)
    .option("--threads <n>", "CPU threads per run (default: the cores divided by --jobs; under Slurm, the task's CPUs)", positiveInt)
    .option("--runs-dir <dir>", "folder that holds the sweep folder (default: the sweep file's runs_dir, else the base config's)")
    .option("--dry-run", "list the runs and what would happen to each; train nothing")
    .option("--status", "one line per run: state, steps, and the evaluation of finished runs")
    .option("--index <i>", "train only run i (what each Slurm array task runs)", nonNegativeInt)
    .option("--prepare", "only harvest the shared language-model activations (the first Slurm job)")
    .option("--slurm", "write a Slurm job-array script into the sweep folder instead of training here")
    .option("--submit", "with --slurm: submit it with sbatch")
    .option("--partition <p>", "with --slurm: the partition")
    .option("--time <t>", "with --slurm: time limit per run, e.g. 2:00:00")
    .option("--cpus-per-task <n>", "with --slurm: CPUs per run (its thread count)", positiveInt)
    .option("--sbatch <option>", "with --slurm: another sbatch option, e.g. --sbatch=--mem=8G (repeatable)", collect, [])
    .addHelpText("after", `
The sweep folder (runs_dir/name) holds one run folder per run, named from its overrides (e.g.
topk-k8), sweep.json, the harvested activations of a language-model sweep (data/), and each run's
log (logs/). Running the same command again skips finished runs and resumes interrupted ones
from their last checkpoint (a run killed before its first checkpoint starts again); Ctrl-C stops
every run cleanly after its current step.

Examples:
  sae sweep configs/sweeps/synthetic.yaml --jobs 2
  sae sweep configs/sweeps/synthetic.yaml --status
  sae sweep configs/sweeps/aidreams.yaml --dry-run
  sae sweep configs/sweeps/aidreams.yaml --slurm --partition cpu --time 1:00:00 --cpus-per-task 4 --submit
  sae report runs/synthetic --out report/`)
    .action(async (file: string, opts: SweepOpts) => {
      const modes = [opts.dryRun && "--dry-run", opts.status && "--status", opts.index !== undefined && "--index", opts.prepare && "--prepare", opts.slurm && "--slurm"].filter(Boolean);
      if (modes.length > 1) throw new SaeError("usage", `${modes.join(" and ")} do different things; give one`);
      if (!opts.slurm && (opts.submit || opts.partition || opts.time || opts.cpusPerTask || opts.sbatch.length)) throw new SaeError("usage", "--submit, --partition, --time, --cpus-per-task and --sbatch go with --slurm");
      const sweep = loadSweep(file, { runsDir: opts.runsDir });
      const sweepArgs = [file, ...(opts.runsDir ? ["--runs-dir", opts.runsDir] : [])];
      if (opts.status) return printStatus(io, sweep);
      const jobs = Math.min(opts.jobs, sweep.runs.length);
      const threads = opts.threads ?? Math.max(1, Math.floor(os.availableParallelism() / jobs));
      if (opts.dryRun) return dryRun(io, sweep, jobs, threads);
      if (opts.index !== undefined) return trainOne(io, sweep, opts.index, opts.threads);
      if (opts.prepare) return prepare(io, sweep, opts.threads);
      writeSweepJson(sweep);
      if (opts.slurm) {
        const plan = writeSlurm(sweep, { partition: opts.partition, time: opts.time, cpusPerTask: opts.cpusPerTask, sbatch: opts.sbatch, sweepArgs });
        io.out(`wrote ${rel(plan.script)} (one array task per run) and ${rel(plan.submitScript)}`);
        if (plan.steps.length === 0) return io.out("every run is done; nothing to submit");
        for (const s of plan.steps) io.out(`  sbatch${s.afterPrevious ? " --dependency=afterok:<previous>" : ""} ${s.args.join(" ")}   # ${s.what}`);
        if (opts.submit) submitSlurm(plan, (l) => io.out(l));
        else io.out(`submit with: ${rel(plan.submitScript)}  (or: sae sweep ${file} --slurm ... --submit)`);
        return;
      }
      io.err(`sweep ${sweep.name}: ${count(sweep.runs.length, "run")} in ${rel(sweep.dir)}, ${jobs} at a time with ${count(threads, "thread")} each`);
      const t0 = performance.now();
      const s = await runLocal(sweep, { jobs, threads, sweepArgs, log: (l) => io.err(l) });
      const secs = (performance.now() - t0) / 1000;
      io.out(`sweep ${sweep.name}: ${s.done.length} trained, ${s.skipped.length} already done${s.failed.length ? `, ${s.failed.length} failed` : ""}${s.interrupted.length ? `, ${s.interrupted.length} interrupted` : ""}${s.notStarted.length ? `, ${s.notStarted.length} not started` : ""} in ${fmtTime(secs)}; ${rel(sweep.dir)}`);
      if (s.failed.length) {
        throw new SaeError("runtime", `${count(s.failed.length, "run")} failed: ${s.failed.map((f) => `${f.name} (${f.reason})`).join("; ")}`, `see ${rel(path.join(sweep.dir, "logs"))}; fix the cause and run the same command again (finished runs are kept)`);
      }
      if (s.stopped || s.interrupted.length || s.notStarted.length) {
        throw new SaeError("runtime", `the sweep stopped before every run finished`, `run the same command again to resume: sae sweep ${file}${opts.runsDir ? ` --runs-dir ${opts.runsDir}` : ""}`);
      }
      io.out(`compare them: sae report ${rel(sweep.dir)} --out ${rel(path.join(sweep.dir, "report"))}`);
    });
}

const rel = (p: string) => path.relative(process.cwd(), p) || ".";

function fmtTime(s: number): string {
  return s < 120 ? `${s.toFixed(0)} s` : `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
}

/** One run in this process: an array task, or a child of the local scheduler (which sends stop orders on stdin). */
async function trainOne(io: CliIo, sweep: Sweep, index: number, threads: number | undefined): Promise<void> {
  const run = runAt(sweep, index);
  // the local scheduler names the run it means: an edited sweep file may have moved it to another index
  const meant = process.env[RUN_ENV];
  if (meant !== undefined && meant !== run.name) throw new SaeError("usage", `--index ${index} is now run ${run.name}, not ${meant}: the sweep file changed while the sweep ran`, "run the sweep again");
  if (!fs.existsSync(path.join(sweep.dir, "sweep.json"))) writeSweepJson(sweep);
  const slurmCpus = Number(process.env.SLURM_CPUS_PER_TASK) || undefined;
  const engine = selectEngine(threads ?? slurmCpus ?? run.config.train.threads);
  const control = { stop: false };
  const supervised = process.env[CONTROL_ENV] === "stdin";
  const stop = () => {
    if (control.stop && !supervised) process.exit(130);
    control.stop = true;
  };
  // supervised: the terminal's Ctrl-C reaches the parent, which sends "stop" (then "abort")
  const onSigint = supervised ? () => {} : stop;
  process.on("SIGINT", onSigint);
  process.on("SIGTERM", stop);
  if (supervised) {
    let buf = "";
    process.stdin.setEncoding("utf8");
    process.stdin.on("data", (chunk: string) => {
      buf += chunk;
      for (let nl = buf.indexOf("\n"); nl >= 0; nl = buf.indexOf("\n")) {
        const order = buf.slice(0, nl).trim();
        buf = buf.slice(nl + 1);
        if (order === "stop") control.stop = true;
        if (order === "abort") process.exit(130);
      }
    });
    process.stdin.on("end", () => (control.stop = true)); // the parent is gone: stop cleanly
  }
  try {
    const r = await runMember(sweep, run, { engine, reporter: { log: (l) => io.err(l) }, control });
    if (r.outcome === "interrupted") io.out(`run ${run.name} interrupted at step ${r.status.step}; the same command resumes it`);
    else {
      io.out(`run ${run.name} ${r.outcome === "skipped" ? "was done already" : "done"}: ${rel(r.dir)}`);
      if (r.eval) printEval(io, r.eval);
    }
  } finally {
    process.off("SIGINT", onSigint);
    process.off("SIGTERM", stop);
    if (supervised) process.stdin.destroy();
  }
}

async function prepare(io: CliIo, sweep: Sweep, threads: number | undefined): Promise<void> {
  const engine = selectEngine(threads ?? (Number(process.env.SLURM_CPUS_PER_TASK) || undefined));
  let n = 0;
  for (const run of sweep.runs) {
    const h = run.finetune ? null : harvestDir(sweep.dir, run.config);
    if (h && ensureHarvested(run.config, h, engine, (l) => io.err(l))) n++;
  }
  io.out(n ? `harvested ${count(n, "dataset")} into ${rel(path.join(sweep.dir, "data"))}` : "the sweep's data is ready (nothing to harvest)");
}

function dryRun(io: CliIo, sweep: Sweep, jobs: number, threads: number): void {
  io.out(`sweep ${sweep.name}: ${count(sweep.runs.length, "run")} from ${rel(sweep.base)} into ${rel(sweep.dir)}; ${jobs} at a time, ${count(threads, "thread")} each`);
  const data = new Set<string>();
  for (const run of sweep.runs) {
    const h = run.finetune ? null : harvestDir(sweep.dir, run.config);
    if (h && !data.has(h) && !fs.existsSync(path.join(h, "manifest.json"))) {
      data.add(h);
      const m = run.config.data.model!;
      io.out(`  harvest ${path.basename(m.checkpoint)} layer ${m.layer} ${m.site} once into ${rel(h)}`);
    }
  }
  const width = Math.max(...sweep.runs.map((r) => r.name.length));
  for (const run of sweep.runs) {
    const st = memberState(sweep, run);
    const what = st.kind === "done" ? "done, skip" : st.kind === "resume" ? `resume at step ${st.step}` : st.kind === "restart" ? "start again (no checkpoint)" : "train";
    const steps = run.config.train.phases.reduce((n, p) => n + p.steps, 0);
    const detail = run.finetune ? `fine-tune of ${run.finetune.parent}${run.finetune.options.mode ? `, mode ${run.finetune.options.mode}` : ""}${run.finetune.options.freeze ? `, freeze ${run.finetune.options.freeze.join(",")}` : ""}` : Object.entries(run.varying).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(" ");
    io.out(`  ${String(run.index).padStart(3)}  ${run.name.padEnd(width)}  ${run.config.sae.variant.padEnd(9)} ${String(steps).padStart(6)} steps  ${what.padEnd(28)} ${detail}`);
  }
}

function printStatus(io: CliIo, sweep: Sweep): void {
  const width = Math.max(...sweep.runs.map((r) => r.name.length));
  const counts = new Map<string, number>();
  for (const run of sweep.runs) {
    const dir = path.join(sweep.dir, run.name);
    const st = memberState(sweep, run);
    const status = readStatus(dir);
    let state: string;
    if (st.kind === "new") state = run.finetune && readStatus(path.join(sweep.dir, run.finetune.parent))?.status !== "done" ? "waiting" : "pending";
    else if (st.kind === "done") state = "done";
    else {
      const holder = lockHolder(sweep, run);
      state = holder?.alive ? "running" : status?.status === "running" ? "killed" : status?.status ?? "unknown";
    }
    counts.set(state, (counts.get(state) ?? 0) + 1);
    const steps = status ? `${status.step}/${status.steps}` : `0/${run.config.train.phases.reduce((n, p) => n + p.steps, 0)}`;
    let detail = "";
    if (st.kind === "done") detail = oneLine(readEvalSafe(dir));
    else if (state === "failed") detail = status?.error ?? "";
    else if (state === "killed" || state === "interrupted") detail = st.kind === "resume" ? `resumes at step ${st.step}` : "starts again (no checkpoint)";
    else if (state === "running") detail = `pid ${lockHolder(sweep, run)!.pid} on ${lockHolder(sweep, run)!.host}`;
    else if (state === "waiting") detail = `after ${run.finetune!.parent}`;
    io.out(`${run.name.padEnd(width)}  ${state.padEnd(11)} ${steps.padStart(11)}  ${detail}`.trimEnd());
  }
  io.out(`${count(sweep.runs.length, "run")}: ${[...counts].map(([k, v]) => `${v} ${k}`).join(", ")}`);
}

function readEvalSafe(dir: string) {
  try {
    return JSON.parse(fs.readFileSync(path.join(dir, "eval.json"), "utf8"));
  } catch {
    return null;
  }
}
