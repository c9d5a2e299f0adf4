// Every input failure of issue 10, each by name: raw errors (TypeError, RangeError, EISDIR, ...)
// that became named ones, nonsense that used to train, environment failures that name their path
// (exit 1), and the small traps (clutter, ids, shard paths, checkpoint order).
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { cli, configIn, tinyConfig, tmpDir } from "./helpers.ts";
import { npyHeader } from "../src/io/npy.ts";
import { latestCheckpoint } from "../src/train/checkpoint.ts";
import { readStatus } from "../src/io/run.ts";

const SMALL = tinyConfig("in", 2, "  steps: 20\n");
const setup = (text = SMALL) => configIn(text, "sae-in-");

/** a config reading `file` (relative to the config's folder) */
const fileConfig = (file: string) => `data:\n  source: file\n  file: { path: ${file} }\n  eval_tokens: 16\n  norm_estimate_tokens: 64\nsae: { variant: topk, d_sae: 16, k: 2 }\ntrain: { steps: 2, batch_size: 8 }\n`;

function npy(file: string, header: Buffer, floats: Float32Array): void {
  fs.writeFileSync(file, Buffer.concat([header, Buffer.from(floats.buffer)]));
}

/** an .npy header whose dict says `shape` (any text) */
function rawHeader(shape: string): Buffer {
  return Buffer.from(npyHeader("<f4", [7, 7]).toString("latin1").replace("(7, 7)", shape), "latin1");
}

async function trainFails(dir: string, text: string, code: number, re: RegExp, label: string): Promise<void> {
  const cfg = path.join(dir, "c.yaml");
  fs.writeFileSync(cfg, text);
  const r = await cli(["train", cfg, "--runs-dir", path.join(dir, "runs")]);
  assert.equal(r.code, code, `${label}: ${r.err}`);
  assert.match(r.err, re, label);
  assert.doesNotMatch(r.err, /TypeError|RangeError|Cannot read properties|\n\s+at /, label);
  assert.ok(!fs.existsSync(path.join(dir, "runs")) || fs.readdirSync(path.join(dir, "runs")).length === 0, `${label}: no run folder is left`);
}

test("activation files that used to train nonsense or crash are refused at config time, naming the file (exit 2)", async () => {
  const dir = tmpDir("sae-in-"), D = 8, N = 200;
  const rows = (n: number) => Float32Array.from({ length: n * D }, (_, i) => Math.sin(i));
  npy(path.join(dir, "abc.npy"), rawHeader("(abc, 8)"), rows(N));
  npy(path.join(dir, "neg.npy"), rawHeader("(-5, 8)"), rows(N));
  npy(path.join(dir, "d0.npy"), npyHeader("<f4", [N, 0]), new Float32Array(0));
  npy(path.join(dir, "short.npy"), npyHeader("<f4", [N / 2, D]), rows(N)); // the header describes half the file
  const nan = rows(N);
  nan[(N - 3) * D + 5] = NaN; // in the held-out tail only
  npy(path.join(dir, "nan.npy"), npyHeader("<f4", [N, D]), nan);
  const v2 = Buffer.alloc(12);
  v2.write("\x93NUMPY", 0, "latin1");
  v2[6] = 2;
  v2.writeUInt32LE(0xfffffff0, 8); // a header "length" near 4 GB
  fs.writeFileSync(path.join(dir, "v2.npy"), v2);
  const cases: [string, RegExp][] = [
    ["abc.npy", /abc\.npy is not a valid \.npy file: its shape \(abc, 8\) is not a tuple of non-negative integers/],
    ["neg.npy", /neg\.npy is not a valid \.npy file: its shape \(-5, 8\) is not a tuple of non-negative integers/],
    ["d0.npy", /d0\.npy has shape \(200, 0\): rows of 0 values/],
    ["short.npy", /short\.npy: its header describes 100 rows of 8 float32 values \(\d+ bytes\), but the file has \d+ bytes/],
    ["nan.npy", /nan\.npy: 200 rows × 8 \(float32\): row 197 \(held-out\) holds NaN at position 5\nhint: clean the activations/],
    ["v2.npy", /v2\.npy is not a valid \.npy file: its header length is 4294967280 bytes/],
  ];
  for (const [file, re] of cases) await trainFails(dir, fileConfig(file), 2, new RegExp(`c\\.yaml:\\d+:\\d+: data\\.file\\.path: [^\\n]*${re.source}`), file);
});

