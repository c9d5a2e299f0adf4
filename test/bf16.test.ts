// bfloat16 training (train.precision, docs/engine.md#bfloat16): the cast and the bf16 GEMM against
// their TypeScript twins, the addon's argument checks, the engine wrapper's once-per-step casts,
// how train.precision resolves, and training quality and exact resume in bf16 against fp32.
// Where the CPU or the build has no bf16, the tests that need it are skipped, said in one line.
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import { spawnSync } from "node:child_process";
import path from "node:path";
import { loadNative, nativeEngine, type EngineChoice } from "../src/engine/index.ts";
import { ParamSet } from "../src/sae/params.ts";
import { createTopK } from "../src/sae/topk/fast.ts";
import { optimizerStep } from "../src/train/step.ts";
import { loadConfig } from "../src/config/load.ts";
import { jsEngine } from "../src/engine/js.ts";
import { BF16_MIN_DIM, bf16Engine, bf16ToFloat, jsBf16, resolvePrecision, type Bf16Kernels } from "../src/engine/bf16.ts";
import { SaeError } from "../src/errors.ts";
import { Rng } from "../src/rng.ts";
import { BIN, cli, randn, tmpDir, trainInterrupted } from "./helpers.ts";

const { addon, error } = loadNative();
const noAddon = addon ? false : `native addon not built (${error})`;
const bf = addon?.info().bf16;
const noBf16 = !addon ? noAddon : !bf ? "the native addon predates bf16 (npm run build:native)" : bf.available ? false : bf.reason;
if (noBf16) console.log(`bf16 tests skipped: ${noBf16}`);

const f32 = (n: number, seed: number, scale = 1) => randn(n, new Rng(seed), scale, Float32Array) as Float32Array;

/** the nearest bf16 to x by search (ties to the even pattern): the oracle of both casts */
function nearestBf16(x: number): number {
  const u = new Uint32Array(new Float32Array([x]).buffer)[0];
  if (Number.isNaN(x)) return (u >>> 16) | 0x40;
  const lo = u >>> 16, hi = lo + 1;
  if ((lo & 0x7f80) === 0x7f80) return lo; // ±inf
  // rounding up from the largest finite bf16 gives inf, which for the distance stands at ±2^128
  const up = (hi & 0x7fff) === 0x7f80 ? Math.sign(x) * 2 ** 128 : bf16ToFloat(hi);
  const dLo = Math.abs(x - bf16ToFloat(lo)), dHi = Math.abs(up - x);
  return dLo < dHi ? lo : dHi < dLo ? hi : lo % 2 === 0 ? lo : hi;
}

const SPECIAL = [0, -0, 1, -1, 1 + 2 ** -8, 1 + 3 * 2 ** -8, -(1 + 2 ** -8), 3.3895313892515355e38, 3.4e38, -3.4e38, 1e-40, -1e-45, 1.17549435e-38, Infinity, -Infinity, NaN, 65504, 0.1, 1 / 3];

test("castBf16 (TypeScript twin): the nearest bf16, ties to even, NaN quiet, overflow to inf", () => {
  const src = new Float32Array([...SPECIAL, ...f32(4000, 1, 10), ...f32(1000, 2, 1e-30), ...f32(1000, 3, 1e30)]);
  const out = new Uint16Array(src.length);
  jsBf16.castBf16(src, out);
  for (let i = 0; i < src.length; i++) assert.equal(out[i], nearestBf16(src[i]), `x = ${src[i]}`);
  assert.equal(out[4], 0x3f80, "1 + 2^-8 is a tie: to the even 1");
  assert.equal(out[5], 0x3f82, "1 + 3·2^-8 is a tie: to the even 1 + 2^-6");
  assert.equal(out[8], 0x7f80, "3.4e38 rounds past the largest bf16: inf");
  assert.ok(Number.isNaN(bf16ToFloat(out[15])), "NaN stays NaN");
});

test("castBf16: the native kernel matches its TypeScript twin bit for bit (threaded lengths too)", { skip: noAddon }, () => {
  for (const n of [SPECIAL.length, 1, 70_001, 300_000]) {
    const src = n === SPECIAL.length ? new Float32Array(SPECIAL) : f32(n, n, 100);
    const a = new Uint16Array(n), b = new Uint16Array(n);
    addon!.castBf16(src, a);
    jsBf16.castBf16(src, b);
    assert.deepEqual(a, b, `n = ${n}`);
  }
});

