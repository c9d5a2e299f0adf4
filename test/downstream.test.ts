// The downstream loss under its three conventions (docs/downstream.md): each against a direct loop
// written from the doc's table, `saelens` against SAELens's own formula on sequences with BOS, EOS
// and <unk> in the middle, `sae eval --convention`, `sae runs --wide`, and the SAELens export's
// statement of what training and evaluation did. The models are found through SAE_SHARED_MODELS
// (.ci/run sets it); without it these tests are skipped with the reason, except under CI.
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { cli, tmpDir } from "./helpers.ts";
import { loadLlama, LlamaBatch, type LlamaModel } from "../src/lm/llama.ts";
import { selectEngine } from "../src/engine/index.ts";
import { downstreamEval, downstreamEvals, DOWNSTREAM_CONVENTIONS, type Convention, type DownstreamResult } from "../src/eval/downstream.ts";
import { configFromObject } from "../src/config/load.ts";
import { createModel } from "../src/sae/index.ts";
import { ParamSet } from "../src/sae/params.ts";
import { harvestGroup } from "../src/lm/harvest.ts";
import { writeNpy } from "../src/io/npy.ts";
import { fmtNum } from "../src/cli/common.ts";

const MODELS = process.env.SAE_SHARED_MODELS;
if (!MODELS && process.env.CI) throw new Error("SAE_SHARED_MODELS must point at ../shared/models under CI");
const skip = MODELS ? false : "SAE_SHARED_MODELS is not set (the folder with aidreams260K.bin)";
const model = (name: string) => path.join(MODELS ?? "", name);
const native = selectEngine().engine;
const UNK = 0, BOS = 1, EOS = 2;

function logSoftmax(logits: Float64Array, row: number, V: number): Float64Array {
  const x = logits.subarray(row * V, (row + 1) * V);
  const max = Math.max(...x);
  let sum = 0;
  for (const v of x) sum += Math.exp(v - max);
  return Float64Array.from(x, (v) => v - max - Math.log(sum));
}

/** A standard SAE whose reconstruction is x̂ = 0.7·x + b (f = ReLU([x; −x]), decoder ±0.7, b_dec = b). */
function affineSae(D: number) {
  const { config } = configFromObject({ data: { d_in: D }, sae: { variant: "standard", flavour: "april", d_sae: 2 * D, apply_b_dec_to_input: false } });
  const sae = createModel(config);
  const p = new ParamSet(sae.specs);
  const We = p.get("W_enc"), Wd = p.get("W_dec"), b = p.get("b_dec");
  for (let d = 0; d < D; d++) {
    We[d * D + d] = 1; We[(D + d) * D + d] = -1;
    Wd[d * D + d] = 0.7; Wd[(D + d) * D + d] = -0.7;
    b[d] = 0.05 * ((d % 3) - 1);
  }
  return { sae, params: p, recon: (x: number, d: number) => 0.7 * x + b[d] };
}

/**
 * The convention's rules, written from docs/downstream.md's table, applied one sequence at a time:
 * which positions take x̂, which the ablation, which are scored. Returns the sums and counts.
 */
