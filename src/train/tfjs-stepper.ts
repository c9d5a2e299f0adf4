// The tfjs training step (docs/tfjs.md): a variant's equations under tfjs autodiff, with the
// optimiser of src/train/step.ts written as tensor operations. Parameters, Adam's moments, the
// tokens-since-fired counters and the logging window's sums live on the device for the whole
// phase; per step only the batch goes host → device, and device → host only in flush() (a logging
// step), window() and sync() (a checkpoint, the end of the phase).
import type { Config } from "../config/schema.ts";
import type { Scalar, Variable } from "@tensorflow/tfjs";
import { tfOps, type Tensor, type Tf, type TfjsChoice, type TfOps } from "../engine/tfjs.ts";
import { variantDef } from "../sae/index.ts";
import type { ForwardResult, SaeModel, SaeSettings, StepInput } from "../sae/variant.ts";
import type { ParamSet } from "../sae/params.ts";
import type { LogWindow, TrainState } from "./checkpoint.ts";
import type { LogFigures, PhaseSetup, Stepper } from "./stepper.ts";
import { DivergenceError } from "./guard.ts";
import type { StepperFactory } from "./loop.ts";
import type { EqContext, EqSettings, Equations } from "../sae/ops.ts";

/** The equations' context from a config's sae: section and the step's own values. */
export function eqContext<T>(s: SaeSettings, step: { coeff: number; dead: T | null; training: boolean; fixedInputBias: T | null }): EqContext<T> {
  // settings a variant does not have stay 0 / empty; its own come from its definition
  const none: EqSettings = { k: 0, kAux: 0, auxCoefficient: 0, tanhScale: 0, bandwidth: 0, prefixes: [] };
  return { ...none, ...variantDef(s.variant).eqSettings?.(s), ...step, applyBDecToInput: s.apply_b_dec_to_input, flavour: s.flavour ?? "" };
}

/** The loop's stepper factory for the tfjs engine. */
export function tfjsStepper(tfjs: Pick<TfjsChoice, "tf">, c: Config): StepperFactory {
  return (ph, s) => new TfjsStepper(tfjs.tf, c, ph, s);
}

/**
 * The tokens-since-fired counters are float32 on the device (TensorFlow keeps int32 tensors in host
 * memory), exact up to 2^24, and saturate there, or at the dead threshold when that is larger: a
 * latent that has been dead that long is dead either way (the native engine's float64 counters go on).
 */
const sinceFiredCap = (deadTokens: number) => Math.max(2 ** 24, deadTokens);

export class TfjsStepper implements Stepper {
  private readonly tf: Tf;
  private readonly ops: TfOps;
  private readonly c: Config;
  private readonly ph: PhaseSetup;
  private readonly model: SaeModel;
  private readonly eq: Equations;
  /** the host copy that sync() brings up to date */
  private readonly s: TrainState;
  private readonly p: Record<string, Variable> = {};
  private readonly m: Record<string, Variable> = {};
  private readonly v: Record<string, Variable> = {};
  private readonly sinceFired: Variable;
  private readonly fixedInputBias: Tensor | null;
  /** the window's sums [loss, mse, sparsity, aux, grad norm] */
  private readonly sums: Variable;
  /** the last batch, its reconstruction and code, for the FVU and L0 of a logging step */
  private last: Tensor[] = [];
  private n = 0;
  /**
   * An upper bound on the counters (host side, exact: each step adds at most B). While it is below
   * the dead threshold no latent can be dead, and AuxK is skipped without asking the device.
   */
  private maxSinceFired = 0;
  private adamT = 0;

  constructor(tf: Tf, c: Config, ph: PhaseSetup, s: TrainState) {
    this.tf = tf;
    this.ops = tfOps(tf);
    this.c = c;
    this.ph = ph;
    this.model = ph.model;
    this.s = s;
    this.eq = variantDef(c.sae.variant).equations;
    const model = ph.model;
    // (assign and variable keep their value; tidy disposes the tensors they were made from)
    [this.sinceFired, this.sums] = tf.tidy(() => {
      for (const { name, shape } of model.specs) {
        this.p[name] = tf.variable(tf.zeros(shape), true);
        this.m[name] = tf.variable(tf.zeros(shape), false);
        this.v[name] = tf.variable(tf.zeros(shape), false);
      }
      return [tf.variable(tf.zeros([model.dims.H]), false), tf.variable(tf.zeros([5]), false)];
    });
    this.fixedInputBias = model.fixedInputBias ? tf.tensor1d(Float32Array.from(model.fixedInputBias)) : null;
    this.load(s);
  }

