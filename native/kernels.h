// Coarse float32 kernels for SAE training. Pure C++: no N-API here, so this file can be
// benchmarked and tested on its own. Every array is row-major; shapes use the project's letters:
// B batch rows, D input dim, H latents, K selected latents per row.
// Arguments are assumed valid: addon.cc checks every length and index before calling in.
// The sparse kernels that read rows of a matrix per entry (gather_rows, gather_rows2, gather_dot,
// scatter_rows, scatter_dot, sparse_backward) have a second overload whose row inputs are bfloat16
// (uint16_t bit patterns, bf16.h): the same loops on the widened values, float32 products, sums and
// outputs (`train.precision: bf16`, docs/engine.md#bfloat16).
#pragma once
#include <cstdint>
#include <string>

namespace sae {

void set_threads(int n);
int get_threads();
std::string blas_config();
// the kernel set OpenBLAS chose at load time (its DYNAMIC_ARCH core name, e.g. "SkylakeX")
std::string blas_core();

// C[M,N] = alpha * op(A) op(B) + beta * C, op(X) = X or Xᵀ (OpenBLAS sgemm).
void gemm(bool transA, bool transB, int M, int N, int K, float alpha, const float* A,
          const float* B, float beta, float* C);
// The same in float64 (OpenBLAS dgemm).
void gemm64(bool transA, bool transB, int M, int N, int K, double alpha, const double* A,
            const double* B, double beta, double* C);

// P[r,c] = P[r,c] + bias[c] (bias may be null), then ReLU when relu is set; when colSum is given,
// colSum[c] = Σ_r P[r,c] of the result, in the same pass.
void add_bias(float* P, const float* bias, int rows, int cols, bool relu, float* colSum);

// ReLU backward in place: G[r,c] = F[r,c] > 0 ? G[r,c] + colAdd[c] : 0 (colAdd may be null); when
// colSum is given, colSum[c] = Σ_r G[r,c] of the result, in the same pass.
void relu_backward(float* G, const float* F, const float* colAdd, int rows, int cols, float* colSum);

// out[c] = (accumulate ? out[c] : 0) + sum_r A[r,c]
void col_sum(const float* A, int rows, int cols, float* out, bool accumulate);
// the same in float64 (exact for up to 2^29 rows of equal values: a batch mean that is the value)
void col_sum64(const float* A, int rows, int cols, double* out, bool accumulate);

// Per-row top-k of S = P + bias among the columns where mask is 1 (mask may be null).
// idx[r, 0..k) = the chosen columns in ascending order; val = max(0, S) at those columns.
// Ties go to the lower column. Requires k <= number of candidate columns. With pick (npick column
// numbers in [0, cols)), also picked[r, j] = P[r, pick[j]] (no bias), read while the row is in cache.
void topk_rows(const float* P, const float* bias, const uint8_t* mask, int rows, int cols, int k,
               int32_t* idx, float* val, const int32_t* pick = nullptr, int npick = 0, float* picked = nullptr);

// Per row, the entries of S = A + bias (bias may be null) above `threshold`, up to kmax per row:
// idx/val [rows, kmax] (val = S) in column order, padded with (0, 0). Returns the largest per-row
// count; when it exceeds kmax, rows were cut short and the caller should retry with more room (or
// go dense). Once a row has more than `stop`, the scan ends early (the result then only says
// "more than stop"). With a ReLU'd A and threshold 0 these are the non-zeros.
int rows_above(const float* A, const float* bias, float threshold, int rows, int cols, int kmax,
               int32_t* idx, float* val, int stop);

// The k-th largest of a[0..n) (1 <= k <= n), exactly: two passes of 16-bit radix histograms over
// the floats' order-preserving bit patterns, threaded. No NaNs expected.
float kth_largest(const float* a, int64_t n, int64_t k);

// BatchTopK's batch cut: of per-row candidates (idx, val) [B, kc], the `total` largest positive
// values, ties to the earlier row-major position, written as a code [B, m] (m = the widest row's
// count, at least 1; zero-padded; the rows' candidate order kept) into outIdx, outVal (room for
// B·kc). packed: each row's candidates come first, all positive, then zeros. complete = false when
// a row's candidates were all at or above a positive cut (it may hold more winners than kc).
struct BatchCut {
  int m;
  int64_t positives;
  bool complete;
};
BatchCut batch_cut(const int32_t* idx, const float* val, int B, int kc, int64_t total, bool packed,
                   int32_t* outIdx, float* outVal);

// out[b,:] = (bias ? bias : 0) + sum_k val[b,k] * W[idx[b,k], :]      (sparse decode)
// (W is [H, D]; idx < H)
void gather_rows(const int32_t* idx, const float* val, int rows, int k, const float* W, int H, int D,
                 const float* bias, float* out);
void gather_rows(const int32_t* idx, const float* val, int rows, int k, const uint16_t* W, int H, int D,
                 const float* bias, float* out);

// gather_rows(idx, val, …, out) and gather_rows(idx, val2, …, out2) in one pass over the entries
void gather_rows2(const int32_t* idx, const float* val, const float* val2, int rows, int k, const float* W,
                  int H, int D, const float* bias, float* out, float* out2);
void gather_rows2(const int32_t* idx, const float* val, const float* val2, int rows, int k, const uint16_t* W,
                  int H, int D, const float* bias, float* out, float* out2);

// out[b·k + j] = A[b, idx[b·k + j]] + bias[idx[b·k + j]] in double where val[b·k + j] != 0, else 0
// (bias may be null): a dense matrix [rows, cols] read at a sparse code's entries.
void values_at(const float* A, const float* bias, int rows, int cols, const int32_t* idx,
               const float* val, int k, double* out);

// out[b,k] = G[b,:] · W[idx[b,k], :], or 0 where val[b,k] == 0 (val may be null: no skipping;
// padded sparse codes have zero values that need no dot product)
void gather_dot(const int32_t* idx, const float* val, int rows, int k, const float* G, const float* W,
                int H, int D, float* out);
void gather_dot(const int32_t* idx, const float* val, int rows, int k, const uint16_t* G, const uint16_t* W,
                int H, int D, float* out);

// The backward of a sparse code (idx, val) [rows, k] with the selection held constant, in one pass
// per latent: dW_dec[i] += val·G[b], dp = G[b]·W_dec[i] where val > 0 (else 0), gpSum[i] += dp,
// dW_enc[i] += dp·Xc[b]. The same bits as scatter_dot, the mask and scatter_rows in turn. With
// overwrite, every row of dW_dec and dW_enc is first set to 0 (the rows of latents without entries
// too), so the caller need not zero them; with rowSq [H], rowSq[i] = Σ dW_dec[i]² + Σ dW_enc[i]²
// (float64) of the rows as left, for every latent.
void sparse_backward(const int32_t* idx, const float* val, int rows, int k, const float* G,
                     const float* W, const float* Xc, int H, int D, float* dWdec, float* dWenc,
                     float* gpSum, bool overwrite = false, double* rowSq = nullptr);
void sparse_backward(const int32_t* idx, const float* val, int rows, int k, const uint16_t* G,
                     const uint16_t* W, const uint16_t* Xc, int H, int D, float* dWdec, float* dWenc,
                     float* gpSum, bool overwrite = false, double* rowSq = nullptr);

// out[idx[b,k], :] += val[b,k] * X[b,:]     (sparse weight gradient)
void scatter_rows(const int32_t* idx, const float* val, int rows, int k, const float* X, int H, int D,
                  float* out);
void scatter_rows(const int32_t* idx, const float* val, int rows, int k, const uint16_t* X, int H, int D,
                  float* out);

// scatter_rows(idx, val, rows, k, G, H, D, dW) and gather_dot(idx, sel, rows, k, G, W, H, D, out)
// in one pass (the decoder's half of a sparse backward); W and dW must not overlap
void scatter_dot(const int32_t* idx, const float* val, const float* sel, int rows, int k,
                 const float* G, const float* W, int H, int D, float* dW, float* out);
void scatter_dot(const int32_t* idx, const float* val, const float* sel, int rows, int k,
                 const uint16_t* G, const uint16_t* W, int H, int D, float* dW, float* out);

// Adam with bias correction over n contiguous parameters, on the gradient gscale·g (gscale carries
// gradient clipping, so clipping costs no extra pass over the gradients).
void adam(float* p, const float* g, float* m, float* v, int64_t n, float lr, float beta1,
          float beta2, float eps, float bc1, float bc2, float gscale);

// out[i] = ||W[i,:]||
void row_norms(const float* W, int rows, int cols, float* out);

// G[i,:] -= (G[i]·Ŵ[i]) Ŵ[i], Ŵ[i] = W[i]/||W[i]||: removes the part of a decoder-row gradient
// that would change the row's norm (the unit-norm constraint's tangent projection).
void project_rows(float* G, const float* W, int rows, int cols);

// W[i,:] /= ||W[i,:]|| (rows of norm 0 are left alone)
void normalize_rows(float* W, int rows, int cols);

// Adam for a unit-norm decoder, one row at a time: project_rows's tangent projection of the
// gradient row (g itself is not changed), adam on it, then normalize_rows: the same arithmetic as
// those three kernels in turn, in one pass over the [rows, cols] arrays instead of three. When out
// is given, out[0 .. rows·cols) = the updated p in bfloat16 (cast_bf16's rounding), in the same pass.
void adam_unit_rows(float* p, const float* g, float* m, float* v, int rows, int cols, float lr,
                    float beta1, float beta2, float eps, float bc1, float bc2, float gscale,
                    uint16_t* out = nullptr);

// sum of squares, accumulated in double
double sum_squares(const float* a, int64_t n);

// a[0, n) = 0 (streaming stores for large n)
void zero(float* a, int64_t n);

// out[i] = a·X[i] + b·Y[i mod ny] (Y null: a·X[i]), computed in double and rounded to float;
// returns the sum of the squares of the unrounded values. ny divides n (ny = n: elementwise; a
// row vector of ny = cols repeated over rows). out may be null (the sum only), X or Y.
double axpby(double a, const float* X, double b, const float* Y, int64_t ny, float* out, int64_t n);

// Causal attention of one new position over a key/value cache, float64 (the language model).
// q, out: [S, heads·hs]; kc, vc: [S, maxLen, kvHeads·hs]; positions 0..pos are attended. Query head
// h reads kv head h / (heads / kvHeads) (grouped-query attention). Threads over sequences.
void attention(const double* q, const double* kc, const double* vc, int S, int pos, int maxLen,
               int heads, int kvHeads, int hs, double* out);

}  // namespace sae
