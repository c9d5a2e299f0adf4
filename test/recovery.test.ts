// Runs that survive what a hostile user or a hostile machine does to them (issue 10): the end of a
// run redone rather than skipped, a lock per run, signals, damaged and altered checkpoints, config
// and engine changes behind the run's back, divergence, a full disk, clutter. Child processes
// are stopped or killed at exact write points through the fault injection of src/io/atomic.ts
// (SAE_FAULT), so nothing here depends on timing.
import { after, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import type { ChildProcess } from "node:child_process";
import { cli, configIn, spawnCli, tinyConfig, MODELS_DIR } from "./helpers.ts";
import { listCheckpoints, latestCheckpoint } from "../src/train/checkpoint.ts";
import { readStatus } from "../src/io/run.ts";

const SMALL = tinyConfig("rec", 2, "  steps: 40\n  warmup_steps: 2\n");
const setup = (text = SMALL) => configIn(text, "sae-rec-");

const file = (...p: string[]) => fs.readFileSync(path.join(...p));
const json = (...p: string[]) => JSON.parse(fs.readFileSync(path.join(...p), "utf8"));
const csv = (...p: string[]) => fs.readFileSync(path.join(...p), "utf8").trim().split("\n").map((l) => l.split(",").slice(0, -1).join(","));

/** a finished run's results, for comparing two runs (eval.json without its run id) */
function results(dir: string) {
  const ev = fs.readFileSync(path.join(dir, "eval.json"), "utf8").replace(/^  "run": "[^"]*",\n/m, "");
  return { weights: file(dir, "final", "sae_weights.safetensors"), cfg: file(dir, "final", "cfg.json"), eval: ev, metrics: csv(dir, "metrics.csv") };
}

async function trained(cfg: string, runs: string, id: string, ...sets: string[]): Promise<string> {
  const r = await cli(["train", cfg, "--runs-dir", runs, "--run-id", id, ...sets.flatMap((s) => ["--set", s])]);
  assert.equal(r.code, 0, r.err);
  return path.join(runs, id);
}

const children: ChildProcess[] = [];
// a failed assertion must not leave a stopped child holding the test process open
after(() => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
});

/** the CLI in a child process, stopped by SIGKILL when the tests end */
function child(args: string[], env: Record<string, string> = {}): ReturnType<typeof spawnCli> {
  const c = spawnCli(args, env);
  children.push(c.proc);
  return c;
}

/** resolves once the process has stopped itself (SAE_FAULT=stop@...); polls /proc */
async function stopped(pid: number, done: Promise<unknown>): Promise<void> {
  let exited = false;
  void done.then(() => (exited = true));
  for (;;) {
    assert.ok(!exited, "the child exited instead of stopping");
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    if (stat.slice(stat.lastIndexOf(")") + 2)[0] === "T") return;
    await new Promise((r) => setTimeout(r, 20));
  }
}

test("the end of a run is redone, never skipped: status.json deleted, a full disk while writing final/, a richer eval.json kept", async () => {
  const { cfg, runs } = setup();
  const ref = results(await trained(cfg, runs, "ref"));

  // a finished run whose status.json is gone resumes into the same eval.json (before: 74 bytes of nothing)
  const a = await trained(cfg, runs, "a");
  fs.rmSync(path.join(a, "status.json"));
  const r = await cli(["resume", "a", "--runs-dir", runs]);
  assert.equal(r.code, 0, r.err);
  assert.match(r.err, /resuming from step-0000040\.json \(step 40\)/);
  assert.deepEqual(results(a), ref);
  assert.equal(readStatus(a)!.status, "done");

  // the disk fills while final/ is written: the run fails naming the file; resumed, it is whole
  process.env.SAE_FAULT = "ENOSPC@final/sae_weights.safetensors";
  let full: Awaited<ReturnType<typeof cli>>;
  try {
    full = await cli(["train", cfg, "--runs-dir", runs, "--run-id", "full"]);
  } finally {
    delete process.env.SAE_FAULT;
  }
  assert.equal(full.code, 1);
  assert.match(full.err, /error: cannot write \S+full\/final\/sae_weights\.safetensors: no space left on the device \(ENOSPC\)\nhint: free some space/);
  assert.equal(readStatus(path.join(runs, "full"))!.status, "failed");
  assert.ok(!fs.existsSync(path.join(runs, "full", "eval.json")));
  assert.ok(!fs.readdirSync(path.join(runs, "full", "final")).some((f) => f.includes(".tmp-")), "the temporary file is removed");
  const again = await cli(["resume", "full", "--runs-dir", runs]);
  assert.equal(again.code, 0, again.err);
  assert.deepEqual(results(path.join(runs, "full")), ref);

  // an eval.json holding more than training computes (a later sae eval) is not overwritten
  const richer = { ...json(a, "eval.json"), downstream_by_convention: { sae: {} } };
  fs.writeFileSync(path.join(a, "eval.json"), JSON.stringify(richer));
  fs.rmSync(path.join(a, "status.json"));
  const kept = await cli(["resume", "a", "--runs-dir", runs]);
  assert.equal(kept.code, 0, kept.err);
  assert.match(kept.err, /eval\.json is kept as it is: it holds downstream_by_convention/);
  assert.deepEqual(json(a, "eval.json"), richer);
  // a done run with everything in place has nothing to resume
  assert.equal((await cli(["resume", "a", "--runs-dir", runs])).code, 2);
});

