// Training batches from a row store of any size, in bounded memory: a shuffle buffer.
//
// The last rows of the store (eval_tokens, rounded up to whole sequences) are held out for
// evaluation; the rest is the training split, cut into chunks of consecutive rows (a group of 64
// sequences when rows are sequences, else 65536 rows). Each epoch visits the chunks in a seeded
// random order, in groups of as many chunks as fit in the buffer: a group is read into the
// buffer, and its rows are served in a seeded random order. Memory is the buffer plus a batch,
// however big the store. Batch i is a function of (seed, i) alone, so a resumed run sees exactly
// the batches it would have seen, and two stores with the same rows give the same batches.
import { Rng } from "../rng.ts";
import { SEQ_GROUP } from "../lm/harvest.ts";
import { SaeError } from "../errors.ts";
import type { DataSource, EvalSequences, GroundTruth } from "./source.ts";
import type { RowStore } from "./store.ts";

const ROW_CHUNK = 65536;
const STREAM = { chunks: 11, rows: 12 } as const;

export interface StreamOptions {
  seed: number;
  evalTokens: number;
  bufferBytes: number;
  /** the held-out split's token ids, when the store knows them */
  evalSequences?: (first: number, count: number) => EvalSequences;
}

interface Group { epoch: number; index: number; start: number; rows: number; chunks: string; data: Float32Array; order: Int32Array }

export class StreamSource implements DataSource {
  readonly D: number;
  readonly trainRows: number;
  readonly evalRows: number;
  private readonly store: RowStore;
  private readonly seed: number;
  private readonly chunkRows: number;
  private readonly groupChunks: number;
  private readonly nChunks: number;
  private readonly opts: StreamOptions;
  private epochCache: { epoch: number; perm: Int32Array; groupStarts: number[] } | null = null;
  private group: Group | null = null;
  private batch = new Float32Array(0);

  constructor(store: RowStore, opts: StreamOptions) {
    this.store = store;
    this.opts = opts;
    this.D = store.D;
    this.seed = opts.seed;
    const seqRows = store.seqLen ?? 1;
    this.evalRows = Math.ceil(opts.evalTokens / seqRows) * seqRows;
    this.trainRows = store.rows - this.evalRows;
    if (this.trainRows < Math.max(1, store.rows / 10)) {
      throw new SaeError("config", `data.eval_tokens = ${opts.evalTokens} holds out ${this.evalRows} of the ${store.rows} rows of ${store.describe()}, leaving ${Math.max(0, this.trainRows)} to train on`, `lower data.eval_tokens (at most ${Math.floor(store.rows / 10)} leaves 90% for training)`);
    }
    const bufferRows = Math.floor(opts.bufferBytes / (4 * this.D));
    this.chunkRows = Math.max(1, Math.min(store.seqLen ? SEQ_GROUP * seqRows : ROW_CHUNK, bufferRows));
    if (bufferRows < this.chunkRows || bufferRows < 1) {
      throw new SaeError("config", `data.shuffle_buffer_mb holds ${bufferRows} rows of D = ${this.D}, fewer than one chunk of ${this.chunkRows}`, "raise data.shuffle_buffer_mb");
    }
    this.groupChunks = Math.max(1, Math.floor(bufferRows / this.chunkRows));
    this.nChunks = Math.ceil(this.trainRows / this.chunkRows);
  }

  describe(): string {
    const groupRows = Math.min(this.trainRows, this.groupChunks * this.chunkRows);
    return `${this.store.describe()}; ${this.trainRows} training rows, ${this.evalRows} held out; shuffled in groups of ${groupRows} rows (${((groupRows * this.D * 4) / 2 ** 20).toFixed(0)} MiB)`;
  }

  /** the returned array is reused by the next call (no per-step allocation of a batch) */
  trainBatch(index: number, B: number): Float32Array {
    if (this.batch.length !== B * this.D) this.batch = new Float32Array(B * this.D);
    this.rowsAt(index * B, B, this.batch);
    return this.batch;
  }

  /** the first n rows of the training stream (epoch 0's first group, mostly) */
  estimationSample(n: number): Float32Array {
    const out = new Float32Array(n * this.D);
    this.rowsAt(0, n, out);
    return out;
  }

