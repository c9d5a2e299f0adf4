// Exchange against folders laid out exactly as the peers' save functions write them: SAELens 6.18's
// SAE.save_model (training checkpoints: the training config in cfg.json, BatchTopK's running
// threshold as the float64 scalar topk_threshold, rescale_acts_by_decoder_norm on by default) and
// save_inference_model (JumpReLU), and sparsify's SparseCoder.save_to_disk. The bytes follow
// safetensors-rs (the writer behind torch's save_file and save_model) and Python's json.dump.
// Each import must reproduce the peer's forward, written out below as the peer computes it, to
// about one float32 ulp; `sae runs --wide` must show the folder's own sparsity setting, or "-".
// The other direction: SAELens must read our export's metadata (it needs sae_lens_version, or it
// takes the config for a pre-6.0 one and drops the block), and no JumpReLU export names a flavour.
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { cli, tmpDir } from "./helpers.ts";
import { Rng } from "../src/rng.ts";
import { loadConfig } from "../src/config/load.ts";
import { createModel, VARIANTS } from "../src/sae/index.ts";
import { finalConfig, loadFinal } from "../src/sae/weights.ts";
import { jsEngine } from "../src/engine/js.ts";
import { writeNpy } from "../src/io/npy.ts";

// ---- the peers' bytes ----

type PeerTensor = { dtype: "F32" | "F64"; shape: number[]; data: Float32Array | Float64Array };

/**
 * A safetensors file as safetensors-rs writes it: tensors ordered by dtype, wider first (F64
 * before F32), then by name; the compact JSON header {dtype, shape, data_offsets}, with no
 * __metadata__ when none is given (torch's save_file and save_model give none here), padded
 * with spaces to a multiple of 8 bytes.
 */
function writePeerSafetensors(file: string, tensors: Record<string, PeerTensor>): void {
  const names = Object.keys(tensors).sort((a, b) => (tensors[a].dtype === tensors[b].dtype ? (a < b ? -1 : 1) : tensors[a].dtype === "F64" ? -1 : 1));
  let offset = 0;
  const header: Record<string, unknown> = {};
  for (const n of names) {
    const t = tensors[n];
    header[n] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + t.data.byteLength] };
    offset += t.data.byteLength;
  }
  let json = JSON.stringify(header);
  json += " ".repeat((8 - (json.length % 8)) % 8);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  fs.writeFileSync(file, Buffer.concat([len, Buffer.from(json), ...names.map((n) => Buffer.from(tensors[n].data.buffer, tensors[n].data.byteOffset, tensors[n].data.byteLength))]));
}

/** a Python float in a value for pyJson: json.dump writes 4.0, where JavaScript would write 4 */
class PyFloat {
  readonly v: number;
  constructor(v: number) {
    this.v = v;
  }
}
const fl = (v: number) => new PyFloat(v);

/** json.dump(obj, f) with Python's defaults: ", " and ": " separators, floats as repr (for the plain values used here) */
function pyJson(v: unknown): string {
  if (v === null) return "null";
  if (v instanceof PyFloat) return Number.isInteger(v.v) ? `${v.v}.0` : String(v.v);
  if (typeof v === "number" || typeof v === "boolean") return String(v);
  if (typeof v === "string") return JSON.stringify(v);
  if (Array.isArray(v)) return `[${v.map(pyJson).join(", ")}]`;
  return `{${Object.entries(v as object).map(([k, x]) => `${JSON.stringify(k)}: ${pyJson(x)}`).join(", ")}}`;
}

/** SAEMetadata as SAELens's training runner fills it (_set_sae_metadata), in its key order */
const RUNNER_METADATA = {
  sae_lens_version: "6.18.0", sae_lens_training_version: "6.18.0",
  dataset_path: "roneneldan/TinyStories", hook_name: "blocks.1.hook_resid_pre", model_name: "tiny-stories-1M", model_class_name: "HookedTransformer",
  hook_head_index: null, context_size: 128, seqpos_slice: [null], model_from_pretrained_kwargs: { center_writing_weights: false },
  prepend_bos: true, exclude_special_tokens: false, sequence_separator_token: "bos", disable_concat_sequences: false,
};

/**
 * cfg.json of SAELens's save_model for a training SAE: TrainingSAEConfig.to_dict, i.e. the
 * dataclass fields in definition order (SAEConfig's, TrainingSAEConfig's, then the architecture's
 * own), the metadata dict in the metadata field's place, and "architecture" last.
 */
