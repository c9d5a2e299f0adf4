// The language model against llama2.c's own forward pass (the *.reference.json files beside the checkpoints in $SAE_SHARED_MODELS),
// harvesting (on the fly ≡ sae harvest + file), and the downstream loss with an exact SAE.
// The models are found through SAE_SHARED_MODELS (.ci/run sets it); without it these tests are
// skipped with the reason, except under CI, where a missing folder is a failure.
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { cli, tmpDir } from "./helpers.ts";
import { loadLlama, LlamaBatch } from "../src/lm/llama.ts";
import { Tokenizer } from "../src/lm/tokenizer.ts";
import { jsEngine } from "../src/engine/js.ts";
import { selectEngine } from "../src/engine/index.ts";
import { downstreamEval } from "../src/eval/downstream.ts";
import { configFromObject } from "../src/config/load.ts";
import { createModel } from "../src/sae/index.ts";
import { ParamSet } from "../src/sae/params.ts";
import { harvestGroup, HarvestStore, SEQ_GROUP } from "../src/lm/harvest.ts";
import { writeNpy } from "../src/io/npy.ts";

const MODELS = process.env.SAE_SHARED_MODELS;
if (!MODELS && process.env.CI) throw new Error("SAE_SHARED_MODELS must point at ../shared/models under CI");
const skip = MODELS ? false : "SAE_SHARED_MODELS is not set (the folder with aidreams260K.bin and stories260K.bin)";
const model = (name: string) => path.join(MODELS ?? "", name);
const native = selectEngine().engine;

/** log-softmax of one row of logits at index t, written independently of src/eval/downstream.ts */
function logProb(logits: Float64Array, row: number, V: number, t: number): number {
  const o = row * V;
  let max = -Infinity;
  for (let i = 0; i < V; i++) if (logits[o + i] > max) max = logits[o + i];
  let sum = 0;
  for (let i = 0; i < V; i++) sum += Math.exp(logits[o + i] - max);
  return logits[o + t] - max - Math.log(sum);
}

for (const name of ["aidreams260K", "stories260K"]) {
  for (const engine of [native, jsEngine]) {
    test(`${name}: greedy ids exact and every log-probability within 1e-4 of llama2.c (${engine.name} engine)`, { skip }, () => {
      const m = loadLlama(model(`${name}.bin`));
      const ref = JSON.parse(fs.readFileSync(model(`${name}.reference.json`), "utf8"));
      assert.deepEqual(m.config, { dim: ref.config.dim, hidden: ref.config.hidden_dim, layers: ref.config.n_layers, heads: ref.config.n_heads, kvHeads: ref.config.n_kv_heads, vocab: ref.config.vocab_size, seqLen: ref.config.seq_len });
      const P = ref.greedy_ids.length, V = m.config.vocab;
      // row 0 continues greedily, row 1 is teacher-forced on the reference's pseudo-random ids
      const lm = new LlamaBatch(m, engine, 2, P);
      const greedy = [ref.greedy_ids[0]];
      let worst = 0, ce = 0;
      for (let pos = 0; pos < P - 1; pos++) {
        const logits = lm.step(Int32Array.of(greedy[pos], ref.lcg_ids[pos]), pos);
        if (pos === 0) for (let i = 0; i < 8; i++) assert.ok(Math.abs(logits[i] - ref.greedy_logits_pos0_first8[i]) < 1e-4, `logit ${i}`);
        let best = 0;
        for (let i = 1; i < V; i++) if (logits[i] > logits[best]) best = i;
        greedy.push(best);
        const lp = logProb(logits, 1, V, ref.lcg_ids[pos + 1]);
        worst = Math.max(worst, Math.abs(lp - ref.lcg_logprob_next[pos]));
        ce -= lp;
      }
      assert.deepEqual(greedy, ref.greedy_ids);
      assert.ok(worst < 1e-4, `worst log-probability difference ${worst}`);
      assert.ok(Math.abs(ce / (P - 1) - ref.lcg_mean_ce) < 1e-5);
    });
  }
}