test("safetensors headers and manifests that raised TypeErrors, and shard paths that left the folder, are refused by name (exit 2)", async () => {
  const dir = tmpDir("sae-in-");
  const st = (name: string, header: unknown, data = Buffer.alloc(0)) => {
    const json = Buffer.from(JSON.stringify(header));
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(json.length));
    fs.writeFileSync(path.join(dir, name), Buffer.concat([len, json, data]));
  };
  st("null.safetensors", null);
  st("nooffsets.safetensors", { acts: { dtype: "F32", shape: [4, 2] } }, Buffer.alloc(32));
  st("negative.safetensors", { acts: { dtype: "F32", shape: [4, 2], data_offsets: [-32, 0] } }, Buffer.alloc(32));
  fs.mkdirSync(path.join(dir, "ds", "sub"), { recursive: true });
  npy(path.join(dir, "x.npy"), npyHeader("<f4", [100, 8]), new Float32Array(800).fill(1));
  const manifest = (name: string, m: unknown) => fs.writeFileSync(path.join(dir, "ds", name), JSON.stringify(m));
  const shards = (file: string) => ({ format: "sae-activations", version: 1, d_in: 8, dtype: "float32", shards: [{ file, rows: 100 }] });
  manifest("null.json", null);
  manifest("dot.json", shards("."));
  manifest("folder.json", shards("sub"));
  manifest("up.json", shards("../x.npy"));
  manifest("abs.json", shards(path.join(dir, "x.npy")));
  const cases: [string, RegExp][] = [
    ["null.safetensors", /null\.safetensors is not a valid safetensors file: the JSON header is null, not an object of tensors/],
    ["nooffsets.safetensors", /nooffsets\.safetensors is not a valid safetensors file: tensor acts has data_offsets undefined; expected \[begin, end\]/],
    ["negative.safetensors", /negative\.safetensors is not a valid safetensors file: tensor acts has data_offsets \[-32,0\]/],
    ["ds/null.json", /manifest \S+null\.json: holds null, not an object/],
    ["ds/dot.json", /manifest \S+dot\.json: shards\[0\] is "\.": the folder itself, not a file in it/],
    ["ds/folder.json", /manifest \S+folder\.json: shards\[0\] is sub, which is not a file/],
    ["ds/up.json", /manifest \S+up\.json: shards\[0\] is "\.\.\/x\.npy": it points outside the dataset folder/],
    ["ds/abs.json", /manifest \S+abs\.json: shards\[0\] is "[^"]+x\.npy": an absolute path; the manifest names files inside its folder/],
  ];
  for (const [file, re] of cases) await trainFails(dir, fileConfig(file), 2, re, file);
});

test("configs: an alias bomb, a 50 MB string, batch_size 1e12 and d_sae 1e8 are refused before allocating, with what fits (exit 2)", async () => {
  const dir = tmpDir("sae-in-");
  const bomb = ["name: x", 'a: &a ["x","x","x","x","x","x","x","x","x"]'];
  for (let i = 1; i < 8; i++) bomb.push(`${"abcdefgh"[i]}: &${"abcdefgh"[i]} [${Array(9).fill(`*${"abcdefgh"[i - 1]}`).join(",")}]`);
  await trainFails(dir, bomb.join("\n") + "\n", 2, /c\.yaml: its aliases \(\*name\) expand to more than 100 copies/, "alias bomb");
  const before = process.memoryUsage().rss;
  const cfg = path.join(dir, "c.yaml");
  fs.writeFileSync(cfg, `name: "${"x".repeat(50 << 20)}"\n`);
  const r = await cli(["train", cfg, "--runs-dir", path.join(dir, "runs")]);
  assert.equal(r.code, 2);
  assert.match(r.err, /config file \S+c\.yaml is 52428\d\d\d bytes; a config is a few kB of keys/);
  assert.ok(r.err.length < 500, `the error is ${r.err.length} characters`);
  assert.ok(process.memoryUsage().rss - before < 256 * 2 ** 20, "the file is not parsed");
  fs.writeFileSync(cfg, SMALL);
  for (const [set, re] of [
    ["train.batch_size=1e12", /--set train\.batch_size=1e12: train\.batch_size: the pre-activations \[batch_size 1000000000000, d_sae 32\] would be one array of 3\.20e\+13 values; an array holds at most 4\.29e\+9\nhint: batch_size up to \S+ fits/],
    ["sae.d_sae=1e8", /--set sae\.d_sae=1e8: sae\.d_sae: the pre-activations \[batch_size 64, d_sae 100000000\] would be one array of 6\.40e\+9 values[^\n]*\nhint: d_sae up to \S+ fits/],
    ["name=" + "z".repeat(5000), /--set name=z+: name: a string of 5000 characters; config values are names and paths of at most 4096/],
  ] as const) {
    const t = await cli(["train", cfg, "--runs-dir", path.join(dir, "runs"), "--set", set]);
    assert.equal(t.code, 2, t.err);
    assert.match(t.err, re);
  }
});