function trainingCfg(architecture: string, D: number, H: number, own: Record<string, unknown>, normalize = "none"): string {
  return pyJson({
    d_in: D, d_sae: H, dtype: "float32", device: "cpu", apply_b_dec_to_input: true, normalize_activations: normalize, reshape_activations: "none",
    metadata: RUNNER_METADATA, decoder_init_norm: fl(0.1), ...own, architecture,
  });
}

/** TopKTrainingSAEConfig's fields (k first), then BatchTopK's */
const topkFields = (k: unknown) => ({ k, use_sparse_activations: false, aux_loss_coefficient: fl(1), rescale_acts_by_decoder_norm: true });
const batchTopkFields = (k: number) => ({ ...topkFields(fl(k)), topk_threshold_lr: fl(0.01) });

// ---- random SAEs as training leaves them ----

const D = 8, H = 32;

/** W_enc [D, H], b_enc [H], W_dec [H, D] with row norms spread over 0.3–3 (SAELens's TopK family does not keep them at 1), b_dec [D] */
function peerWeights(seed: number): Record<string, PeerTensor> {
  const rng = new Rng(seed, 1);
  const f = (n: number, s: number) => Float32Array.from({ length: n }, () => s * rng.normal());
  const Wd = f(H * D, 1);
  for (let i = 0; i < H; i++) {
    const row = Wd.subarray(i * D, (i + 1) * D);
    const n = Math.hypot(...row), want = 0.3 + (2.7 * i) / (H - 1);
    for (let d = 0; d < D; d++) row[d] *= want / n;
  }
  return {
    W_enc: { dtype: "F32", shape: [D, H], data: f(D * H, 0.4) },
    b_enc: { dtype: "F32", shape: [H], data: f(H, 0.2) },
    W_dec: { dtype: "F32", shape: [H, D], data: Wd },
    b_dec: { dtype: "F32", shape: [D], data: f(D, 0.3) },
  };
}

function batch(seed: number, B: number): Float32Array {
  const rng = new Rng(seed, 2);
  return Float32Array.from({ length: B * D }, () => rng.normal());
}

// ---- the peers' forward passes, written out (float64 over the stored float32 values) ----

const norms = (t: Record<string, PeerTensor>) => Float64Array.from({ length: H }, (_, i) => Math.hypot(...t.W_dec.data.subarray(i * D, (i + 1) * D)));

/** SAELens: hidden_pre = (x − b_dec) W_enc + b_enc, times ‖d_i‖ with rescale_acts_by_decoder_norm; s scales the input first (its trainer's ActivationScaler) [B, H] */
function saeLensHiddenPre(t: Record<string, PeerTensor>, x: Float32Array, B: number, rescale: boolean, s = 1): Float64Array {
  const n = norms(t), We = t.W_enc.data, be = t.b_enc.data, bd = t.b_dec.data;
  const out = new Float64Array(B * H);
  for (let b = 0; b < B; b++) for (let i = 0; i < H; i++) {
    let v = be[i];
    for (let d = 0; d < D; d++) v += (s * x[b * D + d] - bd[d]) * We[d * H + i];
    out[b * H + i] = rescale ? v * n[i] : v;
  }
  return out;
}

/** SAELens's decode of the latents below `width`: (f / ‖d_i‖) W_dec + b_dec with rescale, then / s back to raw units [B, D] */
function saeLensDecode(t: Record<string, PeerTensor>, f: Float64Array, B: number, rescale: boolean, width = H, s = 1): Float64Array {
  const n = norms(t), Wd = t.W_dec.data, bd = t.b_dec.data;
  const out = new Float64Array(B * D);
  for (let b = 0; b < B; b++) for (let d = 0; d < D; d++) {
    let v = bd[d];
    for (let i = 0; i < width; i++) v += (rescale ? f[b * H + i] / n[i] : f[b * H + i]) * Wd[i * D + d];
    out[b * D + d] = v / s;
  }
  return out;
}

/** SAELens's BatchTopK activation: ReLU, then the int(k·B) largest of the whole batch */
function batchTopK(pre: Float64Array, total: number): Float64Array {
  const acts = pre.map((v) => Math.max(0, v));
  const cut = [...acts].sort((a, b) => b - a)[total - 1];
  return acts.map((v) => (v >= cut && v > 0 ? v : 0));
}

