// The contracts every SAE variant implements, and the helpers their fast CPU paths share.
//
// A variant is one folder src/sae/<name>/ whose index.ts exports a VariantDef: everything the rest
// of the tool knows about it (config keys, parameters and their init, freeze groups, fine-tune
// modes, the fast CPU model, the SAELens/sparsify names, conversions from other variants). The
// registry (index.ts) is the only place that lists the variants. docs/variants.md has the math.
//
// Layout (row-major, letters B batch, D input dim, H latents, K top-k):
//   W_enc [H, D]  encoder rows, one per latent (torch `encoder.weight` layout; SAELens's W_enc is
//                 its transpose and export transposes it)
//   b_enc [H], W_dec [H, D] (row i = dictionary atom d_i), b_dec [D]
//   P = (X − a·b_dec) W_encᵀ + b_enc,  F = σ(P),  X̂ = F W_dec + b_dec
// Loss reduction (docs/variants.md#conventions): squared error summed over D, mean over the batch,
// so the sparsity coefficient λ is relative to Σ_d (x − x̂)² per token.
import type { z } from "zod";
import type { Arr, Engine } from "../engine/types.ts";
import type { Tensor } from "../io/safetensors.ts";
import type { ParamSpec, ParamSet } from "./params.ts";
import type { EqSettings, Equations } from "./ops.ts";

/** The resolved `sae:` section of a config: the keys every variant has, then the variants' own. */
export interface SaeSettings {
  variant: string;
  d_sae: number;
  expansion_factor: number;
  /** absent for a variant without flavours */
  flavour?: string;
  apply_b_dec_to_input: boolean;
  b_dec_init: "geometric_median" | "mean" | "zeros";
  init_norm: number;
  [key: string]: unknown;
}

/** What export writes for a variant in the SAELens v6 layout, beyond W_enc, W_dec and b_dec. */
export interface SaeLensOut {
  architecture: string;
  /** extra tensors (b_enc, threshold, ...) by SAELens name */
  tensors: Record<string, Tensor>;
  /** extra top-level cfg.json fields (e.g. k) */
  cfg?: Record<string, unknown>;
}

/** A SAELens cfg.json architecture this variant imports. */
export interface SaeLensImport {
  architecture: string;
  /** the sae: config section that holds such a folder, or a reason it cannot be imported */
  settings(cfg: Record<string, any>): Record<string, unknown>;
  /**
   * Rewrites the folder's tensors into the variant's own export layout (what fromSaeLens reads),
   * e.g. folding decoder norms into the encoder. Shapes: W_enc [D, H], W_dec [H, D].
   */
  adapt?(tensors: Record<string, Tensor>, cfg: Record<string, any>, D: number, H: number): Record<string, Tensor>;
}

export interface VariantDef<S extends SaeSettings = SaeSettings> {
  /** the value of sae.variant */
  readonly name: string;
  /** for tables and logs: the variant and its paper */
  readonly title: string;
  /** its own config keys under sae:, with defaults and documentation (shared definitions: keys.ts) */
  readonly keys: z.ZodRawShape;
  /** flavours (sae.flavour), the first being the default */
  readonly flavours?: readonly string[];
  /** its defaults for keys every variant has */
  readonly defaults?: { init_norm?: number; apply_b_dec_to_input?: boolean };
  /** the learning rate when train.lr is unset */
  defaultLr(H: number): number;
  /** the sparsity penalty's coefficient (0 for variants made sparse by k) */
  coefficient(s: S): number;
  /** the key that sets its sparsity (k, or the penalty's coefficient) and its label: `sae runs --wide` shows "label=value", e.g. "k=32" */
  readonly knob: { key: keyof S & string; label: string };
  /** defaults of its own keys that depend on the dimensions, written into the resolved config */
  resolve?(s: S, D: number): Record<string, unknown>;
  /** checks across keys, once the config is resolved; fail names the sae: key */
  check?(s: S, fail: (key: string, msg: string, hint: string) => never): void;
  /** parameters, with their freeze groups */
  specs(dims: Dims, s: S): ParamSpec[];
  /** sets the parameters that the shared init (init.ts: W_enc, W_dec, b_dec) leaves at 0 */
  init?(p: ParamSet, s: S): void;
  /** fine-tuning modes (the feature-suppression study) by name: the parameters each trains */
  readonly modes?: Record<string, readonly string[]>;
  /** parameters that stay frozen while the sparsity penalty is on */
  readonly frozenUnderPenalty?: readonly string[];
  /** the fast CPU model. fixedInputBias: see SaeModel.fixedInputBias */
  create(dims: Dims, s: S, fixedInputBias: Arr | null): SaeModel;
  /** its forward and loss as equations over Ops (ops.ts): the tfjs engine's step and the autodiff oracle of the fast model's backward */
  readonly equations: Equations;
  /** the equations' own settings from its config keys (EqContext: k, tanhScale, bandwidth, prefixes, ...) */
  eqSettings?(s: S): Partial<EqSettings>;
  /**
   * Folds a constant input bias b into the encoder biases: (x − b)Wᵀ + β = xWᵀ + (β − W b).
   * shift = W_enc b [H].
   */
  foldInputBias(p: ParamSet, shift: Arr): void;
  /** the export in the SAELens v6 layout (input scale already folded into p) */
  toSaeLens(p: ParamSet, dims: Dims, s: S): SaeLensOut;
  /** the inverse of toSaeLens; `need` reads a tensor of the given shape or throws */
  fromSaeLens(p: ParamSet, need: (name: string, shape: number[]) => Arr, dims: Dims): void;
  /** SAELens architectures this variant imports */
  readonly saeLensImports?: readonly SaeLensImport[];
  /** how sparsify holds this variant, if it does: its cfg.json `activation`, the cfg.json export writes, the sae: section an import gets */
  readonly sparsify?: {
    activation: string;
    /** a sparsify cfg.json without `activation` means this variant */
    isDefault?: boolean;
    cfg(s: S, D: number, H: number): Record<string, unknown>;
    settings(cfg: Record<string, any>): Record<string, unknown>;
  };
  /**
   * Fine-tune inits from another variant's parameters, by that variant's name: fills `to` (this
   * variant's layout) from `from` exactly (the same SAE function).
   */
  readonly convertFrom?: Record<string, (from: ParamSet, to: ParamSet, dims: Dims) => void>;
}

