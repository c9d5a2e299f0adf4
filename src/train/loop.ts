// The training loop, top to bottom. Set-up: data, input scale, initial weights (fresh, or another
// run's final state). Then for each phase: fresh Adam state, frozen groups, and per step
// data → forward → backward → clip → project → Adam → renormalise → dead-latent counters → log →
// checkpoint. Each phase ends with a checkpoint and an evaluation of the weights with the input
// scale folded in; the last one is saved as final/ and eval.json.
import path from "node:path";
import fs from "node:fs";
import type { Config } from "../config/schema.ts";
import { configToYaml } from "../config/load.ts";
import type { EngineChoice } from "../engine/index.ts";
import { REGISTRY, createModel } from "../sae/index.ts";
import { ParamSet } from "../sae/params.ts";
import { initParams, foldScale } from "../sae/init.ts";
import type { Code, SaeModel } from "../sae/variant.ts";
import { createSource, estimateScale, scaleInPlace } from "../data/index.ts";
import type { DataSource } from "../data/source.ts";
import { lrAt, sparsityAt } from "./schedule.ts";
import { latestCheckpoint, loadInitFrom, readTrainState, saveCheckpoint, type LogWindow, type TrainState } from "./checkpoint.ts";
import { optimizerStep } from "./step.ts";
import { foldInputBias, frozenParams, needsFixedInputBias } from "./freeze.ts";
import { MetricsLog, readStatus, writeFileAtomic, writeStatus, type RunStatus } from "../io/run.ts";
import { SaeError } from "../errors.ts";
import { saveFinal } from "../io/weights.ts";
import { writeSafetensors } from "../io/safetensors.ts";
import { evaluate, type EvalResult } from "../eval/metrics.ts";
import { downstreamEval, planDownstream, type DownstreamResult } from "../eval/downstream.ts";

/** held-out sequences scored by the end-of-training downstream evaluation (at most) */
export const DOWNSTREAM_SEQUENCES = 64;

export interface TrainReporter {
  /** a line for the user (stderr in the CLI) */
  log(line: string): void;
  /** called every step, with the latest logged figures at logging intervals (null between them); a progress bar draws from it */
  progress?(step: number, total: number, info: { loss: number; l0: number; tokensPerSec: number } | null): void;
}

export interface TrainOptions {
  config: Config;
  runDir: string;
  runId: string;
  engine: EngineChoice;
  reporter: TrainReporter;
  /** set .stop = true (e.g. on SIGINT) to checkpoint and stop after the current step */
  control?: { stop: boolean };
  /** continue runDir from its latest checkpoint (exactly: same batches, optimizer state, counters) */
  resume?: boolean;
}

export const METRIC_COLUMNS = ["step", "phase", "tokens", "lr", "sparsity_coeff", "loss", "mse", "sparsity_loss", "aux_loss", "fvu", "l0", "dead_frac", "grad_norm", "tokens_per_s"];

export interface PhaseEval extends EvalResult { phase: string; step: number }

