// Native kernels against the TypeScript reference, on odd and power-of-two shapes, plus the
// addon's argument checks (bad input must throw, never crash the process).
import { test } from "node:test";
import assert from "node:assert/strict";
import { jsEngine } from "../src/engine/js.ts";
import { loadNative, nativeEngine } from "../src/engine/index.ts";
import type { Engine } from "../src/engine/types.ts";
import { Rng } from "../src/rng.ts";
import { maxAbsDiff, randn } from "./helpers.ts";
import { Sparsifier } from "../src/sae/sparse.ts";
import { Workspace } from "../src/sae/variant.ts";

const { addon, error } = loadNative();
const skip = addon ? false : process.env.CI ? false : `native addon not built (${error})`;
if (!addon && process.env.CI) throw new Error(`native addon must load under CI: ${error}`);
const nat: Engine = addon ? nativeEngine(addon) : jsEngine;

const SHAPES = [
  { B: 7, D: 13, H: 29, K: 5 },
  { B: 16, D: 32, H: 64, K: 8 },
  { B: 33, D: 65, H: 257, K: 17 },
];
const f32 = (n: number, seed: number, scale = 1) => randn(n, new Rng(seed), scale, Float32Array) as Float32Array;

function close(name: string, a: ArrayLike<number>, b: ArrayLike<number>, tol: number) {
  const d = maxAbsDiff(a, b);
  assert.ok(d <= tol, `${name}: max |native − reference| = ${d} > ${tol}`);
}

test("attention (grouped-query, every position of the cache) against the reference", { skip }, () => {
  for (const [S, heads, kvHeads, hs, maxLen] of [[3, 4, 2, 6, 9], [5, 8, 8, 16, 17]]) {
    const rng = new Rng(S);
    const q = randn(S * heads * hs, rng, 1, Float64Array) as Float64Array;
    const kc = randn(S * maxLen * kvHeads * hs, rng, 1, Float64Array) as Float64Array;
    const vc = randn(S * maxLen * kvHeads * hs, rng, 1, Float64Array) as Float64Array;
    for (let pos = 0; pos < maxLen; pos++) {
      const a = new Float64Array(S * heads * hs), b = new Float64Array(S * heads * hs);
      nat.attention(q, kc, vc, S, pos, maxLen, heads, kvHeads, hs, a);
      jsEngine.attention(q, kc, vc, S, pos, maxLen, heads, kvHeads, hs, b);
      close(`attention pos ${pos}`, a, b, 1e-12);
    }
  }
});