/** a VariantDef with its settings typed by its own keys */
export function defineVariant<K extends z.ZodRawShape>(keys: K, def: Omit<VariantDef<SaeSettings & z.infer<z.ZodObject<K>>>, "keys">): VariantDef {
  return { keys, ...def } as unknown as VariantDef;
}

/** the sparsity setting of a resolved sae: section as `sae runs --wide` shows it, e.g. "k=32" */
export function knobText(def: VariantDef, s: SaeSettings): string {
  return `${def.knob.label}=${s[def.knob.key]}`;
}

export interface Dims { D: number; H: number }

/** A batch's latent code: dense [B, H], or K (index, value) pairs per row. */
export type Code =
  | { kind: "dense"; F: Arr }
  | { kind: "sparse"; k: number; idx: Int32Array; val: Arr };

/** f[b, i] of a code of either kind (H latents) */
export function codeValue(code: Code, H: number, b: number, i: number): number {
  if (code.kind === "dense") return code.F[b * H + i];
  for (let j = b * code.k; j < (b + 1) * code.k; j++) if (code.idx[j] === i && code.val[j] !== 0) return code.val[j];
  return 0;
}

/** Per-token means of the loss terms of one batch. */
export interface LossTerms {
  loss: number;
  /** Σ_d (x − x̂)², mean over tokens */
  mse: number;
  /** the sparsity penalty as it entered the loss (coefficient included) */
  sparsity: number;
  /** auxiliary loss before its coefficient (AuxK), 0 when absent */
  aux: number;
}

export interface StepInput {
  e: Engine;
  p: ParamSet;
  /** inputs [B, D] (already normalised) */
  X: Arr;
  B: number;
  /** the current sparsity coefficient (after warm-up), for penalty variants */
  coeff: number;
  /** 1 for latents counted dead (AuxK), or null */
  dead: Uint8Array | null;
  /** test hook: a fixed AuxK target residual [B, D] instead of sg(X − X̂) */
  auxTarget?: Arr;
  /** training forward (BatchTopK selects across the batch and updates its threshold) rather than inference */
  training?: boolean;
}

export interface ForwardResult<S = unknown> {
  terms: LossTerms;
  code: Code;
  /** reconstruction [B, D] */
  Xhat: Arr;
  /** what backward needs from this forward (arrays in the model's workspace: valid until the next forward) */
  state: S;
}

/** The fast CPU model of a variant: explicit forward and backward (llm.c style). */
export interface SaeModel<S = any> {
  readonly variant: string;
  readonly dims: Dims;
  readonly specs: ParamSpec[];
  /** decoder rows kept at unit norm by projection + renormalisation (docs/variants.md#unit-norm-decoder) */
  readonly unitNormDecoder: boolean;
  /** whether the encoder input subtracts b_dec */
  readonly applyBDecToInput: boolean;
  /**
   * A constant the encoder subtracts instead of b_dec: b_dec's value when a fine-tune trains b_dec
   * with the encoder frozen, so that the code stays bit-for-bit what it was (docs/variants.md#fixed-input-bias).
   */
  readonly fixedInputBias: Arr | null;
  /** parameters the optimiser never steps (statistics the model maintains itself) */
  readonly nonTrainable?: readonly string[];
  /** bytes of scratch memory the model holds */
  workspaceBytes(): number;
  /**
   * gradients backward writes whole (=) instead of adding to: the step does not zero them first (a
   * pass of 100 MB at H = 16384, D = 768 saved; docs/training.md#one-step)
   */
  readonly writesGradients?: readonly string[];
  /** computes the loss, and returns with it the state backward needs */
  forward(inp: StepInput): ForwardResult<S>;
  /**
   * accumulates (+=) into grads the gradient of the loss of the forward that returned `state`
   * (writes those of writesGradients; leaves those of nonTrainable parameters at 0); may return
   * Σ g² over every gradient in grads, when it had them on the way, so that the step's clipping need
   * not read them again
   */
  backward(inp: StepInput, state: S, grads: ParamSet): number | void;
}

