// The tfjs training step (docs/tfjs.md): a variant's equations under tfjs autodiff, with the
// optimiser of src/train/step.ts written as tensor operations. Parameters, Adam's moments, the
// tokens-since-fired counters and the logging window's sums live on the device for the whole run;
// per step only the batch goes host → device, and device → host only in flush() and save().
import type { Config } from "../config/schema.ts";
import type { Scalar, Variable } from "@tensorflow/tfjs";
import { tfOps, type Tensor, type Tf, type TfOps } from "../engine/tfjs.ts";
import type { ForwardResult, SaeModel, StepInput } from "../sae/variant.ts";
import type { ParamSet } from "../sae/params.ts";
import type { StepSettings } from "./step.ts";
import type { TrainState } from "./checkpoint.ts";
import { SaeError } from "../errors.ts";
import type { EqContext, Equations } from "../sae/ops.ts";
import { standardEquations } from "../sae/standard/equations.ts";
import { tanhEquations } from "../sae/tanh/equations.ts";
import { scaledEquations } from "../sae/scaled/equations.ts";
import { gatedEquations } from "../sae/gated/equations.ts";
import { topkEquations } from "../sae/topk/equations.ts";
import { batchtopkEquations } from "../sae/batchtopk/equations.ts";
import { jumpreluEquations } from "../sae/jumprelu/equations.ts";

/** each variant's equations (the lead moves these into the variants' definitions) */
export const EQUATIONS: Record<Config["sae"]["variant"], Equations> = {
  standard: standardEquations,
  tanh: tanhEquations,
  scaled: scaledEquations,
  gated: gatedEquations,
  topk: topkEquations,
  batchtopk: batchtopkEquations,
  jumprelu: jumpreluEquations,
};

/** The equations' context from a config and the step's own values. */
export function eqContext<T>(c: Config, step: { coeff: number; dead: T | null; training: boolean; fixedInputBias: T | null }): EqContext<T> {
  const s = c.sae;
  return {
    ...step,
    applyBDecToInput: s.apply_b_dec_to_input,
    flavour: s.flavour,
    k: s.k,
    kAux: s.k_aux,
    auxCoefficient: s.aux_coefficient,
    tanhScale: s.tanh_scale,
    bandwidth: s.jumprelu_bandwidth,
  };
}

/** What the training loop reads at a logging step: the window since the last flush. */
export interface StepWindow { n: number; loss: number; mse: number; sparsity: number; aux: number; gradNorm: number; fvu: number; l0: number; deadFrac: number; finite: boolean }

export interface Stepper {
  /** one optimiser step on the batch X [B, D] (already scaled by the input scale) */
  step(X: Float32Array, B: number, o: StepSettings): void;
  /** the logging window since the last call: mean loss terms and gradient norm over its steps, the last batch's FVU and L0, the dead fraction from the token counters, whether every loss was finite; resets the window */
  flush(): StepWindow;
  /** device → host: parameters, Adam m and v, Adam t, tokens-since-fired counters, the open window's sums */
  save(s: TrainState): void;
  /** host → device */
  load(s: TrainState): void;
  dispose(): void;
}

/**
 * The tokens-since-fired counters are float32 on the device (TensorFlow keeps int32 tensors in host
 * memory), exact up to 2^24, and saturate there, or at the dead threshold when that is larger: a
 * latent that has been dead that long is dead either way (the native engine's float64 counters go on).
 */
const sinceFiredCap = (c: Config) => Math.max(2 ** 24, c.train.dead_tokens_threshold);

export class TfjsStepper implements Stepper {
  private readonly tf: Tf;
  private readonly ops: TfOps;
  private readonly c: Config;
  private readonly model: SaeModel;
  private readonly eq: Equations;
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

  constructor(tf: Tf, c: Config, model: SaeModel, s: TrainState) {
    this.tf = tf;
    this.ops = tfOps(tf);
    this.c = c;
    this.model = model;
    this.eq = EQUATIONS[c.sae.variant];
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

  step(X: Float32Array, B: number, o: StepSettings): void {
    const { tf, model, p } = this;
    const { D } = model.dims;
    const frozen = new Set([...(o.frozen ?? []), ...(model.nonTrainable ?? [])]);
    const names = model.specs.map((s) => s.name).filter((n) => !frozen.has(n));
    this.adamT++;
    const bc1 = 1 - o.beta1 ** this.adamT, bc2 = 1 - o.beta2 ** this.adamT;
    tf.tidy(() => {
      const x = tf.tensor2d(X, [B, D]);
      const dead = this.maxSinceFired >= this.c.train.dead_tokens_threshold ? tf.cast(tf.greaterEqual(this.sinceFired, this.c.train.dead_tokens_threshold), "float32") : null;
      const ctx = eqContext<Tensor>(this.c, { coeff: o.coeff, dead, training: true, fixedInputBias: this.fixedInputBias });
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
        p[n].assign(tf.sub(p[n], tf.div(tf.mul(tf.div(m, bc1), o.lr), tf.add(tf.sqrt(tf.div(v, bc2)), o.eps))));
      }
      if (constrain) {
        const norms = tf.sqrt(tf.sum(tf.square(p.W_dec), 1, true));
        p.W_dec.assign(tf.div(p.W_dec, tf.where(tf.greater(norms, 0), norms, tf.onesLike(norms))));
      }
      for (const [n, t] of Object.entries(updates)) p[n].assign(t);
      // dead-latent counters (docs/variants.md#dead-latents): a latent positive on some row resets to 0
      const fired = tf.greater(tf.sum(tf.cast(tf.greater(code, 0), "float32"), 0), 0);
      this.sinceFired.assign(tf.where(fired, tf.zerosLike(this.sinceFired), tf.minimum(tf.add(this.sinceFired, B), sinceFiredCap(this.c))));
      this.sums.assign(tf.add(this.sums, tf.stack([loss, mse, sparsity, aux, gradNorm])));
      for (const t of this.last) t.dispose();
      this.last = [tf.keep(x), xhat, code];
      for (const t of kept) if (t !== xhat && t !== code) t.dispose();
    });
    this.n++;
    this.maxSinceFired = Math.min(this.maxSinceFired + B, sinceFiredCap(this.c));
  }

