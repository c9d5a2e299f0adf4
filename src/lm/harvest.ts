// Harvesting activations from a language model: token sequences (sampled by the model itself from
// BOS with a seeded generator, or read from a token file) run through the forward pass, and the
// activation at one layer and site is kept for every position. Sequences are processed in groups
// of SEQ_GROUP (always full, so that each sequence's numbers never depend on which others share
// its group); sequence i depends only on (seed, i). The same groups serve `sae harvest` (shards on
// disk) and data.source: model (on the fly), so the two give the same rows bit for bit.
import fs from "node:fs";
import path from "node:path";
import type { Engine } from "../engine/types.ts";
import { Rng } from "../rng.ts";
import { SaeError } from "../errors.ts";
import { BOS, LlamaBatch, type LlamaModel, type Site } from "./llama.ts";
import { openOrExplain, readNpyHeader, npyHeader, writeNpy } from "../io/npy.ts";
import type { Manifest, RowStore } from "../io/activations.ts";
import { writeAtomicWith, writeFileAtomic } from "../io/atomic.ts";

/** sequences the model advances together; harvesting, the shuffle buffer's chunks and the downstream pass all group by it */
export const SEQ_GROUP = 64;

/** Token ids of held-out sequences [count, P], for the downstream (language-model) evaluation. */
export interface EvalSequences { ids: Int32Array; count: number; P: number }

const SAMPLE_STREAM = 21;

/** Token sequences [count, P] from a file. */
export interface TokenSet { file: string; count: number; P: number; ids: Int32Array }

export interface HarvestSpec {
  model: LlamaModel;
  engine: Engine;
  layer: number;
  site: Site;
  /** positions per sequence */
  P: number;
  seed: number;
  temperature: number;
  /** fixed sequences instead of sampling */
  tokens: TokenSet | null;
}

/** the sequence length of a 2-D .npy token file, else null (flat files are cut to any length) */
export function tokenRowLength(file: string): number | null {
  if (!file.endsWith(".npy") || !fs.existsSync(file)) return null;
  const h = readNpyHeader(file);
  return h.shape.length === 2 ? h.shape[1] : null;
}

/** tokens per sequence: context_size when given, else the model's context or a token file's shorter rows */
export function sequenceLength(contextSize: number | undefined, modelSeqLen: number, tokens: string | undefined): number {
  return contextSize ?? Math.min(modelSeqLen, (tokens && tokenRowLength(tokens)) || modelSeqLen);
}

/**
 * Token files: .npy of integers (int32, int64, uint16, uint32), 2-D [sequences, positions] or 1-D
 * (cut into sequences of P), or a raw .bin of uint16 ids (llama2.c's pretokenized shards), cut into P.
 */
export function readTokens(file: string, P: number, vocab: number): TokenSet {
  fs.closeSync(openOrExplain(file)); // a missing file gets the same message as every data file
  let ids: Int32Array, rowLen = P;
  if (file.endsWith(".npy")) {
    const h = readNpyHeader(file);
    const readers: Record<string, (b: Buffer) => Int32Array> = {
      i4: (b) => new Int32Array(b.buffer, b.byteOffset, b.length / 4).slice(),
      u2: (b) => Int32Array.from(new Uint16Array(b.buffer, b.byteOffset, b.length / 2)),
      u4: (b) => Int32Array.from(new Uint32Array(b.buffer, b.byteOffset, b.length / 4)),
      i8: (b) => Int32Array.from(new BigInt64Array(b.buffer, b.byteOffset, b.length / 8), Number),
    };
    const reader = readers[h.kind];
    if (!reader) throw new SaeError("data", `${file}: token ids have dtype ${h.kind}; expected int32, int64, uint16 or uint32`, "save the ids as integers");
    if (h.shape.length !== 1 && h.shape.length !== 2) throw new SaeError("data", `${file}: token ids have shape (${h.shape.join(", ")}); expected [sequences, positions] or a flat list`);
    const n = h.shape.reduce((a, b) => a * b, 1), buf = fs.readFileSync(file);
    if (buf.length < h.offset + n * h.itemBytes) throw new SaeError("data", `${file} is truncated: ${n} ids need ${h.offset + n * h.itemBytes} bytes, the file has ${buf.length}`);
    // copy into an aligned buffer before viewing it as wider integers
    ids = reader(Buffer.from(buf.subarray(h.offset, h.offset + n * h.itemBytes)));
    if (h.shape.length === 2) rowLen = h.shape[1];
  } else {
    const buf = fs.readFileSync(file);
    if (buf.length % 2 !== 0) throw new SaeError("data", `${file}: a raw token file holds uint16 ids, but it has an odd number of bytes (${buf.length})`, "use .npy for other layouts");
    ids = Int32Array.from(new Uint16Array(Buffer.from(buf).buffer, 0, buf.length / 2));
  }
  if (rowLen < P) throw new SaeError("config", `${file} has sequences of ${rowLen} tokens, fewer than data.model.context_size = ${P}`, `set data.model.context_size to at most ${rowLen}`);
  const count = Math.floor(ids.length / rowLen);
  if (count === 0) throw new SaeError("data", `${file} holds ${ids.length} tokens, less than one sequence of ${P}`);
  const out = new Int32Array(count * P);
  for (let s = 0; s < count; s++) {
    for (let t = 0; t < P; t++) {
      const v = ids[s * rowLen + t];
      if (!(v >= 0 && v < vocab)) throw new SaeError("data", `${file}: token id ${v} (sequence ${s}, position ${t}) is outside the model's vocabulary 0..${vocab - 1}`, "the token file belongs to another tokenizer");
      out[s * P + t] = v;
    }
  }
  return { file, count, P, ids: out };
}