function directLoop(lm: LlamaModel, layer: number, ids: Int32Array, count: number, P: number, skipN: number, conv: Convention, recon: (x: number, d: number) => number) {
  const D = lm.config.dim, V = lm.config.vocab;
  const special = conv === "saelens" ? [UNK, BOS, EOS] : conv === "saebench" ? [BOS, EOS] : [];
  const plain = (t: number) => !special.includes(t);
  const splice = (p: number, t: number) => (conv === "sae" ? p >= skipN : conv === "saelens" ? plain(t) : true);
  const ablate = (p: number) => (conv === "sae" ? p >= skipN : true);
  const ceAt = (p: number, t: number) => p <= P - 2 && (conv === "sae" ? p >= skipN : plain(t));
  const klAt = (p: number, t: number) => (conv === "sae" ? p >= skipN && p <= P - 2 : plain(t));
  const pass = (s: number, fn: ((a: Float32Array, p: number) => void) | null) => {
    const out: Float64Array[] = [];
    const b = new LlamaBatch(lm, native, 1, P, fn ? [{ layer, site: "resid_pre", fn, writes: true }] : []);
    for (let p = 0; p < P; p++) out.push(logSoftmax(b.step(Int32Array.of(ids[s * P + p]), p), 0, V));
    return out;
  };
  // the mean ablation's vector: the clean activation averaged over the CE-scored positions
  const mean = new Float64Array(D);
  let nMean = 0;
  for (let s = 0; s < count; s++) {
    const b = new LlamaBatch(lm, native, 1, P, [{ layer, site: "resid_pre", fn: (a, p) => {
      if (!ceAt(p, ids[s * P + p])) return;
      for (let d = 0; d < D; d++) mean[d] += a[d];
      nMean++;
    } }]);
    for (let p = 0; p < P; p++) b.step(Int32Array.of(ids[s * P + p]), p);
  }
  for (let d = 0; d < D; d++) mean[d] /= nMean;
  const sums = { ce: { clean: 0, sae: 0, zero: 0, mean: 0 }, kl: { sae: 0, zero: 0, mean: 0 } };
  let nCe = 0, nKl = 0;
  for (let s = 0; s < count; s++) {
    const tok = (p: number) => ids[s * P + p];
    const clean = pass(s, null);
    const patched = {
      sae: pass(s, (a, p) => { if (splice(p, tok(p))) for (let d = 0; d < D; d++) a[d] = recon(a[d], d); }),
      zero: pass(s, (a, p) => { if (ablate(p)) a.fill(0); }),
      mean: pass(s, (a, p) => { if (ablate(p)) a.set(mean); }),
    };
    for (let p = 0; p < P; p++) {
      if (ceAt(p, tok(p))) {
        nCe++;
        sums.ce.clean -= clean[p][tok(p + 1)];
        for (const k of ["sae", "zero", "mean"] as const) sums.ce[k] -= patched[k][p][tok(p + 1)];
      }
      if (klAt(p, tok(p))) {
        nKl++;
        for (const k of ["sae", "zero", "mean"] as const) for (let v = 0; v < V; v++) sums.kl[k] += Math.exp(clean[p][v]) * (clean[p][v] - patched[k][p][v]);
      }
    }
  }
  return {
    tokens: nCe, kl_tokens: nKl,
    ce_clean: sums.ce.clean / nCe, ce_sae: sums.ce.sae / nCe, ce_zero_ablation: sums.ce.zero / nCe, ce_mean_ablation: sums.ce.mean / nCe,
    kl_sae: sums.kl.sae / nKl, kl_zero_ablation: sums.kl.zero / nKl, kl_mean_ablation: sums.kl.mean / nKl,
  };
}

function close(a: number, b: number, what: string, tol = 1e-9): void {
  assert.ok(Math.abs(a - b) <= tol * Math.max(1, Math.abs(b)), `${what}: ${a} vs ${b}`);
}

