import { Command } from "commander";
import fs from "node:fs";
import path from "node:path";
import { loadConfig } from "../config/load.ts";
import { selectEngine } from "../engine/index.ts";
import { findRun, writeFileAtomic } from "../io/run.ts";
import { finalConfig, loadFinal } from "../io/weights.ts";
import { createModel } from "../sae/index.ts";
import { createSource } from "../data/index.ts";
import { evaluate, type EvalResult } from "../eval/metrics.ts";
import type { CliIo } from "./io.ts";
import { fmtNum, nonNegativeInt, positiveInt } from "./common.ts";
import { downstreamEval, planDownstream } from "../eval/downstream.ts";
import { SITES } from "../config/schema.ts";
import type { Site } from "../lm/llama.ts";
import { SaeError } from "../errors.ts";
import { engineOption } from "./train.ts";
import { resolveTfjs, type EngineName } from "../engine/tfjs.ts";
import { tfjsInferenceModel } from "../train/tfjs-stepper.ts";

export function evalCommand(io: CliIo): Command {
  return new Command("eval")
    .description("evaluate a finished run on its held-out split; prints a table and writes runs/<run-id>/eval.json")
    .argument("<run>", "run id (or a unique prefix of one, or the run's folder)")
    .option("--runs-dir <dir>", "folder that holds runs", "runs")
    .option("--tokens <n>", "evaluation tokens (default: the run's data.eval_tokens)", positiveInt)
    .option("--json", "print the result as JSON")
    .option("--threads <n>", "CPU threads (default: all cores)", positiveInt)
    .option("--model <checkpoint>", "splice the SAE into this llama2.c model and report the downstream loss (default: the model the run's data came from)")
    .option("--layer <n>", "the model layer the SAE reads (default: from the run's data)", nonNegativeInt)
    .option("--site <site>", `the site at that layer: ${SITES.join(", ")} (default: from the run's data)`)
    .option("--sequences <n>", "held-out sequences for the downstream loss", positiveInt, 64)
    .addOption(engineOption())
    .addHelpText("after", `
Examples:
  sae eval 20261125-181500-quickstart-topk-3fa2
  sae eval 20261125 --json
  sae eval 20261125-aidreams --model ../shared/models/aidreams260K.bin --sequences 128`)
    .action(async (arg: string, opts: { runsDir: string; tokens?: number; json?: boolean; threads?: number; model?: string; layer?: number; site?: string; sequences: number; engine?: EngineName }) => {
      if (opts.site !== undefined && !(SITES as readonly string[]).includes(opts.site)) {
        throw new SaeError("usage", `--site ${opts.site}: expected one of ${SITES.join(", ")}`);
      }
      const dir = findRun(opts.runsDir, arg);
      const config = finalConfig(dir, loadConfig(path.join(dir, "config.yaml")).config);
      const engine = selectEngine(opts.threads ?? config.train.threads);
      const tfjs = await resolveTfjs(opts.engine ?? config.train.engine);
      const model = tfjs ? tfjsInferenceModel(tfjs.tf, config, createModel(config)) : createModel(config);
      if (tfjs) io.err(`forward passes: ${tfjs.reason}`);
      const p = loadFinal(dir, model);
      const data = createSource(config, engine.engine);
      const Xe = data.evalSet(opts.tokens ?? config.data.eval_tokens);
      const N = Xe.length / config.data.d_in;
      const result = evaluate(engine.engine, model, p, Xe, N, data.groundTruth());
      const plan = planDownstream(config, data, engine.engine, { checkpoint: opts.model && path.resolve(opts.model), layer: opts.layer, site: opts.site as Site | undefined, sequences: opts.sequences });
      if (plan) result.downstream = downstreamEval({ ...plan, sae: model, params: p });
      // keep the per-phase evaluations training wrote; the rest is this evaluation
      const phases = (readEval(dir) as { phases?: unknown } | null)?.phases;
      writeFileAtomic(path.join(dir, "eval.json"), JSON.stringify({ run: path.basename(dir), units: "raw input (scale folded into the weights)", ...result, ...(phases ? { phases } : {}) }, null, 2) + "\n");
      if (opts.json) io.out(JSON.stringify(result, null, 2));
      else {
        io.out(`run ${path.basename(dir)} (${config.sae.variant}, D=${config.data.d_in}, H=${config.sae.d_sae}), ${N} held-out tokens`);
        printEval(io, result);
      }
    });
}