/** its TopK activation: each row's k largest pre-activations, ReLU'd */
function rowTopK(pre: Float64Array, B: number, k: number): Float64Array {
  const out = new Float64Array(pre.length);
  for (let b = 0; b < B; b++) {
    const row = pre.subarray(b * H, (b + 1) * H);
    const cut = [...row].sort((x, y) => y - x)[k - 1];
    for (let i = 0; i < H; i++) if (row[i] >= cut) out[b * H + i] = Math.max(0, row[i]);
  }
  return out;
}

/** the JumpReLU of SAELens's inference SAE: ReLU(h)·1[h > θ] */
const jumpRelu = (pre: Float64Array, theta: (i: number) => number) => pre.map((v, j) => (v > theta(j % H) ? Math.max(0, v) : 0));

// ---- our side ----

const CONFIG = `name: peer
seed: 7
data:
  d_in: ${D}
  synthetic: { n_features: 16, mean_active: 2 }
  eval_tokens: 256
  norm_estimate_tokens: 512
train: { steps: 2, batch_size: 16 }
`;

async function importPeer(dir: string, folder: string, id: string): Promise<string> {
  const cfg = path.join(dir, "data.yaml");
  if (!fs.existsSync(cfg)) fs.writeFileSync(cfg, CONFIG);
  const r = await cli(["import", folder, "--config", cfg, "--runs-dir", path.join(dir, "runs"), "--run-id", id]);
  assert.equal(r.code, 0, r.err);
  return path.join(dir, "runs", id);
}

/** our forward of the imported run's final weights (training: BatchTopK's selection over this batch) */
function ours(run: string, x: Float32Array, B: number, training = false) {
  const c = finalConfig(run, loadConfig(path.join(run, "config.yaml")).config);
  const model = createModel(c);
  const p = loadFinal(run, model);
  return { c, ...model.forward({ e: jsEngine, p, X: x, B, coeff: 0, dead: null, training }) };
}

/** the largest |a − b| in float32 ulps of the row's largest |b| */
function ulps(a: ArrayLike<number>, b: ArrayLike<number>, B: number): number {
  const n = a.length / B;
  let worst = 0;
  for (let r = 0; r < B; r++) {
    let big = 0;
    for (let j = 0; j < n; j++) big = Math.max(big, Math.abs(b[r * n + j]));
    const ulp = 2 ** (Math.floor(Math.log2(big)) - 23);
    for (let j = 0; j < n; j++) worst = Math.max(worst, Math.abs(a[r * n + j] - b[r * n + j]) / ulp);
  }
  return worst;
}

/** the knob column of `sae runs --wide` for a run */
async function knobOf(runs: string, id: string): Promise<string> {
  const r = await cli(["runs", "--wide", "--runs-dir", runs]);
  assert.equal(r.code, 0, r.err);
  const lines = r.out.trim().split("\n").map((l) => l.trim().split(/\s+/));
  const col = lines[0].indexOf("knob");
  const row = lines.find((l) => l[0] === id);
  assert.ok(row, `${id} in sae runs --wide:\n${r.out}`);
  return row[col];
}

// the float32 rounding of the stored weights, the fold and our float32 output (measured: at most 1.9)
const ULPS = 3;

// ---- SAELens training checkpoints ----

