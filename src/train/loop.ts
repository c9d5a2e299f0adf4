// The training loop, top to bottom (docs/training.md#the-loop). Set-up: data, input scale, initial
// weights (fresh, or another run's final state). Then for each phase: fresh Adam state, frozen
// groups, and per step data → forward → backward → clip → project → Adam → renormalise →
// dead-latent counters (a Stepper does these) → log → checkpoint. Each phase ends with a checkpoint
// and an evaluation of the weights with the input scale folded in; the last one is saved as
// final/ and eval.json.
import path from "node:path";
import fs from "node:fs";
import type { Config, Phase } from "../config/schema.ts";
import { configToYaml } from "../config/load.ts";
import type { EngineChoice } from "../engine/index.ts";
import type { Engine } from "../engine/types.ts";
import { createModel, variantDef } from "../sae/index.ts";
import { ParamSet } from "../sae/params.ts";
import { initParams, foldScale } from "../sae/init.ts";
import type { SaeModel } from "../sae/variant.ts";
import { createSource, estimateScale, scaleInPlace } from "../data/index.ts";
import type { DataSource } from "../data/source.ts";
import { lrAt, sparsityAt } from "./schedule.ts";
import { latestCheckpoint, loadInitFrom, readTrainState, saveCheckpoint, type TrainState } from "./checkpoint.ts";
import { foldInputBias, frozenParams, needsFixedInputBias } from "./freeze.ts";
import { NativeStepper, type PhaseSetup, type Stepper } from "./stepper.ts";
import { MetricsLog, nextRunSeq, readStatus, writeEval, writeFileAtomic, writeStatus, type RunStatus } from "../io/run.ts";
import { SaeError } from "../errors.ts";
import { saveFinal } from "../sae/weights.ts";
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

/** Builds the Stepper of a phase; the default steps with the host-memory kernels of the engine. */
export type StepperFactory = (ph: PhaseSetup, s: TrainState) => Stepper | Promise<Stepper>;

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
  /** another engine's steps (the tfjs engine); default NativeStepper on engine.engine */
  stepper?: StepperFactory;
}

export const METRIC_COLUMNS = ["step", "phase", "tokens", "lr", "sparsity_coeff", "loss", "mse", "sparsity_loss", "aux_loss", "fvu", "l0", "dead_frac", "grad_norm", "tokens_per_s"];

export interface PhaseEval extends EvalResult { phase: string; step: number }

export interface TrainResult { status: RunStatus; eval: EvalResult | null; phases: PhaseEval[] }

/** What the phases of one run share. */
interface Run {
  o: TrainOptions;
  c: Config;
  e: Engine;
  data: DataSource;
  status: RunStatus;
  s: TrainState;
  log: MetricsLog;
  phaseEvals: PhaseEval[];
}

export async function train(o: TrainOptions): Promise<TrainResult> {
  const { config: c, runDir, reporter } = o;
  const e = o.engine.engine;
  const data = createSource(c, e);
  const status = openStatus(o);
  const { D, H } = { D: c.data.d_in, H: c.sae.d_sae };
  const t = c.train;
  const phaseNames = t.phases.map((p) => `${p.name} (${p.steps})`).join(", ");
  reporter.log(`run ${o.runId}: ${c.sae.variant}, D=${D}, H=${H}, ${t.steps} steps of ${t.batch_size} tokens${t.phases.length > 1 ? ` in phases ${phaseNames}` : ""}; ${o.engine.reason}`);
  reporter.log(`data: ${data.describe()}`);

  try {
    const start = o.resume ? resumeState(runDir, createModel(c), reporter) : initialState(c, createModel(c), data, reporter);
    let model = createModel(c, start.fixedInputBias);
    const s = start.state;
    status.scale = s.scale;
    const gt = data.groundTruth();
    if (gt) writeSafetensors(path.join(runDir, "ground_truth.safetensors"), { features: { dtype: "F32", shape: [gt.G, D], data: gt.features } });
    const log = new MetricsLog(runDir, METRIC_COLUMNS);
    if (o.resume) log.dropAfter(s.step); // rows logged after the checkpoint will be logged again
    // a phase that ended exactly at the checkpoint is evaluated again (the process may have stopped
    // between its checkpoint and its evaluation, final/ or eval.json): the numbers are the same
    const phaseEvals = o.resume ? readPhaseEvals(runDir).filter((pe) => pe.step < s.step) : [];
    const run: Run = { o, c, e, data, status, s, log, phaseEvals };

    let result: EvalResult | null = null;
    let phaseStart = 0; // global step at which the phase begins
    for (let phaseIndex = 0; phaseIndex < t.phases.length; phaseStart += t.phases[phaseIndex].steps, phaseIndex++) {
      const ph = t.phases[phaseIndex];
      if (s.step >= phaseStart + ph.steps && run.phaseEvals.length > phaseIndex) continue; // done and evaluated before a resume
      const setup = setUpPhase(run, model, ph, phaseStart);
      model = setup.model;
      const stepper = await (o.stepper ?? ((p, st) => new NativeStepper(e, p, st)))(setup, s);
      try {
        const stopped = await runSteps(run, stepper, setup, ph, phaseStart, phaseIndex === t.phases.length - 1);
        if (stopped) return { status, eval: null, phases: run.phaseEvals };
      } finally {
        stepper.dispose();
      }
      result = endPhase(run, model, ph, phaseIndex === t.phases.length - 1);
    }

    writeEval(runDir, { ...result, ...(run.phaseEvals.length > 1 ? { phases: run.phaseEvals } : {}) }, { run: o.runId });
    Object.assign(status, { status: "done", step: s.step, tokens: s.tokens, finished: new Date().toISOString() });
    writeStatus(runDir, status);
    return { status, eval: result, phases: run.phaseEvals };
  } catch (err) {
    Object.assign(status, { status: "failed", finished: new Date().toISOString(), error: (err as Error).message });
    if (fs.existsSync(runDir)) writeStatus(runDir, status);
    throw err;
  }
}

