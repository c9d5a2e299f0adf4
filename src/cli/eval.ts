import { Command, Option } from "commander";
import path from "node:path";
import { loadConfig } from "../config/load.ts";
import { selectEngine } from "../engine/index.ts";
import { readEvalFile, writeEval } from "../io/run.ts";
import { finalConfig, loadFinal } from "../sae/weights.ts";
import { createModel } from "../sae/index.ts";
import { createSource, probeData } from "../data/index.ts";
import { evaluate, type EvalResult } from "../eval/metrics.ts";
import type { CliIo } from "./io.ts";
import { fmtNum, nonNegativeInt, pickRun, positiveInt, runArgHelp } from "./common.ts";
import { DOWNSTREAM_CONVENTIONS, downstreamEvals, planDownstream, type Convention, type DownstreamResult } from "../eval/downstream.ts";
import { SITES } from "../config/schema.ts";
import type { Site } from "../lm/llama.ts";
import { SaeError } from "../errors.ts";
import { acquireRunLock } from "../io/lock.ts";
import { engineOption } from "./train.ts";
import { resolveTfjs, type EngineName } from "../engine/tfjs.ts";
import { tfjsInferenceModel } from "../train/tfjs-stepper.ts";

export function evalCommand(io: CliIo): Command {
  return new Command("eval")
    .description("evaluate a finished run on its held-out split; prints a table and writes runs/<run-id>/eval.json")
    .argument("[run]", runArgHelp("finished"))
    .option("--runs-dir <dir>", "folder that holds runs", "runs")
    .option("--tokens <n>", "evaluation tokens (default: the run's data.eval_tokens)", positiveInt)
    .option("--json", "print the result as JSON")
    .option("--threads <n>", "CPU threads (default: all cores)", positiveInt)
    .option("--model <checkpoint>", "splice the SAE into this llama2.c model and report the downstream loss (default: the model the run's data came from)")
    .option("--layer <n>", "the model layer the SAE reads (default: from the run's data)", nonNegativeInt)
    .option("--site <site>", `the site at that layer: ${SITES.join(", ")} (default: from the run's data)`)
    .option("--sequences <n>", "held-out sequences for the downstream loss", positiveInt, 64)
    .addOption(new Option("--convention <name>", "which positions the downstream loss patches and scores (docs/downstream.md); all: the three side by side (default: the run's eval.downstream_convention)").choices([...DOWNSTREAM_CONVENTIONS, "all"]))
    .addOption(engineOption())
    .addHelpText("after", `
Examples:
  sae eval                                        # the latest finished run
  sae eval latest~1 --json                        # the one before it
  sae eval 20261125-181500-quickstart-topk-3fa2
  sae eval 20261125 --json
  sae eval 20261125-aidreams --model ../shared/models/aidreams260K.bin --sequences 128
  sae eval 20261125-aidreams --convention all`)
    .action(async (arg: string | undefined, opts: { runsDir: string; tokens?: number; json?: boolean; threads?: number; model?: string; layer?: number; site?: string; sequences: number; convention?: Convention | "all"; engine?: EngineName }) => {
      if (opts.site !== undefined && !(SITES as readonly string[]).includes(opts.site)) {
        throw new SaeError("usage", `--site ${opts.site}: expected one of ${SITES.join(", ")}`);
      }
      const dir = pickRun(io, opts.runsDir, arg, "finished");
      // eval.json has one writer at a time; a read-only run is evaluated all the same
      const lock = acquireRunLock(dir, "eval", (l) => io.err(l), { readOnlyOk: true });
      try {
        await evalRun(io, dir, opts);
      } finally {
        lock.release();
      }
    });
}

