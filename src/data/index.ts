import type { Config } from "../config/schema.ts";
import type { DataSource } from "./source.ts";
import { SyntheticSource } from "./synthetic.ts";

export function createSource(c: Config): DataSource {
  switch (c.data.source) {
    case "synthetic":
      return new SyntheticSource(c.data.synthetic, c.data.d_in, c.seed);
  }
}

/**
 * The input scaling factor c (the SAE trains on c·x), estimated once from a sample
 * (sae-variants.md §1.1): unit_mean_squared_norm → c = 1/√E‖x‖² (so E‖cx‖² = 1);
 * sqrt_d_mean_norm → c = √D/E‖x‖; none → 1.
 */
export function estimateScale(X: Float32Array, N: number, D: number, mode: Config["data"]["normalize"]): number {
  if (mode === "none") return 1;
  let sq = 0, norm = 0;
  for (let n = 0; n < N; n++) {
    let s = 0;
    for (let d = 0; d < D; d++) s += X[n * D + d] ** 2;
    sq += s;
    norm += Math.sqrt(s);
  }
  if (sq === 0) return 1;
  return mode === "unit_mean_squared_norm" ? 1 / Math.sqrt(sq / N) : Math.sqrt(D) / (norm / N);
}

export function scaleInPlace(X: Float32Array, c: number): void {
  if (c !== 1) for (let i = 0; i < X.length; i++) X[i] *= c;
}