test("SAELens matryoshka_batchtopk training checkpoint (save_model): import keeps k and the widths; training and inference forwards reproduce SAELens's; runs --wide shows k", async () => {
  const dir = tmpDir();
  const folder = path.join(dir, "checkpoints", "final_1000");
  fs.mkdirSync(folder, { recursive: true });
  const t = peerWeights(11);
  const k = 3, B = 16, widths = [4, 12, H];
  // θ: a value inside the range of the rescaled pre-activations, as training leaves it
  const theta = 0.9134267852115631;
  writePeerSafetensors(path.join(folder, "sae_weights.safetensors"), { ...t, topk_threshold: { dtype: "F64", shape: [], data: Float64Array.of(theta) } });
  fs.writeFileSync(path.join(folder, "cfg.json"), trainingCfg("matryoshka_batchtopk", D, H, { ...batchTopkFields(k), matryoshka_widths: widths }));
  // save_checkpoint writes these beside the weights; import reads none of them
  writePeerSafetensors(path.join(folder, "sparsity.safetensors"), { sparsity: { dtype: "F32", shape: [H], data: new Float32Array(H).fill(-3) } });
  fs.writeFileSync(path.join(folder, "activation_scaler.json"), pyJson({ scaling_factor: null }));
  const run = await importPeer(dir, folder, "mat");

  const x = batch(12, B);
  // SAELens's training forward: BatchTopK over the rescaled pre-activations; every level decoded
  const f = batchTopK(saeLensHiddenPre(t, x, B, true), Math.floor(k * B));
  const out = saeLensDecode(t, f, B, true);
  let loss = 0;
  for (const w of widths) {
    const xh = saeLensDecode(t, f, B, true, w);
    for (let j = 0; j < B * D; j++) loss += (xh[j] - x[j]) ** 2 / B;
  }
  const tr = ours(run, x, B, true);
  assert.equal(tr.c.sae.variant, "matryoshka");
  assert.equal(tr.c.sae.k, k);
  assert.deepEqual(tr.c.sae.matryoshka_prefixes, widths);
  assert.ok(ulps(tr.Xhat, out, B) <= ULPS, `training forward: ${ulps(tr.Xhat, out, B)} ulps`);
  assert.ok(Math.abs(tr.terms.loss - loss) <= 1e-5 * loss, `the loss over the levels: ours ${tr.terms.loss}, SAELens ${loss}`);
  // inference: what save_inference_model turns it into, a JumpReLU with θ (as float32) everywhere
  const inf = ours(run, x, B);
  const fi = jumpRelu(saeLensHiddenPre(t, x, B, true), () => Math.fround(theta));
  assert.ok(fi.some((v) => v > 0) && fi.some((v, j) => v === 0 && saeLensHiddenPre(t, x, B, true)[j] > 0), "θ cuts some positive pre-activations");
  assert.ok(ulps(inf.Xhat, saeLensDecode(t, fi, B, true), B) <= ULPS, `inference forward: ${ulps(inf.Xhat, saeLensDecode(t, fi, B, true), B)} ulps`);
  assert.equal(await knobOf(path.join(dir, "runs"), "mat"), `k=${k}`);
});

test("SAELens matryoshka_batchtopk widths without d_sae get it appended, as SAELens does", async () => {
  const dir = tmpDir();
  const folder = path.join(dir, "ck");
  fs.mkdirSync(folder);
  writePeerSafetensors(path.join(folder, "sae_weights.safetensors"), { ...peerWeights(13), topk_threshold: { dtype: "F64", shape: [], data: Float64Array.of(0.5) } });
  fs.writeFileSync(path.join(folder, "cfg.json"), trainingCfg("matryoshka_batchtopk", D, H, { ...batchTopkFields(2), matryoshka_widths: [8, 16] }));
  const run = await importPeer(dir, folder, "m2");
  assert.deepEqual(loadConfig(path.join(run, "config.yaml")).config.sae.matryoshka_prefixes, [8, 16, H]);
});

test("SAELens batchtopk training checkpoint with rescale_acts_by_decoder_norm (its default): the decoder norms fold into the encoder; both forwards reproduce SAELens's", async () => {
  const dir = tmpDir();
  const folder = path.join(dir, "ck");
  fs.mkdirSync(folder);
  const t = peerWeights(21);
  const k = 2, B = 12, theta = 1.2345678901234567;
  writePeerSafetensors(path.join(folder, "sae_weights.safetensors"), { ...t, topk_threshold: { dtype: "F64", shape: [], data: Float64Array.of(theta) } });
  fs.writeFileSync(path.join(folder, "cfg.json"), trainingCfg("batchtopk", D, H, batchTopkFields(k)));
  const run = await importPeer(dir, folder, "btk");
  const x = batch(22, B);
  const pre = saeLensHiddenPre(t, x, B, true);
  const tr = ours(run, x, B, true);
  assert.equal(tr.c.sae.variant, "batchtopk");
  const want = saeLensDecode(t, batchTopK(pre, k * B), B, true);
  assert.ok(ulps(tr.Xhat, want, B) <= ULPS, `training forward: ${ulps(tr.Xhat, want, B)} ulps`);
  // without the fold the decoder's norms would scale every latent: far more than an ulp
  const unfolded = saeLensDecode(t, batchTopK(saeLensHiddenPre(t, x, B, false), k * B), B, false);
  assert.ok(ulps(unfolded, want, B) > 1000, "the case has decoder norms far from 1");
  const inf = ours(run, x, B);
  const wantInf = saeLensDecode(t, jumpRelu(pre, () => Math.fround(theta)), B, true);
  assert.ok(ulps(inf.Xhat, wantInf, B) <= ULPS, `inference forward: ${ulps(inf.Xhat, wantInf, B)} ulps`);
  assert.equal(await knobOf(path.join(dir, "runs"), "btk"), `k=${k}`);
});

