// The on-disk activation formats' types, shared by their readers (src/data) and the writer
// (src/lm harvest): docs/formats.md#activation-files.

export type FileDtype = "float32" | "float16" | "bfloat16";

export interface RowStore {
  readonly rows: number;
  readonly D: number;
  /** rows per sequence when the rows are whole sequences in order, else null */
  readonly seqLen: number | null;
  /** position 0 of every sequence is the BOS token */
  readonly startsWithBos: boolean;
  /** rows [start, start + n) into out[0 .. n·D) */
  read(start: number, n: number, out: Float32Array): void;
  describe(): string;
  close?(): void;
}

/** manifest.json of a sharded activation folder */
export interface Manifest {
  format: "sae-activations";
  version: 1;
  d_in: number;
  dtype: FileDtype;
  seq_len?: number;
  starts_with_bos?: boolean;
  shards: { file: string; rows: number }[];
  rows?: number;
  tokens?: string;
  source?: Record<string, unknown>;
}
