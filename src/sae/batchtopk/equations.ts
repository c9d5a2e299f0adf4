// BatchTopK SAE as equations over Ops (docs/variants.md#batchtopk; Bussmann et al. 2024,
// arXiv 2412.06410). r = ReLU(P).
//   training:  f = r at the K·B largest entries of the whole batch (ties to the earlier row-major
//              position), plus AuxK as in TopK; θ ← θ = 0 ? m : 0.99θ + 0.01m, m = the smallest kept value
//   inference: f = r ⊙ 1[r > θ]
// θ [1] is a running statistic: its update is computed without gradient and handed back in
// `updates` (the optimiser never steps it).
import { preActivations, type Equations } from "../ops.ts";
import { withAuxK } from "../topk/equations.ts";

/** the EMA rate of θ (SAELens) */
export const THRESHOLD_RATE = 0.01;

export const batchtopkEquations: Equations = {
  loss(ops, p, x, ctx) {
    const P = preActivations(ops, p, x, ctx);
    const r = ops.relu(P);
    const theta = p.threshold;
    if (!ctx.training) return withAuxK(ops, p, x, P, ops.mul(r, ops.greater(r, theta)), { ...ctx, dead: null });
    const [B, H] = ops.shape(P);
    const keep = ops.batchTopkMask(r, Math.min(ctx.k * B, B * H));
    const out = withAuxK(ops, p, x, P, ops.mul(r, keep), ctx);
    const m = ops.minWhere(r, keep);
    const ema = ops.add(ops.mul(theta, 1 - THRESHOLD_RATE), ops.mul(m, THRESHOLD_RATE));
    const next = ops.where(ops.greater(theta, 0), ema, m);
    const kept = ops.greater(ops.sum(keep), 0); // no value kept: θ stays
    return { ...out, updates: { threshold: ops.stopGradient(ops.where(kept, next, theta)) } };
  },
};