test("environment failures name the path and exit 1: a full disk, a read-only or forbidden folder, a name too long, a runs dir that is a file", async () => {
  const { dir, cfg, runs } = setup();
  for (const [code, what] of [["ENOSPC", "no space left on the device"], ["EROFS", "the file system is read-only"], ["EACCES", "permission denied"]]) {
    process.env.SAE_FAULT = `${code}@config.yaml`;
    let r: Awaited<ReturnType<typeof cli>>;
    try {
      r = await cli(["train", cfg, "--runs-dir", runs, "--run-id", code]);
    } finally {
      delete process.env.SAE_FAULT;
    }
    assert.equal(r.code, 1, r.err);
    assert.match(r.err, new RegExp(`^error: cannot write \\S+/${code}/config\\.yaml: ${what} \\(${code}\\)\\nhint: `));
    assert.ok(!fs.existsSync(path.join(runs, code)), "the failed set-up leaves no folder");
  }
  const long = await cli(["train", cfg, "--runs-dir", path.join(dir, "x".repeat(300))]);
  assert.equal(long.code, 1);
  assert.match(long.err, /error: cannot create the folder \S+x{300}: the name is too long for the file system \(ENAMETOOLONG\)/);
  fs.writeFileSync(path.join(dir, "afile"), "");
  const file = await cli(["train", cfg, "--runs-dir", path.join(dir, "afile")]);
  assert.equal(file.code, 1);
  assert.match(file.err, /error: cannot create runs in \S+afile: it is a file, not a folder/);
});

