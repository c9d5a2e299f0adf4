// The CLI, in-process: a seeded end-to-end run checked against expected metrics, determinism,
// eval/runs/doctor, failed and interrupted runs, and every kind of bad input.
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { cli, tmpDir, trainInterrupted } from "./helpers.ts";
import { loadConfig } from "../src/config/load.ts";
import { selectEngine } from "../src/engine/index.ts";
import { createRunDir } from "../src/io/run.ts";
import { train } from "../src/train/loop.ts";

const SMALL = `# a small seeded TopK run
name: e2e
seed: 3
data:
  d_in: 32
  synthetic: { n_features: 48, mean_active: 3, decay: 0.99, magnitude_min: 0.5 }
  eval_tokens: 4096
  norm_estimate_tokens: 4096
sae:
  variant: topk
  d_sae: 96
  k: 6
train:
  steps: 600
  batch_size: 256
  lr: 0.005
  warmup_steps: 20
  dead_tokens_threshold: 20000
  log_every: 50
`;

function setup(text = SMALL): { dir: string; cfg: string } {
  const dir = tmpDir();
  const cfg = path.join(dir, "small.yaml");
  fs.writeFileSync(cfg, text);
  return { dir, cfg };
}

const csvWithoutTiming = (file: string) =>
  fs.readFileSync(file, "utf8").trim().split("\n").map((l) => l.split(",").slice(0, -1).join(","));

test("train → eval → runs: a seeded run reaches the expected metrics, deterministically", async () => {
  const { dir, cfg } = setup();
  const runs = path.join(dir, "runs");
  const a = await cli(["train", cfg, "--runs-dir", runs, "--run-id", "a"]);
  assert.equal(a.code, 0, a.err);
  const b = await cli(["train", cfg, "--runs-dir", runs, "--run-id", "b"]);
  assert.equal(b.code, 0, b.err);
  assert.match(a.err, /engine/);

  // same seed, same thread count → identical logs (tokens/s aside) and identical weights
  assert.deepEqual(csvWithoutTiming(path.join(runs, "a", "metrics.csv")), csvWithoutTiming(path.join(runs, "b", "metrics.csv")));
  assert.deepEqual(fs.readFileSync(path.join(runs, "a", "final", "sae_weights.safetensors")), fs.readFileSync(path.join(runs, "b", "final", "sae_weights.safetensors")));

  const ev = JSON.parse(fs.readFileSync(path.join(runs, "a", "eval.json"), "utf8"));
  assert.ok(ev.ground_truth.recovered_0_9 >= 0.95, `recovered ${ev.ground_truth.recovered_0_9}`);
  assert.ok(ev.ground_truth.mmcs_recall > 0.95, `mmcs ${ev.ground_truth.mmcs_recall}`);
  assert.ok(ev.fvu > 0.04 && ev.fvu < 0.08, `fvu ${ev.fvu}`); // 0.056 on the development machine
  assert.ok(ev.l0 > 5 && ev.l0 <= 6, `l0 ${ev.l0}`);
  assert.ok(ev.gamma > 0.9 && ev.gamma < 1.1, `gamma ${ev.gamma}`);
  assert.ok(Math.abs(ev.explained_variance - (1 - ev.fvu)) < 1e-12);

  // the run folder holds what the README promises
  for (const f of ["config.yaml", "status.json", "metrics.csv", "eval.json", "ground_truth.safetensors", "final/sae_weights.safetensors", "final/cfg.json", "checkpoints/step-0000600.safetensors", "checkpoints/step-0000600.json"]) {
    assert.ok(fs.existsSync(path.join(runs, "a", f)), `missing ${f}`);
  }
  const header = fs.readFileSync(path.join(runs, "a", "metrics.csv"), "utf8").split("\n")[0];
  assert.equal(header, "step,phase,tokens,lr,sparsity_coeff,loss,mse,sparsity_loss,aux_loss,fvu,l0,dead_frac,grad_norm,tokens_per_s");
  assert.equal(csvWithoutTiming(path.join(runs, "a", "metrics.csv")).length, 1 + 600 / 50);
  // the resolved config has every default written out and loads back to the same config
  const resolved = fs.readFileSync(path.join(runs, "a", "config.yaml"), "utf8");
  for (const key of ["k_aux:", "beta2:", "b_dec_init:", "normalize:", "init_norm:"]) assert.ok(resolved.includes(key), `config.yaml lacks ${key}`);
  assert.deepEqual(loadConfig(path.join(runs, "a", "config.yaml")).config, loadConfig(cfg, [`runs_dir=${runs}`]).config);

  const e = await cli(["eval", "a", "--runs-dir", runs, "--json"]);
  assert.equal(e.code, 0, e.err);
  const again = JSON.parse(e.out);
  assert.equal(again.fvu, ev.fvu);
  assert.equal(again.l0, ev.l0);

  const table = await cli(["eval", "a", "--runs-dir", runs]);
  for (const m of ["mse", "fvu", "explained_variance", "l0", "l1", "dead_frac", "dense_frac", "l2_ratio", "gamma", "cosine", "mmcs_recall", "mmcs_precision", "recovered_0_9", "density"]) {
    assert.match(table.out, new RegExp(`\\b${m}\\b`), `eval table lacks ${m}`);
  }

  const r = await cli(["runs", "--runs-dir", runs]);
  assert.equal(r.code, 0);
  const lines = r.out.trim().split("\n");
  assert.equal(lines.length, 3);
  assert.match(lines[1], /^a\s+topk\s+done\s+600\/600\s/);
});

