// Crash consistency: a small run killed (SIGKILL, through the fault injection of src/io/atomic.ts)
// at every point where it writes a file — before each atomic rename and each metrics.csv append —
// and then resumed (or, killed before its config.yaml, started again with the same id) ends with
// the same final weights, cfg.json, eval.json, phases.json and metrics.csv (the tokens/s column
// aside) as the run that was never killed: single-phase, two-phase, and a fine-tune. No temporary
// files and no lock are left behind.
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { cli, spawnCli, tinyConfig, tmpDir } from "./helpers.ts";

const TINY = (train: string) => tinyConfig("crash", 4, "  warmup_steps: 2\n" + train);
const ONE_PHASE = TINY("  steps: 20\n");
const TWO_PHASES = TINY("  phases:\n    - { name: one, steps: 10 }\n    - { name: two, steps: 10, lr: 0.003, freeze: [encoder] }\n");

/** runs the CLI in a child process; resolves with its exit code, signal and stderr */
const sae = (args: string[], env: Record<string, string> = {}) => spawnCli(args, env).done;

/** at most `n` at once */
async function pool<T>(items: T[], n: number, fn: (x: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: n }, async () => {
    while (next < items.length) await fn(items[next++]);
  }));
}

/** what a finished run's folder must hold, byte for byte (metrics.csv without the timing column) */
function outcome(dir: string): Record<string, string> {
  const read = (f: string) => fs.readFileSync(path.join(dir, f), "utf8");
  const out: Record<string, string> = {
    "final/sae_weights.safetensors": fs.readFileSync(path.join(dir, "final", "sae_weights.safetensors")).toString("base64"),
    "final/cfg.json": read("final/cfg.json"),
    "eval.json": read("eval.json"),
    "phases.json": read("phases.json"),
    "metrics.csv": read("metrics.csv").trim().split("\n").map((l) => l.split(",").slice(0, -1).join(",")).join("\n"),
    status: JSON.parse(read("status.json")).status,
  };
  const left = listFiles(dir).filter((f) => /\.tmp-\d+$|(^|\/)lock/.test(f));
  out.leftovers = left.join(", ");
  return out;
}

function listFiles(dir: string, prefix = ""): string[] {
  return fs.readdirSync(path.join(dir, prefix), { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? listFiles(dir, path.join(prefix, e.name)) : [path.join(prefix, e.name)]));
}

/**
 * Runs `args` (which write run `id` in `runs`) once uninterrupted, counting its write points, then
 * once per point killed there and recovered; every recovered run must match the uninterrupted one.
 */
async function everyKillPoint(label: string, root: string, args: (runs: string) => string[], id: string, prepare?: (runs: string) => Promise<void>): Promise<number> {
  const refRuns = path.join(root, "ref");
  await prepare?.(refRuns);
  const ref = await sae(args(refRuns), { SAE_FAULT_TRACE: "1" });
  assert.equal(ref.code, 0, ref.err);
  const points = ref.err.split("\n").filter((l) => l.startsWith("fault point ") && l.includes(path.join(refRuns, id))).length;
  const first = Number(/fault point (\d+): [^\n]*/.exec(ref.err.split("\n").find((l) => l.includes(path.join(refRuns, id)))!)![1]);
  const expected = outcome(path.join(refRuns, id));
  assert.equal(expected.status, "done");
  assert.equal(expected.leftovers, "");
  const kills = Array.from({ length: points }, (_, i) => first + i);
  await pool(kills, 2, async (n) => {
    const runs = path.join(root, `k${n}`);
    await prepare?.(runs);
    const killed = await sae(args(runs), { SAE_FAULT: `kill@${n}` });
    assert.equal(killed.signal, "SIGKILL", `${label}, point ${n}: ${killed.err}`);
    const dir = path.join(runs, id);
    // killed before config.yaml: the id is free to start again; after it: sae resume continues
    const again = fs.existsSync(path.join(dir, "config.yaml")) ? await cli(["resume", id, "--runs-dir", runs]) : await cli(args(runs));
    assert.equal(again.code, 0, `${label}, killed at point ${n}: ${again.err}`);
    assert.deepEqual(outcome(dir), expected, `${label}, killed at point ${n}`);
  });
  return points;
}

test("killed at every write point, a single-phase and a two-phase run resume to the uninterrupted run's files", async () => {
  for (const [label, text] of [["one phase", ONE_PHASE], ["two phases", TWO_PHASES]]) {
    const root = tmpDir("sae-crash-");
    const cfg = path.join(root, "c.yaml");
    fs.writeFileSync(cfg, text);
    const points = await everyKillPoint(label, root, (runs) => ["train", cfg, "--runs-dir", runs, "--run-id", "a"], "a");
    assert.ok(points >= 17, `${label}: only ${points} write points`);
  }
});

test("killed at every write point, a fine-tune resumes to the uninterrupted fine-tune's files", async () => {
  const root = tmpDir("sae-crash-");
  const cfg = path.join(root, "c.yaml");
  fs.writeFileSync(cfg, ONE_PHASE);
  // one parent, copied into each runs folder (the fine-tune reads it, never writes it)
  const parentRuns = path.join(root, "parent");
  assert.equal((await cli(["train", cfg, "--runs-dir", parentRuns, "--run-id", "p"])).code, 0);
  const prepare = async (runs: string) => fs.cpSync(parentRuns, runs, { recursive: true });
  const points = await everyKillPoint("fine-tune", root, (runs) => ["finetune", "p", "--freeze", "encoder", "--steps", "20", "--runs-dir", runs, "--run-id", "ft"], "ft", prepare);
  assert.ok(points >= 15, `fine-tune: only ${points} write points`);
});
