// Fuzzing every reader of user files: .npy, .safetensors, activation manifests, llama2.c
// checkpoints, llama2.c tokenizers and YAML configs. A seeded generator mutates a valid file
// (bytes flipped, cut, inserted; header fields replaced by hostile values) thousands of times per
// reader; each mutant must either read as a well-formed result or be refused with a SaeError that
// names the file — never another exception (TypeError, RangeError, a raw fs error), and never an
// allocation that runs away (resident memory is bounded; the test's timeout bounds a hang).
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { Rng } from "../src/rng.ts";
import { SaeError } from "../src/errors.ts";
import { npyHeader, readNpyHeader } from "../src/io/npy.ts";
import { readSafetensors, writeSafetensors } from "../src/io/safetensors.ts";
import { openManifest, openNpy, openSafetensors } from "../src/data/store.ts";
import { llamaHeader, loadLlama } from "../src/lm/llama.ts";
import { Tokenizer } from "../src/lm/tokenizer.ts";
import { loadConfig } from "../src/config/load.ts";
import { tmpDir } from "./helpers.ts";

const MUTANTS = 2000;
/** resident memory a reader may add (the valid files are a few kB; a mutant claiming gigabytes must be refused before it allocates) */
const RSS_BOUND = 512 * 2 ** 20;

/** values a hostile header field takes */
const HOSTILE: unknown[] = [null, -1, 0, 1, 2 ** 31, 2 ** 53, 1e300, -1e300, 0.5, "x", "", "../x.npy", "/etc/passwd", ".", [], [1], [-1, 2], [0, 1e20], {}, true, "NaN"];

function mutateBytes(rng: Rng, src: Uint8Array): Uint8Array {
  const b = Buffer.from(src);
  switch (rng.int(5)) {
    case 0: { // flip bits, mostly near the start (headers)
      const n = 1 + rng.int(4);
      for (let i = 0; i < n; i++) b[rng.int(Math.min(b.length, rng.int(2) ? 128 : b.length))] ^= 1 << rng.int(8);
      return b;
    }
    case 1: return b.subarray(0, rng.int(b.length)); // cut short
    case 2: { // insert junk
      const at = rng.int(b.length), junk = Buffer.from(Array.from({ length: 1 + rng.int(16) }, () => rng.int(256)));
      return Buffer.concat([b.subarray(0, at), junk, b.subarray(at)]);
    }
    case 3: { // overwrite a 4-byte integer (a length or a count) with an extreme value
      const at = 4 * rng.int(Math.max(1, Math.floor(Math.min(b.length, 64) / 4)));
      if (at + 4 <= b.length) b.writeUInt32LE([0, 1, 0x7fffffff, 0xffffffff, 0x80000000, rng.u32()][rng.int(6)], at);
      return b;
    }
    default: return Buffer.concat([b, Buffer.from(Array.from({ length: 1 + rng.int(64) }, () => rng.int(256)))]); // grown
  }
}

/** replaces one field somewhere in a JSON value with a hostile one (or deletes it) */
function mutateJson(rng: Rng, v: unknown): unknown {
  if (rng.int(8) === 0) return HOSTILE[rng.int(HOSTILE.length)];
  if (!v || typeof v !== "object") return rng.int(2) ? HOSTILE[rng.int(HOSTILE.length)] : v;
  const c: Record<string, unknown> = Array.isArray(v) ? [...v] as unknown as Record<string, unknown> : { ...(v as Record<string, unknown>) };
  const keys = Object.keys(c);
  if (keys.length === 0) return HOSTILE[rng.int(HOSTILE.length)];
  const k = keys[rng.int(keys.length)];
  if (rng.int(6) === 0 && !Array.isArray(v)) delete c[k];
  else c[k] = mutateJson(rng, c[k]);
  return c;
}

/**
 * Runs `read` on MUTANTS mutants of a valid file written by `write`; each must succeed or throw a
 * SaeError naming `named` (the file). Returns how many were read and how many refused.
 */
function fuzz(name: string, seed: number, write: (rng: Rng, i: number) => string, read: (file: string) => void, named: (file: string) => string = (f) => f): { read: number; refused: number } {
  const rss0 = process.memoryUsage().rss;
  let ok = 0, refused = 0;
  const rng = new Rng(seed);
  for (let i = 0; i < MUTANTS; i++) {
    const file = write(rng, i);
    try {
      read(file);
      ok++;
    } catch (err) {
      const what = `${name} mutant ${i}: ${(err as Error)?.stack ?? err}`;
      assert.ok(err instanceof SaeError, `not a SaeError: ${what}`);
      assert.ok(err.message.includes(named(file)), `the message does not name ${named(file)}: ${what}`);
      refused++;
    }
    const grew = process.memoryUsage().rss - rss0;
    assert.ok(grew < RSS_BOUND, `${name} mutant ${i}: resident memory grew by ${(grew / 2 ** 20).toFixed(0)} MiB`);
  }
  return { read: ok, refused };
}

const dir = tmpDir("sae-fuzz-");

