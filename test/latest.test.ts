// RUN left out, `latest` and `latest~N`: finetune, eval, resume and export pick the run that began
// training last among those that fit (finished; interrupted or failed for resume), say which on
// their first line, and explain themselves when none fits. The order is the training order even
// when ids and start times cannot tell two runs apart.
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { cli, tmpDir, trainInterrupted } from "./helpers.ts";
import { acquireRunLock } from "../src/io/lock.ts";
import { loadConfig } from "../src/config/load.ts";
import { readStatus, writeStatus } from "../src/io/run.ts";

// a few steps of tiny shapes: every run here takes a fraction of a second
const TINY = `name: tiny
seed: 1
data:
  d_in: 8
  synthetic: { n_features: 12, mean_active: 2 }
  eval_tokens: 256
  norm_estimate_tokens: 256
sae:
  variant: topk
  d_sae: 16
  k: 2
train:
  steps: 4
  batch_size: 64
  warmup_steps: 1
  log_every: 2
`;

// two ids from the same second whose random tails sort against the order they train in
const FIRST = "20261125-120000-tiny-topk-ffff";
const SECOND = "20261125-120000-tiny-topk-0000";

function setup(): { runs: string; cfg: string } {
  const dir = tmpDir();
  const cfg = path.join(dir, "tiny.yaml");
  fs.writeFileSync(cfg, TINY);
  return { runs: path.join(dir, "runs"), cfg };
}

async function trainOk(cfg: string, runs: string, id: string, seed: number): Promise<void> {
  const r = await cli(["train", cfg, "--runs-dir", runs, "--run-id", id, "--set", `seed=${seed}`]);
  assert.equal(r.code, 0, r.err);
}

/** two finished runs, trained in the order FIRST, SECOND, with different weights; both start at the same millisecond as far as status.json says */
async function twoFinished(): Promise<{ runs: string; cfg: string }> {
  const s = setup();
  await trainOk(s.cfg, s.runs, FIRST, 1);
  await trainOk(s.cfg, s.runs, SECOND, 2);
  const a = readStatus(path.join(s.runs, FIRST))!, b = readStatus(path.join(s.runs, SECOND))!;
  writeStatus(path.join(s.runs, SECOND), { ...b, started: a.started, finished: a.finished });
  return s;
}

/** a run stopped after `at` of its 4 steps, as Ctrl-C leaves it */
async function interrupted(cfg: string, runs: string, id: string, at: number): Promise<void> {
  await trainInterrupted(loadConfig(cfg, [`runs_dir=${runs}`]).config, runs, id, at);
}

const firstLine = (s: string) => s.split("\n")[0];
const read = (...p: string[]) => fs.readFileSync(path.join(...p));

test("eval: RUN left out, latest, latest~1 and an id; the order is the training order within one second and one millisecond", async () => {
  const { runs } = await twoFinished();
  for (const args of [[], ["latest"]]) {
    const r = await cli(["eval", ...args, "--runs-dir", runs]);
    assert.equal(r.code, 0, r.err);
    assert.equal(firstLine(r.err), `using run ${SECOND} (the latest finished run in ${runs}/)`);
    assert.match(firstLine(r.out), new RegExp(`^run ${SECOND} `));
  }
  const back = await cli(["eval", "latest~1", "--runs-dir", runs]);
  assert.equal(back.code, 0, back.err);
  assert.equal(firstLine(back.err), `using run ${FIRST} (latest~1: the 2nd latest finished run in ${runs}/)`);
  assert.match(firstLine(back.out), new RegExp(`^run ${FIRST} `));
  const named = await cli(["eval", FIRST, "--runs-dir", runs]);
  assert.equal(named.code, 0, named.err);
  assert.equal(named.err, "", "a named run needs no note");
  assert.match(firstLine(named.out), new RegExp(`^run ${FIRST} `));

  // sae runs lists the same order, oldest first, so its last line is latest
  const ls = (await cli(["runs", "--runs-dir", runs])).out.trim().split("\n").slice(1).map((l) => l.split(/\s+/)[0]);
  assert.deepEqual(ls, [FIRST, SECOND]);

  // runs written before status.json had seq: ordered by their start time, then id
  for (const [id, started] of [[FIRST, "2026-11-25T12:00:00.500Z"], [SECOND, "2026-11-25T12:00:00.200Z"]]) {
    const { seq: _, ...old } = readStatus(path.join(runs, id))!;
    writeStatus(path.join(runs, id), { ...old, started });
  }
  const old = await cli(["eval", "--runs-dir", runs]);
  assert.equal(old.code, 0, old.err);
  assert.match(firstLine(old.err), new RegExp(`^using run ${FIRST} `));
  // a run trained now comes after all of them
  await trainOk(path.join(runs, "..", "tiny.yaml"), runs, "newer", 3);
  assert.equal(readStatus(path.join(runs, "newer"))!.seq, 1);
  assert.match(firstLine((await cli(["eval", "--runs-dir", runs])).err), /^using run newer /);
});

