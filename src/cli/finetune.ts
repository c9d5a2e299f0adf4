import { Command, Option } from "commander";
import path from "node:path";
import { loadConfig } from "../config/load.ts";
import { FINETUNE_MODES, FREEZE_GROUPS } from "../config/schema.ts";
import { latestCheckpoint } from "../train/checkpoint.ts";
import { findRun, readStatus } from "../io/run.ts";
import { SaeError } from "../errors.ts";
import type { CliIo } from "./io.ts";
import { collect, nonNegativeFloat, positiveFloat, positiveInt } from "./common.ts";
import { runTraining } from "./train.ts";
import { finetuneConfig } from "../train/finetune.ts";

export function finetuneCommand(io: CliIo): Command {
  return new Command("finetune")
    .description("start a new run from a finished run's weights, with the penalty off and parts frozen")
    .argument("<run>", "the parent run (id, unique prefix, or folder)")
    .option("--freeze <groups>", `comma-separated groups that do not change: ${FREEZE_GROUPS.join(", ")}`)
    .addOption(new Option("--mode <mode>", "train only what this mode trains (feature-suppression study): scale (s), unrotated_decoder (s, b_dec), decoder (s, W_dec, b_dec), encoder (W_enc, b_enc, s: the negative control)").choices(FINETUNE_MODES))
    .option("--steps <n>", "fine-tuning steps (default: 10% of the parent's)", positiveInt)
    .option("--lr <lr>", "learning rate (default: the parent's)", positiveFloat)
    .option("--penalty <coefficient>", "sparsity coefficient during the fine-tune (default 0: penalty off)", nonNegativeFloat)
    .option("--set <key=value>", "override a config key, e.g. train.phases... or sae.l1_coefficient (repeatable)", collect, [])
    .option("--run-id <id>", "name of the new run folder")
    .option("--runs-dir <dir>", "folder that holds runs", "runs")
    .option("--threads <n>", "CPU threads (default: all cores)", positiveInt)
    .addHelpText("after", `
The penalty is off (sparsity coefficient 0) unless --penalty turns it on. A mode that trains the scale s turns a standard run into a scaled one (s_i = ‖d_i‖, unit
decoder rows: the same SAE). A frozen group is bit-for-bit unchanged at the end.

Examples:
  sae finetune 20261125-1815 --mode decoder --steps 500      # encoder frozen: the suppression fix
  sae finetune 20261125-1815 --freeze encoder                 # the same for a model without s
  sae finetune 20261125-1815 --mode encoder                   # negative control: decoder frozen`)
    .action(async (arg: string, opts: { freeze?: string; mode?: (typeof FINETUNE_MODES)[number]; steps?: number; lr?: number; penalty?: number; set: string[]; runId?: string; runsDir: string; threads?: number }) => {
      const dir = findRun(opts.runsDir, arg);
      if (!latestCheckpoint(dir)) throw new SaeError("usage", `run ${path.basename(dir)} has no checkpoint (status: ${readStatus(dir)?.status ?? "unknown"})`, "fine-tune a run that has trained; `sae runs` lists them");
      const parent = loadConfig(path.join(dir, "config.yaml")).config;
      const freeze = opts.freeze ? opts.freeze.split(",").map((g) => g.trim()).filter(Boolean) : [];
      const base = finetuneConfig(parent, dir, { freeze, mode: opts.mode, steps: opts.steps, lr: opts.lr, penalty: opts.penalty, runsDir: opts.runsDir });
      await runTraining(io, base, opts.set, { runId: opts.runId, threads: opts.threads });
    });
}