test(".npy: mutated headers and data are read or refused by name", { timeout: 120_000 }, (t) => {
  const D = 4, N = 8, valid = Buffer.concat([npyHeader("<f4", [N, D]), Buffer.from(new Float32Array(N * D).fill(0.5).buffer)]);
  const file = path.join(dir, "a.npy");
  const dicts = ["(abc, 4)", "(-5, 4)", "(8, 0)", "(0, 4)", "()", "(8,)", "(99999999999999999999, 4)", "(2, 2, 2, 4)", "(8, 4L)", "(8, 4", "8, 4"];
  const r = fuzz("npy", 1, (rng) => {
    let b: Uint8Array = valid;
    if (rng.int(3) === 0) {
      const text = valid.toString("latin1").replace("(8, 4)", dicts[rng.int(dicts.length)]);
      b = Buffer.from(text, "latin1");
    }
    fs.writeFileSync(file, rng.int(4) ? mutateBytes(rng, b) : b);
    return file;
  }, (f) => {
    const h = readNpyHeader(f);
    assert.ok(h.shape.every((x) => Number.isSafeInteger(x) && x >= 0), `shape ${h.shape}`);
    const store = openNpy(f);
    assert.ok(store.rows >= 1 && store.D >= 1);
    const out = new Float32Array(Math.min(store.rows, 4) * store.D);
    store.read(0, Math.min(store.rows, 4), out);
    store.close();
  });
  t.diagnostic(`${r.read} read, ${r.refused} refused`);
  assert.ok(r.refused > MUTANTS / 4 && r.read > 10, `${r.read} read, ${r.refused} refused`);
});

test(".safetensors: mutated headers (JSON fields, lengths) and data are read or refused by name", { timeout: 120_000 }, (t) => {
  const file = path.join(dir, "a.safetensors");
  writeSafetensors(file, { acts: { dtype: "F32", shape: [8, 4], data: new Float32Array(32).fill(1) }, other: { dtype: "F64", shape: [3], data: new Float64Array(3) } }, { note: "x" });
  const valid = fs.readFileSync(file);
  const hlen = Number(valid.readBigUInt64LE(0));
  const header = JSON.parse(valid.subarray(8, 8 + hlen).toString());
  const r = fuzz("safetensors", 2, (rng) => {
    let b: Uint8Array;
    if (rng.int(2)) {
      const json = Buffer.from(JSON.stringify(mutateJson(rng, header)) ?? "null");
      const len = Buffer.alloc(8);
      len.writeBigUInt64LE(BigInt(rng.int(8) ? json.length : rng.u32() * 4096));
      b = Buffer.concat([len, json, valid.subarray(8 + hlen)]);
    } else b = mutateBytes(rng, valid);
    fs.writeFileSync(file, b);
    return file;
  }, (f) => {
    const { tensors } = readSafetensors(f);
    for (const tt of Object.values(tensors)) assert.equal(tt.data.length, tt.shape.reduce((a, x) => a * x, 1));
    const store = openSafetensors(f, "acts");
    const out = new Float32Array(store.rows * store.D);
    store.read(0, store.rows, out);
    store.close();
  });
  t.diagnostic(`${r.read} read, ${r.refused} refused`);
  assert.ok(r.refused > MUTANTS / 4 && r.read > 10, `${r.read} read, ${r.refused} refused`);
});

test("activation manifests: mutated fields (shard paths outside the folder, folders, counts) are read or refused by name", { timeout: 120_000 }, (t) => {
  const ds = path.join(dir, "ds");
  fs.mkdirSync(path.join(ds, "sub"), { recursive: true });
  const shard = Buffer.concat([npyHeader("<f4", [8, 4]), Buffer.from(new Float32Array(32).fill(0.25).buffer)]);
  fs.writeFileSync(path.join(ds, "s0.npy"), shard);
  fs.writeFileSync(path.join(ds, "s1.npy"), shard);
  fs.writeFileSync(path.join(dir, "outside.npy"), shard); // ../outside.npy exists: it must still be refused
  const valid = { format: "sae-activations", version: 1, d_in: 4, dtype: "float32", seq_len: 8, shards: [{ file: "s0.npy", rows: 8 }, { file: "s1.npy", rows: 8 }], rows: 16 };
  const file = path.join(ds, "manifest.json");
  const names = ["..", "../outside.npy", path.join(dir, "outside.npy"), ".", "sub", "", "s0.npy/..", "./s1.npy", "sub/../s0.npy"];
  const r = fuzz("manifest", 3, (rng) => {
    let m = mutateJson(rng, valid) as Record<string, unknown>;
    if (rng.int(3) === 0 && m && typeof m === "object" && Array.isArray(m.shards) && m.shards[0] && typeof m.shards[0] === "object") m = { ...m, shards: [{ ...(m.shards[0] as object), file: names[rng.int(names.length)] }] };
    const text = JSON.stringify(m) ?? "null";
    fs.writeFileSync(file, rng.int(5) ? text : mutateBytes(rng, Buffer.from(text)));
    return file;
  }, (f) => {
    const store = openManifest(f);
    const out = new Float32Array(store.rows * store.D);
    store.read(0, store.rows, out);
    store.close?.();
  });
  t.diagnostic(`${r.read} read, ${r.refused} refused`);
  assert.ok(r.refused > MUTANTS / 4 && r.read > 10, `${r.read} read, ${r.refused} refused`);
});