test("SAELens topk training checkpoint (rescale_acts_by_decoder_norm, decoder norms far from 1): import reproduces TopKTrainingSAE's forward", async () => {
  const dir = tmpDir();
  const folder = path.join(dir, "ck");
  fs.mkdirSync(folder);
  const t = peerWeights(31);
  const k = 5, B = 10;
  writePeerSafetensors(path.join(folder, "sae_weights.safetensors"), t);
  fs.writeFileSync(path.join(folder, "cfg.json"), trainingCfg("topk", D, H, topkFields(k)));
  const run = await importPeer(dir, folder, "tk");
  const x = batch(32, B);
  const r = ours(run, x, B);
  assert.equal(r.c.sae.k, k);
  const want = saeLensDecode(t, rowTopK(saeLensHiddenPre(t, x, B, true), B, k), B, true);
  assert.ok(ulps(r.Xhat, want, B) <= ULPS, `${ulps(r.Xhat, want, B)} ulps`);
  assert.equal(await knobOf(path.join(dir, "runs"), "tk"), `k=${k}`);
});

test("SAELens training checkpoint with normalize_activations expected_average_only_in: activation_scaler.json's factor folds in; without it, a clear error", async () => {
  const dir = tmpDir();
  const folder = path.join(dir, "ck");
  fs.mkdirSync(folder);
  const t = peerWeights(41);
  const k = 2, B = 12, theta = 0.8, s = 0.37251;
  writePeerSafetensors(path.join(folder, "sae_weights.safetensors"), { ...t, topk_threshold: { dtype: "F64", shape: [], data: Float64Array.of(theta) } });
  fs.writeFileSync(path.join(folder, "cfg.json"), trainingCfg("batchtopk", D, H, batchTopkFields(k), "expected_average_only_in"));
  const cfg = path.join(dir, "data.yaml");
  fs.writeFileSync(cfg, CONFIG);
  const missing = await cli(["import", folder, "--config", cfg, "--runs-dir", path.join(dir, "runs")]);
  assert.equal(missing.code, 1);
  assert.match(missing.err, /normalize_activations "expected_average_only_in", and .*activation_scaler\.json cannot be read \(ENOENT\)/);
  assert.match(missing.err, /SAELens writes activation_scaler\.json beside a training checkpoint/);
  fs.writeFileSync(path.join(folder, "activation_scaler.json"), pyJson({ scaling_factor: null }));
  assert.match((await cli(["import", folder, "--config", cfg, "--runs-dir", path.join(dir, "runs")])).err, /scaling_factor is null/);
  fs.writeFileSync(path.join(folder, "activation_scaler.json"), pyJson({ scaling_factor: s }));
  const run = await importPeer(dir, folder, "scaled");
  // SAELens's trainer: the SAE sees s·x; its output divided by s is the reconstruction of x
  const x = batch(42, B);
  const pre = saeLensHiddenPre(t, x, B, true, s);
  const tr = ours(run, x, B, true);
  const want = saeLensDecode(t, batchTopK(pre, k * B), B, true, H, s);
  assert.ok(ulps(tr.Xhat, want, B) <= ULPS, `training forward: ${ulps(tr.Xhat, want, B)} ulps`);
  const inf = ours(run, x, B);
  const wantInf = saeLensDecode(t, jumpRelu(pre, () => theta), B, true, H, s);
  assert.ok(ulps(inf.Xhat, wantInf, B) <= ULPS, `inference forward: ${ulps(inf.Xhat, wantInf, B)} ulps`);
});

