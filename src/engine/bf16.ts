// bfloat16 GEMMs for `train.precision: bf16` (docs/engine.md#bfloat16). The GEMMs of a training
// step, and their sparse forms (the sparse decode and a sparse code's backward), take bf16 operands
// with float32 accumulation and output; everything else (master weights, Adam's moments, the loss,
// the reductions, what is written to disk) stays float32.
//
// bf16Engine wraps an Engine: its gemm and its sparse kernels (gatherRows, gatherRows2, gatherDot,
// scatterRows, scatterDot, sparseBackward) cast float32 operands to bf16 and call the bf16 kernels;
// the parameters are pinned, so each one is cast at most once per step (on its first use after
// newStep(), i.e. after the previous step's update) instead of once per call, and the Adam steps
// (adam, adamUnitRows) write the copies of the parameters they update. Every other kernel is the
// wrapped engine's.
import type { Arr, Engine } from "./types.ts";
import { jsEngine } from "./js.ts";
import { loadNative, type EngineChoice } from "./index.ts";
import { SaeError } from "../errors.ts";

/** the bf16 kernels: a bf16 value is the top half of a float32, held as its 16 bits */
export interface Bf16Kernels {
  /** dst[i] = src[i] rounded to the nearest bf16, ties to even (NaN stays a quiet NaN) */
  castBf16(src: Float32Array, dst: Uint16Array): void;
  /** C[M,N] = alpha·op(A)·op(B) + beta·C with bf16 A [M,K] (or [K,M] when transA), B [K,N] (or [N,K]); float32 accumulation and C */
  gemmBf16(transA: boolean, transB: boolean, M: number, N: number, K: number, alpha: number, A: Uint16Array, B: Uint16Array, beta: number, C: Float32Array): void;
  /** Engine.adam over p, also writing out = bf16(p[outOffset .. outOffset + out.length)) of the updated weights (the cast fused into Adam's pass) */
  adamBf16(p: Float32Array, g: Float32Array, m: Float32Array, v: Float32Array, lr: number, beta1: number, beta2: number, eps: number, bc1: number, bc2: number, gradScale: number, out: Uint16Array, outOffset: number): void;
  /** Engine.adamUnitRows, also writing out = bf16(p) of the updated rows (the cast fused into its pass) */
  adamUnitRowsBf16(p: Float32Array, g: Float32Array, m: Float32Array, v: Float32Array, rows: number, cols: number, lr: number, beta1: number, beta2: number, eps: number, bc1: number, bc2: number, gradScale: number, out: Uint16Array): void;
  /** Engine.gatherRows with W's rows in bf16 (float32 sums) */
  gatherRowsBf16(idx: Int32Array, val: Float32Array, rows: number, k: number, W: Uint16Array, H: number, D: number, bias: Float32Array | null, out: Float32Array): void;
  /** Engine.gatherRows2 with W's rows in bf16 */
  gatherRows2Bf16(idx: Int32Array, val: Float32Array, val2: Float32Array, rows: number, k: number, W: Uint16Array, H: number, D: number, bias: Float32Array | null, out: Float32Array, out2: Float32Array): void;
  /** Engine.gatherDot with bf16 G and W */
  gatherDotBf16(idx: Int32Array, val: Float32Array | null, rows: number, k: number, G: Uint16Array, W: Uint16Array, H: number, D: number, out: Float32Array): void;
  /** Engine.scatterRows with X's rows in bf16 */
  scatterRowsBf16(idx: Int32Array, val: Float32Array, rows: number, k: number, X: Uint16Array, H: number, D: number, out: Float32Array): void;
  /** Engine.scatterDot with bf16 G and W */
  scatterDotBf16(idx: Int32Array, val: Float32Array, sel: Float32Array | null, rows: number, k: number, G: Uint16Array, W: Uint16Array, H: number, D: number, dW: Float32Array, out: Float32Array): void;
  /** Engine.sparseBackward with bf16 G, W and Xc (float32 products, sums and gradients) */
  sparseBackwardBf16(idx: Int32Array, val: Float32Array, rows: number, k: number, G: Uint16Array, W: Uint16Array, Xc: Uint16Array, H: number, D: number, dWdec: Float32Array, dWenc: Float32Array, gpSum: Float32Array, overwrite?: boolean, rowSq?: Float64Array | null): void;
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** the float32 value of a bf16 bit pattern */
export function bf16ToFloat(h: number): number {
  u32[0] = h << 16;
  return f32[0];
}

/** bf16 bits widened to float32 (exact) */
const wide = (x: Uint16Array) => Float32Array.from(x, bf16ToFloat);

/**
 * The TypeScript twins of the native bf16 kernels: the same rounding bit for bit; the GEMM forms
 * the products exactly (bf16 × bf16 fits in float32) and adds them in float64, rounding once, so
 * it differs from oneDNN's float32 accumulation by its rounding only.
 */
export const jsBf16: Bf16Kernels = {
  castBf16(src, dst) {
    if (dst.length !== src.length) throw new RangeError(`castBf16: dst has length ${dst.length}, expected ${src.length}`);
    for (let i = 0; i < src.length; i++) {
      f32[0] = src[i];
      const u = u32[0];
      dst[i] = (u & 0x7fffffff) > 0x7f800000 ? (u >>> 16) | 0x40 : ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
    }
  },
  adamBf16(p, g, m, v, lr, beta1, beta2, eps, bc1, bc2, gradScale, out, outOffset) {
    jsEngine.adam(p, g, m, v, lr, beta1, beta2, eps, bc1, bc2, gradScale);
    jsBf16.castBf16(p.subarray(outOffset, outOffset + out.length), out);
  },
  adamUnitRowsBf16(p, g, m, v, rows, cols, lr, beta1, beta2, eps, bc1, bc2, gradScale, out) {
    jsEngine.adamUnitRows(p, g, m, v, rows, cols, lr, beta1, beta2, eps, bc1, bc2, gradScale);
    jsBf16.castBf16(p, out);
  },
  // the widened rows through the float32 kernels: the same products (a bf16 value is exact in
  // float32), summed in their order
  gatherRowsBf16(idx, val, rows, k, W, H, D, bias, out) {
    jsEngine.gatherRows(idx, val, rows, k, wide(W), H, D, bias, out);
  },
  gatherRows2Bf16(idx, val, val2, rows, k, W, H, D, bias, out, out2) {
    jsEngine.gatherRows2(idx, val, val2, rows, k, wide(W), H, D, bias, out, out2);
  },
  gatherDotBf16(idx, val, rows, k, G, W, H, D, out) {
    jsEngine.gatherDot(idx, val, rows, k, wide(G), wide(W), H, D, out);
  },
  scatterRowsBf16(idx, val, rows, k, X, H, D, out) {
    jsEngine.scatterRows(idx, val, rows, k, wide(X), H, D, out);
  },
  scatterDotBf16(idx, val, sel, rows, k, G, W, H, D, dW, out) {
    jsEngine.scatterDot(idx, val, sel, rows, k, wide(G), wide(W), H, D, dW, out);
  },
  sparseBackwardBf16(idx, val, rows, k, G, W, Xc, H, D, dWdec, dWenc, gpSum, overwrite, rowSq) {
    jsEngine.sparseBackward(idx, val, rows, k, wide(G), wide(W), wide(Xc), H, D, dWdec, dWenc, gpSum, overwrite, rowSq);
  },
  gemmBf16(tA, tB, M, N, K, alpha, A, B, beta, C) {
    const a = Float64Array.from(A, bf16ToFloat), b = Float64Array.from(B, bf16ToFloat);
    for (let m = 0; m < M; m++) {
      for (let n = 0; n < N; n++) {
        let s = 0;
        for (let k = 0; k < K; k++) s += a[tA ? k * M + m : m * K + k] * b[tB ? n * K + k : k * N + n];
        C[m * N + n] = alpha * s + (beta === 0 ? 0 : beta * C[m * N + n]);
      }
    }
  },
};

/** the names of Bf16Kernels, which the native addon must export for bf16 to run */
export const BF16_KERNELS = Object.keys(jsBf16) as (keyof Bf16Kernels)[];

/** GEMMs with every dimension at least this go through bf16; thinner ones (GEMVs, a few dead latents) stay float32, where bf16 saves nothing */
export const BF16_MIN_DIM = 16;

export interface Bf16Engine extends Engine {
  /** the pinned copies are stale from here: call before each step (after the previous update) */
  newStep(): void;
  /** milliseconds spent casting since the last call (the bench reports it) */
  takeCastMs(): number;
  /** bytes of the bf16 copies and scratch buffers */
  bf16Bytes(): number;
}

/**
 * copy: made on first use, so a parameter no bf16 kernel reads (b_enc, or W_dec when only the float32 kernels read it) costs no memory.
 * fresh: the copy holds src's values; used: a GEMM read it this step; fused: Adam wrote it this step.
 */
interface Pin { src: Float32Array; copy: Uint16Array | null; fresh: boolean; used: boolean; fused: boolean }

/** `base` with its float32 GEMMs in bf16; `pinned`: arrays that change only between steps (the parameters) */
export function bf16Engine(base: Engine, k: Bf16Kernels, pinned: Float32Array[]): Bf16Engine {
  const pins: Pin[] = pinned.map((src) => ({ src, copy: null, fresh: false, used: false, fused: false }));
  /** the offset of x inside pin p's array, or −1 */
  const inside = (x: Float32Array, p: Float32Array) => {
    const off = (x.byteOffset - p.byteOffset) / 4;
    return x.buffer === p.buffer && off >= 0 && off + x.length <= p.length ? off : -1;
  };
  const overlaps = (x: Arr, p: Float32Array) => x.buffer === p.buffer && x.byteOffset < p.byteOffset + p.byteLength && p.byteOffset < x.byteOffset + x.byteLength;
  /** x was written: the copies of the pins it overlaps no longer hold their values */
  const stale = (x: Arr) => {
    for (const q of pins) if (overlaps(x, q.src)) q.fresh = false;
  };
  const scratch = [new Uint16Array(0), new Uint16Array(0)];
  let castMs = 0;
  const cast = (x: Float32Array, slot: 0 | 1): Uint16Array => {
    // a pinned array, or a stretch of one (a view into the same buffer)
    for (const p of pins) {
      const off = inside(x, p.src);
      if (off >= 0) {
        p.copy ??= new Uint16Array(p.src.length);
        p.used = true;
        if (!p.fresh) {
          const t0 = performance.now();
          k.castBf16(p.src, p.copy);
          castMs += performance.now() - t0;
          p.fresh = true;
        }
        return p.copy.subarray(off, off + x.length);
      }
    }
    if (scratch[slot].length < x.length) scratch[slot] = new Uint16Array(x.length);
    const out = scratch[slot].subarray(0, x.length);
    const t0 = performance.now();
    k.castBf16(x, out);
    castMs += performance.now() - t0;
    return out;
  };
  const gemm = (tA: boolean, tB: boolean, M: number, N: number, K: number, alpha: number, A: Arr, B: Arr, beta: number, C: Arr): void => {
    if (!(A instanceof Float32Array && B instanceof Float32Array && C instanceof Float32Array) || Math.min(M, N, K) < BF16_MIN_DIM) {
      base.gemm(tA, tB, M, N, K, alpha, A, B, beta, C);
      return;
    }
    // lengths as the addon checks them, before a view is cut from a pinned copy
    if (A.length !== M * K || B.length !== K * N) {
      base.gemm(tA, tB, M, N, K, alpha, A, B, beta, C); // the wrapped engine names the bad argument
      return;
    }
    k.gemmBf16(tA, tB, M, N, K, alpha, cast(A, 0), cast(B, 1), beta, C);
  };
  /** the pin holding all of W (a parameter, or a stretch of one), or undefined */
  const pinOf = (W: Arr) => (W instanceof Float32Array ? pins.find((p) => inside(W, p.src) >= 0) : undefined);
  const f32s = (...xs: (Arr | null)[]) => xs.every((x) => x === null || x instanceof Float32Array);
  /** W [H, D] is (in) a pinned parameter, wide enough for bf16, and the other arrays are float32 */
  const pinnedRows = (W: Arr, H: number, D: number, ...xs: (Arr | null)[]) => pinOf(W) !== undefined && W.length === H * D && D >= BF16_MIN_DIM && f32s(...xs);
  // The sparse kernels (decode, backward) read a random row of W or of the batch per entry, at the
  // memory's speed: in bf16 they move half the bytes (docs/engine.md#bfloat16). W must be a pinned
  // parameter (cast once per step, like the GEMMs' weights); anything else takes the float32 kernel.
  const gatherRows: Engine["gatherRows"] = (idx, val, rows, kk, W, H, D, bias, out) => {
    if (!pinnedRows(W, H, D, val, bias, out)) {
      base.gatherRows(idx, val, rows, kk, W, H, D, bias, out);
      return;
    }
    k.gatherRowsBf16(idx, val as Float32Array, rows, kk, cast(W as Float32Array, 1), H, D, bias as Float32Array | null, out as Float32Array);
  };
  const sparseBackward: Engine["sparseBackward"] = (idx, val, rows, kk, G, W, Xc, H, D, dWdec, dWenc, gpSum, overwrite = false, rowSq = null) => {
    if (!pinnedRows(W, H, D, val, G, Xc, dWdec, dWenc, gpSum) || G.length !== rows * D || Xc.length !== rows * D) {
      base.sparseBackward(idx, val, rows, kk, G, W, Xc, H, D, dWdec, dWenc, gpSum, overwrite, rowSq);
      return;
    }
    // G and Xc change every step (and between AuxK's call and the main one, G does): cast per call
    // into the scratch slots (W, pinned, takes its copy, not slot 1), 1–2 ms against the 20 ms the
    // halved rows save at B=4096 D=768 H=16384 K=32
    k.sparseBackwardBf16(idx, val as Float32Array, rows, kk, cast(G as Float32Array, 0), cast(W as Float32Array, 1), cast(Xc as Float32Array, 1), H, D, dWdec as Float32Array, dWenc as Float32Array, gpSum as Float32Array, overwrite, rowSq);
  };
  const gatherRows2: Engine["gatherRows2"] = (idx, val, val2, rows, kk, W, H, D, bias, out, out2) => {
    if (!pinnedRows(W, H, D, val, val2, bias, out, out2)) {
      base.gatherRows2(idx, val, val2, rows, kk, W, H, D, bias, out, out2);
      return;
    }
    k.gatherRows2Bf16(idx, val as Float32Array, val2 as Float32Array, rows, kk, cast(W as Float32Array, 1), H, D, bias as Float32Array | null, out as Float32Array, out2 as Float32Array);
  };
  const gatherDot: Engine["gatherDot"] = (idx, val, rows, kk, G, W, H, D, out) => {
    if (!pinnedRows(W, H, D, val, G, out) || G.length !== rows * D) {
      base.gatherDot(idx, val, rows, kk, G, W, H, D, out);
      return;
    }
    k.gatherDotBf16(idx, val as Float32Array | null, rows, kk, cast(G as Float32Array, 0), cast(W as Float32Array, 1), H, D, out as Float32Array);
  };
  const scatterDot: Engine["scatterDot"] = (idx, val, sel, rows, kk, G, W, H, D, dW, out) => {
    if (!pinnedRows(W, H, D, val, sel, G, dW, out) || G.length !== rows * D) {
      base.scatterDot(idx, val, sel, rows, kk, G, W, H, D, dW, out);
      return;
    }
    k.scatterDotBf16(idx, val as Float32Array, sel as Float32Array | null, rows, kk, cast(G as Float32Array, 0), cast(W as Float32Array, 1), H, D, dW as Float32Array, out as Float32Array);
  };
  // X is the batch here (the centred input): cast per call, worth it from about two entries a row
  // (the cast reads X once, the kernel a row of it per entry). A parameter as X (the decoder's own
  // rows in addScaledRows, an elementwise update, not a product of the step) stays float32.
  const scatterRows: Engine["scatterRows"] = (idx, val, rows, kk, X, H, D, out) => {
    if (pinOf(X) || kk < 2 || !f32s(val, X, out) || D < BF16_MIN_DIM || X.length !== rows * D) {
      base.scatterRows(idx, val, rows, kk, X, H, D, out);
      return;
    }
    k.scatterRowsBf16(idx, val as Float32Array, rows, kk, cast(X as Float32Array, 0), H, D, out as Float32Array);
  };
  return {
    ...base,
    gemm,
    gatherRows,
    gatherRows2,
    gatherDot,
    scatterRows,
    scatterDot,
    sparseBackward,
    // Adam writes the copy of one parameter the step's GEMMs read (W_enc) as it writes the weights
    // (docs/engine.md#bfloat16); any other write to a pinned parameter makes its copy stale.
    adam(p, g, m, v, lr, beta1, beta2, eps, bc1, bc2, gradScale) {
      const pin = p instanceof Float32Array ? pins.find((q) => q.used && q.copy && inside(q.src, p) >= 0) : undefined;
      stale(p);
      if (!pin) {
        base.adam(p, g, m, v, lr, beta1, beta2, eps, bc1, bc2, gradScale);
        return;
      }
      k.adamBf16(p as Float32Array, g as Float32Array, m as Float32Array, v as Float32Array, lr, beta1, beta2, eps, bc1, bc2, gradScale, pin.copy!, inside(pin.src, p as Float32Array));
      pin.fresh = pin.fused = true;
    },
    normalizeRows(W, rows, cols) {
      base.normalizeRows(W, rows, cols);
      stale(W);
    },
    // the decoder's fused step writes W_dec, and its bf16 copy too when a bf16 kernel read it
    adamUnitRows(p, g, m, v, rows, cols, lr, beta1, beta2, eps, bc1, bc2, gradScale) {
      const pin = p instanceof Float32Array ? pins.find((q) => q.used && q.copy && inside(p, q.src) >= 0) : undefined;
      stale(p);
      if (!pin || !(g instanceof Float32Array && m instanceof Float32Array && v instanceof Float32Array) || p.length !== rows * cols || pin.src.length !== p.length) {
        base.adamUnitRows(p, g, m, v, rows, cols, lr, beta1, beta2, eps, bc1, bc2, gradScale);
        return;
      }
      k.adamUnitRowsBf16(p as Float32Array, g, m, v, rows, cols, lr, beta1, beta2, eps, bc1, bc2, gradScale, pin.copy!);
      pin.fresh = pin.fused = true;
    },
    newStep() {
      // a copy stays fresh into the next step only when Adam wrote it and nothing wrote its weights
      // after; NativeStepper writes the parameters only through the step, so nothing else can
      for (const p of pins) {
        p.fresh &&= p.fused;
        p.fused = p.used = false;
      }
    },
    bf16Bytes() {
      return 2 * (pins.reduce((n, p) => n + (p.copy?.length ?? 0), 0) + scratch[0].length + scratch[1].length);
    },
    takeCastMs() {
      const t = castMs;
      castMs = 0;
      return t;
    },
  };
}

export type Precision = "fp32" | "bf16";
export type PrecisionSetting = Precision | "auto";

/** what `train.precision` resolves to for a run stepping on `stepEngine` (native, typescript or tfjs) */
export interface PrecisionChoice {
  precision: Precision;
  /** for the run's first line and status.json: "bf16 (oneDNN 2.6.3, avx512_core_amx)", "fp32 (auto: ...)" */
  reason: string;
  /** the bf16 kernels when precision is bf16 */
  kernels: Bf16Kernels | null;
}

/** where bf16 GEMMs run: the native engine's bf16 kernels, or why not */
export function bf16Support(choice: EngineChoice, stepEngine: string, native: () => unknown = () => loadNative().addon): { kernels: Bf16Kernels | null; why: string; where: string } {
  if (stepEngine === "tfjs") return { kernels: null, why: "train.precision applies to the native engine; the tfjs engine trains in float32", where: "" };
  const info = choice.info?.bf16;
  if (choice.engine.name !== "native" || !choice.info) return { kernels: null, why: "bf16 needs the native engine, and the TypeScript engine runs", where: "" };
  if (!info) return { kernels: null, why: "the native addon was built before bf16 support; rebuild it with `npm run build:native`", where: "" };
  if (!info.available) return { kernels: null, why: info.reason, where: "" };
  const addon = native() as Record<string, unknown> | null;
  // an addon built before some bf16 kernel existed: auto falls back to fp32, bf16 says to rebuild
  const missing = BF16_KERNELS.filter((name) => typeof addon?.[name] !== "function");
  if (missing.length) return { kernels: null, why: `the native addon predates the bf16 kernel${missing.length > 1 ? "s" : ""} ${missing.join(", ")}; rebuild it with \`npm run build:native\``, where: "" };
  return { kernels: addon as unknown as Bf16Kernels, why: "", where: `oneDNN ${info.onednn}, ${info.isa}` };
}

/** `train.precision` for this run; bf16 where it cannot run is an error saying why (exit 1; a tfjs run: exit 2) */
export function resolvePrecision(want: PrecisionSetting, choice: EngineChoice, stepEngine: string, native?: () => unknown): PrecisionChoice {
  const s = bf16Support(choice, stepEngine, native);
  if (want === "fp32") return { precision: "fp32", reason: "fp32", kernels: null };
  if (s.kernels) return { precision: "bf16", reason: `bf16 (${want === "auto" ? "auto: " : ""}${s.where}; float32 master weights)`, kernels: s.kernels };
  if (want === "auto") return { precision: "fp32", reason: `fp32 (auto: ${s.why})`, kernels: null };
  throw new SaeError(stepEngine === "tfjs" ? "config" : "runtime", `train.precision: bf16 cannot run here: ${s.why}`,
    "set train.precision: fp32 (or auto: bf16 where the CPU and the build have it, else fp32)");
}
