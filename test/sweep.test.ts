// `sae sweep`: the sweep file checked like a config (errors at file:line, nothing trained when a
// run's config is wrong), stable run names, sweep.json, --dry-run and --status, reruns that skip
// finished runs, a sweep killed with kill -9 at random moments that restarts to the same results
// as an uninterrupted one, and a language-model sweep that harvests its data once.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import os from "node:os";
import { cli } from "./helpers.ts";
import { TINY_BASE, TINY_SWEEP, runResults, sweepFolder } from "./sweep-helpers.ts";
import { loadSweep } from "../src/sweep/spec.ts";
import { ranges } from "../src/sweep/slurm.ts";

const BIN = path.resolve(import.meta.dirname, "../bin/sae.js");

test("sweep file: runs expand with stable names from the overrides, in file order; fine-tunes follow their parents", () => {
  const { file, dir } = sweepFolder(`base: base.yaml
set: {train.steps: 30}
groups:
  - name: std
    set: {sae.variant: standard}
    grid: {sae.l1_coefficient: [0.1, 0.3], sae.flavour: [constrained, april]}
  - runs: [{sae.variant: topk, sae.k: 4}, {sae.variant: batchtopk, sae.k: 8}]
    name: k
  - name: std-ft
    finetune: {from: std, freeze: [encoder], steps: 5}
`);
  const s = loadSweep(file, { runsDir: path.join(dir, "out") });
  assert.equal(s.name, "sweep");
  assert.equal(s.dir, path.join(dir, "out", "sweep"));
  assert.deepEqual(s.runs.map((r) => r.name), [
    "std-l1_0.1-constrained", "std-l1_0.1-april", "std-l1_0.3-constrained", "std-l1_0.3-april",
    "k-topk-k4", "k-batchtopk-k8",
    "std-ft-l1_0.1-constrained", "std-ft-l1_0.1-april", "std-ft-l1_0.3-constrained", "std-ft-l1_0.3-april",
  ]);
  const third = s.runs[2].config;
  assert.equal(third.sae.l1_coefficient, 0.3);
  assert.equal(third.sae.flavour, "constrained");
  assert.equal(third.train.steps, 30);
  assert.equal(third.runs_dir, s.dir);
  assert.equal(s.runs[5].config.sae.variant, "batchtopk");
  const ft = s.runs[8];
  assert.equal(ft.finetune?.parent, "std-l1_0.3-constrained");
  assert.equal(ft.stage, 1);
  assert.equal(ft.config.init_from, path.join(s.dir, "std-l1_0.3-constrained"));
  assert.deepEqual(ft.config.train.phases.map((p) => [p.steps, p.sparsity_coefficient, p.freeze]), [[5, 0, ["encoder"]]]);
  assert.equal(ranges([0, 1, 2, 5, 7, 8]), "0-2,5,7-8");
});

test("sweep file errors name the file, line and key, suggest the fix, and nothing trains", async () => {
  const check = async (text: string, pattern: RegExp) => {
    const { file, dir } = sweepFolder(text);
    const r = await cli(["sweep", file, "--runs-dir", path.join(dir, "out")]);
    assert.equal(r.code, 2, r.err);
    assert.match(r.err, pattern);
    assert.doesNotMatch(r.err, /    at /); // no stack trace
    assert.equal(fs.existsSync(path.join(dir, "out")), false, "nothing may be written");
  };
  await check(`base: base.yaml\ngroupz: []\n`, /sweep\.yaml:2:1: unknown key groupz \(did you mean groups\?\)/);
  await check(`base: base.yaml\ngroups:\n  - name: a\n    gird: {sae.k: [4]}\n`, /sweep\.yaml:4:5: unknown key groups\[0\]\.gird \(did you mean grid\?\)/);
  await check(`base: base.yaml\ngroups:\n  - name: a\n    set: {sae.kk: 4}\n`, /run a: \S*sweep\.yaml:4:11: unknown key sae\.kk \(did you mean k\?\)/);
  // one bad value in a grid: the run is named, the value's line is given
  await check(`base: base.yaml\ngroups:\n  - name: a\n    grid:\n      sae.k:\n        - 4\n        - 0\n`, /run a-k0: \S*sweep\.yaml:7:11: sae\.k: expected number to be >=1/);
  await check(`base: base.yaml\ngroups:\n  - name: std\n  - name: ft\n    finetune: {from: sdt}\n`, /sweep\.yaml:5:16: groups\[1\]\.finetune\.from: no earlier group named "sdt" \(did you mean std\?\)/);
  await check(`base: missing.yaml\ngroups: [{name: a}]\n`, /cannot read config file .*missing\.yaml/);
  await check(`base: base.yaml\ngroups:\n  - {name: a}\n  - {name: a}\n`, /sweep\.yaml:4:\d+: groups\[1\]: a second group named "a"/);
});

