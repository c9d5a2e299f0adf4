// A sweep as Slurm job arrays: one array task per run, each running
// `sae sweep FILE --index $SLURM_ARRAY_TASK_ID` (the same command the local scheduler runs), so a
// task that is cancelled or fails can be resubmitted and resumes where its run stopped. Fine-tunes
// train after their parents: one array per stage, each submitted with --dependency=afterok on the
// one before; a language-model sweep harvests its data first in a job of its own (--prepare).
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { writeFileAtomic } from "../io/run.ts";
import { SaeError } from "../errors.ts";
import { harvestDir } from "./data.ts";
import { memberState } from "./member.ts";
import type { Sweep } from "./spec.ts";
import { count } from "../text.ts";

const BIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../bin/sae.js");

export interface SlurmOptions {
  partition?: string;
  time?: string;
  cpusPerTask?: number;
  /** further sbatch options, written as #SBATCH lines (e.g. --mem=8G) */
  sbatch: string[];
  /** the arguments that load the same sweep: the file and --runs-dir when given */
  sweepArgs: string[];
}

export interface SlurmPlan {
  script: string;
  submitScript: string;
  /** the sbatch command lines in order; `$PREV` stands for the job id of the one before */
  steps: { what: string; args: string[]; afterPrevious: boolean }[];
}

const quote = (s: string) => (/^[A-Za-z0-9_./=:,@%+-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`);

/** Writes slurm/sweep.sbatch and slurm/submit.sh into the sweep folder for the runs not yet done. */
export function writeSlurm(sweep: Sweep, o: SlurmOptions): SlurmPlan {
  const dir = path.join(sweep.dir, "slurm");
  fs.mkdirSync(dir, { recursive: true });
  fs.mkdirSync(path.join(sweep.dir, "logs"), { recursive: true });
  const cmd = [process.execPath, BIN, "sweep", ...o.sweepArgs.map((a, i) => (i === 0 ? path.resolve(a) : a))].map(quote).join(" ");
  const header = [
    "#!/bin/bash",
    `#SBATCH --job-name=sae-${sweep.name}`,
    `#SBATCH --output=${path.join(sweep.dir, "logs", "slurm-%A_%a.out")}`,
    ...(o.cpusPerTask ? [`#SBATCH --cpus-per-task=${o.cpusPerTask}`] : []),
    ...(o.partition ? [`#SBATCH --partition=${o.partition}`] : []),
    ...(o.time ? [`#SBATCH --time=${o.time}`] : []),
    ...o.sbatch.map((a) => `#SBATCH ${a}`),
    "#SBATCH --signal=B:TERM@60",
  ];
  const script = path.join(dir, "sweep.sbatch");
  writeFileAtomic(script, [
    ...header,
    `# sweep ${sweep.name}: ${count(sweep.runs.length, "run")} (${sweep.file}); written by sae sweep --slurm`,
    "# An array task trains one run: sae sweep FILE --index $SLURM_ARRAY_TASK_ID (a run that is done is",
    "# skipped, an interrupted one resumes). SAE_SWEEP_PREPARE=1 harvests the shared data instead.",
    "set -euo pipefail",
    `cd ${quote(process.cwd())}`,
    'if [ "${SAE_SWEEP_PREPARE:-0}" = 1 ]; then',
    `  exec ${cmd} --prepare`,
    "fi",
    `exec ${cmd} --index "$SLURM_ARRAY_TASK_ID"`,
    "",
  ].join("\n"));
  fs.chmodSync(script, 0o755);

  const steps: SlurmPlan["steps"] = [];
  const pending = sweep.runs.filter((r) => memberState(sweep, r).kind !== "done");
  const needsData = pending.some((r) => !r.finetune && harvestDir(sweep.dir, r.config) !== null && !fs.existsSync(path.join(harvestDir(sweep.dir, r.config)!, "manifest.json")));
  if (needsData) steps.push({ what: "harvest the shared activations", args: ["--parsable", "--job-name", `sae-${sweep.name}-data`, "--export", "ALL,SAE_SWEEP_PREPARE=1", script], afterPrevious: false });
  const stages = [...new Set(pending.map((r) => r.stage))].sort((a, b) => a - b);
  for (const stage of stages) {
    const idx = pending.filter((r) => r.stage === stage).map((r) => r.index);
    const what = stage === 0 ? count(idx.length, "run") : `${count(idx.length, "fine-tune")} (stage ${stage})`;
    steps.push({ what, args: ["--parsable", `--array=${ranges(idx)}`, ...(steps.length ? ["--kill-on-invalid-dep=yes"] : []), script], afterPrevious: steps.length > 0 });
  }
  const submitScript = path.join(dir, "submit.sh");
  const lines = ["#!/bin/bash", `# submits sweep ${sweep.name}: ${steps.map((s) => s.what).join(", then ") || "nothing (every run is done)"}`, "set -euo pipefail", `cd ${quote(process.cwd())}`, "prev="];
  for (const s of steps) {
    const dep = s.afterPrevious ? ' --dependency=afterok:"${prev%%;*}"' : "";
    lines.push(`prev=$(sbatch${dep} ${s.args.map(quote).join(" ")})`, `echo "submitted job $prev: ${s.what}"`);
  }
  writeFileAtomic(submitScript, lines.join("\n") + "\n");
  fs.chmodSync(submitScript, 0o755);
  return { script, submitScript, steps };
}

/** Runs the plan's sbatch commands; returns the job ids. */
export function submitSlurm(plan: SlurmPlan, log: (line: string) => void): string[] {
  const ids: string[] = [];
  for (const s of plan.steps) {
    const args = s.afterPrevious ? [`--dependency=afterok:${ids[ids.length - 1]}`, ...s.args] : s.args;
    let out: string;
    try {
      out = execFileSync("sbatch", args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
    } catch (e) {
      const err = e as NodeJS.ErrnoException & { stderr?: string };
      if (err.code === "ENOENT") throw new SaeError("runtime", "sbatch is not on the PATH: --submit needs a Slurm login node", `submit later with ${plan.submitScript}`);
      throw new SaeError("runtime", `sbatch failed: ${(err.stderr ?? err.message).trim().split("\n")[0]}`, `the script is ${plan.script}; check the partition and time limit`);
    }
    const id = out.trim().split(";")[0];
    ids.push(id);
    log(`submitted job ${id}: ${s.what}`);
  }
  return ids;
}

/** [0,1,2,5,7,8] → "0-2,5,7-8" */
export function ranges(idx: number[]): string {
  const out: string[] = [];
  for (let i = 0; i < idx.length; ) {
    let j = i;
    while (j + 1 < idx.length && idx[j + 1] === idx[j] + 1) j++;
    out.push(i === j ? String(idx[i]) : `${idx[i]}-${idx[j]}`);
    i = j + 1;
  }
  return out.join(",");
}
