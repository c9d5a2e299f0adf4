// SAELens and sparsify folders: every variant exported, read back the way SAELens (or sparsify)
// computes — an independent forward pass from their published formulas — and imported again as a
// run whose evaluation matches the original's.
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { cli, tmpDir } from "./helpers.ts";
import { readSafetensors } from "../src/io/safetensors.ts";
import { loadConfig } from "../src/config/load.ts";
import { VARIANT_NAMES as VARIANTS } from "../src/sae/index.ts";
import { createModel } from "../src/sae/index.ts";
import { finalConfig, loadFinal } from "../src/sae/weights.ts";
import { createSource } from "../src/data/index.ts";
import { jsEngine } from "../src/engine/js.ts";

const CONFIG = (variant: string, extra = "") => `name: x
seed: 5
data:
  d_in: 16
  synthetic: { n_features: 24, mean_active: 2 }
  eval_tokens: 512
  norm_estimate_tokens: 1024
sae:
  variant: ${variant}
  d_sae: 32
  k: 4
  l1_coefficient: 0.01
  jumprelu_init_threshold: 0.05
  jumprelu_bandwidth: 0.05
${extra}
train: { steps: 40, batch_size: 128, warmup_steps: 5, sparsity_warmup_steps: 5, log_every: 20 }
`;

const ARCH: Record<string, string> = { standard: "standard", tanh: "standard", scaled: "standard", gated: "gated", topk: "topk", batchtopk: "jumprelu", jumprelu: "jumprelu", matryoshka: "jumprelu" };

/** SAELens v6's encode/decode for its four inference architectures, from raw tensors (W_enc [D, H]). */
function saeLensForward(t: Record<string, { data: ArrayLike<number> }>, cfg: Record<string, any>, x: Float32Array, D: number, H: number): Float64Array {
  const xin = Float64Array.from(x, (v, d) => v - (cfg.apply_b_dec_to_input ? t.b_dec.data[d] : 0));
  const pre = (W: (d: number, i: number) => number, b: ArrayLike<number>) => Float64Array.from({ length: H }, (_, i) => {
    let s = b[i];
    for (let d = 0; d < D; d++) s += xin[d] * W(d, i);
    return s;
  });
  const We = t.W_enc.data;
  let f: Float64Array;
  if (cfg.architecture === "gated") {
    const gate = pre((d, i) => We[d * H + i], t.b_gate.data);
    const mag = pre((d, i) => We[d * H + i] * Math.exp(t.r_mag.data[i]), t.b_mag.data);
    f = Float64Array.from(gate, (g, i) => (g > 0 ? Math.max(0, mag[i]) : 0));
  } else {
    const h = pre((d, i) => We[d * H + i], t.b_enc.data);
    if (cfg.architecture === "standard") f = h.map((v) => Math.max(0, v));
    else if (cfg.architecture === "jumprelu") f = h.map((v, i) => (v > t.threshold.data[i] ? Math.max(0, v) : 0));
    else {
      const kth = [...h].sort((a, b) => b - a)[cfg.k - 1];
      f = h.map((v) => (v >= kth ? Math.max(0, v) : 0));
    }
  }
  return Float64Array.from({ length: D }, (_, d) => {
    let s = t.b_dec.data[d];
    for (let i = 0; i < H; i++) s += f[i] * t.W_dec.data[i * D + d];
    return s;
  });
}

async function trainRun(dir: string, variant: string, extra = ""): Promise<string> {
  const cfg = path.join(dir, `${variant}.yaml`);
  fs.writeFileSync(cfg, CONFIG(variant, extra));
  const r = await cli(["train", cfg, "--runs-dir", path.join(dir, "runs"), "--run-id", `r-${variant}`]);
  assert.equal(r.code, 0, r.err);
  return path.join(dir, "runs", `r-${variant}`);
}

