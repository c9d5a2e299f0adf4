// Float32 kernels behind the addon. See kernels.h for the contract of each one.
// Threads: a small std::thread fan-out per call (kernels are coarse: one call per step piece, so
// thread start-up, ~20 µs, is noise). OpenBLAS keeps its own pthread pool; we never mix in OpenMP,
// whose spinning workers fight OpenBLAS's on small core counts (docs/engine.md#threads).
#include "kernels.h"
#include "parallel.h"

#include <cblas.h>
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <cmath>
#include <functional>
#include <thread>
#include <vector>

namespace sae {

static int g_threads = std::max(1u, std::thread::hardware_concurrency());

void set_threads(int n) {
  g_threads = std::max(1, n);
  openblas_set_num_threads(g_threads);
}
int get_threads() { return g_threads; }
std::string blas_config() { return std::string(openblas_get_config()); }
std::string blas_core() { return std::string(openblas_get_corename()); }

// Dot product with an explicit SIMD reduction: without it (and without -ffast-math, which we
// refuse) GCC keeps the float sum in order and scalar, about 8x slower.
static inline float dot(const float* a, const float* b, int n) {
  float s = 0.f;
#pragma omp simd reduction(+ : s)
  for (int i = 0; i < n; i++) s += a[i] * b[i];
  return s;
}

// A row element as float: float32 as is, bfloat16 (its bits, uint16_t) widened exactly (a shift;
// the loops that read it still vectorise)
static inline float widen(float x) { return x; }
static inline float widen(uint16_t h) {
  const uint32_t u = (uint32_t)h << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// dot() over rows of float32 or bfloat16 values (T = float: the same loop as dot)
template <typename T>
static inline float dot_t(const T* a, const T* b, int n) {
  float s = 0.f;
#pragma omp simd reduction(+ : s)
  for (int i = 0; i < n; i++) s += widen(a[i]) * widen(b[i]);
  return s;
}

static inline double sumsq(const float* a, int64_t n) {
  double s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; i++) s += (double)a[i] * a[i];
  return s;
}

// Bit j set where a[j] + b[j] > t (above16) or >= t (atLeast16), j in [0, 16): a branch-free
// test, so that scans which rarely find anything (top-k past its first entries, thresholded rows)
// skip whole blocks. Intrinsics where the compiler has them: GCC 12 kept the plain loop scalar
// (16 compares and ORs per block), which made these scans compute-bound. NaN never passes, as in
// the scalar form.
#if defined(__AVX512F__)
static inline uint32_t cmp16(const float* a, const float* b, float t, bool orEqual) {
  const __m512 x = _mm512_add_ps(_mm512_loadu_ps(a), _mm512_loadu_ps(b)), tt = _mm512_set1_ps(t);
  return orEqual ? _mm512_cmp_ps_mask(x, tt, _CMP_GE_OQ) : _mm512_cmp_ps_mask(x, tt, _CMP_GT_OQ);
}
#elif defined(__AVX__)
static inline uint32_t cmp16(const float* a, const float* b, float t, bool orEqual) {
  const __m256 tt = _mm256_set1_ps(t);
  const __m256 x0 = _mm256_add_ps(_mm256_loadu_ps(a), _mm256_loadu_ps(b));
  const __m256 x1 = _mm256_add_ps(_mm256_loadu_ps(a + 8), _mm256_loadu_ps(b + 8));
  const __m256 c0 = orEqual ? _mm256_cmp_ps(x0, tt, _CMP_GE_OQ) : _mm256_cmp_ps(x0, tt, _CMP_GT_OQ);
  const __m256 c1 = orEqual ? _mm256_cmp_ps(x1, tt, _CMP_GE_OQ) : _mm256_cmp_ps(x1, tt, _CMP_GT_OQ);
  return (uint32_t)_mm256_movemask_ps(c0) | ((uint32_t)_mm256_movemask_ps(c1) << 8);
}
#else
static inline uint32_t cmp16(const float* a, const float* b, float t, bool orEqual) {
  uint32_t bits = 0;
  for (int j = 0; j < 16; j++) {
    const float x = a[j] + b[j];
    bits |= (uint32_t)(orEqual ? x >= t : x > t) << j;
  }
  return bits;
}
#endif
// acc[j] = max(acc[j], a[j] + b[j]), j in [0, 16) (the plain loop stayed scalar: vmaxss)
static inline void max16(float* acc, const float* a, const float* b) {
#if defined(__AVX512F__)
  const __m512 m = _mm512_loadu_ps(acc);  // masked max: see group_max
  _mm512_storeu_ps(acc, _mm512_mask_max_ps(m, (__mmask16)0xFFFF, _mm512_add_ps(_mm512_loadu_ps(a), _mm512_loadu_ps(b)), m));
#elif defined(__AVX__)
  for (int h = 0; h < 16; h += 8)
    _mm256_storeu_ps(acc + h, _mm256_max_ps(_mm256_add_ps(_mm256_loadu_ps(a + h), _mm256_loadu_ps(b + h)), _mm256_loadu_ps(acc + h)));
#else
  for (int j = 0; j < 16; j++) acc[j] = std::max(acc[j], a[j] + b[j]);
#endif
}
static inline bool any_above16(const float* a, const float* b, float t) { return cmp16(a, b, t, false) != 0; }

void gemm(bool transA, bool transB, int M, int N, int K, float alpha, const float* A,
          const float* B, float beta, float* C) {
  if (M == 0 || N == 0) return;
  // a row or column vector for A or B: OpenBLAS's sgemv, on both threads, reads the matrix at
  // twice the speed of its sgemm at M = 1 (W_enc's 50 MB for the pre-encoder bias: 2.8 against
  // 5.9 ms). A vector's layout is the same transposed or not.
  // (β = 0 ignores what C holds, NaN included: C is zeroed first, as sgemv's β = 0 need not)
  if ((M == 1 || N == 1) && K > 0 && beta == 0.f) std::fill(C, C + (int64_t)M * N, 0.f);
  if (M == 1 && K > 0) {
    if (transB) cblas_sgemv(CblasRowMajor, CblasNoTrans, N, K, alpha, B, K, A, 1, beta, C, 1);
    else cblas_sgemv(CblasRowMajor, CblasTrans, K, N, alpha, B, N, A, 1, beta, C, 1);
    return;
  }
  if (N == 1 && K > 0) {
    if (transA) cblas_sgemv(CblasRowMajor, CblasTrans, K, M, alpha, A, M, B, 1, beta, C, 1);
    else cblas_sgemv(CblasRowMajor, CblasNoTrans, M, K, alpha, A, K, B, 1, beta, C, 1);
    return;
  }
  cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
              M, N, K, alpha, A, transA ? M : K, B, transB ? K : N, beta, C, N);
}

void gemm64(bool transA, bool transB, int M, int N, int K, double alpha, const double* A,
            const double* B, double beta, double* C) {
  if (M == 0 || N == 0) return;
  cblas_dgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
              M, N, K, alpha, A, transA ? M : K, B, transB ? K : N, beta, C, N);
}

// Rows split across threads, each keeping partial column sums, added in thread order at the end
// (deterministic for a given thread count). fn(r, sums) processes row r and adds into sums.
template <typename Fn>
static void rows_with_colsum(int rows, int cols, float* colSum, Fn fn) {
  int nt = std::max(1, std::min(g_threads, rows / 16));
  std::vector<std::vector<float>> part(nt, std::vector<float>(cols, 0.f));
  int64_t chunk = (rows + nt - 1) / nt;
  parallel_for(nt, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; t++)
      for (int64_t r = t * chunk; r < std::min<int64_t>(rows, (t + 1) * chunk); r++) fn(r, part[t].data());
  });
  for (int c = 0; c < cols; c++) colSum[c] = 0.f;
  for (auto& p : part)
    for (int c = 0; c < cols; c++) colSum[c] += p[c];
}

