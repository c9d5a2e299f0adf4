// Reference kernels in plain TypeScript. Straightforward loops, written for clarity: they are the
// oracle for the native parity tests and run the float64 gradient checks. Works on Float32Array
// (rounding each stored result to float32) and Float64Array alike.
import type { Arr, Engine } from "./types.ts";

export const jsEngine: Engine = {
  name: "typescript",

  gemm(transA, transB, M, N, K, alpha, A, B, beta, C) {
    const acc = new Float64Array(N);
    for (let i = 0; i < M; i++) {
      acc.fill(0);
      for (let p = 0; p < K; p++) {
        const a = transA ? A[p * M + i] : A[i * K + p];
        if (a === 0) continue;
        if (transB) for (let j = 0; j < N; j++) acc[j] += a * B[j * K + p];
        else {
          const off = p * N;
          for (let j = 0; j < N; j++) acc[j] += a * B[off + j];
        }
      }
      const off = i * N;
      for (let j = 0; j < N; j++) C[off + j] = alpha * acc[j] + (beta === 0 ? 0 : beta * C[off + j]);
    }
  },

  addBias(P, bias, rows, cols, relu, colSum) {
    if (colSum) colSum.fill(0, 0, cols);
    for (let r = 0; r < rows; r++) {
      const off = r * cols;
      for (let c = 0; c < cols; c++) {
        let v = P[off + c] + (bias ? bias[c] : 0);
        if (relu && !(v > 0)) v = 0;
        P[off + c] = v;
        if (colSum) colSum[c] += P[off + c];
      }
    }
  },

  reluBackward(G, F, colAdd, rows, cols, colSum) {
    if (colSum) colSum.fill(0, 0, cols);
    for (let r = 0; r < rows; r++) {
      const off = r * cols;
      for (let c = 0; c < cols; c++) {
        G[off + c] = F[off + c] > 0 ? G[off + c] + (colAdd ? colAdd[c] : 0) : 0;
        if (colSum) colSum[c] += G[off + c];
      }
    }
  },

  colSum(A, rows, cols, out, accumulate) {
    if (!accumulate) out.fill(0, 0, cols);
    for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c] += A[r * cols + c];
  },

  topkRows(P, bias, mask, rows, cols, k, idx, val, pick, picked) {
    if (pick && picked) for (let r = 0; r < rows; r++) for (let j = 0; j < pick.length; j++) picked[r * pick.length + j] = P[r * cols + pick[j]];
    const cand: number[] = [];
    for (let c = 0; c < cols; c++) if (!mask || mask[c]) cand.push(c);
    if (k > cand.length) throw new RangeError(`topkRows: k = ${k} exceeds the ${cand.length} candidate columns`);
    const s = new Float64Array(cols);
    for (let r = 0; r < rows; r++) {
      // float32 addition to match the native kernel bit for bit on Float32Array inputs
      const f32 = P instanceof Float32Array;
      for (const c of cand) s[c] = f32 ? Math.fround(P[r * cols + c] + (bias ? bias[c] : 0)) : P[r * cols + c] + (bias ? bias[c] : 0);
      const order = cand.slice().sort((a, b) => s[b] - s[a] || a - b).slice(0, k).sort((a, b) => a - b);
      for (let j = 0; j < k; j++) {
        idx[r * k + j] = order[j];
        val[r * k + j] = Math.max(0, s[order[j]]);
      }
    }
  },

  rowsAbove(A, bias, threshold, rows, cols, kmax, idx, val, stop) {
    const f32 = A instanceof Float32Array;
    let best = 0;
    for (let r = 0; r < rows && best <= stop; r++) {
      let n = 0;
      for (let c = 0; c < cols; c++) {
        const sum = A[r * cols + c] + (bias ? bias[c] : 0);
        const a = f32 ? Math.fround(sum) : sum;
        if (!(a > threshold)) continue;
        if (n < kmax) {
          idx[r * kmax + n] = c;
          val[r * kmax + n] = a;
        }
        n++;
      }
      for (let j = n; j < kmax; j++) {
        idx[r * kmax + j] = 0;
        val[r * kmax + j] = 0;
      }
      best = Math.max(best, n);
    }
    return best;
  },

  kthLargest(a, k) {
    if (!(k >= 1 && k <= a.length)) throw new RangeError(`kthLargest: k = ${k} must be in [1, ${a.length}]`);
    const sorted = (a instanceof Float64Array ? Float64Array.from(a) : Float32Array.from(a)).sort();
    return sorted[a.length - k];
  },

  batchCut(idx, val, B, kc, total, packed, outIdx, outVal) {
    const n = B * kc;
    if (!(Number.isInteger(total) && total >= 1 && total <= n)) throw new RangeError(`batchCut: total = ${total} must be an integer in [1, B·kc = ${n}]`);
    const len = new Int32Array(B); // candidates per row
    let positives = 0;
    for (let b = 0; b < B; b++) {
      if (packed) {
        let j = b * kc;
        while (j < (b + 1) * kc && val[j] > 0) j++;
        len[b] = j - b * kc;
        positives += len[b];
      } else {
        len[b] = kc;
        for (let j = b * kc; j < (b + 1) * kc; j++) if (val[j] > 0) positives++;
      }
    }
    // the cut: every positive value when there are few enough, else the total-th largest (exact)
    const cut = positives <= total ? 0 : jsEngine.kthLargest(val, total);
    let above = 0;
    if (cut > 0) for (let b = 0; b < B; b++) for (let j = b * kc; j < b * kc + len[b]; j++) if (val[j] > cut) above++;
    // kept: v > cut, and of the values equal to a positive cut the first total − above in row-major order
    const ties0 = cut > 0 ? total - above : 0;
    const counts = new Int32Array(B);
    let ties = ties0, complete = true, m = 1;
    for (let b = 0; b < B; b++) {
      let rowMin = len[b] < kc ? 0 : Infinity, c = 0; // the padding's zeros
      for (let j = b * kc; j < b * kc + len[b]; j++) {
        const v = val[j];
        if (!(v >= rowMin)) rowMin = v; // the smallest so far (a NaN is replaced by the next value)
        if (v > cut) c++;
        else if (v === cut && v > 0 && ties > 0) { ties--; c++; }
      }
      if (cut > 0 && rowMin >= cut) complete = false;
      counts[b] = c;
      if (c > m) m = c;
    }
    // the winners (the same decisions, replayed)
    outIdx.fill(0, 0, B * m);
    outVal.fill(0, 0, B * m);
    ties = ties0;
    for (let b = 0; b < B; b++) {
      if (counts[b] === 0) continue;
      let o = b * m;
      for (let j = b * kc; j < b * kc + len[b]; j++) {
        const v = val[j];
        if (v > cut || (v === cut && v > 0 && ties-- > 0)) {
          outIdx[o] = idx[j];
          outVal[o++] = v;
        }
      }
    }
    return { m, positives, complete };
  },

  gatherRows(idx, val, rows, k, W, H, D, bias, out) {
    checkIdx(idx, H);
    for (let b = 0; b < rows; b++) {
      for (let d = 0; d < D; d++) out[b * D + d] = bias ? bias[d] : 0;
      for (let j = 0; j < k; j++) {
        const a = val[b * k + j];
        if (a === 0) continue;
        const w = idx[b * k + j] * D;
        for (let d = 0; d < D; d++) out[b * D + d] += a * W[w + d];
      }
    }
  },

  gatherRows2(idx, val, val2, rows, k, W, H, D, bias, out, out2) {
    jsEngine.gatherRows(idx, val, rows, k, W, H, D, bias, out);
    jsEngine.gatherRows(idx, val2, rows, k, W, H, D, bias, out2);
  },

  valuesAt(A, bias, rows, cols, idx, val, k, out) {
    checkIdx(idx, cols);
    for (let e = 0; e < rows * k; e++) {
      const i = idx[e];
      out[e] = val[e] !== 0 ? A[Math.floor(e / k) * cols + i] + (bias ? bias[i] : 0) : 0;
    }
  },

  gatherDot(idx, val, rows, k, G, W, H, D, out) {
    checkIdx(idx, H);
    for (let b = 0; b < rows; b++) {
      for (let j = 0; j < k; j++) {
        if (val && val[b * k + j] === 0) {
          out[b * k + j] = 0;
          continue;
        }
        const w = idx[b * k + j] * D;
        let s = 0;
        for (let d = 0; d < D; d++) s += G[b * D + d] * W[w + d];
        out[b * k + j] = s;
      }
    }
  },

  scatterRows(idx, val, rows, k, X, H, D, out) {
    checkIdx(idx, H);
    for (let b = 0; b < rows; b++) {
      for (let j = 0; j < k; j++) {
        const a = val[b * k + j];
        if (a === 0) continue;
        const o = idx[b * k + j] * D;
        for (let d = 0; d < D; d++) out[o + d] += a * X[b * D + d];
      }
    }
  },

  scatterDot(idx, val, sel, rows, k, G, W, H, D, dW, out) {
    jsEngine.scatterRows(idx, val, rows, k, G, H, D, dW);
    jsEngine.gatherDot(idx, sel, rows, k, G, W, H, D, out);
  },

  sparseBackward(idx, val, rows, k, G, W, Xc, H, D, dWdec, dWenc, gpSum, overwrite, rowSq) {
    if (overwrite) dWdec.fill(0, 0, H * D), dWenc.fill(0, 0, H * D);
    const n = rows * k, dp = val instanceof Float64Array ? new Float64Array(n) : new Float32Array(n);
    jsEngine.scatterDot(idx, val, val, rows, k, G, W, H, D, dWdec, dp);
    for (let j = 0; j < n; j++) {
      if (!(val[j] > 0)) dp[j] = 0;
      gpSum[idx[j]] += dp[j];
    }
    jsEngine.scatterRows(idx, dp, rows, k, Xc, H, D, dWenc);
    if (rowSq)
      for (let i = 0; i < H; i++) {
        let s = 0;
        for (let d = i * D; d < (i + 1) * D; d++) s += dWdec[d] * dWdec[d] + dWenc[d] * dWenc[d];
        rowSq[i] = s;
      }
  },

  adam(p, g, m, v, lr, beta1, beta2, eps, bc1, bc2, gradScale) {
    for (let i = 0; i < p.length; i++) {
      const gi = gradScale * g[i];
      m[i] = beta1 * m[i] + (1 - beta1) * gi;
      v[i] = beta2 * v[i] + (1 - beta2) * gi * gi;
      p[i] -= (lr * (m[i] / bc1)) / (Math.sqrt(v[i] / bc2) + eps);
    }
  },

  adamUnitRows(p, g, m, v, rows, cols, lr, beta1, beta2, eps, bc1, bc2, gradScale) {
    const gp = g.slice();
    jsEngine.projectRows(gp, p, rows, cols);
    jsEngine.adam(p, gp, m, v, lr, beta1, beta2, eps, bc1, bc2, gradScale);
    jsEngine.normalizeRows(p, rows, cols);
  },

  rowNorms(W, rows, cols, out) {
    for (let r = 0; r < rows; r++) {
      let s = 0;
      for (let c = 0; c < cols; c++) s += W[r * cols + c] ** 2;
      out[r] = Math.sqrt(s);
    }
  },

  projectRows(G, W, rows, cols) {
    for (let r = 0; r < rows; r++) {
      let ww = 0, gw = 0;
      for (let c = 0; c < cols; c++) {
        ww += W[r * cols + c] ** 2;
        gw += G[r * cols + c] * W[r * cols + c];
      }
      if (ww === 0) continue;
      const a = gw / ww;
      for (let c = 0; c < cols; c++) G[r * cols + c] -= a * W[r * cols + c];
    }
  },

  normalizeRows(W, rows, cols) {
    for (let r = 0; r < rows; r++) {
      let s = 0;
      for (let c = 0; c < cols; c++) s += W[r * cols + c] ** 2;
      if (s === 0) continue;
      const inv = 1 / Math.sqrt(s);
      for (let c = 0; c < cols; c++) W[r * cols + c] *= inv;
    }
  },

  sumSquares(a: Arr) {
    let s = 0;
    for (let i = 0; i < a.length; i++) s += a[i] * a[i];
    return s;
  },

  zero(a: Arr) {
    a.fill(0);
  },

  axpby(a, X, b, Y, out) {
    const n = X.length, ny = Y ? Y.length : 0;
    if (Y && !(ny === n || (ny > 0 && n % ny === 0))) throw new RangeError(`axpby: Y has length ${ny}, expected ${n} (as X) or a divisor of it`);
    let s = 0;
    for (let i = 0; i < n; i++) {
      const v = Y ? a * X[i] + b * Y[i % ny] : a * X[i];
      if (out) out[i] = v;
      s += v * v;
    }
    return s;
  },

  attention(q, kc, vc, S, pos, maxLen, heads, kvHeads, hs, out) {
    const dim = heads * hs, kv = kvHeads * hs, group = heads / kvHeads, scale = 1 / Math.sqrt(hs);
    const sc = new Float64Array(pos + 1);
    for (let s = 0; s < S; s++) {
      for (let h = 0; h < heads; h++) {
        const qo = s * dim + h * hs, ko = s * maxLen * kv + Math.floor(h / group) * hs;
        let max = -Infinity;
        for (let t = 0; t <= pos; t++) {
          let d = 0;
          for (let i = 0; i < hs; i++) d += q[qo + i] * kc[ko + t * kv + i];
          sc[t] = d * scale;
          if (sc[t] > max) max = sc[t];
        }
        let sum = 0;
        for (let t = 0; t <= pos; t++) sum += sc[t] = Math.exp(sc[t] - max);
        for (let i = 0; i < hs; i++) out[qo + i] = 0;
        for (let t = 0; t <= pos; t++) {
          const a = sc[t] / sum;
          for (let i = 0; i < hs; i++) out[qo + i] += a * vc[ko + t * kv + i];
        }
      }
    }
  },
};

function checkIdx(idx: Int32Array, H: number): void {
  for (let j = 0; j < idx.length; j++) {
    if (idx[j] < 0 || idx[j] >= H) throw new RangeError(`idx[${j}] = ${idx[j]} is outside [0, ${H})`);
  }
}
