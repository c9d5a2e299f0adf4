// Config keys that several variants read, defined once so that every variant that lists one
// documents and defaults it the same way. A variant picks the ones it reads in its own file; the
// registry merges every variant's keys into the `sae:` schema (docs/variants.md).
import { z } from "zod";

const int = () => z.number().int();

/** λ of an L1-type penalty, relative to Σ_d (x − x̂)² per token */
export const l1_coefficient = z.number().min(0).default(0.04);

/** latents kept per token (BatchTopK-style variants: on average over the batch) */
export const k = int().min(1).default(32);
/** AuxK latents per token, capped at the number of dead latents; default d_in / 2 (at most d_sae) */
export const k_aux = int().min(1).optional();
/** α of the AuxK loss; 0 turns AuxK off */
export const aux_coefficient = z.number().min(0).default(1 / 32);

/** the learning rate of the k-sparse variants: 2e-4/√(H/16384) (Gao et al. 2024; dictionary_learning, sparsify) */
export const kSparseLr = (H: number) => 2e-4 / Math.sqrt(H / 16384);

/** AuxK's k_aux once resolved */
export const resolvedKAux = (s: { k_aux?: number; d_sae: number }, D: number) => s.k_aux ?? Math.max(1, Math.min(s.d_sae, Math.floor(D / 2)));
