import { Command, Option } from "commander";
import path from "node:path";
import { probeData } from "../data/index.ts";
import { loadConfig } from "../config/load.ts";
import { VARIANTS, keyReaders, variantDef } from "../sae/index.ts";
import { freezeNames, modeNames, modeTrains } from "../sae/freeze.ts";
import type { Config } from "../config/schema.ts";
import { latestCheckpoint } from "../train/checkpoint.ts";
import { readStatus } from "../io/run.ts";
import { SaeError } from "../errors.ts";
import type { CliIo } from "./io.ts";
import { collect, nonNegativeFloat, pickRun, positiveFloat, positiveInt, runArgHelp } from "./common.ts";
import { engineOption, runTraining } from "./train.ts";
import type { EngineName } from "../engine/tfjs.ts";

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
      const known = freezeNames(specsOf(parent, parent.sae.variant));
      for (const g of freeze) {
        if (!known.includes(g)) throw new SaeError("usage", `--freeze ${opts.freeze}: a ${parent.sae.variant} SAE has no group or parameter "${g}"`, `freeze any of: ${known.join(", ")}`);
      }
      if (freeze.length && opts.mode) throw new SaeError("usage", "--freeze and --mode both say what trains; give one");
      const parentSteps = parent.train.phases.reduce((n, p) => n + p.steps, 0);
      const steps = opts.steps ?? Math.max(1, Math.round(parentSteps / 10));
      const variant = opts.mode ? variantFor(parent, opts.mode) : parent.sae.variant;
      const phase = { name: "finetune", steps, sparsity_coefficient: opts.penalty ?? 0, warmup_steps: 0, ...(opts.lr ? { lr: opts.lr } : {}), ...(freeze.length ? { freeze } : {}), ...(opts.mode ? { mode: opts.mode } : {}) };
      const base = {
        ...parent,
        name: `${parent.name}-ft`,
        runs_dir: opts.runsDir,
        init_from: path.resolve(dir),
        sae: keysReadBy(variant, { ...parent.sae, variant }),
        train: { ...withoutSteps(parent.train), phases: [phase] },
      };
      await runTraining(io, base, [...opts.set, ...(opts.engine ? [`train.engine=${opts.engine}`] : [])], { runId: opts.runId, threads: opts.threads });
    });
}

/** every fine-tuning mode of some variant */
const ALL_MODES = [...new Set(VARIANTS.flatMap(modeNames))];

function specsOf(c: Config, variant: string) {
  return variantDef(variant).specs({ D: c.data.d_in, H: c.sae.d_sae }, c.sae);
}

/**
 * The variant a fine-tune with this mode trains: the parent's own when it has the mode, else one
 * that has it and converts the parent's parameters exactly (a standard run becomes scaled).
 */
function variantFor(parent: Config, mode: string): string {
  const own = parent.sae.variant;
  if (modeTrains(variantDef(own), specsOf(parent, own), mode)) return own;
  const to = VARIANTS.find((v) => v.convertFrom?.[own] && modeTrains(v, specsOf(parent, v.name), mode));
  if (to) return to.name;
  throw new SaeError("usage", `--mode ${mode}: a ${own} run has no such mode (its modes: ${modeNames(variantDef(own)).join(", ")})`, "use --freeze with parameter groups instead (see --help)");
}

function withoutSteps<T extends { steps?: number }>(t: T): Omit<T, "steps"> {
  const { steps: _s, ...rest } = t;
  return rest;
}

/** The parent's config.yaml spells out every sae key; the ones this variant ignores would each warn "is ignored" as if the user had set them. */
function keysReadBy(variant: string, sae: Record<string, unknown>): Record<string, unknown> {
  const readers = keyReaders();
  return Object.fromEntries(Object.entries(sae).filter(([k]) => !(k in readers) || readers[k].includes(variant)));
}