test("adamBf16: the native Adam's weights bit for bit, plus the bf16 copy of a stretch of them; the TypeScript twin agrees", { skip: noAddon }, () => {
  const n = 200_003;
  for (const [off, len] of [[0, n], [70_000, 100_000], [n - 5, 5], [123, 0]]) {
    const g = f32(n, 1), p0 = f32(n, 2), m0 = f32(n, 3, 0.01), v0 = f32(n, 4, 0.01).map(Math.abs);
    const [p1, m1, v1, p2, m2, v2] = [p0.slice(), m0.slice(), v0.slice(), p0.slice(), m0.slice(), v0.slice()];
    const out = new Uint16Array(len), want = new Uint16Array(len);
    addon!.adamBf16(p1, g, m1, v1, 1e-3, 0.9, 0.999, 1e-8, 0.19, 0.002, 0.7, out, off);
    addon!.adam(p2, g, m2, v2, 1e-3, 0.9, 0.999, 1e-8, 0.19, 0.002, 0.7);
    assert.deepEqual([p1, m1, v1], [p2, m2, v2], `off ${off} len ${len}: the weights and moments of adam`);
    addon!.castBf16(p2.subarray(off, off + len), want);
    assert.deepEqual(out, want, `off ${off} len ${len}: the copy is the cast of the updated weights`);
    const [p3, m3, v3] = [p0.slice(), m0.slice(), v0.slice()], out3 = new Uint16Array(len);
    jsBf16.adamBf16(p3, g, m3, v3, 1e-3, 0.9, 0.999, 1e-8, 0.19, 0.002, 0.7, out3, off);
    let worst = 0;
    for (let i = 0; i < n; i++) worst = Math.max(worst, Math.abs(p3[i] - p1[i]));
    assert.ok(worst < 1e-6, `TypeScript twin: max |Δp| = ${worst}`);
  }
});

/** max over C of |x − y| / Σ_k |a_k b_k|: bf16 products are exact, so this is the accumulation's rounding only */
function gemmError(tA: boolean, tB: boolean, M: number, N: number, K: number, A: Uint16Array, B: Uint16Array, x: Float32Array, y: Float32Array, beta: number, C0: Float32Array): number {
  let worst = 0;
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      let s = Math.abs(beta * C0[m * N + n]);
      for (let k = 0; k < K; k++) s += Math.abs(bf16ToFloat(A[tA ? k * M + m : m * K + k]) * bf16ToFloat(B[tB ? n * K + k : k * N + n]));
      worst = Math.max(worst, Math.abs(x[m * N + n] - y[m * N + n]) / (s || 1));
    }
  }
  return worst;
}

test("gemmBf16: oneDNN against the TypeScript twin, every transpose, alpha and beta, odd shapes", { skip: noBf16 }, () => {
  const bits = (x: Float32Array) => {
    const h = new Uint16Array(x.length);
    jsBf16.castBf16(x, h);
    return h;
  };
  let seed = 10;
  for (const [M, N, K] of [[7, 13, 29], [33, 65, 257], [64, 16, 32], [1, 5, 3]]) {
    for (const tA of [false, true]) {
      for (const tB of [false, true]) {
        for (const [alpha, beta] of [[1, 0], [0.5, 1], [-2, 0.25]]) {
          const A = bits(f32(M * K, seed++)), B = bits(f32(K * N, seed++)), C0 = f32(M * N, seed++);
          const x = C0.slice(), y = C0.slice();
          addon!.gemmBf16(tA, tB, M, N, K, alpha, A, B, beta, x);
          jsBf16.gemmBf16(tA, tB, M, N, K, alpha, A, B, beta, y);
          // float32 accumulation of K terms: at most about K·2^-24 relative to Σ|ab|
          const err = gemmError(tA, tB, M, N, K, A, B, x, y, beta, C0);
          assert.ok(err <= (K + 2) * 2 ** -23, `${M}x${N}x${K} tA=${tA} tB=${tB} α=${alpha} β=${beta}: error ${err}`);
        }
      }
    }
  }
  const C = new Float32Array(4).fill(3);
  addon!.gemmBf16(false, false, 2, 2, 0, 1, new Uint16Array(0), new Uint16Array(0), 0.5, C);
  assert.deepEqual([...C], [1.5, 1.5, 1.5, 1.5], "K = 0: C = β·C");
  assert.match(addon!.info().bf16.impl, /\S/, "the implementation oneDNN chose is named");
});

test("native addon: bad bf16 arguments throw errors instead of crashing", { skip: noAddon }, () => {
  const a = addon!;
  const h = new Uint16Array(6), x = new Float32Array(6);
  assert.throws(() => a.castBf16(x, new Uint16Array(5)), /castBf16: dst has length 5, expected 6/);
  assert.throws(() => a.castBf16(x, x as unknown as Uint16Array), /castBf16: dst must be a Uint16Array/);
  assert.throws(() => a.castBf16(h as unknown as Float32Array, h), /castBf16: src must be a Float32Array/);
  assert.throws(() => (a.castBf16 as (...args: unknown[]) => void)(x), /expected 2 arguments/);
  assert.throws(() => a.gemmBf16(false, false, 2, 3, 1, 1, h, h, 0, x), /gemmBf16: A has length 6, expected 2/);
  assert.throws(() => a.gemmBf16(false, false, 2, 3, 3, 1, h, x as unknown as Uint16Array, 0, x), /gemmBf16: B must be a Uint16Array/);
  assert.throws(() => a.gemmBf16(false, false, 2, 3, 3, 1, h, new Uint16Array(9), 0, new Float32Array(5)), /gemmBf16: C has length 5, expected 6/);
  assert.throws(() => a.gemmBf16(false, false, -2, 3, 3, 1, h, h, 0, x), /M must be a non-negative integer/);
  assert.throws(() => a.gemmBf16(false, false, 2, 3, 3, "1" as unknown as number, h, new Uint16Array(9), 0, x), /alpha must be a number/);
  assert.throws(() => (a.gemmBf16 as (...args: unknown[]) => void)(false), /expected 10 arguments/);
  assert.throws(() => a.adamBf16(x, x, x, x, 1, 0.9, 0.9, 1e-8, 1, 1, 1, new Uint16Array(4), 3), /adamBf16: out \(4 values from outOffset 3\) reaches past params \(6\)/);
  assert.throws(() => a.adamBf16(x, x, x, x, 1, 0.9, 0.9, 1e-8, 1, 1, 1, x as unknown as Uint16Array, 0), /adamBf16: out must be a Uint16Array/);
  assert.throws(() => a.adamBf16(x, x, new Float32Array(2), x, 1, 0.9, 0.9, 1e-8, 1, 1, 1, h, 0), /adamBf16: m has length 2, expected 6/);
  assert.throws(() => (a.adamBf16 as (...args: unknown[]) => void)(x), /expected 13 arguments/);
  if (noBf16) assert.throws(() => a.gemmBf16(false, false, 2, 3, 3, 1, h, new Uint16Array(9), 0, x), /bf16 is unavailable/);
});