export async function train(o: TrainOptions): Promise<{ status: RunStatus; eval: EvalResult | null; phases: PhaseEval[] }> {
  const { config: c, runDir, engine: { engine: e }, reporter } = o;
  const t = c.train;
  const data = createSource(c, e);
  let model = createModel(c);
  const { D, H } = model.dims;
  const B = t.batch_size;
  const status: RunStatus = { id: o.runId, status: "running", variant: c.sae.variant, started: new Date().toISOString(), step: 0, steps: t.steps, tokens: 0, engine: o.engine.reason };
  if (o.resume) {
    const before = readStatus(runDir);
    if (before) status.started = before.started;
  } else {
    writeFileAtomic(path.join(runDir, "config.yaml"), configToYaml(c));
  }
  writeStatus(runDir, status);
  const phaseNames = t.phases.map((p) => `${p.name} (${p.steps})`).join(", ");
  reporter.log(`run ${o.runId}: ${c.sae.variant}, D=${D}, H=${H}, ${t.steps} steps of ${B} tokens${t.phases.length > 1 ? ` in phases ${phaseNames}` : ""}; ${o.engine.reason}`);
  reporter.log(`data: ${data.describe()}`);

  try {
    const { state: s, fixedInputBias } = o.resume ? resumeState(runDir, model, reporter) : initialState(c, model, data, reporter);
    if (fixedInputBias) model = createModel(c, fixedInputBias);
    status.scale = s.scale;
    const gt = data.groundTruth();
    if (gt) writeSafetensors(path.join(runDir, "ground_truth.safetensors"), { features: { dtype: "F32", shape: [gt.G, D], data: gt.features } });

    const grads = s.p.like();
    const dead = new Uint8Array(H);
    const fired = new Float32Array(H);
    const log = new MetricsLog(runDir, METRIC_COLUMNS);
    if (o.resume) log.dropAfter(s.step); // rows logged after the checkpoint will be logged again
    const phasesFile = path.join(runDir, "phases.json");
    // a phase that ended exactly at the checkpoint is evaluated again (the process may have stopped
    // between its checkpoint and its evaluation, final/ or eval.json): the numbers are the same
    const phaseEvals: PhaseEval[] = o.resume && fs.existsSync(phasesFile) ? (JSON.parse(fs.readFileSync(phasesFile, "utf8")) as PhaseEval[]).filter((pe) => pe.step < s.step) : [];
    let result: EvalResult | null = null;

    let phaseStart = 0; // global step at which the phase begins
    for (let phaseIndex = 0; phaseIndex < t.phases.length; phaseStart += t.phases[phaseIndex].steps, phaseIndex++) {
      const ph = t.phases[phaseIndex];
      if (s.step >= phaseStart + ph.steps && phaseEvals.length > phaseIndex) continue; // done and evaluated before a resume
      const coefficient = ph.sparsity_coefficient ?? REGISTRY[c.sae.variant].coefficient(c);
      let frozen = frozenParams(model, ph, coefficient);
      if (needsFixedInputBias(model, frozen)) {
        model = createModel(c, Float32Array.from(s.p.get("b_dec")));
        frozen = frozenParams(model, ph, coefficient);
        reporter.log(`phase ${ph.name}: b_dec trains with the encoder frozen; the encoder keeps subtracting b_dec's current value, so the code stays fixed`);
      }
      if (t.phases.length > 1 || frozen.size > 0) {
        reporter.log(`phase ${ph.name}: ${ph.steps} steps, lr ${ph.lr}, sparsity coefficient ${coefficient}${frozen.size ? `, frozen: ${[...frozen].join(", ")}` : ""}`);
      }
      if (s.step === phaseStart) {
        s.m.buf.fill(0); // each phase starts a fresh optimizer state
        s.v.buf.fill(0);
        s.adamT = 0;
      }
      // the logging interval's sums: restored when resuming inside one
      let acc: LogWindow = s.logWindow ?? { n: 0, loss: 0, mse: 0, sparsity: 0, aux: 0, gnorm: 0 };
      s.logWindow = undefined;
      let windowStart = performance.now(), windowTokens = 0;

      for (let ps = s.step - phaseStart; ps < ph.steps; ps++) {
        const X = data.trainBatch(s.batchOffset + s.step, B);
        scaleInPlace(X, s.scale);
        const lr = lrAt(ps, ph);
        const coeff = coefficient * sparsityAt(ps, ph);
        let nDead = 0;
        for (let i = 0; i < H; i++) nDead += dead[i] = s.sinceFired[i] >= t.dead_tokens_threshold ? 1 : 0;

        const { fwd, gradNorm } = optimizerStep(e, model, s, grads, X, B, {
          lr, beta1: t.beta1, beta2: t.beta2, eps: t.eps, gradClip: t.grad_clip, coeff, dead: nDead > 0 ? dead : null, frozen,
        });
        if (!Number.isFinite(fwd.terms.loss)) throw new Error(`loss became ${fwd.terms.loss} at step ${s.step + 1}; lower train.lr or check the data`);

        // dead-latent counters, in tokens (sae-variants.md §1.5): fired = value > 0 anywhere in the batch
        firedLatents(e, fwd.code, B, H, fired);
        for (let i = 0; i < H; i++) s.sinceFired[i] = fired[i] > 0 ? 0 : s.sinceFired[i] + B;
        s.step++;
        s.tokens += B;
        windowTokens += B;
        acc = { n: acc.n + 1, loss: acc.loss + fwd.terms.loss, mse: acc.mse + fwd.terms.mse, sparsity: acc.sparsity + fwd.terms.sparsity, aux: acc.aux + fwd.terms.aux, gnorm: acc.gnorm + gradNorm };

        const lastOfPhase = ps === ph.steps - 1;
        const logging = s.step % t.log_every === 0 || lastOfPhase;
        if (!logging) reporter.progress?.(s.step, t.steps, null);
        if (logging) {
          const tps = windowTokens / ((performance.now() - windowStart) / 1000);
          const row = {
            step: s.step, phase: ph.name, tokens: s.tokens, lr, sparsity_coeff: coeff, loss: acc.loss / acc.n, mse: acc.mse / acc.n,
            sparsity_loss: acc.sparsity / acc.n, aux_loss: acc.aux / acc.n, fvu: batchFvu(X, fwd.Xhat, B, D), l0: meanL0(fwd.code, B, H),
            dead_frac: s.sinceFired.reduce((n, v) => n + (v >= t.dead_tokens_threshold ? 1 : 0), 0) / H, grad_norm: acc.gnorm / acc.n, tokens_per_s: tps,
          };
          log.append(row);
          if (!reporter.progress) {
            reporter.log(`step ${row.step}/${t.steps} | loss ${row.loss.toPrecision(4)} | mse ${row.mse.toPrecision(4)} | fvu ${row.fvu.toFixed(4)} | l0 ${row.l0.toFixed(1)} | dead ${(100 * row.dead_frac).toFixed(1)}% | lr ${lr.toExponential(2)} | ${Math.round(tps)} tok/s`);
          }
          reporter.progress?.(s.step, t.steps, { loss: row.loss, l0: row.l0, tokensPerSec: tps });
          acc = { n: 0, loss: 0, mse: 0, sparsity: 0, aux: 0, gnorm: 0 };
          windowStart = performance.now();
          windowTokens = 0;
          status.step = s.step;
          status.tokens = s.tokens;
          writeStatus(runDir, status);
        }
        if (t.checkpoint_every > 0 && s.step % t.checkpoint_every === 0 && !lastOfPhase) saveCheckpoint(runDir, { ...s, logWindow: acc }, model.fixedInputBias);
        // yield to the event loop so SIGINT handlers run
        if (o.control) {
          await new Promise((r) => setImmediate(r));
          if (o.control.stop && !(lastOfPhase && phaseIndex === t.phases.length - 1)) {
            const file = saveCheckpoint(runDir, { ...s, logWindow: acc }, model.fixedInputBias);
            Object.assign(status, { status: "interrupted", step: s.step, tokens: s.tokens, finished: new Date().toISOString() });
            writeStatus(runDir, status);
            reporter.log(`interrupted at step ${s.step}; state saved to ${path.relative(process.cwd(), file)}`);
            return { status, eval: null, phases: phaseEvals };
          }
        }
      }

      // end of phase: checkpoint, then evaluate the weights as they are exported (raw input units)
      saveCheckpoint(runDir, s, model.fixedInputBias);
      const out = exportable(e, c, model, s.p, s.scale);
      const Xe = data.evalSet(c.data.eval_tokens);
      result = evaluate(e, out.model, out.params, Xe, Xe.length / D, gt);
      if (phaseIndex === t.phases.length - 1) result.downstream = downstream(e, c, data, out.model, out.params, reporter) ?? undefined;
      phaseEvals.push({ phase: ph.name, step: s.step, ...result });
      writeFileAtomic(phasesFile, JSON.stringify(phaseEvals, null, 2) + "\n");
      if (t.phases.length > 1) reporter.log(`phase ${ph.name} done: fvu ${result.fvu.toFixed(4)}, l0 ${result.l0.toFixed(2)}, gamma ${result.gamma.toFixed(4)}`);
      if (phaseIndex === t.phases.length - 1) saveFinal(runDir, out.model, out.params, out.config, s.scale);
    }

    const evalDoc = { run: o.runId, units: "raw input (scale folded into the weights)", ...result, ...(phaseEvals.length > 1 ? { phases: phaseEvals } : {}) };
    writeFileAtomic(path.join(runDir, "eval.json"), JSON.stringify(evalDoc, null, 2) + "\n");
    Object.assign(status, { status: "done", step: s.step, tokens: s.tokens, finished: new Date().toISOString() });
    writeStatus(runDir, status);
    return { status, eval: result, phases: phaseEvals };
  } catch (err) {
    Object.assign(status, { status: "failed", finished: new Date().toISOString(), error: (err as Error).message });
    if (fs.existsSync(runDir)) writeStatus(runDir, status);
    throw err;
  }
}

