// sae export (a run → a SAELens or sparsify folder) and sae import (such a folder → a run that
// `sae eval` and `sae finetune` take like any other).
import { Command, Option } from "commander";
import path from "node:path";
import { configToYaml, loadConfig } from "../config/load.ts";
import { selectEngine } from "../engine/index.ts";
import { createRunDir, newRunId, nextRunSeq, removeRunDir, writeEval, writeFileAtomic, writeStatus } from "../io/run.ts";
import { finalConfig, fromSaeLens, saveFinal } from "../sae/weights.ts";
import { exportRun, importFolder, type ExportFormat, type ImportedSae, type RunFacts } from "../sae/exchange.ts";
import type { Engine } from "../engine/types.ts";
import { knobText, type SaeModel } from "../sae/variant.ts";
import { createModel, variantDef } from "../sae/index.ts";
import { ParamSet } from "../sae/params.ts";
import { foldScale } from "../sae/init.ts";
import { createSource, estimateScale, probeData, sequenceStart } from "../data/index.ts";
import { recordedSource } from "../data/store.ts";
import { saveCheckpoint } from "../train/checkpoint.ts";
import { evaluate } from "../eval/metrics.ts";
import { SaeError } from "../errors.ts";
import type { CliIo } from "./io.ts";
import type { Config } from "../config/schema.ts";
import { collect, pickRun, positiveInt, runArgHelp } from "./common.ts";
import { printEval, readEval } from "./eval.ts";

export function exportCommand(io: CliIo): Command {
  return new Command("export")
    .description("write a finished run's SAE in a peer tool's folder format (input scale folded in: raw activations go in)")
    .argument("[run]", runArgHelp("finished"))
    .addOption(new Option("--format <format>", "saelens: sae_weights.safetensors + cfg.json (SAELens v6, every variant; batchtopk as jumprelu); sparsify: sae.safetensors + cfg.json (TopK)").choices(["saelens", "sparsify"]).default("saelens"))
    .requiredOption("--out <dir>", "output folder (must not exist, or be empty)")
    .option("--runs-dir <dir>", "folder that holds runs", "runs")
    .addHelpText("after", `
Examples:
  sae export --out exported/latest                # the latest finished run, SAELens layout
  sae export 20261125-aidreams --format saelens --out exported/aidreams-l2
  sae export 20261125-aidreams --format sparsify --out exported/blocks.2`)
    .action((arg: string | undefined, opts: { format: ExportFormat; out: string; runsDir: string }) => {
      const dir = pickRun(io, opts.runsDir, arg, "finished");
      const config = finalConfig(dir, loadConfig(path.join(dir, "config.yaml"), [], { probe: probeData }).config);
      const files = exportRun(dir, config, opts.format, opts.out, runFacts(dir, config));
      io.out(`wrote ${files.join(" and ")} (${opts.format}) to ${opts.out}`);
    });
}

/** what training and evaluation did, as the export states it (docs/downstream.md) */
function runFacts(dir: string, config: Config): RunFacts {
  const ds = readEval(dir)?.downstream;
  // eval.json written before conventions existed used the sae one
  const downstream = ds ? { convention: ds.convention ?? "sae", special_token_ids: ds.special_token_ids ?? [] } : null;
  const source = config.data.source === "file" ? recordedSource(config.data.file!.path) : null;
  return { source, sequences: sequenceStart(config), downstream };
}