export function printEval(io: CliIo, r: EvalResult): void {
  const rows: [string, string, string][] = [
    ["mse", fmtNum(r.mse), "Σ_d (x − x̂)² per token"],
    ["fvu", fmtNum(r.fvu), "fraction of variance unexplained (centred)"],
    ["explained_variance", fmtNum(r.explained_variance), "1 − fvu"],
    ["l0", r.l0.toFixed(2), "active latents per token"],
    ["l1", fmtNum(r.l1), "Σ_i f_i‖d_i‖ per token"],
    ["dead_frac", pct(r.dead_frac), "latents that never fire on the eval set"],
    ["dense_frac", pct(r.dense_frac), "latents firing on > 10% of tokens"],
    ["l2_ratio", fmtNum(r.l2_ratio), "mean ‖x̂‖/‖x‖"],
    ["gamma", fmtNum(r.gamma), "relative reconstruction bias (< 1: shrinkage)"],
    ["cosine", fmtNum(r.cosine), "mean cos(x, x̂)"],
  ];
  if (r.ground_truth) {
    const g = r.ground_truth;
    rows.push(["mmcs_recall", fmtNum(g.mmcs_recall), `mean best cosine per true feature (${g.n_features})`]);
    rows.push(["mmcs_precision", fmtNum(g.mmcs_precision), "mean best cosine per latent"]);
    rows.push(["recovered_0_9", pct(g.recovered_0_9), "true features matched at cosine > 0.9"]);
  }
  const ds = r.downstream;
  if (ds) {
    rows.push(["ce_clean", fmtNum(ds.ce_clean), `next-token cross-entropy of ${ds.model.split("/").pop()} (${ds.tokens} predictions)`]);
    rows.push(["ce_sae", fmtNum(ds.ce_sae), `with the SAE at layer ${ds.layer} ${ds.site}`]);
    rows.push(["ce_zero_ablation", fmtNum(ds.ce_zero_ablation), "with the activation zeroed"]);
    rows.push(["ce_mean_ablation", fmtNum(ds.ce_mean_ablation), "with the activation replaced by its mean"]);
    rows.push(["ce_loss_recovered", fmtNum(ds.ce_loss_recovered), "(ce_zero − ce_sae)/(ce_zero − ce_clean)"]);
    rows.push(["ce_loss_recovered_mean", fmtNum(ds.ce_loss_recovered_mean_ablation), "the same against mean ablation"]);
    rows.push(["delta_loss", fmtNum(ds.delta_loss), "ce_sae − ce_clean"]);
    rows.push(["kl_sae", fmtNum(ds.kl_sae), "KL(clean ‖ with SAE) per token"]);
    rows.push(["kl_score", fmtNum(ds.kl_score), "(kl_zero − kl_sae)/kl_zero"]);
  }
  const w = Math.max(...rows.map((r) => r[0].length));
  const v = Math.max(...rows.map((r) => r[1].length));
  for (const [k, val, what] of rows) io.out(`  ${k.padEnd(w)}  ${val.padStart(v)}  ${what}`);
  io.out(`  density (latents per decade of firing rate): ${Object.entries(r.density_histogram).map(([k, n]) => `${k} ${n}`).join(", ")}`);
}

function pct(x: number): string {
  return `${(100 * x).toFixed(2)}%`;
}

export function readEval(dir: string): EvalResult | null {
  try {
    return JSON.parse(fs.readFileSync(path.join(dir, "eval.json"), "utf8")) as EvalResult;
  } catch {
    return null;
  }
}