  evalSet(n: number): Float32Array {
    const m = Math.min(n, this.evalRows);
    const out = new Float32Array(m * this.D);
    this.store.read(this.trainRows, m, out);
    this.checkFinite(out, this.trainRows, "held-out");
    return out;
  }

  /** rows [first, ...) just read into `data` must be numbers: NaN or ±Inf would train (or evaluate) to NaN */
  private checkFinite(data: Float32Array, first: number, split: string): void {
    for (let i = 0; i < data.length; i++) {
      if (!Number.isFinite(data[i])) {
        const row = first + Math.floor(i / this.D);
        throw new SaeError("data", `${this.store.describe()}: row ${row} (${split}) holds ${data[i]} at position ${i % this.D}`, "clean the activations (NaN and infinite values cannot be trained on or evaluated)");
      }
    }
  }

  evalSequences(count: number): EvalSequences | null {
    if (!this.opts.evalSequences || !this.store.seqLen) return null;
    const first = this.trainRows / this.store.seqLen;
    return this.opts.evalSequences(first, Math.min(count, this.evalRows / this.store.seqLen));
  }

  groundTruth(): GroundTruth | null {
    return null;
  }

  /** rows p, p+1, ... of the endless shuffled training stream */
  private rowsAt(p: number, n: number, out: Float32Array): void {
    const D = this.D;
    for (let j = 0; j < n; ) {
      const q = p + j, epoch = Math.floor(q / this.trainRows), within = q % this.trainRows;
      const g = this.groupAt(epoch, within);
      const upto = Math.min(n - j, g.start + g.rows - within);
      for (let t = 0; t < upto; t++) {
        const r = g.order[within - g.start + t];
        out.set(g.data.subarray(r * D, (r + 1) * D), (j + t) * D);
      }
      j += upto;
    }
  }

  private groupAt(epoch: number, within: number): Group {
    const e = this.epoch(epoch);
    let gi = 0;
    while (gi + 1 < e.groupStarts.length - 1 && e.groupStarts[gi + 1] <= within) gi++;
    if (this.group && this.group.epoch === epoch && this.group.index === gi) return this.group;
    const start = e.groupStarts[gi], rows = e.groupStarts[gi + 1] - start;
    // chunks are read in id order: the rows are shuffled anyway, and a group with the same chunks
    // as the one in memory (every epoch, when the whole training split fits) is not read again
    const ids = Array.from(e.perm.subarray(gi * this.groupChunks, Math.min(this.nChunks, (gi + 1) * this.groupChunks))).sort((a, b) => a - b);
    const chunks = ids.join(",");
    let data: Float32Array;
    if (this.group?.chunks === chunks) data = this.group.data;
    else {
      // reuse the buffer: at most one group is in memory
      data = this.group && this.group.data.length >= rows * this.D ? this.group.data : new Float32Array(rows * this.D);
      this.group = null;
      let filled = 0;
      for (const chunk of ids) {
        const first = chunk * this.chunkRows, m = Math.min(this.chunkRows, this.trainRows - first);
        const rows = data.subarray(filled * this.D, (filled + m) * this.D);
        this.store.read(first, m, rows);
        this.checkFinite(rows, first, "training");
        filled += m;
      }
    }
    const order = new Int32Array(rows);
    for (let i = 0; i < rows; i++) order[i] = i;
    shuffle(order, new Rng(this.seed, STREAM.rows, epoch, gi));
    this.group = { epoch, index: gi, start, rows, chunks, data, order };
    return this.group;
  }

  private epoch(epoch: number): { perm: Int32Array; groupStarts: number[] } {
    if (this.epochCache?.epoch === epoch) return this.epochCache;
    const perm = new Int32Array(this.nChunks);
    for (let i = 0; i < this.nChunks; i++) perm[i] = i;
    shuffle(perm, new Rng(this.seed, STREAM.chunks, epoch));
    const groupStarts = [0];
    for (let c = 0, acc = 0; c < this.nChunks; c++) {
      acc += Math.min(this.chunkRows, this.trainRows - perm[c] * this.chunkRows);
      if ((c + 1) % this.groupChunks === 0 || c === this.nChunks - 1) groupStarts.push(acc);
    }
    this.epochCache = { epoch, perm, groupStarts };
    return this.epochCache;
  }
}

function shuffle(a: Int32Array, rng: Rng): void {
  for (let i = a.length - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    const t = a[i];
    a[i] = a[j];
    a[j] = t;
  }
}
