// Matryoshka BatchTopK SAE (Bussmann, Nabeshima, Karvonen & Nanda 2025, arXiv 2503.17547;
// Nabeshima 2024; docs/variants.md#matryoshka-batchtopk): BatchTopK's code, and nested prefixes of
// the dictionary, m_1 < … < m_G = H, each reconstructing the input from its first m_g latents,
// their squared errors summed. The fast CPU path is fast.ts. Inference and export are BatchTopK's:
// a JumpReLU with the global threshold, as SAELens saves its matryoshka_batchtopk training SAE.
import { z } from "zod";
import { resolvedKAux } from "../keys.ts";
import { defineVariant, type Dims } from "../variant.ts";
import type { Arr } from "../../engine/types.ts";
import { checkK, kSparse, topkKeys } from "../topk/index.ts";
import { globalThresholdFromSaeLens, globalThresholdToSaeLens, saeLensBatchTopKTraining } from "../batchtopk/index.ts";
import { createMatryoshka } from "./fast.ts";
import { matryoshkaEquations } from "./equations.ts";

const keys = {
  ...topkKeys,
  /** the prefix sizes m_1 < … < m_G = d_sae; default: d_sae/16, d_sae/8, d_sae/4, d_sae/2, d_sae (rounded down, repeats and zeros dropped) */
  matryoshka_prefixes: z.array(z.number().int().min(1)).min(1).optional(),
};

/** the default ladder: H/16, H/8, H/4, H/2, H (rounded down; repeats and zeros dropped) */
export function defaultPrefixes(H: number): number[] {
  const out: number[] = [];
  for (const d of [16, 8, 4, 2, 1]) {
    const m = Math.floor(H / d);
    if (m >= 1 && m !== out[out.length - 1]) out.push(m);
  }
  return out;
}

interface Settings { k: number; k_aux?: number; d_sae: number; aux_coefficient: number; apply_b_dec_to_input: boolean; matryoshka_prefixes?: number[] }

export const matryoshka = defineVariant(keys, {
  ...kSparse,
  name: "matryoshka",
  equations: matryoshkaEquations,
  eqSettings: (s) => ({ ...kSparse.eqSettings(s), prefixes: s.matryoshka_prefixes ?? defaultPrefixes(s.d_sae) }),
  title: "Matryoshka BatchTopK (Bussmann et al. 2025)",
  resolve: (s, D) => ({ ...kSparse.resolve(s, D), matryoshka_prefixes: s.matryoshka_prefixes ?? defaultPrefixes(s.d_sae) }),
  check: (s, fail) => {
    checkK(s, fail);
    const m = s.matryoshka_prefixes ?? defaultPrefixes(s.d_sae);
    const hint = `e.g. [${defaultPrefixes(s.d_sae).join(", ")}] (d_sae/16 … d_sae), or leave it out for that default`;
    for (let j = 1; j < m.length; j++)
      if (!(m[j] > m[j - 1])) fail("matryoshka_prefixes", `[${m.join(", ")}] must rise strictly: entry ${j + 1} (${m[j]}) is not above ${m[j - 1]}`, hint);
    if (m[m.length - 1] !== s.d_sae) fail("matryoshka_prefixes", `the last prefix is ${m[m.length - 1]}; it must be the whole dictionary, d_sae = ${s.d_sae}`, hint);
  },
  specs: (dims, s) => create(dims, s, null).specs,
  create,
  toSaeLens: globalThresholdToSaeLens,
  fromSaeLens: globalThresholdFromSaeLens,
  saeLensImports: [
    // SAELens's training SAE (its checkpoints); SAELens appends d_sae to matryoshka_widths when it
    // is missing, and so does this
    saeLensBatchTopKTraining("matryoshka_batchtopk", (cfg) => {
      const w: unknown = cfg.matryoshka_widths;
      if (!Array.isArray(w)) return {};
      return { matryoshka_prefixes: w[w.length - 1] === cfg.d_sae ? w : [...w, cfg.d_sae] };
    }),
  ],
});

function create(dims: Dims, s: Settings, fixedInputBias: Arr | null) {
  return createMatryoshka(dims, {
    k: s.k,
    kAux: resolvedKAux(s, dims.D),
    auxCoefficient: s.aux_coefficient,
    applyBDecToInput: s.apply_b_dec_to_input,
    fixedInputBias,
    prefixes: s.matryoshka_prefixes ?? defaultPrefixes(dims.H),
  });
}