test("tokenizer: the greedy continuation of aidreams260K reads as text", { skip }, () => {
  const ref = JSON.parse(fs.readFileSync(model("aidreams260K.reference.json"), "utf8"));
  const text = new Tokenizer(model("aidreams260K.tok512.bin"), 512).decode(ref.greedy_ids);
  assert.ok(text.startsWith('"Echoes of vectors unfold, a gentle hum of precision'), text);
  assert.throws(() => new Tokenizer(model("aidreams260K.tok512.bin"), 1000), /has 512 tokens, the model's vocabulary has 1000/);
});

test("a truncated or foreign checkpoint is refused with the reason", { skip }, () => {
  const dir = tmpDir();
  const cut = path.join(dir, "cut.bin");
  fs.writeFileSync(cut, fs.readFileSync(model("aidreams260K.bin")).subarray(0, 500_000));
  assert.throws(() => loadLlama(cut), /cut\.bin is not a llama2\.c checkpoint: the header promises 932124 bytes, the file has 500000/);
  const junk = path.join(dir, "junk.bin");
  fs.writeFileSync(junk, Buffer.alloc(64, 0xff));
  assert.throws(() => loadLlama(junk), /implausible header/);
});

test("harvesting: batched sequences are independent of their neighbours' count, and sites differ as they should", { skip }, () => {
  const m = loadLlama(model("aidreams260K.bin"));
  const spec = { model: m, engine: native, layer: 1, site: "resid_post" as const, P: 16, seed: 5, temperature: 1, tokens: null };
  const a = harvestGroup(spec, 0);
  assert.ok(a.tokens.every((t, i) => (i % 16 === 0 ? t === 1 : t >= 0 && t < 512)));
  // resid_post of layer 1 is resid_pre of layer 2
  const b = harvestGroup({ ...spec, layer: 2, site: "resid_pre" }, 0);
  assert.deepEqual(b.tokens, a.tokens);
  assert.deepEqual(b.acts, a.acts);
  const c = harvestGroup({ ...spec, site: "mlp_out" }, 0);
  assert.notDeepEqual(c.acts, a.acts);
});

test("a harvest store runs each group through the model once: rows first, then their token ids, as sae eval and sae features read them", { skip }, () => {
  const m = loadLlama(model("aidreams260K.bin"));
  const P = 8, spec = { model: m, engine: native, layer: 1, site: "resid_post" as const, P, seed: 5, temperature: 1, tokens: null };
  const store = new HarvestStore(spec, 3 * SEQ_GROUP);
  const out = new Float32Array(store.rows * store.D);
  for (let r = 0; r < store.rows; r += 100) store.read(r, Math.min(100, store.rows - r), out.subarray(r * store.D));
  assert.equal(store.harvests, 3);
  const seqs = store.sequenceTokens(0, 3 * SEQ_GROUP);
  assert.equal(store.harvests, 3, "the token ids come from the groups already harvested");
  for (let g = 0; g < 3; g++) {
    const h = harvestGroup(spec, g);
    assert.deepEqual(seqs.ids.subarray(g * SEQ_GROUP * P, (g + 1) * SEQ_GROUP * P), h.tokens);
    assert.deepEqual(out.subarray(g * SEQ_GROUP * P * store.D, (g + 1) * SEQ_GROUP * P * store.D), h.acts);
  }
});

test("downstream loss: an exact SAE recovers all of the loss; zero ablation hurts", { skip }, () => {
  const lm = loadLlama(model("aidreams260K.bin"));
  const D = lm.config.dim;
  // A standard SAE that is exactly the identity: f = ReLU([x; −x]), x̂ = f[:D] − f[D:]
  const { config } = configFromObject({ data: { d_in: D }, sae: { variant: "standard", d_sae: 2 * D, apply_b_dec_to_input: false } });
  const sae = createModel(config);
  const p = new ParamSet(sae.specs);
  const We = p.get("W_enc"), Wd = p.get("W_dec");
  for (let d = 0; d < D; d++) {
    We[d * D + d] = 1; We[(D + d) * D + d] = -1;
    Wd[d * D + d] = 1; Wd[(D + d) * D + d] = -1;
  }
  const spec = { model: lm, engine: native, layer: 2, site: "resid_pre" as const, P: 24, seed: 1, temperature: 1, tokens: null };
  const ids = harvestGroup(spec, 0).tokens.subarray(0, 8 * 24);
  const r = downstreamEval({ e: native, lm, layer: 2, site: "resid_pre", skip: 1, seqs: { ids, count: 8, P: 24 }, sae, params: p });
  assert.equal(r.tokens, 8 * 22);
  assert.ok(Math.abs(r.ce_sae - r.ce_clean) < 1e-5, `ce_sae ${r.ce_sae} vs clean ${r.ce_clean}`);
  assert.ok(r.kl_sae < 1e-8, `kl ${r.kl_sae}`);
  assert.ok(r.ce_zero_ablation > r.ce_clean + 1 && r.kl_zero_ablation > 1);
  assert.ok(Math.abs(r.ce_loss_recovered - 1) < 1e-5 && Math.abs(r.kl_score - 1) < 1e-8);
  // clean CE equals the model's own loss on those tokens, computed without hooks
  const plain = new LlamaBatch(lm, native, 8, 24);
  let ce = 0;
  for (let pos = 0; pos < 23; pos++) {
    const logits = plain.step(Int32Array.from({ length: 8 }, (_, s) => ids[s * 24 + pos]), pos);
    if (pos >= 1) for (let s = 0; s < 8; s++) ce -= logProb(logits, s, 512, ids[s * 24 + pos + 1]);
  }
  assert.ok(Math.abs(ce / (8 * 22) - r.ce_clean) < 1e-9);
});

const AIDREAMS = (extra: string) => `name: lm
seed: 2
data:
  source: model
  model:
    checkpoint: ${model("aidreams260K.bin")}
    layer: 2
    site: resid_pre
    sequences: 160
    context_size: 64
  eval_tokens: 1260
${extra}
sae: { variant: topk, d_sae: 256, k: 8 }
train: { steps: 60, batch_size: 256, warmup_steps: 10, log_every: 20 }
`;

test("sae harvest + a file config trains exactly the run that harvesting on the fly trains, downstream metrics included", { skip }, async () => {
  const dir = tmpDir();
  fs.writeFileSync(path.join(dir, "fly.yaml"), AIDREAMS(""));
  const runs = path.join(dir, "runs");
  const fly = await cli(["train", path.join(dir, "fly.yaml"), "--runs-dir", runs, "--run-id", "fly"]);
  assert.equal(fly.code, 0, fly.err);
  const h = await cli(["harvest", path.join(dir, "fly.yaml"), "--out", path.join(dir, "acts")]);
  assert.equal(h.code, 0, h.err);
  const manifest = JSON.parse(fs.readFileSync(path.join(dir, "acts", "manifest.json"), "utf8"));
  assert.equal(manifest.seq_len, 64);
  assert.equal(manifest.shards[0].rows, 160 * 64);
  const again = await cli(["harvest", path.join(dir, "fly.yaml"), "--out", path.join(dir, "acts")]);
  assert.equal(again.code, 2);
  assert.match(again.err, /already exists and is not empty/);

  fs.writeFileSync(path.join(dir, "disk.yaml"), AIDREAMS("  file: { path: acts }").replace("source: model", "source: file"));
  const disk = await cli(["train", path.join(dir, "disk.yaml"), "--runs-dir", runs, "--run-id", "disk"]);
  assert.equal(disk.code, 0, disk.err);
  const read = (id: string, f: string) => fs.readFileSync(path.join(runs, id, f));
  const metrics = (id: string) => read(id, "metrics.csv").toString().split("\n").map((l) => l.split(",").slice(0, -1).join(",")); // minus tokens_per_s
  assert.deepEqual(metrics("disk"), metrics("fly"));
  assert.deepEqual(read("disk", "final/sae_weights.safetensors"), read("fly", "final/sae_weights.safetensors"));
  const ev = (id: string) => JSON.parse(read(id, "eval.json").toString());
  assert.ok(ev("fly").downstream.ce_loss_recovered > 0.3, JSON.stringify(ev("fly").downstream));
  assert.deepEqual(ev("disk").downstream.ce_sae, ev("fly").downstream.ce_sae);
  assert.equal(ev("fly").downstream.sequences, 20); // ceil(1260 / 63) held-out sequences
  assert.match(fly.out, /ce_loss_recovered/);

  const listed = await cli(["runs", "--runs-dir", runs, "--wide"]);
  assert.match(listed.out, new RegExp(`^fly .* ${ev("fly").downstream.ce_loss_recovered.toFixed(4)}$`, "m"));

  // sae eval --model on the run: the same numbers
  const e = await cli(["eval", "fly", "--runs-dir", runs, "--model", model("aidreams260K.bin"), "--json"]);
  assert.equal(e.code, 0, e.err);
  assert.equal(JSON.parse(e.out).downstream.ce_sae, ev("fly").downstream.ce_sae);
});

test("config errors for model data name the key and its line", { skip }, async () => {
  const dir = tmpDir();
  const bad = [
    [AIDREAMS("").replace("layer: 2", "layer: 7"), /lm\.yaml:7:5: data\.model\.layer: layer 7 does not exist; aidreams260K\.bin has layers 0\.\.3/],
    [AIDREAMS("").replace("context_size: 64", "context_size: 500"), /data\.model\.context_size: 500 exceeds the model's context length 128/],
    [AIDREAMS("").replace(model("aidreams260K.bin"), "${NO_SUCH_VAR_FOR_SAE}/x.bin"), /data\.model\.checkpoint: the environment variable NO_SUCH_VAR_FOR_SAE in/],
    [AIDREAMS("").replace(model("aidreams260K.bin"), "missing.bin"), /data\.model\.checkpoint: cannot read model checkpoint .*missing\.bin: ENOENT/],
    [AIDREAMS("  d_in: 32"), /data\.d_in: 32 does not match the data, whose rows have 64 values/],
  ] as const;
  for (const [text, re] of bad) {
    fs.writeFileSync(path.join(dir, "lm.yaml"), text);
    const r = await cli(["train", path.join(dir, "lm.yaml"), "--runs-dir", path.join(dir, "runs")]);
    assert.equal(r.code, 2, r.err);
    assert.match(r.err, re);
  }
});

test("harvesting from a token file: the ids are run as given; bad ids and short files are refused", { skip }, async () => {
  const dir = tmpDir();
  const ref = JSON.parse(fs.readFileSync(model("aidreams260K.reference.json"), "utf8"));
  // 70 sequences of 32 tokens cut from the reference's greedy and pseudo-random ids
  const rows = 70, P = 32, ids = new Int32Array(rows * P);
  for (let s = 0; s < rows; s++) for (let t = 0; t < P; t++) ids[s * P + t] = t === 0 ? 1 : (s % 2 ? ref.lcg_ids : ref.greedy_ids)[(s * 7 + t) % 128];
  writeNpy(path.join(dir, "ids.npy"), ids, [rows, P]);
  // context_size defaults to the file's 32 tokens per sequence
  const r = await cli(["harvest", "--model", model("aidreams260K.bin"), "--layer", "1", "--site", "mlp_out", "--tokens", path.join(dir, "ids.npy"), "--out", path.join(dir, "acts")]);
  assert.equal(r.code, 0, r.err);
  const manifest = JSON.parse(fs.readFileSync(path.join(dir, "acts", "manifest.json"), "utf8"));
  assert.equal(manifest.shards[0].rows, rows * P);
  assert.equal(manifest.starts_with_bos, true);
  assert.deepEqual(manifest.source.site, "mlp_out");
  const back = fs.readFileSync(path.join(dir, "acts", "tokens.npy"));
  assert.deepEqual(new Int32Array(back.buffer.slice(back.byteOffset + back.length - rows * P * 4, back.byteOffset + back.length)), ids);

  ids[5 * P + 3] = 600;
  writeNpy(path.join(dir, "bad.npy"), ids, [rows, P]);
  const bad = await cli(["harvest", "--model", model("aidreams260K.bin"), "--layer", "1", "--tokens", path.join(dir, "bad.npy"), "--out", path.join(dir, "acts2")]);
  assert.equal(bad.code, 2);
  assert.match(bad.err, /data\.model\.tokens: .*bad\.npy: token id 600 \(sequence 5, position 3\) is outside the model's vocabulary 0\.\.511/);
  const short = await cli(["harvest", "--model", model("aidreams260K.bin"), "--layer", "1", "--tokens", path.join(dir, "ids.npy"), "--set", "data.model.context_size=64", "--out", path.join(dir, "acts3")]);
  assert.equal(short.code, 2);
  assert.match(short.err, /has sequences of 32 tokens, fewer than data\.model\.context_size = 64/);
  assert.ok(!fs.existsSync(path.join(dir, "acts2")) && !fs.existsSync(path.join(dir, "acts3")), "nothing written for a refused harvest");
});
