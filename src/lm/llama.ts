// A Llama-2-architecture language model in llama2.c's checkpoint format (Karpathy's llama2.c,
// run.c), run on the engine's GEMMs. Format (docs/formats.md#llama2c-checkpoints): seven little-endian int32
// (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len), then float32 weights:
// token embedding [V, dim], rms_att [L, dim], wq [L, dim, dim], wk [L, kv, dim], wv [L, kv, dim],
// wo [L, dim, dim], rms_ffn [L, dim], w1 [L, hidden, dim], w2 [L, dim, hidden], w3 [L, hidden, dim],
// rms_final [dim], two legacy RoPE tables (skipped), and the classifier [V, dim] only when the
// header's vocab_size is negative (otherwise the embedding is shared). Matrices are [out, in].
//
// The forward pass advances S sequences one position at a time with a key/value cache, as run.c
// does for one: per position the projections are [S, ·] GEMMs, attention is per sequence and head.
// It computes in float64: run.c's float32 sums and OpenBLAS's sgemm round differently, and over
// five layers the two drifted 1.1e-4 apart in a log-probability; in float64 the gap to run.c is
// run.c's own rounding (≤ 7e-5 on the reference files). The models are tiny, so this costs little.
// Hooks see (and may overwrite) an activation [S, dim] at a layer and site, in TransformerLens
// names: resid_pre (the residual stream entering block L), attn_out, mlp_out (a block's two
// additions to it) and resid_post (leaving block L).
import fs from "node:fs";
import type { Engine } from "../engine/types.ts";
import { SaeError } from "../errors.ts";

import { SITES } from "../config/schema.ts";

export { SITES };
export type Site = (typeof SITES)[number];

export interface LlamaConfig {
  dim: number;
  hidden: number;
  layers: number;
  heads: number;
  kvHeads: number;
  vocab: number;
  seqLen: number;
}

interface LayerWeights {
  rmsAtt: Float64Array; wq: Float64Array; wk: Float64Array; wv: Float64Array; wo: Float64Array;
  rmsFfn: Float64Array; w1: Float64Array; w2: Float64Array; w3: Float64Array;
}

export interface LlamaModel {
  file: string;
  config: LlamaConfig;
  embedding: Float64Array;
  layers: LayerWeights[];
  rmsFinal: Float64Array;
  classifier: Float64Array;
}

export const BOS = 1;

/**
 * A checkpoint's header, checked against the file's size, without reading the weights (config
 * validation needs only this). floats: the number of float32 values after the header.
 */