test("bf16Engine: parameters cast once per step and again after newStep; views of them reuse the copy; thin GEMMs stay float32", () => {
  let casts = 0, castElems = 0;
  const counting: Bf16Kernels = { ...jsBf16, castBf16: (s, d) => { casts++; castElems += s.length; jsBf16.castBf16(s, d); } };
  const M = 20, N = 36, K = 18;
  const params = f32(N * K + 5, 1); // a buffer with a weight matrix view and a bias after it
  const W = params.subarray(0, N * K);
  const e = bf16Engine(jsEngine, counting, [W]);
  const X = f32(M * K, 2), C = new Float32Array(M * N), want = new Float32Array(M * N);
  const bits = (x: Float32Array) => {
    const h = new Uint16Array(x.length);
    jsBf16.castBf16(x, h);
    return h;
  };
  e.newStep();
  e.gemm(false, true, M, N, K, 1, X, W, 0, C);
  jsBf16.gemmBf16(false, true, M, N, K, 1, bits(X), bits(W), 0, want);
  assert.deepEqual(C, want, "the GEMM is the bf16 GEMM of the cast operands");
  assert.equal(casts, 2, "X and W cast");
  e.gemm(false, true, M, N / 2, K, 1, X, W.subarray(0, (N / 2) * K), 0, C.subarray(0, M * (N / 2)));
  assert.equal(casts, 3, "the second GEMM casts X only: W's rows are a view of the pinned copy");
  W[0] += 1; // an update between steps
  e.gemm(false, true, M, N, K, 1, X, W, 0, C);
  assert.deepEqual(C, want, "within a step the copy is not re-read");
  e.newStep();
  e.gemm(false, true, M, N, K, 1, X, W, 0, C);
  assert.equal(casts, 6, "after newStep W is cast again");
  assert.notDeepEqual(C, want);
  // thinner than BF16_MIN_DIM: the wrapped engine's float32 GEMM, exactly
  const thin = BF16_MIN_DIM - 1, Ct = new Float32Array(thin * N), Cw = new Float32Array(thin * N);
  const before = castElems;
  e.gemm(false, true, thin, N, K, 1, X.subarray(0, thin * K), W, 0, Ct);
  jsEngine.gemm(false, true, thin, N, K, 1, X.subarray(0, thin * K), W, 0, Cw);
  assert.deepEqual(Ct, Cw);
  assert.equal(castElems, before);
  assert.ok(e.takeCastMs() >= 0);
  // Adam writes W's copy as it writes W: the next step's GEMMs read it without a cast of their own
  const g = f32(params.length, 3), m = new Float32Array(params.length), v = new Float32Array(params.length);
  e.adam(params, g, m, v, 1e-2, 0.9, 0.999, 1e-8, 0.1, 0.001, 1);
  e.newStep();
  const n0 = castElems;
  e.gemm(false, true, M, N, K, 1, X, W, 0, C);
  assert.equal(castElems - n0, X.length, "only X is cast: W's copy came from Adam");
  jsBf16.gemmBf16(false, true, M, N, K, 1, bits(X), bits(W), 0, want);
  assert.deepEqual(C, want, "and it holds the updated W");
  // a write the wrapper sees (the renormalisation) makes the copy stale at once
  e.adam(params, g, m, v, 1e-2, 0.9, 0.999, 1e-8, 0.1, 0.001, 1);
  e.normalizeRows(W, N, K);
  const n1 = castElems;
  e.gemm(false, true, M, N, K, 1, X, W, 0, C);
  assert.equal(castElems - n1, X.length + W.length, "W is cast again after normalizeRows");
  jsBf16.gemmBf16(false, true, M, N, K, 1, bits(X), bits(W), 0, want);
  assert.deepEqual(C, want);
});

/** a sparse code [rows, k]: distinct ascending latents per row, every fifth value 0 (padding) */
function sparseCode(rows: number, k: number, H: number, seed: number): { idx: Int32Array; val: Float32Array } {
  const rng = new Rng(seed), idx = new Int32Array(rows * k), val = new Float32Array(rows * k);
  for (let b = 0; b < rows; b++) {
    const row = new Set<number>();
    while (row.size < k) row.add(Math.floor(rng.next() * H));
    [...row].sort((x, y) => x - y).forEach((h, j) => {
      idx[b * k + j] = h;
      val[b * k + j] = (b * k + j) % 5 === 4 ? 0 : 0.1 + rng.next();
    });
  }
  return { idx, val };
}
const bits = (x: Float32Array) => {
  const h = new Uint16Array(x.length);
  jsBf16.castBf16(x, h);
  return h;
};
const widened = (h: Uint16Array) => Float32Array.from(h, bf16ToFloat);