for (const { B, D, H, K } of SHAPES) {
  const tag = `B=${B} D=${D} H=${H} K=${K}`;

  test(`gemm, all four transposes (${tag})`, { skip }, () => {
    for (const [tA, tB] of [[false, false], [false, true], [true, false], [true, true]] as const) {
      const A = f32(B * D, 1), Bm = f32(D * H, 2), C0 = f32(B * H, 3);
      const c1 = C0.slice(), c2 = C0.slice();
      nat.gemm(tA, tB, B, H, D, 0.7, A, Bm, 0.3, c1);
      jsEngine.gemm(tA, tB, B, H, D, 0.7, A, Bm, 0.3, c2);
      close(`gemm(${tA},${tB})`, c1, c2, 1e-4);
      // float64 (the language model's forward pass): agrees to float64 rounding
      const A64 = Float64Array.from(A), B64 = Float64Array.from(Bm), d1 = Float64Array.from(C0), d2 = Float64Array.from(C0);
      nat.gemm(tA, tB, B, H, D, 0.7, A64, B64, 0.3, d1);
      jsEngine.gemm(tA, tB, B, H, D, 0.7, A64, B64, 0.3, d2);
      close(`float64 gemm(${tA},${tB})`, d1, d2, 1e-12);
    }
  });

  test(`addBias, reluBackward, colSum (${tag})`, { skip }, () => {
    for (const relu of [true, false]) {
      const P = f32(B * H, 4), bias = f32(H, 5);
      const a = P.slice(), b = P.slice(), s1 = new Float32Array(H), s2 = new Float32Array(H);
      nat.addBias(a, bias, B, H, relu, s1);
      jsEngine.addBias(b, bias, B, H, relu, s2);
      close("addBias", a, b, 0);
      close("addBias column sums", s1, s2, 1e-6 * B * 8); // float32 sums of B values in another order
      const c = P.slice();
      nat.addBias(c, bias, B, H, relu); // without the sums: the same values
      close("addBias without sums", c, a, 0);
    }
    const G = f32(B * H, 6), F = f32(B * H, 7), add = f32(H, 8);
    for (const colAdd of [add, null]) {
      const a = G.slice(), b = G.slice(), s1 = new Float32Array(H), s2 = new Float32Array(H);
      nat.reluBackward(a, F, colAdd, B, H, s1);
      jsEngine.reluBackward(b, F, colAdd, B, H, s2);
      close("reluBackward", a, b, 0);
      close("reluBackward column sums", s1, s2, 1e-6 * B * 8);
    }
    const o1 = f32(H, 9), o2 = o1.slice();
    nat.colSum(G, B, H, o1, true);
    jsEngine.colSum(G, B, H, o2, true);
    close("colSum", o1, o2, 1e-5);
  });

  test(`topkRows with and without mask, bias (${tag})`, { skip }, () => {
    const P = f32(B * H, 10), bias = f32(H, 11, 0.1);
    const mask = new Uint8Array(H).map((_, i) => (i % 3 === 0 ? 1 : 0));
    // k = H/2 takes the partition path (k a large part of the row), the others the heap
    for (const [m, k] of [[null, K], [mask, Math.min(K, Math.ceil(H / 3))], [null, Math.ceil(H / 2)]] as const) {
      const i1 = new Int32Array(B * k), i2 = new Int32Array(B * k);
      const v1 = new Float32Array(B * k), v2 = new Float32Array(B * k);
      nat.topkRows(P, bias, m, B, H, k, i1, v1);
      jsEngine.topkRows(P, bias, m, B, H, k, i2, v2);
      assert.deepEqual(i1, i2);
      close("topk values", v1, v2, 0);
      if (m) for (const i of i1) assert.equal(m[i], 1, "selected a masked-out column");
    }
  });

  test(`topkRows copies the picked columns of every row, whichever path selects (${tag})`, { skip }, () => {
    // AuxK's dense path reads its dead latents' pre-activations out of the encoder's blocks this
    // way: P's own values (no bias), in the order asked, repeats allowed, next to an unchanged top-k
    const P = f32(B * H, 12), bias = f32(H, 13, 0.1);
    const pick = new Int32Array([H - 1, 0, 5 % H, 5 % H, Math.floor(H / 2)]), n = pick.length;
    const mask = new Uint8Array(H).map((_, i) => (i % 3 === 0 ? 1 : 0));
    for (const [m, k] of [[null, K], [mask, Math.min(K, Math.ceil(H / 3))], [null, Math.ceil(H / 2)], [null, 0]] as const) {
      const i0 = new Int32Array(B * k), v0 = new Float32Array(B * k);
      nat.topkRows(P, bias, m, B, H, k, i0, v0);
      for (const e of [nat, jsEngine]) {
        const i1 = new Int32Array(B * k), v1 = new Float32Array(B * k), picked = new Float32Array(B * n).fill(NaN);
        e.topkRows(P, bias, m, B, H, k, i1, v1, pick, picked);
        assert.deepEqual(i1, i0, `k = ${k}: the pick changed the selection`);
        assert.deepEqual(v1, v0);
        for (let r = 0; r < B; r++) for (let j = 0; j < n; j++) assert.equal(picked[r * n + j], P[r * H + pick[j]], `row ${r}, pick ${j} (k = ${k})`);
      }
    }
  });

  test(`rowsAbove (${tag})`, { skip }, () => {
    const A = f32(B * H, 30);
    for (let j = 0; j < A.length; j++) if (A[j] < 1.2) A[j] = 0; // about 11% non-zero
    for (const kmax of [H, 3]) {
      const i1 = new Int32Array(B * kmax), i2 = new Int32Array(B * kmax);
      const v1 = new Float32Array(B * kmax), v2 = new Float32Array(B * kmax);
      const bias = f32(H, 31, 0.3);
      const m1 = nat.rowsAbove(A, bias, 0.9, B, H, kmax, i1, v1, H), m2 = jsEngine.rowsAbove(A, bias, 0.9, B, H, kmax, i2, v2, H);
      assert.equal(m1, m2);
      if (kmax >= m1) {
        assert.deepEqual(i1, i2);
        assert.deepEqual(v1, v2);
      }
      // with a stop below the largest row count, both say "more than stop"
      assert.ok(nat.rowsAbove(A, null, 0, B, H, kmax, i1, v1, 0) > 0 && jsEngine.rowsAbove(A, null, 0, B, H, kmax, i2, v2, 0) > 0);
    }
  });

  test(`kthLargest (${tag})`, { skip }, () => {
    const a = f32(B * H, 32);
    a[5] = a[6] = a[7] = 2.5; // ties
    a[8] = -0;
    for (const k of [1, 2, 7, B * H >> 1, B * H]) assert.equal(nat.kthLargest(a, k), jsEngine.kthLargest(a, k), `k = ${k}`);
    assert.throws(() => nat.kthLargest(a, 0), /must be in/);
  });

  test(`gatherRows, gatherDot, scatterRows (${tag})`, { skip }, () => {
    const idx = new Int32Array(B * K).map((_, j) => (j * 7919) % H);
    const val = f32(B * K, 12);
    val[0] = 0; // zero values are skipped by the kernels and must not matter
    const W = f32(H * D, 13), bias = f32(D, 14), G = f32(B * D, 15);
    for (const b of [bias, null]) {
      const o1 = new Float32Array(B * D), o2 = new Float32Array(B * D);
      nat.gatherRows(idx, val, B, K, W, H, D, b, o1);
      jsEngine.gatherRows(idx, val, B, K, W, H, D, b, o2);
      close("gatherRows", o1, o2, 1e-5);
    }
    // gatherRows2: the two gathers in one pass, bit for bit (entries zero in one code, the other, both)
    const val2 = f32(B * K, 22).map((v, j) => (j % 3 === 0 ? 0 : v));
    val2[0] = 0;
    for (const b of [bias, null]) {
      const o1 = new Float32Array(B * D), o2 = new Float32Array(B * D), p1 = new Float32Array(B * D), p2 = new Float32Array(B * D);
      nat.gatherRows2(idx, val, val2, B, K, W, H, D, b, o1, o2);
      nat.gatherRows(idx, val, B, K, W, H, D, b, p1);
      nat.gatherRows(idx, val2, B, K, W, H, D, b, p2);
      close("gatherRows2 out", o1, p1, 0);
      close("gatherRows2 out2", o2, p2, 0);
      const q1 = new Float32Array(B * D), q2 = new Float32Array(B * D);
      jsEngine.gatherRows2(idx, val, val2, B, K, W, H, D, b, q1, q2);
      close("gatherRows2 out vs the TypeScript twin", o1, q1, 1e-5);
      close("gatherRows2 out2 vs the TypeScript twin", o2, q2, 1e-5);
    }
    const d1 = new Float32Array(B * K), d2 = new Float32Array(B * K);
    for (const v of [val, null]) {
      nat.gatherDot(idx, v, B, K, G, W, H, D, d1);
      jsEngine.gatherDot(idx, v, B, K, G, W, H, D, d2);
      close("gatherDot", d1, d2, 1e-5);
    }
    assert.equal(d1[0] === 0, false, "without val, entry 0 gets its dot product");
    nat.gatherDot(idx, val, B, K, G, W, H, D, d1);
    assert.equal(d1[0], 0, "val[0] = 0: skipped");
    const s1 = f32(H * D, 16), s2 = s1.slice();
    nat.scatterRows(idx, val, B, K, G, H, D, s1);
    jsEngine.scatterRows(idx, val, B, K, G, H, D, s2);
    close("scatterRows", s1, s2, 1e-5);
    // scatterDot: scatterRows then gatherDot, fused; the native one bit for bit what the two give
    const sel = val.map((v, j) => (j % 5 === 1 ? 0 : v)); // some entries dotted but not scattered, and the reverse
    sel[2] = 0;
    val.subarray(3, 4).fill(0);
    for (const sl of [sel, val, null]) {
      const w1 = f32(H * D, 17), w2 = w1.slice(), w3 = w1.slice();
      const o1 = new Float32Array(B * K).fill(9), o2 = o1.slice(), o3 = o1.slice();
      nat.scatterDot(idx, val, sl, B, K, G, W, H, D, w1, o1);
      nat.scatterRows(idx, val, B, K, G, H, D, w2);
      nat.gatherDot(idx, sl, B, K, G, W, H, D, o2);
      close("scatterDot dW vs scatterRows", w1, w2, 0);
      close("scatterDot out vs gatherDot", o1, o2, 0);
      jsEngine.scatterDot(idx, val, sl, B, K, G, W, H, D, w3, o3);
      close("scatterDot dW vs the TypeScript twin", w1, w3, 1e-5);
      close("scatterDot out vs the TypeScript twin", o1, o3, 1e-5);
      if (sl === sel) assert.equal(o1[2], 0, "sel = 0: no dot product");
    }
    // sparseBackward: scatterDot, the mask (dp = 0 where val ≤ 0) with its per-latent sums, and
    // scatterRows of dp, fused; the native one bit for bit what the three give (negative values too)
    const Xc = f32(B * D, 18), code = val.map((v, j) => (j % 4 === 2 ? -Math.abs(v) : Math.abs(v)));
    code[5] = 0;
    const dd1 = f32(H * D, 19), de1 = f32(H * D, 20), gs1 = f32(H, 21);
    const dd2 = dd1.slice(), de2 = de1.slice(), gs2 = gs1.slice(), dd3 = dd1.slice(), de3 = de1.slice(), gs3 = gs1.slice();
    nat.sparseBackward(idx, code, B, K, G, W, Xc, H, D, dd1, de1, gs1);
    const dp = new Float32Array(B * K);
    nat.scatterDot(idx, code, code, B, K, G, W, H, D, dd2, dp);
    for (let j = 0; j < B * K; j++) {
      if (!(code[j] > 0)) dp[j] = 0;
      gs2[idx[j]] += dp[j];
    }
    nat.scatterRows(idx, dp, B, K, Xc, H, D, de2);
    close("sparseBackward dW_dec", dd1, dd2, 0);
    close("sparseBackward dW_enc", de1, de2, 0);
    close("sparseBackward gpSum", gs1, gs2, 0);
    jsEngine.sparseBackward(idx, code, B, K, G, W, Xc, H, D, dd3, de3, gs3);
    close("sparseBackward dW_dec vs the TypeScript twin", dd1, dd3, 1e-5);
    // dp is a float32 dot product natively, a float64 one in the reference; dW_enc is dp times Xc (|·| up to ~20 here)
    close("sparseBackward dW_enc vs the TypeScript twin", de1, de3, 1e-4);
    close("sparseBackward gpSum vs the TypeScript twin", gs1, gs3, 1e-4);
    // overwrite: rows written whole (dirty gradients, latents without entries included: the ones
    // the code skips below) give what zero-then-add gives, bit for bit; rowSq their squares
    const few = idx.map((i) => i % Math.max(1, H - 3)); // latents H−3 .. H−1 get no entries
    const ddZ = new Float32Array(H * D), deZ = new Float32Array(H * D), gsZ = new Float32Array(H);
    nat.sparseBackward(few, code, B, K, G, W, Xc, H, D, ddZ, deZ, gsZ);
    for (const e of [nat, jsEngine]) {
      const dd = f32(H * D, 22), de = f32(H * D, 23), gs = new Float32Array(H), sq = new Float64Array(H).fill(NaN);
      e.sparseBackward(few, code, B, K, G, W, Xc, H, D, dd, de, gs, true, sq);
      close("overwritten dW_dec", dd, ddZ, e === nat ? 0 : 1e-5);
      close("overwritten dW_enc", de, deZ, e === nat ? 0 : 1e-4);
      for (let i = 0; i < H; i++) {
        let want = 0;
        for (let d = i * D; d < (i + 1) * D; d++) want += dd[d] * dd[d] + de[d] * de[d];
        assert.ok(Math.abs(sq[i] - want) <= 1e-12 * Math.max(1, want), `rowSq[${i}] = ${sq[i]}, the rows give ${want}`);
      }
      assert.equal(sq[H - 1], 0, "a latent without entries has a zero row");
    }
    // rowSq without overwrite: the squares of the rows as left (what was there plus the update)
    const dd4 = f32(H * D, 24), de4 = f32(H * D, 25), sq4 = new Float64Array(H);
    nat.sparseBackward(few, code, B, K, G, W, Xc, H, D, dd4, de4, new Float32Array(H), false, sq4);
    let rows4 = 0, sum4 = 0;
    for (let d = 0; d < H * D; d++) rows4 += dd4[d] * dd4[d] + de4[d] * de4[d];
    for (const v of sq4) sum4 += v;
    assert.ok(Math.abs(sum4 - rows4) <= 1e-10 * rows4, `Σ rowSq ${sum4} against ${rows4}`);
  });

  test(`adam, rowNorms, projectRows, normalizeRows, sumSquares (${tag})`, { skip }, () => {
    const n = H * D;
    const p1 = f32(n, 17), g = f32(n, 18), m1 = f32(n, 19, 0.1), v1 = f32(n, 20, 0.1).map(Math.abs);
    const p2 = p1.slice(), m2 = m1.slice(), v2 = v1.slice();
    nat.adam(p1, g, m1, v1, 1e-3, 0.9, 0.999, 1e-8, 0.19, 0.002, 0.7);
    jsEngine.adam(p2, g, m2, v2, 1e-3, 0.9, 0.999, 1e-8, 0.19, 0.002, 0.7);
    // float32 rounding differs with FMA contraction: compare relative to each array's scale
    for (const [name, a, b] of [["adam p", p1, p2], ["adam m", m1, m2], ["adam v", v1, v2]] as const) {
      close(name, a, b, 1e-6 * Math.max(...b.map(Math.abs)));
    }
    const W = f32(n, 21), r1 = new Float32Array(H), r2 = new Float32Array(H);
    nat.rowNorms(W, H, D, r1);
    jsEngine.rowNorms(W, H, D, r2);
    close("rowNorms", r1, r2, 1e-5);
    const G1 = f32(n, 22), G2 = G1.slice();
    nat.projectRows(G1, W, H, D);
    jsEngine.projectRows(G2, W, H, D);
    close("projectRows", G1, G2, 1e-5);
    const W1 = W.slice(), W2 = W.slice();
    nat.normalizeRows(W1, H, D);
    jsEngine.normalizeRows(W2, H, D);
    close("normalizeRows", W1, W2, 1e-6);
    assert.ok(Math.abs(nat.sumSquares(W) - jsEngine.sumSquares(W)) < 1e-6 * jsEngine.sumSquares(W));
  });
}

