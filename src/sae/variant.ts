// The contract every SAE variant implements, and the helpers they share.
//
// Layout (row-major, letters B batch, D input dim, H latents, K top-k):
//   W_enc [H, D]  encoder rows, one per latent (torch `encoder.weight` layout; SAELens's W_enc is
//                 its transpose and export transposes it)
//   b_enc [H], W_dec [H, D] (row i = dictionary atom d_i), b_dec [D]
//   P = (X − a·b_dec) W_encᵀ + b_enc,  F = σ(P),  X̂ = F W_dec + b_dec
// Loss reduction (sae-variants.md §1.6): squared error summed over D, mean over the batch, so the
// sparsity coefficient λ is relative to Σ_d (x − x̂)² per token.
import type { Arr, Engine } from "../engine/types.ts";
import type { ParamSpec, ParamSet } from "./params.ts";

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

export interface ForwardResult {
  terms: LossTerms;
  code: Code;
  /** reconstruction [B, D] */
  Xhat: Arr;
}

export interface SaeModel {
  readonly variant: string;
  readonly dims: Dims;
  readonly specs: ParamSpec[];
  /** decoder rows kept at unit norm by projection + renormalisation (sae-variants.md §1.3-1) */
  readonly unitNormDecoder: boolean;
  /** whether the encoder input subtracts b_dec */
  readonly applyBDecToInput: boolean;
  /**
   * A constant the encoder subtracts instead of b_dec: b_dec's value when a fine-tune trains b_dec
   * with the encoder frozen, so that the code stays bit-for-bit what it was (sae-variants.md §7.10).
   */
  readonly fixedInputBias: Arr | null;
  /** parameters the optimiser never steps (statistics the model maintains itself) */
  readonly nonTrainable?: readonly string[];
  /** bytes of scratch memory the model holds */
  workspaceBytes(): number;
  /** computes the loss and caches what backward needs */
  forward(inp: StepInput): ForwardResult;
  /** accumulates (+=) the gradient of the last forward's loss into grads */
  backward(inp: StepInput, grads: ParamSet): void;
}

export function standardSpecs({ D, H }: Dims): ParamSpec[] {
  return [
    { name: "W_enc", shape: [H, D] },
    { name: "b_enc", shape: [H] },
    { name: "W_dec", shape: [H, D] },
    { name: "b_dec", shape: [D] },
  ];
}

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
export function centerInput(X: Arr, bDec: Arr, apply: boolean, B: number, D: number, out: Arr): Arr {
  if (!apply) return X;
  for (let b = 0; b < B; b++) for (let d = 0; d < D; d++) out[b * D + d] = X[b * D + d] - bDec[d];
  return out;
}

/** Dense decode: out = F W_dec + b_dec.  F [B, H], W_dec [H, D], out [B, D]. */
export function denseDecode(e: Engine, F: Arr, Wdec: Arr, bDec: Arr, dims: Dims, B: number, out: Arr): Arr {
  for (let b = 0; b < B; b++) out.set(bDec, b * dims.D);
  e.gemm(false, false, B, dims.D, dims.H, 1, F, Wdec, 1, out);
  return out;
}

/** E = X̂ − X in place of Ehat's storage; returns Σ E² (over the whole batch). */
export function residual(Xhat: Arr, X: Arr, E: Arr): number {
  let s = 0;
  for (let i = 0; i < E.length; i++) {
    const v = Xhat[i] - X[i];
    E[i] = v;
    s += v * v;
  }
  return s;
}

/** G = scale·E (the upstream gradient of Σ_d e², mean over the batch, is (2/B)·E). */
export function scaled(E: Arr, scale: number, G: Arr): Arr {
  for (let i = 0; i < E.length; i++) G[i] = scale * E[i];
  return G;
}

/** db_dec −= Σ_b (G_P W_enc)[b] = −(Σ_b G_P[b]) W_enc, for the pre-encoder bias. gpSum is [H]. */
export function backpropInputBias(e: Engine, gpSum: Arr, Wenc: Arr, dims: Dims, dbDec: Arr): void {
  e.gemm(false, false, 1, dims.D, dims.H, -1, gpSum, Wenc, 1, dbDec);
}