void add_bias(float* P, const float* bias, int rows, int cols, bool relu, float* colSum) {
  if (colSum) {
    rows_with_colsum(rows, cols, colSum, [&](int64_t r, float* __restrict sums) {
      float* __restrict p = P + r * cols;
      for (int c = 0; c < cols; c++) {
        float v = p[c] + (bias ? bias[c] : 0.f);
        if (relu) v = v > 0.f ? v : 0.f;
        p[c] = v;
        sums[c] += v;
      }
    });
    return;
  }
  parallel_for(rows, 16, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
      float* p = P + r * cols;
      if (bias) for (int c = 0; c < cols; c++) p[c] += bias[c];
      if (relu) for (int c = 0; c < cols; c++) p[c] = p[c] > 0.f ? p[c] : 0.f;
    }
  });
}

void relu_backward(float* G, const float* F, const float* colAdd, int rows, int cols, float* colSum) {
  if (colSum) {
    // Written so that it vectorises: restrict pointers, the addition done unconditionally and a
    // select (not a branch) for the mask. A branch on the sign of F, which is random for a dense
    // code, ran 14x slower (296 ms against 21 ms at 4096 x 16384).
    rows_with_colsum(rows, cols, colSum, [&](int64_t r, float* __restrict sums) {
      float* __restrict g = G + r * cols;
      const float* __restrict f = F + r * cols;
      if (colAdd) {
        const float* __restrict a = colAdd;
        for (int c = 0; c < cols; c++) {
          const float x = g[c] + a[c];
          const float v = f[c] > 0.f ? x : 0.f;
          g[c] = v;
          sums[c] += v;
        }
      } else {
        for (int c = 0; c < cols; c++) {
          const float v = f[c] > 0.f ? g[c] : 0.f;
          g[c] = v;
          sums[c] += v;
        }
      }
    });
    return;
  }
  parallel_for(rows, 16, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
      float* g = G + r * cols;
      const float* f = F + r * cols;
      if (colAdd) {
        for (int c = 0; c < cols; c++) g[c] = f[c] > 0.f ? g[c] + colAdd[c] : 0.f;
      } else {
        for (int c = 0; c < cols; c++) g[c] = f[c] > 0.f ? g[c] : 0.f;
      }
    }
  });
}

template <typename Out>
static void col_sum_into(const float* A, int rows, int cols, Out* out, bool accumulate) {
  // Threads split columns so each output element has one writer; rows are summed in order,
  // which keeps the result independent of the thread count.
  parallel_for(cols, 256, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; c++) if (!accumulate) out[c] = 0;
    for (int r = 0; r < rows; r++) {
      const float* a = A + (int64_t)r * cols;
      for (int64_t c = c0; c < c1; c++) out[c] += (Out)a[c];
    }
  });
}

void col_sum(const float* A, int rows, int cols, float* out, bool accumulate) {
  col_sum_into(A, rows, cols, out, accumulate);
}

void col_sum64(const float* A, int rows, int cols, double* out, bool accumulate) {
  col_sum_into(A, rows, cols, out, accumulate);
}

// Min-heap on "worse": smaller value, or equal value and larger column.
static inline bool worse(float va, int ia, float vb, int ib) {
  return va < vb || (va == vb && ia > ib);
}

static void sift_down(float* hv, int* hi, int k, int pos) {
  for (;;) {
    int l = 2 * pos + 1, r = l + 1, w = pos;
    if (l < k && worse(hv[l], hi[l], hv[w], hi[w])) w = l;
    if (r < k && worse(hv[r], hi[r], hv[w], hi[w])) w = r;
    if (w == pos) return;
    std::swap(hv[pos], hv[w]);
    std::swap(hi[pos], hi[w]);
    pos = w;
  }
}

#if defined(__AVX512F__)
// topk_row_by_groups' first scan for nv = NV: acc[16q + j] = max over v ≡ q (mod NV), v < the
// returned block count, of p + b at column 16v + j. Same operand order as max16 (a NaN sum loses).
template <int NV>
static int group_max(const float* p, const float* b, int blocks, float* acc) {
  __m512 a[NV];
  for (int q = 0; q < NV; q++) a[q] = _mm512_loadu_ps(acc + 16 * q);
  int v = 0;
  for (; v + NV <= blocks; v += NV)
    for (int q = 0; q < NV; q++)
      // the masked form with every lane set: _mm512_max_ps's undefined pass-through operand made
      // GCC 12 warn (-Wmaybe-uninitialized) once per instantiation
      a[q] = _mm512_mask_max_ps(a[q], (__mmask16)0xFFFF, _mm512_add_ps(_mm512_loadu_ps(p + 16 * (v + q)), _mm512_loadu_ps(b + 16 * (v + q))), a[q]);
  for (int q = 0; q < NV; q++) _mm512_storeu_ps(acc + 16 * q, a[q]);
  return v;
}
#endif

// The rank of v[i] among v[0, n): how many entries come before it when sorted by larger value
// first, ties by lower position; the ranks of n distinct-or-tied non-NaN values are 0 .. n − 1.
// Branch-free (the inner loop vectorises): n² compares, cheaper than a sort's mispredicted
// branches up to a few hundred values (kRankedCandidates); above, the top-k sorts or selects.
static inline int rank_in(const float* v, int n, int i) {
  const float x = v[i];
  int r = 0;
  for (int j = 0; j < n; j++) r += (v[j] > x) + (j < i && v[j] == x);
  return r;
}
// The k-th largest of v[0, n) counting ties, among its non-NaN values (+∞ when fewer than k): the
// least v[i] that fewer than k values exceed. n² compares like rank_in, but with no tie term the
// inner loop is one compare and add per lane (rank_in's position test kept GCC 12 from unrolling
// it: the 128 group maxima of a k = 32 row cost 1.5–3.5 µs, a third of the row's time)
static inline float kth_largest_small(const float* v, int n, int k) {
  float t = INFINITY;
  for (int i = 0; i < n; i++) {
    const float x = v[i];
    int above = 0;
#pragma omp simd reduction(+ : above)
    for (int j = 0; j < n; j++) above += v[j] > x;
    if (above < k && x < t) t = x;  // a NaN x fails x < t
  }
  return t;
}
// above this many values (maxima or candidates) the top-k selects or sorts instead of counting or
// ranking (n² grows)
constexpr int kRankedCandidates = 256;

