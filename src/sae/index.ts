// The variant registry: the only place that lists the variants. Adding one = a folder with its
// definition (src/sae/<name>/index.ts) + one line here. Everything else asks the registry.
import type { Arr } from "../engine/types.ts";
import type { SaeModel, SaeSettings, VariantDef } from "./variant.ts";
import { standard } from "./standard/index.ts";
import { tanh } from "./tanh/index.ts";
import { scaled } from "./scaled/index.ts";
import { gated } from "./gated/index.ts";
import { topk } from "./topk/index.ts";
import { batchtopk } from "./batchtopk/index.ts";
import { jumprelu } from "./jumprelu/index.ts";
import { matryoshka } from "./matryoshka/index.ts";

export const VARIANTS: readonly VariantDef[] = [standard, tanh, scaled, gated, topk, batchtopk, jumprelu, matryoshka];

/** the variant a config gets when it names none */
export const DEFAULT_VARIANT = topk.name;

export const VARIANT_NAMES = VARIANTS.map((v) => v.name) as [string, ...string[]];

export function variantDef(name: string): VariantDef {
  const v = VARIANTS.find((d) => d.name === name);
  if (!v) throw new Error(`no variant named ${name}`); // the schema admits only registered names
  return v;
}

/** Every variant's own keys, merged: a key several variants read is one shared definition (keys.ts). */
export function variantKeys(): Record<string, VariantDef["keys"][string]> {
  const out: Record<string, VariantDef["keys"][string]> = {};
  for (const v of VARIANTS) {
    for (const [k, t] of Object.entries(v.keys)) {
      if (out[k] && out[k] !== t) throw new Error(`sae.${k} is defined differently by two variants; share one definition (src/sae/keys.ts)`);
      out[k] = t;
    }
  }
  return out;
}

/** the variants that read each key of variantKeys() */
export function keyReaders(): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const v of VARIANTS) for (const k of Object.keys(v.keys)) (out[k] ??= []).push(v.name);
  for (const v of VARIANTS) if (v.flavours) (out.flavour ??= []).push(v.name);
  return out;
}

/** The fast CPU model of a config's SAE. fixedInputBias: see SaeModel.fixedInputBias */
export function createModel(c: { data: { d_in: number }; sae: SaeSettings }, fixedInputBias: Arr | null = null): SaeModel {
  return variantDef(c.sae.variant).create({ D: c.data.d_in, H: c.sae.d_sae }, c.sae, fixedInputBias);
}