test("a failing run is marked failed, with the reason, and exits 1", async () => {
  const { dir, cfg } = setup();
  const runs = path.join(dir, "runs");
  const r = await cli(["train", cfg, "--runs-dir", runs, "--run-id", "boom", "--set", "train.lr=1e30", "--set", "train.grad_clip=0", "--set", "train.warmup_steps=0"]);
  assert.equal(r.code, 1);
  assert.match(r.err, /loss became/);
  const status = JSON.parse(fs.readFileSync(path.join(runs, "boom", "status.json"), "utf8"));
  assert.equal(status.status, "failed");
  assert.match(status.error, /loss became/);
  assert.ok(!fs.existsSync(path.join(runs, "boom", "eval.json")));
  assert.match((await cli(["runs", "--runs-dir", runs])).out, /boom\s+topk\s+failed/);
});

test("an interrupted run saves a checkpoint and is marked interrupted", async () => {
  const { dir, cfg } = setup();
  const { config } = loadConfig(cfg, [`runs_dir=${path.join(dir, "runs")}`]);
  const runDir = createRunDir(config.runs_dir, "int");
  const control = { stop: false };
  const lines: string[] = [];
  const reporter = { log: (l: string) => void lines.push(l), progress: (step: number) => { if (step >= 100) control.stop = true; } };
  const { status } = await train({ config: { ...config, train: { ...config.train, log_every: 100 } }, runDir, runId: "int", engine: selectEngine(), reporter, control });
  assert.equal(status.status, "interrupted");
  assert.equal(status.step, 100);
  assert.ok(fs.existsSync(path.join(runDir, "checkpoints", "step-0000100.safetensors")));
  assert.ok(!fs.existsSync(path.join(runDir, "final", "sae_weights.safetensors")));
});

test("sae resume continues an interrupted run exactly: same weights as the uninterrupted run, one- and two-phase", async () => {
  for (const phased of [false, true]) {
    const text = phased ? SMALL.replace("  steps: 600\n", "") + "  phases:\n    - { name: one, steps: 300 }\n    - { name: two, steps: 300, lr: 0.002, warmup_steps: 0 }\n" : SMALL;
    const { dir, cfg } = setup(text);
    const runs = path.join(dir, "runs");
    assert.equal((await cli(["train", cfg, "--runs-dir", runs, "--run-id", "full"])).code, 0);
    const { config } = loadConfig(cfg, [`runs_dir=${runs}`]);
    const stopAt = phased ? 400 : 250;
    await trainInterrupted(config, runs, "cut", stopAt);
    const r = await cli(["resume", "cut", "--runs-dir", runs]);
    assert.equal(r.code, 0, r.err);
    assert.match(r.err, new RegExp(`resuming from step-0*${stopAt}\\.json`));
    const weights = (id: string) => fs.readFileSync(path.join(runs, id, "final", "sae_weights.safetensors"));
    assert.deepEqual(weights("cut"), weights("full"), phased ? "two-phase run" : "one-phase run");
    assert.deepEqual(csvWithoutTiming(path.join(runs, "cut", "metrics.csv")), csvWithoutTiming(path.join(runs, "full", "metrics.csv")));
    const status = JSON.parse(fs.readFileSync(path.join(runs, "cut", "status.json"), "utf8"));
    assert.equal(status.status, "done");
    if (phased) {
      const ev = JSON.parse(fs.readFileSync(path.join(runs, "cut", "eval.json"), "utf8"));
      assert.deepEqual(ev.phases.map((p: { phase: string }) => p.phase), ["one", "two"]);
    }
    const again = await cli(["resume", "cut", "--runs-dir", runs]);
    assert.equal(again.code, 2);
    assert.match(again.err, /is done; there is nothing to resume/);
  }
});

