// The training loop, top to bottom (docs/training.md#the-loop). Set-up: data, input scale, initial
// weights (fresh, or another run's final state). Then for each phase: fresh Adam state, frozen
// groups, and per step data → forward → backward → clip → project → Adam → renormalise →
// dead-latent counters (a Stepper does these) → log → checkpoint. Each phase ends with a checkpoint
// and an evaluation of the weights with the input scale folded in; the last one is saved as
// final/ and eval.json.
import path from "node:path";
import fs from "node:fs";
import type { Config, Phase } from "../config/schema.ts";
import { configToYaml, loadConfig } from "../config/load.ts";
import type { EngineChoice } from "../engine/index.ts";
import type { Engine } from "../engine/types.ts";
import { bf16Engine, resolvePrecision, type PrecisionChoice } from "../engine/bf16.ts";
import { createModel, variantDef } from "../sae/index.ts";
import { ParamSet } from "../sae/params.ts";
import { initParams, foldScale } from "../sae/init.ts";
import type { SaeModel } from "../sae/variant.ts";
import { createSource, estimateScale, scaleInPlace } from "../data/index.ts";
import type { DataSource } from "../data/source.ts";
import { lrAt, sparsityAt } from "./schedule.ts";
import { listCheckpoints, loadInitFrom, newestGoodCheckpoint, readTrainState, saveCheckpoint, checkpointName, type TrainState } from "./checkpoint.ts";
import { foldInputBias, frozenParams, needsFixedInputBias } from "./freeze.ts";
import { NativeStepper, type PhaseSetup, type Stepper } from "./stepper.ts";
import { MetricsLog, evalWouldLose, nextRunSeq, readStatus, removeRunDir, writeEval, writeFileAtomic, writeStatus, type RunStart, type RunStatus } from "../io/run.ts";
import { removeStaleTemps } from "../io/atomic.ts";
import { acquireRunLock } from "../io/lock.ts";
import { DivergenceError, DivergenceGuard, smallerLr } from "./guard.ts";
import { resumeConfig } from "./resume-config.ts";
import { SaeError } from "../errors.ts";
import { saveFinal } from "../sae/weights.ts";
import { writeSafetensors } from "../io/safetensors.ts";
import { evaluate, type EvalResult } from "../eval/metrics.ts";
import { downstreamEval, planDownstream, type DownstreamResult } from "../eval/downstream.ts";
import { count } from "../text.ts";

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
  /** the name of the engine that steps, as status.json's history records it (default engine.engine.name) */
  engineName?: string;
  /** a resume may run on another engine or thread count than the run last did (asked for with --engine or --threads) */
  allowEngineChange?: boolean;
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
  guard: DivergenceGuard;
}

/**
 * Trains (or resumes) the run in o.runDir, holding its lock. Every state the folder can be left in
 * by a crash is one a resume continues from (docs/training.md#crashes): before the first
 * checkpoint it trains again from step 0 (the same result), after it from the newest checkpoint
 * that reads back whole, and after the last one it redoes what is missing of the end: the
 * phases' evaluations, final/, eval.json, status done.
 */
export async function train(o: TrainOptions): Promise<TrainResult> {
  const lock = acquireRunLock(o.runDir, o.resume ? "resume" : "train", o.reporter.log);
  try {
    return await trainLocked(o);
  } finally {
    lock.release();
  }
}

