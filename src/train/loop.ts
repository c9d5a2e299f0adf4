// The training loop, top to bottom: data → forward → backward → clip → project → Adam →
// renormalise → dead-latent counters → log → checkpoint. Then fold the input scale into the
// weights, save them, evaluate on the held-out split.
import path from "node:path";
import fs from "node:fs";
import type { Config } from "../config/schema.ts";
import { configToYaml } from "../config/load.ts";
import type { EngineChoice } from "../engine/index.ts";
import { createModel } from "../sae/index.ts";
import { ParamSet } from "../sae/params.ts";
import { initParams, foldScale } from "../sae/init.ts";
import type { Code } from "../sae/variant.ts";
import { createSource, estimateScale, scaleInPlace } from "../data/index.ts";
import { lrAt, sparsityAt } from "./schedule.ts";
import { saveCheckpoint, type TrainState } from "./checkpoint.ts";
import { optimizerStep } from "./step.ts";
import { MetricsLog, writeFileAtomic, writeStatus, type RunStatus } from "../io/run.ts";
import { saveFinal } from "../io/weights.ts";
import { writeSafetensors } from "../io/safetensors.ts";
import { evaluate, type EvalResult } from "../eval/metrics.ts";

export interface TrainReporter {
  /** a line for the user (stderr in the CLI) */
  log(line: string): void;
  /** called every step; a progress bar may draw from it */
  progress?(step: number, total: number, info: { loss: number; l0: number; tokensPerSec: number }): void;
}

export interface TrainOptions {
  config: Config;
  runDir: string;
  runId: string;
  engine: EngineChoice;
  reporter: TrainReporter;
  /** set .stop = true (e.g. on SIGINT) to checkpoint and stop after the current step */
  control?: { stop: boolean };
}

export const METRIC_COLUMNS = ["step", "tokens", "lr", "sparsity_coeff", "loss", "mse", "sparsity_loss", "aux_loss", "fvu", "l0", "dead_frac", "grad_norm", "tokens_per_s"];