export function llamaHeader(file: string): { config: LlamaConfig; sharedClassifier: boolean; floats: number } {
  let fd: number;
  try {
    fd = fs.openSync(file, "r");
  } catch (err) {
    throw new SaeError("data", `cannot read model checkpoint ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, "give the path of a llama2.c .bin checkpoint");
  }
  const head = Buffer.alloc(28);
  let got: number, size: number;
  try {
    got = fs.readSync(fd, head, 0, 28, 0);
    size = fs.fstatSync(fd).size;
  } finally {
    fs.closeSync(fd);
  }
  const bad = (what: string) => new SaeError("data", `${file} is not a llama2.c checkpoint: ${what}`, "the format is seven int32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len) then float32 weights");
  if (got < 28) throw bad(`${size} bytes, shorter than the 28-byte header`);
  const h = Array.from({ length: 7 }, (_, i) => head.readInt32LE(4 * i));
  const [dim, hidden, layers, heads, kvHeads, vocabSigned, seqLen] = h;
  const vocab = Math.abs(vocabSigned);
  if (h.some((v, i) => (i === 5 ? v === 0 : v <= 0)) || h.some((v) => Math.abs(v) > 1 << 20)) throw bad(`implausible header ${JSON.stringify(h)}`);
  if (dim % heads !== 0 || heads % kvHeads !== 0 || (dim / heads) % 2 !== 0) throw bad(`dim ${dim}, n_heads ${heads}, n_kv_heads ${kvHeads} do not divide (head size must be even)`);
  const kv = (dim / heads) * kvHeads;
  const sizes = [vocab * dim, layers * dim, layers * dim * dim, layers * kv * dim, layers * kv * dim, layers * dim * dim, layers * dim, layers * hidden * dim, layers * dim * hidden, layers * hidden * dim, dim, seqLen * (dim / heads)];
  const floats = sizes.reduce((a, b) => a + b, 0) + (vocabSigned < 0 ? vocab * dim : 0);
  if (size !== 28 + 4 * floats) throw bad(`the header promises ${28 + 4 * floats} bytes, the file has ${size} (truncated or a different format)`);
  return { config: { dim, hidden, layers, heads, kvHeads, vocab, seqLen }, sharedClassifier: vocabSigned > 0, floats };
}

export function loadLlama(file: string): LlamaModel {
  const { config, sharedClassifier, floats } = llamaHeader(file);
  const { dim, hidden, layers, heads, kvHeads, vocab, seqLen } = config;
  const kv = (dim / heads) * kvHeads, headSize = dim / heads;
  const buf = fs.readFileSync(file);
  const f32 = new Float32Array(floats);
  Buffer.from(f32.buffer).set(buf.subarray(28));
  const all = Float64Array.from(f32);
  let off = 0;
  const take = (n: number) => all.subarray(off, (off += n));
  const embedding = take(vocab * dim);
  const rmsAtt = take(layers * dim), wq = take(layers * dim * dim), wk = take(layers * kv * dim), wv = take(layers * kv * dim);
  const wo = take(layers * dim * dim), rmsFfn = take(layers * dim), w1 = take(layers * hidden * dim), w2 = take(layers * dim * hidden);
  const w3 = take(layers * hidden * dim), rmsFinal = take(dim);
  take(seqLen * headSize); // the two legacy RoPE tables
  const classifier = sharedClassifier ? embedding : take(vocab * dim);
  const slice = (a: Float64Array, l: number, n: number) => a.subarray(l * n, (l + 1) * n);
  return {
    file,
    config,
    embedding,
    layers: Array.from({ length: layers }, (_, l) => ({
      rmsAtt: slice(rmsAtt, l, dim), wq: slice(wq, l, dim * dim), wk: slice(wk, l, kv * dim), wv: slice(wv, l, kv * dim), wo: slice(wo, l, dim * dim),
      rmsFfn: slice(rmsFfn, l, dim), w1: slice(w1, l, hidden * dim), w2: slice(w2, l, dim * hidden), w3: slice(w3, l, hidden * dim),
    })),
    rmsFinal,
    classifier,
  };
}

/** Called with the activation [S, dim] (float32) at a hooked site for position `pos`. */
export type Hook = (act: Float32Array, pos: number) => void;

/** writes: the hook overwrites the activation, and the forward pass continues from its values */
export interface HookPoint { layer: number; site: Site; fn: Hook; writes?: boolean }

/**
 * S sequences advanced together, one position per `step`. The key/value cache holds `maxLen`
 * positions: [L][S, maxLen, kv].
 */
export class LlamaBatch {
  readonly S: number;
  private readonly m: LlamaModel;
  private readonly e: Engine;
  private readonly hooks: HookPoint[];
  private readonly maxLen: number;
  private readonly kCache: Float64Array[];
  private readonly vCache: Float64Array[];
  // per-step scratch, [S, ·]
  private readonly x: Float64Array; private readonly xb: Float64Array; private readonly q: Float64Array;
  private readonly k: Float64Array; private readonly v: Float64Array; private readonly att: Float64Array;
  private readonly o: Float64Array; private readonly h1: Float64Array; private readonly h3: Float64Array;
  /** what hooks see, [S, dim] */
  private readonly act32: Float32Array;
  readonly logits: Float64Array;

  constructor(m: LlamaModel, e: Engine, S: number, maxLen: number, hooks: HookPoint[] = []) {
    const { dim, hidden, layers, heads, kvHeads, vocab, seqLen } = m.config;
    if (maxLen > seqLen) throw new SaeError("config", `sequences of ${maxLen} positions are longer than ${m.file}'s context of ${seqLen}`, `use at most ${seqLen} positions`);
    this.m = m; this.e = e; this.S = S; this.maxLen = maxLen; this.hooks = hooks;
    const kv = (dim / heads) * kvHeads;
    const f = (n: number) => new Float64Array(n);
    this.kCache = Array.from({ length: layers }, () => f(S * maxLen * kv));
    this.vCache = Array.from({ length: layers }, () => f(S * maxLen * kv));
    this.x = f(S * dim); this.xb = f(S * dim); this.q = f(S * dim); this.k = f(S * kv); this.v = f(S * kv); this.att = f(S * dim);
    this.o = f(S * dim); this.h1 = f(S * hidden); this.h3 = f(S * hidden);
    this.act32 = new Float32Array(S * dim);
    this.logits = f(S * vocab);
  }

  /** Feeds tokens [S] at position pos (0-based; positions must come in order from 0); returns logits [S, V]. */
  step(tokens: Int32Array, pos: number): Float64Array {
    const { m, e, S, x, xb, q, k, v, o, h1, h3 } = this;
    const { dim, hidden, heads, kvHeads, vocab } = m.config;
    const kv = (dim / heads) * kvHeads;
    if (pos >= this.maxLen) throw new RangeError(`position ${pos} is past the cache of ${this.maxLen}`);
    for (let s = 0; s < S; s++) {
      const t = tokens[s];
      if (!(t >= 0 && t < vocab)) throw new SaeError("data", `token id ${t} is outside the vocabulary 0..${vocab - 1} of ${m.file}`, "the token file belongs to another tokenizer");
      x.set(m.embedding.subarray(t * dim, (t + 1) * dim), s * dim);
    }
    for (let l = 0; l < m.layers.length; l++) {
      const w = m.layers[l];
      this.hook(l, "resid_pre", x, pos);
      rmsnorm(xb, x, w.rmsAtt, S, dim);
      e.gemm(false, true, S, dim, dim, 1, xb, w.wq, 0, q);
      e.gemm(false, true, S, kv, dim, 1, xb, w.wk, 0, k);
      e.gemm(false, true, S, kv, dim, 1, xb, w.wv, 0, v);
      rope(q, S, dim, dim / heads, pos);
      rope(k, S, kv, dim / heads, pos);
      const kc = this.kCache[l], vc = this.vCache[l];
      for (let s = 0; s < S; s++) {
        kc.set(k.subarray(s * kv, (s + 1) * kv), (s * this.maxLen + pos) * kv);
        vc.set(v.subarray(s * kv, (s + 1) * kv), (s * this.maxLen + pos) * kv);
      }
      e.attention(q, this.kCache[l], this.vCache[l], S, pos, this.maxLen, heads, kvHeads, dim / heads, this.att);
      e.gemm(false, true, S, dim, dim, 1, this.att, w.wo, 0, o);
      this.hook(l, "attn_out", o, pos);
      for (let i = 0; i < S * dim; i++) x[i] += o[i];
      rmsnorm(xb, x, w.rmsFfn, S, dim);
      e.gemm(false, true, S, hidden, dim, 1, xb, w.w1, 0, h1);
      e.gemm(false, true, S, hidden, dim, 1, xb, w.w3, 0, h3);
      for (let i = 0; i < S * hidden; i++) {
        const a = h1[i];
        h1[i] = (a / (1 + Math.exp(-a))) * h3[i]; // SwiGLU: silu(w1 x) ⊙ w3 x
      }
      e.gemm(false, true, S, dim, hidden, 1, h1, w.w2, 0, o);
      this.hook(l, "mlp_out", o, pos);
      for (let i = 0; i < S * dim; i++) x[i] += o[i];
      this.hook(l, "resid_post", x, pos);
    }
    rmsnorm(xb, x, m.rmsFinal, S, dim);
    e.gemm(false, true, S, vocab, dim, 1, xb, m.classifier, 0, this.logits);
    return this.logits;
  }

  private hook(layer: number, site: Site, act: Float64Array, pos: number): void {
    for (const h of this.hooks) {
      if (h.layer !== layer || h.site !== site) continue;
      this.act32.set(act);
      h.fn(this.act32, pos);
      if (h.writes) act.set(this.act32);
    }
  }
}


/** out[s] = x[s] / √(mean(x[s]²) + 1e-5) ⊙ w   (RMSNorm, eps as in llama2.c) */
function rmsnorm(out: Float64Array, x: Float64Array, w: Float64Array, S: number, dim: number): void {
  for (let s = 0; s < S; s++) {
    let ss = 0;
    for (let i = 0; i < dim; i++) ss += x[s * dim + i] ** 2;
    const r = 1 / Math.sqrt(ss / dim + 1e-5);
    for (let i = 0; i < dim; i++) out[s * dim + i] = w[i] * (r * x[s * dim + i]);
  }
}

/** RoPE on adjacent pairs (i, i+1), angle pos·10000^(−(i mod hs)/hs), over `width` columns of each row */
function rope(a: Float64Array, S: number, width: number, hs: number, pos: number): void {
  for (let i = 0; i < width; i += 2) {
    const angle = pos * Math.pow(10000, -(i % hs) / hs);
    const c = Math.cos(angle), sn = Math.sin(angle);
    for (let s = 0; s < S; s++) {
      const j = s * width + i, a0 = a[j], a1 = a[j + 1];
      a[j] = a0 * c - a1 * sn;
      a[j + 1] = a0 * sn + a1 * c;
    }
  }
}