test("a language-model run killed while writing eval.json resumes to an eval.json with the downstream loss", { skip: MODELS_DIR ? false : "SAE_SHARED_MODELS is not set" }, async () => {
  const { cfg, runs } = setup(`name: lm
seed: 3
data:
  source: model
  model: { checkpoint: ${path.join(MODELS_DIR ?? "", "aidreams260K.bin")}, layer: 2, sequences: 48, context_size: 16 }
  eval_tokens: 150
  norm_estimate_tokens: 256
sae: { variant: topk, d_sae: 128, k: 4 }
train: { steps: 4, batch_size: 64, warmup_steps: 1, log_every: 2 }
`);
  const ref = results(await trained(cfg, runs, "ref"));
  assert.ok(json(runs, "ref", "eval.json").downstream.ce_loss_recovered > 0);
  const k = child(["train", cfg, "--runs-dir", runs, "--run-id", "lm"], { SAE_FAULT: "kill@eval.json" });
  assert.equal((await k.done).signal, "SIGKILL");
  assert.ok(!fs.existsSync(path.join(runs, "lm", "eval.json")));
  const r = await cli(["resume", "lm", "--runs-dir", runs]);
  assert.equal(r.code, 0, r.err);
  assert.deepEqual(results(path.join(runs, "lm")), ref);
});

test("sae runs shows an eval.json that lacks a metric with '-' (before: the whole listing failed)", async () => {
  const { cfg, runs } = setup();
  const a = await trained(cfg, runs, "a");
  const { mse: _mse, gamma: _gamma, ...rest } = json(a, "eval.json");
  fs.writeFileSync(path.join(a, "eval.json"), JSON.stringify({ ...rest, fvu: null, downstream: { convention: "sae" } }));
  for (const wide of [[], ["--wide"]]) {
    const r = await cli(["runs", "--runs-dir", runs, ...wide]);
    assert.equal(r.code, 0, r.err);
    const row = r.out.trim().split("\n")[1].split(/\s+/);
    assert.deepEqual(row.slice(0, 6), ["a", "topk", "done", "40/40", "-", "-"], r.out);
    if (wide.length) assert.equal(row[10], "-", "gamma");
  }
});

test("one process per run: a live holder refuses resume and eval, a dead one is taken over; sae runs shows it dead", async () => {
  const { cfg, runs } = setup();
  const ref = results(await trained(cfg, runs, "ref"));
  // a training process stopped (alive) right after its checkpoint at step 20
  const t = child(["train", cfg, "--runs-dir", runs, "--run-id", "a"], { SAE_FAULT: "stop@step-0000020.json" });
  await stopped(t.proc.pid!, t.done);
  for (const cmd of ["resume", "eval"]) {
    const r = await cli([cmd, "a", "--runs-dir", runs]);
    assert.equal(r.code, 2, `${cmd}: ${r.err}`);
    assert.match(r.err, new RegExp(`error: run a is in use by sae train \\(pid ${t.proc.pid} on [^,]+, since [^)]+\\)\\nhint: one process works on a run at a time`), cmd);
  }
  assert.match((await cli(["runs", "--runs-dir", runs])).out, /^a\s+topk\s+running\s/m);
  t.proc.kill("SIGKILL");
  assert.equal((await t.done).signal, "SIGKILL");
  assert.match((await cli(["runs", "--runs-dir", runs])).out, /^a\s+topk\s+dead\s+20\/40/m);

  // two resumes at once: the second is refused while the first holds the lock
  const first = child(["resume", "a", "--runs-dir", runs], { SAE_FAULT: "stop@step-0000030.json" });
  await stopped(first.proc.pid!, first.done);
  const second = await cli(["resume", "a", "--runs-dir", runs]);
  assert.equal(second.code, 2);
  assert.match(second.err, /run a is in use by sae resume/);
  first.proc.kill("SIGCONT");
  const end = await first.done;
  assert.equal(end.code, 0, end.err);
  assert.match(end.err, new RegExp(`taking over the lock of run a: its holder \\(sae train \\(pid ${t.proc.pid} on .*\\) is gone`));
  assert.deepEqual(results(path.join(runs, "a")), ref, "metrics.csv holds each row once, in order");
  assert.ok(!fs.existsSync(path.join(runs, "a", "lock")), "the lock is released");
});