async function trainLocked(o: TrainOptions): Promise<TrainResult> {
  const { runDir, reporter } = o;
  const e = o.engine.engine;
  removeStaleTemps(runDir);
  let c = o.config;
  let start: { state: TrainState; fixedInputBias: Float32Array | null } | null = null;
  let changes: string[] = [];
  if (o.resume) {
    const found = newestGoodCheckpoint(runDir, createModel(c), reporter.log);
    // what the run trained with: the checkpoint's record, else (none yet, or an older checkpoint) config.yaml as it is on disk
    const before = found?.meta.config ?? JSON.parse(JSON.stringify(loadConfig(path.join(runDir, "config.yaml")).config));
    ({ config: c, changes } = resumeConfig(c, before, found?.state.step ?? 0, o.runId));
    if (found) {
      start = { state: found.state, fixedInputBias: found.fixedInputBias };
      reporter.log(`resuming from ${path.basename(found.file)} (step ${found.state.step})`);
    } else reporter.log("no checkpoint yet: training again from step 0 (the same batches and initial weights, so the same result)");
  }
  let status: RunStatus;
  let precision: PrecisionChoice;
  try {
    precision = resolvePrecision(c.train.precision, o.engine, o.engineName ?? e.name);
    status = openStatus({ ...o, config: c }, start?.state.step ?? 0, changes, precision.precision);
  } catch (err) {
    if (!o.resume) removeRunDir(runDir); // a refused resume leaves the run as it was
    throw err;
  }
  const t = c.train;
  let stepped = false; // a new run's folder is removed when its set-up fails before the first step
  try {
    const data = createSource(c, e);
    const { D, H } = { D: c.data.d_in, H: c.sae.d_sae };
    const phaseNames = t.phases.map((p) => `${p.name} (${p.steps})`).join(", ");
    reporter.log(`run ${o.runId}: ${c.sae.variant}, D=${D}, H=${H}, ${t.steps} steps of ${t.batch_size} tokens${t.phases.length > 1 ? ` in phases ${phaseNames}` : ""}; ${o.engine.reason}; precision ${precision.reason}`);
    reporter.log(`data: ${data.describe()}`);
    const init = start ?? initialState(c, createModel(c), data, reporter);
    let model = createModel(c, init.fixedInputBias);
    const s = init.state;
    status.scale = s.scale;
    const gt = data.groundTruth();
    if (gt) writeSafetensors(path.join(runDir, "ground_truth.safetensors"), { features: { dtype: "F32", shape: [gt.G, D], data: gt.features } });
    const log = new MetricsLog(runDir, METRIC_COLUMNS);
    if (o.resume) log.dropAfter(s.step); // rows logged after the checkpoint will be logged again
    const run: Run = { o: { ...o, config: c }, c, e, data, status, s, log, phaseEvals: o.resume ? readPhaseEvals(runDir, c, s.step) : [], guard: new DivergenceGuard() };
    // phases that ended before the resume point but whose evaluation a crash kept from phases.json
    redoPhaseEvals(run, model);

    let phaseStart = 0; // global step at which the phase begins
    for (let phaseIndex = 0; phaseIndex < t.phases.length; phaseStart += t.phases[phaseIndex].steps, phaseIndex++) {
      const ph = t.phases[phaseIndex];
      if (s.step >= phaseStart + ph.steps && run.phaseEvals.length > phaseIndex) continue; // done and evaluated before a resume
      const setup = setUpPhase(run, model, ph, phaseStart);
      model = setup.model;
      // bf16: the step's GEMMs through the bf16 kernels, the parameters cast once per step; evaluation stays float32
      const stepE = (st: TrainState) => precision.kernels ? bf16Engine(e, precision.kernels, Object.values(st.p.views).filter((v) => v instanceof Float32Array)) : e;
      const stepper = await (o.stepper ?? ((p, st) => new NativeStepper(stepE(st), p, st)))(setup, s);
      stepped = true;
      run.guard.reset();
      try {
        const stopped = await runSteps(run, stepper, setup, ph, phaseStart, phaseIndex === t.phases.length - 1);
        if (stopped) return { status, eval: null, phases: run.phaseEvals };
      } finally {
        stepper.dispose();
      }
      saveCheckpoint(runDir, s, model.fixedInputBias, c);
      endPhase(run, model, phaseIndex);
    }
    return finish(run, model);
  } catch (err) {
    if (!o.resume && !stepped && !(err instanceof DivergenceError)) {
      removeRunDir(runDir); // nothing was trained: the id stays free for another try
      throw err;
    }
    const message = err instanceof DivergenceError ? diverged(runDir, err) : (err as Error).message;
    Object.assign(status, { status: "failed", finished: new Date().toISOString(), error: message });
    try {
      writeStatus(runDir, status);
    } catch {
      // a full disk may refuse this too; the run then shows as dead, and resumes the same way
    }
    if (err instanceof DivergenceError) throw new SaeError("runtime", `run ${o.runId} stopped: ${message}`, divergenceHint(runDir, o.runId, c, err.step));
    throw err;
  }
}