test("finetune --freeze encoder: RUN left out, latest~1 and an id name the parent", async () => {
  const { runs } = await twoFinished();
  const parentOf = (id: string) => loadConfig(path.join(runs, id, "config.yaml"), []).config.init_from;
  const r = await cli(["finetune", "--freeze", "encoder", "--runs-dir", runs, "--run-id", "ft-latest"]);
  assert.equal(r.code, 0, r.err);
  assert.equal(firstLine(r.err), `using run ${SECOND} (the latest finished run in ${runs}/)`);
  assert.doesNotMatch(r.err, /warning/, "the parent's spelled-out keys are not the user's");
  assert.equal(parentOf("ft-latest"), path.resolve(runs, SECOND));
  // the fine-tune is now the latest finished run, so latest~1 is SECOND and latest~2 FIRST
  const b = await cli(["finetune", "latest~2", "--freeze", "encoder", "--runs-dir", runs, "--run-id", "ft-back"]);
  assert.equal(b.code, 0, b.err);
  assert.equal(firstLine(b.err), `using run ${FIRST} (latest~2: the 3rd latest finished run in ${runs}/)`);
  assert.equal(parentOf("ft-back"), path.resolve(runs, FIRST));
  const n = await cli(["finetune", SECOND, "--freeze", "encoder", "--runs-dir", runs, "--run-id", "ft-named"]);
  assert.equal(n.code, 0, n.err);
  assert.doesNotMatch(firstLine(n.err), /using run/);
  assert.equal(parentOf("ft-named"), path.resolve(runs, SECOND));
  const latest1 = await cli(["eval", "latest~1", "--runs-dir", runs]);
  assert.match(firstLine(latest1.err), /^using run ft-back /);
});

test("export: RUN left out, latest~1 and an id write the chosen run's weights", async () => {
  const { runs } = await twoFinished();
  const out = (name: string) => path.join(runs, "..", name);
  const r = await cli(["export", "--out", out("e-latest"), "--runs-dir", runs]);
  assert.equal(r.code, 0, r.err);
  assert.equal(firstLine(r.err), `using run ${SECOND} (the latest finished run in ${runs}/)`);
  assert.equal((await cli(["export", "latest~1", "--out", out("e-back"), "--runs-dir", runs])).code, 0);
  assert.equal((await cli(["export", FIRST, "--out", out("e-first"), "--runs-dir", runs])).code, 0);
  assert.equal((await cli(["export", SECOND, "--out", out("e-second"), "--runs-dir", runs])).code, 0);
  const w = (name: string) => read(out(name), "sae_weights.safetensors");
  assert.deepEqual(w("e-latest"), w("e-second"));
  assert.deepEqual(w("e-back"), w("e-first"));
  assert.notDeepEqual(w("e-first"), w("e-second"), "the two runs have different seeds");
});

test("resume: RUN left out and latest~1 pick interrupted runs newest first; done and running runs are not candidates", async () => {
  const { runs, cfg } = setup();
  await interrupted(cfg, runs, FIRST, 2);
  await trainOk(cfg, runs, "finished", 1);
  await interrupted(cfg, runs, SECOND, 2);
  const back = await cli(["resume", "latest~1", "--runs-dir", runs]);
  assert.equal(back.code, 0, back.err);
  assert.equal(firstLine(back.err), `using run ${FIRST} (latest~1: the 2nd latest interrupted, failed or dead run in ${runs}/)`);
  assert.equal(readStatus(path.join(runs, FIRST))!.status, "done");
  assert.equal(readStatus(path.join(runs, SECOND))!.status, "interrupted");
  // the resumed run is now the latest run: sae eval takes it
  assert.match(firstLine((await cli(["eval", "--runs-dir", runs])).err), new RegExp(`^using run ${FIRST} `));

  const r = await cli(["resume", "--runs-dir", runs]);
  assert.equal(r.code, 0, r.err);
  assert.equal(firstLine(r.err), `using run ${SECOND} (the latest interrupted, failed or dead run in ${runs}/)`);
  assert.equal(readStatus(path.join(runs, SECOND))!.status, "done");
  assert.deepEqual(read(runs, SECOND, "final", "sae_weights.safetensors"), read(runs, "finished", "final", "sae_weights.safetensors"), "same seed: the resumed run is the uninterrupted one");

  const none = await cli(["resume", "--runs-dir", runs]);
  assert.equal(none.code, 2);
  assert.match(none.err, new RegExp(`none of the 3 runs in ${runs}/ is interrupted, failed or dead`));
  assert.match(none.err, new RegExp(`${SECOND}\\s+done, step 4/4`));

  await interrupted(cfg, runs, "named", 2);
  const n = await cli(["resume", "named", "--runs-dir", runs]);
  assert.equal(n.code, 0, n.err);
  assert.doesNotMatch(firstLine(n.err), /using run/);
  assert.equal(readStatus(path.join(runs, "named"))!.status, "done");
});