test("axpby: elementwise, a broadcast row, no Y, sum only, in place; exact where a or b is ±1 or 0", { skip }, () => {
  const rows = 37, cols = 1000; // 37 000 elements: both threads
  const X = f32(rows * cols, 50), Y = f32(rows * cols, 51), row = f32(cols, 52);
  const ref = (a: number, Yv: Float32Array | null, b: number) => {
    const out = new Float32Array(rows * cols);
    return { s: jsEngine.axpby(a, X, b, Yv, out), out };
  };
  for (const [a, Yv, b, tol] of [[1, Y, -1, 0], [1, row, -1, 0], [0.37, null, 0, 0], [0.37, Y, 1.9, 1e-6]] as const) {
    const out = new Float32Array(rows * cols);
    const s = nat.axpby(a, X, b, Yv, out), r = ref(a, Yv, b);
    close(`axpby(${a}, ${b}, Y of ${Yv?.length ?? 0})`, out, r.out, tol);
    assert.ok(Math.abs(s - r.s) <= 1e-12 * r.s, `sum ${s} against ${r.s}`);
    assert.equal(nat.axpby(a, X, b, Yv, null), s, "the sum alone");
  }
  const inPlace = X.slice();
  nat.axpby(1, inPlace, -1, Y, inPlace);
  close("axpby in place", inPlace, ref(1, Y, -1).out, 0);
});