/** what the divergence guard found, and which checkpoint holds the weights from before it */
function diverged(dir: string, err: DivergenceError): string {
  const ck = listCheckpoints(dir).filter((x) => x.step < err.step).at(-1);
  return `training diverged: ${err.message}; ${ck ? `the last good checkpoint is ${path.basename(ck.file, ".json")}, written before it` : "no checkpoint was written before it"}`;
}

/** the command that goes on from that checkpoint with a learning rate ten times smaller than the diverged phase's */
function divergenceHint(dir: string, id: string, c: Config, step: number): string {
  let end = 0;
  const ph = c.train.phases.find((p) => (end += p.steps) >= step) ?? c.train.phases.at(-1)!;
  const from = listCheckpoints(dir).some((x) => x.step < step) ? "continues from that checkpoint" : "trains it again from step 0";
  return `resume with a smaller learning rate (it was ${ph.lr}): sae resume ${id} --set train.lr=${smallerLr(ph.lr)} ${from}`;
}

/**
 * status.json as the run (re)starts: a resume keeps the first start time and adds an entry to
 * the history of (step, engine, threads), refusing an engine or thread-count change nobody asked
 * for (docs/training.md#resume); a new run writes its config.yaml first. `precision` is what
 * train.precision resolved to (fp32, bf16): recorded, and a change from the run's last start said.
 */
function openStatus(o: TrainOptions, step: number, changes: string[], precision: string): RunStatus {
  const c = o.config;
  // seq: a resume moves the run to the end of the training order, like a new run
  const status: RunStatus = { id: o.runId, status: "running", variant: c.sae.variant, started: new Date().toISOString(), step, steps: c.train.steps, tokens: 0, engine: o.engine.reason, precision, seq: nextRunSeq(path.dirname(o.runDir)) };
  const here: RunStart = { step, engine: o.engineName ?? o.engine.engine.name, threads: o.engine.threads };
  let history: RunStart[] = [];
  if (o.resume) {
    const before = readStatus(o.runDir);
    if (before) status.started = before.started;
    if (before?.precision && before.precision !== precision) o.reporter.log(`precision change: the run trained in ${before.precision} before, ${precision} from here (train.precision: ${c.train.precision} resolves differently here), so it will not match an uninterrupted run`);
    history = before ? pastStarts(before) : [];
    const last = history.at(-1);
    // the thread count matters to the native engine's reductions only
    if (last && (last.engine !== here.engine || (here.engine === "native" && last.threads !== here.threads))) {
      const on = (r: RunStart) => r.engine === "native" ? `native engine with ${count(r.threads, "thread")}` : `${r.engine} engine`;
      if (!o.allowEngineChange) {
        // --engine names the CPU engine `native`; SAE_ENGINE=typescript makes it the TypeScript one
        const flag = (name: string) => (name === "tfjs" ? "tfjs" : "native");
        const back = last.engine === "tfjs" ? "resume with --engine tfjs where it runs" : process.env.SAE_ENGINE ? "unset SAE_ENGINE" : "resume where it is available";
        throw new SaeError("usage", `run ${o.runId} ran on the ${on(last)}; this resume would run on the ${on(here)} (${o.engine.reason}), and continues bit for bit only on the same engine and thread count`,
          last.engine !== here.engine
            ? `ask for the change with --engine ${flag(here.engine)}${here.engine === "typescript" ? " (with SAE_ENGINE=typescript, as now)" : ""}; to stay on the ${last.engine} engine, ${back}`
            : `--threads ${last.threads} continues bit for bit; --threads ${here.threads} asks for the change`);
      }
      const was = on(last), now = on(here);
      o.reporter.log(`engine change at step ${step}, as asked: the ${was} before, the ${now} from here (the result may differ in the last bits from an uninterrupted run)`);
    }
    if (changes.length) {
      o.reporter.log(`resume changes the config from step ${step}: ${changes.join("; ")}`);
      writeFileAtomic(path.join(o.runDir, "config.yaml"), configToYaml(c));
    }
  } else {
    writeFileAtomic(path.join(o.runDir, "config.yaml"), configToYaml(c));
  }
  status.history = [...history, { ...here, ...(changes.length ? { changes } : {}) }];
  writeStatus(o.runDir, status);
  return status;
}