test("garbled run files are named: a checkpoint .json of null, phases.json, final/cfg.json (exit 2)", async () => {
  const { cfg, runs } = setup(SMALL.replace("  steps: 20\n", "") + "  phases:\n    - { name: one, steps: 10 }\n    - { name: two, steps: 10 }\n");
  assert.equal((await cli(["train", cfg, "--runs-dir", runs, "--run-id", "a"])).code, 0);
  const dir = path.join(runs, "a");
  fs.writeFileSync(path.join(dir, "final", "cfg.json"), "{ garbled");
  for (const cmd of ["eval", "export"]) {
    const r = await cli([cmd, "a", "--runs-dir", runs, ...(cmd === "export" ? ["--out", path.join(runs, "..", "out")] : [])]);
    assert.equal(r.code, 2, r.err);
    assert.match(r.err, /final\/cfg\.json is not a SAELens cfg\.json \(a JSON object with d_in, d_sae, architecture, \.\.\.\): /, cmd);
  }
  fs.rmSync(path.join(dir, "status.json"));
  fs.writeFileSync(path.join(dir, "phases.json"), "[{");
  let r = await cli(["resume", "a", "--runs-dir", runs]);
  assert.equal(r.code, 2);
  assert.match(r.err, /phases\.json cannot be read: not valid JSON .*\nhint: move it out of the run: the resume evaluates each finished phase again/);
  fs.rmSync(path.join(dir, "phases.json"));
  fs.writeFileSync(latestCheckpoint(dir)!, "null");
  fs.rmSync(path.join(dir, "checkpoints", "step-0000010.json"));
  r = await cli(["resume", "a", "--runs-dir", runs]);
  assert.equal(r.code, 2);
  assert.match(r.err, /checkpoint \S+step-0000020\.json holds null, not a checkpoint's fields/);
});

test("clutter and traps: stale temporary files removed, an abandoned set-up's id reusable, eval of a read-only run prints first, ids, k_aux, checkpoint order", async () => {
  const { dir, cfg, runs } = setup();
  // a run killed mid-write leaves *.tmp-PID files; the next resume of the run removes them
  assert.equal((await cli(["train", cfg, "--runs-dir", runs, "--run-id", "a"])).code, 0);
  const stale = [path.join(runs, "a", "checkpoints", "step-0000010.safetensors.tmp-999999"), path.join(runs, "a", "status.json.tmp-999998")];
  for (const f of stale) fs.writeFileSync(f, "x".repeat(1000));
  fs.rmSync(path.join(runs, "a", "status.json"));
  assert.equal((await cli(["resume", "a", "--runs-dir", runs])).code, 0);
  for (const f of stale) assert.ok(!fs.existsSync(f), `${f} was removed`);

  // a set-up that failed after its folder was made: no folder left; one killed before config.yaml: the id is reusable
  process.env.SAE_FAULT = "ENOSPC@ground_truth.safetensors";
  try {
    assert.equal((await cli(["train", cfg, "--runs-dir", runs, "--run-id", "b"])).code, 1);
  } finally {
    delete process.env.SAE_FAULT;
  }
  assert.ok(!fs.existsSync(path.join(runs, "b")));
  fs.mkdirSync(path.join(runs, "c", "checkpoints"), { recursive: true });
  fs.mkdirSync(path.join(runs, "c", "final"));
  fs.writeFileSync(path.join(runs, "c", "lock"), JSON.stringify({ pid: 999999, host: (await import("node:os")).hostname(), command: "train", since: "2026-01-01T00:00:00.000Z" }));
  assert.equal((await cli(["train", cfg, "--runs-dir", runs, "--run-id", "c"])).code, 0);
  assert.equal(readStatus(path.join(runs, "c"))!.status, "done");
  // a folder with anything else in it is not taken
  fs.mkdirSync(path.join(runs, "d"));
  fs.writeFileSync(path.join(runs, "d", "notes.txt"), "mine");
  const d = await cli(["train", cfg, "--runs-dir", runs, "--run-id", "d"]);
  assert.equal(d.code, 2);
  assert.match(d.err, /run \S+d already exists/);

  // eval on a run it cannot write to: the metrics first, then the named failure
  process.env.SAE_FAULT = "EROFS@a/eval.json";
  let e: Awaited<ReturnType<typeof cli>>;
  try {
    e = await cli(["eval", "a", "--runs-dir", runs]);
  } finally {
    delete process.env.SAE_FAULT;
  }
  assert.equal(e.code, 1);
  assert.match(e.out, /^run a \(topk, D=16, H=32\), 512 held-out tokens\n  mse /);
  assert.match(e.err, /error: cannot write \S+a\/eval\.json: the file system is read-only \(EROFS\)/);

  for (const id of ["..", "...", "-x", ".hidden"]) {
    const r = await cli(["train", cfg, "--runs-dir", runs, `--run-id=${id}`]);
    assert.equal(r.code, 2, id);
    assert.match(r.err, new RegExp(`run id "${id.replace(/\./g, "\\.")}" must start with a letter, digit or '_'`), id);
  }
  // k_aux (d_in/2 by default) is checked only for the variants that read it
  const s = await cli(["train", cfg, "--runs-dir", runs, "--run-id", "std", "--set", "sae.variant=standard", "--set", "sae.d_sae=4", "--set", "train.steps=2"]);
  assert.equal(s.code, 0, s.err);
  assert.doesNotMatch(s.err, /k_aux/);
  // fine-tuning a run with every key spelled out warns about none of them
  const ft = await cli(["finetune", "a", "--runs-dir", runs, "--steps", "2", "--freeze", "encoder"]);
  assert.equal(ft.code, 0, ft.err);
  assert.doesNotMatch(ft.err, /is ignored/);

  // checkpoints are ordered by their step number, past 7 digits too
  const ck = path.join(dir, "ck");
  fs.mkdirSync(path.join(ck, "checkpoints"), { recursive: true });
  for (const n of ["step-9999999.json", "step-10000000.json", "step-0000200.json"]) fs.writeFileSync(path.join(ck, "checkpoints", n), "{}");
  assert.equal(path.basename(latestCheckpoint(ck)!), "step-10000000.json");
});
