// A Stepper runs one phase's optimiser steps on some engine and keeps the logging window's sums,
// so that the loop (loop.ts) reads the same whether the state lives in host memory (the native and
// TypeScript kernels: NativeStepper) or on a device (the tfjs engine, which copies state back only
// in flush() and sync()). docs/training.md#the-loop
import type { Engine } from "../engine/types.ts";
import type { Bf16Engine } from "../engine/bf16.ts";
import type { ParamSet } from "../sae/params.ts";
import type { Code, SaeModel } from "../sae/variant.ts";
import type { LogWindow, TrainState } from "./checkpoint.ts";
import { optimizerStep } from "./step.ts";

/** What stays fixed over a phase. */
export interface PhaseSetup {
  model: SaeModel;
  frozen: ReadonlySet<string>;
  beta1: number;
  beta2: number;
  eps: number;
  /** global gradient-norm clip; 0 = off */
  gradClip: number;
  /** a latent is dead after this many tokens without firing */
  deadTokens: number;
}

/** The logging window's figures, as metrics.csv records them. */
export interface LogFigures {
  /** steps in the window */
  n: number;
  loss: number;
  mse: number;
  sparsity: number;
  aux: number;
  gradNorm: number;
  /** of the window's last batch */
  fvu: number;
  l0: number;
  /** from the tokens-since-fired counters */
  deadFrac: number;
}

export interface Stepper {
  /** one optimiser step on the batch X [B, D] (already scaled by the input scale) */
  step(X: Float32Array, B: number, lr: number, coeff: number): void;
  /** the window's means since the last flush, then a new window */
  flush(): LogFigures;
  /** the open window's sums (a checkpoint keeps them, so a resumed run logs the same means) */
  window(): LogWindow;
  /** brings the TrainState up to date (parameters, Adam state, counters), for checkpoints and evaluation */
  sync(): void;
  /** the last step's loss and gradient norm, where the engine has them at once: the divergence guard then checks every step (else every window) */
  lastStep?(): { loss: number; gradNorm: number };
  dispose(): void;
}

export const emptyWindow = (): LogWindow => ({ n: 0, loss: 0, mse: 0, sparsity: 0, aux: 0, gnorm: 0 });

/** Steps with the host-memory kernels (native addon or TypeScript), on the TrainState's own arrays. */
export class NativeStepper implements Stepper {
  private readonly grads: ParamSet;
  private readonly dead: Uint8Array;
  private readonly fired: Float32Array;
  private acc: LogWindow;
  private lastBatch: { X: Float32Array; Xhat: ArrayLike<number>; code: Code; B: number } | null = null;
  private stepFigures = { loss: NaN, gradNorm: NaN };

  private readonly e: Engine;
  private readonly ph: PhaseSetup;
  private readonly s: TrainState;

  constructor(e: Engine, ph: PhaseSetup, s: TrainState) {
    this.e = e;
    this.ph = ph;
    this.s = s;
    const H = ph.model.dims.H;
    this.grads = s.p.like();
    this.dead = new Uint8Array(H);
    this.fired = new Float32Array(H);
    this.acc = s.logWindow ?? emptyWindow(); // restored when resuming inside a window
  }

  step(X: Float32Array, B: number, lr: number, coeff: number): void {
    const { e, ph, s, dead } = this;
    const H = ph.model.dims.H;
    let nDead = 0;
    for (let i = 0; i < H; i++) nDead += dead[i] = s.sinceFired[i] >= ph.deadTokens ? 1 : 0;
    (e as Partial<Bf16Engine>).newStep?.(); // bf16: the parameters changed since the last step (src/engine/bf16.ts)
    const { fwd, gradNorm } = optimizerStep(e, ph.model, s, this.grads, X, B, {
      lr, beta1: ph.beta1, beta2: ph.beta2, eps: ph.eps, gradClip: ph.gradClip, coeff, dead: nDead > 0 ? dead : null, frozen: ph.frozen,
    });
    // dead-latent counters, in tokens (docs/variants.md#dead-latents): fired = value > 0 anywhere in the batch
    firedLatents(e, fwd.code, B, H, this.fired);
    for (let i = 0; i < H; i++) s.sinceFired[i] = this.fired[i] > 0 ? 0 : s.sinceFired[i] + B;
    const a = this.acc, t = fwd.terms;
    this.acc = { n: a.n + 1, loss: a.loss + t.loss, mse: a.mse + t.mse, sparsity: a.sparsity + t.sparsity, aux: a.aux + t.aux, gnorm: a.gnorm + gradNorm };
    this.lastBatch = { X, Xhat: fwd.Xhat, code: fwd.code, B };
    this.stepFigures = { loss: t.loss, gradNorm };
  }

  lastStep(): { loss: number; gradNorm: number } {
    return this.stepFigures;
  }

  flush(): LogFigures {
    const { acc: a, lastBatch: last, ph, s } = this;
    const { D, H } = ph.model.dims;
    let dead = 0;
    for (let i = 0; i < H; i++) dead += s.sinceFired[i] >= ph.deadTokens ? 1 : 0;
    const out: LogFigures = {
      n: a.n, loss: a.loss / a.n, mse: a.mse / a.n, sparsity: a.sparsity / a.n, aux: a.aux / a.n, gradNorm: a.gnorm / a.n,
      fvu: last ? batchFvu(last.X, last.Xhat, last.B, D) : NaN, l0: last ? meanL0(last.code, last.B, H) : NaN, deadFrac: dead / H,
    };
    this.acc = emptyWindow();
    return out;
  }

  window(): LogWindow {
    return { ...this.acc };
  }

  sync(): void {
    // the state is the TrainState's own arrays
  }

  dispose(): void {}
}

/** out[i] > 0 iff latent i is positive on some row of the batch */
function firedLatents(e: Engine, code: Code, B: number, H: number, out: Float32Array): void {
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
