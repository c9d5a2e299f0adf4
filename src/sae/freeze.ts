// The names `freeze` and `mode` accept, from a variant's parameters (each ParamSpec names its
// groups: encoder, decoder, scale, threshold) and its own fine-tuning modes (docs/training.md#freezing).
import type { VariantDef } from "./variant.ts";
import type { ParamSpec } from "./params.ts";

/** the mode every variant has: train what comes before the code (and a scale), the decoder frozen */
const ENCODER_MODE = "encoder";

/** the names `freeze` accepts for these parameters: the groups, then the parameter names */
export function freezeNames(specs: readonly ParamSpec[]): string[] {
  const groups = new Set(specs.flatMap((s) => s.groups ?? []));
  return [...groups, ...specs.map((s) => s.name)];
}

/** the fine-tuning modes a variant has */
export function modeNames(def: VariantDef): string[] {
  return [ENCODER_MODE, ...Object.keys(def.modes ?? {}).filter((m) => m !== ENCODER_MODE)];
}

/** the parameters a mode trains, or null when the variant has no such mode */
export function modeTrains(def: VariantDef, specs: readonly ParamSpec[], mode: string): string[] | null {
  const own = def.modes?.[mode];
  if (own) return [...own];
  if (mode !== ENCODER_MODE) return null;
  return specs.filter((s) => s.groups?.some((g) => g === "encoder" || g === "scale")).map((s) => s.name);
}

/** the parameters a freeze entry names (a group's members, or the parameter itself) */
export function expandFreeze(specs: readonly ParamSpec[], entry: string): string[] {
  const inGroup = specs.filter((s) => s.groups?.includes(entry)).map((s) => s.name);
  return inGroup.length ? inGroup : specs.some((s) => s.name === entry) ? [entry] : [];
}