test("gemm with a vector for A or B (M = 1 or N = 1: the gemv path), all four transposes, against the reference", { skip }, () => {
  for (const [M, N, K] of [[1, 37, 500], [45, 1, 300], [1, 1, 64]] as const) {
    for (const [tA, tB] of [[false, false], [false, true], [true, false], [true, true]] as const) {
      const A = f32(M * K, 60), Bm = f32(K * N, 61), C0 = f32(M * N, 62);
      const c1 = C0.slice(), c2 = C0.slice();
      nat.gemm(tA, tB, M, N, K, -0.7, A, Bm, 0.3, c1);
      jsEngine.gemm(tA, tB, M, N, K, -0.7, A, Bm, 0.3, c2);
      close(`gemm(${tA},${tB}) ${M}×${N}×${K}`, c1, c2, 1e-4);
      // β = 0 ignores C, NaN included
      const n1 = new Float32Array(M * N).fill(NaN), n2 = new Float32Array(M * N);
      nat.gemm(tA, tB, M, N, K, -0.7, A, Bm, 0, n1);
      jsEngine.gemm(tA, tB, M, N, K, -0.7, A, Bm, 0, n2);
      close(`gemm(${tA},${tB}) ${M}×${N}×${K}, β = 0 over NaN`, n1, n2, 1e-4);
    }
  }
});

test("colSum into a Float64Array sums in float64, rows in order: the reference's sums bit for bit; equal rows give their value as the mean", { skip }, () => {
  const rows = 4096, cols = 300;
  const A = f32(rows * cols, 63);
  const a = new Float64Array(cols), b = new Float64Array(cols);
  nat.colSum(A, rows, cols, a, false);
  jsEngine.colSum(A, rows, cols, b, false);
  assert.deepEqual(a, b);
  nat.colSum(A, rows, cols, a, true);
  for (let c = 0; c < cols; c++) assert.equal(a[c], 2 * b[c]);
  // AuxK's variance denominator is 0 exactly on a batch of equal rows (docs/variants.md#auxk)
  const row = f32(cols, 64), same = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) same.set(row, r * cols);
  nat.colSum(same, rows, cols, a, false);
  for (let c = 0; c < cols; c++) assert.equal(Math.fround(a[c] / rows), row[c]);
  // float32 sums of the same rows are not exact (what the float64 path is for)
  const f = new Float32Array(cols);
  nat.colSum(same, rows, cols, f, false);
  assert.ok(row.some((v, c) => Math.fround(f[c] / rows) !== v));
});