/** status.json as the run starts (a resume keeps the first start time); the config for a new run */
function openStatus(o: TrainOptions): RunStatus {
  const c = o.config;
  // seq: a resume moves the run to the end of the training order, like a new run
  const status: RunStatus = { id: o.runId, status: "running", variant: c.sae.variant, started: new Date().toISOString(), step: 0, steps: c.train.steps, tokens: 0, engine: o.engine.reason, seq: nextRunSeq(path.dirname(o.runDir)) };
  if (o.resume) {
    const before = readStatus(o.runDir);
    if (before) status.started = before.started;
  } else {
    writeFileAtomic(path.join(o.runDir, "config.yaml"), configToYaml(c));
  }
  writeStatus(o.runDir, status);
  return status;
}

function readPhaseEvals(runDir: string): PhaseEval[] {
  const file = path.join(runDir, "phases.json");
  return fs.existsSync(file) ? JSON.parse(fs.readFileSync(file, "utf8")) : [];
}

/** The phase's coefficient and frozen parameters (and the model, when b_dec must become a constant input bias). */
function setUpPhase(run: Run, model: SaeModel, ph: Phase, phaseStart: number): PhaseSetup & { coefficient: number } {
  const { c, s, o } = run;
  const coefficient = ph.sparsity_coefficient ?? variantDef(c.sae.variant).coefficient(c.sae);
  let frozen = frozenParams(model, ph, coefficient);
  if (needsFixedInputBias(model, frozen)) {
    model = createModel(c, Float32Array.from(s.p.get("b_dec")));
    frozen = frozenParams(model, ph, coefficient);
    o.reporter.log(`phase ${ph.name}: b_dec trains with the encoder frozen; the encoder keeps subtracting b_dec's current value, so the code stays fixed`);
  }
  if (c.train.phases.length > 1 || frozen.size > 0) {
    o.reporter.log(`phase ${ph.name}: ${ph.steps} steps, lr ${ph.lr}, sparsity coefficient ${coefficient}${frozen.size ? `, frozen: ${[...frozen].join(", ")}` : ""}`);
  }
  if (s.step === phaseStart) {
    s.m.buf.fill(0); // each phase starts a fresh optimizer state
    s.v.buf.fill(0);
    s.adamT = 0;
  }
  const t = c.train;
  return { model, frozen, coefficient, beta1: t.beta1, beta2: t.beta2, eps: t.eps, gradClip: t.grad_clip, deadTokens: t.dead_tokens_threshold };
}

