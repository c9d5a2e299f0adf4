// bfloat16 GEMMs through oneDNN's matmul, for `train.precision: bf16` (docs/engine.md#bfloat16).
// Compiled with oneDNN when the build finds it (SAE_HAVE_DNNL); without it every entry point still
// exists, bf16_info() says why bf16 is unavailable and gemm_bf16 throws. Plain C++, no N-API.
// A bfloat16 value is the top 16 bits of a float32 (1 sign, 8 exponent, 7 mantissa bits), held
// in a uint16_t.
#pragma once
#include <cstdint>
#include <string>

namespace sae {

struct Bf16Info {
  bool available;      // compiled with oneDNN and the CPU has a bf16 instruction set
  std::string reason;  // why not, when !available
  std::string isa;     // oneDNN's best instruction set on this CPU ("avx512_core_amx", ...)
  std::string version; // oneDNN's version, "" without it
};
Bf16Info bf16_info();

// oneDNN's thread count (its OpenMP runtime's, for the calling thread)
void bf16_set_threads(int n);

// dst[i] = src[i] rounded to the nearest bfloat16, ties to even; NaN stays NaN (quiet), ±inf and
// values that round past the largest bf16 become ±inf. Threaded.
void cast_bf16(const float* src, uint16_t* dst, int64_t n);

// C[M,N] = alpha · op(A) op(B) + beta · C with bfloat16 A, B and float32 accumulation and C;
// op(A) is [M,K] (A stored [K,M] when transA), op(B) is [K,N] (B stored [N,K] when transB).
// One oneDNN primitive per (shape, transposes, alpha, beta), made on first use (milliseconds)
// and kept. Throws std::runtime_error when bf16 is unavailable.
void gemm_bf16(bool transA, bool transB, int M, int N, int K, float alpha, const uint16_t* A,
               const uint16_t* B, float beta, float* C);

// One Adam step exactly as sae::adam (kernels.h) over p[0..n), which also writes the bf16 copy of the
// updated p[off .. off + len) into out[0..len): the cast rides along the pass that already writes the
// weights instead of a pass of its own. Threaded.
void adam_cast_bf16(float* p, const float* g, float* m, float* v, int64_t n, float lr, float beta1,
                    float beta2, float eps, float bc1, float bc2, float gscale, uint16_t* out,
                    int64_t off, int64_t len);

// oneDNN's name for the implementation of the last primitive made ("brg:avx512_core_amx_bf16"),
// "" before the first
std::string bf16_last_impl();

}  // namespace sae