test("valuesAt: a dense matrix at a code's entries, in float64, 0 where the code is 0; the reference's values bit for bit", { skip }, () => {
  const rows = 70, cols = 500, k = 9;
  const A = f32(rows * cols, 65), bias = f32(cols, 66);
  const rng = new Rng(67), idx = new Int32Array(rows * k), val = f32(rows * k, 68);
  for (let e = 0; e < rows * k; e++) idx[e] = Math.floor(rng.next() * cols);
  for (let e = 0; e < rows * k; e += 4) val[e] = 0;
  for (const b of [bias, null]) {
    const o1 = new Float64Array(rows * k), o2 = new Float64Array(rows * k).fill(5);
    nat.valuesAt(A, b, rows, cols, idx, val, k, o1);
    jsEngine.valuesAt(A, b, rows, cols, idx, val, k, o2);
    assert.deepEqual(o1, o2);
    assert.equal(o1[9], A[cols + idx[9]] + (b ? b[idx[9]] : 0)); // row 1, entry 0 (val ≠ 0)
    assert.equal(o1[4], 0); // val = 0
  }
  const a = addon!, one = new Float64Array(1);
  const row = A.subarray(0, cols);
  assert.throws(() => a.valuesAt(row, null, 1, cols, new Int32Array([cols]), new Float32Array(1), 1, one), /valuesAt: idx\[0\] = 500 is outside \[0, 500\)/);
  assert.throws(() => a.valuesAt(row, null, 1, cols, new Int32Array([0]), new Float32Array(1), 1, new Float32Array(1) as unknown as Float64Array), /out must be a Float64Array/);
  assert.throws(() => a.valuesAt(A, null, rows + 1, cols, idx, val, k, new Float64Array(rows * k)), /A has length 35000, expected 35500/);
});

test("batchCut: the native cut makes the reference's choices (ties at the cut, packed rows, rows full at the cut)", { skip }, () => {
  const B = 300, kc = 24;
  const rng = new Rng(70);
  for (const packed of [false, true]) {
    for (const grid of [0, 8]) {
      const idx = new Int32Array(B * kc), val = new Float32Array(B * kc);
      for (let b = 0; b < B; b++) {
        // packed: a row's candidates first (all positive), then zeros; else zeros anywhere
        const n = packed ? Math.floor(rng.next() * (kc + 1)) : kc;
        for (let j = 0; j < n; j++) {
          const v = rng.next() < (packed ? 1 : 0.7) ? rng.next() : 0;
          val[b * kc + j] = grid ? Math.ceil(v * grid) / grid : v; // a coarse grid: many ties at the cut
          idx[b * kc + j] = b * kc + j;
        }
      }
      for (const total of [1, 700, 2000, B * kc]) {
        const i1 = new Int32Array(B * kc), v1 = new Float32Array(B * kc), i2 = new Int32Array(B * kc).fill(-1), v2 = new Float32Array(B * kc).fill(-1);
        const r1 = nat.batchCut(idx, val, B, kc, total, packed, i1, v1);
        const r2 = jsEngine.batchCut(idx, val, B, kc, total, packed, i2, v2);
        const tag = `packed ${packed}, grid ${grid}, total ${total}`;
        assert.deepEqual(r1, r2, tag);
        assert.deepEqual(i1.subarray(0, B * r1.m), i2.subarray(0, B * r2.m), tag);
        assert.deepEqual(v1.subarray(0, B * r1.m), v2.subarray(0, B * r2.m), tag);
        const kept = v1.subarray(0, B * r1.m).filter((v) => v > 0).length;
        assert.equal(kept, Math.min(total, r1.positives), `${tag}: kept ${kept}`);
      }
    }
  }
  // every candidate of a row at or above the cut: the row may hold more winners than kc
  const full = new Float32Array(2 * 4).fill(1), ids = new Int32Array(8);
  full.set([0.5, 0.4, 0.3, 0.2], 4);
  for (const e of [nat, jsEngine]) assert.equal(e.batchCut(ids, full, 2, 4, 3, true, new Int32Array(8), new Float32Array(8)).complete, false, e.name);
  for (const bad of [NaN, 2.5, 0]) assert.throws(() => addon!.batchCut(ids, full, 2, 4, bad, true, new Int32Array(8), new Float32Array(8)), /batchCut: total = .* must be an integer/);
  assert.throws(() => addon!.batchCut(ids, full, 2, 4, 3, true, new Int32Array(7), new Float32Array(8)), /outIdx has length 7, expected 8/);
  assert.throws(() => addon!.batchCut(ids, full, 2, 4, 9, true, new Int32Array(8), new Float32Array(8)), /batchCut: total = 9\.0+ must be an integer in \[1, B·kc = 8\]/);
});

test("Sparsifier: a batch with a row over H/16 goes dense even when the width grew past H/16 (rowsAbove stops scanning at such a row)", { skip }, () => {
  const B = 8, H = 160; // limit H/16 = 10
  const batch = (counts: number[]) => {
    const P = new Float32Array(B * H).fill(-1);
    counts.forEach((n, b) => { for (let j = 0; j < n; j++) P[b * H + 3 * j] = 1 + j; });
    return P;
  };
  for (const e of [nat, jsEngine]) {
    const sp = new Sparsifier(H), ws = new Workspace(), bias = new Float32Array(H);
    assert.ok(sp.run(e, ws, batch([2, 1, 1, 1, 1, 1, 1, 1]), bias, B)); // the width shrinks to 3
    const c = sp.run(e, ws, batch([9, 1, 1, 1, 1, 1, 1, 1]), bias, B); // overflows: rescanned 12 wide
    assert.ok(c && c.m === 12, `${e.name}: width ${c?.m}`);
    assert.deepEqual([...c.len], [9, 1, 1, 1, 1, 1, 1, 1]);
    // row 0 has 11 > 10 entries, within the width: the dense path, not a code of unscanned rows
    assert.equal(sp.run(e, ws, batch([11, 2, 2, 2, 2, 2, 2, 2]), bias, B), null, e.name);
  }
});

