// The tensor interface the variants' equations (src/sae/<variant>/equations.ts) are written in,
// and the pieces of those equations every variant shares. The tensor type T is opaque: the tfjs
// engine (src/engine/tfjs.ts) implements Ops over tf.Tensor, so the same equations give the tfjs
// training step its loss and, through autodiff, its gradients; test/autodiff.test.ts checks the
// hand-written CPU backward of each variant against them (docs/tfjs.md).
//
// Shapes, letters as in variant.ts: x [B, D], pre-activations and codes [B, H], W_enc and W_dec
// [H, D], b_enc [H], b_dec [D]. A vector [n] combined with a matrix [rows, n] broadcasts along the
// rows; a plain number is a constant scalar. Masks are float tensors of 0s and 1s.

export interface Ops<T> {
  /** a constant from host values (no gradient) */
  constant(values: ArrayLike<number>, shape: number[]): T;
  shape(a: T): number[];
  /** op(a)·op(b), op = transpose when asked */
  matmul(a: T, b: T, transposeA?: boolean, transposeB?: boolean): T;
  add(a: T, b: T | number): T;
  sub(a: T, b: T | number): T;
  mul(a: T, b: T | number): T;
  div(a: T, b: T | number): T;
  relu(a: T): T;
  exp(a: T): T;
  tanh(a: T): T;
  square(a: T): T;
  /** Σ of every entry (no axis: a scalar) or along an axis (0: down the rows → [cols]) */
  sum(a: T, axis?: 0 | 1): T;
  mean(a: T, axis?: 0 | 1): T;
  /** ‖a_r‖₂ of each row of a [rows, cols] → [rows] */
  rowNorms(a: T): T;
  /** 1 where a > b, else 0; no gradient */
  greater(a: T, b: T | number): T;
  /** cond ≠ 0 ? a : b entrywise, the three broadcast together (the gradient goes to the branch taken) */
  where(cond: T, a: T, b: T): T;
  /** the smallest entry of a where mask ≠ 0, +∞ when there is none; a scalar, no gradient */
  minWhere(a: T, mask: T): T;
  /** the same value with no gradient: sg(·) */
  stopGradient(a: T): T;
  /**
   * Per row of a [B, H]: 1 at its k largest entries among the columns where allowed ≠ 0 (null:
   * every column), 0 elsewhere; a tie at the k-th value goes to the lower column; a row with fewer
   * than k allowed columns gets all of them. No gradient.
   */
  topkMask(a: T, k: number, allowed?: T | null): T;
  /** 1 at the `total` largest positive entries of a [B, H] taken together, ties to the earlier row-major position; no gradient */
  batchTopkMask(a: T, total: number): T;
  /**
   * Heaviside step H(z − θ) (z [B, H], θ [H]) with straight-through pseudo-derivatives
   * (Rajamanoharan et al. 2024, arXiv 2407.14435, rectangle kernel K(u) = 1[|u| < ½]):
   * ∂/∂θ = −(1/ε)·K((z − θ)/ε), ∂/∂z = 0.
   */
  heavisideSte(z: T, theta: T, eps: number): T;
  /** JumpReLU z·H(z − θ): ∂/∂z = H(z − θ), ∂/∂θ = −(θ/ε)·K((z − θ)/ε) (the same paper and kernel) */
  jumpReluSte(z: T, theta: T, eps: number): T;
}

/** Everything the equations read besides the parameters and the batch. */
/** the settings of EqContext that come from a variant's own config keys (VariantDef.eqSettings) */
export type EqSettings = Pick<EqContext<unknown>, "k" | "kAux" | "auxCoefficient" | "tanhScale" | "bandwidth" | "prefixes">;

export interface EqContext<T> {
  /** the sparsity coefficient at this step (λ, TanH's A); 0 turns the penalty off */
  coeff: number;
  /** 1 for the latents counted dead [H] (AuxK), or null */
  dead: T | null;
  /** the training forward (BatchTopK selects across the batch) rather than inference */
  training: boolean;
  /** subtract b_dec from the encoder input */
  applyBDecToInput: boolean;
  /** a constant [D] the encoder subtracts instead of b_dec (SaeModel.fixedInputBias), or null */
  fixedInputBias: T | null;
  /** standard, tanh: constrained | april; gated: paper | saelens */
  flavour: string;
  /** topk, batchtopk: K, k_aux, α of AuxK */
  k: number;
  kAux: number;
  auxCoefficient: number;
  /** tanh: B of (A/B)·tanh(B·f‖d‖) */
  tanhScale: number;
  /** jumprelu: ε of the rectangle kernel */
  bandwidth: number;
  /** matryoshka: the prefix sizes m_1 < … < m_G = H (empty for the other variants) */
  prefixes: readonly number[];
}

/** Per-token means of the loss terms (scalars), the reconstruction [B, D] and the code [B, H]. */
export interface EqOutput<T> {
  loss: T;
  /** Σ_d (x − x̂)², mean over the batch */
  mse: T;
  /** the penalty as it enters the loss, coefficient included */
  sparsity: T;
  /** the auxiliary loss as the fast path reports it: AuxK before α, Gated's auxiliary reconstruction */
  aux: T;
  xhat: T;
  code: T;
  /** new values of non-trainable parameters (BatchTopK's threshold), computed without gradient */
  updates?: Record<string, T>;
}

/** A variant's forward and loss over Ops; params are keyed by the names of its ParamSpecs. */
export interface Equations {
  loss<T>(ops: Ops<T>, params: Record<string, T>, x: T, ctx: EqContext<T>): EqOutput<T>;
}

/** The encoder's input: x − b_dec (or the fixed constant in its place), or x itself. */
export function encoderInput<T>(ops: Ops<T>, p: Record<string, T>, x: T, ctx: EqContext<T>): T {
  return ctx.applyBDecToInput ? ops.sub(x, ctx.fixedInputBias ?? p.b_dec) : x;
}

/** P = (x − a·b_dec) W_encᵀ + b_enc   [B, H] */
export function preActivations<T>(ops: Ops<T>, p: Record<string, T>, x: T, ctx: EqContext<T>): T {
  return ops.add(ops.matmul(encoderInput(ops, p, x, ctx), p.W_enc, false, true), p.b_enc);
}

/** x̂ = f W_dec + b_dec   [B, D] */
export function decode<T>(ops: Ops<T>, f: T, p: Record<string, T>): T {
  return ops.add(ops.matmul(f, p.W_dec), p.b_dec);
}

/** Σ_d (x − x̂)², mean over the B rows (the reduction of every variant, docs/variants.md) */
export function sqError<T>(ops: Ops<T>, xhat: T, x: T): T {
  return ops.div(ops.sum(ops.square(ops.sub(xhat, x))), ops.shape(x)[0]);
}

/** the output of a variant with only a reconstruction and a penalty */
export function output<T>(ops: Ops<T>, mse: T, sparsity: T, xhat: T, code: T): EqOutput<T> {
  return { loss: ops.add(mse, sparsity), mse, sparsity, aux: zero(ops), xhat, code };
}

export function zero<T>(ops: Ops<T>): T {
  return ops.constant([0], []);
}