// One row's top-k of s = p + b without a heap, for small k and no mask: the columns are split
// into G >= k groups and t = the k-th largest group maximum. At least k entries are >= t, so the
// row's k best are all >= t, and so is every entry tied with the k-th best: the candidates
// {s >= t} (a few more than k on real data) hold the exact answer, found by two vectorised scans
// and a ranking of the candidates (a sort when there are many). The groups are strided (group q·16 + j holds the columns
// 16·(q + nv·i) + j, the tail's columns one group each) so that the maxima are nv vector
// accumulators without horizontal reductions. 2.3x faster than the heap at 16384 columns, k = 32,
// whose scalar replacements (k·ln(cols/k) per row) dominated. Returns false (nothing written) when
// fewer than k candidates came out (NaNs); the caller then takes the heap. next: the following
// row, or null: the second scan, which reads this row from the L2, asks for it meanwhile (the first
// scan of a row waited on its loads, the other phases did not overlap them: 0.9x the top-k's time,
// a 2048 × 16384 block out of cache, 2 Xeon cores)
static bool topk_row_by_groups(const float* p, const float* b, int cols, int k, int nv,
                               std::vector<float>& maxima, std::vector<std::pair<float, int>>& cand,
                               int32_t* idx, float* val, const float* next) {
  const int blocks = cols / 16, tail = cols - 16 * blocks;
  maxima.assign(16 * nv + tail, -INFINITY);
  float* __restrict acc = maxima.data();
  int v = 0;
#if defined(__AVX512F__)
  // the nv accumulators in registers (through memory they cost a load and a store per block)
  switch (nv) {
    case 1: v = group_max<1>(p, b, blocks, acc); break;
    case 2: v = group_max<2>(p, b, blocks, acc); break;
    case 3: v = group_max<3>(p, b, blocks, acc); break;
    case 4: v = group_max<4>(p, b, blocks, acc); break;
    case 5: v = group_max<5>(p, b, blocks, acc); break;
    case 6: v = group_max<6>(p, b, blocks, acc); break;
    case 7: v = group_max<7>(p, b, blocks, acc); break;
    case 8: v = group_max<8>(p, b, blocks, acc); break;
    default: break;
  }
#endif
  for (; v + nv <= blocks; v += nv)
    for (int q = 0; q < nv; q++) max16(acc + 16 * q, p + 16 * (v + q), b + 16 * (v + q));
  for (int q = 0; v < blocks; v++, q++)
    for (int j = 0; j < 16; j++) acc[16 * q + j] = std::max(acc[16 * q + j], p[16 * v + j] + b[16 * v + j]);
  for (int j = 0; j < tail; j++) acc[16 * nv + j] = p[16 * blocks + j] + b[16 * blocks + j];
  // t = the k-th largest maximum, found by counting for up to kRankedCandidates maxima (k ≤ 60):
  // std::nth_element's data-dependent branches mispredicted on every few of them and cost as much
  // as a scan of the row (k = 32); for larger k the n² compares would cost more
  float t = NAN;
  const int ng = (int)maxima.size();
  if (ng <= kRankedCandidates) {
    t = kth_largest_small(acc, ng, k);
  } else {
    // in place: the maxima are not read again (a copy was an allocation per row)
    std::nth_element(maxima.begin(), maxima.begin() + (k - 1), maxima.end(), std::greater<float>());
    t = maxima[k - 1];
  }
  // NaN sums (in the tail): no well-defined cut; the heap decides. (Counting skips NaN maxima, and
  // gives +∞ when fewer than k are left: the candidates then come out fewer than k, below.)
  if (!(t == t)) return false;
  cand.clear();
  int c = 0;
#if defined(__AVX512F__)
  // the candidates compressed out of each block of 16 into a scratch row (rarely any: ~k + a few
  // per row), so that the scan's loop holds no vector growth and keeps its registers
  {
    thread_local std::vector<float> cv;
    thread_local std::vector<int32_t> ci;
    // 16 spare entries: each take stores a whole vector (below)
    if ((int)cv.size() < cols + 16) cv.resize(cols + 16), ci.resize(cols + 16);
    const __m512 tt = _mm512_set1_ps(t);
    const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    int nc = 0;
    auto mask = [&](int c0) { return _mm512_cmp_ps_mask(_mm512_add_ps(_mm512_loadu_ps(p + c0), _mm512_loadu_ps(b + c0)), tt, _CMP_GE_OQ); };
    // the rare blocks with candidates: sums recomputed, so the scan keeps nothing across its test.
    // Compressed in a register, then stored whole: the compress-to-memory form is microcoded on
    // AMD Zen 4 (a few hundred cycles each; this scan spent a sixth of its time in it)
    auto take = [&](int c0, __mmask16 m) __attribute__((noinline)) {
      const __m512 x = _mm512_add_ps(_mm512_loadu_ps(p + c0), _mm512_loadu_ps(b + c0));
      _mm512_storeu_ps(cv.data() + nc, _mm512_maskz_compress_ps(m, x));
      _mm512_storeu_si512(ci.data() + nc, _mm512_maskz_compress_epi32(m, _mm512_add_epi32(iota, _mm512_set1_epi32(c0))));
      nc += __builtin_popcount(m);
    };
    for (; c + 64 <= cols; c += 64) {
      if (next)
        for (int l = 0; l < 64; l += 16) _mm_prefetch((const char*)(next + c + l), _MM_HINT_T1);
      const __mmask16 m0 = mask(c), m1 = mask(c + 16), m2 = mask(c + 32), m3 = mask(c + 48);
      if (__builtin_expect((m0 | m1 | m2 | m3) != 0, 0)) {
        if (m0) take(c, m0);
        if (m1) take(c + 16, m1);
        if (m2) take(c + 32, m2);
        if (m3) take(c + 48, m3);
      }
    }
    for (; c + 16 <= cols; c += 16)
      if (const __mmask16 m = mask(c)) take(c, m);
    for (int j = 0; j < nc; j++) cand.emplace_back(cv[j], ci[j]);
  }
#endif
  for (; c + 16 <= cols; c += 16)
    for (uint32_t bits = cmp16(p + c, b + c, t, true); bits; bits &= bits - 1) {
      const int j = c + __builtin_ctz(bits);
      cand.emplace_back(p[j] + b[j], j);
    }
  for (; c < cols; c++) {
    const float s = p[c] + b[c];
    if (s >= t) cand.emplace_back(s, c);
  }
  const int n = (int)cand.size();
  if (n < k) return false;
  if (n <= kRankedCandidates) {
    // the candidates are in column order: those of rank < k (larger value first, ties to the lower
    // column) come out in column order, exactly k of them (the ranks are 0 .. n − 1)
    thread_local std::vector<float> cvals;
    cvals.resize(n);
    for (int i = 0; i < n; i++) cvals[i] = cand[i].first;
    int j = 0;
    for (int i = 0; i < n; i++)
      if (rank_in(cvals.data(), n, i) < k) {
        idx[j] = cand[i].second;
        val[j] = cand[i].first > 0.f ? cand[i].first : 0.f;
        j++;
      }
    return true;
  }
  // many candidates (ties at the threshold, e.g. a row of equal values): a partial sort
  std::partial_sort(cand.begin(), cand.begin() + k, cand.end(), [](const auto& x, const auto& y) {
    return x.first > y.first || (x.first == y.first && x.second < y.second);
  });
  std::sort(cand.begin(), cand.begin() + k, [](const auto& x, const auto& y) { return x.second < y.second; });
  for (int j = 0; j < k; j++) {
    idx[j] = cand[j].second;
    val[j] = cand[j].first > 0.f ? cand[j].first : 0.f;
  }
  return true;
}