test("the sparse kernels' bf16 forms: the float32 kernels on the widened rows (bit for bit but for the dot products' rounding); the TypeScript twins agree", { skip: noAddon }, () => {
  const nat = nativeEngine(addon!);
  // D = 37: the vector loops' tails; H small enough that latents share many rows (threads split them)
  for (const [rows, k, H, D] of [[64, 6, 50, 37], [300, 16, 2000, 128]] as const) {
    const { idx, val } = sparseCode(rows, k, H, rows);
    const W = bits(f32(H * D, 1)), G = bits(f32(rows * D, 2)), Xc = bits(f32(rows * D, 3)), bias = f32(D, 4);
    const out = new Float32Array(rows * D), want = new Float32Array(rows * D), twin = new Float32Array(rows * D);
    addon!.gatherRowsBf16(idx, val, rows, k, W, H, D, bias, out);
    nat.gatherRows(idx, val, rows, k, widened(W), H, D, bias, want);
    assert.deepEqual(out, want, `gather ${rows}×${k}`);
    jsBf16.gatherRowsBf16(idx, val, rows, k, W, H, D, bias, twin);
    for (let i = 0; i < out.length; i++) assert.ok(Math.abs(out[i] - twin[i]) <= 1e-5 * (1 + Math.abs(twin[i])), `gather twin at ${i}: ${out[i]} vs ${twin[i]}`);
    const grads = () => ({ dWdec: f32(H * D, 5, 0.01), dWenc: f32(H * D, 6, 0.01), gpSum: f32(H, 7, 0.01) });
    const a = grads(), b = grads(), c = grads();
    addon!.sparseBackwardBf16(idx, val, rows, k, G, W, Xc, H, D, a.dWdec, a.dWenc, a.gpSum);
    nat.sparseBackward(idx, val, rows, k, widened(G), widened(W), widened(Xc), H, D, b.dWdec, b.dWenc, b.gpSum);
    // dW_dec's sums are the same loop; the dot products dp (and so dW_enc, gpSum) are SIMD
    // reductions whose lane split the compiler picks per element type: equal to rounding
    assert.deepEqual(a.dWdec, b.dWdec, `sparse backward ${rows}×${k}`);
    for (const key of ["dWenc", "gpSum"] as const)
      for (let i = 0; i < a[key].length; i++) assert.ok(Math.abs(a[key][i] - b[key][i]) <= 1e-5 * (1 + Math.abs(b[key][i])), `${key} at ${i}: ${a[key][i]} vs ${b[key][i]}`);
    jsBf16.sparseBackwardBf16(idx, val, rows, k, G, W, Xc, H, D, c.dWdec, c.dWenc, c.gpSum);
    for (const key of ["dWdec", "dWenc", "gpSum"] as const)
      for (let i = 0; i < a[key].length; i++) assert.ok(Math.abs(a[key][i] - c[key][i]) <= 1e-4 * (1 + Math.abs(c[key][i])), `${key} twin at ${i}: ${a[key][i]} vs ${c[key][i]}`);
    // the other sparse kernels' bf16 forms: the float32 kernels on the widened rows, and the twins
    const close = (x: Float32Array, y: Float32Array, tol: number, what: string) => {
      for (let i = 0; i < x.length; i++) assert.ok(Math.abs(x[i] - y[i]) <= tol * (1 + Math.abs(y[i])), `${what} at ${i}: ${x[i]} vs ${y[i]}`);
    };
    const val2 = Float32Array.from(val, (v, i) => (i % 3 === 0 ? 0 : 0.5 * v + 0.1));
    const forms = (f: (bf: boolean, native: boolean) => Float32Array[], exact: boolean[], what: string) => {
      const bfN = f(true, true), fpN = f(false, true), bfJ = f(true, false);
      bfN.forEach((x, i) => (exact[i] ? assert.deepEqual(x, fpN[i], what) : close(x, fpN[i], 1e-5, what)));
      bfN.forEach((x, i) => close(x, bfJ[i], 1e-4, `${what} twin`));
    };
    forms((bf, nat) => {
      const o1 = new Float32Array(rows * D), o2 = new Float32Array(rows * D);
      if (bf) (nat ? addon! : jsBf16).gatherRows2Bf16(idx, val, val2, rows, k, W, H, D, bias, o1, o2);
      else nativeEngine(addon!).gatherRows2(idx, val, val2, rows, k, widened(W), H, D, bias, o1, o2);
      return [o1, o2];
    }, [true, true], "gatherRows2");
    forms((bf, nat) => {
      const o = new Float32Array(rows * k);
      if (bf) (nat ? addon! : jsBf16).gatherDotBf16(idx, val, rows, k, G, W, H, D, o);
      else nativeEngine(addon!).gatherDot(idx, val, rows, k, widened(G), widened(W), H, D, o);
      return [o];
    }, [false], "gatherDot");
    forms((bf, nat) => {
      const o = f32(H * D, 12, 0.01);
      if (bf) (nat ? addon! : jsBf16).scatterRowsBf16(idx, val, rows, k, Xc, H, D, o);
      else nativeEngine(addon!).scatterRows(idx, val, rows, k, widened(Xc), H, D, o);
      return [o];
    }, [true], "scatterRows");
    forms((bf, nat) => {
      const dW = f32(H * D, 13, 0.01), o = new Float32Array(rows * k);
      if (bf) (nat ? addon! : jsBf16).scatterDotBf16(idx, val, val2, rows, k, G, W, H, D, dW, o);
      else nativeEngine(addon!).scatterDot(idx, val, val2, rows, k, widened(G), widened(W), H, D, dW, o);
      return [dW, o];
    }, [true, false], "scatterDot");
  }
  // the decoder's fused Adam with the copy: the same weights bit for bit, and their bf16 bits
  const rows = 300, cols = 37;
  const p1 = f32(rows * cols, 8), g = f32(rows * cols, 9), m1 = f32(rows * cols, 10, 0.1), v1 = Float32Array.from(f32(rows * cols, 11), Math.abs);
  p1.fill(0, 5 * cols, 6 * cols); // a zero row: no projection, nothing to renormalise, still copied
  const p2 = p1.slice(), m2 = m1.slice(), v2 = v1.slice(), copy = new Uint16Array(rows * cols);
  addon!.adamUnitRowsBf16(p1, g, m1, v1, rows, cols, 1e-2, 0.9, 0.999, 1e-8, 0.19, 0.002, 0.7, copy);
  addon!.adamUnitRows(p2, g, m2, v2, rows, cols, 1e-2, 0.9, 0.999, 1e-8, 0.19, 0.002, 0.7);
  assert.deepEqual([p1, m1, v1], [p2, m2, v2]);
  assert.deepEqual(copy, bits(p2));
  assert.throws(() => addon!.adamUnitRowsBf16(p1, g, m1, v1, rows, cols, 1, 0.9, 0.9, 1e-8, 1, 1, 1, new Uint16Array(5)), /adamUnitRowsBf16: out has length 5, expected 11100/);
  const inM = new Uint16Array(m1.buffer, m1.byteOffset, rows * cols); // a copy over the moments' own bytes
  assert.throws(() => addon!.adamUnitRowsBf16(p1, g, m1, v1, rows, cols, 1, 0.9, 0.9, 1e-8, 1, 1, 1, inM), /adamUnitRowsBf16: out overlaps params, grads, m or v/);
  assert.throws(() => addon!.adamBf16(p1, g, m1, v1, 1, 0.9, 0.9, 1e-8, 1, 1, 1, inM.subarray(0, 10), 0), /adamBf16: out overlaps params, grads, m or v/);
  // the addon's checks
  const { idx, val } = sparseCode(4, 2, 8, 1);
  const h = new Uint16Array(8 * 3), x = new Float32Array(8 * 3), o = new Float32Array(4 * 3), hb = new Uint16Array(4 * 3);
  assert.throws(() => addon!.gatherRowsBf16(idx, val, 4, 2, x as unknown as Uint16Array, 8, 3, null, o), /gatherRowsBf16: W must be a Uint16Array/);
  assert.throws(() => addon!.gatherRowsBf16(idx, val, 4, 2, h, 8, 4, null, o), /gatherRowsBf16: W has length 24, expected 32/);
  assert.throws(() => addon!.gatherRowsBf16(idx, val, 4, 2, h, 2, 12, null, o), /gatherRowsBf16: idx\[\d+\] = \d+ is outside \[0, 2\)/);
  assert.throws(() => addon!.sparseBackwardBf16(idx, val, 4, 2, hb, h, x as unknown as Uint16Array, 8, 3, x, x.slice(), new Float32Array(8)), /sparseBackwardBf16: Xc must be a Uint16Array/);
  assert.throws(() => addon!.sparseBackwardBf16(idx, val, 4, 2, hb, h, hb, 8, 3, x, x, new Float32Array(8)), /sparseBackwardBf16: W, dWdec and dWenc overlap/);
  assert.throws(() => (addon!.sparseBackwardBf16 as (...args: unknown[]) => void)(idx), /expected 12 arguments/);
  assert.throws(() => addon!.scatterRowsBf16(idx, val, 4, 2, o as unknown as Uint16Array, 8, 3, x), /scatterRowsBf16: X must be a Uint16Array/);
  assert.throws(() => addon!.scatterDotBf16(idx, val, null, 4, 2, hb, new Uint16Array(x.buffer, 0, 24), 8, 3, x, new Float32Array(8)), /scatterDotBf16: W and dW overlap/);
  assert.throws(() => addon!.gatherDotBf16(idx, val, 4, 2, hb, h, 8, 3, new Float32Array(7)), /gatherDotBf16: out has length 7, expected 8/);
  assert.throws(() => addon!.gatherRows2Bf16(idx, val, val, 4, 2, h, 8, 3, null, o, o), /gatherRows2Bf16: out and out2 must be different arrays/);
});