/** our reconstruction of the eval rows, from the run's final weights */
function ourRecon(runDir: string): { X: Float32Array; Xhat: Float32Array; N: number } {
  const c = finalConfig(runDir, loadConfig(path.join(runDir, "config.yaml")).config);
  const model = createModel(c);
  const p = loadFinal(runDir, model);
  const X = createSource(c).evalSet(64);
  const { Xhat } = model.forward({ e: jsEngine, p, X, B: 64, coeff: 0, dead: null });
  return { X, Xhat: Float32Array.from(Xhat), N: 64 };
}

for (const variant of VARIANTS) {
  test(`SAELens export of ${variant}: names, shapes, dtypes and cfg.json as SAELens reads them; its forward reproduces ours; import gives the same evaluation`, async () => {
    const dir = tmpDir();
    const run = await trainRun(dir, variant);
    const out = path.join(dir, "exported");
    const ex = await cli(["export", `r-${variant}`, "--runs-dir", path.join(dir, "runs"), "--format", "saelens", "--out", out]);
    assert.equal(ex.code, 0, ex.err);
    assert.deepEqual(fs.readdirSync(out).sort(), ["cfg.json", "sae_weights.safetensors"]);
    const cfg = JSON.parse(fs.readFileSync(path.join(out, "cfg.json"), "utf8"));
    assert.equal(cfg.architecture, ARCH[variant]);
    assert.equal(cfg.d_in, 16);
    assert.equal(cfg.d_sae, 32);
    assert.equal(cfg.dtype, "float32");
    assert.equal(cfg.normalize_activations, "none");
    assert.equal(typeof cfg.apply_b_dec_to_input, "boolean");
    assert.equal(typeof cfg.metadata, "object");
    if (variant === "topk") assert.equal(cfg.k, 4);
    const { tensors } = readSafetensors(path.join(out, "sae_weights.safetensors"));
    const expect: Record<string, number[]> = { W_enc: [16, 32], W_dec: [32, 16], b_dec: [16] };
    if (cfg.architecture === "gated") Object.assign(expect, { b_gate: [32], b_mag: [32], r_mag: [32] });
    else expect.b_enc = [32];
    if (cfg.architecture === "jumprelu") expect.threshold = [32];
    assert.deepEqual(Object.keys(tensors).sort(), Object.keys(expect).sort());
    for (const [name, shape] of Object.entries(expect)) {
      assert.deepEqual(tensors[name].shape, shape, name);
      assert.equal(tensors[name].dtype, "F32", name);
    }
    if (variant === "batchtopk" || variant === "matryoshka") assert.ok(tensors.threshold.data.every((v) => v === tensors.threshold.data[0] && v > 0));

    const { X, Xhat, N } = ourRecon(run);
    let worst = 0;
    for (let n = 0; n < N; n++) {
      const y = saeLensForward(tensors, cfg, X.subarray(n * 16, (n + 1) * 16), 16, 32);
      for (let d = 0; d < 16; d++) worst = Math.max(worst, Math.abs(y[d] - Xhat[n * 16 + d]));
    }
    assert.ok(worst < 1e-4, `SAELens forward vs ours: max difference ${worst}`);

    const im = await cli(["import", out, "--config", path.join(dir, `${variant}.yaml`), "--runs-dir", path.join(dir, "runs"), "--run-id", "back"]);
    assert.equal(im.code, 0, im.err);
    const back = ourRecon(path.join(dir, "runs", "back"));
    let diff = 0;
    for (let i = 0; i < Xhat.length; i++) diff = Math.max(diff, Math.abs(back.Xhat[i] - Xhat[i]));
    assert.ok(diff <= (variant === "scaled" ? 1e-6 : 0), `round trip changed the reconstruction by ${diff}`);
    const ev = (id: string) => JSON.parse(fs.readFileSync(path.join(dir, "runs", id, "eval.json"), "utf8"));
    assert.ok(Math.abs(ev("back").fvu - ev(`r-${variant}`).fvu) <= 1e-6 * ev(`r-${variant}`).fvu);
    assert.equal(ev("back").l0, ev(`r-${variant}`).l0);
  });
}