/** Sequences [g·SEQ_GROUP, (g+1)·SEQ_GROUP): tokens [SEQ_GROUP, P] and activations [SEQ_GROUP, P, dim]. */
export function harvestGroup(spec: HarvestSpec, g: number): { tokens: Int32Array; acts: Float32Array } {
  const { model, P } = spec;
  const S = SEQ_GROUP, dim = model.config.dim, V = model.config.vocab;
  const tokens = new Int32Array(S * P);
  const acts = new Float32Array(S * P * dim);
  const lm = new LlamaBatch(model, spec.engine, S, P, [{
    layer: spec.layer, site: spec.site,
    fn: (act, pos) => { for (let s = 0; s < S; s++) acts.set(act.subarray(s * dim, (s + 1) * dim), (s * P + pos) * dim); },
  }]);
  const rngs = spec.tokens ? null : Array.from({ length: S }, (_, s) => new Rng(spec.seed, SAMPLE_STREAM, g * S + s));
  const cur = new Int32Array(S);
  const weights = new Float64Array(V); // sampling scratch
  for (let s = 0; s < S; s++) {
    // a token file shorter than the group repeats its last sequence (only padding; never used)
    tokens[s * P] = spec.tokens ? spec.tokens.ids[Math.min(g * S + s, spec.tokens.count - 1) * P] : BOS;
  }
  for (let pos = 0; pos < P; pos++) {
    for (let s = 0; s < S; s++) cur[s] = tokens[s * P + pos];
    const logits = lm.step(cur, pos);
    if (pos + 1 === P) break;
    for (let s = 0; s < S; s++) {
      tokens[s * P + pos + 1] = spec.tokens ? spec.tokens.ids[Math.min(g * S + s, spec.tokens.count - 1) * P + pos + 1] : sample(logits, s, V, spec.temperature, rngs![s], weights);
    }
  }
  return { tokens, acts };
}

/** a token from softmax(logits/temperature) (argmax at temperature 0) */
function sample(logits: Float64Array, row: number, V: number, temperature: number, rng: Rng, weights: Float64Array): number {
  const o = row * V;
  let best = 0;
  for (let i = 1; i < V; i++) if (logits[o + i] > logits[o + best]) best = i;
  if (temperature === 0) return best;
  const max = logits[o + best];
  let sum = 0;
  for (let i = 0; i < V; i++) sum += weights[i] = Math.exp((logits[o + i] - max) / temperature);
  let u = rng.next() * sum;
  for (let i = 0; i < V; i++) {
    u -= weights[i];
    if (u <= 0) return i;
  }
  return V - 1;
}

/** Activations generated on demand: rows are sequences × positions (BOS position included). */
export class HarvestStore implements RowStore {
  readonly rows: number;
  readonly D: number;
  readonly seqLen: number;
  readonly startsWithBos: boolean;
  readonly sequences: number;
  private readonly spec: HarvestSpec;
  private cache: { g: number; tokens: Int32Array; acts: Float32Array } | null = null;
  /** every harvested group's token ids ([SEQ_GROUP × P] int32, small beside its activations), so
   * that asking for tokens after the rows (sae features, sae eval) does not run the model again */
  private tokens = new Map<number, Int32Array>();
  /** how many times a group went through the model (what reading costs) */
  harvests = 0;

