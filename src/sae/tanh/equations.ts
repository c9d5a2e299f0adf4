// TanH-penalty SAE as equations over Ops (docs/variants.md#tanh): f = ReLU(P),
//   loss = (1/B) Σ_b [ ‖x − x̂‖² + Σ_i (A/B_t)·tanh(B_t·f_i·n_i) ],   n_i = ‖d_i‖ (april) or 1 (constrained),
// A = the coefficient, B_t = sae.tanh_scale.
import { decode, output, preActivations, sqError, zero, type Equations } from "../ops.ts";

export const tanhEquations: Equations = {
  loss(ops, p, x, ctx) {
    const f = ops.relu(preActivations(ops, p, x, ctx));
    const xhat = decode(ops, f, p);
    const fn = ctx.flavour === "april" ? ops.mul(f, ops.rowNorms(p.W_dec)) : f;
    const bt = ctx.tanhScale;
    const sparsity = ctx.coeff === 0 ? zero(ops) : ops.div(ops.mul(ops.sum(ops.tanh(ops.mul(fn, bt))), ctx.coeff / bt), ops.shape(x)[0]);
    return output(ops, sqError(ops, xhat, x), sparsity, xhat, f);
  },
};