void topk_rows(const float* P, const float* bias, const uint8_t* mask, int rows, int cols, int k,
               int32_t* idx, float* val, const int32_t* pick, int npick, float* picked) {
  if (npick == 0) pick = nullptr;
  if (k == 0 && !pick) return;
  // A bounded heap is fastest for small k (few replacements after the first k columns); for large
  // k (a whole batch's worth, as BatchTopK asks) or k a sizeable part of the row (AuxK's k_aux
  // among a few hundred dead latents: 384 of 820 took 110 ms more per step with the heap), a
  // partition of the candidates, O(cols), wins.
  const bool partition = k > 512 || (int64_t)k * 4 > cols;
  std::vector<float> zeros(bias ? 0 : cols, 0.f);
  // Without a mask, the heap's rows go by group maxima (topk_row_by_groups) when there are enough
  // columns for 4k groups of 8 or more (4k: few candidates beyond the k winners).
  const int nv = (4 * k + 15) / 16;
  const bool byGroups = !partition && !mask && cols / 16 >= 8 * nv;
  parallel_for(rows, 4, [&](int64_t r0, int64_t r1) {
    std::vector<float> hv(k);
    std::vector<int> hi(k);
    std::vector<std::pair<float, int>> cand;
    std::vector<std::pair<int, float>> out(k);
    std::vector<float> maxima;
    // the columns AuxK asks for (its dead latents), copied once the top-k has brought the row into
    // the L2: a GEMM of their own over [rows, npick] cost 6 ms a step at 164 (B = 4096, D = 768)
    auto pickRow = [&](int64_t r) {
      const float* p = P + r * cols;
      float* out = picked + r * npick;
      for (int j = 0; j < npick; j++) out[j] = p[pick[j]];
    };
    // the increment picks from the row just done, whichever path below took it (`continue` included)
    for (int64_t r = r0; r < r1; pick ? pickRow(r) : void(), r++) {
      if (k == 0) continue;
      const float* p = P + r * cols;
      if (byGroups && topk_row_by_groups(p, bias ? bias : zeros.data(), cols, k, nv, maxima, cand,
                                         idx + r * k, val + r * k, r + 1 < r1 ? p + cols : nullptr))
        continue;
      if (partition) {
        cand.clear();
        for (int c = 0; c < cols; c++)
          if (!mask || mask[c]) cand.emplace_back(p[c] + (bias ? bias[c] : 0.f), c);
        auto better = [](const std::pair<float, int>& a, const std::pair<float, int>& b) {
          return a.first > b.first || (a.first == b.first && a.second < b.second);
        };
        std::nth_element(cand.begin(), cand.begin() + (k - 1), cand.end(), better);
        // Everything at least as good as the k-th candidate is selected: exactly k entries (the
        // order is total), emitted by a second pass in column order, so no sort is needed.
        const std::pair<float, int> kth = cand[k - 1];
        int j = 0;
        for (int c = 0; c < cols && j < k; c++) {
          if (mask && !mask[c]) continue;
          std::pair<float, int> x(p[c] + (bias ? bias[c] : 0.f), c);
          if (!better(kth, x)) {
            idx[r * k + j] = c;
            val[r * k + j] = x.first > 0.f ? x.first : 0.f;
            j++;
          }
        }
        continue;
      }
      int n = 0, c = 0;
      // Fill the heap with the first k candidates, then keep the k best seen. A later column
      // only enters on a strictly larger value, so ties keep the lower column.
      for (; c < cols && n < k; c++) {
        if (mask && !mask[c]) continue;
        hv[n] = p[c] + (bias ? bias[c] : 0.f);
        hi[n] = c;
        n++;
      }
      for (int i = k / 2 - 1; i >= 0; i--) sift_down(hv.data(), hi.data(), k, i);
      float floor = hv[0];
      auto consider = [&](int col) {
        float s = p[col] + (bias ? bias[col] : 0.f);
        if (s <= floor || (mask && !mask[col])) return;
        hv[0] = s;
        hi[0] = col;
        sift_down(hv.data(), hi.data(), k, 0);
        floor = hv[0];
      };
      // Once the heap is warm few columns beat its floor: look at single columns only in blocks
      // of 16 that hold a candidate.
      const float* bb = bias ? bias : zeros.data();
      for (; c < cols && c % 16 != 0; c++) consider(c);
      for (; c + 16 <= cols; c += 16)
        if (any_above16(p + c, bb + c, floor))
          for (int j = 0; j < 16; j++) consider(c + j);
      for (; c < cols; c++) consider(c);
      // Emit in ascending column order (deterministic, and friendlier to later row gathers).
      for (int j = 0; j < k; j++) out[j] = {hi[j], hv[j]};
      std::sort(out.begin(), out.end(), [](auto& a, auto& b) { return a.first < b.first; });
      for (int j = 0; j < k; j++) {
        idx[r * k + j] = out[j].first;
        val[r * k + j] = out[j].second > 0.f ? out[j].second : 0.f;
      }
    }
  });
}

int rows_above(const float* A, const float* bias, float threshold, int rows, int cols, int kmax,
               int32_t* idx, float* val, int stop) {
  std::atomic<bool> over(false);
  std::vector<int> maxPer(std::max(1, g_threads), 0);
  std::vector<float> zeros(bias ? 0 : cols, 0.f);
  const float* bb = bias ? bias : zeros.data();
  int nt = (int)maxPer.size();
  int64_t chunk = (rows + nt - 1) / nt;
  parallel_for(nt, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; t++) {
      int64_t r0 = t * chunk, r1 = std::min<int64_t>(rows, r0 + chunk);
      int best = 0;
      for (int64_t r = r0; r < r1 && !over.load(std::memory_order_relaxed); r++) {
        const float* a = A + r * cols;
        int32_t* ix = idx + r * kmax;
        float* vv = val + r * kmax;
        int n = 0;
        auto take = [&](int c) {
          float s = a[c] + bb[c];
          if (!(s > threshold)) return;
          if (n < kmax) { ix[n] = c; vv[n] = s; }
          n++;
        };
        int c = 0;
        for (; c + 16 <= cols; c += 16)
          if (any_above16(a + c, bb + c, threshold))
            for (int j = 0; j < 16; j++) take(c + j);
        for (; c < cols; c++) take(c);
        for (int j = n; j < kmax; j++) { ix[j] = 0; vv[j] = 0.f; }
        best = std::max(best, n);
        if (n > stop) over.store(true, std::memory_order_relaxed);
      }
      maxPer[t] = best;
    }
  });
  return *std::max_element(maxPer.begin(), maxPer.end());
}

// float ↔ uint32 with the same order: flip all bits of negatives, the sign bit of the rest
static inline uint32_t order_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
static inline float from_order_bits(uint32_t u) {
  u = (u & 0x80000000u) ? (u & 0x7fffffffu) : ~u;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

float kth_largest(const float* a, int64_t n, int64_t k) {
  int nt = std::max(1, std::min(g_threads, (int)(n >> 16)));
  std::vector<std::vector<int64_t>> hist(nt, std::vector<int64_t>(1 << 16));
  int64_t chunk = (n + nt - 1) / nt;
  // pass 1: the high 16 bits
  parallel_for(nt, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; t++) {
      int64_t b = t * chunk, e = std::min(n, b + chunk);
      int64_t* h = hist[t].data();
      for (int64_t i = b; i < e; i++) h[order_bits(a[i]) >> 16]++;
    }
  });
  // the bucket, from the top, that holds the need-th largest entry; need becomes its rank inside it
  int64_t need = k;
  auto pick = [&]() -> uint32_t {
    for (int64_t bucket = (1 << 16) - 1; bucket >= 0; bucket--) {
      int64_t c = 0;
      for (int t = 0; t < nt; t++) c += hist[t][bucket];
      if (c >= need) return (uint32_t)bucket;
      need -= c;
    }
    return 0;
  };
  const uint32_t hi = pick();
  // pass 2: the low 16 bits, among the entries of that bucket
  for (auto& h : hist) std::fill(h.begin(), h.end(), 0);
  parallel_for(nt, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; t++) {
      int64_t b = t * chunk, e = std::min(n, b + chunk);
      int64_t* h = hist[t].data();
      for (int64_t i = b; i < e; i++) {
        uint32_t u = order_bits(a[i]);
        if ((u >> 16) == hi) h[u & 0xffffu]++;
      }
    }
  });
  const uint32_t lo = pick();
  return from_order_bits((hi << 16) | lo);
}

