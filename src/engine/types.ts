// The kernel interface every variant computes through. Two implementations: the native addon
// (float32, OpenBLAS, threads) and the TypeScript reference (float32 or float64: the test oracle,
// the float64 gradient checks, and the fallback when the addon is missing). Row-major arrays;
// letters: B batch rows, D input dim, H latents, K selected latents per row.

export type Arr = Float32Array | Float64Array;

export interface Engine {
  readonly name: "native" | "typescript";
  /** C[M,N] = alpha·op(A)·op(B) + beta·C; op(A) is [M,K], op(B) is [K,N]. */
  gemm(transA: boolean, transB: boolean, M: number, N: number, K: number, alpha: number, A: Arr, B: Arr, beta: number, C: Arr): void;
  /** P[r,c] += bias[c] (bias may be null), then ReLU if relu; colSum (if given) = Σ_r P[r,c] of the result. */
  addBias(P: Arr, bias: Arr | null, rows: number, cols: number, relu: boolean, colSum?: Arr | null): void;
  /** G[r,c] = F[r,c] > 0 ? G[r,c] + colAdd[c] : 0 (colAdd may be null); colSum (if given) = Σ_r G[r,c] of the result. */
  reluBackward(G: Arr, F: Arr, colAdd: Arr | null, rows: number, cols: number, colSum?: Arr | null): void;
  /** out[c] = (accumulate ? out[c] : 0) + Σ_r A[r,c], rows in order; a Float64Array out sums in float64 */
  colSum(A: Arr, rows: number, cols: number, out: Arr, accumulate: boolean): void;
  /**
   * Per-row top-k of P + bias among mask==1 columns; idx ascending, val = max(0, ·); ties to the lower column.
   * With pick (column numbers), also picked[r, j] = P[r, pick[j]] (no bias) [rows, pick.length], read while the row is in cache.
   */
  topkRows(P: Arr, bias: Arr | null, mask: Uint8Array | null, rows: number, cols: number, k: number, idx: Int32Array, val: Arr, pick?: Int32Array | null, picked?: Arr | null): void;
  /**
   * Per row, the entries of S = A + bias (bias may be null) above threshold, into idx/val
   * [rows, kmax] (val = S; column order; padded with (0, 0)). Returns the largest per-row count;
   * above kmax the rows were cut short. The scan may end early once a row has more than `stop`
   * (the result is then only known to exceed stop). A ReLU'd A with threshold 0 gives its non-zeros.
   */
  rowsAbove(A: Arr, bias: Arr | null, threshold: number, rows: number, cols: number, kmax: number, idx: Int32Array, val: Arr, stop: number): number;
  /** the k-th largest value of a (1 ≤ k ≤ a.length), exactly */
  kthLargest(a: Arr, k: number): number;
  /**
   * BatchTopK's batch cut: of per-row candidates (idx, val) [B, kc], the `total` largest positive
   * values (ties to the earlier row-major position) as a code [B, m] written to the first B·m
   * entries of outIdx, outVal (room for B·kc; each row's candidates in their order, zero-padded),
   * m the widest row's count (≥ 1). packed: each row's candidates come first, all positive, then
   * zeros. complete is false when some row's candidates were all at or above a positive cut.
   */
  batchCut(idx: Int32Array, val: Arr, B: number, kc: number, total: number, packed: boolean, outIdx: Int32Array, outVal: Arr): { m: number; positives: number; complete: boolean };
  /** out[b,:] = bias + Σ_k val[b,k]·W[idx[b,k],:]   (W is [H, D]) */
  gatherRows(idx: Int32Array, val: Arr, rows: number, k: number, W: Arr, H: number, D: number, bias: Arr | null, out: Arr): void;
  /** gatherRows(idx, val, …, out) and gatherRows(idx, val2, …, out2) on the same entries, W's rows read once */
  gatherRows2(idx: Int32Array, val: Arr, val2: Arr, rows: number, k: number, W: Arr, H: number, D: number, bias: Arr | null, out: Arr, out2: Arr): void;
  /** out[b,j] = A[b, idx[b,j]] + bias[idx[b,j]] in float64 (bias may be null), or 0 where val[b,j] = 0: a dense [rows, cols] matrix at a code's entries [rows, k] */
  valuesAt(A: Arr, bias: Arr | null, rows: number, cols: number, idx: Int32Array, val: Arr, k: number, out: Float64Array): void;
  /** out[b,k] = G[b,:]·W[idx[b,k],:], or 0 where val[b,k] = 0 (val may be null) */
  gatherDot(idx: Int32Array, val: Arr | null, rows: number, k: number, G: Arr, W: Arr, H: number, D: number, out: Arr): void;
  /** out[idx[b,k],:] += val[b,k]·X[b,:]   (out is [H, D]) */
  scatterRows(idx: Int32Array, val: Arr, rows: number, k: number, X: Arr, H: number, D: number, out: Arr): void;
  /**
   * scatterRows(idx, val, rows, k, G, H, D, dW) and gatherDot(idx, sel, rows, k, G, W, H, D, out) in
   * one pass (the decoder half of a sparse backward reads each row of G once); W and dW separate.
   */
  scatterDot(idx: Int32Array, val: Arr, sel: Arr | null, rows: number, k: number, G: Arr, W: Arr, H: number, D: number, dW: Arr, out: Arr): void;
  /**
   * A sparse code's backward with the selection held constant, in one pass per latent: dW_dec[idx]
   * += val·G, dp = G·W_dec[idx]ᵀ where val > 0 (else 0), gpSum[idx] += dp, dW_enc[idx] += dp·Xc.
   * The same bits as scatterDot(idx, val, val, …), the mask and scatterRows(idx, dp, …) in turn.
   * idx, val [rows, k]; G, Xc [rows, D]; W, dWdec, dWenc [H, D]; gpSum [H]. With overwrite, every
   * row of dWdec and dWenc is set to 0 first (the caller need not zero them); with rowSq [H],
   * rowSq[i] = Σ dWdec[i]² + Σ dWenc[i]² of the rows as left, for every latent.
   */
  sparseBackward(idx: Int32Array, val: Arr, rows: number, k: number, G: Arr, W: Arr, Xc: Arr, H: number, D: number, dWdec: Arr, dWenc: Arr, gpSum: Arr, overwrite?: boolean, rowSq?: Float64Array | null): void;
  /** One Adam step on the gradient gradScale·g, with bias corrections bc1 = 1 − β1^t, bc2 = 1 − β2^t. */
  adam(p: Arr, g: Arr, m: Arr, v: Arr, lr: number, beta1: number, beta2: number, eps: number, bc1: number, bc2: number, gradScale: number): void;
  /**
   * Adam for a unit-norm decoder W [rows, cols] in one pass: per row, what projectRows(g, W),
   * adam and normalizeRows(W) do in turn (g itself is left as it is).
   */
  adamUnitRows(p: Arr, g: Arr, m: Arr, v: Arr, rows: number, cols: number, lr: number, beta1: number, beta2: number, eps: number, bc1: number, bc2: number, gradScale: number): void;
  rowNorms(W: Arr, rows: number, cols: number, out: Arr): void;
  /** G[i] −= (G[i]·Ŵ[i])Ŵ[i]: drop the gradient component along each (unit) decoder row. */
  projectRows(G: Arr, W: Arr, rows: number, cols: number): void;
  normalizeRows(W: Arr, rows: number, cols: number): void;
  sumSquares(a: Arr): number;
  /** a[i] = 0 (the native kernel streams large arrays to memory on every thread) */
  zero(a: Arr): void;
  /**
   * out[i] = a·X[i] + b·Y[i mod Y.length] (Y null: a·X[i]), in float64 and rounded to out's type;
   * returns Σ of the squares of the unrounded values. Y.length is X.length or divides it (a row
   * repeated over the rows of X). out may be null (the sum alone), X or Y.
   */
  axpby(a: number, X: Arr, b: number, Y: Arr | null, out: Arr | null): number;
  /**
   * The language model's causal attention for one new position, float64: q, out [S, heads·hs];
   * kc, vc [S, maxLen, kvHeads·hs] key/value caches; positions 0..pos attended; query head h
   * reads kv head h / (heads / kvHeads).
   */
  attention(q: Float64Array, kc: Float64Array, vc: Float64Array, S: number, pos: number, maxLen: number, heads: number, kvHeads: number, hs: number, out: Float64Array): void;
}
