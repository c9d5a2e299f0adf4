// TopK SAE with AuxK as equations over Ops (docs/variants.md#topk, #auxk; Gao et al. 2024,
// arXiv 2406.04093): f = ReLU(P) at each row's K largest pre-activations (ties to the lower
// latent), 0 elsewhere; x̂ = f W_dec + b_dec; loss = (1/B) Σ_b ‖x − x̂‖² + α·AuxK.
// The selection is a mask without gradient, so gradients reach the selected latents only.
import { decode, preActivations, sqError, zero, type EqContext, type EqOutput, type Equations, type Ops } from "../ops.ts";

export const topkEquations: Equations = {
  loss(ops, p, x, ctx) {
    const P = preActivations(ops, p, x, ctx);
    const f = ops.mul(ops.relu(P), ops.topkMask(P, Math.min(ctx.k, ops.shape(P)[1])));
    return withAuxK(ops, p, x, P, f, ctx);
  },
};

/**
 * The reconstruction, plus AuxK when α > 0 and a dead mask is given: per row the k_aux largest of
 * P among dead latents, ReLU'd, reconstruct e = sg(x − x̂) without b_dec,
 *   AuxK = Σ_b ‖ê_b − e_b‖² / Σ_b ‖e_b − ē‖²   (ē the batch mean; 0 when no latent is dead or the denominator is 0).
 * k_aux is capped at the number of dead latents by the mask itself (topkMask keeps a row's allowed
 * columns when they are fewer), so the count never has to leave the device.
 */
export function withAuxK<T>(ops: Ops<T>, p: Record<string, T>, x: T, P: T, f: T, ctx: EqContext<T>): EqOutput<T> {
  const xhat = decode(ops, f, p);
  const mse = sqError(ops, xhat, x);
  let aux = zero(ops), loss = mse;
  if (ctx.dead && ctx.auxCoefficient > 0) {
    const z = ops.mul(ops.relu(P), ops.topkMask(P, Math.min(ctx.kAux, ops.shape(P)[1]), ctx.dead));
    const e = ops.stopGradient(ops.sub(x, xhat));
    const num = ops.sum(ops.square(ops.sub(ops.matmul(z, p.W_dec), e)));
    const den = ops.sum(ops.square(ops.sub(e, ops.mean(e, 0))));
    const on = ops.mul(ops.greater(den, 0), ops.greater(ops.sum(ctx.dead), 0)); // 1, or 0 when AuxK is 0
    aux = ops.mul(ops.div(num, ops.sub(ops.add(den, 1), on)), on); // den + 1 − on: never 0
    loss = ops.add(mse, ops.mul(aux, ctx.auxCoefficient));
  }
  return { loss, mse, sparsity: zero(ops), aux, xhat, code: f };
}
