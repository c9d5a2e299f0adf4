// sae features (docs/features.md): the top and quantile examples against a brute-force pass, the
// ground-truth match and the mixture definition, the promoted tokens against a direct
// computation through the model's weights, MNIST decoder images against the decoder rows, the
// page in headless Chromium, and bad arguments. Language-model tests need SAE_SHARED_MODELS
// (skipped with the reason without it, a failure under CI); the Chromium test needs Debian's
// chromium (.ci/run installs it; skipped with the reason elsewhere when it cannot be found).
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { spawnSync } from "node:child_process";
import { PNG } from "pngjs";
import { cli, tmpDir } from "./helpers.ts";
import { loadConfig } from "../src/config/load.ts";
import { selectEngine } from "../src/engine/index.ts";
import { jsEngine } from "../src/engine/js.ts";
import { createModel } from "../src/sae/index.ts";
import { codeValue } from "../src/sae/variant.ts";
import { loadFinal } from "../src/sae/weights.ts";
import { readSafetensors } from "../src/io/safetensors.ts";
import { createSource } from "../src/data/index.ts";
import { loadLlama } from "../src/lm/llama.ts";
import { Tokenizer } from "../src/lm/tokenizer.ts";
import { matchTruth } from "../src/eval/features.ts";
import type { FeatureDocument } from "../src/eval/features.ts";
import { Rng } from "../src/rng.ts";

const MODELS = process.env.SAE_SHARED_MODELS;
if (!MODELS && process.env.CI) throw new Error("SAE_SHARED_MODELS must point at ../shared/models under CI");
const noModels = MODELS ? false : "SAE_SHARED_MODELS is not set (the folder with aidreams260K.bin)";
const model = (name: string) => path.join(MODELS ?? "", name);
const native = selectEngine().engine;

const SYNTH = `name: feat
seed: 4
data:
  d_in: 24
  synthetic: { n_features: 40, mean_active: 3, decay: 0.98, magnitude_min: 0.3 }
  eval_tokens: 3000
  norm_estimate_tokens: 2048
sae: { variant: topk, d_sae: 64, k: 5 }
train: { steps: 250, batch_size: 256, lr: 0.005, warmup_steps: 20, log_every: 50 }
`;

async function trainRun(yaml: string, id: string): Promise<{ dir: string; runs: string; run: string }> {
  const dir = tmpDir();
  fs.writeFileSync(path.join(dir, "c.yaml"), yaml);
  const runs = path.join(dir, "runs");
  const r = await cli(["train", path.join(dir, "c.yaml"), "--runs-dir", runs, "--run-id", id]);
  assert.equal(r.code, 0, r.err);
  return { dir, runs, run: path.join(runs, id) };
}

/**
 * every latent's activation on every held-out row [N, H], read off the code one (row, latent) at a
 * time; one forward call over all rows, as the pass makes for N ≤ 4096, so the values are the same floats
 */
function bruteForce(run: string, tokens?: number) {
  const config = loadConfig(path.join(run, "config.yaml")).config;
  const m = createModel(config);
  const p = loadFinal(run, m);
  const X = createSource(config, native).evalSet(tokens ?? config.data.eval_tokens);
  const { D, H } = m.dims, N = X.length / D;
  assert.ok(N <= 4096);
  const F = new Float32Array(N * H);
  const { code } = m.forward({ e: native, p, X, B: N, coeff: 0, dead: null });
  for (let r = 0; r < N; r++) for (let i = 0; i < H; i++) F[r * H + i] = Math.max(0, codeValue(code, H, r, i));
  return { config, p, X, N, H, D, F };
}

const readDoc = (out: string): FeatureDocument => JSON.parse(fs.readFileSync(path.join(out, "features.json"), "utf8"));