export const ENCODER = ["encoder"] as const;
export const DECODER = ["decoder"] as const;

/** W_enc, b_enc, W_dec, b_dec: the parameters of a plain SAE */
export function standardSpecs({ D, H }: Dims): ParamSpec[] {
  return [
    { name: "W_enc", shape: [H, D], groups: ENCODER },
    { name: "b_enc", shape: [H], groups: ENCODER },
    { name: "W_dec", shape: [H, D], groups: DECODER },
    { name: "b_dec", shape: [D], groups: DECODER },
  ];
}

/** export pieces shared by variants: a float32 tensor of the given shape */
export function f32(data: ArrayLike<number>, shape: number[]): Tensor {
  return { dtype: "F32", shape, data: Float32Array.from(data) };
}

/** The SAELens pieces of a variant whose parameters are W_enc, b_enc, W_dec, b_dec. */
export function plainToSaeLens(architecture: string) {
  return (p: ParamSet, { H }: Dims): SaeLensOut => ({ architecture, tensors: { b_enc: f32(p.get("b_enc"), [H]) } });
}
export function plainFromSaeLens(p: ParamSet, need: (name: string, shape: number[]) => Arr, { H }: Dims): void {
  p.get("b_enc").set(need("b_enc", [H]));
}

/** foldInputBias for variants whose encoder bias is b_enc */
export function foldIntoEncoderBias(p: ParamSet, shift: Arr): void {
  const b = p.get("b_enc");
  for (let i = 0; i < b.length; i++) b[i] -= shift[i];
}

const F64 = new Float64Array(0); // the `like` of Workspace.d

/** Scratch arrays, keyed by name, reallocated when the batch size or dtype changes. */
export class Workspace {
  private bufs = new Map<string, Arr>();
  /** bytes held (the benchmark reports it) */
  bytes(): number {
    let n = 0;
    for (const a of this.bufs.values()) n += a.byteLength;
    return n;
  }
  f(name: string, n: number, like: Arr): Arr {
    let a = this.bufs.get(name);
    if (!a || a.length !== n || a.constructor !== like.constructor) {
      a = like instanceof Float64Array ? new Float64Array(n) : new Float32Array(n);
      this.bufs.set(name, a);
    }
    return a;
  }
  /** a float64 array, whatever the batch's type (for values kept as TypeScript sums them) */
  d(name: string, n: number): Float64Array {
    return this.f(name, n, F64) as Float64Array;
  }
  i(name: string, n: number): Int32Array {
    let a = this.bufs.get(name) as unknown as Int32Array | undefined;
    if (!a || a.length !== n) {
      a = new Int32Array(n);
      this.bufs.set(name, a as unknown as Arr);
    }
    return a;
  }
}

/** Xc = X − a·b_dec, [B, D] */
export function centerInput(e: Engine, X: Arr, bDec: Arr, apply: boolean, B: number, D: number, out: Arr): Arr {
  if (!apply) return X;
  e.axpby(1, X.subarray(0, B * D), -1, bDec, out);
  return out;
}

/** Dense decode: out = F W_dec + b_dec.  F [B, H], W_dec [H, D], out [B, D]. */
export function denseDecode(e: Engine, F: Arr, Wdec: Arr, bDec: Arr, dims: Dims, B: number, out: Arr): Arr {
  for (let b = 0; b < B; b++) out.set(bDec, b * dims.D);
  e.gemm(false, false, B, dims.D, dims.H, 1, F, Wdec, 1, out);
  return out;
}

/** E = X̂ − X in place of Ehat's storage; returns Σ E² (over the whole batch). */
export function residual(e: Engine, Xhat: Arr, X: Arr, E: Arr): number {
  return e.axpby(1, Xhat, -1, X, E);
}

/** G = scale·E (the upstream gradient of Σ_d e², mean over the batch, is (2/B)·E). */
export function scaled(e: Engine, E: Arr, scale: number, G: Arr): Arr {
  e.axpby(scale, E, 0, null, G);
  return G;
}

/**
 * dW[i] += s[i]·W[i] for every row i of [H, D] (a penalty on the decoder's row norms), as
 * scatterRows over the identity code: a TypeScript loop over the 12.6 M elements took 35 ms
 */
export function addScaledRows(e: Engine, ws: Workspace, s: Arr, W: Arr, { D, H }: Dims, dW: Arr): void {
  const ids = ws.i("iota", H);
  if (H > 1 && ids[H - 1] !== H - 1) for (let i = 0; i < H; i++) ids[i] = i;
  e.scatterRows(ids, s, H, 1, W, H, D, dW);
}

/** db_dec −= Σ_b (G_P W_enc)[b] = −(Σ_b G_P[b]) W_enc, for the pre-encoder bias. gpSum is [H]. */
export function backpropInputBias(e: Engine, gpSum: Arr, Wenc: Arr, dims: Dims, dbDec: Arr): void {
  e.gemm(false, false, 1, dims.D, dims.H, -1, gpSum, Wenc, 1, dbDec);
}