test("zero: every element of a large unaligned view and none outside it; small arrays too", { skip }, () => {
  // 4 200 001 elements from offset 3 (not 64-byte aligned): the streaming path with a head and a tail
  for (const [off, n] of [[3, 4_200_001], [1, 5]] as const) {
    const buf = new Float32Array(off + n + 2).fill(7), view = buf.subarray(off, off + n);
    nat.zero(view);
    assert.equal(view.findIndex((v) => v !== 0), -1, `${n} elements: one left non-zero`);
    assert.deepEqual([...buf.subarray(0, off), ...buf.subarray(off + n)], new Array(off + 2).fill(7), "outside the view");
  }
  assert.throws(() => addon!.zero(new Float64Array(4) as unknown as Float32Array), /zero: a must be a Float32Array/);
});

test("adamUnitRows: projectRows, adam, normalizeRows in one pass (native, reference, and the three kernels agree)", { skip }, () => {
  const rows = 70, cols = 97;
  const W = f32(rows * cols, 60), G = f32(rows * cols, 61), M = f32(rows * cols, 62, 0.01), V = f32(rows * cols, 63, 0.01).map(Math.abs);
  W.fill(0, 5 * cols, 6 * cols); // a row of norm 0: no projection, no renormalisation
  const hyper = [1e-2, 0.9, 0.999, 1e-8, 0.19, 0.002, 0.7] as const;
  const run = (how: "fused" | "reference" | "three") => {
    const p = W.slice(), g = G.slice(), m = M.slice(), v = V.slice();
    if (how === "fused") nat.adamUnitRows(p, g, m, v, rows, cols, ...hyper);
    else if (how === "reference") jsEngine.adamUnitRows(p, g, m, v, rows, cols, ...hyper);
    else {
      nat.projectRows(g, p, rows, cols);
      nat.adam(p, g, m, v, ...hyper);
      nat.normalizeRows(p, rows, cols);
    }
    return { p, g, m, v };
  };
  const fused = run("fused"), ref = run("reference"), three = run("three");
  assert.deepEqual(fused.g, G, "the gradient is left as it is");
  for (const k of ["p", "m", "v"] as const) {
    close(`adamUnitRows ${k} against the reference`, fused[k], ref[k], 1e-5);
    close(`adamUnitRows ${k} against the three kernels`, fused[k], three[k], 0);
  }
  for (let r = 0; r < rows; r++) {
    let s = 0;
    for (let c = 0; c < cols; c++) s += fused.p[r * cols + c] ** 2;
    if (r !== 5) assert.ok(Math.abs(s - 1) < 1e-5, `row ${r} has norm² ${s}`);
  }
});

test("topkRows on wide rows (the group-maxima path): the reference's choice, ties included", { skip }, () => {
  // 4096 + 7 columns (a tail of 7), k = 32 and 100: enough columns for 4k groups. Values rounded to
  // a coarse grid make many ties at the cut (up to 70 candidates for k = 32, which are ranked),
  // which must still go to the lower column.
  const rows = 9, cols = 4103;
  const P = f32(rows * cols, 40), bias = f32(cols, 41, 0.2);
  for (const grid of [0, 4]) {
    const coarse = grid > 0;
    const X = coarse ? P.map((x) => Math.round(x * grid) / grid) : P;
    // k = 60: 247 maxima, ranked; k = 100: 407, selected by nth_element
    for (const [b, k] of [[bias, 32], [null, 32], [bias, 60], [bias, 100]] as const) {
      const i1 = new Int32Array(rows * k), i2 = new Int32Array(rows * k);
      const v1 = new Float32Array(rows * k), v2 = new Float32Array(rows * k);
      nat.topkRows(X, b, null, rows, cols, k, i1, v1);
      jsEngine.topkRows(X, b, null, rows, cols, k, i2, v2);
      assert.deepEqual(i1, i2, `coarse ${coarse}, k ${k}, bias ${b !== null}`);
      assert.deepEqual(v1, v2);
    }
  }
  // the columns picked on the way (AuxK's dead latents), from rows the group maxima selected in
  const pick = new Int32Array([4102, 7, 4096, 0]), picked = new Float32Array(rows * 4);
  const i3 = new Int32Array(rows * 32), v3 = new Float32Array(rows * 32);
  nat.topkRows(P, bias, null, rows, cols, 32, i3, v3, pick, picked);
  for (let r = 0; r < rows; r++) assert.deepEqual([...picked.subarray(r * 4, r * 4 + 4)], [...pick].map((c) => P[r * cols + c]), `row ${r}`);
  // a row of equal values: every group maximum ties with the cut, every column is a candidate (too
  // many to rank: they are sorted); the first k columns win
  const flat = new Float32Array(cols).fill(0.5), idx = new Int32Array(32), val = new Float32Array(32);
  nat.topkRows(flat, null, null, 1, cols, 32, idx, val);
  assert.deepEqual([...idx], Array.from({ length: 32 }, (_, i) => i));
});