test("synthetic run: top examples, quantile buckets, statistics and ground truth equal a brute-force pass; eval.json gains the summary", async () => {
  const { dir, runs, run } = await trainRun(SYNTH, "s");
  const evalBefore = JSON.parse(fs.readFileSync(path.join(run, "eval.json"), "utf8"));
  const out = path.join(dir, "pages");
  const r = await cli(["features", "s", "--runs-dir", runs, "--out", out, "--top", "64", "--examples", "15"]);
  assert.equal(r.code, 0, r.err);
  const doc = readDoc(out);
  const { F, N, H, p, D } = bruteForce(run);
  assert.equal(doc.summary.tokens, N);
  assert.equal(doc.latents.length, H);
  let checkedQuantiles = 0;
  for (const page of doc.latents) {
    const i = page.id;
    const fires = [] as { row: number; v: number }[];
    for (let n = 0; n < N; n++) if (F[n * H + i] > 0) fires.push({ row: n, v: F[n * H + i] });
    assert.equal(page.fires, fires.length, `latent ${i} fires`);
    assert.ok(Math.abs(page.firing_rate - fires.length / N) < 1e-12);
    // top: the 15 largest activations, ties to the lower row
    const desc = [...fires].sort((a, b) => b.v - a.v || a.row - b.row);
    assert.deepEqual(page.top.map((x) => x.row), desc.slice(0, 15).map((x) => x.row), `latent ${i} top rows`);
    assert.deepEqual(page.top.map((x) => x.activation), desc.slice(0, 15).map((x) => x.v));
    assert.equal(page.max_activation, desc[0]?.v ?? 0);
    assert.equal(page.histogram.counts.reduce((a, b) => a + b, 0), fires.length);
    // quantiles: bucket q holds ranks [⌊qc/5⌋, ⌊(q+1)c/5⌋) of the ascending activations
    const asc = fires.map((x) => x.v).sort((a, b) => a - b), c = asc.length;
    const nonEmpty = [0, 1, 2, 3, 4].filter((q) => Math.floor(((q + 1) * c) / 5) > Math.floor((q * c) / 5));
    assert.equal(page.quantiles.length, nonEmpty.length);
    page.quantiles.forEach((b, k) => {
      const q = nonEmpty[k], r0 = Math.floor((q * c) / 5), r1 = Math.floor(((q + 1) * c) / 5);
      assert.equal(b.count, r1 - r0);
      assert.deepEqual([b.lo, b.hi], [asc[r0], asc[r1 - 1]], `latent ${i} bucket ${q}`);
      assert.equal(b.examples.length, Math.min(4, r1 - r0));
      assert.equal(new Set(b.examples.map((x) => x.row)).size, b.examples.length, "drawn without replacement");
      for (const x of b.examples) {
        assert.ok(x.activation >= b.lo && x.activation <= b.hi, `latent ${i} bucket ${q}: ${x.activation} outside [${b.lo}, ${b.hi}]`);
        assert.equal(x.activation, F[x.row * H + i], "the example's activation is its row's");
      }
      checkedQuantiles++;
    });
  }
  assert.ok(checkedQuantiles > 100, `only ${checkedQuantiles} buckets checked`);

  // ground truth: the best cosine of each decoder row with the run's true features
  const gt = readSafetensors(path.join(run, "ground_truth.safetensors")).tensors.features;
  const G = gt.shape[0], W = p.get("W_dec");
  let matched = 0;
  for (const page of doc.latents) {
    let best = -2, arg = -1;
    const wn = Math.hypot(...W.subarray(page.id * D, (page.id + 1) * D));
    for (let g = 0; g < G; g++) {
      let dot = 0, gn = 0;
      for (let d = 0; d < D; d++) { dot += W[page.id * D + d] * gt.data[g * D + d]; gn += gt.data[g * D + d] ** 2; }
      const cos = dot / (wn * Math.sqrt(gn));
      if (cos > best) { best = cos; arg = g; }
    }
    assert.equal(page.ground_truth!.feature, arg);
    assert.ok(Math.abs(page.ground_truth!.cosine - best) < 1e-5);
    if (best > 0.9) matched++;
  }
  assert.equal(doc.summary.ground_truth!.frac_matched_0_9, matched / H);
  assert.ok(matched / H > 0.3, `only ${matched} of ${H} latents match a true feature`);

  // statistics of every latent, the index order, and eval.json
  const rates = Array.from({ length: H }, (_, i) => { let c = 0; for (let n = 0; n < N; n++) if (F[n * H + i] > 0) c++; return c / N; });
  assert.deepEqual(doc.stats.firing_rate, rates);
  assert.equal(doc.summary.frac_firing_gt_1pct, rates.filter((x) => x > 0.01).length / H);
  assert.equal(doc.summary.frac_firing_gt_10pct, rates.filter((x) => x > 0.1).length / H);
  for (let k = 1; k < H; k++) assert.ok(rates[doc.order[k - 1]] >= rates[doc.order[k]], "the index is sorted by firing rate");
  const evalAfter = JSON.parse(fs.readFileSync(path.join(run, "eval.json"), "utf8"));
  assert.deepEqual(evalAfter.features, doc.summary);
  assert.equal(evalAfter.fvu, evalBefore.fvu, "the rest of eval.json stays");
  assert.match(r.out, /firing on > 10% tokens/);
  const reEval = await cli(["eval", "s", "--runs-dir", runs]);
  assert.equal(reEval.code, 0, reEval.err);
  assert.deepEqual(JSON.parse(fs.readFileSync(path.join(run, "eval.json"), "utf8")).features, doc.summary, "sae eval keeps the features summary");

  // the text view, and latent ids past d_sae
  const t = await cli(["features", "s", "--runs-dir", runs, "--latent", String(doc.order[0])]);
  assert.equal(t.code, 0, t.err);
  assert.match(t.out, new RegExp(`ground truth: feature ${doc.latents.find((x) => x.id === doc.order[0])!.ground_truth!.feature} at cosine`));
  for (const args of [["--latent", "64"], ["--latents", "3,64", "--out", out]]) {
    const bad = await cli(["features", "s", "--runs-dir", runs, ...args]);
    assert.equal(bad.code, 2, bad.err);
    assert.match(bad.err, /latent 64 does not exist: run s has d_sae = 64 latents \(0\.\.63\)/);
  }
  const usage: [string[], RegExp][] = [
    [["--out", out, "--top", "3", "--random", "3"], /--top and --random both choose latents/],
    [["--out", out, "--latents", "3,x"], /--latents 3,x: "x" is not a latent id/],
    [["--out", out, "--sort", "loudness"], /--sort loudness: expected one of firing_rate/],
    [[], /say where the pages go \(--out DIR\) or which latent to print \(--latent N\)/],
    [["--out", out, "--tokenizer", "tok.bin"], /--tokenizer: the run's data is synthetic; it has no tokens to decode/],
    [["--out", out, "--model", "m.bin"], /--model: the run's data is synthetic, not a language model's activations/],
  ];
  for (const [args, re] of usage) {
    const bad = await cli(["features", "s", "--runs-dir", runs, ...args]);
    assert.equal(bad.code, 2, `${args.join(" ")}: ${bad.err}`);
    assert.match(bad.err, re);
  }
});

test("match and mixture: a true feature, the sum of two, a difference of two, an unrelated direction", () => {
  const D = 32, G = 6, rng = new Rng(9, 1);
  const g = new Float32Array(G * D);
  for (let i = 0; i < g.length; i++) g[i] = rng.normal();
  const row = (f: (d: number) => number) => Float32Array.from({ length: D }, (_, d) => f(d));
  const noise = row(() => rng.normal());
  const rows = [
    row((d) => 3 * g[2 * D + d]), // feature 2, scaled: a match
    row((d) => g[0 * D + d] + 0.8 * g[4 * D + d]), // two features together: a mixture
    row((d) => g[0 * D + d] - 0.8 * g[4 * D + d]), // in their span, but with a negative part: neither
    noise, // neither
  ];
  const W = new Float32Array(rows.length * D);
  rows.forEach((r, i) => W.set(r, i * D));
  const m = matchTruth(jsEngine, W, rows.length, D, { features: g, G });
  assert.equal(m[0].kind, "match");
  assert.equal(m[0].feature, 2);
  assert.ok(m[0].cosine > 0.9999);
  assert.equal(m[1].kind, "mixture");
  assert.deepEqual([m[1].feature, m[1].second].sort(), [0, 4]);
  assert.ok(m[1].cosine < 0.9 && m[1].span_cosine > 0.9999, JSON.stringify(m[1]));
  // the negative part has a negative cosine, so it is not among the two best: not a mixture
  assert.equal(m[2].kind, "neither");
  assert.equal(m[2].feature, 0);
  assert.notEqual(m[2].second, 4);
  assert.equal(m[3].kind, "neither");
  assert.ok(m[3].span_cosine < 0.9);
});

const MNIST = `name: mn
seed: 1
data: { source: mnist, eval_tokens: 300, norm_estimate_tokens: 1024 }
sae: { variant: topk, d_sae: 48, k: 6, k_aux: 24 }
train: { steps: 40, batch_size: 256, warmup_steps: 5, log_every: 20 }
`;

/** the value of a diverging-palette pixel, in units of the image's scale (inverse of src/report/features-png.ts) */
const unDiverge = (r: number, g: number, b: number) => (r === 255 ? 1 - g / 255 : b === 255 ? r / 255 - 1 : NaN);

/** img elements of one section: [data-kind, data-scale, decoded PNG] */
function sectionImages(html: string, id: number): { kind: string; scale: number; png: PNG }[] {
  const start = html.indexOf(`<section class="latent" id="latent-${id}"`);
  const sec = html.slice(start, html.indexOf("</section>", start));
  return [...sec.matchAll(/<img (?:class="[^"]*" )?(?:data-kind="(\w+)" data-scale="([^"]+)" )?src="data:image\/png;base64,([^"]+)"/g)]
    .map((m) => ({ kind: m[1] ?? "input", scale: Number(m[2]), png: PNG.sync.read(Buffer.from(m[3], "base64")) }));
}

let mnistPages: { out: string; doc: FeatureDocument } | null = null;

test("MNIST: the decoder images hold the decoder rows' values, the digit images the inputs' pixels", async () => {
  const { dir, runs, run } = await trainRun(MNIST, "m");
  const out = path.join(dir, "pages");
  const r = await cli(["features", "m", "--runs-dir", runs, "--out", out, "--top", "6", "--sort", "max_activation"]);
  assert.equal(r.code, 0, r.err);
  const doc = readDoc(out);
  mnistPages = { out, doc };
  const html = fs.readFileSync(path.join(out, "features.html"), "utf8");
  const { p, X, D } = bruteForce(run);
  const W = p.get("W_dec");
  assert.equal(doc.latents.length, 6);
  for (const page of doc.latents) {
    const imgs = sectionImages(html, page.id);
    const dec = imgs.filter((x) => x.kind === "decoder");
    assert.equal(dec.length, 1);
    const { png, scale } = dec[0];
    assert.equal(png.width, 28);
    assert.equal(png.height, 28);
    const w = W.subarray(page.id * D, (page.id + 1) * D);
    assert.ok(Math.abs(scale - Math.max(...Array.from(w, Math.abs))) < 1e-6 * scale);
    for (let k = 0; k < D; k++) {
      const v = unDiverge(png.data[4 * k], png.data[4 * k + 1], png.data[4 * k + 2]) * scale;
      assert.ok(Math.abs(v - w[k]) <= (0.5 / 255) * scale + 1e-7, `latent ${page.id} pixel ${k}: image ${v}, decoder ${w[k]}`);
    }
    // the top digits, in order, with their pixels (grey level 255·(1 − v))
    const digits = imgs.filter((x) => x.kind === "input");
    assert.equal(digits.length, page.top.length + page.quantiles.reduce((a, q) => a + q.examples.length, 0));
    page.top.forEach((x, j) => {
      for (let k = 0; k < D; k += 7) assert.equal(digits[j].png.data[4 * k], Math.round(255 * (1 - X[x.row * D + k])));
    });
    assert.ok(page.top.every((x) => x.label! >= 0 && x.label! <= 9));
  }
  for (let k = 1; k < doc.latents.length; k++) assert.ok(doc.latents[k - 1].max_activation >= doc.latents[k].max_activation, "--top by max_activation");
});

/** chromium as Debian installs it, or a Chrome on the PATH; null when none is found */
function findChromium(): string | null {
  for (const c of [process.env.CHROMIUM, "chromium", "chromium-browser", "google-chrome"]) {
    if (c && spawnSync(c, ["--version"], { encoding: "utf8" }).status === 0) return c;
  }
  return null;
}
const chromium = findChromium();
if (!chromium && process.env.CI) throw new Error("chromium is missing under CI (.ci/run installs Debian's chromium)");

/** loads a page headless; returns its screenshot and the console messages it logged */
function shoot(url: string, dir: string, name: string): { png: PNG; console: string[] } {
  const file = path.join(dir, `${name}.png`);
  const r = spawnSync(chromium!, ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars", `--user-data-dir=${path.join(dir, `profile-${name}`)}`,
    "--enable-logging=stderr", "--window-size=1000,1200", `--screenshot=${file}`, url], { encoding: "utf8", timeout: 60_000 });
  assert.ok(fs.existsSync(file), `chromium wrote no screenshot: ${r.stderr}`);
  return { png: PNG.sync.read(fs.readFileSync(file)), console: r.stderr.split("\n").filter((l) => l.includes(":CONSOLE")) };
}

/** pixels with exactly this colour */
const countColour = (png: PNG, [r, g, b]: number[]) => {
  let n = 0;
  for (let k = 0; k < png.data.length; k += 4) if (png.data[k] === r && png.data[k + 1] === g && png.data[k + 2] === b) n++;
  return n;
};

/** near-black grey pixels: a digit's ink (the page's text is #222, lighter) */
const countInk = (png: PNG) => {
  let n = 0;
  for (let k = 0; k < png.data.length; k += 4) if (png.data[k] < 20 && png.data[k] === png.data[k + 1] && png.data[k] === png.data[k + 2]) n++;
  return n;
};

test("features.html in headless Chromium: no console messages, the index is not blank, a latent's section shows its histogram and digits", { skip: chromium ? false : "no chromium on this machine (.ci/run installs Debian's chromium)" }, () => {
  assert.ok(mnistPages, "the MNIST test wrote the pages");
  const { out, doc } = mnistPages;
  const dir = tmpDir();
  const url = `file://${path.resolve(out, "features.html")}`;
  const index = shoot(url, dir, "index");
  const id = doc.latents[0].id;
  const page = shoot(`${url}#latent-${id}`, dir, "latent");
  assert.deepEqual(index.console, []);
  assert.deepEqual(page.console, []);
  const white = (png: PNG) => countColour(png, [255, 255, 255]) / (png.width * png.height);
  assert.ok(white(index.png) < 0.97, `the index is ${(100 * white(index.png)).toFixed(1)}% white`);
  // the histogram's bars (#f80) and the digits' ink (black) appear on the latent's page only
  const bars = countColour(page.png, [255, 136, 0]), ink = countInk(page.png);
  assert.ok(bars > 200, `${bars} histogram pixels`);
  assert.ok(ink > 2000, `${ink} ink pixels`);
  assert.equal(countColour(index.png, [255, 136, 0]), 0);
  assert.ok(countInk(index.png) < ink / 10);
  // nothing reaches for the network
  assert.doesNotMatch(fs.readFileSync(path.join(out, "features.html"), "utf8"), /(src|href)="(https?:)?\/\//);
});

const AIDREAMS = `name: lmf
seed: 3
data:
  source: model
  model:
    checkpoint: ${model("aidreams260K.bin")}
    tokenizer: ${model("aidreams260K.tok512.bin")}
    layer: 2
    site: resid_pre
    sequences: 128
    context_size: 40
  eval_tokens: 624
sae: { variant: topk, d_sae: 64, k: 4 }
train: { steps: 40, batch_size: 256, warmup_steps: 5, log_every: 20 }
`;

test("language model: contexts are the held-out tokens with this latent's activations; promoted tokens equal W_U (g ⊙ d_i) computed directly", { skip: noModels }, async () => {
  const { dir, runs, run } = await trainRun(AIDREAMS, "lm");
  const out = path.join(dir, "pages");
  const r = await cli(["features", "lm", "--runs-dir", runs, "--out", out, "--top", "5"]);
  assert.equal(r.code, 0, r.err);
  const doc = readDoc(out);
  assert.equal(doc.data.kind, "language_model");
  const { config, F, N, H, D, p } = bruteForce(run);
  const lm = loadLlama(model("aidreams260K.bin"));
  const tok = new Tokenizer(model("aidreams260K.tok512.bin"), lm.config.vocab);
  const seqs = createSource(config, native).evalSequences!(100)!;
  const P = 40, L = P - 1; // BOS skipped
  assert.equal(N, 16 * L);
  const W = p.get("W_dec"), V = lm.config.vocab;
  for (const page of doc.latents) {
    // W_U (g ⊙ d_i), one token at a time, in float64
    const logit = Array.from({ length: V }, (_, v) => {
      let s = 0;
      for (let d = 0; d < D; d++) s += lm.classifier[v * D + d] * lm.rmsFinal[d] * W[page.id * D + d];
      return s;
    });
    const byValue = Array.from({ length: V }, (_, v) => v).sort((a, b) => logit[b] - logit[a] || a - b);
    assert.deepEqual(page.logits!.promoted.map((t) => t.token), byValue.slice(0, 10));
    assert.deepEqual(page.logits!.suppressed.map((t) => t.token), byValue.slice(-10).reverse());
    for (const t of [...page.logits!.promoted, ...page.logits!.suppressed]) assert.ok(Math.abs(t.value - logit[t.token]) < 1e-9 * Math.max(1, Math.abs(logit[t.token])));
    assert.equal(page.logits!.promoted[0].text, tok.piece(byValue[0], -1).toString("utf8"));
    // each context: the sequence's tokens around the example, shaded by this latent's activations
    for (const x of [...page.top, ...page.quantiles.flatMap((q) => q.examples)]) {
      const c = x.context!;
      assert.equal(c.sequence, Math.floor(x.row / L));
      assert.equal(c.position, 1 + (x.row % L));
      const from = c.position - c.target;
      assert.equal(from, Math.max(0, c.position - 16));
      assert.equal(c.tokens.length, Math.min(P - 1, c.position + 4) - from + 1);
      c.tokens.forEach((t, k) => {
        const pos = from + k;
        assert.equal(t, seqs.ids[c.sequence * P + pos]);
        if (pos === 0) assert.equal(c.acts[k], null, "BOS is not an evaluated position");
        else assert.equal(c.acts[k], F[(c.sequence * L + pos - 1) * H + page.id]);
      });
      assert.equal(c.acts[c.target], x.activation);
      assert.equal(c.text!.length, c.tokens.length);
    }
  }
  // the terminal view marks the active token of the top example
  const top = doc.latents[0];
  const t = await cli(["features", "lm", "--runs-dir", runs, "--latent", String(top.id)]);
  assert.equal(t.code, 0, t.err);
  const c = top.top[0].context!;
  assert.ok(t.out.includes(`⟦${c.text![c.target].replace(/\n/g, "↵")}⟧`), t.out);
  assert.match(t.out, /promotes: /);

  // the model and tokenizer the run needs: gone, they are usage errors that say which flag fixes it
  const cfgFile = path.join(run, "config.yaml"), cfg = fs.readFileSync(cfgFile, "utf8");
  fs.writeFileSync(cfgFile, cfg.replace(model("aidreams260K.tok512.bin"), path.join(dir, "moved.tok.bin")));
  let bad = await cli(["features", "lm", "--runs-dir", runs, "--out", out]);
  assert.equal(bad.code, 2, bad.err);
  assert.match(bad.err, /the run's data\.model\.tokenizer: cannot read tokenizer .*moved\.tok\.bin: ENOENT/);
  assert.match(bad.err, /hint: pass --tokenizer FILE/);
  const ok = await cli(["features", "lm", "--runs-dir", runs, "--out", out, "--latents", "1", "--tokenizer", model("aidreams260K.tok512.bin")]);
  assert.equal(ok.code, 0, ok.err);
  bad = await cli(["features", "lm", "--runs-dir", runs, "--out", out, "--tokenizer", model("aidreams260K.bin")]);
  assert.equal(bad.code, 2, bad.err);
  assert.match(bad.err, /--tokenizer: .*aidreams260K\.bin/);
  fs.writeFileSync(cfgFile, cfg.replace(model("aidreams260K.bin"), path.join(dir, "moved.bin")));
  bad = await cli(["features", "lm", "--runs-dir", runs, "--out", out]);
  assert.equal(bad.code, 2, bad.err);
  assert.match(bad.err, /config\.yaml:\d+:\d+: data\.model\.checkpoint: cannot read model checkpoint .*moved\.bin: ENOENT/);
  assert.match(bad.err, /hint: pass --model CKPT/);
  const moved = await cli(["features", "lm", "--runs-dir", runs, "--out", out, "--latents", "1", "--model", model("aidreams260K.bin")]);
  assert.equal(moved.code, 0, moved.err);
  let max1 = 0;
  for (let n = 0; n < N; n++) max1 = Math.max(max1, F[n * H + 1]);
  assert.equal(readDoc(out).latents[0].top[0].activation, max1, "harvested from --model: the same activations");
  fs.writeFileSync(cfgFile, cfg);
});