BatchCut batch_cut(const int32_t* idx, const float* val, int B, int kc, int64_t total, bool packed,
                   int32_t* outIdx, float* outVal) {
  // the decisions of the TypeScript reference (src/engine/js.ts), in the same order: the tie
  // budget runs across rows, so they are sequential. Branch-free where a value meets the cut (half
  // of the candidates, at random: a branch there mispredicted every other entry)
  std::vector<int> len(B, kc);
  int64_t positives = 0;
  for (int b = 0; b < B; b++) {
    const float* v = val + (int64_t)b * kc;
    if (packed) {
      int j = 0;
      while (j < kc && v[j] > 0.f) j++;
      len[b] = j;
      positives += j;
    } else {
      for (int j = 0; j < kc; j++) positives += v[j] > 0.f;
    }
  }
  const float cut = positives <= total ? 0.f : kth_largest(val, (int64_t)B * kc, total);
  int64_t above = 0;
  if (cut > 0.f)
    for (int b = 0; b < B; b++)
      for (int j = 0; j < len[b]; j++) above += val[(int64_t)b * kc + j] > cut;
  const int64_t ties0 = cut > 0.f ? total - above : 0;
  std::vector<int> count(B);
  int64_t ties = ties0;
  bool complete = true;
  int m = 1;
  for (int b = 0; b < B; b++) {
    const float* v = val + (int64_t)b * kc;
    float rowMin = len[b] < kc ? 0.f : INFINITY;  // the padding's zeros
    int c = 0;
    for (int j = 0; j < len[b]; j++) {
      if (!(v[j] >= rowMin)) rowMin = v[j];  // the smallest so far (a NaN is replaced by the next value)
      c += v[j] > cut;
      if (__builtin_expect(v[j] == cut && v[j] > 0.f && ties > 0, 0)) ties--, c++;
    }
    if (cut > 0.f && rowMin >= cut) complete = false;
    count[b] = c;
    m = std::max(m, c);
  }
  // the winners, each row compacted in a scratch row (every candidate written, the cursor moved
  // by the decision), then copied with its zero padding
  std::vector<int32_t> ri(kc + 1);
  std::vector<float> rv(kc + 1);
  ties = ties0;
  for (int b = 0; b < B; b++) {
    const float* v = val + (int64_t)b * kc;
    const int32_t* ix = idx + (int64_t)b * kc;
    int c = 0;
    if (count[b] > 0)
      for (int j = 0; j < len[b]; j++) {
        int keep = v[j] > cut;
        if (__builtin_expect(v[j] == cut && v[j] > 0.f && ties > 0, 0)) ties--, keep = 1;
        ri[c] = ix[j], rv[c] = v[j];
        c += keep;
      }
    int32_t* oi = outIdx + (int64_t)b * m;
    float* ov = outVal + (int64_t)b * m;
    std::copy(ri.begin(), ri.begin() + c, oi), std::fill(oi + c, oi + m, 0);
    std::copy(rv.begin(), rv.begin() + c, ov), std::fill(ov + c, ov + m, 0.f);
  }
  return {m, positives, complete};
}

void values_at(const float* A, const float* bias, int rows, int cols, const int32_t* idx,
               const float* val, int k, double* out) {
  // one cache miss per entry (the row's [cols] are megabytes apart from the next row's): the loop
  // carries no dependence, so the misses overlap, where a TypeScript loop took 25–35 ms for
  // 400 000 entries of a [4096, 16384] matrix
  parallel_for(rows, 16, [&](int64_t r0, int64_t r1) {
    for (int64_t b = r0; b < r1; b++) {
      const float* a = A + b * cols;
      for (int64_t e = b * k; e < (b + 1) * k; e++)
        out[e] = val[e] != 0.f ? (double)a[idx[e]] + (bias ? (double)bias[idx[e]] : 0.0) : 0.0;
    }
  });
}

// The entries (b, j) of a sparse code grouped by latent: a stable counting sort of the entries
// with a non-zero value (all entries when val is null). Kernels that read or write one [H, D]
// matrix row per entry then touch each row once, while it sits in L1, instead of once per entry
// (the [H, D] matrix is larger than the caches; the [rows, D] inputs are not). Entries of a latent
// stay in row order, and threads get disjoint latent ranges of about equal entry counts.
struct ByLatent {
  std::vector<int32_t> start;  // [H + 1]: latent i's entries are order[start[i] .. start[i+1])
  std::vector<int32_t> order;  // entry numbers b·k + j
  std::vector<int> bound;      // [threads + 1] latent ranges
};

template <typename Keep>
static ByLatent group_by_latent_if(const int32_t* idx, int64_t n, int H, Keep keep) {
  ByLatent g;
  g.start.assign(H + 1, 0);
  for (int64_t e = 0; e < n; e++)
    if (keep(e)) g.start[idx[e] + 1]++;
  for (int i = 0; i < H; i++) g.start[i + 1] += g.start[i];
  const int64_t nnz = g.start[H];
  g.order.resize(nnz);
  std::vector<int32_t> fill(g.start.begin(), g.start.end() - 1);
  for (int64_t e = 0; e < n; e++)
    if (keep(e)) g.order[fill[idx[e]]++] = (int32_t)e;
  const int nt = (int)std::max<int64_t>(1, std::min<int64_t>(g_threads, nnz / 256));
  g.bound.assign(nt + 1, H);
  g.bound[0] = 0;
  for (int t = 1, i = 0; t < nt; t++) {
    while (i < H && g.start[i] < nnz * t / nt) i++;
    g.bound[t] = i;
  }
  return g;
}

static ByLatent group_by_latent(const int32_t* idx, const float* val, int64_t n, int H) {
  return group_by_latent_if(idx, n, H, [=](int64_t e) { return !val || val[e] != 0.f; });
}

// fn(i, q0, q1): latent i with its entries order[q0 .. q1), on the thread that owns i
template <typename Fn>
static void for_each_latent(const ByLatent& g, Fn fn) {
  const int nt = (int)g.bound.size() - 1;
  parallel_for(nt, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; t++)
      for (int i = g.bound[t]; i < g.bound[t + 1]; i++)
        if (g.start[i] < g.start[i + 1]) fn(i, g.start[i], g.start[i + 1]);
  });
}

// Whether every row's kept entries come in ascending latent order (as topk_rows and rows_above
// write them): then a walk over the latents adds each row's entries in the order a walk over the
// row does.
template <typename Keep>
static bool ascending_rows(const int32_t* idx, int rows, int k, Keep keep) {
  for (int64_t b = 0; b < rows; b++) {
    int32_t last = -1;
    for (int64_t e = b * k; e < (b + 1) * k; e++)
      if (keep(e)) {
        if (idx[e] < last) return false;
        last = idx[e];
      }
  }
  return true;
}

