// Initialisation shared by the variants (docs/variants.md#initialisation): random unit directions
// for the decoder rows, the encoder tied to them (W_enc = W_decᵀ, i.e. the same [H, D] rows here)
// at norm init_norm, b_enc = 0, b_dec from the data. A free (April-style) decoder starts at
// init_norm too. Every other parameter starts at 0 unless the variant's own init says otherwise.
import type { Arr } from "../engine/types.ts";
import type { Config } from "../config/schema.ts";
import type { ParamSet } from "./params.ts";
import type { SaeModel } from "./variant.ts";
import { Rng } from "../rng.ts";
import { variantDef } from "./index.ts";

export function initParams(model: SaeModel, p: ParamSet, c: Config, sample: Arr, nSample: number): void {
  const { D, H } = model.dims;
  const rng = new Rng(c.seed, 100);
  const Wdec = p.get("W_dec"), Wenc = p.get("W_enc");
  for (let i = 0; i < H; i++) {
    let s = 0;
    for (let d = 0; d < D; d++) {
      const v = rng.normal();
      Wdec[i * D + d] = v;
      s += v * v;
    }
    const inv = 1 / Math.sqrt(s);
    for (let d = 0; d < D; d++) {
      Wdec[i * D + d] *= inv;
      Wenc[i * D + d] = Wdec[i * D + d] * c.sae.init_norm;
      if (!model.unitNormDecoder) Wdec[i * D + d] *= c.sae.init_norm;
    }
  }
  for (const { name } of model.specs) if (!["W_enc", "W_dec", "b_dec"].includes(name)) p.get(name).fill(0);
  variantDef(c.sae.variant).init?.(p, c.sae);
  const bDec = p.get("b_dec");
  if (c.sae.b_dec_init === "zeros") bDec.fill(0);
  else if (c.sae.b_dec_init === "mean") bDec.set(mean(sample, nSample, D));
  else bDec.set(geometricMedian(sample, nSample, D));
}

export function mean(X: Arr, N: number, D: number): Float64Array {
  const m = new Float64Array(D);
  for (let n = 0; n < N; n++) for (let d = 0; d < D; d++) m[d] += X[n * D + d];
  for (let d = 0; d < D; d++) m[d] /= N;
  return m;
}

/** Weiszfeld iteration from the mean: weights 1/‖x_j − g‖ (ε-guarded), ≤100 iterations, tol 1e-5. */
export function geometricMedian(X: Arr, N: number, D: number): Float64Array {
  let g = mean(X, N, D);
  for (let it = 0; it < 100; it++) {
    const next = new Float64Array(D);
    let wsum = 0;
    for (let n = 0; n < N; n++) {
      let s = 0;
      for (let d = 0; d < D; d++) s += (X[n * D + d] - g[d]) ** 2;
      const w = 1 / Math.max(Math.sqrt(s), 1e-8);
      wsum += w;
      for (let d = 0; d < D; d++) next[d] += w * X[n * D + d];
    }
    let move = 0;
    for (let d = 0; d < D; d++) {
      next[d] /= wsum;
      move += (next[d] - g[d]) ** 2;
    }
    g = next;
    if (Math.sqrt(move) < 1e-5) break;
  }
  return g;
}

/**
 * Folds the input scaling factor c (training saw c·x) into the weights so that raw activations can
 * be fed (SAELens convention, docs/variants.md#input-normalisation): W_enc ← c·W_enc, W_dec ← W_dec/c,
 * b_dec ← b_dec/c; b_enc and the latent activations are unchanged.
 */
export function foldScale(p: ParamSet, c: number): void {
  const scale = (a: Arr, s: number) => { for (let i = 0; i < a.length; i++) a[i] *= s; };
  scale(p.get("W_enc"), c);
  scale(p.get("W_dec"), 1 / c);
  scale(p.get("b_dec"), 1 / c);
}