test("each convention equals a direct loop over its rules on a small fixed case; the counts are the hand-counted ones", { skip }, () => {
  const lm = loadLlama(model("aidreams260K.bin"));
  const { sae, params, recon } = affineSae(lm.config.dim);
  // three sequences of 10: BOS first; EOS and BOS in the middle; <unk> at 3 of the last
  const P = 10, count = 3;
  const rows = [
    [BOS, 80, 91, 102, 113, EOS, 124, 135, 146, 157],
    [BOS, 300, 301, 302, 303, 304, 305, BOS, 306, 307],
    [BOS, 200, 210, UNK, 220, 230, 240, 250, EOS, 260],
  ];
  const ids = Int32Array.from(rows.flat());
  const input = { e: native, lm, layer: 2, site: "resid_pre" as const, skip: 1, seqs: { ids, count, P }, sae, params };
  // CE: sae scores positions 1..8 of each (3·8); saelens positions 0..8 (27) but the predictions
  // made at its 7 special tokens (BOS at 0 three times, EOS at 5, BOS at 7, <unk> at 3, EOS at 8),
  // saebench the same but for <unk>; KL: sae as its CE, the others add position 9 (none special)
  const hand: Record<Convention, [number, number]> = { sae: [24, 24], saelens: [27 - 7, 30 - 7], saebench: [27 - 6, 30 - 6] };
  const all = downstreamEvals(input, DOWNSTREAM_CONVENTIONS);
  for (const conv of DOWNSTREAM_CONVENTIONS) {
    const r = downstreamEval({ ...input, convention: conv });
    assert.equal(r.convention, conv);
    assert.deepEqual([r.tokens, r.kl_tokens], hand[conv], conv);
    assert.deepEqual(r.special_token_ids, { sae: [], saelens: [0, 1, 2], saebench: [1, 2] }[conv]);
    assert.equal(r.skip_positions, conv === "sae" ? 1 : 0);
    const ref = directLoop(lm, 2, ids, count, P, 1, conv, recon);
    // the SAE computes x̂ in float32, the loop in float64: 1e-6 for what depends on x̂ (a position
    // spliced wrongly moves these by 1e-4 or more)
    for (const [k, v] of Object.entries(ref)) close(r[k as keyof DownstreamResult] as number, v, `${conv} ${k}`, k.endsWith("_sae") ? 1e-6 : 1e-9);
    close(r.ce_loss_recovered, (ref.ce_zero_ablation - ref.ce_sae) / (ref.ce_zero_ablation - ref.ce_clean), `${conv} ce_loss_recovered`, 1e-6);
    close(r.kl_score, (ref.kl_zero_ablation - ref.kl_sae) / ref.kl_zero_ablation, `${conv} kl_score`, 1e-6);
    // several conventions at once share the clean passes and give the same numbers
    assert.deepEqual(all.find((a) => a.convention === conv), r);
  }
  // zeroing resid_pre everywhere leaves a bias-free Llama with zero logits: a uniform prediction
  for (const conv of ["saelens", "saebench"] as const) close(all.find((a) => a.convention === conv)!.ce_zero_ablation, Math.log(512), `${conv} ce_zero = ln V`, 1e-12);
  assert.ok(all[0].ce_zero_ablation > Math.log(512) + 0.1, `sae keeps BOS clean, so its zero ablation is not uniform: ${all[0].ce_zero_ablation}`);
});

/**
 * SAELens's get_recons_loss and get_downstream_reconstruction_metrics, transcribed: the batch's
 * logits for the clean, reconstructed and zero-ablated passes, mask = no ignored token at the
 * position, the per-token loss [B, P−1] kept where mask[:, :-1], the KL [B, P] where mask, means
 * over everything kept, and the two scores.
 */
