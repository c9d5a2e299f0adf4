// Matryoshka BatchTopK (docs/variants.md#matryoshka-batchtopk): float64 finite differences over
// every parameter, the loss against a direct computation of the prefix reconstructions, one
// prefix = BatchTopK bit for bit, the config's checks of sae.matryoshka_prefixes, and training on
// synthetic data: every prefix reconstructs, better the larger it is, and the inner ones far better
// than the same number of BatchTopK latents.
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { jsEngine } from "../src/engine/js.ts";
import { loadNative, nativeEngine, type Engine } from "../src/engine/index.ts";
import { Rng } from "../src/rng.ts";
import { createMatryoshka } from "../src/sae/matryoshka/fast.ts";
import { defaultPrefixes } from "../src/sae/matryoshka/index.ts";
import { createBatchTopK } from "../src/sae/batchtopk/fast.ts";
import { codeValue, type SaeModel } from "../src/sae/variant.ts";
import { ParamSet } from "../src/sae/params.ts";
import { configFromObject, loadConfig } from "../src/config/load.ts";
import { createModel } from "../src/sae/index.ts";
import { finalConfig, loadFinal } from "../src/sae/weights.ts";
import { createSource } from "../src/data/index.ts";
import { cli, gradCheck, randn, randomParams, tmpDir } from "./helpers.ts";

const D = 5, H = 9, B = 4;
const TOL = 1e-6;

for (const applyBDecToInput of [true, false]) {
  test(`matryoshka (apply_b_dec_to_input=${applyBDecToInput}): gradients of every parameter match finite differences, with AuxK`, () => {
    const model = createMatryoshka({ D, H }, { k: 3, kAux: 2, auxCoefficient: 0.5, applyBDecToInput, prefixes: [2, 5, 9] });
    const p = randomParams(model, applyBDecToInput ? 31 : 33);
    p.get("threshold")[0] = 0;
    const X = randn(B * D, new Rng(applyBDecToInput ? 32 : 34));
    const dead = new Uint8Array(H);
    dead[1] = dead[4] = dead[8] = 1;
    const base = model.forward({ e: jsEngine, p, X, B, coeff: 0, dead, training: true });
    // the code has entries in every block, so every prefix term has a gradient of its own
    for (const [lo, hi] of [[0, 2], [2, 5], [5, 9]]) {
      let n = 0;
      for (let b = 0; b < B; b++) for (let i = lo; i < hi; i++) if (codeValue(base.code, H, b, i) > 0) n++;
      assert.ok(n > 0, `block [${lo}, ${hi}) has no active latent: the case checks less than it claims`);
    }
    assert.ok(base.terms.aux > 0, "AuxK is on");
    // AuxK's target sg(x − x̂) is a constant for the gradient: fix it for the finite differences
    const auxTarget = base.Xhat.map((v, i) => X[i] - v);
    const r = gradCheck(model, p, { X, B, coeff: 0, dead, auxTarget, training: true }, 1e-5, new Set(["threshold"]));
    assert.equal(r.checked, 2 * H * D + H + D, "every trainable entry");
    assert.ok(r.worst < TOL, `worst relative error ${r.worst} at ${r.where}`);
  });
}

test("matryoshka: the loss is Σ_g ‖x − x̂_g‖² (mean over the batch) over the prefixes, from the code written out directly; mse is the full prefix's", () => {
  const Dd = 6, Hh = 20, Bb = 7, prefixes = [3, 8, 20];
  const model = createMatryoshka({ D: Dd, H: Hh }, { k: 4, kAux: 3, auxCoefficient: 0, applyBDecToInput: true, prefixes });
  const p = randomParams(model, 41);
  p.get("threshold")[0] = 0;
  const X = randn(Bb * Dd, new Rng(42));
  const r = model.forward({ e: jsEngine, p, X, B: Bb, coeff: 0, dead: null, training: true });
  const Wd = p.get("W_dec"), bd = p.get("b_dec");
  const errs = prefixes.map((m) => {
    let s = 0;
    for (let b = 0; b < Bb; b++) for (let d = 0; d < Dd; d++) {
      let xh = bd[d];
      for (let i = 0; i < m; i++) xh += codeValue(r.code, Hh, b, i) * Wd[i * Dd + d];
      s += (X[b * Dd + d] - xh) ** 2;
    }
    return s / Bb;
  });
  const sum = errs.reduce((a, b) => a + b, 0);
  assert.ok(Math.abs(r.terms.loss - sum) < 1e-12 * sum, `loss ${r.terms.loss} vs Σ prefixes ${sum}`);
  assert.ok(Math.abs(r.terms.mse - errs[2]) < 1e-12 * errs[2]);
  assert.equal(new Set(errs).size, 3, "the three prefixes reconstruct differently: each term counts");
});

/** the native engine when the addon is built, with the TypeScript one */
function engines(): [string, Engine][] {
  const { addon } = loadNative();
  return addon ? [["typescript", jsEngine], ["native", nativeEngine(addon)]] : [["typescript", jsEngine]];
}