test("no runs: every command says so and exits 2", async () => {
  const { runs } = setup();
  for (const [cmd, what] of [["eval", "finished"], ["finetune", "finished"], ["export", "finished"], ["resume", "interrupted, failed or dead"]]) {
    const args = cmd === "export" ? ["--out", path.join(runs, "..", "x")] : cmd === "finetune" ? ["--freeze", "encoder"] : [];
    const r = await cli([cmd, ...args, "--runs-dir", runs]);
    assert.equal(r.code, 2, `${cmd}: ${r.err}`);
    assert.match(r.err, new RegExp(`^error: no runs in ${runs}/ to take the latest ${what} run from\\nhint: train one first`), cmd);
  }
  assert.ok(!fs.existsSync(runs), "nothing was created");
});

test("only a running run: no command takes it by default; the error lists it with its status", async () => {
  const { runs, cfg } = setup();
  await interrupted(cfg, runs, "busy", 2);
  // as a live training process leaves it: running, its lock held by a live process (this one)
  writeStatus(path.join(runs, "busy"), { ...readStatus(path.join(runs, "busy"))!, status: "running" });
  const lock = acquireRunLock(path.join(runs, "busy"), "train", () => {});
  for (const [cmd, what] of [["eval", "finished"], ["finetune", "finished"], ["export", "finished"], ["resume", "interrupted, failed or dead"]]) {
    const args = cmd === "export" ? ["--out", path.join(runs, "..", "x")] : cmd === "finetune" ? ["--freeze", "encoder"] : [];
    const r = await cli([cmd, ...args, "--runs-dir", runs]);
    assert.equal(r.code, 2, `${cmd}: ${r.err}`);
    assert.match(r.err, new RegExp(`the only run in ${runs}/ is not ${what} \\(RUN left out means the latest ${what} run\\); the latest runs:\\n  busy  running, step 2/4\\n`), cmd);
  }
  const l = await cli(["eval", "latest", "--runs-dir", runs]);
  assert.match(l.err, /\(latest means the latest finished run\)/);
  assert.deepEqual(fs.readdirSync(runs), ["busy"], "no fine-tune run was started");
  // killed without a chance to save: the lock's holder is gone, and resume takes the run
  lock.release();
  assert.match((await cli(["runs", "--runs-dir", runs])).out, /^busy\s+topk\s+dead\s+2\/4/m);
  const r = await cli(["resume", "--runs-dir", runs]);
  assert.equal(r.code, 0, r.err);
  assert.match(r.err, /^using run busy \(the latest interrupted, failed or dead run/);
});

test("latest~N past the oldest lists the candidates by their latest~N names; `latest` is not a run id", async () => {
  const { runs, cfg } = await twoFinished();
  const r = await cli(["eval", "latest~2", "--runs-dir", runs]);
  assert.equal(r.code, 2);
  assert.match(r.err, new RegExp(`latest~2 is the 3rd latest finished run, but ${runs}/ holds 2:\\n  latest    ${SECOND}  done, step 4/4\\n  latest~1  ${FIRST}  done, step 4/4\\nhint: latest~1 is the oldest`));
  const t = await cli(["train", cfg, "--runs-dir", runs, "--run-id", "latest"]);
  assert.equal(t.code, 2);
  assert.match(t.err, /run id "latest" is reserved/);
});

test("--help of each command that takes RUN shows the form without it first", async () => {
  for (const [cmd, first] of [["eval", "sae eval "], ["finetune", "sae finetune --freeze encoder "], ["resume", "sae resume "], ["export", "sae export --out "]]) {
    const h = await cli([cmd, "--help"]);
    assert.equal(h.code, 0);
    assert.match(h.out, new RegExp(`^Usage: sae ${cmd} \\[options\\] \\[run\\]`));
    const examples = h.out.split("Examples:\n")[1].split("\n");
    assert.ok(examples[0].trim().startsWith(first.trim()) && !/\d{8}/.test(examples[0]), `${cmd}: first example is ${examples[0]}`);
  }
});