/** The phase's steps from where the state is; true when stopped by o.control (checkpointed, status interrupted). */
async function runSteps(run: Run, stepper: Stepper, setup: PhaseSetup & { coefficient: number }, ph: Phase, phaseStart: number, lastPhase: boolean): Promise<boolean> {
  const { c, s, o, data, status } = run;
  const t = c.train, B = t.batch_size;
  s.logWindow = undefined; // the stepper took it over
  let windowStart = performance.now(), windowTokens = 0;
  for (let ps = s.step - phaseStart; ps < ph.steps; ps++) {
    const X = data.trainBatch(s.batchOffset + s.step, B);
    scaleInPlace(X, s.scale);
    const lr = lrAt(ps, ph);
    const coeff = setup.coefficient * sparsityAt(ps, ph);
    stepper.step(X, B, lr, coeff);
    s.step++;
    s.tokens += B;
    windowTokens += B;

    const lastOfPhase = ps === ph.steps - 1;
    if (s.step % t.log_every === 0 || lastOfPhase) {
      logRow(run, stepper.flush(), ph, lr, coeff, windowTokens / ((performance.now() - windowStart) / 1000));
      windowStart = performance.now();
      windowTokens = 0;
    } else {
      o.reporter.progress?.(s.step, t.steps, null);
    }
    const checkpoint = () => {
      stepper.sync();
      return saveCheckpoint(o.runDir, { ...s, logWindow: stepper.window() }, setup.model.fixedInputBias);
    };
    if (t.checkpoint_every > 0 && s.step % t.checkpoint_every === 0 && !lastOfPhase) checkpoint();
    // yield to the event loop so SIGINT handlers run
    if (o.control) {
      await new Promise((r) => setImmediate(r));
      if (o.control.stop && !(lastOfPhase && lastPhase)) {
        const file = checkpoint();
        Object.assign(status, { status: "interrupted", step: s.step, tokens: s.tokens, finished: new Date().toISOString() });
        writeStatus(o.runDir, status);
        o.reporter.log(`interrupted at step ${s.step}; state saved to ${path.relative(process.cwd(), file)}`);
        return true;
      }
    }
  }
  stepper.sync();
  return false;
}

/** One metrics.csv row and log line; status.json follows the progress. */
function logRow(run: Run, f: ReturnType<Stepper["flush"]>, ph: Phase, lr: number, coeff: number, tps: number): void {
  const { c, s, o, status } = run;
  const row = {
    step: s.step, phase: ph.name, tokens: s.tokens, lr, sparsity_coeff: coeff, loss: f.loss, mse: f.mse, sparsity_loss: f.sparsity,
    aux_loss: f.aux, fvu: f.fvu, l0: f.l0, dead_frac: f.deadFrac, grad_norm: f.gradNorm, tokens_per_s: tps,
  };
  run.log.append(row);
  if (!o.reporter.progress) {
    o.reporter.log(`step ${row.step}/${c.train.steps} | loss ${row.loss.toPrecision(4)} | mse ${row.mse.toPrecision(4)} | fvu ${row.fvu.toFixed(4)} | l0 ${row.l0.toFixed(1)} | dead ${(100 * row.dead_frac).toFixed(1)}% | lr ${lr.toExponential(2)} | ${Math.round(tps)} tok/s`);
  }
  o.reporter.progress?.(s.step, c.train.steps, { loss: row.loss, l0: row.l0, tokensPerSec: tps });
  status.step = s.step;
  status.tokens = s.tokens;
  writeStatus(o.runDir, status);
}

/** End of a phase: checkpoint, then evaluate the weights as they are exported (raw input units); the last phase's go to final/. */
function endPhase(run: Run, model: SaeModel, ph: Phase, lastPhase: boolean): EvalResult {
  const { c, s, o, e, data } = run;
  saveCheckpoint(o.runDir, s, model.fixedInputBias);
  const out = exportable(e, c, model, s.p, s.scale);
  const Xe = data.evalSet(c.data.eval_tokens);
  const result = evaluate(e, out.model, out.params, Xe, Xe.length / c.data.d_in, data.groundTruth());
  if (lastPhase) result.downstream = downstream(e, c, data, out.model, out.params, o.reporter) ?? undefined;
  run.phaseEvals.push({ phase: ph.name, step: s.step, ...result });
  writeFileAtomic(path.join(o.runDir, "phases.json"), JSON.stringify(run.phaseEvals, null, 2) + "\n");
  if (c.train.phases.length > 1) o.reporter.log(`phase ${ph.name} done: fvu ${result.fvu.toFixed(4)}, l0 ${result.l0.toFixed(2)}, gamma ${result.gamma.toFixed(4)}`);
  if (lastPhase) saveFinal(o.runDir, out.model, out.params, out.config, s.scale);
  return result;
}

/** The language-model metrics when the data came from a model (see src/eval/downstream.ts); null otherwise. */
function downstream(e: Engine, c: Config, data: DataSource, model: SaeModel, params: ParamSet, reporter: TrainReporter): DownstreamResult | null {
  try {
    const plan = planDownstream(c, data, e, { sequences: DOWNSTREAM_SEQUENCES });
    if (!plan) return null;
    reporter.log(`downstream: splicing the SAE into ${path.basename(plan.lm.file)} layer ${plan.layer} ${plan.site} on ${plan.seqs.count} held-out sequences (${c.eval.downstream_convention} convention)`);
    return downstreamEval({ ...plan, sae: model, params, convention: c.eval.downstream_convention });
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
function exportable(e: Engine, c: Config, model: SaeModel, p: ParamSet, scale: number): { model: SaeModel; params: ParamSet; config: Config } {
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

/** A fresh init (input scale and b_dec from an estimation sample), or init_from's state. */
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