test("bf16Engine: the sparse kernels read bf16 rows of a pinned W (cast once per step) and of the batch; an unpinned W, and a parameter's own rows, stay float32", () => {
  const calls: string[] = [];
  const k16: Bf16Kernels = {
    ...jsBf16,
    gatherRowsBf16: (...a) => { calls.push("gather"); jsBf16.gatherRowsBf16(...a); },
    sparseBackwardBf16: (...a) => { calls.push("backward"); jsBf16.sparseBackwardBf16(...a); },
    scatterRowsBf16: (...a) => { calls.push("scatterRows"); jsBf16.scatterRowsBf16(...a); },
    scatterDotBf16: (...a) => { calls.push("scatterDot"); jsBf16.scatterDotBf16(...a); },
  };
  const rows = 40, k = 4, H = 30, D = 20;
  const W = f32(H * D, 1), other = f32(H * D, 2), G = f32(rows * D, 3), Xc = f32(rows * D, 4);
  const { idx, val } = sparseCode(rows, k, H, 9);
  const e = bf16Engine(jsEngine, k16, [W]);
  e.newStep();
  const out = new Float32Array(rows * D), want = new Float32Array(rows * D);
  e.gatherRows(idx, val, rows, k, W, H, D, null, out);
  jsBf16.gatherRowsBf16(idx, val, rows, k, bits(W), H, D, null, want);
  assert.deepEqual(out, want);
  e.gatherRows(idx, val, rows, k, other, H, D, null, out);
  jsEngine.gatherRows(idx, val, rows, k, other, H, D, null, want);
  assert.deepEqual(out, want, "an array that is not a parameter: the float32 kernel");
  const g1 = { dWdec: new Float32Array(H * D), dWenc: new Float32Array(H * D), gpSum: new Float32Array(H) };
  const g2 = { dWdec: new Float32Array(H * D), dWenc: new Float32Array(H * D), gpSum: new Float32Array(H) };
  e.sparseBackward(idx, val, rows, k, G, W, Xc, H, D, g1.dWdec, g1.dWenc, g1.gpSum);
  jsBf16.sparseBackwardBf16(idx, val, rows, k, bits(G), bits(W), bits(Xc), H, D, g2.dWdec, g2.dWenc, g2.gpSum);
  assert.deepEqual(g1, g2);
  assert.deepEqual(calls, ["gather", "backward"]);
  // the ReLU family's two halves: the batch's rows in bf16; a parameter's own rows (addScaledRows) stay float32
  const dW1 = new Float32Array(H * D), dW2 = new Float32Array(H * D), o1 = new Float32Array(rows * k), o2 = new Float32Array(rows * k);
  e.scatterDot(idx, val, val, rows, k, G, W, H, D, dW1, o1);
  jsBf16.scatterDotBf16(idx, val, val, rows, k, bits(G), bits(W), H, D, dW2, o2);
  assert.deepEqual([dW1, o1], [dW2, o2]);
  e.scatterRows(idx, val, rows, k, Xc, H, D, dW1);
  jsBf16.scatterRowsBf16(idx, val, rows, k, bits(Xc), H, D, dW2);
  assert.deepEqual(dW1, dW2);
  const ids = Int32Array.from({ length: H }, (_, i) => i), s = f32(H, 6);
  e.scatterRows(ids, s, H, 1, W, H, D, dW1);
  jsEngine.scatterRows(ids, s, H, 1, W, H, D, dW2);
  assert.deepEqual(dW1, dW2, "W's own rows: float32");
  assert.deepEqual(calls, ["gather", "backward", "scatterDot", "scatterRows"]);
  // the decoder's fused Adam writes W's copy: the next step's decode reads it without a cast
  let casts = 0;
  const counted = bf16Engine(jsEngine, { ...k16, castBf16: (a, b) => { casts += a.length; jsBf16.castBf16(a, b); } }, [W]);
  counted.newStep();
  counted.gatherRows(idx, val, rows, k, W, H, D, null, out);
  assert.equal(casts, W.length);
  const m = new Float32Array(H * D), v = new Float32Array(H * D);
  counted.adamUnitRows(W, f32(H * D, 5), m, v, H, D, 1e-2, 0.9, 0.999, 1e-8, 0.1, 0.001, 1);
  counted.newStep();
  counted.gatherRows(idx, val, rows, k, W, H, D, null, out);
  assert.equal(casts, W.length, "no second cast");
  jsBf16.gatherRowsBf16(idx, val, rows, k, bits(W), H, D, null, want);
  assert.deepEqual(out, want, "the copy holds the updated W");
});