  constructor(spec: HarvestSpec, sequences: number) {
    this.spec = spec;
    this.sequences = sequences;
    this.D = spec.model.config.dim;
    this.seqLen = spec.P;
    this.rows = sequences * spec.P;
    this.startsWithBos = spec.tokens ? allStartWithBos(spec.tokens) : true;
  }

  describe(): string {
    const s = this.spec;
    return `${path.basename(s.model.file)} layer ${s.layer} ${s.site}, harvested on the fly: ${this.sequences} sequences of ${s.P} tokens ${s.tokens ? `from ${s.tokens.file}` : `sampled at temperature ${s.temperature}`}`;
  }

  private group(g: number): { tokens: Int32Array; acts: Float32Array } {
    if (this.cache?.g !== g) {
      this.cache = { g, ...harvestGroup(this.spec, g) };
      this.harvests++;
      this.tokens.set(g, this.cache.tokens);
    }
    return this.cache;
  }

  read(start: number, n: number, out: Float32Array): void {
    const per = SEQ_GROUP * this.seqLen, D = this.D;
    for (let done = 0; done < n; ) {
      const r = start + done, g = Math.floor(r / per), off = r % per, m = Math.min(n - done, per - off);
      out.set(this.group(g).acts.subarray(off * D, (off + m) * D), done * D);
      done += m;
    }
  }

  /** token ids of sequences [first, first + count) */
  sequenceTokens(first: number, count: number): EvalSequences {
    const P = this.seqLen, ids = new Int32Array(count * P);
    for (let s = 0; s < count; s++) {
      const i = first + s, g = Math.floor(i / SEQ_GROUP);
      ids.set((this.tokens.get(g) ?? this.group(g).tokens).subarray((i % SEQ_GROUP) * P, (i % SEQ_GROUP + 1) * P), s * P);
    }
    return { ids, count, P };
  }
}

export function allStartWithBos(t: TokenSet): boolean {
  for (let s = 0; s < t.count; s++) if (t.ids[s * t.P] !== BOS) return false;
  return true;
}

/**
 * Writes `sequences` sequences as .npy shards of about shardRows rows (whole groups of sequences),
 * tokens.npy and manifest.json (last, so a folder without a manifest is visibly incomplete).
 */
export function harvestToDisk(spec: HarvestSpec, sequences: number, outDir: string, shardRows: number, source: Record<string, unknown>, progress: (done: number) => void): Manifest {
  fs.mkdirSync(outDir, { recursive: true });
  const D = spec.model.config.dim, P = spec.P;
  const groupsPerShard = Math.max(1, Math.round(shardRows / (SEQ_GROUP * P)));
  const shards: Manifest["shards"] = [];
  const allTokens = new Int32Array(sequences * P);
  const nGroups = Math.ceil(sequences / SEQ_GROUP);
  for (let g0 = 0; g0 < nGroups; g0 += groupsPerShard) {
    const name = `acts-${String(shards.length).padStart(5, "0")}.npy`;
    const seqs = Math.min(sequences, (g0 + groupsPerShard) * SEQ_GROUP) - g0 * SEQ_GROUP;
    writeAtomicWith(path.join(outDir, name), (fd) => {
      fs.writeSync(fd, npyHeader("<f4", [seqs * P, D]));
      for (let g = g0; g < Math.min(nGroups, g0 + groupsPerShard); g++) {
        const { tokens, acts } = harvestGroup(spec, g);
        const keep = Math.min(SEQ_GROUP, sequences - g * SEQ_GROUP);
        const a = acts.subarray(0, keep * P * D);
        fs.writeSync(fd, new Uint8Array(a.buffer, a.byteOffset, a.byteLength));
        allTokens.set(tokens.subarray(0, keep * P), g * SEQ_GROUP * P);
        progress(g * SEQ_GROUP + keep);
      }
    });
    shards.push({ file: name, rows: seqs * P });
  }
  writeNpy(path.join(outDir, "tokens.npy"), allTokens, [sequences, P]);
  const manifest: Manifest = {
    format: "sae-activations", version: 1, d_in: D, dtype: "float32", seq_len: P,
    starts_with_bos: spec.tokens ? allStartWithBos(spec.tokens) : true, shards, rows: sequences * P, tokens: "tokens.npy", source,
  };
  writeFileAtomic(path.join(outDir, "manifest.json"), JSON.stringify(manifest, null, 2) + "\n");
  return manifest;
}
