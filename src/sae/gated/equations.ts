// Gated SAE as equations over Ops (docs/variants.md#gated; Rajamanoharan et al. 2024, arXiv 2404.16014):
//   Z = Xc W_encᵀ,  π_gate = Z + b_gate,  π_mag = Z ⊙ e^{r_mag} + b_mag
//   f = 1[π_gate > 0] ⊙ ReLU(π_mag),  x̂ = f W_dec + b_dec,  a = ReLU(π_gate)
//   loss = (1/B) Σ_b [ ‖x − x̂‖² + λ Σ_i a_i·n_i + ‖x − (a·Ŵ_dec + b̂_dec)‖² ]
// paper: Ŵ_dec, b̂_dec = sg(W_dec), sg(b_dec), n_i = 1; saelens: the decoder itself, n_i = ‖d_i‖.
// The gate 1[·] passes no gradient: the gate parameters learn from the penalty and the auxiliary term.
import { encoderInput, sqError, type Equations } from "../ops.ts";

export const gatedEquations: Equations = {
  loss(ops, p, x, ctx) {
    const paper = ctx.flavour !== "saelens";
    const z = ops.matmul(encoderInput(ops, p, x, ctx), p.W_enc, false, true);
    const gate = ops.add(z, p.b_gate);
    const f = ops.mul(ops.greater(gate, 0), ops.relu(ops.add(ops.mul(z, ops.exp(p.r_mag)), p.b_mag)));
    const xhat = ops.add(ops.matmul(f, p.W_dec), p.b_dec);
    const a = ops.relu(gate);
    const [Wd, bd] = paper ? [ops.stopGradient(p.W_dec), ops.stopGradient(p.b_dec)] : [p.W_dec, p.b_dec];
    const aux = sqError(ops, ops.add(ops.matmul(a, Wd), bd), x);
    const weighted = paper ? a : ops.mul(a, ops.rowNorms(p.W_dec));
    const sparsity = ops.div(ops.mul(ops.sum(weighted), ctx.coeff), ops.shape(x)[0]);
    const mse = sqError(ops, xhat, x);
    return { loss: ops.add(ops.add(mse, sparsity), aux), mse, sparsity, aux, xhat, code: f };
  },
};
