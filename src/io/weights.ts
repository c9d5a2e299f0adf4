// Final weights in the SAELens v6 layout (DESIGN.md decision 4): final/sae_weights.safetensors
// with W_enc [d_in, d_sae], b_enc [d_sae], W_dec [d_sae, d_in], b_dec [d_in] (input scaling
// folded in, so raw activations can be fed), and final/cfg.json.
import fs from "node:fs";
import path from "node:path";
import { readSafetensors, writeSafetensors, type Tensor } from "./safetensors.ts";
import { writeFileAtomic } from "./run.ts";
import { ParamSet } from "../sae/params.ts";
import type { SaeModel } from "../sae/variant.ts";
import type { Config } from "../config/schema.ts";
import { SaeError } from "../errors.ts";

function transpose(a: ArrayLike<number>, rows: number, cols: number): Float32Array {
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = a[r * cols + c];
  return out;
}

export function saveFinal(dir: string, model: SaeModel, p: ParamSet, c: Config, scale: number): void {
  const { D, H } = model.dims;
  const f32 = (name: string, shape: number[]): Tensor => ({ dtype: "F32", shape, data: new Float32Array(p.get(name)) });
  writeSafetensors(path.join(dir, "final", "sae_weights.safetensors"), {
    W_enc: { dtype: "F32", shape: [D, H], data: transpose(p.get("W_enc"), H, D) },
    b_enc: f32("b_enc", [H]),
    W_dec: f32("W_dec", [H, D]),
    b_dec: f32("b_dec", [D]),
  });
  const cfg = {
    d_in: D,
    d_sae: H,
    dtype: "float32",
    device: "cpu",
    architecture: c.sae.variant === "topk" ? "topk" : "standard",
    apply_b_dec_to_input: c.sae.apply_b_dec_to_input,
    normalize_activations: "none",
    ...(c.sae.variant === "topk" ? { k: c.sae.k } : {}),
    metadata: {
      sae_tool: "sae",
      variant: c.sae.variant,
      flavour: c.sae.variant === "standard" ? c.sae.flavour : undefined,
      folded_input_scale: scale,
      input_normalization: c.data.normalize,
    },
  };
  writeFileAtomic(path.join(dir, "final", "cfg.json"), JSON.stringify(cfg, null, 2) + "\n");
}

export function loadFinal(dir: string, model: SaeModel, ctor = Float32Array): ParamSet {
  const file = path.join(dir, "final", "sae_weights.safetensors");
  if (!fs.existsSync(file)) throw new SaeError("usage", `${dir} has no final weights (final/sae_weights.safetensors)`, "the run has not finished; `sae runs` shows its status");
  const { tensors } = readSafetensors(file);
  const { D, H } = model.dims;
  const p = new ParamSet(model.specs, ctor);
  const need = (name: string, shape: number[]) => {
    const t = tensors[name];
    if (!t || t.shape.join(",") !== shape.join(",")) throw new SaeError("data", `${file}: tensor ${name} should have shape [${shape}], found ${t ? `[${t.shape}]` : "nothing"}`, "the weights do not match the run's config.yaml");
    return t.data;
  };
  p.get("W_enc").set(transpose(need("W_enc", [D, H]), D, H));
  p.get("b_enc").set(need("b_enc", [H]));
  p.get("W_dec").set(need("W_dec", [H, D]));
  p.get("b_dec").set(need("b_dec", [D]));
  return p;
}