// The sparse decode's walk over the latents (docs/engine.md#gather-decode), for a W [H, D] larger
// than the caches with about one entry a latent or more, and rows in ascending latent order: each
// thread owns rows [r0, r1) of the outputs, start(b) readies row b, then add(w, e) runs for each
// kept entry e in those rows, latent by latent (w: the latent's row of W). W is read once in order
// and the random rows are the outputs' (rows·D, a quarter of W's size at B=4096 H=16384): 0.45–0.55×
// the time of the walk over each row's K rows of W (random code, 2 Zen 4 cores). Each row still
// adds its entries in ascending latent order, the row walk's order, so the sums are the same bit
// for bit. Returns false, having done nothing, where the walk over rows is the one to take.
template <typename T, typename Keep, typename Start, typename Add>
static bool decode_by_latent(const int32_t* idx, int rows, int k, const T* W, int H, int D, Keep keep,
                             Start start, Add add) {
  const int64_t n = (int64_t)rows * k;
  if ((int64_t)H * D * (int64_t)sizeof(T) < (8 << 20) || n < H || !ascending_rows(idx, rows, k, keep)) return false;
  const ByLatent g = group_by_latent_if(idx, n, H, keep);
  parallel_for(rows, 64, [&](int64_t r0, int64_t r1) {
    for (int64_t b = r0; b < r1; b++) start(b);
    for (int i = 0; i < H; i++) {
      // latent i's entries in rows [r0, r1) (order is ascending within a latent)
      const int32_t* q = std::lower_bound(g.order.data() + g.start[i], g.order.data() + g.start[i + 1], (int32_t)(r0 * k));
      const int32_t* q1 = g.order.data() + g.start[i + 1];
      const T* w = W + (int64_t)i * D;
      for (; q < q1 && *q < r1 * k; q++) add(w, *q);
    }
  });
  return true;
}

template <typename T>
static void gather_rows_t(const int32_t* idx, const float* val, int rows, int k, const T* W, int H,
                          int D, const float* bias, float* out) {
  auto start = [&](int64_t b) {
    float* o = out + b * D;
    if (bias) std::copy(bias, bias + D, o); else std::fill(o, o + D, 0.f);
  };
  auto add = [&](const T* __restrict w, int64_t e) {
    const float a = val[e];
    float* __restrict o = out + (e / k) * D;
    for (int d = 0; d < D; d++) o[d] += a * widen(w[d]);
  };
  if (decode_by_latent(idx, rows, k, W, H, D, [=](int64_t e) { return val[e] != 0.f; }, start, add)) return;
  parallel_for(rows, 8, [&](int64_t r0, int64_t r1) {
    for (int64_t b = r0; b < r1; b++) {
      start(b);
      for (int j = 0; j < k; j++) {
        const int64_t e = b * k + j;
        if (val[e] != 0.f) add(W + (int64_t)idx[e] * D, e);
      }
    }
  });
}

void gather_rows(const int32_t* idx, const float* val, int rows, int k, const float* W, int H, int D,
                 const float* bias, float* out) {
  gather_rows_t(idx, val, rows, k, W, H, D, bias, out);
}

void gather_rows(const int32_t* idx, const float* val, int rows, int k, const uint16_t* W, int H, int D,
                 const float* bias, float* out) {
  gather_rows_t(idx, val, rows, k, W, H, D, bias, out);
}

template <typename T>
static void gather_rows2_t(const int32_t* idx, const float* val, const float* val2, int rows, int k,
                           const T* W, int H, int D, const float* bias, float* out, float* out2) {
  // gather_rows for two codes on the same entries (Gated: the magnitudes and the gate's ReLU), each
  // decoder row read once for both; each output sums as gather_rows sums it
  auto start = [&](int64_t b) {
    float* o = out + b * D;
    float* o2 = out2 + b * D;
    if (bias) std::copy(bias, bias + D, o), std::copy(bias, bias + D, o2);
    else std::fill(o, o + D, 0.f), std::fill(o2, o2 + D, 0.f);
  };
  auto add = [&](const T* __restrict w, int64_t e) {
    const float a = val[e], a2 = val2[e];
    float* __restrict o = out + (e / k) * D;
    float* __restrict o2 = out2 + (e / k) * D;
    if (a != 0.f && a2 != 0.f) {
      for (int d = 0; d < D; d++) {
        o[d] += a * widen(w[d]);
        o2[d] += a2 * widen(w[d]);
      }
    } else if (a != 0.f) {
      for (int d = 0; d < D; d++) o[d] += a * widen(w[d]);
    } else if (a2 != 0.f) {
      for (int d = 0; d < D; d++) o2[d] += a2 * widen(w[d]);
    }
  };
  if (decode_by_latent(idx, rows, k, W, H, D, [=](int64_t e) { return val[e] != 0.f || val2[e] != 0.f; }, start, add)) return;
  parallel_for(rows, 8, [&](int64_t r0, int64_t r1) {
    for (int64_t b = r0; b < r1; b++) {
      start(b);
      for (int j = 0; j < k; j++) add(W + (int64_t)idx[b * k + j] * D, b * k + j);
    }
  });
}

void gather_rows2(const int32_t* idx, const float* val, const float* val2, int rows, int k, const float* W,
                  int H, int D, const float* bias, float* out, float* out2) {
  gather_rows2_t(idx, val, val2, rows, k, W, H, D, bias, out, out2);
}
void gather_rows2(const int32_t* idx, const float* val, const float* val2, int rows, int k, const uint16_t* W,
                  int H, int D, const float* bias, float* out, float* out2) {
  gather_rows2_t(idx, val, val2, rows, k, W, H, D, bias, out, out2);
}

template <typename T>
static void gather_dot_t(const int32_t* idx, const float* val, int rows, int k, const T* G, const T* W,
                         int H, int D, float* out) {
  const int64_t n = (int64_t)rows * k;
  if (val)
    for (int64_t e = 0; e < n; e++)
      if (val[e] == 0.f) out[e] = 0.f;
  const ByLatent g = group_by_latent(idx, val, n, H);
  for_each_latent(g, [&](int i, int32_t q0, int32_t q1) {
    const T* w = W + (int64_t)i * D;
    for (int32_t q = q0; q < q1; q++) {
      const int32_t e = g.order[q];
      out[e] = dot_t(G + (int64_t)(e / k) * D, w, D);
    }
  });
}
void gather_dot(const int32_t* idx, const float* val, int rows, int k, const float* G, const float* W,
                int H, int D, float* out) {
  gather_dot_t(idx, val, rows, k, G, W, H, D, out);
}
void gather_dot(const int32_t* idx, const float* val, int rows, int k, const uint16_t* G, const uint16_t* W,
                int H, int D, float* out) {
  gather_dot_t(idx, val, rows, k, G, W, H, D, out);
}

template <typename T>
static void scatter_rows_t(const int32_t* idx, const float* val, int rows, int k, const T* X, int H, int D,
                           float* out) {
  // every element is summed in row order, as a loop over the entries in order would
  const ByLatent g = group_by_latent(idx, val, (int64_t)rows * k, H);
  for_each_latent(g, [&](int i, int32_t q0, int32_t q1) {
    float* __restrict o = out + (int64_t)i * D;
    for (int32_t q = q0; q < q1; q++) {
      const int32_t e = g.order[q];
      const float a = val[e];
      const T* __restrict x = X + (int64_t)(e / k) * D;
      for (int d = 0; d < D; d++) o[d] += a * widen(x[d]);
    }
  });
}
void scatter_rows(const int32_t* idx, const float* val, int rows, int k, const float* X, int H, int D,
                  float* out) {
  scatter_rows_t(idx, val, rows, k, X, H, D, out);
}
void scatter_rows(const int32_t* idx, const float* val, int rows, int k, const uint16_t* X, int H, int D,
                  float* out) {
  scatter_rows_t(idx, val, rows, k, X, H, D, out);
}

