// Pieces shared by the kernel files (kernels.cc, bf16.cc); not part of the addon's surface.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
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

// One Adam update (Kingma & Ba 2015) of a weight w with its moments m, v, from the gradient g
// already scaled by the clipping factor (docs/training.md); bc1, bc2 = 1 − β^t. Every Adam kernel
// (adam, adamUnitRows, adamBf16) goes through this one, so they give the same weights bit for bit.
inline float adam_update(float& w, float g, float& m, float& v, float lr, float beta1, float beta2,
                         float eps, float bc1, float bc2) {
  const float mi = beta1 * m + (1.f - beta1) * g;
  const float vi = beta2 * v + (1.f - beta2) * g * g;
  m = mi;
  v = vi;
  w -= lr * (mi / bc1) / (std::sqrt(vi / bc2) + eps);
  return w;
}

}  // namespace sae