test("topkRows: ties go to the lower column; rows with fewer than K positives keep zeros", { skip }, () => {
  const H = 10, k = 4;
  const P = new Float32Array([
    1, 5, 5, 0, 5, 5, 2, 0, 0, 0, // ties at 5: columns 1, 2, 4, 5 win over the 1 and 2
    3, 3, 3, 3, 3, 3, 3, 3, 3, 3, // all tied: the first four columns
    -1, 2, -3, -4, -5, -6, -7, -8, -9, -0.5, // one positive: L0 = 1, three zero values
  ]);
  // as they are (k = 4 of 10: the partition path), and with 30 very negative columns appended
  // (k = 4 of 40: the heap path)
  const wide = new Float32Array(3 * 40).fill(-100);
  for (let r = 0; r < 3; r++) wide.set(P.subarray(r * H, (r + 1) * H), r * 40);
  for (const [X, cols] of [[P, H], [wide, 40]] as const) {
    for (const e of [nat, jsEngine]) {
      const idx = new Int32Array(3 * k), val = new Float32Array(3 * k);
      e.topkRows(X, null, null, 3, cols, k, idx, val);
      assert.deepEqual([...idx], [1, 2, 4, 5, 0, 1, 2, 3, 0, 1, 2, 9], `${e.name}, ${cols} columns`);
      assert.deepEqual([...val], [5, 5, 5, 5, 3, 3, 3, 3, 0, 2, 0, 0], `${e.name}, ${cols} columns`);
    }
  }
});

test("gatherRows, gatherRows2 over a decoder larger than the caches (the walk over latents): the row walk's sums, bit for bit", { skip }, () => {
  // The code uses latents below 2048 only. Called with W [8192, 512] (16 MB in float32, 8 MB in
  // bf16: over the kernels' 8 MB switch, and rows·k ≥ H) the kernels walk the latents; called with
  // its first 2048 rows as W (4 MB, 2 MB) they walk the rows. Same entries, same sums.
  const rows = 600, k = 16, H = 8192, used = 2048, D = 512;
  const rng = new Rng(31);
  const idx = new Int32Array(rows * k);
  for (let b = 0; b < rows; b++) {
    const s = new Set<number>();
    while (s.size < k) s.add(Math.floor(rng.next() * used));
    idx.set([...s].sort((x, y) => x - y), b * k);
  }
  const val = f32(rows * k, 32).map((v, j) => (j % 5 === 0 ? 0 : v)); // zeros are skipped
  const val2 = f32(rows * k, 35).map((v, j) => (j % 3 === 0 ? 0 : v)); // zero where val is not, and both
  const W = f32(H * D, 33, 0.05), bias = f32(D, 34);
  const Wb = new Uint16Array(W.buffer.slice(0)).filter((_, i) => i % 2 === 1); // top halves: bf16 bits
  const check = (what: string, code: Int32Array) => {
    const run = (h: number) => {
      const one = new Float32Array(rows * D), out = new Float32Array(rows * D), out2 = new Float32Array(rows * D);
      const oneB = new Float32Array(rows * D), outB = new Float32Array(rows * D), out2B = new Float32Array(rows * D);
      nat.gatherRows(code, val, rows, k, W.subarray(0, h * D), h, D, bias, one);
      nat.gatherRows2(code, val, val2, rows, k, W.subarray(0, h * D), h, D, bias, out, out2);
      addon!.gatherRowsBf16(code, val, rows, k, Wb.subarray(0, h * D), h, D, null, oneB);
      addon!.gatherRows2Bf16(code, val, val2, rows, k, Wb.subarray(0, h * D), h, D, null, outB, out2B);
      return { one, out, out2, oneB, outB, out2B };
    };
    const byLatent = run(H), byRow = run(used);
    for (const key of ["one", "out", "out2", "oneB", "outB", "out2B"] as const) assert.deepEqual(byLatent[key], byRow[key], `${key}, ${what}`);
    // and the row walk is the decode (to float rounding: the reference sums in float64)
    const ref = new Float32Array(rows * D);
    jsEngine.gatherRows(code, val, rows, k, W, H, D, bias, ref);
    close(`gatherRows against the TypeScript twin, ${what}`, byRow.one, ref, 1e-5);
  };
  check("ascending rows", idx);
  // one row out of order: the kernels walk the rows at either size (summing in the code's order)
  const shuffled = idx.slice();
  shuffled.set(idx.subarray(7 * k, 8 * k).reverse(), 7 * k);
  check("a row out of order", shuffled);
});