template <typename T>
static void scatter_dot_t(const int32_t* idx, const float* val, const float* sel, int rows, int k,
                          const T* G, const T* W, int H, int D, float* dW, float* out) {
  // scatter_rows(idx, val, G → dW) and gather_dot(idx, sel, G, W → out) in one pass per latent:
  // each entry's row of G is read once for both (from L1 the second time), and W's and dW's rows
  // once per latent. The dot products and each dW row's sums are those of the two kernels.
  const int64_t n = (int64_t)rows * k;
  if (sel)
    for (int64_t e = 0; e < n; e++)
      if (sel[e] == 0.f) out[e] = 0.f;
  const ByLatent g = group_by_latent_if(idx, n, H, [=](int64_t e) { return val[e] != 0.f || !sel || sel[e] != 0.f; });
  for_each_latent(g, [&](int i, int32_t q0, int32_t q1) {
    const T* w = W + (int64_t)i * D;
    float* __restrict o = dW + (int64_t)i * D;
    for (int32_t q = q0; q < q1; q++) {
      const int32_t e = g.order[q];
      const T* __restrict x = G + (int64_t)(e / k) * D;
      if (!sel || sel[e] != 0.f) out[e] = dot_t(x, w, D);
      const float a = val[e];
      if (a != 0.f)
        for (int d = 0; d < D; d++) o[d] += a * widen(x[d]);
    }
  });
}
void scatter_dot(const int32_t* idx, const float* val, const float* sel, int rows, int k,
                 const float* G, const float* W, int H, int D, float* dW, float* out) {
  scatter_dot_t(idx, val, sel, rows, k, G, W, H, D, dW, out);
}
void scatter_dot(const int32_t* idx, const float* val, const float* sel, int rows, int k,
                 const uint16_t* G, const uint16_t* W, int H, int D, float* dW, float* out) {
  scatter_dot_t(idx, val, sel, rows, k, G, W, H, D, dW, out);
}

// G's and Xc's rows of each token side by side, [rows, 2·D]: a sparse backward's entry then reads
// one stretch of 2·D values instead of two rows 12 MB apart (at B=4096 D=768), one hardware-prefetch
// stream and fewer DRAM pages per entry (docs/engine.md#grouped-sparse-gradients). The buffer is kept per
// thread: allocated per call, its first touch (25 MB of page faults) cost more than it saved.
template <typename T>
static const T* side_by_side(const T* G, const T* Xc, int rows, int D) {
  thread_local std::vector<T> buf;
  const size_t n = (size_t)rows * 2 * D;
  if (buf.size() < n) buf.resize(n);
  T* out = buf.data();
  parallel_for(rows, 64, [&](int64_t r0, int64_t r1) {
    for (int64_t b = r0; b < r1; b++) {
      std::memcpy(out + b * 2 * D, G + b * D, sizeof(T) * D);
      std::memcpy(out + b * 2 * D + D, Xc + b * D, sizeof(T) * D);
    }
  });
  return out;
}

template <typename T>
static void sparse_backward_t(const int32_t* idx, const float* val, int rows, int k, const T* G,
                              const T* W, const T* Xc, int H, int D, float* dWdec, float* dWenc,
                              float* gpSum, bool overwrite, double* rowSq) {
  // scatter_dot (its dot products where val > 0), the mask and scatter_rows of dp in one pass per
  // latent: one grouping of the entries instead of two, W_dec's, dW_dec's and dW_enc's rows once
  // each, and the entry loop that masked dp and summed it per latent out of TypeScript. Each sum
  // runs over the latent's entries in row order, as the three did (the entries they skipped add 0).
  // overwrite and rowSq (docs/engine.md#grouped-sparse-gradients): the zeroing and the sum of
  // squares of the gradient, two passes of 100 MB over [H, D] rows out of cache, done to each row
  // here while it is in L1.
  const ByLatent g = group_by_latent(idx, val, (int64_t)rows * k, H);
  const T* GX = side_by_side(G, Xc, rows, D);
  const bool every = overwrite || rowSq;  // latents without entries count too
  const int nt = (int)g.bound.size() - 1;
  parallel_for(nt, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; t++)
      for (int i = g.bound[t]; i < g.bound[t + 1]; i++) {
        const int32_t q0 = g.start[i], q1 = g.start[i + 1];
        if (q0 == q1 && !every) continue;
        const T* __restrict w = W + (int64_t)i * D;
        float* __restrict od = dWdec + (int64_t)i * D;
        float* __restrict oe = dWenc + (int64_t)i * D;
        if (overwrite) std::fill(od, od + D, 0.f), std::fill(oe, oe + D, 0.f);
        float sum = gpSum[i];
        for (int32_t q = q0; q < q1; q++) {
          const int32_t e = g.order[q];
          const float a = val[e];
          const T* __restrict x = GX + (int64_t)(e / k) * 2 * D;  // G's row; Xc's follows it
          const float dp = a > 0.f ? dot_t(x, w, D) : 0.f;
          for (int d = 0; d < D; d++) od[d] += a * widen(x[d]);
          sum += dp;
          if (dp != 0.f) {
            const T* __restrict xc = x + D;
            for (int d = 0; d < D; d++) oe[d] += dp * widen(xc[d]);
          }
        }
        if (q0 < q1) gpSum[i] = sum;
        if (rowSq) rowSq[i] = sumsq(od, D) + sumsq(oe, D);
      }
  });
}

void sparse_backward(const int32_t* idx, const float* val, int rows, int k, const float* G,
                     const float* W, const float* Xc, int H, int D, float* dWdec, float* dWenc,
                     float* gpSum, bool overwrite, double* rowSq) {
  sparse_backward_t(idx, val, rows, k, G, W, Xc, H, D, dWdec, dWenc, gpSum, overwrite, rowSq);
}

void sparse_backward(const int32_t* idx, const float* val, int rows, int k, const uint16_t* G,
                     const uint16_t* W, const uint16_t* Xc, int H, int D, float* dWdec, float* dWenc,
                     float* gpSum, bool overwrite, double* rowSq) {
  sparse_backward_t(idx, val, rows, k, G, W, Xc, H, D, dWdec, dWenc, gpSum, overwrite, rowSq);
}

void adam(float* p, const float* g, float* m, float* v, int64_t n, float lr, float beta1,
          float beta2, float eps, float bc1, float bc2, float gscale) {
  const AdamStep h{lr, beta1, beta2, eps, bc1, bc2, gscale};
  parallel_for(n, 1 << 15, [=](int64_t i0, int64_t i1) { adam_span(p + i0, g + i0, m + i0, v + i0, i1 - i0, h); });
}

void row_norms(const float* W, int rows, int cols, float* out) {
  parallel_for(rows, 64, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
      out[r] = (float)std::sqrt(sumsq(W + r * cols, cols));
    }
  });
}

void project_rows(float* G, const float* W, int rows, int cols) {
  parallel_for(rows, 64, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
      const float* w = W + r * cols;
      float* g = G + r * cols;
      double ww = sumsq(w, cols), gw = 0;
#pragma omp simd reduction(+ : gw)
      for (int c = 0; c < cols; c++) gw += (double)g[c] * w[c];
      if (ww == 0) continue;
      float a = (float)(gw / ww);
      for (int c = 0; c < cols; c++) g[c] -= a * w[c];
    }
  });
}

void normalize_rows(float* W, int rows, int cols) {
  parallel_for(rows, 64, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
      float* w = W + r * cols;
      double s = sumsq(w, cols);
      if (s == 0) continue;
      float inv = (float)(1.0 / std::sqrt(s));
      for (int c = 0; c < cols; c++) w[c] *= inv;
    }
  });
}