test("bf16 steps with Adam writing the copy match steps with a cast pass of their own, bit for bit", { skip: noBf16 }, () => {
  const D = 64, H = 256, B = 128;
  const model = createTopK({ D, H }, { k: 8, kAux: 32, auxCoefficient: 1 / 32, applyBDecToInput: true });
  const nat = nativeEngine(addon!);
  const unfused: Bf16Kernels = { ...addon!, adamBf16: () => assert.fail("not called") };
  const run = (fused: boolean) => {
    const s = { p: new ParamSet(model.specs), m: new ParamSet(model.specs), v: new ParamSet(model.specs), adamT: 0 };
    s.p.buf.set(f32(s.p.buf.length, 5, 0.1));
    const views = Object.values(s.p.views) as Float32Array[];
    // unfused: Adam and the renormalisation bypass the wrapper, so every step casts its weights again
    const e = bf16Engine(nat, fused ? addon! : unfused, views);
    const plain = fused ? e : { ...e, adam: nat.adam, normalizeRows: nat.normalizeRows };
    const grads = s.p.like();
    for (let step = 0; step < 6; step++) {
      plain.newStep();
      optimizerStep(plain, model, s, grads, f32(B * D, 10 + step), B, { lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, gradClip: 1, coeff: 0, dead: null });
    }
    return s.p.buf;
  };
  assert.deepEqual(run(true), run(false));
});

