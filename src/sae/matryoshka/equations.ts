// Matryoshka BatchTopK as equations over Ops (docs/variants.md#matryoshka-batchtopk; Bussmann et
// al. 2025, arXiv 2503.17547): BatchTopK's code, θ update and AuxK (on the full reconstruction),
// plus the error of every inner prefix m_1 < … < m_{G−1}:
//   loss = (1/B) Σ_b Σ_g ‖x − (f[:, :m_g] W_dec[:m_g] + b_dec)‖² + α·AuxK
// f[:, :m] W_dec[:m] is written as (f ⊙ 1[i < m]) W_dec: the mask is a constant, so the gradient
// reaches the latents of the prefix only. Inference is BatchTopK's.
import { decode, sqError, type Equations } from "../ops.ts";
import { batchtopkEquations } from "../batchtopk/equations.ts";

export const matryoshkaEquations: Equations = {
  loss(ops, p, x, ctx) {
    const out = batchtopkEquations.loss(ops, p, x, ctx);
    if (!ctx.training) return out;
    const H = ops.shape(out.code)[1];
    let loss = out.loss;
    for (const m of ctx.prefixes.filter((m) => m < H)) {
      const first = ops.constant(Array.from({ length: H }, (_, i) => (i < m ? 1 : 0)), [H]);
      loss = ops.add(loss, sqError(ops, decode(ops, ops.mul(out.code, first), p), x));
    }
    return { ...out, loss };
  },
};