test("sparsify export (TopK, with and without the pre-encoder bias) computes what sparsify computes; import and fine-tune it", async () => {
  const dir = tmpDir();
  for (const [label, extra] of [["pre", ""], ["nopre", "  apply_b_dec_to_input: false"]]) {
    const run = await trainRun(dir, "topk", extra);
    fs.renameSync(run, path.join(dir, "runs", `r-${label}`));
    const out = path.join(dir, `sp-${label}`);
    const ex = await cli(["export", `r-${label}`, "--runs-dir", path.join(dir, "runs"), "--format", "sparsify", "--out", out]);
    assert.equal(ex.code, 0, ex.err);
    const cfg = JSON.parse(fs.readFileSync(path.join(out, "cfg.json"), "utf8"));
    assert.deepEqual([cfg.activation, cfg.num_latents, cfg.k, cfg.d_in], ["topk", 32, 4, 16]);
    const { tensors: t } = readSafetensors(path.join(out, "sae.safetensors"));
    assert.deepEqual(Object.keys(t).sort(), ["W_dec", "b_dec", "encoder.bias", "encoder.weight"]);
    assert.deepEqual(t["encoder.weight"].shape, [32, 16]);
    // sparsify: top-k of ReLU(encoder(x − b_dec)), decoded as f·W_dec + b_dec
    const { X, Xhat, N } = ourRecon(path.join(dir, "runs", `r-${label}`));
    let worst = 0;
    for (let n = 0; n < N; n++) {
      const pre = Array.from({ length: 32 }, (_, i) => {
        let s = t["encoder.bias"].data[i];
        for (let d = 0; d < 16; d++) s += t["encoder.weight"].data[i * 16 + d] * (X[n * 16 + d] - t.b_dec.data[d]);
        return Math.max(0, s);
      });
      const kth = [...pre].sort((a, b) => b - a)[3];
      for (let d = 0; d < 16; d++) {
        let y = t.b_dec.data[d];
        for (let i = 0; i < 32; i++) if (pre[i] >= kth) y += pre[i] * t.W_dec.data[i * 16 + d];
        worst = Math.max(worst, Math.abs(y - Xhat[n * 16 + d]));
      }
    }
    assert.ok(worst < 1e-4, `${label}: sparsify forward vs ours ${worst}`);
  }
  const im = await cli(["import", path.join(dir, "sp-nopre"), "--config", path.join(dir, "topk.yaml"), "--runs-dir", path.join(dir, "runs"), "--run-id", "imp"]);
  assert.equal(im.code, 0, im.err);
  const a = JSON.parse(fs.readFileSync(path.join(dir, "runs", "imp", "eval.json"), "utf8"));
  const b = JSON.parse(fs.readFileSync(path.join(dir, "runs", "r-nopre", "eval.json"), "utf8"));
  assert.ok(Math.abs(a.fvu - b.fvu) < 1e-5 * b.fvu, `${a.fvu} vs ${b.fvu}`);
  const ft = await cli(["finetune", "imp", "--runs-dir", path.join(dir, "runs"), "--freeze", "encoder", "--steps", "10", "--run-id", "ft"]);
  assert.equal(ft.code, 0, ft.err);
  const again = await cli(["export", "r-pre", "--runs-dir", path.join(dir, "runs"), "--out", path.join(dir, "sp-pre")]);
  assert.equal(again.code, 2);
  assert.match(again.err, /already exists and is not empty/);
  const gated = await trainRun(dir, "gated");
  const sg = await cli(["export", path.basename(gated), "--runs-dir", path.join(dir, "runs"), "--format", "sparsify", "--out", path.join(dir, "sg")]);
  assert.equal(sg.code, 2);
  assert.match(sg.err, /sparsify holds topk SAEs only; this run is gated/);
});