/** the starts a status records; a status from before the history has only the engine's description */
function pastStarts(s: RunStatus): RunStart[] {
  if (Array.isArray(s.history)) return s.history;
  const native = /^native engine, (\d+) threads?/.exec(s.engine ?? "");
  if (native) return [{ step: 0, engine: "native", threads: Number(native[1]) }];
  if (/^TypeScript engine/.test(s.engine ?? "")) return [{ step: 0, engine: "typescript", threads: 1 }];
  return [];
}

/**
 * phases.json's evaluations of the phases that ended before `step`: one that ended at the resume
 * point is evaluated again (a crash may have come between its checkpoint and phases.json, final/
 * or eval.json; the numbers are the same), as is any that a crash kept out (redoPhaseEvals).
 */
function readPhaseEvals(runDir: string, c: Config, step: number): PhaseEval[] {
  const file = path.join(runDir, "phases.json");
  if (!fs.existsSync(file)) return [];
  let v: unknown;
  try {
    v = JSON.parse(fs.readFileSync(file, "utf8"));
  } catch (err) {
    throw new SaeError("usage", `${file} cannot be read: ${(err as NodeJS.ErrnoException).code ?? `not valid JSON (${(err as Error).message})`}`, "move it out of the run: the resume evaluates each finished phase again from its checkpoint");
  }
  const names = c.train.phases.map((p) => p.name);
  if (!Array.isArray(v) || v.some((x) => !x || typeof x !== "object" || !names.includes(x.phase) || !Number.isInteger(x.step) || typeof x.fvu !== "number" && x.fvu !== null)) {
    throw new SaeError("usage", `${file} is not a list of phase evaluations ({phase, step, fvu, ...} for the phases ${names.join(", ")})`, "move it out of the run: the resume evaluates each finished phase again from its checkpoint");
  }
  return (v as PhaseEval[]).filter((x) => x.step < step);
}

/**
 * Evaluates the phases that ended at or before the resume point without an entry in phases.json
 * (killed between the phase's last checkpoint and phases.json), from the checkpoint at their end;
 * the last phase's evaluation waits for finish().
 */