export function importCommand(io: CliIo): Command {
  return new Command("import")
    .description("turn a SAELens or sparsify SAE folder into a run (final weights, a checkpoint, eval.json) for sae eval and sae finetune")
    .argument("<folder>", "folder with cfg.json and sae_weights.safetensors (SAELens) or sae.safetensors (sparsify)")
    .requiredOption("--config <file>", "a YAML experiment whose data: section is the data this SAE reads (its sae: keys are replaced by the folder's)")
    .option("--set <key=value>", "override a config key (repeatable)", collect, [])
    .option("--run-id <id>", "name of the run folder")
    .option("--runs-dir <dir>", "folder that holds runs (default: the config's runs_dir)")
    .option("--threads <n>", "CPU threads (default: all cores)", positiveInt)
    .addHelpText("after", `
Examples:
  sae import exported/aidreams-l2 --config configs/aidreams.yaml
  sae finetune <the new run> --mode decoder --steps 300`)
    .action((folder: string, opts: { config: string; set: string[]; runId?: string; runsDir?: string; threads?: number }) => {
      const imp = importFolder(folder);
      // values as JSON, which --set reads as YAML: lists (matryoshka_prefixes) survive
      const sets = Object.entries(imp.sae).filter(([, v]) => v !== undefined).map(([k, v]) => `sae.${k}=${typeof v === "string" ? v : JSON.stringify(v)}`);
      if (opts.runsDir !== undefined) sets.push(`runs_dir=${opts.runsDir}`);
      const { config } = loadConfig(opts.config, [...sets, ...opts.set], { probe: probeData });
      if (config.data.d_in !== imp.D) throw new SaeError("usage", `${folder} is an SAE for D = ${imp.D}; the data of ${opts.config} has D = ${config.data.d_in}`, "give the config of the data this SAE was trained on");
      const engine = selectEngine(opts.threads ?? config.train.threads);
      const model = createModel(config);
      const raw = fromSaeLens(imp.tensors, imp.file, model, "the folder does not match its cfg.json; re-export it");
      const id = opts.runId ?? newRunId(`imported-${path.basename(path.resolve(folder))}`.replace(/[^A-Za-z0-9_.-]/g, "-"), config.sae.variant);
      const dir = createRunDir(config.runs_dir, id);
      try {
        importInto(io, dir, id, folder, imp, config, engine.engine, model, raw);
      } catch (err) {
        removeRunDir(dir); // a failed import leaves no folder that blocks its id
        throw err;
      }
    });
}

/** Writes the imported run: config, final/, a checkpoint, eval.json, then status done (last, so that a crash leaves no run that claims to be whole). */
function importInto(io: CliIo, dir: string, id: string, folder: string, imp: ImportedSae, config: Config, engine: Engine, model: SaeModel, raw: ParamSet): void {
  writeFileAtomic(path.join(dir, "config.yaml"), configToYaml(config));
  const data = createSource(config, engine);
  // training units: the data's input scale c, estimated as a fresh run would; the checkpoint
  // holds the weights unfolded into those units (W_enc/c, W_dec·c, b_dec·c) for fine-tuning
  const n = config.data.norm_estimate_tokens;
  const sample = data.estimationSample(n);
  const c = estimateScale(sample, sample.length / imp.D, imp.D, config.data.normalize);
  saveFinal(dir, model, raw, config, c);
  const p = raw.like();
  p.copyFrom(raw);
  foldScale(p, 1 / c);
  const blank = () => new ParamSet(model.specs);
  saveCheckpoint(dir, { p, m: blank(), v: blank(), sinceFired: new Float64Array(imp.H), step: 0, tokens: 0, adamT: 0, scale: c, batchOffset: 0 }, null, config);
  const Xe = data.evalSet(config.data.eval_tokens);
  const result = evaluate(engine, model, raw, Xe, Xe.length / imp.D, data.groundTruth());
  writeEval(dir, result, { imported_from: path.resolve(folder) });
  const now = new Date().toISOString();
  // the sparsity setting as the folder states it; "-" when it states none (the config's is a default)
  const def = variantDef(config.sae.variant);
  const knob = imp.sae[def.knob.key] !== undefined ? knobText(def, config.sae) : "-";
  writeStatus(dir, { id, status: "done", variant: config.sae.variant, started: now, finished: now, step: 0, steps: 0, tokens: 0, scale: c, seq: nextRunSeq(config.runs_dir), engine: `imported from ${path.resolve(folder)} (${imp.format})`, knob });
  io.out(`imported ${imp.format} ${config.sae.variant} SAE (D=${imp.D}, H=${imp.H}) as run ${id}: ${dir}`);
  printEval(io, result);
}
