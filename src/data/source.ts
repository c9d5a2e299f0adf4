// What the trainer and the evaluator need from a data source. Batches are addressed by index so
// that a resumed run sees exactly the batches it would have seen.
export interface GroundTruth {
  /** true feature directions [G, D], unit norm */
  features: Float32Array;
  G: number;
}

export interface DataSource {
  readonly D: number;
  /** one line for the log */
  describe(): string;
  /** training batch number `index`, [B, D] raw (un-normalised) */
  trainBatch(index: number, B: number): Float32Array;
  /** a sample, disjoint from training batches, for the scaling factor and b_dec init */
  estimationSample(n: number): Float32Array;
  /** the held-out evaluation split [N, D] */
  evalSet(n: number): Float32Array;
  groundTruth(): GroundTruth | null;
}