test("sae sweep trains every run once: --dry-run lists them, a rerun skips them, --status reports them, sweep.json lists them", async () => {
  const { file, dir } = sweepFolder();
  const out = path.join(dir, "out");
  const dry = await cli(["sweep", file, "--runs-dir", out, "--dry-run", "--jobs", "2"]);
  assert.equal(dry.code, 0, dry.err);
  assert.match(dry.out, /5 runs .* 2 at a time/);
  assert.match(dry.out, /standard-ft-l1_0\.05 +scaled +20 steps +train +fine-tune of standard-l1_0\.05, mode decoder/);
  assert.equal(fs.existsSync(out), false, "--dry-run writes nothing");

  const first = await cli(["sweep", file, "--runs-dir", out, "--jobs", "2"]);
  assert.equal(first.code, 0, first.err);
  assert.match(first.out, /5 trained, 0 already done/);
  const sweepDir = path.join(out, "tiny");
  const doc = JSON.parse(fs.readFileSync(path.join(sweepDir, "sweep.json"), "utf8"));
  assert.deepEqual(doc.runs.map((r: { name: string }) => r.name), ["standard-l1_0.05", "standard-l1_0.2", "topk-k4", "standard-ft-l1_0.05", "standard-ft-l1_0.2"]);
  assert.equal(doc.runs[3].finetunes, "standard-l1_0.05");
  for (const r of doc.runs) assert.equal(JSON.parse(fs.readFileSync(path.join(sweepDir, r.name, "status.json"), "utf8")).status, "done");
  // the fine-tune started from its parent and kept its code: same L0
  const l0 = (n: string) => JSON.parse(fs.readFileSync(path.join(sweepDir, n, "eval.json"), "utf8")).l0;
  assert.equal(l0("standard-ft-l1_0.2"), l0("standard-l1_0.2"));

  const before = runResults(path.join(sweepDir, "topk-k4"));
  const again = await cli(["sweep", file, "--runs-dir", out]);
  assert.equal(again.code, 0, again.err);
  assert.match(again.out, /0 trained, 5 already done/);
  assert.deepEqual(runResults(path.join(sweepDir, "topk-k4")), before);

  const status = await cli(["sweep", file, "--runs-dir", out, "--status"]);
  assert.equal(status.code, 0, status.err);
  const lines = status.out.trim().split("\n");
  assert.equal(lines.length, 6);
  assert.match(lines[2], /^topk-k4 +done +60\/60 +L0 4\.00, FVU /);
  assert.match(lines[5], /5 runs: 5 done/);

  // a changed sweep file does not silently continue runs trained with the old one
  fs.writeFileSync(path.join(dir, "base.yaml"), TINY_BASE.replace("lr: 0.004", "lr: 0.003"));
  const changed = await cli(["sweep", file, "--runs-dir", out]);
  assert.equal(changed.code, 2);
  assert.match(changed.err, /run standard-l1_0\.05 was started with train\.lr = 0\.004, and the sweep file now gives 0\.003/);
});

test("a sweep killed with kill -9 at random moments and restarted ends with the same results as an uninterrupted one", async () => {
  // a run with two phases, a TopK run, and a fine-tune that starts from the first
  const { file, dir } = sweepFolder(`base: base.yaml
name: tiny
groups:
  - name: standard
    set: {sae.variant: standard, train.phases: [{steps: 40}, {steps: 20, sparsity_coefficient: 0, freeze: [encoder]}]}
  - {set: {sae.variant: topk, sae.k: 4}}
  - name: standard-ft
    finetune: {from: standard, mode: decoder, steps: 20}
`);
  const args = (out: string) => [BIN, "sweep", file, "--runs-dir", out, "--jobs", "2"];
  const t0 = performance.now();
  const clean = spawnSync(process.execPath, args(path.join(dir, "clean")), { encoding: "utf8" });
  assert.equal(clean.status, 0, clean.stderr);
  const wall = performance.now() - t0;

  const killed = path.join(dir, "killed");
  const delays: number[] = [];
  for (let k = 0; k < 2; k++) {
    const delay = Math.round(300 + Math.random() * Math.max(500, wall - 600));
    delays.push(delay);
    // its own process group, so that kill -9 takes the sweep and every child at once (a power cut)
    const child = spawn(process.execPath, args(killed), { detached: true, stdio: "ignore" });
    const exited = new Promise((resolve) => child.on("exit", resolve));
    await new Promise((r) => setTimeout(r, delay));
    try {
      process.kill(-child.pid!, "SIGKILL");
    } catch {
      /* it finished first */
    }
    await exited;
  }
  const finish = spawnSync(process.execPath, args(killed), { encoding: "utf8" });
  assert.equal(finish.status, 0, `after kills at ${delays.join(", ")} ms: ${finish.stderr}`);
  for (const name of ["standard", "topk", "standard-ft"]) {
    const a = runResults(path.join(dir, "clean", "tiny", name)), b = runResults(path.join(killed, "tiny", name));
    for (const k of Object.keys(a)) assert.equal(b[k], a[k], `${name}: ${k} differs after kills at ${delays.join(", ")} ms`);
  }
});