test("bad configs: every problem names the key, the file and line, and exits 2", async () => {
  const { dir, cfg } = setup(`name: x
sae:
  variant: topk
  kk: 3
  d_sae: -4
train:
  stepz: 5
  lr: "fast"
`);
  const runs = path.join(dir, "runs");
  const r = await cli(["train", cfg, "--runs-dir", runs]);
  assert.equal(r.code, 2);
  assert.match(r.err, /4 problems/);
  assert.match(r.err, /small\.yaml:4:3: unknown key sae\.kk \(did you mean k\?\)/);
  assert.match(r.err, /small\.yaml:5:3: sae\.d_sae: expected number to be >=1, but found -4/);
  assert.match(r.err, /small\.yaml:7:3: unknown key train\.stepz \(did you mean steps\?\)/);
  assert.match(r.err, /small\.yaml:8:3: train\.lr: expected number, but found "fast" \(a string\)/);
  assert.ok(!fs.existsSync(runs), "a bad config must not create a run");
});

test("bad --set values and other usage errors exit 2 with a clear message", async () => {
  const { dir, cfg } = setup();
  const runs = path.join(dir, "runs");
  const cases: [string[], RegExp][] = [
    [["--set", "sae.k=abc"], /--set sae\.k=abc: sae\.k: expected number, but found "abc"/],
    [["--set", "sae.kk=3"], /--set sae\.kk=3: unknown key sae\.kk \(did you mean k\?\)/],
    [["--set", "sae.k"], /--set sae\.k: expected key=value/],
    [["--set", "sae.variant=gatd"], /sae\.variant: expected one of "standard"\|"tanh"\|"scaled"\|"gated"\|"topk"\|"batchtopk"\|"jumprelu"\|"matryoshka", but found "gatd"/],
    [["--set", "sae.k=5000"], /k = 5000 exceeds the number of latents d_sae = 96/],
    [["--set", "train.steps=0"], /train\.steps: expected number to be >=1, but found 0/],
    [["--set", "bogus.x=1"], /unknown key bogus/],
    [["--threads", "two"], /expected a positive integer, received "two"/],
  ];
  for (const [args, re] of cases) {
    const r = await cli(["train", cfg, "--runs-dir", runs, ...args]);
    assert.equal(r.code, 2, `${args.join(" ")}: exit ${r.code}\n${r.err}`);
    assert.match(r.err, re);
  }
  const missing = await cli(["train", path.join(dir, "nope.yaml")]);
  assert.equal(missing.code, 2);
  assert.match(missing.err, /cannot read config file .*nope\.yaml: ENOENT/);
  fs.writeFileSync(path.join(dir, "broken.yaml"), "sae:\n  variant: [\n");
  const broken = await cli(["train", path.join(dir, "broken.yaml")]);
  assert.equal(broken.code, 2);
  assert.match(broken.err, /broken\.yaml:\d+:\d+: invalid YAML/);
  fs.writeFileSync(path.join(dir, "list.yaml"), "- a\n- b\n");
  assert.match((await cli(["train", path.join(dir, "list.yaml")])).err, /top level must be a mapping/);
  assert.equal((await cli(["trian"])).code, 2);
  assert.match((await cli(["eval", "nothing", "--runs-dir", runs])).err, /no run "nothing"/);
});

test("a variant-specific key on another variant warns", async () => {
  const { cfg } = setup();
  const { warnings } = loadConfig(cfg, ["sae.variant=standard"]);
  assert.equal(warnings.length, 1);
  assert.match(warnings[0], /sae\.k is ignored: only topk, batchtopk, matryoshka read it/);
});

test("an existing run folder is never overwritten", async () => {
  const { dir, cfg } = setup();
  const runs = path.join(dir, "runs");
  fs.mkdirSync(path.join(runs, "taken"), { recursive: true });
  fs.writeFileSync(path.join(runs, "taken", "keep.txt"), "mine");
  const r = await cli(["train", cfg, "--runs-dir", runs, "--run-id", "taken"]);
  assert.equal(r.code, 2);
  assert.match(r.err, /already exists/);
  assert.equal(fs.readFileSync(path.join(runs, "taken", "keep.txt"), "utf8"), "mine");
});

test("help, version and doctor", async () => {
  const h = await cli(["train", "--help"]);
  assert.equal(h.code, 0);
  assert.match(h.out, /Examples:/);
  assert.match(h.out, /--set <key=value>/);
  const d = await cli(["doctor"]);
  assert.equal(d.code, 0);
  assert.match(d.out, /engine: /);
  assert.match(d.out, /threads: /);
  if (process.env.CI) assert.match(d.out, /OpenBLAS/);
});