/** The language-model metrics when the data came from a model (see src/eval/downstream.ts); null otherwise. */
function downstream(e: EngineChoice["engine"], c: Config, data: DataSource, model: SaeModel, params: ParamSet, reporter: TrainReporter): DownstreamResult | null {
  try {
    const plan = planDownstream(c, data, e, { sequences: DOWNSTREAM_SEQUENCES });
    if (!plan) return null;
    reporter.log(`downstream: splicing the SAE into ${path.basename(plan.lm.file)} layer ${plan.layer} ${plan.site} on ${plan.seqs.count} held-out sequences`);
    return downstreamEval({ ...plan, sae: model, params });
  } catch (err) {
    if (!(err instanceof SaeError)) throw err;
    reporter.log(`downstream metrics skipped: ${err.message}`);
    return null;
  }
}

/**
 * The weights as final/ holds them: the input scale folded in (W_enc·c, W_dec/c, b_dec/c), and a
 * fixed input bias folded into the encoder biases (the model then takes raw x without b_dec).
 */
function exportable(e: EngineChoice["engine"], c: Config, model: SaeModel, p: ParamSet, scale: number): { model: SaeModel; params: ParamSet; config: Config } {
  const params = p.like();
  params.copyFrom(p);
  foldScale(params, scale);
  if (!model.fixedInputBias) return { model, params, config: c };
  foldInputBias(e, model, params, Float32Array.from(model.fixedInputBias, (v) => v / scale));
  const config = { ...c, sae: { ...c.sae, apply_b_dec_to_input: false } };
  return { model: createModel(config), params, config };
}