test("llama2.c checkpoints: mutated headers and sizes are loaded or refused by name", { timeout: 120_000 }, (t) => {
  // dim 8, hidden 16, 1 layer, 2 heads, 2 kv heads, vocab 10, seq_len 4: the float count as llama.ts lays it out
  const [dim, hidden, layers, heads, kv, vocab, seqLen] = [8, 16, 1, 2, 2, 10, 4];
  const kvDim = (dim / heads) * kv;
  const floats = vocab * dim + layers * (2 * dim + 2 * dim * dim + 2 * kvDim * dim + 3 * hidden * dim) + dim + seqLen * (dim / heads);
  const head = Buffer.alloc(28);
  [dim, hidden, layers, heads, kv, vocab, seqLen].forEach((v, i) => head.writeInt32LE(v, 4 * i));
  const valid = Buffer.concat([head, Buffer.from(new Float32Array(floats).fill(0.01).buffer)]);
  assert.equal(llamaHeader(writeTo(path.join(dir, "ok.bin"), valid)).floats, floats, "the seed file is valid");
  const file = path.join(dir, "m.bin");
  const r = fuzz("llama2.c", 4, (rng) => {
    const b = Buffer.from(valid);
    if (rng.int(2)) b.writeInt32LE([0, -1, 1, 3, 7, 1 << 20, -(1 << 20), 0x7fffffff, -0x80000000, rng.u32() | 0][rng.int(10)], 4 * rng.int(7));
    return writeTo(file, rng.int(3) ? b : mutateBytes(rng, b));
  }, (f) => {
    const m = loadLlama(f);
    assert.equal(m.embedding.length, m.config.vocab * m.config.dim);
  });
  t.diagnostic(`${r.read} read, ${r.refused} refused`);
  assert.ok(r.refused > MUTANTS / 4 && r.read > 10, `${r.read} read, ${r.refused} refused`);
});

test("llama2.c tokenizers: mutated lengths and pieces are read or refused by name", { timeout: 120_000 }, (t) => {
  const pieces = ["<unk>", "<s>", "</s>", "\u2581the", "a", "<0x0A>", "b", "c", "d", "e"];
  const parts = [Buffer.alloc(4)];
  parts[0].writeInt32LE(8, 0);
  for (const p of pieces) {
    const rec = Buffer.alloc(8);
    rec.writeFloatLE(0, 0);
    rec.writeInt32LE(Buffer.byteLength(p), 4);
    parts.push(rec, Buffer.from(p));
  }
  const valid = Buffer.concat(parts);
  const file = path.join(dir, "tok.bin");
  const r = fuzz("tokenizer", 5, (rng) => writeTo(file, mutateBytes(rng, valid)), (f) => {
    const tok = new Tokenizer(f, pieces.length);
    assert.equal(typeof tok.decode([1, 3, 4, 5, 9, 42]), "string");
  });
  t.diagnostic(`${r.read} read, ${r.refused} refused`);
  assert.ok(r.refused > MUTANTS / 10 && r.read > 10, `${r.read} read, ${r.refused} refused`);
});

test("YAML configs: mutated text (keys, values, indentation, aliases) is loaded or refused naming the file", { timeout: 120_000 }, (t) => {
  const valid = fs.readFileSync("configs/quickstart.yaml", "utf8");
  const file = path.join(dir, "c.yaml");
  const junk = [": ", "\n  ", "- ", "&a ", "*a ", "[", "]", "{", "}", "'", "\"", "#", "1e12", "-1", "null", "~", "!!binary ", "0x10", ".inf", "<<: *a", "\t", "k: ", "sae", "train", "phases: [", "é", "\u0000"];
  const r = fuzz("config", 6, (rng) => {
    let s = valid;
    for (let n = 1 + rng.int(3); n > 0; n--) {
      const at = rng.int(s.length);
      const k = rng.int(3);
      s = k === 0 ? s.slice(0, at) + junk[rng.int(junk.length)] + s.slice(at) : k === 1 ? s.slice(0, at) + s.slice(at + 1 + rng.int(8)) : s.replace(/: [^\n#]+/g, (m) => (rng.int(6) === 0 ? `: ${String(HOSTILE[rng.int(HOSTILE.length)] ?? "null")}` : m));
    }
    return writeTo(file, Buffer.from(s));
  }, (f) => void loadConfig(f));
  t.diagnostic(`${r.read} read, ${r.refused} refused`);
  assert.ok(r.refused > MUTANTS / 4 && r.read > 10, `${r.read} read, ${r.refused} refused`);
});

function writeTo(file: string, b: Uint8Array): string {
  fs.writeFileSync(file, b);
  return file;
}
