import { Command, Option } from "commander";
import path from "node:path";
import { probeData } from "../data/index.ts";
import { loadConfig } from "../config/load.ts";
import { latestCheckpoint } from "../train/checkpoint.ts";
import { readStatus } from "../io/run.ts";
import { SaeError } from "../errors.ts";
import type { CliIo } from "./io.ts";
import { collect, nonNegativeFloat, pickRun, positiveFloat, positiveInt, runArgHelp } from "./common.ts";
import { engineOption, runTraining } from "./train.ts";
import type { EngineName } from "../engine/tfjs.ts";
import { ALL_MODES, finetuneConfig } from "../train/finetune.ts";

export function finetuneCommand(io: CliIo): Command {
  return new Command("finetune")
    .description("start a new run from a finished run's weights, with the penalty off and parts frozen")
    .argument("[run]", `the parent run: ${runArgHelp("finished")}`)
    .option("--freeze <groups>", "comma-separated groups or parameters that do not change: encoder, decoder, scale, threshold, or parameter names (W_enc, b_dec, ...)")
    .addOption(new Option("--mode <mode>", "train only what this mode trains (feature-suppression study): scale (s), unrotated_decoder (s, b_dec), decoder (s, W_dec, b_dec), encoder (the encoder and s: the negative control)").choices(ALL_MODES))
    .option("--steps <n>", "fine-tuning steps (default: 10% of the parent's)", positiveInt)
    .option("--lr <lr>", "learning rate (default: the parent's)", positiveFloat)
    .option("--penalty <coefficient>", "sparsity coefficient during the fine-tune (default 0: penalty off)", nonNegativeFloat)
    .option("--set <key=value>", "override a config key, e.g. train.phases... or sae.l1_coefficient (repeatable)", collect, [])
    .option("--run-id <id>", "name of the new run folder")
    .option("--runs-dir <dir>", "folder that holds runs", "runs")
    .option("--threads <n>", "CPU threads (default: all cores)", positiveInt)
    .addOption(engineOption())
    .addHelpText("after", `
The penalty is off (sparsity coefficient 0) unless --penalty turns it on. A mode that trains the scale s turns a standard run into a scaled one (s_i = ‖d_i‖, unit
decoder rows: the same SAE). A frozen group is bit-for-bit unchanged at the end.

Examples:
  sae finetune --freeze encoder                               # the latest finished run, encoder frozen
  sae finetune --mode decoder --steps 500                     # encoder frozen: the suppression fix (s trains)
  sae finetune latest~1 --freeze encoder                      # the finished run before the latest
  sae finetune 20261125-1815 --mode encoder                   # negative control: decoder frozen`)
    .action(async (arg: string | undefined, opts: { freeze?: string; mode?: string; steps?: number; lr?: number; penalty?: number; set: string[]; runId?: string; runsDir: string; threads?: number; engine?: EngineName }) => {
      const dir = pickRun(io, opts.runsDir, arg, "finished");
      if (!latestCheckpoint(dir)) throw new SaeError("usage", `run ${path.basename(dir)} has no checkpoint (status: ${readStatus(dir)?.status ?? "unknown"})`, "fine-tune a run that has trained; `sae runs` lists them");
      const parent = loadConfig(path.join(dir, "config.yaml"), [], { probe: probeData }).config;
      const freeze = opts.freeze ? opts.freeze.split(",").map((g) => g.trim()).filter(Boolean) : [];
      const base = finetuneConfig(parent, dir, { freeze, mode: opts.mode, steps: opts.steps, lr: opts.lr, penalty: opts.penalty, runsDir: opts.runsDir });
      await runTraining(io, base, [...opts.set, ...(opts.engine ? [`train.engine=${opts.engine}`] : [])], { runId: opts.runId, threads: opts.threads });
    });
}