/** The latest checkpoint of runDir, with everything needed to continue exactly. */
function resumeState(runDir: string, model: SaeModel, reporter: TrainReporter): { state: TrainState; fixedInputBias: Float32Array | null } {
  const file = latestCheckpoint(runDir);
  if (!file) throw new SaeError("usage", `${runDir} has no checkpoint to resume from`, "train.checkpoint_every makes periodic ones; an interrupted run always has one");
  const { state, fixedInputBias } = readTrainState(file, model);
  reporter.log(`resuming from ${path.basename(file)} (step ${state.step})`);
  return { state, fixedInputBias };
}

/** A fresh init (input scale and b_dec from a sample training never sees), or init_from's state. */
function initialState(c: Config, model: SaeModel, data: DataSource, reporter: TrainReporter): { state: TrainState; fixedInputBias: Float32Array | null } {
  const blank = () => new ParamSet(model.specs);
  const s: TrainState = { p: blank(), m: blank(), v: blank(), sinceFired: new Float64Array(model.dims.H), step: 0, tokens: 0, adamT: 0, scale: 1, batchOffset: 0 };
  if (c.init_from) {
    const from = loadInitFrom(c.init_from, c, model);
    s.p.copyFrom(from.p);
    s.scale = from.scale;
    s.batchOffset = from.step; // continue the parent's data stream where it stopped
    reporter.log(`init: ${from.note}`);
    return { state: s, fixedInputBias: from.fixedInputBias };
  }
  const nEst = c.data.norm_estimate_tokens;
  const sample = data.estimationSample(nEst);
  s.scale = estimateScale(sample, nEst, model.dims.D, c.data.normalize);
  scaleInPlace(sample, s.scale);
  initParams(model, s.p, c, sample, nEst);
  return { state: s, fixedInputBias: null };
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
  else for (let j = 0; j < code.val.length; j++) n += code.val[j] > 0 ? 1 : 0;
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
