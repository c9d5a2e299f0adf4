import { Command } from "commander";
import path from "node:path";
import { probeData } from "../data/index.ts";
import { loadConfig } from "../config/load.ts";
import { selectEngine } from "../engine/index.ts";
import { readStatus } from "../io/run.ts";
import { SaeError } from "../errors.ts";
import type { CliIo } from "./io.ts";
import { pickRun, positiveInt, runArgHelp } from "./common.ts";
import { engineOption, execute } from "./train.ts";
import { resolveTfjs, type EngineName } from "../engine/tfjs.ts";

export function resumeCommand(io: CliIo): Command {
  return new Command("resume")
    .description("continue an interrupted or failed run from its latest checkpoint, exactly where it stopped")
    .argument("[run]", runArgHelp("resumable"))
    .option("--runs-dir <dir>", "folder that holds runs", "runs")
    .option("--threads <n>", "CPU threads (default: all cores; the same count as before reproduces the uninterrupted run bit for bit)", positiveInt)
    .addOption(engineOption())
    .addHelpText("after", `
The run continues with the same data batches, optimizer state, dead-latent counters and schedule
position; metrics.csv rows after the checkpoint are dropped and logged again.

Examples:
  sae resume                                      # the latest interrupted or failed run
  sae resume 20261125-181500-quickstart-topk-3fa2`)
    .action(async (arg: string | undefined, opts: { runsDir: string; threads?: number; engine?: EngineName }) => {
      const dir = pickRun(io, opts.runsDir, arg, "resumable");
      const status = readStatus(dir);
      if (status?.status === "done") throw new SaeError("usage", `run ${path.basename(dir)} is done; there is nothing to resume`, "`sae finetune` starts a new run from it");
      const { config } = loadConfig(path.join(dir, "config.yaml"), [], { probe: probeData });
      const engine = selectEngine(opts.threads ?? config.train.threads);
      // checkpoints are the same on both engines: a run may continue on the other one
      await execute(io, config, dir, path.basename(dir), engine, true, await resolveTfjs(opts.engine ?? config.train.engine));
    });
}