void adam_unit_rows(float* p, const float* g, float* m, float* v, int rows, int cols, float lr,
                    float beta1, float beta2, float eps, float bc1, float bc2, float gscale,
                    uint16_t* out) {
  // A row of each array (3 KB at D = 768) stays in L1 between the projection, the update and the
  // renormalisation; the separate kernels read W_dec three times and its gradient twice. The bf16
  // copy (a bf16 step's sparse decode reads it) is cast from the row while it is still in L1.
  const AdamStep h{lr, beta1, beta2, eps, bc1, bc2, gscale};
  parallel_for(rows, 64, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
      float* __restrict w = p + r * cols;
      const float* __restrict gr = g + r * cols;
      float* __restrict mr = m + r * cols;
      float* __restrict vr = v + r * cols;
      double ww = 0, gw = 0;
#pragma omp simd reduction(+ : ww, gw)
      for (int c = 0; c < cols; c++) {
        ww += (double)w[c] * w[c];
        gw += (double)gr[c] * w[c];
      }
      const AdamStep hs = h;
      double s = 0;
      if (ww == 0) {
        adam_span(w, gr, mr, vr, cols, hs);
        s = sumsq(w, cols);
      } else {
        const float a = (float)(gw / ww);
#pragma omp simd reduction(+ : s)
        for (int c = 0; c < cols; c++) {
          const float wn = adam_update(w[c], hs.gscale * (gr[c] - a * w[c]), mr[c], vr[c], hs);
          s += (double)wn * wn;
        }
      }
      if (s != 0) {
        const float inv = (float)(1.0 / std::sqrt(s));
        for (int c = 0; c < cols; c++) w[c] *= inv;
      }
      if (out)
        for (int c = 0; c < cols; c++) out[r * cols + c] = to_bf16(w[c]);
    }
  });
}

// a = 0. A step's gradients (100 MB at H = 16384, D = 768) are zeroed before backward writes
// into them: with streaming stores the lines go to memory without being read first (a cached
// store's read-for-ownership doubles the traffic), on two threads. 3 ms for 100 MB here, where
// a cached fill took 5.4 ms and TypedArray.fill 8–10 ms (on every thread: 2 here). Arrays that fit the caches (up to 16 MB)
// take cached stores: they are written again at once, and streamed lines would be fetched back.
void zero(float* a, int64_t n) {
  if (n < (1 << 22)) {
    std::fill(a, a + n, 0.f);
    return;
  }
  parallel_for(n, 1 << 16, [=](int64_t i0, int64_t i1) {
    float* p = a + i0;
    int64_t len = i1 - i0;
#if defined(__AVX512F__)
    while (len > 0 && ((uintptr_t)p & 63)) *p++ = 0.f, len--;
    for (; len >= 16; p += 16, len -= 16) _mm512_stream_ps(p, _mm512_setzero_ps());
    _mm_sfence();
#elif defined(__AVX__)
    while (len > 0 && ((uintptr_t)p & 31)) *p++ = 0.f, len--;
    for (; len >= 8; p += 8, len -= 8) _mm256_stream_ps(p, _mm256_setzero_ps());
    _mm_sfence();
#endif
    std::fill(p, p + len, 0.f);
  });
}

double sum_squares(const float* a, int64_t n) {
  // axpby's reduction with nothing written: per-thread partial sums in fixed chunks, added in
  // thread order (the same result for a given thread count)
  return axpby(1.0, a, 0.0, nullptr, n, nullptr, n);
}

// The [B, D] passes between kernels (centring, residuals, scaling by a constant) were loops in
// TypeScript at ~3 ns an element, 10 ms each at B = 4096, D = 768; here they are bandwidth-bound.
// Threads take contiguous chunks (whole rows of Y when it is broadcast); the partial sums are
// added in thread order.
// X, out: [n] from a chunk's start; the chunk is rows of rowLen, each combined with Y[0, rowLen).
template <bool HasY, bool HasOut>
static double axpby_chunk(double a, const float* X, double b, const float* Y, int64_t rowLen, float* out,
                          int64_t n) {
  double s = 0;
  for (int64_t r0 = 0; r0 < n; r0 += rowLen) {
    const float* x = X + r0;
    float* o = HasOut ? out + r0 : nullptr;
#pragma omp simd reduction(+ : s)
    for (int64_t c = 0; c < rowLen; c++) {
      const double v = HasY ? a * (double)x[c] + b * (double)Y[c] : a * (double)x[c];
      if (HasOut) o[c] = (float)v;
      s += v * v;
    }
  }
  return s;
}

double axpby(double a, const float* X, double b, const float* Y, int64_t ny, float* out, int64_t n) {
  if (n == 0) return 0;
  const bool flat = !Y || ny == n;  // elementwise: a chunk is one row; broadcast: whole rows of ny
  const int64_t unit = flat ? 1 : ny, units = n / unit;
  const int nt = (int)std::max<int64_t>(1, std::min<int64_t>(g_threads, n >> 15));
  std::vector<double> part(nt, 0.0);
  const int64_t chunk = (units + nt - 1) / nt;
  parallel_for(nt, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; t++) {
      const int64_t b0 = std::min(units, t * chunk) * unit, b1 = std::min(units, (t + 1) * chunk) * unit;
      if (b0 >= b1) continue;
      const int64_t len = b1 - b0, rowLen = flat ? len : ny;
      const float* x = X + b0;
      const float* y = Y ? (flat ? Y + b0 : Y) : nullptr;
      float* o = out ? out + b0 : nullptr;
      if (y && o) part[t] = axpby_chunk<true, true>(a, x, b, y, rowLen, o, len);
      else if (y) part[t] = axpby_chunk<true, false>(a, x, b, y, rowLen, nullptr, len);
      else if (o) part[t] = axpby_chunk<false, true>(a, x, b, nullptr, rowLen, o, len);
      else part[t] = axpby_chunk<false, false>(a, x, b, nullptr, rowLen, nullptr, len);
    }
  });
  double s = 0;
  for (double p : part) s += p;
  return s;
}

void attention(const double* q, const double* kc, const double* vc, int S, int pos, int maxLen,
               int heads, int kvHeads, int hs, double* out) {
  const int dim = heads * hs, kv = kvHeads * hs, group = heads / kvHeads;
  const double scale = 1.0 / std::sqrt((double)hs);
  parallel_for(S, 4, [&](int64_t s0, int64_t s1) {
    std::vector<double> sc(pos + 1);
    for (int64_t s = s0; s < s1; s++) {
      for (int h = 0; h < heads; h++) {
        const double* qh = q + s * dim + h * hs;
        const double* kbase = kc + (s * maxLen) * (int64_t)kv + (h / group) * hs;
        const double* vbase = vc + (s * maxLen) * (int64_t)kv + (h / group) * hs;
        double mx = -INFINITY;
        for (int t = 0; t <= pos; t++) {
          const double* k = kbase + (int64_t)t * kv;
          double d[4] = {0, 0, 0, 0};  // four partial sums: the dot product is latency-bound otherwise
          int i = 0;
          for (; i + 4 <= hs; i += 4)
            for (int j = 0; j < 4; j++) d[j] += qh[i + j] * k[i + j];
          for (; i < hs; i++) d[0] += qh[i] * k[i];
          sc[t] = ((d[0] + d[1]) + (d[2] + d[3])) * scale;
          mx = std::max(mx, sc[t]);
        }
        double sum = 0;
        for (int t = 0; t <= pos; t++) sum += sc[t] = std::exp(sc[t] - mx);
        double* o = out + s * dim + h * hs;
        for (int i = 0; i < hs; i++) o[i] = 0;
        for (int t = 0; t <= pos; t++) {
          const double a = sc[t] / sum;
          const double* v = vbase + (int64_t)t * kv;
          for (int i = 0; i < hs; i++) o[i] += a * v[i];
        }
      }
    }
  });
}

}  // namespace sae
