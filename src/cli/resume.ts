import { Command } from "commander";
import path from "node:path";
import fs from "node:fs";
import { probeData } from "../data/index.ts";
import { loadConfig } from "../config/load.ts";
import { selectEngine } from "../engine/index.ts";
import { readStatus } from "../io/run.ts";
import { SaeError } from "../errors.ts";
import { RESUME_KEYS, checkResumeSets } from "../train/resume-config.ts";
import type { CliIo } from "./io.ts";
import { collect, pickRun, positiveInt, runArgHelp } from "./common.ts";
import { engineOption, execute } from "./train.ts";
import { resolveTfjs, type EngineName } from "../engine/tfjs.ts";

export function resumeCommand(io: CliIo): Command {
  return new Command("resume")
    .description("continue an interrupted, failed or dead run from its newest good checkpoint, exactly where it stopped (a run killed after its last step: redo its final evaluation)")
    .argument("[run]", runArgHelp("resumable"))
    .option("--runs-dir <dir>", "folder that holds runs", "runs")
    .option("--threads <n>", "CPU threads (default: the run's; the same count as before reproduces the uninterrupted run bit for bit)", positiveInt)
    .option("--set <key=value>", `change what may change between steps: ${RESUME_KEYS.join(", ")} (repeatable; train.lr carries into the phase in progress and the later ones)`, collect, [])
    .addOption(engineOption())
    .addHelpText("after", `
The run continues with the same data batches, optimizer state, dead-latent counters and schedule
position; metrics.csv rows after the checkpoint are dropped and logged again. A damaged newest
checkpoint is passed over (with a warning) for the one before it; a run with no checkpoint
trains again from step 0. One process works on a run at a time (runs/<id>/lock). A resume on
another engine than the run's is refused unless --engine asks for it (recorded in status.json).

Examples:
  sae resume                                      # the latest interrupted, failed or dead run
  sae resume 20261125-181500-quickstart-topk-3fa2
  sae resume latest --set train.lr=1e-4           # after a divergence: a smaller learning rate`)
    .action(async (arg: string | undefined, opts: { runsDir: string; threads?: number; set: string[]; engine?: EngineName }) => {
      checkResumeSets(opts.set);
      const dir = pickRun(io, opts.runsDir, arg, "resumable");
      const status = readStatus(dir);
      if (status?.status === "done" && fs.existsSync(path.join(dir, "final", "sae_weights.safetensors")) && fs.existsSync(path.join(dir, "eval.json"))) {
        throw new SaeError("usage", `run ${path.basename(dir)} is done; there is nothing to resume`, "`sae finetune` starts a new run from it");
      }
      const { config } = loadConfig(path.join(dir, "config.yaml"), opts.set, { probe: probeData });
      // the thread count the run last used, unless asked for another
      const last = status?.history?.at(-1);
      const setThreads = opts.set.some((s) => s.startsWith("train.threads="));
      const threads = opts.threads ?? (setThreads ? config.train.threads : undefined) ?? (last?.engine === "native" ? last.threads : undefined) ?? config.train.threads;
      const engine = selectEngine(threads);
      // checkpoints are the same on every engine: a run may continue on another one when asked
      await execute(io, config, dir, path.basename(dir), engine, true, await resolveTfjs(opts.engine ?? config.train.engine), { allowEngineChange: opts.engine !== undefined || opts.threads !== undefined || setThreads });
    });
}
