// Scaled-ReLU SAE as equations over Ops (docs/variants.md#scaled): u = ReLU(P), f = s ⊙ u,
//   loss = (1/B) Σ_b [ ‖x − x̂‖² + λ Σ_i u_i ]   (the penalty on the unscaled code; unit-norm decoder).
// That s stays frozen while λ > 0 is the trainer's rule (src/train/freeze.ts), not the loss's.
import { decode, output, preActivations, sqError, zero, type Equations } from "../ops.ts";

export const scaledEquations: Equations = {
  loss(ops, p, x, ctx) {
    const u = ops.relu(preActivations(ops, p, x, ctx));
    const f = ops.mul(u, p.s);
    const xhat = decode(ops, f, p);
    const sparsity = ctx.coeff === 0 ? zero(ops) : ops.div(ops.mul(ops.sum(u), ctx.coeff), ops.shape(x)[0]);
    return output(ops, sqError(ops, xhat, x), sparsity, xhat, f);
  },
};
