// JumpReLU SAE as equations over Ops (docs/variants.md#jumprelu; Rajamanoharan et al. 2024,
// arXiv 2407.14435): θ = e^{log θ}, f = P ⊙ H(P − θ),
//   loss = (1/B) Σ_b [ ‖x − x̂‖² + λ Σ_i H(P_i − θ_i) ].
// H's pseudo-derivatives (rectangle kernel of bandwidth ε) are in Ops.jumpReluSte and
// Ops.heavisideSte; the chain rule through e^{log θ} is autodiff's.
import { decode, output, preActivations, sqError, type Equations } from "../ops.ts";

export const jumpreluEquations: Equations = {
  loss(ops, p, x, ctx) {
    const P = preActivations(ops, p, x, ctx);
    const theta = ops.exp(p.log_threshold);
    const f = ops.jumpReluSte(P, theta, ctx.bandwidth);
    const xhat = decode(ops, f, p);
    const l0 = ops.sum(ops.heavisideSte(P, theta, ctx.bandwidth));
    return output(ops, sqError(ops, xhat, x), ops.div(ops.mul(l0, ctx.coeff), ops.shape(x)[0]), xhat, f);
  },
};