test("train.precision resolves: fp32 as asked, auto falls back to fp32 where bf16 cannot run, bf16 there is refused with the reason", () => {
  const ts: EngineChoice = { engine: jsEngine, threads: 1, reason: "TypeScript engine", info: null };
  assert.equal(resolvePrecision("fp32", ts, "typescript").precision, "fp32");
  const auto = resolvePrecision("auto", ts, "typescript");
  assert.equal(auto.precision, "fp32");
  assert.match(auto.reason, /auto: bf16 needs the native engine/);
  const refused = (f: () => unknown, code: number, why: RegExp) => assert.throws(f, (err: unknown) => {
    assert.ok(err instanceof SaeError);
    assert.equal(err.exitCode, code);
    assert.match(err.message, why);
    assert.match(err.hint ?? "", /train\.precision: fp32/);
    return true;
  });
  refused(() => resolvePrecision("bf16", ts, "typescript"), 1, /bf16 cannot run here: bf16 needs the native engine/);
  refused(() => resolvePrecision("bf16", ts, "tfjs"), 2, /applies to the native engine; the tfjs engine trains in float32/);
  const noCpu = { engine: { ...jsEngine, name: "native" as const }, threads: 2, reason: "native", info: { threads: 2, blas: "", blasCore: "", blasCoreSource: "", compiler: "", simd: "avx2", bf16: { available: false, reason: "oneDNN finds no bf16 instructions on this CPU (its best: avx2)", isa: "avx2", onednn: "2.6.3", impl: "" } } };
  refused(() => resolvePrecision("bf16", noCpu, "native"), 1, /oneDNN finds no bf16 instructions on this CPU/);
  assert.equal(resolvePrecision("auto", noCpu, "native").precision, "fp32");
  // an addon built before some bf16 kernels existed (bf16 available, kernels missing): rebuild
  const cpu = { ...noCpu, info: { ...noCpu.info, bf16: { ...noCpu.info.bf16, available: true, reason: "", isa: "avx512_core_bf16" } } };
  const old = () => ({ ...jsBf16, gatherRowsBf16: undefined, scatterDotBf16: undefined });
  const fallback = resolvePrecision("auto", cpu, "native", old);
  assert.equal(fallback.precision, "fp32");
  assert.match(fallback.reason, /auto: the native addon predates the bf16 kernels gatherRowsBf16, scatterDotBf16; rebuild it with `npm run build:native`/);
  refused(() => resolvePrecision("bf16", cpu, "native", old), 1, /predates the bf16 kernels/);
  assert.equal(resolvePrecision("auto", cpu, "native", () => jsBf16).precision, "bf16", "every kernel there");
});