test("SAELens batchtopk with a fractional k is refused with the reason", async () => {
  const dir = tmpDir();
  const folder = path.join(dir, "ck");
  fs.mkdirSync(folder);
  writePeerSafetensors(path.join(folder, "sae_weights.safetensors"), { ...peerWeights(51), topk_threshold: { dtype: "F64", shape: [], data: Float64Array.of(0.5) } });
  fs.writeFileSync(path.join(folder, "cfg.json"), trainingCfg("batchtopk", D, H, batchTopkFields(2.5)));
  fs.writeFileSync(path.join(dir, "data.yaml"), CONFIG);
  const r = await cli(["import", folder, "--config", path.join(dir, "data.yaml"), "--runs-dir", path.join(dir, "runs")]);
  assert.equal(r.code, 1);
  assert.match(r.err, /cfg\.json: k = 2\.5; this tool's BatchTopK keeps k·B entries per batch with k a whole number/);
  assert.ok(!fs.existsSync(path.join(dir, "runs")), "nothing written");
});

// ---- SAELens inference folders and sparsify ----

test("SAELens jumprelu inference folder (save_inference_model): import reproduces its forward; runs --wide shows - (the folder has no L0 coefficient)", async () => {
  const dir = tmpDir();
  const folder = path.join(dir, "final");
  fs.mkdirSync(folder);
  const t = peerWeights(61);
  // save_inference_model has folded the decoder norms: unit rows
  const n = norms(t);
  for (let i = 0; i < H; i++) for (let d = 0; d < D; d++) t.W_dec.data[i * D + d] /= n[i];
  const rng = new Rng(62);
  const threshold = Float32Array.from({ length: H }, () => 0.1 + 0.5 * rng.next());
  writePeerSafetensors(path.join(folder, "sae_weights.safetensors"), { ...t, threshold: { dtype: "F32", shape: [H], data: threshold } });
  // get_inference_sae_cfg_dict takes the fields from a set (so their order varies run to run), then architecture
  fs.writeFileSync(path.join(folder, "cfg.json"), pyJson({ normalize_activations: "none", d_sae: H, reshape_activations: "none", device: "cpu", dtype: "float32", apply_b_dec_to_input: true, d_in: D, metadata: RUNNER_METADATA, architecture: "jumprelu" }));
  const run = await importPeer(dir, folder, "jr");
  const B = 9, x = batch(63, B);
  const r = ours(run, x, B);
  const want = saeLensDecode(t, jumpRelu(saeLensHiddenPre(t, x, B, false), (i) => threshold[i]), B, false);
  assert.ok(ulps(r.Xhat, want, B) <= ULPS, `${ulps(r.Xhat, want, B)} ulps`);
  assert.equal(await knobOf(path.join(dir, "runs"), "jr"), "-");
});

test("sparsify folder (SparseCoder.save_to_disk): import reproduces its forward; runs --wide shows the folder's k", async () => {
  const dir = tmpDir();
  const folder = path.join(dir, "layers.1");
  fs.mkdirSync(folder);
  const t = peerWeights(71);
  const encW = new Float32Array(H * D); // nn.Linear's weight [H, D]
  for (let i = 0; i < H; i++) for (let d = 0; d < D; d++) encW[i * D + d] = t.W_enc.data[d * H + i];
  writePeerSafetensors(path.join(folder, "sae.safetensors"), {
    "encoder.weight": { dtype: "F32", shape: [H, D], data: encW }, "encoder.bias": { dtype: "F32", shape: [H], data: t.b_enc.data },
    W_dec: t.W_dec, b_dec: t.b_dec,
  });
  // {**SparseCoderConfig.to_dict(), "d_in": d_in}; num_latents 0: expansion_factor × d_in
  const k = 3;
  fs.writeFileSync(path.join(folder, "cfg.json"), pyJson({ activation: "topk", expansion_factor: H / D, normalize_decoder: true, num_latents: 0, k, multi_topk: false, skip_connection: false, transcode: false, d_in: D }));
  const run = await importPeer(dir, folder, "sp");
  const B = 10, x = batch(72, B);
  const r = ours(run, x, B);
  // sparsify: ReLU(encoder(x − b_dec)), each row's top k, decoded as Σ a·W_dec[i] + b_dec
  const pre = saeLensHiddenPre(t, x, B, false).map((v) => Math.max(0, v));
  const want = saeLensDecode(t, rowTopK(pre, B, k), B, false);
  assert.ok(ulps(r.Xhat, want, B) <= ULPS, `${ulps(r.Xhat, want, B)} ulps`);
  assert.equal(await knobOf(path.join(dir, "runs"), "sp"), `k=${k}`);
});

// ---- our export, as SAELens reads it ----

/**
 * SAELens 6.18's handle_config_defaulting: the version from the top level or metadata; below 6.0
 * (or none) the config is rewritten as a pre-6.0 one, whose metadata is rebuilt from top-level
 * keys: the exported block is lost. Returns the metadata SAELens ends up with.
 */
function saeLensMetadata(cfg: Record<string, any>): Record<string, unknown> {
  const version: string | undefined = cfg.sae_lens_version ?? cfg.metadata?.sae_lens_version;
  const major = version ? Number(version.split(".")[0]) : 0;
  if (!(major >= 6)) return Object.fromEntries(["model_name", "hook_name"].filter((k) => k in cfg).map((k) => [k, cfg[k]]));
  return cfg.metadata;
}

test("SAELens reads our export's metadata (sae_lens_version, hook_name, model_name); JumpReLU exports (jumprelu, batchtopk, matryoshka) carry no flavour, old final weights' stray one included", async () => {
  const dir = tmpDir();
  // a sharded dataset whose manifest records what it was harvested from
  const acts = path.join(dir, "acts");
  fs.mkdirSync(acts);
  const N = 2048, rng = new Rng(81);
  writeNpy(path.join(acts, "s0.npy"), Float32Array.from({ length: N * D }, () => rng.normal()), [N, D]);
  fs.writeFileSync(path.join(acts, "manifest.json"), JSON.stringify({ format: "sae-activations", version: 1, d_in: D, dtype: "float32", shards: [{ file: "s0.npy", rows: N }], source: { checkpoint: "/models/stories260K.bin", layer: 3, site: "resid_post" } }));
  const runs = path.join(dir, "runs");
  const exported = VARIANTS.filter((v) => !v.flavours).map((v) => v.name);
  assert.ok(["jumprelu", "batchtopk", "matryoshka"].every((n) => exported.includes(n)));
  for (const variant of [...exported, "standard"]) {
    const cfg = path.join(dir, `${variant}.yaml`);
    fs.writeFileSync(cfg, `name: e\ndata:\n  source: file\n  file: { path: ${acts} }\n  eval_tokens: 256\n  norm_estimate_tokens: 512\nsae:\n  variant: ${variant}\n  d_sae: 16\n  k: 2\ntrain: { steps: 3, batch_size: 64 }\n`);
    const tr = await cli(["train", cfg, "--runs-dir", runs, "--run-id", variant]);
    assert.equal(tr.code, 0, tr.err);
    if (variant === "jumprelu") {
      // final weights written before flavours were limited to the variants that have them
      const f = path.join(runs, variant, "final", "cfg.json");
      const old = JSON.parse(fs.readFileSync(f, "utf8"));
      fs.writeFileSync(f, JSON.stringify({ ...old, metadata: { ...old.metadata, flavour: "constrained" } }));
    }
    const out = path.join(dir, `out-${variant}`);
    const ex = await cli(["export", variant, "--runs-dir", runs, "--out", out]);
    assert.equal(ex.code, 0, ex.err);
    const written = JSON.parse(fs.readFileSync(path.join(out, "cfg.json"), "utf8"));
    assert.equal(written.metadata.sae_lens_version, "6.18.0");
    const meta = saeLensMetadata(written);
    assert.equal(meta.model_name, "stories260K", variant);
    assert.equal(meta.hook_name, "blocks.3.hook_resid_post", variant);
    if (variant === "standard") {
      assert.equal(meta.flavour, "constrained", "a variant with flavours states its own");
      continue;
    }
    assert.ok(!("flavour" in written.metadata), `${variant}: the exported metadata names no flavour`);
    if (variant !== "jumprelu") assert.ok(!("flavour" in JSON.parse(fs.readFileSync(path.join(runs, variant, "final", "cfg.json"), "utf8")).metadata), `${variant}: nor do its final weights`);
    if (["jumprelu", "batchtopk", "matryoshka"].includes(variant)) assert.equal(written.architecture, "jumprelu");
  }
  // without sae_lens_version SAELens would keep none of it: what the check above guards
  assert.deepEqual(saeLensMetadata({ metadata: { hook_name: "blocks.3.hook_resid_post" } }), {});
});