test("SIGTERM, SIGHUP and Ctrl-C checkpoint the run, mark it interrupted and exit 130; it resumes exactly", async () => {
  const { cfg, runs } = setup();
  const ref = results(await trained(cfg, runs, "ref"));
  for (const sig of ["SIGTERM", "SIGHUP", "SIGINT"] as const) {
    const id = sig.toLowerCase();
    // stopped at its first status.json (before step 1): the signal is handled after a step
    const t = child(["train", cfg, "--runs-dir", runs, "--run-id", id], { SAE_FAULT: `stop@${id}/status.json` });
    await stopped(t.proc.pid!, t.done);
    t.proc.kill(sig);
    t.proc.kill("SIGCONT");
    const r = await t.done;
    assert.equal(r.code, 130, `${sig}: ${r.err}`);
    assert.match(r.err, new RegExp(`${sig}: stopping after this step`));
    // the handler runs at the loop's next turn: after step 1 or 2
    const at = Number(new RegExp(`interrupted at step (\\d+); state saved to \\S+step-0*\\1\\.safetensors; continue with: sae resume ${id}`).exec(r.err)?.[1]);
    assert.ok(at >= 1 && at < 10, r.err);
    const s = readStatus(path.join(runs, id))!;
    assert.equal(s.status, "interrupted", sig);
    assert.equal(s.step, at);
    const again = await cli(["resume", id, "--runs-dir", runs]);
    assert.equal(again.code, 0, again.err);
    assert.deepEqual(results(path.join(runs, id)), ref, sig);
  }
});

test("a phase's evaluation lost from phases.json is computed again on resume", async () => {
  const text = SMALL.replace("  steps: 40\n", "") + "  phases:\n    - { name: one, steps: 20 }\n    - { name: two, steps: 20, lr: 0.003 }\n";
  const { cfg, runs } = setup(text);
  const ref = results(await trained(cfg, runs, "ref"));
  // killed inside phase two, after its checkpoint at step 30 (at the end's, before its rename); phases.json lost
  const k = child(["train", cfg, "--runs-dir", runs, "--run-id", "a"], { SAE_FAULT: "kill@step-0000040.safetensors" });
  assert.equal((await k.done).signal, "SIGKILL");
  fs.rmSync(path.join(runs, "a", "phases.json"));
  const r = await cli(["resume", "a", "--runs-dir", runs]);
  assert.equal(r.code, 0, r.err);
  assert.match(r.err, /resuming from step-0000030\.json/);
  assert.match(r.err, /phase one: its evaluation is missing from phases\.json; evaluating its last checkpoint/);
  assert.deepEqual(json(runs, "a", "eval.json").phases.map((p: { phase: string }) => p.phase), ["one", "two"]);
  assert.deepEqual(results(path.join(runs, "a")), ref);
});

/** a run stopped by a kill after its checkpoint at step 30 */
async function killedAt30(cfg: string, runs: string, id: string): Promise<string> {
  const k = child(["train", cfg, "--runs-dir", runs, "--run-id", id], { SAE_FAULT: "kill@step-0000030.json" });
  assert.equal((await k.done).signal, "SIGKILL");
  return path.join(runs, id);
}

