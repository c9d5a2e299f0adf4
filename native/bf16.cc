// See bf16.h. oneDNN (Debian's libdnnl 2.6) runs its CPU primitives on OpenMP; how its threads
// and OpenBLAS's share the cores is measured in docs/engine.md#bfloat16.
#include "bf16.h"
#include "parallel.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <mutex>
#include <stdexcept>
#include <tuple>
#include <vector>

#ifdef SAE_HAVE_DNNL
#include <omp.h>
#include <oneapi/dnnl/dnnl.hpp>
#endif

namespace sae {

void adam_cast_bf16(float* p, const float* g, float* m, float* v, int64_t n, float lr, float beta1,
                    float beta2, float eps, float bc1, float bc2, float gscale, uint16_t* out,
                    int64_t off, int64_t len) {
  // sae::adam's update (adam_span), so the weights are the same; the copied range is cast in
  // pieces of 4096 elements right after their update, while they are still in L1
  const AdamStep h{lr, beta1, beta2, eps, bc1, bc2, gscale};
  parallel_for(n, 1 << 15, [=](int64_t i0, int64_t i1) {
    // the chunk in three stretches: before the copied range, inside it (cast as written), after it
    const int64_t c0 = std::clamp(off, i0, i1), c1 = std::clamp(off + len, c0, i1);
    adam_span(p + i0, g + i0, m + i0, v + i0, c0 - i0, h);
    for (int64_t a = c0; a < c1; a += 4096) {
      const int64_t b = std::min(c1, a + 4096);
      adam_span(p + a, g + a, m + a, v + a, b - a, h);
      for (int64_t i = a; i < b; i++) out[i - off] = to_bf16(p[i]);
    }
    adam_span(p + c1, g + c1, m + c1, v + c1, i1 - c1, h);
  });
}

void cast_bf16(const float* src, uint16_t* dst, int64_t n) {
  // Round to nearest even on the bit pattern (to_bf16): add 0x7FFF plus the lowest kept bit, keep
  // the top half (a carry into the exponent is the correct rounding up, up to inf). NaNs would be
  // rounded into inf or another NaN, so they are kept quiet explicitly. A select, not a branch:
  // vectorises.
  parallel_for(n, 1 << 16, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; i++) dst[i] = to_bf16(src[i]);
  });
}

#ifdef SAE_HAVE_DNNL

static const char* isa_name(dnnl::cpu_isa isa) {
  switch (isa) {
    case dnnl::cpu_isa::avx512_core_amx: return "avx512_core_amx";
    case dnnl::cpu_isa::avx512_core_bf16: return "avx512_core_bf16";
    case dnnl::cpu_isa::avx512_core_vnni: return "avx512_core_vnni";
    case dnnl::cpu_isa::avx512_core: return "avx512_core";
    case dnnl::cpu_isa::avx2_vnni: return "avx2_vnni";
    case dnnl::cpu_isa::avx2: return "avx2";
    case dnnl::cpu_isa::avx: return "avx";
    case dnnl::cpu_isa::sse41: return "sse41";
    default: return "other";
  }
}

// The ISA bits are cumulative (each level's mask holds the ones below it).
static bool has_bf16_isa() {
  const unsigned isa = (unsigned)dnnl_get_effective_cpu_isa();
  const unsigned need = (unsigned)dnnl_cpu_isa_avx512_core_bf16;
  return (isa & need) == need;
}

Bf16Info bf16_info() {
  const dnnl_version_t* v = dnnl_version();
  Bf16Info r;
  r.isa = isa_name(dnnl::get_effective_cpu_isa());
  r.version = std::to_string(v->major) + "." + std::to_string(v->minor) + "." + std::to_string(v->patch);
  r.available = has_bf16_isa();
  if (!r.available) r.reason = "oneDNN finds no bf16 instructions on this CPU (its best: " + r.isa + "; bf16 needs AVX512-BF16 or AMX-BF16)";
  return r;
}

void bf16_set_threads(int n) { omp_set_num_threads(std::max(1, n)); }

namespace {

using Key = std::tuple<bool, bool, int, int, int, float, float>;

struct Cache {
  std::mutex mu;
  dnnl::engine eng{dnnl::engine::kind::cpu, 0};
  dnnl::stream strm{eng};
  std::map<Key, dnnl::matmul> prims;
  std::string last_impl;
};

Cache& cache() {
  static Cache c;
  return c;
}

using tag_dims = dnnl::memory::dims;
using dt = dnnl::memory::data_type;

// row-major [rows, cols], or its transpose stored [cols, rows]
dnnl::memory::desc plain(int64_t rows, int64_t cols, dt type, bool transposed) {
  return dnnl::memory::desc(tag_dims{rows, cols}, type, transposed ? tag_dims{1, rows} : tag_dims{cols, 1});
}

}  // namespace

void gemm_bf16(bool transA, bool transB, int M, int N, int K, float alpha, const uint16_t* A,
               const uint16_t* B, float beta, float* C) {
  if (!has_bf16_isa()) throw std::runtime_error(bf16_info().reason);
  if (M == 0 || N == 0) return;
  if (K == 0) {  // oneDNN rejects empty reductions; the product is 0
    for (int64_t i = 0; i < (int64_t)M * N; i++) C[i] = beta == 0.f ? 0.f : beta * C[i];
    return;
  }
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  const Key key{transA, transB, M, N, K, alpha, beta};
  const auto a = plain(M, K, dt::bf16, transA), b = plain(K, N, dt::bf16, transB), d = plain(M, N, dt::f32, false);
  auto it = c.prims.find(key);
  if (it == c.prims.end()) {
    try {
      dnnl::primitive_attr attr;
      if (alpha != 1.f) attr.set_output_scales(0, {alpha});
      if (beta != 0.f) {
        dnnl::post_ops po;
        po.append_sum(beta);
        attr.set_post_ops(po);
      }
      dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a, b, d), attr, c.eng);
      c.last_impl = pd.impl_info_str();
      // bounded: shapes come from a few call sites, but a long session of odd batch sizes should
      // not grow it forever
      if (c.prims.size() >= 64) c.prims.clear();
      it = c.prims.emplace(key, dnnl::matmul(pd)).first;
    } catch (const dnnl::error& e) {
      throw std::runtime_error(std::string("oneDNN matmul: ") + e.what());
    }
  }
  dnnl::memory ma(a, c.eng, const_cast<uint16_t*>(A)), mb(b, c.eng, const_cast<uint16_t*>(B)), md(d, c.eng, C);
  it->second.execute(c.strm, {{DNNL_ARG_SRC, ma}, {DNNL_ARG_WEIGHTS, mb}, {DNNL_ARG_DST, md}});
  c.strm.wait();
}

std::string bf16_last_impl() {
  std::lock_guard<std::mutex> lock(cache().mu);
  return cache().last_impl;
}

#else  // built without oneDNN

Bf16Info bf16_info() {
  return {false, "the native engine was built without oneDNN (Debian: apt-get install libdnnl-dev, then npm run build:native)", "", ""};
}
void bf16_set_threads(int) {}
void gemm_bf16(bool, bool, int, int, int, float, const uint16_t*, const uint16_t*, float, float*) {
  throw std::runtime_error(bf16_info().reason);
}
std::string bf16_last_impl() { return ""; }

#endif

}  // namespace sae
