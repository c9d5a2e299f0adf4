// Gated SAE (Rajamanoharan et al. 2024, arXiv 2404.16014; docs/variants.md#gated): the gate and
// magnitude paths share W_gate (stored as W_enc) with W_mag = W_gate·diag(e^{r_mag}); no b_enc.
// The fast CPU path is fast.ts.
import { l1_coefficient } from "../keys.ts";
import { defineVariant, f32 } from "../variant.ts";
import { createGated, type GatedOptions } from "./fast.ts";
import { gatedEquations } from "./equations.ts";

const GATE = ["b_gate", "r_mag", "b_mag"] as const;

export const gated = defineVariant({ l1_coefficient }, {
  name: "gated",
  equations: gatedEquations,
  title: "Gated (Rajamanoharan et al. 2024)",
  flavours: ["paper", "saelens"],
  defaultLr: () => 1e-3,
  coefficient: (s) => s.l1_coefficient,
  knob: { key: "l1_coefficient", label: "λ" },
  specs: (dims, s) => createGated(dims, { flavour: s.flavour as GatedOptions["flavour"], applyBDecToInput: s.apply_b_dec_to_input }).specs,
  create: (dims, s, fixedInputBias) => createGated(dims, { flavour: s.flavour as GatedOptions["flavour"], applyBDecToInput: s.apply_b_dec_to_input, fixedInputBias }),
  // both π_gate = Z + b_gate and π_mag = Z ⊙ e^{r_mag} + b_mag shift with Z = (x − b)W_gateᵀ
  foldInputBias: (p, shift) => {
    const bGate = p.get("b_gate"), bMag = p.get("b_mag"), rMag = p.get("r_mag");
    for (let i = 0; i < shift.length; i++) {
      bGate[i] -= shift[i];
      bMag[i] -= Math.exp(rMag[i]) * shift[i];
    }
  },
  toSaeLens: (p, { H }) => ({ architecture: "gated", tensors: Object.fromEntries(GATE.map((n) => [n, f32(p.get(n), [H])])) }),
  fromSaeLens: (p, need, { H }) => {
    for (const n of GATE) p.get(n).set(need(n, [H]));
  },
  // SAELens's gated SAE: no stop-gradient, ‖d‖-weighted penalty, free decoder
  saeLensImports: [{ architecture: "gated", settings: () => ({ flavour: "saelens" }) }],
});