test("Ctrl-C stops every run of a sweep at a checkpoint; the same command resumes them", async () => {
  const { file, dir } = sweepFolder(TINY_SWEEP, TINY_BASE.replace("steps: 60", "steps: 4000"));
  const out = path.join(dir, "out");
  const child = spawn(process.execPath, [BIN, "sweep", file, "--runs-dir", out, "--jobs", "2"], { stdio: ["ignore", "pipe", "pipe"] });
  let err = "";
  child.stderr.on("data", (d) => (err += d));
  const exited = new Promise<number>((resolve) => child.on("exit", (code) => resolve(code ?? -1)));
  // wait until both first runs have logged training steps, then interrupt the parent only
  const sweepDir = path.join(out, "tiny");
  const logged = (n: string) => fs.existsSync(path.join(sweepDir, n, "metrics.csv")) && fs.readFileSync(path.join(sweepDir, n, "metrics.csv"), "utf8").split("\n").length > 3;
  for (let i = 0; i < 600 && !(logged("standard-l1_0.05") && logged("standard-l1_0.2")); i++) await new Promise((r) => setTimeout(r, 100));
  child.kill("SIGINT");
  const code = await exited;
  assert.equal(code, 1, err);
  assert.match(err, /stopping: 2 running runs save a checkpoint/);
  for (const n of ["standard-l1_0.05", "standard-l1_0.2"]) {
    const st = JSON.parse(fs.readFileSync(path.join(sweepDir, n, "status.json"), "utf8"));
    assert.equal(st.status, "interrupted", n);
    assert.ok(st.step > 0 && st.step < 4000);
    assert.ok(fs.existsSync(path.join(sweepDir, n, "checkpoints", `step-${String(st.step).padStart(7, "0")}.json`)));
  }
  assert.equal(fs.existsSync(path.join(sweepDir, "topk-k4")), false, "no new run starts after Ctrl-C");
  const status = await cli(["sweep", file, "--runs-dir", out, "--status"]);
  assert.match(status.out, /standard-l1_0\.05 +interrupted .* resumes at step \d+/);
  assert.match(status.out, /standard-ft-l1_0\.05 +waiting .* after standard-l1_0\.05/);
});

const MODELS = process.env.SAE_SHARED_MODELS;
const skipLm = MODELS ? false : "SAE_SHARED_MODELS is not set (the folder with aidreams260K.bin)";

test("a language-model sweep harvests the activations once; its runs train from them exactly as from the model", { skip: skipLm }, async () => {
  const base = `name: lm
data:
  source: model
  model: {checkpoint: ${MODELS}/aidreams260K.bin, layer: 1, site: resid_pre, sequences: 64, context_size: 32}
  eval_tokens: 620
  norm_estimate_tokens: 2048
sae: {d_sae: 128, k: 8}
train: {steps: 24, batch_size: 128, log_every: 8, warmup_steps: 4, sparsity_warmup_steps: 8}
`;
  const { file, dir } = sweepFolder(`base: base.yaml\nname: lm\ngroups:\n  - name: topk\n    grid: {sae.k: [4, 8]}\n`, base);
  const out = path.join(dir, "out");
  const r = await cli(["sweep", file, "--runs-dir", out, "--jobs", "2"]);
  assert.equal(r.code, 0, r.err);
  assert.equal((r.err.match(/harvesting aidreams260K\.bin layer 1 resid_pre: 64 sequences of 32 tokens/g) ?? []).length, 1, r.err);
  const data = fs.readdirSync(path.join(out, "lm", "data"));
  assert.equal(data.length, 1);
  for (const n of ["topk-k4", "topk-k8"]) {
    const c = fs.readFileSync(path.join(out, "lm", n, "config.yaml"), "utf8");
    assert.match(c, new RegExp(`path: ${path.join(out, "lm", "data", data[0]).replace(/[.]/g, "\\.")}`));
    assert.ok(JSON.parse(fs.readFileSync(path.join(out, "lm", n, "eval.json"), "utf8")).downstream.ce_loss_recovered > 0);
  }
  // the same run harvested on the fly by sae train: the same numbers
  const direct = await cli(["train", path.join(dir, "base.yaml"), "--set", "sae.k=8", "--runs-dir", path.join(dir, "direct"), "--run-id", "direct", "--threads", "1"]);
  assert.equal(direct.code, 0, direct.err);
  const a = JSON.parse(fs.readFileSync(path.join(out, "lm", "topk-k8", "eval.json"), "utf8"));
  const b = JSON.parse(fs.readFileSync(path.join(dir, "direct", "direct", "eval.json"), "utf8"));
  delete a.run, delete b.run;
  assert.deepEqual(a, b);
});