async function evalRun(io: CliIo, dir: string, opts: { tokens?: number; json?: boolean; threads?: number; model?: string; layer?: number; site?: string; sequences: number; convention?: Convention | "all"; engine?: EngineName }): Promise<void> {
  const config = finalConfig(dir, loadConfig(path.join(dir, "config.yaml"), [], { probe: probeData }).config);
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
  if (!plan && opts.convention) throw new SaeError("usage", `--convention ${opts.convention}: the run's data names no language model, so there is no downstream loss`, "pass --model CHECKPOINT (with --layer and --site)");
  if (plan) {
    const own = config.eval.downstream_convention;
    const wanted = !opts.convention ? [own] : opts.convention === "all" ? DOWNSTREAM_CONVENTIONS : [opts.convention];
    const results = downstreamEvals({ ...plan, sae: model, params: p }, wanted);
    // with all: `downstream` stays the run's own convention, and every one is kept beside it
    result.downstream = results.find((r) => r.convention === own) ?? results[0];
    if (opts.convention === "all") result.downstream_by_convention = Object.fromEntries(results.map((r) => [r.convention, r]));
  }
  // printed first: a run that cannot be written to (read-only) still shows its metrics
  if (opts.json) io.out(JSON.stringify(result, null, 2));
  else {
    io.out(`run ${path.basename(dir)} (${config.sae.variant}, D=${config.data.d_in}, H=${config.sae.d_sae}), ${N} held-out tokens`);
    printEval(io, result);
  }
  // keep the per-phase evaluations training wrote and the summary `sae features` wrote; the rest is this evaluation
  const { phases, features } = (readEval(dir) as { phases?: unknown; features?: unknown } | null) ?? {};
  writeEval(dir, { ...result, ...(phases ? { phases } : {}), ...(features ? { features } : {}) });
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
  if (ds && !r.downstream_by_convention) {
    rows.push(["ce_clean", fmtNum(ds.ce_clean), `next-token cross-entropy of ${ds.model.split("/").pop()} (${ds.tokens} predictions, ${ds.convention ?? "sae"} convention)`]);
    for (const [k, , what] of DOWNSTREAM_ROWS.slice(1)) rows.push([k, fmtNum(downstreamValue(ds, k)), what(ds)]);
  }
  const w = Math.max(...rows.map((r) => r[0].length));
  const v = Math.max(...rows.map((r) => r[1].length));
  for (const [k, val, what] of rows) io.out(`  ${k.padEnd(w)}  ${val.padStart(v)}  ${what}`);
  io.out(`  density (latents per decade of firing rate): ${Object.entries(r.density_histogram).map(([k, n]) => `${k} ${n}`).join(", ")}`);
  if (r.downstream_by_convention) printConventions(io, r.downstream_by_convention);
}

/** the downstream rows: name, the result's field, what it is */
const DOWNSTREAM_ROWS: [string, keyof DownstreamResult, (d: DownstreamResult) => string][] = [
  ["ce_clean", "ce_clean", (d) => `next-token cross-entropy of ${d.model.split("/").pop()}`],
  ["ce_sae", "ce_sae", (d) => `with the SAE at layer ${d.layer} ${d.site}`],
  ["ce_zero_ablation", "ce_zero_ablation", () => "with the activation zeroed"],
  ["ce_mean_ablation", "ce_mean_ablation", () => "with the activation replaced by its mean"],
  ["ce_loss_recovered", "ce_loss_recovered", () => "(ce_zero − ce_sae)/(ce_zero − ce_clean)"],
  ["ce_loss_recovered_mean", "ce_loss_recovered_mean_ablation", () => "the same against mean ablation"],
  ["delta_loss", "delta_loss", () => "ce_sae − ce_clean"],
  ["kl_sae", "kl_sae", () => "KL(clean ‖ with SAE) per position"],
  ["kl_score", "kl_score", () => "(kl_zero − kl_sae)/kl_zero"],
];

function downstreamValue(d: DownstreamResult, row: string): number {
  return d[DOWNSTREAM_ROWS.find((r) => r[0] === row)![1]] as number;
}

/** the downstream loss under each convention, one column each */
function printConventions(io: CliIo, by: Partial<Record<Convention, DownstreamResult>>): void {
  const convs = DOWNSTREAM_CONVENTIONS.filter((c) => by[c]);
  const first = by[convs[0]]!;
  const rows: [string, string[], string][] = [
    ["predictions", convs.map((c) => String(by[c]!.tokens)), "scored by the CE"],
    ["kl_positions", convs.map((c) => String(by[c]!.kl_tokens)), "scored by the KL"],
    ...DOWNSTREAM_ROWS.map(([k, , what]): [string, string[], string] => [k, convs.map((c) => fmtNum(downstreamValue(by[c]!, k))), what(first)]),
  ];
  const w = Math.max(...rows.map((r) => r[0].length));
  const v = Math.max(...convs.map((c) => c.length), ...rows.flatMap((r) => r[1].map((x) => x.length)));
  io.out(`  downstream loss by convention (docs/downstream.md), ${first.sequences} held-out sequences:`);
  io.out(`  ${"".padEnd(w)}  ${convs.map((c) => c.padStart(v)).join("  ")}`);
  for (const [k, vals, what] of rows) io.out(`  ${k.padEnd(w)}  ${vals.map((x) => x.padStart(v)).join("  ")}  ${what}`);
}

function pct(x: number): string {
  return `${(100 * x).toFixed(2)}%`;
}

export function readEval(dir: string): EvalResult | null {
  return readEvalFile(dir) as EvalResult | null;
}