  step(X: Float32Array, B: number, lr: number, coeff: number): void {
    const { tf, model, p, ph: o } = this;
    const { D } = model.dims;
    const frozen = new Set([...o.frozen, ...(model.nonTrainable ?? [])]);
    const names = model.specs.map((s) => s.name).filter((n) => !frozen.has(n));
    this.adamT++;
    const bc1 = 1 - o.beta1 ** this.adamT, bc2 = 1 - o.beta2 ** this.adamT;
    tf.tidy(() => {
      const x = tf.tensor2d(X, [B, D]);
      const dead = this.maxSinceFired >= o.deadTokens ? tf.cast(tf.greaterEqual(this.sinceFired, o.deadTokens), "float32") : null;
      const ctx = eqContext<Tensor>(this.c.sae, { coeff, dead, training: true, fixedInputBias: this.fixedInputBias });
      let kept: Tensor[] = [], updates: Record<string, Tensor> = {};
      const forward = () => {
        const out = this.eq.loss(this.ops, p, x, ctx);
        updates = out.updates ?? {};
        kept = [out.mse, out.sparsity, out.aux, out.xhat, out.code, ...Object.values(updates)].map((t) => tf.keep(t));
        return out.loss as Scalar;
      };
      // (everything frozen: a forward for the log and the counters, no gradient)
      const { value: loss, grads } = names.length ? tf.variableGrads(forward, names.map((n) => p[n])) : { value: forward(), grads: {} as Record<string, Tensor> };
      const [mse, sparsity, aux, xhat, code] = kept;
      const g: Record<string, Tensor> = {};
      for (const n of names) g[n] = grads[p[n].name] ?? tf.zerosLike(p[n]);
      // the same order as src/train/step.ts: norm, clip factor, projection, Adam, renormalisation
      const gradNorm = names.length ? tf.sqrt(tf.addN(names.map((n) => tf.sum(tf.square(g[n]))))) : tf.scalar(0);
      const clip = o.gradClip > 0 ? tf.where(tf.greater(gradNorm, o.gradClip), tf.div(o.gradClip, gradNorm), tf.scalar(1)) : tf.scalar(1);
      const constrain = model.unitNormDecoder && names.includes("W_dec");
      if (constrain) {
        const W = p.W_dec, ww = tf.sum(tf.square(W), 1, true);
        const a = tf.where(tf.greater(ww, 0), tf.div(tf.sum(tf.mul(g.W_dec, W), 1, true), tf.maximum(ww, 1e-30)), tf.zerosLike(ww));
        g.W_dec = tf.sub(g.W_dec, tf.mul(a, W)); // drop the component along each decoder row
      }
      for (const n of names) {
        const gi = tf.mul(g[n], clip);
        const m = tf.add(tf.mul(this.m[n], o.beta1), tf.mul(gi, 1 - o.beta1));
        const v = tf.add(tf.mul(this.v[n], o.beta2), tf.mul(tf.square(gi), 1 - o.beta2));
        this.m[n].assign(m);
        this.v[n].assign(v);
        p[n].assign(tf.sub(p[n], tf.div(tf.mul(tf.div(m, bc1), lr), tf.add(tf.sqrt(tf.div(v, bc2)), o.eps))));
      }
      if (constrain) {
        const norms = tf.sqrt(tf.sum(tf.square(p.W_dec), 1, true));
        p.W_dec.assign(tf.div(p.W_dec, tf.where(tf.greater(norms, 0), norms, tf.onesLike(norms))));
      }
      for (const [n, t] of Object.entries(updates)) p[n].assign(t);
      // dead-latent counters (docs/variants.md#dead-latents): a latent positive on some row resets to 0
      const fired = tf.greater(tf.sum(tf.cast(tf.greater(code, 0), "float32"), 0), 0);
      this.sinceFired.assign(tf.where(fired, tf.zerosLike(this.sinceFired), tf.minimum(tf.add(this.sinceFired, B), sinceFiredCap(o.deadTokens))));
      this.sums.assign(tf.add(this.sums, tf.stack([loss, mse, sparsity, aux, gradNorm])));
      for (const t of this.last) t.dispose();
      this.last = [tf.keep(x), xhat, code];
      for (const t of kept) if (t !== xhat && t !== code) t.dispose();
    });
    this.n++;
    this.maxSinceFired = Math.min(this.maxSinceFired + B, sinceFiredCap(this.ph.deadTokens));
  }

  flush(): LogFigures {
    const { tf } = this;
    const all = tf.tidy(() => {
      // the last batch's FVU against its own mean, and its L0
      const [x, xhat, code] = this.last;
      const sse = tf.sum(tf.square(tf.sub(x, xhat))), sst = tf.sum(tf.square(tf.sub(x, tf.mean(x, 0))));
      const l0 = tf.div(tf.sum(tf.cast(tf.greater(code, 0), "float32")), x.shape[0]);
      const dead = tf.sum(tf.cast(tf.greaterEqual(this.sinceFired, this.ph.deadTokens), "float32"));
      return tf.concat([this.sums, tf.stack([sse, sst, l0, dead, tf.max(this.sinceFired)])]);
    });
    const [loss, mse, sparsity, aux, gnorm, sse, sst, l0, dead, maxSince] = all.dataSync(); // the one transfer of a logging step
    all.dispose();
    const n = this.n;
    this.checkFinite(loss);
    this.maxSinceFired = maxSince;
    tf.tidy(() => this.sums.assign(tf.zeros([5])));
    this.n = 0;
    return { n, loss: loss / n, mse: mse / n, sparsity: sparsity / n, aux: aux / n, gradNorm: gnorm / n, fvu: sst > 0 ? sse / sst : NaN, l0, deadFrac: dead / this.model.dims.H };
  }