test("a run killed between a phase's checkpoint and its evaluation resumes to the same evaluation", async () => {
  const { dir } = sweepFolder();
  const cfg = path.join(dir, "two-phase.yaml");
  fs.writeFileSync(cfg, TINY_BASE.replace("  steps: 60\n", "  phases: [{steps: 30}, {steps: 20, sparsity_coefficient: 0, freeze: [encoder]}]\n").replace("sae:\n", "sae:\n  variant: standard\n"));
  const runs = path.join(dir, "runs");
  const full = await cli(["train", cfg, "--runs-dir", runs, "--run-id", "full", "--threads", "1"]);
  assert.equal(full.code, 0, full.err);
  const want = runResults(path.join(runs, "full"));
  const killedAt = (id: string, keepStep: number) => {
    // what a kill -9 right after the checkpoint at keepStep leaves: later files gone, status running
    const d = path.join(runs, id);
    fs.cpSync(path.join(runs, "full"), d, { recursive: true });
    for (const f of fs.readdirSync(path.join(d, "checkpoints"))) if (Number(/step-(\d+)/.exec(f)![1]) > keepStep) fs.rmSync(path.join(d, "checkpoints", f));
    fs.rmSync(path.join(d, "eval.json"));
    fs.rmSync(path.join(d, "final"), { recursive: true });
    fs.mkdirSync(path.join(d, "final"));
    const phases = JSON.parse(fs.readFileSync(path.join(d, "phases.json"), "utf8"));
    fs.writeFileSync(path.join(d, "phases.json"), JSON.stringify(keepStep === 50 ? phases : []));
    const st = JSON.parse(fs.readFileSync(path.join(d, "status.json"), "utf8"));
    fs.writeFileSync(path.join(d, "status.json"), JSON.stringify({ ...st, id, status: "running", step: keepStep }));
  };
  for (const [id, step] of [["after-phase-1", 30], ["after-phase-2", 50]] as const) {
    killedAt(id, step);
    const r = await cli(["resume", id, "--runs-dir", runs, "--threads", "1"]);
    assert.equal(r.code, 0, r.err);
    const got = runResults(path.join(runs, id));
    assert.equal(got.eval.replace(`"run": "${id}"`, `"run": "full"`), want.eval, id);
    assert.equal(got.phases, want.phases, id);
    assert.equal(got.weights, want.weights, id);
    assert.equal(got.metrics, want.metrics, id);
  }
});

test("a sweep run's lock: a live holder refuses the run by name, a dead one's lock is taken over", async () => {
  const { file, dir } = sweepFolder(`base: base.yaml\nname: tiny\nset: {train.steps: 10, sae.variant: topk}\ngroups:\n  - name: k\n    runs: [{sae.k: 4}]\n`);
  const out = path.join(dir, "out");
  const locks = path.join(out, "tiny", "locks");
  fs.mkdirSync(locks, { recursive: true });
  const [name] = loadSweep(file, { runsDir: out }).runs.map((r) => r.name);
  const lock = path.join(locks, `${name}.lock`);
  // this test's own process holds it: alive
  fs.writeFileSync(lock, JSON.stringify({ pid: process.pid, host: os.hostname(), command: "sweep", since: "2026-01-01T00:00:00Z" }));
  const busy = await cli(["sweep", file, "--runs-dir", out]);
  assert.equal(busy.code, 1, busy.err); // a sweep whose run failed
  assert.match(busy.err, new RegExp(`1 run failed: ${name} \\(sweep run ${name} is in use by sae sweep \\(pid ${process.pid} on `));
  assert.equal(fs.existsSync(path.join(out, "tiny", name, "config.yaml")), false, "nothing trained");
  // a PID that no process has: the lock is taken over, the run trains, the lock is gone after
  fs.writeFileSync(lock, JSON.stringify({ pid: 2 ** 22 + 17, host: os.hostname(), command: "sweep", since: "2026-01-01T00:00:00Z" }));
  const r = await cli(["sweep", file, "--runs-dir", out]);
  assert.equal(r.code, 0, r.err);
  const log = fs.readFileSync(path.join(out, "tiny", "logs", `${name}.log`), "utf8");
  assert.match(log, new RegExp(`taking over the lock of sweep run ${name}: its holder \\(sae sweep \\(pid ${2 ** 22 + 17}`));
  assert.equal(fs.existsSync(lock), false);
  assert.deepEqual(fs.readdirSync(locks), [], "no temporary lock file is left");
});
