// Exchange with the peers' folder formats (docs/formats.md#saelens-and-sparsify-folders):
//   SAELens v6  sae_weights.safetensors (W_enc [d_in, d_sae], W_dec [d_sae, d_in], b_dec, and per
//               architecture b_enc / threshold / b_gate, b_mag, r_mag) + cfg.json
//   sparsify    sae.safetensors (encoder.weight [H, D], encoder.bias [H], W_dec [H, D], b_dec [D]) +
//               cfg.json; TopK only, and it always subtracts b_dec from the input
// Export writes a finished run's final weights (input scale folded in, so raw activations go in);
// import turns such a folder back into our parameters in raw units.
import fs from "node:fs";
import path from "node:path";
import { readSafetensors, writeSafetensors, type Tensor } from "../io/safetensors.ts";
import { writeFileAtomic } from "../io/run.ts";
import { readFinalCfg, transpose } from "./weights.ts";
import type { Config } from "../config/schema.ts";
import { SaeError } from "../errors.ts";
import { VARIANTS, variantDef } from "./index.ts";
import { SAE_LENS_VERSION } from "./weights.ts";

export type ExportFormat = "saelens" | "sparsify";

function emptyOutDir(out: string): void {
  if (fs.existsSync(out) && fs.readdirSync(out).length > 0) throw new SaeError("usage", `${out} already exists and is not empty`, "choose a new --out folder; export never overwrites");
  fs.mkdirSync(out, { recursive: true });
}

/** Where a run's activations came from: a model's checkpoint, layer and site (from the config, or the dataset's manifest). */
export interface ActivationSource { checkpoint?: unknown; layer?: unknown; site?: unknown }

/** What the run did, for the exported metadata; the CLI finds it (src/data, the run's eval.json). */
export interface RunFacts {
  /** where the activations came from, when a file dataset's manifest records it (a model config names its own) */
  source: ActivationSource | null;
  /** the training sequences: whether they start with BOS and how many leading positions training
   *  dropped; null for data that is not made of sequences */
  sequences: { startsWithBos: boolean; skip: number } | null;
  /** the convention of the downstream loss in the run's eval.json, if it has one */
  downstream: { convention: string; special_token_ids: number[] } | null;
}

/** SAELens metadata from what the run knows about where its activations came from and how it was evaluated. */
function saeLensMetadata(c: Config, facts: RunFacts): Record<string, unknown> {
  const src = (c.data.source === "model" ? c.data.model : null) ?? facts.source;
  const m = c.data.source === "model" ? c.data.model : null;
  const meta: Record<string, unknown> = { sae_tool: "sae", variant: c.sae.variant };
  if (src?.checkpoint !== undefined && src.layer !== undefined) {
    meta.model_name = path.basename(String(src.checkpoint), ".bin");
    meta.hook_name = `blocks.${src.layer}.hook_${src.site ?? "resid_pre"}`;
  }
  const seq = facts.sequences;
  if (seq) {
    // SAELens's names for what training did: BOS leads each sequence or not; the leading positions
    // training dropped are its seqpos_slice; no token was excluded by id
    meta.prepend_bos = seq.startsWithBos;
    meta.seqpos_slice = seq.skip > 0 ? [seq.skip, null] : [null];
    meta.exclude_special_tokens = false;
  }
  if (facts.downstream) {
    meta.downstream_convention = facts.downstream.convention;
    meta.downstream_ignore_tokens = facts.downstream.special_token_ids;
  }
  if (m?.context_size) meta.context_size = m.context_size;
  if (c.data.source === "file") meta.dataset_path = c.data.file!.path;
  return meta;
}