test("sae doctor names the CPU's bf16 instructions and what train.precision auto picks", async () => {
  const r = await cli(["doctor"]);
  assert.equal(r.code, 0, r.err);
  const line = r.out.split("\n").find((l) => l.startsWith("bf16:")) ?? "";
  assert.match(line, noBf16 ? /^bf16: +unavailable: .*train\.precision auto picks fp32$/ : /^bf16: +oneDNN \d+\.\d+\.\d+, \w+ .*train\.precision auto picks bf16$/);
  assert.match(line, /\(CPU: (amx_bf16|avx512_bf16|no bf16 instructions)/);
});

test("a CPU without bf16 (oneDNN capped at AVX2): doctor says auto picks fp32, train.precision bf16 exits 1 with the reason", { skip: bf?.onednn ? false : "the native engine was built without oneDNN" }, () => {
  const env = { ...process.env, ONEDNN_MAX_CPU_ISA: "AVX2" };
  const doc = spawnSync(process.execPath, [BIN, "doctor"], { encoding: "utf8", env, timeout: 60_000 });
  assert.equal(doc.status, 0, doc.stderr);
  assert.match(doc.stdout, /^bf16: +unavailable: oneDNN finds no bf16 instructions on this CPU \(its best: \w+;.*train\.precision auto picks fp32$/m);
  const dir = tmpDir("sae-bf16-");
  const cfg = path.join(dir, "q.yaml");
  fs.writeFileSync(cfg, QUICK.replace("steps: 600", "steps: 2"));
  const run = (precision: string) => spawnSync(process.execPath, [BIN, "train", cfg, "--runs-dir", path.join(dir, "runs"), "--run-id", precision, "--set", `train.precision=${precision}`], { encoding: "utf8", env, timeout: 60_000 });
  const bad = run("bf16");
  assert.equal(bad.status, 1, bad.stderr);
  assert.match(bad.stderr, /^error: train\.precision: bf16 cannot run here: oneDNN finds no bf16 instructions/m);
  assert.match(bad.stderr, /^hint: set train\.precision: fp32/m);
  assert.ok(!fs.existsSync(path.join(dir, "runs", "bf16")), "the refused run leaves no folder");
  const auto = run("auto");
  assert.equal(auto.status, 0, auto.stderr);
  assert.match(auto.stderr, /; precision fp32 \(auto: oneDNN finds no bf16 instructions/);
});

// Quality at quickstart size (the README's performance section has the full table): the same seed
// in fp32 and bf16 reaches the same FVU within 1% (relative), the same L0 (TopK) or within 2%
// (a penalty variant), and the dead fraction within one percentage point.
const QUICK = `name: q
data:
  d_in: 64
  synthetic: { n_features: 256, mean_active: 4, decay: 0.995, magnitude_min: 0.5 }
  eval_tokens: 8192
sae:
  variant: topk
  d_sae: 512
  k: 8
train:
  steps: 600
  batch_size: 1024
  lr: 0.002
  dead_tokens_threshold: 200000
  log_every: 100
`;

test("bf16 training matches fp32 with the same seed: TopK and a standard SAE at quickstart size", { skip: noBf16 }, async (t) => {
  const dir = tmpDir("sae-bf16-");
  const cfg = path.join(dir, "q.yaml");
  fs.writeFileSync(cfg, QUICK);
  const runs = path.join(dir, "runs");
  const evalOf = async (id: string, precision: string, ...sets: string[]) => {
    const r = await cli(["train", cfg, "--runs-dir", runs, "--run-id", id, "--set", `train.precision=${precision}`, ...sets.flatMap((s) => ["--set", s])]);
    assert.equal(r.code, 0, r.err);
    assert.match(r.err.split("\n").find((l) => l.startsWith(`run ${id}:`)) ?? "", new RegExp(`; precision ${precision}`), "the run's first line says the precision");
    assert.equal(JSON.parse(fs.readFileSync(path.join(runs, id, "status.json"), "utf8")).precision, precision);
    return JSON.parse(fs.readFileSync(path.join(runs, id, "eval.json"), "utf8")) as { fvu: number; l0: number; dead_frac: number };
  };
  for (const [name, sets, l0Tol] of [["topk", [], 0], ["standard", ["sae.variant=standard", "sae.l1_coefficient=0.3"], 0.02]] as const) {
    const a = await evalOf(`${name}-fp32`, "fp32", ...sets), b = await evalOf(`${name}-bf16`, "bf16", ...sets);
    t.diagnostic(`${name}: fp32 fvu ${a.fvu.toFixed(4)} l0 ${a.l0.toFixed(2)} dead ${(100 * a.dead_frac).toFixed(2)}%; bf16 fvu ${b.fvu.toFixed(4)} l0 ${b.l0.toFixed(2)} dead ${(100 * b.dead_frac).toFixed(2)}%`);
    const what = `${name}: fp32 fvu ${a.fvu} l0 ${a.l0} dead ${a.dead_frac}, bf16 fvu ${b.fvu} l0 ${b.l0} dead ${b.dead_frac}`;
    assert.ok(Math.abs(b.fvu - a.fvu) <= 0.01 * a.fvu, what);
    assert.ok(Math.abs(b.l0 - a.l0) <= l0Tol * a.l0 + (l0Tol === 0 ? 0.05 : 0), what);
    assert.ok(Math.abs(b.dead_frac - a.dead_frac) <= 0.01, what);
    assert.notEqual(a.fvu, b.fvu, `${name}: the bf16 run is not the fp32 run`);
  }
});

test("a bf16 run resumes exactly: the bf16 copies are made again from the float32 checkpoint", { skip: noBf16 }, async () => {
  const dir = tmpDir("sae-bf16-");
  const cfg = path.join(dir, "c.yaml");
  fs.writeFileSync(cfg, QUICK.replace("steps: 600", "steps: 60").replace("log_every: 100", "log_every: 10\n  checkpoint_every: 10\n  precision: bf16"));
  const runs = path.join(dir, "runs");
  assert.equal((await cli(["train", cfg, "--runs-dir", runs, "--run-id", "full"])).code, 0);
  const { config } = loadConfig(cfg, [`runs_dir=${runs}`]);
  await trainInterrupted(config, runs, "cut", 30);
  const r = await cli(["resume", "cut", "--runs-dir", runs]);
  assert.equal(r.code, 0, r.err);
  assert.match(r.err, /resuming from step-0*30\.json/);
  const weights = (id: string) => fs.readFileSync(path.join(runs, id, "final", "sae_weights.safetensors"));
  assert.deepEqual(weights("cut"), weights("full"));
});

test("a run from before train.precision resumes in fp32, not in the auto default", async () => {
  const { resumeConfig } = await import("../src/train/resume-config.ts");
  const { config } = loadConfig(null);
  assert.equal(config.train.precision, "auto", "the default");
  const before = JSON.parse(JSON.stringify(config));
  delete before.train.precision; // a checkpoint's record from before the key existed
  const r = resumeConfig(config, before, 10, "old");
  assert.equal(r.config.train.precision, "fp32");
  assert.deepEqual(r.changes, []);
  before.train.precision = "fp32"; // a later run, which recorded it
  assert.equal(resumeConfig({ ...config, train: { ...config.train, precision: "fp32" } }, before, 10, "new").config.train.precision, "fp32");
});
