// Synthetic activations with known ground-truth features (Sharkey et al. 2022 toy models;
// HoagyC/sparse_coding; docs/training.md#synthetic-data): x = Σ_i c_i g_i + noise, with G unit-norm Gaussian
// directions g_i in R^D, feature i active with probability p_i ∝ decay^i (rescaled so that the
// expected number of active features is mean_active, unlike HoagyC's generator, which leaves it
// at ≈0.19·k), and active coefficients c_i ~ U[magnitude_min, magnitude_max].
// Correlated firing (correlation ρ > 0): feature i fires when Φ(√ρ·s + √(1−ρ)·ε_i) < p_i, with one
// shared s ~ N(0,1) per token: a Gaussian copula that keeps every marginal p_i.
import { Rng } from "../rng.ts";
import type { DataSource, GroundTruth } from "./source.ts";
import type { Config } from "../config/schema.ts";

type SyntheticConfig = Config["data"]["synthetic"];

const STREAM = { features: 1, train: 2, eval: 3, estimate: 4 } as const;

export class SyntheticSource implements DataSource {
  readonly D: number;
  readonly G: number;
  readonly features: Float32Array;
  readonly probs: Float64Array;
  private readonly cfg: SyntheticConfig;
  private readonly seed: number;

  constructor(cfg: SyntheticConfig, D: number, seed: number) {
    this.cfg = cfg;
    this.D = D;
    this.G = cfg.n_features;
    this.seed = seed;
    const rng = new Rng(seed, STREAM.features);
    this.features = new Float32Array(this.G * D);
    for (let g = 0; g < this.G; g++) {
      let s = 0;
      for (let d = 0; d < D; d++) {
        const v = rng.normal();
        this.features[g * D + d] = v;
        s += v * v;
      }
      const inv = 1 / Math.sqrt(s);
      for (let d = 0; d < D; d++) this.features[g * D + d] *= inv;
    }
    this.probs = firingProbabilities(this.G, cfg.decay, cfg.mean_active);
  }

  describe(): string {
    const c = this.cfg;
    return `synthetic: D=${this.D}, ${this.G} ground-truth features, ${c.mean_active} active per token on average, decay ${c.decay}, correlation ${c.correlation}, noise ${c.noise}`;
  }

  trainBatch(index: number, B: number): Float32Array {
    return this.draw(B, new Rng(this.seed, STREAM.train, index));
  }

  estimationSample(n: number): Float32Array {
    return this.draw(n, new Rng(this.seed, STREAM.estimate));
  }

  evalSet(n: number): Float32Array {
    return this.draw(n, new Rng(this.seed, STREAM.eval));
  }

  groundTruth(): GroundTruth {
    return { features: this.features, G: this.G };
  }

  private draw(B: number, rng: Rng): Float32Array {
    const { D, G, features, probs } = this;
    const { correlation: rho, magnitude_min: lo, magnitude_max: hi, noise } = this.cfg;
    const out = new Float32Array(B * D);
    const a = Math.sqrt(rho), b = Math.sqrt(1 - rho);
    for (let t = 0; t < B; t++) {
      const o = t * D;
      const shared = rho > 0 ? rng.normal() : 0;
      for (let g = 0; g < G; g++) {
        const u = rho > 0 ? normalCdf(a * shared + b * rng.normal()) : rng.next();
        if (u >= probs[g]) continue;
        const c = lo + (hi - lo) * rng.next();
        const f = g * D;
        for (let d = 0; d < D; d++) out[o + d] += c * features[f + d];
      }
      if (noise > 0) for (let d = 0; d < D; d++) out[o + d] += noise * rng.normal();
    }
    return out;
  }
}

/** p_i = min(1, z·decay^i) with z chosen so that Σ p_i = mean_active (bisection on z). */
export function firingProbabilities(G: number, decay: number, meanActive: number): Float64Array {
  const base = new Float64Array(G);
  for (let i = 0; i < G; i++) base[i] = Math.pow(decay, i);
  const total = (z: number) => base.reduce((s, v) => s + Math.min(1, z * v), 0);
  let lo = 0, hi = 1;
  while (total(hi) < meanActive) hi *= 2;
  for (let it = 0; it < 100; it++) {
    const mid = (lo + hi) / 2;
    if (total(mid) < meanActive) lo = mid; else hi = mid;
  }
  return base.map((v) => Math.min(1, hi * v));
}

/** Φ(x), via erf (Abramowitz & Stegun 7.1.26, |error| < 1.5e-7) */
export function normalCdf(x: number): number {
  const z = Math.abs(x) / Math.SQRT2;
  const t = 1 / (1 + 0.3275911 * z);
  const y = 1 - ((((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * Math.exp(-z * z);
  return x >= 0 ? 0.5 * (1 + y) : 0.5 * (1 - y);
}