export function exportRun(runDir: string, c: Config, format: ExportFormat, out: string, facts: RunFacts): string[] {
  const final = path.join(runDir, "final");
  if (!fs.existsSync(path.join(final, "sae_weights.safetensors"))) throw new SaeError("usage", `${runDir} has no final weights`, "export a finished run (`sae runs` shows its status)");
  const { tensors } = readSafetensors(path.join(final, "sae_weights.safetensors"));
  const cfg = readFinalCfg(runDir);
  if (!cfg) throw new SaeError("usage", `${runDir} has no final/cfg.json`, "export a finished run (`sae runs` shows its status)");
  if (format === "saelens") {
    emptyOutDir(out);
    writeSafetensors(path.join(out, "sae_weights.safetensors"), tensors);
    const metadata = { sae_lens_version: SAE_LENS_VERSION, ...cfg.metadata, ...saeLensMetadata(c, facts) };
    // final weights written before flavours were limited to the variants that have them may carry one
    if (!variantDef(c.sae.variant).flavours) delete metadata.flavour;
    const full = { ...cfg, reshape_activations: "none", metadata };
    writeFileAtomic(path.join(out, "cfg.json"), JSON.stringify(full, null, 2) + "\n");
    return ["sae_weights.safetensors", "cfg.json"];
  }
  const def = variantDef(c.sae.variant);
  const sparsifyNames = VARIANTS.filter((v) => v.sparsify).map((v) => v.name);
  if (!def.sparsify) throw new SaeError("usage", `sparsify holds ${sparsifyNames.join(", ")} SAEs only; this run is ${c.sae.variant}`, "use --format saelens");
  const D: number = cfg.d_in, H: number = cfg.d_sae;
  const encW = transpose(tensors.W_enc.data, D, H); // [H, D]
  // sparsify encodes W(x − b_dec) + b: without a pre-encoder bias, fold W·b_dec into the bias
  const bias = Float32Array.from(tensors.b_enc.data);
  if (!cfg.apply_b_dec_to_input) {
    const b = tensors.b_dec.data;
    for (let i = 0; i < H; i++) {
      let s = 0;
      for (let d = 0; d < D; d++) s += encW[i * D + d] * b[d];
      bias[i] += s;
    }
  }
  emptyOutDir(out);
  writeSafetensors(path.join(out, "sae.safetensors"), {
    "encoder.weight": { dtype: "F32", shape: [H, D], data: encW },
    "encoder.bias": { dtype: "F32", shape: [H], data: bias },
    W_dec: tensors.W_dec,
    b_dec: tensors.b_dec,
  });
  const scfg = def.sparsify.cfg(c.sae, D, H);
  writeFileAtomic(path.join(out, "cfg.json"), JSON.stringify(scfg, null, 2) + "\n");
  return ["sae.safetensors", "cfg.json"];
}

export interface ImportedSae {
  format: ExportFormat;
  /** the sae: section of a config that holds these weights */
  sae: Record<string, unknown>;
  D: number;
  H: number;
  /** the weights in the SAELens layout (read with fromSaeLens once the model exists) */
  tensors: Record<string, Tensor>;
  file: string;
}