test("matryoshka with one prefix (= d_sae) is BatchTopK bit for bit: loss, code, θ and every gradient, over several steps", () => {
  const Dd = 16, Hh = 96, Bb = 40, k = 5;
  for (const [name, e] of engines()) {
    for (const dead of [null, Uint8Array.from({ length: Hh }, (_, i) => (i % 7 === 0 ? 1 : 0))]) {
      const mk = (m: boolean): SaeModel => (m ? createMatryoshka({ D: Dd, H: Hh }, { k, kAux: 6, auxCoefficient: 0.25, applyBDecToInput: true, prefixes: [Hh] }) : createBatchTopK({ D: Dd, H: Hh }, { k, kAux: 6, auxCoefficient: 0.25, applyBDecToInput: true }));
      const models = [mk(true), mk(false)];
      const ps = models.map(() => {
        const p = new ParamSet(models[0].specs);
        const rng = new Rng(51, 7);
        for (let i = 0; i < p.buf.length; i++) p.buf[i] = 0.3 * rng.normal();
        p.get("threshold")[0] = 0;
        return p;
      });
      for (let step = 0; step < 4; step++) {
        const X = Float32Array.from(randn(Bb * Dd, new Rng(60 + step)));
        const out = models.map((model, j) => {
          const inp = { e, p: ps[j], X, B: Bb, coeff: 0, dead, training: true };
          const f = model.forward(inp);
          const g = ps[j].like();
          model.backward(inp, f.state, g);
          return { terms: { ...f.terms }, code: f.code.kind === "sparse" ? [Array.from(f.code.idx), Array.from(f.code.val)] : [], xhat: Array.from(f.Xhat), g: Array.from(g.buf) };
        });
        const at = `${name}, ${dead ? "AuxK on" : "no dead latents"}, step ${step}`;
        assert.deepEqual(out[0].terms, out[1].terms, at);
        assert.deepEqual(out[0].code, out[1].code, at);
        assert.deepEqual(out[0].xhat, out[1].xhat, at);
        assert.deepEqual(out[0].g, out[1].g, at);
        assert.equal(ps[0].get("threshold")[0], ps[1].get("threshold")[0], at);
        if (dead) assert.ok(out[0].terms.aux > 0, "AuxK contributes");
        // a plain SGD step on both, so the next step starts from moved (and equal) parameters
        for (const [j, p] of ps.entries()) for (let i = 0; i < p.buf.length - 1; i++) p.buf[i] -= 0.05 * out[j].g[i];
      }
    }
  }
});

test("sae.matryoshka_prefixes: the default ladder; it must rise strictly and end at d_sae (errors name the key)", () => {
  assert.deepEqual(defaultPrefixes(128), [8, 16, 32, 64, 128]);
  assert.deepEqual(defaultPrefixes(20), [1, 2, 5, 10, 20]);
  assert.deepEqual(defaultPrefixes(3), [1, 3]);
  assert.deepEqual(defaultPrefixes(1), [1]);
  const cfg = (sae: Record<string, unknown>) => configFromObject({ data: { d_in: 8 }, sae: { variant: "matryoshka", d_sae: 64, k: 4, ...sae } }).config;
  assert.deepEqual(cfg({}).sae.matryoshka_prefixes, [4, 8, 16, 32, 64]);
  assert.deepEqual(cfg({ matryoshka_prefixes: [10, 64] }).sae.matryoshka_prefixes, [10, 64]);
  assert.throws(() => cfg({ matryoshka_prefixes: [8, 8, 64] }), /sae\.matryoshka_prefixes: \[8, 8, 64\] must rise strictly: entry 2 \(8\) is not above 8/);
  assert.throws(() => cfg({ matryoshka_prefixes: [16, 8, 64] }), /must rise strictly/);
  assert.throws(() => cfg({ matryoshka_prefixes: [8, 32] }), /sae\.matryoshka_prefixes: the last prefix is 32; it must be the whole dictionary, d_sae = 64/);
  assert.throws(() => cfg({ matryoshka_prefixes: [8, 128] }), /the last prefix is 128/);
  assert.throws(() => cfg({ matryoshka_prefixes: [0, 64] }), /sae\.matryoshka_prefixes/);
  assert.throws(() => cfg({ matryoshka_prefixes: [] }), /sae\.matryoshka_prefixes/);
  assert.throws(() => cfg({ matryoshka_prefixes: [2.5, 64] }), /sae\.matryoshka_prefixes/);
});