function saeLensRecons(lm: LlamaModel, layer: number, tokens: Int32Array, B: number, P: number, saeFn: (act: Float32Array, rows: number) => Float32Array, ignore: number[]) {
  const V = lm.config.vocab, D = lm.config.dim;
  const mask = Array.from(tokens, (t) => !ignore.includes(t));
  const logitsOf = (hook: ((a: Float32Array, p: number) => void) | null) => {
    const b = new LlamaBatch(lm, native, B, P, hook ? [{ layer, site: "resid_pre", fn: hook, writes: true }] : []);
    const out: Float64Array[][] = Array.from({ length: B }, () => []);
    for (let p = 0; p < P; p++) {
      const logits = b.step(Int32Array.from({ length: B }, (_, s) => tokens[s * P + p]), p);
      for (let s = 0; s < B; s++) out[s].push(logSoftmax(logits, s, V));
    }
    return out;
  };
  const original = logitsOf(null);
  // standard_replacement_hook: torch.where(mask[..., None], sae(acts), acts)
  const recons = logitsOf((a, p) => {
    const xhat = saeFn(a, B);
    for (let s = 0; s < B; s++) if (mask[s * P + p]) a.set(xhat.subarray(s * D, (s + 1) * D), s * D);
  });
  const zero = logitsOf((a) => a.fill(0)); // standard_zero_ablate_hook: zeros_like
  const lossPerToken = (lp: Float64Array[][]) => lp.map((rows, s) => rows.slice(0, P - 1).map((r, p) => -r[tokens[s * P + p + 1]]));
  const kl = (lp: Float64Array[][]) => lp.map((rows, s) => rows.map((r, p) => original[s][p].reduce((acc, lo, v) => acc + Math.exp(lo) * (lo - r[v]), 0)));
  const meanMasked = (m: number[][], cut: boolean) => {
    let sum = 0, n = 0;
    m.forEach((row, s) => row.forEach((v, p) => { if (mask[s * P + p] && (!cut || p < P - 1)) { sum += v; n++; } }));
    return { mean: sum / n, n };
  };
  const ce = { without: meanMasked(lossPerToken(original), true), with: meanMasked(lossPerToken(recons), true), abl: meanMasked(lossPerToken(zero), true) };
  const k = { with: meanMasked(kl(recons), false), abl: meanMasked(kl(zero), false) };
  return {
    ce_loss_without_sae: ce.without.mean, ce_loss_with_sae: ce.with.mean, ce_loss_with_ablation: ce.abl.mean, n_ce: ce.with.n,
    kl_div_with_sae: k.with.mean, kl_div_with_ablation: k.abl.mean, n_kl: k.with.n,
    ce_loss_score: (ce.abl.mean - ce.with.mean) / (ce.abl.mean - ce.without.mean),
    kl_div_score: (k.abl.mean - k.with.mean) / k.abl.mean,
  };
}

test("saelens reproduces SAELens's formula on sampled sequences with BOS, EOS and <unk> in the middle (a TopK SAE)", { skip }, () => {
  const lm = loadLlama(model("aidreams260K.bin"));
  const D = lm.config.dim, P = 24, B = 12;
  const { config } = configFromObject({ data: { d_in: D }, sae: { variant: "topk", d_sae: 128, k: 6 } });
  const sae = createModel(config);
  const params = new ParamSet(sae.specs);
  let seed = 7;
  const rand = () => ((seed = (seed * 16807) % 2147483647) / 2147483647 - 0.5) * 0.5;
  for (const n of ["W_enc", "W_dec", "b_dec"]) params.get(n).forEach((_, i, a) => (a[i] = rand()));
  const tokens = harvestGroup({ model: lm, engine: native, layer: 2, site: "resid_pre", P, seed: 11, temperature: 1, tokens: null }, 0).tokens.slice(0, B * P);
  // the model's own rare special tokens out of the way, then documents joined inside a context:
  // EOS then BOS mid-sequence, and one <unk>
  for (let i = 0; i < tokens.length; i++) if (i % P !== 0 && tokens[i] <= EOS) tokens[i] = 100;
  for (let s = 0; s < B; s += 2) { tokens[s * P + 9 + (s % 5)] = EOS; tokens[s * P + 10 + (s % 5)] = BOS; }
  tokens[3 * P + 4] = UNK;
  tokens[5 * P + P - 2] = EOS; // a special token whose target is the last one
  const r = downstreamEval({ e: native, lm, layer: 2, site: "resid_pre", skip: 1, seqs: { ids: tokens, count: B, P }, sae, params, convention: "saelens" });
  const ref = saeLensRecons(lm, 2, tokens, B, P, (a, rows) => sae.forward({ e: native, p: params, X: a, B: rows, coeff: 0, dead: null }).Xhat as Float32Array, [UNK, BOS, EOS]);
  assert.equal(r.tokens, ref.n_ce);
  assert.equal(r.kl_tokens, ref.n_kl);
  assert.equal(ref.n_ce, B * (P - 1) - B - 2 * (B / 2) - 2, "every prediction but those made at BOS (position 0), at the inserted EOS and BOS, at <unk> and at the late EOS");
  close(r.ce_clean, ref.ce_loss_without_sae, "ce_loss_without_sae");
  close(r.ce_sae, ref.ce_loss_with_sae, "ce_loss_with_sae");
  close(r.ce_zero_ablation, ref.ce_loss_with_ablation, "ce_loss_with_ablation");
  close(r.kl_sae, ref.kl_div_with_sae, "kl_div_with_sae");
  close(r.kl_zero_ablation, ref.kl_div_with_ablation, "kl_div_with_ablation");
  close(r.ce_loss_recovered, ref.ce_loss_score, "ce_loss_score");
  close(r.kl_score, ref.kl_div_score, "kl_div_score");
  // the same SAE scored by the sae convention is a different number: the conventions are not interchangeable
  const own = downstreamEval({ e: native, lm, layer: 2, site: "resid_pre", skip: 1, seqs: { ids: tokens, count: B, P }, sae, params });
  assert.ok(Math.abs(own.ce_loss_recovered - r.ce_loss_recovered) > 1e-3, `${own.ce_loss_recovered} vs ${r.ce_loss_recovered}`);
});