test("a damaged newest checkpoint (altered bytes, truncated) is passed over with a warning; with no good one the resume is refused", async () => {
  const { cfg, runs } = setup();
  const ref = results(await trained(cfg, runs, "ref"));
  for (const damage of ["flip", "truncate"] as const) {
    const dir = await killedAt30(cfg, runs, damage);
    // the kill came before step-30's .json: step 20 is the newest; damage it
    const st = path.join(dir, "checkpoints", "step-0000020.safetensors");
    const bytes = fs.readFileSync(st);
    if (damage === "flip") bytes[bytes.length - 100] ^= 0x40;
    fs.writeFileSync(st, damage === "flip" ? bytes : bytes.subarray(0, bytes.length - 1000));
    const r = await cli(["resume", damage, "--runs-dir", runs]);
    assert.equal(r.code, 0, r.err);
    assert.match(r.err, damage === "flip" ? /warning: step-0000020 is damaged and is passed over: checkpoint \S+ does not match its checksum/ : /warning: step-0000020 is damaged and is passed over: \S+ is not a valid safetensors file/);
    assert.match(r.err, /warning: resuming from step-0000010\.json, the newest checkpoint that reads back whole \(1 newer one is damaged\)/);
    assert.deepEqual(results(dir), ref, damage);
  }
  // every checkpoint damaged: refused, and the hint says what works
  const dir = await killedAt30(cfg, runs, "all");
  for (const { file: f } of listCheckpoints(dir)) fs.writeFileSync(f.replace(/\.json$/, ".safetensors"), "junk");
  const r = await cli(["resume", "all", "--runs-dir", runs]);
  assert.equal(r.code, 2);
  assert.match(r.err, /none of its 2 checkpoints reads back whole/);
  assert.match(r.err, /hint: move the damaged checkpoints .* out of the run: `sae resume` then trains it again from step 0/);
  assert.equal(readStatus(dir)!.status, "running", "a refused resume changes nothing");
});