test("native addon: bad arguments throw errors instead of crashing", { skip }, () => {
  const a = addon!;
  const x = new Float32Array(6);
  assert.throws(() => a.gemm(false, false, 2, 3, 1, 1, x, x, 0, x), /gemm: A has length 6, expected 2/);
  assert.throws(() => a.gemm(false, false, 2, 3, 1, 1, new Int32Array(2) as unknown as Float32Array, x, 0, x), /A must be a Float32Array/);
  // float64 GEMM takes float64 throughout: a float32 B next to a float64 A is refused
  assert.throws(() => a.gemm(false, false, 2, 3, 1, 1, new Float64Array(2) as unknown as Float32Array, x, 0, x), /B must be a Float64Array/);
  assert.throws(() => (a.gemm as (...args: unknown[]) => void)(1), /expected 10 arguments/);
  const q = new Float64Array(8), cache = new Float64Array(2 * 4 * 1 * 2); // S · maxLen · kvHeads · hs
  assert.throws(() => a.attention(q, cache, cache, 2, 4, 4, 2, 1, 2, q), /pos 4 must be below maxLen 4/);
  assert.throws(() => a.attention(q, cache, cache, 2, 0, 4, 2, 3, 2, q), /heads must be a positive multiple of kvHeads/);
  assert.throws(() => a.attention(q, cache.subarray(1), cache, 2, 0, 4, 2, 1, 2, q), /kc has length 15, expected 16/);
  assert.throws(() => a.attention(new Float32Array(8) as unknown as Float64Array, cache, cache, 2, 0, 4, 2, 1, 2, q), /q must be a Float64Array/);
  assert.throws(() => a.addBias(x, null, -1, 6, true, null), /rows must be a non-negative integer/);
  assert.throws(() => a.addBias(x, null, 1.5, 4, true, null), /rows must be a non-negative integer/);
  assert.throws(() => a.addBias(x, null, 2, 3, true, new Float32Array(2)), /colSum has length 2, expected 3/);
  const idx = new Int32Array([0, 7]);
  assert.throws(() => a.gatherRows(idx, new Float32Array(2), 1, 2, new Float32Array(12), 4, 3, null, new Float32Array(3)), /idx\[1\] = 7 is outside \[0, 4\)/);
  assert.throws(() => a.scatterRows(new Int32Array([-1]), new Float32Array(1), 1, 1, new Float32Array(3), 4, 3, new Float32Array(12)), /outside/);
  const w = new Float32Array(12), one = new Float32Array(1);
  assert.throws(() => a.gatherRows2(new Int32Array([0]), one, new Float32Array(2), 1, 1, w, 4, 3, null, new Float32Array(3), new Float32Array(3)), /gatherRows2: val2 has length 2, expected 1/);
  const o3 = new Float32Array(3);
  assert.throws(() => a.gatherRows2(new Int32Array([0]), one, one, 1, 1, w, 4, 3, null, o3, o3), /out and out2 must be different arrays/);
  assert.throws(() => a.scatterDot(new Int32Array([4]), one, null, 1, 1, new Float32Array(3), w, 4, 3, new Float32Array(12), one), /scatterDot: idx\[0\] = 4 is outside \[0, 4\)/);
  assert.throws(() => a.scatterDot(new Int32Array([0]), one, null, 1, 1, new Float32Array(3), w, 4, 3, w, one), /W and dW overlap/);
  assert.throws(() => a.sparseBackward(new Int32Array([0]), one, 1, 1, new Float32Array(3), w, new Float32Array(3), 4, 3, new Float32Array(12), w.subarray(0), new Float32Array(4)), /sparseBackward: W, dWdec and dWenc overlap/);
  assert.throws(() => a.sparseBackward(new Int32Array([0]), one, 1, 1, new Float32Array(3), w, new Float32Array(3), 4, 3, new Float32Array(12), new Float32Array(12), new Float32Array(4), true, new Float64Array(3)), /sparseBackward: rowSq has length 3, expected 4/);
  assert.throws(() => (a.sparseBackward as (...args: unknown[]) => void)(new Int32Array([0]), one, 1, 1, new Float32Array(3), w, new Float32Array(3), 4, 3, new Float32Array(12), new Float32Array(12), new Float32Array(4), 1, null), /sparseBackward: overwrite must be a boolean/);
  assert.throws(() => a.sparseBackward(new Int32Array([9]), one, 1, 1, new Float32Array(3), w, new Float32Array(3), 4, 3, new Float32Array(12), new Float32Array(12), new Float32Array(4)), /sparseBackward: idx\[0\] = 9 is outside \[0, 4\)/);
  assert.throws(() => a.scatterDot(new Int32Array([0]), one, new Float32Array(2), 1, 1, new Float32Array(3), w, 4, 3, new Float32Array(12), one), /sel has length 2, expected 1/);
  assert.throws(() => a.topkRows(x, null, new Uint8Array(6), 1, 6, 2, new Int32Array(2), new Float32Array(2)), /exceeds the 0 candidate columns/);
  assert.throws(() => a.topkRows(x, null, null, 1, 6, 2, new Int32Array(2), new Float32Array(2), new Int32Array([6]), new Float32Array(1)), /topkRows: pick\[0\] = 6 is outside \[0, 6\)/);
  assert.throws(() => a.topkRows(x, null, null, 1, 6, 2, new Int32Array(2), new Float32Array(2), new Int32Array([1, 2]), new Float32Array(1)), /topkRows: picked has length 1, expected 2/);
  assert.throws(() => a.topkRows(x, null, null, 1, 6, 2, new Int32Array(2), new Float32Array(2), new Int32Array([1]), x.subarray(5)), /P and picked overlap/);
  assert.throws(() => (a.topkRows as (...args: unknown[]) => void)(x, null, null, 1, 6, 2, new Int32Array(2), new Float32Array(2), new Int32Array([1])), /expected 8 arguments, received 9/);
  assert.throws(() => a.adam(x, new Float32Array(5), x, x, 1, 0.9, 0.9, 1e-8, 1, 1, 1), /grads has length 5, expected 6/);
  assert.throws(() => a.setThreads(0), /threads must be at least 1/);
  assert.throws(() => a.adamUnitRows(x, x, x, x, 2, 4, 1, 0.9, 0.9, 1e-8, 1, 1, 1), /adamUnitRows: params has length 6, expected 8/);
  assert.throws(() => a.adamUnitRows(x, x, new Float32Array(5), x, 2, 3, 1, 0.9, 0.9, 1e-8, 1, 1, 1), /m has length 5, expected 6/);
  assert.throws(() => (a.adamUnitRows as (...args: unknown[]) => void)(x, x, x, x, 2, 3, "1", 0.9, 0.9, 1e-8, 1, 1, 1), /lr must be a number/);
  assert.throws(() => a.axpby(1, x, 1, new Float32Array(4), x), /axpby: Y has length 4, expected 6 \(as X\) or a divisor of it/);
  assert.throws(() => a.axpby(1, x, 1, new Float32Array(0), x), /Y has length 0/);
  assert.throws(() => a.axpby(1, x, 1, null, new Float32Array(5)), /out has length 5, expected 6/);
  assert.throws(() => a.axpby(1, new Float64Array(6) as unknown as Float32Array, 1, null, null), /X must be a Float32Array/);
  assert.throws(() => (a.axpby as (...args: unknown[]) => number)("1", x, 1, null, null), /a must be a number/);
  assert.throws(() => (a.axpby as (...args: unknown[]) => number)(1, x, 1, null), /expected 5 arguments/);
});