const RUN = (extra: string, model: string) => `name: conv
seed: 3
data:
  source: model
  model:
    checkpoint: ${model}
    layer: 2
    sequences: 48
    context_size: 16
  eval_tokens: 150
  norm_estimate_tokens: 256
${extra}
sae: { variant: topk, d_sae: 128, k: 4 }
train: { steps: 4, batch_size: 64, warmup_steps: 1, log_every: 2 }
`;

test("sae eval --convention, sae runs --wide and the SAELens export say what was done", { skip }, async () => {
  const dir = tmpDir();
  const runs = path.join(dir, "runs");
  const train = async (id: string, yaml: string) => {
    fs.writeFileSync(path.join(dir, `${id}.yaml`), yaml);
    const r = await cli(["train", path.join(dir, `${id}.yaml`), "--runs-dir", runs, "--run-id", id]);
    assert.equal(r.code, 0, r.err);
    return JSON.parse(fs.readFileSync(path.join(runs, id, "eval.json"), "utf8"));
  };
  const exported = async (id: string, tag = "") => {
    const out = path.join(dir, `exp-${id}${tag}`);
    const r = await cli(["export", id, "--runs-dir", runs, "--out", out]);
    assert.equal(r.code, 0, r.err);
    return JSON.parse(fs.readFileSync(path.join(out, "cfg.json"), "utf8")).metadata;
  };

  // sampled from BOS, the default convention: training dropped position 0, nothing by id
  const a = await train("a", RUN("", model("aidreams260K.bin")));
  assert.equal(a.downstream.convention, "sae");
  let meta = await exported("a");
  assert.deepEqual([meta.prepend_bos, meta.seqpos_slice, meta.exclude_special_tokens, meta.downstream_convention, meta.downstream_ignore_tokens], [true, [1, null], false, "sae", []]);

  // a token file whose rows do not start with BOS, evaluated the SAELens way
  const ids = new Int32Array(48 * 16);
  for (let i = 0; i < ids.length; i++) ids[i] = 3 + ((i * 37) % 500);
  for (let s = 0; s < 48; s++) ids[s * 16 + 7] = EOS;
  writeNpy(path.join(dir, "ids.npy"), ids, [48, 16]);
  const b = await train("b", RUN("eval: { downstream_convention: saelens }", model("aidreams260K.bin")).replace("    context_size: 16", `    tokens: ${path.join(dir, "ids.npy")}`));
  assert.equal(b.downstream.convention, "saelens");
  assert.deepEqual(b.downstream.special_token_ids, [0, 1, 2]);
  assert.equal(b.downstream.tokens, b.downstream.sequences * 14, "15 predictions per sequence, less the one made at the EOS");
  meta = await exported("b");
  assert.deepEqual([meta.prepend_bos, meta.seqpos_slice, meta.exclude_special_tokens, meta.downstream_convention, meta.downstream_ignore_tokens], [false, [null], false, "saelens", [0, 1, 2]]);

  // BOS first but two positions dropped
  await train("c", RUN("  skip_positions: 2", model("aidreams260K.bin")));
  meta = await exported("c");
  assert.deepEqual([meta.prepend_bos, meta.seqpos_slice], [true, [2, null]]);

  const wide = await cli(["runs", "--runs-dir", runs, "--wide"]);
  assert.match(wide.out, /\bce_conv\s+ce_rec$/m);
  assert.match(wide.out, new RegExp(`^a .* sae\\s+${a.downstream.ce_loss_recovered.toFixed(4)}$`, "m"));
  assert.match(wide.out, new RegExp(`^b .* saelens\\s+${b.downstream.ce_loss_recovered.toFixed(4)}$`, "m"));

  // all three side by side; the run's own convention stays in `downstream`
  const all = await cli(["eval", "a", "--runs-dir", runs, "--convention", "all"]);
  assert.equal(all.code, 0, all.err);
  assert.match(all.out, /^\s+sae\s+saelens\s+saebench$/m);
  const row = all.out.split("\n").find((l) => l.trim().startsWith("ce_loss_recovered "))!;
  const ev = JSON.parse(fs.readFileSync(path.join(runs, "a", "eval.json"), "utf8"));
  assert.deepEqual(Object.keys(ev.downstream_by_convention), ["sae", "saelens", "saebench"]);
  assert.deepEqual(ev.downstream, ev.downstream_by_convention.sae);
  assert.equal(ev.downstream.ce_sae, a.downstream.ce_sae);
  const cols = row.trim().split(/\s+/).slice(1, 4).map(Number);
  assert.deepEqual(cols, DOWNSTREAM_CONVENTIONS.map((c) => Number(fmtNum(ev.downstream_by_convention[c].ce_loss_recovered))));
  const one = await cli(["eval", "a", "--runs-dir", runs, "--convention", "saebench", "--json"]);
  assert.equal(one.code, 0, one.err);
  assert.deepEqual(JSON.parse(one.out).downstream, ev.downstream_by_convention.saebench);
  meta = await exported("a", "-again"); // eval.json now holds saebench
  assert.equal(meta.downstream_convention, "saebench");

  // bad input
  const bogus = await cli(["eval", "a", "--runs-dir", runs, "--convention", "tl"]);
  assert.equal(bogus.code, 2);
  assert.match(bogus.err, /--convention.*'tl' is invalid.*sae, saelens, saebench, all/);
  fs.writeFileSync(path.join(dir, "bad.yaml"), RUN("eval:\n  downstream_convention: sealens", model("aidreams260K.bin")));
  const bad = await cli(["train", path.join(dir, "bad.yaml"), "--runs-dir", runs]);
  assert.equal(bad.code, 2);
  assert.match(bad.err, /bad\.yaml:13:\d+: eval\.downstream_convention: .*sae.*saelens.*saebench/);
});

test("--convention on a run without a language model is refused with the reason", async () => {
  const dir = tmpDir();
  fs.writeFileSync(path.join(dir, "s.yaml"), "data: { d_in: 8, eval_tokens: 64, norm_estimate_tokens: 128 }\nsae: { variant: topk, d_sae: 16, k: 2 }\ntrain: { steps: 2, batch_size: 32, warmup_steps: 1 }\n");
  const t = await cli(["train", path.join(dir, "s.yaml"), "--runs-dir", path.join(dir, "runs"), "--run-id", "s"]);
  assert.equal(t.code, 0, t.err);
  const r = await cli(["eval", "s", "--runs-dir", path.join(dir, "runs"), "--convention", "saelens"]);
  assert.equal(r.code, 2);
  assert.match(r.err, /--convention saelens: the run's data names no language model.*\n.*--model/);
});