test("sae train: a bad sae.matryoshka_prefixes exits 2 naming the file, line and key, with a fix; --set takes a list", async () => {
  const dir = tmpDir();
  const file = path.join(dir, "m.yaml");
  fs.writeFileSync(file, "data:\n  d_in: 8\nsae:\n  variant: matryoshka\n  d_sae: 32\n  k: 2\n  matryoshka_prefixes: [4, 16]\ntrain: { steps: 2, batch_size: 16 }\n");
  const r = await cli(["train", file, "--runs-dir", path.join(dir, "runs")]);
  assert.equal(r.code, 2, r.err);
  assert.match(r.err, /m\.yaml:7:3: sae\.matryoshka_prefixes: the last prefix is 16; it must be the whole dictionary, d_sae = 32/);
  assert.match(r.err, /e\.g\. \[2, 4, 8, 16, 32\]/);
  assert.ok(!fs.existsSync(path.join(dir, "runs")), "no run folder for a bad config");
  const ok = await cli(["train", file, "--runs-dir", path.join(dir, "runs"), "--run-id", "ok", "--set", "sae.matryoshka_prefixes=[4, 16, 32]"]);
  assert.equal(ok.code, 0, ok.err);
  assert.deepEqual(loadConfig(path.join(dir, "runs", "ok", "config.yaml")).config.sae.matryoshka_prefixes, [4, 16, 32]);
});

/** Σ_d (x − x̂_m)² per token, x̂_m decoded from the first m latents of the run's inference code on its eval rows */
function prefixErrors(runDir: string, prefixes: number[], n = 2048): number[] {
  const c = finalConfig(runDir, loadConfig(path.join(runDir, "config.yaml")).config);
  const model = createModel(c);
  const p = loadFinal(runDir, model);
  const X = createSource(c).evalSet(n);
  const { code } = model.forward({ e: jsEngine, p, X, B: n, coeff: 0, dead: null });
  const D = c.data.d_in, H = c.sae.d_sae, Wd = p.get("W_dec"), bd = p.get("b_dec");
  return prefixes.map((m) => {
    let s = 0;
    const xh = new Float64Array(D);
    for (let b = 0; b < n; b++) {
      xh.set(bd);
      for (let i = 0; i < m; i++) {
        const f = codeValue(code, H, b, i);
        if (f !== 0) for (let d = 0; d < D; d++) xh[d] += f * Wd[i * D + d];
      }
      for (let d = 0; d < D; d++) s += (X[b * D + d] - xh[d]) ** 2;
    }
    return s / n;
  });
}

test("training on synthetic data: the loss falls, every prefix reconstructs with an error that falls as the prefix grows, and the inner prefixes beat as many BatchTopK latents", async () => {
  const dir = tmpDir();
  const prefixes = [8, 32, 128];
  const yaml = (variant: string) => `name: m
seed: 3
data:
  d_in: 24
  synthetic: { n_features: 256, mean_active: 6, decay: 0.99 }
  eval_tokens: 2048
sae:
  variant: ${variant}
  d_sae: 128
  k: 8
  matryoshka_prefixes: [${prefixes.join(", ")}]
train: { steps: 400, batch_size: 256, log_every: 50 }
`;
  const runs = path.join(dir, "runs");
  for (const variant of ["matryoshka", "batchtopk"]) {
    fs.writeFileSync(path.join(dir, `${variant}.yaml`), yaml(variant));
    const r = await cli(["train", path.join(dir, `${variant}.yaml`), "--runs-dir", runs, "--run-id", variant]);
    assert.equal(r.code, 0, r.err);
  }
  const rows = fs.readFileSync(path.join(runs, "matryoshka", "metrics.csv"), "utf8").trim().split("\n").slice(1).map((l) => l.split(","));
  const loss = rows.map((r) => Number(r[5])), mse = rows.map((r) => Number(r[6]));
  assert.ok(loss[loss.length - 1] < 0.5 * loss[0], `the loss falls: ${loss[0]} → ${loss[loss.length - 1]}`);
  assert.ok(loss.every((l, i) => l > mse[i]), "the loss holds the inner prefixes' errors besides the full one");
  const m = prefixErrors(path.join(runs, "matryoshka"), prefixes);
  const b = prefixErrors(path.join(runs, "batchtopk"), prefixes);
  const total = prefixErrors(path.join(runs, "matryoshka"), [0])[0]; // b_dec alone
  assert.ok(m[0] < 0.9 * total, `the smallest prefix reconstructs: ${m[0]} vs ${total} with no latent`);
  for (let g = 1; g < m.length; g++) assert.ok(m[g] < m[g - 1], `prefix errors fall with the size: ${m}`);
  // (measured: 1.33 vs 1.89 and 0.58 vs 1.51; the whole dictionary 0.515 vs 0.518)
  assert.ok(m[0] < 0.8 * b[0], `the first ${prefixes[0]} latents: matryoshka ${m[0]}, batchtopk ${b[0]}`);
  assert.ok(m[1] < 0.5 * b[1], `the first ${prefixes[1]} latents: matryoshka ${m[1]}, batchtopk ${b[1]}`);
  assert.ok(m[2] < 1.1 * b[2], `the whole dictionary costs little: matryoshka ${m[2]}, batchtopk ${b[2]}`);
});