/** Reads a SAELens (cfg.json + sae_weights.safetensors) or sparsify (cfg.json + sae.safetensors) folder. */
export function importFolder(dir: string): ImportedSae {
  const cfgFile = path.join(dir, "cfg.json");
  let cfg: Record<string, any>;
  try {
    cfg = JSON.parse(fs.readFileSync(cfgFile, "utf8"));
  } catch (err) {
    throw new SaeError("data", `cannot read ${cfgFile}: ${(err as NodeJS.ErrnoException).code ?? "not valid JSON"}`, "give a SAELens or sparsify SAE folder (cfg.json with sae_weights.safetensors or sae.safetensors)");
  }
  if (!cfg || typeof cfg !== "object" || Array.isArray(cfg)) throw new SaeError("data", `${cfgFile} holds ${JSON.stringify(cfg)?.slice(0, 40)}, not an object of settings`, "give a SAELens or sparsify SAE folder (cfg.json with sae_weights.safetensors or sae.safetensors)");
  const bad = (what: string) => new SaeError("data", `${dir}: ${what}`, "the folder does not match its cfg.json; re-export it");
  const sparsify = path.join(dir, "sae.safetensors");
  if (fs.existsSync(sparsify)) {
    const D = cfg.d_in, H = cfg.num_latents || Math.round(cfg.expansion_factor * D);
    if (!Number.isInteger(D) || !Number.isInteger(H)) throw bad("cfg.json lacks d_in and num_latents");
    const activation = cfg.activation ?? VARIANTS.find((v) => v.sparsify?.isDefault)?.sparsify?.activation;
    const into = VARIANTS.find((v) => v.sparsify?.activation === activation);
    if (!into?.sparsify) throw bad(`sparsify activation ${activation} is not supported (supported: ${VARIANTS.flatMap((v) => (v.sparsify ? [v.sparsify.activation] : [])).join(", ")})`);
    if (cfg.skip_connection || cfg.transcode) throw bad("skip connections and transcoders are not supported");
    const t = readSafetensors(sparsify).tensors;
    const enc = t["encoder.weight"];
    if (!enc || enc.shape.join(",") !== `${H},${D}`) throw bad(`sae.safetensors: encoder.weight should have shape [${H},${D}], found ${enc ? `[${enc.shape}]` : "nothing"}`);
    // renamed into the SAELens layout (W_enc [D, H]); fromSaeLens checks the rest
    const tensors: Record<string, Tensor> = { W_enc: { dtype: "F32", shape: [D, H], data: transpose(enc.data, H, D) }, W_dec: t.W_dec, b_dec: t.b_dec, b_enc: t["encoder.bias"] };
    return { format: "sparsify", D, H, tensors, file: sparsify, sae: { variant: into.name, d_sae: H, ...into.sparsify.settings(cfg), apply_b_dec_to_input: true } };
  }
  const imports = VARIANTS.flatMap((v) => (v.saeLensImports ?? []).map((imp) => ({ variant: v.name, imp })));
  const arch = imports.find((x) => x.imp.architecture === cfg.architecture);
  if (!arch) throw bad(`cfg.json architecture ${JSON.stringify(cfg.architecture)} is not one of ${imports.map((x) => x.imp.architecture).join(", ")}`);
  const D = cfg.d_in, H = cfg.d_sae;
  if (!Number.isInteger(D) || !Number.isInteger(H)) throw bad("cfg.json lacks d_in and d_sae");
  const norm = cfg.normalize_activations ?? "none";
  if (norm !== "none" && norm !== "expected_average_only_in") throw bad(`normalize_activations ${norm} is not supported (it normalises each token; export with normalize_activations "none")`);
  const scale = norm === "expected_average_only_in" ? scalingFactor(dir) : 1;
  if (cfg.rescale_acts_by_decoder_norm && !arch.imp.adapt) throw bad(`rescale_acts_by_decoder_norm is not supported for ${cfg.architecture}`);
  const file = path.join(dir, "sae_weights.safetensors");
  const raw = readSafetensors(file).tensors;
  const sae = { variant: arch.variant, d_sae: H, apply_b_dec_to_input: cfg.apply_b_dec_to_input ?? true, ...arch.imp.settings(cfg) };
  // the variant's own mapping first (it works in the folder's units), then the input scale
  const adapted = arch.imp.adapt ? arch.imp.adapt(raw, cfg, D, H) : raw;
  return { format: "saelens", D, H, file, tensors: scale === 1 ? adapted : foldSaeLensScale(adapted, scale), sae };
}

/**
 * The factor s of a SAELens training checkpoint with normalize_activations
 * "expected_average_only_in": its trainer feeds the SAE s·x and keeps s in activation_scaler.json
 * beside the weights, folding it in only when training ends.
 */
function scalingFactor(dir: string): number {
  const file = path.join(dir, "activation_scaler.json");
  let s: unknown;
  try {
    s = JSON.parse(fs.readFileSync(file, "utf8")).scaling_factor;
  } catch (err) {
    throw new SaeError("data", `${dir}: cfg.json has normalize_activations "expected_average_only_in", and ${file} cannot be read (${(err as NodeJS.ErrnoException).code ?? "not valid JSON"})`, "SAELens writes activation_scaler.json beside a training checkpoint's weights; copy it in, or import the finished SAE, which has the factor folded in");
  }
  if (typeof s !== "number" || !(s > 0) || !Number.isFinite(s)) throw new SaeError("data", `${file}: scaling_factor is ${JSON.stringify(s)}, but cfg.json has normalize_activations "expected_average_only_in"`, "a positive number is needed; import the finished SAE, which has the factor folded in");
  return s;
}

/**
 * SAELens's fold of an input scale s into the weights (fold_activation_norm_scaling_factor, in
 * float32 as torch does it): W_enc·s, W_dec/s, b_dec/s. The code is unchanged; the output comes
 * out in raw units.
 */
function foldSaeLensScale(t: Record<string, Tensor>, s: number): Record<string, Tensor> {
  const f = Math.fround(s);
  const map = (name: string, op: (v: number) => number): Tensor => ({ dtype: "F32", shape: t[name].shape, data: Float32Array.from(t[name].data, op) });
  if (!t.W_enc || !t.W_dec || !t.b_dec) return t; // fromSaeLens names what is missing
  return { ...t, W_enc: map("W_enc", (v) => v * f), W_dec: map("W_dec", (v) => v / f), b_dec: map("b_dec", (v) => v / f) };
}
