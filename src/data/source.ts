// What the trainer and the evaluator need from a data source. Batches are addressed by index so
// that a resumed run sees exactly the batches it would have seen.
import type { EvalSequences } from "../lm/harvest.ts";
export type { EvalSequences } from "../lm/harvest.ts";

export interface GroundTruth {
  /** true feature directions [G, D], unit norm */
  features: Float32Array;
  G: number;
}

export interface DataSource {
  readonly D: number;
  /** one line for the log */
  describe(): string;
  /** training batch number `index`, [B, D] raw (un-normalised); valid until the next call */
  trainBatch(index: number, B: number): Float32Array;
  /** a sample, disjoint from training batches, for the scaling factor and b_dec init */
  estimationSample(n: number): Float32Array;
  /** the held-out evaluation split: up to n rows [·, D] (fewer when the split is smaller) */
  evalSet(n: number): Float32Array;
  /** token ids of up to `count` held-out sequences, when the data knows them */
  evalSequences?(count: number): EvalSequences | null;
  groundTruth(): GroundTruth | null;
}