  window(): LogWindow {
    const [loss, mse, sparsity, aux, gnorm] = this.sums.dataSync();
    this.checkFinite(loss);
    return { n: this.n, loss, mse, sparsity, aux, gnorm };
  }

  sync(): void {
    const s = this.s;
    for (const { name } of this.model.specs) {
      s.p.get(name).set(this.p[name].dataSync());
      s.m.get(name).set(this.m[name].dataSync());
      s.v.get(name).set(this.v[name].dataSync());
    }
    s.sinceFired.set(this.sinceFired.dataSync());
    s.adamT = this.adamT;
  }

  /** the native step stops at the first non-finite loss; here it shows in the window's sum (the loop's divergence guard says how to go on) */
  private checkFinite(lossSum: number): void {
    if (!Number.isFinite(lossSum)) throw new DivergenceError(this.s.step, `the loss became ${lossSum} within the ${this.n} steps up to step ${this.s.step}`);
  }

  /** host → device, once at the start of the phase */
  private load(s: TrainState): void {
    const { tf } = this;
    const w = s.logWindow ?? { n: 0, loss: 0, mse: 0, sparsity: 0, aux: 0, gnorm: 0 };
    tf.tidy(() => {
      for (const { name, shape } of this.model.specs) {
        this.p[name].assign(tf.tensor(s.p.get(name), shape, "float32"));
        this.m[name].assign(tf.tensor(s.m.get(name), shape, "float32"));
        this.v[name].assign(tf.tensor(s.v.get(name), shape, "float32"));
      }
      this.sinceFired.assign(tf.tensor1d(Float32Array.from(s.sinceFired, (t) => Math.min(t, sinceFiredCap(this.ph.deadTokens)))));
      this.sums.assign(tf.tensor1d([w.loss, w.mse, w.sparsity, w.aux, w.gnorm]));
    });
    this.adamT = s.adamT;
    this.n = w.n;
    this.maxSinceFired = s.sinceFired.reduce((a, b) => Math.max(a, b), 0);
  }

  dispose(): void {
    for (const r of [this.p, this.m, this.v]) for (const t of Object.values(r)) t.dispose();
    this.sinceFired.dispose();
    this.sums.dispose();
    for (const t of this.last) t.dispose();
    this.fixedInputBias?.dispose();
  }
}

/**
 * The model with its forward run by the variant's equations on tfjs (inference: BatchTopK uses its
 * threshold), for the evaluation of `sae eval --engine tfjs`. The code comes back dense [B, H].
 * The parameters are uploaded once per ParamSet and stay on the device until the process ends.
 */
export function tfjsInferenceModel(tf: Tf, c: Config, model: SaeModel): SaeModel {
  const ops = tfOps(tf);
  const eq = variantDef(c.sae.variant).equations;
  let uploaded: { p: ParamSet; vars: Record<string, Tensor> } | null = null;
  const { D, H } = model.dims;
  return {
    ...model,
    forward({ p, X, B, coeff }: StepInput): ForwardResult {
      if (uploaded?.p !== p) {
        for (const t of Object.values(uploaded?.vars ?? {})) t.dispose();
        uploaded = { p, vars: Object.fromEntries(model.specs.map(({ name, shape }) => [name, tf.tensor(Float32Array.from(p.get(name)), shape, "float32")])) };
      }
      const vars = uploaded.vars;
      const [terms, xhat, code] = tf.tidy(() => {
        const fib = model.fixedInputBias ? tf.tensor1d(Float32Array.from(model.fixedInputBias)) : null;
        const out = eq.loss(ops, vars, tf.tensor2d(Float32Array.from(X), [B, D]), eqContext<Tensor>(c.sae, { coeff, dead: null, training: false, fixedInputBias: fib }));
        return [tf.stack([out.loss, out.mse, out.sparsity, out.aux]), out.xhat, out.code];
      });
      const [loss, mse, sparsity, aux] = terms.dataSync();
      const F = code.dataSync() as Float32Array, Xhat = xhat.dataSync() as Float32Array;
      for (const t of [terms, xhat, code]) t.dispose();
      return { terms: { loss, mse, sparsity, aux }, code: { kind: "dense", F: F.length === B * H ? F : new Float32Array(B * H) }, Xhat, state: null };
    },
    backward(): void {
      throw new Error("the tfjs inference model has no backward (train with TfjsStepper)");
    },
  };
}