  flush(): StepWindow {
    const { tf } = this;
    const all = tf.tidy(() => {
      // the last batch's FVU against its own mean, and its L0
      const [x, xhat, code] = this.last;
      const sse = tf.sum(tf.square(tf.sub(x, xhat))), sst = tf.sum(tf.square(tf.sub(x, tf.mean(x, 0))));
      const l0 = tf.div(tf.sum(tf.cast(tf.greater(code, 0), "float32")), x.shape[0]);
      const dead = tf.sum(tf.cast(tf.greaterEqual(this.sinceFired, this.c.train.dead_tokens_threshold), "float32"));
      return tf.concat([this.sums, tf.stack([sse, sst, l0, dead, tf.max(this.sinceFired)])]);
    });
    const [loss, mse, sparsity, aux, gnorm, sse, sst, l0, dead, maxSince] = all.dataSync(); // the one transfer of a logging step
    all.dispose();
    this.maxSinceFired = maxSince;
    const fvu = sst > 0 ? sse / sst : NaN;
    const n = this.n;
    tf.tidy(() => this.sums.assign(tf.zeros([5])));
    this.n = 0;
    return { n, loss: loss / n, mse: mse / n, sparsity: sparsity / n, aux: aux / n, gradNorm: gnorm / n, fvu, l0, deadFrac: dead / this.model.dims.H, finite: Number.isFinite(loss) && Number.isFinite(mse) };
  }

  save(s: TrainState): void {
    for (const { name } of this.model.specs) {
      s.p.get(name).set(this.p[name].dataSync());
      s.m.get(name).set(this.m[name].dataSync());
      s.v.get(name).set(this.v[name].dataSync());
    }
    s.sinceFired.set(this.sinceFired.dataSync());
    s.adamT = this.adamT;
    const [loss, mse, sparsity, aux, gnorm] = this.sums.dataSync();
    if (!Number.isFinite(loss)) throw new SaeError("runtime", `the loss became ${loss} in the ${this.n} steps before step ${s.step}`, "lower train.lr or check the data");
    s.logWindow = { n: this.n, loss, mse, sparsity, aux, gnorm };
  }

  load(s: TrainState): void {
    const { tf } = this;
    const w = s.logWindow ?? { n: 0, loss: 0, mse: 0, sparsity: 0, aux: 0, gnorm: 0 };
    tf.tidy(() => {
      for (const { name, shape } of this.model.specs) {
        this.p[name].assign(tf.tensor(s.p.get(name), shape, "float32"));
        this.m[name].assign(tf.tensor(s.m.get(name), shape, "float32"));
        this.v[name].assign(tf.tensor(s.v.get(name), shape, "float32"));
      }
      this.sinceFired.assign(tf.tensor1d(Float32Array.from(s.sinceFired, (t) => Math.min(t, sinceFiredCap(this.c)))));
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
  const eq = EQUATIONS[c.sae.variant];
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
        const out = eq.loss(ops, vars, tf.tensor2d(Float32Array.from(X), [B, D]), eqContext<Tensor>(c, { coeff, dead: null, training: false, fixedInputBias: fib }));
        return [tf.stack([out.loss, out.mse, out.sparsity, out.aux]), out.xhat, out.code];
      });
      const [loss, mse, sparsity, aux] = terms.dataSync();
      const F = code.dataSync() as Float32Array, Xhat = xhat.dataSync() as Float32Array;
      for (const t of [terms, xhat, code]) t.dispose();
      return { terms: { loss, mse, sparsity, aux }, code: { kind: "dense", F: F.length === B * H ? F : new Float32Array(B * H) }, Xhat };
    },
    backward(): void {
      throw new Error("the tfjs inference model has no backward (train with TfjsStepper)");
    },
  };
}
