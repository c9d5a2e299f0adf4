// N-API glue: checks every argument (count, type, length against the given dims, index ranges),
// then forwards raw pointers to kernels.cc. Bad input throws a JS TypeError/RangeError; nothing
// here may crash the process. No hidden native state except the thread count.
#define NAPI_VERSION 8
#include <napi.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <type_traits>

#include "bf16.h"
#include "kernels.h"

namespace {

struct Args {
  const Napi::CallbackInfo& info;
  const char* fn;
  Napi::Env env() const { return info.Env(); }

  [[noreturn]] void fail(const std::string& msg, bool range = false) const {
    std::string m = std::string(fn) + ": " + msg;
    if (range) throw Napi::RangeError::New(env(), m);
    throw Napi::TypeError::New(env(), m);
  }
  void count(size_t n) const {
    if (info.Length() != n)
      fail("expected " + std::to_string(n) + " arguments, received " + std::to_string(info.Length()));
  }
  int dim(size_t i, const char* name) const {
    if (!info[i].IsNumber()) fail(std::string(name) + " must be a number");
    double d = info[i].As<Napi::Number>().DoubleValue();
    if (!(d >= 0) || d != (double)(int64_t)d || d > 2147483647.0)
      fail(std::string(name) + " must be a non-negative integer, received " + std::to_string(d), true);
    return (int)d;
  }
  float num(size_t i, const char* name) const {
    if (!info[i].IsNumber()) fail(std::string(name) + " must be a number");
    return info[i].As<Napi::Number>().FloatValue();
  }
  bool flag(size_t i, const char* name) const {
    if (!info[i].IsBoolean()) fail(std::string(name) + " must be a boolean");
    return info[i].As<Napi::Boolean>().Value();
  }
  template <typename T, napi_typedarray_type Kind>
  T* typed(size_t i, const char* name, const char* kindName, int64_t expected, bool nullable) const {
    if (nullable && (info[i].IsNull() || info[i].IsUndefined())) return nullptr;
    if (!info[i].IsTypedArray() || info[i].As<Napi::TypedArray>().TypedArrayType() != Kind)
      fail(std::string(name) + " must be a " + kindName);
    auto arr = info[i].As<Napi::TypedArrayOf<T>>();
    if (expected >= 0 && (int64_t)arr.ElementLength() != expected)
      fail(std::string(name) + " has length " + std::to_string(arr.ElementLength()) + ", expected " +
               std::to_string(expected),
           true);
    return arr.Data();
  }
  float* f32(size_t i, const char* name, int64_t expected, bool nullable = false) const {
    return typed<float, napi_float32_array>(i, name, "Float32Array", expected, nullable);
  }
  double* f64(size_t i, const char* name, int64_t expected) const {
    return typed<double, napi_float64_array>(i, name, "Float64Array", expected, false);
  }
  bool isF64(size_t i) const {
    return info[i].IsTypedArray() && info[i].As<Napi::TypedArray>().TypedArrayType() == napi_float64_array;
  }
  int32_t* i32(size_t i, const char* name, int64_t expected) const {
    return typed<int32_t, napi_int32_array>(i, name, "Int32Array", expected, false);
  }
  uint8_t* u8(size_t i, const char* name, int64_t expected, bool nullable) const {
    return typed<uint8_t, napi_uint8_array>(i, name, "Uint8Array", expected, nullable);
  }
  // a sparse code's latent indices: an Int32Array of n entries, each in [0, H)
  const int32_t* latents(size_t i, int64_t n, int H) const {
    const int32_t* idx = i32(i, "idx", n);
    indices(idx, n, H, "idx");
    return idx;
  }
  void indices(const int32_t* idx, int64_t n, int limit, const char* name) const {
    for (int64_t j = 0; j < n; j++)
      if (idx[j] < 0 || idx[j] >= limit)
        fail(std::string(name) + "[" + std::to_string(j) + "] = " + std::to_string(idx[j]) +
                 " is outside [0, " + std::to_string(limit) + ")",
             true);
  }
};

Napi::Value Gemm(const Napi::CallbackInfo& info) {
  Args a{info, "gemm"};
  a.count(10);
  bool tA = a.flag(0, "transA"), tB = a.flag(1, "transB");
  int M = a.dim(2, "M"), N = a.dim(3, "N"), K = a.dim(4, "K");
  if (!info[5].IsNumber() || !info[8].IsNumber()) a.fail("alpha and beta must be numbers");
  double alpha = info[5].As<Napi::Number>().DoubleValue(), beta = info[8].As<Napi::Number>().DoubleValue();
  if (a.isF64(6)) {  // float64 throughout (the language model's forward pass)
    const double* A = a.f64(6, "A", (int64_t)M * K);
    const double* B = a.f64(7, "B", (int64_t)K * N);
    double* C = a.f64(9, "C", (int64_t)M * N);
    sae::gemm64(tA, tB, M, N, K, alpha, A, B, beta, C);
    return info.Env().Undefined();
  }
  const float* A = a.f32(6, "A", (int64_t)M * K);
  const float* B = a.f32(7, "B", (int64_t)K * N);
  float* C = a.f32(9, "C", (int64_t)M * N);
  sae::gemm(tA, tB, M, N, K, (float)alpha, A, B, (float)beta, C);
  return info.Env().Undefined();
}

Napi::Value AddBias(const Napi::CallbackInfo& info) {
  Args a{info, "addBias"};
  a.count(6);
  int rows = a.dim(2, "rows"), cols = a.dim(3, "cols");
  float* P = a.f32(0, "P", (int64_t)rows * cols);
  const float* bias = a.f32(1, "bias", cols, true);
  float* colSum = a.f32(5, "colSum", cols, true);
  sae::add_bias(P, bias, rows, cols, a.flag(4, "relu"), colSum);
  return info.Env().Undefined();
}

Napi::Value ReluBackward(const Napi::CallbackInfo& info) {
  Args a{info, "reluBackward"};
  a.count(6);
  int rows = a.dim(3, "rows"), cols = a.dim(4, "cols");
  float* G = a.f32(0, "G", (int64_t)rows * cols);
  const float* F = a.f32(1, "F", (int64_t)rows * cols);
  const float* add = a.f32(2, "colAdd", cols, true);
  float* colSum = a.f32(5, "colSum", cols, true);
  sae::relu_backward(G, F, add, rows, cols, colSum);
  return info.Env().Undefined();
}

Napi::Value ColSum(const Napi::CallbackInfo& info) {
  Args a{info, "colSum"};
  a.count(5);
  int rows = a.dim(1, "rows"), cols = a.dim(2, "cols");
  const float* A = a.f32(0, "A", (int64_t)rows * cols);
  const bool accumulate = a.flag(4, "accumulate");
  if (a.isF64(3)) sae::col_sum64(A, rows, cols, a.f64(3, "out", cols), accumulate);  // sums in float64
  else sae::col_sum(A, rows, cols, a.f32(3, "out", cols), accumulate);
  return info.Env().Undefined();
}

bool overlap(const void* x, int64_t xBytes, const void* y, int64_t yBytes) {
  const char *a = (const char*)x, *b = (const char*)y;
  return xBytes > 0 && yBytes > 0 && a < b + yBytes && b < a + xBytes;
}

Napi::Value TopkRows(const Napi::CallbackInfo& info) {
  Args a{info, "topkRows"};
  // 8 arguments, or 10 with pick (Int32Array of column numbers, or null) and picked [rows, pick.length]
  if (info.Length() != 10) a.count(8);
  int rows = a.dim(3, "rows"), cols = a.dim(4, "cols"), k = a.dim(5, "k");
  const float* P = a.f32(0, "P", (int64_t)rows * cols);
  const float* bias = a.f32(1, "bias", cols, true);
  const uint8_t* mask = a.u8(2, "mask", cols, true);
  int32_t* idx = a.i32(6, "idx", (int64_t)rows * k);
  float* val = a.f32(7, "val", (int64_t)rows * k);
  int candidates = cols;
  if (mask) {
    candidates = 0;
    for (int c = 0; c < cols; c++) candidates += mask[c] ? 1 : 0;
  }
  if (k > candidates)
    a.fail("k = " + std::to_string(k) + " exceeds the " + std::to_string(candidates) + " candidate columns", true);
  const int32_t* pick = nullptr;
  float* picked = nullptr;
  int npick = 0;
  if (info.Length() == 10 && !info[8].IsNull() && !info[8].IsUndefined()) {
    pick = a.i32(8, "pick", -1);
    npick = (int)info[8].As<Napi::Int32Array>().ElementLength();
    a.indices(pick, npick, cols, "pick");
    picked = a.f32(9, "picked", (int64_t)rows * npick);
    if (overlap(P, (int64_t)rows * cols * 4, picked, (int64_t)rows * npick * 4)) a.fail("P and picked overlap; picked must be a separate array");
  }
  sae::topk_rows(P, bias, mask, rows, cols, k, idx, val, pick, npick, picked);
  return info.Env().Undefined();
}

Napi::Value RowsAbove(const Napi::CallbackInfo& info) {
  Args a{info, "rowsAbove"};
  a.count(9);
  int rows = a.dim(3, "rows"), cols = a.dim(4, "cols"), kmax = a.dim(5, "kmax");
  const float* A = a.f32(0, "A", (int64_t)rows * cols);
  const float* bias = a.f32(1, "bias", cols, true);
  float threshold = a.num(2, "threshold");
  int32_t* idx = a.i32(6, "idx", (int64_t)rows * kmax);
  float* val = a.f32(7, "val", (int64_t)rows * kmax);
  int stop = a.dim(8, "stop");
  return Napi::Number::New(info.Env(), sae::rows_above(A, bias, threshold, rows, cols, kmax, idx, val, stop));
}

Napi::Value KthLargest(const Napi::CallbackInfo& info) {
  Args a{info, "kthLargest"};
  a.count(2);
  const float* v = a.f32(0, "a", -1);
  int64_t n = info[0].As<Napi::Float32Array>().ElementLength();
  int k = a.dim(1, "k");
  if (k < 1 || k > n) a.fail("k = " + std::to_string(k) + " must be in [1, " + std::to_string(n) + "]", true);
  return Napi::Number::New(info.Env(), sae::kth_largest(v, n, k));
}

Napi::Value BatchCutFn(const Napi::CallbackInfo& info) {
  Args a{info, "batchCut"};
  a.count(8);
  int B = a.dim(2, "B"), kc = a.dim(3, "kc");
  const int64_t n = (int64_t)B * kc;
  const int32_t* idx = a.i32(0, "idx", n);
  const float* val = a.f32(1, "val", n);
  if (!info[4].IsNumber()) a.fail("total must be a number");
  const double total = info[4].As<Napi::Number>().DoubleValue();
  if (!(total >= 1 && total <= (double)n && total == std::floor(total)))
    a.fail("total = " + std::to_string(total) + " must be an integer in [1, B·kc = " + std::to_string(n) + "]", true);
  const bool packed = a.flag(5, "packed");
  int32_t* outIdx = a.i32(6, "outIdx", n);
  float* outVal = a.f32(7, "outVal", n);
  const sae::BatchCut r = sae::batch_cut(idx, val, B, kc, (int64_t)total, packed, outIdx, outVal);
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("m", r.m);
  o.Set("positives", (double)r.positives);
  o.Set("complete", r.complete);
  return o;
}

Napi::Value ValuesAt(const Napi::CallbackInfo& info) {
  Args a{info, "valuesAt"};
  a.count(8);
  int rows = a.dim(2, "rows"), cols = a.dim(3, "cols"), k = a.dim(6, "k");
  const float* A = a.f32(0, "A", (int64_t)rows * cols);
  const float* bias = a.f32(1, "bias", cols, true);
  const int32_t* idx = a.latents(4, (int64_t)rows * k, cols);
  const float* val = a.f32(5, "val", (int64_t)rows * k);
  double* out = a.f64(7, "out", (int64_t)rows * k);
  sae::values_at(A, bias, rows, cols, idx, val, k, out);
  return info.Env().Undefined();
}

// The sparse kernels over rows of a matrix, in two forms (kernels.h): row inputs Float32Array, or
// Uint16Array of bf16 bits for the *Bf16 export. One template per binding, so both check alike.
template <typename T>
const T* rows_of(const Args& a, size_t i, const char* name, int64_t expected) {
  if constexpr (std::is_same_v<T, float>) return a.f32(i, name, expected);
  else return a.typed<uint16_t, napi_uint16_array>(i, name, "Uint16Array", expected, false);
}
// the export's name for the row type: the float32 form's, or the bf16 form's
template <typename T>
constexpr const char* form(const char* f32Name, const char* bf16Name) {
  return std::is_same_v<T, float> ? f32Name : bf16Name;
}

template <typename T>
Napi::Value GatherRows(const Napi::CallbackInfo& info) {
  Args a{info, form<T>("gatherRows", "gatherRowsBf16")};
  a.count(9);
  int rows = a.dim(2, "rows"), k = a.dim(3, "k"), H = a.dim(5, "H"), D = a.dim(6, "D");
  const int32_t* idx = a.latents(0, (int64_t)rows * k, H);
  const float* val = a.f32(1, "val", (int64_t)rows * k);
  const T* W = rows_of<T>(a, 4, "W", (int64_t)H * D);
  const float* bias = a.f32(7, "bias", D, true);
  float* out = a.f32(8, "out", (int64_t)rows * D);
  sae::gather_rows(idx, val, rows, k, W, H, D, bias, out);
  return info.Env().Undefined();
}

template <typename T>
Napi::Value GatherRows2(const Napi::CallbackInfo& info) {
  Args a{info, form<T>("gatherRows2", "gatherRows2Bf16")};
  a.count(11);
  int rows = a.dim(3, "rows"), k = a.dim(4, "k"), H = a.dim(6, "H"), D = a.dim(7, "D");
  const int64_t n = (int64_t)rows * k;
  const int32_t* idx = a.latents(0, n, H);
  const float* val = a.f32(1, "val", n);
  const float* val2 = a.f32(2, "val2", n);
  const T* W = rows_of<T>(a, 5, "W", (int64_t)H * D);
  const float* bias = a.f32(8, "bias", D, true);
  float* out = a.f32(9, "out", (int64_t)rows * D);
  float* out2 = a.f32(10, "out2", (int64_t)rows * D);
  if (out == out2 && rows > 0 && D > 0) a.fail("out and out2 must be different arrays");
  sae::gather_rows2(idx, val, val2, rows, k, W, H, D, bias, out, out2);
  return info.Env().Undefined();
}

template <typename T>
Napi::Value GatherDot(const Napi::CallbackInfo& info) {
  Args a{info, form<T>("gatherDot", "gatherDotBf16")};
  a.count(9);
  int rows = a.dim(2, "rows"), k = a.dim(3, "k"), H = a.dim(6, "H"), D = a.dim(7, "D");
  const int32_t* idx = a.latents(0, (int64_t)rows * k, H);
  const float* val = a.f32(1, "val", (int64_t)rows * k, true);
  const T* G = rows_of<T>(a, 4, "G", (int64_t)rows * D);
  const T* W = rows_of<T>(a, 5, "W", (int64_t)H * D);
  float* out = a.f32(8, "out", (int64_t)rows * k);
  sae::gather_dot(idx, val, rows, k, G, W, H, D, out);
  return info.Env().Undefined();
}

template <typename T>
Napi::Value ScatterRows(const Napi::CallbackInfo& info) {
  Args a{info, form<T>("scatterRows", "scatterRowsBf16")};
  a.count(8);
  int rows = a.dim(2, "rows"), k = a.dim(3, "k"), H = a.dim(5, "H"), D = a.dim(6, "D");
  const int32_t* idx = a.latents(0, (int64_t)rows * k, H);
  const float* val = a.f32(1, "val", (int64_t)rows * k);
  const T* X = rows_of<T>(a, 4, "X", (int64_t)rows * D);
  float* out = a.f32(7, "out", (int64_t)H * D);
  sae::scatter_rows(idx, val, rows, k, X, H, D, out);
  return info.Env().Undefined();
}

template <typename T>
Napi::Value ScatterDot(const Napi::CallbackInfo& info) {
  Args a{info, form<T>("scatterDot", "scatterDotBf16")};
  a.count(11);
  int rows = a.dim(3, "rows"), k = a.dim(4, "k"), H = a.dim(7, "H"), D = a.dim(8, "D");
  const int64_t n = (int64_t)rows * k, len = (int64_t)H * D;
  const int32_t* idx = a.latents(0, n, H);
  const float* val = a.f32(1, "val", n);
  const float* sel = a.f32(2, "sel", n, true);
  const T* G = rows_of<T>(a, 5, "G", (int64_t)rows * D);
  const T* W = rows_of<T>(a, 6, "W", len);
  float* dW = a.f32(9, "dW", len);
  float* out = a.f32(10, "out", n);
  if (overlap(W, len * (int64_t)sizeof(T), dW, len * 4)) a.fail("W and dW overlap; dW must be a separate array");
  sae::scatter_dot(idx, val, sel, rows, k, G, W, H, D, dW, out);
  return info.Env().Undefined();
}

template <typename T>
Napi::Value SparseBackward(const Napi::CallbackInfo& info) {
  Args a{info, form<T>("sparseBackward", "sparseBackwardBf16")};
  // 12 arguments, or 14 with overwrite (boolean) and rowSq (Float64Array [H], or null)
  if (info.Length() != 14) a.count(12);
  int rows = a.dim(2, "rows"), k = a.dim(3, "k"), H = a.dim(7, "H"), D = a.dim(8, "D");
  const int64_t n = (int64_t)rows * k, len = (int64_t)H * D;
  const int32_t* idx = a.latents(0, n, H);
  const float* val = a.f32(1, "val", n);
  const T* G = rows_of<T>(a, 4, "G", (int64_t)rows * D);
  const T* W = rows_of<T>(a, 5, "W", len);
  const T* Xc = rows_of<T>(a, 6, "Xc", (int64_t)rows * D);
  float* dWdec = a.f32(9, "dWdec", len);
  float* dWenc = a.f32(10, "dWenc", len);
  float* gpSum = a.f32(11, "gpSum", H);
  const int64_t wb = len * (int64_t)sizeof(T);
  if (overlap(W, wb, dWdec, len * 4) || overlap(W, wb, dWenc, len * 4) || overlap(dWdec, len * 4, dWenc, len * 4))
    a.fail("W, dWdec and dWenc overlap; the two gradients must be separate arrays, apart from W");
  const bool overwrite = info.Length() == 14 && a.flag(12, "overwrite");
  double* rowSq = info.Length() == 14 && !info[13].IsNull() && !info[13].IsUndefined() ? a.f64(13, "rowSq", H) : nullptr;
  sae::sparse_backward(idx, val, rows, k, G, W, Xc, H, D, dWdec, dWenc, gpSum, overwrite, rowSq);
  return info.Env().Undefined();
}

// Adam's arguments, shared by adam, adamUnitRows and adamBf16: params, grads, m, v of one length
// (`expected`, or params' own when −1) at 0–3, then lr, beta1, beta2, eps, bc1, bc2, gradScale from
// position `hyper`
struct AdamArgs {
  float* p;
  const float* g;
  float* m;
  float* v;
  int64_t n;
  float lr, beta1, beta2, eps, bc1, bc2, gradScale;
};
static AdamArgs adam_args(Args& a, int64_t expected = -1, size_t hyper = 4) {
  float* p = a.f32(0, "params", expected);
  int64_t n = a.info[0].As<Napi::Float32Array>().ElementLength();
  const float* g = a.f32(1, "grads", n);
  float* m = a.f32(2, "m", n);
  float* v = a.f32(3, "v", n);
  return {p, g, m, v, n, a.num(hyper, "lr"), a.num(hyper + 1, "beta1"), a.num(hyper + 2, "beta2"), a.num(hyper + 3, "eps"),
          a.num(hyper + 4, "bc1"), a.num(hyper + 5, "bc2"), a.num(hyper + 6, "gradScale")};
}

// a bf16 copy's out [len] against Adam's four float32 arrays (an aliased out would write its bits
// into the weights or moments being updated)
static bool out_overlaps(const AdamArgs& d, const uint16_t* out, int64_t len) {
  const int64_t b = d.n * 4;
  return overlap(out, len * 2, d.p, b) || overlap(out, len * 2, d.g, b) || overlap(out, len * 2, d.m, b) || overlap(out, len * 2, d.v, b);
}

Napi::Value Adam(const Napi::CallbackInfo& info) {
  Args a{info, "adam"};
  a.count(11);
  const AdamArgs d = adam_args(a);
  sae::adam(d.p, d.g, d.m, d.v, d.n, d.lr, d.beta1, d.beta2, d.eps, d.bc1, d.bc2, d.gradScale);
  return info.Env().Undefined();
}

Napi::Value AdamUnitRows(const Napi::CallbackInfo& info) {
  Args a{info, "adamUnitRows"};
  a.count(13);
  int rows = a.dim(4, "rows"), cols = a.dim(5, "cols");
  const AdamArgs d = adam_args(a, (int64_t)rows * cols, 6);
  sae::adam_unit_rows(d.p, d.g, d.m, d.v, rows, cols, d.lr, d.beta1, d.beta2, d.eps, d.bc1, d.bc2, d.gradScale);
  return info.Env().Undefined();
}

Napi::Value RowNorms(const Napi::CallbackInfo& info) {
  Args a{info, "rowNorms"};
  a.count(4);
  int rows = a.dim(1, "rows"), cols = a.dim(2, "cols");
  sae::row_norms(a.f32(0, "W", (int64_t)rows * cols), rows, cols, a.f32(3, "out", rows));
  return info.Env().Undefined();
}

Napi::Value ProjectRows(const Napi::CallbackInfo& info) {
  Args a{info, "projectRows"};
  a.count(4);
  int rows = a.dim(2, "rows"), cols = a.dim(3, "cols");
  sae::project_rows(a.f32(0, "G", (int64_t)rows * cols), a.f32(1, "W", (int64_t)rows * cols), rows, cols);
  return info.Env().Undefined();
}

Napi::Value NormalizeRows(const Napi::CallbackInfo& info) {
  Args a{info, "normalizeRows"};
  a.count(3);
  int rows = a.dim(1, "rows"), cols = a.dim(2, "cols");
  sae::normalize_rows(a.f32(0, "W", (int64_t)rows * cols), rows, cols);
  return info.Env().Undefined();
}

Napi::Value Attention(const Napi::CallbackInfo& info) {
  Args a{info, "attention"};
  a.count(10);
  int S = a.dim(3, "S"), pos = a.dim(4, "pos"), maxLen = a.dim(5, "maxLen");
  int heads = a.dim(6, "heads"), kvHeads = a.dim(7, "kvHeads"), hs = a.dim(8, "hs");
  if (heads == 0 || kvHeads == 0 || heads % kvHeads != 0) a.fail("heads must be a positive multiple of kvHeads", true);
  if (pos >= maxLen) a.fail("pos " + std::to_string(pos) + " must be below maxLen " + std::to_string(maxLen), true);
  const int64_t dim = (int64_t)heads * hs, cache = (int64_t)S * maxLen * kvHeads * hs;
  const double* q = a.f64(0, "q", S * dim);
  const double* kc = a.f64(1, "kc", cache);
  const double* vc = a.f64(2, "vc", cache);
  double* out = a.f64(9, "out", S * dim);
  sae::attention(q, kc, vc, S, pos, maxLen, heads, kvHeads, hs, out);
  return info.Env().Undefined();
}

Napi::Value SumSquares(const Napi::CallbackInfo& info) {
  Args a{info, "sumSquares"};
  a.count(1);
  float* p = a.f32(0, "a", -1);
  int64_t n = info[0].As<Napi::Float32Array>().ElementLength();
  return Napi::Number::New(info.Env(), sae::sum_squares(p, n));
}

Napi::Value Zero(const Napi::CallbackInfo& info) {
  Args a{info, "zero"};
  a.count(1);
  float* p = a.f32(0, "a", -1);
  sae::zero(p, (int64_t)info[0].As<Napi::Float32Array>().ElementLength());
  return info.Env().Undefined();
}

Napi::Value Axpby(const Napi::CallbackInfo& info) {
  Args a{info, "axpby"};
  a.count(5);
  float* X = a.f32(1, "X", -1);
  const int64_t n = info[1].As<Napi::Float32Array>().ElementLength();
  const float* Y = a.f32(3, "Y", -1, true);
  const bool hasY = !info[3].IsNull() && !info[3].IsUndefined();
  const int64_t ny = hasY ? (int64_t)info[3].As<Napi::Float32Array>().ElementLength() : 0;
  if (hasY && !(ny == n || (ny > 0 && n % ny == 0)))
    a.fail("Y has length " + std::to_string(ny) + ", expected " + std::to_string(n) +
               " (as X) or a divisor of it (a row repeated)", true);
  float* out = a.f32(4, "out", n, true);
  if (!info[0].IsNumber()) a.fail("a must be a number");
  if (!info[2].IsNumber()) a.fail("b must be a number");
  const double alpha = info[0].As<Napi::Number>().DoubleValue(), beta = info[2].As<Napi::Number>().DoubleValue();
  return Napi::Number::New(info.Env(), sae::axpby(alpha, X, beta, Y, ny, out, n));
}

Napi::Value SetThreads(const Napi::CallbackInfo& info) {
  Args a{info, "setThreads"};
  a.count(1);
  int n = a.dim(0, "threads");
  if (n < 1) a.fail("threads must be at least 1", true);
  sae::set_threads(n);
  sae::bf16_set_threads(n);
  return info.Env().Undefined();
}

Napi::Value Info(const Napi::CallbackInfo& info) {
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("threads", sae::get_threads());
  o.Set("blas", sae::blas_config());
  o.Set("blasCore", sae::blas_core());
  o.Set("compiler", std::string("g++ ") + __VERSION__);
#if defined(__AVX512F__)
  o.Set("simd", "avx512");
#elif defined(__AVX2__)
  o.Set("simd", "avx2");
#else
  o.Set("simd", "sse");
#endif
  const sae::Bf16Info b = sae::bf16_info();
  Napi::Object bf = Napi::Object::New(info.Env());
  bf.Set("available", b.available);
  bf.Set("reason", b.reason);
  bf.Set("isa", b.isa);
  bf.Set("onednn", b.version);
  bf.Set("impl", sae::bf16_last_impl());
  o.Set("bf16", bf);
  return o;
}

// bfloat16 (bf16.h): arrays of bf16 values are Uint16Arrays of their bit patterns.
uint16_t* u16(const Args& a, size_t i, const char* name, int64_t expected) {
  return a.typed<uint16_t, napi_uint16_array>(i, name, "Uint16Array", expected, false);
}

Napi::Value CastBf16(const Napi::CallbackInfo& info) {
  Args a{info, "castBf16"};
  a.count(2);
  const float* src = a.f32(0, "src", -1);
  int64_t n = info[0].As<Napi::Float32Array>().ElementLength();
  sae::cast_bf16(src, u16(a, 1, "dst", n), n);
  return info.Env().Undefined();
}

Napi::Value GemmBf16(const Napi::CallbackInfo& info) {
  Args a{info, "gemmBf16"};
  a.count(10);
  bool tA = a.flag(0, "transA"), tB = a.flag(1, "transB");
  int M = a.dim(2, "M"), N = a.dim(3, "N"), K = a.dim(4, "K");
  float alpha = a.num(5, "alpha"), beta = a.num(8, "beta");
  const uint16_t* A = u16(a, 6, "A", (int64_t)M * K);
  const uint16_t* B = u16(a, 7, "B", (int64_t)K * N);
  float* C = a.f32(9, "C", (int64_t)M * N);
  const sae::Bf16Info b = sae::bf16_info();
  if (!b.available) throw Napi::Error::New(info.Env(), "gemmBf16: bf16 is unavailable: " + b.reason);
  try {
    sae::gemm_bf16(tA, tB, M, N, K, alpha, A, B, beta, C);
  } catch (const std::exception& e) {
    throw Napi::Error::New(info.Env(), std::string("gemmBf16: ") + e.what());
  }
  return info.Env().Undefined();
}

Napi::Value AdamBf16(const Napi::CallbackInfo& info) {
  Args a{info, "adamBf16"};
  a.count(13);
  const AdamArgs d = adam_args(a);
  const int64_t n = d.n;
  uint16_t* out = u16(a, 11, "out", -1);
  int64_t len = info[11].As<Napi::Uint16Array>().ElementLength();
  int64_t off = a.dim(12, "outOffset");
  if (off + len > n)
    a.fail("out (" + std::to_string(len) + " values from outOffset " + std::to_string(off) + ") reaches past params (" + std::to_string(n) + ")", true);
  if (out_overlaps(d, out, len)) a.fail("out overlaps params, grads, m or v; the bf16 copy must be an array of its own");
  sae::adam_cast_bf16(d.p, d.g, d.m, d.v, n, d.lr, d.beta1, d.beta2, d.eps, d.bc1, d.bc2, d.gradScale, out, off, len);
  return info.Env().Undefined();
}

// adamUnitRows that also writes the bf16 copy of the updated rows (the decoder a bf16 step's sparse
// decode reads), cast in the same pass
Napi::Value AdamUnitRowsBf16(const Napi::CallbackInfo& info) {
  Args a{info, "adamUnitRowsBf16"};
  a.count(14);
  int rows = a.dim(4, "rows"), cols = a.dim(5, "cols");
  const AdamArgs d = adam_args(a, (int64_t)rows * cols, 6);
  uint16_t* out = u16(a, 13, "out", (int64_t)rows * cols);
  if (out_overlaps(d, out, (int64_t)rows * cols)) a.fail("out overlaps params, grads, m or v; the bf16 copy must be an array of its own");
  sae::adam_unit_rows(d.p, d.g, d.m, d.v, rows, cols, d.lr, d.beta1, d.beta2, d.eps, d.bc1, d.bc2, d.gradScale, out);
  return info.Env().Undefined();
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("gemm", Napi::Function::New(env, Gemm));
  exports.Set("addBias", Napi::Function::New(env, AddBias));
  exports.Set("reluBackward", Napi::Function::New(env, ReluBackward));
  exports.Set("colSum", Napi::Function::New(env, ColSum));
  exports.Set("topkRows", Napi::Function::New(env, TopkRows));
  exports.Set("rowsAbove", Napi::Function::New(env, RowsAbove));
  exports.Set("kthLargest", Napi::Function::New(env, KthLargest));
  exports.Set("gatherRows", Napi::Function::New(env, GatherRows<float>));
  exports.Set("gatherRows2", Napi::Function::New(env, GatherRows2<float>));
  exports.Set("gatherDot", Napi::Function::New(env, GatherDot<float>));
  exports.Set("scatterRows", Napi::Function::New(env, ScatterRows<float>));
  exports.Set("scatterDot", Napi::Function::New(env, ScatterDot<float>));
  exports.Set("adam", Napi::Function::New(env, Adam));
  exports.Set("adamUnitRows", Napi::Function::New(env, AdamUnitRows));
  exports.Set("rowNorms", Napi::Function::New(env, RowNorms));
  exports.Set("projectRows", Napi::Function::New(env, ProjectRows));
  exports.Set("normalizeRows", Napi::Function::New(env, NormalizeRows));
  exports.Set("sumSquares", Napi::Function::New(env, SumSquares));
  exports.Set("zero", Napi::Function::New(env, Zero));
  exports.Set("sparseBackward", Napi::Function::New(env, SparseBackward<float>));
  exports.Set("batchCut", Napi::Function::New(env, BatchCutFn));
  exports.Set("valuesAt", Napi::Function::New(env, ValuesAt));
  exports.Set("axpby", Napi::Function::New(env, Axpby));
  exports.Set("attention", Napi::Function::New(env, Attention));
  exports.Set("castBf16", Napi::Function::New(env, CastBf16));
  exports.Set("gemmBf16", Napi::Function::New(env, GemmBf16));
  exports.Set("adamBf16", Napi::Function::New(env, AdamBf16));
  exports.Set("adamUnitRowsBf16", Napi::Function::New(env, AdamUnitRowsBf16));
  exports.Set("gatherRowsBf16", Napi::Function::New(env, GatherRows<uint16_t>));
  exports.Set("gatherRows2Bf16", Napi::Function::New(env, GatherRows2<uint16_t>));
  exports.Set("gatherDotBf16", Napi::Function::New(env, GatherDot<uint16_t>));
  exports.Set("scatterRowsBf16", Napi::Function::New(env, ScatterRows<uint16_t>));
  exports.Set("scatterDotBf16", Napi::Function::New(env, ScatterDot<uint16_t>));
  exports.Set("sparseBackwardBf16", Napi::Function::New(env, SparseBackward<uint16_t>));
  exports.Set("setThreads", Napi::Function::New(env, SetThreads));
  exports.Set("info", Napi::Function::New(env, Info));
  return exports;
}

}  // namespace

NODE_API_MODULE(sae_native, Init)