function redoPhaseEvals(run: Run, model: SaeModel): void {
  const { c, s, o } = run;
  let end = 0;
  c.train.phases.forEach((ph, i) => {
    end += ph.steps;
    if (end > s.step || i === c.train.phases.length - 1 || run.phaseEvals.some((x) => x.phase === ph.name)) return;
    const at = end === s.step ? { state: s, fixedInputBias: model.fixedInputBias ? Float32Array.from(model.fixedInputBias) : null } : readTrainState(path.join(o.runDir, "checkpoints", `${checkpointName(end)}.json`), createModel(c));
    o.reporter.log(end === s.step ? `phase ${ph.name} ended at this checkpoint: evaluating it again` : `phase ${ph.name}: its evaluation is missing from phases.json; evaluating its last checkpoint`);
    const r = { ...run, s: at.state };
    endPhase(r, createModel(c, at.fixedInputBias), i);
    run.phaseEvals = r.phaseEvals;
  });
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
  const { c, s, o, data, status, guard } = run;
  const t = c.train, B = t.batch_size;
  s.logWindow = undefined; // the stepper took it over
  let windowStart = performance.now(), windowTokens = 0;
  for (let ps = s.step - phaseStart; ps < ph.steps; ps++) {
    const X = data.trainBatch(s.batchOffset + s.step, B);
    scaleInPlace(X, s.scale);
    const lr = lrAt(ps, ph);
    const coeff = setup.coefficient * sparsityAt(ps, ph);
    stepper.step(X, B, lr, coeff);
    const now = stepper.lastStep?.();
    if (now) guard.check(s.step + 1, now.loss, now.gradNorm);
    s.step++;
    s.tokens += B;
    windowTokens += B;

    const lastOfPhase = ps === ph.steps - 1;
    if (s.step % t.log_every === 0 || lastOfPhase) {
      const f = stepper.flush();
      guard.check(s.step, f.loss, f.gradNorm, f.n);
      logRow(run, f, ph, lr, coeff, windowTokens / ((performance.now() - windowStart) / 1000));
      windowStart = performance.now();
      windowTokens = 0;
    } else {
      o.reporter.progress?.(s.step, t.steps, null);
    }
    const checkpoint = () => {
      stepper.sync();
      const w = stepper.window();
      // an engine that reports only per window: the open window is checked before it is saved
      if (!now && w.n > 0) guard.check(s.step, w.loss / w.n, w.gnorm / w.n, w.n);
      return saveCheckpoint(o.runDir, { ...s, logWindow: w }, setup.model.fixedInputBias, c);
    };
    if (t.checkpoint_every > 0 && s.step % t.checkpoint_every === 0 && !lastOfPhase) checkpoint();
    // yield to the event loop so signal handlers (Ctrl-C, SIGTERM, SIGHUP) run
    if (o.control) {
      await new Promise((r) => setImmediate(r));
      if (o.control.stop && !(lastOfPhase && lastPhase)) {
        const file = checkpoint();
        Object.assign(status, { status: "interrupted", step: s.step, tokens: s.tokens, finished: new Date().toISOString() });
        writeStatus(o.runDir, status);
        o.reporter.log(`interrupted at step ${s.step}; state saved to ${path.relative(process.cwd(), file)}; continue with: sae resume ${o.runId}`);
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

/**
 * End of phase i (its last checkpoint written): evaluate the weights as they are exported (raw
 * input units), the last phase with the downstream loss, into phases.json.
 */
function endPhase(run: Run, model: SaeModel, i: number): void {
  const { c, s, o, e, data } = run;
  const ph = c.train.phases[i], lastPhase = i === c.train.phases.length - 1;
  const out = exportable(e, c, model, s.p, s.scale);
  const Xe = data.evalSet(c.data.eval_tokens);
  const result = evaluate(e, out.model, out.params, Xe, Xe.length / c.data.d_in, data.groundTruth());
  if (lastPhase) result.downstream = downstream(e, c, data, out.model, out.params, o.reporter) ?? undefined;
  run.phaseEvals = [...run.phaseEvals.filter((x) => x.phase !== ph.name), { phase: ph.name, step: s.step, ...result }].sort((a, b) => a.step - b.step);
  writeFileAtomic(path.join(o.runDir, "phases.json"), JSON.stringify(run.phaseEvals, null, 2) + "\n");
  if (c.train.phases.length > 1) o.reporter.log(`phase ${ph.name} done: fvu ${result.fvu.toFixed(4)}, l0 ${result.l0.toFixed(2)}, gamma ${result.gamma.toFixed(4)}`);
}

/**
 * The end of the run, from the state at its last step: the last phase's evaluation (computed
 * again when a crash kept it from phases.json), final/, eval.json, status done. A resume after a
 * crash in this window redoes it; an eval.json holding more than this evaluation is kept.
 */
function finish(run: Run, model: SaeModel): TrainResult {
  const { c, s, o, e, status } = run;
  const last = c.train.phases[c.train.phases.length - 1];
  if (!run.phaseEvals.some((x) => x.phase === last.name)) {
    // only a resume gets here: the loop evaluates the last phase when it trains it
    o.reporter.log("the run had trained every step: evaluating its last checkpoint again, then writing final/ and eval.json");
    endPhase(run, model, c.train.phases.length - 1);
  }
  const { phase: _phase, step: _step, ...result } = run.phaseEvals.find((x) => x.phase === last.name)!;
  const out = exportable(e, c, model, s.p, s.scale);
  saveFinal(o.runDir, out.model, out.params, out.config, s.scale);
  const doc = { ...result, ...(run.phaseEvals.length > 1 ? { phases: run.phaseEvals } : {}) };
  const lose = evalWouldLose(o.runDir, doc);
  if (lose.length) o.reporter.log(`eval.json is kept as it is: it holds ${lose.join(", ")}, which this evaluation lacks (sae eval writes it again)`);
  else writeEval(o.runDir, doc, { run: o.runId });
  Object.assign(status, { status: "done", step: s.step, tokens: s.tokens, finished: new Date().toISOString() });
  writeStatus(o.runDir, status);
  return { status, eval: result, phases: run.phaseEvals };
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
