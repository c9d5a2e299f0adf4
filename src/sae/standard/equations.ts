// Standard SAE as equations over Ops (docs/variants.md#standard): f = ReLU(P), x̂ = f W_dec + b_dec,
//   loss = (1/B) Σ_b [ ‖x − x̂‖² + λ Σ_i f_i·n_i ],   n_i = 1 (constrained) or ‖d_i‖ (april).
// The unit-norm constraint of the constrained flavour is the optimiser's (projection +
// renormalisation), not part of the loss.
import { decode, output, preActivations, sqError, zero, type Equations } from "../ops.ts";

export const standardEquations: Equations = {
  loss(ops, p, x, ctx) {
    const f = ops.relu(preActivations(ops, p, x, ctx));
    const xhat = decode(ops, f, p);
    const weighted = ctx.flavour === "april" ? ops.mul(f, ops.rowNorms(p.W_dec)) : f;
    const sparsity = ctx.coeff === 0 ? zero(ops) : ops.div(ops.mul(ops.sum(weighted), ctx.coeff), ops.shape(x)[0]);
    return output(ops, sqError(ops, xhat, x), sparsity, xhat, f);
  },
};
