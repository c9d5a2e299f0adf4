// Evaluation metrics with exact definitions (docs/metrics.md; README "Metrics"). All in the
// units of the X passed in (the CLI passes raw activations and folded weights).
//   mse          mean over tokens of Σ_d (x − x̂)²
//   fvu          Σ‖x − x̂‖² / Σ‖x − x̄‖², x̄ the per-dim mean over the eval set; explained_variance = 1 − fvu
//   l0, l1       mean over tokens of #{i: f_i > 0} and of Σ_i f_i‖d_i‖ (activations in input units)
//   dead, dense  fraction of latents firing on no eval token, on more than 10% of them
//   l2_ratio     mean over tokens of ‖x̂‖/‖x‖;   cosine: mean of x·x̂/(‖x‖‖x̂‖)
//   gamma        relative reconstruction bias E‖x̂‖²/E[x·x̂] (Gated paper eq. 9–10); < 1 = shrinkage
//   mmcs_recall  mean over true features of the best cosine with a decoder row; mmcs_precision:
//                mean over decoder rows of the best cosine with a true feature; recovered_0_9:
//                fraction of true features whose best cosine exceeds 0.9
import type { Arr, Engine } from "../engine/types.ts";
import type { ParamSet } from "../sae/params.ts";
import type { SaeModel } from "../sae/variant.ts";
import type { GroundTruth } from "../data/source.ts";
import type { Convention, DownstreamResult } from "./downstream.ts";

export interface EvalResult {
  tokens: number;
  mse: number;
  fvu: number;
  explained_variance: number;
  l0: number;
  l1: number;
  dead_frac: number;
  dense_frac: number;
  l2_ratio: number;
  gamma: number;
  cosine: number;
  /** latents per decade of log10 firing density: "dead", "[-5,-4)", ..., "[-1,0]" */
  density_histogram: Record<string, number>;
  ground_truth?: { mmcs_recall: number; mmcs_precision: number; recovered_0_9: number; n_features: number };
  /** the language model's loss with the SAE spliced in (src/eval/downstream.ts) */
  downstream?: DownstreamResult;
  /** sae eval --convention all: the downstream loss under each convention (docs/downstream.md) */
  downstream_by_convention?: Partial<Record<Convention, DownstreamResult>>;
}

export function evaluate(e: Engine, model: SaeModel, p: ParamSet, X: Float32Array, N: number, gt: GroundTruth | null, chunk = 4096): EvalResult {
  const { D, H } = model.dims;
  const xbar = new Float64Array(D);
  for (let n = 0; n < N; n++) for (let d = 0; d < D; d++) xbar[d] += X[n * D + d] / N;
  const norms = new Float32Array(H);
  e.rowNorms(p.get("W_dec"), H, D, norms);
  const fires = new Float64Array(H);
  let sse = 0, sst = 0, l0 = 0, l1 = 0, xhat2 = 0, xdot = 0, l2r = 0, cos = 0;
  for (let start = 0; start < N; start += chunk) {
    const B = Math.min(chunk, N - start);
    const Xb = X.subarray(start * D, (start + B) * D);
    const { code, Xhat } = model.forward({ e, p, X: Xb, B, coeff: 0, dead: null });
    for (let b = 0; b < B; b++) {
      let s2 = 0, t2 = 0, h2 = 0, x2 = 0, xh = 0;
      for (let d = 0; d < D; d++) {
        const x = Xb[b * D + d], h = Xhat[b * D + d];
        s2 += (x - h) ** 2;
        t2 += (x - xbar[d]) ** 2;
        h2 += h * h;
        x2 += x * x;
        xh += x * h;
      }
      sse += s2; sst += t2; xhat2 += h2; xdot += xh;
      const nx = Math.sqrt(x2), nh = Math.sqrt(h2);
      l2r += nx > 0 ? nh / nx : 0;
      cos += nx > 0 && nh > 0 ? xh / (nx * nh) : 0;
    }
    const tally = (i: number, f: number) => {
      if (f > 0) { fires[i]++; l0++; l1 += f * norms[i]; }
    };
    if (code.kind === "dense") {
      for (let b = 0; b < B; b++) for (let i = 0; i < H; i++) tally(i, code.F[b * H + i]);
    } else {
      for (let j = 0; j < B * code.k; j++) tally(code.idx[j], code.val[j]);
    }
  }
  const hist: Record<string, number> = { dead: 0 };
  for (let dec = -10; dec < 0; dec++) hist[`[${dec},${dec + 1})`] = 0;
  let dead = 0, dense = 0;
  for (let i = 0; i < H; i++) {
    const rho = fires[i] / N;
    if (rho === 0) { dead++; hist.dead++; continue; }
    if (rho > 0.1) dense++;
    const dec = Math.max(-10, Math.min(-1, Math.floor(Math.log10(rho))));
    hist[`[${dec},${dec + 1})`]++;
  }
  for (const k of Object.keys(hist)) if (hist[k] === 0 && k !== "dead") delete hist[k];
  const fvu = sst > 0 ? sse / sst : NaN;
  const r: EvalResult = {
    tokens: N, mse: sse / N, fvu, explained_variance: 1 - fvu, l0: l0 / N, l1: l1 / N,
    dead_frac: dead / H, dense_frac: dense / H, l2_ratio: l2r / N, gamma: xhat2 / xdot, cosine: cos / N,
    density_histogram: hist,
  };
  if (gt) r.ground_truth = featureRecovery(e, p.get("W_dec"), H, D, gt);
  return r;
}

/** MMCS in both directions and the fraction of true features recovered at cosine > 0.9. */
export function featureRecovery(e: Engine, Wdec: Arr, H: number, D: number, gt: GroundTruth): NonNullable<EvalResult["ground_truth"]> {
  const atoms = new Float32Array(Wdec);
  e.normalizeRows(atoms, H, D);
  const truth = new Float32Array(gt.features);
  e.normalizeRows(truth, gt.G, D);
  const C = new Float32Array(gt.G * H); // cos(g_j, d̂_i)  [G, H]
  e.gemm(false, true, gt.G, H, D, 1, truth, atoms, 0, C);
  const bestAtom = new Float64Array(H).fill(-1);
  let recall = 0, found = 0;
  for (let j = 0; j < gt.G; j++) {
    let best = -1;
    for (let i = 0; i < H; i++) {
      const c = C[j * H + i];
      if (c > best) best = c;
      if (c > bestAtom[i]) bestAtom[i] = c;
    }
    recall += best;
    if (best > 0.9) found++;
  }
  return {
    mmcs_recall: recall / gt.G,
    mmcs_precision: bestAtom.reduce((s, v) => s + v, 0) / H,
    recovered_0_9: found / gt.G,
    n_features: gt.G,
  };
}