test("changes behind the run's back are refused with the reason (exit 2): a .json claiming another step, k edited, another engine, --set of a fixed key", async () => {
  const { cfg, runs } = setup();
  const only20 = async (id: string) => {
    const dir = await killedAt30(cfg, runs, id);
    fs.rmSync(path.join(dir, "checkpoints", "step-0000010.json"));
    return dir;
  };
  // the .json says step 30 for the tensors of step 20
  let dir = await only20("later");
  const j = path.join(dir, "checkpoints", "step-0000020.json");
  fs.writeFileSync(j, JSON.stringify({ ...json(j), step: 30 }));
  let r = await cli(["resume", "later", "--runs-dir", runs]);
  assert.equal(r.code, 2);
  assert.match(r.err, /step-0000020\.json says step 30, its name says step 20/);
  // renamed to match: the tensors' own counters still say 20
  for (const ext of [".json", ".safetensors"]) fs.renameSync(j.replace(".json", ext), j.replace("20.json", "30" + ext));
  r = await cli(["resume", "later", "--runs-dir", runs]);
  assert.equal(r.code, 2);
  assert.match(r.err, /step-0000030\.json says step 30, its tensors \(step-0000030\.safetensors\) were saved at step 20/);

  // k edited in config.yaml
  dir = await only20("edited");
  const yaml = path.join(dir, "config.yaml");
  fs.writeFileSync(yaml, fs.readFileSync(yaml, "utf8").replace(/^  k: 3$/m, "  k: 2"));
  r = await cli(["resume", "edited", "--runs-dir", runs]);
  assert.equal(r.code, 2, r.err);
  assert.match(r.err, /run edited: its config\.yaml differs from the config its checkpoint at step 20 was trained with:\n  sae\.k: 3 → 2\n/);
  assert.match(r.err, /hint: undo the edit of config\.yaml, or start a new run from this one's weights: sae finetune edited/);

  // --set of a key that cannot change
  r = await cli(["resume", "edited", "--runs-dir", runs, "--set", "sae.k=2"]);
  assert.equal(r.code, 2);
  assert.match(r.err, /--set sae\.k=2: a resume continues the run .*; sae\.k cannot change between steps/);

  // another engine, not asked for: refused; asked for: recorded in the history
  dir = await only20("engine");
  process.env.SAE_ENGINE = "typescript";
  try {
    r = await cli(["resume", "engine", "--runs-dir", runs]);
  } finally {
    delete process.env.SAE_ENGINE;
  }
  assert.equal(r.code, 2);
  assert.match(r.err, /run engine ran on the native engine with \d+ threads?; this resume would run on the typescript engine \(.*\nhint: ask for the change with --engine native \(with SAE_ENGINE=typescript, as now\); to stay on the native engine, unset SAE_ENGINE/);
  process.env.SAE_ENGINE = "typescript";
  try {
    r = await cli(["resume", "engine", "--runs-dir", runs, "--engine", "native"]);
  } finally {
    delete process.env.SAE_ENGINE;
  }
  assert.equal(r.code, 0, r.err);
  assert.match(r.err, /engine change at step 20, as asked: the native engine with \d+ threads? before, the typescript engine from here/);
  assert.deepEqual(readStatus(dir)!.history!.map((h) => [h.step, h.engine]), [[0, "native"], [20, "typescript"]]);
});

test("divergence stops the run as failed with the last good checkpoint kept, and resume --set train.lr continues it", async () => {
  const text = SMALL.replace("  steps: 40\n", "") + "  phases:\n    - { name: one, steps: 20 }\n    - { name: two, steps: 20, lr: 1000, warmup_steps: 0 }\n";
  const { cfg, runs } = setup(text);
  const r = await cli(["train", cfg, "--runs-dir", runs, "--run-id", "boom"]);
  assert.equal(r.code, 1);
  assert.match(r.err, /error: run boom stopped: training diverged: the (loss|gradient norm) became \S+ at step 2[1-9], over 1000× its first value \S+; the last good checkpoint is step-0000020, written before it\nhint: resume with a smaller learning rate \(it was 1000\): sae resume boom --set train\.lr=100 continues from that checkpoint/);
  const dir = path.join(runs, "boom");
  assert.equal(readStatus(dir)!.status, "failed");
  assert.equal(path.basename(latestCheckpoint(dir)!), "step-0000020.json", "no checkpoint of the blown-up weights");
  // the phase's own lr follows train.lr from the phase in progress on; the run ends like one trained with it
  const again = await cli(["resume", "boom", "--runs-dir", runs, "--set", "train.lr=0.002"]);
  assert.equal(again.code, 0, again.err);
  assert.match(again.err, /resume changes the config from step 20: train\.lr: 0\.01 → 0\.002; train\.phases\.1\.lr: 1000 → 0\.002/);
  const okCfg = cfg.replace("c.yaml", "ok.yaml");
  fs.writeFileSync(okCfg, text.replace("lr: 1000", "lr: 0.002"));
  const ok = results(await trained(okCfg, runs, "boom2"));
  const got = results(dir);
  assert.deepEqual([got.weights, got.cfg, got.metrics], [ok.weights, ok.cfg, ok.metrics]);
  const { run: _a, ...ev } = json(dir, "eval.json"), { run: _b, ...evOk } = json(runs, "boom2", "eval.json");
  assert.deepEqual(ev, evOk);
  const status = readStatus(dir)!;
  assert.deepEqual(status.history!.map((h) => [h.step, h.changes ?? []]), [[0, []], [20, ["train.lr: 0.01 → 0.002", "train.phases.1.lr: 1000 → 0.002"]]]);
  assert.match(fs.readFileSync(path.join(dir, "config.yaml"), "utf8"), /lr: 0\.002/);

  // diverging before any checkpoint: the resume trains again from step 0
  const { cfg: one, runs: runs1 } = setup(SMALL.replace("lr: 0.01", "lr: 1000").replace("warmup_steps: 2", "warmup_steps: 0"));
  const b = await cli(["train", one, "--runs-dir", runs1, "--run-id", "b"]);
  assert.equal(b.code, 1);
  assert.match(b.err, /no checkpoint was written before it\nhint: resume with a smaller learning rate \(it was 1000\): sae resume b --set train\.lr=100 trains it again from step 0/);
  const b2 = await cli(["resume", "b", "--runs-dir", runs1, "--set", "train.lr=0.01"]);
  assert.equal(b2.code, 0, b2.err);
  assert.match(b2.err, /no checkpoint yet: training again from step 0/);
  assert.match(b2.err, /train\.lr: 1000 → 0\.01; train\.phases\.0\.lr: 1000 → 0\.01/);
  const fresh = await trained(one, runs1, "fresh", "train.lr=0.01");
  const [gotB, want] = [results(path.join(runs1, "b")), results(fresh)];
  assert.deepEqual([gotB.weights, gotB.metrics], [want.weights, want.metrics], "the same as a run trained with the smaller rate");
});
