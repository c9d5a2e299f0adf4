// Final weights in the SAELens v6 layout (docs/formats.md#final-weights):
// final/sae_weights.safetensors with W_enc [d_in, d_sae], W_dec [d_sae, d_in], b_dec [d_in] and
// the tensors of the variant's SAELens architecture (each variant's toSaeLens: b_enc, threshold,
// b_gate/b_mag/r_mag, ...); and final/cfg.json. The input scaling is folded in, so raw
// activations can be fed.
import fs from "node:fs";
import path from "node:path";
import { readSafetensors, writeSafetensors, type Tensor } from "../io/safetensors.ts";
import { writeFileAtomic } from "../io/run.ts";
import { ParamSet } from "./params.ts";
import { f32, type SaeModel } from "./variant.ts";
import { variantDef } from "./index.ts";
import type { Config } from "../config/schema.ts";
import { SaeError } from "../errors.ts";

/** the SAELens version whose cfg.json layout export writes (SAELens reads `metadata` only when it names one, ≥ 6) */
export const SAE_LENS_VERSION = "6.18.0";

/** [rows, cols] → [cols, rows] */
export function transpose(a: ArrayLike<number>, rows: number, cols: number): Float32Array {
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = a[r * cols + c];
  return out;
}

/** The SAELens tensors of our parameters, with the architecture and extra cfg.json fields. */
export function toSaeLens(model: SaeModel, p: ParamSet, c: Config): { tensors: Record<string, Tensor>; architecture: string; cfg: Record<string, unknown> } {
  const { D, H } = model.dims;
  const out = variantDef(model.variant).toSaeLens(p, model.dims, c.sae);
  const tensors: Record<string, Tensor> = {
    W_enc: { dtype: "F32", shape: [D, H], data: transpose(p.get("W_enc"), H, D) },
    W_dec: f32(p.get("W_dec"), [H, D]),
    b_dec: f32(p.get("b_dec"), [D]),
    ...out.tensors,
  };
  return { tensors, architecture: out.architecture, cfg: out.cfg ?? {} };
}

export function saveFinal(dir: string, model: SaeModel, p: ParamSet, c: Config, scale: number): void {
  const out = toSaeLens(model, p, c);
  writeSafetensors(path.join(dir, "final", "sae_weights.safetensors"), out.tensors);
  const cfg = {
    d_in: model.dims.D,
    d_sae: model.dims.H,
    dtype: "float32",
    device: "cpu",
    architecture: out.architecture,
    apply_b_dec_to_input: c.sae.apply_b_dec_to_input,
    normalize_activations: "none",
    ...out.cfg,
    metadata: {
      sae_tool: "sae",
      variant: c.sae.variant,
      // only a variant with flavours has one (an old config may carry a stray sae.flavour)
      ...(c.sae.flavour !== undefined && variantDef(c.sae.variant).flavours?.includes(c.sae.flavour) ? { flavour: c.sae.flavour } : {}),
      folded_input_scale: scale,
      input_normalization: c.data.normalize,
    },
  };
  writeFileAtomic(path.join(dir, "final", "cfg.json"), JSON.stringify(cfg, null, 2) + "\n");
}

export function loadFinal(dir: string, model: SaeModel, ctor = Float32Array): ParamSet {
  const file = path.join(dir, "final", "sae_weights.safetensors");
  if (!fs.existsSync(file)) throw new SaeError("usage", `${dir} has no final weights (final/sae_weights.safetensors)`, "the run has not finished; `sae runs` shows its status");
  return fromSaeLens(readSafetensors(file).tensors, file, model, "the weights do not match the run's config.yaml", ctor);
}

/** Our parameters from SAELens tensors (the inverse of toSaeLens; s = 1, being folded into W_dec). */
export function fromSaeLens(tensors: Record<string, Tensor>, file: string, model: SaeModel, hint: string, ctor = Float32Array): ParamSet {
  const { D, H } = model.dims;
  const p = new ParamSet(model.specs, ctor);
  const need = (name: string, shape: number[]) => {
    const t = tensors[name];
    if (!t || t.shape.join(",") !== shape.join(",")) throw new SaeError("data", `${file}: tensor ${name} should have shape [${shape}], found ${t ? `[${t.shape}]` : "nothing"}`, hint);
    if (t.dtype !== "F32") throw new SaeError("data", `${file}: tensor ${name} is ${t.dtype}; this reader takes float32`, hint);
    return t.data;
  };
  p.get("W_enc").set(transpose(need("W_enc", [D, H]), D, H));
  p.get("W_dec").set(need("W_dec", [H, D]));
  p.get("b_dec").set(need("b_dec", [D]));
  variantDef(model.variant).fromSaeLens(p, need, model.dims);
  return p;
}

/** final/cfg.json as an object, or null when the run has none yet; a garbled one is an error naming it. */
export function readFinalCfg(dir: string): Record<string, any> | null {
  const file = path.join(dir, "final", "cfg.json");
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch {
    return null; // no final weights yet: loadFinal reports that
  }
  let cfg: unknown;
  try {
    cfg = JSON.parse(text);
  } catch (err) {
    cfg = err;
  }
  if (!cfg || typeof cfg !== "object" || Array.isArray(cfg) || cfg instanceof Error) {
    throw new SaeError("usage", `${file} is not a SAELens cfg.json (a JSON object with d_in, d_sae, architecture, ...)${cfg instanceof Error ? `: ${cfg.message}` : ""}`, `it is written with the final weights: \`sae resume ${path.basename(path.resolve(dir))}\` after deleting final/ writes both again`);
  }
  return cfg as Record<string, any>;
}

/** The run's config as its final weights use it: a phase may have folded the pre-encoder bias away. */
export function finalConfig(dir: string, c: Config): Config {
  const cfg = readFinalCfg(dir);
  if (cfg && typeof cfg.apply_b_dec_to_input === "boolean") return { ...c, sae: { ...c.sae, apply_b_dec_to_input: cfg.apply_b_dec_to_input } };
  return c;
}
