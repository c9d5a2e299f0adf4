// Final weights in the SAELens v6 layout (DESIGN.md decision 4; sae-variants.md §5):
// final/sae_weights.safetensors with W_enc [d_in, d_sae], W_dec [d_sae, d_in], b_dec [d_in] and per
// architecture b_enc [d_sae] (standard, topk, jumprelu), threshold [d_sae] (jumprelu), or
// b_gate, b_mag, r_mag [d_sae] (gated, no b_enc); and final/cfg.json. The input scaling is folded
// in, so raw activations can be fed. Mappings to SAELens architectures:
//   standard, tanh → standard; scaled → standard with s folded into the decoder rows;
//   gated → gated; topk → topk; jumprelu → jumprelu (threshold = e^{log θ});
//   batchtopk → jumprelu with the global threshold in every entry (SAELens does the same).
import fs from "node:fs";
import path from "node:path";
import { readSafetensors, writeSafetensors, type Tensor } from "./safetensors.ts";
import { writeFileAtomic } from "./run.ts";
import { ParamSet } from "../sae/params.ts";
import type { SaeModel } from "../sae/variant.ts";
import type { Config } from "../config/schema.ts";
import { SaeError } from "../errors.ts";

const ARCHITECTURE: Record<Config["sae"]["variant"], string> = {
  standard: "standard", tanh: "standard", scaled: "standard", gated: "gated", topk: "topk", batchtopk: "jumprelu", jumprelu: "jumprelu",
};

/** [rows, cols] → [cols, rows] */
export function transpose(a: ArrayLike<number>, rows: number, cols: number): Float32Array {
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = a[r * cols + c];
  return out;
}

/** SAELens tensors from our parameters. */
export function toSaeLens(model: SaeModel, p: ParamSet): Record<string, Tensor> {
  const { D, H } = model.dims;
  const t = (data: ArrayLike<number>, shape: number[]): Tensor => ({ dtype: "F32", shape, data: Float32Array.from(data) });
  const out: Record<string, Tensor> = {
    W_enc: { dtype: "F32", shape: [D, H], data: transpose(p.get("W_enc"), H, D) },
    W_dec: t(p.get("W_dec"), [H, D]),
    b_dec: t(p.get("b_dec"), [D]),
  };
  const v = p.views;
  if (v.b_enc) out.b_enc = t(v.b_enc, [H]);
  if (v.s) {
    const W = out.W_dec.data;
    for (let i = 0; i < H; i++) for (let d = 0; d < D; d++) W[i * D + d] *= v.s[i];
  }
  for (const name of ["b_gate", "b_mag", "r_mag"]) if (v[name]) out[name] = t(v[name], [H]);
  if (v.log_threshold) out.threshold = t(Array.from(v.log_threshold, Math.exp), [H]);
  if (v.threshold) out.threshold = t(new Float32Array(H).fill(v.threshold[0]), [H]);
  return out;
}

export function saveFinal(dir: string, model: SaeModel, p: ParamSet, c: Config, scale: number): void {
  writeSafetensors(path.join(dir, "final", "sae_weights.safetensors"), toSaeLens(model, p));
  const cfg = {
    d_in: model.dims.D,
    d_sae: model.dims.H,
    dtype: "float32",
    device: "cpu",
    architecture: ARCHITECTURE[c.sae.variant],
    apply_b_dec_to_input: c.sae.apply_b_dec_to_input,
    normalize_activations: "none",
    ...(c.sae.variant === "topk" ? { k: c.sae.k } : {}),
    metadata: {
      sae_tool: "sae",
      variant: c.sae.variant,
      flavour: c.sae.flavour,
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
  const v = p.views;
  if (v.b_enc) v.b_enc.set(need("b_enc", [H]));
  if (v.s) v.s.fill(1); // folded into W_dec
  for (const name of ["b_gate", "b_mag", "r_mag"]) if (v[name]) v[name].set(need(name, [H]));
  if (v.log_threshold) v.log_threshold.set(Array.from(need("threshold", [H]), Math.log));
  if (v.threshold) v.threshold[0] = need("threshold", [H])[0];
  return p;
}

/** The run's config as its final weights use it: a phase may have folded the pre-encoder bias away. */
export function finalConfig(dir: string, c: Config): Config {
  try {
    const cfg = JSON.parse(fs.readFileSync(path.join(dir, "final", "cfg.json"), "utf8"));
    if (typeof cfg.apply_b_dec_to_input === "boolean") return { ...c, sae: { ...c.sae, apply_b_dec_to_input: cfg.apply_b_dec_to_input } };
  } catch {
    // no final weights yet: loadFinal reports that
  }
  return c;
}
