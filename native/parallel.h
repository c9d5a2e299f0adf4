// Pieces shared by the kernel files (kernels.cc, bf16.cc); not part of the addon's surface.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

namespace sae {

int get_threads();

// Splits [0, n) into up to get_threads() chunks of at least minChunk: n − 1 threads started, the
// calling thread takes the first chunk, all joined before returning (docs/engine.md#threads).
template <typename Fn>
void parallel_for(int64_t n, int64_t minChunk, Fn fn) {
  int nt = (int)std::min<int64_t>(get_threads(), std::max<int64_t>(1, n / std::max<int64_t>(1, minChunk)));
  if (nt <= 1) {
    fn((int64_t)0, n);
    return;
  }
  std::vector<std::thread> pool;
  pool.reserve(nt - 1);
  int64_t chunk = (n + nt - 1) / nt;
  for (int t = 1; t < nt; t++) {
    int64_t b = t * chunk, e = std::min(n, b + chunk);
    if (b < e) pool.emplace_back([=] { fn(b, e); });
  }
  fn((int64_t)0, std::min(n, chunk));
  for (auto& th : pool) th.join();
}

// x rounded to the nearest bfloat16 (its top 16 bits), ties to even; NaN stays a quiet NaN (see
// cast_bf16 in bf16.h)
inline uint16_t to_bf16(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  const uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  const uint32_t nan = (u >> 16) | 0x40u;
  return (uint16_t)((u & 0x7FFFFFFFu) > 0x7F800000u ? nan : rounded);
}

// Adam's hyper-parameters for one step; bc1, bc2 = 1 − β^t, gscale the clipping factor.
struct AdamStep {
  float lr, beta1, beta2, eps, bc1, bc2, gscale;
};

// One Adam update (Kingma & Ba 2015) of a weight w with its moments m, v, from the gradient g
// already scaled by the clipping factor (docs/training.md). Every Adam kernel (adam, adamUnitRows,
// adamBf16) goes through this one, so they give the same weights bit for bit.
inline float adam_update(float& w, float g, float& m, float& v, const AdamStep& h) {
  const float mi = h.beta1 * m + (1.f - h.beta1) * g;
  const float vi = h.beta2 * v + (1.f - h.beta2) * g * g;
  m = mi;
  v = vi;
  w -= h.lr * (mi / h.bc1) / (std::sqrt(vi / h.bc2) + h.eps);
  return w;
}

// adam_update over n contiguous elements, the gradient read as gscale·g. Restrict pointers and the
// step by value: with the hyper-parameters read through a lambda's captured references and
// pointers that may alias them, GCC kept the loop scalar (one vdivss/vsqrtss at a time; 0.36 G
// elements/s, compute-bound at 12 MB). Vector divisions and square roots round exactly as the
// scalar ones do, so the weights are the same.
inline void adam_span(float* __restrict w, const float* __restrict g, float* __restrict m,
                      float* __restrict v, int64_t n, const AdamStep h) {
#pragma omp simd
  for (int64_t i = 0; i < n; i++) adam_update(w[i], h.gscale * g[i], m[i], v[i], h);
}

}  // namespace sae