export async function train(o: TrainOptions): Promise<{ status: RunStatus; eval: EvalResult | null }> {
  const { config: c, runDir, engine: { engine: e }, reporter } = o;
  const t = c.train;
  const data = createSource(c);
  const model = createModel(c);
  const { D, H } = model.dims;
  const B = t.batch_size;
  const status: RunStatus = { id: o.runId, status: "running", variant: c.sae.variant, started: new Date().toISOString(), step: 0, steps: t.steps, tokens: 0, engine: o.engine.reason };
  writeFileAtomic(path.join(runDir, "config.yaml"), configToYaml(c));
  writeStatus(runDir, status);
  reporter.log(`run ${o.runId}: ${c.sae.variant}, D=${D}, H=${H}, ${t.steps} steps of ${B} tokens; ${o.engine.reason}`);
  reporter.log(`data: ${data.describe()}`);

  try {
    // Input scale and b_dec init come from a sample training never sees (sae-variants.md §1.1-1.2).
    const nEst = c.data.norm_estimate_tokens;
    const sample = data.estimationSample(nEst);
    const scale = estimateScale(sample, nEst, D, c.data.normalize);
    scaleInPlace(sample, scale);
    const s: TrainState = { p: new ParamSet(model.specs), m: new ParamSet(model.specs), v: new ParamSet(model.specs), sinceFired: new Float64Array(H), step: 0, tokens: 0, adamT: 0, scale };
    initParams(model, s.p, c, sample, nEst);
    status.scale = scale;
    const gt = data.groundTruth();
    if (gt) writeSafetensors(path.join(runDir, "ground_truth.safetensors"), { features: { dtype: "F32", shape: [gt.G, D], data: gt.features } });

    const grads = s.p.like();
    const dead = new Uint8Array(H);
    const fired = new Float32Array(H);
    const log = new MetricsLog(runDir, METRIC_COLUMNS);
    let acc = { n: 0, loss: 0, mse: 0, sparsity: 0, aux: 0, gnorm: 0 };
    let windowStart = performance.now(), windowTokens = 0;

    for (; s.step < t.steps; s.step++) {
      const step = s.step;
      const X = data.trainBatch(step, B);
      scaleInPlace(X, scale);
      const lr = lrAt(step, t);
      const coeff = c.sae.l1_coefficient * sparsityAt(step, t);
      let nDead = 0;
      for (let i = 0; i < H; i++) nDead += dead[i] = s.sinceFired[i] >= t.dead_tokens_threshold ? 1 : 0;

      const { fwd, gradNorm: gnorm } = optimizerStep(e, model, s, grads, X, B, {
        lr, beta1: t.beta1, beta2: t.beta2, eps: t.eps, gradClip: t.grad_clip, coeff, dead: nDead > 0 ? dead : null,
      });
      if (!Number.isFinite(fwd.terms.loss)) throw new Error(`loss became ${fwd.terms.loss} at step ${step}; lower train.lr or check the data`);

      // dead-latent counters, in tokens (sae-variants.md §1.5): fired = value > 0 anywhere in the batch
      firedLatents(e, fwd.code, B, H, fired);
      for (let i = 0; i < H; i++) s.sinceFired[i] = fired[i] > 0 ? 0 : s.sinceFired[i] + B;
      s.tokens += B;
      windowTokens += B;
      acc = { n: acc.n + 1, loss: acc.loss + fwd.terms.loss, mse: acc.mse + fwd.terms.mse, sparsity: acc.sparsity + fwd.terms.sparsity, aux: acc.aux + fwd.terms.aux, gnorm: acc.gnorm + gnorm };

      const last = step === t.steps - 1;
      if ((step + 1) % t.log_every === 0 || last) {
        const now = performance.now();
        const tps = windowTokens / ((now - windowStart) / 1000);
        const row = {
          step: step + 1, tokens: s.tokens, lr, sparsity_coeff: coeff, loss: acc.loss / acc.n, mse: acc.mse / acc.n,
          sparsity_loss: acc.sparsity / acc.n, aux_loss: acc.aux / acc.n, fvu: batchFvu(X, fwd.Xhat, B, D), l0: meanL0(fwd.code, B, H),
          dead_frac: s.sinceFired.reduce((n, v) => n + (v >= t.dead_tokens_threshold ? 1 : 0), 0) / H, grad_norm: acc.gnorm / acc.n, tokens_per_s: tps,
        };
        log.append(row);
        if (!reporter.progress) {
          reporter.log(`step ${row.step}/${t.steps} | loss ${row.loss.toPrecision(4)} | mse ${row.mse.toPrecision(4)} | fvu ${row.fvu.toFixed(4)} | l0 ${row.l0.toFixed(1)} | dead ${(100 * row.dead_frac).toFixed(1)}% | lr ${lr.toExponential(2)} | ${Math.round(tps)} tok/s`);
        }
        reporter.progress?.(step + 1, t.steps, { loss: row.loss, l0: row.l0, tokensPerSec: tps });
        acc = { n: 0, loss: 0, mse: 0, sparsity: 0, aux: 0, gnorm: 0 };
        windowStart = performance.now();
        windowTokens = 0;
        status.step = step + 1;
        status.tokens = s.tokens;
        writeStatus(runDir, status);
      }
      if (t.checkpoint_every > 0 && (step + 1) % t.checkpoint_every === 0 && !last) {
        s.step++;
        saveCheckpoint(runDir, s);
        s.step--;
      }
      // yield to the event loop so SIGINT handlers run
      if (o.control) {
        await new Promise((r) => setImmediate(r));
        if (o.control.stop && !last) {
          s.step++;
          const file = saveCheckpoint(runDir, s);
          Object.assign(status, { status: "interrupted", step: s.step, tokens: s.tokens, finished: new Date().toISOString() });
          writeStatus(runDir, status);
          reporter.log(`interrupted at step ${s.step}; state saved to ${path.relative(process.cwd(), file)}`);
          return { status, eval: null };
        }
      }
    }

    saveCheckpoint(runDir, s);
    // fold the input scale into a copy of the weights: final/ takes raw activations
    const folded = s.p.like();
    folded.copyFrom(s.p);
    foldScale(folded, scale);
    saveFinal(runDir, model, folded, c, scale);

    const N = c.data.eval_tokens;
    const result = evaluate(e, model, folded, data.evalSet(N), N, gt);
    writeFileAtomic(path.join(runDir, "eval.json"), JSON.stringify({ run: o.runId, units: "raw input (scale folded into the weights)", ...result }, null, 2) + "\n");
    Object.assign(status, { status: "done", step: t.steps, tokens: s.tokens, finished: new Date().toISOString() });
    writeStatus(runDir, status);
    return { status, eval: result };
  } catch (err) {
    Object.assign(status, { status: "failed", finished: new Date().toISOString(), error: (err as Error).message });
    if (fs.existsSync(runDir)) writeStatus(runDir, status);
    throw err;
  }
}

/** out[i] > 0 iff latent i is positive on some row of the batch */
function firedLatents(e: EngineChoice["engine"], code: Code, B: number, H: number, out: Float32Array): void {
  if (code.kind === "dense") {
    e.colSum(code.F, B, H, out, false);
    return;
  }
  out.fill(0);
  for (let j = 0; j < B * code.k; j++) if (code.val[j] > 0) out[code.idx[j]] = 1;
}

function meanL0(code: Code, B: number, H: number): number {
  let n = 0;
  if (code.kind === "dense") for (let j = 0; j < B * H; j++) n += code.F[j] > 0 ? 1 : 0;
  else for (let j = 0; j < B * code.k; j++) n += code.val[j] > 0 ? 1 : 0;
  return n / B;
}

/** Σ‖x − x̂‖² / Σ‖x − x̄_batch‖² over one batch */
function batchFvu(X: ArrayLike<number>, Xhat: ArrayLike<number>, B: number, D: number): number {
  const mean = new Float64Array(D);
  for (let b = 0; b < B; b++) for (let d = 0; d < D; d++) mean[d] += X[b * D + d] / B;
  let num = 0, den = 0;
  for (let i = 0; i < B * D; i++) {
    num += (X[i] - Xhat[i]) ** 2;
    den += (X[i] - mean[i % D]) ** 2;
  }
  return den > 0 ? num / den : NaN;
}
